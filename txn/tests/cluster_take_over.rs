//! A take-over in a cluster moves only what it must: after the driver's node dies, a new driver
//! starts over a placement where the survivor keeps its partitions (`PartitionHost::re_place`)
//! and only the dead node's partitions move. Every phase batch and reply goes through a
//! `LoopbackLink`, encoded and decoded as between processes.
//!
//! Checked: the survivor's kept partitions are sent no checkpoint row and, without a
//! checkpoint, no replayed row either, while the partitions that moved are loaded; the state
//! after the take-over equals a single-process recovery of the same store, also after more
//! epochs with checkpoints and a second take-over from a checkpoint; a survivor stopped in the
//! middle of an epoch is kept, forgets the epoch in progress and is brought to the log's end;
//! and a kept partition the log does not explain fails the start naming it, after which a
//! placement that keeps nothing recovers. The histories print their seed; `TXN_TEST_SEED=<n>` replays them.
//!
//! Also checked: while a take-over visits every row of the partitions (state hashes, the
//! hand-over, freeing the replay's private copy), the async runtime's other tasks keep running.
//! A cluster node's heartbeats are such tasks, and a node silent for the failure timeout is
//! declared dead by its peers, so the take-over never completes. That runtime has one worker
//! thread, so a job that keeps it busy stops every other task; each row's value is a [`Probe`]
//! whose serialization (as hashing a partition does) waits until a task of the runtime answers,
//! which it can only do if the worker is not held by the job (a handler's own `put` encodes its
//! row too, a short step of an epoch that does not ask).

use crate::common::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use txn::storage::MemoryStorage;
use txn::storage::Storage;
use txn::{
    App, AppBuilder, AppDef, ClusterPlacement, LoopbackLink, PartitionHost, PreparedTakeOver,
    Runtime, RuntimeConfig, ServiceRef,
};

/// Epochs between checkpoints when a generation takes them; large enough never to be due
/// when it does not.
const CHECKPOINT_EVERY_EPOCHS: u64 = 10;
const NO_CHECKPOINT_EPOCHS: u64 = 1_000_000;
/// Keys per service of the random chains (`common::random_chain` in `run_chain_client`).
const KEYS_PER_SERVICE: u64 = 24;
/// Read-only epochs that end a workload: more than the log tail a take-over hands the
/// partitions it kept (`limits::TAKE_OVER_LOG_TAIL_EPOCHS`).
const READ_ONLY_EPOCHS: u64 = 8;

/// The owner `owner` gives each global partition.
fn placement(fx: &Fixture, owner: impl Fn(u32) -> &'static str) -> Vec<String> {
    (0..fx.app.n_partitions_total())
        .map(|gp| owner(gp).to_string())
        .collect()
}

/// A runtime driving epochs on `driver` over `owners`, the other nodes' partitions on `hosts`.
async fn start_driver<A: App>(
    app: &Arc<AppDef<A>>,
    config: RuntimeConfig,
    driver: &str,
    owners: Vec<String>,
    hosts: &[&Arc<PartitionHost<A>>],
) -> Runtime<A> {
    let placement = ClusterPlacement::new(driver, owners, Arc::new(link_to(hosts)));
    Runtime::start(app.clone(), config.cluster(placement))
        .await
        .unwrap()
}

/// A take-over: `driver` starts a runtime over `owners`, the survivor `host` re-placed there
/// keeping the partitions it goes on holding (and then stopped).
async fn take_over(
    fx: &Fixture,
    config: RuntimeConfig,
    driver: &str,
    owners: Vec<String>,
    host: Arc<PartitionHost<ChainApp>>,
) -> (Runtime<ChainApp>, Arc<PartitionHost<ChainApp>>) {
    let kept = Arc::new(host.re_place(&owners).await.unwrap());
    host.stop().await;
    let rt = start_driver(&fx.app, config, driver, owners, &[&kept]).await;
    (rt, kept)
}

/// The state hash of the store recovered in one process.
async fn hash_of_one_process(fx: &Fixture, storage: &Arc<MemoryStorage>) -> u64 {
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::with_storage(storage.clone()))
        .await
        .unwrap();
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    hash
}

/// Recovers the store of `config` in one process: what recovery did, and the state's hash.
async fn recovered_in_one_process(
    fx: &Fixture,
    config: RuntimeConfig,
) -> (txn::RecoveryReport, u64) {
    let single = Runtime::start(fx.app.clone(), config).await.unwrap();
    let report = single.recovery_report().clone();
    let hash = single.client().state_hash().await.unwrap();
    single.shutdown().await;
    (report, hash)
}

