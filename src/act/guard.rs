//! Guards (pure): whether each planned action may proceed, in every mode.
//! Kill switch, maintenance windows for disruptive actions, per-target
//! cooldown, per-runbook and global rate limits, the disruption budget (per
//! namespace and cluster-wide per hour), a cap on how far one action moves a
//! value, never two actions on one target in a cycle, never a switchover to
//! a lagging replica. A refusal names the guard.
//!
//! Pure: the policy, the recent history and `now` come in as values.
//!
//! The policy is the `AutopilotPolicy` object `autopilot` in the agent's
//! namespace (`crate::crd::policy`); an SRE stops all actions with
//! `kubectl -n autopilot patch autopilotpolicy autopilot --type merge -p '{"spec":{"killSwitch":true}}'`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::action::Planned;
pub use crate::crd::policy::{Freeze, POLICY_NAME, Policy, Window};
use crate::{
    decide::{Action, Intent},
    detect::ComponentId,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the policy's {field} {value:?} is invalid: {reason}")]
    ReadPolicy {
        field: String,
        value: String,
        reason: String,
    },
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ReadPolicy { .. } => "read_policy",
        }
    }
}

impl Policy {
    /// What the CRD's schema cannot check: every maintenance window's
    /// schedule parses, and no number is NaN. A policy that fails is not
    /// used: nothing is sent until it is fixed.
    pub fn validate(&self) -> Result<(), Error> {
        for (i, w) in self.maintenance_windows.iter().enumerate() {
            crate::schedule::parse_with_seconds(&w.schedule).map_err(|reason| {
                Error::ReadPolicy {
                    field: format!("maintenanceWindows[{i}].schedule"),
                    value: w.schedule.clone(),
                    reason,
                }
            })?;
        }
        for (field, v) in [
            ("maxRelativeChange", self.max_relative_change),
            ("maxSwitchoverLagSeconds", self.max_switchover_lag_seconds),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::ReadPolicy {
                    field: field.into(),
                    value: v.to_string(),
                    reason: "must be a finite number >= 0".into(),
                });
            }
        }
        Ok(())
    }
}

/// What the agent itself observed, read for the judgement (never numbers a
/// runbook supplies): the replication lag of each CloudNativePG instance,
/// per Cluster, in seconds. A guard that needs an observation it does not
/// have refuses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub replica_lag_seconds: BTreeMap<ComponentId, BTreeMap<String, f64>>,
}

impl Observed {
    /// The observed lag of `instance` of `cluster`; `None` when unknown or
    /// not a finite number.
    pub fn replica_lag(&self, cluster: &ComponentId, instance: &str) -> Option<f64> {
        self.replica_lag_seconds
            .get(cluster)?
            .get(instance)
            .copied()
            .filter(|l| l.is_finite())
    }
}

/// A past action, as the journal remembers it (only those that were sent
/// or are about to be count against limits).
#[derive(Clone, Debug, PartialEq)]
pub struct Recent {
    pub at: i64,
    pub runbook: String,
    /// `kind/namespace/name`
    pub target: String,
    pub namespace: String,
    pub disruptive: bool,
}

/// One action to judge.
pub struct Candidate<'a> {
    pub intent: &'a Intent,
    pub planned: &'a Planned,
}

/// The verdict on one action.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    Refused {
        guard: String,
        detail: String,
        /// For `conflict` and `cooldown`: the runbook whose action holds
        /// the target (see [`Verdict::defers`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        held_by: Option<String>,
    },
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed)
    }

    /// Whether this refuses `runbook`'s action only until another
    /// runbook's action on the same target lifts: a conflict with it in
    /// this cycle, or its cooldown. A runbook held back by its own earlier
    /// action is not deferred: that is what the cooldown is for.
    pub fn defers(&self, runbook: &str) -> bool {
        matches!(self, Verdict::Refused { held_by: Some(by), .. } if by != runbook)
    }

    /// `allowed` or the refusing guard's name (journal column).
    pub fn label(&self) -> &str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Refused { guard, .. } => guard,
        }
    }
}

/// `kind/namespace/name` of an action's target.
pub fn target_key(action: &Action) -> String {
    let t = action.target();
    t.to_string()
}

