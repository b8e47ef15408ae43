//! The store's lease as a running runtime holds it: taken before recovery reads anything,
//! renewed by a thread of its own (never on the epoch path), and, once lost, the end of every
//! write: the runtime then fails its durable watermark, so requests in flight get an unknown
//! outcome and no new request is accepted.
//!
//! The store fences the writes of a deposed holder in the write's own transaction
//! (`StorageError::Fenced`), so safety never depends on timing here; this module only makes a
//! runtime notice early that another process took over, say so in its stats, and step down
//! cleanly at shutdown so a standby need not wait for the lease to run out.

use crate::error::TxnError;
use crate::limits;
use crate::runtime::stats::{RuntimeStats, StatsSnapshot};
use crate::storage::{Storage, StorageError};
use crate::sync::DurableWatermark;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How a runtime takes and keeps the store's lease (`RuntimeConfig::lease`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The name the lease is held under, unique per would-be writer: by default
    /// `hostname:pid:random`, the same for every runtime of one process (see
    /// [`LeaseConfig::default_holder`]).
    pub holder: String,
    /// How long the lease runs after each renewal; after the holder dies a standby waits at
    /// most this long (by the store's clock) before it can take over.
    pub ttl: Duration,
    /// Time between two renewals; shorter than `ttl` so a late renewal does not lose it.
    pub renew_every: Duration,
    /// `None`: `Runtime::start` fails with `TxnError::LeaseHeld` while another holder's lease
    /// runs. `Some(d)`: it waits up to `d` for that lease to end, then takes over (a standby).
    pub wait_for_lease: Option<Duration>,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        let ttl = Duration::from_millis(limits::LEASE_TTL_MS_DEFAULT);
        LeaseConfig {
            holder: Self::default_holder(),
            ttl,
            renew_every: ttl / limits::LEASE_RENEWALS_PER_TTL,
            wait_for_lease: None,
        }
    }
}

impl LeaseConfig {
    /// `hostname:pid:random`, drawn once per process: runtimes started one after another in
    /// one process share the lease (a restart in the same process renews it), while another
    /// process, even on the same host with a reused pid, is another holder.
    pub fn default_holder() -> String {
        static HOLDER: OnceLock<String> = OnceLock::new();
        HOLDER
            .get_or_init(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "localhost".to_string());
                format!(
                    "{host}:{}:{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                )
            })
            .clone()
    }

    /// Why these settings cannot work, if they cannot.
    pub(super) fn invalid(&self) -> Option<String> {
        if self.ttl.is_zero() || self.renew_every.is_zero() || self.renew_every >= self.ttl {
            return Some(format!(
                "lease renew_every {:?} must be above zero and shorter than its ttl {:?}",
                self.renew_every, self.ttl
            ));
        }
        None
    }
}

/// The lease as a running runtime sees it (`RuntimeStats::lease_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    /// No lease: none configured, or the store does not implement leases (writes unfenced).
    Unfenced,
    /// This runtime holds the lease under `term`.
    Held { term: u64 },
    /// Another holder took the store over with term `by_term`: this runtime accepts no writes.
    Fenced { by_term: u64 },
    /// No renewal succeeded within the lease's length, so another holder may have taken over:
    /// this runtime stopped accepting writes.
    Lapsed,
}

impl fmt::Display for LeaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseStatus::Unfenced => f.write_str("no lease (writes unfenced)"),
            LeaseStatus::Held { term } => write!(f, "holding the lease, term {term}"),
            LeaseStatus::Fenced { by_term } => write!(f, "fenced by term {by_term}"),
            LeaseStatus::Lapsed => f.write_str("lease lapsed (no renewal within its length)"),
        }
    }
}

/// `RuntimeStats::fenced_by_term` when the lease lapsed and the new term is unknown.
const LAPSED: u64 = u64::MAX;

impl LeaseStatus {
    /// The status the two counters `fenced_by_term` and `lease_term` describe.
    fn of(fenced_by_term: u64, lease_term: u64) -> Self {
        match (fenced_by_term, lease_term) {
            (LAPSED, _) => LeaseStatus::Lapsed,
            (0, 0) => LeaseStatus::Unfenced,
            (0, term) => LeaseStatus::Held { term },
            (by_term, _) => LeaseStatus::Fenced { by_term },
        }
    }
}