/// Runs a workload on the cluster (ended by [`settle_workload`]), then stops its driver: the
/// state hash the cluster reached, which a single-process recovery of the store must equal.
async fn run_until_the_driver_dies(
    rt: Runtime<ChainApp>,
    fx: &Arc<Fixture>,
    storage: &Arc<MemoryStorage>,
    seed: u64,
) -> u64 {
    run_chain_client(rt.client(), fx.clone(), seed, 45).await;
    settle_workload(&rt.client(), fx).await;
    let hash_cluster = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    let hash_single = hash_of_one_process(fx, storage).await;
    assert_eq!(
        hash_single, hash_cluster,
        "seed {seed}: one process recovered another state"
    );
    hash_cluster
}

/// Ends a workload so that every partition holds rows (a write of every key of every service)
/// and the log's last epochs change none (read-only transactions, more than the log tail a
/// take-over hands the partitions it kept).
async fn settle_workload(client: &txn::Client<ChainApp>, fx: &Fixture) {
    for (idx, svc) in fx.services.iter().enumerate() {
        for key in 0..KEYS_PER_SERVICE {
            let kind = OpKind::Add(1);
            let write = Ev::chain(vec![Op {
                svc: idx,
                key,
                kind,
            }]);
            client.submit_raw(*svc, &key, write).await.unwrap();
        }
    }
    for key in 0..READ_ONLY_EPOCHS {
        client
            .submit_raw(fx.services[0], &key, read0(key))
            .await
            .unwrap();
    }
}

/// The rows the partitions `gps` of `host` received from recoveries: (loaded, applied).
fn received(host: &PartitionHost<ChainApp>, gps: &[u32]) -> (u64, u64) {
    gps.iter()
        .map(|gp| host.rows_received(*gp))
        .fold((0, 0), |(l, a), (dl, da)| (l + dl, a + da))
}

// Goal: a take-over reloads only the dead node's partitions: the survivor's kept partitions
// are sent no row without a checkpoint, and only the replayed rows after one, never the
// checkpoint; the state always equals a single-process recovery of the same store, also after
// more epochs with checkpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_take_over_reloads_only_the_partitions_that_move() {
    let seed = seed("cluster-take-over");
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = |every| RuntimeConfig {
        checkpoint_every_epochs: every,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let all: Vec<u32> = (0..fx.app.n_partitions_total()).collect();
    let of_node = |n: u32| -> Vec<u32> { all.iter().copied().filter(|gp| gp % 3 == n).collect() };

    // Generation 1: "a" drives, "b" and "c" host; no checkpoint yet.
    let owners_1 = placement(&fx, |gp| ["a", "b", "c"][gp as usize % 3]);
    let host_b = Arc::new(PartitionHost::start(fx.app.clone(), "b", &owners_1).unwrap());
    let host_c = Arc::new(PartitionHost::start(fx.app.clone(), "c", &owners_1).unwrap());
    let rt = start_driver(
        &fx.app,
        config(NO_CHECKPOINT_EPOCHS),
        "a",
        owners_1,
        &[&host_b, &host_c],
    )
    .await;
    let hash_cluster = run_until_the_driver_dies(rt, &fx, &storage, seed).await;
    // "a" died; "b" takes over and drives, so it hosts nothing; "a"'s partitions go to "c".
    host_b.stop().await;
    let owners_2 = placement(&fx, |gp| ["c", "b", "c"][gp as usize % 3]);
    let (rt, host_c2) =
        take_over(&fx, config(CHECKPOINT_EVERY_EPOCHS), "b", owners_2, host_c).await;
    let report = rt.recovery_report().clone();
    let hash_taken_over = rt.client().state_hash().await.unwrap();
    eprintln!("cluster-take-over: seed {seed}: first take-over {report:?}");
    assert_eq!(hash_taken_over, hash_cluster, "seed {seed}: another state");
    assert_eq!(report.checkpoint_epoch, None, "seed {seed}");
    assert_eq!(report.partitions_kept, of_node(2).len(), "seed {seed}");
    assert_eq!(
        received(&host_c2, &of_node(2)),
        (0, 0),
        "seed {seed}: the kept partitions were reloaded"
    );
    let (_, moved_applied) = received(&host_c2, &of_node(0));
    assert!(
        moved_applied > 0,
        "seed {seed}: the moved partitions got nothing"
    );

    // More epochs with checkpoints, then "b" dies; "a", back, drives; "c" keeps everything.
    let hash_cluster = run_until_the_driver_dies(rt, &fx, &storage, seed ^ 1).await;
    let owners_3 = placement(&fx, |gp| ["c", "a", "c"][gp as usize % 3]);
    let (rt, host_c3) =
        take_over(&fx, config(CHECKPOINT_EVERY_EPOCHS), "a", owners_3, host_c2).await;
    let report = rt.recovery_report().clone();
    eprintln!("cluster-take-over: seed {seed}: second take-over {report:?}");
    assert!(report.checkpoint_epoch.is_some(), "seed {seed}: {report:?}");
    assert_eq!(report.partitions_kept, of_node(0).len() + of_node(2).len());
    let kept: Vec<u32> = all.iter().copied().filter(|gp| gp % 3 != 1).collect();
    let (kept_loaded, _) = received(&host_c3, &kept);
    assert_eq!(
        kept_loaded, 0,
        "seed {seed}: a kept partition loaded the checkpoint"
    );
    assert_eq!(
        rt.client().state_hash().await.unwrap(),
        hash_cluster,
        "seed {seed}"
    );

    // The kept partitions' rows reach the next checkpoints: a recovery after more epochs and
    // checkpoints equals the state the cluster reached.
    run_chain_client(rt.client(), fx.clone(), seed ^ 2, 45).await;
    let hash_cluster = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    host_c3.stop().await;
    let (report, hash_single) =
        recovered_in_one_process(&fx, config(CHECKPOINT_EVERY_EPOCHS)).await;
    eprintln!("cluster-take-over: seed {seed}: recovered in one process {report:?}");
    assert!(
        report.checkpoint_epoch > Some(250),
        "seed {seed}: {report:?}"
    );
    assert_eq!(
        hash_single, hash_cluster,
        "seed {seed}: a later recovery lost rows"
    );
}

