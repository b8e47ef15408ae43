//! Epochs across nodes: a runtime on node "a" drives epochs over partitions spread round-robin
//! over three nodes, the other two held by `PartitionHost`s behind a `LoopbackLink` (every
//! phase batch and reply encoded and decoded, as between processes).
//!
//! Checked: the randomized chain histories of `serializability.rs` (contended, crossing
//! services and so nodes, with the ordered fallback) give every outcome and the final state of
//! a `SerialExecutor` replay in `SerialPos` order, and the same state as the same log replayed
//! in one process (whose rows also match the `BTreeMap` model); a node that stops answering
//! fails the epoch with an error naming it; a checkpoint and log tail recover into the remote
//! partitions with the same state hash, and a re-placement recovers with no epoch's batch sent
//! to another node (the log is replayed on the driver) to a single-process recovery's state,
//! whose changed rows the next checkpoints still hold. The histories print their seed; `TXN_TEST_SEED=<n>`
//! replays them.

use crate::common;

use crate::common::model::assert_matches_model;
use crate::common::*;
use std::sync::Arc;
use std::time::Duration;
use txn::storage::delegating::{Delegate, Delegating};
use txn::storage::{MemoryStorage, Storage, StorageError};
use txn::{
    ClusterPlacement, Fallback, LoopbackLink, PartitionHost, RecoverFrom, Runtime, RuntimeConfig,
    SerialHints, TxnError,
};

const NODES: [&str; 3] = ["a", "b", "c"];

/// Clients, and requests each: enough for conflict losers and ordered-fallback runs.
const N_CLIENTS: u64 = 6;
const N_REQUESTS_PER_CLIENT: usize = 80;

/// A runtime on node "a" and hosts for "b" and "c".
struct ThreeNodes {
    rt: Runtime<ChainApp>,
    hosts: Vec<Arc<PartitionHost<ChainApp>>>,
    link: LoopbackLink,
}

/// Global partition `gp` lives on node `gp % 3`.
fn owners(fx: &Fixture) -> Vec<String> {
    (0..fx.app.n_partitions_total())
        .map(|gp| NODES[gp as usize % NODES.len()].to_string())
        .collect()
}

/// Starts hosts "b" and "c" and the runtime on "a" over `config`'s storage.
async fn start_three(
    fx: &Fixture,
    config: RuntimeConfig,
    phase_timeout: Duration,
) -> Result<ThreeNodes, TxnError> {
    start_placed(fx, config, phase_timeout, owners(fx)).await
}

/// [`start_three`] with the partitions placed by `owners`.
async fn start_placed(
    fx: &Fixture,
    config: RuntimeConfig,
    phase_timeout: Duration,
    owners: Vec<String>,
) -> Result<ThreeNodes, TxnError> {
    let link = LoopbackLink::new();
    let mut hosts = Vec::new();
    for node in &NODES[1..] {
        let host = Arc::new(PartitionHost::start(fx.app.clone(), node, &owners)?);
        let serving = host.clone();
        link.add_node(node, move |bytes| {
            let host = serving.clone();
            async move { host.handle(bytes).await }
        });
        hosts.push(host);
    }
    let placement = ClusterPlacement {
        phase_timeout,
        ..ClusterPlacement::new(NODES[0], owners, Arc::new(link.clone()))
    };
    let rt = Runtime::start(fx.app.clone(), config.cluster(placement)).await?;
    Ok(ThreeNodes { rt, hosts, link })
}

impl ThreeNodes {
    async fn stop(self) {
        self.rt.shutdown().await;
        for host in self.hosts {
            host.stop().await;
        }
    }
}

// Goal: across three nodes, every outcome and the final state equal a serial replay in
// `SerialPos` order and the same log replayed in one process; the run had conflicts, ordered
// fallback runs and phase batches to both other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_across_three_nodes_is_serializable() {
    check_history_across_three_nodes(SerialHints::DEFAULT, "cluster-dispatch").await;
}

// Goal: the same with every third transaction hinted: a hinted transaction skips the first
// pass, so a node's first batch of an epoch may be a fallback round, which must bring it the
// epoch's logged batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_history_with_hints_across_three_nodes_is_serializable() {
    let hints = SerialHints::Sample { every: 3 };
    check_history_across_three_nodes(hints, "cluster-dispatch-hints").await;
}

