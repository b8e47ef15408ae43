//! A re-placement with every owner alive (a member rejoined) hands the runtime's state over to
//! the next one instead of replaying the log (`Runtime::shutdown_handing_over`,
//! `Runtime::start_handed_over`). Every phase batch and reply goes through a `LoopbackLink`,
//! encoded and decoded as between processes.
//!
//! Checked: the next runtime replays no epoch and loads no checkpoint row; every partition whose
//! owner changes (this node's to another, another's to this one, one node's to another) moves
//! as rows and every other one stays where it is; the state equals the one before and, after
//! more epochs and a checkpoint taken after the hand-over, a single-process recovery of the
//! store (so the first checkpoint lists every moved row and the rows deleted before the
//! hand-over); a request submitted before with an id gets its original outcome after (the
//! dedup window is handed over). And the fallback: a runtime whose epoch failed hands nothing
//! over, and a hand-over the store no longer matches is refused, the next runtime recovering.
//! The histories print their seed; `TXN_TEST_SEED=<n>` replays them.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use txn::storage::MemoryStorage;
use txn::{
    App, AppDef, ClusterPlacement, LoopbackLink, PartitionHost, Request, Runtime, RuntimeConfig,
};

/// Epochs between checkpoints.
const CHECKPOINT_EVERY_EPOCHS: u64 = 10;
const NO_CHECKPOINT_EPOCHS: u64 = 1_000_000;
/// Requests with ids submitted before the hand-over and again after it.
const N_WITH_IDS: u64 = 12;
/// Most single-request epochs a test submits while it waits for a checkpoint to complete.
const EPOCHS_FOR_A_CHECKPOINT_MAX: u64 = 2_000;

/// The owner `names` gives each global partition, round robin.
fn round_robin(app: &AppDef<ChainApp>, names: &[&str]) -> Vec<String> {
    (0..app.n_partitions_total())
        .map(|gp| names[gp as usize % names.len()].to_string())
        .collect()
}

/// A loopback link to `hosts`.
fn link_to<A: App>(hosts: &[&Arc<PartitionHost<A>>]) -> LoopbackLink {
    let link = LoopbackLink::new();
    for host in hosts {
        let serving = (*host).clone();
        link.add_node(host.node(), move |bytes| {
            let host = serving.clone();
            async move { host.handle(bytes).await }
        });
    }
    link
}

fn placed(config: RuntimeConfig, owners: Vec<String>, link: LoopbackLink) -> RuntimeConfig {
    config.cluster(ClusterPlacement::new("a", owners, Arc::new(link)))
}

