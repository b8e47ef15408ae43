//! Results: the per-system summary (also written as `summary.json`) and the terminal table.

use crate::driver::fmt_count;
use crate::metrics::{AbortCategory, Recorder};
use crate::usage::{DriveUsage, ProcessUsage};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Everything one system measured, before summarising.
pub struct SystemRun {
    pub name: &'static str,
    pub recorder: Recorder,
    pub elapsed: Duration,
    pub violations: services::Violations,
    pub load: LoadSummary,
    pub runtime_stats: Option<RuntimeStatsSummary>,
    pub storage: String,
    /// A baseline whose violations are expected and reported as anomalies (the eventual
    /// baseline): they do not fail the run.
    pub anomalies_expected: bool,
    /// What the harness process used while this system was driven (`None`: not measured, as
    /// for a baseline whose work runs in other processes).
    pub usage: Option<DriveUsage>,
}

/// How the initial data was loaded.
#[derive(Clone, Debug, Serialize)]
pub struct LoadSummary {
    pub description: String,
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
}

impl LoadSummary {
    /// `requests` load requests described by `description`, done in `seconds`.
    pub fn new(description: String, requests: u64, seconds: f64) -> Self {
        LoadSummary {
            description,
            requests,
            seconds,
            requests_per_s: requests as f64 / seconds.max(1e-9),
        }
    }
}

/// The transaction layer's own counters over the measured run (the load excluded).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RuntimeStatsSummary {
    pub epochs: u64,
    pub committed: u64,
    pub user_aborted: u64,
    /// Transactions that lost a conflict in an epoch's parallel pass.
    pub conflict_losers: u64,
    /// Transactions run in the serial pass: conflict losers plus hinted ones.
    pub fallback_runs: u64,
    /// Transactions the serial hints sent straight to the serial pass (skipping the parallel
    /// pass, where they were predicted to lose a conflict).
    pub serial_hinted: u64,
    /// Transactions sequenced per epoch.
    pub txns_per_epoch: f64,
    /// Conflict losers / transactions executed in the parallel pass.
    pub conflict_rate: f64,
    /// `conflict_rate` in percent.
    pub conflict_losers_pct: f64,
    /// Serial-pass runs (losers and hinted) in percent of the transactions sequenced.
    pub serial_pass_pct: f64,
    /// Epochs whose serial pass borrowed every partition from its actor (a lend round: one
    /// `Lend` and one `Return` message per partition), and the mean wall time of a round, µs.
    pub serial_lends: u64,
    pub serial_lend_us_mean: f64,
    /// Conflict losses by `service.table` over the measured run, with the hottest keys.
    pub conflicts_by_table: BTreeMap<String, TableConflictSummary>,
    /// The pipeline's worst moments over the measured run (`txn::runtime::LatencyPeaks`).
    pub peaks: Option<PeaksSummary>,
    /// Where an epoch's time goes, stage by stage, as means per epoch.
    pub stages: StagesSummary,
}

/// The epoch pipeline's stages as means per epoch, in µs (a log append and a reply wait per
/// append and per reply batch). The sequencer runs gather, execute, decide, commit and serial
/// pass one after another; the log append runs on its own thread meanwhile, and the replies of
/// an epoch wait for it after the epoch has run (`reply_durable_wait_us`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct StagesSummary {
    /// Waiting for an epoch's first request with nothing queued (every client waits for a
    /// reply).
    pub gather_idle_us: f64,
    /// Collecting the rest of the epoch until it closes (`epoch_duration` or `epoch_txns_max`).
    pub gather_fill_us: f64,
    /// The part of the fill after the epoch's last request arrived (waiting for the timer).
    pub gather_tail_us: f64,
    pub execute_us: f64,
    pub decide_us: f64,
    pub commit_us: f64,
    /// The serial pass, lending the partitions included.
    pub serial_pass_us: f64,
    /// The sequencer's whole turn: from an epoch closing to the next gather.
    pub turn_us: f64,
    /// One durable log append (encode, write, fsync), and how many epochs one holds.
    pub log_append_us: f64,
    pub epochs_per_append: f64,
    /// Epochs closed early on a quiet submission queue, in percent of all.
    pub quiet_closes_pct: f64,
    /// Epochs closed because they held half of the requests outstanding, in percent of all.
    pub split_closes_pct: f64,
    /// How long an epoch's replies, once it has run, waited for it to be durable.
    pub reply_durable_wait_us: f64,
}

