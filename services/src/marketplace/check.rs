//! The marketplace's consistency criteria (`docs/workloads.md`), checked over one snapshot of all
//! eight services.
//!
//! [`MarketSnapshot`] is a plain copy of every row, taken with one `query` so that it is one
//! consistent cut (see `Marketplace::snapshot`); [`check`] counts violations per criterion.
//! The checkers look only at the snapshot and at what the run says must hold ([`Expected`]),
//! never at how the rows were produced, so they judge any implementation of the services (a
//! baseline without transactions included) by the same rules. They assume a quiesced system:
//! no transaction in flight when the snapshot was taken.

use super::Tables;
use super::model::*;
use crate::Violations;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use txn::ReadView;

/// Criterion names, as they appear in reports (numbered as in `docs/workloads.md`).
pub mod criteria {
    /// Criterion 1: every order has its items, a payment, and (if approved) a shipment with
    /// packages and matching seller entries — or none of them exist.
    pub const CHECKOUT_ATOMIC: &str = "1_checkout_atomic";
    /// Criterion 2: no negative or dangling reservation, no oversell, reservations only for
    /// versions that existed.
    pub const STOCK: &str = "2_stock_no_oversell";
    /// Criterion 3: product updates reached stock and every cart (replicas and cart items).
    pub const UPDATES_REACH_STOCK_AND_CART: &str = "3_updates_reach_stock_and_cart";
    /// Criterion 4: no cart replica shows a later update of a seller's product while missing an
    /// earlier one of another product of that seller.
    pub const CAUSAL_REPLICATION: &str = "4_causal_replication";
    /// Criterion 5: a seller's in-progress entries and its dashboard aggregates agree.
    pub const DASHBOARD: &str = "5_dashboard_consistent";
    /// Criterion 6: order totals equal their items; customer counters equal payments and
    /// deliveries; shipment and order statuses follow the packages.
    pub const TOTALS: &str = "6_totals_and_counters";
    /// Criterion 7: approved payments equal the invoices of confirmed orders.
    pub const MONEY: &str = "7_money";
    /// Beyond the seven: every committed checkout left exactly one order.
    pub const ORDERS_MATCH_CHECKOUTS: &str = "8_orders_match_committed_checkouts";

    pub const ALL: [&str; 8] = [
        CHECKOUT_ATOMIC,
        STOCK,
        UPDATES_REACH_STOCK_AND_CART,
        CAUSAL_REPLICATION,
        DASHBOARD,
        TOTALS,
        MONEY,
        ORDERS_MATCH_CHECKOUTS,
    ];
}

/// Every row of the marketplace at one snapshot (serde: it is the part of the named `audit`
/// query, `MarketQueries::audit`, which travels between nodes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MarketSnapshot {
    /// Cart partitions, each of which holds a full set of product replicas.
    pub n_cart_partitions: u32,
    pub products: BTreeMap<ProductKey, Product>,
    pub seller_update_seq: BTreeMap<SellerId, u64>,
    pub stock_items: BTreeMap<ProductKey, StockItem>,
    pub carts: BTreeMap<CustomerId, Cart>,
    pub cart_index: BTreeSet<CartIndexKey>,
    /// `(cart partition, product)` → replica.
    pub replicas: BTreeMap<(u32, ProductKey), Replica>,
    pub orders: BTreeMap<OrderKey, Order>,
    pub order_items: BTreeMap<OrderPartKey, OrderItem>,
    pub order_history: BTreeMap<OrderPartKey, OrderHistory>,
    pub payments: BTreeMap<OrderPartKey, Payment>,
    pub payment_cards: BTreeMap<OrderPartKey, PaymentCard>,
    pub shipments: BTreeMap<OrderKey, Shipment>,
    pub packages: BTreeMap<OrderPartKey, Package>,
    pub open_deliveries: BTreeMap<OpenDeliveryKey, u16>,
    pub sellers: BTreeMap<SellerId, Seller>,
    /// Every entry, in progress (`order_entries`) or delivered (`delivered_entries`).
    pub order_entries: BTreeMap<EntryKey, OrderEntry>,
    pub seller_views: BTreeMap<SellerViewKey, SellerView>,
    pub customers: BTreeMap<CustomerId, Customer>,
    pub customer_counters: BTreeMap<CustomerId, CustomerCounters>,
}

fn copy<K: Ord + Clone, V: Clone>(out: &mut BTreeMap<K, V>, rows: impl Iterator<Item = (K, V)>) {
    out.extend(rows);
}

