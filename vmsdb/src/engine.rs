//! [`Engine`]: a running application behind one object-safe interface, so the HTTP layer is
//! written once for every [`ServedApp`]. [`Served`] implements it on a durable `Runtime`.

use crate::api::{ApiError, EventKindBody, OutcomeBody, QueryInfo, ServiceBody};
use crate::apps::{AppOptions, QueryFuture, ServedApp};
use crate::config::Settings;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use std::sync::Arc;
use txn::runtime::{ConflictStats, StatsSnapshot};
use txn::{Client, RecoveryReport, RequestId, Runtime, RuntimeConfig, TxnError};

/// An event to submit, as the API received it.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    pub service: &'a str,
    pub kind: &'a str,
    /// The event's JSON.
    pub payload: &'a [u8],
    /// The partition, for events that carry no routing key.
    pub partition: Option<u32>,
}

/// A submission on its way to its durable outcome.
pub type OutcomeFuture = BoxFuture<'static, Result<OutcomeBody, ApiError>>;

/// A running application, whatever it is.
pub trait Engine: Send + Sync {
    /// The application's name (`ledger`, `ycsb`).
    fn app_name(&self) -> &'static str;
    /// A fresh generated request id, for submissions without an `Idempotency-Key`.
    fn new_request_id(&self) -> RequestId;
    /// Decodes and checks `event` (refusing bad JSON, unknown services and kinds, internal
    /// events) and submits it under `id`; the future gives its durable outcome.
    fn submit(&self, event: EventRef<'_>, id: RequestId) -> Result<OutcomeFuture, ApiError>;
    /// The services, their partitions and event kinds.
    fn services(&self) -> Vec<ServiceBody>;
    /// The named queries.
    fn queries(&self) -> &'static [QueryInfo];
    /// Starts query `name` with its JSON body.
    fn query(&self, name: &str, body: &[u8]) -> Result<QueryFuture, ApiError>;
    /// The runtime's counters (`None` once it was shut down).
    fn stats(&self) -> Option<StatsSnapshot>;
    /// The conflict losses of the parallel pass by table, with the hottest keys (`None` once
    /// the runtime was shut down). Asks every partition between two epochs: for polling, not
    /// per request.
    fn conflict_stats(&self) -> BoxFuture<'static, Option<ConflictStats>>;
    /// What recovery did at start-up.
    fn recovery(&self) -> &RecoveryReport;
    /// Where the log and checkpoints go (`Settings::store_description`).
    fn store(&self) -> &str;
    /// Stops the runtime: finishes what was accepted and makes it durable. Later submissions
    /// get `stopped`.
    fn shutdown(&self) -> BoxFuture<'static, ()>;
    /// The engine as `Any`, so routes of one application can reach its typed [`Served`].
    fn as_any(&self) -> &dyn std::any::Any;
    /// A clone of the runtime's typed `Client<S::App>`, boxed, for in-process tools that know
    /// the application type (`Server::client`).
    fn client_any(&self) -> Box<dyn std::any::Any + Send>;
    /// Which runtime serves requests now: a number that differs for every runtime put in
    /// service during the process's life, so `/ready` reports a store failure only while the
    /// runtime it happened on serves. By default the address of what [`Engine::as_any`] lends:
    /// [`Served`] lends itself, and a cluster node's engine lends its current runtime's
    /// `Served` (leaked, so no later runtime reuses its address) or, between runtimes, itself.
    fn runtime_id(&self) -> usize {
        std::ptr::from_ref(self.as_any()).cast::<()>() as usize
    }
    /// Erases `subject`'s personal data live (`Client::forget`). An engine that does not run
    /// the application itself refuses (`forget_refused`).
    fn forget(
        &self,
        subject: &str,
    ) -> BoxFuture<'static, Result<txn::erasure::ForgetReport, ApiError>> {
        let why = format!(
            "this {} node does not run the application itself; erase on the node that does, or \
             stop the server and run `vmsdb forget` on its data directory (subject {subject:?})",
            self.app_name()
        );
        Box::pin(async move { Err(TxnError::ForgetRefused { why }.into()) })
    }
}

/// A [`ServedApp`] running on a durable runtime.
pub struct Served<S: ServedApp> {
    app: S,
    client: Client<S::App>,
    runtime: Mutex<Option<Runtime<S::App>>>,
    recovery: RecoveryReport,
    /// `Settings::store_description` of the store it runs on.
    store: String,
}

