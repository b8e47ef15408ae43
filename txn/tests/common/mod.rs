//! A small test application: three services, each a partitioned key → i64 table, and
//! transactions that are chains of operations hopping between services.
#![allow(dead_code)]

pub mod files;
pub mod model;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::{App, AppBuilder, AppDef, ServiceRef, Table};

pub struct ChainApp;

impl App for ChainApp {
    type Event = Ev;
    type Output = Vec<i64>;
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OpKind {
    Read,
    Add(i64),
    /// Adds `delta` only if the current value is at least `min`; otherwise aborts.
    AddIfAtLeast {
        delta: i64,
        min: i64,
    },
    Delete,
    /// Sums this partition's rows with keys in `key..key + width`.
    Scan {
        width: u64,
    },
    /// Always aborts.
    Abort,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub svc: usize,
    pub key: u64,
    pub kind: OpKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Ev {
    Chain {
        ops: Vec<Op>,
        idx: usize,
        reads: Vec<i64>,
    },
}

impl Ev {
    pub fn chain(ops: Vec<Op>) -> Self {
        Ev::Chain {
            ops,
            idx: 0,
            reads: Vec::new(),
        }
    }
}

pub struct Fixture {
    pub app: Arc<AppDef<ChainApp>>,
    pub services: Vec<ServiceRef>,
    pub tables: Vec<Table<u64, i64>>,
}

impl Fixture {
    /// Where the first op of a chain runs.
    pub fn first_target(&self, ev: &Ev) -> (ServiceRef, u64) {
        let Ev::Chain { ops, .. } = ev;
        (self.services[ops[0].svc], ops[0].key)
    }
}

pub fn build(n_services: usize, n_partitions: u32) -> Fixture {
    let mut b = AppBuilder::<ChainApp>::new();
    let services: Vec<ServiceRef> = (0..n_services)
        .map(|i| b.service(&format!("s{i}"), n_partitions))
        .collect();
    let tables: Vec<Table<u64, i64>> = services
        .iter()
        .map(|s| b.ordered_table::<u64, i64>(*s, "kv"))
        .collect();
    for (i, s) in services.iter().enumerate() {
        let services = services.clone();
        let table = tables[i];
        b.handler(*s, move |ctx, ev| {
            let Ev::Chain { ops, idx, reads } = ev;
            let op = &ops[*idx];
            let mut reads = reads.clone();
            let cur = ctx.get(table, &op.key)?.unwrap_or(0);
            match &op.kind {
                OpKind::Read => reads.push(cur),
                OpKind::Add(d) => {
                    reads.push(cur);
                    ctx.put(table, op.key, cur + d)?;
                }
                OpKind::AddIfAtLeast { delta, min } => {
                    reads.push(cur);
                    if cur < *min {
                        return Err(ctx.abort(format!("key {} holds {cur} < {min}", op.key)));
                    }
                    ctx.put(table, op.key, cur + delta)?;
                }
                OpKind::Delete => {
                    reads.push(cur);
                    ctx.delete(table, &op.key)?;
                }
                OpKind::Scan { width } => {
                    let sum: i64 = ctx
                        .scan(table, op.key..op.key + width)?
                        .iter()
                        .map(|(_, v)| *v)
                        .sum();
                    reads.push(sum);
                }
                OpKind::Abort => return Err(ctx.abort(format!("op {idx} always aborts"))),
            }
            if idx + 1 < ops.len() {
                let next = &ops[idx + 1];
                ctx.emit_raw(
                    services[next.svc],
                    &next.key,
                    Ev::Chain {
                        ops: ops.clone(),
                        idx: idx + 1,
                        reads,
                    },
                );
            } else {
                ctx.set_output(reads);
            }
            Ok(())
        });
    }
    Fixture {
        app: b.build().expect("valid test app"),
        services,
        tables,
    }
}

/// The seed of a randomized test: `TXN_TEST_SEED` if set, else fresh; always printed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("TXN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{test}: seed {seed} (replay the workload with TXN_TEST_SEED={seed})");
    seed
}

/// A random chain of 1..=max_ops operations over `n_keys` keys per service.
pub fn random_chain(rng: &mut ChaCha8Rng, n_services: usize, n_keys: u64, max_ops: usize) -> Ev {
    let n_ops = rng.random_range(1..=max_ops);
    let ops = (0..n_ops)
        .map(|_| {
            let kind = match rng.random_range(0..100) {
                0..30 => OpKind::Read,
                30..70 => OpKind::Add(rng.random_range(-5..=10)),
                70..85 => OpKind::AddIfAtLeast {
                    delta: -rng.random_range(1..=5),
                    min: rng.random_range(0..=8),
                },
                85..90 => OpKind::Delete,
                90..98 => OpKind::Scan {
                    width: rng.random_range(1..=6),
                },
                _ => OpKind::Abort,
            };
            Op {
                svc: rng.random_range(0..n_services),
                key: rng.random_range(0..n_keys),
                kind,
            }
        })
        .collect();
    Ev::chain(ops)
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// One finished request of a recorded concurrent history.
pub struct Recorded<A: txn::App> {
    pub pos: txn::SerialPos,
    pub service: ServiceRef,
    pub partition: u32,
    pub event: A::Event,
    pub result: Result<Option<A::Output>, txn::AbortReason>,
}

/// Replays `history` one request at a time, in the reported serial order, on a fresh
/// `SerialExecutor`, and asserts that every outcome (reads, outputs, aborts) and the final state
/// hash match the concurrent run. Returns how many of the requests committed.
pub fn assert_matches_serial_replay<A: txn::App>(
    app: Arc<AppDef<A>>,
    mut history: Vec<Recorded<A>>,
    final_hash: u64,
    seed: u64,
) -> usize
where
    A::Output: PartialEq,
{
    history.sort_by_key(|r| r.pos);
    for pair in history.windows(2) {
        assert_ne!(
            pair[0].pos, pair[1].pos,
            "seed {seed}: two requests share a serial position"
        );
    }
    let mut reference = txn::SerialExecutor::new(app);
    let mut committed = 0;
    for (i, r) in history.iter().enumerate() {
        let expected = reference.run_at(r.pos, r.service, r.partition, r.event.clone(), 0);
        assert_eq!(
            r.result, expected,
            "seed {seed}: request #{i} at {:?} ({:?}) diverges from the serial replay",
            r.pos, r.event
        );
        committed += usize::from(r.result.is_ok());
    }
    assert_eq!(
        final_hash,
        reference.state_hash(),
        "seed {seed}: final state differs from the serial replay"
    );
    committed
}

/// One operation on `key` of service 0 as a whole transaction.
pub fn op0(key: u64, kind: OpKind) -> Ev {
    Ev::chain(vec![Op { svc: 0, key, kind }])
}

/// A read of `key` in service 0 as a whole transaction.
pub fn read0(key: u64) -> Ev {
    op0(key, OpKind::Read)
}

/// Request id `seq` of the tests' one client.
pub fn request_id(seq: u64) -> txn::RequestId {
    txn::RequestId { client: 42, seq }
}

/// A copy of `storage`'s log and store info record, for a replay that must not append to the
/// original (a log without the info record is refused as a pre-format-2 store).
pub fn copy_of_log(storage: &txn::storage::MemoryStorage) -> txn::storage::MemoryStorage {
    use txn::storage::Storage;
    let copy = txn::storage::MemoryStorage::new();
    storage
        .read_epochs(0, &mut |e, bytes| copy.append_epoch(e, bytes))
        .unwrap();
    let info = storage
        .read_store_info()
        .unwrap()
        .expect("a store info record");
    copy.write_store_info(&info).unwrap();
    copy
}

/// One client's `n_requests` random chains over 3 services and 24 keys, one at a time;
/// returns them with their outcomes, and how many were retried in a later epoch.
pub async fn run_chain_client(
    client: txn::Client<ChainApp>,
    fx: Arc<Fixture>,
    seed: u64,
    n_requests: usize,
) -> (Vec<Recorded<ChainApp>>, usize) {
    let mut rng = rng(seed);
    let mut records = Vec::new();
    let mut n_retried = 0;
    for _ in 0..n_requests {
        let ev = random_chain(&mut rng, 3, 24, 5);
        let (svc, key) = fx.first_target(&ev);
        let outcome = client.submit_raw(svc, &key, ev.clone()).await.unwrap();
        n_retried += usize::from(outcome.retries > 0);
        records.push(Recorded::<ChainApp> {
            pos: outcome
                .serial_pos
                .expect("no transaction exhausts its retries"),
            service: svc,
            partition: svc.partition_of(&key),
            event: ev,
            result: outcome.result,
        });
    }
    (records, n_retried)
}

/// Every committed row of every service, read back with one snapshot query.
pub async fn read_all_rows(client: &txn::Client<ChainApp>, fx: &Fixture) -> model::Rows {
    let tables = fx.tables.clone();
    let parts = client
        .query(&fx.services, move |view| {
            let mut rows = Vec::new();
            for (svc, table) in tables.iter().enumerate() {
                rows.extend(view.iter(*table).map(|(k, v)| ((svc, *k), *v)));
            }
            rows
        })
        .await
        .unwrap();
    parts.into_iter().flatten().collect()
}

/// A loopback link to `hosts`: every phase batch and reply encoded and decoded as between
/// processes.
pub fn link_to<A: txn::App>(hosts: &[&Arc<txn::PartitionHost<A>>]) -> txn::LoopbackLink {
    let link = txn::LoopbackLink::new();
    for host in hosts {
        let serving = (*host).clone();
        link.add_node(host.node(), move |bytes| {
            let host = serving.clone();
            async move { host.handle(bytes).await }
        });
    }
    link
}

/// A runtime of `app` over `storage` (recovering whatever log it holds), otherwise configured
/// as `RuntimeConfig::in_memory`.
pub async fn start_on<A: txn::App>(
    app: Arc<AppDef<A>>,
    storage: txn::storage::MemoryStorage,
) -> txn::Runtime<A> {
    let config = txn::RuntimeConfig {
        storage: Arc::new(storage),
        ..txn::RuntimeConfig::in_memory()
    };
    txn::Runtime::start(app, config).await.unwrap()
}
