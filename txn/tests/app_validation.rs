//! Start-up validation: an invalid application is refused with every problem listed at once.

use crate::common::ChainApp;
use txn::{AppBuilder, TxnError};

// Goal: build() reports every problem of the definition in one error, each naming what is wrong.
#[test]
fn build_reports_every_problem_at_once() {
    let mut b = AppBuilder::<ChainApp>::new();
    let a = b.service("orders", 0);
    let _dup = b.service("orders", 2);
    let _ = b.table::<u64, i64>(a, "items");
    let _ = b.table::<u64, i64>(a, "items");
    let err = match b.build() {
        Err(e) => e,
        Ok(_) => panic!("an invalid application was accepted"),
    };
    let TxnError::InvalidApp(problems) = &err else {
        panic!("expected InvalidApp, got {err:?}");
    };
    let text = err.to_string();
    for needle in [
        "service \"orders\" must have at least one partition",
        "service \"orders\" is declared twice",
        "table orders.items is declared twice",
        "service \"orders\" has no handler",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(problems.len(), 5, "{problems:?}");
}

// Goal: an application without services is refused.
#[test]
fn empty_application_is_refused() {
    let err = AppBuilder::<ChainApp>::new()
        .build()
        .err()
        .expect("refused");
    assert!(err.to_string().contains("no services"), "{err}");
}
