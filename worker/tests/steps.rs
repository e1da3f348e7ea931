//! Step properties against the real engine (`scripts/test-env.sh`): every `PlanStep` field a
//! `cmd` step honours, retries, repeat, ignoreErrors, timeouts, detach, keep, secret volumes,
//! pulls. Each test uses its own run ID and checks that the run left nothing labelled with it.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::WaitContainerOptions;
use bollard::query_parameters::{PushImageOptions, RemoveImageOptions, TagImageOptions};
use common::*;
use futures_util::StreamExt;
use kiln_plan::event::{Event, LogStream, RunStatus, StepStatus};
use kiln_plan::plan::{
    Action, EnvVar, PlanStep, Pull, RegistryCredential, SecretFile, SecretVolume, VolumeMount,
};

#[tokio::test]
async fn env_workdir_entrypoint_and_user_reach_the_container() {
    let engine = engine().await;
    let run = run_id("props");
    let mut shaped = cmd("shaped", &["-c", "echo \"A=$A\"; pwd; id -u; id -g"]);
    shaped.entry_point = Some("/bin/sh".into());
    shaped.env = vec![EnvVar { name: "A".into(), value: "two words; $NOT_EXPANDED".into() }];
    shaped.working_directory = Some("sub/dir".into());
    shaped.user = Some("1234:5678".into());
    let mut image_default = sh("image-default", "pwd");
    image_default.working_directory = None;
    let done = run_plan(&engine, plan(&run, vec![shaped, image_default])).await;

    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(
        done.stdout("shaped"),
        "A=two words; $NOT_EXPANDED\n/workspace/sub/dir\n1234\n5678\n"
    );
    assert_eq!(done.stdout("image-default"), "/\n");
    let header = done.system("shaped");
    assert!(
        header.contains(&format!(
            "Executing step ID: shaped. Timeout(sec): 120, Working directory: '/workspace/sub/dir', Network: 'kiln-{run}'"
        )),
        "{header}"
    );
    assert!(header.contains(&format!("Launching container with name: kiln-{run}-shaped-1")));
    assert!(header.contains(&format!("Successfully executed container: kiln-{run}-shaped-1")));
}

/// The privileged flag is checked on the container rather than by using a capability: engines
/// inside restricted sandboxes (like this project's CI machine) refuse to start privileged
/// containers at all ("unable to apply caps").
#[tokio::test]
async fn privileged_reaches_the_container_config() {
    let engine = engine().await;
    let run = run_id("privileged");
    let mut privileged = sh("privileged", "true");
    privileged.privileged = true;
    privileged.keep = true;
    privileged.ignore_errors = true;
    let mut plain = sh("plain", "mount -t tmpfs none /mnt");
    plain.ignore_errors = true;
    let gate = after(sh("gate", &wait_for_file("go")), &["privileged", "plain"]);
    let mut live = start(&engine, plan(&run, vec![privileged, plain, gate]));
    live.until(
        "gate started",
        |e| matches!(e, Event::StepStarted { step, .. } if step.as_str() == "gate"),
    )
    .await;
    let inspected = engine
        .docker()
        .inspect_container(&container_name(&run, "privileged", 1), None)
        .await
        .expect("kept container");
    assert_eq!(inspected.host_config.and_then(|h| h.privileged), Some(true));
    live.touch("go");
    let done = live.finish(&engine).await;

    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.status("plain"), StepStatus::Ignored, "{}", done.dump());
    assert!(done.output("plain", LogStream::Stderr).contains("permission denied"));
}

#[tokio::test]
async fn cpus_become_a_cpu_quota() {
    let engine = engine().await;
    let run = run_id("cpus");
    let mut limited = sh(
        "limited",
        "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us",
    );
    limited.cpus = Some("0.5".into());
    let mut bad = sh("bad", "true");
    bad.cpus = Some("lots".into());
    bad.ignore_errors = true;
    let done = run_plan(&engine, plan(&run, vec![limited, bad])).await;

    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    // cgroup v1 prints the quota (50000 of a 100000 µs period); v2 prints "50000 100000".
    assert!(done.stdout("limited").starts_with("50000"), "{}", done.dump());
    assert_eq!(done.status("bad"), StepStatus::Ignored);
    assert!(done.error("bad").unwrap_or_default().contains("invalid cpus value \"lots\""));
}

#[tokio::test]
async fn isolation_is_ignored_with_a_warning() {
    let engine = engine().await;
    let run = run_id("isolation");
    let mut step = sh("iso", "true");
    step.isolation = Some("hyperv".into());
    let done = run_plan(&engine, plan(&run, vec![step])).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert!(done.system("iso").contains("Warning: isolation 'hyperv'"));
}

