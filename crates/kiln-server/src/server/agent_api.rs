//! The agent protocol over HTTP (`/agent/...`, issue 12): thin handlers over the
//! [`Dispatcher`](super::dispatch::Dispatcher), which the embedded agent calls in-process.
//! Every route takes only an agent token (`auth::require_agent_token`), and the agent it names
//! is who leases: its pool and its name go into the claim.
//!
//! Status codes carry the protocol: 409 `LeaseLost` (the run was taken away: stop, write
//! nothing more), 416 `LogGap` (a log part past the stored end), 204 from a lease call that
//! found no run within its wait.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kiln_api::ErrorBody;
use kiln_api::agent::{
    AgentSession, Beat, Fence, Lease, LeaseRequest, LogAck, LogPart, MAX_LOG_PART, RunOutcome,
    StatusUpdate, StepReport, WatchReply, WatchRequest,
};
use kiln_api::status::RunStatus;
use kiln_task::run_id::RunId;

use super::dispatch::DispatchError;
use super::error::ApiError;
use super::state::AppState;
use crate::store::lease::Claimant;
use crate::store::{AgentRecord, StoreError};

/// The largest agent request body: a [`LogPart`] of [`MAX_LOG_PART`] bytes in base64, with room
/// for its JSON.
pub const MAX_AGENT_BODY: usize = MAX_LOG_PART * 3 / 2 + 64 * 1024;

impl From<DispatchError> for ApiError {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Store(e @ StoreError::StaleLease { .. }) => {
                ApiError::Conflict { code: "LeaseLost", message: e.to_string() }
            }
            DispatchError::Store(e @ StoreError::LogGap { .. }) => ApiError::Rejected {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                message: e.to_string(),
            },
            DispatchError::Store(e @ StoreError::InvalidTransition { .. }) => {
                ApiError::BadRequest(e.to_string())
            }
            DispatchError::Store(e) => e.into(),
            e @ DispatchError::MissingUpload(_) => {
                ApiError::Missing { code: "UploadNotFound", message: e.to_string() }
            }
        }
    }
}

/// A new process of the calling agent starts: what an earlier one held is ended (a run with
/// no step started is queued again).
#[utoipa::path(post, path = "/agent/sessions", tag = "agent", security(("agentToken" = [])),
    responses((status = 200, description = "The agent's earlier runs are settled", body = AgentSession),
        (status = 401, body = ErrorBody)))]
pub async fn start_session(
    State(state): State<AppState>,
    Extension(agent): Extension<AgentRecord>,
) -> Result<Json<AgentSession>, ApiError> {
    let message = format!("agent {} stopped responding during the run", agent.name);
    state.dispatch.start_session(&agent.name, &message).await?;
    Ok(Json(AgentSession { name: agent.name, pool: agent.pool }))
}

