//! A cluster node that serves clients (`vmsdb node --store .. --http ..`): every node contends
//! for the store's lease; the holder is the **sequencer**, which recovers the runtime from the
//! store, runs the application and announces itself to the members over the link; every other
//! node serves the same HTTP API and forwards submissions (in batches) and queries to it
//! (`docs/cluster.md`).

use crate::api::{ApiError, QueryInfo, ServiceBody};
use crate::apps::{AppOptions, QueryFuture, ServedApp};
use crate::config::Settings;
use crate::engine::{Engine, EventRef, OutcomeFuture, Served, refuse_internal, services_of};
use crate::forward::{
    ForwardedEvent, Forwarder, LinkAnswer, LinkMessage, SequencerView, SequencerWatch, WireError,
    WireOutcome, decode, encode, encode_message,
};
use crate::limits;
use crate::server::{ServeError, Server};
use crate::spread::{HostLink, Hosts, Incoming};
use futures::future::BoxFuture;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use txn::cluster::{Cluster, ClusterEvent};
use txn::runtime::{ConflictStats, LeaseStatus, StatsSnapshot};
use txn::{RecoveryReport, RequestId, TxnError};

/// The application on a cluster node: the runtime itself on the sequencer, a forwarder to the
/// sequencer everywhere else.
pub struct NodeEngine<S: ServedApp> {
    app: S,
    node_name: String,
    /// Set while this node holds the store's lease and runs the runtime. Each runtime's
    /// `Served` is leaked (one small struct per runtime started, its runtime shut down when it
    /// is replaced), so the engine can lend references to it.
    local: parking_lot::RwLock<Option<&'static Arc<Served<S>>>>,
    /// This node's partitions of the sequencer's runtime, when they are spread.
    hosts: Hosts<S::App>,
    /// Whether the sequencer spreads the partitions over the live members.
    spread: bool,
    /// Counts membership changes, so the sequencer checks its placement after each.
    membership_changed: watch::Sender<u64>,
    sequencer: SequencerWatch,
    /// Set when the sequencer this node followed was declared dead (not when a forward to it
    /// failed, nor before one was known); cleared when it follows one again. Only then does the
    /// first standby in line begin a take-over before the lease (`wait_to_try_again`).
    sequencer_died: AtomicBool,
    forwarder: Forwarder,
    /// The client number of the ids this node generates (random, with the generated bit).
    id_client: u64,
    next_id_seq: AtomicU64,
    store: String,
    /// What a node that did not recover anything reports.
    no_recovery: RecoveryReport,
}

impl<S: ServedApp> NodeEngine<S> {
    /// The sequencer this node forwards to, if it knows one.
    pub fn sequencer(&self) -> Option<SequencerView> {
        self.sequencer.borrow().clone()
    }

    /// Follows `view` unless it is older than the sequencer known now; prints the change.
    fn follow(&self, view: SequencerView) {
        let changed = self.sequencer.send_if_modified(|current| {
            let newer = current.as_ref().is_none_or(|c| view.term >= c.term);
            let change = newer && current.as_ref() != Some(&view);
            if change {
                *current = Some(view.clone());
            }
            change
        });
        if changed {
            self.sequencer_died.store(false, Ordering::Release);
            println!("sequencer {} term {}", view.name, view.term);
        }
    }

    /// Forgets the sequencer if it was `node` (declared dead).
    fn forget_node(&self, node: &str) {
        let forgotten = self.sequencer.send_if_modified(|current| {
            let gone = current.as_ref().is_some_and(|c| c.name == node);
            if gone {
                *current = None;
            }
            gone
        });
        if forgotten {
            self.sequencer_died.store(true, Ordering::Release);
            println!("no sequencer ({node} is down)");
        }
    }