#[tokio::test]
async fn network_none_and_host_network_names_are_passed_through() {
    let engine = engine().await;
    let run = run_id("netnone");
    let mut isolated = sh("isolated", "ls /sys/class/net");
    isolated.network = Some("none".into());
    let done = run_plan(&engine, plan(&run, vec![isolated])).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("isolated"), "lo\n");
    assert!(done.system("isolated").contains("Network: 'none'"));
}

/// A detached web server, reached by step ID from a probe step, and through a published port
/// from the host; exposed ports are on the container.
#[tokio::test]
async fn detach_ports_expose_and_step_id_aliases() {
    let engine = engine().await;
    let run = run_id("web");
    let port = free_port();
    let setup =
        sh("setup", "mkdir -p /workspace/www && echo hello-from-web > /workspace/www/index.html");
    let mut web =
        after(cmd("web", &["httpd", "-f", "-p", "8080", "-h", "/workspace/www"]), &["setup"]);
    web.detach = true;
    web.ports = vec![format!("127.0.0.1:{port}:8080")];
    web.expose = vec!["9999".into()];
    let probe = after(
        sh(
            "probe",
            "for i in $(seq 100); do timeout 2 wget -q -O - http://web:8080/index.html && exit 0; sleep 0.2; done; exit 1",
        ),
        &["web"],
    );
    let gate = after(sh("gate", &wait_for_file("go")), &["probe"]);
    let mut live = start(&engine, plan(&run, vec![setup, web, probe, gate]));
    live.until_finished("probe").await;

    let page = http_get(port);
    assert!(page.ends_with("hello-from-web\n"), "{page}");
    let inspected = engine
        .docker()
        .inspect_container(&container_name(&run, "web", 1), None)
        .await
        .expect("detached container runs");
    let exposed = inspected.config.and_then(|c| c.exposed_ports).unwrap_or_default();
    assert!(exposed.contains(&"8080/tcp".to_string()), "{exposed:?}");
    assert!(exposed.contains(&"9999/tcp".to_string()), "{exposed:?}");
    live.touch("go");

    let done = live.finish(&engine).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("probe"), "hello-from-web\n");
    assert!(done.system("web").contains("Successfully started detached container"));
}

#[tokio::test]
async fn keep_leaves_the_container_until_the_run_ends() {
    let engine = engine().await;
    let run = run_id("keep");
    let mut kept = sh("kept", "echo kept");
    kept.keep = true;
    let gone = sh("gone", "echo gone");
    let gate = after(sh("gate", &wait_for_file("go")), &["kept", "gone"]);
    let mut live = start(&engine, plan(&run, vec![kept, gone, gate]));
    live.until(
        "gate started",
        |e| matches!(e, Event::StepStarted { step, .. } if step.as_str() == "gate"),
    )
    .await;

    let docker = engine.docker();
    let kept_container = docker
        .inspect_container(&container_name(&run, "kept", 1), None)
        .await
        .expect("kept container still exists");
    assert_eq!(kept_container.state.and_then(|s| s.exit_code), Some(0), "kept container exited");
    // Removal runs off the step's critical path: wait for it through the engine's own
    // "removed" condition (an error means it is gone already).
    let gone_name = container_name(&run, "gone", 1);
    let removed = WaitContainerOptions { condition: "removed".to_string() };
    let _ = docker.wait_container(&gone_name, Some(removed)).collect::<Vec<_>>().await;
    assert!(
        docker.inspect_container(&gone_name, None).await.is_err(),
        "containers without keep are removed after their step"
    );
    live.touch("go");
    let done = live.finish(&engine).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
}

#[tokio::test]
async fn retries_rerun_a_failing_step_until_it_succeeds() {
    let engine = engine().await;
    let run = run_id("retries");
    let counter = "n=$(cat /workspace/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /workspace/count; echo attempt $n";
    let mut flaky = sh("flaky", &format!("{counter}; [ $n -ge 2 ]"));
    flaky.retries = 3;
    let mut hopeless = sh("hopeless", "echo nope; exit 3");
    hopeless.retries = 1;
    let hopeless = after(hopeless, &["flaky"]);
    let done = run_plan(&engine, plan(&run, vec![flaky, hopeless])).await;

    assert_eq!(done.status("flaky"), StepStatus::Successful, "{}", done.dump());
    assert_eq!(done.attempts("flaky"), vec![1, 2]);
    assert_eq!(done.stdout("flaky"), "attempt 1\nattempt 2\n");
    assert!(
        done.system("flaky")
            .contains("Container failed during run: flaky, waiting 0 seconds before retrying...")
    );
    assert_eq!(done.status("hopeless"), StepStatus::Failed);
    assert_eq!(done.attempts("hopeless"), vec![1, 2]);
    assert_eq!(done.summary.status, RunStatus::Failed);
    assert_eq!(
        done.summary.error.as_deref(),
        Some("failed to run step ID: hopeless: exit status 3")
    );
    let hopeless = &done.summary.steps[1];
    assert_eq!(hopeless.exit_code, Some(3));
}

