//! The cart service: customers' carts, priced from a replica of every product that each cart
//! partition keeps, and the first step of a checkout, which reads and clears the cart, draws
//! the payment provider's decision and starts the reservations and the payment.

use super::model::*;
use super::stock::{stock_lines, stock_partition};
use super::{
    Customers, EnsureCustomer, MarketApp, MarketError, Pay, Payments, ProviderDecision, Reserve,
    Services, Stock, emit_grouped,
};
use serde::{Deserialize, Serialize};
use txn::{AppBuilder, HandlerResult, Index, Svc, Table, TxnCtx, handler, service};

/// Most items one cart add or checkout may carry.
pub const CART_ITEMS_MAX: usize = 64;
/// Most units of one item in a cart add or checkout.
pub const ITEM_QUANTITY_MAX: u32 = 1_000;

/// Inbound, to `cart[customer]`: put items in the cart (priced from the replica).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct CartAdd {
    #[key]
    pub customer_id: CustomerId,
    pub items: Vec<CartAddItem>,
}

/// Inbound, to `cart[customer]`: add `add` to the cart (the cart-fill step), then check the
/// whole cart out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct Checkout {
    #[key]
    pub customer_id: CustomerId,
    pub add: Vec<CartAddItem>,
}

/// Inbound, to `cart[customer]`: put one item in the cart as the client priced it (the
/// benchmark driver's cart add carries the price, freight, voucher and version it saw),
/// replacing the same product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct AddCartItem {
    #[key]
    pub customer_id: CustomerId,
    pub item: CartItem,
}

/// Inbound, to `cart[customer]`: check out what the cart holds (the benchmark driver's
/// checkout, after its cart adds), consuming the cart; items no longer sold at their version
/// are dropped (nothing left: the cart is just emptied). A customer never loaded is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct CheckoutCart {
    #[key]
    pub customer_id: CustomerId,
}

/// Inbound, to `cart[customer]`: empty the customer's cart without checking it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct SealCart {
    #[key]
    pub customer_id: CustomerId,
}

/// product → every cart partition: the new price of a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatePrice {
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub replica: Replica,
}

/// product → every cart partition: upsert replicas (a load or a new version); a new version
/// also drops cart items holding an older one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateProducts {
    pub seller_id: SellerId,
    pub replicas: Vec<(ProductId, Replica)>,
}

/// The rows of one table of a `cart` partition, by key (see [`WipeCarts`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CartRows {
    Carts(Vec<CustomerId>),
    Replicas(Vec<ProductKey>),
}

/// Reset, to one `cart` partition: delete these rows of it (the benchmark driver's
/// `PATCH /cart/reset`, see [`Marketplace::reset_requests`](super::Marketplace::reset_requests)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeCarts {
    pub rows: CartRows,
}

/// The cart service: its tables, and the services a checkout goes on to.
pub struct Carts {
    pub(super) carts: Table<CustomerId, Cart>,
    /// The carts holding each product: a runtime index of `carts`, kept at commit.
    pub(super) carts_by_product: Index<ProductKey, CustomerId, Cart>,
    /// Replicated: every cart partition holds a full copy.
    pub(super) product_replicas: Table<ProductKey, Replica>,
    /// Percentage of payments the (simulated) provider declines.
    payment_failure_pct: u8,
    stock: Svc<Stock>,
    payments: Svc<Payments>,
    customers: Svc<Customers>,
}

impl Carts {
    /// Declares the service's tables: carts by customer, indexed by the products they hold,
    /// and the replicated product table; checkouts are declined `payment_failure_pct` percent
    /// of the time.
    pub(super) fn declare(
        b: &mut AppBuilder<MarketApp>,
        s: &Services,
        payment_failure_pct: u8,
    ) -> Self {
        let carts = Cart::table(b, *s.cart);
        Carts {
            carts,
            carts_by_product: b.index_many(carts, "carts_by_product", Cart::products),
            product_replicas: Replica::table(b, *s.cart),
            payment_failure_pct,
            stock: s.stock,
            payments: s.payment,
            customers: s.customer,
        }
    }
}

#[service(key = CustomerId)]
impl Carts {
    #[handler]
    fn wipe_carts(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &WipeCarts) -> HandlerResult {
        match &ev.rows {
            CartRows::Carts(keys) => {
                for key in keys {
                    ctx.delete(self.carts, key)?;
                }
            }
            CartRows::Replicas(keys) => {
                for key in keys {
                    ctx.delete(self.product_replicas, key)?;
                }
            }
        }
        Ok(())
    }
    #[handler]
    fn cart_add(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &CartAdd) -> HandlerResult {
        let mut cart = ctx.get(self.carts, &ev.customer_id)?.unwrap_or_default();
        self.add_to_cart(ctx, &mut cart, &ev.items)?;
        ctx.set_output(MarketOutput::CartItems(cart.items.len() as u32));
        ctx.put(self.carts, ev.customer_id, cart)
    }

