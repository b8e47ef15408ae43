//! The marketplace's default mix through a whole in-memory runtime (epochs, waves, decide,
//! commit, the serial pass, clients) against the same requests on the single-threaded
//! `SerialExecutor` (the harness's `serial` baseline): what vmsdb's own machinery costs per
//! marketplace transaction, beyond the handlers both run.
//!
//! `CLIENTS` closed-loop clients each draw their operations from their own seeded generator
//! (small scale, 4 partitions per service, the default mix; a dashboard is the in-process
//! closure query on both, as in the harness), `ROUNDS` operations each per measured iteration.
//!
//! Run: `cargo bench -p services --bench marketplace_epoch -- --warm-up-time 1 --measurement-time 5`.
//!
//! For instruction counts, `MARKET_EPOCH_ONCE=runtime|load|serial|serial-load` runs one fixed
//! stream once (no criterion) and exits: the load, `MARKET_EPOCH_WARM_UP` rounds (default 1;
//! more rounds grow the tables as a long run does), then `MARKET_EPOCH_ROUNDS` measured rounds
//! (default `ROUNDS_ONCE`) of `CLIENTS` operations each; `load` and `serial-load` stop before
//! the measured rounds. Under `valgrind --tool=callgrind --dump-before='*measured_rounds*'` the
//! last dump counts the measured rounds alone (every thread); divided by the operations it is
//! the instructions per operation. Epochs are cut by the runtime's timing, so runs differ a
//! little.

use criterion::{BenchmarkId, Criterion, Throughput};
use services::marketplace::data::MarketOp;
use services::marketplace::{
    Dashboard, MarketApp, MarketConfig, Marketplace, Mix, OpGen, Scale, SellerId,
};
use std::time::{Duration, Instant};
use txn::{Client, Runtime, RuntimeConfig, SerialExecutor};

/// Closed-loop clients (the harness's default).
const CLIENTS: usize = 1_024;
/// Operations per client in a criterion iteration.
const ROUNDS: usize = 4;
/// Operations per client in a `MARKET_EPOCH_ONCE` run.
const ROUNDS_ONCE: usize = 8;

fn market() -> Marketplace {
    Marketplace::new(MarketConfig::at_scale(Scale::Small, 4)).expect("a valid marketplace")
}

/// Each client's next `rounds` operations, from its own generator.
fn client_ops(gens: &mut [OpGen], rounds: usize) -> Vec<Vec<MarketOp>> {
    gens.iter_mut()
        .map(|g| (0..rounds).map(|_| g.next_op()).collect())
        .collect()
}

fn generators(m: &Marketplace) -> Vec<OpGen> {
    (0..CLIENTS)
        .map(|c| {
            m.op_gen(1_000 + c as u64, Mix::DEFAULT, 0.0)
                .expect("a valid generator")
        })
        .collect()
}

fn two_worker_tokio() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn start_loaded(m: &Marketplace) -> Runtime<MarketApp> {
    let rt = Runtime::start(m.app().clone(), RuntimeConfig::in_memory())
        .await
        .expect("the runtime starts");
    let client = rt.client();
    for r in m.load_requests() {
        client
            .submit_request(r)
            .await
            .expect("an outcome")
            .result
            .expect("the load commits");
    }
    rt
}

async fn dashboard(m: &Marketplace, client: &Client<MarketApp>, seller_id: SellerId) {
    let sellers = [*m.services.seller];
    let parts = client
        .query(&sellers, m.dashboard_fn(seller_id))
        .await
        .expect("the dashboard");
    std::hint::black_box(Dashboard::from_parts(seller_id, parts));
}

/// Runs every client's operations, each client one at a time; returns how many committed.
async fn closed_loop(m: &Marketplace, client: &Client<MarketApp>, ops: &[Vec<MarketOp>]) -> usize {
    let per_client = futures::future::join_all(ops.iter().map(|mine| async move {
        let mut committed = 0;
        for op in mine {
            if let MarketOp::Dashboard { seller_id } = op {
                dashboard(m, client, *seller_id).await;
                continue;
            }
            let request = m.request(op.clone()).expect("a transaction");
            let outcome = client.submit_request(request).await.expect("an outcome");
            committed += usize::from(outcome.result.is_ok());
        }
        committed
    }))
    .await;
    per_client.into_iter().sum()
}

/// The same operations on the serial executor, round by round; returns how many committed.
fn run_serial(
    m: &Marketplace,
    exec: &mut SerialExecutor<MarketApp>,
    ops: &[Vec<MarketOp>],
    clock: &mut u64,
) -> usize {
    let mut committed = 0;
    for round in 0..ops.first().map_or(0, Vec::len) {
        for mine in ops {
            *clock += 1;
            let op = &mine[round];
            if let MarketOp::Dashboard { seller_id } = op {
                std::hint::black_box(m.dashboard_serial(exec, *seller_id));
                continue;
            }
            let request = m.request(op.clone()).expect("a transaction");
            committed += usize::from(exec.run_request(request, *clock / 40).is_ok());
        }
    }
    committed
}

