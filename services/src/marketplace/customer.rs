//! The customer service: customers and their payment and delivery counters, the last step of
//! a checkout and of a delivery. The counters change by deltas only, so the counts of any
//! number of checkouts and deliveries of one epoch commit together.

use super::model::*;
use super::{MarketApp, MarketError, Services};
use serde::{Deserialize, Serialize};
use txn::{Abort, AppBuilder, DeltaUse, Field, HandlerResult, Table, TxnCtx, handler, service};

const SUCCESS_PAYMENTS: Field<CustomerCounters> =
    txn::field!(CustomerCounters, success_payment_count);
const FAILED_PAYMENTS: Field<CustomerCounters> =
    txn::field!(CustomerCounters, failed_payment_count);
const DELIVERIES: Field<CustomerCounters> = txn::field!(CustomerCounters, delivery_count);

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
    Counters(Vec<CustomerId>),
}

/// Reset, to one `customer` partition: delete these rows of it (the benchmark driver's
/// `PATCH /customer/reset`, see [`Marketplace::reset_requests`](super::Marketplace::reset_requests)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeCustomers {
    pub rows: CustomerRows,
}

/// The customer service: its tables.
pub struct Customers {
    pub(super) customers: Table<CustomerId, Customer>,
    pub(super) customer_counters: Table<CustomerId, CustomerCounters>,
}

impl Customers {
    /// Declares the service's tables and how its handlers change the counters (increments
    /// only, no invariant: confluent).
    pub(super) fn declare(b: &mut AppBuilder<MarketApp>, s: &Services) -> Self {
        let customer_counters = CustomerCounters::table(b, *s.customer);
        for counter in [SUCCESS_PAYMENTS, FAILED_PAYMENTS, DELIVERIES] {
            b.delta_field(customer_counters, counter, DeltaUse::Increments);
        }
        Customers {
            customers: Customer::table(b, *s.customer),
            customer_counters,
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
            CustomerRows::Counters(keys) => {
                for key in keys {
                    ctx.delete(self.customer_counters, key)?;
                }
            }
        }
        Ok(())
    }
    #[handler]
    fn load_customers(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &LoadCustomers) -> HandlerResult {
        for id in &ev.customer_ids {
            self.create(ctx, *id)?;
        }
        Ok(())
    }

    #[handler(internal, purpose = "checkout")]
    fn ensure_customer(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &EnsureCustomer,
    ) -> HandlerResult {
        // Only this step and loading write a customer row, so in a running marketplace the
        // read conflicts with nothing.
        if !ctx.contains(self.customers, &ev.customer_id)? {
            self.create(ctx, ev.customer_id)?;
        }
        Ok(())
    }

    #[handler(internal, purpose = "payment")]
    fn count_payment(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &CountPayment) -> HandlerResult {
        self.require_customer(ctx, ev.customer_id)?;
        let counter = if ev.approved {
            SUCCESS_PAYMENTS
        } else {
            FAILED_PAYMENTS
        };
        ctx.add(self.customer_counters, &ev.customer_id, counter, 1)
    }

    #[handler(internal, purpose = "delivery")]
    fn count_deliveries(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &CountDeliveries,
    ) -> HandlerResult {
        for id in &ev.customers {
            self.require_customer(ctx, *id)?;
            ctx.add(self.customer_counters, id, DELIVERIES, 1)?;
        }
        Ok(())
    }

    /// Creates customer `id` with zero counters.
    fn create(&self, ctx: &mut TxnCtx<'_, MarketApp>, id: CustomerId) -> HandlerResult {
        ctx.put(self.customers, id, new_customer(id))?;
        ctx.put(self.customer_counters, id, CustomerCounters::default())
    }

    /// An unknown-customer abort if customer `id` does not exist. The read is of the customer
    /// row, which counting never writes, so it does not conflict with other counts; it only
    /// asks whether the row exists, so the customer's name is not copied.
    fn require_customer(&self, ctx: &mut TxnCtx<'_, MarketApp>, id: CustomerId) -> HandlerResult {
        if ctx.contains(self.customers, &id)? {
            Ok(())
        } else {
            Err(Abort::from(MarketError::UnknownCustomer {
                customer_id: id,
            }))
        }
    }
}

/// A customer as loading creates it (its counters start at zero).
fn new_customer(id: CustomerId) -> Customer {
    Customer {
        name: format!("customer-{id}"),
        card_last4: (id % 10_000) as u16,
    }
}
