//! The web app (issue 15): `web/`'s build, embedded at compile time (`build.rs` writes the
//! table of files), served from this binary. `/` and every `/ui/…` path answer the app's
//! `index.html` (the app routes by path, e.g. `/ui/runs/ka1`, the run page's old address);
//! `/assets/…` are its content-hashed scripts and styles, cached for good.
//!
//! The HTML holds no data: the app signs in ([`super::session`]) and reads the same JSON API as
//! the CLI. Its policy ([`APP_POLICY`]) allows scripts and styles from this server only (no
//! inline script, no `eval`), requests to this server only, and no framing.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

mod built {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// The app's Content-Security-Policy.
pub const APP_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The embedded file at URL path `path`.
fn asset(path: &str) -> Option<&'static [u8]> {
    built::ASSETS.iter().find(|(p, _)| *p == path).map(|(_, bytes)| *bytes)
}

/// A file's type by its extension (the app's build makes only these).
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The app (its `index.html`).
#[utoipa::path(get, path = "/", tag = "meta", security(()),
    responses((status = 200, description = "The web app (HTML; it signs in and reads the API)", body = String, content_type = "text/html")))]
pub async fn index() -> Response {
    page()
}

/// A page of the app: `/ui/runs/{id}`, `/ui/tasks`, `/ui/tasks/{name}`, `/ui/agents`.
#[utoipa::path(get, path = "/ui/{page}", tag = "meta", security(()),
    params(("page" = String, Path, description = "The app's path, e.g. runs/ka1")),
    responses((status = 200, description = "The web app (HTML; it signs in and reads the API)", body = String, content_type = "text/html")))]
pub async fn ui(Path(_page): Path<String>) -> Response {
    page()
}

/// A built script or style (content-hashed name: cached for a year).
#[utoipa::path(get, path = "/assets/{file}", tag = "meta", security(()),
    params(("file" = String, Path, description = "A file of the app's build")),
    responses((status = 200, description = "The file", body = String, content_type = "text/javascript"),
        (status = 404, body = kiln_api::ErrorBody)))]
pub async fn assets(Path(file): Path<String>) -> Result<Response, ApiError> {
    let path = format!("/assets/{file}");
    let bytes = asset(&path).ok_or_else(|| ApiError::Rejected {
        status: StatusCode::NOT_FOUND,
        message: format!("no such file: {path}"),
    })?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type(&path))),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
    ];
    Ok((headers, bytes).into_response())
}

fn page() -> Response {
    let html = asset("/index.html").expect("build.rs refuses a build without index.html");
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type("/index.html"))),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(APP_POLICY)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, html).into_response()
}