    /// The runtime, if this node is the sequencer.
    fn local(&self) -> Option<&'static Arc<Served<S>>> {
        *self.local.read()
    }

    /// Answers another node's link request.
    async fn answer_link(self: Arc<Self>, bytes: Vec<u8>) -> Vec<u8> {
        let bytes = match crate::spread::split(bytes) {
            Incoming::Forward(bytes) => bytes,
            Incoming::Phase { generation, batch } => {
                return self.hosts.handle(generation, batch).await;
            }
            Incoming::Unknown => {
                let why = "a link request without a known tag".to_string();
                return encode(&LinkAnswer::Undecodable(why));
            }
        };
        let answer = match decode::<LinkMessage>(&bytes) {
            Err(e) => LinkAnswer::Undecodable(e),
            Ok(LinkMessage::Announce { sequencer, term }) => {
                self.follow(SequencerView {
                    name: sequencer,
                    term,
                });
                LinkAnswer::Announced
            }
            Ok(LinkMessage::Submit(events)) => match self.local() {
                Some(served) => LinkAnswer::Outcomes(submit_all(served, events).await),
                None => LinkAnswer::NotSequencer,
            },
            Ok(LinkMessage::Query { name, body }) => match self.local() {
                Some(served) => LinkAnswer::Query(run_query(served, &name, &body).await),
                None => LinkAnswer::NotSequencer,
            },
            Ok(LinkMessage::Place {
                generation,
                owners,
                keep,
            }) => self.hosts.place(generation, &owners, keep).await,
        };
        encode(&answer)
    }
}

/// Submits a forwarded batch on the sequencer under the requests' own ids; one result per event,
/// in order.
async fn submit_all<S: ServedApp>(
    served: &Served<S>,
    events: Vec<ForwardedEvent>,
) -> Vec<Result<WireOutcome, WireError>> {
    let outcomes = events.iter().map(|event| {
        let submitted = served.submit(
            EventRef {
                service: &event.service,
                kind: &event.kind,
                payload: &event.payload,
                partition: event.partition,
            },
            event.id(),
        );
        async move {
            let outcome = submitted?.await?;
            Ok(WireOutcome::from_body(&outcome))
        }
    });
    let outcomes: Vec<Result<WireOutcome, ApiError>> = futures::future::join_all(outcomes).await;
    outcomes
        .into_iter()
        .map(|o| o.map_err(|e| WireError::from_api(&e)))
        .collect()
}

/// Runs a forwarded query on the sequencer; its answer as JSON text.
async fn run_query<S: ServedApp>(
    served: &Served<S>,
    name: &str,
    body: &[u8],
) -> Result<String, WireError> {
    let answer = match served.query(name, body) {
        Ok(running) => running.await,
        Err(e) => Err(e),
    };
    answer
        .map(|value| value.to_string())
        .map_err(|e| WireError::from_api(&e))
}

impl<S: ServedApp> Engine for NodeEngine<S> {
    fn app_name(&self) -> &'static str {
        S::NAME
    }

    fn new_request_id(&self) -> RequestId {
        match self.local() {
            Some(served) => served.new_request_id(),
            None => RequestId {
                client: self.id_client,
                seq: self.next_id_seq.fetch_add(1, Ordering::Relaxed),
            },
        }
    }

    fn submit(&self, event: EventRef<'_>, id: RequestId) -> Result<OutcomeFuture, ApiError> {
        if let Some(served) = self.local() {
            return served.submit(event, id);
        }
        // Refuse what the sequencer would refuse here, so a bad request costs no forwarding.
        let def = self.app.app_def();
        refuse_internal(def, event.service, event.kind)?;
        def.request_from_json(event.service, event.kind, event.payload, event.partition)?;
        let outcome = self.forwarder.submit(ForwardedEvent {
            client: id.client,
            seq: id.seq,
            service: event.service.to_string(),
            kind: event.kind.to_string(),
            payload: event.payload.to_vec(),
            partition: event.partition,
        })?;
        Ok(Box::pin(async move {
            outcome.await.unwrap_or_else(|_| {
                Err(crate::forward::outcome_unknown(
                    id,
                    "(unknown)",
                    "the forwarding task stopped",
                ))
            })
        }))
    }

    fn services(&self) -> Vec<ServiceBody> {
        services_of(self.app.app_def())
    }

    fn queries(&self) -> &'static [QueryInfo] {
        S::QUERIES
    }

    fn query(&self, name: &str, body: &[u8]) -> Result<QueryFuture, ApiError> {
        match self.local() {
            Some(served) => served.query(name, body),
            None => Ok(self.forwarder.query(name, body)),
        }
    }

    fn stats(&self) -> Option<StatsSnapshot> {
        self.local().and_then(|served| served.stats())
    }

    fn conflict_stats(&self) -> BoxFuture<'static, Option<ConflictStats>> {
        match self.local() {
            Some(served) => served.conflict_stats(),
            None => Box::pin(async { None }),
        }
    }

    fn recovery(&self) -> &RecoveryReport {
        self.local()
            .map_or(&self.no_recovery, |served| served.recovery())
    }

    fn store(&self) -> &str {
        &self.store
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        match self.local() {
            Some(served) => served.shutdown(),
            None => Box::pin(async {}),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        match self.local() {
            Some(served) => served.as_any(),
            None => self,
        }
    }

    fn client_any(&self) -> Box<dyn std::any::Any + Send> {
        match self.local() {
            Some(served) => served.client_any(),
            None => Box::new(()),
        }
    }
}

