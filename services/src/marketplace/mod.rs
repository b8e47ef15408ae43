//! The Online Marketplace (`docs/workloads.md`): eight services, every business transaction as
//! one vmsdb transaction, the seller dashboard as a snapshot query, the data generator at the
//! benchmark's scales, and checkers for the seven consistency criteria.
//!
//! # Services and where their rows live
//!
//! Each service is one file: its struct (table handles and the services it emits to), its event
//! types and its `#[service]` impl, one `#[handler]` per event type; the steps only handlers
//! may emit are `#[handler(internal)]`. Events are routed by the service's key (a `#[key]`
//! field, or a `KeyOf` impl when it is computed); steps carrying the items of one partition are
//! sent to that partition with `emit_to_partition`, and replica updates with `broadcast`.
//!
//! | service  | tables (key → row)                                       | placed by          |
//! |----------|----------------------------------------------------------|--------------------|
//! | product  | products (seller, product); seller_update_seq (seller)   | seller             |
//! | stock    | stock_levels, stock_versions (seller, product)           | seller             |
//! | cart     | carts (customer), indexed by each product they hold      | customer           |
//! |          | product_replicas (seller, product): replicated table     | every partition    |
//! | order    | orders, order_items, order_history (customer, order, …)  | (customer, order)  |
//! | payment  | order_payments, order_payment_cards (customer, order, …) | (customer, order)  |
//! | shipment | shipments, packages (customer, order, …)                 | (customer, order)  |
//! |          | open_deliveries (seller, lane, created, customer, order) | seller             |
//! | seller   | sellers (seller); order_entries (in progress, ordered),  | (seller, shard)    |
//! |          | delivered_entries, seller_views                          |                    |
//! | customer | customers, customer_counters (customer)                  | customer           |
//!
//! The service types and the keys their events are routed by: [`Products`], [`Stock`],
//! [`Shipments`] (its inbound request names sellers) and [`Sellers`] by seller; [`Carts`] and
//! [`Customers`] by customer; [`Orders`] and [`Payments`] by order.
//!
//! Business rules abort with a [`MarketError`], whose kind ([`kinds`]) reports group by; the
//! runtime then discards the whole transaction in every service, so no handler compensates.
//!
//! An order id is the TID of its checkout (see [`model::OrderId`]); placements are explained
//! in [`model`].
//!
//! # Business transactions (each one transaction; waves are steps that run in parallel)
//!
//! - **Checkout** (`Checkout`): cart fills and reads/clears the cart, prices the order from
//!   its local replica and draws the payment provider's decision (TID-seeded RNG) → stock
//!   reserves each seller's items (version must match, reserved + qty ≤ available, else the
//!   whole checkout aborts) and confirms or releases them at once ‖ payment records the
//!   payment → order writes the order/items/history, and on approval seller records its
//!   entries, shipment creates the shipment with one package per seller and queues them for
//!   delivery; customer counts the payment. 3 waves.
//! - **Price update** (`PriceUpdate`): product changes the price → every cart partition updates
//!   its replica and each cart item holding the product at that version. 2 waves.
//! - **Update product** (`UpdateProduct`): product makes a new version → stock adopts it ‖
//!   every cart partition upserts its replica and drops cart items on the old version. 2 waves.
//! - **Update delivery** (`UpdateDelivery`): for each of up to 10 sellers the shipment service
//!   takes the seller's oldest open package in the delivery's lane (see
//!   [`MarketConfig::delivery_lanes`]) → shipment marks it delivered and updates the
//!   shipment ‖ seller entry and dashboard aggregates ‖ customer delivery count (one step per
//!   partition for all the packages taken) → order status. 3 waves when the sellers share a
//!   shipment partition (the generator draws them so), else 4.
//! - **Seller dashboard** ([`Marketplace::dashboard`]): one snapshot query over the seller
//!   service: the seller's in-progress entries and its aggregates, which must agree.
//!
//! # The benchmark driver's semantics
//!
//! For a server the benchmark's own driver talks to, each service also handles events that
//! mean what the driver's calls mean: [`IngestProduct`] and [`IngestStock`] (one row each),
//! [`AddCartItem`] (an item priced by the client), [`CheckoutCart`] (checks out what the cart
//! holds and creates the customer if it was never loaded), [`SealCart`], [`SetPrice`] (an
//! absolute price, applied only to the version it names) and [`ReplaceProduct`] (a new version
//! given whole). Text versions become [`Version`]s with [`version_of_text`], float prices cents
//! with [`cents_of`]; [`Marketplace::reset_requests`] empties one service.
//!
//! Where this differs from the benchmark, and why:
//! - The cart fill is the first step of the checkout transaction (`Checkout::add`) rather than
//!   separate requests, so it is not measured as its own operation; `CartAdd` exists for carts
//!   that are filled ahead of time.
//! - A checkout with any item that cannot be reserved aborts as a whole (the benchmark drops
//!   the item): a step cannot learn which of the other sellers' reservations succeeded.
//! - The payment provider's decision is drawn by the checkout's first step, and stock confirms
//!   or releases each item in the step that reserves it, instead of in a later step once the
//!   payment is known: inside one transaction the outcome is the same, with one step fewer per
//!   stock partition the checkout touches.
//! - A declined payment is a committed outcome, as in the benchmark: the order is kept with
//!   status `PaymentFailed`, the reservation released and the customer's failed count raised.
//! - An update delivery names its sellers (the client draws them, from one shipment
//!   partition) instead of scanning for the first ten sellers with open packages, which would
//!   read, and conflict on, the whole delivery queue.
//! - A seller's delivery queue is first-in first-out per lane, not per seller: each order's
//!   packages go to the order's lane and a delivery pops the lane its TID draws, so concurrent
//!   deliveries of a seller take different packages (one lane: strictly oldest first).
//! - A package is deliverable once the epoch clock has passed the millisecond of its checkout,
//!   so a delivery never reads what concurrent checkouts queue (see `Shipments` in
//!   `shipment.rs`).

