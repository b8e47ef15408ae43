//! Build-time analysis of merge-able deltas against the declared invariants: which declared
//! delta commits without coordination, by escrow, or only as a read-modify-write, and which
//! declaration is refused because it could break an invariant.

use std::fmt;

/// How handlers use deltas on one field, as declared with `AppBuilder::delta_field`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaUse {
    /// Only `TxnCtx::add` with deltas `>= 0` (counters that only grow).
    Increments,
    /// Decrements with `TxnCtx::add_bounded` at the field's declared minimum (stock, balances).
    BoundedDecrements,
    /// `TxnCtx::add` with deltas of either sign, unbounded.
    Any,
}

impl fmt::Display for DeltaUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeltaUse::Increments => "increments",
            DeltaUse::BoundedDecrements => "bounded decrements",
            DeltaUse::Any => "deltas of either sign",
        })
    }
}

/// What the analysis concluded for one declared delta use against one invariant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Merging any states the deltas produce keeps the invariant: no coordination.
    Confluent,
    /// Safe by escrow: commits in parallel while the bound is sure to hold, else serially.
    Escrow,
    /// The invariant cannot be analyzed (an opaque check, a unique value, a foreign key, an
    /// index): the delta runs as a read-modify-write and conflicts like one.
    Coordinated,
    /// The delta could break the invariant without escrow: refused by `AppBuilder::build`.
    Unsafe,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Confluent => "confluent",
            Verdict::Escrow => "escrow",
            Verdict::Coordinated => "coordinated",
            Verdict::Unsafe => "unsafe",
        })
    }
}

/// One row of `AppDef::coordination_report`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordinationEntry {
    pub service: String,
    pub table: String,
    pub field: &'static str,
    pub operation: DeltaUse,
    /// The invariant, as text (`"stock >= 0"`, `"check \"positive\""`, `"none"`).
    pub invariant: String,
    pub verdict: Verdict,
    pub why: &'static str,
}

/// A Markdown table row: `| service.table.field | operation | invariant | verdict | why |`.
impl fmt::Display for CoordinationEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "| {}.{}.{} | {} | {} | {} | {} |",
            self.service,
            self.table,
            self.field,
            self.operation,
            self.invariant,
            self.verdict,
            self.why
        )
    }
}

/// What one table declares that the analysis reads, by name only.
#[derive(Default)]
pub(crate) struct TableSummary {
    pub checks: Vec<String>,
    pub field_mins: Vec<(&'static str, i64)>,
    pub delta_uses: Vec<(&'static str, DeltaUse)>,
    /// Unique values, foreign keys and secondary indexes: whole-row constraints.
    pub n_whole_row: usize,
}

/// The refusals among `entries`, one problem text each (for `AppBuilder::build`).
pub(crate) fn unsafe_pairs(entries: &[CoordinationEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.verdict == Verdict::Unsafe)
        .map(|e| {
            format!(
                "{}.{}: {} on field {} could break the invariant {}: {}",
                e.service, e.table, e.operation, e.field, e.invariant, e.why
            )
        })
        .collect()
}

/// Classifies every declared delta use of one table against each of its invariants.
pub(crate) fn classify(
    service: &str,
    table: &str,
    summary: &TableSummary,
    out: &mut Vec<CoordinationEntry>,
) {
    for (field, operation) in &summary.delta_uses {
        let entry = |invariant: String, verdict, why| CoordinationEntry {
            service: service.to_string(),
            table: table.to_string(),
            field,
            operation: *operation,
            invariant,
            verdict,
            why,
        };
        let before = out.len();
        for (bounded, min) in summary.field_mins.iter().filter(|(f, _)| f == field) {
            let (verdict, why) = against_min(*operation);
            out.push(entry(format!("{bounded} >= {min}"), verdict, why));
        }
        for check in &summary.checks {
            let why = "the check is opaque: the delta runs as a read-modify-write";
            out.push(entry(format!("check {check:?}"), Verdict::Coordinated, why));
        }
        if summary.n_whole_row > 0 {
            let why = "unique values, foreign keys and indexes read the whole row: the delta \
                       runs as a read-modify-write";
            out.push(entry(
                "whole-row constraints".into(),
                Verdict::Coordinated,
                why,
            ));
        }
        if out.len() == before {
            let why = "no invariant constrains the field: deltas commute";
            out.push(entry("none".into(), Verdict::Confluent, why));
        }
    }
}

/// A declared delta use against a lower bound on its field.
fn against_min(operation: DeltaUse) -> (Verdict, &'static str) {
    match operation {
        DeltaUse::Increments => (
            Verdict::Confluent,
            "increments only raise the field: merged states keep the lower bound",
        ),
        DeltaUse::BoundedDecrements => (
            Verdict::Escrow,
            "a decrement commits in parallel only if the bound holds with every lower-TID \
             decrement applied; the others run alone in the serial pass",
        ),
        DeltaUse::Any => (
            Verdict::Unsafe,
            "two decrements each fine alone can merge below the bound; declare \
             DeltaUse::BoundedDecrements and use TxnCtx::add_bounded",
        ),
    }
}
