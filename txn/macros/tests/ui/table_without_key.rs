//! A row struct without a #[key] field: the error names the struct and says how to fix it.

use serde::{Deserialize, Serialize};
use txn_macros::Table;

#[derive(Clone, Debug, Serialize, Deserialize, Table)]
struct Customer {
    id: u64,
    name: String,
}

fn main() {}
