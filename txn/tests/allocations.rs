//! Heap allocations per transaction where memory is meant to be reused, counted per thread: a
//! steady stream of `Client::submit_request` calls allocates nothing per request on the
//! caller's thread, and running transactions one at a time (the serial pass's and
//! `SerialExecutor`'s `run_chain`) allocates nothing per transaction; the epochs of a
//! runtime recording merge-able deltas on many rows reuse each row's delta list.

use serde::{Deserialize, Serialize};
use txn::bench_api::alloc_count::{
    CountingPerThread, count_this_thread, server_allocations, thread_allocations,
};
use txn::{
    App, AppBuilder, AppDef, Client, Field, Request, Runtime, RuntimeConfig, SerialExecutor,
    ServiceRef, Table,
};

#[global_allocator]
static GLOBAL: CountingPerThread = CountingPerThread;

struct Counters;

impl App for Counters {
    type Event = u64;
    type Output = ();
}

fn app() -> (std::sync::Arc<AppDef<Counters>>, ServiceRef) {
    let mut b = AppBuilder::<Counters>::new();
    let service = b.service("counters", 2);
    let table = b.table::<u64, i64>(service, "kv");
    b.handler(service, move |ctx, key| {
        ctx.put(table, *key, 1)?;
        Ok(())
    });
    (b.build().expect("a valid app"), service)
}

/// How the caller holds its client handle.
#[derive(Clone, Copy)]
enum Handle {
    /// One handle for every request.
    Kept,
    /// A fresh clone per request, as a server handing each request to its own task does.
    ClonedPerRequest,
}

/// Submits `n` requests one after the other from the calling thread (each awaited before the
/// next), on keys from `first`; returns the allocations this thread made meanwhile.
fn submit_in_turn(
    client: &Client<Counters>,
    service: ServiceRef,
    (first, n): (u64, u64),
    handle: Handle,
) -> u64 {
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    caller.block_on(async {
        let before = thread_allocations();
        for key in first..first + n {
            let request = Request::raw(service, service.partition_of(&key), key);
            let outcome = match handle {
                Handle::Kept => client.submit_request(request).await,
                Handle::ClonedPerRequest => client.clone().submit_request(request).await,
            };
            let outcome = outcome.expect("an outcome");
            outcome.result.expect("commits");
        }
        thread_allocations() - before
    })
}

/// Runs `caller` on a thread of its own against a runtime on its own threads, then stops the
/// runtime; hands back what `caller` returned.
fn on_a_caller_thread<R: Send>(
    caller: impl FnOnce(&Client<Counters>, ServiceRef) -> R + Send,
) -> R {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (app, service) = app();
    let rt = server
        .block_on(Runtime::start(app, RuntimeConfig::in_memory()))
        .expect("the runtime starts");
    let client = rt.client();
    let returned = std::thread::scope(|scope| {
        scope
            .spawn(|| caller(&client, service))
            .join()
            .expect("the caller thread")
    });
    drop(client);
    server.block_on(rt.shutdown());
    returned
}

/// The allocations on the caller's thread for 1,000 requests submitted alone in turn through
/// `handle`, after a warm-up, against a runtime on its own threads.
fn allocations_submitting_alone(handle: Handle) -> (u64, u64) {
    let n_requests = 1_000;
    let measured = on_a_caller_thread(|client, service| {
        // Warm up: the admission buffer, the channel's blocks and the first reply slot.
        submit_in_turn(client, service, (0, 100), handle);
        submit_in_turn(client, service, (100, n_requests), handle)
    });
    (measured, n_requests)
}

#[test]
fn submitting_alone_allocates_nothing_per_request_on_the_callers_thread() {
    // Goal: the caller's side of a request submitted alone (admission, the hand-off to the
    // sequencer, the reply) reuses its memory: a reply channel per request would show as at
    // least one allocation per request here.
    let (measured, n_requests) = allocations_submitting_alone(Handle::Kept);
    // The channel may now and then add a block of slots; per request nothing.
    assert!(
        measured < n_requests / 10,
        "{measured} allocations on the caller's thread for {n_requests} requests"
    );
}

#[test]
fn a_handle_cloned_per_request_reuses_the_reply_slots_too() {
    // Goal: the reply slots are shared by every clone of a client handle; slots kept per
    // handle would cost a clone used once a new slot and a new free list per request.
    let (measured, n_requests) = allocations_submitting_alone(Handle::ClonedPerRequest);
    assert!(
        measured < n_requests / 10,
        "{measured} allocations on the caller's thread for {n_requests} requests"
    );
}

