//! ACR-style `cmd: docker …` steps through the run's scoped Docker API, on the real engine and
//! registries of `scripts/test-env.sh` with its `docker:latest` image (busybox and the static
//! docker CLI): builds, runs and pushes work unchanged, escapes are refused with a sentence,
//! nothing a step created survives its run, and runs cannot see each other's containers.

#[path = "support/exec.rs"]
mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{
    auth_registry, in_auth_registry, leftovers, run_id, setting, spawn_logged_in_to, text,
    write_task,
};

fn docker_image() -> String {
    setting("KILN_TEST_DOCKER_IMAGE", "docker:latest")
}

/// `kiln exec` of `yaml` in `dir`, logged in to the authenticated test registry.
fn exec(dir: &Path, yaml: &str, run: &str, extra: &[&str]) -> Child {
    exec_with(dir, yaml, run, &auth_registry(), extra)
}

/// `kiln exec` of `yaml` in `dir`, logged in to `registry` as the test registries' user.
fn exec_with(dir: &Path, yaml: &str, run: &str, registry: &str, extra: &[&str]) -> Child {
    let file = write_task(dir, &yaml.replace("DOCKER", &docker_image()));
    let password = setting("KILN_TEST_REGISTRY_PASSWORD", "kiln-test-password");
    spawn_logged_in_to(registry, &file, dir, run, &password, extra)
}

fn run_to_end(dir: &Path, yaml: &str, run: &str, extra: &[&str]) -> (Output, String) {
    let out = exec(dir, yaml, run, extra).wait_with_output().expect("wait");
    let all = text(&out);
    (out, all)
}

fn image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .expect("docker CLI")
        .status
        .success()
}

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM busybox:latest\nRUN echo built-in-a-step > /built\nCMD [\"cat\", \"/built\"]\n",
    )
    .expect("Dockerfile");
    dir
}

#[test]
fn docker_steps_build_run_and_push_with_the_runs_login() {
    let dir = context();
    let run = run_id("dapibuild");
    // The last push carries no login of the client's own (an empty DOCKER_CONFIG): kiln adds
    // the run's, as ACR's steps push without `docker login`.
    let yaml = "version: v1.1.0
steps:
  - id: build
    cmd: DOCKER build -t $Registry/kiln-dapi:$ID .
  - id: run
    cmd: DOCKER run --rm $Registry/kiln-dapi:$ID
  - id: mounts
    cmd: DOCKER run --rm -v /workspace:/src busybox cat /src/Dockerfile
  - id: nested
    cmd: DOCKER run --rm -v /var/run/docker.sock:/var/run/docker.sock DOCKER ps --format '{{`{{.Names}}`}}'
  - id: push
    cmd: DOCKER push $Registry/kiln-dapi:$ID
  - id: tag
    cmd: DOCKER tag $Registry/kiln-dapi:$ID $Registry/kiln-dapi:$ID-bare
  - id: bare-push
    cmd: DOCKER push $Registry/kiln-dapi:$ID-bare
    env: [DOCKER_CONFIG=/tmp/no-logins]
";
    let (out, all) = run_to_end(dir.path(), yaml, &run, &[]);
    assert!(out.status.success(), "{all}");
    assert!(said(&all, "run", "built-in-a-step"), "{all}");
    assert!(said(&all, "mounts", "FROM busybox:latest"), "{all}");
    // The nested client reached the run's socket: it sees the run's own step container.
    assert!(said(&all, "nested", &format!("kiln-{run}-nested-1")), "{all}");
    assert!(in_auth_registry("kiln-dapi", &run), "{all}");
    assert!(in_auth_registry("kiln-dapi", &format!("{run}-bare")), "{all}");
    // What the steps built and tagged is gone with the run, like its containers.
    assert!(!image_exists(&format!("{}/kiln-dapi:{run}", auth_registry())), "{all}");
    assert!(!image_exists(&format!("{}/kiln-dapi:{run}-bare", auth_registry())), "{all}");
    assert_eq!(leftovers(&run), "", "{all}");
}

