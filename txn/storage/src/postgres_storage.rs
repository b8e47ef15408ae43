//! The [`Storage`] backend on PostgreSQL (cargo feature `postgres`): the log and the checkpoints
//! of one store in the tables of one schema, every write one `READ COMMITTED` transaction
//! (durable when its commit returns, with the server's `synchronous_commit = on`; a chunk of
//! checkpoint rows only once its checkpoint's completion returns, see [`write_rows`]).
//!
//! # Tables
//!
//! Created on first use, in the schema given to [`PostgresStorage::open_in_schema`]
//! ([`DEFAULT_SCHEMA`] otherwise). An open first asks the catalog whether the schema is complete
//! and changes nothing if it is, so the opens of a standby contending for the lease never wait
//! for (or hold up) the holder's writes; otherwise it creates what is missing
//! (`CREATE ... IF NOT EXISTS`) in one `READ COMMITTED` transaction under an advisory lock, so
//! that opens racing on a fresh database queue on the lock and each then sees what the one
//! before it created: none fails to serialize (40001), whatever the server's default
//! isolation (a `SERIALIZABLE` transaction would keep the snapshot it took before the wait).
//!
//! ```text
//! log      epoch bigint PK      record bytea   record envelope (crc32c, len, batch)  see `record`
//! checkpoint_versions  key bytea, epoch bigint, seq bigint, live boolean, envelope bytea (row
//!          envelope): every version of a row a checkpoint wrote that is still needed; no key
//!          index, a BRIN index on epoch, a B-tree on epoch of the deletions only
//! checkpoint_chunk  a sequence: the `seq` of each chunk's rows (the column's default)
//! meta     name text PK         value bytea    "latest_complete", "pending_epoch",
//!                                              "pending_repeats", "pending_rows",
//!                                              "pruned_through", "complete_rows",
//!                                              "unpruned_rows" (u64 + crc32c), "store_info"
//!                                              (crc32c + record)
//! lease    id = 1               record bytea   holder, term, expiry (crc32c), NULL if never
//! ```
//!
//! Each checkpoint row is written once, as a version tagged with its checkpoint's epoch: the state
//! as of the latest complete checkpoint `c` is, per key, its newest version at or below `c` if
//! that is live, and the rows of an incomplete checkpoint are those above it. The versions at or
//! below `pruned_through` (`p`, `c` when absent) are pruned: at most one per key, live; those in
//! `(p, c]` are not yet, and a read merges each key's newest of them over the pruned rows. A
//! chunk goes in as one binary `COPY ... FROM STDIN` (`postgres_copy::CopyIn`) into a table with no index on the key, so a row costs a heap tuple and
//! its WAL, and no B-tree insertion at a random place (two thirds of a chunk's time with the `(key,
//! epoch)` primary key of the previous layout); the BRIN index costs next to nothing (rows of one
//! epoch lie together) and the index of deletions takes only those. Each chunk adds its row count
//! to `pending_rows`. Completing `c` weighs the versions not yet pruned, its own rows included,
//! against all the rows at or below `c` (`unpruned_rows`, `complete_rows`: counted from the
//! chunks' counts and the deletions' results, never by a scan): up to a tenth
//! ([`limits::POSTGRES_UNPRUNED_ROWS_DIVISOR`]), it only moves `latest_complete` (and sets
//! `pruned_through` if unset), so a small checkpoint over a large table completes in time of its
//! own rows; above that, or when the rows were not counted (an earlier build's store), it
//! deletes, in the same transaction, every version those in `(p, c]` replace (a hash join of
//! them, found through the BRIN index, against the older ones, nearly the whole table; a merge
//! join of two sorts while the server has no statistics of the table yet) and then their
//! deletions (through their index), so every key keeps at most one version at or below `c` (and
//! it is live), and unsets `pruned_through`; completing the first checkpoint (none complete
//! before it) skips the join: every row in the table is its own. A store of the layout before
//! (no `pruned_through`) is read as pruned through `c`, which it is. A key
//! written again within one checkpoint (a chunk written again after a failed call, deltas merged
//! into one checkpoint, a checkpoint continued by another handle) leaves two versions of the same
//! epoch: the rows of each chunk carry an increasing `seq`, and a handle that sees a chunk of it
//! may repeat a key — a 64-bit hash of a key it wrote into the checkpoint before, or a checkpoint
//! that may hold rows it did not write (it did not start the checkpoint, or another handle took a
//! `seq` since its last chunk), whose keys it does not all know — marks the checkpoint
//! (`pending_repeats`), and its completion first deletes every version of the checkpoint that a
//! later `seq` replaces. Starting a checkpoint after an abandoned one deletes the versions above
//! `c`. (The first layout copied each checkpoint from a `pending` table into a `state` table at
//! completion, writing every row twice; the second, a table `checkpoint_rows` keyed by `(key,
//! epoch)`, upserted every row into its index; a schema holding the tables of either is refused.)
//!
//! Epochs are `u64`; a `bigint` column stores `epoch ^ 2^63`, which keeps their order. Log
//! records are stored out of line and uncompressed (`STORAGE EXTERNAL`): they are rarely
//! compressible and compressing them would cost every append.
//!
//! # Concurrency and fencing
//!
//! Appends lock the log table against each other (`SHARE ROW EXCLUSIVE`, which readers ignore), so
//! the order check and the insert are atomic; checkpoint writes do the same on
//! `checkpoint_versions`, so a long completion never holds up an append. A handle that took the
//! lease ([`Storage::acquire_lease`]; expiry by the **database's** clock, `clock_timestamp()`)
//! first reads the lease row `FOR KEY SHARE` in each write transaction and refuses the write if the
//! term moved. Taking the lease with a new term locks the row `FOR UPDATE`: it waits for writes in
//! flight, and writes after it wait for it and then see the new term. So a deposed handle's write
//! either commits before the take-over or is refused with [`StorageError::Fenced`]. A renewal (the
//! term kept) only takes `FOR NO KEY UPDATE`, which writers' `FOR KEY SHARE` does not conflict
//! with, so a long checkpoint transaction never holds up the holder's renewal.
//!
//! # Threads
//!
//! The trait is synchronous; tokio-postgres is async. Each store owns a private tokio runtime
//! with one worker thread and three connections (log, checkpoints, reads; more for a while to
//! read a large checkpoint). A call spawns its work on that runtime and waits on a plain
//! channel, so it never nests a runtime and cannot panic when called from a tokio worker thread
//! (it only blocks that thread for the duration of the call, as any blocking I/O would; call it
//! from a blocking thread, as the runtime does).
//! Dropping the store shuts its runtime down without waiting, which is safe anywhere. Log reads
//! stream records from the runtime through a bounded channel, so the caller's visitor runs on
//! the caller's thread. A checkpoint read takes the pruned rows as binary `COPY`s of a
//! sequential scan (`postgres_copy`; a large table in up to
//! [`limits::POSTGRES_CHECKPOINT_READERS_MAX`] ranges of heap blocks, each on its own
//! connection, all in one exported snapshot) and the unpruned versions, with their epochs, by
//! one more `COPY`, and sorts them by key on the caller's thread, a key's newest unpruned
//! version replacing its pruned row (a deletion hiding it): it holds the checkpoint's bytes in
//! memory once (about 80 bytes a row for 16-byte keys and 40-byte values), which recovery, loading every row into
//! memory anyway, can afford, and costs a fraction of a key-ordered index scan that fetches each
//! row from a random heap page. A connection that breaks fails its calls with
//! [`StorageError::Io`]; the store is then reopened by its owner (no reconnection inside).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, IsolationLevel, NoTls, Transaction};

