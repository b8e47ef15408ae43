//! `TxnCtx::contains`, the existence check that copies no row, reads like `get`: a transaction
//! that checks for a row a lower TID of the same epoch creates or deletes sees that write (it
//! loses the conflict and runs again after it), a transaction sees its own writes, and the
//! serial executor answers the same.

use std::sync::Arc;
use txn::{App, AppBuilder, AppDef, Request, Runtime, RuntimeConfig, SerialExecutor, ServiceRef};

struct Names;

/// `(operation, key)`: 0 creates the row, 1 deletes it, 2 answers whether it exists, 3
/// creates it and then answers whether it exists.
type Ev = (u8, u64);

impl App for Names {
    type Event = Ev;
    type Output = bool;
}

/// One service of two partitions with one table of string rows (a row that `get` would copy
/// onto the heap).
fn app() -> (Arc<AppDef<Names>>, ServiceRef) {
    let mut b = AppBuilder::<Names>::new();
    let service = b.service("names", 2);
    let table = b.table::<u64, String>(service, "names");
    b.handler(service, move |ctx, (op, key)| {
        if matches!(op, 0 | 3) {
            ctx.put(table, *key, format!("name-{key}"))?;
        }
        if *op == 1 {
            ctx.delete(table, key)?;
        }
        if matches!(op, 2 | 3) {
            let exists = ctx.contains(table, key)?;
            ctx.set_output(exists);
        }
        Ok(())
    });
    (b.build().expect("a valid app"), service)
}

fn request(service: ServiceRef, ev: Ev) -> Request<Names> {
    Request::raw(service, service.partition_of(&ev.1), ev)
}

// Goal: in one epoch (one batch), an existence check after a lower TID's create answers true
// and after a lower TID's delete false, as the serial order says; a check of the
// transaction's own write answers true; and the serial executor agrees. A check that did not
// record its read would answer from the committed state (false, then true) and commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existence_check_sees_lower_tids_and_its_own_writes() {
    let (app, service) = app();
    let rt = Runtime::start(app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    let existing = client.submit_request(request(service, (0, 2))).await;
    assert_eq!(existing.unwrap().result, Ok(None));
    let batch = [(2, 1), (0, 1), (2, 1), (1, 2), (2, 2), (3, 7)];
    let outcomes = client
        .submit_many(batch.iter().map(|ev| request(service, *ev)))
        .await;
    let answers: Vec<_> = outcomes
        .into_iter()
        .map(|o| o.expect("sequenced").result.expect("committed"))
        .collect();
    let expected = [Some(false), None, Some(true), None, Some(false), Some(true)];
    assert_eq!(answers, expected, "in one epoch");
    rt.shutdown().await;

    let mut exec = SerialExecutor::new(app);
    exec.run_request(request(service, (0, 2)), 1).unwrap();
    let serial: Vec<_> = batch
        .iter()
        .map(|ev| exec.run_request(request(service, *ev), 2).unwrap())
        .collect();
    assert_eq!(serial, expected, "on the serial executor");
}
