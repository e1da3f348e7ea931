//! Secrets at rest (issue 6): what a task keeps for later runs (git tokens, `--set-secret`
//! values, registry passwords, webhook secrets) is stored sealed with the server's key, so a
//! copy of the database alone reveals none of it.
//!
//! The key is 32 random bytes in `<data dir>/secret.key`, created with mode 0600 on first use
//! and never leaving the machine. Sealing is XChaCha20-Poly1305 with a fresh random 24-byte
//! nonce per value (random nonces of that size never collide in practice) and the value's
//! purpose as associated data, so a sealed git token cannot be replayed as a webhook secret.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};

/// File name of the key inside the data directory.
pub const KEY_FILE: &str = "secret.key";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    #[error("cannot read or create the secret key {path}: {source}")]
    Key { path: PathBuf, source: std::io::Error },
    #[error("the secret key {path} is {len} bytes, not {KEY_LEN}: it is damaged")]
    KeyLength { path: PathBuf, len: usize },
    #[error(
        "the secret key {path} is readable by others (mode {mode:o}); make it 0600 (chmod 600)"
    )]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
    #[error("a stored secret does not open with this server's key (another key, or damaged)")]
    Open,
}

/// Seals and opens values with the server's key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// The data directory's key, created on first use.
    pub fn open_or_create(data_dir: &Path) -> Result<SecretBox, SecretBoxError> {
        let path = data_dir.join(KEY_FILE);
        let key_error = |source| SecretBoxError::Key { path: path.clone(), source };
        let key = match std::fs::read(&path) {
            Ok(key) => {
                let mode = std::fs::metadata(&path).map_err(key_error)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(SecretBoxError::KeyMode { path, mode: mode & 0o777 });
                }
                key
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random::<KEY_LEN>()?;
                // create_new: two servers starting at once cannot both write a key.
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(key_error)?;
                file.write_all(&key).and_then(|()| file.sync_all()).map_err(key_error)?;
                key.to_vec()
            }
            Err(e) => return Err(key_error(e)),
        };
        if key.len() != KEY_LEN {
            return Err(SecretBoxError::KeyLength { path, len: key.len() });
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| SecretBoxError::KeyLength { path, len: key.len() })?;
        Ok(SecretBox { cipher })
    }

    /// `value` sealed for `purpose` (e.g. `task/<name>/git-token`): nonce, then ciphertext.
    pub fn seal(&self, purpose: &str, value: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        let nonce = random::<NONCE_LEN>()?;
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: value, aad: purpose.as_bytes() })
            .map_err(|_| SecretBoxError::Open)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// The value [`SecretBox::seal`] sealed for the same `purpose`.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretBoxError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload { msg: ciphertext, aad: purpose.as_bytes() },
            )
            .map_err(|_| SecretBoxError::Open)
    }
}

fn random<const N: usize>() -> Result<[u8; N], SecretBoxError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| SecretBoxError::Random(e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_key_and_purpose() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sealer = SecretBox::open_or_create(dir.path()).expect("key");
        let sealed = sealer.seal("task/a/git-token", b"ghp_secret").expect("seal");
        assert!(!sealed.windows(10).any(|w| w == b"ghp_secret"), "not stored in the clear");
        assert_ne!(sealed, sealer.seal("task/a/git-token", b"ghp_secret").expect("seal"));
        // The same key from disk opens it; another purpose or a flipped bit does not.
        let again = SecretBox::open_or_create(dir.path()).expect("key");
        assert_eq!(again.open("task/a/git-token", &sealed).expect("open"), b"ghp_secret");
        assert!(matches!(again.open("task/a/webhook", &sealed), Err(SecretBoxError::Open)));
        let mut damaged = sealed.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(again.open("task/a/git-token", &damaged), Err(SecretBoxError::Open)));
        // Another server's key does not open it.
        let other = tempfile::tempdir().expect("tempdir");
        let stranger = SecretBox::open_or_create(other.path()).expect("key");
        assert!(matches!(stranger.open("task/a/git-token", &sealed), Err(SecretBoxError::Open)));
    }

    #[test]
    fn the_key_file_is_private_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        SecretBox::open_or_create(dir.path()).expect("key");
        let path = dir.path().join(KEY_FILE);
        let mode = std::fs::metadata(&path).expect("key file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SecretBox::open_or_create(dir.path()).expect_err("too open");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, b"short").expect("damage");
        assert!(matches!(
            SecretBox::open_or_create(dir.path()),
            Err(SecretBoxError::KeyLength { len: 5, .. })
        ));
    }
}
