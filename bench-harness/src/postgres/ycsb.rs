//! YCSB-T in SQL: `usertable(key, value)`.
//!
//! A read-modify-write of k keys is one `UPDATE … SET value = value + 1 WHERE key = ANY(keys)`
//! (the btree scan visits the keys in key order, so two transactions lock shared keys in the
//! same order and cannot deadlock); a key listed twice is incremented twice, like the vmsdb
//! chain. A key that does not exist aborts the transaction as the vmsdb handler does.

use super::transfer::{insert_pairs, read_pairs};
use super::{PgConn, PgFailure, PgWorkload, TxnResult, business_abort};
use crate::workload::{Effects, Workload};
use crate::workloads::ycsb::{YcsbWorkload, increments};
use services::Violations;
use services::ycsb::{
    self, Load, Rmw, UserTable, UserTableEvent, YcsbAppEvent, YcsbAudit, YcsbError,
};
use tokio_postgres::{Client, Statement};
use txn::Envelope;

/// Names, fixed for a run.
pub struct YcsbRun {
    service: String,
}

/// Prepared statements of one connection.
pub struct YcsbStmts {
    increment_distinct: Statement,
    increment_counted: Statement,
    present: Statement,
    insert: Statement,
}

fn key(k: u64) -> i64 {
    // Keys come from `0..keys` (at most 10⁹).
    k as i64
}

impl PgWorkload for YcsbWorkload {
    type PgRun = YcsbRun;
    type Stmts = YcsbStmts;

    const TABLES: &'static str =
        "CREATE TABLE usertable (key bigint NOT NULL, value bigint NOT NULL);";
    const INDEXES: &'static str = "ALTER TABLE usertable ADD PRIMARY KEY (key);";

    fn pg_run(&self) -> YcsbRun {
        let y = self.ycsb();
        YcsbRun {
            service: y.app().service_name(*y.service).to_string(),
        }
    }

    async fn pg_load(&self, client: &Client) -> Result<u64, PgFailure> {
        // The rows vmsdb's load requests insert: every key with 0.
        let mut rows = Vec::with_capacity(self.args().keys as usize);
        for i in 0..self.n_load() {
            let request = self.load_request(i);
            match Envelope::<UserTable>::unwrap(request.event()) {
                Some(UserTableEvent::Load(Load { keys })) => {
                    rows.extend(keys.iter().map(|k| (key(*k), 0)));
                }
                _ => {
                    return Err(PgFailure::Harness(format!(
                        "load request {i} is not an insert: {request:?}"
                    )));
                }
            }
        }
        rows.sort_unstable();
        insert_pairs(client, "usertable", "key, value", &rows).await
    }

    async fn pg_prepare(&self, c: &Client) -> Result<YcsbStmts, PgFailure> {
        Ok(YcsbStmts {
            increment_distinct: c
                .prepare("UPDATE usertable SET value = value + 1 WHERE key = ANY($1::bigint[])")
                .await?,
            increment_counted: c
                .prepare(
                    "UPDATE usertable u SET value = u.value + t.n \
                     FROM (SELECT k, count(*) AS n FROM unnest($1::bigint[]) AS k GROUP BY k) t \
                     WHERE u.key = t.k",
                )
                .await?,
            present: c
                .prepare("SELECT key FROM usertable WHERE key = ANY($1::bigint[])")
                .await?,
            insert: c
                .prepare(
                    "INSERT INTO usertable AS u (key, value) \
                     SELECT k, 0 FROM unnest($1::bigint[]) AS k \
                     ON CONFLICT (key) DO UPDATE SET value = 0",
                )
                .await?,
        })
    }

    async fn pg_txn(
        &self,
        r: &YcsbRun,
        conn: &PgConn<YcsbStmts>,
        event: &YcsbAppEvent,
    ) -> Result<TxnResult, PgFailure> {
        let (c, s) = (&conn.client, &conn.stmts);
        match Envelope::<UserTable>::unwrap(event) {
            Some(UserTableEvent::Rmw(Rmw { keys })) => {
                if keys.is_empty() {
                    return business_abort(&r.service, YcsbError::NoKeys);
                }
                let keys: Vec<i64> = keys.iter().map(|k| key(*k)).collect();
                let mut distinct = keys.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let stmt = if distinct.len() == keys.len() {
                    &s.increment_distinct
                } else {
                    &s.increment_counted
                };
                let updated = c.execute(stmt, &[&keys]).await?;
                if updated < distinct.len() as u64 {
                    let present: Vec<i64> = c
                        .query(&s.present, &[&distinct])
                        .await?
                        .iter()
                        .map(|row| row.get(0))
                        .collect();
                    let missing = keys.iter().find(|k| !present.contains(k)).ok_or_else(|| {
                        PgFailure::Harness(format!(
                            "{updated} of {} keys updated, yet all of them exist",
                            distinct.len()
                        ))
                    })?;
                    let key = *missing as u64;
                    return business_abort(&r.service, YcsbError::UnknownKey { key });
                }
                Ok(Ok(()))
            }
            Some(UserTableEvent::Load(Load { keys })) => {
                let keys: Vec<i64> = keys.iter().map(|k| key(*k)).collect();
                c.execute(&s.insert, &[&keys]).await?;
                Ok(Ok(()))
            }
            _ => Err(PgFailure::Harness(format!(
                "{event:?} is an internal step of the vmsdb chain, not a request"
            ))),
        }
    }

    async fn pg_query(
        &self,
        _r: &YcsbRun,
        _conn: &PgConn<YcsbStmts>,
        _query: &(),
    ) -> Result<(), PgFailure> {
        // YCSB-T has no queries.
        Ok(())
    }

    async fn pg_audit(
        &self,
        _r: &YcsbRun,
        client: &Client,
        effects: &Effects,
    ) -> Result<Violations, PgFailure> {
        let rows = read_pairs(client, "SELECT key, value FROM usertable").await?;
        let n_keys = self.args().keys;
        // A negative key would be a phantom; as u64 it is out of range, and counted so.
        let audit = YcsbAudit::from_rows(rows.into_iter().map(|(k, v)| (k as u64, v)), n_keys);
        Ok(ycsb::check(&audit, n_keys, increments(effects)))
    }
}
