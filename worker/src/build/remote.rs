//! Remote build contexts (§8.4): a Git repository or an HTTP(S) tarball named as the build's
//! context, downloaded into `<step working dir>/<step id>` before the build.
//!
//! ACR downloads there in its scanner container but then builds in `/workspace/<step id>`
//! (sharp edge 23); kiln downloads and builds in the same directory, so `workingDirectory` works.
//! The files stay in the run workspace for later steps, as in ACR.
//!
//! * Git (`https://…/repo.git`, Azure DevOps `…/_git/repo`, `git://…`, `github.com/o/r`, and
//!   `file://` for local mirrors and tests) with an optional `#<ref>:<subdir>` fragment: `ref` is
//!   a branch, tag, full or abbreviated commit, or a ref path such as `pull/7/head`; none means the
//!   remote's default branch. A named ref is fetched shallow (depth 1) with a full-fetch fallback
//!   (libgit2 cannot fetch shallow over `file://`, some servers refuse it). So is a full commit id
//!   that is a ref's tip, which is what a push names: webhook-triggered runs do not download the
//!   history. Another full commit id is asked for alone (servers that allow it send only that
//!   commit); failing that, and for abbreviated ids, the full history of the branches and tags is
//!   fetched, and if the commit is on none of them, of the other refs too (a pull request's
//!   commit from a fork is only under `refs/pull/<n>/head`). Submodules are checked out
//!   recursively. Credentials in the URL (`https://user:PAT@…`) are used for the fetch and masked
//!   in logs.
//! * Other `http(s)` URLs are tarballs: up to 3 attempts (backoff 250 ms × 2^n), then the
//!   download is unpacked by magic bytes — gzip, bzip2 or plain tar; xz and zstd are refused with a
//!   clear error, and so is anything that is not an archive (ACR silently leaves it unextracted).
//! * SSH git remotes (`git@host:org/repo.git`, `ssh://[user@]host[:port]/path`) use the
//!   identity given as [`GitSsh`], and only reach hosts whose key its `known_hosts` lists
//!   ([`super::known_hosts`]); without one the fetch says how to configure it.
//! * `oci://` artifacts are not supported and say so.
//!
//! Git and HTTP are blocking libraries, so the work runs on a blocking thread; dropping the
//! future (step timeout, cancellation) raises a flag that aborts the transfer at its next
//! progress callback or read.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kiln_plan::plan::GitSsh;
use kiln_plan::remote::Remote;
use kiln_plan::remote::{DetectError, redact, ssh_host};

use super::known_hosts::{self, KnownHosts, Verdict};
use crate::backoff;

const DOWNLOAD_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("cannot prepare {path} for the download: {source}")]
    Destination { path: PathBuf, source: io::Error },
    #[error("git fetch of {url} failed: {message}")]
    Git { url: String, message: String },
    #[error("git ref {reference:?} not found in {url}")]
    RefNotFound { url: String, reference: String },
    #[error("download of {url} failed after {attempts} attempt(s): {message}")]
    Download { url: String, attempts: u32, message: String },
    #[error("{url} is not a tar archive (gzip, bzip2 or plain tar): {detail}")]
    NotAnArchive { url: String, detail: String },
    #[error("extracting {url} failed: {source}")]
    Extract { url: String, source: io::Error },
    #[error("subdirectory {subdir:?} does not exist in {url}")]
    MissingSubdir { url: String, subdir: String },
    /// The download or its unpacked files passed the limit given to [`fetch`]; refused while
    /// downloading or unpacking, before the disk fills.
    #[error("{url} is larger than the limit of {limit_bytes} bytes")]
    TooLarge { url: String, limit_bytes: u64 },
    #[error("the download was cancelled")]
    Cancelled,
    #[error("the download task failed: {0}")]
    Task(String),
}

