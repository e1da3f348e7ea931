//! Build and push steps against the real test engine and registries (`scripts/test-env.sh`):
//! Docker 20.10 with `busybox:latest`, an open registry and one behind basic auth, all on
//! loopback. Every image a test builds carries the label `kiln.test=<test name>` and is removed at
//! the end of the test (and at its start, in case an earlier run stopped half-way). Pushed tags
//! are unique per process and stay in the throw-away test registries.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    ListContainersOptions, ListImagesOptions, LogsOptions, RemoveContainerOptions,
    RemoveImageOptions, TagImageOptions,
};
use futures_util::StreamExt;
use kiln_plan::plan::{EnvVar, RegistryCredential};
use kiln_plan::report::{self, DigestKind};
use kiln_worker::build::{self, BuildError, BuildOutcome, BuildRequest};
use kiln_worker::push::fill_pushed_digests;
use kiln_worker::push::{self, PushError};

const TEST_LABEL: &str = "kiln.test";

/// What `scripts/test-env.sh` wrote.
struct TestEnv {
    registry: String,
    auth_registry: String,
    user: String,
    password: String,
}

fn test_env() -> TestEnv {
    let dir = std::env::var("KILN_TEST_STATE_DIR").unwrap_or_else(|_| "/var/lib/kiln-test".into());
    let path = Path::new(&dir).join("env");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; run scripts/test-env.sh to start the test engine", path.display())
    });
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let get = |k: &str| vars.get(k).unwrap_or_else(|| panic!("{k} missing in {}", path.display()));
    TestEnv {
        registry: get("KILN_TEST_REGISTRY").to_string(),
        auth_registry: get("KILN_TEST_AUTH_REGISTRY").to_string(),
        user: get("KILN_TEST_REGISTRY_USER").to_string(),
        password: get("KILN_TEST_REGISTRY_PASSWORD").to_string(),
    }
}

async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("engine reachable (run scripts/test-env.sh)")
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Collects a step's log.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    fn sink(&self) -> impl Fn(&[u8]) + Send + Sync + use<> {
        let buf = self.0.clone();
        move |bytes: &[u8]| buf.lock().unwrap().extend_from_slice(bytes)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Removes every image labelled for `test` (with the untagged parents only they used).
async fn cleanup(docker: &Docker, test: &str) {
    let filters = HashMap::from([("label".to_string(), vec![format!("{TEST_LABEL}={test}")])]);
    let images = docker
        .list_images(Some(ListImagesOptions { filters: Some(filters), ..Default::default() }))
        .await
        .expect("list images");
    for image in images {
        let options = RemoveImageOptions { force: true, ..Default::default() };
        let _ = docker.remove_image(&image.id, Some(options), None).await;
    }
}

struct Workspace {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
}

fn workspace() -> Workspace {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("workspace");
    fs::create_dir(&root).unwrap();
    Workspace { _dir: dir, root }
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

async fn run_build(
    docker: &Docker,
    test: &str,
    ws: &Path,
    args: &str,
    env: &[EnvVar],
    credentials: &[RegistryCredential],
) -> (Result<BuildOutcome, BuildError>, String) {
    run_build_with_cache(docker, test, ws, args, env, credentials, None).await
}

/// [`run_build`] of a `cache: enabled` step when `cache` is given.
async fn run_build_with_cache(
    docker: &Docker,
    test: &str,
    ws: &Path,
    args: &str,
    env: &[EnvVar],
    credentials: &[RegistryCredential],
    cache: Option<build::cache::Scope<'_>>,
) -> (Result<BuildOutcome, BuildError>, String) {
    // The test's label goes in as the user's own `--label`: kiln adds none.
    let label = format!("{TEST_LABEL}={test}");
    let args: Vec<String> = ["--label", &label]
        .into_iter()
        .chain(args.split_whitespace())
        .map(str::to_string)
        .collect();
    let log = Log::default();
    let sink = log.sink();
    let req = BuildRequest {
        step_id: "build",
        args: &args,
        env,
        working_dir: ws,
        workspace: ws,
        credentials,
        git_ssh: None,
        context_limit: None,
        platform: None,
        cache,
    };
    let result = build::run(docker, &req, &sink).await;
    (result, log.text())
}

/// Runs `script` in a container of `image` and returns its output.
async fn run_in(docker: &Docker, image: &str, script: &str) -> String {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    };
    let id = docker.create_container(None, body).await.expect("create").id;
    docker.start_container(&id, None).await.expect("start");
    let _ = docker.wait_container(&id, None).collect::<Vec<_>>().await;
    let options = LogsOptions { stdout: true, stderr: true, ..Default::default() };
    let mut out = String::new();
    let mut logs = docker.logs(&id, Some(options));
    while let Some(Ok(chunk)) = logs.next().await {
        out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    let options = RemoveContainerOptions { force: true, ..Default::default() };
    docker.remove_container(&id, Some(options)).await.expect("remove container");
    out
}

/// The digest the registry reports for `repo:tag` (schema 2 manifest).
async fn registry_digest(
    registry: &str,
    repo: &str,
    tag: &str,
    auth: Option<(&str, &str)>,
) -> String {
    let url = format!("http://{registry}/v2/{repo}/manifests/{tag}");
    let auth = auth.map(|(u, p)| {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))
    });
    tokio::task::spawn_blocking(move || {
        let mut request = ureq::get(&url)
            .header("Accept", "application/vnd.docker.distribution.manifest.v2+json");
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.call().expect("manifest request");
        response
            .headers()
            .get("Docker-Content-Digest")
            .expect("Docker-Content-Digest header")
            .to_str()
            .unwrap()
            .to_string()
    })
    .await
    .unwrap()
}

