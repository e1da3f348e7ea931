//! A run's log as people read it: the worker's [`Event`]s turned into `step | text` lines, and
//! the closing lines (dependency report, outcome). `kiln exec` prints it to a terminal (adding
//! colour) and the agent stores it for `kiln serve`; both use this one implementation, so a
//! stored log reads exactly like a local run's output.
//!
//! Containers write arbitrary pieces, not lines: [`LineAssembler`] keeps the unfinished line of
//! each step and stream until its newline arrives (or it grows past [`MAX_PARTIAL_LINE`], so one
//! endless line cannot fill memory), then prefixes it with the step ID padded to the widest ID.
//! [`Dependencies`] collects the build steps' dependency reports and the pushed digests.

use std::io::{self, Write};

use crate::status::RunStatus;
use chrono::{DateTime, Utc};
use kiln_plan::event::step_marked;
use kiln_plan::event::{Event, LogStream, RunStatus as WorkerStatus, StepStatus};
use kiln_plan::plan::StepId;
use kiln_plan::report::{self, Dependency};

/// Output held back waiting for a newline, at most.
pub const MAX_PARTIAL_LINE: usize = 64 * 1024;

/// The name run-level lines (network setup, cleanup) are prefixed with.
pub const RUN_LINE_NAME: &str = "kiln";

/// One output stream of a run: a step's (or the run's own) stdout, stderr or system lines.
pub type StreamKey = (Option<StepId>, LogStream);

/// Assembles log pieces into whole lines, per step and stream.
#[derive(Debug, Clone, Default)]
pub struct LineAssembler {
    width: usize,
    /// Output of each step and stream that has not reached a newline yet, in first-seen order
    /// (a handful of entries: a linear search beats hashing, and the final flush is ordered).
    partial: Vec<(StreamKey, Vec<u8>)>,
}

impl LineAssembler {
    /// For a plan whose steps are `order`: the prefix is padded to the longest step ID.
    pub fn new(order: &[StepId]) -> Self {
        Self {
            width: order.iter().map(|s| s.as_str().len()).max().unwrap_or(0),
            partial: Vec::new(),
        }
    }

    /// The prefix width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Adds `data` of `step`'s `stream`; calls `line` with each line it completes (without
    /// its newline), in order. Output without newlines is passed on in pieces of
    /// [`MAX_PARTIAL_LINE`].
    pub fn push(
        &mut self,
        step: Option<&StepId>,
        stream: LogStream,
        data: &[u8],
        mut line: impl FnMut(Option<&StepId>, &str),
    ) {
        let key = (step.cloned(), stream);
        let index = match self.partial.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.partial.push((key, Vec::new()));
                self.partial.len() - 1
            }
        };
        let buffer = &mut self.partial[index].1;
        buffer.extend_from_slice(data);
        let end = match buffer.iter().rposition(|&b| b == b'\n') {
            Some(end) => end,
            None if buffer.len() >= MAX_PARTIAL_LINE => buffer.len(),
            None => return,
        };
        let lines: Vec<u8> = buffer.drain(..end.min(buffer.len() - 1) + 1).collect();
        let lines = lines.strip_suffix(b"\n").unwrap_or(&lines);
        for text in lines.split(|&b| b == b'\n') {
            line(step, &String::from_utf8_lossy(text));
        }
    }

    /// The end of the run: every unfinished line is passed to `line` as it is.
    pub fn flush(&mut self, mut line: impl FnMut(Option<&StepId>, &str)) {
        for ((step, _), bytes) in std::mem::take(&mut self.partial) {
            if !bytes.is_empty() {
                line(step.as_ref(), &String::from_utf8_lossy(&bytes));
            }
        }
    }
}

/// Writes `step | text` and a newline, without colour; `width` is [`LineAssembler::width`].
pub fn write_line(
    out: &mut impl Write,
    width: usize,
    step: Option<&StepId>,
    text: &str,
) -> io::Result<()> {
    writeln!(out, "{:<width$} | {text}", line_name(step))
}

/// The prefix of a line of `step` (run-level lines have none).
pub fn line_name(step: Option<&StepId>) -> &str {
    step.map_or(RUN_LINE_NAME, StepId::as_str)
}

