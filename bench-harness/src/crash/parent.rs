//! `crash-test`: starts the crash workload in a child process, SIGKILLs it at planned moments,
//! restarts it on the same data directory, and finally runs the checks of [`super::verify`] and
//! the damage scenarios of [`super::corruption`].
//!
//! # How kill moments are chosen
//!
//! The plan (one kind per kill) is drawn from the seed; the moment itself follows the child's
//! status lines:
//! - **mid-epoch**: a uniform delay in `[max_life/8, max_life]` after the child reported ready.
//!   Epochs last about a millisecond under load, so this lands inside one (executing, logging or
//!   replying).
//! - **mid-checkpoint**: after ready, wait for the next `ckpt_begin`, then kill after a uniform
//!   fraction of the last checkpoint's duration. The next recovery confirms it: its checkpoint
//!   is older than the one that had begun.
//! - **during start-up**: a uniform delay up to the previous life's time from spawn to ready:
//!   while redb repairs the file or recovery replays the log.

use super::CrashTestArgs;
use super::app::mix;
use super::files::{RunDir, RunParams};
use super::verify::{self, CheckResult};
use crate::driver::fmt_count;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A child that does not report ready within this long fails the test.
const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a mid-checkpoint kill waits for a checkpoint to begin before killing anyway.
const CHECKPOINT_WAIT_MAX: Duration = Duration::from_secs(30);

/// The kinds of kill moments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aim {
    MidEpoch,
    MidCheckpoint,
    DuringStartup,
}

/// Where one kill actually landed, as far as the child's lines tell.
#[derive(Clone, Debug)]
enum Landed {
    /// Before the store was open.
    Opening,
    /// While recovery ran.
    Recovering,
    /// After recovery, before the clients started.
    BeforeReady,
    /// While the checkpoint of `epoch` was being written (`ms` after it began).
    InCheckpoint { epoch: u64, ms: f64 },
    /// Just after the checkpoint of `epoch` completed (its `ckpt_done` came before the kill).
    JustAfterCheckpoint { epoch: u64 },
    /// While epochs ran, no checkpoint being written.
    MidEpoch,
}

impl Landed {
    fn describe(&self) -> String {
        match self {
            Landed::Opening => "while opening the store".into(),
            Landed::Recovering => "during recovery".into(),
            Landed::BeforeReady => "after recovery, before the clients started".into(),
            Landed::InCheckpoint { epoch, ms } => {
                format!("mid-checkpoint (checkpoint of epoch {epoch}, {ms:.1} ms into it)")
            }
            Landed::JustAfterCheckpoint { epoch } => {
                format!("just after checkpoint {epoch} completed")
            }
            Landed::MidEpoch => "mid-epoch".into(),
        }
    }

    /// A short form for the recovery table.
    fn short(&self) -> String {
        match self {
            Landed::InCheckpoint { epoch, ms } => {
                format!("mid-checkpoint {epoch} (+{ms:.1} ms)")
            }
            Landed::JustAfterCheckpoint { epoch } => format!("after checkpoint {epoch}"),
            Landed::Opening => "opening the store".into(),
            Landed::BeforeReady => "before the clients".into(),
            other => other.describe(),
        }
    }
}

/// What one life reported.
#[derive(Default, Debug)]
struct LifeLog {
    open_s: Option<f64>,
    recovered: Option<Recovered>,
    ready_after: Option<Duration>,
    pending: u64,
    resubmitted: Option<(u64, u64, u64)>,
    acked: u64,
    checkpoints_done: u64,
    /// The checkpoint being written: epoch and when its begin line arrived.
    open_checkpoint: Option<(u64, Instant)>,
    last_checkpoint_ms: Option<f64>,
    error: Option<String>,
}

/// What one recovery reported (a child's `recovered` line or a `RecoveryReport`).
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    pub checkpoint_epoch: Option<u64>,
    pub rows_loaded: u64,
    pub epochs_replayed: u64,
    pub dedup_entries: u64,
    pub seconds: f64,
}

