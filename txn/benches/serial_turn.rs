//! YCSB-T Zipf 0.99 through a whole in-memory runtime against the same transactions on the
//! single-threaded `SerialExecutor` (the harness's `serial` baseline): what the epoch machinery
//! costs per transaction when almost every transaction runs in the one-thread serial pass.
//!
//! The application is the harness's YCSB-T written against the untyped API: one service of 8
//! partitions, one table of `KEYS` counters; a transaction increments 4 distinct Zipf-0.99 keys,
//! grouped by partition, as a chain that visits each partition of its keys once. `CLIENTS`
//! closed-loop clients run `ROUNDS` transactions each per measured iteration; the default serial
//! hints send the hot kind to the serial pass, as in the harness.
//!
//! Run: `cargo bench -p txn --bench serial_turn -- --warm-up-time 1 --measurement-time 5`.
//!
//! For instruction counts, `SERIAL_TURN_ONCE=runtime|serial` runs one fixed stream of
//! `CLIENTS` × `ROUNDS_ONCE` transactions once (no criterion) and exits, so that
//! `valgrind --tool=callgrind target/release/deps/serial_turn-* ` counts exactly that work:
//! `SERIAL_TURN_ONCE=serial` is the baseline, `runtime` the runtime (after one untimed
//! warm-up round, so the serial hints are learnt).

#[allow(dead_code)]
mod common;

use common::{time_rounds, two_worker_tokio};
use criterion::{BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::{App, AppBuilder, AppDef, Client, Request, Runtime, RuntimeConfig, SerialExecutor};
use txn::{ServiceRef, Table};

/// Rows in the table.
const KEYS: u64 = 200_000;
/// Partitions of the service.
const PARTITIONS: u32 = 8;
/// Keys per transaction.
const KEYS_PER_TXN: usize = 4;
/// Zipf skew.
const THETA: f64 = 0.99;
/// Closed-loop clients.
const CLIENTS: usize = 1_024;
/// Transactions per client in a criterion iteration.
const ROUNDS: usize = 8;
/// Transactions per client in a `SERIAL_TURN_ONCE` run.
const ROUNDS_ONCE: usize = 32;

/// YCSB-T, untyped.
struct Ycsb;

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Ev {
    /// Insert these keys (all owned by the receiving partition) with 0.
    Load(Vec<u64>),
    /// Increment `keys[next..]`, starting with the run this partition owns.
    Rmw { keys: Vec<u64>, next: u32 },
}

impl App for Ycsb {
    type Event = Ev;
    type Output = ();
    fn event_kind(event: &Ev) -> &'static str {
        match event {
            Ev::Load(_) => "load",
            Ev::Rmw { next: 0, .. } => "rmw",
            Ev::Rmw { .. } => "rmw_step",
        }
    }
}

fn app() -> (Arc<AppDef<Ycsb>>, ServiceRef) {
    let mut b = AppBuilder::<Ycsb>::new();
    let service = b.service("ycsb", PARTITIONS);
    let table: Table<u64, i64> = b.table(service, "usertable");
    b.handler(service, move |ctx, ev| match ev {
        Ev::Load(keys) => {
            for &key in keys {
                ctx.put(table, key, 0)?;
            }
            Ok(())
        }
        Ev::Rmw { keys, next } => {
            let here = ctx.partition();
            let first = *next as usize;
            let mut i = first;
            while i < keys.len() && (i == first || service.partition_of(&keys[i]) == here) {
                let value = ctx
                    .get(table, &keys[i])?
                    .ok_or_else(|| ctx.abort("no key"))?;
                ctx.put(table, keys[i], value + 1)?;
                i += 1;
            }
            if i < keys.len() {
                let rest = Ev::Rmw {
                    keys: keys.clone(),
                    next: i as u32,
                };
                ctx.emit_raw(service, &keys[i], rest);
            }
            Ok(())
        }
    });
    (b.build().expect("a valid app"), service)
}

/// Draws ranks in `0..n` with probability ∝ 1 / (rank + 1)^θ, by inverting the CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: u64, theta: f64) -> Self {
        let mut cdf = Vec::with_capacity(n as usize);
        let mut sum = 0.0;
        for i in 1..=n {
            sum += 1.0 / (i as f64).powf(theta);
            cdf.push(sum);
        }
        cdf.iter_mut().for_each(|c| *c /= sum);
        Zipf(cdf)
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> u64 {
        let u: f64 = rng.random();
        (self.0.partition_point(|c| *c < u) as u64).min(self.0.len() as u64 - 1)
    }
}

/// Each client's requests, the same for every executor: `rounds` transactions of distinct keys
/// grouped by partition.
fn client_requests(service: ServiceRef, rounds: usize) -> Vec<Vec<Request<Ycsb>>> {
    let zipf = Zipf::new(KEYS, THETA);
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    (0..CLIENTS)
        .map(|_| {
            (0..rounds)
                .map(|_| {
                    let mut keys: Vec<(u32, u64)> = Vec::with_capacity(KEYS_PER_TXN);
                    while keys.len() < KEYS_PER_TXN {
                        let k = zipf.sample(&mut rng);
                        if !keys.iter().any(|(_, key)| *key == k) {
                            keys.push((service.partition_of(&k), k));
                        }
                    }
                    keys.sort_unstable();
                    let keys: Vec<u64> = keys.into_iter().map(|(_, k)| k).collect();
                    let to = service.partition_of(&keys[0]);
                    Request::raw(service, to, Ev::Rmw { keys, next: 0 })
                })
                .collect()
        })
        .collect()
}

