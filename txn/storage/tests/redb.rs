//! Runs the shared conformance suite against the redb backend, reopening the same directory.

use txn_storage::conformance::{self, Open};
use txn_storage::{RedbStorage, Storage, StorageError};

#[test]
fn redb_storage_passes_conformance() {
    // Goal: RedbStorage implements every documented contract, including reopen persistence.
    let mut dir = tempfile::tempdir().unwrap();
    conformance::run_all(&mut |open| {
        if open == Open::Fresh {
            dir = tempfile::tempdir().unwrap();
        }
        RedbStorage::open(dir.path()).unwrap()
    });
}

#[test]
fn redb_append_fails_once_the_data_directory_is_deleted() {
    // Goal: a data directory deleted under an open store fails the next append with
    // `Vanished` naming the file, instead of "succeeding" into an unlinked file.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = RedbStorage::open(&data).unwrap();
    store.append_epoch(1, b"one").unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    let err = store
        .append_epoch(2, b"two")
        .expect_err("an append into a deleted store was acknowledged");
    match &err {
        StorageError::Vanished { path, detail, .. } => {
            assert!(
                path.ends_with(txn_storage::redb_storage::FILE_NAME),
                "{err}"
            );
            assert!(detail.contains("deleted"), "{err}");
        }
        other => panic!("expected Vanished, got {other:?}"),
    }
    assert!(
        store.append_epoch(3, b"three").is_err(),
        "later appends too"
    );
}

#[test]
fn redb_checkpoint_fails_once_its_file_is_replaced() {
    // Goal: a checkpoint file replaced by another file (a restored backup, a new store) under
    // an open store fails the next checkpoint write with `Vanished` saying it was replaced.
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(dir.path()).unwrap();
    store.write_store_info(b"app").unwrap();
    let path = store.checkpoint_path().to_path_buf();
    let copy = dir.path().join("copy");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::rename(&copy, &path).unwrap();
    let err = store
        .complete_checkpoint(1)
        .expect_err("a checkpoint into a replaced file was acknowledged");
    assert!(
        matches!(&err, StorageError::Vanished { detail, .. } if detail.contains("replaced")),
        "{err:?}"
    );
}
