//! The scoped socket's server: HTTP/1 in from a step's `docker` client, the engine's API out.
//!
//! Each request is classified ([`policy::route`]), checked against what the run owns (an
//! engine lookup by label, remembered for the run), rewritten where the run needs it (labels,
//! filters, registry logins, workspace paths) and forwarded on a fresh engine connection, body
//! and answer streamed in both directions. `docker run`, `attach` and `exec` upgrade their
//! connection to a raw stream: both upgraded halves are then copied into each other.
//!
//! Hand-written on hyper rather than an off-the-shelf proxy because the policy is the product:
//! every request must be understood, not just passed on.

use std::collections::HashSet;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use bollard::Docker;
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::ListContainersOptions;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kiln_plan::image_ref::ImageRef;
use kiln_plan::plan::{RegistryCredential, RunId};
use serde_json::Value;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ledger::Ledger;
use super::policy::{self, Bounds, Refusal, Route};
use super::{DockerApiError, RunScope};
use crate::auth;
use crate::names::{RUN_LABEL, STEP_LABEL};

type Body = BoxBody<Bytes, hyper::Error>;

/// Create and connect bodies are small JSON; anything larger is not a Docker client's.
const JSON_BODY_LIMIT: usize = 1 << 20;

/// A running scoped socket.
pub(super) struct Server {
    stop: CancellationToken,
    tasks: TaskTracker,
    proxy: Arc<Proxy>,
}

impl Server {
    pub(super) fn start(
        socket: &Path,
        scope: &RunScope<'_>,
        bounds: Bounds,
    ) -> Result<Server, DockerApiError> {
        let listen = |source| DockerApiError::Listen { path: socket.to_path_buf(), source };
        // A socket left by a crashed agent for the same run ID would refuse the bind.
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(listen)?;
        let proxy = Arc::new(Proxy {
            docker: scope.docker.clone(),
            upstream: Upstream::parse(scope.engine_host),
            run: scope.run.clone(),
            steps: scope.steps.iter().cloned().collect(),
            networks: scope.networks.clone(),
            credentials: scope.credentials.to_vec(),
            bounds,
            state: Mutex::default(),
        });
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(accept(listener, proxy.clone(), stop.clone(), tasks.clone()));
        Ok(Server { stop, tasks, proxy })
    }

    /// Stops accepting and cuts every connection (a detached client must not outlive the
    /// run); returns the run's image ledger.
    pub(super) async fn stop(self) -> Ledger {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let mut state = self.proxy.state.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut state.ledger)
    }
}

