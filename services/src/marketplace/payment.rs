//! The payment service: records a checkout's payment as a simulated provider decided it (the
//! decision is drawn from the transaction's seeded generator when the checkout starts), and fans
//! the checkout out to every other service.

use super::model::*;
use super::{
    CountPayment, CreateOrder, CreateShipment, Customers, MarketApp, Orders, QueueDeliveries,
    RecordEntries, Sellers, Services, Shipments, emit_grouped,
};
use rand::Rng;
use serde::{Deserialize, Serialize};
use txn::{AppBuilder, HandlerResult, Svc, Table, TxnCtx, handler, service};

/// What the simulated payment provider answers for one checkout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderDecision {
    pub approved: bool,
    pub payment_type: PaymentType,
    pub installments: u8,
    pub card_last4: u16,
}

impl ProviderDecision {
    /// The provider's answer, drawn from `rng` (the transaction's TID-seeded generator, so a
    /// replay draws the same): declined `failure_pct` percent of the time. The checkout's
    /// first step draws it, so that stock can confirm or release in the same step as it
    /// reserves, one wave before the payment is recorded.
    pub fn draw(rng: &mut impl Rng, failure_pct: u8) -> Self {
        let approved = rng.random_range(0..100u8) >= failure_pct;
        let (payment_type, installments) = match rng.random_range(0..100u8) {
            0..60 => (PaymentType::CreditCard, rng.random_range(1..=10u8)),
            60..80 => (PaymentType::DebitCard, 1),
            _ => (PaymentType::Boleto, 1),
        };
        ProviderDecision {
            approved,
            payment_type,
            installments,
            card_last4: rng.random_range(0..10_000u16),
        }
    }
}

/// cart → `payment[order]`: record the payment as the provider decided, then fan out to every
/// service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pay {
    /// Boxed: the draft is the largest event of the marketplace, and every event is moved
    /// around in the application's envelope.
    pub draft: Box<CheckoutDraft>,
    pub decision: ProviderDecision,
}

impl txn::KeyOf<OrderKey> for Pay {
    fn key(&self) -> &OrderKey {
        &self.draft.order
    }
}

/// The rows of one table of a `payment` partition, by key (see [`WipePayments`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentRows {
    Payments(Vec<OrderPartKey>),
    Cards(Vec<OrderPartKey>),
}

/// Reset, to one `payment` partition: delete these rows of it (the benchmark driver's
/// `PATCH /payment/reset`, see [`Marketplace::reset_requests`](super::Marketplace::reset_requests)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipePayments {
    pub rows: PaymentRows,
}

/// The payment service: its tables, and the services a payment fans out to.
pub struct Payments {
    pub(super) order_payments: Table<OrderPartKey, Payment>,
    pub(super) order_payment_cards: Table<OrderPartKey, PaymentCard>,
    /// Lanes of each seller's delivery queue (see [`OpenDeliveryKey`]).
    delivery_lanes: u16,
    orders: Svc<Orders>,
    sellers: Svc<Sellers>,
    shipments: Svc<Shipments>,
    customers: Svc<Customers>,
}

impl Payments {
    /// Declares the service's tables; an order's payment rows share its partition.
    pub(super) fn declare(
        b: &mut AppBuilder<MarketApp>,
        s: &Services,
        delivery_lanes: u16,
    ) -> Self {
        Payments {
            order_payments: Payment::table(b, *s.payment),
            order_payment_cards: PaymentCard::table(b, *s.payment),
            delivery_lanes,
            orders: s.order,
            sellers: s.seller,
            shipments: s.shipment,
            customers: s.customer,
        }
    }
}

#[service(key = OrderKey)]
impl Payments {
    #[handler]
    fn wipe_payments(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &WipePayments) -> HandlerResult {
        match &ev.rows {
            PaymentRows::Payments(keys) => {
                for key in keys {
                    ctx.delete(self.order_payments, key)?;
                }
            }
            PaymentRows::Cards(keys) => {
                for key in keys {
                    ctx.delete(self.order_payment_cards, key)?;
                }
            }
        }
        Ok(())
    }
    #[handler(internal)]
    fn pay(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &Pay) -> HandlerResult {
        let draft = &ev.draft;
        let approved = ev.decision.approved;
        self.record(ctx, draft, &ev.decision)?;
        self.fan_out(ctx, draft, approved);
        ctx.set_output(MarketOutput::CheckedOut {
            order: draft.order,
            approved,
            total_invoice: draft.totals.total_invoice,
        });
        ctx.emit(
            self.orders,
            CreateOrder {
                draft: draft.clone(),
                approved,
            },
        );
        Ok(())
    }

    /// Records the payment line (and its card) as the provider decided.
    fn record(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        draft: &CheckoutDraft,
        decision: &ProviderDecision,
    ) -> HandlerResult {
        let status = if decision.approved {
            PaymentStatus::Approved
        } else {
            PaymentStatus::Failed
        };
        let line = OrderPartKey::new(draft.order, 1);
        let payment = Payment {
            payment_type: decision.payment_type,
            installments: decision.installments,
            value: draft.totals.total_invoice,
            status,
            created_ms: ctx.now_ms(),
        };
        ctx.put(self.order_payments, line, payment)?;
        if decision.payment_type != PaymentType::Boleto {
            let card = PaymentCard {
                card_last4: decision.card_last4,
                installments: decision.installments,
            };
            ctx.put(self.order_payment_cards, line, card)?;
        }
        Ok(())
    }

    /// On approval: each seller's entry, the shipment with one package per seller, and the
    /// packages queued for delivery; either way the customer counts the payment.
    fn fan_out(&self, ctx: &mut TxnCtx<'_, MarketApp>, draft: &CheckoutDraft, approved: bool) {
        let order = draft.order;
        // A declined payment creates no package, entry or queued delivery: no lists to fill.
        let n_sellers = if approved {
            draft.seller_runs().count()
        } else {
            0
        };
        let mut packages = Vec::with_capacity(n_sellers);
        let mut entries = Vec::with_capacity(n_sellers);
        let mut queued = Vec::with_capacity(n_sellers);
        // Every package of the order in one lane: deliveries drawing other lanes never touch
        // this order's shipment or status.
        let lane = delivery_lane(order.order_id, self.delivery_lanes);
        for (package_idx, (seller_id, from, to)) in draft.seller_runs().enumerate() {
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
            entries.push((entry_key, entry));
            let open = OpenDeliveryKey::new(seller_id, lane, draft.created_ms, order);
            queued.push((open, package_id));
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
        let (sellers, shipments) = (self.sellers, self.shipments);
        emit_grouped(
            ctx,
            sellers,
            entries,
            |(key, _)| sellers.partition_of(&key.placement()),
            |entries| RecordEntries { entries },
        );
        emit_grouped(
            ctx,
            shipments,
            queued,
            |(key, _)| shipments.partition_of(&key.placement()),
            |packages| QueueDeliveries { packages },
        );
        if approved {
            // Shipments route by seller (their inbound requests name sellers); a shipment
            // row lives in the partition of its order.
            let partition = self.shipments.partition_of(&order);
            let shipment = CreateShipment {
                order,
                packages,
                created_ms: draft.created_ms,
            };
            ctx.emit_to_partition(self.shipments, partition, shipment);
        }
        ctx.emit(
            self.customers,
            CountPayment {
                customer_id: order.customer_id,
                approved,
            },
        );
    }
}
