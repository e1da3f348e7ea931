//! `GET /runs/{id}/log`: a run's stored log from a byte offset, as plain text or, for
//! `follow=true`, as a stream that stays open until the run ends; with `Accept:
//! text/event-stream` the same stream as server-sent events a browser can resume
//! (`Last-Event-ID`).
//!
//! A read of the log so far can be bounded, so a viewer of a long log fetches only what it
//! shows: `length=N` after `offset`, or HTTP's `Range: bytes=a-b` (also `a-` and the suffix
//! `-n`), answered `206 Partial Content` with `Content-Range`, or 416 past the end. Every answer
//! (and `HEAD`) carries the stored length in `x-kiln-log-length`.
//!
//! With `timestamps=true` the log so far comes with each line's arrival time in front, from the
//! times the store keeps beside the log.
//!
//! Every byte sent is read from the store by offset, never taken from a wake-up: the hub only
//! says "look again". So a follower gets exactly what is stored, in order, without gaps or
//! duplicates, however wake-ups interleave. Plain bodies are sent as the store's pages (up to
//! 1 MiB each) with no per-line work.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header::{
    ACCEPT, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_RANGE, CONTENT_TYPE, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _, stream};
use kiln_api::status::RunStatus;
use kiln_api::{ErrorBody, LOG_LENGTH_HEADER, LOG_OFFSET_HEADER, LogQuery};
use kiln_task::run_id::RunId;
use tokio::sync::watch;

use super::error::ApiError;
use super::state::AppState;
use crate::log_hub::{LogHub, LogProgress};
use crate::store::{Store, StoreError};
use kiln_api::run_log;

/// Largest read from the store at once.
pub const PAGE_BYTES: usize = 1 << 20;
/// How often a follower re-reads the store without a wake-up (covers a missed wake-up, and
/// writers in other processes on SQLite, whose writes no notification announces).
const RECHECK: Duration = Duration::from_secs(1);
/// The request header a reconnecting `EventSource` sends.
const LAST_EVENT_ID: &str = "last-event-id";

/// A run's log.
#[utoipa::path(get, path = "/runs/{id}/log", tag = "runs",
    params(("id" = String, Path, description = "Run ID"),
        ("offset" = Option<u64>, Query, description = "Byte offset to start from"),
        ("length" = Option<u64>, Query, description = "At most this many bytes from `offset`; not with follow"),
        ("follow" = Option<bool>, Query, description = "Stream new bytes until the run ends"),
        ("timestamps" = Option<bool>, Query, description = "Prefix each line with its arrival time (RFC 3339); not with follow"),
        ("Range" = Option<String>, Header, description = "`bytes=a-b`, `bytes=a-` or `bytes=-n` \
            of the plain log so far (not with follow, timestamps or SSE): answered 206 with \
            `Content-Range`, 416 when it starts past the end; other forms are ignored"),
        ("Last-Event-ID" = Option<u64>, Header, description = "SSE resume offset; overrides `offset`")),
    responses(
        (status = 200, description = "Log bytes from `offset` (header x-kiln-log-offset; the \
            stored length in x-kiln-log-length, also on HEAD); server-sent events (`log`, then \
            `end` with the final status) for `Accept: text/event-stream`", body = String,
            content_type = "text/plain; charset=utf-8"),
        (status = 206, description = "The bytes of `Range` (header Content-Range)", body = String,
            content_type = "text/plain; charset=utf-8"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 416, body = ErrorBody)))]
