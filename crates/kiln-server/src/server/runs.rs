//! Runs over HTTP: submitting (validated before anything is stored), listing, reading (with an
//! optional long-poll until the run ends) and cancelling. Handlers only extract and answer; the
//! rules live in the plain functions below them, which tests and other callers can use directly.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use kiln_api::status::RunStatus;
use kiln_api::{
    self as api, ErrorBody, List, MAX_TIMEOUT_SECS, MIN_TIMEOUT_SECS, RunQuery, RunRequest,
    RunWait, Source, paths,
};
use kiln_plan::remote;
use kiln_task::run_id::RunId;
use tokio::time::Instant;

use super::auth;
use super::error::ApiError;
use super::state::{AppState, Settings};
use crate::log_hub::LogHub;
use crate::queue;
use crate::store::lease::{Claimant, no_agent_reason};
use crate::store::runs::DEFAULT_TOP;
use crate::store::{RunFilter, RunRecord, Store, TokenInfo};
use kiln_api::request::{CheckError, RequestError, check};
use kiln_api::uploads;

/// The longest `GET /runs/{id}?wait=` honoured, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// How often a waiting request re-reads the store without a wake-up (writers in other
/// processes do not publish to this process's hub).
const RECHECK: Duration = Duration::from_secs(1);

/// Queue a run.
#[utoipa::path(post, path = "/runs", tag = "runs", request_body = RunRequest,
    responses(
        (status = 201, description = "Queued", body = api::Run),
        (status = 400, description = "Invalid request or task file", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody)))]
pub async fn submit(
    State(state): State<AppState>,
    Extension(token): Extension<TokenInfo>,
    request: Result<Json<RunRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<api::Run>), ApiError> {
    let Json(request) = request?;
    auth::may_use_docker_api(&token, request.docker_api(), "the run")?;
    let record = submit_run(&state, request, queue::Origin::default()).await?;
    Ok((StatusCode::CREATED, Json(view(&state.store, &record).await?)))
}

/// List runs, newest first, a page at a time (`nextLink` points at the next page); with
/// `Accept: text/event-stream`, watch them ([`super::run_watch`]).
#[utoipa::path(get, path = "/runs", tag = "runs",
    params(
        ("status" = Option<RunStatus>, Query, description = "Only runs with this status"),
        ("image" = Option<String>, Query, description = "`repository:tag`: runs that pushed it"),
        ("task" = Option<String>, Query, description = "Only runs of this task"),
        ("trigger" = Option<String>, Query, description = "Only runs with this trigger: Manual, Commit, Pull Request, Timer, Image Update"),
        ("agent" = Option<String>, Query, description = "Only runs the agent of this name took"),
        ("agentPool" = Option<String>, Query, description = "Only runs that asked for this agent pool"),
        ("branch" = Option<String>, Query, description = "Only runs triggered on this branch"),
        ("search" = Option<String>, Query, description = "A substring of the run ID, task name or triggering commit (any case)"),
        ("top" = Option<usize>, Query, description = "At most this many per page (default 15, 0 = all); watching: the runs the stream starts with"),
        ("skipToken" = Option<String>, Query, description = "Continuation token from a `nextLink` (not when watching)")),
    responses((status = 200, description = "One page of runs; for `Accept: text/event-stream` \
            server-sent events: `run` (a run record, as `GET /runs/{id}` shows it) for each of \
            the first page, oldest first, then `ready` (their number), then `run` for each \
            matching run that is queued or changes, and `removed` (its run ID) when a run sent \
            before no longer matches. Each (re)connect starts with the first page again.",
            body = List<api::Run>),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<RunQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    if super::logs::wants_sse(&headers) {
        return super::run_watch::watch_list(&state.store, &query);
    }
    Ok(Json(list_page(&state.store, query).await?).into_response())
}

/// A run; with `wait`, answer once it is terminal or after that many seconds (at most 60); with
/// `Accept: text/event-stream`, watch it ([`super::run_watch`]).
#[utoipa::path(get, path = "/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run ID"),
        ("wait" = Option<u64>, Query, description = "Long-poll up to this many seconds (max 60)")),
    responses((status = 200, description = "The run; for `Accept: text/event-stream` server-sent \
            events: `run` with the record, `ready`, then `run` at each change", body = api::Run),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<RunWait>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let id = RunId::new(id);
    if super::logs::wants_sse(&headers) {
        return super::run_watch::watch_run(&state.store, &id).await;
    }
    let record = match query.wait.filter(|w| *w > 0) {
        Some(wait) => {
            let wait = Duration::from_secs(wait.min(MAX_WAIT_SECS));
            wait_for_end(&state.store, &state.hub, &id, wait).await?
        }
        None => state.store.get_run(&id).await?,
    };
    Ok(Json(view(&state.store, &record).await?).into_response())
}

/// Cancel a run: a queued one at once, a running one through its worker.
#[utoipa::path(post, path = "/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "Run ID")),
    responses((status = 200, body = api::Run), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Already finished", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<api::Run>, ApiError> {
    let record = cancel_run(&state, &RunId::new(id)).await?;
    Ok(Json(api::Run::from(&record)))
}

