//! Go's `time.Time` and `time.Duration` as Sprig's date functions use them: formatting and
//! parsing with Go's reference-time layouts (`2006-01-02T15:04:05Z07:00`), `Duration.String`
//! and `ParseDuration`. Only UTC is known as a zone (the sandbox has no zone database, and
//! `Local` is UTC in it, as in a container without `TZ`): another zone name is an error, not a
//! silently different time.

use std::sync::Arc;

use crate::value::{Object, Value};

const NANOS_PER_SEC: i128 = 1_000_000_000;

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
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// An instant, seen at a fixed offset from UTC (named `zone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Time {
    /// Nanoseconds since the Unix epoch.
    pub nanos: i128,
    /// Seconds east of UTC.
    pub offset: i32,
    pub zone: String,
}

/// The calendar fields of a time.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    weekday: usize,
    yday: u32,
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

impl Time {
    pub fn utc(nanos: i128) -> Time {
        Time {
            nanos,
            offset: 0,
            zone: "UTC".into(),
        }
    }

    /// The wall clock now, in UTC.
    pub fn now() -> Time {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Time::utc(since.as_nanos() as i128)
    }

    pub fn unix(&self) -> i64 {
        self.nanos.div_euclid(NANOS_PER_SEC) as i64
    }

    fn civil(&self) -> Civil {
        let local = self.nanos + i128::from(self.offset) * NANOS_PER_SEC;
        let secs = local.div_euclid(NANOS_PER_SEC) as i64;
        let nanos = local.rem_euclid(NANOS_PER_SEC) as u32;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        let yday = (days - days_from_civil(year, 1, 1)) as u32 + 1;
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            nanos,
            weekday: (days + 4).rem_euclid(7) as usize,
            yday,
        }
    }

    /// The same instant in zone `name` (`UTC`, `Local` or empty: UTC).
    pub fn in_zone(&self, name: &str) -> Result<Time, String> {
        match name {
            "" | "UTC" | "Local" => Ok(Time::utc(self.nanos)),
            other => Err(format!(
                "time zone {other:?} is not known here: only UTC is (there is no zone database in the sandbox)"
            )),
        }
    }

    /// Formats with a Go layout.
    pub fn format(&self, layout: &str) -> String {
        let c = self.civil();
        let mut out = String::new();
        let mut rest = layout;
        while !rest.is_empty() {
            let Some((prefix, token, after)) = next_token(rest) else {
                out.push_str(rest);
                break;
            };
            out.push_str(prefix);
            rest = after;
            let offset_text = |colon: bool, seconds: bool, z: bool, hours_only: bool| {
                if z && self.offset == 0 {
                    return "Z".to_string();
                }
                let sign = if self.offset < 0 { '-' } else { '+' };
                let off = self.offset.unsigned_abs();
                let (h, m, s) = (off / 3600, off % 3600 / 60, off % 60);
                let sep = if colon { ":" } else { "" };
                let mut text = format!("{sign}{h:02}");
                if !hours_only {
                    text.push_str(&format!("{sep}{m:02}"));
                }
                if seconds {
                    text.push_str(&format!("{sep}{s:02}"));
                }
                text
            };
            let hour12 = match c.hour % 12 {
                0 => 12,
                h => h,
            };
            let piece = match token {
                Token::LongYear => format!("{:04}", c.year),
                Token::Year => format!("{:02}", c.year.rem_euclid(100)),
                Token::LongMonth => MONTHS[c.month as usize - 1].to_string(),
                Token::Month => MONTHS[c.month as usize - 1][..3].to_string(),
                Token::NumMonth => c.month.to_string(),
                Token::ZeroMonth => format!("{:02}", c.month),
                Token::LongWeekDay => DAYS[c.weekday].to_string(),
                Token::WeekDay => DAYS[c.weekday][..3].to_string(),
                Token::Day => c.day.to_string(),
                Token::UnderDay => format!("{:>2}", c.day),
                Token::ZeroDay => format!("{:02}", c.day),
                Token::UnderYearDay => format!("{:>3}", c.yday),
                Token::ZeroYearDay => format!("{:03}", c.yday),
                Token::Hour => format!("{:02}", c.hour),
                Token::Hour12 => hour12.to_string(),
                Token::ZeroHour12 => format!("{hour12:02}"),
                Token::Minute => c.minute.to_string(),
                Token::ZeroMinute => format!("{:02}", c.minute),
                Token::Second => c.second.to_string(),
                Token::ZeroSecond => format!("{:02}", c.second),
                Token::PM => (if c.hour >= 12 { "PM" } else { "AM" }).to_string(),
                Token::Pm => (if c.hour >= 12 { "pm" } else { "am" }).to_string(),
                Token::TZ => self.zone.clone(),
                Token::Iso8601TZ => offset_text(false, false, true, false),
                Token::Iso8601SecondsTZ => offset_text(false, true, true, false),
                Token::Iso8601ShortTZ => offset_text(false, false, true, true),
                Token::Iso8601ColonTZ => offset_text(true, false, true, false),
                Token::Iso8601ColonSecondsTZ => offset_text(true, true, true, false),
                Token::NumTZ => offset_text(false, false, false, false),
                Token::NumSecondsTz => offset_text(false, true, false, false),
                Token::NumShortTZ => offset_text(false, false, false, true),
                Token::NumColonTZ => offset_text(true, false, false, false),
                Token::NumColonSecondsTZ => offset_text(true, true, false, false),
                Token::Fraction { digits, trim, sep } => {
                    let text = format!("{:09}", c.nanos);
                    let text = &text[..digits];
                    if trim {
                        let t = text.trim_end_matches('0');
                        if t.is_empty() {
                            String::new()
                        } else {
                            format!("{sep}{t}")
                        }
                    } else {
                        format!("{sep}{text}")
                    }
                }
            };
            out.push_str(&piece);
        }
        out
    }

    /// Parses `text` with a Go layout, in UTC unless it gives an offset (`time.ParseInLocation`
    /// with `Local` being UTC).
    pub fn parse(layout: &str, text: &str) -> Result<Time, String> {
        let fail = |why: &str| format!("parsing time {text:?} as {layout:?}: {why}");
        let (mut year, mut month, mut day, mut hour, mut minute, mut second) =
            (1i64, 1u32, 1u32, 0u32, 0u32, 0u32);
        let mut nanos = 0u32;
        let mut pm: Option<bool> = None;
        let mut offset = 0i32;
        let mut rest_layout = layout;
        let mut value = text;
        let number = |value: &mut &str, min: usize, max: usize| -> Result<u32, String> {
            let digits = value
                .bytes()
                .take(max)
                .take_while(u8::is_ascii_digit)
                .count();
            if digits < min {
                return Err(fail("bad number"));
            }
            let n = value[..digits].parse().map_err(|_| fail("bad number"))?;
            *value = &value[digits..];
            Ok(n)
        };
        while !rest_layout.is_empty() {
            let Some((prefix, token, after)) = next_token(rest_layout) else {
                value = value
                    .strip_prefix(rest_layout)
                    .ok_or_else(|| fail(&format!("cannot parse {value:?} as {rest_layout:?}")))?;
                break;
            };
            value = value
                .strip_prefix(prefix)
                .ok_or_else(|| fail(&format!("cannot parse {value:?} as {prefix:?}")))?;
            rest_layout = after;
            match token {
                Token::LongYear => year = i64::from(number(&mut value, 4, 4)?),
                Token::Year => {
                    let y = i64::from(number(&mut value, 2, 2)?);
                    year = if y >= 69 { 1900 + y } else { 2000 + y };
                }
                Token::LongMonth | Token::Month => {
                    let found = MONTHS.iter().position(|m| {
                        let name = if token == Token::Month { &m[..3] } else { m };
                        value.len() >= name.len() && value[..name.len()].eq_ignore_ascii_case(name)
                    });
                    let i = found.ok_or_else(|| fail("bad month"))?;
                    let len = if token == Token::Month {
                        3
                    } else {
                        MONTHS[i].len()
                    };
                    value = &value[len..];
                    month = i as u32 + 1;
                }
                Token::NumMonth | Token::ZeroMonth => month = number(&mut value, 1, 2)?,
                Token::LongWeekDay | Token::WeekDay => {
                    let found = DAYS.iter().find_map(|d| {
                        let name = if token == Token::WeekDay { &d[..3] } else { *d };
                        (value.len() >= name.len()
                            && value[..name.len()].eq_ignore_ascii_case(name))
                        .then_some(name.len())
                    });
                    value = &value[found.ok_or_else(|| fail("bad weekday"))?..];
                }
                Token::Day | Token::ZeroDay => day = number(&mut value, 1, 2)?,
                Token::UnderDay => {
                    value = value.strip_prefix(' ').unwrap_or(value);
                    day = number(&mut value, 1, 2)?;
                }
                Token::UnderYearDay | Token::ZeroYearDay => {
                    value = value.trim_start_matches(' ');
                    let yday = number(&mut value, 1, 3)?;
                    let (m, d) =
                        month_day(year, yday).ok_or_else(|| fail("day of year out of range"))?;
                    month = m;
                    day = d;
                }
                Token::Hour => hour = number(&mut value, 1, 2)?,
                Token::Hour12 | Token::ZeroHour12 => hour = number(&mut value, 1, 2)?,
                Token::Minute | Token::ZeroMinute => minute = number(&mut value, 1, 2)?,
                Token::Second | Token::ZeroSecond => {
                    second = number(&mut value, 1, 2)?;
                    // A fraction after seconds is accepted even if the layout has none.
                    if let Some(frac) = value.strip_prefix('.').or_else(|| value.strip_prefix(','))
                        && frac.starts_with(|c: char| c.is_ascii_digit())
                        && !matches!(
                            next_token(rest_layout),
                            Some(("", Token::Fraction { .. }, _))
                        )
                    {
                        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
                        nanos = fraction(&frac[..digits]);
                        value = &frac[digits..];
                    }
                }
                Token::PM | Token::Pm => {
                    let upper = value.get(..2).map(str::to_ascii_uppercase);
                    pm = match upper.as_deref() {
                        Some("PM") => Some(true),
                        Some("AM") => Some(false),
                        _ => return Err(fail("bad AM/PM")),
                    };
                    value = &value[2..];
                }
                Token::TZ => {
                    let len = value.bytes().take_while(u8::is_ascii_uppercase).count();
                    if len < 3 {
                        return Err(fail("bad zone abbreviation"));
                    }
                    if &value[..len] != "UTC" && &value[..len] != "GMT" {
                        return Err(fail("only the UTC zone is known here"));
                    }
                    value = &value[len..];
                }
                Token::Fraction { digits, trim, .. } => {
                    let Some(frac) = value.strip_prefix('.').or_else(|| value.strip_prefix(','))
                    else {
                        if trim {
                            continue;
                        }
                        return Err(fail("missing fraction"));
                    };
                    let n = frac.bytes().take_while(u8::is_ascii_digit).count();
                    if !trim && n != digits {
                        return Err(fail("bad fraction"));
                    }
                    nanos = fraction(&frac[..n]);
                    value = &frac[n..];
                }
                offset_token => {
                    let z = matches!(
                        offset_token,
                        Token::Iso8601TZ
                            | Token::Iso8601SecondsTZ
                            | Token::Iso8601ShortTZ
                            | Token::Iso8601ColonTZ
                            | Token::Iso8601ColonSecondsTZ
                    );
                    if z && let Some(after) = value.strip_prefix('Z') {
                        value = after;
                        continue;
                    }
                    let sign = match value.as_bytes().first() {
                        Some(b'+') => 1,
                        Some(b'-') => -1,
                        _ => return Err(fail("bad offset")),
                    };
                    value = &value[1..];
                    let colon = matches!(
                        offset_token,
                        Token::Iso8601ColonTZ
                            | Token::Iso8601ColonSecondsTZ
                            | Token::NumColonTZ
                            | Token::NumColonSecondsTZ
                    );
                    let h = number(&mut value, 2, 2)?;
                    let mut total = h * 3600;
                    let short = matches!(offset_token, Token::Iso8601ShortTZ | Token::NumShortTZ);
                    if !short {
                        if colon {
                            value = value.strip_prefix(':').ok_or_else(|| fail("bad offset"))?;
                        }
                        total += number(&mut value, 2, 2)? * 60;
                    }
                    if matches!(
                        offset_token,
                        Token::Iso8601SecondsTZ
                            | Token::Iso8601ColonSecondsTZ
                            | Token::NumSecondsTz
                            | Token::NumColonSecondsTZ
                    ) {
                        if colon {
                            value = value.strip_prefix(':').ok_or_else(|| fail("bad offset"))?;
                        }
                        total += number(&mut value, 2, 2)?;
                    }
                    offset = sign * total as i32;
                }
            }
        }
        if !value.is_empty() {
            return Err(fail(&format!("extra text: {value:?}")));
        }
        match pm {
            Some(true) if hour < 12 => hour += 12,
            Some(false) if hour == 12 => hour = 0,
            _ => {}
        }
        let days_in_month = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if is_leap(year) => 29,
            2 => 28,
            _ => return Err(fail("month out of range")),
        };
        if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
            return Err(fail("value out of range"));
        }
        let secs = days_from_civil(year, month, day) * 86_400
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + i64::from(second)
            - i64::from(offset);
        let nanos = i128::from(secs) * NANOS_PER_SEC + i128::from(nanos);
        Ok(Time {
            nanos,
            offset,
            zone: if offset == 0 {
                "UTC".into()
            } else {
                String::new()
            },
        })
    }

    /// `time.Time.String()`: `2006-01-02 15:04:05.999999999 -0700 MST`.
    pub fn go_string(&self) -> String {
        let zone = if self.zone.is_empty() {
            self.format("-0700")
        } else {
            self.zone.clone()
        };
        format!(
            "{} {zone}",
            self.format("2006-01-02 15:04:05.999999999 -0700")
        )
    }
}