impl MarketSnapshot {
    /// The rows of one partition (empty for every table of the other services).
    pub fn of_partition(view: &ReadView<'_>, t: &Tables, n_cart_partitions: u32) -> Self {
        let mut s = MarketSnapshot {
            n_cart_partitions,
            ..MarketSnapshot::default()
        };
        fn rows<'a, K: txn::Key, V: txn::Row>(
            view: &ReadView<'a>,
            table: txn::Table<K, V>,
        ) -> impl Iterator<Item = (K, V)> + 'a {
            view.iter(table).map(|(k, v)| (k.clone(), v.clone()))
        }
        copy(&mut s.products, rows(view, t.products));
        copy(&mut s.seller_update_seq, rows(view, t.seller_update_seq));
        let items = view
            .iter(t.stock_versions)
            .filter_map(|(k, _)| t.stock_item(view, k).map(|item| (*k, item)));
        copy(&mut s.stock_items, items);
        copy(&mut s.carts, rows(view, t.carts));
        let entries = view.index_entries(t.carts_by_product).into_iter();
        s.cart_index.extend(entries.map(|(p, c)| CartIndexKey {
            seller_id: p.seller_id,
            product_id: p.product_id,
            customer_id: *c,
        }));
        let p = view.partition();
        copy(
            &mut s.replicas,
            view.iter(t.product_replicas).map(|(k, v)| ((p, *k), *v)),
        );
        copy(&mut s.orders, rows(view, t.orders));
        copy(&mut s.order_items, rows(view, t.order_items));
        copy(&mut s.order_history, rows(view, t.order_history));
        copy(&mut s.payments, rows(view, t.order_payments));
        copy(&mut s.payment_cards, rows(view, t.order_payment_cards));
        copy(&mut s.shipments, rows(view, t.shipments));
        copy(&mut s.packages, rows(view, t.packages));
        copy(&mut s.open_deliveries, rows(view, t.open_deliveries));
        copy(&mut s.sellers, rows(view, t.sellers));
        copy(&mut s.order_entries, rows(view, t.order_entries));
        copy(&mut s.order_entries, rows(view, t.delivered_entries));
        copy(&mut s.seller_views, rows(view, t.seller_views));
        copy(&mut s.customers, rows(view, t.customers));
        copy(&mut s.customer_counters, rows(view, t.customer_counters));
        s
    }

    /// Combines the snapshots of disjoint partitions.
    pub fn merge(mut self, o: MarketSnapshot) -> MarketSnapshot {
        self.n_cart_partitions = self.n_cart_partitions.max(o.n_cart_partitions);
        self.products.extend(o.products);
        self.seller_update_seq.extend(o.seller_update_seq);
        self.stock_items.extend(o.stock_items);
        self.carts.extend(o.carts);
        self.cart_index.extend(o.cart_index);
        self.replicas.extend(o.replicas);
        self.orders.extend(o.orders);
        self.order_items.extend(o.order_items);
        self.order_history.extend(o.order_history);
        self.payments.extend(o.payments);
        self.payment_cards.extend(o.payment_cards);
        self.shipments.extend(o.shipments);
        self.packages.extend(o.packages);
        self.open_deliveries.extend(o.open_deliveries);
        self.sellers.extend(o.sellers);
        self.order_entries.extend(o.order_entries);
        self.seller_views.extend(o.seller_views);
        self.customers.extend(o.customers);
        self.customer_counters.extend(o.customer_counters);
        self
    }

    fn parts<'a, V>(
        map: &'a BTreeMap<OrderPartKey, V>,
        order: OrderKey,
    ) -> impl Iterator<Item = (u16, &'a V)> + 'a {
        map.range(OrderPartKey::range_of(order))
            .map(|(k, v)| (k.idx, v))
    }
}

/// What the run says must hold, beyond the snapshot itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Units every product's stock started with (no replenishment happens).
    pub initial_stock: i64,
    /// Committed checkouts since the load, if the caller counted them (each made one order).
    pub committed_checkouts: Option<u64>,
    /// Dashboards observed during the run whose entries and aggregates disagreed.
    pub dashboard_mismatches: u64,
}

/// A seller's dashboard: its in-progress entries and its aggregates, from one snapshot (serde:
/// it is the part of the named `dashboard` query).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dashboard {
    pub seller_id: SellerId,
    pub entries: Vec<(EntryKey, OrderEntry)>,
    /// The seller's aggregates (all shards summed).
    pub view: SellerView,
}

impl Dashboard {
    /// The aggregates recomputed from the entry list.
    pub fn entries_total(&self) -> SellerView {
        let mut v = SellerView::default();
        for (_, e) in &self.entries {
            v.apply(&e.totals, 1);
        }
        v
    }

    /// Whether the list and the aggregates agree (criterion 5).
    pub fn agrees(&self) -> bool {
        self.entries_total() == self.view
    }

    /// Combines the parts of one seller's dashboard read in different partitions.
    pub fn merge(mut self, o: Dashboard) -> Dashboard {
        self.entries.extend(o.entries);
        self.view = self.view.merge(&o.view);
        self
    }

    /// The dashboard of `seller_id` from the parts read in each seller partition.
    pub fn from_parts(seller_id: SellerId, parts: impl IntoIterator<Item = Dashboard>) -> Self {
        let parts: Vec<Dashboard> = parts.into_iter().collect();
        let view = parts
            .iter()
            .fold(SellerView::default(), |acc, p| acc.merge(&p.view));
        let entries = merge_in_key_order(&parts).unwrap_or_else(|| {
            // Not parts as a partition reads them (each in key order): concatenated and
            // sorted, stably, so equal keys keep the parts' order.
            let mut all: Vec<_> = parts
                .iter()
                .flat_map(|p| p.entries.iter().copied())
                .collect();
            all.sort_by_key(|(k, _)| *k);
            all
        });
        Dashboard {
            seller_id,
            entries,
            view,
        }
    }
}

/// The entries of `parts`, each part in key order as one partition's key range is, merged
/// into one list in key order: each entry is taken from the part whose next key is the lowest
/// (the first such part on a tie, as a stable sort of the concatenated parts orders them), into
/// a list sized once — far fewer instructions than sorting the concatenation (with a seller's
/// ~350 open entries over 4 parts, a fifth of them). `None` if a part is not in key order.
fn merge_in_key_order(parts: &[Dashboard]) -> Option<Vec<(EntryKey, OrderEntry)>> {
    let mut entries = Vec::with_capacity(parts.iter().map(|p| p.entries.len()).sum());
    // The parts not yet used up: (next key, part, position of that entry), in part order.
    let mut heads: Vec<(EntryKey, usize, usize)> = parts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.entries.first().map(|(k, _)| (*k, i, 0)))
        .collect();
    while !heads.is_empty() {
        let mut lowest = 0;
        for (h, head) in heads.iter().enumerate().skip(1) {
            if head.0 < heads[lowest].0 {
                lowest = h;
            }
        }
        let (key, part, at) = heads[lowest];
        let part_entries = &parts[part].entries;
        entries.push(part_entries[at]);
        match part_entries.get(at + 1) {
            Some((next, _)) if *next < key => return None,
            Some((next, _)) => heads[lowest] = (*next, part, at + 1),
            None => {
                heads.remove(lowest);
            }
        }
    }
    Some(entries)
}

/// Whether an order's payment was approved, judged by the order's own status.
fn order_confirmed(status: OrderStatus) -> bool {
    matches!(
        status,
        OrderStatus::ReadyForShipment | OrderStatus::InTransit | OrderStatus::Delivered
    )
}

/// Most violations of one criterion that [`check_detailed`] describes.
pub const EXAMPLES_MAX: usize = 5;

/// The violations of one criterion: how many, and the first few described (an order's or a
/// row's key and what is wrong with it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub count: u64,
    pub examples: Vec<String>,
}

impl Found {
    /// Counts one violation if `violated`, described while fewer than `EXAMPLES_MAX` are.
    fn note(&mut self, violated: bool, what: impl FnOnce() -> String) {
        if violated {
            self.count += 1;
            if self.examples.len() < EXAMPLES_MAX {
                self.examples.push(what());
            }
        }
    }

