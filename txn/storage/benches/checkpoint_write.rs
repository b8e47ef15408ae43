//! What a large checkpoint write does to the epoch log beside it: one thread appends epoch
//! records back to back (each durable before the next, as the durability thread does) while
//! another writes a checkpoint in chunks and completes it, as the checkpoint thread does. Prints
//! the checkpoint's timings (chunk writes, completion) and the appends' latency percentiles
//! while the rows were written, while the checkpoint completed, and with no checkpoint, then
//! the slowest appends (50 ms or more) with how far into their phase each began and how long
//! before the phase ended (a completion's commit is its last moments).
//!
//! Two checkpoints: the first after a bulk load (every row, like the run's first checkpoint
//! after the harness's load), then one of a tenth of the rows changed. After each, the log it
//! covers is truncated as the runtime does: in steps of `VMSDB_BENCH_TRUNCATE_STEP` epochs
//! (default 64, the runtime's `CHECKPOINT_TRUNCATE_EPOCHS_PER_STEP`; 0: in one call), each
//! under the appender's turn handed over fairly.
//!
//! Run: `cargo bench -p txn-storage --bench checkpoint_write`. `VMSDB_BENCH_ROWS` sets the
//! rows (default 1,000,000); `VMSDB_BENCH_DIR` puts the store on the disk under test (default:
//! the system temp directory; a tmpfs makes fsync free and the numbers meaningless).
//! `VMSDB_BENCH_MERGE_STEP_ROWS` sets the rows of one step of the completion's merge (default
//! `limits::REDB_MERGE_STEP_ROWS`; 0: the whole merge in one step, as one transaction).
//! `RUST_LOG=txn_storage::redb_storage=debug` prints each completion's steps and its longest
//! step (`=trace`: every step).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use txn_storage::conformance::batch_for;
use txn_storage::{CheckpointRow, RedbStorage, Storage};

/// Rows per `write_checkpoint_rows` call, as the runtime's `CHECKPOINT_CHUNK_ROWS_MAX`.
const CHUNK_ROWS: usize = 4_096;
/// Bytes of one epoch record: a busy transfer epoch.
const EPOCH_BYTES: usize = 60 * 1024;

/// What the checkpoint thread is doing while an append runs.
const IDLE: u8 = 0;
const WRITING_ROWS: u8 = 1;
const COMPLETING: u8 = 2;
const TRUNCATING: u8 = 3;
const PHASES: [&str; 4] = [
    "no checkpoint",
    "checkpoint rows",
    "checkpoint completion",
    "log truncation",
];

