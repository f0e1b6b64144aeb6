//! The report of `autopilot detect ops`: what the replayed detection found,
//! judged against the schedule of faults (detection times, the quiet
//! period's false findings), and the report printed as a table.
//!
//! Pure: episodes and the schedule in, an [`OpsReport`] and its text out.
//! Must not play the estate, query Prometheus or print (that is `ops`).

use std::{collections::BTreeMap, fmt::Write as _};

use super::{Detection, FIRST_FAULT_HOUR, OpsArgs, OpsReport, Scheduled};
use crate::{agent::replay::Episode, testenv::sim::Fault};

/// Detection times and the quiet period's false findings.
pub(super) fn judge(
    episodes: &[Episode],
    schedule: &[(Fault, Scheduled)],
    quiet_from: i64,
    quiet_to: i64,
    quiet_series: usize,
    args: &OpsArgs,
) -> OpsReport {
    let mut detections = Vec::new();
    for (_, s) in schedule {
        let during: Vec<&Episode> = {
            let mut d: Vec<&Episode> = episodes
                .iter()
                // Only episodes that open once the fault has started: one
                // already open (a false finding of the quiet period that
                // lasts into the fault) did not find it.
                .filter(|e| e.component == s.target && (s.start..=s.end).contains(&e.start))
                .collect();
            // Episodes that start in one cycle are named in a fixed order
            // (by detector, then signal), not in the order they were found.
            d.sort_by(|a, b| {
                (a.start, &a.detector, &a.signal).cmp(&(b.start, &b.detector, &b.signal))
            });
            d
        };
        let first = |on_signal: bool| {
            during
                .iter()
                .find(|e| !on_signal || e.signal.split('+').any(|x| x == s.signal))
                .map(|e| {
                    (
                        (e.start - s.start).max(0),
                        format!("{} by {}", e.signal, e.detector),
                    )
                })
        };
        let (on_signal, on_signal_by) = first(true).unzip();
        let (on_resource, on_resource_by) = first(false).unzip();
        detections.push(Detection {
            fault: s.clone(),
            on_signal,
            on_signal_by,
            on_resource,
            on_resource_by,
        });
    }
    let mut quiet: Vec<&Episode> = episodes
        .iter()
        .filter(|e| (quiet_from..quiet_to).contains(&e.start))
        .collect();
    quiet.sort_by(|a, b| {
        (a.start, &a.component, &a.signal).cmp(&(b.start, &b.component, &b.signal))
    });
    let mut quiet_by_signal = BTreeMap::new();
    for e in &quiet {
        *quiet_by_signal
            .entry(format!(
                "{} {} by {}",
                e.component.split('/').next().unwrap_or(""),
                e.signal,
                e.detector
            ))
            .or_insert(0) += 1;
    }
    let days = (quiet_to - quiet_from) as f64 / 86_400.0;
    OpsReport {
        quiet_from,
        quiet_to,
        cycle_seconds: args.cycle_seconds,
        scrape_seconds: args.scrape_seconds,
        detections,
        quiet_series,
        quiet_episodes: quiet.len(),
        false_per_series_day: quiet.len() as f64 / (quiet_series.max(1) as f64 * days.max(1e-9)),
        quiet_by_signal,
        quiet_findings: quiet.into_iter().cloned().collect(),
        notes: vec![
            format!(
                "load: a daily swing of {:.0}% peak to trough and {:.0}% noise (seed {}); faults last {} min, nobody acts",
                args.daily_swing * 100.0,
                args.noise * 100.0,
                args.seed,
                args.fault_minutes
            ),
            "false findings: finding episodes (consecutive cycles with a finding on one component, signal and detector) that start in the quiet period".into(),
        ],
    }
}