/// `2019/03/18 21:56:12 text`: a line kiln writes, timestamped as ACR's engine writes its own
/// (container output keeps its arrival time beside the log instead, so its text stays as the
/// container wrote it).
pub fn stamped(text: &str, at: DateTime<Utc>) -> String {
    format!("{} {text}", at.format("%Y/%m/%d %H:%M:%S"))
}

/// The text of an assembled line of `stream` as the log shows it: kiln's own lines stamped
/// with `at`, container output as it is.
pub fn shown(stream: LogStream, text: &str, at: DateTime<Utc>) -> std::borrow::Cow<'_, str> {
    match stream {
        LogStream::System => stamped(text, at).into(),
        LogStream::Stdout | LogStream::Stderr => text.into(),
    }
}

/// `bytes`, which start at byte `start` of a log, with every line prefixed by when it arrived
/// (RFC 3339, UTC, milliseconds, then a space): the time of the last of `times` (offset, time;
/// in offset order) at or before the line's first byte, else `first` (the run's creation: the
/// queue line is written with the run).
pub fn with_times(
    bytes: &[u8],
    start: u64,
    times: &[(u64, DateTime<Utc>)],
    first: DateTime<Utc>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
    let mut offset = start;
    let mut next = 0;
    // Formatted once per mark, not per line: a burst of lines shares one mark.
    let mut stamp = crate::millis::format(&first);
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let mut moved = None;
        while let Some(&(_, time)) = times.get(next).filter(|(mark, _)| *mark <= offset) {
            moved = Some(time);
            next += 1;
        }
        if let Some(at) = moved {
            stamp = crate::millis::format(&at);
        }
        out.extend_from_slice(stamp.as_bytes());
        out.push(b' ');
        out.extend_from_slice(line);
        offset += line.len() as u64;
    }
    out
}

/// The line every step's output ends with. The worker writes ACR's `… marked as successful`
/// for the steps of a successful run; this adds the rest: a failed (or ignored, or canceled)
/// step's line with its reason when it ends, a skipped step's with why, and, when the run did
/// not succeed, the successful steps' lines at its end.
#[derive(Debug, Clone, Default)]
pub struct StepEnds {
    /// The first step that failed: why the steps after it were skipped.
    failed: Option<StepId>,
    /// Steps that succeeded, with their elapsed milliseconds, in the order they ended.
    succeeded: Vec<(StepId, u64)>,
}

