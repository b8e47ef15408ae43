//! The handlers of the eight marketplace services: one function per service, matching on the
//! events that service owns.
//!
//! Every handler only touches rows of the partition it runs in and hands the rest of the work
//! on with `emit`; the layout of keys in [`super::model`] decides which rows can be touched
//! together. Business rules abort with a reason from [`reasons`]; the runtime then discards the
//! whole transaction in every service, so no handler ever compensates.

use super::model::*;
use rand::Rng;
use txn::{Abort, HandlerResult, Index, ServiceRef, Table, TxnCtx};

use super::MarketApp;

type Ctx<'a> = TxnCtx<'a, MarketApp>;

/// The services of the marketplace.
#[derive(Clone, Copy, Debug)]
pub struct Services {
    pub product: ServiceRef,
    pub stock: ServiceRef,
    pub cart: ServiceRef,
    pub order: ServiceRef,
    pub payment: ServiceRef,
    pub shipment: ServiceRef,
    pub seller: ServiceRef,
    pub customer: ServiceRef,
}

impl Services {
    /// All eight, in declaration order.
    pub fn all(&self) -> [ServiceRef; 8] {
        [
            self.product,
            self.stock,
            self.cart,
            self.order,
            self.payment,
            self.shipment,
            self.seller,
            self.customer,
        ]
    }
}

/// Every table of the marketplace, by service.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    // product
    pub products: Table<ProductKey, Product>,
    /// seller → sequence number of the seller's last product update (price or version).
    pub seller_update_seq: Table<SellerId, u64>,
    // stock
    pub stock_items: Table<ProductKey, StockItem>,
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
    pub order_entries: Table<EntryKey, OrderEntry>,
    pub seller_views: Table<SellerViewKey, SellerView>,
    // customer
    pub customers: Table<CustomerId, Customer>,
}