use crate::lease::{self, HeldTerm, LeaseRecord};
use crate::postgres_copy::{CopiedRows, CopyIn};
use crate::{CheckpointRow, Storage, StorageError, limits, record, row};

const BACKEND: &str = "postgres";

/// The schema a store's tables go into unless [`PostgresStorage::open_in_schema`] names one.
pub const DEFAULT_SCHEMA: &str = "vmsdb";

const META_LATEST: &str = "latest_complete";
const META_PENDING: &str = "pending_epoch";
/// Set (to the pending checkpoint's epoch) when a chunk of it may have written a key again.
const META_REPEATS: &str = "pending_repeats";
/// Rows the chunks of the pending checkpoint wrote (absent: not counted, by an earlier build).
const META_PENDING_ROWS: &str = "pending_rows";
/// The epoch `p` up to which the versions are pruned (each key at most one version at or
/// below it, live); absent: the latest complete checkpoint.
const META_PRUNED: &str = "pruned_through";
/// Rows (versions) at or below the latest complete checkpoint (absent: not counted).
const META_ROWS: &str = "complete_rows";
/// Of those, the rows above `pruned_through` (absent: none).
const META_UNPRUNED: &str = "unpruned_rows";

/// For the completion's transaction: no nested loop (see [`complete`]), and memory for the hash
/// tables or sorts of its joins.
const COMPLETION_SETTINGS: &str = "SET LOCAL enable_nestloop = off; SET LOCAL work_mem = '256MB'";
const META_STORE_INFO: &str = "store_info";

/// The key of the advisory lock that serialises schema creation (any constant: it only has to
/// be the same in every process creating a vmsdb schema).
const SCHEMA_LOCK_KEY: i64 = 0x766d_7364_625f_7067;

/// A [`Storage`] in one schema of a PostgreSQL database.
pub struct PostgresStorage {
    /// Taken out and shut down without waiting on drop, so dropping is safe in async code.
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    conns: Arc<Connections>,
    /// The lease term this handle took, if any.
    held: HeldTerm,
    /// The keys this handle wrote into the checkpoint being written.
    pending_keys: parking_lot::Mutex<PendingKeys>,
}

/// The store's connections and its statements, shared with the tasks on the runtime.
struct Connections {
    /// Appends, truncation and the lease.
    log: AsyncMutex<Client>,
    /// Checkpoint writes and the store info record.
    checkpoints: AsyncMutex<Client>,
    /// `read_epochs`, `read_latest_checkpoint` and the other reads.
    reader: AsyncMutex<Client>,
    /// For the further connections a large checkpoint read opens for its share of the rows.
    config: tokio_postgres::Config,
    sql: Sql,
}

/// The statements, with the schema filled in.
struct Sql {
    lease_share: String,
    lease_for_update: String,
    lease_take_over: String,
    lease_write: String,
    lock_log: String,
    last_epoch: String,
    log_get: String,
    log_insert: String,
    log_read: String,
    log_truncate: String,
    lock_rows: String,
    /// `lock_rows` for a chunk of checkpoint rows, whose commit does not wait for the WAL
    /// flush (see [`write_rows`]).
    lock_rows_for_chunk: String,
    meta_get: String,
    meta_put: String,
    meta_delete: String,
    rows_discard_all: String,
    rows_discard_after: String,
    next_chunk: String,
    rows_copy_in: String,
    prune_repeated: String,
    prune_superseded: String,
    prune_tombstones: String,
    count_rows: String,
    rows_copy_out: String,
    mixed_copy_out: String,
    export_snapshot: String,
    old_layout: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = schema;
        Self {
            lease_share: format!("SELECT record FROM {s}.lease WHERE id = 1 FOR KEY SHARE"),
            lease_for_update: format!(
                "SELECT record, (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
                 FROM {s}.lease WHERE id = 1 FOR NO KEY UPDATE"
            ),
            lease_take_over: format!("SELECT 1 FROM {s}.lease WHERE id = 1 FOR UPDATE"),
            lease_write: format!("UPDATE {s}.lease SET record = $1 WHERE id = 1"),
            lock_log: format!("LOCK TABLE {s}.log IN SHARE ROW EXCLUSIVE MODE"),
            last_epoch: format!("SELECT max(epoch) FROM {s}.log"),
            log_get: format!("SELECT record FROM {s}.log WHERE epoch = $1"),
            log_insert: format!("INSERT INTO {s}.log (epoch, record) VALUES ($1, $2)"),
            log_read: format!("SELECT epoch, record FROM {s}.log WHERE epoch >= $1 ORDER BY epoch"),
            log_truncate: format!("DELETE FROM {s}.log WHERE epoch < $1"),
            lock_rows: format!("LOCK TABLE {s}.checkpoint_versions IN SHARE ROW EXCLUSIVE MODE"),
            lock_rows_for_chunk: format!(
                "SET LOCAL synchronous_commit TO OFF; \
                 LOCK TABLE {s}.checkpoint_versions IN SHARE ROW EXCLUSIVE MODE"
            ),
            meta_get: format!("SELECT value FROM {s}.meta WHERE name = $1"),
            meta_put: format!(
                "INSERT INTO {s}.meta (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
            ),
            meta_delete: format!("DELETE FROM {s}.meta WHERE name = $1"),
            rows_discard_all: format!("DELETE FROM {s}.checkpoint_versions"),
            rows_discard_after: format!("DELETE FROM {s}.checkpoint_versions WHERE epoch > $1"),
            // The `seq` of the rows a COPY then adds (the column's default: `currval`).
            next_chunk: format!("SELECT nextval('{s}.checkpoint_chunk')"),
            rows_copy_in: format!(
                "COPY {s}.checkpoint_versions (key, epoch, live, envelope) \
                 FROM STDIN (FORMAT binary)"
            ),
            prune_repeated: format!(
                "DELETE FROM {s}.checkpoint_versions AS o USING {s}.checkpoint_versions AS n \
                 WHERE o.epoch = $1 AND n.epoch = $1 AND o.key = n.key AND o.seq < n.seq"
            ),
            // Every version an unpruned one (epochs `$1..=$2`) replaces.
            prune_superseded: format!(
                "DELETE FROM {s}.checkpoint_versions AS o USING {s}.checkpoint_versions AS n \
                 WHERE n.epoch >= $1 AND n.epoch <= $2 AND o.key = n.key AND o.epoch < n.epoch \
                 AND o.epoch < $2"
            ),
            prune_tombstones: format!(
                "DELETE FROM {s}.checkpoint_versions WHERE epoch >= $1 AND epoch <= $2 AND NOT live"
            ),
            count_rows: format!("SELECT count(*) FROM {s}.checkpoint_versions WHERE epoch <= $1"),
            // The rows of checkpoint $1, all pruned ($2: a range of heap blocks, or nothing).
            rows_copy_out: format!(
                "COPY (SELECT key, envelope FROM {s}.checkpoint_versions \
                 WHERE epoch <= $1 AND live $2) TO STDOUT (FORMAT binary)"
            ),
            // The same in one scan, some of them unpruned (above `pruned_through`, $1, up to
            // the checkpoint, $2): those with their epoch, deletions too, the pruned rows with
            // a NULL epoch.
            mixed_copy_out: format!(
                "COPY (SELECT key, CASE WHEN epoch > $1 THEN epoch END, envelope \
                 FROM {s}.checkpoint_versions \
                 WHERE epoch <= $2 AND (live OR epoch > $1) $3) TO STDOUT (FORMAT binary)"
            ),
            export_snapshot: format!(
                "SELECT pg_export_snapshot(), \
                 pg_relation_size('{s}.checkpoint_versions') / \
                 current_setting('block_size')::bigint"
            ),
            old_layout: format!(
                "SELECT to_regclass('{s}.pending') IS NOT NULL OR to_regclass('{s}.state') IS NOT NULL \
                 OR to_regclass('{s}.checkpoint_rows') IS NOT NULL"
            ),
        }
    }

    /// Whether the schema holds every table, the log's records stored as [`Sql::create`] sets
    /// them (an earlier build did not): a read of the catalog only, which locks nothing.
    fn complete(schema: &str) -> String {
        let s = schema;
        format!(
            "SELECT to_regclass('{s}.checkpoint_versions_deletions') IS NOT NULL \
                 AND to_regclass('{s}.meta') IS NOT NULL \
                 AND to_regclass('{s}.lease') IS NOT NULL \
                 AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute \
                     WHERE attrelid = to_regclass('{s}.log') AND attname = 'record' \
                     AND attstorage = 'e')"
        )
    }

    /// Creates the schema and its tables if missing (see the module doc).
    fn create(schema: &str) -> String {
        let s = schema;
        format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED;
             SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY});
             CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.log (epoch bigint PRIMARY KEY, record bytea NOT NULL);
             ALTER TABLE {s}.log ALTER COLUMN record SET STORAGE EXTERNAL;
             CREATE SEQUENCE IF NOT EXISTS {s}.checkpoint_chunk;
             CREATE TABLE IF NOT EXISTS {s}.checkpoint_versions (key bytea NOT NULL,
                 epoch bigint NOT NULL,
                 seq bigint NOT NULL DEFAULT currval('{s}.checkpoint_chunk'),
                 live boolean NOT NULL, envelope bytea NOT NULL);
             CREATE INDEX IF NOT EXISTS checkpoint_versions_epoch ON {s}.checkpoint_versions
                 USING brin (epoch) WITH (autosummarize = on);
             CREATE INDEX IF NOT EXISTS checkpoint_versions_deletions
                 ON {s}.checkpoint_versions (epoch) WHERE NOT live;
             CREATE TABLE IF NOT EXISTS {s}.meta (name text PRIMARY KEY, value bytea NOT NULL);
             CREATE TABLE IF NOT EXISTS {s}.lease
                 (id smallint PRIMARY KEY CHECK (id = 1), record bytea);
             INSERT INTO {s}.lease (id, record) VALUES (1, NULL) ON CONFLICT (id) DO NOTHING;
             COMMIT;"
        )
    }
}

