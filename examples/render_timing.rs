//! Times `kiln::render::render` on synthetic 500-step task files, for checking the renderer's
//! speed in release mode: `cargo run --release --example render_timing`. Prints, asserts nothing.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use kiln::render::{RunVars, TemplateData, render};
use kiln::run_id::RunId;
use kiln::values::Values;

fn task(step: &dyn Fn(usize) -> String) -> String {
    let mut task = String::from("version: v1.1.0\nsteps:\n");
    for i in 0..500 {
        task.push_str(&step(i));
    }
    task
}

fn main() {
    let plain = task(&|i| {
        format!(
            "  - id: step{i}\n    build: -t {{{{.Run.Registry}}}}/web:{{{{.Run.ID}}}}-{i} -f Dockerfile .\n    when: [\"-\"]\n    env: [\"A=1\"]\n    timeout: 600\n"
        )
    });
    let with_default = task(&|i| {
        format!(
            "  - id: step{i}\n    build: -t {{{{.Run.Registry}}}}/{{{{.Values.image}}}}:{{{{.Run.ID}}}}-{i} .\n    env:\n      - A={{{{ .Values.tag | default \"latest\" }}}}\n    timeout: 600\n"
        )
    });
    let with_if = task(&|i| {
        format!(
            "  - id: step{i}\n    cmd: {{{{ if .Values.image }}}}{{{{.Values.image}}}}{{{{ else }}}}busybox{{{{ end }}}} echo {{{{.Run.ID}}}}\n    timeout: 600\n"
        )
    });
    let mut run = RunVars::new(RunId::new("ca1"), Utc::now());
    run.registry = "myreg.azurecr.io".into();
    let values = Values::from_yaml("image: web\n", "v").unwrap();
    let data = TemplateData { run, values, secrets: BTreeMap::new() };
    let missing = with_default.replace(".Values.image", ".Values.nope");
    for (name, text) in [
        ("plain refs", &plain),
        ("default per step", &with_default),
        ("if per step", &with_if),
        ("default per step, image missing", &missing),
    ] {
        let lines = text.lines().count();
        let actions = text.matches("{{").count();
        let n = 50;
        let first = render(text, &data).unwrap();
        let start = Instant::now();
        for _ in 0..n {
            let _ = render(text, &data).unwrap();
        }
        let per = start.elapsed() / n;
        println!(
            "{name}: {lines} lines, {actions} actions, {} missing: {per:?} per render",
            first.missing.len()
        );
    }
}
