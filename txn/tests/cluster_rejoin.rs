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
//! dedup window is handed over); a hand-over is taken when a checkpoint of the last epoch
//! truncated the whole log. And the fallback: a runtime whose epoch failed hands nothing over, a
//! hand-over the store no longer matches is refused, a re-placement that also removes a member
//! recovers, and a hand-over whose owner's answer is lost half-way recovers in the same start,
//! every acknowledged request still in the state with its outcome, the next runtime recovering;
//! and an owner restarted under the same name after the stop, whose new empty partitions hash
//! like its emptied ones, is not taken for the instances that stopped (the next runtime
//! recovers, and the deletions reach the next checkpoint).
//! The histories print their seed; `TXN_TEST_SEED=<n>` replays them.

use crate::common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use txn::storage::{MemoryStorage, Storage};
use txn::{
    AppDef, ClusterPlacement, LoopbackLink, Outcome, PartitionHost, Request, Runtime, RuntimeConfig,
};

type Host = PartitionHost<ChainApp>;

/// Epochs between checkpoints.
const CHECKPOINT_EVERY_EPOCHS: u64 = 10;
const NO_CHECKPOINT_EPOCHS: u64 = 1_000_000;
/// Requests with ids submitted before the hand-over and again after it.
const N_WITH_IDS: u64 = 12;
/// Most single-request epochs a test submits while it waits for a checkpoint to complete.
const EPOCHS_FOR_A_CHECKPOINT_MAX: u64 = 2_000;
/// Most times a test looks (a millisecond apart) whether the checkpoint of a write's epoch
/// truncated the log, before it writes again.
const LOOKS_PER_WRITE_MAX: u32 = 100;

/// The owner `names` gives each global partition, round robin.
fn round_robin(app: &AppDef<ChainApp>, names: &[&str]) -> Vec<String> {
    (0..app.n_partitions_total())
        .map(|gp| names[gp as usize % names.len()].to_string())
        .collect()
}

fn placed(config: RuntimeConfig, owners: Vec<String>, link: LoopbackLink) -> RuntimeConfig {
    config.cluster(ClusterPlacement::new("a", owners, Arc::new(link)))
}

/// Generation 1: "a" drives, "c" hosts every other partition; "b" is away. The runtime, c's
/// host and the placement.
async fn first_generation(
    fx: &Fixture,
    config: RuntimeConfig,
) -> (Runtime<ChainApp>, Arc<Host>, Vec<String>) {
    let owners = round_robin(&fx.app, &["a", "c"]);
    let host_c = Arc::new(PartitionHost::start(fx.app.clone(), "c", &owners).unwrap());
    let link = link_to(&[&host_c]);
    let rt = Runtime::start(fx.app.clone(), placed(config, owners.clone(), link))
        .await
        .unwrap();
    (rt, host_c, owners)
}

/// The hosts of a re-placement to `owners` after a runtime stopped: c's, keeping the partitions
/// it goes on holding (the old one is stopped), and a new one for "b".
async fn re_placed(fx: &Fixture, host_c: Arc<Host>, owners: &[String]) -> (Arc<Host>, Arc<Host>) {
    let host_c2 = Arc::new(host_c.re_place(owners).await.unwrap());
    host_c.stop().await;
    let host_b = Arc::new(PartitionHost::start(fx.app.clone(), "b", owners).unwrap());
    (host_b, host_c2)
}

/// Submits the requests with ids `0..N_WITH_IDS`; their outcomes.
async fn submit_with_ids(client: &txn::Client<ChainApp>, fx: &Fixture) -> Vec<Outcome<Vec<i64>>> {
    let mut outcomes = Vec::new();
    for seq in 0..N_WITH_IDS {
        let outcome = client.submit_request_with_id(request_id(seq), with_id(fx, seq));
        outcomes.push(outcome.await.unwrap());
    }
    outcomes
}

