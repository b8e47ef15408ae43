//! The JSON bodies the API sends and receives, and its one error type: every error is
//! `{"code": "<machine_code>", "message": ".."}` with a fitting HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use txn::{AbortReason, IngressError, Outcome, RequestId, TxnError};
use utoipa::ToSchema;

/// An error answer: a stable machine-readable `code` and a message for people.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, snake_case: `bad_json`, `bad_payload`, `unknown_service`, `unknown_event`,
    /// `unknown_query`, `unknown_request`, `internal_event`, `request_id_reused`,
    /// `body_too_large`, `unauthorized`, `overloaded`, `timeout`, `not_ready`, `stopped`,
    /// `storage_failed`, `outcome_unknown`, `no_sequencer`, ...
    #[schema(example = "unknown_service")]
    pub code: &'static str,
    /// What was wrong, for people.
    #[schema(example = "no service named \"acounts\"")]
    pub message: String,
}

/// An error the API answers with.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// The store failed (the server then stops reporting ready).
    pub storage_failed: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
            },
            storage_failed: false,
        }
    }

    /// 400: the body is not the JSON the route expects.
    pub fn bad_payload(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_payload", message)
    }

    /// 503: the runtime is still recovering, or already shutting down.
    pub fn not_ready() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the runtime is recovering or shutting down; retry later (GET /ready says when)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