/// Lease the oldest queued run this agent may take, waiting up to `wait` seconds for one.
#[utoipa::path(post, path = "/agent/leases", tag = "agent", security(("agentToken" = [])), request_body = LeaseRequest,
    responses((status = 200, description = "A run, now held by the agent", body = Lease),
        (status = 204, description = "No run within the wait"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn lease(
    State(state): State<AppState>,
    Extension(agent): Extension<AgentRecord>,
    request: Result<Json<LeaseRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = request?;
    state.dispatch.agent_seen(&agent.name, &request).await?;
    let claimant = Claimant {
        name: agent.name.clone(),
        pool: agent.pool.clone(),
        platforms: request.platforms,
    };
    Ok(match state.dispatch.lease(&claimant, request.wait).await? {
        Some(lease) => Json(lease).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Extend the lease on a held run.
#[utoipa::path(post, path = "/agent/runs/{id}/heartbeat", tag = "agent", security(("agentToken" = [])), request_body = Fence,
    params(("id" = String, Path, description = "Run ID")),
    responses((status = 200, body = Beat), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Lease lost", body = ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<Fence>, JsonRejection>,
) -> Result<Json<Beat>, ApiError> {
    let Json(fence) = body?;
    Ok(Json(state.dispatch.heartbeat(&RunId::new(id), fence.epoch).await?))
}

/// A held run's steps start (`Running`).
#[utoipa::path(post, path = "/agent/runs/{id}/status", tag = "agent", security(("agentToken" = [])), request_body = StatusUpdate,
    params(("id" = String, Path, description = "Run ID")),
    responses((status = 200, body = Fence), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Lease lost", body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<StatusUpdate>, JsonRejection>,
) -> Result<Json<Fence>, ApiError> {
    let Json(update) = body?;
    if update.status != RunStatus::Running {
        return Err(ApiError::BadRequest(format!(
            "an agent sets status Running; {} comes with finish",
            update.status
        )));
    }
    state.dispatch.running(&RunId::new(id), update.epoch).await?;
    Ok(Json(Fence { epoch: update.epoch }))
}

/// Replace a held run's steps with the agent's report of all of them.
#[utoipa::path(post, path = "/agent/runs/{id}/steps", tag = "agent", security(("agentToken" = [])), request_body = StepReport,
    params(("id" = String, Path, description = "Run ID")),
    responses((status = 200, body = Fence), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Lease lost", body = ErrorBody)))]
pub async fn steps(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<StepReport>, JsonRejection>,
) -> Result<Json<Fence>, ApiError> {
    let Json(report) = body?;
    state.dispatch.report_steps(&RunId::new(id), &report).await?;
    Ok(Json(Fence { epoch: report.epoch }))
}

/// Store log bytes of a held run at their offset; answers the stored length.
#[utoipa::path(put, path = "/agent/runs/{id}/log", tag = "agent", security(("agentToken" = [])), request_body = LogPart,
    params(("id" = String, Path, description = "Run ID")),
    responses((status = 200, body = LogAck), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Lease lost", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 416, description = "The offset is past the stored log", body = ErrorBody)))]
pub async fn append_log(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<LogPart>, JsonRejection>,
) -> Result<Json<LogAck>, ApiError> {
    let Json(part) = body?;
    if part.data.len() > MAX_LOG_PART {
        return Err(ApiError::TooLarge {
            what: "the log part",
            limit: format!("{MAX_LOG_PART} bytes"),
        });
    }
    if part.times.windows(2).any(|w| w[0].offset > w[1].offset)
        || part.times.iter().any(|t| t.offset >= part.data.len() as u64)
    {
        return Err(ApiError::BadRequest(
            "log part times must be in ascending offset order, within the data".to_string(),
        ));
    }
    Ok(Json(state.dispatch.append_log(&RunId::new(id), &part).await?))
}

/// A held run ends: its status, error and results.
#[utoipa::path(post, path = "/agent/runs/{id}/finish", tag = "agent", security(("agentToken" = [])), request_body = RunOutcome,
    params(("id" = String, Path, description = "Run ID")),
    responses((status = 200, body = Fence), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "Lease lost", body = ErrorBody)))]
pub async fn finish(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<RunOutcome>, JsonRejection>,
) -> Result<Json<Fence>, ApiError> {
    let Json(outcome) = body?;
    if !outcome.status.is_terminal() {
        return Err(ApiError::BadRequest(format!(
            "finish needs a terminal status, not {}",
            outcome.status
        )));
    }
    let epoch = outcome.epoch;
    state.dispatch.finish(&RunId::new(id), outcome).await?;
    Ok(Json(Fence { epoch }))
}

/// Wait until one of the agent's held runs is cancelled or taken away.
#[utoipa::path(post, path = "/agent/watch", tag = "agent", security(("agentToken" = [])), request_body = WatchRequest,
    responses((status = 200, body = WatchReply), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn watch(
    State(state): State<AppState>,
    body: Result<Json<WatchRequest>, JsonRejection>,
) -> Result<Json<WatchReply>, ApiError> {
    let Json(request) = body?;
    Ok(Json(state.dispatch.watch(&request.runs, request.wait).await?))
}

/// The context archive of an upload, for the agent that runs it.
#[utoipa::path(get, path = "/agent/uploads/{id}", tag = "agent", security(("agentToken" = [])),
    params(("id" = String, Path, description = "Upload ID")),
    responses((status = 200, description = "The `.tar.gz`", content_type = "application/gzip"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let path = state.dispatch.upload_path(&id)?;
    let file = tokio::fs::File::open(&path).await.map_err(ApiError::internal)?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(([(header::CONTENT_TYPE, "application/gzip")], body).into_response())
}
