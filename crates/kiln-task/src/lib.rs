//! kiln's task-file language: from the text of an `acb.yaml` to the plan a worker executes.
//!
//! It owns reading task files ([`task`]: preprocess, aliases, YAML, the model, the step graph),
//! rendering them for one run ([`render`], with [`values`]), turning them into a
//! `kiln_plan::plan::Plan` ([`plan`]), kiln's own configuration ([`config`]), run IDs
//! ([`run_id`]) and the one shape of every message about a task file ([`diagnostic`], with
//! [`source_map`] pointing it at the line the user wrote).
//!
//! It must not know storage, HTTP serving or Docker (no sqlx, axum, reqwest or bollard): the
//! CLI checks task files offline with it, the server refuses bad ones before queueing and the
//! agent plans them again when a run starts, so all three must be able to use it alone. The one
//! network access is ACR's: an `alias: src:` may name a URL, fetched with a blocking `ureq`.

pub mod config;
pub mod diagnostic;
pub mod plan;
pub mod render;
pub mod run_id;
pub mod source_map;
pub mod task;
pub mod values;
