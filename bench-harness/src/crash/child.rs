//! One life of the crash workload, in the child process `crash-test` kills.
//!
//! It opens the store (recovering whatever the previous life left), resubmits with their
//! original ids the requests earlier lives sent but never saw answered, and then runs
//! `--clients` closed-loop clients until it is killed. Every request is written to `sent.log`
//! before it is submitted and its outcome to `acks.log` before it counts as acknowledged.
//!
//! Machine-readable lines on stdout, for the parent:
//!
//! ```text
//! opened seconds=S                          the store is open (redb repaired it if needed)
//! recovered checkpoint_epoch=E|none rows_loaded=N epochs_replayed=M dedup_entries=D seconds=S
//! ready pending=P                           clients are starting; P earlier requests resubmitted
//! resubmitted n=N deduplicated=D executed=X those resubmissions are answered
//! ckpt_begin epoch=E                        a checkpoint's first storage write is starting
//! ckpt_done epoch=E rows=N ms=T             it is complete
//! status acked=N ckpt_started=A ckpt_done=B epochs=E   every STATUS_EVERY
//! error <message>                           and exit code 3
//! ```

use super::CrashChildArgs;
use super::app::{CrashWorkload, aborts, key_of, mix, value_of};
use super::files::{
    Ack, CLIENTS_PER_LIFE_MAX, Logs, RunDir, RunParams, append_line, open_log_for_append,
};
use super::observed::{CheckpointCounters, ObservedStorage};
use std::fs::File;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use txn::storage::EmbeddedStorage;
use txn::{AbortReason, Client, Fallback, RecoverFrom, Runtime, RuntimeConfig};

/// How often the child prints a status line.
const STATUS_EVERY: Duration = Duration::from_millis(5);

/// One request in `ACK_DELAY_ONE_IN` waits `ACK_DELAY` between its durable outcome and its ack
/// line, like a slow client: a kill in that gap leaves a transaction that is durable but was
/// never acknowledged, whose resubmission must return the original outcome. Without the gap
/// such kills are rare (replies follow the fsync within microseconds).
const ACK_DELAY_ONE_IN: u64 = 4;
const ACK_DELAY: Duration = Duration::from_millis(1);

/// A child that was not killed after this long stops by itself (its parent is gone).
const LIFE_MAX: Duration = Duration::from_secs(600);

/// The runtime configuration every life and the final recovery use.
pub fn runtime_config(
    storage: Arc<dyn txn::storage::Storage>,
    params: &RunParams,
    checkpoint_every: u64,
    recover_from: RecoverFrom,
) -> RuntimeConfig {
    // `..default()` keeps this compiling while txn's config grows fields.
    #[allow(clippy::needless_update)]
    RuntimeConfig {
        storage,
        checkpoint_every_epochs: checkpoint_every,
        fallback: if params.next_epoch_fallback {
            Fallback::NextEpoch
        } else if params.ordered_fallback {
            Fallback::Ordered
        } else {
            Fallback::Serial
        },
        // The whole log stays, so the final check can replay it from epoch 1.
        truncate_log_after_checkpoint: false,
        recover_from,
        ..RuntimeConfig::in_memory()
    }
}

/// Runs one life; returns only on an error (the parent kills a healthy child).
pub fn crash_child(args: &CrashChildArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))
        .and_then(|tokio| tokio.block_on(life(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("error {e}");
            ExitCode::from(3)
        }
    }
}

/// The shared state of the clients of one life.
struct Shared {
    workload: CrashWorkload,
    client: Client<super::app::CrashApp>,
    seed: u64,
    sent: Mutex<File>,
    acks: Mutex<File>,
    acked: AtomicU64,
}

impl Shared {
    /// Submits `k` (with its id) and records the outcome; returns the outcome's epoch.
    async fn insert_and_record(&self, k: u64, resubmitted: bool) -> Result<u64, String> {
        let v = value_of(self.seed, k);
        let outcome = self
            .workload
            .insert(&self.client, k, v)
            .await
            .map_err(|e| format!("request for key {k} failed: {e}"))?;
        let epoch = outcome.tid.epoch();
        let committed = match outcome.result {
            Ok(Some(out)) if out.k == k && out.v == v => Some(out.bucket_total),
            Ok(other) => {
                return Err(format!(
                    "key {k} (value {v}) committed with output {other:?}, expected key {k} and value {v}"
                ));
            }
            Err(AbortReason::User { .. }) if aborts(v) => None,
            Err(reason) => {
                return Err(format!(
                    "key {k} (value {v}) aborted unexpectedly: {reason}"
                ));
            }
        };
        let ack = Ack {
            v,
            committed,
            epoch,
            resubmitted,
        };
        if mix(k ^ 0x0061_636b).is_multiple_of(ACK_DELAY_ONE_IN) {
            tokio::time::sleep(ACK_DELAY).await;
        }
        let line = ack.line(k);
        append_line(
            &mut self.acks.lock().unwrap_or_else(|e| e.into_inner()),
            &line,
        )
        .map_err(|e| format!("cannot append to acks.log: {e}"))?;
        self.acked.fetch_add(1, Ordering::SeqCst);
        Ok(epoch)
    }

