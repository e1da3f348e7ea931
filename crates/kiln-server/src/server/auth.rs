//! Bearer-token authentication as middleware layers, so no protected handler can forget it:
//! API tokens for the API ([`require_token`], which takes a browser's session cookie in the
//! token's place, [`super::session`]; admin-only routes inside it [`require_admin`]),
//! agent tokens for the agent protocol ([`require_agent_token`]); neither passes the other.
//! It runs before the handler and therefore before any request body is read: a rejected upload
//! is never stored. Every request verifies against the store (a hash lookup), so a deleted
//! token stops working at once; nothing is cached.

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::HeaderValue;
use axum::http::header::{AUTHORIZATION, CONNECTION};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use kiln_api::agents::AgentWhoAmI;
use kiln_api::{DockerApiMode, TokenRole, WhoAmI};

use super::error::ApiError;
use super::state::AppState;
use crate::store::{AgentRecord, StoreResult, TokenInfo};

/// The token of `Authorization: Bearer <token>`, if the header has that form.
pub fn bearer_token(request: &Request) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Lets the request through only with an API token the store issued, as a bearer token or
/// signed in as a session cookie ([`super::session::authenticate`]), handing the handler the
/// token's [`TokenInfo`]. An agent token is refused here: it can do nothing but the agent
/// protocol ([`require_agent_token`]).
pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let verified = match bearer_token(&request).map(str::to_string) {
        Some(token) => state.store.verify_token(&token).await,
        None => {
            match super::session::authenticate(&state, request.method(), request.headers()).await {
                Ok(token) => Ok(token),
                Err(e) => return refuse(e),
            }
        }
    };
    admit(verified, ApiError::Unauthorized, request, next).await
}

/// Lets the request through only with an agent token ([`crate::store::agents`]), handing the
/// handler the agent's [`AgentRecord`]. The routes of the agent protocol (`/agent/...`) sit
/// behind this; API tokens, the admin's included, are refused there, as agent tokens are
/// everywhere else: an agent can lease and report runs, and nothing more.
pub async fn require_agent_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let verified = match bearer_token(&request) {
        Some(token) => state.store.verify_agent_token(token).await,
        None => Ok(None),
    };
    admit(verified, ApiError::UnauthorizedAgent, request, next).await
}

/// Inside [`require_token`]: only an admin token passes (agent management).
pub async fn require_admin(request: Request, next: Next) -> Response {
    match request.extensions().get::<TokenInfo>() {
        Some(token) if token.is_admin => next.run(request).await,
        Some(token) => refuse(ApiError::Forbidden(format!(
            "this needs an admin token; token {} is a user token",
            token.name
        ))),
        None => refuse(ApiError::Unauthorized),
    }
}

/// Only an admin token may give steps the engine's own socket (`dockerApi: host`, on a run, a
/// task, or a change to such a task): with it every step is root on the agent's machine, so
/// whoever chooses the code that runs with it must be trusted with that machine. `what` names
/// the request in the refusal.
pub fn may_use_docker_api(
    token: &TokenInfo,
    mode: Option<DockerApiMode>,
    what: &str,
) -> Result<(), ApiError> {
    if mode != Some(DockerApiMode::Host) || token.is_admin {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "{what} gives its steps the engine's own Docker socket (dockerApi: host), which only an \
         admin token may do; token {} is a user token",
        token.name
    )))
}

/// Runs the request with what verified it as an extension, or refuses it with `unknown`.
async fn admit<T: Clone + Send + Sync + 'static>(
    verified: StoreResult<Option<T>>,
    unknown: ApiError,
    mut request: Request,
    next: Next,
) -> Response {
    match verified {
        Ok(Some(who)) => {
            request.extensions_mut().insert(who);
            next.run(request).await
        }
        Ok(None) => refuse(unknown),
        Err(e) => refuse(ApiError::from(e)),
    }
}

/// A refusal closes the connection: the request body was not read, so the connection cannot
/// carry another request.
fn refuse(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The token the request was made with (`kiln whoami`, and `kiln login`'s check).
#[utoipa::path(get, path = "/whoami", tag = "meta",
    responses((status = 200, description = "The token's name and role", body = WhoAmI),
        (status = 401, description = "No valid token", body = kiln_api::ErrorBody)))]
pub async fn whoami(Extension(token): Extension<TokenInfo>) -> Json<WhoAmI> {
    let role = if token.is_admin { TokenRole::Admin } else { TokenRole::User };
    Json(WhoAmI { name: token.name, role })
}

/// The agent an agent token belongs to (`kiln agent run` checks its token with it).
#[utoipa::path(get, path = "/agent/whoami", tag = "agents", security(("agentToken" = [])),
    responses((status = 200, description = "The agent's name, pool and labels", body = AgentWhoAmI),
        (status = 401, description = "No valid agent token (API tokens are refused)", body = kiln_api::ErrorBody)))]
pub async fn agent_whoami(Extension(agent): Extension<AgentRecord>) -> Json<AgentWhoAmI> {
    Json(AgentWhoAmI::from(&agent))
}