fn in_window(windows: &[Window], now: i64) -> bool {
    windows.iter().any(|w| {
        // Policies are checked when read, so a bad schedule here only
        // comes from a hand-built policy: it never opens.
        let Ok(schedule) = crate::schedule::parse_with_seconds(&w.schedule) else {
            return false;
        };
        // Opened within the last `duration` seconds?
        crate::schedule::occurs_between(&schedule, now - w.duration_seconds.max(0) - 1, now)
    })
}

/// Judges a batch (one cycle) in order. Allowed actions count against the
/// limits of those after them.
pub fn evaluate_guards(
    policy: &Policy,
    observed: &Observed,
    history: &[Recent],
    batch: &[Candidate<'_>],
    now: i64,
) -> Vec<Verdict> {
    let mut recent: Vec<Recent> = history
        .iter()
        .filter(|r| r.at > now - 86_400)
        .cloned()
        .collect();
    let mut targets_this_cycle: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(batch.len());
    for c in batch {
        let check = Check {
            policy,
            observed,
            recent: &recent,
            targets_this_cycle: &targets_this_cycle,
            candidate: c,
            key: target_key(&c.intent.action),
            namespace: c.intent.action.target().namespace.clone(),
            now,
        };
        let verdict = GUARDS.iter().find_map(|guard| guard(&check)).map_or(
            Verdict::Allowed,
            |(guard, detail)| Verdict::Refused {
                guard: guard.to_string(),
                detail,
                held_by: matches!(guard, "conflict" | "cooldown")
                    .then(|| check.holder().map(str::to_string))
                    .flatten(),
            },
        );
        let Check { key, namespace, .. } = check;
        // Any proposal on a target claims it for this cycle, allowed or not:
        // a refused failover still means "do not also scale it".
        targets_this_cycle.push((key.clone(), c.intent.runbook.clone()));
        if verdict.is_allowed() {
            recent.push(Recent {
                at: now,
                runbook: c.intent.runbook.clone(),
                target: key,
                namespace,
                disruptive: c.planned.disruptive,
            });
        }
        out.push(verdict);
    }
    out
}

/// What a guard sees of one candidate: the policy, the history including
/// this cycle's allowed actions, and the targets already claimed.
struct Check<'a> {
    policy: &'a Policy,
    observed: &'a Observed,
    recent: &'a [Recent],
    /// `(target, runbook)` of every proposal judged before in this cycle.
    targets_this_cycle: &'a [(String, String)],
    candidate: &'a Candidate<'a>,
    key: String,
    namespace: String,
    now: i64,
}

impl Check<'_> {
    /// Actions of the last hour that match `f`.
    fn last_hour(&self, f: impl Fn(&Recent) -> bool) -> u32 {
        let hour_ago = self.now - 3600;
        self.recent
            .iter()
            .filter(|r| r.at > hour_ago && f(r))
            .count() as u32
    }

    fn disruptive(&self) -> bool {
        self.candidate.planned.disruptive
    }

    /// The runbook that claimed the target first in this cycle.
    fn claimed_by(&self) -> Option<&str> {
        self.targets_this_cycle
            .iter()
            .find(|(key, _)| *key == self.key)
            .map(|(_, runbook)| runbook.as_str())
    }

    /// The latest action on the target within the cooldown.
    fn cooling(&self) -> Option<&Recent> {
        self.recent
            .iter()
            .filter(|r| r.target == self.key && r.at > self.now - self.policy.cooldown_seconds)
            .max_by_key(|r| r.at)
    }

    /// The runbook whose action holds the target: the first to claim it
    /// in this cycle, else the latest to act on it within the cooldown.
    fn holder(&self) -> Option<&str> {
        self.claimed_by()
            .or_else(|| self.cooling().map(|r| r.runbook.as_str()))
    }
}

/// A guard: `Some((name, detail))` refuses.
type Guard = fn(&Check<'_>) -> Option<(&'static str, String)>;

/// The guards in the order they are checked; the first refusal is the
/// verdict. A new guard is a function and a line here.
const GUARDS: &[Guard] = &[
    kill_switch,
    change_freeze,
    conflict,
    cooldown,
    max_change,
    replica_lag,
    runbook_rate,
    global_rate,
    disruption_budget_namespace,
    disruption_budget,
    maintenance_window,
];

fn kill_switch(c: &Check<'_>) -> Option<(&'static str, String)> {
    c.policy.kill_switch.then(|| {
        (
            "kill_switch",
            format!("killSwitch is on in AutopilotPolicy {POLICY_NAME}"),
        )
    })
}