fn credential(registry: &str, user: &str, password: &str) -> RegistryCredential {
    RegistryCredential {
        registry: registry.into(),
        username: user.into(),
        password: password.into(),
    }
}

/// `.dockerignore` with an exception, a bare `--build-arg` taken from the step environment,
/// `--target`, a Dockerfile outside the context, `FROM --platform=$BUILDPLATFORM … AS base`,
/// `--label`, and the dependency report of all that.
#[tokio::test]
async fn local_context_with_ignore_rules_target_and_outside_dockerfile() {
    let env = test_env();
    let docker = docker().await;
    let test = unique("local-context");
    cleanup(&docker, &test).await;
    let ws = workspace();
    let app = ws.root.join("app");
    write(&app.join(".dockerignore"), "secret.txt\n*.log\n!keep.log\n");
    write(&app.join("app.txt"), "app\n");
    write(&app.join("secret.txt"), "secret\n");
    write(&app.join("debug.log"), "noise\n");
    write(&app.join("keep.log"), "kept\n");
    write(
        &ws.root.join("docker/app.Dockerfile"),
        &format!(
            "ARG BUILDPLATFORM=linux/amd64\n\
             ARG BASE=busybox\n\
             FROM --platform=$BUILDPLATFORM $BASE AS base\n\
             ARG GREETING=unset\n\
             COPY . /ctx/\n\
             RUN echo \"$GREETING\" > /greeting\n\
             FROM base AS final\n\
             RUN echo final > /stage\n\
             FROM {}/kiln-test/never-built:none AS after\n",
            env.registry
        ),
    );
    let tag = format!("{}/kiln-test/local:{test}", env.registry);
    let step_env = [EnvVar { name: "GREETING".into(), value: "hello".into() }];
    let (result, log) = run_build(
        &docker,
        &test,
        &ws.root,
        &format!(
            "-t {tag} -f docker/app.Dockerfile --build-arg GREETING --target final \
             --label team=kiln --no-cache app"
        ),
        &step_env,
        &[],
    )
    .await;
    let outcome = result.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(!log.contains("Warning"), "no scan warnings expected:\n{log}");
    assert!(log.contains(&format!("Successfully tagged {tag}")), "{log}");
    assert_eq!(outcome.images, std::slice::from_ref(&tag));
    assert!(outcome.image_id.starts_with("sha256:"));

    let listing = run_in(&docker, &tag, "ls -A /ctx; cat /greeting /stage").await;
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines, [".dockerignore", "app.txt", "keep.log", "hello", "final"], "{listing}");

    let labels =
        docker.inspect_image(&tag).await.unwrap().config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("kiln"));
    assert_eq!(labels.get(TEST_LABEL), Some(&test));
    assert!(!labels.keys().any(|k| k.starts_with("kiln.") && k != TEST_LABEL), "{labels:?}");

    let [dep] = outcome.dependencies.as_slice() else { panic!("{:?}", outcome.dependencies) };
    let image = dep.image.as_ref().unwrap();
    assert_eq!(image.reference, tag);
    assert_eq!((image.registry.as_str(), image.digest.as_str()), (env.registry.as_str(), ""));
    let runtime = dep.runtime.as_ref().unwrap();
    assert_eq!(
        (runtime.registry.as_str(), runtime.repository.as_str(), runtime.tag.as_str()),
        ("registry.hub.docker.com", "library/busybox", "latest")
    );
    assert!(dep.buildtime.is_empty(), "stages after the target are not dependencies");
    assert_eq!(dep.git.as_ref().map(|g| g.head_revision.as_str()), Some(""));
    cleanup(&docker, &test).await;
}