pub async fn log(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    query: Result<Query<LogQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let id = RunId::new(id);
    let sse = wants_sse(&headers);
    if query.length.is_some() && (query.follow || sse) {
        return Err(ApiError::BadRequest(
            "length bounds a read of the log so far; it cannot follow".to_string(),
        ));
    }
    if query.timestamps && (query.follow || sse) {
        return Err(ApiError::BadRequest(
            "timestamps=true reads the log so far; it cannot follow".to_string(),
        ));
    }
    // Also what tells an unknown run (404) before anything else is read.
    let total = state.store.log_len(&id).await?;
    let mut response = if query.timestamps {
        let body = timed_log(&state.store, &id, query.offset, query.length).await?;
        text_response(Body::from(body), query.offset)
    } else if sse {
        let offset = match headers.get(LAST_EVENT_ID) {
            Some(v) => v.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
                ApiError::BadRequest("Last-Event-ID must be a byte offset".to_string())
            })?,
            None => query.offset,
        };
        let reader = LogReader::open(&state.store, &state.hub, id, offset, true).await?;
        let mut response =
            Sse::new(sse_events(reader)).keep_alive(KeepAlive::default()).into_response();
        response.headers_mut().insert(LOG_OFFSET_HEADER, HeaderValue::from(offset));
        response
    } else if let Some(range) = (!query.follow).then(|| requested_range(&headers)).flatten() {
        ranged(&state, id, range, total).await?
    } else {
        let mut reader =
            LogReader::open(&state.store, &state.hub, id, query.offset, query.follow).await?;
        if let Some(length) = query.length {
            reader = reader.until(query.offset.saturating_add(length));
        }
        let mut response = text_response(Body::from_stream(byte_stream(reader)), query.offset);
        if query.follow {
            response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        response
    };
    let h = response.headers_mut();
    h.insert(LOG_LENGTH_HEADER, HeaderValue::from(total));
    if !sse && !query.follow && !query.timestamps {
        h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    Ok(response)
}

/// The bytes of `range` of a log of `total` bytes: 206 with `Content-Range`, or 416 (with
/// `Content-Range: bytes */total`) when the range starts past the end.
async fn ranged(
    state: &AppState,
    id: RunId,
    range: ByteRange,
    total: u64,
) -> Result<Response, ApiError> {
    let Some((first, last)) = range.within(total) else {
        let mut response = ApiError::UnsatisfiableRange { total }.into_response();
        response.headers_mut().insert(CONTENT_RANGE, header_value(format!("bytes */{total}")));
        return Ok(response);
    };
    let reader = LogReader::open(&state.store, &state.hub, id, first, false).await?;
    let mut response = text_response(Body::from_stream(byte_stream(reader.until(last + 1))), first);
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    response
        .headers_mut()
        .insert(CONTENT_RANGE, header_value(format!("bytes {first}-{last}/{total}")));
    Ok(response)
}

/// A plain-text answer whose body starts at byte `offset` of the log.
fn text_response(body: Body, offset: u64) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(LOG_OFFSET_HEADER, HeaderValue::from(offset));
    response
}

/// A header value of digits, spaces, `*`, `-` and `/` (always valid).
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A `Range` header's one byte range, as asked (RFC 9110 §14.1.2): `first-last`, `first-`, or
/// the last `n` bytes (`-n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    From { first: u64, last: Option<u64> },
    Suffix(u64),
}

impl ByteRange {
    /// Parses `bytes=…` with one range; `None` for anything else (several ranges, other units,
    /// bad syntax), which HTTP lets a server answer with the whole representation.
    pub fn parse(value: &str) -> Option<ByteRange> {
        let spec = value.trim().strip_prefix("bytes=")?.trim();
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        let number = |s: &str| -> Option<u64> {
            s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok()).flatten()
        };
        if a.is_empty() {
            return number(b).map(ByteRange::Suffix);
        }
        let first = number(a)?;
        let last = if b.is_empty() { None } else { Some(number(b)?) };
        if last.is_some_and(|last| last < first) {
            return None;
        }
        Some(ByteRange::From { first, last })
    }

    /// The first and last byte (inclusive) of a log of `total` bytes; `None` when unsatisfiable
    /// (starting at or past the end, or an empty suffix or log).
    pub fn within(self, total: u64) -> Option<(u64, u64)> {
        let end = total.checked_sub(1)?;
        match self {
            ByteRange::From { first, last } => {
                (first <= end).then(|| (first, last.map_or(end, |l| l.min(end))))
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some((total.saturating_sub(n), end)),
        }
    }
}

fn requested_range(headers: &HeaderMap) -> Option<ByteRange> {
    ByteRange::parse(headers.get(RANGE)?.to_str().ok()?)
}

/// The log from `offset` (at most `length` bytes) with each line's arrival time in front
/// (`timestamps=true`).
async fn timed_log(
    store: &Store,
    id: &RunId,
    offset: u64,
    length: Option<u64>,
) -> Result<Vec<u8>, ApiError> {
    let run = store.get_run(id).await?;
    let max = length.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let data: Vec<u8> =
        store.read_log(id, offset, max).await?.into_iter().flat_map(|c| c.data).collect();
    let times = store.log_times(id, offset, offset + data.len() as u64).await?;
    Ok(run_log::with_times(&data, offset, &times, run.created_at))
}