/// The allocations on the caller's thread for `n_batches` batches of `batch_size` requests,
/// each submitted with `submit_many` and awaited before the next, after a warm-up; the request
/// lists are built before counting, so only what `submit_many` itself allocates counts.
fn allocations_submitting_batches(n_batches: u64, batch_size: u64) -> u64 {
    on_a_caller_thread(|client, service| {
        let batches = |first_batch: u64, n: u64| -> Vec<Vec<Request<Counters>>> {
            (first_batch..first_batch + n)
                .map(|b| {
                    (b * batch_size..(b + 1) * batch_size)
                        .map(|key| Request::raw(service, service.partition_of(&key), key))
                        .collect()
                })
                .collect()
        };
        let caller = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let submit = |batches: Vec<Vec<Request<Counters>>>| {
            caller.block_on(async {
                let before = thread_allocations();
                for batch in batches {
                    for outcome in client.submit_many(batch).await {
                        outcome.expect("an outcome").result.expect("commits");
                    }
                }
                thread_allocations() - before
            })
        };
        // Warm up: the admission buffer and the channel's blocks.
        submit(batches(0, 10));
        submit(batches(10, n_batches))
    })
}

#[test]
fn a_batch_costs_three_allocations_whatever_its_size() {
    // Goal: `submit_many` allocates per batch, not per request, and little: the admitted list
    // handed to the sequencer, the batch's outcome state and the outcome list that is handed
    // back. Separate place, id and result lists, a channel for the outcomes and a copy of
    // them would cost seven or more per batch here.
    let n_batches = 100;
    let measured = allocations_submitting_batches(n_batches, 64);
    assert!(
        measured <= 3 * n_batches + n_batches / 10,
        "{measured} allocations on the caller's thread for {n_batches} batches of 64"
    );
}

#[test]
fn running_transactions_one_at_a_time_allocates_nothing_per_transaction() {
    // Goal: a transaction run alone (the serial pass of an epoch, `SerialExecutor`) reuses the
    // buffers of the one before: its first wave's step list, the partitions it touched and its
    // per-partition limits would otherwise cost three allocations per transaction.
    let (app, service) = app();
    let mut executor = SerialExecutor::new(app);
    let n_keys = 16u64;
    let mut run = |n: u64| {
        let before = thread_allocations();
        for i in 0..n {
            let key = i % n_keys;
            executor
                .run_keyed_raw(service, &key, key, 1)
                .expect("commits");
        }
        thread_allocations() - before
    };
    // Warm up: every key's row exists and every buffer has its capacity.
    run(n_keys * 4);
    let n_transactions = 1_000;
    let measured = run(n_transactions);
    assert!(
        measured < n_transactions / 10,
        "{measured} allocations for {n_transactions} transactions run one at a time"
    );
}

/// A runtime's tokio pool of two workers whose allocations count in `server_allocations`.
fn counted_server() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(count_this_thread)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Rows each transaction of the delta workload adds to besides the hot row, each its own.
const DELTA_ROWS_PER_TXN: u64 = 8;
/// Transactions per `submit_many` batch of the delta workload (about one epoch).
const DELTA_BATCH_TXNS: u64 = 256;
/// The hot row every transaction of the delta workload adds to.
const HOT_ROW: u64 = u64::MAX;

struct Deltas;

