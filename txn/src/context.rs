//! The transaction context a handler receives: table access, events, abort, time and randomness.

use crate::app::{App, AppDef, Index, Key, Row, ServiceRef, Table};
use crate::constraint::Probe;
use crate::contract::{EventOf, KeyOf, Service, Svc, wrap};
use crate::delta::{DeltaError, DeltaOp, DeltaWithReader, Field};
use crate::error::{Abort, AbortReason, LimitKind};
use crate::ids::{GlobalPartition, Seq, Tid};
use crate::limits::TxnLimits;
use crate::partition::{Emitted, OutboxMsg, PartitionState, StepEvent};
use crate::table::TableState;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use smallvec::SmallVec;
use std::hash::Hash;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

mod encoded_len;

use encoded_len::encoded_len;

/// What one step of a transaction may do, inside the partition it runs in.
///
/// Reads see the state as committed at the end of the previous epoch plus the transaction's own
/// writes; writes are buffered and become visible to others only if the whole transaction
/// commits. Time and randomness come from here, never from the system, so replay is exact.
///
/// **Errors poison the transaction.** Every error a method returns (a violated constraint, a
/// key of another partition, a table of another service, a scan of a hash table, an exceeded
/// [`TxnLimits`] limit) also marks the transaction as aborted with that reason: if the handler
/// drops the error and returns `Ok`, the transaction still aborts, so no handler can commit
/// part of what it meant to write. Once poisoned, every further call fails the same way (and
/// `emit`, `outbox` and `set_output` do nothing), so a careless loop ends quickly. A handler
/// that returns its own `Err` aborts with the reason it returned.
pub struct TxnCtx<'a, A: App> {
    pub(crate) part: &'a mut PartitionState<A>,
    pub(crate) app: &'a AppDef<A>,
    pub(crate) seq: Seq,
    pub(crate) tid: Tid,
    pub(crate) timestamp_ms: u64,
    pub(crate) emits: &'a mut Vec<Emitted<A::Event>>,
    pub(crate) outbox: &'a mut Vec<OutboxMsg>,
    pub(crate) output: Option<A::Output>,
    pub(crate) rng: Option<ChaCha8Rng>,
    /// This step's position in its transaction's wave, in canonical step order.
    pub(crate) pos: u32,
    /// The transaction's use of its limits, and the error that poisoned it.
    pub(crate) meter: Meter,
    /// The event this step handles: its kind names the handler whose purposes a read of
    /// personal data is checked against (`governance.rs`).
    pub(crate) event: &'a A::Event,
}

/// What a transaction has used of its [`TxnLimits`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Usage {
    pub steps: u64,
    pub emitted_events: u64,
    pub bytes_written: u64,
    pub work: u64,
}

impl Usage {
    /// Adds `other` field by field.
    #[inline]
    pub fn add(&mut self, other: &Usage) {
        self.steps = self.steps.saturating_add(other.steps);
        self.emitted_events = self.emitted_events.saturating_add(other.emitted_events);
        self.bytes_written = self.bytes_written.saturating_add(other.bytes_written);
        self.work = self.work.saturating_add(other.work);
    }

    /// What was used since `before` (a snapshot of the same counters).
    #[inline]
    pub fn since(&self, before: &Usage) -> Usage {
        Usage {
            steps: self.steps - before.steps,
            emitted_events: self.emitted_events - before.emitted_events,
            bytes_written: self.bytes_written - before.bytes_written,
            work: self.work - before.work,
        }
    }

    /// The first limit (in `LimitKind` order) this usage is past, as an abort reason.
    pub fn exceeded(&self, limits: &TxnLimits) -> Option<AbortReason> {
        let mut usage = *self;
        [
            LimitKind::Steps,
            LimitKind::EmittedEvents,
            LimitKind::BytesWritten,
            LimitKind::Work,
        ]
        .into_iter()
        .find(|limit| *usage.counter(*limit) > limits.max(*limit))
        .map(|limit| AbortReason::LimitExceeded {
            limit,
            max: limits.max(limit),
        })
    }

    #[inline]
    fn counter(&mut self, limit: LimitKind) -> &mut u64 {
        match limit {
            LimitKind::Steps => &mut self.steps,
            LimitKind::EmittedEvents => &mut self.emitted_events,
            LimitKind::BytesWritten => &mut self.bytes_written,
            LimitKind::Work => &mut self.work,
        }
    }
}

