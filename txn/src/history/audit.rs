//! The audit trail of one subject's personal data: every read of a row of theirs with personal
//! fields, by replay with a subject filter on the trace (no cost in the live runtime).

use super::replica::Replayed;
use crate::app::{App, AppDef};
use crate::epoch::TxnResult;
use crate::ids::{RequestId, Tid};
use crate::trace::TraceOp;
use serde::Serialize;
use serde_json::Value as Json;

/// One read of a subject's personal data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub tid: Tid,
    pub epoch: u64,
    /// The id of the request whose transaction read.
    pub request_id: Option<RequestId>,
    /// The service whose handler read, and the event kind that handler takes.
    pub service: String,
    pub handler: String,
    /// The purposes the handler declares.
    pub purposes: Vec<String>,
    /// `service.table` and the key of the row read.
    pub table: String,
    pub key: Json,
    /// The personal fields of the row (a read returns the whole row).
    pub fields: Vec<String>,
    /// Whether the reading run is the one that committed: `false` for a transaction that
    /// aborted, or for a run the serial fallback discarded and ran again (its data was read
    /// all the same).
    pub committed: bool,
    /// The epoch's logged timestamp, ms since the Unix epoch.
    pub logged_ms: u64,
}

/// Appends the audited reads of one replayed epoch to `out`, in execution order per
/// transaction: by TID, run, wave, then step.
pub(super) fn epoch<A: App>(app: &AppDef<A>, r: Replayed<'_, A>, out: &mut Vec<AuditEntry>) {
    let mut records: Vec<_> = r.records.into_iter().enumerate().collect();
    records.sort_by_key(|(i, (rec, _))| (rec.at.seq, rec.at.run, rec.at.wave_key, rec.at.pos, *i));
    for (_, (record, last_run)) in records {
        let TraceOp::Read { table, key, .. } = record.op else {
            continue;
        };
        let at = record.at;
        let Some(rule) = app.governance.rule(table.0, table.1) else {
            continue;
        };
        let committed = matches!(
            r.results.get(at.seq as usize),
            Some(TxnResult::Committed { .. })
        ) && at.run == last_run;
        let owner = &app.services[table.0 as usize];
        out.push(AuditEntry {
            tid: Tid::new(r.env.epoch, at.seq),
            epoch: r.env.epoch,
            request_id: r.env.requests.get(at.seq as usize).and_then(|q| q.id),
            service: app.services[at.service as usize].name.clone(),
            handler: at.kind.to_string(),
            purposes: app
                .governance
                .purpose_names(app.governance.handler_mask(at.service, at.kind)),
            table: format!("{}.{}", owner.name, owner.tables[table.1 as usize].name),
            key,
            fields: rule.fields.iter().map(|(f, _, _)| f.to_string()).collect(),
            committed,
            logged_ms: r.env.timestamp_ms,
        });
    }
}