    /// Wave 0 of a checkout: fill the cart, read and clear it, price the order, draw the
    /// payment provider's decision, and start the reservations and the payment in parallel.
    ///
    /// ```text
    /// cart[c] ─┬─ Reserve ──▶ stock[p]   (per stock partition: version and availability, or
    ///          │                          abort; then confirm or release)
    ///          └─ Pay ──────▶ payment[o] ─┬─ CreateOrder ─────▶ order[o]     order, items, history
    ///                                     ├─ RecordEntries ───▶ seller[p]    (approved only)
    ///                                     ├─ CreateShipment ──▶ shipment[o]  (approved only)
    ///                                     ├─ QueueDeliveries ─▶ shipment[p]  (approved only)
    ///                                     └─ CountPayment ────▶ customer[c]
    /// ```
    ///
    /// The reservation and the payment run side by side because nothing the payment does is
    /// visible unless every reservation succeeds: a shortage aborts the whole transaction,
    /// which is the same outcome as reserving first and never paying. The decision is drawn
    /// here rather than by the payment step so that stock settles in its reservation step
    /// (one step per stock partition instead of two); it comes from the TID-seeded generator,
    /// so a replay draws the same.
    #[handler]
    fn checkout(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &Checkout) -> HandlerResult {
        let customer_id = ev.customer_id;
        let existing = ctx.get(self.carts, &customer_id)?;
        let had_cart = existing.is_some();
        let mut cart = existing.unwrap_or_default();
        self.add_to_cart(ctx, &mut cart, &ev.add)?;
        if cart.items.is_empty() {
            return Err(MarketError::EmptyCart { customer_id }.into());
        }
        if had_cart {
            ctx.delete(self.carts, &customer_id)?;
        }
        self.start_checkout(ctx, customer_id, &cart);
        Ok(())
    }

    #[handler]
    fn add_cart_item(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &AddCartItem) -> HandlerResult {
        let item = ev.item;
        if item.quantity == 0 || item.quantity > ITEM_QUANTITY_MAX {
            return Err(MarketError::ItemQuantity {
                product_id: item.product_id,
                quantity: item.quantity,
            }
            .into());
        }
        let mut cart = ctx.get(self.carts, &ev.customer_id)?.unwrap_or_default();
        match cart
            .items
            .binary_search_by_key(&(item.seller_id, item.product_id), |i| {
                (i.seller_id, i.product_id)
            }) {
            Ok(pos) => cart.items[pos] = item,
            Err(pos) if cart.items.len() < CART_ITEMS_MAX => cart.items.insert(pos, item),
            Err(_) => {
                let n_items = cart.items.len() + 1;
                return Err(MarketError::TooManyItems { n_items }.into());
            }
        }
        ctx.set_output(MarketOutput::CartItems(cart.items.len() as u32));
        ctx.put(self.carts, ev.customer_id, cart)
    }

    #[handler]
    fn checkout_cart(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &CheckoutCart) -> HandlerResult {
        let customer_id = ev.customer_id;
        let Some(mut cart) = ctx.get(self.carts, &customer_id)? else {
            return Err(MarketError::EmptyCart { customer_id }.into());
        };
        ctx.delete(self.carts, &customer_id)?;
        // As the benchmark drops items it cannot sell, items of a product this partition's
        // replica does not hold at their version are dropped rather than aborting the checkout
        // (the replica changes version in the same transaction as the stock item).
        let mut kept = Vec::with_capacity(cart.items.len());
        for item in cart.items {
            let key = ProductKey {
                seller_id: item.seller_id,
                product_id: item.product_id,
            };
            let replica = ctx.get(self.product_replicas, &key)?;
            if replica.is_some_and(|r| r.version == item.version) {
                kept.push(item);
            }
        }
        cart.items = kept;
        if cart.items.is_empty() {
            ctx.set_output(MarketOutput::CartItems(0));
            return Ok(());
        }
        // Runs in wave 1, before the payment is counted in wave 2 of the same transaction.
        ctx.emit(self.customers, EnsureCustomer { customer_id });
        self.start_checkout(ctx, customer_id, &cart);
        Ok(())
    }