/// How a node serves clients: where the store is, where to listen for HTTP, the lease and
/// epoch settings.
#[derive(Clone, Debug)]
pub struct Serving {
    pub store_url: String,
    pub http: std::net::SocketAddr,
    pub lease_ttl: Option<Duration>,
    pub epoch_duration: Option<Duration>,
    /// Epochs between checkpoints (`None`: the runtime's default).
    pub checkpoint_every: Option<u64>,
    /// Spread the partitions over the live members (`--spread-partitions`).
    pub spread: bool,
}

/// A node serving clients: its HTTP server, its engine and its bid for the lease.
pub struct ServingNode<S: ServedApp> {
    engine: Arc<NodeEngine<S>>,
    cluster: Arc<Cluster>,
    server: Server,
    contending: JoinHandle<()>,
    stopping: watch::Sender<bool>,
    /// Why this node stopped being the sequencer, once it did.
    deposed: watch::Receiver<Option<String>>,
}

/// Starts serving on `cluster`: installs the link handler, starts the HTTP server (ready once
/// a sequencer is known) and starts contending for the store's lease.
pub async fn start<S: ServedApp>(
    app: S,
    options: AppOptions,
    cluster: Arc<Cluster>,
    serving: Serving,
    app_choice: crate::AppChoice,
) -> Result<ServingNode<S>, ServeError> {
    let settings = node_settings(app_choice, options, &serving, cluster.node_name());
    let (sequencer, _) = watch::channel(None);
    let sequencer: SequencerWatch = Arc::new(sequencer);
    let wait = serving
        .epoch_duration
        .unwrap_or(Duration::from_micros(limits::FORWARD_BATCH_WAIT_US_DEFAULT));
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let hosts = Hosts::new(app.app_def().clone(), cluster.node_name());
    let engine = Arc::new(NodeEngine {
        app,
        node_name: cluster.node_name().to_string(),
        local: parking_lot::RwLock::new(None),
        hosts,
        spread: serving.spread,
        membership_changed: watch::channel(0).0,
        sequencer: sequencer.clone(),
        forwarder: Forwarder::start(cluster.clone(), sequencer, wait),
        id_client: random | RequestId::GENERATED_CLIENT_BIT,
        next_id_seq: AtomicU64::new(0),
        store: settings.store_description(),
        no_recovery: RecoveryReport::default(),
        sequencer_died: AtomicBool::new(false),
    });
    let answering = engine.clone();
    cluster.serve(move |_from, bytes| answering.clone().answer_link(bytes));
    let (stopping, _) = watch::channel(false);
    let opening = wait_for_sequencer(engine.clone(), stopping.subscribe());
    let server = Server::start_with(settings.clone(), opening).await?;
    println!("http listening on {}", server.local_addr());
    let (deposing, deposed) = watch::channel(None);
    let contending = tokio::spawn(contend(
        engine.clone(),
        cluster.clone(),
        (options, settings),
        deposing,
    ));
    Ok(ServingNode {
        engine,
        cluster,
        server,
        contending,
        stopping,
        deposed,
    })
}

