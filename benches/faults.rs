//! The long run of the fault-injection suite (`tests/faults.rs`): 200 kill -9
//! runs on a SQLite journal and 100 on PostgreSQL, each held against the
//! API server's audit log, printing the figures RELIABILITY.md records
//! (runs, kills, intents, applied, resolved after a kill, lost,
//! duplicated). The CI variant (20 runs) is the test itself.
//!
//!   cargo bench --features testenv --bench faults
//!   FAULT_RUNS=50 cargo bench --features testenv --bench faults     # shorter
//!
//! It drives the same test binary CI runs (a debug build, as the figures
//! in RELIABILITY.md were measured), with the long settings: the suite is
//! one piece of code, whatever its length.

use std::process::Command;

fn main() {
    // `cargo test --benches` runs every bench once as a smoke test; only
    // `cargo bench` (which passes --bench) runs the long suite.
    if !std::env::args().any(|a| a == "--bench") {
        println!("faults: skipped (run with `cargo bench --features testenv --bench faults`)");
        return;
    }
    let runs = std::env::var("FAULT_RUNS").unwrap_or_else(|_| "200".into());
    let pg_runs = std::env::var("FAULT_RUNS")
        .ok()
        .and_then(|r| r.parse::<usize>().ok())
        .map_or(100, |r| r.div_ceil(2));
    for (journal, runs) in [("sqlite", runs), ("postgres", pg_runs.to_string())] {
        println!("faults: kill -9 × {runs} on a {journal} journal");
        let started = std::time::Instant::now();
        let status = Command::new(env!("CARGO"))
            .args(["test", "--features", "testenv", "--test", "faults"])
            .args(["--", "kill_9", "--nocapture"])
            .env("AUTOPILOT_FAULT_RUNS", &runs)
            .env("AUTOPILOT_FAULT_JOURNAL", journal)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run the fault suite");
        println!(
            "faults: {journal}: {} in {:.0} s",
            if status.success() { "passed" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
        assert!(status.success(), "the fault suite failed on {journal}");
    }
}
