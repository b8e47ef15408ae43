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
async fn a_schema_of_the_earlier_checkpoint_layout_is_refused() {
    // Goal: a schema holding the `state` and `pending` tables of the first checkpoint layout is
    // refused by name, not opened with its checkpoints silently missing.
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
    client
        .batch_execute(
            "CREATE SCHEMA earlier; \
             CREATE TABLE earlier.state (key bytea PRIMARY KEY, envelope bytea NOT NULL);",
        )
        .await
        .unwrap();
    let opened = tokio::task::spawn_blocking(move || {
        PostgresStorage::open_in_schema(&config, "earlier").map(drop)
    })
    .await
    .unwrap();
    match opened {
        Err(StorageError::CorruptStore { detail, .. }) => {
            assert!(detail.contains("earlier checkpoint layout"), "{detail}");
        }
        other => panic!("a schema of the earlier layout was opened: {other:?}"),
    }
    drop(client);
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}
