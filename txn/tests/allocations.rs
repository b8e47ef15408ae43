//! Heap allocations per transaction where memory is meant to be reused, counted per thread: a
//! steady stream of `Client::submit_request` calls allocates nothing per request on the
//! caller's thread, and running transactions one at a time (the serial pass's and
//! `SerialExecutor`'s `run_chain`) allocates nothing per transaction.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use txn::{
    App, AppBuilder, AppDef, Client, Request, Runtime, RuntimeConfig, SerialExecutor, ServiceRef,
};

thread_local! {
    // Const-initialized and without destructor: reading it never allocates.
    static THREAD_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting each thread's allocations in that thread.
struct CountingPerThread;

// SAFETY: every call is passed unchanged to the system allocator; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingPerThread {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        THREAD_ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        THREAD_ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        THREAD_ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingPerThread = CountingPerThread;

fn thread_allocations() -> u64 {
    THREAD_ALLOCATIONS.with(Cell::get)
}

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

/// Submits `n` requests one after the other from the calling thread (each awaited before the
/// next), on keys from `first`; returns the allocations this thread made meanwhile.
fn submit_in_turn(client: &Client<Counters>, service: ServiceRef, first: u64, n: u64) -> u64 {
    let caller = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    caller.block_on(async {
        let before = thread_allocations();
        for key in first..first + n {
            let request = Request::raw(service, service.partition_of(&key), key);
            let outcome = client.submit_request(request).await.expect("an outcome");
            outcome.result.expect("commits");
        }
        thread_allocations() - before
    })
}

#[test]
fn submitting_alone_allocates_nothing_per_request_on_the_callers_thread() {
    // Goal: the caller's side of a request submitted alone (admission, the hand-off to the
    // sequencer, the reply) reuses its memory: a reply channel per request would show as at
    // least one allocation per request here.
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
    let n_requests = 1_000;
    let measured = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Warm up: the admission buffer, the channel's blocks and the first reply slot.
                submit_in_turn(&client, service, 0, 100);
                submit_in_turn(&client, service, 100, n_requests)
            })
            .join()
            .expect("the caller thread")
    });
    // The channel may now and then add a block of slots; per request nothing.
    assert!(
        measured < n_requests / 10,
        "{measured} allocations on the caller's thread for {n_requests} requests"
    );
    drop(client);
    server.block_on(rt.shutdown());
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