/// The `bigint` stored for `epoch`: order-preserving over the whole `u64` range.
fn epoch_to_sql(epoch: u64) -> i64 {
    (epoch ^ (1 << 63)) as i64
}

fn epoch_from_sql(stored: i64) -> u64 {
    (stored as u64) ^ (1 << 63)
}

fn pg_error(operation: &'static str) -> impl Fn(tokio_postgres::Error) -> StorageError {
    move |err| {
        let detail = match err.as_db_error() {
            Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
            None => err.to_string(),
        };
        StorageError::Io {
            backend: BACKEND,
            operation,
            detail,
        }
    }
}

/// Refuses a schema name that would need quoting: it is spliced into every statement.
fn check_schema(schema: &str) -> Result<(), StorageError> {
    let mut chars = schema.chars();
    let valid = chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63;
    if valid {
        Ok(())
    } else {
        Err(StorageError::Io {
            backend: BACKEND,
            operation: "open",
            detail: format!(
                "schema name {schema:?} must be 1 to 63 lowercase ASCII letters, digits or \
                 underscores, not starting with a digit"
            ),
        })
    }
}

impl PostgresStorage {
    /// Connects with `config` (a `postgresql://` URL or a libpq-style `key=value` string) and
    /// uses the schema [`DEFAULT_SCHEMA`], creating its tables if needed.
    pub fn open(config: &str) -> Result<Self, StorageError> {
        Self::open_in_schema(config, DEFAULT_SCHEMA)
    }

    /// Like [`PostgresStorage::open`], with the tables in `schema` (lowercase letters, digits,
    /// underscores), so one database can hold several stores.
    pub fn open_in_schema(config: &str, schema: &str) -> Result<Self, StorageError> {
        check_schema(schema)?;
        let config: tokio_postgres::Config = config.parse().map_err(pg_error("open"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("vmsdb-postgres")
            .enable_all()
            .build()
            .map_err(|err| StorageError::io(BACKEND, "start the client runtime", err))?;
        let handle = runtime.handle().clone();
        let schema = schema.to_string();
        let conns = run_on(&handle, "open", async move {
            let log = connect(&config).await?;
            let sql = Sql::new(&schema);
            // Before creating anything, so a refused schema is left as it was.
            refuse_old_layout(&log, &sql, &schema).await?;
            create_if_missing(&log, &schema).await?;
            Ok(Connections {
                log: AsyncMutex::new(log),
                checkpoints: AsyncMutex::new(connect(&config).await?),
                reader: AsyncMutex::new(connect(&config).await?),
                config,
                sql,
            })
        })?;
        Ok(Self {
            runtime: Some(runtime),
            handle,
            conns: Arc::new(conns),
            held: HeldTerm::default(),
            pending_keys: parking_lot::Mutex::default(),
        })
    }

    /// Runs `work` with the connections on the store's runtime and waits for it.
    fn run<T, F, Fut>(&self, operation: &'static str, work: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Connections>) -> Fut,
        Fut: Future<Output = Result<T, StorageError>> + Send + 'static,
    {
        run_on(&self.handle, operation, work(Arc::clone(&self.conns)))
    }
}

impl Drop for PostgresStorage {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Spawns `work` on the runtime of `handle` and blocks the calling thread until it is done,
/// without entering that runtime (see "Threads" in the module doc).
fn run_on<T: Send + 'static>(
    handle: &tokio::runtime::Handle,
    operation: &'static str,
    work: impl Future<Output = Result<T, StorageError>> + Send + 'static,
) -> Result<T, StorageError> {
    let (done, result) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = done.send(work.await);
    });
    result.recv().unwrap_or_else(|_| {
        Err(StorageError::io(
            BACKEND,
            operation,
            "the client runtime stopped before the call finished",
        ))
    })
}

/// Creates the tables of `schema` unless the catalog shows them complete (see the module doc).
async fn create_if_missing(client: &Client, schema: &str) -> Result<(), StorageError> {
    let complete = client
        .query_one(&Sql::complete(schema), &[])
        .await
        .map_err(pg_error("look for the tables"))?;
    if complete.get::<_, bool>(0) {
        return Ok(());
    }
    client
        .batch_execute(&Sql::create(schema))
        .await
        .map_err(pg_error("create tables"))
}

/// Refuses a schema holding the tables of an earlier checkpoint layout (`state` and `pending`,
/// or `checkpoint_rows`), which this build would not read: its checkpoints would silently be
/// missing.
async fn refuse_old_layout(client: &Client, sql: &Sql, schema: &str) -> Result<(), StorageError> {
    let found = client
        .query_one(&sql.old_layout, &[])
        .await
        .map_err(pg_error("open"))?;
    if found.get::<_, bool>(0) {
        return Err(StorageError::CorruptStore {
            backend: BACKEND,
            location: format!("schema {schema}"),
            detail: "it holds the tables of an earlier checkpoint layout (`state` and \
                     `pending`, or `checkpoint_rows`), which this build does not read: use \
                     another schema, or load the data again"
                .into(),
        });
    }
    Ok(())
}

async fn connect(config: &tokio_postgres::Config) -> Result<Client, StorageError> {
    let (client, connection) = config.connect(NoTls).await.map_err(pg_error("connect"))?;
    tokio::spawn(async move {
        // A broken connection fails the client's calls, which report it.
        let _ = connection.await;
    });
    Ok(client)
}

async fn begin<'c>(
    client: &'c mut Client,
    operation: &'static str,
) -> Result<Transaction<'c>, StorageError> {
    begin_as(client, IsolationLevel::ReadCommitted, false, operation).await
}

