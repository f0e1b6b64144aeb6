//! Runbook evaluations per second on one core, for each default runbook in
//! rules/ on the realistic contexts of its golden cases (findings, samples,
//! the target resource), including turning the context into script values
//! and the returned intents back into Rust. Run with
//! `cargo bench --bench runbooks`; figures go to BENCHMARKS.md.
//!
//! A plain `harness = false` bench: single-threaded, so evaluations/second
//! is per core; each runbook runs for a fixed wall time after a warm-up and
//! the median of five rounds is reported.

use std::{
    hint::black_box,
    path::PathBuf,
    time::{Duration, Instant},
};

use autopilot::decide::{Limits, RunbookSet, cases::parse_cases};

const ROUND: Duration = Duration::from_millis(400);
const ROUNDS: usize = 5;

fn main() {
    let rules = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rules)
        .expect("rules/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    files.sort();
    let mut set = RunbookSet::new(Limits::default());
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            (
                p.file_stem().expect("stem").to_string_lossy().into_owned(),
                std::fs::read_to_string(p).expect("read"),
            )
        })
        .collect();
    let errors = set.load(&sources);
    assert!(errors.is_empty(), "{errors:?}");
    // `cargo test --all-targets` runs this binary without `--bench`: a smoke
    // run (each runbook once) instead of the measurement.
    let measure = std::env::args().any(|a| a == "--bench");

    println!("| runbook | contexts | evaluations/s/core (median of {ROUNDS}) | µs/evaluation |");
    println!("|---|---|---|---|");
    let mut total_evals = 0u64;
    let mut total_time = Duration::ZERO;
    for ((name, _), path) in sources.iter().zip(&files) {
        let text = std::fs::read_to_string(path.with_extension("cases.yaml")).expect("cases");
        let cases = parse_cases(name, &text).expect("parse");
        // Contexts the runbook succeeds on (error cases stop early and would flatter it).
        let contexts: Vec<_> = cases
            .into_iter()
            .map(|c| c.context)
            .filter(|ctx| set.evaluate(name, ctx).is_ok())
            .collect();
        assert!(!contexts.is_empty(), "{name}: no context it evaluates on");
        if !measure {
            continue;
        }
        for _ in 0..200 {
            for ctx in &contexts {
                black_box(set.evaluate(name, ctx).ok());
            }
        }
        let mut rates = Vec::new();
        for _ in 0..ROUNDS {
            let start = Instant::now();
            let mut n = 0u64;
            while start.elapsed() < ROUND {
                for ctx in &contexts {
                    black_box(set.evaluate(name, black_box(ctx)).ok());
                    n += 1;
                }
            }
            let elapsed = start.elapsed();
            total_evals += n;
            total_time += elapsed;
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let median = rates[ROUNDS / 2];
        println!(
            "| {name} | {} | {median:.0} | {:.1} |",
            contexts.len(),
            1e6 / median
        );
    }
    if !measure {
        println!(
            "smoke run: every default runbook evaluated (run `cargo bench --bench runbooks` to measure)"
        );
        return;
    }
    println!(
        "| **all default runbooks** | | **{:.0}** | {:.1} |",
        total_evals as f64 / total_time.as_secs_f64(),
        total_time.as_secs_f64() * 1e6 / total_evals as f64
    );
}
