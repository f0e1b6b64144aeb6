//! The judging steps of a cycle, on values already read: score the series
//! (step 2, `detect`), choose the kinds the runbooks decide on (step 3),
//! and evaluate the triggered runbooks into proposals (step 4, `decide`).
//!
//! No I/O and no clock: everything, `now` included, is passed in, so a
//! driver other than the live loop (a replay over Prometheus history) can
//! run the same steps. Only metrics and logs are touched on the side; this
//! module must not read the cluster or hand anything to the executor.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{metrics::Metrics, read::Observation};
use crate::{
    act::executor::Proposal,
    decide::{
        Mode, RunbookSet, Trigger,
        cycle::{Observed, evaluate_cycle},
    },
    detect::{ComponentId, CycleInput, Estate, Finding, Report, SeriesSamples},
};

/// Step 2 (detect): scores what was observed at `now`, counting and
/// logging each finding. Without any Prometheus answer the detectors are
/// told so and nothing is found.
#[tracing::instrument(name = "detect", skip_all, fields(series = obs.series.len(), findings))]
pub fn score(estate: &mut Estate, obs: &Observation, now: i64, metrics: &Metrics) -> Report {
    if let Some(reason) = &obs.unavailable {
        let reason = reason.clone();
        return estate.score_cycle(CycleInput::Unavailable { reason }, now);
    }
    let report = estate.score_cycle(
        CycleInput::Observed {
            components: Some(&obs.components),
            series: &obs.series,
        },
        now,
    );
    // One line per finding episode: when it opens and when it clears.
    let open: std::collections::BTreeSet<String> = report
        .findings
        .iter()
        .map(|f| format!("{} {}", f.component, f.signal))
        .collect();
    let mut was = metrics
        .open_findings
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for f in &report.findings {
        metrics
            .findings
            .with_label_values(&[f.component.kind.as_str(), f.detector.as_str()])
            .inc();
        if !was.contains(&format!("{} {}", f.component, f.signal)) {
            tracing::info!(kind = %f.component.kind, namespace = %f.component.namespace, name = %f.component.name,
                signal = %f.signal, detector = %f.detector, score = (f.score * 100.0).round() / 100.0,
                value = f.value, baseline = f.baseline, explanation = %f.explanation, "finding");
        }
    }
    for gone in was.difference(&open) {
        tracing::info!(finding = %gone, "finding cleared");
    }
    *was = open;
    drop(was);
    for (state, n) in [
        ("read", obs.series.len()),
        ("warming_up", report.warming_up.len()),
        ("no_data", report.no_data.len()),
        ("unobserved", report.unobserved.len()),
    ] {
        metrics.signals.with_label_values(&[state]).set(n as i64);
    }
    tracing::Span::current().record("findings", report.findings.len());
    report
}

/// Kinds whose resources the runbooks decide on this cycle: those of the
/// finding triggers that fire, of cron triggers naming a kind, and of every
/// condition trigger.
pub fn decision_kinds(runbooks: &RunbookSet, findings: &[Finding]) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for rb in runbooks.runbooks() {
        match &rb.meta.trigger {
            Trigger::Findings(t) => {
                if findings.iter().any(|f| t.matches(f)) {
                    kinds.insert(t.kind.clone());
                }
            }
            Trigger::Cron {
                kind: Some(kind), ..
            } => {
                kinds.insert(kind.clone());
            }
            Trigger::Cron { kind: None, .. } => {}
            Trigger::Condition { kind, .. } => {
                kinds.insert(kind.clone());
            }
        }
    }
    kinds
}

/// What step 4 decided.
#[derive(Debug, Default)]
pub struct Evaluated {
    /// Runbook evaluations, failed ones included.
    pub decisions: usize,
    /// Evaluations that failed (counted by runbook and error kind).
    pub errors: usize,
    /// Every intent the runbooks returned, in its runbook's effective mode.
    pub proposals: Vec<Proposal>,
    /// For each proposal, the component whose findings fired its runbook
    /// (`None` for cron and condition triggers): what `agent::deferred`
    /// holds a deferred runbook on.
    pub fired_on: Vec<Option<ComponentId>>,
}

