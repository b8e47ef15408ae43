//! Virtual actors on ractor: identity, activation, passivation, placement, supervision and
//! batched delivery, for vmsdb's transaction layer.
//!
//! **Architecture invariant:** this crate knows nothing about transactions.
//!
//! A service is a [`VirtualActor`] registered with an [`ActorSystem`]; it gets `n_partitions`
//! virtual actors, identified by [`ActorId`] `(service, partition)`. Callers address a partition
//! (or an entity key, via the stable [`partition_of`]) through a [`ServiceHandle`] and never spawn
//! or look up actors: the first message activates a partition, an idle partition is passivated
//! (its state handed to `VirtualActor::passivate`) and a later message activates it again.
//! Mailboxes are bounded, a panicking handler restarts only its own partition from its persisted
//! state, and the [`Directory`] places partitions on nodes by rendezvous hashing.
//!
//! The guarantees a handler can rely on — and the ones it cannot — are written down in
//! `docs/runtime-semantics.md`.
//!
//! ```
//! use actor_runtime::{ActorError, ActorId, ActorSystem, ServiceConfig, SystemConfig, VirtualActor};
//! use tokio::sync::oneshot;
//!
//! struct Counter;
//! enum CounterMsg {
//!     Add(u64),
//!     Get(oneshot::Sender<u64>),
//! }
//!
//! impl VirtualActor for Counter {
//!     type Msg = CounterMsg;
//!     type State = u64;
//!     async fn activate(&self, _id: ActorId) -> Result<u64, ActorError> {
//!         Ok(0)
//!     }
//!     async fn handle(&self, _id: ActorId, total: &mut u64, msg: CounterMsg) {
//!         match msg {
//!             CounterMsg::Add(n) => *total += n,
//!             CounterMsg::Get(reply) => drop(reply.send(*total)),
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ActorError> {
//! let system = ActorSystem::new(SystemConfig::embedded());
//! let counters = system.register("counter", ServiceConfig::default(), Counter)?;
//! counters.send_to_key("alice", CounterMsg::Add(5)).await?;
//! let partition = counters.partition_of_key("alice");
//! assert_eq!(counters.call(partition, CounterMsg::Get).await?, 5);
//! system.shutdown().await;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "cluster")]
pub mod cluster;
mod directory;
mod error;
mod id;
pub mod limits;
mod partition;
mod service;
mod system;
mod virtual_actor;

pub use directory::Directory;
pub use error::ActorError;
pub use id::{
    ActorId, NodeId, ServiceId, StableHasher, partition_of, partition_of_hash, stable_hash,
};
pub use service::{ServiceConfig, ServiceHandle};
pub use system::{ActorSystem, SystemConfig};
pub use virtual_actor::VirtualActor;
