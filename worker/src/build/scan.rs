//! Dockerfile dependency scan: which images a build starts from.
//!
//! The result feeds the dependency report (§6.3): the *runtime* dependency is the external image
//! the built (or `--target`) stage ultimately starts from, following `FROM <stage>` chains; the
//! *buildtime* dependencies are every other external image the build uses (`FROM` of earlier
//! stages, `COPY --from=<image>`). ACR's scanner splits lines on whitespace and fails the build on
//! anything it does not expect (`FROM --platform=…`, odd `ARG` use: sharp edges 1–3). This one
//! reads Dockerfiles the way the classic builder does — BOM, the `# escape=` directive, line
//! continuations, comments inside continuations, case-insensitive instructions, `--platform=`
//! flags, `ARG`s before the first `FROM` (defaults, `--build-arg` overrides, `${A:-x}` forms,
//! quotes), stage aliases matched case-insensitively, `scratch` — and never fails: whatever it
//! cannot resolve becomes a warning in the step log, and Docker decides whether the build works.

use std::collections::{BTreeMap, HashMap};

use kiln_plan::image_ref::ImageRef;

/// What a Dockerfile depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// `None` for `FROM scratch` or when it could not be resolved (see `warnings`).
    pub runtime: Option<ImageRef>,
    /// In order of first use, without duplicates and without the runtime image.
    pub buildtime: Vec<ImageRef>,
    /// Things the scan could not resolve; the build goes ahead regardless.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Base {
    Stage(usize),
    Image(ImageRef),
    Scratch,
    Unknown,
}

struct Stage {
    name: Option<String>,
    base: Base,
}

/// Scans Dockerfile text. `build_args` are the step's `--build-arg` values, `target` its
/// `--target`.
pub fn scan(dockerfile: &str, build_args: &BTreeMap<String, String>, target: Option<&str>) -> Scan {
    let mut warnings = Vec::new();
    let mut meta: HashMap<String, String> = HashMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut copy_from: Vec<(usize, ImageRef)> = Vec::new();
    let mut reached_target = false;
    let target_lower = target.map(str::to_ascii_lowercase);

    for line in logical_lines(dockerfile) {
        let text = line.text.trim();
        let (instruction, rest) = match text.split_once(char::is_whitespace) {
            Some((instruction, rest)) => (instruction, rest.trim()),
            None => (text, ""),
        };
        let warn = |warnings: &mut Vec<String>, message: String| {
            warnings.push(format!("Dockerfile line {}: {message}", line.number))
        };
        match instruction.to_ascii_uppercase().as_str() {
            "ARG" if stages.is_empty() => {
                let words = split_words(rest, line.escape);
                if words.is_empty() {
                    warn(&mut warnings, "ARG requires at least one argument".to_string());
                }
                for word in words {
                    let (name, default) = match word.split_once('=') {
                        Some((name, default)) => (name.to_string(), Some(default.to_string())),
                        None => (word.clone(), None),
                    };
                    let value = match (build_args.get(&name), default) {
                        (Some(given), _) => given.clone(),
                        (None, Some(default)) => match expand(&default, &meta, line.escape) {
                            Ok(e) => {
                                for missing in e.undefined {
                                    warn(
                                        &mut warnings,
                                        format!("ARG {name}: ${missing} is not defined"),
                                    );
                                }
                                e.value
                            }
                            Err(e) => {
                                warn(&mut warnings, format!("ARG {name}: {e}"));
                                String::new()
                            }
                        },
                        (None, None) => String::new(),
                    };
                    meta.insert(name, value);
                }
            }
            "FROM" => {
                if reached_target {
                    break;
                }
                let stage =
                    from_stage(rest, line.escape, &meta, &stages, &mut |m| warn(&mut warnings, m));
                let is_target = match (&target_lower, &stage.name) {
                    (Some(t), Some(name)) => t == name,
                    _ => false,
                };
                stages.push(stage);
                reached_target = is_target;
            }
            "COPY" if !stages.is_empty() => {
                let Some(from) = copy_from_flag(rest) else { continue };
                let stage_index = stages.len() - 1;
                // A number or an earlier stage's name is a stage, anything else an image.
                let is_stage = from.parse::<usize>().is_ok()
                    || find_stage(&stages[..stage_index], &from).is_some();
                if from.contains('$') {
                    warn(
                        &mut warnings,
                        format!("COPY --from={from}: variables are not expanded here"),
                    );
                } else if !is_stage {
                    match ImageRef::parse(&from) {
                        Ok(image) => copy_from.push((stage_index, image)),
                        Err(e) => warn(&mut warnings, format!("COPY --from: {e}")),
                    }
                }
            }
            _ => {}
        }
    }

    if let Some(target) = target
        && !reached_target
    {
        warnings.push(format!("target stage {target:?} was not found in the Dockerfile"));
    }
    let Some(last) = stages.len().checked_sub(1) else {
        warnings.push("the Dockerfile has no FROM instruction".to_string());
        return Scan { warnings, ..Scan::default() };
    };

    let runtime = match resolve(&stages, last) {
        Base::Image(image) => Some(image),
        _ => None,
    };
    let mut buildtime: Vec<ImageRef> = Vec::new();
    let externals = stages
        .iter()
        .enumerate()
        .flat_map(|(i, stage)| {
            let from = match &stage.base {
                Base::Image(image) => Some(image.clone()),
                _ => None,
            };
            from.into_iter().chain(
                copy_from.iter().filter(move |(s, _)| *s == i).map(|(_, image)| image.clone()),
            )
        })
        .collect::<Vec<_>>();
    for image in externals {
        let same = |other: &ImageRef| dependency_key(other) == dependency_key(&image);
        if runtime.as_ref().is_some_and(same) || buildtime.iter().any(same) {
            continue;
        }
        buildtime.push(image);
    }
    Scan { runtime, buildtime, warnings }
}

