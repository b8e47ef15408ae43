//! The transfer ledger as a runnable example: accounts and an asset ledger, deposits, 4-row
//! transfers with preconditions and balance lookups, on the durable embedded store, checked.
//!
//! ```sh
//! cargo run --release -p services --example ledger
//! cargo run --release -p services --example ledger -- --accounts 200 --seconds 10 --clients 64 --seed 7
//! ```
//!
//! It opens the accounts, runs deposits, transfers (some fail their preconditions and abort) and
//! balance lookups from concurrent clients for a few seconds, then checks and prints the
//! invariants: both totals change only by deposits, nothing is negative, no row is lost or
//! invented, and a serial replay in the reported order gives the same outcomes and the same
//! state. Then it shuts down, restarts on the same directory and checks the recovered state the
//! same way. It exits with status 1 if any check fails.
//!
//! `docs/tutorial-ledger.md` builds this file step by step; it uses only `txn`'s public API.
//! `services::ledger` is the same application as the bench harness drives it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use txn::storage::EmbeddedStorage;
use txn::{
    AbortReason, App, AppBuilder, AppDef, Client, HandlerResult, Outcome, ReadView, RequestId,
    Runtime, RuntimeConfig, SerialExecutor, SerialPos, ServiceRef, Table, TxnCtx, TxnError,
};

// ---------------------------------------------------------------------------------------------
// Step 1. The application: its events and what a transaction returns.

/// The ledger application: names the event and output types of all its services.
struct LedgerApp;

impl App for LedgerApp {
    type Event = LedgerEvent;
    type Output = LedgerOutput;
}

/// Move `amount` from a source account and entry to a target account and entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Transfer {
    src_account: u64,
    src_entry: u64,
    dst_account: u64,
    dst_entry: u64,
    amount: i64,
}

/// Every event of the ledger: the two requests clients send and the steps of their chains.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum LedgerEvent {
    /// Request, to `accounts` at `account`: credit an account and an entry (opening new ones).
    Deposit {
        account: u64,
        entry: u64,
        amount: i64,
    },
    /// Request, to `accounts` at the source account: the 4-row transfer.
    Transfer(Transfer),
    /// Deposit step 2, in `assets` at the entry.
    DepositEntry {
        entry: u64,
        amount: i64,
        balance: i64,
    },
    /// Transfer step 2, in `assets` at the source entry.
    DebitSourceEntry {
        transfer: Transfer,
        src_balance: i64,
    },
    /// Transfer step 3, in `accounts` at the target account.
    CreditTargetAccount {
        transfer: Transfer,
        src_balance: i64,
        src_value: i64,
    },
    /// Transfer step 4, in `assets` at the target entry.
    CreditTargetEntry {
        transfer: Transfer,
        src_balance: i64,
        src_value: i64,
    },
}

/// What a committed transaction returns to its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum LedgerOutput {
    /// The account's balance and the entry's value after a deposit.
    Deposited { balance: i64, entry_value: i64 },
    /// The source account's balance and the source entry's value after a transfer.
    Transferred { src_balance: i64, src_value: i64 },
}

// ---------------------------------------------------------------------------------------------
// Step 2. Services, tables and constraints.

/// Partitions of each service.
const N_PARTITIONS: u32 = 4;

/// The typed handles of the ledger: services to send requests to, tables to read and write.
#[derive(Clone, Copy, Debug)]
struct Ledger {
    accounts_service: ServiceRef,
    assets_service: ServiceRef,
    /// account id → balance, in `accounts`.
    accounts: Table<u64, i64>,
    /// entry id → asset value, in `assets`.
    asset_ledger: Table<u64, i64>,
}

/// Declares the two services, their tables, constraints and handlers, and validates them.
fn define_ledger() -> Result<(Arc<AppDef<LedgerApp>>, Ledger), TxnError> {
    let mut b = AppBuilder::<LedgerApp>::new();
    let accounts_service = b.service("accounts", N_PARTITIONS);
    let assets_service = b.service("assets", N_PARTITIONS);
    let accounts = b.table::<u64, i64>(accounts_service, "accounts");
    let asset_ledger = b.table::<u64, i64>(assets_service, "asset_ledger");

    // A write that breaks a check aborts the whole transaction (AbortReason::Constraint).
    b.check(accounts, "balance >= 0", |balance| *balance >= 0);
    b.check(asset_ledger, "value >= 0", |value| *value >= 0);

    let ledger = Ledger {
        accounts_service,
        assets_service,
        accounts,
        asset_ledger,
    };
    b.handler(accounts_service, move |ctx, ev| {
        accounts_step(ctx, ev, &ledger)
    });
    b.handler(assets_service, move |ctx, ev| assets_step(ctx, ev, &ledger));
    Ok((b.build()?, ledger))
}

