use serde::{Deserialize, Serialize};
use txn_macros::Table;

#[derive(Clone, Debug, Serialize, Deserialize, Table)]
#[table(sorted)]
struct Unknown {
    #[key]
    id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Table)]
#[table(place_by = seller)]
struct NotAKeyField {
    #[key]
    product: u64,
    seller: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Table)]
struct KeyWithArguments {
    #[key(primary)]
    id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Table)]
struct FieldCheckNotARange {
    #[key]
    id: u64,
    #[check(qty >= 0)]
    qty: i64,
}

fn main() {}
