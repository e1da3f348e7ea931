//! Naming the template expressions that rendered `<no value>`.
//!
//! gtmpl-ng prints a missing value as `<no value>` but keeps its parse tree private, so this
//! module finds the culprits from the template text instead ([`super::scan`]). It is an
//! approximation, run only when the output actually contains `<no value>`:
//!
//! 1. Track `if`/`with`/`range`/`define`/`block` … `end` nesting to know what `.` and `$` are at
//!    each action: the root data, the value a `with .Some.Chain` bound, or unknown (inside
//!    `range`, `define`, or a `with` over anything but a plain chain). The body of a `with`
//!    over a missing chain never runs and is skipped.
//! 2. In each action that prints (not the conditions of `if`/`with`/`range`, which test for
//!    presence; for `$x := …` the part after `:=`), collect the references whose base is
//!    known — `.A.b`, `$.A.b`, and `index .A "b-c"` with literal keys — and resolve them against
//!    the data. A reference through a key that is absent or `null` is a candidate.
//! 3. An action that is nothing but the reference printed `<no value>`. Any other action is
//!    rendered alone (wrapped in a `with` when `.` was bound; all such probes share one parse)
//!    and its candidates are reported only if that output contains `<no value>`. This keeps
//!    `{{ .Values.x | default "y" }}` quiet and reports both references in
//!    `{{ .Values.x | default .Values.y }}` when both are missing. An action that cannot be
//!    rendered alone (it uses a `$variable`, say) has its candidates reported.
//!
//! At most 1000 distinct actions are probed; candidates in later ones are all reported. Known
//! gaps: a missing value reached through a variable (`{{ $v.x }}`), inside `range` or
//! `define`, or through a computed receiver (`(.A).b`) is not named; a candidate in a branch
//! that did not run is named if the file printed `<no value>` elsewhere.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::TemplateData;
use super::funcs::go_quote;
use super::scan::{Actions, Kind, Ref, Root, Scan, Token, pipeline_start, refs, tokenize};

/// How many distinct actions are rendered alone at most. They are rendered together in one
/// template, but a hostile file could hold a million of them; real files have a handful.
const MAX_PROBES: usize = 1000;

/// Scans `template` and returns `(byte offset, expression)` for each missing value it names.
/// `probe` renders each of a list of small templates against the same data (`None` for one
/// that fails).
pub(super) fn find(
    template: &str,
    data: &TemplateData,
    probe: impl FnOnce(&[String]) -> Vec<Option<String>>,
) -> Vec<(usize, String)> {
    // Each action's candidates, and the probe that decides them (`None`: report them).
    let mut pending: Vec<(Vec<Ref>, Option<usize>)> = Vec::new();
    let mut probes: Vec<String> = Vec::new();
    let mut probe_of: HashMap<String, usize> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for scan in Actions::new(template) {
        let Scan::Action(action) = scan else { break };
        if action.comment {
            continue;
        }
        let tokens = tokenize(action.inner, action.start);
        let dot = stack.last().map_or(Dot::Known(Vec::new()), |f| f.dot.clone());
        let dollar_known = stack.iter().all(|f| f.kind != FrameKind::Define);
        let keyword = match tokens.first().map(|t| &t.kind) {
            Some(Kind::Word(w)) => *w,
            _ => "",
        };
        match keyword {
            "if" => stack.push(Frame { kind: FrameKind::If, outer: dot.clone(), dot }),
            "with" => {
                let bound = binding(&tokens[1..], &dot, dollar_known, data);
                stack.push(Frame { kind: FrameKind::With, outer: dot, dot: bound });
            }
            "range" => stack.push(Frame { kind: FrameKind::Range, outer: dot, dot: Dot::Unknown }),
            "define" | "block" => {
                stack.push(Frame { kind: FrameKind::Define, outer: dot, dot: Dot::Unknown })
            }
            "else" => {
                if let Some(frame) = stack.last_mut() {
                    let is_with =
                        matches!(tokens.get(1).map(|t| &t.kind), Some(Kind::Word("with")));
                    frame.dot = if is_with {
                        binding(&tokens[2..], &frame.outer, dollar_known, data)
                    } else {
                        frame.outer.clone()
                    };
                }
            }
            "end" => {
                stack.pop();
            }
            "template" | "break" | "continue" => {}
            _ => {
                let from = pipeline_start(&tokens);
                let all = refs(&tokens[from..]);
                // A pipeline that is nothing but the reference prints it: no probe needed.
                let alone = all.len() == 1 && all[0].tokens == tokens.len() - from;
                let candidates: Vec<Ref> = all
                    .into_iter()
                    .filter(|r| path(r, &dot, dollar_known).is_some_and(|p| !resolves(data, &p)))
                    .collect();
                let Some(first) = tokens.get(from).filter(|_| !candidates.is_empty()) else {
                    continue;
                };
                let decided_by = if alone {
                    None
                } else {
                    let pipeline = &template[first.start..action.start + action.inner.len()];
                    let text = probe_text(pipeline, &dot);
                    match probe_of.get(&text) {
                        Some(&i) => Some(i),
                        // Past the budget, report without checking.
                        None if probes.len() >= MAX_PROBES => None,
                        None => {
                            probe_of.insert(text.clone(), probes.len());
                            probes.push(text);
                            Some(probes.len() - 1)
                        }
                    }
                };
                pending.push((candidates, decided_by));
            }
        }
    }
    let outputs = if probes.is_empty() { Vec::new() } else { probe(&probes) };
    let printed = |i: usize| {
        outputs.get(i).and_then(Option::as_ref).is_none_or(|out| out.contains(super::NO_VALUE))
    };
    pending
        .into_iter()
        .filter(|(_, decided_by)| decided_by.is_none_or(printed))
        .flat_map(|(candidates, _)| candidates.into_iter().map(|r| (r.start, r.expr(template))))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    If,
    With,
    Range,
    Define,
}

