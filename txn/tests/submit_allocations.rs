//! Heap allocations of the submit path, counted on the caller's thread: a steady stream of
//! `Client::submit_request` calls allocates no reply channel (or anything else) per request.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use txn::{App, AppBuilder, AppDef, Client, Request, Runtime, RuntimeConfig, ServiceRef};

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
