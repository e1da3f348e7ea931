//! Rendering a task file as a Go `text/template` (reference §1.1 step 6, §4.1, §4.3).
//!
//! ACR renders the whole task file — after comment stripping and alias substitution, before
//! YAML — with the data `{Run, Build, Values, ValuesJSON, RunJSON, Secrets}` and Sprig's
//! functions, using `missingkey=zero`, and then deletes every `<no value>` from the output, so
//! an undefined value silently becomes an empty string (§9 item 6). kiln renders the same way
//! with gtmpl-ng (`funcs.rs` lists where its functions differ from gtmpl-ng's Helm set) and
//! additionally reports each missing value with its position, so the CLI can warn about it
//! (see `missing.rs` for how, and its limits).
//!
//! gtmpl-ng parses at a few microseconds per action, so plain top-level actions are answered
//! without it and only the rest is handed to it in one parse (`segment.rs`); a file that does
//! not split cleanly, or any failure on that path, is rendered whole by gtmpl-ng, whose errors
//! are the ones reported.
//!
//! Renders are bounded (output size, loop iterations, wall-clock deadline) because task files
//! are untrusted input to a shared server.

mod funcs;
mod go_time;
mod missing;
mod scan;
mod segment;

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use gtmpl_ng::{Context, ExecError, Func, Limits, ParseError, Template, Value};
use serde_json::Value as Json;

use crate::run_id::RunId;
use crate::values::Values;

/// The `.Run` variables of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunVars {
    pub id: RunId,
    /// The per-run volume mounted at `/workspace` in every step.
    pub shared_volume: String,
    /// The registry's login server, e.g. `myreg.azurecr.io`.
    pub registry: String,
    /// Run start; rendered in UTC as `20190503-043342z`.
    pub date: DateTime<Utc>,
    /// Go's GOOS name of the engine, e.g. `linux`.
    pub os: String,
    /// Go's GOARCH name of the engine, e.g. `amd64`.
    pub architecture: String,
    pub commit: String,
    pub branch: String,
    pub task_name: String,
    pub repository: String,
    pub git_tag: String,
    pub triggered_by: String,
    pub os_version: String,
}

impl RunVars {
    /// A run on this host: OS and architecture are the host's in Go's spelling, the shared
    /// volume is named after the run (names must be run-unique, §9 item 20), the rest empty.
    pub fn new(id: RunId, date: DateTime<Utc>) -> Self {
        let architecture = if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
            "ppc64le"
        } else {
            goarch(std::env::consts::ARCH)
        };
        Self {
            shared_volume: format!("kiln_vol_{id}"),
            id,
            registry: String::new(),
            date,
            os: goos(std::env::consts::OS).to_string(),
            architecture: architecture.to_string(),
            commit: String::new(),
            branch: String::new(),
            task_name: String::new(),
            repository: String::new(),
            git_tag: String::new(),
            triggered_by: String::new(),
            os_version: String::new(),
        }
    }

    /// A run on `platform` (`os/arch[/variant]`), where the engine runs it natively or
    /// emulated: `.Run.OS` and `.Run.Architecture` are the platform's, as on an ACR agent of
    /// that platform (OCI's and Go's names agree for the architectures a run may name).
    pub fn set_platform(&mut self, platform: &str) {
        let mut parts = platform.split('/');
        if let (Some(os), Some(architecture)) = (parts.next(), parts.next()) {
            (self.os, self.architecture) = (os.to_string(), architecture.to_string());
        }
    }

    /// The registry's name: the login server up to its first `.` (`myreg.azurecr.io` → `myreg`).
    pub fn registry_name(&self) -> &str {
        self.registry.split('.').next().unwrap_or_default()
    }

    /// `.Run.Date`: Go layout `20060102-150405` plus a literal `z`.
    pub fn date_string(&self) -> String {
        self.date.format("%Y%m%d-%H%M%Sz").to_string()
    }

    /// The `.Run` map, by field name (in [`RUN_FIELDS`] order).
    fn fields(&self) -> [(&'static str, String); 14] {
        let values = [
            self.id.as_str().to_string(),
            self.shared_volume.clone(),
            self.registry.clone(),
            self.registry_name().to_string(),
            self.date_string(),
            self.os.clone(),
            self.architecture.clone(),
            self.commit.clone(),
            self.branch.clone(),
            self.task_name.clone(),
            self.repository.clone(),
            self.git_tag.clone(),
            self.triggered_by.clone(),
            self.os_version.clone(),
        ];
        let mut values = values.into_iter();
        RUN_FIELDS.map(|name| (name, values.next().unwrap_or_default()))
    }
}