impl StepEnds {
    /// The closing lines `event` brings, each with its step.
    pub fn observe(&mut self, event: &Event) -> Vec<(StepId, String)> {
        match event {
            Event::StepFinished { step, status, elapsed_ms, error, .. } => {
                let reason = error.as_deref().unwrap_or("no reason given");
                let marked =
                    |verdict| format!("{}: {reason}", step_marked(step, verdict, *elapsed_ms));
                let line = match status {
                    StepStatus::Successful => {
                        self.succeeded.push((step.clone(), *elapsed_ms));
                        return Vec::new();
                    }
                    StepStatus::Failed => {
                        self.failed.get_or_insert_with(|| step.clone());
                        marked("failed")
                    }
                    StepStatus::Ignored => marked("failed, errors ignored"),
                    StepStatus::Canceled => marked("canceled"),
                    StepStatus::Skipped => match &self.failed {
                        Some(failed) => {
                            format!("Step ID: {step} skipped: step ID {failed} failed before it")
                        }
                        None => format!("Step ID: {step} skipped: the run ended before it started"),
                    },
                };
                vec![(step.clone(), line)]
            }
            Event::RunFinished { status, .. } if *status != WorkerStatus::Succeeded => {
                std::mem::take(&mut self.succeeded)
                    .into_iter()
                    .map(|(step, ms)| {
                        let line = step_marked(&step, "successful", ms);
                        (step, line)
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// The dependency report (reference §6.3) and pushed images of a run, gathered from its events.
#[derive(Debug, Clone, Default)]
pub struct Dependencies {
    reports: Vec<serde_json::Value>,
    /// `(image as pushed, digest)`, in push order.
    pushed: Vec<(String, String)>,
}

impl Dependencies {
    /// Takes note of the events that matter here; others are ignored.
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::DependencyReport { report, .. } => self.reports.push(report.clone()),
            Event::ImagePushed { image, digest, .. } => {
                self.pushed.push((image.clone(), digest.clone()));
            }
            _ => {}
        }
    }

    /// Images pushed, with their digests, in push order.
    pub fn pushed(&self) -> &[(String, String)] {
        &self.pushed
    }

    /// The build steps' reports merged into one array, each image's digest filled in when it
    /// was pushed (a build alone knows no digest); `None` when no build reported.
    pub fn report(&self) -> Option<serde_json::Value> {
        if self.reports.is_empty() {
            return None;
        }
        let mut entries: Vec<serde_json::Value> =
            self.reports.iter().flat_map(|r| r.as_array().cloned().unwrap_or_default()).collect();
        for entry in &mut entries {
            let reference = entry["image"]["reference"].as_str().unwrap_or_default().to_string();
            // The last push of an image wins, as its digest is what the registry now serves.
            if let Some((_, digest)) = self.pushed.iter().rev().find(|(i, _)| *i == reference) {
                entry["image"]["digest"] = serde_json::Value::String(digest.clone());
            }
        }
        Some(serde_json::Value::Array(entries))
    }
}

/// The dependency report as ACR prints it under its header: YAML, one indented block per
/// dependency, in ACR's field order. (The API keeps it as the one JSON document it is.)
pub fn dependency_text(report: &serde_json::Value) -> String {
    serde_json::from_value::<Vec<Dependency>>(report.clone())
        .ok()
        .and_then(|entries| serde_saphyr::to_string(&report::printed(&entries)).ok())
        .map_or_else(|| report.to_string(), |yaml| yaml.trim_end().to_string())
}

/// The header line of the dependency report.
pub const DEPENDENCIES_HEADER: &str = "The following dependencies were found:";

/// ACR's last line of a run (§6.1): `Run ID: X was successful after 19s` or
/// `Run ID: X failed after 9s. Error: …` (`was canceled`, `timed out` for those statuses). The
/// agent ends stored logs with it; `kiln exec` and the client print it.
pub fn outcome_line(
    run_id: &str,
    status: RunStatus,
    elapsed_secs: u64,
    error: Option<&str>,
) -> String {
    let verb = match status {
        RunStatus::Succeeded => "was successful",
        RunStatus::Canceled => "was canceled",
        RunStatus::Timeout => "timed out",
        _ => "failed",
    };
    match error.filter(|e| !e.is_empty() && status != RunStatus::Succeeded) {
        Some(error) => format!("Run ID: {run_id} {verb} after {elapsed_secs}s. Error: {error}"),
        None => format!("Run ID: {run_id} {verb} after {elapsed_secs}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(assembler: &mut LineAssembler, step: Option<&StepId>, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        assembler.push(step, LogStream::Stdout, data, |s, t| {
            out.push(format!("{}|{t}", line_name(s)));
        });
        out
    }

    #[test]
    fn pieces_become_lines_per_step() {
        let (a, bb) = (StepId::new("a"), StepId::new("bb"));
        let mut asm = LineAssembler::new(&[a.clone(), bb.clone()]);
        assert_eq!(asm.width(), 2);
        assert!(lines(&mut asm, Some(&a), b"one ").is_empty());
        assert_eq!(lines(&mut asm, Some(&bb), b"x\ny\nz"), ["bb|x", "bb|y"]);
        assert_eq!(lines(&mut asm, Some(&a), b"two\n"), ["a|one two"]);
        let mut rest = Vec::new();
        asm.flush(|s, t| rest.push(format!("{}|{t}", line_name(s))));
        assert_eq!(rest, ["bb|z"]);
        let mut out = Vec::new();
        write_line(&mut out, asm.width(), None, "net").expect("write");
        assert_eq!(out, b"kiln | net\n");
    }

    #[test]
    fn endless_lines_are_passed_on_in_pieces() {
        let mut asm = LineAssembler::new(&[]);
        let long = vec![b'x'; MAX_PARTIAL_LINE];
        let out = lines(&mut asm, None, &long);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_PARTIAL_LINE + "kiln|".len());
    }

    fn finished(step: &StepId, status: StepStatus, error: Option<&str>) -> Event {
        Event::StepFinished {
            step: step.clone(),
            status,
            exit_code: None,
            elapsed_ms: 1500,
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn every_step_ends_with_a_line() {
        let (a, b, c) = (StepId::new("a"), StepId::new("b"), StepId::new("c"));
        let mut ends = StepEnds::default();
        assert!(ends.observe(&finished(&a, StepStatus::Successful, None)).is_empty());
        assert_eq!(
            ends.observe(&finished(&b, StepStatus::Failed, Some("exit status 3"))),
            [(
                b.clone(),
                "Step ID: b marked as failed (elapsed time in seconds: 1.500000): exit status 3"
                    .to_string()
            )]
        );
        assert_eq!(
            ends.observe(&finished(&c, StepStatus::Skipped, None)),
            [(c.clone(), "Step ID: c skipped: step ID b failed before it".to_string())]
        );
        let end = Event::RunFinished {
            run_id: kiln_plan::plan::RunId::new("ka1"),
            status: WorkerStatus::Failed,
            elapsed_ms: 3000,
            error: None,
        };
        assert_eq!(
            ends.observe(&end),
            [(
                a,
                "Step ID: a marked as successful (elapsed time in seconds: 1.500000)".to_string()
            )]
        );
        let mut ends = StepEnds::default();
        assert_eq!(
            ends.observe(&finished(&c, StepStatus::Skipped, None))[0].1,
            "Step ID: c skipped: the run ended before it started"
        );
    }

    #[test]
    fn kiln_lines_are_stamped_as_acr_stamps_them() {
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2019, 3, 18, 21, 56, 12).unwrap();
        assert_eq!(
            shown(LogStream::System, "Executing step ID: b", at),
            "2019/03/18 21:56:12 Executing step ID: b"
        );
        assert_eq!(shown(LogStream::Stdout, "hello", at), "hello");
    }

    #[test]
    fn lines_get_the_time_their_first_byte_arrived() {
        let t = |s| chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 2, 3, 4, s).unwrap();
        // Marks at 10 (inside the second line, which began earlier) and 19 (the last line).
        let log = b"first\nsecond\nthird\nlast";
        let times = [(10, t(1)), (19, t(2))];
        let timed = String::from_utf8(with_times(log, 0, &times, t(0))).unwrap();
        assert_eq!(
            timed,
            "2026-01-02T03:04:00.000Z first\n2026-01-02T03:04:00.000Z second\n\
             2026-01-02T03:04:01.000Z third\n2026-01-02T03:04:02.000Z last"
        );
        // From an offset, as the store answers: the mark before it covers the first line.
        let timed = String::from_utf8(with_times(&log[13..], 13, &times, t(0))).unwrap();
        assert_eq!(timed, "2026-01-02T03:04:01.000Z third\n2026-01-02T03:04:02.000Z last");
    }

    #[test]
    fn reports_get_pushed_digests() {
        let mut deps = Dependencies::default();
        assert_eq!(deps.report(), None);
        let step = StepId::new("build");
        let report = serde_json::json!([{"image": {"reference": "r/app:1", "digest": ""}}]);
        deps.observe(&Event::DependencyReport { step: step.clone(), report });
        deps.observe(&Event::ImagePushed {
            step,
            image: "r/app:1".into(),
            digest: "sha256:ab".into(),
        });
        let merged = deps.report().expect("report");
        assert_eq!(merged[0]["image"]["digest"], "sha256:ab");
        let report = serde_json::json!([{
            "image": {"registry": "r", "repository": "app", "tag": "1", "digest": "sha256:ab", "reference": "r/app:1"},
            "runtime-dependency": {"registry": "registry.hub.docker.com", "repository": "library/busybox", "tag": "latest", "digest": "", "reference": "busybox:latest"},
            "buildtime-dependency": [],
            "git": {"git-head-revision": ""}
        }]);
        let text = dependency_text(&report);
        assert!(text.starts_with("- image:\n    registry: r\n    repository: app\n"), "{text}");
        assert!(
            text.contains("\n  runtime-dependency:\n    registry: registry.hub.docker.com\n"),
            "{text}"
        );
        assert!(text.find("image:") < text.find("runtime-dependency:"), "{text}");
        assert_eq!(deps.pushed(), [("r/app:1".to_string(), "sha256:ab".to_string())]);
    }
}
