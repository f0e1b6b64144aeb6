//! `autopilot detect eval` end to end on a small NAB-format corpus written
//! here (the real one is a bench run, see BENCHMARKS.md): the full-corpus
//! and leave-one-group-out tables, the baselines, and a seeded search that
//! reproduces itself.

use std::{fmt::Write as _, path::Path, process::Command};

const T0: i64 = 1_400_000_000;
const STEP: i64 = 300;
const ROWS: i64 = 1500;

fn timestamp(t: i64) -> String {
    // NAB's format, computed without a date library: days since the epoch.
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

fn civil(z: i64) -> (i64, i64, i64) {
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

/// A wavy series with a spike at `spike` (if any).
fn series(phase: f64, spike: Option<i64>) -> String {
    let mut out = String::from("timestamp,value\n");
    for i in 0..ROWS {
        let mut v = 100.0 + 5.0 * ((i as f64) * 0.05 + phase).sin();
        if spike == Some(i) {
            v += 80.0;
        }
        let _ = writeln!(out, "{},{v}", timestamp(T0 + i * STEP));
    }
    out
}

/// Groups `gA` and `gB` with one spiked file each, and a quiet group.
fn write_corpus(dir: &Path) {
    let files = [
        ("gA/a.csv", 0.0, Some(900)),
        ("gB/b.csv", 1.0, Some(1200)),
        ("quiet/q.csv", 2.0, None),
    ];
    let mut labels = String::from("{");
    for (i, (name, phase, spike)) in files.iter().enumerate() {
        let path = dir.join("data").join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, series(*phase, *spike)).expect("write");
        let windows = match spike {
            Some(s) => format!(
                "[[\"{}\", \"{}\"]]",
                timestamp(T0 + (s - 20) * STEP),
                timestamp(T0 + (s + 20) * STEP)
            ),
            None => "[]".into(),
        };
        let _ = write!(
            labels,
            "{}\"{name}\": {windows}",
            if i > 0 { ", " } else { "" }
        );
    }
    labels.push('}');
    std::fs::create_dir_all(dir.join("labels")).expect("mkdir");
    std::fs::write(dir.join("labels/combined_windows.json"), labels).expect("write");
}

fn eval(dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["detect", "eval", "--nab"])
        .arg(dir)
        .args(extra)
        .output()
        .expect("run autopilot");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The cells of the table row that starts with `| {first} |` after `heading`.
fn row(text: &str, heading: &str, first: &str) -> Vec<String> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in\n{text}"));
    text[start..]
        .lines()
        .find(|l| l.starts_with(&format!("| {first} |")))
        .unwrap_or_else(|| panic!("no row {first:?} under {heading:?} in\n{text}"))
        .split('|')
        .map(|c| c.trim().trim_matches('*').to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn eval_reports_full_corpus_and_leave_one_group_out_per_profile() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_corpus(dir.path());
    let text = eval(
        dir.path(),
        &[
            "--detector",
            "mad",
            "--detector",
            "null",
            "--detector",
            "random",
            "--trials",
            "3",
        ],
    );
    assert!(text.contains("Held out in turn: gA, gB."), "{text}");
    // The null detector scores 0 in every table and profile.
    let full = "## Full corpus";
    let logo = "## Leave one group out";
    assert_eq!(row(&text, full, "null")[1..4], ["0.0", "0.0", "0.0"]);
    assert_eq!(row(&text, logo, "null")[1..5], ["1", "0.0", "0.0", "0.0"]);
    // A spike five σ out is found in each held-out group, early in its window.
    let mad = row(&text, logo, "mad");
    assert_eq!(mad[1], "3", "{text}");
    for score in &mad[2..5] {
        let s: f64 = score.parse().expect("number");
        assert!(s > 80.0, "{text}");
    }
    // Per-group rows for both held-out groups, never the quiet one.
    let per_group = &text[text.find("## Per held-out group").expect("per group")..];
    assert!(per_group.contains("| mad | gA |") && per_group.contains("| mad | gB |"));
    assert!(!per_group.contains("| quiet |"), "{per_group}");
    // The search is seeded: the same command prints the same report.
    assert_eq!(
        text,
        eval(
            dir.path(),
            &[
                "--detector",
                "mad",
                "--detector",
                "null",
                "--detector",
                "random",
                "--trials",
                "3"
            ]
        )
    );
}

#[test]
fn one_labelled_group_gets_no_held_out_table_of_zeros() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_corpus(dir.path());
    // Only gA keeps its labelled file: nothing is left to choose on when
    // it is held out (the operational corpus is such a corpus).
    std::fs::remove_dir_all(dir.path().join("data/gB")).expect("rm gB");
    let labels = dir.path().join("labels/combined_windows.json");
    let mut windows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&labels).expect("labels")).expect("json");
    windows.as_object_mut().expect("object").remove("gB/b.csv");
    std::fs::write(&labels, windows.to_string()).expect("write");
    let text = eval(dir.path(), &["--detector", "mad"]);
    assert!(
        text.contains("## Leave one group out: not computed"),
        "{text}"
    );
    assert!(
        text.contains("1 group(s) with labelled windows (gA)"),
        "{text}"
    );
    assert!(!text.contains("## Per held-out group"), "{text}");
    // The full-corpus table is still there, and finds the spike.
    let full = row(&text, "## Full corpus", "mad");
    let s: f64 = full[1].parse().expect("number");
    assert!(s > 80.0, "{text}");
}

