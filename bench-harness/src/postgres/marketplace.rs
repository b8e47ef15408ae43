//! The Online Marketplace in SQL: the eight services' tables in one database, each business
//! transaction one serializable transaction doing what the whole vmsdb chain does.
//!
//! Tables and keys are the vmsdb ones (`services::marketplace::model`), one row per vmsdb row,
//! so the final state reads back into a `MarketSnapshot` and is judged by the same checkers.
//! Differences forced by having one database instead of partitioned services:
//! - The cart's product replicas are one table (`product_replicas`), the single replica of the
//!   single cart service: written in the same transaction as the product, read by the cart
//!   fill. The snapshot shows it as cart partition 0 (`n_cart_partitions = 1`).
//! - A cart is its `cart_items` rows; the cart index is the index on `(seller_id,
//!   product_id)`, so the snapshot's `cart_index` is derived from the rows.
//! - An order id comes from a counter of the run (vmsdb uses the checkout's TID), and the
//!   payment provider's decision from an RNG seeded by it (vmsdb seeds by the TID).
//! - Timestamps are the wall clock in milliseconds (vmsdb uses the epoch's logged time).
//!
//! Statements that do not depend on each other's results are pipelined: sent together, run by
//! the server in order, in one round trip. Rows are locked in a fixed order where several of
//! one table are written (stock lines sorted by seller and product, as the cart keeps them).

