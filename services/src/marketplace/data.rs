//! The marketplace's data and request generators: the initial data at the benchmark's scales,
//! and the random business operations a client performs (the transaction mix).
//!
//! Everything is a deterministic function of a seed, so a run repeats exactly.

use super::model::*;
use crate::zipf::{KeyDist, KeyDistError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The benchmark's data sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// 1,000 customers, 1,000 products, 100 sellers: for tests and quick runs.
    Small,
    /// 100,000 customers, 100,000 products, 10,000 sellers: the benchmark's default.
    Default,
}

impl Scale {
    /// `(customers, sellers)`; every seller has [`PRODUCTS_PER_SELLER`] products.
    pub fn sizes(self) -> (u32, u32) {
        match self {
            Scale::Small => (1_000, 100),
            Scale::Default => (100_000, 10_000),
        }
    }

    /// Lanes of each seller's delivery queue at this scale (see `OpenDeliveryKey`). Deliveries
    /// of one epoch that drew the same lane pop the same head and all but one lose; with about
    /// a thousand transactions an epoch, 60 % of them deliveries each naming 10 of the 25
    /// sellers of a partition, the small scale needs many lanes to keep that rare, the default
    /// scale's 10,000 sellers few.
    pub fn delivery_lanes(self) -> u16 {
        match self {
            Scale::Small => DELIVERY_LANES_SMALL,
            Scale::Default => DELIVERY_LANES_DEFAULT,
        }
    }
}

/// Delivery queue lanes per seller at the small scale.
pub const DELIVERY_LANES_SMALL: u16 = 1_024;
/// Delivery queue lanes per seller at the default scale.
pub const DELIVERY_LANES_DEFAULT: u16 = 16;
const _: () =
    assert!(DELIVERY_LANES_DEFAULT >= 1 && DELIVERY_LANES_SMALL >= DELIVERY_LANES_DEFAULT);

/// Products per seller, as in the benchmark.
pub const PRODUCTS_PER_SELLER: u32 = 10;
/// Units of stock every product starts with, as in the benchmark.
pub const INITIAL_STOCK: i64 = 10_000;
/// Customers per load request.
pub const LOAD_CUSTOMERS_PER_REQUEST: usize = 1_000;

/// The transaction mix, in percent (the five add up to 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    pub checkout: u8,
    pub dashboard: u8,
    pub price_update: u8,
    pub update_product: u8,
    pub update_delivery: u8,
}

impl Mix {
    /// The benchmark's default mix.
    pub const DEFAULT: Mix = Mix {
        checkout: 30,
        dashboard: 5,
        price_update: 3,
        update_product: 2,
        update_delivery: 60,
    };
    /// The checkout-heavy mix also used by the benchmark's authors.
    pub const CHECKOUT_HEAVY: Mix = Mix {
        checkout: 70,
        dashboard: 10,
        price_update: 10,
        update_product: 10,
        update_delivery: 0,
    };

    /// Checks that the shares add up to 100.
    pub fn validate(&self) -> Result<(), String> {
        let sum = u32::from(self.checkout)
            + u32::from(self.dashboard)
            + u32::from(self.price_update)
            + u32::from(self.update_product)
            + u32::from(self.update_delivery);
        if sum != 100 {
            return Err(format!("the mix adds up to {sum} %, not 100 %: {self:?}"));
        }
        Ok(())
    }
}

/// The product of rank `product_id`, generated from the seed: price 0.01–99.99, freight
/// 0.01–9.99, version 0.
pub fn generate_product(seed: u64, product_id: ProductId) -> Product {
    let mut rng = SmallRng::seed_from_u64(seed ^ u64::from(product_id).wrapping_mul(0x9e37_79b9));
    let category = rng.random_range(0..20u32);
    Product {
        name: format!("product-{product_id}"),
        sku: format!("sku-{product_id:08}"),
        category: format!("category-{category}"),
        description: format!("product-{product_id} (version 0)"),
        price: rng.random_range(1..=9_999),
        freight_value: rng.random_range(1..=999),
        status: ProductStatus::Approved,
        version: 0,
        update_seq: 0,
    }
}