async fn check_history_across_three_nodes(serial_hints: SerialHints, test: &str) {
    let seed = seed(test);
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = RuntimeConfig {
        checkpoint_every_epochs: 0,
        serial_hints,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let nodes = start_three(&fx, config, Duration::from_secs(30))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for c in 0..N_CLIENTS {
        let (client, fx) = (nodes.rt.client(), fx.clone());
        let seed = seed.wrapping_add(c);
        let client = run_chain_client(client, fx, seed, N_REQUESTS_PER_CLIENT);
        tasks.push(tokio::spawn(client));
    }
    let mut history = Vec::new();
    for t in tasks {
        history.extend(t.await.unwrap().0);
    }
    let client = nodes.rt.client();
    let final_hash = client.state_hash().await.unwrap();
    // A query's closure cannot reach another node: refused, naming it.
    let error = client.query(&fx.services, |_| ()).await.unwrap_err();
    assert!(
        matches!(&error, TxnError::QueryNotLocal { node, .. } if node == "b"),
        "{error}"
    );
    // Conflict counts come from every node's tables.
    let conflict_stats = nodes.rt.conflict_stats().await.unwrap();
    assert!(!conflict_stats.by_table.is_empty());
    let stats = nodes.rt.stats().snapshot();
    let traffic = nodes.rt.stats().node_traffic();
    nodes.stop().await;

    eprintln!(
        "{test}: {} transactions in {} epochs, {} conflict losers, {} fallback runs, \
         {} phase batches ({} bytes sent, {} received): {traffic:?}",
        history.len(),
        stats.epochs,
        stats.conflicts,
        stats.fallback,
        stats.node_batches,
        stats.node_bytes_sent,
        stats.node_bytes_received
    );
    assert!(stats.conflicts > 0, "seed {seed}: no conflict loser");
    assert!(
        stats.fallback > 0,
        "seed {seed}: the ordered fallback never ran"
    );
    assert!(history.iter().any(|r| r.pos.pass >= 1), "seed {seed}");
    assert_eq!(traffic.len(), 2, "{traffic:?}");
    for node in &traffic {
        assert!(node.batches > 0 && node.bytes_sent > 0 && node.bytes_received > 0);
        assert!(node.reply_wait_nanos > 0, "{node:?}");
    }

    let n_history = history.len();
    let one_process = replay_in_one_process(&fx, &storage).await;
    assert_eq!(
        final_hash, one_process.0,
        "seed {seed}: the same log in one process gives another state"
    );
    let n_committed = assert_matches_model(fx.services.clone(), &mut history, &one_process.1, seed);
    let replayed = assert_matches_serial_replay(fx.app.clone(), history, final_hash, seed);
    assert_eq!(replayed, n_committed);
    assert!(
        n_committed > n_history / 4,
        "the workload should mostly commit"
    );
}

/// Replays the cluster's log in one process: its state hash and rows.
async fn replay_in_one_process(
    fx: &Fixture,
    storage: &MemoryStorage,
) -> (u64, common::model::Rows) {
    let config = RuntimeConfig {
        recover_from: RecoverFrom::LogStart,
        ..RuntimeConfig::with_storage(Arc::new(copy_of_log(storage)))
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    assert!(rt.recovery_report().epochs_replayed > 0);
    let client = rt.client();
    let hash = client.state_hash().await.unwrap();
    let rows = read_all_rows(&client, fx).await;
    rt.shutdown().await;
    (hash, rows)
}

// Goal: a node that stops answering fails the epoch with an error naming it, within the phase
// timeout: never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_stops_answering_fails_the_epoch_naming_it() {
    let fx = build(3, 4);
    let config = RuntimeConfig::in_memory();
    let nodes = start_three(&fx, config, Duration::from_millis(300))
        .await
        .unwrap();
    let client = nodes.rt.client();
    // A key of service 0 (whose partitions are the first global ones) placed on "c".
    let svc = fx.services[0];
    let on_c = |key: &u64| NODES[svc.partition_of(key) as usize % NODES.len()] == "c";
    let key = (0..).find(on_c).expect("some key is on c");
    client.submit_raw(svc, &key, read0(key)).await.unwrap();
    nodes.link.silence("c");
    let error = tokio::time::timeout(
        Duration::from_secs(60),
        client.submit_raw(svc, &key, read0(key)),
    )
    .await
    .expect("the epoch must fail, not hang")
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("node \"c\"") && text.contains("no answer within"),
        "{text}"
    );
    nodes.stop().await;
}

