//! Running transactions one at a time: the serial fallback, the reference executor that tests
//! replay histories against, and the `serial` baseline of the bench harness.

use crate::app::{App, AppDef, ServiceRef};
use crate::epoch::SerialPos;
use crate::error::AbortReason;
use crate::ids::{GlobalPartition, Seq};
use crate::limits::CHAIN_WAVES_MAX;
use crate::partition::{Clock, PartitionState, Request, SharedPartition, StepEvent, WaveOut};
use std::hash::Hash;
use std::sync::Arc;

/// Runs transaction `seq` of `env` alone, wave by wave, directly on the partitions (which must
/// be idle and hold no other buffered access), and commits or discards it.
pub(crate) fn run_chain<A: App>(
    app: &AppDef<A>,
    parts: &[SharedPartition<A>],
    clock: Clock,
    seq: Seq,
    request: &Request<A::Event>,
    scratch: &mut WaveOut<A>,
) -> Result<Option<A::Output>, AbortReason> {
    let first = request.target;
    let mut touched: Vec<GlobalPartition> = vec![first];
    let mut output = None;
    let mut abort = None;
    scratch.emits.clear();
    scratch.aborts.clear();
    scratch.outputs.clear();
    scratch.outbox.clear();
    {
        let mut part = parts[first as usize].lock();
        part.set_solo(true);
        part.execute_step(app, clock, seq, &request.event, scratch);
    }
    let mut wave = 1;
    loop {
        if let Some((_, reason)) = scratch.aborts.pop() {
            abort = Some(reason);
            break;
        }
        if let Some((_, o)) = scratch.outputs.pop() {
            output = Some(o);
        }
        if scratch.emits.is_empty() {
            break;
        }
        if wave == CHAIN_WAVES_MAX {
            abort = Some(AbortReason::ChainTooLong {
                max_waves: CHAIN_WAVES_MAX,
            });
            break;
        }
        // The same wave structure as the parallel pass: every emit of this wave runs before
        // any emit of the next, in emit order (which is what sorting by seq gives there).
        let emits = std::mem::take(&mut scratch.emits);
        for e in emits {
            let mut part = parts[e.target as usize].lock();
            if !touched.contains(&e.target) {
                touched.push(e.target);
                part.set_solo(true);
            }
            match &e.event {
                StepEvent::Emitted(event) => part.execute_step(app, clock, seq, event, scratch),
                StepEvent::Probe(probe) => part.execute_probe(seq, probe, scratch),
                StepEvent::Index(op) => part.execute_index_op(seq, op, scratch),
                StepEvent::Inbound => unreachable!("emits are never inbound"),
            }
            if !scratch.aborts.is_empty() {
                break;
            }
        }
        wave += 1;
    }
    for gp in touched {
        parts[gp as usize].lock().commit_all(abort.is_none());
    }
    match abort {
        Some(reason) => Err(reason),
        None => Ok(output),
    }
}

/// A single-threaded, in-memory executor with no durability: runs each request to completion
/// before the next. It is the reference that histories are replayed against and the `serial`
/// baseline.
pub struct SerialExecutor<A: App> {
    app: Arc<AppDef<A>>,
    parts: Vec<SharedPartition<A>>,
    epoch: u64,
    scratch: WaveOut<A>,
}

impl<A: App> SerialExecutor<A> {
    /// An executor with empty tables.
    pub fn new(app: Arc<AppDef<A>>) -> Self {
        let parts = PartitionState::all(&app);
        for p in &parts {
            p.lock().set_track_dirty(false);
        }
        SerialExecutor {
            app,
            parts,
            epoch: 0,
            scratch: WaveOut::default(),
        }
    }

    /// Runs one request now, with `timestamp_ms` as its context time, and returns its outcome.
    pub fn run(
        &mut self,
        service: ServiceRef,
        partition: u32,
        event: A::Event,
        timestamp_ms: u64,
    ) -> Result<Option<A::Output>, AbortReason> {
        self.run_at(
            SerialPos {
                epoch: self.epoch + 1,
                pass: 0,
                seq: 0,
            },
            service,
            partition,
            event,
            timestamp_ms,
        )
    }

    /// Runs one request with the TID it had at `pos` in a recorded history, so that handlers
    /// that use the TID-seeded RNG reproduce the same values.
    pub fn run_at(
        &mut self,
        pos: SerialPos,
        service: ServiceRef,
        partition: u32,
        event: A::Event,
        timestamp_ms: u64,
    ) -> Result<Option<A::Output>, AbortReason> {
        self.epoch = pos.epoch;
        let clock = Clock {
            epoch: pos.epoch,
            timestamp_ms,
        };
        let request = Request {
            target: service.gp(partition),
            event,
            id: None,
            retries: 0,
        };
        run_chain(
            &self.app,
            &self.parts,
            clock,
            pos.seq,
            &request,
            &mut self.scratch,
        )
    }

    /// Runs a request addressed by key, like `Client::submit`.
    pub fn run_keyed<K: Hash + ?Sized>(
        &mut self,
        service: ServiceRef,
        key: &K,
        event: A::Event,
        timestamp_ms: u64,
    ) -> Result<Option<A::Output>, AbortReason> {
        let partition = service.partition_of(key);
        self.run(service, partition, event, timestamp_ms)
    }

    /// Order-independent hash of all committed rows (comparable with `Runtime::state_hash`).
    pub fn state_hash(&self) -> u64 {
        combine_hashes(self.parts.iter().map(|p| p.lock().state_hash()))
    }

    /// Runs `f` over every partition of `services` and collects the results, like
    /// `Runtime::query`.
    pub fn query<R: Send + 'static>(
        &self,
        services: &[ServiceRef],
        f: impl Fn(&crate::query::ReadView<'_>) -> R,
    ) -> Vec<R> {
        let mut out = Vec::new();
        for s in services {
            for p in 0..s.n_partitions {
                let part = self.parts[s.gp(p) as usize].lock();
                out.push(f(&crate::query::ReadView::new(&part, &self.app)));
            }
        }
        out
    }
}

/// Combines per-partition hashes into one, position-sensitively.
pub(crate) fn combine_hashes(hashes: impl Iterator<Item = u64>) -> u64 {
    hashes
        .enumerate()
        .fold(0xcbf2_9ce4_8422_2325u64, |acc, (i, h)| {
            (acc ^ h.rotate_left((i % 64) as u32)).wrapping_mul(0x0100_0000_01b3)
        })
}
