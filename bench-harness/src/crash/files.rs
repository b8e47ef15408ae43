//! The files of a crash-test data directory: the run's parameters, the children's logs of what
//! they sent and what was acknowledged, and copying a store.
//!
//! `sent.log` has one line per request a child is about to submit (`<k>`), written before the
//! submission; `acks.log` one line per outcome the child received (`<k> <v> c <bucket total>
//! <epoch> <n|r>` or `<k> <v> a - <epoch> <n|r>`; `r` marks a resubmission of a request sent by
//! an earlier life), written and flushed before the child counts it as acknowledged. A kill can
//! leave a last line without its newline; it was never counted, so readers ignore it and the
//! next child cuts it off before appending.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Largest life number: `life * CLIENTS_PER_LIFE_MAX + worker` must fit the 32-bit client half of
/// a key.
pub const LIFE_MAX: u64 = (1 << 20) - 1;

/// Client ids reserved per life (at least the largest `--clients`).
pub const CLIENTS_PER_LIFE_MAX: u64 = 4096;

const _: () = assert!((LIFE_MAX + 1) * CLIENTS_PER_LIFE_MAX <= 1 << 32);

/// The parameters of a crash-test run, written once by the parent and read by every child and
/// by the checks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunParams {
    pub seed: u64,
    pub clients: u32,
    pub partitions: u32,
    pub pad_bytes: u32,
    pub checkpoint_every: u64,
    /// Conflict losers retried in the next epoch instead of re-run serially.
    #[serde(default)]
    pub next_epoch_fallback: bool,
    /// Conflict losers re-run by the ordered fallback (`txn::Fallback::Ordered`).
    #[serde(default)]
    pub ordered_fallback: bool,
}

/// The paths inside a crash-test data directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    pub fn params(&self) -> PathBuf {
        self.root.join("crash-run.json")
    }
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }
    pub fn sent(&self) -> PathBuf {
        self.root.join("sent.log")
    }
    pub fn acks(&self) -> PathBuf {
        self.root.join("acks.log")
    }
    pub fn child_stderr(&self, life: u64) -> PathBuf {
        self.root.join(format!("child-{life}.stderr"))
    }

    pub fn write_params(&self, params: &RunParams) -> io::Result<()> {
        let json = serde_json::to_string_pretty(params).expect("parameters serialize");
        std::fs::write(self.params(), json)
    }

    pub fn read_params(&self) -> io::Result<RunParams> {
        let bytes = std::fs::read(self.params())?;
        serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", self.params().display()),
            )
        })
    }
}

/// One acknowledged outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub v: i64,
    /// `Some(bucket total)` when committed, `None` when aborted.
    pub committed: Option<i64>,
    /// The epoch of the TID the outcome reports.
    pub epoch: u64,
    /// Whether it answered a resubmission of a request an earlier life had sent.
    pub resubmitted: bool,
}

impl Ack {
    /// The line recorded for it (with its newline).
    pub fn line(&self, k: u64) -> String {
        let origin = if self.resubmitted { 'r' } else { 'n' };
        match self.committed {
            Some(total) => format!("{k} {} c {total} {} {origin}\n", self.v, self.epoch),
            None => format!("{k} {} a - {} {origin}\n", self.v, self.epoch),
        }
    }

    fn parse(line: &str) -> Option<(u64, Ack)> {
        let mut it = line.split(' ');
        let k = it.next()?.parse().ok()?;
        let v = it.next()?.parse().ok()?;
        let kind = it.next()?;
        let total = it.next()?;
        let epoch = it.next()?.parse().ok()?;
        let resubmitted = match it.next()? {
            "n" => false,
            "r" => true,
            _ => return None,
        };
        let committed = match kind {
            "c" => Some(total.parse().ok()?),
            "a" => None,
            _ => return None,
        };
        it.next().is_none().then_some((
            k,
            Ack {
                v,
                committed,
                epoch,
                resubmitted,
            },
        ))
    }
}

