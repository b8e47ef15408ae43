//! Real services written against vmsdb's public `txn` API, exactly as a user would write them:
//! the Streaming-Ledger style transfer app ([`ledger`]), YCSB-T multi-key read-modify-write
//! ([`ycsb`]), and the pieces the bench harness drives them with (key distributions in [`zipf`],
//! a concurrent bulk loader in [`load`]).
//!
//! Every workload exposes the same shape: a handle that builds the application, functions that
//! turn a business operation into a [`Request`], and consistency checkers that return
//! [`Violations`] counted per criterion (0 everywhere is the expected result).

pub mod ledger;
pub mod load;
pub mod marketplace;
pub mod ycsb;
pub mod zipf;

use std::collections::BTreeMap;
use txn::ServiceRef;

/// An inbound request, already routed: the service and partition its first step runs in, and
/// the event. Routing is computed once when the request is built, so the driver that submits it
/// (with `Client::submit_to` or `SerialExecutor::run`) does no per-request hashing of its own.
#[derive(Clone, Debug)]
pub struct Request<E> {
    pub service: ServiceRef,
    pub partition: u32,
    pub event: E,
}

impl<E> Request<E> {
    /// A request for the partition of `service` that owns `key`.
    pub fn keyed<K: std::hash::Hash + ?Sized>(service: ServiceRef, key: &K, event: E) -> Self {
        Request {
            service,
            partition: service.partition_of(key),
            event,
        }
    }
}

/// Violation counts of a consistency check, per criterion name. Every criterion a checker knows
/// is present (with 0 when it holds), so a report always lists what was checked.
pub type Violations = BTreeMap<&'static str, u64>;
