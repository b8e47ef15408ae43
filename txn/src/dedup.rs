//! The exactly-once window: outcomes of idempotent requests, by request id.
//!
//! The window is part of the replicated state machine, not a cache: it changes only when an
//! epoch's outcomes are settled, in epoch and seq order, so replaying the log rebuilds it
//! exactly; its rows go into every checkpoint (under the reserved partition [`DEDUP_GP`]).
//! It is bounded: past `max` entries the oldest settled outcome is forgotten.

use crate::ids::RequestId;
use crate::partition::CheckpointRow;
use crate::runtime::Outcome;
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;

/// The global-partition number that checkpoint rows of the dedup window are stored under.
pub(crate) const DEDUP_GP: u32 = u32::MAX;

/// One remembered outcome: insertion number (for FIFO order after reload), the epoch it was
/// settled in, and the outcome.
type Entry<O> = (u64, u64, Outcome<O>);

pub(crate) struct Dedup<O> {
    done: FxHashMap<RequestId, Entry<O>>,
    order: VecDeque<(u64, RequestId)>,
    max: usize,
    n_inserted: u64,
    /// Changes since the last checkpoint: `true` inserted, `false` evicted.
    changes: FxHashMap<RequestId, bool>,
}

impl<O: Clone + Serialize + DeserializeOwned> Dedup<O> {
    pub fn new(max: usize) -> Self {
        Dedup {
            done: FxHashMap::default(),
            order: VecDeque::new(),
            max: max.max(1),
            n_inserted: 0,
            changes: FxHashMap::default(),
        }
    }

    /// The settled outcome of `id` and the epoch it was settled in.
    pub fn lookup(&self, id: &RequestId) -> Option<(u64, &Outcome<O>)> {
        self.done.get(id).map(|(_, epoch, o)| (*epoch, o))
    }

    /// Remembers the final outcome of `id`, forgetting the oldest beyond the bound.
    pub fn record(&mut self, id: RequestId, epoch: u64, outcome: Outcome<O>) {
        let n = self.n_inserted;
        self.n_inserted += 1;
        if self.done.insert(id, (n, epoch, outcome)).is_none() {
            self.order.push_back((n, id));
        }
        self.changes.insert(id, true);
        while self.done.len() > self.max {
            let Some((n_old, old)) = self.order.pop_front() else {
                break;
            };
            if self.done.get(&old).is_some_and(|(n, _, _)| *n == n_old) {
                self.done.remove(&old);
                self.changes.insert(old, false);
            }
        }
    }

    /// Number of remembered outcomes.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    /// The window's changes since the last call, as checkpoint rows.
    pub fn drain_checkpoint_rows(&mut self) -> Vec<CheckpointRow> {
        let mut changes: Vec<(RequestId, bool)> = self.changes.drain().collect();
        changes.sort();
        changes
            .into_iter()
            .map(|(id, present)| {
                let mut key = Vec::with_capacity(6 + 20);
                key.extend_from_slice(&DEDUP_GP.to_be_bytes());
                key.extend_from_slice(&0u16.to_be_bytes());
                key.extend_from_slice(&rmp_serde::to_vec(&id).expect("request ids encode"));
                let value = if present {
                    self.done
                        .get(&id)
                        .map(|e| rmp_serde::to_vec(e).expect("outcomes encode"))
                } else {
                    None
                };
                (key, value)
            })
            .collect()
    }

    /// Loads one checkpoint row (the key without its 6-byte prefix).
    pub fn load_row(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let id: RequestId =
            rmp_serde::from_slice(key).map_err(|e| format!("dedup window key: {e}"))?;
        let entry: Entry<O> = rmp_serde::from_slice(value)
            .map_err(|e| format!("dedup window entry of {id:?}: {e}"))?;
        self.n_inserted = self.n_inserted.max(entry.0 + 1);
        self.order.push_back((entry.0, id));
        self.done.insert(id, entry);
        Ok(())
    }

    /// Restores FIFO order after loading rows (they arrive in key order).
    pub fn finish_load(&mut self) {
        self.order.make_contiguous().sort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Tid;

    fn outcome(v: u32) -> Outcome<u32> {
        Outcome {
            tid: Tid::new(1, v),
            result: Ok(Some(v)),
            serial_pos: None,
            retries: 0,
            timestamp_ms: 0,
        }
    }

    fn id(seq: u64) -> RequestId {
        RequestId { client: 7, seq }
    }

    #[test]
    fn window_is_bounded_fifo_and_survives_a_checkpoint_round_trip() {
        let mut d = Dedup::<u32>::new(3);
        for s in 0..5 {
            d.record(id(s), 1, outcome(s as u32));
        }
        assert_eq!(d.len(), 3);
        assert!(d.lookup(&id(0)).is_none() && d.lookup(&id(1)).is_none());
        assert_eq!(d.lookup(&id(4)).unwrap().1.result, Ok(Some(4)));

        let rows = d.drain_checkpoint_rows();
        assert_eq!(
            rows.iter().filter(|(_, v)| v.is_none()).count(),
            2,
            "evictions become deletions"
        );
        let mut reloaded = Dedup::<u32>::new(3);
        for (k, v) in rows.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k, v))) {
            reloaded.load_row(&k[6..], v).unwrap();
        }
        reloaded.finish_load();
        reloaded.record(id(5), 2, outcome(5));
        assert!(
            reloaded.lookup(&id(2)).is_none(),
            "the oldest is evicted first after reload"
        );
        assert!(reloaded.lookup(&id(3)).is_some() && reloaded.lookup(&id(5)).is_some());
    }
}
