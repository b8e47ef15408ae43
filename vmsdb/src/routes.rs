//! The HTTP routes, each documented with `#[utoipa::path]`, and the router that puts them
//! behind the auth, body-size, concurrency and timeout layers. The OpenAPI document is built
//! from the same registration (`utoipa_axum::routes!`), so it lists every route.

use crate::api::{
    AcceptedBody, ApiError, ErrorBody, HealthBody, OutcomeBody, RequestStatusBody, ServicesBody,
    parse_idempotency_key, request_id_text,
};
use crate::batch::{BatchItemDoc, BatchResult, run_batch};
use crate::console;
use crate::engine::EventRef;
use crate::metrics::{self, ServerGauges};
use crate::state::{Phase, ServerState};
use crate::stats::StatsBody;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use txn::RequestId;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type Shared = State<Arc<ServerState>>;

/// The document's fixed parts; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "vmsdb", description = "An application of transactional services over HTTP/JSON. \
        Errors are {\"code\", \"message\"}; with a token configured every route but /health and \
        /ready needs `Authorization: Bearer <token>`."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Query parameters of a submission.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubmitParams {
    /// The partition, for events without a routing key (e.g. ycsb's `Load`).
    partition: Option<u32>,
    /// `false`: answer 202 with the request id at once; look the outcome up with
    /// `GET /v1/requests/{client}/{seq}`. Default `true`: wait for the durable outcome.
    wait: Option<bool>,
}

/// Submits an event and (by default) waits for its durable outcome.
#[utoipa::path(post, path = "/v1/services/{service}/events/{kind}", tag = "events",
    params(
        ("service" = String, Path, description = "A service name from GET /v1/services", example = "accounts"),
        ("kind" = String, Path, description = "An event kind of that service", example = "Deposit"),
        SubmitParams,
        ("Idempotency-Key" = Option<String>, Header, description = "`<client>/<seq>` (decimal, client below 2^63): a resubmission with the same key gets the first outcome and never runs twice"),
    ),
    request_body(content = Object, description = "The event's JSON", content_type = "application/json",
        example = json!({"account": 1, "entry": 1, "amount": 100})),
    responses(
        (status = 200, description = "The durable outcome (committed or aborted)", body = OutcomeBody),
        (status = 202, description = "Accepted (`wait=false`)", body = AcceptedBody),
        (status = 400, description = "Malformed JSON, wrong payload, bad partition or key", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "An internal event: only handlers may emit it", body = ErrorBody),
        (status = 404, description = "Unknown service or event kind", body = ErrorBody),
        (status = 409, description = "The Idempotency-Key was used for a different request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Not ready, overloaded, timed out, stopped, storage failed or outcome unknown", body = ErrorBody),
    ))]
async fn submit_event(
    State(state): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<SubmitParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path((service, kind)) = path.map_err(|e| ApiError::bad_payload(e.body_text()))?;
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let body = body.map_err(body_error)?;
    let engine = state.engine()?;
    let id = match headers.get("idempotency-key") {
        Some(value) => parse_idempotency_key(value.to_str().unwrap_or(""))?,
        None => engine.new_request_id(),
    };
    let event = EventRef {
        service: &service,
        kind: &kind,
        payload: &body,
        partition: params.partition,
    };
    if params.wait == Some(false) {
        return submit_in_background(&state, event, id);
    }
    let outcome = engine.submit(event, id)?;
    let submitted = state.live.submitted();
    let outcome = outcome.await;
    state.live.settled(submitted);
    state.note_outcome(&outcome);
    let outcome = outcome?;
    Ok(Json(outcome).into_response())
}

