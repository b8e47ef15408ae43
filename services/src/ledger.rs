//! The Streaming-Ledger transfer app: accounts and an asset ledger, deposits, 4-row transfers
//! with preconditions, balance lookups, and the invariant checkers.
//!
//! # Shape
//!
//! Two services, as two teams would own them:
//!
//! | service    | table          | key        | row                            |
//! |------------|----------------|------------|--------------------------------|
//! | `accounts` | `accounts`     | account id | [`Account`]: its balance       |
//! | `assets`   | `asset_ledger` | entry id   | [`AssetEntry`]: its asset value |
//!
//! Both are partitioned by their key, so the four rows of a transfer usually live in four
//! different partitions of two services. A transfer is one transaction, written as a chain of
//! events that visits the owner of each row in turn:
//!
//! ```text
//! accounts[src_account]  check balance − amount ≥ minimum, debit
//!   → assets[src_entry]  check value − amount ≥ minimum, debit      (may abort: undoes step 1)
//!   → accounts[dst_account]  credit
//!   → assets[dst_entry]      credit, return both source values after the transfer
//! ```
//!
//! The preconditions come first so that a transfer that cannot happen stops early; when the
//! second check fails, the whole transaction aborts and the debit of the first step is discarded
//! with it — no compensation code, which is the point of vmsdb.
//!
//! A deposit credits one account and one entry (a 2-step chain); a balance lookup is a
//! read-only snapshot query that never blocks or aborts a transfer.
//!
//! Written as users write their services: the rows declare their tables
//! (`#[derive(Table)]`), each event is a type of its own whose `#[key]` field routes it
//! (`#[derive(txn::Event)]`, or an `impl KeyOf` for a key inside the event), each service is a
//! struct whose `#[handler]` methods take one event type each (`#[service(key = u64)]`, with
//! `#[handler(internal)]` on the steps clients may not submit), business aborts are a
//! [`LedgerError`], and `#[txn::app]` names the application's services.
//! `docs/tutorial-ledger.md` walks through this file.
//!
//! # Invariants
//!
//! The totals of balances and of asset values change only by deposits, and nothing goes
//! negative. [`LedgerAudit`] folds a snapshot into totals and counts, [`check`] compares them
//! with what the committed deposits say they must be.

use crate::Violations;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use txn::{
    AppBuilder, AppDef, BusinessError, Client, HandlerResult, KeyOf, NamedQuery, ReadView, Request,
    SerialExecutor, ServiceRef, Svc, Table, TxnCtx, TxnError, handler, service,
};

/// The ledger application: two services; a committed transaction returns a [`LedgerOutput`].
#[txn::app(services(Accounts, Assets), output = LedgerOutput)]
pub struct LedgerApp;

/// Inbound, to `accounts`: credit `amount` to an account and an entry, creating them if they do
/// not exist yet (the loader opens accounts this way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct Deposit {
    #[key]
    pub account: u64,
    pub entry: u64,
    pub amount: i64,
}

/// Inbound, to `accounts` at the source account: move `amount` from the source account and
/// entry to the target account and entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct Transfer {
    #[key]
    pub src_account: u64,
    pub src_entry: u64,
    pub dst_account: u64,
    pub dst_entry: u64,
    pub amount: i64,
}

/// Step 2 of a deposit, in `assets`; carries the account's new balance for the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct DepositEntry {
    #[key]
    pub entry: u64,
    pub amount: i64,
    pub balance: i64,
}

/// Step 2 of a transfer, in `assets` at the source entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebitSourceEntry {
    pub transfer: Transfer,
    pub src_balance: i64,
}

/// Step 3 of a transfer, in `accounts` at the target account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTargetAccount {
    pub transfer: Transfer,
    pub src_balance: i64,
    pub src_value: i64,
}

/// Step 4 of a transfer, in `assets` at the target entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTargetEntry {
    pub transfer: Transfer,
    pub src_balance: i64,
    pub src_value: i64,
}

// The later steps of a transfer are routed by a field of the transfer they carry.
impl KeyOf<u64> for DebitSourceEntry {
    fn key(&self) -> &u64 {
        &self.transfer.src_entry
    }
}