/// Begins a read-only transaction that sees one snapshot throughout.
async fn begin_snapshot<'c>(
    client: &'c mut Client,
    operation: &'static str,
) -> Result<Transaction<'c>, StorageError> {
    begin_as(client, IsolationLevel::RepeatableRead, true, operation).await
}

async fn begin_as<'c>(
    client: &'c mut Client,
    isolation: IsolationLevel,
    read_only: bool,
    operation: &'static str,
) -> Result<Transaction<'c>, StorageError> {
    client
        .build_transaction()
        .isolation_level(isolation)
        .read_only(read_only)
        .start()
        .await
        .map_err(pg_error(operation))
}

/// Begins a write transaction: refuses a fenced handle (see [`check_fence`]) and takes the
/// table lock `lock` (a `LOCK TABLE` statement), if any, that orders it against other writers.
async fn begin_write<'c>(
    client: &'c mut Client,
    sql: &Sql,
    held: Option<u64>,
    lock: Option<&str>,
    operation: &'static str,
) -> Result<Transaction<'c>, StorageError> {
    let txn = begin(client, operation).await?;
    check_fence(&txn, sql, held, operation).await?;
    if let Some(lock) = lock {
        txn.batch_execute(lock).await.map_err(pg_error(operation))?;
    }
    Ok(txn)
}

/// Refuses, inside the write transaction `txn`, the write of a handle whose lease was taken
/// over. The `FOR KEY SHARE` read holds off a take-over until `txn` ends.
async fn check_fence(
    txn: &Transaction<'_>,
    sql: &Sql,
    held: Option<u64>,
    operation: &'static str,
) -> Result<(), StorageError> {
    let Some(ours) = held else {
        return Ok(());
    };
    let found = txn
        .query_typed_one(&sql.lease_share, &[])
        .await
        .map_err(pg_error(operation))?;
    let current = match found.get::<_, Option<&[u8]>>(0) {
        Some(stored) => LeaseRecord::decode(BACKEND, stored)?.term,
        None => 0,
    };
    lease::check_fence(BACKEND, ours, current)
}

async fn read_meta(
    txn: &Transaction<'_>,
    sql: &Sql,
    name: &'static str,
    operation: &'static str,
) -> Result<Option<u64>, StorageError> {
    let found = txn
        .query_typed_opt(&sql.meta_get, &[(&name, Type::TEXT)])
        .await
        .map_err(pg_error(operation))?;
    match found {
        Some(found) => row::decode_meta(BACKEND, name, found.get(0)).map(Some),
        None => Ok(None),
    }
}

async fn write_meta(
    txn: &Transaction<'_>,
    sql: &Sql,
    name: &'static str,
    value: &[u8],
    operation: &'static str,
) -> Result<(), StorageError> {
    txn.execute_typed(&sql.meta_put, &[(&name, Type::TEXT), (&value, Type::BYTEA)])
        .await
        .map_err(pg_error(operation))?;
    Ok(())
}

fn check_newer(checkpoint_epoch: u64, latest_complete: Option<u64>) -> Result<(), StorageError> {
    match latest_complete {
        Some(latest) if checkpoint_epoch <= latest => Err(StorageError::CheckpointOutOfOrder {
            backend: BACKEND,
            checkpoint_epoch,
            latest_complete,
        }),
        _ => Ok(()),
    }
}

async fn last_epoch_in(
    client: &impl tokio_postgres::GenericClient,
    sql: &Sql,
    operation: &'static str,
) -> Result<Option<u64>, StorageError> {
    let found = client
        .query_typed_one(&sql.last_epoch, &[])
        .await
        .map_err(pg_error(operation))?;
    Ok(found.get::<_, Option<i64>>(0).map(epoch_from_sql))
}

/// The group commit: every epoch of `records` (epoch, batch, encoded record) in one
/// transaction, each following the order rules of [`Storage::append_epoch`].
async fn append_records(
    conns: &Connections,
    held: Option<u64>,
    records: &[(u64, Vec<u8>, Vec<u8>)],
) -> Result<(), StorageError> {
    let operation = "append_epoch";
    let sql = &conns.sql;
    let mut client = conns.log.lock().await;
    let txn = begin_write(&mut client, sql, held, Some(&sql.lock_log), operation).await?;
    let mut last = last_epoch_in(&txn, sql, operation).await?;
    for (epoch, batch, encoded) in records {
        let epoch = *epoch;
        let follows = last.is_none_or(|last| last.checked_add(1) == Some(epoch));
        if !follows {
            // A retry of an append that may already have succeeded: the same bytes are a
            // no-op, anything else is out of order.
            let stored = txn
                .query_typed_opt(&sql.log_get, &[(&epoch_to_sql(epoch), Type::INT8)])
                .await
                .map_err(pg_error(operation))?;
            let same = match &stored {
                Some(stored) => record::decode(BACKEND, epoch, stored.get(0))?.0 == batch,
                None => false,
            };
            if same {
                continue;
            }
            return Err(StorageError::OutOfOrder {
                backend: BACKEND,
                epoch,
                last,
            });
        }
        txn.execute_typed(
            &sql.log_insert,
            &[
                (&epoch_to_sql(epoch), Type::INT8),
                (&encoded.as_slice(), Type::BYTEA),
            ],
        )
        .await
        .map_err(pg_error(operation))?;
        last = Some(epoch);
    }
    txn.commit().await.map_err(pg_error(operation))
}

