//! One registered service: its per-partition slots (bounded mailbox + current incarnation) and the
//! `ServiceHandle` callers use to address its partitions.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use ractor::{ActorRef, ActorRuntime, MessagingErr};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};

use crate::error::ActorError;
use crate::id::{ActorId, NodeId, ServiceId, partition_of};
use crate::limits;
use crate::partition::{Envelope, PartitionActor, Payload};
use crate::system::SystemShared;
use crate::virtual_actor::VirtualActor;

/// Per-service settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// How many partitions (virtual actors) the service has; entity keys spread over them.
    pub n_partitions: u32,
    /// Messages one partition's mailbox holds, counting the one being handled.
    pub mailbox_capacity: usize,
    /// Passivate a partition after this long without messages; `None` keeps it active until
    /// shutdown.
    pub idle_timeout: Option<Duration>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            n_partitions: limits::N_PARTITIONS_DEFAULT,
            mailbox_capacity: limits::MAILBOX_CAPACITY_DEFAULT,
            idle_timeout: Some(Duration::from_millis(limits::IDLE_TIMEOUT_DEFAULT_MS)),
        }
    }
}

impl ServiceConfig {
    pub(crate) fn validate(&self, service: &str) -> Result<(), ActorError> {
        let invalid = |reason: String| ActorError::InvalidConfig {
            service: service.to_owned(),
            reason,
        };
        if service.is_empty() || service.len() > limits::SERVICE_NAME_LEN_MAX_BYTES {
            return Err(invalid(format!(
                "the name must be 1 to {} bytes long",
                limits::SERVICE_NAME_LEN_MAX_BYTES
            )));
        }
        if !(1..=limits::N_PARTITIONS_MAX).contains(&self.n_partitions) {
            return Err(invalid(format!(
                "n_partitions is {}, must be 1 to {}",
                self.n_partitions,
                limits::N_PARTITIONS_MAX
            )));
        }
        if !(1..=limits::MAILBOX_CAPACITY_MAX).contains(&self.mailbox_capacity) {
            return Err(invalid(format!(
                "mailbox_capacity is {}, must be 1 to {}",
                self.mailbox_capacity,
                limits::MAILBOX_CAPACITY_MAX
            )));
        }
        if let Some(idle_timeout) = self.idle_timeout
            && idle_timeout < Duration::from_millis(limits::IDLE_TIMEOUT_MIN_MS)
        {
            return Err(invalid(format!(
                "idle_timeout is {idle_timeout:?}, must be at least {} ms (or None)",
                limits::IDLE_TIMEOUT_MIN_MS
            )));
        }
        Ok(())
    }
}

/// Which incarnation of a partition's actor, if any, receives its messages.
pub(crate) enum SlotState<M: Send + 'static> {
    Inactive,
    Active(ActorRef<Envelope<M>>),
    /// The last incarnation is handing its state to `passivate`. The receiver fires when it is
    /// done; the successor started by the next message takes it and activates only after it.
    Passivating(Option<oneshot::Receiver<()>>),
    /// The actor system was shut down.
    Closed,
}

/// One partition's fixed place in the service: allocated at registration, never moved, indexed
/// by partition number, so addressing a partition is an array index, not a map lookup.
pub(crate) struct Slot<M: Send + 'static> {
    /// Senders hold the read lock only while enqueueing; it is written on activation,
    /// passivation and shutdown.
    pub(crate) state: RwLock<SlotState<M>>,
    /// The mailbox bound: one permit per message queued or being handled. It outlives
    /// incarnations, so the bound holds across passivation and restart.
    pub(crate) permits: Arc<Semaphore>,
}

pub(crate) struct ServiceShared<A: VirtualActor> {
    pub(crate) id: ServiceId,
    pub(crate) name: Box<str>,
    pub(crate) config: ServiceConfig,
    pub(crate) behaviour: A,
    pub(crate) slots: Box<[Slot<A::Msg>]>,
    pub(crate) system: Arc<SystemShared>,
}

impl<A: VirtualActor> ServiceShared<A> {
    pub(crate) fn new(
        id: ServiceId,
        name: &str,
        config: ServiceConfig,
        behaviour: A,
        system: Arc<SystemShared>,
    ) -> Self {
        let slots = (0..config.n_partitions)
            .map(|_| Slot {
                state: RwLock::new(SlotState::Inactive),
                permits: Arc::new(Semaphore::new(config.mailbox_capacity)),
            })
            .collect();
        Self {
            id,
            name: name.into(),
            config,
            behaviour,
            slots,
            system,
        }
    }

