//! Run IDs: short, unique, monotonically increasing names for runs (reference §4.5).
//!
//! ACR never documents its run IDs, but every observed one is a registry-specific two-letter
//! prefix followed by a per-registry lowercase base-36 counter starting at 1 (`ca1 … ca9, caa …
//! caz, ca10`). kiln issues the same shape so IDs stay short enough to type and read in logs.
//! Everywhere else a [`RunId`] is opaque; this module is the only place that knows its structure.
//!
//! Persisting the counter is the store's job: it seeds a [`RunIdGenerator`] with the last issued
//! counter and saves [`RunIdGenerator::counter`] after every issue.

use std::fmt;

pub use kiln_plan::plan::RunId;

/// Longest prefix accepted: IDs must stay short, and ACR's are two characters.
const MAX_PREFIX_LEN: usize = 8;

/// Why a run-ID prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunIdPrefixError {
    #[error("run ID prefix is empty")]
    Empty,
    #[error("run ID prefix {prefix:?} is longer than {MAX_PREFIX_LEN} characters")]
    TooLong { prefix: String },
    #[error("run ID prefix {prefix:?} must start with a lowercase ASCII letter")]
    MustStartWithLetter { prefix: String },
    #[error("run ID prefix {prefix:?} may contain only lowercase ASCII letters and digits")]
    InvalidChar { prefix: String },
}

/// A validated run-ID prefix: 1–8 lowercase ASCII letters or digits, starting with a letter.
///
/// Starting with a letter keeps IDs valid as DNS labels and container-name fragments; the
/// lowercase alphabet keeps them valid wherever Docker wants lowercase names. The prefix of a
/// registry should never change: base-36 digits include letters, so `c` + `a1` and `ca` + `1`
/// spell the same ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunIdPrefix(String);

