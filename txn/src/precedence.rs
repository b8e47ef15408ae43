//! Event precedence: "in this service, an event of kind `before` with a lower TID is processed
//! before an event of kind `after`", also where the two touch no common row.
//!
//! Serializability already orders conflicting steps by TID. What precedence adds is order
//! between steps that share no row — visible through effects such as outbox messages — which
//! the serial fallback could otherwise reorder (it runs conflict losers after the first-pass
//! survivors). Each `before` step leaves a marker in its partition; a later `after` step in the
//! same partition loses against the lowest marker exactly like a read-after-write conflict, so
//! it runs again after the marking transaction, in TID order.

use crate::bitset::SeqSet;
use crate::ids::Seq;

/// One declared rule of a service, by event kind (see `App::event_kind`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub before: &'static str,
    pub after: &'static str,
}

/// The markers and waiters of one partition in the current epoch.
#[derive(Default)]
pub(crate) struct PrecedenceState {
    /// `(rule index, seq)` of steps of a `before` kind.
    marks: Vec<(usize, Seq)>,
    /// `(rule index, seq)` of steps of an `after` kind.
    waits: Vec<(usize, Seq)>,
}

impl PrecedenceState {
    /// Records the step `seq` of kind `kind` against every rule it takes part in.
    pub fn record(&mut self, rules: &[Rule], kind: &str, seq: Seq) {
        for (i, r) in rules.iter().enumerate() {
            if r.before == kind {
                self.marks.push((i, seq));
            }
            if r.after == kind {
                self.waits.push((i, seq));
            }
        }
    }

    /// Adds to `conflicts` every waiter with a lower-TID, non-user-aborted marker of its rule.
    pub fn decide(&self, user_aborted: &SeqSet, conflicts: &mut SeqSet) {
        for (rule, seq) in &self.waits {
            let first_mark = self
                .marks
                .iter()
                .filter(|(r, s)| r == rule && !user_aborted.contains(*s))
                .map(|(_, s)| *s)
                .min();
            if first_mark.is_some_and(|m| m < *seq) {
                conflicts.insert(*seq);
            }
        }
    }

    pub fn clear(&mut self) {
        self.marks.clear();
        self.waits.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty() && self.waits.is_empty()
    }
}

/// Checks a service's rules: kinds named, no rule of a kind before itself, no cycle. Returns one
/// message per problem.
pub(crate) fn validate(service: &str, rules: &[Rule]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in rules {
        if r.before.is_empty() || r.after.is_empty() {
            problems.push(format!(
                "service {service:?}: a precedence rule names an empty event kind"
            ));
        }
        if r.before == r.after {
            problems.push(format!(
                "service {service:?}: precedence rule puts {:?} before itself",
                r.before
            ));
        }
    }
    // A cycle exists if some kind reaches itself through `before -> after` edges.
    let kinds: Vec<&str> = rules.iter().flat_map(|r| [r.before, r.after]).collect();
    for start in &kinds {
        let mut frontier = vec![*start];
        let mut seen: Vec<&str> = Vec::new();
        while let Some(k) = frontier.pop() {
            for r in rules
                .iter()
                .filter(|r| r.before == k && r.before != r.after)
            {
                if r.after == *start {
                    let msg = format!(
                        "service {service:?}: precedence rules form a cycle through {start:?}"
                    );
                    if !problems.contains(&msg) {
                        problems.push(msg);
                    }
                } else if !seen.contains(&r.after) {
                    seen.push(r.after);
                    frontier.push(r.after);
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(before: &'static str, after: &'static str) -> Rule {
        Rule { before, after }
    }

    #[test]
    fn validation_finds_self_rules_and_cycles() {
        assert!(
            validate(
                "cart",
                &[rule("price", "checkout"), rule("product", "checkout")]
            )
            .is_empty()
        );
        let p = validate("cart", &[rule("a", "a")]);
        assert!(p[0].contains("before itself"), "{p:?}");
        let p = validate("cart", &[rule("a", "b"), rule("b", "c"), rule("c", "a")]);
        assert!(p.iter().any(|m| m.contains("cycle")), "{p:?}");
    }

    #[test]
    fn waiter_after_a_lower_marker_conflicts() {
        let rules = [rule("price", "checkout")];
        let mut s = PrecedenceState::default();
        s.record(&rules, "checkout", 1);
        s.record(&rules, "price", 2);
        s.record(&rules, "checkout", 3);
        s.record(&rules, "other", 4);
        let mut conflicts = SeqSet::with_len(5);
        s.decide(&SeqSet::with_len(5), &mut conflicts);
        assert_eq!(conflicts.iter().collect::<Vec<_>>(), vec![3]);
        // A user-aborted marker does not hold anyone back.
        let mut aborted = SeqSet::with_len(5);
        aborted.insert(2);
        let mut conflicts = SeqSet::with_len(5);
        s.decide(&aborted, &mut conflicts);
        assert!(conflicts.iter().next().is_none());
    }
}
