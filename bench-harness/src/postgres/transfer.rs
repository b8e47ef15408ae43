//! The transfer workload in SQL: `accounts(id, balance)` and `asset_ledger(id, value)`.
//!
//! A transfer is the vmsdb chain in one transaction, step for step and with the same checks
//! in the same order: debit the source account if it stays at or above the minimum, debit the
//! source entry likewise, credit the target account, credit the target entry. Each debit is a
//! conditional `UPDATE … RETURNING`; when it matches no row, one more read tells an unknown
//! row from an insufficient one, for the abort reason. A deposit upserts both rows, as the
//! vmsdb handler (a missing row counts as 0). A balance lookup reads both rows in one
//! read-only serializable transaction.

use super::{
    Col, PgConn, PgFailure, PgWorkload, TxnResult, business_abort, insert_columns, pipeline,
    read_rows,
};
use crate::workload::{Effects, Workload};
use crate::workloads::transfer::TransferWorkload;
use futures::FutureExt;
use rustc_hash::FxHashMap;
use services::Violations;
use services::ledger::{
    self, AccountsEvent, Deposit, LedgerAppEvent, LedgerAudit, LedgerError, Transfer,
};
use tokio_postgres::{Client, Statement};
use txn::Envelope;

/// Names and the business rule, fixed for a run.
pub struct TransferRun {
    accounts: String,
    assets: String,
    min_balance: i64,
}

/// Prepared statements of one connection.
pub struct TransferStmts {
    debit_account: Statement,
    debit_entry: Statement,
    credit_account: Statement,
    credit_entry: Statement,
    get_account: Statement,
    get_entry: Statement,
    deposit_account: Statement,
    deposit_entry: Statement,
    lookup: Statement,
}

