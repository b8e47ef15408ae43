//! A shop of two services, each taking one event: `Stock` takes `Reserve`, `Orders` takes
//! `AddLine`.

use serde::{Deserialize, Serialize};
use txn::{HandlerResult, TxnCtx, app, handler, service};

#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
pub struct Reserve {
    #[key]
    pub product: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
pub struct AddLine {
    #[key]
    pub order: u64,
}

#[app(services(Stock, Orders))]
pub struct Shop;

pub struct Stock;

#[service(key = u64)]
impl Stock {
    #[handler]
    fn reserve(&self, _ctx: &mut TxnCtx<'_, Shop>, ev: &Reserve) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}

pub struct Orders;

#[service(key = u64)]
impl Orders {
    #[handler]
    fn add_line(&self, _ctx: &mut TxnCtx<'_, Shop>, ev: &AddLine) -> HandlerResult {
        let _ = ev;
        Ok(())
    }
}