    pub(crate) fn slot(&self, partition: u32) -> &Slot<A::Msg> {
        &self.slots[partition as usize]
    }

    fn actor_id(&self, partition: u32) -> ActorId {
        ActorId::new(self.id, partition)
    }

    fn stopped(&self) -> ActorError {
        ActorError::Stopped {
            service: self.name.to_string(),
        }
    }

    fn checked_slot(&self, partition: u32) -> Result<&Slot<A::Msg>, ActorError> {
        self.slots
            .get(partition as usize)
            .ok_or_else(|| ActorError::UnknownPartition {
                service: self.name.to_string(),
                partition,
                n_partitions: self.config.n_partitions,
            })
    }

    /// Puts an envelope (whose permit is already taken) into the partition's current
    /// incarnation, starting one if there is none.
    fn deliver(
        self: &Arc<Self>,
        partition: u32,
        payload: Payload<A::Msg>,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), ActorError> {
        let slot = self.slot(partition);
        let mut envelope = Envelope::User { payload, permit };
        // Hot path: an active actor; the shared lock is per partition and only held to enqueue.
        {
            let slot_state = slot.state.read();
            if let SlotState::Active(actor) = &*slot_state {
                match actor.cast(envelope) {
                    Ok(()) => return Ok(()),
                    Err(MessagingErr::SendErr(returned)) => envelope = returned,
                    Err(other) => return Err(self.spawn_failed(partition, other)),
                }
            }
        }
        let mut slot_state = slot.state.write();
        let predecessor = match &mut *slot_state {
            SlotState::Active(actor) => match actor.cast(envelope) {
                Ok(()) => return Ok(()),
                Err(MessagingErr::SendErr(returned)) => {
                    // The incarnation died outside the handler (a bug in the runtime or a
                    // ractor-level kill); its queued messages are gone. Start a fresh one.
                    tracing::error!(
                        actor = %self.actor_id(partition),
                        service = %self.name,
                        "actor stopped unexpectedly; starting a new incarnation",
                    );
                    envelope = returned;
                    None
                }
                Err(other) => return Err(self.spawn_failed(partition, other)),
            },
            SlotState::Inactive => None,
            SlotState::Passivating(done) => done.take(),
            SlotState::Closed => return Err(self.stopped()),
        };
        let actor = self.spawn(partition, predecessor)?;
        let outcome = actor.cast(envelope);
        *slot_state = SlotState::Active(actor);
        outcome.map_err(|error| self.spawn_failed(partition, error))
    }

    fn spawn_failed<T>(&self, partition: u32, error: MessagingErr<T>) -> ActorError {
        ActorError::SpawnFailed {
            actor: self.actor_id(partition),
            reason: error.to_string(),
        }
    }

    /// Starts a new incarnation without waiting for it: messages queue while it starts, and
    /// this can run under the slot's lock.
    fn spawn(
        self: &Arc<Self>,
        partition: u32,
        predecessor: Option<oneshot::Receiver<()>>,
    ) -> Result<ActorRef<Envelope<A::Msg>>, ActorError> {
        let id = self.actor_id(partition);
        let _runtime_guard = match tokio::runtime::Handle::try_current() {
            Ok(_) => None,
            Err(_) => match &self.system.runtime {
                Some(handle) => Some(handle.enter()),
                None => return Err(ActorError::NoRuntime { actor: id }),
            },
        };
        let actor = PartitionActor {
            service: Arc::clone(self),
            id,
        };
        let (actor_ref, _join) =
            ActorRuntime::spawn_instant(None, actor, predecessor).map_err(|error| {
                ActorError::SpawnFailed {
                    actor: id,
                    reason: error.to_string(),
                }
            })?;
        tracing::trace!(actor = %id, service = %self.name, "incarnation started");
        Ok(actor_ref)
    }
}

