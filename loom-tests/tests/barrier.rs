//! Models of `PhaseBarrier`, the epoch driver's per-phase barrier (txn/src/sync/barrier.rs).

use loom_tests::harness::{Arc, AtomicU64, Ordering, block_on, model, thread};
use loom_tests::sync::{Abandoned, Depositor, PhaseBarrier};

/// Two partitions answer a phase from their own threads; each writes its "state" (a Relaxed
/// store standing for the writes it applied) before depositing. Returns the barrier and the
/// partitions' state and threads.
fn two_partitions_deposit() -> (
    PhaseBarrier<usize>,
    Arc<[AtomicU64; 2]>,
    Vec<thread::JoinHandle<()>>,
) {
    let (barrier, depositors) = PhaseBarrier::new(2);
    let applied = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let partitions = depositors
        .into_iter()
        .map(|depositor| {
            let applied = applied.clone();
            thread::spawn(move || {
                let slot_idx = depositor.slot_idx();
                applied[slot_idx].store(1, Ordering::Relaxed);
                depositor.deposit(10 + slot_idx);
            })
        })
        .collect();
    (barrier, applied, partitions)
}

fn check_released(results: Vec<usize>, applied: &[AtomicU64; 2]) {
    assert_eq!(results, vec![10, 11], "every result, in slot order");
    for (slot_idx, applied) in applied.iter().enumerate() {
        assert_eq!(
            applied.load(Ordering::Relaxed),
            1,
            "partition {slot_idx}'s writes before its deposit are visible after the barrier"
        );
    }
}

// Goal: a blocking driver is released only once both partitions deposited, gets the results in
// slot order whatever the arrival order, and sees everything each partition did before it.
#[test]
fn barrier_releases_only_after_every_partition_deposited() {
    model(|| {
        let (barrier, applied, partitions) = two_partitions_deposit();
        let results = barrier.wait_blocking().expect("no partition died");
        check_released(results, &applied);
        for p in partitions {
            p.join().unwrap();
        }
    });
}

// Goal: the same for an async driver: the last deposit always wakes it (no lost wake-up,
// however deposits interleave with its polls).
#[test]
fn barrier_wakes_an_async_driver_after_the_last_deposit() {
    model(|| {
        let (barrier, applied, partitions) = two_partitions_deposit();
        let results = block_on(barrier.wait()).expect("no partition died");
        check_released(results, &applied);
        for p in partitions {
            p.join().unwrap();
        }
    });
}

/// Three partitions: slot 0 deposits from its thread, slot 1's partition dies (its depositor is
/// dropped on its thread), slot 2 is slow and only answers after the driver gave up (the
/// caller holds its depositor). Returns the threads and slot 2's depositor.
fn one_partition_dies() -> (
    PhaseBarrier<u32>,
    Vec<thread::JoinHandle<()>>,
    Depositor<u32>,
) {
    let (barrier, depositors) = PhaseBarrier::<u32>::new(3);
    let [answers, dies, slow]: [_; 3] = depositors.try_into().expect("three depositors");
    let threads = vec![
        thread::spawn(move || answers.deposit(7)),
        thread::spawn(move || drop(dies)),
    ];
    (barrier, threads, slow)
}

// Goal: a partition that dies mid-phase (its depositor dropped) wakes the async driver with an
// error naming its slot, without waiting for a slow partition, whatever the other one does.
#[test]
fn barrier_reports_a_dropped_depositor() {
    model(|| {
        let (barrier, threads, slow) = one_partition_dies();
        assert_eq!(block_on(barrier.wait()), Err(Abandoned { slot_idx: 1 }));
        slow.deposit(9); // a late answer into a failed barrier is harmless
        for t in threads {
            t.join().unwrap();
        }
    });
}

// Goal: the same for a blocking driver (the condvar path).
#[test]
fn barrier_reports_a_dropped_depositor_to_a_blocking_driver() {
    model(|| {
        let (barrier, threads, slow) = one_partition_dies();
        assert_eq!(barrier.wait_blocking(), Err(Abandoned { slot_idx: 1 }));
        drop(slow);
        for t in threads {
            t.join().unwrap();
        }
    });
}
