//! The `VirtualActor` trait: what a service implements to live in the runtime.

use std::future::Future;

use crate::error::ActorError;
use crate::id::ActorId;

/// The behaviour of one service's partitions.
///
/// One value of the implementing type serves every partition of the service, so it is immutable
/// (`&self`) and shared; per-partition data lives in `State`, which the runtime builds with
/// `activate` and hands back with `passivate`. Callbacks of one partition never overlap: the
/// runtime awaits each before starting the next. Callbacks of different partitions run
/// concurrently. See `docs/runtime-semantics.md` for the full contract.
pub trait VirtualActor: Send + Sync + 'static {
    /// What the service's mailboxes carry.
    type Msg: Send + 'static;
    /// One partition's in-memory state.
    type State: Send + 'static;

    /// Load state on (re)activation, e.g. from the store or a persistence callback.
    ///
    /// Runs before the first message after activation, after a passivation, and after a handler
    /// panic (restart). An error (or panic) leaves the actor without state: the message that
    /// triggered activation is not handled and the next message tries again.
    fn activate(&self, id: ActorId)
    -> impl Future<Output = Result<Self::State, ActorError>> + Send;

    /// Handle one message.
    ///
    /// A panic here is caught: the caller of a `call` gets `ActorError::Panicked`, the state is
    /// dropped (it may be half-updated) and `activate` runs again before the next message.
    fn handle(
        &self,
        id: ActorId,
        state: &mut Self::State,
        msg: Self::Msg,
    ) -> impl Future<Output = ()> + Send;

    /// Handle one delivered batch (from `ServiceHandle::send_batch`); the default calls `handle`
    /// for each message in order. A panic abandons the rest of the batch.
    fn handle_batch(
        &self,
        id: ActorId,
        state: &mut Self::State,
        msgs: Vec<Self::Msg>,
    ) -> impl Future<Output = ()> + Send {
        async move {
            for msg in msgs {
                self.handle(id, state, msg).await;
            }
        }
    }

    /// Hand the state over before passivation or shutdown (the persistence callback). The
    /// default drops it, which suits state that is already durable elsewhere.
    ///
    /// No message for this partition is handled until this returns, and the next activation of
    /// the partition starts only after it returns.
    fn passivate(
        &self,
        id: ActorId,
        state: Self::State,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = (id, state);
        async { Ok(()) }
    }
}
