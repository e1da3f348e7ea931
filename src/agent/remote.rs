//! The agent's link to a server over HTTP (`kiln agent run`): each [`Control`] call is one
//! request to the server's `/agent/...` routes, authenticated with the agent's token. Status
//! codes carry the protocol's meaning — 409 a stale lease, other 4xx a refusal, 5xx and
//! connection failures transient — so the agent's retry rules are the same as in-process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt as _;

use super::control::{Control, ControlError, ControlResult};
use crate::api::ErrorBody;
use crate::api::agent::{
    AgentSession, Beat, Fence, HeldRun, Lease, LeaseRequest, LogAck, LogPart, MAX_WAIT_SECS,
    RunOutcome, StatusUpdate, WatchReply, WatchRequest,
};
use crate::api::paths;
use crate::run_id::RunId;
use crate::store::RunStatus;

/// How long one call may take beyond the wait it asked for.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A server, as an agent reaches it.
#[derive(Debug, Clone)]
pub struct RemoteControl {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl RemoteControl {
    /// `base` is the server's URL (`https://kiln.example:8080`).
    pub fn new(client: reqwest::Client, base: &str, token: String) -> Self {
        Self { client, base: base.trim_end_matches('/').to_string(), token }
    }

    /// Tells the server a new process of this agent starts; answers who the token names.
    pub async fn start_session(&self) -> ControlResult<AgentSession> {
        self.call(reqwest::Method::POST, paths::AGENT_SESSIONS, &serde_json::json!({}), None, 0)
            .await?
            .ok_or_else(|| ControlError::Unavailable("empty answer to the session".to_string()))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs (or PUTs) `body` as JSON; `Ok(None)` for 204.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &B,
        run: Option<&RunId>,
        wait: u64,
    ) -> ControlResult<Option<T>> {
        let response = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .timeout(CALL_TIMEOUT + Duration::from_secs(wait))
            .json(body)
            .send()
            .await
            .map_err(|e| ControlError::Unavailable(format!("{}: {e}", self.base)))?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            return response
                .json()
                .await
                .map(Some)
                .map_err(|e| ControlError::Unavailable(format!("{}: {e}", self.base)));
        }
        Err(refusal(status, response.json::<ErrorBody>().await.ok(), run))
    }

    /// A call about a held run whose answer the agent needs.
    async fn run_call<B: Serialize, T: DeserializeOwned>(
        &self,
        run: &RunId,
        action: &str,
        method: reqwest::Method,
        body: &B,
    ) -> ControlResult<T> {
        let path = format!("{}/{run}/{action}", paths::AGENT_RUNS);
        self.call(method, &path, body, Some(run), 0)
            .await?
            .ok_or_else(|| ControlError::Unavailable(format!("{path}: empty answer")))
    }
}

/// The [`ControlError`] of a failed answer.
fn refusal(status: StatusCode, body: Option<ErrorBody>, run: Option<&RunId>) -> ControlError {
    let message = body.map_or_else(|| status.to_string(), |b| b.error.message);
    match (status, run) {
        (StatusCode::CONFLICT, Some(run)) => ControlError::Stale { run: run.clone() },
        (s, _) if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
            ControlError::Unavailable(message)
        }
        _ => ControlError::Refused(message),
    }
}

impl Control for RemoteControl {
    fn lease(&self, request: LeaseRequest) -> BoxFuture<'_, ControlResult<Option<Lease>>> {
        Box::pin(async move {
            let wait = request.wait.min(MAX_WAIT_SECS);
            self.call(reqwest::Method::POST, paths::AGENT_LEASES, &request, None, wait).await
        })
    }

    fn heartbeat(&self, run: RunId, epoch: i64) -> BoxFuture<'_, ControlResult<Beat>> {
        Box::pin(async move {
            self.run_call(&run, "heartbeat", reqwest::Method::POST, &Fence { epoch }).await
        })
    }

    fn running(&self, run: RunId, epoch: i64) -> BoxFuture<'_, ControlResult<()>> {
        Box::pin(async move {
            let body = StatusUpdate { epoch, status: RunStatus::Running };
            let path = format!("{}/{run}/status", paths::AGENT_RUNS);
            self.call::<_, serde_json::Value>(reqwest::Method::POST, &path, &body, Some(&run), 0)
                .await
                .map(drop)
        })
    }

    fn append_log(&self, run: RunId, part: LogPart) -> BoxFuture<'_, ControlResult<LogAck>> {
        Box::pin(async move { self.run_call(&run, "log", reqwest::Method::PUT, &part).await })
    }

    fn finish(&self, run: RunId, outcome: RunOutcome) -> BoxFuture<'_, ControlResult<()>> {
        Box::pin(async move {
            let path = format!("{}/{run}/finish", paths::AGENT_RUNS);
            self.call::<_, serde_json::Value>(reqwest::Method::POST, &path, &outcome, Some(&run), 0)
                .await
                .map(drop)
        })
    }

    fn watch(&self, runs: Vec<HeldRun>, wait: u64) -> BoxFuture<'_, ControlResult<WatchReply>> {
        Box::pin(async move {
            let wait = wait.min(MAX_WAIT_SECS);
            let body = WatchRequest { runs, wait };
            Ok(self
                .call(reqwest::Method::POST, paths::AGENT_WATCH, &body, None, wait)
                .await?
                .unwrap_or_default())
        })
    }

    fn upload<'a>(
        &'a self,
        id: &'a str,
        max_bytes: u64,
        scratch: &'a Path,
    ) -> BoxFuture<'a, ControlResult<PathBuf>> {
        Box::pin(async move {
            let unavailable = |e: &dyn std::fmt::Display| ControlError::Unavailable(e.to_string());
            let response = self
                .client
                .get(self.url(&format!("{}/{id}", paths::AGENT_UPLOADS)))
                .bearer_auth(&self.token)
                .send()
                .await
                .map_err(|e| unavailable(&e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(refusal(status, response.json::<ErrorBody>().await.ok(), None));
            }
            let path = scratch.join("context.tar.gz");
            let mut file = tokio::fs::File::create(&path).await.map_err(|e| unavailable(&e))?;
            let mut body = response.bytes_stream();
            let mut written: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| unavailable(&e))?;
                written += chunk.len() as u64;
                // The archive is compressed: its size bounds nothing, but one larger than the
                // unpacked limit cannot be within it.
                if written > max_bytes {
                    return Err(ControlError::Refused(format!(
                        "upload {id} is larger than the context limit of {max_bytes} bytes"
                    )));
                }
                file.write_all(&chunk).await.map_err(|e| unavailable(&e))?;
            }
            file.flush().await.map_err(|e| unavailable(&e))?;
            Ok(path)
        })
    }
}
