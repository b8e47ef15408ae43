//! A precedence rule of `Stock` naming an event of `Orders`.

mod common;

use common::shop::{AddLine, Reserve, Shop, Stock};
use txn::AppBuilder;

fn main() {
    let mut b = AppBuilder::<Shop>::new();
    let stock = b.add_service::<Stock>("stock", 2);
    stock.precedence::<AddLine, Reserve>(&mut b);
}
