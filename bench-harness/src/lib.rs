//! vmsdb's bench harness: drives a workload closed-loop on vmsdb and on baselines, measures
//! throughput and latency, checks consistency, and reports.
//!
//! The flow of one invocation ([`run`]): build the workload → start vmsdb (tokio runtime with
//! `--worker-threads` workers, the chosen storage) → load the initial data through ordinary
//! concurrent requests → drive it for `--duration` → audit the final state at one snapshot →
//! shut down → the same on every `--compare` baseline → summary table and `summary.json`.
//!
//! Adding a workload means implementing [`Workload`] and a subcommand in [`cli`].

pub mod cli;
pub mod crash;
pub mod driver;
pub mod explain;
pub mod html;
pub mod limits;
pub mod metrics;
pub mod nodes;
pub mod over_http;
pub mod postgres;
pub mod progress;
pub mod report;
pub mod svg;
pub mod usage;
pub mod workload;
pub mod workloads;

pub use workload::{Effects, Op, Workload};

use cli::{Baseline, Cli, CommonArgs, FallbackArg, HistoryRetentionArg, StorageArg, WorkloadCmd};
use driver::{DriveConfig, drive_runtime, drive_serial, fmt_count};
use futures::FutureExt;
use progress::Ui;
use report::{LoadSummary, RuntimeStatsSummary, Summary, SystemRun};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use txn::storage::{EmbeddedStorage, MemoryStorage, Storage};
use txn::{EventualRuntime, Fallback, Runtime, RuntimeConfig, SerialExecutor, TxnError};

/// Why a run could not produce results.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    #[error("vmsdb failed: {0}")]
    Txn(#[from] TxnError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("loading the initial data failed: {0}")]
    Load(String),
    #[error("cannot write results: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the command and returns the summary (also printed and written to `<out>/summary.json`).
pub fn run(cli: Cli) -> Result<Summary, HarnessError> {
    if let WorkloadCmd::Durability(_) | WorkloadCmd::Explain(_) = &cli.workload {
        return Err(HarnessError::InvalidArgs(
            "crash-test, corruption-test and explain run through `main`, not `run`".into(),
        ));
    }
    let common = cli.workload.common().clone();
    match &cli.workload {
        WorkloadCmd::Transfer(c) => run_workload(
            workloads::transfer::TransferWorkload::new(&c.common, &c.transfer)?,
            &common,
        ),
        WorkloadCmd::Ycsb(c) => run_workload(
            workloads::ycsb::YcsbWorkload::new(&c.common, &c.ycsb)?,
            &common,
        ),
        WorkloadCmd::Marketplace(c) => run_workload(
            workloads::marketplace::MarketplaceWorkload::new(&c.common, &c.marketplace)?,
            &common,
        ),
        WorkloadCmd::Durability(_) | WorkloadCmd::Explain(_) => unreachable!("refused above"),
    }
}

/// Runs one workload on vmsdb and every requested baseline.
pub fn run_workload<W: postgres::PgWorkload>(
    w: W,
    common: &CommonArgs,
) -> Result<Summary, HarnessError> {
    let ui = Ui::new(common.quiet);
    // Fail before spending a run on vmsdb if a requested baseline cannot run here.
    if common.compare.contains(&Baseline::Postgres) {
        postgres::instance::find_binaries()?;
    }
    let w = Arc::new(w);
    let out_dir = common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("bench-out").join(w.name()));
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(common.worker_threads))
        .enable_all()
        .build()?;
    let mut runs = vec![tokio.block_on(run_vmsdb(w.clone(), common, ui))?];
    if common.over_http {
        runs.push(tokio.block_on(over_http::run(w.clone(), common, ui))?);
    }
    for baseline in dedup(&common.compare) {
        match baseline {
            Baseline::Serial => runs.push(run_serial(&*w, common, ui)?),
            Baseline::Eventual => runs.push(tokio.block_on(run_eventual(w.clone(), common, ui))?),
            Baseline::Postgres => {
                runs.push(tokio.block_on(postgres::run(w.clone(), common, ui))?)
            }
        }
    }
    // Last: it catches Ctrl-C (to stop its processes), and tokio keeps that handler installed
    // for the rest of the process.
    let mut cluster = None;
    if let Some(n) = common.nodes {
        let (run, summary) = tokio.block_on(nodes::run(w.clone(), common, ui, n))?;
        runs.push(run);
        cluster = Some(summary);
    }
    drop(tokio);
    let mut summary = Summary::new(
        w.name(),
        w.parameters(),
        run_parameters(common),
        w.op_types(),
        &runs,
    );
    summary.cluster = cluster;
    print!("{}", summary.table());
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).expect("summary serializes"),
    )?;
    ui.status(format!("wrote {}", path.display()));
    let path = out_dir.join("report.html");
    std::fs::write(&path, html::render(&summary, &runs))?;
    ui.status(format!("wrote {}", path.display()));
    Ok(summary)
}

