//! Typed service contracts at run time: events are routed by their own key, the generated
//! envelope carries each service's events, internal events are refused from clients, kinds are
//! the event types' names, typed precedence rules hold, and an event delivered to the wrong
//! service through the untyped calls aborts instead of running.

use serde::{Deserialize, Serialize};
use txn::{
    AbortReason, App, AppBuilder, Envelope, EventInfo, HandlerResult, IngressError, Runtime,
    RuntimeConfig, SerialExecutor, Service, Svc, Table, TxnCtx, TxnError, handler, service,
};

/// Inbound to `counters`: add `by` to counter `id`, then tell `log` about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Event)]
struct Add {
    #[key]
    id: u64,
    by: i64,
}

/// Internal, to `log`: note that counter `id` was raised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Event)]
struct Noted {
    #[key]
    id: u64,
}

/// Inbound to `log`: read the note count of `id` (a later-TID reader of the notes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Event)]
struct Audit {
    #[key]
    id: u64,
}

/// Inbound to one partition of `log`: carries no key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Compact;

#[txn::app(services(Counters, Log), output = i64)]
struct Demo;

struct Counters {
    values: Table<u64, i64>,
    log: Svc<Log>,
}

#[service(key = u64)]
impl Counters {
    #[handler]
    fn add(&self, ctx: &mut TxnCtx<'_, Demo>, ev: &Add) -> HandlerResult {
        let value = ctx.get(self.values, &ev.id)?.unwrap_or(0) + ev.by;
        ctx.put(self.values, ev.id, value)?;
        ctx.emit(self.log, Noted { id: ev.id });
        ctx.set_output(value);
        Ok(())
    }
}

struct Log {
    notes: Table<u64, i64>,
}

#[service(key = u64)]
impl Log {
    #[handler(internal)]
    fn noted(&self, ctx: &mut TxnCtx<'_, Demo>, ev: &Noted) -> HandlerResult {
        let n = ctx.get(self.notes, &ev.id)?.unwrap_or(0) + 1;
        ctx.put(self.notes, ev.id, n)
    }

    #[handler]
    fn compact(&self, _ctx: &mut TxnCtx<'_, Demo>, _ev: &Compact) -> HandlerResult {
        Ok(())
    }

    #[handler]
    fn audit(&self, ctx: &mut TxnCtx<'_, Demo>, ev: Audit) -> HandlerResult {
        let n = ctx.get(self.notes, &ev.id)?.unwrap_or(0);
        ctx.set_output(n);
        Ok(())
    }
}

struct Fixture {
    counters: Svc<Counters>,
    log: Svc<Log>,
    values: Table<u64, i64>,
    notes: Table<u64, i64>,
    app: std::sync::Arc<txn::AppDef<Demo>>,
}

fn fixture() -> Fixture {
    let mut b = AppBuilder::<Demo>::new();
    let counters = b.add_service::<Counters>("counters", 4);
    let log = b.add_service::<Log>("log", 3);
    let values = b.table::<u64, i64>(*counters, "values");
    let notes = b.table::<u64, i64>(*log, "notes");
    Counters { values, log }.register(&mut b, counters);
    Log { notes }.register(&mut b, log);
    log.precedence::<Noted, Audit>(&mut b);
    Fixture {
        counters,
        log,
        values,
        notes,
        app: b.build().unwrap(),
    }
}

#[test]
fn events_run_in_the_partition_owning_their_key_in_both_services() {
    // Goal: `emit` routes `Noted` by its own key into `log`'s partitions, and each row lands
    // in the partition the key maps to (a wrong route would abort with `WrongPartition`).
    let f = fixture();
    let mut exec = SerialExecutor::new(f.app.clone());
    for id in 0..40u64 {
        let out = exec.run(f.counters, Add { id, by: 2 }, 0);
        assert_eq!(out, Ok(Some(2)), "counter {id}");
    }
    let (values, notes) = (f.values, f.notes);
    let (counters, log) = (*f.counters, *f.log);
    let rows = exec.query(&[counters, log], move |view| {
        let mut misplaced = 0;
        let mut n = 0;
        for (id, _) in view.iter(values) {
            n += 1;
            misplaced += u32::from(counters.partition_of(id) != view.partition());
        }
        for (id, count) in view.iter(notes) {
            n += 1;
            misplaced += u32::from(log.partition_of(id) != view.partition() || *count != 1);
        }
        (n, misplaced)
    });
    let (n, misplaced) = rows
        .into_iter()
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert_eq!((n, misplaced), (80, 0));
}

