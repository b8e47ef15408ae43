//! Step tracing for provenance: while a history replay runs, each partition may carry a
//! [`PartitionTrace`] that `execute_step` and `TxnCtx` report every read, write, delta, scan,
//! emit, abort and output to. The live runtime never installs one, so each hook costs one
//! predictable branch on `Option::is_some` there.
//!
//! A leaf of the handler core: it names only `ids`, `error` and the row bounds, so the handler
//! core can call it without an import cycle; `history` assembles what it records.

use crate::error::AbortReason;
use crate::ids::Seq;
use crate::row::{Key, Row};
use serde::Serialize;
use serde_json::Value as Json;
use std::sync::Arc;

/// What a history replay wants recorded: everything else is dropped at the hook, so a row's
/// history does not record every access of every transaction.
#[derive(Clone, Debug)]
pub(crate) enum TraceFilter {
    /// Accesses of one row (`key` as JSON) of table `table` of service `service`, by any
    /// transaction, and nothing else.
    Row { service: u32, table: u32, key: Json },
    /// Everything transaction `seq` of `epoch` does.
    Txn { epoch: u64, seq: Seq },
    /// Reads of personal data of one subject (an audit): nothing else, and no values.
    Subject(SubjectFilter),
}

/// Names the subject of a row of a table with personal fields: `(service, table)`, then the
/// key and the row behind `Any`; `None` for a table without personal fields.
pub(crate) type SubjectOfRow =
    Arc<dyn Fn((u32, u32), &dyn std::any::Any, &dyn std::any::Any) -> Option<String> + Send + Sync>;

/// The subject an audit wants, and how to tell a row's subject.
#[derive(Clone)]
pub(crate) struct SubjectFilter {
    pub subject: String,
    pub subject_of: SubjectOfRow,
}

impl std::fmt::Debug for SubjectFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SubjectFilter({:?})", self.subject)
    }
}

/// One thing a step did, with tables named by (service, table) indexes.
#[derive(Clone, Debug)]
pub(crate) enum TraceOp {
    /// A step began (recorded under a `Txn` filter only, so steps that touch nothing show).
    Began,
    Read {
        table: (u32, u32),
        key: Json,
        value: Option<Json>,
    },
    /// A put (`Some`) or a delete (`None`).
    Write {
        table: (u32, u32),
        key: Json,
        value: Option<Json>,
    },
    Delta {
        table: (u32, u32),
        key: Json,
        field: &'static str,
        delta: i64,
    },
    /// A scan or index lookup, with the keys of the rows it returned.
    Scan {
        table: (u32, u32),
        keys: Vec<Json>,
    },
    Emit {
        service: u32,
        partition: u32,
        kind: &'static str,
        event: Json,
    },
    Abort(AbortReason),
    Output(Json),
}

/// Where a recorded operation ran: its transaction's run and its step in canonical order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StepAt {
    pub epoch: u64,
    pub seq: Seq,
    /// How many times the transaction had started before this run in its epoch (0: its first
    /// run; 1: the serial pass after the parallel pass lost a conflict).
    pub run: u32,
    /// The transaction's step count when the step's wave began: equal for all steps of a wave
    /// and growing from wave to wave, so `(wave_key, pos)` is the canonical step order.
    pub wave_key: u64,
    pub pos: u32,
    pub service: u32,
    pub partition: u32,
    pub kind: &'static str,
}

/// One recorded operation.
#[derive(Clone, Debug)]
pub(crate) struct TraceRecord {
    pub at: StepAt,
    pub op: TraceOp,
}

/// Where every partition's trace goes during one replay.
pub(crate) struct TraceSink {
    filter: TraceFilter,
    state: parking_lot::Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    /// Runs started per transaction of the epoch being replayed (cleared between epochs).
    runs: rustc_hash::FxHashMap<Seq, u32>,
    records: Vec<TraceRecord>,
}

impl TraceSink {
    pub fn new(filter: TraceFilter) -> Arc<Self> {
        Arc::new(TraceSink {
            filter,
            state: parking_lot::Mutex::new(SinkState::default()),
        })
    }

    /// Takes the records of the epoch just replayed and forgets its runs.
    pub fn take_epoch(&self) -> Vec<(TraceRecord, u32)> {
        let mut state = self.state.lock();
        let records = std::mem::take(&mut state.records);
        let runs = std::mem::take(&mut state.runs);
        records
            .into_iter()
            .map(|r| {
                let last_run = runs.get(&r.at.seq).copied().unwrap_or(1).saturating_sub(1);
                (r, last_run)
            })
            .collect()
    }
}

/// The trace of one partition: the sink and the step running there now.
pub(crate) struct PartitionTrace {
    sink: Arc<TraceSink>,
    step: StepAt,
    /// Whether the running step's transaction is the one a `Txn` filter wants.
    whole_step: bool,
}

impl PartitionTrace {
    pub fn new(sink: Arc<TraceSink>) -> Box<Self> {
        Box::new(PartitionTrace {
            sink,
            step: StepAt::default(),
            whole_step: false,
        })
    }