/// The downloaded context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The build context: the download directory plus the Git subdirectory.
    pub context_dir: PathBuf,
    /// The commit checked out, for Git contexts.
    pub commit: Option<String>,
}

/// Sets the flag when dropped, i.e. when the future awaiting the blocking work goes away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Downloads `remote` into `dest` (replaced if it exists: it is the step's own download
/// directory, and a retried step must not build from a half-written previous attempt).
/// `max_bytes` bounds a tarball's download and its unpacked files, checked as they are written
/// (a git checkout is libgit2's to write: its caller measures it afterwards).
pub async fn fetch(
    remote: &Remote,
    dest: &Path,
    ssh: Option<&GitSsh>,
    max_bytes: Option<u64>,
    log: &(dyn Fn(&[u8]) + Send + Sync),
) -> Result<Fetched, RemoteError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let remote_owned = remote.clone();
    let dest_owned = dest.to_path_buf();
    let ssh = ssh.cloned();
    let message = match remote {
        Remote::Git { url, reference, .. } => format!(
            "Fetching git repository {} ({})\n",
            redact(url),
            reference.as_deref().unwrap_or("default branch")
        ),
        Remote::Tarball { url } => format!("Downloading build context {}\n", redact(url)),
    };
    log(message.as_bytes());
    let result = tokio::task::spawn_blocking(move || {
        fetch_blocking(&remote_owned, &dest_owned, ssh.as_ref(), max_bytes, &cancel)
    })
    .await
    .map_err(|e| RemoteError::Task(e.to_string()))?;
    drop(guard);
    let fetched = result?;
    if let Some(commit) = &fetched.commit {
        log(format!("Checked out commit {commit}\n").as_bytes());
    }
    Ok(fetched)
}

fn fetch_blocking(
    remote: &Remote,
    dest: &Path,
    ssh: Option<&GitSsh>,
    max_bytes: Option<u64>,
    cancel: &AtomicBool,
) -> Result<Fetched, RemoteError> {
    let prepare = |path: &Path| {
        if path.exists() {
            fs::remove_dir_all(path)
                .map_err(|source| RemoteError::Destination { path: path.to_path_buf(), source })?;
        }
        fs::create_dir_all(path)
            .map_err(|source| RemoteError::Destination { path: path.to_path_buf(), source })
    };
    prepare(dest)?;
    match remote {
        Remote::Git { url, reference, subdir } => {
            let session = GitSession::new(ssh, cancel);
            let commit = git_fetch(url, reference.as_deref(), dest, &session)?;
            let context_dir = match subdir {
                Some(subdir) => {
                    let dir = dest.join(subdir);
                    if !dir.is_dir() {
                        return Err(RemoteError::MissingSubdir {
                            url: redact(url),
                            subdir: subdir.clone(),
                        });
                    }
                    dir
                }
                None => dest.to_path_buf(),
            };
            Ok(Fetched { context_dir, commit: Some(commit) })
        }
        Remote::Tarball { url } => {
            let mut download = dest.as_os_str().to_owned();
            download.push(".download");
            let download = PathBuf::from(download);
            let limit = Limit { url, max_bytes: max_bytes.unwrap_or(u64::MAX) };
            let result = download_with_retries(url, &download, limit, cancel)
                .and_then(|()| extract(url, &download, dest, limit));
            let _ = fs::remove_file(&download);
            result?;
            Ok(Fetched { context_dir: dest.to_path_buf(), commit: None })
        }
    }
}

// --- git -------------------------------------------------------------------------------------

/// What one git fetch (with its submodules) shares between its callbacks and its errors.
struct GitSession<'a> {
    ssh: Option<&'a GitSsh>,
    /// The identity's known_hosts, read once for all the fetch's connections.
    known_hosts: Option<KnownHosts>,
    cancel: &'a AtomicBool,
    /// Why the SSH host key was refused: libgit2 replaces the callback's message with its own
    /// ("invalid or unknown remote ssh hostkey"), which says nothing of what to do.
    refusal: Mutex<Option<String>>,
}

