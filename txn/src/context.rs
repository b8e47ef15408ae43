//! The transaction context a handler receives: table access, events, abort, time and randomness.

use crate::app::{App, AppDef, Index, Key, Row, ServiceRef, Table};
use crate::constraint::{IndexOp, Probe};
use crate::error::{Abort, AbortReason};
use crate::ids::{GlobalPartition, Seq, Tid};
use crate::partition::{Emitted, OutboxMsg, PartitionState, StepEvent};
use crate::table::TableState;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hash::Hash;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// What one step of a transaction may do, inside the partition it runs in.
///
/// Reads see the state as committed at the end of the previous epoch plus the transaction's own
/// writes; writes are buffered and become visible to others only if the whole transaction
/// commits. Time and randomness come from here, never from the system, so replay is exact.
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

    /// An abort with a business reason, to `return Err(ctx.abort("..."))`.
    pub fn abort(&self, message: impl Into<String>) -> Abort {
        Abort(AbortReason::User {
            service: self.service_name().to_string(),
            message: message.into(),
        })
    }

    /// Queues a message for an external system (transactional outbox): it is handed to the
    /// runtime's `OutboxSink` only if the whole transaction commits, after its epoch is durable,
    /// with the TID as idempotency key. Encoded with rmp-serde.
    pub fn outbox<M: serde::Serialize>(&mut self, topic: &str, message: &M) {
        let payload = rmp_serde::to_vec(message).expect("outbox messages serialize");
        self.outbox.push(OutboxMsg {
            seq: self.seq,
            topic: topic.to_string(),
            payload,
        });
    }

    /// Sets what the client receives if the transaction commits (the last call wins).
    pub fn set_output(&mut self, output: A::Output) {
        self.output = Some(output);
    }

    /// Reads a row.
    pub fn get<K: Key, V: Row>(&mut self, table: Table<K, V>, key: &K) -> Result<Option<V>, Abort> {
        let seq = self.seq;
        Ok(self.table(table, key)?.get(seq, key))
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
        let emits = &mut *self.emits;
        let state = Self::table_in(self.part, self.app, table, &key)?;
        if !state.constraints.is_empty() {
            if let Some(check) = state.constraints.failed_check(&value) {
                return Err(Abort(AbortReason::Constraint {
                    service: state.service.clone(),
                    table: state.name.clone(),
                    message: format!("check {check:?} fails for key {key:?}"),
                }));
            }
            for fk in &state.constraints.foreign_keys {
                if let Some((parent_key, target)) = (fk.locate)(&value) {
                    emits.push(Emitted {
                        seq,
                        target,
                        event: StepEvent::Probe(Probe {
                            target: fk.target.clone(),
                            child: Arc::new((state.service.clone(), state.name.clone())),
                            key: parent_key,
                        }),
                    });
                }
            }
        }
        if !state.constraints.uniques.is_empty() {
            let old = state.get(seq, &key);
            Self::index_ops(state, emits, seq, &key, old.as_ref(), Some(&value));
        }
        state.write(seq, key, Some(value));
        Ok(())
    }

    /// Emits the unique-index releases and claims for a row changing from `old` to `new`.
    fn index_ops<K: Key, V: Row>(
        state: &TableState<K, V>,
        emits: &mut Vec<Emitted<A::Event>>,
        seq: crate::ids::Seq,
        key: &K,
        old: Option<&V>,
        new: Option<&V>,
    ) {
        let row_key = rmp_serde::to_vec(key).expect("keys serialize");
        let child = Arc::new((state.service.clone(), state.name.clone()));
        for u in &state.constraints.uniques {
            let before = old.and_then(|o| (u.locate)(o));
            let after = new.and_then(|n| (u.locate)(n));
            if before.as_ref().map(|b| &b.0) == after.as_ref().map(|a| &a.0) {
                continue;
            }
            for (claim, located) in [(false, before), (true, after)] {
                if let Some((value, target)) = located {
                    emits.push(Emitted {
                        seq,
                        target,
                        event: StepEvent::Index(IndexOp {
                            target: u.target.clone(),
                            child: child.clone(),
                            claim,
                            value,
                            row_key: row_key.clone(),
                        }),
                    });
                }
            }
        }
    }

    /// Deletes a row (a no-op if it does not exist).
    pub fn delete<K: Key, V: Row>(&mut self, table: Table<K, V>, key: &K) -> Result<(), Abort> {
        let seq = self.seq;
        let emits = &mut *self.emits;
        let state = Self::table_in(self.part, self.app, table, key)?;
        if !state.constraints.uniques.is_empty() {
            let old = state.get(seq, key);
            Self::index_ops(state, emits, seq, key, old.as_ref(), None);
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
        let state = self.table_unchecked(table)?;
        if !state.is_ordered() {
            return Err(Abort(AbortReason::NotOrdered {
                service: state.service.clone(),
                table: state.name.clone(),
            }));
        }
        let bounds = (
            clone_bound(range.start_bound()),
            clone_bound(range.end_bound()),
        );
        Ok(state.scan(seq, bounds, limit))
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
        let state = self.table_unchecked(index.table())?;
        Ok(state.lookup(seq, index.idx as usize, value))
    }

    /// Emits `event` to the partition of `service` that owns `key`. The event runs in the same
    /// transaction and the same epoch; if this step aborts, its emits are discarded.
    pub fn emit<K: Hash + ?Sized>(&mut self, service: ServiceRef, key: &K, event: A::Event) {
        let partition = service.partition_of(key);
        self.emit_to_partition(service, partition, event);
    }

    /// Emits `event` to every partition of `service` (e.g. to update a replicated table's
    /// copies), all in this transaction.
    pub fn broadcast(&mut self, service: ServiceRef, event: A::Event) {
        for p in 0..service.n_partitions {
            self.emit_to_partition(service, p, event.clone());
        }
    }

    /// Emits `event` to partition `partition` of `service`.
    ///
    /// # Panics
    /// If `partition` is out of range (a programming error in the handler, contained by the
    /// runtime as a handler panic that aborts the transaction).
    pub fn emit_to_partition(&mut self, service: ServiceRef, partition: u32, event: A::Event) {
        assert!(
            partition < service.n_partitions,
            "emit to partition {partition} of a service with {} partitions",
            service.n_partitions
        );
        let target: GlobalPartition = service.gp(partition);
        self.emits.push(Emitted {
            seq: self.seq,
            target,
            event: StepEvent::Emitted(event),
        });
    }

    fn service_name(&self) -> &str {
        &self.app.services[self.part.service_idx as usize].name
    }

    fn table_unchecked<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
    ) -> Result<&mut TableState<K, V>, Abort> {
        let service_idx = self.part.service_idx;
        if table.service != service_idx {
            let owner = self
                .app
                .services
                .get(table.service as usize)
                .map_or_else(|| format!("#{}", table.service), |s| s.name.clone());
            return Err(Abort(AbortReason::ForeignTable {
                service: self.service_name().to_string(),
                table: format!("#{}", table.idx),
                owner,
            }));
        }
        // The name is only needed on the error path: no allocation per row access.
        let app = self.app;
        self.part
            .tables
            .get_mut(table.idx as usize)
            .and_then(|t| t.as_any_mut().downcast_mut::<TableState<K, V>>())
            .ok_or_else(|| {
                let service_name = app.services[service_idx as usize].name.clone();
                Abort(AbortReason::ForeignTable {
                    service: service_name.clone(),
                    table: format!("#{} with other key/row types", table.idx),
                    owner: service_name,
                })
            })
    }

    fn table<K: Key, V: Row>(
        &mut self,
        table: Table<K, V>,
        key: &K,
    ) -> Result<&mut TableState<K, V>, Abort> {
        Self::table_in(self.part, self.app, table, key)
    }

    /// The typed table of the running partition that owns `key`, or why not.
    fn table_in<'p, K: Key, V: Row>(
        part: &'p mut PartitionState<A>,
        app: &AppDef<A>,
        table: Table<K, V>,
        key: &K,
    ) -> Result<&'p mut TableState<K, V>, Abort> {
        let service_idx = part.service_idx;
        let service_name = || app.services[service_idx as usize].name.clone();
        if table.service != service_idx {
            let owner = app
                .services
                .get(table.service as usize)
                .map_or_else(|| format!("#{}", table.service), |s| s.name.clone());
            return Err(Abort(AbortReason::ForeignTable {
                service: service_name(),
                table: format!("#{}", table.idx),
                owner,
            }));
        }
        let n = app.services[service_idx as usize].service.n_partitions;
        let running = part.partition;
        let state = part
            .tables
            .get_mut(table.idx as usize)
            .and_then(|t| t.as_any_mut().downcast_mut::<TableState<K, V>>())
            .ok_or_else(|| {
                Abort(AbortReason::ForeignTable {
                    service: service_name(),
                    table: format!("#{} with other key/row types", table.idx),
                    owner: service_name(),
                })
            })?;
        let owner = if state.replicated {
            running
        } else {
            (state.placement)(key, n)
        };
        if owner != running {
            return Err(Abort(AbortReason::WrongPartition {
                service: state.service.clone(),
                table: state.name.clone(),
                running,
                owner,
            }));
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
