//! From the YAML tree to the [`Task`] model: types, defaults and the per-node rules of reference
//! §1.2, §1.3, §2 and §3, each reported at the node that broke it.
//!
//! ACR's engine unmarshals with Go's yaml.v2 in non-strict mode, so a misspelt key does nothing
//! (sharp edge 5). kiln accepts the same files but warns about every key it does not know, with the
//! closest known key, and about properties ACR parses but ignores. Rules that span steps (IDs,
//! `when`) live in [`super::dag`].

use base64::Engine as _;
use kiln_plan::plan::{EnvVar, StepId};

use super::model::*;
use super::preprocess::Version;
use super::yaml::{Node, Value};
use crate::diagnostic::{Diagnostic, Diagnostics, Pos};

const TASK_KEYS: &[&str] = &[
    "version",
    "stepTimeout",
    "workingDirectory",
    "env",
    "secrets",
    "networks",
    "volumes",
    "alias",
    "steps",
];

const STEP_KEYS: &[&str] = &[
    "id",
    "build",
    "push",
    "cmd",
    "when",
    "timeout",
    "startDelay",
    "retries",
    "retryDelay",
    "retryOnErrors",
    "repeat",
    "ignoreErrors",
    "detach",
    "keep",
    "entryPoint",
    "env",
    "workingDirectory",
    "disableWorkingDirectoryOverride",
    "network",
    "ports",
    "expose",
    "privileged",
    "user",
    "isolation",
    "cpus",
    "pull",
    "cmdDownloadRetries",
    "cmdDownloadRetryDelay",
    "volumeMounts",
    "cache",
    "exitedWith",
    "exitedWithout",
];

/// The only properties ACR's docs list for push steps; others are accepted and ignored.
const PUSH_KEYS: &[&str] = &["id", "push", "when", "timeout", "startDelay", "ignoreErrors", "env"];

const SECRET_KEYS: &[&str] = &["id", "keyvault", "clientID"];
const NETWORK_KEYS: &[&str] = &["name", "driver", "ipv6", "skipCreation", "isDefault"];
const VOLUME_KEYS: &[&str] = &["name", "secret"];
const MOUNT_KEYS: &[&str] = &["name", "mountPath"];

/// Parses a task from its YAML tree. `text` is the text the tree was parsed from (for scalars'
/// exact spelling); `locate` turns positions in it into positions in the user's file.
pub fn parse_task(
    root: &Node,
    text: &str,
    locate: &dyn Fn(Pos) -> Pos,
) -> (Option<Task>, Diagnostics) {
    let mut cx = Cx { diags: Diagnostics::default(), text, locate };
    let task = cx.task(root);
    (task, cx.diags)
}

struct Cx<'a> {
    diags: Diagnostics,
    text: &'a str,
    locate: &'a dyn Fn(Pos) -> Pos,
}

/// The entries of one mapping, tracking which keys were read so the rest can be reported.
struct Fields<'n> {
    entries: &'n [(Node, Node)],
    used: Vec<bool>,
    path: String,
}

impl<'n> Fields<'n> {
    /// The value of `key`; `None` when absent or YAML null (Go leaves the zero value then).
    fn get(&mut self, key: &str) -> Option<&'n Node> {
        let i =
            self.entries.iter().position(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))?;
        self.used[i] = true;
        let node = &self.entries[i].1;
        (!matches!(node.value, Value::Null)).then_some(node)
    }

    fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, v)| {
            matches!(&k.value, Value::Str(s) if s == key) && !matches!(v.value, Value::Null)
        })
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }
}

impl<'a> Cx<'a> {
    fn error(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        let d = Diagnostic::error(Some((self.locate)(pos)), message);
        self.diags.push(if field.is_empty() { d } else { d.with_field(field) });
    }

    fn warn(&mut self, pos: Pos, field: &str, message: impl Into<String>) {
        let d = Diagnostic::warning(Some((self.locate)(pos)), message);
        self.diags.push(if field.is_empty() { d } else { d.with_field(field) });
    }

