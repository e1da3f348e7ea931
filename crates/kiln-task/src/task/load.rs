//! The load pipeline: a task file's text to a validated task and step graph, in the order ACR's
//! engine processes it (reference §1.1).
//!
//! comments stripped → version found → (v1.1.0) alias block rendered, loaded and substituted →
//! whole file rendered → YAML parsed → model built and checked → first-token aliases expanded →
//! step graph. Each text-rewriting stage contributes a [`LineMap`], so every diagnostic, whichever
//! stage found it, points at the line of the file the user wrote.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::alias::{self, AliasTable, Replacement};
use super::dag::{self, StepGraph};
use super::model::{Step, StepKind, Task};
use super::preprocess;
use super::{parse, yaml};
use crate::diagnostic::{Diagnostic, Diagnostics, Pos};
use crate::render::{self, TemplateData};
use crate::source_map::{LineMap, Locator};

/// What a load needs besides the file.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions<'a> {
    pub data: &'a TemplateData,
    /// The configured image aliases (`bash`, `az`, …; reference §4.4).
    pub images: &'a BTreeMap<String, String>,
    /// Where relative `alias.src` files are looked up.
    pub base_dir: &'a Path,
    pub alias_fetch_timeout: Duration,
}

/// A task ready to plan, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub task: Task,
    pub graph: StepGraph,
    /// The text YAML saw: comment lines gone, aliases substituted, templates rendered.
    pub rendered: String,
    pub diagnostics: Diagnostics,
}

/// Loads a task file. On error, every diagnostic found (errors and warnings) is returned.
pub fn load(original: &str, opts: &LoadOptions<'_>) -> Result<Loaded, Diagnostics> {
    let mut diags = Diagnostics::default();
    let stripped = preprocess::strip_comments(original);
    let version = preprocess::find_version(&stripped.text);
    let support = preprocess::alias_support(version.as_ref());
    diags.extend(support.warning.map(|w| relocate(w, &stripped.lines)));

    // Aliases (v1.1.0+): the `alias:` block is rendered on its own, then the rest of the text
    // is substituted textually.
    let (text, lines, aliases) = if support.enabled {
        let split = alias::split_alias_block(&stripped.text);
        let block_lines = stripped.lines.then(&split.block_lines);
        let rendered_block = match render::render(&split.block, opts.data) {
            Ok(r) => r.text,
            Err(e) => {
                let at = Locator::new(original, &split.block, block_lines)
                    .locate(Pos::new(e.line, e.col));
                diags.push(Diagnostic::error(Some(at), e.message).with_field("alias"));
                return Err(diags.sorted());
            }
        };
        let sources = alias::Sources {
            base_dir: opts.base_dir,
            images: opts.images,
            fetch_timeout: opts.alias_fetch_timeout,
        };
        let (table, alias_diags) = AliasTable::load(&rendered_block, &sources);
        let block_map = block_lines.then(&LineMap::align(&split.block, &rendered_block));
        diags.extend(alias_diags.into_iter().map(|d| relocate(d, &block_map)));
        let rest_lines = stripped.lines.then(&split.rest_lines);
        let substituted = table.substitute(&split.rest);
        let lines = rest_lines.then(&substituted.lines);
        let replaced = (substituted.replacements, rest_lines);
        (substituted.text, lines, Some((table, replaced)))
    } else {
        (stripped.text, stripped.lines, None)
    };
    if diags.has_errors() {
        return Err(diags.sorted());
    }

    let rendered = match render::render(&text, opts.data) {
        Ok(r) => r,
        Err(e) => {
            let at = Locator::new(original, &text, lines).locate(Pos::new(e.line, e.col));
            diags.push(Diagnostic::error(Some(at), format!("template: {}", e.message)));
            return Err(diags.sorted());
        }
    };
    let before_render = Locator::new(original, &text, lines.clone());
    for m in &rendered.missing {
        diags.push(Diagnostic::warning(
            Some(before_render.locate(Pos::new(m.line, m.col))),
            format!(
                "`{}` has no value and renders as an empty string (ACR does the same); \
                 pass it with --set or a values file, or use `| default \"…\"`",
                m.expr
            ),
        ));
    }

    let final_lines = lines.then(&LineMap::align(&text, &rendered.text));
    let locator = Locator::new(original, &rendered.text, final_lines.clone());
    let parsed = match yaml::parse_like_go(&rendered.text) {
        Ok(parsed) => parsed,
        Err(e) => {
            diags.push(Diagnostic::error(e.pos.map(|p| locator.locate(p)), e.message));
            return Err(diags.sorted());
        }
    };
    for at in &parsed.bare_dashes {
        diags.push(Diagnostic::warning(
            Some(locator.locate(*at)),
            "a bare `-` in a flow list is read as the string `-` by ACR's YAML decoder, but \
                 YAML 1.2 tools (editors, linters) reject it; write `\"-\"`",
        ));
    }
    // From here positions refer to the text YAML saw, with those dashes quoted.
    let locator = Locator::new(original, &parsed.text, final_lines);
    let (task, task_diags) = parse::parse_task(&parsed.root, &parsed.text, &|p| locator.locate(p));
    diags.extend(task_diags);
    let Some(mut task) = task else { return Err(diags.sorted()) };

    if let Some((table, (replacements, rest_lines))) = &aliases {
        expand_first_tokens(&mut task, table);
        warn_shell_rewrites(&task, &locator, original, table, replacements, rest_lines, &mut diags);
    }
    let (graph, graph_diags) = dag::build(&task.steps);
    // The model's positions are in the rendered text; diagnostics point at the user's file.
    diags.extend(graph_diags.into_iter().map(|mut d| {
        d.pos = d.pos.map(|p| locator.locate(p));
        d
    }));
    if diags.has_errors() {
        return Err(diags.sorted());
    }
    Ok(Loaded { task, graph, rendered: parsed.text.into_owned(), diagnostics: diags.sorted() })
}

