//! The plan: the rendered, Docker-free description of one run that a worker executes.
//!
//! Every default is already applied, every template rendered and every alias expanded; step
//! dependencies are explicit. Durations are whole seconds, as in ACR task files, so a plan
//! serializes to JSON that reads like the task it came from.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A run's identifier. Opaque everywhere but where it is issued (`kiln::run_id`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A step's identifier: unique within a run, the step's DNS name on the run network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One run, ready to execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub run_id: RunId,
    /// In task-file order; a step depends only on steps before it.
    pub steps: Vec<PlanStep>,
    /// Networks the task declared. Empty: the worker creates a network of its own for the run
    /// and attaches every step without an explicit `network` to it.
    pub networks: Vec<Network>,
    /// Named volumes filled from secret data, mounted by steps' `volume_mounts`.
    pub volumes: Vec<SecretVolume>,
    /// Values that must never appear in logs (`--set-secret` values, resolved task secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<String>,
    /// The run's registry (`.Run.Registry`): where a build step's registry cache goes when none
    /// of its `-t` names a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The task's name (`.Run.TaskName`), `None` for a quick run: part of a build step's cache
    /// tag (`cache_<task>_<step>`, `quickrun` standing in for `None`, as in ACR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    /// Registry logins for pulls, builds and pushes, by registry host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<RegistryCredential>,
    /// The identity for SSH git remotes of build steps (`build … git@host:repo.git`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ssh: Option<GitSsh>,
    /// The most a build step's remote tarball context may take, downloaded and unpacked, in
    /// bytes (`kiln serve --max-context-mb`); `None`: no limit (`kiln exec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_limit: Option<u64>,
    /// The run's platform (`os/arch[/variant]`): `cmd` containers are created as it and
    /// `build` steps without their own `--platform` build for it. A server's run always has one
    /// (its request's, else linux/amd64); `None` (`kiln exec` without `--platform`): the engine
    /// decides from each image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// The SSH identity git fetches use, and the host keys they trust.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitSsh {
    /// An OpenSSH private key, unencrypted.
    pub private_key: String,
    /// The text of a `known_hosts` file: a host whose key is not in it is refused.
    pub known_hosts: String,
    /// Where `known_hosts` was read from, for the refusal's advice.
    pub known_hosts_file: String,
}

/// Why a text is not a private key an unattended fetch can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivateKeyError {
    #[error("not an OpenSSH private key")]
    NotAKey,
    #[error(
        "the key is protected by a passphrase, which no one is there to type when a run fetches: \
         use a key without one (`ssh-keygen -p -N '' -f COPY` removes it from a copy)"
    )]
    Encrypted,
}

impl GitSsh {
    /// Checks that `text` is a PEM-armoured private key without a passphrase (OpenSSH's own
    /// format, or PEM/PKCS#8), so a bad key is refused when it is given, not when a run fetches.
    pub fn check_private_key(text: &str) -> Result<(), PrivateKeyError> {
        use base64::Engine as _;
        let mut lines = text.lines().map(str::trim);
        let begin = lines
            .find(|l| l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----"))
            .ok_or(PrivateKeyError::NotAKey)?;
        let body: Vec<&str> = lines.take_while(|l| !l.starts_with("-----END ")).collect();
        // PKCS#8 says so in the armour, legacy PEM in a header.
        if begin.contains("ENCRYPTED") || body.iter().any(|l| l.contains("Proc-Type: 4,ENCRYPTED"))
        {
            return Err(PrivateKeyError::Encrypted);
        }
        if begin != "-----BEGIN OPENSSH PRIVATE KEY-----" {
            return Ok(());
        }
        // openssh-key-v1: the magic, then the cipher's name as a length-prefixed string.
        let blob = base64::engine::general_purpose::STANDARD
            .decode(body.concat())
            .map_err(|_| PrivateKeyError::NotAKey)?;
        let rest = blob.strip_prefix(b"openssh-key-v1\0").ok_or(PrivateKeyError::NotAKey)?;
        let len = rest.get(..4).ok_or(PrivateKeyError::NotAKey)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        match rest.get(4..4 + len) {
            Some(b"none") => Ok(()),
            Some(_) => Err(PrivateKeyError::Encrypted),
            None => Err(PrivateKeyError::NotAKey),
        }
    }
}

impl fmt::Debug for GitSsh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitSsh")
            .field("private_key", &"***")
            .field("known_hosts_file", &self.known_hosts_file)
            .finish()
    }
}

impl Plan {
    /// A plan of `steps` and nothing else: no declared networks, volumes, secrets, registry,
    /// logins or platform.
    pub fn new(run_id: RunId, steps: Vec<PlanStep>) -> Self {
        Plan {
            run_id,
            steps,
            networks: Vec::new(),
            volumes: Vec::new(),
            masked: Vec::new(),
            registry: None,
            task_name: None,
            credentials: Vec::new(),
            git_ssh: None,
            context_limit: None,
            platform: None,
        }
    }