impl<'a> GitSession<'a> {
    fn new(ssh: Option<&'a GitSsh>, cancel: &'a AtomicBool) -> Self {
        let known_hosts = ssh.map(|ssh| KnownHosts::parse(&ssh.known_hosts));
        GitSession { ssh, known_hosts, cancel, refusal: Mutex::new(None) }
    }
}

fn git_error<'a>(
    url: &str,
    session: &'a GitSession<'_>,
) -> impl Fn(git2::Error) -> RemoteError + 'a {
    let url = redact(url);
    move |e| {
        // A callback returning false (the cancel flag) surfaces as a `User` error.
        if session.cancel.load(Ordering::Relaxed) || e.code() == git2::ErrorCode::User {
            return RemoteError::Cancelled;
        }
        let refusal = session.refusal.lock().unwrap_or_else(PoisonError::into_inner).take();
        let message = refusal.unwrap_or_else(|| e.message().to_string());
        RemoteError::Git { url: url.clone(), message }
    }
}

fn callbacks<'a>(url: &str, session: &'a GitSession<'_>) -> git2::RemoteCallbacks<'a> {
    let ssh = session.ssh;
    let (user, password) = url_credentials(url);
    let mut callbacks = git2::RemoteCallbacks::new();
    let (mut offered, mut offered_key) = (false, false);
    callbacks.credentials(move |_, ssh_user, allowed| {
        // Offer each credential once; libgit2 calls again after a rejection, and offering the
        // same one forever would loop.
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            let user = ssh_user.unwrap_or("git");
            return match (ssh, offered_key) {
                (Some(ssh), false) => {
                    offered_key = true;
                    git2::Cred::ssh_key_from_memory(user, None, &ssh.private_key, None)
                }
                (Some(_), true) => Err(git2::Error::from_str(&format!(
                    "the server's SSH key was refused for user {user}"
                ))),
                (None, _) => Err(git2::Error::from_str(NO_SSH_IDENTITY)),
            };
        }
        if allowed.contains(git2::CredentialType::USERNAME) {
            return git2::Cred::username(ssh_user.unwrap_or("git"));
        }
        match (&password, allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT), offered) {
            (Some(password), true, false) => {
                offered = true;
                git2::Cred::userpass_plaintext(user.as_deref().unwrap_or(""), password)
            }
            _ => Err(git2::Error::from_str("authentication required (no usable credentials)")),
        }
    });
    let host = ssh_host(url);
    callbacks.certificate_check(move |cert, _| {
        // TLS certificates keep libgit2's own verification; SSH host keys are checked here.
        let (Some(hostkey), Some((host, port))) = (cert.as_hostkey(), &host) else {
            return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
        };
        match check_host_key(hostkey, host, *port, session) {
            Ok(()) => Ok(git2::CertificateCheckStatus::CertificateOk),
            Err(message) => {
                let error = git2::Error::from_str(&message);
                *session.refusal.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
                Err(error)
            }
        }
    });
    callbacks.transfer_progress(move |_| !session.cancel.load(Ordering::Relaxed));
    callbacks
}

/// Why an SSH fetch without an identity stops, and what to configure.
const NO_SSH_IDENTITY: &str = "an SSH remote needs an SSH key: the task's (kiln task update \
     --ssh-key-file FILE) or the server's (kiln serve --git-ssh-key FILE [--git-known-hosts FILE])";