/// One business operation of a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MarketOp {
    /// Fill the cart with these items and check out.
    Checkout {
        customer_id: CustomerId,
        items: Vec<CartAddItem>,
    },
    PriceUpdate {
        seller_id: SellerId,
        product_id: ProductId,
        pct: i8,
    },
    UpdateProduct {
        seller_id: SellerId,
        product_id: ProductId,
    },
    UpdateDelivery {
        sellers: Vec<SellerId>,
    },
    Dashboard {
        seller_id: SellerId,
    },
}

/// A client's operation generator: customers uniform, products and sellers uniform or Zipfian.
pub struct OpGen {
    rng: SmallRng,
    mix: Mix,
    customers: KeyDist,
    products: KeyDist,
    sellers: KeyDist,
    products_per_seller: u32,
    /// The shipment service, whose partitioning an update delivery's sellers follow.
    shipment: Option<txn::ServiceRef>,
    picks: Vec<u64>,
}

impl OpGen {
    /// A generator over `n_customers` customers and `n_sellers` sellers (each with
    /// `products_per_seller` products); `zipf_theta` skews product and seller picks.
    pub fn new(
        seed: u64,
        mix: Mix,
        n_customers: u32,
        n_sellers: u32,
        products_per_seller: u32,
        zipf_theta: f64,
    ) -> Result<Self, KeyDistError> {
        let n_products = u64::from(n_sellers) * u64::from(products_per_seller);
        Ok(OpGen {
            rng: SmallRng::seed_from_u64(seed),
            mix,
            customers: KeyDist::uniform(u64::from(n_customers))?,
            products: KeyDist::zipf(n_products, zipf_theta)?,
            sellers: KeyDist::zipf(u64::from(n_sellers), zipf_theta)?,
            products_per_seller,
            shipment: None,
            picks: Vec::with_capacity(10),
        })
    }

    /// Draws the sellers of each update delivery from one partition of `shipment` (the
    /// partition of the first seller drawn), so the delivery starts where all its sellers'
    /// queues are: one step instead of one per partition, and one wave less.
    pub fn with_local_deliveries(mut self, shipment: txn::ServiceRef) -> Self {
        self.shipment = Some(shipment);
        self
    }

    /// The next operation, drawn from the mix.
    pub fn next_op(&mut self) -> MarketOp {
        let roll = self.rng.random_range(0..100u8);
        let m = self.mix;
        let mut bound = m.checkout;
        if roll < bound {
            return self.checkout();
        }
        bound += m.dashboard;
        if roll < bound {
            return MarketOp::Dashboard {
                seller_id: self.sellers.sample(&mut self.rng) as SellerId,
            };
        }
        bound += m.price_update;
        if roll < bound {
            let (seller_id, product_id) = self.product();
            let pct = self.rng.random_range(1..=10i8);
            let pct = if self.rng.random_bool(0.5) { pct } else { -pct };
            return MarketOp::PriceUpdate {
                seller_id,
                product_id,
                pct,
            };
        }
        bound += m.update_product;
        if roll < bound {
            let (seller_id, product_id) = self.product();
            return MarketOp::UpdateProduct {
                seller_id,
                product_id,
            };
        }
        self.update_delivery()
    }

    /// A checkout: 1–10 distinct products, 1–10 units each, a voucher with probability 5 %.
    pub fn checkout(&mut self) -> MarketOp {
        let n = self
            .rng
            .random_range(1..=10u64)
            .min(self.products.n())
            .max(1) as usize;
        self.picks.resize(n, 0);
        self.products
            .sample_distinct(&mut self.rng, &mut self.picks);
        let items = self
            .picks
            .iter()
            .map(|p| CartAddItem {
                seller_id: (*p / u64::from(self.products_per_seller)) as SellerId,
                product_id: *p as ProductId,
                quantity: self.rng.random_range(1..=10),
                voucher: self.rng.random_bool(0.05),
            })
            .collect();
        MarketOp::Checkout {
            customer_id: self.customers.sample(&mut self.rng) as CustomerId,
            items,
        }
    }

