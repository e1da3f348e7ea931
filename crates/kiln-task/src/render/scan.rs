//! A light lexer for Go template text: where the `{{ … }}` actions are, with their trim
//! markers, and the field chains inside them.
//!
//! gtmpl-ng's own lexer and parse tree are private, and its parser is too slow to run twice,
//! so rendering (to find plain actions it can answer without gtmpl-ng) and missing-value
//! reporting read the template through this instead. It delimits actions exactly as Go's lexer
//! does; inside an action it only recognizes what those two callers need.

use std::borrow::Cow;

/// One `{{ … }}` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Action<'a> {
    /// Offset of the `{{`.
    pub open: usize,
    /// Offset just past the `}}`.
    pub close: usize,
    /// The text between the delimiters and trim markers; empty for a comment.
    pub inner: &'a str,
    /// Offset of `inner`.
    pub start: usize,
    /// `{{- `: the whitespace before the action is trimmed.
    pub left_trim: bool,
    /// ` -}}`: the whitespace after the action is trimmed.
    pub right_trim: bool,
    pub comment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scan<'a> {
    Action(Action<'a>),
    /// A `{{` at this offset that is never closed; scanning stops there.
    Unclosed(usize),
    /// A comment at this offset that Go rejects (`*/` not followed by `}}`); scanning stops.
    Malformed(usize),
}

/// Go's template whitespace, which is all a trim marker trims: not `char::is_whitespace`.
pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The actions of a template, in order, as Go's lexer delimits them.
pub(super) struct Actions<'a> {
    text: &'a str,
    pos: usize,
    done: bool,
}

impl<'a> Actions<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self { text, pos: 0, done: false }
    }

    fn stop(&mut self, scan: Scan<'a>) -> Option<Scan<'a>> {
        self.done = true;
        Some(scan)
    }
}

impl<'a> Iterator for Actions<'a> {
    type Item = Scan<'a>;

    fn next(&mut self) -> Option<Scan<'a>> {
        if self.done {
            return None;
        }
        let text = self.text;
        let bytes = text.as_bytes();
        // A byte scan: `str::find` sets up a substring searcher on every call.
        let Some(open) = (self.pos..bytes.len().saturating_sub(1))
            .find(|&i| bytes[i] == b'{' && bytes[i + 1] == b'{')
        else {
            self.done = true;
            return None;
        };
        let left_trim =
            bytes.get(open + 2) == Some(&b'-') && bytes.get(open + 3).is_some_and(|&b| is_space(b));
        let start = open + if left_trim { 4 } else { 2 };
        // Go only takes `/*` right after the delimiter (and marker) as a comment, and the
        // comment must end right before the closing delimiter (or its marker).
        if text[start..].starts_with("/*") {
            let Some(end) = text[start + 2..].find("*/").map(|i| start + 2 + i + 2) else {
                return self.stop(Scan::Unclosed(open));
            };
            let right_trim =
                bytes.get(end).is_some_and(|&b| is_space(b)) && text[end + 1..].starts_with("-}}");
            let close = if right_trim {
                end + 4
            } else if text[end..].starts_with("}}") {
                end + 2
            } else {
                return self.stop(Scan::Malformed(open));
            };
            self.pos = close;
            let action =
                Action { open, close, inner: "", start, left_trim, right_trim, comment: true };
            return Some(Scan::Action(action));
        }
        let mut i = start;
        while i < bytes.len() {
            match bytes[i] {
                q @ (b'"' | b'\'') => i = skip_quoted(bytes, i, q),
                b'`' => {
                    i = bytes[i + 1..]
                        .iter()
                        .position(|&b| b == b'`')
                        .map_or(bytes.len(), |p| i + p + 2)
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    let right_trim =
                        i >= start + 2 && bytes[i - 1] == b'-' && is_space(bytes[i - 2]);
                    let end = if right_trim { i - 2 } else { i };
                    self.pos = i + 2;
                    let action = Action {
                        open,
                        close: i + 2,
                        inner: &text[start..end],
                        start,
                        left_trim,
                        right_trim,
                        comment: false,
                    };
                    return Some(Scan::Action(action));
                }
                _ => i += 1,
            }
        }
        self.stop(Scan::Unclosed(open))
    }
}

/// The offset of the `{{` of an action that is never closed, if there is one.
pub(super) fn unclosed_action(template: &str) -> Option<usize> {
    Actions::new(template).find_map(|scan| match scan {
        Scan::Unclosed(offset) => Some(offset),
        _ => None,
    })
}

