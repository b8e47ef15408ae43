//! Runs the shared conformance suite and the fault-injection checks against the in-memory store.

use txn_storage::conformance::{self, Open};
use txn_storage::{FaultOp, FaultyStorage, MemoryStorage, Storage, StorageError};

#[test]
fn memory_storage_passes_conformance() {
    // Goal: MemoryStorage implements every documented contract of the Storage trait.
    let mut last = MemoryStorage::new();
    conformance::run_all(&mut |open| match open {
        Open::Fresh => {
            last = MemoryStorage::new();
            last.clone()
        }
        Open::Reopen | Open::Another => last.clone(),
    });
}

#[test]
fn faulty_storage_without_faults_passes_conformance() {
    // Goal: the fault wrapper is transparent while no fault is planned.
    let mut last = MemoryStorage::new();
    conformance::run_all(&mut |open| match open {
        Open::Fresh => {
            last = MemoryStorage::new();
            FaultyStorage::new(last.clone())
        }
        Open::Reopen | Open::Another => FaultyStorage::new(last.clone()),
    });
}

#[test]
fn memory_clones_share_state() {
    // Goal: a clone of a MemoryStorage sees what the original wrote ("restart" on one memory).
    let store = MemoryStorage::new();
    let restarted = store.clone();
    store.append_epoch(1, b"one").unwrap();
    drop(store);
    assert_eq!(restarted.last_epoch().unwrap(), Some(1));
    assert_eq!(restarted.n_log_records(), 1);
}

#[test]
fn corrupt_record_is_reported_after_intact_ones() {
    // Goal: a damaged record is reported as Corrupt naming its epoch, after the intact records
    // before it were visited, and its bytes are never handed to the visitor.
    let store = MemoryStorage::new();
    for epoch in 1..=4 {
        store.append_epoch(epoch, &[epoch as u8; 16]).unwrap();
    }
    assert!(store.corrupt_log_record(3));
    assert!(!store.corrupt_log_record(99));
    let mut visited = Vec::new();
    let err = store
        .read_epochs(0, &mut |epoch, _| {
            visited.push(epoch);
            Ok(())
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Corrupt {
                epoch: 3,
                backend: "memory",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(visited, vec![1, 2]);
}

#[test]
fn fail_next_append_fails_once_before_writing() {
    // Goal: fail_next_append makes exactly the next append fail with Io and write nothing.
    let store = FaultyStorage::new(MemoryStorage::new());
    store.append_epoch(1, b"a").unwrap();
    store.fail_next_append();
    let err = store.append_epoch(2, b"b").unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Io {
                operation: "append_epoch",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        store.last_epoch().unwrap(),
        Some(1),
        "a failed append was written"
    );
    store.append_epoch(2, b"b").unwrap();
    assert_eq!(store.n_injected(FaultOp::Append), 1);
}

#[test]
fn fail_after_write_persists_and_retry_is_idempotent() {
    // Goal: a fault after the write reports Io although the record is stored, and the caller's
    // retry with the same bytes succeeds.
    let store = FaultyStorage::new(MemoryStorage::new());
    store.fail_next_after_write(FaultOp::Append, 1);
    assert!(matches!(
        store.append_epoch(1, b"a"),
        Err(StorageError::Io { .. })
    ));
    assert_eq!(store.inner().last_epoch().unwrap(), Some(1));
    store.append_epoch(1, b"a").unwrap();
}

#[test]
fn fail_all_until_heal() {
    // Goal: fail_all_appends and fail_all_checkpoint_writes fail every call until heal.
    let store = FaultyStorage::new(MemoryStorage::new());
    store.fail_all_appends();
    store.fail_all_checkpoint_writes();
    for _ in 0..3 {
        assert!(matches!(
            store.append_epoch(1, b"a"),
            Err(StorageError::Io { .. })
        ));
        assert!(matches!(
            store.write_checkpoint_rows(1, &[(b"k".to_vec(), None)]),
            Err(StorageError::Io {
                operation: "write_checkpoint_rows",
                ..
            })
        ));
        assert!(matches!(
            store.complete_checkpoint(1),
            Err(StorageError::Io {
                operation: "complete_checkpoint",
                ..
            })
        ));
    }
    assert_eq!(store.last_epoch().unwrap(), None);
    store.heal();
    store.append_epoch(1, b"a").unwrap();
    store.complete_checkpoint(1).unwrap();
    assert_eq!(store.n_injected(FaultOp::Append), 3);
    assert_eq!(store.n_injected(FaultOp::CompleteCheckpoint), 3);
}

#[test]
fn fail_next_checkpoint_write_leaves_previous_checkpoint() {
    // Goal: a failed completion leaves the previous checkpoint as the latest complete one.
    let store = FaultyStorage::new(MemoryStorage::new());
    store
        .write_checkpoint_rows(1, &[(b"k".to_vec(), Some(b"1".to_vec()))])
        .unwrap();
    store.complete_checkpoint(1).unwrap();
    store
        .write_checkpoint_rows(2, &[(b"k".to_vec(), Some(b"2".to_vec()))])
        .unwrap();
    store.fail_next(FaultOp::CompleteCheckpoint, 1);
    assert!(store.complete_checkpoint(2).is_err());
    let (epoch, rows) = conformance::collect_checkpoint(&store);
    assert_eq!(epoch, Some(1));
    assert_eq!(rows, vec![(b"k".to_vec(), b"1".to_vec())]);
}
