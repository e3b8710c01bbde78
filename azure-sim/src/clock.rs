//! Wall-clock helpers: Key Vault speaks unix seconds, ARM speaks RFC 3339, rotation policies
//! speak ISO-8601 durations (azure-notes Trap T3).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// Now, in unix seconds.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Now, in unix milliseconds (request records).
pub fn now_unix_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats unix seconds as RFC 3339 with 7 fractional digits, the way ARM does.
pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(|s| s.replace('Z', ".0000000Z"))
        .unwrap_or_else(|| "1970-01-01T00:00:00.0000000Z".to_owned())
}

/// Now as an RFC 3339 timestamp with sub-second precision (event times).
pub fn rfc3339_now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses an ISO-8601 duration (`P90D`, `P2Y`, `P1Y6M`, `PT12H`, `P4W`) into seconds,
/// counting a year as 365 days and a month as 30 days as Key Vault does for policy math.
pub fn parse_iso_duration(s: &str) -> Option<i64> {
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    if rest.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    let mut in_time = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if number.is_empty() => in_time = true,
            d if d.is_ascii_digit() => number.push(d),
            unit => {
                let n: i64 = number.parse().ok()?;
                number.clear();
                let seconds = match (unit, in_time) {
                    ('Y', false) => 365 * DAY,
                    ('M', false) => 30 * DAY,
                    ('W', false) => 7 * DAY,
                    ('D', false) => DAY,
                    ('H', true) => 3600,
                    ('M', true) => 60,
                    ('S', true) => 1,
                    _ => return None,
                };
                total = total.checked_add(n.checked_mul(seconds)?)?;
            }
        }
    }
    if number.is_empty() { Some(total) } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_iso_duration("P90D"), Some(90 * DAY));
        assert_eq!(parse_iso_duration("P2Y"), Some(730 * DAY));
        assert_eq!(parse_iso_duration("P1Y6M"), Some(545 * DAY));
        assert_eq!(parse_iso_duration("PT12H"), Some(12 * 3600));
        assert_eq!(parse_iso_duration("P4W"), Some(28 * DAY));
        assert_eq!(parse_iso_duration("90D"), None);
        assert_eq!(parse_iso_duration("P"), None);
        assert_eq!(parse_iso_duration("P5"), None);
    }

    #[test]
    fn arm_time_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.0000000Z");
    }
}