use super::{
    Col, PgConn, PgFailure, PgWorkload, TxnResult, abort_with, business_abort, conv,
    insert_columns, now_ms, pipeline, read_rows,
};
use crate::workload::{Effects, System, Workload};
use crate::workloads::marketplace::MarketplaceWorkload;
use futures::FutureExt;
use futures::future::BoxFuture;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use services::Violations;
use services::marketplace::{
    self as market, Cart, CartAdd, CartAddItem, CartIndexKey, CartItem, CartsEvent, Checkout,
    CheckoutDraft, Customer, CustomerCounters, CustomerId, CustomersEvent, Dashboard,
    DeliveryStatus, EntryKey, LoadCustomers, LoadSeller, MarketAppEvent, MarketSnapshot,
    OpenDeliveryKey, Order, OrderEntry, OrderHistory, OrderItem, OrderKey, OrderPartKey,
    OrderStatus, Package, PackageStatus, Payment, PaymentCard, PaymentStatus, PaymentType,
    PriceUpdate, Product, ProductKey, ProductStatus, ProductsEvent, Replica, Seller, SellerId,
    SellerView, SellerViewKey, Shipment, ShipmentStatus, ShipmentsEvent, StockItem, Totals,
    UpdateDelivery, UpdateProduct, kinds,
};
use services::marketplace::{CART_ITEMS_MAX, DELIVERY_SELLERS_MAX, ITEM_QUANTITY_MAX, MarketError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

type P<'a> = &'a (dyn ToSql + Sync);

/// The words the marketplace's `MarketError` messages start with, for the aborts the baseline
/// words itself (where its SQL rows do not hold the model's types); the others are the
/// services' own `MarketError`s.
mod reasons {
    pub const STOCK_SHORTAGE: &str = "stock shortage";
    pub const VERSION_MISMATCH: &str = "version mismatch";
    pub const UNKNOWN_PRODUCT: &str = "unknown product";
    pub const UNKNOWN_CUSTOMER: &str = "unknown customer";
    pub const BROKEN_STATE: &str = "broken state";
}

/// The service names abort reasons carry, and the run's counters.
pub struct MarketRun {
    next_order: AtomicU64,
    seed: u64,
    payment_failure_pct: u8,
    product: String,
    stock: String,
    cart: String,
    order: String,
    shipment: String,
    seller: String,
    customer: String,
}

/// Prepared statements of one connection.
pub struct MarketStmts {
    cart_get: Statement,
    cart_put: Statement,
    cart_clear: Statement,
    replica_get: Statement,
    stock_take: Statement,
    stock_get: Statement,
    payment_insert: Statement,
    card_insert: Statement,
    order_insert: Statement,
    items_insert: Statement,
    history_insert: Statement,
    entries_insert: Statement,
    views_apply: Statement,
    shipment_insert: Statement,
    packages_insert: Statement,
    open_insert: Statement,
    customer_pay: Statement,
    product_get: Statement,
    seq_next: Statement,
    product_set_price: Statement,
    product_set_version: Statement,
    replica_put: Statement,
    cart_reprice: Statement,
    stock_adopt: Statement,
    cart_drop_old: Statement,
    take_oldest: Statement,
    package_deliver: Statement,
    shipment_deliver: Statement,
    entry_deliver: Statement,
    order_get: Statement,
    customer_deliver: Statement,
    order_set: Statement,
    history_put: Statement,
    dashboard_entries: Statement,
    dashboard_views: Statement,
}

/// `[$1, …, $n]` as statement parameters.
fn params<const N: usize>(v: &[i64; N]) -> [P<'_>; N] {
    std::array::from_fn(|i| &v[i] as P<'_>)
}

/// `[$1, …, $n]` as statement parameters, followed by `tail` (`T` = `N` + `M`).
fn params_and<'a, const N: usize, const M: usize, const T: usize>(
    v: &'a [i64; N],
    tail: [P<'a>; M],
) -> [P<'a>; T] {
    const { assert!(T == N + M, "T must be N + M") };
    std::array::from_fn(|i| if i < N { &v[i] as P<'a> } else { tail[i - N] })
}

fn cols_params(cols: &[Vec<i64>]) -> impl Iterator<Item = P<'_>> {
    cols.iter().map(|c| c as P<'_>)
}

/// `n` columns of rows.
fn columns<const N: usize>(rows: impl Iterator<Item = [i64; N]>) -> Vec<Vec<i64>> {
    let mut cols = vec![Vec::new(); N];
    for row in rows {
        for (c, v) in cols.iter_mut().zip(row) {
            c.push(v);
        }
    }
    cols
}

fn unnest(n: usize, from: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}::bigint[]"))
        .collect::<Vec<_>>()
        .join(", ")
}

const TOTALS_COLS: &str = "count_items, total_items, total_freight, total_amount, \
                           total_incentive, total_invoice";

fn totals_of(row: &Row, from: usize) -> Result<Totals, PgFailure> {
    Ok(Totals {
        count_items: conv(row.try_get(from)?, "count_items")?,
        total_items: row.try_get(from + 1)?,
        total_freight: row.try_get(from + 2)?,
        total_amount: row.try_get(from + 3)?,
        total_incentive: row.try_get(from + 4)?,
        total_invoice: row.try_get(from + 5)?,
    })
}

fn totals_vals(t: &Totals) -> [i64; 6] {
    [
        i64::from(t.count_items),
        t.total_items,
        t.total_freight,
        t.total_amount,
        t.total_incentive,
        t.total_invoice,
    ]
}

impl PgWorkload for MarketplaceWorkload {
    type PgRun = MarketRun;
    type Stmts = MarketStmts;

    // The status enums are PostgreSQL enum types; their labels are the variants' names in
    // snake case, which the `postgres-types` derives on the model's enums check when a
    // statement binds or reads them.
    const TABLES: &'static str = "
        CREATE TYPE product_status AS ENUM ('approved');
        CREATE TYPE order_status AS ENUM ('invoiced', 'payment_processed', 'payment_failed',
            'ready_for_shipment', 'in_transit', 'delivered');
        CREATE TYPE payment_type AS ENUM ('credit_card', 'debit_card', 'boleto');
        CREATE TYPE payment_status AS ENUM ('approved', 'failed');
        CREATE TYPE shipment_status AS ENUM ('approved', 'delivery_in_progress', 'concluded');
        CREATE TYPE package_status AS ENUM ('shipped', 'delivered');
        CREATE TYPE delivery_status AS ENUM ('shipped', 'delivered');
        CREATE TABLE products (seller_id bigint NOT NULL, product_id bigint NOT NULL,
            name text NOT NULL, sku text NOT NULL, category text NOT NULL,
            description text NOT NULL, price bigint NOT NULL, freight_value bigint NOT NULL,
            status product_status NOT NULL, version bigint NOT NULL,
            update_seq bigint NOT NULL);
        CREATE TABLE seller_update_seq (seller_id bigint NOT NULL, seq bigint NOT NULL);
        CREATE TABLE stock_items (seller_id bigint NOT NULL, product_id bigint NOT NULL,
            qty_available bigint NOT NULL, qty_reserved bigint NOT NULL,
            order_count bigint NOT NULL, ytd bigint NOT NULL, version bigint NOT NULL);
        CREATE TABLE product_replicas (seller_id bigint NOT NULL, product_id bigint NOT NULL,
            price bigint NOT NULL, freight_value bigint NOT NULL, version bigint NOT NULL,
            update_seq bigint NOT NULL);
        CREATE TABLE cart_items (customer_id bigint NOT NULL, seller_id bigint NOT NULL,
            product_id bigint NOT NULL, unit_price bigint NOT NULL,
            freight_value bigint NOT NULL, quantity bigint NOT NULL, voucher bigint NOT NULL,
            version bigint NOT NULL);
        CREATE TABLE orders (customer_id bigint NOT NULL, order_id bigint NOT NULL,
            status order_status NOT NULL, created_ms bigint NOT NULL,
            updated_ms bigint NOT NULL,
            count_items bigint NOT NULL, total_items bigint NOT NULL,
            total_freight bigint NOT NULL, total_amount bigint NOT NULL,
            total_incentive bigint NOT NULL, total_invoice bigint NOT NULL,
            history_len bigint NOT NULL);
        CREATE TABLE order_items (customer_id bigint NOT NULL, order_id bigint NOT NULL,
            idx bigint NOT NULL, seller_id bigint NOT NULL, product_id bigint NOT NULL,
            unit_price bigint NOT NULL, freight_value bigint NOT NULL, quantity bigint NOT NULL,
            total_items bigint NOT NULL, total_amount bigint NOT NULL, voucher bigint NOT NULL,
            version bigint NOT NULL);
        CREATE TABLE order_history (customer_id bigint NOT NULL, order_id bigint NOT NULL,
            idx bigint NOT NULL, created_ms bigint NOT NULL, status order_status NOT NULL);
        CREATE TABLE order_payments (customer_id bigint NOT NULL, order_id bigint NOT NULL,
            idx bigint NOT NULL, payment_type payment_type NOT NULL,
            installments bigint NOT NULL, value bigint NOT NULL, status payment_status NOT NULL,
            created_ms bigint NOT NULL);
        CREATE TABLE order_payment_cards (customer_id bigint NOT NULL,
            order_id bigint NOT NULL, idx bigint NOT NULL, card_last4 bigint NOT NULL,
            installments bigint NOT NULL);
        CREATE TABLE shipments (customer_id bigint NOT NULL, order_id bigint NOT NULL,
            package_count bigint NOT NULL, delivered_count bigint NOT NULL,
            total_freight bigint NOT NULL, status shipment_status NOT NULL,
            created_ms bigint NOT NULL);
        CREATE TABLE packages (customer_id bigint NOT NULL, order_id bigint NOT NULL,
            idx bigint NOT NULL, seller_id bigint NOT NULL, n_items bigint NOT NULL,
            quantity bigint NOT NULL, freight_value bigint NOT NULL,
            shipping_ms bigint NOT NULL, delivery_ms bigint, status package_status NOT NULL);
        CREATE TABLE open_deliveries (seller_id bigint NOT NULL, created_ms bigint NOT NULL,
            customer_id bigint NOT NULL, order_id bigint NOT NULL, package_id bigint NOT NULL);
        CREATE TABLE sellers (seller_id bigint NOT NULL, name text NOT NULL,
            city text NOT NULL);
        CREATE TABLE order_entries (seller_id bigint NOT NULL, delivered boolean NOT NULL,
            customer_id bigint NOT NULL, order_id bigint NOT NULL, package_id bigint NOT NULL,
            count_items bigint NOT NULL, total_items bigint NOT NULL,
            total_freight bigint NOT NULL, total_amount bigint NOT NULL,
            total_incentive bigint NOT NULL, total_invoice bigint NOT NULL,
            order_status order_status NOT NULL, delivery_status delivery_status NOT NULL);
        CREATE TABLE seller_views (seller_id bigint NOT NULL, shard bigint NOT NULL,
            count_orders bigint NOT NULL, count_items bigint NOT NULL,
            total_items bigint NOT NULL, total_freight bigint NOT NULL,
            total_amount bigint NOT NULL, total_incentive bigint NOT NULL,
            total_invoice bigint NOT NULL);
        CREATE TABLE customers (customer_id bigint NOT NULL, name text NOT NULL,
            card_last4 bigint NOT NULL, success_payment_count bigint NOT NULL,
            failed_payment_count bigint NOT NULL, delivery_count bigint NOT NULL);";

    const INDEXES: &'static str = "
        ALTER TABLE products ADD PRIMARY KEY (seller_id, product_id);
        ALTER TABLE seller_update_seq ADD PRIMARY KEY (seller_id);
        ALTER TABLE stock_items ADD PRIMARY KEY (seller_id, product_id);
        ALTER TABLE product_replicas ADD PRIMARY KEY (seller_id, product_id);
        ALTER TABLE cart_items ADD PRIMARY KEY (customer_id, seller_id, product_id);
        CREATE INDEX cart_items_by_product ON cart_items (seller_id, product_id);
        ALTER TABLE orders ADD PRIMARY KEY (customer_id, order_id);
        ALTER TABLE order_items ADD PRIMARY KEY (customer_id, order_id, idx);
        ALTER TABLE order_history ADD PRIMARY KEY (customer_id, order_id, idx);
        ALTER TABLE order_payments ADD PRIMARY KEY (customer_id, order_id, idx);
        ALTER TABLE order_payment_cards ADD PRIMARY KEY (customer_id, order_id, idx);
        ALTER TABLE shipments ADD PRIMARY KEY (customer_id, order_id);
        ALTER TABLE packages ADD PRIMARY KEY (customer_id, order_id, idx);
        ALTER TABLE open_deliveries
            ADD PRIMARY KEY (seller_id, created_ms, customer_id, order_id);
        ALTER TABLE sellers ADD PRIMARY KEY (seller_id);
        ALTER TABLE order_entries
            ADD PRIMARY KEY (seller_id, delivered, customer_id, order_id);
        ALTER TABLE seller_views ADD PRIMARY KEY (seller_id, shard);
        ALTER TABLE customers ADD PRIMARY KEY (customer_id);";

    fn pg_run(&self) -> MarketRun {
        let m = self.marketplace();
        let name = |s| m.app().service_name(s).to_string();
        MarketRun {
            next_order: AtomicU64::new(1),
            seed: m.config.seed,
            payment_failure_pct: m.config.payment_failure_pct,
            product: name(*m.services.product),
            stock: name(*m.services.stock),
            cart: name(*m.services.cart),
            order: name(*m.services.order),
            shipment: name(*m.services.shipment),
            seller: name(*m.services.seller),
            customer: name(*m.services.customer),
        }
    }

    async fn pg_load(&self, client: &Client) -> Result<u64, PgFailure> {
        // The rows vmsdb's load requests create, handler by handler (LoadCustomers, then per
        // seller LoadSeller → products, update sequence, LoadStock, LoadSellerRow, replicas).
        let (mut cust_ids, mut cust_names, mut cust_cards) = (Vec::new(), Vec::new(), Vec::new());
        let mut prod_int: Vec<Vec<i64>> = vec![Vec::new(); 6];
        let mut prod_status: Vec<ProductStatus> = Vec::new();
        let mut prod_text: Vec<Vec<String>> = vec![Vec::new(); 4];
        let mut stock: Vec<Vec<i64>> = vec![Vec::new(); 7];
        let (mut seller_ids, mut seller_names, mut seller_cities) =
            (Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.n_load() {
            let (_, _, event) = self.load_request(i).into_parts();
            match event {
                MarketAppEvent::Customers(CustomersEvent::LoadCustomers(LoadCustomers {
                    customer_ids,
                })) => {
                    for id in customer_ids {
                        cust_ids.push(i64::from(id));
                        cust_names.push(format!("customer-{id}"));
                        cust_cards.push(i64::from(id % 10_000));
                    }
                }
                MarketAppEvent::Products(ProductsEvent::LoadSeller(LoadSeller {
                    seller_id,
                    products,
                    initial_stock,
                })) => {
                    for np in products {
                        let p = &np.product;
                        let vals = [
                            i64::from(seller_id),
                            i64::from(np.product_id),
                            p.price,
                            p.freight_value,
                            i64::from(p.version),
                            conv(p.update_seq as i64, "update_seq")?,
                        ];
                        for (c, v) in prod_int.iter_mut().zip(vals) {
                            c.push(v);
                        }
                        prod_status.push(p.status);
                        for (c, v) in
                            prod_text
                                .iter_mut()
                                .zip([&p.name, &p.sku, &p.category, &p.description])
                        {
                            c.push(v.clone());
                        }
                        let st = [
                            i64::from(seller_id),
                            i64::from(np.product_id),
                            initial_stock,
                            0,
                            0,
                            0,
                            i64::from(p.version),
                        ];
                        for (c, v) in stock.iter_mut().zip(st) {
                            c.push(v);
                        }
                    }
                    seller_ids.push(i64::from(seller_id));
                    seller_names.push(format!("seller-{seller_id}"));
                    seller_cities.push(format!("city-{}", seller_id % 100));
                }
                other => {
                    return Err(PgFailure::Harness(format!(
                        "load request {i} is not a customer or seller load: {other:?}"
                    )));
                }
            }
        }
        let zeros = vec![0i64; cust_ids.len()];
        let mut n = insert_columns(
            client,
            "INSERT INTO customers (customer_id, name, card_last4, success_payment_count, \
             failed_payment_count, delivery_count) SELECT * FROM unnest($1::bigint[], \
             $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])",
            &[
                Col::Int(&cust_ids),
                Col::Text(&cust_names),
                Col::Int(&cust_cards),
                Col::Int(&zeros),
                Col::Int(&zeros),
                Col::Int(&zeros),
            ],
        )
        .await?;
        n += insert_columns(
            client,
            "INSERT INTO products (seller_id, product_id, price, freight_value, version, \
             update_seq, status, name, sku, category, description) SELECT * FROM \
             unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], \
             $6::bigint[], $7::product_status[], $8::text[], $9::text[], $10::text[], \
             $11::text[])",
            &prod_int
                .iter()
                .map(|c| Col::Int(c))
                .chain([Col::ProductStatus(&prod_status)])
                .chain(prod_text.iter().map(|c| Col::Text(c)))
                .collect::<Vec<_>>(),
        )
        .await?;
        // The cart's replicas: price, freight, version, update sequence of each product.
        n += insert_columns(
            client,
            &format!(
                "INSERT INTO product_replicas (seller_id, product_id, price, freight_value, \
                 version, update_seq) SELECT * FROM unnest({})",
                unnest(6, 1)
            ),
            &prod_int.iter().map(|c| Col::Int(c)).collect::<Vec<_>>(),
        )
        .await?;
        n += insert_columns(
            client,
            &format!(
                "INSERT INTO stock_items (seller_id, product_id, qty_available, qty_reserved, \
                 order_count, ytd, version) SELECT * FROM unnest({})",
                unnest(7, 1)
            ),
            &stock.iter().map(|c| Col::Int(c)).collect::<Vec<_>>(),
        )
        .await?;
        let seller_zeros = vec![0i64; seller_ids.len()];
        n += insert_columns(
            client,
            "INSERT INTO seller_update_seq (seller_id, seq) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[])",
            &[Col::Int(&seller_ids), Col::Int(&seller_zeros)],
        )
        .await?;
        n += insert_columns(
            client,
            "INSERT INTO sellers (seller_id, name, city) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
            &[
                Col::Int(&seller_ids),
                Col::Text(&seller_names),
                Col::Text(&seller_cities),
            ],
        )
        .await?;
        Ok(n)
    }

    async fn pg_prepare(&self, c: &Client) -> Result<MarketStmts, PgFailure> {
        let views_set = "count_orders = v.count_orders + EXCLUDED.count_orders, \
             count_items = v.count_items + EXCLUDED.count_items, \
             total_items = v.total_items + EXCLUDED.total_items, \
             total_freight = v.total_freight + EXCLUDED.total_freight, \
             total_amount = v.total_amount + EXCLUDED.total_amount, \
             total_incentive = v.total_incentive + EXCLUDED.total_incentive, \
             total_invoice = v.total_invoice + EXCLUDED.total_invoice";
        let views_cols = format!("seller_id, shard, count_orders, {TOTALS_COLS}");
        let p = |sql: String| async move { c.prepare(&sql).await };
        Ok(MarketStmts {
            cart_get: p(
                "SELECT seller_id, product_id, unit_price, freight_value, quantity, \
                 voucher, version FROM cart_items WHERE customer_id = $1 \
                 ORDER BY seller_id, product_id"
                    .into(),
            )
            .await?,
            cart_put: p(
                "INSERT INTO cart_items AS ci (customer_id, seller_id, product_id, \
                 unit_price, freight_value, quantity, voucher, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (customer_id, seller_id, product_id) DO UPDATE SET \
                 unit_price = EXCLUDED.unit_price, freight_value = EXCLUDED.freight_value, \
                 quantity = EXCLUDED.quantity, voucher = EXCLUDED.voucher, \
                 version = EXCLUDED.version"
                    .into(),
            )
            .await?,
            cart_clear: p("DELETE FROM cart_items WHERE customer_id = $1".into()).await?,
            replica_get: p(
                "SELECT price, freight_value, version FROM product_replicas \
                 WHERE seller_id = $1 AND product_id = $2"
                    .into(),
            )
            .await?,
            // Reserve (reserved + qty ≤ available, at the cart's version) and settle at once:
            // confirming takes the units, releasing leaves the row as it was.
            stock_take: p(
                "UPDATE stock_items SET qty_available = qty_available - $5, \
                 order_count = order_count + $6, ytd = ytd + $5 \
                 WHERE seller_id = $1 AND product_id = $2 AND version = $3 \
                 AND qty_reserved + $4 <= qty_available"
                    .into(),
            )
            .await?,
            stock_get: p(
                "SELECT qty_available, qty_reserved, version FROM stock_items \
                 WHERE seller_id = $1 AND product_id = $2"
                    .into(),
            )
            .await?,
            payment_insert: p("INSERT INTO order_payments (customer_id, order_id, idx, \
                 payment_type, installments, value, status, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                .into())
            .await?,
            card_insert: p(
                "INSERT INTO order_payment_cards (customer_id, order_id, idx, \
                 card_last4, installments) VALUES ($1, $2, $3, $4, $5)"
                    .into(),
            )
            .await?,
            order_insert: p(format!(
                "INSERT INTO orders (customer_id, order_id, status, created_ms, updated_ms, \
                 {TOTALS_COLS}, history_len) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .await?,
            items_insert: p(format!(
                "INSERT INTO order_items (customer_id, order_id, idx, seller_id, product_id, \
                 unit_price, freight_value, quantity, total_items, total_amount, voucher, \
                 version) SELECT $1::bigint, $2::bigint, * FROM unnest({})",
                unnest(10, 3)
            ))
            .await?,
            history_insert: p(
                "INSERT INTO order_history (customer_id, order_id, idx, created_ms, status) \
                 SELECT $1::bigint, $2::bigint, i, $3::bigint, st \
                 FROM unnest($4::bigint[], $5::order_status[]) AS t(i, st)"
                    .into(),
            )
            .await?,
            entries_insert: p(format!(
                "INSERT INTO order_entries (seller_id, delivered, customer_id, order_id, \
                 package_id, {TOTALS_COLS}, order_status, delivery_status) \
                 SELECT s, false, $1::bigint, $2::bigint, pk, ci, ti, tf, ta, tinc, tinv, \
                 $3::order_status, $4::delivery_status \
                 FROM unnest({}) AS t(s, pk, ci, ti, tf, ta, tinc, tinv)",
                unnest(8, 5)
            ))
            .await?,
            views_apply: p(format!(
                "INSERT INTO seller_views AS v ({views_cols}) SELECT * FROM unnest({}) \
                 ON CONFLICT (seller_id, shard) DO UPDATE SET {views_set}",
                unnest(9, 1)
            ))
            .await?,
            shipment_insert: p(
                "INSERT INTO shipments (customer_id, order_id, package_count, \
                 delivered_count, total_freight, status, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    .into(),
            )
            .await?,
            packages_insert: p(format!(
                "INSERT INTO packages (customer_id, order_id, idx, seller_id, n_items, \
                 quantity, freight_value, shipping_ms, delivery_ms, status) \
                 SELECT $1::bigint, $2::bigint, i, s, n, q, f, $3::bigint, NULL, \
                 $4::package_status \
                 FROM unnest({}) AS t(i, s, n, q, f)",
                unnest(5, 5)
            ))
            .await?,
            open_insert: p(format!(
                "INSERT INTO open_deliveries (seller_id, created_ms, customer_id, order_id, \
                 package_id) SELECT s, $1::bigint, $2::bigint, $3::bigint, pk \
                 FROM unnest({}) AS t(s, pk)",
                unnest(2, 4)
            ))
            .await?,
            customer_pay: p("UPDATE customers SET \
                 success_payment_count = success_payment_count + $2, \
                 failed_payment_count = failed_payment_count + $3 WHERE customer_id = $1"
                .into())
            .await?,
            product_get: p("SELECT name, price, freight_value, version FROM products \
                 WHERE seller_id = $1 AND product_id = $2"
                .into())
            .await?,
            seq_next: p(
                "INSERT INTO seller_update_seq AS q (seller_id, seq) VALUES ($1, 1) \
                 ON CONFLICT (seller_id) DO UPDATE SET seq = q.seq + 1 RETURNING seq"
                    .into(),
            )
            .await?,
            product_set_price: p("UPDATE products SET price = $3, update_seq = $4 \
                 WHERE seller_id = $1 AND product_id = $2"
                .into())
            .await?,
            product_set_version: p("UPDATE products SET version = $3, description = $4, \
                 update_seq = $5 WHERE seller_id = $1 AND product_id = $2"
                .into())
            .await?,
            replica_put: p(
                "INSERT INTO product_replicas AS r (seller_id, product_id, price, \
                 freight_value, version, update_seq) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (seller_id, product_id) DO UPDATE SET price = EXCLUDED.price, \
                 freight_value = EXCLUDED.freight_value, version = EXCLUDED.version, \
                 update_seq = EXCLUDED.update_seq"
                    .into(),
            )
            .await?,
            cart_reprice: p("UPDATE cart_items SET unit_price = $4, freight_value = $5 \
                 WHERE seller_id = $1 AND product_id = $2 AND version = $3"
                .into())
            .await?,
            stock_adopt: p("UPDATE stock_items SET version = $3 \
                 WHERE seller_id = $1 AND product_id = $2"
                .into())
            .await?,
            cart_drop_old: p("DELETE FROM cart_items \
                 WHERE seller_id = $1 AND product_id = $2 AND version <> $3"
                .into())
            .await?,
            // One seller's oldest open package queued before now, taken off the queue.
            take_oldest: p("DELETE FROM open_deliveries \
                 WHERE (seller_id, created_ms, customer_id, order_id) = ( \
                   SELECT seller_id, created_ms, customer_id, order_id FROM open_deliveries \
                   WHERE seller_id = $1 AND created_ms < $2 \
                   ORDER BY created_ms, customer_id, order_id LIMIT 1) \
                 RETURNING customer_id, order_id, package_id"
                .into())
            .await?,
            // $5: delivered, $6: shipped.
            package_deliver: p("UPDATE packages SET status = $5, delivery_ms = $4 \
                 WHERE customer_id = $1 AND order_id = $2 AND idx = $3 AND status = $6 \
                 RETURNING seller_id"
                .into())
            .await?,
            // $3: concluded, $4: delivery in progress.
            shipment_deliver: p(
                "UPDATE shipments SET delivered_count = delivered_count + 1, \
                 status = CASE WHEN delivered_count + 1 = package_count \
                          THEN $3::shipment_status ELSE $4::shipment_status END \
                 WHERE customer_id = $1 AND order_id = $2 \
                 RETURNING delivered_count = package_count"
                    .into(),
            )
            .await?,
            // The seller's open entry becomes delivered and leaves its dashboard aggregate.
            entry_deliver: p(format!(
                "WITH e AS ( \
                   UPDATE order_entries SET delivered = true, order_status = $5, \
                          delivery_status = $6 \
                   WHERE seller_id = $1 AND delivered = false AND customer_id = $2 \
                     AND order_id = $3 \
                   RETURNING {TOTALS_COLS}) \
                 INSERT INTO seller_views AS v ({views_cols}) \
                 SELECT $1, $4, -1, -count_items, -total_items, -total_freight, -total_amount, \
                        -total_incentive, -total_invoice FROM e \
                 ON CONFLICT (seller_id, shard) DO UPDATE SET {views_set} \
                 RETURNING 1"
            ))
            .await?,
            order_get: p("SELECT status, history_len FROM orders \
                 WHERE customer_id = $1 AND order_id = $2"
                .into())
            .await?,
            customer_deliver: p("UPDATE customers SET delivery_count = delivery_count + 1 \
                 WHERE customer_id = $1 RETURNING 1"
                .into())
            .await?,
            order_set: p(
                "UPDATE orders SET status = $3, history_len = $4, updated_ms = $5 \
                 WHERE customer_id = $1 AND order_id = $2"
                    .into(),
            )
            .await?,
            history_put: p(
                "INSERT INTO order_history AS h (customer_id, order_id, idx, \
                 created_ms, status) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (customer_id, order_id, idx) DO UPDATE SET \
                 created_ms = EXCLUDED.created_ms, status = EXCLUDED.status"
                    .into(),
            )
            .await?,
            dashboard_entries: p(format!(
                "SELECT customer_id, order_id, package_id, {TOTALS_COLS}, order_status, \
                 delivery_status FROM order_entries WHERE seller_id = $1 AND delivered = false \
                 ORDER BY customer_id, order_id"
            ))
            .await?,
            dashboard_views: p(format!(
                "SELECT count_orders, {TOTALS_COLS} FROM seller_views WHERE seller_id = $1"
            ))
            .await?,
        })
    }

    async fn pg_txn(
        &self,
        r: &MarketRun,
        conn: &PgConn<MarketStmts>,
        event: &MarketAppEvent,
    ) -> Result<TxnResult, PgFailure> {
        let (c, s) = (&conn.client, &conn.stmts);
        match event {
            MarketAppEvent::Carts(CartsEvent::Checkout(Checkout { customer_id, add })) => {
                checkout(r, c, s, *customer_id, add).await
            }
            MarketAppEvent::Carts(CartsEvent::CartAdd(CartAdd { customer_id, items })) => {
                cart_add(r, c, s, *customer_id, items).await
            }
            MarketAppEvent::Products(ProductsEvent::PriceUpdate(PriceUpdate {
                seller_id,
                product_id,
                pct,
            })) => price_update(r, c, s, *seller_id, *product_id, *pct).await,
            MarketAppEvent::Products(ProductsEvent::UpdateProduct(UpdateProduct {
                seller_id,
                product_id,
            })) => update_product(r, c, s, *seller_id, *product_id).await,
            MarketAppEvent::Shipments(ShipmentsEvent::UpdateDelivery(UpdateDelivery {
                sellers,
            })) => update_delivery(r, c, s, sellers).await,
            other => Err(PgFailure::Harness(format!(
                "{other:?} is a load or an internal step of a vmsdb chain, not a request the \
                 postgres baseline runs"
            ))),
        }
    }

    async fn pg_query(
        &self,
        _r: &MarketRun,
        conn: &PgConn<MarketStmts>,
        seller_id: &SellerId,
    ) -> Result<(), PgFailure> {
        let (c, s) = (&conn.client, &conn.stmts);
        let sid = [i64::from(*seller_id)];
        let p = params(&sid);
        let mut results = pipeline(vec![
            c.query(&s.dashboard_entries, &p).boxed(),
            c.query(&s.dashboard_views, &p).boxed(),
        ])
        .await?
        .into_iter();
        let (entries, views) = (
            results.next().unwrap_or_default(),
            results.next().unwrap_or_default(),
        );
        let mut d = Dashboard {
            seller_id: *seller_id,
            entries: Vec::with_capacity(entries.len()),
            view: SellerView::default(),
        };
        for row in &entries {
            let key = EntryKey {
                seller_id: *seller_id,
                delivered: false,
                customer_id: conv(row.try_get(0)?, "customer id")?,
                order_id: conv(row.try_get(1)?, "order id")?,
            };
            d.entries.push((key, entry_of(row, 2)?));
        }
        for row in &views {
            d.view = d.view.merge(&view_of(row, 0)?);
        }
        if !d.agrees() {
            self.torn_dashboards(System::Postgres)
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn pg_audit(
        &self,
        _r: &MarketRun,
        client: &Client,
        effects: &Effects,
    ) -> Result<Violations, PgFailure> {
        let snapshot = read_snapshot(client).await?;
        Ok(market::check(
            &snapshot,
            &self.expected(effects, System::Postgres),
        ))
    }
}

/// An order entry's columns from `from`: package id, totals, order and delivery status.
fn entry_of(row: &Row, from: usize) -> Result<OrderEntry, PgFailure> {
    Ok(OrderEntry {
        package_id: conv(row.try_get(from)?, "package id")?,
        totals: totals_of(row, from + 1)?,
        order_status: row.try_get(from + 7)?,
        delivery_status: row.try_get(from + 8)?,
    })
}

/// A seller view's columns from `from`: count of orders, then the totals.
fn view_of(row: &Row, from: usize) -> Result<SellerView, PgFailure> {
    let t = totals_of(row, from + 1)?;
    Ok(SellerView {
        count_orders: row.try_get(from)?,
        count_items: i64::from(t.count_items),
        total_items: t.total_items,
        total_freight: t.total_freight,
        total_amount: t.total_amount,
        total_incentive: t.total_incentive,
        total_invoice: t.total_invoice,
    })
}

/// The cart-fill step of vmsdb's `add_to_cart`: checks the request and prices each item from
/// the replica, in the request's order, merging it into `cart` (sorted by seller, product).
async fn fill_cart(
    r: &MarketRun,
    c: &Client,
    s: &MarketStmts,
    customer_id: CustomerId,
    add: &[CartAddItem],
) -> Result<Result<(Vec<CartItem>, bool), TxnResult>, PgFailure> {
    if add.len() > CART_ITEMS_MAX {
        return Ok(Err(business_abort(
            &r.cart,
            MarketError::TooManyItems { n_items: add.len() },
        )?));
    }
    let cid = [i64::from(customer_id)];
    let cart_params = params(&cid);
    let keys: Vec<[i64; 2]> = add
        .iter()
        .map(|a| [i64::from(a.seller_id), i64::from(a.product_id)])
        .collect();
    let key_params: Vec<[P<'_>; 2]> = keys.iter().map(params).collect();
    let mut reads: Vec<BoxFuture<'_, Result<Vec<Row>, tokio_postgres::Error>>> =
        vec![c.query(&s.cart_get, &cart_params).boxed()];
    reads.extend(
        key_params
            .iter()
            .map(|p| c.query(&s.replica_get, p).boxed()),
    );
    let mut results = pipeline(reads).await?.into_iter();
    let existing = results.next().unwrap_or_default();
    let mut cart = Vec::with_capacity(existing.len() + add.len());
    for row in &existing {
        cart.push(CartItem {
            seller_id: conv(row.try_get(0)?, "seller id")?,
            product_id: conv(row.try_get(1)?, "product id")?,
            unit_price: row.try_get(2)?,
            freight_value: row.try_get(3)?,
            quantity: conv(row.try_get(4)?, "quantity")?,
            voucher: row.try_get(5)?,
            version: conv(row.try_get(6)?, "version")?,
        });
    }
    let had_cart = !cart.is_empty();
    for (a, replica) in add.iter().zip(results) {
        if a.quantity == 0 || a.quantity > ITEM_QUANTITY_MAX {
            return Ok(Err(business_abort(
                &r.cart,
                MarketError::ItemQuantity {
                    product_id: a.product_id,
                    quantity: a.quantity,
                },
            )?));
        }
        let Some(row) = replica.first() else {
            return Ok(Err(business_abort(
                &r.cart,
                MarketError::UnknownProduct {
                    product_id: a.product_id,
                    seller_id: a.seller_id,
                },
            )?));
        };
        let price: i64 = row.try_get(0)?;
        let voucher = if a.voucher {
            price * i64::from(a.quantity) / 10
        } else {
            0
        };
        let item = CartItem {
            seller_id: a.seller_id,
            product_id: a.product_id,
            unit_price: price,
            freight_value: row.try_get(1)?,
            quantity: a.quantity,
            voucher,
            version: conv(row.try_get(2)?, "version")?,
        };
        match cart.binary_search_by_key(&(a.seller_id, a.product_id), |i: &CartItem| {
            (i.seller_id, i.product_id)
        }) {
            Ok(pos) => cart[pos] = item,
            Err(pos) => cart.insert(pos, item),
        }
    }
    Ok(Ok((cart, had_cart)))
}

/// Puts items in a cart (vmsdb's `CartAdd`).
async fn cart_add(
    r: &MarketRun,
    c: &Client,
    s: &MarketStmts,
    customer_id: CustomerId,
    items: &[CartAddItem],
) -> Result<TxnResult, PgFailure> {
    let (cart, _) = match fill_cart(r, c, s, customer_id, items).await? {
        Ok(filled) => filled,
        Err(aborted) => return Ok(aborted),
    };
    let rows: Vec<[i64; 8]> = cart
        .iter()
        .map(|i| {
            [
                i64::from(customer_id),
                i64::from(i.seller_id),
                i64::from(i.product_id),
                i.unit_price,
                i.freight_value,
                i64::from(i.quantity),
                i.voucher,
                i64::from(i.version),
            ]
        })
        .collect();
    let ps: Vec<[P<'_>; 8]> = rows.iter().map(params).collect();
    pipeline(
        ps.iter()
            .map(|p| c.execute(&s.cart_put, p).boxed())
            .collect(),
    )
    .await?;
    Ok(Ok(()))
}

/// The whole checkout chain: fill and clear the cart, price the order, reserve and settle the
/// stock, pay, create the order, its items and history, and when the payment is approved the
/// seller entries, dashboard aggregates, shipment, packages and delivery queue; count the
/// payment on the customer.
async fn checkout(
    r: &MarketRun,
    c: &Client,
    s: &MarketStmts,
    customer_id: CustomerId,
    add: &[CartAddItem],
) -> Result<TxnResult, PgFailure> {
    let (cart, had_cart) = match fill_cart(r, c, s, customer_id, add).await? {
        Ok(filled) => filled,
        Err(aborted) => return Ok(aborted),
    };
    if cart.is_empty() {
        return business_abort(&r.cart, MarketError::EmptyCart { customer_id });
    }
    let now = now_ms();
    let order = OrderKey {
        customer_id,
        order_id: r.next_order.fetch_add(1, Ordering::Relaxed),
    };
    let (items, totals) = OrderItem::priced(&cart);
    let draft = CheckoutDraft {
        order,
        items,
        totals,
        created_ms: now as u64,
    };
    // The payment provider's decision, drawn as vmsdb's payment step draws it.
    let mut rng =
        SmallRng::seed_from_u64(r.seed ^ order.order_id.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let approved = rng.random_range(0..100u8) >= r.payment_failure_pct;
    let (ptype, installments) = match rng.random_range(0..100u8) {
        0..60 => (PaymentType::CreditCard, rng.random_range(1..=10u8)),
        60..80 => (PaymentType::DebitCard, 1),
        _ => (PaymentType::Boleto, 1),
    };
    let card_last4 = rng.random_range(0..10_000u16);
    let pstatus = if approved {
        PaymentStatus::Approved
    } else {
        PaymentStatus::Failed
    };

    let (cid, oid) = (i64::from(customer_id), order.order_id as i64);
    let key = [cid, oid];
    let cart_key = [cid];
    let stock_rows: Vec<[i64; 6]> = draft
        .items
        .iter()
        .map(|i| {
            let q = i64::from(i.quantity);
            [
                i64::from(i.seller_id),
                i64::from(i.product_id),
                i64::from(i.version),
                q,
                if approved { q } else { 0 },
                i64::from(approved),
            ]
        })
        .collect();
    let (payment_idx, installments_count) = (1i64, i64::from(installments));
    let payment_p: [P<'_>; 8] = [
        &cid,
        &oid,
        &payment_idx,
        &ptype,
        &installments_count,
        &draft.totals.total_invoice,
        &pstatus,
        &now,
    ];
    let card = [cid, oid, 1, i64::from(card_last4), i64::from(installments)];
    let mut history = vec![OrderStatus::Invoiced];
    if approved {
        history.extend([OrderStatus::PaymentProcessed, OrderStatus::ReadyForShipment]);
    } else {
        history.push(OrderStatus::PaymentFailed);
    }
    let status = *history.last().expect("history is not empty");
    let t = totals_vals(&draft.totals);
    let history_len = history.len() as i64;
    let order_p: [P<'_>; 12] = [
        &cid,
        &oid,
        &status,
        &now,
        &now,
        &t[0],
        &t[1],
        &t[2],
        &t[3],
        &t[4],
        &t[5],
        &history_len,
    ];
    let item_cols = columns(draft.items.iter().enumerate().map(|(i, it)| {
        [
            i as i64 + 1,
            i64::from(it.seller_id),
            i64::from(it.product_id),
            it.unit_price,
            it.freight_value,
            i64::from(it.quantity),
            it.total_items,
            it.total_amount,
            it.voucher,
            i64::from(it.version),
        ]
    }));
    let history_idx: Vec<i64> = (1..=history_len).collect();
    let history_head = [cid, oid, now];
    let pay_counts = [cid, i64::from(approved), i64::from(!approved)];

    // Per seller, when approved: the entry, the aggregate, the package, the queue entry.
    let groups = draft.seller_groups();
    let mut entry_rows = Vec::new();
    let mut view_rows = Vec::new();
    let mut package_rows = Vec::new();
    let mut open_rows = Vec::new();
    let mut shipment_freight = 0;
    if approved {
        for (package_idx, (seller_id, from, to)) in groups.iter().copied().enumerate() {
            let its = &draft.items[from..to];
            let package_id = package_idx as i64 + 1;
            let mut st = Totals::default();
            for i in its {
                st.add(i);
            }
            let v = totals_vals(&st);
            let sid = i64::from(seller_id);
            entry_rows.push([sid, package_id, v[0], v[1], v[2], v[3], v[4], v[5]]);
            let shard = i64::from(SellerViewKey::of(seller_id, order).shard);
            view_rows.push([sid, shard, 1, v[0], v[1], v[2], v[3], v[4], v[5]]);
            package_rows.push([
                package_id,
                sid,
                (to - from) as i64,
                its.iter().map(|i| i64::from(i.quantity)).sum(),
                st.total_freight,
            ]);
            open_rows.push([sid, package_id]);
            shipment_freight += st.total_freight;
        }
    }
    let entry_cols = columns(entry_rows.into_iter());
    let view_cols = columns(view_rows.into_iter());
    let package_cols = columns(package_rows.into_iter());
    let open_cols = columns(open_rows.into_iter());
    let entry_head: [P<'_>; 4] = params_and(
        &key,
        [&OrderStatus::ReadyForShipment, &DeliveryStatus::Shipped],
    );
    let (package_count, delivered_count) = (groups.len() as i64, 0i64);
    let shipment_p: [P<'_>; 7] = [
        &cid,
        &oid,
        &package_count,
        &delivered_count,
        &shipment_freight,
        &ShipmentStatus::Approved,
        &now,
    ];
    let package_ints = [cid, oid, now];
    let package_head: [P<'_>; 4] = params_and(&package_ints, [&PackageStatus::Shipped]);
    let open_head = [now, cid, oid];

    // Parameter lists, alive while the pipeline runs.
    let stock_params: Vec<[P<'_>; 6]> = stock_rows.iter().map(params).collect();
    let key_p = params(&key);
    let items_p: Vec<P<'_>> = key_p
        .iter()
        .copied()
        .chain(cols_params(&item_cols))
        .collect();
    let history_p: Vec<P<'_>> = params(&history_head)
        .into_iter()
        .chain([&history_idx as P<'_>, &history])
        .collect();
    let entries_p: Vec<P<'_>> = entry_head
        .into_iter()
        .chain(cols_params(&entry_cols))
        .collect();
    let views_p: Vec<P<'_>> = cols_params(&view_cols).collect();
    let packages_p: Vec<P<'_>> = package_head
        .into_iter()
        .chain(cols_params(&package_cols))
        .collect();
    let open_p: Vec<P<'_>> = params(&open_head)
        .into_iter()
        .chain(cols_params(&open_cols))
        .collect();
    let (cart_p, card_p, pay_p) = (params(&cart_key), params(&card), params(&pay_counts));

    // Everything in one round trip: the stock lines first (in seller, product order), then the
    // writes of the other services; results are checked in the vmsdb chain's order.
    let mut stmts: Vec<BoxFuture<'_, Result<u64, tokio_postgres::Error>>> = Vec::new();
    if had_cart {
        stmts.push(c.execute(&s.cart_clear, &cart_p).boxed());
    }
    let stock_from = stmts.len();
    stmts.extend(
        stock_params
            .iter()
            .map(|p| c.execute(&s.stock_take, p).boxed()),
    );
    stmts.push(c.execute(&s.payment_insert, &payment_p).boxed());
    if ptype != PaymentType::Boleto {
        stmts.push(c.execute(&s.card_insert, &card_p).boxed());
    }
    stmts.push(c.execute(&s.order_insert, &order_p).boxed());
    stmts.push(c.execute(&s.items_insert, &items_p).boxed());
    stmts.push(c.execute(&s.history_insert, &history_p).boxed());
    if approved {
        stmts.push(c.execute(&s.entries_insert, &entries_p).boxed());
        stmts.push(c.execute(&s.views_apply, &views_p).boxed());
        stmts.push(c.execute(&s.shipment_insert, &shipment_p).boxed());
        stmts.push(c.execute(&s.packages_insert, &packages_p).boxed());
        stmts.push(c.execute(&s.open_insert, &open_p).boxed());
    }
    let customer_at = stmts.len();
    stmts.push(c.execute(&s.customer_pay, &pay_p).boxed());
    let done = pipeline(stmts).await?;

    // A stock line that matched no row: find out why, as vmsdb's reservation step would.
    for (i, line) in stock_rows.iter().enumerate() {
        if done[stock_from + i] == 0 {
            return stock_abort(r, c, s, line).await;
        }
    }
    if done[customer_at] == 0 {
        return business_abort(&r.customer, MarketError::UnknownCustomer { customer_id });
    }
    Ok(Ok(()))
}

async fn stock_abort(
    r: &MarketRun,
    c: &Client,
    s: &MarketStmts,
    line: &[i64; 6],
) -> Result<TxnResult, PgFailure> {
    let [seller, product, version, qty, _, _] = *line;
    let Some(row) = c.query_opt(&s.stock_get, &[&seller, &product]).await? else {
        return abort_with(
            &r.stock,
            kinds::UNKNOWN_PRODUCT,
            format!(
                "{}: no stock item for product {product} of seller {seller}",
                reasons::UNKNOWN_PRODUCT
            ),
        );
    };
    let (available, reserved, at): (i64, i64, i64) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if at != version {
        return abort_with(
            &r.stock,
            kinds::VERSION_MISMATCH,
            format!(
                "{}: product {product} of seller {seller} is at version {at}, the cart holds \
                 {version}",
                reasons::VERSION_MISMATCH
            ),
        );
    }
    if reserved + qty > available {
        return abort_with(
            &r.stock,
            kinds::STOCK_SHORTAGE,
            format!(
                "{}: product {product} of seller {seller} has {} units free beyond its \
                 reservations, {qty} wanted",
                reasons::STOCK_SHORTAGE,
                available - reserved
            ),
        );
    }
    Err(PgFailure::Harness(format!(
        "stock line {line:?} matched no row, yet the row allows it"
    )))
}

/// Reads a product and takes the next number of its seller's update sequence.
async fn product_and_seq(
    r: &MarketRun,
    c: &Client,
    s: &MarketStmts,
    key: &[i64; 2],
) -> Result<Result<(Row, i64), TxnResult>, PgFailure> {
    let kp = params(key);
    let seller = [key[0]];
    let sp = params(&seller);
    let mut rows = pipeline(vec![
        c.query(&s.product_get, &kp).boxed(),
        c.query(&s.seq_next, &sp).boxed(),
    ])
    .await?
    .into_iter();
    let (product, seq) = (
        rows.next().unwrap_or_default(),
        rows.next().unwrap_or_default(),
    );
    let Some(product) = product.into_iter().next() else {
        return Ok(Err(abort_with(
            &r.product,
            kinds::UNKNOWN_PRODUCT,
            format!(
                "{}: product {} of seller {}",
                reasons::UNKNOWN_PRODUCT,
                key[1],
                key[0]
            ),
        )?));
    };
    let seq = seq
        .first()
        .ok_or_else(|| PgFailure::Harness("the update sequence returned no row".into()))?
        .try_get(0)?;
    Ok(Ok((product, seq)))
}

/// Product changes a price; the cart's replica and the cart items holding the product at that
/// version follow.
async fn price_update(
    r: &MarketRun,
    c: &Client,
    s: &MarketStmts,
    seller_id: SellerId,
    product_id: market::ProductId,
    pct: i8,
) -> Result<TxnResult, PgFailure> {
    if pct == 0 || pct.unsigned_abs() > 10 {
        return business_abort(&r.product, MarketError::PriceChange { pct });
    }
    let key = [i64::from(seller_id), i64::from(product_id)];
    let (product, seq) = match product_and_seq(r, c, s, &key).await? {
        Ok(found) => found,
        Err(aborted) => return Ok(aborted),
    };
    let (old_price, freight, version): (i64, i64, i64) = (
        product.try_get(1)?,
        product.try_get(2)?,
        product.try_get(3)?,
    );
    let delta = old_price * i64::from(pct) / 100;
    let delta = if delta == 0 {
        i64::from(pct.signum())
    } else {
        delta
    };
    let price = (old_price + delta).max(1);
    let set = [key[0], key[1], price, seq];
    let replica = [key[0], key[1], price, freight, version, seq];
    let reprice = [key[0], key[1], version, price, freight];
    let (sp, rp, cp) = (params(&set), params(&replica), params(&reprice));
    pipeline(vec![
        c.execute(&s.product_set_price, &sp).boxed(),
        c.execute(&s.replica_put, &rp).boxed(),
        c.execute(&s.cart_reprice, &cp).boxed(),
    ])
    .await?;
    Ok(Ok(()))
}

/// Product makes a new version; stock adopts it, the cart's replica follows and cart items on
/// an older version are dropped.
async fn update_product(
    r: &MarketRun,
    c: &Client,
    s: &MarketStmts,
    seller_id: SellerId,
    product_id: market::ProductId,
) -> Result<TxnResult, PgFailure> {
    let key = [i64::from(seller_id), i64::from(product_id)];
    let (product, seq) = match product_and_seq(r, c, s, &key).await? {
        Ok(found) => found,
        Err(aborted) => return Ok(aborted),
    };
    let name: String = product.try_get(0)?;
    let (price, freight, version): (i64, i64, i64) = (
        product.try_get(1)?,
        product.try_get(2)?,
        product.try_get(3)?,
    );
    let version = version + 1;
    let description = format!("{name} (version {version})");
    let ints = [key[0], key[1], version, seq];
    let set_p: [P<'_>; 5] = [&ints[0], &ints[1], &ints[2], &description, &ints[3]];
    let adopt = [key[0], key[1], version];
    let replica = [key[0], key[1], price, freight, version, seq];
    let (ap, rp) = (params(&adopt), params(&replica));
    let done = pipeline(vec![
        c.execute(&s.product_set_version, &set_p).boxed(),
        c.execute(&s.stock_adopt, &ap).boxed(),
        c.execute(&s.replica_put, &rp).boxed(),
        c.execute(&s.cart_drop_old, &ap).boxed(),
    ])
    .await?;
    if done[1] == 0 {
        return abort_with(
            &r.stock,
            kinds::BROKEN_STATE,
            format!(
                "{}: product {product_id} of seller {seller_id} has no stock item",
                reasons::BROKEN_STATE
            ),
        );
    }
    Ok(Ok(()))
}

/// A package taken off the delivery queue.
struct Taken {
    seller: i64,
    customer: i64,
    order: i64,
    package: i64,
}

/// For each seller, the oldest open package is delivered: package and shipment updated, then
/// the order's status and history, the seller's entry and dashboard aggregate, the customer's
/// delivery count.
///
/// Every table's rows are locked in key order (sellers ascending, then packages, shipments
/// and orders by order key, customers by id), and the tables in one fixed order, so
/// concurrent deliveries cannot deadlock one another; they still conflict (serialization
/// failures, retried) when they want the same seller's oldest package.
async fn update_delivery(
    r: &MarketRun,
    c: &Client,
    s: &MarketStmts,
    sellers: &[SellerId],
) -> Result<TxnResult, PgFailure> {
    if sellers.is_empty() || sellers.len() > DELIVERY_SELLERS_MAX {
        let n_sellers = sellers.len();
        return business_abort(&r.shipment, MarketError::DeliverySellers { n_sellers });
    }
    for (i, seller_id) in sellers.iter().enumerate() {
        if sellers[..i].contains(seller_id) {
            let seller_id = *seller_id;
            return business_abort(&r.shipment, MarketError::SellerNamedTwice { seller_id });
        }
    }
    let now = now_ms();
    let mut ids: Vec<[i64; 2]> = sellers.iter().map(|x| [i64::from(*x), now]).collect();
    ids.sort_unstable();
    let take_p: Vec<[P<'_>; 2]> = ids.iter().map(params).collect();
    let picked = pipeline(
        take_p
            .iter()
            .map(|p| c.query(&s.take_oldest, p).boxed())
            .collect(),
    )
    .await?;
    let mut taken = Vec::with_capacity(picked.len());
    for (seller, rows) in ids.iter().zip(&picked) {
        if let Some(row) = rows.first() {
            taken.push(Taken {
                seller: seller[0],
                customer: row.try_get(0)?,
                order: row.try_get(1)?,
                package: row.try_get(2)?,
            });
        }
    }
    if taken.is_empty() {
        return Ok(Ok(()));
    }
    let n = taken.len();
    // Packages (and so shipments and orders) in order-key order.
    let mut by_order: Vec<usize> = (0..n).collect();
    by_order.sort_unstable_by_key(|&j| (taken[j].customer, taken[j].order, taken[j].package));
    let mut orders: Vec<[i64; 2]> = by_order
        .iter()
        .map(|&j| [taken[j].customer, taken[j].order])
        .collect();
    orders.dedup();
    let mut customers: Vec<[i64; 1]> = taken.iter().map(|t| [t.customer]).collect();
    customers.sort_unstable();

    let deliver_params: Vec<[i64; 4]> = by_order
        .iter()
        .map(|&j| [taken[j].customer, taken[j].order, taken[j].package, now])
        .collect();
    let ship_params: Vec<[i64; 2]> = by_order
        .iter()
        .map(|&j| [taken[j].customer, taken[j].order])
        .collect();
    let entry_params: Vec<[i64; 4]> = taken
        .iter()
        .map(|t| {
            let order = OrderKey {
                customer_id: t.customer as CustomerId,
                order_id: t.order as u64,
            };
            let shard = SellerViewKey::of(t.seller as SellerId, order).shard;
            [t.seller, t.customer, t.order, i64::from(shard)]
        })
        .collect();
    let dp: Vec<[P<'_>; 6]> = deliver_params
        .iter()
        .map(|a| params_and(a, [&PackageStatus::Delivered, &PackageStatus::Shipped]))
        .collect();
    let sp: Vec<[P<'_>; 4]> = ship_params
        .iter()
        .map(|a| {
            params_and(
                a,
                [
                    &ShipmentStatus::Concluded,
                    &ShipmentStatus::DeliveryInProgress,
                ],
            )
        })
        .collect();
    let ep: Vec<[P<'_>; 6]> = entry_params
        .iter()
        .map(|a| params_and(a, [&OrderStatus::Delivered, &DeliveryStatus::Delivered]))
        .collect();
    let cp: Vec<[P<'_>; 1]> = customers.iter().map(params).collect();
    let op: Vec<[P<'_>; 2]> = orders.iter().map(params).collect();
    let mut stmts: Vec<BoxFuture<'_, Result<Vec<Row>, tokio_postgres::Error>>> = Vec::new();
    stmts.extend(dp.iter().map(|p| c.query(&s.package_deliver, p).boxed()));
    stmts.extend(sp.iter().map(|p| c.query(&s.shipment_deliver, p).boxed()));
    stmts.extend(op.iter().map(|p| c.query(&s.order_get, p).boxed()));
    stmts.extend(ep.iter().map(|p| c.query(&s.entry_deliver, p).boxed()));
    stmts.extend(cp.iter().map(|p| c.query(&s.customer_deliver, p).boxed()));
    let done = pipeline(stmts).await?;
    let (packages, rest) = done.split_at(n);
    let (shipments, rest) = rest.split_at(n);
    let (order_found, rest) = rest.split_at(orders.len());
    let (entries, customer_found) = rest.split_at(n);

    // Checked in the order of the vmsdb chain: shipment, then order, seller, customer.
    // `concluded[k]`: the k-th package in order-key order was its shipment's last.
    let mut concluded = Vec::with_capacity(n);
    for (k, &j) in by_order.iter().enumerate() {
        let t = &taken[j];
        let order = (t.customer, t.order);
        let Some(package) = packages[k].first() else {
            return abort_with(
                &r.shipment,
                kinds::BROKEN_STATE,
                format!(
                    "{}: package {} of order {order:?} is not out for delivery",
                    reasons::BROKEN_STATE,
                    t.package
                ),
            );
        };
        let package_seller: i64 = package.try_get(0)?;
        if package_seller != t.seller {
            return abort_with(
                &r.shipment,
                kinds::BROKEN_STATE,
                format!(
                    "{}: package {} of order {order:?} is seller {package_seller}'s, queued \
                     for seller {}",
                    reasons::BROKEN_STATE,
                    t.package,
                    t.seller
                ),
            );
        }
        let Some(shipment) = shipments[k].first() else {
            return abort_with(
                &r.shipment,
                kinds::BROKEN_STATE,
                format!("{}: order {order:?} has no shipment", reasons::BROKEN_STATE),
            );
        };
        concluded.push(shipment.try_get::<_, bool>(0)?);
    }
    let mut order_rows = Vec::with_capacity(orders.len());
    for (o, rows) in orders.iter().zip(order_found) {
        let Some(row) = rows.first() else {
            return abort_with(
                &r.order,
                kinds::BROKEN_STATE,
                format!(
                    "{}: delivery for unknown order {o:?}",
                    reasons::BROKEN_STATE
                ),
            );
        };
        order_rows.push((row.try_get::<_, OrderStatus>(0)?, row.try_get::<_, i64>(1)?));
    }
    for (t, rows) in taken.iter().zip(entries) {
        if rows.is_empty() {
            return abort_with(
                &r.seller,
                kinds::BROKEN_STATE,
                format!(
                    "{}: seller {} has no open entry for order {:?}",
                    reasons::BROKEN_STATE,
                    t.seller,
                    (t.customer, t.order)
                ),
            );
        }
    }
    for (cust, rows) in customers.iter().zip(customer_found) {
        if rows.is_empty() {
            return abort_with(
                &r.customer,
                kinds::UNKNOWN_CUSTOMER,
                format!("{}: {}", reasons::UNKNOWN_CUSTOMER, cust[0]),
            );
        }
    }

    // Each order's status follows its packages, one step per delivered package, in order.
    // Rows of (customer, order, status, history length or index, now).
    let mut order_sets: Vec<(i64, i64, OrderStatus, i64, i64)> = Vec::with_capacity(orders.len());
    let mut history: Vec<(i64, i64, i64, i64, OrderStatus)> = Vec::new();
    for (o, (mut status, mut len)) in orders.iter().zip(order_rows) {
        for (k, &j) in by_order.iter().enumerate() {
            if [taken[j].customer, taken[j].order] != *o {
                continue;
            }
            let want = if concluded[k] {
                OrderStatus::Delivered
            } else {
                OrderStatus::InTransit
            };
            if status != want {
                status = want;
                len += 1;
                history.push((o[0], o[1], len, now, want));
            }
        }
        order_sets.push((o[0], o[1], status, len, now));
    }
    let osp: Vec<[P<'_>; 5]> = order_sets
        .iter()
        .map(|(c, o, st, len, at)| [c as P<'_>, o, st, len, at])
        .collect();
    let hp: Vec<[P<'_>; 5]> = history
        .iter()
        .map(|(c, o, idx, at, st)| [c as P<'_>, o, idx, at, st])
        .collect();
    let mut stmts: Vec<BoxFuture<'_, Result<u64, tokio_postgres::Error>>> = Vec::new();
    stmts.extend(osp.iter().map(|p| c.execute(&s.order_set, p).boxed()));
    stmts.extend(hp.iter().map(|p| c.execute(&s.history_put, p).boxed()));
    pipeline(stmts).await?;
    Ok(Ok(()))
}

/// Every row of the database as a `MarketSnapshot` (the cart's replica table as partition 0 of
/// a single cart partition).
async fn read_snapshot(c: &Client) -> Result<MarketSnapshot, PgFailure> {
    let mut s = MarketSnapshot {
        n_cart_partitions: 1,
        ..MarketSnapshot::default()
    };
    fn pk(row: &Row) -> Result<ProductKey, PgFailure> {
        Ok(ProductKey {
            seller_id: conv(row.try_get(0)?, "seller id")?,
            product_id: conv(row.try_get(1)?, "product id")?,
        })
    }
    fn order_key(row: &Row) -> Result<OrderKey, PgFailure> {
        Ok(OrderKey {
            customer_id: conv(row.try_get(0)?, "customer id")?,
            order_id: conv(row.try_get(1)?, "order id")?,
        })
    }
    fn part_key(row: &Row) -> Result<OrderPartKey, PgFailure> {
        Ok(OrderPartKey::new(
            order_key(row)?,
            conv(row.try_get(2)?, "index")?,
        ))
    }
    read_rows(
        c,
        "SELECT seller_id, product_id, name, sku, category, description, price, freight_value, \
         status, version, update_seq FROM products",
        |row| {
            let p = Product {
                name: row.try_get(2)?,
                sku: row.try_get(3)?,
                category: row.try_get(4)?,
                description: row.try_get(5)?,
                price: row.try_get(6)?,
                freight_value: row.try_get(7)?,
                status: row.try_get(8)?,
                version: conv(row.try_get(9)?, "version")?,
                update_seq: conv(row.try_get(10)?, "update_seq")?,
            };
            s.products.insert(pk(row)?, p);
            Ok(())
        },
    )
    .await?;
    read_rows(c, "SELECT seller_id, seq FROM seller_update_seq", |row| {
        s.seller_update_seq.insert(
            conv(row.try_get(0)?, "seller id")?,
            conv(row.try_get(1)?, "seq")?,
        );
        Ok(())
    })
    .await?;
    read_rows(
        c,
        "SELECT seller_id, product_id, qty_available, qty_reserved, order_count, ytd, version \
         FROM stock_items",
        |row| {
            let item = StockItem {
                qty_available: row.try_get(2)?,
                qty_reserved: row.try_get(3)?,
                order_count: conv(row.try_get(4)?, "order_count")?,
                ytd: row.try_get(5)?,
                version: conv(row.try_get(6)?, "version")?,
            };
            s.stock_items.insert(pk(row)?, item);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        "SELECT seller_id, product_id, price, freight_value, version, update_seq \
         FROM product_replicas",
        |row| {
            let rep = Replica {
                price: row.try_get(2)?,
                freight_value: row.try_get(3)?,
                version: conv(row.try_get(4)?, "version")?,
                update_seq: conv(row.try_get(5)?, "update_seq")?,
            };
            s.replicas.insert((0, pk(row)?), rep);
            Ok(())
        },
    )
    .await?;
    let mut carts: BTreeMap<CustomerId, Cart> = BTreeMap::new();
    read_rows(
        c,
        "SELECT customer_id, seller_id, product_id, unit_price, freight_value, quantity, \
         voucher, version FROM cart_items ORDER BY customer_id, seller_id, product_id",
        |row| {
            let customer_id: CustomerId = conv(row.try_get(0)?, "customer id")?;
            let item = CartItem {
                seller_id: conv(row.try_get(1)?, "seller id")?,
                product_id: conv(row.try_get(2)?, "product id")?,
                unit_price: row.try_get(3)?,
                freight_value: row.try_get(4)?,
                quantity: conv(row.try_get(5)?, "quantity")?,
                voucher: row.try_get(6)?,
                version: conv(row.try_get(7)?, "version")?,
            };
            s.cart_index.insert(CartIndexKey {
                seller_id: item.seller_id,
                product_id: item.product_id,
                customer_id,
            });
            carts.entry(customer_id).or_default().items.push(item);
            Ok(())
        },
    )
    .await?;
    s.carts = carts;
    read_rows(
        c,
        &format!(
            "SELECT customer_id, order_id, status, created_ms, updated_ms, {TOTALS_COLS}, \
             history_len FROM orders"
        ),
        |row| {
            let o = Order {
                status: row.try_get(2)?,
                created_ms: conv(row.try_get(3)?, "created_ms")?,
                updated_ms: conv(row.try_get(4)?, "updated_ms")?,
                totals: totals_of(row, 5)?,
                history_len: conv(row.try_get(11)?, "history_len")?,
            };
            s.orders.insert(order_key(row)?, o);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        "SELECT customer_id, order_id, idx, seller_id, product_id, unit_price, freight_value, \
         quantity, total_items, total_amount, voucher, version FROM order_items",
        |row| {
            let item = OrderItem {
                seller_id: conv(row.try_get(3)?, "seller id")?,
                product_id: conv(row.try_get(4)?, "product id")?,
                unit_price: row.try_get(5)?,
                freight_value: row.try_get(6)?,
                quantity: conv(row.try_get(7)?, "quantity")?,
                total_items: row.try_get(8)?,
                total_amount: row.try_get(9)?,
                voucher: row.try_get(10)?,
                version: conv(row.try_get(11)?, "version")?,
            };
            s.order_items.insert(part_key(row)?, item);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        "SELECT customer_id, order_id, idx, created_ms, status FROM order_history",
        |row| {
            let h = OrderHistory {
                created_ms: conv(row.try_get(3)?, "created_ms")?,
                status: row.try_get(4)?,
            };
            s.order_history.insert(part_key(row)?, h);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        "SELECT customer_id, order_id, idx, payment_type, installments, value, status, \
         created_ms FROM order_payments",
        |row| {
            let p = Payment {
                payment_type: row.try_get(3)?,
                installments: conv(row.try_get(4)?, "installments")?,
                value: row.try_get(5)?,
                status: row.try_get(6)?,
                created_ms: conv(row.try_get(7)?, "created_ms")?,
            };
            s.payments.insert(part_key(row)?, p);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        "SELECT customer_id, order_id, idx, card_last4, installments FROM order_payment_cards",
        |row| {
            let card = PaymentCard {
                card_last4: conv(row.try_get(3)?, "card_last4")?,
                installments: conv(row.try_get(4)?, "installments")?,
            };
            s.payment_cards.insert(part_key(row)?, card);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        "SELECT customer_id, order_id, package_count, delivered_count, total_freight, status, \
         created_ms FROM shipments",
        |row| {
            let sh = Shipment {
                package_count: conv(row.try_get(2)?, "package_count")?,
                delivered_count: conv(row.try_get(3)?, "delivered_count")?,
                total_freight: row.try_get(4)?,
                status: row.try_get(5)?,
                created_ms: conv(row.try_get(6)?, "created_ms")?,
            };
            s.shipments.insert(order_key(row)?, sh);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        "SELECT customer_id, order_id, idx, seller_id, n_items, quantity, freight_value, \
         shipping_ms, delivery_ms, status FROM packages",
        |row| {
            let delivery_ms: Option<i64> = row.try_get(8)?;
            let p = Package {
                seller_id: conv(row.try_get(3)?, "seller id")?,
                n_items: conv(row.try_get(4)?, "n_items")?,
                quantity: conv(row.try_get(5)?, "quantity")?,
                freight_value: row.try_get(6)?,
                shipping_ms: conv(row.try_get(7)?, "shipping_ms")?,
                delivery_ms: delivery_ms.map(|v| conv(v, "delivery_ms")).transpose()?,
                status: row.try_get(9)?,
            };
            s.packages.insert(part_key(row)?, p);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        "SELECT seller_id, created_ms, customer_id, order_id, package_id FROM open_deliveries",
        |row| {
            // The baseline keeps one first-in first-out queue per seller: lane 0.
            let key = OpenDeliveryKey {
                seller_id: conv(row.try_get(0)?, "seller id")?,
                lane: 0,
                created_ms: conv(row.try_get(1)?, "created_ms")?,
                customer_id: conv(row.try_get(2)?, "customer id")?,
                order_id: conv(row.try_get(3)?, "order id")?,
            };
            s.open_deliveries
                .insert(key, conv(row.try_get(4)?, "package id")?);
            Ok(())
        },
    )
    .await?;
    read_rows(c, "SELECT seller_id, name, city FROM sellers", |row| {
        let seller = Seller {
            name: row.try_get(1)?,
            city: row.try_get(2)?,
        };
        s.sellers
            .insert(conv(row.try_get(0)?, "seller id")?, seller);
        Ok(())
    })
    .await?;
    read_rows(
        c,
        &format!(
            "SELECT seller_id, delivered, customer_id, order_id, package_id, {TOTALS_COLS}, \
             order_status, delivery_status FROM order_entries"
        ),
        |row| {
            let key = EntryKey {
                seller_id: conv(row.try_get(0)?, "seller id")?,
                delivered: row.try_get(1)?,
                customer_id: conv(row.try_get(2)?, "customer id")?,
                order_id: conv(row.try_get(3)?, "order id")?,
            };
            s.order_entries.insert(key, entry_of(row, 4)?);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        &format!("SELECT seller_id, shard, count_orders, {TOTALS_COLS} FROM seller_views"),
        |row| {
            let key = SellerViewKey {
                seller_id: conv(row.try_get(0)?, "seller id")?,
                shard: conv(row.try_get(1)?, "shard")?,
            };
            s.seller_views.insert(key, view_of(row, 2)?);
            Ok(())
        },
    )
    .await?;
    read_rows(
        c,
        "SELECT customer_id, name, card_last4, success_payment_count, failed_payment_count, \
         delivery_count FROM customers",
        |row| {
            let cust = Customer {
                name: row.try_get(1)?,
                card_last4: conv(row.try_get(2)?, "card_last4")?,
            };
            let counters = CustomerCounters {
                success_payment_count: conv(row.try_get(3)?, "success_payment_count")?,
                failed_payment_count: conv(row.try_get(4)?, "failed_payment_count")?,
                delivery_count: conv(row.try_get(5)?, "delivery_count")?,
            };
            let id = conv(row.try_get(0)?, "customer id")?;
            s.customers.insert(id, cust);
            s.customer_counters.insert(id, counters);
            Ok(())
        },
    )
    .await?;
    Ok(s)
}