#[test]
fn escapes_are_refused_with_what_was_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = run_id("dapiescape");
    let attempts = [
        (
            "priv",
            "run --rm --privileged busybox true",
            "privileged containers are not allowed inside a run",
        ),
        (
            "hostbind",
            "run --rm -v /etc:/x busybox true",
            "bind mounts of host paths are not allowed inside a run (/etc)",
        ),
        (
            "hostnet",
            "run --rm --network host busybox true",
            "the host network is not allowed inside a run",
        ),
        (
            "hostpid",
            "run --rm --pid host busybox true",
            "the host PID namespace is not allowed inside a run",
        ),
        (
            "caps",
            "run --rm --cap-add SYS_ADMIN busybox true",
            "added capabilities are not allowed inside a run",
        ),
        (
            "device",
            "run --rm --device /dev/null:/dev/x busybox true",
            "host devices are not allowed inside a run",
        ),
        ("prune", "container prune -f", "act on the whole engine"),
        ("swarm", "swarm init", "swarm and plugin operations"),
        ("rmi", "rmi busybox:latest", "only images this run tagged can be removed inside a run"),
        ("bridge", "network inspect bridge", "No such network: bridge"),
        (
            "symlink",
            "run --rm -v /workspace/root/etc:/x busybox true",
            "leads outside the run's workspace",
        ),
        ("load", "load", "docker load is not allowed inside a run"),
        (
            "logdriver",
            "run --rm --log-driver syslog busybox true",
            "the syslog log driver is not allowed",
        ),
    ];
    // A link in the workspace to the host's root, for the symlink attempt.
    let mut yaml =
        "version: v1.1.0\nsteps:\n  - id: link\n    cmd: busybox ln -s / /workspace/root\n"
            .to_string();
    for (id, command, _) in attempts {
        yaml.push_str(&format!(
            "  - id: {id}\n    cmd: DOCKER {command}\n    ignoreErrors: true\n"
        ));
    }
    let (out, all) = run_to_end(dir.path(), &yaml, &run, &[]);
    assert!(out.status.success(), "{all}");
    for (id, _, message) in attempts {
        assert!(said(&all, id, message), "step {id} should say {message:?}:\n{all}");
        assert!(
            said(&all, id, "marked as failed, errors ignored"),
            "step {id} should have failed:\n{all}"
        );
    }
    assert!(image_exists("busybox:latest"), "the refused rmi removed nothing");
    assert_eq!(leftovers(&run), "", "{all}");
}

#[test]
fn runs_cannot_see_each_others_containers_and_leave_none() {
    let root = tempfile::tempdir().expect("tempdir");
    let holder_dir = tempfile::tempdir().expect("tempdir");
    let holder = run_id("dapihold");
    let held = format!("held-{holder}");
    // The holder starts a container of its own, then waits for the test to say it is done.
    let yaml = format!(
        "version: v1.1.0
steps:
  - id: start
    cmd: DOCKER run -d --name {held} busybox sleep 600
  - id: wait
    cmd: busybox sh -c 'while [ ! -e /workspace/done ]; do sleep 0.05; done'
"
    );
    let workspace_root = root.path().to_str().expect("utf-8").to_string();
    let child = exec(holder_dir.path(), &yaml, &holder, &["--workspace-root", &workspace_root]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !container_running(&held) {
        assert!(Instant::now() < deadline, "the holder run never started {held}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = run_id("dapipeek");
    let yaml = format!(
        "version: v1.1.0
steps:
  - id: inspect
    cmd: DOCKER inspect {held}
    ignoreErrors: true
  - id: kill
    cmd: DOCKER kill {held}
    ignoreErrors: true
  - id: list
    cmd: DOCKER ps -a --format 'seen {{{{`{{{{.Names}}}}`}}}}'
"
    );
    let (out, all) = run_to_end(other_dir.path(), &yaml, &other, &[]);
    assert!(out.status.success(), "{all}");
    assert!(all.contains(&format!("No such container: {held}")), "{all}");
    assert!(said(&all, "kill", "No such container"), "{all}");
    assert!(all.contains(&format!("seen kiln-{other}-list-1")), "{all}");
    assert!(!all.contains(&format!("seen {held}")), "{all}");
    assert!(container_running(&held), "the other run stopped the holder's container");

    std::fs::write(root.path().join(format!("kiln-{holder}")).join("done"), b"").expect("done");
    let out = child.wait_with_output().expect("holder");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!container_exists(&held), "{held} survived its run");
    assert_eq!(leftovers(&holder), "");
    assert_eq!(leftovers(&other), "");
}

#[test]
fn a_step_id_names_its_container_as_in_acr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = run_id("dapistepid");
    let yaml = "version: v1.1.0
steps:
  - id: svc
    cmd: busybox echo service-said-hello
    detach: true
  - id: wait
    cmd: DOCKER wait svc
  - id: logs
    cmd: DOCKER logs svc
  - id: server
    cmd: busybox sleep 600
    detach: true
  - id: exec
    cmd: DOCKER exec server sh -c 'echo exec-ran-in-$(hostname)'
";
    let (out, all) = run_to_end(dir.path(), yaml, &run, &[]);
    assert!(out.status.success(), "{all}");
    assert!(said(&all, "logs", "service-said-hello"), "{all}");
    assert!(said(&all, "exec", "exec-ran-in-"), "{all}");
    assert_eq!(leftovers(&run), "", "{all}");
}

#[test]
fn the_docker_api_can_be_switched_off_or_handed_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "steps:\n  - cmd: DOCKER version --format 'server {{`{{.Server.APIVersion}}`}}'\n";
    let run = run_id("dapioff");
    let (out, all) = run_to_end(dir.path(), yaml, &run, &["--docker-api", "off"]);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("Cannot connect to the Docker daemon"), "{all}");

    // `host` is ACR's model: the engine's own socket, where nothing is refused.
    let yaml = "steps:\n  - cmd: DOCKER run --rm -v /etc/hostname:/h busybox cat /h\n";
    let run = run_id("dapihost");
    let (out, all) = run_to_end(dir.path(), yaml, &run, &["--docker-api", "host"]);
    assert!(out.status.success(), "{all}");
    assert_eq!(leftovers(&run), "", "{all}");

    let (out, all) = run_to_end(dir.path(), yaml, &run_id("dapibad"), &["--docker-api", "all"]);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("expected off, scoped or host"), "{all}");
}