impl RunIdPrefix {
    pub fn new(prefix: &str) -> Result<Self, RunIdPrefixError> {
        let owned = || prefix.to_string();
        let first = prefix.chars().next().ok_or(RunIdPrefixError::Empty)?;
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(RunIdPrefixError::TooLong { prefix: owned() });
        }
        if !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
            return Err(RunIdPrefixError::InvalidChar { prefix: owned() });
        }
        if !first.is_ascii_lowercase() {
            return Err(RunIdPrefixError::MustStartWithLetter { prefix: owned() });
        }
        Ok(Self(owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The counter an ID of this prefix was issued with, or `None` if `id` is not
    /// `prefix` + canonical lowercase base-36 (no leading zeros). Lets a store recover the
    /// counter from the newest ID, and tests check ordering.
    pub fn counter_of(&self, id: &RunId) -> Option<u64> {
        let digits = id.as_str().strip_prefix(self.0.as_str())?;
        let canonical = !digits.is_empty()
            && (digits == "0" || !digits.starts_with('0'))
            && digits.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if !canonical {
            return None;
        }
        u64::from_str_radix(digits, 36).ok()
    }
}

impl fmt::Display for RunIdPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RunIdPrefix {
    type Err = RunIdPrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// `prefix` followed by `counter` in lowercase base 36: `format_run_id(ca, 36) == "ca10"`.
pub fn format_run_id(prefix: &RunIdPrefix, counter: u64) -> RunId {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    // u64::MAX has 13 base-36 digits.
    let mut buf = [0u8; 13];
    let mut at = buf.len();
    let mut n = counter;
    loop {
        at -= 1;
        buf[at] = DIGITS[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(prefix.0.len() + buf.len() - at);
    id.push_str(&prefix.0);
    // Every byte in `buf[at..]` comes from `DIGITS`, which is ASCII.
    id.extend(buf[at..].iter().map(|&b| char::from(b)));
    RunId::new(id)
}

/// Issues run IDs for one registry, one counter value each, starting after a persisted counter.
#[derive(Debug, Clone)]
pub struct RunIdGenerator {
    prefix: RunIdPrefix,
    last: u64,
}

impl RunIdGenerator {
    /// `last_issued` is the counter of the newest ID already handed out (0 when none, so the
    /// first ID carries counter 1, as ACR's do).
    pub fn new(prefix: RunIdPrefix, last_issued: u64) -> Self {
        Self { prefix, last: last_issued }
    }

    /// The counter of the newest ID issued (what a store persists), 0 before the first.
    pub fn counter(&self) -> u64 {
        self.last
    }

    pub fn prefix(&self) -> &RunIdPrefix {
        &self.prefix
    }
}

/// Each call issues the next ID, its counter one more than the previous one, so IDs never
/// repeat. `None` only once the counter has reached `u64::MAX` (and from then on), rather than
/// wrapping around to reissue old IDs.
impl Iterator for RunIdGenerator {
    type Item = RunId;

    fn next(&mut self) -> Option<RunId> {
        let counter = self.last.checked_add(1)?;
        self.last = counter;
        Some(format_run_id(&self.prefix, counter))
    }
}

impl std::iter::FusedIterator for RunIdGenerator {}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn ca() -> RunIdPrefix {
        RunIdPrefix::new("ca").unwrap()
    }

    #[test]
    fn acr_style_sequence() {
        let mut generator = RunIdGenerator::new(ca(), 0);
        let ids: Vec<String> =
            generator.by_ref().take(37).map(|id| id.as_str().to_string()).collect();
        assert_eq!(&ids[..3], ["ca1", "ca2", "ca3"]);
        assert_eq!(ids[8], "ca9");
        assert_eq!(ids[9], "caa");
        assert_eq!(ids[34], "caz");
        assert_eq!(ids[35], "ca10");
        assert_eq!(ids[36], "ca11");
        assert_eq!(generator.counter(), 37);
    }

    #[test]
    fn format_edges() {
        let p = ca();
        assert_eq!(format_run_id(&p, 0).as_str(), "ca0");
        assert_eq!(format_run_id(&p, 35).as_str(), "caz");
        assert_eq!(format_run_id(&p, 36 * 36).as_str(), "ca100");
        assert_eq!(format_run_id(&p, u64::MAX).as_str(), "ca3w5e11264sgsf");
    }

    #[test]
    fn seeded_generator_continues_after_the_persisted_counter() {
        let mut generator = RunIdGenerator::new(ca(), 35);
        assert_eq!(generator.counter(), 35);
        assert_eq!(generator.next().unwrap().as_str(), "ca10");
        assert_eq!(generator.counter(), 36);
    }

    #[test]
    fn exhaustion_ends_the_sequence_instead_of_repeating() {
        let mut generator = RunIdGenerator::new(ca(), u64::MAX - 1);
        assert_eq!(generator.next().unwrap().as_str(), "ca3w5e11264sgsf");
        assert_eq!(generator.next(), None);
        assert_eq!(generator.next(), None);
        assert_eq!(generator.counter(), u64::MAX);
    }

    #[test]
    fn counters_increase_and_ids_are_unique_over_100k() {
        let prefix = ca();
        let mut generator = RunIdGenerator::new(prefix.clone(), 0);
        let mut seen = HashSet::new();
        let mut previous = 0;
        for _ in 0..100_000 {
            let id = generator.next().unwrap();
            let counter = prefix.counter_of(&id).unwrap();
            assert!(counter > previous, "{id} did not increase");
            previous = counter;
            assert!(seen.insert(id.as_str().to_string()), "{id} repeated");
        }
        assert_eq!(previous, 100_000);
    }

    #[test]
    fn counter_of_round_trips_and_rejects_other_shapes() {
        let p = ca();
        for n in [0, 1, 35, 36, 1_000_000, u64::MAX] {
            assert_eq!(p.counter_of(&format_run_id(&p, n)), Some(n));
        }
        for bad in ["cb1", "ca", "ca01", "caA", "ca-1", "ca3w5e11264sgsg"] {
            assert_eq!(p.counter_of(&RunId::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn prefix_validation() {
        assert!(RunIdPrefix::new("a").is_ok());
        assert!(RunIdPrefix::new("k1lnrun9").is_ok());
        assert_eq!(RunIdPrefix::new(""), Err(RunIdPrefixError::Empty));
        assert!(matches!(RunIdPrefix::new("abcdefghi"), Err(RunIdPrefixError::TooLong { .. })));
        assert!(matches!(
            RunIdPrefix::new("1a"),
            Err(RunIdPrefixError::MustStartWithLetter { .. })
        ));
        for bad in ["Ca", "c-a", "c a", "é", "ca_"] {
            assert!(
                matches!(RunIdPrefix::new(bad), Err(RunIdPrefixError::InvalidChar { .. })),
                "{bad}"
            );
        }
        assert_eq!("ca".parse::<RunIdPrefix>().unwrap().to_string(), "ca");
    }
}