mod cart;
pub mod check;
mod customer;
pub mod data;
mod error;
pub mod model;
mod order;
mod payment;
mod product;
mod queries;
mod reset;
mod seller;
mod shipment;
mod stock;

pub use cart::*;
pub use check::{Dashboard, Expected, Found, MarketSnapshot, check, check_detailed};
pub use customer::*;
pub use data::{Mix, OpGen, Scale};
pub use error::{MarketError, kinds};
pub use model::*;
pub use order::*;
pub use payment::*;
pub use product::*;
pub use queries::{MarketQueries, ProductLookup};
pub use reset::{RESET_ROWS_PER_REQUEST, ResetError};
pub use seller::*;
pub use shipment::*;
pub use stock::*;

use crate::zipf::KeyDistError;
use data::MarketOp;
use std::sync::Arc;
use txn::{
    AppBuilder, AppDef, Client, EventOf, Index, ReadView, Request, SerialExecutor, Service,
    ServiceRef, Svc, Table, TxnCtx, TxnError,
};

/// The marketplace application: its eight services, and what a transaction returns. The
/// generated envelope of every event is `MarketAppEvent`, one variant per service.
// Personal data (`docs/governance.md`): customers' names (`pii`) and card digits (`card`, also
// in the payment lines). A handler reads a whole row, and the delivery counter lives in the
// customer row, so counting deliveries reads the card digits too.
#[txn::app(
    services(Products, Stock, Carts, Orders, Payments, Shipments, Sellers, Customers),
    output = MarketOutput,
    allow(
        pii = ["checkout", "payment", "delivery"],
        card = ["checkout", "payment", "delivery"]
    )
)]
pub struct MarketApp;

/// The services of the marketplace.
#[derive(Clone, Copy, Debug)]
pub struct Services {
    pub product: Svc<Products>,
    pub stock: Svc<Stock>,
    pub cart: Svc<Carts>,
    pub order: Svc<Orders>,
    pub payment: Svc<Payments>,
    pub shipment: Svc<Shipments>,
    pub seller: Svc<Sellers>,
    pub customer: Svc<Customers>,
}

impl Services {
    /// Declares the eight services, `n_partitions` partitions each.
    fn declare(b: &mut AppBuilder<MarketApp>, n_partitions: u32) -> Self {
        let n = n_partitions;
        Services {
            product: b.add_service("product", n),
            stock: b.add_service("stock", n),
            cart: b.add_service("cart", n),
            order: b.add_service("order", n),
            payment: b.add_service("payment", n),
            shipment: b.add_service("shipment", n),
            seller: b.add_service("seller", n),
            customer: b.add_service("customer", n),
        }
    }

    /// All eight, in declaration order.
    pub fn all(&self) -> [ServiceRef; 8] {
        [
            *self.product,
            *self.stock,
            *self.cart,
            *self.order,
            *self.payment,
            *self.shipment,
            *self.seller,
            *self.customer,
        ]
    }
}

