//! What a step may ask of the engine through the run's Docker API, decided from the request
//! alone: which endpoint it is, what it names, and what a create body asks for.
//!
//! Everything here is pure, so every refusal is unit-tested without an engine. What needs the
//! engine (does this container belong to the run?) is returned as names to check
//! ([`Needs`]), and the proxy asks. Refusals carry the sentence the `docker` CLI prints after
//! "Error response from daemon:", so a user reads why, not just "forbidden".

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_plan::image_ref::ImageRef;
use serde_json::{Map, Value};

use crate::workspace::CONTAINER_PATH;

/// Where the engine's own socket is inside a step, and where a nested `docker run -v` of it
/// is pointed instead: the run's socket.
pub(crate) const SOCKET_PATH: &str = "/var/run/docker.sock";

/// A request the run may not make, answered as the engine answers errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl Refusal {
    pub(crate) fn forbidden(message: impl std::fmt::Display) -> Refusal {
        Refusal { status: 403, message: format!("kiln: {message}") }
    }

    /// Worded as the engine words a missing object, so another run's objects are not even
    /// confirmed to exist.
    pub(crate) fn no_such(kind: &str, name: &str) -> Refusal {
        Refusal { status: 404, message: format!("No such {kind}: {name}") }
    }

    fn bad_request(message: impl std::fmt::Display) -> Refusal {
        Refusal { status: 400, message: format!("kiln: {message}") }
    }
}

/// What kind of request this is, and what of it the proxy must check or change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// Harmless or read-only engine-wide requests: forwarded unchanged.
    Pass,
    /// Talks to `image`'s registry on the engine's side (push, pull, distribution inspect):
    /// the run's login is added when the client sent none.
    Registry {
        image: String,
    },
    /// `docker build`: the run's logins for `FROM` pulls; its tags are the run's.
    Build {
        tags: Vec<String>,
    },
    /// `docker tag`, `docker import`: `target` becomes the run's.
    Tag {
        target: String,
    },
    /// `docker rmi`: only what the run tagged.
    ImageDelete {
        image: String,
    },
    /// `docker commit` of a run container to `target`.
    Commit {
        container: String,
        target: Option<String>,
    },
    /// Lists and event streams: narrowed to the run's label.
    Listing,
    ContainerCreate,
    /// Anything on one container; `exec` says the body is an exec create to check.
    Container {
        id: String,
        exec: bool,
    },
    Exec {
        id: String,
    },
    NetworkCreate,
    Network {
        id: String,
    },
    /// Connect/disconnect: the network and the container in the body must be the run's.
    NetworkMembership {
        id: String,
    },
    VolumeCreate,
    Volume {
        name: String,
    },
    Refuse(Refusal),
}

/// Splits `/v1.41/containers/json` into the version prefix and the endpoint path.
pub(crate) fn split_version(path: &str) -> (&str, &str) {
    if let Some(rest) = path.strip_prefix("/v")
        && let Some(slash) = rest.find('/')
        && rest[..slash].split('.').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return path.split_at(slash + 2);
    }
    ("", path)
}

