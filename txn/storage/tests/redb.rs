//! Runs the shared conformance suite against the redb backend, reopening the same directory.

use txn_storage::conformance::{self, Open};
use txn_storage::{RedbStorage, Storage, StorageError};

#[test]
fn redb_storage_passes_conformance() {
    // Goal: RedbStorage implements every documented contract, including reopen persistence.
    let mut dir = tempfile::tempdir().unwrap();
    conformance::run_all(&mut |open| {
        match open {
            Open::Fresh => dir = tempfile::tempdir().unwrap(),
            Open::Reopen => {}
            Open::Another => return RedbStorage::open_another(dir.path()).unwrap(),
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

#[test]
fn redb_refuses_a_second_open_but_gives_another_handle() {
    // Goal: opening a store this process has open is still refused (two writers by mistake),
    // `open_another` gives a handle on the same files, and once every handle is dropped the
    // store opens again while `open_another` has nothing to join.
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStorage::open(dir.path()).unwrap();
    let err = RedbStorage::open(dir.path())
        .err()
        .expect("a second open of an open store was accepted");
    assert!(err.to_string().contains("already open"), "{err}");
    let another = RedbStorage::open_another(dir.path()).unwrap();
    store.append_epoch(1, b"one").unwrap();
    assert_eq!(another.last_epoch().unwrap(), Some(1));
    drop((store, another));
    assert!(RedbStorage::open_another(dir.path()).is_err());
    let reopened = RedbStorage::open(dir.path()).unwrap();
    assert_eq!(reopened.last_epoch().unwrap(), Some(1));
}
