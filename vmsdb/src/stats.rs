//! `GET /v1/stats`: everything the live console shows, as one JSON document — the runtime's
//! counters and epoch phase times, the recent latency percentiles and throughput history, the
//! aborts by service and kind, the queue depths the server sees, and the recovery report.

use crate::live::{LatencyBody, RateSample};
use crate::state::ServerState;
use serde::Serialize;
use std::sync::{Arc, OnceLock, Weak};
use txn::RecoveryReport;
use txn::cluster::Cluster;
use txn::runtime::{ConflictStats, StatsSnapshot};
use utoipa::ToSchema;

/// The live statistics of the server.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StatsBody {
    /// The served application (`null` while recovering).
    pub app: Option<&'static str>,
    /// What `/ready` says: `ok`, `recovering`, `shutting_down`, `storage_failed`, ...
    pub phase: &'static str,
    pub uptime_s: f64,
    /// The runtime's counters since it started (`null` before recovery finished or after it
    /// stopped).
    pub runtime: Option<RuntimeBody>,
    /// Submit → durable outcome latency of the submissions the server answered recently.
    pub latency: LatencyBody,
    /// Throughput per second, oldest first (one sample a second, the last two minutes).
    pub history: Vec<RateSample>,
    /// Queue depths the server sees.
    pub queues: QueuesBody,
    /// Aborted outcomes the server answered, by service and kind (business kind or category).
    pub aborts: Vec<AbortCount>,
    /// Conflict losses of the parallel pass by `service.table` since start, most first, each
    /// with its hottest keys (empty while recovering). A transaction losing in several
    /// partitions counts in each, so the sum can exceed `runtime.conflicts`.
    pub conflicts_by_table: Vec<TableConflictBody>,
    /// What recovery did at start-up (`null` while recovering).
    pub recovery: Option<RecoveryBody>,
    /// Where the log and checkpoints go: `redb in DIR` or `postgres database ... on ...`
    /// (`null` while recovering).
    pub store: Option<String>,
    /// The store lease as the runtime sees it: `holding the lease, term N`, `fenced by term N`
    /// once another process took the store over, or `no lease (writes unfenced)`.
    pub lease: Option<String>,
    /// On a cluster node (`vmsdb node`): the traffic on the link to each other node since this
    /// process started — forwarded batches and their answers, queries, announcements, and any
    /// epoch phase batches (`null` outside a cluster node).
    pub link: Option<Vec<PeerLinkBody>>,
}

/// The link traffic exchanged with one other node: whole link frames (payload and trailer),
/// requests and replies alike (`txn::cluster::PeerLinkStats`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PeerLinkBody {
    pub node: String,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
}

/// The cluster whose link traffic `/v1/stats` reports. One cluster node per process (ractor's
/// process groups are global), so one slot; weak, so reporting never keeps the node alive.
static LINK_OF: OnceLock<Weak<Cluster>> = OnceLock::new();

/// Makes `/v1/stats` report `cluster`'s link traffic (the first cluster given, per process).
pub fn report_link_of(cluster: &Arc<Cluster>) {
    let _ = LINK_OF.set(Arc::downgrade(cluster));
}

/// The link traffic per other node, if this process runs a cluster node.
fn link_traffic() -> Option<Vec<PeerLinkBody>> {
    let cluster = LINK_OF.get()?.upgrade()?;
    let peers = cluster
        .link_stats()
        .into_iter()
        .map(|(node, s)| PeerLinkBody {
            node,
            messages_sent: s.messages_sent,
            bytes_sent: s.bytes_sent,
            messages_received: s.messages_received,
            bytes_received: s.bytes_received,
        });
    Some(peers.collect())
}

/// The conflict losses one table caused (`txn::runtime::TableConflicts`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TableConflictBody {
    /// `service.table`.
    pub table: String,
    /// Transactions its rows made lose.
    pub losers: u64,
    /// The hottest keys (their `Debug` text) with the losses each caused, most first; a
    /// count is a lower bound (see the runtime's `TableConflicts`).
    pub hot_keys: Vec<HotKeyBody>,
}

/// One hot key of a table.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HotKeyBody {
    pub key: String,
    pub losers: u64,
}

/// The runtime's counters (`RuntimeStats`).
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct RuntimeBody {
    pub epochs: u64,
    pub committed: u64,
    /// Aborted by a handler (business aborts, constraints, limits).
    pub user_aborted: u64,
    /// Conflict losses of the parallel pass (each re-run by the fallback).
    pub conflicts: u64,
    /// Runs in the serial pass (conflict losers and hinted transactions).
    pub fallback: u64,
    pub serial_hinted: u64,
    /// Transactions per epoch, on average since start.
    pub mean_epoch_txns: f64,
    /// Mean time per epoch in each phase, in microseconds.
    pub phase_us_per_epoch: PhaseTimes,
    pub log_appends: u64,
    pub log_bytes: u64,
    pub checkpoints_completed: u64,
    pub last_checkpoint_rows: u64,
    /// The store lease's term held (0: none) and the term that fenced the runtime (0: none).
    pub lease_term: u64,
    pub fenced_by_term: u64,
}

