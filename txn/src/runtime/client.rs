//! [`Client`]: the handle that admits requests (refusing internal, oversized and unencodable
//! events), submits them to the sequencer, alone or in batches (`submit_many`), and waits for
//! their durable outcome; and snapshot queries.

use crate::app::{App, AppDef, ServiceRef};
use crate::contract::{EventOf, KeyOf, Request, Service, Svc};
use crate::dedup::request_digest;
use crate::envelope::Sequenced;
use crate::error::TxnError;
use crate::ids::{GlobalPartition, IdGenerator, RequestId};
use crate::outcome::Outcome;
use crate::query::{QueryFn, QueryPart, QueryResult, ReadView};
use std::any::Any;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::hash::Hash;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use tokio::sync::{Notify, mpsc, oneshot};

pub(super) use super::batch::TxnReply;
use super::batch::{BatchReplies, TxnOutcome};
use super::reply_slot::ReplySlots;
pub(super) type QueryReply = oneshot::Sender<QueryResult>;

/// A request the client admitted, on its way to the sequencer.
pub(super) struct Admitted<A: App> {
    pub(super) request: Sequenced<A::Event>,
    /// The request's digest (see `dedup::request_digest`), computed by the client.
    pub(super) digest: u32,
    /// Whether the id was generated for this submission just now: no one else can know it, so
    /// it needs no dedup lookup.
    pub(super) fresh: bool,
    pub(super) reply: TxnReply<A>,
}

pub(super) enum Submission<A: App> {
    Txn(Admitted<A>),
    /// The requests of one `Client::submit_many`, in order: one hand-off for all of them.
    TxnBatch(Vec<Admitted<A>>),
    Query {
        targets: Vec<GlobalPartition>,
        f: QueryFn,
        reply: QueryReply,
    },
    /// Gather the conflict losses by table from every partition (between two epochs).
    ConflictStats {
        reply: oneshot::Sender<Result<super::ConflictStats, TxnError>>,
    },
    /// Hash every partition's committed rows (between two epochs): the state hash of a cluster
    /// runtime, whose other nodes a query's closure cannot reach.
    StateHash {
        reply: oneshot::Sender<Result<u64, TxnError>>,
    },
    /// Erase a subject's personal data, between two epochs (`Client::forget`).
    Forget {
        subject: String,
        reply: oneshot::Sender<Result<crate::governance::ForgetReport, TxnError>>,
    },
    /// Finish what is queued and stop; later submissions get `TxnError::Stopped`.
    Stop,
}

/// The submission queue from the clients to the sequencer, bounded to `bound` submissions (a
/// batch is one): a list under a lock plus a count of the places taken. A send takes a place
/// with one atomic add and pushes its submission under the lock; the sequencer swaps the whole
/// list for its own empty one under that lock once per run of submissions, then takes them one
/// by one without locking, freeing each one's place with one atomic subtract. Only a sender that
/// finds the queue full waits (for `Room::freed`). A bounded tokio channel cost a semaphore
/// permit per send and a lock per receive (issue 16, the plain path); an unbounded one, its
/// lock-free block list's atomics on both sides of every submission (issue 16, round 4).
pub(super) fn submission_queue<A: App>(bound: usize) -> (SubmitTx<A>, SubmitRx<A>) {
    let shared = Arc::new(Shared {
        queue: parking_lot::Mutex::new(Queue {
            items: VecDeque::new(),
            closed: false,
            receiver: None,
        }),
        senders: AtomicUsize::new(1),
        room: Room {
            queued: AtomicUsize::new(0),
            bound: bound.max(1),
            waiting: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            freed: Notify::new(),
        },
    });
    (
        SubmitTx {
            shared: shared.clone(),
        },
        SubmitRx {
            shared,
            taken: VecDeque::new(),
        },
    )
}

/// What both ends of the submission queue share.
struct Shared<A: App> {
    queue: parking_lot::Mutex<Queue<A>>,
    /// Live `SubmitTx` handles (one atomic add or subtract per clone or drop, as the server
    /// clones a handle per request): at 0 the sequencer sees the queue disconnected once it is
    /// empty. The last one gone takes the lock to wake a waiting sequencer, which reads this
    /// under the lock: either it sees 0, or its waker is there to be woken.
    senders: AtomicUsize,
    room: Room,
}

