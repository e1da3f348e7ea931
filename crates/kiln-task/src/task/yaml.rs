//! The task file as a YAML tree with a position on every node.
//!
//! The tree is composed here from granit-parser's events (the parser under serde-saphyr) rather
//! than through serde, for two reasons: [`super::parse`] reports every unknown key and wrongly
//! typed value at its own line and column, all at once, which needs a generic positioned tree;
//! and composing directly is about twice as fast as going through serde, which matters on the
//! path every run takes. Scalars resolve the way Go's yaml.v2 (ACR's decoder) resolves them:
//! YAML 1.1 booleans (`yes`, `on`), `~` for null, octal `0755`; merge keys (`<<`) apply, and
//! duplicate keys are errors.

use std::borrow::Cow;

use granit_parser::{Event, Parser, ScalarStyle, Span};

use crate::diagnostic::Pos;

/// A YAML node and where it starts in the parsed text.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    /// Byte range of a plain scalar in the parsed text, so a string field gets the scalar exactly
    /// as written (`1.10` stays `1.10`, as Go's yaml.v2 does for string fields).
    pub raw: Option<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// The YAML kind, for messages like "expected a list, found a string".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// A YAML error and where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub pos: Option<Pos>,
    pub message: String,
}

/// Aliases may repeat a subtree; past this many nodes a document is an alias bomb, not a task.
const MAX_NODES: usize = 1_000_000;

/// Parses the first YAML document of `text` (Go's `yaml.Unmarshal` reads only the first). An
/// empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut composer =
        Composer { parser: Parser::new_from_str(text), text, anchors: Vec::new(), nodes: 0 };
    loop {
        match composer.next()? {
            None | Some((Event::StreamEnd, _)) => return Ok(null_at(Pos::new(1, 1))),
            Some((Event::StreamStart | Event::DocumentStart(..), _)) => continue,
            Some((Event::DocumentEnd, span)) => return Ok(null_at(pos(&span))),
            Some((event, span)) => return composer.node(event, span),
        }
    }
}

/// A task file parsed the way ACR's decoder reads it, see [`parse_like_go`].
#[derive(Debug, Clone, PartialEq)]
pub struct GoParsed<'a> {
    pub root: Node,
    /// The text the tree's positions refer to: the input, or with each lone dash quoted.
    pub text: Cow<'a, str>,
    /// Where the input had a lone `-` in a flow collection, in the input's coordinates.
    pub bare_dashes: Vec<Pos>,
}

/// [`parse`], but a lone `-` in a flow collection (`when: [-]`) is the string `-`, as Go's
/// yaml.v2 (ACR's decoder) reads it; YAML 1.2, and granit-parser, refuse it, and real ACR task
/// files contain it. Each such dash is quoted and the text parsed again, so the callers can warn
/// at the positions returned.
pub fn parse_like_go(text: &str) -> Result<GoParsed<'_>, YamlError> {
    const BARE_DASH: &str = "plain scalar cannot start with '-' followed by";
    let mut current = Cow::Borrowed(text);
    let mut bare_dashes: Vec<Pos> = Vec::new();
    loop {
        let err = match parse(&current) {
            Ok(root) => return Ok(GoParsed { root, text: current, bare_dashes }),
            Err(e) => e,
        };
        // Earlier quotes on a line moved what follows them right by two columns each.
        let shift = |at: Pos| {
            let quoted = bare_dashes.iter().filter(|p| p.line == at.line && p.col < at.col);
            2 * quoted.count() as u32
        };
        let at = match err.pos {
            Some(p) if err.message.starts_with(BARE_DASH) => p,
            pos => {
                let pos = pos.map(|p| Pos::new(p.line, p.col - shift(p)));
                return Err(YamlError { pos, ..err });
            }
        };
        let Some(offset) = byte_offset(&current, at).filter(|&o| current[o..].starts_with('-'))
        else {
            return Err(err);
        };
        bare_dashes.push(Pos::new(at.line, at.col - shift(at)));
        current.to_mut().replace_range(offset..offset + 1, "\"-\"");
    }
}

/// The byte offset of a 1-based line and (character) column.
fn byte_offset(text: &str, at: Pos) -> Option<usize> {
    let line_start =
        if at.line <= 1 { 0 } else { text.match_indices('\n').nth(at.line as usize - 2)?.0 + 1 };
    let line = &text[line_start..];
    line.char_indices().nth(at.col.checked_sub(1)? as usize).map(|(i, _)| line_start + i)
}

fn null_at(pos: Pos) -> Node {
    Node { value: Value::Null, pos, raw: None }
}

