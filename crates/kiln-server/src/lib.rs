//! kiln's control plane: the HTTP API ([`server`]) in front of the store ([`store`], SQLite or
//! PostgreSQL), with the triggers ([`trigger`]), the run queue and task definitions
//! ([`queue`], [`task_def`], [`task_run`]), live logs ([`log_hub`]), sealed secrets
//! ([`secret_box`]), agent names ([`agent_def`]) and TLS/HTTP transport rules ([`transport`]).
//! It must not know the agent or Docker (no kiln-agent, kiln-worker, bollard): agents reach it
//! through `kiln-api`'s `Control` link, the embedded one through [`server::LocalLink`], which
//! the binary (`kiln serve`) wires up.

pub mod agent_def;
pub mod log_hub;
pub mod queue;
pub mod secret_box;
pub mod server;
pub mod store;
pub mod task_def;
pub mod task_run;
pub mod transport;
pub mod trigger;
