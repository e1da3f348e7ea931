//! Runs against the real engine (`scripts/test-env.sh`): the step graph, failure propagation,
//! isolation of concurrent runs, networks, cancellation, timeouts, cleanup and the engine
//! connection. Each test uses its own run ID and checks that the run left nothing behind.

mod common;

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{CreateContainerOptions, RemoveImageOptions};
use common::*;
use kiln_plan::event::{Event, LogStream, RunStatus, StepStatus};
use kiln_plan::plan::{Action, Network, RunId, StepId};
use kiln_worker::names::ROLE_LABEL;
use kiln_worker::names::RUN_LABEL;
use kiln_worker::spare::SPARE_ROLE;
use kiln_worker::{Engine, EngineError, SpareNetwork, sweep, sweep_orphans};

#[tokio::test]
async fn engine_negotiates_down_to_the_local_api() {
    let engine = engine().await;
    let expected = setting("KILN_TEST_DOCKER_API_VERSION", "1.41");
    assert_eq!(engine.api_version(), expected);
}

#[tokio::test]
async fn a_missing_engine_is_a_clear_error() {
    let err = Engine::connect_to("unix:///nonexistent/kiln-docker.sock")
        .await
        .expect_err("no engine there");
    assert!(matches!(err, EngineError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("no Docker engine answers at unix:///nonexistent/kiln-docker.sock"),
        "{message}"
    );
    assert!(message.contains("scripts/test-env.sh"), "{message}");
    assert!(matches!(Engine::connect_to("gopher://x").await, Err(EngineError::BadHost { .. })));
}

#[tokio::test]
async fn steps_share_the_workspace_and_see_the_context() {
    let engine = engine().await;
    let run = run_id("context");
    let context = tempfile::tempdir().expect("context dir");
    std::fs::write(context.path().join("input.txt"), "from the context\n").expect("write");
    let write = sh("write", "cat input.txt > copy.txt && echo more >> copy.txt");
    let read = after(sh("read", "cat /workspace/copy.txt"), &["write"]);
    let live = start_with(&engine, plan(&run, vec![write, read]), |o| {
        o.context_dir = Some(context.path().to_path_buf());
    });
    let done = live.finish(&engine).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("read"), "from the context\nmore\n");
    assert!(
        std::fs::read_dir(context.path()).expect("context").count() == 1,
        "the context itself is not written to"
    );
}

/// Two steps that each wait for the other's file can only both finish if they run at once.
#[tokio::test]
async fn siblings_run_concurrently_and_joins_wait_for_all() {
    let engine = engine().await;
    let run = run_id("siblings");
    let left = sh("left", &format!("touch /workspace/left; {}", wait_for_file("right")));
    let right = sh("right", &format!("touch /workspace/right; {}", wait_for_file("left")));
    let join = after(sh("join", "ls /workspace"), &["left", "right"]);
    let done = run_plan(&engine, plan(&run, vec![left, right, join])).await;

    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert_eq!(done.stdout("join"), "left\nright\n");
    let started: Vec<&str> = done
        .events
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step, .. } => Some(step.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(started.last(), Some(&"join"));
    let success = done.system("join");
    assert!(success.contains("Step ID: join marked as successful (elapsed time in seconds: "));
}

#[tokio::test]
async fn first_failure_kills_running_steps_and_skips_dependants() {
    let engine = engine().await;
    let run = run_id("failfast");
    let long = sh("long", "touch /workspace/long-started; sleep 60");
    let fails = sh("fails", &format!("{}; echo broken >&2; exit 1", wait_for_file("long-started")));
    let after_fails = after(sh("after-fails", "true"), &["fails"]);
    let after_long = after(sh("after-long", "true"), &["long"]);
    let done = run_plan(&engine, plan(&run, vec![long, fails, after_fails, after_long])).await;

    assert_eq!(done.summary.status, RunStatus::Failed, "{}", done.dump());
    assert_eq!(done.summary.error.as_deref(), Some("failed to run step ID: fails: exit status 1"));
    assert_eq!(done.status("fails"), StepStatus::Failed);
    assert_eq!(done.status("long"), StepStatus::Canceled);
    assert_eq!(done.status("after-fails"), StepStatus::Skipped);
    assert_eq!(done.status("after-long"), StepStatus::Skipped);
    assert!(done.attempts("after-fails").is_empty());
    assert_eq!(done.output("fails", LogStream::Stderr), "broken\n");
    // Every step reports a final status, and the run's end comes last.
    let finished = done.events.iter().filter(|e| matches!(e, Event::StepFinished { .. })).count();
    assert_eq!(finished, 4);
    assert!(matches!(done.events.first(), Some(Event::RunStarted { .. })));
    assert!(matches!(
        done.events.last(),
        Some(Event::RunFinished { status: RunStatus::Failed, .. })
    ));
}