/// The server's settings for a node: its store, the lease under a holder name unique to this
/// process, waiting for the lease in rounds.
fn node_settings(
    app: crate::AppChoice,
    options: AppOptions,
    serving: &Serving,
    node_name: &str,
) -> Settings {
    let mut settings = Settings::new(app, std::path::PathBuf::new());
    settings.listen = serving.http;
    settings.token = std::env::var("VMSDB_TOKEN").ok();
    settings.partitions = options.partitions;
    settings.epoch_duration = serving.epoch_duration;
    settings.checkpoint_every = serving.checkpoint_every;
    settings.store_url = Some(serving.store_url.clone());
    settings.lease_ttl = serving.lease_ttl;
    settings.wait_for_lease = Some(Duration::from_millis(limits::LEASE_WAIT_ROUND_MS));
    // The node's name plus the process's own holder name: a restarted node never renews the
    // lease of its previous, dead incarnation as if it were the same process.
    let holder = txn::LeaseConfig::default_holder();
    settings.lease_holder = Some(format!("{node_name}:{holder}"));
    settings
}

/// The engine once this node knows a sequencer (itself or another), so `/ready` means "can
/// serve"; fails with `Stopped` if the node stops first.
fn wait_for_sequencer<S: ServedApp>(
    engine: Arc<NodeEngine<S>>,
    mut stopping: watch::Receiver<bool>,
) -> crate::server::EngineOpening {
    Box::pin(async move {
        let mut known = engine.sequencer.subscribe();
        tokio::select! {
            found = known.wait_for(Option::is_some) => found.map_err(|_| TxnError::Stopped)?,
            _ = stopping.wait_for(|stop| *stop) => return Err(TxnError::Stopped),
        };
        Ok(engine as Arc<dyn Engine>)
    })
}

/// Waits for the store's lease (in rounds, for as long as it takes), then recovers the
/// runtime, becomes the sequencer and announces itself to every member; then watches the
/// lease and says on `deposing` why it lost it, if it does. With the partitions spread, a
/// membership change that moves partitions replaces the runtime: it is shut down (its pending
/// requests get "outcome unknown") and a new one recovers from the store with the new placement.
async fn contend<S: ServedApp>(
    engine: Arc<NodeEngine<S>>,
    cluster: Arc<Cluster>,
    (options, settings): (AppOptions, Settings),
    deposing: watch::Sender<Option<String>>,
) {
    // What the runtime before handed over (a re-placement that only added a member).
    let mut handed = None;
    // When the runtime before began to stop (a replacement): no request is served since.
    let mut stopping_since: Option<std::time::Instant> = None;
    loop {
        let (served, owners) =
            take_lease(&engine, &cluster, options, &settings, handed.take()).await;
        let replaced = match stopping_since.take() {
            Some(at) => format!(
                "; serving again {} ms after the stop began",
                at.elapsed().as_millis()
            ),
            None => String::new(),
        };
        // This node runs every partition it owns in its runtime now, none for another's.
        engine.hosts.drop_all().await;
        let term = match served.stats().map(|s| s.lease_status()) {
            Some(LeaseStatus::Held { term }) => term,
            _ => 0,
        };
        let served: &'static Arc<Served<S>> = Box::leak(Box::new(served));
        *engine.local.write() = Some(served);
        let view = SequencerView {
            name: engine.node_name.clone(),
            term,
        };
        engine.follow(view.clone());
        let recovery = served.recovery();
        match recovery.handed_over {
            true => println!(
                "handed over: {} partitions kept, {} moved as {} rows, in {} ms; replayed 0 \
                 epochs{replaced}",
                recovery.partitions_kept,
                recovery.partitions_moved,
                recovery.rows_moved,
                recovery.duration.as_millis()
            ),
            false => println!(
                "recovered: {} checkpoint rows loaded, {} partitions kept, replayed {} epochs, in \
                 {} ms{replaced}",
                recovery.rows_loaded,
                recovery.partitions_kept,
                recovery.epochs_replayed,
                recovery.duration.as_millis()
            ),
        }
        // After how the runtime started: a reader of the placement line has both.
        if let Some(owners) = &owners {
            println!("spread term {term} {}", owners.join(","));
        }
        for member in cluster.members() {
            if member.name != engine.node_name {
                tokio::spawn(announce(cluster.clone(), member.name, view.clone()));
            }
        }
        let (why, only_added) = tokio::select! {
            end = runtime_ended(served) => match end {
                RuntimeEnd::LeaseLost(reason) => {
                    deposing.send_replace(Some(reason));
                    return;
                }
                RuntimeEnd::Failed(reason) => (format!("it failed: {reason}"), false),
            },
            only_added = placement_moved_settled(&engine, &cluster, owners.as_deref(), recovery) => {
                tracing::info!(term, only_added, "the placement over the live members changed: replacing the runtime");
                ("the placement over the live members changed".to_string(), only_added)
            }
        };
        let stopping_at = std::time::Instant::now();
        stopping_since = Some(stopping_at);
        *engine.local.write() = None;
        // A placement that only adds a member keeps every owner: the runtime hands its state
        // over to the next one, which then starts without replaying the log.
        match only_added {
            true => handed = served.shutdown_handing_over().await,
            false => served.shutdown_keeping_lease().await,
        }
        println!(
            "replacing the runtime of term {term} ({why}; stopped in {} ms{})",
            stopping_at.elapsed().as_millis(),
            match (only_added, &handed) {
                (true, Some(_)) => ", handing over",
                (true, None) => ", it cannot hand over: recovering",
                (false, _) => "",
            }
        );
    }
}

