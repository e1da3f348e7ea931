//! The API over real HTTP on loopback, against a real SQLite store in a temporary directory and
//! the agent with no workers (so runs stay where the test puts them). Tests are synchronous:
//! the server runs on its own runtime and the test speaks HTTP with `ureq`, driving the store
//! (claiming, appending, finishing) through the same runtime. Nothing waits on a timer: every
//! read blocks until the bytes it expects arrive.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::response::IntoResponse as _;
use chrono::{TimeDelta, Utc};
use kiln_api::status::RunStatus;
use kiln_api::{self as api, ErrorBody, LOG_OFFSET_HEADER};
use kiln_task::run_id::RunId;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::janitor::{Janitor, Sweep};
use super::*;
use crate::store::Store;
use crate::store::lease::Claimant;
use crate::store::runs::WAITING_LINE;

const TTL: Duration = Duration::from_secs(30);

struct Server {
    rt: tokio::runtime::Runtime,
    base: String,
    token: String,
    store: Store,
    hub: LogHub,
    http: ureq::Agent,
    dir: tempfile::TempDir,
}

struct Answer {
    status: u16,
    offset: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    fn error(&self) -> ErrorBody {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    fn run(&self) -> api::Run {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn start() -> Server {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_path_buf();
    let (store, hub, token, addr) = rt.block_on(async {
        let store = Store::open(&data_dir, RunIdPrefix::new("ka").unwrap()).await.unwrap();
        let token = store.ensure_admin_token().await.unwrap().unwrap();
        let hub = LogHub::new();
        let secrets = Arc::new(crate::secret_box::SecretBox::open_or_create(&data_dir).unwrap());
        let state = AppState {
            store: store.clone(),
            hub: hub.clone(),
            dispatch: dispatcher(&store, &hub, &data_dir),
            secrets,
            timers: Arc::default(),
            settings: Arc::new(Settings {
                public_url: "http://kiln.invalid".to_string(),
                data_dir: data_dir.clone(),
                default_registry: Some("registry.local:5000".to_string()),
                images: kiln_task::config::Config::default().image_aliases(),
                max_upload_bytes: 1024 * 1024,
                max_context: kiln_api::uploads::ContextLimit::from_mb(2),
            }),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        (store, hub, token, addr)
    });
    let http: ureq::Agent =
        ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    Server { rt, base: format!("http://{addr}"), token, store, hub, http, dir }
}

fn answer(response: ureq::http::Response<ureq::Body>) -> Answer {
    let header =
        |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (status, offset, content_type) =
        (response.status().as_u16(), header(LOG_OFFSET_HEADER), header("content-type"));
    let body = response.into_body().read_to_vec().unwrap();
    Answer { status, offset, content_type, body }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }
    fn get(&self, path: &str) -> Answer {
        answer(self.http.get(self.url(path)).header("Authorization", self.auth()).call().unwrap())
    }
    fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.http.get(self.url(path)).header("Authorization", self.auth());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.call().unwrap())
    }
    fn post(&self, path: &str, auth: Option<&str>, content_type: &str, body: &[u8]) -> Answer {
        let mut req = self.http.post(self.url(path)).header("content-type", content_type);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        answer(req.send(body).unwrap())
    }
    fn submit(&self, request: &Value) -> Answer {
        let body = serde_json::to_vec(request).unwrap();
        self.post("/runs", Some(&self.auth()), "application/json", &body)
    }
    /// An upload as kiln's client sends it: waiting for `100 Continue`, so a refusal made
    /// before the body is read is read back, not a broken pipe.
    fn upload(&self, bytes: &[u8]) -> Answer {
        let req = self
            .http
            .post(self.url("/uploads"))
            .header("Authorization", self.auth())
            .header("content-type", "application/gzip")
            .header("expect", "100-continue");
        answer(req.send(bytes).unwrap())
    }
    fn uploads_dir_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(kiln_api::uploads::dir(self.dir.path())) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }
    fn runs(&self) -> Vec<api::Run> {
        let a = self.get("/runs?top=0");
        assert_eq!(a.status, 200, "{}", a.text());
        let page: api::List<api::Run> = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(page.next_link, None, "top=0 is one page");
        page.value
    }
}

fn encoded(task: &str) -> Value {
    json!({"type": "EncodedTaskRunRequest", "source": {"kind": "none"},
        "encodedTaskContent": api::base64_text::encode(task)})
}

const GOOD_TASK: &str = "version: v1.1.0\nsteps:\n  - cmd: bash echo hello\n";

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn server_rejects_missing_and_wrong_tokens_and_does_nothing() {
    let s = start();
    let body = serde_json::to_vec(&encoded(GOOD_TASK)).unwrap();
    for auth in [None, Some("Bearer kiln_0000"), Some("Bearer nonsense"), Some("Basic abc")] {
        let a = s.post("/runs", auth, "application/json", &body);
        assert_eq!(a.status, 401, "{auth:?}");
        assert_eq!(a.error().error.message, error::UNAUTHORIZED_MESSAGE);
        assert_eq!(a.error().error.code, "Unauthorized");
        let a = s.post("/uploads", auth, "application/gzip", &tar_gz(&[("a", b"x")]));
        assert_eq!(a.status, 401);
    }
    let a = answer(s.http.get(s.url("/runs")).call().unwrap());
    assert_eq!(a.status, 401);
    assert_eq!(a.error().error.message, error::UNAUTHORIZED_MESSAGE);
    assert!(s.runs().is_empty());
    assert!(s.uploads_dir_files().is_empty());
    // The public routes need no token.
    let a = answer(s.http.get(s.url("/healthz")).call().unwrap());
    assert_eq!((a.status, a.text().as_str()), (200, "ok"));
}

#[test]
fn server_submits_an_encoded_task_and_lists_it() {
    let s = start();
    let a = s.submit(&encoded(GOOD_TASK));
    assert_eq!(a.status, 201, "{}", a.text());
    let run = a.run();
    assert_eq!(run.run_id, "ka1");
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.timeout, 3600);
    assert_eq!(run.platform.os, "linux");
    assert_eq!(run.trigger, "Manual");
    let listed = s.runs();
    assert_eq!(listed, vec![run.clone()]);
    let got = s.get("/runs/ka1");
    assert_eq!(got.status, 200);
    assert_eq!(got.run(), run);
    // A Docker build is planned at submission too (tags get the default registry).
    let build = json!({"type": "DockerBuildRequest", "source": {"kind": "none"}, "imageNames": ["app:{{.Run.ID}}"]});
    assert_eq!(s.submit(&build).status, 201);
    let ids: Vec<String> = s.runs().into_iter().map(|r| r.run_id).collect();
    assert_eq!(ids, ["ka2", "ka1"]);
}

#[test]
fn server_run_list_pages_follow_next_link_each_run_once_newest_first() {
    let s = start();
    for _ in 0..5 {
        assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    }
    let page = |path: &str| -> api::List<api::Run> {
        let a = s.get(path);
        assert_eq!(a.status, 200, "{}", a.text());
        serde_json::from_slice(&a.body).unwrap()
    };
    let first = page("/runs?top=2");
    let ids =
        |p: &api::List<api::Run>| p.value.iter().map(|r| r.run_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ["ka5", "ka4"]);
    // A run queued between pages shifts nothing: the continuation is a keyset, not an offset.
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    let mut seen = ids(&first);
    let mut next = first.next_link;
    while let Some(link) = next {
        assert!(link.starts_with("/runs?"), "{link}");
        let p = page(&link);
        seen.extend(ids(&p));
        next = p.next_link;
    }
    assert_eq!(seen, ["ka5", "ka4", "ka3", "ka2", "ka1"]);
    // Filters carry over to the next page; the default page is ACR's 15.
    let failed = page("/runs?status=Failed&top=1");
    assert!(failed.value.is_empty() && failed.next_link.is_none());
    assert_eq!(page("/runs").value.len(), 6);
    let a = s.get("/runs?skipToken=nope");
    assert_eq!((a.status, a.error().error.code.as_str()), (400, "BadRequest"));
    // Past the store's counters: bad input too, not a 500; a huge `top` is just "many".
    let a = s.get("/runs?skipToken=9223372036854775808");
    assert_eq!((a.status, a.error().error.code.as_str()), (400, "BadRequest"));
    assert_eq!(page(&format!("/runs?top={}", usize::MAX)).value.len(), 6);
}

