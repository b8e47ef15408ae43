//! Fail-safe submission: careless callers (a reused request id, a retry after an unknown
//! outcome, an oversized or internal event, a partition listed twice) never lose or
//! double-apply data, and the dedup window stays bounded in bytes.

use crate::common::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::storage::{FaultOp, FaultyStorage, MemoryStorage};
use txn::{App, AppBuilder, EventKind, Runtime, RuntimeConfig, TxnError};

fn add(key: u64, d: i64) -> Ev {
    op0(key, OpKind::Add(d))
}

// Goal: a request id reused for another event or another target is refused with a typed
// error, the first request's outcome stands, and the digest survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_id_with_another_request_is_refused() {
    let fx = build(2, 4);
    let config = RuntimeConfig {
        storage: Arc::new(MemoryStorage::new()),
        checkpoint_every_epochs: 1,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    let c = rt.client();
    let s0 = fx.services[0];
    let first = c
        .submit_with_id_raw(request_id(1), s0, &5u64, add(5, 10))
        .await
        .unwrap();
    let other_event = c
        .submit_with_id_raw(request_id(1), s0, &5u64, add(5, 99))
        .await;
    assert!(
        matches!(other_event, Err(TxnError::RequestIdReused { id: reused }) if reused == request_id(1)),
        "{other_event:?}"
    );
    // Same event, another target partition.
    let other_target = (0..64u64)
        .find(|k| s0.partition_of(k) != s0.partition_of(&5u64))
        .unwrap();
    let moved = c
        .submit_with_id_raw(request_id(1), s0, &other_target, add(5, 10))
        .await;
    assert!(
        matches!(moved, Err(TxnError::RequestIdReused { .. })),
        "{moved:?}"
    );
    let same = c
        .submit_with_id_raw(request_id(1), s0, &5u64, add(5, 10))
        .await
        .unwrap();
    assert_eq!(same, first, "the same request gets the original outcome");
    rt.shutdown().await;

    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let c = rt.client();
    let after_restart = c
        .submit_with_id_raw(request_id(1), s0, &5u64, add(5, 99))
        .await;
    assert!(
        matches!(after_restart, Err(TxnError::RequestIdReused { .. })),
        "the digest is checkpointed with the id: {after_restart:?}"
    );
    let value = c.submit_raw(s0, &5u64, read0(5)).await.unwrap();
    assert_eq!(
        value.result,
        Ok(Some(vec![10])),
        "only the first request ran"
    );
    rt.shutdown().await;
}

// Goal: a plain submit whose epoch was logged but whose acknowledgement was lost (the append
// wrote, then reported an error) hands back its generated id; resubmitting with that id after a
// restart returns the outcome without applying the request twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_outcome_hands_back_an_id_that_retries_safely() {
    let fx = build(2, 4);
    let memory = MemoryStorage::new();
    let faulty = FaultyStorage::new(memory.clone());
    let config = RuntimeConfig {
        storage: Arc::new(faulty.clone()),
        checkpoint_every_epochs: 0,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let c = rt.client();
    let s0 = fx.services[0];
    faulty.fail_next_after_write(FaultOp::Append, 1);
    let err = c.submit_raw(s0, &5u64, add(5, 10)).await.unwrap_err();
    let TxnError::OutcomeUnknown { id, cause } = err else {
        panic!("expected an unknown outcome, got {err:?}");
    };
    assert!(matches!(*cause, TxnError::Storage(_)), "{cause:?}");
    assert!(id.is_generated(), "{id:?}");
    rt.shutdown().await;

    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            storage: Arc::new(memory),
            checkpoint_every_epochs: 0,
            ..RuntimeConfig::in_memory()
        },
    )
    .await
    .unwrap();
    let c = rt.client();
    let retried = c
        .submit_with_id_raw(id, s0, &5u64, add(5, 10))
        .await
        .unwrap();
    assert_eq!(
        retried.result,
        Ok(Some(vec![0])),
        "the logged run's outcome"
    );
    let value = c.submit_raw(s0, &5u64, read0(5)).await.unwrap();
    assert_eq!(value.result, Ok(Some(vec![10])), "applied exactly once");
    rt.shutdown().await;
}