// ---------------------------------------------------------------------------------------------
// Step 3. Handlers: each step reads and writes only rows its partition owns, then emits the
// next step to the partition that owns the next row.

/// The `accounts` service: every step that touches an account row.
fn accounts_step(ctx: &mut TxnCtx<'_, LedgerApp>, ev: &LedgerEvent, l: &Ledger) -> HandlerResult {
    match *ev {
        LedgerEvent::Deposit {
            account,
            entry,
            amount,
        } => {
            if amount <= 0 {
                return Err(ctx.abort(format!("invalid amount: {amount} (must be positive)")));
            }
            let balance = ctx.get(l.accounts, &account)?.unwrap_or(0);
            let balance = add(ctx, balance, amount)?;
            ctx.put(l.accounts, account, balance)?;
            let next = LedgerEvent::DepositEntry {
                entry,
                amount,
                balance,
            };
            ctx.emit(l.assets_service, &entry, next);
            Ok(())
        }
        LedgerEvent::Transfer(t) => {
            if t.amount <= 0 {
                return Err(ctx.abort(format!("invalid amount: {} (must be positive)", t.amount)));
            }
            // Step 1. The precondition on the source account, checked in the handler: a
            // business abort with a message the client can show.
            let Some(balance) = ctx.get(l.accounts, &t.src_account)? else {
                return Err(ctx.abort(format!("unknown account: {}", t.src_account)));
            };
            if balance < t.amount {
                return Err(ctx.abort(format!(
                    "insufficient balance: account {} holds {balance}, cannot pay {}",
                    t.src_account, t.amount
                )));
            }
            let src_balance = balance - t.amount;
            ctx.put(l.accounts, t.src_account, src_balance)?;
            let next = LedgerEvent::DebitSourceEntry {
                transfer: t,
                src_balance,
            };
            ctx.emit(l.assets_service, &t.src_entry, next);
            Ok(())
        }
        LedgerEvent::CreditTargetAccount {
            transfer: t,
            src_balance,
            src_value,
        } => {
            // Step 3. Aborting here discards the debits of steps 1 and 2 as well.
            let Some(balance) = ctx.get(l.accounts, &t.dst_account)? else {
                return Err(ctx.abort(format!("unknown account: {}", t.dst_account)));
            };
            let balance = add(ctx, balance, t.amount)?;
            ctx.put(l.accounts, t.dst_account, balance)?;
            let next = LedgerEvent::CreditTargetEntry {
                transfer: t,
                src_balance,
                src_value,
            };
            ctx.emit(l.assets_service, &t.dst_entry, next);
            Ok(())
        }
        _ => Err(ctx.abort(format!("misrouted event: {ev:?} belongs to assets"))),
    }
}