    /// A handler step begins; `wave_key` is its transaction's step count at the wave's start
    /// (1 for the inbound step, which begins a new run of the transaction).
    pub fn step_started(&mut self, at: StepAt) {
        let mut state = self.sink.state.lock();
        let runs = state.runs.entry(at.seq).or_insert(0);
        if at.wave_key <= 1 {
            *runs += 1;
        }
        self.step = StepAt {
            run: runs.saturating_sub(1),
            ..at
        };
        self.whole_step = matches!(self.sink.filter,
            TraceFilter::Txn { epoch, seq } if epoch == at.epoch && seq == at.seq);
        if self.whole_step {
            state.records.push(TraceRecord {
                at: self.step,
                op: TraceOp::Began,
            });
        }
    }

    fn push(&self, op: TraceOp) {
        self.sink
            .state
            .lock()
            .records
            .push(TraceRecord { at: self.step, op });
    }

    /// The row filter's match for an access of `key` in `table`, if the access is wanted.
    fn wants<K: Key>(&self, table: (u32, u32), key: &K) -> Option<Json> {
        let json = || serde_json::to_value(key).unwrap_or(Json::Null);
        match &self.sink.filter {
            TraceFilter::Txn { .. } => self.whole_step.then(json),
            TraceFilter::Row {
                service,
                table: t,
                key: wanted,
            } => {
                if (*service, *t) != table {
                    return None;
                }
                let key = json();
                (key == *wanted).then_some(key)
            }
            TraceFilter::Subject(_) => None,
        }
    }

    pub fn read<K: Key, V: Row>(&self, table: (u32, u32), key: &K, value: Option<&V>) {
        if let TraceFilter::Subject(filter) = &self.sink.filter {
            let subject = value.and_then(|v| (filter.subject_of)(table, key, v));
            if subject.is_some_and(|s| s == filter.subject) {
                let key = to_json(key);
                self.push(TraceOp::Read {
                    table,
                    key,
                    value: None,
                });
            }
            return;
        }
        if let Some(key) = self.wants(table, key) {
            let value = value.map(to_json);
            self.push(TraceOp::Read { table, key, value });
        }
    }

    pub fn write<K: Key, V: Row>(&self, table: (u32, u32), key: &K, value: Option<&V>) {
        if let Some(key) = self.wants(table, key) {
            let value = value.map(to_json);
            self.push(TraceOp::Write { table, key, value });
        }
    }

    pub fn delta<K: Key>(&self, table: (u32, u32), key: &K, field: &'static str, delta: i64) {
        if let Some(key) = self.wants(table, key) {
            self.push(TraceOp::Delta {
                table,
                key,
                field,
                delta,
            });
        }
    }

    /// A scan or lookup returned `rows`: each wanted row is a read, and under a `Txn` filter
    /// the scan itself is recorded with the keys it returned.
    pub fn scan<K: Key, V: Row>(&self, table: (u32, u32), rows: &[(K, V)]) {
        for (key, value) in rows {
            self.read(table, key, Some(value));
        }
        if self.whole_step {
            let keys = rows.iter().map(|(k, _)| to_json(k)).collect();
            self.push(TraceOp::Scan { table, keys });
        }
    }

    pub fn emit<E: Serialize>(&self, service: u32, partition: u32, kind: &'static str, event: &E) {
        if self.whole_step {
            let event = to_json(event);
            self.push(TraceOp::Emit {
                service,
                partition,
                kind,
                event,
            });
        }
    }

    /// The step ended: its abort reason (row filters need it to drop nothing: aborted
    /// transactions are left out by the assembler) or output.
    pub fn step_ended<O: Serialize>(&self, reason: Option<&AbortReason>, output: Option<&O>) {
        if !self.whole_step {
            return;
        }
        match (reason, output) {
            (Some(reason), _) => self.push(TraceOp::Abort(reason.clone())),
            (None, Some(output)) => self.push(TraceOp::Output(to_json(output))),
            (None, None) => {}
        }
    }
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Json {
    serde_json::to_value(value).unwrap_or_else(|e| Json::String(format!("<not JSON: {e}>")))
}

/// Tells the partition's trace, if any, that the step at `(seq, pos)` of `epoch` begins
/// (`wave_key`: see [`StepAt::wave_key`]). One branch when no trace is installed.
#[inline]
pub(crate) fn step_started<A: crate::contract::App>(
    trace: &mut Option<Box<PartitionTrace>>,
    (epoch, seq, pos): (u64, Seq, u32),
    wave_key: u64,
    (service, partition): (u32, u32),
    event: &A::Event,
) {
    if let Some(trace) = trace {
        trace.step_started(StepAt {
            epoch,
            seq,
            run: 0,
            wave_key,
            pos,
            service,
            partition,
            kind: A::event_kind(event),
        });
    }
}

/// Tells the partition's trace, if any, how the step ended. One branch when none is installed.
#[inline]
pub(crate) fn step_ended<O: Serialize>(
    trace: &Option<Box<PartitionTrace>>,
    reason: Option<&AbortReason>,
    output: Option<&O>,
) {
    if let Some(trace) = trace {
        trace.step_ended(reason, output);
    }
}
