//! Store tests on real SQLite files in temporary directories. No sleeps: lease expiry is driven
//! by passing `expire_leases` a time past the lease.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use kiln_api::status::{RunStatus, RunType};
use kiln_task::run_id::{RunId, RunIdPrefix};

use super::lease::{Claimant, SERVER_STOPPED_MESSAGE};
use super::runs::WAITING_LINE;
use super::test_db::backends;
use super::*;

/// Bytes every log starts with.
const WAITING: u64 = WAITING_LINE.len() as u64;

const TTL: Duration = Duration::from_secs(30);

async fn open(dir: &Path) -> Store {
    Store::open(dir, RunIdPrefix::new("kb").unwrap()).await.unwrap()
}

fn quick_run(request: &str) -> NewRun {
    NewRun::new(RunType::QuickRun, request)
}

fn image(repo: &str, tag: &str) -> OutputImage {
    OutputImage {
        registry: "registry.local".into(),
        repository: repo.into(),
        tag: tag.into(),
        digest: format!("sha256:{}", "0".repeat(64)),
    }
}

/// Creates a run and claims it (it must be the only queued run).
async fn claimed(store: &Store, request: &str) -> Claim {
    let run = store.create_run(quick_run(request)).await.unwrap();
    let claim = store.claim_next(&Claimant::amd64("w1"), TTL).await.unwrap().unwrap();
    assert_eq!(claim.run.id, run.id);
    claim
}

#[tokio::test]
async fn store_create_and_get_run() {
    for db in backends().await {
        let store = db.open().await;
        let before = Utc::now() - TimeDelta::seconds(1);
        let mut new = NewRun::new(RunType::AutoBuild, r#"{"task":"steps: []"}"#);
        new.task_name = Some("nightly".into());
        new.trigger = "Timer".into();
        new.timeout_secs = 600;
        let run = store.create_run(new).await.unwrap();
        assert_eq!(run.id.as_str(), "kb1");
        assert_eq!(run.counter, 1);
        assert_eq!(run.status, RunStatus::Queued);
        assert_eq!(run.run_type, RunType::AutoBuild);
        assert_eq!(run.trigger, "Timer");
        assert_eq!(run.task_name.as_deref(), Some("nightly"));
        assert_eq!(run.request, r#"{"task":"steps: []"}"#);
        assert_eq!(run.timeout_secs, 600);
        assert_eq!(run.platform, "linux/amd64");
        assert!(run.created_at >= before);
        assert_eq!(run.updated_at, run.created_at);
        assert_eq!((run.started_at, run.finished_at), (None, None));
        assert_eq!(run.error_message, None);
        assert!(run.output_images.is_empty());
        assert_eq!(run.dependencies, None);
        assert!(!run.cancel_requested);
        assert_eq!((run.epoch, run.lease_owner.clone(), run.lease_expires_at), (0, None, None));
        assert_eq!(run.log_len, WAITING_LINE.len() as u64);
        let log = store.read_log(&run.id, 0, usize::MAX).await.unwrap();
        assert_eq!(log[0].data, WAITING_LINE.as_bytes(), "every log starts with the queue line");
        assert_eq!(store.get_run(&run.id).await.unwrap(), run);

        let second = store.create_run(quick_run("{}")).await.unwrap();
        assert_eq!(second.id.as_str(), "kb2");
        assert_eq!(second.task_name, None);
        db.drop().await;
    }
}

#[tokio::test]
async fn store_get_unknown_run_is_not_found() {
    for db in backends().await {
        let store = db.open().await;
        let id = RunId::new("kb9");
        assert!(matches!(store.get_run(&id).await, Err(StoreError::NotFound(x)) if x == id));
        assert_eq!(store.find_run(&id).await.unwrap(), None);
        assert!(matches!(store.log_len(&id).await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.read_log(&id, 0, 10).await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.cancel_run(&id).await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.append_log(&id, 1, b"x").await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.heartbeat(&id, 1, TTL).await, Err(StoreError::NotFound(_))));
        db.drop().await;
    }
}

#[tokio::test]
async fn store_ids_keep_increasing_across_reopen() {
    for db in backends().await {
        let prefix = RunIdPrefix::new("kb").unwrap();
        let mut counters = Vec::new();
        for _ in 0..3 {
            let store = db.open().await;
            for _ in 0..40 {
                let run = store.create_run(quick_run("{}")).await.unwrap();
                assert_eq!(prefix.counter_of(&run.id), Some(run.counter));
                counters.push(run.counter);
            }
            store.close().await;
        }
        assert_eq!(counters, (1..=120).collect::<Vec<u64>>());
        db.drop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_concurrent_creates_issue_unique_ids() {
    for db in backends().await {
        let store = db.open().await;
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for _ in 0..50 {
                        ids.push(store.create_run(quick_run("{}")).await.unwrap().counter);
                    }
                    ids
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            let ids = task.await.unwrap();
            assert!(ids.windows(2).all(|w| w[0] < w[1]), "each creator sees increasing IDs");
            all.extend(ids);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<u64>>());
        db.drop().await;
    }
}

#[tokio::test]
async fn store_list_runs_filters_newest_first() {
    for db in backends().await {
        let store = db.open().await;
        for i in 0..20 {
            let mut new = quick_run("{}");
            new.task_name = Some(if i % 2 == 0 { "even" } else { "odd" }.to_string());
            store.create_run(new).await.unwrap();
        }
        // kb1 succeeds with app:v1; kb2 fails with nothing; the rest stay queued.
        let c = store.claim_next(&Claimant::amd64("w"), TTL).await.unwrap().unwrap();
        store
            .finish(
                &c.run.id,
                c.epoch,
                RunStatus::Succeeded,
                None,
                &[image("team/app", "v1")],
                None,
            )
            .await
            .unwrap();
        let c = store.claim_next(&Claimant::amd64("w"), TTL).await.unwrap().unwrap();
        store
            .finish(&c.run.id, c.epoch, RunStatus::Failed, Some("exit 1"), &[], None)
            .await
            .unwrap();

        let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.counter).collect::<Vec<_>>();
        let default = store.list_runs(&RunFilter::default()).await.unwrap();
        assert_eq!(ids(default), (6..=20).rev().collect::<Vec<_>>());
        let all = RunFilter { top: 0, ..RunFilter::default() };
        assert_eq!(store.list_runs(&all).await.unwrap().len(), 20);
        let queued = RunFilter { status: Some(RunStatus::Queued), top: 3, ..RunFilter::default() };
        assert_eq!(ids(store.list_runs(&queued).await.unwrap()), vec![20, 19, 18]);
        let failed = RunFilter { status: Some(RunStatus::Failed), ..RunFilter::default() };
        assert_eq!(ids(store.list_runs(&failed).await.unwrap()), vec![2]);
        let even = RunFilter { task_name: Some("even".into()), top: 2, ..RunFilter::default() };
        assert_eq!(ids(store.list_runs(&even).await.unwrap()), vec![19, 17]);
        let app = RunFilter { image: Some("team/app:v1".into()), ..RunFilter::default() };
        assert_eq!(ids(store.list_runs(&app).await.unwrap()), vec![1]);
        let other_tag = RunFilter { image: Some("team/app:v2".into()), ..RunFilter::default() };
        assert!(store.list_runs(&other_tag).await.unwrap().is_empty());
        let latest = RunFilter { image: Some("team/app".into()), ..RunFilter::default() };
        assert!(store.list_runs(&latest).await.unwrap().is_empty());
        db.drop().await;
    }
}

#[tokio::test]
async fn store_claim_takes_oldest_queued() {
    for db in backends().await {
        let store = db.open().await;
        assert_eq!(store.claim_next(&Claimant::amd64("w1"), TTL).await.unwrap(), None);
        let first = store.create_run(quick_run("1")).await.unwrap();
        let second = store.create_run(quick_run("2")).await.unwrap();
        let before = Utc::now() - TimeDelta::seconds(1);
        let claim = store.claim_next(&Claimant::amd64("w1"), TTL).await.unwrap().unwrap();
        assert_eq!(claim.run.id, first.id);
        assert_eq!(claim.epoch, 1);
        assert_eq!(claim.run.status, RunStatus::Started);
        assert_eq!(claim.run.lease_owner.as_deref(), Some("w1"));
        let started = claim.run.started_at.unwrap();
        assert!(started >= before);
        assert_eq!(claim.run.lease_expires_at.unwrap(), started + TimeDelta::seconds(30));
        let claim2 = store.claim_next(&Claimant::amd64("w2"), TTL).await.unwrap().unwrap();
        assert_eq!(claim2.run.id, second.id);
        assert_eq!(store.claim_next(&Claimant::amd64("w3"), TTL).await.unwrap(), None);
        assert_eq!(store.get_run(&first.id).await.unwrap(), claim.run);
        db.drop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_concurrent_claimers_never_double_claim() {
    for db in backends().await {
        let store = db.open().await;
        const RUNS: usize = 300;
        for _ in 0..RUNS {
            store.create_run(quick_run("{}")).await.unwrap();
        }
        let claimers: Vec<_> = (0..4)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(claim) =
                        store.claim_next(&Claimant::amd64(&format!("w{w}")), TTL).await.unwrap()
                    {
                        assert_eq!(claim.epoch, 1);
                        assert_eq!(claim.run.lease_owner, Some(format!("w{w}")));
                        got.push(claim.run.id);
                    }
                    got
                })
            })
            .collect();
        let mut seen = HashSet::new();
        for claimer in claimers {
            for id in claimer.await.unwrap() {
                assert!(seen.insert(id.clone()), "{id} claimed twice");
            }
        }
        assert_eq!(seen.len(), RUNS);
        let queued = RunFilter { status: Some(RunStatus::Queued), ..RunFilter::default() };
        assert!(store.list_runs(&queued).await.unwrap().is_empty());
        db.drop().await;
    }
}

