//! The four checks after the last kill, on the store as the crash left it.
//!
//! Order matters: the store is copied first (the crash-free replay of check 4 runs on the copy,
//! so both recoveries see the same log); then the store is recovered normally and read at one
//! snapshot (checks 1–3 on it); then acknowledged request ids are resubmitted (exactly-once),
//! and the requests the last life never saw answered are resubmitted and must each run at most
//! once.

use super::app::{CrashWorkload, Snapshot, aborts, value_of};
use super::child::runtime_config;
use super::files::{Ack, Logs, RunDir, RunParams, copy_dir};
use super::parent::Recovered;
use crate::driver::fmt_count;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use txn::storage::EmbeddedStorage;
use txn::{AbortReason, RecoverFrom, Runtime};

/// Acknowledged requests resubmitted to check exactly-once.
pub const RESUBMIT_SAMPLE_MAX: usize = 1_000;

/// Examples printed per kind of violation.
const EXAMPLES_MAX: usize = 5;

/// One of the four results.
#[derive(Debug)]
pub struct CheckResult {
    pub number: u32,
    pub name: &'static str,
    pub summary: String,
    pub details: Vec<String>,
    pub passed: bool,
}

/// What the final recovery and the checks found.
pub struct Verification {
    pub recovered: Recovered,
    pub replay: Recovered,
    pub checks: Vec<CheckResult>,
    /// Facts worth printing that are not pass/fail.
    pub notes: Vec<String>,
}

/// Collects violations of one check, keeping a few examples.
#[derive(Default)]
struct Violations {
    count: usize,
    examples: Vec<String>,
}

impl Violations {
    fn add(&mut self, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(example());
        }
    }
}

fn start_err(what: &str) -> impl Fn(txn::TxnError) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn recovered_of(report: &txn::RecoveryReport) -> Recovered {
    Recovered {
        checkpoint_epoch: report.checkpoint_epoch,
        rows_loaded: report.rows_loaded as u64,
        epochs_replayed: report.epochs_replayed,
        dedup_entries: report.dedup_window_entries as u64,
        seconds: report.duration.as_secs_f64(),
    }
}

