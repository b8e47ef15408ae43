//! Damage scenarios: flip bytes in and cut copies of a store, then open and recover each copy.
//!
//! The store is never touched: every scenario damages its own copy. A scenario passes when the
//! damage is refused with an error (at open, where redb's page checksums and our record
//! checksums are verified, or at recovery). Damage that certainly hits live data — a byte of a
//! logged record, of a checkpoint row, a file cut in half, emptied or deleted — must be refused,
//! and a flipped log record must be reported with its epoch. Random flips may land in unused
//! space; then recovery must produce exactly the undamaged state.

use super::CorruptionTestArgs;
use super::app::{CrashWorkload, key_of, mix, value_of};
use super::child::runtime_config;
use super::files::{CLIENTS_PER_LIFE_MAX, RunDir, RunParams, copy_dir};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use txn::storage::redb_storage::{CHECKPOINT_FILE_NAME, FILE_NAME};
use txn::storage::{EmbeddedStorage, Storage, record};
use txn::{RecoverFrom, Runtime};

/// What opening and recovering a damaged copy did.
enum Attempt {
    Refused { stage: &'static str, error: String },
    Recovered { hash: u64 },
}

/// What a scenario demands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Must be refused.
    Refused,
    /// Refused, or recovered to exactly the undamaged state.
    RefusedOrIdentical,
}

/// Damages the store file at the path and says what it did.
type Damage = Box<dyn Fn(&Path) -> std::io::Result<String>>;

struct Scenario {
    name: String,
    expect: Expect,
    /// The text the error must name (e.g. `epoch 42`), checked when `expect` asks for it.
    must_name: Option<String>,
    /// The store file it damages (the log file or the checkpoint file).
    file: &'static str,
    damage: Damage,
}

