//! The API's one error type. Every failure a handler can meet becomes an [`ApiError`], and every
//! `ApiError` answers as JSON [`ErrorBody`] (`{"error": {"code", "message", "details"}}`) with a
//! fitting status and a PascalCase code, so clients parse one shape and handlers never build
//! responses by hand. Causes of 500s are logged here, once.

use axum::Json;
use axum::extract::Request;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kiln_api::status::RunStatus;
use kiln_api::{ErrorBody, ErrorDetail};
use kiln_task::diagnostic::Diagnostic;
use kiln_task::run_id::RunId;

use crate::store::StoreError;

/// What the 401 says (the client tells the user how to fix it).
pub const UNAUTHORIZED_MESSAGE: &str =
    "missing or invalid API token (set KILN_TOKEN or run `kiln login`)";

/// What a 500 says; the cause is in the server's log.
pub const INTERNAL_MESSAGE: &str = "internal error (the server's log has the cause)";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{UNAUTHORIZED_MESSAGE}")]
    Unauthorized,
    /// An agent route without a valid agent token.
    #[error(
        "missing or invalid agent token (`kiln agent create` prints one; `kiln agent run --token-file` reads it)"
    )]
    UnauthorizedAgent,
    /// A valid token that may not do this (a user token on an admin route).
    #[error("{0}")]
    Forbidden(String),
    /// A webhook delivery whose signature does not verify.
    #[error("{0}")]
    BadSignature(String),
    /// Bad input: a field out of range, an unknown upload, a request that is not JSON.
    #[error("{0}")]
    BadRequest(String),
    /// A task file sent with the request does not validate; nothing was queued.
    #[error("{name}: invalid task file ({errors} error{})", if *.errors == 1 { "" } else { "s" })]
    InvalidTask { name: String, errors: usize, diagnostics: Vec<Diagnostic> },
    #[error("run {0} not found")]
    NotFound(RunId),
    /// A task, a timer or another named thing does not exist; `code` names what
    /// (`TaskNotFound`, `TimerNotFound`, `AgentNotFound`).
    #[error("{message}")]
    Missing { code: &'static str, message: String },
    /// The name is taken (`TaskExists`, `TimerExists`, `AgentExists`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("run {run} already finished with status {status}")]
    AlreadyFinished { run: RunId, status: RunStatus },
    /// A body over a limit: `what` names the body and `limit` the server's setting.
    #[error("{what} is larger than the server's limit of {limit}")]
    TooLarge { what: &'static str, limit: String },
    /// An extractor's rejection that keeps its own status (e.g. 413 for an oversized JSON body).
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    /// A log `Range` that starts at or past the stored end (416).
    #[error("the range starts past the log's end ({total} bytes)")]
    UnsatisfiableRange { total: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized | ApiError::UnauthorizedAgent | ApiError::BadSignature(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::BadRequest(_) | ApiError::InvalidTask { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::Missing { .. } => StatusCode::NOT_FOUND,
            ApiError::AlreadyFinished { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Rejected { status, .. } => *status,
            ApiError::UnsatisfiableRange { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer's PascalCase `code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized | ApiError::UnauthorizedAgent => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::BadSignature(_) => "InvalidSignature",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::InvalidTask { .. } => "InvalidTaskFile",
            ApiError::NotFound(_) => "RunNotFound",
            ApiError::Missing { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::AlreadyFinished { .. } => "RunAlreadyFinished",
            ApiError::TooLarge { .. } => "PayloadTooLarge",
            ApiError::Rejected { status, .. } => match *status {
                StatusCode::PAYLOAD_TOO_LARGE => "PayloadTooLarge",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
                StatusCode::NOT_FOUND => "NotFound",
                StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
                StatusCode::RANGE_NOT_SATISFIABLE => "LogGap",
                _ => "BadRequest",
            },
            ApiError::UnsatisfiableRange { .. } => "RangeNotSatisfiable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// A 500 whose cause is `e`.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(run) => ApiError::NotFound(run),
            StoreError::AlreadyFinished { run, status } => {
                ApiError::AlreadyFinished { run, status }
            }
            e @ StoreError::TaskNotFound(_) => {
                ApiError::Missing { code: "TaskNotFound", message: e.to_string() }
            }
            e @ StoreError::TimerNotFound { .. } => {
                ApiError::Missing { code: "TimerNotFound", message: e.to_string() }
            }
            e @ StoreError::AgentNotFound(_) => {
                ApiError::Missing { code: "AgentNotFound", message: e.to_string() }
            }
            e @ StoreError::AgentExists(_) => {
                ApiError::Conflict { code: "AgentExists", message: e.to_string() }
            }
            e @ StoreError::AgentEmbedded { .. } => {
                ApiError::Conflict { code: "AgentEmbedded", message: e.to_string() }
            }
            e @ StoreError::TaskExists(_) => {
                ApiError::Conflict { code: "TaskExists", message: e.to_string() }
            }
            e @ StoreError::TimerExists { .. } => {
                ApiError::Conflict { code: "TimerExists", message: e.to_string() }
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // A body of the wrong shape is bad input like any other: 400, not axum's 422.
        let status = match r.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            status => status,
        };
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return super::limits::json_too_large();
        }
        let message = r.body_text();
        if status.is_server_error() {
            ApiError::Internal(message)
        } else {
            ApiError::Rejected { status, message }
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A 500's cause (a database error, a file under the data directory) is the operator's
        // to read, not the client's: the answer says only where to look.
        let code = self.code().to_string();
        let message = if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
            INTERNAL_MESSAGE.to_string()
        } else {
            self.to_string()
        };
        let details = match self {
            ApiError::InvalidTask { diagnostics, .. } => diagnostics,
            _ => Vec::new(),
        };
        (status, Json(ErrorBody { error: ErrorDetail { code, message, details } })).into_response()
    }
}

/// How much of a non-JSON error body is kept as the message.
const REWRITTEN_BODY_LIMIT: usize = 4096;

/// Rewrites an error answer that did not come from an [`ApiError`] (axum's 405, a rejection
/// such as a body over the limit for `Bytes`) into one, so every error has the JSON shape.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, REWRITTEN_BODY_LIMIT).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let mut rewritten = ApiError::Rejected { status, message }.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name, value.clone());
        }
    }
    rewritten
}