/// The `assets` service: every step that touches an asset-ledger entry.
fn assets_step(ctx: &mut TxnCtx<'_, LedgerApp>, ev: &LedgerEvent, l: &Ledger) -> HandlerResult {
    match *ev {
        LedgerEvent::DepositEntry {
            entry,
            amount,
            balance,
        } => {
            let value = ctx.get(l.asset_ledger, &entry)?.unwrap_or(0);
            let entry_value = add(ctx, value, amount)?;
            ctx.put(l.asset_ledger, entry, entry_value)?;
            ctx.set_output(LedgerOutput::Deposited {
                balance,
                entry_value,
            });
            Ok(())
        }
        LedgerEvent::DebitSourceEntry {
            transfer: t,
            src_balance,
        } => {
            let Some(value) = ctx.get(l.asset_ledger, &t.src_entry)? else {
                return Err(ctx.abort(format!("unknown entry: {}", t.src_entry)));
            };
            // Step 2. The precondition on the source entry is the declared check
            // "value >= 0": if the entry cannot pay, `put` fails, `?` returns the abort, and
            // step 1's debit is discarded with it. (No overflow: value >= 0 and amount > 0.)
            let src_value = value - t.amount;
            ctx.put(l.asset_ledger, t.src_entry, src_value)?;
            let next = LedgerEvent::CreditTargetAccount {
                transfer: t,
                src_balance,
                src_value,
            };
            ctx.emit(l.accounts_service, &t.dst_account, next);
            Ok(())
        }
        LedgerEvent::CreditTargetEntry {
            transfer: t,
            src_balance,
            src_value,
        } => {
            // Step 4, the last: what it sets is what the client receives.
            let Some(value) = ctx.get(l.asset_ledger, &t.dst_entry)? else {
                return Err(ctx.abort(format!("unknown entry: {}", t.dst_entry)));
            };
            let value = add(ctx, value, t.amount)?;
            ctx.put(l.asset_ledger, t.dst_entry, value)?;
            ctx.set_output(LedgerOutput::Transferred {
                src_balance,
                src_value,
            });
            Ok(())
        }
        _ => Err(ctx.abort(format!("misrouted event: {ev:?} belongs to accounts"))),
    }
}

/// `value + amount`, or a business abort instead of an overflow.
fn add(ctx: &TxnCtx<'_, LedgerApp>, value: i64, amount: i64) -> Result<i64, txn::Abort> {
    value
        .checked_add(amount)
        .ok_or_else(|| ctx.abort(format!("overflow: {value} + {amount}")))
}

// ---------------------------------------------------------------------------------------------
// Step 4. The runtime's configuration.

/// The durable embedded store in `dir`, 1 ms epochs, an incremental checkpoint every 500 epochs.
fn runtime_config(dir: &Path) -> Result<RuntimeConfig, Box<dyn Error>> {
    let storage = EmbeddedStorage::open(dir)?;
    Ok(RuntimeConfig {
        storage: Arc::new(storage),
        epoch_duration: Duration::from_millis(1),
        checkpoint_every_epochs: 500,
        ..RuntimeConfig::in_memory()
    })
}

// ---------------------------------------------------------------------------------------------
// Step 5. Requests and snapshot queries.

impl Ledger {
    /// An idempotent deposit: resubmitting `id` returns the first outcome and runs nothing.
    async fn deposit(
        &self,
        client: &Client<LedgerApp>,
        id: RequestId,
        account: u64,
        entry: u64,
        amount: i64,
    ) -> Result<Outcome<LedgerOutput>, TxnError> {
        let event = LedgerEvent::Deposit {
            account,
            entry,
            amount,
        };
        client
            .submit_with_id(id, self.accounts_service, &account, event)
            .await
    }

    /// A transfer, sent to the partition that owns its source account (where step 1 runs).
    async fn transfer(
        &self,
        client: &Client<LedgerApp>,
        t: Transfer,
    ) -> Result<Outcome<LedgerOutput>, TxnError> {
        client
            .submit(
                self.accounts_service,
                &t.src_account,
                LedgerEvent::Transfer(t),
            )
            .await
    }

    /// Balance lookup: an account's balance and an entry's value at one snapshot of both
    /// services. Every partition runs the closure; only the owners of the two keys find a row.
    async fn lookup(
        &self,
        client: &Client<LedgerApp>,
        account: u64,
        entry: u64,
    ) -> Result<(Option<i64>, Option<i64>), TxnError> {
        let l = *self;
        let parts = client
            .query(&[l.accounts_service, l.assets_service], move |view| {
                let balance = view.get(l.accounts, &account).copied();
                let value = view.get(l.asset_ledger, &entry).copied();
                (balance, value)
            })
            .await?;
        Ok(parts
            .into_iter()
            .fold((None, None), |(b, v), (pb, pv)| (b.or(pb), v.or(pv))))
    }

    /// Audit: totals and counts of every row of both services, at one snapshot.
    async fn audit(&self, client: &Client<LedgerApp>) -> Result<Audit, TxnError> {
        let l = *self;
        let parts = client
            .query(&[l.accounts_service, l.assets_service], move |view| {
                Audit::of(view, &l)
            })
            .await?;
        Ok(parts.into_iter().fold(Audit::default(), Audit::merge))
    }
}