// Goal: a take-over's recovery begun before the lease is free (`PreparedTakeOver`) goes on from
// where it stopped once the runtime starts — begun while the old driver still runs epochs, or
// after its death from a checkpoint — and ends in the state the cluster reached, the partitions
// new on their owner handed every row of the private copy (no checkpoint read) and the rows
// deleted since the checkpoint, so later checkpoints still delete them; if a checkpoint
// completed after it began, it is dropped and the take-over recovers from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_take_over_prepared_before_the_lease_goes_on_from_its_replay() {
    prepared_take_over(Prepare::WhileRunning, "cluster-prepared-running").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_take_over_prepared_from_a_checkpoint_keeps_the_deletions() {
    prepared_take_over(Prepare::AfterDeath, "cluster-prepared-checkpoint").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_take_over_prepared_before_a_checkpoint_is_dropped() {
    prepared_take_over(Prepare::BeforeACheckpoint, "cluster-prepared-stale").await;
}

/// When the take-over begins its recovery, against the old driver's epochs and checkpoints.
#[derive(Clone, Copy, PartialEq)]
enum Prepare {
    /// While the driver still runs epochs, with no checkpoint.
    WhileRunning,
    /// After the driver died, from its last checkpoint.
    AfterDeath,
    /// While the driver runs, and then completes a checkpoint.
    BeforeACheckpoint,
}

async fn prepared_take_over(when: Prepare, test: &str) {
    let seed = seed(test);
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = |every| RuntimeConfig {
        checkpoint_every_epochs: every,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let every = match when {
        Prepare::WhileRunning => NO_CHECKPOINT_EPOCHS,
        // No second checkpoint before the death (below).
        Prepare::AfterDeath => 10 * CHECKPOINT_EVERY_EPOCHS,
        Prepare::BeforeACheckpoint => CHECKPOINT_EVERY_EPOCHS,
    };
    let owners_1 = placement(&fx, |gp| ["a", "b", "c"][gp as usize % 3]);
    let host_b = Arc::new(PartitionHost::start(fx.app.clone(), "b", &owners_1).unwrap());
    let host_c = Arc::new(PartitionHost::start(fx.app.clone(), "c", &owners_1).unwrap());
    let rt = start_driver(&fx.app, config(every), "a", owners_1, &[&host_b, &host_c]).await;
    run_chain_client(rt.client(), fx.clone(), seed, 45).await;
    let (prepared, hash_cluster) = match when {
        Prepare::AfterDeath => {
            let mut round = 1;
            while storage.latest_checkpoint_epoch().unwrap().is_none() {
                assert!(round < 20, "seed {seed}: no checkpoint completed");
                run_chain_client(rt.client(), fx.clone(), seed ^ round, 45).await;
                round += 1;
            }
            // Every key of the first service deleted after the checkpoint, then the read-only
            // tail: the take-over must hand the new owners these deletions too.
            let checkpoint = storage.latest_checkpoint_epoch().unwrap();
            for key in 0..KEYS_PER_SERVICE {
                let kind = OpKind::Delete;
                let delete = Ev::chain(vec![Op { svc: 0, key, kind }]);
                let client = rt.client();
                client
                    .submit_raw(fx.services[0], &key, delete)
                    .await
                    .unwrap();
            }
            for key in 0..READ_ONLY_EPOCHS {
                let read = read0(key);
                let client = rt.client();
                client.submit_raw(fx.services[0], &key, read).await.unwrap();
            }
            assert_eq!(storage.latest_checkpoint_epoch().unwrap(), checkpoint);
            let hash_cluster = rt.client().state_hash().await.unwrap();
            rt.shutdown().await;
            assert_eq!(hash_of_one_process(&fx, &storage).await, hash_cluster);
            let prepared = PreparedTakeOver::start(fx.app.clone(), config(NO_CHECKPOINT_EPOCHS));
            (prepared, hash_cluster)
        }
        Prepare::WhileRunning | Prepare::BeforeACheckpoint => {
            // "b" begins the take-over while "a" still runs epochs (and maybe checkpoints).
            let checkpoint_then = storage.latest_checkpoint_epoch().unwrap();
            let prepared = PreparedTakeOver::start(fx.app.clone(), config(every));
            let mut round = 1;
            while when == Prepare::BeforeACheckpoint
                && storage.latest_checkpoint_epoch().unwrap() == checkpoint_then
            {
                assert!(round < 20, "seed {seed}: no checkpoint completed");
                run_chain_client(rt.client(), fx.clone(), seed ^ round, 45).await;
                round += 1;
            }
            let hash_cluster = run_until_the_driver_dies(rt, &fx, &storage, seed ^ 0xff).await;
            (prepared, hash_cluster)
        }
    };
    host_b.stop().await;
    let owners_2 = placement(&fx, |gp| ["c", "b", "c"][gp as usize % 3]);
    let kept = Arc::new(host_c.re_place(&owners_2).await.unwrap());
    host_c.stop().await;
    let link = Arc::new(link_to(&[&kept]));
    let config_2 =
        config(CHECKPOINT_EVERY_EPOCHS).cluster(ClusterPlacement::new("b", owners_2, link));
    let rt = Runtime::start_prepared(fx.app.clone(), config_2, None, prepared)
        .await
        .unwrap();
    let report = rt.recovery_report().clone();
    eprintln!("{test}: seed {seed}: {report:?}");
    assert_eq!(
        rt.client().state_hash().await.unwrap(),
        hash_cluster,
        "seed {seed}: another state"
    );
    let moved: Vec<u32> = (0..fx.app.n_partitions_total())
        .filter(|gp| gp % 3 == 0)
        .collect();
    let (moved_loaded, _) = received(&kept, &moved);
    match when {
        Prepare::WhileRunning => {
            assert!(report.epochs_replayed_before_lease > 0, "seed {seed}");
            assert!(
                report.epochs_replayed > report.epochs_replayed_before_lease,
                "seed {seed}: nothing replayed after the lease: {report:?}"
            );
        }
        Prepare::AfterDeath => {
            assert!(report.checkpoint_epoch.is_some(), "seed {seed}: {report:?}");
            assert_eq!(
                moved_loaded, 0,
                "seed {seed}: a moved partition loaded the checkpoint"
            );
        }
        Prepare::BeforeACheckpoint => {
            assert_eq!(report.epochs_replayed_before_lease, 0, "seed {seed}");
            assert!(
                moved_loaded > 0,
                "seed {seed}: the moved partitions did not load the checkpoint"
            );
        }
    }
    // What the take-over handed its owners reaches the next checkpoints (deletions included):
    // a recovery after more epochs and checkpoints equals the state the cluster reached.
    match when {
        // Reads only: a deleted row written again would hide a deletion the owners missed.
        Prepare::AfterDeath => {
            for key in 0..2 * CHECKPOINT_EVERY_EPOCHS {
                let read = read0(key);
                let client = rt.client();
                client.submit_raw(fx.services[0], &key, read).await.unwrap();
            }
        }
        _ => drop(run_chain_client(rt.client(), fx.clone(), seed ^ 0xfe, 45).await),
    }
    let hash_cluster = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    kept.stop().await;
    let (later, hash_single) = recovered_in_one_process(&fx, config(CHECKPOINT_EVERY_EPOCHS)).await;
    assert!(
        later.checkpoint_epoch > Some(report.last_epoch),
        "seed {seed}: no checkpoint after the take-over: {later:?}"
    );
    assert_eq!(
        hash_single, hash_cluster,
        "seed {seed}: a later recovery lost or brought back rows"
    );
}

// Goal: a kept partition that the log does not explain (here: its node ran epochs on another
// store) fails the start with an error naming it; a placement that keeps nothing then
// recovers the store's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_partition_the_log_does_not_explain_fails_the_start() {
    let seed = seed("cluster-take-over-refused");
    let fx = Arc::new(build(3, 4));
    let owners = placement(&fx, |gp| ["a", "b", "c"][gp as usize % 3]);
    let host_b = Arc::new(PartitionHost::start(fx.app.clone(), "b", &owners).unwrap());
    let host_c = Arc::new(PartitionHost::start(fx.app.clone(), "c", &owners).unwrap());
    let elsewhere = RuntimeConfig::with_storage(Arc::new(MemoryStorage::new()));
    let rt = start_driver(&fx.app, elsewhere, "a", owners.clone(), &[&host_b, &host_c]).await;
    run_chain_client(rt.client(), fx.clone(), seed, 30).await;
    rt.shutdown().await;

    let storage = Arc::new(MemoryStorage::new());
    let host_b2 = Arc::new(host_b.re_place(&owners).await.unwrap());
    let host_c2 = Arc::new(host_c.re_place(&owners).await.unwrap());
    let link = LoopbackLink::new();
    for host in [&host_b2, &host_c2] {
        let serving = host.clone();
        link.add_node(host.node(), move |bytes| {
            let host = serving.clone();
            async move { host.handle(bytes).await }
        });
    }
    let placement = ClusterPlacement::new("a", owners.clone(), Arc::new(link));
    let config = RuntimeConfig::with_storage(storage.clone()).cluster(placement);
    let error = match Runtime::start(fx.app.clone(), config).await {
        Ok(_) => panic!("seed {seed}: kept partitions unlike the log were accepted"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("kept from the runtime before") && error.contains("partition "),
        "seed {seed}: {error}"
    );

    let host_b3 = Arc::new(PartitionHost::start(fx.app.clone(), "b", &owners).unwrap());
    let host_c3 = Arc::new(PartitionHost::start(fx.app.clone(), "c", &owners).unwrap());
    let config = RuntimeConfig::with_storage(storage.clone());
    let rt = start_driver(&fx.app, config, "a", owners, &[&host_b3, &host_c3]).await;
    assert_eq!(rt.recovery_report().partitions_kept, 0);
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    assert_eq!(
        hash,
        hash_of_one_process(&fx, &storage).await,
        "seed {seed}"
    );
    for host in [host_b, host_c, host_b2, host_c2, host_b3, host_c3] {
        host.stop().await;
    }
}

// Goal: a survivor stopped in the middle of an epoch (its driver died after the survivor ran
// the epoch's first wave, and the epoch is logged before it runs) is kept, and the log's tail
// brings it to the log's end: the transaction it had half run commits in the replay, and the
// state equals a single-process recovery, also after more epochs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_survivor_stopped_mid_epoch_is_kept_and_brought_to_the_logs_end() {
    survivor_stopped_mid_epoch(false, "cluster-take-over-mid-epoch").await;
}

// Goal: the same with a transaction that aborts in its second step (on "b"): the survivor's
// buffered write of its first step is forgotten by the take-over, else the next epoch in that
// partition would read it as its own and commit it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_survivor_stopped_mid_epoch_forgets_the_epoch_in_progress() {
    survivor_stopped_mid_epoch(true, "cluster-take-over-mid-epoch-abort").await;
}

