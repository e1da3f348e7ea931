//! What an agent may be registered with (issue 12): its name and pool follow the task-name rule
//! ([`task_def::check_name`]), and its labels are `key=value` pairs in the style CI agents use
//! (Woodpecker's `platform=linux/arm64`, `disk=ssd`). The server checks them before storing;
//! the CLI checks them first so a typo fails before anything is sent.

use std::collections::BTreeMap;

use crate::task_def::{self, TaskDefError};

/// Longest label key.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 255;
/// Most labels on one agent.
pub const MAX_LABELS: usize = 64;

/// Why a name, a pool or a label is refused.
#[derive(Debug, thiserror::Error)]
pub enum AgentDefError {
    #[error(transparent)]
    Name(#[from] TaskDefError),
    #[error(
        "label key {0:?} is invalid: use 1-{MAX_LABEL_KEY_LEN} letters, digits, '-', '_', '.' \
         or '/'"
    )]
    LabelKey(String),
    #[error(
        "label {0}: the value must be at most {MAX_LABEL_VALUE_LEN} bytes without control \
         characters"
    )]
    LabelValue(String),
    #[error("label {0:?} is not key=value")]
    LabelForm(String),
    #[error("label {0} is given twice")]
    SameLabel(String),
    #[error("an agent has at most {MAX_LABELS} labels, not {0}")]
    TooManyLabels(usize),
}

pub fn check_name(name: &str) -> Result<(), AgentDefError> {
    Ok(task_def::check_name("agent", name)?)
}

pub fn check_pool(pool: &str) -> Result<(), AgentDefError> {
    Ok(task_def::check_name("pool", pool)?)
}

pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), AgentDefError> {
    if labels.len() > MAX_LABELS {
        return Err(AgentDefError::TooManyLabels(labels.len()));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        if !key_ok {
            return Err(AgentDefError::LabelKey(key.clone()));
        }
        if value.len() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
            return Err(AgentDefError::LabelValue(key.clone()));
        }
    }
    Ok(())
}

/// `--labels k=v,k2=v2` (empty: no labels), checked.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, AgentDefError> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) =
            pair.split_once('=').ok_or_else(|| AgentDefError::LabelForm(pair.to_string()))?;
        if labels.insert(key.trim().to_string(), value.trim().to_string()).is_some() {
            return Err(AgentDefError::SameLabel(key.trim().to_string()));
        }
    }
    check_labels(&labels)?;
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_from_pairs_and_refuse_bad_ones_by_name() {
        let labels = parse_labels("platform=linux/arm64, disk=ssd").unwrap();
        let pairs: Vec<(&str, &str)> =
            labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("disk", "ssd"), ("platform", "linux/arm64")]);
        assert!(parse_labels("").unwrap().is_empty());
        assert_eq!(parse_labels("empty=").unwrap()["empty"], "");
        let message = |text: &str| parse_labels(text).unwrap_err().to_string();
        assert_eq!(message("disk"), "label \"disk\" is not key=value");
        assert_eq!(message("a=1,a=2"), "label a is given twice");
        assert!(message("bad key=1").starts_with("label key \"bad key\" is invalid"));
        assert!(message("=1").starts_with("label key \"\" is invalid"));
        assert!(message(&format!("k={}", "v".repeat(256))).starts_with("label k: the value"));
        let many: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}=v")).collect();
        assert!(message(&many.join(",")).contains("at most 64 labels"));
    }

    #[test]
    fn names_and_pools_follow_the_task_name_rule() {
        assert!(check_name("arm64-box_2").is_ok());
        assert_eq!(
            check_name("a/b").unwrap_err().to_string(),
            "agent name \"a/b\" is invalid: use 1-50 letters, digits, '-' or '_'"
        );
        assert!(check_pool("").unwrap_err().to_string().starts_with("pool name \"\" is invalid"));
    }
}
