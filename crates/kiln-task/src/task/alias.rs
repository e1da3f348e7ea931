//! Aliases (§4.4): the `alias:` block of a v1.1.0 task file and the textual substitution it
//! drives.
//!
//! ACR handles aliases before YAML and templates see the file: it cuts the top-level `alias:`
//! block out line by line, renders it, merges its `values` and `src` files over the built-in
//! aliases, then rewrites `<directive><name>` everywhere in the rest of the raw text, shell
//! commands included (sharp edge §9.7). After parsing, an alias name used bare as the first
//! token of a `cmd` is expanded too. This module reproduces each of those steps, including ACR's
//! quirks, and records enough (line maps, replacement positions) for kiln to point diagnostics
//! at the file the user wrote and to warn about rewritten shell text.
//!
//! The built-in image aliases come from kiln's configuration rather than being fixed to
//! mcr.microsoft.com, since self-hosted users may pull from elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use crate::diagnostic::{Diagnostic, Pos};
use crate::render::RUN_FIELDS;
use crate::source_map::LineMap;
use crate::task::preprocess::scan_lines;
use crate::task::yaml::{self, Node, Value};

/// The directive when `alias.directive` does not set one.
pub const DEFAULT_DIRECTIVE: char = '$';

/// How long one http(s) `alias.src` may take, as in ACR.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The predefined run aliases: `$ID` → `{{.Run.ID}}` and so on, rendered later with the file.
pub const RUN_ALIASES: &[&str] = RUN_FIELDS.split_at(9).0;

/// Whether `name` is a valid alias name (`^[a-zA-Z0-9]+$`).
pub fn is_alias_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A task file split into its top-level `alias:` block and everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasBlock {
    /// The block's lines (each ending in `\n`), empty when the file has none.
    pub block: String,
    /// Lines of `block` → lines of the input.
    pub block_lines: LineMap,
    /// The input line of the `alias:` line.
    pub first_line: Option<u32>,
    /// Every other line (each ending in `\n`).
    pub rest: String,
    /// Lines of `rest` → lines of the input.
    pub rest_lines: LineMap,
}

/// Cuts the `alias:` block out of `text` the way ACR does, line by line: it starts at a line
/// matching `alias\s*:` at column 0 and runs up to the next line that looks like a top-level
/// `key:` (first character neither whitespace nor `:`, a `:` somewhere after). Comment lines are
/// dropped and lines are rejoined with `\n`, as ACR's scanner does.
pub fn split_alias_block(text: &str) -> AliasBlock {
    let (mut block, mut rest) = (String::new(), String::new());
    let (mut block_origin, mut rest_origin) = (Vec::new(), Vec::new());
    let mut first_line = None;
    let mut inside = false;
    for (number, line) in scan_lines(text) {
        if line.trim_start_matches(GO_SPACE).starts_with('#') {
            continue;
        }
        if !inside && is_alias_line(line) {
            inside = true;
            first_line.get_or_insert(number);
        } else if inside && is_top_level_key(line) {
            inside = false;
        }
        let (out, origin) =
            if inside { (&mut block, &mut block_origin) } else { (&mut rest, &mut rest_origin) };
        out.push_str(line);
        out.push('\n');
        origin.push(number);
    }
    AliasBlock {
        block,
        block_lines: LineMap::from_origins(block_origin),
        first_line,
        rest,
        rest_lines: LineMap::from_origins(rest_origin),
    }
}

/// Go regexp's `\s`.
const GO_SPACE: [char; 5] = [' ', '\t', '\n', '\x0c', '\r'];

/// `\Aalias\s*:`
fn is_alias_line(line: &str) -> bool {
    line.strip_prefix("alias").is_some_and(|r| r.trim_start_matches(GO_SPACE).starts_with(':'))
}

/// `\A[^\s:]+[^:]*:`
fn is_top_level_key(line: &str) -> bool {
    line.chars().next().is_some_and(|c| !GO_SPACE.contains(&c) && c != ':') && line.contains(':')
}

/// What [`AliasTable::load`] needs besides the block itself.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The directory relative `src` paths are read from.
    pub base_dir: &'a Path,
    /// The built-in image aliases (`bash` → an image), from kiln's configuration.
    pub images: &'a BTreeMap<String, String>,
    /// The time limit for fetching one http(s) `src`.
    pub fetch_timeout: Duration,
}

/// The merged aliases of one task file and the directive that introduces them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasTable {
    directive: char,
    entries: HashMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: String,
    /// Built in (run or image alias) rather than defined by the task file.
    predefined: bool,
    /// Counted once so substitution can extend the line map without rescanning the value.
    newlines: usize,
}

/// The result of [`AliasTable::substitute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituted {
    pub text: String,
    /// Lines of `text` → lines of the input; every line of a multi-line value maps to the line
    /// of its reference.
    pub lines: LineMap,
    /// Every alias reference that was replaced, in order.
    pub replacements: Vec<Replacement>,
}

/// One replaced alias reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// Where the directive stood in the input text.
    pub pos: Pos,
    pub name: String,
    /// The definition was a built-in one, not the task file's.
    pub predefined: bool,
}

impl AliasTable {
    /// The built-in aliases alone, with the default directive: what a v1.1.0 file without an
    /// `alias:` block gets.
    pub fn builtin(images: &BTreeMap<String, String>) -> Self {
        let mut table = Self { directive: DEFAULT_DIRECTIVE, entries: HashMap::new() };
        table.add_builtins(images);
        table
    }

