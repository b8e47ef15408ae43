//! Runs the shared conformance suite against the PostgreSQL backend, on a private server this
//! test starts itself (`txn_storage::postgres_instance`: a temporary directory, a unix socket
//! only, always stopped). Nothing is installed: without the server binaries these tests FAIL in
//! CI (`CI` set, as `.ci/run` does after installing `postgresql`) and elsewhere print a loud
//! skip line and return.
//!
//! Run: `cargo test -p txn-storage --features postgres --test postgres`.

#![cfg(feature = "postgres")]

use std::time::Duration;

use txn_storage::conformance::{self, Open};
use txn_storage::postgres_instance::{self, PgInstance};
use txn_storage::{PostgresStorage, Storage, StorageError};

/// A running private server, or `None` after a loud skip line when the binaries are missing
/// outside CI (in CI a missing server fails the test).
fn server(test: &str) -> Option<PgInstance> {
    postgres_instance::for_test(test, 40)
}

#[test]
fn postgres_storage_passes_conformance() {
    // Goal: PostgresStorage implements every documented contract, including reopening the
    // same schema and a second handle on it (the lease and fencing checks).
    let Some(server) = server("postgres_storage_passes_conformance") else {
        return;
    };
    let config = server.config_string();
    let mut n_stores = 0u32;
    let mut schema = String::new();
    conformance::run_all(&mut |open| {
        if open == Open::Fresh {
            n_stores += 1;
            schema = format!("conformance_{n_stores}");
        }
        PostgresStorage::open_in_schema(&config, &schema)
            .unwrap_or_else(|e| panic!("open schema {schema}: {e}"))
    });
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_storage_is_usable_from_a_tokio_worker() {
    // Goal: the synchronous calls neither panic nor deadlock when made (and the store dropped)
    // on a tokio worker thread, where nesting a runtime would panic.
    let Some(server) = tokio::task::spawn_blocking(|| server("from_a_tokio_worker"))
        .await
        .unwrap()
    else {
        return;
    };
    let store = PostgresStorage::open(&server.config_string()).expect("open on a worker");
    store.append_epoch(1, b"one").expect("append on a worker");
    let mut read = Vec::new();
    store
        .read_epochs(0, &mut |epoch, batch| {
            read.push((epoch, batch.to_vec()));
            Ok(())
        })
        .expect("read on a worker");
    assert_eq!(read, vec![(1, b"one".to_vec())]);
    let term = store.acquire_lease("worker", Duration::ZERO).unwrap();
    let other = PostgresStorage::open(&server.config_string()).unwrap();
    assert_eq!(
        other
            .acquire_lease("other", Duration::from_secs(60))
            .unwrap(),
        term + 1
    );
    let err = store.append_epoch(2, b"two").expect_err("a fenced append");
    assert!(matches!(err, StorageError::Fenced { .. }), "{err:?}");
    drop((store, other));
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}

#[test]
fn bad_schema_names_are_refused() {
    // Goal: a schema name that would need quoting in SQL is refused before connecting.
    for schema in [
        "",
        "Upper",
        "1st",
        "semi;colon",
        "with space",
        &"x".repeat(64),
    ] {
        let err = PostgresStorage::open_in_schema("host=/nonexistent", schema)
            .err()
            .unwrap_or_else(|| panic!("schema {schema:?} was accepted"));
        assert!(err.to_string().contains("schema name"), "{schema:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_of_an_earlier_checkpoint_layout_is_refused_untouched() {
    // Goal: a schema holding the tables of either earlier checkpoint layout (the first's
    // `state` and `pending`; the second's `checkpoint_rows`, keyed by `(key, epoch)`, next to
    // the log, meta and lease tables) is refused by name, not opened with its checkpoints
    // silently missing, and before anything is created in it.
    let Some(server) = tokio::task::spawn_blocking(|| server("earlier_layout"))
        .await
        .unwrap()
    else {
        return;
    };
    let config = server.config_string();
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let layouts = [
        (
            "first",
            "CREATE TABLE first.state (key bytea PRIMARY KEY, envelope bytea NOT NULL);",
        ),
        (
            "second",
            "CREATE TABLE second.log (epoch bigint PRIMARY KEY, record bytea NOT NULL); \
             ALTER TABLE second.log ALTER COLUMN record SET STORAGE EXTERNAL; \
             CREATE TABLE second.checkpoint_rows (key bytea NOT NULL, epoch bigint NOT NULL, \
                 live boolean NOT NULL, envelope bytea NOT NULL, PRIMARY KEY (key, epoch)); \
             CREATE TABLE second.meta (name text PRIMARY KEY, value bytea NOT NULL); \
             CREATE TABLE second.lease (id smallint PRIMARY KEY CHECK (id = 1), record bytea);",
        ),
    ];
    for (schema, tables) in layouts {
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}; {tables}"))
            .await
            .unwrap();
        let opening = config.clone();
        let opened = tokio::task::spawn_blocking(move || {
            PostgresStorage::open_in_schema(&opening, schema).map(drop)
        })
        .await
        .unwrap();
        match opened {
            Err(StorageError::CorruptStore { detail, .. }) => {
                assert!(detail.contains("earlier checkpoint layout"), "{detail}");
                assert!(detail.contains("`checkpoint_rows`"), "{detail}");
            }
            other => panic!("a schema of the {schema} layout was opened: {other:?}"),
        }
        let created: bool = client
            .query_one(
                &format!(
                    "SELECT to_regclass('{schema}.checkpoint_versions') IS NOT NULL \
                     OR to_regclass('{schema}.checkpoint_chunk') IS NOT NULL"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!created, "the refused {schema} schema was changed");
    }
    drop(client);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}

/// How many handles open one fresh schema at the same moment in
/// `concurrent_opens_of_a_fresh_schema_all_succeed_at_once`, as the nodes of a cluster do.
const CONCURRENT_OPENERS: usize = 4;
/// Fresh schemas that test opens, each by all the openers at once.
const CONCURRENT_OPEN_ROUNDS: usize = 5;
/// Attempts an opener makes before it gives up (the old schema creation needed several).
const OPEN_ATTEMPTS_MAX: u32 = 20;

/// Opens `schema` as a cluster node does (again after a serialization failure, SQLSTATE
/// 40001); returns the store and how many attempts failed with 40001.
fn open_retrying_serialization_failures(config: &str, schema: &str) -> (PostgresStorage, u32) {
    let mut failures = 0;
    loop {
        match PostgresStorage::open_in_schema(config, schema) {
            Ok(store) => return (store, failures),
            Err(e) if e.to_string().contains("40001") && failures < OPEN_ATTEMPTS_MAX => {
                eprintln!("open of {schema} failed to serialize: {e}");
                failures += 1;
            }
            Err(e) => {
                panic!("open of {schema} failed after {failures} serialization failures: {e}")
            }
        }
    }
}

#[test]
fn concurrent_opens_of_a_fresh_schema_all_succeed_at_once() {
    // Goal: several handles opening the same fresh schema at once (the nodes of a cluster
    // starting together, on a server whose default isolation is SERIALIZABLE as the private
    // one's is) all succeed at the first attempt, with no serialization failure (40001), and
    // share one store.
    let Some(server) = server("concurrent_opens") else {
        return;
    };
    let config = server.config_string();
    let mut serialization_failures = 0;
    for round in 0..CONCURRENT_OPEN_ROUNDS {
        let schema = format!("opened_at_once_{round}");
        let barrier = std::sync::Barrier::new(CONCURRENT_OPENERS);
        let opened: Vec<(PostgresStorage, u32)> = std::thread::scope(|scope| {
            let openers: Vec<_> = (0..CONCURRENT_OPENERS)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        open_retrying_serialization_failures(&config, &schema)
                    })
                })
                .collect();
            openers.into_iter().map(|o| o.join().unwrap()).collect()
        });
        serialization_failures += opened.iter().map(|(_, failures)| failures).sum::<u32>();
        opened[0].0.append_epoch(7, b"seven").unwrap();
        for (store, _) in &opened {
            assert_eq!(store.last_epoch().unwrap(), Some(7), "schema {schema}");
        }
    }
    assert_eq!(
        serialization_failures, 0,
        "{CONCURRENT_OPEN_ROUNDS} rounds of {CONCURRENT_OPENERS} concurrent opens of a fresh \
         schema failed to serialize {serialization_failures} times"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_an_existing_store_waits_for_no_write() {
    // Goal: opening a store whose tables exist (a standby contending for the lease opens it
    // again and again) changes no table, so it neither waits for a write in flight (here an
    // append's table lock, held open) nor holds up the writes after it.
    let Some(server) = server_off_the_workers("open_waits_for_no_write").await else {
        return;
    };
    let config = server.config_string();
    let opening = config.clone();
    tokio::task::spawn_blocking(move || PostgresStorage::open_in_schema(&opening, "busy"))
        .await
        .unwrap()
        .expect("the first open creates the tables");
    let (mut client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let appending = client.transaction().await.unwrap();
    appending
        .batch_execute("LOCK TABLE busy.log IN SHARE ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let opening = config.clone();
    let reopened =
        tokio::task::spawn_blocking(move || PostgresStorage::open_in_schema(&opening, "busy"));
    // A bound on a failure, not a synchronisation: an open that needs the table waits for
    // the append's transaction, which ends only after this.
    let reopened = tokio::time::timeout(Duration::from_secs(60), reopened).await;
    appending.rollback().await.unwrap();
    let reopened = reopened.expect("the open waited for the append's lock on the log table");
    reopened.unwrap().expect("reopen the existing store");
    drop(client);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}

/// [`server`] from a tokio worker thread, which it must not block.
async fn server_off_the_workers(test: &'static str) -> Option<PgInstance> {
    tokio::task::spawn_blocking(move || server(test))
        .await
        .unwrap()
}

/// The heap blocks of the checkpoint table in `schema`, asked of the server directly.
fn checkpoint_table_blocks(config: &str, schema: &str) -> i64 {
    let sql = format!(
        "SELECT pg_relation_size('{schema}.checkpoint_versions') / \
         current_setting('block_size')::bigint"
    );
    ask(config, &sql)
}

/// A connection to the server, outside the store, and the runtime that drives it.
fn direct(config: &str) -> (tokio::runtime::Runtime, tokio_postgres::Client) {
    let config: tokio_postgres::Config = config.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(async {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    });
    (runtime, client)
}

/// The `bigint` the statement `sql` returns, asked of the server directly.
fn ask(config: &str, sql: &str) -> i64 {
    let (runtime, client) = direct(config);
    runtime.block_on(async { client.query_one(sql, &[]).await.unwrap().get(0) })
}

#[test]
fn a_large_checkpoint_read_by_several_connections_is_whole_and_in_key_order() {
    // Goal: a checkpoint table large enough to be read by every connection a checkpoint read
    // may open (each copying its own range of heap blocks) reads back every live row once, in
    // key order, after a second checkpoint replaced and deleted rows scattered over the table,
    // and after a third, small one that left the versions it replaced to a later pruning.
    let Some(server) = server("large_checkpoint_read") else {
        return;
    };
    let config = server.config_string();
    let store = PostgresStorage::open_in_schema(&config, "large").unwrap();
    let n_rows = 36_000usize;
    let key = |i: usize| format!("row-{:08}", (i * 7_919) % n_rows).into_bytes();
    let value = |i: usize, version: u8| vec![version ^ (i as u8); 1_400];
    let mut model = std::collections::BTreeMap::new();
    for chunk in (0..n_rows).collect::<Vec<_>>().chunks(6_000) {
        let rows: Vec<_> = chunk.iter().map(|&i| (key(i), Some(value(i, 1)))).collect();
        store.write_checkpoint_rows(1, &rows).unwrap();
        model.extend(rows.into_iter().map(|(k, v)| (k, v.unwrap())));
    }
    store.complete_checkpoint(1).unwrap();
    let readers = txn_storage::limits::POSTGRES_CHECKPOINT_READERS_MAX as i64;
    let blocks_min = txn_storage::limits::POSTGRES_CHECKPOINT_BLOCKS_PER_READER_MIN * readers;
    let blocks = checkpoint_table_blocks(&config, "large");
    assert!(
        blocks >= blocks_min,
        "{blocks} blocks: too few for {readers} readers"
    );
    let changed: Vec<_> = (0..n_rows)
        .step_by(7)
        .map(|i| (key(i), Some(value(i, 2))))
        .chain((0..n_rows).step_by(11).map(|i| (key(i), None)))
        .collect();
    store.write_checkpoint_rows(2, &changed).unwrap();
    store.complete_checkpoint(2).unwrap();
    for (k, v) in changed {
        match v {
            Some(v) => model.insert(k, v),
            None => model.remove(&k),
        };
    }
    let mut read = Vec::new();
    let latest = store
        .read_latest_checkpoint(&mut |k, v| {
            read.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
    assert_eq!(latest, Some(2));
    assert_eq!(read.len(), model.len(), "rows lost or read twice");
    assert!(
        read.into_iter().eq(model.clone()),
        "rows differ or out of key order"
    );
    let small: Vec<_> = (3..n_rows)
        .step_by(23)
        .map(|i| (key(i), Some(value(i, 3))))
        .chain((5..n_rows).step_by(29).map(|i| (key(i), None)))
        .collect();
    store.write_checkpoint_rows(3, &small).unwrap();
    store.complete_checkpoint(3).unwrap();
    apply(&mut model, small);
    expect_read(&store, 3, &model);
    let stored = ask(&config, "SELECT count(*) FROM large.checkpoint_versions");
    assert!(
        stored > model.len() as i64,
        "checkpoint 3 was pruned at once"
    );
    drop(store);
    server.stop();
}

/// Live rows by key, as a checkpoint read should return them.
type Model = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// Applies checkpoint rows to `model` (`None`: the key deleted).
fn apply(model: &mut Model, rows: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>) {
    for (k, v) in rows {
        match v {
            Some(v) => model.insert(k, v),
            None => model.remove(&k),
        };
    }
}

/// Reads the latest checkpoint of `store`: it must be `epoch` and hold `model`'s rows.
fn expect_read(store: &PostgresStorage, epoch: u64, model: &Model) {
    let (latest, read) = conformance::collect_checkpoint(store);
    assert_eq!(latest, Some(epoch));
    assert!(
        read.iter().cloned().eq(model.clone()),
        "checkpoint {epoch}: {} rows read, {} expected",
        read.len(),
        model.len()
    );
}

#[test]
fn chunks_written_again_and_keys_repeated_across_chunks_merge() {
    // Goal: a whole chunk of the runtime's size written twice (a retry after a failed call
    // whose commit did go through) and keys written again in later chunks of the same
    // checkpoint (merged deltas) are accepted, the last write of a key winning, over an
    // earlier complete checkpoint and on the first one alike, and also when another handle
    // continues the checkpoint; and a checkpoint abandoned between chunks (its writer gone)
    // leaves the complete one readable, then is discarded.
    let Some(server) = server("chunks_written_again") else {
        return;
    };
    let config = server.config_string();
    let store = PostgresStorage::open_in_schema(&config, "again").unwrap();
    let key = |i: usize| format!("key-{i:06}").into_bytes();
    let chunk_rows = 4_096;
    let mut model = Model::new();
    for epoch in [1u64, 2] {
        let chunk: Vec<_> = (0..chunk_rows)
            .map(|i| (key(i), Some(format!("{epoch}-{i}").into_bytes())))
            .collect();
        store.write_checkpoint_rows(epoch, &chunk).unwrap();
        store.write_checkpoint_rows(epoch, &chunk).unwrap();
        // Later chunks change and delete some of the keys again, and add new ones.
        let later: Vec<_> = (0..chunk_rows)
            .step_by(3)
            .map(|i| {
                (
                    key(i),
                    (i % 2 == 0).then(|| format!("again-{epoch}-{i}").into_bytes()),
                )
            })
            .chain((chunk_rows..chunk_rows + 10).map(|i| (key(i), Some(b"new".to_vec()))))
            .collect();
        store.write_checkpoint_rows(epoch, &later).unwrap();
        store.write_checkpoint_rows(epoch, &later[..5]).unwrap();
        store.complete_checkpoint(epoch).unwrap();
        apply(&mut model, chunk.into_iter().chain(later));
        expect_read(&store, epoch, &model);
    }
    // Checkpoint 3 abandoned after two chunks: its writer dropped (its connections closed).
    let abandoned: Vec<_> = (0..100).map(|i| (key(i), None)).collect();
    store.write_checkpoint_rows(3, &abandoned).unwrap();
    store.write_checkpoint_rows(3, &abandoned[..10]).unwrap();
    drop(store);
    let store = PostgresStorage::open_in_schema(&config, "again").unwrap();
    let (latest, read) = conformance::collect_checkpoint(&store);
    assert_eq!(latest, Some(2), "the abandoned checkpoint is not read");
    assert!(read.iter().cloned().eq(model.clone()));
    store
        .write_checkpoint_rows(4, &[(key(1), Some(b"four".to_vec()))])
        .unwrap();
    // Checkpoint 4 continued by another handle (a writer restarted at the same checkpoint),
    // which writes the key again without having seen the first write.
    drop(store);
    let store = PostgresStorage::open_in_schema(&config, "again").unwrap();
    store
        .write_checkpoint_rows(4, &[(key(1), Some(b"four again".to_vec()))])
        .unwrap();
    store.complete_checkpoint(4).unwrap();
    model.insert(key(1), b"four again".to_vec());
    let (latest, read) = conformance::collect_checkpoint(&store);
    assert_eq!(latest, Some(4));
    assert!(
        read.iter().cloned().eq(model),
        "the abandoned checkpoint's deletions leaked into the next one"
    );
    drop(store);
    server.stop();
}

#[test]
fn a_checkpoint_continued_or_restarted_by_another_holder_keeps_each_keys_last_write() {
    // Goal: when the lease changes hands in the middle of a checkpoint, the state completed is
    // each key's last write: the new holder continuing the deposed one's checkpoint (its
    // first chunk repeats a key of the deposed one's), the deposed holder's writes refused
    // meanwhile, and a holder that takes the lease back and goes on with a checkpoint of the
    // same epoch that the other holder had started anew in between (so the keys it remembers
    // writing are not all the checkpoint holds).
    let Some(server) = server("another_holder") else {
        return;
    };
    let config = server.config_string();
    let a = PostgresStorage::open_in_schema(&config, "holders").unwrap();
    let b = PostgresStorage::open_in_schema(&config, "holders").unwrap();
    let put = |key: &str, value: &str| (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()));
    // Leases of length zero: the other handle may take each over at once.
    let take = |store: &PostgresStorage, holder: &str| {
        store.acquire_lease(holder, Duration::ZERO).unwrap()
    };
    let expect_checkpoint = |store: &PostgresStorage, epoch: u64, rows: &[(&str, &str)]| {
        let (latest, read) = conformance::collect_checkpoint(store);
        let expected: Vec<_> = rows
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(latest, Some(epoch));
        assert_eq!(read, expected, "checkpoint {epoch}");
    };
    let fenced = |result: Result<(), StorageError>| {
        assert!(
            matches!(result, Err(StorageError::Fenced { .. })),
            "a deposed holder's checkpoint write: {result:?}"
        );
    };

    // B continues A's checkpoint 20 after taking the lease.
    take(&a, "a");
    a.write_checkpoint_rows(20, &[put("x", "a"), put("y", "a")])
        .unwrap();
    take(&b, "b");
    fenced(a.write_checkpoint_rows(20, &[put("y", "deposed")]));
    fenced(a.complete_checkpoint(20));
    b.write_checkpoint_rows(20, &[put("y", "b")]).unwrap();
    b.complete_checkpoint(20).unwrap();
    expect_checkpoint(&b, 20, &[("x", "a"), ("y", "b")]);

    // A starts checkpoint 30; B takes over, abandons it (completing 25) and starts 30 anew;
    // A takes the lease back and goes on with 30, writing a key of B's it never wrote itself.
    take(&a, "a");
    a.write_checkpoint_rows(30, &[put("p", "a")]).unwrap();
    take(&b, "b");
    b.complete_checkpoint(25).unwrap();
    b.write_checkpoint_rows(30, &[put("q", "b"), put("r", "b")])
        .unwrap();
    take(&a, "a");
    a.write_checkpoint_rows(30, &[put("q", "a")]).unwrap();
    a.complete_checkpoint(30).unwrap();
    expect_checkpoint(&a, 30, &[("q", "a"), ("r", "b"), ("x", "a"), ("y", "b")]);
    drop((a, b));
    server.stop();
}

#[test]
fn small_checkpoints_over_a_large_one_wait_to_be_pruned_and_read_each_keys_newest_version() {
    // Goal: a small checkpoint over a large one completes without pruning the versions it
    // replaces (the table keeps them) until the versions not yet pruned are more than a tenth
    // of the rows; meanwhile a read sees each key's newest version (a key changed in several
    // such checkpoints, deleted, deleted and written again); once pruned the table holds one
    // row per live key; and a store whose rows were not counted (an earlier build's) prunes
    // at its next completion.
    let Some(server) = server("small_checkpoints") else {
        return;
    };
    let config = server.config_string();
    let store = PostgresStorage::open_in_schema(&config, "small").unwrap();
    let key = |i: u64| format!("key-{i:05}").into_bytes();
    let mut model = Model::new();
    // Writes and completes checkpoint `epoch`, checks the read against the model; returns
    // whether the table still holds versions it replaced (the pruning waits).
    let mut checkpoint = |epoch: u64, rows: Vec<(Vec<u8>, Option<Vec<u8>>)>| {
        store.write_checkpoint_rows(epoch, &rows).unwrap();
        store.complete_checkpoint(epoch).unwrap();
        apply(&mut model, rows);
        expect_read(&store, epoch, &model);
        let stored = ask(&config, "SELECT count(*) FROM small.checkpoint_versions");
        let live = i64::try_from(model.len()).unwrap();
        assert!(stored >= live, "checkpoint {epoch}: {stored} rows stored");
        stored > live
    };
    let first = (0..2_000).map(|i| (key(i), Some(format!("1-{i}").into_bytes())));
    assert!(!checkpoint(1, first.collect()));
    // Keys 0..10 changed every time; ten of the others deleted or written again.
    let small = |epoch: u64| {
        let changed = (0..10).map(move |i| (key(i), Some(format!("{epoch}-{i}").into_bytes())));
        let others = (0..10).map(move |i| {
            let value = (epoch + i).is_multiple_of(2);
            let value = value.then(|| format!("{epoch}-x").into_bytes());
            (key(10 + (epoch * 7 + i) % 1_990), value)
        });
        changed.chain(others).collect::<Vec<_>>()
    };
    let (mut waited, mut pruned) = (0, 0);
    for epoch in 2..=40 {
        if checkpoint(epoch, small(epoch)) {
            waited += 1;
        } else {
            pruned += 1;
        }
    }
    assert!(
        waited >= 30,
        "{waited} of 39 small checkpoints left the pruning for later"
    );
    assert!(pruned >= 2, "{pruned} of 39 small checkpoints pruned");
    // A store of an earlier build, which did not count its rows, prunes at the next completion.
    let mut epoch = 41;
    while !checkpoint(epoch, small(epoch)) {
        epoch += 1;
    }
    let forgotten = "WITH gone AS (DELETE FROM small.meta WHERE name = 'complete_rows' \
                     RETURNING 1) SELECT count(*) FROM gone";
    assert_eq!(ask(&config, forgotten), 1);
    assert!(!checkpoint(epoch + 1, small(epoch + 1)));
    assert!(checkpoint(epoch + 2, small(epoch + 2)));
    drop(store);
    server.stop();
}

/// Runs the statements `sql` on the server directly.
fn exec(config: &str, sql: &str) {
    let (runtime, client) = direct(config);
    runtime.block_on(client.batch_execute(sql)).unwrap();
}

#[test]
fn a_checkpoint_whose_committed_chunks_the_server_lost_is_never_completed() {
    // Goal: checkpoint chunks commit without waiting for the WAL flush, so a server that
    // crashed and restarted behind a connection that survived it (a pooling proxy) can lose a
    // writer's last chunks, or all of them. The writer notices — its next chunk and its
    // completion fail, naming the rows it wrote — instead of completing a checkpoint without
    // them (the log below it would then be truncated and the rows gone). Simulated by undoing
    // the lost chunks' effects in the tables, as a crash before the flush would.
    let Some(server) = server("lost_chunks") else {
        return;
    };
    let config = server.config_string();
    let key = |i: usize| format!("key-{i:06}").into_bytes();
    let chunk = |from: usize| -> Vec<_> {
        (from..from + 100)
            .map(|i| (key(i), Some(b"v".to_vec())))
            .collect()
    };

    // Every chunk lost: the checkpoint is no longer pending.
    let store = PostgresStorage::open_in_schema(&config, "lost_all").unwrap();
    store.write_checkpoint_rows(1, &chunk(0)).unwrap();
    store.write_checkpoint_rows(1, &chunk(100)).unwrap();
    exec(
        &config,
        "DELETE FROM lost_all.checkpoint_versions; \
         DELETE FROM lost_all.meta WHERE name IN ('pending_epoch', 'pending_rows')",
    );
    let err = store.write_checkpoint_rows(1, &chunk(200)).unwrap_err();
    assert!(err.to_string().contains("wrote 200 rows"), "{err}");
    let err = store.complete_checkpoint(1).unwrap_err();
    assert!(err.to_string().contains("it is not pending"), "{err}");
    assert_eq!(store.latest_checkpoint_epoch().unwrap(), None);
    drop(store);

    // The last chunk lost: the checkpoint's row count is the one before it.
    let store = PostgresStorage::open_in_schema(&config, "lost_last").unwrap();
    store.write_checkpoint_rows(1, &chunk(0)).unwrap();
    exec(
        &config,
        "CREATE TABLE lost_last.saved AS SELECT * FROM lost_last.meta WHERE name = 'pending_rows'",
    );
    store.write_checkpoint_rows(1, &chunk(100)).unwrap();
    exec(
        &config,
        "UPDATE lost_last.meta SET value = (SELECT value FROM lost_last.saved) \
         WHERE name = 'pending_rows'",
    );
    let err = store.complete_checkpoint(1).unwrap_err();
    assert!(
        err.to_string()
            .contains("wrote 200 rows into it but it holds 100"),
        "{err}"
    );
    assert_eq!(store.latest_checkpoint_epoch().unwrap(), None);
    drop(store);

    // Nothing lost: a checkpoint continued by another handle completes (the count covers
    // every handle's rows, and a handle checks only its own).
    let store = PostgresStorage::open_in_schema(&config, "kept").unwrap();
    store.write_checkpoint_rows(1, &chunk(0)).unwrap();
    drop(store);
    let store = PostgresStorage::open_in_schema(&config, "kept").unwrap();
    store.write_checkpoint_rows(1, &chunk(100)).unwrap();
    store.complete_checkpoint(1).unwrap();
    assert_eq!(store.latest_checkpoint_epoch().unwrap(), Some(1));
    drop(store);
    server.stop();
}
