//! YCSB-T: multi-key read-modify-write transactions over one partitioned table, uniform or
//! Zipfian key choice, and the invariant checker.
//!
//! One service `ycsb` with one table `usertable` (key → counter). A transaction reads `k` keys
//! (default 4) and writes each back incremented by one. Its keys usually live in several
//! partitions, so it is written as a chain: the request lists its keys grouped by partition, and
//! each step handles the keys of the partition it runs in, then emits the rest of the work to
//! the partition owning the next key. Grouping means a chain visits a partition once, which is
//! what a user who knows the keys up front would write.
//!
//! **Invariant.** Every key is loaded with 0 and every committed transaction adds exactly `k`
//! to the table, so the sum of all values equals the number of keys incremented by committed
//! transactions (k × committed), no value is negative, and exactly `n_keys` rows exist.

use crate::Violations;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::{
    AppBuilder, AppDef, BusinessError, Client, HandlerResult, KeyOf, NamedQuery, ReadView, Request,
    RowKeys, SerialExecutor, Svc, Table, TxnCtx, TxnError, handler, service,
};

/// The YCSB-T application: one service; transactions return nothing (the client only needs to
/// know that they committed).
#[txn::app(services(UserTable), output = ())]
pub struct YcsbApp;

/// Inbound, to one partition: insert `keys` (all owned by that partition) with value 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    pub keys: Vec<u64>,
}

/// Inbound: increment each of `keys` once per occurrence. [`Ycsb::rmw`] groups the keys by
/// partition, so the chain visits each partition once; it starts at the owner of the first key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rmw {
    pub keys: Vec<u64>,
}

/// A step of a read-modify-write under way: increment `keys[next..]`, starting with the run
/// of keys this partition owns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RmwStep {
    pub keys: Vec<u64>,
    pub next: u32,
}

/// An empty key list routes to key 0's partition, where the handler refuses it.
impl KeyOf<u64> for Rmw {
    fn key(&self) -> &u64 {
        self.keys.first().unwrap_or(&0)
    }
}

impl KeyOf<u64> for RmwStep {
    fn key(&self) -> &u64 {
        self.keys.get(self.next as usize).unwrap_or(&0)
    }
}

/// Every key the transaction increments, so the serial pass can prefetch all of its rows (not
/// only the first, which routes it) a few transactions ahead.
impl RowKeys<u64> for Rmw {
    fn row_keys(&self, each: &mut dyn FnMut(&u64)) {
        self.keys.iter().for_each(each);
    }
}

/// Why a YCSB-T transaction aborts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum YcsbError {
    #[error("key {key} was never loaded")]
    UnknownKey { key: u64 },
    #[error("key {key} holds {value}, which cannot be incremented")]
    Overflow { key: u64, value: i64 },
    #[error("a read-modify-write needs at least one key")]
    NoKeys,
}

impl BusinessError for YcsbError {
    fn kind(&self) -> &'static str {
        match self {
            YcsbError::UnknownKey { .. } => kinds::UNKNOWN_KEY,
            YcsbError::Overflow { .. } => kinds::OVERFLOW,
            YcsbError::NoKeys => kinds::NO_KEYS,
        }
    }
}

/// The kinds of [`YcsbError`], as `AbortReason::User::kind` carries them.
pub mod kinds {
    pub const UNKNOWN_KEY: &str = "unknown_key";
    pub const OVERFLOW: &str = "overflow";
    pub const NO_KEYS: &str = "no_keys";
}

/// How YCSB-T is deployed.
#[derive(Clone, Copy, Debug)]
pub struct YcsbConfig {
    /// Rows in the table.
    pub n_keys: u64,
    /// Partitions of the `ycsb` service.
    pub n_partitions: u32,
}

impl Default for YcsbConfig {
    fn default() -> Self {
        YcsbConfig {
            n_keys: 1_000_000,
            n_partitions: 8,
        }
    }
}

/// A row of `usertable`: a key and its counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "usertable")]
pub struct UserRow {
    #[key]
    pub key: u64,
    pub value: i64,
}