fn fraction(digits: &str) -> u32 {
    let mut text: String = digits.chars().take(9).collect();
    while text.len() < 9 {
        text.push('0');
    }
    text.parse().unwrap_or(0)
}

fn month_day(year: i64, yday: u32) -> Option<(u32, u32)> {
    let mut left = yday;
    for month in 1..=12u32 {
        let len = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            _ if is_leap(year) => 29,
            _ => 28,
        };
        if left >= 1 && left <= len {
            return Some((month, left));
        }
        left = left.checked_sub(len)?;
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
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
    PM,
    Pm,
    TZ,
    Iso8601TZ,
    Iso8601SecondsTZ,
    Iso8601ShortTZ,
    Iso8601ColonTZ,
    Iso8601ColonSecondsTZ,
    NumTZ,
    NumSecondsTz,
    NumShortTZ,
    NumColonTZ,
    NumColonSecondsTZ,
    Fraction {
        digits: usize,
        trim: bool,
        sep: char,
    },
}

/// The text before the next layout token, the token, and what follows (Go's `nextStdChunk`).
fn next_token(layout: &str) -> Option<(&str, Token, &str)> {
    let b = layout.as_bytes();
    let starts = |i: usize, s: &str| layout[i..].starts_with(s);
    for i in 0..b.len() {
        if !layout.is_char_boundary(i) {
            continue;
        }
        let hit = |len: usize, t: Token| Some((&layout[..i], t, &layout[i + len..]));
        match b[i] {
            b'J' if starts(i, "Jan") => {
                if starts(i, "January") {
                    return hit(7, Token::LongMonth);
                }
                if !starts_lower(&layout[i + 3..]) {
                    return hit(3, Token::Month);
                }
            }
            b'M' => {
                if starts(i, "Mon") {
                    if starts(i, "Monday") {
                        return hit(6, Token::LongWeekDay);
                    }
                    if !starts_lower(&layout[i + 3..]) {
                        return hit(3, Token::WeekDay);
                    }
                }
                if starts(i, "MST") {
                    return hit(3, Token::TZ);
                }
            }
            b'0' => {
                if let Some(&c) = b.get(i + 1)
                    && (b'1'..=b'6').contains(&c)
                {
                    let t = [
                        Token::ZeroMonth,
                        Token::ZeroDay,
                        Token::ZeroHour12,
                        Token::ZeroMinute,
                        Token::ZeroSecond,
                        Token::Year,
                    ][(c - b'1') as usize];
                    return hit(2, t);
                }
                if starts(i, "002") {
                    return hit(3, Token::ZeroYearDay);
                }
            }
            b'1' => {
                if starts(i, "15") {
                    return hit(2, Token::Hour);
                }
                return hit(1, Token::NumMonth);
            }
            b'2' => {
                if starts(i, "2006") {
                    return hit(4, Token::LongYear);
                }
                return hit(1, Token::Day);
            }
            b'_' => {
                if starts(i, "_2") {
                    if starts(i, "_2006") {
                        // `_` then a year: the underscore is text.
                        return Some((&layout[..i + 1], Token::LongYear, &layout[i + 5..]));
                    }
                    return hit(2, Token::UnderDay);
                }
                if starts(i, "__2") {
                    return hit(3, Token::UnderYearDay);
                }
            }
            b'3' => return hit(1, Token::Hour12),
            b'4' => return hit(1, Token::Minute),
            b'5' => return hit(1, Token::Second),
            b'P' if starts(i, "PM") => return hit(2, Token::PM),
            b'p' if starts(i, "pm") => return hit(2, Token::Pm),
            b'-' => {
                for (text, t) in [
                    ("-07:00:00", Token::NumColonSecondsTZ),
                    ("-070000", Token::NumSecondsTz),
                    ("-07:00", Token::NumColonTZ),
                    ("-0700", Token::NumTZ),
                    ("-07", Token::NumShortTZ),
                ] {
                    if starts(i, text) {
                        return hit(text.len(), t);
                    }
                }
            }
            b'Z' => {
                for (text, t) in [
                    ("Z07:00:00", Token::Iso8601ColonSecondsTZ),
                    ("Z070000", Token::Iso8601SecondsTZ),
                    ("Z07:00", Token::Iso8601ColonTZ),
                    ("Z0700", Token::Iso8601TZ),
                    ("Z07", Token::Iso8601ShortTZ),
                ] {
                    if starts(i, text) {
                        return hit(text.len(), t);
                    }
                }
            }
            b'.' | b',' => {
                if let Some(&d) = b.get(i + 1)
                    && (d == b'0' || d == b'9')
                {
                    let n = b[i + 1..].iter().take_while(|&&c| c == d).count();
                    // A fraction only if no digit follows it.
                    if !b.get(i + 1 + n).is_some_and(u8::is_ascii_digit) {
                        return hit(
                            1 + n,
                            Token::Fraction {
                                digits: n.min(9),
                                trim: d == b'9',
                                sep: b[i] as char,
                            },
                        );
                    }
                }
            }
            _ => {}
        }
    }
    None
}

