//! `POST /webhooks/{task}`: one URL per task for GitHub, GitLab, Gitea and Forgejo deliveries
//! (reference §5.1). Public, because git hosts send no API token: the delivery's signature
//! (or GitLab's token) against the task's webhook secret is the authentication, checked over
//! the raw body before anything else is read from it.
//!
//! The answer comes as soon as the run is queued (the fetch happens in the run), and whether a
//! delivery queues anything is decided by the store's unique keys, so a redelivery or the same
//! commit announced twice queues one run ([`crate::store::triggers`]). A delivery that builds
//! nothing (another branch, a disabled trigger, a ping) is answered 200 with the reason, so
//! the git host shows it as delivered rather than retrying it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use kiln_api::task::{TaskDefinition, WebhookAnswer};

use super::error::ApiError;
use super::state::AppState;
use crate::store::{SourceOutcome, StoreError};
use crate::task_def;
use crate::task_run::{self, Firing};
use crate::trigger::webhook::{self, SourceEvent, WebhookError};

/// Largest delivery accepted (GitHub caps payloads at 25 MB).
pub const MAX_DELIVERY_BYTES: usize = 25 * 1024 * 1024;

/// Receive a git host's delivery.
#[utoipa::path(post, path = "/webhooks/{task}", tag = "tasks", security(()),
    params(("task" = String, Path, description = "Task name")),
    request_body(content = String, description = "The git host's JSON payload", content_type = "application/json"),
    responses(
        (status = 202, description = "A run was queued", body = WebhookAnswer),
        (status = 200, description = "Nothing to build, or already built", body = WebhookAnswer),
        (status = 400, description = "Unknown sender or malformed payload", body = kiln_api::ErrorBody),
        (status = 401, description = "Bad or missing signature, or an unknown task", body = kiln_api::ErrorBody)))]
pub async fn deliver(
    State(state): State<AppState>,
    UrlPath(task): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<WebhookAnswer>), ApiError> {
    let answer = handle(&state, &task, &headers, &body).await?;
    let status = if answer.run_id.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(answer)))
}

fn ignored(reason: impl Into<String>) -> WebhookAnswer {
    WebhookAnswer { status: "ignored".to_string(), run_id: None, reason: Some(reason.into()) }
}

/// Authenticates, reads and acts on one delivery for `task`.
pub async fn handle(
    state: &AppState,
    task: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookAnswer, ApiError> {
    let record = match state.store.get_task(task).await {
        Ok(record) => Some(record),
        Err(StoreError::TaskNotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let provider = webhook::provider(headers).map_err(bad)?;
    // An unknown task is checked against a fresh random secret, so it answers exactly as a known
    // task does to a wrong signature: the URL does not tell which task names exist.
    let secret = match &record {
        Some(record) => task_def::webhook_secret(&state.secrets, record)?,
        None => task_def::random_webhook_secret()?,
    };
    webhook::verify(provider, headers, body, &secret).map_err(|e| match e {
        WebhookError::MissingSignature { .. } | WebhookError::BadSignature => {
            ApiError::BadSignature(e.to_string())
        }
        other => bad(other),
    })?;
    // A fresh random secret verifies nothing, so an unknown task's delivery was refused above.
    let Some(record) = record else {
        return Err(ApiError::BadSignature(WebhookError::BadSignature.to_string()));
    };
    let Some(event) = webhook::parse(provider, headers, body).map_err(bad)? else {
        return Ok(ignored("this event builds nothing (ping, tag, deletion or closed request)"));
    };
    let definition = task_def::open(&state.secrets, &record)?;
    if let Some(reason) = not_for_this_task(&definition, &event) {
        return Ok(ignored(reason));
    }
    let delivery = webhook::delivery_id(provider, headers);
    let firing = Firing::Source { provider, delivery: delivery.clone(), event: &event };
    let new = task_run::new_run(&state.secrets, task, &definition, &firing)?;
    let (event_type, commit) = (event.event_type(), event.commit());
    // Deliveries are keyed per provider: two hosts may reuse an ID format.
    let delivery = delivery.map(|id| format!("{provider:?}/{id}"));
    let outcome =
        state.store.queue_source_event(task, delivery.as_deref(), event_type, commit, new).await?;
    Ok(match outcome {
        SourceOutcome::Queued(run) => {
            state.dispatch.queued();
            WebhookAnswer {
                status: "queued".to_string(),
                run_id: Some(run.id.to_string()),
                reason: None,
            }
        }
        SourceOutcome::DuplicateDelivery => WebhookAnswer {
            status: "duplicate".to_string(),
            run_id: None,
            reason: Some("this delivery was received before".to_string()),
        },
        SourceOutcome::DuplicateCommit => WebhookAnswer {
            status: "duplicate".to_string(),
            run_id: None,
            reason: Some(format!("a {event_type} run of {commit} was queued before")),
        },
    })
}

fn bad(e: WebhookError) -> ApiError {
    ApiError::BadRequest(e.to_string())
}

/// Why `event` does not concern the task, if it does not.
fn not_for_this_task(def: &TaskDefinition, event: &SourceEvent) -> Option<String> {
    if !task_def::is_enabled(def) {
        return Some("the task is disabled".to_string());
    }
    match event {
        SourceEvent::Push { branch, default_branch, .. } => {
            let followed = task_run::followed_branch(def, default_branch.as_deref());
            if !def.commit_trigger_enabled {
                Some("the task's commit trigger is disabled".to_string())
            } else if *branch != followed {
                Some(format!("push to {branch}; the task follows {followed}"))
            } else {
                None
            }
        }
        SourceEvent::PullRequest { base_branch, .. } => {
            if !def.pull_request_trigger_enabled {
                return Some("the task's pull request trigger is disabled".to_string());
            }
            // A request's payload does not say which branch is the default: a task without a
            // branch builds requests into any branch.
            match task_run::context_branch(def) {
                Some(followed) if followed != *base_branch => {
                    Some(format!("pull request into {base_branch}; the task follows {followed}"))
                }
                _ => None,
            }
        }
    }
}
