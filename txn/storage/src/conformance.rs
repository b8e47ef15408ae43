//! The conformance suite every [`Storage`] backend must pass, compiled into the library so the
//! tests of each backend (and of crates that wrap one) can run it.
//!
//! A backend's test calls [`run_all`] with a function that opens stores: [`Open::Fresh`] asks for
//! a new, empty store; [`Open::Reopen`] asks to open again the store made by the last
//! [`Open::Fresh`], after the suite dropped every handle to it — a durable backend reopens the
//! same directory or subspace, [`crate::MemoryStorage`] hands out a clone of the same state;
//! [`Open::Another`] asks for a second handle on that store while the first stays open (the old
//! and the new writer of a lease hand-over), opened the same way as a reopen.
//! Each check panics with a message naming the broken contract, like any test assertion.
//!
//! ```
//! use txn_storage::{MemoryStorage, conformance};
//! let mut last = MemoryStorage::new();
//! conformance::run_all(&mut |open| match open {
//!     conformance::Open::Fresh => { last = MemoryStorage::new(); last.clone() }
//!     conformance::Open::Reopen | conformance::Open::Another => last.clone(),
//! });
//! ```

use crate::{CheckpointRow, LiveRow, Storage, StorageError, limits};

/// What the suite asks the store factory for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// A new, empty store.
    Fresh,
    /// The store made by the last [`Open::Fresh`], opened again from its durable state.
    Reopen,
    /// Another handle on the store made by the last [`Open::Fresh`], while the suite still holds
    /// the earlier ones: it shares the store's data and lease but holds no lease of its own.
    Another,
}

/// One conformance check: its name and the function running it.
pub type Check<S> = (&'static str, fn(&mut dyn FnMut(Open) -> S));

/// Every check of the suite, in the order [`run_all`] runs them.
pub fn checks<S: Storage>() -> Vec<Check<S>> {
    vec![
        ("empty_store_has_nothing", empty_store_has_nothing::<S>),
        (
            "appends_read_back_in_order",
            appends_read_back_in_order::<S>,
        ),
        (
            "first_append_may_start_anywhere",
            first_append_may_start_anywhere::<S>,
        ),
        ("gap_or_reorder_is_refused", gap_or_reorder_is_refused::<S>),
        (
            "append_epochs_is_group_commit",
            append_epochs_is_group_commit::<S>,
        ),
        (
            "identical_reappend_is_a_noop",
            identical_reappend_is_a_noop::<S>,
        ),
        (
            "oversized_input_is_refused",
            oversized_input_is_refused::<S>,
        ),
        (
            "visitor_error_stops_reading",
            visitor_error_stops_reading::<S>,
        ),
        ("checkpoint_chunks_merge", checkpoint_chunks_merge::<S>),
        (
            "incremental_checkpoints_merge_deletions",
            incremental_checkpoints_merge_deletions::<S>,
        ),
        (
            "incomplete_checkpoint_is_invisible",
            incomplete_checkpoint_is_invisible::<S>,
        ),
        (
            "newer_checkpoint_discards_incomplete",
            newer_checkpoint_discards_incomplete::<S>,
        ),
        (
            "checkpoint_order_is_enforced",
            checkpoint_order_is_enforced::<S>,
        ),
        (
            "truncate_removes_only_covered_epochs",
            truncate_removes_only_covered_epochs::<S>,
        ),
        (
            "empty_and_binary_keys_and_values",
            empty_and_binary_keys_and_values::<S>,
        ),
        ("many_rows_in_many_chunks", many_rows_in_many_chunks::<S>),
        ("reopen_keeps_everything", reopen_keeps_everything::<S>),
        (
            "latest_checkpoint_epoch_follows_completion",
            latest_checkpoint_epoch_follows_completion::<S>,
        ),
        ("store_info_round_trips", store_info_round_trips::<S>),
        (
            "lease_takeover_fences_the_deposed_handle",
            lease_takeover_fences_the_deposed_handle::<S>,
        ),
        (
            "lease_renewal_keeps_the_term_and_refuses_others",
            lease_renewal_keeps_the_term_and_refuses_others::<S>,
        ),
        (
            "lease_term_survives_reopen",
            lease_term_survives_reopen::<S>,
        ),
    ]
}

/// Runs every check of [`checks`], each on fresh stores from `open`, printing each check's name
/// to stderr so a failure is easy to place.
pub fn run_all<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    for (name, check) in checks::<S>() {
        eprintln!("conformance: {name}");
        check(open);
    }
}

/// A deterministic batch of `len` bytes that differs per epoch.
pub fn batch_for(epoch: u64, len: usize) -> Vec<u8> {
    let seed = epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|idx| (seed.rotate_left((idx % 64) as u32) as u8) ^ (idx as u8))
        .collect()
}

