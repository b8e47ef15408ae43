//! #[derive(Event)] without a #[key] field, with two, with a key attribute given arguments, and
//! on a unit struct.

use txn::Event;

#[derive(Event)]
pub struct NoKey {
    account: u64,
    amount: i64,
}

#[derive(Event)]
pub struct TwoKeys {
    #[key]
    from: u64,
    #[key]
    to: u64,
}

#[derive(Event)]
pub struct KeyWithArguments {
    #[key(hash)]
    account: u64,
}

#[derive(Event)]
pub struct Audit;

fn main() {}