/// Totals and counts of (part of) one snapshot of the ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Audit {
    n_accounts: u64,
    n_entries: u64,
    /// Sums in `i128`, so no state can overflow them and hide a violation.
    total_balance: i128,
    total_assets: i128,
    n_negative_balances: u64,
    n_negative_entries: u64,
}

impl Audit {
    /// The audit of one partition. `iter` yields nothing for the other service's table, so the
    /// same closure serves both services.
    fn of(view: &ReadView<'_>, l: &Ledger) -> Audit {
        let mut a = Audit::default();
        for (_, balance) in view.iter(l.accounts) {
            a.n_accounts += 1;
            a.total_balance += i128::from(*balance);
            a.n_negative_balances += u64::from(*balance < 0);
        }
        for (_, value) in view.iter(l.asset_ledger) {
            a.n_entries += 1;
            a.total_assets += i128::from(*value);
            a.n_negative_entries += u64::from(*value < 0);
        }
        a
    }

    /// Combines the audits of disjoint parts.
    fn merge(self, o: Audit) -> Audit {
        Audit {
            n_accounts: self.n_accounts + o.n_accounts,
            n_entries: self.n_entries + o.n_entries,
            total_balance: self.total_balance + o.total_balance,
            total_assets: self.total_assets + o.total_assets,
            n_negative_balances: self.n_negative_balances + o.n_negative_balances,
            n_negative_entries: self.n_negative_entries + o.n_negative_entries,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Step 6. The workload: concurrent clients, and what they saw.

/// The loader's requests are idempotent with this client id; client task `c` uses `c + 1`.
const LOADER_CLIENT: u64 = 0;

/// One executed request, for the serial replay.
struct Record {
    pos: SerialPos,
    /// The account whose partition the request was sent to.
    account: u64,
    event: LedgerEvent,
    result: Result<Option<LedgerOutput>, AbortReason>,
}

/// What some clients did and saw.
#[derive(Default)]
struct Tally {
    n_deposits: u64,
    n_transfers: u64,
    /// Aborted requests per kind of reason.
    aborted: BTreeMap<String, u64>,
    /// Aborts whose reason no handler or check of the ledger gives (a bug if any).
    n_unexpected_aborts: u64,
    /// Sum of the committed deposits.
    deposited: i128,
    n_lookups: u64,
    /// Lookups that found a row missing or negative.
    n_bad_lookups: u64,
    history: Vec<Record>,
}

impl Tally {
    fn record(&mut self, account: u64, event: LedgerEvent, outcome: Outcome<LedgerOutput>) {
        match &outcome.result {
            Ok(_) => match &event {
                LedgerEvent::Deposit { amount, .. } => {
                    self.n_deposits += 1;
                    self.deposited += i128::from(*amount);
                }
                _ => self.n_transfers += 1,
            },
            Err(reason) => {
                let (kind, expected) = abort_kind(reason);
                *self.aborted.entry(kind).or_default() += 1;
                self.n_unexpected_aborts += u64::from(!expected);
            }
        }
        // `serial_pos` is None only after too many conflict retries (never with the default
        // serial fallback); such a request had no effect and has no place in the serial order.
        if let Some(pos) = outcome.serial_pos {
            self.history.push(Record {
                pos,
                account,
                event,
                result: outcome.result,
            });
        }
    }

    fn merge(&mut self, o: Tally) {
        self.n_deposits += o.n_deposits;
        self.n_transfers += o.n_transfers;
        for (kind, n) in o.aborted {
            *self.aborted.entry(kind).or_default() += n;
        }
        self.n_unexpected_aborts += o.n_unexpected_aborts;
        self.deposited += o.deposited;
        self.n_lookups += o.n_lookups;
        self.n_bad_lookups += o.n_bad_lookups;
        self.history.extend(o.history);
    }
}

/// Groups abort reasons for the report (the service and kind of a business abort, the check of
/// a constraint) and says whether the ledger can give that reason at all.
fn abort_kind(reason: &AbortReason) -> (String, bool) {
    match reason {
        AbortReason::User { service, kind, .. } => (format!("{service}: {kind}"), true),
        AbortReason::Constraint {
            service,
            table,
            message,
        } => {
            let check = message.split(" fails").next().unwrap_or(message);
            (format!("{service}.{table}: {check} fails"), true)
        }
        other => (format!("unexpected: {other}"), false),
    }
}

/// Opens accounts and entries `0..n_accounts` with `initial` each: idempotent deposits, 64 in
/// flight. Returns the tally and the loader's outcome for account 0 (resubmitted later).
async fn load(
    ledger: Ledger,
    client: &Client<LedgerApp>,
    n_accounts: u64,
    initial: i64,
) -> Result<(Tally, Outcome<LedgerOutput>), TxnError> {
    const IN_FLIGHT: u64 = 64;
    let mut tasks = Vec::new();
    for first in 0..IN_FLIGHT.min(n_accounts) {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let (mut tally, mut opened) = (Tally::default(), None);
            for i in (first..n_accounts).step_by(IN_FLIGHT as usize) {
                let id = RequestId {
                    client: LOADER_CLIENT,
                    seq: i,
                };
                let outcome = ledger.deposit(&client, id, i, i, initial).await?;
                if i == 0 {
                    opened = Some(outcome.clone());
                }
                let event = LedgerEvent::Deposit {
                    account: i,
                    entry: i,
                    amount: initial,
                };
                tally.record(i, event, outcome);
            }
            Ok::<_, TxnError>((tally, opened))
        }));
    }
    let (mut tally, mut opened) = (Tally::default(), None);
    for task in tasks {
        let (part, o) = task.await.expect("a loader task panicked")?;
        tally.merge(part);
        opened = opened.or(o);
    }
    Ok((
        tally,
        opened.expect("account 0 is opened by the first task"),
    ))
}