impl RuntimeStats {
    /// The lease as this runtime sees it: `fenced by term N` once another holder took over.
    pub fn lease_status(&self) -> LeaseStatus {
        LeaseStatus::of(
            self.fenced_by_term.load(Ordering::Acquire),
            self.lease_term.load(Ordering::Acquire),
        )
    }
}

impl StatsSnapshot {
    /// The lease as the runtime saw it when the snapshot was taken.
    pub fn lease_status(&self) -> LeaseStatus {
        LeaseStatus::of(self.fenced_by_term, self.lease_term)
    }
}

/// Records, from a failed store write, that another holder took the store over.
pub(super) fn note_fenced(stats: &RuntimeStats, error: &StorageError) {
    if let StorageError::Fenced { current, .. } = error {
        stats.fenced_by_term.store(*current, Ordering::Release);
    }
}

/// What `acquire` got: the term and when it was asked for, or nothing (unfenced).
pub(super) struct Granted {
    term: u64,
    asked_at: Instant,
}

impl Granted {
    /// The lease's term.
    pub(super) fn term(&self) -> u64 {
        self.term
    }
}

/// Takes the store's lease (waiting for another holder's to end if configured), before
/// recovery reads anything. `None` when no lease is configured or the store has none.
pub(super) async fn acquire(
    storage: &Arc<dyn Storage>,
    config: Option<&LeaseConfig>,
) -> Result<Option<Granted>, TxnError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let deadline = config.wait_for_lease.map(|wait| Instant::now() + wait);
    loop {
        let asked_at = Instant::now();
        let (store, holder, ttl) = (storage.clone(), config.holder.clone(), config.ttl);
        let result = tokio::task::spawn_blocking(move || store.acquire_lease(&holder, ttl))
            .await
            .map_err(|e| TxnError::Storage(format!("taking the store's lease stopped: {e}")))?;
        match result {
            Ok(term) => return Ok(Some(Granted { term, asked_at })),
            Err(StorageError::LeaseUnsupported { backend }) => {
                tracing::warn!(
                    backend,
                    "the store does not implement leases: running unfenced"
                );
                return Ok(None);
            }
            Err(StorageError::LeaseHeld {
                holder,
                term,
                remaining_ms,
                ..
            }) => {
                let now = Instant::now();
                match deadline {
                    Some(deadline) if now < deadline => {
                        let wait = Duration::from_millis(
                            remaining_ms.max(limits::LEASE_RETRY_WAIT_MS_MIN),
                        );
                        tracing::info!(holder, term, remaining_ms, "waiting for the store's lease");
                        tokio::time::sleep(wait.min(deadline - now)).await;
                    }
                    _ => {
                        return Err(TxnError::LeaseHeld {
                            holder,
                            term,
                            remaining_ms,
                        });
                    }
                }
            }
            Err(e) => return Err(TxnError::Storage(format!("taking the store's lease: {e}"))),
        }
    }
}

/// Hands back the lease a runtime took but will not use (its start failed after taking it): a
/// lease of length zero, which anyone may take at once. A failure is only logged, since the
/// lease then runs out by itself.
pub(super) async fn hand_back(storage: Arc<dyn Storage>, config: Option<LeaseConfig>) {
    let Some(config) = config else {
        return;
    };
    let handed =
        tokio::task::spawn_blocking(move || storage.acquire_lease(&config.holder, Duration::ZERO))
            .await;
    if let Ok(Err(e)) = handed {
        tracing::warn!(error = %e, "handing the store's lease back failed; it runs out by itself");
    }
}

/// The renewal thread of a held lease; dropping it stops the thread (and waits for at most
/// the renewal in progress).
pub(super) struct LeaseKeeper {
    stop: Option<SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<Instant>>,
    storage: Arc<dyn Storage>,
    holder: String,
    ttl: Duration,
    stats: Arc<RuntimeStats>,
}

