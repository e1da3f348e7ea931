//! Base-image update triggers (reference §5.2): a task whose build's base image tag now points
//! at another manifest runs again, once per change.
//!
//! Two ways to learn of a change, one rule to act on it ([`tag_moved`]):
//! * polling: every `--base-image-poll` seconds each watched tag is resolved to its digest at
//!   its registry ([`crate::trigger::registry`]), with the server's registry login if it has
//!   one for that host;
//! * `POST /registry/events`: the CNCF distribution registry's push notifications (configured
//!   with an `Authorization: Bearer <kiln token>` header), for immediate triggering.
//!
//! A multi-platform tag (manifest list, OCI index) is resolved for each watching task's
//! platform to that platform's entry ([`kiln_plan::manifest_list`]), so a task runs when
//! its own platform's base changes, not when another platform of the list is rebuilt.
//!
//! A digest moves by compare-and-set in the store, in the transaction that queues the run, so a
//! notification and a poll (or two servers) seeing the same change queue one run, and pushing
//! identical content again (same digest) triggers nothing (Azure/acr#373). A tag first seen
//! without a digest gets one recorded, without a run.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use kiln_api::task::WebhookAnswer;
use kiln_api::{ErrorBody, Image};
use kiln_plan::plan::RegistryCredential;
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use super::state::AppState;
use crate::secret_box::SecretBox;
use crate::store::{BaseImageRecord, ClaimOutcome, RunRecord, Store, StoreError};
use crate::task_def;
use crate::task_run::{self, Firing};
use crate::trigger::notification::{self, PushedTag};
use crate::trigger::registry::{self, RegistryAuth, Resolved, TagRef};

/// How long one registry lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Receive the distribution registry's notifications.
#[utoipa::path(post, path = "/registry/events", tag = "tasks",
    request_body(content = String, description = "A distribution notification envelope", content_type = "application/vnd.docker.distribution.events.v1+json"),
    responses(
        (status = 200, description = "Runs queued for moved tags, if any", body = WebhookAnswer),
        (status = 400, description = "Not a notification envelope", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody)))]
