//! kiln's plan: what the control plane and the worker say to each other.
//!
//! It owns the pure vocabulary both halves use: the rendered [`plan::Plan`] a worker executes,
//! the [`event::Event`]s and status words a run reports, image references ([`image_ref`]), the
//! dependency report ([`report`]) and the base images it names ([`base_image`]), platform
//! names ([`platform`]) and a platform's entry in a manifest list ([`manifest_list`]), what
//! steps get of the engine ([`docker_api`]), what a build context names ([`remote`]), which
//! path a step's container takes ([`step_path`]), which steps share a network namespace
//! ([`lane`]), and masking the plan's secrets ([`mask`]). It must not know Docker (bollard),
//! HTTP, storage or task files: the server, the store and the task-file crate use these types
//! without pulling in the engine, and the worker (`kiln-worker`) adds only what needs the
//! engine.

pub mod base_image;
pub mod docker_api;
pub mod event;
pub mod image_ref;
pub mod lane;
pub mod manifest_list;
pub mod mask;
pub mod plan;
pub mod platform;
pub mod remote;
pub mod report;
pub mod step_path;