    #[handler]
    fn seal_cart(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &SealCart) -> HandlerResult {
        if ctx.contains(self.carts, &ev.customer_id)? {
            ctx.delete(self.carts, &ev.customer_id)?;
        }
        ctx.set_output(MarketOutput::CartItems(0));
        Ok(())
    }

    /// Prices the order of `cart` (which the caller has cleared) and starts the reservations
    /// and the payment.
    fn start_checkout(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        customer_id: CustomerId,
        cart: &Cart,
    ) {
        let order = OrderKey {
            customer_id,
            order_id: ctx.tid().0,
        };
        let (items, totals) = OrderItem::priced(&cart.items);
        let draft = CheckoutDraft {
            order,
            items,
            totals,
            created_ms: ctx.now_ms(),
        };
        let decision = ProviderDecision::draw(ctx.rng(), self.payment_failure_pct);
        let approved = decision.approved;
        let lines = stock_lines(&draft.items);
        let partition = stock_partition(self.stock);
        emit_grouped(ctx, self.stock, lines, partition, |lines| Reserve {
            lines,
            approved,
        });
        ctx.emit(
            self.payments,
            Pay {
                draft: Box::new(draft),
                decision,
            },
        );
    }

    #[handler(internal)]
    fn replicate_price(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &ReplicatePrice,
    ) -> HandlerResult {
        let (seller_id, product_id, replica) = (ev.seller_id, ev.product_id, ev.replica);
        let key = ProductKey {
            seller_id,
            product_id,
        };
        ctx.put(self.product_replicas, key, replica)?;
        // Every cart of this partition holding the product at this version gets the price.
        for (customer_id, mut cart) in ctx.lookup(self.carts_by_product, &key)? {
            for item in &mut cart.items {
                if item.seller_id == seller_id
                    && item.product_id == product_id
                    && item.version == replica.version
                {
                    item.unit_price = replica.price;
                    item.freight_value = replica.freight_value;
                }
            }
            ctx.put(self.carts, customer_id, cart)?;
        }
        Ok(())
    }

    #[handler(internal)]
    fn replicate_products(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &ReplicateProducts,
    ) -> HandlerResult {
        let seller_id = ev.seller_id;
        for (product_id, replica) in &ev.replicas {
            let key = ProductKey {
                seller_id,
                product_id: *product_id,
            };
            ctx.put(self.product_replicas, key, *replica)?;
            // Items of an older version can no longer be bought: drop them from carts.
            for (customer_id, mut cart) in ctx.lookup(self.carts_by_product, &key)? {
                let before = cart.items.len();
                cart.items.retain(|i| {
                    !(i.seller_id == seller_id
                        && i.product_id == *product_id
                        && i.version != replica.version)
                });
                if cart.items.len() != before {
                    if cart.items.is_empty() {
                        ctx.delete(self.carts, &customer_id)?;
                    } else {
                        ctx.put(self.carts, customer_id, cart)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The cart-add step: prices each item from this partition's replica and puts it in `cart`
    /// (replacing the same product). The product index of carts follows when the cart is
    /// written.
    fn add_to_cart(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        cart: &mut Cart,
        items: &[CartAddItem],
    ) -> HandlerResult {
        if items.len() > CART_ITEMS_MAX {
            return Err(MarketError::TooManyItems {
                n_items: items.len(),
            }
            .into());
        }
        // At most one new item per add: room for all of them at once, not push by push.
        cart.items.reserve(items.len());
        for add in items {
            if add.quantity == 0 || add.quantity > ITEM_QUANTITY_MAX {
                return Err(MarketError::ItemQuantity {
                    product_id: add.product_id,
                    quantity: add.quantity,
                }
                .into());
            }
            let key = ProductKey {
                seller_id: add.seller_id,
                product_id: add.product_id,
            };
            let Some(replica) = ctx.get(self.product_replicas, &key)? else {
                return Err(MarketError::UnknownProduct {
                    seller_id: add.seller_id,
                    product_id: add.product_id,
                }
                .into());
            };
            let item = priced_item(add, &replica);
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
}

/// The cart item of `add` at the replica's price (a voucher is worth 10 % of it).
fn priced_item(add: &CartAddItem, replica: &Replica) -> CartItem {
    let voucher = if add.voucher {
        replica.price * i64::from(add.quantity) / 10
    } else {
        0
    };
    CartItem {
        seller_id: add.seller_id,
        product_id: add.product_id,
        unit_price: replica.price,
        freight_value: replica.freight_value,
        quantity: add.quantity,
        voucher,
        version: replica.version,
    }
}
