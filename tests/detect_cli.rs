//! `autopilot detect score` end to end: the binary reads a fixture series and
//! writes NAB's results format, with a built-in detector or a model spec; bad
//! input is an error naming the problem.

use std::process::Command;

fn autopilot(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run autopilot")
}

/// (row index, score) of the highest score.
fn peak(stdout: &str) -> (usize, f64) {
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
    lines
        .enumerate()
        .map(|(i, l)| {
            let score: f64 = l
                .rsplit(',')
                .next()
                .expect("score")
                .parse()
                .expect("number");
            assert!((0.0..=1.0).contains(&score), "{l}");
            (i, score)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("rows")
}

#[test]
fn score_with_a_builtin_detector_peaks_on_the_spike() {
    let out = autopilot(&[
        "detect",
        "score",
        "--input",
        "tests/fixtures/series/steady_spike.csv",
        "--detector",
        "ewma",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(text.lines().count(), 1001);
    let (row, score) = peak(&text);
    assert_eq!(row, 700);
    assert!(score > 0.9);
    // Timestamps come out in NAB's format.
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("2023-11-14 00:00:00,")),
        "{}",
        &text[..80]
    );
}

#[test]
fn score_with_a_model_spec_uses_the_signal_detector() {
    let out = autopilot(&[
        "detect",
        "score",
        "--input",
        "tests/fixtures/series/level_shift.csv",
        "--model",
        "models/strimzi-kafkanodepool.yaml",
        "--signal",
        "partitions",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (row, score) = peak(&String::from_utf8(out.stdout).expect("utf-8"));
    assert!(
        (600..610).contains(&row) && score >= 0.5,
        "CUSUM peak at row {row} ({score})"
    );
}

#[test]
fn unknown_detector_and_bad_spec_are_errors_that_say_why() {
    let out = autopilot(&[
        "detect",
        "score",
        "--input",
        "tests/fixtures/series/steady_spike.csv",
        "--detector",
        "prophet",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown detector \"prophet\""));

    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("bad.yaml");
    std::fs::write(
        &spec,
        "kind: X\ngroup: g\nversion: v1\nplural: xs\nlabels: {name: n, namespace: ns}\nsignals:\n  - name: s\n    query: up\n    detector: {type: ewma, alpha: 2}\n",
    )
    .expect("write spec");
    let out = autopilot(&[
        "detect",
        "score",
        "--input",
        "tests/fixtures/series/steady_spike.csv",
        "--model",
        spec.to_str().expect("path"),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml")
            && err.contains("signals[0].detector.alpha")
            && err.contains("must be in (0, 1]"),
        "{err}"
    );
}

/// Runs `detect score --detector ewma` on `rows` written to a file after a
/// header and two good rows (lines 1–3), so the first row given is line 4.
/// Returns the exit code, the number of rows scored and stderr.
fn score_rows(rows: &str) -> (Option<i32>, usize, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("series.csv");
    std::fs::write(
        &input,
        format!("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,2\n{rows}"),
    )
    .expect("write series");
    let out = autopilot(&[
        "detect",
        "score",
        "--input",
        input.to_str().expect("path"),
        "--detector",
        "ewma",
    ]);
    let scored = String::from_utf8_lossy(&out.stdout).lines().count();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), scored.saturating_sub(1), stderr)
}

#[test]
fn bad_rows_fail_naming_the_file_the_line_and_the_problem() {
    for (rows, problem) in [
        (
            "2024-01-01 00:10:00,3\n2024-01-01 00:15:00,n/a\n",
            "line 5: value \"n/a\" is not a number",
        ),
        (
            "2024-01-01 00:10:00,nan\n",
            "line 4: value \"nan\" is not a finite number",
        ),
        (
            "2024-01-01 00:10:00,-inf\n",
            "line 4: value \"-inf\" is not a finite number",
        ),
        ("2024-01-01 00:10:00,\n", "line 4: empty value"),
        (
            "2024-01-01 00:05:00,3\n",
            "line 4: timestamp 2024-01-01 00:05:00 is not after the previous row's (2024-01-01 00:05:00, line 3)",
        ),
        (
            "2024-01-01 00:10:00,3\n2024-01-01 00:00:00,4\n",
            "line 5: timestamp 2024-01-01 00:00:00 is not after the previous row's (2024-01-01 00:10:00, line 4)",
        ),
        (
            "2024-02-30 00:10:00,3\n",
            "line 4: bad timestamp \"2024-02-30 00:10:00\"",
        ),
    ] {
        let (code, scored, stderr) = score_rows(rows);
        assert_eq!((code, scored), (Some(1), 0), "{rows:?}: {stderr}");
        assert!(
            stderr.contains("parsing series ")
                && stderr.contains("series.csv, ")
                && stderr.contains(problem),
            "{rows:?}: want {problem:?} in {stderr}"
        );
    }
    // The same file without the bad rows scores.
    let (code, scored, stderr) = score_rows("2024-01-01 00:10:00,3\n");
    assert_eq!((code, scored), (Some(0), 3), "{stderr}");
}
