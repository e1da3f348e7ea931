//! The agent registry over HTTP (issue 12; `kiln agent create|list|show|update|delete`,
//! `kiln agent-pool list`), for admin tokens only ([`super::auth::require_admin`]). Handlers
//! check names and labels ([`crate::agent_def`]) and call the store; a new agent's token is in
//! the create answer and nowhere else. Deleting an agent ends the runs it holds, and their
//! followers are told.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use kiln_api::agents::{Agent, AgentPool, CreateAgent, CreatedAgent, UpdateAgent};
use kiln_api::{ErrorBody, List};

use super::error::ApiError;
use super::state::AppState;
use crate::agent_def::{self, AgentDefError};
use crate::store::AgentUpdate;

impl From<AgentDefError> for ApiError {
    fn from(e: AgentDefError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

/// Register an agent; the answer carries its token, shown this once.
#[utoipa::path(post, path = "/agents", tag = "agents", request_body = CreateAgent,
    responses((status = 201, body = CreatedAgent), (status = 400, body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateAgent>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedAgent>), ApiError> {
    let Json(create) = body?;
    agent_def::check_name(&create.name)?;
    create.pool.as_deref().map(agent_def::check_pool).transpose()?;
    agent_def::check_labels(&create.labels)?;
    let (record, token) =
        state.store.create_agent(&create.name, create.pool.as_deref(), &create.labels).await?;
    Ok((StatusCode::CREATED, Json(CreatedAgent { agent: Agent::from(&record), token })))
}

/// List agents, by name.
#[utoipa::path(get, path = "/agents", tag = "agents",
    responses((status = 200, body = List<Agent>),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<List<Agent>>, ApiError> {
    let agents = state.store.list_agents().await?;
    Ok(Json(List::all(agents.iter().map(Agent::from).collect())))
}

/// An agent.
#[utoipa::path(get, path = "/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "Agent name")),
    responses((status = 200, body = Agent),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Agent>, ApiError> {
    Ok(Json(Agent::from(&state.store.get_agent(&name).await?)))
}

/// Change an agent's pool or labels.
#[utoipa::path(patch, path = "/agents/{name}", tag = "agents", request_body = UpdateAgent,
    params(("name" = String, Path, description = "Agent name")),
    responses((status = 200, body = Agent), (status = 400, body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A server's embedded agent", body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<UpdateAgent>, JsonRejection>,
) -> Result<Json<Agent>, ApiError> {
    let Json(update) = body?;
    let record = state.store.update_agent(&name, &store_update(update)?).await?;
    Ok(Json(Agent::from(&record)))
}

/// Delete an agent: its token stops working and the runs it holds end as Error.
#[utoipa::path(delete, path = "/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "Agent name")),
    responses((status = 204),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "A server's embedded agent", body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    for run in state.store.delete_agent(&name).await? {
        state.hub.finish(&run);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The pools agents name or queued runs ask for.
#[utoipa::path(get, path = "/agentPools", tag = "agents",
    responses((status = 200, body = List<AgentPool>),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn pools(State(state): State<AppState>) -> Result<Json<List<AgentPool>>, ApiError> {
    let pools = state.store.agent_pools().await?;
    Ok(Json(List::all(pools.iter().map(AgentPool::from).collect())))
}

/// The checked store update of a `PATCH`: `pool: ""` leaves the pool.
fn store_update(update: UpdateAgent) -> Result<AgentUpdate, AgentDefError> {
    let pool = match update.pool {
        Some(pool) if pool.is_empty() => Some(None),
        Some(pool) => {
            agent_def::check_pool(&pool)?;
            Some(Some(pool))
        }
        None => None,
    };
    update.labels.as_ref().map(agent_def::check_labels).transpose()?;
    Ok(AgentUpdate { pool, labels: update.labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_changes_only_what_it_names_and_an_empty_pool_leaves_it() {
        let update =
            |pool: Option<&str>| UpdateAgent { pool: pool.map(str::to_string), labels: None };
        assert_eq!(store_update(update(None)).unwrap(), AgentUpdate::default());
        assert_eq!(store_update(update(Some(""))).unwrap().pool, Some(None));
        assert_eq!(store_update(update(Some("arm"))).unwrap().pool, Some(Some("arm".into())));
        assert!(store_update(update(Some("a b"))).is_err());
        let labels = [("bad key".to_string(), String::new())].into_iter().collect();
        assert!(store_update(UpdateAgent { pool: None, labels: Some(labels) }).is_err());
    }
}
