//! `GET /openapi.json`: the API described by the handlers' own `#[utoipa::path]` annotations
//! and the wire types of [`crate::api`], so the document cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;
use crate::store::{RunStatus, RunType};

/// The scheme name operations refer to.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(title = "kiln", description = "Self-hosted ACR Tasks: queue runs, follow their logs."),
    paths(
        super::uploads::upload,
        super::runs::submit,
        super::runs::list,
        super::runs::get,
        super::runs::cancel,
        super::logs::log,
        super::health,
        super::page::run_page,
        openapi_json,
    ),
    components(schemas(
        api::RunRequest, api::DockerBuildRequest, api::FileTaskRequest, api::EncodedTaskRequest,
        api::Source, api::Argument, api::Upload, api::Run, api::Platform, api::Image,
        api::ErrorBody, RunStatus, RunType,
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
