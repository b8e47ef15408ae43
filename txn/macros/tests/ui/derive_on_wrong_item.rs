//! `Table` derived for an enum, `EventKind` for a struct, `Event` for an enum.

use txn_macros::{Event, EventKind, Table};

#[derive(Table)]
enum Account {
    Open { id: u64 },
    Closed { id: u64 },
}

#[derive(EventKind)]
struct Deposit {
    amount: i64,
}

#[derive(Event)]
enum Transfer {
    Debit { from: u64 },
    Credit { to: u64 },
}

fn main() {}