/// [`placement_moved`], except that a change that only adds a member (a node that joined or
/// came back) is acted on no sooner than `JOIN_AFTER_RECOVERY_MS` after a runtime that
/// recovered (a take-over) started: it serves first, and the member's partitions move to it
/// (a stop of the world for the rows they hold) a moment later. A change that loses an owner
/// is acted on at once.
async fn placement_moved_settled<S: ServedApp>(
    engine: &NodeEngine<S>,
    cluster: &Cluster,
    owners: Option<&[String]>,
    recovery: &RecoveryReport,
) -> bool {
    let started = std::time::Instant::now();
    let settle = match recovery.handed_over {
        true => Duration::ZERO,
        false => Duration::from_millis(limits::JOIN_AFTER_RECOVERY_MS),
    };
    let mut changes = engine.membership_changed.subscribe();
    loop {
        let only_added = placement_moved(engine, cluster, owners).await;
        let wait = settle.saturating_sub(started.elapsed());
        if !only_added || wait.is_zero() {
            return only_added;
        }
        tracing::info!(
            wait_ms = wait.as_millis() as u64,
            "a member joined just after this runtime recovered: serving before moving partitions to it"
        );
        // Another change (a member lost meanwhile) is looked at again at once.
        changes.mark_unchanged();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// Why the sequencer's runtime is over.
enum RuntimeEnd {
    /// It no longer holds the store's lease: this node is deposed.
    LeaseLost(String),
    /// It refuses writes (an epoch, the log or a checkpoint failed, e.g. a node hosting
    /// partitions did not answer) while it holds the lease: a new runtime recovers and goes on.
    Failed(String),
}

/// Opens the runtime once this node takes the store's lease (retrying for as long as it
/// takes); with the partitions spread, over the live members at that moment: the placement too.
async fn take_lease<S: ServedApp>(
    engine: &NodeEngine<S>,
    cluster: &Arc<Cluster>,
    options: AppOptions,
    settings: &Settings,
    mut hand_over: Option<txn::HandOver<S::App>>,
) -> (Arc<Served<S>>, Option<Vec<String>>) {
    // With the partitions spread, this node waits for the lease itself rather than inside the
    // runtime's start: the placement is then taken over the members live when the lease comes
    // free, not over those of when the wait began (a sequencer that died meanwhile would be
    // given partitions, and the start would fail and burn a term).
    let mut settings = settings.clone();
    if engine.spread {
        settings.wait_for_lease = Some(Duration::ZERO);
    }
    let settings = &settings;
    let (waiting_since, mut lease_tries) = (std::time::Instant::now(), 0u32);
    // The members keep the partitions they go on holding, unless recovery failed (a kept
    // partition that differs from the replay of the log fails it): the next start then reloads
    // every partition from the store. Any other failure keeps keeping: whatever it left on the
    // members, recovery checks every kept partition against the replay again.
    let mut keep = true;
    // A take-over's recovery begun while the dead sequencer's lease runs out.
    let mut prepared: Option<txn::PreparedTakeOver<S::App>> = None;
    loop {
        let n_partitions = engine.app.app_def().n_partitions_total();
        let owners = engine.spread.then(|| cluster.placement(n_partitions));
        let placement = owners.clone().map(|owners| {
            let generation = crate::spread::new_generation();
            let link = HostLink::new(cluster.clone(), generation, owners.clone(), keep);
            txn::ClusterPlacement::new(&engine.node_name, owners, Arc::new(link))
        });
        let opening_at = std::time::Instant::now();
        // Only the first try takes the hand-over: a start that fails gives it up (recovering).
        let opening = Served::<S>::open_handed_over(
            options,
            settings,
            |_| placement,
            hand_over.take(),
            prepared.clone(),
        );
        match opening.await {
            Ok(served) => {
                // The take-over's breakdown, for reading a failover from the node's log.
                tracing::info!(
                    waited_ms = opening_at.duration_since(waiting_since).as_millis() as u64,
                    lease_tries,
                    start_ms = opening_at.elapsed().as_millis() as u64,
                    recovery_ms = served.recovery().duration.as_millis() as u64,
                    epochs_replayed = served.recovery().epochs_replayed,
                    rows_loaded = served.recovery().rows_loaded,
                    partitions_kept = served.recovery().partitions_kept,
                    handed_over = served.recovery().handed_over,
                    partitions_moved = served.recovery().partitions_moved,
                    rows_moved = served.recovery().rows_moved,
                    spread = owners.is_some(),
                    "took the store's lease and started the runtime"
                );
                return (served, owners);
            }
            Err(TxnError::LeaseHeld { remaining_ms, .. }) => {
                lease_tries += 1;
                if engine.spread {
                    let wait = remaining_ms.max(limits::REPLACE_RETRY_MS);
                    wait_to_try_again(engine, cluster, settings, wait, &mut prepared).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, keep, "the runtime did not start; contending again");
                keep &= !matches!(error, TxnError::Recovery(_));
                let retry = match owners {
                    Some(_) => limits::REPLACE_RETRY_MS,
                    None => limits::CONTEND_RETRY_MS,
                };
                tokio::time::sleep(Duration::from_millis(retry)).await;
            }
        }
    }
}

/// Waits `wait` before the next try for the lease. If the sequencer is (or, meanwhile,
/// becomes) declared dead, the first standby in line begins the take-over's
/// recovery at once instead of when the lease is free, and the others wait longer, so that the
/// one that began it takes the lease.
async fn wait_to_try_again<S: ServedApp>(
    engine: &NodeEngine<S>,
    cluster: &Cluster,
    settings: &Settings,
    wait: u64,
    prepared: &mut Option<txn::PreparedTakeOver<S::App>>,
) {
    let mut until = tokio::time::Instant::now() + Duration::from_millis(wait);
    let mut sequencer = engine.sequencer.subscribe();
    let mut extended = false;
    loop {
        let died = engine.sequencer_died.load(Ordering::Acquire);
        match (
            engine.sequencer(),
            first_in_line(cluster, &engine.node_name),
        ) {
            // A sequencer is known (again): nothing to take over.
            (Some(_), _) => *prepared = None,
            // Not known yet (this node just started) or a forward to it failed (it is replacing
            // its runtime): nothing says it is gone, so nothing is replayed ahead.
            (None, _) if !died => {}
            (None, true) if prepared.is_none() => *prepared = prepare(engine, settings).await,
            (None, true) => {}
            (None, false) if !extended => {
                extended = true;
                until += Duration::from_millis(limits::LEASE_NOT_FIRST_IN_LINE_WAIT_MS);
            }
            (None, false) => {}
        }
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            changed = sequencer.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(until).await;
                    return;
                }
            }
        }
    }
}