pub async fn registry_events(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<WebhookAnswer>, ApiError> {
    let pushed =
        notification::pushed_tags(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let logins = state.dispatch.registry_logins();
    let queued = tags_pushed(&state.store, &state.secrets, logins, pushed).await?;
    if !queued.is_empty() {
        state.dispatch.queued();
    }
    Ok(Json(WebhookAnswer {
        status: if queued.is_empty() { "ignored" } else { "queued" }.to_string(),
        run_id: queued.first().map(|r| r.id.to_string()),
        reason: (queued.len() > 1).then(|| {
            let ids: Vec<String> = queued.iter().map(|r| r.id.to_string()).collect();
            format!("runs queued: {}", ids.join(", "))
        }),
    }))
}

/// Acts on the tag pushes of a notification; returns the runs queued. A pushed image is what
/// every platform's run builds on now; a pushed list is resolved at the registry for each
/// platform watching it, as a poll does, since which entry moved is the registry's to say.
pub async fn tags_pushed(
    store: &Store,
    secrets: &SecretBox,
    credentials: &[RegistryCredential],
    pushed: Vec<PushedTag>,
) -> Result<Vec<RunRecord>, StoreError> {
    let watched = store.watched_base_images().await?;
    let mut queued = Vec::new();
    let mut lists = Vec::new();
    for tag in pushed {
        let moved = TagRef { registry: tag.registry, repository: tag.repository, tag: tag.tag };
        if tag.is_list {
            lists.push(moved);
            continue;
        }
        let resolved = Resolved { digest: tag.digest, index: None };
        queued.extend(tag_moved(store, secrets, &watched, &moved, &resolved).await?);
    }
    if !lists.is_empty() {
        let watched: Vec<BaseImageRecord> =
            watched.into_iter().filter(|b| lists.iter().any(|t| same_image(b, t))).collect();
        queued.extend(check(store, secrets, watched, credentials).await?);
    }
    Ok(queued)
}

/// Acts on `tag` now pointing at `resolved` for the platform of the tasks among `watched` (the
/// store's watched base images, read once per batch of tags): every one whose stored digest for
/// it differs runs. Without a run, a watcher's digest is replaced when none is known yet (none,
/// or the local image ID the build saw) and when it is the list the tag still points at (what
/// the engine records when it pulls a multi-platform tag), so later changes to other platforms'
/// entries do not run the task. Returns the runs queued.
pub async fn tag_moved(
    store: &Store,
    secrets: &SecretBox,
    watched: &[BaseImageRecord],
    tag: &TagRef,
    resolved: &Resolved,
) -> Result<Vec<RunRecord>, StoreError> {
    let digest = &resolved.digest;
    let watchers = watched.iter().filter(|b| same_image(b, tag) && b.digest != *digest).cloned();
    let mut queued = Vec::new();
    for watcher in watchers {
        let same_list =
            resolved.index.is_some() && watcher.repo_digest() == resolved.index.as_deref();
        let run = if watcher.repo_digest().is_none() || same_list {
            None
        } else {
            let image = Image {
                registry: watcher.registry.clone(),
                repository: watcher.repository.clone(),
                tag: watcher.tag.clone(),
                digest: digest.clone(),
            };
            match new_run(store, secrets, &watcher.task_name, image).await {
                Ok(run) => Some(run),
                Err(e) => {
                    tracing::error!(task = %watcher.task_name, "cannot queue the image update run: {e}");
                    continue;
                }
            }
        };
        let change = [(watcher, digest.clone())];
        if let ClaimOutcome::Claimed(Some(run)) =
            store.claim_base_image_change(&change, run).await?
        {
            tracing::info!(task = ?run.task_name, run = %run.id, image = %tag, "base image updated");
            queued.push(*run);
        }
    }
    Ok(queued)
}

/// A notification names the registry as its clients reach it; `localhost` and `127.0.0.1`
/// are one host.
fn same_image(b: &BaseImageRecord, tag: &TagRef) -> bool {
    let host = |h: &str| h.replace("localhost", "127.0.0.1");
    b.repository == tag.repository && b.tag == tag.tag && host(&b.registry) == host(&tag.registry)
}

async fn new_run(
    store: &Store,
    secrets: &SecretBox,
    task: &str,
    image: Image,
) -> Result<crate::store::NewRun, String> {
    let record = store.get_task(task).await.map_err(|e| e.to_string())?;
    let def = task_def::open(secrets, &record).map_err(|e| e.to_string())?;
    task_run::new_run(secrets, task, &def, &Firing::ImageUpdate { images: vec![image] })
        .map_err(|e| e.to_string())
}

/// Resolves every watched tag once per platform of the tasks watching it and acts on those
/// that moved; returns the runs queued. A tag's registry is asked with the login of a task
/// watching it (`task credential`), else the server's own. A registry that cannot be asked is
/// logged and skipped until the next poll.
pub async fn poll_once(
    store: &Store,
    secrets: &SecretBox,
    credentials: &[RegistryCredential],
) -> Result<Vec<RunRecord>, StoreError> {
    let watched = store.watched_base_images().await?;
    check(store, secrets, watched, credentials).await
}

/// [`poll_once`] for the watchers `watched`.
async fn check(
    store: &Store,
    secrets: &SecretBox,
    watched: Vec<BaseImageRecord>,
    credentials: &[RegistryCredential],
) -> Result<Vec<RunRecord>, StoreError> {
    let mut logins: HashMap<String, RegistryAuth> = credentials
        .iter()
        .map(|c| {
            let auth = RegistryAuth { username: c.username.clone(), password: c.password.clone() };
            (c.registry.clone(), auth)
        })
        .collect();
    let watching: BTreeSet<&str> = watched.iter().map(|b| b.task_name.as_str()).collect();
    let mut platforms: HashMap<String, String> = HashMap::new();
    // One read of the tasks for the whole poll, not one per watching task.
    for record in store.list_tasks().await? {
        if !watching.contains(record.name.as_str()) {
            continue;
        }
        let def = match task_def::open(secrets, &record) {
            Ok(def) => def,
            Err(e) => {
                tracing::error!(task = record.name, "{e}");
                continue;
            }
        };
        platforms.insert(record.name, def.platform.to_string());
        for login in def.credentials {
            let auth = RegistryAuth { username: login.username, password: login.password };
            logins.insert(login.login_server, auth);
        }
    }
    let platform_of = |b: &BaseImageRecord| platforms.get(&b.task_name).cloned();
    let tags: BTreeSet<(String, String, String, String)> = watched
        .iter()
        .filter_map(|b| {
            Some((b.registry.clone(), b.repository.clone(), b.tag.clone(), platform_of(b)?))
        })
        .collect();
    let mut queued = Vec::new();
    for (registry, repository, tag, platform) in tags {
        let auth = logins.get(&registry).cloned();
        let tag = TagRef { registry, repository, tag };
        let (lookup, wanted) = (tag.clone(), platform.clone());
        let resolved = tokio::task::spawn_blocking(move || {
            registry::resolve(&lookup, auth.as_ref(), LOOKUP_TIMEOUT, &wanted)
        })
        .await;
        match resolved {
            Ok(Ok(resolved)) => {
                let of_platform: Vec<BaseImageRecord> = watched
                    .iter()
                    .filter(|b| platform_of(b).as_ref() == Some(&platform))
                    .cloned()
                    .collect();
                queued.extend(tag_moved(store, secrets, &of_platform, &tag, &resolved).await?);
            }
            Ok(Err(e)) => tracing::warn!("base image check ({platform}): {e}"),
            Err(e) => tracing::error!("base image check of {tag} ({platform}) failed: {e}"),
        }
    }
    Ok(queued)
}

/// Polls at once, then every `interval`, until `stop`; `queued` is called when runs were
/// queued. The first poll catches what moved while no server ran.
pub fn spawn(
    store: Store,
    secrets: Arc<SecretBox>,
    credentials: Vec<RegistryCredential>,
    interval: Duration,
    queued: impl Fn() + Send + 'static,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        // A slow poll delays the next one rather than bunching them up.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match poll_once(&store, &secrets, &credentials).await {
                Ok(runs) if !runs.is_empty() => queued(),
                Ok(_) => {}
                Err(e) => tracing::error!("base image poll: {e}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use kiln_plan::report::DigestKind;

    use super::*;
    use crate::store::{RunFilter, TaskWrite};
    use kiln_task::run_id::RunIdPrefix;

    /// A base image only the engine had (its local image ID stored) is not a moved tag when a
    /// registry first reports it: the registry's digest is recorded, without a run; a later
    /// move of that digest runs the task.
    #[tokio::test]
    async fn a_local_bases_image_id_is_replaced_by_the_registry_digest_without_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), RunIdPrefix::new("kb").unwrap()).await.unwrap();
        let secrets = SecretBox::open_or_create(dir.path()).unwrap();
        let write = TaskWrite {
            status: "Enabled".into(),
            base_image_trigger: "Runtime".into(),
            definition: "{}".into(),
            sealed: vec![1],
        };
        store.create_task("app", write, vec![2], &[]).await.unwrap();
        let local = BaseImageRecord {
            task_name: "app".into(),
            registry: "127.0.0.1:5000".into(),
            repository: "base".into(),
            tag: "1".into(),
            kind: "RunTime".into(),
            digest: "sha256:local-image-id".into(),
            digest_kind: Some(DigestKind::ImageId),
        };
        store.set_base_images("app", std::slice::from_ref(&local)).await.unwrap();
        let watched = store.watched_base_images().await.unwrap();
        assert_eq!(watched, std::slice::from_ref(&local), "the kind is kept");
        let tag = TagRef {
            registry: "127.0.0.1:5000".into(),
            repository: "base".into(),
            tag: "1".into(),
        };

        let resolved = Resolved { digest: "sha256:registry".into(), index: None };
        let queued = tag_moved(&store, &secrets, &watched, &tag, &resolved).await.unwrap();
        assert!(queued.is_empty());
        let stored = store.base_images("app").await.unwrap().remove(0);
        assert_eq!(stored.digest, "sha256:registry");
        assert_eq!(stored.digest_kind, Some(DigestKind::RepoDigest));
        assert!(store.list_runs(&RunFilter::default()).await.unwrap().is_empty());
    }

    /// A task on a platform, with the base image `registry/repository:tag` recorded as the
    /// engine records a pulled multi-platform tag: the list's digest.
    async fn watching_task(
        store: &Store,
        secrets: &SecretBox,
        name: &str,
        platform: &str,
        base: (&str, &str, &str, &str),
    ) {
        let def = kiln_api::task::TaskDefinition {
            context: "/dev/null".into(),
            step: kiln_api::task::TaskStep::EncodedTask {
                task: "steps:\n  - cmd: busybox true\n".into(),
                task_name: "acb.yaml".into(),
                values_content: None,
            },
            values: Vec::new(),
            platform: kiln_api::Platform::parse(platform),
            agent_pool_name: None,
            docker_api: None,
            timeout_secs: 600,
            status: kiln_api::task::TaskStatus::Enabled,
            commit_trigger_enabled: false,
            pull_request_trigger_enabled: false,
            base_image_trigger_enabled: true,
            base_image_trigger_type: kiln_api::task::BaseImageTriggerType::Runtime,
            git_access_token: None,
            git_ssh_key: None,
            credentials: Vec::new(),
        };
        let write = task_def::seal(secrets, name, &def).unwrap();
        store.create_task(name, write, vec![2], &[]).await.unwrap();
        let (registry, repository, tag, digest) = base;
        let record = BaseImageRecord {
            task_name: name.into(),
            registry: registry.into(),
            repository: repository.into(),
            tag: tag.into(),
            kind: "RunTime".into(),
            digest: digest.into(),
            digest_kind: Some(DigestKind::RepoDigest),
        };
        store.set_base_images(name, &[record]).await.unwrap();
    }

    /// Tasks on two platforms watch one multi-platform base tag in the open registry: the
    /// first poll swaps the list's digest each recorded for its platform's entry without a run,
    /// and afterwards a task runs only when its own platform's entry moves, whether a poll or
    /// a registry notification tells.
    #[tokio::test]
    async fn each_platform_watches_its_own_entry_of_a_multi_platform_base() {
        let test = "each_platform_watches_its_own_entry_of_a_multi_platform_base";
        let Some(registry) = crate::trigger::test_registry::registry(test) else { return };
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), RunIdPrefix::new("kb").unwrap()).await.unwrap();
        let secrets = SecretBox::open_or_create(dir.path()).unwrap();
        let repository = "kiln-base-test/multi";
        let tag = format!("t{}", std::process::id());
        let push = |amd64: &str, arm64: &str| {
            let (amd64, arm64) = (format!("{tag}-{amd64}"), format!("{tag}-{arm64}"));
            let images = [("linux/amd64", amd64.as_str()), ("linux/arm64", arm64.as_str())];
            crate::trigger::test_registry::push_index(&registry, repository, &tag, &images)
        };
        let (first, entries) = push("a1", "r1");
        let base = (registry.as_str(), repository, tag.as_str(), first.as_str());
        watching_task(&store, &secrets, "arm", "linux/arm64", base).await;
        watching_task(&store, &secrets, "amd", "linux/amd64", base).await;
        let recorded = |task: &'static str| {
            let store = store.clone();
            async move { store.base_images(task).await.unwrap().remove(0).digest }
        };
        let ran = |runs: Vec<RunRecord>| -> Vec<String> {
            runs.into_iter().filter_map(|r| r.task_name).collect()
        };

        assert_eq!(ran(poll_once(&store, &secrets, &[]).await.unwrap()), Vec::<String>::new());
        assert_eq!(
            (recorded("amd").await, recorded("arm").await),
            (entries[0].clone(), entries[1].clone())
        );
        assert!(store.list_runs(&RunFilter::default()).await.unwrap().is_empty());

        let (_, moved) = push("a2", "r1");
        assert_eq!(moved[1], entries[1], "the arm64 image is the same");
        assert_eq!(ran(poll_once(&store, &secrets, &[]).await.unwrap()), ["amd"]);
        assert_eq!(
            (recorded("amd").await, recorded("arm").await),
            (moved[0].clone(), entries[1].clone())
        );

        let (_, moved) = push("a2", "r2");
        assert_eq!(ran(poll_once(&store, &secrets, &[]).await.unwrap()), ["arm"]);
        assert_eq!(recorded("arm").await, moved[1]);
        assert!(poll_once(&store, &secrets, &[]).await.unwrap().is_empty(), "nothing moved since");

        // A registry's notification of a list push: the same per-platform answer at once.
        let (pushed_list, moved) = push("a2", "r3");
        let notified = |digest: &str, is_list| PushedTag {
            registry: registry.replace("127.0.0.1", "localhost"),
            repository: repository.into(),
            tag: tag.clone(),
            digest: digest.into(),
            is_list,
        };
        let runs = tags_pushed(&store, &secrets, &[], vec![notified(&pushed_list, true)]);
        assert_eq!(ran(runs.await.unwrap()), ["arm"]);
        assert_eq!(recorded("arm").await, moved[1]);
        // A single image pushed over the list moves every platform's base.
        let single = "sha256:5e1f000000000000000000000000000000000000000000000000000000000001";
        let runs = tags_pushed(&store, &secrets, &[], vec![notified(single, false)]);
        assert_eq!(ran(runs.await.unwrap()), ["amd", "arm"]);
    }
}
