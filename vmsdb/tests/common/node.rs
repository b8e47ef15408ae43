//! `vmsdb node` child processes for the cluster tests: spawned on 127.0.0.1 with the test
//! cookie and fast heartbeats, stdout read line by line on a channel so a test waits for what a
//! node prints with a deadline, stderr kept as it arrives so a failed wait shows the node's log,
//! always killed when dropped. `VMSDB_TEST_NODE_LOG` sets the nodes' `RUST_LOG` (default
//! `warn`), and `VMSDB_TEST_NODE_LOG_DIR` keeps each node's stdout and stderr in a file there
//! (`NAME-PID.log`), to see what the nodes did in a run that passed too.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

pub const COOKIE: &str = "test-cookie";
pub const HEARTBEAT: &str = "100ms";
pub const FAILURE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Longest wait for anything a node should print.
pub const WAIT: Duration = Duration::from_secs(15);

/// A `vmsdb node` child process, killed on drop, with its stdout lines arriving on a channel.
pub struct Node {
    pub name: String,
    pub child: Child,
    lines: Receiver<String>,
    /// The stderr so far (its last `STDERR_KEPT_BYTES_MAX` bytes).
    stderr_text: Arc<parking_lot::Mutex<String>>,
    /// Signalled when the process closed its stderr (it exited).
    stderr_closed: Receiver<()>,
    pub seen: Vec<String>,
}

/// How much of a node's stderr is kept: a run at debug level logs a lot.
const STDERR_KEPT_BYTES_MAX: usize = 4 << 20;

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 nothing listens on right now.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

pub fn spawn_node(name: &str, listen: SocketAddr, seeds: &[SocketAddr], extra: &[&str]) -> Node {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmsdb"));
    command
        .args(["node", "--name", name, "--listen", &listen.to_string()])
        .args(["--heartbeat-interval", HEARTBEAT]);
    // A test that needs a frozen node not to be declared dead sets a longer one itself.
    if !extra.contains(&"--failure-timeout") {
        command.args(["--failure-timeout", "1s"]);
    }
    command
        .args(["--join-timeout", "10s"])
        .env("VMSDB_COOKIE", COOKIE)
        .env(
            "RUST_LOG",
            std::env::var("VMSDB_TEST_NODE_LOG").unwrap_or_else(|_| "warn".to_string()),
        )
        .env_remove("VMSDB_APP")
        .env_remove("VMSDB_SEEDS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for seed in seeds {
        command.args(["--seed", &seed.to_string()]);
    }
    command.args(extra);
    let mut child = command.spawn().expect("spawn vmsdb node");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr_pipe = child.stderr.take().expect("piped stderr");
    let log_file = log_file(name, child.id());
    let stderr_text = Arc::new(parking_lot::Mutex::new(String::new()));
    let (closed_sender, stderr_closed) = channel();
    let kept = stderr_text.clone();
    let stderr_log = log_file.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            log_line(&stderr_log, "", &line);
            let mut text = kept.lock();
            if text.len() > STDERR_KEPT_BYTES_MAX {
                let cut = text.len() - STDERR_KEPT_BYTES_MAX / 2;
                let cut = (cut..text.len()).find(|&i| text.is_char_boundary(i));
                text.drain(..cut.unwrap_or(0));
            }
            text.push_str(&line);
            text.push('\n');
        }
        let _ = closed_sender.send(());
    });
    let (sender, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            log_line(&log_file, "stdout: ", &line);
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    Node {
        name: name.to_string(),
        child,
        lines,
        stderr_text,
        stderr_closed,
        seen: Vec::new(),
    }
}

/// The file a node's output is kept in, when `VMSDB_TEST_NODE_LOG_DIR` is set.
type LogFile = Option<Arc<parking_lot::Mutex<std::fs::File>>>;

fn log_file(name: &str, pid: u32) -> LogFile {
    let dir = std::env::var_os("VMSDB_TEST_NODE_LOG_DIR")?;
    let path = std::path::Path::new(&dir).join(format!("{name}-{pid}.log"));
    let file = std::fs::File::create(&path).expect("create the node's log file");
    Some(Arc::new(parking_lot::Mutex::new(file)))
}

/// Appends `line` to the node's log file, if kept; stdout lines with the time they arrived.
fn log_line(file: &LogFile, prefix: &str, line: &str) {
    use std::io::Write;
    if let Some(file) = file {
        let stamp = if prefix.is_empty() {
            String::new()
        } else {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            format!("{:.3} ", now.unwrap_or_default().as_secs_f64())
        };
        let _ = writeln!(file.lock(), "{stamp}{prefix}{line}");
    }
}

impl Node {
    /// The next line (after those already read) that satisfies `wanted`, waiting at most `wait`.
    pub fn wait_line(&mut self, wait: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => panic!(
                    "node {} did not print the expected line within {wait:?}; it printed:\n{}\n\
                     its stderr so far:\n{}",
                    self.name,
                    self.seen.join("\n"),
                    self.stderr()
                ),
            }
        }
    }

    pub fn wait_listening(&mut self) {
        let prefix = format!("node {} listening", self.name);
        self.wait_line(WAIT, |l| l.starts_with(&prefix));
    }

    /// Waits until the node reports exactly `members`, and returns the placement it printed
    /// with them.
    pub fn wait_members(&mut self, members: &[&str]) -> Vec<String> {
        let expected = format!("members {}", members.join(","));
        self.wait_line(WAIT, |l| l == expected);
        let placement = self.wait_line(WAIT, |l| l.starts_with("placement "));
        placement["placement ".len()..]
            .split(',')
            .map(str::to_string)
            .collect()
    }

    /// Reads every line the node printed so far into `seen`, without waiting.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// What the node wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr_text.lock().clone()
    }

    /// Waits for the process to exit (its stderr closes); returns its status and stderr.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        if self.stderr_closed.recv_timeout(WAIT).is_err() {
            panic!(
                "node {} did not exit within {WAIT:?}; its stderr so far:\n{}",
                self.name,
                self.stderr()
            );
        }
        (self.child.wait().expect("wait for the node"), self.stderr())
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }
}
