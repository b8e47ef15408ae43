//! `--nodes N`: the workload on N `vmsdb node` processes on this machine, reported as the system
//! `vmsdb-N-nodes` next to the in-process vmsdb.
//!
//! The harness starts a private PostgreSQL server (the nodes' shared store), then the nodes on
//! loopback (free ports, a random cookie), the first one alone so that it takes the store's
//! lease and becomes the sequencer, the others joining it. Clients go to every node's HTTP API
//! in turn ([`NodesTarget`], over one [`HttpTarget`] per node); every request carries an id, so
//! one a node could not settle (no sequencer, `outcome_unknown`, node gone) is resubmitted with
//! the same id on the next node and gets its original outcome. With `--kill-node-at` one node
//! is SIGKILLed mid-run and started again a little later. The link bytes come from every
//! node's `/v1/stats`; the audit runs through the HTTP queries. Every process and the store are
//! stopped when the run ends, fails, or is interrupted ([`Processes`]'s `Drop`).

use crate::cli::CommonArgs;
use crate::driver::{AsyncTarget, drive_runtime, fmt_count};
use crate::limits::{
    KILLED_NODE_RESTART_AFTER_MS, NODE_LEASE_TTL_MS, NODE_READY_WAIT_S, NODE_RETRY_DEADLINE_S,
    NODE_RETRY_PAUSE_MAX_MS, NODE_RETRY_PAUSE_MS,
};
use crate::over_http::{HttpTarget, Reply, Retry, load_through, retry_of};
use crate::postgres::instance::{PgInstance, find_binaries};
use crate::progress::Ui;
use crate::report::{ClusterSummary, KillSummary, SystemRun};
use crate::workload::{RequestOf, Workload};
use crate::{HarnessError, drive_config, effects_of, warn_late};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use txn::TxnError;

/// The nodes' processes and their store; dropping it kills every node and stops the store.
pub struct Processes {
    vmsdb: PathBuf,
    app: &'static str,
    common: CommonArgs,
    store: String,
    nodes: Vec<NodeSlot>,
    /// Each node's stdout and stderr, for the error of a node that does not start.
    logs: tempfile::TempDir,
    /// Last, so that the nodes are gone before their store stops.
    _postgres: PgInstance,
}

/// One node: its addresses and, while it runs, its process.
struct NodeSlot {
    name: String,
    link: SocketAddr,
    http: SocketAddr,
    child: Option<Child>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for slot in &mut self.nodes {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A loopback address nothing listens on right now.
fn free_addr() -> Result<SocketAddr, HarnessError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The `vmsdb` executable: `--vmsdb-bin`, else next to this executable (or one directory up,
/// for a test executable in `target/<profile>/deps`).
pub fn vmsdb_binary(given: Option<&Path>) -> Result<PathBuf, HarnessError> {
    if let Some(path) = given {
        return match path.is_file() {
            true => Ok(path.to_path_buf()),
            false => Err(HarnessError::InvalidArgs(format!(
                "--vmsdb-bin {}: no such file",
                path.display()
            ))),
        };
    }
    let exe = std::env::current_exe()?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("vmsdb"))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            HarnessError::InvalidArgs(format!(
                "--nodes needs the vmsdb executable, not found at {}: build it (cargo build -p \
             vmsdb --bin vmsdb, with the same profile as bench-harness) or give --vmsdb-bin",
                candidates[0].display()
            ))
        })
}

/// The nodes' log filter: warnings, and the lines that break a take-over down (the lease, the
/// recovery on the sequencer, the hand-over of the replayed rows; one of each per take-over).
/// `BENCH_NODE_LOG` replaces it (a `RUST_LOG` filter: e.g. add
/// `txn::runtime::durability=debug,txn::runtime::sequencer=debug` for each checkpoint's copy and
/// write).
const NODE_LOG_FILTER: &str =
    "warn,txn::runtime=info,txn::runtime::recovery=info,vmsdb::cluster_node=info";

