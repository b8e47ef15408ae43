//! The marketplace's data model: ids, table keys (with the placement each key implies), rows,
//! the parts several services' events share, and outputs. Each service's own events live in its
//! file.
//!
//! # Placement
//!
//! By default `txn` places a row by hashing its whole key. Rows that a step must touch together
//! are placed by part of their key instead (`AppBuilder::place_by`); each such key names its
//! placement value with a `placement()` method, which is both what the table is placed by and
//! what events to those rows are routed by (`ServiceRef::partition_of(&key.placement())`), so
//! the two cannot drift apart.

use serde::{Deserialize, Serialize};

pub type CustomerId = u32;
pub type SellerId = u32;
/// Product ids are global (`0..n_products`); a product belongs to exactly one seller.
pub type ProductId = u32;
/// An order id is the TID of the checkout that created it: unique, and the same on every
/// replay, so no per-customer counter row has to be read and written by every checkout.
pub type OrderId = u64;
/// Money in cents.
pub type Money = i64;
/// A product version (starts at 0; an "update product" makes a new one).
pub type Version = u32;

/// The model's [`Version`] of a version given as text (the benchmark's driver names versions
/// by strings such as `"0"` or a transaction id `"11-19"`): the 32-bit FNV-1a hash of its bytes.
/// FNV-1a is fixed by its definition, so the mapping never changes between builds; two strings
/// of one product colliding would only make a stale price update apply (1 chance in 2^32).
pub fn version_of_text(text: &str) -> Version {
    const FNV_OFFSET_BASIS: u32 = 0x811c_9dc5;
    const FNV_PRIME: u32 = 0x0100_0193;
    text.bytes().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The cents of an amount given in currency units as a float (the benchmark's driver sends
/// prices such as `47.13`), rounded to the nearest cent; `None` for a negative, infinite or
/// unrepresentably large amount.
pub fn cents_of(amount: f64) -> Option<Money> {
    let cents = (amount * 100.0).round();
    // 2^53: every integer up to it is exact in an f64, so the conversion below is too.
    const EXACT_INTEGER_MAX: f64 = 9_007_199_254_740_992.0;
    (cents.is_finite() && (0.0..=EXACT_INTEGER_MAX).contains(&cents)).then_some(cents as Money)
}

/// `(seller_id, product_id)`: products, stock items, and the cart's product replicas.
/// **Placed by seller**, so the ten products of a seller, their stock and the seller's update
/// sequence share a partition, and a checkout reserves all items of one seller in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProductKey {
    pub seller_id: SellerId,
    pub product_id: ProductId,
}

impl ProductKey {
    pub fn placement(&self) -> SellerId {
        self.seller_id
    }
}

/// `(customer_id, order_id)`: orders and shipments, placed by the whole key, so one customer's
/// orders spread over the partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderKey {
    pub customer_id: CustomerId,
    pub order_id: OrderId,
}

/// A row belonging to one order (item, history entry, payment line, package). **Placed by its
/// order**, so all of an order's rows in a service share a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderPartKey {
    pub customer_id: CustomerId,
    pub order_id: OrderId,
    /// Item index, history sequence, payment sequential or package id, from 1.
    pub idx: u16,
}

impl OrderPartKey {
    pub fn new(order: OrderKey, idx: u16) -> Self {
        OrderPartKey {
            customer_id: order.customer_id,
            order_id: order.order_id,
            idx,
        }
    }
    pub fn order(&self) -> OrderKey {
        OrderKey {
            customer_id: self.customer_id,
            order_id: self.order_id,
        }
    }
    pub fn placement(&self) -> OrderKey {
        self.order()
    }
    /// The first and last possible key of `order`, for range reads.
    pub fn range_of(order: OrderKey) -> std::ops::RangeInclusive<OrderPartKey> {
        OrderPartKey::new(order, 0)..=OrderPartKey::new(order, u16::MAX)
    }
}