impl StagesSummary {
    pub fn new(d: &txn::runtime::StatsSnapshot) -> Self {
        let per = |nanos: u64, n: u64| nanos as f64 / 1e3 / n.max(1) as f64;
        StagesSummary {
            gather_idle_us: per(d.gather_idle_nanos, d.epochs),
            gather_fill_us: per(d.gather_fill_nanos, d.epochs),
            gather_tail_us: per(d.gather_tail_nanos, d.epochs),
            execute_us: per(d.execute_nanos, d.epochs),
            decide_us: per(d.decide_nanos, d.epochs),
            commit_us: per(d.commit_nanos, d.epochs),
            serial_pass_us: per(d.serial_pass_nanos, d.epochs),
            turn_us: per(d.turn_nanos, d.epochs),
            log_append_us: per(d.log_append_nanos, d.log_appends),
            epochs_per_append: d.log_epochs as f64 / d.log_appends.max(1) as f64,
            quiet_closes_pct: 100.0 * d.quiet_closes as f64 / d.epochs.max(1) as f64,
            split_closes_pct: 100.0 * d.split_closes as f64 / d.epochs.max(1) as f64,
            reply_durable_wait_us: per(d.reply_durable_wait_nanos, d.reply_batches),
        }
    }

    /// One line for the run's status output.
    pub fn line(&self, txns_per_epoch: f64) -> String {
        format!(
            "per epoch ({txns_per_epoch:.0} txns, {:.0} % closed on quiet, {:.0} % split): gather idle {:.0} + fill {:.0} µs (tail {:.0}), execute \
             {:.0}, decide {:.0}, commit {:.0}, serial pass {:.0} µs (turn {:.0} µs); log append \
             {:.0} µs for {:.2} epochs; replies wait {:.0} µs for durability",
            self.quiet_closes_pct,
            self.split_closes_pct,
            self.gather_idle_us,
            self.gather_fill_us,
            self.gather_tail_us,
            self.execute_us,
            self.decide_us,
            self.commit_us,
            self.serial_pass_us,
            self.turn_us,
            self.log_append_us,
            self.epochs_per_append,
            self.reply_durable_wait_us,
        )
    }
}

/// The pipeline's worst moments over a run, in ms: the slowest sequencer turn with where its
/// time went, the log append whose epoch waited longest, and the checkpoint's longest writes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeaksSummary {
    pub slowest_turn_epoch: u64,
    /// The slowest turn's epoch timestamp, ms after the measured run started (negative: before).
    pub slowest_turn_at_ms: i64,
    pub slowest_turn_ms: f64,
    pub slowest_turn_txns: u64,
    pub slowest_turn_log_queue_ms: f64,
    /// Execute, decide, commit, serial pass.
    pub slowest_turn_phases_ms: [f64; 4],
    pub slowest_turn_checkpoint_take_ms: f64,
    pub slowest_turn_checkpoint_writing: bool,
    pub slowest_log_wait_ms: f64,
    pub slowest_log_append_ms: f64,
    pub slowest_log_group_epochs: u64,
    pub slowest_log_group_bytes: u64,
    pub slowest_log_checkpoint_writing: bool,
    pub slowest_checkpoint_chunk_ms: f64,
    pub slowest_checkpoint_ms: f64,
}

