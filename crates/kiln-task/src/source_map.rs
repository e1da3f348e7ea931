//! Line maps from derived texts back to the task file the user wrote.
//!
//! A task file goes through comment stripping, alias substitution and template rendering before
//! YAML sees it, and each stage can add or remove lines. Each stage produces a [`LineMap`]; the
//! maps compose, so a YAML error at line 40 of the rendered text is reported at the line of the
//! file it came from.

use crate::diagnostic::Pos;

/// For each line of a derived text (index = line - 1), the 1-based original line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineMap {
    origin: Vec<u32>,
}

impl LineMap {
    /// A text whose lines are the original lines.
    pub fn identity(lines: usize) -> Self {
        Self { origin: (1..=lines as u32).collect() }
    }

    /// A text made of a subset of the original lines, in order (`kept[i]` is the original line
    /// number of derived line `i + 1`).
    pub fn from_origins(origin: Vec<u32>) -> Self {
        Self { origin }
    }

    /// The map from `after`'s lines to `before`'s, for a stage that rewrote text in place.
    /// Same line count: line for line. Otherwise lines are aligned by a diff; an inserted line
    /// maps to the line it replaced, or the one before it.
    pub fn align(before: &str, after: &str) -> Self {
        let b: Vec<&str> = before.split('\n').collect();
        let a: Vec<&str> = after.split('\n').collect();
        if a.len() == b.len() {
            return Self::identity(a.len());
        }
        let last = b.len() as u32;
        let mut origin = Vec::with_capacity(a.len());
        for op in similar::capture_diff_slices(similar::Algorithm::Myers, &b, &a) {
            let (_, old, new) = op.as_tag_tuple();
            for k in 0..new.len() {
                // Equal and replaced lines pair up; extra new lines stay on the last old one,
                // and inserted lines (empty `old`) map to the line they were inserted before.
                let paired = (old.start + k).min(old.end.saturating_sub(1).max(old.start));
                origin.push((paired as u32 + 1).min(last));
            }
        }
        Self { origin }
    }

    /// `self` maps a text B to A; `next` maps C to B; the result maps C to A.
    pub fn then(&self, next: &LineMap) -> LineMap {
        LineMap { origin: next.origin.iter().map(|&l| self.line(l)).collect() }
    }

    /// The original line of derived `line`; lines past the end map to the last known line.
    pub fn line(&self, line: u32) -> u32 {
        let i = (line.max(1) - 1) as usize;
        self.origin.get(i).or(self.origin.last()).copied().unwrap_or(1)
    }
}

/// Turns positions in the final (rendered) text into positions in the original file.
#[derive(Debug, Clone)]
pub struct Locator<'a> {
    original: Vec<&'a str>,
    derived: Vec<&'a str>,
    map: LineMap,
}

impl<'a> Locator<'a> {
    pub fn new(original: &'a str, derived: &'a str, map: LineMap) -> Self {
        Self {
            original: original.split('\n').collect(),
            derived: derived.split('\n').collect(),
            map,
        }
    }

    /// The column is kept when the derived line reads the same as the original up to it (the
    /// usual case: a template later on the line, or none); otherwise it points at the first
    /// non-blank character of the original line.
    pub fn locate(&self, pos: Pos) -> Pos {
        let line = self.map.line(pos.line);
        let orig = self.original.get(line as usize - 1).copied().unwrap_or("");
        let derived = self.derived.get(pos.line.max(1) as usize - 1).copied().unwrap_or("");
        let upto = |s: &str| s.chars().take(pos.col.saturating_sub(1) as usize).collect::<String>();
        let col = if upto(orig) == upto(derived) {
            pos.col
        } else {
            orig.chars().take_while(|c| c.is_whitespace()).count() as u32 + 1
        };
        Pos::new(line, col)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_stripping_and_expansion() {
        // Original: 4 lines, line 2 a comment that was stripped.
        let strip = LineMap::from_origins(vec![1, 3, 4]);
        // Rendering turned stripped line 2 into three lines.
        let before = "a: 1\nb: {{x}}\nc: 3";
        let after = "a: 1\nb: 1\nd: 2\ne: 3\nc: 3";
        let render = LineMap::align(before, after);
        let full = strip.then(&render);
        assert_eq!((1..=5).map(|l| full.line(l)).collect::<Vec<_>>(), vec![1, 3, 3, 3, 4]);
    }

    #[test]
    fn same_line_count_is_line_for_line() {
        let m = LineMap::align("a\nb {{.X}}\nc", "a\nb 1\nc");
        assert_eq!(m.line(2), 2);
        assert_eq!(m.line(99), 3);
    }

    #[test]
    fn columns_survive_when_the_prefix_is_unchanged() {
        let original = "steps:\n  - cmd: {{.Values.img}} x\n    timeOut: 5";
        let derived = "steps:\n  - cmd: busybox x\n    timeOut: 5";
        let loc = Locator::new(original, derived, LineMap::identity(3));
        assert_eq!(loc.locate(Pos::new(3, 5)), Pos::new(3, 5));
        assert_eq!(loc.locate(Pos::new(2, 5)), Pos::new(2, 5));
        // After the rendered template the columns differ: point at the line's start.
        assert_eq!(loc.locate(Pos::new(2, 20)), Pos::new(2, 3));
    }
}