/// Every logged epoch `>= from` with its batch, in the order the store visits them.
pub fn collect_epochs<S: Storage>(store: &S, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    store
        .read_epochs(from, &mut |epoch, batch| {
            out.push((epoch, batch.to_vec()));
            Ok(())
        })
        .unwrap_or_else(|err| panic!("{}: read_epochs({from}) failed: {err}", store.name()));
    out
}

/// The latest complete checkpoint's epoch and its live rows, in the order the store visits them.
pub fn collect_checkpoint<S: Storage>(store: &S) -> (Option<u64>, Vec<LiveRow>) {
    let mut rows = Vec::new();
    let epoch = store
        .read_latest_checkpoint(&mut |key, value| {
            rows.push((key.to_vec(), value.to_vec()));
            Ok(())
        })
        .unwrap_or_else(|err| panic!("{}: read_latest_checkpoint failed: {err}", store.name()));
    (epoch, rows)
}

fn epochs_of(entries: &[(u64, Vec<u8>)]) -> Vec<u64> {
    entries.iter().map(|(epoch, _)| *epoch).collect()
}

fn put(key: &str, value: &str) -> CheckpointRow {
    (key.as_bytes().to_vec(), Some(value.as_bytes().to_vec()))
}

fn delete(key: &str) -> CheckpointRow {
    (key.as_bytes().to_vec(), None)
}

fn live(pairs: &[(&str, &str)]) -> Vec<LiveRow> {
    pairs
        .iter()
        .map(|(key, value)| (key.as_bytes().to_vec(), value.as_bytes().to_vec()))
        .collect()
}

fn append_range<S: Storage>(store: &S, epochs: std::ops::RangeInclusive<u64>, len: usize) {
    for epoch in epochs {
        store
            .append_epoch(epoch, &batch_for(epoch, len))
            .unwrap_or_else(|err| panic!("{}: append_epoch({epoch}) failed: {err}", store.name()));
    }
}

fn write_rows<S: Storage>(store: &S, checkpoint_epoch: u64, rows: &[CheckpointRow]) {
    store
        .write_checkpoint_rows(checkpoint_epoch, rows)
        .unwrap_or_else(|err| {
            panic!(
                "{}: write_checkpoint_rows({checkpoint_epoch}) failed: {err}",
                store.name()
            )
        });
}

fn complete<S: Storage>(store: &S, checkpoint_epoch: u64) {
    store
        .complete_checkpoint(checkpoint_epoch)
        .unwrap_or_else(|err| {
            panic!(
                "{}: complete_checkpoint({checkpoint_epoch}) failed: {err}",
                store.name()
            )
        });
}

fn empty_store_has_nothing<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: a new store has no epochs and no checkpoint, and a no-op truncation is accepted.
    let store = open(Open::Fresh);
    assert_eq!(
        store.last_epoch().unwrap(),
        None,
        "last_epoch of an empty store"
    );
    assert!(
        collect_epochs(&store, 0).is_empty(),
        "epochs in an empty store"
    );
    assert_eq!(
        collect_checkpoint(&store),
        (None, Vec::new()),
        "checkpoint of an empty store"
    );
    store
        .truncate_log_below(0)
        .expect("truncate_log_below(0) on an empty store");
}

fn appends_read_back_in_order<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: appended batches of any size (empty, small, larger than one FDB value or transaction)
    // read back byte-identical, in epoch order, from any starting epoch.
    let store = open(Open::Fresh);
    let sizes = [0, 1, 100, 20_000, 150_000, 600_000, 2_500_000, 7];
    let expected: Vec<(u64, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(idx, &len)| (idx as u64 + 1, batch_for(idx as u64 + 1, len)))
        .collect();
    for (epoch, batch) in &expected {
        store.append_epoch(*epoch, batch).expect("append in order");
    }
    assert_eq!(store.last_epoch().unwrap(), Some(sizes.len() as u64));
    assert!(
        collect_epochs(&store, 0) == expected,
        "read_epochs(0) differs from what was appended"
    );
    assert!(
        collect_epochs(&store, 1) == expected,
        "read_epochs(1) differs from what was appended"
    );
    assert!(
        collect_epochs(&store, 5) == expected[4..],
        "read_epochs(5) differs"
    );
    assert!(
        collect_epochs(&store, 8) == expected[7..],
        "read_epochs(8) differs"
    );
    assert!(
        collect_epochs(&store, 9).is_empty(),
        "read_epochs past the end visited something"
    );
    assert!(
        collect_epochs(&store, u64::MAX).is_empty(),
        "read_epochs(u64::MAX) visited something"
    );
}

fn first_append_may_start_anywhere<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: the first append of an empty log may carry any epoch, and the log continues from it.
    let store = open(Open::Fresh);
    append_range(&store, 1_000_000_000_000..=1_000_000_000_002, 10);
    assert_eq!(store.last_epoch().unwrap(), Some(1_000_000_000_002));
    assert_eq!(
        epochs_of(&collect_epochs(&store, 0)),
        vec![1_000_000_000_000, 1_000_000_000_001, 1_000_000_000_002]
    );
}

