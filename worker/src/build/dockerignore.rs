//! `.dockerignore`: which files of a build context are sent to the engine, by Docker's rules.
//!
//! The rules are those of the Docker CLI (moby's `ignorefile.ReadAll`, `patternmatcher` and the
//! context walk of `archive.TarWithOptions`), reproduced rather than approximated because a
//! difference silently changes what `COPY . .` puts in an image:
//!
//! * reading: a line whose *first* character is `#` is a comment (` #x` is the pattern `#x`);
//!   blank lines are skipped; surrounding whitespace is trimmed; a UTF-8 BOM is dropped; `!`
//!   (optionally followed by spaces) makes an exception; each pattern is cleaned like Go's
//!   `filepath.Clean` (`./a` → `a`, `a/` → `a`, `a/../b` → `b`) and a leading `/` is dropped;
//! * matching: `*` and `?` never match `/`; `**` matches any number of directories (`**/` eats its
//!   slash, so `**/x` also matches `x` and `a**b` matches `ab` and `a/…/b` but not `axb`); `[…]`
//!   classes and `\` escapes pass through; every other character, `{` `}` included, is literal;
//!   a pattern matching a parent directory matches everything below it; the *last* matching
//!   pattern decides (`!` re-includes);
//! * walking: an excluded directory is skipped whole unless some exception pattern starts with
//!   its path (`!dir/keep`), in which case it is entered (but not itself sent) — so `*` followed by
//!   `!**/*.go` re-includes only top-level `.go` files, exactly as with the Docker CLI;
//! * always sent: `.dockerignore` and the Dockerfile, even when a pattern excludes them (the CLI's
//!   `TrimBuildFilesFromExcludes`; the engine itself drops them if they are listed).
//!
//! Docker compiles patterns to regular expressions; this module does the same with the `regex`
//! crate. A glob library would not do: `globset` reads `{a,b}` as alternation and `a**b` as
//! `a*b`, and the `ignore` crate implements gitignore rules, which differ on several paths.

use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    #[error("illegal exclusion pattern: \"!\" (line {line} of the ignore file)")]
    BareExclusion { line: usize },
    #[error("syntax error in pattern {pattern:?} (line {line} of the ignore file): {reason}")]
    BadPattern { pattern: String, line: usize, reason: String },
}

impl IgnoreError {
    /// The same error with its line number `lines` lower: for content that had `lines` lines
    /// put in front of the file's own.
    pub fn shifted_up(self, lines: usize) -> Self {
        match self {
            IgnoreError::BareExclusion { line } => {
                IgnoreError::BareExclusion { line: line.saturating_sub(lines) }
            }
            IgnoreError::BadPattern { pattern, line, reason } => {
                IgnoreError::BadPattern { pattern, line: line.saturating_sub(lines), reason }
            }
        }
    }
}

/// A compiled ignore file.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    /// The cleaned pattern text, without `!`.
    cleaned: String,
    matcher: Matcher,
}

/// moby's `matchType`: plain string checks where the pattern allows, a regex otherwise.
#[derive(Debug, Clone)]
enum Matcher {
    Exact,
    /// Pattern `lit**`: the path starts with `lit`.
    Prefix(String),
    /// Pattern `**lit`: the path ends with `lit`, or `lit` is `/x` and the path is `x`.
    Suffix(String),
    Regex(Regex),
}

impl DockerIgnore {
    /// Parses the content of an ignore file.
    pub fn parse(content: &[u8]) -> Result<Self, IgnoreError> {
        let content = String::from_utf8_lossy(content);
        let mut lines: Vec<(usize, String)> = Vec::new();
        for (index, raw) in content.split('\n').enumerate() {
            let line = if index == 0 { raw.strip_prefix('\u{feff}').unwrap_or(raw) } else { raw };
            // Go's line scanner drops one trailing CR; the comment test comes before trimming.
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let invert = pattern.starts_with('!');
            if invert {
                pattern = pattern[1..].trim();
            }
            let mut cleaned = String::new();
            if !pattern.is_empty() {
                cleaned = clean(pattern);
                if cleaned.len() > 1 && cleaned.starts_with('/') {
                    cleaned.remove(0);
                }
            }
            let text = if invert { format!("!{cleaned}") } else { cleaned };
            lines.push((index + 1, text));
        }
        let mut patterns = Vec::with_capacity(lines.len());
        for (line, text) in lines {
            patterns.push(Pattern::new(&text, line)?);
        }
        Ok(Self { patterns })
    }