/// Accepts `hostkey` of `host` (on `port`) only if the identity's `known_hosts` lists it.
fn check_host_key(
    hostkey: &git2::cert::CertHostkey<'_>,
    host: &str,
    port: Option<u16>,
    session: &GitSession<'_>,
) -> Result<(), String> {
    let name = known_hosts::host_name(host, port);
    let (Some(key), Some(kind)) = (hostkey.hostkey(), hostkey.hostkey_type()) else {
        return Err(format!("the SSH server {name} sent no host key kiln can check"));
    };
    let shown = format!(
        "{} {}",
        kind.name(),
        hostkey.hash_sha256().map(|h| known_hosts::fingerprint(h)).unwrap_or_default()
    );
    let (Some(ssh), Some(known_hosts)) = (session.ssh, &session.known_hosts) else {
        return Err(format!("the host key of {name} ({shown}) was not checked: {NO_SSH_IDENTITY}"));
    };
    let file = &ssh.known_hosts_file;
    match known_hosts.check(&name, kind.name(), key) {
        Verdict::Known => Ok(()),
        Verdict::Unknown => {
            let keyscan = match port {
                Some(port) if port != 22 => format!("ssh-keyscan -p {port} {host}"),
                _ => format!("ssh-keyscan {host}"),
            };
            Err(format!(
                "the host key of {name} ({shown}) is not in {file}; if that is the server's \
                 key, add it: {keyscan} >> {file}"
            ))
        }
        Verdict::Mismatch => Err(format!(
            "the host key of {name} ({shown}) is not the one {file} lists for it: the server's \
             key changed, or something else answers in its name; the fetch was refused"
        )),
        Verdict::Revoked => Err(format!("the host key of {name} ({shown}) is revoked in {file}")),
    }
}

fn url_credentials(url: &str) -> (Option<String>, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else { return (None, None) };
    if scheme.eq_ignore_ascii_case("ssh") {
        // Only the key authenticates over SSH; the user part is the login name.
        return (None, None);
    }
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => match userinfo.split_once(':') {
            Some((user, password)) => (Some(user.to_string()), Some(password.to_string())),
            // A PAT given as the user part (ACR rewrites it to `dummy:<PAT>`).
            None => (Some("dummy".to_string()), Some(userinfo.to_string())),
        },
        None => (None, None),
    }
}

fn git_fetch(
    url: &str,
    reference: Option<&str>,
    dest: &Path,
    session: &GitSession<'_>,
) -> Result<String, RemoteError> {
    let err = git_error(url, session);
    let repo = git2::Repository::init(dest).map_err(&err)?;
    let commit = fetch_into(&repo, url, reference, session)?;
    repo.set_head_detached(commit).map_err(&err)?;
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force())).map_err(&err)?;
    update_submodules(&repo, session)?;
    Ok(commit.to_string())
}

