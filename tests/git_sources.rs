//! Git build contexts fetched by the worker (`kiln_worker::build::remote`) from real git servers
//! on loopback — `git daemon`, `git http-backend` behind HTTP (optionally with a token) and
//! `file://` — and the webhook deliveries (issue 6) that name what to fetch, in each git host's
//! real format, checked against `kiln_server::trigger::webhook`.
//!
//! Every test builds its own repositories and servers in its own tempdirs.

#[path = "support/git.rs"]
mod git;
#[path = "support/webhooks.rs"]
mod webhooks;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use git::{GitDaemon, GitHttp, Repo, Root, SshServer};
use kiln_plan::plan::GitSsh;
use kiln_plan::remote::{Remote, detect};
use kiln_server::trigger::webhook::{self, Provider, SourceEvent, WebhookError};
use kiln_worker::build::remote::{Fetched, RemoteError, fetch};
use webhooks::Delivery;

const SECRET: &str = "It's a Secret to Everybody";
const TOKEN: &str = "glpat-Zq8kiln7TOKEN3x";

/// The commits of the standard test repository.
struct App {
    /// `main`, oldest first; `main` ends at `main[2]`.
    main: Vec<String>,
    /// Branch `feature`, one commit on top of `main[1]`.
    feature: String,
}

/// Pushes the standard repository to `root/<name>.git`: `Dockerfile` saying which commit it is,
/// `app/Dockerfile` for subfolder contexts, three commits on `main`, one on `feature`.
fn push_app(root: &Root, name: &str) -> App {
    let repo = Repo::init();
    let bare = root.bare(name);
    repo.commit_file("app/Dockerfile", "FROM scratch\nLABEL part=app\n", "app");
    let mut main = vec![repo.commit_file("Dockerfile", "main 1\n", "one")];
    main.push(repo.commit_file("Dockerfile", "main 2\n", "two"));
    repo.branch("feature");
    main.push(repo.commit_file("Dockerfile", "main 3\n", "three"));
    repo.checkout("feature");
    let feature = repo.commit_file("Dockerfile", "feature\n", "feature");
    repo.push(&bare, "main");
    repo.push(&bare, "feature");
    App { main, feature }
}

/// Log lines the fetch wrote.
#[derive(Default)]
struct Log(Mutex<Vec<u8>>);

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Fetches `context` (a URL with an optional `#ref:subdir`) into a fresh directory under `work`.
async fn fetch_context(context: &str, work: &Path, log: &Log) -> Result<Fetched, RemoteError> {
    fetch_with(context, work, log, None).await
}

/// [`fetch_context`] with an SSH identity.
async fn fetch_with(
    context: &str,
    work: &Path,
    log: &Log,
    ssh: Option<&GitSsh>,
) -> Result<Fetched, RemoteError> {
    let remote = detect(context)?.unwrap_or_else(|| panic!("{context} is not remote"));
    assert!(matches!(remote, Remote::Git { .. }), "{context} is a git context: {remote:?}");
    static FETCHES: AtomicUsize = AtomicUsize::new(0);
    let dest = work.join(format!("context-{}", FETCHES.fetch_add(1, Ordering::Relaxed)));
    let sink = |bytes: &[u8]| log.0.lock().unwrap().extend_from_slice(bytes);
    fetch(&remote, &dest, ssh, None, &sink).await
}