/// The CPU time this process (every thread) has used so far, in nanoseconds.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Called once, right before the measured rounds of a `MARKET_EPOCH_ONCE` run: under
/// `valgrind --tool=callgrind --dump-before='*measured_rounds*'` the last dump is the measured
/// rounds alone (every thread's), without the load and the warm-up.
#[inline(never)]
fn measured_rounds() {
    std::hint::black_box(());
}

fn once(which: &str) {
    let m = market();
    let mut gens = generators(&m);
    let env_rounds = |var: &str, default: usize| {
        std::env::var(var)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(default)
    };
    let (warm_up_rounds, rounds) = (
        env_rounds("MARKET_EPOCH_WARM_UP", 1),
        env_rounds("MARKET_EPOCH_ROUNDS", ROUNDS_ONCE),
    );
    let warm_up = client_ops(&mut gens, warm_up_rounds);
    let ops = client_ops(&mut gens, rounds);
    let n = CLIENTS * rounds;
    let committed = match which {
        "serial" | "serial-load" => {
            let mut clock = 1_000;
            let mut exec = m.loaded_serial(clock);
            run_serial(&m, &mut exec, &warm_up, &mut clock);
            if which == "serial-load" {
                0
            } else {
                measured_rounds();
                let cpu = process_cpu_ns();
                let committed = run_serial(&m, &mut exec, &ops, &mut clock);
                eprintln!(
                    "measured rounds: {:.1} µs of process CPU per operation",
                    (process_cpu_ns() - cpu) as f64 / 1_000.0 / (CLIENTS * rounds) as f64
                );
                committed
            }
        }
        "runtime" | "load" => {
            let tokio = two_worker_tokio();
            tokio.block_on(async {
                let rt = start_loaded(&m).await;
                let client = rt.client();
                closed_loop(&m, &client, &warm_up).await;
                let committed = if which == "load" {
                    0
                } else {
                    let epochs = |rt: &Runtime<MarketApp>| {
                        let s = rt.stats();
                        [&s.epochs, &s.fallback]
                            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                    };
                    let before = epochs(&rt);
                    measured_rounds();
                    let cpu = process_cpu_ns();
                    let committed = closed_loop(&m, &client, &ops).await;
                    let cpu = process_cpu_ns() - cpu;
                    let after = epochs(&rt);
                    eprintln!(
                        "measured rounds: {:.1} µs of process CPU per operation",
                        cpu as f64 / 1_000.0 / ops.iter().map(Vec::len).sum::<usize>() as f64
                    );
                    eprintln!(
                        "epochs {}, serial pass {}",
                        after[0] - before[0],
                        after[1] - before[1]
                    );
                    committed
                };
                rt.shutdown().await;
                committed
            })
        }
        other => panic!("MARKET_EPOCH_ONCE={other}: expected runtime, load, serial or serial-load"),
    };
    eprintln!("{n} operations, {committed} committed ({which})");
}

/// The time `run` takes over `iters` batches of `ROUNDS` fresh operations per client (drawn
/// outside the timed part).
fn timed(iters: u64, gens: &mut [OpGen], mut run: impl FnMut(&[Vec<MarketOp>])) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let ops = client_ops(gens, ROUNDS);
        let started = Instant::now();
        run(&ops);
        total += started.elapsed();
    }
    total
}

fn marketplace_epoch(c: &mut Criterion) {
    let m = market();
    let mut gens = generators(&m);
    let tokio = two_worker_tokio();
    let mut group = c.benchmark_group("marketplace_epoch");
    group.throughput(Throughput::Elements((CLIENTS * ROUNDS) as u64));
    let rt = tokio.block_on(start_loaded(&m));
    let client = rt.client();
    group.bench_function(BenchmarkId::new("default_mix", "runtime"), |b| {
        b.iter_custom(|iters| {
            timed(iters, &mut gens, |ops| {
                tokio.block_on(closed_loop(&m, &client, ops));
            })
        })
    });
    tokio.block_on(rt.shutdown());
    let mut gens = generators(&m);
    let mut clock = 1_000;
    let mut exec = m.loaded_serial(clock);
    group.bench_function(BenchmarkId::new("default_mix", "serial"), |b| {
        b.iter_custom(|iters| {
            timed(iters, &mut gens, |ops| {
                run_serial(&m, &mut exec, ops, &mut clock);
            })
        })
    });
    group.finish();
}

fn main() {
    if let Ok(which) = std::env::var("MARKET_EPOCH_ONCE") {
        once(&which);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    marketplace_epoch(&mut c);
    c.final_summary();
}