/// A step's running account of its transaction's limits, and whether an error poisoned it.
pub(crate) struct Meter {
    /// The transaction's usage so far, this step included.
    pub usage: Usage,
    pub limits: TxnLimits,
    /// The first error handed to the handler: the step aborts with it even if it returns `Ok`.
    pub poisoned: Option<AbortReason>,
}

// Every row access, write and emit charges the meter once (a write's two limits and an emit's
// three in one call, with one liveness check): the checks are inlined into the caller (where
// `limit` is a constant, so the counter and its maximum are fixed fields), and only the rare
// error paths stay out of line (`#[cold]`).
impl Meter {
    #[inline]
    pub fn new(usage: Usage, limits: TxnLimits) -> Self {
        Meter {
            usage,
            limits,
            poisoned: None,
        }
    }

    /// Records `reason` as the transaction's fate (the first one stays) and returns it as the
    /// error to hand the handler.
    #[cold]
    fn poison(&mut self, reason: AbortReason) -> Abort {
        self.poisoned.get_or_insert_with(|| reason.clone());
        Abort(reason)
    }

    /// Fails with the poisoning error, if any: a doomed transaction does no more work.
    #[inline]
    fn live(&self) -> Result<(), Abort> {
        match &self.poisoned {
            Some(reason) => Err(Self::again(reason)),
            None => Ok(()),
        }
    }

    /// The poisoning error, handed out again.
    #[cold]
    fn again(reason: &AbortReason) -> Abort {
        Abort(reason.clone())
    }

    /// Counts `amount` against `limit`; past it, poisons the transaction.
    #[inline]
    fn charge(&mut self, limit: LimitKind, amount: u64) -> Result<(), Abort> {
        self.live()?;
        self.count(limit, amount)
    }

    /// A write's charges: one work unit, then the `bytes` it writes (measured only once the
    /// unit is charged), exactly as `charge(Work, 1)` then `charge(BytesWritten, bytes())`,
    /// with the liveness check once.
    #[inline]
    fn charge_write(&mut self, bytes: impl FnOnce() -> u64) -> Result<(), Abort> {
        self.live()?;
        self.count(LimitKind::Work, 1)?;
        self.count(LimitKind::BytesWritten, bytes())
    }

    /// An emit's charges: one work unit, one event, then its `bytes`, in that order, with the
    /// liveness check once.
    #[inline]
    fn charge_emit(&mut self, bytes: impl FnOnce() -> u64) -> Result<(), Abort> {
        self.live()?;
        self.count(LimitKind::Work, 1)?;
        self.count(LimitKind::EmittedEvents, 1)?;
        self.count(LimitKind::BytesWritten, bytes())
    }

    /// Counts `amount` against `limit` of a live transaction; past it, poisons it.
    #[inline]
    fn count(&mut self, limit: LimitKind, amount: u64) -> Result<(), Abort> {
        let max = self.limits.max(limit);
        let used = self.usage.counter(limit);
        *used = used.saturating_add(amount);
        if *used > max {
            return Err(self.poison(AbortReason::LimitExceeded { limit, max }));
        }
        Ok(())
    }

    /// Work units left before the work limit.
    fn work_left(&self) -> u64 {
        self.limits.work_max.saturating_sub(self.usage.work)
    }
}

impl<'a, A: App> TxnCtx<'a, A> {
    /// The transaction id (shared by every step of the transaction).
    pub fn tid(&self) -> Tid {
        self.tid
    }

    /// The epoch's logged timestamp in milliseconds since the Unix epoch: the same for every
    /// step and on every replay.
    pub fn now_ms(&self) -> u64 {
        self.timestamp_ms
    }

