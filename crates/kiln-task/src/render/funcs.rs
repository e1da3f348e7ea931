//! The template functions a task file can call: gtmpl-ng's Go builtins, its Helm (Sprig) set,
//! and what ACR task files use that Helm's set lacks or gets wrong.
//!
//! ACR renders with Go's `text/template` and `sprig.TxtFuncMap()`. The functions here close the
//! gaps between that and gtmpl-ng's Helm set:
//!
//! - added: `now`, `date`, `split`, `splitList`, `join`, `trimall`;
//! - replaced, to behave as Sprig does: `title` (Go's `strings.Title`, word breaks at any
//!   non-alphanumeric), `trimAll` (a cutset, not one character), `trimPrefix`/`trimSuffix`
//!   (remove once, not repeatedly), `quote`/`squote` (Go `%q` escaping, nil arguments skipped),
//!   `substr` (an end past the string clamps, so `{{ .Run.Commit | substr 0 7 }}` of a run
//!   without a commit is empty, not an error);
//! - `b64enc` returns `""` for a missing value, ACR's own override;
//! - functions whose Go signature takes strings refuse a missing value instead of working on
//!   the text `<no value>`: Go fails there too ("wrong type for value; expected string"), and
//!   otherwise `{{ .Values.x | upper }}` would leave `<NO VALUE>` in the rendered file.
//!
//! Sprig's `env` and `expandenv` are deliberately absent: they read the environment of the
//! process rendering the template, which for kiln is a shared server holding credentials, not
//! the build agent ACR runs them on. A task that needs configuration gets it from `--set`.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use gtmpl_ng::helm_functions::{HELM_FUNCTIONS, crypto, encoding, paths, regex, string};
use gtmpl_ng::{Func, FuncError, Value};

use super::go_time;

/// Installs every function, later tables overriding earlier ones.
pub(super) fn all() -> impl Iterator<Item = (&'static str, Func)> {
    HELM_FUNCTIONS.iter().chain(STRICT).chain(KILN).copied()
}

const KILN: &[(&str, Func)] = &[
    ("now", now),
    ("date", date),
    ("split", split),
    ("splitList", split_list),
    ("join", join),
    ("trimAll", trim_all),
    ("trimall", trim_all),
    ("trimPrefix", trim_prefix),
    ("trimSuffix", trim_suffix),
    ("title", title),
    ("quote", quote),
    ("squote", squote),
    ("b64enc", b64enc),
    ("substr", substr),
];

/// Wraps Helm functions whose Sprig signature takes only strings and integers so that a
/// missing value is an error, as Go makes it.
macro_rules! strict {
    ($($name:literal => $wrapper:ident = $inner:path;)*) => {
        $(
            fn $wrapper(args: &[Value]) -> Result<Value, FuncError> {
                refuse_missing($name, args)?;
                $inner(args)
            }
        )*
        const STRICT: &[(&str, Func)] = &[$(($name, $wrapper as Func)),*];
    };
}

strict! {
    "trim" => strict_trim = string::trim;
    "lower" => strict_lower = string::lower;
    "upper" => strict_upper = string::upper;
    "untitle" => strict_untitle = string::untitle;
    "repeat" => strict_repeat = string::repeat;
    "nospace" => strict_nospace = string::nospace;
    "trunc" => strict_trunc = string::trunc;
    "abbrev" => strict_abbrev = string::abbrev;
    "abbrevboth" => strict_abbrevboth = string::abbrevboth;
    "initials" => strict_initials = string::initials;
    "contains" => strict_contains = string::contains;
    "hasPrefix" => strict_has_prefix = string::has_prefix;
    "hasSuffix" => strict_has_suffix = string::has_suffix;
    "indent" => strict_indent = string::indent;
    "replace" => strict_replace = string::replace;
    "plural" => strict_plural = string::plural;
    "snakecase" => strict_snakecase = string::snakecase;
    "camelcase" => strict_camelcase = string::camelcase;
    "kebabcase" => strict_kebabcase = string::kebabcase;
    "swapcase" => strict_swapcase = string::swapcase;
    "shuffle" => strict_shuffle = string::shuffle;
    "sha1sum" => strict_sha1sum = crypto::sha1sum;
    "sha256sum" => strict_sha256sum = crypto::sha256sum;
    "sha512sum" => strict_sha512sum = crypto::sha512sum;
    "md5sum" => strict_md5sum = crypto::md5sum;
    "htpasswd" => strict_htpasswd = crypto::htpasswd;
    "b64dec" => strict_b64dec = encoding::b64dec;
    "b32enc" => strict_b32enc = encoding::b32enc;
    "b32dec" => strict_b32dec = encoding::b32dec;
    "base" => strict_base = paths::base;
    "dir" => strict_dir = paths::dir;
    "clean" => strict_clean = paths::clean;
    "ext" => strict_ext = paths::ext;
    "isAbs" => strict_is_abs = paths::is_abs;
    "regexMatch" => strict_regex_match = regex::regex_match;
    "mustRegexMatch" => strict_must_regex_match = regex::must_regex_match;
    "regexFind" => strict_regex_find = regex::regex_find;
    "mustRegexFind" => strict_must_regex_find = regex::must_regex_find;
    "regexFindAll" => strict_regex_find_all = regex::regex_find_all;
    "mustRegexFindAll" => strict_must_regex_find_all = regex::must_regex_find_all;
    "regexReplaceAll" => strict_regex_replace_all = regex::regex_replace_all;
    "mustRegexReplaceAll" => strict_must_regex_replace_all = regex::must_regex_replace_all;
    "regexReplaceAllLiteral" => strict_regex_replace_all_literal = regex::regex_replace_all_literal;
    "mustRegexReplaceAllLiteral" => strict_must_regex_replace_all_literal = regex::must_regex_replace_all_literal;
    "regexSplit" => strict_regex_split = regex::regex_split;
    "mustRegexSplit" => strict_must_regex_split = regex::must_regex_split;
}