/// Two references name the same dependency when they agree after normalisation
/// (`golang` = `library/golang:latest` = `docker.io/library/golang`).
fn dependency_key(image: &ImageRef) -> (String, String, String, String) {
    let tag = match (&image.tag, &image.digest) {
        (Some(tag), _) => tag.clone(),
        (None, None) => "latest".to_string(),
        (None, Some(_)) => String::new(),
    };
    (
        image.registry_host().to_string(),
        image.repository(),
        tag,
        image.digest.clone().unwrap_or_default(),
    )
}

fn resolve(stages: &[Stage], mut index: usize) -> Base {
    // A stage can only name an earlier one, so this walk always ends.
    loop {
        match stages.get(index).map(|s| &s.base) {
            Some(Base::Stage(earlier)) if *earlier < index => index = *earlier,
            Some(base @ (Base::Image(_) | Base::Scratch | Base::Unknown)) => return base.clone(),
            _ => return Base::Unknown,
        }
    }
}

fn find_stage(stages: &[Stage], name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase();
    stages.iter().rposition(|s| s.name.as_deref() == Some(name.as_str()))
}

fn from_stage(
    rest: &str,
    escape: char,
    meta: &HashMap<String, String>,
    stages: &[Stage],
    warn: &mut dyn FnMut(String),
) -> Stage {
    let mut words: Vec<&str> = rest.split_whitespace().collect();
    // Flags come first and only in `--name=value` form (the builder's flag parser).
    while let Some(flag) = words.first().and_then(|w| w.strip_prefix("--")) {
        words.remove(0);
        match flag.split_once('=') {
            Some(("platform", value)) => match expand(value, meta, escape) {
                Ok(e) if e.value.is_empty() => warn(format!(
                    "FROM --platform={value} expands to nothing{}; the classic builder will reject it \
                     (declare the ARG before the first FROM and give it a value)",
                    undefined_note(&e.undefined)
                )),
                Ok(_) => {}
                Err(e) => warn(format!("FROM --platform={value}: {e}")),
            },
            _ => warn(format!("FROM: unknown flag --{flag}")),
        }
    }
    let (image_word, name) = match words.as_slice() {
        [image] => (*image, None),
        [image, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
            (*image, Some(name.to_ascii_lowercase()))
        }
        _ => {
            warn(format!("FROM requires either one or three arguments, got {rest:?}"));
            return Stage { name: None, base: Base::Unknown };
        }
    };
    let image = match expand(image_word, meta, escape) {
        Ok(e) => {
            if !e.undefined.is_empty() {
                warn(format!(
                    "FROM {image_word}: {} (only ARGs declared before the first FROM apply)",
                    undefined_note(&e.undefined).trim_start_matches(", ")
                ));
            }
            e.value
        }
        Err(e) => {
            warn(format!("FROM {image_word}: {e}"));
            return Stage { name, base: Base::Unknown };
        }
    };
    let base = if let Some(index) = find_stage(stages, &image) {
        Base::Stage(index)
    } else if image == "scratch" {
        Base::Scratch
    } else {
        match ImageRef::parse(&image) {
            Ok(parsed) => Base::Image(parsed),
            Err(e) => {
                warn(format!("FROM {image_word}: {e}"));
                Base::Unknown
            }
        }
    };
    Stage { name, base }
}

