//! Serving the Online Marketplace (`services::marketplace`): query `dashboard`, and the routes
//! the benchmark's own driver sends (`marketplace_driver.rs`).

use super::{AppOptions, QueryFuture, ServedApp, query_body, to_json, unknown_query};
use crate::api::{ApiError, QueryInfo};
use serde::{Deserialize, Serialize};
use services::marketplace::{
    Dashboard, EntryKey, MarketApp, MarketConfig, Marketplace, OrderEntry, Product, ProductId,
    ProductKey, SellerId, SellerView, StockItem,
};
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
                    let (s, t) = (market.services, market.tables);
                    let parts = client
                        .query(&[*s.product, *s.stock], move |view| {
                            (
                                view.get(t.products, &key).cloned(),
                                t.stock_item(view, &key),
                            )
                        })
                        .await?;
                    let (product, stock) = parts.into_iter().fold((None, None), |acc, part| {
                        (acc.0.or(part.0), acc.1.or(part.1))
                    });
                    to_json(ProductAnswer { product, stock })
                }))
            }
            _ => Err(unknown_query(name, Self::QUERIES)),
        }
    }
}
