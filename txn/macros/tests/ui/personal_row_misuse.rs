//! Personal fields without a subject, and a category attribute without its name.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, txn::Table)]
struct NoSubject {
    #[key]
    id: u64,
    #[pii]
    name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, txn::Table)]
#[table(subject = key)]
struct BadCategory {
    #[key]
    id: u64,
    #[category]
    card: String,
    #[pii(strict)]
    name: String,
}

fn main() {}