/// Fetches what `reference` names into `repo` (remote `origin`) and returns its commit.
fn fetch_into(
    repo: &git2::Repository,
    url: &str,
    reference: Option<&str>,
    session: &GitSession<'_>,
) -> Result<git2::Oid, RemoteError> {
    let err = git_error(url, session);
    let mut remote = repo.remote("origin", url).map_err(&err)?;
    let (advertised, default_branch) = {
        let connection = remote
            .connect_auth(git2::Direction::Fetch, Some(callbacks(url, session)), None)
            .map_err(&err)?;
        let heads = connection.list().map_err(&err)?;
        let advertised: Vec<(String, git2::Oid)> =
            heads.iter().map(|h| (h.name().to_string(), h.oid())).collect();
        let default_branch =
            connection.default_branch().ok().and_then(|b| b.as_str().ok().map(str::to_string));
        (advertised, default_branch)
    };
    let wanted = match reference {
        None => Some(default_branch.unwrap_or_else(|| "HEAD".to_string())),
        Some(r) => [
            r.to_string(),
            format!("refs/heads/{r}"),
            format!("refs/tags/{r}"),
            format!("refs/{r}"),
        ]
        .into_iter()
        .find(|candidate| advertised.iter().any(|(a, _)| a == candidate))
        // A full commit id that is some ref's tip (a push's commit, unless the branch moved on
        // since) is fetched as that ref: shallow, from any server.
        .or_else(|| {
            let oid = git2::Oid::from_str(r).ok().filter(|_| r.len() == 40)?;
            advertised
                .iter()
                .find(|(name, tip)| *tip == oid && name != "HEAD")
                .map(|(n, _)| n.clone())
        }),
    };
    const FETCHED: &str = "refs/kiln/fetched";
    let fetch = |remote: &mut git2::Remote<'_>, refspecs: &[String], depth: Option<i32>| {
        let mut options = git2::FetchOptions::new();
        options.remote_callbacks(callbacks(url, session));
        // With tag auto-following on, libgit2 writes a fetched tag under its own name and
        // ignores the refspec's destination.
        options.download_tags(git2::AutotagOption::None);
        if let Some(depth) = depth {
            options.depth(depth);
        }
        remote.fetch(refspecs, Some(&mut options), None).map_err(&err)
    };
    if let Some(name) = wanted {
        let refspec = vec![format!("+{name}:{FETCHED}")];
        if let Err(shallow) = fetch(&mut remote, &refspec, Some(1)) {
            if matches!(shallow, RemoteError::Cancelled) {
                return Err(shallow);
            }
            fetch(&mut remote, &refspec, None)?;
        }
        let reference = repo.find_reference(FETCHED).map_err(&err)?;
        return Ok(reference.peel_to_commit().map_err(&err)?.id());
    }
    // Not a ref name: a (possibly abbreviated) commit, which may need the history.
    let reference = reference.unwrap_or_default();
    let is_hex =
        (4..=40).contains(&reference.len()) && reference.chars().all(|c| c.is_ascii_hexdigit());
    if !is_hex {
        return Err(RemoteError::RefNotFound { url: redact(url), reference: reference.into() });
    }
    let find = || {
        repo.revparse_single(reference).and_then(|object| object.peel_to_commit()).map(|c| c.id())
    };
    // A full commit id behind the tips: servers that allow it (GitHub, GitLab, git with
    // uploadpack.allowReachableSHA1InWant) send just that commit; others refuse it.
    if reference.len() == 40 {
        match fetch(&mut remote, &[format!("+{reference}:{FETCHED}")], Some(1)) {
            Err(RemoteError::Cancelled) => return Err(RemoteError::Cancelled),
            Ok(()) => {
                if let Ok(commit) = find() {
                    return Ok(commit);
                }
            }
            Err(_) => {}
        }
    }
    fetch(
        &mut remote,
        &[
            "+refs/heads/*:refs/remotes/origin/*".to_string(),
            "+refs/tags/*:refs/tags/*".to_string(),
        ],
        None,
    )?;
    if let Ok(commit) = find() {
        return Ok(commit);
    }
    // A pull or merge request's commit is on no branch when it comes from a fork: only
    // `refs/pull/<n>/head` (GitHub) or `refs/merge-requests/<n>/head` (GitLab) reach it, and
    // once the request moved on, only as an ancestor. So fetch the other refs too.
    if advertised.iter().any(|(a, _)| {
        a.starts_with("refs/") && !a.starts_with("refs/heads/") && !a.starts_with("refs/tags/")
    }) {
        fetch(&mut remote, &["+refs/*:refs/kiln/all/*".to_string()], None)?;
    }
    find().map_err(|_| RemoteError::RefNotFound { url: redact(url), reference: reference.into() })
}

fn update_submodules(repo: &git2::Repository, session: &GitSession<'_>) -> Result<(), RemoteError> {
    let workdir = repo.workdir().map(Path::display).map(|d| d.to_string()).unwrap_or_default();
    let err = git_error(&workdir, session);
    for mut submodule in repo.submodules().map_err(&err)? {
        let url = submodule.url().ok().flatten().unwrap_or_default().to_string();
        let mut fetch_options = git2::FetchOptions::new();
        fetch_options.remote_callbacks(callbacks(&url, session));
        let mut options = git2::SubmoduleUpdateOptions::new();
        options.fetch(fetch_options);
        submodule.update(true, Some(&mut options)).map_err(git_error(&url, session))?;
        let sub_repo = submodule.open().map_err(git_error(&url, session))?;
        update_submodules(&sub_repo, session)?;
    }
    Ok(())
}

