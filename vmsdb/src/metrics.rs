//! `GET /metrics`: the runtime's counters (`RuntimeStats::snapshot`), its recovery report and
//! the server's own numbers in the Prometheus text format (version 0.0.4), named `vmsdb_*`.

use crate::live::LatencyBody;
use std::fmt::Write;
use txn::RecoveryReport;
use txn::runtime::{ConflictStats, StatsSnapshot};

/// The server's own numbers at one moment.
#[derive(Clone, Copy, Debug)]
pub struct ServerGauges {
    pub ready: bool,
    pub status_table_entries: usize,
    pub pending_submissions: usize,
    /// Submissions handed to the runtime and not yet settled.
    pub in_flight: u64,
    /// Submit → outcome latency of the recent window.
    pub latency: LatencyBody,
}

/// One metric without labels: name, type, help, value.
type Sample = (&'static str, &'static str, &'static str, f64);

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// Renders everything as Prometheus text. `aborts` are the aborted outcomes the server
/// answered, by (service, kind).
pub fn render(
    stats: Option<StatsSnapshot>,
    recovery: Option<&RecoveryReport>,
    server: ServerGauges,
    aborts: &[((String, String), u64)],
    conflicts: Option<&ConflictStats>,
) -> String {
    let mut out = String::with_capacity(4096);
    let samples = server_samples(server)
        .into_iter()
        .chain(recovery.into_iter().flat_map(recovery_samples))
        .chain(stats.into_iter().flat_map(runtime_samples));
    for (name, kind, help, value) in samples {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    render_latency(&mut out, &server.latency);
    if !aborts.is_empty() {
        let name = "vmsdb_http_aborted_total";
        let help = "Aborted outcomes the server answered, by service and kind (business kind or category).";
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {COUNTER}");
        for ((service, kind), n) in aborts {
            let (service, kind) = (label(service), label(kind));
            let _ = writeln!(out, "{name}{{service=\"{service}\",kind=\"{kind}\"}} {n}");
        }
    }
    if let Some(conflicts) = conflicts.filter(|c| !c.by_table.is_empty()) {
        let name = "vmsdb_conflicts_by_table_total";
        let help = "Conflict losses of the parallel pass caused by each table's rows (a transaction losing in several partitions counts in each).";
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {COUNTER}");
        for (table, t) in &conflicts.by_table {
            let _ = writeln!(out, "{name}{{table=\"{}\"}} {}", label(table), t.losers);
        }
    }
    out
}

fn server_samples(s: ServerGauges) -> [Sample; 4] {
    [
        (
            "vmsdb_ready",
            GAUGE,
            "1 when the runtime has recovered and accepts requests.",
            f64::from(u8::from(s.ready)),
        ),
        (
            "vmsdb_status_table_entries",
            GAUGE,
            "Fire-and-forget requests in the status table.",
            s.status_table_entries as f64,
        ),
        (
            "vmsdb_pending_submissions",
            GAUGE,
            "Fire-and-forget submissions still pending.",
            s.pending_submissions as f64,
        ),
        (
            "vmsdb_in_flight_submissions",
            GAUGE,
            "Submissions handed to the runtime and not yet settled (sequencer queue, epoch, log write).",
            s.in_flight as f64,
        ),
    ]
}

fn recovery_samples(r: &RecoveryReport) -> [Sample; 3] {
    [
        (
            "vmsdb_recovery_rows_loaded",
            GAUGE,
            "Rows loaded from the checkpoint at start-up.",
            r.rows_loaded as f64,
        ),
        (
            "vmsdb_recovery_epochs_replayed",
            GAUGE,
            "Logged epochs replayed at start-up.",
            r.epochs_replayed as f64,
        ),
        (
            "vmsdb_recovery_seconds",
            GAUGE,
            "Wall time of recovery at start-up.",
            r.duration.as_secs_f64(),
        ),
    ]
}

fn runtime_samples(s: StatsSnapshot) -> [Sample; 18] {
    let n = |count: u64| count as f64;
    [
        ("vmsdb_epochs_total", COUNTER, "Epochs run.", n(s.epochs)),
        (
            "vmsdb_committed_total",
            COUNTER,
            "Transactions committed.",
            n(s.committed),
        ),
        (
            "vmsdb_aborted_user_total",
            COUNTER,
            "Transactions aborted by a handler.",
            n(s.user_aborted),
        ),
        (
            "vmsdb_conflicts_total",
            COUNTER,
            "Conflict losses in the parallel pass.",
            n(s.conflicts),
        ),
        (
            "vmsdb_fallback_total",
            COUNTER,
            "Transactions run in the serial pass.",
            n(s.fallback),
        ),
        (
            "vmsdb_serial_hinted_total",
            COUNTER,
            "Transactions a serial hint sent to the serial pass.",
            n(s.serial_hinted),
        ),
        (
            "vmsdb_checkpoints_started_total",
            COUNTER,
            "Checkpoints handed to storage.",
            n(s.checkpoints_started),
        ),
        (
            "vmsdb_checkpoints_completed_total",
            COUNTER,
            "Checkpoints completed.",
            n(s.checkpoints_completed),
        ),
        (
            "vmsdb_log_appends_total",
            COUNTER,
            "Durable log writes (one fsync each).",
            n(s.log_appends),
        ),
        (
            "vmsdb_log_epochs_total",
            COUNTER,
            "Epoch records written to the log.",
            n(s.log_epochs),
        ),
        (
            "vmsdb_log_bytes_total",
            COUNTER,
            "Encoded bytes written to the log.",
            n(s.log_bytes),
        ),
        (
            "vmsdb_log_append_seconds_total",
            COUNTER,
            "Time writing the log, fsync included.",
            s.log_append_nanos as f64 / 1e9,
        ),
        (
            "vmsdb_last_checkpoint_rows",
            GAUGE,
            "Rows of the last completed checkpoint.",
            n(s.last_checkpoint_rows),
        ),
        (
            "vmsdb_last_checkpoint_seconds",
            GAUGE,
            "Wall time of the last completed checkpoint.",
            s.last_checkpoint_micros as f64 / 1e6,
        ),
        (
            "vmsdb_epoch_execute_seconds_total",
            COUNTER,
            "Time in the execute phase of epochs (all waves of the parallel pass).",
            s.execute_nanos as f64 / 1e9,
        ),
        (
            "vmsdb_epoch_decide_seconds_total",
            COUNTER,
            "Time in the decide phase of epochs (conflict detection).",
            s.decide_nanos as f64 / 1e9,
        ),
        (
            "vmsdb_epoch_commit_seconds_total",
            COUNTER,
            "Time in the commit phase of epochs.",
            s.commit_nanos as f64 / 1e9,
        ),
        (
            "vmsdb_epoch_serial_pass_seconds_total",
            COUNTER,
            "Time in the serial pass of epochs (conflict losers and hinted transactions).",
            s.serial_pass_nanos as f64 / 1e9,
        ),
    ]
}

/// The latency percentiles of the recent window, as gauges labelled by quantile (not a
/// summary: the window slides, so there is no ever-growing sum and count to go with them).
fn render_latency(out: &mut String, latency: &LatencyBody) {
    let name = "vmsdb_submit_latency_seconds";
    let help = "Submit to durable outcome latency of the outcomes of the last 10 to 20 s.";
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {GAUGE}");
    let quantiles = [
        ("0.5", latency.p50_us),
        ("0.9", latency.p90_us),
        ("0.99", latency.p99_us),
        ("0.999", latency.p999_us),
    ];
    for (quantile, micros) in quantiles {
        let seconds = micros as f64 / 1e6;
        let _ = writeln!(out, "{name}{{quantile=\"{quantile}\"}} {seconds}");
    }
    let name = "vmsdb_submit_latency_window_outcomes";
    let help = "Outcomes the latency quantiles are computed from.";
    let count = latency.count;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {GAUGE}\n{name} {count}"
    );
}

/// A label value escaped as the text format wants (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
