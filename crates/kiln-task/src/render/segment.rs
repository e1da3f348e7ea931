//! The fast path: splitting a task file so that gtmpl-ng only parses what needs it.
//!
//! gtmpl-ng's parser costs a few microseconds per action (its lexer runs on a thread behind a
//! channel), so a 500-step file with 2,000 actions took ~5 ms to parse. Nearly all actions in
//! task files are simple top-level pipelines — `{{.Run.ID}}`, `{{ .Values.tag | default "x" }}`
//! — where `.` and `$` are the root data. Those are evaluated here by calling the same function
//! table gtmpl-ng uses and printing the result the way it prints a value. Everything else —
//! blocks from `if`/`with`/`range` to their `end`, and actions with parentheses, variables,
//! `and`/`or` or Go's rarer literals — stays template text for gtmpl-ng, all of it in one parse
//! (`render_many`), and equal regions only once when they call nothing random or time-based.
//!
//! The split is only made when the pieces are independent: a file with `define`, `block` or
//! `template`, or a variable declared at top level (whose scope would cross pieces), or any
//! structural oddity (an unclosed action, a stray `end`) is rendered whole, so gtmpl-ng sees
//! exactly what Go would and reports its own errors. A property test checks that both paths
//! agree wherever the fast one answers.

use std::collections::HashMap;

use gtmpl_ng::{Func, Value};

use super::scan::{Actions, Kind, Root, Scan, Token, is_space, tokenize};

#[derive(Debug, Clone)]
pub(super) enum Piece<'a> {
    /// Template text, already trimmed by the neighbouring actions' trim markers.
    Text(&'a str),
    /// A top-level action simple enough to evaluate here.
    Pipeline(Vec<Command<'a>>),
    /// Template text for gtmpl-ng. `pure` when it calls nothing whose result changes from one
    /// call to the next, so equal regions render equally and are rendered once.
    Region { text: &'a str, pure: bool },
}

/// One command of a simple pipeline.
#[derive(Debug, Clone)]
pub(super) enum Command<'a> {
    /// `.A.b` or `$.A.b`.
    Field(Vec<&'a str>),
    Literal(Value),
    /// A function and its arguments; a piped value is appended, as Go does.
    Call(Func, Vec<Arg<'a>>),
}

#[derive(Debug, Clone)]
pub(super) enum Arg<'a> {
    Field(Vec<&'a str>),
    Literal(Value),
    /// A function called with no arguments, like `now` in `date "2006" now`.
    Call(Func),
}

/// Functions whose result differs between calls. Deduplicating regions that call them would
/// print one random value where Go prints several.
const IMPURE: &[&str] = &[
    "now",
    "randAlpha",
    "randNumeric",
    "randAlphaNum",
    "randAscii",
    "shuffle",
    "uuidv4",
    "htpasswd",
    "genCA",
    "genSelfSignedCert",
    "genSignedCert",
];

/// The pieces of `template`, or `None` when it must be rendered whole. `funcs` is the
/// function table gtmpl-ng parses with.
pub(super) fn split<'a>(
    template: &'a str,
    funcs: &HashMap<String, Func>,
) -> Option<Vec<Piece<'a>>> {
    let mut pieces = Vec::new();
    // Start of the text not yet emitted, and whether the action before it trims it.
    let mut cursor = 0;
    let mut trim_next = false;
    // The open block at top level: where it starts, how deeply it nests, whether it is pure.
    let mut block: Option<(usize, usize, bool)> = None;
    for scan in Actions::new(template) {
        let Scan::Action(action) = scan else { return None };
        let tokens = if action.comment { Vec::new() } else { tokenize(action.inner, action.start) };
        let keyword = match tokens.first().map(|t| &t.kind) {
            Some(Kind::Word(w)) => *w,
            _ => "",
        };
        if matches!(keyword, "define" | "block" | "template") {
            return None;
        }
        let pure = !tokens.iter().any(|t| matches!(t.kind, Kind::Word(w) if IMPURE.contains(&w)));
        if let Some((open, depth, block_pure)) = block.as_mut() {
            *block_pure &= pure;
            match keyword {
                "if" | "with" | "range" => *depth += 1,
                "end" => *depth -= 1,
                _ => {}
            }
            if *depth == 0 {
                let text = &template[*open..action.close];
                pieces.push(Piece::Region { text, pure: *block_pure });
                block = None;
                cursor = action.close;
                trim_next = action.right_trim;
            }
            continue;
        }
        push_text(&mut pieces, &template[cursor..action.open], trim_next, action.left_trim);
        cursor = action.close;
        trim_next = action.right_trim;
        if action.comment {
            continue;
        }
        match keyword {
            "if" | "with" | "range" => block = Some((action.open, 1, pure)),
            "else" | "end" => return None,
            _ if tokens.iter().any(|t| t.kind == Kind::Assign) => return None,
            // Impure functions include the slow ones (bcrypt, key generation), which only
            // gtmpl-ng's deadline can stop.
            _ => pieces.push(match pipeline(&tokens, funcs).filter(|_| pure) {
                Some(commands) => Piece::Pipeline(commands),
                None => Piece::Region { text: &template[action.open..action.close], pure },
            }),
        }
    }
    if block.is_some() {
        return None;
    }
    push_text(&mut pieces, &template[cursor..], trim_next, false);
    Some(pieces)
}

fn push_text<'a>(pieces: &mut Vec<Piece<'a>>, mut text: &'a str, trim_start: bool, trim_end: bool) {
    if trim_start {
        text = text.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
    }
    if trim_end {
        text = text.trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
}

/// A pipeline this module can evaluate exactly as gtmpl-ng would: commands separated by `|`,
/// each a field chain from the root (first command only), a literal (first command only), or
/// a known function with literal, field or niladic-function arguments. `and`/`or` evaluate
/// lazily in gtmpl-ng and are left to it, as is anything else (parentheses, variables, odd
/// literals), which gtmpl-ng then also gets to report errors for.
fn pipeline<'a>(tokens: &[Token<'a>], funcs: &HashMap<String, Func>) -> Option<Vec<Command<'a>>> {
    let mut commands = Vec::new();
    for (i, command) in tokens.split(|t| t.kind == Kind::Pipe).enumerate() {
        let (head, args) = command.split_first()?;
        commands.push(match &head.kind {
            Kind::Word(name) if !matches!(*name, "and" | "or" | "true" | "false" | "nil") => {
                let func = *funcs.get(*name)?;
                let args = args
                    .iter()
                    .map(|t| match (field(t), &t.kind) {
                        (Some(fields), _) => Some(Arg::Field(fields)),
                        (None, Kind::Word(f)) if !matches!(*f, "and" | "or") => match funcs.get(*f)
                        {
                            Some(func) => Some(Arg::Call(*func)),
                            None => literal(t).map(Arg::Literal),
                        },
                        _ => literal(t).map(Arg::Literal),
                    })
                    .collect::<Option<_>>()?;
                Command::Call(func, args)
            }
            _ if i > 0 || !args.is_empty() => return None,
            // `{{ nil }}` is a parse error in Go ("nil is not a command").
            Kind::Word("nil") => return None,
            _ => match field(head) {
                Some(fields) => Command::Field(fields),
                None => Command::Literal(literal(head)?),
            },
        });
    }
    Some(commands)
}