#[tokio::test]
async fn failing_run_reports_the_daemon_error() {
    let docker = docker().await;
    let test = unique("failing-run");
    cleanup(&docker, &test).await;
    let ws = workspace();
    write(&ws.root.join("Dockerfile"), &format!("FROM busybox\nRUN false # {test}\n"));
    let (result, log) = run_build(&docker, &test, &ws.root, "--no-cache .", &[], &[]).await;
    match result {
        Err(BuildError::Failed { message }) => {
            assert!(message.contains("returned a non-zero code: 1"), "{message}");
            assert!(message.contains("false"), "{message}");
        }
        other => panic!("expected a build failure, got {other:?}\n{log}"),
    }
    assert!(log.contains(": RUN false"), "{log}");
    // The failed step's container is not left behind on the engine.
    let options = ListContainersOptions { all: true, ..Default::default() };
    let leftovers: Vec<_> = docker
        .list_containers(Some(options))
        .await
        .expect("list containers")
        .into_iter()
        .filter(|c| c.command.as_deref().is_some_and(|cmd| cmd.contains(&test)))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    cleanup(&docker, &test).await;
}

#[tokio::test]
async fn bad_build_strings_fail_before_the_engine() {
    let docker = docker().await;
    let ws = workspace();
    write(&ws.root.join("Dockerfile"), "FROM busybox\n");
    let (result, _) = run_build(&docker, "unused", &ws.root, "--frobnicate .", &[], &[]).await;
    assert!(result.unwrap_err().to_string().contains("--frobnicate"));
    let (result, _) = run_build(&docker, "unused", &ws.root, "/etc", &[], &[]).await;
    assert!(matches!(result, Err(BuildError::OutsideWorkspace { .. })), "{result:?}");
    let (result, _) = run_build(&docker, "unused", &ws.root, "-f nope .", &[], &[]).await;
    assert!(matches!(result, Err(BuildError::NotFound { what: "Dockerfile", .. })), "{result:?}");
}

/// `cache: enabled` never fails a build: a cache that cannot be pulled or pushed (the
/// authenticated registry, without a login) or named (no `-t`) leaves warnings in the log, and
/// the cache tag is no output image.
#[tokio::test]
async fn an_unusable_build_cache_only_warns() {
    let env = test_env();
    let docker = docker().await;
    let test = unique("cache-unusable");
    cleanup(&docker, &test).await;
    let ws = workspace();
    write(&ws.root.join("Dockerfile"), "FROM busybox\nRUN echo cached > /cached\n");
    let scope = build::cache::Scope { registry: Some(&env.auth_registry), task_name: Some("t") };
    // No registry in the tag: the cache goes to the run's.
    let tag = format!("kiln-test/cache:{test}");
    let args = format!("-t {tag} .");
    let (result, log) =
        run_build_with_cache(&docker, &test, &ws.root, &args, &[], &[], Some(scope)).await;
    let outcome = result.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(outcome.images, [tag]);
    assert_eq!(outcome.dependencies.len(), 1);
    let cache = format!("{}/kiln-test/cache:cache_t_build", env.auth_registry);
    let pull = format!("Warning: building without the build cache: pulling image {cache} failed: ");
    assert!(log.contains(&pull), "{log}");
    assert!(
        log.contains(&format!("Warning: the build cache was not pushed: failed to push {cache}")),
        "{log}"
    );

    let (result, log) =
        run_build_with_cache(&docker, &test, &ws.root, ".", &[], &[], Some(scope)).await;
    assert!(result.is_ok(), "{log}");
    assert!(
        log.contains("Warning: building without the build cache: the cache is named after the image, and the build has no `-t`"),
        "{log}"
    );
    cleanup(&docker, &test).await;
}