impl App for Deltas {
    type Event = DeltaEvent;
    type Output = ();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum DeltaEvent {
    /// Creates rows `0..n` and the hot row.
    Load(u64),
    /// Adds to `DELTA_ROWS_PER_TXN` rows from `first`, then eight times to the hot row's
    /// counters and takes one unit of its stock.
    Add { first: u64 },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct HitsAndStock {
    hits: i64,
    stock: i64,
}

const HITS: Field<HitsAndStock> = txn::field!(HitsAndStock, hits);
const STOCK: Field<HitsAndStock> = txn::field!(HitsAndStock, stock);

fn delta_app() -> (std::sync::Arc<AppDef<Deltas>>, ServiceRef) {
    let mut b = AppBuilder::<Deltas>::new();
    let service = b.service("counters", 1);
    let table: Table<u64, HitsAndStock> = b.table(service, "rows");
    b.handler(service, move |ctx, event| {
        match *event {
            DeltaEvent::Load(n) => {
                for key in (0..n).chain([HOT_ROW]) {
                    let stock = i64::MAX / 2;
                    ctx.put(table, key, HitsAndStock { hits: 0, stock })?;
                }
            }
            DeltaEvent::Add { first } => {
                for key in first..first + DELTA_ROWS_PER_TXN {
                    ctx.add(table, &key, HITS, 1)?;
                }
                for _ in 0..8 {
                    ctx.add(table, &HOT_ROW, HITS, 1)?;
                }
                ctx.add_bounded(table, &HOT_ROW, STOCK, -1, 0)?;
            }
        }
        Ok(())
    });
    (b.build().expect("a valid app"), service)
}

/// Runs `n_batches` batches of the delta workload, each transaction of a batch on its own
/// rows; returns the allocations the runtime's worker threads made meanwhile.
async fn run_delta_batches(client: &Client<Deltas>, service: ServiceRef, n_batches: u64) -> u64 {
    let before = server_allocations();
    for _ in 0..n_batches {
        let requests = (0..DELTA_BATCH_TXNS).map(|t| {
            let first = t * DELTA_ROWS_PER_TXN;
            Request::raw(service, 0, DeltaEvent::Add { first })
        });
        for outcome in client.submit_many(requests).await {
            outcome.expect("an outcome").result.expect("commits");
        }
    }
    server_allocations() - before
}

#[test]
fn epochs_of_deltas_reuse_each_rows_delta_list() {
    // Goal: the rows' delta lists of an epoch are reused by the next epochs, and deciding a
    // hot row's many deltas allocates nothing: a list allocated anew per row and epoch shows
    // here as at least one allocation per row a transaction adds to (8 per transaction).
    let server = counted_server();
    let (app, service) = delta_app();
    let n_rows = DELTA_BATCH_TXNS * DELTA_ROWS_PER_TXN;
    let per_txn = server.block_on(async {
        let rt = Runtime::start(app, RuntimeConfig::in_memory())
            .await
            .expect("the runtime starts");
        let client = rt.client();
        let load = Request::raw(service, 0, DeltaEvent::Load(n_rows));
        client
            .submit_request(load)
            .await
            .expect("loads")
            .result
            .expect("loads");
        // Warm up: every buffer of the pipeline and the spare accesses have their capacity.
        run_delta_batches(&client, service, 10).await;
        let n_batches = 20;
        let measured = run_delta_batches(&client, service, n_batches).await;
        drop(client);
        rt.shutdown().await;
        measured as f64 / (n_batches * DELTA_BATCH_TXNS) as f64
    });
    eprintln!("{per_txn:.2} allocations per transaction on the runtime's threads");
    assert!(
        per_txn <= DELTA_EPOCHS_BUDGET,
        "{per_txn:.2} allocations per transaction on the runtime's threads"
    );
}

/// Allocations per transaction of the delta workload the runtime's worker threads may make:
/// 0.30 measured (the epoch's own buffers, shared by its 256 transactions); 9.35 when every
/// row's delta list was allocated anew each epoch (8 per transaction) and the escrow walk of
/// the hot row kept each transaction's 8 increments in a list with room for 4 (1 more).
const DELTA_EPOCHS_BUDGET: f64 = 1.0;

/// Allocations per epoch on the runtime's threads for epochs of `batch_txns` single-row puts
/// (one `submit_many` batch each, on keys written before, so no row is allocated), after a
/// warm-up at that size.
fn allocations_per_epoch(batch_txns: u64) -> f64 {
    let server = counted_server();
    let (app, service) = app();
    server.block_on(async {
        let rt = Runtime::start(app, RuntimeConfig::in_memory())
            .await
            .expect("the runtime starts");
        let client = rt.client();
        let epochs = || rt.stats().epochs.load(std::sync::atomic::Ordering::Relaxed);
        let run = |n_batches: u64| {
            let client = &client;
            async move {
                let before = server_allocations();
                for _ in 0..n_batches {
                    let requests = (0..batch_txns)
                        .map(|key| Request::raw(service, service.partition_of(&key), key));
                    for outcome in client.submit_many(requests).await {
                        outcome.expect("an outcome").result.expect("commits");
                    }
                }
                server_allocations() - before
            }
        };
        run(10).await;
        let epochs_before = epochs();
        let measured = run(20).await;
        let n_epochs = epochs() - epochs_before;
        drop(client);
        rt.shutdown().await;
        measured as f64 / n_epochs as f64
    })
}

#[test]
fn an_epoch_gathers_its_requests_without_growing_lists() {
    // Goal: the sequencer gathers an epoch's requests into lists sized for an epoch like the
    // last one, not grown push by push: growing its two lists (requests, pending replies)
    // costs each epoch of 512 three doublings more per list than one of 64. The same for the
    // dedup window's segment of the epoch's generated ids, sized like the last epoch's.
    let small = allocations_per_epoch(64);
    let large = allocations_per_epoch(512);
    eprintln!("allocations per epoch on the runtime's threads: {small:.2} (64), {large:.2} (512)");
    assert!(
        large - small <= GATHER_GROWTH_BUDGET,
        "{large:.2} allocations per epoch of 512 against {small:.2} per epoch of 64"
    );
}

/// How many more allocations an epoch of 512 requests may cost the runtime's threads than one
/// of 64: 9 measured (lists of the epoch driver and the reply stage that still grow with the
/// epoch); 13 while the dedup window grew each epoch's checkpoint segment item by item, 19
/// while the sequencer also grew its two gathered lists push by push.
const GATHER_GROWTH_BUDGET: f64 = 11.0;
