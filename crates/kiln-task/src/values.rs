//! Run values (reference §4.2): the `.Values` a task file renders with.
//!
//! Values come from two layers: a YAML values file (`--values`) and `--set` / `--set-secret`
//! flags, the flags winning. This module owns loading the file, parsing the flags exactly as
//! `acb` does (split at the first `=`, flat keys, no comma lists) and merging the layers with
//! ACR's rules. The merge also reports the `--set-secret` values so that later stages can mask
//! them in logs — ACR does not (§9 item 15), kiln does.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value as Json};

use crate::task::yaml::{self, Node, Value as Yaml};

/// Why values could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    #[error("{flag} {arg:?}: expected NAME=VALUE")]
    MissingEquals { flag: SetFlag, arg: String },
    #[error("{flag} {arg:?}: the name before '=' is empty")]
    EmptyName { flag: SetFlag, arg: String },
    #[error("{path}:{line}:{col}: {message}")]
    Yaml { path: String, line: u32, col: u32, message: String },
    #[error("{path}:{line}:{col}: a values file must be a YAML mapping, found {found}")]
    NotAMapping { path: String, line: u32, col: u32, found: &'static str },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Which flag a [`SetValue`] came from; errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetFlag {
    Set,
    SetSecret,
}

impl fmt::Display for SetFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetFlag::Set => "--set",
            SetFlag::SetSecret => "--set-secret",
        })
    }
}

/// A tree of values: a JSON-shaped map, as Go's `map[string]interface{}` is in ACR.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Values(Map<String, Json>);

impl Values {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_map(map: Map<String, Json>) -> Self {
        Self(map)
    }

    pub fn as_map(&self) -> &Map<String, Json> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Json> {
        self.0
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        self.0.get(key)
    }

    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Json>) {
        self.0.insert(key.into(), value.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a values file. `path` is only used in error messages.
    ///
    /// An empty file (or one holding only `null`) is no values, as Go's yaml.v2 reads it.
    pub fn from_yaml(text: &str, path: &str) -> Result<Self, ValuesError> {
        let node = yaml::parse(text).map_err(|e| {
            let pos = e.pos.unwrap_or(crate::diagnostic::Pos::new(1, 1));
            ValuesError::Yaml {
                path: path.to_string(),
                line: pos.line,
                col: pos.col,
                message: e.message,
            }
        })?;
        match node.value {
            Yaml::Null => Ok(Self::new()),
            Yaml::Map(entries) => Ok(Self(to_json_map(entries, text))),
            other => Err(ValuesError::NotAMapping {
                path: path.to_string(),
                line: node.pos.line,
                col: node.pos.col,
                found: other.kind(),
            }),
        }
    }

    /// Loads a values file from disk.
    pub fn load(path: &Path) -> Result<Self, ValuesError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ValuesError::Io { path: shown.clone(), source })?;
        Self::from_yaml(&text, &shown)
    }

    /// Merges `overrides` into `self`, `overrides` winning (acr-builder's `mergeMaps`): maps
    /// present on both sides merge recursively, a `null` in `overrides` deletes the key, and
    /// anything else replaces.
    pub fn merge(&mut self, overrides: Values) {
        merge_maps(&mut self.0, overrides.0);
    }
}

fn merge_maps(base: &mut Map<String, Json>, overrides: Map<String, Json>) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (_, Json::Null) => {
                base.remove(&key);
            }
            (Some(Json::Object(inner)), Json::Object(over)) => merge_maps(inner, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The text of a map key. Non-string scalar keys keep their spelling (`1: x` is key `1`); Go's
/// yaml.v2 would print them with `%v`, and collection keys are too odd to matter.
fn key_text(node: &Node, text: &str) -> String {
    match &node.value {
        Yaml::Str(s) => s.clone(),
        other => node
            .raw
            .and_then(|(s, e)| text.get(s..e))
            .map_or_else(|| other.kind().to_string(), str::to_string),
    }
}

fn to_json_map(entries: Vec<(Node, Node)>, text: &str) -> Map<String, Json> {
    entries.into_iter().map(|(k, v)| (key_text(&k, text), to_json(v, text))).collect()
}

fn to_json(node: Node, text: &str) -> Json {
    match node.value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(b),
        Yaml::Int(i) => Json::Number(i.into()),
        // JSON has no NaN or infinities; keep Go's spelling of them as text.
        Yaml::Float(f) => {
            Number::from_f64(f).map_or_else(|| Json::String(go_float(f)), Json::Number)
        }
        Yaml::Str(s) => Json::String(s),
        Yaml::Seq(items) => Json::Array(items.into_iter().map(|n| to_json(n, text)).collect()),
        Yaml::Map(entries) => Json::Object(to_json_map(entries, text)),
    }
}

fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// One `--set NAME=VALUE` or `--set-secret NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetValue {
    pub name: String,
    pub value: String,
    pub secret: bool,
}

impl SetValue {
    /// Splits at the first `=`, as `acb` does: `a=1,b=2` is name `a`, value `1,b=2`, and
    /// `a.b=1` is the flat name `a.b` (reachable as `index .Values "a.b"`), not a nested map.
    pub fn parse(flag: SetFlag, arg: &str) -> Result<Self, ValuesError> {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| ValuesError::MissingEquals { flag, arg: arg.to_string() })?;
        if name.is_empty() {
            return Err(ValuesError::EmptyName { flag, arg: arg.to_string() });
        }
        Ok(Self {
            name: name.to_string(),
            value: value.to_string(),
            secret: flag == SetFlag::SetSecret,
        })
    }
}

/// The values a run renders with, and which of them must be masked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergedValues {
    pub values: Values,
    /// The non-empty values given with `--set-secret`, each once, in flag order.
    pub secrets: Vec<String>,
}

