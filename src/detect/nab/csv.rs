//! NAB's data files: `timestamp,value` CSV, the input of `autopilot detect
//! score` and the corpus of `detect eval`. Every row must be usable as it
//! stands: a bad value or a timestamp out of order is an error naming the
//! file, the line and the problem, never a NaN or a reordering done behind
//! the user's back.
//!
//! Pure: callers pass the file name (for errors) and its text; reading the
//! file is theirs. Must not decide what a detector does with a value.

use crate::detect::Error;

/// How a file's timestamps must advance from row to row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Each row strictly after the previous one: what the agent accepts
    /// from Prometheus (a sample not newer than the last is out of order),
    /// so `detect score` scores what the agent would.
    Increasing,
    /// A row may repeat the previous timestamp but never go back: NAB's
    /// corpus as published repeats a timestamp 26 times in 6 files (clock
    /// changes, duplicated exports) and NAB scores every row.
    NonDecreasing,
}

/// Parses a `timestamp,value` CSV. Line 1 may be a header (a first cell
/// without digits, NAB's is `timestamp,value`); blank lines are skipped.
/// Timestamps are NAB's `YYYY-MM-DD HH:MM:SS` (UTC) or unix seconds.
///
/// Refused, naming `file` and the line: a row without exactly two cells, a
/// bad timestamp, one that does not advance as `order` says, and a value
/// that is empty, not a number, or not finite (`nan`, `inf`). NAB's files
/// have no empty cells; a row without data is left out, not left blank.
pub fn parse_series(file: &str, text: &str, order: Order) -> Result<Vec<(i64, f64)>, Error> {
    let mut out = Vec::new();
    // The previous row's timestamp, as written and parsed, and its line.
    let mut previous: Option<(&str, i64, usize)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let fail = |problem: String| Error::ParseSeries {
            file: file.to_string(),
            line: n,
            problem,
        };
        let line = line.trim();
        if line.is_empty() || (n == 1 && is_header(line)) {
            continue;
        }
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        let [ts, value] = cells[..] else {
            return Err(fail(format!(
                "expected 2 cells (timestamp,value), got {}",
                cells.len()
            )));
        };
        let at = match ts.parse::<i64>() {
            Ok(t) => t,
            Err(_) => parse_timestamp(ts).ok_or_else(|| {
                fail(format!(
                    "bad timestamp {ts:?} (expected YYYY-MM-DD HH:MM:SS or unix seconds)"
                ))
            })?,
        };
        if let Some((prev_ts, prev, prev_line)) = previous {
            let problem = match order {
                Order::Increasing if at <= prev => Some("is not after"),
                Order::NonDecreasing if at < prev => Some("is before"),
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(fail(format!(
                    "timestamp {ts} {problem} the previous row's ({prev_ts}, line {prev_line})"
                )));
            }
        }
        previous = Some((ts, at, n));
        out.push((at, parse_value(value).map_err(fail)?));
    }
    Ok(out)
}

/// A header names its columns: no digit in its first cell.
fn is_header(line: &str) -> bool {
    let first = line.split(',').next().unwrap_or("");
    !first.chars().any(|c| c.is_ascii_digit())
}

