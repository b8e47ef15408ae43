//! Data governance at the public API: a read of personal data outside its category's allowed
//! purposes aborts with a reason naming the handler, purpose, table, field and category;
//! allowed reads and tables without personal fields are untouched; the audit trail lists
//! exactly the reads of a subject's personal data; `forget` leaves none of the subject's
//! personal bytes in any file of the data directory while recovery keeps working.

use crate::common::files::{files, files_containing};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use txn::{
    AbortReason, AppBuilder, AppDef, Client, EventOf, HandlerResult, KeyOf, PurposeRefusal,
    Retention, Runtime, RuntimeConfig, Svc, Table, TxnCtx, app, handler, service,
};

/// A person: the name is `pii`, the card number category `card`; `visits` is not personal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Table)]
#[table(name = "people")]
struct Person {
    #[key]
    #[subject]
    id: u64,
    #[pii]
    name: String,
    #[category(card)]
    card: String,
    visits: u64,
}

/// A row with no personal data, read by handlers serving no purpose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Table)]
#[table(name = "tallies")]
struct Tally {
    #[key]
    id: u64,
    count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Event)]
struct Register {
    #[key]
    id: u64,
    name: String,
    card: String,
}

/// Support reads the person's name (allowed) but through a helper that reads the whole row,
/// card included (not allowed): the macro cannot see it, the run-time check does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Event)]
struct Greet {
    #[key]
    id: u64,
}

/// Checkout reads the whole row directly: allowed for both categories.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Event)]
struct Charge {
    #[key]
    id: u64,
}

/// Serves no purpose: may read the tallies, not the people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Event)]
struct Count {
    #[key]
    id: u64,
    people_too: bool,
}

struct People {
    people: Table<u64, Person>,
    tallies: Table<u64, Tally>,
    /// An integer field: `.get(self.slot)` on a slice has the shape of a read and must compile.
    slot: usize,
}

#[service(key = u64)]
impl People {
    #[handler(purpose = "onboarding")]
    fn enroll(&self, ctx: &mut TxnCtx<'_, Clinic>, ev: &Register) -> HandlerResult {
        let person = Person {
            id: ev.id,
            name: ev.name.clone(),
            card: ev.card.clone(),
            visits: 0,
        };
        ctx.put(self.people, ev.id, person)
    }

    #[handler(purpose = "support")]
    fn greet(&self, ctx: &mut TxnCtx<'_, Clinic>, ev: &Greet) -> HandlerResult {
        let name = self.person(ctx, ev.id)?.map(|p| p.name);
        ctx.set_output(name.unwrap_or_default());
        Ok(())
    }

    #[handler(purposes("checkout", "billing"))]
    fn charge(&self, ctx: &mut TxnCtx<'_, Clinic>, ev: &Charge) -> HandlerResult {
        let person = ctx.get(self.people, &ev.id)?;
        ctx.set_output(person.map(|p| p.card).unwrap_or_default());
        Ok(())
    }

    #[handler]
    fn count(&self, ctx: &mut TxnCtx<'_, Clinic>, ev: &Count) -> HandlerResult {
        let tally = ctx.get(self.tallies, &ev.id)?.map_or(0, |t| t.count);
        ctx.put(
            self.tallies,
            ev.id,
            Tally {
                id: ev.id,
                count: tally + 1,
            },
        )?;
        let unit = ["1"].get(self.slot).copied().unwrap_or("?");
        ctx.set_output(format!("{}", tally + unit.parse::<u64>().unwrap_or(0)));
        if ev.people_too {
            self.person(ctx, ev.id)?;
        }
        Ok(())
    }

    /// A helper: the build-time check sees only reads written in a handler's own body.
    fn person(&self, ctx: &mut TxnCtx<'_, Clinic>, id: u64) -> Result<Option<Person>, txn::Abort> {
        ctx.get(self.people, &id)
    }
}

#[app(
    services(People),
    output = String,
    allow(pii = ["support", "checkout"], card = ["checkout"])
)]
struct Clinic;

fn build() -> (Arc<AppDef<Clinic>>, Svc<People>) {
    let (app, svc, _) = build_with_tables();
    (app, svc)
}

/// The people and tallies tables.
type Tables = (Table<u64, Person>, Table<u64, Tally>);

fn build_with_tables() -> (Arc<AppDef<Clinic>>, Svc<People>, Tables) {
    let (b, svc, tables) = declare_people(2);
    (b.build().expect("valid app"), svc, tables)
}