fn relocate(mut d: Diagnostic, lines: &LineMap) -> Diagnostic {
    d.pos = d.pos.map(|p| Pos::new(lines.line(p.line), p.col));
    d
}

/// v1.1.0: an alias used without its directive as a `cmd`'s first token names the image.
fn expand_first_tokens(task: &mut Task, table: &AliasTable) {
    for step in &mut task.steps {
        if let StepKind::Cmd(cmd) = &mut step.kind.value
            && let Some(expanded) = table.expand_first_token(cmd)
        {
            *cmd = expanded;
        }
    }
}

/// Sharp edge 7: substitution is textual, so `$ID` meant for a shell inside a `cmd` or an
/// `env` value was replaced before the shell saw it. A `cmd`'s first word is its image, where
/// aliases are exactly what ACR's own files use (`cmd: $Registry/hello-world:$ID`): only text
/// after the image can be shell text.
fn warn_shell_rewrites(
    task: &Task,
    locator: &Locator<'_>,
    original: &str,
    table: &AliasTable,
    replacements: &[Replacement],
    rest_lines: &LineMap,
    diags: &mut Diagnostics,
) {
    let lines: Vec<&str> = original.split('\n').collect();
    let shell: Vec<ShellText> =
        task.steps.iter().flat_map(|s| ShellText::of_step(s, locator, &lines)).collect();
    for r in replacements {
        let at = Pos::new(rest_lines.line(r.pos.line), r.pos.col);
        if shell.iter().any(|t| t.contains(at)) {
            diags.push(Diagnostic::warning(
                Some(at),
                format!(
                    "the alias `{name}` replaced `{d}{name}` in shell text before any shell saw it; \
                     if you meant the shell variable, write `{d}{d}{name}`",
                    name = r.name,
                    d = table.directive(),
                ),
            ));
        }
    }
}

/// A stretch of the file the user wrote that a shell in the step's container may read: from
/// `from` to the end of line `to_line`. Only kept where the text looks like shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ShellText {
    from: Pos,
    to_line: u32,
}

impl ShellText {
    fn of_step(step: &Step, locator: &Locator<'_>, lines: &[&str]) -> Vec<ShellText> {
        let mut out = Vec::new();
        if matches!(step.kind.value, StepKind::Cmd(_))
            && let Some(args) = Self::cmd_args(locator.locate(step.kind.pos), lines)
        {
            out.push(args);
        }
        let env = &step.env;
        if !env.value.is_empty() {
            let line = locator.locate(env.pos).line;
            // A block list starts at its first entry, one entry a line; a flow list is one line.
            let to_line = line + env.value.len() as u32 - 1;
            out.push(ShellText { from: Pos::new(line, 1), to_line });
        }
        out.retain(|t| looks_like_shell(&t.text(lines)));
        out
    }

    /// A `cmd` value starting at `value` (inline, quoted, or a `>`/`|` block): everything after
    /// its first word, up to the last line the value continues on (blank or indented deeper
    /// than the `cmd` key).
    fn cmd_args(value: Pos, lines: &[&str]) -> Option<ShellText> {
        let line_at = |n: u32| lines.get(n as usize - 1).copied();
        let key_indent = (1..=value.line).rev().find_map(|n| {
            let line = line_at(n)?;
            Some(line[..line.find("cmd")?].chars().count())
        })?;
        let continues = |l: &str| l.trim().is_empty() || indent(l) > key_indent;
        let to_line = (value.line + 1..=lines.len() as u32)
            .take_while(|&n| line_at(n).is_some_and(continues))
            .last()
            .unwrap_or(value.line);

        // Where the image starts: past a block indicator's line, or an opening quote.
        let mut line = value.line;
        let mut chars: Vec<char> = line_at(line)?.chars().collect();
        let mut col = value.col as usize - 1;
        if matches!(chars.get(col), Some('>' | '|')) {
            line =
                (line + 1..=to_line).find(|&n| line_at(n).is_some_and(|l| !l.trim().is_empty()))?;
            chars = line_at(line)?.chars().collect();
            col = indent(line_at(line)?);
        } else if matches!(chars.get(col), Some('"' | '\'')) {
            col += 1;
        }
        let image_end =
            col + chars[col.min(chars.len())..].iter().take_while(|c| !c.is_whitespace()).count();
        Some(ShellText { from: Pos::new(line, image_end as u32 + 1), to_line })
    }