/// A finite number; the error says what the cell held instead.
fn parse_value(cell: &str) -> Result<f64, String> {
    if cell.is_empty() {
        return Err("empty value (leave out a row without data)".into());
    }
    match cell.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("value {cell:?} is not a finite number")),
        Err(_) => Err(format!("value {cell:?} is not a number")),
    }
}

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` (NAB's format, UTC) to unix
/// seconds; fractions are dropped.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?.trim_end_matches('Z');
    let mut t = time.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next().unwrap_or(Some(0))?);
    if !(1..=12).contains(&m)
        || !(1..=days_in_month(y, m)).contains(&day)
        || !(0..=23).contains(&hh)
        || !(0..=59).contains(&mm)
        || !(0..=60).contains(&ss)
    {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats unix seconds as NAB does (`YYYY-MM-DD HH:MM:SS`).
pub fn format_timestamp(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

// Howard Hinnant's civil calendar algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<(i64, f64)>, Error> {
        parse_series("in.csv", text, Order::Increasing)
    }

    fn err(text: &str, order: Order) -> String {
        parse_series("in.csv", text, order)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn timestamps_round_trip() {
        let t = parse_timestamp("2014-04-10 07:15:00.000000").expect("parses");
        assert_eq!(t, 1_397_114_100);
        assert_eq!(format_timestamp(t), "2014-04-10 07:15:00");
        assert_eq!(parse_timestamp("2014-13-10 07:15:00"), None);
    }

    #[test]
    fn a_day_the_month_does_not_have_is_a_bad_timestamp() {
        assert_eq!(parse_timestamp("2014-02-30 00:00:00"), None);
        assert_eq!(parse_timestamp("2014-04-31 00:00:00"), None);
        assert_eq!(parse_timestamp("2015-02-29 00:00:00"), None);
        assert!(parse_timestamp("2016-02-29 00:00:00").is_some());
        assert!(parse_timestamp("2000-02-29 00:00:00").is_some());
        assert_eq!(parse_timestamp("1900-02-29 00:00:00"), None);
        assert_eq!(parse_timestamp("2014-04-10 -1:00:00"), None);
    }

    #[test]
    fn nab_files_parse_with_header_crlf_and_either_timestamp_form() {
        let text = "timestamp,value\r\n2014-04-10 07:15:00,1.5\r\n2014-04-10 07:20:00,-2e3\r\n\r\n";
        assert_eq!(
            parse(text).expect("parses"),
            [(1_397_114_100, 1.5), (1_397_114_400, -2000.0)]
        );
        assert_eq!(
            parse("100,1\n200, 2 \n").expect("no header"),
            [(100, 1.0), (200, 2.0)]
        );
    }

    #[test]
    fn bad_values_are_refused_with_file_and_line() {
        let head = "timestamp,value\n100,1\n";
        for (row, problem) in [
            ("200,abc", "value \"abc\" is not a number"),
            ("200,nan", "value \"nan\" is not a finite number"),
            ("200,NaN", "value \"NaN\" is not a finite number"),
            ("200,inf", "value \"inf\" is not a finite number"),
            (
                "200,-infinity",
                "value \"-infinity\" is not a finite number",
            ),
            ("200,1e999", "value \"1e999\" is not a finite number"),
            ("200,", "empty value (leave out a row without data)"),
            ("200", "expected 2 cells (timestamp,value), got 1"),
            ("200,1,2", "expected 2 cells (timestamp,value), got 3"),
        ] {
            let e = err(&format!("{head}{row}\n"), Order::Increasing);
            assert_eq!(e, format!("parsing series in.csv, line 3: {problem}"));
        }
    }

    #[test]
    fn bad_timestamps_are_refused_and_only_line_one_may_be_a_header() {
        let e = err("timestamp,value\n100,1\nyesterday,2\n", Order::Increasing);
        assert_eq!(
            e,
            "parsing series in.csv, line 3: bad timestamp \"yesterday\" (expected YYYY-MM-DD HH:MM:SS or unix seconds)"
        );
        // A first row with digits is data, not a header to skip.
        let e = err("2014-02-30 00:00:00,1\n", Order::Increasing);
        assert!(
            e.starts_with("parsing series in.csv, line 1: bad timestamp"),
            "{e}"
        );
    }

    #[test]
    fn timestamps_must_advance_as_the_order_says() {
        let repeated = "timestamp,value\n\n2014-04-10 07:15:00,1\n2014-04-10 07:15:00,2\n";
        assert_eq!(
            err(repeated, Order::Increasing),
            "parsing series in.csv, line 4: timestamp 2014-04-10 07:15:00 is not after the previous row's (2014-04-10 07:15:00, line 3)"
        );
        assert_eq!(
            parse_series("in.csv", repeated, Order::NonDecreasing).expect("NAB repeats"),
            [(1_397_114_100, 1.0), (1_397_114_100, 2.0)]
        );
        let back = "100,1\n200,2\n150,3\n";
        assert_eq!(
            err(back, Order::Increasing),
            "parsing series in.csv, line 3: timestamp 150 is not after the previous row's (200, line 2)"
        );
        assert_eq!(
            err(back, Order::NonDecreasing),
            "parsing series in.csv, line 3: timestamp 150 is before the previous row's (200, line 2)"
        );
    }
}