/// `file` overridden by `sets` in order (a later flag for the same name wins). `--set` values
/// are strings, as in ACR; `{{ add .Values.n 1 }}` still works because the math functions read
/// numbers from strings.
pub fn merge_values(file: Values, sets: &[SetValue]) -> MergedValues {
    let mut values = file;
    let mut flags = Map::new();
    let mut secrets: Vec<String> = Vec::new();
    for set in sets {
        flags.insert(set.name.clone(), Json::String(set.value.clone()));
        // Masking "" would match everywhere and hide nothing.
        if set.secret && !set.value.is_empty() && !secrets.contains(&set.value) {
            secrets.push(set.value.clone());
        }
    }
    values.merge(Values(flags));
    MergedValues { values, secrets }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn values(v: Json) -> Values {
        match v {
            Json::Object(m) => Values::from_map(m),
            other => panic!("not an object: {other}"),
        }
    }

    fn set(arg: &str) -> SetValue {
        SetValue::parse(SetFlag::Set, arg).unwrap()
    }

    #[test]
    fn set_parsing_follows_acb() {
        assert_eq!(set("a=1"), SetValue { name: "a".into(), value: "1".into(), secret: false });
        let commas = set("a=1,b=2");
        assert_eq!((commas.name.as_str(), commas.value.as_str()), ("a", "1,b=2"));
        let dotted = set("a.b=c=d");
        assert_eq!((dotted.name.as_str(), dotted.value.as_str()), ("a.b", "c=d"));
        assert_eq!(set("empty=").value, "");
        assert!(SetValue::parse(SetFlag::SetSecret, "pw=x").unwrap().secret);
    }

    #[test]
    fn set_errors_name_the_flag_and_argument() {
        let err = SetValue::parse(SetFlag::Set, "novalue").unwrap_err();
        assert!(matches!(err, ValuesError::MissingEquals { flag: SetFlag::Set, .. }));
        assert_eq!(err.to_string(), r#"--set "novalue": expected NAME=VALUE"#);
        let err = SetValue::parse(SetFlag::SetSecret, "=x").unwrap_err();
        assert_eq!(err.to_string(), r#"--set-secret "=x": the name before '=' is empty"#);
    }

    #[test]
    fn set_beats_file_and_later_set_beats_earlier() {
        let file = values(json!({"tag": "v1", "keep": 1}));
        let merged = merge_values(file, &[set("tag=v2"), set("new=x"), set("new=y")]);
        assert_eq!(
            Json::Object(merged.values.into_map()),
            json!({"tag": "v2", "keep": 1, "new": "y"})
        );
        assert!(merged.secrets.is_empty());
    }

    #[test]
    fn nested_maps_merge_recursively_and_null_deletes() {
        let mut base = values(json!({
            "image": {"name": "web", "tag": "v1", "extra": {"a": 1, "b": 2}},
            "gone": "x",
            "scalar": 1,
        }));
        base.merge(values(json!({
            "image": {"tag": "v2", "extra": {"b": null, "c": 3}},
            "gone": null,
            "scalar": {"now": "a map"},
            "absent": null,
        })));
        assert_eq!(
            Json::Object(base.into_map()),
            json!({
                "image": {"name": "web", "tag": "v2", "extra": {"a": 1, "c": 3}},
                "scalar": {"now": "a map"},
            })
        );
    }

    #[test]
    fn secrets_are_listed_once_and_never_empty() {
        let secret = |arg| SetValue::parse(SetFlag::SetSecret, arg).unwrap();
        let merged = merge_values(
            Values::new(),
            &[secret("pw=hunter2"), set("user=me"), secret("again=hunter2"), secret("e=")],
        );
        assert_eq!(merged.secrets, vec!["hunter2".to_string()]);
        assert_eq!(merged.values.get("pw"), Some(&json!("hunter2")));
    }

    #[test]
    fn values_file_is_yaml_with_go_types() {
        let v = Values::from_yaml(
            "tag: v1\nflag: yes\nn: 3\nf: 1.5\nver: 1.10\nlist: [a, 1]\nmap:\n  k: v\n1: one\nnothing: ~\n",
            "values.yaml",
        )
        .unwrap();
        assert_eq!(
            Json::Object(v.into_map()),
            json!({
                "tag": "v1", "flag": true, "n": 3, "f": 1.5, "ver": 1.1, "list": ["a", 1],
                "map": {"k": "v"}, "1": "one", "nothing": null,
            })
        );
        assert!(Values::from_yaml("", "v.yaml").unwrap().is_empty());
        assert!(Values::from_yaml("# only a comment\n", "v.yaml").unwrap().is_empty());
    }

    #[test]
    fn values_file_errors_carry_path_line_col() {
        let err = Values::from_yaml("a: 1\nb: [unclosed\n", "vals.yaml").unwrap_err();
        let ValuesError::Yaml { path, line, .. } = &err else { panic!("{err:?}") };
        assert_eq!(path, "vals.yaml");
        assert!(*line >= 2, "{err}");
        assert!(err.to_string().starts_with("vals.yaml:"), "{err}");

        let err = Values::from_yaml("a: 1\na: 2\n", "dup.yaml").unwrap_err();
        assert!(matches!(err, ValuesError::Yaml { line: 2, .. }), "{err:?}");

        let err = Values::from_yaml("- a\n- b\n", "list.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "list.yaml:1:1: a values file must be a YAML mapping, found a list"
        );
    }

    #[test]
    fn load_reports_missing_files() {
        let err = Values::load(Path::new("/nonexistent/values.yaml")).unwrap_err();
        assert!(matches!(err, ValuesError::Io { .. }));
        assert!(err.to_string().starts_with("/nonexistent/values.yaml: "), "{err}");
    }
}