async fn accept(
    listener: UnixListener,
    proxy: Arc<Proxy>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, typically: give the steps' clients a moment to
                // close theirs instead of spinning.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        let (proxy, stop, inner) = (proxy.clone(), stop.clone(), tasks.clone());
        tasks.spawn(async move {
            let stop_requests = stop.clone();
            let service = hyper::service::service_fn(move |req| {
                let (proxy, tasks, stop) = (proxy.clone(), inner.clone(), stop_requests.clone());
                async move { Ok::<_, Infallible>(proxy.handle(req, &tasks, &stop).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = connection => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

/// Where the engine listens.
enum Upstream {
    Unix(String),
    Tcp(String),
}

impl Upstream {
    fn parse(host: &str) -> Upstream {
        match host.strip_prefix("unix://") {
            Some(path) => Upstream::Unix(path.to_string()),
            None => Upstream::Tcp(host.trim_start_matches("tcp://").to_string()),
        }
    }

    async fn connect(&self) -> std::io::Result<hyper::client::conn::http1::SendRequest<Body>> {
        match self {
            Upstream::Unix(path) => handshake(UnixStream::connect(path).await?).await,
            Upstream::Tcp(addr) => handshake(TcpStream::connect(addr).await?).await,
        }
    }
}

/// One engine connection for one request: the connection drives itself (and an upgrade
/// after it) in its own task.
async fn handshake<S>(stream: S) -> std::io::Result<hyper::client::conn::http1::SendRequest<Body>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(connection.with_upgrades());
    Ok(sender)
}

struct Proxy {
    docker: Docker,
    upstream: Upstream,
    run: RunId,
    /// The plan's step IDs: the names that may mean a step's container.
    steps: HashSet<String>,
    networks: Vec<String>,
    credentials: Vec<RegistryCredential>,
    bounds: Bounds,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Container IDs and names known to be the run's.
    containers: HashSet<String>,
    execs: HashSet<String>,
    ledger: Ledger,
}

/// A request as it will be forwarded.
struct Outgoing {
    path: String,
    query: Vec<(String, String)>,
    /// Replaces the body when set (a rewritten JSON body).
    body: Option<Bytes>,
    /// Tags the request sets: noted in the ledger, with the image each named before, before
    /// the request goes to the engine.
    tags: Vec<String>,
    /// What the answer creates for the run, remembered so later requests need no lookup.
    creates: Option<Created>,
}

#[derive(Clone, Copy)]
enum Created {
    Container,
    Exec,
}

impl Proxy {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn label(&self) -> String {
        format!("{RUN_LABEL}={}", self.run)
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let mut body = Some(body);
        let (version, endpoint) = policy::split_version(parts.uri.path());
        let (version, endpoint) = (version.to_string(), endpoint.to_string());
        let query: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let route = policy::route(parts.method.as_str(), &endpoint, &query);
        let outgoing = match self.admit(route, &mut parts, &mut body, endpoint, query).await {
            Ok(outgoing) => outgoing,
            Err(refusal) => {
                drain(body).await;
                return refuse(&refusal);
            }
        };
        for tag in &outgoing.tags {
            if !self.state().ledger.knows(tag) {
                let before = self.docker.inspect_image(tag).await.ok().and_then(|i| i.id);
                self.state().ledger.record(tag.clone(), before);
            }
        }
        match self.forward(parts, body, &version, outgoing, tasks, stop).await {
            Ok(response) => response,
            Err(e) => refuse(&Refusal {
                status: 502,
                message: format!("kiln: the engine did not answer: {e}"),
            }),
        }
    }

    /// Checks `route` against what the run owns; returns the request to forward.
    async fn admit(
        &self,
        route: Route,
        parts: &mut http::request::Parts,
        body: &mut Option<Incoming>,
        endpoint: String,
        mut query: Vec<(String, String)>,
    ) -> Result<Outgoing, Refusal> {
        let mut out = Outgoing {
            path: endpoint,
            query: Vec::new(),
            body: None,
            tags: Vec::new(),
            creates: None,
        };
        match route {
            Route::Pass => {}
            Route::Refuse(refusal) => return Err(refusal),
            Route::Listing => {
                let filters = query.iter().position(|(k, _)| k == "filters");
                let current = filters.map(|i| query.remove(i).1);
                query.push((
                    "filters".into(),
                    policy::narrow_filters(current.as_deref(), &self.label()),
                ));
            }
            Route::Registry { image } => self.add_login(&mut parts.headers, &image),
            Route::Build { tags } => {
                self.add_logins(&mut parts.headers);
                out.tags = tags;
            }
            Route::Tag { target } => out.tags.push(target),
            Route::ImageDelete { image } => {
                let image = policy::normalize_image(&image);
                if !self.state().ledger.knows(&image) {
                    return Err(Refusal::forbidden(format_args!(
                        "only images this run tagged can be removed inside a run ({image})"
                    )));
                }
            }
            Route::Commit { container, target } => {
                let id = self.container(&container).await?;
                for pair in query.iter_mut().filter(|(k, _)| k == "container") {
                    pair.1 = id.clone();
                }
                out.tags.extend(target);
            }
            Route::ContainerCreate => {
                let name = query.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone());
                let mut body = read_json(body).await?;
                let needs = policy::check_create(&mut body, name.as_deref(), &self.bounds)?;
                for container in &needs.containers {
                    self.container(container).await?;
                }
                for network in &needs.networks {
                    self.network(network).await?;
                }
                for volume in &needs.volumes {
                    self.volume_or_create(volume).await?;
                }
                out.body = Some(Bytes::from(body.to_string()));
                out.creates = Some(Created::Container);
            }
            Route::Container { id, exec } => {
                let resolved = self.container(&id).await?;
                out.path = replace_segment(&out.path, 1, &resolved);
                if exec {
                    let body = read_json(body).await?;
                    policy::check_exec(&body)?;
                    out.body = Some(Bytes::from(body.to_string()));
                    out.creates = Some(Created::Exec);
                }
            }
            Route::Exec { id } => self.exec(&id).await?,
            Route::NetworkCreate => {
                let mut body = read_json(body).await?;
                policy::check_network_create(&mut body, &self.bounds.labels)?;
                out.body = Some(Bytes::from(body.to_string()));
            }
            Route::Network { id } => self.network(&id).await?,
            Route::NetworkMembership { id } => {
                self.network(&id).await?;
                let body = read_json(body).await?;
                self.container(&policy::membership_container(&body)?).await?;
                out.body = Some(Bytes::from(body.to_string()));
            }
            Route::VolumeCreate => {
                let mut body = read_json(body).await?;
                policy::check_volume_create(&mut body, &self.bounds.labels)?;
                out.body = Some(Bytes::from(body.to_string()));
            }
            Route::Volume { name } => self.volume(&name).await?,
        }
        out.query = query;
        Ok(out)
    }

    /// The engine ID of `id` if it is the run's container. A bare step ID names that step's
    /// latest container, as ACR's step containers are named after their steps.
    async fn container(&self, id: &str) -> Result<String, Refusal> {
        if self.state().containers.contains(id) {
            return Ok(id.to_string());
        }
        if let Ok(found) = self.docker.inspect_container(id, None).await
            && let Some(engine_id) = found.id
        {
            let labels = found.config.and_then(|c| c.labels).unwrap_or_default();
            if labels.get(RUN_LABEL) == Some(&self.run.to_string()) {
                self.state().containers.insert(engine_id.clone());
                return Ok(engine_id);
            }
            return Err(Refusal::no_such("container", id));
        }
        if !self.steps.contains(id) {
            return Err(Refusal::no_such("container", id));
        }
        let filters = [("label".to_string(), vec![self.label(), format!("{STEP_LABEL}={id}")])];
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters.into_iter().collect()),
            ..Default::default()
        };
        let step = self.docker.list_containers(Some(options)).await.unwrap_or_default();
        match step.into_iter().max_by_key(|c| c.created.unwrap_or_default()).and_then(|c| c.id) {
            Some(engine_id) => {
                self.state().containers.insert(engine_id.clone());
                Ok(engine_id)
            }
            None => Err(Refusal::no_such("container", id)),
        }
    }

    async fn exec(&self, id: &str) -> Result<(), Refusal> {
        if self.state().execs.contains(id) {
            return Ok(());
        }
        let container = self
            .docker
            .inspect_exec(id)
            .await
            .ok()
            .and_then(|e| e.container_id)
            .ok_or_else(|| Refusal::no_such("exec instance", id))?;
        self.container(&container).await.map_err(|_| Refusal::no_such("exec instance", id))?;
        self.state().execs.insert(id.to_string());
        Ok(())
    }

    /// The run's networks: its default one (which may be a spare network without labels), the
    /// plan's, and those created through the socket.
    async fn network(&self, id: &str) -> Result<(), Refusal> {
        if id == self.bounds.default_network || self.networks.iter().any(|n| n == id) {
            return Ok(());
        }
        let found = self.docker.inspect_network(id, None).await.ok();
        let labels = found.as_ref().and_then(|n| n.labels.as_ref());
        match labels.and_then(|l| l.get(RUN_LABEL)) {
            Some(run) if *run == self.run.to_string() => Ok(()),
            _ => Err(Refusal::no_such("network", id)),
        }
    }

    async fn volume(&self, name: &str) -> Result<(), Refusal> {
        match self.docker.inspect_volume(name).await {
            Ok(volume) if volume.labels.get(RUN_LABEL) == Some(&self.run.to_string()) => Ok(()),
            _ => Err(Refusal::no_such("volume", name)),
        }
    }

    /// A named volume a create mounts: the run's, or created for the run now (the engine
    /// would create it without the run's label).
    async fn volume_or_create(&self, name: &str) -> Result<(), Refusal> {
        match self.docker.inspect_volume(name).await {
            Ok(volume) if volume.labels.get(RUN_LABEL) == Some(&self.run.to_string()) => Ok(()),
            Ok(_) => Err(Refusal::forbidden(format_args!(
                "volume {name} exists outside this run; use a name of the run's own"
            ))),
            Err(_) => {
                let request = VolumeCreateRequest {
                    name: Some(name.to_string()),
                    labels: Some(self.bounds.labels.clone()),
                    ..Default::default()
                };
                self.docker.create_volume(request).await.map(drop).map_err(|e| Refusal {
                    status: 500,
                    message: format!(
                        "kiln: cannot create volume {name}: {}",
                        crate::image::engine_message(e)
                    ),
                })
            }
        }
    }

    /// Adds the run's login for `image`'s registry to a push or pull that carries none.
    fn add_login(&self, headers: &mut http::HeaderMap, image: &str) {
        if has_credentials(headers.get("X-Registry-Auth")) {
            return;
        }
        let Ok(reference) = ImageRef::parse(image) else { return };
        if let Some(credential) = auth::for_host(&self.credentials, reference.registry_host())
            && let Some(value) = encode_header(&credential)
        {
            headers.insert("X-Registry-Auth", value);
        }
    }

    /// Adds all of the run's logins to a build that carries none (any `FROM` may need one).
    fn add_logins(&self, headers: &mut http::HeaderMap) {
        if self.credentials.is_empty() || has_credentials(headers.get("X-Registry-Config")) {
            return;
        }
        if let Some(value) = encode_header(&auth::registry_config(&self.credentials)) {
            headers.insert("X-Registry-Config", value);
        }
    }

    async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: Option<Incoming>,
        version: &str,
        out: Outgoing,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> Result<Response<Body>, std::io::Error> {
        let mut uri = format!("{version}{}", out.path);
        if !out.query.is_empty() {
            uri.push('?');
            uri.push_str(
                &form_urlencoded::Serializer::new(String::new()).extend_pairs(&out.query).finish(),
            );
        }
        parts.uri = uri.parse().map_err(std::io::Error::other)?;
        let upgrade = parts.headers.contains_key(http::header::UPGRADE);
        let mut downstream = Request::from_parts(parts, ());
        let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut downstream));
        let (mut parts, ()) = downstream.into_parts();
        let body: Body = match out.body {
            Some(bytes) => {
                parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                parts.headers.remove(http::header::TRANSFER_ENCODING);
                Full::new(bytes).map_err(|never| match never {}).boxed()
            }
            None => match body {
                Some(body) => body.boxed(),
                None => Full::new(Bytes::new()).map_err(|never| match never {}).boxed(),
            },
        };
        let mut sender = self.upstream.connect().await?;
        let mut response = sender
            .send_request(Request::from_parts(parts, body))
            .await
            .map_err(std::io::Error::other)?;
        if let Some(created) = out.creates
            && response.status().is_success()
        {
            return Ok(self.remember(created, response).await);
        }
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(downstream_upgrade) = downstream_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let stop = stop.clone();
            tasks.spawn(async move {
                let (Ok(down), Ok(up)) = tokio::join!(downstream_upgrade, upstream_upgrade) else {
                    return;
                };
                let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
        Ok(response.map(BodyExt::boxed))
    }

    /// Notes the ID a create answered with (a small JSON body, read whole) and passes the
    /// answer on: a `docker run` then starts, attaches to and waits for it without a lookup.
    async fn remember(&self, created: Created, response: Response<Incoming>) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let bytes = match Limited::new(body, JSON_BODY_LIMIT).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                return refuse(&Refusal {
                    status: 502,
                    message: format!("kiln: the engine's answer broke off: {e}"),
                });
            }
        };
        if let Some(id) = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_string))
        {
            let mut state = self.state();
            match created {
                Created::Container => state.containers.insert(id),
                Created::Exec => state.execs.insert(id),
            };
        }
        Response::from_parts(parts, Full::new(bytes).map_err(|never| match never {}).boxed())
    }
}

