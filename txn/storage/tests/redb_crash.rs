//! Kills a process writing to a redb store with SIGKILL at random moments — mid-append and
//! mid-checkpoint — and checks after each restart that every acknowledged epoch and checkpoint
//! is there byte for byte, and that nothing half-written is visible. The child merges a
//! completed checkpoint into the state in steps of `MERGE_STEP_ROWS` rows, so kills also land
//! between the steps of a merge.
//!
//! Runs without the libtest harness: the same binary is the parent (no arguments) and the
//! writing child (`child <dir> <first epoch>`). Seed: `VMSDB_CRASH_SEED`; rounds:
//! `VMSDB_CRASH_ROUNDS` (default 12).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use txn_storage::conformance::batch_for;
use txn_storage::{CheckpointRow, LiveRow, RedbStorage, Storage};

const N_ROWS: usize = 1_000;
const CHECKPOINT_EVERY_EPOCHS: u64 = 15;
const ROW_CHUNK: usize = 500;
/// Rows of one step of the completion's merge in the child: a checkpoint's merge is 10 steps.
const MERGE_STEP_ROWS: usize = 100;

/// The batch of `epoch`: alternately small and large, so kills land in writes of both sizes.
fn batch(epoch: u64) -> Vec<u8> {
    let len = if epoch.is_multiple_of(3) {
        300_000
    } else {
        20_000
    };
    batch_for(epoch, len)
}

/// Every checkpoint writes every row (a put, or a deletion for every 7th), so the merged state
/// as of checkpoint `c` is exactly `expected_rows(c)`.
fn checkpoint_rows(checkpoint_epoch: u64) -> Vec<CheckpointRow> {
    (0..N_ROWS)
        .map(|idx| {
            let key = format!("row{idx:05}").into_bytes();
            let value = (!(idx as u64 + checkpoint_epoch).is_multiple_of(7))
                .then(|| batch_for(checkpoint_epoch * 100_000 + idx as u64, 40));
            (key, value)
        })
        .collect()
}

fn expected_rows(checkpoint_epoch: u64) -> Vec<LiveRow> {
    let mut rows: Vec<LiveRow> = checkpoint_rows(checkpoint_epoch)
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key, value)))
        .collect();
    rows.sort();
    rows
}

/// The child: appends epochs forever, checkpointing and truncating as the runtime would, and
/// prints each acknowledgement after the call returned.
fn child(dir: &Path, first_epoch: u64) {
    let store = RedbStorage::open(dir).expect("child: open");
    store.set_merge_step(MERGE_STEP_ROWS, usize::MAX);
    println!("ready 0");
    for epoch in first_epoch.. {
        store
            .append_epoch(epoch, &batch(epoch))
            .expect("child: append");
        println!("epoch {epoch}");
        if epoch.is_multiple_of(CHECKPOINT_EVERY_EPOCHS) {
            for chunk in checkpoint_rows(epoch).chunks(ROW_CHUNK) {
                store
                    .write_checkpoint_rows(epoch, chunk)
                    .expect("child: rows");
            }
            store.complete_checkpoint(epoch).expect("child: complete");
            println!("checkpoint {epoch}");
            store
                .truncate_log_below(epoch - 5)
                .expect("child: truncate");
        }
    }
}

