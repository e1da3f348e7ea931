//! Real git repositories and servers for tests, on loopback only.
//!
//! * [`Repo`]: a working repository made with the `git` CLI in a tempdir, committing, branching
//!   and pushing to bare repositories (any ref, e.g. `refs/pull/1/head`).
//! * [`Root`]: a directory of bare repositories (`<name>.git`) that the servers serve.
//! * [`GitDaemon`]: `git daemon` on a free port (`git://127.0.0.1:P/<name>.git`).
//! * [`GitHttp`]: the smart HTTP protocol, `git http-backend` run as a CGI behind a small axum
//!   server, optionally behind Basic auth whose password must equal a token.
//! * [`SshServer`]: OpenSSH's `sshd` on a free port with its own host key, letting in one client
//!   key as the user running the tests (`ssh://<user>@127.0.0.1:P/<path>`).
//!
//! Every `git` runs with the machine's system and global configuration ignored, so the tests do
//! not depend on who runs them.
//!
//! Include with `#[path = "support/git.rs"] mod git;`.
#![allow(dead_code)] // each includer uses its own part

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;

/// A `git` command isolated from the machine's configuration and from any enclosing repository.
fn git_command() -> Command {
    let mut command = Command::new("git");
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    command
}

/// Runs `git args` in `dir` and returns its trimmed standard output; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_command().current_dir(dir).args(args).output().expect("the git CLI runs");
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output").trim().to_string()
}

/// A working repository on branch `main`, in its own tempdir.
pub struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    pub fn init() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        git(dir.path(), &["config", "user.name", "Kiln Test"]);
        git(dir.path(), &["config", "user.email", "kiln-test@example.invalid"]);
        Repo { dir }
    }

    /// Writes `content` to `path` (directories created), commits it, returns the commit's SHA.
    pub fn commit_file(&self, path: &str, content: &str, message: &str) -> String {
        let file = self.dir.path().join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("create directories");
        std::fs::write(&file, content).expect("write the file");
        git(self.dir.path(), &["add", "--", path]);
        self.commit(message)
    }

    /// Adds the repository at `url` as a submodule at `path` and commits it; returns the SHA.
    /// `file://` URLs are allowed (git refuses them for submodules by default since 2.38.1).
    pub fn add_submodule(&self, url: &str, path: &str, message: &str) -> String {
        git(
            self.dir.path(),
            &["-c", "protocol.file.allow=always", "submodule", "add", "-q", url, path],
        );
        self.commit(message)
    }

    fn commit(&self, message: &str) -> String {
        git(self.dir.path(), &["commit", "-q", "-m", message]);
        git(self.dir.path(), &["rev-parse", "HEAD"])
    }

    /// Creates branch `name` at the current commit, staying on the current branch.
    pub fn branch(&self, name: &str) {
        git(self.dir.path(), &["branch", name]);
    }

    /// Switches to branch (or commit) `name`.
    pub fn checkout(&self, name: &str) {
        git(self.dir.path(), &["checkout", "-q", name]);
    }

    /// Force-pushes `refspec` (e.g. `main`, `HEAD:refs/pull/1/head`) to the bare repository.
    pub fn push(&self, bare: &Path, refspec: &str) {
        let bare = bare.to_str().expect("UTF-8 path");
        git(self.dir.path(), &["push", "-q", "--force", bare, refspec]);
    }
}

