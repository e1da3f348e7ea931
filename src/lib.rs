//! kiln: a self-hosted build-task engine that runs Azure Container Registry task files.
//!
//! This crate is the control plane: it reads task files ([`task`]), renders them for one run
//! ([`render`], with [`values`]), and turns them into the plan a worker (`kiln-worker`)
//! executes ([`plan`]). It serves runs over HTTP ([`server`], wire types in [`api`]), keeps them
//! in SQLite ([`store`]) and hands them to the embedded worker pool ([`agent`]), the one module
//! that calls the worker crate; nothing here speaks to Docker itself.

pub mod agent;
pub mod agent_def;
pub mod cli;
pub mod client;
pub mod log_hub;
pub mod pack;
pub mod queue;
pub mod secret_box;
pub mod server;
pub mod store;
pub mod task_def;
pub mod task_run;
pub mod transport;
pub mod trigger;