#[tokio::test]
async fn store_worker_lifecycle() {
    for db in backends().await {
        let store = db.open().await;
        let claim = claimed(&store, "{}").await;
        let id = &claim.run.id;
        let beat = store.heartbeat(id, claim.epoch, Duration::from_secs(120)).await.unwrap();
        assert!(!beat.cancel_requested);
        assert!(beat.lease_expires_at > claim.run.lease_expires_at.unwrap());
        let running = store.set_status(id, claim.epoch, RunStatus::Running).await.unwrap();
        assert_eq!(running.status, RunStatus::Running);
        for bad in [RunStatus::Queued, RunStatus::Started, RunStatus::Succeeded] {
            assert!(matches!(
                store.set_status(id, claim.epoch, bad).await,
                Err(StoreError::InvalidTransition { .. })
            ));
        }
        assert!(matches!(
            store.finish(id, claim.epoch, RunStatus::Running, None, &[], None).await,
            Err(StoreError::InvalidTransition { .. })
        ));
        let images = [image("app", "v1"), image("app", "latest")];
        let done = store
            .finish(id, claim.epoch, RunStatus::Succeeded, None, &images, Some(r#"[{"image":{}}]"#))
            .await
            .unwrap();
        assert_eq!(done.status, RunStatus::Succeeded);
        assert_eq!(done.output_images, images);
        assert_eq!(done.dependencies.as_deref(), Some(r#"[{"image":{}}]"#));
        assert!(done.finished_at.is_some());
        assert_eq!((done.lease_owner.clone(), done.lease_expires_at), (None, None));
        assert_eq!(store.get_run(id).await.unwrap(), done);
        // A finished run takes no more worker writes, even with the right epoch.
        assert!(matches!(
            store.append_log(id, claim.epoch, b"late").await,
            Err(StoreError::StaleLease { status: RunStatus::Succeeded, .. })
        ));
        assert!(matches!(
            store.finish(id, claim.epoch, RunStatus::Failed, None, &[], None).await,
            Err(StoreError::StaleLease { .. })
        ));
        db.drop().await;
    }
}

#[tokio::test]
async fn store_stale_epoch_cannot_write_after_expiry() {
    for db in backends().await {
        let store = db.open().await;
        let claim = claimed(&store, "{}").await;
        let id = &claim.run.id;
        store.set_status(id, claim.epoch, RunStatus::Running).await.unwrap();
        store.append_log(id, claim.epoch, b"before\n").await.unwrap();
        let expiry = claim.run.lease_expires_at.unwrap();

        // Not yet expired: nothing happens.
        let none = lease::Expired::default();
        assert_eq!(store.expire_leases(expiry - TimeDelta::milliseconds(1)).await.unwrap(), none);
        assert_eq!(store.get_run(id).await.unwrap().status, RunStatus::Running);

        assert_eq!(store.expire_leases(expiry).await.unwrap().failed, vec![id.clone()]);
        let run = store.get_run(id).await.unwrap();
        assert_eq!(run.status, RunStatus::Error);
        assert_eq!(
            run.error_message.as_deref(),
            Some("agent w1 stopped responding during the run")
        );
        assert_eq!(run.epoch, claim.epoch + 1);
        assert!(run.finished_at.is_some());

        let stale = |r: StoreResult<()>| match r {
            Err(StoreError::StaleLease { epoch, current, status, .. }) => {
                assert_eq!(
                    (epoch, current, status),
                    (claim.epoch, claim.epoch + 1, RunStatus::Error)
                );
            }
            other => panic!("expected StaleLease, got {other:?}"),
        };
        stale(store.append_log(id, claim.epoch, b"after\n").await.map(drop));
        stale(store.set_status(id, claim.epoch, RunStatus::Running).await.map(drop));
        stale(store.heartbeat(id, claim.epoch, TTL).await.map(drop));
        stale(store.finish(id, claim.epoch, RunStatus::Succeeded, None, &[], None).await.map(drop));
        let err = store.append_log(id, claim.epoch, b"x").await.unwrap_err();
        assert!(err.to_string().contains("stale"), "{err}");
        // Nothing the stale worker wrote landed.
        let after = store.get_run(id).await.unwrap();
        assert_eq!((after.status, after.log_len), (RunStatus::Error, WAITING + 7));
        // A second expiry pass finds nothing more.
        assert_eq!(store.expire_leases(expiry + TimeDelta::days(1)).await.unwrap(), none);
        db.drop().await;
    }
}

#[tokio::test]
async fn store_timeouts_end_runs_and_fence() {
    for db in backends().await {
        let store = db.open().await;
        let mut new = quick_run("{}");
        new.timeout_secs = 300;
        store.create_run(new).await.unwrap();
        let claim = store
            .claim_next(&Claimant::amd64("w"), Duration::from_secs(3600))
            .await
            .unwrap()
            .unwrap();
        let id = &claim.run.id;
        let started = claim.run.started_at.unwrap();
        let queued = store.create_run(quick_run("{}")).await.unwrap();
        let limit = started + TimeDelta::seconds(300);
        assert!(
            store.expire_timeouts(limit - TimeDelta::milliseconds(1)).await.unwrap().is_empty()
        );
        assert_eq!(store.expire_timeouts(limit).await.unwrap(), vec![id.clone()]);
        let run = store.get_run(id).await.unwrap();
        assert_eq!(run.status, RunStatus::Timeout);
        assert_eq!(run.error_message.as_deref(), Some("run timed out after 300 seconds"));
        assert_eq!(run.epoch, claim.epoch + 1);
        assert!(matches!(
            store.finish(id, claim.epoch, RunStatus::Succeeded, None, &[], None).await,
            Err(StoreError::StaleLease { status: RunStatus::Timeout, .. })
        ));
        assert_eq!(store.get_run(&queued.id).await.unwrap().status, RunStatus::Queued);
        db.drop().await;
    }
}

#[tokio::test]
async fn store_wrong_epoch_is_stale_while_held() {
    for db in backends().await {
        let store = db.open().await;
        let claim = claimed(&store, "{}").await;
        assert!(matches!(
            store.append_log(&claim.run.id, claim.epoch + 1, b"x").await,
            Err(StoreError::StaleLease { current: 1, status: RunStatus::Started, .. })
        ));
        assert!(matches!(
            store.append_log(&claim.run.id, claim.epoch - 1, b"x").await,
            Err(StoreError::StaleLease { .. })
        ));
        db.drop().await;
    }
}

#[tokio::test]
async fn store_an_agents_new_session_ends_what_its_predecessor_held() {
    for db in backends().await {
        let store = db.open().await;
        let c = claimed(&store, "done").await;
        store.finish(&c.run.id, c.epoch, RunStatus::Succeeded, None, &[], None).await.unwrap();
        let done = c.run.id;
        let running = claimed(&store, "running").await;
        store.set_status(&running.run.id, running.epoch, RunStatus::Running).await.unwrap();
        let started = claimed(&store, "started").await;
        store.create_run(quick_run("other's")).await.unwrap();
        let others = store.claim_next(&Claimant::amd64("w2"), TTL).await.unwrap().unwrap();
        let queued = store.create_run(quick_run("queued")).await.unwrap().id;

        let ended = store.end_agent_runs("w1", SERVER_STOPPED_MESSAGE).await.unwrap();
        assert_eq!(ended.failed, vec![running.run.id.clone()]);
        assert_eq!(ended.requeued, vec![started.run.id.clone()]);
        let run = store.get_run(&running.run.id).await.unwrap();
        assert_eq!(run.status, RunStatus::Error);
        assert_eq!(run.error_message.as_deref(), Some(SERVER_STOPPED_MESSAGE));
        let again = store.get_run(&started.run.id).await.unwrap();
        assert_eq!(
            (again.status, again.agent_name, again.started_at),
            (RunStatus::Queued, None, None)
        );
        for claim in [&running, &started] {
            assert!(matches!(
                store.append_log(&claim.run.id, claim.epoch, b"x").await,
                Err(StoreError::StaleLease { .. })
            ));
        }
        assert_eq!(store.get_run(&others.run.id).await.unwrap().status, RunStatus::Started);
        assert_eq!(store.get_run(&queued).await.unwrap().status, RunStatus::Queued);
        assert_eq!(store.get_run(&done).await.unwrap().status, RunStatus::Succeeded);
        // The requeued run is the oldest queued one: the next claim takes it, with a new epoch.
        let next = store.claim_next(&Claimant::amd64("w3"), TTL).await.unwrap().unwrap();
        assert_eq!(next.run.id, started.run.id);
        assert!(next.epoch > started.epoch);
        db.drop().await;
    }
}
#[tokio::test]
async fn store_claims_route_by_pool_and_platform() {
    for db in backends().await {
        let store = db.open().await;
        let mut arm = quick_run("arm");
        arm.platform = "linux/arm64".to_string();
        let arm = store.create_run(arm).await.unwrap().id;
        let mut pooled = quick_run("pooled");
        pooled.agent_pool = Some("gpu".to_string());
        let pooled = store.create_run(pooled).await.unwrap().id;
        let any = store.create_run(quick_run("any")).await.unwrap().id;
        // An amd64 agent of no pool skips the arm64 run and the pool's run.
        let plain = store.claim_next(&Claimant::amd64("plain"), TTL).await.unwrap().unwrap();
        assert_eq!((plain.run.id, plain.run.agent_name.as_deref()), (any, Some("plain")));
        assert_eq!(store.claim_next(&Claimant::amd64("plain"), TTL).await.unwrap(), None);
        let gpu = Claimant { pool: Some("gpu".to_string()), ..Claimant::amd64("gpu-1") };
        assert_eq!(store.claim_next(&gpu, TTL).await.unwrap().unwrap().run.id, pooled);
        let arm_agent =
            Claimant { platforms: vec!["linux/arm64/v8".to_string()], ..Claimant::amd64("a") };
        assert_eq!(store.claim_next(&arm_agent, TTL).await.unwrap().unwrap().run.id, arm);
        db.drop().await;
    }
}
#[test]
fn store_says_why_no_registered_agent_may_take_a_run() {
    use super::lease::no_agent_reason;
    let amd64 = Claimant::amd64("plain");
    let arm = Claimant {
        platforms: vec!["linux/arm64".to_string(), "linux/arm/v7".to_string()],
        ..Claimant::amd64("arm")
    };
    let gpu = Claimant { pool: Some("gpu".to_string()), ..Claimant::amd64("gpu-1") };
    let fresh = Claimant { platforms: Vec::new(), ..Claimant::amd64("fresh") };
    let agents = [amd64.clone(), arm.clone(), gpu.clone()];
    assert_eq!(no_agent_reason(None, "linux/arm64/v8", &agents), None);
    assert_eq!(no_agent_reason(Some("gpu"), "linux/amd64", &agents), None);
    assert_eq!(
        no_agent_reason(None, "linux/s390x", &agents).as_deref(),
        Some("no agent runs linux/s390x (they run linux/amd64, linux/arm/v7, linux/arm64)")
    );
    assert_eq!(
        no_agent_reason(Some("gpu"), "linux/arm64", &agents).as_deref(),
        Some("no agent in pool gpu runs linux/arm64 (they run linux/amd64)")
    );
    assert_eq!(
        no_agent_reason(Some("big"), "linux/amd64", &agents).as_deref(),
        Some("no agent is registered in pool big")
    );
    assert_eq!(
        no_agent_reason(None, "linux/amd64", &[fresh]).as_deref(),
        Some("no agent has connected yet")
    );
    assert_eq!(
        no_agent_reason(None, "linux/amd64", &[]).as_deref(),
        Some("no agent is registered")
    );
}

#[tokio::test]
async fn store_cancel_in_each_state() {
    for db in backends().await {
        let store = db.open().await;

        // Started and Running: the flag is set, the worker learns it from its heartbeat.
        let started = claimed(&store, "started").await;
        let running = claimed(&store, "running").await;
        store.set_status(&running.run.id, running.epoch, RunStatus::Running).await.unwrap();
        for (claim, status) in [(&started, RunStatus::Started), (&running, RunStatus::Running)] {
            let run = store.cancel_run(&claim.run.id).await.unwrap();
            assert_eq!(run.status, status);
            assert!(run.cancel_requested);
            assert_eq!(run.finished_at, None);
            assert!(
                store.heartbeat(&claim.run.id, claim.epoch, TTL).await.unwrap().cancel_requested
            );
            // Cancelling again is harmless.
            assert!(store.cancel_run(&claim.run.id).await.unwrap().cancel_requested);
            let done = store
                .finish(&claim.run.id, claim.epoch, RunStatus::Canceled, None, &[], None)
                .await
                .unwrap();
            assert_eq!(done.status, RunStatus::Canceled);
        }

        // Queued: canceled at once, and never claimed.
        let queued = store.create_run(quick_run("queued")).await.unwrap();
        let run = store.cancel_run(&queued.id).await.unwrap();
        assert_eq!(run.status, RunStatus::Canceled);
        assert!(run.finished_at.is_some());
        assert!(!run.cancel_requested);
        assert_eq!(store.claim_next(&Claimant::amd64("w"), TTL).await.unwrap(), None);

        // Terminal: typed error naming the status.
        let err = store.cancel_run(&queued.id).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::AlreadyFinished { status: RunStatus::Canceled, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("run {} already finished with status Canceled", queued.id)
        );
        let err = store.cancel_run(&started.run.id).await.unwrap_err();
        assert!(matches!(err, StoreError::AlreadyFinished { .. }));
        db.drop().await;
    }
}

#[tokio::test]
async fn store_log_offsets_contiguous_and_reads_exact() {
    for db in backends().await {
        let store = db.open().await;
        let claim = claimed(&store, "{}").await;
        let id = &claim.run.id;
        let mut expected = WAITING_LINE.as_bytes().to_vec();
        for (i, size) in [1usize, 7, 0, 300, 2, 500, 13].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8).collect();
            let chunk = store.append_log(id, claim.epoch, &bytes).await.unwrap();
            assert_eq!(chunk.offset, expected.len() as u64);
            assert_eq!(chunk.len, size as u64);
            expected.extend_from_slice(&bytes);
        }
        assert_eq!(store.log_len(id).await.unwrap(), expected.len() as u64);
        let whole = store.read_log(id, 0, usize::MAX).await.unwrap();
        let seqs: Vec<u64> = whole.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6, 7], "the empty append stored no chunk");
        for pair in whole.windows(2) {
            assert_eq!(pair[0].end(), pair[1].offset, "no gap, no overlap");
        }
        // A follower resuming from any offset, reading in pieces of any size, gets exactly the
        // rest.
        // Every offset with large reads; with small reads, the offsets around chunk boundaries.
        let boundaries: Vec<usize> = whole
            .iter()
            .flat_map(|c| {
                let at = c.offset as usize;
                [at.saturating_sub(1), at, at + 1]
            })
            .chain([expected.len() - 1, expected.len()])
            .collect();
        for max in [1usize, 5, 64, 100, usize::MAX] {
            let froms: Vec<usize> =
                if max >= 100 { (0..=expected.len()).collect() } else { boundaries.clone() };
            for from in froms {
                let mut got = Vec::new();
                let mut at = from as u64;
                loop {
                    let chunks = store.read_log(id, at, max).await.unwrap();
                    if chunks.is_empty() {
                        break;
                    }
                    let mut total = 0;
                    for c in chunks {
                        assert_eq!(c.offset, at);
                        at = c.end();
                        total += c.data.len();
                        got.extend(c.data);
                    }
                    assert!(total <= max);
                }
                assert_eq!(got, expected[from..], "from {from}, max {max}");
            }
        }
        assert!(store.read_log(id, expected.len() as u64 + 10, 100).await.unwrap().is_empty());
        assert!(store.read_log(id, 0, 0).await.unwrap().is_empty());
        db.drop().await;
    }
}