pub(super) fn table(r: &OpsReport) -> String {
    let secs = |s: Option<i64>| s.map_or("missed".to_string(), |s| format!("+{s}s"));
    let mut out = format!(
        "{:<24} {:<40} {:<24} {:<10} {:<36} {:<10} {}\n",
        "SCENARIO", "TARGET", "SIGNAL", "DETECTED", "BY", "ANY", "BY"
    );
    for d in &r.detections {
        let _ = writeln!(
            out,
            "{:<24} {:<40} {:<24} {:<10} {:<36} {:<10} {}",
            d.fault.scenario,
            d.fault.target,
            d.fault.signal,
            secs(d.on_signal),
            d.on_signal_by.as_deref().unwrap_or("-"),
            secs(d.on_resource),
            d.on_resource_by.as_deref().unwrap_or("-"),
        );
    }
    let _ = writeln!(
        out,
        "\nquiet period: {:.0} h, {} series, {} finding episodes = {:.3} false findings per series-day",
        (r.quiet_to - r.quiet_from) as f64 / 3600.0,
        r.quiet_series,
        r.quiet_episodes,
        r.false_per_series_day
    );
    for (what, n) in &r.quiet_by_signal {
        let _ = writeln!(out, "  {n:>4}  {what}");
    }
    if !r.quiet_findings.is_empty() {
        // The simulated clock: the quiet period ends at the first fault's hour.
        let midnight = r.quiet_to - FIRST_FAULT_HOUR * 3600;
        let hm = |s: i64| format!("{:02}:{:02}", s / 3600, s / 60 % 60);
        let _ = writeln!(
            out,
            "each (simulated time of day, time into the quiet period, component, signal by detector):"
        );
        for e in &r.quiet_findings {
            let _ = writeln!(
                out,
                "  {} +{}  {} {} by {}: {} cycle{}, max score {:.2}; first: {}",
                hm((e.start - midnight).rem_euclid(86_400)),
                hm(e.start - r.quiet_from),
                e.component,
                e.signal,
                e.detector,
                e.cycles,
                if e.cycles == 1 { "" } else { "s" },
                e.max_score,
                e.explanation
            );
        }
    }
    let _ = writeln!(
        out,
        "(agent cycle {}s, scrape {}s; {})",
        r.cycle_seconds,
        r.scrape_seconds,
        r.notes.join("; ")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_is_found_by_the_first_episode_that_opens_during_it_in_a_fixed_order() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            ops: OpsArgs,
        }
        let args = <Cli as clap::Parser>::parse_from(["ops"]).ops;
        let target = "Cluster/p/db";
        let episode = |signal: &str, detector: &str, start: i64| Episode {
            component: target.into(),
            signal: signal.into(),
            detector: detector.into(),
            start,
            end: start + 600,
            cycles: 20,
            max_score: 0.99,
            explanation: String::new(),
        };
        let fault = Scheduled {
            scenario: "connection-exhaustion".into(),
            target: target.into(),
            signal: "connections_ratio".into(),
            start: 1000,
            end: 4600,
        };
        let episodes = [
            // Open since the quiet period: not a detection of the fault.
            episode("replication_lag+connections_ratio", "gmm", 900),
            // Two in the fault's second cycle, found in either order.
            episode("connections_ratio", "gmm", 1030),
            episode("connections_ratio", "forecast", 1030),
            episode("replication_lag", "ewma", 1060),
        ];
        for order in [[0, 1, 2, 3], [3, 2, 1, 0]] {
            let shuffled: Vec<Episode> = order.iter().map(|&i| episodes[i].clone()).collect();
            let report = judge(
                &shuffled,
                &[(Fault::ConnectionExhaustion, fault.clone())],
                0,
                900,
                1,
                &args,
            );
            let d = &report.detections[0];
            assert_eq!(d.on_signal, Some(30));
            assert_eq!(
                d.on_signal_by.as_deref(),
                Some("connections_ratio by forecast")
            );
            assert_eq!(d.on_resource, Some(30));
            assert_eq!(report.quiet_episodes, 0, "the quiet period ends at 900");
        }
        // A quiet period that takes it in lists it, with when and why.
        let mut open = episodes[0].clone();
        open.explanation = "vector far from the mixture".into();
        let report = judge(
            &[open],
            &[(Fault::ConnectionExhaustion, fault.clone())],
            0,
            1000,
            1,
            &args,
        );
        assert_eq!(report.quiet_episodes, 1);
        assert_eq!(report.quiet_findings[0].start, 900);
        let text = table(&report);
        // 900 s into the quiet period, which ends at 09:00 simulated.
        assert!(
            text.contains("08:58 +00:15  Cluster/p/db replication_lag+connections_ratio by gmm: 20 cycles, max score 0.99; first: vector far from the mixture"),
            "{text}"
        );
    }
}
