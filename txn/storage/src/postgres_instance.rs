//! A private PostgreSQL server for a test or a benchmark run: the one launcher shared by the
//! PostgreSQL storage tests and measurements and the bench harness's postgres baseline.
//!
//! Nothing is installed here. It looks for the server binaries (`initdb`, `pg_ctl`,
//! `postgres`) on `PATH`, then under `/usr/lib/postgresql/<version>/bin` (the newest version
//! first, where Debian and Ubuntu put them); when they are missing the error says how to
//! install them.
//!
//! [`PgInstance::start`] runs `initdb` into a fresh temporary directory and starts `postgres`
//! on it as a child process of the caller (the harness, a test), listening only on a unix socket in that directory
//! (`listen_addresses = ''`): no TCP port is opened and nothing outside the directory is
//! touched. PostgreSQL refuses to run as root, so when the caller runs as root both run as
//! the `postgres` system user (the directory is handed to that user first). Dropping the
//! instance stops the server (`pg_ctl stop -m fast`, or SIGKILL if that fails) and removes
//! the directory, on every path out of a run, errors and panics included. If the caller dies
//! without dropping it (SIGKILL, Ctrl-C, a timeout), a small watchdog shell ([`WATCHDOG`])
//! notices its end of a pipe closing and stops the server and removes the directory.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a private server could not be found, started or reached.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// The server binaries are not installed; the message says how to install them.
    #[error("{0}")]
    BinariesMissing(String),
    /// Starting, reaching or configuring the server failed; the message says what and why.
    #[error("postgres: {0}")]
    Failed(String),
}

/// Where the launcher's progress lines go (the harness's status line, a test's stderr).
pub type StatusSink = Box<dyn Fn(String) + Send + Sync>;

/// How to get the binaries, in every error that says they are missing.
pub const INSTALL_HINT: &str = "install PostgreSQL server binaries, e.g. `apt-get install -y \
postgresql` (Debian/Ubuntu: they land in /usr/lib/postgresql/<version>/bin, which is searched), \
or put the directory holding `initdb`, `pg_ctl` and `postgres` on PATH";

/// Where Debian and Ubuntu install each server version (`<root>/<version>/bin`).
pub const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

/// The socket's port number. The socket lives in the instance's private directory, so no
/// other server can collide with it.
pub const PORT: u16 = 5432;

/// The server's shared buffer pool.
pub const SHARED_BUFFERS: &str = "1GB";

/// The watchdog, a shell started next to the server (`sh -c WATCHDOG _ <server pid> <dir>`),
/// reading the harness's end of a pipe. When the harness stops the server it writes
/// `stopped` and the watchdog only removes the directory. If the caller dies first (killed,
/// Ctrl-C, a timeout), the pipe closes unread: the watchdog stops the server (SIGINT, a fast
/// shutdown), waits for it (at most a minute), and removes the directory. It ignores the
/// signals a terminal or a timeout sends, so that it outlives the harness.
pub const WATCHDOG: &str = r#"trap '' INT HUP TERM QUIT
read -r line
if [ "$line" != stopped ]; then
  kill -INT "$1" 2>/dev/null
  i=0
  while kill -0 "$1" 2>/dev/null && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
fi
rm -rf "$2""#;

/// The server binaries the baseline needs, all from one directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgBinaries {
    pub dir: PathBuf,
    pub initdb: PathBuf,
    pub pg_ctl: PathBuf,
    pub postgres: PathBuf,
}

/// Finds the server binaries on `PATH` or under [`VERSIONED_ROOT`].
pub fn find_binaries() -> Result<PgBinaries, InstanceError> {
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    find_binaries_in(&path, Path::new(VERSIONED_ROOT))
}

