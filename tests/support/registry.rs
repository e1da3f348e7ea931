//! A private CNCF distribution registry (Debian's `docker-registry`, as `scripts/test-env.sh`
//! runs them) for end-to-end tests of registry push notifications: started on a free loopback
//! port with its own storage directory and one notification endpoint, killed on drop. Docker
//! treats every `127.0.0.0/8` registry as insecure (plain HTTP), so `docker push` reaches it
//! without daemon configuration.
#![allow(dead_code)] // each includer uses its own part

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `docker-registry serve` that POSTs its events to one endpoint.
pub struct NotifyingRegistry {
    /// `127.0.0.1:<port>`, the registry's name in image references.
    pub addr: String,
    child: Child,
    tempdir: tempfile::TempDir,
}

impl NotifyingRegistry {
    /// Starts a registry that sends every event to `endpoint_url` with the header
    /// `Authorization: <auth_header>` (2 s per delivery; after 3 failures in a row it backs off
    /// for 1 s and retries). Panics, with the registry's log, if it does not listen within 20 s.
    pub fn start(endpoint_url: &str, auth_header: &str) -> Self {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let config = tempdir.path().join("config.yml");
        let log_path = tempdir.path().join("registry.log");
        // The port is probed free, then bound by the registry: if something takes it in
        // between, the registry exits and the next attempt takes another port.
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port());
            let yaml =
                config_yaml(&tempdir.path().join("storage"), &addr, endpoint_url, auth_header);
            std::fs::write(&config, yaml).expect("registry config");
            let log = std::fs::File::create(&log_path).expect("registry log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("registry log"))
                .stderr(log)
                .spawn()
                .expect("docker-registry (Debian package docker-registry; scripts/test-env.sh)");
            if wait_listening(&mut child, &addr) {
                return NotifyingRegistry { addr, child, tempdir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("docker-registry did not listen within {START_TIMEOUT:?}; its log:\n{log}");
    }

    /// What the registry logged so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tempdir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for NotifyingRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registry's configuration: filesystem storage, plain HTTP on `addr`, one endpoint.
fn config_yaml(storage: &Path, addr: &str, endpoint_url: &str, auth_header: &str) -> String {
    // JSON strings are YAML double-quoted scalars, escapes included.
    let quoted = |s: &str| serde_json::to_string(s).expect("a string serializes");
    format!(
        "version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {addr}
notifications:
  endpoints:
    - name: kiln-test
      url: {url}
      headers:
        Authorization: [{auth}]
      timeout: 2s
      threshold: 3
      backoff: 1s
",
        storage = quoted(&storage.display().to_string()),
        addr = quoted(addr),
        url = quoted(endpoint_url),
        auth = quoted(auth_header),
    )
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Whether `child` accepts connections on `addr` within [`START_TIMEOUT`]; false as soon as it
/// exits.
fn wait_listening(child: &mut Child, addr: &str) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_millis(200))
            .is_ok()
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `docker push reference`, which must succeed; the digest it printed
/// (`<tag>: digest: sha256:… size: N`).
pub fn docker_push(reference: &str) -> String {
    let out = Command::new("docker").args(["push", reference]).output().expect("docker CLI");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "docker push {reference}:\n{text}");
    text.split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in the output of docker push {reference}:\n{text}"))
        .to_string()
}

/// `docker ARGS`, which must succeed.
pub fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