/// Classifies a request by method, endpoint path (without the version prefix, still
/// percent-encoded) and query.
pub(crate) fn route(method: &str, path: &str, query: &[(String, String)]) -> Route {
    let get = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let decoded =
        |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    // Image names hold slashes (`127.0.0.1:5000/team/app`), which the CLI does not encode:
    // the name is everything between the resource and the operation.
    let middle = |from: usize, to: usize| decoded(&segments[from..to].join("/"));
    let n = segments.len();
    match (method, segments.as_slice()) {
        ("GET" | "HEAD", ["_ping"]) | ("GET", ["version" | "info"]) | ("POST", ["auth"]) => {
            Route::Pass
        }
        ("GET", ["events"]) => Route::Listing,
        ("GET", ["containers" | "networks" | "volumes", "json"])
        | ("GET", ["networks" | "volumes"]) => Route::Listing,
        (_, [_, "prune"]) | (_, ["system", "df"]) => Route::Refuse(Refusal::forbidden(
            "pruning and disk-usage reports act on the whole engine, not on this run",
        )),
        ("POST", ["containers", "create"]) => Route::ContainerCreate,
        (_, ["containers", id, rest @ ..]) => {
            Route::Container { id: decoded(id), exec: method == "POST" && rest == ["exec"] }
        }
        (_, ["exec", id, ..]) => Route::Exec { id: decoded(id) },
        ("GET", ["images", "json" | "search" | "get"]) => Route::Pass,
        // A tarball names its own tags, so a load could replace any image on the engine
        // (`busybox:latest` of every later run) before the run could note what it replaced.
        ("POST", ["images", "load"]) => Route::Refuse(Refusal::forbidden(
            "docker load is not allowed inside a run (it can replace any image on the engine); \
             pull from or push to a registry instead",
        )),
        ("POST", ["images", "create"]) => match (get("fromImage"), get("fromSrc")) {
            (Some(image), _) => Route::Registry { image: with_tag(&image, get("tag")) },
            (None, Some(_)) => match get("repo") {
                Some(repo) => Route::Tag { target: with_tag(&repo, get("tag")) },
                None => Route::Pass,
            },
            (None, None) => {
                Route::Refuse(Refusal::bad_request("image create needs fromImage or fromSrc"))
            }
        },
        ("POST", ["images", .., "push"]) if n > 2 => {
            Route::Registry { image: with_tag(&middle(1, n - 1), get("tag")) }
        }
        ("POST", ["images", .., "tag"]) if n > 2 => match get("repo") {
            Some(repo) => Route::Tag { target: with_tag(&repo, get("tag")) },
            None => Route::Refuse(Refusal::bad_request("image tag needs a repo")),
        },
        ("GET", ["images", .., "json" | "history" | "get"]) if n > 2 => Route::Pass,
        ("DELETE", ["images", ..]) if n > 1 => Route::ImageDelete { image: middle(1, n) },
        ("GET", ["distribution", .., "json"]) if n > 2 => {
            Route::Registry { image: middle(1, n - 1) }
        }
        ("POST", ["build"]) => build_route(query),
        ("POST", ["build", "cancel"]) => Route::Pass,
        ("POST", ["commit"]) => match get("container") {
            Some(container) => Route::Commit {
                container,
                target: get("repo").filter(|r| !r.is_empty()).map(|r| with_tag(&r, get("tag"))),
            },
            None => Route::Refuse(Refusal::bad_request("commit needs a container")),
        },
        ("POST", ["networks", "create"]) => Route::NetworkCreate,
        ("POST", ["networks", id, "connect" | "disconnect"]) => {
            Route::NetworkMembership { id: decoded(id) }
        }
        ("GET" | "DELETE", ["networks", id]) => Route::Network { id: decoded(id) },
        ("POST", ["volumes", "create"]) => Route::VolumeCreate,
        ("GET" | "DELETE", ["volumes", name]) => Route::Volume { name: decoded(name) },
        (_, ["session" | "grpc", ..]) => Route::Refuse(Refusal::forbidden(
            "BuildKit is not available inside a run (this engine has no buildx); build with \
             DOCKER_BUILDKIT=0, the classic builder, which kiln sets by default",
        )),
        (_, ["swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs" | "plugins", ..]) => {
            Route::Refuse(Refusal::forbidden(
                "swarm and plugin operations act on the whole engine and are not allowed inside a run",
            ))
        }
        _ => Route::Refuse(Refusal::forbidden(format_args!(
            "{method} {path} is not available inside a run"
        ))),
    }
}

fn build_route(query: &[(String, String)]) -> Route {
    if let Some((_, mode)) = query.iter().find(|(k, _)| k == "networkmode")
        && !network_mode_is_private(mode)
    {
        return Route::Refuse(Refusal::forbidden(format_args!(
            "builds on the {mode} network are not allowed inside a run"
        )));
    }
    let tags = query.iter().filter(|(k, _)| k == "t").map(|(_, v)| with_tag(v, None)).collect();
    Route::Build { tags }
}

fn network_mode_is_private(mode: &str) -> bool {
    matches!(mode, "" | "default" | "bridge" | "none")
}

/// `repo` with `tag`, or `latest` when the reference has neither tag nor digest: the form
/// the run's image ledger compares.
pub(crate) fn with_tag(repo: &str, tag: Option<String>) -> String {
    match tag.filter(|t| !t.is_empty()) {
        Some(tag) if tag.starts_with("sha256:") => format!("{repo}@{tag}"),
        Some(tag) => format!("{repo}:{tag}"),
        None => normalize_image(repo),
    }
}

/// `app` → `app:latest`; tagged or digested references unchanged. A reference that does not
/// parse is kept as written: the engine words its error.
pub(crate) fn normalize_image(image: &str) -> String {
    ImageRef::parse(image).map_or_else(|_| image.to_string(), |r| r.with_default_tag())
}

