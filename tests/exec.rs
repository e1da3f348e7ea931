//! `kiln exec` end to end, on the real engine and registries that `scripts/test-env.sh` starts:
//! every example runs, failures and Ctrl-C end the way ACR's `acb exec` does, and nothing the
//! run created is left on the engine.

#[path = "support/exec.rs"]
mod support;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::{
    auth_registry, exec_logged_in, in_auth_registry, kiln, leftovers, registry, repo, run_id,
    setting, text, write_task,
};

#[test]
fn every_example_runs() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("acb.yaml").exists())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().replace(['-', '_'], "");
        let run = run_id(&name);
        let mut cmd = kiln();
        cmd.args(["exec", "-f"]).arg(dir.join("acb.yaml")).arg(&dir);
        cmd.args(["--registry", &registry(), "--run-id", &run]);
        if dir.join("values.yaml").exists() {
            cmd.arg("--values").arg(dir.join("values.yaml"));
        }
        let out = cmd.output().expect("run kiln");
        let all = text(&out);
        assert!(out.status.success(), "{}:\n{all}", dir.display());
        assert!(all.contains(&format!("Run ID: {run} was successful after")), "{all}");
        assert_eq!(leftovers(&run), "", "{} left objects behind", dir.display());
    }
}

#[test]
fn a_failing_step_fails_the_run_with_its_id_and_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_task(
        dir.path(),
        "steps:\n  - id: ok\n    cmd: busybox echo fine\n  - id: broken\n    cmd: busybox sh -c 'echo on stderr >&2; exit 3'\n  - id: never\n    cmd: busybox true\n",
    );
    let run = run_id("fail");
    let out =
        kiln().args(["exec", "-f"]).arg(&file).args(["--run-id", &run]).output().expect("kiln");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("ok     | fine"), "{all}");
    assert!(all.contains("broken | on stderr"), "{all}");
    assert!(all.contains(&format!("Run ID: {run} failed after")), "{all}");
    assert!(all.contains("failed to run step ID: broken"), "{all}");
    assert!(
        all.lines().any(|l| l.starts_with("broken") && l.contains("failed") && l.ends_with(" 3")),
        "{all}"
    );
    assert!(all.lines().any(|l| l.starts_with("never") && l.contains("skipped")), "{all}");
    // Every step's output ends with a line, timestamped as ACR stamps its own lines.
    assert!(
        stamped(&all, "ok", "Step ID: ok marked as successful (elapsed time in seconds: "),
        "{all}"
    );
    assert!(stamped(&all, "broken", "Executing step ID: broken."), "{all}");
    assert!(
        stamped(&all, "broken", "Step ID: broken marked as failed (elapsed time in seconds: "),
        "{all}"
    );
    assert!(
        stamped(&all, "never", "Step ID: never skipped: step ID broken failed before it"),
        "{all}"
    );
    assert_eq!(leftovers(&run), "");
}

/// Whether a line of `step` says `text` after a `2019/03/18 21:56:12` timestamp.
fn stamped(all: &str, step: &str, text: &str) -> bool {
    all.lines().filter(|l| l.starts_with(step)).filter_map(|l| l.split_once(" | ")).any(
        |(_, rest)| {
            rest.get(20..).is_some_and(|t| t.starts_with(text))
                && chrono::NaiveDateTime::parse_from_str(&rest[..19], "%Y/%m/%d %H:%M:%S").is_ok()
        },
    )
}

#[test]
fn task_files_acr_accepts_run_as_in_acr() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No steps: nothing runs and the run succeeds, with a warning.
    let file = write_task(dir.path(), "version: v1.1.0\n");
    let run = run_id("nosteps");
    let out =
        kiln().args(["exec", "-f"]).arg(&file).args(["--run-id", &run]).output().expect("kiln");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("warning: steps: the task has no `steps`"), "{all}");
    assert!(all.contains(&format!("Run ID: {run} was successful after")), "{all}");

    // `when: [-]`, as Go's YAML decoder reads it: the step starts with the run.
    let file = write_task(
        dir.path(),
        "steps:\n  - id: slow\n    cmd: busybox true\n  - id: dash\n    cmd: busybox echo started\n    when: [-]\n",
    );
    let run = run_id("baredash");
    let out =
        kiln().args(["exec", "-f"]).arg(&file).args(["--run-id", &run]).output().expect("kiln");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("a bare `-` in a flow list"), "{all}");
    assert!(all.contains("dash | started"), "{all}");
    assert_eq!(leftovers(&run), "");
}

