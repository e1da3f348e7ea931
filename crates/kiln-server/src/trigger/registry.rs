//! Base-image tags (issue 6): which manifest digest a tag in a registry points at now. The
//! polling loop compares the answer with the digest a run recorded, so this module owns the
//! registry side of that question and nothing else: URL, scheme, media types and the
//! authentication dance of the distribution API (reference §5.2), blocking, over `ureq`.
//!
//! * `HEAD {scheme}://{host}/v2/{repository}/manifests/{tag}` with an `Accept` header listing
//!   [`MANIFEST_MEDIA_TYPES`], so a multi-platform tag answers with its list/index digest, the
//!   one `docker build` resolved; the digest is the `Docker-Content-Digest` header, or the
//!   sha256 of the body of a `GET` when a registry leaves the header out (or refuses `HEAD`).
//!   For a platform ([`resolve`]), a list is read with a `GET` (once per list digest: the body
//!   is kept) and its entry for the platform is the answer, the list's digest kept beside it.
//! * Loopback registries (`127.0.0.0/8`, `[::1]`, `localhost`) are spoken to over plain HTTP,
//!   as Docker does by default, every other one over HTTPS. Docker Hub's names
//!   (`registry.hub.docker.com`, `docker.io`, `index.docker.io`) go to `registry-1.docker.io`,
//!   and a one-part Docker Hub repository is an official image (`busybox` → `library/busybox`).
//! * A 401 is answered once, from its `WWW-Authenticate` challenge: `Basic` with the given
//!   credentials, `Bearer` with a token from the challenge's realm (asked with the credentials,
//!   or anonymously without them).
//!
//! Every error names the image (`registry/repository:tag`) and never holds a credential: no
//! message is built from the password, the basic-auth value or a bearer token, and text that
//! comes from the network (statuses' bodies, challenges, transport errors) is scrubbed of the
//! password and the basic-auth value before it goes into one.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use ureq::Body;
use ureq::http::Response;

use kiln_plan::manifest_list;

/// The manifest media types a tag may point at, in the `Accept` header's order: Docker image
/// manifest v2, Docker manifest list, OCI image manifest, OCI image index.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

/// The largest manifest (or token answer) read: registries cap manifests at 4 MiB.
const MAX_BODY: u64 = 4 * 1024 * 1024;

/// One tag of one repository in one registry, as ACR's dependency report stores a base image.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagRef {
    /// `127.0.0.1:5000`, `registry.hub.docker.com`, `myreg.example.com:443`.
    pub registry: String,
    /// `library/busybox`, `team/app`.
    pub repository: String,
    pub tag: String,
}

impl fmt::Display for TagRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// A registry login.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Why the current digest of a tag is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("{image}: {what} `{value}` is not valid in an image reference")]
    InvalidReference { image: String, what: &'static str, value: String },
    #[error("{image}: not found (the registry has no such repository or tag)")]
    NotFound { image: String },
    #[error(
        "{image}: the registry requires credentials (or the repository does not exist) and \
         none are configured for {registry}"
    )]
    CredentialsRequired { image: String, registry: String },
    #[error("{image}: the registry refused access to user `{username}` (HTTP {status})")]
    Refused { image: String, username: String, status: u16 },
    #[error("{image}: access denied without credentials (HTTP 403)")]
    Denied { image: String },
    #[error(
        "{image}: the registry's authentication challenge `{challenge}` is not Basic or a Bearer \
         with a realm"
    )]
    Challenge { image: String, challenge: String },
    #[error("{image}: the token service {realm} {reason}")]
    Token { image: String, realm: String, reason: String },
    #[error("{image}: {url}: no answer within {timeout:?}")]
    Timeout { image: String, url: String, timeout: Duration },
    #[error("{image}: {url}: {reason}")]
    Transport { image: String, url: String, reason: String },
    #[error("{image}: {url} answered HTTP {status}{detail}")]
    Status { image: String, url: String, status: u16, detail: String },
    #[error("{image}: the registry answered a malformed digest `{value}`")]
    BadDigest { image: String, value: String },
    #[error("{image}: {reason}")]
    List { image: String, reason: String },
}

/// The manifest digest (`sha256:<hex>`) `tag` points at now, within `timeout` for the whole
/// exchange (authentication included). Blocking: async callers use `spawn_blocking`.
pub fn current_digest(
    tag: &TagRef,
    auth: Option<&RegistryAuth>,
    timeout: Duration,
) -> Result<String, RegistryError> {
    lookup(tag, auth, timeout, true)
}

/// What a tag points at for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The image manifest the platform runs: the tag's own, or its list's entry.
    pub digest: String,
    /// The manifest list / OCI index the tag points at, when it is one: what the engine
    /// records for a base image it pulled by tag (`RepoDigests`).
    pub index: Option<String>,
}

