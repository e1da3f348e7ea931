//! kiln's execution crate.
//!
//! The worker takes a fully rendered `kiln_plan::plan::Plan` and runs it as containers on a
//! Docker engine.
//! It knows no YAML, no templates and no HTTP: everything a task file meant has been decided by the
//! control plane (the `kiln` crate) before a plan reaches it, so a remote worker needs nothing but
//! the plan and an engine. The plan, the events and the other pure vocabulary it shares with the
//! control plane are the `kiln-plan` crate; what is here needs the engine (bollard).
//!
//! Where each idea lives:
//!
//! | module | owns |
//! |---|---|
//! | [`engine`] | connecting to Docker and negotiating the API version |
//! | [`platforms`] | which platforms the engine runs: native, and emulated through `binfmt_misc` |
//! | [`run`] | one run's lifecycle: workspace, networks, the step graph, teardown ([`execute`]) |
//! | `schedule` | which steps may start now (the DAG) |
//! | `step` | one step: start delay, timeout, repeat, retries, ignoreErrors |
//! | `container` | one container: create, attach, start, wait, kill, remove |
//! | `exec` | one fast-path container: prepared with kiln's init, the command run by `exec` |
//! | `init` | kiln's idle init for fast-path containers |
//! | `lookahead` | fast-path containers prepared ahead of need, bounded per run |
//! | `lane` | the network namespace a chain of steps shares: its sandbox container |
//! | `image` | pulling a step's image with the run's registry logins |
//! | `volume` | secret volumes |
//! | [`workspace`] | the run's `/workspace` directory |
//! | [`spare`] | run networks created ahead of their run |
//! | [`cleanup`] | removing what runs left, by label |
//! | [`owner`] | which process owns engine objects, and whether it is gone |
//! | [`names`] | engine object names and labels |
//! | `ports` | `ports`/`expose` syntax |
//! | `docker_api` | the Docker API steps see: the run's scoped socket, its policy, its image tags |
//! | [`build`] | build steps: arguments, context, `.dockerignore`, Dockerfile scan, remote contexts |
//! | [`push`] | push steps, with [`auth`] (registry logins) |
//! | `delegate` | the seam from a step to the build and push modules |
//! | `events` | sending the event stream, masked and in bounded pieces |

pub mod auth;
pub mod backoff;
pub mod build;
pub mod cleanup;
mod container;
mod delegate;
mod docker_api;
pub mod engine;
mod events;
mod exec;
mod image;
pub mod index;
mod init;
mod lane;
mod lookahead;
pub mod names;
pub mod owner;
pub mod platforms;
mod ports;
pub mod push;
pub mod run;
mod schedule;
pub mod spare;
mod step;
mod volume;
pub mod workspace;

pub use cleanup::{SweepReport, sweep, sweep_orphans};
pub use docker_api::DockerApiMode;
pub use engine::{Engine, EngineError};
pub use run::{DEFAULT_LOOKAHEAD, RunOptions, RunSummary, StepSummary, execute};
pub use spare::{SpareError, SpareNetwork};
