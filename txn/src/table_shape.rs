//! What the persisted layout of one table depends on (part of the store fingerprint). A leaf
//! module: the application declares table shapes, the fingerprint compares them.

use serde::{Deserialize, Serialize};

/// What the persisted layout depends on, for one table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableShape {
    /// The table's name within its service (hidden unique indexes are `table#unique:name`).
    pub name: String,
    /// `"hash"` or `"ordered"`.
    pub kind: String,
    /// Every partition keeps a full copy.
    pub replicated: bool,
    /// The Rust type the rows are placed by (`place_by`), `None` for the whole key.
    pub placed_by: Option<String>,
    /// The Rust type name of the key (`std::any::type_name`).
    pub key_type: String,
    /// The Rust type name of the row.
    pub row_type: String,
}

impl TableShape {
    pub(crate) fn new<K, V>(name: &str, ordered: bool) -> Self {
        TableShape {
            name: name.to_string(),
            kind: if ordered { "ordered" } else { "hash" }.to_string(),
            replicated: false,
            placed_by: None,
            key_type: std::any::type_name::<K>().to_string(),
            row_type: std::any::type_name::<V>().to_string(),
        }
    }
}
