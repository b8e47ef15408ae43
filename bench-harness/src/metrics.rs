//! Measurements of one system's run: per operation type committed/aborted counts, abort reasons,
//! latency histograms, and per-second throughput.
//!
//! Each driver task owns one [`Recorder`] (no sharing on the hot path); the recorders are
//! merged when the run ends. The live progress counter is the only shared state, updated in
//! batches so clients do not fight over one cache line.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use txn::AbortReason;

/// Highest latency the histograms track: anything slower is clamped to it.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Completions a recorder counts locally before publishing them to the live counter.
const LIVE_FLUSH_EVERY: u64 = 256;

/// How one operation ended.
pub enum Completion<'a> {
    Committed,
    Aborted(&'a AbortReason),
    /// The system failed the request (e.g. storage failure, stopped runtime).
    Error(&'a txn::TxnError),
}

/// Counts of one operation type.
pub struct TypeRecord {
    /// Latency of committed operations, in nanoseconds.
    pub latency_ns: Histogram<u64>,
    pub committed: u64,
    pub aborted: u64,
    pub errors: u64,
    /// Sum of `Op::Txn::effect` over committed operations.
    pub effect: i128,
    /// Aborts by category (see [`abort_category`]), in order of first occurrence: a short list
    /// (a workload has a handful of abort kinds) that is scanned without allocating.
    pub aborts: Vec<(AbortCategory, u64)>,
    pub first_error: Option<String>,
}

impl TypeRecord {
    fn new() -> Self {
        TypeRecord {
            latency_ns: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .expect("valid histogram bounds"),
            committed: 0,
            aborted: 0,
            errors: 0,
            effect: 0,
            aborts: Vec::new(),
            first_error: None,
        }
    }

    fn merge(&mut self, o: TypeRecord) {
        self.latency_ns
            .add(&o.latency_ns)
            .expect("histograms with equal bounds merge");
        self.committed += o.committed;
        self.aborted += o.aborted;
        self.errors += o.errors;
        self.effect += o.effect;
        for (category, n) in o.aborts {
            match self.aborts.iter_mut().find(|(c, _)| *c == category) {
                Some((_, count)) => *count += n,
                None => self.aborts.push((category, n)),
            }
        }
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

/// Everything one driver (or all of them, merged) measured.
pub struct Recorder {
    pub types: Vec<TypeRecord>,
    /// Committed and aborted operations completed in second `i` of the run.
    pub committed_per_s: Vec<u64>,
    pub aborted_per_s: Vec<u64>,
    /// The slowest committed operation completed in second `i` of the run, in nanoseconds:
    /// when in the run the worst latencies happened.
    pub max_latency_ns_per_s: Vec<u64>,
    /// Open loop: arrivals skipped because every client slot was busy.
    pub late: u64,
    live: Arc<AtomicU64>,
    unpublished: u64,
}

impl Recorder {
    pub fn new(n_types: usize, live: Arc<AtomicU64>) -> Self {
        Recorder {
            types: (0..n_types).map(|_| TypeRecord::new()).collect(),
            committed_per_s: Vec::new(),
            aborted_per_s: Vec::new(),
            max_latency_ns_per_s: Vec::new(),
            late: 0,
            live,
            unpublished: 0,
        }
    }

    /// Records one completed operation of type `ty` that took `latency` and completed `at`
    /// after the start of the run.
    #[inline]
    pub fn record(
        &mut self,
        ty: usize,
        latency: Duration,
        at: Duration,
        effect: i64,
        completion: Completion<'_>,
    ) {
        let second = at.as_secs() as usize;
        let t = &mut self.types[ty];
        match completion {
            Completion::Committed => {
                t.committed += 1;
                t.effect += i128::from(effect);
                let latency_ns = (latency.as_nanos() as u64).clamp(1, LATENCY_NS_MAX);
                t.latency_ns.saturating_record(latency_ns);
                bump(&mut self.committed_per_s, second);
                raise(&mut self.max_latency_ns_per_s, second, latency_ns);
                self.unpublished += 1;
                if self.unpublished == LIVE_FLUSH_EVERY {
                    self.publish();
                }
            }
            Completion::Aborted(reason) => {
                t.aborted += 1;
                match t.aborts.iter_mut().find(|(c, _)| c.is_of(reason)) {
                    Some((_, n)) => *n += 1,
                    None => t.aborts.push((abort_category(reason), 1)),
                }
                bump(&mut self.aborted_per_s, second);
            }
            Completion::Error(e) => {
                t.errors += 1;
                t.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }

    /// Publishes locally counted commits to the live counter.
    pub fn publish(&mut self) {
        self.live.fetch_add(self.unpublished, Ordering::Relaxed);
        self.unpublished = 0;
    }

    /// Adds another recorder's measurements to this one.
    pub fn merge(&mut self, mut o: Recorder) {
        o.publish();
        for (t, ot) in self.types.iter_mut().zip(o.types) {
            t.merge(ot);
        }
        add_series(&mut self.committed_per_s, &o.committed_per_s);
        add_series(&mut self.aborted_per_s, &o.aborted_per_s);
        for (second, max) in o.max_latency_ns_per_s.iter().enumerate() {
            raise(&mut self.max_latency_ns_per_s, second, *max);
        }
        self.late += o.late;
    }

    pub fn committed(&self) -> u64 {
        self.types.iter().map(|t| t.committed).sum()
    }

    pub fn aborted(&self) -> u64 {
        self.types.iter().map(|t| t.aborted).sum()
    }

    pub fn errors(&self) -> u64 {
        self.types.iter().map(|t| t.errors).sum()
    }

    /// The latency histogram of all committed operations.
    pub fn all_latency(&self) -> Histogram<u64> {
        let mut h =
            Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds");
        for t in &self.types {
            h.add(&t.latency_ns)
                .expect("histograms with equal bounds merge");
        }
        h
    }
}

fn bump(series: &mut Vec<u64>, second: usize) {
    if series.len() <= second {
        series.resize(second + 1, 0);
    }
    series[second] += 1;
}

/// Raises `series[second]` to `value` if it is below.
fn raise(series: &mut Vec<u64>, second: usize, value: u64) {
    if series.len() <= second {
        series.resize(second + 1, 0);
    }
    series[second] = series[second].max(value);
}

fn add_series(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// The group an abort is counted in: the service that aborted (none for system aborts that
/// name no service) and the reason's stable kind (`AbortReason::category`: the business kind
/// of a handler's abort, `"constraint"`, `"limit_steps"`, ...). Messages are never parsed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AbortCategory {
    pub service: Option<String>,
    pub kind: String,
}

impl AbortCategory {
    /// Whether `reason` falls in this category (compares without allocating).
    pub fn is_of(&self, reason: &AbortReason) -> bool {
        self.kind == reason.category() && self.service.as_deref() == reason.service()
    }

    /// Whether aborts of this category point at a bug in a handler or the runtime rather than
    /// at a business rule or a load limit.
    pub fn is_bug(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "wrong_partition" | "foreign_table" | "not_ordered" | "handler_panicked"
        )
    }
}

impl std::fmt::Display for AbortCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bug = if self.is_bug() { "BUG " } else { "" };
        match &self.service {
            Some(service) => write!(f, "{bug}{service}: {}", self.kind),
            None => write!(f, "{bug}{}", self.kind),
        }
    }
}

/// The category `reason` is counted in.
pub fn abort_category(reason: &AbortReason) -> AbortCategory {
    AbortCategory {
        service: reason.service().map(str::to_string),
        kind: reason.category().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorders_merge_counts_series_and_histograms() {
        // Goal: merging two recorders adds everything up, including per-second series.
        let live = Arc::new(AtomicU64::new(0));
        let mut a = Recorder::new(2, live.clone());
        let mut b = Recorder::new(2, live.clone());
        let reason = AbortReason::User {
            service: "accounts".into(),
            kind: "insufficient_balance".into(),
            message: "insufficient balance: account 3 holds 1".into(),
        };
        a.record(
            0,
            Duration::from_millis(2),
            Duration::from_millis(100),
            5,
            Completion::Committed,
        );
        b.record(
            0,
            Duration::from_millis(4),
            Duration::from_millis(2500),
            7,
            Completion::Committed,
        );
        b.record(
            1,
            Duration::from_millis(1),
            Duration::from_millis(2600),
            0,
            Completion::Aborted(&reason),
        );
        a.merge(b);
        assert_eq!(a.committed(), 2);
        assert_eq!(a.aborted(), 1);
        assert_eq!(a.types[0].effect, 12);
        assert_eq!(a.committed_per_s, vec![1, 0, 1]);
        assert_eq!(a.aborted_per_s, vec![0, 0, 1]);
        assert_eq!(
            a.types[1].aborts,
            vec![(
                AbortCategory {
                    service: Some("accounts".into()),
                    kind: "insufficient_balance".into()
                },
                1
            )]
        );
        assert_eq!(a.all_latency().len(), 2);
        assert_eq!(
            live.load(Ordering::Relaxed),
            1,
            "b's commit was published on merge"
        );
    }

    #[test]
    fn aborts_group_by_service_and_kind_not_by_message_text() {
        // Goal: business aborts of one kind share a category whatever their messages say
        // (colons included), the same kind in two services stays apart, and a per-transaction
        // limit has its own category per limit.
        let mut rec = Recorder::new(1, Arc::new(AtomicU64::new(0)));
        let user = |service: &str, kind: &str, message: &str| AbortReason::User {
            service: service.into(),
            kind: kind.into(),
            message: message.into(),
        };
        let reasons = [
            user("stock", "stock_shortage", "product 1: 3 available"),
            user("stock", "stock_shortage", "product 2 has none"),
            user("cart", "stock_shortage", "stock shortage: product 2"),
            user("stock", "version_mismatch", "stock shortage: product 2"),
            AbortReason::LimitExceeded {
                limit: txn::LimitKind::Steps,
                max: 10,
            },
            AbortReason::LimitExceeded {
                limit: txn::LimitKind::Work,
                max: 10,
            },
        ];
        for reason in &reasons {
            rec.record(
                0,
                Duration::ZERO,
                Duration::ZERO,
                0,
                Completion::Aborted(reason),
            );
        }
        let category = |service: Option<&str>, kind: &str| AbortCategory {
            service: service.map(str::to_string),
            kind: kind.into(),
        };
        assert_eq!(
            rec.types[0].aborts,
            vec![
                (category(Some("stock"), "stock_shortage"), 2),
                (category(Some("cart"), "stock_shortage"), 1),
                (category(Some("stock"), "version_mismatch"), 1),
                (category(None, "limit_steps"), 1),
                (category(None, "limit_work"), 1),
            ]
        );
        assert_eq!(
            category(Some("stock"), "stock_shortage").to_string(),
            "stock: stock_shortage"
        );
    }
}
