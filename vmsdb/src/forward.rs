//! What cluster nodes send each other so clients can use any node: the sequencer's
//! announcement, batches of forwarded submissions with their outcomes, and forwarded queries
//! (rmp-serde, one link request per batch); and the [`Forwarder`], which gathers a node's
//! submissions into batches for the sequencer and answers them from its reply.

use crate::api::{AbortBody, ApiError, OutcomeBody, request_id_text};
use crate::apps::QueryFuture;
use crate::limits;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use txn::RequestId;
use txn::cluster::Cluster;

/// A node's request to another over the cluster link.
#[derive(Debug, Serialize, Deserialize)]
pub enum LinkMessage {
    /// From the node that holds the store's lease under `term` and runs the application:
    /// forward submissions and queries to `sequencer`.
    Announce { sequencer: String, term: u64 },
    /// Submissions a forwarding node gathered, in the order they arrived.
    Submit(Vec<ForwardedEvent>),
    /// A named query with its JSON body.
    Query {
        name: String,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// From the sequencer, before the first phase batch of its runtime reaches this node: drop
    /// the partitions of any older runtime and host the ones `owners` (one node name per
    /// global partition) gives this node, for the runtime numbered `generation`. With `keep`,
    /// the partitions the older runtime placed here too keep their state (a take-over that
    /// moves only what it must); the new runtime's recovery checks them against its replay.
    Place {
        generation: u64,
        owners: Vec<String>,
        #[serde(default)]
        keep: bool,
    },
}

/// One forwarded submission: its request id and the event as the API received it (checked by
/// the forwarding node already).
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedEvent {
    pub client: u64,
    pub seq: u64,
    pub service: String,
    pub kind: String,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub partition: Option<u32>,
}

impl ForwardedEvent {
    /// The request id it is submitted under.
    pub fn id(&self) -> RequestId {
        RequestId {
            client: self.client,
            seq: self.seq,
        }
    }
}

/// The answer to a [`LinkMessage`].
#[derive(Debug, Serialize, Deserialize)]
pub enum LinkAnswer {
    Announced,
    /// The node now hosts its partitions of the placement's generation.
    Placed,
    /// The node already hosts the partitions of a newer runtime (`current`): the placement
    /// came from a runtime that was replaced, and is refused.
    StalePlacement {
        current: u64,
    },
    /// One result per forwarded event, in the batch's order.
    Outcomes(Vec<Result<WireOutcome, WireError>>),
    /// A query's answer as JSON text.
    Query(Result<String, WireError>),
    /// The node asked does not run the application (any more): nothing was submitted.
    NotSequencer,
    /// The message did not decode (a node of another version?): nothing was submitted.
    Undecodable(String),
}

/// A durable outcome on the wire (`OutcomeBody` without the id, which the forwarder knows).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireOutcome {
    pub tid: u64,
    pub committed: bool,
    /// The output as JSON text.
    pub output_json: Option<String>,
    /// Service, kind and message of the abort reason.
    pub abort: Option<(String, String, String)>,
}

/// An API error on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// Every error code the API answers with, so a forwarded error keeps its code.
const API_ERROR_CODES: &[&str] = &[
    "bad_json",
    "bad_body",
    "body_too_large",
    "unknown_request",
    "bad_payload",
    "bad_idempotency_key",
    "bad_query",
    "unknown_service",
    "unknown_event",
    "unknown_partition",
    "unknown_query",
    "needs_partition",
    "internal_event",
    "request_id_reused",
    "request_too_large",
    "overloaded",
    "timeout",
    "not_ready",
    "stopped",
    "storage_failed",
    "outcome_unknown",
    "no_sequencer",
    "aborted",
];

impl WireOutcome {
    pub fn from_body(body: &OutcomeBody) -> WireOutcome {
        WireOutcome {
            tid: body.tid,
            committed: body.committed,
            output_json: body.output.as_ref().map(|value| value.to_string()),
            abort: body
                .abort
                .as_ref()
                .map(|a| (a.service.clone(), a.kind.clone(), a.message.clone())),
        }
    }