impl PeaksSummary {
    /// `p` in ms, its turn's time given relative to `run_started_ms` (Unix ms).
    pub fn new(p: &txn::runtime::LatencyPeaks, run_started_ms: u64) -> Self {
        let (turn, log) = (&p.slowest_turn, &p.slowest_append);
        PeaksSummary {
            slowest_turn_epoch: turn.epoch,
            slowest_turn_at_ms: turn.timestamp_ms as i64 - run_started_ms as i64,
            slowest_turn_ms: ms(turn.turn_nanos),
            slowest_turn_txns: turn.txns,
            slowest_turn_log_queue_ms: ms(turn.log_queue_nanos),
            slowest_turn_phases_ms: turn.phase_nanos.map(ms),
            slowest_turn_checkpoint_take_ms: ms(turn.checkpoint_take_nanos),
            slowest_turn_checkpoint_writing: turn.checkpoint_writing,
            slowest_log_wait_ms: ms(log.wait_nanos),
            slowest_log_append_ms: ms(log.append_nanos),
            slowest_log_group_epochs: log.epochs,
            slowest_log_group_bytes: log.bytes,
            slowest_log_checkpoint_writing: log.checkpoint_writing,
            slowest_checkpoint_chunk_ms: ms(p.slowest_checkpoint_chunk_nanos),
            slowest_checkpoint_ms: ms(p.slowest_checkpoint_nanos),
        }
    }
}

/// The conflict losses one table caused (see `txn::runtime::TableConflicts`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableConflictSummary {
    /// Transactions the table's rows made lose (once per partition they lost in).
    pub losers: u64,
    /// The hottest keys, most losses first (exact since each key was admitted to the bounded
    /// list, so lower bounds).
    pub hot_keys: Vec<HotKey>,
}

/// One hot key of a table.
#[derive(Clone, Debug, Serialize)]
pub struct HotKey {
    /// The key's `Debug` text.
    pub key: String,
    pub losers: u64,
}

impl From<&txn::runtime::TableConflicts> for TableConflictSummary {
    fn from(t: &txn::runtime::TableConflicts) -> Self {
        TableConflictSummary {
            losers: t.losers,
            hot_keys: t
                .hot_keys
                .iter()
                .map(|(key, losers)| HotKey {
                    key: key.clone(),
                    losers: *losers,
                })
                .collect(),
        }
    }
}

/// Latency and counts of one operation type.
#[derive(Clone, Debug, Serialize)]
pub struct TypeSummary {
    pub committed: u64,
    pub aborted: u64,
    pub errors: u64,
    pub throughput_tps: f64,
    pub aborted_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Aborts grouped by the aborting service and the reason's kind, sorted by both.
    pub aborts_by_reason: Vec<AbortCount>,
}

/// How many aborts one category counted.
#[derive(Clone, Debug, Serialize)]
pub struct AbortCount {
    #[serde(flatten)]
    pub category: AbortCategory,
    pub count: u64,
}

/// The abort counts of `aborts`, sorted by category.
fn abort_counts(aborts: &[(AbortCategory, u64)]) -> Vec<AbortCount> {
    let mut counts: Vec<AbortCount> = aborts
        .iter()
        .map(|(category, count)| AbortCount {
            category: category.clone(),
            count: *count,
        })
        .collect();
    counts.sort_by(|a, b| a.category.cmp(&b.category));
    counts
}

/// One system's results, as written to `summary.json`.
#[derive(Clone, Debug, Serialize)]
pub struct SystemSummary {
    pub committed: u64,
    pub aborted: u64,
    pub errors: u64,
    pub elapsed_s: f64,
    pub throughput_tps: f64,
    pub aborted_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The second of the run (from 0) in which the slowest committed operation completed.
    pub max_at_second: usize,
    pub mean_ms: f64,
    /// Violations per consistency criterion (0 expected everywhere but where
    /// `anomalies_expected`).
    pub violations: BTreeMap<String, u64>,
    /// Violations here are the baseline's expected anomalies, not failures (eventual).
    pub anomalies_expected: bool,
    /// Open loop (`--rate`): arrivals skipped because all `--clients` slots were in flight
    /// (the system fell behind the rate); always 0 in closed loop.
    pub late_arrivals: u64,
    /// This system's throughput divided by each baseline's.
    pub ratio_to: BTreeMap<String, f64>,
    pub per_type: BTreeMap<String, TypeSummary>,
    /// Committed operations completed in each second of the run (the last one is partial).
    pub committed_per_second: Vec<u64>,
    pub aborted_per_second: Vec<u64>,
    /// The slowest committed operation completed in each second of the run, ms.
    pub max_latency_ms_per_second: Vec<f64>,
    pub load: LoadSummary,
    pub storage: String,
    pub runtime_stats: Option<RuntimeStatsSummary>,
    pub first_error: Option<String>,
    /// CPU time, allocations and peak memory of the harness process during the drive.
    pub usage: Option<DriveUsage>,
}

