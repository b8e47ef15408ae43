//! Live erasure at the public API (`Client::forget`): on a running runtime that keeps
//! committing, the subject's personal fields are erased in the live state, no file of the data
//! directory holds the subject's personal bytes afterwards, a restart recovers the same state,
//! other subjects are untouched, and a crash before the erasure's checkpoint recovers the
//! erasure by replaying its logged epoch.

use crate::common::files::files_containing;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use txn::history::{History, HistoryError};
use txn::storage::{FaultOp, FaultyStorage, MemoryStorage};
use txn::{
    AppDef, Client, EventOf, HandlerResult, KeyOf, Runtime, RuntimeConfig, Svc, Table, TxnCtx,
    TxnError, app, handler, service,
};

/// A member: the name is `pii`, the card `card`; `visits` is not personal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Table)]
#[table(name = "members")]
struct Member {
    #[key]
    #[subject]
    id: u64,
    #[pii]
    name: String,
    #[category(card)]
    card: String,
    visits: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Event)]
struct Join {
    #[key]
    id: u64,
    name: String,
    card: String,
}

/// Reads the member row (personal fields included) and counts a visit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, txn::Event)]
struct Visit {
    #[key]
    id: u64,
}

struct Members {
    members: Table<u64, Member>,
}

#[service(key = u64)]
impl Members {
    #[handler(purpose = "onboarding")]
    fn join(&self, ctx: &mut TxnCtx<'_, Gym>, ev: &Join) -> HandlerResult {
        let visits = ctx.get(self.members, &ev.id)?.map_or(0, |m| m.visits);
        let member = Member {
            id: ev.id,
            name: ev.name.clone(),
            card: ev.card.clone(),
            visits,
        };
        ctx.put(self.members, ev.id, member)
    }

    #[handler(purpose = "care")]
    fn visit(&self, ctx: &mut TxnCtx<'_, Gym>, ev: &Visit) -> HandlerResult {
        let Some(mut member) = ctx.get(self.members, &ev.id)? else {
            return Err(ctx.abort("no such member"));
        };
        member.visits += 1;
        ctx.put(self.members, ev.id, member)
    }
}

#[app(
    services(Members),
    output = String,
    allow(pii = ["onboarding", "care"], card = ["onboarding", "care"])
)]
struct Gym;

fn build() -> (Arc<AppDef<Gym>>, Svc<Members>, Table<u64, Member>) {
    let mut b = txn::AppBuilder::<Gym>::new();
    let svc = b.add_service::<Members>("members", 4);
    let members = Member::table(&mut b, *svc);
    Members { members }.register(&mut b, svc);
    (b.build().expect("valid app"), svc, members)
}

async fn committed<E>(client: &Client<Gym>, svc: Svc<Members>, event: E)
where
    E: EventOf<Members> + KeyOf<u64>,
{
    let outcome = client.submit(svc, event).await.expect("submitted");
    assert!(outcome.result.is_ok(), "{outcome:?}");
}

fn join(id: u64, name: &str) -> Join {
    Join {
        id,
        name: name.to_string(),
        card: format!("{name}-card-4242"),
    }
}

/// The member row of `id`, read by a snapshot query.
async fn member(client: &Client<Gym>, table: Table<u64, Member>, id: u64) -> Option<Member> {
    let (_, svc, _) = build();
    let rows = client
        .query(&[*svc], move |view| view.get(table, &id).cloned())
        .await
        .unwrap();
    rows.into_iter().flatten().next()
}

/// Checkpoints every other epoch, so the subject's bytes reach the checkpoint file, are
/// overwritten there (freed pages), and some stay in the log tail.
fn durable(dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        checkpoint_every_epochs: 2,
        ..RuntimeConfig::durable(dir).unwrap()
    }
}

/// Visits the other members (ids 100..) in a loop until `stop`, sending the number of commits
/// so far after each one; returns how many committed.
fn keep_visiting(
    client: Client<Gym>,
    svc: Svc<Members>,
    stop: Arc<AtomicBool>,
    progress: tokio::sync::mpsc::UnboundedSender<u64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n_committed = 0u64;
        while !stop.load(Ordering::Acquire) {
            let id = 100 + n_committed % 300;
            committed(&client, svc, Visit { id }).await;
            n_committed += 1;
            let _ = progress.send(n_committed);
        }
        n_committed
    })
}