/// A survivor stopped after the first wave of an epoch whose transaction writes a row on "c",
/// then (`aborts`) aborts on "b", is kept by a take-over; the state must equal a
/// single-process recovery, also after more epochs.
async fn survivor_stopped_mid_epoch(aborts: bool, test: &str) {
    let seed = seed(test);
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = || RuntimeConfig {
        checkpoint_every_epochs: NO_CHECKPOINT_EPOCHS,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let owners = placement(&fx, |gp| ["a", "b", "c"][gp as usize % 3]);
    let host_b = Arc::new(PartitionHost::start(fx.app.clone(), "b", &owners).unwrap());
    let host_c = Arc::new(PartitionHost::start(fx.app.clone(), "c", &owners).unwrap());
    let driver_died = Arc::new(AtomicBool::new(false));
    let link = LoopbackLink::new();
    for host in [&host_b, &host_c] {
        let (serving, died) = (host.clone(), driver_died.clone());
        link.add_node(host.node(), move |bytes| {
            let (host, died) = (serving.clone(), died.clone());
            async move {
                let reply = host.handle(bytes).await;
                // The batch ran on the host, but its driver is gone: an empty, refused reply.
                match died.load(Ordering::Acquire) {
                    true => Vec::new(),
                    false => reply,
                }
            }
        });
    }
    let placement_1 = ClusterPlacement::new("a", owners, Arc::new(link));
    let rt = Runtime::start(fx.app.clone(), config().cluster(placement_1))
        .await
        .unwrap();
    run_chain_client(rt.client(), fx.clone(), seed, 45).await;
    settle_workload(&rt.client(), &fx).await;
    // A write to a partition on "c": its first wave runs there, then the epoch fails.
    let svc = fx.services[0];
    let key = (0..).find(|key| svc.partition_of(key) % 3 == 2).unwrap();
    driver_died.store(true, Ordering::Release);
    let kind = OpKind::Add(5);
    let mut ops = vec![Op { svc: 0, key, kind }];
    if aborts {
        // Service 1's first global partition: the three services have as many partitions.
        let first_gp = fx.app.n_partitions_total() / 3;
        let key = (0..).find(|key| (first_gp + fx.services[1].partition_of(key)) % 3 == 1);
        let (svc, key, kind) = (1, key.unwrap(), OpKind::Abort);
        ops.push(Op { svc, key, kind });
    }
    let write = Ev::chain(ops);
    let failed = rt.client().submit_raw(svc, &key, write).await;
    assert!(failed.is_err(), "seed {seed}: the epoch did not fail");
    rt.shutdown().await;
    let hash_single = hash_of_one_process(&fx, &storage).await;

    host_b.stop().await;
    let owners_2 = placement(&fx, |gp| ["c", "b", "c"][gp as usize % 3]);
    let (rt, host_c2) = take_over(&fx, config(), "b", owners_2, host_c).await;
    let report = rt.recovery_report().clone();
    eprintln!("{test}: seed {seed}: {report:?}");
    let n_on_c = (0..fx.app.n_partitions_total()).filter(|gp| gp % 3 == 2);
    assert_eq!(report.partitions_kept, n_on_c.count(), "seed {seed}");
    let hash_taken_over = rt.client().state_hash().await.unwrap();
    assert_eq!(hash_taken_over, hash_single, "seed {seed}: another state");
    // The next transaction on the row runs first in its epoch, as the half-run one did.
    let again = Ev::chain(vec![Op {
        svc: 0,
        key,
        kind: OpKind::Add(1),
    }]);
    rt.client().submit_raw(svc, &key, again).await.unwrap();
    run_until_the_driver_dies(rt, &fx, &storage, seed ^ 1).await;
    host_c2.stop().await;
}

/// Rows written before the driver dies (a few per partition).
const N_PROBE_KEYS: u64 = 48;
/// Partitions of the one service.
const N_PROBE_PARTITIONS: u32 = 6;
/// How long a row's serialization waits for a task of the runtime to answer before it counts
/// the runtime as stalled: far longer than a loaded machine delays a runnable task.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether serializing a [`Probe`] asks the runtime's probe task for an answer.
static ARMED: AtomicBool = AtomicBool::new(false);
/// The probe task's inbox: each question carries where to answer.
type Question = std::sync::mpsc::Sender<()>;
static PROBE: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Question>>> = Mutex::new(None);
/// Questions answered, and questions that waited `ANSWER_TIMEOUT` in vain.
static ANSWERED: AtomicUsize = AtomicUsize::new(0);
static STALLED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread runs a handler: its `put` encodes the row too, a short step of an
    /// epoch's phase that may stay on the worker (the replay runs them).
    static IN_HANDLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A row value whose serialization, while [`ARMED`], waits for the runtime's probe task.
#[derive(Clone, Debug)]
struct Probe(i64);

impl Serialize for Probe {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if ARMED.load(Ordering::Acquire) && !IN_HANDLER.get() {
            ask_the_runtime();
        }
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        i64::deserialize(deserializer).map(Probe)
    }
}

