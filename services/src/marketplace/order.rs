//! The order service: orders with their items and status history. A checkout's payment
//! creates the order; deliveries move its status on.

use super::model::*;
use super::{MarketApp, MarketError, Services};
use serde::{Deserialize, Serialize};
use txn::{AppBuilder, HandlerResult, Table, TxnCtx, handler, service};

/// payment → `order[order]`: create the order with its items and history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOrder {
    pub draft: Box<CheckoutDraft>,
    pub approved: bool,
}

impl txn::KeyOf<OrderKey> for CreateOrder {
    fn key(&self) -> &OrderKey {
        &self.draft.order
    }
}

/// shipment → `order[p]`: a package of each order arrived (`true`: it was the last one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrdersDelivered {
    pub orders: Vec<(OrderKey, bool)>,
}

/// The rows of one table of a `order` partition, by key (see [`WipeOrders`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderRows {
    Orders(Vec<OrderKey>),
    Items(Vec<OrderPartKey>),
    History(Vec<OrderPartKey>),
}

/// Reset, to one `order` partition: delete these rows of it (the benchmark driver's
/// `PATCH /order/reset`, see [`Marketplace::reset_requests`](super::Marketplace::reset_requests)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeOrders {
    pub rows: OrderRows,
}

/// The order service: its tables.
pub struct Orders {
    pub(super) orders: Table<OrderKey, Order>,
    pub(super) order_items: Table<OrderPartKey, OrderItem>,
    pub(super) order_history: Table<OrderPartKey, OrderHistory>,
}

impl Orders {
    /// Declares the service's tables; an order's items and history share its partition.
    pub(super) fn declare(b: &mut AppBuilder<MarketApp>, s: &Services) -> Self {
        Orders {
            orders: Order::table(b, *s.order),
            order_items: OrderItem::table(b, *s.order),
            order_history: OrderHistory::table(b, *s.order),
        }
    }
}

#[service(key = OrderKey)]
impl Orders {
    #[handler]
    fn wipe_orders(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &WipeOrders) -> HandlerResult {
        match &ev.rows {
            OrderRows::Orders(keys) => {
                for key in keys {
                    ctx.delete(self.orders, key)?;
                }
            }
            OrderRows::Items(keys) => {
                for key in keys {
                    ctx.delete(self.order_items, key)?;
                }
            }
            OrderRows::History(keys) => {
                for key in keys {
                    ctx.delete(self.order_history, key)?;
                }
            }
        }
        Ok(())
    }
    #[handler(internal)]
    fn create_order(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &CreateOrder) -> HandlerResult {
        let draft = &ev.draft;
        let order = draft.order;
        if ctx.contains(self.orders, &order)? {
            return Err(MarketError::OrderExists { order }.into());
        }
        for (i, item) in draft.items.iter().enumerate() {
            ctx.put(
                self.order_items,
                OrderPartKey::new(order, i as u16 + 1),
                *item,
            )?;
        }
        let history: &[OrderStatus] = if ev.approved {
            &[
                OrderStatus::Invoiced,
                OrderStatus::PaymentProcessed,
                OrderStatus::ReadyForShipment,
            ]
        } else {
            &[OrderStatus::Invoiced, OrderStatus::PaymentFailed]
        };
        let now = ctx.now_ms();
        for (i, status) in history.iter().enumerate() {
            let entry = OrderHistory {
                created_ms: now,
                status: *status,
            };
            let key = OrderPartKey::new(order, i as u16 + 1);
            ctx.put(self.order_history, key, entry)?;
        }
        let row = Order {
            status: *history.last().expect("history is not empty"),
            created_ms: draft.created_ms,
            updated_ms: now,
            totals: draft.totals,
            history_len: history.len() as u16,
        };
        ctx.put(self.orders, order, row)
    }

    #[handler(internal)]
    fn orders_delivered(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &OrdersDelivered,
    ) -> HandlerResult {
        let now = ctx.now_ms();
        for (order, concluded) in &ev.orders {
            let Some(mut row) = ctx.get(self.orders, order)? else {
                return Err(MarketError::DeliveryOfUnknownOrder { order: *order }.into());
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
                let key = OrderPartKey::new(*order, row.history_len);
                ctx.put(self.order_history, key, entry)?;
            }
            row.updated_ms = now;
            ctx.put(self.orders, *order, row)?;
        }
        Ok(())
    }
}
