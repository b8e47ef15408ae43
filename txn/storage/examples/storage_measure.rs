//! Measures the embedded backends on vmsdb's access pattern and prints a Markdown table.
//!
//! Run: `cargo run --release -p txn-storage --features fjall,postgres --example storage_measure
//! -- [rows] [dir]` (defaults: 1,000,000 rows, the system temp directory; a backend whose
//! feature is not enabled is skipped; `STORAGE_MEASURE_BACKENDS=redb,postgres` picks backends,
//! default `redb,fjall`). The data directory must be on the disk under test, not a tmpfs, or
//! the fsync numbers mean nothing. `postgres` runs a private server (`postgres_instance`, with
//! `fsync` and `synchronous_commit` on) whose data directory is in the system temp directory,
//! reached over a unix socket; its bytes on disk and crash reopen are not measured (the
//! server, not the client, owns the files).
//!
//! Per backend, on a fresh directory: appends of 20 KB and 500 KB epoch batches (each one fsync),
//! reading 1000 logged epochs back, a first checkpoint of `rows` rows, an incremental checkpoint
//! changing every row, an incremental checkpoint of 10,000 rows, reading the merged checkpoint
//! back, reopening the store, and the bytes on disk. Keys are 16 bytes, values 40 bytes,
//! written in chunks of 10,000 rows in a scattered order, as a hash-map walk would produce them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[cfg(feature = "fjall")]
use txn_storage::FjallStorage;
#[cfg(feature = "postgres")]
use txn_storage::PostgresStorage;
use txn_storage::{CheckpointRow, RedbStorage, Storage};

const CHUNK_ROWS: usize = 10_000;
const SMALL_BATCH_BYTES: usize = 20 * 1024;
const LARGE_BATCH_BYTES: usize = 500 * 1024;
const N_SMALL_APPENDS: u64 = 1000;
const N_LARGE_APPENDS: u64 = 100;
const N_INCREMENTAL_ROWS: usize = 10_000;

fn open_any(backend: &str, dir: &Path) -> Box<dyn Storage> {
    match backend {
        #[cfg(feature = "fjall")]
        "fjall" => Box::new(FjallStorage::open(dir).expect("open fjall")),
        _ => Box::new(RedbStorage::open(dir).expect("open redb")),
    }
}

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("crash-child") {
        // Appends one epoch to the store and exits without closing it, like a killed process.
        let backend = args.nth(1).expect("backend");
        let dir = PathBuf::from(args.next().expect("dir"));
        let store = open_any(&backend, &dir);
        let next = store.last_epoch().expect("last").map_or(1, |last| last + 1);
        store
            .append_epoch(next, &batch(next, SMALL_BATCH_BYTES))
            .expect("append");
        std::process::exit(0);
    }
    let n_rows: usize = args
        .next()
        .map(|arg| arg.replace('_', "").parse().expect("rows: a number"))
        .unwrap_or(1_000_000);
    let base: PathBuf = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    println!("rows={n_rows} dir={}", base.display());
    let mut lines = Vec::new();
    let only = std::env::var("STORAGE_MEASURE_BACKENDS").unwrap_or_else(|_| "redb,fjall".into());
    for backend in ["redb", "fjall", "postgres"] {
        if !only.split(',').any(|b| b == backend) {
            continue;
        }
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let path = dir.path().join(backend);
        let results = match backend {
            "redb" => measure(&path, n_rows, true, |dir| {
                RedbStorage::open(dir).expect("open redb")
            }),
            #[cfg(feature = "postgres")]
            "postgres" => measure_postgres(&path, n_rows),
            #[cfg(feature = "fjall")]
            "fjall" => measure(&path, n_rows, true, |dir| {
                FjallStorage::open(dir).expect("open fjall")
            }),
            _ => {
                eprintln!("{backend}: not compiled in (add --features {backend})");
                continue;
            }
        };
        for (what, value) in results {
            lines.push((backend, what, value));
        }
    }
    println!("| measurement | redb | fjall | postgres |");
    println!("|---|---|---|---|");
    let mut whats: Vec<&String> = Vec::new();
    for line in &lines {
        if !whats.contains(&&line.1) {
            whats.push(&line.1);
        }
    }
    for what in whats {
        let value_of = |backend: &str| {
            lines
                .iter()
                .find(|l| l.0 == backend && &l.1 == what)
                .map_or("-".to_string(), |l| l.2.clone())
        };
        println!(
            "| {what} | {} | {} | {} |",
            value_of("redb"),
            value_of("fjall"),
            value_of("postgres")
        );
    }
}