/// Step 4 (decide): evaluates the runbooks that the findings, the cron
/// schedules due since `last` and the resource conditions trigger, and
/// turns their intents into proposals for the executor.
#[tracing::instrument(name = "decide", skip_all, fields(last = last, findings = observed.findings.len(), decisions, proposals))]
pub fn evaluate_runbooks(
    runbooks: &mut RunbookSet,
    observed: &Observed,
    last: i64,
    now: i64,
    mode: Mode,
    metrics: &Metrics,
) -> Evaluated {
    let decisions = evaluate_cycle(runbooks, observed, last, now);
    let mut out = Evaluated {
        decisions: decisions.len(),
        ..Evaluated::default()
    };
    // Missing data, per runbook: the components newly without it (and the
    // first one's error), and those evaluated again.
    let mut missing: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    let mut back: BTreeMap<String, usize> = BTreeMap::new();
    let mut lacking = metrics
        .missing_data
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for d in decisions {
        metrics
            .runbook_evaluations
            .with_label_values(&[d.runbook.as_str(), d.trigger])
            .inc();
        let pair = (d.runbook.clone(), d.component.to_string());
        match d.result {
            Ok(intents) => {
                if lacking.remove(&pair) {
                    *back.entry(d.runbook.clone()).or_default() += 1;
                }
                let Some(rb) = runbooks.get(&d.runbook) else {
                    continue;
                };
                let evidence = serde_json::to_value(&d.evidence).unwrap_or(Value::Null);
                let fired_on = (d.trigger == "finding").then(|| d.component.clone());
                for intent in intents {
                    out.fired_on.push(fired_on.clone());
                    out.proposals.push(Proposal::from_runbook(
                        rb,
                        intent,
                        mode,
                        d.trigger,
                        evidence.clone(),
                    ));
                }
            }
            Err(error) => {
                out.errors += 1;
                metrics
                    .runbook_errors
                    .with_label_values(&[d.runbook.as_str(), error.kind()])
                    .inc();
                if error.kind() == "missing_data" && lacking.insert(pair) {
                    missing
                        .entry(d.runbook.clone())
                        .or_insert_with(|| {
                            (Vec::new(), crate::telemetry::chain(&error).to_string())
                        })
                        .0
                        .push(d.component.to_string());
                }
            }
        }
    }
    drop(lacking);
    for (runbook, (components, first_error)) in &missing {
        tracing::warn!(%runbook, components = components.len(), first = %components[0], error = %first_error,
            "runbook not evaluated: missing data (logged again when it has data; autopilot_runbook_errors_total counts each cycle)");
    }
    for (runbook, n) in &back {
        tracing::info!(%runbook, components = n, "runbook evaluated again: its data is back");
    }
    let span = tracing::Span::current();
    span.record("decisions", out.decisions);
    span.record("proposals", out.proposals.len());
    out
}

/// Lowers to recommend mode the auto proposals of runbook versions not yet
/// trusted (AutopilotPolicy `newRunbookApprovals`): with `required` > 0, a
/// version (hash) of which fewer than `required` actions were approved by a
/// person and applied (`approved`, per hash) only recommends, and its
/// proposals say why. A version missing from `approved` (the journal could
/// not count) is not trusted either. Proposals not in auto mode are left
/// as they are. Returns how many were lowered.
pub fn pin_new_versions(
    proposals: &mut [Proposal],
    required: u32,
    approved: &BTreeMap<String, i64>,
) -> usize {
    if required == 0 {
        return 0;
    }
    let mut lowered = 0;
    for p in proposals.iter_mut().filter(|p| p.mode == Mode::Auto) {
        let note = match approved.get(&p.runbook_hash) {
            Some(&n) if n >= i64::from(required) => continue,
            Some(&n) => format!(
                "new runbook version: {n} of {required} approved actions applied (AutopilotPolicy newRunbookApprovals), so it recommends"
            ),
            None => format!(
                "new runbook version: its approved actions could not be counted (AutopilotPolicy newRunbookApprovals {required}), so it recommends"
            ),
        };
        p.mode = Mode::Recommend;
        p.mode_note = Some(note);
        lowered += 1;
    }
    lowered
}

