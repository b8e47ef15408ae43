//! Turns traced records of replayed epochs into answers: a row's versions with their readers,
//! and one transaction's steps. Only the last run of a transaction in its epoch counts (a
//! conflict loser's first-pass run is discarded, as its writes were), and only committed
//! transactions change or read a version; records are ordered by `SerialPos` (epoch, pass,
//! seq), then canonical step order.

use super::replica::Replayed;
use crate::app::{App, AppDef};
use crate::epoch::TxnResult;
use crate::error::AbortReason;
use crate::ids::{RequestId, Seq, Tid};
use crate::trace::{TraceOp, TraceRecord};
use serde::Serialize;
use serde_json::Value as Json;
use std::sync::Arc;

/// A committed transaction, as history names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TxnRef {
    pub tid: Tid,
    pub epoch: u64,
    /// 0: the parallel first pass; 1: the serial fallback.
    pub pass: u8,
    pub seq: Seq,
    pub request_id: Option<RequestId>,
    /// The service its request was sent to, and the request's event kind.
    pub service: String,
    pub event_kind: String,
    /// The epoch's logged timestamp (what `TxnCtx::now_ms` returned), ms since the Unix epoch.
    pub logged_ms: u64,
}

/// How one committed write changed the row.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Put { value: Json },
    Delete,
    Delta { field: String, delta: i64 },
}

/// One version of a row: the write that made it and the transactions that read it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Version {
    pub writer: TxnRef,
    pub change: Change,
    /// Committed transactions (other than the writer) that read this version, in serial order.
    pub readers: Vec<TxnRef>,
}

/// The history of one row over the retained log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RowHistory {
    pub service: String,
    pub table: String,
    pub key: Json,
    /// Readers of the row before its first retained write (it did not exist then).
    pub read_before_first_write: Vec<TxnRef>,
    pub versions: Vec<Version>,
    /// The last epoch replayed.
    pub last_epoch: u64,
}

/// One thing a step did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Access {
    Read {
        table: String,
        key: Json,
        value: Option<Json>,
    },
    /// A put (`Some`) or a delete (`None`).
    Write {
        table: String,
        key: Json,
        value: Option<Json>,
    },
    Delta {
        table: String,
        key: Json,
        field: String,
        delta: i64,
    },
    /// A scan or index lookup and the keys of the rows it returned.
    Scan { table: String, keys: Vec<Json> },
    Emit {
        service: String,
        partition: u32,
        kind: String,
        event: Json,
    },
}

/// One handler step of a replayed transaction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepReplay {
    /// Its wave (0: the inbound step) and position in the wave: canonical step order.
    pub wave: u32,
    pub pos: u32,
    pub service: String,
    pub partition: u32,
    pub event_kind: String,
    pub accesses: Vec<Access>,
    /// The step aborted the transaction with this reason.
    pub aborted: Option<AbortReason>,
    /// The output the step set.
    pub output: Option<Json>,
}

/// How a replayed transaction ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReplayOutcome {
    Committed {
        pass: u8,
        output: Option<Json>,
    },
    Aborted {
        pass: u8,
        reason: AbortReason,
    },
    /// It lost a conflict and its request was retried in a later epoch under a new TID
    /// (`Fallback::NextEpoch`).
    Retried,
}

/// What one transaction did, as it ran.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TxnReplay {
    pub tid: Tid,
    pub request_id: Option<RequestId>,
    pub logged_ms: u64,
    pub service: String,
    pub event_kind: String,
    /// The request's event.
    pub event: Json,
    pub outcome: ReplayOutcome,
    /// Its handler steps in canonical order (constraint steps are not handler steps).
    pub steps: Vec<StepReplay>,
}

/// The pass a transaction's result came from, if it committed.
fn committed_pass<O>(result: &TxnResult<O>) -> Option<u8> {
    match result {
        TxnResult::Committed { pass, .. } => Some(*pass),
        _ => None,
    }
}