    /// Adds the CLI's exceptions for files that are always sent: `.dockerignore` and the
    /// Dockerfile (`dockerfile` relative to the context, `/`-separated), if they would be excluded.
    pub fn keep_build_files(&mut self, dockerfile: Option<&str>) {
        let mut keep = vec![".dockerignore".to_string()];
        keep.extend(dockerfile.map(clean));
        for file in keep {
            if self.is_excluded(&file) {
                self.patterns.push(Pattern {
                    exclusion: true,
                    matcher: Matcher::Exact,
                    cleaned: file,
                });
            }
        }
    }

    /// Whether `path` (relative to the context root, `/`-separated, no leading `./`) is left out.
    pub fn is_excluded(&self, path: &str) -> bool {
        let parents: Vec<&str> = match path.rfind('/') {
            Some(end) => path[..end].split('/').collect(),
            None => Vec::new(),
        };
        let mut excluded = false;
        for pattern in &self.patterns {
            // Only a pattern that can change the outcome needs to be evaluated.
            if pattern.exclusion != excluded {
                continue;
            }
            let matched = pattern.matches(path)
                || (1..=parents.len()).any(|n| pattern.matches(&parents[..n].join("/")));
            if matched {
                excluded = !pattern.exclusion;
            }
        }
        excluded
    }

    /// For an excluded directory: whether it must still be entered because an exception
    /// pattern may re-include something below it (moby's prefix test on the pattern text).
    pub fn may_include_below(&self, dir: &str) -> bool {
        let dir_slash = format!("{dir}/");
        self.patterns
            .iter()
            .any(|p| p.exclusion && format!("{}/", p.cleaned).starts_with(&dir_slash))
    }
}

impl Pattern {
    fn new(text: &str, line: usize) -> Result<Self, IgnoreError> {
        // patternmatcher.New trims and cleans again; `!` is part of the text at this point.
        let text = clean(text.trim());
        let (exclusion, cleaned) = match text.strip_prefix('!') {
            Some("") => return Err(IgnoreError::BareExclusion { line }),
            Some(rest) => (true, rest.to_string()),
            None => (false, text),
        };
        let matcher = compile(&cleaned).map_err(|reason| IgnoreError::BadPattern {
            pattern: cleaned.clone(),
            line,
            reason,
        })?;
        Ok(Self { exclusion, cleaned, matcher })
    }

    fn matches(&self, path: &str) -> bool {
        match &self.matcher {
            Matcher::Exact => path == self.cleaned,
            Matcher::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Matcher::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Matcher::Regex(regex) => regex.is_match(path),
        }
    }
}

