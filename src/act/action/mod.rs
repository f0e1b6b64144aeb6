//! Typed actions → patches (pure). For each action kind: the target kinds it
//! accepts, the change it sends, the inverse that undoes it, whether it is
//! disruptive, how far it moves a value (for the cap guard) and the RBAC it
//! needs. How each operator is acted on follows `../shared/OPERATORS.md`.
//!
//! Pure: takes the action, the target object as read, and `now`; returns a
//! [`Planned`] change. Never talks to the API server.
//!
//! Layout: this file holds the types, the dispatch [`plan_action`] and the
//! RBAC; `plan/` one planner per action kind, grouped by operator
//! (`payments`, `cnpg`, `operators`); `cnpg` CloudNativePG's parameter
//! tables; `merge` the JSON merge-patch helpers.
//!
//! Adding an action kind (each step is enforced):
//! 1. a variant of [`Action`] and of [`ActionKind`] in `decide/intent.rs`,
//!    with its name and [`ActionKind::targets`] — `Action::kind`, `name` and
//!    `targets` match exhaustively, so the compiler asks;
//! 2. its planner `plan_<action>(ctx, …)` in `plan/`, called from
//!    [`plan_action`] — an exhaustive match;
//! 3. its RBAC row in [`rbac_for`] — an exhaustive match; the chart test
//!    checks `deploy/templates/rbac.yaml` grants it for every target;
//! 4. its host function in `HOST_API` (`decide/api/host.rs`), with
//!    `produces: Some(ActionKind::…)` — a test fails for an action kind no
//!    host function produces, or an example that produces another kind.

use serde::{Deserialize, Serialize};
use serde_json::Value;
// The sibling tests build objects with `json!` through `use super::*`.
#[cfg(test)]
use serde_json::json;

use crate::decide::{Action, ActionKind};

mod cnpg;
mod merge;
mod plan;

pub use cnpg::{CNPG_FORBIDDEN_PARAMETERS, PG_RESTART_PARAMETERS, needs_restart};
pub use merge::{inverse_merge, merge, patch_is_applied};
use plan::PlanCtx;
pub use plan::same_change_but_time;

/// Annotation put on every object the agent patches, naming the journal
/// entry of the last action — how a restart tells "sent" from "not sent".
pub const ACTION_ID_ANNOTATION: &str = "autopilot.payments.io/action-id";

pub use crate::kinds::{KindInfo, RbacRule, kind_info};

/// Which part of the object a change goes to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Subresource {
    Main,
    Status,
}

/// One write, as journaled and sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A JSON merge patch of the object (or its status), sent with the
    /// resourceVersion it was computed from (optimistic locking).
    Merge {
        kind: KindInfo,
        namespace: String,
        name: String,
        subresource: Subresource,
        patch: Value,
    },
    /// A new object (an on-demand Backup).
    Create { kind: KindInfo, object: Value },
}

impl Change {
    pub fn kind(&self) -> &KindInfo {
        match self {
            Change::Merge { kind, .. } | Change::Create { kind, .. } => kind,
        }
    }
}

/// How far an action moves one numeric value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Move {
    pub field: String,
    pub from: f64,
    pub to: f64,
}

/// A planned action: the change, its inverse, and what the guards need.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Planned {
    pub change: Change,
    /// `None` when the action cannot be undone (restart, renewal, refresh, backup).
    pub inverse: Option<Change>,
    pub disruptive: bool,
    pub moves: Vec<Move>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} cannot act on a {kind}")]
    PlanUnsupportedTarget { action: &'static str, kind: String },
    #[error("planning {action}: the target has no {field}")]
    PlanMissingField { action: &'static str, field: String },
    #[error("planning set_postgres_parameters: CloudNativePG does not allow setting {parameter}")]
    PlanForbiddenParameter { parameter: String },
    #[error("planning switchover: {reason}")]
    PlanSwitchover { reason: String },
    #[error("planning {action}: {reason}")]
    PlanInvalid {
        action: &'static str,
        reason: String,
    },
    #[error("planning {action}: nothing to change ({reason})")]
    PlanNoChange {
        action: &'static str,
        reason: String,
    },
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::PlanUnsupportedTarget { .. } => "unsupported_target",
            Error::PlanMissingField { .. } => "missing_field",
            Error::PlanForbiddenParameter { .. } => "forbidden_parameter",
            Error::PlanSwitchover { .. } => "switchover_refused",
            Error::PlanInvalid { .. } => "invalid_action",
            Error::PlanNoChange { .. } => "no_change",
        }
    }
}

