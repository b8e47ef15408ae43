//! The marketplace's business aborts: one error type for the eight services, whose kinds are
//! the stable names reports group aborts by.
//!
//! One enum rather than one per service because the kinds are a vocabulary of the whole
//! marketplace: several services raise the same kind (an unknown product is noticed by
//! products, stock and carts; an invalid request by products, carts and shipments), and the
//! PostgreSQL baseline reports the same kinds for the application as a whole. The runtime names
//! the aborting service itself.

use super::model::{CustomerId, OrderKey, ProductId, SellerId, Version};
use super::{CART_ITEMS_MAX, DELIVERY_SELLERS_MAX, ITEM_QUANTITY_MAX};

/// Why a marketplace transaction was aborted by a business rule. Each message starts with the
/// words of its kind, so a message read alone still says which rule it broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    /// A checkout wants more units than are available beyond the reservations (`free`).
    #[error(
        "stock shortage: product {product_id} of seller {seller_id} has {free} units free \
         beyond its reservations, {wanted} wanted"
    )]
    StockShortage {
        seller_id: SellerId,
        product_id: ProductId,
        free: i64,
        wanted: i64,
    },
    /// A cart holds a product at another version than the stock sells.
    #[error(
        "version mismatch: product {product_id} of seller {seller_id} is at version \
         {stock_version}, the cart holds {cart_version}"
    )]
    VersionMismatch {
        seller_id: SellerId,
        product_id: ProductId,
        stock_version: Version,
        cart_version: Version,
    },
    /// A checkout of a cart that holds nothing, with nothing added.
    #[error("empty cart: customer {customer_id} has nothing to check out")]
    EmptyCart { customer_id: CustomerId },
    /// A product that neither the product service nor the cart's replica knows.
    #[error("unknown product: product {product_id} of seller {seller_id}")]
    UnknownProduct {
        seller_id: SellerId,
        product_id: ProductId,
    },
    /// A reservation of a product the stock service has no item of.
    #[error("unknown product: no stock item for product {product_id} of seller {seller_id}")]
    NoStockItem {
        seller_id: SellerId,
        product_id: ProductId,
    },
    /// A step for a customer that was never loaded.
    #[error("unknown customer: {customer_id}")]
    UnknownCustomer { customer_id: CustomerId },
    /// A price update by 0 or by more than 10 %.
    #[error("invalid request: a price changes by 1 to 10 %, not {pct} %")]
    PriceChange { pct: i8 },
    /// A cart add or checkout with more than [`CART_ITEMS_MAX`] items.
    #[error("invalid request: {n_items} items in one request, at most {CART_ITEMS_MAX}")]
    TooManyItems { n_items: usize },
    /// An item of 0 or more than [`ITEM_QUANTITY_MAX`] units.
    #[error(
        "invalid request: quantity {quantity} of product {product_id} (1 to {ITEM_QUANTITY_MAX})"
    )]
    ItemQuantity {
        product_id: ProductId,
        quantity: u32,
    },
    /// An update delivery naming no seller or more than [`DELIVERY_SELLERS_MAX`].
    #[error(
        "invalid request: an update delivery names 1 to {DELIVERY_SELLERS_MAX} sellers, not \
         {n_sellers}"
    )]
    DeliverySellers { n_sellers: usize },
    /// An update delivery naming a seller twice.
    #[error("invalid request: seller {seller_id} named twice")]
    SellerNamedTwice { seller_id: SellerId },
    /// A settlement of units that were never reserved (a bug, not a business outcome).
    #[error(
        "broken state: settling {quantity} units of product {product_id} of seller {seller_id} \
         that were not reserved"
    )]
    SettledUnreserved {
        seller_id: SellerId,
        product_id: ProductId,
        quantity: i64,
    },
    /// A new product version for a product without a stock item.
    #[error("broken state: product {product_id} of seller {seller_id} has no stock item")]
    StockItemMissing {
        seller_id: SellerId,
        product_id: ProductId,
    },
    /// A checkout creating an order that exists already.
    #[error("broken state: order {order:?} exists already")]
    OrderExists { order: OrderKey },
    /// A delivery for an order the order service does not have.
    #[error("broken state: delivery for unknown order {order:?}")]
    DeliveryOfUnknownOrder { order: OrderKey },
    /// A delivery of a package that is not shipped (missing, or delivered already).
    #[error("broken state: package {package_id} of order {order:?} is not out for delivery")]
    PackageNotShipped { order: OrderKey, package_id: u16 },
    /// A delivery of a package whose order has no shipment.
    #[error("broken state: order {order:?} has no shipment")]
    ShipmentMissing { order: OrderKey },
    /// A delivery of an entry the seller service does not hold open.
    #[error("broken state: seller {seller_id} has no open entry for order {order:?}")]
    OpenEntryMissing {
        seller_id: SellerId,
        order: OrderKey,
    },
}

impl txn::BusinessError for MarketError {
    fn kind(&self) -> &'static str {
        match self {
            MarketError::StockShortage { .. } => kinds::STOCK_SHORTAGE,
            MarketError::VersionMismatch { .. } => kinds::VERSION_MISMATCH,
            MarketError::EmptyCart { .. } => kinds::EMPTY_CART,
            MarketError::UnknownProduct { .. } | MarketError::NoStockItem { .. } => {
                kinds::UNKNOWN_PRODUCT
            }
            MarketError::UnknownCustomer { .. } => kinds::UNKNOWN_CUSTOMER,
            MarketError::PriceChange { .. }
            | MarketError::TooManyItems { .. }
            | MarketError::ItemQuantity { .. }
            | MarketError::DeliverySellers { .. }
            | MarketError::SellerNamedTwice { .. } => kinds::INVALID_REQUEST,
            MarketError::SettledUnreserved { .. }
            | MarketError::StockItemMissing { .. }
            | MarketError::OrderExists { .. }
            | MarketError::DeliveryOfUnknownOrder { .. }
            | MarketError::PackageNotShipped { .. }
            | MarketError::ShipmentMissing { .. }
            | MarketError::OpenEntryMissing { .. } => kinds::BROKEN_STATE,
        }
    }
}

/// The stable `AbortReason::User` kind of each business abort ([`MarketError`]'s
/// `BusinessError::kind`): reports group aborts by it, and the PostgreSQL baseline reports the
/// same kinds.
pub mod kinds {
    pub const STOCK_SHORTAGE: &str = "stock_shortage";
    pub const VERSION_MISMATCH: &str = "version_mismatch";
    pub const EMPTY_CART: &str = "empty_cart";
    pub const UNKNOWN_PRODUCT: &str = "unknown_product";
    pub const UNKNOWN_CUSTOMER: &str = "unknown_customer";
    pub const INVALID_REQUEST: &str = "invalid_request";
    pub const BROKEN_STATE: &str = "broken_state";
}
