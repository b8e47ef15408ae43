//! The ractor actor behind one partition: lazy activation, supervision of its handler,
//! idle passivation and shutdown.
//!
//! Supervision happens inside the actor rather than through a ractor supervisor because ractor
//! stops a panicked actor and drops its mailbox, which would lose the messages queued behind the
//! failing one. Here the panic is caught around the handler's future, the (possibly half-updated)
//! state is dropped, `activate` reloads the last persisted state and the same mailbox carries on.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use ractor::{ActorProcessingErr, ActorRef};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::ActorError;
use crate::id::ActorId;
use crate::service::{ServiceShared, SlotState};
use crate::virtual_actor::VirtualActor;

/// What travels through a partition's ractor mailbox.
pub(crate) enum Envelope<M> {
    /// A caller's message. The permit is its place in the bounded mailbox and is given back when
    /// the envelope is dropped, i.e. after the handler returns (or if the mailbox is dropped).
    User {
        payload: Payload<M>,
        permit: OwnedSemaphorePermit,
    },
    /// Timer tick: passivate if nothing arrived for `idle_timeout`.
    IdleCheck,
    /// Sent by `ActorSystem::shutdown` behind every queued message: passivate and stop.
    Shutdown { done: oneshot::Sender<()> },
}

// ractor's `cluster` feature drops the blanket `Message` impl; see Cargo.toml.
#[cfg(feature = "cluster")]
impl<M: Send + 'static> ractor::Message for Envelope<M> {}

pub(crate) enum Payload<M> {
    One(M),
    Batch(Vec<M>),
    /// A `call`: `on_failure` carries `Panicked`/`ActivationFailed` back to the caller. It is
    /// dropped only after the handler finished, so a caller whose reply sender vanished can wait
    /// on it to learn why.
    Call {
        msg: M,
        on_failure: oneshot::Sender<ActorError>,
    },
}

pub(crate) struct PartitionActor<A: VirtualActor> {
    pub(crate) service: Arc<ServiceShared<A>>,
    pub(crate) id: ActorId,
}

pub(crate) struct PartitionState<S> {
    /// `None` until activated, after a failed activation, and after passivation.
    user: Option<S>,
    /// Set when this incarnation was started while the previous one was still passivating:
    /// activation waits for it so that it loads what the predecessor persisted.
    predecessor: Option<oneshot::Receiver<()>>,
    last_activity: Instant,
    idle_check_pending: bool,
    n_restarts: u64,
}

impl<A: VirtualActor> ractor::Actor for PartitionActor<A> {
    type Msg = Envelope<A::Msg>;
    type State = PartitionState<A::State>;
    type Arguments = Option<oneshot::Receiver<()>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        predecessor: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Activation is deferred to the first message so that its failure can be reported to
        // that message's caller instead of silently dropping the mailbox.
        Ok(PartitionState {
            user: None,
            predecessor,
            last_activity: Instant::now(),
            idle_check_pending: false,
            n_restarts: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        envelope: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match envelope {
            Envelope::User { payload, permit } => {
                self.handle_user(st, payload).await;
                // The mailbox place is freed only now, so the message being handled counts against capacity.
                drop(permit);
                st.last_activity = Instant::now();
                if let Some(idle_timeout) = self.service.config.idle_timeout
                    && !st.idle_check_pending
                {
                    self.schedule_idle_check(&myself, st, idle_timeout);
                }
            }
            Envelope::IdleCheck => {
                st.idle_check_pending = false;
                self.on_idle_check(&myself, st).await;
            }
            Envelope::Shutdown { done } => {
                if let Some(predecessor) = st.predecessor.take() {
                    let _ = predecessor.await;
                }
                self.passivate_state(st).await;
                myself.stop(Some("actor system shut down".to_owned()));
                let _ = done.send(());
            }
        }
        Ok(())
    }
}

impl<A: VirtualActor> PartitionActor<A> {
    async fn handle_user(&self, st: &mut PartitionState<A::State>, payload: Payload<A::Msg>) {
        if st.user.is_none()
            && let Err(error) = self.activate(st).await
        {
            self.reject(payload, error);
            return;
        }
        let Some(state) = st.user.as_mut() else {
            unreachable!("activate succeeded, so the state is loaded");
        };
        let behaviour = &self.service.behaviour;
        let id = self.id;
        let (outcome, on_failure) = match payload {
            Payload::One(msg) => (catch_unwind(behaviour.handle(id, state, msg)).await, None),
            Payload::Batch(msgs) => (
                catch_unwind(behaviour.handle_batch(id, state, msgs)).await,
                None,
            ),
            Payload::Call { msg, on_failure } => (
                catch_unwind(behaviour.handle(id, state, msg)).await,
                Some(on_failure),
            ),
        };
        if let Err(panic) = outcome {
            let message = panic_message(panic.as_ref());
            tracing::error!(
                actor = %id,
                service = %self.service.name,
                panic = %message,
                "handler panicked; restarting the actor from its last persisted state",
            );
            if let Some(on_failure) = on_failure {
                let _ = on_failure.send(ActorError::Panicked { actor: id, message });
            }
            self.restart(st).await;
        }
    }

    /// Drops the state the panic may have corrupted and loads the persisted one again.
    async fn restart(&self, st: &mut PartitionState<A::State>) {
        st.user = None;
        st.n_restarts += 1;
        let span = tracing::info_span!(
            "restart",
            actor = %self.id,
            service = %self.service.name,
            n_restarts = st.n_restarts,
        );
        // A failed re-activation is logged inside; the next message tries again.
        let _ = self.activate(st).instrument(span).await;
    }