/// The names of the `.Run` variables. The first nine are also predefined aliases (`$ID`, …;
/// see [`crate::task::alias::RUN_ALIASES`]), so keep them first.
pub(crate) const RUN_FIELDS: [&str; 14] = [
    "ID",
    "SharedVolume",
    "Registry",
    "RegistryName",
    "Date",
    "OS",
    "Architecture",
    "Commit",
    "Branch",
    "TaskName",
    "Repository",
    "GitTag",
    "TriggeredBy",
    "OSVersion",
];

/// Go's GOOS for a Rust `target_os` name.
pub fn goos(rust_os: &str) -> &str {
    match rust_os {
        "macos" => "darwin",
        other => other,
    }
}

/// Go's GOARCH for a Rust `target_arch` name.
pub fn goarch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "loongarch64" => "loong64",
        "wasm32" => "wasm",
        other => other,
    }
}

/// Everything a task file renders with.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateData {
    pub run: RunVars,
    /// The merged values (`values::merge_values`).
    pub values: Values,
    /// Resolved task secrets by `id`, exposed as `.Secrets.<id>`.
    pub secrets: BTreeMap<String, String>,
}

impl TemplateData {
    fn context(&self) -> Value {
        let fields = self.run.fields();
        let run_json = shell_quote_json(
            &fields.iter().map(|(k, v)| (k.to_string(), Json::from(v.as_str()))).collect(),
        );
        let run: HashMap<String, Value> =
            fields.into_iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        let values_json = shell_quote_json(self.values.as_map());
        let build = HashMap::from([("ID".to_string(), Value::from(self.run.id.as_str()))]);
        let values =
            self.values.as_map().iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect();
        let secrets = self.secrets.iter().map(|(k, v)| (k.clone(), Value::from(v))).collect();
        Value::Map(HashMap::from([
            ("Run".to_string(), Value::Map(run)),
            ("Build".to_string(), Value::Map(build)),
            ("Values".to_string(), Value::Map(values)),
            ("ValuesJSON".to_string(), Value::String(values_json)),
            ("RunJSON".to_string(), Value::String(run_json)),
            ("Secrets".to_string(), Value::Map(secrets)),
        ]))
    }
}

/// A YAML/JSON value as template data. `null` is Go's nil, which prints `<no value>`.
fn json_to_value(v: &Json) -> Value {
    match v {
        Json::Null => Value::NoValue,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into(),
            (None, Some(u)) => u.into(),
            _ => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::Array(items.iter().map(json_to_value).collect()),
        Json::Object(map) => {
            Value::Map(map.iter().map(|(k, v)| (k.clone(), json_to_value(v))).collect())
        }
    }
}

/// `RunJSON`/`ValuesJSON`: the value as Go's `json.Marshal` writes it (keys sorted, `<>&`
/// escaped), single-quoted for a POSIX shell when it holds anything a shell would interpret,
/// so `--build-arg run={{.RunJSON}}` passes it through intact.
fn shell_quote_json(map: &serde_json::Map<String, Json>) -> String {
    let mut out = String::new();
    write_go_json_object(map, &mut out);
    shell_words::quote(&out).into_owned()
}

fn write_go_json_object(map: &serde_json::Map<String, Json>, out: &mut String) {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_go_json_string(k, out);
        out.push(':');
        write_go_json(v, out);
    }
    out.push('}');
}

fn write_go_json(v: &Json, out: &mut String) {
    match v {
        Json::Object(map) => write_go_json_object(map, out),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Json::String(s) => write_go_json_string(s, out),
        Json::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => out.push_str(&go_json_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Json::Bool(_) | Json::Null => out.push_str(&v.to_string()),
    }
}

/// A JSON string with Go's HTML-safe escapes on top of the standard ones.
fn write_go_json_string(s: &str, out: &mut String) {
    let quoted = Json::String(s.to_string()).to_string();
    for c in quoted.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
}

/// Go's float encoding: shortest digits, plain notation between 1e-6 and 1e21, otherwise an
/// exponent of at least two digits (`1e-07`, `1e+21`).
fn go_json_float(f: f64) -> String {
    let abs = f.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        return f.to_string();
    }
    let text = format!("{f:e}");
    match text.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => text,
    }
}

/// The result of a render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The rendered text with every `<no value>` deleted, as ACR does.
    pub text: String,
    /// Template expressions that named a value the data does not have, in template order.
    pub missing: Vec<MissingValue>,
}