/// A scattered but deterministic permutation step, so writes do not arrive in key order.
fn scatter(idx: usize, n: usize) -> usize {
    // 2_654_435_761 is odd and n is not a multiple of it for our sizes, so this is a bijection
    // whenever gcd(multiplier, n) == 1, which holds for powers of ten.
    (idx.wrapping_mul(2_654_435_761) + 12_345) % n
}

fn row_key(idx: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&((idx % 64) as u32).to_be_bytes());
    key.extend_from_slice(&(idx as u64).to_be_bytes());
    key.extend_from_slice(b"acct");
    key
}

fn row_value(idx: usize, version: u64) -> Vec<u8> {
    let seed = (idx as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ version;
    (0..40u64)
        .map(|byte| (seed.rotate_left((byte * 7) as u32) ^ byte) as u8)
        .collect()
}

fn batch(epoch: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|idx| ((idx as u64).wrapping_mul(31) ^ epoch.wrapping_mul(17)) as u8)
        .collect()
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

fn percentile(sorted: &[Duration], pct: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * pct).round() as usize;
    sorted[idx]
}

fn append_many<S: Storage>(
    store: &S,
    first_epoch: u64,
    n: u64,
    len: usize,
    out: &mut Vec<(String, String)>,
) {
    let mut times = Vec::new();
    let started = Instant::now();
    for epoch in first_epoch..first_epoch + n {
        let bytes = batch(epoch, len);
        let t = Instant::now();
        store.append_epoch(epoch, &bytes).expect("append");
        times.push(t.elapsed());
    }
    let total = started.elapsed();
    times.sort();
    let label = format!("append {} KB + fsync", len / 1024);
    out.push((format!("{label}: median"), ms(percentile(&times, 0.5))));
    out.push((format!("{label}: p99"), ms(percentile(&times, 0.99))));
    out.push((
        format!("{label}: throughput"),
        format!(
            "{:.0} MB/s",
            (n as f64 * len as f64) / total.as_secs_f64() / 1e6
        ),
    ));
}