/// Queue a run's stored request again (same source, commit, values and overrides) as a new run
/// whose `rerunOf` names it.
#[utoipa::path(post, path = "/runs/{id}/rerun", tag = "runs",
    params(("id" = String, Path, description = "Run ID")),
    responses((status = 201, description = "The new run, queued", body = api::Run),
        (status = 400, description = "The request no longer passes (e.g. its uploaded context was cleaned up)", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rerun(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<(StatusCode, Json<api::Run>), ApiError> {
    let record = rerun_run(&state, &RunId::new(id)).await?;
    Ok((StatusCode::CREATED, Json(view(&state.store, &record).await?)))
}

/// Queues run `id`'s whole stored request (opened from its seal) again, with its task, trigger
/// and logins, as a new run linked to it; validated as a new submission would be. Any token
/// may re-run: the code is what was allowed when it was first queued (a `dockerApi: host` run
/// included, as a user may run a `host` task as it stands; [`auth::may_use_docker_api`]).
pub async fn rerun_run(state: &AppState, id: &RunId) -> Result<RunRecord, ApiError> {
    let run = state.store.get_run(id).await?;
    let opened = queue::open_request(&state.secrets, &run).map_err(ApiError::internal)?;
    let origin = queue::Origin::rerun(&run, &opened);
    submit_run(state, opened.request, origin).await
}

/// Validates `request` and queues it for `origin`; wakes waiting agents.
pub async fn submit_run(
    state: &AppState,
    request: RunRequest,
    origin: queue::Origin,
) -> Result<RunRecord, ApiError> {
    let settings = state.settings.clone();
    let checked = request.clone();
    // Planning may fetch `alias.src` URLs (blocking, bounded): off the async threads.
    tokio::task::spawn_blocking(move || validate(&checked, &settings))
        .await
        .map_err(ApiError::internal)??;
    let new = queue::new_run(&state.secrets, &request, origin).map_err(ApiError::internal)?;
    let record = state.store.create_run(new).await?;
    state.dispatch.queued();
    Ok(record)
}

/// Everything checkable at submission: the timeout's range, the platform's vocabulary, that the
/// source can be fetched (an uploaded context exists, a URL is a git or tarball URL; a file task
/// has a context), and for a Docker build or a task file sent in the request that it loads and
/// plans. A file task's task file is in its context and is checked when the run starts.
pub fn validate(request: &RunRequest, settings: &Settings) -> Result<(), ApiError> {
    if let Some(t) = request.timeout_secs()
        && !(MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(&t)
    {
        return Err(ApiError::BadRequest(format!(
            "timeout must be between {MIN_TIMEOUT_SECS} and {MAX_TIMEOUT_SECS} seconds, not {t}"
        )));
    }
    // Task definitions and a task run's overrides become this request, so this one check
    // covers every platform the API accepts.
    if let Some(platform) = request.platform() {
        platform.check().map_err(|e| ApiError::BadRequest(format!("platform {platform}: {e}")))?;
    }
    if let RunRequest::DockerBuild(build) = request
        && !build.platforms.is_empty()
    {
        for platform in &build.platforms {
            platform
                .check()
                .map_err(|e| ApiError::BadRequest(format!("platforms: {platform}: {e}")))?;
        }
        // The run is dispatched by `platform`: an agent for the first platform builds them all.
        if build.platform.as_ref() != build.platforms.first() {
            return Err(ApiError::BadRequest(format!(
                "platform must be the first of platforms ({}), where the run is dispatched",
                build.platforms[0]
            )));
        }
    }
    match request.source() {
        Source::Upload { id } => {
            let exists = uploads::path(&settings.data_dir, id).is_some_and(|p| p.is_file());
            if !exists {
                return Err(ApiError::BadRequest(format!("unknown upload {id}")));
            }
        }
        Source::Git { url } | Source::Tarball { url } => match remote::detect(url) {
            Ok(Some(_)) => {}
            Ok(None) => {
                let url = remote::redact(url);
                return Err(ApiError::BadRequest(format!("{url} is not a git or tarball URL")));
            }
            Err(e) => return Err(ApiError::BadRequest(e.to_string())),
        },
        Source::None => {
            if let RunRequest::FileTask(task) = request {
                let e = RequestError::NoContext { path: task.task_file.clone() };
                return Err(ApiError::BadRequest(e.to_string()));
            }
        }
    }
    match check(request, settings.default_registry.as_deref(), &settings.images) {
        Ok(()) => Ok(()),
        Err(CheckError::Request(e)) => Err(ApiError::BadRequest(e.to_string())),
        Err(CheckError::Invalid { name, diagnostics }) => {
            let diagnostics = diagnostics.0;
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            Err(ApiError::InvalidTask { name, errors, diagnostics })
        }
    }
}

/// One page of `GET /runs`: up to `top` runs below the skip token, and the link to the next
/// page when there are more. The token is the counter of the page's last run, so following the
/// links yields each run once, newest first, however many runs are queued meanwhile.
pub async fn list_page(store: &Store, query: RunQuery) -> Result<List<api::Run>, ApiError> {
    let top = query.top.unwrap_or(DEFAULT_TOP);
    let before = query
        .skip_token
        .as_deref()
        .map(|t| {
            // The store's counters are i64: a larger token is as invalid as a word.
            t.parse::<u64>()
                .ok()
                .filter(|&n| i64::try_from(n).is_ok())
                .ok_or_else(|| ApiError::BadRequest(format!("invalid skipToken {t:?}")))
        })
        .transpose()?;
    let filter = RunFilter {
        // One more than a page tells whether there is a next one.
        top: if top == 0 { 0 } else { top.saturating_add(1) },
        before,
        ..run_filter(&query)
    };
    let mut runs = store.list_runs(&filter).await?;
    let mut next_link = None;
    if top != 0 && runs.len() > top {
        runs.truncate(top);
        if let Some(last) = runs.last() {
            let next =
                RunQuery { top: Some(top), skip_token: Some(last.counter.to_string()), ..query };
            next_link = Some(format!("{}?{}", paths::RUNS, query_string(&next)));
        }
    }
    Ok(List { value: views(store, &runs).await?, next_link })
}

/// The store's filter for `query`'s conditions (its page, `top` and `skipToken`, is the
/// caller's).
pub fn run_filter(query: &RunQuery) -> RunFilter {
    RunFilter {
        status: query.status,
        task_name: query.task.clone(),
        image: query.image.clone(),
        trigger: query.trigger.clone(),
        agent_name: query.agent.clone(),
        agent_pool: query.agent_pool.clone(),
        branch: query.branch.clone(),
        search: query.search.clone(),
        ..RunFilter::default()
    }
}

/// The API view of a run ([`views`]).
pub async fn view(store: &Store, record: &RunRecord) -> Result<api::Run, ApiError> {
    let mut one = views(store, std::slice::from_ref(record)).await?;
    Ok(one.remove(0))
}

/// The API view of runs: a queued run that no registered agent may take (its pool, its
/// platform) says why in its `waitingReason` ([`no_agent_reason`]). The agents are read only
/// when some run is queued.
pub async fn views(store: &Store, records: &[RunRecord]) -> Result<Vec<api::Run>, ApiError> {
    let mut runs: Vec<api::Run> = records.iter().map(api::Run::from).collect();
    if !records.iter().any(|r| r.status == RunStatus::Queued) {
        return Ok(runs);
    }
    let agents: Vec<Claimant> = store.list_agents().await?.iter().map(Claimant::from).collect();
    for (run, record) in runs.iter_mut().zip(records) {
        let why = no_agent_reason(record.agent_pool.as_deref(), &record.platform, &agents);
        if let (Some(reason), Some(why)) = (&mut run.waiting_reason, why) {
            reason.push_str(&format!(": {why}"));
        }
    }
    Ok(runs)
}

/// `query` as a URL query string.
fn query_string(query: &RunQuery) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    if let Some(status) = query.status {
        out.append_pair("status", status.as_str());
    }
    let pairs = [
        ("image", &query.image),
        ("task", &query.task),
        ("trigger", &query.trigger),
        ("agent", &query.agent),
        ("agentPool", &query.agent_pool),
        ("branch", &query.branch),
        ("search", &query.search),
        ("skipToken", &query.skip_token),
    ];
    for (key, value) in pairs {
        if let Some(value) = value {
            out.append_pair(key, value);
        }
    }
    if let Some(top) = query.top {
        out.append_pair("top", &top.to_string());
    }
    out.finish()
}

/// Cancels `id`. A queued run is Canceled at once (its followers are told it ended); a started
/// one is flagged and its worker told.
pub async fn cancel_run(state: &AppState, id: &RunId) -> Result<RunRecord, ApiError> {
    let record = state.store.cancel_run(id).await?;
    if record.status == RunStatus::Canceled {
        state.hub.finish(id);
    } else {
        state.dispatch.changed();
    }
    Ok(record)
}

/// The run once it is terminal, or as it is after `wait`. Wakes on the hub (a log write or
/// the end) and re-reads the store at least every second.
pub async fn wait_for_end(
    store: &Store,
    hub: &LogHub,
    id: &RunId,
    wait: Duration,
) -> Result<RunRecord, ApiError> {
    let deadline = Instant::now() + wait;
    let run = store.get_run(id).await?;
    if run.status.is_terminal() {
        return Ok(run);
    }
    let mut rx = Some(hub.subscribe(id));
    loop {
        // Read after subscribing: an end between the read and the wait still wakes us.
        let run = store.get_run(id).await?;
        let now = Instant::now();
        if run.status.is_terminal() || now >= deadline {
            return Ok(run);
        }
        let until = deadline.min(now + RECHECK);
        match rx.as_mut() {
            Some(r) => {
                if let Ok(Err(_)) = tokio::time::timeout_at(until, r.changed()).await {
                    // The hub dropped the channel (the run ended): re-read without waiting.
                    rx = None;
                }
            }
            None => tokio::time::sleep_until(until).await,
        }
    }
}