/// Reads `(id, value)` pairs of a whole table.
pub(super) async fn read_pairs(client: &Client, sql: &str) -> Result<Vec<(i64, i64)>, PgFailure> {
    let mut out = Vec::new();
    read_rows(client, sql, |row| {
        out.push((row.try_get(0)?, row.try_get(1)?));
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Inserts `(id, value)` pairs into `table (columns)`.
pub(super) async fn insert_pairs(
    client: &Client,
    table: &str,
    columns: &str,
    rows: &[(i64, i64)],
) -> Result<u64, PgFailure> {
    let (ids, values): (Vec<i64>, Vec<i64>) = rows.iter().copied().unzip();
    let sql =
        format!("INSERT INTO {table} ({columns}) SELECT * FROM unnest($1::bigint[], $2::bigint[])");
    insert_columns(client, &sql, &[Col::Int(&ids), Col::Int(&values)]).await
}

fn id(v: u64) -> i64 {
    // Ids come from `0..accounts` (at most 10⁹).
    v as i64
}

impl PgWorkload for TransferWorkload {
    type PgRun = TransferRun;
    type Stmts = TransferStmts;

    const TABLES: &'static str = "
        CREATE TABLE accounts (id bigint NOT NULL, balance bigint NOT NULL);
        CREATE TABLE asset_ledger (id bigint NOT NULL, value bigint NOT NULL);";
    const INDEXES: &'static str = "
        ALTER TABLE accounts ADD PRIMARY KEY (id);
        ALTER TABLE asset_ledger ADD PRIMARY KEY (id);";

    fn pg_run(&self) -> TransferRun {
        let l = self.ledger();
        TransferRun {
            accounts: l.app().service_name(*l.accounts_service).to_string(),
            assets: l.app().service_name(*l.assets_service).to_string(),
            min_balance: l.config.min_balance,
        }
    }

    async fn pg_load(&self, client: &Client) -> Result<u64, PgFailure> {
        // The rows vmsdb's load requests (deposits) create: amounts added per id.
        let mut accounts: FxHashMap<u64, i64> = FxHashMap::default();
        let mut entries: FxHashMap<u64, i64> = FxHashMap::default();
        for i in 0..self.n_load() {
            let request = self.load_request(i);
            match accounts_event(request.event()) {
                Some(AccountsEvent::Deposit(Deposit {
                    account,
                    entry,
                    amount,
                })) => {
                    *accounts.entry(*account).or_default() += amount;
                    *entries.entry(*entry).or_default() += amount;
                }
                _ => {
                    return Err(PgFailure::Harness(format!(
                        "load request {i} is not a deposit: {request:?}"
                    )));
                }
            }
        }
        let mut accounts: Vec<(i64, i64)> = accounts.into_iter().map(|(k, v)| (id(k), v)).collect();
        let mut entries: Vec<(i64, i64)> = entries.into_iter().map(|(k, v)| (id(k), v)).collect();
        accounts.sort_unstable();
        entries.sort_unstable();
        let (a, e) = futures::try_join!(
            insert_pairs(client, "accounts", "id, balance", &accounts),
            insert_pairs(client, "asset_ledger", "id, value", &entries)
        )?;
        Ok(a + e)
    }

    async fn pg_prepare(&self, c: &Client) -> Result<TransferStmts, PgFailure> {
        let debit = |table: &str, col: &str| {
            format!(
                "UPDATE {table} SET {col} = {col} - $2 WHERE id = $1 AND {col} - $2 >= $3 \
                 RETURNING {col}"
            )
        };
        let credit = |table: &str, col: &str| {
            format!("UPDATE {table} SET {col} = {col} + $2 WHERE id = $1 RETURNING {col}")
        };
        let deposit = |table: &str, col: &str| {
            format!(
                "INSERT INTO {table} AS t (id, {col}) VALUES ($1, $2) ON CONFLICT (id) \
                 DO UPDATE SET {col} = t.{col} + EXCLUDED.{col}"
            )
        };
        Ok(TransferStmts {
            debit_account: c.prepare(&debit("accounts", "balance")).await?,
            debit_entry: c.prepare(&debit("asset_ledger", "value")).await?,
            credit_account: c.prepare(&credit("accounts", "balance")).await?,
            credit_entry: c.prepare(&credit("asset_ledger", "value")).await?,
            get_account: c
                .prepare("SELECT balance FROM accounts WHERE id = $1")
                .await?,
            get_entry: c
                .prepare("SELECT value FROM asset_ledger WHERE id = $1")
                .await?,
            deposit_account: c.prepare(&deposit("accounts", "balance")).await?,
            deposit_entry: c.prepare(&deposit("asset_ledger", "value")).await?,
            lookup: c
                .prepare(
                    "SELECT (SELECT balance FROM accounts WHERE id = $1), \
                            (SELECT value FROM asset_ledger WHERE id = $2)",
                )
                .await?,
        })
    }

    async fn pg_txn(
        &self,
        r: &TransferRun,
        conn: &PgConn<TransferStmts>,
        event: &LedgerAppEvent,
    ) -> Result<TxnResult, PgFailure> {
        let (c, s) = (&conn.client, &conn.stmts);
        match accounts_event(event) {
            Some(&AccountsEvent::Deposit(Deposit {
                account,
                entry,
                amount,
            })) => {
                if amount <= 0 {
                    return invalid_amount(r, amount);
                }
                let (account, entry) = (id(account), id(entry));
                pipeline(vec![
                    c.execute(&s.deposit_account, &[&account, &amount]).boxed(),
                    c.execute(&s.deposit_entry, &[&entry, &amount]).boxed(),
                ])
                .await?;
                Ok(Ok(()))
            }
            Some(AccountsEvent::Transfer(t)) => transfer(r, c, s, t).await,
            _ => Err(PgFailure::Harness(format!(
                "{event:?} is an internal step of the vmsdb chain, not a request"
            ))),
        }
    }

    async fn pg_query(
        &self,
        _r: &TransferRun,
        conn: &PgConn<TransferStmts>,
        &(account, entry): &(u64, u64),
    ) -> Result<(), PgFailure> {
        let row = conn
            .client
            .query_one(&conn.stmts.lookup, &[&id(account), &id(entry)])
            .await?;
        let (balance, value): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
        // Every looked-up key was loaded; a miss would be a lost row.
        debug_assert!(
            balance.is_some() && value.is_some(),
            "lookup missed {account}/{entry}"
        );
        Ok(())
    }

    async fn pg_audit(
        &self,
        _r: &TransferRun,
        client: &Client,
        effects: &Effects,
    ) -> Result<Violations, PgFailure> {
        let (accounts, entries) = futures::try_join!(
            read_pairs(client, "SELECT id, balance FROM accounts"),
            read_pairs(client, "SELECT id, value FROM asset_ledger")
        )?;
        // Ids are never negative; a negative one would be a phantom row, kept as a huge id.
        let audit = LedgerAudit::from_rows(
            accounts.into_iter().map(|(k, v)| (k as u64, v)),
            entries.into_iter().map(|(k, v)| (k as u64, v)),
        );
        Ok(ledger::check(&audit, &self.expected(effects)))
    }
}

/// The `accounts` event an envelope holds (every ledger request goes to `accounts`).
fn accounts_event(event: &LedgerAppEvent) -> Option<&AccountsEvent> {
    Envelope::<ledger::Accounts>::unwrap(event)
}

fn invalid_amount(r: &TransferRun, amount: i64) -> Result<TxnResult, PgFailure> {
    business_abort(&r.accounts, LedgerError::InvalidAmount { amount })
}

/// The four steps of the vmsdb chain, in its order, with its checks.
async fn transfer(
    r: &TransferRun,
    c: &Client,
    s: &TransferStmts,
    t: &Transfer,
) -> Result<TxnResult, PgFailure> {
    if t.amount <= 0 {
        return invalid_amount(r, t.amount);
    }
    let (amount, min) = (t.amount, r.min_balance);
    let (src_account, src_entry) = (id(t.src_account), id(t.src_entry));
    let (dst_account, dst_entry) = (id(t.dst_account), id(t.dst_entry));
    // accounts[src]: balance − amount ≥ minimum, debit.
    if c.query_opt(&s.debit_account, &[&src_account, &amount, &min])
        .await?
        .is_none()
    {
        let error = match c.query_opt(&s.get_account, &[&src_account]).await? {
            None => LedgerError::UnknownAccount {
                role: "source",
                account: t.src_account,
            },
            Some(row) => LedgerError::InsufficientBalance {
                account: t.src_account,
                balance: row.get::<_, i64>(0),
                amount,
                min,
            },
        };
        return business_abort(&r.accounts, error);
    }
    // assets[src]: value − amount ≥ minimum, debit (an abort here undoes the first debit).
    if c.query_opt(&s.debit_entry, &[&src_entry, &amount, &min])
        .await?
        .is_none()
    {
        let error = match c.query_opt(&s.get_entry, &[&src_entry]).await? {
            None => LedgerError::UnknownEntry {
                role: "source",
                entry: t.src_entry,
            },
            Some(row) => LedgerError::InsufficientAssets {
                entry: t.src_entry,
                value: row.get::<_, i64>(0),
                amount,
                min,
            },
        };
        return business_abort(&r.assets, error);
    }
    // accounts[dst] and assets[dst]: credit.
    if c.query_opt(&s.credit_account, &[&dst_account, &amount])
        .await?
        .is_none()
    {
        let account = t.dst_account;
        let error = LedgerError::UnknownAccount {
            role: "target",
            account,
        };
        return business_abort(&r.accounts, error);
    }
    if c.query_opt(&s.credit_entry, &[&dst_entry, &amount])
        .await?
        .is_none()
    {
        let entry = t.dst_entry;
        let error = LedgerError::UnknownEntry {
            role: "target",
            entry,
        };
        return business_abort(&r.assets, error);
    }
    Ok(Ok(()))
}
