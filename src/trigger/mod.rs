//! Triggers: what starts a task's run on its own (issue 6). [`cron`] reads timer schedules.
//! Webhooks and base-image updates will join it here.

pub mod cron;