/// Finds the server binaries in the first of `path_dirs` that has all three, else in the
/// newest `<versioned_root>/<version>/bin` that has them.
pub fn find_binaries_in(
    path_dirs: &[PathBuf],
    versioned_root: &Path,
) -> Result<PgBinaries, InstanceError> {
    if let Some(b) = path_dirs.iter().find_map(|d| complete(d)) {
        return Ok(b);
    }
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(versioned_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version: Option<Vec<u64>> = name.split('.').map(|p| p.parse().ok()).collect();
            Some((version?, e.path().join("bin")))
        })
        .collect();
    // Newest first: numerically, so 16 beats 9.6.
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    if let Some(b) = versions.iter().find_map(|(_, d)| complete(d)) {
        return Ok(b);
    }
    Err(InstanceError::BinariesMissing(format!(
        "a private PostgreSQL server needs the server binaries (initdb, pg_ctl, postgres), \
         found neither on PATH nor under {}/<version>/bin: {INSTALL_HINT}",
        versioned_root.display()
    )))
}

fn complete(dir: &Path) -> Option<PgBinaries> {
    let exe = |name: &str| {
        let p = dir.join(name);
        let ok =
            std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        ok.then_some(p)
    };
    Some(PgBinaries {
        dir: dir.to_path_buf(),
        initdb: exe("initdb")?,
        pg_ctl: exe("pg_ctl")?,
        postgres: exe("postgres")?,
    })
}

/// The unprivileged user the server runs as when the caller runs as root.
#[derive(Clone, Debug)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

fn err(msg: String) -> InstanceError {
    InstanceError::Failed(msg)
}

/// The effective user id of this process (`id -u`).
fn euid() -> Result<u32, InstanceError> {
    id(&["-u"]).ok_or_else(|| err("cannot tell which user this process runs as (`id -u`)".into()))
}

fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A running private server; stopped, and its directory removed, when dropped.
pub struct PgInstance {
    /// The temporary directory: `data/` (the cluster), the socket, `postgres.log`.
    dir: Option<tempfile::TempDir>,
    socket_dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Stops the server and removes the directory if the harness dies without dropping
    /// this (see [`WATCHDOG`]); its stdin is the harness's end of the pipe.
    watchdog: Option<(Child, ChildStdin)>,
    bins: PgBinaries,
    run_as: Option<RunAs>,
    status: StatusSink,
}

