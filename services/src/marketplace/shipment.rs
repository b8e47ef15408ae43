//! The shipment service: shipments and their packages (placed by order), and each seller's
//! queue of open packages (placed by seller, split into lanes). An update delivery takes the
//! oldest open package in its lane of each seller it names and passes the delivery on to
//! orders, sellers and customers.

use super::model::*;
use super::{
    CountDeliveries, Customers, EntriesDelivered, MarketApp, MarketError, Orders, OrdersDelivered,
    Sellers, Services, emit_grouped,
};
use serde::{Deserialize, Serialize};
use txn::{AppBuilder, HandlerResult, Svc, Table, TxnCtx, handler, service};

/// Most sellers one update delivery may name.
pub const DELIVERY_SELLERS_MAX: usize = 10;

/// Inbound, to `shipment[first seller]`: deliver the oldest open package of each seller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateDelivery {
    pub sellers: Vec<SellerId>,
}

/// Routed by its first seller (the generator draws all of them from that seller's partition);
/// a request naming none goes to seller 0's partition, which refuses it.
impl txn::KeyOf<SellerId> for UpdateDelivery {
    fn key(&self) -> &SellerId {
        self.sellers.first().unwrap_or(&0)
    }
}

/// payment → `shipment[order]` (sent to the partition of the order, as the service routes its
/// keyed events by seller): create the shipment and its packages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateShipment {
    pub order: OrderKey,
    pub packages: Vec<Package>,
    pub created_ms: u64,
}

/// payment → `shipment[p]`: queue these packages (of sellers in partition p) for delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDeliveries {
    pub packages: Vec<(OpenDeliveryKey, u16)>,
}

/// shipment → `shipment[p]`: take the oldest open package of each of these sellers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeOldest {
    pub sellers: Vec<SellerId>,
}

/// shipment → `shipment[p]`: mark these packages (of orders in partition p) delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverPackages {
    pub packages: Vec<(OrderKey, u16)>,
}

/// The rows of one table of a `shipment` partition, by key (see [`WipeShipments`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipmentRows {
    Shipments(Vec<OrderKey>),
    Packages(Vec<OrderPartKey>),
    OpenDeliveries(Vec<OpenDeliveryKey>),
}

/// Reset, to one `shipment` partition: delete these rows of it (the benchmark driver's
/// `PATCH /shipment/reset`, see [`Marketplace::reset_requests`](super::Marketplace::reset_requests)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeShipments {
    pub rows: ShipmentRows,
}

/// The shipment service: its tables, itself (a delivery hands steps to its other
/// partitions), and the services a delivery goes on to.
pub struct Shipments {
    pub(super) shipments: Table<OrderKey, Shipment>,
    pub(super) packages: Table<OrderPartKey, Package>,
    pub(super) open_deliveries: Table<OpenDeliveryKey, u16>,
    /// Lanes of each seller's delivery queue (see [`OpenDeliveryKey`]).
    delivery_lanes: u16,
    service: Svc<Shipments>,
    orders: Svc<Orders>,
    sellers: Svc<Sellers>,
    customers: Svc<Customers>,
}

impl Shipments {
    /// Declares the service's tables: an order's packages share its partition, and the
    /// delivery queue is ordered and placed by seller.
    pub(super) fn declare(
        b: &mut AppBuilder<MarketApp>,
        s: &Services,
        delivery_lanes: u16,
    ) -> Self {
        let shipments = Shipment::table(b, *s.shipment);
        let packages = Package::table(b, *s.shipment);
        // The delivery queue holds a package id per key: no row type to derive a table from.
        let open_deliveries = b.ordered_table(*s.shipment, "open_deliveries");
        b.place_by(open_deliveries, OpenDeliveryKey::placement);
        Shipments {
            shipments,
            packages,
            open_deliveries,
            delivery_lanes,
            service: s.shipment,
            orders: s.order,
            sellers: s.seller,
            customers: s.customer,
        }
    }
}

/// The service's events route by seller: its one inbound request names sellers, and the
/// delivery queue is placed by seller. Steps for an order's shipment are sent to the order's
/// partition with `emit_to_partition`.
#[service(key = SellerId)]
impl Shipments {
    #[handler]
    fn wipe_shipments(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &WipeShipments) -> HandlerResult {
        match &ev.rows {
            ShipmentRows::Shipments(keys) => {
                for key in keys {
                    ctx.delete(self.shipments, key)?;
                }
            }
            ShipmentRows::Packages(keys) => {
                for key in keys {
                    ctx.delete(self.packages, key)?;
                }
            }
            ShipmentRows::OpenDeliveries(keys) => {
                for key in keys {
                    ctx.delete(self.open_deliveries, key)?;
                }
            }
        }
        Ok(())
    }
    #[handler(internal)]
    fn create_shipment(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &CreateShipment,
    ) -> HandlerResult {
        let shipment = Shipment {
            package_count: ev.packages.len() as u16,
            delivered_count: 0,
            total_freight: ev.packages.iter().map(|p| p.freight_value).sum(),
            status: ShipmentStatus::Approved,
            created_ms: ev.created_ms,
        };
        ctx.put(self.shipments, ev.order, shipment)?;
        for (i, p) in ev.packages.iter().enumerate() {
            ctx.put(self.packages, OrderPartKey::new(ev.order, i as u16 + 1), *p)?;
        }
        Ok(())
    }

