//! Parse + validate + render + plan of a 500-step task file: the work the control plane does
//! for every run before a worker sees it. Goal (issue 3): under 5 ms.
//!
//! `cargo bench --bench task_pipeline`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

/// The allocator the `kiln` binary ships with, so the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use kiln_plan::plan::RunId;
use kiln_task::config::Config;
use kiln_task::plan::plan_file;
use kiln_task::render::{RunVars, TemplateData, render};
use kiln_task::task::load::LoadOptions;
use kiln_task::task::yaml;
use kiln_task::values::{SetFlag, SetValue, Values, merge_values};

/// A v1.1.0 file of `n` steps shaped like real ones: builds, tests, pushes, fan-outs and joins,
/// with aliases, `.Run` and `.Values` templates, env and comments.
fn task_file(n: usize) -> String {
    let mut s = String::from(
        "# generated for the benchmark\nversion: v1.1.0\nstepTimeout: 900\nenv: [\"CI=true\", \"A=1,B=2\"]\nalias:\n  values:\n    repo: team/web\nsteps:\n",
    );
    for i in 0..n {
        match i % 5 {
            0 => write!(
                s,
                "  # build {i}\n  - id: build{i}\n    build: -t $Registry/$repo:$ID-{i} -f Dockerfile --build-arg V={{{{.Values.version}}}} .\n    when: [\"-\"]\n"
            ),
            1 => write!(
                s,
                "  - id: test{i}\n    cmd: $Registry/$repo:$ID-{} sh -c 'echo {{{{.Values.greeting | upper}}}} && ./run-tests.sh'\n    env: [\"STEP={i}\", \"RUN={{{{.Run.ID}}}}\"]\n    retries: 2\n    timeout: 120\n",
                i - 1
            ),
            2 => write!(
                s,
                "  - id: svc{i}\n    cmd: busybox httpd -f -p 8080\n    detach: true\n    when: [\"-\"]\n"
            ),
            3 => write!(
                s,
                "  - id: probe{i}\n    cmd: busybox wget -qO- http://svc{}:8080/\n    when: [svc{}, test{}]\n    workingDirectory: src\n",
                i - 1,
                i - 1,
                i - 2
            ),
            _ => write!(s, "  - id: push{i}\n    push: [\"$Registry/$repo:$ID-{}\"]\n    when: [probe{}]\n", i - 4, i - 1),
        }
        .expect("write to a String");
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = task_file(500);
    let sets = [
        SetValue::parse(SetFlag::Set, "version=1.2.3").expect("flag"),
        SetValue::parse(SetFlag::Set, "greeting=hello").expect("flag"),
    ];
    let mut run = RunVars::new(RunId::new("ka1"), chrono::Utc::now());
    run.registry = "registry.local".into();
    let data = TemplateData {
        run,
        values: merge_values(Values::default(), &sets).values,
        secrets: BTreeMap::new(),
    };
    let images = Config::default().image_aliases();
    let opts = LoadOptions {
        data: &data,
        images: &images,
        base_dir: Path::new("."),
        alias_fetch_timeout: Duration::from_secs(2),
    };

    let planned = plan_file(&text, &opts, Vec::new(), false).expect("the generated file is valid");
    assert_eq!(planned.plan.steps.len(), 500);
    assert!(planned.diagnostics.iter().all(|d| !d.is_error()));

    c.bench_function("plan_file 500 steps", |b| {
        b.iter(|| plan_file(black_box(&text), &opts, Vec::new(), false).expect("valid"))
    });
    // The two heaviest stages on their own, to see where the time goes.
    let rendered = planned.loaded.rendered.clone();
    c.bench_function("yaml::parse 500 steps", |b| {
        b.iter(|| yaml::parse(black_box(&rendered)).expect("valid"))
    });
    c.bench_function("render 500 steps", |b| {
        b.iter(|| render(black_box(&rendered), &data).expect("valid"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