fn gap_or_reorder_is_refused<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: an append that does not follow the last epoch is refused and writes nothing.
    let store = open(Open::Fresh);
    append_range(&store, 1..=3, 10);
    let err = store
        .append_epoch(5, b"gap")
        .expect_err("append with a gap accepted");
    assert!(
        matches!(
            err,
            StorageError::OutOfOrder {
                epoch: 5,
                last: Some(3),
                ..
            }
        ),
        "gap reported as {err:?}"
    );
    let err = store
        .append_epoch(0, b"before")
        .expect_err("append before the log accepted");
    assert!(
        matches!(err, StorageError::OutOfOrder { epoch: 0, .. }),
        "got {err:?}"
    );
    assert_eq!(
        store.last_epoch().unwrap(),
        Some(3),
        "a refused append changed last_epoch"
    );
    assert_eq!(epochs_of(&collect_epochs(&store, 0)), vec![1, 2, 3]);
    store
        .append_epoch(4, &batch_for(4, 10))
        .expect("the right next epoch after a refusal");
}

fn identical_reappend_is_a_noop<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: re-appending a logged epoch with the same bytes succeeds and changes nothing; with
    // different bytes it is refused and the original stays.
    let store = open(Open::Fresh);
    append_range(&store, 1..=3, 300_000);
    let before = collect_epochs(&store, 0);
    store
        .append_epoch(2, &batch_for(2, 300_000))
        .expect("identical re-append of epoch 2");
    store
        .append_epoch(3, &batch_for(3, 300_000))
        .expect("identical re-append of the last epoch");
    let err = store
        .append_epoch(2, b"other bytes")
        .expect_err("changed re-append accepted");
    assert!(
        matches!(err, StorageError::OutOfOrder { epoch: 2, .. }),
        "got {err:?}"
    );
    let err = store
        .append_epoch(3, &batch_for(3, 299_999))
        .expect_err("shorter re-append accepted");
    assert!(
        matches!(err, StorageError::OutOfOrder { epoch: 3, .. }),
        "got {err:?}"
    );
    assert!(
        collect_epochs(&store, 0) == before,
        "a re-append changed the log"
    );
    assert_eq!(store.last_epoch().unwrap(), Some(3));
}

fn oversized_input_is_refused<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: a batch, key or value over the shared limits is refused with TooLarge and nothing of
    // the call is written.
    let store = open(Open::Fresh);
    append_range(&store, 1..=1, 10);
    let huge = vec![0u8; limits::EPOCH_BATCH_BYTES_MAX + 1];
    let err = store
        .append_epoch(2, &huge)
        .expect_err("oversized batch accepted");
    assert!(matches!(err, StorageError::TooLarge { .. }), "got {err:?}");
    drop(huge);
    assert_eq!(store.last_epoch().unwrap(), Some(1));

    let long_key = vec![b'k'; limits::CHECKPOINT_KEY_BYTES_MAX + 1];
    let err = store
        .write_checkpoint_rows(1, &[put("ok", "1"), (long_key, Some(b"v".to_vec()))])
        .expect_err("oversized key accepted");
    assert!(matches!(err, StorageError::TooLarge { .. }), "got {err:?}");
    let long_value = vec![b'v'; limits::CHECKPOINT_VALUE_BYTES_MAX + 1];
    let err = store
        .write_checkpoint_rows(1, &[put("ok", "1"), (b"k".to_vec(), Some(long_value))])
        .expect_err("oversized value accepted");
    assert!(matches!(err, StorageError::TooLarge { .. }), "got {err:?}");
    complete(&store, 1);
    assert_eq!(
        collect_checkpoint(&store),
        (Some(1), Vec::new()),
        "rows of a refused chunk became visible"
    );

    let max_key = vec![b'k'; limits::CHECKPOINT_KEY_BYTES_MAX];
    let max_value = vec![0u8; limits::CHECKPOINT_VALUE_BYTES_MAX];
    write_rows(&store, 2, &[(max_key.clone(), Some(max_value.clone()))]);
    complete(&store, 2);
    assert!(
        collect_checkpoint(&store) == (Some(2), vec![(max_key, max_value)]),
        "a row at the size limits did not read back"
    );
}

fn visitor_error_stops_reading<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: an error returned by a visitor stops the read and is returned unchanged.
    let store = open(Open::Fresh);
    append_range(&store, 1..=5, 10);
    let mut visited = Vec::new();
    let err = store
        .read_epochs(0, &mut |epoch, _| {
            visited.push(epoch);
            if epoch == 3 {
                Err(StorageError::Visitor("stop at 3".into()))
            } else {
                Ok(())
            }
        })
        .expect_err("visitor error swallowed");
    assert!(
        matches!(&err, StorageError::Visitor(msg) if msg == "stop at 3"),
        "got {err:?}"
    );
    assert_eq!(visited, vec![1, 2, 3]);

    write_rows(&store, 5, &[put("a", "1"), put("b", "2"), put("c", "3")]);
    complete(&store, 5);
    let mut n_visited = 0;
    let err = store
        .read_latest_checkpoint(&mut |_, _| {
            n_visited += 1;
            Err(StorageError::Visitor("stop at first row".into()))
        })
        .expect_err("checkpoint visitor error swallowed");
    assert!(matches!(&err, StorageError::Visitor(msg) if msg == "stop at first row"));
    assert_eq!(n_visited, 1);
}

