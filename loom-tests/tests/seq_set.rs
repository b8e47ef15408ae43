//! Models of `AtomicSeqSet`, the concurrently merged abort set (txn/src/sync/seq_set.rs).

use loom_tests::harness::{Arc, AtomicU64, Ordering, model, thread};
use loom_tests::sync::AtomicSeqSet;

// Goal: two partitions merging their conflict sets into the same words at the same time lose no
// bit (both through `insert` and through `union_from`).
#[test]
fn abort_set_merge_loses_no_bit() {
    model(|| {
        let set = Arc::new(AtomicSeqSet::with_capacity(128));
        let a = {
            let set = set.clone();
            thread::spawn(move || {
                set.insert(1);
                set.union_from(&[1 << 3, 1 << 1]);
            })
        };
        let b = {
            let set = set.clone();
            thread::spawn(move || {
                set.union_from(&[1 << 2, 0]);
                set.insert(64);
            })
        };
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![1, 2, 3, 64, 65]);
    });
}

// Goal: when two partitions add the same seq at once, exactly one `insert` reports it as new
// (so "record the abort reason once" is safe).
#[test]
fn abort_set_insert_reports_a_new_member_exactly_once() {
    model(|| {
        let set = Arc::new(AtomicSeqSet::with_capacity(64));
        let other = {
            let set = set.clone();
            thread::spawn(move || set.insert(5))
        };
        let here = set.insert(5);
        let there = other.join().unwrap();
        assert!(
            here ^ there,
            "exactly one insert is first (here {here}, there {there})"
        );
    });
}

// Goal: a reader that sees a member also sees what its writer did before adding it (the abort
// reason), for members added by `insert` and by `union_from`, even without a barrier.
#[test]
fn abort_set_member_publishes_what_was_written_before_it() {
    model(|| {
        let set = Arc::new(AtomicSeqSet::with_capacity(64));
        let reasons = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let by_insert = {
            let (set, reasons) = (set.clone(), reasons.clone());
            thread::spawn(move || {
                reasons[0].store(40, Ordering::Relaxed);
                set.insert(3);
            })
        };
        let by_union = {
            let (set, reasons) = (set.clone(), reasons.clone());
            thread::spawn(move || {
                reasons[1].store(41, Ordering::Relaxed);
                set.union_from(&[1 << 7]);
            })
        };
        if set.contains(3) {
            assert_eq!(reasons[0].load(Ordering::Relaxed), 40);
        }
        let words = set.snapshot();
        if words[0] & 1 << 7 != 0 {
            assert_eq!(reasons[1].load(Ordering::Relaxed), 41);
        }
        by_insert.join().unwrap();
        by_union.join().unwrap();
    });
}
