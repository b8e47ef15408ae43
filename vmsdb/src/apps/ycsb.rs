//! Serving YCSB-T (`services::ycsb`): queries `read` and `audit`, through YCSB-T's registered
//! queries (`YcsbQueries`, called by `Ycsb::read` and `Ycsb::audit`), so they answer with the
//! partitions spread over nodes.

use super::ledger::wide_number;
use super::{AppOptions, EmptyQuery, QueryFuture, ServedApp, query_body, to_json, unknown_query};
use crate::api::{ApiError, QueryInfo};
use serde::{Deserialize, Serialize};
use services::ycsb::{Ycsb, YcsbApp, YcsbConfig};
use std::sync::Arc;
use txn::{AppDef, Client, TxnError};

/// YCSB-T, served.
pub struct YcsbServed(Ycsb);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    key: u64,
}

#[derive(Serialize)]
struct ReadAnswer {
    key: u64,
    /// `null`: the key was never loaded.
    value: Option<i64>,
}

#[derive(Serialize)]
struct AuditAnswer {
    n_rows: u64,
    sum: serde_json::Value,
    n_negative: u64,
    /// Rows outside `0..ycsb_keys`.
    n_out_of_range: u64,
}

impl ServedApp for YcsbServed {
    type App = YcsbApp;
    const NAME: &'static str = "ycsb";
    const QUERIES: &'static [QueryInfo] = &[
        QueryInfo {
            name: "read",
            description: "One key's counter at a consistent snapshot (null: never loaded).",
            example: r#"{"key": 7}"#,
        },
        QueryInfo {
            name: "audit",
            description: "Row count, sum, negative and out-of-range rows, at one snapshot.",
            example: "{}",
        },
    ];

    fn build(options: AppOptions) -> Result<Self, TxnError> {
        let mut config = YcsbConfig {
            n_keys: options.ycsb_keys,
            ..YcsbConfig::default()
        };
        config.n_partitions = options.partitions.unwrap_or(config.n_partitions);
        Ok(YcsbServed(Ycsb::new(config)?))
    }

    fn app_def(&self) -> &Arc<AppDef<YcsbApp>> {
        self.0.app()
    }

    fn query(
        &self,
        client: &Client<YcsbApp>,
        name: &str,
        body: &[u8],
    ) -> Result<QueryFuture, ApiError> {
        let (ycsb, client) = (self.0.clone(), client.clone());
        match name {
            "read" => {
                let ReadQuery { key } = query_body(name, body)?;
                Ok(Box::pin(async move {
                    let value = ycsb.read(&client, key).await?;
                    to_json(ReadAnswer { key, value })
                }))
            }
            "audit" => {
                let EmptyQuery {} = query_body(name, body)?;
                Ok(Box::pin(async move {
                    let a = ycsb.audit(&client).await?;
                    to_json(AuditAnswer {
                        n_rows: a.n_rows,
                        sum: wide_number(a.sum),
                        n_negative: a.n_negative,
                        n_out_of_range: a.n_out_of_range,
                    })
                }))
            }
            _ => Err(unknown_query(name, Self::QUERIES)),
        }
    }
}
