//! `POST /v1/batch`: many events in one HTTP request, each its own transaction. One round trip
//! and one JSON parse carry up to `BATCH_EVENTS_MAX` submissions, which is what lets a client
//! over HTTP keep up with an in-process one; the answer lists each event's outcome (or why it
//! was refused) in the order given.

use crate::api::{ApiError, ErrorBody, OutcomeBody, parse_idempotency_key};
use crate::engine::{Engine, EventRef, OutcomeFuture};
use crate::limits::BATCH_EVENTS_MAX;
use crate::state::ServerState;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use utoipa::ToSchema;

/// One event of a batch.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem<'a> {
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    partition: Option<u32>,
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(default, borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// One event of a batch, as the OpenAPI document describes it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchItemDoc {
    /// A service name from `GET /v1/services`.
    service: String,
    /// An event kind of that service.
    kind: String,
    /// The partition, for events without a routing key.
    partition: Option<u32>,
    /// The event's JSON, as `POST /v1/services/{service}/events/{kind}` takes it.
    #[schema(value_type = Object)]
    event: (),
    /// `<client>/<seq>`, as the `Idempotency-Key` header of a single submission.
    idempotency_key: Option<String>,
}

/// The answer for one event of a batch: its durable outcome, or the error that kept it from
/// being submitted (or from settling).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    Outcome(OutcomeBody),
    Error {
        /// The HTTP status a single submission would have got.
        status: u16,
        error: ErrorBody,
    },
}

impl From<ApiError> for BatchResult {
    fn from(e: ApiError) -> Self {
        BatchResult::Error {
            status: e.status.as_u16(),
            error: e.body,
        }
    }
}

/// Decodes the batch, submits every event that decodes, and waits for all their outcomes. A
/// body that is not a batch is refused whole (nothing submitted).
pub async fn run_batch(state: &ServerState, body: &[u8]) -> Result<Vec<BatchResult>, ApiError> {
    let items: Vec<BatchItem<'_>> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_payload(format!(
            "the body is not a batch (a JSON array of {{\"service\", \"kind\", \"event\"}}): {e}"
        ))
    })?;
    if items.len() > BATCH_EVENTS_MAX {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "batch_too_large",
            format!(
                "{} events in one batch; at most {BATCH_EVENTS_MAX}",
                items.len()
            ),
        ));
    }
    let engine = state.engine()?;
    // The outcome futures are lazy: joined, they are all submitted before any is awaited, so
    // the whole batch can land in one epoch.
    let submissions = items.iter().map(|item| {
        let outcome = submit_item(engine.as_ref(), item);
        async move {
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e) => return BatchResult::from(e),
            };
            let submitted = state.live.submitted();
            let outcome = outcome.await;
            state.live.settled(submitted);
            state.note_outcome(&outcome);
            outcome.map_or_else(BatchResult::from, BatchResult::Outcome)
        }
    });
    Ok(futures::future::join_all(submissions).await)
}

/// Checks and decodes one event; the outcome future submits it when first polled.
fn submit_item(engine: &dyn Engine, item: &BatchItem<'_>) -> Result<OutcomeFuture, ApiError> {
    let id = match &item.idempotency_key {
        Some(key) => parse_idempotency_key(key)?,
        None => engine.new_request_id(),
    };
    let event = EventRef {
        service: &item.service,
        kind: &item.kind,
        payload: item.event.get().as_bytes(),
        partition: item.partition,
    };
    engine.submit(event, id)
}