/// What `.` is: a path from the root data (empty: the root itself), or unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dot<'a> {
    Known(Vec<Cow<'a, str>>),
    Unknown,
    /// In the body of a `with` over a missing value, which never runs: nothing to report.
    Skipped,
}

struct Frame<'a> {
    kind: FrameKind,
    /// `.` in this block's current branch.
    dot: Dot<'a>,
    /// `.` outside the block, which `else` branches see.
    outer: Dot<'a>,
}

/// What `with PIPELINE` binds `.` to: known only when the pipeline is a single plain chain,
/// and nothing at all when that chain is missing, because then the body does not run.
fn binding<'a>(
    tokens: &[Token<'a>],
    dot: &Dot<'a>,
    dollar_known: bool,
    data: &TemplateData,
) -> Dot<'a> {
    match refs(tokens).as_slice() {
        [r] if r.tokens == tokens.len() => match path(r, dot, dollar_known) {
            Some(p) if resolves(data, &p) => Dot::Known(p),
            Some(_) => Dot::Skipped,
            None => Dot::Unknown,
        },
        _ => Dot::Unknown,
    }
}

/// The template that renders `pipeline` where `.` is `dot`.
fn probe_text(pipeline: &str, dot: &Dot) -> String {
    match dot {
        Dot::Known(path) if !path.is_empty() => {
            let keys: Vec<String> = path.iter().map(|k| go_quote(k)).collect();
            format!("{{{{with index $ {}}}}}{{{{{pipeline}}}}}{{{{end}}}}", keys.join(" "))
        }
        _ => format!("{{{{{pipeline}}}}}"),
    }
}

/// The path of `r` from the root data, when `.` or `$` is known where it is used.
fn path<'a>(r: &Ref<'a>, dot: &Dot<'a>, dollar_known: bool) -> Option<Vec<Cow<'a, str>>> {
    if r.fields.is_empty() {
        return None;
    }
    match (&r.root, dot) {
        (_, Dot::Skipped) => None,
        (Root::Dot, Dot::Known(base)) => Some(base.iter().chain(&r.fields).cloned().collect()),
        (Root::Dollar, _) if dollar_known => Some(r.fields.clone()),
        _ => None,
    }
}

/// Whether the data has a non-null value at `path`. A path that runs into a scalar resolves:
/// that is a template error, which gtmpl-ng reports, not a missing value.
fn resolves(data: &TemplateData, path: &[Cow<str>]) -> bool {
    let Some((root, rest)) = path.split_first() else { return true };
    let first = rest.first().map(Cow::as_ref);
    match root.as_ref() {
        "Values" => resolves_json(data.values.as_map(), rest),
        "Run" => first.is_none_or(|f| super::RUN_FIELDS.contains(&f)),
        "Build" => first.is_none_or(|f| f == "ID"),
        "Secrets" => first.is_none_or(|f| data.secrets.contains_key(f)),
        "ValuesJSON" | "RunJSON" => true,
        _ => false,
    }
}

fn resolves_json(mut map: &Map<String, Json>, path: &[Cow<str>]) -> bool {
    for key in path {
        match map.get(key.as_ref()) {
            None | Some(Json::Null) => return false,
            Some(Json::Object(inner)) => map = inner,
            Some(_) => return true,
        }
    }
    true
}