fn checkpoint_chunks_merge<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: rows written in several chunks of one checkpoint are all visible after completion,
    // in key order, a later write of a key within the checkpoint winning.
    let store = open(Open::Fresh);
    write_rows(&store, 4, &[put("m", "1"), put("c", "2"), put("x", "old")]);
    write_rows(&store, 4, &[put("a", "3"), put("x", "new"), delete("c")]);
    write_rows(&store, 4, &[put("c", "again"), delete("never-written")]);
    assert_eq!(
        collect_checkpoint(&store),
        (None, Vec::new()),
        "visible before completion"
    );
    complete(&store, 4);
    assert_eq!(
        collect_checkpoint(&store),
        (
            Some(4),
            live(&[("a", "3"), ("c", "again"), ("m", "1"), ("x", "new")])
        )
    );
}

fn incremental_checkpoints_merge_deletions<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: each checkpoint holds only changed rows; the merged state has the newest version of
    // every row and no deleted row, across several checkpoints.
    let store = open(Open::Fresh);
    write_rows(&store, 5, &[put("a", "1"), put("b", "2"), put("c", "3")]);
    complete(&store, 5);
    write_rows(&store, 10, &[put("b", "20"), delete("c"), put("d", "4")]);
    complete(&store, 10);
    assert_eq!(
        collect_checkpoint(&store),
        (Some(10), live(&[("a", "1"), ("b", "20"), ("d", "4")]))
    );
    write_rows(&store, 15, &[put("c", "30"), delete("a"), delete("d")]);
    complete(&store, 15);
    complete(&store, 20);
    write_rows(&store, 25, &[delete("b")]);
    complete(&store, 25);
    assert_eq!(collect_checkpoint(&store), (Some(25), live(&[("c", "30")])));
}

fn incomplete_checkpoint_is_invisible<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: rows of a checkpoint that was never completed are never read, before and after a
    // reopen, and completing it later makes exactly its rows visible.
    let store = open(Open::Fresh);
    write_rows(&store, 5, &[put("a", "1"), put("b", "2")]);
    complete(&store, 5);
    write_rows(
        &store,
        10,
        &[put("a", "changed"), delete("b"), put("z", "new")],
    );
    let expected_5 = (Some(5), live(&[("a", "1"), ("b", "2")]));
    assert_eq!(
        collect_checkpoint(&store),
        expected_5,
        "incomplete checkpoint visible"
    );
    drop(store);
    let store = open(Open::Reopen);
    assert_eq!(
        collect_checkpoint(&store),
        expected_5,
        "incomplete checkpoint visible after reopen"
    );
    write_rows(&store, 10, &[put("y", "late")]);
    complete(&store, 10);
    assert_eq!(
        collect_checkpoint(&store),
        (
            Some(10),
            live(&[("a", "changed"), ("y", "late"), ("z", "new")])
        )
    );
}

fn newer_checkpoint_discards_incomplete<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: starting or completing another checkpoint discards the rows of an incomplete one,
    // whichever of the two epochs is larger, so they never surface later.
    let store = open(Open::Fresh);
    write_rows(&store, 5, &[put("base", "1")]);
    complete(&store, 5);

    write_rows(&store, 10, &[put("abandoned-10", "x"), delete("base")]);
    write_rows(&store, 15, &[put("kept-15", "y")]);
    complete(&store, 15);
    assert_eq!(
        collect_checkpoint(&store),
        (Some(15), live(&[("base", "1"), ("kept-15", "y")])),
        "rows of abandoned checkpoint 10 visible"
    );

    // An abandoned checkpoint with a higher epoch than the one that replaced it.
    write_rows(&store, 30, &[put("abandoned-30", "x"), delete("kept-15")]);
    write_rows(&store, 20, &[put("kept-20", "z")]);
    complete(&store, 20);
    complete(&store, 30);
    assert_eq!(
        collect_checkpoint(&store),
        (
            Some(30),
            live(&[("base", "1"), ("kept-15", "y"), ("kept-20", "z")])
        ),
        "rows of abandoned checkpoint 30 surfaced when 30 was completed later"
    );

    // Completing a checkpoint without rows also discards an incomplete one.
    write_rows(&store, 40, &[put("abandoned-40", "x")]);
    complete(&store, 35);
    drop(store);
    let store = open(Open::Reopen);
    write_rows(&store, 40, &[put("kept-40", "w")]);
    complete(&store, 40);
    assert_eq!(
        collect_checkpoint(&store),
        (
            Some(40),
            live(&[
                ("base", "1"),
                ("kept-15", "y"),
                ("kept-20", "z"),
                ("kept-40", "w")
            ])
        ),
        "rows of abandoned checkpoint 40 surfaced"
    );
}