/// The submissions sent and not yet swapped out by the sequencer, and who is there.
struct Queue<A: App> {
    items: VecDeque<Submission<A>>,
    /// The sequencer's end was dropped: sends fail.
    closed: bool,
    /// The sequencer waiting in `SubmitRx::recv`, woken by the next send (or the last sender's
    /// drop).
    receiver: Option<Waker>,
}

/// The places of the submission queue.
struct Room {
    /// Submissions sent and not yet taken by the sequencer (may pass `bound` for an instant
    /// while a sender that found the queue full gives its place back).
    queued: AtomicUsize,
    bound: usize,
    /// Senders waiting for a place: only then does taking a submission notify.
    waiting: AtomicUsize,
    /// The sequencer's end was dropped: waiting senders give up.
    closed: AtomicBool,
    freed: Notify,
}

impl Room {
    /// Takes a place if there is one, without waiting.
    fn enter_now(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::SeqCst) < self.bound {
            return true;
        }
        self.queued.fetch_sub(1, Ordering::SeqCst);
        false
    }

    /// Takes a place, waiting while the queue is full; `false` if the receiver is gone.
    async fn enter(&self) -> bool {
        if self.enter_now() {
            return true;
        }
        loop {
            let freed = self.freed.notified();
            let mut freed = pin!(freed);
            // Registered before the check, so a place freed after it wakes this sender.
            freed.as_mut().enable();
            let _waiting = Waiting::new(&self.waiting);
            if self.closed.load(Ordering::SeqCst) {
                return false;
            }
            if self.queued.fetch_add(1, Ordering::SeqCst) < self.bound {
                return true;
            }
            self.queued.fetch_sub(1, Ordering::SeqCst);
            freed.await;
        }
    }

    /// Frees a place (a submission taken, or a send that failed).
    fn leave(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        // Either this sees a waiting sender, or that sender's check sees the freed place.
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// A sender counted in `Room::waiting` while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The clients' end of the submission queue.
pub(super) struct SubmitTx<A: App> {
    shared: Arc<Shared<A>>,
}

impl<A: App> Clone for SubmitTx<A> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        SubmitTx {
            shared: self.shared.clone(),
        }
    }
}

impl<A: App> Drop for SubmitTx<A> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) > 1 {
            return;
        }
        let receiver = self.shared.queue.lock().receiver.take();
        // The last sender: a waiting sequencer must see the queue disconnected.
        if let Some(receiver) = receiver {
            receiver.wake();
        }
    }
}

impl<A: App> SubmitTx<A> {
    /// Queues `sub` for the sequencer, waiting while the queue is full; hands it back if the
    /// sequencer is gone.
    pub(super) async fn send(
        &self,
        sub: Submission<A>,
    ) -> Result<(), mpsc::error::SendError<Submission<A>>> {
        if !self.shared.room.enter().await {
            return Err(mpsc::error::SendError(sub));
        }
        self.push(sub)
    }

    /// [`send`](Self::send) without waiting: queues `sub` if the queue has room (the common
    /// case, with no future holding the submission), hands it back as `Err` if it is full.
    pub(super) fn send_now(
        &self,
        sub: Submission<A>,
    ) -> Result<Result<(), mpsc::error::SendError<Submission<A>>>, Submission<A>> {
        if !self.shared.room.enter_now() {
            return Err(sub);
        }
        Ok(self.push(sub))
    }

    /// Pushes `sub`, which holds a place, and wakes the sequencer if it waits; gives the place
    /// back and hands `sub` back if the sequencer is gone.
    fn push(&self, sub: Submission<A>) -> Result<(), mpsc::error::SendError<Submission<A>>> {
        let receiver = {
            let mut queue = self.shared.queue.lock();
            if queue.closed {
                drop(queue);
                self.shared.room.leave();
                return Err(mpsc::error::SendError(sub));
            }
            queue.items.push_back(sub);
            queue.receiver.take()
        };
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        Ok(())
    }
}

/// The sequencer's end of the submission queue.
pub(super) struct SubmitRx<A: App> {
    shared: Arc<Shared<A>>,
    /// Submissions swapped out of the queue, taken from here first (in order, without locking).
    /// They still hold their places.
    taken: VecDeque<Submission<A>>,
}