    /// Loads the aliases of an `alias:` block (already template-rendered): inline `values` win
    /// over later `src` entries, which win over earlier ones, which win over the built-ins.
    ///
    /// Every problem becomes a diagnostic (positions are in `block`; a `src` problem points at
    /// its entry); the table holds whatever loaded cleanly, so it is always usable.
    pub fn load(block: &str, sources: &Sources<'_>) -> (Self, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let spec = BlockSpec::parse(block, &mut diagnostics);
        let mut table = Self { directive: spec.directive, entries: HashMap::new() };
        for (name, value) in &spec.values {
            table.insert(name, value, false);
        }
        for (entry, pos) in spec.src.iter().rev() {
            match load_src(entry, sources) {
                Ok(aliases) => {
                    for (name, value) in &aliases {
                        table.insert(name, value, false);
                    }
                }
                Err(problems) => diagnostics.extend(problems.into_iter().map(|p| {
                    Diagnostic::error(Some(*pos), format!("alias src `{entry}`: {p}"))
                        .with_field("alias.src")
                })),
            }
        }
        table.add_builtins(sources.images);
        (table, diagnostics)
    }

    fn add_builtins(&mut self, images: &BTreeMap<String, String>) {
        for name in RUN_ALIASES.iter().copied() {
            self.insert(name, &format!("{{{{.Run.{name}}}}}"), true);
        }
        for (name, image) in images {
            self.insert(name, image, true);
        }
    }

    /// The first definition of a name wins.
    fn insert(&mut self, name: &str, value: &str, predefined: bool) {
        if !self.entries.contains_key(name) {
            let newlines = value.bytes().filter(|&b| b == b'\n').count();
            self.entries
                .insert(name.to_string(), Entry { value: value.to_string(), predefined, newlines });
        }
    }

    pub fn directive(&self) -> char {
        self.directive
    }

    /// The value of alias `name`, if defined.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(|e| e.value.as_str())
    }

    /// Replaces every `<directive><name>` in `text` in one pass, as ACR does: the name is the
    /// maximal run of ASCII letters and digits after the directive; unknown names stay as
    /// written; a doubled directive is one literal directive (`$$ID` → `$ID`); `$a$b` chains.
    ///
    /// One ACR quirk is kept: a directive right after an unknown name is copied literally rather
    /// than starting a new reference, so `$HOME$ID` stays `$HOME$ID`.
    pub fn substitute(&self, text: &str) -> Substituted {
        let d = self.directive;
        let dlen = d.len_utf8();
        let mut out = String::with_capacity(text.len() + text.len() / 4);
        let mut cursor = Cursor::new();
        let mut replacements = Vec::new();
        let mut i = 0;
        while let Some(offset) = text[i..].find(d) {
            let at = i + offset;
            cursor.copy(&mut out, text, i, at);
            let start = at + dlen;
            let end = start
                + text.as_bytes()[start..].iter().take_while(|b| b.is_ascii_alphanumeric()).count();
            let name = &text[start..end];
            let directive_follows = text[end..].starts_with(d);
            i = end;
            if name.is_empty() {
                // A lone directive stays; a doubled one is its escape.
                out.push(d);
                if directive_follows {
                    i += dlen;
                }
            } else if let Some(entry) = self.entries.get(name) {
                let pos = cursor.pos(text, at);
                replacements.push(Replacement {
                    pos,
                    name: name.to_string(),
                    predefined: entry.predefined,
                });
                cursor.value(&mut out, entry);
            } else {
                out.push_str(&text[at..end]);
                if directive_follows {
                    out.push(d);
                    i += dlen;
                }
            }
        }
        cursor.copy(&mut out, text, i, text.len());
        Substituted { text: out, lines: LineMap::from_origins(cursor.origins), replacements }
    }

    /// v1.1.0's expansion of a bare alias name as the first token of a `cmd` (after rendering
    /// and parsing): `bash echo hi` → `<bash image> echo hi`. Any alias qualifies, custom ones
    /// included. As in ACR the command is trimmed and split at single spaces, so `bash\techo`
    /// is left alone. `None` when nothing changes.
    pub fn expand_first_token(&self, cmd: &str) -> Option<String> {
        let cmd = cmd.trim();
        let (first, rest) = match cmd.split_once(' ') {
            Some((first, rest)) => (first, Some(rest)),
            None => (cmd, None),
        };
        let value = &self.entries.get(first)?.value;
        Some(match rest {
            Some(rest) => format!("{value} {rest}"),
            None => value.clone(),
        })
    }
}

/// Tracks, during substitution, the input line and column and the output's line origins.
struct Cursor {
    /// The input line at the scan position.
    line: u32,
    /// A byte offset on the current input line and the 1-based column there; advanced lazily so
    /// columns cost linear time even on very long lines.
    col_at: usize,
    col: u32,
    origins: Vec<u32>,
}

impl Cursor {
    fn new() -> Self {
        Self { line: 1, col_at: 0, col: 1, origins: vec![1] }
    }

    /// Copies input `text[from..to]` unchanged.
    fn copy(&mut self, out: &mut String, text: &str, from: usize, to: usize) {
        let chunk = &text[from..to];
        out.push_str(chunk);
        for (k, _) in chunk.match_indices('\n') {
            self.line = self.line.saturating_add(1);
            self.origins.push(self.line);
            self.col_at = from + k + 1;
            self.col = 1;
        }
    }

    /// The position of input byte `at`, which lies on the current line at or after `col_at`.
    fn pos(&mut self, text: &str, at: usize) -> Pos {
        let chars = text[self.col_at..at].chars().count();
        self.col = self.col.saturating_add(u32::try_from(chars).unwrap_or(u32::MAX));
        self.col_at = at;
        Pos::new(self.line, self.col)
    }

