//! Webhook deliveries as GitHub, GitLab, Gitea and Forgejo send them: their documented headers
//! and payload layout, with the repository URL, branch, commit and request number substituted.
//!
//! Sources: octokit/webhooks `payload-examples` and GitHub's "Webhook events and payloads";
//! GitLab's `doc/user/project/integrations/webhook_events.md`; Gitea's `usage/webhooks` page and
//! `services/webhook/deliver.go`; Forgejo's `user/webhooks` page and its `addDefaultHeaders`.
//! Fields kiln does not read keep the documentation's example values. Keys come out sorted
//! (serde_json without `preserve_order`), which JSON does not care about.
//!
//! Each delivery gets a fresh delivery ID. [`Delivery::signed`] adds what each host adds when
//! the hook has a secret: GitHub `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`, GitLab
//! `X-Gitlab-Token: <secret>`, Gitea `X-Gitea-Signature` / `X-Gogs-Signature: <hex>` and
//! `X-Hub-Signature-256`, Forgejo also `X-Forgejo-Signature`. (GitHub, Gitea and Forgejo also
//! send a legacy SHA-1 `X-Hub-Signature`, left out: kiln never reads it.)
//!
//! Note that Gitea and Forgejo also send `X-GitHub-Event` and `X-GitHub-Delivery` (their
//! GitHub-compatible twins), so a receiver that checks for GitHub first treats them as GitHub,
//! which works because the payload and `X-Hub-Signature-256` are GitHub-compatible too.
//!
//! Include with `#[path = "support/webhooks.rs"] mod webhooks;`.
#![allow(dead_code)] // each includer uses its own part

use hmac::{Hmac, Mac as _};
use serde_json::{Value, json};
use sha2::Sha256;

const ZERO: &str = "0000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    GitHub,
    GitLab,
    Gitea,
    Forgejo,
}

/// One webhook request: its headers and raw body.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    host: Host,
}

impl Delivery {
    fn new(host: Host, headers: Vec<(&str, String)>, body: &Value) -> Delivery {
        Delivery {
            headers: headers.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
            body: serde_json::to_vec_pretty(body).expect("JSON"),
            host,
        }
    }

    /// The delivery as sent by a hook configured with `secret`.
    pub fn signed(mut self, secret: &str) -> Delivery {
        let hex = hmac_sha256_hex(secret, &self.body);
        let added: Vec<(&str, String)> = match self.host {
            Host::GitHub => vec![("X-Hub-Signature-256", format!("sha256={hex}"))],
            Host::GitLab => vec![("X-Gitlab-Token", secret.to_string())],
            Host::Gitea => vec![
                ("X-Gitea-Signature", hex.clone()),
                ("X-Gogs-Signature", hex.clone()),
                ("X-Hub-Signature-256", format!("sha256={hex}")),
            ],
            Host::Forgejo => vec![
                ("X-Forgejo-Signature", hex.clone()),
                ("X-Gitea-Signature", hex.clone()),
                ("X-Gogs-Signature", hex.clone()),
                ("X-Hub-Signature-256", format!("sha256={hex}")),
            ],
        };
        self.headers.extend(added.into_iter().map(|(n, v)| (n.to_string(), v)));
        self
    }

    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The headers as `(name, value)` string slices.
    pub fn header_pairs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }
}