/// One chunk of checkpoint rows of checkpoint `checkpoint_epoch` as the input of a binary
/// `COPY` into `checkpoint_versions`, deduplicated (the last write of a key wins) and in key order;
/// `None` for no rows.
fn pending_copy(checkpoint_epoch: u64, rows: &[CheckpointRow]) -> Option<bytes::Bytes> {
    if rows.is_empty() {
        return None;
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    // By key, and a key's last write first, which `dedup_by` keeps.
    order.sort_unstable_by(|&a, &b| rows[a].0.cmp(&rows[b].0).then(b.cmp(&a)));
    order.dedup_by(|later, kept| rows[*later].0 == rows[*kept].0);
    let payload = order
        .iter()
        .map(|&i| rows[i].0.len() + rows[i].1.as_ref().map_or(0, Vec::len))
        .sum();
    let mut copy = CopyIn::with_capacity(order.len(), payload);
    let epoch = epoch_to_sql(checkpoint_epoch);
    for i in order {
        let (key, value) = &rows[i];
        copy.push_row(key, epoch, value.as_deref());
    }
    Some(bytes::Bytes::from(copy.finish()))
}

/// Sends the binary COPY input `data` with the `COPY ... FROM STDIN` statement `copy`.
/// Returns the number of rows copied.
async fn copy_in(
    txn: &Transaction<'_>,
    copy: &str,
    data: bytes::Bytes,
) -> Result<u64, tokio_postgres::Error> {
    use futures::SinkExt as _;
    let sink = txn.copy_in(copy).await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(data).await?;
    sink.finish().await
}

/// What a handle knows of the checkpoint it is writing, to tell whether a chunk may hold a key
/// the checkpoint already has (see [`write_rows`]).
#[derive(Default)]
struct PendingKeys {
    /// The checkpoint the keys below belong to.
    epoch: Option<u64>,
    /// The `seq` this handle's last write of that checkpoint took, as long as every row of the
    /// checkpoint in the table is known to have come through this handle (so `hashes` knows
    /// every key): its own write started the checkpoint, and each of its writes since took the
    /// next value of the sequence, so no other handle wrote a chunk in between. `None`
    /// otherwise, or after a failed write.
    own_seq: Option<i64>,
    /// A 64-bit hash of every key this handle wrote (or tried to) into the checkpoint.
    hashes: std::collections::HashSet<u64>,
    /// Rows this handle's chunks copied into the checkpoint (their commits returned). The
    /// store's count must never be below it ([`lost_chunks`]).
    rows: u64,
    hasher: std::hash::RandomState,
}

impl PendingKeys {
    /// Notes the keys of a chunk of checkpoint `epoch`; returns whether this handle wrote (or
    /// tried to write) one of them into the checkpoint before, and [`PendingKeys::own_seq`].
    fn note(&mut self, epoch: u64, rows: &[CheckpointRow]) -> (bool, Option<i64>) {
        use std::hash::BuildHasher as _;
        if self.epoch != Some(epoch) {
            self.forget();
            self.epoch = Some(epoch);
        }
        let mut seen = false;
        for (key, _) in rows {
            seen |= !self.hashes.insert(self.hasher.hash_one(key));
        }
        (seen, self.own_seq)
    }

    /// Forgets the keys (the checkpoint completed or was left), returning their memory.
    fn forget(&mut self) {
        self.epoch = None;
        self.own_seq = None;
        self.rows = 0;
        self.hashes = std::collections::HashSet::new();
    }
}

/// Writes one chunk (`copy`, `None` when it is empty) of checkpoint `checkpoint_epoch`; returns
/// the handle's new [`PendingKeys::own_seq`], given the one before (`own_seq`) and whether the
/// handle wrote a key of the chunk into the checkpoint before (`seen`). The rows go by binary
/// COPY into `checkpoint_versions`, which has no index to update: a key may be written again
/// within a checkpoint (a chunk written again after a failed call, deltas merged into one
/// checkpoint, a checkpoint continued by another handle), so every chunk's rows carry an
/// increasing `seq`, and a chunk that may repeat a key of the checkpoint — one `seen`, or any
/// when rows of the checkpoint may have come through another handle — marks it
/// (`pending_repeats`) for the completion to keep only each key's last write.
async fn write_rows(
    conns: &Connections,
    held: Option<u64>,
    checkpoint_epoch: u64,
    copy: Option<bytes::Bytes>,
    seen: bool,
    own_seq: Option<i64>,
    written_before: u64,
) -> Result<(Option<i64>, u64), StorageError> {
    let operation = "write_checkpoint_rows";
    let sql = &conns.sql;
    let mut client = conns.checkpoints.lock().await;
    // The chunk's commit does not wait for its WAL to reach the disk (`synchronous_commit`
    // off for this transaction only): nothing depends on a chunk until the checkpoint's
    // completion, whose commit waits for the WAL up to its own record and so for every chunk
    // before it (one WAL, flushed in order). A server crash may lose the last chunks of a
    // checkpoint not yet complete, which is then as if they were never written: the writer's
    // calls fail, its runtime stops, and the next writer lists every row changed since the
    // latest complete checkpoint. Half of a chunk's time was that flush (docs/storage.md).
    let lock = Some(sql.lock_rows_for_chunk.as_str());
    let txn = begin_write(&mut client, sql, held, lock, operation).await?;
    let latest = read_meta(&txn, sql, META_LATEST, operation).await?;
    check_newer(checkpoint_epoch, latest)?;
    let pending = read_meta(&txn, sql, META_PENDING, operation).await?;
    let starts = pending != Some(checkpoint_epoch);
    if starts && written_before > 0 {
        return Err(lost_chunks(
            operation,
            checkpoint_epoch,
            written_before,
            None,
        ));
    }
    if starts {
        // Starting a new checkpoint: drop the rows of an abandoned one.
        if pending.is_some() {
            discard_incomplete(&txn, sql, latest, operation).await?;
        }
        let pending = row::encode_meta(META_PENDING, checkpoint_epoch);
        write_meta(&txn, sql, META_PENDING, &pending, operation).await?;
    }
    if !starts && copy.is_none() {
        txn.commit().await.map_err(pg_error(operation))?;
        return Ok((own_seq, 0));
    }
    // The chunk's `seq` (the rows' default is `currval`). Taken under the table's lock, so the
    // values follow the order of the writes: when it is the one after this handle's last, no
    // other handle wrote a chunk since.
    let seq: i64 = txn
        .query_typed_one(&sql.next_chunk, &[])
        .await
        .map_err(pg_error(operation))?
        .get(0);
    let only_ours = starts || own_seq.is_some_and(|last| last.checked_add(1) == Some(seq));
    let mut copied = 0;
    if let Some(copy) = copy {
        if !starts && (seen || !only_ours) {
            let repeats = row::encode_meta(META_REPEATS, checkpoint_epoch);
            write_meta(&txn, sql, META_REPEATS, &repeats, operation).await?;
        }
        copied = copy_in(&txn, &sql.rows_copy_in, copy)
            .await
            .map_err(pg_error(operation))?;
        // The checkpoint's row count, for its completion to weigh its rows without counting
        // them (see `complete`).
        let before = match starts {
            true => Some(0),
            false => read_meta(&txn, sql, META_PENDING_ROWS, operation).await?,
        };
        check_count(operation, checkpoint_epoch, written_before, before)?;
        if let Some(before) = before {
            let rows = row::encode_meta(META_PENDING_ROWS, before + copied);
            write_meta(&txn, sql, META_PENDING_ROWS, &rows, operation).await?;
        }
    }
    txn.commit().await.map_err(pg_error(operation))?;
    Ok((only_ours.then_some(seq), copied))
}

/// Fails with [`lost_chunks`] when the checkpoint's row count in the store (`found`; `None`: not
/// counted, by a build before the count) is below the rows this handle wrote into it.
fn check_count(
    operation: &'static str,
    checkpoint_epoch: u64,
    written: u64,
    found: Option<u64>,
) -> Result<(), StorageError> {
    match found.filter(|&found| found < written) {
        Some(found) => Err(lost_chunks(
            operation,
            checkpoint_epoch,
            written,
            Some(found),
        )),
        None => Ok(()),
    }
}

/// A handle found fewer rows of checkpoint `checkpoint_epoch` in the store (`found`; `None`: the
/// checkpoint is not pending at all) than its own chunks copied there (`written`). Chunks
/// commit without waiting for the WAL flush ([`write_rows`]), so a server that crashed and
/// restarted behind a connection that survived it (a pooling proxy) can have lost the last
/// ones: completing the checkpoint then would drop their rows from it and the log alike.
fn lost_chunks(
    operation: &'static str,
    checkpoint_epoch: u64,
    written: u64,
    found: Option<u64>,
) -> StorageError {
    let found = found.map_or_else(
        || "it is not pending".to_string(),
        |n| format!("it holds {n}"),
    );
    StorageError::Io {
        backend: BACKEND,
        operation,
        detail: format!(
            "checkpoint {checkpoint_epoch}: this handle wrote {written} rows into it but {found}:              the server lost committed chunks (restarted behind a connection that survived it?);              the checkpoint is not completed"
        ),
    }
}

/// Deletes the rows of an incomplete checkpoint: every version newer than `latest`, the latest
/// complete checkpoint.
async fn discard_incomplete(
    txn: &Transaction<'_>,
    sql: &Sql,
    latest: Option<u64>,
    operation: &'static str,
) -> Result<(), StorageError> {
    match latest {
        Some(latest) => txn
            .execute_typed(
                &sql.rows_discard_after,
                &[(&epoch_to_sql(latest), Type::INT8)],
            )
            .await
            .map_err(pg_error(operation))?,
        None => txn
            .execute(&sql.rows_discard_all, &[])
            .await
            .map_err(pg_error(operation))?,
    };
    delete_meta(txn, sql, &[META_REPEATS, META_PENDING_ROWS], operation).await
}

async fn delete_meta(
    txn: &Transaction<'_>,
    sql: &Sql,
    names: &[&'static str],
    operation: &'static str,
) -> Result<(), StorageError> {
    for name in names {
        txn.execute_typed(&sql.meta_delete, &[(name, Type::TEXT)])
            .await
            .map_err(pg_error(operation))?;
    }
    Ok(())
}

async fn complete(
    conns: &Connections,
    held: Option<u64>,
    checkpoint_epoch: u64,
    written: u64,
) -> Result<(), StorageError> {
    let operation = "complete_checkpoint";
    let sql = &conns.sql;
    let mut client = conns.checkpoints.lock().await;
    let txn = begin_write(&mut client, sql, held, Some(&sql.lock_rows), operation).await?;
    let latest = read_meta(&txn, sql, META_LATEST, operation).await?;
    if latest == Some(checkpoint_epoch) {
        return Ok(());
    }
    check_newer(checkpoint_epoch, latest)?;
    let pending = read_meta(&txn, sql, META_PENDING, operation).await?;
    if written > 0 {
        if pending != Some(checkpoint_epoch) {
            return Err(lost_chunks(operation, checkpoint_epoch, written, None));
        }
        // No count: the checkpoint was begun by a build that did not count its rows.
        let found = read_meta(&txn, sql, META_PENDING_ROWS, operation).await?;
        check_count(operation, checkpoint_epoch, written, found)?;
    }
    match pending {
        Some(pending) if pending == checkpoint_epoch => {
            prune(&txn, sql, latest, checkpoint_epoch).await?;
        }
        Some(_) => discard_incomplete(&txn, sql, latest, operation).await?,
        None => {}
    }
    let latest = row::encode_meta(META_LATEST, checkpoint_epoch);
    write_meta(&txn, sql, META_LATEST, &latest, operation).await?;
    delete_meta(&txn, sql, &[META_PENDING, META_PENDING_ROWS], operation).await?;
    txn.commit().await.map_err(pg_error(operation))
}

/// The completion's pruning, in its transaction, of checkpoint `checkpoint_epoch`, the pending
/// one, over `latest`: first the versions of a key written again within the checkpoint. Then,
/// if the versions not yet pruned (above `pruned_through`, the new rows included) are more
/// than [`limits::POSTGRES_UNPRUNED_ROWS_DIVISOR`]th of the rows, or not counted, every
/// version they replace and their deletions, so each key keeps at most one version at or
/// below the checkpoint (and it is live); otherwise the pruning waits, and a read merges the
/// unpruned versions over the pruned rows. So a small checkpoint over a large table completes
/// without a join against the whole table, at the cost of a larger join now and then.
async fn prune(
    txn: &Transaction<'_>,
    sql: &Sql,
    latest: Option<u64>,
    checkpoint_epoch: u64,
) -> Result<(), StorageError> {
    let operation = "complete_checkpoint";
    let epoch = epoch_to_sql(checkpoint_epoch);
    // The joins below match the keys by hashing (or sorting) both sides: the table has no index
    // on the key, and a nested loop, which the planner may pick on a table it has no
    // statistics of yet, would scan the table once per row.
    txn.batch_execute(COMPLETION_SETTINGS)
        .await
        .map_err(pg_error(operation))?;
    let mut new_rows = read_meta(txn, sql, META_PENDING_ROWS, operation).await?;
    if read_meta(txn, sql, META_REPEATS, operation).await? == Some(checkpoint_epoch) {
        let repeated = txn
            .execute_typed(&sql.prune_repeated, &[(&epoch, Type::INT8)])
            .await
            .map_err(pg_error(operation))?;
        new_rows = new_rows.map(|rows| rows.saturating_sub(repeated));
        delete_meta(txn, sql, &[META_REPEATS], operation).await?;
    }
    // With no complete checkpoint every row is this one's (see `write_rows`).
    let (pruned, rows, unpruned) = match latest {
        None => (None, Some(0), 0),
        Some(latest) => match read_meta(txn, sql, META_PRUNED, operation).await? {
            Some(pruned) => (
                Some(pruned),
                read_meta(txn, sql, META_ROWS, operation).await?,
                read_meta(txn, sql, META_UNPRUNED, operation)
                    .await?
                    .unwrap_or(0),
            ),
            None => (
                Some(latest),
                read_meta(txn, sql, META_ROWS, operation).await?,
                0,
            ),
        },
    };
    let rows = rows.zip(new_rows).map(|(rows, new)| rows + new);
    let unpruned = unpruned + new_rows.unwrap_or(0);
    let wait = latest.is_some()
        && rows.is_some_and(|rows| {
            unpruned.saturating_mul(limits::POSTGRES_UNPRUNED_ROWS_DIVISOR) <= rows
        });
    if wait {
        for (name, value) in [
            (META_PRUNED, pruned.unwrap_or_default()),
            (META_UNPRUNED, unpruned),
            (META_ROWS, rows.unwrap_or_default()),
        ] {
            write_meta(txn, sql, name, &row::encode_meta(name, value), operation).await?;
        }
        return Ok(());
    }
    let from = epoch_to_sql(pruned.map_or(0, |pruned| pruned + 1));
    let range: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 2] =
        [(&from, Type::INT8), (&epoch, Type::INT8)];
    let mut deleted = 0;
    if latest.is_some() {
        deleted += txn
            .execute_typed(&sql.prune_superseded, &range)
            .await
            .map_err(pg_error(operation))?;
    }
    deleted += txn
        .execute_typed(&sql.prune_tombstones, &range)
        .await
        .map_err(pg_error(operation))?;
    let rows = match rows {
        Some(rows) => rows.saturating_sub(deleted),
        // Not counted (a store or a checkpoint of an earlier build): count once.
        None => {
            let counted: i64 = txn
                .query_typed_one(&sql.count_rows, &[(&epoch, Type::INT8)])
                .await
                .map_err(pg_error(operation))?
                .get(0);
            u64::try_from(counted).unwrap_or(0)
        }
    };
    write_meta(
        txn,
        sql,
        META_ROWS,
        &row::encode_meta(META_ROWS, rows),
        operation,
    )
    .await?;
    delete_meta(txn, sql, &[META_PRUNED, META_UNPRUNED], operation).await
}

async fn truncate(conns: &Connections, held: Option<u64>, epoch: u64) -> Result<(), StorageError> {
    let operation = "truncate_log_below";
    let sql = &conns.sql;
    let mut client = conns.log.lock().await;
    let txn = begin_write(&mut client, sql, held, None, operation).await?;
    let latest = read_meta(&txn, sql, META_LATEST, operation).await?;
    row::check_truncation(BACKEND, epoch, latest)?;
    txn.execute_typed(&sql.log_truncate, &[(&epoch_to_sql(epoch), Type::INT8)])
        .await
        .map_err(pg_error(operation))?;
    txn.commit().await.map_err(pg_error(operation))
}

async fn take_lease(
    conns: &Connections,
    holder: String,
    ttl: Duration,
) -> Result<u64, StorageError> {
    let operation = "acquire_lease";
    let sql = &conns.sql;
    let mut client = conns.log.lock().await;
    let txn = begin(&mut client, operation).await?;
    let found = txn
        .query_typed_one(&sql.lease_for_update, &[])
        .await
        .map_err(pg_error(operation))?;
    let current = match found.get::<_, Option<&[u8]>>(0) {
        Some(stored) => Some(LeaseRecord::decode(BACKEND, stored)?),
        None => None,
    };
    // The database's clock, so every node agrees on when a lease ends.
    let now_ms = u64::try_from(found.get::<_, i64>(1)).unwrap_or(0);
    let granted = lease::grant(BACKEND, current.as_ref(), &holder, now_ms, ttl)?;
    if current.as_ref().map(|record| record.term) != Some(granted.term) {
        // A new term: wait for the writes in flight (they hold the row `FOR KEY SHARE`) and
        // hold off later ones until this commits. A renewal keeps the term and waits for none,
        // so a long checkpoint write never delays it.
        txn.execute(&sql.lease_take_over, &[])
            .await
            .map_err(pg_error(operation))?;
    }
    let encoded = granted.encode();
    txn.execute_typed(&sql.lease_write, &[(&encoded.as_slice(), Type::BYTEA)])
        .await
        .map_err(pg_error(operation))?;
    txn.commit().await.map_err(pg_error(operation))?;
    Ok(granted.term)
}

/// What a checkpoint read streams to the caller's thread: the checkpoint's epoch first, then
/// the binary COPY outputs that hold its rows.
enum CheckpointItem {
    Latest(Option<u64>),
    Copied(Copied),
}

/// The binary COPY outputs of a checkpoint's rows, with their epochs (NULL for a pruned row)
/// when some are unpruned (`epochs`).
struct Copied {
    copies: Vec<Vec<u8>>,
    epochs: bool,
}

type Sender<T> = tokio::sync::mpsc::Sender<Result<T, StorageError>>;

/// Streams the log from `from` to `out`; stops when the caller hangs up.
async fn stream_log(
    conns: &Connections,
    from: u64,
    out: &Sender<(u64, Vec<u8>)>,
) -> Result<(), StorageError> {
    use futures::StreamExt as _;
    let operation = "read_epochs";
    let client = conns.reader.lock().await;
    let rows = client
        .query_typed_raw(&conns.sql.log_read, [(epoch_to_sql(from), Type::INT8)])
        .await
        .map_err(pg_error(operation))?;
    let mut rows = std::pin::pin!(rows);
    while let Some(found) = rows.next().await {
        let found = found.map_err(pg_error(operation))?;
        let epoch = epoch_from_sql(found.get(0));
        let stored: &[u8] = found.get(1);
        if out.send(Ok((epoch, stored.to_vec()))).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Sends the latest complete checkpoint's epoch and then its rows to `out`, from one snapshot.
///
/// The rows come as one binary `COPY` of a sequential scan, in the order they lie in the table:
/// in key order, the server would have to sort them (the table has no key index), which took
/// several times longer (see `docs/storage.md`); the caller sorts them instead.
async fn stream_checkpoint(
    conns: &Connections,
    out: &Sender<CheckpointItem>,
) -> Result<(), StorageError> {
    let operation = "read_latest_checkpoint";
    let sql = &conns.sql;
    let mut client = conns.reader.lock().await;
    let txn = begin_snapshot(&mut client, operation).await?;
    let latest = read_meta(&txn, sql, META_LATEST, operation).await?;
    if out.send(Ok(CheckpointItem::Latest(latest))).await.is_err() {
        return Ok(());
    }
    let Some(latest) = latest else {
        return Ok(());
    };
    let pruned = read_meta(&txn, sql, META_PRUNED, operation)
        .await?
        .unwrap_or(latest);
    let copied = copy_checkpoint(conns, &txn, latest, pruned).await?;
    let _ = out.send(Ok(CheckpointItem::Copied(copied))).await;
    Ok(())
}

/// The rows of checkpoint `latest`, pruned through `pruned`, as binary COPY outputs, read in
/// the snapshot of `txn`. A large table is cut into ranges of heap blocks, each copied on its
/// own connection at the same time (a second server process and a second client task) from
/// the snapshot `txn` exports, so they all see the same rows. With versions above `pruned`,
/// each copy has the epoch column too (NULL at or below `pruned`): still one scan.
async fn copy_checkpoint(
    conns: &Connections,
    txn: &Transaction<'_>,
    latest: u64,
    pruned: u64,
) -> Result<Copied, StorageError> {
    let operation = "read_latest_checkpoint";
    let sql = &conns.sql;
    let found = txn
        .query_one(&sql.export_snapshot, &[])
        .await
        .map_err(pg_error(operation))?;
    let (snapshot, n_blocks): (String, i64) = (found.get(0), found.get(1));
    let n_readers = (n_blocks / limits::POSTGRES_CHECKPOINT_BLOCKS_PER_READER_MIN)
        .clamp(1, limits::POSTGRES_CHECKPOINT_READERS_MAX as i64);
    let per_reader = n_blocks / n_readers + 1;
    let epochs = pruned < latest;
    // COPY takes no parameters; the epoch and the block numbers are numbers, spliced in as such.
    let copy_of_range = |reader: i64| {
        let (first, end) = (reader * per_reader, (reader + 1) * per_reader);
        let range = match (n_readers, reader + 1 == n_readers) {
            (1, _) => String::new(),
            (_, true) => format!("AND ctid >= '({first},0)'::tid"),
            (_, false) => format!("AND ctid >= '({first},0)'::tid AND ctid < '({end},0)'::tid"),
        };
        match epochs {
            false => sql
                .rows_copy_out
                .replace("$1", &epoch_to_sql(latest).to_string())
                .replace("$2", &range),
            true => sql
                .mixed_copy_out
                .replace("$1", &epoch_to_sql(pruned).to_string())
                .replace("$2", &epoch_to_sql(latest).to_string())
                .replace("$3", &range),
        }
    };
    let others =
        (1..n_readers).map(|reader| copy_in_snapshot(conns, &snapshot, copy_of_range(reader)));
    let own_range = copy_of_range(0);
    let (own, others) = futures::join!(
        copy_out_all(txn, &own_range),
        futures::future::try_join_all(others)
    );
    let mut copies = vec![own?];
    copies.extend(others?);
    Ok(Copied { copies, epochs })
}

/// Runs `copy` on a new connection, in the snapshot `snapshot` exported by another transaction.
async fn copy_in_snapshot(
    conns: &Connections,
    snapshot: &str,
    copy: String,
) -> Result<Vec<u8>, StorageError> {
    let operation = "read_latest_checkpoint";
    if !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(StorageError::io(
            BACKEND,
            operation,
            format!("unexpected snapshot name {snapshot:?}"),
        ));
    }
    let mut client = connect(&conns.config).await?;
    let txn = begin_snapshot(&mut client, operation).await?;
    txn.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))
        .await
        .map_err(pg_error(operation))?;
    copy_out_all(&txn, &copy).await
}