/// One reference to an undefined value, which rendered as an empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingValue {
    /// 1-based line in the template input.
    pub line: u32,
    /// 1-based column in characters, as [`crate::source_map::Locator`] counts them.
    pub col: u32,
    /// The expression as written, e.g. `.Values.tag` or `index .Values "my-key"`.
    pub expr: String,
}

/// A template that could not be parsed or executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct RenderError {
    /// 1-based line in the template input.
    pub line: u32,
    /// 1-based column in characters.
    pub col: u32,
    pub message: String,
}

/// Most bytes one render may write.
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// Longest one render may take.
const DEADLINE: Duration = Duration::from_secs(2);

/// What one render may consume. Real task files render in microseconds and loop rarely; these
/// are orders of magnitude above that and far below what would hurt a shared server.
fn limits() -> Limits {
    Limits::default()
        .with_iterations(10_000)
        .with_total_iterations(1_000_000)
        .with_output_bytes(MAX_OUTPUT_BYTES)
        // gtmpl-ng's default, which is also what functions called outside a render (by
        // `segment`) see, so both paths refuse the same things.
        .with_function_output(1_000_000)
        .with_deadline(DEADLINE)
}

/// The function table, built once: copying a finished map is cheaper than re-inserting 200
/// entries per render.
static FUNCS: LazyLock<HashMap<String, Func>> = LazyLock::new(|| {
    let mut tmpl = Template::default();
    tmpl.add_funcs(&funcs::all().collect::<Vec<_>>());
    tmpl.funcs
});

fn parse(text: &str) -> Result<Template, ParseError> {
    let mut tmpl = Template::with_limits(limits());
    tmpl.funcs = FUNCS.clone();
    tmpl.parse(text)?;
    Ok(tmpl)
}

/// Renders a task file (or any text) with ACR's template semantics.
pub fn render(template: &str, data: &TemplateData) -> Result<Rendered, RenderError> {
    // gtmpl-ng refuses to execute a template with nothing in it; Go renders it as "".
    if template.is_empty() {
        return Ok(Rendered { text: String::new(), missing: Vec::new() });
    }
    let root = data.context();
    let context = Context::from(root.clone());
    let out =
        match segment::split(template, &FUNCS).and_then(|p| render_pieces(&p, &root, &context)) {
            Some(out) => out,
            None => render_whole(template, &context)?,
        };
    if !out.contains(NO_VALUE) {
        return Ok(Rendered { text: out, missing: Vec::new() });
    }
    let probe = |texts: &[String]| -> Vec<Option<String>> {
        let started = Instant::now();
        let all: Vec<&str> = texts.iter().map(String::as_str).collect();
        match render_many(&all, &context) {
            Some(outputs) => outputs.into_iter().map(Some).collect(),
            // One of them fails on its own; find out which by rendering each. Probes may run
            // actions the render skipped (in a branch not taken), so they share one deadline
            // and what is left unprobed is reported.
            None => all
                .iter()
                .map(|t| {
                    if started.elapsed() > DEADLINE {
                        return None;
                    }
                    parse(t).ok()?.render(&context).ok()
                })
                .collect(),
        }
    };
    let lines = LineIndex::new(template);
    let missing = missing::find(template, data, probe)
        .into_iter()
        .map(|(offset, expr)| {
            let (line, col) = lines.position(offset);
            MissingValue { line, col, expr }
        })
        .collect();
    Ok(Rendered { text: out.replace(NO_VALUE, ""), missing })
}

/// What Go prints for a missing value, and ACR deletes.
const NO_VALUE: &str = "<no value>";

/// Separates the templates `render_many` joins: plain text that no template syntax touches and
/// no trim marker trims.
const SEPARATOR: &str = "\u{0}kiln:next\u{0}";

/// Renders several independent templates with one gtmpl-ng parse, which is what makes the
/// split in [`segment`] pay off. `None` if any of them fails (or one printed the separator);
/// the caller then takes the slow path, which also reports the error exactly as Go would.
fn render_many(texts: &[&str], context: &Context) -> Option<Vec<String>> {
    if texts.is_empty() {
        return Some(Vec::new());
    }
    let out = parse(&texts.join(SEPARATOR)).ok()?.render(context).ok()?;
    let parts: Vec<String> = out.split(SEPARATOR).map(str::to_string).collect();
    (parts.len() == texts.len()).then_some(parts)
}

