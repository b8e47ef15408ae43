//! The checkpoint copy across nodes: a runtime on node "a" drives epochs over partitions spread
//! round-robin over three nodes, the other two held by `PartitionHost`s behind a link that can
//! lose one reply or refuse replies over a size limit (the link's payload limit, at test scale).
//!
//! Checked: a checkpoint step whose reply is lost after the node's partitions handed their rows
//! over completes no checkpoint and truncates no log: the runtime refuses further writes with an
//! error naming the step, and a recovery on the same store has every row of a single-process
//! run of the same requests. A checkpoint whose rows on each node exceed the link's reply
//! limit (lowered for the test, with the placement's answer budget) is sent in shares over
//! several steps and completes, and a recovery from it has every row. An answer budget the
//! link cannot carry is refused at start.

use crate::common;

use crate::common::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use txn::storage::{MemoryStorage, Storage};
use txn::{
    ClusterPlacement, LinkError, LoopbackLink, NodeLink, PartitionHost, Runtime, RuntimeConfig,
    TxnError,
};

const NODES: [&str; 3] = ["a", "b", "c"];

/// Epochs between checkpoints: the first one falls due after this many epochs.
const CHECKPOINT_EVERY_EPOCHS: u64 = 40;

/// A loopback link that can lose a reply: once armed for a node, that node's next request is
/// delivered and answered (its partitions do the work), but the reply is lost and the request
/// fails, as when a connection breaks after the answer. It also refuses, like the cluster's
/// link, every reply larger than its limit, and remembers the largest reply it carried.
struct LossyLink {
    inner: LoopbackLink,
    armed_for: Mutex<Option<String>>,
    reply_bytes_max: usize,
    largest_reply_bytes: AtomicUsize,
}

type ReplyFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, LinkError>> + Send + 'a>>;

impl NodeLink for LossyLink {
    fn request<'a>(&'a self, node: &'a str, bytes: Vec<u8>) -> ReplyFuture<'a> {
        Box::pin(async move {
            let reply = self.inner.request(node, bytes).await?;
            let failed = |reason: String| LinkError::Failed {
                node: node.to_string(),
                reason,
            };
            let lost = {
                let mut armed_for = self.armed_for.lock().unwrap();
                let lost = armed_for.as_deref() == Some(node);
                if lost {
                    *armed_for = None;
                }
                lost
            };
            if lost {
                return Err(failed("the test lost this reply".to_string()));
            }
            if reply.len() > self.reply_bytes_max {
                let (bytes, max) = (reply.len(), self.reply_bytes_max);
                return Err(failed(format!(
                    "a reply of {bytes} bytes exceeds the link's limit of {max} bytes"
                )));
            }
            self.largest_reply_bytes
                .fetch_max(reply.len(), Ordering::Relaxed);
            Ok(reply)
        })
    }
}

impl LossyLink {
    fn new(reply_bytes_max: usize) -> Self {
        LossyLink {
            inner: LoopbackLink::new(),
            armed_for: Mutex::new(None),
            reply_bytes_max,
            largest_reply_bytes: AtomicUsize::new(0),
        }
    }

    /// Loses the reply to `node`'s next request.
    fn lose_next_reply_of(&self, node: &str) {
        *self.armed_for.lock().unwrap() = Some(node.to_string());
    }
}

/// A runtime on node "a" and hosts for "b" and "c".
struct ThreeNodes {
    rt: Runtime<ChainApp>,
    hosts: Vec<Arc<PartitionHost<ChainApp>>>,
    link: Arc<LossyLink>,
}