fn web_plan(run: &RunId) -> kiln_plan::plan::Plan {
    let setup = sh("setup", "mkdir -p /workspace/www && echo \"$RUN\" > /workspace/www/index.html");
    let mut setup = setup;
    setup.env = vec![kiln_plan::plan::EnvVar { name: "RUN".into(), value: run.to_string() }];
    let (web, probe) = web_service_and_probe();
    plan(run, vec![setup, web, probe])
}

/// The same plan twice at once on one engine: same step IDs, same network aliases, no
/// collisions, and each probe reaches its own run's server.
#[tokio::test]
async fn concurrent_runs_of_one_plan_are_isolated() {
    let engine = engine().await;
    let first = run_id("twin-a");
    let second = run_id("twin-b");
    let (a, b) =
        tokio::join!(run_plan(&engine, web_plan(&first)), run_plan(&engine, web_plan(&second)));
    assert_eq!(a.summary.status, RunStatus::Succeeded, "{}", a.dump());
    assert_eq!(b.summary.status, RunStatus::Succeeded, "{}", b.dump());
    assert_eq!(a.stdout("probe"), format!("{first}\n"));
    assert_eq!(b.stdout("probe"), format!("{second}\n"));
}

/// Two runs at once on networks created ahead of them: each says which network it uses, each
/// probe reaches its own run's server by step ID, and each run removes its network.
#[tokio::test]
async fn runs_on_spare_networks_are_isolated_and_remove_them() {
    let engine = engine().await;
    let (first, second) = (run_id("spare-a"), run_id("spare-b"));
    let net_a = SpareNetwork::create(&engine).await.expect("spare");
    let net_b = SpareNetwork::create(&engine).await.expect("spare");
    let (a, b) = tokio::join!(
        start_with(&engine, web_plan(&first), |o| o.network = Some(net_a.clone())).finish(&engine),
        start_with(&engine, web_plan(&second), |o| o.network = Some(net_b.clone())).finish(&engine),
    );
    for (done, run, net) in [(&a, &first, &net_a), (&b, &second, &net_b)] {
        assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
        assert_eq!(done.stdout("probe"), format!("{run}\n"));
        let log = run_log(&done.events);
        assert!(
            log.contains(&format!("Using Docker network: {}, driver: 'bridge'", net.name())),
            "{log}"
        );
        assert!(!log.contains("Creating Docker network"), "{log}");
        assert!(done.system("probe").contains(&format!("Network: '{}'", net.name())));
        assert!(!network_exists(&engine, net.name()).await, "{} removed", net.name());
    }
}

/// A network handed to a run whose plan declares its own default goes unused, and is still
/// removed with the run.
#[tokio::test]
async fn an_unused_spare_network_is_removed_with_the_run() {
    let engine = engine().await;
    let run = run_id("spare-unused");
    let net = SpareNetwork::create(&engine).await.expect("spare");
    let mut plan = web_plan(&run);
    plan.networks = vec![Network {
        name: "appnet".into(),
        driver: None,
        ipv6: false,
        skip_creation: false,
        is_default: true,
    }];
    assert!(!plan.uses_run_network());
    let done = start_with(&engine, plan, |o| o.network = Some(net.clone())).finish(&engine).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert!(done.system("probe").contains(&format!("Network: 'kiln-{run}-net-appnet'")));
    assert!(!network_exists(&engine, net.name()).await);
}