/// What the renewal thread works with.
struct Renewal {
    storage: Arc<dyn Storage>,
    config: LeaseConfig,
    term: u64,
    watermark: Arc<DurableWatermark>,
    stats: Arc<RuntimeStats>,
}

impl LeaseKeeper {
    /// Starts renewing the lease `granted` (a no-op keeper for an unfenced runtime).
    pub(super) fn spawn(
        storage: &Arc<dyn Storage>,
        config: Option<&LeaseConfig>,
        granted: Option<Granted>,
        watermark: &Arc<DurableWatermark>,
        stats: &Arc<RuntimeStats>,
    ) -> Result<Option<Self>, TxnError> {
        let (Some(config), Some(granted)) = (config, granted) else {
            return Ok(None);
        };
        stats.lease_term.store(granted.term, Ordering::Release);
        let (stop, stopped) = std::sync::mpsc::sync_channel::<()>(1);
        let renewal = Renewal {
            storage: storage.clone(),
            config: config.clone(),
            term: granted.term,
            watermark: watermark.clone(),
            stats: stats.clone(),
        };
        let asked_at = granted.asked_at;
        let thread = std::thread::Builder::new()
            .name("vmsdb-lease".into())
            .spawn(move || renewal.run(asked_at, &stopped))
            .map_err(|e| TxnError::Storage(format!("cannot start the lease thread: {e}")))?;
        Ok(Some(LeaseKeeper {
            stop: Some(stop),
            thread: Some(thread),
            storage: storage.clone(),
            holder: config.holder.clone(),
            ttl: config.ttl,
            stats: stats.clone(),
        }))
    }

    /// Stops renewing and, if the lease is still surely ours, hands it back (a lease of length
    /// zero, which anyone may take at once), so a standby takes over without waiting.
    pub(super) fn step_down(mut self) {
        let last_renewed = self.stop_thread();
        let ours = matches!(self.stats.lease_status(), LeaseStatus::Held { .. })
            && last_renewed.is_some_and(|at| at.elapsed() < self.ttl);
        if ours && let Err(e) = self.storage.acquire_lease(&self.holder, Duration::ZERO) {
            tracing::warn!(error = %e, "handing the store's lease back failed; it runs out by itself");
        }
    }

    /// Stops the renewal thread; returns when the last renewal was asked for.
    fn stop_thread(&mut self) -> Option<Instant> {
        drop(self.stop.take());
        self.thread.take().and_then(|thread| thread.join().ok())
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

impl Renewal {
    /// Renews every `renew_every` until stopped, the runtime's log fails (a runtime that
    /// accepts no writes lets its lease run out, so a standby can take over) or the lease is
    /// lost. Returns when the last successful renewal was asked for.
    fn run(self, mut last_renewed: Instant, stopped: &std::sync::mpsc::Receiver<()>) -> Instant {
        loop {
            match stopped.recv_timeout(self.config.renew_every) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return last_renewed,
            }
            if self.watermark.failure().is_some() {
                return last_renewed;
            }
            // The store counts the lease from when it saw the renewal, at or after it was
            // asked for: past `ttl` since then it may have run out and gone to someone else.
            if last_renewed.elapsed() >= self.config.ttl {
                self.lose(
                    LAPSED,
                    "no renewal of the store's lease succeeded within its length",
                );
                return last_renewed;
            }
            let asked_at = Instant::now();
            match self
                .storage
                .acquire_lease(&self.config.holder, self.config.ttl)
            {
                Ok(term) if term == self.term => last_renewed = asked_at,
                Ok(term)
                | Err(StorageError::LeaseHeld { term, .. })
                | Err(StorageError::Fenced { current: term, .. }) => {
                    self.lose(term, "another holder took the store's lease over");
                    return last_renewed;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the store's lease failed; retrying");
                }
            }
        }
    }

    /// Stops every write of this runtime: the lease went to term `by_term` (or lapsed).
    fn lose(&self, by_term: u64, why: &str) {
        self.stats.fenced_by_term.store(by_term, Ordering::Release);
        let status = self.stats.lease_status();
        tracing::error!(term = self.term, %status, "{why}; refusing further writes");
        self.watermark.fail(format!(
            "{status}: {why} (this runtime held term {})",
            self.term
        ));
    }
}
