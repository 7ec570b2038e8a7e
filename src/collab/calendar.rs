//! The work calendar SLA clocks can count in: working days (with holidays and the make-up
//! workdays of 调休), working hours, all in the organisation's time zone.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc};

pub use crate::config::CalendarConfig;

/// A checked calendar.
#[derive(Debug, Clone)]
pub struct WorkCalendar {
    tz: chrono_tz::Tz,
    /// Monday first.
    days: [bool; 7],
    periods: Vec<(NaiveTime, NaiveTime)>,
    holidays: BTreeSet<NaiveDate>,
    make_up: BTreeSet<NaiveDate>,
}

/// How far ahead a deadline is searched (a calendar with almost no working time).
const HORIZON_DAYS: i64 = 3 * 366;

fn dates(field: &str, items: &[String]) -> Result<BTreeSet<NaiveDate>, String> {
    let parse = |s: &str| {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map_err(|_| format!("`{field}`: `{s}` is not a date such as 2026-10-01"))
    };
    let mut out = BTreeSet::new();
    for item in items {
        match item.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if b < a || (b - a).num_days() > 366 {
                    return Err(format!(
                        "`{field}`: `{item}` is not a range of up to a year"
                    ));
                }
                let mut d = a;
                while d <= b {
                    out.insert(d);
                    d = d
                        .succ_opt()
                        .ok_or_else(|| format!("`{field}`: `{item}` overflows"))?;
                }
            }
            None => {
                out.insert(parse(item)?);
            }
        }
    }
    Ok(out)
}