/// The run's report.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub workload: String,
    pub parameters: serde_json::Value,
    pub run: serde_json::Value,
    /// System names in the order they ran (vmsdb first).
    pub order: Vec<String>,
    pub systems: BTreeMap<String, SystemSummary>,
    /// The workload's operation type names, by index (`Recorder::types[i]` is `op_types[i]`);
    /// for the HTML report's per-type plots, not written to `summary.json`.
    #[serde(skip)]
    pub op_types: Vec<String>,
    /// Every system had 0 violations and 0 errors (systems with `anomalies_expected` excluded:
    /// their anomalies are reported, not failed on).
    pub passed: bool,
    /// Peak memory and CPU time of the whole invocation, read when the summary is made.
    pub process: ProcessUsage,
    /// The multi-node run (`--nodes`): how many nodes, the network bytes per transaction, the
    /// failover; absent without `--nodes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSummary>,
}

/// What a run on several `vmsdb node` processes measured beyond the other systems' figures.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterSummary {
    /// Node processes started (`--nodes`).
    pub nodes: u32,
    /// The system's name in `systems` (`vmsdb-N-nodes`).
    pub system: String,
    /// Link bytes (every frame between nodes, counted once: forwarded batches and their
    /// answers, forwarded queries, announcements, epoch phase batches) during the measured
    /// run, and per committed transaction.
    pub link_bytes: u64,
    pub link_messages: u64,
    pub network_bytes_per_txn: f64,
    /// The nodes' store lease, seconds: the bound of a sequencer failover.
    pub lease_ttl_s: f64,
    /// Which consistency checks ran, and through what.
    pub audit: String,
    /// The node killed mid-run (`--kill-node-at`), if any.
    pub kill: Option<KillSummary>,
    /// `spread` (`--spread-partitions`: every node hosts partitions) or `active-standby` (the
    /// sequencer runs every partition).
    pub placement: &'static str,
    /// With the partitions spread: how many each node hosted in the sequencer's last placement.
    pub partitions_per_node: BTreeMap<String, u32>,
}

/// A node SIGKILLed mid-run and what the clients saw.
#[derive(Clone, Debug, Serialize)]
pub struct KillSummary {
    /// The node killed, and whether it was the sequencer then.
    pub node: String,
    pub was_sequencer: bool,
    /// Seconds into the measured run.
    pub at_s: f64,
    /// Kill → first commit acknowledged for a request first sent after the kill (`null`: none
    /// came).
    pub failover_s: Option<f64>,
    /// Answers `outcome_unknown` (each resubmitted with the same id), and every resubmission.
    pub outcome_unknown: u64,
    pub resubmitted: u64,
    /// Kill → the restarted node answering `/ready` again (`null`: it did not).
    pub rejoined_s: Option<f64>,
}

impl ClusterSummary {
    /// The terminal lines about the multi-node run.
    fn lines(&self) -> String {
        let mut out = format!(
            "\n[{}] {} node processes ({} placement{}), one PostgreSQL store (lease {:.1} s): \
             {} link bytes in {} messages, {:.0} bytes per committed transaction; audit: {}\n",
            self.system,
            self.nodes,
            self.placement,
            placement_counts(&self.partitions_per_node),
            self.lease_ttl_s,
            fmt_count(self.link_bytes),
            fmt_count(self.link_messages),
            self.network_bytes_per_txn,
            self.audit
        );
        if let Some(k) = &self.kill {
            let seconds = |s: Option<f64>| s.map_or("never".to_string(), |s| format!("{s:.2} s"));
            let _ = writeln!(
                out,
                "  killed {}{} at {:.1} s: failover (kill → first commit sent after it) {}, \
                 {} outcome_unknown, {} resubmissions by id, rejoined after {}",
                k.node,
                if k.was_sequencer {
                    " (the sequencer)"
                } else {
                    ""
                },
                k.at_s,
                seconds(k.failover_s),
                fmt_count(k.outcome_unknown),
                fmt_count(k.resubmitted),
                seconds(k.rejoined_s)
            );
        }
        out
    }
}