/// The offset after a quoted string or character constant starting at `i` (or the end of its
/// line, where Go's lexer gives up on it).
fn skip_quoted(bytes: &[u8], i: usize, quote: u8) -> usize {
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' => j += 2,
            b'\n' => return j,
            b if b == quote => return j + 1,
            _ => j += 1,
        }
    }
    bytes.len()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Root<'a> {
    Dot,
    Dollar,
    Var(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind<'a> {
    Word(&'a str),
    Chain {
        root: Root<'a>,
        fields: Vec<&'a str>,
    },
    /// A string literal, decoded when it is double-quoted and only uses the common escapes.
    Str(Option<Cow<'a, str>>),
    /// A number literal as written (or a lone `.`).
    Number(&'a str),
    Pipe,
    Assign,
    Comma,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token<'a> {
    pub kind: Kind<'a>,
    /// Byte offsets in the template.
    pub start: usize,
    pub end: usize,
}

fn ident_start(s: &str, i: usize) -> bool {
    s.get(i..).and_then(|r| r.chars().next()).is_some_and(|c| c.is_alphabetic() || c == '_')
}

fn ident_end(s: &str, i: usize) -> usize {
    s[i..]
        .char_indices()
        .find(|&(_, c)| !(c.is_alphanumeric() || c == '_'))
        .map_or(s.len(), |(j, _)| i + j)
}

/// `.a.b.c` starting at `i`: the field names and the offset after them.
fn fields_at(s: &str, mut i: usize) -> (Vec<&str>, usize) {
    let mut fields = Vec::new();
    while s[i..].starts_with('.') && ident_start(s, i + 1) {
        let end = ident_end(s, i + 1);
        fields.push(&s[i + 1..end]);
        i = end;
    }
    (fields, i)
}

/// Splits an action's text into the tokens this module cares about. `base` is the offset of
/// `inner` in the template.
pub(super) fn tokenize(inner: &str, base: usize) -> Vec<Token<'_>> {
    let s = inner;
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        let start = i;
        let kind = match c {
            c if c.is_whitespace() => {
                i += c.len_utf8();
                continue;
            }
            '.' if ident_start(s, i + 1) => {
                let (fields, end) = fields_at(s, i);
                i = end;
                Kind::Chain { root: Root::Dot, fields }
            }
            '$' => {
                let name_end = ident_end(s, i + 1);
                let (fields, end) = fields_at(s, name_end);
                let name = &s[i + 1..name_end];
                i = end;
                let root = if name.is_empty() { Root::Dollar } else { Root::Var(name) };
                Kind::Chain { root, fields }
            }
            '"' => {
                let (value, end) = quoted(s, i);
                i = end;
                Kind::Str(value)
            }
            '`' => {
                // Left undecoded: gtmpl-ng reads escapes in raw strings, Go does not.
                let end = s[i + 1..].find('`').map_or(s.len(), |p| i + 2 + p);
                i = end.min(s.len());
                Kind::Str(None)
            }
            '\'' => {
                i = skip_quoted(s.as_bytes(), i, b'\'');
                Kind::Other
            }
            ':' if s[i + 1..].starts_with('=') => {
                i += 2;
                Kind::Assign
            }
            '=' => {
                i += 1;
                Kind::Assign
            }
            ',' => {
                i += 1;
                Kind::Comma
            }
            ')' => {
                // A field of a parenthesized pipeline, `(…).x`: not a chain from a known base.
                i = fields_at(s, i + 1).1;
                Kind::Other
            }
            _ if ident_start(s, i) => {
                i = ident_end(s, i);
                Kind::Word(&s[start..i])
            }
            c if c.is_ascii_digit()
                || c == '.'
                || (matches!(c, '-' | '+')
                    && s.as_bytes().get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                // A number (or a lone `.`): a sign, then digits, letters, `.`, `_` and signs
                // after `e`/`p`.
                i += 1;
                while let Some(&b) = s.as_bytes().get(i) {
                    let exponent_sign = matches!(b, b'+' | b'-')
                        && matches!(s.as_bytes()[i - 1], b'e' | b'E' | b'p' | b'P');
                    if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
                Kind::Number(&s[start..i])
            }
            '|' => {
                i += 1;
                Kind::Pipe
            }
            c => {
                i += c.len_utf8();
                Kind::Other
            }
        };
        tokens.push(Token { kind, start: base + start, end: base + i });
    }
    tokens
}

/// A double-quoted string at `i`: its value if it only uses `\"`, `\\`, `\n`, `\t`, and the
/// offset after it.
fn quoted(s: &str, i: usize) -> (Option<Cow<'_, str>>, usize) {
    let mut value = String::new();
    let mut simple = true;
    let mut chars = s[i + 1..].char_indices();
    while let Some((j, c)) = chars.next() {
        match c {
            '"' => return (simple.then_some(Cow::Owned(value)), i + 1 + j + 1),
            '\n' => return (None, i + 1 + j),
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\'))) => value.push(e),
                Some((_, 'n')) => value.push('\n'),
                Some((_, 't')) => value.push('\t'),
                _ => simple = false,
            },
            c => value.push(c),
        }
    }
    (None, s.len())
}

/// Index of the first token of the pipeline: after `$x :=` / `$i, $e :=` / `$x =`, else 0.
pub(super) fn pipeline_start(tokens: &[Token]) -> usize {
    let declares = |t: &Token| match &t.kind {
        Kind::Comma => true,
        Kind::Chain { root: Root::Var(_) | Root::Dollar, fields } => fields.is_empty(),
        _ => false,
    };
    match tokens.iter().position(|t| t.kind == Kind::Assign) {
        Some(k) if k > 0 && tokens[..k].iter().all(declares) => k + 1,
        _ => 0,
    }
}

/// A reference to data: a field chain, or `index CHAIN "key"…` with literal keys.
pub(super) struct Ref<'a> {
    pub root: Root<'a>,
    pub fields: Vec<Cow<'a, str>>,
    /// Byte offsets in the template.
    pub start: usize,
    pub end: usize,
    /// How many tokens it spans.
    pub tokens: usize,
}