/// Push to the open and the authenticated registry (digest equal to the registry's), a push
/// with wrong credentials, and a build whose `FROM` needs the run's credentials to pull.
#[tokio::test]
async fn push_and_pull_with_credentials() {
    let env = test_env();
    let docker = docker().await;
    let test = unique("push");
    cleanup(&docker, &test).await;
    let ws = workspace();
    write(&ws.root.join("Dockerfile"), &format!("FROM busybox\nRUN echo {test} > /id\n"));
    let open_tag = format!("{}/kiln-test/push:{test}", env.registry);
    let auth_tag = format!("{}/kiln-test/push:{test}", env.auth_registry);
    let (result, log) =
        run_build(&docker, &test, &ws.root, &format!("-t {open_tag} -t {auth_tag} ."), &[], &[])
            .await;
    let outcome = result.unwrap_or_else(|e| panic!("{e}\n{log}"));
    let good = [credential(&env.auth_registry, &env.user, &env.password)];

    let log = Log::default();
    let sink = log.sink();
    let pushed = push::run(&docker, &outcome.images, &HashMap::new(), &good, &sink)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", log.text()));
    assert_eq!(pushed.len(), 2);
    assert_eq!(pushed[0].image, open_tag);
    let open_digest = registry_digest(&env.registry, "kiln-test/push", &test, None).await;
    assert_eq!(pushed[0].digest, open_digest);
    let auth_digest = registry_digest(
        &env.auth_registry,
        "kiln-test/push",
        &test,
        Some((&env.user, &env.password)),
    )
    .await;
    assert_eq!(pushed[1].digest, auth_digest);
    let text = log.text();
    assert!(text.contains(&format!("{test}: digest: {open_digest}")), "{text}");
    assert!(!text.contains("Pushing"), "byte progress is not logged:\n{text}");

    let mut deps = outcome.dependencies.clone();
    fill_pushed_digests(&mut deps, &pushed);
    let digests: Vec<&str> =
        deps.iter().map(|d| d.image.as_ref().unwrap().digest.as_str()).collect();
    assert_eq!(digests, [open_digest.as_str(), auth_digest.as_str()]);
    let json = report::report_json(&deps);
    assert!(json.contains(&format!("\"digest\":\"{open_digest}\"")), "{json}");

    let wrong = [credential(&env.auth_registry, &env.user, "wrong-password")];
    let err = push::run(
        &docker,
        std::slice::from_ref(&auth_tag),
        &HashMap::new(),
        &wrong,
        &Log::default().sink(),
    )
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, PushError::Failed { attempts: 1, .. }), "{message}");
    assert!(message.contains(&auth_tag) && message.contains("unauthorized"), "{message}");

    // A base image only the authenticated registry has: building from it needs the run's
    // credentials (X-Registry-Config) for the pull.
    docker.remove_image(&auth_tag, None::<RemoveImageOptions>, None).await.expect("untag");
    let ws = workspace();
    write(&ws.root.join("Dockerfile"), &format!("FROM {auth_tag}\nRUN cat /id\n"));
    let (result, log) = run_build(&docker, &test, &ws.root, "--no-cache .", &[], &[]).await;
    let err = result.expect_err(&format!("pulling without credentials must fail:\n{log}"));
    assert!(
        err.to_string().contains("no basic auth credentials")
            || err.to_string().contains("unauthorized"),
        "{err}"
    );
    let (result, log) = run_build(&docker, &test, &ws.root, "--no-cache .", &[], &good).await;
    let outcome = result.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(log.contains(&test), "RUN cat /id output:\n{log}");
    let runtime = outcome.dependencies[0].runtime.clone().unwrap();
    assert_eq!(runtime.registry, env.auth_registry);
    assert_eq!(runtime.repository, "kiln-test/push");
    assert_eq!(runtime.digest, auth_digest, "digest from the engine's RepoDigests");
    assert_eq!(runtime.digest_kind, Some(DigestKind::RepoDigest));
    let base = outcome.image_id.clone();

    // A base image only this engine has (built here, never pushed): its image ID, said so.
    let ws = workspace();
    let local_tag = format!("kiln-test/local-base:{test}");
    docker
        .tag_image(&base, Some(TagImageOptions { repo: Some(local_tag.clone()), tag: None }))
        .await
        .expect("tag");
    write(&ws.root.join("Dockerfile"), &format!("FROM {local_tag}\nRUN cat /id\n"));
    let (result, log) = run_build(&docker, &test, &ws.root, ".", &[], &[]).await;
    let outcome = result.unwrap_or_else(|e| panic!("{e}\n{log}"));
    let runtime = outcome.dependencies[0].runtime.clone().unwrap();
    assert_eq!(runtime.repository, "kiln-test/local-base");
    assert_eq!(
        (runtime.digest.as_str(), runtime.digest_kind),
        (base.as_str(), Some(DigestKind::ImageId))
    );
    let json = report::report_json(&outcome.dependencies);
    assert!(
        json.contains(&format!("\"digest\":\"{base}\",\"digest-kind\":\"image-id\"")),
        "{json}"
    );
    cleanup(&docker, &test).await;
}

