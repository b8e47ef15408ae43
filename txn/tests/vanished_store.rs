//! A data directory deleted under a running runtime: the next submissions fail with a storage
//! error naming the problem, and nothing is acknowledged after the deletion.

use crate::common::*;
use std::sync::Arc;
use txn::storage::EmbeddedStorage;
use txn::{Runtime, RuntimeConfig, TxnError};

// Goal: after the data directory is deleted, no submission is acknowledged: each fails with
// `TxnError::Storage` saying the store's file was deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_data_directory_stops_acknowledgements() {
    let fx = build(1, 2);
    let bump = |key: u64| {
        Ev::chain(vec![Op {
            svc: 0,
            key,
            kind: OpKind::Add(1),
        }])
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = RuntimeConfig {
        storage: Arc::new(EmbeddedStorage::open(&data).unwrap()),
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let counters = fx.services[0];
    let client = rt.client();
    for key in 0..5u64 {
        assert!(
            client
                .submit_raw(counters, &key, bump(key))
                .await
                .unwrap()
                .committed()
        );
    }

    std::fs::remove_dir_all(&data).unwrap();
    for key in 0..5u64 {
        // A request accepted before the failure was noticed has an unknown outcome; its cause
        // is still the storage error.
        let result = client.submit_raw(counters, &key, bump(key)).await;
        let result = match result {
            Err(TxnError::OutcomeUnknown { cause, .. }) => Err(*cause),
            other => other,
        };
        match result {
            Err(TxnError::Storage(message)) => assert!(
                message.contains("vanished") && message.contains("deleted"),
                "the error names the problem: {message}"
            ),
            other => panic!("submission {key} after the deletion: {other:?}"),
        }
    }
    rt.shutdown().await;
}