// --- tarballs --------------------------------------------------------------------------------

/// A tarball's size bound: what the download and what its unpacked files may reach.
#[derive(Clone, Copy)]
struct Limit<'a> {
    url: &'a str,
    max_bytes: u64,
}

impl Limit<'_> {
    fn too_large(self) -> RemoteError {
        RemoteError::TooLarge { url: redact(self.url), limit_bytes: self.max_bytes }
    }

    fn check(self, total: u64) -> Result<(), RemoteError> {
        if total > self.max_bytes { Err(self.too_large()) } else { Ok(()) }
    }
}

fn download_with_retries(
    url: &str,
    to: &Path,
    limit: Limit<'_>,
    cancel: &AtomicBool,
) -> Result<(), RemoteError> {
    let agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match download_once(&agent, url, to, limit, cancel) {
            Ok(()) => return Ok(()),
            Err(Failure::Cancelled) => return Err(RemoteError::Cancelled),
            Err(Failure::Refused(e)) => return Err(e),
            Err(Failure::Permanent(message)) => {
                return Err(RemoteError::Download { url: redact(url), attempts: attempt, message });
            }
            Err(Failure::Transient(message)) if attempt >= DOWNLOAD_ATTEMPTS => {
                return Err(RemoteError::Download { url: redact(url), attempts: attempt, message });
            }
            Err(Failure::Transient(_)) => std::thread::sleep(backoff::delay(attempt - 1)),
        }
    }
}

enum Failure {
    /// A 4xx answer other than 408/429: asking again will not help.
    Permanent(String),
    Transient(String),
    Cancelled,
    /// Over the size limit: the same on every attempt.
    Refused(RemoteError),
}

fn download_once(
    agent: &ureq::Agent,
    url: &str,
    to: &Path,
    limit: Limit<'_>,
    cancel: &AtomicBool,
) -> Result<(), Failure> {
    let response = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code)
            if (400..500).contains(&code) && code != 408 && code != 429 =>
        {
            Failure::Permanent(format!("HTTP {code}"))
        }
        ureq::Error::StatusCode(code) => Failure::Transient(format!("HTTP {code}")),
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => Failure::Permanent(e.to_string()),
        other => Failure::Transient(other.to_string()),
    })?;
    let mut body = response.into_body().into_reader();
    let mut file = File::create(to).map_err(|e| Failure::Permanent(e.to_string()))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(Failure::Cancelled);
        }
        let n = body.read(&mut buf).map_err(|e| Failure::Transient(e.to_string()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        limit.check(total).map_err(Failure::Refused)?;
        file.write_all(&buf[..n]).map_err(|e| Failure::Permanent(e.to_string()))?;
    }
    file.sync_all().map_err(|e| Failure::Permanent(e.to_string()))
}

fn extract(url: &str, archive: &Path, dest: &Path, limit: Limit<'_>) -> Result<(), RemoteError> {
    let extract_err = |source| RemoteError::Extract { url: redact(url), source };
    let mut head = [0u8; 512];
    let mut file = File::open(archive).map_err(extract_err)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]).map_err(extract_err)? {
            0 => break,
            n => filled += n,
        }
    }
    let head = &head[..filled];
    let file = BufReader::new(File::open(archive).map_err(extract_err)?);
    let not_archive =
        |detail: &str| RemoteError::NotAnArchive { url: redact(url), detail: detail.into() };
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(file))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Err(not_archive("xz compression is not supported"));
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(not_archive("zstd compression is not supported"));
    } else if head.get(257..262) == Some(b"ustar") {
        Box::new(file)
    } else {
        return Err(not_archive("unrecognised content"));
    };
    // `unpack` refuses entries that would land outside `dest` (absolute paths, `..`, links).
    // The archive stream is counted as it is read: its size bounds the files written from it.
    let exceeded = std::cell::Cell::new(false);
    let counted = Counted { inner: reader, left: limit.max_bytes, exceeded: &exceeded };
    let mut tar = tar::Archive::new(counted);
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    match tar.unpack(dest) {
        Ok(()) => Ok(()),
        Err(_) if exceeded.get() => Err(limit.too_large()),
        Err(e) => Err(extract_err(e)),
    }
}