    /// Counts `n` violations, described by the first of `what`.
    fn add(&mut self, n: u64, what: impl Iterator<Item = String>) {
        self.count += n;
        let room = EXAMPLES_MAX.saturating_sub(self.examples.len());
        self.examples
            .extend(what.take(room.min(usize::try_from(n).unwrap_or(usize::MAX))));
    }
}

/// Runs one criterion into a fresh [`Found`].
fn found(criterion: impl FnOnce(&mut Found)) -> Found {
    let mut f = Found::default();
    criterion(&mut f);
    f
}

/// Counts violations per criterion (every criterion present, 0 when it holds).
pub fn check(s: &MarketSnapshot, expected: &Expected) -> Violations {
    check_detailed(s, expected)
        .into_iter()
        .map(|(criterion, f)| (criterion, f.count))
        .collect()
}

/// [`check`], with the first few violations of each criterion described.
pub fn check_detailed(s: &MarketSnapshot, expected: &Expected) -> BTreeMap<&'static str, Found> {
    let mut v = BTreeMap::new();
    v.insert(criteria::CHECKOUT_ATOMIC, found(|f| checkout_atomic(s, f)));
    v.insert(
        criteria::STOCK,
        found(|f| stock(s, expected.initial_stock, f)),
    );
    v.insert(
        criteria::UPDATES_REACH_STOCK_AND_CART,
        found(|f| updates_reach(s, f)),
    );
    v.insert(
        criteria::CAUSAL_REPLICATION,
        found(|f| causal_replication(s, f)),
    );
    let mut dashboard = found(|f| dashboards(s, f));
    let torn = expected.dashboard_mismatches;
    dashboard.add(
        torn,
        std::iter::once(format!("{torn} torn dashboards seen during the run")),
    );
    v.insert(criteria::DASHBOARD, dashboard);
    v.insert(criteria::TOTALS, found(|f| totals(s, f)));
    v.insert(criteria::MONEY, found(|f| money(s, f)));
    let orders = s.orders.len() as u64;
    let lost_or_phantom = expected
        .committed_checkouts
        .map_or(0, |n| orders.abs_diff(n));
    let mut matching = Found::default();
    matching.add(
        lost_or_phantom,
        expected
            .committed_checkouts
            .map(|n| format!("{orders} orders after {n} committed checkouts"))
            .into_iter(),
    );
    v.insert(criteria::ORDERS_MATCH_CHECKOUTS, matching);
    v
}

/// Each seller's entries of each order: `(customer, order)` → `(seller, delivered, entry)`.
fn entries_by_order(s: &MarketSnapshot) -> BTreeMap<OrderKey, Vec<(SellerId, bool, &OrderEntry)>> {
    let mut by: BTreeMap<OrderKey, Vec<(SellerId, bool, &OrderEntry)>> = BTreeMap::new();
    for (k, e) in &s.order_entries {
        let order = OrderKey {
            customer_id: k.customer_id,
            order_id: k.order_id,
        };
        by.entry(order)
            .or_default()
            .push((k.seller_id, k.delivered, e));
    }
    by
}

fn open_by_order(s: &MarketSnapshot) -> BTreeMap<OrderKey, Vec<(SellerId, u16)>> {
    let mut by: BTreeMap<OrderKey, Vec<(SellerId, u16)>> = BTreeMap::new();
    for (k, package_id) in &s.open_deliveries {
        let order = OrderKey {
            customer_id: k.customer_id,
            order_id: k.order_id,
        };
        by.entry(order)
            .or_default()
            .push((k.seller_id, *package_id));
    }
    by
}

/// Criterion 1: one violation per order (or orphaned order key) whose pieces do not add up.
fn checkout_atomic(s: &MarketSnapshot, f: &mut Found) {
    let entries = entries_by_order(s);
    let open = open_by_order(s);
    for (key, order) in &s.orders {
        let items: Vec<&OrderItem> = MarketSnapshot::parts(&s.order_items, *key)
            .map(|(_, i)| i)
            .collect();
        let payments: Vec<&Payment> = MarketSnapshot::parts(&s.payments, *key)
            .map(|(_, p)| p)
            .collect();
        let packages: Vec<(u16, &Package)> = MarketSnapshot::parts(&s.packages, *key).collect();
        let shipment = s.shipments.get(key);
        let order_entries = entries.get(key).map_or(&[][..], |e| &e[..]);
        let order_open = open.get(key).map_or(&[][..], |o| &o[..]);
        let mut ok = !items.is_empty()
            && items.len() == order.totals.count_items as usize
            && !payments.is_empty();
        if order_confirmed(order.status) {
            let approved = payments
                .iter()
                .filter(|p| p.status == PaymentStatus::Approved)
                .count();
            let mut item_sellers: Vec<SellerId> = items.iter().map(|i| i.seller_id).collect();
            item_sellers.dedup();
            let mut package_sellers: Vec<SellerId> =
                packages.iter().map(|(_, p)| p.seller_id).collect();
            package_sellers.sort_unstable();
            ok &= approved == 1
                && shipment.is_some_and(|sh| sh.package_count as usize == packages.len())
                && package_sellers == item_sellers
                && order_entries.len() == packages.len()
                && order_open.len()
                    == packages
                        .iter()
                        .filter(|(_, p)| p.status == PackageStatus::Shipped)
                        .count();
            for (package_id, p) in &packages {
                let mut seller_totals = Totals::default();
                for i in items.iter().filter(|i| i.seller_id == p.seller_id) {
                    seller_totals.add(i);
                }
                let delivered = p.status == PackageStatus::Delivered;
                let entry_ok = order_entries.iter().any(|(seller, d, e)| {
                    *seller == p.seller_id
                        && *d == delivered
                        && e.package_id == *package_id
                        && e.totals == seller_totals
                });
                let queued = order_open
                    .iter()
                    .any(|(seller, id)| *seller == p.seller_id && id == package_id);
                ok &= entry_ok && queued != delivered;
            }
        } else if order.status == OrderStatus::PaymentFailed {
            ok &= payments.iter().all(|p| p.status == PaymentStatus::Failed)
                && shipment.is_none()
                && packages.is_empty()
                && order_entries.is_empty()
                && order_open.is_empty();
        } else {
            // Invoiced or PaymentProcessed at rest: the chain stopped halfway.
            ok = false;
        }
        f.note(!ok, || {
            format!(
                "order {key:?} ({:?}): its pieces do not add up",
                order.status
            )
        });
    }
    // Pieces of orders that do not exist.
    let mut orphans: BTreeSet<OrderKey> = BTreeSet::new();
    let mut orphan = |k: OrderKey| {
        if !s.orders.contains_key(&k) {
            orphans.insert(k);
        }
    };
    s.order_items.keys().for_each(|k| orphan(k.order()));
    s.order_history.keys().for_each(|k| orphan(k.order()));
    s.payments.keys().for_each(|k| orphan(k.order()));
    s.payment_cards.keys().for_each(|k| orphan(k.order()));
    s.shipments.keys().for_each(|k| orphan(*k));
    s.packages.keys().for_each(|k| orphan(k.order()));
    entries.keys().for_each(|k| orphan(*k));
    open.keys().for_each(|k| orphan(*k));
    for k in orphans {
        f.note(true, || {
            format!("pieces of order {k:?}, which does not exist")
        });
    }
}