#[test]
fn eval_refuses_an_unknown_detector_and_a_missing_corpus() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_corpus(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["detect", "eval", "--detector", "prophet", "--nab"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown detector \"prophet\""), "{err}");
    // The list is the detectors with defaults, and eval's baselines.
    assert!(
        err.contains("expected one of ewma, mad,") && err.contains(", rank, random, null"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["detect", "eval", "--nab"])
        .arg(dir.path().join("nothing"))
        .output()
        .expect("run");
    assert!(!out.status.success());
}

/// `detect eval --trials 4 --detector {detector}` on the corpus in `dir`,
/// which may fail.
fn run_detector(dir: &Path, detector: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["detect", "eval", "--trials", "4", "--detector", detector])
        .arg("--nab")
        .arg(dir)
        .output()
        .expect("run autopilot")
}

/// The error of `detect eval --detector {detector}`, which must fail.
fn refused(dir: &Path, detector: &str) -> String {
    let out = run_detector(dir, detector);
    assert!(!out.status.success(), "{detector} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_parameter_set_on_the_command_line_holds_in_every_candidate_and_a_typo_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_corpus(dir.path());
    let out = run_detector(dir.path(), "mad:window=64,limit=4");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Each candidate the search scored has the parameters set; the rest
    // are drawn, so the candidates still differ.
    let candidates: Vec<&str> = err.lines().filter(|l| l.contains(" candidate ")).collect();
    assert!(candidates.len() >= 2, "{err}");
    for c in &candidates {
        assert!(
            c.contains("\"window\":64") && c.contains("\"limit\":4.0"),
            "{c}"
        );
    }
    let warmups: std::collections::HashSet<&str> = candidates
        .iter()
        .filter_map(|c| c.split("\"warmup\":").nth(1))
        .collect();
    assert!(
        warmups.len() >= 2,
        "the other parameters are still drawn: {err}"
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let logo = row(&text, "## Leave one group out", "mad:window=64,limit=4");
    assert_eq!(logo[1], candidates.len().to_string(), "{text}");

    // Refused, naming what was wrong.
    let err = refused(dir.path(), "mad:windw=64");
    assert!(
        err.contains("mad has no parameter \"windw\"") && err.contains("window"),
        "{err}"
    );
    let err = refused(dir.path(), "mad:window=wide");
    assert!(
        err.contains("window=\"wide\"") && err.contains("u32"),
        "{err}"
    );
}

#[test]
fn the_baselines_take_no_parameters_and_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_corpus(dir.path());
    // Listed as detectors, so "unknown detector" would mislead.
    let err = refused(dir.path(), "random:seed=3");
    assert!(
        err.contains("random takes no parameters (got \"seed=3\"); its seed is --seed"),
        "{err}"
    );
    assert!(!err.contains("unknown detector"), "{err}");
    let err = refused(dir.path(), "null:limit=1");
    assert!(
        err.contains("null takes no parameters (got \"limit=1\")"),
        "{err}"
    );
}