/// [`current_digest`] for `platform` (`os/arch[/variant]`): a tag pointing at a manifest list
/// or OCI index resolves to the list's entry for the platform ([`manifest_list`]), which costs
/// one `GET` of the list after the `HEAD`.
pub fn resolve(
    tag: &TagRef,
    auth: Option<&RegistryAuth>,
    timeout: Duration,
    platform: &str,
) -> Result<Resolved, RegistryError> {
    let session = Session::new(tag, auth, timeout)?;
    let mut authorization = None;
    let head = session.head(&mut authorization)?;
    if let Some((digest, media_type)) = &head
        && !manifest_list::INDEX_MEDIA_TYPES.contains(&media_type.as_str())
    {
        return Ok(Resolved { digest: digest.clone(), index: None });
    }
    let known =
        head.and_then(|(digest, _)| read_lists().get(&digest).cloned().map(|b| (digest, b)));
    let (digest, body) = match known {
        Some(known) => known,
        None => {
            let body = session.get(&mut authorization)?;
            (body_digest(&body), body)
        }
    };
    let entry = manifest_list::entry_for(&body, platform).map_err(|e| RegistryError::List {
        image: session.image.clone(),
        reason: session.scrub(&e.to_string()),
    })?;
    Ok(match entry {
        Some(entry) => {
            let mut lists = read_lists();
            if lists.len() >= LISTS_KEPT {
                lists.clear();
            }
            lists.insert(digest.clone(), body);
            Resolved { digest: session.checked_digest(&entry)?, index: Some(digest) }
        }
        None => Resolved { digest, index: None },
    })
}

/// Lists [`resolve`] read, by digest: content-addressed, so never stale, and a poll `GET`s a
/// list only when its tag moved (Docker Hub counts every manifest `GET`, not a `HEAD`, against
/// its pull rate limit). At most [`LISTS_KEPT`], emptied when full.
static LISTS: std::sync::Mutex<BTreeMap<String, Vec<u8>>> = std::sync::Mutex::new(BTreeMap::new());

/// Lists kept: a few kilobytes each, and a server watches few multi-platform tags.
const LISTS_KEPT: usize = 256;

fn read_lists() -> std::sync::MutexGuard<'static, BTreeMap<String, Vec<u8>>> {
    // Whatever panicked while holding it, the map of digests to their bodies stays true.
    LISTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`current_digest`]; `head` false skips the `HEAD` and hashes the `GET` body straight away.
fn lookup(
    tag: &TagRef,
    auth: Option<&RegistryAuth>,
    timeout: Duration,
    head: bool,
) -> Result<String, RegistryError> {
    let session = Session::new(tag, auth, timeout)?;
    let mut authorization = None;
    if head && let Some((digest, _)) = session.head(&mut authorization)? {
        return Ok(digest);
    }
    Ok(body_digest(&session.get(&mut authorization)?))
}

fn body_digest(body: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(body)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Head,
    Get,
}

/// One question to one registry: the image's name for messages, the URL, the credentials and
/// the deadline.
struct Session<'a> {
    image: String,
    registry: &'a str,
    repository: String,
    url: String,
    auth: Option<&'a RegistryAuth>,
    /// What must never appear in a message: the password and the basic-auth header value.
    secrets: Vec<String>,
    timeout: Duration,
    deadline: Instant,
    agent: ureq::Agent,
}