/// Runs `corruption-test`.
pub fn corruption_test(args: &CorruptionTestArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(super::fresh_seed);
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start tokio: {e}"))
        .and_then(|tokio| {
            tokio.block_on(async {
                let _tmp;
                let dir = match &args.data_dir {
                    Some(d) => RunDir::new(d),
                    None => {
                        let t = tempfile::Builder::new()
                            .prefix("vmsdb-corruption-")
                            .tempdir()
                            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
                        let dir = RunDir::new(t.path());
                        _tmp = t;
                        println!("writing a fresh store (3,000 crash-workload requests)");
                        write_store(&dir, seed, 3_000).await?;
                        dir
                    }
                };
                scenarios(&dir, seed).await
            })
        });
    match result {
        Ok(true) => {
            println!("corruption-test PASSED: seed {seed}");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("corruption-test FAILED: seed {seed}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("corruption-test FAILED: {e} (seed {seed})");
            ExitCode::from(1)
        }
    }
}

/// Writes a store with `n` crash-workload requests into `dir` (and its parameters).
async fn write_store(dir: &RunDir, seed: u64, n: u64) -> Result<(), String> {
    let params = RunParams {
        seed,
        clients: 16,
        partitions: 4,
        pad_bytes: 256,
        checkpoint_every: 20,
        next_epoch_fallback: false,
        ordered_fallback: false,
    };
    dir.write_params(&params)
        .map_err(|e| format!("cannot write the run parameters: {e}"))?;
    let workload = Arc::new(
        CrashWorkload::new(params.partitions, params.pad_bytes as usize)
            .map_err(|e| e.to_string())?,
    );
    let store = EmbeddedStorage::open(dir.store()).map_err(|e| e.to_string())?;
    let config = runtime_config(
        Arc::new(store),
        &params,
        params.checkpoint_every,
        RecoverFrom::LatestCheckpoint,
    );
    let rt = Runtime::start(workload.app.clone(), config)
        .await
        .map_err(|e| e.to_string())?;
    let per_client = n.div_ceil(u64::from(params.clients));
    let tasks: Vec<_> = (0..u64::from(params.clients))
        .map(|w| {
            let (client, workload) = (rt.client(), workload.clone());
            tokio::spawn(async move {
                for seq in 0..per_client {
                    let k = key_of(CLIENTS_PER_LIFE_MAX + w, seq);
                    workload.insert(&client, k, value_of(seed, k)).await?;
                }
                Ok::<(), txn::TxnError>(())
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| format!("a writer task failed: {e}"))?
            .map_err(|e| e.to_string())?;
    }
    rt.shutdown().await;
    Ok(())
}

/// Opens and recovers the store in `store_dir` and returns its state hash, or where it was
/// refused.
async fn attempt(workload: &CrashWorkload, params: &RunParams, store_dir: &Path) -> Attempt {
    let store = match EmbeddedStorage::open(store_dir) {
        Ok(s) => s,
        Err(e) => {
            return Attempt::Refused {
                stage: "open",
                error: e.to_string(),
            };
        }
    };
    let config = runtime_config(Arc::new(store), params, 0, RecoverFrom::LatestCheckpoint);
    let rt = match Runtime::start(workload.app.clone(), config).await {
        Ok(rt) => rt,
        Err(e) => {
            return Attempt::Refused {
                stage: "recovery",
                error: e.to_string(),
            };
        }
    };
    let hash = rt.client().state_hash().await;
    rt.shutdown().await;
    match hash {
        Ok(hash) => Attempt::Recovered { hash },
        Err(e) => Attempt::Refused {
            stage: "the first query",
            error: e.to_string(),
        },
    }
}

/// Flips one bit in the middle of every occurrence of `pattern` in `file`; returns how many.
fn flip_every_occurrence(file: &Path, pattern: &[u8], offset_in_pattern: usize) -> usize {
    let Ok(mut bytes) = std::fs::read(file) else {
        return 0;
    };
    let mut hits = Vec::new();
    if pattern.len() <= bytes.len() {
        let first = pattern[0];
        for i in 0..=bytes.len() - pattern.len() {
            if bytes[i] == first && bytes[i..i + pattern.len()] == *pattern {
                hits.push(i);
            }
        }
    }
    for &i in &hits {
        bytes[i + offset_in_pattern] ^= 0x10;
    }
    if !hits.is_empty() && std::fs::write(file, &bytes).is_err() {
        return 0;
    }
    hits.len()
}

/// What the scenarios need to know about the undamaged store.
struct Facts {
    hash: u64,
    file_len: u64,
    checkpoint_epoch: Option<u64>,
    /// A logged epoch to damage (after the checkpoint when possible) and its stored record.
    log_target: Option<(u64, Vec<u8>)>,
    /// The longest checkpoint row value.
    row_value: Option<Vec<u8>>,
}

async fn facts(
    workload: &CrashWorkload,
    params: &RunParams,
    store: &Path,
    scratch: &Path,
) -> Result<Facts, String> {
    let reference = scratch.join("reference");
    copy_dir(store, &reference).map_err(|e| format!("cannot copy the store: {e}"))?;
    let file_len = std::fs::metadata(store.join(FILE_NAME))
        .map_err(|e| format!("the store has no {FILE_NAME}: {e}"))?
        .len();
    let (checkpoint_epoch, log_target, row_value) = {
        let s = EmbeddedStorage::open(&reference)
            .map_err(|e| format!("the undamaged store does not open: {e}"))?;
        let mut row_value: Option<Vec<u8>> = None;
        let checkpoint_epoch = s
            .read_latest_checkpoint(&mut |_, value| {
                if row_value.as_ref().is_none_or(|v| v.len() < value.len()) {
                    row_value = Some(value.to_vec());
                }
                Ok(())
            })
            .map_err(|e| format!("reading the checkpoint: {e}"))?;
        let mut best: Option<(u64, Vec<u8>)> = None;
        let mut best_after: Option<(u64, Vec<u8>)> = None;
        s.read_epochs(0, &mut |epoch, payload| {
            let slot = if checkpoint_epoch.is_none_or(|c| epoch > c) {
                &mut best_after
            } else {
                &mut best
            };
            if slot.as_ref().is_none_or(|(_, p)| p.len() < payload.len()) {
                *slot = Some((epoch, payload.to_vec()));
            }
            Ok(())
        })
        .map_err(|e| format!("reading the log: {e}"))?;
        let target = best_after
            .filter(|(_, p)| p.len() >= 32)
            .or(best)
            .map(|(epoch, payload)| (epoch, record::encode(epoch, &payload)));
        (checkpoint_epoch, target, row_value)
    };
    let hash = match attempt(workload, params, &reference).await {
        Attempt::Recovered { hash } => hash,
        Attempt::Refused { stage, error } => {
            return Err(format!(
                "the undamaged store is refused at {stage}: {error}"
            ));
        }
    };
    let _ = std::fs::remove_dir_all(&reference);
    Ok(Facts {
        hash,
        file_len,
        checkpoint_epoch,
        log_target,
        row_value,
    })
}

fn build_scenarios(facts: &Facts, seed: u64) -> Vec<Scenario> {
    let mut out = Vec::new();
    if let Some((epoch, stored)) = &facts.log_target {
        let stored = stored.clone();
        let epoch = *epoch;
        let replayed = facts.checkpoint_epoch.is_none_or(|c| epoch > c);
        out.push(Scenario {
            name: format!(
                "flip a byte in the logged record of epoch {epoch} ({})",
                if replayed {
                    "in the tail recovery replays"
                } else {
                    "below the checkpoint"
                }
            ),
            expect: Expect::Refused,
            must_name: Some(format!("epoch {epoch}")),
            file: FILE_NAME,
            damage: Box::new(move |file| {
                let offset = record::HEADER_LEN + (stored.len() - record::HEADER_LEN) / 2;
                let n = flip_every_occurrence(file, &stored, offset);
                Ok(format!("copies of the record found and flipped: {n}"))
            }),
        });
    }
    if let Some(value) = &facts.row_value {
        let value = value.clone();
        out.push(Scenario {
            name: format!(
                "flip a byte in a checkpoint row ({} byte value)",
                value.len()
            ),
            expect: Expect::Refused,
            must_name: None,
            file: CHECKPOINT_FILE_NAME,
            damage: Box::new(move |file| {
                let n = flip_every_occurrence(file, &value, value.len() / 2);
                Ok(format!("copies of the value found and flipped: {n}"))
            }),
        });
    }
    let len = facts.file_len;
    let cut = |name: String, new_len: u64, expect: Expect| Scenario {
        name,
        expect,
        must_name: None,
        file: FILE_NAME,
        damage: Box::new(move |file| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(file)?
                .set_len(new_len)?;
            Ok(format!("{len} -> {new_len} bytes"))
        }),
    };
    out.push(cut(
        "cut the last 4 KiB of the file".into(),
        len.saturating_sub(4096),
        Expect::RefusedOrIdentical,
    ));
    out.push(cut("cut the file in half".into(), len / 2, Expect::Refused));
    out.push(cut("empty the file".into(), 0, Expect::Refused));
    for (name, file) in [
        ("delete the log file", FILE_NAME),
        ("delete the checkpoint file", CHECKPOINT_FILE_NAME),
    ] {
        out.push(Scenario {
            name: name.into(),
            expect: Expect::Refused,
            must_name: None,
            file,
            damage: Box::new(|file| std::fs::remove_file(file).map(|()| "deleted".into())),
        });
    }
    let mut rng = SmallRng::seed_from_u64(mix(seed ^ 0x666c_6970));
    for n_flips in [1usize, 1, 1, 1, 64] {
        let offsets: Vec<u64> = (0..n_flips)
            .map(|_| rng.random_range(0..len.max(1)))
            .collect();
        out.push(Scenario {
            name: if n_flips == 1 {
                format!("flip a random byte (offset {})", offsets[0])
            } else {
                format!("flip {n_flips} random bytes")
            },
            expect: Expect::RefusedOrIdentical,
            must_name: None,
            file: FILE_NAME,
            damage: Box::new(move |file| {
                let mut bytes = std::fs::read(file)?;
                for &o in &offsets {
                    if let Some(b) = bytes.get_mut(o as usize) {
                        *b ^= 0x5a;
                    }
                }
                std::fs::write(file, &bytes)?;
                Ok(format!("{} byte(s) flipped", offsets.len()))
            }),
        });
    }
    out
}

/// Damages copies of `dir`'s store in every scenario and prints what recovery said; true when
/// every scenario passed.
pub async fn scenarios(dir: &RunDir, seed: u64) -> Result<bool, String> {
    let params = dir
        .read_params()
        .map_err(|e| format!("cannot read the run parameters: {e}"))?;
    let workload = CrashWorkload::new(params.partitions, params.pad_bytes as usize)
        .map_err(|e| e.to_string())?;
    let scratch = tempfile::Builder::new()
        .prefix("vmsdb-damaged-")
        .tempdir()
        .map_err(|e| format!("cannot create a scratch directory: {e}"))?;
    let store = dir.store();
    let facts = facts(&workload, &params, &store, scratch.path()).await?;
    println!(
        "corruption: damaging copies of the store ({:.1} MiB, checkpoint {}, undamaged state hash \
         {:#018x}); seed {seed}",
        facts.file_len as f64 / (1024.0 * 1024.0),
        facts
            .checkpoint_epoch
            .map_or_else(|| "none".into(), |e| format!("of epoch {e}")),
        facts.hash
    );
    let mut passed = true;
    for (i, scenario) in build_scenarios(&facts, seed).into_iter().enumerate() {
        let copy: PathBuf = scratch.path().join(format!("case-{i}"));
        copy_dir(&store, &copy).map_err(|e| format!("cannot copy the store: {e}"))?;
        let what = (scenario.damage)(&copy.join(scenario.file))
            .map_err(|e| format!("cannot damage the copy ({}): {e}", scenario.name))?;
        let result = attempt(&workload, &params, &copy).await;
        let (ok, said) = match (&result, scenario.expect) {
            (Attempt::Refused { stage, error }, _) => {
                let named = scenario
                    .must_name
                    .as_ref()
                    .is_none_or(|name| error.contains(name.as_str()));
                let mut said = format!("refused at {stage}: {error}");
                if !named {
                    said.push_str(&format!(
                        " — but the error does not name {}",
                        scenario.must_name.as_deref().unwrap_or("")
                    ));
                }
                (named, said)
            }
            (Attempt::Recovered { hash }, Expect::RefusedOrIdentical) if *hash == facts.hash => (
                true,
                "recovered the identical state (the damage hit unused space)".to_string(),
            ),
            (Attempt::Recovered { hash }, _) if *hash == facts.hash => (
                false,
                "NOT DETECTED: recovered as if nothing had happened".to_string(),
            ),
            (Attempt::Recovered { hash }, _) => (
                false,
                format!(
                    "SILENTLY RECOVERED A DIFFERENT STATE {hash:#018x} (expected {:#018x} or a \
                     refusal)",
                    facts.hash
                ),
            ),
        };
        passed &= ok;
        println!(
            "  [{}] {} ({what}): {said}",
            if ok { "OK" } else { "FAILED" },
            scenario.name
        );
        let _ = std::fs::remove_dir_all(&copy);
    }
    Ok(passed)
}
