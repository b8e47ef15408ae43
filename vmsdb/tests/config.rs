//! Where each setting comes from: flags over environment variables over the TOML file over the
//! defaults; bad files and values are refused with a message naming them.

use std::process::Command;
use std::time::Duration;
use vmsdb::{AppChoice, ServeArgs, Settings, limits};

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("vmsdb.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn flags_override_the_file_which_overrides_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"
        app = "ycsb"
        data_dir = "/from/file"
        listen = "127.0.0.1:9999"
        body_bytes_max = 4096
        request_timeout = "3s"
        "#,
    );
    let args = ServeArgs {
        config: Some(config),
        listen: Some("127.0.0.1:7777".parse().unwrap()),
        ..ServeArgs::default()
    };
    let s = Settings::resolve(args, None).unwrap();
    assert_eq!(s.app, AppChoice::Ycsb);
    assert_eq!(s.data_dir, std::path::Path::new("/from/file"));
    assert_eq!(s.listen.port(), 7777, "the flag wins over the file");
    assert_eq!(
        s.limits.body_bytes_max, 4096,
        "the file wins over the default"
    );
    assert_eq!(s.limits.request_timeout, Duration::from_secs(3));
    assert_eq!(
        s.limits.concurrent_requests_max,
        limits::CONCURRENT_REQUESTS_MAX_DEFAULT
    );
    assert_eq!(s.token, None);
}

#[test]
fn bad_files_and_tokens_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "app = \"ledger\"\nlisten_on = \"x\"",
            "unknown field `listen_on`",
        ),
        (
            "app = \"ledger\"\nrequest_timeout = \"soon\"",
            "not a duration",
        ),
        ("app = \"bank\"", "unknown variant `bank`"),
    ] {
        let args = ServeArgs {
            config: Some(write_config(dir.path(), text)),
            ..ServeArgs::default()
        };
        let error = Settings::resolve(args, None).unwrap_err().to_string();
        assert!(error.contains(needle), "{error}");
    }
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "  tok\n").unwrap();
    let args = || ServeArgs {
        app: Some(AppChoice::Ledger),
        data_dir: Some(dir.path().into()),
        token_file: Some(token_file.clone()),
        ..ServeArgs::default()
    };
    assert_eq!(
        Settings::resolve(args(), None).unwrap().token.as_deref(),
        Some("tok")
    );
    let both = Settings::resolve(args(), Some("other".into())).unwrap_err();
    assert!(
        both.to_string()
            .contains("both VMSDB_TOKEN and a token file")
    );
    std::fs::write(&token_file, "\n").unwrap();
    assert!(
        Settings::resolve(args(), None)
            .unwrap_err()
            .to_string()
            .contains("empty")
    );
}

/// Runs `vmsdb serve` with a body limit too small to start, from the file, the environment and
/// maybe a flag: the refusal names the value that won.
fn refused_body_limit(dir: &std::path::Path, env: Option<&str>, flag: Option<&str>) -> String {
    let config = write_config(dir, "app = \"ledger\"\nbody_bytes_max = 11\n");
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmsdb"));
    command
        .args(["serve", "--data-dir"])
        .arg(dir)
        .arg("--config")
        .arg(config);
    command
        .env_remove("VMSDB_BODY_BYTES_MAX")
        .env_remove("VMSDB_TOKEN");
    if let Some(value) = env {
        command.env("VMSDB_BODY_BYTES_MAX", value);
    }
    if let Some(value) = flag {
        command.args(["--body-bytes-max", value]);
    }
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(2), "a bad setting exits with 2");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_binary_takes_flags_over_environment_over_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(refused_body_limit(dir.path(), None, None).contains("got 11"));
    assert!(refused_body_limit(dir.path(), Some("22"), None).contains("got 22"));
    assert!(refused_body_limit(dir.path(), Some("22"), Some("33")).contains("got 33"));
}

#[test]
fn driver_ports_listen_on_the_benchmarks_ports_for_the_marketplace_only() {
    // Goal: `driver_ports` adds the benchmark driver's ports on 127.0.0.1 beside `listen`
    // (once, when `listen` is one of them), and is refused for another application.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "app = \"marketplace\"\ndata_dir = \"/d\"\ndriver_ports = true\nlisten = \"127.0.0.1:8091\"",
    );
    let args = ServeArgs {
        config: Some(config),
        ..ServeArgs::default()
    };
    let s = Settings::resolve(args, None).unwrap();
    let ports: Vec<u16> = s.listen_addrs().iter().map(|a| a.port()).collect();
    assert_eq!(ports[0], 8091, "listen comes first");
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, limits::DRIVER_PORTS.to_vec(), "each port once");
    assert!(s.listen_addrs().iter().all(|a| a.ip().is_loopback()));

    let args = ServeArgs {
        app: Some(AppChoice::Ledger),
        data_dir: Some("/d".into()),
        driver_ports: Some(true),
        ..ServeArgs::default()
    };
    let error = Settings::resolve(args, None).unwrap_err().to_string();
    assert!(error.contains("--app marketplace"), "{error}");
}

#[test]
fn checkpoint_nice_comes_from_the_flag_over_the_file() {
    // Goal: `checkpoint_nice` (the checkpoint thread's lowered priority) is read from the file
    // and the flag wins over it; unset, the runtime's default applies (`None`).
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "app = \"ycsb\"\ndata_dir = \"/from/file\"\ncheckpoint_nice = 19\n",
    );
    let from_file = ServeArgs {
        config: Some(config.clone()),
        ..ServeArgs::default()
    };
    assert_eq!(
        Settings::resolve(from_file, None).unwrap().checkpoint_nice,
        Some(19)
    );
    let flag = ServeArgs {
        config: Some(config),
        checkpoint_nice: Some(0),
        ..ServeArgs::default()
    };
    assert_eq!(
        Settings::resolve(flag, None).unwrap().checkpoint_nice,
        Some(0)
    );
    let unset = ServeArgs {
        app: Some(AppChoice::Ycsb),
        data_dir: Some(dir.path().into()),
        ..ServeArgs::default()
    };
    assert_eq!(
        Settings::resolve(unset, None).unwrap().checkpoint_nice,
        None
    );
}
