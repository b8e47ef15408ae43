//! The seller service: sellers, each seller's entry per order, and the dashboard aggregates
//! over the entries still in progress, kept in the same step as the entries they count. The
//! aggregates change by deltas only, on shard rows created with the seller, so the entries of
//! any number of checkouts and deliveries of one epoch are counted together.
//!
//! An entry in progress lives in the ordered `order_entries`, where a seller's open entries
//! are one key range for the dashboard; delivering it moves it, under the same key with
//! `delivered` set, to the hash table `delivered_entries`, which nothing reads by range. So
//! the ordered table holds the backlog only (a few hundred entries per seller) instead of
//! every entry of the run, and a delivered entry costs a hash insert instead of a search and
//! insert in an ever larger tree, in the first pass and again at commit.

use super::model::*;
use super::{MarketApp, MarketError, Services};
use serde::{Deserialize, Serialize};
use txn::{AppBuilder, DeltaUse, Field, HandlerResult, Table, TxnCtx, handler, service};

/// An aggregate of a dashboard shard, with how much one entry of `Totals` adds to it.
type ViewField = (Field<SellerView>, fn(&Totals) -> i64);

/// Every aggregate of a dashboard shard.
const VIEW_FIELDS: [ViewField; 7] = [
    (txn::field!(SellerView, count_orders), |_| 1),
    (txn::field!(SellerView, count_items), |t| {
        i64::from(t.count_items)
    }),
    (txn::field!(SellerView, total_items), |t| t.total_items),
    (txn::field!(SellerView, total_freight), |t| t.total_freight),
    (txn::field!(SellerView, total_amount), |t| t.total_amount),
    (txn::field!(SellerView, total_incentive), |t| {
        t.total_incentive
    }),
    (txn::field!(SellerView, total_invoice), |t| t.total_invoice),
];

/// product → `seller[seller]` (from [`LoadSeller`](super::LoadSeller)): create the seller row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct LoadSellerRow {
    #[key]
    pub seller_id: SellerId,
}

/// payment → `seller[p]`: record these sellers' entries and count them in the dashboards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordEntries {
    pub entries: Vec<(EntryKey, OrderEntry)>,
}

/// product → `seller[p]` (when a seller is loaded or its products ingested): create these
/// dashboard shards (all of partition p) if they do not exist yet, since a delta never creates
/// a row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSellerViews {
    pub keys: Vec<SellerViewKey>,
}

/// shipment → `seller[p]`: these in-progress entries are delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesDelivered {
    pub entries: Vec<EntryKey>,
}

/// The rows of one table of a `seller` partition, by key (see [`WipeSellers`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SellerRows {
    Sellers(Vec<SellerId>),
    Entries(Vec<EntryKey>),
    Views(Vec<SellerViewKey>),
    DeliveredEntries(Vec<EntryKey>),
}

/// Reset, to one `seller` partition: delete these rows of it (the benchmark driver's
/// `PATCH /seller/reset`, see [`Marketplace::reset_requests`](super::Marketplace::reset_requests)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeSellers {
    pub rows: SellerRows,
}

/// The seller service: its tables.
pub struct Sellers {
    pub(super) sellers: Table<SellerId, Seller>,
    /// Entries in progress (`delivered == false`), in key order.
    pub(super) order_entries: Table<EntryKey, OrderEntry>,
    /// Delivered entries (`delivered == true`), hashed.
    pub(super) delivered_entries: Table<EntryKey, OrderEntry>,
    pub(super) seller_views: Table<SellerViewKey, SellerView>,
}

