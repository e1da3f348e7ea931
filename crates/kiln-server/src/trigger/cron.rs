//! Timer schedules (reference §5.3): ACR's NCrontab dialect on top of `croner`.
//!
//! ACR takes exactly five fields, `{minute} {hour} {day} {month} {day-of-week}`, in UTC, with
//! `*`, ranges, lists, steps and month/day names; a day matches when **both** the day of month
//! and the day of week match (NCrontab's rule, where Vixie cron uses OR), and days of week run
//! 0–6. `croner` parses the syntax; this module pins it to that dialect and, because croner's
//! messages do not say which field was wrong, checks each field alone so an error names it.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The five fields, in order, as messages name them.
pub const FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "schedule `{schedule}` has {found} fields; ACR schedules have exactly 5: \
         minute hour day-of-month month day-of-week (UTC)"
    )]
    FieldCount { schedule: String, found: usize },
    #[error("schedule `{schedule}`: field {position} ({field}) `{value}` is invalid: {reason}")]
    Field { schedule: String, position: usize, field: &'static str, value: String, reason: String },
    #[error("schedule `{schedule}` never fires")]
    Never { schedule: String },
}

/// A parsed five-field schedule.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .dom_and_dow(true)
        .build()
}

impl Schedule {
    /// Parses `text` (fields separated by blanks).
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let schedule = fields.join(" ");
        if fields.len() != 5 {
            return Err(CronError::FieldCount { schedule, found: fields.len() });
        }
        for (i, value) in fields.iter().enumerate() {
            check_field(&schedule, i, value)?;
        }
        let cron = parser().parse(&schedule).map_err(|e| CronError::Field {
            schedule: schedule.clone(),
            position: 0,
            field: "schedule",
            value: schedule.clone(),
            reason: e.to_string(),
        })?;
        let parsed = Schedule { text: schedule.clone(), cron };
        // February 30th and the like parse, but would never fire: say so now.
        let start = DateTime::from_timestamp(0, 0).unwrap_or_default();
        if parsed.next_after(start).is_none() {
            return Err(CronError::Never { schedule });
        }
        Ok(parsed)
    }

    /// The first occurrence strictly after `t` (occurrences are whole minutes, UTC).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let naive: NaiveDateTime = t.naive_utc();
        self.cron.find_next_occurrence(&naive, false).ok().map(|n| n.and_utc())
    }

    /// The last occurrence at or before `t` (`inclusive`), or strictly before it.
    pub fn previous(&self, t: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        let naive: NaiveDateTime = t.naive_utc();
        self.cron.find_previous_occurrence(&naive, inclusive).ok().map(|n| n.and_utc())
    }
}

/// One field alone: NCrontab's character set and day-of-week range, then croner's own parse of
/// the field inside an otherwise all-`*` schedule, so its error is this field's.
fn check_field(schedule: &str, i: usize, value: &str) -> Result<(), CronError> {
    let fail = |reason: String| CronError::Field {
        schedule: schedule.to_string(),
        position: i + 1,
        field: FIELDS[i],
        value: value.to_string(),
        reason,
    };
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_alphanumeric() || ",-*/".contains(*c))) {
        return Err(fail(format!("`{c}` is not allowed (use numbers, names, `*`, `-`, `,`, `/`)")));
    }
    let upper = value.to_ascii_uppercase();
    if ["L", "W", "#"].iter().any(|s| upper.contains(s) && !is_name_field(i, &upper)) {
        return Err(fail("`L`, `W` and `#` are not part of ACR's cron dialect".to_string()));
    }
    if i == 4 && upper.split([',', '-', '/']).any(|n| n == "7") {
        return Err(fail("days of week are 0 (Sunday) to 6 (Saturday)".to_string()));
    }
    let mut probe = ["*"; 5];
    probe[i] = value;
    parser().parse(&probe.join(" ")).map(drop).map_err(|e| fail(e.to_string()))
}