    fn fields<'n>(&mut self, node: &'n Node, path: String, what: &str) -> Option<Fields<'n>> {
        match &node.value {
            Value::Map(entries) => Some(Fields { entries, used: vec![false; entries.len()], path }),
            other => {
                self.error(
                    node.pos,
                    &path,
                    format!("{what} must be a mapping, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// A task without steps is valid in ACR (its run does nothing and succeeds), but it is
    /// probably a mistake: a warning, an error under `--strict`.
    fn no_steps(&mut self, pos: Pos, what: &str) {
        self.warn(
            pos,
            "steps",
            format!(
                "{what}: the run does nothing and succeeds (as in ACR); add a build, push or cmd step"
            ),
        );
    }

    /// Warns about every key of `f` that was not read, suggesting the closest of `known`.
    fn unknown_keys(&mut self, f: &Fields<'_>, known: &[&str], what: &str) {
        for (i, (k, _)) in f.entries.iter().enumerate() {
            if f.used[i] {
                continue;
            }
            let name = self.scalar_text(k).unwrap_or_default();
            let message = match (what, name.as_str()) {
                ("task", "totalTimeout") => {
                    "unknown task property `totalTimeout`: not a task-file property and ACR ignores it; \
                    set the run's timeout with `--timeout` (default 3600 s)"
                        .to_string()
                }
                ("step", "secret") => {
                    "unknown step property `secret`: ACR's docs list it, its engine \
                    ignores it; declare secrets in the task's `secrets` list"
                        .to_string()
                }
                _ => match closest(&name, known) {
                    Some(s) => format!(
                        "unknown {what} property `{name}` (ACR silently ignores it); did you mean `{s}`?"
                    ),
                    None => format!("unknown {what} property `{name}` (ACR silently ignores it)"),
                },
            };
            self.warn(k.pos, &f.path, message);
        }
    }

    /// A scalar as text, the way yaml.v2 fills a Go string: numbers and booleans as written.
    fn scalar_text(&self, node: &Node) -> Option<String> {
        let written = node.raw.and_then(|(s, e)| self.text.get(s..e)).map(str::to_string);
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(written.unwrap_or_else(|| b.to_string())),
            Value::Int(i) => Some(written.unwrap_or_else(|| i.to_string())),
            Value::Float(x) => Some(written.unwrap_or_else(|| x.to_string())),
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
        }
    }

    fn string(&mut self, f: &mut Fields<'_>, key: &str) -> Option<At<String>> {
        let node = f.get(key)?;
        match self.scalar_text(node) {
            Some(s) => Some(At { value: s, pos: node.pos }),
            None => {
                self.error(
                    node.pos,
                    &f.field(key),
                    format!("expected a string, found {}", node.value.kind()),
                );
                None
            }
        }
    }

    fn int(&mut self, f: &mut Fields<'_>, key: &str) -> Option<At<i64>> {
        let node = f.get(key)?;
        match &node.value {
            Value::Int(i) => Some(At { value: *i, pos: node.pos }),
            Value::Float(x) if x.fract() == 0.0 && x.abs() < 9e15 => {
                Some(At { value: *x as i64, pos: node.pos })
            }
            other => {
                let hint = match other {
                    Value::Str(s) if s.trim().parse::<i64>().is_ok() => " (remove the quotes)",
                    _ => "",
                };
                self.error(
                    node.pos,
                    &f.field(key),
                    format!("expected an integer, found {}{hint}", other.kind()),
                );
                None
            }
        }
    }

    /// A count that must not be negative (`retries`, `repeat`).
    fn count(&mut self, f: &mut Fields<'_>, key: &str) -> u32 {
        match self.int(f, key) {
            Some(At { value, pos }) if value < 0 => {
                self.error(
                    pos,
                    &f.field(key),
                    format!("step must specify {key} >= 0 (got {value})"),
                );
                0
            }
            Some(At { value, pos }) => u32::try_from(value).unwrap_or_else(|_| {
                self.error(pos, &f.field(key), format!("{key} is too large: {value}"));
                0
            }),
            None => 0,
        }
    }

    /// Seconds where ACR treats `<= 0` as "use the default".
    fn seconds_or(&mut self, f: &mut Fields<'_>, key: &str, default: u64) -> u64 {
        match self.int(f, key) {
            Some(At { value, .. }) if value > 0 => value as u64,
            _ => default,
        }
    }

    /// Seconds where a negative value means nothing; kiln says so.
    fn seconds(&mut self, f: &mut Fields<'_>, key: &str) -> u64 {
        match self.int(f, key) {
            Some(At { value, pos }) if value < 0 => {
                self.warn(pos, &f.field(key), format!("{key} is negative ({value}); treated as 0"));
                0
            }
            Some(At { value, .. }) => value as u64,
            None => 0,
        }
    }

    fn boolean(&mut self, f: &mut Fields<'_>, key: &str) -> bool {
        let Some(node) = f.get(key) else { return false };
        match &node.value {
            Value::Bool(b) => *b,
            other => {
                let hint = match other {
                    Value::Str(s)
                        if matches!(s.to_ascii_lowercase().as_str(), "true" | "false") =>
                    {
                        " (remove the quotes)"
                    }
                    _ => "",
                };
                self.error(
                    node.pos,
                    &f.field(key),
                    format!("expected a boolean, found {}{hint}", other.kind()),
                );
                false
            }
        }
    }

    fn strings(&mut self, f: &mut Fields<'_>, key: &str) -> Vec<At<String>> {
        let Some(node) = f.get(key) else { return Vec::new() };
        self.string_list(node, &f.field(key))
    }

    fn string_list(&mut self, node: &Node, field: &str) -> Vec<At<String>> {
        let Value::Seq(items) = &node.value else {
            let hint = if matches!(node.value, Value::Str(_)) {
                " (write it as a list: [\"…\"])"
            } else {
                ""
            };
            self.error(
                node.pos,
                field,
                format!("expected a list, found {}{hint}", node.value.kind()),
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match self.scalar_text(item) {
                Some(s) => out.push(At { value: s, pos: item.pos }),
                None => self.error(
                    item.pos,
                    &format!("{field}[{i}]"),
                    format!("expected a string, found {}", item.value.kind()),
                ),
            }
        }
        out
    }

    fn task(&mut self, root: &Node) -> Option<Task> {
        // ACR decodes an empty file into a task without steps, runs nothing and succeeds.
        let empty = Node { value: Value::Map(Vec::new()), pos: root.pos, raw: None };
        let root = if matches!(root.value, Value::Null) { &empty } else { root };
        let mut f = self.fields(root, String::new(), "a task file")?;

        let version = match self.string(&mut f, "version") {
            None => Version::default(),
            Some(v) => Version::parse(v.value.trim()).unwrap_or_else(|| {
                let accepted: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
                self.error(
                    v.pos,
                    "version",
                    format!(
                        "invalid version specified: `{}` (accepted: {})",
                        v.value,
                        accepted.join(", ")
                    ),
                );
                Version::default()
            }),
        };
        let step_timeout = self.seconds_or(&mut f, "stepTimeout", DEFAULT_STEP_TIMEOUT);
        let working_directory = match self.string(&mut f, "workingDirectory") {
            Some(wd) => under_workspace(&wd.value),
            None => WORKSPACE.to_string(),
        };
        let env = match f.get("env") {
            Some(node) => {
                let entries = self.string_list(node, "env");
                self.task_env(&entries)
            }
            None => Vec::new(),
        };
        let secrets = self.list(&mut f, "secrets", |cx, node, path| cx.secret(node, path));
        let networks = self.list(&mut f, "networks", |cx, node, path| cx.network(node, path));
        let volumes = self.list(&mut f, "volumes", |cx, node, path| cx.volume(node, path));
        self.unique(secrets.iter().map(|s| &s.id), "secret ID");
        self.unique(volumes.iter().map(|v| &v.name), "volume name");

        if let Some(alias) = f.get("alias") {
            // For v1.1.0+ the alias block never reaches YAML; here it would be ignored by ACR.
            self.warn(
                alias.pos,
                "alias",
                format!(
                    "`alias` needs `version: v1.1.0` or later; with version `{version}` ACR ignores it \
                     and `$` names are not replaced"
                ),
            );
        }

        let defaults =
            StepDefaults { step_timeout, working_directory: &working_directory, env: &env };
        let steps = match f.get("steps") {
            None => {
                self.no_steps(root.pos, "the task has no `steps`");
                Vec::new()
            }
            Some(node) => match &node.value {
                Value::Null => {
                    self.no_steps(node.pos, "`steps` is empty");
                    Vec::new()
                }
                Value::Seq(items) => {
                    if items.is_empty() {
                        self.no_steps(node.pos, "`steps` is empty");
                    }
                    let volume_names: Vec<&str> =
                        volumes.iter().map(|v| v.name.value.as_str()).collect();
                    items
                        .iter()
                        .enumerate()
                        .filter_map(|(i, item)| self.step(i, item, &defaults, &volume_names))
                        .collect()
                }
                other => {
                    self.error(
                        node.pos,
                        "steps",
                        format!("expected a list, found {}", other.kind()),
                    );
                    Vec::new()
                }
            },
        };
        self.unknown_keys(&f, TASK_KEYS, "task");
        self.network_defaults(&networks, root.pos);

        Some(Task {
            version,
            step_timeout,
            working_directory,
            env,
            secrets,
            networks,
            volumes,
            steps,
        })
    }

    /// Task-level env: every entry is split on `,` (ACR's rule, sharp edge 9).
    fn task_env(&mut self, entries: &[At<String>]) -> Vec<EnvVar> {
        let mut out = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            for part in entry.value.split(',') {
                match part.split_once('=') {
                    Some((k, v)) if !k.trim().is_empty() => {
                        out.push(EnvVar { name: k.trim().to_string(), value: v.to_string() })
                    }
                    _ if entry.value.contains(',') => self.error(
                        entry.pos,
                        &format!("env[{i}]"),
                        format!(
                            "cannot parse task environment variable {part} correctly: task-level env entries are split on \
                             commas (ACR's rule), so `{}` holds `{part}`, which is not KEY=value",
                            entry.value
                        ),
                    ),
                    _ => self.error(
                        entry.pos,
                        &format!("env[{i}]"),
                        format!("cannot parse task environment variable {} correctly: expected KEY=value", entry.value),
                    ),
                }
            }
        }
        out
    }

    fn list<T>(
        &mut self,
        f: &mut Fields<'_>,
        key: &str,
        mut item: impl FnMut(&mut Self, &Node, String) -> Option<T>,
    ) -> Vec<T> {
        let Some(node) = f.get(key) else { return Vec::new() };
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, n)| item(self, n, format!("{key}[{i}]")))
                .collect(),
            other => {
                self.error(node.pos, key, format!("expected a list, found {}", other.kind()));
                Vec::new()
            }
        }
    }

    fn unique<'v>(&mut self, names: impl Iterator<Item = &'v At<String>>, what: &str) {
        let mut seen: Vec<&At<String>> = Vec::new();
        for n in names {
            if let Some(first) = seen.iter().find(|s| s.value == n.value) {
                let line = (self.locate)(first.pos).line;
                self.error(
                    n.pos,
                    "",
                    format!("duplicate {what} `{}` (first defined at line {line})", n.value),
                );
            } else {
                seen.push(n);
            }
        }
    }

    fn secret(&mut self, node: &Node, path: String) -> Option<Secret> {
        let mut f = self.fields(node, path.clone(), "a secret")?;
        let id = self.string(&mut f, "id");
        let keyvault = self.string(&mut f, "keyvault");
        let client_id = self.string(&mut f, "clientID");
        self.unknown_keys(&f, SECRET_KEYS, "secret");
        let Some(id) = id.filter(|id| !id.value.is_empty()) else {
            self.error(node.pos, &path, "a secret needs an `id`");
            return None;
        };
        if id.value.contains(char::is_whitespace) {
            self.error(
                id.pos,
                &f.field("id"),
                format!("secret ID cannot contain spaces: `{}`", id.value),
            );
        }
        match &keyvault {
            None => self.error(
                node.pos,
                &path,
                format!("secret should contain either keyvault property or a managed identity (secret `{}`)", id.value),
            ),
            Some(kv) if !(kv.value.starts_with("https://") && kv.value.contains("/secrets/")) => self.error(
                kv.pos,
                &f.field("keyvault"),
                format!(
                    "`{}` is not a Key Vault secret URL (https://<vault>.vault.azure.net/secrets/<name>[/<version>])",
                    kv.value
                ),
            ),
            Some(_) => {}
        }
        if let Some(c) = &client_id
            && !is_guid(&c.value)
        {
            self.error(
                c.pos,
                &f.field("clientID"),
                format!("msi client ID is not a valid guid: `{}`", c.value),
            );
        }
        Some(Secret {
            id,
            keyvault: keyvault.map(|k| k.value),
            client_id: client_id.map(|c| c.value),
        })
    }

    fn network(&mut self, node: &Node, path: String) -> Option<Network> {
        let mut f = self.fields(node, path.clone(), "a network")?;
        let name = self.string(&mut f, "name");
        let driver = self.string(&mut f, "driver").map(|d| d.value);
        let ipv6 = self.boolean(&mut f, "ipv6");
        let skip_creation = self.boolean(&mut f, "skipCreation");
        let is_default = self.boolean(&mut f, "isDefault");
        self.unknown_keys(&f, NETWORK_KEYS, "network");
        let Some(name) = name.filter(|n| !n.value.is_empty()) else {
            self.error(node.pos, &path, "a network's name must be specified");
            return None;
        };
        Some(Network { name: name.value, driver, ipv6, skip_creation, is_default })
    }

    /// Sharp edge 11: declaring networks without a default drops the run network that makes
    /// step IDs resolvable.
    fn network_defaults(&mut self, networks: &[Network], pos: Pos) {
        if !networks.is_empty() && !networks.iter().any(|n| n.is_default) {
            self.warn(
                pos,
                "networks",
                "networks are declared but none has `isDefault: true`: steps without `network` join no \
                 shared network, so step IDs do not resolve as host names (ACR drops its default network too)",
            );
        }
    }

    fn volume(&mut self, node: &Node, path: String) -> Option<Volume> {
        let mut f = self.fields(node, path.clone(), "a volume")?;
        let name = self.string(&mut f, "name");
        let secret = f.get("secret");
        self.unknown_keys(&f, VOLUME_KEYS, "volume");
        let Some(name) = name.filter(|n| !n.value.is_empty()) else {
            self.error(node.pos, &path, "a volume needs a `name`");
            return None;
        };
        if !name.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            self.error(
                name.pos,
                &f.field("name"),
                format!(
                    "volume name is not well formed: `{}` must match ^[a-zA-Z0-9-_]+$",
                    name.value
                ),
            );
        }
        let mut files = Vec::new();
        match secret.map(|s| (s, &s.value)) {
            Some((_, Value::Map(entries))) if !entries.is_empty() => {
                for (k, v) in entries {
                    let file = self.scalar_text(k).unwrap_or_default();
                    let field = format!("{path}.secret.{file}");
                    if file.is_empty()
                        || !file.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        self.error(
                            k.pos,
                            &field,
                            format!("file name, {file}, is not well formed: it must match ^[a-zA-Z0-9-_.]+$"),
                        );
                    }
                    let data = self.scalar_text(v).unwrap_or_default();
                    match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
                        Ok(bytes) => files.push((file, bytes)),
                        Err(e) => self.error(
                            v.pos,
                            &field,
                            format!("secret value is not valid base64: {e}"),
                        ),
                    }
                }
            }
            Some((s, _)) => self.error(
                s.pos,
                &f.field("secret"),
                "secret is empty: `secret` must map file names to base64 content",
            ),
            None => self.error(
                node.pos,
                &path,
                format!("volume `{}` needs a `secret` map (the only supported source)", name.value),
            ),
        }
        Some(Volume { name, secret: files })
    }

    fn step(
        &mut self,
        index: usize,
        node: &Node,
        d: &StepDefaults<'_>,
        volumes: &[&str],
    ) -> Option<Step> {
        let path = format!("steps[{index}]");
        let mut f = self.fields(node, path.clone(), "a step")?;

        let id = self.string(&mut f, "id").filter(|id| !id.value.is_empty());
        let kind = self.step_kind(&mut f, node.pos)?;
        let is_push = matches!(kind.value, StepKind::Push(_));
        let is_build = matches!(kind.value, StepKind::Build(_));

        let when = match f.get("when") {
            None => When::Previous,
            Some(w) => {
                let items = self.string_list(w, &f.field("when"));
                if items.is_empty() {
                    if matches!(w.value, Value::Seq(_)) {
                        self.warn(
                            w.pos,
                            &f.field("when"),
                            "`when: []` means the same as no `when` (wait for the previous step); \
                             write `when: [\"-\"]` to start with the run",
                        );
                    }
                    When::Previous
                } else if items.iter().any(|i| i.value == "-") {
                    if items.len() > 1 {
                        self.error(
                            w.pos,
                            &f.field("when"),
                            "step cannot contain other IDs in when if the immediate execution token is specified: use either [\"-\"] or a list of IDs",
                        );
                    }
                    When::Start
                } else {
                    When::After(items)
                }
            }
        };

        let timeout = self.seconds_or(&mut f, "timeout", d.step_timeout);
        let start_delay = self.seconds(&mut f, "startDelay");
        let retries = self.count(&mut f, "retries");
        let retry_delay = self.seconds_or(&mut f, "retryDelay", DEFAULT_RETRY_DELAY);
        let retry_on_errors =
            self.strings(&mut f, "retryOnErrors").into_iter().map(|s| s.value).collect();
        let repeat = self.count(&mut f, "repeat");
        let ignore_errors = self.boolean(&mut f, "ignoreErrors");
        let detach = self.boolean(&mut f, "detach");
        let keep = self.boolean(&mut f, "keep");
        let entry_point = self.string(&mut f, "entryPoint").map(|e| e.value);
        let env_pos = f.get("env").map_or(node.pos, |n| n.pos);
        let env = self.step_env(&mut f, d.env);
        let wd = self.string(&mut f, "workingDirectory");
        let disable_wd = self.boolean(&mut f, "disableWorkingDirectoryOverride");
        let working_directory = (!disable_wd).then(|| {
            wd.as_ref()
                .map_or_else(|| d.working_directory.to_string(), |w| under_workspace(&w.value))
        });
        let network = self.string(&mut f, "network").map(|n| n.value);
        let ports = self.strings(&mut f, "ports").into_iter().map(|s| s.value).collect();
        let expose = self.strings(&mut f, "expose").into_iter().map(|s| s.value).collect();
        let privileged = self.boolean(&mut f, "privileged");
        let user = self.string(&mut f, "user").map(|u| u.value);
        let isolation = self.string(&mut f, "isolation");
        let cpus = self.string(&mut f, "cpus").map(|c| c.value);
        let pull = self.boolean(&mut f, "pull");
        let cmd_download_retries = self.count(&mut f, "cmdDownloadRetries");
        let cmd_download_retry_delay = self.seconds(&mut f, "cmdDownloadRetryDelay");
        let volume_mounts = self.mounts(&mut f, volumes);
        let cache = self.cache(&mut f);

        for key in ["exitedWith", "exitedWithout"] {
            if let Some(n) = f.get(key) {
                self.warn(
                    n.pos,
                    &f.field(key),
                    format!(
                        "`{key}` is parsed but never enforced by ACR's engine; kiln ignores it too"
                    ),
                );
            }
        }
        if let Some(iso) = &isolation
            && !iso.value.eq_ignore_ascii_case("default")
        {
            self.warn(
                iso.pos,
                &f.field("isolation"),
                format!(
                    "isolation `{}` is a Windows container feature; ignored on Linux engines",
                    iso.value
                ),
            );
        }
        if is_push {
            for (k, _) in f.entries.iter() {
                let Value::Str(key) = &k.value else { continue };
                if key == "volumeMounts" {
                    self.error(
                        k.pos,
                        &f.field(key),
                        "invalid use of Mounts: volumeMounts are only allowed on cmd and build steps",
                    );
                } else if STEP_KEYS.contains(&key.as_str())
                    && !PUSH_KEYS.contains(&key.as_str())
                    && f.has(key)
                {
                    self.warn(
                        k.pos,
                        &f.field(key),
                        format!("`{key}` has no effect on a push step"),
                    );
                }
            }
        }
        if is_build {
            if pull {
                self.warn(
                    node.pos,
                    &f.field("pull"),
                    "`pull` is ignored on build steps (ACR's rule); put `--pull` in the build string",
                );
            }
            if entry_point.is_some() {
                self.warn(
                    node.pos,
                    &f.field("entryPoint"),
                    "`entryPoint` is ignored on build steps",
                );
            }
            if detach {
                self.warn(
                    node.pos,
                    &f.field("detach"),
                    "`detach` on a build step makes ACR report success before the image exists \
                     (sharp edge 23); kiln waits for the build to finish",
                );
            }
        } else if cache {
            self.warn(node.pos, &f.field("cache"), "`cache` only applies to build steps; ignored");
        }
        self.unknown_keys(&f, STEP_KEYS, "step");

        let generated = || StepId::new(format!("acb_step_{index}"));
        Some(Step {
            id: id.as_ref().map_or_else(generated, |i| StepId::new(i.value.clone())),
            pos: node.pos,
            id_pos: id.map(|i| i.pos),
            kind,
            when,
            timeout,
            start_delay,
            retries,
            retry_delay,
            retry_on_errors,
            repeat,
            ignore_errors,
            detach: detach && !is_build,
            keep,
            entry_point,
            env: At { value: env, pos: env_pos },
            working_directory,
            network,
            ports,
            expose,
            privileged,
            user,
            isolation: isolation.map(|i| i.value),
            cpus,
            pull: pull && !is_build,
            cmd_download_retries,
            cmd_download_retry_delay,
            volume_mounts,
            cache: cache && is_build,
        })
    }

    /// Exactly one of build, push and cmd (reference §2), with ACR's messages.
    fn step_kind(&mut self, f: &mut Fields<'_>, pos: Pos) -> Option<At<StepKind>> {
        let build = f.get("build");
        let push = f.get("push");
        let cmd = f.get("cmd");
        let present = [build, push, cmd].iter().filter(|n| n.is_some()).count();
        if present > 1 {
            self.error(
                pos,
                &f.path,
                "step must only contain a single build, cmd, or push property",
            );
            return None;
        }
        for (key, node, what) in [
            ("build", build, "a string of docker build arguments"),
            ("cmd", cmd, "a string `image [args…]`"),
        ] {
            let Some(n) = node else { continue };
            let Some(text) = self.scalar_text(n) else {
                self.error(
                    n.pos,
                    &f.field(key),
                    format!("`{key}` must be {what}, found {}", n.value.kind()),
                );
                return None;
            };
            if text.trim().is_empty() {
                return self.missing(pos, f);
            }
            let kind = if key == "build" { StepKind::Build(text) } else { StepKind::Cmd(text) };
            return Some(At { value: kind, pos: n.pos });
        }
        if let Some(n) = push {
            let images = self.string_list(n, &f.field("push"));
            let mut refs: Vec<String> = Vec::new();
            for img in images {
                let normalized = with_default_tag(img.value.trim());
                // ACR only looks for any `:`, so `host:5000/app` is pushed without a tag.
                if img.value.contains(['@', ':']) && normalized != img.value.trim() {
                    self.warn(
                        img.pos,
                        &f.field("push"),
                        format!(
                            "`{}` has no tag; kiln pushes `{normalized}` (ACR sees the registry port's `:` \
                             and adds no tag)",
                            img.value
                        ),
                    );
                }
                if !refs.contains(&normalized) {
                    refs.push(normalized);
                }
            }
            return (!refs.is_empty())
                .then_some(At { value: StepKind::Push(refs), pos: n.pos })
                .or_else(|| self.missing(pos, f));
        }
        self.missing(pos, f)
    }

    fn missing<T>(&mut self, pos: Pos, f: &Fields<'_>) -> Option<T> {
        self.error(pos, &f.path, "step is missing a cmd, build, or push property");
        None
    }

    /// Step env merged over the task env: the step's keys win (entries are not comma-split).
    fn step_env(&mut self, f: &mut Fields<'_>, task_env: &[EnvVar]) -> Vec<EnvVar> {
        let own: Vec<EnvVar> = self
            .strings(f, "env")
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| match e.value.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Some(EnvVar { name: k.trim().to_string(), value: v.to_string() })
                }
                _ => {
                    self.error(
                        e.pos,
                        &f.field(&format!("env[{i}]")),
                        format!(
                            "cannot parse environment variable {} correctly: expected KEY=value",
                            e.value
                        ),
                    );
                    None
                }
            })
            .collect();
        let mut merged: Vec<EnvVar> =
            task_env.iter().filter(|t| !own.iter().any(|o| o.name == t.name)).cloned().collect();
        merged.extend(own);
        merged
    }

    fn mounts(&mut self, f: &mut Fields<'_>, volumes: &[&str]) -> Vec<VolumeMount> {
        let Some(node) = f.get("volumeMounts") else { return Vec::new() };
        let path = f.field("volumeMounts");
        let Value::Seq(items) = &node.value else {
            self.error(node.pos, &path, format!("expected a list, found {}", node.value.kind()));
            return Vec::new();
        };
        let mut out: Vec<VolumeMount> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(mut m) = self.fields(item, format!("{path}[{i}]"), "a volume mount") else {
                continue;
            };
            let name = self.string(&mut m, "name").filter(|n| !n.value.is_empty());
            let mount_path = self.string(&mut m, "mountPath").filter(|p| !p.value.is_empty());
            self.unknown_keys(&m, MOUNT_KEYS, "volume mount");
            let (Some(name), Some(mount_path)) = (name, mount_path) else {
                self.error(item.pos, &m.path, "a volume mount needs both `name` and `mountPath`");
                continue;
            };
            if !volumes.contains(&name.value.as_str()) {
                self.error(
                    name.pos,
                    &m.field("name"),
                    format!(
                        "volume mount `{}` names no volume declared in the task's `volumes`",
                        name.value
                    ),
                );
            }
            if !mount_path.value.starts_with('/') {
                self.error(
                    mount_path.pos,
                    &m.field("mountPath"),
                    format!(
                        "mountPath must be an absolute path: `{}` is relative",
                        mount_path.value
                    ),
                );
            }
            if out.iter().any(|o| o.mount_path == mount_path.value) {
                self.error(
                    mount_path.pos,
                    &m.field("mountPath"),
                    format!("mountPath `{}` is used twice in this step", mount_path.value),
                );
                continue;
            }
            out.push(VolumeMount { name, mount_path: mount_path.value });
        }
        out
    }

    fn cache(&mut self, f: &mut Fields<'_>) -> bool {
        let Some(c) = self.string(f, "cache") else { return false };
        match c.value.to_ascii_lowercase().as_str() {
            "enabled" => true,
            "disabled" => false,
            _ => {
                self.error(
                    c.pos,
                    &f.field("cache"),
                    format!("invalid value for cache property. Valid values are 'enabled', 'disabled' (got `{}`)", c.value),
                );
                false
            }
        }
    }
}