impl Ref<'_> {
    /// The expression as written, with runs of whitespace (an `index` call over several lines)
    /// shown as one space.
    pub(super) fn expr(&self, template: &str) -> String {
        template[self.start..self.end].split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

pub(super) fn refs<'a>(tokens: &[Token<'a>]) -> Vec<Ref<'a>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Kind::Chain { root, fields } = &tokens[i].kind {
            let fields = fields.iter().map(|f| Cow::Borrowed(*f)).collect();
            let t = &tokens[i];
            out.push(Ref { root: root.clone(), fields, start: t.start, end: t.end, tokens: 1 });
            i += 1;
            continue;
        }
        if tokens[i].kind == Kind::Word("index")
            && let Some(Token { kind: Kind::Chain { root, fields }, .. }) = tokens.get(i + 1)
        {
            let keys: Vec<&Token> = tokens[i + 2..]
                .iter()
                .take_while(|t| matches!(t.kind, Kind::Str(Some(_))))
                .collect();
            if let Some(last) = keys.last() {
                let mut path: Vec<Cow<str>> = fields.iter().map(|f| Cow::Borrowed(*f)).collect();
                path.extend(keys.iter().filter_map(|t| match &t.kind {
                    Kind::Str(Some(key)) => Some(key.clone()),
                    _ => None,
                }));
                out.push(Ref {
                    root: root.clone(),
                    fields: path,
                    start: tokens[i].start,
                    end: last.end,
                    tokens: keys.len() + 2,
                });
                i += keys.len() + 2;
                continue;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inners(t: &str) -> Vec<String> {
        Actions::new(t)
            .map(|s| match s {
                Scan::Action(a) => {
                    let trims = format!(
                        "{}{}",
                        if a.left_trim { "<" } else { "" },
                        if a.right_trim { ">" } else { "" }
                    );
                    format!("{}{trims}|{}", a.inner, &t[a.open..a.close])
                }
                Scan::Unclosed(at) => format!("UNCLOSED@{at}"),
                Scan::Malformed(at) => format!("MALFORMED@{at}"),
            })
            .collect()
    }

    #[test]
    fn actions_skip_strings_comments_and_trim_markers() {
        assert_eq!(
            inners(r#"a {{ "}}" }} b {{- .X -}} {{/* }} */}} {{`}}`}} {{ '}' }}{{- /* c */ -}}"#),
            vec![
                r#" "}}" |{{ "}}" }}"#,
                ".X<>|{{- .X -}}",
                "|{{/* }} */}}",
                "`}}`|{{`}}`}}",
                " '}' |{{ '}' }}",
                "<>|{{- /* c */ -}}",
            ]
        );
        // A `-` without whitespace is not a trim marker.
        assert_eq!(inners("{{-3}}"), vec!["-3|{{-3}}"]);
        assert_eq!(inners("x {{ .A }} {{ .B"), vec![" .A |{{ .A }}", "UNCLOSED@11"]);
        assert_eq!(inners("{{/* a */ x}}"), vec!["MALFORMED@0"]);
        assert_eq!(unclosed_action("x {{ .A }} {{ .B"), Some(11));
        assert_eq!(unclosed_action("{{/* never closed"), Some(0));
        assert_eq!(unclosed_action("{{ .A }}"), None);
    }

    #[test]
    fn tokens_find_chains_and_literals() {
        let t = tokenize(r#"$x := index $.Values "a-b" | printf "%s" (.A).b .C.d 1.5e+3"#, 0);
        let kinds: Vec<&Kind> = t.iter().map(|t| &t.kind).collect();
        assert_eq!(kinds[0], &Kind::Chain { root: Root::Var("x"), fields: vec![] });
        assert_eq!(kinds[1], &Kind::Assign);
        assert_eq!(kinds[2], &Kind::Word("index"));
        assert_eq!(kinds[3], &Kind::Chain { root: Root::Dollar, fields: vec!["Values"] });
        assert_eq!(kinds[4], &Kind::Str(Some(Cow::Borrowed("a-b"))));
        assert!(kinds.contains(&&Kind::Chain { root: Root::Dot, fields: vec!["A"] }));
        assert!(!kinds.contains(&&Kind::Chain { root: Root::Dot, fields: vec!["b"] }));
        assert!(kinds.contains(&&Kind::Chain { root: Root::Dot, fields: vec!["C", "d"] }));
        assert_eq!(pipeline_start(&t), 2);
        let r = refs(&t[2..]);
        assert_eq!(r[0].fields, vec!["Values", "a-b"]);
        assert_eq!(r[0].expr(r#"$x := index $.Values "a-b" |"#), r#"index $.Values "a-b""#);
    }
}
