//! Identifiers of the transaction layer: epochs, transaction ids and global partition indexes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::hash::Hash;

/// The position of a transaction within its epoch's sequenced batch.
pub type Seq = u32;

/// A transaction id: the epoch it was sequenced in and its position in that epoch's batch.
///
/// TIDs are totally ordered; a lower TID has priority in conflict resolution. A transaction
/// that is retried after a conflict gets a new TID at the front of the next epoch, so it keeps
/// its priority over every newer request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tid(pub u64);

impl Tid {
    /// The TID of position `seq` in `epoch`.
    pub fn new(epoch: u64, seq: Seq) -> Self {
        debug_assert!(epoch < (1 << 32));
        Tid((epoch << 32) | u64::from(seq))
    }

    /// The epoch the transaction was sequenced in.
    pub fn epoch(self) -> u64 {
        self.0 >> 32
    }

    /// The position within the epoch.
    pub fn seq(self) -> Seq {
        (self.0 & 0xffff_ffff) as Seq
    }
}

impl fmt::Debug for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T{}.{}", self.epoch(), self.seq())
    }
}

impl fmt::Display for Tid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Index of a partition across all services of an application: partitions of service 0
/// first, then service 1, and so on. Used to address partitions in per-epoch batches.
pub type GlobalPartition = u32;

/// A client-chosen id that makes a request idempotent: a resubmission with the same id gets the
/// original outcome and is never executed twice (within the dedup window, across restarts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    /// Identifies the client (or client incarnation).
    pub client: u64,
    /// The client's own sequence number for the request.
    pub seq: u64,
}

impl RequestId {
    /// The top bit of `client` marks ids that a [`crate::Client`] generated for a request
    /// submitted without one. Such ids are remembered for a bounded number of epochs (see
    /// `RuntimeConfig::generated_id_window_epochs`); choose `client` values below this bit for
    /// ids of your own.
    pub const GENERATED_CLIENT_BIT: u64 = 1 << 63;

    /// Whether a client generated this id (its `client` has [`Self::GENERATED_CLIENT_BIT`]).
    pub fn is_generated(&self) -> bool {
        self.client & Self::GENERATED_CLIENT_BIT != 0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}/{}", self.client, self.seq)
    }
}

/// Hands out request ids for submissions that came without one: a random client number (with
/// [`RequestId::GENERATED_CLIENT_BIT`] set) drawn once per runtime, and a counter, so ids never
/// repeat within a runtime and collide across restarts only with negligible probability.
pub(crate) struct IdGenerator {
    client: u64,
    next_seq: std::sync::atomic::AtomicU64,
}

impl IdGenerator {
    pub(crate) fn new() -> Self {
        IdGenerator {
            client: rand::random::<u64>() | RequestId::GENERATED_CLIENT_BIT,
            next_seq: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A fresh id.
    pub(crate) fn next(&self) -> RequestId {
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RequestId {
            client: self.client,
            seq,
        }
    }
}

/// A registered service: copyable handle used to route events and requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub(crate) idx: u32,
    pub(crate) n_partitions: u32,
    pub(crate) first_gp: GlobalPartition,
}

impl ServiceRef {
    /// Number of partitions of the service.
    pub fn n_partitions(self) -> u32 {
        self.n_partitions
    }

    /// The service's index in its application.
    pub fn index(self) -> u32 {
        self.idx
    }

    /// The partition that owns `key` (stable across processes and runs).
    pub fn partition_of<K: Hash + ?Sized>(self, key: &K) -> u32 {
        crate::route::partition_of(key, self.n_partitions)
    }

    pub(crate) fn gp(self, partition: u32) -> GlobalPartition {
        debug_assert!(partition < self.n_partitions);
        self.first_gp + partition
    }
}

/// Serde for a `ServiceRef` inside the wire form of a step (a foreign key's link): by value.
/// Not a derive, so the public type cannot be deserialized (forged) by users.
pub(crate) mod service_ref_by_value {
    use crate::ids::ServiceRef;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(service: &ServiceRef, to: S) -> Result<S::Ok, S::Error> {
        (service.idx, service.n_partitions, service.first_gp).serialize(to)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<ServiceRef, D::Error> {
        let (idx, n_partitions, first_gp) = <(u32, u32, u32)>::deserialize(from)?;
        Ok(ServiceRef {
            idx,
            n_partitions,
            first_gp,
        })
    }
}
