//! One decision cycle (pure): from what the agent observed — findings, the
//! target resources as read, recent samples and facts — and the cycle's time
//! window, which runbooks fire for which component, with which context, and
//! what they propose. The agent feeds the decisions to `act`.
//!
//! A component whose resource was not read is never evaluated: its decision
//! is a missing-data error, not a guess.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    Error,
    intent::Intent,
    runbook::{Context, RunbookSet, Trigger},
};
use crate::detect::{ComponentId, Finding};

/// What the agent read this cycle.
#[derive(Default)]
pub struct Observed {
    pub findings: Vec<Finding>,
    /// Resources the runbooks may act on, as read from the cluster.
    pub resources: BTreeMap<ComponentId, Value>,
    /// Non-finite values are `None` (no data), see `runbook::Context`.
    pub samples: BTreeMap<ComponentId, BTreeMap<String, Vec<Option<f64>>>>,
    pub facts: BTreeMap<ComponentId, BTreeMap<String, Value>>,
    /// Not read but remembered: the runbooks whose proposals on a component
    /// a guard that lifts by itself held back in an earlier cycle
    /// (`agent::deferred`); see `RunbookSet::triggered_by_findings`.
    pub deferred: BTreeSet<(String, ComponentId)>,
}

/// One runbook evaluated for one component.
#[derive(Debug)]
pub struct Decision {
    pub runbook: String,
    pub runbook_hash: String,
    /// `finding`, `cron` or `condition`.
    pub trigger: &'static str,
    pub component: ComponentId,
    /// The findings that fired it (empty for cron and condition triggers).
    pub evidence: Vec<Finding>,
    pub result: Result<Vec<Intent>, Error>,
}

fn context(
    observed: &Observed,
    component: &ComponentId,
    trigger: &str,
    findings: Vec<Finding>,
    now: i64,
) -> Option<Context> {
    let resource = observed.resources.get(component)?.clone();
    Some(Context {
        now,
        trigger: trigger.to_string(),
        component: component.clone(),
        findings,
        samples: observed.samples.get(component).cloned().unwrap_or_default(),
        resource,
        facts: observed.facts.get(component).cloned().unwrap_or_default(),
    })
}

