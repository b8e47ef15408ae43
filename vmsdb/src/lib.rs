//! vmsdb's server: an application of transactional services on the durable runtime, served
//! over HTTP/JSON (`vmsdb serve`). The library is what the binary runs, so tests and tools can
//! start a server in-process ([`Server::start`]).

pub mod alloc;
pub mod api;
pub mod apps;
pub mod batch;
pub mod cluster_node;
pub mod commit_tracker;
pub mod config;
pub mod console;
pub mod engine;
pub mod forget_route;
pub mod forward;
pub mod governance_cmd;
pub mod history_cmd;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod node;
pub mod routes;
pub mod server;
pub mod spread;
pub mod state;
pub mod stats;
pub mod status;
pub mod store;

pub use apps::{AppChoice, ServedApp};
pub use config::{Cli, Command, ServeArgs, ServerLimits, Settings};
pub use server::{ServeError, Server, run};