/// The shape of every service's step function.
pub(super) type Step = fn(&mut Ctx<'_>, &MarketEvent, &Wiring) -> HandlerResult;

/// What every handler needs: where things are, and the business parameters.
#[derive(Clone, Copy, Debug)]
pub struct Wiring {
    pub services: Services,
    pub tables: Tables,
    /// Percentage of payments the (simulated) provider declines.
    pub payment_failure_pct: u8,
}

/// Most items a cart add or checkout may carry, and most units of one item.
pub const CART_ITEMS_MAX: usize = 64;
pub const ITEM_QUANTITY_MAX: u32 = 1_000;
/// Most sellers one update delivery may name.
pub const DELIVERY_SELLERS_MAX: usize = 10;

fn misrouted(ctx: &Ctx<'_>, ev: &MarketEvent) -> Abort {
    ctx.abort_with(
        kinds::MISROUTED,
        format!(
            "{}: {ev:?} sent to partition {}",
            reasons::MISROUTED,
            ctx.partition()
        ),
    )
}

fn broken(ctx: &Ctx<'_>, what: String) -> Abort {
    ctx.abort_with(
        kinds::BROKEN_STATE,
        format!("{}: {what}", reasons::BROKEN_STATE),
    )
}

/// Emits one event per partition of `service`, carrying the items bound for it: a step per
/// partition rather than per item. `items` pairs each item with its partition.
fn emit_grouped<T>(
    ctx: &mut Ctx<'_>,
    service: ServiceRef,
    mut items: Vec<(u32, T)>,
    make: impl Fn(Vec<T>) -> MarketEvent,
) {
    // Stable, so items keep their order within a partition.
    items.sort_by_key(|(p, _)| *p);
    let mut items = items.into_iter().peekable();
    while let Some((p, first)) = items.next() {
        let mut group = vec![first];
        while let Some((_, item)) = items.next_if(|(q, _)| *q == p) {
            group.push(item);
        }
        ctx.emit_to_partition(service, p, make(group));
    }
}

// ---------------------------------------------------------------------------------------------
// product

pub(super) fn product_step(ctx: &mut Ctx<'_>, ev: &MarketEvent, w: &Wiring) -> HandlerResult {
    let t = &w.tables;
    match ev {
        MarketEvent::LoadSeller {
            seller_id,
            products,
            initial_stock,
        } => {
            let s = *seller_id;
            let mut replicas = Vec::with_capacity(products.len());
            let mut stock = Vec::with_capacity(products.len());
            for np in products {
                let key = ProductKey {
                    seller_id: s,
                    product_id: np.product_id,
                };
                ctx.put(t.products, key, np.product.clone())?;
                replicas.push((np.product_id, replica_of(&np.product)));
                stock.push((np.product_id, np.product.version));
            }
            ctx.put(t.seller_update_seq, s, 0)?;
            ctx.emit(
                w.services.stock,
                &s,
                MarketEvent::LoadStock {
                    seller_id: s,
                    products: stock,
                    initial_stock: *initial_stock,
                },
            );
            ctx.emit(
                w.services.seller,
                &s,
                MarketEvent::LoadSellerRow { seller_id: s },
            );
            ctx.broadcast(
                w.services.cart,
                MarketEvent::ReplicateProducts {
                    seller_id: s,
                    replicas,
                },
            );
            ctx.set_output(MarketOutput::Done);
            Ok(())
        }
        MarketEvent::PriceUpdate {
            seller_id,
            product_id,
            pct,
        } => {
            if *pct == 0 || pct.unsigned_abs() > 10 {
                return Err(ctx.abort_with(
                    kinds::INVALID_REQUEST,
                    format!(
                        "{}: a price changes by 1 to 10 %, not {pct} %",
                        reasons::INVALID_REQUEST
                    ),
                ));
            }
            let key = ProductKey {
                seller_id: *seller_id,
                product_id: *product_id,
            };
            let mut product = get_product(ctx, t.products, key)?;
            let delta = product.price * i64::from(*pct) / 100;
            // Cheap products still change by at least a cent, and no price drops below one.
            let delta = if delta == 0 {
                i64::from(pct.signum())
            } else {
                delta
            };
            product.price = (product.price + delta).max(1);
            product.update_seq = next_update_seq(ctx, t, *seller_id)?;
            let replica = replica_of(&product);
            ctx.set_output(MarketOutput::Priced {
                price: product.price,
                version: product.version,
            });
            ctx.put(t.products, key, product)?;
            ctx.broadcast(
                w.services.cart,
                MarketEvent::ReplicatePrice {
                    seller_id: *seller_id,
                    product_id: *product_id,
                    replica,
                },
            );
            Ok(())
        }
        MarketEvent::UpdateProduct {
            seller_id,
            product_id,
        } => {
            let key = ProductKey {
                seller_id: *seller_id,
                product_id: *product_id,
            };
            let mut product = get_product(ctx, t.products, key)?;
            product.version += 1;
            product.description = format!("{} (version {})", product.name, product.version);
            product.update_seq = next_update_seq(ctx, t, *seller_id)?;
            let replica = replica_of(&product);
            let version = product.version;
            ctx.put(t.products, key, product)?;
            ctx.emit(
                w.services.stock,
                seller_id,
                MarketEvent::AdoptVersion {
                    seller_id: *seller_id,
                    product_id: *product_id,
                    version,
                },
            );
            ctx.broadcast(
                w.services.cart,
                MarketEvent::ReplicateProducts {
                    seller_id: *seller_id,
                    replicas: vec![(*product_id, replica)],
                },
            );
            ctx.set_output(MarketOutput::NewVersion(version));
            Ok(())
        }
        other => Err(misrouted(ctx, other)),
    }
}

fn get_product(
    ctx: &mut Ctx<'_>,
    products: Table<ProductKey, Product>,
    key: ProductKey,
) -> Result<Product, Abort> {
    ctx.get(products, &key)?.ok_or_else(|| {
        ctx.abort_with(
            kinds::UNKNOWN_PRODUCT,
            format!(
                "{}: product {} of seller {}",
                reasons::UNKNOWN_PRODUCT,
                key.product_id,
                key.seller_id
            ),
        )
    })
}

/// Takes the next number of the seller's update sequence (which orders the seller's product
/// updates for the causal-replication check).
fn next_update_seq(ctx: &mut Ctx<'_>, t: &Tables, seller_id: SellerId) -> Result<u64, Abort> {
    let seq = ctx.get(t.seller_update_seq, &seller_id)?.unwrap_or(0) + 1;
    ctx.put(t.seller_update_seq, seller_id, seq)?;
    Ok(seq)
}

fn replica_of(p: &Product) -> Replica {
    Replica {
        price: p.price,
        freight_value: p.freight_value,
        version: p.version,
        update_seq: p.update_seq,
    }
}

// ---------------------------------------------------------------------------------------------
// stock

pub(super) fn stock_step(ctx: &mut Ctx<'_>, ev: &MarketEvent, w: &Wiring) -> HandlerResult {
    let t = &w.tables;
    match ev {
        MarketEvent::LoadStock {
            seller_id,
            products,
            initial_stock,
        } => {
            for (product_id, version) in products {
                let key = ProductKey {
                    seller_id: *seller_id,
                    product_id: *product_id,
                };
                let item = StockItem {
                    qty_available: *initial_stock,
                    qty_reserved: 0,
                    order_count: 0,
                    ytd: 0,
                    version: *version,
                };
                ctx.put(t.stock_items, key, item)?;
            }
            Ok(())
        }
        MarketEvent::Reserve { lines } => {
            for line in lines {
                let key = ProductKey {
                    seller_id: line.seller_id,
                    product_id: line.product_id,
                };
                let Some(mut item) = ctx.get(t.stock_items, &key)? else {
                    return Err(ctx.abort_with(
                        kinds::UNKNOWN_PRODUCT,
                        format!(
                            "{}: no stock item for product {} of seller {}",
                            reasons::UNKNOWN_PRODUCT,
                            line.product_id,
                            line.seller_id
                        ),
                    ));
                };
                if item.version != line.version {
                    return Err(ctx.abort_with(
                        kinds::VERSION_MISMATCH,
                        format!(
                            "{}: product {} of seller {} is at version {}, the cart holds {}",
                            reasons::VERSION_MISMATCH,
                            line.product_id,
                            line.seller_id,
                            item.version,
                            line.version
                        ),
                    ));
                }
                let qty = i64::from(line.quantity);
                if item.qty_reserved + qty > item.qty_available {
                    return Err(ctx.abort_with(kinds::STOCK_SHORTAGE, format!(
                        "{}: product {} of seller {} has {} available, {} reserved, {qty} wanted",
                        reasons::STOCK_SHORTAGE,
                        line.product_id,
                        line.seller_id,
                        item.qty_available,
                        item.qty_reserved
                    )));
                }
                item.qty_reserved += qty;
                ctx.put(t.stock_items, key, item)?;
            }
            Ok(())
        }
        MarketEvent::Settle { lines, approved } => {
            for line in lines {
                let key = ProductKey {
                    seller_id: line.seller_id,
                    product_id: line.product_id,
                };
                let qty = i64::from(line.quantity);
                let item = ctx.get(t.stock_items, &key)?;
                let Some(mut item) = item.filter(|i| i.qty_reserved >= qty) else {
                    return Err(broken(
                        ctx,
                        format!(
                            "settling {qty} units of product {} of seller {} that were not reserved",
                            line.product_id, line.seller_id
                        ),
                    ));
                };
                item.qty_reserved -= qty;
                if *approved {
                    item.qty_available -= qty;
                    item.order_count += 1;
                    item.ytd += qty;
                }
                ctx.put(t.stock_items, key, item)?;
            }
            Ok(())
        }
        MarketEvent::AdoptVersion {
            seller_id,
            product_id,
            version,
        } => {
            let key = ProductKey {
                seller_id: *seller_id,
                product_id: *product_id,
            };
            let Some(mut item) = ctx.get(t.stock_items, &key)? else {
                return Err(broken(
                    ctx,
                    format!("product {product_id} of seller {seller_id} has no stock item"),
                ));
            };
            item.version = *version;
            ctx.put(t.stock_items, key, item)
        }
        other => Err(misrouted(ctx, other)),
    }
}

// ---------------------------------------------------------------------------------------------
// cart

pub(super) fn cart_step(ctx: &mut Ctx<'_>, ev: &MarketEvent, w: &Wiring) -> HandlerResult {
    let t = &w.tables;
    match ev {
        MarketEvent::CartAdd { customer_id, items } => {
            let mut cart = ctx.get(t.carts, customer_id)?.unwrap_or_default();
            add_to_cart(ctx, w, &mut cart, items)?;
            ctx.set_output(MarketOutput::CartItems(cart.items.len() as u32));
            ctx.put(t.carts, *customer_id, cart)
        }
        MarketEvent::Checkout { customer_id, add } => checkout(ctx, w, *customer_id, add),
        MarketEvent::ReplicatePrice {
            seller_id,
            product_id,
            replica,
        } => {
            let key = ProductKey {
                seller_id: *seller_id,
                product_id: *product_id,
            };
            ctx.put(t.product_replicas, key, *replica)?;
            // Every cart of this partition holding the product at this version gets the price.
            for (customer_id, mut cart) in ctx.lookup(t.carts_by_product, &key)? {
                for item in &mut cart.items {
                    if item.seller_id == *seller_id
                        && item.product_id == *product_id
                        && item.version == replica.version
                    {
                        item.unit_price = replica.price;
                        item.freight_value = replica.freight_value;
                    }
                }
                ctx.put(t.carts, customer_id, cart)?;
            }
            Ok(())
        }
        MarketEvent::ReplicateProducts {
            seller_id,
            replicas,
        } => {
            for (product_id, replica) in replicas {
                let key = ProductKey {
                    seller_id: *seller_id,
                    product_id: *product_id,
                };
                ctx.put(t.product_replicas, key, *replica)?;
                // Items of an older version can no longer be bought: drop them from carts.
                for (customer_id, mut cart) in ctx.lookup(t.carts_by_product, &key)? {
                    let before = cart.items.len();
                    cart.items.retain(|i| {
                        !(i.seller_id == *seller_id
                            && i.product_id == *product_id
                            && i.version != replica.version)
                    });
                    if cart.items.len() != before {
                        if cart.items.is_empty() {
                            ctx.delete(t.carts, &customer_id)?;
                        } else {
                            ctx.put(t.carts, customer_id, cart)?;
                        }
                    }
                }
            }
            Ok(())
        }
        other => Err(misrouted(ctx, other)),
    }
}

/// The cart-add step: prices each item from this partition's replica and puts it in `cart`
/// (replacing the same product). The product index of carts follows when the cart is written.
fn add_to_cart(
    ctx: &mut Ctx<'_>,
    w: &Wiring,
    cart: &mut Cart,
    items: &[CartAddItem],
) -> HandlerResult {
    let t = &w.tables;
    if items.len() > CART_ITEMS_MAX {
        return Err(ctx.abort_with(
            kinds::INVALID_REQUEST,
            format!(
                "{}: {} items in one request, at most {CART_ITEMS_MAX}",
                reasons::INVALID_REQUEST,
                items.len()
            ),
        ));
    }
    for add in items {
        if add.quantity == 0 || add.quantity > ITEM_QUANTITY_MAX {
            return Err(ctx.abort_with(
                kinds::INVALID_REQUEST,
                format!(
                    "{}: quantity {} of product {} (1 to {ITEM_QUANTITY_MAX})",
                    reasons::INVALID_REQUEST,
                    add.quantity,
                    add.product_id
                ),
            ));
        }
        let key = ProductKey {
            seller_id: add.seller_id,
            product_id: add.product_id,
        };
        let Some(replica) = ctx.get(t.product_replicas, &key)? else {
            return Err(ctx.abort_with(
                kinds::UNKNOWN_PRODUCT,
                format!(
                    "{}: product {} of seller {}",
                    reasons::UNKNOWN_PRODUCT,
                    add.product_id,
                    add.seller_id
                ),
            ));
        };
        let voucher = if add.voucher {
            replica.price * i64::from(add.quantity) / 10
        } else {
            0
        };
        let item = CartItem {
            seller_id: add.seller_id,
            product_id: add.product_id,
            unit_price: replica.price,
            freight_value: replica.freight_value,
            quantity: add.quantity,
            voucher,
            version: replica.version,
        };
        match cart
            .items
            .binary_search_by_key(&(add.seller_id, add.product_id), |i| {
                (i.seller_id, i.product_id)
            }) {
            Ok(pos) => cart.items[pos] = item,
            Err(pos) => cart.items.insert(pos, item),
        }
    }
    Ok(())
}

/// Wave 0 of a checkout: fill the cart, read and clear it, price the order, and start the
/// reservations and the payment in parallel.
///
/// ```text
/// cart[c] ─┬─ Reserve ──▶ stock[p]   (per stock partition: version and availability, or abort)
///          └─ Pay ──────▶ payment[o] ─┬─ Settle ──────────▶ stock[p]     confirm or release
///                                     ├─ CreateOrder ─────▶ order[o]     order, items, history
///                                     ├─ RecordEntries ───▶ seller[p]    (approved only)
///                                     ├─ CreateShipment ──▶ shipment[o]  (approved only)
///                                     ├─ QueueDeliveries ─▶ shipment[p]  (approved only)
///                                     └─ CountPayment ────▶ customer[c]
/// ```
///
/// The reservation and the payment run side by side because nothing the payment does is
/// visible unless every reservation succeeds: a shortage aborts the whole transaction, which
/// is the same outcome as reserving first and never paying.
fn checkout(
    ctx: &mut Ctx<'_>,
    w: &Wiring,
    customer_id: CustomerId,
    add: &[CartAddItem],
) -> HandlerResult {
    let t = &w.tables;
    let existing = ctx.get(t.carts, &customer_id)?;
    let mut cart = existing.clone().unwrap_or_default();
    add_to_cart(ctx, w, &mut cart, add)?;
    if cart.items.is_empty() {
        return Err(ctx.abort_with(
            kinds::EMPTY_CART,
            format!(
                "{}: customer {customer_id} has nothing to check out",
                reasons::EMPTY_CART
            ),
        ));
    }
    if existing.is_some() {
        ctx.delete(t.carts, &customer_id)?;
    }
    let order = OrderKey {
        customer_id,
        order_id: ctx.tid().0,
    };
    let mut totals = Totals::default();
    let items: Vec<OrderItem> = cart
        .items
        .iter()
        .map(|c| {
            let item = OrderItem::from_cart(c);
            totals.add(&item);
            item
        })
        .collect();
    let draft = CheckoutDraft {
        order,
        items,
        totals,
        created_ms: ctx.now_ms(),
    };
    let stock = w.services.stock;
    emit_grouped(ctx, stock, stock_lines(stock, &draft.items), |lines| {
        MarketEvent::Reserve { lines }
    });
    ctx.emit(
        w.services.payment,
        &order,
        MarketEvent::Pay(Box::new(draft)),
    );
    Ok(())
}

/// The stock lines of `items`, each with the stock partition of its seller.
fn stock_lines(stock: ServiceRef, items: &[OrderItem]) -> Vec<(u32, StockLine)> {
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

// ---------------------------------------------------------------------------------------------
// payment

pub(super) fn payment_step(ctx: &mut Ctx<'_>, ev: &MarketEvent, w: &Wiring) -> HandlerResult {
    let t = &w.tables;
    let s = &w.services;
    let MarketEvent::Pay(draft) = ev else {
        return Err(misrouted(ctx, ev));
    };
    let order = draft.order;
    // The provider's decision comes from the TID-seeded generator: the same on every replay.
    let rng = ctx.rng();
    let approved = rng.random_range(0..100u8) >= w.payment_failure_pct;
    let (payment_type, installments) = match rng.random_range(0..100u8) {
        0..60 => (PaymentType::CreditCard, rng.random_range(1..=10u8)),
        60..80 => (PaymentType::DebitCard, 1),
        _ => (PaymentType::Boleto, 1),
    };
    let card_last4 = rng.random_range(0..10_000u16);
    let status = if approved {
        PaymentStatus::Approved
    } else {
        PaymentStatus::Failed
    };
    let line = OrderPartKey::new(order, 1);
    ctx.put(
        t.order_payments,
        line,
        Payment {
            payment_type,
            installments,
            value: draft.totals.total_invoice,
            status,
            created_ms: ctx.now_ms(),
        },
    )?;
    if payment_type != PaymentType::Boleto {
        ctx.put(
            t.order_payment_cards,
            line,
            PaymentCard {
                card_last4,
                installments,
            },
        )?;
    }

    emit_grouped(ctx, s.stock, stock_lines(s.stock, &draft.items), |lines| {
        MarketEvent::Settle { lines, approved }
    });
    let groups = draft.seller_groups();
    let mut packages = Vec::with_capacity(groups.len());
    let mut entries = Vec::with_capacity(groups.len());
    let mut queued = Vec::with_capacity(groups.len());
    for (package_idx, (seller_id, from, to)) in groups.into_iter().enumerate() {
        if !approved {
            break;
        }
        let items = &draft.items[from..to];
        let package_id = package_idx as u16 + 1;
        let mut seller_totals = Totals::default();
        for i in items {
            seller_totals.add(i);
        }
        let entry_key = EntryKey::open(seller_id, order);
        let entry = OrderEntry {
            package_id,
            totals: seller_totals,
            order_status: OrderStatus::ReadyForShipment,
            delivery_status: DeliveryStatus::Shipped,
        };
        entries.push((
            s.seller.partition_of(&entry_key.placement()),
            (entry_key, entry),
        ));
        let open = OpenDeliveryKey::new(seller_id, draft.created_ms, order);
        queued.push((
            s.shipment.partition_of(&open.placement()),
            (open, package_id),
        ));
        packages.push(Package {
            seller_id,
            n_items: items.len() as u16,
            quantity: items.iter().map(|i| i.quantity).sum(),
            freight_value: seller_totals.total_freight,
            shipping_ms: draft.created_ms,
            delivery_ms: None,
            status: PackageStatus::Shipped,
        });
    }
    emit_grouped(ctx, s.seller, entries, |entries| {
        MarketEvent::RecordEntries { entries }
    });
    emit_grouped(ctx, s.shipment, queued, |packages| {
        MarketEvent::QueueDeliveries { packages }
    });
    if approved {
        ctx.emit(
            s.shipment,
            &order,
            MarketEvent::CreateShipment {
                order,
                packages,
                created_ms: draft.created_ms,
            },
        );
    }
    ctx.emit(
        s.customer,
        &order.customer_id,
        MarketEvent::CountPayment {
            customer_id: order.customer_id,
            approved,
        },
    );
    ctx.set_output(MarketOutput::CheckedOut {
        order,
        approved,
        total_invoice: draft.totals.total_invoice,
    });
    ctx.emit(
        s.order,
        &order,
        MarketEvent::CreateOrder {
            draft: draft.clone(),
            approved,
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// order

pub(super) fn order_step(ctx: &mut Ctx<'_>, ev: &MarketEvent, w: &Wiring) -> HandlerResult {
    let t = &w.tables;
    match ev {
        MarketEvent::CreateOrder { draft, approved } => {
            let order = draft.order;
            if ctx.get(t.orders, &order)?.is_some() {
                return Err(broken(ctx, format!("order {order:?} exists already")));
            }
            for (i, item) in draft.items.iter().enumerate() {
                ctx.put(t.order_items, OrderPartKey::new(order, i as u16 + 1), *item)?;
            }
            let mut history = vec![OrderStatus::Invoiced];
            if *approved {
                history.extend([OrderStatus::PaymentProcessed, OrderStatus::ReadyForShipment]);
            } else {
                history.push(OrderStatus::PaymentFailed);
            }
            let now = ctx.now_ms();
            for (i, status) in history.iter().enumerate() {
                let entry = OrderHistory {
                    created_ms: now,
                    status: *status,
                };
                ctx.put(
                    t.order_history,
                    OrderPartKey::new(order, i as u16 + 1),
                    entry,
                )?;
            }
            let row = Order {
                status: *history.last().expect("history is not empty"),
                created_ms: draft.created_ms,
                updated_ms: now,
                totals: draft.totals,
                history_len: history.len() as u16,
            };
            ctx.put(t.orders, order, row)
        }
        MarketEvent::OrdersDelivered { orders } => {
            let now = ctx.now_ms();
            for (order, concluded) in orders {
                let Some(mut row) = ctx.get(t.orders, order)? else {
                    return Err(broken(ctx, format!("delivery for unknown order {order:?}")));
                };
                let status = if *concluded {
                    OrderStatus::Delivered
                } else {
                    OrderStatus::InTransit
                };
                if row.status != status {
                    row.status = status;
                    row.history_len += 1;
                    let entry = OrderHistory {
                        created_ms: now,
                        status,
                    };
                    ctx.put(
                        t.order_history,
                        OrderPartKey::new(*order, row.history_len),
                        entry,
                    )?;
                }
                row.updated_ms = now;
                ctx.put(t.orders, *order, row)?;
            }
            Ok(())
        }
        other => Err(misrouted(ctx, other)),
    }
}

// ---------------------------------------------------------------------------------------------
// shipment

pub(super) fn shipment_step(ctx: &mut Ctx<'_>, ev: &MarketEvent, w: &Wiring) -> HandlerResult {
    let t = &w.tables;
    match ev {
        MarketEvent::CreateShipment {
            order,
            packages,
            created_ms,
        } => {
            let shipment = Shipment {
                package_count: packages.len() as u16,
                delivered_count: 0,
                total_freight: packages.iter().map(|p| p.freight_value).sum(),
                status: ShipmentStatus::Approved,
                created_ms: *created_ms,
            };
            ctx.put(t.shipments, *order, shipment)?;
            for (i, p) in packages.iter().enumerate() {
                ctx.put(t.packages, OrderPartKey::new(*order, i as u16 + 1), *p)?;
            }
            Ok(())
        }
        MarketEvent::QueueDeliveries { packages } => {
            for (key, package_id) in packages {
                ctx.put(t.open_deliveries, *key, *package_id)?;
            }
            Ok(())
        }
        MarketEvent::UpdateDelivery { sellers } => {
            if sellers.is_empty() || sellers.len() > DELIVERY_SELLERS_MAX {
                return Err(ctx.abort_with(
                    kinds::INVALID_REQUEST,
                    format!(
                        "{}: an update delivery names 1 to {DELIVERY_SELLERS_MAX} sellers, not {}",
                        reasons::INVALID_REQUEST,
                        sellers.len()
                    ),
                ));
            }
            for (i, seller_id) in sellers.iter().enumerate() {
                if sellers[..i].contains(seller_id) {
                    return Err(ctx.abort_with(
                        kinds::INVALID_REQUEST,
                        format!(
                            "{}: seller {seller_id} named twice",
                            reasons::INVALID_REQUEST
                        ),
                    ));
                }
            }
            // Sellers of this partition are served here; the others one wave later, one step
            // per partition.
            let (here, shipment) = (ctx.partition(), w.services.shipment);
            let mut local = Vec::new();
            let mut remote = Vec::new();
            for seller_id in sellers {
                let p = shipment.partition_of(seller_id);
                if p == here {
                    local.push(*seller_id);
                } else {
                    remote.push((p, *seller_id));
                }
            }
            take_oldest(ctx, w, &local)?;
            emit_grouped(ctx, shipment, remote, |sellers| MarketEvent::TakeOldest {
                sellers,
            });
            ctx.set_output(MarketOutput::DeliveryRequested {
                sellers: sellers.len() as u32,
            });
            Ok(())
        }
        MarketEvent::TakeOldest { sellers } => take_oldest(ctx, w, sellers),
        MarketEvent::DeliverPackages { packages } => {
            let s = &w.services;
            let now = ctx.now_ms();
            let mut orders = Vec::with_capacity(packages.len());
            let mut entries = Vec::with_capacity(packages.len());
            let mut customers = Vec::with_capacity(packages.len());
            for (order, package_id) in packages {
                let key = OrderPartKey::new(*order, *package_id);
                let package = ctx.get(t.packages, &key)?;
                let Some(mut package) = package.filter(|p| p.status == PackageStatus::Shipped)
                else {
                    return Err(broken(
                        ctx,
                        format!("package {package_id} of order {order:?} is not out for delivery"),
                    ));
                };
                let Some(mut shipment) = ctx.get(t.shipments, order)? else {
                    return Err(broken(ctx, format!("order {order:?} has no shipment")));
                };
                package.status = PackageStatus::Delivered;
                package.delivery_ms = Some(now);
                shipment.delivered_count += 1;
                let concluded = shipment.delivered_count == shipment.package_count;
                shipment.status = if concluded {
                    ShipmentStatus::Concluded
                } else {
                    ShipmentStatus::DeliveryInProgress
                };
                let entry = EntryKey::open(package.seller_id, *order);
                ctx.put(t.packages, key, package)?;
                ctx.put(t.shipments, *order, shipment)?;
                orders.push((s.order.partition_of(order), (*order, concluded)));
                entries.push((s.seller.partition_of(&entry.placement()), entry));
                let c = order.customer_id;
                customers.push((s.customer.partition_of(&c), c));
            }
            emit_grouped(ctx, s.order, orders, |orders| {
                MarketEvent::OrdersDelivered { orders }
            });
            emit_grouped(ctx, s.seller, entries, |entries| {
                MarketEvent::EntriesDelivered { entries }
            });
            emit_grouped(ctx, s.customer, customers, |customers| {
                MarketEvent::CountDeliveries { customers }
            });
            Ok(())
        }
        other => Err(misrouted(ctx, other)),
    }
}

/// Takes the oldest open package of each of `sellers` (all of this partition) off the
/// delivery queue, if there is one, and sends the packages on to their shipments.
fn take_oldest(ctx: &mut Ctx<'_>, w: &Wiring, sellers: &[SellerId]) -> HandlerResult {
    let t = &w.tables;
    let mut taken = Vec::with_capacity(sellers.len());
    // A package becomes deliverable once the clock has moved past the millisecond it was
    // queued in. Packages queued by this epoch's checkouts carry this epoch's timestamp, so the
    // range read below never covers them: a delivery never conflicts with a concurrent
    // checkout of the same seller, only with another delivery taking the same package. The
    // rule is deterministic (it depends only on the logged epoch time), so replay agrees.
    let now = ctx.now_ms();
    for seller_id in sellers {
        let at = |ms| OpenDeliveryKey::first_at(*seller_id, ms);
        // Only the head of the queue: checkouts appending behind it do not conflict.
        let Some((key, package_id)) = ctx.scan_first(t.open_deliveries, at(0)..at(now))? else {
            continue;
        };
        ctx.delete(t.open_deliveries, &key)?;
        let order = key.order();
        taken.push((
            w.services.shipment.partition_of(&order),
            (order, package_id),
        ));
    }
    emit_grouped(ctx, w.services.shipment, taken, |packages| {
        MarketEvent::DeliverPackages { packages }
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// seller

pub(super) fn seller_step(ctx: &mut Ctx<'_>, ev: &MarketEvent, w: &Wiring) -> HandlerResult {
    let t = &w.tables;
    match ev {
        MarketEvent::LoadSellerRow { seller_id } => ctx.put(
            t.sellers,
            *seller_id,
            Seller {
                name: format!("seller-{seller_id}"),
                city: format!("city-{}", seller_id % 100),
            },
        ),
        MarketEvent::RecordEntries { entries } => {
            for (key, entry) in entries {
                ctx.put(t.order_entries, *key, *entry)?;
                update_view(ctx, t, key, &entry.totals, 1)?;
            }
            Ok(())
        }
        MarketEvent::EntriesDelivered { entries } => {
            for open in entries {
                let Some(mut entry) = ctx.get(t.order_entries, open)? else {
                    return Err(broken(
                        ctx,
                        format!(
                            "seller {} has no open entry for order {:?}",
                            open.seller_id,
                            open.order()
                        ),
                    ));
                };
                ctx.delete(t.order_entries, open)?;
                entry.delivery_status = DeliveryStatus::Delivered;
                entry.order_status = OrderStatus::Delivered;
                let delivered = EntryKey {
                    delivered: true,
                    ..*open
                };
                ctx.put(t.order_entries, delivered, entry)?;
                update_view(ctx, t, open, &entry.totals, -1)?;
            }
            Ok(())
        }
        other => Err(misrouted(ctx, other)),
    }
}

/// Adds (`sign = 1`) or removes (`sign = -1`) an entry from its seller's dashboard aggregate.
fn update_view(
    ctx: &mut Ctx<'_>,
    t: &Tables,
    entry: &EntryKey,
    totals: &Totals,
    sign: i64,
) -> HandlerResult {
    let key = entry.placement();
    let mut view = ctx.get(t.seller_views, &key)?.unwrap_or_default();
    view.apply(totals, sign);
    ctx.put(t.seller_views, key, view)
}

// ---------------------------------------------------------------------------------------------
// customer

pub(super) fn customer_step(ctx: &mut Ctx<'_>, ev: &MarketEvent, w: &Wiring) -> HandlerResult {
    let t = &w.tables;
    match ev {
        MarketEvent::LoadCustomers { customer_ids } => {
            for id in customer_ids {
                let customer = Customer {
                    name: format!("customer-{id}"),
                    card_last4: (id % 10_000) as u16,
                    success_payment_count: 0,
                    failed_payment_count: 0,
                    delivery_count: 0,
                };
                ctx.put(t.customers, *id, customer)?;
            }
            Ok(())
        }
        MarketEvent::CountPayment {
            customer_id,
            approved,
        } => {
            let mut c = get_customer(ctx, t, *customer_id)?;
            if *approved {
                c.success_payment_count += 1;
            } else {
                c.failed_payment_count += 1;
            }
            ctx.put(t.customers, *customer_id, c)
        }
        MarketEvent::CountDeliveries { customers } => {
            for id in customers {
                let mut c = get_customer(ctx, t, *id)?;
                c.delivery_count += 1;
                ctx.put(t.customers, *id, c)?;
            }
            Ok(())
        }
        other => Err(misrouted(ctx, other)),
    }
}

fn get_customer(ctx: &mut Ctx<'_>, t: &Tables, id: CustomerId) -> Result<Customer, Abort> {
    ctx.get(t.customers, &id)?.ok_or_else(|| {
        ctx.abort_with(
            kinds::UNKNOWN_CUSTOMER,
            format!("{}: {id}", reasons::UNKNOWN_CUSTOMER),
        )
    })
}
