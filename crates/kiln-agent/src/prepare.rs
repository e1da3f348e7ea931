//! Everything between a leased run and a plan the worker can execute: fetching its context into
//! the run's own directory (an uploaded archive from the control plane, a Git repository or a
//! tarball URL fetched by the agent itself with the run's credentials), and planning the task
//! with the settings the lease carries.
//!
//! Every failure here is the request's problem, not the server's: it becomes one line (naming
//! the file and position where there is one) that ends the run as `Error`.

use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use chrono::Utc;
use flate2::read::GzDecoder;
use kiln_api::Source;
use kiln_api::agent::Lease;
use kiln_api::control::{Control, ControlError};
use kiln_plan::plan::{GitSsh, Plan, RegistryCredential};
use kiln_task::render::RunVars;
use kiln_task::run_id::RunId;
use kiln_worker::build::remote;

use super::log_writer::LogWriter;
use kiln_api::request;
use kiln_api::uploads;

/// Why a run could not be prepared; the message is the run's error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrepareError {
    #[error("cannot fetch the uploaded context: {0}")]
    Upload(#[from] ControlError),
    #[error("upload {id} not found (it may have expired)")]
    MissingUpload { id: String },
    #[error("cannot extract upload {id}: {message}")]
    Extract { id: String, message: String },
    #[error(transparent)]
    TooLarge(#[from] uploads::ContextTooLarge),
    #[error("cannot fetch the source: {0}")]
    Fetch(#[from] remote::RemoteError),
    #[error("{url} is not a git or tarball URL")]
    NotRemote { url: String },
    /// The run's context directory; its path (under the server's data directory) is the
    /// operator's business, not the run's message.
    #[error("cannot create the run's context directory: {source}")]
    Dir { source: io::Error },
    #[error("the context extraction failed: {0}")]
    Task(String),
    #[error(transparent)]
    Input(#[from] request::RequestError),
    /// The task file's first error, as `file:line:col: error: …`.
    #[error("{0}")]
    Invalid(String),
}

/// A run ready to execute.
pub(crate) struct Ready {
    pub(crate) plan: Plan,
    /// Copied into the run's workspace by the worker.
    pub(crate) context_dir: Option<PathBuf>,
    /// The request's secret values (`--set-secret`, secret build args).
    pub(crate) secrets: Vec<String>,
    /// The task's registry logins.
    pub(crate) credentials: Vec<RegistryCredential>,
    /// The identity for SSH git contexts (the task's key or the server's).
    pub(crate) git_ssh: Option<GitSsh>,
}

/// Fetches `lease`'s context under `run_dir` and plans it. Progress, warnings and diagnostics
/// go to `log`; secrets are registered with it as soon as known.
pub(crate) async fn prepare(
    lease: &Lease,
    control: &dyn Control,
    run_dir: &Path,
    log: &mut LogWriter,
) -> Result<Ready, PrepareError> {
    let request = &lease.request;
    let git_ssh: Option<GitSsh> = lease.git_ssh.clone().map(Into::into);
    let credentials: Vec<RegistryCredential> = lease
        .credentials
        .iter()
        .map(|c| RegistryCredential {
            registry: c.login_server.clone(),
            username: c.username.clone(),
            password: c.password.clone(),
        })
        .collect();
    log.mask(credentials.iter().map(|c| c.password.clone()));
    let limit = uploads::ContextLimit { bytes: lease.max_context_bytes };
    let trigger = &lease.trigger;
    let secrets = request.secret_values();
    log.mask(secrets.iter().cloned());
    let mut commit = String::new();
    let mut branch =
        trigger.source_trigger.as_ref().map(|s| s.branch_name.clone()).unwrap_or_default();
    let context_dir = match request.source() {
        Source::None => None,
        Source::Upload { id } => {
            log.line("Downloading source code...");
            tokio::fs::create_dir_all(run_dir)
                .await
                .map_err(|source| PrepareError::Dir { source })?;
            let archive = control.upload(id, limit.bytes, run_dir).await?;
            let dest = run_dir.join("context");
            extract(archive, dest.clone(), id.clone(), limit).await?;
            log.line("Finished downloading source code");
            Some(dest)
        }
        Source::Git { url } | Source::Tarball { url } => {
            let remote = kiln_plan::remote::detect(url)
                .map_err(remote::RemoteError::from)?
                .ok_or_else(|| PrepareError::NotRemote { url: kiln_plan::remote::redact(url) })?;
            if let (kiln_plan::remote::Remote::Git { reference: Some(r), .. }, true) =
                (&remote, branch.is_empty())
            {
                branch = r.clone();
            }
            log.line("Downloading source code...");
            let output = Mutex::new(Vec::new());
            let collect = |bytes: &[u8]| {
                output.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
            };
            let dest = run_dir.join("context");
            let fetched =
                remote::fetch(&remote, &dest, git_ssh.as_ref(), Some(limit.bytes), &collect).await;
            // The fetch's own lines name the URL redacted; the writer masks them again.
            let output = output.into_inner().unwrap_or_else(PoisonError::into_inner);
            for line in String::from_utf8_lossy(&output).lines() {
                log.line(line);
            }
            let fetched = fetched.map_err(|e| match e {
                remote::RemoteError::TooLarge { .. } => PrepareError::TooLarge(limit.exceeded()),
                e => e.into(),
            })?;
            // A tarball was bounded while it was written; a git checkout is libgit2's to write,
            // so it is measured once it is there (all of it, whatever subfolder is the context).
            if matches!(remote, kiln_plan::remote::Remote::Git { .. }) {
                check_size(&dest, limit).await?;
            }
            log.line("Finished downloading source code");
            commit = fetched.commit.unwrap_or_default();
            Some(fetched.context_dir)
        }
    };

    let registry = lease.default_registry.as_deref();
    let input = request::task_input(request, context_dir.as_deref(), registry)?;
    log.mask(input.masked.iter().cloned());
    let mut vars = RunVars::new(RunId::new(lease.run_id.as_str()), Utc::now());
    vars.registry = registry.unwrap_or_default().to_string();
    vars.commit = commit;
    vars.branch = branch;
    vars.task_name = lease.task_name.clone().unwrap_or_default();
    vars.triggered_by = lease.triggered_by.clone();
    vars.set_platform(&lease.platform);
    let base_dir = context_dir.clone().unwrap_or_else(|| run_dir.to_path_buf());
    match input.plan(vars, &lease.images, &base_dir) {
        Ok(planned) => {
            for d in planned.diagnostics.iter() {
                log.line(&d.display(&input.name).to_string());
            }
            Ok(Ready { plan: planned.plan, context_dir, secrets, credentials, git_ssh })
        }
        Err(diagnostics) => {
            for d in diagnostics.iter() {
                log.line(&d.display(&input.name).to_string());
            }
            let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
            let mut message = match errors.first() {
                Some(first) => first.display(&input.name).to_string(),
                None => format!("{}: invalid task file", input.name),
            };
            if errors.len() > 1 {
                message.push_str(&format!(" (and {} more errors)", errors.len() - 1));
            }
            Err(PrepareError::Invalid(message))
        }
    }
}

/// Refuses a fetched context whose files exceed `limit`.
async fn check_size(dir: &Path, limit: uploads::ContextLimit) -> Result<(), PrepareError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || limit.check_dir(&dir))
        .await
        .map_err(|e| PrepareError::Task(e.to_string()))?
        .map_err(|e| PrepareError::Task(format!("cannot measure the fetched context: {e}")))??;
    Ok(())
}

/// Extracts an uploaded `.tar.gz` into `dest`, refusing entries that would land outside it
/// and stopping before the unpacked files exceed `limit`.
async fn extract(
    archive: PathBuf,
    dest: PathBuf,
    id: String,
    limit: uploads::ContextLimit,
) -> Result<(), PrepareError> {
    let failed = {
        let id = id.clone();
        move |message: String| PrepareError::Extract { id: id.clone(), message }
    };
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dest).map_err(|source| {
            tracing::error!("creating {} failed: {source}", dest.display());
            PrepareError::Dir { source }
        })?;
        let file = File::open(&archive).map_err(|_| PrepareError::MissingUpload { id })?;
        let mut tar = tar::Archive::new(GzDecoder::new(io::BufReader::new(file)));
        tar.set_preserve_permissions(true);
        tar.set_overwrite(true);
        let mut total: u64 = 0;
        for entry in tar.entries().map_err(|e| failed(e.to_string()))? {
            let mut entry = entry.map_err(|e| failed(e.to_string()))?;
            total = total.saturating_add(entry.size());
            limit.check(total)?;
            let path = entry.path().map_err(|e| failed(e.to_string()))?.into_owned();
            let inside =
                path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside {
                return Err(failed(format!("entry {} escapes the context", path.display())));
            }
            // `unpack_in` also refuses entries reached through a symlink pointing outside.
            let unpacked = entry.unpack_in(&dest).map_err(|e| failed(e.to_string()))?;
            if !unpacked {
                return Err(failed(format!("entry {} escapes the context", path.display())));
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| PrepareError::Task(e.to_string()))?
}
