//! Running the server: binding (refusing a non-loopback address without a token), opening the
//! runtime in the background so `/health` answers during recovery, the accept loop with
//! per-connection limits, and the graceful shutdown (stop accepting, answer every request in
//! flight, shut the runtime down so everything accepted is durable).

use crate::api::ApiError;
use crate::apps::{AppChoice, driver_routes};
use crate::config::Settings;
use crate::engine::Engine;
use crate::routes;
use crate::state::{Phase, ServerState};
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use futures::future::BoxFuture;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tower::{BoxError, ServiceBuilder};
use tower_http::timeout::RequestBodyTimeoutLayer;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "refusing to listen on {addr} without a token: anyone who can reach it could submit \
         transactions. Set VMSDB_TOKEN (or --token-file), or listen on a loopback address such \
         as 127.0.0.1"
    )]
    Unprotected { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the runtime did not start on {dir}: {source}")]
    Runtime { dir: String, source: txn::TxnError },
    #[error("the server task failed: {0}")]
    Task(String),
}

/// The engine a server will serve, on its way (recovery, or a cluster node's election).
pub type EngineOpening = BoxFuture<'static, Result<Arc<dyn Engine>, txn::TxnError>>;

/// A running server.
pub struct Server {
    addr: SocketAddr,
    state: Arc<ServerState>,
    stop: watch::Sender<bool>,
    accept_loop: JoinHandle<()>,
    opening: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// Binds `settings.listen` and starts serving; the runtime opens (recovers) in the
    /// background, and `/ready` answers 200 once it has.
    pub async fn start(settings: Settings) -> Result<Server, ServeError> {
        let opening_settings = settings.clone();
        let opening = Box::pin(async move { opening_settings.app.open(&opening_settings).await });
        Self::start_with(settings, opening).await
    }

    /// Like [`Server::start`], with the engine `opening` gives instead of one opened from
    /// `settings` (a cluster node serves the sequencer's runtime through it); `/ready`
    /// answers 200 once it resolves.
    pub async fn start_with(
        settings: Settings,
        opening: EngineOpening,
    ) -> Result<Server, ServeError> {
        settings
            .check()
            .map_err(|e| ServeError::Task(e.to_string()))?;
        let mut listeners = Vec::new();
        for addr in settings.listen_addrs() {
            if settings.token.is_none() && !addr.ip().is_loopback() {
                return Err(ServeError::Unprotected { addr });
            }
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            listeners.push(listener);
        }
        let addr = settings.listen;
        let addr = listeners[0]
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        let state = Arc::new(ServerState::new(
            settings.token.clone(),
            settings.limits.clone(),
        ));
        let (stop, stopped) = watch::channel(false);
        let accept_loop =
            tokio::spawn(accept_loop(listeners, state.clone(), settings.app, stopped));
        let opening = tokio::spawn(open_runtime(
            opening,
            settings.store_description(),
            state.clone(),
        ));
        tokio::spawn(sample_loop(state.clone(), stop.subscribe()));
        tracing::info!(%addr, "listening");
        Ok(Server {
            addr,
            state,
            stop,
            accept_loop,
            opening,
        })
    }

    /// The address the server listens on (the real port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A clone of the running application's typed client, for in-process tools (the bench
    /// harness audits a run over HTTP through it). `None` before the runtime opened, or if
    /// `A` is not the served application's type.
    pub fn client<A: txn::App>(&self) -> Option<txn::Client<A>> {
        let engine = self.state.engine_if_started()?;
        engine
            .client_any()
            .downcast::<txn::Client<A>>()
            .ok()
            .map(|c| *c)
    }

    /// The runtime's counters (`None` before it opened or after it stopped).
    pub fn stats(&self) -> Option<txn::runtime::StatsSnapshot> {
        self.state.engine_if_started()?.stats()
    }

    /// Waits until the runtime has opened (or failed to). The outcome is reported once: a
    /// later call, or `shutdown`, finds it settled.
    pub async fn wait_started(&mut self) -> Result<(), ServeError> {
        let settled = tokio::spawn(async { Ok(()) });
        let opening = std::mem::replace(&mut self.opening, settled);
        opening.await.map_err(|e| ServeError::Task(e.to_string()))?
    }