/// Plans `action` against the target `object` as read from the cluster:
/// checks the target kind, then hands over to the action's planner.
pub fn plan_action(action: &Action, object: &Value, now: i64) -> Result<Planned, Error> {
    let ctx = PlanCtx::new(action, object, now)?;
    match action {
        Action::ScaleReplicas { replicas, .. } => {
            plan::payments::plan_scale_replicas(&ctx, *replicas)
        }
        Action::ScaleAutoscaling {
            min_replicas,
            max_replicas,
            ..
        } => plan::payments::plan_scale_autoscaling(&ctx, *min_replicas, *max_replicas),
        Action::SetResources { resources, .. } => {
            plan::payments::plan_set_resources(&ctx, resources)
        }
        Action::Rollback { to_version, .. } => plan::payments::plan_rollback(&ctx, to_version),
        Action::RollingRestart { .. } => plan::payments::plan_rolling_restart(&ctx),
        Action::SetPostgresParameters { parameters, .. } => {
            plan::cnpg::plan_set_postgres_parameters(&ctx, parameters)
        }
        Action::Switchover { instance, .. } => plan::cnpg::plan_switchover(&ctx, instance),
        Action::Backup { .. } => plan::cnpg::plan_backup(&ctx),
        Action::RenewCertificate { .. } => plan::operators::plan_renew_certificate(&ctx),
        Action::RefreshExternalSecret { .. } => plan::operators::plan_refresh_external_secret(&ctx),
        Action::ShiftTraffic { route, weights, .. } => {
            plan::operators::plan_shift_traffic(&ctx, *route, weights)
        }
        Action::PauseSync { .. } => plan::operators::plan_pause_sync(&ctx),
        Action::ScaleRedis {
            nodes,
            memory_size,
            shard_count,
            ..
        } => plan::operators::plan_scale_redis(&ctx, *nodes, memory_size.as_deref(), *shard_count),
    }
}

/// The RBAC rules `action` needs (for the chart's ClusterRole and for
/// `autopilot actions show`).
pub fn rbac(action: &Action) -> Vec<RbacRule> {
    rbac_for(action.kind(), &action.target().kind)
}

/// The RBAC rules an action of `kind` needs on a `target_kind` object; none
/// for a kind the registry does not know. Matched without a wildcard arm, so
/// a new action kind states its RBAC before it compiles.
pub fn rbac_for(kind: ActionKind, target_kind: &str) -> Vec<RbacRule> {
    let Some(k) = kind_info(target_kind) else {
        return Vec::new();
    };
    let rule = |resource: String, verbs: Vec<&'static str>| RbacRule {
        group: k.group.clone(),
        resource,
        verbs,
    };
    match kind {
        // Status subresource patches.
        ActionKind::Switchover | ActionKind::RenewCertificate => vec![
            rule(k.plural.clone(), vec!["get"]),
            rule(format!("{}/status", k.plural), vec!["get", "patch"]),
        ],
        // A new Backup object in the Cluster's API group.
        ActionKind::Backup => vec![
            rule(k.plural.clone(), vec!["get"]),
            rule("backups".into(), vec!["get", "create"]),
        ],
        // Merge patches of the object itself.
        ActionKind::ScaleReplicas
        | ActionKind::ScaleAutoscaling
        | ActionKind::SetResources
        | ActionKind::SetPostgresParameters
        | ActionKind::Rollback
        | ActionKind::RollingRestart
        | ActionKind::RefreshExternalSecret
        | ActionKind::ShiftTraffic
        | ActionKind::PauseSync
        | ActionKind::ScaleRedis => vec![rule(k.plural.clone(), vec!["get", "patch"])],
    }
}

#[cfg(test)]
mod tests;