/// The state hash of the store recovered in one process, and the checkpoint it started from.
async fn one_process(fx: &Fixture, storage: &Arc<MemoryStorage>) -> (u64, Option<u64>) {
    let config = RuntimeConfig {
        checkpoint_every_epochs: CHECKPOINT_EVERY_EPOCHS,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let hash = rt.client().state_hash().await.unwrap();
    let checkpoint = rt.recovery_report().checkpoint_epoch;
    rt.shutdown().await;
    (hash, checkpoint)
}

/// Submits single reads until `rt` has completed `n` checkpoints of its own.
async fn until_checkpoints(rt: &Runtime<ChainApp>, fx: &Fixture, n: u64) {
    for key in 0..EPOCHS_FOR_A_CHECKPOINT_MAX {
        if rt.stats().checkpoints_completed.load(Ordering::Acquire) >= n {
            return;
        }
        let read = read0(key % 24);
        rt.client()
            .submit_raw(fx.services[0], &(key % 24), read)
            .await
            .unwrap();
    }
    panic!("no checkpoint completed in {EPOCHS_FOR_A_CHECKPOINT_MAX} epochs");
}

/// Writes (`kind`) keys `keys` of every service in one transaction; returns its epoch.
async fn everywhere(
    client: &txn::Client<ChainApp>,
    fx: &Fixture,
    keys: &[u64],
    kind: OpKind,
) -> u64 {
    let ops = keys
        .iter()
        .flat_map(|key| (0..fx.services.len()).map(move |svc| (svc, *key)))
        .map(|(svc, key)| Op {
            svc,
            key,
            kind: kind.clone(),
        })
        .collect();
    let outcome = client
        .submit_raw(fx.services[0], &keys[0], Ev::chain(ops))
        .await
        .unwrap();
    assert!(outcome.result.is_ok(), "{outcome:?}");
    outcome.tid.epoch()
}

/// Request `seq` with an id: an add of 1 to key `seq` of service `seq % 3`.
fn with_id(fx: &Fixture, seq: u64) -> Request<ChainApp> {
    let svc = (seq % 3) as usize;
    let key = seq;
    let service = fx.services[svc];
    let ev = Ev::chain(vec![Op {
        svc,
        key,
        kind: OpKind::Add(1),
    }]);
    Request::raw(service, service.partition_of(&key), ev)
}

// Goal: a re-placement with every owner alive replays nothing: this node's partitions are
// handed over in the process, those that change owner move as rows, the state equals the one
// before, requests with ids keep their outcomes, and the first checkpoint after it holds every
// moved row and the deletions made before it (a single-process recovery equals the cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_re_placement_adding_a_member_hands_over_without_replay() {
    let seed = seed("cluster-rejoin");
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = || RuntimeConfig {
        checkpoint_every_epochs: CHECKPOINT_EVERY_EPOCHS,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    // Generation 1: "a" drives, "c" hosts every other partition; "b" is away.
    let owners_1 = round_robin(&fx.app, &["a", "c"]);
    let host_c = Arc::new(PartitionHost::start(fx.app.clone(), "c", &owners_1).unwrap());
    let link = link_to(&[&host_c]);
    let rt = Runtime::start(fx.app.clone(), placed(config(), owners_1.clone(), link))
        .await
        .unwrap();
    run_chain_client(rt.client(), fx.clone(), seed, 60).await;
    let mut outcomes = Vec::new();
    let client = rt.client();
    for seq in 0..N_WITH_IDS {
        let outcome = client.submit_request_with_id(request_id(seq), with_id(&fx, seq));
        outcomes.push(outcome.await.unwrap());
    }
    // Rows are written, a checkpoint holding them completes, then they are deleted: only
    // the hand-over's first checkpoint can tell the store they are gone. (A checkpoint in
    // flight at the write may have begun before it: the one after it holds the rows.)
    let keys = [1, 2, 3];
    let written_at = everywhere(&client, &fx, &keys, OpKind::Add(7)).await;
    let completed = rt.stats().checkpoints_completed.load(Ordering::Acquire);
    until_checkpoints(&rt, &fx, completed + 2).await;
    let deleted_at = everywhere(&client, &fx, &keys, OpKind::Delete).await;
    let hash_before = rt.client().state_hash().await.unwrap();
    let handed = rt
        .shutdown_handing_over()
        .await
        .expect("a clean stop hands over");
    let last_epoch = handed.last_epoch();

    // Generation 2: "b" is back; the placement over a, b, c moves partitions every way.
    let owners_2 = round_robin(&fx.app, &["a", "b", "c"]);
    let host_c2 = Arc::new(host_c.re_place(&owners_2).await.unwrap());
    host_c.stop().await;
    let host_b = Arc::new(PartitionHost::start(fx.app.clone(), "b", &owners_2).unwrap());
    let link = link_to(&[&host_b, &host_c2]);
    let config_2 = placed(config(), owners_2.clone(), link);
    let rt = Runtime::start_handed_over(fx.app.clone(), config_2, handed)
        .await
        .unwrap();
    let report = rt.recovery_report().clone();
    eprintln!("cluster-rejoin: seed {seed}: {report:?}");
    let moved = owners_1
        .iter()
        .zip(&owners_2)
        .filter(|(a, b)| a != b)
        .count();
    assert!(report.handed_over, "seed {seed}: {report:?}");
    assert_eq!(report.epochs_replayed, 0, "seed {seed}");
    assert_eq!(report.rows_loaded, 0, "seed {seed}");
    assert_eq!(report.last_epoch, last_epoch, "seed {seed}");
    assert_eq!(report.partitions_moved, moved, "seed {seed}");
    assert_eq!(
        report.partitions_kept,
        owners_1.len() - moved,
        "seed {seed}"
    );
    assert!(report.rows_moved > 0, "seed {seed}: {report:?}");
    let checkpoint = report.checkpoint_epoch.unwrap_or(0);
    assert!(
        (written_at..deleted_at).contains(&checkpoint),
        "seed {seed}: the last checkpoint before the hand-over, of epoch {checkpoint}, must \
         hold the rows written at {written_at} and not their deletion at {deleted_at}"
    );
    assert_eq!(
        rt.client().state_hash().await.unwrap(),
        hash_before,
        "seed {seed}: the state changed in the hand-over"
    );
    // b's partitions came from a and from c, as rows applied, never from a checkpoint.
    let on_b: Vec<u32> = (0..owners_2.len() as u32)
        .filter(|gp| owners_2[*gp as usize] == "b")
        .collect();
    let (loaded, applied) = on_b
        .iter()
        .map(|gp| host_b.rows_received(*gp))
        .fold((0, 0), |(l, a), (dl, da)| (l + dl, a + da));
    assert_eq!(loaded, 0, "seed {seed}: b loaded the checkpoint");
    assert!(applied > 0, "seed {seed}: b got no rows");

    // The dedup window came along: each id gets its original outcome, nothing runs again.
    for (seq, before) in (0..N_WITH_IDS).zip(&outcomes) {
        let again = rt
            .client()
            .submit_request_with_id(request_id(seq), with_id(&fx, seq))
            .await
            .unwrap();
        assert_eq!(
            (again.tid, again.serial_pos, &again.result),
            (before.tid, before.serial_pos, &before.result),
            "seed {seed}: request {seq} ran again"
        );
    }
    assert_eq!(rt.client().state_hash().await.unwrap(), hash_before);

    // More epochs, and a checkpoint of this runtime's own: a recovery from it equals the
    // cluster (the moved rows and the deletions made before the hand-over are in it).
    run_chain_client(rt.client(), fx.clone(), seed ^ 1, 30).await;
    until_checkpoints(&rt, &fx, 1).await;
    let hash_cluster = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    host_b.stop().await;
    host_c2.stop().await;
    let (hash_single, checkpoint) = one_process(&fx, &storage).await;
    assert!(
        checkpoint > Some(last_epoch),
        "seed {seed}: recovered from {checkpoint:?}, not from a checkpoint after the hand-over \
         (epoch {last_epoch})"
    );
    assert_eq!(
        hash_single, hash_cluster,
        "seed {seed}: a recovery after the hand-over's checkpoint differs"
    );
}

// Goal: a runtime whose epoch failed (a node's answer lost) hands nothing over; and a hand-over
// the store no longer matches (another runtime appended to the log since) is refused: the next
// runtime recovers from the store, and its state equals a single-process recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unclean_stop_or_a_changed_store_falls_back_to_recovery() {
    let seed = seed("cluster-rejoin-fallback");
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = || RuntimeConfig {
        checkpoint_every_epochs: NO_CHECKPOINT_EPOCHS,
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let owners = round_robin(&fx.app, &["a", "c"]);

    // An epoch fails: its answers from "c" are lost.
    let host_c = Arc::new(PartitionHost::start(fx.app.clone(), "c", &owners).unwrap());
    let lost = Arc::new(AtomicBool::new(false));
    let link = LoopbackLink::new();
    let (serving, losing) = (host_c.clone(), lost.clone());
    link.add_node("c", move |bytes| {
        let (host, lost) = (serving.clone(), losing.clone());
        async move {
            let reply = host.handle(bytes).await;
            match lost.load(Ordering::Acquire) {
                true => Vec::new(),
                false => reply,
            }
        }
    });
    let rt = Runtime::start(fx.app.clone(), placed(config(), owners.clone(), link))
        .await
        .unwrap();
    run_chain_client(rt.client(), fx.clone(), seed, 30).await;
    lost.store(true, Ordering::Release);
    let write = op0(5, OpKind::Add(1));
    let failed = rt.client().submit_raw(fx.services[0], &5u64, write).await;
    assert!(failed.is_err(), "seed {seed}: the epoch did not fail");
    lost.store(false, Ordering::Release);
    assert!(
        rt.shutdown_handing_over().await.is_none(),
        "seed {seed}: a runtime whose epoch failed handed over"
    );
    let host_c2 = Arc::new(host_c.re_place(&owners).await.unwrap());
    host_c.stop().await;
    let rt = Runtime::start(
        fx.app.clone(),
        placed(config(), owners.clone(), link_to(&[&host_c2])),
    )
    .await
    .unwrap();
    let report = rt.recovery_report().clone();
    assert!(
        !report.handed_over && report.epochs_replayed > 0,
        "{report:?}"
    );
    run_chain_client(rt.client(), fx.clone(), seed ^ 1, 10).await;

    // A clean stop hands over, but another runtime writes the store before it is taken.
    let handed = rt
        .shutdown_handing_over()
        .await
        .expect("a clean stop hands over");
    let single = Runtime::start(fx.app.clone(), config()).await.unwrap();
    let write = op0(7, OpKind::Add(3));
    single
        .client()
        .submit_raw(fx.services[0], &7u64, write)
        .await
        .unwrap();
    single.shutdown().await;
    let host_c3 = Arc::new(host_c2.re_place(&owners).await.unwrap());
    host_c2.stop().await;
    let config_3 = placed(config(), owners.clone(), link_to(&[&host_c3]));
    let rt = Runtime::start_handed_over(fx.app.clone(), config_3, handed)
        .await
        .unwrap();
    let report = rt.recovery_report().clone();
    eprintln!("cluster-rejoin-fallback: seed {seed}: {report:?}");
    assert!(
        !report.handed_over,
        "seed {seed}: a stale hand-over was taken"
    );
    assert!(report.epochs_replayed > 0, "seed {seed}: {report:?}");
    let hash = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    host_c3.stop().await;
    let (hash_single, _) = one_process(&fx, &storage).await;
    assert_eq!(hash, hash_single, "seed {seed}");
}