/// Names in a create body that only the engine can say belong to the run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Needs {
    pub(crate) containers: Vec<String>,
    pub(crate) networks: Vec<String>,
    pub(crate) volumes: Vec<String>,
}

/// The run's side of a create: where its workspace and socket are, its network, its labels.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    /// The run's workspace on the host, symlink-free.
    pub(crate) workspace: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) default_network: String,
    pub(crate) labels: HashMap<String, String>,
    /// Resolves a workspace path as the engine will see it ([`real_path`]).
    pub(crate) real_path: fn(&Path) -> std::io::Result<PathBuf>,
}

impl Bounds {
    /// A bind source the run may mount, as the engine must see it: the workspace (by its host
    /// path, or by `/workspace` as steps see it), or the engine socket, which becomes the
    /// run's own.
    fn bind_source(&self, source: &str) -> Result<String, Refusal> {
        let path = Path::new(source);
        if path.components().any(|c| c == std::path::Component::ParentDir) {
            return Err(Refusal::forbidden(format_args!(
                "bind mount source {source} uses '..'; name the path inside the workspace directly"
            )));
        }
        if source == SOCKET_PATH {
            return Ok(self.socket.display().to_string());
        }
        let inside = match path.strip_prefix(CONTAINER_PATH) {
            Ok(rest) if rest.as_os_str().is_empty() => self.workspace.clone(),
            Ok(rest) => self.workspace.join(rest),
            Err(_) if path.starts_with(&self.workspace) => path.to_path_buf(),
            Err(_) => {
                return Err(Refusal::forbidden(format_args!(
                    "bind mounts of host paths are not allowed inside a run ({source}); mount a \
                     path under {CONTAINER_PATH} (the run's workspace) or a named volume"
                )));
            }
        };
        // The engine follows symlinks on the host: `/workspace/link -> /` must not mount `/`.
        let real = (self.real_path)(&inside)
            .map_err(|e| Refusal::forbidden(format_args!("bind mount source {source}: {e}")))?;
        if !real.starts_with(&self.workspace) {
            return Err(Refusal::forbidden(format_args!(
                "bind mount source {source} leads outside the run's workspace (through a symlink)"
            )));
        }
        Ok(real.display().to_string())
    }
}

/// The path `path` names on the host with every symlink resolved, created (as `docker run -v`
/// would) when missing, so what the engine mounts is what was checked.
pub(crate) fn real_path(path: &Path) -> std::io::Result<PathBuf> {
    if !path.exists() {
        std::fs::create_dir_all(path)?;
    }
    path.canonicalize()
}

/// Checks a container create body (as JSON, so fields kiln does not know pass through
/// unchanged) and rewrites it for the run: its labels, its network, workspace paths as the
/// engine sees them. Returns the containers, networks and volumes it names.
pub(crate) fn check_create(
    body: &mut Value,
    name: Option<&str>,
    bounds: &Bounds,
) -> Result<Needs, Refusal> {
    if let Some(name) = name
        && name.trim_start_matches('/').starts_with("kiln-")
    {
        return Err(Refusal::forbidden(format_args!(
            "container names starting with kiln- are kiln's own ({name})"
        )));
    }
    let object = body
        .as_object_mut()
        .ok_or_else(|| Refusal::bad_request("the body is not a JSON object"))?;
    set_labels(object, &bounds.labels);
    let mut needs = Needs::default();
    let host = match object.get_mut("HostConfig") {
        Some(Value::Object(host)) => host,
        Some(Value::Null) | None => {
            object.insert("HostConfig".into(), Value::Object(Map::new()));
            object["HostConfig"].as_object_mut().expect("just inserted")
        }
        Some(_) => return Err(Refusal::bad_request("HostConfig is not an object")),
    };
    check_host_config(host, bounds, &mut needs)?;
    if let Some(Value::Object(endpoints)) =
        object.get_mut("NetworkingConfig").and_then(|n| n.get_mut("EndpointsConfig"))
    {
        // The CLI names the default network's endpoint too: it moves with the network mode.
        if let Some(endpoint) = endpoints.remove("default") {
            endpoints.insert(bounds.default_network.clone(), endpoint);
        }
        needs.networks.extend(endpoints.keys().filter(|n| !is_builtin_network(n)).cloned());
    }
    Ok(needs)
}

