//! What a build context argument names (§8.4): a local path, a Git repository (with an optional
//! `#<ref>:<subdir>` fragment) or an HTTP(S) tarball, and the URL with its password hidden.
//!
//! Pure string rules, apart from the download (`kiln_worker::build::remote`): the control
//! plane classifies and redacts contexts when it accepts a request, long before any worker.

use std::path::{Component, Path};

/// A context argument kiln cannot use.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{what} build contexts are not supported by kiln ({context})")]
    Unsupported { what: &'static str, context: String },
    #[error("invalid remote context {context}: {reason}")]
    Invalid { context: String, reason: String },
}

/// A context argument that names something to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Git {
        /// Fetch URL, fragment removed (`github.com/o/r` gets `https://`).
        url: String,
        /// Branch, tag, commit or ref path; `None` is the default branch.
        reference: Option<String>,
        /// Directory inside the repository to use as the context.
        subdir: Option<String>,
    },
    Tarball {
        url: String,
    },
}

/// Classifies a context argument. `Ok(None)`: a local path.
pub fn detect(context: &str) -> Result<Option<Remote>, DetectError> {
    let lower = context.to_ascii_lowercase();
    let unsupported = |what| Err(DetectError::Unsupported { what, context: redact(context) });
    if lower.starts_with("oci://") {
        return unsupported("OCI artifact");
    }
    let (base, fragment) = match context.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (context, None),
    };
    let is_http = lower.starts_with("http://") || lower.starts_with("https://");
    let is_ssh = lower.starts_with("git@") || lower.starts_with("ssh://");
    if is_ssh && ssh_host(base).is_none() {
        return Err(DetectError::Invalid {
            context: redact(context),
            reason: "an SSH remote is git@host:path or ssh://[user@]host[:port]/path".to_string(),
        });
    }
    let git_url = if is_ssh || lower.starts_with("git://") || lower.starts_with("file://") {
        Some(base.to_string())
    } else if lower.starts_with("github.com/") {
        // Docker's shorthand.
        Some(format!("https://{base}"))
    } else if is_http && is_git_http(base) {
        Some(base.to_string())
    } else {
        None
    };
    if let Some(url) = git_url {
        let (reference, subdir) = match fragment {
            Some(fragment) => {
                let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
                (non_empty(reference), non_empty(subdir))
            }
            None => (None, None),
        };
        if let Some(subdir) = &subdir
            && !is_relative_inside(subdir)
        {
            return Err(DetectError::Invalid {
                context: redact(context),
                reason: format!("subdirectory {subdir:?} leaves the repository"),
            });
        }
        return Ok(Some(Remote::Git { url, reference, subdir }));
    }
    if is_http {
        // The fragment is client-side only; it is never sent.
        return Ok(Some(Remote::Tarball { url: base.to_string() }));
    }
    Ok(None)
}

/// The host and port an SSH remote (`git@host:path`, `ssh://[user@]host[:port]/path`) names;
/// `None` when it names no host or path, or is not an SSH remote.
pub fn ssh_host(url: &str) -> Option<(String, Option<u16>)> {
    let scheme = url.get(..6).filter(|s| s.eq_ignore_ascii_case("ssh://"));
    if let Some(rest) = scheme.map(|s| &url[s.len()..]) {
        let (authority, path) = rest.split_once('/')?;
        let host_port = authority.rsplit('@').next()?;
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (host_port, None),
        };
        return (!host.is_empty() && !path.is_empty()).then(|| (host.to_string(), port));
    }
    let (user_host, path) = url.split_once(':')?;
    let (_, host) = user_host.split_once('@')?;
    (!host.is_empty() && !path.is_empty() && !path.starts_with("//"))
        .then(|| (host.to_string(), None))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// Git over HTTP(S): a path ending in `.git`, or Azure DevOps / Visual Studio repositories.
fn is_git_http(url: &str) -> bool {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, path) = without_scheme.split_once('/').unwrap_or((without_scheme, ""));
    let host = authority.rsplit('@').next().unwrap_or(authority).to_ascii_lowercase();
    let host = host.split(':').next().unwrap_or(&host).to_string();
    let path = path.split('?').next().unwrap_or(path);
    path.trim_end_matches('/').ends_with(".git")
        || path.contains("/_git/")
        || host == "dev.azure.com"
        || host.ends_with(".visualstudio.com")
}

