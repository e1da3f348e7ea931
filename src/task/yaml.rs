//! The task file as a YAML tree with a position on every node.
//!
//! serde-saphyr does the YAML work (YAML 1.1 booleans like Go's yaml.v2, merge keys, duplicate-key
//! rejection, errors with a position); this module keeps the result as a generic tree instead of
//! deserializing straight into the model, so that [`super::parse`] can report every unknown key
//! and every wrongly typed value with its own line and column, and report all of them at once.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::diagnostic::Pos;

/// A YAML node and where it starts in the parsed text.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    /// Byte range of a scalar in the parsed text, so a string field gets the scalar exactly as
    /// written (`1.10` stays `1.10`, as Go's yaml.v2 does for string fields).
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

/// A YAML error with the position serde-saphyr found it at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub pos: Option<Pos>,
    pub message: String,
}

/// Parses one YAML document. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    if text.trim().is_empty() {
        return Ok(Node { value: Value::Null, pos: Pos::new(1, 1), raw: None });
    }
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| {
        let pos = e.location().map(|l| Pos::new(l.line() as u32, l.column() as u32));
        YamlError { pos, message: first_line(&e.to_string()) }
    })
}

/// serde-saphyr's message without its trailing location text (we print our own position).
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message).trim();
    match line.rfind(" at line ") {
        Some(i) => line[..i].to_string(),
        None => line.to_string(),
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        let loc = spanned.referenced;
        let span = loc.span();
        let raw = match (span.byte_offset(), span.byte_len()) {
            (Some(o), Some(l)) if !matches!(spanned.value, Value::Seq(_) | Value::Map(_)) => {
                Some((o as usize, (o + l) as usize))
            }
            _ => None,
        };
        Ok(Node {
            value: spanned.value,
            pos: Pos::new(loc.line() as u32, loc.column() as u32),
            raw,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v).map(Value::Int).or(Ok(Value::Float(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
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
}
