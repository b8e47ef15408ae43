//! The product service: the sellers' catalogues. It loads a seller's products, changes prices
//! and makes new versions, and hands every change on to stock and to each cart partition's
//! product replicas in the same transaction.

use super::model::*;
use super::seller::seller_view_creations;
use super::{
    AdoptVersion, Carts, CreateSellerViews, LoadSellerRow, LoadStock, MarketApp, MarketError,
    ReplicatePrice, ReplicateProducts, Sellers, Services, Stock, emit_grouped,
};
use serde::{Deserialize, Serialize};
use txn::{Abort, AppBuilder, HandlerResult, Svc, Table, TxnCtx, handler, service};

/// Load, to `product[seller]`: create the seller with its products, their stock and every cart
/// partition's replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct LoadSeller {
    #[key]
    pub seller_id: SellerId,
    pub products: Vec<NewProduct>,
    pub initial_stock: i64,
}

/// Inbound, to `product[seller]`: change a price by `pct` percent (±1 to ±10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct PriceUpdate {
    #[key]
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub pct: i8,
}

/// Inbound, to `product[seller]`: replace a product by a new version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct UpdateProduct {
    #[key]
    pub seller_id: SellerId,
    pub product_id: ProductId,
}

/// Inbound, to `product[seller]`: create or overwrite one product as the benchmark's driver
/// ingests it, row by row (its stock comes separately, as [`IngestStock`](super::IngestStock)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct IngestProduct {
    #[key]
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub product: Product,
}

/// Inbound, to `product[seller]`: set a product's price to `price`, only if the product is at
/// `version` (the benchmark driver's price update: an absolute price guarded by the version
/// the driver last saw; on another version the price is left as it is and the update commits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct SetPrice {
    #[key]
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub price: Money,
    pub version: Version,
}

/// Inbound, to `product[seller]`: replace a product by the given row, whose version is new
/// (the benchmark driver's product update); stock and the carts' replicas follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, txn::Event)]
pub struct ReplaceProduct {
    #[key]
    pub seller_id: SellerId,
    pub product_id: ProductId,
    pub product: Product,
}

/// The rows of one table of a `product` partition, by key (see [`WipeProducts`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProductRows {
    Products(Vec<ProductKey>),
    UpdateSeqs(Vec<SellerId>),
}

/// Reset, to one `product` partition: delete these rows of it (the benchmark driver's
/// `PATCH /product/reset`, see [`Marketplace::reset_requests`](super::Marketplace::reset_requests)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipeProducts {
    pub rows: ProductRows,
}

/// The product service: its tables, and the services its changes go to.
pub struct Products {
    pub(super) products: Table<ProductKey, Product>,
    /// seller → sequence number of the seller's last product update (price or version).
    pub(super) seller_update_seq: Table<SellerId, u64>,
    stock: Svc<Stock>,
    sellers: Svc<Sellers>,
    carts: Svc<Carts>,
}

impl Products {
    /// Declares the service's tables; a seller's products share its partition.
    pub(super) fn declare(b: &mut AppBuilder<MarketApp>, s: &Services) -> Self {
        Products {
            products: Product::table(b, *s.product),
            // A plain counter per seller: no row type to derive a table from.
            seller_update_seq: b.table(*s.product, "seller_update_seq"),
            stock: s.stock,
            sellers: s.seller,
            carts: s.cart,
        }
    }
}

#[service(key = SellerId)]
impl Products {
    #[handler]
    fn wipe_products(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &WipeProducts) -> HandlerResult {
        match &ev.rows {
            ProductRows::Products(keys) => {
                for key in keys {
                    ctx.delete(self.products, key)?;
                }
            }
            ProductRows::UpdateSeqs(keys) => {
                for key in keys {
                    ctx.delete(self.seller_update_seq, key)?;
                }
            }
        }
        Ok(())
    }
    #[handler]
    fn load_seller(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &LoadSeller) -> HandlerResult {
        let s = ev.seller_id;
        let mut replicas = Vec::with_capacity(ev.products.len());
        let mut stock = Vec::with_capacity(ev.products.len());
        for np in &ev.products {
            let key = ProductKey {
                seller_id: s,
                product_id: np.product_id,
            };
            ctx.put(self.products, key, np.product.clone())?;
            replicas.push((np.product_id, replica_of(&np.product)));
            stock.push((np.product_id, np.product.version));
        }
        ctx.put(self.seller_update_seq, s, 0)?;
        ctx.emit(
            self.stock,
            LoadStock {
                seller_id: s,
                products: stock,
                initial_stock: ev.initial_stock,
            },
        );
        ctx.emit(self.sellers, LoadSellerRow { seller_id: s });
        self.create_seller_views(ctx, s);
        ctx.broadcast(
            self.carts,
            ReplicateProducts {
                seller_id: s,
                replicas,
            },
        );
        ctx.set_output(MarketOutput::Done);
        Ok(())
    }

    #[handler]
    fn price_update(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &PriceUpdate) -> HandlerResult {
        let pct = ev.pct;
        if pct == 0 || pct.unsigned_abs() > 10 {
            return Err(MarketError::PriceChange { pct }.into());
        }
        let key = ProductKey {
            seller_id: ev.seller_id,
            product_id: ev.product_id,
        };
        let mut product = self.product(ctx, key)?;
        let delta = product.price * i64::from(pct) / 100;
        // Cheap products still change by at least a cent, and no price drops below one.
        let delta = if delta == 0 {
            i64::from(pct.signum())
        } else {
            delta
        };
        product.price = (product.price + delta).max(1);
        self.publish_price(ctx, key, product)
    }

