//! The `postgres` baseline: the same transactions on a private PostgreSQL server at
//! SERIALIZABLE isolation, with synchronous commit and fsync on, retried on serialization
//! failures and deadlocks.
//!
//! # How a run goes
//!
//! 1. [`instance`] finds the server binaries on this machine (nothing is installed; a clear
//!    error says how to install them), `initdb`s a fresh cluster in a temporary directory and
//!    starts `postgres` listening only on a unix socket there. The server is stopped and the
//!    directory removed when the [`instance::PgInstance`] is dropped, on every path out.
//! 2. The workload creates its tables, bulk-loads the same initial data vmsdb loads (derived
//!    from the workload's own load requests: same seed, same rows), builds its keys and
//!    indexes, and analyzes.
//! 3. `--pg-connections` connections are opened, each with the workload's prepared
//!    statements. The shared closed-loop driver ([`crate::driver::drive_runtime`]) runs the
//!    same clients, generators and request streams as on vmsdb against a [`PgTarget`]: every
//!    operation takes a free connection (clients queue for one, in FIFO order) and runs as one
//!    `BEGIN ISOLATION LEVEL SERIALIZABLE … COMMIT`. A serialization failure (SQLSTATE 40001)
//!    or a deadlock (40P01) rolls back and runs the whole transaction again, up to
//!    [`RETRIES_MAX`] times; an operation that still fails is reported as an abort with the
//!    reason "conflict retries exhausted". Business rules (insufficient balance, stock
//!    shortage, …) abort with the same reasons as the vmsdb handlers.
//! 4. The final state is read back at one snapshot and judged by the workload's own checkers
//!    (`services::ledger::check`, `services::ycsb::check`, `services::marketplace::check`).
//!
//! Each workload translates the inbound event of a request (the first event of its vmsdb
//! chain) into one SQL transaction doing the same reads, writes and business checks as the
//! whole chain: see [`transfer`], [`ycsb`] and [`marketplace`].

pub mod instance;
pub mod marketplace;
pub mod transfer;
pub mod ycsb;

use crate::HarnessError;
use crate::cli::{Baseline, CommonArgs};
use crate::driver::{AsyncTarget, drive_runtime, fmt_count};
use crate::progress::Ui;
use crate::report::{LoadSummary, SystemRun};
use crate::workload::{Effects, RequestOf, Workload};
use futures::future::BoxFuture;
use services::Violations;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_postgres::error::SqlState;
use txn::{AbortReason, TxnError};

/// Most times one operation is retried after serialization failures or deadlocks before it
/// gives up (and is reported as aborted, "conflict retries exhausted").
pub const RETRIES_MAX: u32 = 1000;

/// Rows per statement when bulk-loading (multi-row `INSERT … SELECT FROM unnest(arrays)`).
pub const LOAD_CHUNK_ROWS: usize = 50_000;

const BEGIN_SERIALIZABLE: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";
const BEGIN_SERIALIZABLE_READ_ONLY: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY";
/// The audit runs after every client finished, so a snapshot is all it needs.
const BEGIN_SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// Why a PostgreSQL operation failed (other than by a business rule).
#[derive(Debug)]
pub enum PgFailure {
    /// The server or the connection reported an error.
    Db(tokio_postgres::Error),
    /// The harness found something it cannot translate or a row it cannot read back.
    Harness(String),
}

impl From<tokio_postgres::Error> for PgFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        PgFailure::Db(e)
    }
}

impl std::fmt::Display for PgFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgFailure::Db(e) => write!(f, "{e}"),
            PgFailure::Harness(m) => f.write_str(m),
        }
    }
}

impl PgFailure {
    /// A serialization failure or a deadlock: the transaction was rolled back and may simply
    /// be run again.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgFailure::Db(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
            ),
            PgFailure::Harness(_) => false,
        }
    }
}

/// What one attempt of a transaction decided: commit (`Ok`) or a business abort.
pub type TxnResult = Result<(), AbortReason>;

/// One connection of the pool, with the workload's prepared statements.
pub struct PgConn<S> {
    pub client: tokio_postgres::Client,
    pub stmts: S,
}

/// A workload the postgres baseline can run: its schema, its load, and its transactions,
/// queries and audit in SQL.
pub trait PgWorkload: Workload<Query: Sync> {
    /// State of one postgres run shared by every connection (counters, names).
    type PgRun: Send + Sync + 'static;
    /// The prepared statements of one connection.
    type Stmts: Send + Sync + 'static;

    /// `CREATE TABLE`s, without keys or indexes (they are built after the bulk load).
    const TABLES: &'static str;
    /// Primary keys and indexes, built after the load.
    const INDEXES: &'static str;

