//! `build` steps: `docker build` through the Engine API's classic builder.
//!
//! ACR runs the `docker` CLI in a container for this (§2.1, §8.3) with BuildKit forced off; kiln
//! does what that CLI does, itself: parse the build arguments ([`args`]), fetch a remote context
//! ([`remote`]), tar the context honouring `.dockerignore` ([`dockerignore`], [`context`]),
//! stream it to `POST /build` with the run's registry credentials for `FROM` pulls, stream the
//! builder's output to the step log, tag the image with every `-t`, and describe what the image
//! was built from ([`scan`], `kiln_plan::report`). A `cache: enabled` step also pulls and pushes
//! a registry cache image ([`cache`]). The classic builder is used for the reason ACR uses it:
//! BuildKit images are not in the engine's image store with base-image digests to look up.
//!
//! Paths in the build string are confined to the run workspace: the context and `-f` are
//! relative to the step's working directory, `/workspace/…` (ACR's mount point of the shared
//! volume) maps to the workspace, and anything resolving outside it — `..`, other absolute paths,
//! symbolic links leading out — is refused, since the worker reads them on the host.

pub mod args;
pub mod cache;
pub mod context;
pub mod dockerignore;
pub mod known_hosts;
pub mod remote;
pub mod scan;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::BuildImageOptions;
use futures_util::StreamExt;
use kiln_plan::image_ref::ImageRef;
use kiln_plan::plan::{EnvVar, GitSsh, RegistryCredential};
use kiln_plan::report::{Dependency, DigestKind, GitReference, ImageReference};

use crate::auth;
use crate::push::engine_message;

/// Where ACR mounts the shared run volume; absolute paths under it name workspace paths.
const ACR_WORKSPACE: &str = "/workspace";

/// One build step, as the run executes it.
pub struct BuildRequest<'a> {
    pub step_id: &'a str,
    /// The `docker build` arguments, split shell-style.
    pub args: &'a [String],
    /// The step environment (values for bare `--build-arg NAME`).
    pub env: &'a [EnvVar],
    /// Host path of the step's working directory inside the run workspace.
    pub working_dir: &'a Path,
    /// Host path of the run workspace (the shared volume).
    pub workspace: &'a Path,
    pub credentials: &'a [RegistryCredential],
    /// The identity for an SSH git context.
    pub git_ssh: Option<&'a GitSsh>,
    /// The plan's [`kiln_plan::plan::Plan::context_limit`].
    pub context_limit: Option<u64>,
    /// The run's platform, built for when the build string names no `--platform`.
    pub platform: Option<&'a str>,
    /// `Some` for a `cache: enabled` step.
    pub cache: Option<cache::Scope<'a>>,
}

