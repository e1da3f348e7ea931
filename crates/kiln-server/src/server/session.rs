//! Browser sessions (issue 15): the web app signs in once with an API token (`POST /session`)
//! and from then on is authenticated by an HttpOnly, SameSite=Strict cookie (Secure when the
//! server's public URL is HTTPS), so no script ever holds the token. The JSON API is the same
//! one the CLI uses: [`super::auth::require_token`] accepts the cookie wherever it accepts a
//! bearer token, through [`authenticate`] here.
//!
//! Cookies are sent by browsers on their own, so every state-changing request made with one
//! must prove it comes from the app ([`check_request`]): the session's CSRF token in the
//! `X-CSRF-Token` header (only the app, which read it from `GET /session`, knows it), and an
//! `Origin` (and `Sec-Fetch-Site`), when the browser sends them, of this server. Sign-in
//! checks the origin too, so another site cannot sign a browser into its own token.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Response};
use chrono::TimeDelta;
use kiln_api::{ErrorBody, Session, SignIn, TokenRole};
use subtle::ConstantTimeEq as _;

use super::error::ApiError;
use super::state::AppState;
use crate::store::TokenInfo;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "kiln_session";
/// The header the CSRF token travels in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts: a working day; then the app asks for the token again.
pub const SESSION_TTL: TimeDelta = TimeDelta::hours(12);

/// Sign in: a session for an API token, its ID set as the session cookie.
#[utoipa::path(post, path = "/session", tag = "meta", security(()), request_body = SignIn,
    responses(
        (status = 201, description = "Signed in; the session cookie is set", body = Session),
        (status = 401, description = "Not an API token", body = ErrorBody),
        (status = 403, description = "Sent from another site", body = ErrorBody)))]
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    same_origin(&headers)?;
    let Json(body) = body?;
    let token = state.store.verify_token(&body.token).await?.ok_or(ApiError::Unauthorized)?;
    let made = state.store.create_session(&token, SESSION_TTL).await?;
    let secure = state.settings.public_url.starts_with("https://");
    let cookie = cookie(&made.cookie, SESSION_TTL.num_seconds(), secure);
    let session = view(&token, made.csrf, made.expires_at);
    Ok((StatusCode::CREATED, AppendHeaders([(SET_COOKIE, cookie)]), Json(session)))
}

/// The session the request's cookie belongs to (the app reads its CSRF token here), or 204
/// when there is none: the app asks this on every load, and "not signed in" is an answer, not
/// an error.
#[utoipa::path(get, path = "/session", tag = "meta", security(()),
    responses((status = 200, description = "Signed in", body = Session),
        (status = 204, description = "No live session cookie: not signed in")))]
pub async fn get(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let Some(id) = session_cookie(&headers) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    Ok(match state.store.verify_session(id).await? {
        Some(s) => Json(view(&s.token, s.csrf, s.expires_at)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// Sign out: ends the cookie's session and clears the cookie.
#[utoipa::path(delete, path = "/session", tag = "meta",
    responses((status = 204, description = "Signed out"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(id) = session_cookie(&headers) {
        state.store.delete_session(id).await?;
    }
    let secure = state.settings.public_url.starts_with("https://");
    Ok((StatusCode::NO_CONTENT, AppendHeaders([(SET_COOKIE, cookie("", 0, secure))])))
}

/// The token a request's session cookie stands for; `None` without a cookie. A cookie that is not a live session is
/// [`ApiError::Unauthorized`]; a state-changing request that fails [`check_request`] is refused.
pub async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<TokenInfo>, ApiError> {
    let Some(id) = session_cookie(headers) else { return Ok(None) };
    let session = state.store.verify_session(id).await?.ok_or(ApiError::Unauthorized)?;
    check_request(method, headers, &session.csrf)?;
    Ok(Some(session.token))
}

/// What a request made with a session cookie must show: nothing for a read (GET, HEAD); for
/// anything else the session's CSRF token and a same-origin [`same_origin`].
pub fn check_request(method: &Method, headers: &HeaderMap, csrf: &str) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    same_origin(headers)?;
    let sent = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes).unwrap_or_default();
    if bool::from(sent.ct_eq(csrf.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "a request made with the session cookie needs the session's CSRF token in {CSRF_HEADER}"
        )))
    }
}

/// Refuses a request a browser says comes from another site: `Sec-Fetch-Site` other than
/// `same-origin` (or `none`, typed by the user), or an `Origin` whose host is not `Host`.
/// Clients that send neither (the CLI, curl) pass: they hold the token themselves.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let refuse = |why: String| ApiError::Forbidden(format!("cross-site request refused: {why}"));
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return Err(refuse(format!("Sec-Fetch-Site is {site}")));
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin.split_once("://").map(|(_, rest)| rest);
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        if authority.is_none() || authority != host {
            return Err(refuse(format!("Origin {origin} is not this server")));
        }
    }
    Ok(())
}

/// The session cookie's value, when the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value: the session ID for `max_age` seconds (0 clears it).
fn cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&cookie).expect("a session ID is a header value")
}

fn view(token: &TokenInfo, csrf: String, expiry_time: chrono::DateTime<chrono::Utc>) -> Session {
    let role = if token.is_admin { TokenRole::Admin } else { TokenRole::User };
    Session { name: token.name.clone(), role, csrf_token: csrf, expiry_time }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn reads_pass_and_writes_need_the_csrf_token_from_this_origin() {
        let host = ("host", "127.0.0.1:8080");
        assert!(check_request(&Method::GET, &headers(&[]), "c1").is_ok());
        assert!(check_request(&Method::POST, &headers(&[host]), "c1").is_err());
        assert!(
            check_request(&Method::POST, &headers(&[host, (CSRF_HEADER, "c2")]), "c1").is_err()
        );
        let good = [host, (CSRF_HEADER, "c1"), ("origin", "http://127.0.0.1:8080")];
        assert!(check_request(&Method::POST, &headers(&good), "c1").is_ok());
        let other = [host, (CSRF_HEADER, "c1"), ("origin", "http://evil.example")];
        assert!(check_request(&Method::DELETE, &headers(&other), "c1").is_err());
        let site = [host, (CSRF_HEADER, "c1"), ("sec-fetch-site", "cross-site")];
        assert!(check_request(&Method::POST, &headers(&site), "c1").is_err());
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_http_only_strict() {
        let h = headers(&[("cookie", "a=1; kiln_session=kses_x; b=2")]);
        assert_eq!(session_cookie(&h), Some("kses_x"));
        assert_eq!(session_cookie(&headers(&[("cookie", "kiln_sessionx=1")])), None);
        let set = cookie("kses_x", 60, true);
        assert_eq!(
            set.to_str().unwrap(),
            "kiln_session=kses_x; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
    }
}