/// The client asked for server-sent events (an `EventSource` does).
pub(super) fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// Reads a run's log in order from an offset; when following, waits for more until the run is
/// terminal and everything stored was read.
pub struct LogReader {
    store: Store,
    run: RunId,
    offset: u64,
    /// Wake-ups while following; `None` when not following or once the hub dropped the channel.
    rx: Option<watch::Receiver<LogProgress>>,
    /// Following: the run was seen terminal before the last read began, so an empty read is the
    /// end. Always true when not following.
    ended: bool,
    /// The run's status as last read.
    status: RunStatus,
    failed: bool,
    /// Where a bounded read stops (exclusive); `u64::MAX` when unbounded.
    until: u64,
}

impl LogReader {
    /// Checks the run exists (`NotFound` otherwise) and, when following a run that is not over,
    /// subscribes to its wake-ups before anything is read.
    pub async fn open(
        store: &Store,
        hub: &LogHub,
        run: RunId,
        offset: u64,
        follow: bool,
    ) -> Result<LogReader, StoreError> {
        let record = store.get_run(&run).await?;
        let ended = !follow || record.status.is_terminal();
        let rx = (!ended).then(|| hub.subscribe(&run));
        Ok(LogReader {
            store: store.clone(),
            run,
            offset,
            rx,
            ended,
            status: record.status,
            failed: false,
            until: u64::MAX,
        })
    }

    /// Stops the read before byte `until` (a bounded read of the log so far).
    pub fn until(self, until: u64) -> LogReader {
        LogReader { until, ..self }
    }

    /// The next stored bytes and the offset they start at; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<(u64, Bytes)>, StoreError> {
        loop {
            if self.offset >= self.until {
                return Ok(None);
            }
            let max =
                PAGE_BYTES.min(usize::try_from(self.until - self.offset).unwrap_or(PAGE_BYTES));
            let pages = self.store.read_log(&self.run, self.offset, max).await?;
            if let Some(last) = pages.last() {
                let start = self.offset;
                self.offset = last.end();
                return Ok(Some((start, join(pages))));
            }
            if self.ended {
                return Ok(None);
            }
            if self.wait_for_news().await {
                continue;
            }
            // No word from the hub (a writer in another process, the recheck timer, the run's
            // end): the record says whether more can come.
            let record = self.store.get_run(&self.run).await?;
            self.status = record.status;
            if record.status.is_terminal() {
                // One more read: whatever was stored before the end.
                self.ended = true;
                continue;
            }
            if self.rx.is_none() {
                tokio::time::sleep(RECHECK).await;
            }
        }
    }

    /// Waits (at most [`RECHECK`]) for the hub to announce bytes past what was read; `true`
    /// when it did. While the hub vouches that nothing new was written and the run goes on,
    /// a follower waits without asking the store for the record again, so a followed batch
    /// costs one read instead of three queries.
    async fn wait_for_news(&mut self) -> bool {
        let Some(rx) = self.rx.as_mut() else { return false };
        let progress = *rx.borrow_and_update();
        if progress.finished {
            // Nothing more will be announced: from here on the record decides (and the
            // recheck timer paces it).
            self.rx = None;
            return false;
        }
        // Published between the read and now: read again at once.
        if progress.len > self.offset {
            return true;
        }
        match tokio::time::timeout(RECHECK, rx.changed()).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => {
                // The hub dropped the channel: the run ended; the record will say so.
                self.rx = None;
                false
            }
            Err(_) => false,
        }
    }

    /// The run's status as last read (terminal once a follower reached the end).
    pub fn status(&self) -> RunStatus {
        self.status
    }
}

/// The pages as one buffer, without copying a single page.
fn join(mut pages: Vec<crate::store::LogData>) -> Bytes {
    if pages.len() == 1 {
        return Bytes::from(pages.remove(0).data);
    }
    let mut buf = BytesMut::with_capacity(pages.iter().map(|p| p.data.len()).sum());
    for p in &pages {
        buf.extend_from_slice(&p.data);
    }
    buf.freeze()
}

/// The plain body: the reader's pages as they come; a store failure aborts the response.
fn byte_stream(reader: LogReader) -> impl Stream<Item = Result<Bytes, StoreError>> {
    stream::unfold(reader, |mut reader| async move {
        if reader.failed {
            return None;
        }
        match reader.next().await {
            Ok(Some((_, bytes))) => Some((Ok(bytes), reader)),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(run = %reader.run, error = %e, "reading the log failed");
                reader.failed = true;
                Some((Err(e), reader))
            }
        }
    })
}

