//! The bounded crash test for CI: the real binary kills its crash-workload child with SIGKILL
//! five times (mid-epoch and mid-checkpoint), then checks the four durability results and the
//! corruption scenarios; the corruption test also runs alone. The seed is random unless
//! `VMSDB_CRASH_SEED` is set; it is in the printed output, which a failure shows.

use std::process::{Command, Output};

fn bench_harness(args: &[&str]) -> (Output, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-harness"))
        .args(args)
        .output()
        .expect("the binary runs");
    let text = format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn seed_args() -> Vec<String> {
    match std::env::var("VMSDB_CRASH_SEED") {
        Ok(seed) => vec!["--seed".into(), seed],
        Err(_) => Vec::new(),
    }
}

#[test]
fn five_kills_lose_nothing_acknowledged_and_recovery_equals_replay() {
    // Goal: after 5 SIGKILLs of a child under load, all four durability checks and every
    // corruption scenario pass, and the output names the seed and each result.
    let started = std::time::Instant::now();
    let mut args = vec![
        "crash-test",
        "--kills",
        "5",
        "--clients",
        "8",
        "--checkpoint-every",
        "20",
        "--pad-bytes",
        "64",
        "--max-life-ms",
        "300",
    ];
    let seed = seed_args();
    args.extend(seed.iter().map(String::as_str));
    let (out, text) = bench_harness(&args);
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "crash-test: seed ",
        "[1] acknowledged transactions present: ",
        "[2] no unacknowledged-but-half-applied transaction visible: ",
        "[3] workload invariants hold: ",
        "[4] recovered state hash equals a crash-free replay of the same log: ",
        "crash-test PASSED: seed ",
        "refused at open: redb log record of epoch ",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{text}");
    }
    for n in 1..=4 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("[{n}] ")))
            .unwrap();
        assert!(line.ends_with(" OK"), "{line}\n{text}");
    }
    assert_eq!(
        stdout.matches("SIGKILL").count(),
        5,
        "one kill per life:\n{text}"
    );
    assert!(
        stdout.contains("mid-checkpoint"),
        "a kill aimed mid-checkpoint:\n{text}"
    );
    eprintln!("crash test took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn corruption_test_alone_refuses_damaged_stores() {
    // Goal: `corruption-test` on its own writes a store, damages copies of it and passes.
    let mut args = vec!["corruption-test"];
    let seed = seed_args();
    args.extend(seed.iter().map(String::as_str));
    let (out, text) = bench_harness(&args);
    assert!(out.status.success(), "{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("corruption-test PASSED: seed "), "{text}");
    assert!(!stdout.contains("[FAILED]"), "{text}");
}

#[test]
fn bad_crash_test_arguments_exit_with_code_2() {
    // Goal: zero kills and a non-empty data directory are refused before anything runs.
    let (out, text) = bench_harness(&["crash-test", "--kills", "0"]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("something"), b"x").unwrap();
    let (out, text) = bench_harness(&["crash-test", "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("not empty"), "{text}");
}