#[test]
fn the_envelope_wraps_each_service_and_kinds_are_type_names() {
    // Goal: the generated envelope has one variant per service, `App::event_kind` is the event
    // type's name, and internal-ness comes from `#[handler(internal)]`.
    let f = fixture();
    let request = f.counters.request(Add { id: 7, by: 1 });
    let event = request.event();
    assert!(matches!(
        Envelope::<Counters>::unwrap(event),
        Some(CountersEvent::Add(Add { id: 7, by: 1 }))
    ));
    assert!(Envelope::<Log>::unwrap(event).is_none());
    assert_eq!(Demo::event_kind(event), "Add");
    assert!(!Demo::is_internal(event));
    let noted = DemoEvent::Log(LogEvent::Noted(Noted { id: 1 }));
    assert_eq!(Demo::event_kind(&noted), "Noted");
    assert!(Demo::is_internal(&noted));
    assert!(<Log as Service>::is_internal(&LogEvent::Noted(Noted {
        id: 1
    })));
    assert_eq!(request.partition(), f.counters.partition_of(&7u64));
    assert_eq!(f.app.service_name(request.service()), "counters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_refused_internal_events_and_typed_submits_commit() {
    // Goal: a typed submit of an internal event is refused before the log; inbound ones commit
    // and their chains reach the other service.
    let f = fixture();
    let rt = Runtime::start(f.app.clone(), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    let refused = client.submit(f.log, Noted { id: 3 }).await;
    assert!(
        matches!(&refused, Err(TxnError::InternalEvent { kind, .. }) if kind == "Noted"),
        "{refused:?}"
    );
    let added = client
        .submit(f.counters, Add { id: 3, by: 5 })
        .await
        .unwrap();
    assert_eq!(added.result, Ok(Some(5)));
    let audited = client.submit(f.log, Audit { id: 3 }).await.unwrap();
    assert_eq!(audited.result, Ok(Some(1)), "the note of the add is there");
    rt.shutdown().await;
}

#[test]
fn an_event_of_another_service_sent_untyped_aborts_naming_it() {
    // Goal: only the untyped `*_raw` calls can deliver `counters`' event to `log`; the
    // generated dispatcher aborts it, naming the service and the event, instead of running it.
    let f = fixture();
    let mut exec = SerialExecutor::new(f.app.clone());
    let wrong = DemoEvent::Counters(CountersEvent::Add(Add { id: 1, by: 1 }));
    let out = exec.run_raw(*f.log, 0, wrong, 0);
    match out {
        Err(AbortReason::User { message, .. }) => {
            assert!(
                message.contains("Log received an event of another service"),
                "{message}"
            );
            assert!(message.contains("Add"), "{message}");
        }
        other => panic!("expected a user abort, got {other:?}"),
    }
}

#[test]
fn typed_precedence_rules_name_the_event_types() {
    // Goal: `Svc::precedence` declares the rule between the events' kinds (their type names):
    // the opposite rule next to the fixture's makes a cycle, and the build names both types.
    let mut b = AppBuilder::<Demo>::new();
    let counters = b.add_service::<Counters>("counters", 2);
    let log = b.add_service::<Log>("log", 2);
    let values = b.table::<u64, i64>(*counters, "values");
    let notes = b.table::<u64, i64>(*log, "notes");
    Counters { values, log }.register(&mut b, counters);
    Log { notes }.register(&mut b, log);
    log.precedence::<Noted, Audit>(&mut b);
    log.precedence::<Audit, Noted>(&mut b);
    let err = b.build().err().expect("a precedence cycle is refused");
    let text = err.to_string();
    assert!(text.contains("Noted") && text.contains("Audit"), "{text}");
}

#[test]
fn requests_decode_from_a_name_and_json_and_route_like_typed_ones() {
    // Goal: what a server receives (service name, event kind, JSON) becomes the same routed
    // request as the typed call, and every bad part of it is refused with an error naming it.
    let f = fixture();
    let app = &f.app;
    let decoded = app
        .request_from_json("counters", "Add", br#"{"id":42,"by":3}"#, None)
        .unwrap();
    let typed = f.counters.request(Add { id: 42, by: 3 });
    assert_eq!(format!("{decoded:?}"), format!("{typed:?}"));
    assert_eq!(decoded.partition(), f.counters.partition_of(&42u64));
    // A key beats a partition given by the caller.
    let keyed = app.request_from_json("counters", "Add", br#"{"id":42,"by":3}"#, Some(0));
    assert_eq!(keyed.unwrap().partition(), typed.partition());
    // An event without a key goes where the caller says, and needs to be told.
    let compact = app
        .request_from_json("log", "Compact", b"null", Some(2))
        .unwrap();
    assert_eq!(compact.partition(), 2);
    assert_eq!(
        app.request_from_json("log", "Compact", b"null", None)
            .unwrap_err(),
        IngressError::NeedsPartition {
            service: "log".into(),
            kind: "Compact".into()
        }
    );
    assert!(matches!(
        app.request_from_json("log", "Compact", b"null", Some(3)),
        Err(IngressError::UnknownPartition {
            partition: 3,
            n_partitions: 3,
            ..
        })
    ));
    assert_eq!(
        app.request_from_json("nope", "Add", b"{}", None)
            .unwrap_err(),
        IngressError::UnknownService("nope".into())
    );
    let unknown = app
        .request_from_json("counters", "Audit", b"{}", None)
        .unwrap_err();
    assert!(
        matches!(&unknown, IngressError::UnknownEvent { service, known, .. }
            if service == "counters" && known == "Add"),
        "{unknown:?}"
    );
    let bad = app
        .request_from_json("counters", "Add", br#"{"id":"x"}"#, None)
        .unwrap_err();
    assert!(matches!(bad, IngressError::BadPayload { .. }), "{bad:?}");
    assert_eq!(
        app.events(*f.log),
        [
            EventInfo {
                kind: "Noted",
                internal: true
            },
            EventInfo {
                kind: "Compact",
                internal: false
            },
            EventInfo {
                kind: "Audit",
                internal: false
            },
        ]
    );
}