/// Time per epoch phase, in microseconds.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct PhaseTimes {
    pub execute: f64,
    pub decide: f64,
    pub commit: f64,
    pub serial_pass: f64,
    /// The durable log write (fsync included), per log append rather than per epoch.
    pub log_append: f64,
}

/// Requests waiting somewhere in the server.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct QueuesBody {
    /// Submissions handed to the runtime and not yet settled (waiting to be sequenced, in an
    /// epoch, or waiting for the log write).
    pub in_flight: u64,
    /// Fire-and-forget submissions still pending.
    pub pending_submissions: u64,
    /// Fire-and-forget requests in the status table.
    pub status_table_entries: u64,
}

/// Aborts of one service and kind.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AbortCount {
    pub service: String,
    pub kind: String,
    pub count: u64,
}

/// The recovery report.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct RecoveryBody {
    pub checkpoint_epoch: Option<u64>,
    pub rows_loaded: u64,
    pub epochs_replayed: u64,
    pub last_epoch: u64,
    pub dedup_window_entries: u64,
    pub seconds: f64,
}

impl StatsBody {
    /// The statistics now.
    pub async fn collect(state: &ServerState) -> StatsBody {
        let engine = state.engine_if_started();
        let conflicts = match engine {
            Some(e) => e.conflict_stats().await,
            None => None,
        };
        StatsBody {
            app: engine.map(|e| e.app_name()),
            phase: state.phase().name(),
            uptime_s: state.live.uptime().as_secs_f64(),
            runtime: engine.and_then(|e| e.stats()).map(RuntimeBody::new),
            latency: state.live.latency(),
            history: state.live.rates(),
            queues: QueuesBody {
                in_flight: state.live.in_flight(),
                pending_submissions: state.pending_submissions() as u64,
                status_table_entries: state.status.len() as u64,
            },
            aborts: state
                .aborts()
                .into_iter()
                .map(|((service, kind), count)| AbortCount {
                    service,
                    kind,
                    count,
                })
                .collect(),
            conflicts_by_table: conflicts
                .map(TableConflictBody::from_stats)
                .unwrap_or_default(),
            recovery: engine.map(|e| RecoveryBody::new(e.recovery())),
            store: engine.map(|e| e.store().to_string()),
            lease: engine
                .and_then(|e| e.stats())
                .map(|s| s.lease_status().to_string()),
            link: link_traffic(),
        }
    }
}

impl TableConflictBody {
    /// Every table that caused a loss, most losses first.
    fn from_stats(stats: ConflictStats) -> Vec<TableConflictBody> {
        let mut tables: Vec<TableConflictBody> = stats
            .by_table
            .into_iter()
            .map(|(table, t)| TableConflictBody {
                table,
                losers: t.losers,
                hot_keys: t
                    .hot_keys
                    .into_iter()
                    .map(|(key, losers)| HotKeyBody { key, losers })
                    .collect(),
            })
            .collect();
        tables.sort_by(|a, b| b.losers.cmp(&a.losers).then_with(|| a.table.cmp(&b.table)));
        tables
    }
}

impl RuntimeBody {
    fn new(s: StatsSnapshot) -> RuntimeBody {
        let epochs = s.epochs.max(1) as f64;
        let per_epoch = |nanos: u64| nanos as f64 / 1e3 / epochs;
        RuntimeBody {
            epochs: s.epochs,
            committed: s.committed,
            user_aborted: s.user_aborted,
            conflicts: s.conflicts,
            fallback: s.fallback,
            serial_hinted: s.serial_hinted,
            mean_epoch_txns: (s.committed + s.user_aborted) as f64 / epochs,
            phase_us_per_epoch: PhaseTimes {
                execute: per_epoch(s.execute_nanos),
                decide: per_epoch(s.decide_nanos),
                commit: per_epoch(s.commit_nanos),
                serial_pass: per_epoch(s.serial_pass_nanos),
                log_append: s.log_append_nanos as f64 / 1e3 / s.log_appends.max(1) as f64,
            },
            log_appends: s.log_appends,
            log_bytes: s.log_bytes,
            checkpoints_completed: s.checkpoints_completed,
            last_checkpoint_rows: s.last_checkpoint_rows,
            lease_term: s.lease_term,
            fenced_by_term: s.fenced_by_term,
        }
    }
}

impl RecoveryBody {
    fn new(r: &RecoveryReport) -> RecoveryBody {
        RecoveryBody {
            checkpoint_epoch: r.checkpoint_epoch,
            rows_loaded: r.rows_loaded as u64,
            epochs_replayed: r.epochs_replayed,
            last_epoch: r.last_epoch,
            dedup_window_entries: r.dedup_window_entries as u64,
            seconds: r.duration.as_secs_f64(),
        }
    }
}