impl PgInstance {
    /// `initdb` a new cluster in a temporary directory and start the server on it, allowing
    /// `max_connections` connections. Returns once the server process is started; use
    /// [`PgInstance::connect_when_ready`] to wait for it to accept connections.
    /// Progress lines go to `status`.
    pub fn start(
        bins: &PgBinaries,
        max_connections: u32,
        status: impl Fn(String) + Send + Sync + 'static,
    ) -> Result<Self, InstanceError> {
        let run_as = if euid()? == 0 {
            let (uid, gid) = id(&["-u", "postgres"])
                .zip(id(&["-g", "postgres"]))
                .ok_or_else(|| {
                    err(
                        "the caller runs as root, which PostgreSQL refuses, and there is no \
                     `postgres` user to run the server as: create one (e.g. `useradd --system \
                     postgres`; the postgresql package does) or run as a normal user"
                            .into(),
                    )
                })?;
            Some(RunAs {
                name: "postgres".into(),
                uid,
                gid,
            })
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("vmsdb-pg-")
            .tempdir()
            .map_err(|e| err(format!("cannot create a temporary directory: {e}")))?;
        let socket_dir = dir.path().to_path_buf();
        // A unix socket path is limited to 107 bytes.
        let socket = socket_dir.join(format!(".s.PGSQL.{PORT}"));
        if socket.as_os_str().len() > 100 {
            return Err(err(format!(
                "the socket path {} is too long for a unix socket; set TMPDIR to a shorter \
                 directory",
                socket.display()
            )));
        }
        if let Some(u) = &run_as {
            std::os::unix::fs::chown(dir.path(), Some(u.uid), Some(u.gid)).map_err(|e| {
                err(format!(
                    "cannot hand {} to user {}: {e}",
                    dir.path().display(),
                    u.name
                ))
            })?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let mut inst = PgInstance {
            dir: Some(dir),
            socket_dir,
            data,
            log,
            child: None,
            watchdog: None,
            bins: bins.clone(),
            run_as,
            status: Box::new(status),
        };
        (inst.status)(format!(
            "postgres: initdb in {} with {}{}",
            inst.socket_dir.display(),
            inst.bins.dir.display(),
            inst.run_as
                .as_ref()
                .map(|u| format!(" (as user {}: PostgreSQL refuses to run as root)", u.name))
                .unwrap_or_default()
        ));
        let out = inst
            .command(&inst.bins.initdb)
            .arg("-D")
            .arg(&inst.data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            // initdb's own files need not reach the disk: the directory is thrown away
            // after the run. The server itself runs with fsync on.
            .arg("--no-sync")
            .output()
            .map_err(|e| err(format!("cannot run {}: {e}", inst.bins.initdb.display())))?;
        if !out.status.success() {
            return Err(err(format!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            )));
        }
        let settings = [
            ("listen_addresses", "''".to_string()),
            (
                "unix_socket_directories",
                format!("'{}'", inst.socket_dir.display()),
            ),
            ("port", PORT.to_string()),
            ("max_connections", max_connections.to_string()),
            ("shared_buffers", format!("'{SHARED_BUFFERS}'")),
            ("fsync", "on".into()),
            ("synchronous_commit", "on".into()),
            ("full_page_writes", "on".into()),
            ("default_transaction_isolation", "'serializable'".into()),
            // Room for the SIREAD locks of many concurrent serializable transactions.
            ("max_pred_locks_per_transaction", "256".into()),
            // A transfer cycle A→B, B→A is a deadlock; find it in 100 ms, not the default 1 s.
            ("deadlock_timeout", "'100ms'".into()),
            // The bulk load should not force checkpoints during the run.
            ("max_wal_size", "'4GB'".into()),
            ("huge_pages", "off".into()),
            ("logging_collector", "off".into()),
            // Serialization failures are ERRORs; logging each (with its statement) would cost
            // the server time during the run. Start-up failures are FATAL and still logged.
            ("log_min_messages", "fatal".into()),
            ("log_min_error_statement", "panic".into()),
        ];
        let mut conf = OpenOptions::new()
            .append(true)
            .open(inst.data.join("postgresql.conf"))
            .map_err(|e| err(format!("cannot write postgresql.conf: {e}")))?;
        let mut text = String::from("\n# vmsdb private PostgreSQL server\n");
        for (k, v) in settings {
            text.push_str(&format!("{k} = {v}\n"));
        }
        conf.write_all(text.as_bytes())
            .map_err(|e| err(format!("cannot write postgresql.conf: {e}")))?;
        drop(conf);
        let log = std::fs::File::create(&inst.log)
            .map_err(|e| err(format!("cannot create {}: {e}", inst.log.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| err(format!("cannot create {}: {e}", inst.log.display())))?;
        let child = inst
            .command(&inst.bins.postgres)
            .arg("-D")
            .arg(&inst.data)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", inst.bins.postgres.display())))?;
        let pid = child.id();
        inst.child = Some(child);
        // If the watchdog cannot start, the server still stops when the instance is dropped;
        // only a harness killed outright could then leave it behind.
        let dir_arg = inst.socket_dir.clone();
        match inst
            .command(Path::new("sh"))
            .args(["-c", WATCHDOG, "vmsdb-pg-watchdog"])
            .arg(pid.to_string())
            .arg(&dir_arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(mut w) => {
                let stdin = w.stdin.take().expect("stdin was piped");
                inst.watchdog = Some((w, stdin));
            }
            Err(e) => (inst.status)(format!(
                "postgres: cannot start the watchdog shell ({e}); the server is stopped when \
                 the run ends, but not if the harness is killed"
            )),
        }
        Ok(inst)
    }

    /// A command for one of the server binaries: run in the instance's directory, as the
    /// unprivileged user when the caller is root.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.socket_dir);
        if let Some(u) = &self.run_as {
            // std drops supplementary groups when it changes the user of a root process.
            c.uid(u.uid).gid(u.gid).env("HOME", &self.socket_dir);
        }
        c
    }

    /// How to reach the server: its unix socket, user `postgres`, database `postgres`.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.socket_dir)
            .port(PORT)
            .user("postgres")
            .dbname("postgres")
            .application_name("vmsdb");
        c
    }

    /// The same as a libpq-style `key=value` string, e.g. for
    /// [`crate::PostgresStorage::open`].
    pub fn config_string(&self) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname=postgres application_name=vmsdb",
            self.socket_dir.display()
        )
    }