fn is_relative_inside(path: &str) -> bool {
    let mut depth = 0usize;
    for component in Path::new(path).components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// The URL with any password replaced by `***`, for logs and errors. An SSH URL's user is a
/// login name (`git`), not a token, and stays.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let keeps_user = scheme.eq_ignore_ascii_case("ssh");
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = match (userinfo.contains(':'), keeps_user) {
                (true, _) => format!("{user}:***"),
                (false, true) => user.to_string(),
                (false, false) => "***".into(),
            };
            format!("{scheme}://{masked}@{host}{}", &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(url: &str, reference: Option<&str>, subdir: Option<&str>) -> Option<Remote> {
        Some(Remote::Git {
            url: url.into(),
            reference: reference.map(Into::into),
            subdir: subdir.map(Into::into),
        })
    }

    #[test]
    fn detection() {
        let d = |s: &str| detect(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(d("."), None);
        assert_eq!(d("sub/dir"), None);
        assert_eq!(
            d("https://github.com/o/r.git#main:docker"),
            git("https://github.com/o/r.git", Some("main"), Some("docker"))
        );
        assert_eq!(d("https://github.com/o/r.git"), git("https://github.com/o/r.git", None, None));
        assert_eq!(
            d("https://github.com/o/r.git#:sub"),
            git("https://github.com/o/r.git", None, Some("sub"))
        );
        assert_eq!(
            d("https://github.com/o/r.git#pull/7/head"),
            git("https://github.com/o/r.git", Some("pull/7/head"), None)
        );
        assert_eq!(
            d("https://dev.azure.com/org/proj/_git/repo#main"),
            git("https://dev.azure.com/org/proj/_git/repo", Some("main"), None)
        );
        assert_eq!(d("git://host/r#v1"), git("git://host/r", Some("v1"), None));
        assert_eq!(d("github.com/o/r"), git("https://github.com/o/r", None, None));
        assert_eq!(d("file:///tmp/r"), git("file:///tmp/r", None, None));
        assert_eq!(
            d("https://example.com/ctx.tar.gz#ignored"),
            Some(Remote::Tarball { url: "https://example.com/ctx.tar.gz".into() })
        );
        assert!(matches!(detect("oci://reg/a:b"), Err(DetectError::Unsupported { .. })));
        assert_eq!(
            d("git@github.com:o/r.git#main:app"),
            git("git@github.com:o/r.git", Some("main"), Some("app"))
        );
        assert_eq!(d("ssh://git@h:2222/srv/r.git"), git("ssh://git@h:2222/srv/r.git", None, None));
        for bad in ["git@github.com", "git@:o/r.git", "ssh://h", "ssh://h:port/r.git"] {
            let err = detect(bad).unwrap_err().to_string();
            assert!(err.contains("an SSH remote is git@host:path or ssh://"), "{bad}: {err}");
        }
        assert_eq!(ssh_host("git@github.com:o/r.git"), Some(("github.com".into(), None)));
        assert_eq!(
            ssh_host("ssh://u@127.0.0.1:2222/r.git"),
            Some(("127.0.0.1".into(), Some(2222)))
        );
        assert_eq!(ssh_host("https://h/r.git"), None);
        assert_eq!(ssh_host("SSH://h/r.git"), Some(("h".into(), None)));
        assert!(matches!(
            detect("https://h/r.git#main:../../etc"),
            Err(DetectError::Invalid { .. })
        ));
    }

    #[test]
    fn redaction_and_credentials() {
        assert_eq!(redact("https://u:secret@h/r.git"), "https://u:***@h/r.git");
        assert_eq!(redact("https://pat@h/r.git"), "https://***@h/r.git");
        assert_eq!(redact("https://h/r.git"), "https://h/r.git");
        assert_eq!(redact("ssh://git@h:2222/r.git"), "ssh://git@h:2222/r.git");
        assert_eq!(redact("ssh://git:pw@h/r.git"), "ssh://git:***@h/r.git");
    }

    #[test]
    fn subdir_confinement() {
        assert!(is_relative_inside("a/b"));
        assert!(is_relative_inside("a/../b"));
        assert!(!is_relative_inside("../a"));
        assert!(!is_relative_inside("/abs"));
    }
}