fn node_log_filter() -> String {
    std::env::var("BENCH_NODE_LOG").unwrap_or_else(|_| NODE_LOG_FILTER.to_string())
}

/// The directory of the nodes' logs: removed after the run, unless `BENCH_KEEP_NODE_LOGS` is
/// set (its path is then printed, to read a failover's breakdown from).
fn node_logs(ui: Ui) -> Result<tempfile::TempDir, HarnessError> {
    let keep = std::env::var_os("BENCH_KEEP_NODE_LOGS").is_some();
    let logs = tempfile::Builder::new()
        .prefix("vmsdb-nodes-")
        .disable_cleanup(keep)
        .tempdir()?;
    if keep {
        ui.status(format!(
            "the nodes' logs are kept in {}",
            logs.path().display()
        ));
    }
    Ok(logs)
}

impl Processes {
    /// Starts the store and `n` nodes, the first alone (it becomes the sequencer), and waits
    /// until every node answers `/ready`.
    pub async fn start(
        app: &'static str,
        n: u32,
        common: &CommonArgs,
        ui: Ui,
    ) -> Result<Processes, HarnessError> {
        let vmsdb = vmsdb_binary(common.vmsdb_bin.as_deref())?;
        let bins = find_binaries()?;
        let connections = 20 * n + 10;
        let mut postgres = PgInstance::start(&bins, connections, move |line| ui.status(line))?;
        drop(postgres.connect_when_ready(Duration::from_secs(60)).await?);
        let mut nodes = Vec::new();
        for i in 1..=n {
            nodes.push(NodeSlot {
                name: format!("n{i}"),
                link: free_addr()?,
                http: free_addr()?,
                child: None,
            });
        }
        let mut processes = Processes {
            vmsdb,
            app,
            common: common.clone(),
            store: postgres.url(),
            nodes,
            logs: node_logs(ui)?,
            _postgres: postgres,
        };
        let http = reqwest::Client::new();
        for index in 0..processes.nodes.len() {
            processes.spawn(index)?;
            processes.wait_ready(&http, index).await?;
        }
        Ok(processes)
    }

