//! Tasks over HTTP (`az acr task create|update|show|list|delete|run`, `timer add|update|remove|
//! list`). Handlers extract and answer; the functions below them hold the rules: a definition
//! is checked (and a task file kept in the task planned) before anything is stored, secrets
//! are sealed ([`crate::task_def`]), and answers never carry a secret other than the webhook's.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path as UrlPath, State};
use axum::http::StatusCode;
use chrono::Utc;
use kiln_api::task::{
    BaseImageDependency, CreateTask, Task, TaskDefinition, TaskEvent, TaskRunRequest, Timer,
    TimerSpec, UpdateTask, UpdateTimer, Webhook,
};
use kiln_api::{self as api, ErrorBody, List, legacy, paths};

use super::auth;
use super::error::ApiError;
use super::runs::{submit_run, validate, view};
use super::state::AppState;
use crate::queue::Origin;
use crate::store::{RunRecord, StoreError, TaskParts, TaskRecord, TimerRecord, TokenInfo};
use crate::task_def::{self, TaskDefError};
use crate::task_run::{self, Firing, TaskRunError};
use crate::trigger::cron::Schedule;

/// History entries `task show` includes.
const HISTORY_SHOWN: i64 = 20;

impl From<TaskDefError> for ApiError {
    fn from(e: TaskDefError) -> Self {
        match e {
            e @ (TaskDefError::Sealed(_) | TaskDefError::Corrupt { .. }) => ApiError::internal(e),
            e => ApiError::BadRequest(e.to_string()),
        }
    }
}

impl From<TaskRunError> for ApiError {
    fn from(e: TaskRunError) -> Self {
        match e {
            e @ TaskRunError::Queue(_) => ApiError::internal(e),
            e => ApiError::BadRequest(e.to_string()),
        }
    }
}

/// Create a task.
#[utoipa::path(post, path = "/tasks", tag = "tasks", request_body = CreateTask,
    responses((status = 201, body = Task), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, description = "Name taken", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(token): Extension<TokenInfo>,
    body: Result<Json<CreateTask>, JsonRejection>,
) -> Result<(StatusCode, Json<Task>), ApiError> {
    let Json(create) = body?;
    auth::may_use_docker_api(&token, create.definition.docker_api, "the task")?;
    let record = create_task(&state, create).await?;
    Ok((StatusCode::CREATED, Json(task_view(&state, &record).await?)))
}