fn undefined_note(undefined: &[String]) -> String {
    if undefined.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = undefined.iter().map(|n| format!("${n}")).collect();
        format!(", {} not defined", names.join(", "))
    }
}

/// The value of a `--from=` flag of `COPY`, if any.
fn copy_from_flag(rest: &str) -> Option<String> {
    rest.split_whitespace()
        .take_while(|w| w.starts_with("--"))
        .find_map(|w| w.strip_prefix("--from="))
        .map(str::to_string)
}

struct Line {
    /// 1-based number of the first physical line.
    number: usize,
    text: String,
    escape: char,
}

/// Joins continuation lines and drops comments and blank lines, honouring a leading
/// `# escape=` parser directive.
fn logical_lines(source: &str) -> Vec<Line> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut escape = '\\';
    let mut in_directives = true;
    let mut lines = Vec::new();
    let mut current: Option<Line> = None;
    for (index, raw) in source.lines().enumerate() {
        let trimmed = raw.trim();
        if in_directives {
            if let Some(value) = directive(trimmed, "escape") {
                if let [c @ ('\\' | '`')] = value.chars().collect::<Vec<_>>().as_slice() {
                    escape = *c;
                }
                continue;
            }
            if directive_like(trimmed) {
                continue;
            }
            in_directives = false;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            // Blank and comment lines end nothing, even inside a continuation.
            continue;
        }
        let (content, continues) = match raw.trim_end().strip_suffix(escape) {
            Some(content) => (content, true),
            None => (raw, false),
        };
        let line =
            current.get_or_insert_with(|| Line { number: index + 1, text: String::new(), escape });
        line.text.push_str(content);
        if !continues && let Some(done) = current.take() {
            lines.push(done);
        }
    }
    lines.extend(current);
    lines
}

/// `# key=value` at the top of the file.
fn directive<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let body = line.strip_prefix('#')?.trim_start();
    let (k, v) = body.split_once('=')?;
    k.trim().eq_ignore_ascii_case(key).then(|| v.trim())
}

