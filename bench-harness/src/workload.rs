//! The `Workload` trait: what the harness needs from a workload to drive it on vmsdb and on
//! every baseline, and to check it afterwards.
//!
//! A workload names its operation types, builds its application, lists its initial data as
//! ordinary requests, generates operations from a per-client generator, runs its read-only
//! queries, and audits a final state against what the committed operations say it must be.
//! The harness owns everything else (clients, timing, histograms, reports), so a new workload
//! (the marketplace) only implements this trait.

use futures::future::BoxFuture;
use services::Violations;
use std::future::Future;
use std::sync::Arc;
use txn::{
    App, AppDef, Client, EventualRuntime, ReadView, Request, SerialExecutor, ServiceRef, TxnError,
};

/// The systems a run can drive (vmsdb and the baselines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Vmsdb = 0,
    Serial = 1,
    Eventual = 2,
    Postgres = 3,
}

impl System {
    pub const COUNT: usize = 4;
}

/// A system whose state the harness reads in place, partition after partition (the serial
/// executor; the eventual baseline, whose reads are NOT one snapshot while it runs, and whose
/// partitions are owned by their tasks, so a read is a message answered later).
pub trait LocalReader<A: App> {
    /// Which system this is (workloads keep per-system counters of what their queries saw).
    const SYSTEM: System;
    /// Runs `f` on every partition of `services`; the future collects the results and borrows
    /// nothing (the serial executor's is ready at once).
    fn query<R: Send + 'static>(
        &self,
        services: &[ServiceRef],
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> BoxFuture<'static, Vec<R>>;
}

impl<A: App> LocalReader<A> for SerialExecutor<A> {
    const SYSTEM: System = System::Serial;
    fn query<R: Send + 'static>(
        &self,
        services: &[ServiceRef],
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> BoxFuture<'static, Vec<R>> {
        Box::pin(std::future::ready(SerialExecutor::query(self, services, f)))
    }
}

impl<A: App> LocalReader<A> for EventualRuntime<A> {
    const SYSTEM: System = System::Eventual;
    fn query<R: Send + 'static>(
        &self,
        services: &[ServiceRef],
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> BoxFuture<'static, Vec<R>> {
        let answers = EventualRuntime::query(self, services, f);
        Box::pin(async move {
            answers
                .await
                .expect("the eventual baseline runs until the harness shuts it down")
        })
    }
}

/// A routed request of a workload's application.
pub type RequestOf<W> = Request<<W as Workload>::App>;

/// One operation a client performs.
pub enum Op<W: Workload + ?Sized> {
    /// A transaction. `effect` is a workload-defined number summed over committed transactions
    /// of its type and handed to the audit (the amount of a deposit, the keys a YCSB-T
    /// transaction increments).
    Txn {
        ty: usize,
        request: RequestOf<W>,
        effect: i64,
    },
    /// A read-only query.
    Query { ty: usize, query: W::Query },
}

/// Per operation type: how many committed, and the sum of their effects.
#[derive(Clone, Debug, Default)]
pub struct Effects {
    pub committed: Vec<u64>,
    pub effect: Vec<i128>,
}

/// A workload the harness can drive.
pub trait Workload: Send + Sync + 'static {
    type App: App;
    /// A read-only query operation (`()` for workloads without queries).
    type Query: Clone + Send + 'static;
    /// A client's request generator (its RNG and distributions).
    type Gen: Send + 'static;

    /// The subcommand name.
    fn name(&self) -> &'static str;
    /// Names of the operation types, indexed by `Op::*::ty`.
    fn op_types(&self) -> &'static [&'static str];
    /// The parameters that define the run, for the report.
    fn parameters(&self) -> serde_json::Value;
    /// The application, to start vmsdb or a baseline with.
    fn app(&self) -> &Arc<AppDef<Self::App>>;

    /// What the initial data is, for status lines (e.g. "1000000 accounts").
    fn load_description(&self) -> String;
    /// Number of requests that load the initial data.
    fn n_load(&self) -> usize;
    /// Load request `i`, for `i < n_load()`; they commute, so they may run in any order.
    fn load_request(&self, i: usize) -> RequestOf<Self>;

    /// A generator for client `client` (independent streams from the run's seed).
    fn generator(&self, client: u64) -> Self::Gen;
    /// The next operation of a client.
    fn next_op(&self, generator: &mut Self::Gen) -> Op<Self>;

    /// Runs a query on vmsdb.
    fn run_query(
        &self,
        client: &Client<Self::App>,
        query: Self::Query,
    ) -> impl Future<Output = Result<(), TxnError>> + Send;
    /// The query as a named query of `vmsdb serve` (`POST /v1/queries/{name}` with this JSON
    /// body), for `--over-http`; `None` (the default): the workload's queries have no HTTP
    /// form, and the run over HTTP counts them as errors.
    fn http_query(&self, query: &Self::Query) -> Option<(&'static str, serde_json::Value)> {
        let _ = query;
        None
    }
    /// Runs a query on a system read in place (the serial executor, the eventual baseline).
    fn run_query_local<L: LocalReader<Self::App>>(
        &self,
        reader: &L,
        query: Self::Query,
    ) -> impl Future<Output = ()> + Send;

    /// Checks vmsdb's final state, given the effects of the committed operations of the run
    /// (the load is known to have committed completely).
    fn audit(
        &self,
        client: &Client<Self::App>,
        effects: &Effects,
    ) -> impl Future<Output = Result<Violations, TxnError>> + Send;
    /// Checks the final state of a system read in place (the serial executor, the eventual
    /// baseline once it is quiescent).
    fn audit_local<L: LocalReader<Self::App>>(
        &self,
        reader: &L,
        effects: &Effects,
    ) -> impl Future<Output = Violations> + Send;
}
