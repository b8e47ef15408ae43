//! txn's integration tests as one test binary: a module per file. `allocations` (its own
//! global allocator) and `module_graph` (a CI step of its own) are separate binaries, and
//! `module_graph` checks that every file under `tests/` is compiled by one of them.

mod common;

mod app_validation;
mod atomicity;
mod business_abort;
mod bytes_written_limit;
mod careless;
mod checkpoint_schedule;
mod checkpoint_step;
mod checkpoint_truncation;
#[cfg(feature = "cluster")]
mod cluster;
mod cluster_dispatch;
mod cluster_rejoin;
mod cluster_take_over;
mod conflict_stats;
mod constraints;
mod contains;
mod determinism;
mod epoch_close;
mod eventual;
mod exactly_once;
mod failsafe_core;
mod failsafe_submit;
mod fingerprint;
mod foreign_key_delete;
mod governance;
mod hash_rows;
mod history;
mod incremental_checkpoint;
mod index;
mod lease;
mod live_erasure;
mod merge_ops;
mod named_queries;
mod ordered_fallback;
mod outbox;
mod placement;
mod precedence;
mod readme;
mod recovery;
mod replica;
mod row_hints;
mod row_probes;
mod scan_limit;
mod serial_pass_replies;
mod serializability;
mod snapshot_query;
mod submit_many;
mod supervision;
mod typed_contracts;
mod unique;
mod vanished_store;
