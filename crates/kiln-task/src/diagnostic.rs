//! Diagnostics: what kiln tells a user about a task file, and where.
//!
//! Every problem found while loading a task file, from a YAML syntax error to a `when` that names
//! a later step, becomes one [`Diagnostic`] pointing at the file, line and column of the node that
//! caused it. Errors stop the load; warnings explain ACR's silent behaviours (unknown keys, missing
//! template values, alias rewrites of shell text) and become errors under `--strict`.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema as _, ToSchema};

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// A 1-based position in the task file as the user wrote it (before comment stripping,
/// alias substitution and rendering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const fn new(line: u32, col: u32) -> Self {
        Self { line, col }
    }
}

/// One finding about a task file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where in the original file; `None` for problems of the whole file or of an input
    /// outside it (a `--set` flag, say).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub pos: Option<Pos>,
    /// The YAML path of the offending node, e.g. `steps[2].timeout`, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

/// The API's schema of a diagnostic: the flattened position is two optional fields, which a
/// derived schema cannot say of a flattened `Option`.
impl utoipa::PartialSchema for Diagnostic {
    fn schema() -> RefOr<Schema> {
        let integer = || ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1));
        ObjectBuilder::new()
            .property("severity", Ref::from_schema_name("Severity"))
            .required("severity")
            .property("line", integer())
            .property("col", integer())
            .property("field", ObjectBuilder::new().schema_type(Type::String))
            .property("message", ObjectBuilder::new().schema_type(Type::String))
            .required("message")
            .description(Some("One finding about a task file; `line` and `col` are 1-based."))
            .into()
    }
}

impl ToSchema for Diagnostic {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Severity::name().into_owned(), Severity::schema()));
    }
}

impl Diagnostic {
    pub fn error(pos: Option<Pos>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, pos, field: None, message: message.into() }
    }

    pub fn warning(pos: Option<Pos>, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, pos, field: None, message: message.into() }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Formats as `file:line:col: severity: message`, the shape compilers use so editors and
    /// terminals can jump to the spot.
    pub fn display<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        DisplayIn { diagnostic: self, file }
    }
}

struct DisplayIn<'a> {
    diagnostic: &'a Diagnostic,
    file: &'a str,
}

impl fmt::Display for DisplayIn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diagnostic;
        match d.pos {
            Some(p) => write!(f, "{}:{}:{}: ", self.file, p.line, p.col)?,
            None => write!(f, "{}: ", self.file)?,
        }
        let severity = match d.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{severity}: ")?;
        if let Some(field) = &d.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&d.message)
    }
}

/// The diagnostics of one load, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(ds);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// `--strict`: every warning becomes an error.
    pub fn make_strict(&mut self) {
        for d in &mut self.0 {
            d.severity = Severity::Error;
        }
    }

    /// Sorted by position so a user reads them top to bottom; file-level ones first.
    pub fn sorted(mut self) -> Self {
        self.0.sort_by_key(|d| d.pos);
        self
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_a_compiler() {
        let d = Diagnostic::warning(
            Some(Pos::new(7, 5)),
            "unknown step property `timeOut`; did you mean `timeout`?",
        )
        .with_field("steps[0]");
        assert_eq!(
            d.display("acb.yaml").to_string(),
            "acb.yaml:7:5: warning: steps[0]: unknown step property `timeOut`; did you mean `timeout`?"
        );
        let e = Diagnostic::error(None, "invalid version specified");
        assert_eq!(e.display("acb.yaml").to_string(), "acb.yaml: error: invalid version specified");
    }

    #[test]
    fn strict_turns_warnings_into_errors() {
        let mut ds = Diagnostics::default();
        ds.push(Diagnostic::warning(None, "w"));
        assert!(!ds.has_errors());
        ds.make_strict();
        assert!(ds.has_errors());
    }
}