#[tokio::test]
async fn store_expire_logs_of_old_finished_runs() {
    for db in backends().await {
        let store = db.open().await;
        let finished = claimed(&store, "finished").await;
        store.append_log(&finished.run.id, finished.epoch, b"a").await.unwrap();
        store.append_log(&finished.run.id, finished.epoch, b"b").await.unwrap();
        let done = store
            .finish(&finished.run.id, finished.epoch, RunStatus::Succeeded, None, &[], None)
            .await
            .unwrap();
        let live = claimed(&store, "live").await;
        store.append_log(&live.run.id, live.epoch, b"c").await.unwrap();

        let finished_at = done.finished_at.unwrap();
        assert_eq!(store.expire_logs(finished_at - logs::LOG_RETENTION).await.unwrap(), 0);
        assert_eq!(store.expire_logs(finished_at).await.unwrap(), 0, "strictly before the cutoff");
        let cutoff = finished_at + TimeDelta::milliseconds(1);
        assert_eq!(store.expire_logs(cutoff).await.unwrap(), 3);
        assert!(store.read_log(&finished.run.id, 0, 100).await.unwrap().is_empty());
        assert_eq!(store.log_len(&finished.run.id).await.unwrap(), WAITING + 2);
        let live_log = store.read_log(&live.run.id, 0, 100).await.unwrap();
        assert_eq!(live_log.last().unwrap().data, b"c");
        db.drop().await;
    }
}

