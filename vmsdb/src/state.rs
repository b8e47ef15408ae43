//! What every route shares: the engine once recovered, the server's phase (what `/ready`
//! answers), the request status table, the fire-and-forget permits and the token.

use crate::api::{ApiError, OutcomeBody};
use crate::commit_tracker::CommitTracker;
use crate::config::ServerLimits;
use crate::engine::Engine;
use crate::live::LiveStats;
use crate::status::StatusTable;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

/// Where the server stands; `/ready` is `ok` only in `Ready`.
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

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    /// Moves to `phase`, unless the server already failed or is shutting down (those are
    /// final).
    pub fn set_phase(&self, phase: Phase) {
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

    /// Notes an error a request got: a failed store makes the server stop reporting ready.
    pub fn note_error(&self, error: &ApiError) {
        if error.storage_failed {
            self.set_phase(Phase::StorageFailed);
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
