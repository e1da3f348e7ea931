//! Git host webhooks (reference §5.1): which host sent a delivery, whether it is authentic, and
//! what it asks for. Pure functions over headers and body, so the HTTP layer stays thin and
//! every rule is unit-tested with the hosts' documented payloads.
//!
//! One URL per task accepts all three formats, told apart by their headers:
//! * GitHub: `X-GitHub-Event`, `X-GitHub-Delivery`, `X-Hub-Signature-256: sha256=<hex HMAC>`;
//! * GitLab: `X-Gitlab-Event`, `X-Gitlab-Event-UUID`, `X-Gitlab-Token: <the secret itself>`;
//! * Gitea and Forgejo: `X-Gitea-Event` / `X-Forgejo-Event`, `X-Gitea-Delivery`,
//!   `X-Gitea-Signature: <hex HMAC>` (Forgejo also sends `X-Forgejo-*` twins).
//!
//! Signatures are checked over the raw body before it is parsed, in constant time.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

/// Who sent a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    /// Gitea and Forgejo (same format).
    Gitea,
}

/// What a delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// Commits pushed to `branch`; `commit` is the new head. `default_branch` is the
    /// repository's, when the delivery names it (a task without a branch follows it).
    Push { branch: String, commit: String, repository: String, default_branch: Option<String> },
    /// A pull (merge) request opened or updated: build `commit` of request `number` against
    /// `base_branch`.
    PullRequest { number: u64, commit: String, base_branch: String, repository: String },
}

impl SourceEvent {
    /// ACR's source trigger event (§5.1 `sourceTriggerEvents`, §6.2 `sourceTrigger.eventType`).
    pub fn event_type(&self) -> &'static str {
        match self {
            SourceEvent::Push { .. } => "commit",
            SourceEvent::PullRequest { .. } => "pullrequest",
        }
    }

    /// The commit to build.
    pub fn commit(&self) -> &str {
        match self {
            SourceEvent::Push { commit, .. } | SourceEvent::PullRequest { commit, .. } => commit,
        }
    }
}

/// Why a delivery is refused (401) or rejected (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error(
        "not a webhook kiln knows: no X-GitHub-Event, X-Gitlab-Event, X-Gitea-Event or X-Forgejo-Event header"
    )]
    UnknownProvider,
    #[error("missing {header} header")]
    MissingSignature { header: &'static str },
    #[error("bad signature")]
    BadSignature,
    #[error("the payload is not valid JSON: {0}")]
    Json(String),
    #[error("the {event} payload has no {field}")]
    Missing { event: String, field: &'static str },
}

/// A header lookup: name (lowercase) → value.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

impl Headers for axum::http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        axum::http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

/// The provider, from the event header each one sends. Gitea and Forgejo also send GitHub's
/// headers (for GitHub-compatible receivers), so theirs are looked at first.
pub fn provider(headers: &(impl Headers + ?Sized)) -> Result<Provider, WebhookError> {
    if headers.get("x-gitea-event").is_some() || headers.get("x-forgejo-event").is_some() {
        Ok(Provider::Gitea)
    } else if headers.get("x-github-event").is_some() {
        Ok(Provider::GitHub)
    } else if headers.get("x-gitlab-event").is_some() {
        Ok(Provider::GitLab)
    } else {
        Err(WebhookError::UnknownProvider)
    }
}

/// Checks the delivery's signature (or token) against the task's webhook `secret`.
pub fn verify(
    provider: Provider,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
    secret: &str,
) -> Result<(), WebhookError> {
    let header = |name: &'static str| {
        headers.get(name).ok_or(WebhookError::MissingSignature { header: name })
    };
    match provider {
        Provider::GitHub => {
            let signature = header("x-hub-signature-256")?;
            let hex = signature.strip_prefix("sha256=").ok_or(WebhookError::BadSignature)?;
            check_hmac(secret, body, hex)
        }
        Provider::GitLab => {
            let token = header("x-gitlab-token")?;
            if bool::from(token.as_bytes().ct_eq(secret.as_bytes())) {
                Ok(())
            } else {
                Err(WebhookError::BadSignature)
            }
        }
        Provider::Gitea => {
            let signature =
                header("x-gitea-signature").or_else(|_| header("x-forgejo-signature"))?;
            check_hmac(secret, body, signature)
        }
    }
}