fn is_missing(v: &Value) -> bool {
    matches!(v, Value::NoValue | Value::Nil)
}

fn refuse_missing(name: &str, args: &[Value]) -> Result<(), FuncError> {
    match args.iter().position(is_missing) {
        Some(i) => Err(FuncError::Generic(format!(
            "{name}: argument {} is a missing value where a string is expected \
             (ACR fails here too); set the value or pipe it through `default`",
            i + 1
        ))),
        None => Ok(()),
    }
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), FuncError> {
    if args.len() == n { Ok(()) } else { Err(FuncError::ExactlyXArgs(name.to_string(), n)) }
}

/// Sprig's `strval`: a string as itself, anything else as Go's `%v` prints it.
fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `n` string arguments of a function whose Go parameters are all strings.
fn strings<const N: usize>(name: &str, args: &[Value]) -> Result<[String; N], FuncError> {
    arity(name, args, N)?;
    refuse_missing(name, args)?;
    Ok(std::array::from_fn(|i| strval(&args[i])))
}

/// `now`: the current time, printed as Go prints a `time.Time` (without the monotonic clock
/// reading), which `date` reads back.
fn now(args: &[Value]) -> Result<Value, FuncError> {
    arity("now", args, 0)?;
    Ok(go_time::format(go_time::TIME_STRING_LAYOUT, Utc::now()).into())
}

/// `date LAYOUT TIME`: formats a time with a Go layout, in UTC. TIME is what `now` returns, an
/// RFC 3339 string or Unix seconds; anything else means now, as Sprig's `formatDate` does.
fn date(args: &[Value]) -> Result<Value, FuncError> {
    arity("date", args, 2)?;
    let [layout] = strings::<1>("date", &args[..1])?;
    let time = match &args[1] {
        Value::String(s) => go_time::parse(s),
        Value::Number(n) => n.as_i64().and_then(|secs| DateTime::from_timestamp(secs, 0)),
        _ => None,
    };
    Ok(go_time::format(&layout, time.unwrap_or_else(Utc::now)).into())
}

/// Go's `strings.Split`: an empty separator splits into characters.
fn go_split<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    if sep.is_empty() {
        s.char_indices().map(|(i, c)| &s[i..i + c.len_utf8()]).collect()
    } else {
        s.split(sep).collect()
    }
}

/// `split SEP STRING`: a map `_0`, `_1`, … of the parts, so `(split "/" .x)._1` works.
fn split(args: &[Value]) -> Result<Value, FuncError> {
    let [sep, s] = strings::<2>("split", args)?;
    let parts = go_split(&s, &sep)
        .into_iter()
        .enumerate()
        .map(|(i, part)| (format!("_{i}"), Value::from(part)))
        .collect();
    Ok(Value::Map(parts))
}

/// `splitList SEP STRING`: the parts as a list.
fn split_list(args: &[Value]) -> Result<Value, FuncError> {
    let [sep, s] = strings::<2>("splitList", args)?;
    Ok(Value::Array(go_split(&s, &sep).into_iter().map(Value::from).collect()))
}

/// `join SEP LIST`: Sprig's `strslice` — nil elements are skipped, a non-list joins as itself.
fn join(args: &[Value]) -> Result<Value, FuncError> {
    arity("join", args, 2)?;
    let [sep] = strings::<1>("join", &args[..1])?;
    let parts: Vec<String> = match &args[1] {
        Value::Array(items) => items.iter().filter(|v| !is_missing(v)).map(strval).collect(),
        v if is_missing(v) => Vec::new(),
        v => vec![strval(v)],
    };
    Ok(parts.join(&sep).into())
}

/// `trimAll CUTSET STRING` (and Sprig's older spelling `trimall`): Go's `strings.Trim`.
fn trim_all(args: &[Value]) -> Result<Value, FuncError> {
    let [cutset, s] = strings::<2>("trimAll", args)?;
    Ok(s.trim_matches(|c| cutset.contains(c)).into())
}