/// Criterion 2: one violation per stock item whose reservation is negative or dangling, or
/// whose available units differ from the initial stock minus the units of confirmed orders
/// (an oversell or a lost sale); one per order item reserved at a version that never existed.
fn stock(s: &MarketSnapshot, initial_stock: i64, f: &mut Found) {
    // product → (units sold, order items) over confirmed orders.
    let mut sold: BTreeMap<ProductKey, (i64, u64)> = BTreeMap::new();
    for (k, item) in &s.order_items {
        let key = ProductKey {
            seller_id: item.seller_id,
            product_id: item.product_id,
        };
        let unknown_version = s
            .products
            .get(&key)
            .is_none_or(|p| item.version > p.version);
        f.note(unknown_version, || {
            format!(
                "order item {k:?} reserved version {} of {key:?}, which never existed",
                item.version
            )
        });
        if s.orders
            .get(&k.order())
            .is_some_and(|o| order_confirmed(o.status))
        {
            let e = sold.entry(key).or_default();
            e.0 += i64::from(item.quantity);
            e.1 += 1;
        }
    }
    for key in s.products.keys() {
        let (units, count) = sold.get(key).copied().unwrap_or_default();
        let ok = s.stock_items.get(key).is_some_and(|st| {
            st.qty_reserved == 0
                && st.qty_available >= st.qty_reserved
                && st.qty_available == initial_stock - units
                && st.order_count == count
                && st.ytd == units
        });
        f.note(!ok, || {
            format!(
                "stock of {key:?} is {:?}; {units} units sold in {count} confirmed order \
                 items from {initial_stock}",
                s.stock_items.get(key)
            )
        });
    }
    for k in s.stock_items.keys() {
        f.note(!s.products.contains_key(k), || {
            format!("stock item {k:?} of no product")
        });
    }
}

/// Criterion 3: one violation per stock item, replica or cart item that does not show its
/// product's committed version (and price), and per cart item missing from or phantom in the
/// index that carries updates to carts.
fn updates_reach(s: &MarketSnapshot, f: &mut Found) {
    for (key, p) in &s.products {
        let stale = s
            .stock_items
            .get(key)
            .is_none_or(|st| st.version != p.version);
        f.note(stale, || {
            format!("the stock of {key:?} does not show version {}", p.version)
        });
        for part in 0..s.n_cart_partitions {
            let ok = s.replicas.get(&(part, *key)).is_some_and(|r| {
                r.version == p.version && r.price == p.price && r.freight_value == p.freight_value
            });
            f.note(!ok, || {
                format!(
                    "the replica of {key:?} in cart partition {part} does not show version {}",
                    p.version
                )
            });
        }
    }
    let mut indexed = 0usize;
    for (customer_id, cart) in &s.carts {
        for item in &cart.items {
            let key = ProductKey {
                seller_id: item.seller_id,
                product_id: item.product_id,
            };
            let ok = s.products.get(&key).is_some_and(|p| {
                item.version == p.version
                    && item.unit_price == p.price
                    && item.freight_value == p.freight_value
            });
            let idx = CartIndexKey {
                seller_id: item.seller_id,
                product_id: item.product_id,
                customer_id: *customer_id,
            };
            let in_index = s.cart_index.contains(&idx);
            indexed += usize::from(in_index);
            f.note(!ok, || {
                format!("customer {customer_id}'s cart item of {key:?} is not the product's")
            });
            f.note(!in_index, || {
                format!("customer {customer_id}'s cart item of {key:?} is not in the index")
            });
        }
    }
    // Index entries pointing at no cart item.
    let phantom = s.cart_index.iter().filter(|i| {
        s.carts.get(&i.customer_id).is_none_or(|cart| {
            !cart
                .items
                .iter()
                .any(|it| it.seller_id == i.seller_id && it.product_id == i.product_id)
        })
    });
    f.add(
        (s.cart_index.len() - indexed) as u64,
        phantom.map(|i| format!("cart index entry {i:?} points at no cart item")),
    );
}

/// Criterion 4: in each cart partition, for each seller, the replica's newest update of the
/// seller (by the seller's update sequence) must not be newer than a committed update of
/// another of the seller's products that the replica lacks. One violation per lacking replica.
fn causal_replication(s: &MarketSnapshot, f: &mut Found) {
    for part in 0..s.n_cart_partitions {
        let mut newest: BTreeMap<SellerId, u64> = BTreeMap::new();
        for ((p, key), r) in &s.replicas {
            if *p == part {
                let m = newest.entry(key.seller_id).or_default();
                *m = (*m).max(r.update_seq);
            }
        }
        for (key, product) in &s.products {
            let seen = newest.get(&key.seller_id).copied().unwrap_or(0);
            let replica_seq = s.replicas.get(&(part, *key)).map_or(0, |r| r.update_seq);
            f.note(
                product.update_seq <= seen && replica_seq < product.update_seq,
                || {
                    format!(
                        "cart partition {part} shows seller update {seen} but lacks update {} \
                         of {key:?}",
                        product.update_seq
                    )
                },
            );
        }
    }
}