/// A directory of bare repositories, `<root>/<name>.git`, as the servers serve them.
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        Root { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bare repository `name` (created on first use, default branch `main`).
    pub fn bare(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.git"));
        if !path.exists() {
            let path = path.to_str().expect("UTF-8 path");
            git(self.dir.path(), &["init", "-q", "--bare", "-b", "main", path]);
        }
        path
    }

    /// `file:///…/<name>.git`.
    pub fn file_url(&self, name: &str) -> String {
        format!("file://{}", self.dir.path().join(format!("{name}.git")).display())
    }
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// `git daemon` serving a [`Root`] read-only; killed on drop.
pub struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    pub fn start(root: &Path) -> GitDaemon {
        for _ in 0..5 {
            let port = free_port();
            let mut child = git_command()
                .args([
                    "daemon",
                    "--reuseaddr",
                    "--export-all",
                    "--informative-errors",
                    &format!("--base-path={}", root.display()),
                    "--listen=127.0.0.1",
                    &format!("--port={port}"),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("git daemon starts");
            if accepts_connections(&mut child, port) {
                return GitDaemon { child, port };
            }
            // The port was taken in between, most likely: try another.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("git daemon did not start on any of 5 ports");
    }

    /// `git://127.0.0.1:P/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}.git", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sshd` on 127.0.0.1 with a host key and an authorised client key of its own, made in its
/// tempdir; git runs over it as the user running the tests. Stopped on drop.
pub struct SshServer {
    child: Child,
    port: u16,
    user: String,
    dir: tempfile::TempDir,
}

impl SshServer {
    pub fn start() -> SshServer {
        let dir = tempfile::tempdir().expect("tempdir");
        for key in ["host_key", "client_key"] {
            keygen(&dir.path().join(key));
        }
        std::fs::copy(dir.path().join("client_key.pub"), dir.path().join("authorized_keys"))
            .expect("authorized_keys");
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let out = Command::new("id").arg("-un").output().expect("id");
        let user = String::from_utf8_lossy(&out.stdout).trim().to_string();
        for _ in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            let d = dir.path().display();
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPidFile none\nStrictModes no\n\
                     UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PermitRootLogin prohibit-password\nAllowUsers {user}\n"
                ),
            )
            .expect("sshd_config");
            let log = std::fs::File::create(dir.path().join("sshd.log")).expect("sshd log");
            let mut child = Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("sshd starts (apt-get install openssh-server)");
            if accepts_connections(&mut child, port) {
                return SshServer { child, port, user, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
        panic!("sshd did not start on any of 5 ports; its last words:\n{log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ssh://<user>@127.0.0.1:P<path>` for a repository at the absolute `path`.
    pub fn url(&self, path: &Path) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", self.user, self.port, path.display())
    }

    /// The authorised client's private key file.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The `known_hosts` line of this server's host key.
    pub fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.path().join("host_key.pub")).expect("key");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().expect("type"), fields.next().expect("key"));
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// The host key's fingerprint as `ssh-keygen -l` prints it (`SHA256:…`).
    pub fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.path().join("host_key.pub"))
            .output()
            .expect("ssh-keygen -l");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace().nth(1).expect("a fingerprint").to_string()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new ed25519 key pair without a passphrase: `path` and `path.pub`.
pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(status.success(), "ssh-keygen {}", path.display());
}

/// Readiness polling: connection attempts until `port` accepts one (true), the daemon exits or
/// 10 s pass (false).
fn accepts_connections(child: &mut Child, port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().expect("daemon status").is_some() {
            return false;
        }
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return true;
        }
        // Pace the attempts: a refused connection returns at once.
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

struct HttpState {
    root: PathBuf,
    token: Option<String>,
    requests: AtomicUsize,
    rejected: AtomicUsize,
}

/// Smart HTTP over `git http-backend` (CGI) on 127.0.0.1, in a runtime of its own; with a token,
/// every request needs Basic auth whose password is the token. Stopped on drop.
pub struct GitHttp {
    port: u16,
    state: Arc<HttpState>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl GitHttp {
    pub fn start(root: &Path, token: Option<&str>) -> GitHttp {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("git-http")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        listener.set_nonblocking(true).expect("non-blocking listener");
        let state = Arc::new(HttpState {
            root: root.to_path_buf(),
            token: token.map(str::to_string),
            requests: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
        });
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = {
            let _context = runtime.enter();
            tokio::net::TcpListener::from_std(listener).expect("tokio listener")
        };
        // The socket is listening already: connections wait in its backlog until this runs.
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        GitHttp { port, state, runtime: Some(runtime) }
    }

    /// `http://127.0.0.1:P/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}.git", self.port)
    }

    /// `http://<user>:<token>@127.0.0.1:P/<name>.git`.
    pub fn url_with_token(&self, name: &str, user: &str, token: &str) -> String {
        format!("http://{user}:{token}@127.0.0.1:{}/{name}.git", self.port)
    }

    /// Requests received, including refused ones.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests refused with 401.
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::SeqCst)
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The Basic auth user name if the request's password is `token`.
fn authorized_user(headers: &HeaderMap, token: &str) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (password == token).then(|| user.to_string())
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_string()));
    *response.status_mut() = status;
    response
}

