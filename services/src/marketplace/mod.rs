//! The Online Marketplace (`docs/workloads.md`): eight services, every business transaction as
//! one vmsdb transaction, the seller dashboard as a snapshot query, the data generator at the
//! benchmark's scales, and checkers for the seven consistency criteria.
//!
//! # Services and where their rows live
//!
//! | service  | tables (key → row)                                       | placed by          |
//! |----------|----------------------------------------------------------|--------------------|
//! | product  | products (seller, product); seller_update_seq (seller)   | seller             |
//! | stock    | stock_items (seller, product)                            | seller             |
//! | cart     | carts (customer), indexed by each product they hold      | customer           |
//! |          | product_replicas (seller, product): replicated table     | every partition    |
//! | order    | orders, order_items, order_history (customer, order, …)  | (customer, order)  |
//! | payment  | order_payments, order_payment_cards (customer, order, …) | (customer, order)  |
//! | shipment | shipments, packages (customer, order, …)                 | (customer, order)  |
//! |          | open_deliveries (seller, created, customer, order)       | seller             |
//! | seller   | sellers (seller); order_entries, seller_views            | (seller, shard)    |
//! | customer | customers (customer)                                     | customer           |
//!
//! An order id is the TID of its checkout (see [`model::OrderId`]); placements are explained
//! in [`model`].
//!
//! # Business transactions (each one transaction; waves are steps that run in parallel)
//!
//! - **Checkout** (`Checkout`): cart fills and reads/clears the cart and prices the order from
//!   its local replica → stock reserves each seller's items (version must match,
//!   reserved + qty ≤ available, else the whole checkout aborts) ‖ payment approves or declines
//!   (TID-seeded RNG) → stock confirms or releases, order writes the order/items/history, and
//!   on approval seller records its entries, shipment creates the shipment with one package
//!   per seller and queues them for delivery; customer counts the payment. 3 waves.
//! - **Price update** (`PriceUpdate`): product changes the price → every cart partition updates
//!   its replica and each cart item holding the product at that version. 2 waves.
//! - **Update product** (`UpdateProduct`): product makes a new version → stock adopts it ‖
//!   every cart partition upserts its replica and drops cart items on the old version. 2 waves.
//! - **Update delivery** (`UpdateDelivery`): for each of up to 10 sellers the shipment service
//!   takes the seller's oldest open package → marks it delivered and updates the shipment →
//!   order status, seller entry and dashboard aggregates, customer delivery count. 3 waves
//!   when the sellers share a shipment partition (the generator draws them so), else 4.
//! - **Seller dashboard** ([`Marketplace::dashboard`]): one snapshot query over the seller
//!   service: the seller's in-progress entries and its aggregates, which must agree.
//!
//! Where this differs from the benchmark, and why:
//! - The cart fill is the first step of the checkout transaction (`Checkout::add`) rather than
//!   separate requests, so it is not measured as its own operation; `CartAdd` exists for carts
//!   that are filled ahead of time.
//! - A checkout with any item that cannot be reserved aborts as a whole (the benchmark drops
//!   the item): a step cannot learn which of the other sellers' reservations succeeded.
//! - A declined payment is a committed outcome, as in the benchmark: the order is kept with
//!   status `PaymentFailed`, the reservation released and the customer's failed count raised.
//! - An update delivery names its sellers (the client draws them, from one shipment
//!   partition) instead of scanning for the first ten sellers with open packages, which would
//!   read, and conflict on, the whole delivery queue.
//! - A package is deliverable once the epoch clock has passed the millisecond of its checkout,
//!   so a delivery never reads what concurrent checkouts queue (see `handlers::take_oldest`).

pub mod check;
pub mod data;
pub mod handlers;
pub mod model;

pub use check::{Dashboard, Expected, MarketSnapshot, check};
pub use data::{Mix, OpGen, Scale};
pub use handlers::{Services, Tables};
pub use model::*;

use crate::Request;
use crate::zipf::KeyDistError;
use data::MarketOp;
use handlers::Wiring;
use std::sync::Arc;
use txn::{App, AppBuilder, AppDef, Client, ReadView, SerialExecutor, TxnError};