/// An open (not yet delivered) package in the shipment service's delivery queue. **Placed by
/// seller** and ordered by lane, then creation time, so "the oldest open package of a seller
/// in a lane" is the first key of the seller's lane range in one partition.
///
/// A seller's queue is split into lanes ([`MarketConfig::delivery_lanes`](super::MarketConfig),
/// [`delivery_lane`]): every package of an order goes to the order's lane, and a delivery takes
/// from the lane of its own transaction. Two deliveries of one epoch then pop the same head only
/// when they drew the same lane, instead of whenever they name the same seller; with one lane the
/// queue is strictly first-in first-out per seller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpenDeliveryKey {
    pub seller_id: SellerId,
    pub lane: u16,
    pub created_ms: u64,
    pub customer_id: CustomerId,
    pub order_id: OrderId,
}

impl OpenDeliveryKey {
    /// The key of `order`'s package from `seller_id`, queued at `created_ms` in `lane`.
    pub fn new(seller_id: SellerId, lane: u16, created_ms: u64, order: OrderKey) -> Self {
        OpenDeliveryKey {
            seller_id,
            lane,
            created_ms,
            customer_id: order.customer_id,
            order_id: order.order_id,
        }
    }

    /// The first possible key of `seller_id` in `lane` at `created_ms`, for range reads.
    pub fn first_at(seller_id: SellerId, lane: u16, created_ms: u64) -> Self {
        OpenDeliveryKey {
            seller_id,
            lane,
            created_ms,
            customer_id: 0,
            order_id: 0,
        }
    }

    pub fn order(&self) -> OrderKey {
        OrderKey {
            customer_id: self.customer_id,
            order_id: self.order_id,
        }
    }

    pub fn placement(&self) -> SellerId {
        self.seller_id
    }
}

/// How many shards a seller's dashboard aggregates are split into. Every approved checkout
/// updates the aggregate of each of its sellers; one row per seller would make every two
/// checkouts of a seller in one epoch conflict, so the aggregate is split by order.
pub const SELLER_VIEW_SHARDS: u8 = 8;

/// The aggregate shard an order's seller entry counts in.
pub fn seller_shard(customer_id: CustomerId, order_id: OrderId) -> u8 {
    let x = (u64::from(customer_id) << 32 ^ order_id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((x >> 32) % u64::from(SELLER_VIEW_SHARDS)) as u8
}

/// The delivery lane of `x` (an order id, or a delivery's TID) among `n_lanes` lanes: a fixed
/// mix of its bits, so that consecutive ids spread over the lanes and replay agrees.
pub fn delivery_lane(x: u64, n_lanes: u16) -> u16 {
    let mixed = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((mixed >> 32) % u64::from(n_lanes.max(1))) as u16
}

/// One shard of a seller's dashboard aggregates, placed by the whole key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SellerViewKey {
    pub seller_id: SellerId,
    pub shard: u8,
}

impl SellerViewKey {
    /// The shard `order`'s entry of `seller_id` counts in.
    pub fn of(seller_id: SellerId, order: OrderKey) -> Self {
        SellerViewKey {
            seller_id,
            shard: seller_shard(order.customer_id, order.order_id),
        }
    }
}

/// A seller's entry for one order (the seller service's order_entries view). Ordered so that
/// a seller's in-progress entries (`delivered == false`) form one key range. **Placed by the
/// aggregate shard it counts in**, so an entry and its aggregate are updated in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryKey {
    pub seller_id: SellerId,
    pub delivered: bool,
    pub customer_id: CustomerId,
    pub order_id: OrderId,
}

impl EntryKey {
    /// The in-progress entry of `seller_id` for `order`. Delivering it keeps the key but sets
    /// `delivered` (same placement).
    pub fn open(seller_id: SellerId, order: OrderKey) -> Self {
        EntryKey {
            seller_id,
            delivered: false,
            customer_id: order.customer_id,
            order_id: order.order_id,
        }
    }

    /// The first or last possible key of a seller's entries, for range reads.
    pub fn bound(seller_id: SellerId, delivered: bool, last: bool) -> Self {
        EntryKey {
            seller_id,
            delivered,
            customer_id: if last { CustomerId::MAX } else { 0 },
            order_id: if last { OrderId::MAX } else { 0 },
        }
    }

