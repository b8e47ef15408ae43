//! Resetting one service of the marketplace: every row of its tables deleted, by ordinary
//! requests to each of its partitions (the benchmark driver's `PATCH /{service}/reset`, sent
//! when nothing else runs).

use super::*;
use txn::{Key, Row};

/// Most rows one reset request deletes, so a request stays far below the runtime's request
/// size and per-transaction limits however large the service grew.
pub const RESET_ROWS_PER_REQUEST: usize = 1_024;

/// Why a reset could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("no marketplace service named {0:?}")]
    UnknownService(String),
    #[error(transparent)]
    Txn(#[from] TxnError),
}

impl Marketplace {
    /// The requests that delete every row of service `name` (`cart`, `product`, ...): one per
    /// partition and table and [`RESET_ROWS_PER_REQUEST`] keys, read at one snapshot per table.
    /// Rows written after that snapshot survive: reset a service while nothing else writes it.
    pub async fn reset_requests(
        &self,
        client: &Client<MarketApp>,
        name: &str,
    ) -> Result<Vec<Request<MarketApp>>, ResetError> {
        let (s, t) = (self.services, self.tables);
        let mut out = Vec::new();
        match name {
            "product" => {
                wipe(client, s.product, t.products, &mut out, |k| WipeProducts {
                    rows: ProductRows::Products(k),
                })
                .await?;
                wipe(client, s.product, t.seller_update_seq, &mut out, |k| {
                    WipeProducts {
                        rows: ProductRows::UpdateSeqs(k),
                    }
                })
                .await?;
            }
            "stock" => {
                // Both rows of an item share its key: a wipe deletes the two together.
                wipe(client, s.stock, t.stock_versions, &mut out, |k| WipeStock {
                    rows: StockRows::StockItems(k),
                })
                .await?;
            }
            "cart" => {
                wipe(client, s.cart, t.carts, &mut out, |k| WipeCarts {
                    rows: CartRows::Carts(k),
                })
                .await?;
                wipe(client, s.cart, t.product_replicas, &mut out, |k| {
                    WipeCarts {
                        rows: CartRows::Replicas(k),
                    }
                })
                .await?;
            }
            "order" => {
                wipe(client, s.order, t.orders, &mut out, |k| WipeOrders {
                    rows: OrderRows::Orders(k),
                })
                .await?;
                wipe(client, s.order, t.order_items, &mut out, |k| WipeOrders {
                    rows: OrderRows::Items(k),
                })
                .await?;
                wipe(client, s.order, t.order_history, &mut out, |k| WipeOrders {
                    rows: OrderRows::History(k),
                })
                .await?;
            }
            "payment" => {
                wipe(client, s.payment, t.order_payments, &mut out, |k| {
                    WipePayments {
                        rows: PaymentRows::Payments(k),
                    }
                })
                .await?;
                wipe(client, s.payment, t.order_payment_cards, &mut out, |k| {
                    WipePayments {
                        rows: PaymentRows::Cards(k),
                    }
                })
                .await?;
            }
            "shipment" => {
                wipe(client, s.shipment, t.shipments, &mut out, |k| {
                    WipeShipments {
                        rows: ShipmentRows::Shipments(k),
                    }
                })
                .await?;
                wipe(client, s.shipment, t.packages, &mut out, |k| {
                    WipeShipments {
                        rows: ShipmentRows::Packages(k),
                    }
                })
                .await?;
                wipe(client, s.shipment, t.open_deliveries, &mut out, |k| {
                    WipeShipments {
                        rows: ShipmentRows::OpenDeliveries(k),
                    }
                })
                .await?;
            }
            "seller" => {
                wipe(client, s.seller, t.sellers, &mut out, |k| WipeSellers {
                    rows: SellerRows::Sellers(k),
                })
                .await?;
                wipe(client, s.seller, t.order_entries, &mut out, |k| {
                    WipeSellers {
                        rows: SellerRows::Entries(k),
                    }
                })
                .await?;
                wipe(client, s.seller, t.seller_views, &mut out, |k| {
                    WipeSellers {
                        rows: SellerRows::Views(k),
                    }
                })
                .await?;
                wipe(client, s.seller, t.delivered_entries, &mut out, |k| {
                    WipeSellers {
                        rows: SellerRows::DeliveredEntries(k),
                    }
                })
                .await?;
            }
            "customer" => {
                wipe(client, s.customer, t.customers, &mut out, |k| {
                    WipeCustomers {
                        rows: CustomerRows::Customers(k),
                    }
                })
                .await?;
                wipe(client, s.customer, t.customer_counters, &mut out, |k| {
                    WipeCustomers {
                        rows: CustomerRows::Counters(k),
                    }
                })
                .await?;
            }
            other => return Err(ResetError::UnknownService(other.to_string())),
        }
        Ok(out)
    }
}

/// Appends to `out` the requests deleting every row of `table` (of service `to`), each to the
/// partition holding the rows, made by `make` from at most [`RESET_ROWS_PER_REQUEST`] keys.
async fn wipe<S, K, V, E>(
    client: &Client<MarketApp>,
    to: Svc<S>,
    table: Table<K, V>,
    out: &mut Vec<Request<MarketApp>>,
    make: impl Fn(Vec<K>) -> E,
) -> Result<(), TxnError>
where
    S: Service<App = MarketApp>,
    K: Key,
    V: Row,
    E: EventOf<S>,
{
    let parts = client
        .query(&[*to], move |view| {
            let keys: Vec<K> = view.iter(table).map(|(k, _)| k.clone()).collect();
            (view.partition(), keys)
        })
        .await?;
    for (partition, keys) in parts {
        for chunk in keys.chunks(RESET_ROWS_PER_REQUEST) {
            out.push(to.request_to_partition(partition, make(chunk.to_vec())));
        }
    }
    Ok(())
}