#[tokio::test]
async fn store_keeps_arrival_times_beside_the_log_without_moving_offsets() {
    for db in backends().await {
        let store = db.open().await;
        let claim = claimed(&store, "{}").await;
        let id = &claim.run.id;
        let at = |ms: i64| DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap();
        let w = WAITING;
        let times = [LogTime { offset: 0, at: at(1) }, LogTime { offset: 4, at: at(2) }];
        let chunk = store.append_log_timed(id, claim.epoch, b"one\ntwo\n", &times).await.unwrap();
        assert_eq!((chunk.offset, chunk.len), (w, 8), "offsets are the bytes' own");
        store
            .append_log_timed(id, claim.epoch, b"three\n", &[LogTime { offset: 0, at: at(3) }])
            .await
            .unwrap();
        assert_eq!(store.log_len(id).await.unwrap(), w + 14);
        let all = store.log_times(id, 0, w + 14).await.unwrap();
        assert_eq!(all, [(w, at(1)), (w + 4, at(2)), (w + 8, at(3))]);
        // From inside "two": the mark covering it first, then the later ones.
        assert_eq!(store.log_times(id, w + 5, w + 14).await.unwrap()[0], (w + 4, at(2)));
        assert_eq!(store.log_times(id, w + 5, w + 8).await.unwrap(), [(w + 4, at(2))]);
        let done =
            store.finish(id, claim.epoch, RunStatus::Succeeded, None, &[], None).await.unwrap();
        store.expire_logs(done.finished_at.unwrap() + TimeDelta::milliseconds(1)).await.unwrap();
        assert!(store.log_times(id, 0, u64::MAX).await.unwrap().is_empty(), "expired with the log");
        db.drop().await;
    }
}

#[tokio::test]
async fn store_admin_token_once_and_verified() {
    for db in backends().await {
        let token;
        {
            let store = db.open().await;
            token = store.ensure_admin_token().await.unwrap().expect("first start creates it");
            assert!(token.starts_with(tokens::TOKEN_PREFIX));
            assert!(token.len() >= tokens::TOKEN_PREFIX.len() + 32, "at least 128 bits");
            assert!(token.bytes().all(|b| b.is_ascii_graphic()));
            assert_eq!(store.ensure_admin_token().await.unwrap(), None);
            let info = store.verify_token(&token).await.unwrap().unwrap();
            assert_eq!(info.name, tokens::ADMIN_TOKEN_NAME);
            assert!(info.is_admin);
            store.close().await;
        }
        let store = db.open().await;
        assert_eq!(store.ensure_admin_token().await.unwrap(), None);
        assert!(store.verify_token(&token).await.unwrap().is_some());
        let mut wrong = token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        for bad in [wrong.as_str(), "", "kiln_", "not-a-token", &token[..token.len() - 1]] {
            assert_eq!(store.verify_token(bad).await.unwrap(), None, "{bad:?}");
        }
        // Only the hash is stored.
        let stored: Vec<(String, String)> = on_db!(store.db(), |pool| {
            sqlx::query_as("SELECT name, hash FROM tokens").fetch_all(pool).await
        })
        .unwrap();
        assert!(stored.iter().all(|(name, hash)| !name.contains(&token) && !hash.contains(&token)));
        if let DatabaseUrl::Sqlite(path) = store.url() {
            let raw = std::fs::read(path).unwrap();
            let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
            let needle = token.as_bytes();
            for bytes in [&raw, &wal] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle));
            }
        }
        db.drop().await;
    }
}