impl<'a> Session<'a> {
    fn new(
        tag: &'a TagRef,
        auth: Option<&'a RegistryAuth>,
        timeout: Duration,
    ) -> Result<Session<'a>, RegistryError> {
        let image = tag.to_string();
        let invalid = |what, value: &str| RegistryError::InvalidReference {
            image: image.clone(),
            what,
            value: value.to_string(),
        };
        if !valid_registry(&tag.registry) {
            return Err(invalid("registry", &tag.registry));
        }
        if !valid_repository(&tag.repository) {
            return Err(invalid("repository", &tag.repository));
        }
        if !valid_tag(&tag.tag) {
            return Err(invalid("tag", &tag.tag));
        }
        let host = api_host(&tag.registry);
        let repository = api_repository(&tag.registry, &tag.repository);
        let url = format!("{}://{host}/v2/{repository}/manifests/{}", scheme(host), tag.tag);
        let mut secrets = Vec::new();
        if let Some(auth) = auth.filter(|a| !a.password.is_empty()) {
            secrets.push(auth.password.clone());
            secrets.push(basic_credentials(auth));
        }
        let agent = ureq::Agent::config_builder()
            // 401, 404 and the rest are answers to read, not transport failures.
            .http_status_as_error(false)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Session {
            image,
            registry: &tag.registry,
            repository,
            url,
            auth,
            secrets,
            timeout,
            deadline: Instant::now() + timeout,
            agent,
        })
    }

    /// The tag's digest and media type from a `HEAD`, or `None` when the registry leaves the
    /// digest out or does not answer `HEAD` (a `GET` then). Not a `GET` on other errors: Docker
    /// Hub counts a GET against its pull rate limit, a HEAD it does not.
    fn head(
        &self,
        authorization: &mut Option<String>,
    ) -> Result<Option<(String, String)>, RegistryError> {
        match self.manifest(Method::Head, authorization) {
            Ok(head) => match header(&head, "docker-content-digest") {
                Some(value) => {
                    let media_type = header(&head, "content-type").unwrap_or_default();
                    let media_type = media_type.split(';').next().unwrap_or_default().trim();
                    Ok(Some((self.checked_digest(value.trim())?, media_type.to_string())))
                }
                None => Ok(None),
            },
            Err(RegistryError::Status { status: 405, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The tag's manifest, as the registry sends it.
    fn get(&self, authorization: &mut Option<String>) -> Result<Vec<u8>, RegistryError> {
        let mut get = self.manifest(Method::Get, authorization)?;
        get.body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.transport(&self.url, e))
    }

    /// The manifest request, answering one 401 challenge; `authorization` keeps the header
    /// that worked for the next request. Only a 2xx answer is `Ok`.
    fn manifest(
        &self,
        method: Method,
        authorization: &mut Option<String>,
    ) -> Result<Response<Body>, RegistryError> {
        let accept = MANIFEST_MEDIA_TYPES.join(", ");
        let mut response = self.send(method, &self.url, &accept, authorization.as_deref())?;
        if response.status().as_u16() == 401 && authorization.is_none() {
            let answer = self.answer(&response)?;
            response = self.send(method, &self.url, &accept, Some(&answer))?;
            *authorization = Some(answer);
        }
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(response),
            401 | 403 => Err(self.refused(status)),
            404 => Err(RegistryError::NotFound { image: self.image.clone() }),
            _ => {
                let detail = self.detail(&mut response);
                Err(RegistryError::Status {
                    image: self.image.clone(),
                    url: self.url.clone(),
                    status,
                    detail,
                })
            }
        }
    }

    /// The `Authorization` header answering the response's `WWW-Authenticate` challenge.
    fn answer(&self, response: &Response<Body>) -> Result<String, RegistryError> {
        let challenges: Vec<&str> = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let parsed: Vec<Challenge> = challenges.iter().filter_map(|c| parse_challenge(c)).collect();
        let bearer = parsed.iter().find(|c| matches!(c, Challenge::Bearer { .. }));
        match bearer.or_else(|| parsed.iter().find(|c| **c == Challenge::Basic)) {
            Some(Challenge::Basic) => match self.auth {
                Some(auth) => Ok(format!("Basic {}", basic_credentials(auth))),
                None => Err(self.refused(401)),
            },
            Some(Challenge::Bearer { realm, service, scope }) => {
                let scope = scope.clone().unwrap_or(format!("repository:{}:pull", self.repository));
                let token = self.token(realm, service.as_deref(), &scope)?;
                Ok(format!("Bearer {token}"))
            }
            None => Err(RegistryError::Challenge {
                image: self.image.clone(),
                challenge: self.scrub(&challenges.join(", ")),
            }),
        }
    }

    /// A bearer token from the challenge's realm, asked with the credentials if there are any.
    fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let url = token_url(realm, service, scope);
        let failed = |reason: String| RegistryError::Token {
            image: self.image.clone(),
            realm: self.scrub(realm),
            reason,
        };
        let basic = self.auth.map(|a| format!("Basic {}", basic_credentials(a)));
        let mut response = self.send(Method::Get, &url, "application/json", basic.as_deref())?;
        let status = response.status().as_u16();
        match status {
            200..=299 => {}
            401 | 403 => return Err(self.refused(status)),
            _ => {
                let detail = self.detail(&mut response);
                return Err(failed(format!("answered HTTP {status}{detail}")));
            }
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| self.transport(&url, e))?;
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| failed(format!("answered something that is not JSON ({e})")))?;
        ["token", "access_token"]
            .iter()
            .filter_map(|key| answer.get(key).and_then(|v| v.as_str()))
            .find(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| failed("answered without a `token` or `access_token`".to_string()))
    }

    fn send(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        authorization: Option<&str>,
    ) -> Result<Response<Body>, RegistryError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.timed_out(url));
        }
        let result = match method {
            Method::Head => {
                let mut request = self.agent.head(url).header("Accept", accept);
                if let Some(value) = authorization {
                    request = request.header("Authorization", value);
                }
                request.config().timeout_global(Some(remaining)).build().call()
            }
            Method::Get => {
                let mut request = self.agent.get(url).header("Accept", accept);
                if let Some(value) = authorization {
                    request = request.header("Authorization", value);
                }
                request.config().timeout_global(Some(remaining)).build().call()
            }
        };
        result.map_err(|e| self.transport(url, e))
    }

    /// A 401 or 403 in words: whose credentials were refused, or that some are needed.
    fn refused(&self, status: u16) -> RegistryError {
        match (self.auth, status) {
            (Some(auth), _) => RegistryError::Refused {
                image: self.image.clone(),
                username: auth.username.clone(),
                status,
            },
            (None, 403) => RegistryError::Denied { image: self.image.clone() },
            (None, _) => RegistryError::CredentialsRequired {
                image: self.image.clone(),
                registry: self.registry.to_string(),
            },
        }
    }

    fn checked_digest(&self, value: &str) -> Result<String, RegistryError> {
        if valid_digest(value) {
            Ok(value.to_string())
        } else {
            Err(RegistryError::BadDigest { image: self.image.clone(), value: self.scrub(value) })
        }
    }

    fn timed_out(&self, url: &str) -> RegistryError {
        RegistryError::Timeout {
            image: self.image.clone(),
            url: self.scrub(url),
            timeout: self.timeout,
        }
    }

    fn transport(&self, url: &str, error: ureq::Error) -> RegistryError {
        let reason = match error {
            ureq::Error::Timeout(_) => return self.timed_out(url),
            ureq::Error::HostNotFound => "host not found".to_string(),
            ureq::Error::ConnectionFailed => "connection failed".to_string(),
            ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                "connection refused".to_string()
            }
            ureq::Error::BodyExceedsLimit(limit) => format!("answer larger than {limit} bytes"),
            other => other.to_string(),
        };
        RegistryError::Transport {
            image: self.image.clone(),
            url: self.scrub(url),
            reason: self.scrub(&reason),
        }
    }

    /// `: <what the registry said>` for an error status, from the distribution API's error
    /// body (`{"errors":[{"code","message"}]}`) or the body's first line; empty if none.
    fn detail(&self, response: &mut Response<Body>) -> String {
        let body = response.body_mut().with_config().limit(64 * 1024).read_to_vec();
        let body = String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
        let from_json = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| {
            let first = v.get("errors")?.get(0)?.clone();
            let text = |key| first.get(key).and_then(|v| v.as_str()).unwrap_or("").to_string();
            Some(format!("{} {}", text("code"), text("message")).trim().to_string())
        });
        let text = from_json.unwrap_or_else(|| {
            body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_string()
        });
        let text: String = text.chars().take(200).collect();
        if text.is_empty() { String::new() } else { format!(": {}", self.scrub(&text)) }
    }

    fn scrub(&self, text: &str) -> String {
        scrub(text, &self.secrets)
    }
}

