//! Handlers reading personal data, in their own bodies, for purposes its category does not
//! allow: one declares a purpose the card category does not allow, one declares none.

use serde::{Deserialize, Serialize};
use txn::{HandlerResult, Table, TxnCtx, app, handler, service};

#[derive(Clone, Debug, Serialize, Deserialize, txn::Table)]
struct Customer {
    #[key]
    #[subject]
    id: u64,
    #[pii]
    name: String,
    #[category(card)]
    card: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
struct Greet {
    #[key]
    id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
struct Audit {
    #[key]
    id: u64,
}

#[app(services(Customers), allow(pii = ["support"], card = ["checkout"]))]
struct Shop;

struct Customers {
    customers: Table<u64, Customer>,
}

#[service(key = u64)]
impl Customers {
    #[handler(purpose = "support")]
    fn greet(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &Greet) -> HandlerResult {
        let _ = ctx.get(self.customers, &ev.id)?;
        Ok(())
    }

    #[handler]
    fn audit(&self, ctx: &mut TxnCtx<'_, Shop>, ev: &Audit) -> HandlerResult {
        let _ = ctx.get(self.customers, &ev.id)?;
        Ok(())
    }
}

fn main() {}
