//! Runs the shared conformance suite against the fjall backend, reopening the same directory.

#![cfg(feature = "fjall")]

use txn_storage::FjallStorage;
use txn_storage::conformance::{self, Open};

#[test]
fn fjall_storage_passes_conformance() {
    // Goal: FjallStorage implements every documented contract, including reopen persistence.
    let mut dir = tempfile::tempdir().unwrap();
    conformance::run_all(&mut |open| {
        if open == Open::Fresh {
            dir = tempfile::tempdir().unwrap();
        }
        FjallStorage::open(dir.path()).unwrap()
    });
}