fn hmac_sha256_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// `a` with the fields of `b` added (both objects).
fn merged(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// A random (version 4) UUID, as the hosts use for delivery IDs.
fn uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the operating system's random source works");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The parts of a repository URL the payloads repeat.
struct Names {
    /// `http://host:port` (no user info).
    web_root: String,
    /// `host` or `host:port`.
    host: String,
    /// `owner/name`.
    full_name: String,
    owner: String,
    name: String,
}

fn names(repo_url: &str) -> Names {
    let (scheme, rest) = repo_url.split_once("://").unwrap_or(("https", repo_url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit('@').next().unwrap_or(authority).to_string();
    let full_name = path.trim_end_matches('/').trim_end_matches(".git").to_string();
    let (owner, name) = match full_name.rsplit_once('/') {
        Some((owner, name)) => (owner.to_string(), name.to_string()),
        None => ("kiln".to_string(), full_name.clone()),
    };
    Names { web_root: format!("{scheme}://{host}"), host, full_name, owner, name }
}

// --- GitHub ----------------------------------------------------------------------------------

fn github_headers(event: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json".into()),
        ("User-Agent", "GitHub-Hookshot/044aadd".into()),
        ("X-GitHub-Delivery", uuid()),
        ("X-GitHub-Event", event.into()),
        ("X-GitHub-Hook-ID", "292430182".into()),
        ("X-GitHub-Hook-Installation-Target-ID", "79929171".into()),
        ("X-GitHub-Hook-Installation-Target-Type", "repository".into()),
    ]
}

fn github_user(n: &Names) -> Value {
    json!({
        "login": n.owner,
        "id": 21031067,
        "node_id": "MDQ6VXNlcjIxMDMxMDY3",
        "avatar_url": "https://avatars1.githubusercontent.com/u/21031067?v=4",
        "gravatar_id": "",
        "url": format!("https://api.github.com/users/{}", n.owner),
        "html_url": format!("{}/{}", n.web_root, n.owner),
        "type": "User",
        "site_admin": false
    })
}

fn github_repository(repo_url: &str, n: &Names) -> Value {
    let web = format!("{}/{}", n.web_root, n.full_name);
    let api = format!("https://api.github.com/repos/{}", n.full_name);
    json!({
        "id": 186853002,
        "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
        "name": n.name,
        "full_name": n.full_name,
        "private": false,
        "owner": github_user(n),
        "html_url": web,
        "description": null,
        "fork": false,
        "url": api,
        "pulls_url": format!("{api}/pulls{{/number}}"),
        "created_at": "2019-05-15T15:19:25Z",
        "updated_at": "2019-05-15T15:20:41Z",
        "pushed_at": "2019-05-15T15:20:57Z",
        "git_url": format!("git://{}/{}.git", n.host, n.full_name),
        "ssh_url": format!("git@{}:{}.git", n.host, n.full_name),
        "clone_url": repo_url,
        "svn_url": web,
        "homepage": null,
        "size": 0,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": null,
        "has_issues": true,
        "forks_count": 0,
        "archived": false,
        "disabled": false,
        "open_issues_count": 1,
        "license": null,
        "default_branch": "main",
        "is_template": false,
        "topics": [],
        "visibility": "public"
    })
}

/// GitHub `push` of `commit` to `branch` (a new branch: `before` is all zeros).
pub fn github_push(repo_url: &str, branch: &str, commit: &str) -> Delivery {
    let n = names(repo_url);
    let web = format!("{}/{}", n.web_root, n.full_name);
    let head_commit = json!({
        "id": commit,
        "tree_id": "31b122c26a97cf9af023e9ddab94a82c6e77b0ea",
        "distinct": true,
        "message": "Update the Dockerfile",
        "timestamp": "2019-05-15T15:20:30Z",
        "url": format!("{web}/commit/{commit}"),
        "author": {"name": n.owner, "email": "kiln-test@example.invalid", "username": n.owner},
        "committer": {"name": n.owner, "email": "kiln-test@example.invalid", "username": n.owner},
        "added": [],
        "removed": [],
        "modified": ["Dockerfile"]
    });
    let mut repository = github_repository(repo_url, &n);
    // Push events give these two as Unix times.
    repository["created_at"] = json!(1557933565);
    repository["pushed_at"] = json!(1557933657);
    let body = json!({
        "ref": format!("refs/heads/{branch}"),
        "before": ZERO,
        "after": commit,
        "repository": repository,
        "pusher": {"name": n.owner, "email": "kiln-test@example.invalid"},
        "sender": github_user(&n),
        "created": true,
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": format!("{web}/commit/{commit}"),
        "commits": [head_commit.clone()],
        "head_commit": head_commit
    });
    Delivery::new(Host::GitHub, github_headers("push"), &body)
}

/// GitHub `pull_request` with `action` (`opened`, `synchronize`, `closed`, …) for pull request
/// `number`, whose head is `head_sha`, into `base_branch`.
pub fn github_pull_request(
    repo_url: &str,
    number: u64,
    head_sha: &str,
    base_branch: &str,
    action: &str,
) -> Delivery {
    let n = names(repo_url);
    let repository = github_repository(repo_url, &n);
    let web = format!("{}/{}", n.web_root, n.full_name);
    let api = format!("https://api.github.com/repos/{}", n.full_name);
    let head_ref = format!("feature-{number}");
    let closed = action == "closed";
    let pull_request = json!({
            "url": format!("{api}/pulls/{number}"),
            "id": 279147437,
            "node_id": "MDExOlB1bGxSZXF1ZXN0Mjc5MTQ3NDM3",
            "html_url": format!("{web}/pull/{number}"),
            "diff_url": format!("{web}/pull/{number}.diff"),
            "patch_url": format!("{web}/pull/{number}.patch"),
            "issue_url": format!("{api}/issues/{number}"),
            "number": number,
            "state": if closed { "closed" } else { "open" },
            "locked": false,
            "title": "Update the README with new information.",
            "user": github_user(&n),
            "body": "This is a pretty simple change that we need to pull into main.",
            "created_at": "2019-05-15T15:20:33Z",
            "updated_at": "2019-05-15T15:20:33Z",
            "closed_at": null,
            "merged_at": null,
            "merge_commit_sha": null,
            "assignee": null,
            "assignees": [],
            "requested_reviewers": [],
            "requested_teams": [],
            "labels": [],
            "milestone": null,
            "draft": false,
            "commits_url": format!("{api}/pulls/{number}/commits"),
            "statuses_url": format!("{api}/statuses/{head_sha}"),
            "head": {
                "label": format!("{}:{head_ref}", n.owner),
                "ref": head_ref,
                "sha": head_sha,
                "user": github_user(&n),
                "repo": repository.clone()
            },
            "base": {
                "label": format!("{}:{base_branch}", n.owner),
                "ref": base_branch,
                "sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
                "user": github_user(&n),
                "repo": repository.clone()
            }
    });
    // In two parts: one `json!` this long exceeds the macro recursion limit.
    let more = json!({
            "author_association": "OWNER",
            "auto_merge": null,
            "active_lock_reason": null,
            "merged": false,
            "mergeable": null,
            "rebaseable": null,
            "mergeable_state": "unknown",
            "merged_by": null,
            "comments": 0,
            "review_comments": 0,
            "maintainer_can_modify": false,
            "commits": 1,
            "additions": 1,
            "deletions": 1,
            "changed_files": 1
    });
    let body = json!({
        "action": action,
        "number": number,
        "pull_request": merged(pull_request, more),
        "repository": repository,
        "sender": github_user(&n)
    });
    Delivery::new(Host::GitHub, github_headers("pull_request"), &body)
}

/// GitHub `ping`, sent when a hook is created: builds nothing.
pub fn github_ping(repo_url: &str) -> Delivery {
    let n = names(repo_url);
    let hooks = format!("https://api.github.com/repos/{}/hooks/109948940", n.full_name);
    let body = json!({
        "zen": "Anything added dilutes everything else.",
        "hook_id": 109948940,
        "hook": {
            "type": "Repository",
            "id": 109948940,
            "name": "web",
            "active": true,
            "events": ["push", "pull_request"],
            "config": {
                "content_type": "json",
                "insecure_ssl": "0",
                "url": "https://kiln.example.invalid/webhook"
            },
            "updated_at": "2019-05-15T15:20:49Z",
            "created_at": "2019-05-15T15:20:49Z",
            "url": hooks,
            "test_url": format!("{hooks}/test"),
            "ping_url": format!("{hooks}/pings"),
            "deliveries_url": format!("{hooks}/deliveries"),
            "last_response": {"code": null, "status": "unused", "message": null}
        },
        "repository": github_repository(repo_url, &n),
        "sender": github_user(&n)
    });
    Delivery::new(Host::GitHub, github_headers("ping"), &body)
}

// --- GitLab ----------------------------------------------------------------------------------

fn gitlab_headers(event: &str, n: &Names) -> Vec<(&'static str, String)> {
    vec![
        ("Content-Type", "application/json".into()),
        ("User-Agent", "GitLab/17.5.0".into()),
        ("X-Gitlab-Event", event.into()),
        ("X-Gitlab-Webhook-UUID", "b8a4e5bc-4a1d-4b4f-9e49-0c1f2f0f5d6b".into()),
        ("X-Gitlab-Instance", n.web_root.clone()),
        ("X-Gitlab-Event-UUID", uuid()),
        ("Idempotency-Key", uuid()),
    ]
}

fn gitlab_project(repo_url: &str, n: &Names) -> Value {
    let web = format!("{}/{}", n.web_root, n.full_name);
    let ssh = format!("git@{}:{}.git", n.host, n.full_name);
    json!({
        "id": 15,
        "name": n.name,
        "description": "",
        "web_url": web,
        "avatar_url": null,
        "git_ssh_url": ssh,
        "git_http_url": repo_url,
        "namespace": n.owner,
        "visibility_level": 0,
        "path_with_namespace": n.full_name,
        "default_branch": "main",
        "ci_config_path": null,
        "homepage": web,
        "url": ssh,
        "ssh_url": ssh,
        "http_url": repo_url
    })
}

fn gitlab_repository(repo_url: &str, n: &Names) -> Value {
    json!({
        "name": n.name,
        "url": format!("git@{}:{}.git", n.host, n.full_name),
        "description": "",
        "homepage": format!("{}/{}", n.web_root, n.full_name),
        "git_http_url": repo_url,
        "git_ssh_url": format!("git@{}:{}.git", n.host, n.full_name),
        "visibility_level": 0
    })
}

fn gitlab_user() -> Value {
    json!({
        "id": 1,
        "name": "Administrator",
        "username": "root",
        "avatar_url": "http://www.gravatar.com/avatar/e64c7d89f26bd1972efa854d13d7dd61?s=40&d=identicon",
        "email": "admin@example.com"
    })
}

/// GitLab `Push Hook` of `commit` to `branch` (a new branch: `before` is all zeros).
pub fn gitlab_push(repo_url: &str, branch: &str, commit: &str) -> Delivery {
    let n = names(repo_url);
    let body = json!({
        "object_kind": "push",
        "event_name": "push",
        "before": ZERO,
        "after": commit,
        "ref": format!("refs/heads/{branch}"),
        "ref_protected": branch == "main",
        "checkout_sha": commit,
        "message": null,
        "user_id": 4,
        "user_name": "John Smith",
        "user_username": "jsmith",
        "user_email": "john@example.com",
        "user_avatar": "https://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=80",
        "project_id": 15,
        "project": gitlab_project(repo_url, &n),
        "commits": [{
            "id": commit,
            "message": "Update the Dockerfile\n",
            "title": "Update the Dockerfile",
            "timestamp": "2012-01-03T23:36:29+02:00",
            "url": format!("{}/{}/-/commit/{commit}", n.web_root, n.full_name),
            "author": {"name": "GitLab dev user", "email": "gitlabdev@example.com"},
            "added": [],
            "modified": ["Dockerfile"],
            "removed": []
        }],
        "total_commits_count": 1,
        "push_options": {},
        "repository": gitlab_repository(repo_url, &n)
    });
    Delivery::new(Host::GitLab, gitlab_headers("Push Hook", &n), &body)
}

/// GitLab `Merge Request Hook` with `action` (`open`, `update`, `close`, `reopen`, `merge`) for
/// merge request `iid`, whose last commit is `last_commit`, into `target_branch`.
pub fn gitlab_merge_request(
    repo_url: &str,
    iid: u64,
    last_commit: &str,
    target_branch: &str,
    action: &str,
) -> Delivery {
    let n = names(repo_url);
    let project = gitlab_project(repo_url, &n);
    let web = format!("{}/{}", n.web_root, n.full_name);
    let state = match action {
        "close" => "closed",
        "merge" => "merged",
        _ => "opened",
    };
    // In parts: one `json!` this long exceeds the macro recursion limit.
    let attributes = json!({
        "id": 99,
        "iid": iid,
        "target_branch": target_branch,
        "source_branch": format!("feature-{iid}"),
        "source_project_id": 15,
        "author_id": 51,
        "assignee_ids": [],
        "assignee_id": null,
        "reviewer_ids": [],
        "title": "MS-Viewport",
        "created_at": "2013-12-03T17:23:34Z",
        "updated_at": "2013-12-03T17:23:34Z",
        "last_edited_at": null,
        "last_edited_by_id": null,
        "milestone_id": null,
        "state_id": 1,
        "state": state,
        "blocking_discussions_resolved": true,
        "work_in_progress": false,
        "draft": false,
        "first_contribution": true
    });
    let more_attributes = json!({
        "merge_status": "unchecked",
        "target_project_id": 15,
        "description": "",
        "prepared_at": "2013-12-03T19:23:34Z",
        "total_time_spent": 0,
        "time_change": 0,
        "human_total_time_spent": null,
        "human_time_change": null,
        "human_time_estimate": null,
        "url": format!("{web}/-/merge_requests/{iid}"),
        "source": project.clone(),
        "target": project.clone(),
        "last_commit": {
            "id": last_commit,
            "message": "fixed readme",
            "title": "Update file README.md",
            "timestamp": "2012-01-03T23:36:29+02:00",
            "url": format!("{web}/-/commit/{last_commit}"),
            "author": {"name": "GitLab dev user", "email": "gitlabdev@example.com"}
        },
        "labels": [],
        "action": action,
        "detailed_merge_status": "mergeable"
    });
    let body = json!({
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "user": gitlab_user(),
        "project": project,
        "repository": {
            "name": n.name,
            "url": repo_url,
            "description": "",
            "homepage": web
        },
        "object_attributes": merged(attributes, more_attributes),
        "labels": [],
        "changes": {},
        "assignees": [],
        "reviewers": []
    });
    Delivery::new(Host::GitLab, gitlab_headers("Merge Request Hook", &n), &body)
}

// --- Gitea and Forgejo -----------------------------------------------------------------------

fn gitea_user(n: &Names) -> Value {
    json!({
        "id": 1,
        "login": n.owner,
        "full_name": n.owner,
        "email": "someone@example.invalid",
        "avatar_url": format!("{}/avatars/1", n.web_root),
        "username": n.owner
    })
}

fn gitea_push_body(repo_url: &str, branch: &str, commit: &str) -> Value {
    let n = names(repo_url);
    let web = format!("{}/{}", n.web_root, n.full_name);
    let head_commit = json!({
        "id": commit,
        "message": "Webhooks Yay!\n",
        "url": format!("{web}/commit/{commit}"),
        "author": {"name": n.owner, "email": "someone@example.invalid", "username": n.owner},
        "committer": {"name": n.owner, "email": "someone@example.invalid", "username": n.owner},
        "verification": null,
        "timestamp": "2017-03-13T13:52:11-04:00",
        "added": [],
        "removed": [],
        "modified": ["Dockerfile"]
    });
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": ZERO,
        "after": commit,
        "compare_url": "",
        "commits": [head_commit.clone()],
        "total_commits": 1,
        "head_commit": head_commit,
        "repository": {
            "id": 140,
            "owner": gitea_user(&n),
            "name": n.name,
            "full_name": n.full_name,
            "description": "",
            "empty": false,
            "private": false,
            "fork": false,
            "template": false,
            "parent": null,
            "mirror": false,
            "size": 0,
            "html_url": web,
            "ssh_url": format!("ssh://git@{}/{}.git", n.host, n.full_name),
            "clone_url": repo_url,
            "original_url": "",
            "website": "",
            "stars_count": 0,
            "forks_count": 0,
            "watchers_count": 1,
            "open_issues_count": 0,
            "default_branch": "main",
            "archived": false,
            "created_at": "2017-02-26T04:29:06-05:00",
            "updated_at": "2017-03-13T13:51:58-04:00"
        },
        "pusher": gitea_user(&n),
        "sender": gitea_user(&n)
    })
}