#[tokio::test]
async fn retry_on_errors_retries_only_matching_failures() {
    let engine = engine().await;
    let run = run_id("retryon");
    let mut transient = sh(
        "transient",
        "if [ -e /workspace/seen ]; then exit 0; fi; touch /workspace/seen; echo 'upstream: connection refused' >&2; exit 1",
    );
    transient.retries = 2;
    transient.retry_on_errors = vec!["connection refused".into()];
    let mut fatal = sh("fatal", "echo 'fatal: bad config' >&2; exit 1");
    fatal.retries = 2;
    fatal.retry_on_errors = vec!["connection refused".into()];
    fatal.ignore_errors = true;
    let done = run_plan(&engine, plan(&run, vec![transient, fatal])).await;

    assert_eq!(done.status("transient"), StepStatus::Successful, "{}", done.dump());
    assert_eq!(done.attempts("transient"), vec![1, 2]);
    assert_eq!(done.status("fatal"), StepStatus::Ignored, "{}", done.dump());
    assert_eq!(done.attempts("fatal"), vec![1]);
    assert!(done.system("fatal").contains("contains none of retryOnErrors"));
    assert_eq!(done.output("fatal", LogStream::Stderr), "fatal: bad config\n");
}

#[tokio::test]
async fn repeat_runs_every_repetition_and_fails_if_any_failed() {
    let engine = engine().await;
    let run = run_id("repeat");
    let counter = |file: &str| {
        format!(
            "n=$(cat /workspace/{file} 2>/dev/null || echo 0); n=$((n+1)); echo $n > /workspace/{file}"
        )
    };
    let mut thrice = sh("thrice", &counter("a"));
    thrice.repeat = 2;
    let mut second_fails = sh("second-fails", &format!("{}; [ $n -ne 2 ]", counter("b")));
    second_fails.repeat = 2;
    let second_fails = after(second_fails, &["thrice"]);
    let done = run_plan(&engine, plan(&run, vec![thrice, second_fails])).await;

    assert_eq!(done.status("thrice"), StepStatus::Successful, "{}", done.dump());
    assert_eq!(done.attempts("thrice"), vec![1, 2, 3]);
    assert_eq!(done.status("second-fails"), StepStatus::Failed);
    assert_eq!(
        done.attempts("second-fails"),
        vec![1, 2, 3],
        "a failed repetition does not stop the others"
    );
    assert_eq!(done.error("second-fails").as_deref(), Some("exit status 1"));
}

#[tokio::test]
async fn ignore_errors_lets_dependants_run() {
    let engine = engine().await;
    let run = run_id("ignore");
    let mut broken = sh("broken", "exit 4");
    broken.ignore_errors = true;
    let next = after(sh("next", "echo still here"), &["broken"]);
    let done = run_plan(&engine, plan(&run, vec![broken, next])).await;

    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.status("broken"), StepStatus::Ignored);
    assert_eq!(done.summary.steps[0].exit_code, Some(4));
    assert!(done.system("broken").contains(
        "Step ID: broken encountered an error: exit status 4, but is set to ignore errors. Continuing..."
    ));
    assert_eq!(done.stdout("next"), "still here\n");
}

#[tokio::test]
async fn timeout_kills_the_container_and_fails_the_step() {
    let engine = engine().await;
    let run = run_id("timeout");
    let mut slow = sh("slow", "sleep 30");
    slow.timeout_secs = 2;
    slow.retries = 5; // the timeout covers all retries
    let done = run_plan(&engine, plan(&run, vec![slow])).await;

    assert_eq!(done.status("slow"), StepStatus::Failed, "{}", done.dump());
    assert_eq!(done.error("slow").as_deref(), Some("timed out after 2 s"));
    assert_eq!(done.attempts("slow"), vec![1]);
    assert_eq!(done.summary.status, RunStatus::Failed);
    assert_eq!(
        done.summary.error.as_deref(),
        Some("failed to run step ID: slow: timed out after 2 s")
    );
}

