//! vmsdb's transaction layer: deterministic, epoch-based ACID transactions across the
//! partitions of event-driven services.
//!
//! Define an application with [`AppBuilder`] (services, tables, one handler per service), start
//! a [`Runtime`], and submit requests through a [`Client`]. Every request and the chain of events
//! it triggers in other services is one transaction: serializable, atomic, durable, and answered
//! only after its epoch is in the log. See `ARCHITECTURE.md` for the protocol.

pub mod app;
// Not a stable API; for the criterion micro-benchmarks of the hot paths and the allocation tests.
#[doc(hidden)]
pub mod bench_api;
mod bitset;
mod clock;
#[cfg(feature = "cluster")]
pub mod cluster;
mod cluster_dispatch;
mod constraint;
pub mod context;
pub mod contract;
pub mod coordination;
mod dedup;
mod delta;
mod dense_rows;
mod envelope;
pub mod epoch;
pub mod erasure;
pub mod error;
pub mod eventual;
pub mod fingerprint;
pub mod governance;
pub mod history;
pub mod host;
pub mod ids;
mod index;
pub mod limits;
pub mod node_link;
mod outcome;
mod partition;
mod precedence;
pub mod predict;
pub mod query;
pub mod route;
mod row;
mod row_key;
pub mod runtime;
pub mod serial;
pub mod sync;
mod table;
mod table_shape;
mod trace;
mod transport;
mod wire;

pub use app::{
    App, AppBuilder, AppDef, ForeignKeyDecl, Index, Key, OnDelete, Row, ServiceRef, Table,
};
pub use cluster_dispatch::{ClusterPlacement, NodeTraffic};
pub use context::TxnCtx;
pub use contract::{
    Envelope, EventInfo, EventOf, IngressError, KeyOf, Request, RowHint, RowKeys, Service, Svc,
};
pub use coordination::{CoordinationEntry, DeltaUse, Verdict};
pub use delta::Field;
pub use epoch::{EpochStats, Fallback, SerialPos};
pub use error::{
    Abort, AbortReason, BusinessError, HandlerResult, LimitKind, PurposeRefusal, TxnError,
};
pub use eventual::{EventualOutcome, EventualRuntime};
pub use host::PartitionHost;
pub use ids::{RequestId, Tid};
pub use limits::TxnLimits;
pub use node_link::{LinkError, LoopbackLink, NodeLink};
pub use predict::SerialHints;
pub use query::{NamedQuery, ReadView};
pub use runtime::{
    Client, OutboxSink, Outcome, RecoverFrom, RecoveryReport, Retention, Runtime, RuntimeConfig,
    RuntimeStats,
};
pub use runtime::{HandOver, LeaseConfig, LeaseStatus, PreparedTakeOver};
pub use serial::SerialExecutor;
/// The derive and attribute macros: `#[derive(Table)]`, `#[derive(EventKind)]`, `#[service]`,
/// `#[handler]` (see the `txn-macros` crate).
pub use txn_macros::*;
pub use txn_storage as storage;

/// What the macros' generated code names; not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::contract::ingress;
    pub use serde;
    pub use serde_json;
}
