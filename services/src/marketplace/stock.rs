//! The stock service: units available and reserved per product. A checkout reserves every
//! item of a partition's sellers in one step (or aborts the whole checkout), and the payment's
//! outcome confirms or releases the reservations; a new product version is adopted here too.

use super::model::*;
use super::{MarketApp, MarketError, Services};
use serde::{Deserialize, Serialize};
use txn::{AppBuilder, HandlerResult, Svc, Table, TxnCtx, handler, service};

/// product → `stock[seller]` (from [`LoadSeller`](super::LoadSeller)): create the stock items
/// of the seller's products.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct LoadStock {
    #[key]
    pub seller_id: SellerId,
    pub products: Vec<(ProductId, Version)>,
    pub initial_stock: i64,
}

/// Inbound, to `stock[seller]`: create or overwrite one stock item as the benchmark's driver
/// ingests it, row by row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct IngestStock {
    #[key]
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub item: StockItem,
}

/// cart → `stock[p]`: reserve these items (of sellers in partition p).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve {
    pub lines: Vec<StockLine>,
}

/// payment → `stock[p]`: confirm (approved) or release these reservations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settle {
    pub lines: Vec<StockLine>,
    pub approved: bool,
}

/// product → `stock[seller]`: adopt a product's new version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct AdoptVersion {
    #[key]
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub version: Version,
}

/// The rows of one table of a `stock` partition, by key (see [`WipeStock`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockRows {
    StockItems(Vec<ProductKey>),
}

/// Reset, to one `stock` partition: delete these rows of it (the benchmark driver's
/// `PATCH /stock/reset`, see [`Marketplace::reset_requests`](super::Marketplace::reset_requests)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeStock {
    pub rows: StockRows,
}

/// The stock service: its one table.
pub struct Stock {
    pub(super) stock_items: Table<ProductKey, StockItem>,
}

impl Stock {
    /// Declares the service's table; a seller's items share its partition.
    pub(super) fn declare(b: &mut AppBuilder<MarketApp>, s: &Services) -> Self {
        Stock {
            stock_items: StockItem::table(b, *s.stock),
        }
    }
}

#[service(key = SellerId)]
impl Stock {
    #[handler]
    fn wipe_stock(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &WipeStock) -> HandlerResult {
        match &ev.rows {
            StockRows::StockItems(keys) => {
                for key in keys {
                    ctx.delete(self.stock_items, key)?;
                }
            }
        }
        Ok(())
    }
    #[handler(internal)]
    fn load_stock(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &LoadStock) -> HandlerResult {
        for (product_id, version) in &ev.products {
            let key = ProductKey {
                seller_id: ev.seller_id,
                product_id: *product_id,
            };
            let item = StockItem {
                qty_available: ev.initial_stock,
                qty_reserved: 0,
                order_count: 0,
                ytd: 0,
                version: *version,
            };
            ctx.put(self.stock_items, key, item)?;
        }
        Ok(())
    }

    #[handler]
    fn ingest_stock(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &IngestStock) -> HandlerResult {
        let key = ProductKey {
            seller_id: ev.seller_id,
            product_id: ev.product_id,
        };
        ctx.put(self.stock_items, key, ev.item)
    }

    #[handler(internal)]
    fn reserve(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &Reserve) -> HandlerResult {
        for line in &ev.lines {
            let key = ProductKey {
                seller_id: line.seller_id,
                product_id: line.product_id,
            };
            let Some(mut item) = ctx.get(self.stock_items, &key)? else {
                return Err(MarketError::NoStockItem {
                    seller_id: line.seller_id,
                    product_id: line.product_id,
                }
                .into());
            };
            if item.version != line.version {
                return Err(MarketError::VersionMismatch {
                    seller_id: line.seller_id,
                    product_id: line.product_id,
                    stock_version: item.version,
                    cart_version: line.version,
                }
                .into());
            }
            let qty = i64::from(line.quantity);
            if item.qty_reserved + qty > item.qty_available {
                return Err(MarketError::StockShortage {
                    seller_id: line.seller_id,
                    product_id: line.product_id,
                    available: item.qty_available,
                    reserved: item.qty_reserved,
                    wanted: qty,
                }
                .into());
            }
            item.qty_reserved += qty;
            ctx.put(self.stock_items, key, item)?;
        }
        Ok(())
    }

    #[handler(internal)]
    fn settle(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &Settle) -> HandlerResult {
        for line in &ev.lines {
            let key = ProductKey {
                seller_id: line.seller_id,
                product_id: line.product_id,
            };
            let qty = i64::from(line.quantity);
            let item = ctx.get(self.stock_items, &key)?;
            let Some(mut item) = item.filter(|i| i.qty_reserved >= qty) else {
                return Err(MarketError::SettledUnreserved {
                    seller_id: line.seller_id,
                    product_id: line.product_id,
                    quantity: qty,
                }
                .into());
            };
            item.qty_reserved -= qty;
            if ev.approved {
                item.qty_available -= qty;
                item.order_count += 1;
                item.ytd += qty;
            }
            ctx.put(self.stock_items, key, item)?;
        }
        Ok(())
    }

    #[handler(internal)]
    fn adopt_version(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &AdoptVersion) -> HandlerResult {
        let key = ProductKey {
            seller_id: ev.seller_id,
            product_id: ev.product_id,
        };
        let Some(mut item) = ctx.get(self.stock_items, &key)? else {
            return Err(MarketError::StockItemMissing {
                seller_id: ev.seller_id,
                product_id: ev.product_id,
            }
            .into());
        };
        item.version = ev.version;
        ctx.put(self.stock_items, key, item)
    }
}

/// The stock lines of `items`, each with the stock partition of its seller (for
/// [`emit_grouped`](super::emit_grouped): one reservation or settlement step per partition).
pub(super) fn stock_lines(stock: Svc<Stock>, items: &[OrderItem]) -> Vec<(u32, StockLine)> {
    items
        .iter()
        .map(|i| {
            let line = StockLine {
                seller_id: i.seller_id,
                product_id: i.product_id,
                quantity: i.quantity,
                version: i.version,
            };
            (stock.partition_of(&i.seller_id), line)
        })
        .collect()
}