#[test]
fn server_refuses_a_bad_task_file_with_positioned_diagnostics() {
    let s = start();
    let task = "version: v1.1.0\nsteps:\n  - cmd: bash echo hi\n    when: [\"nope\"]\n";
    let mut request = encoded(task);
    request["taskFileName"] = json!("bad.yaml");
    let a = s.submit(&request);
    assert_eq!(a.status, 400, "{}", a.text());
    let body = a.error();
    assert_eq!(body.error.code, "InvalidTaskFile");
    assert_eq!(body.error.message, "bad.yaml: invalid task file (1 error)");
    let d = &body.error.details[0];
    assert!(d.is_error());
    let pos = d.pos.expect("a position");
    assert_eq!((pos.line, pos.col), (4, 12));
    assert!(s.runs().is_empty());
}

#[test]
fn server_refuses_bad_timeouts_unknown_uploads_and_bad_json() {
    let s = start();
    for t in [5, 299, 28_801] {
        let mut request = encoded(GOOD_TASK);
        request["timeout"] = json!(t);
        let a = s.submit(&request);
        assert_eq!(a.status, 400);
        assert_eq!(a.error().error.code, "BadRequest");
        let error = a.error().error.message;
        assert!(
            error.contains("timeout must") && error.contains("300") && error.contains("28800"),
            "{error}"
        );
    }
    let id = "0123456789abcdef0123456789abcdef";
    let request = json!({"type": "FileTaskRunRequest", "source": {"kind": "upload", "id": id}});
    let a = s.submit(&request);
    assert_eq!(a.status, 400);
    assert_eq!(a.error().error.message, format!("unknown upload {id}"));
    let a = s.submit(
        &json!({"type": "FileTaskRunRequest", "source": {"kind": "upload", "id": "../../x"}}),
    );
    assert_eq!(a.error().error.message, "unknown upload ../../x");
    let a = s.post("/runs", Some(&s.auth()), "application/json", b"{\"type\": \"Encod");
    assert_eq!(a.status, 400);
    assert!(a.error().error.message.contains("EOF"), "{}", a.text());
    let a = s.submit(&json!({"type": "Nope"}));
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.error().error.message.contains("unknown variant `Nope`"), "{}", a.text());
    assert!(s.runs().is_empty());
}

#[test]
fn server_stores_a_good_upload_and_refuses_a_truncated_one() {
    let s = start();
    let archive = tar_gz(&[("acb.yaml", GOOD_TASK.as_bytes()), ("Dockerfile", b"FROM scratch\n")]);
    let a = s.upload(&archive[..archive.len() - 10]);
    assert_eq!(a.status, 400);
    assert!(
        a.error().error.message.starts_with("the upload is not a complete .tar.gz: "),
        "{}",
        a.text()
    );
    assert!(s.uploads_dir_files().is_empty());
    let a = s.upload(b"not gzip at all");
    assert_eq!(a.status, 400);
    assert!(s.uploads_dir_files().is_empty());
    let too_big = vec![0u8; 1024 * 1024 + 1];
    let a = s.upload(&too_big);
    assert_eq!(a.status, 413, "{}", a.text());
    assert!(s.uploads_dir_files().is_empty());

    let a = s.upload(&archive);
    assert_eq!(a.status, 201, "{}", a.text());
    let upload: api::Upload = serde_json::from_slice(&a.body).unwrap();
    let digest: String = Sha256::digest(&archive).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(upload.sha256, digest);
    assert_eq!(upload.size, archive.len() as u64);
    let path = kiln_api::uploads::path(s.dir.path(), &upload.id).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), archive);
    assert_eq!(s.uploads_dir_files(), vec![path]);
    let request =
        json!({"type": "FileTaskRunRequest", "source": {"kind": "upload", "id": upload.id}});
    assert_eq!(s.submit(&request).status, 201);
}

#[test]
fn server_cancels_queued_runs_and_knows_unknown_ones() {
    let s = start();
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    let a = s.post("/runs/ka1/cancel", Some(&s.auth()), "application/json", b"");
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.run().status, RunStatus::Canceled);
    let a = s.post("/runs/ka1/cancel", Some(&s.auth()), "application/json", b"");
    assert_eq!(a.status, 409);
    assert_eq!(a.error().error.message, "run ka1 already finished with status Canceled");
    assert_eq!(a.error().error.code, "RunAlreadyFinished");
    for a in [
        s.get("/runs/ka9"),
        s.get("/runs/ka9/log"),
        s.post("/runs/ka9/cancel", Some(&s.auth()), "application/json", b""),
    ] {
        assert_eq!(a.status, 404);
        assert_eq!(a.error().error.message, "run ka9 not found");
        assert_eq!(a.error().error.code, "RunNotFound");
    }
}

#[test]
fn server_long_poll_answers_when_the_run_ends() {
    let s = start();
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| s.get("/runs/ka1?wait=60"));
        let a = s.post("/runs/ka1/cancel", Some(&s.auth()), "application/json", b"");
        assert_eq!(a.status, 200);
        let waited = waiter.join().unwrap();
        assert_eq!(waited.status, 200);
        assert_eq!(waited.run().status, RunStatus::Canceled);
    });
}

#[test]
fn server_log_of_a_queued_run_says_it_waits() {
    let s = start();
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    let a = s.get("/runs/ka1/log");
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type.as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(a.offset.as_deref(), Some("0"));
    assert_eq!(a.text(), WAITING_LINE);
    let a = s.get("/runs/ka1/log?offset=8");
    assert_eq!(a.offset.as_deref(), Some("8"));
    assert_eq!(a.text(), &WAITING_LINE[8..]);
}

/// Claims the only queued run and returns its epoch.
fn claim(s: &Server, id: &RunId) -> i64 {
    let claim =
        s.rt.block_on(s.store.claim_next(&Claimant::amd64("test-worker"), TTL)).unwrap().unwrap();
    assert_eq!(&claim.run.id, id);
    claim.epoch
}

fn append(s: &Server, id: &RunId, epoch: i64, bytes: &[u8]) {
    let chunk = s.rt.block_on(s.store.append_log(id, epoch, bytes)).unwrap();
    s.hub.publish(id, chunk.offset + chunk.len);
}

fn finish(s: &Server, id: &RunId, epoch: i64, status: RunStatus) {
    s.rt.block_on(s.store.finish(id, epoch, status, None, &[], None)).unwrap();
    s.hub.finish(id);
}

