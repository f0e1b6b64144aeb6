//! Guards (pure): whether each planned action may proceed, in every mode.
//! Kill switch, maintenance windows for disruptive actions, per-target
//! cooldown, per-runbook and global rate limits, the disruption budget (per
//! namespace and cluster-wide per hour), a cap on how far one action moves a
//! value, never two actions on one target in a cycle, never a switchover to
//! a lagging replica. A refusal names the guard.
//!
//! Pure: the policy, the recent history and `now` come in as values.
//!
//! The policy lives in the ConfigMap `autopilot-policy` in the agent's
//! namespace; an SRE stops all actions with
//! `kubectl -n autopilot patch configmap autopilot-policy --type merge -p '{"data":{"killSwitch":"true"}}'`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::action::Planned;
use crate::decide::{Action, Intent};

/// Name of the ConfigMap holding the [`Policy`] (in the agent's namespace).
pub const POLICY_CONFIGMAP: &str = "autopilot-policy";

/// A maintenance window: it opens at each occurrence of `schedule` (cron,
/// UTC, standard weekdays: `0 2 * * 6` is Saturday 02:00; see
/// `crate::schedule`) and lasts `duration_seconds`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Window {
    pub schedule: String,
    pub duration_seconds: i64,
}

/// The limits every action is checked against. Keys of the ConfigMap are
/// the camelCase field names; values are strings (`"true"`, `"600"`, and
/// `maintenanceWindows` as a JSON list).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Refuse every action.
    pub kill_switch: bool,
    /// Seconds after an action on a target before the next one on it.
    pub cooldown_seconds: i64,
    /// Actions per runbook per hour.
    pub runbook_per_hour: u32,
    /// Actions per hour, all runbooks.
    pub global_per_hour: u32,
    /// Disruptive actions per namespace per hour.
    pub disruptive_per_namespace_per_hour: u32,
    /// Disruptive actions per hour cluster-wide.
    pub disruptive_per_hour: u32,
    /// Largest relative change of one value by one action (0.5 = ±50 %);
    /// a move from 0 counts as a change of the whole new value.
    pub max_relative_change: f64,
    /// Largest replication lag (seconds) of a switchover candidate.
    pub max_switchover_lag_seconds: f64,
    /// When non-empty, disruptive actions only inside one of these windows.
    pub maintenance_windows: Vec<Window>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            kill_switch: false,
            cooldown_seconds: 900,
            runbook_per_hour: 6,
            global_per_hour: 30,
            disruptive_per_namespace_per_hour: 2,
            disruptive_per_hour: 4,
            max_relative_change: 1.0,
            max_switchover_lag_seconds: 5.0,
            maintenance_windows: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the policy: {key}={value:?} is invalid: {reason}")]
    ReadPolicy {
        key: String,
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
    /// Reads a policy from ConfigMap data; absent keys keep their defaults,
    /// unknown keys and bad values are errors (and the caller keeps the
    /// previous policy).
    pub fn from_configmap_data(data: &BTreeMap<String, String>) -> Result<Policy, Error> {
        let mut v = serde_json::to_value(Policy::default()).map_err(|e| Error::ReadPolicy {
            key: String::new(),
            value: String::new(),
            reason: e.to_string(),
        })?;
        for (k, raw) in data {
            let bad = |reason: String| Error::ReadPolicy {
                key: k.clone(),
                value: raw.clone(),
                reason,
            };
            let parsed: serde_json::Value = if k == "maintenanceWindows" {
                serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?
            } else {
                serde_json::from_str(raw.trim()).map_err(|e| bad(e.to_string()))?
            };
            if v.get(k).is_none() {
                return Err(bad("unknown key".into()));
            }
            v[k] = parsed;
        }
        let policy: Policy = serde_json::from_value(v).map_err(|e| Error::ReadPolicy {
            key: String::new(),
            value: String::new(),
            reason: e.to_string(),
        })?;
        for w in &policy.maintenance_windows {
            crate::schedule::parse_with_seconds(&w.schedule).map_err(|reason| {
                Error::ReadPolicy {
                    key: "maintenanceWindows".into(),
                    value: w.schedule.clone(),
                    reason,
                }
            })?;
        }
        Ok(policy)
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
    Refused { guard: String, detail: String },
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed)
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
    history: &[Recent],
    batch: &[Candidate<'_>],
    now: i64,
) -> Vec<Verdict> {
    let hour_ago = now - 3600;
    let mut recent: Vec<Recent> = history
        .iter()
        .filter(|r| r.at > now - 86_400)
        .cloned()
        .collect();
    let mut targets_this_cycle: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(batch.len());
    for c in batch {
        let action = &c.intent.action;
        let key = target_key(action);
        let namespace = action.target().namespace.clone();
        let disruptive = c.planned.disruptive;
        let refuse = |guard: &str, detail: String| Verdict::Refused {
            guard: guard.to_string(),
            detail,
        };
        let last_hour = |f: &dyn Fn(&Recent) -> bool| {
            recent.iter().filter(|r| r.at > hour_ago && f(r)).count() as u32
        };
        let verdict = if policy.kill_switch {
            refuse(
                "kill_switch",
                format!("killSwitch is on in ConfigMap {POLICY_CONFIGMAP}"),
            )
        } else if targets_this_cycle.contains(&key) {
            refuse("conflict", format!("another action on {key} in this cycle"))
        } else if let Some(last) = recent
            .iter()
            .filter(|r| r.target == key && r.at > now - policy.cooldown_seconds)
            .map(|r| r.at)
            .max()
        {
            refuse(
                "cooldown",
                format!(
                    "last action on {key} {}s ago (cooldown {}s)",
                    now - last,
                    policy.cooldown_seconds
                ),
            )
        } else if let Some(m) = c.planned.moves.iter().find(|m| {
            let base = m
                .from
                .abs()
                .max(if m.from == 0.0 { m.to.abs() } else { 0.0 });
            base > 0.0 && (m.to - m.from).abs() / base > policy.max_relative_change
        }) {
            refuse(
                "max_change",
                format!(
                    "{} from {} to {} moves more than {:.0}%",
                    m.field,
                    m.from,
                    m.to,
                    policy.max_relative_change * 100.0
                ),
            )
        } else if let Action::Switchover {
            lag_seconds,
            instance,
            ..
        } = action
            && (lag_seconds.is_nan() || *lag_seconds > policy.max_switchover_lag_seconds)
        {
            refuse(
                "replica_lag",
                format!(
                    "{instance} lags {lag_seconds}s (limit {}s)",
                    policy.max_switchover_lag_seconds
                ),
            )
        } else if last_hour(&|r| r.runbook == c.intent.runbook) >= policy.runbook_per_hour {
            refuse(
                "runbook_rate",
                format!(
                    "{} actions/hour from {}",
                    policy.runbook_per_hour, c.intent.runbook
                ),
            )
        } else if last_hour(&|_| true) >= policy.global_per_hour {
            refuse(
                "global_rate",
                format!("{} actions/hour in total", policy.global_per_hour),
            )
        } else if disruptive
            && last_hour(&|r| r.disruptive && r.namespace == namespace)
                >= policy.disruptive_per_namespace_per_hour
        {
            refuse(
                "disruption_budget_namespace",
                format!(
                    "{} disruptive actions/hour in {namespace}",
                    policy.disruptive_per_namespace_per_hour
                ),
            )
        } else if disruptive && last_hour(&|r| r.disruptive) >= policy.disruptive_per_hour {
            refuse(
                "disruption_budget",
                format!(
                    "{} disruptive actions/hour cluster-wide",
                    policy.disruptive_per_hour
                ),
            )
        } else if disruptive
            && !policy.maintenance_windows.is_empty()
            && !in_window(&policy.maintenance_windows, now)
        {
            refuse(
                "maintenance_window",
                "disruptive actions wait for a maintenance window".into(),
            )
        } else {
            Verdict::Allowed
        };
        // Any proposal on a target claims it for this cycle, allowed or not:
        // a refused failover still means "do not also scale it".
        targets_this_cycle.push(key.clone());
        if verdict.is_allowed() {
            recent.push(Recent {
                at: now,
                runbook: c.intent.runbook.clone(),
                target: key,
                namespace,
                disruptive,
            });
        }
        out.push(verdict);
    }
    out
}

#[cfg(test)]
mod tests;