/// Each request with an id gets its original outcome again: nothing runs twice.
async fn assert_same_outcomes(
    client: &txn::Client<ChainApp>,
    fx: &Fixture,
    before: &[Outcome<Vec<i64>>],
    seed: u64,
) {
    for (seq, before) in (0..N_WITH_IDS).zip(before) {
        let again = client
            .submit_request_with_id(request_id(seq), with_id(fx, seq))
            .await
            .unwrap();
        assert_eq!(
            (again.tid, again.serial_pos, &again.result),
            (before.tid, before.serial_pos, &before.result),
            "seed {seed}: request {seq} ran again"
        );
    }
}

/// The state hash of the store recovered in one process, and the checkpoint it started from.
async fn one_process(fx: &Fixture, storage: &Arc<MemoryStorage>) -> (u64, Option<u64>) {
    let config = on_memory(storage, CHECKPOINT_EVERY_EPOCHS);
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

/// Writes `keys` of every service, waits for a checkpoint holding them to complete (one in
/// flight at the write may have begun before it: the one after it holds the rows), then deletes
/// them. The epochs of the write and of the deletion.
async fn checkpointed_then_deleted(
    rt: &Runtime<ChainApp>,
    fx: &Fixture,
    keys: &[u64],
) -> (u64, u64) {
    let client = rt.client();
    let written_at = everywhere(&client, fx, keys, OpKind::Add(7)).await;
    let completed = rt.stats().checkpoints_completed.load(Ordering::Acquire);
    until_checkpoints(rt, fx, completed + 2).await;
    let deleted_at = everywhere(&client, fx, keys, OpKind::Delete).await;
    (written_at, deleted_at)
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

/// Stops `rt` cleanly, which must hand its state over; what it hands over and its state hash.
async fn stop_handing_over(rt: Runtime<ChainApp>) -> (txn::HandOver<ChainApp>, u64) {
    let hash = rt.client().state_hash().await.unwrap();
    let handed = rt.shutdown_handing_over().await;
    (handed.expect("a clean stop hands over"), hash)
}

/// Starts the runtime of generation 2 (`config`) with what generation 1 `handed` over; prints
/// its recovery report under `name`.
async fn start_after(
    fx: &Fixture,
    config: RuntimeConfig,
    handed: txn::HandOver<ChainApp>,
    name: &str,
    seed: u64,
) -> (Runtime<ChainApp>, txn::RecoveryReport) {
    let rt = Runtime::start_handed_over(fx.app.clone(), config, handed)
        .await
        .unwrap();
    let report = rt.recovery_report().clone();
    eprintln!("{name}: seed {seed}: {report:?}");
    (rt, report)
}

/// Stops `rt` and `hosts`, then recovers `storage` in one process: its state must equal the
/// cluster's. The checkpoint the recovery started from.
async fn one_process_agrees(
    rt: Runtime<ChainApp>,
    hosts: [Arc<Host>; 2],
    fx: &Fixture,
    storage: &Arc<MemoryStorage>,
    seed: u64,
) -> Option<u64> {
    let hash_cluster = rt.client().state_hash().await.unwrap();
    rt.shutdown().await;
    for host in hosts {
        host.stop().await;
    }
    let (hash_single, checkpoint) = one_process(fx, storage).await;
    assert_eq!(
        hash_single, hash_cluster,
        "seed {seed}: a single-process recovery (from checkpoint {checkpoint:?}) differs"
    );
    checkpoint
}

/// A runtime on `storage` that falls due for a checkpoint every `every` epochs.
fn on_memory(storage: &Arc<MemoryStorage>, every: u64) -> RuntimeConfig {
    RuntimeConfig {
        checkpoint_every_epochs: every,
        ..RuntimeConfig::with_storage(storage.clone())
    }
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
    let config = || on_memory(&storage, CHECKPOINT_EVERY_EPOCHS);
    let (rt, host_c, owners_1) = first_generation(&fx, config()).await;
    run_chain_client(rt.client(), fx.clone(), seed, 60).await;
    let client = rt.client();
    let outcomes = submit_with_ids(&client, &fx).await;
    // Only the hand-over's first checkpoint can tell the store these rows are gone.
    let (written_at, deleted_at) = checkpointed_then_deleted(&rt, &fx, &[1, 2, 3]).await;
    let (handed, hash_before) = stop_handing_over(rt).await;
    let last_epoch = handed.last_epoch();

    // Generation 2: "b" is back; the placement over a, b, c moves partitions every way.
    let owners_2 = round_robin(&fx.app, &["a", "b", "c"]);
    let (host_b, host_c2) = re_placed(&fx, host_c, &owners_2).await;
    let link = link_to(&[&host_b, &host_c2]);
    let config_2 = placed(config(), owners_2.clone(), link);
    let (rt, report) = start_after(&fx, config_2, handed, "cluster-rejoin", seed).await;
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
    assert_same_outcomes(&rt.client(), &fx, &outcomes, seed).await;
    assert_eq!(rt.client().state_hash().await.unwrap(), hash_before);

    // More epochs, and a checkpoint of this runtime's own: a recovery from it equals the
    // cluster (the moved rows and the deletions made before the hand-over are in it).
    run_chain_client(rt.client(), fx.clone(), seed ^ 1, 30).await;
    until_checkpoints(&rt, &fx, 1).await;
    let checkpoint = one_process_agrees(rt, [host_b, host_c2], &fx, &storage, seed).await;
    assert!(
        checkpoint > Some(last_epoch),
        "seed {seed}: recovered from {checkpoint:?}, not from a checkpoint after the hand-over \
         (epoch {last_epoch})"
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
    let config = || on_memory(&storage, NO_CHECKPOINT_EPOCHS);
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
    let (handed, _) = stop_handing_over(rt).await;
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
    let (rt, report) = start_after(&fx, config_3, handed, "cluster-rejoin-fallback", seed).await;
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

/// Writes one row at a time until the checkpoint of the write's own epoch completed and
/// truncated the whole log (checkpoints fall due after every epoch; one in flight when a write
/// ran skips that epoch, so the next write is tried).
async fn until_the_log_is_empty(rt: &Runtime<ChainApp>, fx: &Fixture, storage: &MemoryStorage) {
    for key in 0..EPOCHS_FOR_A_CHECKPOINT_MAX {
        let write = op0(key % 24, OpKind::Add(1));
        let client = rt.client();
        client
            .submit_raw(fx.services[0], &(key % 24), write)
            .await
            .unwrap();
        for _ in 0..LOOKS_PER_WRITE_MAX {
            if storage.last_epoch().unwrap().is_none() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    panic!("no checkpoint of a last epoch emptied the log in {EPOCHS_FOR_A_CHECKPOINT_MAX} epochs");
}

// Goal: a checkpoint of the last epoch before the stop completed and truncated the whole log:
// the store still ends at the epoch handed over (its checkpoint's, the log being empty), so the
// hand-over is taken, and the state goes on as a single-process recovery of the store sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_over_is_taken_after_a_checkpoint_of_the_last_epoch_emptied_the_log() {
    let seed = seed("cluster-rejoin-empty-log");
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let (rt, host_c, _) = first_generation(&fx, on_memory(&storage, 1)).await;
    run_chain_client(rt.client(), fx.clone(), seed, 30).await;
    until_the_log_is_empty(&rt, &fx, &storage).await;
    // In a cluster a state hash is answered between epochs: it logs none.
    let (handed, hash_before) = stop_handing_over(rt).await;
    assert_eq!(storage.last_epoch().unwrap(), None, "seed {seed}");
    let owners_2 = round_robin(&fx.app, &["a", "b", "c"]);
    let (host_b, host_c2) = re_placed(&fx, host_c, &owners_2).await;
    let config_2 = placed(
        on_memory(&storage, 1),
        owners_2,
        link_to(&[&host_b, &host_c2]),
    );
    let (rt, report) = start_after(&fx, config_2, handed, "cluster-rejoin-empty-log", seed).await;
    assert!(
        report.handed_over && report.epochs_replayed == 0,
        "seed {seed}: a hand-over whose last epoch's checkpoint emptied the log was refused: \
         {report:?}"
    );
    assert_eq!(rt.client().state_hash().await.unwrap(), hash_before);
    run_chain_client(rt.client(), fx.clone(), seed ^ 1, 10).await;
    one_process_agrees(rt, [host_b, host_c2], &fx, &storage, seed).await;
}

// Goal: a re-placement that also removes a member ("b" back, "c" gone) recovers instead of
// taking the hand-over, even though c's host still answers: its partitions' owner is no longer
// a member. The state, the outcomes of requests with ids and a single-process recovery agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_re_placement_that_also_removes_a_member_recovers() {
    let seed = seed("cluster-rejoin-removed");
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = || on_memory(&storage, NO_CHECKPOINT_EPOCHS);
    let (rt, host_c, _) = first_generation(&fx, config()).await;
    run_chain_client(rt.client(), fx.clone(), seed, 30).await;
    let outcomes = submit_with_ids(&rt.client(), &fx).await;
    let (handed, hash_before) = stop_handing_over(rt).await;
    let owners_2 = round_robin(&fx.app, &["a", "b"]);
    let (host_b, host_c2) = re_placed(&fx, host_c, &owners_2).await;
    let config_2 = placed(config(), owners_2, link_to(&[&host_b, &host_c2]));
    let (rt, report) = start_after(&fx, config_2, handed, "cluster-rejoin-removed", seed).await;
    assert!(
        !report.handed_over && report.epochs_replayed > 0,
        "seed {seed}: a re-placement removing a member took the hand-over: {report:?}"
    );
    assert_eq!(rt.client().state_hash().await.unwrap(), hash_before);
    assert_same_outcomes(&rt.client(), &fx, &outcomes, seed).await;
    one_process_agrees(rt, [host_b, host_c2], &fx, &storage, seed).await;
}

// Goal: a hand-over that fails half-way (c ran the read of its partitions' rows, but its answer
// was lost) recovers in the same start: nothing acknowledged is lost (the state before, each
// request with an id keeps its outcome), the checkpoint the runtime before was writing does not
// get in the way, and after a checkpoint of its own a single-process recovery equals the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_over_that_fails_half_way_recovers_in_the_same_start() {
    let seed = seed("cluster-rejoin-half-way");
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = || on_memory(&storage, CHECKPOINT_EVERY_EPOCHS);
    let (rt, host_c, _) = first_generation(&fx, config()).await;
    run_chain_client(rt.client(), fx.clone(), seed, 60).await;
    let outcomes = submit_with_ids(&rt.client(), &fx).await;
    let (handed, hash_before) = stop_handing_over(rt).await;
    let owners_2 = round_robin(&fx.app, &["a", "b", "c"]);
    let (host_b, host_c2) = re_placed(&fx, host_c, &owners_2).await;
    // The hand-over's first request to c reads the rows of the partitions c gives up.
    let link = link_to(&[&host_b]);
    let (serving, answered_once) = (host_c2.clone(), Arc::new(AtomicBool::new(false)));
    link.add_node("c", move |bytes| {
        let (host, answered_once) = (serving.clone(), answered_once.clone());
        async move {
            let reply = host.handle(bytes).await;
            match answered_once.swap(true, Ordering::AcqRel) {
                false => Vec::new(),
                true => reply,
            }
        }
    });
    let config_2 = placed(config(), owners_2, link);
    let (rt, report) = start_after(&fx, config_2, handed, "cluster-rejoin-half-way", seed).await;
    assert!(
        !report.handed_over && report.rows_loaded + report.epochs_replayed as usize > 0,
        "seed {seed}: a hand-over that failed half-way did not recover: {report:?}"
    );
    assert_eq!(rt.client().state_hash().await.unwrap(), hash_before);
    assert_same_outcomes(&rt.client(), &fx, &outcomes, seed).await;
    run_chain_client(rt.client(), fx.clone(), seed ^ 1, 30).await;
    until_checkpoints(&rt, &fx, 1).await;
    one_process_agrees(rt, [host_b, host_c2], &fx, &storage, seed).await;
}

// Goal: an owner restarted under the same name between the stop and the next runtime's start
// hosts new, empty partitions. Every row of its partitions was deleted since the last
// checkpoint, so they hash as the emptied ones did, but they do not list the deletions: the
// hand-over must not take them for the partitions the runtime before stopped (it recovers in
// the same start, after it moved rows to the joining member), and after a checkpoint of the
// next runtime's own a single-process recovery of the store equals the cluster (the deleted
// rows do not come back).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_restarted_after_the_stop_is_not_taken_for_the_one_that_stopped() {
    let seed = seed("cluster-rejoin-restarted");
    let fx = Arc::new(build(3, 4));
    let storage = Arc::new(MemoryStorage::new());
    let config = || on_memory(&storage, CHECKPOINT_EVERY_EPOCHS);
    let (rt, host_c, owners_1) = first_generation(&fx, config()).await;
    // The only rows written before the deletion.
    let keys: Vec<u64> = (0..12).collect();
    let (written_at, deleted_at) = checkpointed_then_deleted(&rt, &fx, &keys).await;
    // Rows only in the partitions that move from a to b (local partition 2 of each service).
    let to_b: Vec<u64> = (100..)
        .filter(|key| fx.services[0].partition_of(key) == 2)
        .take(3)
        .collect();
    everywhere(&rt.client(), &fx, &to_b, OpKind::Add(5)).await;
    let (handed, hash_before) = stop_handing_over(rt).await;
    let checkpoint = storage.latest_checkpoint_epoch().unwrap().unwrap_or(0);
    assert!(
        (written_at..deleted_at).contains(&checkpoint),
        "seed {seed}: the last checkpoint, of epoch {checkpoint}, must hold the rows written at \
         {written_at} and not their deletion at {deleted_at}"
    );

    // "b" joins and takes some of a's partitions; c keeps all of its own, but c restarted:
    // its new host starts empty (no `re_place` of the one that stopped).
    let owners_2: Vec<String> = owners_1
        .iter()
        .enumerate()
        .map(|(gp, owner)| match gp % 4 {
            2 => "b".to_string(),
            _ => owner.clone(),
        })
        .collect();
    assert!(
        owners_1
            .iter()
            .zip(&owners_2)
            .all(|(a, b)| a != "c" || b == "c")
    );
    host_c.stop().await;
    drop(host_c);
    let host_c2 = Arc::new(PartitionHost::start(fx.app.clone(), "c", &owners_2).unwrap());
    let host_b = Arc::new(PartitionHost::start(fx.app.clone(), "b", &owners_2).unwrap());
    let config_2 = placed(config(), owners_2, link_to(&[&host_b, &host_c2]));
    let (rt, report) = start_after(&fx, config_2, handed, "cluster-rejoin-restarted", seed).await;
    assert!(
        !report.handed_over,
        "seed {seed}: a restarted owner's new partitions were taken for the ones stopped: \
         {report:?}"
    );
    assert_eq!(rt.client().state_hash().await.unwrap(), hash_before);
    until_checkpoints(&rt, &fx, 1).await;
    let checkpoint = one_process_agrees(rt, [host_b, host_c2], &fx, &storage, seed).await;
    assert!(
        checkpoint > Some(deleted_at),
        "seed {seed}: recovered from {checkpoint:?}, not from a checkpoint after the deletion \
         (epoch {deleted_at})"
    );
}
