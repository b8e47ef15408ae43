//! The marketplace's named queries (`AppBuilder::query`): the seller dashboard, a product lookup
//! and the audit's rows, registered with the application so that they are called by name and
//! also read the partitions other nodes of a cluster hold. Each partition answers its part; the
//! caller merges the parts.

use super::check::{Dashboard, MarketSnapshot};
use super::model::*;
use super::{Services, Tables};
use serde::{Deserialize, Serialize};
use txn::{AppBuilder, NamedQuery, ReadView};

/// The marketplace's named queries.
#[derive(Clone, Debug)]
pub struct MarketQueries {
    /// A seller's part of its dashboard from one seller partition (merge the parts with
    /// [`Dashboard::from_parts`]).
    pub dashboard: NamedQuery<SellerId, Dashboard>,
    /// A product and its stock item, from the product and stock partitions owning its seller
    /// (merge the parts with [`ProductLookup::merge`]; see [`MarketQueries::product_partitions`]).
    pub product: NamedQuery<ProductKey, ProductLookup>,
    /// One partition's rows the consistency criteria read (merge the parts with
    /// [`MarketSnapshot::merge`]): every row but the customers', which no criterion reads and
    /// which hold personal data, so the audit never copies them between nodes.
    pub audit: NamedQuery<(), MarketSnapshot>,
}

/// A product and its stock item at one snapshot (`None`: it does not exist).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductLookup {
    pub product: Option<Product>,
    pub stock: Option<StockItem>,
}

impl ProductLookup {
    /// Combines two partitions' parts of a lookup.
    pub fn merge(self, other: ProductLookup) -> ProductLookup {
        ProductLookup {
            product: self.product.or(other.product),
            stock: self.stock.or(other.stock),
        }
    }
}

impl MarketQueries {
    /// Registers the three queries over the marketplace's tables.
    pub(super) fn register(b: &mut AppBuilder<super::MarketApp>, s: &Services, t: Tables) -> Self {
        let dashboard = b.query("dashboard", move |view, seller_id: &SellerId| {
            dashboard_part(view, &t, *seller_id)
        });
        let product = b.query("product", move |view, key: &ProductKey| ProductLookup {
            product: view.get(t.products, key).cloned(),
            stock: t.stock_item(view, key),
        });
        let n_cart_partitions = s.cart.n_partitions();
        let audit = b.query("audit", move |view, _: &()| MarketSnapshot {
            customers: Default::default(),
            ..MarketSnapshot::of_partition(view, &t, n_cart_partitions)
        });
        MarketQueries {
            dashboard,
            product,
            audit,
        }
    }

    /// The partitions holding product `key` and its stock item: the product and stock
    /// partitions of its seller.
    pub fn product_partitions(s: &Services, key: &ProductKey) -> [(txn::ServiceRef, u32); 2] {
        let seller = key.placement();
        [
            (*s.product, s.product.partition_of(&seller)),
            (*s.stock, s.stock.partition_of(&seller)),
        ]
    }
}

/// One seller partition's part of a seller's dashboard: its in-progress entries and aggregate
/// shards there (a seller's entries and shards are spread over the seller partitions by shard).
pub(super) fn dashboard_part(view: &ReadView<'_>, t: &Tables, seller_id: SellerId) -> Dashboard {
    let in_progress =
        EntryKey::bound(seller_id, false, false)..=EntryKey::bound(seller_id, false, true);
    let entries = view
        .range(t.order_entries, in_progress)
        .map(|(k, e)| (*k, *e))
        .collect();
    let view_total = (0..SELLER_VIEW_SHARDS)
        .filter_map(|shard| view.get(t.seller_views, &SellerViewKey { seller_id, shard }))
        .fold(SellerView::default(), |acc, v| acc.merge(v));
    Dashboard {
        seller_id,
        entries,
        view: view_total,
    }
}