impl KeyOf<u64> for CreditTargetAccount {
    fn key(&self) -> &u64 {
        &self.transfer.dst_account
    }
}

impl KeyOf<u64> for CreditTargetEntry {
    fn key(&self) -> &u64 {
        &self.transfer.dst_entry
    }
}

/// What a committed ledger transaction returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerOutput {
    /// The account's balance and the entry's value after the deposit.
    Deposited { balance: i64, entry_value: i64 },
    /// The source account's balance and source entry's value after the transfer.
    Transferred { src_balance: i64, src_value: i64 },
}

/// Why the ledger refuses a deposit or transfer: the business aborts, each with a stable
/// [`kind`](BusinessError::kind) that reports group by.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error(
        "account {account} holds {balance}, a transfer of {amount} would leave less than {min}"
    )]
    InsufficientBalance {
        account: u64,
        balance: i64,
        amount: i64,
        min: i64,
    },
    #[error("entry {entry} holds {value}, a transfer of {amount} would leave less than {min}")]
    InsufficientAssets {
        entry: u64,
        value: i64,
        amount: i64,
        min: i64,
    },
    #[error("no {role} account {account}")]
    UnknownAccount { role: &'static str, account: u64 },
    #[error("no {role} entry {entry}")]
    UnknownEntry { role: &'static str, entry: u64 },
    #[error("amount {amount} must be positive")]
    InvalidAmount { amount: i64 },
    #[error("{what} {id} holds {value}, cannot add {amount}")]
    Overflow {
        what: &'static str,
        id: u64,
        value: i64,
        amount: i64,
    },
}

impl BusinessError for LedgerError {
    fn kind(&self) -> &'static str {
        match self {
            LedgerError::InsufficientBalance { .. } => kinds::INSUFFICIENT_BALANCE,
            LedgerError::InsufficientAssets { .. } => kinds::INSUFFICIENT_ASSETS,
            LedgerError::UnknownAccount { .. } => kinds::UNKNOWN_ACCOUNT,
            LedgerError::UnknownEntry { .. } => kinds::UNKNOWN_ENTRY,
            LedgerError::InvalidAmount { .. } => kinds::INVALID_AMOUNT,
            LedgerError::Overflow { .. } => kinds::OVERFLOW,
        }
    }
}

/// The kinds of [`LedgerError`], as `AbortReason::User::kind` carries them.
pub mod kinds {
    pub const INSUFFICIENT_BALANCE: &str = "insufficient_balance";
    pub const INSUFFICIENT_ASSETS: &str = "insufficient_asset_value";
    pub const UNKNOWN_ACCOUNT: &str = "unknown_account";
    pub const UNKNOWN_ENTRY: &str = "unknown_entry";
    pub const INVALID_AMOUNT: &str = "invalid_amount";
    pub const OVERFLOW: &str = "overflow";
}

/// How the ledger is deployed and what its business rule says.
#[derive(Clone, Copy, Debug)]
pub struct LedgerConfig {
    /// Partitions of each of the two services.
    pub n_partitions: u32,
    /// A transfer must leave the source account and the source entry at or above this.
    pub min_balance: i64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            n_partitions: 4,
            min_balance: 0,
        }
    }
}

/// A row of the `accounts` table: an account and its balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "accounts")]
pub struct Account {
    #[key]
    pub id: u64,
    pub balance: i64,
}

/// A row of the `asset_ledger` table: an entry and its asset value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "asset_ledger")]
pub struct AssetEntry {
    #[key]
    pub id: u64,
    pub value: i64,
}

/// The ledger application and the handles to talk to it.
#[derive(Clone)]
pub struct Ledger {
    app: Arc<AppDef<LedgerApp>>,
    /// The `accounts` service.
    pub accounts_service: Svc<Accounts>,
    /// The `assets` service.
    pub assets_service: Svc<Assets>,
    /// account id → account row.
    pub accounts: Table<u64, Account>,
    /// entry id → asset-ledger entry.
    pub asset_ledger: Table<u64, AssetEntry>,
    pub config: LedgerConfig,
    /// The named queries, which answer on every node of a cluster.
    pub queries: LedgerQueries,
}

