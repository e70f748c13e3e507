//! Promotion windows (Kargo's `promotionWindows`, an Enterprise feature Kargo OSS only
//! carries): time windows that open or close a Stage to promotions, auto, manual and rollback
//! alike. A window is one interval (`dtstart` to `dtend`) or, with an RFC 5545 `rrule`, the same
//! length of time from each occurrence. The schedule is closed while any matching `Deny` window
//! is active, or when `Allow` windows match and none is active.
//!
//! Times are iCal date-times: `20260101T090000Z` (UTC), `20260101T090000` (UTC too, as Dray has
//! no local time), or `TZID=Europe/Paris:20260101T090000`.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use crate::resource::project::PromotionWindow;

/// How far ahead [`Schedule::next_open`] looks for a reopening.
const LOOK_AHEAD_DAYS: i64 = 366;

/// A window, read and checked.
#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub deny: bool,
    start: DateTime<rrule::Tz>,
    length: chrono::Duration,
    rule: Option<rrule::RRule<rrule::Unvalidated>>,
}

/// One of a window's fields is wrong: which, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowError {
    pub field: &'static str,
    pub message: String,
}

fn error(field: &'static str, message: impl Into<String>) -> WindowError {
    WindowError {
        field,
        message: message.into(),
    }
}

/// An iCal date-time, in UTC unless `TZID=` names a zone.
fn date_time(text: &str, field: &'static str) -> Result<DateTime<rrule::Tz>, WindowError> {
    let (zone, local) = match text.strip_prefix("TZID=") {
        Some(rest) => {
            let (zone, local) = rest.split_once(':').ok_or_else(|| {
                error(
                    field,
                    format!("{text:?}: write TZID=Area/City:YYYYMMDDTHHMMSS"),
                )
            })?;
            let zone: chrono_tz::Tz = zone.parse().map_err(|_| {
                error(
                    field,
                    format!("{zone:?} is not a time zone (e.g. Europe/Paris)"),
                )
            })?;
            (rrule::Tz::Tz(zone), local)
        }
        None => (rrule::Tz::UTC, text),
    };
    let naive = NaiveDateTime::parse_from_str(local.trim_end_matches('Z'), "%Y%m%dT%H%M%S")
        .map_err(|_| {
            error(
                field,
                format!("{text:?} is not an iCal date-time like 20260101T090000Z"),
            )
        })?;
    zone.from_local_datetime(&naive).earliest().ok_or_else(|| {
        error(
            field,
            format!("{text:?} does not exist in its time zone (a clock change skips it)"),
        )
    })
}

impl Window {
    pub fn parse(w: &PromotionWindow) -> Result<Window, WindowError> {
        let deny = match w.kind.as_str() {
            "Allow" => false,
            "Deny" => true,
            other => return Err(error("kind", format!("{other:?} is not Allow or Deny"))),
        };
        let start = date_time(
            w.dtstart
                .as_deref()
                .ok_or_else(|| error("dtstart", "is required"))?,
            "dtstart",
        )?;
        let end = date_time(
            w.dtend.as_deref().ok_or_else(|| {
                error(
                    "dtend",
                    "is required (with rrule, dtend - dtstart is each occurrence's length)",
                )
            })?,
            "dtend",
        )?;
        let length = end.signed_duration_since(start);
        if length <= chrono::Duration::zero() {
            return Err(error("dtend", "must be after dtstart"));
        }
        let rule = match w.rrule.as_deref().filter(|r| !r.is_empty()) {
            None => None,
            Some(text) => {
                let text = text.strip_prefix("RRULE:").unwrap_or(text);
                let rule: rrule::RRule<rrule::Unvalidated> = text
                    .parse()
                    .map_err(|e| error("rrule", format!("{text:?}: {e}")))?;
                if matches!(
                    rule.get_freq(),
                    rrule::Frequency::Secondly | rrule::Frequency::Minutely
                ) {
                    return Err(error(
                        "rrule",
                        "FREQ=SECONDLY and FREQ=MINUTELY are refused: a window recurs hourly at most",
                    ));
                }
                rule.clone()
                    .build(start)
                    .map_err(|e| error("rrule", format!("{text:?}: {e}")))?;
                Some(rule)
            }
        };
        Ok(Window {
            name: w.name.clone(),
            deny,
            start,
            length,
            rule,
        })
    }