impl LifeLog {
    fn take(&mut self, now: Instant, spawned: Instant, line: &str) {
        let mut words = line.split(' ');
        let tag = words.next().unwrap_or("");
        let field = |name: &str| -> Option<&str> {
            line.split(' ')
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        let num = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
        let float = |name: &str| field(name).and_then(|v| v.parse::<f64>().ok());
        match tag {
            "opened" => self.open_s = float("seconds"),
            "recovered" => {
                self.recovered = Some(Recovered {
                    checkpoint_epoch: num("checkpoint_epoch"),
                    rows_loaded: num("rows_loaded").unwrap_or(0),
                    epochs_replayed: num("epochs_replayed").unwrap_or(0),
                    dedup_entries: num("dedup_entries").unwrap_or(0),
                    seconds: float("seconds").unwrap_or(0.0),
                })
            }
            "ready" => {
                self.ready_after = Some(now - spawned);
                self.pending = num("pending").unwrap_or(0);
            }
            "resubmitted" => {
                self.resubmitted = Some((
                    num("n").unwrap_or(0),
                    num("deduplicated").unwrap_or(0),
                    num("executed").unwrap_or(0),
                ))
            }
            "ckpt_begin" => self.open_checkpoint = num("epoch").map(|e| (e, now)),
            "ckpt_done" => {
                self.open_checkpoint = None;
                self.checkpoints_done += 1;
                self.last_checkpoint_ms = float("ms");
            }
            "status" => self.acked = num("acked").unwrap_or(self.acked),
            "error" => self.error = Some(line["error ".len().min(line.len())..].to_string()),
            _ => {}
        }
    }

    fn landed(&self, at: Instant) -> Landed {
        if self.open_s.is_none() {
            Landed::Opening
        } else if self.recovered.is_none() {
            Landed::Recovering
        } else if self.ready_after.is_none() {
            Landed::BeforeReady
        } else if let Some((epoch, began)) = self.open_checkpoint {
            Landed::InCheckpoint {
                epoch,
                ms: at.saturating_duration_since(began).as_secs_f64() * 1e3,
            }
        } else {
            Landed::MidEpoch
        }
    }
}

/// One kill, for the summary.
struct KillRecord {
    life: u64,
    aim: Aim,
    landed: Landed,
    /// Filled in by the next recovery: whether the checkpoint that had begun was incomplete.
    confirmed_incomplete: Option<bool>,
    log: LifeLog,
    lived: Duration,
}

/// Runs the crash test; the exit code says whether every check passed.
pub fn crash_test(args: &CrashTestArgs) -> ExitCode {
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Args(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("crash-test FAILED: {e}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Args(String),
    Run(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Run(s)
    }
}

/// The data directory and, when it is temporary, its guard.
fn data_dir(args: &CrashTestArgs) -> Result<(PathBuf, Option<tempfile::TempDir>), Failure> {
    match &args.data_dir {
        Some(d) => {
            let non_empty = d
                .read_dir()
                .map(|mut it| it.next().is_some())
                .unwrap_or(false);
            if non_empty {
                return Err(Failure::Args(format!(
                    "--data-dir {} is not empty: the crash test needs a fresh directory",
                    d.display()
                )));
            }
            std::fs::create_dir_all(d)
                .map_err(|e| Failure::Args(format!("cannot create {}: {e}", d.display())))?;
            Ok((d.clone(), None))
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("vmsdb-crash-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

fn run(args: &CrashTestArgs) -> Result<bool, Failure> {
    let seed = args.seed.unwrap_or_else(super::fresh_seed);
    let (root, tmp) = data_dir(args)?;
    let dir = RunDir::new(&root);
    let params = RunParams {
        seed,
        clients: args.clients,
        partitions: args.partitions,
        pad_bytes: args.pad_bytes,
        checkpoint_every: args.checkpoint_every,
        next_epoch_fallback: args.fallback == crate::cli::FallbackArg::NextEpoch,
        ordered_fallback: args.fallback == crate::cli::FallbackArg::Ordered,
    };
    dir.write_params(&params)
        .map_err(|e| format!("cannot write the run parameters: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;

    println!("crash-test: seed {seed}");
    println!(
        "  replay: bench-harness crash-test --seed {seed} --kills {} --clients {} --partitions {} \
         --pad-bytes {} --checkpoint-every {} --max-life-ms {} --fallback {}",
        args.kills,
        args.clients,
        args.partitions,
        args.pad_bytes,
        args.checkpoint_every,
        args.max_life_ms,
        match args.fallback {
            crate::cli::FallbackArg::Serial => "serial",
            crate::cli::FallbackArg::NextEpoch => "next-epoch",
            crate::cli::FallbackArg::Ordered => "ordered",
        }
    );
    println!("  data dir: {}", root.display());
    println!(
        "  workload: {} clients in a child process, each request inserts one key into services \
         a -> b -> c (values divisible by 7 abort at c), {} partitions each, checkpoint every {} \
         epochs, log kept whole",
        args.clients, args.partitions, args.checkpoint_every
    );

    let plan = kill_plan(seed, args.kills);
    let mut rng = SmallRng::seed_from_u64(mix(seed ^ 0x6b69_6c6c));
    let max_life = Duration::from_millis(args.max_life_ms);
    let mut startup_estimate = Duration::from_millis(50);
    let mut checkpoint_ms_estimate: Option<f64> = None;
    let mut kills: Vec<KillRecord> = Vec::new();
    let started = Instant::now();
    for (i, aim) in plan.iter().copied().enumerate() {
        let life = i as u64 + 1;
        let record = run_life(
            &exe,
            &dir,
            life,
            aim,
            &mut rng,
            max_life,
            startup_estimate,
            checkpoint_ms_estimate,
        )?;
        if let Some(ready) = record.log.ready_after {
            startup_estimate = ready;
        }
        if let Some(ms) = record.log.last_checkpoint_ms {
            checkpoint_ms_estimate = Some(ms);
        }
        if let Some(previous) = kills.last_mut() {
            confirm(previous, record.log.recovered.as_ref());
        }
        print_life(args.kills, &record, kills.last());
        kills.push(record);
    }
    println!(
        "{} kills in {:.1} s; recovering the store a last time and checking it",
        kills.len(),
        started.elapsed().as_secs_f64()
    );

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))?;
    let verification = tokio.block_on(verify::verify(&dir, &params))?;
    if let Some(last) = kills.last_mut() {
        confirm(last, Some(&verification.recovered));
    }
    print_kill_summary(&kills);
    println!(
        "final recovery: {}",
        describe_recovery(&verification.recovered)
    );
    println!(
        "  crash-free replay of the whole log (RecoverFrom::LogStart): {} epochs in {:.3} s",
        fmt_count(verification.replay.epochs_replayed),
        verification.replay.seconds
    );
    for line in &verification.notes {
        println!("  {line}");
    }
    println!();
    let mut passed = true;
    for check in &verification.checks {
        print_check(check);
        passed &= check.passed;
    }

    if !args.no_corruption {
        println!();
        let corruption = tokio.block_on(super::corruption::scenarios(&dir, seed))?;
        passed &= corruption;
    }
    drop(tokio);

    println!();
    println!(
        "crash-test {}: seed {seed}",
        if passed { "PASSED" } else { "FAILED" }
    );
    match tmp {
        Some(t) if args.keep || !passed => {
            let kept = t.keep();
            println!("  data dir kept: {}", kept.display());
        }
        Some(_) => {}
        None => println!("  data dir: {}", root.display()),
    }
    Ok(passed)
}

/// The aim of each kill: about a third mid-checkpoint (at least one), a tenth during start-up
/// (never the first, which has nothing to recover), the rest mid-epoch, in a seeded order.
fn kill_plan(seed: u64, kills: u32) -> Vec<Aim> {
    let n = kills as usize;
    let n_checkpoint = (n * 35).div_ceil(100);
    let n_startup = n / 10;
    let mut plan = vec![Aim::MidEpoch; n];
    for (i, aim) in plan.iter_mut().enumerate() {
        if i < n_checkpoint {
            *aim = Aim::MidCheckpoint;
        } else if i < n_checkpoint + n_startup {
            *aim = Aim::DuringStartup;
        }
    }
    let mut rng = SmallRng::seed_from_u64(mix(seed ^ 0x706c_616e));
    plan.shuffle(&mut rng);
    if plan[0] == Aim::DuringStartup
        && let Some(j) = plan.iter().position(|a| *a != Aim::DuringStartup)
    {
        plan.swap(0, j);
    }
    plan
}

/// Starts life `life`, kills it as `aim` says, and returns what it reported.
#[allow(clippy::too_many_arguments)]
fn run_life(
    exe: &Path,
    dir: &RunDir,
    life: u64,
    aim: Aim,
    rng: &mut SmallRng,
    max_life: Duration,
    startup_estimate: Duration,
    checkpoint_ms_estimate: Option<f64>,
) -> Result<KillRecord, Failure> {
    let stderr = std::fs::File::create(dir.child_stderr(life))
        .map_err(|e| format!("cannot create the child's stderr file: {e}"))?;
    let spawned = Instant::now();
    let mut child = Command::new(exe)
        .arg("crash-child")
        .arg("--dir")
        .arg(&dir.root)
        .arg("--life")
        .arg(life.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });

    let mut log = LifeLog::default();
    let startup_deadline =
        (aim == Aim::DuringStartup).then(|| spawned + startup_estimate.mul_f64(rng.random()));
    let epoch_delay = max_life / 8 + (max_life - max_life / 8).mul_f64(rng.random());
    let checkpoint_fraction: f64 = rng.random();
    let mut deadline = startup_deadline.unwrap_or(spawned + READY_TIMEOUT);
    let mut waited_for_checkpoint_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok((at, line)) => {
                let was_ready = log.ready_after.is_some();
                let had_checkpoint = log.open_checkpoint.is_some();
                log.take(at, spawned, &line);
                if !was_ready && log.ready_after.is_some() && startup_deadline.is_none() {
                    deadline = match aim {
                        Aim::MidCheckpoint => {
                            waited_for_checkpoint_since = Some(at);
                            at + CHECKPOINT_WAIT_MAX
                        }
                        _ => at + epoch_delay,
                    };
                }
                if aim == Aim::MidCheckpoint
                    && waited_for_checkpoint_since.is_some()
                    && !had_checkpoint
                    && let Some((_, began)) = log.open_checkpoint
                {
                    // Kill after a random fraction of how long a checkpoint took last time.
                    let typical_ms = checkpoint_ms_estimate.unwrap_or(0.0);
                    deadline =
                        began + Duration::from_secs_f64(typical_ms * checkpoint_fraction / 1e3);
                    waited_for_checkpoint_since = None;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child
                    .wait()
                    .map_err(|e| format!("waiting for the child: {e}"))?;
                let _ = reader.join();
                return Err(Failure::Run(format!(
                    "the child (life {life}) exited by itself with {status}: {}\n  its stderr: {}",
                    log.error.as_deref().unwrap_or("no error line"),
                    tail(&dir.child_stderr(life))
                )));
            }
        }
    }
    let killed_at = Instant::now();
    if log.ready_after.is_none() && startup_deadline.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Failure::Run(format!(
            "the child (life {life}) did not become ready within {READY_TIMEOUT:?}; stderr: {}",
            tail(&dir.child_stderr(life))
        )));
    }
    let mut landed = log.landed(killed_at);
    // `Child::kill` sends SIGKILL on Unix.
    child
        .kill()
        .map_err(|e| format!("cannot kill the child: {e}"))?;
    child
        .wait()
        .map_err(|e| format!("waiting for the child: {e}"))?;
    // Lines the child printed before it died but we had not read yet.
    while let Ok((at, line)) = rx.recv() {
        let open = log.open_checkpoint;
        log.take(at, spawned, &line);
        if let (Landed::InCheckpoint { epoch, .. }, Some(_), None) =
            (&landed, open, log.open_checkpoint)
            && line.starts_with("ckpt_done")
        {
            landed = Landed::JustAfterCheckpoint { epoch: *epoch };
        }
    }
    let _ = reader.join();
    if let Some(e) = &log.error {
        return Err(Failure::Run(format!("the child (life {life}) failed: {e}")));
    }
    Ok(KillRecord {
        life,
        aim,
        landed,
        confirmed_incomplete: None,
        log,
        lived: killed_at - spawned,
    })
}

/// Marks whether the checkpoint a kill interrupted was indeed left incomplete, from the
/// checkpoint the next recovery loaded.
fn confirm(kill: &mut KillRecord, next_recovery: Option<&Recovered>) {
    if let (Landed::InCheckpoint { epoch, .. }, Some(r)) = (&kill.landed, next_recovery) {
        kill.confirmed_incomplete = Some(r.checkpoint_epoch.is_none_or(|c| c < *epoch));
    }
}

fn describe_recovery(r: &Recovered) -> String {
    format!(
        "checkpoint {}, {} rows loaded, {} epochs replayed, {} dedup entries, {:.3} s",
        r.checkpoint_epoch
            .map_or_else(|| "none".into(), |e| format!("of epoch {e}")),
        fmt_count(r.rows_loaded),
        fmt_count(r.epochs_replayed),
        fmt_count(r.dedup_entries),
        r.seconds
    )
}

fn print_life(total: u32, kill: &KillRecord, previous: Option<&KillRecord>) {
    let log = &kill.log;
    let recovery = match &log.recovered {
        Some(r) => format!(
            "open {:.3} s, recovery: {}",
            log.open_s.unwrap_or(0.0),
            describe_recovery(r)
        ),
        None => "killed before recovery finished".into(),
    };
    println!(
        "kill {:>2}/{total}: life {} ran {} ms | {recovery}",
        kill.life,
        kill.life,
        kill.lived.as_millis()
    );
    if let Some(p) = previous
        && let Some(incomplete) = p.confirmed_incomplete
    {
        println!(
            "         the checkpoint kill {} interrupted was {}",
            p.life,
            if incomplete {
                "incomplete at this restart: it landed mid-checkpoint"
            } else {
                "complete at this restart: it landed just after"
            }
        );
    }
    if let Some((n, dedup, executed)) = log.resubmitted {
        println!(
            "         resubmitted {n} requests earlier lives never saw answered: {dedup} got \
             their original outcome, {executed} ran now"
        );
    } else if log.pending > 0 {
        println!(
            "         {} earlier requests were being resubmitted",
            log.pending
        );
    }
    println!(
        "         {} acked, {} checkpoints completed; SIGKILL {} (aimed: {})",
        fmt_count(log.acked),
        log.checkpoints_done,
        kill.landed.describe(),
        match kill.aim {
            Aim::MidEpoch => "mid-epoch",
            Aim::MidCheckpoint => "mid-checkpoint",
            Aim::DuringStartup => "during start-up",
        }
    );
}

fn print_kill_summary(kills: &[KillRecord]) {
    let count = |f: &dyn Fn(&KillRecord) -> bool| kills.iter().filter(|k| f(k)).count();
    let aimed_checkpoint = count(&|k| k.aim == Aim::MidCheckpoint);
    let in_checkpoint = count(&|k| matches!(k.landed, Landed::InCheckpoint { .. }));
    let confirmed = count(&|k| k.confirmed_incomplete == Some(true));
    let just_after = count(&|k| {
        matches!(k.landed, Landed::JustAfterCheckpoint { .. })
            || k.confirmed_incomplete == Some(false)
    });
    let startup = count(&|k| {
        matches!(
            k.landed,
            Landed::Opening | Landed::Recovering | Landed::BeforeReady
        )
    });
    let mid_epoch = count(&|k| matches!(k.landed, Landed::MidEpoch));
    println!();
    println!(
        "kills: {} — {in_checkpoint} mid-checkpoint ({confirmed} confirmed by the next recovery \
         loading an older checkpoint; {aimed_checkpoint} aimed there), {just_after} just after a \
         checkpoint completed, {mid_epoch} mid-epoch, {startup} during start-up/recovery",
        kills.len()
    );
    println!("recovery after each kill:");
    println!(
        "  {:>7}  {:<32}  {:>10}  {:>11}  {:>8}  {:>10}  {:>7}",
        "restart", "after a kill", "checkpoint", "rows loaded", "replayed", "recovery s", "open s"
    );
    for pair in kills.windows(2) {
        let (kill, next) = (&pair[0], &pair[1]);
        if let Some(r) = &next.log.recovered {
            println!(
                "  {:>7}  {:<32}  {:>10}  {:>11}  {:>8}  {:>10.3}  {:>7.3}",
                next.life,
                kill.landed.short(),
                r.checkpoint_epoch
                    .map_or_else(|| "none".into(), |e| e.to_string()),
                fmt_count(r.rows_loaded),
                fmt_count(r.epochs_replayed),
                r.seconds,
                next.log.open_s.unwrap_or(0.0)
            );
        } else {
            println!(
                "  {:>7}  {:<32}  (killed again before recovery finished)",
                next.life,
                kill.landed.short()
            );
        }
    }
}

fn print_check(check: &CheckResult) {
    println!(
        "[{}] {}: {} {}",
        check.number,
        check.name,
        check.summary,
        if check.passed { "OK" } else { "FAILED" }
    );
    for detail in &check.details {
        println!("      {detail}");
    }
}

/// The last lines of a file, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    if lines.is_empty() {
        "(empty)".into()
    } else {
        lines[start..].join("\n    ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_plan_mixes_every_aim_and_never_starts_with_a_startup_kill() {
        // Goal: 20 kills include mid-checkpoint and start-up kills, the first kill has something
        // running to kill, and the plan is a function of the seed.
        for seed in 0..50 {
            let plan = kill_plan(seed, 20);
            assert_eq!(plan.len(), 20);
            assert_eq!(plan.iter().filter(|a| **a == Aim::MidCheckpoint).count(), 7);
            assert_eq!(plan.iter().filter(|a| **a == Aim::DuringStartup).count(), 2);
            assert_ne!(plan[0], Aim::DuringStartup, "seed {seed}");
            assert_eq!(plan, kill_plan(seed, 20));
        }
        assert!(kill_plan(1, 5).contains(&Aim::MidCheckpoint));
        assert_eq!(kill_plan(1, 1), vec![Aim::MidCheckpoint]);
    }
}
