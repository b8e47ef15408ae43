//! An event whose #[key] is a `String` sent to a service whose key is `u64`: the event
//! handler exists, but the key cannot route it.

use serde::{Deserialize, Serialize};
use txn::{AppBuilder, Client, HandlerResult, Svc, TxnCtx, app, handler, service};

#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
pub struct Register {
    #[key]
    email: String,
}

#[app(services(Customers))]
struct Shop;

struct Customers {
    me: Svc<Customers>,
}

#[service(key = u64)]
impl Customers {
    #[handler]
    fn sign_up(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &Register) -> HandlerResult {
        ctx.emit(self.me, ev.clone());
        Ok(())
    }
}

async fn submit(client: &Client<Shop>) {
    let mut b = AppBuilder::<Shop>::new();
    let customers = b.add_service::<Customers>("customers", 2);
    let email = "a@example.com".to_string();
    let _ = client.submit(customers, Register { email }).await;
}

fn main() {
    let _ = submit;
}