#[tokio::test]
async fn store_reopen_keeps_everything() {
    for db in backends().await {
        let (finished, queued, held);
        {
            let store = db.open().await;
            let c = claimed(&store, r#"{"context":"."}"#).await;
            store.append_log(&c.run.id, c.epoch, b"hello ").await.unwrap();
            store.append_log(&c.run.id, c.epoch, b"world\n").await.unwrap();
            finished = store
                .finish(
                    &c.run.id,
                    c.epoch,
                    RunStatus::Failed,
                    Some("failed during run, err: exit status 1"),
                    &[image("app", "v1")],
                    Some("[]"),
                )
                .await
                .unwrap();
            held = claimed(&store, "held").await;
            store.append_log(&held.run.id, held.epoch, b"partial").await.unwrap();
            queued = store.create_run(quick_run("queued")).await.unwrap();
            store.close().await;
        }
        let store = db.open().await;
        assert_eq!(store.get_run(&finished.id).await.unwrap(), finished);
        assert_eq!(store.get_run(&queued.id).await.unwrap(), queued);
        let held_now = store.get_run(&held.run.id).await.unwrap();
        assert_eq!(held_now.log_len, WAITING + 7);
        assert_eq!(held_now.status, RunStatus::Started);
        let log: Vec<u8> = store
            .read_log(&finished.id, 0, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|c| c.data)
            .collect();
        assert_eq!(log, [WAITING_LINE.as_bytes(), b"hello world\n"].concat());
        // The lease survives too: the holder can continue after a reopen of the store alone.
        let chunk = store.append_log(&held.run.id, held.epoch, b"!").await.unwrap();
        assert_eq!((chunk.seq, chunk.offset), (3, WAITING + 7));
        db.drop().await;
    }
}

#[tokio::test]
async fn store_corrupt_rows_are_errors_not_panics() {
    for db in backends().await {
        let store = db.open().await;
        let a = store.create_run(quick_run("a")).await.unwrap();
        let b = store.create_run(quick_run("b")).await.unwrap();
        let c = store.create_run(quick_run("c")).await.unwrap();
        for (id, sql) in [
            (&a.id, "UPDATE runs SET status = 'Exploded' WHERE id = $1"),
            (&b.id, "UPDATE runs SET output_images = '{not json' WHERE id = $1"),
            (&c.id, "UPDATE runs SET created_at = 9223372036854775807 WHERE id = $1"),
        ] {
            on_db!(store.db(), |pool| sqlx::query(sql)
                .bind(id.as_str())
                .execute(pool)
                .await
                .map(drop))
            .unwrap();
            let err = store.get_run(id).await.unwrap_err();
            assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        }
        assert!(matches!(
            store.list_runs(&RunFilter::default()).await,
            Err(StoreError::Corrupt(_))
        ));
        db.drop().await;
    }
}

/// Measures (does not assert) how many `create_run` per second one store accepts, sequentially.
/// `cargo test --lib store_create_run_rate -- --ignored --nocapture`
#[tokio::test]
#[ignore = "measurement, not a check"]
async fn store_create_run_rate() {
    for db in backends().await {
        let store = db.open().await;
        const N: u32 = 2000;
        let request = r#"{"task":"steps:\n  - build: -t app:v1 .","values":{},"context":"."}"#;
        let start = Instant::now();
        for _ in 0..N {
            store.create_run(quick_run(request)).await.unwrap();
        }
        let elapsed = start.elapsed();
        println!(
            "create_run: {N} sequential inserts in {:.3}s = {:.0}/s",
            elapsed.as_secs_f64(),
            f64::from(N) / elapsed.as_secs_f64()
        );
        db.drop().await;
    }
}

async fn task(store: &Store, name: &str) {
    let write = TaskWrite {
        status: "Enabled".into(),
        base_image_trigger: "Runtime".into(),
        definition: "{}".into(),
        sealed: vec![1, 2, 3],
    };
    store.create_task(name, write, vec![4], &[]).await.unwrap();
}

#[tokio::test]
async fn store_source_events_queue_once_per_delivery_and_per_commit() {
    for db in backends().await {
        let store = db.open().await;
        task(&store, "app").await;
        let queue = |delivery: &'static str, commit: &'static str| {
            let store = store.clone();
            async move {
                store
                    .queue_source_event("app", Some(delivery), "commit", commit, quick_run("{}"))
                    .await
                    .unwrap()
            }
        };
        assert!(matches!(queue("d1", "c1").await, SourceOutcome::Queued(_)));
        assert_eq!(queue("d1", "c2").await, SourceOutcome::DuplicateDelivery);
        assert_eq!(queue("d2", "c1").await, SourceOutcome::DuplicateCommit);
        // Forgetting old delivery IDs keeps the commit key: a late redelivery still queues nothing.
        assert_eq!(store.forget_deliveries(Utc::now() + TimeDelta::days(1)).await.unwrap(), 2);
        assert_eq!(queue("d1", "c1").await, SourceOutcome::DuplicateCommit);
        assert!(matches!(queue("d3", "c3").await, SourceOutcome::Queued(_)));
        assert_eq!(store.list_runs(&RunFilter::default()).await.unwrap().len(), 2);
        // Deleting the task forgets its trigger state; its runs stay.
        store.delete_task("app").await.unwrap();
        assert!(matches!(store.get_task("app").await, Err(StoreError::TaskNotFound(_))));
        assert_eq!(store.list_runs(&RunFilter::default()).await.unwrap().len(), 2);
        db.drop().await;
    }
}

#[tokio::test]
async fn store_base_image_changes_are_claimed_once() {
    for db in backends().await {
        let (a, b) = (db.open().await, db.open().await);
        task(&a, "app").await;
        let base = BaseImageRecord {
            task_name: "app".into(),
            registry: "r:5000".into(),
            repository: "base".into(),
            tag: "1".into(),
            kind: "RunTime".into(),
            digest: "sha256:old".into(),
            digest_kind: None,
        };
        a.set_base_images("app", std::slice::from_ref(&base)).await.unwrap();
        assert_eq!(a.watched_base_images().await.unwrap(), std::slice::from_ref(&base));
        let change = [(base.clone(), "sha256:new".to_string())];
        let (x, y) = tokio::join!(
            a.claim_base_image_change(&change, Some(quick_run("{}"))),
            b.claim_base_image_change(&change, Some(quick_run("{}")))
        );
        let claimed = [x.unwrap(), y.unwrap()]
            .into_iter()
            .filter(|o| matches!(o, ClaimOutcome::Claimed(Some(_))))
            .count();
        assert_eq!(claimed, 1, "one run per change, whoever sees it");
        assert_eq!(a.base_images("app").await.unwrap()[0].digest, "sha256:new");
        assert_eq!(a.list_runs(&RunFilter::default()).await.unwrap().len(), 1);
        // Build-time bases are watched only with the trigger type All.
        let buildtime =
            BaseImageRecord { repository: "builder".into(), kind: "BuildTime".into(), ..base };
        let runtime = a.base_images("app").await.unwrap().remove(0);
        a.set_base_images("app", &[runtime.clone(), buildtime.clone()]).await.unwrap();
        assert_eq!(a.watched_base_images().await.unwrap(), std::slice::from_ref(&runtime));
        let all = TaskWrite {
            status: "Enabled".into(),
            base_image_trigger: "All".into(),
            definition: "{}".into(),
            sealed: vec![1],
        };
        a.update_task("app", all).await.unwrap();
        assert_eq!(a.watched_base_images().await.unwrap().len(), 2);
        // A task whose base-image trigger is off watches nothing.
        let write = TaskWrite {
            status: "Enabled".into(),
            base_image_trigger: "Disabled".into(),
            definition: "{}".into(),
            sealed: vec![1],
        };
        a.update_task("app", write).await.unwrap();
        assert!(a.watched_base_images().await.unwrap().is_empty());
        db.drop().await;
    }
}

#[tokio::test]
async fn store_task_parts_group_timers_images_and_recent_history_by_task() {
    for db in backends().await {
        let store = db.open().await;
        for name in ["a", "b", "c"] {
            task(&store, name).await;
        }
        let timer = |task: &str, name: &str| TimerRecord {
            task_name: task.into(),
            name: name.into(),
            schedule: "* * * * *".into(),
            enabled: true,
            next_fire_at: None,
        };
        for (task, name) in [("b", "t2"), ("a", "t1"), ("b", "t1")] {
            store.add_timer(&timer(task, name)).await.unwrap();
        }
        let base = BaseImageRecord {
            task_name: "a".into(),
            registry: "r:5000".into(),
            repository: "base".into(),
            tag: "1".into(),
            kind: "RunTime".into(),
            digest: String::new(),
            digest_kind: None,
        };
        store.set_base_images("a", std::slice::from_ref(&base)).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        let start = Utc::now();
        for i in 0..5 {
            let at = start + TimeDelta::seconds(i);
            tasks::insert_event(&mut tx, "a", at, "TimerMissed", &format!("a{i}")).await.unwrap();
            tasks::insert_event(&mut tx, "b", at, "TimerMissed", &format!("b{i}")).await.unwrap();
        }
        tx.commit().await.unwrap();

        let all = store.task_parts(None, 3).await.unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b"], "c has nothing to show");
        let names =
            |parts: &TaskParts| parts.timers.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&all["b"]), ["t1", "t2"]);
        let history =
            |parts: &TaskParts| parts.history.iter().map(|e| e.detail.clone()).collect::<Vec<_>>();
        assert_eq!(history(&all["a"]), ["a4", "a3", "a2"], "the last 3 of each task, newest first");
        assert_eq!(history(&all["b"]), ["b4", "b3", "b2"]);
        assert_eq!(all["a"].base_images, [base]);
        assert!(all["b"].base_images.is_empty());

        let one = store.task_parts(Some("b"), 10).await.unwrap();
        assert_eq!(one.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(history(&one["b"]).len(), 5);
        assert_eq!(store.task_events("b", 2).await.unwrap()[0].detail, "b4");
        db.drop().await;
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn store_files_are_private_and_older_ones_are_tightened() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join(DB_FILE);
    let files = |db: &Path| {
        ["", "-wal", "-shm"].map(|s| std::path::PathBuf::from(format!("{}{s}", db.display())))
    };
    let store = open(&data).await;
    store.create_run(quick_run("{}")).await.unwrap();
    assert_eq!(mode(&data), 0o700);
    for file in files(&db) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    store.close().await;

    // A data directory from before: world-readable, tightened at the next start.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = open(&data).await;
    assert_eq!(store.list_runs(&RunFilter::default()).await.unwrap().len(), 1);
    assert_eq!((mode(&data), mode(&db)), (0o700, 0o600));
    store.close().await;
}

/// What one server writes, a second server on the same PostgreSQL database hears (in commit
/// order); on SQLite there is no other server to hear. (Record changes, which come from a task
/// of their own and merge, are the next test's.)
#[tokio::test]
async fn store_other_servers_hear_queued_runs_log_growth_ends_and_cancels() {
    for db in backends().await {
        let (a, b) = (db.open().await, db.open().await);
        let Some(mut heard) = b.listen().await.unwrap() else {
            assert!(matches!(a.url(), DatabaseUrl::Sqlite(_)), "only SQLite has no events");
            db.drop().await;
            continue;
        };
        let mut next = async || loop {
            let event = tokio::time::timeout(Duration::from_secs(30), heard.next());
            match event.await.unwrap().unwrap() {
                StoreEvent::RunChanged { .. } => {}
                event => return event,
            }
        };
        let c = claimed(&a, "one").await;
        assert_eq!(next().await, StoreEvent::Queued);
        a.append_log(&c.run.id, c.epoch, b"hello\n").await.unwrap();
        assert_eq!(next().await, StoreEvent::Log { run: c.run.id.clone(), len: WAITING + 6 });
        // A fenced write that fails, and an empty one, announce nothing.
        a.append_log(&c.run.id, c.epoch + 1, b"stale").await.unwrap_err();
        a.append_log(&c.run.id, c.epoch, b"").await.unwrap();
        a.finish(&c.run.id, c.epoch, RunStatus::Succeeded, None, &[], None).await.unwrap();
        assert_eq!(next().await, StoreEvent::Ended(c.run.id.clone()));
        let held = claimed(&a, "two").await;
        assert_eq!(next().await, StoreEvent::Queued);
        a.cancel_run(&held.run.id).await.unwrap();
        assert_eq!(next().await, StoreEvent::CancelRequested(held.run.id.clone()));
        let queued = a.create_run(quick_run("three")).await.unwrap();
        assert_eq!(next().await, StoreEvent::Queued);
        a.cancel_run(&queued.id).await.unwrap();
        assert_eq!(next().await, StoreEvent::Ended(queued.id.clone()));
        db.drop().await;
    }
}

/// Every write of a run record tells this server's watchers at once, in order, and the other
/// servers on PostgreSQL by `RunChanged`, which the writing server does not hear back.
#[tokio::test]
async fn store_run_changes_reach_this_servers_watchers_and_the_other_servers() {
    for db in backends().await {
        let (a, b) = (db.open().await, db.open().await);
        let mut watch = a.watch_runs();
        let (heard_by_a, heard_by_b) = (a.listen().await.unwrap(), b.listen().await.unwrap());
        let mut changed = async || {
            tokio::time::timeout(Duration::from_secs(30), watch.recv()).await.unwrap().unwrap()
        };
        let c = claimed(&a, "one").await;
        let id = c.run.id.clone();
        assert_eq!((changed().await, changed().await), (id.clone(), id.clone()), "queued, taken");
        a.set_status(&id, c.epoch, RunStatus::Running).await.unwrap();
        assert_eq!(changed().await, id);
        a.set_steps(&id, c.epoch, &[]).await.unwrap();
        assert_eq!(changed().await, id);
        a.finish(&id, c.epoch, RunStatus::Succeeded, None, &[], None).await.unwrap();
        assert_eq!(changed().await, id);
        let queued = a.create_run(quick_run("two")).await.unwrap();
        assert_eq!(changed().await, queued.id);
        a.cancel_run(&queued.id).await.unwrap();
        assert_eq!(changed().await, queued.id);
        // A failed fenced write changes nothing and announces nothing.
        a.set_steps(&id, c.epoch, &[]).await.unwrap_err();

        let (Some(mut heard_by_a), Some(mut heard_by_b)) = (heard_by_a, heard_by_b) else {
            db.drop().await;
            continue;
        };
        async fn next_change(heard: &mut StoreEvents) -> RunId {
            loop {
                let event = tokio::time::timeout(Duration::from_secs(30), heard.next());
                if let StoreEvent::RunChanged { run, .. } = event.await.unwrap().unwrap() {
                    return run;
                }
            }
        }
        // B hears both runs change (several changes of one run may come as one).
        let mut runs = vec![next_change(&mut heard_by_b).await];
        while runs.last() != Some(&queued.id) {
            let run = next_change(&mut heard_by_b).await;
            if runs.last() != Some(&run) {
                runs.push(run);
            }
        }
        assert_eq!(runs, [id.clone(), queued.id.clone()]);
        // A's own notifications were all delivered before B's next write (commit order): the
        // first change A hears is B's.
        let other = b.create_run(quick_run("three")).await.unwrap();
        assert_eq!(next_change(&mut heard_by_a).await, other.id);
        db.drop().await;
    }
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Makes `claim`'s run the agent's, as the agent protocol's claim does.
async fn hand_to(store: &Store, claim: &Claim, agent: &str) {
    on_db!(store.db(), |pool| sqlx::query("UPDATE runs SET agent_name = $1 WHERE id = $2")
        .bind(agent)
        .bind(claim.run.id.as_str())
        .execute(pool)
        .await
        .map(drop))
    .unwrap();
}

#[tokio::test]
async fn store_agents_are_created_listed_updated_and_deleted() {
    for db in backends().await {
        let store = db.open().await;
        let (arm, token) =
            store.create_agent("arm-1", Some("arm"), &labels(&[("disk", "ssd")])).await.unwrap();
        assert!(token.starts_with(agents::AGENT_TOKEN_PREFIX), "{token}");
        assert_eq!(arm.name, "arm-1");
        assert_eq!(arm.pool.as_deref(), Some("arm"));
        assert_eq!(arm.labels, labels(&[("disk", "ssd")]));
        assert_eq!((arm.version, arm.capacity, arm.last_seen_at), (None, None, None));
        assert!(arm.platforms.is_empty());
        assert_eq!(arm.runs_in_hand, 0);
        let (plain, other_token) = store.create_agent("box", None, &labels(&[])).await.unwrap();
        assert_ne!(token, other_token);
        assert_eq!(plain.pool, None);
        assert!(matches!(
            store.create_agent("box", Some("x"), &labels(&[])).await,
            Err(StoreError::AgentExists(name)) if name == "box"
        ));

        let names: Vec<String> =
            store.list_agents().await.unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["arm-1", "box"]);

        // Only the pool changes; then only the labels; then out of the pool.
        let moved = AgentUpdate { pool: Some(Some("big".into())), labels: None };
        let updated = store.update_agent("arm-1", &moved).await.unwrap();
        assert_eq!(updated.pool.as_deref(), Some("big"));
        assert_eq!(updated.labels, labels(&[("disk", "ssd")]));
        let relabelled = AgentUpdate { pool: None, labels: Some(labels(&[("gpu", "none")])) };
        let updated = store.update_agent("arm-1", &relabelled).await.unwrap();
        assert_eq!(updated.pool.as_deref(), Some("big"));
        assert_eq!(updated.labels, labels(&[("gpu", "none")]));
        let unpooled = AgentUpdate { pool: Some(None), labels: None };
        assert_eq!(store.update_agent("arm-1", &unpooled).await.unwrap().pool, None);
        assert_eq!(store.get_agent("arm-1").await.unwrap(), store.list_agents().await.unwrap()[0]);

        for missing in [
            store.get_agent("nope").await.map(drop),
            store.update_agent("nope", &moved).await.map(drop),
            store.delete_agent("nope").await.map(drop),
            store.agent_seen("nope", "1", &[], 1).await,
        ] {
            assert!(matches!(missing, Err(StoreError::AgentNotFound(n)) if n == "nope"));
        }
        assert_eq!(store.delete_agent("box").await.unwrap(), Vec::<RunId>::new());
        assert!(matches!(store.get_agent("box").await, Err(StoreError::AgentNotFound(_))));
        assert_eq!(store.verify_agent_token(&other_token).await.unwrap(), None, "deleted at once");
        db.drop().await;
    }
}
#[tokio::test]
async fn store_agent_tokens_verify_only_as_agents_and_only_their_hash_is_kept() {
    for db in backends().await {
        let store = db.open().await;
        let admin = store.ensure_admin_token().await.unwrap().unwrap();
        let (agent, token) = store.create_agent("a1", None, &labels(&[])).await.unwrap();
        assert_eq!(store.verify_agent_token(&token).await.unwrap(), Some(agent));
        assert_eq!(store.verify_token(&token).await.unwrap(), None, "not an API token");
        assert_eq!(store.verify_agent_token(&admin).await.unwrap(), None, "not an agent token");
        let mut wrong = token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        for bad in [wrong.as_str(), "", agents::AGENT_TOKEN_PREFIX, &token[..token.len() - 1]] {
            assert_eq!(store.verify_agent_token(bad).await.unwrap(), None, "{bad:?}");
        }
        if let DatabaseUrl::Sqlite(path) = store.url() {
            let raw = std::fs::read(path).unwrap();
            let wal = std::fs::read(path.with_extension("db-wal")).unwrap_or_default();
            for bytes in [&raw, &wal] {
                assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()));
            }
        }
        db.drop().await;
    }
}
#[tokio::test]
async fn store_agent_reports_and_runs_in_hand() {
    for db in backends().await {
        let store = db.open().await;
        store.create_agent("a1", None, &labels(&[])).await.unwrap();
        let before = Utc::now() - TimeDelta::seconds(1);
        let platforms = ["linux/amd64".to_string(), "linux/arm/v7".to_string()];
        store.agent_seen("a1", "0.9.1", &platforms, 3).await.unwrap();
        let seen = store.get_agent("a1").await.unwrap();
        assert_eq!(seen.version.as_deref(), Some("0.9.1"));
        assert_eq!(seen.platforms, platforms);
        assert_eq!(seen.capacity, Some(3));
        assert!(seen.last_seen_at.is_some_and(|t| t >= before), "{seen:?}");

        let held = claimed(&store, "{}").await;
        hand_to(&store, &held, "a1").await;
        assert_eq!(store.runs_in_hand("a1").await.unwrap(), 1);
        store.set_status(&held.run.id, held.epoch, RunStatus::Running).await.unwrap();
        assert_eq!(store.get_agent("a1").await.unwrap().runs_in_hand, 1);
        store
            .finish(&held.run.id, held.epoch, RunStatus::Succeeded, None, &[], None)
            .await
            .unwrap();
        assert_eq!(store.runs_in_hand("a1").await.unwrap(), 0, "a finished run is not in hand");
        assert_eq!(store.list_agents().await.unwrap()[0].runs_in_hand, 0);
        db.drop().await;
    }
}
#[tokio::test]
async fn store_deleting_an_agent_ends_its_runs_and_fences_it_out() {
    for db in backends().await {
        let store = db.open().await;
        store.create_agent("doomed", None, &labels(&[])).await.unwrap();
        store.create_agent("other", None, &labels(&[])).await.unwrap();
        let started = claimed(&store, "{}").await;
        hand_to(&store, &started, "doomed").await;
        let running = claimed(&store, "{}").await;
        hand_to(&store, &running, "doomed").await;
        store.set_status(&running.run.id, running.epoch, RunStatus::Running).await.unwrap();
        let elsewhere = claimed(&store, "{}").await;
        hand_to(&store, &elsewhere, "other").await;
        let done = claimed(&store, "{}").await;
        hand_to(&store, &done, "doomed").await;
        store.finish(&done.run.id, done.epoch, RunStatus::Failed, None, &[], None).await.unwrap();
        let queued = store.create_run(quick_run("{}")).await.unwrap();

        let ended = store.delete_agent("doomed").await.unwrap();
        assert_eq!(ended, [started.run.id.clone(), running.run.id.clone()]);
        for claim in [&started, &running] {
            let run = store.get_run(&claim.run.id).await.unwrap();
            assert_eq!(run.status, RunStatus::Error);
            assert_eq!(
                run.error_message.as_deref(),
                Some("agent doomed was deleted during the run")
            );
            assert_eq!(run.epoch, claim.epoch + 1);
            assert!(run.finished_at.is_some() && run.lease_owner.is_none());
            let write = store.append_log(&claim.run.id, claim.epoch, b"late\n").await;
            assert!(matches!(write, Err(StoreError::StaleLease { .. })), "{write:?}");
            let finish = store
                .finish(&claim.run.id, claim.epoch, RunStatus::Succeeded, None, &[], None)
                .await;
            assert!(matches!(finish, Err(StoreError::StaleLease { .. })), "{finish:?}");
        }
        // Another agent's run, a finished run and a queued run are untouched.
        assert_eq!(store.get_run(&elsewhere.run.id).await.unwrap().status, RunStatus::Started);
        assert_eq!(store.get_run(&done.run.id).await.unwrap().status, RunStatus::Failed);
        assert_eq!(store.get_run(&queued.id).await.unwrap().status, RunStatus::Queued);
        assert_eq!(store.runs_in_hand("other").await.unwrap(), 1);
        db.drop().await;
    }
}
#[tokio::test]
async fn store_agent_pools_count_agents_and_queued_runs() {
    for db in backends().await {
        let store = db.open().await;
        assert_eq!(store.agent_pools().await.unwrap(), []);
        for (name, pool) in
            [("a1", Some("arm")), ("a2", Some("arm")), ("b1", Some("big")), ("c", None)]
        {
            store.create_agent(name, pool, &labels(&[])).await.unwrap();
        }
        for pool in ["arm", "gpu", "gpu"] {
            let run = store.create_run(quick_run("{}")).await.unwrap();
            on_db!(store.db(), |conn| sqlx::query("UPDATE runs SET agent_pool = $1 WHERE id = $2")
                .bind(pool)
                .bind(run.id.as_str())
                .execute(conn)
                .await
                .map(drop))
            .unwrap();
        }
        let pool = |name: &str, agent_count, queued_run_count| agents::PoolRecord {
            name: name.to_string(),
            agent_count,
            queued_run_count,
        };
        assert_eq!(
            store.agent_pools().await.unwrap(),
            [pool("arm", 2, 1), pool("big", 1, 0), pool("gpu", 0, 2)]
        );
        db.drop().await;
    }
}
#[tokio::test]
async fn store_corrupt_agent_rows_are_errors_not_panics() {
    for db in backends().await {
        let store = db.open().await;
        store.create_agent("a1", None, &labels(&[])).await.unwrap();
        for (column, value) in [("labels", "not json"), ("platforms", "{}"), ("capacity", "-1")] {
            let (_, token) = store.create_agent(column, None, &labels(&[])).await.unwrap();
            let sql = format!("UPDATE agents SET {column} = '{value}' WHERE name = $1");
            on_db!(store.db(), |conn| sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(column)
                .execute(conn)
                .await
                .map(drop))
            .unwrap();
            let read = store.get_agent(column).await;
            assert!(
                matches!(&read, Err(StoreError::Corrupt(m)) if m.starts_with(&format!("agent {column}:"))),
                "{read:?}"
            );
            assert!(matches!(store.verify_agent_token(&token).await, Err(StoreError::Corrupt(_))));
            on_db!(store.db(), |conn| sqlx::query("DELETE FROM agents WHERE name = $1")
                .bind(column)
                .execute(conn)
                .await
                .map(drop))
            .unwrap();
        }
        assert_eq!(store.list_agents().await.unwrap().len(), 1, "the good row still reads");
        db.drop().await;
    }
}

