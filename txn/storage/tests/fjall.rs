//! Runs the shared conformance suite against the fjall backend, reopening the same directory.

#![cfg(feature = "fjall")]

use txn_storage::conformance::{self, Open};
use txn_storage::{FjallStorage, Storage, StorageError};

#[test]
fn fjall_storage_passes_conformance() {
    // Goal: FjallStorage implements every documented contract, including reopen persistence.
    let mut dir = tempfile::tempdir().unwrap();
    conformance::run_all(&mut |open| {
        match open {
            Open::Fresh => dir = tempfile::tempdir().unwrap(),
            Open::Reopen => {}
            Open::Another => return FjallStorage::open_another(dir.path()).unwrap(),
        }
        FjallStorage::open(dir.path()).unwrap()
    });
}

#[test]
fn fjall_append_fails_once_the_data_directory_is_deleted() {
    // Goal: a data directory deleted under an open store fails the next append with
    // `Vanished` instead of acknowledging it.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = FjallStorage::open(&data).unwrap();
    store.append_epoch(1, b"one").unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let err = store
        .append_epoch(2, b"two")
        .expect_err("an append into a deleted store was acknowledged");
    assert!(matches!(err, StorageError::Vanished { .. }), "{err:?}");
}
