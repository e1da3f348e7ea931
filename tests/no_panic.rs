//! The task-file pipeline never panics, whatever the input: arbitrary text, and mutations of a
//! real task file (the cargo-fuzz target in `fuzz/` explores further).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kiln_plan::plan::RunId;
use kiln_task::config::Config;
use kiln_task::plan::plan_file;
use kiln_task::render::{RunVars, TemplateData};
use kiln_task::task::load::LoadOptions;
use kiln_task::values::Values;
use proptest::prelude::*;

const SEED: &str = include_str!("../examples/values-aliases/acb.yaml");

fn check(text: &str) {
    let data = TemplateData {
        run: RunVars::new(RunId::new("ka1"), chrono::Utc::now()),
        values: Values::default(),
        secrets: BTreeMap::new(),
    };
    let images = Config::default().image_aliases();
    // An unreachable directory keeps `alias.src` lookups local and failing fast.
    let opts = LoadOptions {
        data: &data,
        images: &images,
        base_dir: Path::new("/nonexistent"),
        alias_fetch_timeout: Duration::from_millis(50),
    };
    let _ = plan_file(text, &opts, Vec::new(), true);
}

/// Pieces that steer random text into the interesting parts of the pipeline.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("version: v1.1.0\n".to_string()),
        Just("steps:\n".to_string()),
        Just("  - cmd: ".to_string()),
        Just("  - build: ".to_string()),
        Just("    when: [\"-\"]\n".to_string()),
        Just("alias:\n  values:\n".to_string()),
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{{.Values.x}}".to_string()),
        Just("$ID".to_string()),
        Just("$$".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("# c\n".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("<<: ".to_string()),
        "[ -~]{0,12}",
        "\\PC{0,4}",
        Just("\n".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(&text);
    }

    #[test]
    fn task_shaped_text_never_panics(parts in prop::collection::vec(fragment(), 0..60)) {
        check(&parts.concat());
    }

    #[test]
    fn mutated_examples_never_panic(cut in 0usize..SEED.len(), insert in "\\PC{0,20}", drop in 0usize..40) {
        let mut text = SEED.to_string();
        let at = (0..=cut).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let end = (at + drop..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
        text.replace_range(at..end, &insert);
        check(&text);
    }
}
