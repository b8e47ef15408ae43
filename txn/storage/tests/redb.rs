//! Runs the shared conformance suite against the redb backend, reopening the same directory.

use txn_storage::RedbStorage;
use txn_storage::conformance::{self, Open};

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
