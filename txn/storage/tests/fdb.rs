//! Runs the shared conformance suite against the FoundationDB backend. It needs a live cluster,
//! so it is `#[ignore]`d: a normal run reports it as ignored, never as passed. `.ci/run`
//! compiles it (clippy with `--features fdb`) and runs it only when `FDB_CLUSTER_FILE` is set.
//!
//! Run: `FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster cargo test -p txn-storage --features fdb
//! --test fdb -- --ignored --nocapture` (needs the FoundationDB 7.3 client library, `libfdb_c`).

#[cfg(feature = "fdb")]
#[test]
#[ignore = "needs FDB_CLUSTER_FILE (a live FoundationDB cluster); run with --ignored"]
fn fdb_storage_passes_conformance() {
    // Goal: FdbStorage implements every documented contract, including reopen persistence.
    use txn_storage::FdbStorage;
    use txn_storage::conformance::{self, Open};

    // Asked for explicitly (`--ignored`): without a cluster that is a failure, not a pass.
    let cluster_file = std::env::var("FDB_CLUSTER_FILE").expect(
        "FDB_CLUSTER_FILE must name a live FoundationDB cluster to run the FDB conformance suite",
    );
    // SAFETY: the network is booted once, by the only test in this binary that touches
    // FoundationDB, and `network` is dropped at the end of this function — also when a check
    // panics, since drops run while unwinding — so the network stops before the process exits.
    #[allow(unsafe_code)]
    let network = unsafe { foundationdb::boot() };
    let open = |name: &str| {
        FdbStorage::open(Some(&cluster_file), name)
            .unwrap_or_else(|err| panic!("open FoundationDB store {name}: {err}"))
    };
    let run_id = std::process::id();
    let mut n_stores = 0u32;
    let mut name = String::new();
    conformance::run_all(&mut |how| {
        if how == Open::Fresh {
            n_stores += 1;
            name = format!("conformance-{run_id}-{n_stores}");
            let store = open(&name);
            store.clear_everything().expect("clear a fresh store");
            return store;
        }
        open(&name)
    });
    for idx in 1..=n_stores {
        open(&format!("conformance-{run_id}-{idx}"))
            .clear_everything()
            .expect("clear a conformance store");
    }
    drop(network);
}

#[cfg(not(feature = "fdb"))]
#[test]
#[ignore = "needs --features fdb and FDB_CLUSTER_FILE (a live FoundationDB cluster)"]
fn fdb_storage_passes_conformance() {
    // Goal: a run without the backend shows the suite as ignored; run on purpose, it fails.
    panic!(
        "the FoundationDB backend is not compiled: run with --features fdb and FDB_CLUSTER_FILE \
         set to run the FDB conformance suite"
    );
}