#[test]
fn server_follow_streams_appended_bytes_exactly_and_ends() {
    let s = start();
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    let id = RunId::new("ka1");
    let response = s
        .http
        .get(s.url("/runs/ka1/log?follow=true"))
        .header("Authorization", s.auth())
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let mut body = response.into_body().into_reader();
    let mut received = Vec::new();
    let mut read = |n: usize, received: &mut Vec<u8>| {
        let mut buf = vec![0u8; n];
        body.read_exact(&mut buf).unwrap();
        received.extend_from_slice(&buf);
    };
    read(WAITING_LINE.len(), &mut received);
    let epoch = claim(&s, &id);
    let parts: [&[u8]; 3] = [b"Step ID: one\n", b"partial line without end", b" ... done\n"];
    for part in parts {
        append(&s, &id, epoch, part);
        read(part.len(), &mut received);
    }
    // Two appends before the follower reads: both arrive, in order, once.
    append(&s, &id, epoch, b"a\n");
    append(&s, &id, epoch, b"b\n");
    read(4, &mut received);
    finish(&s, &id, epoch, RunStatus::Succeeded);
    let mut rest = Vec::new();
    body.read_to_end(&mut rest).unwrap();
    received.extend_from_slice(&rest);
    let expected = [WAITING_LINE.as_bytes(), parts[0], parts[1], parts[2], b"a\nb\n"].concat();
    assert_eq!(String::from_utf8(received).unwrap(), String::from_utf8(expected.clone()).unwrap());
    // A follower of the finished run gets the same bytes and the stream ends.
    let a = s.get("/runs/ka1/log?follow=true");
    assert_eq!(a.body, expected);
    let a = s.get(&format!("/runs/ka1/log?follow=true&offset={}", WAITING_LINE.len() + 5));
    assert_eq!(a.body, expected[WAITING_LINE.len() + 5..]);
}

#[test]
fn server_log_reads_are_bounded_by_length_or_range_and_tell_the_stored_length() {
    let s = start();
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    let id = RunId::new("ka1");
    let epoch = claim(&s, &id);
    // Many chunks, so a range far into the log starts inside one and ends inside another.
    for i in 0..200 {
        append(&s, &id, epoch, format!("line {i:04}\n").as_bytes());
    }
    let full = s.get("/runs/ka1/log").body;
    let total = full.len();
    let header = |path: &str, headers: &[(&str, &str)], name: &str| {
        let mut req = s.http.get(s.url(path)).header("Authorization", s.auth());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = req.call().unwrap();
        let value = response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        (answer(response), value)
    };

    // length after offset.
    let (a, len) = header("/runs/ka1/log?offset=1003&length=25", &[], api::LOG_LENGTH_HEADER);
    assert_eq!(a.status, 200);
    assert_eq!(a.offset.as_deref(), Some("1003"));
    assert_eq!(a.body, full[1003..1028]);
    assert_eq!(len, Some(total.to_string()));
    let a = s.get(&format!("/runs/ka1/log?offset={}&length=100", total - 3));
    assert_eq!(a.body, full[total - 3..]);
    // with timestamps: the same bytes, each line with its time in front.
    let a = s.get("/runs/ka1/log?offset=1010&length=30&timestamps=true");
    let lines: Vec<&str> = std::str::from_utf8(&a.body).unwrap().lines().collect();
    let plain: Vec<&str> = std::str::from_utf8(&full[1010..1040]).unwrap().lines().collect();
    assert_eq!(lines.len(), plain.len());
    for (stamped, plain) in lines.iter().zip(&plain) {
        assert_eq!(stamped.split_once(' ').unwrap().1, *plain);
    }
    // Range: 206 with Content-Range; an open end and a suffix.
    let (a, range) = header("/runs/ka1/log", &[("range", "bytes=1000-1099")], "content-range");
    assert_eq!(a.status, 206);
    assert_eq!(a.body, full[1000..1100]);
    assert_eq!(range, Some(format!("bytes 1000-1099/{total}")));
    let (a, range) = header("/runs/ka1/log", &[("range", "bytes=-10")], "content-range");
    assert_eq!((a.status, a.body.as_slice()), (206, &full[total - 10..]));
    assert_eq!(range, Some(format!("bytes {}-{}/{total}", total - 10, total - 1)));
    let a = s.get_with("/runs/ka1/log", &[("range", &format!("bytes={}-", total - 4))]);
    assert_eq!((a.status, a.body.as_slice()), (206, &full[total - 4..]));
    let (a, range) =
        header("/runs/ka1/log", &[("range", &format!("bytes={total}-"))], "content-range");
    assert_eq!(a.status, 416);
    assert_eq!(a.error().error.code, "RangeNotSatisfiable");
    assert_eq!(range, Some(format!("bytes */{total}")));
    // Several ranges are not served as multipart: the whole log, as HTTP allows.
    let a = s.get_with("/runs/ka1/log", &[("range", "bytes=0-1,5-6")]);
    assert_eq!((a.status, a.body.len()), (200, total));
    // HEAD: the length without the log.
    let response = s.http.head(s.url("/runs/ka1/log")).header("Authorization", s.auth()).call();
    let response = response.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let len = response.headers().get(api::LOG_LENGTH_HEADER).unwrap().to_str().unwrap();
    assert_eq!(len, total.to_string());
    assert!(answer(response).body.is_empty());
    // length cannot follow; an unknown run is still 404.
    assert_eq!(s.get("/runs/ka1/log?follow=true&length=5").status, 400);
    assert_eq!(s.get_with("/runs/ka9/log", &[("range", "bytes=0-1")]).status, 404);
}

#[test]
fn server_store_reads_a_range_across_chunks_from_the_chunk_holding_its_start() {
    let s = start();
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    let id = RunId::new("ka1");
    let epoch = claim(&s, &id);
    let start = s.rt.block_on(s.store.log_len(&id)).unwrap();
    for i in 0..50 {
        append(&s, &id, epoch, format!("chunk {i:02}\n").as_bytes());
    }
    // 9 bytes a chunk: bytes 20..30 of the appended part are the end of chunk 2 and the start
    // of chunk 3, nothing else.
    let pages = s.rt.block_on(s.store.read_log(&id, start + 20, 10)).unwrap();
    assert_eq!(pages.iter().map(|p| p.offset - start).collect::<Vec<_>>(), vec![20, 27]);
    let text: Vec<u8> = pages.into_iter().flat_map(|p| p.data).collect();
    assert_eq!(text, b"unk 02\nchu");
    // A range starting exactly at a chunk's start does not take the chunk before it.
    let pages = s.rt.block_on(s.store.read_log(&id, start + 27, 9)).unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].data, b"chunk 03\n");
}

/// `(id, event, data)` of each event in an SSE body; data lines joined by `\n`.
fn sse_events(body: &str) -> Vec<(Option<u64>, String, String)> {
    let mut events = Vec::new();
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut id, mut event, mut data) = (None, String::new(), Vec::new());
        for line in block.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.parse().unwrap()),
                "event" => event = value.to_string(),
                "data" => data.push(value),
                other => panic!("unexpected field {other}"),
            }
        }
        if !event.is_empty() || !data.is_empty() {
            events.push((id, event, data.join("\n")));
        }
    }
    events
}

#[test]
fn server_sse_resumes_exactly_at_last_event_id() {
    let s = start();
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    let id = RunId::new("ka1");
    let epoch = claim(&s, &id);
    let euro = "€".as_bytes();
    // A character split across two chunks comes out whole.
    append(&s, &id, epoch, &[b"line one\nprice: 5".as_slice(), &euro[..1]].concat());
    append(&s, &id, epoch, &[&euro[1..], b"\nlast\n".as_slice()].concat());
    finish(&s, &id, epoch, RunStatus::Failed);
    let full = [WAITING_LINE.as_bytes(), b"line one\nprice: 5", euro, b"\nlast\n"].concat();

    let sse = [("accept", "text/event-stream")];
    let a = s.get_with("/runs/ka1/log", &sse);
    assert_eq!(a.status, 200);
    assert!(a.content_type.as_deref().unwrap().starts_with("text/event-stream"));
    let events = sse_events(&a.text());
    let (logs, end) = events.split_at(events.len() - 1);
    assert_eq!(end[0], (None, "end".to_string(), "Failed".to_string()));
    let text: String = logs.iter().map(|(_, _, d)| d.as_str()).collect();
    assert_eq!(text.as_bytes(), full);
    assert!(logs.iter().all(|(_, e, _)| e == "log"));
    assert_eq!(logs.last().unwrap().0, Some(full.len() as u64));

    // Resume from each event's ID: the rest arrives exactly; Last-Event-ID beats `offset`.
    for (resume, _, _) in logs {
        let resume = resume.unwrap();
        let resume_text = resume.to_string();
        let a = s.get_with("/runs/ka1/log?offset=0", &[sse[0], ("last-event-id", &resume_text)]);
        let events = sse_events(&a.text());
        let text: String =
            events.iter().filter(|(_, e, _)| e == "log").map(|(_, _, d)| d.as_str()).collect();
        assert_eq!(text.as_bytes(), &full[resume as usize..], "resuming at {resume}");
        assert_eq!(events.last().unwrap().1, "end");
    }
}