/// Checks the store after a kill; returns its last epoch and whether the kill cut a
/// completion's merge short.
fn verify(
    dir: &Path,
    acked_epoch: Option<u64>,
    acked_checkpoint: Option<u64>,
) -> (Option<u64>, bool) {
    let store = RedbStorage::open(dir).expect("reopen after the kill");
    let mid_merge = store.merge_unfinished().expect("merge_unfinished");
    let mut epochs = Vec::new();
    store
        .read_epochs(0, &mut |epoch, bytes| {
            assert!(
                bytes == batch(epoch).as_slice(),
                "epoch {epoch} reads back different bytes"
            );
            epochs.push(epoch);
            Ok(())
        })
        .expect("read the log after the kill");
    let last = store.last_epoch().expect("last_epoch");
    assert_eq!(
        last,
        epochs.last().copied(),
        "last_epoch disagrees with the log"
    );
    if let Some(acked) = acked_epoch {
        assert!(
            last >= Some(acked),
            "acknowledged epoch {acked} lost (last: {last:?})"
        );
    }
    let mut rows = Vec::new();
    let latest = store
        .read_latest_checkpoint(&mut |key, value| {
            rows.push((key.to_vec(), value.to_vec()));
            Ok(())
        })
        .expect("read the checkpoint after the kill");
    if let Some(acked) = acked_checkpoint {
        assert!(
            latest >= Some(acked),
            "acknowledged checkpoint {acked} lost (latest: {latest:?})"
        );
    }
    if let Some(latest) = latest {
        assert!(
            rows == expected_rows(latest),
            "checkpoint {latest} has other rows"
        );
        let first = epochs.first().copied().unwrap_or(latest + 1);
        assert!(
            first <= latest + 1,
            "epochs {}..{first} are neither logged nor checkpointed",
            latest + 1
        );
    } else {
        assert_eq!(
            epochs.first().copied().unwrap_or(1),
            1,
            "log truncated without a checkpoint"
        );
    }
    (last, mid_merge)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        child(Path::new(&args[2]), args[3].parse().expect("first epoch"));
        return;
    }
    // libtest-style flags (`--nocapture`, filters) are ignored: this file is one test.
    let seed: u64 = std::env::var("VMSDB_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0xC4A5_4004);
    let n_rounds: u32 = std::env::var("VMSDB_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    eprintln!("redb_crash: seed={seed} rounds={n_rounds} (replay: VMSDB_CRASH_SEED={seed})");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = seed;
    let mut last = None;
    let (mut max_epoch, mut max_checkpoint) = (None::<u64>, None::<u64>);
    let mut mid_merges = 0u32;
    for round in 0..n_rounds {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let kill_after = Duration::from_millis((rng >> 33) % 250);
        let first_epoch = last.map_or(1, |last: u64| last + 1);
        let mut child = Command::new(&args[0])
            .args([
                "child",
                &dir.path().display().to_string(),
                &first_epoch.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let (lines_tx, lines_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The kill clock starts once the child has opened the store (recovery included).
        let mut lines = Vec::new();
        match lines_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => lines.push(line),
            Err(err) => panic!("round {round}: the child never opened the store: {err}"),
        }
        if round + 1 == n_rounds && max_checkpoint.is_none() {
            // However slow the machine, one kill must land after a completed checkpoint.
            loop {
                let line = lines_rx
                    .recv_timeout(Duration::from_secs(60))
                    .unwrap_or_else(|err| panic!("round {round}: no checkpoint completed: {err}"));
                let is_checkpoint = line.starts_with("checkpoint ");
                lines.push(line);
                if is_checkpoint {
                    break;
                }
            }
        }
        // The crash point, drawn from the seed: not a wait for anything, since the child may be
        // anywhere (mid-append, mid-checkpoint) when the kill lands, which is the point.
        std::thread::sleep(kill_after);
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("wait for the child");
        reader.join().expect("reader thread");
        lines.extend(lines_rx.try_iter());
        for line in lines {
            let (what, epoch) = line.split_once(' ').expect("child line");
            let epoch: u64 = epoch.parse().expect("child epoch");
            match what {
                "epoch" => max_epoch = max_epoch.max(Some(epoch)),
                "checkpoint" => max_checkpoint = max_checkpoint.max(Some(epoch)),
                _ => {}
            }
        }
        assert!(
            !status.success(),
            "round {round}: the child exited by itself: {status}"
        );
        let mid_merge;
        (last, mid_merge) = verify(dir.path(), max_epoch, max_checkpoint);
        mid_merges += u32::from(mid_merge);
        eprintln!(
            "round {round}: killed {kill_after:?} after opening; acknowledged epoch {max_epoch:?}, \
             checkpoint {max_checkpoint:?}; store ends at {last:?}{}: ok",
            if mid_merge { ", a merge cut short" } else { "" }
        );
    }
    assert!(
        max_checkpoint.is_some(),
        "no checkpoint completed: kills came too early to test them"
    );
    eprintln!(
        "redb_crash: all {n_rounds} rounds kept every acknowledged write ({mid_merges} killed a \
         completion's merge between steps)"
    );
}