/// Whether `node` comes first by name among the live members: the standby that begins a
/// dead sequencer's take-over before its lease is free, and tries for the lease first.
fn first_in_line(cluster: &Cluster, node: &str) -> bool {
    cluster.members().first().is_some_and(|m| m.name == node)
}

/// Begins the take-over's recovery while the dead sequencer's lease runs out (`None` if the
/// store cannot be opened: the take-over then recovers after the lease, as without).
async fn prepare<S: ServedApp>(
    engine: &NodeEngine<S>,
    settings: &Settings,
) -> Option<txn::PreparedTakeOver<S::App>> {
    match crate::engine::prepare_take_over(&engine.app, settings).await {
        Ok(prepared) => {
            tracing::info!("no sequencer: replaying the log while its lease runs out");
            Some(prepared)
        }
        Err(error) => {
            tracing::warn!(%error, "could not begin the take-over before the lease");
            None
        }
    }
}

/// Resolves once the placement over the live members differs from `owners` (never when the
/// partitions are not spread): whether it only added a member (every owner is still live), so
/// that the runtime can hand its state over instead of the next one replaying the log.
async fn placement_moved<S: ServedApp>(
    engine: &NodeEngine<S>,
    cluster: &Cluster,
    owners: Option<&[String]>,
) -> bool {
    let Some(owners) = owners else {
        return std::future::pending().await;
    };
    let mut changes = engine.membership_changed.subscribe();
    let n_partitions = engine.app.app_def().n_partitions_total();
    while cluster.placement(n_partitions) == owners {
        if changes.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
    let live: BTreeSet<String> = cluster.members().into_iter().map(|m| m.name).collect();
    owners.iter().all(|owner| live.contains(owner))
}

/// Resolves once the runtime no longer holds the store's lease (another node took it over, or
/// it could not renew it in time: its status then), or refuses writes while it holds it (why).
async fn runtime_ended<S: ServedApp>(served: &Served<S>) -> RuntimeEnd {
    let mut ticks = tokio::time::interval(Duration::from_millis(limits::LEASE_CHECK_INTERVAL_MS));
    loop {
        ticks.tick().await;
        // The lease first: a runtime fenced by another holder fails too, but must not restart.
        match served.stats().map(|s| s.lease_status()) {
            Some(LeaseStatus::Fenced { .. } | LeaseStatus::Lapsed) => {}
            Some(LeaseStatus::Held { .. } | LeaseStatus::Unfenced) => match served.failure() {
                Some(reason) => return RuntimeEnd::Failed(reason),
                None => continue,
            },
            None => return RuntimeEnd::LeaseLost("the runtime stopped".to_string()),
        }
        let status = served.stats().map(|s| s.lease_status().to_string());
        return RuntimeEnd::LeaseLost(status.unwrap_or_default());
    }
}

/// Tells `member` that `view` is the sequencer, retrying while it does not answer yet (a
/// member in the first moments of its join).
async fn announce(cluster: Arc<Cluster>, member: String, view: SequencerView) {
    let message = encode_message(&LinkMessage::Announce {
        sequencer: view.name,
        term: view.term,
    });
    for _ in 0..limits::ANNOUNCE_ATTEMPTS_MAX {
        if let Ok(reply) = cluster.request(&member, message.clone()).await
            && let Ok(LinkAnswer::Announced) = decode::<LinkAnswer>(&reply)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(limits::ANNOUNCE_RETRY_MS)).await;
    }
    tracing::warn!(%member, "the member never took the sequencer's announcement");
}