    /// Shuts down gracefully: stops accepting, waits (at most `shutdown_grace`) for every
    /// request in flight and every fire-and-forget submission to get its outcome, then shuts
    /// the runtime down, which makes everything accepted durable. Fails if the runtime did not
    /// start (unless `wait_started` reported it already).
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.state.set_phase(Phase::ShuttingDown);
        // Event streams never end on their own: end them so their connections can close.
        self.state.commits.close();
        let _ = self.stop.send(true);
        self.accept_loop
            .await
            .map_err(|e| ServeError::Task(e.to_string()))?;
        let opened = self
            .opening
            .await
            .map_err(|e| ServeError::Task(e.to_string()))?;
        let limits = &self.state.limits;
        let all_pending = u32::try_from(limits.pending_submissions_max).unwrap_or(u32::MAX);
        let drained = self.state.pending.acquire_many(all_pending);
        if tokio::time::timeout(limits.shutdown_grace, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                "fire-and-forget submissions still pending at the end of the grace period"
            );
        }
        if let Some(engine) = self.state.engine_if_started() {
            engine.shutdown().await;
        }
        tracing::info!("stopped");
        opened
    }
}

/// Serves until SIGTERM or SIGINT, then shuts down gracefully; fails if the runtime does not
/// start.
pub async fn run(settings: Settings) -> Result<(), ServeError> {
    let mut server = Server::start(settings).await?;
    tokio::select! {
        started = server.wait_started() => {
            if let Err(e) = started {
                let _ = server.shutdown().await;
                return Err(e);
            }
        }
        () = shutdown_signal() => return server.shutdown().await,
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await
}

/// Resolves at the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

async fn open_runtime(
    opening: EngineOpening,
    store: String,
    state: Arc<ServerState>,
) -> Result<(), ServeError> {
    match opening.await {
        Ok(engine) => {
            state.install(engine);
            Ok(())
        }
        Err(source) => {
            state.set_phase(Phase::StartFailed);
            Err(ServeError::Runtime { dir: store, source })
        }
    }
}

/// Samples the runtime's counters once a second for the throughput history, until the server
/// stops.
async fn sample_loop(state: Arc<ServerState>, mut stopped: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(crate::live::sample_interval());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        if let Some(stats) = state.engine_if_started().and_then(|e| e.stats()) {
            state.live.sample(stats);
        }
    }
}

/// Maps the errors of the guarding layers to JSON errors.
async fn layer_error(error: BoxError) -> axum::response::Response {
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    if error.is::<tower::timeout::error::Elapsed>() {
        let message = "the request took longer than request_timeout; if it was a submission with \
                       an Idempotency-Key, resubmit it to learn its outcome";
        return ApiError::new(unavailable, "timeout", message).into_response();
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        let message = "too many requests at once (concurrent_requests_max); retry later";
        return ApiError::new(unavailable, "overloaded", message).into_response();
    }
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        error.to_string(),
    )
    .into_response()
}

async fn accept_loop(
    listeners: Vec<TcpListener>,
    state: Arc<ServerState>,
    app: AppChoice,
    mut stopped: watch::Receiver<bool>,
) {
    let limits = state.limits.clone();
    let (router, _) = routes::router(state.clone());
    // The benchmark driver's routes, beside the generic API (their paths do not overlap).
    let router = match app {
        AppChoice::Marketplace => router.merge(driver_routes(state)),
        AppChoice::Ledger | AppChoice::Ycsb => router,
    };
    // Around the whole router, not per route (`Router::layer` wraps each route on its own), so
    // the concurrency limit and the request timeout count every request.
    let service = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(layer_error))
        .load_shed()
        .concurrency_limit(limits.concurrent_requests_max)
        .timeout(limits.request_timeout)
        .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .service(router.layer(DefaultBodyLimit::max(limits.body_bytes_max)));
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.connections_max));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            _ = stopped.changed() => break,
        };
        let stream = tokio::select! {
            (accepted, _, _) = futures::future::select_all(listeners.iter().map(|l| Box::pin(l.accept()))) => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Typically out of file descriptors: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(service.clone()),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listeners);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the end of the grace period");
    }
}