#[tokio::test]
async fn store_embedded_agents_belong_to_their_server_process() {
    const RECENT: Duration = Duration::from_secs(60);
    for db in backends().await {
        let store = db.open().await;
        let first = store.register_embedded_agent("ci-1", "host pid 1", "0.9", 2, RECENT).await;
        assert_eq!(first.unwrap().other_server, None);
        let agent = store.get_agent("ci-1").await.unwrap();
        assert_eq!(agent.embedded_in.as_deref(), Some("host pid 1"));
        assert_eq!((agent.pool.as_deref(), agent.capacity), (None, Some(2)));
        assert!(agent.last_seen_at.is_some(), "{agent:?}");
        // Its lease calls keep it fresh, as a remote agent's do.
        let platforms = ["linux/amd64".to_string()];
        store.agent_seen("ci-1", "0.9", &platforms, 2).await.unwrap();
        assert_eq!(store.get_agent("ci-1").await.unwrap().platforms, platforms);

        // An admin cannot change or delete it: its server owns it.
        let moved = AgentUpdate { pool: Some(Some("big".into())), labels: None };
        for refused in [
            store.update_agent("ci-1", &moved).await.map(drop),
            store.delete_agent("ci-1").await.map(drop),
        ] {
            assert!(
                matches!(&refused, Err(StoreError::AgentEmbedded { name, server })
                    if name == "ci-1" && server == "host pid 1"),
                "{refused:?}"
            );
        }
        // Another live process registering the same name is told; the same process is not.
        let again = store.register_embedded_agent("ci-1", "host pid 1", "0.9", 2, RECENT).await;
        assert_eq!(again.unwrap().other_server, None);
        let other = store.register_embedded_agent("ci-1", "other pid 7", "0.9", 4, RECENT).await;
        let (server, _) = other.unwrap().other_server.expect("the other server is named");
        assert_eq!(server, "host pid 1");
        assert_eq!(
            store.get_agent("ci-1").await.unwrap().embedded_in.as_deref(),
            Some("other pid 7")
        );

        // A name with a token is not a server's to take.
        store.create_agent("edge", None, &labels(&[])).await.unwrap();
        let taken = store.register_embedded_agent("edge", "host pid 1", "0.9", 1, RECENT).await;
        assert!(matches!(taken, Err(StoreError::AgentExists(n)) if n == "edge"));
        assert_eq!(store.get_agent("edge").await.unwrap().embedded_in, None);

        // `--workers 0`: a recently seen one stays (another server may run it), a stale one goes,
        // and an agent with a token is never removed this way.
        store.remove_embedded_agent("ci-1", RECENT).await.unwrap();
        assert!(store.get_agent("ci-1").await.is_ok());
        store.remove_embedded_agent("ci-1", Duration::ZERO).await.unwrap();
        assert!(matches!(store.get_agent("ci-1").await, Err(StoreError::AgentNotFound(_))));
        store.remove_embedded_agent("edge", Duration::ZERO).await.unwrap();
        assert!(store.get_agent("edge").await.is_ok());
        db.drop().await;
    }
}