fn set_labels(object: &mut Map<String, Value>, labels: &HashMap<String, String>) {
    let entry = object.entry("Labels").or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let map = entry.as_object_mut().expect("an object");
    // A step cannot claim another run's label: kiln's labels overwrite any it sent.
    for (key, value) in labels {
        map.insert(key.clone(), Value::String(value.clone()));
    }
}

fn is_builtin_network(name: &str) -> bool {
    matches!(name, "bridge" | "none" | "default" | "host")
}

/// The host settings that would let a container out of the run.
fn check_host_config(
    host: &mut Map<String, Value>,
    bounds: &Bounds,
    needs: &mut Needs,
) -> Result<(), Refusal> {
    let truthy = |v: Option<&Value>| v.is_some_and(|v| v.as_bool() == Some(true));
    let non_empty = |v: Option<&Value>| match v {
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        _ => false,
    };
    if truthy(host.get("Privileged")) {
        return Err(Refusal::forbidden("privileged containers are not allowed inside a run"));
    }
    for (field, what) in [
        ("CapAdd", "added capabilities are"),
        ("Devices", "host devices are"),
        ("DeviceRequests", "device requests (GPUs) are"),
        ("DeviceCgroupRules", "device cgroup rules are"),
        ("CgroupParent", "a cgroup parent is"),
        ("VolumeDriver", "volume drivers are"),
    ] {
        if non_empty(host.get(field)) {
            return Err(Refusal::forbidden(format_args!(
                "{what} not allowed inside a run ({field})"
            )));
        }
    }
    if let Some(Value::Array(options)) = host.get("SecurityOpt") {
        for option in options {
            let text = option.as_str().unwrap_or_default();
            if !text.starts_with("no-new-privileges") {
                return Err(Refusal::forbidden(format_args!(
                    "security option {text:?} is not allowed inside a run (only no-new-privileges)"
                )));
            }
        }
    }
    if host.get("MaskedPaths").is_some_and(|v| !v.is_null())
        || host.get("ReadonlyPaths").is_some_and(|v| !v.is_null())
    {
        return Err(Refusal::forbidden(
            "unmasking /proc and /sys paths (systempaths=unconfined) is not allowed inside a run",
        ));
    }
    if let Some(driver) = host.get("LogConfig").and_then(|l| l.get("Type")).and_then(Value::as_str)
        && !matches!(driver, "" | "json-file" | "local")
    {
        return Err(Refusal::forbidden(format_args!(
            "the {driver} log driver is not allowed inside a run (it sends the engine's traffic elsewhere)"
        )));
    }
    if let Some(runtime) = host.get("Runtime").and_then(Value::as_str)
        && !runtime.is_empty()
        && runtime != "runc"
    {
        return Err(Refusal::forbidden(format_args!(
            "the {runtime} runtime is not allowed inside a run"
        )));
    }
    for (field, what) in [
        ("PidMode", "PID"),
        ("IpcMode", "IPC"),
        ("UTSMode", "UTS"),
        ("UsernsMode", "user"),
        ("CgroupnsMode", "cgroup"),
    ] {
        match host.get(field).and_then(Value::as_str).unwrap_or_default() {
            "host" => {
                return Err(Refusal::forbidden(format_args!(
                    "the host {what} namespace is not allowed inside a run ({field})"
                )));
            }
            mode => {
                if let Some(container) = mode.strip_prefix("container:") {
                    needs.containers.push(container.to_string());
                }
            }
        }
    }
    let network = host.get("NetworkMode").and_then(Value::as_str).unwrap_or_default().to_string();
    match network.as_str() {
        // What `docker run` sends without --network: the run's network, so step IDs and
        // services resolve as they do for the steps.
        "" | "default" => {
            host.insert("NetworkMode".into(), Value::String(bounds.default_network.clone()));
        }
        "bridge" | "none" => {}
        "host" => {
            return Err(Refusal::forbidden("the host network is not allowed inside a run"));
        }
        mode => match mode.strip_prefix("container:") {
            Some(container) => needs.containers.push(container.to_string()),
            None => needs.networks.push(mode.to_string()),
        },
    }
    if let Some(Value::Array(binds)) = host.get_mut("Binds") {
        for bind in binds.iter_mut() {
            let text = bind
                .as_str()
                .ok_or_else(|| Refusal::bad_request("a Binds entry is not a string"))?;
            let (source, rest) = text.split_once(':').unwrap_or((text, ""));
            if source.starts_with('/') {
                let source = bounds.bind_source(source)?;
                *bind = Value::String(if rest.is_empty() {
                    source
                } else {
                    format!("{source}:{rest}")
                });
            } else if !rest.is_empty() {
                needs.volumes.push(source.to_string());
            }
        }
    }
    if let Some(Value::Array(mounts)) = host.get_mut("Mounts") {
        for mount in mounts.iter_mut() {
            let kind = mount.get("Type").and_then(Value::as_str).unwrap_or("volume").to_string();
            let source =
                mount.get("Source").and_then(Value::as_str).unwrap_or_default().to_string();
            match kind.as_str() {
                "bind" => mount["Source"] = Value::String(bounds.bind_source(&source)?),
                "volume"
                    if mount
                        .pointer("/VolumeOptions/DriverConfig")
                        .is_some_and(|c| !c.is_null()) =>
                {
                    return Err(Refusal::forbidden(
                        "volume driver options (which can mount host paths) are not allowed inside a run",
                    ));
                }
                "volume" if !source.is_empty() => needs.volumes.push(source),
                "volume" | "tmpfs" => {}
                other => {
                    return Err(Refusal::forbidden(format_args!(
                        "{other} mounts are not allowed inside a run"
                    )));
                }
            }
        }
    }
    if let Some(Value::Array(from)) = host.get("VolumesFrom") {
        needs.containers.extend(
            from.iter()
                .filter_map(Value::as_str)
                .map(|f| f.split(':').next().unwrap_or(f).to_string()),
        );
    }
    if let Some(Value::Array(links)) = host.get("Links") {
        needs.containers.extend(
            links
                .iter()
                .filter_map(Value::as_str)
                .map(|l| l.split(':').next().unwrap_or(l).to_string()),
        );
    }
    Ok(())
}

