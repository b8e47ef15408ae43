//! The services' integration tests as one test binary: a module per file. `marketplace_allocations`
//! counts allocations with its own global allocator, so it is a binary of its own.

mod history;
mod ledger;
mod marketplace;
mod marketplace_deltas;
mod marketplace_growth;
mod tutorial;
mod ycsb;
