//! Triggers: what starts a task's run on its own (issue 6). [`cron`] reads timer schedules,
//! [`timer`] decides when a timer fires (and what it missed),
//! [`webhook`] authenticates and reads git host deliveries, [`base_image`] reads which base
//! images a run built on.

pub mod base_image;
pub mod cron;
pub mod timer;
pub mod webhook;
