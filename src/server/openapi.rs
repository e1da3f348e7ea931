//! `GET /openapi.json`: the API described by the handlers' own `#[utoipa::path]` annotations
//! and the wire types of [`crate::api`], so the document cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api::{self, task};
use crate::store::{RunStatus, RunType};

/// The scheme name operations refer to.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(title = "kiln", description = "Self-hosted ACR Tasks: queue runs, follow their logs, keep triggered tasks."),
    paths(
        super::uploads::upload,
        super::runs::submit,
        super::runs::list,
        super::runs::get,
        super::runs::cancel,
        super::logs::log,
        super::tasks::create,
        super::tasks::list,
        super::tasks::get,
        super::tasks::update,
        super::tasks::delete,
        super::tasks::run,
        super::tasks::add_timer,
        super::tasks::list_timers,
        super::tasks::update_timer,
        super::tasks::remove_timer,
        super::webhooks::deliver,
        super::base_images::registry_events,
        super::health,
        super::auth::whoami,
        super::page::run_page,
        openapi_json,
    ),
    components(schemas(
        api::RunRequest, api::DockerBuildRequest, api::FileTaskRequest, api::EncodedTaskRequest,
        api::Source, api::Argument, api::Upload, api::Run, api::Platform, api::Image,
        api::ErrorBody, api::WhoAmI, api::TokenRole, RunStatus, RunType, task::CreateTask, task::UpdateTask, task::Task,
        task::TaskDefinition, task::TaskStep, task::TaskStatus, task::BaseImageTriggerType,
        task::TimerSpec, task::UpdateTimer, task::Timer, task::Webhook, task::TaskRunRequest,
        task::BaseImageDependency, task::TaskEvent, task::WebhookAnswer, task::TriggerDetail,
        task::SourceTrigger, task::TimerTrigger, task::ImageUpdateTrigger,
    )),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`kiln_…`); the first is printed at first start",
                    ))
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