#[test]
fn ctrl_c_cancels_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_task(
        dir.path(),
        "steps:\n  - id: web\n    cmd: busybox httpd -f -p 8080\n    detach: true\n  - id: long\n    cmd: busybox sh -c 'echo ready; sleep 300'\n",
    );
    let run = run_id("ctrlc");
    let mut child = kiln()
        .args(["exec", "-f"])
        .arg(&file)
        .args(["--run-id", &run])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        seen.push_str(&line);
        seen.push('\n');
        if line.ends_with("| ready") {
            break;
        }
    }
    assert!(seen.contains("ready"), "{seen}");
    let status =
        Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().expect("wait");
    let all = format!("{seen}{}\n{}", rest.join("\n"), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("was canceled"), "{all}");
    assert_eq!(leftovers(&run), "", "{all}");
}

#[test]
fn push_with_credentials_and_with_wrong_ones() {
    let auth = auth_registry();
    let password = setting("KILN_TEST_REGISTRY_PASSWORD", "kiln-test-password");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), "FROM busybox:latest\nRUN echo built > /built\n")
        .unwrap();
    let file = write_task(
        dir.path(),
        "version: v1.1.0\nsteps:\n  - id: build\n    build: -t $Registry/kiln-exec-test:$ID .\n  - push: [\"$Registry/kiln-exec-test:$ID\"]\n",
    );
    let exec = |run: &str, password: &str| exec_logged_in(&file, dir.path(), run, password, &[]);

    let run = run_id("pushok");
    let out = exec(&run, &password);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("The following dependencies were found:"), "{all}");
    // As ACR prints it: YAML, one indented block per dependency.
    assert!(all.contains(&format!("\n    reference: {auth}/kiln-exec-test:{run}\n")), "{all}");
    assert!(all.contains("\n    digest: sha256:"), "{all}");
    assert!(!all.contains(&password), "the password reached the output:\n{all}");

    let run = run_id("pushbad");
    let out = exec(&run, "wrong-password");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains(&format!("{auth}/kiln-exec-test:{run}")) && all.contains("unauthorized"),
        "{all}"
    );
    assert_eq!(leftovers(&run), "");
}

/// A foreign-platform base image (the test environment's arm64 busybox, run through QEMU
/// user-mode emulation registered in binfmt_misc) builds with a `RUN` executed under emulation
/// and runs as a `cmd` step, unchanged from how a native image would.
#[test]
fn an_arm64_image_builds_and_runs_under_emulation() {
    let base = std::env::var("KILN_TEST_ARM64_IMAGE")
        .expect("KILN_TEST_ARM64_IMAGE (run scripts/test-env.sh and source its env file)");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {base}\nRUN mkdir /ran-under-emulation && test \"$(uname -m)\" = aarch64\n"),
    )
    .expect("Dockerfile");
    let file = write_task(
        dir.path(),
        "steps:\n  - build: -t kiln-arm64-test:{{.Run.ID}} --platform linux/arm64 .\n  - id: arch\n    cmd: kiln-arm64-test:{{.Run.ID}} busybox uname -m\n  - cmd: kiln-arm64-test:{{.Run.ID}} busybox ls -d /ran-under-emulation\n",
    );
    let run = run_id("arm64");
    let out = kiln()
        .args(["exec", "-f"])
        .arg(&file)
        .arg(dir.path())
        .args(["--run-id", &run])
        .output()
        .expect("run kiln");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.lines().any(|l| l.starts_with("arch ") && l.ends_with("| aarch64")), "{all}");
    assert!(all.contains("/ran-under-emulation"), "{all}");
    let image = format!("kiln-arm64-test:{run}");
    let arch = std::process::Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", &image])
        .output()
        .expect("docker CLI");
    assert_eq!(String::from_utf8_lossy(&arch.stdout).trim(), "linux/arm64");
    let removed = std::process::Command::new("docker").args(["rmi", &image]).output();
    assert!(removed.expect("docker CLI").status.success());
    assert_eq!(leftovers(&run), "");
}

