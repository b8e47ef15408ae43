//! What several UI tests share: a deposit event and a two-service shop. Each test uses only
//! part of it.
#![allow(dead_code)]

pub mod shop;

use serde::{Deserialize, Serialize};

/// Credit `amount` to account `to`.
#[derive(Clone, Debug, Serialize, Deserialize, txn::Event)]
pub struct Deposit {
    #[key]
    pub to: u64,
    pub amount: i64,
}
