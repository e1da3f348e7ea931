//! TLS between the CLI (and agents) and `kiln serve`, end to end: a real server with a
//! certificate from a CA made in the test, the CLI trusting that CA with `--ca-file`, the API,
//! followed logs, server-sent events and the run page over https; what a client without the CA
//! and a server without its key say; and a client in a network namespace of its own reaching a
//! server on the namespace's veth pair, losing it when the link goes down and finding it again.

#[path = "support/netns.rs"]
mod netns;
#[path = "support/server.rs"]
mod server;
#[path = "support/tls.rs"]
mod tls;

use std::process::{Command, Output};

use netns::Netns;
use server::{Server, queued_id, registry, text};
use tls::TestCa;

/// `out` exited with `code` and said `needle`.
fn exits(out: &Output, code: i32, needle: &str, what: &str) {
    let all = text(out);
    assert_eq!(out.status.code(), Some(code), "{what}: {all}");
    assert!(all.contains(needle), "{what}: {needle:?} not in: {all}");
}

/// A TLS `kiln serve` on `addr` with a certificate for `names` signed by `ca`.
fn tls_server(ca: &TestCa, prefix: &str, workers: usize, addr: &str, names: &[&str]) -> Server {
    let cert = ca.server_cert(names);
    let (cert, key) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
    let registry = registry();
    let args = ["--tls-cert", cert, "--tls-key", key, "--registry", &registry];
    Server::start_on(prefix, workers, addr, &args)
}

#[test]
fn the_cli_runs_and_follows_over_https_with_the_servers_ca() {
    let ca = TestCa::new("cli");
    let server = tls_server(&ca, "tl", 1, "127.0.0.1:0", &["127.0.0.1", "localhost"]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let ca_file = ca.cert.to_str().unwrap();

    // Submit and follow the log live (the CLI's default), over https.
    let out = server
        .kiln()
        .args(["run", "--ca-file", ca_file, "--cmd", "busybox echo over-tls", "/dev/null"])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("over-tls") && all.contains("was successful"), "{all}");
    let id = queued_id(&out);

    // KILN_CA_FILE works as the flag does, and localhost is in the certificate too.
    let port = server.url.rsplit(':').next().unwrap();
    let out = server
        .kiln()
        .env("KILN_CA_FILE", ca_file)
        .env("KILN_SERVER", format!("https://localhost:{port}"))
        .args(["logs", &id])
        .output()
        .unwrap();
    exits(&out, 0, "over-tls", "logs with KILN_CA_FILE");

    // The agent's client, the server-sent events of the log, the app's run page and sign-in.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client =
            kiln_server::transport::http_client_builder(Some(&ca.cert)).unwrap().build().unwrap();
        let sse = client
            .get(format!("{}/runs/{id}/log", server.url))
            .bearer_auth(&server.token)
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(sse.status(), 200);
        let events = sse.text().await.unwrap();
        assert!(events.contains("data:") && events.contains("over-tls"), "{events}");
        let page = client.get(format!("{}/ui/runs/{id}", server.url)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains("<html"));
        // Over HTTPS the browser's session cookie is Secure (sent over HTTPS only).
        let signed = client
            .post(format!("{}/session", server.url))
            .json(&serde_json::json!({"token": server.token}))
            .send()
            .await
            .unwrap();
        assert_eq!(signed.status(), 201);
        let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.ends_with("; HttpOnly; SameSite=Strict; Secure"), "{cookie}");
    });

    // Without the CA (the public roots) and with another CA: a certificate error, exit 1.
    let stranger = TestCa::new("stranger");
    for (what, ca_args) in
        [("no CA", vec![]), ("another CA", vec!["--ca-file", stranger.cert.to_str().unwrap()])]
    {
        let out = server.kiln().args(["whoami"]).args(&ca_args).output().unwrap();
        exits(&out, 1, "its certificate is not trusted", what);
        exits(&out, 1, "--ca-file", what);
    }
    // A CA file that is not there is this machine's mistake: exit 2, naming it.
    let out = server.kiln().args(["whoami", "--ca-file", "/nonexistent/ca.pem"]).output().unwrap();
    exits(&out, 2, "cannot read the CA file /nonexistent/ca.pem", "missing CA file");
    // https to a plain HTTP server says what is likely wrong.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_url = format!("https://{}", plain.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        let (mut stream, _) = plain.accept().unwrap();
        let _ = stream.read(&mut [0; 1024]);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
    });
    let out = server.kiln().env("KILN_SERVER", &plain_url).arg("whoami").output().unwrap();
    exits(&out, 1, "(does the server serve https?)", "https to plain HTTP");
    // Plain http to a TLS server is not taken for a certificate problem.
    let out = server
        .kiln()
        .env("KILN_SERVER", server.url.replace("https", "http"))
        .args(["whoami"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn serve_refuses_to_start_with_half_or_broken_tls() {
    let ca = TestCa::new("startup");
    let files = ca.server_cert(&["127.0.0.1"]);
    let serve = |args: &[&str]| {
        let data = tempfile::tempdir().unwrap();
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["serve", "--addr", "127.0.0.1:0", "--workers", "0", "--data-dir"])
            .arg(data.path())
            .args(args)
            .output()
            .unwrap()
    };
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    exits(&serve(&["--tls-cert", cert]), 2, "--tls-key", "a certificate without its key");
    exits(&serve(&["--tls-key", key]), 2, "--tls-cert", "a key without its certificate");
    let missing = ca.dir().join("missing.key");
    let out = serve(&["--tls-cert", cert, "--tls-key", missing.to_str().unwrap()]);
    exits(&out, 2, &format!("cannot read the TLS key {}", missing.display()), "missing key");
    let out = serve(&["--tls-cert", key, "--tls-key", key]);
    exits(&out, 2, &format!("the TLS certificate {key} holds no certificate"), "key as cert");
    let other = ca.server_cert(&["localhost"]);
    let out = serve(&["--tls-cert", cert, "--tls-key", other.key.to_str().unwrap()]);
    exits(&out, 2, "do not go together", "another certificate's key");
}

#[test]
fn a_namespace_reaches_the_server_over_its_veth_until_the_link_goes_down() {
    let ns = Netns::new();
    let host = ns.host_addr.to_string();
    let ca = TestCa::new("netns");
    let server = tls_server(&ca, "tn", 0, &format!("{host}:0"), &[&host]);
    assert!(server.url.starts_with(&format!("https://{host}:")), "{}", server.url);
    let whoami = || {
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_kiln"));
        server.client_env(&mut cmd);
        let ca_file = ca.cert.to_str().unwrap();
        cmd.args(["whoami", "--ca-file", ca_file, "--connect-timeout", "2"]).output().unwrap()
    };

    exits(&whoami(), 0, &format!("Server: {}", server.url), "from the namespace");
    ns.link_down();
    exits(&whoami(), 1, "cannot reach the kiln server", "with the link down");
    ns.link_up();
    exits(&whoami(), 0, "Role:", "with the link up again");

    // Plain http to an address off this machine is refused before anything is sent.
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_kiln"));
    server.client_env(&mut cmd).env("KILN_SERVER", server.url.replace("https", "http"));
    exits(&cmd.arg("whoami").output().unwrap(), 2, "refusing plain http://", "plain http");
}