/// Type-erased access the actor system needs to every service (names and shutdown).
pub(crate) trait ServiceControl: Send + Sync {
    fn name(&self) -> &str;
    /// Closes every slot and passivates every incarnation; resolves when all are done.
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<A: VirtualActor> ServiceControl for ServiceShared<A> {
    fn name(&self) -> &str {
        &self.name
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut waits = Vec::new();
        for slot in self.slots.iter() {
            let previous = std::mem::replace(&mut *slot.state.write(), SlotState::Closed);
            match previous {
                SlotState::Active(actor) => {
                    let (done, done_rx) = oneshot::channel();
                    // Queued behind every message already in the mailbox, so those are handled
                    // first. If the actor is already dead there is nothing to wait for.
                    if actor.cast(Envelope::Shutdown { done }).is_ok() {
                        waits.push(done_rx);
                    }
                }
                SlotState::Passivating(Some(done_rx)) => waits.push(done_rx),
                SlotState::Passivating(None) | SlotState::Inactive | SlotState::Closed => {}
            }
            // Wakes senders waiting for room with `Stopped`.
            slot.permits.close();
        }
        Box::pin(async move {
            for done_rx in waits {
                let _ = done_rx.await;
            }
        })
    }
}

/// The address of one service: send to its partitions or entity keys. Cheap to clone.
///
/// Callers never spawn or look up actors: the first message to a partition activates it, and a
/// message to a passivated partition activates it again.
pub struct ServiceHandle<A: VirtualActor> {
    shared: Arc<ServiceShared<A>>,
}

impl<A: VirtualActor> Clone for ServiceHandle<A> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<A: VirtualActor> std::fmt::Debug for ServiceHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .field("n_partitions", &self.shared.config.n_partitions)
            .finish()
    }
}

impl<A: VirtualActor> ServiceHandle<A> {
    pub(crate) fn new(shared: Arc<ServiceShared<A>>) -> Self {
        Self { shared }
    }

    pub fn id(&self) -> ServiceId {
        self.shared.id
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn n_partitions(&self) -> u32 {
        self.shared.config.n_partitions
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.shared.config
    }

    /// The identity of partition `partition` of this service (not checked against
    /// `n_partitions`).
    pub fn actor_id(&self, partition: u32) -> ActorId {
        self.shared.actor_id(partition)
    }

    /// The partition that owns `key` (see [`partition_of`]).
    pub fn partition_of_key<K: Hash + ?Sized>(&self, key: &K) -> u32 {
        partition_of(key, self.shared.config.n_partitions)
    }

    /// The node the placement directory assigns this partition to. In this crate every actor runs
    /// locally regardless; multi-node routing will use this.
    pub fn node_of(&self, partition: u32) -> NodeId {
        self.shared
            .system
            .directory
            .node_of(self.shared.actor_id(partition))
    }

    /// Enqueues `msg` for `partition`, activating it if needed; waits while the mailbox is full.
    ///
    /// Cancel-safe: if the returned future is dropped before it completes, the message was not
    /// enqueued.
    pub async fn send(&self, partition: u32, msg: A::Msg) -> Result<(), ActorError> {
        let permit = self.acquire(partition).await?;
        self.shared.deliver(partition, Payload::One(msg), permit)
    }

    /// Like [`send`](Self::send) but returns `ActorError::MailboxFull` instead of waiting.
    pub fn try_send(&self, partition: u32, msg: A::Msg) -> Result<(), ActorError> {
        let permit = self.try_acquire(partition)?;
        self.shared.deliver(partition, Payload::One(msg), permit)
    }

    /// Enqueues ONE mailbox message carrying all of `msgs`; the actor gets them in one
    /// `handle_batch` call. Takes one mailbox place, however long the batch.
    pub async fn send_batch(&self, partition: u32, msgs: Vec<A::Msg>) -> Result<(), ActorError> {
        let permit = self.acquire(partition).await?;
        self.shared.deliver(partition, Payload::Batch(msgs), permit)
    }

    /// Like [`send_batch`](Self::send_batch) but returns `ActorError::MailboxFull` instead of
    /// waiting.
    pub fn try_send_batch(&self, partition: u32, msgs: Vec<A::Msg>) -> Result<(), ActorError> {
        let permit = self.try_acquire(partition)?;
        self.shared.deliver(partition, Payload::Batch(msgs), permit)
    }

    /// Sends `msg` to the partition that owns `key`.
    pub async fn send_to_key<K: Hash + ?Sized>(
        &self,
        key: &K,
        msg: A::Msg,
    ) -> Result<(), ActorError> {
        self.send(self.partition_of_key(key), msg).await
    }

    /// Request/response: builds the message around a reply sender and waits for the answer.
    ///
    /// Returns `ActorError::Panicked` if the handler panicked on this message,
    /// `ActivationFailed` if the actor could not be activated to handle it, and `NoReply` if the
    /// handler dropped the sender without answering.
    pub async fn call<R: Send + 'static>(
        &self,
        partition: u32,
        make: impl FnOnce(oneshot::Sender<R>) -> A::Msg,
    ) -> Result<R, ActorError> {
        let permit = self.acquire(partition).await?;
        let (reply, reply_rx) = oneshot::channel();
        let (on_failure, failure_rx) = oneshot::channel();
        let payload = Payload::Call {
            msg: make(reply),
            on_failure,
        };
        self.shared.deliver(partition, payload, permit)?;
        match reply_rx.await {
            Ok(answer) => Ok(answer),
            // The runtime keeps `on_failure` until the handler is done, so this wait is short.
            Err(_) => Err(failure_rx.await.unwrap_or(ActorError::NoReply {
                actor: self.shared.actor_id(partition),
            })),
        }
    }