async fn handle(State(state): State<Arc<HttpState>>, request: Request) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let remote_user = match &state.token {
        Some(token) => match authorized_user(request.headers(), token) {
            Some(user) => Some(user),
            None => {
                state.rejected.fetch_add(1, Ordering::SeqCst);
                let mut response = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"git\""),
                );
                return response;
            }
        },
        None => None,
    };
    let (parts, body) = request.into_parts();
    let header_text = |name: HeaderName| {
        parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    };
    // hyper has undone any chunked transfer encoding: the CGI gets the body and its length.
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return plain(StatusCode::BAD_REQUEST, "unreadable request body\n");
    };
    let mut env = vec![
        ("GIT_PROJECT_ROOT".to_string(), state.root.display().to_string()),
        ("GIT_HTTP_EXPORT_ALL".to_string(), "1".to_string()),
        ("GATEWAY_INTERFACE".to_string(), "CGI/1.1".to_string()),
        ("SERVER_PROTOCOL".to_string(), "HTTP/1.1".to_string()),
        ("REMOTE_ADDR".to_string(), "127.0.0.1".to_string()),
        ("REQUEST_METHOD".to_string(), parts.method.to_string()),
        ("PATH_INFO".to_string(), parts.uri.path().to_string()),
        ("QUERY_STRING".to_string(), parts.uri.query().unwrap_or_default().to_string()),
        ("CONTENT_TYPE".to_string(), header_text(header::CONTENT_TYPE)),
        ("CONTENT_LENGTH".to_string(), body.len().to_string()),
        ("HTTP_CONTENT_ENCODING".to_string(), header_text(header::CONTENT_ENCODING)),
        ("HTTP_GIT_PROTOCOL".to_string(), header_text(HeaderName::from_static("git-protocol"))),
    ];
    if let Some(user) = remote_user {
        env.push(("REMOTE_USER".to_string(), user));
    }
    match tokio::task::spawn_blocking(move || run_cgi(env, body)).await {
        Ok(Ok(output)) => cgi_response(&output),
        Ok(Err(e)) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("http-backend: {e}\n")),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("http-backend: {e}\n")),
    }
}

/// Runs `git http-backend` with the CGI environment and request body; returns its output.
fn run_cgi(env: Vec<(String, String)>, body: Bytes) -> std::io::Result<Vec<u8>> {
    let mut child = git_command()
        .arg("http-backend")
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written from another thread: the backend may answer before it has read everything.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let output = child.wait_with_output()?;
    let _ = writer.join();
    Ok(output.stdout)
}

/// The HTTP response for a CGI output: header lines (`Status:` gives the code), a blank line,
/// the body.
fn cgi_response(output: &[u8]) -> Response {
    let (head, body) = match find(output, b"\r\n\r\n") {
        Some(i) => (&output[..i], &output[i + 4..]),
        None => match find(output, b"\n\n") {
            Some(i) => (&output[..i], &output[i + 2..]),
            None => return plain(StatusCode::BAD_GATEWAY, "malformed CGI response\n"),
        },
    };
    let mut response = Response::new(Body::from(body.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok());
            *response.status_mut() =
                code.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(name), Ok(value)) =
            (HeaderName::try_from(name.trim()), HeaderValue::try_from(value))
        {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
