//! How long a large checkpoint takes to write into PostgreSQL and to complete, as the runtime
//! writes one: chunks of `CHUNK_ROWS` rows (the runtime's `CHECKPOINT_CHUNK_ROWS_MAX`), each one
//! `write_checkpoint_rows` call, then one `complete_checkpoint`. Three checkpoints into one
//! private server (`postgres_instance`: a temporary directory on the disk, fsync on):
//!
//! 1. the first, after a bulk load: every row (`VMSDB_BENCH_ROWS`, default 2,000,000);
//! 2. over it: half the keys changed and a twentieth deleted (the pruning of the versions they
//!    replace is part of its completion);
//! 3. a small one over the large table: 1 % of the keys changed (a steady-state checkpoint).
//!
//! Then the latest checkpoint is read back (as recovery does) and its rows counted against the
//! model. Then a series of `SMALL_SERIES` more small checkpoints, as a cluster under load
//! writes them (each 1 % of the keys changed and 0.01 % deleted), and the read again. Prints
//! the chunk write times (mean, p50, p99, max), their total and the completion's, and for the
//! series the completions' mean and max.
//!
//! Run: `cargo bench -p txn-storage --features postgres --bench postgres_checkpoint`.

mod common;

use std::time::{Duration, Instant};

use txn_storage::conformance::batch_for;
use txn_storage::postgres_instance;
use txn_storage::{CheckpointRow, PostgresStorage, Storage};

/// Rows per `write_checkpoint_rows` call, as the runtime's `CHECKPOINT_CHUNK_ROWS_MAX`
/// (`VMSDB_BENCH_CHUNK_ROWS` sets another).
const CHUNK_ROWS: usize = 4_096;

fn chunk_rows() -> usize {
    std::env::var("VMSDB_BENCH_CHUNK_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CHUNK_ROWS)
}

/// The 16-byte key of row `idx`: a partition and table prefix and an encoded account id, as the
/// transfer workload's, scattered over the key space.
fn key(idx: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&(idx % 8).to_be_bytes()[4..]);
    key.extend_from_slice(&[0, 1]);
    key.extend_from_slice(&idx.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

/// Row `idx`'s value in checkpoint `version`: 16 to 40 bytes.
fn value(idx: u64, version: u64) -> Vec<u8> {
    batch_for(version * 10_000_000 + idx, 16 + (idx % 25) as usize)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Small checkpoints written after the third.
const SMALL_SERIES: u64 = 12;

/// Writes `rows` as checkpoint `epoch` in chunks and completes it; prints the timings and
/// returns the completion's.
fn checkpoint(
    store: &PostgresStorage,
    label: &str,
    epoch: u64,
    rows: &[CheckpointRow],
) -> Duration {
    let chunk_rows = chunk_rows();
    let mut chunks = Vec::with_capacity(rows.len() / chunk_rows + 1);
    let started = Instant::now();
    for chunk in rows.chunks(chunk_rows) {
        let t = Instant::now();
        store
            .write_checkpoint_rows(epoch, chunk)
            .expect("write rows");
        chunks.push(t.elapsed());
    }
    let written = started.elapsed();
    let t = Instant::now();
    store.complete_checkpoint(epoch).expect("complete");
    let completed = t.elapsed();
    chunks.sort_unstable();
    let mean = written / chunks.len().max(1) as u32;
    println!(
        "{label}: {} rows in {} chunks: written in {:.2} s (chunk mean {:.1} ms, p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms), completed in {:.2} s, total {:.2} s",
        rows.len(),
        chunks.len(),
        written.as_secs_f64(),
        mean.as_secs_f64() * 1e3,
        percentile(&chunks, 50).as_secs_f64() * 1e3,
        percentile(&chunks, 99).as_secs_f64() * 1e3,
        chunks.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        completed.as_secs_f64(),
        (written + completed).as_secs_f64(),
    );
    completed
}

/// Reads the latest checkpoint back as recovery does; checks its epoch and row count.
fn read_back(store: &PostgresStorage, epoch: u64, expected: u64) {
    let t = Instant::now();
    let mut n_read = 0u64;
    let latest = store
        .read_latest_checkpoint(&mut |_, _| {
            n_read += 1;
            Ok(())
        })
        .expect("read");
    println!(
        "read back checkpoint {latest:?}: {n_read} rows in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(latest, Some(epoch));
    assert_eq!(n_read, expected, "rows read back");
}

fn main() {
    let Some(n_rows) = common::bench_rows(2_000_000) else {
        return;
    };
    let Some(server) = postgres_instance::for_test("postgres_checkpoint bench", 20) else {
        return;
    };
    let store = PostgresStorage::open_in_schema(&server.config_string(), "bench").expect("open");

    let first: Vec<CheckpointRow> = (0..n_rows).map(|i| (key(i), Some(value(i, 1)))).collect();
    checkpoint(&store, "1 first (every row)", 1, &first);
    drop(first);

    // Half the keys changed, a twentieth of them deleted; the survivors keep version 1.
    let second: Vec<CheckpointRow> = (0..n_rows)
        .filter(|i| i % 2 == 0 || i % 20 == 1)
        .map(|i| (key(i), (i % 20 != 1).then(|| value(i, 2))))
        .collect();
    checkpoint(&store, "2 half changed, 5 % deleted", 2, &second);
    drop(second);

    let third: Vec<CheckpointRow> = (0..n_rows)
        .filter(|i| i % 100 == 4)
        .map(|i| (key(i), Some(value(i, 3))))
        .collect();
    checkpoint(&store, "3 1 % changed", 3, &third);
    drop(third);

    let mut expected = n_rows - (0..n_rows).filter(|i| i % 20 == 1).count() as u64;
    read_back(&store, 3, expected);

    // Checkpoint 4 + j: the keys i % 100 == 2j + 5 written (odd: changed, or written again
    // if the second checkpoint deleted them), the keys i % 10,000 == 2j + 2 deleted (even:
    // live until then, and not among the written).
    let mut completions = Vec::new();
    for j in 0..SMALL_SERIES {
        let rows: Vec<CheckpointRow> = (0..n_rows)
            .filter_map(|i| {
                if i % 100 == 2 * j + 5 {
                    expected += u64::from(i % 20 == 1);
                    Some((key(i), Some(value(i, 4 + j))))
                } else if i % 10_000 == 2 * j + 2 {
                    expected -= 1;
                    Some((key(i), None))
                } else {
                    None
                }
            })
            .collect();
        let label = format!("{} small {}/{SMALL_SERIES}", 4 + j, j + 1);
        completions.push(checkpoint(&store, &label, 4 + j, &rows));
    }
    let max = completions.iter().max().copied().unwrap_or_default();
    let mean = completions.iter().sum::<Duration>() / SMALL_SERIES as u32;
    println!(
        "{SMALL_SERIES} small checkpoints: completion mean {:.3} s, max {:.3} s",
        mean.as_secs_f64(),
        max.as_secs_f64()
    );
    read_back(&store, 3 + SMALL_SERIES, expected);
    drop(store);
    server.stop();
}