/// Spare networks of a gone owner are swept (even though its PID runs: the lock decides);
/// those of live processes are not.
#[tokio::test]
async fn orphaned_spare_networks_are_swept() {
    let engine = engine().await;
    let owners = tempfile::tempdir().expect("tempdir");
    let orphan = format!("kiln-spare-test-orphan-{}", std::process::id());
    let mut labels = gone_owner(owners.path(), "spare");
    labels.insert(ROLE_LABEL.to_string(), SPARE_ROLE.to_string());
    engine
        .docker()
        .create_network(NetworkCreateRequest {
            name: orphan.clone(),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .expect("orphan network");
    let live = SpareNetwork::create(&engine).await.expect("spare");

    let report = sweep_orphans(&engine).await.expect("sweep");
    assert!(report.networks.contains(&orphan), "{report:?}");
    assert!(!network_exists(&engine, &orphan).await);
    assert!(network_exists(&engine, live.name()).await, "a live process's spare stays");
    let name = live.name().to_string();
    live.remove(&engine).await.expect("remove");
    assert!(!network_exists(&engine, &name).await);
}

async fn network_exists(engine: &Engine, name: &str) -> bool {
    match engine.docker().inspect_network(name, None).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(e) => panic!("inspecting {name}: {e}"),
    }
}

#[tokio::test]
async fn declared_networks_are_created_per_run_and_external_ones_kept() {
    let engine = engine().await;
    let run = run_id("networks");
    let docker = engine.docker();
    let external = format!("kiln-test-external-{}", std::process::id());
    docker
        .create_network(NetworkCreateRequest { name: external.clone(), ..Default::default() })
        .await
        .expect("external network");

    let mut plan = web_plan(&run);
    plan.networks = vec![
        Network {
            name: "appnet".into(),
            driver: None,
            ipv6: false,
            skip_creation: false,
            is_default: true,
        },
        Network {
            name: external.clone(),
            driver: None,
            ipv6: false,
            skip_creation: true,
            is_default: false,
        },
    ];
    let mut outside = sh("outside", "true");
    outside.network = Some(external.clone());
    plan.steps.push(outside);
    let done = run_plan(&engine, plan).await;

    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert!(done.system("probe").contains(&format!("Network: 'kiln-{run}-net-appnet'")));
    assert!(done.system("outside").contains(&format!("Network: '{external}'")));
    docker.inspect_network(&external, None).await.expect("skip_creation networks are not removed");
    docker.remove_network(&external).await.expect("remove external");
}

/// ACR drops step-ID DNS when networks are declared without a default (§9 item 11); kiln
/// still gives such steps the run network.
#[tokio::test]
async fn declared_networks_without_default_keep_step_id_dns() {
    let engine = engine().await;
    let run = run_id("nodefault");
    let mut plan = web_plan(&run);
    plan.networks = vec![Network {
        name: "extra".into(),
        driver: Some("bridge".into()),
        ipv6: false,
        skip_creation: false,
        is_default: false,
    }];
    let done = run_plan(&engine, plan).await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
    assert!(done.system("probe").contains(&format!("Network: 'kiln-{run}'")));
}

#[tokio::test]
async fn cancel_kills_the_running_step_and_skips_the_rest() {
    let engine = engine().await;
    let run = run_id("cancel");
    let busy = sh("busy", "echo ready; sleep 60");
    let next = after(sh("next", "true"), &["busy"]);
    let mut live = start(&engine, plan(&run, vec![busy, next]));
    live.until("busy is running", |e| {
        matches!(e, Event::Log { step: Some(s), stream: LogStream::Stdout, data } if s.as_str() == "busy" && data.starts_with(b"ready"))
    })
    .await;
    live.cancel.cancel();
    let done = live.finish(&engine).await;

    assert_eq!(done.summary.status, RunStatus::Canceled, "{}", done.dump());
    assert_eq!(done.status("busy"), StepStatus::Canceled);
    assert_eq!(done.status("next"), StepStatus::Skipped);
}

#[tokio::test]
async fn run_timeout_ends_the_run_as_timeout() {
    let engine = engine().await;
    let run = run_id("runtimeout");
    let live = start_with(&engine, plan(&run, vec![sh("slow", "sleep 60")]), |o| {
        o.timeout = Some(std::time::Duration::from_secs(2));
    });
    let done = live.finish(&engine).await;
    assert_eq!(done.summary.status, RunStatus::Timeout, "{}", done.dump());
    assert_eq!(done.summary.error.as_deref(), Some("the run timed out after 2 s"));
    assert_eq!(done.status("slow"), StepStatus::Canceled);
}

#[tokio::test]
async fn invalid_plans_end_in_error_without_touching_the_engine() {
    let engine = engine().await;
    let run = run_id("invalid");
    let orphan = after(sh("orphan", "true"), &["nowhere"]);
    let done = run_plan(&engine, plan(&run, vec![sh("fine", "true"), orphan])).await;
    assert_eq!(done.summary.status, RunStatus::Error);
    assert_eq!(
        done.summary.error.as_deref(),
        Some("step orphan depends on nowhere, which is not in the plan")
    );
    assert_eq!(done.status("fine"), StepStatus::Skipped);
    assert!(done.events.iter().all(|e| !matches!(e, Event::StepStarted { .. })));
}

#[tokio::test]
async fn build_run_and_push_a_context_in_one_run() {
    let engine = engine().await;
    let run = run_id("build-push");
    let context = tempfile::tempdir().expect("context");
    std::fs::write(
        context.path().join("Dockerfile"),
        format!("FROM {}\nCOPY hello.txt /hello.txt\nCMD [\"cat\", \"/hello.txt\"]\n", image()),
    )
    .expect("Dockerfile");
    std::fs::write(context.path().join("hello.txt"), "built by kiln\n").expect("hello.txt");
    let registry = setting("KILN_TEST_REGISTRY", "127.0.0.1:5000");
    let tag = format!("{registry}/kiln-worker-test/{}:v1", run.as_str().to_lowercase());

    let mut build = sh("build", "unused");
    build.action = Action::Build { args: vec!["-t".into(), tag.clone(), ".".into()] };
    let mut test = sh("test", "unused");
    test.action = Action::Cmd { image: tag.clone(), args: Vec::new() };
    test.depends_on = vec![StepId::new("build")];
    let mut push = sh("push", "unused");
    push.action = Action::Push { images: vec![tag.clone()] };
    push.depends_on = vec![StepId::new("test")];

    let dir = context.path().to_path_buf();
    let done = start_with(&engine, plan(&run, vec![build, test, push]), |o| {
        o.context_dir = Some(dir);
    })
    .finish(&engine)
    .await;
    assert_eq!(done.summary.status, RunStatus::Succeeded, "{:?}", done.summary.error);
    let output: Vec<u8> = done
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Log { step: Some(s), stream: LogStream::Stdout, data }
                if s.as_str() == "test" =>
            {
                Some(data.clone())
            }
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(String::from_utf8_lossy(&output), "built by kiln\n");
    assert!(
        done.events.iter().any(|e| matches!(e, Event::ImageBuilt { image, .. } if *image == tag))
    );
    assert!(done.events.iter().any(|e| matches!(e, Event::DependencyReport { .. })));
    let digest = done.events.iter().find_map(|e| match e {
        Event::ImagePushed { image, digest, .. } if *image == tag => Some(digest.clone()),
        _ => None,
    });
    assert!(digest.is_some_and(|d| d.starts_with("sha256:")), "{:?}", done.events);
    let _ = engine
        .docker()
        .remove_image(&tag, None::<bollard::query_parameters::RemoveImageOptions>, None)
        .await;
}

/// What a crashed worker leaves behind is found by label and removed; other runs' objects
/// are left alone.
#[tokio::test]
async fn sweep_removes_only_the_selected_runs() {
    let engine = engine().await;
    let doomed = run_id("sweep-doomed");
    let spared = run_id("sweep-spared");
    for run in [&doomed, &spared] {
        leave_behind(&engine, run).await;
    }
    assert_eq!(leftovers(&engine, &doomed).await.len(), 3);

    let report = sweep(&engine, |run| *run == doomed).await.expect("sweep");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.containers.len(), 1, "{report:?}");
    assert_eq!(report.networks.len(), 1, "{report:?}");
    assert_eq!(report.volumes.len(), 1, "{report:?}");
    assert_clean(&engine, &doomed).await;
    assert_eq!(leftovers(&engine, &spared).await.len(), 3);

    sweep(&engine, |run| *run == spared).await.expect("sweep");
    assert_clean(&engine, &spared).await;
}