    /// The state of a new run.
    fn pg_run(&self) -> Self::PgRun;

    /// Loads the initial data (the rows vmsdb's load requests create); returns the rows
    /// written.
    fn pg_load(
        &self,
        client: &tokio_postgres::Client,
    ) -> impl Future<Output = Result<u64, PgFailure>> + Send;

    /// Prepares a connection's statements.
    fn pg_prepare(
        &self,
        client: &tokio_postgres::Client,
    ) -> impl Future<Output = Result<Self::Stmts, PgFailure>> + Send;

    /// The body of one attempt of the transaction of `event` (an inbound event of the
    /// workload's requests), inside `BEGIN ISOLATION LEVEL SERIALIZABLE`; the caller commits on
    /// `Ok(Ok(()))` and rolls back otherwise.
    fn pg_txn(
        &self,
        run: &Self::PgRun,
        conn: &PgConn<Self::Stmts>,
        event: &<Self::App as txn::App>::Event,
    ) -> impl Future<Output = Result<TxnResult, PgFailure>> + Send;

    /// The body of one attempt of a read-only query, inside `BEGIN ISOLATION LEVEL
    /// SERIALIZABLE READ ONLY`.
    fn pg_query(
        &self,
        run: &Self::PgRun,
        conn: &PgConn<Self::Stmts>,
        query: &Self::Query,
    ) -> impl Future<Output = Result<(), PgFailure>> + Send;

    /// Reads the final state (inside one snapshot) and counts violations per criterion with
    /// the workload's own checkers.
    fn pg_audit(
        &self,
        run: &Self::PgRun,
        client: &tokio_postgres::Client,
        effects: &Effects,
    ) -> impl Future<Output = Result<Violations, PgFailure>> + Send;
}

/// A business abort, as a vmsdb handler of `service` would report it with `ctx.abort`.
pub fn abort(service: &str, message: String) -> Result<TxnResult, PgFailure> {
    abort_with(service, AbortReason::USER_KIND_DEFAULT, message)
}

/// The business abort a vmsdb handler of `service` returning `error` reports.
pub fn business_abort<E: txn::BusinessError>(
    service: &str,
    error: E,
) -> Result<TxnResult, PgFailure> {
    abort_with(service, error.kind(), error.to_string())
}

/// A business abort of `kind`, as a vmsdb handler of `service` would report it with
/// `ctx.abort_with`.
pub fn abort_with(service: &str, kind: &str, message: String) -> Result<TxnResult, PgFailure> {
    Ok(Err(AbortReason::User {
        service: service.to_string(),
        kind: kind.to_string(),
        message,
    }))
}

/// Wall-clock milliseconds (what stands in for vmsdb's epoch timestamp).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Converts a value read back from PostgreSQL into the model's integer type.
pub fn conv<T: TryFrom<i64>>(v: i64, what: &str) -> Result<T, PgFailure> {
    T::try_from(v).map_err(|_| PgFailure::Harness(format!("{what} {v} is out of range")))
}

/// Awaits statements that were all sent at once (tokio-postgres pipelines futures polled
/// together: they are sent in order and the server runs them in order, in one round trip).
/// Returns every result, or the first error in statement order: a statement that follows a
/// failed one only reports "current transaction is aborted", the first error is the cause.
pub async fn pipeline<'a, T: Send + 'a>(
    statements: Vec<BoxFuture<'a, Result<T, tokio_postgres::Error>>>,
) -> Result<Vec<T>, PgFailure> {
    let results = futures::future::join_all(statements).await;
    results
        .into_iter()
        .collect::<Result<Vec<T>, _>>()
        .map_err(PgFailure::Db)
}

