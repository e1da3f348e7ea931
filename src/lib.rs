//! kiln: a self-hosted build-task engine that runs Azure Container Registry task files.
//!
//! This crate is the control plane and the binary: it serves runs over HTTP ([`server`], wire
//! types in `kiln-api`), keeps them in SQLite or PostgreSQL ([`store`]) and, in `kiln serve`
//! ([`cli`]), starts the embedded agent (`kiln-agent`, the one crate that calls the worker)
//! on the server's in-process link; nothing here speaks to Docker itself.

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
