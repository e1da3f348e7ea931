use super::*;

#[path = "../../../../tests/support/tls.rs"]
mod certs;

use certs::TestCa;

#[test]
fn https_always_plain_http_only_to_this_machine() {
    for url in ["https://build.example.com", "https://10.0.0.5:8443", "https://[2001:db8::1]"] {
        assert!(check_server_url(url, false).is_ok(), "{url}");
    }
    for url in [
        "http://127.0.0.1:8080",
        "http://127.9.8.7",
        "http://localhost:8080",
        "http://LOCALHOST.",
        "http://[::1]:8080",
        "http://[::ffff:127.0.0.1]",
    ] {
        assert!(check_server_url(url, false).is_ok(), "{url}");
    }
    for url in [
        "http://10.0.0.5:8080",
        "http://build.example.com",
        "http://localhost.example.com",
        "http://128.0.0.1",
        "http://[2001:db8::1]",
        "http://0.0.0.0:8080",
    ] {
        let err = check_server_url(url, false).unwrap_err();
        assert!(matches!(err, TransportError::Plaintext { .. }), "{url}: {err}");
        assert!(err.to_string().contains("--insecure"), "{err}");
        assert!(check_server_url(url, true).is_ok(), "{url} with --insecure");
    }
    let err = check_server_url("ftp://127.0.0.1", true).unwrap_err();
    assert!(err.to_string().contains("not ftp://"), "{err}");
    assert!(matches!(check_server_url("not a url", true), Err(TransportError::BadUrl { .. })));
}

#[test]
fn bad_certificate_and_key_files_are_named_with_what_is_wrong() {
    let ca = TestCa::new("files");
    let server = ca.server_cert(&["127.0.0.1"]);
    let other = ca.server_cert(&["localhost"]);
    assert!(server_config(&server.cert, &server.key).is_ok());

    let missing = ca.dir().join("missing.pem");
    let err = server_config(&missing, &server.key).unwrap_err().to_string();
    assert!(
        err.starts_with("cannot read the TLS certificate ") && err.contains("missing.pem"),
        "{err}"
    );
    let err = server_config(&server.cert, &missing).unwrap_err().to_string();
    assert!(err.starts_with("cannot read the TLS key ") && err.contains("missing.pem"), "{err}");

    let garbage = ca.dir().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all\n").unwrap();
    let err = server_config(&garbage, &server.key).unwrap_err().to_string();
    assert!(err.contains("garbage.pem holds no certificate"), "{err}");
    let err = server_config(&server.cert, &garbage).unwrap_err().to_string();
    assert!(err.contains("garbage.pem holds no private key"), "{err}");
    // A key where the certificate belongs, and the other way round.
    let err = server_config(&server.key, &server.key).unwrap_err().to_string();
    assert!(err.contains("holds no certificate"), "{err}");
    let err = server_config(&server.cert, &server.cert).unwrap_err().to_string();
    assert!(err.contains("holds no private key"), "{err}");

    let broken = ca.dir().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n")
        .unwrap();
    let err = server_config(&broken, &server.key).unwrap_err().to_string();
    assert!(err.contains("broken.pem is not valid PEM"), "{err}");

    let err = server_config(&server.cert, &other.key).unwrap_err().to_string();
    assert!(err.contains("do not go together"), "{err}");

    let err = client_config(Some(&garbage)).unwrap_err().to_string();
    assert!(err.starts_with("the CA file ") && err.contains("holds no certificate"), "{err}");
    assert!(client_config(Some(&ca.cert)).is_ok());
    assert!(!trust_anchors(None).unwrap().is_empty());
}

/// A real HTTPS server on loopback with `ca`'s certificate for 127.0.0.1; its URL.
async fn https_server(ca: &TestCa) -> (String, axum_server::Handle<std::net::SocketAddr>) {
    let files = ca.server_cert(&["127.0.0.1", "localhost"]);
    let config = server_config(&files.cert, &files.key).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = axum_server::Handle::new();
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(config),
    )
    .unwrap()
    .handle(handle.clone());
    tokio::spawn(server.serve(app.into_make_service()));
    (format!("https://{addr}"), handle)
}

#[tokio::test]
async fn the_agent_client_trusts_exactly_the_given_ca() {
    let ca = TestCa::new("reqwest");
    let (url, handle) = https_server(&ca).await;

    let client = http_client_builder(Some(&ca.cert)).unwrap().build().unwrap();
    let answer = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "ok");

    // The public roots do not vouch for a private CA, and neither does another private CA.
    let stranger = TestCa::new("stranger");
    for ca_file in [None, Some(stranger.cert.as_path())] {
        let client = http_client_builder(ca_file).unwrap().build().unwrap();
        let err = client.get(format!("{url}/healthz")).send().await.unwrap_err();
        let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains("invalid peer certificate: UnknownIssuer"), "{chain}");
    }
    handle.shutdown();
}