    /// The same as a `postgresql://` URL (the socket directory as a percent-encoded host), for
    /// tools that take a URL, e.g. `vmsdb serve --store`.
    pub fn url(&self) -> String {
        let host: String = self
            .socket_dir
            .display()
            .to_string()
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' | '_' | '~' => c.to_string(),
                other => {
                    let mut utf8 = [0; 4];
                    other
                        .encode_utf8(&mut utf8)
                        .bytes()
                        .map(|b| format!("%{b:02X}"))
                        .collect()
                }
            })
            .collect();
        format!("postgresql://postgres@{host}:{PORT}/postgres?application_name=vmsdb")
    }

    /// Blocks until the server accepts connections (at most `timeout`), for callers without
    /// a tokio runtime of their own; it runs a small one meanwhile, so it must not be called
    /// from inside one.
    pub fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), InstanceError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                err(format!(
                    "cannot start a runtime to wait for the server: {e}"
                ))
            })?;
        runtime.block_on(async {
            let (client, task) = self.connect_when_ready(timeout).await?;
            drop(client);
            let _ = task.await;
            Ok(())
        })
    }

    /// The last lines of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until the server accepts connections and returns one (with the task driving it).
    pub async fn connect_when_ready(
        &mut self,
        timeout: Duration,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), InstanceError> {
        let start = Instant::now();
        loop {
            match self.connect().await {
                Ok(c) => {
                    (self.status)(format!(
                        "postgres: server accepting connections after {:.2} s (log: {})",
                        start.elapsed().as_secs_f64(),
                        self.log.display()
                    ));
                    return Ok(c);
                }
                Err(e) => {
                    let exited = match self.child.as_mut().map(Child::try_wait) {
                        Some(Ok(None)) => None,
                        Some(Ok(Some(status))) => Some(status.to_string()),
                        Some(Err(e)) => Some(e.to_string()),
                        None => Some("not started".into()),
                    };
                    if let Some(how) = exited {
                        self.child = None;
                        return Err(err(format!(
                            "the server exited while starting ({how}); its log says:\n{}",
                            self.log_tail()
                        )));
                    }
                    if start.elapsed() > timeout {
                        return Err(err(format!(
                            "the server did not accept connections within {timeout:?} ({e}); \
                             its log says:\n{}",
                            self.log_tail()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Opens a connection; its driving task is spawned on the current tokio runtime.
    pub async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), InstanceError> {
        let (client, connection) = self
            .config()
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| err(format!("cannot connect: {e}")))?;
        let task = tokio::spawn(async move {
            // Errors surface on the client's calls; nothing to add here.
            let _ = connection.await;
        });
        Ok((client, task))
    }

    /// Stops the server and removes its directory (what dropping does, said explicitly).
    pub fn stop(self) {
        drop(self);
    }

    fn shutdown(&mut self) {
        if let Some(mut child) = self.child.take() {
            let stopped = self
                .command(&self.bins.pg_ctl)
                .arg("stop")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "-t", "60"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !stopped {
                (self.status)(format!(
                    "postgres: `pg_ctl stop` failed; killing the server (pid {})",
                    child.id()
                ));
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if let Some((mut watchdog, mut stdin)) = self.watchdog.take() {
            // The server is gone: tell the watchdog so, and it only removes the directory.
            let _ = stdin.write_all(b"stopped\n");
            drop(stdin);
            let _ = watchdog.wait();
        }
    }
}

impl Drop for PgInstance {
    fn drop(&mut self) {
        self.shutdown();
        // Then the directory goes (TempDir's own drop), even if it belongs to `postgres`.
        drop(self.dir.take());
    }
}

/// Whether this is a CI run: `CI` set to anything but empty, `0` or `false`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// A private server for test `test`, accepting connections, or `None` after a loud skip line
/// on stderr when the server binaries are missing outside CI. In CI ([`in_ci`]) missing
/// binaries fail the test: a test that did not run must not count as passed. Blocking, and
/// not to be called inside a tokio runtime (see [`PgInstance::wait_until_ready`]).
pub fn for_test(test: &str, max_connections: u32) -> Option<PgInstance> {
    let bins = match find_binaries() {
        Ok(bins) => bins,
        Err(e) if in_ci() => panic!(
            "{test}: CI is set but the PostgreSQL server binaries are missing, so this \
             PostgreSQL test cannot run: install them (apt-get install -y postgresql, as \
             .ci/run does): {e}"
        ),
        Err(e) => {
            // Straight to the stderr handle, which the test harness does not capture.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED (not run, not passed): PostgreSQL test {test} — PostgreSQL \
                 server binaries not found; install with apt-get install -y postgresql ({e}); \
                 with CI=true this fails ***\n"
            );
            return None;
        }
    };
    let mut server = PgInstance::start(&bins, max_connections, |line| eprintln!("{line}"))
        .unwrap_or_else(|e| panic!("{test}: starting a private PostgreSQL server: {e}"));
    server
        .wait_until_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{test}: the private PostgreSQL server: {e}"));
    Some(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_bin_dir(root: &Path, names: &[&str]) -> PathBuf {
        std::fs::create_dir_all(root).unwrap();
        for n in names {
            let p = root.join(n);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        root.to_path_buf()
    }

    #[test]
    fn missing_binaries_give_the_install_hint() {
        // Goal: with no server binaries anywhere, the error says how to install them.
        let t = tempfile::tempdir().unwrap();
        // A PATH directory with only some of them does not count.
        let partial = fake_bin_dir(&t.path().join("partial"), &["initdb", "pg_ctl"]);
        let e = find_binaries_in(&[partial], &t.path().join("nowhere")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("apt-get install -y postgresql"),
            "no install hint: {msg}"
        );
        assert!(msg.contains("initdb"), "{msg}");
    }

    #[test]
    fn path_wins_then_the_newest_version() {
        // Goal: a complete PATH directory is used first; otherwise the newest version under
        // the versioned root, compared numerically (16 beats 9.6), skipping incomplete ones.
        let t = tempfile::tempdir().unwrap();
        let all = ["initdb", "pg_ctl", "postgres"];
        let root = t.path().join("lib");
        fake_bin_dir(&root.join("9.6/bin"), &all);
        fake_bin_dir(&root.join("15/bin"), &all);
        fake_bin_dir(&root.join("16/bin"), &all);
        fake_bin_dir(&root.join("17/bin"), &["initdb"]);
        std::fs::create_dir_all(root.join("not-a-version/bin")).unwrap();
        let found = find_binaries_in(&[], &root).unwrap();
        assert_eq!(found.dir, root.join("16/bin"));
        assert_eq!(found.postgres, root.join("16/bin/postgres"));
        let on_path = fake_bin_dir(&t.path().join("path"), &all);
        let found = find_binaries_in(&[t.path().join("empty"), on_path.clone()], &root).unwrap();
        assert_eq!(found.dir, on_path);
    }
}
