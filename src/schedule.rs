//! Cron expressions, one reading for every schedule the agent evaluates:
//! ClearingAdapter cut-offs and BatchProcessor schedules (CRD fields),
//! runbook cron triggers and the policy's maintenance windows.
//!
//! The reading is the standard one of Vixie cron and Kubernetes CronJobs:
//! minute hour day-of-month month day-of-week; days of the week 0–6 from
//! Sunday, 7 also Sunday, `MON`–style names; when both day fields are
//! restricted a day matches if EITHER matches (`0 0 1 * 1` is "the 1st and
//! every Monday"). `croner`'s extensions that other readers do not share
//! (`L`, `W`, `#`, the `+` AND-prefix) are refused, so an expression means
//! the same here as in a CronJob. Runbooks and windows may put a seconds
//! field first (six fields); CRD fields may not, because a CronJob may not.
//!
//! Pure: `now` is passed in; no clock, no I/O.

use chrono::TimeZone;
use croner::parser::{CronParser, Seconds, Year};
use k8s_openapi::jiff::Timestamp;

pub use croner::Cron;

/// Parses a five-field expression (or an `@daily`-style macro), as a
/// Kubernetes CronJob accepts it.
pub fn parse(expr: &str) -> Result<Cron, String> {
    parse_with(expr, Seconds::Disallowed)
}

/// Parses a five-field expression, or a six-field one whose first field is
/// the second (runbook triggers and maintenance windows).
pub fn parse_with_seconds(expr: &str) -> Result<Cron, String> {
    parse_with(expr, Seconds::Optional)
}

fn parse_with(expr: &str, seconds: Seconds) -> Result<Cron, String> {
    let invalid = |reason: &str| format!("invalid cron schedule {expr:?}: {reason}");
    let trimmed = expr.trim();
    // CronJobs accept `@midnight`; croner does not know the name.
    let expr_for_croner = if trimmed.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        trimmed
    };
    if !expr_for_croner.starts_with('@') {
        let fields: Vec<&str> = expr_for_croner.split_whitespace().collect();
        let with_seconds = match (fields.len(), seconds) {
            (5, _) => false,
            (6, Seconds::Optional) => true,
            (_, Seconds::Disallowed) => {
                return Err(invalid(
                    "expected five fields: minute hour day-of-month month day-of-week",
                ));
            }
            _ => {
                return Err(invalid(
                    "expected five fields (minute hour day-of-month month day-of-week), or six with seconds first",
                ));
            }
        };
        let offset = usize::from(with_seconds);
        refuse_extensions(fields[offset + 2], fields[offset + 4]).map_err(|r| invalid(&r))?;
    }
    CronParser::builder()
        .seconds(seconds)
        .year(Year::Disallowed)
        // Vixie cron: both day fields restricted → either matches.
        .dom_and_dow(false)
        .alternative_weekdays(false)
        .build()
        .parse(expr_for_croner)
        .map_err(|e| invalid(&e.to_string()))
}

/// Refuses croner's day-field extensions, which a CronJob would reject or
/// read differently. Day-of-month has no names, so any letter is one;
/// weekday names (`SUN`…`SAT`) contain no `L`.
fn refuse_extensions(day_of_month: &str, day_of_week: &str) -> Result<(), String> {
    if let Some(c) = day_of_month.chars().find(|c| c.is_ascii_alphabetic()) {
        return Err(format!(
            "{c:?} in day-of-month {day_of_month:?} is not standard cron"
        ));
    }
    if let Some(c) = day_of_week
        .chars()
        .find(|c| matches!(c, '#' | '+' | 'L' | 'l'))
    {
        return Err(format!(
            "{c:?} in day-of-week {day_of_week:?} is not standard cron"
        ));
    }
    Ok(())
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

/// Whether `cron` (read in UTC) has an occurrence in `(after, now]`, both
/// unix seconds.
pub fn occurs_between(cron: &Cron, after: i64, now: i64) -> bool {
    let Some(after) = chrono::DateTime::from_timestamp(after, 0) else {
        return false;
    };
    cron.find_next_occurrence(&after, false)
        .is_ok_and(|t| t.timestamp() <= now)
}

#[cfg(test)]
mod tests;
