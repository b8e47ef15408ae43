//! The app the runtime benches share: one service whose handler writes the key it is sent.

use std::sync::Arc;
use txn::{App, AppBuilder, AppDef, ServiceRef};

/// One service whose handler writes the key it is sent.
pub struct Counters;

impl App for Counters {
    type Event = u64;
    type Output = ();
}

/// The `Counters` app with `n_partitions` partitions, and its service.
pub fn app(n_partitions: u32) -> (Arc<AppDef<Counters>>, ServiceRef) {
    let mut b = AppBuilder::<Counters>::new();
    let service = b.service("counters", n_partitions);
    let table = b.table::<u64, i64>(service, "kv");
    b.handler(service, move |ctx, key| {
        ctx.put(table, *key, 1)?;
        Ok(())
    });
    (b.build().expect("a valid app"), service)
}
