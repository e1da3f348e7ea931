//! The editor schema `task-schemas/task.schema.json` (JSON Schema 2020-12) against the example
//! tasks under `examples/` and the edge cases under `tests/cases/{valid,invalid}/`.
//!
//! A task file is checked the way an editor with the YAML language server sees it, after the
//! engine's first step: lines whose trimmed text starts with `#` are deleted, the rest is parsed
//! as YAML (serde-saphyr, YAML 1.1 booleans) into JSON and validated. Go template actions stay
//! in the text; only when the raw text is not valid YAML because of an unquoted action
//! (`timeout: {{.Values.t}}`) is each action swapped for a placeholder scalar while parsing and
//! restored as the string `{{…}}` afterwards.
//!
//! Every invalid case starts with `# expect: <substring of kiln's error message>` (checked
//! against kiln's parser elsewhere) and `# at: <JSON pointer>`, the place where the schema must
//! report an error.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

const SCHEMA_FILE: &str = "task-schemas/task.schema.json";
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
const PLACEHOLDER: &str = "KILN_TEMPLATE_ACTION_";

/// Examples that must exist (more may).
const REQUIRED_EXAMPLES: [&str; 6] = [
    "build-push",
    "parallel",
    "service-probe",
    "values-aliases",
    "retries-timeouts",
    "quick-build",
];

/// Images that exist on an offline machine (plus whatever the task builds itself).
const LOCAL_IMAGES: [&str; 2] = ["busybox", "busybox:latest"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn load_schema() -> Value {
    serde_json::from_str(&read(&repo().join(SCHEMA_FILE)))
        .unwrap_or_else(|e| panic!("{SCHEMA_FILE} is not JSON: {e}"))
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&load_schema())
        .unwrap_or_else(|e| panic!("{SCHEMA_FILE} does not compile as a 2020-12 schema: {e}"))
}

/// All error messages of `instance`, with where they are.
fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<(String, String)> {
    validator.iter_errors(instance).map(|e| (e.instance_path.to_string(), e.to_string())).collect()
}

/// Deletes every line whose trimmed text starts with `#`, as the engine does first.
fn strip_comment_lines(text: &str) -> String {
    text.split_inclusive('\n').filter(|line| !line.trim_start().starts_with('#')).collect()
}

fn parse_yaml(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
}

/// Replaces each `{{…}}` action by a numbered placeholder; returns the text and the actions.
fn replace_actions(text: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut actions = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else { break };
        let end = start + len + 2;
        out.push_str(&rest[..start]);
        out.push_str(&format!("{PLACEHOLDER}{}_", actions.len()));
        actions.push(rest[start..end].to_string());
        rest = &rest[end..];
    }
    out.push_str(rest);
    (out, actions)
}

/// Puts the actions back into every string (keys included) of a parsed document.
fn restore_actions(value: Value, actions: &[String]) -> Value {
    let restore = |s: String| {
        // Highest index first, so that `…_1_` is never replaced inside `…_10_`.
        actions
            .iter()
            .enumerate()
            .rev()
            .fold(s, |s, (i, action)| s.replace(&format!("{PLACEHOLDER}{i}_"), action))
    };
    match value {
        Value::String(s) => Value::String(restore(s)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| restore_actions(v, actions)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter().map(|(k, v)| (restore(k), restore_actions(v, actions))).collect(),
        ),
        other => other,
    }
}