fn checkpoint_order_is_enforced<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: rows or completion for a checkpoint not newer than the latest complete one are
    // refused, except that re-completing the latest is an idempotent no-op.
    let store = open(Open::Fresh);
    write_rows(&store, 10, &[put("a", "1")]);
    complete(&store, 10);
    complete(&store, 10);
    for stale in [10, 7] {
        let err = store
            .write_checkpoint_rows(stale, &[put("a", "stale")])
            .expect_err("rows for a stale checkpoint accepted");
        assert!(
            matches!(
                err,
                StorageError::CheckpointOutOfOrder { checkpoint_epoch, latest_complete: Some(10), .. }
                    if checkpoint_epoch == stale
            ),
            "got {err:?}"
        );
    }
    let err = store
        .complete_checkpoint(7)
        .expect_err("completing an older checkpoint accepted");
    assert!(
        matches!(err, StorageError::CheckpointOutOfOrder { .. }),
        "got {err:?}"
    );
    assert_eq!(collect_checkpoint(&store), (Some(10), live(&[("a", "1")])));
}

fn truncate_removes_only_covered_epochs<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: truncation removes exactly the epochs below the given one, is idempotent, refuses to
    // drop epochs no complete checkpoint covers, and an emptied log accepts the next epoch.
    let store = open(Open::Fresh);
    append_range(&store, 1..=10, 1_000);
    let err = store
        .truncate_log_below(1)
        .expect_err("truncation without a checkpoint accepted");
    assert!(
        matches!(
            err,
            StorageError::TruncateBeyondCheckpoint {
                epoch: 1,
                latest_complete: None,
                ..
            }
        ),
        "got {err:?}"
    );
    complete(&store, 6);
    store
        .truncate_log_below(7)
        .expect("truncate below checkpoint + 1");
    store.truncate_log_below(7).expect("repeated truncation");
    store
        .truncate_log_below(3)
        .expect("truncation below what is already gone");
    let err = store
        .truncate_log_below(8)
        .expect_err("truncation past the checkpoint accepted");
    assert!(
        matches!(
            err,
            StorageError::TruncateBeyondCheckpoint {
                epoch: 8,
                latest_complete: Some(6),
                ..
            }
        ),
        "got {err:?}"
    );
    let after = collect_epochs(&store, 0);
    assert_eq!(epochs_of(&after), vec![7, 8, 9, 10]);
    assert!(after[0].1 == batch_for(7, 1_000), "a kept epoch changed");
    assert_eq!(store.last_epoch().unwrap(), Some(10));
    let err = store
        .append_epoch(3, &batch_for(3, 1_000))
        .expect_err("re-append of a dropped epoch");
    assert!(
        matches!(err, StorageError::OutOfOrder { epoch: 3, .. }),
        "got {err:?}"
    );

    complete(&store, 10);
    store
        .truncate_log_below(11)
        .expect("truncate the whole log");
    assert_eq!(
        store.last_epoch().unwrap(),
        None,
        "an emptied log still has a last epoch"
    );
    assert!(collect_epochs(&store, 0).is_empty());
    append_range(&store, 11..=12, 1_000);
    assert_eq!(epochs_of(&collect_epochs(&store, 0)), vec![11, 12]);
}

fn empty_and_binary_keys_and_values<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: empty keys, empty values (distinct from deletion) and keys with 0x00/0xFF bytes are
    // stored exactly and visited in byte-wise key order.
    let store = open(Open::Fresh);
    let rows: Vec<CheckpointRow> = vec![
        (vec![0xFF], Some(vec![0x00])),
        (vec![], Some(vec![])),
        (vec![0x00, 0x00], Some(vec![0xFF, 0x00, 0xFF])),
        (vec![0x00], Some(vec![1])),
        (vec![0x00, 0xFF], Some(vec![])),
        (vec![0x01], Some(vec![2])),
        (vec![0xFF, 0xFF, 0x00], Some(vec![3])),
    ];
    write_rows(&store, 1, &rows);
    complete(&store, 1);
    let mut expected: Vec<LiveRow> = rows
        .iter()
        .map(|(key, value)| (key.clone(), value.clone().unwrap()))
        .collect();
    expected.sort();
    assert_eq!(collect_checkpoint(&store), (Some(1), expected.clone()));

    write_rows(
        &store,
        2,
        &[(vec![], None), (vec![0x00, 0xFF], Some(vec![9]))],
    );
    complete(&store, 2);
    expected.retain(|(key, _)| !key.is_empty());
    for (key, value) in &mut expected {
        if key == &vec![0x00, 0xFF] {
            *value = vec![9];
        }
    }
    assert_eq!(collect_checkpoint(&store), (Some(2), expected));
}

