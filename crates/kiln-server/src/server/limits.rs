//! Request body limits. A body whose declared `Content-Length` is over its limit is refused
//! before any of it is read, so a client that sent `Expect: 100-continue` (kiln's does) reads
//! the 413 instead of meeting a connection closed under its upload. Bodies without a length
//! are still cut at the limit while they are read (`DefaultBodyLimit`, the upload's counter).

use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use kiln_api::MAX_JSON_BYTES;

use super::error::ApiError;
use kiln_api::uploads::ContextLimit;

const MIB: u64 = 1024 * 1024;

/// The body's declared length, if it declares one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The 413 for a JSON body over [`MAX_JSON_BYTES`].
pub fn json_too_large() -> ApiError {
    ApiError::TooLarge {
        what: "the request",
        limit: format!("{} MiB", MAX_JSON_BYTES as u64 / MIB),
    }
}

/// The 413 for an upload over `max_bytes` (`--max-upload-mb`).
pub fn upload_too_large(max_bytes: u64) -> ApiError {
    ApiError::TooLarge {
        what: "the upload",
        limit: format!("{} MiB (--max-upload-mb)", max_bytes / MIB),
    }
}

/// The 413 for an upload that unpacks to more than `limit` (`--max-context-mb`).
pub fn context_too_large(limit: ContextLimit) -> ApiError {
    ApiError::TooLarge {
        what: "the unpacked context",
        limit: format!("{} MiB (--max-context-mb)", limit.bytes / MIB),
    }
}

/// Refuses an upload that declares more than `max_bytes`.
pub fn check_upload(headers: &HeaderMap, max_bytes: u64) -> Result<(), ApiError> {
    match declared_length(headers) {
        Some(length) if length > max_bytes => Err(upload_too_large(max_bytes)),
        _ => Ok(()),
    }
}

/// Middleware for the JSON routes: refuses a body that declares more than
/// [`MAX_JSON_BYTES`].
pub async fn json_body(request: Request, next: Next) -> Response {
    match declared_length(request.headers()) {
        Some(length) if length > MAX_JSON_BYTES as u64 => json_too_large().into_response(),
        _ => next.run(request).await,
    }
}