    /// Each node's HTTP base URL.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|s| format!("http://{}", s.http))
            .collect()
    }

    /// Starts node `index`, joining every other node (none for the very first).
    fn spawn(&mut self, index: usize) -> Result<(), HarnessError> {
        let first = self.nodes.iter().all(|s| s.child.is_none()) && index == 0;
        let slot = &self.nodes[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.path().join(format!("{}.log", slot.name)))?;
        let mut command = Command::new(&self.vmsdb);
        command
            .args(["node", "--app", self.app, "--name", &slot.name])
            .args(["--listen", &slot.link.to_string()])
            .args(["--http", &slot.http.to_string(), "--store", &self.store])
            .args(["--partitions", &self.common.partitions.to_string()])
            .args(["--lease-ttl", &format!("{NODE_LEASE_TTL_MS}ms")])
            .args(["--epoch-duration", &format!("{}us", self.common.epoch_us)])
            .args([
                "--checkpoint-every",
                &self.common.checkpoint_every.to_string(),
            ])
            .args(["--heartbeat-interval", "100ms", "--failure-timeout", "1s"])
            .args(
                self.common
                    .spread_partitions
                    .then_some("--spread-partitions"),
            )
            .env("VMSDB_COOKIE", cookie())
            .env_remove("VMSDB_SEEDS")
            .env_remove("VMSDB_TOKEN")
            .env("RUST_LOG", node_log_filter())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !first {
            for (i, other) in self.nodes.iter().enumerate() {
                if i != index {
                    command.args(["--seed", &other.link.to_string()]);
                }
            }
        }
        let child = command.spawn().map_err(|e| {
            HarnessError::Storage(format!("starting {}: {e}", self.vmsdb.display()))
        })?;
        self.nodes[index].child = Some(child);
        Ok(())
    }

    /// Waits until node `index` answers `/ready` with 200; fails with its log if it exits or
    /// takes longer than `NODE_READY_WAIT_S`.
    async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        index: usize,
    ) -> Result<(), HarnessError> {
        let url = format!("http://{}/ready", self.nodes[index].http);
        let deadline = Instant::now() + Duration::from_secs(NODE_READY_WAIT_S);
        loop {
            let answer = http.get(&url).send().await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            let slot = &mut self.nodes[index];
            let exited = match slot.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                other => Some(format!("{other:?}")),
            };
            if exited.is_some() || Instant::now() > deadline {
                let log = self.logs.path().join(format!("{}.log", slot.name));
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(HarnessError::Storage(format!(
                    "node {} did not become ready within {NODE_READY_WAIT_S} s (exit: {}); it \
                     printed:\n{text}",
                    slot.name,
                    exited.unwrap_or_else(|| "still running".into())
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// With the partitions spread: how many each node hosts in the newest placement a
    /// sequencer printed in its log (`spread term T OWNERS`, the highest term, the last line
    /// of it); empty when none did.
    fn spread_counts(&self) -> BTreeMap<String, u32> {
        let mut newest: Option<(u64, String)> = None;
        for slot in &self.nodes {
            let log = self.logs.path().join(format!("{}.log", slot.name));
            let text = std::fs::read_to_string(log).unwrap_or_default();
            for line in text.lines() {
                let mut words = line.strip_prefix("spread term ").unwrap_or("").split(' ');
                let term = words.next().and_then(|t| t.parse::<u64>().ok());
                if let (Some(term), Some(owners)) = (term, words.next())
                    && newest.as_ref().is_none_or(|(t, _)| term >= *t)
                {
                    newest = Some((term, owners.to_string()));
                }
            }
        }
        let mut counts = BTreeMap::new();
        for owner in newest.iter().flat_map(|(_, owners)| owners.split(',')) {
            *counts.entry(owner.to_string()).or_insert(0) += 1;
        }
        counts
    }

    /// SIGKILLs node `index`.
    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The cookie of this run's nodes: random, so no other cluster on the machine can join them.
fn cookie() -> &'static str {
    static COOKIE: OnceLock<String> = OnceLock::new();
    COOKIE.get_or_init(|| format!("bench-{:016x}", rand::random::<u64>()))
}

/// What the clients saw around a kill.
#[derive(Default)]
struct Failover {
    killed_at: OnceLock<Instant>,
    first_commit_after_kill: Mutex<Option<Duration>>,
    outcome_unknown: AtomicU64,
    resubmitted: AtomicU64,
}

/// The workload's target over every node: requests go to the nodes in turn, each under an id
/// `<client>/<seq>`, and are resubmitted with that id on the next node until one settles them.
pub struct NodesTarget<W: Workload> {
    nodes: Arc<Vec<HttpTarget<W>>>,
    next_node: Arc<AtomicUsize>,
    id_client: u64,
    next_seq: Arc<AtomicU64>,
    failover: Arc<Failover>,
    /// Seeds the jitter of the resubmission pauses (`--seed`).
    seed: u64,
}

impl<W: Workload> Clone for NodesTarget<W> {
    fn clone(&self) -> Self {
        NodesTarget {
            nodes: self.nodes.clone(),
            next_node: self.next_node.clone(),
            id_client: self.id_client,
            next_seq: self.next_seq.clone(),
            failover: self.failover.clone(),
            seed: self.seed,
        }
    }
}

impl<W: Workload> NodesTarget<W> {
    fn new(urls: Vec<String>, w: &W, seed: u64) -> Self {
        let nodes = urls
            .into_iter()
            .map(|url| HttpTarget::new(url, w.app().clone()))
            .collect();
        NodesTarget {
            nodes: Arc::new(nodes),
            next_node: Arc::new(AtomicUsize::new(0)),
            // A client number below 2^63: the top bit marks ids the nodes generate.
            id_client: rand::random::<u64>() >> 1,
            next_seq: Arc::new(AtomicU64::new(0)),
            failover: Arc::new(Failover::default()),
            seed,
        }
    }

    /// Submits `item` (the request numbered `seq`) to node after node until one answers with an
    /// outcome or a final error; after each round that every node refused, it pauses (see
    /// [`retry_pause`]) before resubmitting it under the same id.
    async fn settle(&self, seq: u64, item: Vec<u8>) -> Reply {
        let sent_at = Instant::now();
        let deadline = sent_at + Duration::from_secs(NODE_RETRY_DEADLINE_S);
        let mut node = self.next_node.fetch_add(1, Ordering::Relaxed);
        let mut refusals = 0usize;
        loop {
            let reply = self.nodes[node % self.nodes.len()]
                .submit_item(item.clone())
                .await;
            let error = match reply {
                Ok(outcome) => {
                    self.note_settled(sent_at, outcome.is_ok());
                    return Ok(outcome);
                }
                Err(error) => error,
            };
            match retry_of(&error) {
                Retry::No => return Err(error),
                Retry::OutcomeUnknown => self
                    .failover
                    .outcome_unknown
                    .fetch_add(1, Ordering::Relaxed),
                Retry::Yes => 0,
            };
            if Instant::now() > deadline {
                return Err(error);
            }
            self.failover.resubmitted.fetch_add(1, Ordering::Relaxed);
            node += 1;
            refusals += 1;
            if refusals.is_multiple_of(self.nodes.len()) {
                let round = (refusals / self.nodes.len()) as u32;
                tokio::time::sleep(retry_pause(self.seed ^ seq, round)).await;
            }
        }
    }

    /// Records the first commit of a request sent after the kill.
    fn note_settled(&self, sent_at: Instant, committed: bool) {
        let Some(killed_at) = self.failover.killed_at.get() else {
            return;
        };
        if committed && sent_at >= *killed_at {
            let mut first = self
                .failover
                .first_commit_after_kill
                .lock()
                .expect("not poisoned");
            first.get_or_insert_with(|| killed_at.elapsed());
        }
    }
}

impl<W: Workload> AsyncTarget<W> for NodesTarget<W> {
    async fn submit(&self, request: RequestOf<W>) -> Reply {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}/{seq}", self.id_client);
        let item = self.nodes[0].encode_with_key(&request, Some(&key))?;
        self.settle(seq, item).await
    }

    /// A query changes nothing: one a node could not answer (it is down, or knows no
    /// sequencer yet) is asked of the next node, until `NODE_RETRY_DEADLINE_S`.
    async fn query(&self, w: &W, query: W::Query) -> Result<(), TxnError> {
        let deadline = Instant::now() + Duration::from_secs(NODE_RETRY_DEADLINE_S);
        let mut node = self.next_node.fetch_add(1, Ordering::Relaxed);
        let mut refusals = 0;
        loop {
            let answer = self.nodes[node % self.nodes.len()]
                .query(w, query.clone())
                .await;
            if answer.is_ok() || Instant::now() > deadline {
                return answer;
            }
            node += 1;
            refusals += 1;
            if refusals % self.nodes.len() == 0 {
                tokio::time::sleep(Duration::from_millis(NODE_RETRY_PAUSE_MS)).await;
            }
        }
    }
}

/// The pause after the `round`-th round of refusals of one request: `NODE_RETRY_PAUSE_MS`
/// doubled each round up to `NODE_RETRY_PAUSE_MAX_MS`, times a jitter in [1/2, 1] drawn from
/// `seed` and the round (splitmix64), so the clients waiting out a failover neither resubmit
/// in step nor keep the CPU busy while the new sequencer recovers. A resubmission keeps its id,
/// so a pause never changes an outcome (exactly once).
fn retry_pause(seed: u64, round: u32) -> Duration {
    let doubled = NODE_RETRY_PAUSE_MS.saturating_mul(1 << round.saturating_sub(1).min(16));
    let longest = doubled.min(NODE_RETRY_PAUSE_MAX_MS);
    let mut z = seed.wrapping_add(u64::from(round).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let jitter_per_mille = 500 + z % 501;
    Duration::from_millis(longest * jitter_per_mille / 1000)
}

/// The link bytes and messages each node sent to each other node, by (from, to).
type LinkCounts = BTreeMap<(String, String), (u64, u64)>;

/// Every live node's `/v1/stats` link counters, as (sent by the node, received by the peer)
/// per direction: a frame is counted by its sender and by its receiver, so a direction stays
/// measured when one of its two ends was killed and restarted (its counters started again).
async fn link_counts(
    http: &reqwest::Client,
    processes: &Mutex<Processes>,
) -> (LinkCounts, LinkCounts) {
    let nodes: Vec<(String, String)> = {
        let p = processes.lock().expect("not poisoned");
        p.nodes
            .iter()
            .map(|s| (s.name.clone(), format!("http://{}/v1/stats", s.http)))
            .collect()
    };
    let (mut sent, mut received) = (LinkCounts::new(), LinkCounts::new());
    for (name, url) in nodes {
        let Ok(answer) = http.get(&url).send().await else {
            continue;
        };
        let Ok(stats) = answer.json::<serde_json::Value>().await else {
            continue;
        };
        for peer in stats["link"].as_array().into_iter().flatten() {
            let count = |key: &str| peer[key].as_u64().unwrap_or(0);
            let other = peer["node"].as_str().unwrap_or_default().to_string();
            let out = (count("bytes_sent"), count("messages_sent"));
            let into = (count("bytes_received"), count("messages_received"));
            sent.insert((name.clone(), other.clone()), out);
            received.insert((other, name.clone()), into);
        }
    }
    (sent, received)
}

/// Link bytes and messages between two samples: per direction, the larger of what its sender
/// and its receiver counted (one of them ran throughout).
fn link_traffic(before: &(LinkCounts, LinkCounts), after: &(LinkCounts, LinkCounts)) -> (u64, u64) {
    let delta = |now: &LinkCounts, then: &LinkCounts, key: &(String, String)| {
        let (b1, m1) = now.get(key).copied().unwrap_or_default();
        let (b0, m0) = then.get(key).copied().unwrap_or_default();
        (b1.saturating_sub(b0), m1.saturating_sub(m0))
    };
    let directions: std::collections::BTreeSet<&(String, String)> =
        after.0.keys().chain(after.1.keys()).collect();
    let (mut bytes, mut messages) = (0, 0);
    for key in directions {
        let by_sender = delta(&after.0, &before.0, key);
        let by_receiver = delta(&after.1, &before.1, key);
        bytes += by_sender.0.max(by_receiver.0);
        messages += by_sender.1.max(by_receiver.1);
    }
    (bytes, messages)
}

/// The index of the node `--kill-node` names: `sequencer` is the node whose `/v1/stats` shows a
/// runtime (the lease holder).
async fn victim(
    http: &reqwest::Client,
    processes: &Mutex<Processes>,
    wanted: &str,
) -> Result<(usize, bool), HarnessError> {
    let nodes: Vec<(String, SocketAddr)> = {
        let p = processes.lock().expect("not poisoned");
        p.nodes.iter().map(|s| (s.name.clone(), s.http)).collect()
    };
    let mut sequencer = None;
    for (i, (_, addr)) in nodes.iter().enumerate() {
        let url = format!("http://{addr}/v1/stats");
        if let Ok(answer) = http.get(&url).send().await
            && let Ok(stats) = answer.json::<serde_json::Value>().await
            && !stats["runtime"].is_null()
        {
            sequencer = Some(i);
        }
    }
    let index = match wanted {
        "sequencer" => sequencer
            .ok_or_else(|| HarnessError::Storage("no node reports being the sequencer".into()))?,
        name => nodes.iter().position(|(n, _)| n == name).ok_or_else(|| {
            let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
            HarnessError::InvalidArgs(format!(
                "--kill-node {name}: no such node (the nodes are sequencer, {})",
                names.join(", ")
            ))
        })?,
    };
    Ok((index, sequencer == Some(index)))
}

/// Kills the victim `at` into the run, starts it again `KILLED_NODE_RESTART_AFTER_MS` later and
/// waits for it to be ready.
async fn kill_and_restart<W: Workload>(
    processes: Arc<Mutex<Processes>>,
    target: NodesTarget<W>,
    (index, was_sequencer): (usize, bool),
    at: Duration,
) -> Result<KillSummary, HarnessError> {
    tokio::time::sleep(at).await;
    let node = {
        let mut p = processes.lock().expect("not poisoned");
        p.kill(index);
        p.nodes[index].name.clone()
    };
    let killed_at = Instant::now();
    let _ = target.failover.killed_at.set(killed_at);
    tokio::time::sleep(Duration::from_millis(KILLED_NODE_RESTART_AFTER_MS)).await;
    processes.lock().expect("not poisoned").spawn(index)?;
    let url = format!(
        "{}/ready",
        processes.lock().expect("not poisoned").urls()[index]
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(NODE_READY_WAIT_S);
    let mut rejoined_s = None;
    while Instant::now() < deadline {
        if http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            rejoined_s = Some(killed_at.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(KillSummary {
        node,
        was_sequencer,
        at_s: at.as_secs_f64(),
        failover_s: None,
        outcome_unknown: 0,
        resubmitted: 0,
        rejoined_s,
    })
}

/// The application `vmsdb node --app` serves for workload `name`.
fn app_name(name: &str) -> Result<&'static str, HarnessError> {
    match name {
        "transfer" => Ok("ledger"),
        "ycsb" => Ok("ycsb"),
        "marketplace" => Ok("marketplace"),
        other => Err(HarnessError::InvalidArgs(format!(
            "--nodes: vmsdb node has no application for workload {other}"
        ))),
    }
}

/// The end state checked through the HTTP queries: the transfer ledger's `audit` query gives
/// every figure the in-process audit checks, the marketplace's evaluates every criterion on
/// the sequencer; YCSB-T has no audit query over HTTP.
async fn audit_over_http<W: Workload>(
    w: &W,
    url: &str,
    effects: &crate::Effects,
    spread: bool,
) -> Result<(services::Violations, String), HarnessError> {
    let any: &dyn std::any::Any = w;
    if let Some(market) = any.downcast_ref::<crate::workloads::marketplace::MarketplaceWorkload>() {
        return audit_market_over_http(url, &market.expected_over_http(effects)).await;
    }
    let Some(transfer) = any.downcast_ref::<crate::workloads::transfer::TransferWorkload>() else {
        let none = format!(
            "none: vmsdb node serves no audit query for {} over HTTP",
            w.name()
        );
        return Ok((services::Violations::new(), none));
    };
    let failed = |e: String| HarnessError::Storage(format!("the audit query through {url}: {e}"));
    let answer = reqwest::Client::new()
        .post(format!("{url}/v1/queries/audit"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = answer.status();
    let audit: serde_json::Value = answer.json().await.map_err(|e| failed(e.to_string()))?;
    if spread && !status.is_success() {
        // A snapshot query over partitions on other nodes is refused where queries cannot
        // travel between nodes: say so rather than fail the run.
        let none = format!(
            "none: the audit query through {url} was refused with the partitions spread \
             ({status}: {})",
            audit["message"].as_str().unwrap_or_default()
        );
        return Ok((services::Violations::new(), none));
    }
    let count = |key: &str| {
        audit[key]
            .as_u64()
            .ok_or_else(|| failed(format!("no {key}: {audit}")))
    };
    let total = |key: &str| match &audit[key] {
        serde_json::Value::Number(n) => n.as_i64().map(i128::from),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    };
    let ledger_audit = services::ledger::LedgerAudit {
        n_accounts: count("n_accounts")?,
        n_entries: count("n_entries")?,
        total_balance: total("total_balance").ok_or_else(|| failed(format!("{audit}")))?,
        total_assets: total("total_assets").ok_or_else(|| failed(format!("{audit}")))?,
        n_negative_balances: count("n_negative_balances")?,
        n_negative_entries: count("n_negative_entries")?,
    };
    let violations = services::ledger::check(&ledger_audit, &transfer.expected(effects));
    let checks: Vec<&str> = violations.keys().copied().collect();
    let ran = format!(
        "{} (the ledger's audit query, through {url})",
        checks.join(", ")
    );
    Ok((violations, ran))
}

/// The marketplace's `audit` query through `url`, told the run's initial stock and committed
/// checkouts: the violations of every criterion, as the in-process check counts them.
async fn audit_market_over_http(
    url: &str,
    expected: &services::marketplace::Expected,
) -> Result<(services::Violations, String), HarnessError> {
    use services::marketplace::check::criteria;
    let failed = |e: String| HarnessError::Storage(format!("the audit query through {url}: {e}"));
    let body = serde_json::json!({
        "initial_stock": expected.initial_stock,
        "committed_checkouts": expected.committed_checkouts,
    });
    let answer = reqwest::Client::new()
        .post(format!("{url}/v1/queries/audit"))
        .json(&body)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let audit: serde_json::Value = answer.json().await.map_err(|e| failed(e.to_string()))?;
    let mut violations = services::Violations::new();
    let mut examples = String::new();
    for name in criteria::ALL {
        let found = &audit["criteria"][name];
        let count = found["violations"]
            .as_u64()
            .ok_or_else(|| failed(format!("no criterion {name}: {audit}")))?;
        if count > 0 {
            examples.push_str(&format!("; {name}, e.g. {}", found["examples"]));
        }
        violations.insert(name, count);
    }
    let ran = format!(
        "{} (the marketplace's audit query, through {url}){examples}",
        criteria::ALL.join(", ")
    );
    Ok((violations, ran))
}

/// Runs the workload on `n` node processes; stops them (and their store) when done, on error
/// and on Ctrl-C.
pub async fn run<W: Workload>(
    w: Arc<W>,
    common: &CommonArgs,
    ui: Ui,
    n: u32,
) -> Result<(SystemRun, ClusterSummary), HarnessError> {
    tokio::select! {
        result = run_nodes(w, common, ui, n) => result,
        _ = tokio::signal::ctrl_c() => Err(HarnessError::InvalidArgs(
            "interrupted (Ctrl-C): the nodes and their store were stopped".into(),
        )),
    }
}

async fn run_nodes<W: Workload>(
    w: Arc<W>,
    common: &CommonArgs,
    ui: Ui,
    n: u32,
) -> Result<(SystemRun, ClusterSummary), HarnessError> {
    // The name lives as long as the reports that hold it, i.e. the process: one small leak
    // per run.
    let name: &'static str = Box::leak(format!("vmsdb-{n}-nodes").into_boxed_str());
    ui.status(format!(
        "{name}: starting PostgreSQL and {n} vmsdb node processes"
    ));
    let processes = Processes::start(app_name(w.name())?, n, common, ui).await?;
    let urls = processes.urls();
    let processes = Arc::new(Mutex::new(processes));
    let target = NodesTarget::new(urls.clone(), &*w, common.seed);
    let load = load_through(&*w, &target, common, ui).await?;
    ui.status(format!(
        "{name}: loaded in {:.2} s ({} req/s)",
        load.seconds,
        fmt_count(load.requests_per_s as u64)
    ));
    let http = reqwest::Client::new();
    let victim = match common.kill_node_at {
        Some(_) => Some(victim(&http, &processes, &common.kill_node).await?),
        None => None,
    };
    let before = link_counts(&http, &processes).await;
    let progress = ui.run_bar(name, common.duration);
    let killing = async {
        match (victim, common.kill_node_at) {
            (Some(v), Some(at)) => {
                Some(kill_and_restart(processes.clone(), target.clone(), v, at).await)
            }
            _ => None,
        }
    };
    let (driven, kill) = tokio::join!(
        drive_runtime(w.clone(), target.clone(), drive_config(common), &progress),
        killing
    );
    warn_late(ui, name, &driven);
    let kill = kill.transpose()?.map(|k| finish_kill(k, &target));
    let (link_bytes, link_messages) = link_traffic(&before, &link_counts(&http, &processes).await);
    ui.status(format!(
        "{name}: checking consistency (through the HTTP queries)"
    ));
    let (violations, audit) = audit_over_http(
        &*w,
        &urls[0],
        &effects_of(&driven.recorder),
        common.spread_partitions,
    )
    .await?;
    drop(target);
    let cluster = ClusterSummary {
        nodes: n,
        system: name.to_string(),
        link_bytes,
        link_messages,
        network_bytes_per_txn: link_bytes as f64 / driven.recorder.committed().max(1) as f64,
        lease_ttl_s: NODE_LEASE_TTL_MS as f64 / 1000.0,
        audit,
        kill,
        placement: if common.spread_partitions {
            "spread"
        } else {
            "active-standby"
        },
        partitions_per_node: processes.lock().expect("not poisoned").spread_counts(),
    };
    let run = SystemRun {
        name,
        recorder: driven.recorder,
        elapsed: driven.elapsed,
        violations,
        load,
        runtime_stats: None,
        storage: format!(
            "postgres (one private server shared by {n} vmsdb node processes; HTTP/JSON batches \
             to every node in turn)"
        ),
        anomalies_expected: false,
        usage: None,
    };
    Ok((run, cluster))
}

/// The kill's summary with what the clients counted.
fn finish_kill<W: Workload>(mut kill: KillSummary, target: &NodesTarget<W>) -> KillSummary {
    let failover = &target.failover;
    kill.failover_s = failover
        .first_commit_after_kill
        .lock()
        .expect("not poisoned")
        .map(|d| d.as_secs_f64());
    kill.outcome_unknown = failover.outcome_unknown.load(Ordering::Relaxed);
    kill.resubmitted = failover.resubmitted.load(Ordering::Relaxed);
    kill
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: a request's resubmission pauses grow from the first pause to the longest and stay
    // there, each jittered within [1/2, 1] of its length, the same for the same seed and round.
    #[test]
    fn resubmission_pauses_back_off_bounded_and_seeded() {
        let first = Duration::from_millis(NODE_RETRY_PAUSE_MS);
        let longest = Duration::from_millis(NODE_RETRY_PAUSE_MAX_MS);
        for seed in [0, 1, 42, u64::MAX] {
            assert!(retry_pause(seed, 1) <= first && retry_pause(seed, 1) >= first / 2);
            for round in 1..40 {
                let pause = retry_pause(seed, round);
                assert!(pause <= longest, "round {round}: {pause:?}");
                assert_eq!(pause, retry_pause(seed, round), "not seeded");
            }
            assert!(retry_pause(seed, 30) >= longest / 2);
        }
        let distinct: std::collections::BTreeSet<Duration> =
            (0..64).map(|seed| retry_pause(seed, 10)).collect();
        assert!(distinct.len() > 8, "no jitter: {distinct:?}");
    }
}
