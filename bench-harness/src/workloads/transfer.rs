//! The transfer workload: Streaming-Ledger transfers, deposits and balance lookups over
//! `services::ledger`.

use crate::HarnessError;
use crate::cli::{CommonArgs, TransferArgs};
use crate::workload::{Effects, LocalReader, Op, RequestOf, Workload};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use services::Violations;
use services::ledger::{
    self, Balance, Ledger, LedgerApp, LedgerAudit, LedgerConfig, LedgerExpected, Transfer,
};
use services::zipf::KeyDist;
use std::sync::Arc;
use txn::{AppDef, Client, TxnError};

const TRANSFER: usize = 0;
const DEPOSIT: usize = 1;
const LOOKUP: usize = 2;

/// The transfer workload.
pub struct TransferWorkload {
    ledger: Ledger,
    args: TransferArgs,
    dist: KeyDist,
    seed: u64,
}

impl TransferWorkload {
    pub fn new(common: &CommonArgs, args: &TransferArgs) -> Result<Self, HarnessError> {
        if u32::from(args.deposit_pct) + u32::from(args.lookup_pct) > 100 {
            return Err(HarnessError::InvalidArgs(format!(
                "--deposit-pct {} plus --lookup-pct {} exceed 100",
                args.deposit_pct, args.lookup_pct
            )));
        }
        if args.initial_balance < args.min_balance {
            return Err(HarnessError::InvalidArgs(format!(
                "--initial-balance {} is below --min-balance {}: no transfer could ever commit",
                args.initial_balance, args.min_balance
            )));
        }
        let ledger = Ledger::new(LedgerConfig {
            n_partitions: common.partitions,
            min_balance: args.min_balance,
        })?;
        let dist = KeyDist::zipf(args.accounts, common.zipf)
            .map_err(|e| HarnessError::InvalidArgs(e.to_string()))?;
        Ok(TransferWorkload {
            ledger,
            args: args.clone(),
            dist,
            seed: common.seed,
        })
    }

    /// Two distinct keys (a transfer between an account and itself would test nothing).
    fn pair(&self, rng: &mut SmallRng) -> (u64, u64) {
        let mut keys = [0u64; 2];
        self.dist.sample_distinct(rng, &mut keys);
        (keys[0], keys[1])
    }
}

/// A client's generator.
pub struct TransferGen {
    rng: SmallRng,
}

impl Workload for TransferWorkload {
    type App = LedgerApp;
    type Query = (u64, u64);
    type Gen = TransferGen;

    fn name(&self) -> &'static str {
        "transfer"
    }

    fn op_types(&self) -> &'static [&'static str] {
        &["transfer", "deposit", "lookup"]
    }

    fn parameters(&self) -> serde_json::Value {
        serde_json::json!({
            "accounts": self.args.accounts,
            "initial_balance": self.args.initial_balance,
            "max_amount": self.args.max_amount,
            "min_balance": self.args.min_balance,
            "deposit_pct": self.args.deposit_pct,
            "lookup_pct": self.args.lookup_pct,
            "zipf_theta": self.dist.theta(),
            "partitions_per_service": self.ledger.config.n_partitions,
            "services": ["accounts", "assets"],
        })
    }

    fn app(&self) -> &Arc<AppDef<LedgerApp>> {
        self.ledger.app()
    }

    fn load_description(&self) -> String {
        format!(
            "{} accounts and {} asset entries",
            self.args.accounts, self.args.accounts
        )
    }

    fn n_load(&self) -> usize {
        self.args.accounts as usize
    }

    fn load_request(&self, i: usize) -> RequestOf<Self> {
        self.ledger
            .initial_deposit(i as u64, self.args.initial_balance)
    }

    fn generator(&self, client: u64) -> TransferGen {
        TransferGen {
            rng: SmallRng::seed_from_u64(super::client_seed(self.seed, client)),
        }
    }

    fn next_op(&self, g: &mut TransferGen) -> Op<Self> {
        let roll = g.rng.random_range(0..100u8);
        if roll < self.args.deposit_pct {
            let account = self.dist.sample(&mut g.rng);
            let entry = self.dist.sample(&mut g.rng);
            let amount = g.rng.random_range(1..=self.args.max_amount);
            return Op::Txn {
                ty: DEPOSIT,
                request: self.ledger.deposit(account, entry, amount),
                effect: amount,
            };
        }
        if roll < self.args.deposit_pct + self.args.lookup_pct {
            return Op::Query {
                ty: LOOKUP,
                query: (self.dist.sample(&mut g.rng), self.dist.sample(&mut g.rng)),
            };
        }
        let (src_account, dst_account) = self.pair(&mut g.rng);
        let (src_entry, dst_entry) = self.pair(&mut g.rng);
        Op::Txn {
            ty: TRANSFER,
            request: self.ledger.transfer(Transfer {
                src_account,
                src_entry,
                dst_account,
                dst_entry,
                amount: g.rng.random_range(1..=self.args.max_amount),
            }),
            effect: 0,
        }
    }

    async fn run_query(
        &self,
        client: &Client<LedgerApp>,
        (account, entry): (u64, u64),
    ) -> Result<(), TxnError> {
        let b = self.ledger.lookup(client, account, entry).await?;
        // Every looked-up key was loaded; a miss would be a lost row.
        debug_assert!(
            b.account.is_some() && b.entry.is_some(),
            "lookup missed {account}/{entry}"
        );
        Ok(())
    }

    fn http_query(
        &self,
        (account, entry): &(u64, u64),
    ) -> Option<(&'static str, serde_json::Value)> {
        Some((
            "balance",
            serde_json::json!({ "account": account, "entry": entry }),
        ))
    }

    fn run_query_local<L: LocalReader<LedgerApp>>(
        &self,
        reader: &L,
        (account, entry): (u64, u64),
    ) -> impl Future<Output = ()> + Send {
        let parts = reader.query(
            &[*self.ledger.accounts_service, *self.ledger.assets_service],
            self.ledger.lookup_fn(account, entry),
        );
        async move {
            let b = parts
                .await
                .into_iter()
                .fold(Balance::default(), Balance::merge);
            debug_assert!(
                b.account.is_some() && b.entry.is_some(),
                "lookup missed {account}/{entry}"
            );
        }
    }

    async fn audit(
        &self,
        client: &Client<LedgerApp>,
        effects: &Effects,
    ) -> Result<Violations, TxnError> {
        let audit = self.ledger.audit(client).await?;
        Ok(ledger::check(&audit, &self.expected(effects)))
    }

    fn audit_local<L: LocalReader<LedgerApp>>(
        &self,
        reader: &L,
        effects: &Effects,
    ) -> impl Future<Output = Violations> + Send {
        let parts = reader.query(
            &[*self.ledger.accounts_service, *self.ledger.assets_service],
            self.ledger.audit_fn(),
        );
        let expected = self.expected(effects);
        async move {
            let audit = parts
                .await
                .into_iter()
                .fold(LedgerAudit::default(), LedgerAudit::merge);
            ledger::check(&audit, &expected)
        }
    }
}

impl TransferWorkload {
    /// The services-level handle (for baselines that run the same transactions elsewhere).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The workload's options.
    pub fn args(&self) -> &TransferArgs {
        &self.args
    }

    /// What the audit expects after a run with these effects.
    pub(crate) fn expected(&self, effects: &Effects) -> LedgerExpected {
        LedgerExpected {
            n_accounts: self.args.accounts,
            total_deposited: i128::from(self.args.initial_balance) * i128::from(self.args.accounts)
                + effects.effect.get(DEPOSIT).copied().unwrap_or(0),
        }
    }
}