fn many_rows_in_many_chunks<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: a checkpoint of thousands of rows in many chunks, then an incremental one changing
    // and deleting a share of them, reads back exactly the merged state.
    let store = open(Open::Fresh);
    let n_rows = 5_000u32;
    let key = |idx: u32| format!("row/{idx:08}").into_bytes();
    let rows: Vec<CheckpointRow> = (0..n_rows)
        .map(|idx| (key(idx), Some(batch_for(u64::from(idx), 40))))
        .collect();
    for chunk in rows.chunks(700) {
        write_rows(&store, 100, chunk);
    }
    complete(&store, 100);
    let changes: Vec<CheckpointRow> = (0..n_rows)
        .filter(|idx| idx % 3 == 0)
        .map(|idx| {
            let value = (idx % 2 == 0).then(|| batch_for(u64::from(idx) + 1_000_000, 44));
            (key(idx), value)
        })
        .collect();
    for chunk in changes.chunks(333) {
        write_rows(&store, 200, chunk);
    }
    complete(&store, 200);
    let expected: Vec<LiveRow> = (0..n_rows)
        .filter_map(|idx| match (idx % 3, idx % 2) {
            (0, 0) => Some((key(idx), batch_for(u64::from(idx) + 1_000_000, 44))),
            (0, _) => None,
            _ => Some((key(idx), batch_for(u64::from(idx), 40))),
        })
        .collect();
    let (epoch, read) = collect_checkpoint(&store);
    assert_eq!(epoch, Some(200));
    assert_eq!(read.len(), expected.len(), "number of live rows");
    assert!(
        read == expected,
        "merged rows differ from the expected state"
    );
}

fn reopen_keeps_everything<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: after dropping and reopening, the log, the truncation, the complete checkpoint and
    // the append order rules are exactly as before.
    let store = open(Open::Fresh);
    append_range(&store, 1..=30, 5_000);
    write_rows(&store, 12, &[put("a", "1"), put("b", "2")]);
    complete(&store, 12);
    write_rows(&store, 20, &[put("a", "20")]);
    complete(&store, 20);
    store.truncate_log_below(13).expect("truncate below 13");
    let log_before = collect_epochs(&store, 0);
    let checkpoint_before = collect_checkpoint(&store);
    drop(store);

    let store = open(Open::Reopen);
    assert_eq!(
        store.last_epoch().unwrap(),
        Some(30),
        "last_epoch after reopen"
    );
    assert!(
        collect_epochs(&store, 0) == log_before,
        "log differs after reopen"
    );
    assert_eq!(
        collect_checkpoint(&store),
        checkpoint_before,
        "checkpoint differs after reopen"
    );
    assert_eq!(
        checkpoint_before,
        (Some(20), live(&[("a", "20"), ("b", "2")]))
    );
    let err = store
        .append_epoch(32, b"gap")
        .expect_err("gap accepted after reopen");
    assert!(matches!(
        err,
        StorageError::OutOfOrder {
            epoch: 32,
            last: Some(30),
            ..
        }
    ));
    store
        .append_epoch(30, &batch_for(30, 5_000))
        .expect("idempotent re-append after reopen");
    append_range(&store, 31..=31, 5_000);
    drop(store);

    let store = open(Open::Reopen);
    assert_eq!(epochs_of(&collect_epochs(&store, 29)), vec![29, 30, 31]);
    let err = store
        .complete_checkpoint(15)
        .expect_err("older checkpoint completed after reopen");
    assert!(
        matches!(err, StorageError::CheckpointOutOfOrder { .. }),
        "got {err:?}"
    );
}

/// `append_epochs` appends consecutive epochs like repeated `append_epoch`, and refuses a gap.
fn append_epochs_is_group_commit<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    let store = open(Open::Fresh);
    let (a, b, c) = (batch_for(1, 100), batch_for(2, 7), batch_for(3, 3000));
    store
        .append_epochs(&[(1, &a), (2, &b), (3, &c)])
        .expect("three consecutive epochs in one write");
    assert_eq!(store.last_epoch().unwrap(), Some(3));
    assert_eq!(
        collect_epochs(&store, 1),
        vec![(1, a.clone()), (2, b.clone()), (3, c.clone())],
        "{}: group-committed epochs read back",
        store.name()
    );
    let (d, f) = (batch_for(4, 10), batch_for(6, 10));
    store
        .append_epochs(&[(4, &d), (6, &f)])
        .expect_err("a gap inside a group commit accepted");
    assert!(
        collect_epochs(&store, 6).is_empty(),
        "{}: epoch 6 after a gap must not be stored",
        store.name()
    );
    store.append_epochs(&[]).expect("an empty group commit");
}

