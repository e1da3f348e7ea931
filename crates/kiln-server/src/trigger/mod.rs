//! Triggers: what starts a task's run on its own (issue 6). [`cron`] reads timer schedules,
//! [`timer`] decides when a timer fires (and what it missed),
//! [`webhook`] authenticates and reads git host deliveries.
//! Base-image updates: [`kiln_plan::base_image`] reads which base images a run built on,
//! [`registry`] asks a registry which digest a base image's tag points at now (for polling),
//! [`kiln_plan::manifest_list`] picks a platform's entry when that is a multi-platform list,
//! and [`notification`] reads the tag pushes in a registry's push notifications.

pub mod cron;
pub mod notification;
pub mod registry;
#[cfg(test)]
pub(crate) mod test_registry;
pub mod timer;
pub mod webhook;