/// `substr START END STRING`, Sprig's `substring`: a negative START means from the beginning,
/// a negative END or one past the string means to its end. What Go's slicing would panic on (a
/// START past the end or after END) is an error, as ACR's render fails there.
fn substr(args: &[Value]) -> Result<Value, FuncError> {
    arity("substr", args, 3)?;
    let index = |i: usize| match &args[i] {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            FuncError::Generic(format!("substr: argument {} must be an integer", i + 1))
        }),
        other => Err(FuncError::Generic(format!(
            "substr: argument {} must be an integer, found {other}",
            i + 1
        ))),
    };
    let (start, end) = (index(0)?, index(1)?);
    let [s] = strings::<1>("substr", &args[2..])?;
    let len = s.len() as i64;
    let (from, to) = match (start, end) {
        (start, end) if start < 0 => (0, end),
        (start, end) if end < 0 || end > len => (start, len),
        range => range,
    };
    usize::try_from(from)
        .ok()
        .zip(usize::try_from(to).ok())
        .and_then(|(from, to)| s.get(from..to))
        .map(Value::from)
        .ok_or_else(|| {
            FuncError::Generic(format!("substr: [{start}:{end}] is out of range for {s:?}"))
        })
}

/// `trimPrefix PREFIX STRING`: removes the prefix once.
fn trim_prefix(args: &[Value]) -> Result<Value, FuncError> {
    let [prefix, s] = strings::<2>("trimPrefix", args)?;
    Ok(s.strip_prefix(prefix.as_str()).unwrap_or(&s).into())
}

/// `trimSuffix SUFFIX STRING`: removes the suffix once.
fn trim_suffix(args: &[Value]) -> Result<Value, FuncError> {
    let [suffix, s] = strings::<2>("trimSuffix", args)?;
    Ok(s.strip_suffix(suffix.as_str()).unwrap_or(&s).into())
}

/// `title`: Go's `strings.Title` — upper-cases every letter that follows a separator, where
/// anything but a letter, digit or `_` separates (so `hello-world` is `Hello-World`).
fn title(args: &[Value]) -> Result<Value, FuncError> {
    let [s] = strings::<1>("title", args)?;
    let separates = |c: char| {
        if c.is_ascii() { !(c.is_ascii_alphanumeric() || c == '_') } else { c.is_whitespace() }
    };
    let mut out = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        if separates(prev) {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev = c;
    }
    Ok(out.into())
}

/// Go's `strconv.Quote`. Printability is approximated by "not a control character".
pub(super) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_control() && (c as u32) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `quote ARG…`: each non-nil argument Go-quoted, joined by spaces; a missing value is "".
fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let quoted: Vec<String> =
        args.iter().filter(|v| !is_missing(v)).map(|v| go_quote(&strval(v))).collect();
    Ok(quoted.join(" ").into())
}

/// `squote ARG…`: each non-nil argument in single quotes (no escaping, as in Sprig).
fn squote(args: &[Value]) -> Result<Value, FuncError> {
    let quoted: Vec<String> =
        args.iter().filter(|v| !is_missing(v)).map(|v| format!("'{}'", strval(v))).collect();
    Ok(quoted.join(" ").into())
}

/// `b64enc`: ACR's override, which returns "" for a missing value instead of failing.
fn b64enc(args: &[Value]) -> Result<Value, FuncError> {
    arity("b64enc", args, 1)?;
    if is_missing(&args[0]) {
        return Ok("".into());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(strval(&args[0])).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::from(v)
    }

    #[test]
    fn strict_wrappers_refuse_missing_values_only() {
        assert_eq!(strict_upper(&[s("a")]).unwrap(), s("A"));
        let err = strict_upper(&[Value::NoValue]).unwrap_err().to_string();
        assert!(err.starts_with("upper: argument 1 is a missing value"), "{err}");
        assert!(strict_contains(&[s("a"), Value::Nil]).is_err());
    }

    #[test]
    fn substr_clamps_like_sprig() {
        let n = |i: i64| Value::from(i);
        assert_eq!(substr(&[n(0), n(7), s("")]).unwrap(), s(""));
        assert_eq!(substr(&[n(0), n(7), s("0123456789abc")]).unwrap(), s("0123456"));
        assert_eq!(substr(&[n(-1), n(3), s("abcdef")]).unwrap(), s("abc"));
        assert_eq!(substr(&[n(2), n(-1), s("abcdef")]).unwrap(), s("cdef"));
        assert!(substr(&[n(9), n(10), s("abc")]).is_err());
        assert!(substr(&[n(2), n(1), s("abc")]).is_err());
        assert!(substr(&[n(0), n(1), Value::NoValue]).is_err());
    }

    #[test]
    fn go_quote_escapes_like_strconv() {
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_quote("l1\nl2\t\u{1b}\u{85}é"), r#""l1\nl2\t\x1b\u0085é""#);
    }

    #[test]
    fn split_on_empty_separator_gives_characters() {
        assert_eq!(go_split("aé", ""), vec!["a", "é"]);
        assert_eq!(go_split("", ","), vec![""]);
    }
}
