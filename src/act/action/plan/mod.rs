//! The planners, one per action kind, grouped by operator, and the context
//! they share. A planner reads the target as the executor fetched it and
//! returns the change, its inverse and what the guards need.
//!
//! Pure: no client, no clock (`now` comes in through [`PlanCtx`]). The
//! dispatch from [`Action`] to planner is `super::plan_action`.

use serde_json::Value;

use super::{Change, Error, KindInfo, Move, Planned, Subresource, kind_info, merge::inverse_merge};
use crate::{decide::Action, detect::ComponentId};

pub mod cnpg;
pub mod operators;
pub mod payments;

/// What every planner reads: which action, its target and the target's API
/// coordinates, the object as read, and `now`.
pub struct PlanCtx<'a> {
    /// The action's name, for error messages.
    pub action: &'static str,
    pub target: &'a ComponentId,
    pub kind: KindInfo,
    pub object: &'a Value,
    pub now: i64,
}

impl<'a> PlanCtx<'a> {
    /// The context for planning `action`, refusing a target kind the action
    /// does not declare in `ActionKind::targets` (or the registry does not
    /// know) — the one unsupported-target check, so the declared targets and
    /// what the planners accept cannot disagree.
    pub fn new(action: &'a Action, object: &'a Value, now: i64) -> Result<Self, Error> {
        let target = action.target();
        let action_kind = action.kind();
        let unsupported = || Error::PlanUnsupportedTarget {
            action: action_kind.name(),
            kind: target.kind.clone(),
        };
        let kind = kind_info(&target.kind).ok_or_else(unsupported)?;
        if !action_kind.targets().contains(&target.kind.as_str()) {
            return Err(unsupported());
        }
        Ok(Self {
            action: action_kind.name(),
            target,
            kind,
            object,
            now,
        })
    }

    pub fn spec(&self) -> &'a Value {
        let object: &'a Value = self.object;
        &object["spec"]
    }

    pub fn status(&self) -> &'a Value {
        let object: &'a Value = self.object;
        &object["status"]
    }

    /// Whether the target is of `kind`, for planners that act differently
    /// per target kind.
    pub fn is(&self, kind: &str) -> bool {
        self.target.kind == kind
    }

    pub fn unsupported(&self) -> Error {
        Error::PlanUnsupportedTarget {
            action: self.action,
            kind: self.target.kind.clone(),
        }
    }

    pub fn missing(&self, field: &str) -> Error {
        Error::PlanMissingField {
            action: self.action,
            field: field.to_string(),
        }
    }

    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::PlanInvalid {
            action: self.action,
            reason: reason.into(),
        }
    }

    pub fn no_change(&self, reason: impl Into<String>) -> Error {
        Error::PlanNoChange {
            action: self.action,
            reason: reason.into(),
        }
    }

    /// A merge patch of the target (or its status).
    pub fn merge_change(&self, subresource: Subresource, patch: Value) -> Change {
        Change::Merge {
            kind: self.kind.clone(),
            namespace: self.target.namespace.clone(),
            name: self.target.name.clone(),
            subresource,
            patch,
        }
    }

    /// A spec/metadata patch and the inverse computed from the object.
    pub fn reversible(&self, patch: Value, disruptive: bool, moves: Vec<Move>) -> Planned {
        Planned {
            inverse: Some(self.merge_change(Subresource::Main, inverse_merge(&patch, self.object))),
            change: self.merge_change(Subresource::Main, patch),
            disruptive,
            moves,
        }
    }

    /// A change that cannot be undone (restart, renewal, refresh, backup).
    pub fn one_shot(&self, change: Change, disruptive: bool) -> Planned {
        Planned {
            change,
            inverse: None,
            disruptive,
            moves: vec![],
        }
    }

    /// `now` as an RFC 3339 timestamp, as the operators write theirs.
    pub fn now_rfc3339(&self) -> String {
        rfc3339(self.now)
    }
}

fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Whether two planned changes are the same change, apart from the time
/// each was planned at: a renewal, refresh, restart, switchover or backup
/// stamps its change with `now` (`lastTransitionTime`, `force-sync`,
/// `restartedAt`, a Backup's name), so two proposals of one renewal a
/// cycle apart differ in nothing else. Where a planner wrote `now`, in
/// either of its forms (RFC 3339, or Unix seconds, alone or within a
/// string), it is read as "the time of planning" on both sides.
pub fn same_change_but_time(a: &Value, a_at: i64, b: &Value, b_at: i64) -> bool {
    a == b || without_time(a, a_at) == without_time(b, b_at)
}

/// `v` with `now`'s forms replaced by a marker.
fn without_time(v: &Value, now: i64) -> Value {
    const MARK: &str = "<planned-at>";
    let (stamp, secs) = (rfc3339(now), now.to_string());
    fn walk(v: &Value, stamp: &str, secs: &str, now: i64) -> Value {
        match v {
            Value::String(s) => Value::String(s.replace(stamp, MARK).replace(secs, MARK)),
            Value::Number(n) if n.as_i64() == Some(now) => Value::String(MARK.into()),
            Value::Array(items) => items.iter().map(|x| walk(x, stamp, secs, now)).collect(),
            Value::Object(fields) => fields
                .iter()
                .map(|(k, x)| (k.clone(), walk(x, stamp, secs, now)))
                .collect(),
            other => other.clone(),
        }
    }
    walk(v, &stamp, &secs, now)
}
