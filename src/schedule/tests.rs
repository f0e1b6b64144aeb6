use chrono::{Datelike, Weekday};

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

fn utc() -> chrono_tz::Tz {
    time_zone("UTC").expect("tz")
}

/// The weekdays on which `expr` fires during the week of Monday
/// 2026-11-30 (2026-12-05 is a Saturday).
fn weekdays(expr: &str) -> Vec<Weekday> {
    let cron = parse(expr).expect("valid");
    let mut at = ts("2026-11-29T23:59:59Z");
    let mut days = Vec::new();
    while let Some(next) = next_after(&cron, utc(), at) {
        if next >= ts("2026-12-07T00:00:00Z") {
            break;
        }
        let day = chrono::DateTime::from_timestamp(next.as_second(), 0).expect("in range");
        days.push(day.weekday());
        at = next;
    }
    days
}

#[test]
fn saturday_is_six() {
    assert_eq!(weekdays("0 2 * * 6"), vec![Weekday::Sat]);
    assert_eq!(weekdays("0 2 * * SAT"), vec![Weekday::Sat]);
    assert_eq!(
        next_after(
            &parse("0 2 * * 6").expect("valid"),
            utc(),
            ts("2026-12-01T00:00:00Z")
        ),
        Some(ts("2026-12-05T02:00:00Z"))
    );
}

#[test]
fn one_to_five_is_monday_to_friday() {
    use Weekday::*;
    assert_eq!(weekdays("0 12 * * 1-5"), vec![Mon, Tue, Wed, Thu, Fri]);
    assert_eq!(weekdays("0 12 * * MON-FRI"), vec![Mon, Tue, Wed, Thu, Fri]);
}

#[test]
fn zero_and_seven_are_both_sunday() {
    for expr in ["0 12 * * 0", "0 12 * * 7", "0 12 * * SUN"] {
        assert_eq!(weekdays(expr), vec![Weekday::Sun], "{expr}");
    }
    use Weekday::*;
    assert_eq!(weekdays("0 12 * * 5-7"), vec![Fri, Sat, Sun]);
}

#[test]
fn both_day_fields_restricted_means_either() {
    // Vixie cron and CronJobs: "the 1st of the month, and every Monday".
    let cron = parse("0 0 1 * 1").expect("valid");
    // 2027-01-01 is a Friday; 2027-01-04 a Monday.
    assert_eq!(
        next_after(&cron, utc(), ts("2026-12-29T00:00:00Z")),
        Some(ts("2027-01-01T00:00:00Z"))
    );
    assert_eq!(
        next_after(&cron, utc(), ts("2027-01-01T00:00:00Z")),
        Some(ts("2027-01-04T00:00:00Z"))
    );
    // One field `*`: only the other counts.
    assert_eq!(weekdays("0 0 * * 1"), vec![Weekday::Mon]);
    assert_eq!(
        next_after(
            &parse("0 0 1 * *").expect("valid"),
            utc(),
            ts("2026-12-02T00:00:00Z")
        ),
        Some(ts("2027-01-01T00:00:00Z"))
    );
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
fn seconds_only_where_allowed() {
    assert!(
        parse("0 0 0 * * *")
            .expect_err("six fields")
            .contains("five fields"),
        "six fields (seconds) are not CronJob syntax"
    );
    let every_second = parse_with_seconds("* * * * * *").expect("six fields");
    assert!(occurs_between(&every_second, 100, 101));
    // Six fields: the seconds come first, the weekday stays last.
    let sat = parse_with_seconds("30 0 2 * * 6").expect("six fields");
    let sat_0200 = ts("2026-12-05T02:00:00Z").as_second();
    assert!(occurs_between(&sat, sat_0200, sat_0200 + 30));
    assert!(!occurs_between(&sat, sat_0200, sat_0200 + 29));
    for seven in ["0 0 0 * * * 2027", "0 0 * * * * * *"] {
        assert!(parse_with_seconds(seven).is_err(), "{seven}");
        assert!(parse(seven).is_err(), "{seven}");
    }
}

#[test]
fn occurs_between_is_half_open() {
    // Saturday 2026-12-05 02:00 UTC.
    let cron = parse("0 2 * * 6").expect("valid");
    let at = ts("2026-12-05T02:00:00Z").as_second();
    assert!(occurs_between(&cron, at - 1, at));
    assert!(!occurs_between(&cron, at, at + 3600), "after is excluded");
    assert!(!occurs_between(&cron, at - 7 * 86_400 + 1, at - 1));
}

#[test]
fn extensions_other_readers_do_not_share_are_refused() {
    for expr in [
        "0 0 L * *",
        "0 0 15W * *",
        "0 0 * * 5L",
        "0 0 * * 5#2",
        "0 0 1 * +1",
    ] {
        let err = parse(expr).expect_err(expr);
        assert!(err.contains("not standard cron"), "{expr}: {err}");
    }
    assert!(parse("0 0 ? * WED").is_ok(), "names and `?` are standard");
}

#[test]
fn bad_expressions_and_zones_say_why() {
    assert!(parse("61 * * * *").is_err());
    assert!(parse("30 2 * * 8").is_err());
    let err = parse("0 0 * *").expect_err("four fields");
    assert!(
        err.contains("invalid cron schedule") && err.contains("five fields"),
        "{err}"
    );
    assert!(time_zone("Mars/Olympus").expect_err("bad").contains("IANA"));
    assert!(parse("@daily").is_ok());
    assert!(parse("@midnight").is_ok(), "CronJobs accept it");
    assert!(parse_with_seconds("@hourly").is_ok());
}