    #[handler]
    fn update_product(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &UpdateProduct) -> HandlerResult {
        let key = ProductKey {
            seller_id: ev.seller_id,
            product_id: ev.product_id,
        };
        let mut product = self.product(ctx, key)?;
        product.version += 1;
        product.description = format!("{} (version {})", product.name, product.version);
        self.publish_version(ctx, key, product)
    }

    #[handler]
    fn ingest_product(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &IngestProduct) -> HandlerResult {
        let key = ProductKey {
            seller_id: ev.seller_id,
            product_id: ev.product_id,
        };
        let product = ev.product.clone();
        let replica = replica_of(&product);
        ctx.put(self.products, key, product)?;
        ctx.broadcast(
            self.carts,
            ReplicateProducts {
                seller_id: ev.seller_id,
                replicas: vec![(ev.product_id, replica)],
            },
        );
        // The driver ingests products but no seller rows: the seller's first checkout
        // counts in dashboard shards that must exist by then.
        self.create_seller_views(ctx, ev.seller_id);
        ctx.set_output(MarketOutput::Done);
        Ok(())
    }

    /// Creates the dashboard shards of `seller_id` that do not exist yet, one step per seller
    /// partition.
    fn create_seller_views(&self, ctx: &mut TxnCtx<'_, MarketApp>, seller_id: SellerId) {
        let keys = seller_view_creations(seller_id);
        let sellers = self.sellers;
        emit_grouped(
            ctx,
            sellers,
            keys,
            |key| sellers.partition_of(key),
            |keys| CreateSellerViews { keys },
        );
    }

    #[handler]
    fn set_price(&self, ctx: &mut TxnCtx<'_, MarketApp>, ev: &SetPrice) -> HandlerResult {
        let key = ProductKey {
            seller_id: ev.seller_id,
            product_id: ev.product_id,
        };
        let mut product = self.product(ctx, key)?;
        if product.version != ev.version {
            // A price for a version that was replaced meanwhile no longer applies.
            ctx.set_output(MarketOutput::Priced {
                price: product.price,
                version: product.version,
            });
            return Ok(());
        }
        product.price = ev.price;
        self.publish_price(ctx, key, product)
    }

    #[handler]
    fn replace_product(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        ev: &ReplaceProduct,
    ) -> HandlerResult {
        let key = ProductKey {
            seller_id: ev.seller_id,
            product_id: ev.product_id,
        };
        let product = ev.product.clone();
        self.publish_version(ctx, key, product)
    }

    /// Writes `product`, whose price changed, at `key` (next in the seller's update sequence)
    /// and hands the price on to every cart partition's replica.
    fn publish_price(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        key: ProductKey,
        mut product: Product,
    ) -> HandlerResult {
        product.update_seq = self.next_update_seq(ctx, key.seller_id)?;
        let replica = replica_of(&product);
        ctx.set_output(MarketOutput::Priced {
            price: product.price,
            version: product.version,
        });
        ctx.put(self.products, key, product)?;
        ctx.broadcast(
            self.carts,
            ReplicatePrice {
                seller_id: key.seller_id,
                product_id: key.product_id,
                replica,
            },
        );
        Ok(())
    }

    /// Writes `product` as the new version at `key` (next in the seller's update sequence) and
    /// hands it on to stock and to every cart partition's replica.
    fn publish_version(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        key: ProductKey,
        mut product: Product,
    ) -> HandlerResult {
        product.update_seq = self.next_update_seq(ctx, key.seller_id)?;
        let replica = replica_of(&product);
        let version = product.version;
        ctx.put(self.products, key, product)?;
        ctx.emit(
            self.stock,
            AdoptVersion {
                seller_id: key.seller_id,
                product_id: key.product_id,
                version,
            },
        );
        ctx.broadcast(
            self.carts,
            ReplicateProducts {
                seller_id: key.seller_id,
                replicas: vec![(key.product_id, replica)],
            },
        );
        ctx.set_output(MarketOutput::NewVersion(version));
        Ok(())
    }

    /// The product at `key`, or an unknown-product abort.
    fn product(&self, ctx: &mut TxnCtx<'_, MarketApp>, key: ProductKey) -> Result<Product, Abort> {
        ctx.get(self.products, &key)?.ok_or_else(|| {
            MarketError::UnknownProduct {
                seller_id: key.seller_id,
                product_id: key.product_id,
            }
            .into()
        })
    }

    /// Takes the next number of the seller's update sequence (which orders the seller's
    /// product updates for the causal-replication check).
    fn next_update_seq(
        &self,
        ctx: &mut TxnCtx<'_, MarketApp>,
        seller_id: SellerId,
    ) -> Result<u64, Abort> {
        let seq = ctx.get(self.seller_update_seq, &seller_id)?.unwrap_or(0) + 1;
        ctx.put(self.seller_update_seq, seller_id, seq)?;
        Ok(seq)
    }
}

/// What a cart partition's replica keeps of a product.
fn replica_of(p: &Product) -> Replica {
    Replica {
        price: p.price,
        freight_value: p.freight_value,
        version: p.version,
        update_seq: p.update_seq,
    }
}