/// `: n1 3, n2 5, ...` (partitions per node), or nothing.
pub(crate) fn placement_counts(per_node: &BTreeMap<String, u32>) -> String {
    let counts: Vec<String> = per_node.iter().map(|(n, c)| format!("{n} {c}")).collect();
    if counts.is_empty() {
        String::new()
    } else {
        format!(": {}", counts.join(", "))
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The second whose slowest operation was the slowest of the run (the first such; 0 if none).
/// The per-second cost lines: CPU per committed transaction and resident memory in each
/// second, so a cost that grows over a run shows apart from the machine's load.
fn per_second_usage_lines(u: &DriveUsage, committed_per_second: &[u64]) -> String {
    let cpu: Vec<String> = u
        .per_second
        .cpu_ms
        .iter()
        .zip(committed_per_second)
        .map(|(ms, n)| format!("{:.0}", ms * 1e3 / (*n).max(1) as f64))
        .collect();
    let rss: Vec<String> = u
        .per_second
        .rss_mib
        .iter()
        .map(|m| format!("{m:.0}"))
        .collect();
    format!(
        "  cpu µs/txn per second: {}\n  resident MiB per second: {}\n",
        cpu.join(" "),
        rss.join(" ")
    )
}

fn worst_second(max_per_second: &[u64]) -> usize {
    let worst = max_per_second.iter().copied().max().unwrap_or(0);
    max_per_second.iter().position(|m| *m == worst).unwrap_or(0)
}

impl SystemSummary {
    fn from_run(run: &SystemRun, op_types: &[&str]) -> Self {
        let secs = run.elapsed.as_secs_f64().max(1e-9);
        let rec = &run.recorder;
        let all = rec.all_latency();
        let mut per_type = BTreeMap::new();
        let mut first_error = None;
        for (name, t) in op_types.iter().zip(&rec.types) {
            if t.committed + t.aborted + t.errors == 0 {
                continue;
            }
            first_error = first_error.or_else(|| t.first_error.clone());
            per_type.insert(
                (*name).to_string(),
                TypeSummary {
                    committed: t.committed,
                    aborted: t.aborted,
                    errors: t.errors,
                    throughput_tps: t.committed as f64 / secs,
                    aborted_per_s: t.aborted as f64 / secs,
                    p50_ms: ms(t.latency_ns.value_at_quantile(0.50)),
                    p90_ms: ms(t.latency_ns.value_at_quantile(0.90)),
                    p99_ms: ms(t.latency_ns.value_at_quantile(0.99)),
                    max_ms: ms(t.latency_ns.max()),
                    aborts_by_reason: abort_counts(&t.aborts),
                },
            );
        }
        SystemSummary {
            committed: rec.committed(),
            aborted: rec.aborted(),
            errors: rec.errors(),
            elapsed_s: secs,
            throughput_tps: rec.committed() as f64 / secs,
            aborted_per_s: rec.aborted() as f64 / secs,
            p50_ms: ms(all.value_at_quantile(0.50)),
            p90_ms: ms(all.value_at_quantile(0.90)),
            p99_ms: ms(all.value_at_quantile(0.99)),
            p999_ms: ms(all.value_at_quantile(0.999)),
            max_ms: ms(all.max()),
            max_at_second: worst_second(&rec.max_latency_ns_per_s),
            mean_ms: all.mean() / 1e6,
            violations: run
                .violations
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect(),
            anomalies_expected: run.anomalies_expected,
            late_arrivals: rec.late,
            ratio_to: BTreeMap::new(),
            per_type,
            committed_per_second: rec.committed_per_s.clone(),
            aborted_per_second: rec.aborted_per_s.clone(),
            max_latency_ms_per_second: rec.max_latency_ns_per_s.iter().map(|n| ms(*n)).collect(),
            load: run.load.clone(),
            storage: run.storage.clone(),
            runtime_stats: run.runtime_stats.clone(),
            first_error,
            usage: run.usage.clone(),
        }
    }

    pub fn n_violations(&self) -> u64 {
        self.violations.values().sum()
    }
}

impl Summary {
    /// Summarises the runs; every run after the first is a baseline the others are compared to.
    pub fn new(
        workload: &str,
        parameters: serde_json::Value,
        run: serde_json::Value,
        op_types: &[&str],
        runs: &[SystemRun],
    ) -> Self {
        let mut systems: BTreeMap<String, SystemSummary> = runs
            .iter()
            .map(|r| (r.name.to_string(), SystemSummary::from_run(r, op_types)))
            .collect();
        let baselines: Vec<(String, f64)> = runs
            .iter()
            .skip(1)
            .map(|r| (r.name.to_string(), systems[r.name].throughput_tps))
            .collect();
        for s in systems.values_mut() {
            for (b, tps) in &baselines {
                s.ratio_to.insert(
                    b.clone(),
                    if *tps > 0.0 {
                        s.throughput_tps / tps
                    } else {
                        f64::NAN
                    },
                );
            }
        }
        let passed = systems
            .values()
            .filter(|s| !s.anomalies_expected)
            .all(|s| s.n_violations() == 0 && s.errors == 0);
        Summary {
            workload: workload.to_string(),
            parameters,
            run,
            order: runs.iter().map(|r| r.name.to_string()).collect(),
            systems,
            op_types: op_types.iter().map(|t| (*t).to_string()).collect(),
            passed,
            process: ProcessUsage::now(),
            cluster: None,
        }
    }

    /// The terminal report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let baselines: Vec<&String> = self.order.iter().skip(1).collect();
        let _ = write!(
            out,
            "\n{:<8} {:>12} {:>10} {:>12} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "system",
            "committed",
            "aborted",
            "txn/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "violations"
        );
        for b in &baselines {
            let _ = write!(out, " {:>10}", format!("vs {b}"));
        }
        out.push('\n');
        for name in &self.order {
            let s = &self.systems[name];
            let _ = write!(
                out,
                "{:<8} {:>12} {:>10} {:>12} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10}",
                name,
                fmt_count(s.committed),
                fmt_count(s.aborted),
                fmt_count(s.throughput_tps as u64),
                s.p50_ms,
                s.p90_ms,
                s.p99_ms,
                s.max_ms,
                s.n_violations()
            );
            for b in &baselines {
                let _ = write!(out, " {:>9.2}x", s.ratio_to[*b]);
            }
            out.push('\n');
        }
        for name in &self.order {
            let s = &self.systems[name];
            let _ = writeln!(
                out,
                "\n[{name}] storage {}, load: {} in {:.2} s ({} req/s)",
                s.storage,
                s.load.description,
                s.load.seconds,
                fmt_count(s.load.requests_per_s as u64)
            );
            if s.per_type.len() > 1 {
                for (ty, t) in &s.per_type {
                    let _ = writeln!(
                        out,
                        "  {ty:<10} committed {:>10}  aborted {:>9}  {:>10} txn/s  p50 {:.2} ms  p99 {:.2} ms",
                        fmt_count(t.committed),
                        fmt_count(t.aborted),
                        fmt_count(t.throughput_tps as u64),
                        t.p50_ms,
                        t.p99_ms
                    );
                }
            }
            for (ty, t) in &s.per_type {
                for AbortCount { category, count } in &t.aborts_by_reason {
                    let _ = writeln!(
                        out,
                        "  aborted {ty} ({category}): {} ({:.0}/s)",
                        fmt_count(*count),
                        *count as f64 / s.elapsed_s
                    );
                }
            }
            if let Some(rs) = &s.runtime_stats {
                let _ = writeln!(
                    out,
                    "  epochs {}  ({:.0} txns/epoch)  conflict losers {} ({:.2} % of the parallel pass)  serial hints {}  serial-pass runs {}",
                    fmt_count(rs.epochs),
                    rs.txns_per_epoch,
                    fmt_count(rs.conflict_losers),
                    rs.conflict_rate * 100.0,
                    fmt_count(rs.serial_hinted),
                    fmt_count(rs.fallback_runs)
                );
                if let Some(p) = &rs.peaks {
                    let [execute, decide, commit, serial] = p.slowest_turn_phases_ms;
                    let _ = writeln!(
                        out,
                        "  slowest epoch turn {:.1} ms (epoch {} at {:.1} s, {} txns: log queue {:.1}, execute {:.1}, decide {:.1}, commit {:.1}, serial {:.1}, checkpoint take {:.1} ms; checkpoint in flight {})",
                        p.slowest_turn_ms,
                        p.slowest_turn_epoch,
                        p.slowest_turn_at_ms as f64 / 1e3,
                        p.slowest_turn_txns,
                        p.slowest_turn_log_queue_ms,
                        execute,
                        decide,
                        commit,
                        serial,
                        p.slowest_turn_checkpoint_take_ms,
                        p.slowest_turn_checkpoint_writing
                    );
                    let _ = writeln!(
                        out,
                        "  slowest log wait {:.1} ms (append {:.1} ms, {} epochs, {} bytes; checkpoint writing {})  slowest checkpoint {:.0} ms (longest chunk write {:.1} ms)",
                        p.slowest_log_wait_ms,
                        p.slowest_log_append_ms,
                        p.slowest_log_group_epochs,
                        fmt_count(p.slowest_log_group_bytes),
                        p.slowest_log_checkpoint_writing,
                        p.slowest_checkpoint_ms,
                        p.slowest_checkpoint_chunk_ms
                    );
                }
                for (table, t) in &rs.conflicts_by_table {
                    let hot: Vec<String> = t
                        .hot_keys
                        .iter()
                        .map(|h| format!("{}×{}", h.key, fmt_count(h.losers)))
                        .collect();
                    let _ = writeln!(
                        out,
                        "  conflicts on {table}: {} losers; hottest keys {}",
                        fmt_count(t.losers),
                        hot.join(" ")
                    );
                }
            }
            if let Some(u) = &s.usage {
                let allocations = u
                    .allocations_per_txn
                    .map_or(String::new(), |a| format!("  {a:.1} allocations/txn"));
                let _ = writeln!(
                    out,
                    "  cpu {:.2} s ({:.1} µs/txn){allocations}  peak RSS so far {:.1} MiB",
                    u.cpu_s,
                    u.cpu_us_per_txn,
                    u.peak_rss_bytes as f64 / (1024.0 * 1024.0)
                );
            }
            let checks: Vec<String> = s
                .violations
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if s.anomalies_expected {
                let _ = writeln!(
                    out,
                    "  anomalies (no transaction layer; expected, not failing the run): {} in all: {}",
                    fmt_count(s.n_violations()),
                    checks.join("  ")
                );
            } else {
                let _ = writeln!(out, "  consistency: {}", checks.join("  "));
            }
            if s.errors > 0 {
                let _ = writeln!(
                    out,
                    "  ERRORS: {} (first: {})",
                    s.errors,
                    s.first_error.as_deref().unwrap_or("?")
                );
            }
            let series: Vec<String> = s
                .committed_per_second
                .iter()
                .map(|n| fmt_count(*n))
                .collect();
            let _ = writeln!(out, "  committed per second: {}", series.join(" "));
            if let Some(u) = s.usage.as_ref().filter(|u| !u.per_second.cpu_ms.is_empty()) {
                out.push_str(&per_second_usage_lines(u, &s.committed_per_second));
            }
            let slowest: Vec<String> = s
                .max_latency_ms_per_second
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect();
            let _ = writeln!(
                out,
                "  latency p99.9 {:.2} ms, max {:.2} ms in second {}; slowest per second (ms): {}",
                s.p999_ms,
                s.max_ms,
                s.max_at_second,
                slowest.join(" ")
            );
        }
        if let Some(cluster) = &self.cluster {
            out.push_str(&cluster.lines());
        }
        let _ = writeln!(
            out,
            "\nprocess: peak RSS {:.1} MiB, cpu {:.2} s",
            self.process.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            self.process.cpu_s
        );
        let _ = writeln!(
            out,
            "\n{}",
            if self.passed {
                if self.systems.values().any(|s| s.anomalies_expected) {
                    "all consistency checks passed (baseline anomalies above are expected)"
                } else {
                    "all consistency checks passed"
                }
            } else {
                "CONSISTENCY VIOLATIONS OR ERRORS FOUND"
            }
        );
        out
    }
}