    fn contains(&self, at: Pos) -> bool {
        (at.line == self.from.line && at.col >= self.from.col)
            || (at.line > self.from.line && at.line <= self.to_line)
    }

    fn text(&self, lines: &[&str]) -> String {
        (self.from.line..=self.to_line)
            .filter_map(|n| lines.get(n as usize - 1))
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    l.chars().skip(self.from.col as usize - 1).collect()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<String>>()
            .join("\n")
    }
}

fn indent(line: &str) -> usize {
    line.chars().take_while(|c| *c == ' ').count()
}

fn looks_like_shell(text: &str) -> bool {
    [" -c ", "&&", "||", "|", ";", "$(", "`", "'"].iter().any(|s| text.contains(s))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use kiln_plan::plan::RunId;

    use super::*;
    use crate::render::RunVars;

    fn load_text(text: &str) -> Result<Loaded, Diagnostics> {
        let run = RunVars::new(
            RunId::new("ka1"),
            chrono::Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single().expect("date"),
        );
        let data = TemplateData { run, values: Default::default(), secrets: BTreeMap::new() };
        let images = BTreeMap::from([("bash".to_string(), "bash:5".to_string())]);
        let opts = LoadOptions {
            data: &data,
            images: &images,
            base_dir: Path::new("."),
            alias_fetch_timeout: Duration::from_millis(100),
        };
        load(text, &opts)
    }

    /// The shell-rewrite warnings of a task file, as `(line, col)`.
    fn shell_warnings(text: &str) -> Vec<(u32, u32)> {
        load_text(text)
            .unwrap_or_else(|d| panic!("{d:#?}"))
            .diagnostics
            .iter()
            .filter(|d| d.message.contains("in shell text"))
            .map(|d| d.pos.map(|p| (p.line, p.col)).expect("a position"))
            .collect()
    }

    #[test]
    fn aliases_in_a_cmds_image_are_not_shell_text() {
        let file =
            "version: v1.1.0\nsteps:\n  - cmd: $Registry/hello-world:$ID sh -c 'echo $$ID'\n";
        assert_eq!(shell_warnings(file), vec![]);
        let quoted = "version: v1.1.0\nsteps:\n  - cmd: \"$Registry/app:$ID sh -c 'echo hi'\"\n";
        assert_eq!(shell_warnings(quoted), vec![]);
    }

    #[test]
    fn aliases_after_the_image_in_shell_text_warn() {
        let file = "version: v1.1.0\nsteps:\n  - cmd: $Registry/app:$ID sh -c 'echo $ID'\n";
        assert_eq!(shell_warnings(file), vec![(3, 40)]);
        // An alias block above moves nothing: positions are the file's own.
        let file = "version: v1.1.0\nalias:\n  values:\n    repo: myrepo\nsteps:\n  - cmd: bash -c 'echo $repo'\n";
        assert_eq!(shell_warnings(file), vec![(6, 24)]);
    }

    #[test]
    fn block_scalar_cmds_warn_on_every_line_after_the_image() {
        let file = "version: v1.1.0\nsteps:\n  - cmd: >-\n      $Registry/tool:$ID -c \"set -e;\n      echo $ID\"\n    when: [\"-\"]\n  - cmd: busybox echo $ID\n";
        assert_eq!(shell_warnings(file), vec![(5, 12)]);
    }

    #[test]
    fn step_graph_errors_point_at_the_users_line() {
        // Comment lines and the alias block are cut before YAML sees the file.
        for (file, line) in [
            ("# one\n# two\nsteps:\n  - cmd: busybox true\n    when: [nosuch]\n", 5),
            (
                "version: v1.1.0\nalias:\n  values:\n    a: b\nsteps:\n  - cmd: busybox true\n    when: [nosuch]\n",
                7,
            ),
        ] {
            let diags = load_text(file).expect_err("unknown step");
            let d = diags.iter().find(|d| d.message.contains("unknown step")).expect("the error");
            assert_eq!(d.pos.map(|p| (p.line, p.col)), Some((line, 12)), "{file}");
        }
    }

    #[test]
    fn plain_arguments_without_a_shell_do_not_warn() {
        let file = "version: v1.1.0\nsteps:\n  - cmd: busybox echo $ID\n";
        assert_eq!(shell_warnings(file), vec![]);
    }
}
