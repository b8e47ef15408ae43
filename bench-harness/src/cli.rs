//! The command line: one subcommand per workload, shared run options, and value parsers that
//! reject bad values with a message naming the allowed range.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Drives a vmsdb workload closed-loop, measures it, checks its consistency and runs
/// baselines on the same workload in the same invocation.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "bench-harness",
    version,
    about = "Benchmark vmsdb: drive a workload, measure it, check consistency, compare baselines",
    long_about = "Benchmark vmsdb: drive a workload closed-loop (N clients, each submits one \
request and waits for its durable outcome), measure committed/aborted throughput and latency \
percentiles, check the workload's consistency criteria at the end (violations are counted per \
criterion; anything but 0 is a bug), and run baselines on the same workload.\n\n\
Results: a summary table on stdout and <out>/summary.json. The exit code is 0 when every \
system's checks passed (the eventual baseline's anomalies are reported but expected, so they \
do not count), 1 when a violation or an error was found, 2 on bad arguments.",
    after_help = "Examples:\n  \
bench-harness transfer --duration 10s --accounts 1000000 --compare eventual,serial\n  \
bench-harness transfer --duration 10s --zipf 0.99 --compare serial\n  \
bench-harness ycsb --duration 10s --keys 1000000 --zipf 0.99 --compare serial"
)]
pub struct Cli {
    #[command(subcommand)]
    pub workload: WorkloadCmd,
}

/// The workloads.
#[derive(Subcommand, Debug, Clone)]
pub enum WorkloadCmd {
    /// Streaming-Ledger transfers: 4-row transfers (source account and asset entry must stay at
    /// or above a minimum, else the transfer aborts), optional deposits and balance lookups.
    /// Checks: totals change only by deposits, nothing negative, no lost or phantom rows.
    Transfer(TransferCmd),
    /// YCSB-T: each transaction reads and increments k keys of one table, touching several
    /// partitions. Checks: sum of values = k × committed, nothing negative, no lost rows.
    Ycsb(YcsbCmd),
    /// Online Marketplace: checkout, seller dashboard, price update, update product and update
    /// delivery over eight services, each business transaction one transaction. Checks the seven
    /// criteria of docs/workloads.md (atomic checkouts, stock, replicas, dashboard, totals, money).
    Marketplace(MarketplaceCmd),
    /// Print a workload application's coordination report (Markdown): every declared delta
    /// use with its invariant and verdict (confluent, escrow, coordinated). Runs nothing.
    Explain(crate::explain::ExplainArgs),
    /// The durability tests (`crash-test`, `corruption-test`); not workloads, run by `main`.
    #[command(flatten)]
    Durability(crate::crash::DurabilityCmd),
}

