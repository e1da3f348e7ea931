//! Triggers: what starts a task's run on its own (issue 6). [`cron`] reads timer schedules,
//! [`webhook`] authenticates and reads git host deliveries.
//! Base-image updates will join them here.

pub mod cron;
pub mod webhook;
