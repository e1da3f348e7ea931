//! Which server URLs a client may talk to. Leases and run requests carry secrets, so plain
//! `http://` is accepted only to this machine (a loopback address or `localhost`) unless the
//! user says `--insecure`.

use std::net::IpAddr;

/// Why a server URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("server URL {0:?} is not an http:// or https:// URL")]
    NotHttp(String),
    #[error(
        "server URL {0:?} is plain http:// to another machine, and agents receive secrets: \
         use https:// (kiln serve --tls-cert/--tls-key) or pass --insecure"
    )]
    Insecure(String),
}

/// Accepts `https://…`, and `http://…` to a loopback host or with `insecure`.
pub fn check_server_url(url: &str, insecure: bool) -> Result<(), TransportError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return Err(TransportError::NotHttp(url.to_string()));
    };
    if insecure || is_loopback(host_of(rest)) {
        Ok(())
    } else {
        Err(TransportError::Insecure(url.to_string()))
    }
}

/// The host of `host[:port][/path]`, without IPv6 brackets.
fn host_of(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_this_machine() {
        for ok in [
            "https://kiln.example",
            "http://127.0.0.1:8080",
            "http://localhost/x",
            "http://[::1]:80",
        ] {
            assert_eq!(check_server_url(ok, false), Ok(()), "{ok}");
        }
        let far = "http://10.0.0.5:8080";
        assert!(matches!(check_server_url(far, false), Err(TransportError::Insecure(_))));
        assert_eq!(check_server_url(far, true), Ok(()));
        assert!(matches!(check_server_url("ftp://x", true), Err(TransportError::NotHttp(_))));
        assert!(matches!(
            check_server_url("http://127.0.0.1.evil.example", false),
            Err(TransportError::Insecure(_))
        ));
    }
}