fn dedup(baselines: &[Baseline]) -> Vec<Baseline> {
    let mut out: Vec<Baseline> = Vec::new();
    for b in baselines {
        if !out.contains(b) {
            out.push(*b);
        }
    }
    out
}

/// How the async systems are driven (closed loop with `--clients`, or open loop at `--rate`).
pub fn drive_config(common: &CommonArgs) -> DriveConfig {
    DriveConfig {
        duration: common.duration,
        clients: common.clients,
        driver_tasks: usize::from(common.worker_threads) * 2,
        submit_batch: common.submit_batch as usize,
        rate: common.rate,
    }
}

/// The status line's description of the drive.
fn driving(common: &CommonArgs) -> String {
    match common.rate {
        None => format!(
            "driving {} closed-loop clients for {}",
            common.clients,
            humantime::format_duration(common.duration)
        ),
        Some(rate) => format!(
            "open loop at {} ops/s (at most {} in flight) for {}",
            fmt_count(rate),
            common.clients,
            humantime::format_duration(common.duration)
        ),
    }
}

/// Says how many open-loop arrivals found every slot busy (the system fell behind the rate).
pub(crate) fn warn_late(ui: Ui, name: &str, driven: &driver::Driven) {
    if driven.recorder.late > 0 {
        ui.status(format!(
            "{name}: {} arrivals were skipped: all --clients slots were in flight (the system \
             could not keep up with --rate)",
            fmt_count(driven.recorder.late)
        ));
    }
}

fn run_parameters(c: &CommonArgs) -> serde_json::Value {
    serde_json::json!({
        "duration_s": c.duration.as_secs_f64(),
        "clients": c.clients,
        "submit_batch": c.submit_batch,
        "rate_ops_per_s": c.rate,
        "loop": if c.rate.is_some() { "open" } else { "closed" },
        "partitions": c.partitions,
        "zipf_theta": c.zipf,
        "epoch_us": c.epoch_us,
        "epoch_txns_max": c.epoch_txns_max,
        "epoch_quiet_close": c.epoch_quiet_close,
        "epoch_split": c.epoch_split,
        "early_replies": c.early_replies,
        "checkpoint_every_epochs": c.checkpoint_every,
        "embedded_checkpoint_rest_factor": c.checkpoint_rest_factor,
        "embedded_checkpoint_nice": c.checkpoint_nice,
        "history_retention": format!("{:?}", c.history_retention),
        "fallback": format!("{:?}", c.fallback),
        "serial_hint_threshold": c.serial_hint_threshold,
        "storage": format!("{:?}", c.storage),
        "worker_threads": c.worker_threads,
        "seed": c.seed,
        "nodes": c.nodes,
    })
}