    /// The starts of occurrences in `[from, to]` (at most `limit`); `None` when the rule cannot
    /// be evaluated that far (then the window counts as active for Deny, inactive for Allow).
    fn starts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u16,
    ) -> Option<Vec<DateTime<Utc>>> {
        match &self.rule {
            None => Some(
                Some(self.start.with_timezone(&Utc))
                    .filter(|s| *s >= from && *s <= to)
                    .into_iter()
                    .collect(),
            ),
            Some(rule) => {
                let set = rule.clone().build(self.start).ok()?;
                let result = set
                    .after(from.with_timezone(&rrule::Tz::UTC))
                    .before(to.with_timezone(&rrule::Tz::UTC))
                    .all(limit);
                Some(result.dates.iter().map(|d| d.with_timezone(&Utc)).collect())
            }
        }
    }

    /// Whether the window is active at `at`, and when the occurrence that makes it so ends.
    fn active(&self, at: DateTime<Utc>) -> Active {
        let from = at - self.length + chrono::Duration::seconds(1);
        match self.starts(from, at, 64) {
            None => Active::Unknown,
            Some(starts) => starts
                .iter()
                .map(|s| *s + self.length)
                .filter(|end| *end > at)
                .max()
                .map_or(Active::No, Active::Until),
        }
    }

    /// The next start after `at` within a year, if any.
    fn next_start(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let to = at + chrono::Duration::days(LOOK_AHEAD_DAYS);
        self.starts(at + chrono::Duration::seconds(1), to, 1)?
            .into_iter()
            .next()
    }
}

/// Whether a window is active at one time.
enum Active {
    No,
    /// Until the end of the occurrence that makes it so.
    Until(DateTime<Utc>),
    /// Its rule cannot be evaluated that far.
    Unknown,
}