/// A running container, a network and a volume labelled with `run`, as a crash would leave.
async fn leave_behind(engine: &Engine, run: &RunId) {
    let docker = engine.docker();
    let labels = HashMap::from([
        (RUN_LABEL.to_string(), run.to_string()),
        ("kiln.step".to_string(), StepId::new("x").to_string()),
    ]);
    let name = format!("kiln-{run}");
    docker
        .create_network(NetworkCreateRequest {
            name: name.clone(),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .expect("network");
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await
        .expect("volume");
    docker
        .create_container(
            Some(CreateContainerOptions { name: Some(name.clone()), ..Default::default() }),
            ContainerCreateBody {
                image: Some(image()),
                cmd: Some(vec!["sleep".into(), "600".into()]),
                labels: Some(labels),
                host_config: Some(bollard::models::HostConfig {
                    network_mode: Some(name.clone()),
                    binds: Some(vec![format!("{name}:/data")]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .expect("container");
    docker.start_container(&name, None).await.expect("start");
}

/// Builds are reproducible: the same context built by two runs gives one image ID, whose labels
/// are only its base image's and the Dockerfile's, and whose log counts the Dockerfile's own
/// instructions. An untagged build's image is removed at the end of its run.
#[tokio::test]
async fn the_same_context_builds_the_same_image_in_every_run() {
    let engine = engine().await;
    let docker = engine.docker();
    let context = tempfile::tempdir().expect("context");
    let dockerfile = format!(
        "FROM {}\nLABEL team=kiln\nCOPY hello.txt /hello.txt\nENV GREETING=hi\nCMD [\"cat\", \"/hello.txt\"]\n",
        image()
    );
    std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
    // Unique per test process, so no other build shares the image ID.
    std::fs::write(context.path().join("hello.txt"), run_id("repro").as_str()).expect("file");
    let tag = format!("kiln-worker-test/{}", run_id("repro").as_str().to_lowercase());

    let build = |args: &[&str]| {
        let mut step = sh("build", "unused");
        step.action = Action::Build { args: args.iter().map(|a| a.to_string()).collect() };
        step
    };
    let base = docker.inspect_image(&image()).await.expect("base image");
    let mut expected = base.config.and_then(|c| c.labels).unwrap_or_default();
    expected.insert("team".to_string(), "kiln".to_string());
    let run_build = |name: String, args: Vec<String>| {
        let dir = context.path().to_path_buf();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let plan = plan(&run_id(&name), vec![build(&args)]);
        let engine = &engine;
        async move {
            let done = start_with(engine, plan, |o| o.context_dir = Some(dir)).finish(engine).await;
            assert_eq!(done.summary.status, RunStatus::Succeeded, "{}", done.dump());
            assert!(done.summary.cleanup_errors.is_empty(), "{:?}", done.summary.cleanup_errors);
            let log = done.stdout("build");
            assert!(log.contains("Step 1/5 : FROM"), "five instructions, five steps:\n{log}");
            let built = log.lines().find_map(|l| l.strip_prefix("Successfully built "));
            built.expect("image id").trim().to_string()
        }
    };
    let tags = [format!("{tag}:1"), format!("{tag}:2")];
    let mut ids = Vec::new();
    for (n, tagged) in tags.iter().enumerate() {
        run_build(format!("repro{n}"), vec!["-t".into(), tagged.clone(), ".".into()]).await;
        let inspect = docker.inspect_image(tagged).await.expect("built image");
        ids.push(inspect.id.clone().expect("id"));
        let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
        assert_eq!(labels, expected, "only the base image's and the Dockerfile's labels");
    }
    assert_eq!(ids[0], ids[1], "one context, one image");
    // Untagged, the same build is the same image: tagged by others, it stays.
    run_build("repro-same".into(), vec![".".into()]).await;
    assert!(docker.inspect_image(&ids[0]).await.is_ok(), "a tagged image was removed");
    for tagged in &tags {
        docker.remove_image(tagged, None::<RemoveImageOptions>, None).await.expect("untag");
    }

    // An untagged build of its own is only the run's, and goes with it.
    std::fs::write(context.path().join("hello.txt"), run_id("untagged").as_str()).expect("file");
    let built = run_build("repro-untagged".into(), vec![".".into()]).await;
    let gone = docker.inspect_image(&built).await;
    assert!(
        matches!(
            gone,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
        ),
        "{gone:?}"
    );
}