/// The storage for vmsdb, and the temporary directory that must outlive it (if any).
fn open_storage(
    common: &CommonArgs,
) -> Result<(Arc<dyn Storage>, Option<tempfile::TempDir>), HarnessError> {
    // `--storage` is the seam for the embedded durable default: once it is settled, the default
    // flips from `memory` to it and nothing else here changes.
    let dir = |name: &str| -> Result<(PathBuf, Option<tempfile::TempDir>), HarnessError> {
        match &common.data_dir {
            Some(d) => {
                let non_empty = d
                    .read_dir()
                    .map(|mut it| it.next().is_some())
                    .unwrap_or(false);
                if non_empty {
                    return Err(HarnessError::InvalidArgs(format!(
                        "--data-dir {} is not empty: vmsdb would replay its log into the benchmark",
                        d.display()
                    )));
                }
                Ok((d.clone(), None))
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix(&format!("vmsdb-bench-{name}-"))
                    .tempdir()?;
                Ok((t.path().to_path_buf(), Some(t)))
            }
        }
    };
    Ok(match common.storage {
        StorageArg::Memory => (Arc::new(MemoryStorage::new()), None),
        StorageArg::Embedded => {
            let (path, tmp) = dir("embedded")?;
            let s =
                EmbeddedStorage::open(&path).map_err(|e| HarnessError::Storage(e.to_string()))?;
            (Arc::new(s), tmp)
        }
    })
}

pub(crate) fn effects_of(rec: &metrics::Recorder) -> Effects {
    Effects {
        committed: rec.types.iter().map(|t| t.committed).collect(),
        effect: rec.types.iter().map(|t| t.effect).collect(),
    }
}

/// The embedded vmsdb run's runtime configuration, from the common flags, on `storage`.
fn runtime_config(common: &CommonArgs, storage: Arc<dyn Storage>) -> RuntimeConfig {
    // `..RuntimeConfig::in_memory()` keeps this compiling while txn's config grows new fields;
    // they take their defaults.
    #[allow(clippy::needless_update)]
    RuntimeConfig {
        epoch_duration: Duration::from_micros(common.epoch_us),
        epoch_txns_max: common.epoch_txns_max as usize,
        epoch_quiet_close_txns: common.epoch_quiet_close as usize,
        epoch_split_txns: common.epoch_split as usize,
        early_replies: common.early_replies,
        fallback: match common.fallback {
            FallbackArg::Serial => Fallback::Serial,
            FallbackArg::NextEpoch => Fallback::NextEpoch,
            FallbackArg::Ordered => Fallback::Ordered,
        },
        storage,
        checkpoint_every_epochs: common.checkpoint_every,
        checkpoint_rest_factor: common.checkpoint_rest_factor,
        checkpoint_nice: common.checkpoint_nice,
        history_retention: match common.history_retention {
            HistoryRetentionArg::None => None,
            HistoryRetentionArg::Everything => Some(txn::Retention::Everything),
        },
        serial_hints: if common.serial_hint_threshold > 0.0 {
            txn::SerialHints::Adaptive {
                threshold: common.serial_hint_threshold,
            }
        } else {
            txn::SerialHints::Off
        },
        ..RuntimeConfig::in_memory()
    }
}