/// One closed-loop client until `until`: 10% balance lookups, 10% deposits, 80% transfers of
/// up to 400 (so some fail their preconditions); 2% of transfers go to an account that does not
/// exist, so step 3 aborts after both debits.
async fn run_client(
    ledger: Ledger,
    client: Client<LedgerApp>,
    c: u64,
    n_accounts: u64,
    seed: u64,
    until: Instant,
) -> Result<Tally, TxnError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ c.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut tally = Tally::default();
    let mut n_deposits_sent = 0;
    while Instant::now() < until {
        let roll = rng.random_range(0..100);
        if roll < 10 {
            let account = rng.random_range(0..n_accounts);
            let entry = rng.random_range(0..n_accounts);
            let (balance, value) = ledger.lookup(&client, account, entry).await?;
            tally.n_lookups += 1;
            let ok = balance.is_some_and(|b| b >= 0) && value.is_some_and(|v| v >= 0);
            tally.n_bad_lookups += u64::from(!ok);
        } else if roll < 20 {
            let account = rng.random_range(0..n_accounts);
            let entry = rng.random_range(0..n_accounts);
            let amount = rng.random_range(1..=100);
            let id = RequestId {
                client: c + 1,
                seq: n_deposits_sent,
            };
            n_deposits_sent += 1;
            let outcome = ledger.deposit(&client, id, account, entry, amount).await?;
            let event = LedgerEvent::Deposit {
                account,
                entry,
                amount,
            };
            tally.record(account, event, outcome);
        } else {
            let dst_account = if rng.random_ratio(1, 50) {
                n_accounts + rng.random_range(0..10)
            } else {
                rng.random_range(0..n_accounts)
            };
            let t = Transfer {
                src_account: rng.random_range(0..n_accounts),
                src_entry: rng.random_range(0..n_accounts),
                dst_account,
                dst_entry: rng.random_range(0..n_accounts),
                amount: rng.random_range(1..=400),
            };
            let outcome = ledger.transfer(&client, t).await?;
            tally.record(t.src_account, LedgerEvent::Transfer(t), outcome);
        }
    }
    Ok(tally)
}

// ---------------------------------------------------------------------------------------------
// Step 7. The checks.