    /// Emits an alias value in place of a reference on the current input line.
    fn value(&mut self, out: &mut String, entry: &Entry) {
        out.push_str(&entry.value);
        self.origins.extend(std::iter::repeat_n(self.line, entry.newlines));
    }
}

/// The `alias:` properties as written.
struct BlockSpec {
    values: Vec<(String, String)>,
    /// Entries with their positions in the block.
    src: Vec<(String, Pos)>,
    directive: char,
}

impl BlockSpec {
    fn parse(block: &str, diagnostics: &mut Vec<Diagnostic>) -> Self {
        let mut spec = Self { values: Vec::new(), src: Vec::new(), directive: DEFAULT_DIRECTIVE };
        let root = match yaml::parse(block) {
            Ok(root) => root,
            Err(e) => {
                diagnostics.push(
                    Diagnostic::error(e.pos, format!("alias block: {}", e.message))
                        .with_field("alias"),
                );
                return spec;
            }
        };
        // The block starts at the `alias:` line, so that is its only top-level key.
        let alias = match &root.value {
            Value::Map(entries) => {
                entries.iter().find(|(k, _)| matches!(&k.value, Value::Str(s) if s == "alias"))
            }
            _ => None,
        };
        let Some((_, alias)) = alias else { return spec };
        let properties = match &alias.value {
            Value::Map(properties) => properties,
            Value::Null => return spec,
            other => {
                diagnostics.push(
                    Diagnostic::error(
                        Some(alias.pos),
                        format!(
                            "expected a mapping of `values`, `src` and `directive`, found {}",
                            other.kind()
                        ),
                    )
                    .with_field("alias"),
                );
                return spec;
            }
        };
        for (key, value) in properties {
            let key_text = scalar_text(key, block).unwrap_or_default();
            let field = format!("alias.{key_text}");
            let mut error = |pos: Pos, message: String| {
                diagnostics.push(Diagnostic::error(Some(pos), message).with_field(field.clone()));
            };
            match key_text.as_str() {
                "values" => {
                    let problems = alias_map(value, block, &mut spec.values);
                    for p in problems {
                        error(p.pos, p.message);
                    }
                }
                "src" => match &value.value {
                    Value::Seq(items) => {
                        for item in items {
                            match scalar_text(item, block) {
                                Ok(entry) => spec.src.push((entry, item.pos)),
                                Err(kind) => {
                                    error(item.pos, format!("expected a path or URL, found {kind}"))
                                }
                            }
                        }
                    }
                    Value::Null => {}
                    other => error(
                        value.pos,
                        format!("expected a list of paths or URLs, found {}", other.kind()),
                    ),
                },
                "directive" => match scalar_text(value, block) {
                    Ok(text) => match parse_directive(&text) {
                        Ok(directive) => spec.directive = directive,
                        Err(message) => error(value.pos, message),
                    },
                    Err(kind) => {
                        error(value.pos, format!("expected a single character, found {kind}"))
                    }
                },
                other => {
                    let hint = ["values", "src", "directive"]
                        .into_iter()
                        .find(|known| strsim::levenshtein(known, other) <= 2)
                        .map(|known| format!("; did you mean `{known}`?"))
                        .unwrap_or_default();
                    diagnostics.push(
                        Diagnostic::warning(
                            Some(key.pos),
                            format!("unknown alias property `{other}` is ignored{hint}"),
                        )
                        .with_field("alias"),
                    );
                }
            }
        }
        spec
    }
}

/// `alias.directive`: empty means the default. ACR takes any one non-alphanumeric character;
/// kiln also refuses whitespace and control characters, which would make every space or line
/// break start an alias and mangle the YAML.
fn parse_directive(text: &str) -> Result<char, String> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (None, _) => Ok(DEFAULT_DIRECTIVE),
        (Some(c), None) if c.is_ascii_alphanumeric() => {
            Err(format!("overwritten directives may not be alphanumeric characters: `{c}`"))
        }
        (Some(c), None) if c.is_whitespace() || c.is_control() => {
            Err(format!("the directive {c:?} must not be whitespace or a control character"))
        }
        (Some(c), None) => Ok(c),
        _ => {
            Err(format!("directive can only be overwritten by a single character, found `{text}`"))
        }
    }
}

/// A problem inside one YAML text (the block or a `src` file), at a position in that text.
struct Problem {
    pos: Pos,
    message: String,
}

/// Reads a flat map of alias names to values (ACR's `map[string]string`) into `out`.
fn alias_map(node: &Node, text: &str, out: &mut Vec<(String, String)>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let entries = match &node.value {
        Value::Map(entries) => entries,
        Value::Null => return problems,
        other => {
            let message =
                format!("expected a mapping of alias names to values, found {}", other.kind());
            problems.push(Problem { pos: node.pos, message });
            return problems;
        }
    };
    for (key, value) in entries {
        let name = match scalar_text(key, text) {
            Ok(name) if is_alias_name(&name) => name,
            Ok(name) => {
                let message =
                    format!("alias key names only support alphanumeric characters: `{name}`");
                problems.push(Problem { pos: key.pos, message });
                continue;
            }
            Err(kind) => {
                problems.push(Problem {
                    pos: key.pos,
                    message: format!("expected an alias name, found {kind}"),
                });
                continue;
            }
        };
        match scalar_text(value, text) {
            Ok(value) => out.push((name, value)),
            Err(kind) => {
                let message = format!("alias `{name}` must be a string, found {kind}");
                problems.push(Problem { pos: value.pos, message });
            }
        }
    }
    problems
}