async fn run_vmsdb<W: Workload>(
    w: Arc<W>,
    common: &CommonArgs,
    ui: Ui,
) -> Result<SystemRun, HarnessError> {
    let (storage, _tmp) = open_storage(common)?;
    let storage_name = storage.name().to_string();
    let config = runtime_config(common, storage);
    let rt = Runtime::start(w.app().clone(), config).await?;
    let client = rt.client();

    // Load through ordinary concurrent requests.
    let n_load = w.n_load();
    ui.status(format!(
        "vmsdb: loading {} ({} requests)",
        w.load_description(),
        fmt_count(n_load as u64)
    ));
    let bar = ui.load_bar("vmsdb", n_load as u64);
    let loaded = Arc::new(AtomicU64::new(0));
    let ticker = bar.is_visible().then(|| {
        let (bar, loaded) = (bar.clone_handle(), loaded.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                bar.set_position(loaded.load(Ordering::Relaxed));
            }
        })
    });
    let load_w = w.clone();
    let load_counter = loaded.clone();
    let report =
        services::load::submit_all(&client, n_load, common.load_clients as usize, move |i| {
            load_counter.fetch_add(1, Ordering::Relaxed);
            load_w.load_request(i)
        })
        .await?;
    if let Some(t) = ticker {
        t.abort();
    }
    bar.finish();
    if report.n_aborted > 0 {
        return Err(HarnessError::Load(format!(
            "{} of {n_load} load requests aborted; first: {}",
            report.n_aborted,
            report
                .first_abort
                .map(|r| r.to_string())
                .unwrap_or_default()
        )));
    }
    let load = LoadSummary::new(
        w.load_description(),
        n_load as u64,
        report.elapsed.as_secs_f64(),
    );
    ui.status(format!(
        "vmsdb: loaded in {:.2} s ({} req/s); {}",
        load.seconds,
        fmt_count(load.requests_per_s as u64),
        driving(common)
    ));

    let before = rt.stats().snapshot();
    let conflicts_before = rt.conflict_stats().await?;
    // The load's peaks are not the run's.
    rt.stats().take_peaks();
    let run_started_ms = unix_ms();
    let progress = ui.run_bar("vmsdb", common.duration);
    let sample = usage::Sample::now();
    let driven = drive_runtime(w.clone(), client.clone(), drive_config(common), &progress).await;
    let usage = sample.usage_since(driven.recorder.committed());
    warn_late(ui, "vmsdb", &driven);
    let conflicts = rt.conflict_stats().await?.since(&conflicts_before);
    let mut runtime_stats =
        runtime_stats_summary(rt.stats().snapshot().since(&before), Some(&conflicts));
    let peaks = rt.stats().take_peaks();
    runtime_stats.peaks = Some(report::PeaksSummary::new(&peaks, run_started_ms));
    let stages = &runtime_stats.stages;
    ui.status(format!(
        "vmsdb: {}",
        stages.line(runtime_stats.txns_per_epoch)
    ));

    ui.status("vmsdb: checking consistency");
    let violations = w.audit(&client, &effects_of(&driven.recorder)).await?;
    rt.shutdown().await;
    Ok(SystemRun {
        name: "vmsdb",
        recorder: driven.recorder,
        elapsed: driven.elapsed,
        violations,
        load,
        runtime_stats: Some(runtime_stats),
        storage: storage_name,
        anomalies_expected: false,
        usage: Some(usage),
    })
}

/// Wall-clock time in ms since the Unix epoch (the clock epoch timestamps are taken from).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The runtime's counters over a run, summarised.
pub(crate) fn runtime_stats_summary(
    d: txn::runtime::StatsSnapshot,
    conflicts: Option<&txn::runtime::ConflictStats>,
) -> RuntimeStatsSummary {
    // Every sequenced transaction ends committed or aborted once (the serial pass settles
    // losers and hinted ones); all but the hinted ones ran in the parallel pass first.
    let sequenced = d.committed + d.user_aborted;
    let executed = sequenced.saturating_sub(d.serial_hinted);
    RuntimeStatsSummary {
        epochs: d.epochs,
        committed: d.committed,
        user_aborted: d.user_aborted,
        conflict_losers: d.conflicts,
        fallback_runs: d.fallback,
        serial_hinted: d.serial_hinted,
        txns_per_epoch: sequenced as f64 / d.epochs.max(1) as f64,
        conflict_rate: d.conflicts as f64 / executed.max(1) as f64,
        conflict_losers_pct: 100.0 * d.conflicts as f64 / executed.max(1) as f64,
        serial_pass_pct: 100.0 * d.fallback as f64 / sequenced.max(1) as f64,
        serial_lends: d.serial_lends,
        serial_lend_us_mean: d.serial_lend_nanos as f64 / 1e3 / d.serial_lends.max(1) as f64,
        stages: report::StagesSummary::new(&d),
        conflicts_by_table: conflicts
            .map(|c| {
                c.by_table
                    .iter()
                    .map(|(name, t)| (name.clone(), t.into()))
                    .collect()
            })
            .unwrap_or_default(),
        peaks: None,
    }
}

