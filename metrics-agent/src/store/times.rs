//! The times and durations of queries: `now`, `-1h`, RFC 3339, dates and
//! Unix seconds; `15m`, `1h`, `7d` steps and windows.

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// `30s` is refused; `1m`, `5m`, `1h`, `1d`, `7d`, or plain seconds (multiples of 60).
pub fn parse_step(text: &str) -> Result<i64, String> {
    let secs = parse_duration(text).ok_or_else(|| format!("step `{text}`: use e.g. 1m, 5m, 1h or 1d"))?;
    if secs < 60 || secs % 60 != 0 {
        return Err(format!("step `{text}`: use whole minutes (the finest tier is 1m)"));
    }
    Ok(secs)
}

/// Latest time accepted anywhere (9999-12-31T23:59:59Z): every time and
/// duration is at most this many seconds, so milliseconds of it fit in an i64.
pub const MAX_UNIX: i64 = 253_402_300_799;

/// `90s`, `15m`, `2h`, `7d`, `1w` or a number of seconds (at most `MAX_UNIX`).
pub fn parse_duration(text: &str) -> Option<i64> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = number.parse().ok()?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(scale).filter(|&d| d <= MAX_UNIX)
}

/// A point in time: `now`, `now-1h` / `-1h`, RFC 3339, `YYYY-MM-DD` (UTC
/// midnight) or Unix seconds.
pub fn parse_time(text: &str, now_unix: i64) -> Result<i64, String> {
    let t = parse_any_time(text, now_unix)?;
    if !(0..=MAX_UNIX).contains(&t) {
        return Err(format!("time `{}` is out of range: use a time between 1970 and 9999", text.trim()));
    }
    Ok(t)
}

fn parse_any_time(text: &str, now_unix: i64) -> Result<i64, String> {
    let t = text.trim();
    let bad = || format!("time `{t}`: use now, -1h, now-15m, 2026-05-01, 2026-05-01T10:00:00Z or Unix seconds");
    if t == "now" {
        return Ok(now_unix);
    }
    if let Some(ago) = t.strip_prefix("now-").or_else(|| t.strip_prefix('-')) {
        return parse_duration(ago).map(|d| now_unix.saturating_sub(d)).ok_or_else(bad);
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    if let Ok(dt) = OffsetDateTime::parse(t, &Rfc3339) {
        return Ok(dt.unix_timestamp());
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(t, &date_format).map(|d| d.midnight().assume_utc().unix_timestamp()).map_err(|_| bad())
}

pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// The exclusive end of a window; `now` (the default) includes the current second.
pub fn parse_end(to: Option<&str>, now_unix: i64) -> Result<i64, String> {
    match to.unwrap_or("now") {
        "now" => Ok(now_unix + 1),
        other => parse_time(other, now_unix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let now = 1_800_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("-1h", now), Ok(now - 3_600));
        assert_eq!(parse_time("now-2d", now), Ok(now - 172_800));
        assert_eq!(parse_time("2026-01-01", now), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01T00:01:00Z", now), Ok(1_767_225_660));
        assert_eq!(parse_time("1767225600", now), Ok(1_767_225_600));
        assert!(parse_time("yesterday", now).unwrap_err().contains("use now"));
        // Values whose milliseconds would overflow are refused, not wrapped.
        for t in ["-9223372036854775807s", "-300000000000", "9223372036854775807", "99999999999999", "-100000y"] {
            let e = parse_time(t, now).unwrap_err();
            assert!(!e.contains('\n') && e.contains(t), "{e}");
        }
        assert!(parse_time("-10000d", now).is_ok());
        assert_eq!(
            parse_time("-1800000001", now).unwrap_err(),
            "time `-1800000001` is out of range: use a time between 1970 and 9999"
        );
        assert_eq!(parse_duration("9223372036854775807s"), None);
        assert_eq!(parse_duration("1000000000000s"), None);
    }
}