/// The load: every key, in requests of at most 1,000 keys of one partition.
fn load_requests(service: ServiceRef) -> Vec<Request<Ycsb>> {
    let mut per_partition: Vec<Vec<u64>> = vec![Vec::new(); PARTITIONS as usize];
    for key in 0..KEYS {
        per_partition[service.partition_of(&key) as usize].push(key);
    }
    per_partition
        .into_iter()
        .enumerate()
        .flat_map(|(p, keys)| {
            keys.chunks(1_000)
                .map(|c| Request::raw(service, p as u32, Ev::Load(c.to_vec())))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn start_loaded(app: &Arc<AppDef<Ycsb>>, service: ServiceRef) -> Runtime<Ycsb> {
    let rt = Runtime::start(app.clone(), RuntimeConfig::in_memory())
        .await
        .expect("the runtime starts");
    let client = rt.client();
    for r in load_requests(service) {
        client
            .submit_request(r)
            .await
            .expect("an outcome")
            .result
            .expect("loads");
    }
    rt
}

fn loaded_serial(app: &Arc<AppDef<Ycsb>>, service: ServiceRef) -> SerialExecutor<Ycsb> {
    let mut exec = SerialExecutor::new(app.clone());
    for r in load_requests(service) {
        exec.run_request(r, 0).expect("loads");
    }
    exec
}

/// Every client runs its requests one after another, each waiting for its outcome.
async fn closed_loop(client: &Client<Ycsb>, requests: &[Vec<Request<Ycsb>>]) {
    futures::future::join_all(requests.iter().map(|mine| async move {
        for r in mine {
            let outcome = client.submit_request(r.clone()).await.expect("an outcome");
            outcome.result.expect("commits");
        }
    }))
    .await;
}

fn run_serial(exec: &mut SerialExecutor<Ycsb>, requests: &[Vec<Request<Ycsb>>]) {
    // The harness's `serial` baseline runs the clients' requests interleaved, one at a time.
    for round in 0..requests.first().map_or(0, Vec::len) {
        for mine in requests {
            exec.run_request(mine[round].clone(), 0).expect("commits");
        }
    }
}

fn once(which: &str) {
    let (app, service) = app();
    // `SERIAL_TURN_ROUNDS=0` counts the setup alone, to subtract.
    let rounds = std::env::var("SERIAL_TURN_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS_ONCE);
    let requests = client_requests(service, rounds);
    let n = CLIENTS * rounds;
    match which {
        "serial" => {
            let mut exec = loaded_serial(&app, service);
            run_serial(&mut exec, &requests);
        }
        "runtime" => {
            let tokio = two_worker_tokio();
            let warm_up = client_requests(service, 2);
            tokio.block_on(async {
                let rt = start_loaded(&app, service).await;
                let client = rt.client();
                closed_loop(&client, &warm_up).await;
                let counts = |rt: &Runtime<Ycsb>| {
                    let s = rt.stats();
                    [
                        &s.epochs,
                        &s.serial_hinted,
                        &s.fallback,
                        &s.serial_hint_flips,
                    ]
                    .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                };
                let before = counts(&rt);
                closed_loop(&client, &requests).await;
                let after = counts(&rt);
                eprintln!(
                    "epochs {}, serial-hinted {}, serial pass {}, hint flips {}",
                    after[0] - before[0],
                    after[1] - before[1],
                    after[2] - before[2],
                    after[3] - before[3],
                );
                rt.shutdown().await;
            });
        }
        other => panic!("SERIAL_TURN_ONCE={other}: expected runtime or serial"),
    }
    eprintln!("{n} transactions ({which})");
}

fn serial_turn(c: &mut Criterion) {
    let (app, service) = app();
    let requests = client_requests(service, ROUNDS);
    let tokio = two_worker_tokio();
    let mut group = c.benchmark_group("serial_turn");
    group.throughput(Throughput::Elements((CLIENTS * ROUNDS) as u64));
    let rt = tokio.block_on(start_loaded(&app, service));
    let client = rt.client();
    group.bench_function(BenchmarkId::new("ycsb_zipf", "runtime"), |b| {
        b.iter_custom(|iters| time_rounds(&tokio, iters, || closed_loop(&client, &requests)))
    });
    tokio.block_on(rt.shutdown());
    let mut exec = loaded_serial(&app, service);
    group.bench_function(BenchmarkId::new("ycsb_zipf", "serial"), |b| {
        b.iter(|| run_serial(&mut exec, &requests))
    });
    group.finish();
}

fn main() {
    if let Ok(which) = std::env::var("SERIAL_TURN_ONCE") {
        once(&which);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    serial_turn(&mut c);
    c.final_summary();
}
