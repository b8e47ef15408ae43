//! A client submitting service A's event to service B, and running it on the serial
//! executor: `Reserve` is an event of `Stock`, not of `Orders`.

mod common;

use common::shop::{Orders, Reserve, Shop};
use txn::{AppBuilder, Client, SerialExecutor};

async fn submit(client: &Client<Shop>, exec: &mut SerialExecutor<Shop>) {
    let mut b = AppBuilder::<Shop>::new();
    let orders = b.add_service::<Orders>("orders", 2);
    let _ = client.submit(orders, Reserve { product: 1 }).await;
    let _ = exec.run(orders, Reserve { product: 1 }, 0);
}

fn main() {
    let _ = submit;
}