impl WorkloadCmd {
    /// The options every workload shares.
    ///
    /// # Panics
    /// For the durability tests and `explain`, which are not workloads (`main` runs them).
    pub fn common(&self) -> &CommonArgs {
        match self {
            WorkloadCmd::Transfer(c) => &c.common,
            WorkloadCmd::Ycsb(c) => &c.common,
            WorkloadCmd::Marketplace(c) => &c.common,
            WorkloadCmd::Durability(_) => panic!("the durability tests have no workload options"),
            WorkloadCmd::Explain(_) => panic!("explain has no workload options"),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct TransferCmd {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Args, Debug, Clone)]
pub struct YcsbCmd {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub ycsb: YcsbArgs,
}

#[derive(Args, Debug, Clone)]
pub struct MarketplaceCmd {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub marketplace: crate::workloads::marketplace::MarketplaceArgs,
}

/// Options of every workload.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// How long to drive each system (vmsdb and every baseline), e.g. 30s, 500ms, 2m, 1.5s.
    /// A bare number is seconds.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Concurrent closed-loop clients for vmsdb. Each has one request in flight and submits
    /// the next when its outcome arrives; hundreds are needed to fill epochs.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub clients: u32,

    /// Closed loop: clients that submit together, as one batch (vmsdb: one
    /// `Client::submit_many`), each submitting its next request when its group's outcomes are
    /// all in. 1 submits every request alone.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub submit_batch: u32,

    /// Open loop instead of closed loop: submit this many operations per second at fixed
    /// intervals, whether or not earlier ones have completed (latency is measured from each
    /// operation's scheduled time, so a system that falls behind shows it). At most --clients
    /// operations are in flight; an operation that finds no free slot is counted as `late`.
    /// The serial baseline always runs closed loop (one thread, it cannot take arrivals).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub rate: Option<u64>,

    /// Zipf skew θ of key choice, in [0, 1). 0 is uniform; 0.99 is the classic hot-spot
    /// setting (the hottest key gets ≈ 7 % of draws over a million keys).
    #[arg(long, default_value_t = 0.0, value_parser = parse_theta)]
    pub zipf: f64,

    /// Partitions per service (each partition is one actor; the ledger has two services).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub partitions: u32,

    /// Epoch duration in microseconds: how long an epoch collects requests after its first
    /// one. Longer epochs batch more and add latency.
    #[arg(long, default_value_t = txn::limits::EPOCH_DURATION_US_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..=txn::limits::EPOCH_DURATION_US_MAX))]
    pub epoch_us: u64,

    /// Most transactions sequenced into one epoch (an epoch closes when it is full or its time
    /// is up).
    #[arg(long, default_value_t = txn::limits::EPOCH_TXNS_MAX_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(1..=txn::limits::EPOCH_TXNS_MAX as u64))]
    pub epoch_txns_max: u64,

    /// An epoch holding at least this many requests closes before its time is up once the
    /// submission queue goes quiet (`RuntimeConfig::epoch_quiet_close_txns`); 0 closes epochs
    /// only by time or size.
    #[arg(long, default_value_t = txn::limits::EPOCH_QUIET_CLOSE_TXNS_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(0..=txn::limits::EPOCH_TXNS_MAX as u64))]
    pub epoch_quiet_close: u64,

    /// An epoch holding at least this many requests closes once it holds half of the requests
    /// outstanding, so a closed loop's clients split over two overlapping epochs
    /// (`RuntimeConfig::epoch_split_txns`); 0 turns it off.
    #[arg(long, default_value_t = txn::limits::EPOCH_SPLIT_TXNS_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(0..=txn::limits::EPOCH_TXNS_MAX as u64))]
    pub epoch_split: u64,

    /// Whether outcomes leave as soon as they are decided, the serial pass's while it runs
    /// (`RuntimeConfig::early_replies`); `false` (the default) holds every reply to its epoch's end.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub early_replies: bool,

    /// What happens to transactions that lose a conflict: re-run serially at the end of the
    /// epoch, re-run at the end of the epoch ordered per partition (in parallel where their
    /// partitions are disjoint), or retried first in the next epoch.
    #[arg(long, value_enum, default_value_t = FallbackArg::Serial)]
    pub fallback: FallbackArg,

    /// Serial hints: send requests of a kind whose recent conflict-loss rate in the parallel
    /// pass is at least this straight to the serial pass (they skip the parallel execution
    /// they would most likely waste). 0 turns the hints off. Only with `--fallback serial` or
    /// `--fallback ordered`.
    #[arg(long, default_value_t = 0.6, value_parser = parse_hint_threshold)]
    pub serial_hint_threshold: f64,

    /// Baselines to run after vmsdb on the same workload and data, comma-separated, e.g.
    /// `--compare eventual,serial`. `serial`: one thread, in memory, no durability, each request
    /// run to completion. `eventual`: the same services wired by asynchronous events without the
    /// transaction layer (each step commits on its own, queries are not snapshots), driven by
    /// the same clients; its consistency violations are reported as anomalies and do not fail
    /// the run. `postgres`: the same transactions on a private PostgreSQL instance the harness
    /// starts in a temporary directory (SERIALIZABLE, retried on serialization failures,
    /// synchronous commit on); needs the PostgreSQL server binaries (`initdb`, `pg_ctl`), e.g.
    /// `apt-get install -y postgresql`.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub compare: Vec<Baseline>,

    /// Also drive the workload through `vmsdb serve`'s HTTP API (the server started
    /// in-process on a free loopback port, in a temporary data directory; requests batched into
    /// `POST /v1/batch`), reported as the system `vmsdb-http` next to the in-process vmsdb.
    #[arg(long)]
    pub over_http: bool,

    /// Also run the workload on N `vmsdb node` processes on this machine (N ≥ 2), sharing one
    /// private PostgreSQL store the harness starts; clients go to every node's HTTP API in
    /// turn. Reported as the system `vmsdb-N-nodes`, with the link bytes per transaction.
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=16))]
    pub nodes: Option<u32>,

    /// The `vmsdb` executable for `--nodes` [default: `vmsdb` next to this executable].
    #[arg(long, value_name = "PATH")]
    pub vmsdb_bin: Option<PathBuf>,

    /// With `--nodes`: SIGKILL one node this long into the measured run, restart it a few
    /// seconds later, and report the failover time (kill → first commit of a request sent
    /// after it) and the requests answered `outcome_unknown` and resubmitted by id.
    #[arg(long, value_parser = parse_duration, requires = "nodes")]
    pub kill_node_at: Option<Duration>,

    /// The node `--kill-node-at` kills: `sequencer` (the store's lease holder at the time) or
    /// a node name (`n1`, `n2`, ...).
    #[arg(long, default_value = "sequencer", requires = "kill_node_at")]
    pub kill_node: String,

    /// With `--nodes`: start the nodes with `--spread-partitions`, so every node hosts some of
    /// the partitions and the sequencer sends it each epoch phase as one batch (the link bytes
    /// then include the phase batches). Without it the sequencer runs every partition and the
    /// other nodes forward to it.
    #[arg(long, requires = "nodes")]
    pub spread_partitions: bool,

    /// Connections the postgres baseline opens; clients queue for a free connection.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pg_connections: u32,

    /// Where vmsdb keeps its epoch log and checkpoints. `memory` is not durable; `embedded` is
    /// the embedded durable store (`txn::storage::EmbeddedStorage`, fsync per epoch) under
    /// --data-dir.
    #[arg(long, value_enum, default_value_t = StorageArg::Embedded)]
    pub storage: StorageArg,

    /// Data directory for a durable --storage; a fresh temporary directory (deleted at exit)
    /// when not given. Must be empty or absent: the runtime would replay what it holds.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Epochs between incremental checkpoints of vmsdb's state; 0 never checkpoints (recovery
    /// would replay the whole log). A checkpoint after a large load writes every loaded row.
    #[arg(long, default_value_t = txn::limits::CHECKPOINT_EVERY_EPOCHS_DEFAULT)]
    pub checkpoint_every: u64,

    /// Bounds the embedded vmsdb's checkpoint duty cycle (`RuntimeConfig::checkpoint_rest_factor`):
    /// a checkpoint falls due only once K times the previous one's write time has passed since
    /// it completed, as well as --checkpoint-every epochs. 0 checkpoints by epochs alone.
    #[arg(long, value_name = "K", default_value_t = txn::limits::CHECKPOINT_REST_FACTOR_DEFAULT)]
    pub checkpoint_rest_factor: u32,

    /// How many nice steps the embedded vmsdb's checkpoint thread lowers its CPU priority by
    /// (`RuntimeConfig::checkpoint_nice`, Linux; on a store whose checkpoints have their own
    /// writer, as the embedded one): the checkpoint then uses the CPU the epoch workers leave
    /// instead of taking a core from them. 0 keeps the process's priority (the old behaviour).
    #[arg(long, value_name = "N", default_value_t = txn::limits::CHECKPOINT_NICE_DEFAULT,
          value_parser = clap::value_parser!(u8).range(0..=i64::from(txn::limits::CHECKPOINT_NICE_MAX)))]
    pub checkpoint_nice: u8,

    /// How much of vmsdb's epoch log is kept for provenance (`txn::history`): `none` lets
    /// checkpoints truncate it, `everything` keeps it whole (`Retention::Everything`).
    #[arg(long, value_enum, default_value_t = HistoryRetentionArg::None)]
    pub history_retention: HistoryRetentionArg,

    /// Output directory for summary.json; default bench-out/<workload>.
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Worker threads of the tokio runtime that hosts vmsdb and the clients.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: u16,

    /// Requests in flight while loading the initial data.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub load_clients: u32,

    /// Seed of every random choice (data and requests), for repeatable runs.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// No progress bar and no status lines on stderr (the summary is still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Options of the transfer workload.