fn has_credentials(header: Option<&HeaderValue>) -> bool {
    let Some(text) = header.and_then(|h| h.to_str().ok()) else { return false };
    let decoded = base64::engine::general_purpose::URL_SAFE
        .decode(text.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text.trim()));
    match decoded.ok().and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok()) {
        Some(Value::Object(map)) => !map.is_empty(),
        _ => false,
    }
}

fn encode_header(value: &impl serde::Serialize) -> Option<HeaderValue> {
    let json = serde_json::to_vec(value).ok()?;
    HeaderValue::from_str(&base64::engine::general_purpose::URL_SAFE.encode(json)).ok()
}

/// `/containers/web/start` with segment 1 replaced by `id`.
fn replace_segment(path: &str, index: usize, id: &str) -> String {
    let mut segments: Vec<&str> = path.split('/').collect();
    // A leading '/' makes segment 0 empty: the resource is at 1, its ID at 2.
    if let Some(segment) = segments.get_mut(index + 1) {
        *segment = id;
    }
    segments.join("/")
}

async fn read_json(body: &mut Option<Incoming>) -> Result<Value, Refusal> {
    let Some(body) = body.take() else { return Ok(Value::Object(serde_json::Map::new())) };
    let bytes = Limited::new(body, JSON_BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| Refusal {
            status: 400,
            message: format!("kiln: cannot read the request body: {e}"),
        })?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    serde_json::from_slice(&bytes).map_err(|e| Refusal {
        status: 400,
        message: format!("kiln: the request body is not JSON: {e}"),
    })
}

