//! How a replay is shown: the progress line on stderr, the report as
//! tables, JSON or CSV, and the comparison of two replays action by action.
//!
//! Presentation only: it reads reports and must not replay anything itself.

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::Output;
use crate::agent::replay::{Progress, ReplayedAction, Report};

pub fn time(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// Progress on stderr: a bar redrawn in place on a terminal, a plain line
/// every tenth of the range otherwise.
pub struct ProgressLine {
    label: String,
    terminal: bool,
    drawn: Option<Instant>,
    tenth: i64,
}

impl ProgressLine {
    pub fn new(label: &str) -> Self {
        ProgressLine {
            label: label.to_string(),
            terminal: std::io::stderr().is_terminal(),
            drawn: None,
            tenth: -1,
        }
    }

    pub fn show(&mut self, p: Progress) {
        let span = (p.to - p.from).max(1) as f64;
        let done = ((p.now - p.from) as f64 / span).clamp(0.0, 1.0);
        let secs = p.elapsed.as_secs_f64().max(1e-9);
        let rate = p.cycles as f64 / secs;
        let eta = if done > 0.0 {
            secs * (1.0 - done) / done
        } else {
            0.0
        };
        let text = format!(
            "{:>3.0}% {} → {} | {:.0} cycles/s | {:.1} simulated h per s | ETA {:.0}s",
            done * 100.0,
            time(p.from),
            time(p.now),
            rate,
            (p.now - p.from) as f64 / 3600.0 / secs,
            eta
        );
        let mut err = std::io::stderr().lock();
        if self.terminal {
            if self
                .drawn
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
            {
                return;
            }
            self.drawn = Some(Instant::now());
            let filled = (done * 30.0) as usize;
            let _ = write!(
                err,
                "\r{} [{}{}] {text}\x1b[K",
                self.label,
                "#".repeat(filled),
                ".".repeat(30 - filled)
            );
        } else {
            let tenth = (done * 10.0) as i64;
            if tenth > self.tenth {
                self.tenth = tenth;
                let _ = writeln!(err, "replay {}: {text}", self.label);
            }
        }
    }

    pub fn finish(&mut self, r: &Report) {
        let mut err = std::io::stderr().lock();
        if self.terminal && self.drawn.is_some() {
            let _ = writeln!(err);
        }
        let _ = writeln!(
            err,
            "replay {}: {} cycles over {:.1} simulated hours in {:.2}s ({:.0} simulated hours per second){}",
            self.label,
            r.cycles,
            (r.covered_to - r.from) as f64 / 3600.0,
            r.wall_seconds,
            (r.covered_to - r.from) as f64 / 3600.0 / r.wall_seconds.max(1e-9),
            if r.complete {
                ""
            } else {
                "; interrupted: partial report"
            }
        );
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const ACTION_COLUMNS: &str = "at,runbook,action,target,mode,trigger,verdict,outcome,detail";

fn action_row(a: &ReplayedAction) -> String {
    [
        time(a.at),
        a.runbook.clone(),
        a.action.clone(),
        a.target.clone(),
        a.mode.clone(),
        a.trigger.clone(),
        a.verdict.clone(),
        a.outcome.clone(),
        a.detail.clone(),
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

/// The report: JSON as is, CSV one row per action, or tables.
pub fn print_report(out: &mut impl Write, r: &Report, format: Output) -> anyhow::Result<()> {
    match format {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(r)?)?,
        Output::Csv => {
            writeln!(out, "{ACTION_COLUMNS}")?;
            for a in &r.actions {
                writeln!(out, "{}", action_row(a))?;
            }
        }
        Output::Table => {
            writeln!(
                out,
                "Replay {} → {} every {}s, mode {}: {} cycles{}",
                time(r.from),
                time(r.to),
                r.step,
                r.mode,
                r.cycles,
                if r.complete {
                    String::new()
                } else {
                    format!(" (interrupted at {}: partial)", time(r.covered_to))
                }
            )?;
            for n in &r.notes {
                writeln!(out, "  note: {n}")?;
            }
            writeln!(out, "\nFinding episodes ({})", r.episodes.len())?;
            for e in &r.episodes {
                writeln!(
                    out,
                    "  {} → {}  {:>4} cycles  {} {} ({}, max score {:.2}): {}",
                    time(e.start),
                    time(e.end),
                    e.cycles,
                    e.component,
                    e.signal,
                    e.detector,
                    e.max_score,
                    e.explanation
                )?;
            }
            writeln!(out, "\nActions ({})", r.actions.len())?;
            for a in &r.actions {
                writeln!(
                    out,
                    "  {}  {} {} {} [{}] → {} ({}){}",
                    time(a.at),
                    a.runbook,
                    a.action,
                    a.target,
                    a.mode,
                    a.outcome,
                    a.verdict,
                    if a.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", a.detail)
                    }
                )?;
            }
            writeln!(out, "\nRunbooks")?;
            writeln!(
                out,
                "  {:<28} {:>6} {:>6} {:>7} {:>6}  refused by",
                "runbook", "fired", "acted", "refused", "failed"
            )?;
            for (name, c) in &r.runbooks {
                let refused: usize = c.refused.values().sum();
                let by = c
                    .refused
                    .iter()
                    .map(|(g, n)| format!("{g} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                writeln!(
                    out,
                    "  {:<28} {:>6} {:>6} {:>7} {:>6}  {by}",
                    name, c.fired, c.acted, refused, c.failed
                )?;
            }
            writeln!(out, "\nVerifications: not judged.")?;
        }
    }
    Ok(())
}

/// One difference between two replays.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Change {
    /// `added` (only with the new rules), `removed` (only with the old) or
    /// `changed` (both, with another verdict, outcome or patch).
    pub change: &'static str,
    pub at: i64,
    pub runbook: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The actions of two replays of one range, matched by time, runbook,
/// action and target.
pub fn compare(before: &[ReplayedAction], after: &[ReplayedAction]) -> Vec<Change> {
    type Key = (i64, String, String, String);
    let key = |a: &ReplayedAction| -> Key {
        (a.at, a.runbook.clone(), a.action.clone(), a.target.clone())
    };
    let said = |a: &ReplayedAction| format!("{} ({})", a.outcome, a.verdict);
    let old: BTreeMap<Key, &ReplayedAction> = before.iter().map(|a| (key(a), a)).collect();
    let new: BTreeMap<Key, &ReplayedAction> = after.iter().map(|a| (key(a), a)).collect();
    let mut keys: Vec<&Key> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let (o, n) = (old.get(k), new.get(k));
            let change = match (o, n) {
                (Some(_), None) => "removed",
                (None, Some(_)) => "added",
                (Some(o), Some(n))
                    if o.verdict != n.verdict || o.outcome != n.outcome || o.patch != n.patch =>
                {
                    "changed"
                }
                _ => return None,
            };
            Some(Change {
                change,
                at: k.0,
                runbook: k.1.clone(),
                action: k.2.clone(),
                target: k.3.clone(),
                before: o.map(|a| said(a)),
                after: n.map(|a| said(a)),
            })
        })
        .collect()
}

pub fn print_compare(
    out: &mut impl Write,
    before: &Report,
    after: &Report,
    diff: &[Change],
    format: Output,
) -> anyhow::Result<()> {
    match format {
        Output::Json => {
            #[derive(Serialize)]
            struct Compared<'a> {
                changes: &'a [Change],
                before: &'a Report,
                after: &'a Report,
            }
            let c = Compared {
                changes: diff,
                before,
                after,
            };
            writeln!(out, "{}", serde_json::to_string_pretty(&c)?)?
        }
        Output::Csv => {
            writeln!(out, "change,at,runbook,action,target,before,after")?;
            for c in diff {
                let row = [
                    c.change.to_string(),
                    time(c.at),
                    c.runbook.clone(),
                    c.action.clone(),
                    c.target.clone(),
                    c.before.clone().unwrap_or_default(),
                    c.after.clone().unwrap_or_default(),
                ];
                writeln!(
                    out,
                    "{}",
                    row.iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(",")
                )?;
            }
        }
        Output::Table => {
            writeln!(
                out,
                "Compare {} → {} every {}s: {} actions before, {} after, {} differences",
                time(before.from),
                time(before.to),
                before.step,
                before.actions.len(),
                after.actions.len(),
                diff.len()
            )?;
            for c in diff {
                writeln!(
                    out,
                    "  {:<8} {}  {} {} {}: {} → {}",
                    c.change,
                    time(c.at),
                    c.runbook,
                    c.action,
                    c.target,
                    c.before.as_deref().unwrap_or("-"),
                    c.after.as_deref().unwrap_or("-")
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(at: i64, outcome: &str) -> ReplayedAction {
        ReplayedAction {
            at,
            runbook: "autoscale-gateway".into(),
            action: "scale".into(),
            target: "PaymentGateway/pay/eu".into(),
            mode: "auto".into(),
            trigger: "finding".into(),
            verdict: if outcome == "refused" {
                "cooldown"
            } else {
                "allowed"
            }
            .into(),
            outcome: outcome.into(),
            detail: String::new(),
            patch: None,
            verification: "not judged",
        }
    }

    #[test]
    fn a_comparison_lists_added_removed_and_changed_actions_only() {
        let before = [
            action(0, "applied"),
            action(30, "applied"),
            action(60, "refused"),
        ];
        let after = [
            action(0, "applied"),
            action(30, "refused"),
            action(90, "applied"),
        ];
        let got: Vec<_> = compare(&before, &after)
            .into_iter()
            .map(|c| (c.change, c.at))
            .collect();
        assert_eq!(got, vec![("changed", 30), ("removed", 60), ("added", 90)]);
    }
}