impl ThreeNodes {
    /// Starts hosts "b" and "c" (placed by `owners`) and the runtime on "a" over `config`'s
    /// storage; `placed` adjusts the placement.
    async fn start(
        fx: &Fixture,
        config: RuntimeConfig,
        link: LossyLink,
        placed: impl FnOnce(ClusterPlacement) -> ClusterPlacement,
    ) -> Self {
        let owners = owners(fx);
        let link = Arc::new(link);
        let mut hosts = Vec::new();
        for node in &NODES[1..] {
            let host = Arc::new(PartitionHost::start(fx.app.clone(), node, &owners).unwrap());
            let serving = host.clone();
            link.inner.add_node(node, move |bytes| {
                let host = serving.clone();
                async move { host.handle(bytes).await }
            });
            hosts.push(host);
        }
        let placement = ClusterPlacement {
            phase_timeout: Duration::from_secs(30),
            ..ClusterPlacement::new(NODES[0], owners, link.clone())
        };
        let rt = Runtime::start(fx.app.clone(), config.cluster(placed(placement)))
            .await
            .unwrap();
        ThreeNodes { rt, hosts, link }
    }

    async fn stop(self) {
        self.rt.shutdown().await;
        for host in self.hosts {
            host.stop().await;
        }
    }
}

/// Global partition `gp` lives on node `gp % 3`.
fn owners(fx: &Fixture) -> Vec<String> {
    (0..fx.app.n_partitions_total())
        .map(|gp| NODES[gp as usize % NODES.len()].to_string())
        .collect()
}

/// The tests' settings: `storage`, a checkpoint every `CHECKPOINT_EVERY_EPOCHS` epochs.
fn checkpointing(storage: &Arc<MemoryStorage>) -> RuntimeConfig {
    RuntimeConfig {
        checkpoint_every_epochs: CHECKPOINT_EVERY_EPOCHS,
        ..RuntimeConfig::with_storage(storage.clone())
    }
}

/// A key of service 0 whose partition is on node "a", the driver's own.
fn key_on_a(fx: &Fixture) -> (txn::ServiceRef, u64) {
    let svc = fx.services[0];
    let key = (0..)
        .find(|key| NODES[svc.partition_of(key) as usize % NODES.len()] == "a")
        .expect("some key is on a");
    (svc, key)
}

/// Transaction `i` of the load: adds `i + 1` to key `i` of every service, so every node's
/// partitions get rows.
fn load_txn(i: u64) -> Ev {
    let ops = (0..3)
        .map(|svc| Op {
            svc,
            key: i,
            kind: OpKind::Add(i as i64 + 1),
        })
        .collect();
    Ev::chain(ops)
}