/// moby's `Pattern.compile`, character for character.
fn compile(pattern: &str) -> Result<Matcher, String> {
    #[derive(PartialEq)]
    enum Kind {
        Exact,
        Prefix,
        Suffix,
        Regex,
    }
    let mut regex = String::from("^");
    let mut kind = Kind::Exact;
    let mut chars = pattern.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                // `**/` is `**`: the slash is eaten.
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    // Trailing `**` matches everything after it.
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        regex.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    regex.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                regex.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                regex.push_str("[^/]");
                kind = Kind::Regex;
            }
            '.' | '+' | '(' | ')' | '|' | '{' | '}' | '$' => {
                regex.push('\\');
                regex.push(c);
            }
            '\\' => match chars.next() {
                Some(next) => {
                    regex.push('\\');
                    regex.push(next);
                    kind = Kind::Regex;
                }
                // Go's `filepath.Match` rejects this, and with it the whole ignore file.
                None => return Err("the pattern ends with an escaping backslash".to_string()),
            },
            '[' | ']' => {
                regex.push(c);
                kind = Kind::Regex;
            }
            _ => regex.push(c),
        }
        first = false;
    }
    match kind {
        Kind::Exact => Ok(Matcher::Exact),
        // The pattern ends in `**` (possibly `**/`, whose slash Clean has already removed).
        Kind::Prefix => Ok(Matcher::Prefix(pattern.strip_suffix("**").unwrap_or(pattern).into())),
        Kind::Suffix => Ok(Matcher::Suffix(pattern.strip_prefix("**").unwrap_or(pattern).into())),
        Kind::Regex => {
            regex.push('$');
            Regex::new(&regex).map(Matcher::Regex).map_err(|e| e.to_string())
        }
    }
}

