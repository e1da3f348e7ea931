//! Docker image references (`[registry/]path[:tag][@digest]`): parsing, validation and the
//! normalisations kiln needs.
//!
//! Three places need the same reading of a reference: `-t` validation and tagging after a build,
//! matching a push target or a `FROM` image to the run's registry credentials (by registry host),
//! and the dependency report (§6.3), which names Docker Hub images as registry
//! `registry.hub.docker.com`, repository `library/busybox`. The grammar is Docker's
//! (`distribution/reference`): the first path component is a registry only if it contains `.` or
//! `:` or is `localhost`, so `myuser/app` is a Docker Hub repository while `localhost:5000/app` and
//! `127.0.0.1:5000/app` are not (ACR's scanner only checks for `.` and files `localhost:5000/app`
//! under Docker Hub).

use std::fmt;

/// The registry host Docker uses for Docker Hub.
pub const DOCKER_HUB_HOST: &str = "docker.io";
/// The registry name ACR's dependency report uses for Docker Hub images.
pub const DOCKER_HUB_REPORT_REGISTRY: &str = "registry.hub.docker.com";
/// The key the engine looks up Docker Hub credentials under (X-Registry-Config).
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// Longest repository name (registry included) Docker accepts.
const NAME_TOTAL_MAX: usize = 255;
const TAG_MAX: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("invalid reference format: {reference:?} is empty")]
    Empty { reference: String },
    #[error("invalid reference format: repository name must be lowercase: {reference:?}")]
    Uppercase { reference: String },
    #[error("invalid reference format: {reference:?} ({reason})")]
    Invalid { reference: String, reason: &'static str },
}