// Goal: a recovery (checkpoint + log tail) loads into the remote partitions and gives the state
// hash the cluster had before it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_loads_a_checkpoint_into_remote_partitions() {
    let seed = seed("cluster-recovery");
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = || RuntimeConfig {
        checkpoint_every_epochs: 5,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let nodes = start_three(&fx, config(), Duration::from_secs(30))
        .await
        .unwrap();
    // 62 epochs of one transaction each: the last checkpoint is of epoch 60, so recovery
    // replays a log tail after loading it.
    let (history, _) = run_chain_client(nodes.rt.client(), fx.clone(), seed, 62).await;
    assert!(history.iter().any(|r| r.result.is_ok()));
    let hash_before = nodes.rt.client().state_hash().await.unwrap();
    nodes.stop().await;

    let nodes = start_three(&fx, config(), Duration::from_secs(30))
        .await
        .unwrap();
    let report = nodes.rt.recovery_report().clone();
    let loaded_batches = nodes.rt.stats().snapshot().node_batches;
    let hash_after = nodes.rt.client().state_hash().await.unwrap();
    nodes.stop().await;
    eprintln!("cluster-recovery: seed {seed}: {report:?}, {loaded_batches} phase batches");
    assert!(report.checkpoint_epoch.is_some(), "seed {seed}: {report:?}");
    assert!(report.rows_loaded > 0, "seed {seed}: {report:?}");
    assert!(report.epochs_replayed > 0, "seed {seed}: {report:?}");
    assert!(
        loaded_batches > 0,
        "nothing was loaded into the other nodes"
    );
    assert_eq!(
        hash_before, hash_after,
        "seed {seed}: recovered state differs"
    );
}

// Goal: the serial fallback, which lends every partition to the driver, is refused in a
// cluster with an error that says why and what to use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_refuses_the_serial_fallback() {
    let fx = build(3, 4);
    let owners = owners(&fx);
    let placement = ClusterPlacement::new("a", owners, Arc::new(LoopbackLink::new()));
    let config = RuntimeConfig {
        fallback: Fallback::Serial,
        ..RuntimeConfig::in_memory().cluster(placement)
    };
    let error = Runtime::start(fx.app.clone(), config)
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("Fallback::Serial"), "{error}");
}