/// The latest finite value of every series, keyed by (`Kind/namespace/name`,
/// signal): what step 5 verifies earlier actions against.
pub fn latest_values(series: &[SeriesSamples]) -> BTreeMap<(String, String), f64> {
    series
        .iter()
        .filter_map(|s| {
            s.samples
                .last()
                .map(|&(_, v)| ((s.component.to_string(), s.signal.clone()), v))
        })
        .filter(|(_, v)| v.is_finite())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Limits;

    fn finding(kind: &str, signal: &str, score: f64) -> Finding {
        let component = ComponentId {
            kind: kind.into(),
            namespace: "p".into(),
            name: "x".into(),
        };
        Finding::fixture(component, signal, score)
    }

    #[test]
    fn decision_kinds_are_those_of_firing_findings_cron_kinds_and_conditions() {
        let mut set = RunbookSet::new(Limits::default());
        let errors = set.load(&[
            ("scale".into(), "fn runbook() { #{ trigger: #{ findings: #{ kind: \"PaymentGateway\", signals: [\"cpu\"], min_score: 0.5 } } } }\nfn decide(ctx) { [] }".into()),
            ("nightly".into(), "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\", kind: \"Cluster\" } } } }\nfn decide(ctx) { [] }".into()),
            ("hourly".into(), "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 * * * *\" } } } }\nfn decide(ctx) { [] }".into()),
            ("degraded".into(), "fn runbook() { #{ trigger: #{ condition: #{ kind: \"BatchProcessor\", condition: \"Degraded\" } } } }\nfn decide(ctx) { [] }".into()),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        let kinds = |findings: &[Finding]| -> Vec<String> {
            decision_kinds(&set, findings).into_iter().collect()
        };
        assert_eq!(kinds(&[]), ["BatchProcessor", "Cluster"]);
        assert_eq!(
            kinds(&[finding("PaymentGateway", "cpu", 0.2)]),
            ["BatchProcessor", "Cluster"],
            "a finding below min_score does not fire"
        );
        assert_eq!(
            kinds(&[finding("PaymentGateway", "cpu", 0.9)]),
            ["BatchProcessor", "Cluster", "PaymentGateway"]
        );
    }

    #[test]
    fn a_new_runbook_version_recommends_until_enough_approved_actions() {
        let gateway = ComponentId {
            kind: "PaymentGateway".into(),
            namespace: "pay".into(),
            name: "gw".into(),
        };
        let proposal = |hash: &str, mode: Mode| Proposal {
            intent: crate::decide::Intent::new(crate::decide::Action::ScaleReplicas {
                target: gateway.clone(),
                replicas: 3,
            }),
            runbook_hash: hash.into(),
            runbook_editor: None,
            trigger: "cron".into(),
            evidence: Value::Null,
            mode,
            mode_note: None,
        };
        let approved: BTreeMap<String, i64> =
            [("trusted".to_string(), 2), ("new".to_string(), 1)].into();
        let batch = || {
            vec![
                proposal("trusted", Mode::Auto),
                proposal("new", Mode::Auto),
                proposal("uncounted", Mode::Auto),
                proposal("new", Mode::DryRun),
            ]
        };
        let modes = |ps: &[Proposal]| ps.iter().map(|p| p.mode).collect::<Vec<_>>();

        // Off: nothing changes.
        let mut off = batch();
        assert_eq!(pin_new_versions(&mut off, 0, &approved), 0);
        assert_eq!(modes(&off), modes(&batch()));

        let mut pinned = batch();
        assert_eq!(pin_new_versions(&mut pinned, 2, &approved), 2);
        assert_eq!(
            modes(&pinned),
            [Mode::Auto, Mode::Recommend, Mode::Recommend, Mode::DryRun],
            "two approved actions are enough; one is not; none counted is not; dry-run stays"
        );
        assert_eq!(pinned[0].mode_note, None);
        let note = pinned[1].mode_note.as_deref().expect("a reason");
        assert!(
            note.contains("1 of 2") && note.contains("newRunbookApprovals"),
            "{note}"
        );
        assert!(
            pinned[2]
                .mode_note
                .as_deref()
                .is_some_and(|n| n.contains("could not be counted"))
        );
        assert_eq!(pinned[3].mode_note, None);

        let mut stricter = batch();
        assert_eq!(pin_new_versions(&mut stricter, 3, &approved), 3);
        assert_eq!(stricter[0].mode, Mode::Recommend);
    }

    #[test]
    fn a_runbook_over_the_intent_cap_proposes_nothing_and_is_counted_each_cycle() {
        let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
        let mut set = RunbookSet::new(Limits::default());
        let fanout = |n: usize| {
            format!(
                "fn runbook() {{ #{{ trigger: #{{ findings: #{{ kind: \"PaymentGateway\" }} }} }} }}\n\
                 fn decide(ctx) {{ let out = []; for i in 0..{n} {{ out.push(scale(ctx.component, 2)); }} out }}"
            )
        };
        let errors = set.load(&[("wide".into(), fanout(21)), ("narrow".into(), fanout(20))]);
        assert!(errors.is_empty(), "{errors:?}");
        let f = finding("PaymentGateway", "cpu", 0.9);
        let mut observed = Observed {
            findings: vec![f.clone()],
            ..Observed::default()
        };
        observed
            .resources
            .insert(f.component.clone(), serde_json::json!({"spec": {}}));
        let errors = || {
            metrics
                .runbook_errors
                .with_label_values(&["wide", "too_many_intents"])
                .get()
        };
        for cycle in 1..=2 {
            let out = evaluate_runbooks(&mut set, &observed, 0, 60, Mode::Auto, &metrics);
            assert_eq!((out.decisions, out.errors), (2, 1));
            assert_eq!(out.proposals.len(), 20, "only the narrow runbook's");
            assert!(out.proposals.iter().all(|p| p.intent.runbook == "narrow"));
            assert_eq!(errors(), cycle);
        }
    }

    /// Missing data is remembered per runbook and component, so the log
    /// says so when it starts and when it ends, while the error counter
    /// counts every evaluation.
    #[test]
    fn missing_data_is_remembered_per_runbook_and_component_until_it_is_back() {
        let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
        let mut set = RunbookSet::new(Limits::default());
        let errors = set.load(&[(
            "needs-samples".into(),
            "fn runbook() { #{ trigger: #{ findings: #{ kind: \"PaymentGateway\" } } } }\n\
             fn decide(ctx) { let s = require(ctx.resource.spec?.replicas, \"spec.replicas\"); [] }"
                .into(),
        )]);
        assert!(errors.is_empty(), "{errors:?}");
        let findings: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| {
                let mut f = finding("PaymentGateway", "cpu", 0.9);
                f.component.name = (*n).into();
                f
            })
            .collect();
        let mut observed = Observed {
            findings: findings.clone(),
            ..Observed::default()
        };
        for f in &findings {
            observed
                .resources
                .insert(f.component.clone(), serde_json::json!({"spec": {}}));
        }
        let lacking = || metrics.missing_data.lock().expect("lock").len();
        let counted = || {
            metrics
                .runbook_errors
                .with_label_values(&["needs-samples", "missing_data"])
                .get()
        };
        for cycle in 1..=2 {
            let out = evaluate_runbooks(&mut set, &observed, 0, 60, Mode::Auto, &metrics);
            assert_eq!((out.decisions, out.errors), (3, 3));
            assert_eq!(lacking(), 3, "the same three pairs, not three more");
            assert_eq!(counted(), 3 * cycle);
        }
        // One gateway's data is back: it leaves the set.
        observed.resources.insert(
            findings[0].component.clone(),
            serde_json::json!({"spec": {"replicas": 2}}),
        );
        let out = evaluate_runbooks(&mut set, &observed, 0, 60, Mode::Auto, &metrics);
        assert_eq!(out.errors, 2);
        assert_eq!(lacking(), 2);
    }

    #[test]
    fn latest_values_are_the_last_samples_when_finite() {
        let gateway = ComponentId {
            kind: "PaymentGateway".into(),
            namespace: "pay".into(),
            name: "gw".into(),
        };
        let series = |signal: &str, samples: Vec<(i64, f64)>| SeriesSamples {
            component: gateway.clone(),
            signal: signal.into(),
            samples,
        };
        let latest = latest_values(&[
            series("latency", vec![(1, 0.5), (2, 0.7)]),
            series("errors", vec![(1, 1.0), (2, f64::NAN)]),
            series("empty", vec![]),
        ]);
        let key = |signal: &str| (gateway.to_string(), signal.to_string());
        assert_eq!(latest.get(&key("latency")), Some(&0.7));
        assert_eq!(latest.get(&key("errors")), None, "the last sample is NaN");
        assert_eq!(latest.len(), 1);
    }
}