struct StepDefaults<'a> {
    step_timeout: u64,
    working_directory: &'a str,
    env: &'a [EnvVar],
}

/// The closest known key, for "did you mean": same letters in another case, or a small edit.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = name.to_ascii_lowercase();
    if let Some(k) = known.iter().find(|k| k.to_ascii_lowercase() == lower) {
        return Some(k);
    }
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// ACR joins relative working directories onto `/workspace`; absolute ones are cleaned.
pub fn under_workspace(dir: &str) -> String {
    let dir = dir.trim();
    if dir.is_empty() {
        return WORKSPACE.to_string();
    }
    let joined = if dir.starts_with('/') { dir.to_string() } else { format!("{WORKSPACE}/{dir}") };
    clean_path(&joined)
}

/// Lexical cleaning like Go's `path.Clean` for absolute paths.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Appends `:latest` to a reference that has neither tag nor digest. Unlike ACR's "contains a
/// `:`" test, a registry port (`localhost:5000/app`) is not mistaken for a tag.
pub fn with_default_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Severity;
    use crate::task::yaml;

    fn parse(text: &str) -> (Option<Task>, Diagnostics) {
        let root = yaml::parse(text).expect("valid YAML");
        parse_task(&root, text, &|p| p)
    }

    fn task(text: &str) -> Task {
        let (task, diags) = parse(text);
        assert!(!diags.has_errors(), "{diags:?}");
        task.expect("a task")
    }

    fn errors(text: &str) -> Vec<String> {
        messages(text, Severity::Error)
    }

    fn warnings(text: &str) -> Vec<String> {
        messages(text, Severity::Warning)
    }

    fn messages(text: &str, severity: Severity) -> Vec<String> {
        parse(text).1.into_iter().filter(|d| d.severity == severity).map(|d| d.message).collect()
    }

    fn one_error(text: &str, expected: &str) -> Diagnostic {
        let diags: Vec<Diagnostic> = parse(text).1.into_iter().filter(|d| d.is_error()).collect();
        assert_eq!(diags.len(), 1, "{diags:#?}");
        assert!(diags[0].message.contains(expected), "{:?} lacks {expected:?}", diags[0].message);
        diags[0].clone()
    }

    mod s1_2_task_properties {
        use super::*;

        #[test]
        fn defaults() {
            let t = task("steps:\n  - cmd: busybox true\n");
            assert_eq!(t.version, Version::V1_0_0);
            assert_eq!(t.step_timeout, 600);
            assert_eq!(t.working_directory, "/workspace");
            let s = &t.steps[0];
            assert_eq!(s.id.as_str(), "acb_step_0");
            assert_eq!(s.timeout, 600);
            assert_eq!(s.retry_delay, 5);
            assert_eq!(s.working_directory.as_deref(), Some("/workspace"));
            assert_eq!(s.when, When::Previous);
        }

        #[test]
        fn version_whitelist_is_case_insensitive() {
            for v in ["v1.0.0", "V1.1.0", "1.0-PREVIEW-1"] {
                assert_eq!(
                    task(&format!("version: {v}\nsteps: [{{cmd: a}}]\n")).version.as_str(),
                    v.to_lowercase()
                );
            }
            let d = one_error("version: v2.0.0\nsteps: [{cmd: a}]\n", "invalid version specified");
            assert_eq!(d.pos, Some(Pos::new(1, 10)));
        }

        #[test]
        fn step_timeout_applies_and_non_positive_means_default() {
            let t = task(
                "stepTimeout: 900\nsteps:\n  - cmd: a\n  - cmd: b\n    timeout: 30\n  - cmd: c\n    timeout: 0\n",
            );
            assert_eq!(t.steps.iter().map(|s| s.timeout).collect::<Vec<_>>(), vec![900, 30, 900]);
            assert_eq!(task("stepTimeout: -1\nsteps: [{cmd: a}]\n").step_timeout, 600);
        }

        #[test]
        fn working_directory_relative_joins_workspace() {
            let t = task(
                "workingDirectory: src/app\nsteps:\n  - cmd: a\n  - cmd: b\n    workingDirectory: /tmp/../opt//x\n  - cmd: c\n    workingDirectory: sub\n  - cmd: d\n    disableWorkingDirectoryOverride: true\n",
            );
            let wds: Vec<_> = t.steps.iter().map(|s| s.working_directory.clone()).collect();
            assert_eq!(
                wds,
                vec![
                    Some("/workspace/src/app".into()),
                    Some("/opt/x".into()),
                    Some("/workspace/sub".into()),
                    None
                ]
            );
        }

        #[test]
        fn task_env_is_comma_split_and_step_env_wins() {
            let t = task(
                "env: [\"A=1,B=2\", \"C=3\"]\nsteps:\n  - cmd: a\n    env: [\"B=x,y\", \"D=4\"]\n",
            );
            let env: Vec<(String, String)> =
                t.steps[0].env.value.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
            let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
                v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
            };
            assert_eq!(env, pairs(&[("A", "1"), ("C", "3"), ("B", "x,y"), ("D", "4")]));
        }

        #[test]
        fn env_entries_need_an_equals_sign() {
            one_error(
                "env: [\"NOPE\"]\nsteps: [{cmd: a}]\n",
                "cannot parse task environment variable NOPE",
            );
            let d = one_error(
                "env: [\"A=1,2\"]\nsteps: [{cmd: a}]\n",
                "cannot parse task environment variable 2 correctly",
            );
            assert_eq!(d.field.as_deref(), Some("env[0]"));
            one_error(
                "steps:\n  - cmd: a\n    env: [\"=x\"]\n",
                "cannot parse environment variable =x",
            );
        }

        #[test]
        fn total_timeout_is_called_out() {
            let w = warnings("totalTimeout: 100\nsteps: [{cmd: a}]\n");
            assert!(w[0].contains("--timeout"), "{w:?}");
        }

        #[test]
        fn a_task_without_steps_runs_nothing_with_a_warning() {
            // ACR accepts all of these and runs nothing (its own test data has such files).
            for text in ["", "version: v1.1.0\n", "steps: []\n", "steps:\n", "secrets: []\n"] {
                let t = task(text);
                assert!(t.steps.is_empty(), "{text:?}");
                let w = warnings(text);
                assert_eq!(w.len(), 1, "{text:?}: {w:?}");
                assert!(w[0].contains("the run does nothing and succeeds"), "{text:?}: {w:?}");
            }
            one_error("steps: {cmd: a}\n", "expected a list, found a mapping");
            one_error("- cmd: a\n", "must be a mapping");
        }

        #[test]
        fn alias_without_v1_1_0_warns() {
            assert!(
                warnings("alias:\n  values: {a: b}\nsteps: [{cmd: a}]\n")[0].contains("v1.1.0")
            );
        }
    }

    mod s1_3_nested_objects {
        use super::*;

        #[test]
        fn secrets_are_validated() {
            let ok = "secrets:\n  - id: db\n    keyvault: https://v.vault.azure.net/secrets/db\n    clientID: 3ec6a8a5-0ac2-4d4a-9a36-1b2f3c4d5e6f\nsteps: [{cmd: a}]\n";
            assert_eq!(task(ok).secrets[0].id.value, "db");
            one_error(
                "secrets:\n  - keyvault: https://v.vault.azure.net/secrets/db\nsteps: [{cmd: a}]\n",
                "needs an `id`",
            );
            one_error(
                "secrets:\n  - id: a b\n    keyvault: https://v/secrets/x\nsteps: [{cmd: a}]\n",
                "spaces",
            );
            one_error(
                "secrets:\n  - id: db\nsteps: [{cmd: a}]\n",
                "secret should contain either keyvault",
            );
            one_error(
                "secrets:\n  - id: db\n    keyvault: https://v/secrets/x\n    clientID: nope\nsteps: [{cmd: a}]\n",
                "msi client ID is not a valid guid",
            );
            one_error(
                "secrets:\n  - id: db\n    keyvault: ftp://x\nsteps: [{cmd: a}]\n",
                "Key Vault secret URL",
            );
            let d = one_error(
                "secrets:\n  - id: db\n    keyvault: https://v/secrets/x\n  - id: db\n    keyvault: https://v/secrets/y\nsteps: [{cmd: a}]\n",
                "duplicate secret ID `db` (first defined at line 2)",
            );
            assert_eq!(d.pos.map(|p| p.line), Some(4));
        }

        #[test]
        fn networks_parse_and_warn_without_default() {
            let t = task(
                "networks:\n  - name: n1\n    driver: bridge\n    ipv6: true\n    skipCreation: yes\n    isDefault: true\nsteps: [{cmd: a}]\n",
            );
            assert_eq!(
                t.networks[0],
                Network {
                    name: "n1".into(),
                    driver: Some("bridge".into()),
                    ipv6: true,
                    skip_creation: true,
                    is_default: true
                }
            );
            assert!(
                warnings("networks:\n  - name: n1\nsteps: [{cmd: a}]\n")[0].contains("isDefault")
            );
            one_error(
                "networks:\n  - driver: bridge\nsteps: [{cmd: a}]\n",
                "name must be specified",
            );
        }

        #[test]
        fn volumes_and_mounts() {
            let t = task(
                "volumes:\n  - name: certs\n    secret:\n      tls.crt: aGVsbG8=\nsteps:\n  - cmd: a\n    volumeMounts:\n      - name: certs\n        mountPath: /run/certs\n",
            );
            assert_eq!(t.volumes[0].secret, vec![("tls.crt".to_string(), b"hello".to_vec())]);
            assert_eq!(t.steps[0].volume_mounts[0].mount_path, "/run/certs");

            one_error(
                "volumes:\n  - name: bad/name\n    secret: {a: aGk=}\nsteps: [{cmd: a}]\n",
                "volume name is not well formed",
            );
            one_error(
                "volumes:\n  - name: v\n    secret: {\"a b\": aGk=}\nsteps: [{cmd: a}]\n",
                "file name, a b, is not well formed",
            );
            one_error(
                "volumes:\n  - name: v\n    secret: {}\nsteps: [{cmd: a}]\n",
                "secret is empty",
            );
            one_error("volumes:\n  - name: v\nsteps: [{cmd: a}]\n", "needs a `secret`");
            one_error(
                "volumes:\n  - name: v\n    secret: {a: \"!!notbase64\"}\nsteps: [{cmd: a}]\n",
                "base64",
            );
            one_error(
                "volumes:\n  - name: v\n    secret: {a: aGk=}\n  - name: v\n    secret: {a: aGk=}\nsteps: [{cmd: a}]\n",
                "duplicate volume name",
            );
            let base = "volumes:\n  - name: v\n    secret: {a: aGk=}\nsteps:\n  - cmd: a\n    volumeMounts:\n";
            one_error(
                &format!("{base}      - name: w\n        mountPath: /x\n"),
                "names no volume",
            );
            one_error(
                &format!("{base}      - name: v\n        mountPath: rel\n"),
                "mountPath must be an absolute path",
            );
            one_error(&format!("{base}      - name: v\n"), "both `name` and `mountPath`");
            one_error(
                &format!(
                    "{base}      - name: v\n        mountPath: /x\n      - name: v\n        mountPath: /x\n"
                ),
                "used twice",
            );
            one_error(
                "volumes:\n  - name: v\n    secret: {a: aGk=}\nsteps:\n  - push: [x]\n    volumeMounts:\n      - name: v\n        mountPath: /x\n",
                "invalid use of Mounts",
            );
        }
    }

    mod s2_step_types {
        use super::*;

        #[test]
        fn exactly_one_of_build_push_cmd() {
            let d = one_error(
                "steps:\n  - id: a\n    when: [\"-\"]\n",
                "step is missing a cmd, build, or push property",
            );
            assert_eq!(d.pos, Some(Pos::new(2, 5)));
            assert_eq!(d.field.as_deref(), Some("steps[0]"));
            one_error(
                "steps:\n  - cmd: a\n    build: .\n",
                "step must only contain a single build, cmd, or push property",
            );
            one_error("steps:\n  - cmd: \"\"\n", "missing a cmd");
            one_error("steps:\n  - push: []\n", "missing a cmd");
        }

        #[test]
        fn push_refs_get_latest_and_are_deduplicated() {
            let t = task(
                "steps:\n  - push: [\"r.io/a\", \"r.io/a:latest\", \"r.io/b:1\", \"r.io/c@sha256:00\", \"localhost:5000/d\"]\n",
            );
            let StepKind::Push(refs) = &t.steps[0].kind.value else { panic!() };
            assert_eq!(
                refs,
                &["r.io/a:latest", "r.io/b:1", "r.io/c@sha256:00", "localhost:5000/d:latest"]
            );
            assert!(
                warnings("steps:\n  - push: [\"localhost:5000/d\"]\n")[0].contains("registry port")
            );
        }

        #[test]
        fn push_ignores_run_properties_with_a_warning() {
            let w = warnings("steps:\n  - push: [a]\n    retries: 3\n");
            assert!(w[0].contains("`retries` has no effect on a push step"), "{w:?}");
        }

        #[test]
        fn scalar_types_follow_go_yaml() {
            let t = task(
                "steps:\n  - cmd: a\n    cpus: 1.50\n    ports: [8080, \"9090:90\"]\n    user: 1000\n",
            );
            assert_eq!(t.steps[0].cpus.as_deref(), Some("1.50"));
            assert_eq!(t.steps[0].ports, vec!["8080", "9090:90"]);
            assert_eq!(t.steps[0].user.as_deref(), Some("1000"));
            one_error("steps:\n  - cmd: [a, b]\n", "`cmd` must be a string");
        }
    }

    mod s3_step_properties {
        use super::*;

        #[test]
        fn every_property_parses() {
            let t = task(concat!(
                "steps:\n",
                "  - id: s\n    cmd: busybox echo\n    when: [\"-\"]\n    timeout: 30\n    startDelay: 2\n",
                "    retries: 3\n    retryDelay: 1\n    retryOnErrors: [\"flaky\"]\n    repeat: 2\n",
                "    ignoreErrors: true\n    detach: true\n    keep: true\n    entryPoint: sh\n",
                "    env: [\"A=1\"]\n    workingDirectory: /src\n    network: host\n    ports: [\"80:80\"]\n",
                "    expose: [\"80\"]\n    privileged: true\n    user: root\n    isolation: default\n",
                "    cpus: \"2\"\n    pull: true\n    cmdDownloadRetries: 2\n    cmdDownloadRetryDelay: 3\n",
            ));
            let s = &t.steps[0];
            assert_eq!(s.id.as_str(), "s");
            assert_eq!(s.when, When::Start);
            assert_eq!(
                (s.timeout, s.start_delay, s.retries, s.retry_delay, s.repeat),
                (30, 2, 3, 1, 2)
            );
            assert_eq!(s.retry_on_errors, vec!["flaky"]);
            assert!(s.ignore_errors && s.detach && s.keep && s.privileged && s.pull);
            assert_eq!(s.entry_point.as_deref(), Some("sh"));
            assert_eq!(s.working_directory.as_deref(), Some("/src"));
            assert_eq!(s.network.as_deref(), Some("host"));
            assert_eq!(
                (s.ports.clone(), s.expose.clone()),
                (vec!["80:80".to_string()], vec!["80".to_string()])
            );
            assert_eq!(
                (s.user.as_deref(), s.isolation.as_deref(), s.cpus.as_deref()),
                (Some("root"), Some("default"), Some("2"))
            );
            assert_eq!((s.cmd_download_retries, s.cmd_download_retry_delay), (2, 3));
        }

        #[test]
        fn retry_delay_non_positive_is_five() {
            let t = task("steps:\n  - cmd: a\n    retryDelay: 0\n  - cmd: b\n    retryDelay: -3\n");
            assert!(t.steps.iter().all(|s| s.retry_delay == 5));
        }

        #[test]
        fn negative_counts_are_errors() {
            let d = one_error(
                "steps:\n  - cmd: a\n    retries: -1\n",
                "step must specify retries >= 0",
            );
            assert_eq!(
                (d.pos, d.field.as_deref()),
                (Some(Pos::new(3, 14)), Some("steps[0].retries"))
            );
            one_error("steps:\n  - cmd: a\n    repeat: -2\n", "step must specify repeat >= 0");
            one_error("steps:\n  - cmd: a\n    retries: \"3\"\n", "remove the quotes");
            one_error("steps:\n  - cmd: a\n    detach: \"true\"\n", "remove the quotes");
        }

        #[test]
        fn unknown_keys_warn_with_the_closest_key() {
            let text = "steps:\n  - cmd: a\n    timeOut: 7\n    retrys: 2\n    whatever: 1\n    secret: x\n";
            let (_, diags) = parse(text);
            let w: Vec<&Diagnostic> = diags.iter().collect();
            assert_eq!(w.len(), 4, "{w:#?}");
            assert_eq!(w[0].pos, Some(Pos::new(3, 5)));
            assert!(
                w[0].message.contains("unknown step property `timeOut`")
                    && w[0].message.contains("did you mean `timeout`?")
            );
            assert!(w[1].message.contains("did you mean `retries`?"));
            assert!(!w[2].message.contains("did you mean"));
            assert!(w[3].message.contains("unknown step property `secret`: ACR's docs list it"));
            let top = warnings("verison: v1.1.0\nsteps: [{cmd: a}]\n");
            assert!(
                top[0].contains("unknown task property `verison`") && top[0].contains("`version`")
            );
        }

        #[test]
        fn cache_values() {
            assert!(task("steps:\n  - build: .\n    cache: Enabled\n").steps[0].cache);
            assert!(warnings("steps:\n  - build: .\n    cache: Enabled\n").is_empty());
            assert!(warnings("steps:\n  - build: .\n    cache: disabled\n").is_empty());
            assert!(!task("steps:\n  - build: .\n    cache: disabled\n").steps[0].cache);
            one_error(
                "steps:\n  - build: .\n    cache: maybe\n",
                "invalid value for cache property",
            );
        }

        #[test]
        fn no_op_properties_warn() {
            assert!(
                warnings("steps:\n  - cmd: a\n    exitedWith: [0]\n")[0].contains("never enforced")
            );
            assert!(warnings("steps:\n  - cmd: a\n    isolation: hyperv\n")[0].contains("Windows"));
            assert!(warnings("steps:\n  - build: .\n    pull: true\n")[0].contains("--pull"));
            assert!(
                warnings("steps:\n  - build: .\n    detach: true\n")[0].contains("sharp edge 23")
            );
            assert!(
                warnings("steps:\n  - cmd: a\n    startDelay: -1\n")[0].contains("treated as 0")
            );
        }

        #[test]
        fn when_forms() {
            let t = task(
                "steps:\n  - id: a\n    cmd: x\n  - id: b\n    cmd: x\n    when: [\"-\"]\n  - cmd: x\n    when: [a, b]\n  - cmd: x\n    when: []\n",
            );
            assert_eq!(t.steps[1].when, When::Start);
            let When::After(ids) = &t.steps[2].when else { panic!() };
            assert_eq!(ids.iter().map(|i| i.value.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
            assert_eq!(t.steps[3].when, When::Previous);
            one_error(
                "steps:\n  - id: a\n    cmd: x\n  - cmd: x\n    when: [\"-\", a]\n",
                "immediate execution token",
            );
            one_error("steps:\n  - cmd: x\n    when: a\n", "write it as a list");
        }
    }

    #[test]
    fn errors_are_all_reported_at_once() {
        let e =
            errors("steps:\n  - cmd: a\n    retries: -1\n  - id: x\n  - cmd: b\n    cache: x\n");
        assert_eq!(e.len(), 3, "{e:?}");
    }
}
