//! The line-based passes ACR makes over a task file before any YAML parser sees it (§1.1 steps
//! 2–3): comment stripping, and the `version` scan that decides whether aliases are on.
//!
//! Both work on raw lines, not YAML, because ACR does: a `#` line inside a block scalar is
//! deleted, and the version must be known before the alias block can be cut out and the rest
//! substituted. kiln reproduces the scans exactly; only the alias decision itself is made on the
//! version kiln accepts (case-insensitively), with a warning wherever ACR's string comparison
//! would decide differently.

use std::fmt;

use serde::Serialize;

use crate::diagnostic::{Diagnostic, Pos};
use crate::source_map::LineMap;

/// A task file with its comment lines deleted, and where each remaining line came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripped {
    pub text: String,
    /// Lines of `text` → lines of the original file.
    pub lines: LineMap,
}

/// Deletes every line whose whitespace-trimmed text starts with `#`, as ACR's template loader
/// does, even inside YAML block scalars. A trailing `# ...` on a content line stays for YAML.
pub fn strip_comments(original: &str) -> Stripped {
    let mut text = String::with_capacity(original.len());
    let mut origin = Vec::new();
    for (i, line) in original.split('\n').enumerate() {
        if is_comment(line) {
            continue;
        }
        if !origin.is_empty() {
            text.push('\n');
        }
        text.push_str(line);
        origin.push(line_number(i));
    }
    Stripped { text, lines: LineMap::from_origins(origin) }
}

/// Go's `strings.TrimSpace` and Rust's `trim` agree: both trim Unicode `White_Space`.
fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// The 1-based line number of the `i`th line, saturating for absurdly long inputs.
fn line_number(i: usize) -> u32 {
    u32::try_from(i + 1).unwrap_or(u32::MAX)
}

/// The lines of `text` as Go's `bufio.ScanLines` yields them: split at `\n`, one trailing `\r`
/// dropped, and no empty last line after a final newline. Paired with their 1-based numbers.
pub(crate) fn scan_lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines = (!text.is_empty()).then(|| body.split('\n')).into_iter().flatten();
    lines.enumerate().map(|(i, l)| (line_number(i), l.strip_suffix('\r').unwrap_or(l)))
}

/// The `version` line found by ACR's scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionLine {
    /// The value exactly as ACR reads it: whitespace and surrounding quotes trimmed, anything
    /// after it on the line (a `# comment`, say) kept.
    pub value: String,
    /// Where the value starts in the scanned text.
    pub pos: Pos,
}

impl VersionLine {
    /// The version kiln reads from this line: ACR's value without a trailing `# comment`,
    /// matched case-insensitively against the accepted versions.
    pub fn version(&self) -> Option<Version> {
        let value = match self.value.find(" #").or_else(|| self.value.find("\t#")) {
            Some(i) => &self.value[..i],
            None => &self.value,
        };
        Version::parse(value.trim().trim_matches(QUOTES))
    }
}

const QUOTES: [char; 2] = ['\'', '"'];

/// ACR's `FindVersion`: the first line, skipping blank and comment lines, that starts (after
/// optional quotes, but with no indentation) with `version` and whose text before the first `:`
/// is `version`, optionally quoted. The scan stops there even if the value is empty.
///
/// It skips exactly the lines [`strip_comments`] deletes, so it finds the same line in the
/// original file as in the stripped text; positions are in whichever text is given.
pub fn find_version(text: &str) -> Option<VersionLine> {
    scan_lines(text).find_map(|(line_no, line)| {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            return None;
        }
        if !line.trim_start_matches(QUOTES).starts_with("version") {
            return None;
        }
        let (key, rest) = line.split_once(':')?;
        if key.trim().trim_matches(QUOTES) != "version" {
            return None;
        }
        let leading = rest.len() - rest.trim_start().len();
        let col = key.chars().count() + 1 + rest[..leading].chars().count() + 1;
        Some(VersionLine {
            value: rest.trim().trim_matches(QUOTES).to_string(),
            pos: Pos::new(line_no, u32::try_from(col).unwrap_or(u32::MAX)),
        })
    })
}

/// The task file versions ACR accepts (§1.2), compared case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub enum Version {
    /// `v1.0.0`, the default when a file has no `version`.
    #[default]
    #[serde(rename = "v1.0.0")]
    V1_0_0,
    /// `v1.1.0`: aliases.
    #[serde(rename = "v1.1.0")]
    V1_1_0,
    /// `1.0-preview-1`, an early spelling ACR still accepts.
    #[serde(rename = "1.0-preview-1")]
    Preview1,
}

