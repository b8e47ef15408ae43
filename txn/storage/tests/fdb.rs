//! Runs the shared conformance suite against the FoundationDB backend when `FDB_CLUSTER_FILE`
//! names a live cluster, and says loudly that it was skipped otherwise.
//!
//! Run: `FDB_CLUSTER_FILE=/etc/foundationdb/fdb.cluster cargo test -p txn-storage --features fdb
//! --test fdb -- --nocapture` (needs the FoundationDB 7.3 client library, `libfdb_c`).

#[cfg(feature = "fdb")]
#[test]
fn fdb_storage_passes_conformance() {
    // Goal: FdbStorage implements every documented contract, including reopen persistence.
    use txn_storage::FdbStorage;
    use txn_storage::conformance::{self, Open};

    let Ok(cluster_file) = std::env::var("FDB_CLUSTER_FILE") else {
        eprintln!(
            "SKIPPED: no FoundationDB cluster (set FDB_CLUSTER_FILE to run the FDB conformance \
             suite)"
        );
        return;
    };
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
fn fdb_storage_passes_conformance() {
    // Goal: say that the FoundationDB suite did not run, so a green run is not mistaken for it.
    eprintln!(
        "SKIPPED: FoundationDB backend not compiled (run with --features fdb and FDB_CLUSTER_FILE \
         set to run the FDB conformance suite)"
    );
}