/// A task file as JSON, as described in the module comment.
fn task_to_json(text: &str) -> Result<Value, String> {
    let stripped = strip_comment_lines(text);
    match parse_yaml(&stripped) {
        Ok(value) => Ok(value),
        Err(raw) if stripped.contains("{{") => {
            let (replaced, actions) = replace_actions(&stripped);
            let value = parse_yaml(&replaced)
                .map_err(|e| format!("{raw} (and with template actions replaced: {e})"))?;
            Ok(restore_actions(value, &actions))
        }
        Err(e) => Err(e),
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name().expect("file name").to_string_lossy().into_owned()
}

/// `examples/<dir>` for every directory that holds an `acb.yaml`, sorted.
fn example_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(repo().join("examples"))
        .expect("examples/ exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.join("acb.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn example(name: &str) -> Value {
    let path = repo().join("examples").join(name).join("acb.yaml");
    parse_yaml(&strip_comment_lines(&read(&path)))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn steps(task: &Value) -> &[Value] {
    task["steps"].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Follows a local `$ref` (`#/$defs/x`) once.
fn resolve<'a>(schema: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(pointer) => schema
            .pointer(pointer.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling $ref {pointer}")),
        None => node,
    }
}

fn description<'a>(schema: &'a Value, node: &'a Value) -> &'a str {
    node.get("description")
        .or_else(|| resolve(schema, node).get("description"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

#[test]
fn schema_is_a_valid_2020_12_schema() {
    let schema = load_schema();
    assert_eq!(schema["$schema"], DRAFT_2020_12);
    assert!(schema["$id"].as_str().is_some_and(|id| id.ends_with("task.schema.json")));
    assert!(schema["title"].as_str().is_some_and(|t| !t.is_empty()));
    if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
        panic!("{SCHEMA_FILE} fails the 2020-12 meta-schema at {}: {e}", e.instance_path);
    }
    // Compiling also compiles every `pattern`.
    let validator = validator();
    assert!(validator.is_valid(&json!({"steps": [{"cmd": "busybox true"}]})));
    assert!(!validator.is_valid(&json!({})), "a task without steps must be rejected");
    assert!(!validator.is_valid(&json!({"steps": [{}]})), "an empty step must be rejected");
}

/// Every `(location, keyword, value)` of a schema, skipping the names under `properties`.
fn keywords<'a>(node: &'a Value, at: &str, out: &mut Vec<(String, &'a str, &'a Value)>) {
    match node {
        Value::Object(map) => {
            for (k, v) in map {
                let here = format!("{at}/{k}");
                if k == "properties" || k == "$defs" {
                    for (name, sub) in v.as_object().into_iter().flatten() {
                        keywords(sub, &format!("{here}/{name}"), out);
                    }
                } else {
                    out.push((at.to_string(), k.as_str(), v));
                    keywords(v, &here, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                keywords(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn schema_works_in_draft_07_editors() {
    // The YAML language server validates with draft-07 semantics and JavaScript regexes, so
    // the schema keeps to keywords draft-07 knows and to patterns without inline flags
    // (case-insensitive values are spelled with character classes).
    const NEWER_THAN_DRAFT_07: [&str; 12] = [
        "unevaluatedProperties",
        "unevaluatedItems",
        "prefixItems",
        "dependentRequired",
        "dependentSchemas",
        "minContains",
        "maxContains",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
        "$anchor",
    ];
    let schema = load_schema();
    let mut all = Vec::new();
    keywords(&schema, "", &mut all);
    let mut bad = Vec::new();
    for (at, keyword, value) in all {
        if NEWER_THAN_DRAFT_07.contains(&keyword) {
            bad.push(format!("{at}: `{keyword}` is not understood by draft-07 validators"));
        }
        if keyword == "pattern"
            && let Some(p) = value.as_str()
            && (p.contains("(?") || p.contains("\\A") || p.contains("\\z"))
        {
            bad.push(format!("{at}: pattern {p} is not ECMA-262"));
        }
        if keyword == "$ref" && !value.as_str().is_some_and(|r| r.starts_with("#/$defs/")) {
            bad.push(format!("{at}: non-local $ref {value}"));
        }
    }
    assert!(bad.is_empty(), "\n{}", bad.join("\n"));
}

#[test]
fn schema_covers_every_reference_property_with_a_description() {
    let schema = load_schema();
    assert_eq!(schema["additionalProperties"], false, "unknown top-level keys must be flagged");
    assert_eq!(
        keys(&schema["properties"]),
        set(&[
            "version",
            "stepTimeout",
            "workingDirectory",
            "env",
            "secrets",
            "networks",
            "volumes",
            "alias",
            "steps"
        ])
    );
    let step = &schema["$defs"]["step"];
    assert_eq!(step["additionalProperties"], false, "unknown step keys must be flagged");
    assert_eq!(
        keys(&step["properties"]),
        set(&[
            "build",
            "push",
            "cmd",
            "id",
            "when",
            "timeout",
            "startDelay",
            "retries",
            "retryDelay",
            "retryOnErrors",
            "repeat",
            "ignoreErrors",
            "detach",
            "keep",
            "entryPoint",
            "env",
            "workingDirectory",
            "disableWorkingDirectoryOverride",
            "network",
            "ports",
            "expose",
            "privileged",
            "user",
            "isolation",
            "cpus",
            "pull",
            "cmdDownloadRetries",
            "cmdDownloadRetryDelay",
            "volumeMounts",
            "cache",
            "exitedWith",
            "exitedWithout"
        ])
    );
    let defs = &schema["$defs"];
    assert_eq!(keys(&defs["alias"]["properties"]), set(&["values", "src", "directive"]));
    assert_eq!(keys(&defs["secret"]["properties"]), set(&["id", "keyvault", "clientID"]));
    assert_eq!(
        keys(&defs["network"]["properties"]),
        set(&["name", "driver", "ipv6", "skipCreation", "isDefault"])
    );
    assert_eq!(keys(&defs["volume"]["properties"]), set(&["name", "secret"]));
    assert_eq!(keys(&defs["volumeMount"]["properties"]), set(&["name", "mountPath"]));

    let mut undocumented = Vec::new();
    for (owner, props) in [
        ("task", &schema["properties"]),
        ("step", &step["properties"]),
        ("alias", &defs["alias"]["properties"]),
        ("secret", &defs["secret"]["properties"]),
        ("network", &defs["network"]["properties"]),
        ("volume", &defs["volume"]["properties"]),
        ("volumeMount", &defs["volumeMount"]["properties"]),
    ] {
        for (name, node) in props.as_object().expect("properties object") {
            if description(&schema, node).len() < 20 {
                undocumented.push(format!("{owner}.{name}"));
            }
        }
    }
    assert!(undocumented.is_empty(), "properties without a description: {undocumented:?}");

    // The quirks the reference insists on are spelled out where editors show them.
    let step_desc = |name: &str| description(&schema, &step["properties"][name]).to_string();
    assert!(
        step_desc("retryDelay").contains("5") && step_desc("retryDelay").contains("docs say 0")
    );
    assert!(step_desc("exitedWith").contains("never enforced"));
    assert!(step_desc("exitedWithout").contains("never enforced"));
    assert!(step_desc("timeout").contains("{{"), "integer fields must document templates");
    assert!(description(&schema, &schema["properties"]["env"]).contains("split on `,`"));
}

#[test]
fn schema_accepts_what_editors_see_for_templates_and_yaml_1_1() {
    let validator = validator();
    let step = |extra: Value| {
        let mut step = json!({"cmd": "busybox true"});
        step.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"steps": [step]})
    };
    let accepted = [
        step(json!({"timeout": "{{.Values.t}}", "retries": "{{ .Values.r }}"})),
        step(json!({"detach": "yes", "keep": "Off", "privileged": "{{.Values.p}}"})),
        step(json!({"id": "{{ .Values.id }}", "when": ["{{ .Values.after }}"]})),
        step(json!({"cache": "{{.Values.cache}}"})),
        step(json!({"user": 1000, "cpus": 1.5, "ports": [8080], "expose": ["80"]})),
        json!({"stepTimeout": "{{.Values.stepTimeout}}", "steps": [{"push": ["a"]}]}),
        json!({"version": "v1.0.0", "env": ["A=1,B=2", "C="], "steps": [{"cmd": "x"}]}),
        json!({"version": "1.0-PREVIEW-1", "steps": [{"cmd": "x"}]}),
    ];
    for instance in &accepted {
        let errs = errors(&validator, instance);
        assert!(errs.is_empty(), "{instance} rejected: {errs:?}");
    }
    let rejected = [
        step(json!({"timeout": "ten"})),
        step(json!({"timeout": 1.5})),
        step(json!({"retries": -1})),
        step(json!({"retries": "-1"})),
        step(json!({"detach": "maybe"})),
        step(json!({"id": "a b"})),
        step(json!({"when": []})),
        step(json!({"env": ["NO_EQUALS_SIGN"]})),
        step(json!({"cache": "Enable"})),
        json!({"version": "v1.1", "steps": [{"cmd": "x"}]}),
        json!({"version": "1.1.0", "steps": [{"cmd": "x"}]}),
        json!({"env": ["A=1,", "B=2"], "steps": [{"cmd": "x"}]}),
        json!({"steps": [{"push": []}]}),
        json!({"steps": [{"cmd": ""}]}),
        json!({"steps": [{"build": ".", "push": ["a"], "cmd": "x"}]}),
        json!({"alias": {"directive": "🐳🐳"}, "steps": [{"cmd": "x"}]}),
        json!({"alias": {"unknown": 1}, "steps": [{"cmd": "x"}]}),
        json!({"networks": [{"name": "n", "internal": true}], "steps": [{"cmd": "x"}]}),
    ];
    for instance in &rejected {
        assert!(!validator.is_valid(instance), "{instance} accepted");
    }
}

#[test]
fn examples_are_valid_yaml_and_accepted_by_the_schema() {
    let dirs = example_dirs();
    let names: BTreeSet<String> = dirs.iter().map(|d| file_name(d)).collect();
    assert!(dirs.len() >= 6, "at least six examples, found {names:?}");
    for required in REQUIRED_EXAMPLES {
        assert!(names.contains(required), "missing examples/{required}/acb.yaml");
    }
    let validator = validator();
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = file_name(dir);
        let text = read(&dir.join("acb.yaml"));
        // The header says how to run it.
        let exec = format!("kiln exec -f examples/{name}/acb.yaml");
        let context = format!(" examples/{name}");
        let runs = text.lines().any(|line| {
            line.starts_with('#') && line.contains(&exec) && line.trim_end().ends_with(&context)
        });
        if !runs {
            failures.push(format!("{name}: no `# … {exec} … examples/{name}` header line"));
        }
        if !text.starts_with('#') {
            failures.push(format!("{name}: does not start with a comment header"));
        }
        // Raw files must be valid YAML without any template substitution.
        match parse_yaml(&strip_comment_lines(&text)) {
            Ok(task) => {
                for (at, message) in errors(&validator, &task) {
                    failures.push(format!("{name}: {at}: {message}"));
                }
            }
            Err(e) => failures.push(format!("{name}: not valid raw YAML: {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The first token of a `cmd` after first-token alias expansion (`alias.values` only).
fn cmd_image(task: &Value, cmd: &str) -> String {
    let first = cmd.split_whitespace().next().unwrap_or("");
    let aliases = &task["alias"]["values"];
    let name = first.strip_prefix('$').unwrap_or(first);
    match aliases.get(name).and_then(Value::as_str) {
        Some(text) => text.split_whitespace().next().unwrap_or("").to_string(),
        None => first.to_string(),
    }
}

/// The `-t`/`--tag` values of every build step.
fn built_tags(task: &Value) -> BTreeSet<String> {
    let mut tags = BTreeSet::new();
    for step in steps(task) {
        let Some(build) = step["build"].as_str() else { continue };
        let tokens: Vec<&str> = build.split_whitespace().collect();
        for pair in tokens.windows(2) {
            if pair[0] == "-t" || pair[0] == "--tag" {
                tags.insert(pair[1].to_string());
            }
        }
    }
    tags
}

/// Base images of a Dockerfile: `FROM` operands with `ARG` defaults expanded, minus stages.
fn dockerfile_bases(text: &str) -> Vec<String> {
    let mut args: Vec<(String, String)> = Vec::new();
    let mut stages: BTreeSet<String> = BTreeSet::new();
    let mut bases = Vec::new();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next().map(str::to_ascii_uppercase).as_deref() {
            Some("ARG") => {
                if let Some((name, default)) = words.next().and_then(|a| a.split_once('=')) {
                    args.push((name.to_string(), default.to_string()));
                }
            }
            Some("FROM") => {
                let words: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
                let mut image = words.first().copied().unwrap_or("").to_string();
                for (name, default) in &args {
                    image = image.replace(&format!("${{{name}}}"), default);
                    image = image.replace(&format!("${name}"), default);
                }
                if !stages.contains(&image) {
                    bases.push(image);
                }
                if words.len() == 3 && words[1].eq_ignore_ascii_case("as") {
                    stages.insert(words[2].to_string());
                }
            }
            _ => {}
        }
    }
    bases
}

#[test]
fn examples_only_need_the_local_busybox_image() {
    let mut failures = Vec::new();
    for dir in example_dirs() {
        let name = file_name(&dir);
        let task = example(&name);
        let tags = built_tags(&task);
        for (i, step) in steps(&task).iter().enumerate() {
            let Some(cmd) = step["cmd"].as_str() else { continue };
            let image = cmd_image(&task, cmd);
            if !LOCAL_IMAGES.contains(&image.as_str()) && !tags.contains(&image) {
                failures.push(format!("{name}: step {i} runs `{image}`, not busybox"));
            }
        }
        for entry in fs::read_dir(&dir).expect("example dir") {
            let path = entry.expect("directory entry").path();
            if !file_name(&path).starts_with("Dockerfile") {
                continue;
            }
            let bases = dockerfile_bases(&read(&path));
            if bases.is_empty() {
                failures.push(format!("{name}: {} has no FROM", file_name(&path)));
            }
            for base in bases {
                if !LOCAL_IMAGES.contains(&base.as_str()) {
                    failures.push(format!("{name}: {} builds FROM `{base}`", file_name(&path)));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn step_by_id<'a>(task: &'a Value, id: &str) -> &'a Value {
    steps(task).iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no step `{id}`"))
}

fn when(step: &Value) -> Vec<&str> {
    step["when"]
        .as_array()
        .map(|w| w.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn examples_show_what_they_promise() {
    // build-push: build, run the built image, push it.
    let task = example("build-push");
    let tags = built_tags(&task);
    let kinds: Vec<&str> = steps(&task)
        .iter()
        .map(|s| ["build", "cmd", "push"].into_iter().find(|k| s.get(*k).is_some()).unwrap())
        .collect();
    assert_eq!(kinds, ["build", "cmd", "push"]);
    assert!(tags.contains(&cmd_image(&task, steps(&task)[1]["cmd"].as_str().unwrap())));
    assert!(
        steps(&task)[2]["push"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| tags.contains(p.as_str().unwrap()))
    );

    // parallel: at least three `-` steps joined by one step that waits for all of them.
    let task = example("parallel");
    let fan_out: Vec<&str> = steps(&task)
        .iter()
        .filter(|s| when(s) == ["-"])
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(fan_out.len() >= 3, "fan-out steps: {fan_out:?}");
    assert!(steps(&task).iter().any(|s| when(s) == fan_out), "no join on {fan_out:?}");

    // service-probe: detached `web` service, probe by step ID with retries.
    let task = example("service-probe");
    let web = step_by_id(&task, "web");
    assert_eq!(web["detach"], true);
    assert!(
        web["cmd"].as_str().unwrap().contains("httpd")
            && web["cmd"].as_str().unwrap().contains("/workspace")
    );
    let probe = steps(&task)
        .iter()
        .find(|s| s["cmd"].as_str().is_some_and(|c| c.contains("http://web:8080/")))
        .expect("a step that fetches http://web:8080/");
    assert!(probe["retries"].as_i64().is_some_and(|r| r > 0));

    // values-aliases: v1.1.0, custom aliases (one as first cmd token), nested values, `$$`.
    let dir = repo().join("examples/values-aliases");
    let text = strip_comment_lines(&read(&dir.join("acb.yaml")));
    let task = example("values-aliases");
    assert_eq!(task["version"], "v1.1.0");
    let aliases = keys(&task["alias"]["values"]);
    assert!(aliases.len() >= 2);
    assert!(steps(&task).iter().any(|s| {
        s["cmd"]
            .as_str()
            .and_then(|c| c.split_whitespace().next())
            .is_some_and(|t| aliases.contains(t))
    }));
    assert!(text.contains("{{.Values.app.name}}") && text.contains("$$ID"));
    let values = parse_yaml(&read(&dir.join("values.yaml"))).expect("values.yaml is YAML");
    assert!(values["app"]["name"].is_string(), "values.yaml must have nested app.name");

    // retries-timeouts: all the knobs.
    let task = example("retries-timeouts");
    assert!(task["stepTimeout"].is_i64());
    for knob in ["timeout", "retries", "retryDelay", "repeat", "ignoreErrors", "startDelay"] {
        assert!(steps(&task).iter().any(|s| s.get(knob).is_some()), "no step uses `{knob}`");
    }

    // quick-build: build, then push with `when: [build]`; a .dockerignore with a `!` rule
    // whose ignored and re-included files exist.
    let dir = repo().join("examples/quick-build");
    let task = example("quick-build");
    let [build, push] = steps(&task) else { panic!("quick-build must have exactly two steps") };
    assert!(build["build"].is_string());
    assert!(push["push"].is_array());
    assert_eq!(when(push), [build["id"].as_str().unwrap()]);
    let ignore = read(&dir.join(".dockerignore"));
    let reincluded: Vec<&str> = ignore.lines().filter_map(|l| l.strip_prefix('!')).collect();
    assert!(!reincluded.is_empty(), ".dockerignore needs a `!` rule");
    for file in reincluded {
        assert!(dir.join(file).is_file(), "re-included {file} does not exist");
    }
    assert!(dir.join("debug.log").is_file() && ignore.lines().any(|l| l == "*.log"));
}

/// `(expect, at)` from the `# expect:` and `# at:` header lines of an invalid case.
fn case_header(path: &Path, text: &str) -> (String, String) {
    let mut lines = text.lines();
    let expect = lines.next().and_then(|l| l.strip_prefix("# expect:")).map(str::trim);
    let at = lines.next().and_then(|l| l.strip_prefix("# at:")).map(str::trim);
    match (expect, at) {
        (Some(expect), Some(at)) if !expect.is_empty() => (expect.to_string(), at.to_string()),
        _ => {
            panic!("{} must start with `# expect: <message>` and `# at: <pointer>`", path.display())
        }
    }
}

#[test]
fn invalid_cases_are_rejected_where_expected() {
    let dir = repo().join("tests/cases/invalid");
    let files = yaml_files(&dir);
    assert!(files.len() >= 12, "at least 12 invalid cases, found {}", files.len());
    let names: BTreeSet<String> = files.iter().map(|f| file_name(f)).collect();
    for required in [
        "missing-step-type.yaml",
        "two-step-types.yaml",
        "negative-retries.yaml",
        "unknown-step-key.yaml",
        "unknown-top-level-key.yaml",
        "bad-version.yaml",
        "bad-volume-name.yaml",
        "bad-secret-file-name.yaml",
        "relative-mount-path.yaml",
        "cache-maybe.yaml",
        "when-not-a-list.yaml",
        "env-not-strings.yaml",
        "steps-not-a-list.yaml",
    ] {
        assert!(names.contains(required), "missing tests/cases/invalid/{required}");
    }
    let validator = validator();
    let mut failures = Vec::new();
    for path in &files {
        let name = file_name(path);
        let text = read(path);
        let (_expect, at) = case_header(path, &text);
        // Each case must be well-formed YAML: the schema, not the YAML parser, rejects it.
        let task = match task_to_json(&text) {
            Ok(task) => task,
            Err(e) => {
                failures.push(format!("{name}: not YAML: {e}"));
                continue;
            }
        };
        let errs = errors(&validator, &task);
        if errs.is_empty() {
            failures.push(format!("{name}: accepted by the schema"));
        } else if !errs.iter().any(|(path, _)| *path == at) {
            failures.push(format!("{name}: no error at `{at}`, only {errs:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn valid_cases_are_accepted() {
    let files = yaml_files(&repo().join("tests/cases/valid"));
    assert!(files.len() >= 8, "at least 8 valid cases, found {}", files.len());
    let validator = validator();
    let mut failures = Vec::new();
    for path in &files {
        let name = file_name(path);
        match task_to_json(&read(path)) {
            Ok(task) => {
                for (at, message) in errors(&validator, &task) {
                    failures.push(format!("{name}: {at}: {message}"));
                }
            }
            Err(e) => failures.push(format!("{name}: not YAML: {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn yaml_1_1_booleans_reach_the_schema_as_booleans() {
    let task = task_to_json(&read(&repo().join("tests/cases/valid/yaml11-booleans.yaml"))).unwrap();
    assert_eq!(task["steps"][0]["detach"], true);
    assert_eq!(task["steps"][0]["privileged"], false);
    assert_eq!(task["steps"][1]["keep"], true);
    assert_eq!(task["steps"][1]["pull"], false);
}

#[test]
fn unquoted_template_actions_become_template_strings() {
    let text = read(&repo().join("tests/cases/valid/unquoted-template.yaml"));
    // The raw text is not usable as JSON: the action parses as a mapping (or not at all).
    assert!(parse_yaml(&strip_comment_lines(&text)).is_err());
    let task = task_to_json(&text).expect("parses with placeholders");
    assert_eq!(task["steps"][0]["timeout"], "{{ .Values.t | default 30 }}");

    // Several actions, inside and outside quotes, in keys and values, round-trip exactly.
    let (replaced, actions) = replace_actions("a: {{.A}}\nb: \"x-{{ .B }}-{{.C}}\"\n{{.K}}: 1\n");
    assert_eq!(actions, ["{{.A}}", "{{ .B }}", "{{.C}}", "{{.K}}"]);
    let value = restore_actions(parse_yaml(&replaced).unwrap(), &actions);
    assert_eq!(value, json!({"a": "{{.A}}", "b": "x-{{ .B }}-{{.C}}", "{{.K}}": 1}));

    // Broken YAML that is not about templates still fails.
    assert!(task_to_json("steps: [\n").is_err());
    assert!(task_to_json("steps:\n  - cmd: a: b\n    x: {{.A}}\n").is_err());
}

#[test]
fn comment_lines_are_stripped_like_the_engine_does() {
    let text = "# head\nsteps:\n  - cmd: busybox echo a # trailing stays for YAML\n    # indented comment\n    id: a\n";
    assert_eq!(
        strip_comment_lines(text),
        "steps:\n  - cmd: busybox echo a # trailing stays for YAML\n    id: a\n"
    );
}