/// The eventual baseline: the same app without the transaction layer, loaded and driven like
/// vmsdb (same clients and generators, concurrent tasks on the same tokio runtime), audited once
/// every chain has completed. Its violations are its anomalies.
async fn run_eventual<W: Workload>(
    w: Arc<W>,
    common: &CommonArgs,
    ui: Ui,
) -> Result<SystemRun, HarnessError> {
    use futures::StreamExt;
    let name = Baseline::Eventual.name();
    // The durable mode follows `--storage`: with the embedded store, each step's writes are
    // fsync'd (group commit) before its events are delivered and its client is answered, like
    // the state stores of the Orleans/Dapr implementations; with `memory` nothing is logged. The
    // store gets its own empty directory: a temporary one, or one inside `--data-dir` (which
    // holds vmsdb's store by now) so it sits on the disk the user chose.
    let (rt, storage_desc, _dirs) = match common.storage {
        StorageArg::Memory => (
            EventualRuntime::start(w.app().clone()),
            "none (in memory, no transaction layer, not durable)".to_string(),
            None,
        ),
        StorageArg::Embedded => {
            let own = match &common.data_dir {
                Some(d) => Some(tempfile::Builder::new().prefix("eventual-").tempdir_in(d)?),
                None => None,
            };
            let args = CommonArgs {
                data_dir: own.as_ref().map(|t| t.path().to_path_buf()),
                ..common.clone()
            };
            let (storage, tmp) = open_storage(&args)?;
            let desc = format!(
                "{} (each step's writes fsync'd in group commits before its events are \
                 delivered), no transaction layer",
                storage.name()
            );
            let rt = EventualRuntime::start_durable(w.app().clone(), storage)?;
            (rt, desc, Some((tmp, own)))
        }
    };
    let rt = Arc::new(rt);
    let n_load = w.n_load();
    ui.status(format!("{name}: loading {}", w.load_description()));
    let bar = ui.load_bar(name, n_load as u64);
    let start = Instant::now();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut next = 0usize;
    let mut done = 0u64;
    let submit = |i: usize| {
        let (rt, r) = (rt.clone(), w.load_request(i));
        async move { (i, rt.submit_request(r).await.map(|o| o.map(|_| ()))) }
    };
    while next < n_load.min(common.load_clients as usize) {
        in_flight.push(submit(next));
        next += 1;
    }
    while let Some((i, result)) = in_flight.next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                return Err(HarnessError::Load(format!(
                    "{name} load request {i} aborted: {reason}"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        done += 1;
        if done.is_multiple_of(4096) {
            bar.set_position(done);
        }
        if next < n_load {
            in_flight.push(submit(next));
            next += 1;
        }
    }
    bar.finish();
    let seconds = start.elapsed().as_secs_f64();
    let load = LoadSummary::new(w.load_description(), n_load as u64, seconds);
    ui.status(format!(
        "{name}: loaded in {seconds:.2} s ({} req/s); {}",
        fmt_count(load.requests_per_s as u64),
        driving(common)
    ));
    let progress = ui.run_bar(name, common.duration);
    let sample = usage::Sample::now();
    let driven = drive_runtime(w.clone(), rt.clone(), drive_config(common), &progress).await;
    let usage = sample.usage_since(driven.recorder.committed());
    warn_late(ui, name, &driven);
    // Every client waited for its chain to complete, so no step is queued any more: the audit
    // reads a quiescent state.
    ui.status(format!("{name}: checking consistency (anomalies expected)"));
    let violations = w.audit_local(&*rt, &effects_of(&driven.recorder)).await;
    if let Some(s) = rt.durability_stats() {
        ui.status(format!(
            "{name}: {} steps (load included), {} waited for {} group commits ({:.1} steps, \
             {:.1} KB, {:.2} ms per append)",
            fmt_count(s.steps),
            fmt_count(s.held_steps),
            fmt_count(s.appends),
            s.held_steps as f64 / s.appends.max(1) as f64,
            s.bytes as f64 / 1024.0 / s.appends.max(1) as f64,
            s.append_nanos as f64 / 1e6 / s.appends.max(1) as f64,
        ));
    }
    // Waits for the log writer to let go of the store before its directory is removed.
    if let Ok(rt) = Arc::try_unwrap(rt) {
        rt.shutdown().await;
    }
    Ok(SystemRun {
        name,
        recorder: driven.recorder,
        elapsed: driven.elapsed,
        violations,
        load,
        runtime_stats: None,
        storage: storage_desc,
        anomalies_expected: Baseline::Eventual.anomalies_expected(),
        usage: Some(usage),
    })
}

fn run_serial<W: Workload>(w: &W, common: &CommonArgs, ui: Ui) -> Result<SystemRun, HarnessError> {
    let mut exec = SerialExecutor::new(w.app().clone());
    let n_load = w.n_load();
    ui.status(format!("serial: loading {}", w.load_description()));
    let start = Instant::now();
    for i in 0..n_load {
        let r = w.load_request(i);
        if let Err(reason) = exec.run_request(r, 0) {
            return Err(HarnessError::Load(format!(
                "serial load request {i} aborted: {reason}"
            )));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let load = LoadSummary::new(w.load_description(), n_load as u64, seconds);
    ui.status(format!(
        "serial: loaded in {seconds:.2} s; driving 1 client for {}",
        humantime::format_duration(common.duration)
    ));
    let progress = ui.run_bar("serial", common.duration);
    let sample = usage::Sample::now();
    let driven = drive_serial(w, &mut exec, common.duration, &progress);
    let usage = sample.usage_since(driven.recorder.committed());
    ui.status("serial: checking consistency");
    let audit = w
        .audit_local(&exec, &effects_of(&driven.recorder))
        .now_or_never();
    let violations = audit.expect("the serial executor answers queries at once");
    Ok(SystemRun {
        name: Baseline::Serial.name(),
        recorder: driven.recorder,
        elapsed: driven.elapsed,
        violations,
        load,
        runtime_stats: None,
        storage: "none (in memory, not durable)".into(),
        anomalies_expected: Baseline::Serial.anomalies_expected(),
        usage: Some(usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The common flags of `bench-harness transfer` with `extra` appended.
    fn common(extra: &[&str]) -> CommonArgs {
        let mut argv = vec!["bench-harness", "transfer"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv)
            .expect("the flags parse")
            .workload
            .common()
            .clone()
    }

    #[test]
    fn checkpoint_rest_factor_reaches_the_runtime_and_the_summary() {
        // Goal: `--checkpoint-rest-factor K` sets the embedded run's
        // `RuntimeConfig::checkpoint_rest_factor` and is listed with the run's parameters;
        // without it the runtime's default applies.
        let storage = || -> Arc<dyn Storage> { Arc::new(MemoryStorage::new()) };
        let default = common(&[]);
        assert_eq!(
            runtime_config(&default, storage()).checkpoint_rest_factor,
            txn::limits::CHECKPOINT_REST_FACTOR_DEFAULT
        );
        assert_eq!(
            run_parameters(&default)["embedded_checkpoint_rest_factor"],
            txn::limits::CHECKPOINT_REST_FACTOR_DEFAULT
        );
        for k in [0u32, 5] {
            let args = common(&["--checkpoint-rest-factor", &k.to_string()]);
            assert_eq!(runtime_config(&args, storage()).checkpoint_rest_factor, k);
            assert_eq!(run_parameters(&args)["embedded_checkpoint_rest_factor"], k);
        }
    }

    #[test]
    fn checkpoint_nice_reaches_the_runtime_and_the_summary() {
        // Goal: `--checkpoint-nice N` sets the embedded run's `RuntimeConfig::checkpoint_nice`
        // and is listed with the run's parameters; without it the runtime's default applies;
        // a value past Linux's range is refused when parsed.
        let storage = || -> Arc<dyn Storage> { Arc::new(MemoryStorage::new()) };
        let default = common(&[]);
        assert_eq!(
            runtime_config(&default, storage()).checkpoint_nice,
            txn::limits::CHECKPOINT_NICE_DEFAULT
        );
        assert_eq!(
            run_parameters(&default)["embedded_checkpoint_nice"],
            txn::limits::CHECKPOINT_NICE_DEFAULT
        );
        for n in [0u8, 19] {
            let args = common(&["--checkpoint-nice", &n.to_string()]);
            assert_eq!(runtime_config(&args, storage()).checkpoint_nice, n);
            assert_eq!(run_parameters(&args)["embedded_checkpoint_nice"], n);
        }
        let too_far = ["bench-harness", "transfer", "--checkpoint-nice", "20"];
        assert!(Cli::try_parse_from(too_far).is_err());
    }
}
