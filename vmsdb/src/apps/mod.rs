//! The applications the server can serve, and what serving one takes ([`ServedApp`]): build
//! its `AppDef`, name its queries and run them from JSON. Adding an application is an
//! implementation of the trait, a variant of [`AppChoice`] and an arm in [`AppChoice::open`].

mod ledger;
mod marketplace;
mod marketplace_driver;
mod ycsb;

pub use ledger::LedgerServed;
pub use marketplace::MarketServed;
pub use marketplace_driver::driver_routes;
pub use ycsb::YcsbServed;

use crate::api::{ApiError, QueryInfo};
use crate::config::Settings;
use crate::engine::{Engine, Served};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use txn::{AppDef, Client, TxnError};

/// What the application is built with (from the server's settings).
#[derive(Clone, Copy, Debug)]
pub struct AppOptions {
    /// Partitions per service; `None`: the application's default.
    pub partitions: Option<u32>,
    /// ycsb: the keys the table should hold.
    pub ycsb_keys: u64,
}

/// A query's answer on its way: JSON, or what went wrong.
pub type QueryFuture = BoxFuture<'static, Result<serde_json::Value, ApiError>>;

/// An application the server can serve.
pub trait ServedApp: Sized + Send + Sync + 'static {
    /// The application's typed contract.
    type App: txn::App;
    /// Its name on the command line and in `GET /v1/services`.
    const NAME: &'static str;
    /// Its named queries (`POST /v1/queries/{name}`).
    const QUERIES: &'static [QueryInfo];

    /// Defines the application's services, tables and handlers.
    fn build(options: AppOptions) -> Result<Self, TxnError>;

    /// The application definition the runtime runs.
    fn app_def(&self) -> &Arc<AppDef<Self::App>>;

    /// Starts query `name` (one of `QUERIES`) with its JSON `body`; an unknown name or a bad
    /// body is refused before anything runs.
    fn query(
        &self,
        client: &Client<Self::App>,
        name: &str,
        body: &[u8],
    ) -> Result<QueryFuture, ApiError>;
}

/// The application to serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AppChoice {
    /// The transfer ledger: services `accounts` and `assets`.
    Ledger,
    /// YCSB-T: service `ycsb`, one table of counters.
    Ycsb,
    /// The Online Marketplace: eight services, with the routes its benchmark driver sends.
    Marketplace,
}

impl AppChoice {
    /// Builds the chosen application and opens the durable runtime on `settings.data_dir`
    /// (recovering what it holds).
    pub async fn open(self, settings: &Settings) -> Result<Arc<dyn Engine>, TxnError> {
        let options = AppOptions {
            partitions: settings.partitions,
            ycsb_keys: settings.ycsb_keys,
        };
        match self {
            AppChoice::Ledger => Served::<LedgerServed>::open(options, settings).await,
            AppChoice::Ycsb => Served::<YcsbServed>::open(options, settings).await,
            AppChoice::Marketplace => Served::<MarketServed>::open(options, settings).await,
        }
    }
}

/// The unknown-query error, naming the queries there are.
pub fn unknown_query(name: &str, known: &[QueryInfo]) -> ApiError {
    let names: Vec<&str> = known.iter().map(|q| q.name).collect();
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "unknown_query",
        format!("no query named {name:?} (there are: {})", names.join(", ")),
    )
}

/// The body of a query without parameters: `{}` (or nothing).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyQuery {}

/// Decodes a query's JSON body (an empty body is `{}`).
pub fn query_body<T: DeserializeOwned>(query: &str, body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_payload(format!("the body of query {query} is not valid: {e}")))
}

/// Turns a query's typed answer into JSON.
pub fn to_json<T: serde::Serialize>(value: T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the query's answer does not convert to JSON: {e}"),
        )
    })
}