/// The ledger's named queries (`AppBuilder::query`): called by name, so they also read
/// partitions other nodes hold; each partition answers a part, the caller merges them.
#[derive(Clone, Debug)]
pub struct LedgerQueries {
    /// `(account, entry)`: the account's balance and the entry's value, from the partitions
    /// owning them (parts merged with [`Balance::merge`]).
    pub balance: NamedQuery<(u64, u64), Balance>,
    /// Each partition's totals and counts (merged with [`LedgerAudit::merge`]).
    pub audit: NamedQuery<(), LedgerAudit>,
}

impl LedgerQueries {
    fn register(
        b: &mut AppBuilder<LedgerApp>,
        (accounts_service, assets_service): (ServiceRef, ServiceRef),
        (accounts, asset_ledger): (Table<u64, Account>, Table<u64, AssetEntry>),
    ) -> Self {
        let balance = b.query("balance", move |view, &(account, entry): &(u64, u64)| {
            let owns = |service: ServiceRef, key: &u64| {
                view.is(service) && view.partition() == service.partition_of(key)
            };
            Balance {
                account: owns(accounts_service, &account)
                    .then(|| view.get(accounts, &account).map(|a| a.balance))
                    .flatten(),
                entry: owns(assets_service, &entry)
                    .then(|| view.get(asset_ledger, &entry).map(|e| e.value))
                    .flatten(),
            }
        });
        let audit = b.query("audit", move |view, _: &()| {
            LedgerAudit::from_rows(
                view.iter(accounts).map(|(id, a)| (*id, a.balance)),
                view.iter(asset_ledger).map(|(id, e)| (*id, e.value)),
            )
        });
        LedgerQueries { balance, audit }
    }
}

impl Ledger {
    /// Defines the two services, their tables and handlers.
    pub fn new(config: LedgerConfig) -> Result<Self, TxnError> {
        let mut b = AppBuilder::<LedgerApp>::new();
        let accounts_service = b.add_service::<Accounts>("accounts", config.n_partitions);
        let assets_service = b.add_service::<Assets>("assets", config.n_partitions);
        let accounts = Account::table(&mut b, *accounts_service);
        let asset_ledger = AssetEntry::table(&mut b, *assets_service);
        let min_balance = config.min_balance;
        Accounts {
            accounts,
            assets: assets_service,
            min_balance,
        }
        .register(&mut b, accounts_service);
        Assets {
            asset_ledger,
            accounts: accounts_service,
            min_balance,
        }
        .register(&mut b, assets_service);
        let services = (*accounts_service, *assets_service);
        let queries = LedgerQueries::register(&mut b, services, (accounts, asset_ledger));
        Ok(Ledger {
            app: b.build()?,
            accounts_service,
            assets_service,
            accounts,
            asset_ledger,
            config,
            queries,
        })
    }
    /// The application definition, to start a `Runtime` or a `SerialExecutor` with.
    pub fn app(&self) -> &Arc<AppDef<LedgerApp>> {
        &self.app
    }

    /// A deposit of `amount` into `account` and `entry`.
    pub fn deposit(&self, account: u64, entry: u64, amount: i64) -> Request<LedgerApp> {
        self.accounts_service.request(Deposit {
            account,
            entry,
            amount,
        })
    }

    /// A transfer; it starts in the partition owning the source account.
    pub fn transfer(&self, transfer: Transfer) -> Request<LedgerApp> {
        self.accounts_service.request(transfer)
    }

    /// The deposit that opens account `i` and entry `i` with `initial_balance`: the data loader
    /// submits these for `i in 0..n_accounts`.
    pub fn initial_deposit(&self, i: u64, initial_balance: i64) -> Request<LedgerApp> {
        self.deposit(i, i, initial_balance)
    }

    /// Balance lookup: a read-only query at one consistent snapshot of both services.
    pub async fn lookup(
        &self,
        client: &Client<LedgerApp>,
        account: u64,
        entry: u64,
    ) -> Result<Balance, TxnError> {
        let parts = client
            .query(
                &[*self.accounts_service, *self.assets_service],
                self.lookup_fn(account, entry),
            )
            .await?;
        Ok(parts.into_iter().fold(Balance::default(), Balance::merge))
    }

