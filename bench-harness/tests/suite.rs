//! The bench harness's integration tests as one test binary: a module per file.

mod common;

mod crash;
mod explain;
mod nodes;
mod open_loop;
mod over_http;
mod postgres;
mod smoke;