/// Waits until the visitor reports at least `n` commits.
async fn wait_for_commits(progress: &mut tokio::sync::mpsc::UnboundedReceiver<u64>, n: u64) -> u64 {
    loop {
        let seen = progress.recv().await.expect("the visitor runs");
        if seen >= n {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_on_a_running_runtime_leaves_no_personal_bytes_and_recovers_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let (app, svc, members) = build();
    let rt = Runtime::start(app.clone(), durable(dir.path()))
        .await
        .unwrap();
    let client = rt.client();
    committed(&client, svc, join(7, "ZQXJ-first")).await;
    committed(&client, svc, Visit { id: 7 }).await;
    for id in [8, 9] {
        committed(&client, svc, join(id, "Grace")).await;
    }
    // Many other members, so the files have pages to free and reuse.
    for id in 100..1_100 {
        committed(&client, svc, join(id, "Other")).await;
    }
    committed(&client, svc, join(7, "ZQXJ-second")).await;

    let secret = b"ZQXJ";
    let before = files_containing(dir.path(), secret);
    assert!(
        !before.is_empty(),
        "the subject's bytes must be on disk before"
    );

    // Other transactions keep coming while the erasure runs.
    let stop = Arc::new(AtomicBool::new(false));
    let (progress_tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
    let visitor = keep_visiting(client.clone(), svc, stop.clone(), progress_tx);
    let at_forget = wait_for_commits(&mut progress, 20).await;
    let started = std::time::Instant::now();
    let report = client.forget("7").await.unwrap();
    eprintln!(
        "forget took {:?} (writes paused meanwhile)",
        started.elapsed()
    );
    assert_eq!(report.subject, "7");
    assert_eq!(report.rows_erased, 1, "{report:?}");
    let after = files_containing(dir.path(), secret);
    assert!(
        after.is_empty(),
        "still holding the subject's bytes: {after:?}"
    );

    // The runtime keeps committing after the erasure.
    wait_for_commits(&mut progress, at_forget + 20).await;
    stop.store(true, Ordering::Release);
    let n_visits = visitor.await.unwrap();
    committed(&client, svc, Visit { id: 7 }).await;

    let erased = Member {
        id: 7,
        name: String::new(),
        card: String::new(),
        visits: 2,
    };
    assert_eq!(member(&client, members, 7).await, Some(erased.clone()));
    let grace = member(&client, members, 8).await.unwrap();
    assert_eq!(
        (grace.name.as_str(), grace.card.as_str()),
        ("Grace", "Grace-card-4242")
    );
    let live_hash = client.state_hash().await.unwrap();
    rt.shutdown().await;
    assert!(files_containing(dir.path(), secret).is_empty());

    let rt = Runtime::start(app.clone(), durable(dir.path()))
        .await
        .unwrap();
    let client = rt.client();
    assert_eq!(
        client.state_hash().await.unwrap(),
        live_hash,
        "after {n_visits} visits"
    );
    assert_eq!(member(&client, members, 7).await, Some(erased));
    committed(&client, svc, Visit { id: 8 }).await;
    rt.shutdown().await;
}

/// Runs the same members through a runtime on `storage` and returns its client.
async fn with_members(storage: Arc<dyn txn::storage::Storage>) -> (Runtime<Gym>, Svc<Members>) {
    let (app, svc, _) = build();
    let config = RuntimeConfig {
        checkpoint_every_epochs: 1_000,
        ..RuntimeConfig::with_storage(storage)
    };
    let rt = Runtime::start(app, config).await.unwrap();
    let client = rt.client();
    committed(&client, svc, join(7, "ZQXJ")).await;
    committed(&client, svc, join(8, "Grace")).await;
    committed(&client, svc, Visit { id: 7 }).await;
    (rt, svc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_erasures_checkpoint_recovers_the_erasure_from_the_log() {
    // The state a completed erasure leaves.
    let (rt, _) = with_members(Arc::new(MemoryStorage::new())).await;
    let client = rt.client();
    client.forget("7").await.unwrap();
    let erased_hash = client.state_hash().await.unwrap();
    rt.shutdown().await;

    // The same, but the erasure's checkpoint cannot be written: the erasure's epoch is logged,
    // the runtime stops accepting writes, and recovery must replay the erasure.
    let memory = MemoryStorage::new();
    let faulty = FaultyStorage::new(memory.clone());
    let (rt, _) = with_members(Arc::new(faulty.clone())).await;
    let client = rt.client();
    let unerased_hash = client.state_hash().await.unwrap();
    assert_ne!(unerased_hash, erased_hash);
    faulty.fail_always(FaultOp::CompleteCheckpoint);
    let err = client.forget("7").await.unwrap_err();
    assert!(matches!(err, TxnError::Storage(_)), "{err:?}");
    rt.shutdown().await;

    let (app, _, members) = build();
    let config = RuntimeConfig {
        checkpoint_every_epochs: 1_000,
        ..RuntimeConfig::with_storage(Arc::new(memory))
    };
    let rt = Runtime::start(app, config).await.unwrap();
    let client = rt.client();
    assert_eq!(client.state_hash().await.unwrap(), erased_hash);
    let seven = member(&client, members, 7).await.unwrap();
    assert_eq!((seven.name.as_str(), seven.visits), ("", 1));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_is_refused_before_erasing_anything_where_it_cannot_finish() {
    let (rt, svc) = with_members(Arc::new(NoPurge::default())).await;
    let client = rt.client();
    let err = client.forget("7").await.unwrap_err();
    let TxnError::ForgetRefused { why } = &err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert!(why.contains("cannot rewrite its files"), "{why}");
    committed(&client, svc, Visit { id: 7 }).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_history_retention_refuses_live_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let (app, svc, _) = build();
    let config =
        RuntimeConfig::durable_with_history(dir.path(), txn::Retention::Epochs(10)).unwrap();
    let rt = Runtime::start(app, config).await.unwrap();
    let client = rt.client();
    committed(&client, svc, join(7, "ZQXJ")).await;
    let err = client.forget("7").await.unwrap_err();
    let TxnError::ForgetRefused { why } = &err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert!(why.contains("history base"), "{why}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_kept_whole_ends_at_the_erasure() {
    let storage = Arc::new(MemoryStorage::new());
    let (app, svc, _) = build();
    let config = RuntimeConfig {
        history_retention: Some(txn::Retention::Everything),
        ..RuntimeConfig::with_storage(storage.clone())
    };
    let rt = Runtime::start(app.clone(), config).await.unwrap();
    let client = rt.client();
    committed(&client, svc, join(7, "ZQXJ")).await;
    committed(&client, svc, Visit { id: 7 }).await;
    let history = History::open(app.clone(), storage.clone()).unwrap();
    assert!(!history.audit("7").await.unwrap().is_empty());

    let report = client.forget("7").await.unwrap();
    committed(&client, svc, Visit { id: 7 }).await;
    rt.shutdown().await;
    let history = History::open(app, storage).unwrap();
    let err = history.audit("7").await.unwrap_err();
    let HistoryError::NotRetained { first_logged_epoch } = err else {
        panic!("expected history to end at the erasure, got {err:?}");
    };
    assert_eq!(first_logged_epoch, report.checkpoint_epoch + 1);
}

/// A store that does not implement `purge_freed_bytes` (as the database servers do not).
#[derive(Default)]
struct NoPurge(MemoryStorage);

#[allow(clippy::type_complexity)]
impl txn::storage::Storage for NoPurge {
    fn name(&self) -> &'static str {
        "no-purge"
    }
    fn append_epoch(&self, epoch: u64, batch: &[u8]) -> Result<(), txn::storage::StorageError> {
        self.0.append_epoch(epoch, batch)
    }
    fn read_epochs(
        &self,
        from: u64,
        visit: &mut dyn FnMut(u64, &[u8]) -> Result<(), txn::storage::StorageError>,
    ) -> Result<(), txn::storage::StorageError> {
        self.0.read_epochs(from, visit)
    }
    fn last_epoch(&self) -> Result<Option<u64>, txn::storage::StorageError> {
        self.0.last_epoch()
    }
    fn write_checkpoint_rows(
        &self,
        epoch: u64,
        rows: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<(), txn::storage::StorageError> {
        self.0.write_checkpoint_rows(epoch, rows)
    }
    fn complete_checkpoint(&self, epoch: u64) -> Result<(), txn::storage::StorageError> {
        self.0.complete_checkpoint(epoch)
    }
    fn read_latest_checkpoint(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), txn::storage::StorageError>,
    ) -> Result<Option<u64>, txn::storage::StorageError> {
        self.0.read_latest_checkpoint(visit)
    }
    fn truncate_log_below(&self, epoch: u64) -> Result<(), txn::storage::StorageError> {
        self.0.truncate_log_below(epoch)
    }
    fn latest_checkpoint_epoch(&self) -> Result<Option<u64>, txn::storage::StorageError> {
        self.0.latest_checkpoint_epoch()
    }
    fn read_store_info(&self) -> Result<Option<Vec<u8>>, txn::storage::StorageError> {
        self.0.read_store_info()
    }
    fn write_store_info(&self, info: &[u8]) -> Result<(), txn::storage::StorageError> {
        self.0.write_store_info(info)
    }
    fn acquire_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<u64, txn::storage::StorageError> {
        self.0.acquire_lease(holder, ttl)
    }
}