/// A fire-and-forget submission: checked now, its outcome recorded in the status table.
fn submit_in_background(
    state: &Arc<ServerState>,
    event: EventRef<'_>,
    id: RequestId,
) -> Result<Response, ApiError> {
    let permit = state.pending.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!("{} fire-and-forget submissions are pending already (pending_submissions_max); retry later", state.limits.pending_submissions_max),
        )
    })?;
    let outcome = state.engine()?.submit(event, id)?;
    state.status.pending(id);
    let task_state = state.clone();
    tokio::spawn(async move {
        let submitted = task_state.live.submitted();
        let result = outcome.await;
        task_state.live.settled(submitted);
        task_state.note_outcome(&result);
        task_state.status.settle(id, result.map_err(|e| e.body));
        drop(permit);
    });
    let request_id = request_id_text(id);
    let body = AcceptedBody {
        status_url: format!("/v1/requests/{request_id}"),
        request_id,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Submits many events, each its own transaction, and answers every outcome in order.
#[utoipa::path(post, path = "/v1/batch", tag = "events",
    request_body(content = Vec<BatchItemDoc>, description = "The events; at most 4096", content_type = "application/json"),
    responses(
        (status = 200, description = "Per event, in order: its durable outcome, or `{\"status\", \"error\"}` if it was refused or failed", body = Vec<BatchResult>),
        (status = 400, description = "Not a batch (nothing was submitted), or too many events", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "Not ready, overloaded or timed out", body = ErrorBody),
    ))]
async fn submit_batch(
    State(state): Shared,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Vec<BatchResult>>, ApiError> {
    let body = body.map_err(body_error)?;
    Ok(Json(run_batch(&state, &body).await?))
}

/// Live statistics: throughput history, latency percentiles, aborts, epochs, queues, recovery
/// (what the console at `/` shows).
#[utoipa::path(get, path = "/v1/stats", tag = "operations",
    responses((status = 200, body = StatsBody), (status = 401, body = ErrorBody)))]
async fn get_stats(State(state): Shared) -> Json<StatsBody> {
    Json(StatsBody::collect(&state).await)
}

/// The live console: an HTML page polling `/v1/stats` (it holds no data, so it needs no
/// token; give the token as `?token=` or in its form).
#[utoipa::path(get, path = "/", tag = "operations", security(()),
    params(("token" = Option<String>, Query, description = "The bearer token the page sends with its polls")),
    responses((status = 200, description = "The console page", body = String, content_type = "text/html")))]
async fn console_page() -> Html<String> {
    Html(console::page().into_string())
}

/// Where a fire-and-forget submission stands.
#[utoipa::path(get, path = "/v1/requests/{client}/{seq}", tag = "events",
    params(("client" = u64, Path, description = "The request id's client number"),
           ("seq" = u64, Path, description = "The request id's sequence number")),
    responses(
        (status = 200, description = "Pending, committed, aborted or failed", body = RequestStatusBody),
        (status = 400, description = "The client or sequence number is not a decimal u64", body = ErrorBody),
        (status = 404, description = "Not a fire-and-forget request the table still holds", body = ErrorBody),
    ))]
async fn request_status(
    State(state): Shared,
    path: Result<Path<(u64, u64)>, PathRejection>,
) -> Result<Json<RequestStatusBody>, ApiError> {
    let Path((client, seq)) =
        path.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request_id", e.body_text()))?;
    let id = RequestId { client, seq };
    state.status.get(id).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_request",
            format!("no fire-and-forget request {client}/{seq} in the status table (never submitted with wait=false, or forgotten: resubmit it with its Idempotency-Key to get its outcome)"),
        )
    })
}

/// The services, their partitions and event kinds, and the named queries.
#[utoipa::path(get, path = "/v1/services", tag = "application",
    responses((status = 200, body = ServicesBody), (status = 503, body = ErrorBody)))]
async fn list_services(State(state): Shared) -> Result<Json<ServicesBody>, ApiError> {
    let engine = state.engine()?;
    Ok(Json(ServicesBody {
        app: engine.app_name(),
        services: engine.services(),
        queries: engine.queries().to_vec(),
    }))
}