/// The whole output of the `COPY ... TO STDOUT` statement `copy`.
async fn copy_out_all(txn: &Transaction<'_>, copy: &str) -> Result<Vec<u8>, StorageError> {
    use futures::StreamExt as _;
    let operation = "read_latest_checkpoint";
    let stream = txn.copy_out(copy).await.map_err(pg_error(operation))?;
    let mut stream = std::pin::pin!(stream);
    let mut copied = Vec::new();
    while let Some(data) = stream.next().await {
        copied.extend_from_slice(&data.map_err(pg_error(operation))?);
    }
    Ok(copied)
}

impl PostgresStorage {
    /// Starts `produce` on the runtime and hands what it streams to the caller's thread, up to
    /// `read_ahead` items in flight. An error of `produce` arrives as the last item.
    fn stream<T, F, Fut>(&self, read_ahead: usize, produce: F) -> Receiver<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Connections>, Sender<T>) -> Fut,
        Fut: Future<Output = Result<(), StorageError>> + Send + 'static,
    {
        let (out, items) = tokio::sync::mpsc::channel(read_ahead);
        let work = produce(Arc::clone(&self.conns), out.clone());
        self.handle.spawn(async move {
            if let Err(err) = work.await {
                let _ = out.send(Err(err)).await;
            }
        });
        Receiver(items)
    }
}