#[tokio::test]
async fn start_delay_is_outside_the_timeout() {
    let engine = engine().await;
    let run = run_id("delay");
    let mut delayed = sh("delayed", "echo late");
    // Counted inside the timeout, the delay alone would use it all up.
    delayed.start_delay_secs = 5;
    delayed.timeout_secs = 5;
    let done = run_plan(&engine, plan(&run, vec![delayed])).await;

    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert!(done.system("delayed").contains("Waiting 5 seconds before starting step ID: delayed"));
    assert_eq!(done.stdout("delayed"), "late\n");
}

#[tokio::test]
async fn secret_volumes_hold_exact_bytes() {
    let engine = engine().await;
    let run = run_id("secret");
    let binary: Vec<u8> = (0..=255).collect();
    let mut reader = sh(
        "reader",
        "cat /run/secrets/token; wc -c < /run/secrets/blob; ls -l /run/secrets/token | cut -c1-10",
    );
    reader.user = Some("1234".into());
    reader.volume_mounts =
        vec![VolumeMount { name: "sec".into(), mount_path: "/run/secrets".into() }];
    let mut second = sh("second", "cat /etc/creds/token");
    second.volume_mounts =
        vec![VolumeMount { name: "sec".into(), mount_path: "/etc/creds".into() }];
    let mut plan = plan(&run, vec![reader, second]);
    plan.volumes = vec![SecretVolume {
        name: "sec".into(),
        files: vec![
            SecretFile {
                name: "token".into(),
                content_base64: STANDARD.encode("s3cret $HOME `id`\nEOL\n"),
            },
            SecretFile { name: "blob".into(), content_base64: STANDARD.encode(&binary) },
        ],
    }];
    let done = run_plan(&engine, plan).await;

    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("reader"), "s3cret $HOME `id`\nEOL\n256\n-rw-r--r--\n");
    assert_eq!(done.stdout("second"), "s3cret $HOME `id`\nEOL\n");
}

#[tokio::test]
async fn masked_values_never_reach_the_log() {
    let engine = engine().await;
    let run = run_id("masked");
    let secret = "s3cr3t-value-42";
    let mut leaky = sh(
        "leaky",
        // Printed whole, to stderr, and one character at a time (split across frames).
        "echo \"token=$TOKEN\"; echo \"$TOKEN\" >&2; printf '%s' \"$TOKEN\" | while read -n1 c; do printf '%s' \"$c\"; done; echo",
    );
    leaky.env = vec![EnvVar { name: "TOKEN".into(), value: secret.into() }];
    let mut plan = plan(&run, vec![leaky]);
    plan.masked = vec![secret.into()];
    let done = run_plan(&engine, plan).await;

    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("leaky"), "token=***\n***\n");
    assert_eq!(done.output("leaky", LogStream::Stderr), "***\n");
}

#[tokio::test]
async fn missing_images_fail_fast_with_the_registry_error() {
    let engine = engine().await;
    let run = run_id("missing");
    let registry = registry();
    let mut missing = cmd("missing", &["true"]);
    missing.action =
        Action::Cmd { image: format!("{registry}/kiln-test/missing:nope"), args: vec![] };
    missing.pull = Some(Pull { retries: 2, retry_delay_secs: 0 });
    let done = run_plan(&engine, plan(&run, vec![missing])).await;

    assert_eq!(done.status("missing"), StepStatus::Failed, "{}", done.dump());
    let error = done.error("missing").unwrap_or_default();
    assert!(error.contains("manifest unknown"), "{error}");
    assert_eq!(done.system("missing").matches("Pulling image:").count(), 3);
}

#[tokio::test]
async fn images_are_pulled_with_the_run_credentials() {
    let engine = engine().await;
    let run = run_id("pull");
    let registry = setting("KILN_TEST_AUTH_REGISTRY", "127.0.0.1:5001");
    let user = setting("KILN_TEST_REGISTRY_USER", "kiln");
    let password = setting("KILN_TEST_REGISTRY_PASSWORD", "kiln-test-password");
    let repo = format!("{registry}/kiln-test/pull");
    let reference = format!("{repo}:{run}");
    push_test_image(&engine, &repo, run.as_str(), &user, &password).await;

    let step = |id: &str| {
        let mut s = cmd(id, &["echo", "pulled"]);
        s.action =
            Action::Cmd { image: reference.clone(), args: vec!["echo".into(), "pulled".into()] };
        s
    };
    // Absent locally and no login: the registry refuses.
    let anonymous = run_plan(&engine, plan(&run, vec![step("anonymous")])).await;
    assert_eq!(anonymous.status("anonymous"), StepStatus::Failed, "{}", anonymous.dump());
    let mut with_login = plan(&run_id("pull-auth"), vec![step("pulled")]);
    with_login.credentials =
        vec![RegistryCredential { registry: registry.clone(), username: user, password }];
    let done = run_plan(&engine, with_login).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("pulled"), "pulled\n");
    assert!(done.system("pulled").contains(&format!("Pulling image: {reference}")));
    remove_image(&engine, &reference).await;
}

