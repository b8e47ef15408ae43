//! Serving the Online Marketplace (`services::marketplace`): queries `dashboard`, `product` and
//! `audit` (every consistency criterion at one snapshot), all three the marketplace's registered
//! queries (`MarketQueries`), so they answer with the partitions spread over nodes; and the
//! routes the benchmark's own driver sends (`marketplace_driver.rs`).

use super::{AppOptions, QueryFuture, ServedApp, query_body, to_json, unknown_query};
use crate::api::{ApiError, QueryInfo};
use serde::{Deserialize, Serialize};
use services::marketplace::{
    Dashboard, EntryKey, Found, MarketApp, MarketConfig, MarketSnapshot, Marketplace, OrderEntry,
    Product, ProductId, ProductKey, ProductLookup, SellerId, SellerView, StockItem,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use txn::{AppDef, Client, TxnError};

/// The marketplace, served.
pub struct MarketServed(pub(crate) Marketplace);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DashboardQuery {
    seller_id: SellerId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductQuery {
    seller_id: SellerId,
    product_id: ProductId,
}

/// A product and its stock item (`null`: none).
#[derive(Serialize)]
struct ProductAnswer {
    product: Option<Product>,
    stock: Option<StockItem>,
}

/// A seller's dashboard: the aggregates of its in-progress orders and one entry per order.
#[derive(Serialize)]
pub(crate) struct DashboardAnswer {
    seller_id: SellerId,
    view: SellerView,
    entries: Vec<DashboardEntry>,
}

#[derive(Serialize)]
struct DashboardEntry {
    #[serde(flatten)]
    key: EntryKey,
    #[serde(flatten)]
    entry: OrderEntry,
}

/// What the caller of `audit` knows that the snapshot does not: the units every product's stock
/// was loaded with (default: the served configuration's), and the checkouts committed since the
/// load (criterion 8 is checked only when given).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    initial_stock: Option<i64>,
    committed_checkouts: Option<u64>,
}

/// The marketplace's consistency criteria at one snapshot.
#[derive(Serialize)]
struct AuditAnswer {
    n_products: usize,
    n_carts: usize,
    n_orders: usize,
    n_shipments: usize,
    /// Violations summed over every criterion.
    violations: u64,
    /// Criterion name → its violations.
    criteria: BTreeMap<&'static str, CriterionAnswer>,
}

#[derive(Serialize)]
struct CriterionAnswer {
    violations: u64,
    /// The first few violations, described.
    examples: Vec<String>,
}

impl AuditAnswer {
    fn new(market: &Marketplace, snapshot: &MarketSnapshot, query: &AuditQuery) -> Self {
        let mut expected = market.expected(query.committed_checkouts, 0);
        expected.initial_stock = query.initial_stock.unwrap_or(expected.initial_stock);
        let criteria: BTreeMap<&'static str, CriterionAnswer> =
            services::marketplace::check_detailed(snapshot, &expected)
                .into_iter()
                .map(|(name, Found { count, examples })| {
                    let violations = count;
                    (
                        name,
                        CriterionAnswer {
                            violations,
                            examples,
                        },
                    )
                })
                .collect();
        AuditAnswer {
            n_products: snapshot.products.len(),
            n_carts: snapshot.carts.len(),
            n_orders: snapshot.orders.len(),
            n_shipments: snapshot.shipments.len(),
            violations: criteria.values().map(|c| c.violations).sum(),
            criteria,
        }
    }
}

impl DashboardAnswer {
    pub(crate) fn new(dashboard: Dashboard) -> Self {
        DashboardAnswer {
            seller_id: dashboard.seller_id,
            view: dashboard.view,
            entries: dashboard
                .entries
                .into_iter()
                .map(|(key, entry)| DashboardEntry { key, entry })
                .collect(),
        }
    }
}

impl ServedApp for MarketServed {
    type App = MarketApp;
    const NAME: &'static str = "marketplace";
    const QUERIES: &'static [QueryInfo] = &[
        QueryInfo {
            name: "dashboard",
            description: "A seller's dashboard at one snapshot: the aggregates of its \
                          in-progress orders and their entries (empty for a seller without \
                          orders).",
            example: r#"{"seller_id": 1}"#,
        },
        QueryInfo {
            name: "product",
            description: "A product (prices in cents) and its stock item, at one snapshot \
                          (null: it does not exist).",
            example: r#"{"seller_id": 1, "product_id": 1}"#,
        },
        QueryInfo {
            name: "audit",
            description: "Every consistency criterion of the marketplace evaluated at one \
                          snapshot of all eight services: per criterion, its violation count \
                          and a few examples; and the row counts. Optional: the units each \
                          product's stock was loaded with (default: the served \
                          configuration's) and the checkouts committed since the load \
                          (criterion 8 compares them with the orders).",
            example: r#"{"initial_stock": 10000, "committed_checkouts": 3}"#,
        },
    ];

    fn build(options: AppOptions) -> Result<Self, TxnError> {
        let mut config = MarketConfig::default();
        config.n_partitions = options.partitions.unwrap_or(config.n_partitions);
        // Clients pay with their own cards (the benchmark's driver sends them): no simulated
        // declines, so an order's outcome depends only on the stock.
        config.payment_failure_pct = 0;
        Ok(MarketServed(Marketplace::new(config)?))
    }

    fn app_def(&self) -> &Arc<AppDef<MarketApp>> {
        self.0.app()
    }

    fn query(
        &self,
        client: &Client<MarketApp>,
        name: &str,
        body: &[u8],
    ) -> Result<QueryFuture, ApiError> {
        let (market, client) = (self.0.clone(), client.clone());
        match name {
            "dashboard" => {
                let q: DashboardQuery = query_body(name, body)?;
                Ok(Box::pin(async move {
                    let dashboard = market.dashboard(&client, q.seller_id).await?;
                    to_json(DashboardAnswer::new(dashboard))
                }))
            }
            "product" => {
                let q: ProductQuery = query_body(name, body)?;
                Ok(Box::pin(async move {
                    let key = ProductKey {
                        seller_id: q.seller_id,
                        product_id: q.product_id,
                    };
                    let ProductLookup { product, stock } = market.product(&client, key).await?;
                    to_json(ProductAnswer { product, stock })
                }))
            }
            "audit" => {
                let q: AuditQuery = query_body(name, body)?;
                Ok(Box::pin(async move {
                    // The registered query's rows: every criterion's input, from every node.
                    let snapshot = market.audit_snapshot(&client).await?;
                    to_json(AuditAnswer::new(&market, &snapshot, &q))
                }))
            }
            _ => Err(unknown_query(name, Self::QUERIES)),
        }
    }
}
