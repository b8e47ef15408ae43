//! `vmsdb node` child processes for the cluster tests: spawned on 127.0.0.1 with the test
//! cookie and fast heartbeats, stdout read line by line on a channel so a test waits for what a
//! node prints with a deadline, always killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus, Stdio};
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
    /// The whole stderr, sent when the process closes it (exits).
    stderr: Receiver<String>,
    pub seen: Vec<String>,
}

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
        .args(["--heartbeat-interval", HEARTBEAT, "--failure-timeout", "1s"])
        .args(["--join-timeout", "10s"])
        .env("VMSDB_COOKIE", COOKIE)
        .env("RUST_LOG", "warn")
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
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let (stderr_sender, stderr) = channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        let _ = stderr_sender.send(text);
    });
    let (sender, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    Node {
        name: name.to_string(),
        child,
        lines,
        stderr,
        seen: Vec::new(),
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
                     stderr (once it exited): {}",
                    self.name,
                    self.seen.join("\n"),
                    self.stderr.try_recv().unwrap_or_default()
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

    /// Waits for the process to exit (its stderr closes); returns its status and stderr.
    pub fn wait_exit(&mut self) -> (ExitStatus, String) {
        let stderr = self
            .stderr
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("node {} did not exit within {WAIT:?}", self.name));
        (self.child.wait().expect("wait for the node"), stderr)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }
}