/// `text` with every secret replaced by `***`.
fn scrub(text: &str, secrets: &[String]) -> String {
    secrets.iter().filter(|s| !s.is_empty()).fold(text.to_string(), |t, s| t.replace(s, "***"))
}

fn header<'r>(response: &'r Response<Body>, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.trim().is_empty())
}

fn basic_credentials(auth: &RegistryAuth) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", auth.username, auth.password))
}

/// A `WWW-Authenticate` challenge kiln can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// The challenge in one `WWW-Authenticate` value (the first, if a value holds several):
/// `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`. Scheme and parameter names
/// are case-insensitive; values are quoted strings (with `\` escapes) or bare tokens.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let param = |name: &str| {
        params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
    };
    let realm = param("realm").filter(|r| r.starts_with("https://") || r.starts_with("http://"))?;
    Some(Challenge::Bearer { realm, service: param("service"), scope: param("scope") })
}

/// `k1="v1", k2=v2` → pairs. Stops at anything that is not a parameter (another challenge).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && *c != ',') {
            key.push(c);
        }
        let key = key.trim().to_string();
        if key.is_empty() || key.contains(char::is_whitespace) || chars.next() != Some('=') {
            return params;
        }
        while chars.next_if(|c| *c == ' ').is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
            value = value.trim().to_string();
        }
        params.push((key, value));
    }
}

/// The realm with `service` and `scope` added to its query, percent-encoded.
fn token_url(realm: &str, service: Option<&str>, scope: &str) -> String {
    let mut url = realm.to_string();
    let mut separator = if realm.contains('?') { '&' } else { '?' };
    for (key, value) in [("service", service), ("scope", Some(scope))] {
        if let Some(value) = value {
            url.push(separator);
            url.push_str(key);
            url.push('=');
            url.push_str(&percent_encode(value));
            separator = '&';
        }
    }
    url
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The host the registry API answers on: Docker Hub's names all map to `registry-1.docker.io`.
fn api_host(registry: &str) -> &str {
    match registry.to_ascii_lowercase().as_str() {
        "docker.io" | "index.docker.io" | "registry.hub.docker.com" => "registry-1.docker.io",
        _ => registry,
    }
}

/// The repository as the API names it: a one-part Docker Hub name is an official image.
fn api_repository(registry: &str, repository: &str) -> String {
    if api_host(registry) == "registry-1.docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    }
}

/// `http` for loopback hosts (Docker's default insecure registries), `https` otherwise.
fn scheme(host: &str) -> &'static str {
    if kiln_plan::image_ref::is_loopback_registry(host) { "http" } else { "https" }
}

/// A host name or address with an optional port: nothing that could change the URL's meaning
/// (`/`, `@`, `?`, `#`, spaces).
fn valid_registry(registry: &str) -> bool {
    !registry.is_empty()
        && registry.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
}

