//! A run request on its way into the store and back out: the store keeps the request redacted
//! in the clear (what the API shows and lists filter on) and whole under the server key (what
//! the agent runs), so secrets (`--set-secret` values, secret build args, git tokens in a
//! context URL) are never stored readable. Quick runs and task runs go through here alike.

use kiln_api::task::{RegistryLogin, TaskDefinition};
use kiln_api::{DEFAULT_PLATFORM, DEFAULT_TIMEOUT_SECS};
use kiln_api::{Run, RunRequest, TriggerDetail, legacy};
use serde::{Deserialize, Serialize};

use crate::secret_box::{SecretBox, SecretBoxError};
use crate::store::{NewRun, RunRecord};
use kiln_task::run_id::RunId;

/// Associated data of a sealed run request: a sealed task definition cannot pass for one.
const PURPOSE: &str = "kiln run request v1";

/// Why a stored request cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the run's sealed request cannot be opened: {0}")]
    Sealed(#[from] SecretBoxError),
    #[error("the run's request cannot be read: {0}")]
    Json(#[from] serde_json::Error),
}

/// Who queues the run and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    /// The task's name; `None` for quick runs.
    pub task_name: Option<String>,
    pub trigger: TriggerDetail,
    /// The task's registry logins, sealed with the request.
    pub credentials: Vec<RegistryLogin>,
    /// The task's SSH key for its git context, sealed with the request.
    pub git_ssh_key: Option<String>,
    /// The run this one repeats (a re-run).
    pub rerun_of: Option<RunId>,
}

impl Origin {
    /// A run of task `name` (with its registry logins) caused by `trigger`.
    pub fn task(name: &str, def: &TaskDefinition, trigger: TriggerDetail) -> Origin {
        Origin {
            task_name: Some(name.to_string()),
            trigger,
            credentials: def.credentials.clone(),
            git_ssh_key: def.git_ssh_key.clone(),
            rerun_of: None,
        }
    }

    /// A re-run of `run`: its task, its trigger and the logins its request was sealed with.
    pub fn rerun(run: &RunRecord, opened: &Opened) -> Origin {
        Origin {
            task_name: run.task_name.clone(),
            trigger: trigger_detail(run),
            credentials: opened.credentials.clone(),
            git_ssh_key: opened.git_ssh_key.clone(),
            rerun_of: Some(run.id.clone()),
        }
    }
}

/// What is sealed: the whole request and the logins it runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sealed {
    request: RunRequest,
    #[serde(default)]
    credentials: Vec<RegistryLogin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    git_ssh_key: Option<String>,
}

/// A stored run's request and logins, secrets included.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub request: RunRequest,
    pub credentials: Vec<RegistryLogin>,
    pub git_ssh_key: Option<String>,
}

/// The store's [`NewRun`] for `request`. Quick runs are QuickBuild/QuickRun, task runs
/// AutoBuild/AutoRun (§6.2).
pub fn new_run(
    secrets: &SecretBox,
    request: &RunRequest,
    origin: Origin,
) -> Result<NewRun, QueueError> {
    let whole = serde_json::to_vec(&Sealed {
        request: request.clone(),
        credentials: origin.credentials.clone(),
        git_ssh_key: origin.git_ssh_key.clone(),
    })?;
    let detail = (origin.trigger != TriggerDetail::default())
        .then(|| serde_json::to_string(&origin.trigger))
        .transpose()?;
    Ok(NewRun {
        branch: origin.trigger.source_trigger.as_ref().map(|s| s.branch_name.clone()),
        rerun_of: origin.rerun_of,
        agent_pool: request.agent_pool().map(str::to_string),
        run_type: request.run_type(origin.task_name.is_some()),
        trigger: origin.trigger.column().to_string(),
        request: serde_json::to_string(&request.redacted())?,
        sealed_request: Some(secrets.seal(PURPOSE, &whole)?),
        trigger_detail: detail,
        task_name: origin.task_name,
        timeout_secs: request.timeout_secs().unwrap_or(DEFAULT_TIMEOUT_SECS),
        platform: request.platform().map_or(DEFAULT_PLATFORM.to_string(), ToString::to_string),
    })
}

/// The whole request of a stored run (runs stored before requests were sealed are read as
/// they are), in the current shape whichever release stored it ([`legacy`]).
pub fn open_request(secrets: &SecretBox, run: &RunRecord) -> Result<Opened, QueueError> {
    match &run.sealed_request {
        Some(sealed) => {
            let mut whole: serde_json::Value =
                serde_json::from_slice(&secrets.open(PURPOSE, sealed)?)?;
            if let Some(request) = whole.get_mut("request") {
                *request = legacy::upgrade_request(request.take());
            }
            let Sealed { request, credentials, git_ssh_key } =
                serde_json::from_value(legacy::upgrade_keys(whole))?;
            Ok(Opened { request, credentials, git_ssh_key })
        }
        None => Ok(Opened {
            request: legacy::read_request(&run.request)?,
            credentials: Vec::new(),
            git_ssh_key: None,
        }),
    }
}

/// The run's trigger detail (none for manual runs and unreadable data).
pub fn trigger_detail(run: &RunRecord) -> TriggerDetail {
    run.trigger_detail.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default()
}

/// The API view of a stored run. The stored request is redacted (and read through
/// [`legacy`]); one that still does not parse is left out rather than failing the read.
impl From<&RunRecord> for Run {
    fn from(record: &RunRecord) -> Run {
        Run {
            run_id: record.id.to_string(),
            status: record.status,
            run_type: record.run_type,
            trigger: record.trigger.clone(),
            trigger_detail: trigger_detail(record),
            task: record.task_name.clone(),
            create_time: record.created_at,
            start_time: record.started_at,
            finish_time: record.finished_at,
            last_updated_time: record.updated_at,
            platform: kiln_api::Platform::parse(&record.platform),
            timeout: record.timeout_secs,
            output_images: record.output_images.iter().map(kiln_api::Image::from).collect(),
            dependencies: record.dependencies.as_deref().and_then(|d| serde_json::from_str(d).ok()),
            run_error_message: record.error_message.clone(),
            log_length: record.log_len,
            agent_pool_name: record.agent_pool.clone(),
            agent_name: record.agent_name.clone(),
            waiting_reason: (record.status == kiln_api::status::RunStatus::Queued).then(|| {
                crate::store::runs::waiting_reason(record.agent_pool.as_deref(), &record.platform)
            }),
            request: legacy::read_request(&record.request).ok().map(|r| r.redacted()),
            rerun_of: record.rerun_of.as_ref().map(ToString::to_string),
            steps: record
                .steps
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default(),
        }
    }
}