impl WorkCalendar {
    pub fn new(c: &CalendarConfig, tz: chrono_tz::Tz) -> Result<WorkCalendar, String> {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let mut days = [false; 7];
        for d in &c.work_days {
            let i = NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(d.trim()))
                .ok_or_else(|| format!("`work_days`: `{d}` is not one of mon … sun"))?;
            days[i] = true;
        }
        let mut periods = Vec::new();
        for p in &c.work_hours {
            let bad = || format!("`work_hours`: `{p}` is not a period such as 09:00-12:00");
            let (a, b) = p.split_once('-').ok_or_else(bad)?;
            let t = |s: &str| NaiveTime::parse_from_str(s.trim(), "%H:%M").map_err(|_| bad());
            let (a, b) = (t(a)?, t(b)?);
            if b <= a {
                return Err(bad());
            }
            if periods.last().is_some_and(|(_, end)| *end > a) {
                return Err(format!(
                    "`work_hours`: `{p}` overlaps or comes before the period before it"
                ));
            }
            periods.push((a, b));
        }
        let make_up = dates("make_up_workdays", &c.make_up_workdays)?;
        if periods.is_empty() || (!days.contains(&true) && make_up.is_empty()) {
            return Err("a calendar needs working days and working hours".into());
        }
        Ok(WorkCalendar {
            tz,
            days,
            periods,
            holidays: dates("holidays", &c.holidays)?,
            make_up,
        })
    }

    pub fn is_workday(&self, d: NaiveDate) -> bool {
        if self.make_up.contains(&d) {
            return true;
        }
        if self.holidays.contains(&d) {
            return false;
        }
        self.days[d.weekday().num_days_from_monday() as usize]
    }

    /// The working periods of one day as UTC instants.
    fn periods_on(&self, d: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.is_workday(d) {
            return Vec::new();
        }
        self.periods
            .iter()
            .filter_map(|(a, b)| {
                let at = |t: &NaiveTime| {
                    self.tz
                        .from_local_datetime(&d.and_time(*t))
                        .earliest()
                        .map(|x| x.with_timezone(&Utc))
                };
                Some((at(a)?, at(b)?))
            })
            .collect()
    }

    /// The instant when `work` of working time has passed after `start`. `None` only when
    /// the calendar has no working time within three years.
    pub fn add(&self, start: DateTime<Utc>, work: Duration) -> Option<DateTime<Utc>> {
        let mut left = chrono::Duration::from_std(work).ok()?;
        let first = start.with_timezone(&self.tz).date_naive();
        for offset in 0..HORIZON_DAYS {
            let day = first + chrono::Duration::days(offset);
            for (a, b) in self.periods_on(day) {
                if b <= start {
                    continue;
                }
                let from = a.max(start);
                let available = b - from;
                if left <= available {
                    return Some(from + left);
                }
                left -= available;
            }
        }
        None
    }

    /// Working time between two instants (zero when `to` is not after `from`).
    pub fn elapsed(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
        if to <= from {
            return Duration::ZERO;
        }
        let mut total = chrono::Duration::zero();
        let mut day = from.with_timezone(&self.tz).date_naive();
        let last = to.with_timezone(&self.tz).date_naive();
        while day <= last {
            for (a, b) in self.periods_on(day) {
                let (s, e) = (a.max(from), b.min(to));
                if e > s {
                    total += e - s;
                }
            }
            day = match day.succ_opt() {
                Some(d) => d,
                None => break,
            };
        }
        total.to_std().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shanghai(s: &str) -> DateTime<Utc> {
        let local = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        chrono_tz::Asia::Shanghai
            .from_local_datetime(&local)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn cal() -> WorkCalendar {
        WorkCalendar::new(
            &CalendarConfig {
                // 2026 National Day week off, with Saturday 10-10 worked instead.
                holidays: vec!["2026-10-01..2026-10-07".into()],
                make_up_workdays: vec!["2026-10-10".into()],
                ..CalendarConfig::default()
            },
            chrono_tz::Asia::Shanghai,
        )
        .unwrap()
    }

    const H: u64 = 3600;

    #[test]
    fn four_working_hours_skip_lunch_nights_weekends_and_holidays() {
        let c = cal();
        // Friday 16:00 + 4 h: 2 h on Friday, then Monday 09:00 + 2 h.
        assert_eq!(
            c.add(shanghai("2026-11-27 16:00"), Duration::from_secs(4 * H)),
            Some(shanghai("2026-11-30 11:00"))
        );
        // Lunch is not working time: 11:00 + 2 h → 14:30.
        assert_eq!(
            c.add(shanghai("2026-11-25 11:00"), Duration::from_secs(2 * H)),
            Some(shanghai("2026-11-25 14:30"))
        );
        // Before hours: counting starts at 09:00.
        assert_eq!(
            c.add(shanghai("2026-11-25 07:00"), Duration::from_secs(H)),
            Some(shanghai("2026-11-25 10:00"))
        );
        // Sept 30 (Wed) 17:00 + 4 h: the holiday week is skipped.
        assert_eq!(
            c.add(shanghai("2026-09-30 17:00"), Duration::from_secs(4 * H)),
            Some(shanghai("2026-10-08 12:00"))
        );
        // Fri 10-09 17:00 + 2 h: Saturday 10-10 is a make-up workday (调休).
        assert_eq!(
            c.add(shanghai("2026-10-09 17:00"), Duration::from_secs(2 * H)),
            Some(shanghai("2026-10-10 10:00"))
        );
        assert!(!c.is_workday(NaiveDate::from_ymd_opt(2026, 10, 5).unwrap()));
        assert!(c.is_workday(NaiveDate::from_ymd_opt(2026, 10, 10).unwrap()));
        assert!(!c.is_workday(NaiveDate::from_ymd_opt(2026, 10, 11).unwrap()));
    }

    #[test]
    fn elapsed_counts_only_working_time() {
        let c = cal();
        assert_eq!(
            c.elapsed(shanghai("2026-11-27 16:00"), shanghai("2026-11-30 11:00")),
            Duration::from_secs(4 * H)
        );
        assert_eq!(
            c.elapsed(shanghai("2026-11-28 10:00"), shanghai("2026-11-29 20:00")),
            Duration::ZERO,
            "a weekend"
        );
    }

    #[test]
    fn bad_calendars_are_refused_with_the_key() {
        let with = |f: fn(&mut CalendarConfig)| {
            let mut c = CalendarConfig::default();
            f(&mut c);
            WorkCalendar::new(&c, chrono_tz::Asia::Shanghai).unwrap_err()
        };
        assert!(with(|c| c.work_days = vec!["funday".into()]).contains("work_days"));
        assert!(with(|c| c.work_hours = vec!["18:00-09:00".into()]).contains("work_hours"));
        assert!(
            with(|c| c.work_hours = vec!["09:00-12:00".into(), "11:00-13:00".into()])
                .contains("overlaps")
        );
        assert!(with(|c| c.holidays = vec!["2026-13-01".into()]).contains("holidays"));
        assert!(with(|c| c.work_days.clear()).contains("working days"));
    }

    proptest! {
        #[test]
        fn adding_then_measuring_gives_the_work_back(start in 0i64..(366 * 24 * 60), minutes in 0u64..(40 * 60)) {
            let c = cal();
            let s = shanghai("2026-01-01 00:00") + chrono::Duration::minutes(start);
            let work = Duration::from_secs(minutes * 60);
            let end = c.add(s, work).unwrap();
            prop_assert!(end >= s);
            prop_assert_eq!(c.elapsed(s, end), work);
        }
    }
}
