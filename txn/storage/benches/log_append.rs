//! The hot path of the epoch log: one `append_epoch` per epoch, each made durable (fsync)
//! before it returns, for a small (20 KB) and a large (500 KB) epoch batch.
//!
//! Run: `cargo bench -p txn-storage --features fjall --bench log_append` (without the feature,
//! only redb). Set `VMSDB_BENCH_DIR` to put the stores on the disk under test (default: the
//! system temp directory); a tmpfs makes fsync free and the numbers meaningless.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use txn_storage::conformance::batch_for;
use txn_storage::{RedbStorage, Storage};

const BATCH_BYTES: [usize; 2] = [20 * 1024, 500 * 1024];

fn bench_dir() -> PathBuf {
    std::env::var_os("VMSDB_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

fn bench_backend<S: Storage>(c: &mut Criterion, open: impl Fn(&std::path::Path) -> S) {
    let mut group = c.benchmark_group("log_append");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(5));
    for len in BATCH_BYTES {
        let dir = tempfile::tempdir_in(bench_dir()).expect("bench dir");
        let store = open(dir.path());
        let batch = batch_for(1, len);
        let mut epoch = 0u64;
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(
            BenchmarkId::new(store.name(), format!("{}KB", len / 1024)),
            |b| {
                b.iter(|| {
                    epoch += 1;
                    store.append_epoch(epoch, &batch).expect("append");
                });
            },
        );
    }
    group.finish();
}

fn log_append(c: &mut Criterion) {
    bench_backend(c, |dir| RedbStorage::open(dir).expect("open redb"));
    #[cfg(feature = "fjall")]
    bench_backend(c, |dir| {
        txn_storage::FjallStorage::open(dir).expect("open fjall")
    });
}

criterion_group!(benches, log_append);
criterion_main!(benches);