fn pos(span: &Span) -> Pos {
    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Pos::new(clamp(span.start.line()), clamp(span.start.col() + 1))
}

struct Composer<'a> {
    parser: Parser<'a, granit_parser::StrInput<'a>>,
    text: &'a str,
    /// Anchored nodes by anchor ID (IDs are small and increasing within a document).
    anchors: Vec<Option<Node>>,
    nodes: usize,
}

impl<'a> Composer<'a> {
    /// The next event that is part of the data (comments and anchor metadata skipped).
    fn next(&mut self) -> Result<Option<(Event<'a>, Span)>, YamlError> {
        loop {
            match self.parser.next_event() {
                None => return Ok(None),
                Some(Err(e)) => {
                    let m = e.marker();
                    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                    return Err(YamlError {
                        pos: Some(Pos::new(clamp(m.line()), clamp(m.col() + 1))),
                        message: e.info(),
                    });
                }
                Some(Ok((event, span))) => match event {
                    Event::Scalar(..)
                    | Event::SequenceStart(..)
                    | Event::SequenceEnd
                    | Event::MappingStart(..)
                    | Event::MappingEnd
                    | Event::Alias(_)
                    | Event::UnresolvedAlias(_)
                    | Event::StreamStart
                    | Event::StreamEnd
                    | Event::DocumentStart(..)
                    | Event::DocumentEnd => return Ok(Some((event, span))),
                    _ => continue,
                },
            }
        }
    }

    fn count(&mut self, at: Pos, n: usize) -> Result<(), YamlError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                pos: Some(at),
                message: format!(
                    "the document expands to more than {MAX_NODES} nodes through aliases"
                ),
            });
        }
        Ok(())
    }

    fn node(&mut self, event: Event<'a>, span: Span) -> Result<Node, YamlError> {
        let at = pos(&span);
        self.count(at, 1)?;
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let is_str = tag.as_deref().is_some_and(|t| t.is_yaml_core_schema_tag("str"));
                let value = if style == ScalarStyle::Plain && !is_str {
                    resolve(&text)
                } else {
                    Value::Str(text.into_owned())
                };
                let raw = match (&value, span.start.byte_offset(), span.end.byte_offset()) {
                    (Value::Str(_), ..) => None,
                    (_, Some(s), Some(e)) => Some((s, e)),
                    _ => None,
                };
                (Node { value, pos: at, raw }, anchor)
            }
            Event::SequenceStart(_, anchor, _) => {
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        Some((Event::SequenceEnd, _)) => break,
                        Some((e, s)) => items.push(self.node(e, s)?),
                        None => return Err(unexpected_end(at)),
                    }
                }
                (Node { value: Value::Seq(items), pos: at, raw: None }, anchor)
            }
            Event::MappingStart(_, anchor, _) => {
                let entries = self.mapping(at)?;
                (Node { value: Value::Map(entries), pos: at, raw: None }, anchor)
            }
            Event::Alias(id) => {
                let target = self.anchors.get(id).cloned().flatten();
                let Some(mut node) = target else {
                    return Err(YamlError {
                        pos: Some(at),
                        message: "alias to an unknown anchor".into(),
                    });
                };
                self.count(at, size(&node))?;
                node.pos = at;
                return Ok(node);
            }
            Event::UnresolvedAlias(name) => {
                return Err(YamlError {
                    pos: Some(at),
                    message: format!("unknown anchor `{name}`"),
                });
            }
            _ => return Err(YamlError { pos: Some(at), message: "unexpected YAML event".into() }),
        };
        if anchor != 0 {
            if self.anchors.len() <= anchor {
                self.anchors.resize(anchor + 1, None);
            }
            self.anchors[anchor] = Some(node.clone());
        }
        Ok(node)
    }

    /// A mapping's entries, with merge keys applied (explicit keys win) and duplicates refused.
    fn mapping(&mut self, at: Pos) -> Result<Vec<(Node, Node)>, YamlError> {
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut merges: Vec<Node> = Vec::new();
        loop {
            let key = match self.next()? {
                Some((Event::MappingEnd, _)) => break,
                Some((e, s)) => self.node(e, s)?,
                None => return Err(unexpected_end(at)),
            };
            let value = match self.next()? {
                Some((Event::MappingEnd, _)) | None => return Err(unexpected_end(key.pos)),
                Some((e, s)) => self.node(e, s)?,
            };
            if matches!(&key.value, Value::Str(k) if k == "<<") && key.raw.is_none() {
                merges.push(value);
                continue;
            }
            if let Some((first, _)) = entries.iter().find(|(k, _)| self.same_key(k, &key)) {
                return Err(YamlError {
                    pos: Some(key.pos),
                    message: format!(
                        "duplicate key `{}` (first at line {})",
                        self.key_text(&key),
                        first.pos.line
                    ),
                });
            }
            entries.push((key, value));
        }
        for merge in merges {
            let sources = match merge.value {
                Value::Map(m) => vec![m],
                Value::Seq(items) => items
                    .into_iter()
                    .map(|n| match n.value {
                        Value::Map(m) => Ok(m),
                        _ => Err(bad_merge(n.pos)),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(bad_merge(merge.pos)),
            };
            for (k, v) in sources.into_iter().flatten() {
                if !entries.iter().any(|(e, _)| self.same_key(e, &k)) {
                    entries.push((k, v));
                }
            }
        }
        Ok(entries)
    }
}

impl Composer<'_> {
    /// A key as written: Go decodes mapping keys into strings, so `n` and `N` (both `false` in
    /// YAML 1.1) are different keys.
    fn key_text<'n>(&'n self, node: &'n Node) -> Cow<'n, str> {
        match (&node.value, node.raw) {
            (Value::Str(s), _) => Cow::Borrowed(s),
            (_, Some((s, e))) => Cow::Borrowed(self.text.get(s..e).unwrap_or_default()),
            (Value::Null, None) => Cow::Borrowed(""),
            (other, None) => Cow::Owned(format!("{other:?}")),
        }
    }

    fn same_key(&self, a: &Node, b: &Node) -> bool {
        match (&a.value, &b.value) {
            (Value::Seq(_) | Value::Map(_), _) | (_, Value::Seq(_) | Value::Map(_)) => {
                a.value == b.value
            }
            _ => self.key_text(a) == self.key_text(b),
        }
    }
}