/// Checks an exec create body: an exec may not be privileged.
pub(crate) fn check_exec(body: &Value) -> Result<(), Refusal> {
    if body.get("Privileged").and_then(Value::as_bool) == Some(true) {
        return Err(Refusal::forbidden("privileged exec is not allowed inside a run"));
    }
    Ok(())
}

/// Checks a network create body and labels it: bridge networks only (other drivers reach the
/// host's interfaces).
pub(crate) fn check_network_create(
    body: &mut Value,
    labels: &HashMap<String, String>,
) -> Result<(), Refusal> {
    labelled_create(body, labels, |object| {
        let driver = object.get("Driver").and_then(Value::as_str).unwrap_or_default();
        let names_a_host_bridge =
            object.get("Options").and_then(|o| o.get("com.docker.network.bridge.name")).is_some();
        if !matches!(driver, "" | "bridge") {
            Some(format!("the {driver} network driver is not allowed inside a run (bridge only)"))
        } else if names_a_host_bridge {
            Some("choosing the host bridge a network uses is not allowed inside a run".to_string())
        } else {
            None
        }
    })
}

/// Labels a volume create body; volume drivers other than `local`, and driver options (which
/// can bind host paths), are refused.
pub(crate) fn check_volume_create(
    body: &mut Value,
    labels: &HashMap<String, String>,
) -> Result<(), Refusal> {
    labelled_create(body, labels, |object| {
        let driver = object.get("Driver").and_then(Value::as_str).unwrap_or_default();
        (!matches!(driver, "" | "local") || non_empty_object(object.get("DriverOpts"))).then(|| {
            "volume drivers and driver options (which can mount host paths) are not allowed \
             inside a run"
                .to_string()
        })
    })
}

/// A create body checked by `refusal` (the reason it is refused, if it is), then labelled.
fn labelled_create(
    body: &mut Value,
    labels: &HashMap<String, String>,
    refusal: impl Fn(&Map<String, Value>) -> Option<String>,
) -> Result<(), Refusal> {
    let object = body
        .as_object_mut()
        .ok_or_else(|| Refusal::bad_request("the body is not a JSON object"))?;
    if let Some(reason) = refusal(object) {
        return Err(Refusal::forbidden(reason));
    }
    set_labels(object, labels);
    Ok(())
}

fn non_empty_object(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Object(o)) if !o.is_empty())
}

/// The container a connect/disconnect body names.
pub(crate) fn membership_container(body: &Value) -> Result<String, Refusal> {
    body.get("Container")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Refusal::bad_request("the body names no Container"))
}