    /// Whether `partition` currently has an incarnation (activating, active or still
    /// passivating).
    pub fn is_active(&self, partition: u32) -> bool {
        self.shared
            .slots
            .get(partition as usize)
            .is_some_and(|slot| {
                matches!(
                    *slot.state.read(),
                    SlotState::Active(_) | SlotState::Passivating(_)
                )
            })
    }

    /// How many partitions are active (see [`is_active`](Self::is_active)). Scans every slot.
    pub fn n_active(&self) -> usize {
        (0..self.n_partitions())
            .filter(|&partition| self.is_active(partition))
            .count()
    }

    async fn acquire(&self, partition: u32) -> Result<OwnedSemaphorePermit, ActorError> {
        let slot = self.shared.checked_slot(partition)?;
        Arc::clone(&slot.permits)
            .acquire_owned()
            .await
            .map_err(|_closed| self.shared.stopped())
    }

    fn try_acquire(&self, partition: u32) -> Result<OwnedSemaphorePermit, ActorError> {
        let slot = self.shared.checked_slot(partition)?;
        Arc::clone(&slot.permits)
            .try_acquire_owned()
            .map_err(|error| match error {
                TryAcquireError::NoPermits => ActorError::MailboxFull {
                    actor: self.shared.actor_id(partition),
                    capacity: self.shared.config.mailbox_capacity,
                },
                TryAcquireError::Closed => self.shared.stopped(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::{ActorSystem, SystemConfig};

    struct Recorder;

    enum RecorderMsg {
        Record(u32),
        Get(oneshot::Sender<Vec<u32>>),
    }

    impl VirtualActor for Recorder {
        type Msg = RecorderMsg;
        type State = Vec<u32>;

        async fn activate(&self, _id: ActorId) -> Result<Vec<u32>, ActorError> {
            Ok(Vec::new())
        }

        async fn handle(&self, _id: ActorId, state: &mut Vec<u32>, msg: RecorderMsg) {
            match msg {
                RecorderMsg::Record(value) => state.push(value),
                RecorderMsg::Get(reply) => drop(reply.send(state.clone())),
            }
        }
    }

    // Goal: a message enqueued while the idle check waits for the slot lock is not dropped by a
    // passivation that starts right after (the in-flight check in `try_passivate`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn enqueue_racing_the_idle_check_is_not_lost() {
        let system = ActorSystem::new(SystemConfig::embedded());
        let config = ServiceConfig {
            n_partitions: 1,
            mailbox_capacity: 8,
            idle_timeout: Some(Duration::from_millis(20)),
        };
        let service = system.register("recorder", config, Recorder).unwrap();
        service.send(0, RecorderMsg::Record(1)).await.unwrap();
        assert_eq!(service.call(0, RecorderMsg::Get).await.unwrap(), vec![1]);

        // Act as a sender stuck between reading the slot and enqueueing: hold a permit and the
        // read lock until the idle check is waiting for the write lock.
        let slot = service.shared.slot(0);
        let permit = Arc::clone(&slot.permits).try_acquire_owned().unwrap();
        {
            let slot_state = slot.state.read();
            let SlotState::Active(actor) = &*slot_state else {
                panic!("the actor is active");
            };
            // Blocking this worker on purpose: the actor runs on the other one. parking_lot's
            // lock is fair: once a writer waits (the idle check), a new reader is refused, so a
            // failing `try_read` while we hold a read guard says the writer is there.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while slot.state.try_read().is_some() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the idle check never waited for the slot's write lock"
                );
                std::thread::yield_now();
            }
            let envelope = Envelope::User {
                payload: Payload::One(RecorderMsg::Record(2)),
                permit,
            };
            assert!(
                actor.cast(envelope).is_ok(),
                "the actor has not stopped yet"
            );
        }
        let state =
            tokio::time::timeout(Duration::from_secs(10), service.call(0, RecorderMsg::Get))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(state, vec![1, 2], "the racing message was delivered");
    }
}