/// Distribution's repository grammar, loosely: `/`-separated components of `[a-z0-9._-]` that
/// begin and end with a letter or digit (so never `.` or `..`).
fn valid_repository(repository: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    repository.split('/').all(|part| {
        let bytes = part.as_bytes();
        bytes.first().is_some_and(|c| alnum(*c))
            && bytes.last().is_some_and(|c| alnum(*c))
            && bytes.iter().all(|c| alnum(*c) || b"._-".contains(c))
    })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// `algorithm:hex`, as `sha256:` followed by 64 lowercase hex digits (or `sha512:` and 128).
fn valid_digest(value: &str) -> bool {
    let Some((algorithm, hex)) = value.split_once(':') else { return false };
    let length = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return false,
    };
    hex.len() == length && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(20);

    fn tag(registry: &str, repository: &str, tag: &str) -> TagRef {
        TagRef { registry: registry.into(), repository: repository.into(), tag: tag.into() }
    }

    fn auth(username: &str, password: &str) -> RegistryAuth {
        RegistryAuth { username: username.into(), password: password.into() }
    }

    #[test]
    fn tag_ref_displays_as_registry_repository_tag() {
        let t = tag("127.0.0.1:5000", "team/base", "1.2");
        assert_eq!(t.to_string(), "127.0.0.1:5000/team/base:1.2");
    }

    #[test]
    fn auth_debug_hides_the_password() {
        let shown = format!("{:?}", auth("kiln", "hunter2-secret"));
        assert!(shown.contains("kiln"), "{shown}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
    }

    #[test]
    fn loopback_registries_use_http_every_other_https() {
        for host in [
            "127.0.0.1:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost",
            "LOCALHOST:5000",
            "[::1]:5000",
            "[::1]",
            "::1",
        ] {
            assert_eq!(scheme(host), "http", "{host}");
        }
        for host in [
            "registry-1.docker.io",
            "myreg.example.com:443",
            "10.0.0.1:5000",
            "127.example.com",
            "localhost.example.com",
            "[2001:db8::1]:5000",
            "128.0.0.1",
        ] {
            assert_eq!(scheme(host), "https", "{host}");
        }
    }

    #[test]
    fn docker_hub_names_map_to_its_api_host_and_official_images_to_library() {
        for name in ["registry.hub.docker.com", "docker.io", "index.docker.io", "Docker.IO"] {
            assert_eq!(api_host(name), "registry-1.docker.io", "{name}");
        }
        assert_eq!(api_host("registry-1.docker.io"), "registry-1.docker.io");
        assert_eq!(api_host("myreg.example.com:443"), "myreg.example.com:443");
        assert_eq!(api_repository("registry.hub.docker.com", "busybox"), "library/busybox");
        assert_eq!(api_repository("docker.io", "library/busybox"), "library/busybox");
        assert_eq!(api_repository("docker.io", "team/app"), "team/app");
        assert_eq!(api_repository("127.0.0.1:5000", "busybox"), "busybox");
    }

    #[test]
    fn challenges_basic_and_bearer_are_parsed() {
        assert_eq!(parse_challenge(r#"Basic realm="kiln-test""#), Some(Challenge::Basic));
        assert_eq!(parse_challenge("basic"), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        // Case-insensitive names, spaces after commas, bare tokens, a comma and an escaped
        // quote inside a quoted value, no scope.
        assert_eq!(
            parse_challenge(
                r#"BEARER Realm="https://ghcr.io/token?a=1,b=2", Service=ghcr.io, error="x\"y""#
            ),
            Some(Challenge::Bearer {
                realm: "https://ghcr.io/token?a=1,b=2".into(),
                service: Some("ghcr.io".into()),
                scope: None,
            })
        );
        // A second challenge in the same value is not read as parameters of the first.
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://a/token", Basic realm="r""#),
            Some(Challenge::Bearer { realm: "https://a/token".into(), service: None, scope: None })
        );
    }

    #[test]
    fn challenges_kiln_cannot_answer_are_refused() {
        for value in [
            "",
            "Negotiate",
            r#"Digest realm="r", nonce="n""#,
            "Bearer",
            r#"Bearer service="s""#,
            r#"Bearer realm="ftp://auth/token""#,
        ] {
            assert_eq!(parse_challenge(value), None, "{value}");
        }
    }

    #[test]
    fn token_url_adds_service_and_scope_percent_encoded() {
        assert_eq!(
            token_url(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                "repository:library/busybox:pull"
            ),
            "https://auth.docker.io/token?service=registry.docker.io\
             &scope=repository%3Alibrary%2Fbusybox%3Apull"
        );
        assert_eq!(
            token_url("https://r/token?x=1", None, "repository:a:pull"),
            "https://r/token?x=1&scope=repository%3Aa%3Apull"
        );
    }

    #[test]
    fn references_that_would_change_the_url_are_refused_before_any_request() {
        for (t, what) in [
            (tag("user:pw@evil.example", "a", "b"), "registry"),
            (tag("reg.example/path", "a", "b"), "registry"),
            (tag("", "a", "b"), "registry"),
            (tag("127.0.0.1:5000", "../v2/x", "b"), "repository"),
            (tag("127.0.0.1:5000", "Upper/case", "b"), "repository"),
            (tag("127.0.0.1:5000", "a//b", "b"), "repository"),
            (tag("127.0.0.1:5000", "a/", "b"), "repository"),
            (tag("127.0.0.1:5000", "-a", "b"), "repository"),
            (tag("127.0.0.1:5000", "a", "b?x=1"), "tag"),
            (tag("127.0.0.1:5000", "a", ".hidden"), "tag"),
            (tag("127.0.0.1:5000", "a", ""), "tag"),
        ] {
            match current_digest(&t, None, TIMEOUT) {
                Err(RegistryError::InvalidReference { what: found, image, .. }) => {
                    assert_eq!(found, what, "{t}");
                    assert_eq!(image, t.to_string());
                }
                other => panic!("{t}: {other:?}"),
            }
        }
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn digests_are_checked_and_secrets_scrubbed() {
        assert!(valid_digest(&format!("sha256:{}", "0a".repeat(32))));
        assert!(!valid_digest(&format!("sha256:{}", "0A".repeat(32))));
        assert!(!valid_digest("sha256:abc"));
        assert!(!valid_digest(&format!("md5:{}", "0".repeat(64))));
        let secrets = vec!["pw".to_string(), String::new()];
        assert_eq!(scrub("user pw in pwned", &secrets), "user *** in ***ned");
    }

    #[test]
    fn a_closed_port_is_a_transport_error_naming_the_image() {
        // Bind then drop: nothing listens on the port afterwards.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let t = tag(&format!("127.0.0.1:{port}"), "kiln/none", "latest");
        let error = current_digest(&t, Some(&auth("kiln", "s3cret-pw")), TIMEOUT).unwrap_err();
        assert!(matches!(error, RegistryError::Transport { .. }), "{error:?}");
        let shown = error.to_string();
        assert!(shown.starts_with(&format!("{t}: http://127.0.0.1:{port}/v2/")), "{shown}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
    }

    #[test]
    fn a_silent_registry_is_a_timeout_within_the_budget() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and reads, never answers; the stream is held until the test ends.
        let (tx, rx) = mpsc::channel::<TcpStream>();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if tx.send(stream).is_err() {
                    return;
                }
            }
        });
        let t = tag(&addr.to_string(), "kiln/slow", "latest");
        // Only the request's own timeout ends the call: the server never answers or closes.
        let error = current_digest(&t, None, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(error, RegistryError::Timeout { .. }), "{error:?}");
        assert!(error.to_string().starts_with(&format!("{t}: ")), "{error}");
        drop(rx);
    }

    /// One request a scripted server saw: request line and headers (lowercase names).
    #[derive(Debug)]
    struct Seen {
        line: String,
        headers: Vec<(String, String)>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }
    }

    /// A scripted HTTP server on loopback, for what the local registries cannot show (a bearer
    /// token service, a registry without `Docker-Content-Digest`): `answer` gets each request
    /// and the server's own address and gives the full response; one request per connection.
    fn scripted(
        answer: impl Fn(&Seen, &str) -> String + Send + 'static,
    ) -> (String, mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let own = addr.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut headers = Vec::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((n, v)) = h.split_once(':') {
                        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let seen = Seen { line: line.trim().to_string(), headers };
                let answer = answer(&seen, &own);
                // Recorded before answering: once the client has its answer, the test sees
                // the request (answering first raced the test's read of the channel).
                if tx.send(seen).is_err() {
                    return;
                }
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        (addr, rx)
    }

    fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut text = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (n, v) in headers {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        text
    }

    fn requests(seen: &mpsc::Receiver<Seen>) -> Vec<Seen> {
        seen.try_iter().collect()
    }

    /// A registry behind a bearer token service at `/token` that hands `token` out to anyone
    /// presenting `basic` (any caller if `None`) and answers `digest` to that token.
    fn bearer_registry(basic: Option<String>, token: &'static str) -> (String, Receiver) {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let (addr, seen) = scripted(move |req, own| {
            if req.line.starts_with("GET /token?") {
                if basic.is_none() || req.header("authorization") == basic.as_deref() {
                    response("200 OK", &[], &format!(r#"{{"access_token":"{token}"}}"#))
                } else {
                    response("401 Unauthorized", &[], r#"{"details":"incorrect password"}"#)
                }
            } else if req.header("authorization") == Some("Bearer good-token") {
                response("200 OK", &[("Docker-Content-Digest", &digest)], "")
            } else {
                let challenge = format!(r#"Bearer realm="http://{own}/token",service="svc""#);
                response("401 Unauthorized", &[("WWW-Authenticate", &challenge)], "")
            }
        });
        (addr, seen)
    }

    type Receiver = mpsc::Receiver<Seen>;

    #[test]
    fn bearer_challenge_gets_a_token_from_the_realm_with_the_credentials() {
        let login = auth("kiln", "pa55-word");
        let basic = format!("Basic {}", basic_credentials(&login));
        let (addr, seen) = bearer_registry(Some(basic.clone()), "good-token");
        let t = tag(&addr, "kiln/base", "1.0");
        let digest = current_digest(&t, Some(&login), TIMEOUT).unwrap();
        assert_eq!(digest, format!("sha256:{}", "ab".repeat(32)));
        let requests = requests(&seen);
        let lines: Vec<&str> = requests.iter().map(|r| r.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "HEAD /v2/kiln/base/manifests/1.0 HTTP/1.1",
                // No scope in the challenge: pull access to the repository.
                "GET /token?service=svc&scope=repository%3Akiln%2Fbase%3Apull HTTP/1.1",
                "HEAD /v2/kiln/base/manifests/1.0 HTTP/1.1",
            ]
        );
        assert_eq!(requests[0].header("authorization"), None);
        assert_eq!(requests[1].header("authorization"), Some(basic.as_str()));
        assert_eq!(requests[2].header("authorization"), Some("Bearer good-token"));
        assert_eq!(requests[0].header("accept"), Some(MANIFEST_MEDIA_TYPES.join(", ").as_str()));
    }

    #[test]
    fn anonymous_bearer_token_that_is_not_enough_asks_for_credentials() {
        let (addr, seen) = bearer_registry(None, "anonymous-token");
        let t = tag(&addr, "kiln/private", "latest");
        let error = current_digest(&t, None, TIMEOUT).unwrap_err();
        assert_eq!(
            error,
            RegistryError::CredentialsRequired { image: t.to_string(), registry: addr.clone() }
        );
        let requests = requests(&seen);
        assert_eq!(requests.len(), 3, "{requests:?}");
        assert_eq!(requests[1].header("authorization"), None, "asked anonymously");
    }

    #[test]
    fn refused_credentials_name_the_user_never_the_password() {
        let right = format!("Basic {}", basic_credentials(&auth("kiln", "right-pass")));
        let (addr, _seen) = bearer_registry(Some(right), "good-token");
        let t = tag(&addr, "kiln/base", "1.0");
        let error = current_digest(&t, Some(&auth("kiln", "wrong-pass")), TIMEOUT).unwrap_err();
        assert_eq!(
            error,
            RegistryError::Refused { image: t.to_string(), username: "kiln".into(), status: 401 }
        );
        assert!(!error.to_string().contains("wrong-pass"), "{error}");
    }

    #[test]
    fn without_a_digest_header_the_get_body_is_hashed() {
        let manifest = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        for head_status in ["200 OK", "405 Method Not Allowed"] {
            let (addr, seen) = scripted(move |req, _| {
                if req.line.starts_with("HEAD ") {
                    response(head_status, &[], "")
                } else {
                    response("200 OK", &[], manifest)
                }
            });
            let t = tag(&addr, "kiln/base", "1.0");
            let digest = current_digest(&t, None, TIMEOUT).unwrap();
            assert_eq!(digest, format!("sha256:{}", hex(&Sha256::digest(manifest))));
            let lines: Vec<String> = requests(&seen).into_iter().map(|r| r.line).collect();
            assert_eq!(lines.len(), 2, "{lines:?}");
            assert!(lines[1].starts_with("GET /v2/kiln/base/manifests/1.0 "), "{lines:?}");
        }
    }

    #[test]
    fn error_statuses_and_odd_answers_are_errors_naming_the_image() {
        let fire = r#"{"errors":[{"code":"UNKNOWN","message":"disk on fire","detail":{}}]}"#;
        let cases = [
            (
                response("500 Internal Server Error", &[], fire),
                " answered HTTP 500: UNKNOWN disk on fire",
            ),
            (
                response("401 Unauthorized", &[("WWW-Authenticate", "Negotiate")], ""),
                ": the registry's authentication challenge `Negotiate` is not Basic",
            ),
            (
                response("200 OK", &[("Docker-Content-Digest", "sha256:xyz")], ""),
                ": the registry answered a malformed digest `sha256:xyz`",
            ),
            (response("403 Forbidden", &[], ""), ": access denied without credentials (HTTP 403)"),
        ];
        for (answer, expected) in cases {
            // An error status to a HEAD has no body to quote: GET straight away for that one.
            let head = !expected.contains("HTTP 500");
            let (addr, _seen) = scripted(move |_, _| answer.clone());
            let t = tag(&addr, "kiln/base", "1.0");
            let shown = lookup(&t, None, TIMEOUT, head).unwrap_err().to_string();
            assert!(shown.starts_with(&t.to_string()), "{shown}");
            assert!(shown.contains(expected), "{shown}\nwanted: {expected}");
        }
    }

    // --- against the local registries of `scripts/test-env.sh` ------------------------------

    struct Env {
        registry: String,
        auth_registry: String,
        user: String,
        password: String,
        image: String,
    }

    /// The test environment, or `None` (the test then skips) when it is not set up.
    fn test_env(test: &str) -> Option<Env> {
        let Ok(registry) = std::env::var("KILN_TEST_REGISTRY") else {
            eprintln!("{test}: skipped, KILN_TEST_REGISTRY is not set (scripts/test-env.sh)");
            return None;
        };
        let setting = |key: &str, default: &str| std::env::var(key).unwrap_or(default.into());
        Some(Env {
            registry,
            auth_registry: setting("KILN_TEST_AUTH_REGISTRY", "127.0.0.1:5001"),
            user: setting("KILN_TEST_REGISTRY_USER", "kiln"),
            password: setting("KILN_TEST_REGISTRY_PASSWORD", "kiln-test-password"),
            image: setting("KILN_TEST_IMAGE", "busybox:latest"),
        })
    }

    fn unique() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!("t{}-{nanos}", std::process::id())
    }

    /// `docker ARGS` (with `config` as its client config directory), which must succeed;
    /// stdout and stderr together.
    fn docker(config: Option<&std::path::Path>, args: &[&str]) -> String {
        let mut command = Command::new("docker");
        if let Some(dir) = config {
            command.arg("--config").arg(dir);
        }
        let out = command.args(args).output().expect("docker CLI");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "docker {args:?}: {text}");
        text
    }

    /// Pushes `reference`; the digest `docker push` printed (`<tag>: digest: sha256:… size: N`).
    fn push(config: Option<&std::path::Path>, reference: &str) -> String {
        let out = docker(config, &["push", reference]);
        out.split_whitespace()
            .skip_while(|w| *w != "digest:")
            .nth(1)
            .unwrap_or_else(|| panic!("no digest in the push output:\n{out}"))
            .to_string()
    }

    /// A one-file image unlike any other (`docker import` of a tar holding `marker`).
    fn marker_image(reference: &str, marker: &str) {
        let mut archive = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(marker.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        archive.append_data(&mut header, "kiln-marker", marker.as_bytes()).unwrap();
        let bytes = archive.into_inner().unwrap();
        let mut child = Command::new("docker")
            .args(["import", "-", reference])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("docker CLI");
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success(), "docker import {reference}");
    }

    fn untag(references: &[&str]) {
        let _ = Command::new("docker").arg("rmi").args(references).output();
    }

    /// A list is read once per digest: the next resolution of the unmoved tag is a `HEAD`.
    #[test]
    fn a_lists_body_is_read_once_per_digest() {
        let arm64 = format!("sha256:{}", "c3".repeat(32));
        let list = format!(
            r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
                {{"digest":"{arm64}","platform":{{"os":"linux","architecture":"arm64"}}}}],
                "annotations":{{"kiln.test":"{}"}}}}"#,
            unique()
        );
        let digest = body_digest(list.as_bytes());
        let media_type = "application/vnd.oci.image.index.v1+json";
        let (addr, seen) = scripted(move |req, _| {
            let headers =
                [("Docker-Content-Digest", digest.as_str()), ("Content-Type", media_type)];
            let body = if req.line.starts_with("GET ") { list.as_str() } else { "" };
            response("200 OK", &headers, body)
        });
        let t = tag(&addr, "team/base", "1");
        for _ in 0..2 {
            let resolved = resolve(&t, None, TIMEOUT, "linux/arm64").unwrap();
            assert_eq!(resolved.digest, arm64);
        }
        let methods: Vec<String> = requests(&seen)
            .iter()
            .map(|r| r.line.split(' ').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(methods, ["HEAD", "GET", "HEAD"]);
    }

    /// A two-platform OCI index in the open registry: each platform resolves to its own
    /// entry with the index beside it, the tag's digest is the index's, and a platform the
    /// index lacks is an error naming those it has.
    #[test]
    fn a_multi_platform_tag_resolves_to_each_platforms_entry_and_keeps_the_index() {
        let test = "a_multi_platform_tag_resolves_to_each_platforms_entry_and_keeps_the_index";
        let Some(env) = test_env(test) else { return };
        let (registry, repository, name) = (env.registry, "kiln-registry-test/multi", unique());
        let images = [("linux/amd64", name.as_str()), ("linux/arm64", name.as_str())];
        let (index, entries) =
            crate::trigger::test_registry::push_index(&registry, repository, &name, &images);
        let shown = crate::trigger::test_registry::get_index(&registry, repository, &name);
        let listed: Vec<&str> = shown["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(listed, ["amd64", "arm64"], "{shown}");

        let t = tag(&registry, repository, &name);
        assert_eq!(current_digest(&t, None, TIMEOUT).unwrap(), index);
        for (platform, entry) in [("linux/amd64", &entries[0]), ("linux/arm64/v8", &entries[1])] {
            let resolved = resolve(&t, None, TIMEOUT, platform).unwrap();
            assert_eq!(resolved, Resolved { digest: entry.clone(), index: Some(index.clone()) });
        }
        let error = resolve(&t, None, TIMEOUT, "linux/s390x").unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{t}: the manifest list has no linux/s390x image (it has linux/amd64, linux/arm64)"
            )
        );
        // A single image's tag is every platform's, with no index.
        let single = tag(&registry, repository, &format!("{name}-single"));
        let pushed = {
            let reference = single.to_string();
            docker(None, &["tag", &env.image, &reference]);
            let digest = push(None, &reference);
            untag(&[&reference]);
            digest
        };
        let resolved = resolve(&single, None, TIMEOUT, "linux/arm64").unwrap();
        assert_eq!(resolved, Resolved { digest: pushed, index: None });
    }

    #[test]
    fn open_registry_digest_follows_the_tag_as_pushes_move_it() {
        let Some(env) = test_env("open_registry_digest_follows_the_tag_as_pushes_move_it") else {
            return;
        };
        let t = tag(&env.registry, "kiln-registry-test/base", &unique());
        let reference = t.to_string();
        docker(None, &["tag", &env.image, &reference]);
        let first = push(None, &reference);
        assert_eq!(current_digest(&t, None, TIMEOUT).unwrap(), first);
        // The sha256 of the manifest body is the registry's own Docker-Content-Digest.
        assert_eq!(lookup(&t, None, TIMEOUT, false).unwrap(), first);

        // An identical push leaves the digest alone.
        assert_eq!(push(None, &reference), first);
        assert_eq!(current_digest(&t, None, TIMEOUT).unwrap(), first);

        // Another image under the same tag moves it.
        marker_image(&reference, &format!("kiln {}\n", unique()));
        let second = push(None, &reference);
        assert_ne!(second, first);
        assert_eq!(current_digest(&t, None, TIMEOUT).unwrap(), second);
        assert_eq!(push(None, &reference), second);
        assert_eq!(current_digest(&t, None, TIMEOUT).unwrap(), second);
        untag(&[&reference]);
    }

    #[test]
    fn unknown_tags_and_repositories_are_not_found() {
        let Some(env) = test_env("unknown_tags_and_repositories_are_not_found") else { return };
        for t in [
            tag(&env.registry, "busybox", &format!("no-such-tag-{}", unique())),
            tag(&env.registry, &format!("kiln-registry-test/none-{}", unique()), "latest"),
        ] {
            let error = current_digest(&t, None, TIMEOUT).unwrap_err();
            assert_eq!(error, RegistryError::NotFound { image: t.to_string() });
            assert!(error.to_string().starts_with(&format!("{t}: not found")), "{error}");
        }
    }

    #[test]
    fn auth_registry_needs_and_takes_basic_credentials() {
        let Some(env) = test_env("auth_registry_needs_and_takes_basic_credentials") else {
            return;
        };
        // A throwaway client config, so the machine's ~/.docker/config.json never holds the login.
        let config = tempfile::tempdir().unwrap();
        let mut login = Command::new("docker")
            .arg("--config")
            .arg(config.path())
            .args(["login", &env.auth_registry, "-u", &env.user, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker CLI");
        login.stdin.take().unwrap().write_all(env.password.as_bytes()).unwrap();
        assert!(login.wait().unwrap().success(), "docker login {}", env.auth_registry);
        let t = tag(&env.auth_registry, "kiln-registry-test/base", &unique());
        let reference = t.to_string();
        docker(None, &["tag", &env.image, &reference]);
        let pushed = push(Some(config.path()), &reference);
        untag(&[&reference]);

        let right = auth(&env.user, &env.password);
        assert_eq!(current_digest(&t, Some(&right), TIMEOUT).unwrap(), pushed);
        assert_eq!(lookup(&t, Some(&right), TIMEOUT, false).unwrap(), pushed);

        let error = current_digest(&t, None, TIMEOUT).unwrap_err();
        assert_eq!(
            error,
            RegistryError::CredentialsRequired {
                image: reference.clone(),
                registry: env.auth_registry.clone()
            }
        );
        let shown = error.to_string();
        assert!(shown.starts_with(&format!("{reference}: ")), "{shown}");
        assert!(!shown.contains(&env.password), "{shown}");

        let wrong = auth(&env.user, "not-the-kiln-password");
        let error = current_digest(&t, Some(&wrong), TIMEOUT).unwrap_err();
        assert_eq!(
            error,
            RegistryError::Refused {
                image: reference.clone(),
                username: env.user.clone(),
                status: 401
            }
        );
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("not-the-kiln-password"), "{shown}");
        assert!(!shown.contains(&env.password), "{shown}");
    }
}
