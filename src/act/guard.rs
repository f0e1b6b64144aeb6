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
    let mut recent: Vec<Recent> = history
        .iter()
        .filter(|r| r.at > now - 86_400)
        .cloned()
        .collect();
    let mut targets_this_cycle: Vec<String> = Vec::new();
    let mut out = Vec::with_capacity(batch.len());
    for c in batch {
        let check = Check {
            policy,
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
            },
        );
        let Check { key, namespace, .. } = check;
        // Any proposal on a target claims it for this cycle, allowed or not:
        // a refused failover still means "do not also scale it".
        targets_this_cycle.push(key.clone());
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
    recent: &'a [Recent],
    targets_this_cycle: &'a [String],
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
}

/// A guard: `Some((name, detail))` refuses.
type Guard = fn(&Check<'_>) -> Option<(&'static str, String)>;

/// The guards in the order they are checked; the first refusal is the
/// verdict. A new guard is a function and a line here.
const GUARDS: &[Guard] = &[
    kill_switch,
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
            format!("killSwitch is on in ConfigMap {POLICY_CONFIGMAP}"),
        )
    })
}

fn conflict(c: &Check<'_>) -> Option<(&'static str, String)> {
    c.targets_this_cycle.contains(&c.key).then(|| {
        (
            "conflict",
            format!("another action on {} in this cycle", c.key),
        )
    })
}

fn cooldown(c: &Check<'_>) -> Option<(&'static str, String)> {
    let last = c
        .recent
        .iter()
        .filter(|r| r.target == c.key && r.at > c.now - c.policy.cooldown_seconds)
        .map(|r| r.at)
        .max()?;
    Some((
        "cooldown",
        format!(
            "last action on {} {}s ago (cooldown {}s)",
            c.key,
            c.now - last,
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

fn replica_lag(c: &Check<'_>) -> Option<(&'static str, String)> {
    let Action::Switchover {
        lag_seconds,
        instance,
        ..
    } = &c.candidate.intent.action
    else {
        return None;
    };
    let limit = c.policy.max_switchover_lag_seconds;
    (lag_seconds.is_nan() || *lag_seconds > limit).then(|| {
        (
            "replica_lag",
            format!("{instance} lags {lag_seconds}s (limit {limit}s)"),
        )
    })
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