// Goal: a node whose checkpoint step reply is lost after its partitions handed their rows over
// (they no longer track them) makes the runtime refuse writes with an error naming the step;
// no checkpoint is completed without those rows, the log keeps every epoch, and a recovery on
// the same store has every row of a single-process run of the same requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_checkpoint_step_reply_stops_writes_and_loses_no_row() {
    let (fx, storage) = (build(3, 4), Arc::new(MemoryStorage::new()));
    let config = || checkpointing(&storage);
    let nodes = ThreeNodes::start(&fx, config(), LossyLink::new(usize::MAX), |p| p).await;
    let reference = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    // One transaction per epoch (one client, one at a time), up to the epoch before the
    // checkpoint falls due.
    let (client, reference_client) = (nodes.rt.client(), reference.client());
    for i in 0..CHECKPOINT_EVERY_EPOCHS - 1 {
        let (svc, key) = fx.first_target(&load_txn(i));
        client.submit_raw(svc, &key, load_txn(i)).await.unwrap();
        reference_client
            .submit_raw(svc, &key, load_txn(i))
            .await
            .unwrap();
    }
    assert_eq!(
        nodes.rt.stats().snapshot().epochs,
        CHECKPOINT_EVERY_EPOCHS - 1
    );

    // The epoch at which the checkpoint falls due reads a key on node "a" only, so the only
    // request to "c" after it is the checkpoint's first step, which copies its few rows at once.
    let (svc, key) = key_on_a(&fx);
    nodes.link.lose_next_reply_of("c");
    // Its own outcome may or may not be released before the step fails; it wrote nothing.
    let _ = client.submit_raw(svc, &key, read0(key)).await;
    let error = client
        .submit_raw(svc, &key, op0(key, OpKind::Add(1)))
        .await
        .expect_err("writes must stop after a failed checkpoint step");
    let text = error.to_string();
    assert!(
        matches!(
            error,
            TxnError::Storage(_) | TxnError::OutcomeUnknown { .. }
        ) && text.contains("checkpoint step")
            && text.contains("node \"c\""),
        "{text}"
    );
    // The node's failure names the checkpoint's epoch, not that of its last wave.
    let named = format!("failed the checkpoint step batch of epoch {CHECKPOINT_EVERY_EPOCHS}");
    assert!(text.contains(&named), "{text}");
    assert_eq!(
        storage.latest_checkpoint_epoch().unwrap(),
        None,
        "a checkpoint was completed without the rows of node c"
    );
    let mut logged = Vec::new();
    storage
        .read_epochs(0, &mut |epoch, _| {
            logged.push(epoch);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        logged.first(),
        Some(&1),
        "the log was truncated: {logged:?}"
    );
    assert!(
        logged.len() as u64 >= CHECKPOINT_EVERY_EPOCHS - 1,
        "{logged:?}"
    );
    nodes.stop().await;

    // A new cluster runtime on the same store recovers every row from the log.
    let expected_hash = reference_client.state_hash().await.unwrap();
    let expected_rows = read_all_rows(&reference_client, &fx).await;
    reference.shutdown().await;
    assert_eq!(
        expected_rows.len(),
        3 * (CHECKPOINT_EVERY_EPOCHS as usize - 1)
    );
    let nodes = ThreeNodes::start(&fx, config(), LossyLink::new(usize::MAX), |p| p).await;
    let report = nodes.rt.recovery_report().clone();
    assert_eq!(report.checkpoint_epoch, None, "{report:?}");
    assert_eq!(nodes.rt.client().state_hash().await.unwrap(), expected_hash);
    nodes.stop().await;
    // And so does one process, whose rows can all be read.
    let rt = Runtime::start(fx.app.clone(), config()).await.unwrap();
    assert_eq!(read_all_rows(&rt.client(), &fx).await, expected_rows);
    rt.shutdown().await;
}

/// The link's reply limit in the split-answer test, the real one (16 MiB) at test scale.
const TEST_LINK_REPLY_BYTES_MAX: usize = 128 * 1024;

/// Rows the split-answer test loads into each service: each node's share of the checkpoint is
/// well over `TEST_LINK_REPLY_BYTES_MAX` (a row costs at least its 8-byte key, 8-byte value
/// and the partition and table prefix of its key).
const ROWS_PER_SERVICE: u64 = 12_000;