    #[handler(internal)]
    fn queue_deliveries(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &QueueDeliveries,
    ) -> HandlerResult {
        for (key, package_id) in &ev.packages {
            ctx.put(self.open_deliveries, *key, *package_id)?;
        }
        Ok(())
    }

    #[handler]
    fn update_delivery(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &UpdateDelivery,
    ) -> HandlerResult {
        let sellers = &ev.sellers;
        if sellers.is_empty() || sellers.len() > DELIVERY_SELLERS_MAX {
            return Err(MarketError::DeliverySellers {
                n_sellers: sellers.len(),
            }
            .into());
        }
        for (i, seller_id) in sellers.iter().enumerate() {
            if sellers[..i].contains(seller_id) {
                return Err(MarketError::SellerNamedTwice {
                    seller_id: *seller_id,
                }
                .into());
            }
        }
        // Sellers of this partition are served here; the others one wave later, one step per
        // partition.
        let (here, service) = (ctx.partition(), self.service);
        let is_here = |s: &SellerId| service.partition_of(s) == here;
        if sellers.iter().all(is_here) {
            // The generator draws every seller from one partition: nothing to split or send.
            self.take_oldest_of(ctx, sellers)?;
        } else {
            let (local, remote): (Vec<SellerId>, Vec<SellerId>) =
                sellers.iter().partition(|s| is_here(s));
            self.take_oldest_of(ctx, &local)?;
            emit_grouped(
                ctx,
                service,
                remote,
                |s| service.partition_of(s),
                |sellers| TakeOldest { sellers },
            );
        }
        ctx.set_output(MarketOutput::DeliveryRequested {
            sellers: sellers.len() as u32,
        });
        Ok(())
    }

    #[handler(internal)]
    fn take_oldest(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &TakeOldest) -> HandlerResult {
        self.take_oldest_of(ctx, &ev.sellers)
    }

    #[handler(internal)]
    fn deliver_packages(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &DeliverPackages,
    ) -> HandlerResult {
        let now = ctx.now_ms();
        let mut orders = Vec::with_capacity(ev.packages.len());
        for (order, package_id) in &ev.packages {
            let (order, package_id) = (*order, *package_id);
            let key = OrderPartKey::new(order, package_id);
            let package = ctx.get(self.packages, &key)?;
            let Some(mut package) = package.filter(|p| p.status == PackageStatus::Shipped) else {
                return Err(MarketError::PackageNotShipped { order, package_id }.into());
            };
            let Some(mut shipment) = ctx.get(self.shipments, &order)? else {
                return Err(MarketError::ShipmentMissing { order }.into());
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
            ctx.put(self.packages, key, package)?;
            ctx.put(self.shipments, order, shipment)?;
            orders.push((order, concluded));
        }
        let order_service = self.orders;
        emit_grouped(
            ctx,
            order_service,
            orders,
            |(order, _)| order_service.partition_of(order),
            |orders| OrdersDelivered { orders },
        );
        Ok(())
    }

    /// Takes the oldest open package in this transaction's lane of each of `sellers` (all of
    /// this partition) off the delivery queue, if there is one, and sends the packages on to
    /// their shipments. The queue's key names the seller and the order, so the seller entries
    /// and the customers' delivery counts are sent from here too, one step per partition for
    /// all the packages taken, rather than from each shipment's step one wave later.
    fn take_oldest_of(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        sellers: &[SellerId],
    ) -> HandlerResult {
        // Filled only once a package is taken, then sized for every seller at once.
        let (mut taken, mut entries, mut customers) = (Vec::new(), Vec::new(), Vec::new());
        // A package becomes deliverable once the clock has moved past the millisecond it was
        // queued in. Packages queued by this epoch's checkouts carry this epoch's timestamp,
        // so the range read below never covers them: a delivery never conflicts with a
        // concurrent checkout of the same seller, only with another delivery taking the same
        // package. The rule is deterministic (it depends only on the logged epoch time), so
        // replay agrees.
        let now = ctx.now_ms();
        // Deliveries of one epoch pop the same head only if they drew the same lane; the lane
        // comes from the TID, so replay draws it again.
        let lane = delivery_lane(ctx.tid().0, self.delivery_lanes);
        for seller_id in sellers {
            let at = |ms| OpenDeliveryKey::first_at(*seller_id, lane, ms);
            // Only the head of the queue: checkouts appending behind it do not conflict.
            let Some((key, package_id)) = ctx.scan_first(self.open_deliveries, at(0)..at(now))?
            else {
                continue;
            };
            ctx.delete(self.open_deliveries, &key)?;
            let order = key.order();
            if taken.is_empty() {
                taken.reserve_exact(sellers.len());
                entries.reserve_exact(sellers.len());
                customers.reserve_exact(sellers.len());
            }
            taken.push((order, package_id));
            entries.push(EntryKey::open(*seller_id, order));
            customers.push(order.customer_id);
        }
        let (service, seller_service, customer_service) =
            (self.service, self.sellers, self.customers);
        emit_grouped(
            ctx,
            service,
            taken,
            |(order, _)| service.partition_of(order),
            |packages| DeliverPackages { packages },
        );
        emit_grouped(
            ctx,
            seller_service,
            entries,
            |entry| seller_service.partition_of(&entry.placement()),
            |entries| EntriesDelivered { entries },
        );
        emit_grouped(
            ctx,
            customer_service,
            customers,
            |customer| customer_service.partition_of(customer),
            |customers| CountDeliveries { customers },
        );
        Ok(())
    }
}