/// Go's `path.Clean`: the shortest equivalent path by purely lexical processing.
pub(crate) fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(content: &str) -> DockerIgnore {
        DockerIgnore::parse(content.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One ignore file, many paths: what the Docker CLI (moby patternmatcher, parent-directory
    /// matching, last match wins) decides for each, reasoned out rule by rule.
    #[test]
    fn docker_cli_table() {
        let ig = ignore(
            "# comment\n\
             *.md\n\
             !README.md\n\
             temp?\n\
             /secret\n\
             ./build/\n\
             **/*.log\n\
             !important.log\n\
             docs/**\n\
             !docs/keep/**\n\
             node_modules\n\
             vendor/**/test\n \
             #notacomment\n\
             a/../b\n\
             {x,y}\n\
             lit[0-9]\n\
             a**z\n",
        );
        let table: &[(&str, bool, &str)] = &[
            ("CHANGELOG.md", true, "*.md at the top level"),
            ("README.md", false, "!README.md comes later and wins"),
            ("sub/notes.md", false, "* does not cross /; *.md is top-level only"),
            ("temp1", true, "? is one character"),
            ("temp12", false, "? is exactly one character"),
            ("secret", true, "leading / is dropped"),
            ("secret/key", true, "a matched directory excludes its contents"),
            ("build/out.o", true, "./build/ cleans to build"),
            ("debug.log", true, "**/ also matches zero directories"),
            ("x/y/debug.log", true, "**/ spans directories"),
            ("important.log", false, "exception after **/*.log"),
            ("x/important.log", true, "!important.log is anchored at the root"),
            ("docs", false, "docs/** matches below docs, not docs itself"),
            ("docs/a.txt", true, "docs/**"),
            ("docs/keep/x.txt", false, "!docs/keep/** re-includes"),
            ("node_modules/pkg/index.js", true, "parent directory matched"),
            ("vendor/test", true, "**/ between matches zero directories"),
            ("vendor/a/b/test/file", true, "vendor/**/test matches a parent"),
            ("vendor/a/testing", false, "test is a whole name"),
            ("#notacomment", true, "a # after leading space is a pattern"),
            ("b", true, "a/../b cleans to b"),
            ("a/b", false, "…and not to a/b"),
            ("{x,y}", true, "braces are literal"),
            ("x", false, "braces are not alternation"),
            ("lit7", true, "character class"),
            ("litx", false, "character class"),
            ("az", true, "a**z: ** may match nothing"),
            ("a/m/z", true, "a**z: ** spans directories"),
            ("amz", false, "a**z: ** must end at a /"),
            ("Dockerfile", false, "not mentioned"),
        ];
        for (path, excluded, why) in table {
            assert_eq!(ig.is_excluded(path), *excluded, "{path}: {why}");
        }
    }

    #[test]
    fn last_match_wins() {
        let ig = ignore("!README.md\n*.md\n");
        assert!(ig.is_excluded("README.md"), "the exception came first, the exclusion wins");
        let ig = ignore("*\n!keep\n*\n");
        assert!(ig.is_excluded("keep"));
    }

    #[test]
    fn exceptions_inside_excluded_directories() {
        let ig = ignore("dir\n!dir/keep.txt\n");
        assert!(ig.is_excluded("dir"));
        assert!(ig.is_excluded("dir/other.txt"));
        assert!(!ig.is_excluded("dir/keep.txt"));
        assert!(ig.may_include_below("dir"));
        assert!(!ig.may_include_below("other"));

        // Docker's walk enters an excluded directory only when an exception names a path below
        // it: `!**/*.go` does not start with `src/`, so `src` is skipped whole.
        let ig = ignore("*\n!**/*.go\n");
        assert!(!ig.is_excluded("src/main.go"));
        assert!(ig.is_excluded("src"));
        assert!(!ig.may_include_below("src"));
        let ig = ignore("*\n!src/**/*.go\n");
        assert!(ig.may_include_below("src"));
    }

    #[test]
    fn build_files_are_always_sent() {
        let mut ig = ignore("*\n");
        ig.keep_build_files(Some("docker/Dockerfile"));
        assert!(!ig.is_excluded(".dockerignore"));
        assert!(!ig.is_excluded("docker/Dockerfile"));
        assert!(ig.is_excluded("docker/other"));
        assert!(ig.may_include_below("docker"));
        let mut ig = ignore("src\n");
        ig.keep_build_files(Some("./Dockerfile"));
        assert!(!ig.is_excluded("Dockerfile"));
        assert_eq!(ig.patterns.len(), 1, "nothing to keep when nothing excludes the files");
    }

    #[test]
    fn reading_rules() {
        let ig = ignore("\u{feff}first\r\n\n   \n# c\n! spaced \n/\n/abs/path\n");
        let texts: Vec<(bool, &str)> =
            ig.patterns.iter().map(|p| (p.exclusion, p.cleaned.as_str())).collect();
        assert_eq!(texts, [(false, "first"), (true, "spaced"), (false, "/"), (false, "abs/path")]);
        assert!(ig.is_excluded("first"));
    }

    #[test]
    fn double_star_forms() {
        let ig = ignore("**\n");
        assert!(ig.is_excluded("anything/at/all"));
        let ig = ignore("**/foo\n");
        assert!(ig.is_excluded("foo") && ig.is_excluded("a/b/foo") && !ig.is_excluded("afoo"));
        let ig = ignore("foo/**/\n");
        assert!(ig.is_excluded("foo/x") && !ig.is_excluded("foo"));
        let ig = ignore("**/foo/**\n");
        assert!(ig.is_excluded("a/foo/b") && ig.is_excluded("foo/b"));
    }

    #[test]
    fn errors() {
        assert_eq!(
            DockerIgnore::parse(b"ok\n!\n").map(|_| ()),
            Err(IgnoreError::BareExclusion { line: 2 })
        );
        assert!(matches!(DockerIgnore::parse(b"[unclosed"), Err(IgnoreError::BadPattern { .. })));
        assert!(matches!(DockerIgnore::parse(b"a*\\"), Err(IgnoreError::BadPattern { .. })));
        // Nothing panics on odd input.
        for odd in ["\\", "[", "]", "**\\", "!!", "![", "\u{0}", "\u{ff}\u{fe}", "a\\", "***"] {
            let _ = DockerIgnore::parse(odd.as_bytes());
        }
        let _ = DockerIgnore::parse(&[0xff, 0xfe, b'\n', 0x80]);
    }

    #[test]
    fn go_clean() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("./a", "a"),
            ("a/", "a"),
            ("a//b", "a/b"),
            ("a/./b", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("/../a", "/a"),
            ("/", "/"),
            ("!a/../b", "b"),
        ] {
            assert_eq!(clean(input), want, "{input}");
        }
    }
}