    pub fn order(&self) -> OrderKey {
        OrderKey {
            customer_id: self.customer_id,
            order_id: self.order_id,
        }
    }

    pub fn placement(&self) -> SellerViewKey {
        SellerViewKey::of(self.seller_id, self.order())
    }
}

/// `(seller_id, product_id, customer_id)`: one entry of the cart service's product index of
/// carts (`Tables::carts_by_product`), as the consistency checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CartIndexKey {
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub customer_id: CustomerId,
}

impl CartIndexKey {
    pub fn placement(&self) -> CustomerId {
        self.customer_id
    }
}

/// A product (product service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "products", key = ProductKey, placement = ProductKey::placement)]
pub struct Product {
    pub name: String,
    pub sku: String,
    pub category: String,
    pub description: String,
    pub price: Money,
    pub freight_value: Money,
    pub status: ProductStatus,
    pub version: Version,
    /// The seller-wide sequence number of the last committed update of this product (price or
    /// version); 0 if never updated. Replicas copy it, which is what the causal-replication
    /// check compares.
    pub update_seq: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(name = "product_status", rename_all = "snake_case")
)]
pub enum ProductStatus {
    Approved,
}

/// A stock item as clients see and ingest it: the stock service keeps it as two rows, its
/// [`StockLevel`] (changed by deltas) and its [`StockVersion`] (read by reservations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockItem {
    pub qty_available: i64,
    pub qty_reserved: i64,
    pub order_count: u64,
    /// Units sold (year to date).
    pub ytd: i64,
    pub version: Version,
}

impl StockItem {
    /// The item of a product whose stock rows are `level` and `version`.
    pub fn of(level: &StockLevel, version: &StockVersion) -> StockItem {
        StockItem {
            qty_available: level.qty_free + level.qty_reserved,
            qty_reserved: level.qty_reserved,
            order_count: u64::try_from(level.order_count).unwrap_or(0),
            ytd: level.ytd,
            version: version.version,
        }
    }

    /// The stock rows of this item.
    pub fn split(&self) -> (StockLevel, StockVersion) {
        let level = StockLevel {
            qty_free: self.qty_available - self.qty_reserved,
            qty_reserved: self.qty_reserved,
            order_count: i64::try_from(self.order_count).unwrap_or(i64::MAX),
            ytd: self.ytd,
        };
        (
            level,
            StockVersion {
                version: self.version,
            },
        )
    }
}

/// The counters of a stock item (stock service), changed only by merge-able deltas, so the
/// checkouts of one product in an epoch do not conflict. The invariant "no more reserved than
/// available" is one lower bound, `qty_free >= 0` (`AppBuilder::field_min`), which a
/// reservation keeps by escrow (`TxnCtx::add_bounded_or`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "stock_levels", key = ProductKey, placement = ProductKey::placement)]
pub struct StockLevel {
    /// Units available beyond the reservations: `qty_available − qty_reserved`.
    pub qty_free: i64,
    pub qty_reserved: i64,
    pub order_count: i64,
    /// Units sold (year to date).
    pub ytd: i64,
}

/// The product version a stock item sells (stock service): a row of its own, written only when
/// the product gets a new version, so reading it to compare versions does not conflict with
/// the deltas on the item's [`StockLevel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "stock_versions", key = ProductKey, placement = ProductKey::placement)]
pub struct StockVersion {
    pub version: Version,
}

/// A product replica held by a cart partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "product_replicas", replicated, key = ProductKey)]
pub struct Replica {
    pub price: Money,
    pub freight_value: Money,
    pub version: Version,
    pub update_seq: u64,
}

/// One item of a cart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartItem {
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub unit_price: Money,
    pub freight_value: Money,
    pub quantity: u32,
    /// Discount on this item (a voucher), in cents.
    pub voucher: Money,
    pub version: Version,
}

/// A customer's cart (cart service; the benchmark's cart_items rows, held together because a
/// checkout reads and clears them all at once).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "carts", key = CustomerId)]
pub struct Cart {
    /// Sorted by (seller, product), one item per product.
    pub items: Vec<CartItem>,
}