/// The YCSB-T application and the handles to talk to it.
#[derive(Clone)]
pub struct Ycsb {
    app: Arc<AppDef<YcsbApp>>,
    pub service: Svc<UserTable>,
    /// key → row holding its counter.
    pub table: Table<u64, UserRow>,
    pub config: YcsbConfig,
    /// The named queries, which answer on every node of a cluster.
    pub queries: YcsbQueries,
}

/// YCSB-T's named queries (`AppBuilder::query`): called by name, so they also read partitions
/// other nodes hold; each partition answers a part, the caller merges them.
#[derive(Clone, Debug)]
pub struct YcsbQueries {
    /// A key's counter from the partition owning it (`None` elsewhere, or never loaded).
    pub read: NamedQuery<u64, Option<i64>>,
    /// Each partition's totals and counts (merged with [`YcsbAudit::merge`]).
    pub audit: NamedQuery<(), YcsbAudit>,
}

impl YcsbQueries {
    fn register(
        b: &mut AppBuilder<YcsbApp>,
        service: Svc<UserTable>,
        table: Table<u64, UserRow>,
        n_keys: u64,
    ) -> Self {
        let read = b.query("read", move |view, key: &u64| {
            (view.partition() == service.partition_of(key))
                .then(|| view.get(table, key).map(|row| row.value))
                .flatten()
        });
        let audit = b.query("audit", move |view, _: &()| {
            YcsbAudit::from_rows(view.iter(table).map(|(k, row)| (*k, row.value)), n_keys)
        });
        YcsbQueries { read, audit }
    }
}

impl Ycsb {
    /// Defines the service, its table and handler.
    pub fn new(config: YcsbConfig) -> Result<Self, TxnError> {
        let mut b = AppBuilder::<YcsbApp>::new();
        let service = b.add_service::<UserTable>("ycsb", config.n_partitions);
        let table = UserRow::table(&mut b, *service);
        UserTable { table, me: service }.register(&mut b, service);
        let queries = YcsbQueries::register(&mut b, service, table, config.n_keys);
        Ok(Ycsb {
            app: b.build()?,
            service,
            table,
            config,
            queries,
        })
    }

    /// The application definition, to start a `Runtime` or a `SerialExecutor` with.
    pub fn app(&self) -> &Arc<AppDef<YcsbApp>> {
        &self.app
    }

    /// The load: every key `0..n_keys` inserted with 0, as batch inserts of at most
    /// `rows_per_request` keys, each addressed to the partition owning its keys.
    pub fn load_requests(&self, rows_per_request: usize) -> Vec<Request<YcsbApp>> {
        let rows_per_request = rows_per_request.max(1);
        let n_partitions = self.service.n_partitions() as usize;
        let mut pending: Vec<Vec<u64>> = vec![Vec::new(); n_partitions];
        let mut out = Vec::new();
        for key in 0..self.config.n_keys {
            let p = self.service.partition_of(&key) as usize;
            pending[p].push(key);
            if pending[p].len() == rows_per_request {
                out.push(self.load_request(p as u32, std::mem::take(&mut pending[p])));
            }
        }
        for (p, keys) in pending.into_iter().enumerate() {
            if !keys.is_empty() {
                out.push(self.load_request(p as u32, keys));
            }
        }
        out
    }

    fn load_request(&self, partition: u32, keys: Vec<u64>) -> Request<YcsbApp> {
        self.service.request_to_partition(partition, Load { keys })
    }

    /// A read-modify-write of `keys` (each incremented once per occurrence). The keys are
    /// reordered by partition so the chain visits each partition once.
    pub fn rmw(&self, keys: &[u64]) -> Request<YcsbApp> {
        assert!(
            !keys.is_empty(),
            "a YCSB-T transaction needs at least one key"
        );
        let mut keyed: Vec<(u32, u64)> = keys
            .iter()
            .map(|k| (self.service.partition_of(k), *k))
            .collect();
        keyed.sort_unstable();
        self.service.request(Rmw {
            keys: keyed.into_iter().map(|(_, k)| k).collect(),
        })
    }

    /// Audits the committed state at one snapshot (a named query: it reads every node's
    /// partitions in a cluster).
    pub async fn audit(&self, client: &Client<YcsbApp>) -> Result<YcsbAudit, TxnError> {
        let parts = client
            .query_named(&self.queries.audit, &[*self.service], &())
            .await?;
        Ok(parts
            .into_iter()
            .fold(YcsbAudit::default(), YcsbAudit::merge))
    }