    async fn activate(&self, st: &mut PartitionState<A::State>) -> Result<(), ActorError> {
        if let Some(predecessor) = st.predecessor.take() {
            // An error only means the predecessor died mid-passivation; its state is as
            // persisted as it will ever be, so go on.
            let _ = predecessor.await;
        }
        let span = tracing::info_span!("activate", actor = %self.id, service = %self.service.name);
        let outcome = catch_unwind(self.service.behaviour.activate(self.id))
            .instrument(span)
            .await;
        match outcome {
            Ok(Ok(state)) => {
                st.user = Some(state);
                tracing::debug!(actor = %self.id, service = %self.service.name, "activated");
                Ok(())
            }
            Ok(Err(error)) => {
                tracing::error!(actor = %self.id, service = %self.service.name, %error, "activation failed");
                Err(match error {
                    ActorError::ActivationFailed { .. } => error,
                    other => ActorError::activation_failed(self.id, other),
                })
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(actor = %self.id, service = %self.service.name, panic = %message, "activate panicked");
                Err(ActorError::activation_failed(
                    self.id,
                    format_args!("activate panicked: {message}"),
                ))
            }
        }
    }

    /// A message that could not be handled because activation failed: tell its caller.
    fn reject(&self, payload: Payload<A::Msg>, error: ActorError) {
        match payload {
            Payload::Call { on_failure, .. } => {
                let _ = on_failure.send(error);
            }
            Payload::One(_) | Payload::Batch(_) => {
                tracing::warn!(actor = %self.id, service = %self.service.name, "message dropped: actor could not be activated");
            }
        }
    }

    fn schedule_idle_check(
        &self,
        myself: &ActorRef<Envelope<A::Msg>>,
        st: &mut PartitionState<A::State>,
        after: std::time::Duration,
    ) {
        st.idle_check_pending = true;
        // One timer task per actor at a time, re-armed only when it fires, so the per-message
        // path never touches the timer.
        myself.send_after(after, || Envelope::IdleCheck);
    }

    async fn on_idle_check(
        &self,
        myself: &ActorRef<Envelope<A::Msg>>,
        st: &mut PartitionState<A::State>,
    ) {
        let Some(idle_timeout) = self.service.config.idle_timeout else {
            return;
        };
        let idle_for = st.last_activity.elapsed();
        if idle_for < idle_timeout {
            self.schedule_idle_check(myself, st, idle_timeout - idle_for);
            return;
        }
        self.try_passivate(myself, st, idle_timeout).await;
    }

    /// Passivates unless a message is queued or about to be.
    ///
    /// The check and the switch of the slot to `Passivating` happen under the slot's write lock,
    /// and senders enqueue while holding its read lock with their mailbox permit already taken.
    /// So when every permit is free under the write lock, nothing is queued here and nothing can
    /// be enqueued here later: every later sender sees `Passivating` and starts a successor, which
    /// waits for this passivation to finish before it activates.
    async fn try_passivate(
        &self,
        myself: &ActorRef<Envelope<A::Msg>>,
        st: &mut PartitionState<A::State>,
        idle_timeout: std::time::Duration,
    ) {
        let slot = self.service.slot(self.id.partition);
        let done = {
            let mut slot_state = slot.state.write();
            match &*slot_state {
                SlotState::Active(current) if current.get_id() == myself.get_id() => {}
                // Shutdown took the slot; its `Shutdown` envelope is on its way to us.
                _ => return,
            }
            if slot.permits.available_permits() < self.service.config.mailbox_capacity {
                drop(slot_state);
                // A sender is between taking its permit and enqueueing: not idle after all.
                st.last_activity = Instant::now();
                self.schedule_idle_check(myself, st, idle_timeout);
                return;
            }
            let (done, done_rx) = oneshot::channel();
            *slot_state = SlotState::Passivating(Some(done_rx));
            done
        };
        self.passivate_state(st).await;
        {
            let mut slot_state = slot.state.write();
            // A successor (or shutdown) may have replaced us already; leave its state alone.
            if matches!(*slot_state, SlotState::Passivating(_)) {
                *slot_state = SlotState::Inactive;
            }
            // Sent under the lock: the successor cannot activate (and so cannot passivate and
            // put its own `Passivating` into the slot) before we have looked at the slot.
            let _ = done.send(());
        }
        myself.stop(Some("passivated".to_owned()));
    }

    /// Hands the state to `passivate`, if the actor holds any.
    async fn passivate_state(&self, st: &mut PartitionState<A::State>) {
        let Some(state) = st.user.take() else {
            return;
        };
        let span = tracing::info_span!("passivate", actor = %self.id, service = %self.service.name);
        let outcome = catch_unwind(self.service.behaviour.passivate(self.id, state))
            .instrument(span)
            .await;
        match outcome {
            Ok(Ok(())) => {
                tracing::debug!(actor = %self.id, service = %self.service.name, "passivated");
            }
            Ok(Err(error)) => {
                tracing::error!(actor = %self.id, service = %self.service.name, %error, "passivation failed; unpersisted state is lost");
            }
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                tracing::error!(actor = %self.id, service = %self.service.name, panic = %message, "passivate panicked; unpersisted state is lost");
            }
        }
    }
}

/// Runs `future` to completion, turning a panic in any of its polls into `Err(payload)`.
///
/// The future is pinned on this task's stack, so catching costs no allocation. After a panic the
/// future is never polled again, only dropped.
async fn catch_unwind<F: Future>(future: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}