fn starts_lower(s: &str) -> bool {
    s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

/// `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub fn duration_string(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let neg = d < 0;
    let u = d.unsigned_abs();
    let frac = |v: u64, prec: u32| -> String {
        let whole = v / 10u64.pow(prec);
        let rest = v % 10u64.pow(prec);
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = format!("{rest:0width$}", width = prec as usize);
            format!("{whole}.{}", digits.trim_end_matches('0'))
        }
    };
    let text = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 6))
    } else {
        let secs_total = u / 1_000_000_000;
        let nanos = u % 1_000_000_000;
        let (h, m, s) = (secs_total / 3600, secs_total % 3600 / 60, secs_total % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&frac(s * 1_000_000_000 + nanos, 9));
        out.push('s');
        out
    };
    if neg { format!("-{text}") } else { text }
}

/// `time.ParseDuration`: `300ms`, `-1.5h`, `2h45m`; nanoseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration {text:?}");
    let (neg, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        if n == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .bytes()
            .take_while(|c| !c.is_ascii_digit() && *c != b'.')
            .count();
        let scale: f64 = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            unit => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        rest = &rest[u..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        return Err(bad());
    }
    let n = total.round() as i64;
    Ok(if neg { -n } else { n })
}

impl Object for Time {
    fn type_name(&self) -> String {
        "time.Time".into()
    }