/// The marketplace application's types.
pub struct MarketApp;

impl App for MarketApp {
    type Event = MarketEvent;
    type Output = MarketOutput;

    /// The steps of the business transactions' chains: clients submit only the inbound events.
    fn is_internal(event: &MarketEvent) -> bool {
        event.is_internal()
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
        }
    }

    pub fn n_products(&self) -> u32 {
        self.n_sellers * self.products_per_seller
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
}

impl Marketplace {
    /// Defines the eight services, their tables and handlers.
    pub fn new(config: MarketConfig) -> Result<Self, TxnError> {
        let mut problems = Vec::new();
        if config.n_customers == 0 || config.n_sellers == 0 || config.products_per_seller == 0 {
            problems.push(format!(
                "a marketplace needs customers, sellers and products: {config:?}"
            ));
        }
        if config.payment_failure_pct > 100 {
            problems.push(format!(
                "payment_failure_pct {} is above 100",
                config.payment_failure_pct
            ));
        }
        if u64::from(config.n_sellers) * u64::from(config.products_per_seller)
            > u64::from(ProductId::MAX)
        {
            problems.push("too many products for 32-bit product ids".into());
        }
        if !problems.is_empty() {
            return Err(TxnError::InvalidApp(problems));
        }
        let n = config.n_partitions;
        let mut b = AppBuilder::<MarketApp>::new();
        let services = Services {
            product: b.service("product", n),
            stock: b.service("stock", n),
            cart: b.service("cart", n),
            order: b.service("order", n),
            payment: b.service("payment", n),
            shipment: b.service("shipment", n),
            seller: b.service("seller", n),
            customer: b.service("customer", n),
        };
        let carts = b.table(services.cart, "carts");
        let tables = Tables {
            products: b.table(services.product, "products"),
            seller_update_seq: b.table(services.product, "seller_update_seq"),
            stock_items: b.table(services.stock, "stock_items"),
            carts,
            carts_by_product: b.index_many(carts, "carts_by_product", Cart::products),
            product_replicas: b.replicated_table(services.cart, "product_replicas"),
            orders: b.table(services.order, "orders"),
            order_items: b.table(services.order, "order_items"),
            order_history: b.table(services.order, "order_history"),
            order_payments: b.table(services.payment, "order_payments"),
            order_payment_cards: b.table(services.payment, "order_payment_cards"),
            shipments: b.table(services.shipment, "shipments"),
            packages: b.table(services.shipment, "packages"),
            open_deliveries: b.ordered_table(services.shipment, "open_deliveries"),
            sellers: b.table(services.seller, "sellers"),
            order_entries: b.ordered_table(services.seller, "order_entries"),
            seller_views: b.table(services.seller, "seller_views"),
            customers: b.table(services.customer, "customers"),
        };
        // Rows a step touches together share a placement (see `model`).
        b.place_by(tables.products, ProductKey::placement);
        b.place_by(tables.stock_items, ProductKey::placement);
        b.place_by(tables.order_items, OrderPartKey::placement);
        b.place_by(tables.order_history, OrderPartKey::placement);
        b.place_by(tables.order_payments, OrderPartKey::placement);
        b.place_by(tables.order_payment_cards, OrderPartKey::placement);
        b.place_by(tables.packages, OrderPartKey::placement);
        b.place_by(tables.open_deliveries, OpenDeliveryKey::placement);
        b.place_by(tables.order_entries, EntryKey::placement);
        let w = Wiring {
            services,
            tables,
            payment_failure_pct: config.payment_failure_pct,
        };
        // Every service's handler is its step function with the shared wiring.
        let steps: [(txn::ServiceRef, handlers::Step); 8] = [
            (services.product, handlers::product_step),
            (services.stock, handlers::stock_step),
            (services.cart, handlers::cart_step),
            (services.order, handlers::order_step),
            (services.payment, handlers::payment_step),
            (services.shipment, handlers::shipment_step),
            (services.seller, handlers::seller_step),
            (services.customer, handlers::customer_step),
        ];
        for (service, step) in steps {
            b.handler(service, move |ctx, ev| step(ctx, ev, &w));
        }
        Ok(Marketplace {
            app: b.build()?,
            services,
            tables,
            config,
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
    pub fn load_requests(&self) -> Vec<Request<MarketEvent>> {
        let customer = self.services.customer;
        let mut pending: Vec<Vec<CustomerId>> = vec![Vec::new(); customer.n_partitions() as usize];
        let mut out = Vec::new();
        let batch = |p: usize, ids: Vec<CustomerId>| Request {
            service: customer,
            partition: p as u32,
            event: MarketEvent::LoadCustomers { customer_ids: ids },
        };
        for id in 0..self.config.n_customers {
            let p = customer.partition_of(&id) as usize;
            pending[p].push(id);
            if pending[p].len() == data::LOAD_CUSTOMERS_PER_REQUEST {
                out.push(batch(p, std::mem::take(&mut pending[p])));
            }
        }
        for (p, ids) in pending.into_iter().enumerate() {
            if !ids.is_empty() {
                out.push(batch(p, ids));
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
            out.push(Request::keyed(
                self.services.product,
                &seller_id,
                MarketEvent::LoadSeller {
                    seller_id,
                    products,
                    initial_stock: self.config.initial_stock,
                },
            ));
        }
        out
    }

    /// Puts items in a customer's cart (priced from the cart's replica at that moment).
    pub fn cart_add(
        &self,
        customer_id: CustomerId,
        items: Vec<CartAddItem>,
    ) -> Request<MarketEvent> {
        Request::keyed(
            self.services.cart,
            &customer_id,
            MarketEvent::CartAdd { customer_id, items },
        )
    }

    /// Adds `add` to the customer's cart and checks the whole cart out.
    pub fn checkout(&self, customer_id: CustomerId, add: Vec<CartAddItem>) -> Request<MarketEvent> {
        Request::keyed(
            self.services.cart,
            &customer_id,
            MarketEvent::Checkout { customer_id, add },
        )
    }

    /// Changes a product's price by `pct` percent (±1 to ±10).
    pub fn price_update(
        &self,
        seller_id: SellerId,
        product_id: ProductId,
        pct: i8,
    ) -> Request<MarketEvent> {
        Request::keyed(
            self.services.product,
            &seller_id,
            MarketEvent::PriceUpdate {
                seller_id,
                product_id,
                pct,
            },
        )
    }

    /// Replaces a product by a new version.
    pub fn update_product(
        &self,
        seller_id: SellerId,
        product_id: ProductId,
    ) -> Request<MarketEvent> {
        Request::keyed(
            self.services.product,
            &seller_id,
            MarketEvent::UpdateProduct {
                seller_id,
                product_id,
            },
        )
    }

    /// Delivers the oldest open package of each of `sellers` (1 to 10, distinct).
    pub fn update_delivery(&self, sellers: Vec<SellerId>) -> Request<MarketEvent> {
        let first = sellers.first().copied().unwrap_or(0);
        Request::keyed(
            self.services.shipment,
            &first,
            MarketEvent::UpdateDelivery { sellers },
        )
    }

    /// The request of a generated operation (`None` for the dashboard, which is a query).
    pub fn request(&self, op: MarketOp) -> Option<Request<MarketEvent>> {
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
        .with_local_deliveries(self.services.shipment))
    }

    /// The seller dashboard: in-progress entries and aggregates at one snapshot.
    pub async fn dashboard(
        &self,
        client: &Client<MarketApp>,
        seller_id: SellerId,
    ) -> Result<Dashboard, TxnError> {
        let parts = client
            .query(&[self.services.seller], self.dashboard_fn(seller_id))
            .await?;
        Ok(Dashboard::from_parts(seller_id, parts))
    }

    /// The seller dashboard on the serial executor.
    pub fn dashboard_serial(
        &self,
        exec: &SerialExecutor<MarketApp>,
        seller_id: SellerId,
    ) -> Dashboard {
        let parts = exec.query(&[self.services.seller], self.dashboard_fn(seller_id));
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
        move |view| {
            let entries = view
                .range(
                    t.order_entries,
                    EntryKey::bound(seller_id, false, false)
                        ..=EntryKey::bound(seller_id, false, true),
                )
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
