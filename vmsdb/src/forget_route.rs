//! `POST /v1/subjects/{subject}/forget`: live erasure of one subject's personal data on the
//! running application (`txn::Client::forget`; semantics in `docs/governance.md`).

use crate::api::{ApiError, ErrorBody};
use crate::state::ServerState;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// What the erasure did.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ForgetBody {
    pub subject: String,
    /// Rows of the subject whose personal fields were erased.
    pub rows_erased: usize,
    /// The epoch of the checkpoint holding the erased state; the log below it is gone.
    pub checkpoint_epoch: u64,
}

impl From<txn::erasure::ForgetReport> for ForgetBody {
    fn from(report: txn::erasure::ForgetReport) -> Self {
        ForgetBody {
            subject: report.subject,
            rows_erased: report.rows_erased,
            checkpoint_epoch: report.checkpoint_epoch,
        }
    }
}

/// Erases a subject's personal fields (`#[pii]`, `#[category(..)]`) on the running
/// application and answers once no file of the data directory holds them: the erasure is
/// logged, checkpointed, the log below it truncated and the store's files rewritten. Other
/// requests wait meanwhile; history before the erasure is gone.
#[utoipa::path(post, path = "/v1/subjects/{subject}/forget", tag = "governance",
    params(("subject" = String, Path, description = "Whose data: a row's subject (for the marketplace, the customer id)", example = "7")),
    responses(
        (status = 200, description = "Erased; the bytes are in no file of the data directory", body = ForgetBody),
        (status = 409, description = "This runtime cannot erase live (`forget_refused`: a store that cannot rewrite its files, a bounded history retention, a cluster); nothing was erased", body = ErrorBody),
        (status = 503, description = "Not ready, stopped or storage failed", body = ErrorBody),
    ))]
pub(crate) async fn forget_subject(
    State(state): State<Arc<ServerState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<ForgetBody>, ApiError> {
    let Path(subject) = path.map_err(|e| ApiError::bad_payload(e.body_text()))?;
    let report = state.engine()?.forget(&subject).await;
    Ok(Json(report.inspect_err(|e| state.note_error(e))?.into()))
}
