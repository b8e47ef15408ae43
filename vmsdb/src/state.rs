//! What every route shares: the engine once recovered, the server's phase (what `/ready`
//! answers), the request status table, the fire-and-forget permits and the token.
//!
//! A store failure belongs to the runtime it happened on, not to the server: a cluster node
//! whose runtime failed and was replaced by a working one is ready again, so a load balancer
//! keeps sending it requests.

use crate::api::{ApiError, OutcomeBody};
use crate::commit_tracker::CommitTracker;
use crate::config::ServerLimits;
use crate::engine::Engine;
use crate::live::LiveStats;
use crate::status::StatusTable;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

/// Where the server stands; `/ready` is `ok` only in `Ready`. `StorageFailed` is never stored:
/// [`ServerState::phase`] reports it while the runtime in service is one a store failure was
/// noted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Recovering = 0,
    Ready = 1,
    ShuttingDown = 2,
    StorageFailed = 3,
    StartFailed = 4,
}

impl Phase {
    /// The name `/ready` answers with.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Recovering => "recovering",
            Phase::Ready => "ok",
            Phase::ShuttingDown => "shutting_down",
            Phase::StorageFailed => "storage_failed",
            Phase::StartFailed => "start_failed",
        }
    }

    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Recovering,
            1 => Phase::Ready,
            2 => Phase::ShuttingDown,
            3 => Phase::StorageFailed,
            _ => Phase::StartFailed,
        }
    }
}

/// Shared by every route.
pub struct ServerState {
    engine: OnceLock<Arc<dyn Engine>>,
    phase: AtomicU8,
    /// The runtime a store failure was last noted on (`Engine::runtime_id`; 0: none). Only
    /// failures note it, so requests that succeed never touch it.
    failed_runtime: AtomicUsize,
    pub status: StatusTable,
    /// One permit per fire-and-forget submission still pending.
    pub pending: Arc<Semaphore>,
    pub token: Option<String>,
    pub limits: ServerLimits,
    /// The OpenAPI document, rendered once the router is built.
    pub openapi_json: OnceLock<String>,
    /// Aborted outcomes the server answered, by (service, kind): `/metrics` shows them.
    aborts: DashMap<(String, String), u64>,
    /// Tracked transactions (the marketplace driver's) and their commit events.
    pub commits: CommitTracker,
    /// Latency, submissions in flight and throughput history (`GET /v1/stats`).
    pub live: LiveStats,
}

impl ServerState {
    pub fn new(token: Option<String>, limits: ServerLimits) -> Self {
        ServerState {
            engine: OnceLock::new(),
            phase: AtomicU8::new(Phase::Recovering as u8),
            failed_runtime: AtomicUsize::new(0),
            status: StatusTable::new(limits.status_table_settled_max),
            pending: Arc::new(Semaphore::new(limits.pending_submissions_max)),
            token,
            limits,
            openapi_json: OnceLock::new(),
            aborts: DashMap::new(),
            commits: CommitTracker::default(),
            live: LiveStats::default(),
        }
    }

    /// Where the server stands: `StorageFailed` while ready but the runtime in service is the
    /// one a store failure was noted on (a runtime that failed stays failed; a new one, put in
    /// service by a cluster node, is not).
    pub fn phase(&self) -> Phase {
        let phase = Phase::from_u8(self.phase.load(Ordering::Acquire));
        if phase == Phase::Ready && self.runtime_in_service_failed() {
            return Phase::StorageFailed;
        }
        phase
    }

    /// Whether a store failure was noted on the runtime serving requests now.
    fn runtime_in_service_failed(&self) -> bool {
        let failed = self.failed_runtime.load(Ordering::Acquire);
        failed != 0 && self.engine.get().is_some_and(|e| e.runtime_id() == failed)
    }

    /// Moves to `phase`, unless the server failed to start or is shutting down (those are
    /// final). `StorageFailed` marks the runtime in service failed instead (see
    /// [`ServerState::note_error`]).
    pub fn set_phase(&self, phase: Phase) {
        if phase == Phase::StorageFailed {
            self.note_storage_failed();
            return;
        }
        let _ = self
            .phase
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (Phase::from_u8(current) == Phase::Recovering
                    || Phase::from_u8(current) == Phase::Ready)
                    .then_some(phase as u8)
            });
    }

    /// Installs the recovered engine and reports ready.
    pub fn install(&self, engine: Arc<dyn Engine>) {
        let _ = self.engine.set(engine);
        self.set_phase(Phase::Ready);
    }

    /// The engine, or `not_ready` while recovering.
    pub fn engine(&self) -> Result<&Arc<dyn Engine>, ApiError> {
        self.engine.get().ok_or_else(ApiError::not_ready)
    }

    /// The engine, if it was installed.
    pub fn engine_if_started(&self) -> Option<&Arc<dyn Engine>> {
        self.engine.get()
    }

    /// Notes what a submission got: an abort is counted by service and kind (allocating only
    /// on this path, never for a commit), a failed store makes the server stop reporting ready.
    pub fn note_outcome(&self, result: &Result<OutcomeBody, ApiError>) {
        match result {
            Ok(OutcomeBody {
                abort: Some(abort), ..
            }) => {
                *self
                    .aborts
                    .entry((abort.service.clone(), abort.kind.clone()))
                    .or_insert(0) += 1;
            }
            Ok(_) => {}
            Err(error) => self.note_error(error),
        }
    }

    /// Notes an error a request got: a failed store makes the server stop reporting ready
    /// until another runtime is put in service.
    pub fn note_error(&self, error: &ApiError) {
        if error.storage_failed {
            self.note_storage_failed();
        }
    }

    /// Marks the runtime in service failed: `/ready` answers `storage_failed` while it serves.
    fn note_storage_failed(&self) {
        if let Some(engine) = self.engine.get() {
            self.failed_runtime
                .store(engine.runtime_id(), Ordering::Release);
        }
    }

    /// The aborts counted so far, sorted by service and kind.
    pub fn aborts(&self) -> Vec<((String, String), u64)> {
        let mut aborts: Vec<_> = self
            .aborts
            .iter()
            .map(|entry| (entry.key().clone(), *entry.value()))
            .collect();
        aborts.sort();
        aborts
    }

    /// Fire-and-forget submissions still pending.
    pub fn pending_submissions(&self) -> usize {
        self.limits.pending_submissions_max - self.pending.available_permits()
    }
}
