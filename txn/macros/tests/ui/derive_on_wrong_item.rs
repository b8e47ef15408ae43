//! `Table` derived for an enum, `EventKind` for a struct.

use txn_macros::{EventKind, Table};

#[derive(Table)]
enum Account {
    Open { id: u64 },
    Closed { id: u64 },
}

#[derive(EventKind)]
struct Deposit {
    amount: i64,
}

fn main() {}