/// `--platform linux/arm64` reaches execution and `.Run.OS`/`.Run.Architecture`: a `cmd`
/// container is created as arm64 (an image the engine has only for amd64 is not run as it is
/// but pulled for arm64, which this local-only tag cannot be), and `build` steps whose build
/// string names no `--platform` build for arm64: from an arm64 base, and from `scratch`, whose
/// platform only the build's own can decide.
#[test]
fn a_runs_platform_reaches_cmd_containers_and_builds() {
    let base = std::env::var("KILN_TEST_ARM64_IMAGE")
        .expect("KILN_TEST_ARM64_IMAGE (run scripts/test-env.sh and source its env file)");
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("Dockerfile", &format!("FROM {base}\nRUN test \"$(uname -m)\" = aarch64\n"));
    write("Dockerfile.scratch", "FROM scratch\nCOPY Dockerfile /\n");
    let file = write_task(
        dir.path(),
        &format!(
            "steps:\n  - id: arch\n    cmd: {base} uname -m\n  - id: vars\n    cmd: {base} echo {{{{.Run.OS}}}}/{{{{.Run.Architecture}}}}\n  - build: -t kiln-platform-test:{{{{.Run.ID}}}} .\n  - build: -t kiln-platform-scratch:{{{{.Run.ID}}}} -f Dockerfile.scratch .\n"
        ),
    );
    let exec = |file: &std::path::Path, run: &str| {
        kiln()
            .args(["exec", "--platform", "linux/arm64", "-f"])
            .arg(file)
            .arg(dir.path())
            .args(["--run-id", run])
            .output()
            .expect("run kiln")
    };
    let run = run_id("platform");
    let out = exec(&file, &run);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.lines().any(|l| l.starts_with("arch ") && l.ends_with("| aarch64")), "{all}");
    assert!(all.lines().any(|l| l.starts_with("vars ") && l.ends_with("| linux/arm64")), "{all}");
    for image in [format!("kiln-platform-test:{run}"), format!("kiln-platform-scratch:{run}")] {
        let arch = std::process::Command::new("docker")
            .args(["image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", &image])
            .output()
            .expect("docker CLI");
        assert_eq!(String::from_utf8_lossy(&arch.stdout).trim(), "linux/arm64", "{image}");
        let removed = std::process::Command::new("docker").args(["rmi", &image]).output();
        assert!(removed.expect("docker CLI").status.success());
    }
    assert_eq!(leftovers(&run), "");

    let run = run_id("platformamd");
    let amd64_only = format!("kiln-platform-amd64-only:{run}");
    let tagged = std::process::Command::new("docker")
        .args(["tag", &std::env::var("KILN_TEST_IMAGE").expect("KILN_TEST_IMAGE"), &amd64_only])
        .status();
    assert!(tagged.expect("docker CLI").success());
    let file = dir.path().join("amd64.yaml");
    std::fs::write(&file, format!("steps:\n  - cmd: {amd64_only} true\n")).unwrap();
    let out = exec(&file, &run);
    let all = text(&out);
    let _ = std::process::Command::new("docker").args(["rmi", &amd64_only]).output();
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains(&format!("pulling image {amd64_only} for linux/arm64 failed")), "{all}");
    assert_eq!(leftovers(&run), "");
}

/// `cache: enabled` (ACR's buildx registry cache, here the classic builder's `--cache-from`): the
/// first build finds no cache and pushes one, logged in to the run's registry; a second run, with
/// the first run's images gone from the engine, pulls it and takes the slow stage from it.
#[test]
fn a_build_cache_in_the_registry_serves_the_next_run() {
    let password = setting("KILN_TEST_REGISTRY_PASSWORD", "kiln-test-password");
    let dir = tempfile::tempdir().expect("tempdir");
    // The marker is this test process's: no earlier run's layers can match the `RUN`.
    let marker = run_id("cachemarker");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM busybox:latest AS slow\nRUN echo {marker} > /marker && sleep 1\n\
             FROM slow\nRUN cp /marker /copied\n"
        ),
    )
    .expect("Dockerfile");
    let file = write_task(
        dir.path(),
        "version: v1.1.0\nsteps:\n  - id: build\n    build: -t $Registry/kiln-cache-test:$ID .\n    cache: enabled\n",
    );
    // A task name of this process's own, so the cache tag is not shared with other test runs.
    let task = run_id("cachetask");
    let cache_tag = format!("cache_{task}_build");
    let cache = format!("{}/kiln-cache-test:{cache_tag}", auth_registry());
    let exec = |run: &str| {
        let out = exec_logged_in(&file, dir.path(), run, &password, &["--task-name", &task]);
        let all = text(&out);
        assert!(out.status.success(), "{all}");
        assert!(!all.contains("Warning"), "{all}");
        // The cache is no output of the run: not in the dependency report.
        assert!(all.contains("The following dependencies were found:"), "{all}");
        assert!(!all.lines().any(|l| l.contains("reference:") && l.contains("cache_")), "{all}");
        assert_eq!(leftovers(run), "");
        all
    };
    let rmi = |run: &str| {
        let built = format!("{}/kiln-cache-test:{run}", auth_registry());
        let out = Command::new("docker").args(["rmi", &built, &cache]).output().expect("docker");
        assert!(out.status.success(), "{}", text(&out));
    };

    let first = run_id("cache1");
    let all = exec(&first);
    assert!(all.contains(&format!("Note: no build cache at {cache} yet")), "{all}");
    assert!(all.contains(&format!("Pushing the build cache {cache}")), "{all}");
    assert!(all.contains(&format!("{cache_tag}: digest: sha256:")), "{all}");
    assert!(in_auth_registry("kiln-cache-test", &cache_tag), "{all}");
    rmi(&first);

    let second = run_id("cache2");
    let all = exec(&second);
    assert!(all.contains(&format!("Pulling the build cache {cache}")), "{all}");
    assert!(!all.contains("Note: no build cache"), "{all}");
    // The slow `RUN` of the first stage (and the next) came from the pulled cache.
    let slow = all.find(&format!("RUN echo {marker} > /marker")).expect("the slow RUN step");
    let next_step = all[slow..].find("Step ").map_or(all.len(), |i| slow + i);
    assert!(all[slow..next_step].contains("Using cache"), "{all}");
    assert!(in_auth_registry("kiln-cache-test", &cache_tag), "{all}");
    let built = format!("{}/kiln-cache-test:{second}", auth_registry());
    let copied = Command::new("docker")
        .args(["run", "--rm", &built, "cat", "/copied"])
        .output()
        .expect("docker");
    assert_eq!(String::from_utf8_lossy(&copied.stdout).trim(), marker);
    rmi(&second);
}