/// A server-sent event stream read one event at a time, each read blocking until the event
/// arrived (keep-alive comments are skipped).
struct Watch(std::io::BufReader<Box<dyn std::io::Read + Send>>);

impl Watch {
    fn open(s: &Server, path: &str) -> Watch {
        let response = s
            .http
            .get(s.url(path))
            .header("Authorization", s.auth())
            .header("Accept", "text/event-stream")
            .call()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        Watch(std::io::BufReader::new(Box::new(response.into_body().into_reader())))
    }

    /// `(event, data)` of the next event.
    fn next(&mut self) -> (String, String) {
        use std::io::BufRead as _;
        let (mut event, mut data) = (String::new(), Vec::new());
        loop {
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).unwrap() > 0, "the stream ended");
            let line = line.trim_end_matches('\n');
            if line.is_empty() && !event.is_empty() {
                return (event, data.join("\n"));
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "event" => event = value,
                "data" => data.push(value),
                _ => {}
            }
        }
    }

    /// The next event, which must be a `run`: its ID and status.
    fn run(&mut self) -> (String, RunStatus, api::Run) {
        let (event, data) = self.next();
        assert_eq!(event, "run", "{data}");
        let run: api::Run = serde_json::from_str(&data).unwrap();
        (run.run_id.clone(), run.status, run)
    }
}

#[test]
fn server_watch_sends_the_first_page_then_each_change_of_matching_runs() {
    use RunStatus::{Canceled, Queued, Running, Started, Succeeded};
    let s = start();
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    let ka1 = RunId::new("ka1");
    let mut all = Watch::open(&s, "/runs");
    let mut queued = Watch::open(&s, "/runs?status=Queued");
    for watch in [&mut all, &mut queued] {
        assert_eq!(watch.run().0, "ka1");
        assert_eq!(watch.next(), ("ready".to_string(), "1".to_string()));
    }
    // A new run reaches both; runs leaving the status filter are `removed` from its watch.
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    assert_eq!(all.run().0, "ka2");
    assert_eq!(queued.run().0, "ka2");
    let epoch = claim(&s, &ka1);
    assert_eq!(all.run().1, Started);
    assert_eq!(queued.next(), ("removed".to_string(), "ka1".to_string()));
    s.rt.block_on(s.store.set_status(&ka1, epoch, Running)).unwrap();
    assert_eq!(all.run().1, Running);
    // The steps an agent reports are in the record.
    let step = api::steps::Step {
        id: "build".to_string(),
        status: api::steps::StepStatus::Running,
        start_time: Some(Utc::now()),
        finish_time: None,
        exit_code: None,
        depends_on: Vec::new(),
    };
    s.rt.block_on(s.store.set_steps(&ka1, epoch, std::slice::from_ref(&step))).unwrap();
    let (_, _, run) = all.run();
    let start_ms = step.start_time.map(|t| t.timestamp_millis());
    assert_eq!(run.steps[0].start_time.map(|t| t.timestamp_millis()), start_ms);
    assert_eq!((run.steps[0].id.as_str(), run.steps[0].status), ("build", step.status));
    assert_eq!(s.get("/runs/ka1").run().steps, run.steps, "the same record as GET /runs/{{id}}");
    finish(&s, &ka1, epoch, Succeeded);
    assert_eq!(all.run().1, Succeeded);
    assert_eq!(s.post("/runs/ka2/cancel", Some(&s.auth()), "application/json", b"").status, 200);
    assert_eq!(all.run(), ("ka2".to_string(), Canceled, s.get("/runs/ka2").run()));
    assert_eq!(queued.next(), ("removed".to_string(), "ka2".to_string()));
    // Nothing else was sent: the next change is the next event.
    assert_eq!(s.submit(&encoded(GOOD_TASK)).status, 201);
    assert_eq!(all.run().0, "ka3");
    assert_eq!(queued.run().0, "ka3");

    // One run's watch: its record, then its changes.
    let mut one = Watch::open(&s, "/runs/ka3");
    assert_eq!(one.run().1, Queued);
    assert_eq!(one.next(), ("ready".to_string(), "1".to_string()));
    assert_eq!(s.post("/runs/ka3/cancel", Some(&s.auth()), "application/json", b"").status, 200);
    assert_eq!(one.run().1, Canceled);
    let sse = [("accept", "text/event-stream")];
    assert_eq!(s.get_with("/runs/ka9", &sse).status, 404);
    assert_eq!(s.get_with("/runs?skipToken=3", &sse).status, 400);
}

#[test]
fn server_openapi_lists_every_path_and_the_bearer_scheme() {
    let s = start();
    let a = answer(s.http.get(s.url("/openapi.json")).call().unwrap());
    assert_eq!(a.status, 200);
    let doc = a.json();
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/uploads",
        "/runs",
        "/runs/{id}",
        "/runs/{id}/cancel",
        "/runs/{id}/rerun",
        "/runs/{id}/log",
        "/session",
        "/healthz",
        "/openapi.json",
        "/",
        "/ui/{page}",
        "/agents",
        "/agents/{name}",
        "/agentPools",
        "/agent/whoami",
    ] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["agentToken"]["scheme"], "bearer");
    assert_eq!(paths["/agent/whoami"]["get"]["security"], json!([{"agentToken": []}]));
    assert!(paths["/agents"]["get"]["responses"]["403"].is_object(), "admin only");
    assert!(paths["/runs"]["post"].is_object() && paths["/runs"]["get"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["RunRequest"].is_object());
}

/// A dispatcher with default run settings.
fn dispatcher(store: &Store, hub: &LogHub, data_dir: &Path) -> Arc<dispatch::Dispatcher> {
    let secrets = Arc::new(crate::secret_box::SecretBox::open_or_create(data_dir).unwrap());
    Arc::new(dispatch::Dispatcher::new(
        store.clone(),
        hub.clone(),
        secrets,
        dispatch::RunSettings::default(),
        data_dir.to_path_buf(),
        TTL,
    ))
}

/// A janitor as `kiln serve` has it.
async fn janitor(store: &Store, hub: &LogHub, data_dir: &Path) -> Janitor {
    Janitor {
        store: store.clone(),
        hub: hub.clone(),
        dispatch: dispatcher(store, hub, data_dir),
        data_dir: data_dir.to_path_buf(),
        log_retention: TimeDelta::days(30),
        upload_max_age: TimeDelta::days(1),
    }
}