/// Waits until the probe task answers; one stall is enough to fail, so it disarms the probe
/// instead of waiting again for every row.
fn ask_the_runtime() {
    let Some(probe) = PROBE.lock().unwrap().clone() else {
        return;
    };
    let (answer, answered) = std::sync::mpsc::channel();
    if probe.send(answer).is_err() {
        return;
    }
    match answered.recv_timeout(ANSWER_TIMEOUT) {
        Ok(()) => ANSWERED.fetch_add(1, Ordering::Relaxed),
        Err(_) => {
            ARMED.store(false, Ordering::Release);
            STALLED.fetch_add(1, Ordering::Relaxed)
        }
    };
}

struct ProbeApp;

impl App for ProbeApp {
    type Event = u64;
    type Output = ();
}

fn probe_app() -> (Arc<AppDef<ProbeApp>>, ServiceRef) {
    let mut b = AppBuilder::<ProbeApp>::new();
    let service = b.service("probes", N_PROBE_PARTITIONS);
    let table = b.table::<u64, Probe>(service, "rows");
    b.handler(service, move |ctx, key| {
        IN_HANDLER.set(true);
        let put = ctx.put(table, *key, Probe(*key as i64));
        IN_HANDLER.set(false);
        put?;
        Ok(())
    });
    (b.build().expect("valid app"), service)
}