/// Checks run and failed, printed as they go.
#[derive(Default)]
struct Checks {
    n_run: usize,
    n_failed: usize,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl std::fmt::Display) {
        self.n_run += 1;
        self.n_failed += usize::from(!ok);
        println!("  [{}] {what}", if ok { "ok" } else { "FAILED" });
    }

    /// The ledger's invariants on an audit: totals change only by deposits, nothing negative,
    /// no lost or invented rows.
    fn invariants(&mut self, audit: &Audit, n_accounts: u64, total_deposited: i128) {
        self.check(
            audit.total_balance == total_deposited,
            format!(
                "total balance {} = committed deposits {total_deposited}",
                audit.total_balance
            ),
        );
        self.check(
            audit.total_assets == total_deposited,
            format!(
                "total asset value {} = committed deposits {total_deposited}",
                audit.total_assets
            ),
        );
        self.check(
            audit.n_negative_balances == 0 && audit.n_negative_entries == 0,
            format!(
                "nothing negative: {} negative balances, {} negative asset values",
                audit.n_negative_balances, audit.n_negative_entries
            ),
        );
        self.check(
            audit.n_accounts == n_accounts && audit.n_entries == n_accounts,
            format!(
                "no lost or invented rows: {} accounts and {} entries, {n_accounts} opened",
                audit.n_accounts, audit.n_entries
            ),
        );
    }
}

/// Replays `history` one request at a time in `SerialPos` order on the reference executor:
/// returns the number of outcomes that differ, the first difference, and the executor.
fn replay_serially(
    app: &Arc<AppDef<LedgerApp>>,
    ledger: &Ledger,
    history: &mut [Record],
) -> (u64, Option<String>, SerialExecutor<LedgerApp>) {
    history.sort_by_key(|r| r.pos);
    let mut serial = SerialExecutor::new(app.clone());
    let (mut n_differ, mut first_difference) = (0, None);
    for r in history.iter() {
        let partition = ledger.accounts_service.partition_of(&r.account);
        let got = serial.run_at(
            r.pos,
            ledger.accounts_service,
            partition,
            r.event.clone(),
            0,
        );
        if got != r.result {
            n_differ += 1;
            first_difference.get_or_insert_with(|| {
                format!(
                    "{:?} {:?}: runtime {:?}, serial {got:?}",
                    r.pos, r.event, r.result
                )
            });
        }
    }
    (n_differ, first_difference, serial)
}

// ---------------------------------------------------------------------------------------------
// Step 8. Putting it together.

struct Args {
    n_accounts: u64,
    seconds: u64,
    n_clients: u64,
    seed: u64,
}