impl<S: ServedApp> Served<S> {
    /// Builds the application and opens the runtime on `settings.data_dir`.
    pub async fn open(
        options: AppOptions,
        settings: &Settings,
    ) -> Result<Arc<dyn Engine>, TxnError> {
        Ok(Self::open_typed(options, settings).await? as Arc<dyn Engine>)
    }

    /// [`Served::open`], keeping the type (a cluster node's sequencer reaches its client).
    pub async fn open_typed(
        options: AppOptions,
        settings: &Settings,
    ) -> Result<Arc<Self>, TxnError> {
        Self::open_placed(options, settings, |_| None).await
    }

    /// [`Served::open_typed`] with its partitions spread over nodes when `placement` gives a
    /// placement for the application (`RuntimeConfig::cluster`; a cluster node's sequencer).
    pub async fn open_placed(
        options: AppOptions,
        settings: &Settings,
        placement: impl FnOnce(&S) -> Option<txn::ClusterPlacement>,
    ) -> Result<Arc<Self>, TxnError> {
        Self::open_handed_over(options, settings, placement, None, None).await
    }

    /// [`Served::open_placed`] taking what the runtime before handed over, if anything
    /// (`Runtime::start_handed_over`: no recovery when it holds), and going on with a
    /// take-over's recovery begun before the lease, if any (`Runtime::start_prepared`).
    pub async fn open_handed_over(
        options: AppOptions,
        settings: &Settings,
        placement: impl FnOnce(&S) -> Option<txn::ClusterPlacement>,
        hand_over: Option<txn::HandOver<S::App>>,
        prepared: Option<txn::PreparedTakeOver<S::App>>,
    ) -> Result<Arc<Self>, TxnError> {
        let app = S::build(options)?;
        let mut config = runtime_config(settings).await?;
        if let Some(placement) = placement(&app) {
            config = config.cluster(placement);
        }
        let def = app.app_def().clone();
        let runtime = match (hand_over, prepared) {
            (h, Some(p)) => Runtime::start_prepared(def, config, h, p).await?,
            (Some(h), None) => Runtime::start_handed_over(def, config, h).await?,
            (None, None) => Runtime::start(def, config).await?,
        };
        tracing::info!(lease = %runtime.stats().lease_status(), "store lease");
        Ok(Arc::new(Served {
            store: settings.store_description(),
            client: runtime.client(),
            recovery: runtime.recovery_report().clone(),
            runtime: Mutex::new(Some(runtime)),
            app,
        }))
    }

    /// The served application.
    pub fn app(&self) -> &S {
        &self.app
    }

    /// The runtime's client.
    pub fn client(&self) -> &Client<S::App> {
        &self.client
    }

    /// Why the runtime refuses writes, once it does (`Runtime::failure`; `None` once it was
    /// shut down).
    pub fn failure(&self) -> Option<String> {
        self.runtime.lock().as_ref().and_then(|rt| rt.failure())
    }

    /// Shuts the runtime down without handing the store's lease back (a cluster node's
    /// sequencer starting a new runtime with another placement at once).
    pub async fn shutdown_keeping_lease(&self) {
        let runtime = self.runtime.lock().take();
        if let Some(runtime) = runtime {
            runtime.shutdown_keeping_lease().await;
        }
    }

    /// [`Served::shutdown_keeping_lease`], handing the next runtime of this process what it
    /// needs to start without recovering, when the runtime stopped cleanly
    /// (`Runtime::shutdown_handing_over`).
    pub async fn shutdown_handing_over(&self) -> Option<txn::HandOver<S::App>> {
        let runtime = self.runtime.lock().take();
        runtime?.shutdown_handing_over().await
    }
}

/// Refuses an internal event of `def` before it is submitted, so even a fire-and-forget
/// submission of one is answered with the refusal.
pub(crate) fn refuse_internal<A: txn::App>(
    def: &txn::AppDef<A>,
    service: &str,
    kind: &str,
) -> Result<(), ApiError> {
    let Ok(service_ref) = def.service(service) else {
        return Ok(()); // `request_from_json` names the unknown service.
    };
    if def
        .events(service_ref)
        .iter()
        .any(|e| e.kind == kind && e.internal)
    {
        return Err(ApiError::from(TxnError::InternalEvent {
            service: service.to_string(),
            kind: kind.to_string(),
        }));
    }
    Ok(())
}

