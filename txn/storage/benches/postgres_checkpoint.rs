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
//! model. Prints the chunk write times (mean, p50, p99, max), their total and the completion's.
//!
//! Run: `cargo bench -p txn-storage --features postgres --bench postgres_checkpoint`.

mod common;

use std::time::{Duration, Instant};

use txn_storage::conformance::batch_for;
use txn_storage::postgres_instance;
use txn_storage::{CheckpointRow, PostgresStorage, Storage};

/// Rows per `write_checkpoint_rows` call, as the runtime's `CHECKPOINT_CHUNK_ROWS_MAX`.
const CHUNK_ROWS: usize = 4_096;

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

/// Writes `rows` as checkpoint `epoch` in chunks and completes it; prints the timings.
fn checkpoint(store: &PostgresStorage, label: &str, epoch: u64, rows: &[CheckpointRow]) {
    let mut chunks = Vec::with_capacity(rows.len() / CHUNK_ROWS + 1);
    let started = Instant::now();
    for chunk in rows.chunks(CHUNK_ROWS) {
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

    let t = Instant::now();
    let mut n_read = 0u64;
    let latest = store
        .read_latest_checkpoint(&mut |_, _| {
            n_read += 1;
            Ok(())
        })
        .expect("read");
    let expected = n_rows - (0..n_rows).filter(|i| i % 20 == 1).count() as u64;
    println!(
        "read back checkpoint {latest:?}: {n_read} rows in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(latest, Some(3));
    assert_eq!(n_read, expected, "rows read back");
    drop(store);
    server.stop();
}