#[derive(Args, Debug, Clone)]
pub struct TransferArgs {
    /// Accounts, and as many asset-ledger entries, opened by the loader.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000_000))]
    pub accounts: u64,

    /// Balance (and entry value) every account and entry starts with.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000_000_000))]
    pub initial_balance: i64,

    /// Transfers move a uniform amount in 1..=max-amount.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1_000_000_000))]
    pub max_amount: i64,

    /// A transfer must leave the source account and entry at or above this.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    pub min_balance: i64,

    /// Percentage of requests that are deposits (1 account + 1 entry).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub deposit_pct: u8,

    /// Percentage of requests that are balance lookups (read-only snapshot queries).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub lookup_pct: u8,
}

/// Options of the YCSB-T workload.
#[derive(Args, Debug, Clone)]
pub struct YcsbArgs {
    /// Rows in the table.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub keys: u64,

    /// Keys each transaction reads and increments (distinct; at most --keys).
    #[arg(short = 'k', long = "keys-per-txn", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub keys_per_txn: u32,

    /// Rows per insert request while loading.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub load_batch: u32,
}

/// Baseline systems.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// Single-threaded in-memory executor, no durability (`txn::SerialExecutor`).
    Serial,
    /// The same services wired by async events without the transaction layer
    /// (`txn::EventualRuntime`); its anomalies are reported, not failed on.
    Eventual,
    /// The same transactions on a private PostgreSQL instance at SERIALIZABLE isolation, with
    /// retries on serialization failure and synchronous commit on.
    Postgres,
}