fn bench_dir() -> PathBuf {
    std::env::var_os("VMSDB_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// Row `idx` of checkpoint `checkpoint_epoch`: a 16-byte key (a partition and table prefix and
/// an encoded account id, as the transfer workload's) and a 40-byte value.
fn row(idx: u64, checkpoint_epoch: u64) -> CheckpointRow {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&(idx % 4).to_be_bytes()[4..]);
    key.extend_from_slice(&[0, 1]);
    key.extend_from_slice(&idx.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    (
        key,
        Some(batch_for(checkpoint_epoch * 10_000_000 + idx, 40)),
    )
}

/// The log as the checkpoint thread sees it: the appender's turn, the last appended epoch,
/// the lowest epoch still logged and the truncation's step.
struct Log {
    turn: Arc<Mutex<()>>,
    appended: Arc<AtomicU64>,
    start: Mutex<u64>,
    truncate_step: u64,
}

/// Latencies of the appends, by what the checkpoint thread was doing, in microseconds, and
/// when each of the slowest began within its phase.
#[derive(Default)]
struct AppendLatencies {
    by_phase: [Vec<u64>; 4],
    /// (latency µs, phase, when it began) of every append slower than `SLOW_MICROS`.
    slow: Vec<(u64, usize, Instant)>,
    /// When the appender first saw each phase begin: (phase, at).
    phase_changes: Vec<(usize, Instant)>,
}

/// Appends at least this slow are listed with when they began within their phase.
const SLOW_MICROS: u64 = 50_000;

impl AppendLatencies {
    fn print(&mut self) {
        for (phase, micros) in PHASES.iter().zip(self.by_phase.iter_mut()) {
            if micros.is_empty() {
                continue;
            }
            micros.sort_unstable();
            let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize] as f64 / 1e3;
            println!(
                "  appends during {phase:<22} {:>6}  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
                micros.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
        self.slow
            .sort_unstable_by_key(|slow| std::cmp::Reverse(slow.0));
        for &(micros, phase, began) in self.slow.iter().take(8) {
            // The phase's stretch this append fell in: the last change into it before it began,
            // and the next change after.
            let since = self
                .phase_changes
                .iter()
                .rev()
                .find(|(_, at)| *at <= began)
                .map_or(0.0, |(_, at)| (began - *at).as_secs_f64());
            let until = self
                .phase_changes
                .iter()
                .find(|(_, at)| *at > began)
                .map_or(f64::NAN, |(_, at)| (*at - began).as_secs_f64());
            println!(
                "  slow append {:>7.1} ms during {:<22} began {since:.2} s into it, {until:.2} s \
                 before it ended",
                micros as f64 / 1e3,
                PHASES[phase],
            );
        }
    }
}

/// Appends epochs from `first` until `stop`, recording each append's latency under the phase
/// the checkpoint thread was in when it began.
fn append_until(
    store: &RedbStorage,
    log_turn: &Mutex<()>,
    appended: &AtomicU64,
    stop: &AtomicBool,
    phase: &AtomicU8,
) -> AppendLatencies {
    let batch = batch_for(1, EPOCH_BYTES);
    let mut latencies = AppendLatencies::default();
    let mut epoch = 1;
    while !stop.load(Ordering::Acquire) {
        let in_phase = phase.load(Ordering::Acquire) as usize;
        let started = Instant::now();
        if latencies.phase_changes.last().map(|(p, _)| *p) != Some(in_phase) {
            latencies.phase_changes.push((in_phase, started));
        }
        let turn = log_turn.lock();
        store.append_epoch(epoch, &batch).expect("append");
        drop(turn);
        let micros = started.elapsed().as_micros() as u64;
        latencies.by_phase[in_phase].push(micros);
        if micros >= SLOW_MICROS {
            latencies.slow.push((micros, in_phase, started));
        }
        appended.store(epoch, Ordering::Release);
        epoch += 1;
    }
    latencies
}

/// Writes a checkpoint of rows `0..n_rows` (every `stride`-th) as of the last appended epoch
/// in chunks, completes it and truncates the log it covers, printing the timings.
fn write_checkpoint(store: &RedbStorage, log: &Log, n_rows: u64, stride: u64, phase: &AtomicU8) {
    let appended = &log.appended;
    let checkpoint_epoch = appended.load(Ordering::Acquire);
    let started = Instant::now();
    phase.store(WRITING_ROWS, Ordering::Release);
    let mut chunk_max = Duration::ZERO;
    let mut chunk: Vec<CheckpointRow> = Vec::with_capacity(CHUNK_ROWS);
    let mut n_chunks = 0;
    for idx in (0..n_rows).step_by(stride as usize) {
        chunk.push(row(idx, checkpoint_epoch));
        if chunk.len() == CHUNK_ROWS || idx + stride >= n_rows {
            let write = Instant::now();
            store
                .write_checkpoint_rows(checkpoint_epoch, &chunk)
                .expect("rows");
            chunk_max = chunk_max.max(write.elapsed());
            n_chunks += 1;
            chunk.clear();
        }
    }
    let rows_done = started.elapsed();
    phase.store(COMPLETING, Ordering::Release);
    let complete = Instant::now();
    store
        .complete_checkpoint(checkpoint_epoch)
        .expect("complete");
    let complete = complete.elapsed();
    phase.store(TRUNCATING, Ordering::Release);
    let truncate = Instant::now();
    let mut log_start = log.start.lock();
    while *log_start <= checkpoint_epoch {
        let below = match log.truncate_step {
            0 => checkpoint_epoch + 1,
            step => (*log_start + step).min(checkpoint_epoch + 1),
        };
        let turn = log.turn.lock();
        store.truncate_log_below(below).expect("truncate");
        parking_lot::MutexGuard::unlock_fair(turn);
        *log_start = below;
    }
    let truncate = truncate.elapsed();
    phase.store(IDLE, Ordering::Release);
    println!(
        "checkpoint of epoch {checkpoint_epoch}: {} rows in {n_chunks} chunks, {:.2} s (longest \
         chunk {:.1} ms), completion {:.2} s, log truncation {:.1} ms",
        n_rows.div_ceil(stride),
        rows_done.as_secs_f64(),
        chunk_max.as_secs_f64() * 1e3,
        complete.as_secs_f64(),
        truncate.as_secs_f64() * 1e3,
    );
}

fn main() {
    let Some(n_rows) = common::bench_rows(1_000_000) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let dir = tempfile::tempdir_in(bench_dir()).expect("bench dir");
    let store = Arc::new(RedbStorage::open(dir.path()).expect("open redb"));
    let merge_step_rows = std::env::var("VMSDB_BENCH_MERGE_STEP_ROWS")
        .ok()
        .and_then(|rows| rows.parse().ok())
        .map(|rows: usize| if rows == 0 { usize::MAX } else { rows })
        .unwrap_or(txn_storage::limits::REDB_MERGE_STEP_ROWS);
    let merge_step_bytes = match merge_step_rows {
        usize::MAX => usize::MAX,
        _ => txn_storage::limits::REDB_MERGE_STEP_BYTES,
    };
    store.set_merge_step(merge_step_rows, merge_step_bytes);
    let phase = Arc::new(AtomicU8::new(IDLE));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Log {
        turn: Arc::new(Mutex::new(())),
        appended: Arc::new(AtomicU64::new(0)),
        start: Mutex::new(1),
        truncate_step: std::env::var("VMSDB_BENCH_TRUNCATE_STEP")
            .ok()
            .and_then(|step| step.parse().ok())
            .unwrap_or(64),
    };
    println!(
        "{n_rows} rows, log truncated in steps of {} epochs (0: at once), merge steps of {} rows",
        log.truncate_step,
        match merge_step_rows {
            usize::MAX => "all".to_string(),
            rows => rows.to_string(),
        }
    );
    let appender = std::thread::spawn({
        let (store, phase, stop) = (store.clone(), phase.clone(), stop.clone());
        let (turn, appended) = (log.turn.clone(), log.appended.clone());
        move || append_until(&store, &turn, &appended, &stop, &phase)
    });
    // A quiet stretch first, so the appends without a checkpoint have a baseline.
    std::thread::sleep(Duration::from_secs(2));
    write_checkpoint(&store, &log, n_rows, 1, &phase);
    std::thread::sleep(Duration::from_secs(2));
    write_checkpoint(&store, &log, n_rows, 10, &phase);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Release);
    let mut latencies = appender.join().expect("appender");
    println!("{} epochs appended", log.appended.load(Ordering::Acquire));
    latencies.print();
}