// Goal: a checkpoint whose rows on one node exceed the link's reply limit completes: each node
// sends its rows in shares of at most the placement's `checkpoint_answer_bytes_max` over several
// steps, no request fails, the runtime keeps writing, and a recovery from the checkpoint alone
// has every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkpoint_larger_than_the_link_limit_is_sent_in_shares() {
    let (fx, storage) = (build(3, 4), Arc::new(MemoryStorage::new()));
    let config = || checkpointing(&storage);
    let link = LossyLink::new(TEST_LINK_REPLY_BYTES_MAX);
    let placed = |placement| ClusterPlacement {
        checkpoint_answer_bytes_max: TEST_LINK_REPLY_BYTES_MAX / 4,
        ..placement
    };
    let nodes = ThreeNodes::start(&fx, config(), link, placed).await;
    let client = nodes.rt.client();
    // The load, in batches of a few epochs each, before the checkpoint falls due.
    let mut expected = common::model::Rows::new();
    for first in (0..ROWS_PER_SERVICE).step_by(2_000) {
        let mut requests = Vec::new();
        for key in first..first + 2_000 {
            for (svc, service) in fx.services.iter().enumerate() {
                let value = (key % 1_000) as i64 + 1;
                let ev = Ev::chain(vec![Op {
                    svc,
                    key,
                    kind: OpKind::Add(value),
                }]);
                requests.push(txn::Request::raw(*service, service.partition_of(&key), ev));
                expected.insert((svc, key), value);
            }
        }
        for outcome in client.submit_many(requests).await {
            outcome.unwrap().result.unwrap();
        }
    }
    let loaded_by = nodes.rt.stats().snapshot().epochs;
    assert!(loaded_by < CHECKPOINT_EVERY_EPOCHS, "{loaded_by} epochs");
    // Single reads on node "a" drive the epochs after which the checkpoint's steps run.
    let (svc, key) = key_on_a(&fx);
    let mut n_reads = 0;
    // The epoch counts at which the copy steps were first and last seen to grow.
    let (mut steps_seen, mut first, mut last) = (0, None, 0);
    while storage.latest_checkpoint_epoch().unwrap().is_none() {
        client.submit_raw(svc, &key, read0(key)).await.unwrap();
        n_reads += 1;
        assert!(n_reads < 2_000, "the checkpoint never completed");
        let now = nodes.rt.stats().snapshot();
        if now.checkpoint_copy_steps > steps_seen {
            steps_seen = now.checkpoint_copy_steps;
            first.get_or_insert(now.epochs);
            last = now.epochs;
        }
    }
    let copy_epochs = last - first.expect("copy steps were taken") + 1;
    let stats = nodes.rt.stats().snapshot();
    let largest_reply = nodes.link.largest_reply_bytes.load(Ordering::Relaxed);
    let traffic = nodes.rt.stats().node_traffic();
    nodes.stop().await;
    eprintln!(
        "{} copy steps, {n_reads} reads, largest reply {largest_reply} bytes: {traffic:?}",
        stats.checkpoint_copy_steps
    );
    assert!(largest_reply <= TEST_LINK_REPLY_BYTES_MAX);
    // A cluster's sequencer takes several copy steps after an epoch
    // (`limits::CLUSTER_CHECKPOINT_STEPS_PER_EPOCH`): at least twice as many steps as epochs
    // went by while it copied (one a step would be as many).
    assert!(
        copy_epochs > 1 && stats.checkpoint_copy_steps >= 2 * copy_epochs,
        "{} copy steps after {copy_epochs} epochs",
        stats.checkpoint_copy_steps
    );
    for node in &traffic {
        assert!(
            node.bytes_received > TEST_LINK_REPLY_BYTES_MAX as u64,
            "node {} sent too few rows for the test to mean anything: {node:?}",
            node.node
        );
    }

    // A recovery in one process loads the checkpoint, which holds every row (the log after it
    // holds only reads).
    let rt = Runtime::start(fx.app.clone(), config()).await.unwrap();
    let report = rt.recovery_report().clone();
    assert!(report.checkpoint_epoch >= Some(loaded_by), "{report:?}");
    assert!(report.rows_loaded >= expected.len(), "{report:?}");
    assert_eq!(read_all_rows(&rt.client(), &fx).await, expected);
    rt.shutdown().await;
}

// Goal: an answer budget the link could not carry (over half its payload limit), or none at
// all, is refused at start with an error naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_answer_budget_the_link_cannot_carry_is_refused() {
    let fx = build(3, 4);
    for answer_bytes_max in [0, 16 << 20] {
        let owners = owners(&fx);
        let placement = ClusterPlacement {
            checkpoint_answer_bytes_max: answer_bytes_max,
            ..ClusterPlacement::new("a", owners, Arc::new(LoopbackLink::new()))
        };
        let config = RuntimeConfig::in_memory().cluster(placement);
        let error = Runtime::start(fx.app.clone(), config)
            .await
            .err()
            .expect("refused");
        assert!(
            error.to_string().contains("checkpoint_answer_bytes_max"),
            "{error}"
        );
    }
}
