//! kiln's execution crate.
//!
//! The worker takes a fully rendered [`plan::Plan`] and runs it as containers on a Docker engine.
//! It knows no YAML, no templates and no HTTP: everything a task file meant has been decided by the
//! control plane (the `kiln` crate) before a plan reaches it, so a remote worker needs nothing but
//! the plan and an engine.

pub mod auth;
pub mod backoff;
pub mod build;
pub mod image_ref;
pub mod plan;
pub mod push;
