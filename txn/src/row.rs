//! The bounds every table key and row value meets. A leaf module: the application's tables,
//! the table state and the indexes all name these bounds.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;

/// A primary key: hashable, ordered, serializable.
pub trait Key:
    Hash + Eq + Ord + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<T> Key for T where
    T: Hash + Eq + Ord + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// A row value: cloneable and serializable.
pub trait Row: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T> Row for T where T: Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static {}
