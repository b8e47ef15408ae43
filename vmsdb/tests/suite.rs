//! The server's integration tests as one test binary: a module per file.

mod common;

mod api;
mod cluster;
mod cluster_pg;
mod cluster_pg_marketplace;
mod commit_tracker;
mod config;
mod decode_fuzz;
mod failover;
mod forget_http;
mod governance_cli;
mod history_cli;
mod hostile;
mod live_page;
mod marketplace_driver;
mod marketplace_named_queries;
mod readiness;
mod shutdown;
mod stats_and_batch;
mod walkthrough;