/// A `filters` query value (JSON `{"label": ["a=b"], …}`) with the run's label added, so
/// lists and events show the run's objects only.
pub(crate) fn narrow_filters(filters: Option<&str>, label: &str) -> String {
    let mut map: Map<String, Value> =
        filters.and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default();
    let entry = map.entry("label").or_insert_with(|| Value::Array(Vec::new()));
    match entry {
        Value::Array(labels) => labels.push(Value::String(label.to_string())),
        // The older form: {"label": {"a=b": true}}.
        Value::Object(labels) => {
            labels.insert(label.to_string(), Value::Bool(true));
        }
        other => *other = Value::Array(vec![Value::String(label.to_string())]),
    }
    Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bounds() -> Bounds {
        Bounds {
            workspace: PathBuf::from("/data/work/kiln-ka1"),
            socket: PathBuf::from("/data/work/docker-ka1/docker.sock"),
            default_network: "kiln-ka1".into(),
            labels: HashMap::from([("kiln.run".to_string(), "ka1".to_string())]),
            real_path: |p| Ok(p.to_path_buf()),
        }
    }

    fn refused(route: Route) -> String {
        match route {
            Route::Refuse(r) => r.message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn version_prefixes_are_split_off() {
        assert_eq!(split_version("/v1.41/containers/json"), ("/v1.41", "/containers/json"));
        assert_eq!(split_version("/_ping"), ("", "/_ping"));
        assert_eq!(split_version("/volumes/v1"), ("", "/volumes/v1"));
        assert_eq!(split_version("/vx/containers"), ("", "/vx/containers"));
    }

    #[test]
    fn endpoints_are_classified() {
        assert_eq!(route("GET", "/_ping", &[]), Route::Pass);
        assert_eq!(route("GET", "/containers/json", &[]), Route::Listing);
        assert_eq!(route("GET", "/events", &[]), Route::Listing);
        assert_eq!(route("POST", "/containers/create", &[]), Route::ContainerCreate);
        assert_eq!(
            route("POST", "/containers/abc/exec", &[]),
            Route::Container { id: "abc".into(), exec: true }
        );
        assert_eq!(
            route("POST", "/containers/abc/attach", &[]),
            Route::Container { id: "abc".into(), exec: false }
        );
        assert_eq!(route("POST", "/exec/e1/start", &[]), Route::Exec { id: "e1".into() });
        assert_eq!(
            route("POST", "/images/127.0.0.1:5000/team/app/push", &query(&[("tag", "v1")])),
            Route::Registry { image: "127.0.0.1:5000/team/app:v1".into() }
        );
        assert_eq!(
            route("POST", "/images/create", &query(&[("fromImage", "busybox"), ("tag", "latest")])),
            Route::Registry { image: "busybox:latest".into() }
        );
        assert_eq!(
            route("POST", "/images/app/tag", &query(&[("repo", "reg/app"), ("tag", "v2")])),
            Route::Tag { target: "reg/app:v2".into() }
        );
        assert_eq!(
            route("DELETE", "/images/reg/app:v2", &[]),
            Route::ImageDelete { image: "reg/app:v2".into() }
        );
        assert_eq!(
            route("POST", "/build", &query(&[("t", "app"), ("t", "reg/app:1")])),
            Route::Build { tags: vec!["app:latest".into(), "reg/app:1".into()] }
        );
        assert_eq!(route("GET", "/images/reg%2Fapp/json", &[]), Route::Pass);
        assert_eq!(
            route("POST", "/networks/n1/connect", &[]),
            Route::NetworkMembership { id: "n1".into() }
        );
        assert_eq!(route("GET", "/volumes/v1", &[]), Route::Volume { name: "v1".into() });
    }

    #[test]
    fn engine_wide_operations_are_refused_with_a_reason() {
        for (method, path) in [
            ("POST", "/containers/prune"),
            ("POST", "/images/prune"),
            ("POST", "/volumes/prune"),
            ("POST", "/build/prune"),
            ("GET", "/system/df"),
        ] {
            assert!(refused(route(method, path, &[])).contains("whole engine"), "{path}");
        }
        assert!(refused(route("POST", "/swarm/init", &[])).contains("swarm"));
        assert!(refused(route("GET", "/plugins", &[])).contains("swarm and plugin"));
        assert!(refused(route("POST", "/session", &[])).contains("DOCKER_BUILDKIT=0"));
        assert!(refused(route("POST", "/images/load", &[])).contains("docker load is not allowed"));
        assert!(refused(route("GET", "/nonsense", &[])).contains("GET /nonsense is not available"));
        assert!(
            refused(route("POST", "/build", &query(&[("networkmode", "host")])))
                .contains("host network")
        );
    }

    #[test]
    fn image_references_get_their_default_tag() {
        assert_eq!(normalize_image("app"), "app:latest");
        assert_eq!(normalize_image("127.0.0.1:5000/app"), "127.0.0.1:5000/app:latest");
        assert_eq!(normalize_image("127.0.0.1:5000/app:v1"), "127.0.0.1:5000/app:v1");
        assert_eq!(normalize_image("app@sha256:abc"), "app@sha256:abc");
        assert_eq!(with_tag("app", Some("sha256:abc".into())), "app@sha256:abc");
    }

    #[test]
    fn a_plain_create_joins_the_run_with_its_labels() {
        let mut body = json!({"Image": "busybox", "Labels": {"kiln.run": "other", "mine": "x"},
            "HostConfig": {"NetworkMode": "default", "Binds": ["/workspace/src:/src:ro", "cache:/cache"]},
            "NetworkingConfig": {"EndpointsConfig": {"default": {"Aliases": ["a"]}}}});
        let needs = check_create(&mut body, Some("web"), &bounds()).expect("allowed");
        assert_eq!(
            body["NetworkingConfig"]["EndpointsConfig"],
            json!({"kiln-ka1": {"Aliases": ["a"]}})
        );
        assert_eq!(needs.networks, vec!["kiln-ka1".to_string()]);
        assert_eq!(body["Labels"]["kiln.run"], "ka1");
        assert_eq!(body["Labels"]["mine"], "x");
        assert_eq!(body["HostConfig"]["NetworkMode"], "kiln-ka1");
        assert_eq!(body["HostConfig"]["Binds"][0], "/data/work/kiln-ka1/src:/src:ro");
        assert_eq!(needs.volumes, vec!["cache".to_string()]);
        let mut bare = json!({"Image": "busybox"});
        check_create(&mut bare, None, &bounds()).expect("allowed");
        assert_eq!(bare["HostConfig"]["NetworkMode"], "kiln-ka1");
    }

    #[test]
    fn the_engine_socket_becomes_the_runs_own() {
        let mut body = json!({"HostConfig": {"Binds": ["/var/run/docker.sock:/var/run/docker.sock"],
            "Mounts": [{"Type": "bind", "Source": "/workspace", "Target": "/w"}]}});
        check_create(&mut body, None, &bounds()).expect("allowed");
        assert_eq!(
            body["HostConfig"]["Binds"][0],
            "/data/work/docker-ka1/docker.sock:/var/run/docker.sock"
        );
        assert_eq!(body["HostConfig"]["Mounts"][0]["Source"], "/data/work/kiln-ka1");
    }

    #[test]
    fn escapes_are_refused_with_what_was_wrong() {
        let cases = [
            (
                json!({"HostConfig": {"Privileged": true}}),
                "privileged containers are not allowed inside a run",
            ),
            (json!({"HostConfig": {"NetworkMode": "host"}}), "host network"),
            (json!({"HostConfig": {"PidMode": "host"}}), "host PID namespace"),
            (json!({"HostConfig": {"IpcMode": "host"}}), "host IPC namespace"),
            (json!({"HostConfig": {"UsernsMode": "host"}}), "host user namespace"),
            (json!({"HostConfig": {"CapAdd": ["SYS_ADMIN"]}}), "added capabilities"),
            (json!({"HostConfig": {"Devices": [{"PathOnHost": "/dev/sda"}]}}), "host devices"),
            (json!({"HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}}), "seccomp=unconfined"),
            (json!({"HostConfig": {"MaskedPaths": []}}), "systempaths=unconfined"),
            (
                json!({"HostConfig": {"Binds": ["/etc:/host-etc"]}}),
                "bind mounts of host paths are not allowed inside a run (/etc)",
            ),
            (json!({"HostConfig": {"Binds": ["/workspace/../../etc:/x"]}}), "uses '..'"),
            (
                json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/", "Target": "/host"}]}}),
                "bind mounts of host paths",
            ),
            (json!({"HostConfig": {"Runtime": "nvidia"}}), "nvidia runtime"),
            (json!({"HostConfig": {"LogConfig": {"Type": "gelf"}}}), "gelf log driver"),
            (
                json!({"HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v",
                    "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"device": "/etc"}}}}]}}),
                "volume driver options",
            ),
        ];
        for (mut body, expected) in cases {
            let message = check_create(&mut body, None, &bounds()).expect_err("refused").message;
            assert!(message.contains(expected), "{message} should say {expected}");
            assert!(message.starts_with("kiln: "), "{message}");
        }
        let message =
            check_create(&mut json!({}), Some("kiln-ka2-web-1"), &bounds()).unwrap_err().message;
        assert!(message.contains("kiln's own"), "{message}");
    }

    #[test]
    fn symlinks_out_of_the_workspace_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let workspace = root.path().canonicalize().expect("real").join("ws");
        std::fs::create_dir(&workspace).expect("mkdir");
        std::os::unix::fs::symlink("/etc", workspace.join("etc")).expect("symlink");
        std::fs::create_dir(workspace.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink("sub", workspace.join("inner")).expect("symlink");
        let bounds = Bounds { workspace: workspace.clone(), real_path, ..bounds() };
        let mut body = json!({"HostConfig": {"Binds": ["/workspace/etc:/x"]}});
        let message = check_create(&mut body, None, &bounds).expect_err("refused").message;
        assert!(message.contains("leads outside the run's workspace"), "{message}");
        // A link within the workspace is followed; a missing directory is made, as `-v` does.
        let mut body =
            json!({"HostConfig": {"Binds": ["/workspace/inner:/x", "/workspace/new/dir:/y"]}});
        check_create(&mut body, None, &bounds).expect("allowed");
        assert_eq!(
            body["HostConfig"]["Binds"][0],
            format!("{}:/x", workspace.join("sub").display())
        );
        assert!(workspace.join("new/dir").is_dir());
    }

    #[test]
    fn references_to_other_objects_are_returned_for_checking() {
        let mut body = json!({"HostConfig": {"NetworkMode": "container:db", "VolumesFrom": ["data:ro"],
            "Links": ["cache:c"], "Mounts": [{"Type": "volume", "Source": "vol1", "Target": "/v"}]},
            "NetworkingConfig": {"EndpointsConfig": {"mynet": {}, "bridge": {}}}});
        let needs = check_create(&mut body, None, &bounds()).expect("allowed");
        assert_eq!(needs.containers, vec!["db", "data", "cache"]);
        assert_eq!(needs.networks, vec!["mynet"]);
        assert_eq!(needs.volumes, vec!["vol1"]);
    }

    #[test]
    fn networks_and_volumes_are_labelled_and_their_drivers_checked() {
        let labels = bounds().labels;
        let mut network = json!({"Name": "n", "Driver": "bridge"});
        check_network_create(&mut network, &labels).expect("allowed");
        assert_eq!(network["Labels"]["kiln.run"], "ka1");
        let message =
            check_network_create(&mut json!({"Driver": "macvlan"}), &labels).unwrap_err().message;
        assert!(message.contains("macvlan network driver"), "{message}");
        let mut volume = json!({"Name": "v"});
        check_volume_create(&mut volume, &labels).expect("allowed");
        assert_eq!(volume["Labels"]["kiln.run"], "ka1");
        let bind_volume = json!({"DriverOpts": {"type": "none", "o": "bind", "device": "/etc"}});
        assert!(check_volume_create(&mut bind_volume.clone(), &labels).is_err());
        assert!(check_exec(&json!({"Privileged": true})).is_err());
        assert!(check_exec(&json!({"Cmd": ["ls"]})).is_ok());
    }

    #[test]
    fn lists_are_narrowed_to_the_run() {
        let narrowed = narrow_filters(None, "kiln.run=ka1");
        assert_eq!(
            serde_json::from_str::<Value>(&narrowed).unwrap(),
            json!({"label": ["kiln.run=ka1"]})
        );
        let narrowed =
            narrow_filters(Some(r#"{"status":["running"],"label":["a=b"]}"#), "kiln.run=ka1");
        assert_eq!(
            serde_json::from_str::<Value>(&narrowed).unwrap(),
            json!({"status": ["running"], "label": ["a=b", "kiln.run=ka1"]})
        );
        let narrowed = narrow_filters(Some(r#"{"label":{"a=b":true}}"#), "kiln.run=ka1");
        assert_eq!(
            serde_json::from_str::<Value>(&narrowed).unwrap(),
            json!({"label": {"a=b": true, "kiln.run=ka1": true}})
        );
    }
}
