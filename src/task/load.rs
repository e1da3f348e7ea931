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
use super::model::{StepKind, Task};
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
    let locator = Locator::new(original, &rendered.text, final_lines);
    let root = match yaml::parse(&rendered.text) {
        Ok(root) => root,
        Err(e) => {
            diags.push(Diagnostic::error(e.pos.map(|p| locator.locate(p)), e.message));
            return Err(diags.sorted());
        }
    };
    let (task, task_diags) = parse::parse_task(&root, &rendered.text, &|p| locator.locate(p));
    diags.extend(task_diags);
    let Some(mut task) = task else { return Err(diags.sorted()) };

    if let Some((table, (replacements, rest_lines))) = &aliases {
        expand_first_tokens(&mut task, table);
        warn_shell_rewrites(&task, original, table, replacements, rest_lines, &mut diags);
    }
    let (graph, graph_diags) = dag::build(&task.steps);
    diags.extend(graph_diags);
    if diags.has_errors() {
        return Err(diags.sorted());
    }
    Ok(Loaded { task, graph, rendered: rendered.text, diagnostics: diags.sorted() })
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
/// `env` value was replaced before the shell saw it.
fn warn_shell_rewrites(
    task: &Task,
    original: &str,
    table: &AliasTable,
    replacements: &[Replacement],
    rest_lines: &LineMap,
    diags: &mut Diagnostics,
) {
    let original_lines: Vec<&str> = original.split('\n').collect();
    for r in replacements {
        let line = rest_lines.line(r.pos.line);
        let text = original_lines.get(line as usize - 1).copied().unwrap_or("");
        let in_cmd_or_env = task.steps.iter().any(|s| {
            let cmd_line = matches!(s.kind.value, StepKind::Cmd(_)) && s.kind.pos.line == line;
            let env = &s.env;
            let env_lines = env.pos.line..=env.pos.line + env.value.len() as u32;
            cmd_line || (!env.value.is_empty() && env_lines.contains(&line))
        });
        if in_cmd_or_env && looks_like_shell(text) {
            diags.push(Diagnostic::warning(
                Some(Pos::new(line, r.pos.col)),
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

fn looks_like_shell(line: &str) -> bool {
    [" -c ", "&&", "||", "|", ";", "$(", "`", "'"].iter().any(|s| line.contains(s))
}