// Goal: replay follows the log: an epoch a single-process runtime logged with the serial
// fallback (which lends every partition to the driver) replays in a cluster too, since a
// cluster replays the log on the driver's private copy of every partition, and gives the
// single-process state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_epoch_logged_with_the_serial_fallback_replays_in_a_cluster() {
    let fx = build(3, 4);
    let storage = Arc::new(MemoryStorage::new());
    let config = || RuntimeConfig {
        checkpoint_every_epochs: 0,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let rt = Runtime::start(fx.app.clone(), config()).await.unwrap();
    // Increments of one key submitted together conflict, so the serial pass lends (rounds
    // until one epoch got two of them).
    for _ in 0..20 {
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (client, svc) = (rt.client(), fx.services[0]);
            tasks.push(tokio::spawn(async move {
                client.submit_raw(svc, &0, op0(0, OpKind::Add(1))).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        if rt.stats().snapshot().serial_lends > 0 {
            break;
        }
    }
    assert!(rt.stats().snapshot().serial_lends > 0, "no epoch lent");
    let hash_single = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;

    let nodes = start_three(&fx, config(), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(nodes.rt.recovery_report().epochs_replayed > 0);
    let hash_cluster = nodes.rt.client().state_hash().await.unwrap();
    nodes.stop().await;
    assert_eq!(hash_cluster, hash_single);
}

// Goal: a re-placement (the same store, the partitions placed otherwise) recovers without
// replaying any epoch through the network: every node gets its partitions' rows, but not one
// wave, decide, commit or fallback batch before the first new epoch; the state installed has
// the hash of a single-process recovery of the same store; and the rows the log tail changed
// are still checkpointed later (a recovery after more epochs and checkpoints equals the state
// the cluster reached).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_re_placement_recovers_without_replaying_epochs_through_the_network() {
    let seed = seed("cluster-re-placement");
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = || RuntimeConfig {
        checkpoint_every_epochs: 25,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let nodes = start_three(&fx, config(), Duration::from_secs(30))
        .await
        .unwrap();
    // 62 epochs of one transaction each: a checkpoint of epoch 50, then a log tail to replay.
    run_chain_client(nodes.rt.client(), fx.clone(), seed, 62).await;
    let hash_before = nodes.rt.client().state_hash().await.unwrap();
    nodes.stop().await;
    let rt = Runtime::start(fx.app.clone(), config()).await.unwrap();
    let hash_single = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    assert_eq!(
        hash_single, hash_before,
        "seed {seed}: one process recovered another state"
    );

    // Every partition moves to the next node.
    let moved: Vec<String> = (0..fx.app.n_partitions_total())
        .map(|gp| NODES[(gp as usize + 1) % NODES.len()].to_string())
        .collect();
    let nodes = start_placed(&fx, config(), Duration::from_secs(30), moved)
        .await
        .unwrap();
    let report = nodes.rt.recovery_report().clone();
    let traffic = nodes.rt.stats().node_traffic();
    let hash_recovered = nodes.rt.client().state_hash().await.unwrap();
    eprintln!("cluster-re-placement: seed {seed}: {report:?}, {traffic:?}");
    assert!(
        report.checkpoint_epoch.is_some() && report.epochs_replayed > 0,
        "seed {seed}: no log tail after a checkpoint: {report:?}"
    );
    for node in &traffic {
        assert!(
            node.batches > 0,
            "seed {seed}: nothing loaded into {node:?}"
        );
        assert_eq!(
            node.epoch_batches, 0,
            "seed {seed}: recovery replayed epochs through the network: {node:?}"
        );
    }
    assert_eq!(
        hash_recovered, hash_single,
        "seed {seed}: the cluster recovered another state than one process"
    );
    // More epochs on the re-placed cluster, with checkpoints, then a recovery in one process:
    // a replayed row the hand-over did not mark for the next checkpoint would be lost there.
    run_chain_client(nodes.rt.client(), fx.clone(), seed ^ 1, 35).await;
    let hash_later = nodes.rt.client().state_hash().await.unwrap();
    nodes.stop().await;
    let rt = Runtime::start(fx.app.clone(), config()).await.unwrap();
    let report = rt.recovery_report().clone();
    assert!(
        report.checkpoint_epoch > Some(62),
        "seed {seed}: no checkpoint after the re-placement: {report:?}"
    );
    let hash_single = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    assert_eq!(
        hash_single, hash_later,
        "seed {seed}: a later recovery lost rows"
    );
}

/// A memory store whose log appends wait while its gate is closed (a stalled log disk).
#[derive(Default)]
struct HeldAppends {
    inner: MemoryStorage,
    held: std::sync::Mutex<bool>,
    released: std::sync::Condvar,
}

impl HeldAppends {
    fn hold(&self, held: bool) {
        *self.held.lock().unwrap() = held;
        self.released.notify_all();
    }
}

impl Delegate for HeldAppends {
    fn inner(&self) -> &dyn Storage {
        &self.inner
    }
    fn append_epochs(&self, epochs: &[(u64, &[u8])]) -> Result<(), StorageError> {
        let held = self.held.lock().unwrap();
        drop(self.released.wait_while(held, |held| *held).unwrap());
        self.inner.append_epochs(epochs)
    }
}

// Goal: with partitions on other nodes, no node commits an epoch before the epoch's log record
// is durable (a node outlives the sequencer, and a partition that committed an epoch the log
// lost could not be kept by the runtime that takes over): while the store's appends are held,
// node "b" is sent the epoch's execution and decision but not its commit; once released, the
// write commits. With the commit sent at once, "b" would get every batch while they are held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_commits_an_epoch_only_once_its_log_record_is_durable() {
    let fx = build(3, 4);
    let storage = Arc::new(Delegating(HeldAppends::default()));
    let config = RuntimeConfig::with_storage(storage.clone());
    let nodes = start_three(&fx, config, Duration::from_secs(30))
        .await
        .unwrap();
    // Count the batches node "b" is sent.
    let host = nodes.hosts[0].clone();
    assert_eq!(host.node(), "b");
    let batches = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = batches.clone();
    nodes.link.add_node("b", move |bytes| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let host = host.clone();
        async move { host.handle(bytes).await }
    });
    let svc = fx.services[0];
    let on_b = |key: &u64| NODES[svc.partition_of(key) as usize % NODES.len()] == "b";
    let key = (0..).find(on_b).expect("some key is on b");
    let client = nodes.rt.client();
    client
        .submit_raw(svc, &key, op0(key, OpKind::Add(1)))
        .await
        .unwrap();
    let per_epoch = batches.swap(0, std::sync::atomic::Ordering::SeqCst);
    assert!(
        per_epoch >= 3,
        "{per_epoch} batches: execution, decision, commit"
    );

    storage.hold(true);
    let writing = tokio::spawn({
        let client = client.clone();
        async move { client.submit_raw(svc, &key, op0(key, OpKind::Add(1))).await }
    });
    // The epoch's batches before its commit reach "b"; the commit must not follow.
    while batches.load(std::sync::atomic::Ordering::SeqCst) < per_epoch - 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let while_held = batches.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        while_held < per_epoch,
        "{while_held} of the epoch's {per_epoch} batches reached \"b\" before its record was durable"
    );
    storage.hold(false);
    writing.await.unwrap().unwrap();
    assert_eq!(batches.load(std::sync::atomic::Ordering::SeqCst), per_epoch);
    nodes.stop().await;
}
