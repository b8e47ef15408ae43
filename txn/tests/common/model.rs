//! A reference model of the chain application (`common::build`) that shares no execution code
//! with the runtime: one `BTreeMap` of `(service, key) → value`, each transaction applied alone
//! to a copy that is kept only if the transaction commits. A serializable run must give every
//! request the same reads, output or abort as this model does when the committed history is
//! applied in the runtime's reported serial order, and end in the same rows.

use super::{Ev, OpKind, Recorded};
use std::collections::BTreeMap;
use txn::{AbortReason, ServiceRef};

/// What one request does in the model: the reads it returns, or the abort a handler raises.
pub type ModelResult = Result<Option<Vec<i64>>, AbortReason>;

/// Every row of every service, keyed by `(service index, key)`.
pub type Rows = BTreeMap<(usize, u64), i64>;

/// The chain application's meaning, written out directly.
pub struct ChainModel {
    rows: Rows,
    /// Only for where rows live (a scan sums the rows of the partition owning its first key),
    /// which is the application's data placement, not the runtime's execution.
    services: Vec<ServiceRef>,
}

impl ChainModel {
    pub fn new(services: Vec<ServiceRef>) -> Self {
        Self {
            rows: Rows::new(),
            services,
        }
    }

    pub fn rows(&self) -> &Rows {
        &self.rows
    }

    /// Runs one chain alone on the current rows; its writes are kept only if it commits.
    pub fn apply(&mut self, ev: &Ev) -> ModelResult {
        let Ev::Chain { ops, idx, reads } = ev;
        let mut rows = self.rows.clone();
        let mut reads = reads.clone();
        for (i, op) in ops.iter().enumerate().skip(*idx) {
            let row = (op.svc, op.key);
            let cur = rows.get(&row).copied().unwrap_or(0);
            let abort = |message: String| AbortReason::User {
                service: format!("s{}", op.svc),
                kind: AbortReason::USER_KIND_DEFAULT.to_string(),
                message,
            };
            match &op.kind {
                OpKind::Read => reads.push(cur),
                OpKind::Add(delta) => {
                    reads.push(cur);
                    rows.insert(row, cur + delta);
                }
                OpKind::AddIfAtLeast { delta, min } => {
                    reads.push(cur);
                    if cur < *min {
                        return Err(abort(format!("key {} holds {cur} < {min}", op.key)));
                    }
                    rows.insert(row, cur + delta);
                }
                OpKind::Delete => {
                    reads.push(cur);
                    rows.remove(&row);
                }
                OpKind::Scan { width } => reads.push(self.scan_sum(&rows, op.svc, op.key, *width)),
                OpKind::Abort => return Err(abort(format!("op {i} always aborts"))),
            }
        }
        self.rows = rows;
        Ok(Some(reads))
    }

    /// The sum of the rows of service `svc` with keys in `key..key + width` that live in the
    /// partition owning `key`.
    fn scan_sum(&self, rows: &Rows, svc: usize, key: u64, width: u64) -> i64 {
        let service = self.services[svc];
        let home = service.partition_of(&key);
        rows.range((svc, key)..(svc, key + width))
            .filter(|((_, k), _)| service.partition_of(k) == home)
            .map(|(_, v)| *v)
            .sum()
    }
}

/// Applies `history` (sorted by serial position here) to a fresh model and asserts that every
/// request's result matches and that the model ends with `final_rows`. Returns how many
/// committed.
pub fn assert_matches_model(
    services: Vec<ServiceRef>,
    history: &mut [Recorded<super::ChainApp>],
    final_rows: &Rows,
    seed: u64,
) -> usize {
    history.sort_by_key(|r| r.pos);
    let mut model = ChainModel::new(services);
    let mut committed = 0;
    for (i, r) in history.iter().enumerate() {
        let expected = model.apply(&r.event);
        assert_eq!(
            r.result, expected,
            "seed {seed}: request #{i} at {:?} ({:?}) diverges from the BTreeMap model",
            r.pos, r.event
        );
        committed += usize::from(r.result.is_ok());
    }
    assert_eq!(
        model.rows(),
        final_rows,
        "seed {seed}: final rows differ from the BTreeMap model"
    );
    committed
}