/// Gitea `push` of `commit` to `branch`, with Gitea's GitHub- and Gogs-compatible twin headers.
pub fn gitea_push(repo_url: &str, branch: &str, commit: &str) -> Delivery {
    let id = uuid();
    let headers = vec![
        ("Content-Type", "application/json".to_string()),
        ("User-Agent", "Go-http-client/1.1".to_string()),
        ("X-Gitea-Delivery", id.clone()),
        ("X-Gitea-Event", "push".to_string()),
        ("X-Gitea-Event-Type", "push".to_string()),
        ("X-Gogs-Delivery", id.clone()),
        ("X-Gogs-Event", "push".to_string()),
        ("X-Gogs-Event-Type", "push".to_string()),
        ("X-GitHub-Delivery", id),
        ("X-GitHub-Event", "push".to_string()),
        ("X-GitHub-Event-Type", "push".to_string()),
    ];
    Delivery::new(Host::Gitea, headers, &gitea_push_body(repo_url, branch, commit))
}

/// Forgejo `push` of `commit` to `branch`: Gitea's delivery, with `X-Forgejo-*` headers besides
/// the Gitea, Gogs and GitHub twins.
pub fn forgejo_push(repo_url: &str, branch: &str, commit: &str) -> Delivery {
    let mut delivery = gitea_push(repo_url, branch, commit);
    let id = delivery.header("X-Gitea-Delivery").expect("a delivery ID").to_string();
    let forgejo = [
        ("X-Forgejo-Delivery".to_string(), id),
        ("X-Forgejo-Event".to_string(), "push".to_string()),
        ("X-Forgejo-Event-Type".to_string(), "push".to_string()),
    ];
    delivery.headers.splice(2..2, forgejo);
    delivery.host = Host::Forgejo;
    delivery
}
