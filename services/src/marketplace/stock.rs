//! The stock service: units available and reserved per product. A checkout reserves every
//! item of a partition's sellers in one step (or aborts the whole checkout) and, in the same
//! step, confirms the reservation (payment approved) or releases it (declined): the provider's
//! decision is drawn when the checkout starts; a new product version is adopted here too.
//!
//! Reservations change a product's [`StockLevel`] only by merge-able deltas, so the checkouts
//! of one product in an epoch commit together; a reservation keeps `qty_free >= 0` by escrow.
//! The version a reservation compares lives in its own row ([`StockVersion`]), because a read
//! of a row with deltas by a later transaction conflicts.

use super::model::*;
use super::{MarketApp, MarketError, Services};
use serde::{Deserialize, Serialize};
use txn::{AppBuilder, DeltaUse, Field, HandlerResult, Svc, Table, TxnCtx, handler, service};

/// Units available beyond the reservations; never below 0.
const QTY_FREE: Field<StockLevel> = txn::field!(StockLevel, qty_free);
const ORDER_COUNT: Field<StockLevel> = txn::field!(StockLevel, order_count);
const YTD: Field<StockLevel> = txn::field!(StockLevel, ytd);

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

/// cart → `stock[p]`: reserve these items (of sellers in partition p), then confirm the
/// reservation if the payment is `approved`, else release it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserve {
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

/// The stock service: a product's counters and the version it sells, in two rows.
pub struct Stock {
    pub(super) stock_levels: Table<ProductKey, StockLevel>,
    pub(super) stock_versions: Table<ProductKey, StockVersion>,
}

impl Stock {
    /// Declares the service's tables, the invariant `qty_free >= 0` and how each counter is
    /// changed (see `AppDef::coordination_report`); a seller's items share its partition.
    pub(super) fn declare(b: &mut AppBuilder<MarketApp>, s: &Services) -> Self {
        let stock_levels = StockLevel::table(b, *s.stock);
        b.field_min(stock_levels, QTY_FREE, 0);
        b.delta_field(stock_levels, QTY_FREE, DeltaUse::BoundedDecrements);
        b.delta_field(stock_levels, QTY_FREE, DeltaUse::Increments);
        b.delta_field(stock_levels, ORDER_COUNT, DeltaUse::Increments);
        b.delta_field(stock_levels, YTD, DeltaUse::Increments);
        Stock {
            stock_levels,
            stock_versions: StockVersion::table(b, *s.stock),
        }
    }

    /// Creates or overwrites both rows of a stock item.
    fn put_item(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        key: ProductKey,
        item: &StockItem,
    ) -> HandlerResult {
        let (level, version) = item.split();
        ctx.put(self.stock_levels, key, level)?;
        ctx.put(self.stock_versions, key, version)
    }
}

#[service(key = SellerId)]
impl Stock {
    #[handler]
    fn wipe_stock(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &WipeStock) -> HandlerResult {
        match &ev.rows {
            StockRows::StockItems(keys) => {
                for key in keys {
                    ctx.delete(self.stock_levels, key)?;
                    ctx.delete(self.stock_versions, key)?;
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
            self.put_item(ctx, key, &item)?;
        }
        Ok(())
    }

    #[handler]
    fn ingest_stock(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &IngestStock) -> HandlerResult {
        let key = ProductKey {
            seller_id: ev.seller_id,
            product_id: ev.product_id,
        };
        self.put_item(ctx, key, &ev.item)
    }

    /// Reads each item's version (a plain read: it must see the committed version, and only
    /// a new product version writes that row), reserves by a bounded delta, and settles at
    /// once: an approved payment sells the units, a declined one frees them again. A
    /// reservation and its settlement in one step never show as reserved units, so
    /// `qty_reserved` is left alone (it stays what ingestion set).
    #[handler(internal)]
    fn reserve(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &Reserve) -> HandlerResult {
        for line in &ev.lines {
            let (seller_id, product_id) = (line.seller_id, line.product_id);
            let key = ProductKey {
                seller_id,
                product_id,
            };
            let Some(stocked) = ctx.get(self.stock_versions, &key)? else {
                return Err(MarketError::NoStockItem {
                    seller_id,
                    product_id,
                }
                .into());
            };
            if stocked.version != line.version {
                return Err(MarketError::VersionMismatch {
                    seller_id,
                    product_id,
                    stock_version: stocked.version,
                    cart_version: line.version,
                }
                .into());
            }
            let wanted = i64::from(line.quantity);
            ctx.add_bounded_or(self.stock_levels, &key, QTY_FREE, -wanted, 0, |free| {
                MarketError::StockShortage {
                    seller_id,
                    product_id,
                    free,
                    wanted,
                }
            })?;
            if ev.approved {
                ctx.add_all(self.stock_levels, &key, &[(ORDER_COUNT, 1), (YTD, wanted)])?;
            } else {
                ctx.add(self.stock_levels, &key, QTY_FREE, wanted)?;
            }
        }
        Ok(())
    }

    #[handler(internal)]
    fn adopt_version(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &AdoptVersion) -> HandlerResult {
        let key = ProductKey {
            seller_id: ev.seller_id,
            product_id: ev.product_id,
        };
        if ctx.get(self.stock_versions, &key)?.is_none() {
            return Err(MarketError::StockItemMissing {
                seller_id: ev.seller_id,
                product_id: ev.product_id,
            }
            .into());
        }
        let version = StockVersion {
            version: ev.version,
        };
        ctx.put(self.stock_versions, key, version)
    }
}

/// The stock lines of `items` (for [`emit_grouped`](super::emit_grouped) with
/// [`stock_partition`]: one reservation step per partition).
pub(super) fn stock_lines(items: &[OrderItem]) -> Vec<StockLine> {
    items
        .iter()
        .map(|i| StockLine {
            seller_id: i.seller_id,
            product_id: i.product_id,
            quantity: i.quantity,
            version: i.version,
        })
        .collect()
}

/// The stock partition of a line: its seller's.
pub(super) fn stock_partition(stock: Svc<Stock>) -> impl Fn(&StockLine) -> u32 {
    move |line| stock.partition_of(&line.seller_id)
}