/// The caller's end of a stream from the runtime.
struct Receiver<T>(tokio::sync::mpsc::Receiver<Result<T, StorageError>>);

impl<T> Receiver<T> {
    /// The next item, blocking the calling thread (not a runtime: `futures`' executor is not
    /// tokio's, so this is safe on any thread).
    fn next(&mut self) -> Option<Result<T, StorageError>> {
        futures::executor::block_on(self.0.recv())
    }
}

fn read_ended_early() -> StorageError {
    StorageError::io(
        BACKEND,
        "read_latest_checkpoint",
        "the read ended before sending the whole checkpoint",
    )
}

/// Decodes the binary COPY of a checkpoint's rows, sorts them by key and visits each (checked
/// against its envelope's checksum): the newest unpruned version of a key in place of its
/// pruned row, none if that version is a deletion.
fn visit_sorted(
    copied: Copied,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut rows = match copied.epochs {
        true => CopiedRows::with_epochs(),
        false => CopiedRows::new(),
    };
    for copy in copied.copies {
        rows.add(copy)
            .map_err(|detail| StorageError::io(BACKEND, "read_latest_checkpoint", detail))?;
    }
    if let Some(key) = rows.sort_by_key() {
        return Err(StorageError::CorruptStore {
            backend: BACKEND,
            location: format!("checkpoint row {}", row::display_key(&key)),
            detail: "two versions of the key in the latest complete checkpoint".into(),
        });
    }
    rows.for_each(|key, envelope, unpruned| {
        if !unpruned {
            return row::visit_live_row(BACKEND, key, envelope, &mut visit);
        }
        match row::decode_row(BACKEND, key, envelope)? {
            Some(value) => visit(key, value),
            None => Ok(()),
        }
    })
}