/// A reader that fails once more than `left` bytes came through it.
struct Counted<'a, R> {
    inner: R,
    left: u64,
    exceeded: &'a std::cell::Cell<bool>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.exceeded.set(true);
                Err(io::Error::other("the archive is larger than the limit"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_credentials_for_the_fetch() {
        assert_eq!(url_credentials("https://u:p@h/x"), (Some("u".into()), Some("p".into())));
        assert_eq!(url_credentials("https://pat@h/x"), (Some("dummy".into()), Some("pat".into())));
        assert_eq!(url_credentials("https://h/x"), (None, None));
        assert_eq!(url_credentials("ssh://git@h/r.git"), (None, None));
    }

    const NO_LIMIT: Limit<'static> = Limit { url: "u", max_bytes: u64::MAX };

    #[test]
    fn extraction_by_magic_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut plain = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut plain);
            let mut header = tar::Header::new_gnu();
            header.set_size(2);
            header.set_mode(0o644);
            builder.append_data(&mut header, "Dockerfile", &b"hi"[..]).unwrap();
            builder.finish().unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&plain).unwrap();
        let bz = bz.finish().unwrap();
        for (name, bytes) in [("plain", &plain), ("gz", &gz), ("bz", &bz)] {
            let archive = dir.path().join(name);
            fs::write(&archive, bytes).unwrap();
            let dest = dir.path().join(format!("{name}-out"));
            fs::create_dir(&dest).unwrap();
            extract("u", &archive, &dest, NO_LIMIT).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(fs::read(dest.join("Dockerfile")).unwrap(), b"hi", "{name}");
        }
        let archive = dir.path().join("text");
        fs::write(&archive, "FROM busybox\n").unwrap();
        assert!(matches!(
            extract("u", &archive, dir.path(), NO_LIMIT),
            Err(RemoteError::NotAnArchive { .. })
        ));
        fs::write(&archive, [0xfd, b'7', b'z', b'X', b'Z', 0x00, 1, 2]).unwrap();
        let err = extract("u", &archive, dir.path(), NO_LIMIT).unwrap_err();
        assert!(err.to_string().contains("xz"), "{err}");
    }

    #[test]
    fn extraction_stops_at_the_limit_before_writing_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut plain = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut plain);
            for (name, size) in [("small", 1024), ("big", 4 * 1024 * 1024)] {
                let mut header = tar::Header::new_gnu();
                header.set_size(size as u64);
                header.set_mode(0o644);
                builder.append_data(&mut header, name, &vec![0u8; size][..]).unwrap();
            }
            builder.finish().unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let archive = dir.path().join("bomb.tar.gz");
        fs::write(&archive, gz.finish().unwrap()).unwrap();
        assert!(fs::metadata(&archive).unwrap().len() < 64 * 1024, "a small archive");
        let dest = dir.path().join("out");
        fs::create_dir(&dest).unwrap();
        let limit = Limit { url: "https://user:secret@host/bomb.tar.gz", max_bytes: 1024 * 1024 };
        let err = extract(limit.url, &archive, &dest, limit).unwrap_err();
        assert!(matches!(err, RemoteError::TooLarge { limit_bytes: 1048576, .. }), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        let written = fs::metadata(dest.join("big")).map_or(0, |m| m.len());
        assert!(written <= 1024 * 1024, "{written} bytes written past the limit");
        // Under the limit the same archive unpacks whole.
        let dest = dir.path().join("whole");
        fs::create_dir(&dest).unwrap();
        extract("u", &archive, &dest, Limit { url: "u", max_bytes: 8 * 1024 * 1024 }).unwrap();
        assert_eq!(fs::metadata(dest.join("big")).unwrap().len(), 4 * 1024 * 1024);
    }
}

