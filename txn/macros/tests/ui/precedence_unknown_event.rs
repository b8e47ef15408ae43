//! A precedence rule naming a type no service handles.

mod common;

use common::shop::{Reserve, Shop, Stock};
use serde::{Deserialize, Serialize};
use txn::AppBuilder;

/// Declared, but no handler takes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NoSuchEvent;

fn main() {
    let mut b = AppBuilder::<Shop>::new();
    let stock = b.add_service::<Stock>("stock", 2);
    stock.precedence::<Reserve, NoSuchEvent>(&mut b);
}