    /// Audits the serial executor's state.
    pub fn audit_serial(&self, exec: &SerialExecutor<YcsbApp>) -> YcsbAudit {
        exec.query(&[*self.service], self.audit_fn())
            .into_iter()
            .fold(YcsbAudit::default(), YcsbAudit::merge)
    }

    /// The per-partition part of an audit, for any `query` over the service (merge the parts
    /// with [`YcsbAudit::merge`]); lets other executors of the same app be checked.
    pub fn audit_fn(&self) -> impl Fn(&ReadView<'_>) -> YcsbAudit + Send + Sync + 'static {
        let (table, n_keys) = (self.table, self.config.n_keys);
        move |view| YcsbAudit::from_rows(view.iter(table).map(|(k, row)| (*k, row.value)), n_keys)
    }

    /// The value of one key at a consistent snapshot, from the partition owning it (a named
    /// query: it reads another node's partition in a cluster).
    pub async fn read(&self, client: &Client<YcsbApp>, key: u64) -> Result<Option<i64>, TxnError> {
        let at = [(*self.service, self.service.partition_of(&key))];
        let parts = client.query_named_at(&self.queries.read, &at, &key).await?;
        Ok(parts.into_iter().flatten().next())
    }
}

/// The `ycsb` service: its one table.
pub struct UserTable {
    table: Table<u64, UserRow>,
    /// The service itself: a read-modify-write continues in another of its partitions.
    me: Svc<UserTable>,
}

#[service(key = u64)]
impl UserTable {
    /// Inserts the keys of a load request with value 0.
    #[handler]
    fn load(&self, ctx: &mut TxnCtx<'_, YcsbApp>, ev: &Load) -> HandlerResult {
        for &key in &ev.keys {
            ctx.put(self.table, key, UserRow { key, value: 0 })?;
        }
        Ok(())
    }

    /// The first step of a read-modify-write.
    #[handler]
    fn rmw(&self, ctx: &mut TxnCtx<'_, YcsbApp>, ev: &Rmw) -> HandlerResult {
        if ev.keys.is_empty() {
            return Err(YcsbError::NoKeys.into());
        }
        self.increment_run(ctx, &ev.keys, 0)
    }

    /// A later step of a read-modify-write.
    #[handler(internal)]
    fn rmw_step(&self, ctx: &mut TxnCtx<'_, YcsbApp>, ev: &RmwStep) -> HandlerResult {
        self.increment_run(ctx, &ev.keys, ev.next as usize)
    }
}

impl UserTable {
    /// Increments the run of keys from `first` that this partition owns (at least `keys[first]`,
    /// which the step was routed by), then emits the rest of the transaction to the owner of
    /// the first key past the run.
    fn increment_run(
        &self,
        ctx: &mut TxnCtx<'_, YcsbApp>,
        keys: &[u64],
        first: usize,
    ) -> HandlerResult {
        let here = ctx.partition();
        let mut i = first;
        while i < keys.len() && (i == first || self.me.partition_of(&keys[i]) == here) {
            let key = keys[i];
            let Some(mut row) = ctx.get(self.table, &key)? else {
                return Err(YcsbError::UnknownKey { key }.into());
            };
            let Some(value) = row.value.checked_add(1) else {
                let value = row.value;
                return Err(YcsbError::Overflow { key, value }.into());
            };
            row.value = value;
            ctx.put(self.table, key, row)?;
            i += 1;
        }
        if i < keys.len() {
            let rest = RmwStep {
                keys: keys.to_vec(),
                next: i as u32,
            };
            ctx.emit(self.me, rest);
        }
        Ok(())
    }
}

/// Totals and counts of one snapshot of the table (or part of it; parts merge).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct YcsbAudit {
    pub n_rows: u64,
    pub sum: i128,
    pub n_negative: u64,
    /// Rows whose key is outside `0..n_keys` (never loaded, so never legitimately present).
    pub n_out_of_range: u64,
}