fn unexpected_end(at: Pos) -> YamlError {
    YamlError { pos: Some(at), message: "the YAML ends inside this node".into() }
}

fn bad_merge(at: Pos) -> YamlError {
    YamlError {
        pos: Some(at),
        message: "a merge key (`<<`) needs a mapping or a list of mappings".into(),
    }
}

fn size(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(size).sum(),
        Value::Map(entries) => entries.iter().map(|(k, v)| size(k) + size(v)).sum(),
        _ => 0,
    }
}

/// A plain scalar's type, by yaml.v2's (YAML 1.1) rules.
fn resolve(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Value::Str(text.to_string());
    }
    let digits = text.replace('_', "");
    let (negative, unsigned) = match digits.as_bytes()[0] {
        b'-' => (true, &digits[1..]),
        b'+' => (false, &digits[1..]),
        _ => (false, digits.as_str()),
    };
    let radix = |s: &str, r: u32| i64::from_str_radix(s, r).ok().filter(|_| !s.is_empty());
    let int = if let Some(hex) = unsigned.strip_prefix("0x") {
        radix(hex, 16)
    } else if let Some(oct) = unsigned.strip_prefix("0o") {
        radix(oct, 8)
    } else if let Some(bin) = unsigned.strip_prefix("0b") {
        radix(bin, 2)
    } else if unsigned.len() > 1
        && unsigned.starts_with('0')
        && unsigned.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        radix(unsigned, 8)
    } else if unsigned.bytes().all(|b| b.is_ascii_digit()) {
        radix(unsigned, 10)
    } else {
        None
    };
    if let Some(i) = int {
        return Value::Int(if negative { -i } else { i });
    }
    let numeric = unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    match digits.parse::<f64>() {
        Ok(f) if numeric && unsigned.bytes().any(|b| b.is_ascii_digit()) => Value::Float(f),
        _ => Value::Str(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(node: &Node) -> &[(Node, Node)] {
        match &node.value {
            Value::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn every_node_has_its_position() {
        let doc = parse("version: v1.1.0\nsteps:\n  - id: a\n    timeout: 5\n").unwrap();
        let top = map(&doc);
        assert_eq!(top[0].0.pos, Pos::new(1, 1));
        assert_eq!(top[1].1.pos.line, 3);
        let Value::Seq(steps) = &top[1].1.value else { panic!() };
        let step = map(&steps[0]);
        assert_eq!(step[1].0.value, Value::Str("timeout".into()));
        assert_eq!(step[1].0.pos, Pos::new(4, 5));
        assert_eq!(step[1].1.value, Value::Int(5));
        assert_eq!(step[1].1.pos, Pos::new(4, 14));
    }

    #[test]
    fn yaml_11_booleans_and_raw_scalars() {
        let text = "a: yes\nb: 1.10\nc: \"600\"\n";
        let doc = parse(text).unwrap();
        let m = map(&doc);
        assert_eq!(m[0].1.value, Value::Bool(true));
        let (s, e) = m[1].1.raw.unwrap();
        assert_eq!(&text[s..e], "1.10");
        assert_eq!(m[2].1.value, Value::Str("600".into()));
    }

    #[test]
    fn merge_keys_apply_and_duplicates_are_rejected() {
        let doc = parse("base: &b {timeout: 5}\nstep:\n  <<: *b\n  id: x\n").unwrap();
        let step = map(&map(&doc)[1].1);
        assert!(
            step.iter()
                .any(|(k, v)| k.value == Value::Str("timeout".into()) && v.value == Value::Int(5))
        );
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.pos.map(|p| p.line), Some(2), "{err:?}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("steps:\n  - cmd: [unclosed\n").unwrap_err();
        assert!(err.pos.is_some(), "{err:?}");
    }

    #[test]
    fn lone_dashes_in_flow_collections_read_as_go_reads_them() {
        let text = "a: [-]\nb: [x, -, -]\nc: {k: -}\nd: [-x, \"-\"]\n";
        assert!(parse(text).is_err(), "YAML 1.2 refuses a lone dash in a flow list");
        let parsed = parse_like_go(text).unwrap();
        let dashes: Vec<(u32, u32)> = parsed.bare_dashes.iter().map(|p| (p.line, p.col)).collect();
        assert_eq!(dashes, vec![(1, 5), (2, 8), (2, 11), (3, 8)]);
        let Value::Map(entries) = parsed.root.value else { panic!() };
        let strings = |n: &Node| match &n.value {
            Value::Seq(items) => items.iter().map(|i| i.value.clone()).collect::<Vec<_>>(),
            Value::Map(kv) => kv.iter().map(|(_, v)| v.value.clone()).collect(),
            other => panic!("{other:?}"),
        };
        let dash = || Value::Str("-".into());
        assert_eq!(strings(&entries[0].1), vec![dash()]);
        assert_eq!(strings(&entries[1].1), vec![Value::Str("x".into()), dash(), dash()]);
        assert_eq!(strings(&entries[2].1), vec![dash()]);
        assert_eq!(strings(&entries[3].1), vec![Value::Str("-x".into()), dash()]);
        // Other errors stay errors, and a valid file is untouched.
        assert!(parse_like_go("a: [-\n").is_err());
        // An error after a quoted dash points at the input's column, not the quoted text's.
        let at = |text: &str| parse_like_go(text).unwrap_err().pos.map(|p| (p.line, p.col));
        assert_eq!(at("a: [-, [}\n"), at("a: [x, [}\n"));
        let plain = parse_like_go("a: [\"-\"]\n").unwrap();
        assert!(plain.bare_dashes.is_empty() && matches!(plain.text, Cow::Borrowed(_)));
    }

    #[test]
    fn scalars_resolve_like_go_yaml_v2() {
        let doc = parse("[~, null, on, No, \"yes\", 0755, 0x1F, -12, 1_000, 1.5, 1e3, .inf, 1.0-preview-1, !!str 12, 'x']\n").unwrap();
        let Value::Seq(items) = doc.value else { panic!() };
        let values: Vec<Value> = items.into_iter().map(|n| n.value).collect();
        assert_eq!(
            values,
            vec![
                Value::Null,
                Value::Null,
                Value::Bool(true),
                Value::Bool(false),
                Value::Str("yes".into()),
                Value::Int(0o755),
                Value::Int(31),
                Value::Int(-12),
                Value::Int(1000),
                Value::Float(1.5),
                Value::Float(1000.0),
                Value::Float(f64::INFINITY),
                Value::Str("1.0-preview-1".into()),
                Value::Str("12".into()),
                Value::Str("x".into()),
            ]
        );
    }

    #[test]
    fn anchors_aliases_and_bombs() {
        let doc = parse("a: &x [1, 2]\nb: *x\n").unwrap();
        let m = map(&doc);
        assert_eq!(m[1].1.value, m[0].1.value);
        assert_eq!(m[1].1.pos, Pos::new(2, 4));
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (i, prev) in ('b'..='k').zip('a'..) {
            bomb.push_str(&format!("{i}: &{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err.message.contains("more than"), "{err:?}");
        assert!(parse("a: *nope\n").is_err());
    }

    #[test]
    fn only_the_first_document_counts_and_empty_is_null() {
        assert_eq!(parse("").unwrap().value, Value::Null);
        assert_eq!(parse("# only a comment\n").unwrap().value, Value::Null);
        let doc = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(map(&doc).len(), 1);
    }
}