impl Cart {
    /// The products the cart holds: its values in the cart service's product index.
    pub fn products(&self) -> Vec<ProductKey> {
        self.items
            .iter()
            .map(|i| ProductKey {
                seller_id: i.seller_id,
                product_id: i.product_id,
            })
            .collect()
    }
}

/// What a client asks to put in a cart: the cart prices it from its replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartAddItem {
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub quantity: u32,
    /// Whether the customer has a voucher for this item (worth 10 % of its price).
    pub voucher: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(name = "order_status", rename_all = "snake_case")
)]
pub enum OrderStatus {
    Invoiced,
    PaymentProcessed,
    PaymentFailed,
    ReadyForShipment,
    InTransit,
    Delivered,
}

/// The money of an order, or of one seller's part of it. `total_amount = total_items +
/// total_freight`; `total_invoice = total_amount − total_incentive`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub count_items: u32,
    pub total_items: Money,
    pub total_freight: Money,
    pub total_amount: Money,
    pub total_incentive: Money,
    pub total_invoice: Money,
}

impl Totals {
    /// Adds one order item.
    pub fn add(&mut self, item: &OrderItem) {
        self.count_items += 1;
        self.total_items += item.total_items;
        self.total_freight += item.freight_value * i64::from(item.quantity);
        self.total_amount += item.total_amount;
        self.total_incentive += item.voucher;
        self.total_invoice += item.total_amount - item.voucher;
    }
}

/// An order (order service).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "orders", key = OrderKey)]
pub struct Order {
    pub status: OrderStatus,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub totals: Totals,
    /// History entries written so far (keys 1..=history_len).
    pub history_len: u16,
}

/// An order item (order service).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "order_items", key = OrderPartKey, placement = OrderPartKey::placement)]
pub struct OrderItem {
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub unit_price: Money,
    pub freight_value: Money,
    pub quantity: u32,
    /// unit_price × quantity.
    pub total_items: Money,
    /// total_items + freight_value × quantity.
    pub total_amount: Money,
    pub voucher: Money,
    /// The product version the item was reserved at.
    pub version: Version,
}

impl OrderItem {
    /// The order lines of a cart's items and their totals, as a checkout prices them.
    pub fn priced(cart: &[CartItem]) -> (Vec<OrderItem>, Totals) {
        let mut totals = Totals::default();
        let items = cart
            .iter()
            .map(|c| {
                let item = OrderItem::from_cart(c);
                totals.add(&item);
                item
            })
            .collect();
        (items, totals)
    }

    pub fn from_cart(c: &CartItem) -> Self {
        let q = i64::from(c.quantity);
        OrderItem {
            seller_id: c.seller_id,
            product_id: c.product_id,
            unit_price: c.unit_price,
            freight_value: c.freight_value,
            quantity: c.quantity,
            total_items: c.unit_price * q,
            total_amount: c.unit_price * q + c.freight_value * q,
            voucher: c.voucher,
            version: c.version,
        }
    }
}

/// An order status change (order service's order_history).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "order_history", key = OrderPartKey, placement = OrderPartKey::placement)]
pub struct OrderHistory {
    pub created_ms: u64,
    pub status: OrderStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(name = "payment_type", rename_all = "snake_case")
)]
pub enum PaymentType {
    CreditCard,
    DebitCard,
    Boleto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(name = "payment_status", rename_all = "snake_case")
)]
pub enum PaymentStatus {
    Approved,
    Failed,
}

/// One payment line of an order (payment service's order_payments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "order_payments", key = OrderPartKey, placement = OrderPartKey::placement)]
pub struct Payment {
    pub payment_type: PaymentType,
    pub installments: u8,
    pub value: Money,
    pub status: PaymentStatus,
    pub created_ms: u64,
}

/// The card of a card payment line (payment service's order_payment_cards): card data of the
/// order's customer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(
    name = "order_payment_cards",
    key = OrderPartKey,
    placement = OrderPartKey::placement,
    subject = key.customer_id
)]
pub struct PaymentCard {
    #[category(card)]
    pub card_last4: u16,
    pub installments: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(name = "shipment_status", rename_all = "snake_case")
)]
pub enum ShipmentStatus {
    Approved,
    DeliveryInProgress,
    Concluded,
}

