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
use std::hash::Hash;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

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
    pub(super) tx: mpsc::Sender<Submission<A>>,
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
        self.tx
            .send(Submission::Txn(admitted))
            .await
            .map_err(|_| TxnError::Stopped)?;
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