fn check_hmac(secret: &str, body: &[u8], hex_signature: &str) -> Result<(), WebhookError> {
    let expected = decode_hex(hex_signature.trim()).ok_or(WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| WebhookError::BadSignature)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The delivery's unique ID, for deduplication (a redelivery repeats it).
pub fn delivery_id(provider: Provider, headers: &(impl Headers + ?Sized)) -> Option<String> {
    let names: &[&str] = match provider {
        Provider::GitHub => &["x-github-delivery"],
        Provider::GitLab => &["x-gitlab-event-uuid", "idempotency-key"],
        Provider::Gitea => &["x-gitea-delivery", "x-forgejo-delivery"],
    };
    names.iter().find_map(|n| headers.get(n)).map(str::to_string)
}

/// What the delivery asks for; `Ok(None)` for events that build nothing (a ping, a branch
/// deletion, a closed pull request, a tag push).
pub fn parse(
    provider: Provider,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Option<SourceEvent>, WebhookError> {
    let event = match provider {
        Provider::GitHub => headers.get("x-github-event"),
        Provider::GitLab => headers.get("x-gitlab-event"),
        Provider::Gitea => headers.get("x-gitea-event").or_else(|| headers.get("x-forgejo-event")),
    }
    .unwrap_or_default()
    .to_string();
    // GitHub's and Gitea's default content type for a new hook is a form whose `payload`
    // field holds the JSON; the signature covers the form as sent.
    let form = headers
        .get("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let payload = match form {
        true => form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .map(|(_, value)| value.into_owned().into_bytes())
            .ok_or_else(|| WebhookError::Json("the form has no payload field".to_string()))?,
        false => body.to_vec(),
    };
    let json: Value =
        serde_json::from_slice(&payload).map_err(|e| WebhookError::Json(e.to_string()))?;
    let text = |pointer: &str, field: &'static str| {
        json.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(WebhookError::Missing { event: event.clone(), field })
    };
    let number = |pointer: &str, field: &'static str| {
        json.pointer(pointer)
            .and_then(Value::as_u64)
            .ok_or(WebhookError::Missing { event: event.clone(), field })
    };
    let push =
        |repository: &str, default_branch: &str| -> Result<Option<SourceEvent>, WebhookError> {
            let reference = text("/ref", "ref")?;
            let Some(branch) = reference.strip_prefix("refs/heads/") else {
                return Ok(None);
            };
            let commit = text("/after", "after")?;
            // A deleted branch pushes the all-zero commit: nothing to build.
            if commit.bytes().all(|b| b == b'0') {
                return Ok(None);
            }
            Ok(Some(SourceEvent::Push {
                branch: branch.to_string(),
                commit,
                repository: text(repository, "repository clone URL")?,
                default_branch: json
                    .pointer(default_branch)
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }))
        };
    match (provider, event.as_str()) {
        (Provider::GitHub | Provider::Gitea, "push") => {
            push("/repository/clone_url", "/repository/default_branch")
        }
        (Provider::GitLab, "Push Hook") => push("/project/git_http_url", "/project/default_branch"),
        (Provider::GitHub | Provider::Gitea, "pull_request") => {
            let action = text("/action", "action")?;
            if !["opened", "synchronize", "synchronized", "reopened"].contains(&action.as_str()) {
                return Ok(None);
            }
            Ok(Some(SourceEvent::PullRequest {
                number: number("/number", "number")?,
                commit: text("/pull_request/head/sha", "pull_request.head.sha")?,
                base_branch: text("/pull_request/base/ref", "pull_request.base.ref")?,
                repository: text("/repository/clone_url", "repository.clone_url")?,
            }))
        }
        (Provider::GitLab, "Merge Request Hook") => {
            let action = text("/object_attributes/action", "object_attributes.action")?;
            if !["open", "update", "reopen"].contains(&action.as_str()) {
                return Ok(None);
            }
            Ok(Some(SourceEvent::PullRequest {
                number: number("/object_attributes/iid", "object_attributes.iid")?,
                commit: text("/object_attributes/last_commit/id", "last_commit.id")?,
                base_branch: text("/object_attributes/target_branch", "target_branch")?,
                repository: text("/project/git_http_url", "project.git_http_url")?,
            }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";

    fn sign(body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
        mac.update(body);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn github_documented_signature_example_verifies() {
        // GitHub's "Validating webhook deliveries" example: this secret and body give this
        // signature.
        let body = b"Hello, World!";
        let headers: &[(&str, &str)] = &[
            ("X-GitHub-Event", "ping"),
            (
                "X-Hub-Signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
        ];
        assert_eq!(provider(headers), Ok(Provider::GitHub));
        assert_eq!(verify(Provider::GitHub, headers, body, SECRET), Ok(()));
        assert_eq!(
            verify(Provider::GitHub, headers, b"Hello, World?", SECRET),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(Provider::GitHub, &[("X-GitHub-Event", "ping")][..], body, SECRET),
            Err(WebhookError::MissingSignature { header: "x-hub-signature-256" })
        );
    }

    #[test]
    fn github_push_and_pull_request() {
        let push = br#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5","repository":{"full_name":"octo/app","clone_url":"https://github.com/octo/app.git","default_branch":"main"}}"#;
        let headers: &[(&str, &str)] = &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ];
        assert_eq!(
            parse(Provider::GitHub, headers, push),
            Ok(Some(SourceEvent::Push {
                branch: "main".into(),
                commit: "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5".into(),
                repository: "https://github.com/octo/app.git".into(),
                default_branch: Some("main".into()),
            }))
        );
        assert_eq!(
            delivery_id(Provider::GitHub, headers).as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
        let pr = br#"{"action":"synchronize","number":42,"pull_request":{"head":{"sha":"abc123"},"base":{"ref":"main"}},"repository":{"clone_url":"https://github.com/octo/app.git"}}"#;
        let headers: &[(&str, &str)] = &[("X-GitHub-Event", "pull_request")];
        let event = parse(Provider::GitHub, headers, pr).expect("parses").expect("builds");
        assert_eq!((event.event_type(), event.commit()), ("pullrequest", "abc123"));
        assert!(matches!(event, SourceEvent::PullRequest { number: 42, .. }));
        let closed = br#"{"action":"closed","number":42}"#;
        assert_eq!(parse(Provider::GitHub, headers, closed), Ok(None));
    }

    #[test]
    fn form_encoded_deliveries_carry_the_json_in_payload() {
        let json = r#"{"ref":"refs/heads/main","after":"abc","repository":{"clone_url":"https://h/r.git"}}"#;
        let body: String =
            form_urlencoded::Serializer::new(String::new()).append_pair("payload", json).finish();
        let headers: &[(&str, &str)] =
            &[("X-GitHub-Event", "push"), ("Content-Type", "application/x-www-form-urlencoded")];
        let event = parse(Provider::GitHub, headers, body.as_bytes()).expect("parses");
        assert!(matches!(event, Some(SourceEvent::Push { ref commit, .. }) if commit == "abc"));
        assert!(matches!(parse(Provider::GitHub, headers, b"other=1"), Err(WebhookError::Json(_))));
    }

    #[test]
    fn deletions_tags_and_pings_build_nothing() {
        let headers: &[(&str, &str)] = &[("X-GitHub-Event", "push")];
        let deleted = br#"{"ref":"refs/heads/old","after":"0000000000000000000000000000000000000000","repository":{"clone_url":"x"}}"#;
        assert_eq!(parse(Provider::GitHub, headers, deleted), Ok(None));
        let tag = br#"{"ref":"refs/tags/v1","after":"abc","repository":{"clone_url":"x"}}"#;
        assert_eq!(parse(Provider::GitHub, headers, tag), Ok(None));
        let ping: &[(&str, &str)] = &[("X-GitHub-Event", "ping")];
        assert_eq!(parse(Provider::GitHub, ping, br#"{"zen":"Keep it simple."}"#), Ok(None));
        assert!(matches!(
            parse(Provider::GitHub, headers, b"{not json"),
            Err(WebhookError::Json(_))
        ));
    }

    #[test]
    fn gitlab_token_push_and_merge_request() {
        let push = br#"{"object_kind":"push","ref":"refs/heads/develop","before":"95790bf891e76fee5e1747ab589903a6a1f80f22","after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","project":{"git_http_url":"http://example.com/mike/diaspora.git"}}"#;
        let headers: &[(&str, &str)] = &[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", SECRET),
            ("X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e"),
        ];
        assert_eq!(provider(headers), Ok(Provider::GitLab));
        assert_eq!(verify(Provider::GitLab, headers, push, SECRET), Ok(()));
        assert_eq!(
            verify(Provider::GitLab, headers, push, "other"),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            parse(Provider::GitLab, headers, push),
            Ok(Some(SourceEvent::Push {
                branch: "develop".into(),
                commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
                repository: "http://example.com/mike/diaspora.git".into(),
                default_branch: None,
            }))
        );
        assert!(delivery_id(Provider::GitLab, headers).is_some());
        let mr = br#"{"object_kind":"merge_request","project":{"git_http_url":"http://example.com/gitlabhq/gitlab-test.git"},"object_attributes":{"iid":1,"action":"open","target_branch":"master","last_commit":{"id":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7"}}}"#;
        let headers: &[(&str, &str)] = &[("X-Gitlab-Event", "Merge Request Hook")];
        assert_eq!(
            parse(Provider::GitLab, headers, mr),
            Ok(Some(SourceEvent::PullRequest {
                number: 1,
                commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
                base_branch: "master".into(),
                repository: "http://example.com/gitlabhq/gitlab-test.git".into(),
            }))
        );
    }

    #[test]
    fn gitea_and_forgejo_sign_the_body_in_hex() {
        let body = br#"{"ref":"refs/heads/main","after":"bffeb74224043ba2feb48d137756c8a9331c449a","repository":{"clone_url":"http://localhost:3000/gitea/webhooks.git"}}"#;
        let signature = sign(body);
        for (event, sig) in
            [("X-Gitea-Event", "X-Gitea-Signature"), ("X-Forgejo-Event", "X-Forgejo-Signature")]
        {
            let headers: &[(&str, &str)] = &[(event, "push"), (sig, &signature)];
            assert_eq!(provider(headers), Ok(Provider::Gitea));
            assert_eq!(verify(Provider::Gitea, headers, body, SECRET), Ok(()));
            assert_eq!(
                verify(Provider::Gitea, headers, body, "wrong"),
                Err(WebhookError::BadSignature)
            );
            let event = parse(Provider::Gitea, headers, body).expect("parses").expect("builds");
            assert_eq!(event.event_type(), "commit");
        }
        assert_eq!(
            provider(&[("Content-Type", "application/json")][..]),
            Err(WebhookError::UnknownProvider)
        );
    }
}