/// The records of the transactions' last runs that `keep` accepts, in serial order, each with
/// the pass its transaction's result came from.
fn in_serial_order<O>(
    records: Vec<(TraceRecord, u32)>,
    results: &[TxnResult<O>],
    keep: impl Fn(&TxnResult<O>) -> Option<u8>,
) -> Vec<(TraceRecord, u8)> {
    let mut kept: Vec<(usize, TraceRecord, u8)> = records
        .into_iter()
        .enumerate()
        .filter(|(_, (r, last_run))| r.at.run == *last_run)
        .filter_map(|(i, (r, _))| {
            let pass = keep(results.get(r.at.seq as usize)?)?;
            Some((i, r, pass))
        })
        .collect();
    // Arrival order `i` breaks ties: one step's records arrive in the order it made them.
    kept.sort_by_key(|(i, r, pass)| (*pass, r.at.seq, r.at.wave_key, r.at.pos, *i));
    kept.into_iter().map(|(_, r, pass)| (r, pass)).collect()
}

/// Names a transaction of a replayed epoch.
fn txn_ref<A: App>(app: &AppDef<A>, r: &Replayed<'_, A>, seq: Seq, pass: u8) -> TxnRef {
    let request = &r.env.requests[seq as usize];
    let (service, _) = app.locate(request.target);
    TxnRef {
        tid: Tid::new(r.env.epoch, seq),
        epoch: r.env.epoch,
        pass,
        seq,
        request_id: request.id,
        service: app.services[service as usize].name.clone(),
        event_kind: A::event_kind(&request.event).to_string(),
        logged_ms: r.env.timestamp_ms,
    }
}

fn table_name<A: App>(app: &AppDef<A>, (service, table): (u32, u32)) -> String {
    let s = &app.services[service as usize];
    format!("{}.{}", s.name, s.tables[table as usize].name)
}

/// Collects a row's versions epoch by epoch.
pub(super) struct RowAssembler<A: App> {
    app: Arc<AppDef<A>>,
    table: (u32, u32),
    key: Json,
    before: Vec<TxnRef>,
    versions: Vec<Version>,
}

impl<A: App> RowAssembler<A> {
    pub fn new(app: &Arc<AppDef<A>>, table: (u32, u32), key: Json) -> Self {
        RowAssembler {
            app: app.clone(),
            table,
            key,
            before: Vec::new(),
            versions: Vec::new(),
        }
    }

    /// Adds the committed reads and writes of the row in one replayed epoch.
    pub fn epoch(&mut self, mut r: Replayed<'_, A>) {
        let records = std::mem::take(&mut r.records);
        for (record, pass) in in_serial_order(records, r.results, committed_pass) {
            let txn = txn_ref(&self.app, &r, record.at.seq, pass);
            let change = match record.op {
                TraceOp::Read { .. } => {
                    self.add_reader(txn);
                    continue;
                }
                TraceOp::Write {
                    value: Some(value), ..
                } => Change::Put { value },
                TraceOp::Write { value: None, .. } => Change::Delete,
                TraceOp::Delta { field, delta, .. } => Change::Delta {
                    field: field.to_string(),
                    delta,
                },
                _ => continue,
            };
            self.versions.push(Version {
                writer: txn,
                change,
                readers: Vec::new(),
            });
        }
    }

    /// A read sees the latest version before it in serial order.
    fn add_reader(&mut self, txn: TxnRef) {
        let readers = match self.versions.last_mut() {
            Some(v) if v.writer.tid == txn.tid => return,
            Some(v) => &mut v.readers,
            None => &mut self.before,
        };
        if readers.last().is_none_or(|last| last.tid != txn.tid) {
            readers.push(txn);
        }
    }

