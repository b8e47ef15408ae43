//! Misused table attributes: an unknown argument, placement by a non-key field, a key
//! attribute with arguments, a field check that is not a range, a unique key, an ordered
//! replicated table.

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

#[derive(Clone, Debug, Serialize, Deserialize, Table)]
struct UniqueKey {
    #[key]
    #[unique]
    id: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Table)]
#[table(replicated, ordered)]
struct OrderedReplica {
    #[key]
    id: u64,
}

fn main() {}