/// Whether step `step` printed a line containing `text`.
fn said(all: &str, step: &str, text: &str) -> bool {
    all.lines()
        .filter_map(|l| l.split_once(" | "))
        .any(|(id, rest)| id.trim_end() == step && rest.contains(text))
}

fn container_running(name: &str) -> bool {
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Running}}", name])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

fn container_exists(name: &str) -> bool {
    Command::new("docker").args(["inspect", name]).output().expect("docker CLI").status.success()
}

#[path = "support/server.rs"]
mod server;

#[path = "support/netns.rs"]
mod netns;

#[path = "support/tls.rs"]
mod tls;

#[test]
fn kiln_serve_gives_runs_the_scoped_api_unless_told_otherwise() {
    // A `--cmd` is not a template: the braces reach the docker CLI as written.
    let cmd = format!("{} info --format 'engine {{{{.OSType}}}}'", docker_image());
    let scoped = server::Server::start("dsa", 1);
    let out = scoped.run(&["run", "--cmd", &cmd, "/dev/null"]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("engine linux"), "{all}");

    let off = server::Server::start_on(
        "dso",
        1,
        "127.0.0.1:0",
        &["--registry", &server::registry(), "--docker-api", "off"],
    );
    let out = off.run(&["run", "--cmd", &cmd, "/dev/null"]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("Cannot connect to the Docker daemon"), "{all}");

    // A run, or a task, may say otherwise than its agent: widened on the server that is off,
    // narrowed on the one that is scoped.
    let out = off.run(&["run", "--docker-api", "scoped", "--cmd", &cmd, "/dev/null"]);
    assert!(text(&out).contains("engine linux"), "{}", text(&out));
    let out = scoped.run(&["run", "--docker-api", "off", "--cmd", &cmd, "/dev/null"]);
    assert!(text(&out).contains("Cannot connect to the Docker daemon"), "{}", text(&out));
    let create = ["task", "create", "-n", "dk", "-c", "/dev/null", "--cmd", &cmd];
    server::ok(&off.run(&[&create[..], &["--docker-api", "scoped"]].concat()));
    let out = off.run(&["task", "run", "-n", "dk"]);
    let all = text(&out);
    assert!(out.status.success() && all.contains("engine linux"), "{all}");
    server::ok(&off.run(&["task", "update", "-n", "dk", "--docker-api", ""]));
    let shown = server::json(&off.run(&["task", "show", "-n", "dk", "-o", "json"]));
    assert_eq!(shown.get("dockerApi"), None, "{shown}");
    let out = off.run(&["task", "run", "-n", "dk"]);
    assert!(text(&out).contains("Cannot connect to the Docker daemon"), "{}", text(&out));
}

/// A TLS registry with the test registries' login, in a network namespace of its own: reached
/// by the engine (which trusts its CA through /etc/docker/certs.d) and, unlike the loopback
/// registries, by the docker CLI inside step containers, which ACR's multi-arch recipe needs
/// (`docker manifest` talks to the registry from the step itself).
struct NamespacedRegistry {
    addr: String,
    certs_d: std::path::PathBuf,
    child: Child,
    _netns: netns::Netns,
    _ca: tls::TestCa,
}