/// The fields of a chain from the root data.
fn field<'a>(token: &Token<'a>) -> Option<Vec<&'a str>> {
    match &token.kind {
        Kind::Chain { root: Root::Dot | Root::Dollar, fields } if !fields.is_empty() => {
            Some(fields.clone())
        }
        _ => None,
    }
}

/// Literals whose value is beyond doubt: simple strings, decimal integers, booleans, nil.
/// Go's other number forms (octal `017`, hex, floats, `1_000`, characters) are left to gtmpl-ng.
fn literal(token: &Token) -> Option<Value> {
    match &token.kind {
        Kind::Str(Some(s)) => Some(Value::from(s.as_ref())),
        Kind::Word("true") => Some(Value::Bool(true)),
        Kind::Word("false") => Some(Value::Bool(false)),
        Kind::Word("nil") => Some(Value::Nil),
        Kind::Number(n) => {
            let digits = n.strip_prefix(['-', '+']).unwrap_or(n);
            let decimal = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            decimal.then(|| n.parse::<i64>().ok().map(Value::from)).flatten()
        }
        _ => None,
    }
}

/// `.fields` on `root` as gtmpl-ng reads it, or `None` where it would fail (a field of
/// something that is not a map), which is left to gtmpl-ng to report.
fn lookup<'v>(root: &'v Value, fields: &[&str]) -> Option<&'v Value> {
    let mut value = root;
    for field in fields {
        value = match value {
            Value::Map(map) => match map.get(*field) {
                Some(v) => v,
                None => return Some(&Value::NoValue),
            },
            // A missing key ends the chain, however deep it goes.
            Value::NoValue => return Some(&Value::NoValue),
            _ => return None,
        };
    }
    Some(value)
}

/// Evaluates a pipeline and prints its value as gtmpl-ng prints an action's value, or `None`
/// if anything fails (the caller then renders the file whole, which reports it).
pub(super) fn evaluate(commands: &[Command], root: &Value) -> Option<String> {
    // The common case, `{{ .Values.x }}`, prints without copying the value first.
    if let [Command::Field(fields)] = commands {
        return Some(print(lookup(root, fields)?));
    }
    let mut piped: Option<Value> = None;
    for command in commands {
        piped = Some(match command {
            Command::Field(fields) => lookup(root, fields)?.clone(),
            Command::Literal(value) => value.clone(),
            Command::Call(func, args) => {
                let mut values = args
                    .iter()
                    .map(|arg| match arg {
                        Arg::Field(fields) => lookup(root, fields).cloned(),
                        Arg::Literal(value) => Some(value.clone()),
                        Arg::Call(f) => f(&[]).ok(),
                    })
                    .collect::<Option<Vec<_>>>()?;
                values.extend(piped.take());
                func(&values).ok()?
            }
        });
    }
    Some(print(&piped?))
}