impl From<IngressError> for ApiError {
    fn from(e: IngressError) -> Self {
        let (status, code) = match &e {
            IngressError::UnknownService(_) => (StatusCode::NOT_FOUND, "unknown_service"),
            IngressError::UnknownEvent { .. } => (StatusCode::NOT_FOUND, "unknown_event"),
            IngressError::BadPayload { .. } => (StatusCode::BAD_REQUEST, "bad_payload"),
            IngressError::NeedsPartition { .. } => (StatusCode::BAD_REQUEST, "needs_partition"),
            IngressError::UnknownPartition { .. } => (StatusCode::BAD_REQUEST, "unknown_partition"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<TxnError> for ApiError {
    fn from(e: TxnError) -> Self {
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        let (status, code) = match &e {
            TxnError::RequestIdReused { .. } => (StatusCode::CONFLICT, "request_id_reused"),
            TxnError::InternalEvent { .. } => (StatusCode::FORBIDDEN, "internal_event"),
            TxnError::RequestTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
            }
            TxnError::UnencodableEvent { .. } => (StatusCode::BAD_REQUEST, "bad_payload"),
            TxnError::UnknownService(_) => (StatusCode::NOT_FOUND, "unknown_service"),
            TxnError::UnknownPartition { .. } => (StatusCode::BAD_REQUEST, "unknown_partition"),
            TxnError::Stopped => (unavailable, "stopped"),
            TxnError::Storage(_) => (unavailable, "storage_failed"),
            TxnError::OutcomeUnknown { .. } => (unavailable, "outcome_unknown"),
            TxnError::ForgetRefused { .. } => (StatusCode::CONFLICT, "forget_refused"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let storage_failed = match &e {
            TxnError::Storage(_) => true,
            TxnError::OutcomeUnknown { cause, .. } => matches!(**cause, TxnError::Storage(_)),
            _ => false,
        };
        ApiError {
            storage_failed,
            ..ApiError::new(status, code, e.to_string())
        }
    }
}

/// Formats a request id the way the API shows it: `<client>/<seq>`, both decimal.
pub fn request_id_text(id: RequestId) -> String {
    format!("{}/{}", id.client, id.seq)
}

/// Parses an `Idempotency-Key` header, `<client>/<seq>` (decimal), into a request id. The
/// client number must be below 2^63: the top bit marks ids the server generates.
pub fn parse_idempotency_key(text: &str) -> Result<RequestId, ApiError> {
    let bad = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_idempotency_key",
            format!(
                "Idempotency-Key {text:?} {why}; expected <client>/<seq>, two decimal numbers, client below 2^63"
            ),
        )
    };
    let (client, seq) = text.split_once('/').ok_or_else(|| bad("has no '/'"))?;
    let client: u64 = client
        .trim()
        .parse()
        .map_err(|_| bad("has no valid client number"))?;
    let seq: u64 = seq
        .trim()
        .parse()
        .map_err(|_| bad("has no valid sequence number"))?;
    if client & RequestId::GENERATED_CLIENT_BIT != 0 {
        return Err(bad("uses a client number reserved for generated ids"));
    }
    Ok(RequestId { client, seq })
}

/// Why a transaction aborted, as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AbortBody {
    /// The service that aborted it (empty when the reason names none).
    pub service: String,
    /// Stable: the business kind (`insufficient_balance`) or the category (`constraint`,
    /// `limit_steps`, ...).
    pub kind: String,
    pub message: String,
}

impl From<&AbortReason> for AbortBody {
    fn from(reason: &AbortReason) -> Self {
        match reason {
            AbortReason::User {
                service,
                kind,
                message,
            } => AbortBody {
                service: service.clone(),
                kind: kind.clone(),
                message: message.clone(),
            },
            other => AbortBody {
                service: other.service().unwrap_or_default().to_string(),
                kind: other.category().to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// The durable outcome of a submitted event.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OutcomeBody {
    /// `<client>/<seq>`: the `Idempotency-Key` given, or the id the server generated.
    #[schema(example = "42/7")]
    pub request_id: String,
    /// The transaction id it ran under (epoch << 32 | position).
    pub tid: u64,
    pub committed: bool,
    /// What the transaction returned (present when committed; `null` when it set nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
    /// Why it aborted (present when not committed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortBody>,
}

impl OutcomeBody {
    /// The API's view of `outcome` of request `id`.
    pub fn new<O: Serialize>(id: RequestId, outcome: &Outcome<O>) -> Result<Self, ApiError> {
        let (output, abort) = match &outcome.result {
            Ok(output) => {
                let value = serde_json::to_value(output).map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        format!("the output does not convert to JSON: {e}"),
                    )
                })?;
                (Some(value), None)
            }
            Err(reason) => (None, Some(AbortBody::from(reason))),
        };
        Ok(OutcomeBody {
            request_id: request_id_text(id),
            tid: outcome.tid.0,
            committed: outcome.committed(),
            output,
            abort,
        })
    }
}

/// The answer to a fire-and-forget submission (`?wait=false`): its id, to look it up with
/// `GET /v1/requests/{client}/{seq}`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AcceptedBody {
    #[schema(example = "42/7")]
    pub request_id: String,
    /// Where its status is: `/v1/requests/<client>/<seq>`.
    pub status_url: String,
}

/// Where a fire-and-forget request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Not settled yet.
    Pending,
    Committed,
    Aborted,
    /// It got no outcome: `error` says why (e.g. `outcome_unknown`; resubmitting with the same
    /// `Idempotency-Key` is safe).
    Failed,
}

/// The status of a fire-and-forget request.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RequestStatusBody {
    pub request_id: String,
    pub state: RequestState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<OutcomeBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// One event type a service takes.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventKindBody {
    /// The name to use in `POST /v1/services/{service}/events/{kind}`.
    pub kind: &'static str,
    /// Only handlers may emit it: submitting it is refused (403 `internal_event`).
    pub internal: bool,
}

/// One service of the application.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ServiceBody {
    pub name: String,
    pub partitions: u32,
    pub events: Vec<EventKindBody>,
}

/// The application's services and queries.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ServicesBody {
    /// The served application (`ledger`, `ycsb`).
    pub app: &'static str,
    pub services: Vec<ServiceBody>,
    /// The named queries of `POST /v1/queries/{name}`.
    pub queries: Vec<QueryInfo>,
}

/// A named query of the served application.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct QueryInfo {
    pub name: &'static str,
    pub description: &'static str,
    /// An example body.
    pub example: &'static str,
}

/// `GET /health` and `GET /ready`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok`, or why not ready: `recovering`, `shutting_down`, `storage_failed`,
    /// `start_failed`.
    pub status: &'static str,
}