/// 100,000 runs spread over statuses, triggers, agents, pools and branches, written in one
/// statement (SQLite).
async fn fill_runs(store: &Store, n: i64) {
    let Db::Sqlite(pool) = store.db() else { unreachable!("SQLite") };
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
         INSERT INTO runs (id, counter, status, run_type, trigger_kind, task_name, request,
            timeout_secs, platform, created_at, updated_at, output_images, cancel_requested,
            epoch, log_seq, log_len, agent_name, agent_pool, branch, trigger_detail)
         SELECT 'kb' || i, i,
            CASE i % 4 WHEN 0 THEN 'Failed' ELSE 'Succeeded' END, 'AutoRun',
            CASE i % 3 WHEN 0 THEN 'Commit' ELSE 'Manual' END, 'task' || (i % 50), '{}',
            3600, 'linux/amd64', i, i, '[]', FALSE, 0, 0, 0,
            'agent' || (i % 20), CASE i % 1000 WHEN 7 THEN 'rare' END,
            CASE i % 3 WHEN 0 THEN 'branch' || (i % 30) END,
            CASE i % 3 WHEN 0 THEN '{\"sourceTrigger\":{\"commitId\":\"c' || i || '\"}}' END
         FROM n",
    )
    .bind(n)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("UPDATE run_counter SET last = $1").bind(n).execute(pool).await.unwrap();
    sqlx::query("ANALYZE").execute(pool).await.unwrap();
}

