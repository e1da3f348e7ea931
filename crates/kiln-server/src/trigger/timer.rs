//! When a timer fires (issue 6): the decision for one timer at one instant, apart from storage
//! and clocks, so the rules are tested with plain times instead of sleeps.
//!
//! A timer stores its next fire time. At `now`:
//! * nothing is due before that time;
//! * the newest occurrence that has passed fires when `now` is within [`LATE_LIMIT`] of it (a
//!   running server checks every second, so a live timer is never later than that);
//! * older passed occurrences were missed while the server was down: they are recorded, not
//!   replayed (peers burst every missed cron at start-up: Woodpecker#2188), the most recent
//!   [`MAX_MISSED_RECORDED`] of them, found by searching backwards from now (a year-long outage
//!   costs what a minute's does);
//! * either way the next fire time moves to the first occurrence after `now`, which the store
//!   writes in the same transaction that queues the run, so each occurrence fires once even
//!   across restarts and several servers.

use chrono::{DateTime, TimeDelta, Utc};

use super::cron::Schedule;

/// How late a due occurrence may be found and still fire.
pub const LATE_LIMIT: TimeDelta = TimeDelta::seconds(60);
/// Missed occurrences recorded per decision (a timer every minute, down for a week, would
/// otherwise write ten thousand history rows at start-up).
pub const MAX_MISSED_RECORDED: usize = 100;

/// What to do with a timer at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The occurrence to run now.
    pub fire: Option<DateTime<Utc>>,
    /// Occurrences that passed while nobody was checking (oldest first, the most recent
    /// [`MAX_MISSED_RECORDED`]); recorded in the task's history, never run.
    pub missed: Vec<DateTime<Utc>>,
    /// The next fire time to store; `None` when the schedule never fires again.
    pub next: Option<DateTime<Utc>>,
}

/// The decision for a timer with `schedule` whose stored next fire time is `stored` (`None`
/// for a new timer) at `now`.
pub fn decide(schedule: &Schedule, stored: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Decision {
    let upcoming = schedule.next_after(now);
    let Some(due) = stored.filter(|&at| at <= now) else {
        // Nothing due: keep what is stored, or schedule a new timer's first occurrence.
        return Decision { fire: None, missed: Vec::new(), next: stored.or(upcoming) };
    };
    // The newest passed occurrence fires if it is recent; older ones back to the due one were
    // missed. Both are found by searching backwards from now, so a long outage costs no more
    // than a short one.
    let newest = schedule.previous(now, true).filter(|&t| t >= due).unwrap_or(due);
    let fire = (now - newest <= LATE_LIMIT).then_some(newest);
    let mut missed = Vec::new();
    let mut cursor = if fire.is_some() { schedule.previous(newest, false) } else { Some(newest) };
    while let Some(t) = cursor.filter(|&t| t >= due && missed.len() < MAX_MISSED_RECORDED) {
        missed.push(t);
        cursor = schedule.previous(t, false);
    }
    missed.reverse();
    Decision { fire, missed, next: upcoming }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, s).single().expect("valid time")
    }

    fn every_minute() -> Schedule {
        Schedule::parse("* * * * *").expect("schedule")
    }

    #[test]
    fn a_new_timer_waits_for_its_first_occurrence() {
        let d = decide(&every_minute(), None, at(10, 0, 30));
        assert_eq!(d, Decision { fire: None, missed: vec![], next: Some(at(10, 1, 0)) });
    }

    #[test]
    fn nothing_fires_before_the_stored_time() {
        let d = decide(&every_minute(), Some(at(10, 1, 0)), at(10, 0, 59));
        assert_eq!(d, Decision { fire: None, missed: vec![], next: Some(at(10, 1, 0)) });
    }

    #[test]
    fn a_due_occurrence_fires_once_and_the_next_is_the_following_one() {
        let d = decide(&every_minute(), Some(at(10, 1, 0)), at(10, 1, 0));
        assert_eq!(
            d,
            Decision { fire: Some(at(10, 1, 0)), missed: vec![], next: Some(at(10, 2, 0)) }
        );
        // Deciding again with what was stored fires nothing more for that minute.
        let again = decide(&every_minute(), d.next, at(10, 1, 0));
        assert_eq!(again.fire, None);
    }

    #[test]
    fn occurrences_missed_while_down_are_recorded_not_replayed() {
        // An every-minute timer, down from 10:01 to 10:04:30: 10:01..10:03 were missed and
        // are not run; 10:04 passed 30 s ago, which is on time, and runs once; 10:05 is next.
        let d = decide(&every_minute(), Some(at(10, 1, 0)), at(10, 4, 30));
        assert_eq!(d.fire, Some(at(10, 4, 0)));
        assert_eq!(d.missed, vec![at(10, 1, 0), at(10, 2, 0), at(10, 3, 0)]);
        assert_eq!(d.next, Some(at(10, 5, 0)));
        // An hourly timer down over three occurrences, back at 12:30: all three missed.
        let hourly = Schedule::parse("0 * * * *").expect("schedule");
        let d = decide(&hourly, Some(at(10, 0, 0)), at(12, 30, 0));
        assert_eq!(d.fire, None);
        assert_eq!(d.missed, vec![at(10, 0, 0), at(11, 0, 0), at(12, 0, 0)]);
        assert_eq!(d.next, Some(at(13, 0, 0)));
    }

    #[test]
    fn a_slightly_late_check_still_fires_and_records_what_it_skipped() {
        // Found 59 s late: the due minute fires; the next minute has not passed.
        let d = decide(&every_minute(), Some(at(10, 1, 0)), at(10, 1, 59));
        assert_eq!((d.fire, d.missed.len(), d.next), (Some(at(10, 1, 0)), 0, Some(at(10, 2, 0))));
        // 61 s late, that minute is missed, but the next one has just passed and fires.
        let d = decide(&every_minute(), Some(at(10, 1, 0)), at(10, 2, 1));
        assert_eq!((d.fire, d.missed), (Some(at(10, 2, 0)), vec![at(10, 1, 0)]));
        // 61 s after an hourly timer's occurrence: missed, nothing newer to fire.
        let hourly = Schedule::parse("0 * * * *").expect("schedule");
        let d = decide(&hourly, Some(at(10, 0, 0)), at(10, 1, 1));
        assert_eq!((d.fire, d.missed, d.next), (None, vec![at(10, 0, 0)], Some(at(11, 0, 0))));
    }

    #[test]
    fn a_year_long_outage_is_decided_at_once() {
        let down = Utc.with_ymd_and_hms(2025, 11, 23, 10, 0, 0).single().expect("valid time");
        let d = decide(&every_minute(), Some(down), at(10, 0, 5));
        assert_eq!(d.fire, Some(at(10, 0, 0)));
        assert_eq!(d.missed.len(), MAX_MISSED_RECORDED);
        assert_eq!(d.missed[0], at(8, 20, 0), "the 100 most recent misses, oldest first");
        assert_eq!(d.missed[99], at(9, 59, 0));
    }

    #[test]
    fn a_long_outage_records_a_bounded_history() {
        let d = decide(&every_minute(), Some(at(0, 0, 0)), at(23, 0, 30));
        assert_eq!(d.fire, Some(at(23, 0, 0)));
        assert_eq!(d.missed.len(), MAX_MISSED_RECORDED);
        assert_eq!(d.missed.last(), Some(&at(22, 59, 0)), "the most recent misses are kept");
        assert_eq!(d.next, Some(at(23, 1, 0)));
    }
}