    /// A closed-loop client: sends new requests until the process is killed.
    async fn run_client(&self, client_id: u64) -> Result<(), String> {
        for seq in 0.. {
            let k = key_of(client_id, seq);
            append_line(
                &mut self.sent.lock().unwrap_or_else(|e| e.into_inner()),
                &format!("{k}\n"),
            )
            .map_err(|e| format!("cannot append to sent.log: {e}"))?;
            self.insert_and_record(k, false).await?;
        }
        Ok(())
    }
}

fn fail_process(message: String) -> ! {
    println!("error {message}");
    std::process::exit(3);
}

async fn life(args: &CrashChildArgs) -> Result<(), String> {
    let dir = RunDir::new(&args.dir);
    let params = dir
        .read_params()
        .map_err(|e| format!("cannot read the run parameters: {e}"))?;
    let workload = CrashWorkload::new(params.partitions, params.pad_bytes as usize)
        .map_err(|e| e.to_string())?;
    let logs = Logs::read(&dir).map_err(|e| format!("cannot read the logs: {e}"))?;
    let pending = logs.unacknowledged();
    let sent = open_log_for_append(&dir.sent()).map_err(|e| format!("sent.log: {e}"))?;
    let acks = open_log_for_append(&dir.acks()).map_err(|e| format!("acks.log: {e}"))?;

    let opening = Instant::now();
    let store = EmbeddedStorage::open(dir.store()).map_err(|e| format!("open failed: {e}"))?;
    println!("opened seconds={:.6}", opening.elapsed().as_secs_f64());
    let counters = Arc::new(CheckpointCounters::default());
    let storage = Arc::new(ObservedStorage::new(store, counters.clone(), |line| {
        println!("{line}")
    }));
    let config = runtime_config(
        storage,
        &params,
        params.checkpoint_every,
        RecoverFrom::LatestCheckpoint,
    );
    let rt = Runtime::start(workload.app.clone(), config)
        .await
        .map_err(|e| format!("start failed: {e}"))?;
    let report = rt.recovery_report().clone();
    println!(
        "recovered checkpoint_epoch={} rows_loaded={} epochs_replayed={} dedup_entries={} seconds={:.6}",
        report
            .checkpoint_epoch
            .map_or_else(|| "none".to_string(), |e| e.to_string()),
        report.rows_loaded,
        report.epochs_replayed,
        report.dedup_window_entries,
        report.duration.as_secs_f64()
    );
    let recovered_epoch = report.checkpoint_epoch.unwrap_or(0) + report.epochs_replayed;

    let shared = Arc::new(Shared {
        client: rt.client(),
        workload,
        seed: params.seed,
        sent: Mutex::new(sent),
        acks: Mutex::new(acks),
        acked: AtomicU64::new(0),
    });
    println!("ready pending={}", pending.len());

    // Requests earlier lives sent and never saw answered: the same id again. Each must either
    // return the original outcome (it was durable) or run now, never both.
    let resubmit = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let tasks: Vec<_> = pending
                .into_iter()
                .map(|k| {
                    let shared = shared.clone();
                    tokio::spawn(async move { shared.insert_and_record(k, true).await })
                })
                .collect();
            let (mut deduplicated, mut executed) = (0u64, 0u64);
            for task in tasks {
                match task.await {
                    Ok(Ok(epoch)) if epoch <= recovered_epoch => deduplicated += 1,
                    Ok(Ok(_)) => executed += 1,
                    Ok(Err(e)) => fail_process(e),
                    Err(e) => fail_process(format!("a resubmission task failed: {e}")),
                }
            }
            println!(
                "resubmitted n={} deduplicated={deduplicated} executed={executed}",
                deduplicated + executed
            );
        })
    };
    drop(resubmit);

    let first_client = args.life * CLIENTS_PER_LIFE_MAX;
    for w in 0..u64::from(params.clients) {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.run_client(first_client + w).await {
                fail_process(e);
            }
        });
    }

    let born = Instant::now();
    while born.elapsed() < LIFE_MAX {
        tokio::time::sleep(STATUS_EVERY).await;
        let stats = rt.stats().snapshot();
        println!(
            "status acked={} ckpt_started={} ckpt_done={} epochs={}",
            shared.acked.load(Ordering::SeqCst),
            counters.started.load(Ordering::SeqCst),
            counters.completed.load(Ordering::SeqCst),
            stats.epochs
        );
    }
    Err(format!(
        "not killed within {LIFE_MAX:?}; is the parent gone?"
    ))
}
