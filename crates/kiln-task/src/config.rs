//! kiln's own configuration file (TOML): settings of the installation rather than of a task.
//!
//! For now: the built-in image aliases (ACR's point at mcr.microsoft.com, which self-hosted users
//! may not reach or want), the prefix of run IDs, and the default registry. Unknown keys are
//! errors, unlike in task files: a typo in kiln's own configuration should never be silent.
//!
//! ```toml
//! run_id_prefix = "kb"
//! default_registry = "registry.example.com:5000"
//!
//! [aliases]
//! default_images = true        # keep ACR's table for names not listed below
//!
//! [aliases.images]
//! bash = "docker.io/library/bash:5"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::diagnostic::Pos;
use crate::run_id::RunIdPrefix;
use crate::task::alias::{RUN_ALIASES, is_alias_name};

/// ACR's built-in image aliases (Linux engine, acr-builder `graph/global-defaults-linux.go`).
pub const ACR_IMAGE_ALIASES: [(&str, &str); 5] = [
    ("acr", "mcr.microsoft.com/acr/acr-cli:0.19"),
    ("az", "mcr.microsoft.com/acr/azure-cli:2ff604c"),
    ("bash", "mcr.microsoft.com/acr/bash:2ff604c"),
    ("curl", "mcr.microsoft.com/acr/curl:2ff604c"),
    ("cssc", "mcr.microsoft.com/acr/cssc:2ff604c"),
];

pub const DEFAULT_RUN_ID_PREFIX: &str = "ka";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run IDs are this prefix and a base-36 counter (§4.5). Lowercase letters and digits,
    /// since IDs end up in image tags.
    #[serde(deserialize_with = "run_id_prefix")]
    pub run_id_prefix: RunIdPrefix,
    /// The registry (`host[:port]`) runs use when none is given.
    #[serde(deserialize_with = "registry")]
    pub default_registry: Option<String>,
    pub aliases: AliasConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AliasConfig {
    /// Start from [`ACR_IMAGE_ALIASES`]; `false` leaves only `images`.
    pub default_images: bool,
    /// Image aliases; an entry replaces the default of the same name.
    #[serde(deserialize_with = "image_aliases")]
    pub images: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            run_id_prefix: RunIdPrefix::new(DEFAULT_RUN_ID_PREFIX)
                .expect("the default prefix is valid"),
            default_registry: None,
            aliases: AliasConfig::default(),
        }
    }
}

impl Default for AliasConfig {
    fn default() -> Self {
        Self { default_images: true, images: BTreeMap::new() }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{}{}: {message}", path.display(), At(*pos))]
    Invalid { path: PathBuf, pos: Option<Pos>, message: String },
}

/// `:line:col`, or nothing.
struct At(Option<Pos>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => write!(f, ":{}:{}", p.line, p.col),
            None => Ok(()),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        Self::parse(&text, path)
    }

    /// Parses configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            pos: e.span().map(|span| pos_at(text, span.start)),
            message: e.message().trim_end().to_string(),
        })
    }

    /// The built-in image aliases: ACR's defaults unless disabled, overridden by the user's.
    pub fn image_aliases(&self) -> BTreeMap<String, String> {
        let defaults = ACR_IMAGE_ALIASES.iter().filter(|_| self.aliases.default_images);
        let mut images: BTreeMap<String, String> =
            defaults.map(|(name, image)| (name.to_string(), image.to_string())).collect();
        images.extend(self.aliases.images.clone());
        images
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn pos_at(text: &str, offset: usize) -> Pos {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    Pos::new(u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(col).unwrap_or(u32::MAX))
}

fn run_id_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<RunIdPrefix, D::Error> {
    RunIdPrefix::new(&String::deserialize(d)?).map_err(de::Error::custom)
}

fn registry<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let registry = String::deserialize(d)?;
    if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(de::Error::custom(format!(
            "default_registry `{registry}` must be a registry host, like `registry.example.com:5000`"
        )));
    }
    Ok(Some(registry))
}

/// An image alias name, checked while deserializing so the error carries the key's position.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct ImageAliasName(String);

impl<'de> Deserialize<'de> for ImageAliasName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if !is_alias_name(&name) {
            return Err(de::Error::custom(format!(
                "image alias name `{name}` may contain only ASCII letters and digits"
            )));
        }
        if RUN_ALIASES.contains(&name.as_str()) {
            return Err(de::Error::custom(format!(
                "image alias name `{name}` is taken by the predefined run alias `${name}`"
            )));
        }
        Ok(Self(name))
    }
}

