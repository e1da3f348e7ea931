//! Feeds arbitrary bytes through the whole task-file pipeline (strip, aliases, render, YAML,
//! model, graph, plan). Any panic is a bug: `cargo fuzz run task_file` (see fuzz/README.md).
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kiln_plan::plan::RunId;
use kiln_task::config::Config;
use kiln_task::plan::plan_file;
use kiln_task::render::{RunVars, TemplateData};
use kiln_task::task::load::LoadOptions;
use kiln_task::values::Values;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let data = TemplateData {
        run: RunVars::new(RunId::new("ka1"), chrono::Utc::now()),
        values: Values::default(),
        secrets: BTreeMap::new(),
    };
    let images = Config::default().image_aliases();
    let opts = LoadOptions {
        data: &data,
        images: &images,
        base_dir: Path::new("/nonexistent"),
        alias_fetch_timeout: Duration::from_millis(50),
    };
    let _ = plan_file(text, &opts, Vec::new(), true);
});
