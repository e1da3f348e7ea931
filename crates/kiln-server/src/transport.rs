//! How kiln's processes reach each other over the network, the same for the CLI, an agent and
//! the server: which server URLs a client may use ([`check_server_url`]: `https://` always,
//! plain `http://` only to this machine unless told `--insecure`, because API tokens and agent
//! leases carry secrets), and TLS on both ends with one rustls crypto provider for the whole
//! binary ([`crypto_provider`]: ring, the one ureq brings), so no process depends on which
//! provider happens to be installed as the default.
//!
//! The server's side is [`server_config`] (a PEM certificate chain and key); a client trusts the
//! public web's roots or, given a CA file, exactly that private CA ([`client_config`]; the async
//! client an agent talks through is [`http_client_builder`]). Every failure names the file and
//! what is wrong with it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::Url;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use url::Host;

/// What went wrong setting up a connection's security.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not valid PEM: {reason}")]
    Pem { what: &'static str, path: PathBuf, reason: String },
    #[error("{what} {path} holds no {expected}")]
    Missing { what: &'static str, path: PathBuf, expected: &'static str },
    #[error("the CA file {path} holds a certificate that cannot be a trust anchor: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("the TLS certificate {cert} and key {key} do not go together: {reason}")]
    Identity { cert: PathBuf, key: PathBuf, reason: String },
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "refusing plain http:// to {host}, which is not this machine: the token (and an agent's \
         run secrets) would cross the network in the clear; serve TLS (`kiln serve --tls-cert \
         --tls-key`) and use https://, or pass --insecure"
    )]
    Plaintext { host: String },
    #[error("setting up TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The crypto provider every TLS connection of kiln uses, client and server alike.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Whether a client may talk to `url`: `https://` always; `http://` only to a loopback address
/// (127.0.0.0/8, ::1, `localhost`) unless `insecure`.
pub fn check_server_url(url: &str, insecure: bool) -> Result<(), TransportError> {
    let bad = |reason: String| TransportError::BadUrl { url: url.to_string(), reason };
    let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if insecure || parsed.host().is_some_and(is_loopback) => Ok(()),
        "http" => Err(TransportError::Plaintext {
            host: parsed.host_str().unwrap_or_default().to_string(),
        }),
        other => Err(bad(format!("it must start with https:// or http://, not {other}://"))),
    }
}

/// Loopback addresses and `localhost` (RFC 6761 reserves it for this machine).
fn is_loopback(host: Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(ip).to_canonical().is_loopback(),
        Host::Domain(name) => {
            let name = name.strip_suffix('.').unwrap_or(name);
            name.eq_ignore_ascii_case("localhost")
        }
    }
}

/// The certificates of a PEM file (`what` names the file in errors: "the CA file", …).
pub fn load_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TransportError::Missing {
            what,
            path: path.to_path_buf(),
            expected: "certificate (a PEM \"BEGIN CERTIFICATE\" block)",
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    const WHAT: &str = "the TLS key";
    let bytes = read(WHAT, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TransportError::Missing {
            what: WHAT,
            path: path.to_path_buf(),
            expected: "private key (a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \
                       \"BEGIN EC PRIVATE KEY\" block)",
        },
        other => pem_error(WHAT, path, other),
    })
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(what: &'static str, path: &Path, error: pem::Error) -> TransportError {
    TransportError::Pem { what, path: path.to_path_buf(), reason: error.to_string() }
}

/// The server's TLS: the certificate chain in `cert` (the server's own first) and its key.
/// HTTP/1.1 only, as the plain listener serves.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TransportError> {
    let chain = load_certificates("the TLS certificate", cert)?;
    let key_der = load_private_key(key)?;
    let mut config = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| TransportError::Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The roots a client trusts: exactly the certificates of `ca_file`, else the public web's
/// (webpki roots, as ureq's default).
fn trust_anchors(ca_file: Option<&Path>) -> Result<RootCertStore, TransportError> {
    let Some(path) = ca_file else {
        return Ok(RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() });
    };
    let mut roots = RootCertStore::empty();
    for cert in load_certificates("the CA file", path)? {
        roots.add(cert).map_err(|e| TransportError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A client's TLS, trusting [`trust_anchors`].
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TransportError> {
    Ok(ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(trust_anchors(ca_file)?)
        .with_no_client_auth())
}

/// The async HTTP client (an agent's) with [`client_config`]'s TLS; timeouts and the rest are
/// the caller's to add before `build()`.
pub fn http_client_builder(
    ca_file: Option<&Path>,
) -> Result<reqwest::ClientBuilder, TransportError> {
    Ok(reqwest::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(client_config(ca_file)?))
}

#[cfg(test)]
mod tests;
