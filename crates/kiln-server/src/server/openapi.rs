//! `GET /openapi.json`: the API described by the handlers' own `#[utoipa::path]` annotations
//! and the wire types of [`kiln_api`], so the document cannot drift from the code.

use axum::Json;
use kiln_api::status::{RunStatus, RunType};
use kiln_api::{self as api, agent, agents, steps, task};
use kiln_plan::report::{Dependency, GitReference, ImageReference};
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// The scheme name operations refer to.
pub const BEARER: &str = "bearer";
/// The scheme of the browser's session cookie.
pub const SESSION: &str = "session";
/// The scheme of the agent protocol's operations.
pub const AGENT_TOKEN: &str = "agentToken";

#[derive(OpenApi)]
#[openapi(
    info(title = "kiln", description = "Self-hosted ACR Tasks: queue runs, follow their logs, keep triggered tasks."),
    paths(
        super::uploads::upload,
        super::runs::submit,
        super::runs::list,
        super::runs::get,
        super::runs::cancel,
        super::runs::rerun,
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
        super::session::sign_in,
        super::session::get,
        super::session::sign_out,
        super::agents::create,
        super::agents::list,
        super::agents::get,
        super::agents::update,
        super::agents::delete,
        super::agents::pools,
        super::auth::agent_whoami,
        super::app::index,
        super::app::ui,
        super::app::assets,
        super::agent_api::start_session,
        super::agent_api::lease,
        super::agent_api::heartbeat,
        super::agent_api::status,
        super::agent_api::steps,
        super::agent_api::append_log,
        super::agent_api::finish,
        super::agent_api::watch,
        super::agent_api::upload,
        openapi_json,
    ),
    components(schemas(
        api::RunRequest, api::DockerBuildRequest, api::FileTaskRequest, api::EncodedTaskRequest,
        api::Source, api::Argument, api::Upload, api::Run, api::Platform, api::Image,
        api::ErrorBody, api::ErrorDetail, api::WhoAmI, api::TokenRole, api::SignIn, api::Session, Dependency, ImageReference,
        GitReference, RunStatus, RunType, task::CreateTask, task::UpdateTask, task::Task,
        task::TaskDefinition, task::TaskStep, task::TaskStatus, task::BaseImageTriggerType,
        task::TimerSpec, task::UpdateTimer, task::Timer, task::Webhook, task::TaskRunRequest,
        task::BaseImageDependency, task::TaskEvent, task::WebhookAnswer, task::TriggerDetail,
        task::SourceTrigger, task::TimerTrigger, task::ImageUpdateTrigger,
        agent::AgentSession, agent::LeaseRequest, agent::Lease, agent::GitSshIdentity,
        agent::Fence, agent::Beat, agent::LogPart, agent::LogMark, agent::LogAck,
        agent::StatusUpdate, agent::StepReport, steps::Step, steps::StepStatus, agent::RunOutcome,
        agent::WatchRequest, agent::HeldRun,
        agent::WatchReply, agents::Agent, agents::CreateAgent, agents::UpdateAgent,
        agents::CreatedAgent, agents::AgentPool, agents::AgentWhoAmI, agents::AgentKind,
    )),
    modifiers(&BearerAuth, &CommonResponses),
    security(("bearer" = []), ("session" = [])),
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
        components.add_security_scheme(
            SESSION,
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::session::COOKIE_NAME,
                "A browser session (`POST /session`); requests other than GET and HEAD also \
                 need its CSRF token in `X-CSRF-Token`",
            ))),
        );
        components.add_security_scheme(
            AGENT_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An agent token (`kiln_agent_…`, from `kiln agent create`): it leases \
                         and reports runs and can do nothing else",
                    ))
                    .build(),
            ),
        );
    }
}

/// The answers any operation can give besides its own, added once here rather than on each
/// handler: 401 where a token is needed, 400 where query values or a body are read, 413 where
/// a body is read, 415 where it must be JSON. All carry the one error body.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let needs_token = |security: Option<&Vec<SecurityRequirement>>| {
            security.is_some_and(|s| s.iter().any(|r| *r != SecurityRequirement::default()))
        };
        let secured_by_default = needs_token(openapi.security.as_ref());
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let secured = match &operation.security {
                    None => secured_by_default,
                    own => needs_token(own.as_ref()),
                };
                let queried = operation
                    .parameters
                    .iter()
                    .flatten()
                    .any(|p| p.parameter_in == ParameterIn::Query);
                let body = operation.request_body.as_ref().map(|b| b.content.contains_key(JSON));
                let common = [
                    (secured, "401", "Missing or invalid API token"),
                    (queried || body.is_some(), "400", "A bad query value or body"),
                    (body.is_some(), "413", "The body is larger than the server's limit"),
                    (body == Some(true), "415", "The body is not `application/json`"),
                ];
                for (status, description) in
                    common.into_iter().filter_map(|(applies, s, d)| applies.then_some((s, d)))
                {
                    operation.responses.responses.entry(status.to_string()).or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                JSON,
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name(api::ErrorBody::name())))
                                    .build(),
                            )
                            .build()
                            .into()
                    });
                }
            }
        }
    }
}

const JSON: &str = "application/json";

/// The operations of one path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
