//! `#[internal]` given arguments on an `EventKind` variant.

use txn_macros::EventKind;

#[derive(EventKind)]
enum Ev {
    Transfer { from: u64, to: u64 },
    #[internal(emitted_by = "bank")]
    Credit { to: u64 },
}

fn main() {}