/// SQLite's plan for `filter`'s page: the index it walks, and whether it sorts.
async fn plan(store: &Store, filter: &RunFilter) -> String {
    let Db::Sqlite(pool) = store.db() else { unreachable!("SQLite") };
    let (sql, binds) = runs::list_query(filter).unwrap();
    let explain = format!("EXPLAIN QUERY PLAN {sql} LIMIT 16");
    let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(explain));
    for bind in &binds {
        query = match bind {
            runs::Bind::Text(t) => query.bind(t),
            runs::Bind::Int(n) => query.bind(n),
        };
    }
    let rows = query.fetch_all(pool).await.unwrap();
    rows.into_iter().map(|(_, _, _, detail)| detail).collect::<Vec<_>>().join("; ")
}

/// The run list at 100,000 runs: every filter the web UI offers walks an index on
/// `(column, counter)` newest first (no table scan, no sort), so a page reads about its own rows
/// and its next page starts where it ended (keyset on counter). The printed times are the
/// figures in BENCHMARKS.md; nothing here asserts a time.
#[tokio::test]
async fn store_run_list_filters_walk_indexes_at_100k_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    fill_runs(&store, 100_000).await;
    let page = |f: RunFilter| RunFilter { top: 50, ..f };
    let cases = [
        ("none", page(RunFilter::default()), "USING INDEX sqlite_autoindex_runs_2"),
        (
            "status",
            page(RunFilter { status: Some(RunStatus::Failed), ..Default::default() }),
            "runs_status_counter",
        ),
        (
            "task",
            page(RunFilter { task_name: Some("task7".into()), ..Default::default() }),
            "runs_task_counter",
        ),
        (
            "trigger",
            page(RunFilter { trigger: Some("Commit".into()), ..Default::default() }),
            "runs_trigger_counter",
        ),
        (
            "agent",
            page(RunFilter { agent_name: Some("agent3".into()), ..Default::default() }),
            "runs_agent_counter",
        ),
        (
            "pool",
            page(RunFilter { agent_pool: Some("rare".into()), ..Default::default() }),
            "runs_pool_counter",
        ),
        (
            "branch",
            page(RunFilter { branch: Some("branch9".into()), ..Default::default() }),
            "runs_branch_counter",
        ),
        (
            "page 2",
            page(RunFilter {
                agent_name: Some("agent3".into()),
                before: Some(50_003),
                ..Default::default()
            }),
            "runs_agent_counter",
        ),
    ];
    for (what, filter, index) in cases {
        let plan = plan(&store, &filter).await;
        assert!(plan.contains(index), "{what}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{what} sorts: {plan}");
        let started = Instant::now();
        let runs = store.list_runs(&filter).await.unwrap();
        eprintln!("{what}: {} runs in {:?} ({plan})", runs.len(), started.elapsed());
        assert!(runs.windows(2).all(|w| w[0].counter > w[1].counter), "{what}: newest first");
        assert_eq!(runs.len(), 50, "{what}");
    }
    // The filters select what they say.
    let filter = RunFilter { agent_name: Some("agent3".into()), top: 50, ..Default::default() };
    let agent3 = store.list_runs(&filter).await.unwrap();
    assert!(agent3.iter().all(|r| r.agent_name.as_deref() == Some("agent3")));
    assert_eq!(agent3[0].id.as_str(), "kb99983");
    // Search reads newest first until a page matched; one match among 100,000 reads them all.
    let filter = RunFilter { search: Some("C99999".into()), top: 50, ..Default::default() };
    let started = Instant::now();
    let found = store.list_runs(&filter).await.unwrap();
    eprintln!("search: {} runs in {:?}", found.len(), started.elapsed());
    assert_eq!(found.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["kb99999"]);
}