fn commit_all(repo: &git2::Repository, message: &str) -> git2::Oid {
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("kiln test", "test@example.invalid").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents).unwrap()
}

/// Git contexts over file:// (full fetches: libgit2 cannot fetch shallow from a local path):
/// a tag with a subdirectory, the default branch, and an abbreviated commit.
#[tokio::test]
async fn git_remote_contexts() {
    let docker = docker().await;
    let test = unique("git-context");
    cleanup(&docker, &test).await;
    let origin = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(origin.path()).unwrap();
    write(&origin.path().join("sub/Dockerfile"), "FROM busybox\nCOPY marker /marker\n");
    write(&origin.path().join("sub/marker"), "v1\n");
    let v1 = commit_all(&repo, "v1");
    repo.tag_lightweight("v1", &repo.find_object(v1, None).unwrap(), false).unwrap();
    write(&origin.path().join("sub/marker"), "v2\n");
    write(&origin.path().join("Dockerfile"), "FROM busybox\nCOPY sub/marker /marker\n");
    let v2 = commit_all(&repo, "v2");
    let url = format!("file://{}", origin.path().display());

    let short = &v1.to_string()[..10];
    for (fragment, want_marker, want_commit) in
        [("#v1:sub", "v1", v1), ("", "v2", v2), (&format!("#{short}:sub")[..], "v1", v1)]
    {
        let ws = workspace();
        let tag = format!("kiln-test/git:{test}");
        let (result, log) =
            run_build(&docker, &test, &ws.root, &format!("-t {tag} {url}{fragment}"), &[], &[])
                .await;
        let outcome = result.unwrap_or_else(|e| panic!("{fragment}: {e}\n{log}"));
        assert_eq!(run_in(&docker, &tag, "cat /marker").await.trim(), want_marker, "{fragment}");
        let git = outcome.dependencies[0].git.clone().unwrap();
        assert_eq!(git.head_revision, want_commit.to_string(), "{fragment}");
        assert!(ws.root.join("build/.git").is_dir(), "downloaded into <working dir>/<step id>");
        assert!(log.contains(&format!("Checked out commit {want_commit}")), "{log}");
    }

    let ws = workspace();
    let (result, _) =
        run_build(&docker, &test, &ws.root, &format!("{url}#no-such-branch"), &[], &[]).await;
    assert!(result.unwrap_err().to_string().contains("no-such-branch"));
    cleanup(&docker, &test).await;
}

/// Serves `responses` in order, one per connection, on 127.0.0.1; counts the requests.
fn serve(responses: Vec<(u16, Vec<u8>)>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        for (status, body) in responses {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    (port, served)
}

/// A gzip tarball context over HTTP; the first answer is a 503, so the retry is exercised.
#[tokio::test]
async fn tarball_remote_context_with_retry() {
    let docker = docker().await;
    let test = unique("tarball-context");
    cleanup(&docker, &test).await;
    let mut tar_bytes = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar_bytes);
        for (name, content) in
            [("Dockerfile", "FROM busybox\nCOPY data /data\n"), ("data", "from the tarball\n")]
        {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, name, content.as_bytes()).unwrap();
        }
        builder.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes).unwrap();
    let (port, served) = serve(vec![(503, b"busy".to_vec()), (200, gz.finish().unwrap())]);

    let ws = workspace();
    let tag = format!("kiln-test/tarball:{test}");
    let (result, log) = run_build(
        &docker,
        &test,
        &ws.root,
        &format!("-t {tag} http://127.0.0.1:{port}/ctx.tar.gz"),
        &[],
        &[],
    )
    .await;
    result.unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert_eq!(served.load(Ordering::SeqCst), 2);
    assert_eq!(run_in(&docker, &tag, "cat /data").await, "from the tarball\n");
    assert!(ws.root.join("build/data").is_file());
    cleanup(&docker, &test).await;
}