impl Sellers {
    /// Declares the service's tables; an entry, delivered or not, shares the partition of the
    /// aggregate shard it counts in. The aggregates have no invariant, so deltas of either sign
    /// on them are confluent.
    pub(super) fn declare(b: &mut AppBuilder<MarketApp>, s: &Services) -> Self {
        let seller_views = SellerView::table(b, *s.seller);
        for (field, _) in VIEW_FIELDS {
            b.delta_field(seller_views, field, DeltaUse::Any);
        }
        let sellers = Seller::table(b, *s.seller);
        let order_entries = OrderEntry::table(b, *s.seller);
        let delivered_entries = b.table(*s.seller, "delivered_entries");
        b.place_by(delivered_entries, EntryKey::placement);
        Sellers {
            sellers,
            order_entries,
            delivered_entries,
            seller_views,
        }
    }
}

#[service(key = SellerId)]
impl Sellers {
    #[handler]
    fn wipe_sellers(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &WipeSellers) -> HandlerResult {
        match &ev.rows {
            SellerRows::Sellers(keys) => {
                for key in keys {
                    ctx.delete(self.sellers, key)?;
                }
            }
            SellerRows::Entries(keys) => {
                for key in keys {
                    ctx.delete(self.order_entries, key)?;
                }
            }
            SellerRows::Views(keys) => {
                for key in keys {
                    ctx.delete(self.seller_views, key)?;
                }
            }
            SellerRows::DeliveredEntries(keys) => {
                for key in keys {
                    ctx.delete(self.delivered_entries, key)?;
                }
            }
        }
        Ok(())
    }
    #[handler(internal)]
    fn load_seller_row(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &LoadSellerRow,
    ) -> HandlerResult {
        let seller_id = ev.seller_id;
        let seller = Seller {
            name: format!("seller-{seller_id}"),
            city: format!("city-{}", seller_id % 100),
        };
        ctx.put(self.sellers, seller_id, seller)
    }

    #[handler(internal)]
    fn create_seller_views(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &CreateSellerViews,
    ) -> HandlerResult {
        for key in &ev.keys {
            if ctx.get(self.seller_views, key)?.is_none() {
                ctx.put(self.seller_views, *key, SellerView::default())?;
            }
        }
        Ok(())
    }

    #[handler(internal)]
    fn record_entries(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &RecordEntries) -> HandlerResult {
        for (key, entry) in &ev.entries {
            ctx.put(self.order_entries, *key, *entry)?;
            self.update_view(ctx, key, &entry.totals, 1)?;
        }
        Ok(())
    }

    #[handler(internal)]
    fn entries_delivered(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &EntriesDelivered,
    ) -> HandlerResult {
        for open in &ev.entries {
            let Some(mut entry) = ctx.get(self.order_entries, open)? else {
                return Err(MarketError::OpenEntryMissing {
                    seller_id: open.seller_id,
                    order: open.order(),
                }
                .into());
            };
            ctx.delete(self.order_entries, open)?;
            entry.delivery_status = DeliveryStatus::Delivered;
            entry.order_status = OrderStatus::Delivered;
            let delivered = EntryKey {
                delivered: true,
                ..*open
            };
            ctx.put(self.delivered_entries, delivered, entry)?;
            self.update_view(ctx, open, &entry.totals, -1)?;
        }
        Ok(())
    }

    /// Adds (`sign = 1`) or removes (`sign = -1`) an entry from its seller's dashboard
    /// aggregate, by deltas on the shard row (created with the seller): every aggregate in one
    /// `add_all`, which finds the row once.
    fn update_view(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        entry: &EntryKey,
        totals: &Totals,
        sign: i64,
    ) -> HandlerResult {
        let key = entry.placement();
        let deltas = VIEW_FIELDS.map(|(field, amount)| (field, sign * amount(totals)));
        ctx.add_all(self.seller_views, &key, &deltas)
    }
}

/// The keys of `seller_id`'s dashboard shards, for [`CreateSellerViews`] steps (one per
/// partition, with `emit_grouped`).
pub(super) fn seller_view_creations(seller_id: SellerId) -> Vec<SellerViewKey> {
    (0..SELLER_VIEW_SHARDS)
        .map(|shard| SellerViewKey { seller_id, shard })
        .collect()
}