/// SSE state: the reader, and bytes of an unfinished UTF-8 character held back for the next
/// event (so no character is split into two replacement characters).
struct SseState {
    reader: LogReader,
    carry: Vec<u8>,
    /// Offset just past the last byte sent as an event.
    sent: u64,
    done: bool,
}

/// `event: log` per read (`id:` = the offset after it), then `event: end` with the final status.
fn sse_events(reader: LogReader) -> impl Stream<Item = Result<Event, Infallible>> {
    let sent = reader.offset;
    let state = SseState { reader, carry: Vec::new(), sent, done: false };
    stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            match s.reader.next().await {
                Ok(Some((_, bytes))) => {
                    s.carry.extend_from_slice(&bytes);
                    let keep = incomplete_utf8_tail(&s.carry);
                    let n = s.carry.len() - keep;
                    if n == 0 {
                        continue;
                    }
                    let text: Vec<u8> = s.carry.drain(..n).collect();
                    s.sent += n as u64;
                    return Some((vec![log_event(&text, s.sent)], s));
                }
                Ok(None) => {
                    let mut events = Vec::new();
                    if !s.carry.is_empty() {
                        s.sent += s.carry.len() as u64;
                        events.push(log_event(&std::mem::take(&mut s.carry), s.sent));
                    }
                    events.push(Event::default().event("end").data(s.reader.status().as_str()));
                    s.done = true;
                    return Some((events, s));
                }
                Err(e) => {
                    tracing::error!(run = %s.reader.run, error = %e, "reading the log failed");
                    s.done = true;
                    return Some((vec![Event::default().event("error").data(e.to_string())], s));
                }
            }
        }
    })
    .flat_map(|events| stream::iter(events.into_iter().map(Ok)))
}

/// One `log` event. Line ends are normalised to `\n` (SSE treats a lone `\r` as a line end too).
fn log_event(bytes: &[u8], end: u64) -> Event {
    let text = String::from_utf8_lossy(bytes).replace("\r\n", "\n").replace('\r', "\n");
    Event::default().id(end.to_string()).event("log").data(text)
}

/// How many bytes at the end of `b` begin a UTF-8 character that is not complete yet.
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    let n = b.len();
    for back in 1..=n.min(3) {
        let byte = b[n - back];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let need = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod unit {
    use super::{ByteRange, incomplete_utf8_tail};

    #[test]
    fn server_byte_ranges_parse_and_clamp_as_http_says() {
        let r = |v: &str| ByteRange::parse(v);
        assert_eq!(r("bytes=0-99"), Some(ByteRange::From { first: 0, last: Some(99) }));
        assert_eq!(r("bytes=100-"), Some(ByteRange::From { first: 100, last: None }));
        assert_eq!(r("bytes=-5"), Some(ByteRange::Suffix(5)));
        // Ignored (the whole log is the answer): other units, several ranges, bad syntax.
        for ignored in ["items=0-1", "bytes=0-1,4-5", "bytes=5-1", "bytes=a-b", "bytes=-", "0-1"] {
            assert_eq!(r(ignored), None, "{ignored}");
        }
        let within = |v: &str, total| r(v).unwrap().within(total);
        assert_eq!(within("bytes=0-99", 10), Some((0, 9)));
        assert_eq!(within("bytes=3-", 10), Some((3, 9)));
        assert_eq!(within("bytes=-4", 10), Some((6, 9)));
        assert_eq!(within("bytes=-40", 10), Some((0, 9)));
        assert_eq!(within("bytes=10-", 10), None);
        assert_eq!(within("bytes=0-", 0), None);
        assert_eq!(within("bytes=-0", 10), None);
    }

    #[test]
    fn server_utf8_tail_is_held_back() {
        assert_eq!(incomplete_utf8_tail(b"abc"), 0);
        let euro = "€".as_bytes();
        assert_eq!(incomplete_utf8_tail(&euro[..1]), 1);
        assert_eq!(incomplete_utf8_tail(&[b"a", &euro[..2]].concat()), 2);
        assert_eq!(incomplete_utf8_tail(euro), 0);
        assert_eq!(incomplete_utf8_tail(&[0xff]), 0);
    }
}