/// Criterion 5: one violation per seller whose in-progress entries and aggregates disagree.
fn dashboards(s: &MarketSnapshot, f: &mut Found) {
    let mut from_entries: BTreeMap<SellerId, SellerView> = BTreeMap::new();
    for (k, e) in &s.order_entries {
        if !k.delivered {
            from_entries
                .entry(k.seller_id)
                .or_default()
                .apply(&e.totals, 1);
        }
    }
    let mut from_views: BTreeMap<SellerId, SellerView> = BTreeMap::new();
    for (k, view) in &s.seller_views {
        let v = from_views.entry(k.seller_id).or_default();
        *v = v.merge(view);
    }
    let sellers: BTreeSet<SellerId> = from_entries
        .keys()
        .chain(from_views.keys())
        .copied()
        .collect();
    for seller in sellers {
        let entries = from_entries.get(&seller).copied().unwrap_or_default();
        let views = from_views.get(&seller).copied().unwrap_or_default();
        f.note(entries != views, || {
            format!("seller {seller}: entries sum to {entries:?}, aggregates are {views:?}")
        });
    }
}

/// Criterion 6: one violation per order whose totals differ from its items or whose status
/// does not follow its shipment, per shipment whose counts or status do not follow its
/// packages, and per customer whose counters differ from its payments and deliveries.
fn totals(s: &MarketSnapshot, f: &mut Found) {
    // customer → (approved, failed, delivered packages)
    let mut per_customer: BTreeMap<CustomerId, (i64, i64, i64)> = BTreeMap::new();
    for (key, order) in &s.orders {
        let mut t = Totals::default();
        for (_, item) in MarketSnapshot::parts(&s.order_items, *key) {
            t.add(item);
        }
        f.note(t != order.totals, || {
            format!(
                "order {key:?}: totals {:?}, its items sum to {t:?}",
                order.totals
            )
        });
        let c = per_customer.entry(key.customer_id).or_default();
        if order_confirmed(order.status) {
            c.0 += 1;
        } else if order.status == OrderStatus::PaymentFailed {
            c.1 += 1;
        }
        if let Some(sh) = s.shipments.get(key) {
            let delivered = MarketSnapshot::parts(&s.packages, *key)
                .filter(|(_, p)| p.status == PackageStatus::Delivered)
                .count() as u16;
            c.2 += i64::from(delivered);
            let (want_shipment, want_order) = if delivered == 0 {
                (ShipmentStatus::Approved, OrderStatus::ReadyForShipment)
            } else if delivered < sh.package_count {
                (ShipmentStatus::DeliveryInProgress, OrderStatus::InTransit)
            } else {
                (ShipmentStatus::Concluded, OrderStatus::Delivered)
            };
            f.note(
                sh.delivered_count != delivered || sh.status != want_shipment,
                || format!("shipment {key:?} is {sh:?} with {delivered} packages delivered"),
            );
            f.note(order.status != want_order, || {
                format!(
                    "order {key:?} is {:?}, its shipment says {want_order:?}",
                    order.status
                )
            });
        }
    }
    for (id, (approved, failed, delivered)) in &per_customer {
        let ok = s.customer_counters.get(id).is_some_and(|c| {
            c.success_payment_count == *approved
                && c.failed_payment_count == *failed
                && c.delivery_count == *delivered
        });
        f.note(!ok, || {
            format!(
                "customer {id}'s counters are {:?}; its orders give {approved} approved, \
                 {failed} failed, {delivered} delivered",
                s.customer_counters.get(id)
            )
        });
    }
    // Customers with counters but no orders at all.
    for (id, c) in &s.customer_counters {
        let counted = (c.success_payment_count | c.failed_payment_count | c.delivery_count) != 0;
        f.note(!per_customer.contains_key(id) && counted, || {
            format!("customer {id} has counters {c:?} but no order")
        });
    }
}

