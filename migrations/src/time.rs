//! The one timestamp format stored everywhere: UTC ISO-8601 with milliseconds and a `Z`
//! (`2026-01-02T03:04:05.678Z`). Fixed width, so timestamps compare correctly as text.

use jiff::Timestamp;

/// Formats a timestamp in the stored format.
pub fn format(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Now, in the stored format.
pub fn now() -> String {
    format(Timestamp::now())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

/// Parses a stored timestamp. Also accepts any RFC 3339 time and SQLite's
/// `YYYY-MM-DD HH:MM:SS` (read as UTC), so values written by hand still work.
pub fn parse(s: &str) -> Option<Timestamp> {
    if let Ok(ts) = s.parse::<Timestamp>() {
        return Some(ts);
    }
    let civil: jiff::civil::DateTime = s.replace(' ', "T").parse().ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_fixed_width_and_round_trips() {
        let ts: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(format(ts), "2026-01-02T03:04:05.000Z");
        assert_eq!(parse(&format(ts)), Some(ts));
        assert_eq!(now().len(), 24);
    }

    #[test]
    fn parses_sqlite_datetime_as_utc() {
        let ts = parse("2026-01-02 03:04:05").unwrap();
        assert_eq!(format(ts), "2026-01-02T03:04:05.000Z");
        assert!(parse("yesterday").is_none());
    }
}