impl<A: App> SubmitRx<A> {
    /// The next submission; `None` once every client is gone and the queue is empty.
    /// Cancel-safe: a submission is taken only when this returns it.
    pub(super) async fn recv(&mut self) -> Option<Submission<A>> {
        poll_fn(|cx| {
            if self.taken.is_empty() {
                let mut queue = self.shared.queue.lock();
                if queue.items.is_empty() {
                    if self.shared.senders.load(Ordering::Acquire) == 0 {
                        return Poll::Ready(None);
                    }
                    match &mut queue.receiver {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        receiver => *receiver = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                std::mem::swap(&mut queue.items, &mut self.taken);
            }
            Poll::Ready(Some(self.take_one()))
        })
        .await
    }

    /// Submissions queued and not yet taken, each of one request or more (a hint: senders may
    /// add more at any time).
    pub(super) fn queued(&self) -> usize {
        self.shared.room.queued.load(Ordering::Relaxed)
    }

    /// The next submission if one is queued.
    pub(super) fn try_recv(&mut self) -> Result<Submission<A>, mpsc::error::TryRecvError> {
        if self.taken.is_empty() {
            let mut queue = self.shared.queue.lock();
            if queue.items.is_empty() {
                return Err(if self.shared.senders.load(Ordering::Acquire) == 0 {
                    mpsc::error::TryRecvError::Disconnected
                } else {
                    mpsc::error::TryRecvError::Empty
                });
            }
            // Both lists keep their capacity: a steady stream allocates nothing here.
            std::mem::swap(&mut queue.items, &mut self.taken);
        }
        Ok(self.take_one())
    }

    /// The first of `taken` (not empty), its place freed.
    fn take_one(&mut self) -> Submission<A> {
        let sub = self
            .taken
            .pop_front()
            .expect("a submission was swapped out");
        self.shared.room.leave();
        if self.taken.is_empty()
            && self.taken.capacity() > crate::limits::SUBMIT_QUEUE_KEPT_CAPACITY
        {
            self.taken
                .shrink_to(crate::limits::SUBMIT_QUEUE_KEPT_CAPACITY);
        }
        sub
    }
}

impl<A: App> Drop for SubmitRx<A> {
    fn drop(&mut self) {
        // Later sends fail; the submissions still queued are dropped (outside the lock), which
        // tells their callers the runtime stopped, as `taken`'s are when it is dropped.
        let queued = {
            let mut queue = self.shared.queue.lock();
            queue.closed = true;
            std::mem::take(&mut queue.items)
        };
        drop(queued);
        self.shared.room.closed.store(true, Ordering::SeqCst);
        self.shared.room.freed.notify_waiters();
    }
}

/// A client handle: cheap to clone, usable from any task.
///
/// Every request carries a request id: the caller's (`submit_with_id`) or one generated for it
/// (`submit`, `submit_to`). Checks before anything reaches the log: an event declared internal
/// (`App::is_internal`) is refused with `TxnError::InternalEvent`, one larger than
/// `RuntimeConfig::request_bytes_max` with `TxnError::RequestTooLarge`. When the outcome is
/// unknown (the runtime stopped or storage failed after the request was accepted) the error is
/// `TxnError::OutcomeUnknown { id, .. }`: resubmitting the same request with
/// `submit_with_id(id, ..)` returns its outcome and never runs it twice, while the id is in the
/// dedup window (generated ids: `RuntimeConfig::generated_id_window_epochs` epochs after they
/// settled; chosen ids: the newest `dedup_window_max`, within `dedup_window_bytes_max`). To bound
/// the wait yourself, take an id with [`Client::new_request_id`] first and submit with it.
pub struct Client<A: App> {
    pub(super) tx: SubmitTx<A>,
    pub(super) app: Arc<AppDef<A>>,
    pub(super) ids: Arc<IdGenerator>,
    pub(super) request_bytes_max: usize,
    /// Whether partitions live on other nodes (`RuntimeConfig::cluster`).
    pub(super) in_cluster: bool,
    /// Reply slots of finished requests, for the next ones; shared by every clone, so a
    /// handle cloned per request (as the server does) reuses them too.
    pub(super) reply_slots: Arc<ReplySlots<TxnOutcome<A>>>,
}

impl<A: App> Clone for Client<A> {
    fn clone(&self) -> Self {
        Client {
            tx: self.tx.clone(),
            app: self.app.clone(),
            ids: self.ids.clone(),
            in_cluster: self.in_cluster,
            request_bytes_max: self.request_bytes_max,
            reply_slots: self.reply_slots.clone(),
        }
    }
}

impl<A: App> Client<A> {
    /// Submits `event` to the partition of `to` owning the event's key and waits for the
    /// durable outcome. The request gets a generated id, handed back in
    /// `TxnError::OutcomeUnknown`.
    pub async fn submit<S, E>(&self, to: Svc<S>, event: E) -> Result<Outcome<A::Output>, TxnError>
    where
        S: Service<App = A>,
        E: EventOf<S> + KeyOf<S::Key>,
    {
        self.submit_request(to.request(event)).await
    }

    /// Submits an idempotent request: if a request with the same `id` was already submitted
    /// (and is still in the dedup window, which survives restarts), this returns that request's
    /// original outcome and nothing is executed again. Reusing an id for a different request
    /// (another target partition or event) is refused with `TxnError::RequestIdReused`.
    pub async fn submit_with_id<S, E>(
        &self,
        id: RequestId,
        to: Svc<S>,
        event: E,
    ) -> Result<Outcome<A::Output>, TxnError>
    where
        S: Service<App = A>,
        E: EventOf<S> + KeyOf<S::Key>,
    {
        self.submit_request_with_id(id, to.request(event)).await
    }

    /// Submits an already routed request (`Svc::request`) with a generated id.
    pub async fn submit_request(
        &self,
        request: Request<A>,
    ) -> Result<Outcome<A::Output>, TxnError> {
        let (service, partition, event) = request.into_parts();
        let target = self.app.check_partition(service, partition)?;
        self.submit_sequenced(self.ids.next(), true, target, event)
            .await
    }

    /// Submits an already routed request under the caller's `id` (see
    /// [`submit_with_id`](Self::submit_with_id)).
    pub async fn submit_request_with_id(
        &self,
        id: RequestId,
        request: Request<A>,
    ) -> Result<Outcome<A::Output>, TxnError> {
        let (service, partition, event) = request.into_parts();
        let target = self.app.check_partition(service, partition)?;
        self.submit_sequenced(id, false, target, event).await
    }

    /// Untyped [`submit`](Self::submit), for applications whose `App` is written by hand:
    /// nothing checks that `service` handles `event`.
    pub async fn submit_raw<K: Hash + ?Sized>(
        &self,
        service: ServiceRef,
        key: &K,
        event: A::Event,
    ) -> Result<Outcome<A::Output>, TxnError> {
        self.submit_request(Request::raw(service, service.partition_of(key), event))
            .await
    }

    /// Untyped submit to partition `partition` of `service`.
    pub async fn submit_to_raw(
        &self,
        service: ServiceRef,
        partition: u32,
        event: A::Event,
    ) -> Result<Outcome<A::Output>, TxnError> {
        self.submit_request(Request::raw(service, partition, event))
            .await
    }

    /// Untyped [`submit_with_id`](Self::submit_with_id).
    pub async fn submit_with_id_raw<K: Hash + ?Sized>(
        &self,
        id: RequestId,
        service: ServiceRef,
        key: &K,
        event: A::Event,
    ) -> Result<Outcome<A::Output>, TxnError> {
        let request = Request::raw(service, service.partition_of(key), event);
        self.submit_request_with_id(id, request).await
    }

    /// A fresh generated request id (unique to this runtime), for callers that want to know
    /// the id before submitting with `submit_with_id`, e.g. to retry after their own timeout.
    /// Like every generated id it is remembered `RuntimeConfig::generated_id_window_epochs`
    /// epochs after it settled; for a longer horizon choose your own `RequestId`s.
    pub fn new_request_id(&self) -> RequestId {
        self.ids.next()
    }

    async fn submit_sequenced(
        &self,
        id: RequestId,
        fresh: bool,
        target: GlobalPartition,
        event: A::Event,
    ) -> Result<Outcome<A::Output>, TxnError> {
        let digest = self.admit(target, &event)?;
        let request = Sequenced {
            target,
            event,
            id: Some(id),
            retries: 0,
        };
        let (reply, slot) = self.reply_slots.take();
        let admitted = Admitted {
            request,
            digest,
            fresh,
            reply: TxnReply::One(reply),
        };
        let sent = match self.tx.send_now(Submission::Txn(admitted)) {
            Ok(sent) => sent,
            // The queue is full: wait for room.
            Err(sub) => self.tx.send(sub).await,
        };
        sent.map_err(|_| TxnError::Stopped)?;
        // From here the request may be in the log: any failure leaves its outcome unknown.
        let outcome = slot.recv().await.unwrap_or(Err(TxnError::Stopped));
        self.reply_slots.give_back(slot);
        outcome_for(id, outcome)
    }

    /// Submits `requests` in one hand-off to the sequencer, each with a generated id, and waits
    /// until every one of them has its durable outcome: one channel send and one wake-up for
    /// the whole batch instead of one per request. The outcomes come in the order of
    /// `requests`, each exactly what [`submit_request`](Self::submit_request) would have
    /// returned for it (a request refused on admission gets its error and is not sent). The
    /// requests are sequenced in order and may share an epoch with other callers' requests or
    /// span several epochs; the batch is not a transaction.
    pub async fn submit_many(
        &self,
        requests: impl IntoIterator<Item = Request<A>>,
    ) -> Vec<Result<Outcome<A::Output>, TxnError>> {
        let requests = requests
            .into_iter()
            .map(|request| (self.ids.next(), true, request));
        self.submit_batch(requests).await
    }

    /// [`submit_many`](Self::submit_many) with the caller's request ids: each request is
    /// idempotent as with [`submit_with_id`](Self::submit_with_id), also against the other
    /// requests of the same batch (a repeated id gets the first one's outcome, or
    /// `TxnError::RequestIdReused` if its request differs).
    pub async fn submit_many_with_ids(
        &self,
        requests: impl IntoIterator<Item = (RequestId, Request<A>)>,
    ) -> Vec<Result<Outcome<A::Output>, TxnError>> {
        let requests = requests
            .into_iter()
            .map(|(id, request)| (id, false, request));
        self.submit_batch(requests).await
    }

    /// Admits each `(id, fresh, request)`, sends the admitted ones as one batch and hands back
    /// every outcome in order. Three allocations per batch, whatever its size (`batch.rs`).
    async fn submit_batch(
        &self,
        requests: impl Iterator<Item = (RequestId, bool, Request<A>)>,
    ) -> Vec<Result<Outcome<A::Output>, TxnError>> {
        // Sized once from the requests' count rather than regrown push by push.
        let n = requests.size_hint().0;
        let batch = BatchReplies::<A>::with_capacity(n);
        let mut admitted = Vec::with_capacity(n);
        for (id, fresh, request) in requests {
            let (service, partition, event) = request.into_parts();
            let checked = self
                .app
                .check_partition(service, partition)
                .and_then(|target| Ok((target, self.admit(target, &event)?)));
            match checked {
                Ok((target, digest)) => admitted.push(Admitted {
                    request: Sequenced {
                        target,
                        event,
                        id: Some(id),
                        retries: 0,
                    },
                    digest,
                    fresh,
                    reply: batch.place(id),
                }),
                Err(e) => batch.refused(e),
            }
        }
        if !admitted.is_empty()
            && let Err(mpsc::error::SendError(Submission::TxnBatch(unsent))) =
                self.tx.send(Submission::TxnBatch(admitted)).await
        {
            // The runtime had stopped before it accepted the batch: none of it is in the log.
            for admitted in unsent {
                if let TxnReply::InBatch(slot) = admitted.reply {
                    slot.unsent();
                }
            }
        }
        batch.outcomes().await
    }

    /// Refuses internal and oversized events before they reach the sequencer; returns the
    /// request's digest.
    fn admit(&self, target: GlobalPartition, event: &A::Event) -> Result<u32, TxnError> {
        let service = || {
            let (service, _) = self.app.locate(target);
            self.app.services[service as usize].name.clone()
        };
        if A::is_internal(event) {
            return Err(TxnError::InternalEvent {
                service: service(),
                kind: A::event_kind(event).to_string(),
            });
        }
        let (digest, size_bytes) =
            request_digest(target, event).map_err(|e| TxnError::UnencodableEvent {
                service: service(),
                message: e.to_string(),
            })?;
        if size_bytes > self.request_bytes_max {
            return Err(TxnError::RequestTooLarge {
                service: service(),
                size_bytes,
                limit_bytes: self.request_bytes_max,
            });
        }
        Ok(digest)
    }

    /// Runs `f` on every partition of `services` at one consistent snapshot and returns the
    /// results in service, then partition order.
    pub async fn query<R: Send + 'static>(
        &self,
        services: &[ServiceRef],
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, TxnError> {
        let targets = services
            .iter()
            .flat_map(|s| (0..s.n_partitions).map(move |p| s.gp(p)))
            .collect();
        self.query_targets(targets, f).await
    }

    /// Like [`Client::query`], for a query that serves `purposes`: reading a row with a
    /// personal field whose category allows none of them fails the query
    /// (`TxnError::QueryPanicked` naming the table, field and category). A plain `query`
    /// declares no purposes and is not checked: it is the operator's access, as to the data
    /// directory (`docs/governance.md`).
    pub async fn query_for<R: Send + 'static>(
        &self,
        purposes: &[&str],
        services: &[ServiceRef],
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, TxnError> {
        let mask = self.app.governance.mask_of_names(purposes);
        self.query(services, move |view| f(&view.serving(mask)))
            .await
    }

    /// Like [`Client::query`], but only on the listed `(service, partition)` pairs (e.g. the
    /// partitions owning the keys a lookup needs), still at one consistent snapshot. Results
    /// come in the order of `partitions`; an unknown partition is an error. A partition listed
    /// more than once runs `f` once per listing (at the same snapshot), so each listing gets
    /// its own result.
    pub async fn query_at<R: Send + 'static>(
        &self,
        partitions: &[(ServiceRef, u32)],
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, TxnError> {
        let f = QueryFn::closure(Arc::new(move |view| {
            Box::new(f(view)) as Box<dyn Any + Send>
        }));
        let parts = self.query_parts_at(partitions, f).await?;
        Ok(parts
            .into_iter()
            .map(|(_, b)| *b.downcast::<R>().expect("query result type"))
            .collect())
    }

    /// Runs `f` on the listed partitions at one snapshot; each listing's part, with its global
    /// partition, in the order of `partitions`.
    pub(super) async fn query_parts_at(
        &self,
        partitions: &[(ServiceRef, u32)],
        f: QueryFn,
    ) -> Result<Vec<(GlobalPartition, QueryPart)>, TxnError> {
        let mut targets = Vec::with_capacity(partitions.len());
        for (service, p) in partitions {
            targets.push(self.app.check_partition(*service, *p)?);
        }
        // The epoch answers in partition order, one result per listing (duplicates included).
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order.sort_by_key(|i| targets[*i]);
        let sorted: Vec<GlobalPartition> = order.iter().map(|i| targets[*i]).collect();
        let parts = self.submit_query(sorted.clone(), f).await?;
        let mut out: Vec<Option<(GlobalPartition, QueryPart)>> =
            (0..targets.len()).map(|_| None).collect();
        for ((i, part), gp) in order.into_iter().zip(parts).zip(sorted) {
            out[i] = Some((gp, part));
        }
        out.into_iter()
            .map(|r| {
                r.ok_or_else(|| TxnError::Actor("a query_at listing got no result".to_string()))
            })
            .collect()
    }

    async fn query_targets<R: Send + 'static>(
        &self,
        targets: Vec<GlobalPartition>,
        f: impl Fn(&ReadView<'_>) -> R + Send + Sync + 'static,
    ) -> Result<Vec<R>, TxnError> {
        let f = QueryFn::closure(Arc::new(move |view| {
            Box::new(f(view)) as Box<dyn Any + Send>
        }));
        let parts = self.submit_query(targets, f).await?;
        Ok(parts
            .into_iter()
            .map(|b| *b.downcast::<R>().expect("query result type"))
            .collect())
    }

    /// Sequences query `f` on `targets` (ascending) and waits for its parts, in that order.
    async fn submit_query(
        &self,
        targets: Vec<GlobalPartition>,
        f: QueryFn,
    ) -> Result<Vec<QueryPart>, TxnError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Submission::Query { targets, f, reply })
            .await
            .map_err(|_| TxnError::Stopped)?;
        rx.await.map_err(|_| TxnError::Stopped)?
    }