fn latest_checkpoint_epoch_follows_completion<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: `latest_checkpoint_epoch` is the epoch `read_latest_checkpoint` returns: `None`
    // until a completion, unmoved by an incomplete checkpoint, kept across a reopen.
    let store = open(Open::Fresh);
    let latest = |store: &S| {
        store
            .latest_checkpoint_epoch()
            .unwrap_or_else(|err| panic!("{}: latest_checkpoint_epoch: {err}", store.name()))
    };
    assert_eq!(latest(&store), None, "latest checkpoint of an empty store");
    write_rows(&store, 4, &[put("a", "1")]);
    assert_eq!(
        latest(&store),
        None,
        "an incomplete checkpoint is not the latest"
    );
    complete(&store, 4);
    assert_eq!(latest(&store), Some(4), "after completing checkpoint 4");
    complete(&store, 9);
    write_rows(&store, 12, &[put("b", "2")]);
    assert_eq!(
        latest(&store),
        Some(9),
        "an incomplete checkpoint 12 after 9"
    );
    assert_eq!(latest(&store), collect_checkpoint(&store).0);
    drop(store);
    let store = open(Open::Reopen);
    assert_eq!(latest(&store), Some(9), "latest checkpoint after reopen");
}

fn store_info_round_trips<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: the store info record is absent in a new store, reads back exactly what was last
    // written (binary, empty, the largest allowed), survives a reopen, refuses an oversized
    // record without writing, and leaves the log and the checkpoints alone.
    let store = open(Open::Fresh);
    let read = |store: &S| {
        store
            .read_store_info()
            .unwrap_or_else(|err| panic!("{}: read_store_info: {err}", store.name()))
    };
    let write = |store: &S, info: &[u8]| {
        store
            .write_store_info(info)
            .unwrap_or_else(|err| panic!("{}: write_store_info: {err}", store.name()))
    };
    assert_eq!(read(&store), None, "store info of a new store");
    write(&store, b"");
    assert_eq!(read(&store), Some(Vec::new()), "an empty store info record");
    let largest = batch_for(77, limits::STORE_INFO_BYTES_MAX);
    write(&store, &largest);
    assert!(read(&store) == Some(largest.clone()), "the largest record");
    let info = b"format 2\0\xff app".to_vec();
    write(&store, &info);
    assert_eq!(read(&store), Some(info.clone()), "a replaced record");
    assert_eq!(
        store.last_epoch().unwrap(),
        None,
        "store info wrote a log record"
    );
    assert_eq!(
        collect_checkpoint(&store),
        (None, Vec::new()),
        "store info wrote a checkpoint"
    );
    let oversized = vec![7u8; limits::STORE_INFO_BYTES_MAX + 1];
    let err = store
        .write_store_info(&oversized)
        .expect_err("an oversized store info record was accepted");
    assert!(
        matches!(err, StorageError::TooLarge { .. }),
        "oversized store info: {err:?}"
    );
    assert_eq!(
        read(&store),
        Some(info.clone()),
        "a refused write changed the record"
    );
    append_range(&store, 1..=3, 100);
    write_rows(&store, 2, &[put("k", "v")]);
    complete(&store, 2);
    drop(store);
    let store = open(Open::Reopen);
    assert_eq!(read(&store), Some(info), "store info after reopen");
    assert_eq!(store.last_epoch().unwrap(), Some(3), "the log after reopen");
}

/// A lease long enough never to expire during a check, in seconds.
const LEASE_LONG_SECS: u64 = 600;

fn acquire<S: Storage>(store: &S, holder: &str, ttl: std::time::Duration) -> u64 {
    store
        .acquire_lease(holder, ttl)
        .unwrap_or_else(|err| panic!("{}: acquire_lease({holder:?}) failed: {err}", store.name()))
}

fn assert_fenced<T: std::fmt::Debug>(
    result: Result<T, StorageError>,
    what: &str,
    ours: u64,
    current: u64,
) {
    match result {
        Err(StorageError::Fenced {
            ours: got_ours,
            current: got_current,
            ..
        }) if (got_ours, got_current) == (ours, current) => {}
        other => panic!(
            "{what} by the deposed handle (term {ours}, store at {current}) was not refused \
             as Fenced: {other:?}"
        ),
    }
}