/// What a successful build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    /// The `-t` references, `:latest` added where they have no tag.
    pub images: Vec<String>,
    /// `sha256:…` image id (the first platform's, for a multi-platform build).
    pub image_id: String,
    /// The platforms of a multi-platform build (`--platform a,b`): `images` were not tagged
    /// locally but each platform's image as [`crate::index::platform_tag`]. Empty otherwise.
    pub platforms: Vec<String>,
    /// One entry per image (one with `image: None` for an untagged build); image digests are
    /// empty until pushed (see [`crate::push::fill_pushed_digests`]).
    pub dependencies: Vec<Dependency>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Args(#[from] args::ArgsError),
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid step id {0:?} for a remote context download directory")]
    StepId(String),
    #[error(transparent)]
    Remote(#[from] remote::RemoteError),
    #[error("{what} {path} not found: {source}")]
    NotFound { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{what} {path} is outside the run workspace")]
    OutsideWorkspace { what: &'static str, path: PathBuf },
    #[error(transparent)]
    Context(#[from] context::ContextError),
    /// The builder reported an error (a failing `RUN`, a missing base image, …).
    #[error("{message}")]
    Failed { message: String },
    #[error("the Docker engine failed the build request: {message}")]
    Engine { message: String },
    #[error("the build finished without reporting an image id")]
    NoImageId,
    #[error(
        "the engine built an image of another platform than {platform}; can this agent run {platform} (natively or emulated)?"
    )]
    Platform { platform: String },
    #[error("tagging the image as {image} failed: {message}")]
    Tag { image: String, message: String },
}

/// Runs a build step. Output goes to `log` as the builder produces it.
pub async fn run(
    docker: &Docker,
    req: &BuildRequest<'_>,
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<BuildOutcome, BuildError> {
    let args = args::parse(req.args, req.env)?;
    for note in &args.ignored {
        log(format!("Note: {note}\n").as_bytes());
    }
    if req.env.iter().any(|e| e.name == "DOCKER_BUILDKIT" && e.value == "1") {
        log(b"Note: DOCKER_BUILDKIT=1 ignored: kiln builds with the classic builder\n");
    }
    if args.add_hosts.len() > 1 {
        return Err(BuildError::Unsupported(
            "only one --add-host per build is supported (the engine client sends a single value)"
                .to_string(),
        ));
    }

    let (context_dir, dockerfile, commit) =
        match kiln_plan::remote::detect(&args.context).map_err(remote::RemoteError::from)? {
            Some(remote) => {
                let dest = download_dir(req)?;
                let fetched =
                    remote::fetch(&remote, &dest, req.git_ssh, req.context_limit, log).await?;
                let dockerfile = match &args.dockerfile {
                    Some(file) => resolve(req.workspace, &fetched.context_dir, file),
                    None => fetched.context_dir.join("Dockerfile"),
                };
                (fetched.context_dir, dockerfile, fetched.commit)
            }
            None => {
                let context_dir = resolve(req.workspace, req.working_dir, &args.context);
                let dockerfile = match &args.dockerfile {
                    Some(file) => resolve(req.workspace, req.working_dir, file),
                    None => context_dir.join("Dockerfile"),
                };
                let commit = local_git_head(&context_dir, req.workspace);
                (context_dir, dockerfile, commit)
            }
        };
    let context_dir = confine(req.workspace, &context_dir, "build context")?;
    let dockerfile = confine(req.workspace, &dockerfile, "Dockerfile")?;
    let prepared = context::prepare(&context_dir, &dockerfile)?;

    let dockerfile_text = fs::read(&dockerfile).map_err(|source| BuildError::NotFound {
        what: "Dockerfile",
        path: dockerfile.clone(),
        source,
    })?;
    let scanned = scan::scan(
        &String::from_utf8_lossy(&dockerfile_text),
        &args.build_args,
        args.target.as_deref(),
    );
    for warning in &scanned.warnings {
        log(format!("Warning: dependency scan: {warning}\n").as_bytes());
    }

    let cache_ref = match &req.cache {
        Some(scope) => match scope.reference(&args.tags, req.step_id) {
            Ok(reference) => {
                cache::pull(docker, &reference, req.credentials, log).await;
                Some(reference)
            }
            Err(e) => {
                log(format!("Warning: building without the build cache: {e}\n").as_bytes());
                None
            }
        },
        None => None,
    };
    // The cache goes in even when its pull failed: the engine skips a `cachefrom` image it does
    // not have, and uses one an earlier run on this engine left.
    let cache_from: Vec<String> =
        args.cache_from.iter().cloned().chain(cache_ref.iter().map(ToString::to_string)).collect();

    // Only the build's own `--label`s: anything kiln added would become part of the image
    // config (a new image ID per run, kiln's details in published images, an extra step).
    let labels: HashMap<String, String> = args.labels.clone().into_iter().collect();
    let options = BuildImageOptions {
        dockerfile: prepared.dockerfile_param().to_string(),
        extrahosts: args.add_hosts.first().cloned(),
        q: args.quiet,
        nocache: args.no_cache,
        cachefrom: (!cache_from.is_empty()).then_some(cache_from),
        pull: args.pull.then(|| "1".to_string()),
        rm: args.rm,
        // Docker keeps the container of a failed step unless --force-rm; on a shared worker
        // engine those would pile up, so kiln removes them whenever --rm is in force.
        forcerm: args.force_rm || args.rm,
        buildargs: (!args.build_args.is_empty())
            .then(|| args.build_args.clone().into_iter().collect()),
        labels: (!labels.is_empty()).then_some(labels),
        networkmode: args.network.clone(),
        target: args.target.clone().unwrap_or_default(),
        ..BuildImageOptions::default()
    };

    let platform = args.platform.as_deref().or(req.platform).unwrap_or_default();
    let platforms: Vec<&str> = platform.split(',').map(str::trim).collect();
    let mut tagged = Vec::with_capacity(args.tags.len());
    for tag in &args.tags {
        tagged.push(
            ImageRef::parse(tag)
                .map_err(|e| BuildError::Tag { image: tag.clone(), message: e.to_string() })?,
        );
    }
    let images: Vec<String> = tagged.iter().map(ImageRef::with_default_tag).collect();
    let (image_id, multi_platform) = if platforms.len() > 1 {
        // `--platform a,b` (buildx's form): one classic build per platform, each tagged
        // `<tag>-<os>-<arch>`; the push step puts them together as one manifest list.
        let mut first = None;
        for platform in &platforms {
            log(format!("Building for {platform}\n").as_bytes());
            let options = BuildImageOptions { platform: platform.to_string(), ..options.clone() };
            let prepared = context::prepare(&context_dir, &dockerfile)?;
            let mut id =
                build_once(docker, options.clone(), prepared, req.credentials, log).await?;
            // The classic builder's cache does not key on the platform: steps on a base the
            // platforms share (`FROM scratch`) can come back as another platform's image.
            if !built_for(docker, &id, platform).await {
                log(format!(
                    "Note: the build cache held another platform's image; building {platform} without it\n"
                )
                .as_bytes());
                let prepared = context::prepare(&context_dir, &dockerfile)?;
                let options = BuildImageOptions { nocache: true, ..options };
                id = build_once(docker, options, prepared, req.credentials, log).await?;
                if !built_for(docker, &id, platform).await {
                    return Err(BuildError::Platform { platform: platform.to_string() });
                }
            }
            for parsed in &tagged {
                tag(docker, &id, &crate::index::platform_tag(parsed, platform), log).await?;
            }
            first.get_or_insert(id);
        }
        let platforms = platforms.iter().map(ToString::to_string).collect();
        (first.ok_or(BuildError::NoImageId)?, platforms)
    } else {
        let options = BuildImageOptions { platform: platform.to_string(), ..options };
        let id = build_once(docker, options, prepared, req.credentials, log).await?;
        for image in &images {
            tag(docker, &id, image, log).await?;
        }
        (id, Vec::new())
    };

    // Not among `images` or `tagged`: the cache is no output of the run.
    if let Some(reference) = &cache_ref {
        cache::push(docker, &image_id, reference, req.credentials, log).await;
    }

    // A multi-platform build's bases are reported as the lists it built on.
    let single = (multi_platform.is_empty() && !platform.is_empty()).then_some(platform);
    let bases = Bases { docker, platform: single, credentials: req.credentials };
    let dependencies = dependencies(&bases, &tagged, &scanned, commit, log).await;
    Ok(BuildOutcome { images, image_id, platforms: multi_platform, dependencies })
}

/// Whether image `id` is of `platform` (`os/arch[/variant]`; a variant the engine left out
/// counts as matching).
async fn built_for(docker: &Docker, id: &str, platform: &str) -> bool {
    let Ok(image) = docker.inspect_image(id).await else { return false };
    let mut wanted = platform.split('/');
    let matches = |want: Option<&str>, have: Option<&str>| match (want, have) {
        (Some(want), Some(have)) if !have.is_empty() => want == have,
        _ => true,
    };
    wanted.next() == image.os.as_deref()
        && wanted.next() == image.architecture.as_deref()
        && matches(wanted.next(), image.variant.as_deref())
}

/// One classic build of `prepared` with `options`; returns the image ID.
async fn build_once(
    docker: &Docker,
    options: BuildImageOptions,
    prepared: context::PreparedContext,
    credentials: &[RegistryCredential],
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<String, BuildError> {
    let (body, upload) = context::stream(prepared);
    let image_id = {
        let stream = docker.build_image(
            options,
            Some(auth::registry_config(credentials)),
            Some(bollard::body_try_stream(body)),
        );
        follow_build(stream, log).await
    };
    match (image_id, upload.finish().await) {
        (Ok(id), _) => Ok(id),
        // The context could not be sent: that, not the engine's view of a broken body, is
        // what the user must fix.
        (Err(_), Err(context)) if !context.is_disconnect() => Err(context.into()),
        (Err(build), _) => Err(build),
    }
}

/// Tags `id` as `image` (`repo:tag`).
async fn tag(
    docker: &Docker,
    id: &str,
    image: &str,
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<(), BuildError> {
    let failed = |message: String| BuildError::Tag { image: image.to_string(), message };
    let parsed = ImageRef::parse(image).map_err(|e| failed(e.to_string()))?;
    crate::image::tag(docker, id, &parsed).await.map_err(failed)?;
    log(format!("Successfully tagged {image}\n").as_bytes());
    Ok(())
}

/// Streams the builder's output to `log`; returns the image id.
async fn follow_build(
    mut stream: impl futures_util::Stream<
        Item = Result<bollard::models::BuildInfo, bollard::errors::Error>,
    > + Unpin,
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<String, BuildError> {
    let mut image_id = None;
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(BuildError::Failed { message: error });
            }
            Err(other) => return Err(BuildError::Engine { message: engine_message(other) }),
        };
        if let Some(text) = &info.stream {
            log(text.as_bytes());
        }
        if let Some(status) = &info.status {
            // Base-image pulls: one line per state change, not per byte-progress event.
            let progress = info.progress_detail.as_ref().is_some_and(|p| p.current.is_some());
            if !progress {
                let line = match &info.id {
                    Some(id) => format!("{id}: {status}\n"),
                    None => format!("{status}\n"),
                };
                log(line.as_bytes());
            }
        }
        if let Some(id) = info.aux.and_then(|aux| aux.id) {
            image_id = Some(id);
        }
    }
    // The classic builder reports the image id as `{"aux":{"ID":…}}` (API 1.30 and later).
    image_id.ok_or(BuildError::NoImageId)
}

/// Where the report's base image digests come from.
struct Bases<'a> {
    docker: &'a Docker,
    /// The platform built, whose entry of a multi-platform base is reported.
    platform: Option<&'a str>,
    credentials: &'a [RegistryCredential],
}

async fn dependencies(
    bases: &Bases<'_>,
    tagged: &[ImageRef],
    scanned: &scan::Scan,
    commit: Option<String>,
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Vec<Dependency> {
    let runtime = match &scanned.runtime {
        Some(image) => Some(with_digest(bases, image, log).await),
        None => None,
    };
    let mut buildtime = Vec::with_capacity(scanned.buildtime.len());
    for image in &scanned.buildtime {
        buildtime.push(with_digest(bases, image, log).await);
    }
    let git = Some(GitReference { head_revision: commit.unwrap_or_default() });
    let entry = |image: Option<ImageReference>| Dependency {
        image,
        runtime: runtime.clone(),
        buildtime: buildtime.clone(),
        git: git.clone(),
    };
    if tagged.is_empty() {
        vec![entry(None)]
    } else {
        tagged.iter().map(|t| entry(Some(ImageReference::from_ref(t)))).collect()
    }
}

/// The report entry for a base image, with the registry digest the engine recorded when it
/// pulled it (`RepoDigests`), or for an image that never came from that registry (built or
/// tagged locally) its image ID; empty only when the engine does not have it. A registry
/// digest of a multi-platform list is the built platform's entry of it, as the base-image
/// triggers watch it; when the registry cannot tell, the report keeps the list and says so.
async fn with_digest(
    bases: &Bases<'_>,
    image: &ImageRef,
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> ImageReference {
    let mut reference = with_local_digest(bases.docker, image).await;
    if let (Some(platform), Some(DigestKind::RepoDigest)) = (bases.platform, reference.digest_kind)
    {
        let mut pulled = image.clone();
        pulled.digest = Some(reference.digest.clone());
        match crate::index::platform_entry(&pulled, platform, bases.credentials).await {
            Ok(Some(entry)) => reference.set_digest(entry, DigestKind::RepoDigest),
            Ok(None) => {}
            Err(e) => log(format!(
                "Warning: the dependency report names {pulled} as the engine pulled it: {e}\n"
            )
            .as_bytes()),
        }
    }
    reference
}

async fn with_local_digest(docker: &Docker, image: &ImageRef) -> ImageReference {
    let mut reference = ImageReference::from_ref(image);
    if reference.digest.is_empty()
        && let Ok(inspect) = docker.inspect_image(&image.to_string()).await
    {
        let repo_digest = inspect
            .repo_digests
            .unwrap_or_default()
            .iter()
            .filter_map(|d| ImageRef::parse(d).ok())
            .find(|d| d.same_repository(image))
            .and_then(|d| d.digest);
        match (repo_digest, inspect.id) {
            (Some(digest), _) => reference.set_digest(digest, DigestKind::RepoDigest),
            (None, Some(id)) => reference.set_digest(id, DigestKind::ImageId),
            (None, None) => {}
        }
    }
    reference
}

/// `<working dir>/<step id>`, where a remote context is downloaded.
fn download_dir(req: &BuildRequest<'_>) -> Result<PathBuf, BuildError> {
    let id = req.step_id;
    let mut components = Path::new(id).components();
    match (components.next(), components.next()) {
        (Some(std::path::Component::Normal(_)), None) => Ok(req.working_dir.join(id)),
        _ => Err(BuildError::StepId(id.to_string())),
    }
}

/// A build-string path on the host: `/workspace/…` is the workspace, other paths are relative to
/// `base`.
fn resolve(workspace: &Path, base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    match path.strip_prefix(ACR_WORKSPACE) {
        Ok(rest) => workspace.join(rest),
        Err(_) => base.join(path),
    }
}

/// The canonical form of `path`, which must exist inside the workspace.
fn confine(workspace: &Path, path: &Path, what: &'static str) -> Result<PathBuf, BuildError> {
    let canonical = fs::canonicalize(path).map_err(|source| BuildError::NotFound {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let root = fs::canonicalize(workspace).map_err(|source| BuildError::NotFound {
        what: "run workspace",
        path: workspace.to_path_buf(),
        source,
    })?;
    if canonical.starts_with(&root) {
        Ok(canonical)
    } else {
        Err(BuildError::OutsideWorkspace { what, path: path.to_path_buf() })
    }
}

/// The commit a local context is checked out at, when it lies in a Git work tree inside the
/// workspace (a source-triggered run's checkout).
fn local_git_head(context_dir: &Path, workspace: &Path) -> Option<String> {
    let ceiling = workspace.parent()?;
    let repo = git2::Repository::open_ext(
        context_dir,
        git2::RepositoryOpenFlags::empty(),
        std::iter::once(ceiling),
    )
    .ok()?;
    let commit = repo.head().ok()?.peel_to_commit().ok()?;
    Some(commit.id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_and_stay_in_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let wd = ws.join("app");
        fs::create_dir_all(wd.join("ctx")).unwrap();
        fs::create_dir_all(dir.path().join("outside")).unwrap();
        assert_eq!(resolve(&ws, &wd, "ctx"), wd.join("ctx"));
        assert_eq!(resolve(&ws, &wd, "/workspace/app/ctx"), ws.join("app/ctx"));
        assert_eq!(resolve(&ws, &wd, "/etc"), PathBuf::from("/etc"));
        assert!(confine(&ws, &resolve(&ws, &wd, "ctx"), "build context").is_ok());
        assert!(confine(&ws, &resolve(&ws, &wd, "."), "build context").is_ok());
        for outside in ["../../outside", "/etc", "/workspace/../outside"] {
            let err = confine(&ws, &resolve(&ws, &wd, outside), "build context").unwrap_err();
            assert!(matches!(err, BuildError::OutsideWorkspace { .. }), "{outside}: {err}");
        }
        std::os::unix::fs::symlink(dir.path().join("outside"), wd.join("escape")).unwrap();
        assert!(matches!(
            confine(&ws, &resolve(&ws, &wd, "escape"), "build context"),
            Err(BuildError::OutsideWorkspace { .. })
        ));
        assert!(matches!(
            confine(&ws, &resolve(&ws, &wd, "missing"), "build context"),
            Err(BuildError::NotFound { .. })
        ));
    }

    #[test]
    fn download_dir_needs_a_plain_step_id() {
        let req = |step_id| BuildRequest {
            step_id,
            args: &[],
            env: &[],
            working_dir: Path::new("/w/app"),
            workspace: Path::new("/w"),
            credentials: &[],
            git_ssh: None,
            context_limit: None,
            platform: None,
            cache: None,
        };
        assert_eq!(download_dir(&req("build")).unwrap(), PathBuf::from("/w/app/build"));
        for bad in ["", "..", "a/b", "/abs", "."] {
            assert!(matches!(download_dir(&req(bad)), Err(BuildError::StepId(_))), "{bad:?}");
        }
    }

    #[test]
    fn git_head_of_a_local_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        fs::create_dir_all(ws.join("sub")).unwrap();
        assert_eq!(local_git_head(&ws.join("sub"), &ws), None);
        let repo = git2::Repository::init(&ws).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let tree = repo.find_tree(repo.index().unwrap().write_tree().unwrap()).unwrap();
        let oid = repo.commit(Some("HEAD"), &sig, &sig, "init", &tree, &[]).unwrap();
        assert_eq!(local_git_head(&ws.join("sub"), &ws), Some(oid.to_string()));
    }
}