impl Storage for PostgresStorage {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), StorageError> {
        self.append_epochs(&[(epoch, batch)])
    }

    fn append_epochs(&self, epochs: &[(u64, &[u8])]) -> Result<(), StorageError> {
        let mut records = Vec::with_capacity(epochs.len());
        for (epoch, batch) in epochs {
            limits::check_batch(BACKEND, batch)?;
            records.push((*epoch, batch.to_vec(), record::encode(*epoch, batch)));
        }
        let held = self.held.get();
        self.run("append_epoch", |conns| async move {
            append_records(&conns, held, &records).await
        })
    }

    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut records = self.stream(limits::POSTGRES_LOG_READ_AHEAD, |conns, out| async move {
            stream_log(&conns, from, &out).await
        });
        let mut previous = None;
        while let Some(item) = records.next() {
            let (epoch, stored) = item?;
            row::visit_record(BACKEND, &mut previous, epoch, &stored, visit)?;
        }
        Ok(())
    }

    fn last_epoch(&self) -> Result<Option<u64>, StorageError> {
        self.run("last_epoch", |conns| async move {
            let client = conns.reader.lock().await;
            last_epoch_in(&*client, &conns.sql, "last_epoch").await
        })
    }

    fn write_checkpoint_rows(
        &self,
        checkpoint_epoch: u64,
        rows: &[CheckpointRow],
    ) -> Result<(), StorageError> {
        limits::check_rows(BACKEND, rows)?;
        let copy = pending_copy(checkpoint_epoch, rows);
        let held = self.held.get();
        let mut pending_keys = self.pending_keys.lock();
        let (seen, own_seq) = pending_keys.note(checkpoint_epoch, rows);
        let written_before = pending_keys.rows;
        let written = self.run("write_checkpoint_rows", |conns| async move {
            write_rows(
                &conns,
                held,
                checkpoint_epoch,
                copy,
                seen,
                own_seq,
                written_before,
            )
            .await
        });
        // After a failure the rows may or may not be in: the next chunk marks the checkpoint.
        pending_keys.own_seq = written.as_ref().ok().and_then(|(seq, _)| *seq);
        if let Ok((_, copied)) = written {
            pending_keys.rows += copied;
        }
        written.map(drop)
    }

    fn complete_checkpoint(&self, checkpoint_epoch: u64) -> Result<(), StorageError> {
        let held = self.held.get();
        let written = {
            let pending_keys = self.pending_keys.lock();
            match pending_keys.epoch == Some(checkpoint_epoch) {
                true => pending_keys.rows,
                false => 0,
            }
        };
        self.run("complete_checkpoint", |conns| async move {
            complete(&conns, held, checkpoint_epoch, written).await
        })?;
        self.pending_keys.lock().forget();
        Ok(())
    }

    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
    ) -> Result<Option<u64>, StorageError> {
        let mut items = self.stream(2, |conns, out| async move {
            stream_checkpoint(&conns, &out).await
        });
        let latest = match items.next() {
            Some(Ok(CheckpointItem::Latest(latest))) => latest,
            Some(Err(err)) => return Err(err),
            Some(Ok(CheckpointItem::Copied(..))) | None => return Err(read_ended_early()),
        };
        if latest.is_none() {
            return Ok(None);
        }
        let copied = match items.next() {
            Some(Ok(CheckpointItem::Copied(copied))) => copied,
            Some(Err(err)) => return Err(err),
            Some(Ok(CheckpointItem::Latest(..))) | None => return Err(read_ended_early()),
        };
        visit_sorted(copied, visit)?;
        Ok(latest)
    }

    fn truncate_log_below(&self, epoch: u64) -> Result<(), StorageError> {
        let held = self.held.get();
        self.run("truncate_log_below", |conns| async move {
            truncate(&conns, held, epoch).await
        })
    }

    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, StorageError> {
        self.run("latest_checkpoint_epoch", |conns| async move {
            let operation = "latest_checkpoint_epoch";
            let mut client = conns.reader.lock().await;
            let txn = begin(&mut client, operation).await?;
            read_meta(&txn, &conns.sql, META_LATEST, operation).await
        })
    }

    fn read_store_info(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.run("read_store_info", |conns| async move {
            let operation = "read_store_info";
            let client = conns.reader.lock().await;
            let found = client
                .query_typed_opt(&conns.sql.meta_get, &[(&META_STORE_INFO, Type::TEXT)])
                .await
                .map_err(pg_error(operation))?;
            match found {
                Some(found) => row::decode_meta_bytes(BACKEND, META_STORE_INFO, found.get(0))
                    .map(|info| Some(info.to_vec())),
                None => Ok(None),
            }
        })
    }

    fn write_store_info(&self, info: &[u8]) -> Result<(), StorageError> {
        limits::check_store_info(BACKEND, info)?;
        let stored = row::encode_meta_bytes(META_STORE_INFO, info);
        self.run("write_store_info", |conns| async move {
            let operation = "write_store_info";
            let mut client = conns.checkpoints.lock().await;
            let txn = begin(&mut client, operation).await?;
            write_meta(&txn, &conns.sql, META_STORE_INFO, &stored, operation).await?;
            txn.commit().await.map_err(pg_error(operation))
        })
    }

    fn checkpoints_have_own_writer(&self) -> bool {
        // Checkpoint writes use their own connection and lock only the checkpoint rows.
        true
    }

    fn acquire_lease(&self, holder: &str, ttl: Duration) -> Result<u64, StorageError> {
        lease::check_holder(BACKEND, holder)?;
        let holder = holder.to_string();
        let term = self.run("acquire_lease", |conns| async move {
            take_lease(&conns, holder, ttl).await
        })?;
        self.held.set(term);
        Ok(term)
    }
}