fn directive_like(line: &str) -> bool {
    line.strip_prefix('#').and_then(|b| b.split_once('=')).is_some_and(|(k, _)| {
        let k = k.trim();
        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// Words of an `ARG` line: split on unquoted whitespace, quotes removed.
fn split_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut has_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if has_word {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                has_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, c) if c == escape && q != Some('\'') => {
                has_word = true;
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            (_, c) => {
                word.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(word);
    }
    words
}

struct Expanded {
    value: String,
    undefined: Vec<String>,
}

/// The builder's word expansion (`shell.Lex.ProcessWord`): `$VAR`, `${VAR}`, `${VAR:-word}`,
/// `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`, `${VAR?msg}`, single and double
/// quotes and the escape character.
fn expand(word: &str, vars: &HashMap<String, String>, escape: char) -> Result<Expanded, String> {
    let mut out = Expanded { value: String::new(), undefined: Vec::new() };
    let chars: Vec<char> = word.chars().collect();
    expand_into(&chars, vars, escape, &mut out, 0)?;
    Ok(out)
}

/// Nesting bound for `${A:-${B:-…}}`, so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 16;

fn expand_into(
    chars: &[char],
    vars: &HashMap<String, String>,
    escape: char,
    out: &mut Expanded,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("variable substitutions nested too deeply".to_string());
    }
    let mut i = 0;
    let mut in_double = false;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\'' if !in_double => {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or("unexpected end of statement while looking for matching single-quote")?;
                out.value.extend(&chars[i..i + end]);
                i += end + 1;
            }
            '"' => in_double = !in_double,
            c if c == escape => {
                if let Some(&next) = chars.get(i) {
                    // Inside double quotes the escape only escapes `"`, `$` and itself.
                    if in_double && !matches!(next, '"' | '$') && next != escape {
                        out.value.push(c);
                    }
                    out.value.push(next);
                    i += 1;
                } else {
                    out.value.push(c);
                }
            }
            '$' => i = expand_variable(chars, i, vars, escape, out, depth)?,
            c => out.value.push(c),
        }
    }
    if in_double {
        return Err("unexpected end of statement while looking for matching double-quote".into());
    }
    Ok(())
}

/// Expands the variable whose `$` was just before `chars[i]`; returns the index after it.
fn expand_variable(
    chars: &[char],
    mut i: usize,
    vars: &HashMap<String, String>,
    escape: char,
    out: &mut Expanded,
    depth: usize,
) -> Result<usize, String> {
    let is_name = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    if chars.get(i) != Some(&'{') {
        let len = chars[i..].iter().take_while(|c| is_name(c)).count();
        if len == 0 {
            out.value.push('$');
            return Ok(i);
        }
        let name: String = chars[i..i + len].iter().collect();
        lookup(&name, vars, out);
        return Ok(i + len);
    }
    i += 1;
    let len = chars[i..].iter().take_while(|c| is_name(c)).count();
    if len == 0 {
        return Err("bad substitution: missing variable name after ${".to_string());
    }
    let name: String = chars[i..i + len].iter().collect();
    i += len;
    // Find the matching `}`, allowing nested `${…}` in the word.
    let mut level = 0;
    let mut end = None;
    for (offset, &c) in chars[i..].iter().enumerate() {
        match c {
            '{' => level += 1,
            '}' if level == 0 => {
                end = Some(i + offset);
                break;
            }
            '}' => level -= 1,
            _ => {}
        }
    }
    let end = end.ok_or("missing '}' in variable substitution")?;
    let modifier: Vec<char> = chars[i..end].to_vec();
    let value = vars.get(&name);
    match modifier.as_slice() {
        [] => lookup(&name, vars, out),
        [':', op, word @ ..] | [op @ ('-' | '+' | '?'), word @ ..] => {
            let colon = modifier.first() == Some(&':');
            // With `:`, an empty value counts as unset.
            let set = match value {
                Some(v) => !(colon && v.is_empty()),
                None => false,
            };
            match op {
                '-' if set => out.value.push_str(value.map(String::as_str).unwrap_or("")),
                '-' => expand_into(word, vars, escape, out, depth + 1)?,
                '+' if set => expand_into(word, vars, escape, out, depth + 1)?,
                '+' => {}
                '?' if set => out.value.push_str(value.map(String::as_str).unwrap_or("")),
                '?' => {
                    let message: String = word.iter().collect();
                    return Err(format!(
                        "{name}: {}",
                        if message.is_empty() { "is not allowed to be unset" } else { &message }
                    ));
                }
                _ => return Err(format!("unsupported modifier ({op}) in substitution")),
            }
        }
        _ => {
            let text: String = modifier.iter().collect();
            return Err(format!("unsupported modifier ({text}) in substitution"));
        }
    }
    Ok(end + 1)
}