fn image_aliases<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let images = BTreeMap::<ImageAliasName, ImageRef>::deserialize(d)?;
    Ok(images.into_iter().map(|(name, image)| (name.0, image.0)).collect())
}

/// An image alias value: anything non-empty (ACR's own aliases may carry arguments after the
/// image, e.g. `buildpack:latest pack`).
struct ImageRef(String);

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let image = String::deserialize(d)?;
        if image.trim().is_empty() {
            return Err(de::Error::custom("an image alias must not be empty"));
        }
        Ok(Self(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("kiln.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("an error").to_string()
    }

    #[test]
    fn defaults_are_acrs() {
        let c = Config::default();
        assert_eq!(c.run_id_prefix.as_str(), "ka");
        assert_eq!(c.default_registry, None);
        let images = c.image_aliases();
        assert_eq!(images.len(), 5);
        assert_eq!(images["acr"], "mcr.microsoft.com/acr/acr-cli:0.19");
        assert_eq!(images["az"], "mcr.microsoft.com/acr/azure-cli:2ff604c");
        assert_eq!(images["bash"], "mcr.microsoft.com/acr/bash:2ff604c");
        assert_eq!(parse("").expect("empty config"), c);
    }

    #[test]
    fn user_images_override_and_extend_the_defaults() {
        let c = parse(
            "run_id_prefix = \"kb1\"\ndefault_registry = \"localhost:5000\"\n\
             [aliases.images]\nbash = \"busybox:latest\"\ngit = \"alpine/git:2\"\n",
        )
        .expect("valid config");
        assert_eq!(c.run_id_prefix.as_str(), "kb1");
        assert_eq!(c.default_registry.as_deref(), Some("localhost:5000"));
        let images = c.image_aliases();
        assert_eq!(images["bash"], "busybox:latest");
        assert_eq!(images["git"], "alpine/git:2");
        assert_eq!(images["curl"], "mcr.microsoft.com/acr/curl:2ff604c");
    }

    #[test]
    fn default_images_false_drops_acrs_table() {
        let c = parse("[aliases]\ndefault_images = false\nimages = { bash = \"busybox\" }\n")
            .expect("valid config");
        assert_eq!(
            c.image_aliases().into_iter().collect::<Vec<_>>(),
            vec![("bash".to_string(), "busybox".to_string())]
        );
    }

    #[test]
    fn errors_name_file_line_and_column() {
        assert!(
            error("run_id_prefx = \"x\"")
                .starts_with("kiln.toml:1:1: unknown field `run_id_prefx`")
        );
        let e = error("\n[aliases.images]\n\"my-tool\" = \"img\"\n");
        assert!(e.starts_with("kiln.toml:3:1: image alias name `my-tool`"), "{e}");
        let e = error("[aliases.images]\nID = \"img\"\n");
        assert!(e.starts_with("kiln.toml:2:1: ") && e.contains("run alias `$ID`"), "{e}");
        let e = error("[aliases.images]\nbash = \"\"\n");
        assert!(e.starts_with("kiln.toml:2:8: an image alias must not be empty"), "{e}");
        let e = error("run_id_prefix = \"KA\"");
        assert!(e.starts_with("kiln.toml:1:17: run ID prefix \"KA\""), "{e}");
        let e = error("default_registry = \"https://r.example\"");
        assert!(e.starts_with("kiln.toml:1:20: default_registry"), "{e}");
        let e = error("[aliases]\ndefault_images = \"no\"");
        assert!(e.starts_with("kiln.toml:2:18: invalid type"), "{e}");
        let e = error("run_id_prefix = ");
        assert!(e.starts_with("kiln.toml:1:"), "{e}");
    }

    #[test]
    fn load_reads_a_file_and_reports_missing_ones() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kiln.toml");
        std::fs::write(&path, "[aliases.images]\nbash = \"busybox\"\n").expect("write");
        assert_eq!(Config::load(&path).expect("loads").image_aliases()["bash"], "busybox");
        let missing = dir.path().join("nope.toml");
        let e = Config::load(&missing).expect_err("missing file");
        assert!(matches!(e, ConfigError::Read { .. }));
        assert!(e.to_string().starts_with(&format!("{}: cannot read", missing.display())));
    }
}