fn change_freeze(c: &Check<'_>) -> Option<(&'static str, String)> {
    let f = c.policy.change_freezes.iter().find(|f| f.covers(c.now))?;
    Some((
        "change_freeze",
        format!(
            "change freeze {} until {}",
            if f.reason.is_empty() {
                "in effect"
            } else {
                f.reason.as_str()
            },
            f.end.0
        ),
    ))
}

fn conflict(c: &Check<'_>) -> Option<(&'static str, String)> {
    c.claimed_by().map(|runbook| {
        (
            "conflict",
            format!("another action on {} in this cycle, by {runbook}", c.key),
        )
    })
}

fn cooldown(c: &Check<'_>) -> Option<(&'static str, String)> {
    let last = c.cooling()?;
    Some((
        "cooldown",
        format!(
            "last action on {} {}s ago, by {} (cooldown {}s)",
            c.key,
            c.now - last.at,
            last.runbook,
            c.policy.cooldown_seconds
        ),
    ))
}

fn max_change(c: &Check<'_>) -> Option<(&'static str, String)> {
    let limit = c.policy.max_relative_change;
    let m = c.candidate.planned.moves.iter().find(|m| {
        let base = m
            .from
            .abs()
            .max(if m.from == 0.0 { m.to.abs() } else { 0.0 });
        base > 0.0 && (m.to - m.from).abs() / base > limit
    })?;
    Some((
        "max_change",
        format!(
            "{} from {} to {} moves more than {:.0}%",
            m.field,
            m.from,
            m.to,
            limit * 100.0
        ),
    ))
}

/// A switchover only to an instance whose lag the agent itself observed
/// within the limit: the lag the runbook passed in is its own claim, not
/// evidence, and an instance without an observed lag is refused.
fn replica_lag(c: &Check<'_>) -> Option<(&'static str, String)> {
    let Action::Switchover {
        target, instance, ..
    } = &c.candidate.intent.action
    else {
        return None;
    };
    let limit = c.policy.max_switchover_lag_seconds;
    match c.observed.replica_lag(target, instance) {
        None => Some((
            "replica_lag",
            format!(
                "no observed replication lag for {instance}; the agent does not switch over blind"
            ),
        )),
        Some(lag) if lag > limit => Some((
            "replica_lag",
            format!("{instance} lags {lag}s as observed (limit {limit}s)"),
        )),
        Some(_) => None,
    }
}

fn runbook_rate(c: &Check<'_>) -> Option<(&'static str, String)> {
    let runbook = &c.candidate.intent.runbook;
    (c.last_hour(|r| &r.runbook == runbook) >= c.policy.runbook_per_hour).then(|| {
        (
            "runbook_rate",
            format!("{} actions/hour from {runbook}", c.policy.runbook_per_hour),
        )
    })
}

fn global_rate(c: &Check<'_>) -> Option<(&'static str, String)> {
    (c.last_hour(|_| true) >= c.policy.global_per_hour).then(|| {
        (
            "global_rate",
            format!("{} actions/hour in total", c.policy.global_per_hour),
        )
    })
}

fn disruption_budget_namespace(c: &Check<'_>) -> Option<(&'static str, String)> {
    let limit = c.policy.disruptive_per_namespace_per_hour;
    (c.disruptive() && c.last_hour(|r| r.disruptive && r.namespace == c.namespace) >= limit).then(
        || {
            (
                "disruption_budget_namespace",
                format!("{limit} disruptive actions/hour in {}", c.namespace),
            )
        },
    )
}

fn disruption_budget(c: &Check<'_>) -> Option<(&'static str, String)> {
    let limit = c.policy.disruptive_per_hour;
    (c.disruptive() && c.last_hour(|r| r.disruptive) >= limit).then(|| {
        (
            "disruption_budget",
            format!("{limit} disruptive actions/hour cluster-wide"),
        )
    })
}

fn maintenance_window(c: &Check<'_>) -> Option<(&'static str, String)> {
    let windows = &c.policy.maintenance_windows;
    (c.disruptive() && !windows.is_empty() && !in_window(windows, c.now)).then(|| {
        (
            "maintenance_window",
            "disruptive actions wait for a maintenance window".to_string(),
        )
    })
}

#[cfg(test)]
mod tests;
