use serde::{Deserialize, Serialize};
use txn_macros::Table;

#[derive(Clone, Debug, Serialize, Deserialize, Table)]
struct Customer {
    id: u64,
    name: String,
}

fn main() {}
