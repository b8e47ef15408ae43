//! Models of `DurableWatermark`, the durability → reply hand-off (txn/src/sync/watermark.rs).

use loom_tests::harness::{Arc, AtomicU64, Ordering, block_on, model, thread};
use loom_tests::sync::DurableWatermark;

// Goal: a reply waiter (blocking or async) is released for epoch e only once e is durable, and
// then sees the log write the durability thread made before publishing it.
#[test]
fn watermark_never_releases_a_non_durable_epoch() {
    model(|| {
        let watermark = Arc::new(DurableWatermark::new(0));
        // Stands for the epoch log: how many epochs the durability thread has written.
        let log_len = Arc::new(AtomicU64::new(0));
        let durability = {
            let (watermark, log_len) = (watermark.clone(), log_len.clone());
            thread::spawn(move || {
                for epoch in 1..=2 {
                    log_len.store(epoch, Ordering::Relaxed);
                    watermark.advance(epoch);
                }
            })
        };
        watermark.wait_blocking(1).expect("the log did not fail");
        assert!(
            log_len.load(Ordering::Relaxed) >= 1,
            "epoch 1 released before it was logged"
        );
        block_on(watermark.wait(2)).expect("the log did not fail");
        assert_eq!(
            log_len.load(Ordering::Relaxed),
            2,
            "epoch 2 released before it was logged"
        );
        assert_eq!(watermark.durable_epoch(), 2);
        durability.join().unwrap();
    });
}

// Goal: every waiter — an async one and a blocking one, waiting for different epochs — is woken
// when its epoch becomes durable, however the advances interleave with their checks.
#[test]
fn watermark_wakes_every_waiter() {
    model(|| {
        let watermark = Arc::new(DurableWatermark::new(0));
        let async_waiter = {
            let watermark = watermark.clone();
            thread::spawn(move || block_on(watermark.wait(2)))
        };
        let durability = {
            let watermark = watermark.clone();
            thread::spawn(move || {
                watermark.advance(1);
                watermark.advance(2);
            })
        };
        assert_eq!(watermark.wait_blocking(1), Ok(()));
        assert_eq!(async_waiter.join().unwrap(), Ok(()));
        durability.join().unwrap();
    });
}

// Goal: a log failure wakes the waiters; one waiting for an epoch that never became durable gets
// the error (never Ok), one waiting for an epoch made durable before the failure gets Ok.
#[test]
fn watermark_failure_releases_waiters_with_the_error() {
    model(|| {
        let watermark = Arc::new(DurableWatermark::new(0));
        let async_waiter = {
            let watermark = watermark.clone();
            thread::spawn(move || block_on(watermark.wait(2)))
        };
        let durability = {
            let watermark = watermark.clone();
            thread::spawn(move || {
                watermark.advance(1);
                watermark.fail("disk full");
            })
        };
        assert_eq!(
            watermark.wait_blocking(1),
            Ok(()),
            "epoch 1 was durable before the failure"
        );
        let err = async_waiter
            .join()
            .unwrap()
            .expect_err("epoch 2 never became durable");
        assert_eq!(err.message(), "disk full");
        durability.join().unwrap();
    });
}