/// The shipment of an approved order (shipment service).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "shipments", key = OrderKey)]
pub struct Shipment {
    pub package_count: u16,
    pub delivered_count: u16,
    pub total_freight: Money,
    pub status: ShipmentStatus,
    pub created_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(name = "package_status", rename_all = "snake_case")
)]
pub enum PackageStatus {
    Shipped,
    Delivered,
}

/// One package of a shipment: everything one seller ships for the order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "packages", key = OrderPartKey, placement = OrderPartKey::placement)]
pub struct Package {
    pub seller_id: SellerId,
    pub n_items: u16,
    pub quantity: u32,
    pub freight_value: Money,
    pub shipping_ms: u64,
    pub delivery_ms: Option<u64>,
    pub status: PackageStatus,
}

/// A seller (seller service).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "sellers", key = SellerId)]
pub struct Seller {
    pub name: String,
    pub city: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "postgres",
    derive(postgres_types::ToSql, postgres_types::FromSql),
    postgres(name = "delivery_status", rename_all = "snake_case")
)]
pub enum DeliveryStatus {
    Shipped,
    Delivered,
}

/// A seller's entry for one order: its part of the order (seller service's order_entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "order_entries", ordered, key = EntryKey, placement = EntryKey::placement)]
pub struct OrderEntry {
    pub package_id: u16,
    pub totals: Totals,
    pub order_status: OrderStatus,
    pub delivery_status: DeliveryStatus,
}

/// The aggregates a seller's dashboard shows over its in-progress entries (one shard of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "seller_views", key = SellerViewKey)]
pub struct SellerView {
    pub count_orders: i64,
    pub count_items: i64,
    pub total_items: Money,
    pub total_freight: Money,
    pub total_amount: Money,
    pub total_incentive: Money,
    pub total_invoice: Money,
}

impl SellerView {
    /// Adds (`sign = 1`) or removes (`sign = -1`) one entry.
    pub fn apply(&mut self, t: &Totals, sign: i64) {
        self.count_orders += sign;
        self.count_items += sign * i64::from(t.count_items);
        self.total_items += sign * t.total_items;
        self.total_freight += sign * t.total_freight;
        self.total_amount += sign * t.total_amount;
        self.total_incentive += sign * t.total_incentive;
        self.total_invoice += sign * t.total_invoice;
    }

    /// Sums two shards.
    pub fn merge(mut self, o: &SellerView) -> SellerView {
        self.count_orders += o.count_orders;
        self.count_items += o.count_items;
        self.total_items += o.total_items;
        self.total_freight += o.total_freight;
        self.total_amount += o.total_amount;
        self.total_incentive += o.total_incentive;
        self.total_invoice += o.total_invoice;
        self
    }
}

/// A customer (customer service): the name is personal data (`pii`), the card digits card
/// data; the customer id (the key) names whose data the row is. Its counters live in a row of
/// their own, [`CustomerCounters`], so that counting a payment or a delivery never writes this
/// row, which every checkout reads to check that the customer exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "customers", key = CustomerId, subject = key)]
pub struct Customer {
    #[pii]
    pub name: String,
    #[category(card)]
    pub card_last4: u16,
}

/// A customer's payment and delivery counters (customer service), created with the customer
/// and changed only by deltas: counts from any number of transactions of an epoch merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, txn::Table)]
#[table(name = "customer_counters", key = CustomerId)]
pub struct CustomerCounters {
    pub success_payment_count: i64,
    pub failed_payment_count: i64,
    pub delivery_count: i64,
}

/// A product as the loader creates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewProduct {
    pub product_id: ProductId,
    pub product: Product,
}

/// One item of a checkout, as stock reserves and settles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLine {
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub quantity: u32,
    pub version: Version,
}