/// An action's value as text: Go prints an untyped nil as `<no value>`.
fn print(value: &Value) -> String {
    match value {
        Value::Nil => super::NO_VALUE.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(template: &str) -> Option<Vec<String>> {
        let pieces = split(template, &super::super::FUNCS)?;
        let command = |c: &Command| match c {
            Command::Field(fields) => fields.join("."),
            Command::Literal(v) => format!("{v:?}"),
            Command::Call(_, args) => format!("call/{}", args.len()),
        };
        Some(
            pieces
                .into_iter()
                .map(|p| match p {
                    Piece::Text(t) => format!("T:{t}"),
                    Piece::Pipeline(c) => {
                        format!("P:{}", c.iter().map(command).collect::<Vec<_>>().join("|"))
                    }
                    Piece::Region { text, pure } => {
                        format!("R{}:{text}", if pure { "" } else { "!" })
                    }
                })
                .collect(),
        )
    }

    #[test]
    fn simple_pipelines_are_evaluated_here_and_the_rest_are_regions() {
        assert_eq!(
            show(concat!(
                "a {{.Run.ID}} b {{ $.Values.x }}{{ .Values.x | default \"d\" | upper }}",
                "{{ (.A) }}{{ and .A .B }}{{ now }}{{ date \"2006\" now }}{{ 017 }}{{ -3 }}\n",
                "{{ if .A }}x{{ if .B }}{{ end }}{{ end }} c",
            )),
            Some(vec![
                "T:a ".into(),
                "P:Run.ID".into(),
                "T: b ".into(),
                "P:Values.x".into(),
                "P:Values.x|call/1|call/0".into(),
                "R:{{ (.A) }}".into(),
                "R:{{ and .A .B }}".into(),
                "R!:{{ now }}".into(),
                "R!:{{ date \"2006\" now }}".into(),
                "R:{{ 017 }}".into(),
                "P:Number(Number { n: I(-3) })".into(),
                "T:\n".into(),
                "R:{{ if .A }}x{{ if .B }}{{ end }}{{ end }}".into(),
                "T: c".into(),
            ])
        );
    }

    #[test]
    fn trim_markers_and_comments_trim_neighbouring_text() {
        assert_eq!(
            show("a \n {{- .A -}} \n b {{- /* c */}} d {{ if .B -}}\n x {{- end }} \t\n"),
            Some(vec![
                "T:a".into(),
                "P:A".into(),
                "T:b".into(),
                "T: d ".into(),
                "R:{{ if .B -}}\n x {{- end }}".into(),
                "T: \t\n".into(),
            ])
        );
    }

    #[test]
    fn whole_file_when_pieces_are_not_independent() {
        for template in [
            "{{ $x := 1 }}{{ $x }}",
            "{{ $x = 1 }}",
            r#"{{ define "a" }}x{{ end }}{{ template "a" }}"#,
            r#"{{ block "a" . }}x{{ end }}"#,
            "{{ if .A }}",
            "{{ end }}",
            "{{ else }}",
            "{{ .A",
            "{{/* a */ x}}",
        ] {
            assert!(show(template).is_none(), "{template}");
        }
        // Variables inside a block are scoped to it.
        assert!(show("{{ range $i, $e := .L }}{{ $i }}{{ end }}").is_some());
    }

    #[test]
    fn impure_functions_are_listed() {
        // Every function whose name says it is random or time-based must be in `IMPURE`.
        for name in super::super::FUNCS.keys() {
            let lower = name.to_lowercase();
            if ["rand", "uuid", "now", "gen", "shuffle", "htpasswd"]
                .iter()
                .any(|w| lower.contains(w))
            {
                assert!(IMPURE.contains(&name.as_str()), "{name}");
            }
        }
    }

    #[test]
    fn lookups_read_maps_as_gtmpl_does() {
        let root = Value::Map(
            [
                ("s".to_string(), Value::from("text")),
                ("n".to_string(), Value::from(1.5)),
                ("nil".to_string(), Value::Nil),
                ("none".to_string(), Value::NoValue),
            ]
            .into_iter()
            .collect(),
        );
        let print = |fields: &[&str]| evaluate(&[Command::Field(fields.to_vec())], &root);
        assert_eq!(print(&["s"]).as_deref(), Some("text"));
        assert_eq!(print(&["n"]).as_deref(), Some("1.5"));
        assert_eq!(print(&["nil"]).as_deref(), Some("<no value>"));
        assert_eq!(print(&["none", "deeper"]).as_deref(), Some("<no value>"));
        assert_eq!(print(&["absent", "deeper"]).as_deref(), Some("<no value>"));
        assert_eq!(print(&["s", "x"]), None);
    }
}