    /// Balance lookup on the serial executor.
    pub fn lookup_serial(
        &self,
        exec: &SerialExecutor<LedgerApp>,
        account: u64,
        entry: u64,
    ) -> Balance {
        exec.query(
            &[*self.accounts_service, *self.assets_service],
            self.lookup_fn(account, entry),
        )
        .into_iter()
        .fold(Balance::default(), Balance::merge)
    }

    /// The per-partition part of a lookup: only the partitions owning the two keys look. For
    /// any `query` over both services (merge the parts with [`Balance::merge`]).
    pub fn lookup_fn(
        &self,
        account: u64,
        entry: u64,
    ) -> impl Fn(&ReadView<'_>) -> Balance + Send + Sync + 'static {
        let (accounts_service, assets_service) = (*self.accounts_service, *self.assets_service);
        let (accounts, asset_ledger) = (self.accounts, self.asset_ledger);
        move |view| {
            let mut b = Balance::default();
            if view.is(accounts_service)
                && view.partition() == accounts_service.partition_of(&account)
            {
                b.account = view.get(accounts, &account).map(|a| a.balance);
            }
            if view.is(assets_service) && view.partition() == assets_service.partition_of(&entry) {
                b.entry = view.get(asset_ledger, &entry).map(|e| e.value);
            }
            b
        }
    }

    /// Audits the committed state at one snapshot (a named query: it reads every node's
    /// partitions in a cluster).
    pub async fn audit(&self, client: &Client<LedgerApp>) -> Result<LedgerAudit, TxnError> {
        let services = [*self.accounts_service, *self.assets_service];
        let parts = client
            .query_named(&self.queries.audit, &services, &())
            .await?;
        Ok(parts
            .into_iter()
            .fold(LedgerAudit::default(), LedgerAudit::merge))
    }

    /// Audits the serial executor's state.
    pub fn audit_serial(&self, exec: &SerialExecutor<LedgerApp>) -> LedgerAudit {
        exec.query(
            &[*self.accounts_service, *self.assets_service],
            self.audit_fn(),
        )
        .into_iter()
        .fold(LedgerAudit::default(), LedgerAudit::merge)
    }

    /// The per-partition part of an audit, for any `query` over both services (merge the parts
    /// with [`LedgerAudit::merge`]); lets other executors of the same app be checked.
    pub fn audit_fn(&self) -> impl Fn(&ReadView<'_>) -> LedgerAudit + Send + Sync + 'static {
        let (accounts, asset_ledger) = (self.accounts, self.asset_ledger);
        move |view| {
            // `iter` yields nothing for the other service's table, so one closure serves both.
            LedgerAudit::from_rows(
                view.iter(accounts).map(|(id, a)| (*id, a.balance)),
                view.iter(asset_ledger).map(|(id, e)| (*id, e.value)),
            )
        }
    }
}

/// The result of a balance lookup (`None`: no such account or entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub account: Option<i64>,
    pub entry: Option<i64>,
}

impl Balance {
    /// Combines two partitions' parts of a lookup.
    pub fn merge(self, other: Balance) -> Balance {
        Balance {
            account: self.account.or(other.account),
            entry: self.entry.or(other.entry),
        }
    }
}

fn amount_is_valid(amount: i64) -> Result<(), LedgerError> {
    if amount <= 0 {
        return Err(LedgerError::InvalidAmount { amount });
    }
    Ok(())
}

fn credit(what: &'static str, id: u64, value: i64, amount: i64) -> Result<i64, LedgerError> {
    value.checked_add(amount).ok_or(LedgerError::Overflow {
        what,
        id,
        value,
        amount,
    })
}

/// Whether `value - amount` stays at or above `min` (`amount > 0`; an underflow, reachable only
/// through a broken state, counts as going below).
fn leaves_at_least(value: i64, amount: i64, min: i64) -> bool {
    value.checked_sub(amount).is_some_and(|after| after >= min)
}

/// The `accounts` service: every step that touches an account row.
pub struct Accounts {
    accounts: Table<u64, Account>,
    /// The `assets` service, which the deposit and transfer steps continue in.
    assets: Svc<Assets>,
    min_balance: i64,
}

#[service(key = u64)]
impl Accounts {
    /// Deposit step 1: credit the account (opening it), then the entry in `assets`.
    #[handler]
    fn deposit(&self, ctx: &mut TxnCtx<'_, LedgerApp>, ev: &Deposit) -> HandlerResult {
        amount_is_valid(ev.amount)?;
        let balance = ctx
            .get(self.accounts, &ev.account)?
            .map_or(0, |a| a.balance);
        let balance = credit("account", ev.account, balance, ev.amount)?;
        let row = Account {
            id: ev.account,
            balance,
        };
        ctx.put(self.accounts, row.key(), row)?;
        let next = DepositEntry {
            entry: ev.entry,
            amount: ev.amount,
            balance,
        };
        ctx.emit(self.assets, next);
        Ok(())
    }

