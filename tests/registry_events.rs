//! Registry push notifications end to end: a real distribution registry (Debian's
//! `docker-registry` 2.8) configured with a notification endpoint, a real `docker push` to it,
//! and [`kiln_server::trigger::notification::pushed_tags`] on the envelope the registry delivered.

#[path = "support/registry.rs"]
mod registry_support;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_server::trigger::notification::{MEDIA_TYPE, PushedTag, pushed_tags};
use kiln_server::trigger::registry::{TagRef, current_digest};
use registry_support::{NotifyingRegistry, docker, docker_push};

/// How long the registry may take to deliver the manifest push.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// One request the endpoint received.
#[derive(Debug)]
struct Delivery {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// An endpoint on `listener`: answers every request `200 OK` and hands it to the test.
fn endpoint(listener: TcpListener) -> mpsc::Receiver<Delivery> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(delivery) = read_request(&mut stream) else { continue };
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send(delivery).is_err() {
                return;
            }
        }
    });
    rx
}

/// One HTTP/1.1 request with a `Content-Length` body (what Go's client sends for the
/// registry's envelopes).
fn read_request(stream: &mut std::net::TcpStream) -> std::io::Result<Delivery> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Delivery { line: line.trim().to_string(), headers, body })
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("t{}-{nanos}", std::process::id())
}

#[test]
fn a_docker_push_is_delivered_as_a_pushed_tag() {
    if std::env::var("KILN_TEST_REGISTRY").is_err() {
        eprintln!("skipped: KILN_TEST_REGISTRY is not set (no docker engine; scripts/test-env.sh)");
        return;
    }
    let image = std::env::var("KILN_TEST_IMAGE").unwrap_or("busybox:latest".into());
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/registry/events", listener.local_addr().expect("address"));
    let deliveries = endpoint(listener);
    let registry = NotifyingRegistry::start(&url, "Bearer sometoken");

    let tag = unique();
    let reference = format!("{}/kiln-events/base:{tag}", registry.addr);
    docker(&["tag", &image, &reference]);
    let digest = docker_push(&reference);
    docker(&["rmi", &reference]);
    let expected = PushedTag {
        registry: registry.addr.clone(),
        repository: "kiln-events/base".into(),
        tag: tag.clone(),
        digest: digest.clone(),
        is_list: false,
    };

    // Layer pushes come first, each in its own envelope; wait for the manifest's.
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Ok(delivery) = deliveries.recv_timeout(remaining) else {
            panic!(
                "no push of {reference} delivered within {DELIVERY_TIMEOUT:?}; got {seen:#?}\n\
                 registry log:\n{}",
                registry.log()
            );
        };
        let body = String::from_utf8_lossy(&delivery.body).into_owned();
        assert_eq!(delivery.line, "POST /registry/events HTTP/1.1", "{delivery:?}");
        assert_eq!(delivery.header("authorization"), Some("Bearer sometoken"), "{delivery:?}");
        assert_eq!(delivery.header("content-type"), Some(MEDIA_TYPE), "{delivery:?}");
        let tags = pushed_tags(&delivery.body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        if tags.is_empty() {
            seen.push(body);
            continue;
        }
        eprintln!("the manifest push as delivered:\n{body}");
        assert_eq!(tags, vec![expected], "{body}");
        break;
    }

    // What a notification reports is what polling the tag finds.
    let polled = current_digest(
        &TagRef { registry: registry.addr.clone(), repository: "kiln-events/base".into(), tag },
        None,
        Duration::from_secs(20),
    );
    assert_eq!(polled, Ok(digest));
}