#[tokio::test]
async fn server_janitor_applies_retention_and_expires_lost_runs() {
    use crate::store::NewRun;
    use kiln_api::status::RunType;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), RunIdPrefix::new("ka").unwrap()).await.unwrap();
    let hub = LogHub::new();
    let janitor = janitor(&store, &hub, dir.path()).await;
    let done = store.create_run(NewRun::new(RunType::QuickRun, "{}")).await.unwrap();
    let claim = store.claim_next(&Claimant::amd64("w"), TTL).await.unwrap().unwrap();
    store.finish(&done.id, claim.epoch, RunStatus::Succeeded, None, &[], None).await.unwrap();
    let upload_dir = kiln_api::uploads::dir(dir.path());
    std::fs::create_dir_all(&upload_dir).unwrap();
    let upload = upload_dir.join(format!("{}.tar.gz", kiln_api::uploads::new_id()));
    std::fs::write(&upload, b"x").unwrap();

    let now = Utc::now();
    let sweep = janitor.sweep(now + TimeDelta::days(29)).await.unwrap();
    assert_eq!(sweep.log_chunks_deleted, 0);
    assert_eq!(sweep.uploads_deleted, 1, "a day-old upload goes");
    assert!(!upload.exists());
    assert_eq!(store.read_log(&done.id, 0, 1 << 20).await.unwrap().len(), 1);

    let running = store.create_run(NewRun::new(RunType::QuickRun, "{}")).await.unwrap();
    let claim = store.claim_next(&Claimant::amd64("w"), TTL).await.unwrap().unwrap();
    store.set_status(&running.id, claim.epoch, RunStatus::Running).await.unwrap();
    let mut rx = hub.subscribe(&running.id);
    let sweep = janitor.sweep(now).await.unwrap();
    assert_eq!(sweep, Sweep::default(), "nothing is due yet");

    let sweep = janitor.sweep(now + TimeDelta::days(31)).await.unwrap();
    assert_eq!(sweep.log_chunks_deleted, 1);
    assert!(store.read_log(&done.id, 0, 1 << 20).await.unwrap().is_empty());
    assert_eq!(sweep.expired_leases.failed, vec![running.id.clone()]);
    let after = store.get_run(&running.id).await.unwrap();
    assert_eq!(after.status, RunStatus::Error);
    assert_eq!(after.error_message.as_deref(), Some("agent w stopped responding during the run"));
    assert!(after.epoch > claim.epoch);
    rx.changed().await.unwrap();
    assert!(rx.borrow().finished, "followers are told the run ended");
}

#[test]
fn server_serves_the_embedded_app_at_root_and_ui_paths() {
    let s = start();
    for path in ["/", "/ui/runs/ka1", "/ui/tasks/x"] {
        let a = answer(s.http.get(s.url(path)).call().unwrap());
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.content_type.as_deref(), Some("text/html; charset=utf-8"), "{path}");
        let page = a.text();
        assert!(page.contains("<main id=\"main\">"), "{page}");
        assert!(!page.contains("<script>"), "no inline script: {page}");
    }
    let page = answer(s.http.get(s.url("/")).call().unwrap()).text();
    let script = page.split_once("src=\"/assets/").unwrap().1.split_once('"').unwrap().0;
    let a = answer(s.http.get(s.url(&format!("/assets/{script}"))).call().unwrap());
    assert_eq!(a.status, 200);
    assert_eq!(a.content_type.as_deref(), Some("text/javascript; charset=utf-8"));
    assert!(a.text().contains("/session"), "the app signs in");
    let a = answer(s.http.get(s.url("/assets/nope.js")).call().unwrap());
    assert_eq!(a.status, 404);
}

/// One raw HTTP/1.1 exchange: `head` (request line and headers, no blank line) is sent, then
/// nothing more; the answer is read until the server closes or sends all it declared.
fn raw_exchange(s: &Server, head: &str) -> String {
    use std::io::Write as _;
    let addr = s.base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    // A server that waits for the body (it sent `100 Continue`) fails the test, not hangs it.
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn server_refuses_declared_oversized_bodies_before_reading_them() {
    let s = start();
    // The client waits for `100 Continue` before sending the body; a refusal comes instead,
    // so it can read it (rather than write into a closed connection).
    let auth = s.auth();
    for (path, kind, limit) in [
        ("/uploads", "application/gzip", "1 MiB (--max-upload-mb)"),
        ("/runs", "application/json", "2 MiB"),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nAuthorization: {auth}\r\nContent-Type: {kind}\r\n\
             Content-Length: {}\r\nExpect: 100-continue",
            3 * 1024 * 1024
        );
        let answer = raw_exchange(&s, &head);
        assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
        assert!(!answer.contains("100 Continue"), "{path}: {answer}");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let error: ErrorBody = serde_json::from_str(body).unwrap();
        assert!(
            error.error.message.ends_with(&format!("limit of {limit}")),
            "{path}: {}",
            error.error.message
        );
    }
    assert!(s.uploads_dir_files().is_empty());
}

#[test]
fn server_refuses_an_upload_that_unpacks_beyond_the_context_limit() {
    let s = start();
    // 3 MiB of zeros: a few KiB compressed, under the 1 MiB upload limit, over the 2 MiB
    // context limit.
    let zeros = vec![0u8; 3 * 1024 * 1024];
    let archive = tar_gz(&[("acb.yaml", GOOD_TASK.as_bytes()), ("zeros", &zeros)]);
    assert!(archive.len() < 64 * 1024, "{}", archive.len());
    let a = s.upload(&archive);
    assert_eq!(a.status, 413, "{}", a.text());
    assert_eq!(
        a.error().error.message,
        "the unpacked context is larger than the server's limit of 2 MiB (--max-context-mb)"
    );
    assert!(s.uploads_dir_files().is_empty());
    let fits = tar_gz(&[("zeros", &zeros[..2 * 1024 * 1024])]);
    assert_eq!(s.upload(&fits).status, 201);
}

#[test]
fn server_refuses_requests_that_cannot_run() {
    let s = start();
    let cases = [
        (
            json!({"type": "FileTaskRunRequest", "source": {"kind": "none"},
                "taskFilePath": "acb.yaml"}),
            "a file task needs a context: `acb.yaml` is read from it",
        ),
        (
            json!({"type": "EncodedTaskRunRequest", "source": {"kind": "git", "url": "not a url"},
                "encodedTaskContent": api::base64_text::encode(GOOD_TASK)}),
            "not a url is not a git or tarball URL",
        ),
        (
            json!({"type": "EncodedTaskRunRequest", "source": {"kind": "tarball", "url": "relative/dir"},
                "encodedTaskContent": api::base64_text::encode(GOOD_TASK)}),
            "relative/dir is not a git or tarball URL",
        ),
    ];
    for (request, error) in cases {
        let a = s.submit(&request);
        assert_eq!(a.status, 400, "{request}: {}", a.text());
        assert_eq!(a.error().error.message, error, "{request}");
    }
    assert!(s.runs().is_empty());
}

#[test]
fn server_answers_every_error_as_json() {
    let s = start();
    // Axum's own answers: no route, a method the route lacks, a body over the limit read by
    // an extractor that does not come with its own error type.
    let a = s.get("/nope");
    assert_eq!((a.status, a.error().error.message.as_str()), (404, "no such endpoint: /nope"));
    let a = answer(s.http.delete(s.url("/runs")).header("Authorization", s.auth()).call().unwrap());
    assert_eq!(a.status, 405);
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    assert_eq!(a.error().error.message, "method not allowed");
    let a = s.post("/runs", Some(&s.auth()), "text/plain", b"{}");
    assert_eq!(a.status, 415);
    assert_eq!(a.content_type.as_deref(), Some("application/json"));
    // A 500's cause stays in the server's log.
    let response = ApiError::internal("cannot open /var/lib/kiln/kiln.db").into_response();
    assert_eq!(response.status(), 500);
    let body = s.rt.block_on(axum::body::to_bytes(response.into_body(), 1 << 16)).unwrap();
    let body: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(body.error.message, error::INTERNAL_MESSAGE);
}