    /// The API's outcome of request `id`.
    pub fn into_body(self, id: RequestId) -> Result<OutcomeBody, ApiError> {
        let output = match self.output_json {
            Some(text) => Some(
                serde_json::from_str(&text)
                    .map_err(|e| internal(format!("the sequencer's output is not JSON: {e}")))?,
            ),
            None => None,
        };
        Ok(OutcomeBody {
            request_id: request_id_text(id),
            tid: self.tid,
            committed: self.committed,
            output,
            abort: self.abort.map(|(service, kind, message)| AbortBody {
                service,
                kind,
                message,
            }),
        })
    }
}

impl WireError {
    pub fn from_api(error: &ApiError) -> WireError {
        WireError {
            status: error.status.as_u16(),
            code: error.body.code.to_string(),
            message: error.body.message.clone(),
        }
    }

    /// The error as this node answers it. A store failure on the sequencer does not mark this
    /// node's own store failed.
    pub fn into_api(self) -> ApiError {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = API_ERROR_CODES
            .iter()
            .find(|known| **known == self.code)
            .copied()
            .unwrap_or("internal");
        ApiError::new(status, code, self.message)
    }
}

/// Encodes a link message or answer.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec(value).expect("link messages always encode")
}

/// Encodes a request for another node's link handler: the message, then the trailing tag that
/// tells it from the phase batches of the partitions spread over the nodes (`spread.rs`).
pub fn encode_message(message: &LinkMessage) -> Vec<u8> {
    let mut bytes = encode(message);
    bytes.push(crate::spread::TAG_FORWARD);
    bytes
}

/// Decodes a link message or answer; the error says what was wrong.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| format!("an undecodable link message: {e}"))
}

fn internal(message: String) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
}

/// 503 `no_sequencer`: nothing was submitted, retrying is safe.
pub fn no_sequencer() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_sequencer",
        "no node runs the application right now (a new sequencer is taking the store's lease \
         over); nothing was submitted: retry, on any node",
    )
}

/// 503 `outcome_unknown`: the sequencer failed after the request was sent to it.
pub fn outcome_unknown(id: RequestId, sequencer: &str, cause: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "outcome_unknown",
        format!(
            "the outcome of request {} is unknown (the sequencer {sequencer} did not answer: \
             {cause}); resubmit it with the same Idempotency-Key, on any node, to learn it \
             without running it twice",
            request_id_text(id)
        ),
    )
}

/// Who runs the application now, as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencerView {
    pub name: String,
    /// The store lease's term it holds.
    pub term: u64,
}

/// The sequencer this node forwards to; `None` while it knows none.
pub type SequencerWatch = Arc<watch::Sender<Option<SequencerView>>>;

/// The outcome a forwarded submission waits for.
pub type ForwardedOutcome = oneshot::Receiver<Result<OutcomeBody, ApiError>>;

/// A submission waiting to be gathered into a batch.
struct Waiting {
    event: ForwardedEvent,
    answer: oneshot::Sender<Result<OutcomeBody, ApiError>>,
}

/// What a forwarding node sends through.
struct Route {
    cluster: Arc<Cluster>,
    sequencer: SequencerWatch,
}

impl Route {
    /// The sequencer to forward to: never this node itself, which is the sequencer without a
    /// runtime only while it replaces it (nothing can be submitted then: `no_sequencer`).
    fn sequencer(&self) -> Option<SequencerView> {
        let known = self.sequencer.borrow().clone();
        known.filter(|view| view.name != self.cluster.node_name())
    }

    /// Forgets `gone` as the sequencer (unless another one was learnt meanwhile).
    fn forget(&self, gone: &SequencerView) {
        self.sequencer.send_if_modified(|current| {
            let forget = current.as_ref() == Some(gone);
            if forget {
                *current = None;
            }
            forget
        });
    }
}

/// Gathers this node's submissions into batches for the sequencer: a batch is sent when it
/// holds `FORWARD_BATCH_REQUESTS_MAX` submissions or `FORWARD_BATCH_BYTES_MAX` bytes of
/// events, or `wait` after its first submission arrived; several batches may be in flight.
pub struct Forwarder {
    queue: mpsc::Sender<Waiting>,
    route: Arc<Route>,
}

impl Forwarder {
    /// Starts the gathering task (it ends when the forwarder is dropped).
    pub fn start(cluster: Arc<Cluster>, sequencer: SequencerWatch, wait: Duration) -> Forwarder {
        let (queue, waiting) = mpsc::channel(limits::FORWARD_QUEUE_MAX);
        let route = Arc::new(Route { cluster, sequencer });
        tokio::spawn(gather(waiting, route.clone(), wait));
        Forwarder { queue, route }
    }