fn lease_takeover_fences_the_deposed_handle<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: once a second handle takes the expired lease (a new term), every write of the first
    // handle is refused with Fenced and writes nothing, while the second writes on; the log
    // holds the first's records from before the take-over and only the second's after it.
    let old = open(Open::Fresh);
    let zero = std::time::Duration::ZERO;
    // A lease of zero length is expired at once, so the take-over below needs no waiting.
    let old_term = acquire(&old, "old-sequencer", zero);
    append_range(&old, 1..=2, 100);
    write_rows(&old, 2, &[put("a", "old")]);
    complete(&old, 2);
    let new = open(Open::Another);
    let long = std::time::Duration::from_secs(LEASE_LONG_SECS);
    let new_term = acquire(&new, "new-sequencer", long);
    assert!(
        new_term > old_term,
        "taking over an expired lease must bump the term: {old_term} -> {new_term}"
    );
    let deposed = batch_for(3, 100);
    let mut mine = deposed.clone();
    mine[0] ^= 0xFF;
    assert_fenced(
        old.append_epoch(3, &deposed),
        "append_epoch",
        old_term,
        new_term,
    );
    assert_fenced(
        old.append_epochs(&[(3, &deposed), (4, &deposed)]),
        "append_epochs",
        old_term,
        new_term,
    );
    assert_fenced(
        old.write_checkpoint_rows(3, &[put("a", "deposed")]),
        "write_checkpoint_rows",
        old_term,
        new_term,
    );
    assert_fenced(
        old.complete_checkpoint(3),
        "complete_checkpoint",
        old_term,
        new_term,
    );
    assert_fenced(
        old.truncate_log_below(3),
        "truncate_log_below",
        old_term,
        new_term,
    );
    assert_eq!(
        new.last_epoch().unwrap(),
        Some(2),
        "a fenced append was written"
    );
    new.append_epoch(3, &mine).expect("the new holder appends");
    assert_fenced(
        old.append_epoch(4, &deposed),
        "append_epoch",
        old_term,
        new_term,
    );
    let log = collect_epochs(&new, 0);
    assert_eq!(epochs_of(&log), vec![1, 2, 3]);
    assert!(log[2].1 == mine, "epoch 3 is not the new holder's record");
    write_rows(&new, 3, &[put("a", "new")]);
    complete(&new, 3);
    new.truncate_log_below(3).expect("the new holder truncates");
    assert_eq!(collect_checkpoint(&new), (Some(3), live(&[("a", "new")])));
    match old.acquire_lease("old-sequencer", long) {
        Err(StorageError::LeaseHeld { holder, term, .. }) => {
            assert_eq!((holder.as_str(), term), ("new-sequencer", new_term));
        }
        other => panic!("the deposed holder got the running lease back: {other:?}"),
    }
    assert_fenced(
        old.append_epoch(4, &deposed),
        "append_epoch",
        old_term,
        new_term,
    );
}

fn lease_renewal_keeps_the_term_and_refuses_others<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: the holder renews its running lease under the same term and keeps writing; another
    // holder is refused with LeaseHeld naming the holder and a remaining time within the lease;
    // a handle that never took a lease writes unfenced; an oversized holder name is refused.
    let store = open(Open::Fresh);
    let long = std::time::Duration::from_secs(LEASE_LONG_SECS);
    let term = acquire(&store, "node-a", long);
    assert_eq!(
        acquire(&store, "node-a", long),
        term,
        "a renewal changed the term"
    );
    let other = open(Open::Another);
    match other.acquire_lease("node-b", long) {
        Err(StorageError::LeaseHeld {
            holder,
            term: held_term,
            remaining_ms,
            ..
        }) => {
            assert_eq!((holder.as_str(), held_term), ("node-a", term));
            assert!(
                remaining_ms <= LEASE_LONG_SECS * 1000,
                "remaining {remaining_ms} ms is longer than the lease"
            );
        }
        result => panic!("a running lease was handed to another holder: {result:?}"),
    }
    append_range(&store, 1..=2, 100);
    // The refused handle took no lease, so it is not fenced (one writer per store is the
    // caller's business until it takes a lease).
    append_range(&other, 3..=3, 100);
    assert_eq!(acquire(&store, "node-a", long), term, "a second renewal");
    append_range(&store, 4..=4, 100);
    assert_eq!(store.last_epoch().unwrap(), Some(4));
    let long_name = "n".repeat(limits::LEASE_HOLDER_BYTES_MAX + 1);
    let err = other
        .acquire_lease(&long_name, long)
        .expect_err("an oversized holder name was accepted");
    assert!(matches!(err, StorageError::TooLarge { .. }), "got {err:?}");
}

fn lease_term_survives_reopen<S: Storage>(open: &mut dyn FnMut(Open) -> S) {
    // Goal: the term is kept by the store, not the handle: after a reopen the same holder
    // renews under its term, and a new holder taking the expired lease gets a higher term
    // than any before, so a handle from before the restart stays fenced.
    let store = open(Open::Fresh);
    let zero = std::time::Duration::ZERO;
    let first = acquire(&store, "before-restart", zero);
    append_range(&store, 1..=1, 100);
    drop(store);
    let store = open(Open::Reopen);
    assert_eq!(
        acquire(&store, "before-restart", zero),
        first,
        "the holder's renewal after a reopen changed the term"
    );
    drop(store);
    let store = open(Open::Reopen);
    let second = acquire(&store, "after-restart", zero);
    assert!(
        second > first,
        "a take-over after reopen reused term {first}: got {second}"
    );
    append_range(&store, 2..=2, 100);
    let stale = open(Open::Another);
    assert_eq!(acquire(&stale, "before-restart", zero), second + 1);
    assert_fenced(
        store.append_epoch(3, b"x"),
        "append_epoch",
        second,
        second + 1,
    );
    drop((store, stale));
    let store = open(Open::Reopen);
    let third = acquire(&store, "third", zero);
    assert_eq!(third, second + 2, "terms after the second reopen");
    assert_eq!(store.last_epoch().unwrap(), Some(2));
}