    /// Whether the run gets a network of its own (no declared network `isDefault`), the one
    /// a [`crate::RunOptions::network`] spare can stand in for.
    pub fn uses_run_network(&self) -> bool {
        !self.networks.iter().any(|n| n.is_default)
    }
}

/// Basic-auth login to one registry.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredential {
    /// `host[:port]`, as in image references.
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    pub id: StepId,
    pub action: Action,
    /// Steps that must have succeeded (or failed with `ignore_errors`) before this one starts;
    /// empty means it starts with the run.
    pub depends_on: Vec<StepId>,
    pub env: Vec<EnvVar>,
    /// `None` when `disableWorkingDirectoryOverride` leaves the image's own `WORKDIR`.
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Explicit network; `None` means the run's default network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Wall-clock limit covering every retry and repetition.
    pub timeout_secs: u64,
    /// Sleep before the step; outside `timeout_secs`.
    #[serde(default)]
    pub start_delay_secs: u64,
    #[serde(default)]
    pub retries: u32,
    pub retry_delay_secs: u64,
    /// Retry only when the output contains one of these; empty retries on any failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on_errors: Vec<String>,
    /// Extra repetitions: the step runs `repeat + 1` times.
    #[serde(default)]
    pub repeat: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_errors: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detach: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep: bool,
    /// Pull the image before running even when it is present (`cmd` steps only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<Pull>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Registry-backed build cache (`cache: enabled`): the build pulls its cache image before
    /// and pushes it after (see [`Plan::registry`], [`Plan::task_name`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
}

impl PlanStep {
    /// A step doing `action` with ACR's defaults (600 s timeout, 5 s retry delay, working
    /// directory `/workspace`) and nothing else set: the shape of a `--cmd` quick run.
    pub fn new(id: StepId, action: Action) -> Self {
        Self {
            id,
            action,
            depends_on: Vec::new(),
            env: Vec::new(),
            working_directory: Some("/workspace".to_string()),
            entry_point: None,
            user: None,
            privileged: false,
            network: None,
            ports: Vec::new(),
            expose: Vec::new(),
            cpus: None,
            isolation: None,
            timeout_secs: 600,
            start_delay_secs: 0,
            retries: 0,
            retry_delay_secs: 5,
            retry_on_errors: Vec::new(),
            repeat: 0,
            ignore_errors: false,
            detach: false,
            keep: false,
            pull: None,
            volume_mounts: Vec::new(),
            cache: false,
        }
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `docker build` arguments, split shell-style.
    Build { args: Vec<String> },
    /// Image references to push, each with a tag or digest.
    Push { images: Vec<String> },
    /// Run `image` with `args` (no shell in between).
    Cmd { image: String, args: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    pub retries: u32,
    pub retry_delay_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default)]
    pub ipv6: bool,
    /// The network exists already: neither create nor remove it.
    #[serde(default)]
    pub skip_creation: bool,
    /// Steps without an explicit `network` join this one.
    #[serde(default)]
    pub is_default: bool,
}

/// A named volume whose files are decoded secret data (file name → content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVolume {
    pub name: String,
    pub files: Vec<SecretFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretFile {
    pub name: String,
    /// Decoded bytes, base64 again in JSON so binary secrets survive.
    pub content_base64: String,
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    /// An OpenSSH-format key whose cipher is `cipher` (the rest of the blob is not read).
    fn openssh(cipher: &str) -> String {
        let mut blob = b"openssh-key-v1\0".to_vec();
        blob.extend((cipher.len() as u32).to_be_bytes());
        blob.extend(cipher.as_bytes());
        blob.extend([0u8; 16]);
        let body = base64::engine::general_purpose::STANDARD.encode(blob);
        format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n")
    }

    #[test]
    fn private_keys_without_a_passphrase_only() {
        assert_eq!(GitSsh::check_private_key(&openssh("none")), Ok(()));
        let encrypted = Err(PrivateKeyError::Encrypted);
        assert_eq!(GitSsh::check_private_key(&openssh("aes256-ctr")), encrypted);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(GitSsh::check_private_key(pem), Ok(()));
        let legacy =
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES\n\nMIIE\n";
        assert_eq!(GitSsh::check_private_key(legacy), encrypted);
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n-----END ENCRYPTED PRIVATE KEY-----";
        assert_eq!(GitSsh::check_private_key(pkcs8), encrypted);
        for bad in ["ssh-ed25519 AAAA kiln", "", "-----BEGIN OPENSSH PRIVATE KEY-----\n!!\n"] {
            assert_eq!(GitSsh::check_private_key(bad), Err(PrivateKeyError::NotAKey), "{bad:?}");
        }
    }
}