/// Every table of the marketplace, by service (for queries; each service's handlers use their
/// own handles).
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    // product
    pub products: Table<ProductKey, Product>,
    /// seller → sequence number of the seller's last product update (price or version).
    pub seller_update_seq: Table<SellerId, u64>,
    // stock
    /// A stock item's counters (deltas only); with `stock_versions`, see [`Tables::stock_item`].
    pub stock_levels: Table<ProductKey, StockLevel>,
    pub stock_versions: Table<ProductKey, StockVersion>,
    // cart
    pub carts: Table<CustomerId, Cart>,
    /// The carts holding each product: a runtime index of `carts`, kept at commit.
    pub carts_by_product: Index<ProductKey, CustomerId, Cart>,
    /// Replicated: every cart partition holds a full copy.
    pub product_replicas: Table<ProductKey, Replica>,
    // order
    pub orders: Table<OrderKey, Order>,
    pub order_items: Table<OrderPartKey, OrderItem>,
    pub order_history: Table<OrderPartKey, OrderHistory>,
    // payment
    pub order_payments: Table<OrderPartKey, Payment>,
    pub order_payment_cards: Table<OrderPartKey, PaymentCard>,
    // shipment
    pub shipments: Table<OrderKey, Shipment>,
    pub packages: Table<OrderPartKey, Package>,
    pub open_deliveries: Table<OpenDeliveryKey, u16>,
    // seller
    pub sellers: Table<SellerId, Seller>,
    /// A seller's entries in progress (`delivered == false`), in key order.
    pub order_entries: Table<EntryKey, OrderEntry>,
    /// Delivered entries (`delivered == true`), moved here from `order_entries` on delivery.
    pub delivered_entries: Table<EntryKey, OrderEntry>,
    pub seller_views: Table<SellerViewKey, SellerView>,
    // customer
    pub customers: Table<CustomerId, Customer>,
    /// A customer's payment and delivery counters (deltas only).
    pub customer_counters: Table<CustomerId, CustomerCounters>,
}

impl Tables {
    /// The stock item of `key` as clients see it, from its two rows in a `stock` partition.
    pub fn stock_item(&self, view: &ReadView<'_>, key: &ProductKey) -> Option<StockItem> {
        let level = view.get(self.stock_levels, key)?;
        let version = view.get(self.stock_versions, key)?;
        Some(StockItem::of(level, version))
    }
}

/// Emits one event per partition of service `to`, carrying the items bound for it: a step per
/// partition rather than per item, in partition order. `partition_of` names each item's
/// partition; items keep their order within a partition.
fn emit_grouped<S, E, T>(
    ctx: &mut TxnCtx<'_, MarketApp>,
    to: Svc<S>,
    mut items: Vec<T>,
    partition_of: impl Fn(&T) -> u32,
    make: impl Fn(Vec<T>) -> E,
) where
    S: Service<App = MarketApp>,
    E: EventOf<S>,
{
    // Stable, so items keep their order within a partition.
    items.sort_by_key(&partition_of);
    // Each group is split off the front of the list and the first keeps the list's own
    // allocation: items bound for one partition cost no allocation here, n partitions n - 1.
    while let Some(first) = items.first() {
        let p = partition_of(first);
        let len = items.iter().take_while(|t| partition_of(t) == p).count();
        let rest = items.split_off(len);
        ctx.emit_to_partition(to, p, make(std::mem::replace(&mut items, rest)));
    }
}

/// The data sizes and business parameters of a marketplace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarketConfig {
    pub n_customers: u32,
    pub n_sellers: u32,
    pub products_per_seller: u32,
    /// Units of stock every product starts with.
    pub initial_stock: i64,
    /// Partitions of each of the eight services.
    pub n_partitions: u32,
    /// Percentage of payments the simulated provider declines.
    pub payment_failure_pct: u8,
    /// Seed of the generated products.
    pub seed: u64,
    /// Lanes of each seller's delivery queue: an update delivery takes the oldest open package
    /// of a seller in its own lane (drawn from its TID), so concurrent deliveries rarely pop
    /// the same package. 1 keeps each seller's queue strictly first-in first-out.
    pub delivery_lanes: u16,
}