/// What the logs say.
#[derive(Default, Debug)]
pub struct Logs {
    /// Keys in `sent.log`, in order (a resubmitted key is not sent again).
    pub sent: Vec<u64>,
    /// The acknowledged outcome of each key.
    pub acks: HashMap<u64, Ack>,
    /// Lines that do not parse (other than an unterminated last line): must be none.
    pub garbled_lines: Vec<String>,
    /// Keys acknowledged twice with different outcomes: must be none.
    pub conflicting_acks: Vec<(u64, Ack, Ack)>,
}

impl Logs {
    /// Reads both logs of `dir` (absent files are empty).
    pub fn read(dir: &RunDir) -> io::Result<Logs> {
        let mut logs = Logs::default();
        for line in complete_lines(&dir.sent())? {
            match line.parse() {
                Ok(k) => logs.sent.push(k),
                Err(_) => logs.garbled_lines.push(format!("sent.log: {line}")),
            }
        }
        for line in complete_lines(&dir.acks())? {
            match Ack::parse(&line) {
                Some((k, ack)) => match logs.acks.get(&k) {
                    Some(first) if !same_outcome(first, &ack) => {
                        logs.conflicting_acks.push((k, *first, ack));
                    }
                    Some(_) => {}
                    None => {
                        logs.acks.insert(k, ack);
                    }
                },
                None => logs.garbled_lines.push(format!("acks.log: {line}")),
            }
        }
        Ok(logs)
    }

    /// Keys sent but never acknowledged, in send order.
    pub fn unacknowledged(&self) -> Vec<u64> {
        self.sent
            .iter()
            .copied()
            .filter(|k| !self.acks.contains_key(k))
            .collect()
    }
}

fn same_outcome(a: &Ack, b: &Ack) -> bool {
    a.v == b.v && a.committed == b.committed && a.epoch == b.epoch
}

/// The newline-terminated lines of `path` (none if it does not exist).
fn complete_lines(path: &Path) -> io::Result<Vec<String>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last) => &bytes[..=last],
        None => &[][..],
    };
    Ok(String::from_utf8_lossy(complete)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Opens `path` for appending, first cutting off an unterminated last line a kill left.
pub fn open_log_for_append(path: &Path) -> io::Result<File> {
    if let Ok(bytes) = std::fs::read(path) {
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if keep < bytes.len() {
            OpenOptions::new()
                .write(true)
                .open(path)?
                .set_len(keep as u64)?;
        }
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Appends one line with a single `write` (no user-space buffer to lose).
pub fn append_line(file: &mut File, line: &str) -> io::Result<()> {
    file.write_all(line.as_bytes())
}

/// Copies the files of directory `from` into `to` (created; must not exist yet).
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_lines_round_trip_and_partial_tails_are_ignored() {
        // Goal: an ack line parses back to itself; an unterminated last line is not an ack and
        // is cut off before the next append.
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::new(dir.path());
        let committed = Ack {
            v: 12,
            committed: Some(40),
            epoch: 9,
            resubmitted: false,
        };
        let aborted = Ack {
            v: 14,
            committed: None,
            epoch: 10,
            resubmitted: true,
        };
        let mut f = open_log_for_append(&run.acks()).unwrap();
        append_line(&mut f, &committed.line(5)).unwrap();
        append_line(&mut f, &aborted.line(6)).unwrap();
        append_line(&mut f, "7 3 c 1").unwrap();
        drop(f);
        let logs = Logs::read(&run).unwrap();
        assert_eq!(logs.acks.len(), 2);
        assert_eq!(logs.acks[&5], committed);
        assert_eq!(logs.acks[&6], aborted);
        assert!(logs.garbled_lines.is_empty(), "{:?}", logs.garbled_lines);

        let mut f = open_log_for_append(&run.acks()).unwrap();
        append_line(&mut f, &committed.line(8)).unwrap();
        drop(f);
        let logs = Logs::read(&run).unwrap();
        assert_eq!(logs.acks.len(), 3, "the partial line was cut, not glued");
        assert!(logs.garbled_lines.is_empty(), "{:?}", logs.garbled_lines);
    }
}