    /// A random generator seeded by the TID: deterministic on replay.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        let tid = self.tid;
        let service = self.part.service_idx;
        self.rng
            .get_or_insert_with(|| ChaCha8Rng::seed_from_u64(tid.0 ^ (u64::from(service) << 56)))
    }

    /// The service this step runs in.
    pub fn service(&self) -> ServiceRef {
        self.app.services[self.part.service_idx as usize].service
    }

    /// The partition this step runs in.
    pub fn partition(&self) -> u32 {
        self.part.partition
    }

    /// An abort with a business reason, to `return Err(ctx.abort("..."))`; its kind is
    /// [`AbortReason::USER_KIND_DEFAULT`]. Prefer [`TxnCtx::abort_with`] or a
    /// [`BusinessError`](crate::BusinessError), whose kinds reports group by.
    pub fn abort(&self, message: impl Into<String>) -> Abort {
        self.abort_with(AbortReason::USER_KIND_DEFAULT, message)
    }

    /// An abort with a business reason of a stable `kind` (`"out_of_stock"`), to
    /// `return Err(ctx.abort_with("out_of_stock", ".."))`.
    pub fn abort_with(&self, kind: &'static str, message: impl Into<String>) -> Abort {
        Abort(AbortReason::User {
            service: self.service_name().to_string(),
            kind: kind.to_string(),
            message: message.into(),
        })
    }

    /// Queues a message for an external system (transactional outbox): it is handed to the
    /// runtime's `OutboxSink` only if the whole transaction commits, after its epoch is durable,
    /// with the TID as idempotency key. Encoded with rmp-serde.
    ///
    /// Its size counts against the transaction's bytes-written limit; past it (or once the
    /// transaction is poisoned) the message is dropped and the transaction aborts.
    pub fn outbox<M: serde::Serialize>(&mut self, topic: &str, message: &M) {
        if self.meter.live().is_err() {
            return;
        }
        let payload = rmp_serde::to_vec(message).expect("outbox messages serialize");
        let size = (payload.len() + topic.len()) as u64;
        if self.meter.charge(LimitKind::BytesWritten, size).is_err() {
            return;
        }
        self.outbox.push(OutboxMsg {
            seq: self.seq,
            topic: topic.to_string(),
            payload,
        });
    }

    /// Sets what the client receives if the transaction commits.
    ///
    /// **One rule for every executor:** when several steps set an output, the client receives
    /// the one set by the step that comes last in the transaction's *canonical step order*:
    /// by wave (the inbound step is wave 0, the events it emits wave 1, and so on), then, within
    /// a wave, in the order the steps were emitted (the steps emitted by an earlier step of the
    /// previous wave first, each step's events in the order it emitted them). Within one step
    /// the last call wins. The parallel pass, the serial fallback, `SerialExecutor` and replay
    /// all follow this rule, so the output never depends on which path ran the transaction.
    pub fn set_output(&mut self, output: A::Output) {
        if self.meter.poisoned.is_none() {
            self.output = Some(output);
        }
    }

    /// Reads a row.
    pub fn get<K: Key, V: Row>(&mut self, table: Table<K, V>, key: &K) -> Result<Option<V>, Abort> {
        let seq = self.seq;
        self.meter.charge(LimitKind::Work, 1)?;
        if self.app.governance.enabled {
            self.check_purpose(table.service, table.idx)?;
        }
        let value = self.table(table, key)?.get(seq, key);
        if let Some(trace) = &self.part.trace {
            trace.read((table.service, table.idx), key, value.as_ref());
        }
        Ok(value)
    }

    /// Whether a row exists: a read like [`TxnCtx::get`] (it conflicts, and is checked
    /// against the handler's purposes, the same way), without copying the row, so checking
    /// for a row with strings or lists allocates nothing.
    pub fn contains<K: Key, V: Row>(&mut self, table: Table<K, V>, key: &K) -> Result<bool, Abort> {
        if self.part.trace.is_some() {
            // A traced read records the row it saw: read it whole.
            return Ok(self.get(table, key)?.is_some());
        }
        let seq = self.seq;
        self.meter.charge(LimitKind::Work, 1)?;
        if self.app.governance.enabled {
            self.check_purpose(table.service, table.idx)?;
        }
        Ok(self.table(table, key)?.contains(seq, key))
    }

    /// Writes (inserts or replaces) a row. Its checks run now; its foreign keys are probed in
    /// the parents' partitions as part of this transaction.
    pub fn put<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        key: K,
        value: V,
    ) -> Result<(), Abort> {
        let seq = self.seq;
        let pos = self.pos;
        self.meter
            .charge_write(|| encoded_len(&key) + encoded_len(&value))?;
        // Traced before the checks: a write they refuse aborts the transaction anyway.
        if let Some(trace) = &self.part.trace {
            trace.write((table.service, table.idx), &key, Some(&value));
        }
        let emits = &mut *self.emits;
        let meter = &mut self.meter;
        let state =
            Self::table_in(self.part, self.app, table, &key).map_err(|r| meter.poison(r))?;
        if !state.constraints.is_empty() {
            return Self::put_constrained(state, emits, meter, (seq, pos), key, value);
        }
        state.write(seq, key, Some(value));
        Ok(())
    }

    /// The rest of [`put`](Self::put) on a table with declared constraints: its checks, its
    /// foreign keys' probes, its unique values' index steps, then the write. Out of line, so
    /// that a write to a table without any stays a short call.
    #[inline(never)]
    fn put_constrained<K: Key, V: Row>(
        state: &mut TableState<K, V>,
        emits: &mut Vec<Emitted<A::Event>>,
        meter: &mut Meter,
        (seq, pos): (Seq, u32),
        key: K,
        value: V,
    ) -> Result<(), Abort> {
        if let Some(check) = state.constraints.failed_check(&value) {
            return Err(meter.poison(AbortReason::Constraint {
                service: state.service.clone(),
                table: state.name.clone(),
                message: format!("check {check:?} fails for key {key:?}"),
            }));
        }
        for fk in &state.constraints.foreign_keys {
            if let Some((parent_key, target)) = (fk.locate)(&value) {
                emits.push(Emitted {
                    seq,
                    parent: pos,
                    target,
                    event: StepEvent::Probe(Probe {
                        target: fk.target.clone(),
                        child: Arc::new((state.service.clone(), state.name.clone())),
                        key: parent_key,
                    }),
                });
            }
        }
        if !state.constraints.uniques.is_empty() {
            let old = state.get(seq, &key);
            Self::index_ops(state, emits, (seq, pos), &key, old.as_ref(), Some(&value));
        }
        state.write(seq, key, Some(value));
        Ok(())
    }

    /// Adds `delta` to the `i64` field `field` of row `key` (`txn::field!(Account, balance)`).
    ///
    /// A merge-able operation: deltas on one row from different transactions of an epoch do
    /// not conflict (they commute), so a hot counter does not push its transactions into the
    /// serial pass. A later-TID plain read of the row still conflicts with it, and a plain
    /// write of the row by a lower TID makes it run again. The transaction reads its own
    /// deltas. The row must exist (`AbortReason::MissingRow` otherwise: a delta never creates
    /// a row), and the field must stay inside `i64` (`AbortReason::Constraint`).
    ///
    /// On a table with declared constraints or secondary indexes the delta is a plain
    /// read-modify-write (`get` then `put`), so every check, unique value, foreign key and
    /// index sees the new row; it then conflicts like one.
    pub fn add<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        key: &K,
        field: Field<V>,
        delta: i64,
    ) -> Result<(), Abort> {
        self.add_bounded(table, key, field, delta, i64::MIN)
    }

    /// Like [`TxnCtx::add`], but the field must stay at least `min` (a stock level, a balance
    /// that may not go below zero): a delta that would take it lower aborts the transaction
    /// (`AbortReason::Constraint`). In the parallel pass the delta commits without
    /// coordination only by escrow: if the field stays at least `min` even when every
    /// lower-TID decrement of the epoch on that row commits and no increment does. Otherwise
    /// it runs again alone in the serial pass, which applies or refuses it exactly.
    pub fn add_bounded<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        key: &K,
        field: Field<V>,
        delta: i64,
        min: i64,
    ) -> Result<(), Abort> {
        self.add_delta(table, key, field, delta, min, |_| None)
    }

    /// Like [`TxnCtx::add_bounded`], but a delta that would take the field below `min` aborts
    /// with the application's own reason, `below_min(value)` (given the field's value the
    /// delta was checked against), so a bounded delta keeps a business abort such as
    /// "insufficient funds" and its kind. Overflow and a missing row abort as with `add`.
    pub fn add_bounded_or<K: Key, V: Row, E: Into<Abort>>(
        &mut self,
        table: Table<K, V>,
        key: &K,
        field: Field<V>,
        delta: i64,
        min: i64,
        below_min: impl FnOnce(i64) -> E,
    ) -> Result<(), Abort> {
        self.add_delta(table, key, field, delta, min, |value| {
            Some(below_min(value).into())
        })
    }

    /// Records or applies one delta; `below_min` may replace the bound's abort reason.
    fn add_delta<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        key: &K,
        field: Field<V>,
        delta: i64,
        min: i64,
        below_min: impl FnOnce(i64) -> Option<Abort>,
    ) -> Result<(), Abort> {
        let seq = self.seq;
        self.meter
            .charge_write(|| encoded_len(key) + encoded_len(&delta))?;
        let op = DeltaOp {
            seq,
            access: field.accessor(),
            delta,
            min,
        };
        let state = self.table(table, key)?;
        let min = if state.constraints.field_mins.is_empty() {
            min
        } else {
            state.constraints.min_of(&field, min)
        };
        let op = DeltaOp { min, ..op };
        let result = if !state.constraints.needs_whole_row() && state.indexes.is_empty() {
            let added = state.add(key, op, field.reader());
            if let (Some(trace), Ok(())) = (&self.part.trace, &added) {
                trace.delta((table.service, table.idx), key, field.name(), delta);
            }
            added
        } else {
            // Constraints and indexes must see the whole new row: a plain read-modify-write.
            match state.get(seq, key) {
                None => Err(DeltaError::MissingRow),
                Some(mut row) => match op.apply_exact(&mut row) {
                    Ok(()) => return self.put(table, key.clone(), row),
                    Err(e) => Err(e),
                },
            }
        };
        let Err(error) = result else { return Ok(()) };
        let reason = self.delta_abort(table, key, (field, delta, min), error, below_min)?;
        Err(self.meter.poison(reason))
    }

    /// Adds several deltas to row `key` of `table` at once, in order: `(field, delta)` pairs,
    /// each exactly as [`TxnCtx::add`] would add it (conflicts, declared minimums, aborts and
    /// limits alike), with the row found once. Cheaper than one `add` per field for a row of
    /// aggregates changed together. Its limits are charged for every delta before the first
    /// is applied; on a table with constraints or secondary indexes the row is read once and
    /// written once, so its checks see the row with all the deltas applied.
    pub fn add_all<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        key: &K,
        deltas: &[(Field<V>, i64)],
    ) -> Result<(), Abort> {
        let seq = self.seq;
        let key_len = encoded_len(key);
        for (_, delta) in deltas {
            self.meter.charge_write(|| key_len + encoded_len(delta))?;
        }
        let state = self.table(table, key)?;
        let ops: SmallVec<[DeltaWithReader<V>; 8]> = deltas
            .iter()
            .map(|(field, delta)| {
                let min = state.constraints.min_of(field, i64::MIN);
                let access = field.accessor();
                let op = DeltaOp {
                    seq,
                    access,
                    delta: *delta,
                    min,
                };
                (op, field.reader())
            })
            .collect();
        let result = if !state.constraints.needs_whole_row() && state.indexes.is_empty() {
            let added = state.add_all(key, &ops);
            if let Some(trace) = &self.part.trace {
                let traced = added.as_ref().err().map_or(deltas.len(), |(i, _)| *i);
                for (field, delta) in &deltas[..traced] {
                    trace.delta((table.service, table.idx), key, field.name(), *delta);
                }
            }
            added
        } else {
            // Constraints and indexes must see the whole new row: a plain read-modify-write.
            match state.get(seq, key) {
                None => Err((0, DeltaError::MissingRow)),
                Some(mut row) => {
                    let applied = ops
                        .iter()
                        .enumerate()
                        .try_for_each(|(i, (op, _))| op.apply_exact(&mut row).map_err(|e| (i, e)));
                    match applied {
                        Ok(()) => return self.put(table, key.clone(), row),
                        Err(e) => Err(e),
                    }
                }
            }
        };
        let Err((i, error)) = result else {
            return Ok(());
        };
        let (field, delta) = deltas[i];
        let reason = self.delta_abort(table, key, (field, delta, ops[i].0.min), error, |_| None)?;
        Err(self.meter.poison(reason))
    }

    /// Why a delta `(field, delta, min)` on row `key` aborts the transaction, given its
    /// `error`; `below_min` may replace the bound's reason.
    fn delta_abort<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        key: &K,
        (field, delta, min): (Field<V>, i64, i64),
        error: DeltaError,
        below_min: impl FnOnce(i64) -> Option<Abort>,
    ) -> Result<AbortReason, Abort> {
        let state = self.table(table, key)?;
        let (service, table_name) = (state.service.clone(), state.name.clone());
        let name = field.name();
        Ok(match error {
            DeltaError::MissingRow => AbortReason::MissingRow {
                service,
                table: table_name,
                key: format!("{key:?}"),
            },
            DeltaError::Overflow { value } => AbortReason::Constraint {
                service,
                table: table_name,
                message: format!("{name} = {value} + {delta} overflows i64 for key {key:?}"),
            },
            DeltaError::BelowMin { value } => match below_min(value) {
                Some(Abort(own)) => own.in_service(&service),
                None => AbortReason::Constraint {
                    service,
                    table: table_name,
                    message: format!(
                        "{name} = {value} + {delta} would go below its minimum {min} for key \
                         {key:?}"
                    ),
                },
            },
        })
    }

    /// Emits the steps that keep the table's constraints (unique indexes, foreign keys that
    /// refer to it) for a row changing from `old` to `new`.
    fn index_ops<K: Key, V: Row>(
        state: &TableState<K, V>,
        emits: &mut Vec<Emitted<A::Event>>,
        (seq, parent): (Seq, u32),
        key: &K,
        old: Option<&V>,
        new: Option<&V>,
    ) {
        state
            .constraints
            .steps_for_change(key, old, new, &mut |target, step| {
                emits.push(Emitted {
                    seq,
                    parent,
                    target,
                    event: StepEvent::from(step),
                });
            });
    }

    /// Deletes a row (a no-op if it does not exist). If foreign keys refer to its table, the
    /// delete is checked in the children's partitions as part of this transaction: children
    /// abort it (`OnDelete::Restrict`) or are deleted with it (`OnDelete::Cascade`).
    pub fn delete<K: Key, V: Row>(&mut self, table: Table<K, V>, key: &K) -> Result<(), Abort> {
        let seq = self.seq;
        let pos = self.pos;
        self.meter.charge_write(|| encoded_len(key))?;
        if let Some(trace) = &self.part.trace {
            trace.write::<K, V>((table.service, table.idx), key, None);
        }
        let emits = &mut *self.emits;
        let meter = &mut self.meter;
        let state = Self::table_in(self.part, self.app, table, key).map_err(|r| meter.poison(r))?;
        if !state.constraints.uniques.is_empty() || !state.constraints.referenced_by.is_empty() {
            let old = state.get(seq, key);
            Self::index_ops(state, emits, (seq, pos), key, old.as_ref(), None);
        }
        state.write(seq, key.clone(), None);
        Ok(())
    }

    /// Scans the rows of this partition whose keys fall in `range`, in key order. The table must
    /// be declared with `ordered_table`.
    pub fn scan<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        range: impl RangeBounds<K>,
    ) -> Result<Vec<(K, V)>, Abort> {
        self.scan_inner(table, range, None)
    }

    /// Like [`TxnCtx::scan`], but returns at most the first `limit` rows. Cheaper on long
    /// ranges, and it conflicts less: only writes at or before the last row returned can make
    /// the result stale (a queue's head can be taken while others append to its tail).
    pub fn scan_limit<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        range: impl RangeBounds<K>,
        limit: usize,
    ) -> Result<Vec<(K, V)>, Abort> {
        self.scan_inner(table, range, Some(limit))
    }

    /// The first row of `range` in key order, if any (`scan_limit` with a limit of 1).
    pub fn scan_first<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        range: impl RangeBounds<K>,
    ) -> Result<Option<(K, V)>, Abort> {
        Ok(self.scan_inner(table, range, Some(1))?.pop())
    }

    fn scan_inner<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        range: impl RangeBounds<K>,
        limit: Option<usize>,
    ) -> Result<Vec<(K, V)>, Abort> {
        let seq = self.seq;
        self.meter.charge(LimitKind::Work, 1)?;
        if self.app.governance.enabled {
            self.check_purpose(table.service, table.idx)?;
        }
        // One row past the work left is enough to know the limit is exceeded: a scan over a
        // huge range never copies more rows than the transaction may still visit.
        let work_left = usize::try_from(self.meter.work_left()).unwrap_or(usize::MAX);
        let capped = limit.map_or(work_left.saturating_add(1), |l| {
            l.min(work_left.saturating_add(1))
        });
        let meter = &mut self.meter;
        let state =
            Self::table_unchecked_in(self.part, self.app, table).map_err(|r| meter.poison(r))?;
        if !state.is_ordered() {
            return Err(meter.poison(AbortReason::NotOrdered {
                service: state.service.clone(),
                table: state.name.clone(),
            }));
        }
        let bounds = (
            clone_bound(range.start_bound()),
            clone_bound(range.end_bound()),
        );
        let rows = state.scan(seq, bounds, Some(capped));
        meter.charge(LimitKind::Work, rows.len() as u64)?;
        if let Some(trace) = &self.part.trace {
            trace.scan((table.service, table.idx), &rows);
        }
        Ok(rows)
    }

    /// The rows of this partition whose index value is `value` (this transaction's own writes
    /// included), in key order. Transactional: a lower-TID write that moves a row into or out of
    /// `value` makes this transaction run again.
    pub fn lookup<I: Key, K: Key, V: Row>(
        &mut self,
        index: Index<I, K, V>,
        value: &I,
    ) -> Result<Vec<(K, V)>, Abort> {
        let seq = self.seq;
        self.meter.charge(LimitKind::Work, 1)?;
        if self.app.governance.enabled {
            self.check_purpose(index.service, index.table)?;
        }
        let meter = &mut self.meter;
        let state = Self::table_unchecked_in(self.part, self.app, index.table())
            .map_err(|r| meter.poison(r))?;
        let rows = state.lookup(seq, index.idx as usize, value);
        meter.charge(LimitKind::Work, rows.len() as u64)?;
        if let Some(trace) = &self.part.trace {
            let table = index.table();
            trace.scan((table.service, table.idx), &rows);
        }
        Ok(rows)
    }

    /// Emits `event` to the partition of `to` that owns the event's key. The event runs in
    /// the same transaction and the same epoch; if this step aborts, its emits are discarded.
    ///
    /// Each event counts against the transaction's emitted-events, bytes-written and work
    /// limits; an event past one of them (or emitted once the transaction is poisoned) is
    /// dropped and the transaction aborts with `AbortReason::LimitExceeded`, whatever the
    /// handler returns.
    pub fn emit<S, E>(&mut self, to: Svc<S>, event: E)
    where
        S: Service<App = A>,
        E: EventOf<S> + KeyOf<S::Key>,
    {
        let partition = to.partition_of(event.key());
        self.emit_to_partition_raw(to.raw(), partition, wrap::<S, E>(event));
    }

    /// Emits `event` to partition `partition` of `to` (e.g. one event per partition carrying
    /// the items bound for it).
    ///
    /// # Panics
    /// If `partition` is out of range (a programming error in the handler, contained by the
    /// runtime as a handler panic that aborts the transaction).
    pub fn emit_to_partition<S, E>(&mut self, to: Svc<S>, partition: u32, event: E)
    where
        S: Service<App = A>,
        E: EventOf<S>,
    {
        self.emit_to_partition_raw(to.raw(), partition, wrap::<S, E>(event));
    }

    /// Emits `event` to every partition of `to` (e.g. to update a replicated table's copies),
    /// all in this transaction.
    pub fn broadcast<S, E>(&mut self, to: Svc<S>, event: E)
    where
        S: Service<App = A>,
        E: EventOf<S>,
    {
        self.broadcast_raw(to.raw(), wrap::<S, E>(event));
    }

    /// Untyped [`emit`](Self::emit), for applications whose `App` is written by hand: emits
    /// `event` to the partition of `service` that owns `key`; nothing checks that `service`
    /// handles `event`.
    pub fn emit_raw<K: Hash + ?Sized>(&mut self, service: ServiceRef, key: &K, event: A::Event) {
        let partition = service.partition_of(key);
        self.emit_to_partition_raw(service, partition, event);
    }

    /// Untyped [`broadcast`](Self::broadcast).
    pub fn broadcast_raw(&mut self, service: ServiceRef, event: A::Event) {
        for p in 0..service.n_partitions {
            self.emit_to_partition_raw(service, p, event.clone());
        }
    }

    /// Untyped [`emit_to_partition`](Self::emit_to_partition).
    ///
    /// # Panics
    /// If `partition` is out of range.
    pub fn emit_to_partition_raw(&mut self, service: ServiceRef, partition: u32, event: A::Event) {
        assert!(
            partition < service.n_partitions,
            "emit to partition {partition} of a service with {} partitions",
            service.n_partitions
        );
        let target: GlobalPartition = service.gp(partition);
        if self.meter.charge_emit(|| encoded_len(&event)).is_err() {
            return;
        }
        if let Some(trace) = &self.part.trace {
            trace.emit(service.idx, partition, A::event_kind(&event), &event);
        }
        self.emits.push(Emitted {
            seq: self.seq,
            parent: self.pos,
            target,
            event: StepEvent::Emitted(event),
        });
    }

    fn service_name(&self) -> &str {
        &self.app.services[self.part.service_idx as usize].name
    }

    /// Aborts the transaction if table `table` of service `service` has a personal field whose
    /// category allows none of the purposes of this step's handler. Only called when the
    /// application has personal fields; a table without any costs one lookup.
    fn check_purpose(&mut self, service: u32, table: u32) -> Result<(), Abort> {
        let governance = &self.app.governance;
        let Some(rule) = governance.rule(service, table) else {
            return Ok(());
        };
        let kind = A::event_kind(self.event);
        let purposes = governance.handler_mask(self.part.service_idx, kind);
        let Some(denied) = rule.denied(purposes) else {
            return Ok(());
        };
        let owner = &self.app.services[service as usize];
        let reason = AbortReason::PurposeNotAllowed(Box::new(crate::error::PurposeRefusal {
            service: self.service_name().to_string(),
            handler: kind.to_string(),
            purposes: governance.purpose_names(purposes),
            table: format!("{}.{}", owner.name, owner.tables[table as usize].name),
            field: denied.field.to_string(),
            category: denied.category.to_string(),
        }));
        Err(self.meter.poison(reason))
    }

    /// The typed table of the running partition, whatever key it is used with, or why not.
    #[inline(always)]
    fn table_unchecked_in<'p, K: Key, V: Row>(
        part: &'p mut PartitionState<A>,
        app: &AppDef<A>,
        table: Table<K, V>,
    ) -> Result<&'p mut TableState<K, V>, AbortReason> {
        let service_idx = part.service_idx;
        // The names are only needed on the error path: no allocation per row access.
        let service_name = || app.services[service_idx as usize].name.clone();
        if table.service != service_idx {
            let owner = app
                .services
                .get(table.service as usize)
                .map_or_else(|| format!("#{}", table.service), |s| s.name.clone());
            return Err(AbortReason::ForeignTable {
                service: service_name(),
                table: format!("#{}", table.idx),
                owner,
            });
        }
        part.tables
            .get_mut(table.idx as usize)
            .and_then(|t| t.as_any_mut().downcast_mut::<TableState<K, V>>())
            .ok_or_else(|| AbortReason::ForeignTable {
                service: service_name(),
                table: format!("#{} with other key/row types", table.idx),
                owner: service_name(),
            })
    }

    fn table<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        key: &K,
    ) -> Result<&mut TableState<K, V>, Abort> {
        let meter = &mut self.meter;
        Self::table_in(self.part, self.app, table, key).map_err(|r| meter.poison(r))
    }

    /// The typed table of the running partition that owns `key`, or why not.
    #[inline(always)]
    fn table_in<'p, K: Key, V: Row>(
        part: &'p mut PartitionState<A>,
        app: &AppDef<A>,
        table: Table<K, V>,
        key: &K,
    ) -> Result<&'p mut TableState<K, V>, AbortReason> {
        let n = app.services[part.service_idx as usize].service.n_partitions;
        let running = part.partition;
        let state = Self::table_unchecked_in(part, app, table)?;
        let owner = if state.replicated {
            running
        } else {
            (state.placement)(key, n)
        };
        if owner != running {
            return Err(AbortReason::WrongPartition {
                service: state.service.clone(),
                table: state.name.clone(),
                running,
                owner,
            });
        }
        Ok(state)
    }
}

fn clone_bound<K: Clone>(b: Bound<&K>) -> Bound<K> {
    match b {
        Bound::Included(k) => Bound::Included(k.clone()),
        Bound::Excluded(k) => Bound::Excluded(k.clone()),
        Bound::Unbounded => Bound::Unbounded,
    }
}