#[test]
fn server_answers_carry_security_headers() {
    let s = start();
    let headers = |path: &str, auth: bool| {
        let mut req = s.http.get(s.url(path));
        if auth {
            req = req.header("Authorization", s.auth());
        }
        let response = req.call().unwrap();
        let get = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        [
            get("content-security-policy"),
            get("x-frame-options"),
            get("x-content-type-options"),
            get("referrer-policy"),
        ]
    };
    for (path, auth) in [("/healthz", false), ("/runs", true), ("/runs", false), ("/nope", true)] {
        let [policy, frame, sniff, referrer] = headers(path, auth);
        assert_eq!(policy, "default-src 'none'; frame-ancestors 'none'", "{path}");
        assert_eq!((frame.as_str(), sniff.as_str()), ("DENY", "nosniff"), "{path}");
        assert_eq!(referrer, "no-referrer", "{path}");
    }
    for page in ["/", "/ui/runs/ka1"] {
        let [policy, frame, ..] = headers(page, false);
        assert_eq!(frame, "DENY");
        assert_eq!(policy, app::APP_POLICY);
        assert!(policy.contains("script-src 'self';") && !policy.contains("unsafe"), "{policy}");
    }
}

#[test]
fn server_openapi_documents_the_answers_every_operation_can_give() {
    let s = start();
    let doc = answer(s.http.get(s.url("/openapi.json")).call().unwrap()).json();
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let statuses = |path: &str, method: &str| {
        op(path, method)["responses"].as_object().unwrap().keys().cloned().collect::<Vec<_>>()
    };
    for (path, method) in
        [("/tasks/{name}/timers", "get"), ("/tasks/{name}/timers/{timer}", "delete")]
    {
        assert!(statuses(path, method).contains(&"401".to_string()), "{method} {path}");
    }
    assert!(!statuses("/healthz", "get").contains(&"401".to_string()), "public");
    for (path, method) in
        [("/runs", "post"), ("/tasks/{name}", "patch"), ("/tasks/{name}/timers", "post")]
    {
        let have = statuses(path, method);
        for status in ["400", "401", "413", "415"] {
            assert!(have.contains(&status.to_string()), "{method} {path}: {status} in {have:?}");
        }
    }
    assert!(statuses("/runs", "get").contains(&"400".to_string()), "bad query values");
    let upload = &op("/uploads", "post")["requestBody"]["content"]["application/octet-stream"];
    let schema = upload["schema"]["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
    assert_eq!(doc["components"]["schemas"][schema]["format"], "binary", "{upload}");
    let page = &op("/ui/{page}", "get")["responses"]["200"]["content"];
    assert!(page["text/html"].is_object(), "{page}");
    let create = &doc["components"]["schemas"]["CreateTask"]["allOf"];
    let name = &create.as_array().unwrap().iter().find(|s| s["properties"].is_object()).unwrap()["properties"]
        ["name"];
    assert_eq!(name["pattern"], "^[A-Za-z0-9_-]{1,50}$", "empty names are refused: {name}");
}

impl Server {
    /// A call with `token` (and a JSON body when `body` is not null).
    fn call(&self, method: &str, path: &str, token: &str, body: &Value) -> Answer {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path))
            .header("Authorization", format!("Bearer {token}"));
        let bytes = match body {
            Value::Null => Vec::new(),
            body => {
                req = req.header("content-type", "application/json");
                serde_json::to_vec(body).unwrap()
            }
        };
        answer(self.http.run(req.body(bytes).unwrap()).unwrap())
    }

    /// Stored run `id`'s whole request with its logins, opened as an agent's lease carries it.
    fn opened(&self, id: &str) -> crate::queue::Opened {
        let secrets = crate::secret_box::SecretBox::open_or_create(self.dir.path()).unwrap();
        let run = self.rt.block_on(self.store.get_run(&RunId::new(id))).unwrap();
        crate::queue::open_request(&secrets, &run).unwrap()
    }

    /// A user (not admin) API token, as a later `kiln token create` would make it.
    fn user_token(&self) -> String {
        let token = "kiln_user0000";
        self.rt.block_on(async {
            crate::store::on_db!(self.store.db(), |pool| sqlx::query(
                "INSERT INTO tokens (name, hash, is_admin, created_at) VALUES ($1, $2, FALSE, 0)",
            )
            .bind("ci")
            .bind(crate::store::tokens::hash_token(token))
            .execute(pool)
            .await
            .map(drop))
            .unwrap();
        });
        token.to_string()
    }
}

#[test]
fn server_agent_registry_is_for_admins_and_agent_tokens_pass_only_the_agent_protocol() {
    let s = start();
    let user = s.user_token();
    let a = s.call("POST", "/agents", &s.token, &json!({"name": "a1", "pool": "arm"}));
    assert_eq!(a.status, 201, "{}", a.text());
    let agent_token = a.json()["token"].as_str().unwrap().to_string();
    assert!(agent_token.starts_with("kiln_agent_"));

    // A user token may use the API but not the registry.
    assert_eq!(s.call("GET", "/runs", &user, &Value::Null).status, 200);
    for (method, path, body) in [
        ("GET", "/agents", Value::Null),
        ("POST", "/agents", json!({"name": "a2"})),
        ("GET", "/agents/a1", Value::Null),
        ("PATCH", "/agents/a1", json!({"pool": ""})),
        ("DELETE", "/agents/a1", Value::Null),
        ("GET", "/agentPools", Value::Null),
    ] {
        let a = s.call(method, path, &user, &body);
        assert_eq!(a.status, 403, "{method} {path}: {}", a.text());
        assert_eq!(a.error().error.code, "Forbidden");
        assert_eq!(a.error().error.message, "this needs an admin token; token ci is a user token");
    }
    let a = s.call("GET", "/agents/a1", &s.token, &Value::Null);
    assert_eq!(a.json()["pool"], "arm", "the user's PATCH and DELETE did nothing");

    // The agent protocol takes the agent token and no API token.
    let a = s.call("GET", "/agent/whoami", &agent_token, &Value::Null);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json(), json!({"name": "a1", "pool": "arm", "labels": {}}));
    for token in [s.token.as_str(), user.as_str(), "kiln_agent_0000"] {
        let a = s.call("GET", "/agent/whoami", token, &Value::Null);
        assert_eq!((a.status, a.error().error.code.as_str()), (401, "Unauthorized"), "{token}");
    }
    // And an agent token passes nothing else.
    for (method, path) in
        [("GET", "/runs"), ("GET", "/tasks"), ("GET", "/whoami"), ("GET", "/agents")]
    {
        let a = s.call(method, path, &agent_token, &Value::Null);
        assert_eq!(a.status, 401, "{method} {path}: {}", a.text());
    }
    let a = s.post(
        "/runs",
        Some(&format!("Bearer {agent_token}")),
        "application/json",
        &serde_json::to_vec(&encoded(GOOD_TASK)).unwrap(),
    );
    assert_eq!(a.status, 401);
    assert!(s.runs().is_empty(), "nothing was queued");
}

#[test]
fn server_deleting_an_agent_ends_its_run_and_tells_the_followers() {
    let s = start();
    let a = s.call("POST", "/agents", &s.token, &json!({"name": "gone"}));
    assert_eq!(a.status, 201, "{}", a.text());
    let submitted = s.submit(&encoded(GOOD_TASK)).run();
    let epoch = claim(&s, &RunId::new(submitted.run_id.clone()));
    s.rt.block_on(async {
        crate::store::on_db!(s.store.db(), |pool| sqlx::query(
            "UPDATE runs SET agent_name = 'gone' WHERE id = $1"
        )
        .bind(&submitted.run_id)
        .execute(pool)
        .await
        .map(drop))
        .unwrap();
    });
    let mut rx = s.hub.subscribe(&RunId::new(submitted.run_id.clone()));
    let a = s.call("DELETE", "/agents/gone", &s.token, &Value::Null);
    assert_eq!(a.status, 204, "{}", a.text());
    s.rt.block_on(rx.changed()).unwrap();
    assert!(rx.borrow().finished, "followers are told the run ended");
    let run = s.get(&format!("/runs/{}", submitted.run_id)).run();
    assert_eq!(run.status, RunStatus::Error);
    assert_eq!(run.run_error_message.as_deref(), Some("agent gone was deleted during the run"));
    let late = s.rt.block_on(s.store.append_log(&RunId::new(submitted.run_id), epoch, b"x"));
    assert!(matches!(late, Err(StoreError::StaleLease { .. })), "{late:?}");
    let a = s.call("DELETE", "/agents/gone", &s.token, &Value::Null);
    assert_eq!((a.status, a.error().error.code.as_str()), (404, "AgentNotFound"));
}