impl YcsbAudit {
    /// Folds rows of a table that should hold keys `0..n_keys`.
    pub fn from_rows(rows: impl Iterator<Item = (u64, i64)>, n_keys: u64) -> Self {
        let mut a = YcsbAudit::default();
        for (k, v) in rows {
            a.n_rows += 1;
            a.sum += i128::from(v);
            a.n_negative += u64::from(v < 0);
            a.n_out_of_range += u64::from(k >= n_keys);
        }
        a
    }

    /// Combines the audits of disjoint parts.
    pub fn merge(self, o: YcsbAudit) -> YcsbAudit {
        YcsbAudit {
            n_rows: self.n_rows + o.n_rows,
            sum: self.sum + o.sum,
            n_negative: self.n_negative + o.n_negative,
            n_out_of_range: self.n_out_of_range + o.n_out_of_range,
        }
    }
}

/// Criterion names, as they appear in reports.
pub mod criteria {
    pub const SUM_MATCHES_COMMITS: &str = "sum_equals_k_times_committed";
    pub const NEGATIVE_VALUE: &str = "no_negative_value";
    pub const ROW_COUNT: &str = "no_lost_or_phantom_rows";
}

/// Compares an audit with the table size and the number of key increments committed
/// transactions made (k × committed). A wrong sum counts as one violation; every negative row,
/// missing row or out-of-range row counts as one.
pub fn check(audit: &YcsbAudit, n_keys: u64, committed_increments: u64) -> Violations {
    let mut v = Violations::new();
    v.insert(
        criteria::SUM_MATCHES_COMMITS,
        u64::from(audit.sum != i128::from(committed_increments)),
    );
    v.insert(criteria::NEGATIVE_VALUE, audit.n_negative);
    v.insert(
        criteria::ROW_COUNT,
        audit.n_out_of_range + (audit.n_rows - audit.n_out_of_range).abs_diff(n_keys),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checker_accepts_a_consistent_table() {
        // Goal: a table whose sum is the committed increments, with all keys present, passes.
        let audit = YcsbAudit::from_rows([(0, 3), (1, 1), (2, 0), (3, 4)].into_iter(), 4);
        let v = check(&audit, 4, 8);
        assert!(v.values().all(|n| *n == 0), "{v:?}");
    }

    #[test]
    fn checker_catches_a_lost_or_extra_increment() {
        // Goal: one increment too many or too few breaks the sum criterion.
        let audit = YcsbAudit::from_rows([(0, 3), (1, 1), (2, 0), (3, 4)].into_iter(), 4);
        assert_eq!(check(&audit, 4, 7)[criteria::SUM_MATCHES_COMMITS], 1);
        assert_eq!(check(&audit, 4, 9)[criteria::SUM_MATCHES_COMMITS], 1);
    }

    #[test]
    fn checker_catches_negative_missing_and_phantom_rows() {
        // Goal: a negative value, a missing key and a key outside the table are each counted.
        let audit = YcsbAudit::from_rows([(0, -1), (1, 1), (9, 0)].into_iter(), 4);
        let v = check(&audit, 4, 0);
        assert_eq!(v[criteria::NEGATIVE_VALUE], 1);
        // Key 9 is a phantom and keys 2 and 3 are missing.
        assert_eq!(v[criteria::ROW_COUNT], 3);
        assert_eq!(v[criteria::SUM_MATCHES_COMMITS], 0);
    }

    #[test]
    fn rmw_groups_keys_by_partition_and_starts_at_the_first() {
        // Goal: the request's keys are ordered by partition so the chain visits each once.
        let y = Ycsb::new(YcsbConfig {
            n_keys: 1000,
            n_partitions: 4,
        })
        .unwrap();
        let keys: Vec<u64> = (0..16).collect();
        let r = y.rmw(&keys);
        let Some(UserTableEvent::Rmw(Rmw { keys: ordered })) =
            txn::Envelope::<UserTable>::unwrap(r.event())
        else {
            panic!("not an rmw: {r:?}")
        };
        let parts: Vec<u32> = ordered.iter().map(|k| y.service.partition_of(k)).collect();
        assert!(parts.windows(2).all(|w| w[0] <= w[1]), "{parts:?}");
        assert_eq!(r.partition(), parts[0]);
        let mut sorted = ordered.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, keys);
    }
}