#[tokio::test]
async fn two_hundred_megabytes_of_output_arrive_whole() {
    let engine = engine().await;
    let run = run_id("bigout");
    let size = 200 * 1000 * 1000;
    let done = start(&engine, plan(&run, vec![sh("loud", &format!("head -c {size} /dev/zero"))]));
    // Count instead of collecting, so the test itself stays small.
    let mut live = done;
    let mut total = 0usize;
    let mut largest = 0usize;
    while let Some(event) = live.events.recv().await {
        if let Event::Log { stream: LogStream::Stdout, data, .. } = &event {
            total += data.len();
            largest = largest.max(data.len());
        } else {
            live.seen.push(event);
        }
    }
    let done = live.finish(&engine).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(total, size);
    assert!(largest <= kiln_plan::event::MAX_LOG_CHUNK);
}

fn registry() -> String {
    setting("KILN_TEST_REGISTRY", "127.0.0.1:5000")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port()
}

fn http_get(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("published port answers");
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

/// Tags the test image as `repo:tag`, pushes it with a login, and removes the local tag so a
/// step has to pull it.
async fn push_test_image(
    engine: &kiln_worker::Engine,
    repo: &str,
    tag: &str,
    user: &str,
    password: &str,
) {
    let docker = engine.docker();
    docker
        .tag_image(
            &image(),
            Some(TagImageOptions { repo: Some(repo.to_string()), tag: Some(tag.to_string()) }),
        )
        .await
        .expect("tag");
    let mut push = docker.push_image(
        repo,
        Some(PushImageOptions { tag: Some(tag.to_string()), ..Default::default() }),
        Some(DockerCredentials {
            username: Some(user.to_string()),
            password: Some(password.to_string()),
            ..Default::default()
        }),
    );
    while let Some(progress) = push.next().await {
        progress.expect("push to the test registry");
    }
    remove_image(engine, &format!("{repo}:{tag}")).await;
}

async fn remove_image(engine: &kiln_worker::Engine, reference: &str) {
    engine
        .docker()
        .remove_image(reference, Some(RemoveImageOptions::default()), None)
        .await
        .expect("remove image tag");
}

/// The arm64 image of the test environment (run under the QEMU emulation it registers).
fn arm64_image() -> String {
    setting("KILN_TEST_ARM64_IMAGE", "busybox-arm64:latest")
}

/// The plan's platform is what `cmd` containers are created as: the arm64 image runs as
/// linux/arm64, and a run on linux/amd64 does not run it as it is (under emulation) but wants
/// the image for amd64, which no registry has.
#[tokio::test]
async fn a_plans_platform_is_what_cmd_containers_run_as() {
    let engine = engine().await;
    let arm64 = arm64_image();
    let uname = |id: &str| PlanStep {
        action: Action::Cmd { image: arm64.clone(), args: vec!["uname".into(), "-m".into()] },
        ..cmd(id, &[])
    };

    let run = run_id("platform-arm64");
    let mut on_arm64 = plan(&run, vec![uname("arch")]);
    on_arm64.platform = Some("linux/arm64".into());
    let done = run_plan(&engine, on_arm64).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("arch"), "aarch64\n");
    assert_clean(&engine, &run).await;

    let run = run_id("platform-amd64");
    let mut on_amd64 = plan(&run, vec![uname("arch")]);
    on_amd64.platform = Some("linux/amd64".into());
    let done = run_plan(&engine, on_amd64).await;
    assert_eq!(done.summary.status, RunStatus::Failed, "{}", done.dump());
    let error = done.error("arch").unwrap_or_default();
    assert!(error.starts_with(&format!("pulling image {arm64} for linux/amd64 failed")), "{error}");
    assert_clean(&engine, &run).await;
}

/// The engine's platforms: its own first, then the emulated ones (the test environment
/// registers qemu-aarch64 in binfmt_misc with the F flag).
#[tokio::test]
async fn the_engine_declares_its_own_platform_then_the_emulated_ones() {
    let platforms = engine().await.platforms().await.unwrap_or_else(|e| panic!("{e}"));
    let native = kiln_worker::platforms::native(Some("linux"), Some(std::env::consts::ARCH));
    assert_eq!(platforms[0], native, "{platforms:?}");
    assert!(platforms.iter().any(|p| p == "linux/arm64"), "{platforms:?}");
}