/// Every `platform` the API takes (a run request, a task's definition, its update, a task
/// run's override) is held to the `--platform` vocabulary: a bad one is a 400 naming the field
/// and the value, and nothing is stored.
#[test]
fn server_refuses_unknown_platforms_everywhere_and_stores_nothing() {
    let s = start();
    let token = s.token.clone();
    let refused = |a: Answer, value: &str, part: &str| {
        assert_eq!(a.status, 400, "{}", a.text());
        let message = a.error().error.message;
        assert!(message.starts_with(&format!("platform {value}: ")), "{message}");
        assert!(message.contains(part), "{message}");
    };
    let arm65 = json!({"os": "linux", "architecture": "arm65"});
    let mut request = encoded(GOOD_TASK);
    request["platform"] = arm65.clone();
    refused(s.submit(&request), "linux/arm65", "unknown architecture \"arm65\"");
    request["platform"] = json!({"os": "Linux", "architecture": "amd64"});
    refused(s.submit(&request), "Linux/amd64", "unknown OS \"Linux\"");
    request["platform"] = json!({"os": "linux", "architecture": "arm", "variant": ""});
    refused(s.submit(&request), "linux/arm/", "os/arch[/variant]");
    assert!(s.runs().is_empty());

    let task = json!({"name": "app", "contextPath": "/dev/null",
        "step": {"type": "EncodedTask", "encodedTaskContent": api::base64_text::encode(GOOD_TASK)},
        "platform": arm65});
    refused(s.call("POST", "/tasks", &token, &task), "linux/arm65", "unknown architecture");
    assert!(s.rt.block_on(s.store.list_tasks()).unwrap().is_empty());

    let mut task = task;
    task["platform"] = json!({"os": "linux", "architecture": "arm64"});
    let a = s.call("POST", "/tasks", &token, &task);
    assert_eq!(a.status, 201, "{}", a.text());
    let update = json!({"platform": {"os": "windws", "architecture": "amd64"}});
    refused(s.call("PATCH", "/tasks/app", &token, &update), "windws/amd64", "unknown OS");
    let shown = s.call("GET", "/tasks/app", &token, &Value::Null).json();
    assert_eq!(shown["platform"], json!({"os": "linux", "architecture": "arm64"}), "{shown}");
    let run = json!({"platform": {"os": "linux", "architecture": "x86"}});
    refused(s.call("POST", "/tasks/app/runs", &token, &run), "linux/x86", "unknown architecture");
    assert!(s.runs().is_empty());

    // A multi-platform build's list is checked entry by entry, and dispatched by its first.
    let amd64 = json!({"os": "linux", "architecture": "amd64"});
    let build = json!({"type": "DockerBuildRequest", "source": {"kind": "none"},
        "imageNames": ["app:1"], "platform": amd64, "platforms": [amd64, arm65]});
    let a = s.submit(&build);
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.error().error.message.starts_with("platforms: linux/arm65: "), "{}", a.text());
    let arm64 = json!({"os": "linux", "architecture": "arm64"});
    let build = json!({"type": "DockerBuildRequest", "source": {"kind": "none"},
        "imageNames": ["app:1"], "platform": arm64, "platforms": [amd64, arm64]});
    let a = s.submit(&build);
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(
        a.error().error.message.contains("the first of platforms (linux/amd64)"),
        "{}",
        a.text()
    );
    assert!(s.runs().is_empty());
}

/// `dockerApi: host` gives steps the engine's own socket: only an admin token may ask for it,
/// on a run, a task, or a change to such a task, and a user's refused request stores nothing.
/// Narrower modes are anyone's, and a task's setting travels in its runs' requests.
#[test]
fn server_lets_only_admins_give_steps_the_engines_own_socket() {
    let s = start();
    let user = s.user_token();
    let forbidden = |a: Answer, what: &str| {
        assert_eq!(a.status, 403, "{}", a.text());
        assert_eq!(
            a.error().error.message,
            format!(
                "{what} gives its steps the engine's own Docker socket (dockerApi: host), which \
                 only an admin token may do; token ci is a user token"
            )
        );
    };
    let mut request = encoded(GOOD_TASK);
    request["dockerApi"] = json!("host");
    forbidden(s.call("POST", "/runs", &user, &request), "the run");
    assert!(s.runs().is_empty());
    request["dockerApi"] = json!("off");
    let a = s.call("POST", "/runs", &user, &request);
    assert_eq!(a.status, 201, "{}", a.text());
    let id = RunId::new(a.json()["runId"].as_str().unwrap());
    assert_eq!(s.opened(id.as_str()).request.docker_api(), Some(kiln_api::DockerApiMode::Off));

    let task = |mode: &str| {
        json!({"name": "app", "contextPath": "/dev/null", "dockerApi": mode,
            "step": {"type": "EncodedTask", "encodedTaskContent": api::base64_text::encode(GOOD_TASK)}})
    };
    forbidden(s.call("POST", "/tasks", &user, &task("host")), "the task");
    assert!(s.rt.block_on(s.store.list_tasks()).unwrap().is_empty());
    let a = s.call("POST", "/tasks", &user, &task("scoped"));
    assert_eq!(a.status, 201, "{}", a.text());
    assert_eq!(a.json()["dockerApi"], "scoped");
    forbidden(s.call("PATCH", "/tasks/app", &user, &json!({"dockerApi": "host"})), "task app");
    let a = s.call("PATCH", "/tasks/app", &s.token, &json!({"dockerApi": "host"}));
    assert_eq!((a.status, &a.json()["dockerApi"]), (200, &json!("host")), "{}", a.text());

    // The task's code may now only be changed by an admin; a user may run it as it stands.
    forbidden(s.call("PATCH", "/tasks/app", &user, &json!({"timeout": 600})), "task app");
    let overrides = json!({"values": [{"name": "x", "value": "1"}]});
    forbidden(
        s.call("POST", "/tasks/app/runs", &user, &overrides),
        "a run of task app with overrides",
    );
    let a = s.call("POST", "/tasks/app/runs", &user, &json!({}));
    assert_eq!(a.status, 201, "{}", a.text());
    let id = RunId::new(a.json()["runId"].as_str().unwrap());
    assert_eq!(s.opened(id.as_str()).request.docker_api(), Some(kiln_api::DockerApiMode::Host));

    // `null` returns the task to the agent's own setting.
    let a = s.call("PATCH", "/tasks/app", &s.token, &json!({"dockerApi": null}));
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.json().get("dockerApi").is_none(), "{}", a.text());
    let a = s.call("PATCH", "/tasks/app", &user, &json!({"dockerApi": "sandbox"}));
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.error().error.message.contains("dockerApi"), "{}", a.text());
}