/// Criterion 7: one violation per order whose approved payments differ from its invoice (0 for
/// an order whose payment failed), and per approved payment of an order that does not exist.
fn money(s: &MarketSnapshot, f: &mut Found) {
    let mut paid: BTreeMap<OrderKey, Money> = BTreeMap::new();
    for (k, p) in &s.payments {
        if p.status == PaymentStatus::Approved {
            *paid.entry(k.order()).or_default() += p.value;
        }
    }
    let (mut total_paid, mut total_invoiced) = (0i128, 0i128);
    for (key, order) in &s.orders {
        let due = if order_confirmed(order.status) {
            order.totals.total_invoice
        } else {
            0
        };
        let got = paid.get(key).copied().unwrap_or(0);
        total_paid += i128::from(got);
        total_invoiced += i128::from(due);
        f.note(got != due, || {
            format!("order {key:?}: {got} approved, {due} due")
        });
    }
    for (k, value) in &paid {
        f.note(!s.orders.contains_key(k), || {
            format!("{value} approved for order {k:?}, which does not exist")
        });
    }
    // The criterion as stated is about the sums; every way they can differ is already counted
    // per order above, but say so explicitly if the totals disagree anyway.
    f.note(f.count == 0 && total_paid != total_invoiced, || {
        format!("{total_paid} approved in all, {total_invoiced} invoiced")
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOCK0: i64 = 100;

    fn product(price: Money, version: Version, update_seq: u64) -> Product {
        Product {
            name: "p".into(),
            sku: "s".into(),
            category: "c".into(),
            description: "d".into(),
            price,
            freight_value: 5,
            status: ProductStatus::Approved,
            version,
            update_seq,
        }
    }

    fn pk(seller_id: SellerId, product_id: ProductId) -> ProductKey {
        ProductKey {
            seller_id,
            product_id,
        }
    }

    /// A consistent state with two cart partitions, sellers 1 and 2 (products 10, 11 and 20),
    /// one cart, a confirmed order over both sellers with seller 2's package delivered, and an
    /// order whose payment failed.
    fn consistent() -> MarketSnapshot {
        let mut s = MarketSnapshot {
            n_cart_partitions: 2,
            ..Default::default()
        };
        s.products.insert(pk(1, 10), product(1000, 0, 0));
        s.products.insert(pk(1, 11), product(500, 1, 2));
        s.products.insert(pk(2, 20), product(200, 0, 1));
        s.seller_update_seq.insert(1, 2);
        s.seller_update_seq.insert(2, 1);
        for (k, p) in s.products.clone() {
            for part in 0..2 {
                let r = Replica {
                    price: p.price,
                    freight_value: p.freight_value,
                    version: p.version,
                    update_seq: p.update_seq,
                };
                s.replicas.insert((part, k), r);
            }
        }
        let order = OrderKey {
            customer_id: 7,
            order_id: 99,
        };
        let item = |seller_id, product_id, unit_price, quantity, voucher, version| {
            OrderItem::from_cart(&CartItem {
                seller_id,
                product_id,
                unit_price,
                freight_value: 5,
                quantity,
                voucher,
                version,
            })
        };
        let items = [
            item(1, 10, 1000, 2, 200, 0),
            item(1, 11, 500, 1, 0, 1),
            item(2, 20, 200, 3, 0, 0),
        ];
        let mut totals = Totals::default();
        for (i, it) in items.iter().enumerate() {
            totals.add(it);
            s.order_items
                .insert(OrderPartKey::new(order, i as u16 + 1), *it);
        }
        s.orders.insert(
            order,
            Order {
                status: OrderStatus::InTransit,
                created_ms: 1,
                updated_ms: 2,
                totals,
                history_len: 4,
            },
        );
        s.payments.insert(
            OrderPartKey::new(order, 1),
            Payment {
                payment_type: PaymentType::Boleto,
                installments: 1,
                value: totals.total_invoice,
                status: PaymentStatus::Approved,
                created_ms: 1,
            },
        );
        s.shipments.insert(
            order,
            Shipment {
                package_count: 2,
                delivered_count: 1,
                total_freight: totals.total_freight,
                status: ShipmentStatus::DeliveryInProgress,
                created_ms: 1,
            },
        );
        let package = |seller_id, status| Package {
            seller_id,
            n_items: 1,
            quantity: 1,
            freight_value: 5,
            shipping_ms: 1,
            delivery_ms: None,
            status,
        };
        s.packages.insert(
            OrderPartKey::new(order, 1),
            package(1, PackageStatus::Shipped),
        );
        s.packages.insert(
            OrderPartKey::new(order, 2),
            package(2, PackageStatus::Delivered),
        );
        s.open_deliveries
            .insert(OpenDeliveryKey::new(1, 0, 1, order), 1);
        let mut seller_totals = [Totals::default(), Totals::default()];
        seller_totals[0].add(&items[0]);
        seller_totals[0].add(&items[1]);
        seller_totals[1].add(&items[2]);
        for (i, (seller_id, delivered)) in [(1, false), (2, true)].into_iter().enumerate() {
            let key = EntryKey {
                delivered,
                ..EntryKey::open(seller_id, order)
            };
            let entry = OrderEntry {
                package_id: i as u16 + 1,
                totals: seller_totals[i],
                order_status: OrderStatus::InTransit,
                delivery_status: if delivered {
                    DeliveryStatus::Delivered
                } else {
                    DeliveryStatus::Shipped
                },
            };
            s.order_entries.insert(key, entry);
        }
        let mut view = SellerView::default();
        view.apply(&seller_totals[0], 1);
        s.seller_views.insert(
            SellerViewKey {
                seller_id: 1,
                shard: seller_shard(7, 99),
            },
            view,
        );
        // Seller 2's shard went to zero when its entry was delivered.
        s.seller_views.insert(
            SellerViewKey {
                seller_id: 2,
                shard: seller_shard(7, 99),
            },
            SellerView::default(),
        );
        // A failed order of customer 8: items and a failed payment, nothing else.
        let failed = OrderKey {
            customer_id: 8,
            order_id: 100,
        };
        let it = item(2, 20, 200, 1, 0, 0);
        let mut t = Totals::default();
        t.add(&it);
        s.order_items.insert(OrderPartKey::new(failed, 1), it);
        s.orders.insert(
            failed,
            Order {
                status: OrderStatus::PaymentFailed,
                created_ms: 1,
                updated_ms: 1,
                totals: t,
                history_len: 2,
            },
        );
        s.payments.insert(
            OrderPartKey::new(failed, 1),
            Payment {
                payment_type: PaymentType::CreditCard,
                installments: 3,
                value: t.total_invoice,
                status: PaymentStatus::Failed,
                created_ms: 1,
            },
        );
        let counters = |ok, failed, delivered| CustomerCounters {
            success_payment_count: ok,
            failed_payment_count: failed,
            delivery_count: delivered,
        };
        for (id, (ok, failed, delivered)) in [(7, (1, 0, 1)), (8, (0, 1, 0)), (9, (0, 0, 0))] {
            let customer = Customer {
                name: "c".into(),
                card_last4: 1,
            };
            s.customers.insert(id, customer);
            s.customer_counters
                .insert(id, counters(ok, failed, delivered));
        }
        // Stock: the confirmed order sold 2 of 10, 1 of 11, 3 of 20.
        for (key, units, count) in [(pk(1, 10), 2, 1), (pk(1, 11), 1, 1), (pk(2, 20), 3, 1)] {
            let st = StockItem {
                qty_available: STOCK0 - units,
                qty_reserved: 0,
                order_count: count,
                ytd: units,
                version: s.products[&key].version,
            };
            s.stock_items.insert(key, st);
        }
        // Customer 9 has product 10 in the cart.
        s.carts.insert(
            9,
            Cart {
                items: vec![CartItem {
                    seller_id: 1,
                    product_id: 10,
                    unit_price: 1000,
                    freight_value: 5,
                    quantity: 1,
                    voucher: 0,
                    version: 0,
                }],
            },
        );
        s.cart_index.insert(CartIndexKey {
            seller_id: 1,
            product_id: 10,
            customer_id: 9,
        });
        s
    }

    fn expected() -> Expected {
        Expected {
            initial_stock: STOCK0,
            committed_checkouts: Some(2),
            dashboard_mismatches: 0,
        }
    }

    /// Checks `s` and asserts that exactly the criteria in `broken` report violations.
    fn assert_only(s: &MarketSnapshot, broken: &[&str]) -> Violations {
        let v = check(s, &expected());
        assert_eq!(v.len(), criteria::ALL.len(), "every criterion is reported");
        for c in criteria::ALL {
            assert_eq!(
                v[c] > 0,
                broken.contains(&c),
                "criterion {c}: {v:?} (expected only {broken:?} to fail)"
            );
        }
        v
    }

    #[test]
    fn a_consistent_state_passes_every_criterion() {
        // Goal: the hand-built consistent state has no violation, so each test below fails
        // only because of the one thing it breaks.
        assert_only(&consistent(), &[]);
    }

    #[test]
    fn criterion_1_catches_half_done_checkouts() {
        // Goal: an order missing its payment, its shipment or a seller entry, and pieces of an
        // order that does not exist, each count.
        let mut s = consistent();
        s.payments.clear();
        let v = check(&s, &expected());
        assert!(v[criteria::CHECKOUT_ATOMIC] >= 1, "{v:?}");

        let mut s = consistent();
        let order = OrderKey {
            customer_id: 7,
            order_id: 99,
        };
        s.shipments.remove(&order);
        assert!(check(&s, &expected())[criteria::CHECKOUT_ATOMIC] >= 1);

        let mut s = consistent();
        s.order_entries.retain(|k, _| k.seller_id != 1);
        assert!(check(&s, &expected())[criteria::CHECKOUT_ATOMIC] >= 1);

        let mut s = consistent();
        s.order_items.insert(
            OrderPartKey::new(
                OrderKey {
                    customer_id: 1,
                    order_id: 5,
                },
                1,
            ),
            s.order_items.values().next().copied().unwrap(),
        );
        assert_eq!(check(&s, &expected())[criteria::CHECKOUT_ATOMIC], 1);

        // A payment-failed order that still got a shipment.
        let mut s = consistent();
        let failed = OrderKey {
            customer_id: 8,
            order_id: 100,
        };
        let sh = s.shipments[&order];
        s.shipments.insert(failed, sh);
        assert_eq!(check(&s, &expected())[criteria::CHECKOUT_ATOMIC], 1);
    }

    #[test]
    fn criterion_2_catches_oversell_and_dangling_reservations() {
        // Goal: a unit sold twice (available not reduced), a negative or dangling reservation,
        // and an item reserved at a version that never existed are each counted.
        let mut s = consistent();
        s.stock_items.get_mut(&pk(1, 10)).unwrap().qty_available += 2;
        assert_only(&s, &[criteria::STOCK]);

        let mut s = consistent();
        s.stock_items.get_mut(&pk(2, 20)).unwrap().qty_reserved = -1;
        assert_eq!(assert_only(&s, &[criteria::STOCK])[criteria::STOCK], 1);

        let mut s = consistent();
        s.stock_items.get_mut(&pk(2, 20)).unwrap().qty_reserved = 4;
        assert_only(&s, &[criteria::STOCK]);

        let mut s = consistent();
        let (k, _) = s
            .order_items
            .iter()
            .find(|(_, i)| i.product_id == 20)
            .unwrap();
        let k = *k;
        s.order_items.get_mut(&k).unwrap().version = 5;
        assert!(check(&s, &expected())[criteria::STOCK] >= 1);
    }

    #[test]
    fn criterion_3_catches_updates_that_did_not_reach_stock_or_carts() {
        // Goal: a stock item, a replica or a cart item left on an old version or price counts.
        let mut s = consistent();
        s.stock_items.get_mut(&pk(1, 11)).unwrap().version = 0;
        assert_only(&s, &[criteria::UPDATES_REACH_STOCK_AND_CART]);

        let mut s = consistent();
        s.replicas.get_mut(&(1, pk(2, 20))).unwrap().price = 1;
        assert_only(&s, &[criteria::UPDATES_REACH_STOCK_AND_CART]);

        let mut s = consistent();
        s.carts.get_mut(&9).unwrap().items[0].unit_price = 999;
        assert_eq!(
            assert_only(&s, &[criteria::UPDATES_REACH_STOCK_AND_CART])
                [criteria::UPDATES_REACH_STOCK_AND_CART],
            1
        );

        let mut s = consistent();
        s.cart_index.clear();
        assert_only(&s, &[criteria::UPDATES_REACH_STOCK_AND_CART]);
    }

    #[test]
    fn criterion_4_catches_a_replica_that_skipped_an_earlier_update() {
        // Goal: a replica showing seller 1's update #2 (product 11) but missing update #1 of
        // product 10 is a causality violation; lagging uniformly is not.
        let mut s = consistent();
        s.products.get_mut(&pk(1, 10)).unwrap().update_seq = 1;
        s.replicas.get_mut(&(0, pk(1, 10))).unwrap().update_seq = 1;
        s.replicas.get_mut(&(1, pk(1, 10))).unwrap().update_seq = 1;
        assert_only(&s, &[]);
        // Partition 1 has update 2 of product 11 but not update 1 of product 10.
        s.replicas.get_mut(&(1, pk(1, 10))).unwrap().update_seq = 0;
        let v = check(&s, &expected());
        assert_eq!(v[criteria::CAUSAL_REPLICATION], 1, "{v:?}");

        // Missing both updates (a lagging but causal replica) breaks criterion 3 only.
        let mut s = consistent();
        s.replicas.get_mut(&(1, pk(1, 11))).unwrap().update_seq = 0;
        s.replicas.get_mut(&(1, pk(1, 11))).unwrap().version = 0;
        assert_only(&s, &[criteria::UPDATES_REACH_STOCK_AND_CART]);
    }

    #[test]
    fn criterion_5_catches_aggregates_that_disagree_with_entries() {
        // Goal: an aggregate that misses an entry counts, and so do mismatches seen at run time.
        let mut s = consistent();
        for v in s.seller_views.values_mut() {
            v.count_orders += 1;
        }
        let v = check(&s, &expected());
        assert_eq!(v[criteria::DASHBOARD], 2, "{v:?}");

        let s = consistent();
        let v = check(
            &s,
            &Expected {
                dashboard_mismatches: 3,
                ..expected()
            },
        );
        assert_eq!(v[criteria::DASHBOARD], 3);

        let d = Dashboard {
            seller_id: 1,
            entries: s
                .order_entries
                .iter()
                .filter(|(k, _)| k.seller_id == 1 && !k.delivered)
                .map(|(k, e)| (*k, *e))
                .collect(),
            view: s
                .seller_views
                .values()
                .fold(SellerView::default(), |a, v| a.merge(v)),
        };
        assert!(d.agrees());
        let torn = Dashboard {
            entries: Vec::new(),
            ..d
        };
        assert!(!torn.agrees());
    }

    #[test]
    fn a_dashboard_from_parts_lists_the_entries_in_key_order() {
        // Goal: the parts of a dashboard (each a partition's key range, in key order, of
        // different lengths, one empty) merge into exactly what sorting their concatenation
        // gives, with the aggregates summed; parts out of key order are sorted all the same.
        let entry = |seller_id, customer_id, order_id, package_id| {
            let key = EntryKey {
                seller_id,
                delivered: false,
                customer_id,
                order_id,
            };
            let entry = OrderEntry {
                package_id,
                totals: Totals {
                    count_items: 1,
                    total_items: i64::from(package_id),
                    ..Totals::default()
                },
                order_status: OrderStatus::ReadyForShipment,
                delivery_status: DeliveryStatus::Shipped,
            };
            (key, entry)
        };
        let part = |entries: Vec<(EntryKey, OrderEntry)>| {
            let mut view = SellerView::default();
            for (_, e) in &entries {
                view.apply(&e.totals, 1);
            }
            Dashboard {
                seller_id: 3,
                entries,
                view,
            }
        };
        let parts = vec![
            part(vec![
                entry(3, 1, 5, 1),
                entry(3, 4, 2, 2),
                entry(3, 9, 1, 3),
            ]),
            part(Vec::new()),
            part(vec![
                entry(3, 0, 7, 4),
                entry(3, 4, 1, 5),
                entry(3, 4, 3, 6),
            ]),
            part(vec![entry(3, 2, 2, 7), entry(3, 9, 0, 8)]),
            part(vec![entry(3, 10, 0, 9)]),
        ];
        let mut all: Vec<_> = parts.iter().flat_map(|p| p.entries.clone()).collect();
        all.sort_by_key(|(k, _)| *k);
        let d = Dashboard::from_parts(3, parts.clone());
        assert_eq!(d.entries, all);
        assert_eq!(d.seller_id, 3);
        assert!(d.agrees(), "the aggregates are the parts' summed");
        // A part out of key order (not as a partition reads it): sorted anyway.
        let mut shuffled = parts;
        shuffled[0].entries.reverse();
        assert_eq!(Dashboard::from_parts(3, shuffled).entries, all);
    }

    #[test]
    fn criterion_6_catches_wrong_totals_and_counters() {
        // Goal: an order total off by a cent, a customer counter off by one and a shipment
        // status that does not follow its packages each count.
        let order = OrderKey {
            customer_id: 7,
            order_id: 99,
        };
        let mut s = consistent();
        s.orders.get_mut(&order).unwrap().totals.total_freight += 1;
        let v = check(&s, &expected());
        assert!(v[criteria::TOTALS] >= 1, "{v:?}");

        let mut s = consistent();
        s.customer_counters
            .get_mut(&8)
            .unwrap()
            .failed_payment_count = 2;
        assert_eq!(assert_only(&s, &[criteria::TOTALS])[criteria::TOTALS], 1);

        let mut s = consistent();
        s.customer_counters.get_mut(&7).unwrap().delivery_count = 0;
        assert_only(&s, &[criteria::TOTALS]);

        let mut s = consistent();
        s.shipments.get_mut(&order).unwrap().status = ShipmentStatus::Concluded;
        assert_only(&s, &[criteria::TOTALS]);

        let mut s = consistent();
        s.customer_counters.get_mut(&9).unwrap().delivery_count = 1;
        assert_only(&s, &[criteria::TOTALS]);
    }

    #[test]
    fn criterion_7_catches_money_paid_but_not_invoiced() {
        // Goal: a payment that differs from its invoice, an approved payment of a failed order
        // and a payment without an order are each counted.
        let mut s = consistent();
        for p in s.payments.values_mut() {
            if p.status == PaymentStatus::Approved {
                p.value += 1;
            }
        }
        assert_eq!(assert_only(&s, &[criteria::MONEY])[criteria::MONEY], 1);

        let mut s = consistent();
        for p in s.payments.values_mut() {
            p.status = PaymentStatus::Approved;
        }
        assert!(check(&s, &expected())[criteria::MONEY] >= 1);

        let mut s = consistent();
        let p = *s.payments.values().next().unwrap();
        s.payments.insert(
            OrderPartKey::new(
                OrderKey {
                    customer_id: 3,
                    order_id: 3,
                },
                1,
            ),
            Payment {
                status: PaymentStatus::Approved,
                ..p
            },
        );
        let v = check(&s, &expected());
        assert_eq!(v[criteria::MONEY], 1, "{v:?}");
    }

    #[test]
    fn the_detailed_check_counts_like_check_and_describes_a_few_violations() {
        // Goal: `check_detailed` gives the same counts as `check`, names the order whose
        // pieces do not add up, and describes at most `EXAMPLES_MAX` violations per criterion.
        let mut s = consistent();
        s.payments.clear();
        for id in 0..20 {
            let dangling = StockItem {
                qty_available: 1,
                qty_reserved: 0,
                order_count: 0,
                ytd: 0,
                version: 0,
            };
            s.stock_items.insert(pk(9, id), dangling);
        }
        let detailed = check_detailed(&s, &expected());
        let counts: Violations = detailed.iter().map(|(c, f)| (*c, f.count)).collect();
        assert_eq!(counts, check(&s, &expected()));
        let atomic = &detailed[criteria::CHECKOUT_ATOMIC];
        assert!(atomic.count >= 1, "{atomic:?}");
        assert!(
            atomic.examples.iter().any(|e| e.contains("order_id: 99")),
            "{atomic:?}"
        );
        let stock = &detailed[criteria::STOCK];
        assert!(stock.count >= 20, "{stock:?}");
        assert_eq!(stock.examples.len(), EXAMPLES_MAX, "{stock:?}");
    }

    #[test]
    fn lost_or_phantom_orders_are_counted_against_committed_checkouts() {
        // Goal: fewer or more orders than committed checkouts count the difference.
        let s = consistent();
        let v = check(
            &s,
            &Expected {
                committed_checkouts: Some(5),
                ..expected()
            },
        );
        assert_eq!(v[criteria::ORDERS_MATCH_CHECKOUTS], 3);
    }
}
