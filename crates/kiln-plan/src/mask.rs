//! Keeping the plan's secret values ([`crate::plan::Plan::masked`]) out of every log event.
//!
//! ACR stores whatever a step prints (reference §9 item 15). kiln replaces each masked value
//! with `***` before an event leaves the worker, so secrets neither reach the log store nor
//! travel to a remote control plane. Container output arrives in arbitrary pieces, so a
//! [`MaskedStream`] holds back the few trailing bytes that might be the start of a secret
//! until the next piece (or the end of the stream) decides.
//!
//! Public because the control plane masks again where it stores logs (defence in depth: a
//! remote worker's events are not trusted to be masked), with this one implementation.

use std::borrow::Cow;
use std::sync::Arc;

/// What a masked value is replaced with.
pub const MASK: &[u8] = b"***";

/// The run's secret values; cheap to share.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Longest first, so a secret containing another is masked whole.
    values: Arc<Vec<Vec<u8>>>,
}

impl Secrets {
    pub fn new(masked: &[String]) -> Self {
        let mut values: Vec<Vec<u8>> =
            masked.iter().filter(|v| !v.is_empty()).map(|v| v.as_bytes().to_vec()).collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Secrets { values: Arc::new(values) }
    }

    /// Masks a complete text (a system line, an error message).
    pub fn text(&self, text: &str) -> String {
        if self.values.is_empty() {
            return text.to_string();
        }
        let mut stream = self.stream();
        let mut out = stream.push(text.as_bytes()).into_owned();
        out.extend(stream.finish());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A masker for one output stream.
    pub fn stream(&self) -> MaskedStream {
        MaskedStream { secrets: self.clone(), held: Vec::new() }
    }
}

/// Masks one stream of output delivered in pieces.
#[derive(Debug)]
pub struct MaskedStream {
    secrets: Secrets,
    /// Bytes that may be the beginning of a secret, kept until more output decides.
    held: Vec<u8>,
}

impl MaskedStream {
    /// Returns the part of `held + data` that is safe to emit now (`data` itself, uncopied,
    /// when the run has no secrets).
    pub fn push<'d>(&mut self, data: &'d [u8]) -> Cow<'d, [u8]> {
        if self.secrets.values.is_empty() {
            return Cow::Borrowed(data);
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(data);
        Cow::Owned(self.scan(&buf, false))
    }

    /// The end of the stream: what was held back is masked as far as it goes and released.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.scan(&held, true)
    }

    fn scan(&mut self, buf: &[u8], at_end: bool) -> Vec<u8> {
        let values = &self.secrets.values;
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        while i < buf.len() {
            let rest = &buf[i..];
            // First: could a secret longer than what is here start here? Then wait, even if a
            // shorter one matches already, or the longer one's tail would leak.
            if !at_end && values.iter().any(|s| s.len() > rest.len() && s.starts_with(rest)) {
                self.held = rest.to_vec();
                break;
            }
            if let Some(secret) = values.iter().find(|s| rest.starts_with(s)) {
                out.extend_from_slice(MASK);
                i += secret.len();
            } else {
                out.push(buf[i]);
                i += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(values: &[&str]) -> Secrets {
        Secrets::new(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
    }

    fn through(secrets: &Secrets, pieces: &[&str]) -> String {
        let mut stream = secrets.stream();
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(&stream.push(piece.as_bytes()));
        }
        out.extend(stream.finish());
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn whole_values_are_masked() {
        let s = secrets(&["hunter2"]);
        assert_eq!(s.text("password=hunter2; again hunter2"), "password=***; again ***");
        assert_eq!(s.text("hunter"), "hunter");
    }

    #[test]
    fn values_split_across_pieces_are_masked() {
        let s = secrets(&["hunter2"]);
        assert_eq!(through(&s, &["pass=hun", "te", "r2!"]), "pass=***!");
        assert_eq!(through(&s, &["h", "u", "n", "t", "e", "r", "2"]), "***");
    }

    #[test]
    fn held_bytes_are_released_when_no_secret_follows() {
        let s = secrets(&["hunter2"]);
        let mut stream = s.stream();
        assert_eq!(&*stream.push(b"a hunt"), b"a ");
        assert_eq!(&*stream.push(b"ing"), b"hunting");
        assert_eq!(&*stream.push(b" hunter"), b" ");
        assert_eq!(stream.finish(), b"hunter");
    }

    #[test]
    fn overlapping_secrets_mask_the_longest() {
        let s = secrets(&["abc", "abcdef"]);
        assert_eq!(s.text("xabcdefx abcx"), "x***x ***x");
        assert_eq!(through(&s, &["abc", "def"]), "***");
        assert_eq!(through(&s, &["x", "abc"]), "x***");
    }

    #[test]
    fn no_secrets_pass_everything_through() {
        let s = secrets(&[""]);
        assert_eq!(through(&s, &["anything ", "at all"]), "anything at all");
    }
}
