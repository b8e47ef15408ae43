//! Serving the transfer ledger (`services::ledger`): queries `balance` and `audit`, both the
//! ledger's registered queries (`LedgerQueries`), so they answer with the partitions spread
//! over nodes.

use super::{AppOptions, EmptyQuery, QueryFuture, ServedApp, query_body, to_json, unknown_query};
use crate::api::{ApiError, QueryInfo};
use serde::{Deserialize, Serialize};
use services::ledger::{Balance, Ledger, LedgerApp, LedgerConfig};
use std::sync::Arc;
use txn::{AppDef, Client, TxnError};

/// The ledger, served.
pub struct LedgerServed(Ledger);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BalanceQuery {
    account: u64,
    entry: u64,
}

#[derive(Serialize)]
struct BalanceAnswer {
    /// `null`: no such account.
    account: Option<i64>,
    /// `null`: no such entry.
    entry: Option<i64>,
}

/// Totals as JSON numbers (the ledger sums in `i128`; realistic totals fit in `i64`, others
/// come as strings).
#[derive(Serialize)]
struct AuditAnswer {
    n_accounts: u64,
    n_entries: u64,
    total_balance: serde_json::Value,
    total_assets: serde_json::Value,
    n_negative_balances: u64,
    n_negative_entries: u64,
}

/// An `i128` as a JSON number when it fits in `i64`, else as a string.
pub(crate) fn wide_number(value: i128) -> serde_json::Value {
    i64::try_from(value).map_or_else(|_| value.to_string().into(), serde_json::Value::from)
}

impl ServedApp for LedgerServed {
    type App = LedgerApp;
    const NAME: &'static str = "ledger";
    const QUERIES: &'static [QueryInfo] = &[
        QueryInfo {
            name: "balance",
            description: "An account's balance and an asset entry's value, at one snapshot \
                          (null: it does not exist).",
            example: r#"{"account": 1, "entry": 1}"#,
        },
        QueryInfo {
            name: "audit",
            description: "Counts and totals of every account and entry, at one snapshot.",
            example: "{}",
        },
    ];

    fn build(options: AppOptions) -> Result<Self, TxnError> {
        let mut config = LedgerConfig::default();
        config.n_partitions = options.partitions.unwrap_or(config.n_partitions);
        Ok(LedgerServed(Ledger::new(config)?))
    }

    fn app_def(&self) -> &Arc<AppDef<LedgerApp>> {
        self.0.app()
    }

    fn query(
        &self,
        client: &Client<LedgerApp>,
        name: &str,
        body: &[u8],
    ) -> Result<QueryFuture, ApiError> {
        let (ledger, client) = (self.0.clone(), client.clone());
        match name {
            "balance" => {
                let q: BalanceQuery = query_body(name, body)?;
                Ok(Box::pin(async move {
                    // The registered query, from the two partitions owning the keys: it reads
                    // them on whichever node holds them.
                    let (accounts, assets) = (*ledger.accounts_service, *ledger.assets_service);
                    let at = [
                        (accounts, accounts.partition_of(&q.account)),
                        (assets, assets.partition_of(&q.entry)),
                    ];
                    let args = (q.account, q.entry);
                    let parts = client
                        .query_named_at(&ledger.queries.balance, &at, &args)
                        .await?;
                    let b = parts.into_iter().fold(Balance::default(), Balance::merge);
                    to_json(BalanceAnswer {
                        account: b.account,
                        entry: b.entry,
                    })
                }))
            }
            "audit" => {
                let EmptyQuery {} = query_body(name, body)?;
                Ok(Box::pin(async move {
                    let a = ledger.audit(&client).await?;
                    to_json(AuditAnswer {
                        n_accounts: a.n_accounts,
                        n_entries: a.n_entries,
                        total_balance: wide_number(a.total_balance),
                        total_assets: wide_number(a.total_assets),
                        n_negative_balances: a.n_negative_balances,
                        n_negative_entries: a.n_negative_entries,
                    })
                }))
            }
            _ => Err(unknown_query(name, Self::QUERIES)),
        }
    }
}
