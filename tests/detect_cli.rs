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
