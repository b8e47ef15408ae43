//! The customer service: customers and their payment and delivery counters, the last step of
//! a checkout and of a delivery.

use super::model::*;
use super::{MarketApp, MarketError, Services};
use serde::{Deserialize, Serialize};
use txn::{Abort, AppBuilder, HandlerResult, Table, TxnCtx, handler, service};

/// Load, to `customer[p]`: create these customers (all owned by partition p).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadCustomers {
    pub customer_ids: Vec<CustomerId>,
}

/// Routed by its first customer, whose partition owns them all (the loader batches them per
/// partition); an empty batch goes to customer 0's partition and creates nothing.
impl txn::KeyOf<CustomerId> for LoadCustomers {
    fn key(&self) -> &CustomerId {
        self.customer_ids.first().unwrap_or(&0)
    }
}

/// payment → `customer[customer]`: count the payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct CountPayment {
    #[key]
    pub customer_id: CustomerId,
    pub approved: bool,
}

/// cart → `customer[customer]` (from [`CheckoutCart`](super::CheckoutCart)): create the
/// customer if it was never loaded, before the checkout counts its payment (the benchmark's
/// driver checks out customers it never ingested).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct EnsureCustomer {
    #[key]
    pub customer_id: CustomerId,
}

/// shipment → `customer[p]`: one more package delivered to each of these customers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountDeliveries {
    pub customers: Vec<CustomerId>,
}

/// The rows of one table of a `customer` partition, by key (see [`WipeCustomers`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerRows {
    Customers(Vec<CustomerId>),
}

/// Reset, to one `customer` partition: delete these rows of it (the benchmark driver's
/// `PATCH /customer/reset`, see [`Marketplace::reset_requests`](super::Marketplace::reset_requests)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeCustomers {
    pub rows: CustomerRows,
}

/// The customer service: its one table.
pub struct Customers {
    pub(super) customers: Table<CustomerId, Customer>,
}

impl Customers {
    /// Declares the service's table.
    pub(super) fn declare(b: &mut AppBuilder<MarketApp>, s: &Services) -> Self {
        Customers {
            customers: Customer::table(b, *s.customer),
        }
    }
}

#[service(key = CustomerId)]
impl Customers {
    #[handler]
    fn wipe_customers(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &WipeCustomers) -> HandlerResult {
        match &ev.rows {
            CustomerRows::Customers(keys) => {
                for key in keys {
                    ctx.delete(self.customers, key)?;
                }
            }
        }
        Ok(())
    }
    #[handler]
    fn load_customers(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &LoadCustomers) -> HandlerResult {
        for id in &ev.customer_ids {
            ctx.put(self.customers, *id, new_customer(*id))?;
        }
        Ok(())
    }

    #[handler(internal, purpose = "checkout")]
    fn ensure_customer(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &EnsureCustomer,
    ) -> HandlerResult {
        if ctx.get(self.customers, &ev.customer_id)?.is_none() {
            ctx.put(self.customers, ev.customer_id, new_customer(ev.customer_id))?;
        }
        Ok(())
    }

    #[handler(internal, purpose = "payment")]
    fn count_payment(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &CountPayment) -> HandlerResult {
        let mut c = self.customer(ctx, ev.customer_id)?;
        if ev.approved {
            c.success_payment_count += 1;
        } else {
            c.failed_payment_count += 1;
        }
        ctx.put(self.customers, ev.customer_id, c)
    }

    #[handler(internal, purpose = "delivery")]
    fn count_deliveries(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &CountDeliveries,
    ) -> HandlerResult {
        for id in &ev.customers {
            let mut c = self.customer(ctx, *id)?;
            c.delivery_count += 1;
            ctx.put(self.customers, *id, c)?;
        }
        Ok(())
    }

    /// The customer `id`, or an unknown-customer abort.
    fn customer(&self, ctx: &mut TxnCtx<'_, MarketApp>, id: CustomerId) -> Result<Customer, Abort> {
        ctx.get(self.customers, &id)?
            .ok_or_else(|| MarketError::UnknownCustomer { customer_id: id }.into())
    }
}

/// A customer as loading creates it: no payments or deliveries yet.
fn new_customer(id: CustomerId) -> Customer {
    Customer {
        name: format!("customer-{id}"),
        card_last4: (id % 10_000) as u16,
        success_payment_count: 0,
        failed_payment_count: 0,
        delivery_count: 0,
    }
}
