//! Helpers for the server tests: a server started in-process or as the built binary, on
//! 127.0.0.1 with an ephemeral port and a temporary data directory, always stopped.
#![allow(dead_code)]

pub mod node;
pub mod serving;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use tempfile::TempDir;
use vmsdb::{AppChoice, Server, Settings};

/// A server running in this process.
pub struct TestServer {
    server: Option<Server>,
    pub url: String,
    pub http: reqwest::Client,
    pub dir: TempDir,
}

/// The answer of one request: status and JSON body (`Value::Null` if the body is not JSON).
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The error code of an error answer.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl TestServer {
    /// Starts `app` with the default settings changed by `tweak`, and waits until it is ready.
    pub async fn start(app: AppChoice, tweak: impl FnOnce(&mut Settings)) -> TestServer {
        Self::start_in(tempfile::tempdir().expect("temp dir"), app, tweak).await
    }

    /// Stops the server gracefully and starts it again on the same data directory.
    pub async fn restart(self, app: AppChoice) -> TestServer {
        Self::start_in(self.stop().await, app, |_| {}).await
    }

    async fn start_in(
        dir: TempDir,
        app: AppChoice,
        tweak: impl FnOnce(&mut Settings),
    ) -> TestServer {
        let mut settings = Settings::new(app, dir.path());
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.epoch_duration = Some(std::time::Duration::from_millis(1));
        tweak(&mut settings);
        let mut server = Server::start(settings).await.expect("server starts");
        server.wait_started().await.expect("runtime opens");
        let url = format!("http://{}", server.local_addr());
        TestServer {
            server: Some(server),
            url,
            http: reqwest::Client::new(),
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().unwrap().local_addr()
    }

    /// POSTs `body` (sent as is) to `path`, with `headers`.
    pub async fn post_with(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.url)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await.expect("request sent")).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Answer {
        self.post_with(path, body.to_string(), &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.http.get(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.get_with(path, &[]).await
    }

    /// The raw text of a GET.
    pub async fn get_text(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Shuts the server down gracefully; returns its data directory (deleted when dropped).
    pub async fn stop(mut self) -> TempDir {
        let server = self.server.take().unwrap();
        server.shutdown().await.expect("clean shutdown");
        self.dir
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    Answer {
        status,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

/// The built `vmsdb` binary running `serve`; killed when dropped if still running.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `vmsdb serve --listen 127.0.0.1:0 --data-dir DIR <args>` and waits until it has
    /// printed the address it listens on (it does so right after binding, before it opens the
    /// store).
    pub fn start(dir: &Path, args: &[&str]) -> ServerProcess {
        let dir = dir.to_str().expect("a UTF-8 temporary directory");
        Self::start_on(&["--data-dir", dir], args)
    }

    /// Starts `vmsdb serve --listen 127.0.0.1:0 <store> <args>`, `store` naming where the data
    /// goes (`--data-dir DIR` or `--store URL`), and waits until it printed its address.
    pub fn start_on(store: &[&str], args: &[&str]) -> ServerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmsdb"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(store)
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("VMSDB_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vmsdb starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("vmsdb printed its address before exiting")
                .expect("stderr readable");
            if let Some(rest) = line.split("listening addr=").nth(1) {
                break rest.trim().parse().expect("an address");
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        ServerProcess { child, addr }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let status = self.child.wait().expect("wait");
        std::mem::forget(self);
        status
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /ready` until it answers 200: a bounded retry loop (at most 30 s), every 10 ms.
/// Fails with the last answer.
pub async fn wait_ready(http: &reqwest::Client, url: &str) {
    let mut last = "no answer".to_string();
    for _ in 0..3000 {
        if let Ok(r) = http.get(format!("{url}/ready")).send().await {
            let status = r.status().as_u16();
            if status == 200 {
                return;
            }
            last = format!("{status} {}", r.text().await.unwrap_or_default());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{url} never became ready; /ready last answered {last}");
}

/// Runs the built `vmsdb` binary with `args`: whether it succeeded, its stdout and stderr.
pub fn vmsdb(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vmsdb"))
        .args(args)
        .output()
        .expect("vmsdb runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The test's seed: `TXN_TEST_SEED` to replay a run, else the clock; printed either way.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("TXN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (replay with TXN_TEST_SEED={seed})");
    seed
}

/// splitmix64: the clients' small deterministic random numbers.
pub fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// POSTs `body` as JSON to `url`, with `Idempotency-Key: key` if given; the status and JSON
/// answer, or `None` when nothing answered (refused, reset, killed, timed out).
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    idempotency_key: Option<&str>,
    body: &Value,
) -> Option<(u16, Value)> {
    let mut request = http.post(url).json(body);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}