/// `build: --platform linux/amd64,linux/arm64` (buildx's form) builds each platform with the
/// classic builder, and the push of the tag pushes each platform's image and then one manifest
/// list naming them, whose digest the run reports for the tag.
#[test]
fn a_multi_platform_build_pushes_one_manifest_list() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    let file = write_task(
        dir.path(),
        "version: v1.1.0\nsteps:\n  - build: --platform linux/amd64,linux/arm64 -t $Registry/kiln-multi:$ID .\n  - push: [\"$Registry/kiln-multi:$ID\"]\n",
    );
    let exec = |file: &Path, run: &str| {
        let mut kiln = kiln();
        kiln.args(["exec", "-f"]).arg(file).arg(dir.path());
        kiln.args(["--registry", &registry(), "--run-id", run]).output().expect("run kiln")
    };
    let run = run_id("multiplatform");
    let out = exec(&file, &run);
    let all = text(&out);
    assert!(out.status.success(), "{all}");

    let agent: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let manifest = |tag: &str, accept: &str| {
        let mut resp = agent
            .get(format!("http://{}/v2/kiln-multi/manifests/{tag}", registry()))
            .header("accept", accept)
            .call()
            .expect("registry");
        assert_eq!(resp.status().as_u16(), 200, "{tag}:\n{all}");
        let digest = resp.headers()["docker-content-digest"].to_str().unwrap().to_string();
        let text = resp.body_mut().read_to_string().expect("body");
        let body: serde_json::Value = serde_json::from_str(&text).expect("json");
        (digest, body)
    };
    let (list_digest, list) =
        manifest(&run, "application/vnd.docker.distribution.manifest.list.v2+json");
    assert_eq!(list["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json");
    let entries = list["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), 2, "{list}");
    // Two images, each of its own platform (the classic builder's cache would hand the second
    // platform the first one's `FROM scratch` image).
    assert_ne!(entries[0]["digest"], entries[1]["digest"], "{list}");
    for (entry, arch) in entries.iter().zip(["amd64", "arm64"]) {
        assert_eq!(entry["platform"]["architecture"], arch, "{list}");
        let (digest, _) = manifest(
            &format!("{run}-linux-{arch}"),
            "application/vnd.docker.distribution.manifest.v2+json",
        );
        assert_eq!(entry["digest"], digest.as_str(), "{list}");
    }
    // The run names the list's digest for the tag, in its push line and dependency report.
    assert!(all.contains(&format!("manifest list of 2 platforms: digest: {list_digest}")), "{all}");
    assert!(all.contains(&format!("digest: {list_digest}")), "{all}");
    assert_eq!(leftovers(&run), "");

    // A build on the list names, in its report, the entry of the platform it built for: the
    // engine records only the list's digest, and the base-image triggers watch the entry.
    let base = format!("{}/kiln-multi:{run}", registry());
    std::fs::write(dir.path().join("Dockerfile"), format!("FROM {base}\nCOPY Dockerfile /2\n"))
        .unwrap();
    let file = write_task(
        dir.path(),
        "version: v1.1.0\nsteps:\n  - build: --platform linux/arm64 -t kiln-multi-child:$ID .\n",
    );
    let child = run_id("multichild");
    let out = exec(&file, &child);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let report = &all[all.find("runtime-dependency:").expect("a runtime dependency")..];
    let runtime: Vec<&str> = report.lines().take(6).collect();
    let arm64 = entries[1]["digest"].as_str().unwrap();
    assert!(runtime.contains(&format!("    digest: {arm64}").as_str()), "{runtime:?}\n{all}");
    let _ =
        Command::new("docker").args(["rmi", &base, &format!("kiln-multi-child:{child}")]).output();
}
