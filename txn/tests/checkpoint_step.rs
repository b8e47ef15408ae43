//! The checkpoint copy across nodes: a runtime on node "a" drives epochs over partitions spread
//! round-robin over three nodes, the other two held by `PartitionHost`s behind a link that can
//! lose one reply or refuse replies over a size limit (the link's payload limit, at test scale).
//!
//! Checked: a checkpoint step whose reply is lost after the node's partitions handed their rows
//! over completes no checkpoint and truncates no log: the runtime refuses further writes with an
//! error naming the step, and a recovery on the same store has every row of a single-process
//! run of the same requests.

mod common;

use common::*;
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
    /// Starts hosts "b" and "c" (global partition `gp` lives on node `gp % 3`) and the runtime
    /// on "a" over `config`'s storage; `placed` adjusts the placement.
    async fn start(
        fx: &Fixture,
        config: RuntimeConfig,
        link: LossyLink,
        placed: impl FnOnce(ClusterPlacement) -> ClusterPlacement,
    ) -> Self {
        let owners: Vec<String> = (0..fx.app.n_partitions_total())
            .map(|gp| NODES[gp as usize % NODES.len()].to_string())
            .collect();
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
    let fx = build(3, 4);
    let storage = Arc::new(MemoryStorage::new());
    let config = || RuntimeConfig {
        checkpoint_every_epochs: CHECKPOINT_EVERY_EPOCHS,
        ..RuntimeConfig::with_storage(storage.clone())
    };
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
    let svc = fx.services[0];
    let key = (0..)
        .find(|key| NODES[svc.partition_of(key) as usize % NODES.len()] == "a")
        .expect("some key is on a");
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