/// A checkout as the cart priced it: everything the later steps need, carried in the events
/// because a step cannot wait for replies from other partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutDraft {
    pub order: OrderKey,
    /// Sorted by (seller, product).
    pub items: Vec<OrderItem>,
    pub totals: Totals,
    pub created_ms: u64,
}

impl CheckoutDraft {
    /// The items of each seller, in seller order: `(seller, first item index, end index)`.
    pub fn seller_groups(&self) -> Vec<(SellerId, usize, usize)> {
        self.seller_runs().collect()
    }

    /// [`CheckoutDraft::seller_groups`] one by one, without collecting them.
    pub fn seller_runs(&self) -> impl Iterator<Item = (SellerId, usize, usize)> + '_ {
        let items = &self.items;
        let mut start = 0;
        std::iter::from_fn(move || {
            let seller_id = items.get(start)?.seller_id;
            let len = items[start..]
                .iter()
                .take_while(|i| i.seller_id == seller_id)
                .count();
            start += len;
            Some((seller_id, start - len, start))
        })
    }
}

/// What a committed marketplace transaction returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MarketOutput {
    /// Load requests and internal steps.
    Done,
    /// A cart add: items now in the cart.
    CartItems(u32),
    /// A checkout: the order and whether its payment was approved.
    CheckedOut {
        order: OrderKey,
        approved: bool,
        total_invoice: Money,
    },
    /// A price update: the new price.
    Priced { price: Money, version: Version },
    /// An update product: the new version.
    NewVersion(Version),
    /// An update delivery: sellers asked for (some may have had nothing to deliver).
    DeliveryRequested { sellers: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_handled_together_share_a_placement() {
        // Goal: the rows one step touches together have equal placements, so they share a
        // partition whatever the number of partitions.
        for i in 0..200u32 {
            let (c, o, s) = (i * 7 + 1, u64::from(i) * 1_000_003 + 5, i % 17);
            let order = OrderKey {
                customer_id: c,
                order_id: o,
            };
            assert_eq!(OrderPartKey::new(order, 3).placement(), order);
            let e = EntryKey::open(s, order);
            let delivered = EntryKey {
                delivered: true,
                ..e
            };
            assert_eq!(e.placement(), delivered.placement());
            assert_eq!(e.placement(), SellerViewKey::of(s, order));
            assert_eq!(OpenDeliveryKey::new(s, 3, 9, order).placement(), s);
            let pk = ProductKey {
                seller_id: s,
                product_id: i,
            };
            assert_eq!(pk.placement(), s);
        }
    }

    #[test]
    fn text_versions_and_float_prices_map_to_the_model() {
        // Goal: the text-version mapping is the published FNV-1a (stable across builds) and
        // prices round to whole cents, refusing amounts that are not money.
        assert_eq!(version_of_text(""), 0x811c_9dc5);
        assert_eq!(version_of_text("a"), 0xe40c_292c);
        assert_ne!(version_of_text("0"), version_of_text("11-19"));
        assert_eq!(cents_of(47.13), Some(4713));
        assert_eq!(cents_of(f64::from(49.9578_f32)), Some(4996));
        assert_eq!(cents_of(0.0), Some(0));
        assert_eq!(cents_of(-0.01), None);
        assert_eq!(cents_of(f64::NAN), None);
        assert_eq!(cents_of(f64::INFINITY), None);
    }

    #[test]
    fn seller_groups_split_items_by_seller() {
        // Goal: a draft's items sorted by seller split into one contiguous group per seller.
        let item = |s, p| OrderItem {
            seller_id: s,
            product_id: p,
            unit_price: 1,
            freight_value: 1,
            quantity: 1,
            total_items: 1,
            total_amount: 2,
            voucher: 0,
            version: 0,
        };
        let d = CheckoutDraft {
            order: OrderKey {
                customer_id: 1,
                order_id: 1,
            },
            items: vec![
                item(1, 10),
                item(1, 11),
                item(4, 40),
                item(7, 70),
                item(7, 71),
            ],
            totals: Totals::default(),
            created_ms: 0,
        };
        assert_eq!(d.seller_groups(), vec![(1, 0, 2), (4, 2, 3), (7, 3, 5)]);
    }
}
