//! Bulk loading through the public API: many concurrent submissions of ordinary requests.
//!
//! Loading adds nothing to the transaction layer: initial data goes in as normal transactions
//! (deposits for the ledger, batch inserts for YCSB), so it is logged, durable and replayable
//! like everything else. Throughput comes from concurrency — enough requests in flight to fill
//! every epoch — not from a side door.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use txn::{AbortReason, App, Client, Request, TxnError};

/// What a load did.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub n_committed: u64,
    pub n_aborted: u64,
    /// The first abort seen, to say why a load was incomplete.
    pub first_abort: Option<AbortReason>,
    pub elapsed: Duration,
}

/// Submits requests `make(0) .. make(n - 1)` with `concurrency` requests in flight and waits for
/// all of them. The order of commits is unspecified; use it for requests that commute (opening
/// distinct accounts, inserting distinct keys). Must run inside a tokio runtime.
pub async fn submit_all<A: App>(
    client: &Client<A>,
    n: usize,
    concurrency: usize,
    make: impl Fn(usize) -> Request<A> + Send + Sync + 'static,
) -> Result<LoadReport, TxnError> {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let make = Arc::new(make);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (client, next, make) = (client.clone(), next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut report = (0u64, 0u64, None);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let outcome = client.submit_request(make(i)).await?;
                match outcome.result {
                    Ok(_) => report.0 += 1,
                    Err(reason) => {
                        report.1 += 1;
                        report.2.get_or_insert(reason);
                    }
                }
            }
            Ok::<_, TxnError>(report)
        }));
    }
    let mut report = LoadReport {
        n_committed: 0,
        n_aborted: 0,
        first_abort: None,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        // A loader task only fails by panicking (a bug): pass the panic on.
        let (c, a, first) = t
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        report.n_committed += c;
        report.n_aborted += a;
        if report.first_abort.is_none() {
            report.first_abort = first;
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
