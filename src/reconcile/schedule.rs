//! Five-field cron expressions with Kubernetes CronJob semantics (day of
//! month OR day of week, Sunday = 0 or 7) in an IANA time zone.
//!
//! Pure: `now` is passed in.

use chrono::TimeZone;
use croner::{
    Cron,
    parser::{CronParser, Seconds},
};
use k8s_openapi::jiff::Timestamp;

/// Parses a five-field expression (or an `@daily`-style macro).
pub fn parse(expr: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a valid five-field cron expression: {e}"))
}

/// Parses an IANA time zone name.
pub fn time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("{name:?} is not an IANA time zone name (for example Europe/Berlin)"))
}

/// The first time strictly after `now` that `cron` matches in `tz`.
pub fn next_after(cron: &Cron, tz: chrono_tz::Tz, now: Timestamp) -> Option<Timestamp> {
    let start = tz.timestamp_opt(now.as_second(), 0).single()?;
    let next = cron.find_next_occurrence(&start, false).ok()?;
    Timestamp::from_second(next.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn weekday_cutoff_in_berlin() {
        let cron = parse("0 16 * * 1-5").expect("valid");
        let tz = time_zone("Europe/Berlin").expect("tz");
        // Thursday 2026-11-26 10:00 UTC = 11:00 CET → 16:00 CET = 15:00 UTC.
        assert_eq!(
            next_after(&cron, tz, ts("2026-11-26T10:00:00Z")),
            Some(ts("2026-11-26T15:00:00Z"))
        );
        // Friday after the cut-off → Monday.
        assert_eq!(
            next_after(&cron, tz, ts("2026-11-27T15:30:00Z")),
            Some(ts("2026-11-30T15:00:00Z"))
        );
    }

    #[test]
    fn summer_time_is_respected() {
        let cron = parse("0 16 * * *").expect("valid");
        let tz = time_zone("Europe/Berlin").expect("tz");
        // In July Berlin is UTC+2.
        assert_eq!(
            next_after(&cron, tz, ts("2026-07-01T00:00:00Z")),
            Some(ts("2026-07-01T14:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_why() {
        assert!(parse("61 * * * *").is_err());
        assert!(
            parse("0 0 * *")
                .expect_err("four fields")
                .contains("five-field")
        );
        assert!(
            parse("0 0 0 * * *").is_err(),
            "six fields (seconds) are not CronJob syntax"
        );
        assert!(time_zone("Mars/Olympus").expect_err("bad").contains("IANA"));
        assert!(parse("@daily").is_ok());
    }
}