fn probe_owners(names: [&str; 3]) -> Vec<String> {
    (0..N_PROBE_PARTITIONS)
        .map(|gp| names[gp as usize % 3].to_string())
        .collect()
}

// Goal: while a take-over hashes, hands over and frees every partition's rows, the runtime's
// other tasks keep running (on a runtime of one worker, where a partition job that holds the
// worker stops them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_runtime_runs_other_tasks_while_a_take_over_visits_every_row() {
    let (app, service) = probe_app();
    let storage = Arc::new(MemoryStorage::new());
    let config = || RuntimeConfig::with_storage(storage.clone());
    let owners_1 = probe_owners(["a", "b", "c"]);
    let host_b = Arc::new(PartitionHost::start(app.clone(), "b", &owners_1).unwrap());
    let host_c = Arc::new(PartitionHost::start(app.clone(), "c", &owners_1).unwrap());
    let rt = start_driver(&app, config(), "a", owners_1, &[&host_b, &host_c]).await;
    for key in 0..N_PROBE_KEYS {
        rt.client().submit_raw(service, &key, key).await.unwrap();
    }
    rt.shutdown().await;

    let (questions, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Question>();
    *PROBE.lock().unwrap() = Some(questions);
    let answering = tokio::spawn(async move {
        while let Some(answer) = inbox.recv().await {
            let _ = answer.send(());
        }
    });
    ARMED.store(true, Ordering::Release);
    // "a" died; "b" takes over and drives, "a"'s partitions go to "c", which keeps its own.
    host_b.stop().await;
    let owners_2 = probe_owners(["c", "b", "c"]);
    let kept = Arc::new(host_c.re_place(&owners_2).await.unwrap());
    host_c.stop().await;
    let rt = start_driver(&app, config(), "b", owners_2, &[&kept]).await;
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    ARMED.store(false, Ordering::Release);
    *PROBE.lock().unwrap() = None;
    answering.await.unwrap();

    assert_eq!(
        STALLED.load(Ordering::Relaxed),
        0,
        "a partition job held the runtime's only worker while it visited the rows: no other \
         task ran for {ANSWER_TIMEOUT:?}"
    );
    assert!(
        ANSWERED.load(Ordering::Relaxed) > 0,
        "no row was serialized on the take-over's path: the check is vacuous"
    );
    let one_process = Runtime::start(app.clone(), RuntimeConfig::with_storage(storage.clone()))
        .await
        .unwrap();
    assert_eq!(one_process.client().state_hash().await.unwrap(), hash);
    one_process.shutdown().await;
}