    /// Transfer step 1: the precondition on the source account, then its debit.
    #[handler]
    fn debit_source_account(&self, ctx: &mut TxnCtx<'_, LedgerApp>, t: &Transfer) -> HandlerResult {
        amount_is_valid(t.amount)?;
        let Some(mut account) = ctx.get(self.accounts, &t.src_account)? else {
            let role = "source";
            return Err(LedgerError::UnknownAccount {
                role,
                account: t.src_account,
            }
            .into());
        };
        if !leaves_at_least(account.balance, t.amount, self.min_balance) {
            return Err(LedgerError::InsufficientBalance {
                account: t.src_account,
                balance: account.balance,
                amount: t.amount,
                min: self.min_balance,
            }
            .into());
        }
        account.balance -= t.amount;
        ctx.put(self.accounts, account.key(), account)?;
        let next = DebitSourceEntry {
            transfer: *t,
            src_balance: account.balance,
        };
        ctx.emit(self.assets, next);
        Ok(())
    }

    /// Transfer step 3: the target account must exist; credit it.
    #[handler(internal)]
    fn credit_target_account(
        &self,
        ctx: &mut TxnCtx<'_, LedgerApp>,
        ev: &CreditTargetAccount,
    ) -> HandlerResult {
        let t = ev.transfer;
        let Some(mut account) = ctx.get(self.accounts, &t.dst_account)? else {
            let role = "target";
            return Err(LedgerError::UnknownAccount {
                role,
                account: t.dst_account,
            }
            .into());
        };
        account.balance = credit("account", t.dst_account, account.balance, t.amount)?;
        ctx.put(self.accounts, account.key(), account)?;
        let next = CreditTargetEntry {
            transfer: t,
            src_balance: ev.src_balance,
            src_value: ev.src_value,
        };
        ctx.emit(self.assets, next);
        Ok(())
    }
}

/// The `assets` service: every step that touches an asset-ledger entry.
pub struct Assets {
    asset_ledger: Table<u64, AssetEntry>,
    /// The `accounts` service, which the transfer continues in after the source entry.
    accounts: Svc<Accounts>,
    min_balance: i64,
}

#[service(key = u64)]
impl Assets {
    /// Deposit step 2: credit the entry (opening it); the output for the client.
    #[handler(internal)]
    fn deposit_entry(&self, ctx: &mut TxnCtx<'_, LedgerApp>, ev: &DepositEntry) -> HandlerResult {
        let value = ctx
            .get(self.asset_ledger, &ev.entry)?
            .map_or(0, |e| e.value);
        let value = credit("entry", ev.entry, value, ev.amount)?;
        let row = AssetEntry {
            id: ev.entry,
            value,
        };
        ctx.put(self.asset_ledger, row.key(), row)?;
        ctx.set_output(LedgerOutput::Deposited {
            balance: ev.balance,
            entry_value: value,
        });
        Ok(())
    }