    /// An update delivery over up to 10 distinct sellers (of one shipment partition, with
    /// [`OpGen::with_local_deliveries`]).
    pub fn update_delivery(&mut self) -> MarketOp {
        let n = self.sellers.n().min(10) as usize;
        let Some(shipment) = self.shipment else {
            self.picks.resize(n, 0);
            self.sellers.sample_distinct(&mut self.rng, &mut self.picks);
            return MarketOp::UpdateDelivery {
                sellers: self.picks.iter().map(|s| *s as SellerId).collect(),
            };
        };
        let first = self.sellers.sample(&mut self.rng) as SellerId;
        let partition = shipment.partition_of(&first);
        let mut sellers = Vec::with_capacity(n);
        sellers.push(first);
        // A partition may hold fewer than n sellers, or rarely drawn ones: bounded tries.
        for _ in 0..n * 64 {
            if sellers.len() == n {
                break;
            }
            let s = self.sellers.sample(&mut self.rng) as SellerId;
            if shipment.partition_of(&s) == partition && !sellers.contains(&s) {
                sellers.push(s);
            }
        }
        MarketOp::UpdateDelivery { sellers }
    }

    fn product(&mut self) -> (SellerId, ProductId) {
        let p = self.products.sample(&mut self.rng);
        (
            (p / u64::from(self.products_per_seller)) as SellerId,
            p as ProductId,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_products_respect_the_benchmark_ranges() {
        // Goal: prices are 0.01–99.99, freight 0.01–9.99, versions start at 0, and the same
        // seed gives the same product.
        for p in 0..2_000 {
            let product = generate_product(7, p);
            assert!((1..=9_999).contains(&product.price), "{product:?}");
            assert!((1..=999).contains(&product.freight_value), "{product:?}");
            assert_eq!(product.version, 0);
            assert_eq!(product, generate_product(7, p));
        }
    }

    #[test]
    fn the_mix_is_respected_and_checkouts_are_well_formed() {
        // Goal: over many draws each operation type appears in its share of the mix, and every
        // checkout has 1–10 distinct products of the right sellers with 1–10 units each.
        let mut g = OpGen::new(1, Mix::DEFAULT, 1_000, 100, PRODUCTS_PER_SELLER, 0.0).unwrap();
        let mut counts = [0u32; 5];
        let n = 100_000;
        for _ in 0..n {
            match g.next_op() {
                MarketOp::Checkout { customer_id, items } => {
                    counts[0] += 1;
                    assert!(customer_id < 1_000);
                    assert!((1..=10).contains(&items.len()));
                    for (i, it) in items.iter().enumerate() {
                        assert_eq!(it.seller_id, it.product_id / PRODUCTS_PER_SELLER);
                        assert!((1..=10).contains(&it.quantity));
                        assert!(!items[..i].iter().any(|o| o.product_id == it.product_id));
                    }
                }
                MarketOp::Dashboard { .. } => counts[1] += 1,
                MarketOp::PriceUpdate { pct, .. } => {
                    counts[2] += 1;
                    assert!(pct != 0 && pct.unsigned_abs() <= 10);
                }
                MarketOp::UpdateProduct { .. } => counts[3] += 1,
                MarketOp::UpdateDelivery { sellers } => {
                    counts[4] += 1;
                    assert_eq!(sellers.len(), 10);
                }
            }
        }
        let want = [30.0, 5.0, 3.0, 2.0, 60.0];
        for (c, w) in counts.iter().zip(want) {
            let pct = f64::from(*c) * 100.0 / f64::from(n);
            assert!((pct - w).abs() < 0.6, "{counts:?}");
        }
        assert!(Mix::DEFAULT.validate().is_ok());
        assert!(Mix::CHECKOUT_HEAVY.validate().is_ok());
        assert!(
            Mix {
                checkout: 50,
                ..Mix::DEFAULT
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn local_deliveries_name_ten_sellers_of_one_shipment_partition() {
        // Goal: with local deliveries every update delivery names 10 distinct sellers whose
        // delivery queues share one shipment partition, and every partition gets deliveries.
        let m = super::super::Marketplace::new(super::super::MarketConfig::default()).unwrap();
        let shipment = m.services.shipment;
        let mut g = m.op_gen(9, Mix::DEFAULT, 0.0).unwrap();
        let mut partitions = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let MarketOp::UpdateDelivery { sellers } = g.update_delivery() else {
                unreachable!()
            };
            assert_eq!(sellers.len(), 10);
            let p = shipment.partition_of(&sellers[0]);
            partitions.insert(p);
            for (i, s) in sellers.iter().enumerate() {
                assert_eq!(shipment.partition_of(s), p);
                assert!(!sellers[..i].contains(s));
            }
        }
        assert_eq!(partitions.len() as u32, shipment.n_partitions());
    }
}