    pub fn finish(self, last_epoch: u64) -> super::RowHistory {
        let (service, table) = (self.table.0 as usize, self.table.1 as usize);
        let s = &self.app.services[service];
        RowHistory {
            service: s.name.clone(),
            table: s.tables[table].name.clone(),
            key: self.key,
            read_before_first_write: self.before,
            versions: self.versions,
            last_epoch,
        }
    }
}

/// Transaction `tid`'s steps and outcome in its replayed epoch (`None` if it has no such seq).
pub(super) fn txn_replay<A: App>(
    app: &AppDef<A>,
    tid: Tid,
    mut r: Replayed<'_, A>,
) -> Option<TxnReplay> {
    let seq = tid.seq();
    let request = r.env.requests.get(seq as usize)?;
    let (outcome, pass) = match &r.results[seq as usize] {
        TxnResult::Committed { pass, output } => (
            ReplayOutcome::Committed {
                pass: *pass,
                output: output.as_ref().map(to_json),
            },
            *pass,
        ),
        TxnResult::Aborted { pass, reason } => (
            ReplayOutcome::Aborted {
                pass: *pass,
                reason: reason.clone(),
            },
            *pass,
        ),
        TxnResult::Retry => (ReplayOutcome::Retried, 0),
    };
    let records = std::mem::take(&mut r.records);
    let ours = in_serial_order(records, r.results, |_| Some(pass));
    let steps = steps_of(app, ours.into_iter().filter(|(rec, _)| rec.at.seq == seq));
    let named = txn_ref(app, &r, seq, pass);
    Some(TxnReplay {
        tid,
        request_id: request.id,
        logged_ms: r.env.timestamp_ms,
        service: named.service,
        event_kind: named.event_kind,
        event: to_json(&request.event),
        outcome,
        steps,
    })
}

/// Groups one transaction's records (in canonical order) into steps.
fn steps_of<A: App>(
    app: &AppDef<A>,
    records: impl Iterator<Item = (TraceRecord, u8)>,
) -> Vec<StepReplay> {
    let mut steps: Vec<StepReplay> = Vec::new();
    let mut waves: Vec<u64> = Vec::new();
    for (record, _) in records {
        let at = record.at;
        if waves.last() != Some(&at.wave_key) {
            waves.push(at.wave_key);
        }
        let wave = (waves.len() - 1) as u32;
        let step = match steps.last_mut() {
            Some(s) if s.wave == wave && s.pos == at.pos => s,
            _ => {
                steps.push(StepReplay {
                    wave,
                    pos: at.pos,
                    service: app.services[at.service as usize].name.clone(),
                    partition: at.partition,
                    event_kind: at.kind.to_string(),
                    accesses: Vec::new(),
                    aborted: None,
                    output: None,
                });
                steps.last_mut().expect("just pushed")
            }
        };
        let access = match record.op {
            TraceOp::Began => continue,
            TraceOp::Abort(reason) => {
                step.aborted = Some(reason);
                continue;
            }
            TraceOp::Output(output) => {
                step.output = Some(output);
                continue;
            }
            TraceOp::Read { table, key, value } => Access::Read {
                table: table_name(app, table),
                key,
                value,
            },
            TraceOp::Write { table, key, value } => Access::Write {
                table: table_name(app, table),
                key,
                value,
            },
            TraceOp::Delta {
                table,
                key,
                field,
                delta,
            } => Access::Delta {
                table: table_name(app, table),
                key,
                field: field.to_string(),
                delta,
            },
            TraceOp::Scan { table, keys } => Access::Scan {
                table: table_name(app, table),
                keys,
            },
            TraceOp::Emit {
                service,
                partition,
                kind,
                event,
            } => Access::Emit {
                service: app.services[service as usize].name.clone(),
                partition,
                kind: kind.to_string(),
                event,
            },
        };
        step.accesses.push(access);
    }
    steps
}

fn to_json<T: Serialize>(value: &T) -> Json {
    serde_json::to_value(value).unwrap_or_else(|e| Json::String(format!("<not JSON: {e}>")))
}