/// Runs the four checks on the crash-test directory `dir`.
pub async fn verify(dir: &RunDir, params: &RunParams) -> Result<Verification, String> {
    let workload = Arc::new(
        CrashWorkload::new(params.partitions, params.pad_bytes as usize)
            .map_err(|e| e.to_string())?,
    );
    let logs = Logs::read(dir).map_err(|e| format!("cannot read the logs: {e}"))?;
    let replay_dir = dir.root.join("store-logstart");
    if replay_dir.exists() {
        std::fs::remove_dir_all(&replay_dir)
            .map_err(|e| format!("cannot remove {}: {e}", replay_dir.display()))?;
    }
    copy_dir(&dir.store(), &replay_dir).map_err(|e| format!("cannot copy the store: {e}"))?;
    let mut notes = Vec::new();

    // Normal recovery: latest checkpoint + log tail.
    let opening = Instant::now();
    let store = EmbeddedStorage::open(dir.store())
        .map_err(|e| format!("the final open of the store failed: {e}"))?;
    let open_s = opening.elapsed().as_secs_f64();
    let config = runtime_config(
        Arc::new(store),
        params,
        params.checkpoint_every,
        RecoverFrom::LatestCheckpoint,
    );
    let rt = Runtime::start(workload.app.clone(), config)
        .await
        .map_err(start_err("the final recovery failed"))?;
    let recovered = recovered_of(rt.recovery_report());
    notes.push(format!("store opened in {open_s:.3} s before that"));
    let recovered_epoch = recovered.checkpoint_epoch.unwrap_or(0) + recovered.epochs_replayed;
    let client = rt.client();
    let h1 = client.state_hash().await.map_err(start_err("state hash"))?;
    let snap = workload
        .snapshot(&client)
        .await
        .map_err(start_err("snapshot"))?;

    let mut checks = Vec::new();
    let mut log_problems = Violations::default();
    for line in &logs.garbled_lines {
        log_problems.add(|| format!("garbled log line: {line}"));
    }
    for (k, first, second) in &logs.conflicting_acks {
        log_problems.add(|| format!("key {k} acknowledged twice: {first:?} then {second:?}"));
    }
    checks.push(check_acknowledged_present(&logs, &snap, log_problems));
    let sent: HashSet<u64> = logs.sent.iter().copied().collect();
    let (half, unacked_complete) = check_no_half_applied(params.seed, &logs, &sent, &snap);
    checks.push(half);

    // Check 3: invariants on the snapshot, then exactly-once by resubmission.
    let mut invariants = invariant_violations(&workload, &logs, &snap);
    let mut rng = SmallRng::seed_from_u64(super::app::mix(params.seed ^ 0x7265_7375));
    let acked: Vec<(u64, Ack)> = {
        let mut v: Vec<(u64, Ack)> = logs.acks.iter().map(|(k, a)| (*k, *a)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    };
    let sample: Vec<&(u64, Ack)> = acked
        .choose_multiple(&mut rng, RESUBMIT_SAMPLE_MAX)
        .collect();
    let mut resubmit_mismatch = Violations::default();
    for (k, ack) in &sample {
        let outcome = workload
            .insert(&client, *k, ack.v)
            .await
            .map_err(start_err("resubmission"))?;
        let got = match &outcome.result {
            Ok(Some(out)) => Some(out.bucket_total),
            Ok(None) => Some(i64::MIN),
            Err(_) => None,
        };
        if got != ack.committed || outcome.tid.epoch() != ack.epoch {
            resubmit_mismatch.add(|| {
                format!(
                    "key {k}: acknowledged {ack:?}, resubmission returned {:?} at {}",
                    outcome.result, outcome.tid
                )
            });
        }
    }
    let h1_after = client.state_hash().await.map_err(start_err("state hash"))?;
    if h1_after != h1 {
        resubmit_mismatch.add(|| {
            format!(
                "the state hash changed from {h1:#018x} to {h1_after:#018x} by resubmitting \
                 acknowledged requests"
            )
        });
    }

    // The requests the last life sent but never saw answered: each may have been durable (the
    // original outcome must come back) or lost (it runs now), never both.
    let unacked = logs.unacknowledged();
    let (mut original, mut ran_now) = (0usize, 0usize);
    for k in &unacked {
        let v = value_of(params.seed, *k);
        let outcome = workload
            .insert(&client, *k, v)
            .await
            .map_err(start_err("resubmission"))?;
        let present = snap.c.contains_key(k);
        let is_original = outcome.tid.epoch() <= recovered_epoch;
        let consistent = match (&outcome.result, is_original) {
            (Ok(_), true) => present,
            (Err(AbortReason::User { .. }), true) => !present && aborts(v),
            (Ok(_), false) => !present && !aborts(v),
            (Err(AbortReason::User { .. }), false) => !present && aborts(v),
            (Err(_), _) => false,
        };
        if is_original {
            original += 1;
        } else {
            ran_now += 1;
        }
        if !consistent {
            resubmit_mismatch.add(|| {
                format!(
                    "unacknowledged key {k} (value {v}, {} in the recovered state): resubmission \
                     returned {:?} at {} (recovered up to epoch {recovered_epoch})",
                    if present { "present" } else { "absent" },
                    outcome.result,
                    outcome.tid
                )
            });
        }
    }
    let after = workload
        .snapshot(&client)
        .await
        .map_err(start_err("snapshot"))?;
    let mut after_violations = Violations::default();
    for (bucket, sum) in &after.bucket_sums {
        let total = after.totals.get(bucket).copied().unwrap_or(0);
        if total != *sum {
            after_violations.add(|| {
                format!("after resubmitting: bucket {bucket:?} total {total} != sum {sum}")
            });
        }
    }
    for (bucket, total) in &after.totals {
        if !after.bucket_sums.contains_key(bucket) && *total != 0 {
            after_violations
                .add(|| format!("after resubmitting: bucket {bucket:?} total {total} has no rows"));
        }
    }
    for k in &logs.sent {
        let in_c = after.c.contains_key(k);
        if in_c != after.a.contains_key(k) || in_c != after.b.contains_key(k) {
            after_violations.add(|| format!("after resubmitting: key {k} is half applied"));
        }
    }
    rt.shutdown().await;
    let n_sample = sample.len();
    for e in resubmit_mismatch.examples.drain(..) {
        invariants.examples.push(e);
    }
    invariants.count += resubmit_mismatch.count;
    for e in after_violations.examples.drain(..) {
        invariants.examples.push(e);
    }
    invariants.count += after_violations.count;
    checks.push(CheckResult {
        number: 3,
        name: "workload invariants hold",
        summary: format!(
            "bucket totals = sums of values ({} buckets), acknowledged aborts absent, \
             {n_sample} acknowledged ids resubmitted: original outcomes, state hash unchanged; \
             {} unanswered ids resubmitted ({original} original outcome, {ran_now} ran now); \
             {} violations",
            snap.totals.len(),
            unacked.len(),
            invariants.count
        ),
        details: invariants.examples,
        passed: invariants.count == 0,
    });

    // Check 4: the same log replayed from epoch 1 on the copy.
    let replay_store = EmbeddedStorage::open(&replay_dir)
        .map_err(|e| format!("opening the copy for the crash-free replay failed: {e}"))?;
    let config = runtime_config(Arc::new(replay_store), params, 0, RecoverFrom::LogStart);
    let replay_rt = Runtime::start(workload.app.clone(), config)
        .await
        .map_err(start_err("the crash-free replay failed"))?;
    let replay = recovered_of(replay_rt.recovery_report());
    let h2 = replay_rt
        .client()
        .state_hash()
        .await
        .map_err(start_err("state hash"))?;
    replay_rt.shutdown().await;
    checks.push(CheckResult {
        number: 4,
        name: "recovered state hash equals a crash-free replay of the same log",
        summary: format!(
            "checkpoint + tail {h1:#018x} {} log from epoch 1 {h2:#018x}",
            if h1 == h2 { "==" } else { "!=" }
        ),
        details: Vec::new(),
        passed: h1 == h2,
    });
    let _ = std::fs::remove_dir_all(&replay_dir);

    let store_bytes: u64 = [
        txn::storage::redb_storage::FILE_NAME,
        txn::storage::redb_storage::CHECKPOINT_FILE_NAME,
    ]
    .iter()
    .map(|f| {
        std::fs::metadata(dir.store().join(f))
            .map(|m| m.len())
            .unwrap_or(0)
    })
    .sum();
    notes.push(format!(
        "state: {} keys in each service, {} durable-but-unacknowledged complete transactions \
         (allowed), store files {:.1} MiB",
        fmt_count(snap.c.len() as u64),
        fmt_count(unacked_complete as u64),
        store_bytes as f64 / (1024.0 * 1024.0)
    ));
    Ok(Verification {
        recovered,
        replay,
        checks,
        notes,
    })
}

/// Check 1: every acknowledged commit is in all three services with its value.
fn check_acknowledged_present(
    logs: &Logs,
    snap: &Snapshot,
    mut missing: Violations,
) -> CheckResult {
    let mut n_committed = 0u64;
    let mut n_present = 0u64;
    let mut keys: Vec<(&u64, &Ack)> = logs.acks.iter().collect();
    keys.sort_unstable_by_key(|(k, _)| **k);
    for (k, ack) in keys {
        if ack.committed.is_none() {
            continue;
        }
        n_committed += 1;
        let found = [snap.a.get(k), snap.b.get(k), snap.c.get(k)];
        if found.iter().all(|v| *v == Some(&ack.v)) {
            n_present += 1;
        } else {
            missing.add(|| {
                format!(
                    "acknowledged key {k} (value {}, epoch {}) found as a={:?} b={:?} c={:?}",
                    ack.v, ack.epoch, found[0], found[1], found[2]
                )
            });
        }
    }
    let n_aborted = logs.acks.len() as u64 - n_committed;
    CheckResult {
        number: 1,
        name: "acknowledged transactions present",
        summary: format!(
            "{}/{} (plus {} acknowledged aborts, checked absent in [3])",
            fmt_count(n_present),
            fmt_count(n_committed),
            fmt_count(n_aborted)
        ),
        passed: missing.count == 0 && n_present == n_committed,
        details: missing.examples,
    }
}

/// Check 2: each key is in all three services with one value, or in none; deliberately aborting
/// values nowhere; nothing that was never sent. Returns the result and the number of complete
/// transactions that were durable but never acknowledged.
fn check_no_half_applied(
    seed: u64,
    logs: &Logs,
    sent: &HashSet<u64>,
    snap: &Snapshot,
) -> (CheckResult, usize) {
    let mut bad = Violations::default();
    let keys: HashSet<u64> = snap
        .a
        .keys()
        .chain(snap.b.keys())
        .chain(snap.c.keys())
        .copied()
        .collect();
    let mut unacked_complete = 0;
    let mut sorted: Vec<u64> = keys.iter().copied().collect();
    sorted.sort_unstable();
    for k in &sorted {
        let found = [snap.a.get(k), snap.b.get(k), snap.c.get(k)];
        let expected = value_of(seed, *k);
        if !found.iter().all(|v| *v == Some(&expected)) {
            bad.add(|| {
                format!(
                    "key {k} half applied or wrong: a={:?} b={:?} c={:?}, expected {expected} in all",
                    found[0], found[1], found[2]
                )
            });
        } else if aborts(expected) {
            bad.add(|| format!("key {k} has value {expected}, which must abort, yet is present"));
        } else if !sent.contains(k) {
            bad.add(|| format!("key {k} is present but was never sent"));
        } else if !logs.acks.contains_key(k) {
            unacked_complete += 1;
        }
    }
    (
        CheckResult {
            number: 2,
            name: "no unacknowledged-but-half-applied transaction visible",
            summary: format!(
                "{} of {} keys half applied, wrong, phantom or deliberately aborting; {} of them \
                 durable but never acknowledged (complete in all three services)",
                bad.count,
                fmt_count(keys.len() as u64),
                fmt_count(unacked_complete as u64)
            ),
            passed: bad.count == 0,
            details: bad.examples,
        },
        unacked_complete,
    )
}

/// The invariants of check 3 that the snapshot alone shows.
fn invariant_violations(workload: &CrashWorkload, logs: &Logs, snap: &Snapshot) -> Violations {
    let mut bad = Violations::default();
    for (bucket, sum) in &snap.bucket_sums {
        let total = snap.totals.get(bucket).copied().unwrap_or(0);
        if total != *sum {
            bad.add(|| {
                format!("bucket {bucket:?}: stored total {total} != sum of its values {sum}")
            });
        }
    }
    for (bucket, total) in &snap.totals {
        if !snap.bucket_sums.contains_key(bucket) && *total != 0 {
            bad.add(|| format!("bucket {bucket:?}: total {total} but no rows"));
        }
    }
    if snap.bad_pads > 0 {
        bad.add(|| format!("{} rows of a have the wrong padding", snap.bad_pads));
    }
    // Totals reported to clients are running totals: distinct within a bucket (two commits that
    // saw the same total would be a lost update) and never above the final total.
    let mut reported: HashMap<(u32, u32), Vec<(i64, u64)>> = HashMap::new();
    for (k, ack) in &logs.acks {
        match ack.committed {
            None => {
                if snap.a.contains_key(k) || snap.b.contains_key(k) || snap.c.contains_key(k) {
                    bad.add(|| format!("key {k} was acknowledged as aborted but is present"));
                }
            }
            Some(total) => {
                let partition = workload.c.partition_of(k);
                reported
                    .entry((partition, workload.bucket_of(partition, *k)))
                    .or_default()
                    .push((total, *k));
            }
        }
    }
    for (bucket, mut totals) in reported {
        totals.sort_unstable();
        let last = snap.totals.get(&bucket).copied().unwrap_or(0);
        for pair in totals.windows(2) {
            if pair[0].0 == pair[1].0 {
                bad.add(|| {
                    format!(
                        "keys {} and {} both reported bucket {bucket:?} total {} (a lost update)",
                        pair[0].1, pair[1].1, pair[0].0
                    )
                });
            }
        }
        if let Some((max, k)) = totals.last()
            && *max > last
        {
            bad.add(|| {
                format!("key {k} reported bucket {bucket:?} total {max} above the final {last}")
            });
        }
    }
    bad
}