/// Appends the variable's value; an undefined one expands to nothing and is noted.
fn lookup(name: &str, vars: &HashMap<String, String>, out: &mut Expanded) {
    match vars.get(name) {
        Some(value) => out.value.push_str(value),
        None => {
            if !out.undefined.iter().any(|n| n == name) {
                out.undefined.push(name.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn names(images: &[ImageRef]) -> Vec<String> {
        images.iter().map(ImageRef::to_string).collect()
    }

    fn runtime(scan: &Scan) -> Option<String> {
        scan.runtime.as_ref().map(ImageRef::to_string)
    }

    #[test]
    fn single_stage() {
        let s = scan("FROM busybox\nRUN true\n", &args(&[]), None);
        assert_eq!(runtime(&s).as_deref(), Some("busybox"));
        assert!(s.buildtime.is_empty() && s.warnings.is_empty());
    }

    #[test]
    fn multi_stage_with_aliases() {
        let df = "FROM golang:1.22 AS build\nRUN go build\n\
                  FROM build AS test\nRUN go test\n\
                  FROM alpine:3.20\nCOPY --from=build /app /app\n";
        let s = scan(df, &args(&[]), None);
        assert_eq!(runtime(&s).as_deref(), Some("alpine:3.20"));
        assert_eq!(names(&s.buildtime), ["golang:1.22"]);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn alias_chain_resolves_to_the_external_image() {
        let df = "FROM busybox AS Base\nFROM base AS mid\nFROM MID\n";
        let s = scan(df, &args(&[]), None);
        assert_eq!(runtime(&s).as_deref(), Some("busybox"));
        assert!(s.buildtime.is_empty(), "stage names are not dependencies");
    }

    #[test]
    fn target_stops_the_scan() {
        let df = "FROM node:20 AS deps\nFROM deps AS dev\nFROM nginx AS final\n";
        let s = scan(df, &args(&[]), Some("dev"));
        assert_eq!(runtime(&s).as_deref(), Some("node:20"));
        assert!(s.buildtime.is_empty(), "nginx comes after the target");
        let s = scan(df, &args(&[]), Some("nope"));
        assert_eq!(runtime(&s).as_deref(), Some("nginx"));
        assert!(s.warnings.iter().any(|w| w.contains("\"nope\"")));
    }

    #[test]
    fn arg_expansion_defaults_and_overrides() {
        let df = "ARG REG=docker.io\nARG IMG=${REG}/library/busybox\nARG TAG\n\
                  FROM $IMG:${TAG:-1.36} AS a\nFROM ${IMG}\n";
        let s = scan(df, &args(&[]), None);
        assert_eq!(runtime(&s).as_deref(), Some("docker.io/library/busybox"));
        assert_eq!(names(&s.buildtime), ["docker.io/library/busybox:1.36"]);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let s = scan(df, &args(&[("TAG", "1.37"), ("REG", "ignored")]), None);
        // REG is overridden, but IMG's default was expanded with the override too.
        assert_eq!(names(&s.buildtime), ["ignored/library/busybox:1.37"]);
    }

    #[test]
    fn args_after_from_do_not_apply_to_from() {
        let df = "FROM busybox\nARG V=1\nFROM alpine$V\n";
        let s = scan(df, &args(&[("V", "2")]), None);
        assert_eq!(runtime(&s).as_deref(), Some("alpine"));
        assert!(s.warnings.iter().any(|w| w.contains("$V not defined")), "{:?}", s.warnings);
    }

    /// Sharp edge 1: `--platform` must not break the scan.
    #[test]
    fn platform_flag() {
        let df = "ARG BUILDPLATFORM=linux/amd64\nFROM --platform=$BUILDPLATFORM busybox AS base\nFROM base\n";
        let s = scan(df, &args(&[]), None);
        assert_eq!(runtime(&s).as_deref(), Some("busybox"));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let s = scan("FROM --platform=$BUILDPLATFORM golang AS b\nFROM alpine\n", &args(&[]), None);
        assert_eq!(names(&s.buildtime), ["golang"]);
        assert!(s.warnings.iter().any(|w| w.contains("classic builder")), "{:?}", s.warnings);
    }

    #[test]
    fn bom_continuations_comments_and_case() {
        let df = "\u{feff}# syntax=docker/dockerfile:1\n# a comment\nfrom \\\n  # inside\n  busybox:1.36 \\\n  as   b\n\nfRoM b\n";
        let s = scan(df, &args(&[]), None);
        assert_eq!(runtime(&s).as_deref(), Some("busybox:1.36"));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    }

    #[test]
    fn escape_directive() {
        let df = "# escape=`\nFROM `\n  busybox\nRUN dir c:\\\n";
        let s = scan(df, &args(&[]), None);
        assert_eq!(runtime(&s).as_deref(), Some("busybox"));
    }

    #[test]
    fn scratch_is_no_dependency() {
        let s = scan("FROM golang AS b\nFROM scratch\nCOPY --from=b /x /x\n", &args(&[]), None);
        assert_eq!(s.runtime, None);
        assert_eq!(names(&s.buildtime), ["golang"]);
    }

    #[test]
    fn duplicates_and_runtime_are_folded() {
        let df = "FROM golang AS a\nFROM library/golang:latest AS b\nFROM docker.io/golang AS c\n\
                  FROM alpine AS d\nFROM alpine\nCOPY --from=busybox:1 /bin/sh /sh\nCOPY --from=0 /x /x\n";
        let s = scan(df, &args(&[]), None);
        assert_eq!(runtime(&s).as_deref(), Some("alpine"));
        assert_eq!(names(&s.buildtime), ["golang", "busybox:1"]);
    }

    #[test]
    fn quotes_in_args() {
        let df = "ARG A=\"busy\"'box' B=x\nFROM \"$A\"\n";
        let s = scan(df, &args(&[]), None);
        assert_eq!(runtime(&s).as_deref(), Some("busybox"));
    }

    #[test]
    fn substitution_forms() {
        let vars: HashMap<String, String> = [("SET", "v"), ("EMPTY", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let e = |w: &str| expand(w, &vars, '\\').map(|e| e.value);
        assert_eq!(e("${SET:-d}").as_deref(), Ok("v"));
        assert_eq!(e("${EMPTY:-d}").as_deref(), Ok("d"));
        assert_eq!(e("${EMPTY-d}").as_deref(), Ok(""));
        assert_eq!(e("${UNSET-d}").as_deref(), Ok("d"));
        assert_eq!(e("${SET:+alt}").as_deref(), Ok("alt"));
        assert_eq!(e("${EMPTY:+alt}").as_deref(), Ok(""));
        assert_eq!(e("${UNSET:-${SET}x}").as_deref(), Ok("vx"));
        assert_eq!(e("a\\$SET").as_deref(), Ok("a$SET"));
        assert_eq!(e("'$SET'").as_deref(), Ok("$SET"));
        assert_eq!(e("\"$SET\"").as_deref(), Ok("v"));
        assert_eq!(e("$").as_deref(), Ok("$"));
        assert!(e("${UNSET:?must be set}").unwrap_err().contains("must be set"));
        assert!(e("${SET").is_err());
        assert!(e("${}").is_err());
        assert!(e("${SET/a/b}").is_err());
    }

    #[test]
    fn problems_are_warnings_not_failures() {
        for df in [
            "",
            "RUN true\n",
            "FROM\n",
            "FROM a b\n",
            "FROM ${X:?no}\n",
            "FROM UPPER\n",
            "FROM $NOPE\n",
            "FROM busybox\nCOPY --from=$X / /\n",
            "FROM busybox AS\n",
            "ARG\nFROM busybox\n",
            "FROM ${A:-${B:-${C:-${D:-${E:-${F:-${G:-${H:-${I:-${J:-${K:-${L:-${M:-${N:-${O:-${P:-${Q:-${R:-x}}}}}}}}}}}}}}}}}}\n",
            "\u{feff}",
            "FROM 'unterminated\n",
            "FROM --platform busybox\n",
        ] {
            let s = scan(df, &args(&[]), None);
            assert!(!s.warnings.is_empty(), "{df:?} should warn");
        }
        assert_eq!(runtime(&scan("FROM busybox \\", &args(&[]), None)).as_deref(), Some("busybox"));
    }
}