/// A parsed image reference, as written (no defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `host[:port]` when the reference names one.
    pub registry: Option<String>,
    /// Repository path within the registry, as written (`busybox`, `library/busybox`, `o/app`).
    pub path: String,
    pub tag: Option<String>,
    /// `algorithm:hex`.
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<Self, RefError> {
        let invalid = |reason| RefError::Invalid { reference: reference.to_string(), reason };
        if reference.is_empty() {
            return Err(RefError::Empty { reference: reference.to_string() });
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                if !valid_digest(digest) {
                    return Err(invalid("bad digest"));
                }
                (rest, Some(digest.to_string()))
            }
            None => (reference, None),
        };
        // A tag is what follows the last ':' unless that ':' belongs to a registry port, i.e. a
        // '/' comes after it.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid("bad tag"));
        }
        if name.is_empty() {
            return Err(invalid("missing repository name"));
        }
        if name.len() > NAME_TOTAL_MAX {
            return Err(invalid("repository name longer than 255 characters"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry_component(first) => (Some(first), path),
            _ => (None, name),
        };
        if let Some(registry) = registry
            && !valid_registry(registry)
        {
            return Err(invalid("bad registry host"));
        }
        if path.is_empty() {
            return Err(invalid("missing repository name"));
        }
        for component in path.split('/') {
            if !valid_path_component(component) {
                if component.chars().any(|c| c.is_ascii_uppercase())
                    && valid_path_component(&component.to_ascii_lowercase())
                {
                    return Err(RefError::Uppercase { reference: reference.to_string() });
                }
                return Err(invalid("bad repository name"));
            }
        }
        Ok(Self {
            registry: registry.map(str::to_string),
            path: path.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The registry host pushes and pulls go to: `docker.io` for Docker Hub references.
    pub fn registry_host(&self) -> &str {
        match &self.registry {
            Some(host) if !is_docker_hub_host(host) => host,
            _ => DOCKER_HUB_HOST,
        }
    }

    pub fn is_docker_hub(&self) -> bool {
        self.registry_host() == DOCKER_HUB_HOST
    }

    /// The repository as the registry knows it (`library/` added for official Hub images).
    pub fn repository(&self) -> String {
        if self.is_docker_hub() && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// `[registry/]path` as written: the `repo` argument of the engine's tag and push calls.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(registry) => format!("{registry}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// The reference with `:latest` added when it has neither tag nor digest (ACR's rule, §2.2).
    pub fn with_default_tag(&self) -> String {
        if self.tag.is_none() && self.digest.is_none() {
            format!("{}:latest", self.name())
        } else {
            self.to_string()
        }
    }

    /// Same registry and repository, whatever the spelling (`busybox` = `docker.io/library/busybox`).
    pub fn same_repository(&self, other: &ImageRef) -> bool {
        self.registry_host() == other.registry_host() && self.repository() == other.repository()
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Canonical registry host of a credential's `registry` field or an image's registry: scheme and
/// path dropped (`https://index.docker.io/v1/` → `docker.io`), Docker Hub aliases folded.
pub fn normalize_registry_host(registry: &str) -> String {
    let host = registry.trim();
    let host =
        host.strip_prefix("https://").or_else(|| host.strip_prefix("http://")).unwrap_or(host);
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    if is_docker_hub_host(&host) { DOCKER_HUB_HOST.to_string() } else { host }
}

/// Whether a registry `host[:port]` is on this machine's loopback (`localhost`, `127.x.y.z`,
/// `[::1]`): Docker's default insecure registries, spoken to over plain HTTP.
pub fn is_loopback_registry(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(inside, _)| inside)
    } else if host.matches(':').count() > 1 {
        host // a bare IPv6 address
    } else {
        host.split_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_docker_hub_host(host: &str) -> bool {
    matches!(
        host.to_ascii_lowercase().as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
    )
}

fn is_registry_component(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn valid_registry(registry: &str) -> bool {
    // `host[:port]`, where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
    let (host, port) = match registry.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((address, after)) => {
                let ipv6 = !address.is_empty()
                    && address.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
                match (ipv6, after) {
                    (false, _) => return false,
                    (true, "") => return true,
                    (true, after) => match after.strip_prefix(':') {
                        Some(port) => (None, Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        },
        None => match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        },
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    });
    port_ok && host_ok
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: one '.', one or two '_', or any number of '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    tag.len() <= TAG_MAX && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `algorithm:hex` with at least 32 hex digits (sha256 needs exactly 64).
fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else { return false };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.starts_with(|c: char| c.is_ascii_alphabetic())
        && algorithm
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '.'));
    let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit());
    algorithm_ok && hex_ok && (algorithm != "sha256" || hex.len() == 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parse(s: &str) -> ImageRef {
        ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_short_names() {
        let r = parse("busybox");
        assert_eq!(r.registry, None);
        assert_eq!(r.registry_host(), "docker.io");
        assert_eq!(r.repository(), "library/busybox");
        assert_eq!(r.tag, None);
        let r = parse("myuser/app:1.0");
        assert_eq!(r.registry_host(), "docker.io");
        assert_eq!(r.repository(), "myuser/app");
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        let r = parse("docker.io/library/busybox:latest");
        assert_eq!(r.repository(), "library/busybox");
        assert!(r.same_repository(&parse("busybox")));
        assert!(parse("index.docker.io/library/alpine").same_repository(&parse("alpine:3")));
    }

    #[test]
    fn registries_with_ports_and_localhost() {
        let r = parse("127.0.0.1:5000/kiln/app:v1");
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.path, "kiln/app");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.name(), "127.0.0.1:5000/kiln/app");
        let r = parse("localhost:5000/app");
        assert_eq!(r.registry_host(), "localhost:5000");
        assert_eq!(r.tag, None);
        assert_eq!(parse("localhost/app").registry_host(), "localhost");
        assert_eq!(parse("[::1]:5000/app:x").registry_host(), "[::1]:5000");
        assert_eq!(parse("myreg.azurecr.io/a/b/c").repository(), "a/b/c");
    }

    #[test]
    fn digests_and_display() {
        let s = format!("alpine:3.20@{SHA}");
        let r = parse(&s);
        assert_eq!(r.tag.as_deref(), Some("3.20"));
        assert_eq!(r.digest.as_deref(), Some(SHA));
        assert_eq!(r.to_string(), s);
        let s = format!("127.0.0.1:5000/x@{SHA}");
        assert_eq!(parse(&s).to_string(), s);
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "-a",
            "a-",
            "a:",
            ":tag",
            "a:-bad",
            "a@sha256:short",
            "a@nonsense",
            "a b",
            "a/",
            "host:port/x",
            "a...b",
            "a___b",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(ImageRef::parse("Busybox"), Err(RefError::Uppercase { .. })));
        let long = "a".repeat(256);
        assert!(ImageRef::parse(&long).is_err());
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(ImageRef::parse(&long_tag).is_err());
    }

    #[test]
    fn separators_in_names() {
        for ok in ["a.b", "a_b", "a__b", "a---b", "a-b.c_d", "x/a-b.c_d"] {
            assert!(ImageRef::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn registry_host_normalisation() {
        assert_eq!(normalize_registry_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_registry_host("registry.hub.docker.com"), "docker.io");
        assert_eq!(normalize_registry_host("127.0.0.1:5001"), "127.0.0.1:5001");
        assert_eq!(normalize_registry_host("http://MyReg.azurecr.io/"), "myreg.azurecr.io");
    }
}
