//! A handler emitting one service's event to another service: `Reserve` is an event of
//! `Stock`, not of `Orders`.

use serde::{Deserialize, Serialize};
use txn::{HandlerResult, Svc, TxnCtx, app, handler, service};

#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
pub struct Reserve {
    #[key]
    product: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
pub struct AddLine {
    #[key]
    order: u64,
    product: u64,
}

#[app(services(Stock, Orders))]
struct Shop;

struct Stock {
    orders: Svc<Orders>,
}

#[service(key = u64)]
impl Stock {
    #[handler]
    fn reserve(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &Reserve) -> HandlerResult {
        ctx.emit(self.orders, Reserve { product: ev.product });
        ctx.broadcast(self.orders, ev.clone());
        Ok(())
    }
}

struct Orders;

#[service(key = u64)]
impl Orders {
    #[handler]
    fn add_line(&self, _ctx: &mut TxnCtx<'_, Shop>, ev: &AddLine) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

fn main() {}
