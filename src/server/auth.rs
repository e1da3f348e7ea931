//! Bearer-token authentication as a middleware layer, so no protected handler can forget it.
//! It runs before the handler and therefore before any request body is read: a rejected upload
//! is never stored. Every request verifies against the store (a hash lookup), so a deleted
//! token stops working at once; nothing is cached.

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::HeaderValue;
use axum::http::header::{AUTHORIZATION, CONNECTION};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::error::ApiError;
use super::state::AppState;
use crate::api::{TokenRole, WhoAmI};
use crate::store::TokenInfo;

/// The token of `Authorization: Bearer <token>`, if the header has that form.
pub fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Lets the request through only with a token the store issued, handing the handler the
/// token's [`TokenInfo`]. A refusal closes the connection: the request body was not read, so
/// the connection cannot carry another request.
pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let verified = match bearer_token(&request) {
        Some(token) => state.store.verify_token(token).await,
        None => Ok(None),
    };
    let error = match verified {
        Ok(Some(info)) => {
            request.extensions_mut().insert(info);
            return next.run(request).await;
        }
        Ok(None) => ApiError::Unauthorized,
        Err(e) => ApiError::from(e),
    };
    let mut response = error.into_response();
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Lets the request through only with an agent token ([`crate::store::agents`]), handing the
/// handler the agent's [`AgentRecord`]. API tokens are refused here, as agent tokens are
/// everywhere else: an agent can lease and report runs, and nothing more.
pub async fn require_agent_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let verified = match bearer_token(&request) {
        Some(token) => state.store.verify_agent_token(token).await,
        None => Ok(None),
    };
    let error = match verified {
        Ok(Some(agent)) => {
            request.extensions_mut().insert(agent);
            return next.run(request).await;
        }
        Ok(None) => ApiError::Unauthorized,
        Err(e) => ApiError::from(e),
    };
    let mut response = error.into_response();
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The token the request was made with (`kiln whoami`, and `kiln login`'s check).
#[utoipa::path(get, path = "/whoami", tag = "meta",
    responses((status = 200, description = "The token's name and role", body = WhoAmI),
        (status = 401, description = "No valid token", body = crate::api::ErrorBody)))]
pub async fn whoami(Extension(token): Extension<TokenInfo>) -> Json<WhoAmI> {
    let role = if token.is_admin { TokenRole::Admin } else { TokenRole::User };
    Json(WhoAmI { name: token.name, role })
}
