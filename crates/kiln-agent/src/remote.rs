//! The agent's link to a server over HTTP (`kiln agent run`): each [`Control`] call is one
//! request to the server's `/agent/...` routes, authenticated with the agent's token. Status
//! codes carry the protocol's meaning — 409 a stale lease, other 4xx a refusal, 5xx and
//! connection failures transient — so the agent's retry rules are the same as in-process.
//!
//! An agent may know several servers sharing one database: a call that finds its server
//! unreachable (no connection, a timeout, a 5xx) is made again at the next one, and later calls
//! stay there. Every server fences writes on the same lease epochs in the same store, so which
//! server takes a call does not matter; the agent's session is per process, started once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use kiln_api::ErrorBody;
use kiln_api::agent::{
    AgentSession, Beat, Fence, HeldRun, Lease, LeaseRequest, LogAck, LogPart, MAX_WAIT_SECS,
    RunOutcome, StatusUpdate, StepReport, WatchReply, WatchRequest,
};
use kiln_api::control::{Control, ControlError, ControlResult};
use kiln_api::paths;
use kiln_api::status::RunStatus;
use kiln_task::run_id::RunId;
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt as _;

/// How long one call may take beyond the wait it asked for.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The servers of one control plane, as an agent reaches them.
#[derive(Debug)]
pub struct RemoteControl {
    client: reqwest::Client,
    /// At least one.
    servers: Vec<String>,
    /// The index of the server calls go to.
    current: AtomicUsize,
    token: String,
}

impl RemoteControl {
    /// `servers` are the URLs of servers sharing one store (`https://kiln.example:8080`), in
    /// the order they are tried; the first is used until it is unreachable.
    ///
    /// # Panics
    /// If `servers` is empty.
    pub fn new(client: reqwest::Client, servers: &[String], token: String) -> Self {
        assert!(!servers.is_empty(), "an agent needs a server");
        let servers = servers.iter().map(|s| s.trim_end_matches('/').to_string()).collect();
        Self { client, servers, current: AtomicUsize::new(0), token }
    }

    /// Tells the server a new process of this agent starts; answers who the token names.
    pub async fn start_session(&self) -> ControlResult<AgentSession> {
        self.call(reqwest::Method::POST, paths::AGENT_SESSIONS, &serde_json::json!({}), None, 0)
            .await?
            .ok_or_else(|| ControlError::Unavailable("empty answer to the session".to_string()))
    }

    /// Sends the request `build` makes for a server's URL, to the current server and, while
    /// one is unreachable or failing (5xx), to the next, each at most once. The answer is the
    /// first that is not a server failure, else the last server's.
    async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> ControlResult<reqwest::Response> {
        let mut last = Err(ControlError::Unavailable("no server".to_string()));
        for _ in 0..self.servers.len() {
            let index = self.current.load(Ordering::Relaxed);
            let base = &self.servers[index];
            match build(base).bearer_auth(&self.token).send().await {
                Ok(response) if !response.status().is_server_error() => return Ok(response),
                Ok(response) => last = Ok(response),
                Err(e) => last = Err(ControlError::Unavailable(format!("{base}: {e}"))),
            }
            if self.servers.len() > 1 {
                let next = (index + 1) % self.servers.len();
                // Only the first of several calls failing at once moves on.
                if self
                    .current
                    .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    tracing::warn!("server {base} failed; going on with {}", self.servers[next]);
                }
            }
        }
        last
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
            .send(|base| {
                self.client
                    .request(method.clone(), format!("{base}{path}"))
                    .timeout(CALL_TIMEOUT + Duration::from_secs(wait))
                    .json(body)
            })
            .await?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if status.is_success() {
            let url = response.url().clone();
            return response
                .json()
                .await
                .map(Some)
                .map_err(|e| ControlError::Unavailable(format!("{url}: {e}")));
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

    fn report_steps(&self, run: RunId, report: StepReport) -> BoxFuture<'_, ControlResult<()>> {
        Box::pin(async move {
            let path = format!("{}/{run}/steps", paths::AGENT_RUNS);
            self.call::<_, serde_json::Value>(reqwest::Method::POST, &path, &report, Some(&run), 0)
                .await
                .map(drop)
        })
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
            let route = format!("{}/{id}", paths::AGENT_UPLOADS);
            let response = self.send(|base| self.client.get(format!("{base}{route}"))).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use axum::http::StatusCode;
    use axum::routing::post;

    use super::*;

    /// A loopback server answering the session call with `status` (and a session when 200),
    /// counting the calls; its URL.
    async fn server(status: StatusCode, calls: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new().route(
            paths::AGENT_SESSIONS,
            post(move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                (status, axum::Json(serde_json::json!({"name": "ag", "pool": null})))
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn client() -> reqwest::Client {
        kiln_server::transport::http_client_builder(None).expect("TLS").build().expect("client")
    }

    /// A loopback URL nothing listens on (connections are refused).
    async fn closed() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    }

    #[tokio::test]
    async fn calls_move_to_the_next_server_when_one_is_unreachable_or_failing_and_stay_there() {
        let (failing, good) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let servers = [
            closed().await,
            server(StatusCode::SERVICE_UNAVAILABLE, failing.clone()).await,
            server(StatusCode::OK, good.clone()).await,
        ];
        let control = RemoteControl::new(client(), &servers, "t".to_string());
        assert_eq!(control.start_session().await.expect("a session").name, "ag");
        assert_eq!(control.start_session().await.expect("a session").name, "ag");
        // The failing server was tried once; the good one took both calls.
        assert_eq!((failing.load(Ordering::SeqCst), good.load(Ordering::SeqCst)), (1, 2));
    }

    #[tokio::test]
    async fn with_every_server_down_a_call_fails_as_transient() {
        let servers = [closed().await, closed().await];
        let control = RemoteControl::new(client(), &servers, "t".to_string());
        let err = control.start_session().await.expect_err("nothing listens");
        assert!(err.is_transient(), "{err}");
    }
}