/// Whether `value` is made of month (field 4) or day (field 5) names, whose letters may include
/// `L` or `W` (`JUL`, `WED`).
fn is_name_field(i: usize, value: &str) -> bool {
    const MONTHS: [&str; 12] =
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
    const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let names: &[&str] = match i {
        3 => &MONTHS,
        4 => &DAYS,
        _ => return false,
    };
    value
        .split([',', '-', '/'])
        .filter(|part| part.chars().any(|c| c.is_ascii_alphabetic()))
        .all(|part| names.contains(&part))
}

/// A `--schedule [name:]CRON` argument: the timer's name (when given) and its schedule.
pub fn parse_timer_arg(arg: &str) -> Result<(Option<String>, Schedule), CronError> {
    match arg.split_once(':') {
        Some((name, cron)) => Ok((Some(name.trim().to_string()), Schedule::parse(cron)?)),
        None => Ok((None, Schedule::parse(arg)?)),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("valid time")
    }

    fn next(schedule: &str, t: DateTime<Utc>) -> DateTime<Utc> {
        Schedule::parse(schedule).expect(schedule).next_after(t).expect("fires")
    }

    #[test]
    fn s5_3_five_fields_in_utc_with_ranges_lists_steps_and_names() {
        let t = at(2026, 11, 23, 10, 7); // a Monday
        assert_eq!(next("*/10 * * * *", t), at(2026, 11, 23, 10, 10));
        assert_eq!(next("20,30,40 * * * *", t), at(2026, 11, 23, 10, 20));
        assert_eq!(next("0 1-3 * * *", t), at(2026, 11, 24, 1, 0));
        assert_eq!(next("0 9 * * Mon-Fri", at(2026, 11, 27, 10, 0)), at(2026, 11, 30, 9, 0));
        assert_eq!(next("0 0 1 Jan *", t), at(2027, 1, 1, 0, 0));
        assert_eq!(next("30 12 * Jul Wed", t), at(2027, 7, 7, 12, 30));
        // Strictly after: a due minute is not its own next occurrence.
        assert_eq!(next("7 10 * * *", t), at(2026, 11, 24, 10, 7));
    }

    #[test]
    fn s5_3_day_of_month_and_day_of_week_must_both_match() {
        // The 13th that is a Friday (NCrontab's AND; Vixie cron would fire on every 13th and
        // every Friday).
        assert_eq!(next("0 0 13 * 5", at(2026, 1, 1, 0, 0)), at(2026, 2, 13, 0, 0));
    }

    #[test]
    fn s5_3_errors_name_the_field() {
        let err = Schedule::parse("0 0 * * * *").expect_err("six fields");
        assert_eq!(err, CronError::FieldCount { schedule: "0 0 * * * *".into(), found: 6 });
        assert!(err.to_string().contains("exactly 5"), "{err}");
        for (text, position) in [
            ("61 * * * *", 1),
            ("* 24 * * *", 2),
            ("* * 0 * *", 3),
            ("* * * 13 *", 4),
            ("* * * * 7", 5),
        ] {
            match Schedule::parse(text) {
                Err(CronError::Field { position: p, field, .. }) => {
                    assert_eq!((p, field), (position, FIELDS[position - 1]), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let err = Schedule::parse("* * L * *").expect_err("L");
        assert!(err.to_string().contains("field 3 (day of month) `L`"), "{err}");
        let err = Schedule::parse("* * 30 Feb *").expect_err("never");
        assert!(matches!(err, CronError::Never { .. }), "{err}");
        assert!(Schedule::parse("").is_err());
    }

    #[test]
    fn timer_arguments_may_be_named() {
        let (name, schedule) = parse_timer_arg("nightly:0 2 * * *").expect("named");
        assert_eq!(name.as_deref(), Some("nightly"));
        assert_eq!(schedule.to_string(), "0 2 * * *");
        let (name, schedule) = parse_timer_arg("0  2 * * *").expect("unnamed");
        assert_eq!((name, schedule.to_string()), (None, "0 2 * * *".to_string()));
    }
}