impl Baseline {
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Serial => "serial",
            Baseline::Eventual => "eventual",
            Baseline::Postgres => "postgres",
        }
    }

    /// Whether consistency violations are expected of this baseline (reported, not failed on).
    pub fn anomalies_expected(self) -> bool {
        matches!(self, Baseline::Eventual)
    }
}

/// Storage backends for vmsdb.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageArg {
    /// In memory, not durable (the log is kept but lost at exit).
    Memory,
    /// The embedded durable store in --data-dir, one fsync'd append per epoch.
    Embedded,
}

/// `RuntimeConfig::history_retention`, as a flag.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryRetentionArg {
    /// No history: checkpoints truncate the log below themselves.
    None,
    /// `Retention::Everything`: the whole log is kept.
    Everything,
}

/// `txn::Fallback`, as a flag.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallbackArg {
    /// Re-run conflict losers one by one right after the epoch's commit.
    Serial,
    /// Retry conflict losers first in the next epoch.
    NextEpoch,
    /// Re-run conflict losers right after the commit, each partition taking them in TID order,
    /// in parallel where their partitions are disjoint.
    Ordered,
}

/// Parses a `humantime` duration (`30s`, `500ms`, `2m`, `1m 30s`, `100us`) or a bare number
/// of seconds (`1.5`); must be > 0 and at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    // humantime requires a unit; bare seconds stay accepted for existing scripts.
    let bare_seconds = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let duration = if bare_seconds {
        let seconds: f64 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a number of seconds"))?;
        Duration::from_secs_f64(seconds)
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 30s, 500ms, 2m"))?
    };
    if duration.is_zero() || duration > DURATION_MAX {
        return Err(format!(
            "duration {s} must be more than 0 and at most {}",
            humantime::format_duration(DURATION_MAX)
        ));
    }
    Ok(duration)
}

/// The longest run `--duration` accepts.
const DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

/// Parses a serial-hint threshold in [0, 1] (0: off).
pub fn parse_hint_threshold(s: &str) -> Result<f64, String> {
    let t: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number; use e.g. 0.6, or 0 to turn hints off"))?;
    if !(0.0..=1.0).contains(&t) {
        return Err(format!("threshold {s} is outside [0, 1]"));
    }
    Ok(t)
}

/// Parses a Zipf θ in [0, 1).
pub fn parse_theta(s: &str) -> Result<f64, String> {
    let theta: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number; θ must be in [0, 1), e.g. 0.99"))?;
    if !(0.0..1.0).contains(&theta) {
        return Err(format!(
            "θ = {s} is outside [0, 1): the Zipf generator needs θ < 1 (use 0 for uniform, 0.99 for heavy skew)"
        ));
    }
    Ok(theta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_nonsense() {
        // Goal: the documented duration forms parse; zero, negative and unknown units fail.
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        for bad in ["0s", "-1s", "10 parsecs", "s", "", "2d", "1e3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bad_flags_are_rejected_with_clear_errors() {
        // Goal: out-of-range values fail at parse time, naming the problem.
        let err = Cli::try_parse_from(["bench-harness", "ycsb", "--zipf", "1.0"]).unwrap_err();
        assert!(err.to_string().contains("outside [0, 1)"), "{err}");
        let err = Cli::try_parse_from(["bench-harness", "transfer", "--clients", "0"]).unwrap_err();
        assert!(err.to_string().contains("--clients"), "{err}");
        let err =
            Cli::try_parse_from(["bench-harness", "transfer", "--compare", "oracle"]).unwrap_err();
        assert!(
            err.to_string().contains("serial"),
            "possible values are listed: {err}"
        );
        let err =
            Cli::try_parse_from(["bench-harness", "transfer", "--epoch-us", "20000"]).unwrap_err();
        assert!(err.to_string().contains("--epoch-us"), "{err}");
        assert!(Cli::try_parse_from(["bench-harness", "transfer", "--keys", "5"]).is_err());
        let ok = Cli::try_parse_from([
            "bench-harness",
            "ycsb",
            "--duration",
            "1s",
            "--zipf",
            "0.99",
            "-k",
            "8",
            "--compare",
            "serial",
        ])
        .unwrap();
        assert_eq!(ok.workload.common().compare, vec![Baseline::Serial]);
        let both =
            Cli::try_parse_from(["bench-harness", "transfer", "--compare", "eventual,serial"])
                .unwrap();
        assert_eq!(
            both.workload.common().compare,
            vec![Baseline::Eventual, Baseline::Serial]
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        // Goal: clap's own checks of the command definition pass (every flag has help, etc.).
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