/// The fast path's output, or `None` to render the file whole instead.
fn render_pieces(pieces: &[segment::Piece], root: &Value, context: &Context) -> Option<String> {
    let started = Instant::now();
    // Regions that are pure and equal render equally: render each once. Real task files repeat
    // the same few constructs on every step.
    let mut distinct: Vec<&str> = Vec::new();
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    let mut slots = Vec::new();
    for piece in pieces {
        if let segment::Piece::Region { text, pure } = piece {
            let slot = match slot_of.get(text) {
                Some(&slot) if *pure => slot,
                _ => {
                    distinct.push(text);
                    if *pure {
                        slot_of.insert(text, distinct.len() - 1);
                    }
                    distinct.len() - 1
                }
            };
            slots.push(slot);
        }
    }
    let outputs = render_many(&distinct, context)?;
    let mut slots = slots.into_iter();
    let mut out = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        match piece {
            segment::Piece::Text(text) => out.push_str(text),
            segment::Piece::Pipeline(commands) => {
                out.push_str(&segment::evaluate(commands, root)?);
                // gtmpl-ng's deadline does not cover calls made here. The slow functions are
                // left to gtmpl-ng, so reading the clock now and then is enough.
                if i % 64 == 0 && started.elapsed() > DEADLINE {
                    return None;
                }
            }
            segment::Piece::Region { .. } => out.push_str(outputs.get(slots.next()?)?),
        }
        // The whole render reports this limit with the position where it was crossed.
        if out.len() > MAX_OUTPUT_BYTES {
            return None;
        }
    }
    Some(out)
}

/// The slow path: the whole file through gtmpl-ng, as ACR renders it.
fn render_whole(template: &str, context: &Context) -> Result<String, RenderError> {
    let lines = LineIndex::new(template);
    let tmpl = parse(template).map_err(|e| parse_error(e, template, &lines))?;
    tmpl.render(context).map_err(|e| exec_error(e, &lines))
}

fn parse_error(e: ParseError, template: &str, lines: &LineIndex) -> RenderError {
    let found = match e {
        ParseError::WithContext(ctx, message) => {
            let (line, col) = lines.gtmpl_position(ctx.line, ctx.col);
            RenderError { line, col, message }
        }
        ParseError::UnexpectedEnd => {
            let (line, col) = lines.position(template.len());
            RenderError { line, col, message: e.to_string() }
        }
        other => RenderError { line: 1, col: 1, message: other.to_string() },
    };
    // Actions may span lines, so a `{{` that is never closed swallows the rest of the file and
    // the parser fails somewhere after it (at the end, or at the first thing that is not
    // template syntax). The `{{` is what the user has to find.
    let Some((line, col)) = scan::unclosed_action(template).map(|o| lines.position(o)) else {
        return found;
    };
    if (line, col) > (found.line, found.col) {
        return found;
    }
    let message = if found.message.starts_with("unclosed") {
        found.message
    } else {
        format!(
            "unclosed action (the parser stopped at {}:{}: {})",
            found.line, found.col, found.message
        )
    };
    RenderError { line, col, message }
}

fn exec_error(e: ExecError, lines: &LineIndex) -> RenderError {
    match e {
        ExecError::Structured(s) => {
            let (line, col) = lines.gtmpl_position(s.context.line, s.context.col);
            RenderError { line, col, message: s.message }
        }
        // Errors gtmpl-ng raises before it reaches a node; rare, and there is no better spot.
        other => RenderError { line: 1, col: 1, message: other.to_string() },
    }
}

/// Byte offsets ↔ 1-based (line, character column) in the template input.
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let starts =
            std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { text, starts }
    }

    fn position(&self, offset: usize) -> (u32, u32) {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let before = self.text.get(start..offset.min(self.text.len())).unwrap_or_default();
        (to_u32(line), to_u32(before.chars().count() + 1))
    }

    /// gtmpl-ng's 1-based line and byte column, in characters. A column past the end of the
    /// line (gtmpl-ng points one past it at end of input) keeps its overshoot.
    fn gtmpl_position(&self, line: usize, byte_col: usize) -> (u32, u32) {
        let Some(&start) = self.starts.get(line.max(1) - 1) else {
            return (to_u32(line), to_u32(byte_col));
        };
        let end = self.starts.get(line).map_or(self.text.len(), |&next| next - 1);
        let line_text = &self.text[start..end];
        let want = byte_col.saturating_sub(1);
        let boundary = (0..=want.min(line_text.len()))
            .rev()
            .find(|&i| line_text.is_char_boundary(i))
            .unwrap_or_default();
        let overshoot = want.saturating_sub(line_text.len());
        let chars = line_text[..boundary].chars().count() + overshoot;
        (to_u32(line), to_u32(chars + 1))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