/// The services of `def`, their partitions and event kinds.
pub(crate) fn services_of<A: txn::App>(def: &txn::AppDef<A>) -> Vec<ServiceBody> {
    def.service_names()
        .filter_map(|name| {
            let service = def.service(name).ok()?;
            Some(ServiceBody {
                name: name.to_string(),
                partitions: service.n_partitions(),
                events: def
                    .events(service)
                    .iter()
                    .map(|e| EventKindBody {
                        kind: e.kind,
                        internal: e.internal,
                    })
                    .collect(),
            })
        })
        .collect()
}

impl<S: ServedApp> Engine for Served<S> {
    fn app_name(&self) -> &'static str {
        S::NAME
    }

    fn new_request_id(&self) -> RequestId {
        self.client.new_request_id()
    }

    fn submit(&self, event: EventRef<'_>, id: RequestId) -> Result<OutcomeFuture, ApiError> {
        refuse_internal(self.app.app_def(), event.service, event.kind)?;
        let request = self.app.app_def().request_from_json(
            event.service,
            event.kind,
            event.payload,
            event.partition,
        )?;
        let client = self.client.clone();
        Ok(Box::pin(async move {
            let outcome = client.submit_request_with_id(id, request).await?;
            OutcomeBody::new(id, &outcome)
        }))
    }

    fn services(&self) -> Vec<ServiceBody> {
        services_of(self.app.app_def())
    }

    fn queries(&self) -> &'static [QueryInfo] {
        S::QUERIES
    }

    fn query(&self, name: &str, body: &[u8]) -> Result<QueryFuture, ApiError> {
        self.app.query(&self.client, name, body)
    }

    fn stats(&self) -> Option<StatsSnapshot> {
        self.runtime.lock().as_ref().map(|rt| rt.stats().snapshot())
    }

    fn conflict_stats(&self) -> BoxFuture<'static, Option<ConflictStats>> {
        let running = self.runtime.lock().is_some();
        let client = self.client.clone();
        Box::pin(async move {
            if !running {
                return None;
            }
            client.conflict_stats().await.ok()
        })
    }

    fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    fn store(&self) -> &str {
        &self.store
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn client_any(&self) -> Box<dyn std::any::Any + Send> {
        Box::new(self.client.clone())
    }

    fn forget(
        &self,
        subject: &str,
    ) -> BoxFuture<'static, Result<txn::erasure::ForgetReport, ApiError>> {
        let (client, subject) = (self.client.clone(), subject.to_string());
        Box::pin(async move { Ok(client.forget(&subject).await?) })
    }

    fn shutdown(&self) -> BoxFuture<'static, ()> {
        let runtime = self.runtime.lock().take();
        Box::pin(async move {
            if let Some(runtime) = runtime {
                runtime.shutdown().await;
            }
        })
    }
}

/// The runtime's configuration for `settings`, with its store opened.
async fn runtime_config(settings: &Settings) -> Result<RuntimeConfig, TxnError> {
    let store = settings.store_description();
    tracing::info!(%store, "opening the store");
    let opening = settings.clone();
    let storage = tokio::task::spawn_blocking(move || crate::store::open_storage(&opening))
        .await
        .map_err(|e| TxnError::Storage(format!("opening the store ({store}) stopped: {e}")))??;
    let mut config = RuntimeConfig::with_storage(storage);
    config.lease = Some(crate::store::lease_config(settings));
    if let Some(epoch_duration) = settings.epoch_duration {
        config.epoch_duration = epoch_duration;
    }
    if let Some(every) = settings.checkpoint_every {
        config.checkpoint_every_epochs = every;
    }
    if let Some(nice) = settings.checkpoint_nice {
        config.checkpoint_nice = nice;
    }
    if settings.store_url.is_some() {
        // A shared store's runtime (a cluster node, or a standalone server a standby may take
        // over from) fails over by replaying the log since the latest checkpoint: it keeps
        // checkpoints as frequent as `checkpoint_every` says.
        config.checkpoint_rest_factor = 0;
    }
    if settings.retain_history {
        config.history_retention = Some(txn::Retention::Everything);
    }
    Ok(config)
}

/// Begins a take-over's recovery for `app` on the store of `settings` before this process
/// holds its lease (`txn::PreparedTakeOver`); hand it to [`Served::open_handed_over`].
pub async fn prepare_take_over<S: ServedApp>(
    app: &S,
    settings: &Settings,
) -> Result<txn::PreparedTakeOver<S::App>, TxnError> {
    let config = runtime_config(settings).await?;
    Ok(txn::PreparedTakeOver::start(app.app_def().clone(), config))
}
