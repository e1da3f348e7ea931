//! Go's reference-time layouts (`"2006-01-02 15:04:05"`) over chrono, for Sprig's `date` and
//! `now` and for `.Run.Date`.
//!
//! A port of the formatting half of Go's `time.Format` (`nextStdChunk` and `appendFormat`), so
//! a task file's layout string means what it means under ACR. Times are always UTC here: the
//! zone of a kiln server is not something a task file should depend on, and `.Run.Date` is UTC
//! in ACR too.

use std::fmt::Write;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, Timelike, Utc};

/// `time.Time.String()`'s layout, which is also how `now` prints.
pub(super) const TIME_STRING_LAYOUT: &str = "2006-01-02 15:04:05.999999999 -0700 MST";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Std {
    LongMonth,
    Month,
    NumMonth,
    ZeroMonth,
    LongWeekDay,
    WeekDay,
    Day,
    UnderDay,
    ZeroDay,
    UnderYearDay,
    ZeroYearDay,
    Hour,
    Hour12,
    ZeroHour12,
    Minute,
    ZeroMinute,
    Second,
    ZeroSecond,
    LongYear,
    Year,
    UpperPm,
    LowerPm,
    ZoneName,
    /// A numeric zone, already rendered for UTC: `Z` forms print `Z`, the others zeros.
    Zone(&'static str),
    /// Fractional seconds: separator, digit count, and whether trailing zeros are trimmed.
    Frac(char, usize, bool),
}

/// The first layout element in `layout`: `(prefix length, element, element length)`.
fn next_std(layout: &str) -> Option<(usize, Std, usize)> {
    let b = layout.as_bytes();
    let at = |i: usize, s: &str| layout.get(i..).is_some_and(|rest| rest.starts_with(s));
    let lower_at = |i: usize| b.get(i).is_some_and(u8::is_ascii_lowercase);
    let digit_at = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    for i in 0..b.len() {
        let found = match b[i] {
            b'J' if at(i, "January") => Some((Std::LongMonth, 7)),
            b'J' if at(i, "Jan") && !lower_at(i + 3) => Some((Std::Month, 3)),
            b'M' if at(i, "Monday") => Some((Std::LongWeekDay, 6)),
            b'M' if at(i, "Mon") && !lower_at(i + 3) => Some((Std::WeekDay, 3)),
            b'M' if at(i, "MST") => Some((Std::ZoneName, 3)),
            b'0' => match b.get(i + 1) {
                Some(b'1') => Some((Std::ZeroMonth, 2)),
                Some(b'2') => Some((Std::ZeroDay, 2)),
                Some(b'3') => Some((Std::ZeroHour12, 2)),
                Some(b'4') => Some((Std::ZeroMinute, 2)),
                Some(b'5') => Some((Std::ZeroSecond, 2)),
                Some(b'6') => Some((Std::Year, 2)),
                Some(b'0') if b.get(i + 2) == Some(&b'2') => Some((Std::ZeroYearDay, 3)),
                _ => None,
            },
            b'1' if at(i, "15") => Some((Std::Hour, 2)),
            b'1' => Some((Std::NumMonth, 1)),
            b'2' if at(i, "2006") => Some((Std::LongYear, 4)),
            b'2' => Some((Std::Day, 1)),
            // `_2006` is a literal `_` and a year.
            b'_' if at(i, "_2006") => return Some((i + 1, Std::LongYear, 4)),
            b'_' if at(i, "_2") => Some((Std::UnderDay, 2)),
            b'_' if at(i, "__2") => Some((Std::UnderYearDay, 3)),
            b'3' => Some((Std::Hour12, 1)),
            b'4' => Some((Std::Minute, 1)),
            b'5' => Some((Std::Second, 1)),
            b'P' if at(i, "PM") => Some((Std::UpperPm, 2)),
            b'p' if at(i, "pm") => Some((Std::LowerPm, 2)),
            b'-' | b'Z' => {
                let z = b[i] == b'Z';
                [
                    ("070000", "000000"),
                    ("07:00:00", "00:00:00"),
                    ("0700", "0000"),
                    ("07:00", "00:00"),
                    ("07", "00"),
                ]
                .into_iter()
                .find(|(pattern, _)| at(i + 1, pattern))
                .map(|(pattern, zeros)| {
                    let text = if z { "Z" } else { zone_text(zeros) };
                    (Std::Zone(text), pattern.len() + 1)
                })
            }
            sep @ (b'.' | b',') if matches!(b.get(i + 1), Some(b'0' | b'9')) => {
                let digit = b[i + 1];
                let run = b[i + 1..].iter().take_while(|&&c| c == digit).count();
                // Only a fraction when the run of digits ends the number.
                (!digit_at(i + 1 + run))
                    .then_some((Std::Frac(char::from(sep), run, digit == b'9'), run + 1))
            }
            _ => None,
        };
        if let Some((std, len)) = found {
            return Some((i, std, len));
        }
    }
    None
}

/// The `-07…` zone forms for UTC, as static text.
fn zone_text(zeros: &str) -> &'static str {
    match zeros {
        "000000" => "+000000",
        "00:00:00" => "+00:00:00",
        "0000" => "+0000",
        "00:00" => "+00:00",
        _ => "+00",
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] =
    ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/// Formats `t` (in UTC) with a Go layout string.
pub(super) fn format(layout: &str, t: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(layout.len() + 8);
    let mut rest = layout;
    while let Some((prefix, std, len)) = next_std(rest) {
        out.push_str(&rest[..prefix]);
        push_std(&mut out, std, t);
        rest = &rest[prefix + len..];
    }
    out.push_str(rest);
    out
}

fn push_std(out: &mut String, std: Std, t: DateTime<Utc>) {
    let month = t.month0() as usize;
    let weekday = t.weekday().num_days_from_sunday() as usize;
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    // Writing to a String cannot fail.
    let _ = match std {
        Std::LongMonth => write!(out, "{}", MONTHS[month]),
        Std::Month => write!(out, "{}", &MONTHS[month][..3]),
        Std::NumMonth => write!(out, "{}", month + 1),
        Std::ZeroMonth => write!(out, "{:02}", month + 1),
        Std::LongWeekDay => write!(out, "{}", DAYS[weekday]),
        Std::WeekDay => write!(out, "{}", &DAYS[weekday][..3]),
        Std::Day => write!(out, "{}", t.day()),
        Std::UnderDay => write!(out, "{:>2}", t.day()),
        Std::ZeroDay => write!(out, "{:02}", t.day()),
        Std::UnderYearDay => write!(out, "{:>3}", t.ordinal()),
        Std::ZeroYearDay => write!(out, "{:03}", t.ordinal()),
        Std::Hour => write!(out, "{:02}", t.hour()),
        Std::Hour12 => write!(out, "{hour12}"),
        Std::ZeroHour12 => write!(out, "{hour12:02}"),
        Std::Minute => write!(out, "{}", t.minute()),
        Std::ZeroMinute => write!(out, "{:02}", t.minute()),
        Std::Second => write!(out, "{}", t.second()),
        Std::ZeroSecond => write!(out, "{:02}", t.second()),
        Std::LongYear => write!(out, "{:04}", t.year()),
        Std::Year => write!(out, "{:02}", t.year().rem_euclid(100)),
        Std::UpperPm => write!(out, "{}", if t.hour() >= 12 { "PM" } else { "AM" }),
        Std::LowerPm => write!(out, "{}", if t.hour() >= 12 { "pm" } else { "am" }),
        Std::ZoneName => write!(out, "UTC"),
        Std::Zone(text) => write!(out, "{text}"),
        Std::Frac(sep, digits, trim) => {
            // A leap second shows as nanos >= 1e9 in chrono; Go has none, so clamp.
            let nanos = format!("{:09}", t.nanosecond().min(999_999_999));
            let mut shown = &nanos[..digits.min(9)];
            if trim {
                shown = shown.trim_end_matches('0');
            }
            if shown.is_empty() { Ok(()) } else { write!(out, "{sep}{shown}") }
        }
    };
}

/// Reads a time printed by `now` (Go's `time.Time.String()`, with or without the monotonic
/// `m=` suffix) or an RFC 3339 timestamp.
pub(super) fn parse(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let mut parts = text.split_whitespace();
    let (date, time, zone) = (parts.next()?, parts.next()?, parts.next()?);
    let naive =
        NaiveDateTime::parse_from_str(&format!("{date} {time}"), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    let offset = DateTime::parse_from_str(&format!("2000-01-01 00:00 {zone}"), "%Y-%m-%d %H:%M %z")
        .ok()
        .map(|t| *t.offset())
        .or_else(|| FixedOffset::east_opt(0))?;
    naive.and_local_timezone(offset).single().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t() -> DateTime<Utc> {
        // A Friday afternoon, day 123 of the year, with a fractional second.
        Utc.with_ymd_and_hms(2019, 5, 3, 16, 3, 9).unwrap()
            + chrono::Duration::nanoseconds(120_000_000)
    }

    #[test]
    fn every_layout_element() {
        let cases = [
            ("2006-01-02", "2019-05-03"),
            ("20060102-150405z", "20190503-160309z"),
            ("Jan January 1 01", "May May 5 05"),
            ("Mon Monday", "Fri Friday"),
            ("2 _2 02 __2 002", "3  3 03 123 123"),
            ("15 3 03 4 04 5 05 PM pm", "16 4 04 3 03 9 09 PM pm"),
            ("06 2006 _2006", "19 2019 _2019"),
            ("MST -0700 -07:00 -07 -070000 -07:00:00", "UTC +0000 +00:00 +00 +000000 +00:00:00"),
            ("Z0700 Z07:00 Z07", "Z Z Z"),
            (".000 .999 ,00 .999999999 .0000000000", ".120 .12 ,12 .12 .120000000"),
            ("Janet Mondays", "Janet Fridays"),
            // Not a fraction (a digit follows the run), so `01` inside it is a month, as in Go.
            ("05.0001", "09.0005"),
            ("no elements here", "no elements here"),
        ];
        for (layout, want) in cases {
            assert_eq!(format(layout, t()), want, "{layout}");
        }
    }

    #[test]
    fn am_and_twelve_oclock() {
        let midnight = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(format("3 03 PM .999", midnight), "12 12 AM ");
    }

    #[test]
    fn time_strings_round_trip() {
        let text = format(TIME_STRING_LAYOUT, t());
        assert_eq!(text, "2019-05-03 16:03:09.12 +0000 UTC");
        assert_eq!(parse(&text), Some(t()));
        assert_eq!(parse("2019-05-03 16:03:09.12 +0000 UTC m=+0.000123"), Some(t()));
        assert_eq!(parse("2019-05-03 18:03:09.12 +0200 CEST"), Some(t()));
        assert_eq!(parse("2019-05-03T16:03:09.12Z"), Some(t()));
        assert_eq!(parse("yesterday"), None);
    }
}