/// A builder with the people service (`n_partitions` partitions) and its tables registered.
fn declare_people(n_partitions: u32) -> (AppBuilder<Clinic>, Svc<People>, Tables) {
    let mut b = AppBuilder::<Clinic>::new();
    let svc = b.add_service::<People>("people", n_partitions);
    let people = Person::table(&mut b, *svc);
    let tallies = Tally::table(&mut b, *svc);
    People {
        people,
        tallies,
        slot: 0,
    }
    .register(&mut b, svc);
    (b, svc, (people, tallies))
}

/// Submits `event` and returns its output; it must commit.
async fn committed<E>(client: &Client<Clinic>, svc: Svc<People>, event: E) -> Option<String>
where
    E: EventOf<People> + KeyOf<u64>,
{
    client.submit(svc, event).await.unwrap().result.unwrap()
}

fn count(id: u64, people_too: bool) -> Count {
    Count { id, people_too }
}

fn register(id: u64, name: &str) -> Register {
    Register {
        id,
        name: name.to_string(),
        card: format!("{name}-card-4242"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_outside_allowed_purposes_abort_naming_everything() {
    let (app, svc) = build();
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    committed(&client, svc, register(1, "ada")).await;

    let charged = client.submit(svc, Charge { id: 1 }).await.unwrap();
    assert_eq!(charged.result, Ok(Some("ada-card-4242".to_string())));

    let greeted = client.submit(svc, Greet { id: 1 }).await.unwrap();
    assert_eq!(
        greeted.result,
        Err(AbortReason::PurposeNotAllowed(Box::new(PurposeRefusal {
            service: "people".into(),
            handler: "Greet".into(),
            purposes: vec!["support".into()],
            table: "people.people".into(),
            field: "card".into(),
            category: "card".into(),
        })))
    );

    // Serving no purpose: the tallies are fine, the people are not, and nothing commits.
    let counted = client.submit(svc, count(1, false)).await.unwrap();
    assert_eq!(counted.result, Ok(Some("1".to_string())));
    let refused = client.submit(svc, count(1, true)).await.unwrap();
    let Err(AbortReason::PurposeNotAllowed(refusal)) = refused.result else {
        panic!("expected a purpose refusal, got {:?}", refused.result);
    };
    assert_eq!(
        (refusal.handler.as_str(), refusal.field.as_str()),
        ("Count", "name")
    );
    assert_eq!(
        (refusal.purposes.len(), refusal.category.as_str()),
        (0, "pii")
    );
    assert_eq!(
        refusal.to_string(),
        "handler Count of people (purposes: []) may not read people.people: its field name is \
         personal data of category pii, allowed for none of them"
    );
    let counted = client.submit(svc, count(1, false)).await.unwrap();
    assert_eq!(
        counted.result,
        Ok(Some("2".to_string())),
        "the refused transaction's tally write must not commit"
    );
    rt.shutdown().await;
}

/// A durable config checkpointing every other epoch, so personal bytes reach the checkpoint
/// file as well as the log, and some stay in the log tail after the last checkpoint.
fn durable(dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        checkpoint_every_epochs: 2,
        ..RuntimeConfig::durable(dir).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_leaves_no_personal_bytes_in_any_file_and_recovery_works() {
    let dir = tempfile::tempdir().unwrap();
    let (app, svc) = build();
    let rt = Runtime::start(app.clone(), durable(dir.path()))
        .await
        .unwrap();
    let client = rt.client();
    // Each submission is its own epoch: the subject's row is checkpointed, then rewritten.
    committed(&client, svc, register(7, "ZQXJ-first")).await;
    for id in [8, 9, 10] {
        committed(&client, svc, register(id, "Grace")).await;
    }
    // Many other people, so the files have pages to free and reuse: without the rewrite of
    // the files, freed checkpoint pages still hold the subject's first name.
    for id in 100..1_100 {
        committed(&client, svc, register(id, "Other")).await;
    }
    committed(&client, svc, register(7, "ZQXJ-second")).await;
    let tally = client.submit(svc, count(7, false)).await.unwrap();
    assert_eq!(tally.result, Ok(Some("1".to_string())));
    rt.shutdown().await;

    let secret = b"ZQXJ";
    let before = files_containing(dir.path(), secret);
    eprintln!("before forget, the subject's bytes are in {before:?}");
    assert!(
        !before.is_empty(),
        "the subject's bytes must be on disk before: {:?}",
        files(dir.path())
    );

    let report = txn::erasure::forget_dir(app.clone(), dir.path(), "7")
        .await
        .unwrap();
    assert_eq!(report.rows_erased, 1);
    let after = files_containing(dir.path(), secret);
    assert!(
        after.is_empty(),
        "still holding the subject's bytes: {after:?}"
    );

    // Recovery works, the subject's personal fields are erased, everyone else is intact, and
    // the store takes new work across another restart.
    for round in 0..2 {
        let rt = Runtime::start(app.clone(), durable(dir.path()))
            .await
            .unwrap();
        let client = rt.client();
        let card = |id| client.submit(svc, Charge { id });
        assert_eq!(card(7).await.unwrap().result, Ok(Some(String::new())));
        assert_eq!(
            card(8).await.unwrap().result,
            Ok(Some("Grace-card-4242".into()))
        );
        assert_eq!(
            card(10).await.unwrap().result,
            Ok(Some("Grace-card-4242".into()))
        );
        let tally = client.submit(svc, count(7, false)).await.unwrap();
        assert_eq!(
            tally.result,
            Ok(Some((2 + round).to_string())),
            "non-personal data stays"
        );
        rt.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_lists_exactly_the_reads_of_a_subjects_personal_data() {
    let dir = tempfile::tempdir().unwrap();
    let (app, svc) = build();
    let config = RuntimeConfig {
        history_retention: Some(Retention::Everything),
        ..durable(dir.path())
    };
    let rt = Runtime::start(app.clone(), config).await.unwrap();
    let client = rt.client();
    let mut expected = Vec::new();
    // Writes are not reads; another subject's reads and non-personal reads are not listed;
    // a read the purpose check refused never happened.
    committed(&client, svc, register(1, "ada")).await;
    committed(&client, svc, register(2, "bob")).await;
    for id in [1, 2, 1] {
        let charged = client.submit(svc, Charge { id }).await.unwrap();
        assert!(charged.result.is_ok());
        if id == 1 {
            expected.push((charged.tid, "Charge", vec!["checkout", "billing"], true));
        }
    }
    assert!(
        client
            .submit(svc, Greet { id: 1 })
            .await
            .unwrap()
            .result
            .is_err()
    );
    committed(&client, svc, count(1, false)).await;
    rt.shutdown().await;

    let history = txn::history::History::open_dir(app, dir.path()).unwrap();
    let trail = history.audit("1").await.unwrap();
    let got: Vec<_> = trail
        .iter()
        .map(|e| {
            let purposes: Vec<&str> = e.purposes.iter().map(String::as_str).collect();
            (e.tid, e.handler.as_str(), purposes, e.committed)
        })
        .collect();
    assert_eq!(got, expected);
    for entry in &trail {
        assert_eq!(entry.service, "people");
        assert_eq!(entry.table, "people.people");
        assert_eq!(entry.key, serde_json::json!(1));
        assert_eq!(entry.fields, ["name", "card"]);
    }
    assert!(history.audit("3").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_serving_purposes_are_checked_like_handlers() {
    let (app, svc, (people, tallies)) = build_with_tables();
    let rt = Runtime::start(app, RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    committed(&client, svc, register(1, "ada")).await;
    committed(&client, svc, count(1, false)).await;
    let card = move |view: &txn::ReadView<'_>| view.get(people, &1).map(|p| p.card.clone());
    let cards = client
        .query_for(&["checkout"], &[*svc], card)
        .await
        .unwrap();
    assert!(cards.contains(&Some("ada-card-4242".to_string())));

    let refused = client.query_for(&["support"], &[*svc], card).await;
    let Err(txn::TxnError::QueryPanicked { message, .. }) = refused else {
        panic!("expected the query to fail, got {refused:?}");
    };
    assert!(
        message.contains("purposes [\"support\"]") && message.contains("field card"),
        "{message}"
    );
    // Not personal: any purpose, or none, may read it; a plain query is not checked.
    let tally = move |view: &txn::ReadView<'_>| view.get(tallies, &1).map(|t| t.count);
    assert!(
        client
            .query_for(&[], &[*svc], tally)
            .await
            .unwrap()
            .contains(&Some(1))
    );
    assert!(client.query(&[*svc], card).await.is_ok());
    rt.shutdown().await;
}

/// A hand-written `App`: its policy with `AppBuilder::allow`, its closure handler's purposes
/// with `handler_purposes`, its personal table with `personal_data`.
mod hand_written {
    use super::*;
    use txn::App;

    pub struct Plain;
    impl App for Plain {
        type Event = (u64, bool);
        type Output = ();
    }

    /// A service whose handler reads row `.0`; events `(_, true)` are of kind "" and serve
    /// "billing" (declared for the service's only kind).
    pub fn build(allow: bool, purposes: &'static [&'static str]) -> Arc<AppDef<Plain>> {
        let mut b = AppBuilder::<Plain>::new();
        let svc = b.service("accounts", 1);
        let rows = b.table::<u64, String>(svc, "holders");
        b.personal_data(
            rows,
            &[("self", "pii")],
            |k, _| k.to_string(),
            String::clear,
        );
        if allow {
            b.allow("pii", &["billing"]);
        }
        b.handler_purposes(svc, "", purposes);
        b.handler(svc, move |ctx, ev| {
            if ev.1 {
                ctx.get(rows, &ev.0)?;
            } else {
                ctx.put(rows, ev.0, "holder".to_string())?;
            }
            Ok(())
        });
        b.build().expect("valid app")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_apps_declare_the_same_with_the_builder() {
    for (allow, purposes, allowed) in [
        (true, &["billing"][..], true),
        (true, &["marketing"][..], false),
        (false, &["billing"][..], false),
    ] {
        let app = hand_written::build(allow, purposes);
        let svc = app.service("accounts").unwrap();
        let rt = Runtime::start(app, RuntimeConfig::in_memory())
            .await
            .unwrap();
        let client = rt.client();
        assert!(
            client
                .submit_raw(svc, &1u64, (1, false))
                .await
                .unwrap()
                .committed()
        );
        let read = client.submit_raw(svc, &1u64, (1, true)).await.unwrap();
        assert_eq!(
            read.committed(),
            allowed,
            "{allow} {purposes:?}: {:?}",
            read.result
        );
        rt.shutdown().await;
    }
}

#[test]
fn a_policy_declared_in_two_places_is_refused() {
    let (mut b, _, _) = declare_people(1);
    b.allow("pii", &["support"]);
    let Err(txn::TxnError::InvalidApp(problems)) = b.build() else {
        panic!("an app with #[app(allow(..))] and AppBuilder::allow must be refused");
    };
    assert!(
        problems[0].contains("declare them in one place"),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purpose_checks_switched_off_for_measurement_let_every_read_through() {
    let (mut b, svc, _) = declare_people(2);
    b.purpose_checks(false);
    let rt = Runtime::start(b.build().expect("valid app"), RuntimeConfig::in_memory())
        .await
        .unwrap();
    let client = rt.client();
    committed(&client, svc, register(1, "ada")).await;
    // Refused with the checks on (`reads_outside_allowed_purposes_abort_naming_everything`).
    let greeted = client.submit(svc, Greet { id: 1 }).await.unwrap();
    assert!(greeted.result.is_ok(), "{:?}", greeted.result);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_also_erases_the_history_base_of_a_bounded_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (app, svc) = build();
    let config = || RuntimeConfig {
        checkpoint_every_epochs: 2,
        ..RuntimeConfig::durable_with_history(dir.path(), txn::Retention::Epochs(4)).unwrap()
    };
    let rt = Runtime::start(app.clone(), config()).await.unwrap();
    let client = rt.client();
    committed(&client, svc, register(7, "ZQXJ-first")).await;
    // Enough epochs for the base to move past the subject's write.
    for id in 100..120 {
        committed(&client, svc, register(id, "Other")).await;
    }
    rt.shutdown().await;
    let base_dir = dir.path().join(txn::runtime::HISTORY_BASE_DIR);
    let secret = b"ZQXJ";
    assert!(
        !files_containing(&base_dir, secret).is_empty(),
        "the history base holds the subject's bytes before"
    );
    let report = txn::erasure::forget_dir(app.clone(), dir.path(), "7")
        .await
        .unwrap();
    let after = files_containing(dir.path(), secret);
    assert!(
        after.is_empty(),
        "still holding the subject's bytes: {after:?}"
    );
    // A restart with the same retention rebuilds the base from the erased state.
    let rt = Runtime::start(app.clone(), config()).await.unwrap();
    let client = rt.client();
    let card = client.submit(svc, Charge { id: 7 }).await.unwrap();
    assert_eq!(card.result, Ok(Some(String::new())));
    for id in 200..210 {
        committed(&client, svc, register(id, "Later")).await;
    }
    rt.shutdown().await;
    assert!(files_containing(dir.path(), secret).is_empty());
    let history = txn::history::History::open_dir(app.clone(), dir.path()).unwrap();
    let first = history.first_retained_epoch().unwrap();
    assert!(
        first > report.checkpoint_epoch,
        "history starts after the erasure (epoch {}), not at {first}",
        report.checkpoint_epoch
    );
    history
        .audit("7")
        .await
        .expect("the retained window replays");
}
