//! The runtime's error type; every variant names the actor or service it is about.

use crate::id::ActorId;

/// Errors returned by the actor runtime (and by `VirtualActor` callbacks).
///
/// Actors are named by [`ActorId`] (`s<service>/<partition>`); use
/// `ActorSystem::actor_label` to print the service name instead.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActorError {
    /// `try_send` found the actor's mailbox full; `send` would have waited instead.
    #[error("mailbox of actor {actor} is full ({capacity} messages)")]
    MailboxFull { actor: ActorId, capacity: usize },

    /// The handler panicked while handling this message. The actor has been restarted from its
    /// last persisted state (its `activate` ran again); later messages are still delivered.
    #[error("actor {actor} panicked while handling a message: {message}")]
    Panicked { actor: ActorId, message: String },

    /// The partition index is outside the service's `0..n_partitions`.
    #[error("service `{service}` has no partition {partition} (it has {n_partitions})")]
    UnknownPartition {
        service: String,
        partition: u32,
        n_partitions: u32,
    },

    /// A service with this name is already registered in this actor system.
    #[error("a service named `{service}` is already registered")]
    DuplicateService { service: String },

    /// The service's configuration or name is not acceptable.
    #[error("invalid configuration for service `{service}`: {reason}")]
    InvalidConfig { service: String, reason: String },

    /// `activate` failed (returned an error or panicked); the message was not handled. The next
    /// message to the actor tries to activate it again.
    #[error("activation of actor {actor} failed: {reason}")]
    ActivationFailed { actor: ActorId, reason: String },

    /// `passivate` failed; state not persisted by the callback is lost.
    #[error("passivation of actor {actor} failed: {reason}")]
    PassivationFailed { actor: ActorId, reason: String },

    /// The actor system has been shut down; the service accepts no more messages.
    #[error("service `{service}` is stopped (its actor system was shut down)")]
    Stopped { service: String },

    /// A `call`'s handler dropped the reply sender without answering, or the actor stopped
    /// before it could handle the request.
    #[error("actor {actor} dropped the reply to a call without answering")]
    NoReply { actor: ActorId },

    /// An actor had to be started outside any Tokio runtime and the system captured none.
    #[error("cannot start actor {actor}: no Tokio runtime is running")]
    NoRuntime { actor: ActorId },

    /// ractor refused to create the actor.
    #[error("cannot start actor {actor}: {reason}")]
    SpawnFailed { actor: ActorId, reason: String },
}

impl ActorError {
    /// Convenience for `VirtualActor::activate` implementations that fail to load state.
    pub fn activation_failed(actor: ActorId, reason: impl std::fmt::Display) -> Self {
        Self::ActivationFailed {
            actor,
            reason: reason.to_string(),
        }
    }

    /// Convenience for `VirtualActor::passivate` implementations that fail to persist state.
    pub fn passivation_failed(actor: ActorId, reason: impl std::fmt::Display) -> Self {
        Self::PassivationFailed {
            actor,
            reason: reason.to_string(),
        }
    }
}