async fn fetch_ok(context: &str, work: &Path) -> Fetched {
    let log = Log::default();
    fetch_context(context, work, &log).await.unwrap_or_else(|e| panic!("{context}: {e}"))
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A named ref is fetched at depth 1: libgit2 records the cut in `.git/shallow`.
fn is_shallow(fetched: &Fetched) -> bool {
    fetched.context_dir.join(".git/shallow").is_file()
}

/// Branches, the default branch and an abbreviated commit, at the right commit; refs shallow.
async fn check_branches(url: &str, app: &App) {
    let work = tempfile::tempdir().unwrap();
    for (fragment, commit, content) in [
        ("#main", &app.main[2], "main 3\n"),
        ("#feature", &app.feature, "feature\n"),
        ("", &app.main[2], "main 3\n"),
    ] {
        let context = format!("{url}{fragment}");
        let fetched = fetch_ok(&context, work.path()).await;
        assert_eq!(fetched.commit.as_ref(), Some(commit), "{context}");
        assert_eq!(read(&fetched.context_dir, "Dockerfile"), content, "{context}");
        assert!(is_shallow(&fetched), "{context} is fetched shallow");
    }
    // A push names its commit in full: while it is the branch's tip, that ref is fetched shallow.
    let context = format!("{url}#{}", app.main[2]);
    let fetched = fetch_ok(&context, work.path()).await;
    assert_eq!(fetched.commit.as_ref(), Some(&app.main[2]), "{context}");
    assert!(is_shallow(&fetched), "{context}: a tip commit is fetched shallow");
    // An abbreviated commit needs the history: a full fetch.
    let context = format!("{url}#{}", &app.main[0][..10]);
    let fetched = fetch_ok(&context, work.path()).await;
    assert_eq!(fetched.commit.as_ref(), Some(&app.main[0]), "{context}");
    assert_eq!(read(&fetched.context_dir, "Dockerfile"), "main 1\n", "{context}");
}

#[tokio::test]
async fn shallow_branch_fetch_over_git_daemon() {
    let root = Root::new();
    let app = push_app(&root, "app");
    let daemon = GitDaemon::start(root.path());
    check_branches(&daemon.url("app"), &app).await;
}

#[tokio::test]
async fn shallow_branch_fetch_over_http_backend() {
    let root = Root::new();
    let app = push_app(&root, "app");
    let http = GitHttp::start(root.path(), None);
    check_branches(&http.url("app"), &app).await;
    assert!(http.requests() > 0);
    assert_eq!(http.rejected(), 0);
}

/// A commit behind every tip is asked for alone where the server allows it (GitHub and GitLab
/// do; git with `uploadpack.allowReachableSHA1InWant`): one commit, no history.
#[tokio::test]
async fn a_commit_behind_the_tips_is_fetched_alone_where_the_server_allows_it() {
    let root = Root::new();
    let app = push_app(&root, "app");
    git::git(&root.bare("app"), &["config", "uploadpack.allowReachableSHA1InWant", "true"]);
    let daemon = GitDaemon::start(root.path());
    let work = tempfile::tempdir().unwrap();
    let context = format!("{}#{}", daemon.url("app"), app.main[0]);
    let fetched = fetch_ok(&context, work.path()).await;
    assert_eq!(fetched.commit.as_ref(), Some(&app.main[0]), "{context}");
    assert_eq!(read(&fetched.context_dir, "Dockerfile"), "main 1\n", "{context}");
    assert!(is_shallow(&fetched), "{context}: fetched alone, without the history");
}

/// Azure/acr#152: ACR builds the branch head when the webhook arrives, so two quick pushes build
/// the second commit twice. Each delivery names its commit, and fetching `<repository>#<commit>`
/// builds exactly that commit although `main` has moved on since.
#[tokio::test]
async fn each_push_builds_its_own_commit_after_the_branch_moved() {
    let root = Root::new();
    let http = GitHttp::start(root.path(), None);
    let daemon = GitDaemon::start(root.path());
    let url = http.url("app");
    let bare = root.bare("app");
    let repo = Repo::init();
    let mut deliveries = Vec::new();
    for (i, make) in
        [webhooks::github_push, webhooks::gitlab_push, webhooks::gitea_push].into_iter().enumerate()
    {
        let content = format!("push {i}\n");
        let commit = repo.commit_file("Dockerfile", &content, &content);
        repo.push(&bare, "main");
        deliveries.push((make(&url, "main", &commit).signed(SECRET), commit, content));
    }
    let work = tempfile::tempdir().unwrap();
    // Handled after the last push, as a queue behind a busy worker would.
    for (delivery, commit, content) in deliveries {
        let headers = delivery.header_pairs();
        let provider = webhook::provider(&headers[..]).expect("a known host");
        webhook::verify(provider, &headers[..], &delivery.body, SECRET).expect("authentic");
        let event = webhook::parse(provider, &headers[..], &delivery.body).expect("parses");
        let Some(SourceEvent::Push { branch, commit: pushed, repository, .. }) = event else {
            panic!("a push: {event:?}");
        };
        assert_eq!((branch.as_str(), &pushed, &repository), ("main", &commit, &url));
        for repository in [&repository, &daemon.url("app")] {
            let fetched = fetch_ok(&format!("{repository}#{pushed}"), work.path()).await;
            assert_eq!(fetched.commit.as_ref(), Some(&commit), "{repository}");
            assert_eq!(read(&fetched.context_dir, "Dockerfile"), content, "{repository}");
        }
    }
}

/// Pull and merge request heads as GitHub (`refs/pull/N/head`) and GitLab
/// (`refs/merge-requests/N/head`) publish them: by ref, and by the commit a pull request event
/// names, also once the request's head has moved on (the commit is on no branch: it came from a
/// fork).
#[tokio::test]
async fn pull_and_merge_request_refs() {
    let root = Root::new();
    let bare = root.bare("app");
    let repo = Repo::init();
    let base = repo.commit_file("Dockerfile", "base\n", "base");
    repo.push(&bare, "main");
    repo.checkout(&base);
    let pr_first = repo.commit_file("Dockerfile", "pr 1 first\n", "pr first");
    repo.push(&bare, "HEAD:refs/pull/1/head");
    let pr_head = repo.commit_file("Dockerfile", "pr 1 head\n", "pr head");
    repo.push(&bare, "HEAD:refs/pull/1/head");
    repo.checkout(&base);
    let mr_head = repo.commit_file("Dockerfile", "mr 1\n", "mr");
    repo.push(&bare, "HEAD:refs/merge-requests/1/head");

    let http = GitHttp::start(root.path(), None);
    let daemon = GitDaemon::start(root.path());
    let work = tempfile::tempdir().unwrap();
    for url in [http.url("app"), daemon.url("app")] {
        for (fragment, commit, content) in [
            ("pull/1/head", &pr_head, "pr 1 head\n"),
            ("refs/pull/1/head", &pr_head, "pr 1 head\n"),
            ("refs/merge-requests/1/head", &mr_head, "mr 1\n"),
            ("merge-requests/1/head", &mr_head, "mr 1\n"),
        ] {
            let context = format!("{url}#{fragment}");
            let fetched = fetch_ok(&context, work.path()).await;
            assert_eq!(fetched.commit.as_ref(), Some(commit), "{context}");
            assert_eq!(read(&fetched.context_dir, "Dockerfile"), content, "{context}");
        }
        let deliveries = [
            (webhooks::github_pull_request(&url, 1, &pr_first, "main", "synchronize"), &pr_first),
            (webhooks::github_pull_request(&url, 1, &pr_head, "main", "synchronize"), &pr_head),
            (webhooks::gitlab_merge_request(&url, 1, &mr_head, "main", "open"), &mr_head),
        ];
        for (delivery, commit) in deliveries {
            let headers = delivery.header_pairs();
            let provider = webhook::provider(&headers[..]).expect("a known host");
            let event = webhook::parse(provider, &headers[..], &delivery.body).expect("parses");
            let Some(SourceEvent::PullRequest { number: 1, commit: named, repository, .. }) = event
            else {
                panic!("a pull request: {event:?}");
            };
            let context = format!("{repository}#{named}");
            let fetched = fetch_ok(&context, work.path()).await;
            assert_eq!(fetched.commit.as_ref(), Some(commit), "{context}");
        }
    }
}

/// `app` → `libs/lib` → `libs/lib/deep`, each submodule served by the same server as `app`.
async fn check_submodules(root: &Root, url: impl Fn(&str) -> String) {
    let deep = Repo::init();
    deep.commit_file("deep.txt", "deep\n", "deep");
    deep.push(&root.bare("deep"), "main");
    let lib = Repo::init();
    lib.commit_file("lib.txt", "library\n", "lib");
    lib.add_submodule(&url("deep"), "deep", "deep submodule");
    lib.push(&root.bare("lib"), "main");
    let app = Repo::init();
    app.commit_file("Dockerfile", "FROM scratch\n", "app");
    let commit = app.add_submodule(&url("lib"), "libs/lib", "lib submodule");
    app.push(&root.bare("app"), "main");

    let work = tempfile::tempdir().unwrap();
    let context = format!("{}#main", url("app"));
    let fetched = fetch_ok(&context, work.path()).await;
    assert_eq!(fetched.commit, Some(commit), "{context}");
    assert_eq!(read(&fetched.context_dir, "libs/lib/lib.txt"), "library\n", "{context}");
    assert_eq!(read(&fetched.context_dir, "libs/lib/deep/deep.txt"), "deep\n", "{context}");
}

#[tokio::test]
async fn recursive_submodules_over_git_daemon() {
    let root = Root::new();
    let daemon = GitDaemon::start(root.path());
    check_submodules(&root, |name| daemon.url(name)).await;
}

#[tokio::test]
async fn recursive_submodules_over_http_backend() {
    let root = Root::new();
    let http = GitHttp::start(root.path(), None);
    check_submodules(&root, |name| http.url(name)).await;
}

/// `file://` submodules: the git CLI refuses them unless `protocol.file.allow` says otherwise
/// (the fixture allows them); libgit2 fetches them.
#[tokio::test]
async fn recursive_submodules_over_file_urls() {
    let root = Root::new();
    check_submodules(&root, |name| root.file_url(name)).await;
}

/// A token in the URL is the password of Basic auth (and a bare token is taken as one); without
/// it, or with another, the fetch fails, and neither the error nor the log shows a token.
#[tokio::test]
async fn token_auth_over_http_backend() {
    let root = Root::new();
    let app = push_app(&root, "app");
    let http = GitHttp::start(root.path(), Some(TOKEN));
    let work = tempfile::tempdir().unwrap();

    let plain = http.url("app");
    let as_user = plain.replacen("http://", &format!("http://{TOKEN}@"), 1);
    for url in [http.url_with_token("app", "kiln", TOKEN), as_user] {
        let log = Log::default();
        let context = format!("{url}#main");
        let fetched = fetch_context(&context, work.path(), &log)
            .await
            .unwrap_or_else(|e| panic!("with the token: {e}"));
        assert_eq!(fetched.commit.as_ref(), Some(&app.main[2]));
        assert!(log.text().contains("***@127.0.0.1"), "masked: {}", log.text());
        assert!(!log.text().contains(TOKEN), "the log shows the token: {}", log.text());
    }
    let rejected_before = http.rejected();

    let wrong = "wrong-token-9f8e7d";
    for url in [plain, http.url_with_token("app", "kiln", wrong)] {
        let log = Log::default();
        let context = format!("{url}#main");
        let error = fetch_context(&context, work.path(), &log)
            .await
            .expect_err("a fetch without the right token fails");
        let shown = format!("{error} {error:?} {}", log.text());
        assert!(matches!(error, RemoteError::Git { .. }), "{shown}");
        assert!(!shown.contains(TOKEN) && !shown.contains(wrong), "a token is shown: {shown}");
    }
    assert!(http.rejected() > rejected_before, "the server refused the requests");
}

/// `#<ref>:<dir>` builds in a folder of the repository; a folder that is not there is an error.
/// SSH remotes: fetched with the identity's key, by branch and by commit, from a host whose key
/// the identity's known_hosts lists (plain or hashed as Debian's ssh writes it); an unknown or
/// changed host key, a key the server refuses, or no identity at all stop the fetch with what
/// to do.
#[tokio::test]
async fn ssh_remotes_need_the_key_and_a_known_host() {
    let root = Root::new();
    let app = push_app(&root, "app");
    let sshd = SshServer::start();
    let url = sshd.url(&root.bare("app"));
    let work = tempfile::tempdir().unwrap();
    let identity = |key: &Path, known_hosts: &str| GitSsh {
        private_key: std::fs::read_to_string(key).unwrap(),
        known_hosts: known_hosts.to_string(),
        known_hosts_file: "/etc/kiln/known_hosts".to_string(),
    };
    let known = identity(&sshd.client_key(), &sshd.known_hosts_line());
    for (fragment, commit) in
        [("#main", &app.main[2]), (&format!("#{}", app.main[0]), &app.main[0])]
    {
        let log = Log::default();
        let context = format!("{url}{fragment}");
        let fetched = fetch_with(&context, work.path(), &log, Some(&known))
            .await
            .unwrap_or_else(|e| panic!("{context}: {e}\n{}", log.text()));
        assert_eq!(fetched.commit.as_ref(), Some(commit), "{context}");
    }

    // A hashed known_hosts, as `ssh-keygen -H` (and Debian's default HashKnownHosts) writes it.
    let file = work.path().join("known_hosts");
    std::fs::write(&file, sshd.known_hosts_line()).unwrap();
    let status = std::process::Command::new("ssh-keygen").arg("-Hf").arg(&file).output().unwrap();
    assert!(status.status.success(), "{status:?}");
    let hashed = std::fs::read_to_string(&file).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    let context = format!("{url}#main");
    let log = Log::default();
    fetch_with(&context, work.path(), &log, Some(&identity(&sshd.client_key(), &hashed)))
        .await
        .unwrap_or_else(|e| panic!("hashed known_hosts: {e}"));

    let refused = |ssh: Option<GitSsh>| {
        let (context, work) = (context.clone(), work.path().to_path_buf());
        async move {
            let log = Log::default();
            let err = fetch_with(&context, &work, &log, ssh.as_ref()).await.unwrap_err();
            err.to_string()
        }
    };
    let port = sshd.port();
    let shown = format!("[127.0.0.1]:{port} (ssh-ed25519 {})", sshd.fingerprint());
    let err = refused(Some(identity(&sshd.client_key(), ""))).await;
    assert!(
        err.contains(&format!(
            "the host key of {shown} is not in /etc/kiln/known_hosts; if that is the server's \
             key, add it: ssh-keyscan -p {port} 127.0.0.1 >> /etc/kiln/known_hosts"
        )),
        "{err}"
    );
    let impostor = tempfile::tempdir().unwrap();
    git::keygen(&impostor.path().join("key"));
    let public = std::fs::read_to_string(impostor.path().join("key.pub")).unwrap();
    let other_line = format!("[127.0.0.1]:{port} {public}");
    let err = refused(Some(identity(&sshd.client_key(), &other_line))).await;
    assert!(err.contains(&format!("the host key of {shown} is not the one")), "{err}");
    let err = refused(Some(identity(&impostor.path().join("key"), &sshd.known_hosts_line()))).await;
    assert!(err.contains("the server's SSH key was refused for user"), "{err}");
    let err = refused(None).await;
    assert!(err.contains("an SSH remote needs an SSH key: the task's"), "{err}");
}

#[tokio::test]
async fn subfolder_context() {
    let root = Root::new();
    let app = push_app(&root, "app");
    let daemon = GitDaemon::start(root.path());
    let work = tempfile::tempdir().unwrap();
    for fragment in ["#main:app", "#:app"] {
        let context = format!("{}{fragment}", daemon.url("app"));
        let fetched = fetch_ok(&context, work.path()).await;
        assert_eq!(fetched.commit.as_ref(), Some(&app.main[2]), "{context}");
        assert!(fetched.context_dir.ends_with("app"), "{context}: {fetched:?}");
        assert_eq!(read(&fetched.context_dir, "Dockerfile"), "FROM scratch\nLABEL part=app\n");
    }
    let context = format!("{}#main:missing", daemon.url("app"));
    let error = fetch_context(&context, work.path(), &Log::default()).await.unwrap_err();
    assert!(matches!(error, RemoteError::MissingSubdir { .. }), "{error}");
}

/// Every fixture verifies with its secret and with no other, says who sent it, carries a fresh
/// delivery ID, and parses to the event it describes (or to nothing).
#[test]
fn webhook_fixtures_verify_and_parse() {
    let url = "http://git.example.test:3000/octo/app.git";
    let sha = "59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5";
    let push = Some(SourceEvent::Push {
        branch: "main".into(),
        commit: sha.into(),
        repository: url.into(),
        default_branch: Some("main".into()),
    });
    let request = |number| {
        Some(SourceEvent::PullRequest {
            number,
            commit: sha.into(),
            base_branch: "main".into(),
            repository: url.into(),
        })
    };
    // Gitea and Forgejo send GitHub-compatible twins of their headers (see support/webhooks.rs),
    // so either reading is right for them.
    let github = [Provider::GitHub].as_slice();
    let gitlab = [Provider::GitLab].as_slice();
    let gitea = [Provider::Gitea, Provider::GitHub].as_slice();
    let cases: Vec<(Delivery, &[Provider], &str, Option<SourceEvent>)> = vec![
        (webhooks::github_push(url, "main", sha), github, "X-GitHub-Delivery", push.clone()),
        (
            webhooks::github_pull_request(url, 7, sha, "main", "opened"),
            github,
            "X-GitHub-Delivery",
            request(7),
        ),
        (
            webhooks::github_pull_request(url, 7, sha, "main", "synchronize"),
            github,
            "X-GitHub-Delivery",
            request(7),
        ),
        (
            webhooks::github_pull_request(url, 7, sha, "main", "closed"),
            github,
            "X-GitHub-Delivery",
            None,
        ),
        (webhooks::github_ping(url), github, "X-GitHub-Delivery", None),
        (webhooks::gitlab_push(url, "main", sha), gitlab, "X-Gitlab-Event-UUID", push.clone()),
        (
            webhooks::gitlab_merge_request(url, 3, sha, "main", "open"),
            gitlab,
            "X-Gitlab-Event-UUID",
            request(3),
        ),
        (
            webhooks::gitlab_merge_request(url, 3, sha, "main", "update"),
            gitlab,
            "X-Gitlab-Event-UUID",
            request(3),
        ),
        (
            webhooks::gitlab_merge_request(url, 3, sha, "main", "merge"),
            gitlab,
            "X-Gitlab-Event-UUID",
            None,
        ),
        (webhooks::gitea_push(url, "main", sha), gitea, "X-Gitea-Delivery", push.clone()),
        (webhooks::forgejo_push(url, "main", sha), gitea, "X-Gitea-Delivery", push.clone()),
    ];
    let mut ids = HashSet::new();
    for (unsigned, providers, id_header, expected) in cases {
        let what = format!("{id_header} {:?}", String::from_utf8_lossy(&unsigned.body[..60]));
        let delivery = unsigned.clone().signed(SECRET);
        let headers = delivery.header_pairs();
        let provider = webhook::provider(&headers[..]).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(providers.contains(&provider), "{what}: {provider:?}");
        assert_eq!(
            webhook::verify(provider, &headers[..], &delivery.body, SECRET),
            Ok(()),
            "{what}"
        );
        assert_eq!(
            webhook::verify(provider, &headers[..], &delivery.body, "another secret"),
            Err(WebhookError::BadSignature),
            "{what}"
        );
        // A signature covers the body; GitLab's token is the secret itself and covers nothing.
        if provider != Provider::GitLab {
            let mut tampered = delivery.body.clone();
            tampered.push(b' ');
            assert_eq!(
                webhook::verify(provider, &headers[..], &tampered, SECRET),
                Err(WebhookError::BadSignature),
                "{what}"
            );
        }
        let unsigned_headers = unsigned.header_pairs();
        assert!(
            matches!(
                webhook::verify(provider, &unsigned_headers[..], &unsigned.body, SECRET),
                Err(WebhookError::MissingSignature { .. })
            ),
            "{what}"
        );
        assert_eq!(webhook::parse(provider, &headers[..], &delivery.body), Ok(expected), "{what}");
        let id = webhook::delivery_id(provider, &headers[..]).expect("a delivery ID");
        assert_eq!(Some(id.as_str()), delivery.header(id_header), "{what}");
        assert!(ids.insert(id), "{what}: delivery IDs are fresh");

        // Read as the host's own kind only (no GitHub twins), a Gitea or Forgejo delivery still
        // verifies, with X-Gitea-Signature or X-Forgejo-Signature, and parses the same.
        if providers.contains(&Provider::Gitea) {
            let own: Vec<(&str, &str)> = headers
                .iter()
                .copied()
                .filter(|(name, _)| {
                    let name = name.to_ascii_lowercase();
                    !name.starts_with("x-github-") && !name.starts_with("x-hub-")
                })
                .collect();
            assert_eq!(webhook::provider(&own[..]), Ok(Provider::Gitea), "{what}");
            assert_eq!(webhook::verify(Provider::Gitea, &own[..], &delivery.body, SECRET), Ok(()));
            assert_eq!(
                webhook::verify(Provider::Gitea, &own[..], &delivery.body, "another secret"),
                Err(WebhookError::BadSignature)
            );
            let forgejo_only: Vec<(&str, &str)> = own
                .iter()
                .copied()
                .filter(|(name, _)| !name.to_ascii_lowercase().starts_with("x-gitea-"))
                .collect();
            if delivery.header("X-Forgejo-Event").is_some() {
                assert_eq!(webhook::provider(&forgejo_only[..]), Ok(Provider::Gitea));
                assert_eq!(
                    webhook::verify(Provider::Gitea, &forgejo_only[..], &delivery.body, SECRET),
                    Ok(())
                );
            }
            assert_eq!(
                webhook::parse(Provider::Gitea, &own[..], &delivery.body),
                webhook::parse(provider, &headers[..], &delivery.body),
                "{what}"
            );
        }
    }
}