/// Evaluates every runbook the cycle `(last, now]` triggers.
pub fn evaluate_cycle(
    set: &mut RunbookSet,
    observed: &Observed,
    last: i64,
    now: i64,
) -> Vec<Decision> {
    let mut jobs: Vec<(String, &'static str, ComponentId, Vec<Finding>)> = Vec::new();
    for (runbook, component, findings) in
        set.triggered_by_findings(&observed.findings, &observed.deferred)
    {
        jobs.push((runbook, "finding", component, findings));
    }
    let due = set.due(last, now);
    for rb in set.runbooks() {
        match &rb.meta.trigger {
            Trigger::Cron { kind, .. } if due.contains(&rb.name) => {
                let targets: Vec<ComponentId> = match kind {
                    Some(kind) => observed
                        .resources
                        .keys()
                        .filter(|c| &c.kind == kind)
                        .cloned()
                        .collect(),
                    // Without a kind the runbook runs once, on no particular object.
                    None => vec![ComponentId {
                        kind: String::new(),
                        namespace: String::new(),
                        name: String::new(),
                    }],
                };
                for c in targets {
                    jobs.push((rb.name.clone(), "cron", c, Vec::new()));
                }
            }
            Trigger::Condition { kind, .. } => {
                for (c, resource) in observed.resources.iter().filter(|(c, _)| &c.kind == kind) {
                    if set.triggered_by_resource(kind, resource).contains(&rb.name) {
                        jobs.push((rb.name.clone(), "condition", c.clone(), Vec::new()));
                    }
                }
            }
            _ => {}
        }
    }
    jobs.into_iter()
        .map(|(runbook, trigger, component, findings)| {
            // One span per runbook evaluation, under the cycle's `decide`.
            let _span = tracing::info_span!("runbook", %runbook, trigger, %component).entered();
            let runbook_hash = set
                .get(&runbook)
                .map(|r| r.hash.clone())
                .unwrap_or_default();
            let ctx = if component.name.is_empty() {
                Some(Context {
                    now,
                    trigger: trigger.into(),
                    component: component.clone(),
                    findings: Vec::new(),
                    samples: Default::default(),
                    resource: Value::Null,
                    facts: Default::default(),
                })
            } else {
                context(observed, &component, trigger, findings.clone(), now)
            };
            let result = match ctx {
                Some(ctx) => set.evaluate(&runbook, &ctx),
                None => Err(Error::EvaluateRunbook {
                    runbook: runbook.clone(),
                    kind: "missing_data",
                    message: format!(
                        "missing data: {}/{}/{} was not read this cycle; not evaluated",
                        component.kind, component.namespace, component.name
                    ),
                    line: 0,
                    column: 0,
                }),
            };
            Decision {
                runbook,
                runbook_hash,
                trigger,
                component,
                evidence: findings,
                result,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Action, Limits};
    use serde_json::json;

    fn c(kind: &str, name: &str) -> ComponentId {
        ComponentId {
            kind: kind.into(),
            namespace: "p".into(),
            name: name.into(),
        }
    }

    fn finding(component: ComponentId, signal: &str, score: f64) -> Finding {
        Finding::fixture(component, signal, score)
    }

    fn set() -> RunbookSet {
        let mut set = RunbookSet::new(Limits::default());
        let errors = set.load(&[
            ("scale".into(), "fn runbook() { #{ trigger: #{ findings: #{ kind: \"PaymentGateway\", signals: [\"cpu\"], min_score: 0.5 } } } }\nfn decide(ctx) { [scale(ctx.component, require(ctx.resource.spec.replicas, \"replicas\") + 1)] }".into()),
            ("nightly".into(), "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\", kind: \"Cluster\" } } } }\nfn decide(ctx) { [backup(ctx.component)] }".into()),
            ("degraded".into(), "fn runbook() { #{ trigger: #{ condition: #{ kind: \"PaymentGateway\", condition: \"Degraded\" } } } }\nfn decide(ctx) { [restart(ctx.component)] }".into()),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        set
    }

    #[test]
    fn findings_cron_and_conditions_each_fire_their_runbooks() {
        let mut set = set();
        let mut observed = Observed {
            findings: vec![
                finding(c("PaymentGateway", "gw"), "cpu", 0.9),
                finding(c("PaymentGateway", "gw"), "cpu", 0.7),
            ],
            ..Default::default()
        };
        observed
            .resources
            .insert(c("PaymentGateway", "gw"), json!({"spec": {"replicas": 2}}));
        observed.resources.insert(c("PaymentGateway", "sick"), json!({"spec": {"replicas": 2}, "status": {"conditions": [{"type": "Degraded", "status": "True"}]}}));
        observed
            .resources
            .insert(c("Cluster", "pg1"), json!({"spec": {}}));
        observed
            .resources
            .insert(c("Cluster", "pg2"), json!({"spec": {}}));
        // 2023-11-14 22:13:20 → 03:00 next day is inside a 6 h window.
        let now = 1_700_000_000;
        let decisions = evaluate_cycle(&mut set, &observed, now, now + 6 * 3600);
        let summary: Vec<(String, &str, String, usize)> = decisions
            .iter()
            .map(|d| {
                (
                    d.runbook.clone(),
                    d.trigger,
                    d.component.name.clone(),
                    d.result.as_ref().map(Vec::len).unwrap_or(99),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("scale".to_string(), "finding", "gw".to_string(), 1),
                ("degraded".to_string(), "condition", "sick".to_string(), 1),
                ("nightly".to_string(), "cron", "pg1".to_string(), 1),
                ("nightly".to_string(), "cron", "pg2".to_string(), 1),
            ]
        );
        assert_eq!(decisions[0].evidence.len(), 2);
        assert!(matches!(
            decisions[0].result.as_ref().map(|v| &v[0].action),
            Ok(Action::ScaleReplicas { replicas: 3, .. })
        ));
        // Outside the window the cron runbook is quiet.
        let quiet = evaluate_cycle(&mut set, &observed, now, now + 60);
        assert!(quiet.iter().all(|d| d.runbook != "nightly"));
    }

    #[test]
    fn an_unread_resource_is_missing_data_not_a_guess() {
        let mut set = set();
        let observed = Observed {
            findings: vec![finding(c("PaymentGateway", "gw"), "cpu", 0.9)],
            ..Default::default()
        };
        let decisions = evaluate_cycle(&mut set, &observed, 0, 1);
        assert_eq!(decisions.len(), 1);
        let err = decisions[0].result.as_ref().expect_err("not evaluated");
        assert_eq!(err.kind(), "missing_data");
    }
}
