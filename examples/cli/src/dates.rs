//! Times on the command line: RFC 3339 in, RFC 3339 (UTC, whole seconds) out.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// An RFC 3339 time, e.g. `2026-01-02T03:04:05Z` (for clap).
pub(crate) fn parse_rfc3339(value: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(value.trim(), &Rfc3339)
        .map_err(|_| format!("`{value}` is not an RFC 3339 time like 2026-01-02T03:04:05Z"))
}

/// An RFC 3339 time or Unix seconds (for clap).
pub(crate) fn parse_instant(value: &str) -> Result<OffsetDateTime, String> {
    if let Ok(seconds) = value.trim().parse::<i64>() {
        return OffsetDateTime::from_unix_timestamp(seconds)
            .map_err(|_| format!("{value} seconds is out of range"));
    }
    parse_rfc3339(value).map_err(|_| {
        format!("`{value}` is neither an RFC 3339 time like 2026-01-02T03:04:05Z nor Unix seconds")
    })
}

/// `at` in UTC, whole seconds: `2026-01-02T03:04:05Z`.
pub(crate) fn format(at: OffsetDateTime) -> String {
    let at = at.to_offset(UtcOffset::UTC);
    let at = at.replace_nanosecond(0).unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_accepts_unix_seconds() {
        let at = parse_rfc3339("2026-01-02T04:04:05.123+01:00").unwrap();
        assert_eq!(format(at), "2026-01-02T03:04:05Z");
        assert_eq!(
            parse_instant("1767323045").unwrap(),
            at.replace_millisecond(0).unwrap()
        );
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_instant("soon").is_err());
    }
}