    fn field(&self, name: &str) -> Option<Result<Value, String>> {
        let c = self.civil();
        Some(Ok(match name {
            "Unix" => Value::Int(self.unix()),
            "UnixNano" => Value::Int(i64::try_from(self.nanos).unwrap_or(i64::MIN)),
            "Year" => Value::Int(c.year),
            "Month" => Value::Int(i64::from(c.month)),
            "Day" => Value::Int(i64::from(c.day)),
            "Hour" => Value::Int(i64::from(c.hour)),
            "Minute" => Value::Int(i64::from(c.minute)),
            "Second" => Value::Int(i64::from(c.second)),
            "Nanosecond" => Value::Int(i64::from(c.nanos)),
            "YearDay" => Value::Int(i64::from(c.yday)),
            "Weekday" => Value::from(DAYS[c.weekday]),
            "UTC" | "Local" => Value::Object(Arc::new(Time::utc(self.nanos))),
            "IsZero" => Value::Bool(self.nanos == -62_135_596_800 * NANOS_PER_SEC),
            "String" => Value::from(self.go_string().as_str()),
            _ => return None,
        }))
    }

    fn method(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
        let other = |v: &Value| match v {
            Value::Object(o) if o.type_name() == "time.Time" => {
                match (o.field("Unix"), o.field("Nanosecond")) {
                    (Some(Ok(Value::Int(s))), Some(Ok(Value::Int(n)))) => {
                        Some(i128::from(s) * NANOS_PER_SEC + i128::from(n))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        Some(match (name, args) {
            ("Format", [Value::String(layout)]) => Ok(Value::from(self.format(layout).as_str())),
            ("Add", [Value::Int(d)]) => Ok(Value::Object(Arc::new(Time {
                nanos: self.nanos + i128::from(*d),
                ..self.clone()
            }))),
            ("After" | "Before" | "Equal", [t]) => match other(t) {
                Some(b) => {
                    let a = self.nanos;
                    Ok(Value::Bool(match name {
                        "After" => a > b,
                        "Before" => a < b,
                        _ => a == b,
                    }))
                }
                _ => Err(format!("{name} wants a time.Time")),
            },
            ("Format" | "Add" | "After" | "Before" | "Equal", _) => {
                Err(format!("wrong arguments for time.Time.{name}"))
            }
            _ => return None,
        })
    }

    fn display(&self) -> String {
        self.go_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Time {
        Time::parse("2006-01-02T15:04:05.999999999Z07:00", text).expect("parses")
    }

    #[test]
    fn formats_with_go_layouts() {
        let t = at("2024-02-29T13:04:05.120Z");
        assert_eq!(t.format("2006-01-02"), "2024-02-29");
        assert_eq!(t.format("Jan _2 15:04:05.000"), "Feb 29 13:04:05.120");
        assert_eq!(
            t.format("Monday, 02-Jan-06 3:4:5 PM MST"),
            "Thursday, 29-Feb-24 1:4:5 PM UTC"
        );
        assert_eq!(
            t.format("2006-01-02T15:04:05Z07:00"),
            "2024-02-29T13:04:05Z"
        );
        assert_eq!(
            t.format("2006-01-02T15:04:05.999999999-07:00"),
            "2024-02-29T13:04:05.12+00:00"
        );
        assert_eq!(t.format("__2 002 .000000 ,99"), " 60 060 .120000 ,12");
        assert_eq!(t.go_string(), "2024-02-29 13:04:05.12 +0000 UTC");
        assert_eq!(
            Time::utc(0).format("2006-01-02 15:04:05 Mon"),
            "1970-01-01 00:00:00 Thu"
        );
        assert_eq!(
            Time::utc(-NANOS_PER_SEC).format("2006-01-02 15:04:05"),
            "1969-12-31 23:59:59"
        );
    }

    #[test]
    fn parses_what_it_formats() {
        let t = at("2024-02-29T13:04:05+02:00");
        assert_eq!(t.unix(), 1_709_204_645);
        assert_eq!(
            Time::parse("2006-01-02", "2021-12-31").expect("ok").unix(),
            1_640_908_800
        );
        assert_eq!(
            Time::parse("02 Jan 06 15:04 MST", "05 Mar 21 07:30 UTC")
                .expect("ok")
                .format("2006-01-02T15:04"),
            "2021-03-05T07:30"
        );
        assert_eq!(
            Time::parse("3:04PM", "12:30AM")
                .expect("ok")
                .format("15:04"),
            "00:30"
        );
        for bad in ["2021-02-30", "2021-13-01", "21-01-01", "2021-01-01x"] {
            assert!(Time::parse("2006-01-02", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_as_go_prints_and_reads_them() {
        for (d, s) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (90_000_000_000, "1m30s"),
            (3_723_500_000_000, "1h2m3.5s"),
            (-5_000_000_000, "-5s"),
            (3_600_000_000_000, "1h0m0s"),
        ] {
            assert_eq!(duration_string(d), s);
        }
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("-1.5h"), Ok(-5_400_000_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn only_utc_is_known() {
        let t = Time::utc(0);
        assert!(t.in_zone("UTC").is_ok() && t.in_zone("Local").is_ok());
        let e = t.in_zone("Europe/Berlin").expect_err("unknown");
        assert!(e.contains("only UTC"), "{e}");
    }
}