impl MarketConfig {
    /// The benchmark's data at `scale`, with `n_partitions` partitions per service.
    pub fn at_scale(scale: Scale, n_partitions: u32) -> Self {
        let (n_customers, n_sellers) = scale.sizes();
        MarketConfig {
            n_customers,
            n_sellers,
            products_per_seller: data::PRODUCTS_PER_SELLER,
            initial_stock: data::INITIAL_STOCK,
            n_partitions,
            payment_failure_pct: 10,
            seed: 42,
            delivery_lanes: scale.delivery_lanes(),
        }
    }

    pub fn n_products(&self) -> u32 {
        self.n_sellers * self.products_per_seller
    }

    /// What makes this configuration unusable (empty if nothing).
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.n_customers == 0 || self.n_sellers == 0 || self.products_per_seller == 0 {
            problems.push(format!(
                "a marketplace needs customers, sellers and products: {self:?}"
            ));
        }
        if self.payment_failure_pct > 100 {
            problems.push(format!(
                "payment_failure_pct {} is above 100",
                self.payment_failure_pct
            ));
        }
        if self.delivery_lanes == 0 {
            problems.push("delivery_lanes must be at least 1".into());
        }
        if u64::from(self.n_sellers) * u64::from(self.products_per_seller)
            > u64::from(ProductId::MAX)
        {
            problems.push("too many products for 32-bit product ids".into());
        }
        problems
    }
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig::at_scale(Scale::Small, 4)
    }
}

/// The marketplace application and the handles to talk to it.
#[derive(Clone)]
pub struct Marketplace {
    app: Arc<AppDef<MarketApp>>,
    pub services: Services,
    pub tables: Tables,
    pub config: MarketConfig,
    /// The named queries, which answer on every node of a cluster.
    pub queries: MarketQueries,
}

impl Marketplace {
    /// Defines the eight services, their tables and handlers.
    pub fn new(config: MarketConfig) -> Result<Self, TxnError> {
        Self::with_purpose_checks(config, true)
    }