    /// An order-independent hash of every committed row of every service, at one snapshot. In a
    /// cluster it is taken between two epochs, which may include epochs not yet durable.
    pub async fn state_hash(&self) -> Result<u64, TxnError> {
        if self.in_cluster {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Submission::StateHash { reply })
                .await
                .map_err(|_| TxnError::Stopped)?;
            return rx.await.map_err(|_| TxnError::Stopped)?;
        }
        let services: Vec<ServiceRef> = self.app.services.iter().map(|s| s.service).collect();
        let hashes = self.query(&services, |view| view.state_hash()).await?;
        Ok(crate::serial::combine_hashes(hashes.into_iter()))
    }

    /// The conflict losses by table so far, with each table's hottest keys. Asks every
    /// partition (one message each, between two epochs), so call it for reports, not per
    /// request.
    pub async fn conflict_stats(&self) -> Result<super::ConflictStats, TxnError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Submission::ConflictStats { reply })
            .await
            .map_err(|_| TxnError::Stopped)?;
        rx.await.map_err(|_| TxnError::Stopped)?
    }

    /// The application definition.
    pub fn app(&self) -> &Arc<AppDef<A>> {
        &self.app
    }
}

/// What the caller of a request with id `id` accepted by the sequencer gets for `outcome`: any
/// error but a refused id leaves the outcome unknown.
pub(super) fn outcome_for<O>(
    id: RequestId,
    outcome: Result<Outcome<O>, TxnError>,
) -> Result<Outcome<O>, TxnError> {
    match outcome {
        Ok(outcome) => Ok(outcome),
        Err(e @ TxnError::RequestIdReused { .. }) => Err(e),
        Err(cause) => Err(TxnError::OutcomeUnknown {
            id,
            cause: Box::new(cause),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll};

    struct Plain;

    impl App for Plain {
        type Event = u64;
        type Output = ();
    }

    /// A submission that needs no reply.
    fn stop() -> Submission<Plain> {
        Submission::Stop
    }

    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(futures::task::noop_waker_ref()))
    }

    #[test]
    fn a_burst_gives_its_lists_memory_back_once_taken() {
        let burst = 4 * crate::limits::SUBMIT_QUEUE_KEPT_CAPACITY;
        let (tx, mut rx) = submission_queue::<Plain>(burst);
        for _ in 0..burst {
            assert!(matches!(tx.send_now(stop()), Ok(Ok(()))));
        }
        for _ in 0..burst {
            assert!(rx.try_recv().is_ok());
        }
        assert!(
            rx.taken.capacity() <= crate::limits::SUBMIT_QUEUE_KEPT_CAPACITY,
            "{} places kept after a burst of {burst}",
            rx.taken.capacity()
        );
    }

    #[test]
    fn a_full_queue_holds_a_sender_until_the_sequencer_takes_a_submission() {
        let (tx, mut rx) = submission_queue::<Plain>(2);
        for _ in 0..2 {
            let sent = std::pin::pin!(tx.send(stop()));
            assert!(matches!(poll_once(sent), Poll::Ready(Ok(()))));
        }
        let mut third = std::pin::pin!(tx.send(stop()));
        assert!(
            poll_once(third.as_mut()).is_pending(),
            "no place for a third send in a queue of 2"
        );
        assert!(poll_once(third.as_mut()).is_pending(), "still full");
        assert!(rx.try_recv().is_ok());
        assert!(matches!(poll_once(third.as_mut()), Poll::Ready(Ok(()))));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Empty)
        ));
        assert_eq!(tx.shared.room.queued.load(Ordering::SeqCst), 0);
        assert_eq!(tx.shared.room.waiting.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_waiting_sender_gets_its_submission_back_when_the_sequencer_is_gone() {
        let (tx, rx) = submission_queue::<Plain>(1);
        let first = std::pin::pin!(tx.send(stop()));
        assert!(matches!(poll_once(first), Poll::Ready(Ok(()))));
        let mut second = std::pin::pin!(tx.send(stop()));
        assert!(poll_once(second.as_mut()).is_pending());
        drop(rx);
        assert!(matches!(
            poll_once(second.as_mut()),
            Poll::Ready(Err(mpsc::error::SendError(Submission::Stop)))
        ));
        // A send after the sequencer is gone fails at once, and gives its place back.
        let (tx, rx) = submission_queue::<Plain>(4);
        drop(rx);
        let sent = std::pin::pin!(tx.send(stop()));
        assert!(matches!(poll_once(sent), Poll::Ready(Err(_))));
        assert_eq!(tx.shared.room.queued.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_send_without_waiting_hands_its_submission_back_when_the_queue_is_full() {
        let (tx, mut rx) = submission_queue::<Plain>(2);
        for _ in 0..2 {
            assert!(matches!(tx.send_now(stop()), Ok(Ok(()))));
        }
        assert!(
            matches!(tx.send_now(stop()), Err(Submission::Stop)),
            "no place for a third in a queue of 2"
        );
        assert_eq!(
            tx.shared.room.queued.load(Ordering::SeqCst),
            2,
            "the refused one took none"
        );
        // The submission handed back waits for room as a plain send does.
        let mut third = std::pin::pin!(tx.send(stop()));
        assert!(poll_once(third.as_mut()).is_pending());
        assert!(rx.try_recv().is_ok());
        assert!(matches!(poll_once(third.as_mut()), Poll::Ready(Ok(()))));
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
        assert!(matches!(tx.send_now(stop()), Ok(Ok(()))), "room again");
        // The sequencer gone: a send with room fails at once and gives its place back.
        drop(rx);
        assert!(matches!(tx.send_now(stop()), Ok(Err(_))));
        assert_eq!(
            tx.shared.room.queued.load(Ordering::SeqCst),
            1,
            "only the unreceived one"
        );
    }

    #[test]
    fn the_sequencer_sees_every_client_gone() {
        let (tx, mut rx) = submission_queue::<Plain>(4);
        {
            let sent = std::pin::pin!(tx.send(stop()));
            assert!(matches!(poll_once(sent), Poll::Ready(Ok(()))));
        }
        drop(tx);
        assert!(rx.try_recv().is_ok());
        assert!(matches!(
            rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }

    /// A waker that records being woken.
    struct Flag(AtomicBool);

    impl futures::task::ArcWake for Flag {
        fn wake_by_ref(flag: &Arc<Self>) {
            flag.0.store(true, Ordering::SeqCst);
        }
    }

    /// Polls `f` once with a fresh [`Flag`], returned to tell whether it was woken since.
    fn poll_flagged<F: Future>(f: std::pin::Pin<&mut F>) -> (Poll<F::Output>, Arc<Flag>) {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = futures::task::waker(flag.clone());
        (f.poll(&mut Context::from_waker(&waker)), flag)
    }

    #[test]
    fn a_waiting_sequencer_is_woken_by_a_send_and_by_the_last_client_gone() {
        let (tx, mut rx) = submission_queue::<Plain>(8);
        {
            let mut recv = std::pin::pin!(rx.recv());
            let (polled, woken) = poll_flagged(recv.as_mut());
            assert!(polled.is_pending(), "nothing queued");
            assert!(matches!(tx.send_now(stop()), Ok(Ok(()))));
            assert!(woken.0.load(Ordering::SeqCst), "the send woke it");
            assert!(matches!(
                poll_once(recv.as_mut()),
                Poll::Ready(Some(Submission::Stop))
            ));
        }
        // Several sent at once are taken in order, each freeing its place as it is taken.
        let (first, second) = (tx.clone(), tx.clone());
        let ids = |n: usize| Submission::<Plain>::Query {
            targets: vec![n as GlobalPartition],
            f: QueryFn::closure(Arc::new(|_| Box::new(()) as Box<dyn Any + Send>)),
            reply: oneshot::channel().0,
        };
        for n in 0..3 {
            assert!(matches!(first.send_now(ids(n)), Ok(Ok(()))));
        }
        assert_eq!(tx.shared.room.queued.load(Ordering::SeqCst), 3);
        for n in 0..3 {
            match rx.try_recv() {
                Ok(Submission::Query { targets, .. }) => {
                    assert_eq!(targets, [n as GlobalPartition])
                }
                _ => panic!("submission {n} in order"),
            }
            assert_eq!(tx.shared.room.queued.load(Ordering::SeqCst), 2 - n);
        }
        drop((first, second));
        let mut recv = std::pin::pin!(rx.recv());
        let (polled, woken) = poll_flagged(recv.as_mut());
        assert!(polled.is_pending(), "a client is left");
        assert!(!woken.0.load(Ordering::SeqCst));
        drop(tx);
        assert!(
            woken.0.load(Ordering::SeqCst),
            "the last client gone woke it"
        );
        assert!(matches!(poll_once(recv.as_mut()), Poll::Ready(None)));
    }

    #[test]
    fn submissions_queued_when_the_sequencer_goes_are_dropped_and_later_sends_fail() {
        let (tx, rx) = submission_queue::<Plain>(8);
        let (reply, mut answer) = oneshot::channel();
        let query = Submission::<Plain>::Query {
            targets: Vec::new(),
            f: QueryFn::closure(Arc::new(|_| Box::new(()) as Box<dyn Any + Send>)),
            reply,
        };
        assert!(matches!(tx.send_now(query), Ok(Ok(()))));
        drop(rx);
        assert!(
            matches!(answer.try_recv(), Err(oneshot::error::TryRecvError::Closed)),
            "its caller sees the runtime gone"
        );
        assert!(matches!(tx.send_now(stop()), Ok(Err(_))));
    }
}