fn write_checkpoint<S: Storage>(
    store: &S,
    epoch: u64,
    indexes: &[usize],
    version: u64,
) -> Duration {
    let started = Instant::now();
    let mut rows_elapsed = Duration::ZERO;
    for chunk in indexes.chunks(CHUNK_ROWS) {
        let rows: Vec<CheckpointRow> = chunk
            .iter()
            .map(|&idx| (row_key(idx), Some(row_value(idx, version))))
            .collect();
        let t = Instant::now();
        store.write_checkpoint_rows(epoch, &rows).expect("rows");
        rows_elapsed += t.elapsed();
    }
    let t = Instant::now();
    store.complete_checkpoint(epoch).expect("complete");
    eprintln!(
        "{}: checkpoint {epoch} of {} rows: write_checkpoint_rows {:?} complete {:?}",
        store.name(),
        indexes.len(),
        rows_elapsed,
        t.elapsed()
    );
    started.elapsed()
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).expect("read dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// Measures PostgreSQL on a private server started for the run and stopped after it.
#[cfg(feature = "postgres")]
fn measure_postgres(dir: &Path, n_rows: usize) -> Vec<(String, String)> {
    use txn_storage::postgres_instance::{self, PgInstance};
    let bins = postgres_instance::find_binaries().expect("PostgreSQL server binaries");
    let mut server = PgInstance::start(&bins, 20, |line| eprintln!("{line}")).expect("start");
    server
        .wait_until_ready(Duration::from_secs(60))
        .expect("server ready");
    let config = server.config_string();
    let results = measure(dir, n_rows, false, |_| {
        PostgresStorage::open(&config).expect("open postgres")
    });
    server.stop();
    results
}

/// Runs every measurement on the store `open` opens in `dir`; `files` says whether the store
/// lives in `dir` (its bytes on disk and a reopen after a crashed writer are measured too).
fn measure<S: Storage>(
    dir: &Path,
    n_rows: usize,
    files: bool,
    open: impl Fn(&Path) -> S,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let store = open(dir);
    eprintln!("{}: appends", store.name());
    append_many(&store, 1, N_SMALL_APPENDS, SMALL_BATCH_BYTES, &mut out);
    append_many(
        &store,
        1 + N_SMALL_APPENDS,
        N_LARGE_APPENDS,
        LARGE_BATCH_BYTES,
        &mut out,
    );

    let started = Instant::now();
    let mut n_read = 0u64;
    store
        .read_epochs(1, &mut |epoch, _| {
            n_read += 1;
            if epoch == N_SMALL_APPENDS {
                return Err(txn_storage::StorageError::Visitor("done".into()));
            }
            Ok(())
        })
        .ok();
    assert_eq!(n_read, N_SMALL_APPENDS);
    out.push(("read 1000 epochs of 20 KB".into(), ms(started.elapsed())));

    eprintln!("{}: checkpoints", store.name());
    let all: Vec<usize> = (0..n_rows).map(|idx| scatter(idx, n_rows)).collect();
    let first = write_checkpoint(&store, 10, &all, 1);
    out.push((format!("checkpoint {n_rows} rows (first)"), secs(first)));
    let again = write_checkpoint(&store, 20, &all, 2);
    out.push((
        format!("checkpoint {n_rows} changed rows (incremental)"),
        secs(again),
    ));
    let some: Vec<usize> = (0..N_INCREMENTAL_ROWS)
        .map(|idx| scatter(idx * (n_rows / N_INCREMENTAL_ROWS).max(1), n_rows))
        .collect();
    let small = write_checkpoint(&store, 30, &some, 3);
    out.push((
        format!("checkpoint {N_INCREMENTAL_ROWS} changed rows over {n_rows}"),
        ms(small),
    ));

    let started = Instant::now();
    let mut n_live = 0usize;
    let latest = store
        .read_latest_checkpoint(&mut |_, _| {
            n_live += 1;
            Ok(())
        })
        .expect("read checkpoint");
    assert_eq!((latest, n_live), (Some(30), n_rows));
    out.push((
        format!("read checkpoint of {n_rows} rows"),
        secs(started.elapsed()),
    ));

    let started = Instant::now();
    store.truncate_log_below(31).expect("truncate");
    out.push(("truncate 1100 epochs".into(), ms(started.elapsed())));
    drop(store);
    if !files {
        let started = Instant::now();
        let store = open(dir);
        out.push(("reopen (clean shutdown)".into(), ms(started.elapsed())));
        drop(store);
        return out;
    }
    out.push((
        "bytes on disk after".into(),
        format!("{:.0} MB", dir_bytes(dir) as f64 / 1e6),
    ));

    let started = Instant::now();
    let store = open(dir);
    out.push(("reopen (clean shutdown)".into(), ms(started.elapsed())));
    let name = store.name();
    drop(store);

    let status = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["crash-child", name])
        .arg(dir)
        .status()
        .expect("crash child");
    assert!(status.success());
    let started = Instant::now();
    let store = open(dir);
    let reopened = started.elapsed();
    let mut n_live = 0usize;
    store
        .read_latest_checkpoint(&mut |_, _| {
            n_live += 1;
            Ok(())
        })
        .expect("read checkpoint");
    assert_eq!(n_live, n_rows);
    out.push(("reopen after a crash".into(), ms(reopened)));
    out.push((
        format!("reopen after a crash + read {n_rows}-row checkpoint"),
        secs(started.elapsed()),
    ));
    drop(store);
    out
}