impl Version {
    pub const ALL: [Version; 3] = [Version::V1_0_0, Version::V1_1_0, Version::Preview1];

    /// An accepted version, ignoring ASCII case; `None` for anything else (ACR's "invalid version
    /// specified").
    pub fn parse(s: &str) -> Option<Version> {
        Self::ALL.into_iter().find(|v| v.as_str().eq_ignore_ascii_case(s))
    }

    /// The canonical spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Version::V1_0_0 => "v1.0.0",
            Version::V1_1_0 => "v1.1.0",
            Version::Preview1 => "1.0-preview-1",
        }
    }

    /// Whether kiln turns on aliases (§4.4) for this version.
    pub const fn supports_aliases(self) -> bool {
        matches!(self, Version::V1_1_0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether aliases are on for a file, and a warning when ACR would disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasSupport {
    pub enabled: bool,
    pub warning: Option<Diagnostic>,
}

/// Decides alias support from the scanned `version` line (`None`: no such line, i.e. `v1.0.0`).
///
/// ACR turns aliases on when the scanned value string-compares `>= "v1.1.0"`, so `V1.1.0` (an
/// accepted version) gets none. kiln turns them on for the accepted version `v1.1.0` in any case
/// and spelling, and warns where ACR would not. Versions kiln does not accept get no
/// warning: validation rejects them anyway, as ACR's does.
pub fn alias_support(version: Option<&VersionLine>) -> AliasSupport {
    let Some((line, parsed)) = version.and_then(|l| Some((l, l.version()?))) else {
        return AliasSupport { enabled: false, warning: None };
    };
    let enabled = parsed.supports_aliases();
    // Go compares strings bytewise, as `str`'s `Ord` does.
    let acr_enabled = line.value.as_str() >= "v1.1.0";
    // Only this direction can happen: an accepted version that kiln leaves alias-free
    // (`v1.0.0`, `1.0-preview-1`, any case) always compares below "v1.1.0".
    let warning = (enabled && !acr_enabled).then(|| {
        Diagnostic::warning(
            Some(line.pos),
            format!(
                "kiln enables aliases for version `{}`, but ACR compares the version as a string \
                 against \"v1.1.0\" and would not; write `v1.1.0` to get aliases on both",
                line.value
            ),
        )
    });
    AliasSupport { enabled, warning }
}

#[cfg(test)]
mod tests {
    use super::*;

    // §1.1 step 2: comment stripping.

    #[test]
    fn strips_comment_lines_and_keeps_a_line_map() {
        let original = "# header\nversion: v1.1.0\n  # indented\nsteps:\n  - cmd: a # trailing\n";
        let s = strip_comments(original);
        assert_eq!(s.text, "version: v1.1.0\nsteps:\n  - cmd: a # trailing\n");
        assert_eq!((1..=4).map(|l| s.lines.line(l)).collect::<Vec<_>>(), vec![2, 4, 5, 6]);
    }

    #[test]
    fn strips_comment_lines_inside_block_scalars_like_acr() {
        let original =
            "steps:\n  - cmd: |\n      echo a\n      # not a comment to YAML\n      echo b";
        let s = strip_comments(original);
        assert_eq!(s.text, "steps:\n  - cmd: |\n      echo a\n      echo b");
        assert_eq!(s.lines.line(4), 5);
    }

    #[test]
    fn unicode_whitespace_before_hash_counts_as_indentation() {
        let s = strip_comments("a: 1\n\u{a0}\t# nbsp\r\nb: 2\r\n");
        assert_eq!(s.text, "a: 1\nb: 2\r\n");
    }

    #[test]
    fn a_file_of_comments_strips_to_nothing() {
        let s = strip_comments("# a\n  # b");
        assert_eq!(s.text, "");
        assert_eq!(s.lines.line(1), 1);
    }

    // §1.1 step 3: ACR's `TestFindVersion` table, plus positions.

    fn found(text: &str) -> String {
        find_version(text).map(|v| v.value).unwrap_or_default()
    }

    #[test]
    fn finds_the_version_like_acr() {
        let cases = [
            ("", ""),
            (" # task.yml file\n# should be skipped\n\nversion  : v1.1.0    \n", "v1.1.0"),
            ("\nbuild: something\nversion: v1.1.0", "v1.1.0"),
            ("\nversionOfTask:v1.1.0", ""),
            ("       \nversion", ""),
            ("       \nversion:v1.1.0\n\t\t\t", "v1.1.0"),
            ("       \nversion:foo:bar:beta", "foo:bar:beta"),
            ("       \nversion:\"v1.1.0\"", "v1.1.0"),
            ("       \nversion:   'v1.1.0'", "v1.1.0"),
            ("       \nversion:   \"v1.1.0'", "v1.1.0"),
            ("       \n\"version\"", ""),
            ("\"version\"  : v1.1.0    \n", "v1.1.0"),
            ("\nbuild: something\n\"version\": v1.1.0", "v1.1.0"),
            ("       \n\"version\":foo:bar:beta", "foo:bar:beta"),
            ("       \n'version':   \"v1.1.0'", "v1.1.0"),
            ("       \n\"version':   \"v1.1.0'", "v1.1.0"),
            ("  version: v1.1.0", ""),
            ("# version: v1.1.0\nversion: v1.0.0", "v1.0.0"),
            ("version: v1.1.0 # aliases\n", "v1.1.0 # aliases"),
        ];
        for (text, want) in cases {
            assert_eq!(found(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_scan_stops_at_the_first_version_key_even_if_empty() {
        let v = find_version("version:\nversion: v1.1.0").expect("a version line");
        assert_eq!(v.value, "");
        assert_eq!(v.pos, Pos::new(1, 9));
    }

    #[test]
    fn positions_point_at_the_value_and_survive_comment_stripping() {
        let original = "# c\n\"version\" :  'v1.1.0'\r\n";
        let v = find_version(original).expect("a version line");
        assert_eq!(v.pos, Pos::new(2, 14));
        let stripped = strip_comments(original);
        let w = find_version(&stripped.text).expect("a version line");
        assert_eq!(w.value, v.value);
        assert_eq!(stripped.lines.line(w.pos.line), v.pos.line);
    }

    // §1.2: accepted versions.

    #[test]
    fn parses_accepted_versions_case_insensitively() {
        assert_eq!(Version::parse("v1.1.0"), Some(Version::V1_1_0));
        assert_eq!(Version::parse("V1.1.0"), Some(Version::V1_1_0));
        assert_eq!(Version::parse("1.0-PREVIEW-1"), Some(Version::Preview1));
        assert_eq!(Version::parse("v1.0.0"), Some(Version::V1_0_0));
        assert_eq!(Version::parse("v1.2.0"), None);
        assert_eq!(Version::parse(" v1.1.0"), None);
        assert!(Version::V1_1_0.supports_aliases());
        assert!(!Version::V1_0_0.supports_aliases() && !Version::Preview1.supports_aliases());
        assert_eq!(Version::default().to_string(), "v1.0.0");
    }

    // §1.1 step 4 / §9 item 7: the alias decision and ACR's string comparison.

    fn support(text: &str) -> AliasSupport {
        alias_support(find_version(text).as_ref())
    }

    #[test]
    fn enables_aliases_for_v1_1_0_only() {
        assert_eq!(support("version: v1.1.0"), AliasSupport { enabled: true, warning: None });
        assert_eq!(support("version: 'v1.1.0'"), AliasSupport { enabled: true, warning: None });
        assert_eq!(support("version: v1.0.0"), AliasSupport { enabled: false, warning: None });
        assert_eq!(support("steps: []"), AliasSupport { enabled: false, warning: None });
        assert!(!support("version: 1.0-preview-1").enabled);
        // A trailing comment: ACR's value is longer than "v1.1.0" and compares above it too.
        assert_eq!(support("version: v1.1.0 # x"), AliasSupport { enabled: true, warning: None });
    }

    #[test]
    fn warns_where_acr_string_comparison_disagrees() {
        let s = support("steps: []\nversion: V1.1.0\n");
        assert!(s.enabled);
        let w = s.warning.expect("a warning");
        assert!(!w.is_error());
        assert_eq!(w.pos, Some(Pos::new(2, 10)));
        assert!(w.message.contains("ACR") && w.message.contains("would not"), "{w:?}");
        assert!(w.message.contains("`v1.1.0`"), "{w:?}");
        // Whitespace inside the quotes: accepted by kiln, " v1.1.0" < "v1.1.0" for ACR.
        let s = support("version: ' v1.1.0'");
        assert!(s.enabled && s.warning.is_some());
    }

    #[test]
    fn unaccepted_versions_get_no_aliases_and_no_warning() {
        // ACR would enable aliases for these ("v2" > "v1.1.0"), then reject the version.
        for text in ["version: v2.0.0", "version: w", "version: v1.1.0-rc1"] {
            assert_eq!(support(text), AliasSupport { enabled: false, warning: None }, "{text}");
        }
    }
}