// Goal: the dedup window is bounded in bytes (ids chosen by clients) and in epochs (generated
// ids), and a checkpoint holds only what the window still remembers: after 600 requests with
// ids, recovery loads a few dozen window rows, not 600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_window_is_bounded_in_bytes_and_checkpoints_stay_small() {
    let fx = build(2, 4);
    let bytes_max = 2_000;
    let config = RuntimeConfig {
        storage: Arc::new(MemoryStorage::new()),
        checkpoint_every_epochs: 1,
        dedup_window_bytes_max: bytes_max,
        generated_id_window_epochs: 4,
        ..RuntimeConfig::in_memory()
    };
    let rt = Runtime::start(fx.app.clone(), config.clone())
        .await
        .unwrap();
    let c = rt.client();
    let s0 = fx.services[0];
    for seq in 0..300u64 {
        c.submit_with_id_raw(request_id(seq), s0, &(seq % 8), add(seq % 8, 1))
            .await
            .unwrap();
        c.submit_raw(s0, &(seq % 8), add(seq % 8, 1)).await.unwrap();
    }
    let hash = c.state_hash().await.unwrap();
    rt.shutdown().await;

    let rt = Runtime::start(fx.app.clone(), config).await.unwrap();
    let report = rt.recovery_report().clone();
    // Each remembered outcome costs more than 64 bytes against the bound.
    let chosen_max = bytes_max / 64;
    let generated_max = 5 + bytes_max / 64;
    assert!(
        report.dedup_window_entries <= chosen_max + generated_max,
        "{report:?}"
    );
    assert!(
        report.rows_loaded <= 8 + chosen_max + generated_max,
        "the checkpoint holds the 8 data rows and the bounded window only: {report:?}"
    );
    let c = rt.client();
    // The newest id is still remembered: no second run.
    c.submit_with_id_raw(request_id(299), s0, &3u64, add(3, 1))
        .await
        .unwrap();
    assert_eq!(c.state_hash().await.unwrap(), hash, "id 299 was remembered");
    // The oldest was forgotten: it runs again.
    c.submit_with_id_raw(request_id(0), s0, &0u64, add(0, 1))
        .await
        .unwrap();
    assert_ne!(c.state_hash().await.unwrap(), hash, "id 0 was forgotten");
    rt.shutdown().await;
}

/// A query result that cannot be cloned.
#[derive(Debug, PartialEq)]
struct Count(usize, u32);

// Goal: a partition listed twice in query_at gets a result for each listing, in listing order,
// without requiring the result type to be Clone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_at_answers_each_listing_of_a_partition() {
    let fx = build(1, 4);
    let rt = Runtime::start(fx.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    let s0 = fx.services[0];
    for key in 0..16u64 {
        c.submit_raw(s0, &key, add(key, 1)).await.unwrap();
    }
    let table = fx.tables[0];
    let listing = [(s0, 1), (s0, 0), (s0, 1), (s0, 1)];
    let counts = c
        .query_at(&listing, move |view| {
            Count(view.len(table), view.partition())
        })
        .await
        .unwrap();
    let singles = c
        .query_at(&[(s0, 0), (s0, 1)], move |view| {
            Count(view.len(table), view.partition())
        })
        .await
        .unwrap();
    let expected: Vec<&Count> = listing.iter().map(|(_, p)| &singles[*p as usize]).collect();
    assert_eq!(counts.iter().collect::<Vec<_>>(), expected);
    rt.shutdown().await;
}