/// What the windows matching a Stage say at one time.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    Open,
    /// Why it is closed, and when it is next expected to open (if known within a year).
    Closed {
        reason: String,
        next_open: Option<DateTime<Utc>>,
    },
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The gate of `windows` (those matching one Stage) at `at`.
pub fn gate(windows: &[Window], at: DateTime<Utc>) -> Gate {
    // A Deny window that cannot be evaluated closes; an Allow window that cannot, stays shut.
    let mut denied: Option<(String, Option<DateTime<Utc>>)> = None;
    for w in windows.iter().filter(|w| w.deny) {
        match w.active(at) {
            Active::No => {}
            Active::Until(end) => {
                let later = denied
                    .as_ref()
                    .is_none_or(|(_, e)| e.is_some_and(|e| end > e));
                if later {
                    denied = Some((w.name.clone(), Some(end)));
                }
            }
            Active::Unknown => denied = Some((w.name.clone(), None)),
        }
    }
    if let Some((name, until)) = denied {
        return Gate::Closed {
            reason: match until {
                Some(end) => format!(
                    "promotion window {name:?} (Deny) is active until {}",
                    when(end)
                ),
                None => format!(
                    "promotion window {name:?} (Deny) cannot be evaluated, so it counts as active"
                ),
            },
            next_open: until,
        };
    }
    let allows: Vec<&Window> = windows.iter().filter(|w| !w.deny).collect();
    if allows.is_empty()
        || allows
            .iter()
            .any(|w| matches!(w.active(at), Active::Until(_)))
    {
        return Gate::Open;
    }
    let next_open = allows.iter().filter_map(|w| w.next_start(at)).min();
    let names: Vec<String> = allows.iter().map(|w| format!("{:?}", w.name)).collect();
    Gate::Closed {
        reason: format!(
            "outside every Allow promotion window ({}){}",
            names.join(", "),
            next_open.map_or_else(
                || "; none opens within a year".to_string(),
                |t| format!("; the next opens at {}", when(t))
            )
        ),
        next_open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(kind: &str, rrule: Option<&str>, start: &str, end: &str) -> Window {
        Window::parse(&PromotionWindow {
            name: format!("{kind}-window").to_lowercase(),
            kind: kind.into(),
            rrule: rrule.map(str::to_string),
            dtstart: Some(start.into()),
            dtend: Some(end.into()),
            ..PromotionWindow::default()
        })
        .unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn a_weekly_freeze_closes_from_friday_evening_to_monday_morning() {
        // Fridays 18:00 Paris time, for 63 hours.
        let freeze = window(
            "Deny",
            Some("FREQ=WEEKLY;BYDAY=FR"),
            "TZID=Europe/Paris:20260102T180000",
            "TZID=Europe/Paris:20260105T090000",
        );
        let windows = [freeze];
        // Wednesday: open.
        assert_eq!(gate(&windows, at("2026-11-25T12:00:00Z")), Gate::Open);
        // Saturday: closed until Monday 09:00 Paris (08:00 UTC in winter).
        match gate(&windows, at("2026-11-28T12:00:00Z")) {
            Gate::Closed { reason, next_open } => {
                assert_eq!(next_open, Some(at("2026-11-30T08:00:00Z")));
                assert!(reason.contains("\"deny-window\" (Deny)"), "{reason}");
            }
            Gate::Open => panic!("a Saturday is frozen"),
        }
        // Monday 08:00 UTC exactly: open again.
        assert_eq!(gate(&windows, at("2026-11-30T08:00:00Z")), Gate::Open);
    }

    #[test]
    fn allow_windows_open_only_while_one_is_active() {
        let office = window(
            "Allow",
            Some("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH"),
            "20260105T090000Z",
            "20260105T170000Z",
        );
        let windows = [office];
        assert_eq!(gate(&windows, at("2026-11-25T10:00:00Z")), Gate::Open);
        match gate(&windows, at("2026-11-27T10:00:00Z")) {
            Gate::Closed { next_open, reason } => {
                // Friday: the next opening is Monday 09:00.
                assert_eq!(next_open, Some(at("2026-11-30T09:00:00Z")), "{reason}");
            }
            Gate::Open => panic!("Friday is outside the window"),
        }
        // A one-shot Allow window in the past never opens again.
        let past = [window(
            "Allow",
            None,
            "20250101T000000Z",
            "20250102T000000Z",
        )];
        match gate(&past, at("2026-11-27T10:00:00Z")) {
            Gate::Closed { next_open, reason } => {
                assert_eq!(next_open, None);
                assert!(reason.contains("none opens within a year"), "{reason}");
            }
            Gate::Open => panic!("the window is over"),
        }
        // A Deny window beats an Allow window.
        let both = [
            window("Allow", None, "20260101T000000Z", "20270101T000000Z"),
            window("Deny", None, "20261124T000000Z", "20261201T000000Z"),
        ];
        assert!(matches!(
            gate(&both, at("2026-11-27T10:00:00Z")),
            Gate::Closed { .. }
        ));
        assert_eq!(gate(&both, at("2026-12-02T10:00:00Z")), Gate::Open);
    }

    #[test]
    fn wrong_windows_say_which_field_and_why() {
        let bad = |kind: &str, rrule: Option<&str>, start: Option<&str>, end: Option<&str>| {
            Window::parse(&PromotionWindow {
                name: "w".into(),
                kind: kind.into(),
                rrule: rrule.map(str::to_string),
                dtstart: start.map(str::to_string),
                dtend: end.map(str::to_string),
                ..PromotionWindow::default()
            })
            .unwrap_err()
        };
        let e = bad(
            "Maybe",
            None,
            Some("20260101T000000Z"),
            Some("20260102T000000Z"),
        );
        assert_eq!(e.field, "kind");
        let e = bad("Deny", None, Some("2026-01-01"), Some("20260102T000000Z"));
        assert_eq!(e.field, "dtstart");
        let e = bad(
            "Deny",
            None,
            Some("TZID=Mars/Olympus:20260101T000000"),
            Some("20260102T000000Z"),
        );
        assert!(e.message.contains("not a time zone"), "{e:?}");
        let e = bad(
            "Deny",
            None,
            Some("20260102T000000Z"),
            Some("20260101T000000Z"),
        );
        assert_eq!(
            (e.field, e.message.as_str()),
            ("dtend", "must be after dtstart")
        );
        let e = bad("Deny", None, Some("20260101T000000Z"), None);
        assert_eq!(e.field, "dtend");
        let e = bad(
            "Deny",
            Some("FREQ=FORTNIGHTLY"),
            Some("20260101T000000Z"),
            Some("20260102T000000Z"),
        );
        assert_eq!(e.field, "rrule");
        // A rule that would make every evaluation walk millions of occurrences is refused.
        let e = bad(
            "Deny",
            Some("FREQ=SECONDLY"),
            Some("19700101T000000Z"),
            Some("19700101T000001Z"),
        );
        assert!(e.message.contains("hourly at most"), "{e:?}");
    }

    #[test]
    fn an_hourly_rule_from_long_ago_is_still_evaluated() {
        let w = window(
            "Deny",
            Some("FREQ=HOURLY"),
            "20200101T000000Z",
            "20200101T001000Z",
        );
        assert!(matches!(
            gate(std::slice::from_ref(&w), at("2026-11-27T10:05:00Z")),
            Gate::Closed { .. }
        ));
        assert_eq!(gate(&[w], at("2026-11-27T10:30:00Z")), Gate::Open);
    }
}
