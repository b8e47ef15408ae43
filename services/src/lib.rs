//! Real services written against vmsdb's public `txn` API, exactly as a user would write them:
//! the Streaming-Ledger style transfer app ([`ledger`]), YCSB-T multi-key read-modify-write
//! ([`ycsb`]), and the pieces the bench harness drives them with (key distributions in [`zipf`],
//! a concurrent bulk loader in [`load`]).
//!
//! Every workload exposes the same shape: a handle that builds the application, functions that
//! turn a business operation into a routed [`txn::Request`], and consistency checkers that return
//! [`Violations`] counted per criterion (0 everywhere is the expected result).

pub mod ledger;
pub mod load;
pub mod marketplace;
pub mod ycsb;
pub mod zipf;

use std::collections::BTreeMap;

/// Violation counts of a consistency check, per criterion name. Every criterion a checker knows
/// is present (with 0 when it holds), so a report always lists what was checked.
pub type Violations = BTreeMap<&'static str, u64>;