    /// [`Marketplace::new`] with the run-time purpose checks of personal-data reads on or off
    /// (`AppBuilder::purpose_checks`): off only to measure what they cost.
    pub fn with_purpose_checks(
        config: MarketConfig,
        purpose_checks: bool,
    ) -> Result<Self, TxnError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(TxnError::InvalidApp(problems));
        }
        let mut b = AppBuilder::<MarketApp>::new();
        b.purpose_checks(purpose_checks);
        let services = Services::declare(&mut b, config.n_partitions);
        let products = Products::declare(&mut b, &services);
        let stock = Stock::declare(&mut b, &services);
        let carts = Carts::declare(&mut b, &services, config.payment_failure_pct);
        let orders = Orders::declare(&mut b, &services);
        let payments = Payments::declare(&mut b, &services, config.delivery_lanes);
        let shipments = Shipments::declare(&mut b, &services, config.delivery_lanes);
        let sellers = Sellers::declare(&mut b, &services);
        let customers = Customers::declare(&mut b, &services);
        let tables = Tables {
            products: products.products,
            seller_update_seq: products.seller_update_seq,
            stock_levels: stock.stock_levels,
            stock_versions: stock.stock_versions,
            carts: carts.carts,
            carts_by_product: carts.carts_by_product,
            product_replicas: carts.product_replicas,
            orders: orders.orders,
            order_items: orders.order_items,
            order_history: orders.order_history,
            order_payments: payments.order_payments,
            order_payment_cards: payments.order_payment_cards,
            shipments: shipments.shipments,
            packages: shipments.packages,
            open_deliveries: shipments.open_deliveries,
            sellers: sellers.sellers,
            order_entries: sellers.order_entries,
            delivered_entries: sellers.delivered_entries,
            seller_views: sellers.seller_views,
            customers: customers.customers,
            customer_counters: customers.customer_counters,
        };
        products.register(&mut b, services.product);
        stock.register(&mut b, services.stock);
        carts.register(&mut b, services.cart);
        orders.register(&mut b, services.order);
        payments.register(&mut b, services.payment);
        shipments.register(&mut b, services.shipment);
        sellers.register(&mut b, services.seller);
        customers.register(&mut b, services.customer);
        let queries = MarketQueries::register(&mut b, &services, tables);
        Ok(Marketplace {
            app: b.build()?,
            services,
            tables,
            config,
            queries,
        })
    }

    /// The application definition, to start a `Runtime` or a `SerialExecutor` with.
    pub fn app(&self) -> &Arc<AppDef<MarketApp>> {
        &self.app
    }

    /// The seller of a product.
    pub fn seller_of(&self, product_id: ProductId) -> SellerId {
        product_id / self.config.products_per_seller
    }

    /// The initial data as ordinary requests, which commute: customers in batches of up to
    /// [`data::LOAD_CUSTOMERS_PER_REQUEST`] per partition, then one request per seller (its
    /// products, their stock, the seller row and every cart partition's replicas).
    pub fn load_requests(&self) -> Vec<Request<MarketApp>> {
        let customer = self.services.customer;
        let mut pending: Vec<Vec<CustomerId>> = vec![Vec::new(); customer.n_partitions() as usize];
        let mut out = Vec::new();
        // A batch is routed by its first customer, whose partition owns the whole batch.
        let batch = |ids: Vec<CustomerId>| customer.request(LoadCustomers { customer_ids: ids });
        for id in 0..self.config.n_customers {
            let p = customer.partition_of(&id) as usize;
            pending[p].push(id);
            if pending[p].len() == data::LOAD_CUSTOMERS_PER_REQUEST {
                out.push(batch(std::mem::take(&mut pending[p])));
            }
        }
        for ids in pending {
            if !ids.is_empty() {
                out.push(batch(ids));
            }
        }
        let per = self.config.products_per_seller;
        for seller_id in 0..self.config.n_sellers {
            let products = (seller_id * per..(seller_id + 1) * per)
                .map(|product_id| NewProduct {
                    product_id,
                    product: data::generate_product(self.config.seed, product_id),
                })
                .collect();
            out.push(self.services.product.request(LoadSeller {
                seller_id,
                products,
                initial_stock: self.config.initial_stock,
            }));
        }
        out
    }

    /// Puts items in a customer's cart (priced from the cart's replica at that moment).
    pub fn cart_add(&self, customer_id: CustomerId, items: Vec<CartAddItem>) -> Request<MarketApp> {
        self.services.cart.request(CartAdd { customer_id, items })
    }

    /// Adds `add` to the customer's cart and checks the whole cart out.
    pub fn checkout(&self, customer_id: CustomerId, add: Vec<CartAddItem>) -> Request<MarketApp> {
        self.services.cart.request(Checkout { customer_id, add })
    }

    /// Changes a product's price by `pct` percent (±1 to ±10).
    pub fn price_update(
        &self,
        seller_id: SellerId,
        product_id: ProductId,
        pct: i8,
    ) -> Request<MarketApp> {
        self.services.product.request(PriceUpdate {
            seller_id,
            product_id,
            pct,
        })
    }

    /// Replaces a product by a new version.
    pub fn update_product(&self, seller_id: SellerId, product_id: ProductId) -> Request<MarketApp> {
        self.services.product.request(UpdateProduct {
            seller_id,
            product_id,
        })
    }

    /// Delivers the oldest open package of each of `sellers` (1 to 10, distinct), starting in
    /// the shipment partition of the first.
    pub fn update_delivery(&self, sellers: Vec<SellerId>) -> Request<MarketApp> {
        self.services.shipment.request(UpdateDelivery { sellers })
    }

    /// The request of a generated operation (`None` for the dashboard, which is a query).
    pub fn request(&self, op: MarketOp) -> Option<Request<MarketApp>> {
        Some(match op {
            MarketOp::Checkout { customer_id, items } => self.checkout(customer_id, items),
            MarketOp::PriceUpdate {
                seller_id,
                product_id,
                pct,
            } => self.price_update(seller_id, product_id, pct),
            MarketOp::UpdateProduct {
                seller_id,
                product_id,
            } => self.update_product(seller_id, product_id),
            MarketOp::UpdateDelivery { sellers } => self.update_delivery(sellers),
            MarketOp::Dashboard { .. } => return None,
        })
    }

    /// A client's operation generator over this marketplace's data. Update deliveries draw
    /// their sellers from one shipment partition (see [`OpGen::with_local_deliveries`]).
    pub fn op_gen(&self, seed: u64, mix: Mix, zipf_theta: f64) -> Result<OpGen, KeyDistError> {
        Ok(OpGen::new(
            seed,
            mix,
            self.config.n_customers,
            self.config.n_sellers,
            self.config.products_per_seller,
            zipf_theta,
        )?
        .with_local_deliveries(*self.services.shipment))
    }

    /// The seller dashboard: in-progress entries and aggregates at one snapshot (the named
    /// query: it reads every node's seller partitions in a cluster).
    pub async fn dashboard(
        &self,
        client: &Client<MarketApp>,
        seller_id: SellerId,
    ) -> Result<Dashboard, TxnError> {
        let sellers = [*self.services.seller];
        let parts = client
            .query_named(&self.queries.dashboard, &sellers, &seller_id)
            .await?;
        Ok(Dashboard::from_parts(seller_id, parts))
    }

    /// A product and its stock item at one snapshot (the named query, on the two partitions
    /// holding them).
    pub async fn product(
        &self,
        client: &Client<MarketApp>,
        key: ProductKey,
    ) -> Result<ProductLookup, TxnError> {
        let at = MarketQueries::product_partitions(&self.services, &key);
        let parts = client
            .query_named_at(&self.queries.product, &at, &key)
            .await?;
        Ok(parts
            .into_iter()
            .fold(ProductLookup::default(), ProductLookup::merge))
    }

    /// The seller dashboard on the serial executor.
    pub fn dashboard_serial(
        &self,
        exec: &SerialExecutor<MarketApp>,
        seller_id: SellerId,
    ) -> Dashboard {
        let parts = exec.query(&[*self.services.seller], self.dashboard_fn(seller_id));
        Dashboard::from_parts(seller_id, parts)
    }

    /// The per-partition part of a dashboard, for any `query` over the seller service (merge
    /// the parts with [`Dashboard::from_parts`]). A seller's entries and aggregate shards are
    /// spread over the seller partitions by shard, so every partition contributes.
    pub fn dashboard_fn(
        &self,
        seller_id: SellerId,
    ) -> impl Fn(&ReadView<'_>) -> Dashboard + Send + Sync + 'static {
        let t = self.tables;
        move |view| queries::dashboard_part(view, &t, seller_id)
    }

    /// Every row of every service at one snapshot (for the consistency checks).
    pub async fn snapshot(&self, client: &Client<MarketApp>) -> Result<MarketSnapshot, TxnError> {
        let parts = client
            .query(&self.services.all(), self.snapshot_fn())
            .await?;
        Ok(parts
            .into_iter()
            .fold(MarketSnapshot::default(), MarketSnapshot::merge))
    }

    /// The rows the consistency criteria read, at one snapshot (the named `audit` query: it
    /// reads every node's partitions in a cluster). Every row of [`Marketplace::snapshot`] but
    /// the customers'.
    pub async fn audit_snapshot(
        &self,
        client: &Client<MarketApp>,
    ) -> Result<MarketSnapshot, TxnError> {
        let parts = client
            .query_named(&self.queries.audit, &self.services.all(), &())
            .await?;
        Ok(parts
            .into_iter()
            .fold(MarketSnapshot::default(), MarketSnapshot::merge))
    }

    /// A serial executor of this marketplace with its initial data loaded at `timestamp_ms`
    /// (what the harness's `serial` system starts from); panics if the load does not commit,
    /// which a valid configuration's load always does.
    pub fn loaded_serial(&self, timestamp_ms: u64) -> SerialExecutor<MarketApp> {
        let mut exec = SerialExecutor::new(self.app().clone());
        for r in self.load_requests() {
            exec.run_request(r, timestamp_ms)
                .expect("the marketplace's load commits");
        }
        exec
    }

    /// Every row of the serial executor's state.
    pub fn snapshot_serial(&self, exec: &SerialExecutor<MarketApp>) -> MarketSnapshot {
        exec.query(&self.services.all(), self.snapshot_fn())
            .into_iter()
            .fold(MarketSnapshot::default(), MarketSnapshot::merge)
    }

    /// The per-partition part of a snapshot, for any `query` over all eight services (merge the
    /// parts with [`MarketSnapshot::merge`]); lets other executors of the same app be checked.
    pub fn snapshot_fn(&self) -> impl Fn(&ReadView<'_>) -> MarketSnapshot + Send + Sync + 'static {
        let t = self.tables;
        let n_cart = self.services.cart.n_partitions();
        move |view| MarketSnapshot::of_partition(view, &t, n_cart)
    }

    /// What the checks expect after a run with `committed_checkouts` committed checkouts (if
    /// counted) and `dashboard_mismatches` torn dashboards seen while it ran.
    pub fn expected(
        &self,
        committed_checkouts: Option<u64>,
        dashboard_mismatches: u64,
    ) -> Expected {
        Expected {
            initial_stock: self.config.initial_stock,
            committed_checkouts,
            dashboard_mismatches,
        }
    }
}
