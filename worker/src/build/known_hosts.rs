//! Host-key checking for SSH git remotes against an OpenSSH `known_hosts` file.
//!
//! A fetch over SSH is only as trustworthy as the host key it accepted, so kiln never accepts an
//! unknown key (CI systems that set `StrictHostKeyChecking=no` trust whoever answers). The file
//! is read the way `ssh` reads it: host patterns (`host`, `[host]:port`, lists, `*`/`?`
//! wildcards, `!negation`), hashed names (`|1|salt|hash`, Debian's default), and `@revoked`
//! lines. `@cert-authority` lines are not used: a host certificate is not checked here.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The entries of a `known_hosts` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    revoked: bool,
    hosts: Hosts,
    key_type: String,
    key: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hosts {
    Patterns(Vec<String>),
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

/// What the file says of a host's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Known,
    /// No line for this host and key type.
    Unknown,
    /// The host has a line for this key type with another key: possibly an impostor.
    Mismatch,
    Revoked,
}

/// The name `known_hosts` uses for `host` on `port`: `host` on 22, else `[host]:port`.
pub fn host_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(port) if port != 22 => format!("[{host}]:{port}"),
        _ => host.to_string(),
    }
}

/// `SHA256:<base64>`, as `ssh-keygen -l` prints a key's fingerprint.
pub fn fingerprint(sha256: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(sha256))
}

impl KnownHosts {
    /// Reads the file's text; lines that cannot be read (comments, blanks, malformed) are skipped.
    pub fn parse(text: &str) -> KnownHosts {
        KnownHosts { entries: text.lines().filter_map(parse_line).collect() }
    }

    /// Whether `key` (the raw key blob) of type `key_type` is the known key of host `name`
    /// (see [`host_name`]).
    pub fn check(&self, name: &str, key_type: &str, key: &[u8]) -> Verdict {
        let mut verdict = Verdict::Unknown;
        for entry in self.entries.iter().filter(|e| e.hosts.matches(name)) {
            if entry.revoked {
                if entry.key == key {
                    return Verdict::Revoked;
                }
            } else if entry.key == key {
                verdict = Verdict::Known;
            } else if entry.key_type == key_type && verdict == Verdict::Unknown {
                verdict = Verdict::Mismatch;
            }
        }
        verdict
    }
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            _ => return None,
        }
        first = fields.next()?;
    }
    let key_type = fields.next()?.to_string();
    let key = STANDARD.decode(fields.next()?).ok()?;
    let hosts = match first.strip_prefix("|1|") {
        Some(hashed) => {
            let (salt, hash) = hashed.split_once('|')?;
            Hosts::Hashed { salt: STANDARD.decode(salt).ok()?, hash: STANDARD.decode(hash).ok()? }
        }
        None => Hosts::Patterns(first.split(',').map(str::to_ascii_lowercase).collect()),
    };
    Some(Entry { revoked, hosts, key_type, key })
}

impl Hosts {
    fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        match self {
            Hosts::Patterns(patterns) => {
                let mut matched = false;
                for pattern in patterns {
                    match pattern.strip_prefix('!') {
                        Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return false,
                        Some(_) => {}
                        None => matched |= glob(pattern.as_bytes(), name.as_bytes()),
                    }
                }
                matched
            }
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else { return false };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
        }
    }
}

/// `*` (any run) and `?` (any one byte), as in OpenSSH host patterns.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBfLkjwWc5CMGv4KxW5xgTShXc1RkSr2Ba1xdtvrGfX+";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIGpyb6DoFTfnNWBC/0tDnfM+a58hC+FlRWIV5H2dAxcs";

    fn key(text: &str) -> Vec<u8> {
        STANDARD.decode(text).unwrap()
    }

    #[test]
    fn known_hosts_plain_and_bracketed_names() {
        let hosts = KnownHosts::parse(&format!(
            "# comment\n\ngit.example,10.0.0.1 ssh-ed25519 {KEY_A}\n\
             [127.0.0.1]:2222 ssh-ed25519 {KEY_B} root@ci\nnot a line\n"
        ));
        assert_eq!(hosts.check("git.example", "ssh-ed25519", &key(KEY_A)), Verdict::Known);
        assert_eq!(hosts.check("GIT.example", "ssh-ed25519", &key(KEY_A)), Verdict::Known);
        assert_eq!(hosts.check("10.0.0.1", "ssh-ed25519", &key(KEY_B)), Verdict::Mismatch);
        assert_eq!(hosts.check("[127.0.0.1]:2222", "ssh-ed25519", &key(KEY_B)), Verdict::Known);
        assert_eq!(hosts.check("127.0.0.1", "ssh-ed25519", &key(KEY_B)), Verdict::Unknown);
        assert_eq!(hosts.check("other", "ssh-ed25519", &key(KEY_A)), Verdict::Unknown);
        // Another key type of a known host is not a mismatch: the host may have several keys.
        assert_eq!(hosts.check("git.example", "ssh-rsa", b"rsa"), Verdict::Unknown);
        assert_eq!(host_name("h", Some(22)), "h");
        assert_eq!(host_name("h", None), "h");
        assert_eq!(host_name("h", Some(2222)), "[h]:2222");
    }

    #[test]
    fn known_hosts_hashed_wildcards_negation_and_revoked() {
        // "[127.0.0.1]:2222" hashed as `ssh-keygen -H` writes it: HMAC-SHA1 keyed by the salt.
        let salt = [7u8; 20];
        let mut mac = Hmac::<Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = mac.finalize().into_bytes();
        let hosts = KnownHosts::parse(&format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}\n*.example,!bad.example ssh-ed25519 {KEY_B}\n\
             @revoked * ssh-ed25519 {KEY_A}\n@cert-authority * ssh-ed25519 {KEY_B}\n",
            STANDARD.encode(salt),
            STANDARD.encode(hash),
        ));
        assert_eq!(hosts.check("[127.0.0.1]:2222", "ssh-ed25519", &key(KEY_A)), Verdict::Revoked);
        assert_eq!(hosts.check("git.example", "ssh-ed25519", &key(KEY_B)), Verdict::Known);
        assert_eq!(hosts.check("bad.example", "ssh-ed25519", &key(KEY_B)), Verdict::Unknown);
        assert_eq!(hosts.check("example", "ssh-ed25519", &key(KEY_B)), Verdict::Unknown);
        assert!(glob(b"g?t.*", b"git.example"));
        assert!(!glob(b"g?t.*", b"gt.example"));
        assert_eq!(fingerprint(&[0u8; 32]), "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    }
}