const USAGE: &str = "usage: ledger [--accounts N] [--seconds S] [--clients C] [--seed X]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        n_accounts: 1_000,
        seconds: 5,
        n_clients: 64,
        seed: rand::random(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number\n{USAGE}"))?;
        match flag.as_str() {
            "--accounts" if n >= 2 => args.n_accounts = n,
            "--seconds" => args.seconds = n,
            "--clients" if n >= 1 => args.n_clients = n,
            "--seed" => args.seed = n,
            _ => return Err(format!("bad flag {flag} {value}\n{USAGE}")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<ExitCode, Box<dyn Error>> {
    let args = parse_args()?;
    const INITIAL: i64 = 1_000;
    let dir = tempfile::tempdir()?;
    let (app, ledger) = define_ledger()?;
    let mut checks = Checks::default();
    println!(
        "transfer ledger: {} accounts, {} clients for {} s, seed {} (--seed {} replays each \
         client's requests; their interleaving is up to the scheduler)",
        args.n_accounts, args.n_clients, args.seconds, args.seed, args.seed
    );
    println!(
        "store: txn::storage::EmbeddedStorage in {} (at most one durable write per epoch)",
        dir.path().display()
    );

    // Start on the durable store and open the accounts.
    let rt = Runtime::start(app.clone(), runtime_config(dir.path())?).await?;
    let client = rt.client();
    let started = Instant::now();
    let (mut tally, opened) = load(ledger, &client, args.n_accounts, INITIAL).await?;
    println!(
        "load: {} accounts and entries opened with {INITIAL} each in {:.2} s",
        tally.n_deposits,
        started.elapsed().as_secs_f64()
    );

    // Run the clients.
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for c in 0..args.n_clients {
        let client = client.clone();
        let (n, seed) = (args.n_accounts, args.seed);
        tasks.push(tokio::spawn(run_client(ledger, client, c, n, seed, until)));
    }
    let mut run = Tally::default();
    for task in tasks {
        run.merge(task.await.expect("a client task panicked")?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n_aborted: u64 = run.aborted.values().sum();
    let n_txns = run.n_deposits + run.n_transfers + n_aborted;
    println!(
        "run: {n_txns} transactions in {elapsed:.1} s ({:.0}/s) and {} balance lookups",
        n_txns as f64 / elapsed,
        run.n_lookups
    );
    println!(
        "  committed {:>8}  ({} deposits, {} transfers)",
        run.n_deposits + run.n_transfers,
        run.n_deposits,
        run.n_transfers
    );
    println!("  aborted   {n_aborted:>8}");
    for (kind, n) in &run.aborted {
        println!("    {n:>8}  {kind}");
    }
    let stats = rt.stats();
    println!(
        "  runtime: {} epochs, {} durable log writes, {} conflict losers re-run by the serial \
         fallback, {} checkpoints",
        stats.epochs.load(Ordering::Relaxed),
        stats.log_appends.load(Ordering::Relaxed),
        stats.fallback.load(Ordering::Relaxed),
        stats.checkpoints_completed.load(Ordering::Relaxed),
    );
    tally.merge(run);

    // Resubmitting the loader's request for account 0 returns its original outcome.
    let again = ledger.deposit(&client, opened_id(), 0, 0, INITIAL).await?;
    println!("checks:");
    checks.check(
        again == opened,
        format!(
            "resubmitted deposit {:?}: original outcome {:?} at {:?}, not run again",
            opened_id(),
            again.result,
            again.tid
        ),
    );

    // The invariants, at one snapshot.
    let total_deposited = tally.deposited;
    let audit = ledger.audit(&client).await?;
    checks.invariants(&audit, args.n_accounts, total_deposited);
    checks.check(
        tally.n_bad_lookups == 0,
        format!(
            "every balance lookup found both rows, non-negative ({} of {} did not)",
            tally.n_bad_lookups, tally.n_lookups
        ),
    );
    checks.check(
        tally.n_unexpected_aborts == 0,
        format!(
            "every abort is a precondition or check of the ledger ({} are not)",
            tally.n_unexpected_aborts
        ),
    );

    // Serializability: the same requests, one at a time in the reported serial order.
    let state_hash = client.state_hash().await?;
    let (n_differ, first_difference, serial) = replay_serially(&app, &ledger, &mut tally.history);
    checks.check(
        n_differ == 0,
        format!(
            "serial replay of {} transactions in SerialPos order gives the same outcomes{}",
            tally.history.len(),
            first_difference.map_or(String::new(), |d| format!(" (first difference: {d})"))
        ),
    );
    let serial_audit = serial
        .query(&[ledger.accounts_service, ledger.assets_service], |view| {
            Audit::of(view, &ledger)
        })
        .into_iter()
        .fold(Audit::default(), Audit::merge);
    checks.check(
        serial.state_hash() == state_hash && serial_audit == audit,
        format!("... and the same final state (hash {state_hash:#018x})"),
    );

    // Restart on the same directory: recover from the checkpoint and the log after it.
    rt.shutdown().await;
    let rt = Runtime::start(app.clone(), runtime_config(dir.path())?).await?;
    let client = rt.client();
    let r = rt.recovery_report();
    let checkpoint = r.checkpoint_epoch.map_or("no checkpoint".into(), |e| {
        format!("the checkpoint of epoch {e}")
    });
    println!(
        "restart: recovered {checkpoint} ({} rows loaded) + {} logged epochs replayed, \
         up to epoch {}, {} request ids remembered, in {:.0} ms",
        r.rows_loaded,
        r.epochs_replayed,
        r.last_epoch,
        r.dedup_window_entries,
        r.duration.as_secs_f64() * 1e3
    );
    let again = ledger.deposit(&client, opened_id(), 0, 0, INITIAL).await?;
    checks.check(
        again == opened,
        format!(
            "resubmitted deposit {:?} after the restart: still the original outcome at {:?}",
            opened_id(),
            again.tid
        ),
    );
    let recovered_hash = client.state_hash().await?;
    checks.check(
        recovered_hash == state_hash,
        format!("recovered state hash {recovered_hash:#018x} = the state before shutdown"),
    );
    let audit = ledger.audit(&client).await?;
    checks.invariants(&audit, args.n_accounts, total_deposited);
    rt.shutdown().await;

    if checks.n_failed == 0 {
        println!("all {} checks passed", checks.n_run);
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} of {} checks FAILED", checks.n_failed, checks.n_run);
        Ok(ExitCode::FAILURE)
    }
}

/// The id of the loader's deposit that opened account 0.
fn opened_id() -> RequestId {
    RequestId {
        client: LOADER_CLIENT,
        seq: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Step 9. Tests (`cargo test -p services --example ledger`).

#[cfg(test)]
mod tests {
    use super::*;

    /// An account's balance and an entry's value on the serial executor.
    fn lookup_serial(
        serial: &SerialExecutor<LedgerApp>,
        l: &Ledger,
        account: u64,
        entry: u64,
    ) -> (Option<i64>, Option<i64>) {
        serial
            .query(&[l.accounts_service, l.assets_service], |view| {
                let balance = view.get(l.accounts, &account).copied();
                let value = view.get(l.asset_ledger, &entry).copied();
                (balance, value)
            })
            .into_iter()
            .fold((None, None), |(b, v), (pb, pv)| (b.or(pb), v.or(pv)))
    }

    #[test]
    fn a_failed_check_in_step_2_discards_the_debit_of_step_1() {
        // Goal: a transfer whose source entry cannot pay aborts with the check's name, and the
        // source account keeps its balance.
        let (app, l) = define_ledger().unwrap();
        let mut serial = SerialExecutor::new(app);
        for (account, amount) in [(1, 100), (2, 10)] {
            let deposit = LedgerEvent::Deposit {
                account,
                entry: account,
                amount,
            };
            serial
                .run_keyed(l.accounts_service, &account, deposit, 0)
                .unwrap();
        }
        let mut t = Transfer {
            src_account: 1,
            src_entry: 2,
            dst_account: 2,
            dst_entry: 1,
            amount: 50,
        };
        let result = serial.run_keyed(l.accounts_service, &1u64, LedgerEvent::Transfer(t), 0);
        let Err(AbortReason::Constraint { table, message, .. }) = result else {
            panic!("expected the check on asset_ledger to abort, got {result:?}");
        };
        assert_eq!(table, "asset_ledger");
        assert!(message.contains("value >= 0"), "{message}");
        assert_eq!(lookup_serial(&serial, &l, 1, 2), (Some(100), Some(10)));

        t.amount = 10;
        let result = serial.run_keyed(l.accounts_service, &1u64, LedgerEvent::Transfer(t), 0);
        let transferred = LedgerOutput::Transferred {
            src_balance: 90,
            src_value: 0,
        };
        assert_eq!(result, Ok(Some(transferred)));
        assert_eq!(lookup_serial(&serial, &l, 2, 1), (Some(20), Some(110)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn outcomes_on_the_memory_store() {
        // Goal: on the in-memory store, a deposit commits with its output, a transfer to an
        // unknown account aborts whole, and a resubmitted id returns the original outcome.
        let (app, ledger) = define_ledger().unwrap();
        let rt = Runtime::start(app, RuntimeConfig::in_memory())
            .await
            .unwrap();
        let client = rt.client();
        let id = RequestId { client: 7, seq: 1 };
        let first = ledger.deposit(&client, id, 1, 1, 50).await.unwrap();
        let deposited = LedgerOutput::Deposited {
            balance: 50,
            entry_value: 50,
        };
        assert_eq!(first.result, Ok(Some(deposited)));

        let t = Transfer {
            src_account: 1,
            src_entry: 1,
            dst_account: 9,
            dst_entry: 1,
            amount: 20,
        };
        let outcome = ledger.transfer(&client, t).await.unwrap();
        match &outcome.result {
            Err(AbortReason::User {
                service, message, ..
            }) => {
                assert_eq!(service, "accounts");
                assert!(message.starts_with("unknown account: 9"), "{message}");
            }
            other => panic!("expected step 3 to abort, got {other:?}"),
        }
        assert_eq!(
            ledger.lookup(&client, 1, 1).await.unwrap(),
            (Some(50), Some(50))
        );

        let again = ledger.deposit(&client, id, 1, 1, 50).await.unwrap();
        assert_eq!(again, first, "the same outcome, not a second deposit");
        assert_eq!(
            ledger.lookup(&client, 1, 1).await.unwrap(),
            (Some(50), Some(50))
        );
        rt.shutdown().await;
    }
}