/// Runs a named query of the application at one consistent snapshot.
#[utoipa::path(post, path = "/v1/queries/{name}", tag = "application",
    params(("name" = String, Path, description = "A query name from GET /v1/services", example = "balance")),
    request_body(content = Object, description = "The query's parameters (see its example)", content_type = "application/json"),
    responses(
        (status = 200, description = "The query's answer", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ))]
async fn run_query(
    State(state): Shared,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::bad_payload(e.body_text()))?;
    let body = body.map_err(body_error)?;
    let answer = state.engine()?.query(&name, &body)?.await;
    Ok(Json(answer.inspect_err(|e| state.note_error(e))?))
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "operations", security(()),
    responses((status = 200, body = HealthBody)))]
async fn health() -> Json<HealthBody> {
    Json(HealthBody { status: "ok" })
}

/// The runtime has recovered and accepts requests (503 while recovering, shutting down, or
/// after the store failed).
#[utoipa::path(get, path = "/ready", tag = "operations", security(()),
    responses((status = 200, body = HealthBody), (status = 503, body = HealthBody)))]
async fn ready(State(state): Shared) -> (StatusCode, Json<HealthBody>) {
    let phase = state.phase();
    let status = if phase == Phase::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(HealthBody {
            status: phase.name(),
        }),
    )
}

/// Counters and gauges in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
async fn get_metrics(State(state): Shared) -> Response {
    let engine = state.engine_if_started();
    let gauges = ServerGauges {
        ready: state.phase() == Phase::Ready,
        status_table_entries: state.status.len(),
        pending_submissions: state.pending_submissions(),
        in_flight: state.live.in_flight(),
        latency: state.live.latency(),
    };
    let conflicts = match engine {
        Some(e) => e.conflict_stats().await,
        None => None,
    };
    let text = metrics::render(
        engine.and_then(|e| e.stats()),
        engine.map(|e| e.recovery()),
        gauges,
        &state.aborts(),
        conflicts.as_ref(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", body = Object)))]
async fn openapi_json(State(state): Shared) -> Response {
    let text = state.openapi_json.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// Refuses a request without the configured bearer token, before any handler runs. The token
/// is compared in constant time.
pub(crate) async fn require_token(State(state): Shared, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let error = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this route needs `Authorization: Bearer <token>` with the server's token",
            );
            return ([(header::WWW_AUTHENTICATE, "Bearer")], error).into_response();
        }
    }
    next.run(request).await
}

/// The error for a body that could not be read: too large (413) or cut off / too slow.
pub(crate) fn body_error(rejection: BytesRejection) -> ApiError {
    if caused_by_body_timeout(&rejection) {
        let message = "the request body did not arrive within body_read_timeout";
        return ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message);
    }
    let status = rejection.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        _ => "bad_body",
    };
    ApiError::new(status, code, rejection.body_text())
}

/// Whether reading the body failed because the client was slower than `body_read_timeout`.
fn caused_by_body_timeout(rejection: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

async fn unknown_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_route",
        "no such route (GET /openapi.json lists them)",
    )
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method (GET /openapi.json lists them)",
    )
}

/// The routes with their handlers and the OpenAPI document describing them. Layers that guard
/// resources (body size, concurrency, timeouts) are added by `server.rs`.
pub fn router(state: Arc<ServerState>) -> (Router, utoipa::openapi::OpenApi) {
    let protected = OpenApiRouter::new()
        .routes(routes!(submit_event))
        .routes(routes!(submit_batch))
        .routes(routes!(get_stats))
        .routes(routes!(request_status))
        .routes(routes!(list_services))
        .routes(routes!(run_query))
        .routes(routes!(crate::forget_route::forget_subject))
        .routes(routes!(get_metrics))
        .routes(routes!(openapi_json))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    let open = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(console_page))
        .routes(routes!(ready));
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(protected)
        .merge(open)
        .fallback(unknown_route)
        .with_state(state.clone())
        .split_for_parts();
    let router = router.method_not_allowed_fallback(wrong_method);
    let _ = state
        .openapi_json
        .set(openapi.to_pretty_json().unwrap_or_default());
    (router, openapi)
}
