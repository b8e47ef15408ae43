//! The crash test and the corruption test: durability shown end to end, with one command each.
//!
//! `bench-harness crash-test` runs the crash workload ([`app`]) in a child process (the same
//! binary, hidden subcommand `crash-child`), kills it with SIGKILL at chosen moments — at random
//! while epochs run, right after a checkpoint began, during start-up recovery — and restarts it
//! on the same data directory each time. After the last kill it recovers the store in-process
//! and checks ([`verify`]):
//!
//! 1. every acknowledged transaction is present;
//! 2. no transaction is half applied (each one writes three services or none);
//! 3. the workload's invariants hold, and resubmitting acknowledged request ids returns their
//!    original outcome without executing them again (exactly-once across crashes);
//! 4. the recovered state hash equals a crash-free replay of the whole log.
//!
//! Then it damages copies of the store ([`corruption`]) and shows that opening or recovering
//! them is refused with an error naming what is wrong, never silently replayed.
//! `bench-harness corruption-test` runs the damage scenarios alone.
//!
//! Files in the data directory (see [`files`]): `crash-run.json` (the run's parameters),
//! `store/` (the vmsdb store), `sent.log` and `acks.log` (what the children sent and what they
//! were told), `child-<life>.stderr`.
//!
//! Everything random derives from `--seed`, which is printed; the same seed replays the same
//! kill plan (the exact kill moments still depend on timing).

pub mod app;
pub mod child;
pub mod corruption;
pub mod files;
pub mod observed;
pub mod parent;
pub mod verify;

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The durability subcommands (flattened into the harness's command line).
#[derive(Subcommand, Debug, Clone)]
pub enum DurabilityCmd {
    /// Crash test: run the crash workload in a child process, SIGKILL it --kills times (at
    /// random, mid-checkpoint, during recovery), restart it on the same data directory, then
    /// check that (1) every acknowledged transaction is present, (2) none is half applied,
    /// (3) the invariants and exactly-once hold, (4) recovery equals a crash-free replay of the
    /// log. Then damage copies of the store and check that recovery refuses them. Exit code 0
    /// when every check passed, 1 otherwise, 2 on bad arguments.
    CrashTest(CrashTestArgs),
    /// Corruption test: flip bytes in / cut the tail of copies of a store and check that opening
    /// or recovering each copy is refused with an error naming the damage.
    CorruptionTest(CorruptionTestArgs),
    /// One life of the crash workload (started and killed by crash-test).
    #[command(hide = true)]
    CrashChild(CrashChildArgs),
}

/// Options of `crash-test`.
#[derive(Args, Debug, Clone)]
pub struct CrashTestArgs {
    /// How many times the child is killed with SIGKILL (and restarted).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub kills: u32,

    /// Seed of every random choice (kill plan, values, damage); a random one when not given.
    /// It is printed; pass it again to replay the plan.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Data directory (must be empty or absent); kept afterwards. Default: a temporary directory,
    /// deleted at exit unless --keep.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Keep the temporary data directory and print its path.
    #[arg(long)]
    pub keep: bool,

    /// Concurrent closed-loop clients in the child (each has one request in flight).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,

    /// Partitions of each of the three services.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub partitions: u32,

    /// Padding bytes in each row of service A: larger rows make checkpoints take longer, so
    /// kills land inside them.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=65_536))]
    pub pad_bytes: u32,

    /// Epochs between incremental checkpoints in the child.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub checkpoint_every: u64,

    /// Longest a child runs (after it reported ready) before a random kill, in milliseconds;
    /// random kills wait between an eighth of this and all of it.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u64).range(8..=600_000))]
    pub max_life_ms: u64,

    /// What happens to conflict losers in the child (the totals rows are contended): re-run
    /// serially in the same epoch, or retried in the next epoch (a retry is logged again, so a
    /// kill can separate a request's first epoch from its retry).
    #[arg(long, value_enum, default_value_t = crate::cli::FallbackArg::Serial)]
    pub fallback: crate::cli::FallbackArg,

    /// Skip the corruption scenarios at the end.
    #[arg(long)]
    pub no_corruption: bool,
}

/// Options of `corruption-test`.
#[derive(Args, Debug, Clone)]
pub struct CorruptionTestArgs {
    /// A data directory left by `crash-test --keep` (or `--data-dir`); it is only read. Default:
    /// a fresh store written by a short crash-workload run.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Seed of the random byte flips; a random one when not given (printed).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Options of the hidden `crash-child`.
#[derive(Args, Debug, Clone)]
pub struct CrashChildArgs {
    /// The crash-test data directory (holding crash-run.json).
    #[arg(long)]
    pub dir: PathBuf,

    /// Which life this is (1 for the first start); request ids of this life use it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=files::LIFE_MAX))]
    pub life: u64,
}

/// Runs a durability subcommand and returns the process exit code.
pub fn run(cmd: &DurabilityCmd) -> ExitCode {
    match cmd {
        DurabilityCmd::CrashTest(args) => parent::crash_test(args),
        DurabilityCmd::CorruptionTest(args) => corruption::corruption_test(args),
        DurabilityCmd::CrashChild(args) => child::crash_child(args),
    }
}

/// A seed from the clock, for runs that were not given one.
pub(crate) fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    app::mix(nanos ^ u64::from(std::process::id()))
}