#[cfg(test)]
mod git_tests {
    use super::*;

    fn commit_all(repo: &git2::Repository, message: &str) -> git2::Oid {
        let mut index = repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents).unwrap()
    }

    #[test]
    fn fetch_refs_from_a_local_repository() {
        let origin = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(origin.path()).unwrap();
        fs::write(origin.path().join("f"), "1").unwrap();
        let c1 = commit_all(&repo, "one");
        repo.tag_lightweight("v1", &repo.find_object(c1, None).unwrap(), false).unwrap();
        fs::write(origin.path().join("f"), "2").unwrap();
        let c2 = commit_all(&repo, "two");
        // A pull-request head, as GitHub advertises it.
        fs::write(origin.path().join("f"), "3").unwrap();
        let pr = {
            let mut index = repo.index().unwrap();
            index.add_path(Path::new("f")).unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
            let head = repo.head().unwrap().peel_to_commit().unwrap();
            repo.commit(Some("refs/pull/7/head"), &sig, &sig, "pr", &tree, &[&head]).unwrap()
        };
        let url = format!("file://{}", origin.path().display());
        let cancel = AtomicBool::new(false);
        let session = GitSession::new(None, &cancel);
        let short = c1.to_string()[..8].to_string();
        // The pull request's commit is on no branch: only `refs/pull/7/head` reaches it.
        let pr_commit = pr.to_string();
        for (reference, want) in [
            (Some("v1"), c1),
            (None, c2),
            (Some(short.as_str()), c1),
            (Some("pull/7/head"), pr),
            (Some(pr_commit.as_str()), pr),
        ] {
            let dest = tempfile::tempdir().unwrap();
            let got = git_fetch(&url, reference, dest.path(), &session)
                .unwrap_or_else(|e| panic!("{reference:?}: {e}"));
            assert_eq!(got, want.to_string(), "{reference:?}");
        }
        let dest = tempfile::tempdir().unwrap();
        assert!(matches!(
            git_fetch(&url, Some("nope"), dest.path(), &session),
            Err(RemoteError::RefNotFound { .. })
        ));
        let cancelled = AtomicBool::new(true);
        let session = GitSession::new(None, &cancelled);
        assert!(matches!(
            git_fetch(&url, None, dest.path(), &session),
            Err(RemoteError::Cancelled)
        ));
    }

    #[test]
    fn submodules_are_checked_out() {
        let lib = tempfile::tempdir().unwrap();
        let lib_repo = git2::Repository::init(lib.path()).unwrap();
        fs::write(lib.path().join("lib.txt"), "library").unwrap();
        commit_all(&lib_repo, "lib");
        let lib_url = format!("file://{}", lib.path().display());

        let app = tempfile::tempdir().unwrap();
        let app_repo = git2::Repository::init(app.path()).unwrap();
        fs::write(app.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let mut submodule = app_repo.submodule(&lib_url, Path::new("libs/lib"), true).unwrap();
        submodule.clone(None).unwrap();
        submodule.add_finalize().unwrap();
        commit_all(&app_repo, "app");

        let dest = tempfile::tempdir().unwrap();
        let url = format!("file://{}", app.path().display());
        let cancel = AtomicBool::new(false);
        let session = GitSession::new(None, &cancel);
        git_fetch(&url, None, dest.path(), &session).unwrap();
        assert_eq!(fs::read_to_string(dest.path().join("libs/lib/lib.txt")).unwrap(), "library");
    }
}