#[test]
fn server_rerun_queues_the_same_sealed_request_as_a_linked_run() {
    let s = start();
    let mut request = encoded("version: v1.1.0\nsteps:\n  - cmd: bash echo {{.Values.who}}\n");
    request["values"] = json!([{"name": "who", "value": "s3cret", "isSecret": true}]);
    request["timeout"] = json!(600);
    assert_eq!(s.submit(&request).status, 201);
    let a = s.post("/runs/ka1/cancel", Some(&s.auth()), "application/json", b"");
    assert_eq!(a.status, 200, "{}", a.text());
    let a = s.post("/runs/ka1/rerun", Some(&s.auth()), "application/json", b"");
    assert_eq!(a.status, 201, "{}", a.text());
    let again = a.run();
    let first = s.get("/runs/ka1").run();
    assert_eq!((again.run_id.as_str(), again.status), ("ka2", RunStatus::Queued));
    assert_eq!(again.rerun_of.as_deref(), Some("ka1"));
    assert_eq!(first.rerun_of, None);
    assert_eq!(
        (&again.request, again.timeout, &again.trigger, again.run_type),
        (&first.request, first.timeout, &first.trigger, first.run_type)
    );
    // What the agent gets is the whole first request again, the secret value included.
    assert_eq!(s.opened("ka2"), s.opened("ka1"));
    assert!(serde_json::to_string(&s.opened("ka2").request).unwrap().contains("s3cret"));
    let a = s.post("/runs/ka9/rerun", Some(&s.auth()), "application/json", b"");
    assert_eq!((a.status, a.error().error.code.as_str()), (404, "RunNotFound"));
    let a = s.post("/runs/ka1/rerun", None, "application/json", b"");
    assert_eq!(a.status, 401);
}

#[test]
fn server_run_list_filters_by_trigger_agent_pool_branch_and_search() {
    let s = start();
    for request in [encoded(GOOD_TASK), encoded(GOOD_TASK)] {
        assert_eq!(s.submit(&request).status, 201);
    }
    let mut pooled = encoded(GOOD_TASK);
    pooled["agentPoolName"] = json!("gpu");
    assert_eq!(s.submit(&pooled).status, 201, "pool");
    // A commit-triggered run as a webhook queues it (the store is the webhook's writer).
    let detail = api::TriggerDetail {
        source_trigger: Some(api::task::SourceTrigger {
            id: None,
            event_type: "commit".into(),
            commit_id: "abc123def".into(),
            pull_request_id: None,
            repository_url: "https://git.example/app".into(),
            branch_name: "release_1".into(),
            provider_type: "Gitea".into(),
        }),
        ..Default::default()
    };
    let new = crate::store::NewRun {
        trigger: detail.column().to_string(),
        trigger_detail: Some(serde_json::to_string(&detail).unwrap()),
        branch: Some("release_1".into()),
        task_name: Some("app".into()),
        ..crate::store::NewRun::new(kiln_api::status::RunType::AutoRun, "{}")
    };
    s.rt.block_on(s.store.create_run(new)).unwrap();
    let ids = |path: &str| -> Vec<String> {
        let a = s.get(path);
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        let page: api::List<api::Run> = serde_json::from_slice(&a.body).unwrap();
        page.value.into_iter().map(|r| r.run_id).collect()
    };
    assert_eq!(ids("/runs?trigger=Manual"), ["ka3", "ka2", "ka1"]);
    assert_eq!(ids("/runs?trigger=Commit"), ["ka4"]);
    assert_eq!(ids("/runs?agentPool=gpu"), ["ka3"]);
    assert_eq!(ids("/runs?branch=release_1"), ["ka4"]);
    assert_eq!(ids("/runs?branch=release"), Vec::<String>::new());
    assert_eq!(ids("/runs?agent=nobody"), Vec::<String>::new());
    // Search: a commit prefix in any case, a run ID; `_` and `%` are literal.
    assert_eq!(ids("/runs?search=ABC123"), ["ka4"]);
    assert_eq!(ids("/runs?search=ka2"), ["ka2"]);
    assert_eq!(ids("/runs?search=%25"), Vec::<String>::new());
    // Filters carry into the next page's link.
    let a = s.get("/runs?trigger=Manual&top=2");
    let page: api::List<api::Run> = serde_json::from_slice(&a.body).unwrap();
    let next = page.next_link.unwrap();
    assert!(next.contains("trigger=Manual"), "{next}");
    assert_eq!(ids(&next), ["ka1"]);
}

/// A signed-in browser: its cookie and CSRF token.
fn sign_in(s: &Server) -> (String, String) {
    let body = serde_json::to_vec(&json!({"token": s.token})).unwrap();
    let response = s
        .http
        .post(s.url("/session"))
        .header("content-type", "application/json")
        .header("origin", &s.base)
        .send(&body[..])
        .unwrap();
    let cookie = response.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    let a = answer(response);
    assert_eq!(a.status, 201, "{}", a.text());
    assert!(cookie.contains("; HttpOnly; SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let session: api::Session = serde_json::from_slice(&a.body).unwrap();
    assert_eq!((session.name.as_str(), session.role), ("admin", api::TokenRole::Admin));
    let pair = cookie.split(';').next().unwrap().to_string();
    (pair, session.csrf_token)
}

#[test]
fn server_session_cookie_reads_freely_and_writes_only_with_csrf_from_this_origin() {
    let s = start();
    let (cookie, csrf) = sign_in(&s);
    let with = |method: &str, path: &str, headers: &[(&str, &str)]| -> Answer {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(s.url(path))
            .header("cookie", &cookie)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = if method == "POST" && path == "/runs" {
            serde_json::to_vec(&encoded(GOOD_TASK)).unwrap()
        } else {
            Vec::new()
        };
        answer(s.http.run(req.body(body).unwrap()).unwrap())
    };
    // The cookie reads like a token; the session tells the app its CSRF token.
    assert_eq!(with("GET", "/runs", &[]).status, 200);
    let a = with("GET", "/session", &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["csrfToken"], csrf);
    let a = answer(s.http.get(s.url("/session")).call().unwrap());
    assert_eq!(a.status, 204, "no cookie: not signed in");
    // A write without the CSRF token, with a wrong one, or from another origin does nothing.
    let origin = ("origin", s.base.as_str());
    for headers in [
        vec![origin],
        vec![origin, ("x-csrf-token", "wrong")],
        vec![("origin", "http://evil.example"), ("x-csrf-token", csrf.as_str())],
        vec![("sec-fetch-site", "cross-site"), ("x-csrf-token", csrf.as_str())],
    ] {
        let a = with("POST", "/runs", &headers);
        assert_eq!((a.status, a.error().error.code.as_str()), (403, "Forbidden"), "{headers:?}");
    }
    assert!(s.runs().is_empty());
    let good = [origin, ("x-csrf-token", csrf.as_str())];
    assert_eq!(with("POST", "/runs", &good).status, 201);
    // Another site cannot sign a browser in; a wrong token signs nobody in.
    let body = serde_json::to_vec(&json!({"token": s.token})).unwrap();
    let req = s.http.post(s.url("/session")).header("origin", "http://evil.example");
    let a = answer(req.header("content-type", "application/json").send(&body[..]).unwrap());
    assert_eq!(a.status, 403);
    let a = s.post("/session", None, "application/json", br#"{"token": "kiln_0000"}"#);
    assert_eq!(a.status, 401);
    // Sign-out needs the CSRF token too, then the cookie is dead.
    assert_eq!(with("DELETE", "/session", &[origin]).status, 403);
    let a = with("DELETE", "/session", &good);
    assert_eq!(a.status, 204, "{}", a.text());
    assert_eq!(with("GET", "/runs", &[]).status, 401);
    assert_eq!(with("GET", "/session", &[]).status, 204);
    // Bearer requests never need a CSRF token.
    let a = s.post("/runs/ka1/cancel", Some(&s.auth()), "application/json", b"");
    assert_eq!(a.status, 200, "{}", a.text());
}