impl NamespacedRegistry {
    fn start() -> NamespacedRegistry {
        let netns = netns::Netns::new();
        let ns = netns.ns_addr.to_string();
        // Replies to step containers (172.16.0.0/12) go back through the host.
        let route = Command::new("ip")
            .args(["-n", &netns.name, "route", "add", "default", "via"])
            .arg(netns.host_addr.to_string())
            .output()
            .expect("ip route");
        assert!(route.status.success(), "{}", text(&route));
        let addr = format!("{ns}:5443");
        let ca = tls::TestCa::new("namespaced registry");
        let cert = ca.server_cert(&[&ns]);
        let state = setting("KILN_TEST_STATE_DIR", "/var/lib/kiln-test");
        let config = ca.dir().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n\
                 auth:\n  htpasswd:\n    realm: kiln-test\n    path: {state}/htpasswd\n",
                ca.dir().join("storage").display(),
                cert.cert.display(),
                cert.key.display(),
            ),
        )
        .expect("registry config");
        let certs_d = std::path::PathBuf::from("/etc/docker/certs.d").join(&addr);
        std::fs::create_dir_all(&certs_d).expect("certs.d");
        std::fs::copy(&ca.cert, certs_d.join("ca.crt")).expect("ca.crt");
        let child = netns
            .command("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let registry = NamespacedRegistry { addr, certs_d, child, _netns: netns, _ca: ca };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            assert!(Instant::now() < deadline, "the registry at {} never listened", registry.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }
}

impl Drop for NamespacedRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.certs_d);
    }
}

#[test]
fn acrs_multi_arch_recipe_runs_unchanged() {
    let registry = NamespacedRegistry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile.amd64"), "FROM busybox:latest\nLABEL arch=amd64\n")
        .expect("Dockerfile");
    let arm64 = setting("KILN_TEST_ARM64_IMAGE", "busybox-arm64:latest");
    std::fs::write(
        dir.path().join("Dockerfile.arm64"),
        format!("FROM {arm64}\nLABEL arch=arm64\n"),
    )
    .expect("Dockerfile");
    // As the corpus writes it: builds per platform, push, then `docker manifest` in steps.
    let yaml = "version: v1.1.0
steps:
  - id: build-amd64
    build: -t {{.Run.Registry}}/multiarch:{{.Run.ID}}-amd64 -f Dockerfile.amd64 .
  - id: build-arm64
    build: -t {{.Run.Registry}}/multiarch:{{.Run.ID}}-arm64 -f Dockerfile.arm64 --platform linux/arm64 .
    when: ['-']
  - id: push
    push:
      - '{{.Run.Registry}}/multiarch:{{.Run.ID}}-amd64'
      - '{{.Run.Registry}}/multiarch:{{.Run.ID}}-arm64'
    when: [build-amd64, build-arm64]
  - id: manifest-create
    cmd: docker manifest create {{.Run.Registry}}/multiarch:{{.Run.ID}} {{.Run.Registry}}/multiarch:{{.Run.ID}}-amd64 {{.Run.Registry}}/multiarch:{{.Run.ID}}-arm64
  - id: manifest-push
    cmd: docker manifest push --purge {{.Run.Registry}}/multiarch:{{.Run.ID}}
  - id: manifest-inspect
    cmd: docker manifest inspect {{.Run.Registry}}/multiarch:{{.Run.ID}}
";
    let run = run_id("dapimulti");
    let out =
        exec_with(dir.path(), yaml, &run, &registry.addr, &[]).wait_with_output().expect("wait");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    // The list the last step read back from the registry names both pushed images.
    let listed: String = all
        .lines()
        .filter_map(|l| l.split_once(" | "))
        .filter(|(id, _)| id.trim_end() == "manifest-inspect")
        .map(|(_, rest)| rest)
        // kiln's own lines start with a `2019/03/18 21:56:12` timestamp; JSON lines never do.
        .filter(|rest| rest.get(4..5) != Some("/"))
        .collect::<Vec<_>>()
        .join("\n");
    let list: serde_json::Value =
        serde_json::from_str(&listed).unwrap_or_else(|e| panic!("{e}: {listed}\n{all}"));
    let manifests = list["manifests"].as_array().expect("a manifest list");
    let mut platforms: Vec<String> = manifests
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap_or_default().to_string())
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["amd64", "arm64"], "{list}");
    for arch in ["amd64", "arm64"] {
        let digest = pushed_digest(&all, &format!("{run}-{arch}"));
        assert!(
            manifests
                .iter()
                .any(|m| m["digest"] == digest.as_str() && m["platform"]["architecture"] == arch),
            "{arch} {digest} not in {list}"
        );
    }
    assert_eq!(leftovers(&run), "", "{all}");
}

/// The digest the engine reported for the push of tag `tag` (`<tag>: digest: sha256:… size: N`).
fn pushed_digest(all: &str, tag: &str) -> String {
    let marker = format!("{tag}: digest: ");
    all.lines()
        .find_map(|l| {
            l.split_once(&marker)
                .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default().to_string())
        })
        .unwrap_or_else(|| panic!("no push digest for {tag}:\n{all}"))
}
