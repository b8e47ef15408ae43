//! Mailbox throughput: one message per op versus one message per 1,000-op batch, to 64 partitions.
//!
//! Both variants deliver the same 64,000 ops per iteration and end with a round trip to every
//! partition, so an iteration is timed until every op has been handled. Throughput is in ops.

use std::hint::black_box;

use actor_runtime::{
    ActorError, ActorId, ActorSystem, ServiceConfig, ServiceHandle, SystemConfig, VirtualActor,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tokio::sync::oneshot;

const N_PARTITIONS: u32 = 64;
const N_OPS_PER_BATCH: u64 = 1_000;
const N_OPS: u64 = N_PARTITIONS as u64 * N_OPS_PER_BATCH;

struct Summer;

enum SumMsg {
    Op(u64),
    Flush(oneshot::Sender<u64>),
}

impl VirtualActor for Summer {
    type Msg = SumMsg;
    type State = u64;

    async fn activate(&self, _id: ActorId) -> Result<u64, ActorError> {
        Ok(0)
    }

    async fn handle(&self, _id: ActorId, sum: &mut u64, msg: SumMsg) {
        match msg {
            SumMsg::Op(value) => *sum = sum.wrapping_add(value),
            SumMsg::Flush(reply) => drop(reply.send(*sum)),
        }
    }
}

/// Waits until every partition has handled everything sent before.
async fn flush_all(service: &ServiceHandle<Summer>) {
    for partition in 0..N_PARTITIONS {
        black_box(service.call(partition, SumMsg::Flush).await.unwrap());
    }
}

fn mailbox(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (system, service) = runtime.block_on(async {
        let system = ActorSystem::new(SystemConfig::embedded());
        let config = ServiceConfig {
            n_partitions: N_PARTITIONS,
            idle_timeout: None,
            ..ServiceConfig::default()
        };
        let service = system.register("summer", config, Summer).unwrap();
        // Activate every partition outside the measurement.
        flush_all(&service).await;
        (system, service)
    });

    let mut group = c.benchmark_group("mailbox");
    group.throughput(Throughput::Elements(N_OPS));
    group.bench_function("single_op_messages_64_partitions", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for op in 0..N_OPS {
                    let partition = (op % u64::from(N_PARTITIONS)) as u32;
                    service.send(partition, SumMsg::Op(op)).await.unwrap();
                }
                flush_all(&service).await;
            })
        })
    });
    group.bench_function("batched_1000_ops_64_partitions", |b| {
        b.iter_batched(
            || {
                (0..N_PARTITIONS)
                    .map(|_| (0..N_OPS_PER_BATCH).map(SumMsg::Op).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            },
            |batches| {
                runtime.block_on(async {
                    for (partition, batch) in (0..N_PARTITIONS).zip(batches) {
                        service.send_batch(partition, batch).await.unwrap();
                    }
                    flush_all(&service).await;
                })
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("mailbox_call");
    group.throughput(Throughput::Elements(1));
    group.bench_function("call_round_trip_active_actor", |b| {
        b.iter(|| {
            runtime.block_on(async { black_box(service.call(0, SumMsg::Flush).await.unwrap()) })
        })
    });
    group.finish();

    runtime.block_on(system.shutdown());
}

criterion_group!(benches, mailbox);
criterion_main!(benches);