    /// Transfer step 2: the precondition on the source entry, then its debit.
    #[handler(internal)]
    fn debit_source_entry(
        &self,
        ctx: &mut TxnCtx<'_, LedgerApp>,
        ev: &DebitSourceEntry,
    ) -> HandlerResult {
        let t = ev.transfer;
        let Some(mut entry) = ctx.get(self.asset_ledger, &t.src_entry)? else {
            let role = "source";
            return Err(LedgerError::UnknownEntry {
                role,
                entry: t.src_entry,
            }
            .into());
        };
        if !leaves_at_least(entry.value, t.amount, self.min_balance) {
            // Aborting here also discards the debit of the source account in step 1.
            return Err(LedgerError::InsufficientAssets {
                entry: t.src_entry,
                value: entry.value,
                amount: t.amount,
                min: self.min_balance,
            }
            .into());
        }
        entry.value -= t.amount;
        ctx.put(self.asset_ledger, entry.key(), entry)?;
        let next = CreditTargetAccount {
            transfer: t,
            src_balance: ev.src_balance,
            src_value: entry.value,
        };
        ctx.emit(self.accounts, next);
        Ok(())
    }

    /// Transfer step 4: the target entry must exist; credit it; the output for the client.
    #[handler(internal)]
    fn credit_target_entry(
        &self,
        ctx: &mut TxnCtx<'_, LedgerApp>,
        ev: &CreditTargetEntry,
    ) -> HandlerResult {
        let t = ev.transfer;
        let Some(mut entry) = ctx.get(self.asset_ledger, &t.dst_entry)? else {
            let role = "target";
            return Err(LedgerError::UnknownEntry {
                role,
                entry: t.dst_entry,
            }
            .into());
        };
        entry.value = credit("entry", t.dst_entry, entry.value, t.amount)?;
        ctx.put(self.asset_ledger, entry.key(), entry)?;
        ctx.set_output(LedgerOutput::Transferred {
            src_balance: ev.src_balance,
            src_value: ev.src_value,
        });
        Ok(())
    }
}

/// Totals and counts of one snapshot of the ledger (or of one partition of it; partial audits
/// [`merge`](LedgerAudit::merge)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAudit {
    pub n_accounts: u64,
    pub n_entries: u64,
    /// Sums in `i128`, so no realistic state can overflow them and hide a violation.
    pub total_balance: i128,
    pub total_assets: i128,
    pub n_negative_balances: u64,
    pub n_negative_entries: u64,
}

impl LedgerAudit {
    /// Folds account rows and entry rows.
    pub fn from_rows(
        accounts: impl Iterator<Item = (u64, i64)>,
        entries: impl Iterator<Item = (u64, i64)>,
    ) -> Self {
        let mut a = LedgerAudit::default();
        for (_, balance) in accounts {
            a.n_accounts += 1;
            a.total_balance += i128::from(balance);
            a.n_negative_balances += u64::from(balance < 0);
        }
        for (_, value) in entries {
            a.n_entries += 1;
            a.total_assets += i128::from(value);
            a.n_negative_entries += u64::from(value < 0);
        }
        a
    }

    /// Combines the audits of disjoint parts.
    pub fn merge(self, o: LedgerAudit) -> LedgerAudit {
        LedgerAudit {
            n_accounts: self.n_accounts + o.n_accounts,
            n_entries: self.n_entries + o.n_entries,
            total_balance: self.total_balance + o.total_balance,
            total_assets: self.total_assets + o.total_assets,
            n_negative_balances: self.n_negative_balances + o.n_negative_balances,
            n_negative_entries: self.n_negative_entries + o.n_negative_entries,
        }
    }
}

/// What the committed history says the ledger must hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerExpected {
    /// Accounts (and entries) opened by the loader; transfers and deposits never create rows.
    pub n_accounts: u64,
    /// The sum of every committed deposit (the load included): both totals must equal it.
    pub total_deposited: i128,
}

/// Criterion names, as they appear in reports.
pub mod criteria {
    pub const BALANCES_CONSERVED: &str = "total_balance_changes_only_by_deposits";
    pub const ASSETS_CONSERVED: &str = "total_assets_change_only_by_deposits";
    pub const NEGATIVE_BALANCE: &str = "no_negative_balance";
    pub const NEGATIVE_ASSET: &str = "no_negative_asset_value";
    pub const ROW_COUNT: &str = "no_lost_or_phantom_rows";
}