/// List tasks.
#[utoipa::path(get, path = "/tasks", tag = "tasks",
    responses((status = 200, body = List<Task>), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<Json<List<Task>>, ApiError> {
    let mut parts = state.store.task_parts(None, HISTORY_SHOWN).await?;
    let tasks = state.store.list_tasks().await?.into_iter().map(|record| {
        let parts = parts.remove(&record.name).unwrap_or_default();
        view_of(&state, &record, parts)
    });
    Ok(Json(List::all(tasks.collect::<Result<_, _>>()?)))
}

/// A task, with its webhook URL and secret.
#[utoipa::path(get, path = "/tasks/{name}", tag = "tasks",
    params(("name" = String, Path, description = "Task name")),
    responses((status = 200, body = Task), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Task>, ApiError> {
    let record = state.store.get_task(&name).await?;
    Ok(Json(task_view(&state, &record).await?))
}

/// Change some of a task's settings.
#[utoipa::path(patch, path = "/tasks/{name}", tag = "tasks", request_body = UpdateTask,
    params(("name" = String, Path, description = "Task name")),
    responses((status = 200, body = Task), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(token): Extension<TokenInfo>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<UpdateTask>, JsonRejection>,
) -> Result<Json<Task>, ApiError> {
    let Json(update) = body?;
    let record = update_task(&state, &name, update, &token).await?;
    Ok(Json(task_view(&state, &record).await?))
}

/// Delete a task (its runs stay).
#[utoipa::path(delete, path = "/tasks/{name}", tag = "tasks",
    params(("name" = String, Path, description = "Task name")),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_task(&name).await?;
    state.timers.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// Run a task now (TRIGGER `Manual`).
#[utoipa::path(post, path = "/tasks/{name}/runs", tag = "tasks", request_body = TaskRunRequest,
    params(("name" = String, Path, description = "Task name")),
    responses((status = 201, body = api::Run), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn run(
    State(state): State<AppState>,
    Extension(token): Extension<TokenInfo>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<TaskRunRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<api::Run>), ApiError> {
    let Json(overrides) = body?;
    let record = run_task(&state, &name, &overrides, &token).await?;
    Ok((StatusCode::CREATED, Json(view(&state.store, &record).await?)))
}

/// Add a timer.
#[utoipa::path(post, path = "/tasks/{name}/timers", tag = "tasks", request_body = TimerSpec,
    params(("name" = String, Path, description = "Task name")),
    responses((status = 201, body = List<Timer>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_timer(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<TimerSpec>, JsonRejection>,
) -> Result<(StatusCode, Json<List<Timer>>), ApiError> {
    let Json(spec) = body?;
    add_task_timer(&state, &name, spec).await?;
    Ok((StatusCode::CREATED, Json(timers(&state, &name).await?)))
}

/// A task's timers.
#[utoipa::path(get, path = "/tasks/{name}/timers", tag = "tasks",
    params(("name" = String, Path, description = "Task name")),
    responses((status = 200, body = List<Timer>), (status = 404, body = ErrorBody)))]
pub async fn list_timers(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<List<Timer>>, ApiError> {
    state.store.get_task(&name).await?;
    Ok(Json(timers(&state, &name).await?))
}

/// Change a timer's schedule or state.
#[utoipa::path(patch, path = "/tasks/{name}/timers/{timer}", tag = "tasks", request_body = UpdateTimer,
    params(("name" = String, Path, description = "Task name"), ("timer" = String, Path, description = "Timer name")),
    responses((status = 200, body = List<Timer>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_timer(
    State(state): State<AppState>,
    UrlPath((name, timer)): UrlPath<(String, String)>,
    body: Result<Json<UpdateTimer>, JsonRejection>,
) -> Result<Json<List<Timer>>, ApiError> {
    let Json(update) = body?;
    update_task_timer(&state, &name, &timer, update).await?;
    Ok(Json(timers(&state, &name).await?))
}

/// Remove a timer.
#[utoipa::path(delete, path = "/tasks/{name}/timers/{timer}", tag = "tasks",
    params(("name" = String, Path, description = "Task name"), ("timer" = String, Path, description = "Timer name")),
    responses((status = 200, body = List<Timer>), (status = 404, body = ErrorBody)))]
pub async fn remove_timer(
    State(state): State<AppState>,
    UrlPath((name, timer)): UrlPath<(String, String)>,
) -> Result<Json<List<Timer>>, ApiError> {
    state.store.remove_timer(&name, &timer).await?;
    state.timers.notify_one();
    Ok(Json(timers(&state, &name).await?))
}

/// Adds a timer to task `name`: its schedule must parse and differ from the task's others
/// (§5.3); it first fires at its next occurrence.
pub async fn add_task_timer(state: &AppState, name: &str, spec: TimerSpec) -> Result<(), ApiError> {
    state.store.get_task(name).await?;
    let mut specs: Vec<TimerSpec> =
        state.store.timers(name).await?.into_iter().map(spec_of).collect();
    specs.push(spec);
    let schedules = task_def::check_timers(&specs)?;
    let (Some(spec), Some(schedule)) = (specs.last(), schedules.last()) else {
        return Err(ApiError::internal("the new timer went missing"));
    };
    state.store.add_timer(&task_def::timer_record(name, spec, schedule, Utc::now())).await?;
    state.timers.notify_one();
    Ok(())
}

/// Changes a timer's schedule or state. A changed or re-enabled timer next fires at its next
/// occurrence from now; an unchanged enabled one keeps its pending occurrence.
pub async fn update_task_timer(
    state: &AppState,
    name: &str,
    timer: &str,
    update: UpdateTimer,
) -> Result<(), ApiError> {
    state.store.get_task(name).await?;
    let stored = state.store.timers(name).await?;
    let mut specs: Vec<TimerSpec> = stored.iter().cloned().map(spec_of).collect();
    let i = specs.iter().position(|t| t.name == timer).ok_or_else(|| {
        ApiError::from(StoreError::TimerNotFound {
            task: name.to_string(),
            timer: timer.to_string(),
        })
    })?;
    if let Some(schedule) = update.schedule {
        specs[i].schedule = schedule;
    }
    if let Some(status) = update.status {
        specs[i].status = status;
    }
    let schedules = task_def::check_timers(&specs)?;
    let mut record = task_def::timer_record(name, &specs[i], &schedules[i], Utc::now());
    if specs[i].schedule == stored[i].schedule && stored[i].enabled && specs[i].status.is_enabled()
    {
        record.next_fire_at = stored[i].next_fire_at;
    }
    state.store.update_timer(&record).await?;
    state.timers.notify_one();
    Ok(())
}

fn spec_of(t: TimerRecord) -> TimerSpec {
    TimerSpec { name: t.name, schedule: t.schedule, status: t.enabled.into() }
}

/// Checks and stores a new task with its timers.
pub async fn create_task(state: &AppState, create: CreateTask) -> Result<TaskRecord, ApiError> {
    let CreateTask { name, mut definition, timers } = create;
    task_def::check_name("task", &name)?;
    check_definition(state, &mut definition).await?;
    let schedules = task_def::check_timers(&timers)?;
    let now = Utc::now();
    let timer_records: Vec<TimerRecord> = timers
        .iter()
        .zip(&schedules)
        .map(|(spec, schedule)| task_def::timer_record(&name, spec, schedule, now))
        .collect();
    let write = task_def::seal(&state.secrets, &name, &definition)?;
    let (_, webhook_secret) = task_def::new_webhook_secret(&state.secrets, &name)?;
    let record = state.store.create_task(&name, write, webhook_secret, &timer_records).await?;
    state.timers.notify_one();
    Ok(record)
}

/// Applies `update` to a stored task for `token`. A task whose steps get the engine's own
/// socket, before or after the change, only an admin may change: otherwise a user could change
/// what runs with it. Re-enabling a task restarts its timers from now, so the occurrences it
/// slept through are not reported as missed.
pub async fn update_task(
    state: &AppState,
    name: &str,
    update: UpdateTask,
    token: &TokenInfo,
) -> Result<TaskRecord, ApiError> {
    let record = state.store.get_task(name).await?;
    let mut definition = task_def::open(&state.secrets, &record)?;
    let was_enabled = task_def::is_enabled(&definition);
    let what = format!("task {name}");
    auth::may_use_docker_api(token, definition.docker_api, &what)?;
    task_def::apply(&mut definition, update);
    auth::may_use_docker_api(token, definition.docker_api, &what)?;
    check_definition(state, &mut definition).await?;
    let write = task_def::seal(&state.secrets, name, &definition)?;
    let record = state.store.update_task(name, write).await?;
    if !was_enabled && task_def::is_enabled(&definition) {
        let now = Utc::now();
        for mut timer in state.store.timers(name).await? {
            if let Ok(schedule) = Schedule::parse(&timer.schedule) {
                timer.next_fire_at = schedule.next_after(now);
                state.store.update_timer(&timer).await?;
            }
        }
    }
    state.timers.notify_one();
    Ok(record)
}

/// The rules of [`task_def::check`], and a task file kept in the task must plan.
async fn check_definition(state: &AppState, def: &mut TaskDefinition) -> Result<(), ApiError> {
    task_def::check(def)?;
    task_def::normalise(def);
    let (request, _) = task_run::request_for(def, &Firing::Manual(&TaskRunRequest::default()))?;
    let settings = state.settings.clone();
    tokio::task::spawn_blocking(move || validate(&request, &settings))
        .await
        .map_err(ApiError::internal)?
}

/// Queues a manual run of task `name` for `token`. Any token may run a task as it is defined
/// (its triggers would), but only an admin may change what a task with the engine's own socket
/// runs (another context, file or values).
pub async fn run_task(
    state: &AppState,
    name: &str,
    overrides: &TaskRunRequest,
    token: &TokenInfo,
) -> Result<RunRecord, ApiError> {
    let record = state.store.get_task(name).await?;
    let definition = task_def::open(&state.secrets, &record)?;
    if *overrides != TaskRunRequest::default() {
        let what = format!("a run of task {name} with overrides");
        auth::may_use_docker_api(token, definition.docker_api, &what)?;
    }
    let (request, trigger) = task_run::request_for(&definition, &Firing::Manual(overrides))?;
    submit_run(state, request, Origin::task(name, &definition, trigger)).await
}

async fn timers(state: &AppState, name: &str) -> Result<List<Timer>, ApiError> {
    Ok(List::all(state.store.timers(name).await?.into_iter().map(timer_view).collect()))
}

fn timer_view(t: TimerRecord) -> Timer {
    Timer {
        name: t.name,
        schedule: t.schedule,
        status: t.enabled.into(),
        next_fire_time: t.next_fire_at.filter(|_| t.enabled),
    }
}

/// The API view of a stored task.
pub async fn task_view(state: &AppState, record: &TaskRecord) -> Result<Task, ApiError> {
    let mut parts = state.store.task_parts(Some(&record.name), HISTORY_SHOWN).await?;
    view_of(state, record, parts.remove(&record.name).unwrap_or_default())
}

/// The API view of a stored task with its timers, base images and history.
fn view_of(state: &AppState, record: &TaskRecord, parts: TaskParts) -> Result<Task, ApiError> {
    let definition: TaskDefinition =
        legacy::read(record.definition.as_bytes()).map_err(ApiError::internal)?;
    let base_image_dependencies = parts
        .base_images
        .into_iter()
        .map(|b| BaseImageDependency {
            kind: b.kind,
            registry: b.registry,
            repository: b.repository,
            tag: b.tag,
            digest: b.digest,
            digest_kind: b.digest_kind,
        })
        .collect();
    let history = parts
        .history
        .into_iter()
        .map(|e| TaskEvent { time: e.at, kind: e.kind, detail: e.detail })
        .collect();
    Ok(Task {
        name: record.name.clone(),
        definition,
        timers: parts.timers.into_iter().map(timer_view).collect(),
        webhook: Webhook {
            url: format!(
                "{}{}",
                state.settings.public_url.trim_end_matches('/'),
                paths::webhook(&record.name)
            ),
            secret: task_def::webhook_secret(&state.secrets, record)?,
        },
        base_image_dependencies,
        history,
        creation_date: record.created_at,
        last_updated_time: record.updated_at,
    })
}