    /// Queues `event` for the next batch; 503 `overloaded` when too many are waiting.
    pub fn submit(&self, event: ForwardedEvent) -> Result<ForwardedOutcome, ApiError> {
        let (answer, outcome) = oneshot::channel();
        self.queue
            .try_send(Waiting { event, answer })
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many submissions waiting to be forwarded to the sequencer; retry later",
                )
            })?;
        Ok(outcome)
    }

    /// Runs query `name` on the sequencer (one link request; queries are not batched).
    pub fn query(&self, name: &str, body: &[u8]) -> QueryFuture {
        let route = self.route.clone();
        let message = encode_message(&LinkMessage::Query {
            name: name.to_string(),
            body: body.to_vec(),
        });
        Box::pin(async move {
            let sequencer = route.sequencer().ok_or_else(no_sequencer)?;
            let unavailable = |cause: String| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_sequencer",
                    format!(
                        "the sequencer {} did not answer the query ({cause}); retry, on any node",
                        sequencer.name
                    ),
                )
            };
            let reply = route.cluster.request(&sequencer.name, message).await;
            let reply = reply.map_err(|e| unavailable(e.to_string()))?;
            match decode::<LinkAnswer>(&reply).map_err(unavailable)? {
                LinkAnswer::Query(Ok(text)) => serde_json::from_str(&text)
                    .map_err(|e| internal(format!("the sequencer's answer is not JSON: {e}"))),
                LinkAnswer::Query(Err(error)) => Err(error.into_api()),
                LinkAnswer::NotSequencer => {
                    route.forget(&sequencer);
                    Err(no_sequencer())
                }
                other => Err(internal(format!(
                    "the sequencer answered a query with {other:?}"
                ))),
            }
        })
    }
}

/// Gathers waiting submissions into batches until the forwarder is dropped.
async fn gather(mut waiting: mpsc::Receiver<Waiting>, route: Arc<Route>, wait: Duration) {
    while let Some(first) = waiting.recv().await {
        let deadline = tokio::time::Instant::now() + wait;
        let mut bytes = first.event.payload.len();
        let mut batch = vec![first];
        while batch.len() < limits::FORWARD_BATCH_REQUESTS_MAX
            && bytes < limits::FORWARD_BATCH_BYTES_MAX
        {
            match tokio::time::timeout_at(deadline, waiting.recv()).await {
                Ok(Some(next)) => {
                    bytes += next.event.payload.len();
                    batch.push(next);
                }
                Ok(None) | Err(_) => break,
            }
        }
        tokio::spawn(send_batch(route.clone(), batch));
    }
}

/// Sends one batch to the sequencer and answers each submission from its reply: every
/// submission of a batch the sequencer did not answer gets `outcome_unknown`, never a guess.
async fn send_batch(route: Arc<Route>, batch: Vec<Waiting>) {
    let mut answers = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    for waiting in batch {
        answers.push((waiting.event.id(), waiting.answer));
        events.push(waiting.event);
    }
    let Some(sequencer) = route.sequencer() else {
        for (_, answer) in answers {
            let _ = answer.send(Err(no_sequencer()));
        }
        return;
    };
    let message = encode_message(&LinkMessage::Submit(events));
    let reply = route.cluster.request(&sequencer.name, message).await;
    let reply = reply
        .map_err(|e| e.to_string())
        .and_then(|bytes| decode::<LinkAnswer>(&bytes));
    match reply {
        Ok(LinkAnswer::Outcomes(outcomes)) if outcomes.len() == answers.len() => {
            for ((id, answer), outcome) in answers.into_iter().zip(outcomes) {
                let outcome = outcome.map_err(WireError::into_api);
                let _ = answer.send(outcome.and_then(|o| o.into_body(id)));
            }
        }
        Ok(LinkAnswer::NotSequencer) => {
            route.forget(&sequencer);
            for (_, answer) in answers {
                let _ = answer.send(Err(no_sequencer()));
            }
        }
        other => {
            let cause = match other {
                Err(cause) => cause,
                Ok(answer) => format!("it answered {answer:?}"),
            };
            for (id, answer) in answers {
                let _ = answer.send(Err(outcome_unknown(id, &sequencer.name, &cause)));
            }
        }
    }
}