/// Reads what is left of a refused request's body: closing the connection while the client
/// still writes it would give the client a broken pipe instead of the refusal. Bounded: a
/// client that sends more (a refused build's context) is cut off.
async fn drain(body: Option<Incoming>) {
    const DRAIN_LIMIT: usize = 64 << 20;
    let Some(mut body) = body else { return };
    let mut read = 0;
    while read <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(_)) | None => return,
        }
    }
}

fn refuse(refusal: &Refusal) -> Response<Body> {
    let body = serde_json::json!({ "message": refusal.message }).to_string();
    let mut response =
        Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_replaced_in_place() {
        assert_eq!(replace_segment("/containers/web/logs", 1, "abc"), "/containers/abc/logs");
        assert_eq!(replace_segment("/containers/web", 1, "abc"), "/containers/abc");
    }

    #[test]
    fn empty_logins_count_as_none() {
        let encode = |v: &str| {
            HeaderValue::from_str(&base64::engine::general_purpose::URL_SAFE.encode(v)).unwrap()
        };
        assert!(!has_credentials(None));
        assert!(!has_credentials(Some(&encode("{}"))));
        assert!(has_credentials(Some(&encode(r#"{"username":"u"}"#))));
        assert!(!has_credentials(Some(&HeaderValue::from_static("not base64!"))));
    }
}