// Goal: an event over the size limit is refused before it reaches the log with an error naming
// its size and the limit; requests around it are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_refused_before_the_log() {
    assert_eq!(RuntimeConfig::in_memory().request_bytes_max, 1024 * 1024);
    let fx = build(1, 4);
    let limit = 1_000;
    let rt = Runtime::start(
        fx.app.clone(),
        RuntimeConfig {
            request_bytes_max: limit,
            ..RuntimeConfig::in_memory()
        },
    )
    .await
    .unwrap();
    let c = rt.client();
    let s0 = fx.services[0];
    let huge = Ev::chain(
        (0..200)
            .map(|k| Op {
                svc: 0,
                key: 1_000_000 + k,
                kind: OpKind::Add(1),
            })
            .collect(),
    );
    let small = c.clone();
    let neighbour = tokio::spawn(async move { small.submit_raw(s0, &1u64, add(1, 5)).await });
    let refused = c.submit_raw(s0, &7u64, huge.clone()).await;
    match refused {
        Err(TxnError::RequestTooLarge {
            size_bytes,
            limit_bytes,
            ..
        }) => assert!(size_bytes > limit && limit_bytes == limit, "{size_bytes}"),
        other => panic!("expected RequestTooLarge, got {other:?}"),
    }
    let with_id = c.submit_with_id_raw(request_id(1), s0, &7u64, huge).await;
    assert!(
        matches!(with_id, Err(TxnError::RequestTooLarge { .. })),
        "{with_id:?}"
    );
    assert!(neighbour.await.unwrap().unwrap().committed());
    let none = c
        .submit_raw(s0, &1_000_000u64, read0(1_000_000))
        .await
        .unwrap();
    assert_eq!(none.result, Ok(Some(vec![0])), "nothing of it ran");
    rt.shutdown().await;
}

struct Bank;

#[derive(Clone, Debug, Serialize, Deserialize, EventKind)]
enum BankEv {
    Transfer {
        from: u64,
        to: u64,
        amount: i64,
    },
    #[internal]
    Credit {
        to: u64,
        amount: i64,
    },
}

impl App for Bank {
    type Event = BankEv;
    type Output = i64;

    fn event_kind(event: &BankEv) -> &'static str {
        event.kind()
    }

    fn is_internal(event: &BankEv) -> bool {
        event.is_internal()
    }
}

// Goal: an event declared internal (#[internal]) is refused from a client before it reaches the
// log, while handlers still emit it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_events_cannot_be_submitted() {
    let mut b = AppBuilder::<Bank>::new();
    let bank = b.service("bank", 2);
    let accounts = b.table::<u64, i64>(bank, "accounts");
    b.handler(bank, move |ctx, ev| {
        match ev {
            BankEv::Transfer { from, to, amount } => {
                let balance = ctx.get(accounts, from)?.unwrap_or(0);
                ctx.put(accounts, *from, balance - amount)?;
                ctx.emit_raw(
                    bank,
                    to,
                    BankEv::Credit {
                        to: *to,
                        amount: *amount,
                    },
                );
            }
            BankEv::Credit { to, amount } => {
                let balance = ctx.get(accounts, to)?.unwrap_or(0);
                ctx.put(accounts, *to, balance + amount)?;
                ctx.set_output(balance + amount);
            }
        }
        Ok(())
    });
    let app = b.build().unwrap();
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let c = rt.client();
    let credit = BankEv::Credit {
        to: 2,
        amount: 1000,
    };
    let refused = c.submit_raw(bank, &2u64, credit.clone()).await;
    match &refused {
        Err(TxnError::InternalEvent { service, kind }) => {
            assert_eq!((service.as_str(), kind.as_str()), ("bank", "Credit"));
        }
        other => panic!("expected InternalEvent, got {other:?}"),
    }
    let with_id = c
        .submit_with_id_raw(request_id(1), bank, &2u64, credit)
        .await;
    assert!(
        matches!(with_id, Err(TxnError::InternalEvent { .. })),
        "{with_id:?}"
    );
    let transfer = BankEv::Transfer {
        from: 1,
        to: 2,
        amount: 5,
    };
    let done = c.submit_raw(bank, &1u64, transfer).await.unwrap();
    assert_eq!(
        done.result,
        Ok(Some(5)),
        "the handler's emitted credit ran, the client's did not"
    );
    rt.shutdown().await;
}
