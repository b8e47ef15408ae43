//! `GET /metrics`: the runtime's counters (`RuntimeStats::snapshot`), its recovery report and
//! the server's own gauges in the Prometheus text format (version 0.0.4), named `vmsdb_*`.

use std::fmt::Write;
use txn::RecoveryReport;
use txn::runtime::StatsSnapshot;

/// The server's own numbers at one moment.
#[derive(Clone, Copy, Debug)]
pub struct ServerGauges {
    pub ready: bool,
    pub status_table_entries: usize,
    pub pending_submissions: usize,
}

/// Renders everything as Prometheus text.
pub fn render(
    stats: Option<StatsSnapshot>,
    recovery: Option<&RecoveryReport>,
    server: ServerGauges,
    aborts: &[((String, String), u64)],
) -> String {
    let mut out = String::with_capacity(4096);
    if !aborts.is_empty() {
        let name = "vmsdb_http_aborted_total";
        let _ = writeln!(
            out,
            "# HELP {name} Aborted outcomes the server answered, by service and kind (business kind or category).\n# TYPE {name} counter"
        );
        for ((service, kind), n) in aborts {
            let (service, kind) = (label(service), label(kind));
            let _ = writeln!(out, "{name}{{service=\"{service}\",kind=\"{kind}\"}} {n}");
        }
    }
    let mut put = |name: &str, kind: &str, help: &str, value: f64| {
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    put(
        "vmsdb_ready",
        "gauge",
        "1 when the runtime has recovered and accepts requests.",
        f64::from(u8::from(server.ready)),
    );
    put(
        "vmsdb_status_table_entries",
        "gauge",
        "Fire-and-forget requests in the status table (pending and settled).",
        server.status_table_entries as f64,
    );
    put(
        "vmsdb_pending_submissions",
        "gauge",
        "Fire-and-forget submissions still waiting for their outcome.",
        server.pending_submissions as f64,
    );
    if let Some(r) = recovery {
        put(
            "vmsdb_recovery_rows_loaded",
            "gauge",
            "Rows loaded from the checkpoint at start-up.",
            r.rows_loaded as f64,
        );
        put(
            "vmsdb_recovery_epochs_replayed",
            "gauge",
            "Logged epochs replayed at start-up.",
            r.epochs_replayed as f64,
        );
        put(
            "vmsdb_recovery_seconds",
            "gauge",
            "Wall time of recovery at start-up.",
            r.duration.as_secs_f64(),
        );
    }
    let Some(s) = stats else { return out };
    let counters: [(&str, &str, u64); 11] = [
        ("vmsdb_epochs_total", "Epochs run.", s.epochs),
        (
            "vmsdb_committed_total",
            "Transactions committed.",
            s.committed,
        ),
        (
            "vmsdb_aborted_user_total",
            "Transactions aborted by a handler (business rules, constraints, limits).",
            s.user_aborted,
        ),
        (
            "vmsdb_conflicts_total",
            "Conflict losses in the parallel pass (each re-run serially or retried).",
            s.conflicts,
        ),
        (
            "vmsdb_fallback_total",
            "Transactions run in the serial pass (conflict losers and hinted).",
            s.fallback,
        ),
        (
            "vmsdb_serial_hinted_total",
            "Transactions a serial hint sent straight to the serial pass.",
            s.serial_hinted,
        ),
        (
            "vmsdb_checkpoints_started_total",
            "Checkpoints handed to storage.",
            s.checkpoints_started,
        ),
        (
            "vmsdb_checkpoints_completed_total",
            "Checkpoints completed.",
            s.checkpoints_completed,
        ),
        (
            "vmsdb_log_appends_total",
            "Durable log writes (each one fsync).",
            s.log_appends,
        ),
        (
            "vmsdb_log_epochs_total",
            "Epoch records written to the log.",
            s.log_epochs,
        ),
        (
            "vmsdb_log_bytes_total",
            "Encoded bytes written to the log.",
            s.log_bytes,
        ),
    ];
    for (name, help, value) in counters {
        put(name, "counter", help, value as f64);
    }
    put(
        "vmsdb_log_append_seconds_total",
        "counter",
        "Time spent writing the log, fsync included.",
        s.log_append_nanos as f64 / 1e9,
    );
    put(
        "vmsdb_last_checkpoint_rows",
        "gauge",
        "Rows of the last completed checkpoint.",
        s.last_checkpoint_rows as f64,
    );
    put(
        "vmsdb_last_checkpoint_seconds",
        "gauge",
        "Wall time of the last completed checkpoint.",
        s.last_checkpoint_micros as f64 / 1e6,
    );
    out
}

/// A label value escaped as the text format wants (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
