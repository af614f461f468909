//! Time as iapeer stores it: epoch milliseconds in state files, RFC 3339 UTC
//! with milliseconds (`2026-11-21T04:44:14.821Z`) wherever a person reads it.
//! Decisions never read the clock; callers pass `now` in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, UTC.
pub(crate) type EpochMs = i64;

/// The wall clock, in epoch milliseconds. Before 1970 reads as 0.
pub fn now_ms() -> EpochMs {
    system_to_ms(SystemTime::now())
}

pub(crate) fn system_to_ms(t: SystemTime) -> EpochMs {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// `2026-11-21T04:44:14.821Z`: always UTC, always three fraction digits, so
/// the strings sort as the instants do.
pub fn format_ms(ms: EpochMs) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
        return format!("@{ms}ms");
    };
    let (year, month, day) = (t.year(), u8::from(t.month()), t.day());
    let (hour, minute, second) = (t.hour(), t.minute(), t.second());
    let milli = t.millisecond();
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// Reads any RFC 3339 timestamp (readers are forgiving about precision and
/// offset) as epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<EpochMs> {
    let t = OffsetDateTime::parse(s.trim(), &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A point in time as a person writes it on the command line: an RFC 3339
/// time, or a duration back from `now`.
pub(crate) fn parse_when(s: &str, now: EpochMs) -> Option<EpochMs> {
    parse_rfc3339(s).or_else(|| {
        parse_duration(s)
            .map(|d| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    })
}

/// [`parse_when`], and the forms a person types for a time of day, read
/// in the local time zone (`offset_s` east of UTC): `today`, `yesterday`
/// (their midnights), `HH:MM` or `HH:MM:SS` (the latest such time not in
/// the future).
pub(crate) fn parse_when_local(s: &str, now: EpochMs, offset_s: i32) -> Option<EpochMs> {
    const DAY: i64 = 86_400_000;
    let offset = i64::from(offset_s) * 1000;
    let local_now = now + offset;
    let local_midnight = local_now.div_euclid(DAY) * DAY;
    let utc = |local: i64| local - offset;
    match s.trim() {
        "today" => return Some(utc(local_midnight)),
        "yesterday" => return Some(utc(local_midnight - DAY)),
        _ => {}
    }
    let parts: Vec<&str> = s.trim().split(':').collect();
    if (2..=3).contains(&parts.len()) && parts.iter().all(|p| p.len() == 2) {
        let n: Vec<i64> = parts.iter().filter_map(|p| p.parse().ok()).collect();
        let (h, m, sec) = (n.first()?, n.get(1)?, n.get(2).unwrap_or(&0));
        if n.len() == parts.len() && *h < 24 && *m < 60 && *sec < 60 {
            let at = local_midnight + ((h * 60 + m) * 60 + sec) * 1000;
            let at = if at > local_now { at - DAY } else { at };
            return Some(utc(at));
        }
        return None;
    }
    parse_when(s, now)
}

/// Parses a duration like `90s`, `15m`, `1h30m`, `2d` or a bare number of
/// seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !digits.is_empty() {
        return None;
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_of_day_are_read_in_the_local_zone() {
        // 2026-12-01T14:30:00Z
        let now = parse_rfc3339("2026-12-01T14:30:00Z").unwrap();
        let at = |s: &str, off: i32| parse_when_local(s, now, off).map(format_ms);
        let rows = [
            ("today", 0, "2026-12-01T00:00:00.000Z"),
            ("yesterday", 0, "2026-11-30T00:00:00.000Z"),
            ("08:46", 0, "2026-12-01T08:46:00.000Z"),
            // Later than now today: yesterday's.
            ("15:00", 0, "2026-11-30T15:00:00.000Z"),
            ("08:46:30", 0, "2026-12-01T08:46:30.000Z"),
            // One hour east: local 15:30 now, local midnight is 23:00Z.
            ("today", 3600, "2026-11-30T23:00:00.000Z"),
            ("15:00", 3600, "2026-12-01T14:00:00.000Z"),
            ("1h", 3600, "2026-12-01T13:30:00.000Z"),
        ];
        for (s, off, want) in rows {
            assert_eq!(at(s, off).as_deref(), Some(want), "{s} at {off}");
        }
        for bad in ["24:00", "8:46", "08:60", "aa:bb", "tomorrow"] {
            assert_eq!(at(bad, 0), None, "{bad}");
        }
    }

    #[test]
    fn formats_with_millis_and_z() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_795_236_254_821), "2026-11-21T04:44:14.821Z");
    }

    #[test]
    fn round_trips_and_accepts_offsets() {
        let ms = 1_795_236_254_821;
        assert_eq!(parse_rfc3339(&format_ms(ms)), Some(ms));
        assert_eq!(parse_rfc3339("2026-11-21T05:44:14.821+01:00"), Some(ms));
        assert_eq!(parse_rfc3339("2026-11-21T04:44:14Z"), Some(ms - 821));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("90"), Some(90));
        assert_eq!(d("90s"), Some(90));
        assert_eq!(d("15m"), Some(900));
        assert_eq!(d("1h30m"), Some(5400));
        assert_eq!(d("2d"), Some(172_800));
        assert_eq!(d("1x"), None);
        assert_eq!(d("h"), None);
        assert_eq!(d("5m3"), None);
        assert_eq!(d(""), None);
    }
}