impl<S: ServedApp> ServingNode<S> {
    /// Follows a membership change: a dead sequencer is forgotten; a member that (re)joins
    /// learns the sequencer from it.
    pub fn on_event(&self, event: &ClusterEvent) {
        if let ClusterEvent::NodeDown { .. } | ClusterEvent::NodeUp { .. } = event {
            self.engine.membership_changed.send_modify(|n| *n += 1);
        }
        match event {
            ClusterEvent::NodeDown { node, .. } => self.engine.forget_node(node),
            ClusterEvent::NodeUp { member } => {
                if self.engine.local().is_some()
                    && let Some(view) = self.engine.sequencer()
                {
                    tokio::spawn(announce(self.cluster.clone(), member.name.clone(), view));
                }
            }
            ClusterEvent::Refused { .. } | ClusterEvent::Unauthenticated { .. } => {}
        }
    }

    /// Resolves once this node, after being the sequencer, lost the store's lease: why. A
    /// deposed node accepts no writes; it stops so that, restarted, it rejoins as a standby.
    pub async fn deposed(&self) -> String {
        let mut deposed = self.deposed.clone();
        match deposed.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops: no more contending, the HTTP server's graceful shutdown, which shuts the runtime
    /// down (and hands the lease back) on the sequencer.
    pub async fn shutdown(self) {
        let _ = self.stopping.send(true);
        self.contending.abort();
        if let Err(error) = self.server.shutdown().await {
            tracing::info!(%error, "the node served no application");
        }
    }
}