/// Compares an audit with the expectation; returns violations per criterion (all present).
/// A wrong total counts as one violation; every negative row counts as one; the row-count
/// criterion counts missing plus extra rows over both tables.
pub fn check(audit: &LedgerAudit, expected: &LedgerExpected) -> Violations {
    let mut v = Violations::new();
    v.insert(
        criteria::BALANCES_CONSERVED,
        u64::from(audit.total_balance != expected.total_deposited),
    );
    v.insert(
        criteria::ASSETS_CONSERVED,
        u64::from(audit.total_assets != expected.total_deposited),
    );
    v.insert(criteria::NEGATIVE_BALANCE, audit.n_negative_balances);
    v.insert(criteria::NEGATIVE_ASSET, audit.n_negative_entries);
    v.insert(
        criteria::ROW_COUNT,
        audit.n_accounts.abs_diff(expected.n_accounts)
            + audit.n_entries.abs_diff(expected.n_accounts),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(v: &Violations) -> u64 {
        v.values().sum()
    }

    #[test]
    fn checker_accepts_a_consistent_state() {
        // Goal: a state whose totals match the deposits and has no negative row passes.
        let audit =
            LedgerAudit::from_rows([(0, 10), (1, 0)].into_iter(), [(0, 4), (1, 6)].into_iter());
        let expected = LedgerExpected {
            n_accounts: 2,
            total_deposited: 10,
        };
        let v = check(&audit, &expected);
        assert_eq!(total(&v), 0, "{v:?}");
        assert_eq!(v.len(), 5, "every criterion is reported");
    }

    #[test]
    fn checker_catches_money_created_or_lost() {
        // Goal: a total that differs from the deposits is flagged, for balances and assets alone.
        let expected = LedgerExpected {
            n_accounts: 2,
            total_deposited: 10,
        };
        let created =
            LedgerAudit::from_rows([(0, 11), (1, 0)].into_iter(), [(0, 5), (1, 5)].into_iter());
        let v = check(&created, &expected);
        assert_eq!(v[criteria::BALANCES_CONSERVED], 1);
        assert_eq!(v[criteria::ASSETS_CONSERVED], 0);
        let lost =
            LedgerAudit::from_rows([(0, 5), (1, 5)].into_iter(), [(0, 9), (1, 0)].into_iter());
        let v = check(&lost, &expected);
        assert_eq!(v[criteria::BALANCES_CONSERVED], 0);
        assert_eq!(v[criteria::ASSETS_CONSERVED], 1);
    }

    #[test]
    fn checker_counts_every_negative_row() {
        // Goal: each negative balance and entry is one violation even when the totals match.
        let audit = LedgerAudit::from_rows(
            [(0, -1), (1, -2), (2, 13)].into_iter(),
            [(0, 12), (1, -2), (2, 0)].into_iter(),
        );
        let expected = LedgerExpected {
            n_accounts: 3,
            total_deposited: 10,
        };
        let v = check(&audit, &expected);
        assert_eq!(v[criteria::NEGATIVE_BALANCE], 2);
        assert_eq!(v[criteria::NEGATIVE_ASSET], 1);
        assert_eq!(
            v[criteria::BALANCES_CONSERVED] + v[criteria::ASSETS_CONSERVED],
            0
        );
    }

    #[test]
    fn checker_catches_lost_and_phantom_rows() {
        // Goal: a missing account and an extra entry are both counted.
        let audit =
            LedgerAudit::from_rows([(0, 10)].into_iter(), [(0, 5), (1, 5), (7, 0)].into_iter());
        let expected = LedgerExpected {
            n_accounts: 2,
            total_deposited: 10,
        };
        assert_eq!(check(&audit, &expected)[criteria::ROW_COUNT], 2);
    }

    #[test]
    fn partial_audits_merge_to_the_whole() {
        // Goal: auditing per partition and merging equals auditing everything at once.
        let rows: Vec<(u64, i64)> = (0..100).map(|i| (i, i as i64 - 3)).collect();
        let whole = LedgerAudit::from_rows(rows.iter().copied(), rows.iter().copied());
        let merged = rows.chunks(7).fold(LedgerAudit::default(), |acc, c| {
            acc.merge(LedgerAudit::from_rows(c.iter().copied(), c.iter().copied()))
        });
        assert_eq!(whole, merged);
    }
}