/// A scalar as Go's yaml.v2 puts it into a string: as written (`1.10`, `yes`, `0x1F`), null as
/// empty; collections are an error, reported by their kind.
fn scalar_text(node: &Node, text: &str) -> Result<String, &'static str> {
    let raw = || node.raw.and_then(|(start, end)| text.get(start..end));
    match &node.value {
        Value::Null => Ok(String::new()),
        Value::Str(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(raw().map_or_else(|| b.to_string(), str::to_string)),
        Value::Int(n) => Ok(raw().map_or_else(|| n.to_string(), str::to_string)),
        Value::Float(f) => Ok(raw().map_or_else(|| f.to_string(), str::to_string)),
        other @ (Value::Seq(_) | Value::Map(_)) => Err(other.kind()),
    }
}

/// Reads one `src` entry: an http(s) URL (ACR's test is the literal prefix) or a file relative
/// to the base directory, holding a flat YAML map.
fn load_src(entry: &str, sources: &Sources<'_>) -> Result<Vec<(String, String)>, Vec<String>> {
    let text = if entry.starts_with("http://") || entry.starts_with("https://") {
        fetch(entry, sources.fetch_timeout).map_err(|e| vec![e])?
    } else {
        let path = sources.base_dir.join(entry);
        std::fs::read_to_string(&path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?
    };
    let at = |pos: Option<Pos>| {
        pos.map(|p| format!("line {} column {}: ", p.line, p.col)).unwrap_or_default()
    };
    let root = yaml::parse(&text).map_err(|e| vec![format!("{}{}", at(e.pos), e.message)])?;
    let mut aliases = Vec::new();
    let problems = alias_map(&root, &text, &mut aliases);
    if problems.is_empty() {
        Ok(aliases)
    } else {
        Err(problems.into_iter().map(|p| format!("{}{}", at(Some(p.pos)), p.message)).collect())
    }
}

/// GETs `url` within `timeout` (connection, response and body together).
fn fetch(url: &str, timeout: Duration) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let describe = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => format!("no answer within {timeout:?}"),
        other => other.to_string(),
    };
    let mut response = agent.get(url).call().map_err(describe)?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP status {status}"));
    }
    response.body_mut().read_to_string().map_err(describe)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::sync::mpsc;

    use super::*;
    use crate::task::preprocess::{alias_support, find_version, strip_comments};

    fn acr_images() -> BTreeMap<String, String> {
        crate::config::Config::default().image_aliases()
    }

    fn testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/task/testdata/alias")
    }

    fn load_in(block: &str, base_dir: &Path) -> (AliasTable, Vec<Diagnostic>) {
        let images = acr_images();
        let sources = Sources { base_dir, images: &images, fetch_timeout: DEFAULT_FETCH_TIMEOUT };
        AliasTable::load(block, &sources)
    }

    fn load(block: &str) -> AliasTable {
        let (table, diagnostics) = load_in(block, &testdata());
        assert_eq!(diagnostics, vec![], "{block}");
        table
    }

    fn errors(block: &str, base_dir: &Path) -> Vec<Diagnostic> {
        let (_, diagnostics) = load_in(block, base_dir);
        assert!(diagnostics.iter().all(Diagnostic::is_error), "{diagnostics:?}");
        diagnostics
    }

    fn values(pairs: &[(&str, &str)]) -> AliasTable {
        let mut block = String::from("alias:\n  values:\n");
        for (name, value) in pairs {
            // JSON strings are YAML double-quoted scalars, escapes included.
            let value = serde_json::to_string(value).expect("a string serializes");
            block.push_str(&format!("    {name}: {value}\n"));
        }
        load(&block)
    }

    fn sub(table: &AliasTable, text: &str) -> String {
        table.substitute(text).text
    }

    // §1.1 step 4: cutting out the alias block.

    #[test]
    fn splits_the_alias_block_up_to_the_next_top_level_key() {
        let text = "version: v1.1.0\nalias :\n  values:\n    a: b\n\n  # c\nno colon here\n\
                    steps:\n  - cmd: $a\n";
        let s = split_alias_block(text);
        assert_eq!(s.block, "alias :\n  values:\n    a: b\n\nno colon here\n");
        assert_eq!(s.first_line, Some(2));
        assert_eq!(s.rest, "version: v1.1.0\nsteps:\n  - cmd: $a\n");
        assert_eq!((1..=3).map(|l| s.rest_lines.line(l)).collect::<Vec<_>>(), vec![1, 8, 9]);
        assert_eq!((1..=5).map(|l| s.block_lines.line(l)).collect::<Vec<_>>(), vec![2, 3, 4, 5, 7]);
    }

    #[test]
    fn a_file_without_an_alias_block_is_all_rest() {
        let s = split_alias_block("aliases: x\n alias: y\r\nsteps: []");
        assert_eq!(s.block, "");
        assert_eq!(s.first_line, None);
        assert_eq!(s.rest, "aliases: x\n alias: y\nsteps: []\n");
        assert_eq!(split_alias_block("").rest, "");
    }

    #[test]
    fn a_second_alias_key_ends_the_block_like_any_other_key() {
        let s = split_alias_block("alias:\n  values: {}\nalias:\n  src: []\nsteps:\n");
        assert_eq!(s.block, "alias:\n  values: {}\n");
        assert_eq!(s.rest, "alias:\n  src: []\nsteps:\n");
        assert_eq!(
            split_alias_block("alias: {values: {a: b}}\nsteps:\n").block,
            "alias: {values: {a: b}}\n"
        );
    }

    // §4.4: loading the table.

    #[test]
    fn built_ins_are_run_aliases_and_configured_images() {
        let t = AliasTable::builtin(&acr_images());
        assert_eq!(t.directive(), '$');
        assert_eq!(t.get("ID"), Some("{{.Run.ID}}"));
        assert_eq!(t.get("RegistryName"), Some("{{.Run.RegistryName}}"));
        assert_eq!(t.get("TaskName"), None);
        assert_eq!(t.get("acr"), Some("mcr.microsoft.com/acr/acr-cli:0.19"));
        let custom = BTreeMap::from([("bash".to_string(), "busybox:latest".to_string())]);
        let t = AliasTable::builtin(&custom);
        assert_eq!(t.get("bash"), Some("busybox:latest"));
        assert_eq!(t.get("acr"), None);
        assert_eq!(load(""), AliasTable::builtin(&acr_images()));
        assert_eq!(load("alias:\n"), AliasTable::builtin(&acr_images()));
    }

    #[test]
    fn scalars_read_as_written() {
        let t =
            load("alias:\n  values:\n    v: 1.10\n    y: yes\n    n: ~\n    x: 0x1F\n    1: one\n");
        assert_eq!(t.get("v"), Some("1.10"));
        assert_eq!(t.get("y"), Some("yes"));
        assert_eq!(t.get("n"), Some(""));
        assert_eq!(t.get("x"), Some("0x1F"));
        assert_eq!(t.get("1"), Some("one"));
    }

    #[test]
    fn precedence_is_values_then_later_src_then_earlier_src_then_built_ins() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("early.yaml"),
            "a: early\nb: early\nc: early\nbash: early\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("late.yaml"), "a: late\nb: late\nRegistry: late.example\n")
            .expect("write");
        let block = "alias:\n  src:\n    - early.yaml\n    - late.yaml\n  values:\n    a: inline\n";
        let (t, diagnostics) = load_in(block, dir.path());
        assert_eq!(diagnostics, vec![]);
        assert_eq!(t.get("a"), Some("inline"));
        assert_eq!(t.get("b"), Some("late"));
        assert_eq!(t.get("c"), Some("early"));
        assert_eq!(t.get("Registry"), Some("late.example"));
        assert_eq!(t.get("bash"), Some("early"));
        assert_eq!(t.get("curl"), Some("mcr.microsoft.com/acr/curl:2ff604c"));
        let s = t.substitute("$Registry/$a $ID");
        assert_eq!(s.text, "late.example/inline {{.Run.ID}}");
        let predefined: Vec<_> =
            s.replacements.iter().map(|r| (r.name.as_str(), r.predefined)).collect();
        assert_eq!(predefined, vec![("Registry", false), ("a", false), ("ID", true)]);
    }

    #[test]
    fn bad_names_and_values_are_errors_at_their_position() {
        let e =
            errors("alias:\n  values:\n    my-tool: x\n    ok: [1, 2]\n    [k]: v\n", &testdata());
        assert_eq!(e.len(), 3, "{e:?}");
        assert_eq!(e[0].pos, Some(Pos::new(3, 5)));
        assert!(e[0].message.contains("`my-tool`"), "{:?}", e[0]);
        assert_eq!(e[0].field.as_deref(), Some("alias.values"));
        assert_eq!(e[1].pos, Some(Pos::new(4, 9)));
        assert!(e[1].message.contains("found a list"), "{:?}", e[1]);
        assert_eq!(e[2].pos, Some(Pos::new(5, 5)));
        let e = errors("alias:\n  values: [a]\n  src: x.yaml\n", &testdata());
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].message.contains("mapping") && e[1].message.contains("list"), "{e:?}");
        let e = errors("alias: 3\n", &testdata());
        assert_eq!((e[0].pos, e[0].field.as_deref()), (Some(Pos::new(1, 8)), Some("alias")));
        let e = errors("alias:\n  values:\n    a: b\n   c: d\n", &testdata());
        assert!(e[0].message.starts_with("alias block:") && e[0].pos.is_some(), "{e:?}");
    }

    #[test]
    fn the_directive_is_one_non_alphanumeric_character() {
        for (directive, fragment) in [
            ("a", "may not be alphanumeric"),
            ("7", "may not be alphanumeric"),
            ("'&&'", "single character"),
            ("'\\u00e9\\u00e9'", "single character"),
            ("' '", "whitespace"),
            ("\"\\t\"", "whitespace"),
            ("[x]", "found a list"),
        ] {
            let e = errors(&format!("alias:\n  directive: {directive}\n"), &testdata());
            assert_eq!(e.len(), 1, "{directive}: {e:?}");
            assert!(e[0].message.contains(fragment), "{directive}: {e:?}");
            assert_eq!(e[0].pos, Some(Pos::new(2, 14)));
        }
        assert_eq!(load("alias:\n  directive: '&'\n").directive(), '&');
        assert_eq!(load("alias:\n  directive: é\n").directive(), 'é');
        assert_eq!(load("alias:\n  directive: 🐳\n").directive(), '🐳');
        assert_eq!(load("alias:\n  directive: ''\n").directive(), '$');
    }

    #[test]
    fn unknown_alias_properties_are_warnings() {
        let (t, d) = load_in("alias:\n  value:\n    a: b\n", &testdata());
        assert_eq!(t.get("a"), None);
        assert_eq!(d.len(), 1);
        assert!(!d[0].is_error());
        assert_eq!(d[0].pos, Some(Pos::new(2, 3)));
        assert!(d[0].message.contains("did you mean `values`?"), "{d:?}");
    }

    // §4.4 `src`: local files.

    #[test]
    fn local_src_files_load_relative_to_the_base_dir() {
        let t = load("alias:\n  src: [alphanumeric.yaml]\n");
        assert_eq!(t.get("q"), Some("q"));
        assert_eq!(t.get("y"), Some("y"));
        assert_eq!(t.get("N"), Some("N"));
        assert_eq!(t.get("0"), Some("0"));
        let absolute = testdata().join("alphanumeric.yaml");
        let (t, d) = load_in(
            &format!("alias:\n  src: ['{}']\n", absolute.display()),
            Path::new("/nonexistent"),
        );
        assert_eq!((t.get("Z"), d), (Some("Z"), vec![]));
    }

    #[test]
    fn bad_local_src_files_are_errors_at_their_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = [
            ("empty.yaml", ""),
            ("list.yaml", "- a\n- b\n"),
            ("broken.yaml", "a: [1\n"),
            ("nested.yaml", "a:\n  b: c\n"),
            ("badkey.yaml", "ok: 1\n\"a b\": 2\n"),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write");
        }
        let block = "alias:\n  src:\n    - empty.yaml\n    - list.yaml\n    - broken.yaml\n    \
                     - nested.yaml\n    - badkey.yaml\n    - missing.yaml\n";
        let mut e = errors(block, dir.path());
        e.sort_by_key(|d| d.pos);
        let at: Vec<_> = e.iter().map(|d| d.pos.map(|p| p.line)).collect();
        assert_eq!(at, vec![Some(4), Some(5), Some(6), Some(7), Some(8)], "{e:?}");
        assert!(
            e[0].message.contains("`list.yaml`: line 1 column 1: expected a mapping"),
            "{:?}",
            e[0]
        );
        assert!(e[1].message.starts_with("alias src `broken.yaml`: line "), "{:?}", e[1]);
        assert!(e[2].message.contains("alias `a` must be a string, found a mapping"), "{:?}", e[2]);
        assert!(
            e[3].message.contains(
                "line 2 column 1: alias key names only support alphanumeric characters: `a b`"
            ),
            "{:?}",
            e[3]
        );
        assert!(e[4].message.contains("cannot read") && e[4].message.contains("missing.yaml"));
        assert!(e.iter().all(|d| d.field.as_deref() == Some("alias.src")));
    }

    // §4.4 `src`: http(s), served from 127.0.0.1 inside the test.

    /// Serves one connection: answers with `response`, or with `None` holds the connection open
    /// without a word until the returned sender is dropped.
    fn serve_once(response: Option<&'static str>) -> (String, mpsc::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}/aliases.yaml", listener.local_addr().expect("address"));
        let (hold, released) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut request = Vec::new();
            let mut buf = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            match response {
                Some(response) => {
                    let _ = stream.write_all(response.as_bytes());
                }
                None => {
                    let _ = released.recv_timeout(Duration::from_secs(30));
                }
            }
        });
        (url, hold)
    }

    fn load_url(url: &str, timeout: Duration) -> (AliasTable, Vec<Diagnostic>) {
        let images = acr_images();
        let sources = Sources { base_dir: Path::new("."), images: &images, fetch_timeout: timeout };
        AliasTable::load(&format!("alias:\n  src:\n    - {url}\n"), &sources)
    }

    #[test]
    fn http_src_is_fetched() {
        let body = "docker: azure/images/docker\ncache: --cache-from=ubuntu\n";
        let response = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let (url, _hold) = serve_once(Some(response));
        let (t, d) = load_url(&url, DEFAULT_FETCH_TIMEOUT);
        assert_eq!(d, vec![]);
        assert_eq!(t.get("docker"), Some("azure/images/docker"));
        assert_eq!(t.get("cache"), Some("--cache-from=ubuntu"));
    }

    #[test]
    fn http_errors_are_diagnostics() {
        let (url, _hold) = serve_once(Some(
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        ));
        let (_, d) = load_url(&url, DEFAULT_FETCH_TIMEOUT);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].pos, Some(Pos::new(3, 7)));
        assert!(d[0].message.contains(&url) && d[0].message.contains("404"), "{d:?}");
    }

    #[test]
    fn a_silent_http_server_times_out() {
        // The server holds the connection for 30 s: only the fetch's own timeout gives this
        // message (a closed connection would say so).
        let (url, hold) = serve_once(None);
        let (_, d) = load_url(&url, Duration::from_millis(200));
        drop(hold);
        assert_eq!(d.len(), 1);
        assert!(d[0].is_error() && d[0].message.contains("no answer within 200ms"), "{d:?}");
    }

    // §4.4: substitution.

    #[test]
    fn substitutes_like_acrs_process_string_test() {
        let t = values(&[("foo", "bar")]);
        assert_eq!(sub(&t, "build: -t $foo "), "build: -t bar ");
        let t = values(&[
            ("reg", "{{.Run.Registry}}"),
            ("foo", ".Values.bar"),
            ("acb", "mcr.microsoft.com/acb:zzz"),
        ]);
        let input = "\n- build: -t $reg/$repo:$ID .\n- cmd: $acb exec {{$foo}}\n- push:\n\
                     \t- {{.Run.Registry}}/hello-world:$ID\n\t- $Registry/hello-world:$ID2";
        let want = "\n- build: -t {{.Run.Registry}}/$repo:{{.Run.ID}} .\n\
                    - cmd: mcr.microsoft.com/acb:zzz exec {{.Values.bar}}\n- push:\n\
                    \t- {{.Run.Registry}}/hello-world:{{.Run.ID}}\n\t- {{.Run.Registry}}/hello-world:$ID2";
        assert_eq!(sub(&t, input), want);
    }

    #[test]
    fn unknown_names_and_lone_directives_are_untouched() {
        let t = values(&[("a", "A")]);
        for text in ["$HOME", "echo $HOME/x", "$", "a$", "$ $- $.", "$$", "$é", "cost: 5$", "$ab"]
        {
            let want = text.replace("$$", "$");
            assert_eq!(sub(&t, text), want, "{text}");
        }
    }

    #[test]
    fn a_doubled_directive_is_a_literal_one() {
        let t = values(&[("a", "A")]);
        assert_eq!(sub(&t, "$$ID $$a $$$a $$$$a"), "$ID $a $A $$a");
        assert_eq!(sub(&t, "sh -c 'echo run=$$ID'"), "sh -c 'echo run=$ID'");
        assert!(t.substitute("$$ID").replacements.is_empty());
    }

    #[test]
    fn references_chain() {
        let t = values(&[("a", "A"), ("b", "B")]);
        assert_eq!(sub(&t, "$a$b$a"), "ABA");
        assert_eq!(sub(&t, "$a$b$c$a"), "AB$c$a");
        assert_eq!(sub(&t, "$a$$b"), "A$b");
        assert_eq!(sub(&t, "$a$"), "A$");
        // ACR's quirk: a directive right after an unknown name does not start a reference.
        assert_eq!(sub(&t, "$HOME$ID $HOME$$a"), "$HOME$ID $HOME$A");
    }

    #[test]
    fn names_are_maximal_alphanumeric_runs() {
        let t = values(&[("a", "A"), ("ab", "AB")]);
        assert_eq!(sub(&t, "$ab $a-b $a_b $abc $a.b"), "AB A-b A_b $abc A.b");
    }

    #[test]
    fn a_custom_directive_replaces_the_dollar() {
        let t = load("alias:\n  directive: 🐳\n  values:\n    img: alpine\n");
        assert_eq!(
            sub(&t, "🐳img $img 🐳🐳img 🐳ID🐳img 🐳HOME"),
            "alpine $img 🐳img {{.Run.ID}}alpine 🐳HOME"
        );
        let t = load("alias:\n  directive: '&'\n");
        assert_eq!(sub(&t, "&Registry/app:$ID && true"), "{{.Run.Registry}}/app:$ID & true");
    }

    #[test]
    fn multi_line_values_extend_the_line_map() {
        let t = values(&[("two", "x: 1\ny: 2"), ("three", "p\nq\nr")]);
        let s = t.substitute("a\nb: $two\nc $three $three\nd");
        assert_eq!(s.text, "a\nb: x: 1\ny: 2\nc p\nq\nr p\nq\nr\nd");
        let lines: Vec<_> = (1..=9).map(|l| s.lines.line(l)).collect();
        assert_eq!(lines, vec![1, 2, 2, 3, 3, 3, 3, 3, 4]);
    }

    #[test]
    fn replacements_record_input_positions() {
        let t = values(&[("img", "alpine")]);
        let s = t.substitute("steps:\n  - cmd: é $img $ID\n  - env: [X=$$ID, Y=$OS$img]");
        let got: Vec<_> =
            s.replacements.iter().map(|r| (r.pos, r.name.as_str(), r.predefined)).collect();
        assert_eq!(
            got,
            vec![
                (Pos::new(2, 12), "img", false),
                (Pos::new(2, 17), "ID", true),
                (Pos::new(3, 21), "OS", true),
                (Pos::new(3, 24), "img", false),
            ]
        );
    }

    #[test]
    fn substitutes_every_alias_of_a_large_file_once() {
        // Its speed is the task_pipeline benchmark's; here, what it produces.
        let t = AliasTable::builtin(&acr_images());
        let mut text = String::new();
        for i in 0..3000 {
            if i % 3 == 0 {
                text.push_str("  - cmd: $Registry/app:$ID echo $HOME\n");
            } else {
                text.push_str("    env: [\"A=some value that is not an alias\", \"B=2\"]\n");
            }
        }
        let s = t.substitute(&text);
        assert_eq!(s.replacements.len(), 2000);
        assert_eq!(s.text.matches("{{.Run.Registry}}/app:{{.Run.ID}} echo $HOME").count(), 1000);
        assert_eq!(s.text.lines().count(), 3000);
    }

    proptest::proptest! {
        #[test]
        fn substitution_never_panics_and_maps_every_line(
            text in "([a-zA-Z0-9 :\\-]|\\$|🐳|\n|é){0,80}",
            directive in proptest::sample::select(vec!['$', '🐳', 'é']),
        ) {
            let mut t = values(&[("a", "A"), ("ab", "x\ny"), ("ID", "")]);
            t.directive = directive;
            let s = t.substitute(&text);
            let input_lines = text.split('\n').count() as u32;
            let output_lines = s.text.split('\n').count() as u32;
            let origins: Vec<u32> = (1..=output_lines).map(|l| s.lines.line(l)).collect();
            proptest::prop_assert!(origins.windows(2).all(|w| w[0] <= w[1]));
            proptest::prop_assert_eq!(origins.last().copied(), Some(input_lines));
            for r in &s.replacements {
                let line = text.split('\n').nth(r.pos.line as usize - 1).unwrap_or_default();
                let rest: String = line.chars().skip(r.pos.col as usize - 1).collect();
                proptest::prop_assert!(rest.starts_with(directive), "{:?} in {:?}", r, line);
            }
            if !text.contains(directive) {
                proptest::prop_assert_eq!(&s.text, &text);
            }
        }

        #[test]
        fn splitting_keeps_every_non_comment_line_once(text in "(alias:|a: 1|  b: 2|#c| |x|\r|\n){0,40}") {
            let s = split_alias_block(&text);
            let kept = scan_lines(&text).filter(|(_, l)| !l.trim_start_matches(GO_SPACE).starts_with('#'));
            let kept: Vec<u32> = kept.map(|(n, _)| n).collect();
            let mut mapped: Vec<u32> = (1..=s.block.lines().count() as u32)
                .map(|l| s.block_lines.line(l))
                .chain((1..=s.rest.lines().count() as u32).map(|l| s.rest_lines.line(l)))
                .collect();
            mapped.sort_unstable();
            proptest::prop_assert_eq!(mapped, kept);
        }
    }

    // §4.4 / §1.1 step 10: first-token expansion of `cmd`.

    #[test]
    fn expands_an_alias_as_the_first_token_of_a_cmd() {
        let t = values(&[("purge", "acr purge"), ("dind", "docker.io/library/docker:27")]);
        let purge = "purge --registry {{.Run.Registry}} --filter 'a:.*' --ago 0d";
        let want = "acr purge --registry {{.Run.Registry}} --filter 'a:.*' --ago 0d";
        assert_eq!(t.expand_first_token(purge).as_deref(), Some(want));
        assert_eq!(t.expand_first_token(&format!("     {purge}   ")).as_deref(), Some(want));
        assert_eq!(
            t.expand_first_token("dind version").as_deref(),
            Some("docker.io/library/docker:27 version")
        );
        assert_eq!(t.expand_first_token("dind").as_deref(), Some("docker.io/library/docker:27"));
        assert_eq!(
            t.expand_first_token("bash  echo hi").as_deref(),
            Some("mcr.microsoft.com/acr/bash:2ff604c  echo hi")
        );
        for unchanged in
            ["fakealias --wait 300", "acrmixedin --wait 300", "bash\techo", "", "docker.io/bash x"]
        {
            assert_eq!(t.expand_first_token(unchanged), None, "{unchanged}");
        }
        let custom = BTreeMap::from([("bash".to_string(), "busybox:1.36".to_string())]);
        let t = AliasTable::builtin(&custom);
        assert_eq!(t.expand_first_token("bash echo hi").as_deref(), Some("busybox:1.36 echo hi"));
    }

    // §8.6: the cases of acr-builder's preprocessing-stress fixture, as kiln's own fixtures.

    /// Runs a fixture through §1.1 steps 2–4 (the block needs no rendering) and returns the
    /// substituted text and the map from its lines to the fixture's.
    fn preprocess(name: &str) -> (String, LineMap) {
        let original = std::fs::read_to_string(testdata().join(name)).expect("fixture");
        let stripped = strip_comments(&original);
        let support = alias_support(find_version(&stripped.text).as_ref());
        assert_eq!((support.enabled, support.warning), (true, None), "{name}");
        let split = split_alias_block(&stripped.text);
        let (table, diagnostics) = load_in(&split.block, &testdata());
        assert_eq!(diagnostics, vec![], "{name}");
        let s = table.substitute(&split.rest);
        (s.text, stripped.lines.then(&split.rest_lines).then(&s.lines))
    }

    /// A YAML tree without positions, for comparing documents.
    fn tree(text: &str) -> String {
        fn walk(node: &Node, out: &mut String) {
            match &node.value {
                Value::Seq(items) => {
                    out.push('[');
                    items.iter().for_each(|i| {
                        walk(i, out);
                        out.push(',');
                    });
                    out.push(']');
                }
                Value::Map(entries) => {
                    out.push('{');
                    for (k, v) in entries {
                        walk(k, out);
                        out.push(':');
                        walk(v, out);
                        out.push(',');
                    }
                    out.push('}');
                }
                scalar => out.push_str(&format!("{scalar:?}")),
            }
        }
        let mut out = String::new();
        walk(&yaml::parse(text).expect("valid YAML"), &mut out);
        out
    }

    fn expected() -> String {
        let text = std::fs::read_to_string(testdata().join("expected.yaml")).expect("fixture");
        tree(&text)
    }

    #[test]
    fn stress_chained_single_character_aliases_behind_a_unicode_directive() {
        let (text, _) = preprocess("chaining-unicode.yaml");
        assert_eq!(tree(&text), expected());
    }

    #[test]
    fn stress_multi_line_aliases_expand_to_whole_steps() {
        let (text, lines) = preprocess("multiline.yaml");
        assert_eq!(tree(&text), expected());
        // Every line of the expanded `$probe` step points at the `- $probe` line (45).
        let at = text.lines().position(|l| l == "  - id: probe").expect("probe step") + 1;
        let end = text.lines().position(|l| l == "  - id: publish").expect("publish step") + 1;
        assert!((at..end).all(|l| lines.line(l as u32) == 45), "{at}..{end}");
        assert_eq!(lines.line(end as u32), 46);
    }

    #[test]
    fn stress_escapes() {
        let (text, _) = preprocess("escape.yaml");
        let want =
            std::fs::read_to_string(testdata().join("escape.expected.yaml")).expect("fixture");
        assert_eq!(tree(&text), tree(&want));
    }

    #[test]
    fn stress_unused_aliases_and_files_without_aliases_are_unchanged() {
        assert_eq!(tree(&preprocess("unused.yaml").0), expected());
        let (text, lines) = preprocess("expected.yaml");
        let original = std::fs::read_to_string(testdata().join("expected.yaml")).expect("fixture");
        assert_eq!(text, original);
        let n = original.lines().count() as u32;
        assert!((1..=n).all(|l| lines.line(l) == l));
    }
}
