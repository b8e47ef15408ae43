//! Log append: encoding an epoch's log record and appending it to storage.
//!
//! The record is that of a real epoch of N ledger transfers (`services::ledger`, N = 1,000 and
//! 10,000, accounts and entries uniform over 1,000,000), built and encoded by the production
//! code through `txn::bench_api` (the durability thread's rmp-serde `EpochRecordRef`). Its
//! size per transaction is printed once to stderr.
//!
//! - `log_encode/rmp_serde/<N>`: encoding the record (rmp-serde), into a reused buffer.
//! - `log_encode/envelope_crc32c/<N>`: wrapping it in the checksummed envelope
//!   (`txn::storage::record::encode`: header + CRC-32C + copy), what every backend does.
//! - `log_append_memory/append_epochs/<N>`: `Storage::append_epochs` of one epoch on
//!   `MemoryStorage` (envelope, ordering check, map insert).
//! - `log_append_redb/append_epochs/<N>` and `log_append_redb/group_of_4/<N>`:
//!   `Storage::append_epochs` of one epoch, and of four epochs in one write (the durability
//!   thread's group commit), on `EmbeddedStorage` (redb) in a temporary directory under
//!   `target/tmp`. Each call is one redb write transaction with a durable commit, so these are
//!   **fsync-bound**: they measure the disk more than our code, and run with only 10 samples.
//!
//! Every 256 appends the log is truncated (untimed: an empty checkpoint is completed and the log
//! below it dropped) so the store does not grow without bound. Throughput is in bytes of
//! encoded record (rmp-serde payload, before the 8-byte envelope header).
//!
//! Run: `cargo bench -p bench-harness --bench log_append -- --warm-up-time 1 --measurement-time 3`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use services::ledger::{Ledger, LedgerAppEvent, LedgerConfig, Transfer};
use std::hint::black_box;
use std::time::{Duration, Instant};
use txn::bench_api::{Sequenced, encode_epoch_record, request};
use txn::storage::{EmbeddedStorage, MemoryStorage, Storage, record};

const EPOCH_SIZES: [usize; 2] = [1_000, 10_000];
const N_ACCOUNTS: u64 = 1_000_000;
const TIMESTAMP_MS: u64 = 1_760_000_000_000;
/// Appends between two (untimed) log truncations.
const TRUNCATE_EVERY: u64 = 256;

/// The sequenced requests of an epoch of `n` transfers, as the sequencer logs them.
fn transfer_epoch(ledger: &Ledger, n: usize, seed: u64) -> Vec<Sequenced<LedgerAppEvent>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let r = ledger.transfer(Transfer {
                src_account: rng.random_range(0..N_ACCOUNTS),
                src_entry: rng.random_range(0..N_ACCOUNTS),
                dst_account: rng.random_range(0..N_ACCOUNTS),
                dst_entry: rng.random_range(0..N_ACCOUNTS),
                amount: rng.random_range(1..100),
            });
            {
                let (service, partition, event) = r.into_parts();
                request(service, partition, event)
            }
        })
        .collect()
}

fn encoded(epoch: u64, requests: &[Sequenced<LedgerAppEvent>]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_epoch_record(epoch, TIMESTAMP_MS, requests, &mut buf).expect("the record encodes");
    buf
}

/// Appends `group` copies of `payload` as consecutive epochs per timed call, `iters` times,
/// truncating the log now and then outside the timing.
fn append_loop(
    storage: &dyn Storage,
    next_epoch: &mut u64,
    payload: &[u8],
    group: usize,
    iters: u64,
) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..iters {
        let batch: Vec<(u64, &[u8])> = (0..group as u64)
            .map(|i| (*next_epoch + i, payload))
            .collect();
        let start = Instant::now();
        storage.append_epochs(&batch).expect("append");
        timed += start.elapsed();
        let last = *next_epoch + group as u64 - 1;
        *next_epoch += group as u64;
        if *next_epoch % TRUNCATE_EVERY < group as u64 {
            storage.complete_checkpoint(last).expect("checkpoint");
            storage.truncate_log_below(last + 1).expect("truncate");
        }
    }
    timed
}

fn log_append(c: &mut Criterion) {
    let ledger = Ledger::new(LedgerConfig::default()).expect("the ledger app builds");
    let epochs: Vec<(usize, Vec<Sequenced<LedgerAppEvent>>, Vec<u8>)> = EPOCH_SIZES
        .iter()
        .map(|&n| {
            let requests = transfer_epoch(&ledger, n, n as u64);
            let payload = encoded(1, &requests);
            eprintln!(
                "log record of {n} transfers: {} bytes, {:.1} bytes/transaction",
                payload.len(),
                payload.len() as f64 / n as f64
            );
            (n, requests, payload)
        })
        .collect();

    let mut group = c.benchmark_group("log_encode");
    for (n, requests, payload) in &epochs {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        let mut buf = Vec::new();
        group.bench_function(BenchmarkId::new("rmp_serde", n), |b| {
            b.iter(|| {
                buf.clear();
                encode_epoch_record(1, TIMESTAMP_MS, black_box(requests), &mut buf)
                    .expect("the record encodes");
                black_box(buf.len())
            })
        });
        group.bench_function(BenchmarkId::new("envelope_crc32c", n), |b| {
            b.iter(|| black_box(record::encode(1, black_box(payload))))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("log_append_memory");
    for (n, _, payload) in &epochs {
        let storage = MemoryStorage::new();
        let mut next_epoch = 1;
        group.throughput(Throughput::Bytes(payload.len() as u64));
        group.bench_function(BenchmarkId::new("append_epochs", n), |b| {
            b.iter_custom(|iters| append_loop(&storage, &mut next_epoch, payload, 1, iters))
        });
    }
    group.finish();

    // fsync-bound: one durable redb commit per call; few samples.
    let mut group = c.benchmark_group("log_append_redb");
    group.sample_size(10);
    for (n, _, payload) in &epochs {
        for (name, epochs_per_write) in [("append_epochs", 1), ("group_of_4", 4)] {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
            let storage = EmbeddedStorage::open(dir.path()).expect("open redb");
            let mut next_epoch = 1;
            group.throughput(Throughput::Bytes((payload.len() * epochs_per_write) as u64));
            group.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter_custom(|iters| {
                    append_loop(&storage, &mut next_epoch, payload, epochs_per_write, iters)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, log_append);
criterion_main!(benches);