/// One column of a bulk insert.
pub enum Col<'a> {
    Int(&'a [i64]),
    Text(&'a [String]),
    /// The marketplace products' status, a PostgreSQL enum.
    ProductStatus(&'a [services::marketplace::ProductStatus]),
}

impl Col<'_> {
    fn len(&self) -> usize {
        match self {
            Col::Int(v) => v.len(),
            Col::Text(v) => v.len(),
            Col::ProductStatus(v) => v.len(),
        }
    }
}

/// Bulk-inserts `cols` (equally long) with `sql`, an `INSERT … SELECT … FROM unnest($1, …)`
/// taking one array per column, [`LOAD_CHUNK_ROWS`] rows per statement. Returns the rows
/// inserted.
pub async fn insert_columns(
    client: &tokio_postgres::Client,
    sql: &str,
    cols: &[Col<'_>],
) -> Result<u64, PgFailure> {
    use tokio_postgres::types::ToSql;
    let n = cols.first().map_or(0, Col::len);
    if cols.iter().any(|c| c.len() != n) {
        return Err(PgFailure::Harness(format!(
            "columns of unequal length for {sql}"
        )));
    }
    let stmt = client.prepare(sql).await?;
    let mut inserted = 0;
    for start in (0..n).step_by(LOAD_CHUNK_ROWS) {
        let end = (start + LOAD_CHUNK_ROWS).min(n);
        let chunk: Vec<Col<'_>> = cols
            .iter()
            .map(|c| match c {
                Col::Int(v) => Col::Int(&v[start..end]),
                Col::Text(v) => Col::Text(&v[start..end]),
                Col::ProductStatus(v) => Col::ProductStatus(&v[start..end]),
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = chunk
            .iter()
            .map(|c| match c {
                Col::Int(v) => v as &(dyn ToSql + Sync),
                Col::Text(v) => v as &(dyn ToSql + Sync),
                Col::ProductStatus(v) => v as &(dyn ToSql + Sync),
            })
            .collect();
        inserted += client.execute(&stmt, &params).await?;
    }
    Ok(inserted)
}

/// Reads every row `sql` returns, streaming them through `f`.
pub async fn read_rows(
    client: &tokio_postgres::Client,
    sql: &str,
    mut f: impl FnMut(&tokio_postgres::Row) -> Result<(), PgFailure> + Send,
) -> Result<(), PgFailure> {
    use futures::TryStreamExt;
    let rows = client.query_raw(sql, std::iter::empty::<i64>()).await?;
    let mut rows = std::pin::pin!(rows);
    while let Some(row) = rows.try_next().await? {
        f(&row)?;
    }
    Ok(())
}

/// A fixed pool of connections; an operation waits (FIFO) for a free one.
struct Pool<S> {
    free: Mutex<Vec<PgConn<S>>>,
    permits: tokio::sync::Semaphore,
}

struct PoolGuard<'a, S> {
    pool: &'a Pool<S>,
    conn: Option<PgConn<S>>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl<S> Pool<S> {
    fn new(conns: Vec<PgConn<S>>) -> Self {
        let n = conns.len();
        Pool {
            free: Mutex::new(conns),
            permits: tokio::sync::Semaphore::new(n),
        }
    }

    async fn get(&self) -> PoolGuard<'_, S> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let conn = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .expect("a permit guarantees a free connection");
        PoolGuard {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        }
    }
}

impl<S> std::ops::Deref for PoolGuard<'_, S> {
    type Target = PgConn<S>;
    fn deref(&self) -> &PgConn<S> {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl<S> Drop for PoolGuard<'_, S> {
    fn drop(&mut self) {
        // The connection goes back before the permit is released (fields drop after this).
        if let Some(c) = self.conn.take() {
            self.pool
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
    }
}

struct Inner<W: PgWorkload> {
    w: Arc<W>,
    run: W::PgRun,
    pool: Pool<W::Stmts>,
    /// Attempts rolled back by a serialization failure or deadlock and run again.
    retries: AtomicU64,
    /// Operations that gave up after `RETRIES_MAX` retries.
    gave_up: AtomicU64,
}

/// The postgres baseline as a target of the shared async driver.
pub struct PgTarget<W: PgWorkload> {
    inner: Arc<Inner<W>>,
}

impl<W: PgWorkload> Clone for PgTarget<W> {
    fn clone(&self) -> Self {
        PgTarget {
            inner: self.inner.clone(),
        }
    }
}

/// What one operation runs.
enum Work<'a, W: PgWorkload> {
    Txn(&'a <W::App as txn::App>::Event),
    Query(&'a W::Query),
}

impl<W: PgWorkload> Clone for Work<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W: PgWorkload> Copy for Work<'_, W> {}

impl<W: PgWorkload> PgTarget<W> {
    /// Runs `work` as one transaction on a free connection, retrying serialization failures
    /// and deadlocks.
    async fn run_op(&self, work: Work<'_, W>) -> Result<TxnResult, TxnError> {
        let inner = &*self.inner;
        let conn = inner.pool.get().await;
        let begin = match work {
            Work::Txn(_) => BEGIN_SERIALIZABLE,
            Work::Query(_) => BEGIN_SERIALIZABLE_READ_ONLY,
        };
        let mut retries = 0u32;
        loop {
            let body = async {
                match work {
                    Work::Txn(event) => inner.w.pg_txn(&inner.run, &conn, event).await,
                    Work::Query(q) => inner.w.pg_query(&inner.run, &conn, q).await.map(Ok),
                }
            };
            // BEGIN is pipelined with the body's first statements (sent first, run first). It
            // only fails with a broken connection, which fails the body's statements too; the
            // operation is then reported as an error, never as committed.
            let (began, outcome) = futures::join!(conn.client.batch_execute(begin), body);
            let outcome = began.map_err(PgFailure::Db).and(outcome);
            let (failure, in_txn) = match outcome {
                Ok(Ok(())) => match conn.client.batch_execute("COMMIT").await {
                    Ok(()) => return Ok(Ok(())),
                    // A failed COMMIT has ended the transaction already.
                    Err(e) => (PgFailure::Db(e), false),
                },
                Ok(Err(reason)) => {
                    if let Err(e) = conn.client.batch_execute("ROLLBACK").await {
                        return Err(harness_error(&PgFailure::Db(e)));
                    }
                    return Ok(Err(reason));
                }
                Err(f) => (f, true),
            };
            if in_txn {
                // After an error the server only accepts ROLLBACK; a broken connection fails
                // here too and the original error is the one reported.
                let _ = conn.client.batch_execute("ROLLBACK").await;
            }
            if !failure.is_retryable() {
                return Err(harness_error(&failure));
            }
            if retries == RETRIES_MAX {
                inner.gave_up.fetch_add(1, Ordering::Relaxed);
                return Ok(Err(AbortReason::RetriesExhausted { retries }));
            }
            retries += 1;
            inner.retries.fetch_add(1, Ordering::Relaxed);
            // Immediately at first, then with a short random back-off so that transactions
            // fighting over a hot row stop colliding in lockstep.
            if retries > 2 {
                let cap_ms = 1u64 << (retries - 2).min(4);
                let wait = {
                    use rand::Rng;
                    rand::rng().random_range(0..=cap_ms * 1000)
                };
                tokio::time::sleep(Duration::from_micros(wait)).await;
            }
        }
    }
}

fn harness_error(f: &PgFailure) -> TxnError {
    // `TxnError` has no variant for a foreign database; `Storage` is the closest (the
    // baseline's storage engine failed) and the message says what it was.
    TxnError::Storage(format!("postgres: {f}"))
}

impl<W: PgWorkload> AsyncTarget<W> for PgTarget<W> {
    async fn submit(&self, request: RequestOf<W>) -> Result<TxnResult, TxnError> {
        self.run_op(Work::Txn(request.event())).await
    }

    async fn query(&self, _w: &W, query: W::Query) -> Result<(), TxnError> {
        match self.run_op(Work::Query(&query)).await? {
            Ok(()) => Ok(()),
            // Only retries running out can abort a query; the driver would count it as
            // committed, so say it failed instead.
            Err(reason) => Err(TxnError::Storage(format!("postgres query: {reason}"))),
        }
    }
}

fn pg_err(what: &str) -> impl Fn(PgFailure) -> HarnessError + '_ {
    move |e| HarnessError::Storage(format!("postgres: {what}: {e}"))
}

/// Runs the postgres baseline on `w`: start a private server, load, drive, audit, stop.
pub async fn run<W: PgWorkload>(
    w: Arc<W>,
    common: &CommonArgs,
    ui: Ui,
) -> Result<SystemRun, HarnessError> {
    let name = Baseline::Postgres.name();
    let bins = instance::find_binaries()?;
    let n_conns = common.pg_connections;
    let mut server = instance::PgInstance::start(&bins, n_conns + 10, move |line| ui.status(line))?;
    let (admin, admin_task) = server.connect_when_ready(Duration::from_secs(60)).await?;
    let settings = admin
        .query_one(
            "SELECT current_setting('server_version'), current_setting('fsync'), \
             current_setting('synchronous_commit'), current_setting('default_transaction_isolation'), \
             current_setting('shared_buffers'), current_setting('max_connections')",
            &[],
        )
        .await
        .map_err(|e| pg_err("reading the settings")(e.into()))?;
    let version: String = settings.get(0);
    let version = version.split_whitespace().next().unwrap_or("?").to_string();
    let (fsync, sync_commit, isolation): (String, String, String) =
        (settings.get(1), settings.get(2), settings.get(3));
    ui.status(format!(
        "{name}: PostgreSQL {version} up (fsync {fsync}, synchronous_commit {sync_commit}, \
         default isolation {isolation}, shared_buffers {}, max_connections {})",
        settings.get::<_, String>(4),
        settings.get::<_, String>(5),
    ));

    // Schema and load.
    ui.status(format!("{name}: loading {}", w.load_description()));
    let start = Instant::now();
    admin
        .batch_execute(W::TABLES)
        .await
        .map_err(|e| pg_err("creating the tables")(e.into()))?;
    let rows = w.pg_load(&admin).await.map_err(pg_err("loading"))?;
    let inserted = start.elapsed();
    admin
        .batch_execute(W::INDEXES)
        .await
        .map_err(|e| pg_err("building keys and indexes")(e.into()))?;
    // VACUUM sets hint bits and the visibility map now rather than during the run; CHECKPOINT
    // writes the loaded pages out so the run does not pay for them.
    for step in ["VACUUM (ANALYZE)", "CHECKPOINT"] {
        admin
            .batch_execute(step)
            .await
            .map_err(|e| pg_err(step)(e.into()))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let n_load = w.n_load();
    let load = LoadSummary::new(w.load_description(), n_load as u64, seconds);
    ui.status(format!(
        "{name}: loaded {} rows in {seconds:.2} s (inserts {:.2} s, then keys, indexes, \
         VACUUM ANALYZE, CHECKPOINT); opening {n_conns} connections",
        fmt_count(rows),
        inserted.as_secs_f64(),
    ));

    // The pool.
    let mut conns = Vec::with_capacity(n_conns as usize);
    let mut conn_tasks = Vec::with_capacity(n_conns as usize);
    for _ in 0..n_conns {
        let (client, task) = server.connect().await?;
        // Under SERIALIZABLE a sequential scan takes a predicate lock on the whole table, so
        // every concurrent writer of the table conflicts with it. Tables that start empty (the
        // marketplace's orders, shipments, delivery queue, …) would otherwise be planned as
        // sequential scans from their statistics at load time; PostgreSQL's documentation
        // advises encouraging index scans for serializable workloads. Every statement of the
        // run has an index path (the audit runs on another connection).
        client
            .batch_execute("SET enable_seqscan = off")
            .await
            .map_err(|e| pg_err("configuring a connection")(e.into()))?;
        let stmts = w
            .pg_prepare(&client)
            .await
            .map_err(pg_err("preparing statements"))?;
        conns.push(PgConn { client, stmts });
        conn_tasks.push(task);
    }
    let target = PgTarget {
        inner: Arc::new(Inner {
            w: w.clone(),
            run: w.pg_run(),
            pool: Pool::new(conns),
            retries: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
        }),
    };
    ui.status(format!(
        "{name}: {} over {n_conns} connections",
        crate::driving(common)
    ));
    let progress = ui.run_bar(name, common.duration);
    let driven = drive_runtime(
        w.clone(),
        target.clone(),
        crate::drive_config(common),
        &progress,
    )
    .await;
    crate::warn_late(ui, name, &driven);
    let retries = target.inner.retries.load(Ordering::Relaxed);
    let gave_up = target.inner.gave_up.load(Ordering::Relaxed);
    let finished = driven.recorder.committed() + driven.recorder.aborted();
    ui.status(format!(
        "{name}: {} serialization-failure/deadlock retries ({:.3} per finished operation); \
         {} operations gave up after {RETRIES_MAX} retries",
        fmt_count(retries),
        retries as f64 / finished.max(1) as f64,
        fmt_count(gave_up),
    ));

    ui.status(format!("{name}: checking consistency"));
    let effects = crate::effects_of(&driven.recorder);
    admin
        .batch_execute(BEGIN_SNAPSHOT)
        .await
        .map_err(|e| pg_err("starting the audit")(e.into()))?;
    let violations = w
        .pg_audit(&target.inner.run, &admin, &effects)
        .await
        .map_err(pg_err("auditing"))?;
    admin
        .batch_execute("COMMIT")
        .await
        .map_err(|e| pg_err("ending the audit")(e.into()))?;

    // Close every connection, then stop the server (dropping `server` also does, on any path).
    drop(target);
    drop(admin);
    for t in conn_tasks.into_iter().chain([admin_task]) {
        let _ = t.await;
    }
    server.stop();
    ui.status(format!("{name}: server stopped, data directory removed"));

    Ok(SystemRun {
        name,
        recorder: driven.recorder,
        elapsed: driven.elapsed,
        violations,
        load,
        runtime_stats: None,
        storage: format!(
            "PostgreSQL {version} (SERIALIZABLE, fsync {fsync}, synchronous_commit \
             {sync_commit}), {n_conns} connections, {} serialization/deadlock retries, {} gave up",
            fmt_count(retries),
            fmt_count(gave_up)
        ),
        anomalies_expected: Baseline::Postgres.anomalies_expected(),
        // The server's work is done by other processes, which the harness does not measure.
        usage: None,
    })
}
