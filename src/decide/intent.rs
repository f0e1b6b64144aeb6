//! The values a runbook proposes: typed actions on one target each, with the
//! reason and the verification the runbook attaches. Plain serializable data;
//! `act` turns them into patches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::ComponentId;

/// One proposed change to one Kubernetes object. The variants are the only
/// things a runbook can ask for; `act::action` knows the patch, the inverse,
/// the RBAC and whether each is disruptive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// `spec.replicas` of PaymentGateway, ClearingAdapter, SagaOrchestrator or
    /// Strimzi KafkaNodePool.
    ScaleReplicas { target: ComponentId, replicas: i64 },
    /// `spec.autoscaling.minReplicas/maxReplicas` of a PaymentGateway.
    ScaleAutoscaling {
        target: ComponentId,
        min_replicas: i64,
        max_replicas: i64,
    },
    /// `spec.resources` (requests/limits) of one of our kinds.
    SetResources {
        target: ComponentId,
        resources: serde_json::Value,
    },
    /// `spec.postgresql.parameters` of a CloudNativePG Cluster.
    SetPostgresParameters {
        target: ComponentId,
        parameters: BTreeMap<String, String>,
    },
    /// CloudNativePG switchover to `instance` (status patch, as `kubectl cnpg
    /// promote`). `lag_seconds` is the candidate's replication lag as observed
    /// by the runbook; the guard refuses a lagging candidate.
    Switchover {
        target: ComponentId,
        instance: String,
        lag_seconds: f64,
    },
    /// `spec.version` of a payments kind back to `status.lastGoodVersion`,
    /// which must equal `to_version` when the patch is built.
    Rollback {
        target: ComponentId,
        to_version: String,
    },
    /// Rolling restart through the `kubectl.kubernetes.io/restartedAt` annotation.
    RollingRestart { target: ComponentId },
    /// cert-manager Certificate: condition `Issuing=True` (what `cmctl renew` does).
    RenewCertificate { target: ComponentId },
    /// External Secrets: the `force-sync` annotation set to the current epoch.
    RefreshExternalSecret { target: ComponentId },
    /// Istio VirtualService: new weights of `spec.http[route].route[*]`, keyed
    /// by destination subset (or host when no subset).
    ShiftTraffic {
        target: ComponentId,
        route: i64,
        weights: BTreeMap<String, i64>,
    },
    /// Argo CD Application: remove `spec.syncPolicy.automated` so no sync
    /// overwrites the agent's change (the inverse restores it).
    PauseSync { target: ComponentId },
    /// Redis Enterprise: `RedisEnterpriseCluster.spec.nodes`, or
    /// `RedisEnterpriseDatabase.spec.memorySize` / `shardCount`.
    ScaleRedis {
        target: ComponentId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nodes: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory_size: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shard_count: Option<i64>,
    },
    /// An on-demand CloudNativePG `Backup` of the target Cluster.
    Backup { target: ComponentId },
}

impl Action {
    /// The object the action changes (for a Backup: the Cluster backed up).
    pub fn target(&self) -> &ComponentId {
        match self {
            Action::ScaleReplicas { target, .. }
            | Action::ScaleAutoscaling { target, .. }
            | Action::SetResources { target, .. }
            | Action::SetPostgresParameters { target, .. }
            | Action::Switchover { target, .. }
            | Action::Rollback { target, .. }
            | Action::RollingRestart { target }
            | Action::RenewCertificate { target }
            | Action::RefreshExternalSecret { target }
            | Action::ShiftTraffic { target, .. }
            | Action::PauseSync { target }
            | Action::ScaleRedis { target, .. }
            | Action::Backup { target } => target,
        }
    }

    /// Stable snake_case name of the action kind (journal column, metric label).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The kind of this action, without its arguments.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::ScaleReplicas { .. } => ActionKind::ScaleReplicas,
            Action::ScaleAutoscaling { .. } => ActionKind::ScaleAutoscaling,
            Action::SetResources { .. } => ActionKind::SetResources,
            Action::SetPostgresParameters { .. } => ActionKind::SetPostgresParameters,
            Action::Switchover { .. } => ActionKind::Switchover,
            Action::Rollback { .. } => ActionKind::Rollback,
            Action::RollingRestart { .. } => ActionKind::RollingRestart,
            Action::RenewCertificate { .. } => ActionKind::RenewCertificate,
            Action::RefreshExternalSecret { .. } => ActionKind::RefreshExternalSecret,
            Action::ShiftTraffic { .. } => ActionKind::ShiftTraffic,
            Action::PauseSync { .. } => ActionKind::PauseSync,
            Action::ScaleRedis { .. } => ActionKind::ScaleRedis,
            Action::Backup { .. } => ActionKind::Backup,
        }
    }
}

/// The kinds of [`Action`], without arguments: what the RBAC, the target
/// kinds and the host functions are declared per. [`ActionKind::ALL`] is
/// derived (strum's `VariantArray`), so it cannot miss a variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, strum::VariantArray)]
pub enum ActionKind {
    ScaleReplicas,
    ScaleAutoscaling,
    SetResources,
    SetPostgresParameters,
    Switchover,
    Rollback,
    RollingRestart,
    RenewCertificate,
    RefreshExternalSecret,
    ShiftTraffic,
    PauseSync,
    ScaleRedis,
    Backup,
}

impl ActionKind {
    /// Every action kind, in declaration order.
    pub const ALL: &'static [ActionKind] = <ActionKind as strum::VariantArray>::VARIANTS;

    /// Stable snake_case name (journal column, metric label); the serde tag
    /// of the matching [`Action`] variant.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::ScaleReplicas => "scale_replicas",
            ActionKind::ScaleAutoscaling => "scale_autoscaling",
            ActionKind::SetResources => "set_resources",
            ActionKind::SetPostgresParameters => "set_postgres_parameters",
            ActionKind::Switchover => "switchover",
            ActionKind::Rollback => "rollback",
            ActionKind::RollingRestart => "rolling_restart",
            ActionKind::RenewCertificate => "renew_certificate",
            ActionKind::RefreshExternalSecret => "refresh_external_secret",
            ActionKind::ShiftTraffic => "shift_traffic",
            ActionKind::PauseSync => "pause_sync",
            ActionKind::ScaleRedis => "scale_redis",
            ActionKind::Backup => "backup",
        }
    }

    /// The Kubernetes kinds an action of this kind may target. The planner
    /// refuses any other (`act::action::plan_action`), and the chart's RBAC
    /// is checked for each, so the list is the contract.
    pub fn targets(self) -> Vec<&'static str> {
        let payments = || crate::kinds::payments_kind_names();
        match self {
            ActionKind::ScaleReplicas => vec![
                "PaymentGateway",
                "ClearingAdapter",
                "SagaOrchestrator",
                "KafkaNodePool",
            ],
            ActionKind::ScaleAutoscaling => vec!["PaymentGateway"],
            ActionKind::SetResources | ActionKind::Rollback => payments().collect(),
            ActionKind::RollingRestart => std::iter::once("Cluster").chain(payments()).collect(),
            ActionKind::SetPostgresParameters | ActionKind::Switchover | ActionKind::Backup => {
                vec!["Cluster"]
            }
            ActionKind::RenewCertificate => vec!["Certificate"],
            ActionKind::RefreshExternalSecret => vec!["ExternalSecret"],
            ActionKind::ShiftTraffic => vec!["VirtualService"],
            ActionKind::PauseSync => vec!["Application"],
            ActionKind::ScaleRedis => vec!["RedisEnterpriseCluster", "RedisEnterpriseDatabase"],
        }
    }
}

/// What should improve after the action, and by when. If the signal is on the
/// wrong side of the threshold at `within_seconds`, the action is undone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Verify {
    /// The signal (as in findings and samples), e.g. `latency_p99`.
    pub signal: String,
    /// `below` or `above`.
    pub expect: Expect,
    pub threshold: f64,
    pub within_seconds: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Below,
    Above,
}

impl Verify {
    /// Whether `value` meets the expectation.
    pub fn is_met(&self, value: f64) -> bool {
        match self.expect {
            Expect::Below => value < self.threshold,
            Expect::Above => value > self.threshold,
        }
    }
}

/// A proposed action with its provenance, as a runbook returns it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Intent {
    /// Runbook name (file stem); filled in by the runtime.
    #[serde(default)]
    pub runbook: String,
    #[serde(flatten)]
    pub action: Action,
    /// Why, for humans (journal, Event message).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
}

impl Intent {
    pub fn new(action: Action) -> Self {
        Self {
            runbook: String::new(),
            action,
            reason: String::new(),
            verify: None,
        }
    }
}

/// How far the agent (or one runbook) may go. Ordered: a runbook pinned to
/// `Recommend` never acts even when the agent runs in `Auto`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Decide and journal; send nothing.
    DryRun,
    /// Also validate with a server-side dry run and keep for approval.
    Recommend,
    /// Act.
    Auto,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::DryRun => "dry-run",
            Mode::Recommend => "recommend",
            Mode::Auto => "auto",
        }
    }

    /// The mode a runbook runs in: its pin, but never above the agent's.
    pub fn effective(agent: Mode, pinned: Option<Mode>) -> Mode {
        pinned.map_or(agent, |p| p.min(agent))
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dry-run" => Ok(Mode::DryRun),
            "recommend" => Ok(Mode::Recommend),
            "auto" => Ok(Mode::Auto),
            other => Err(format!(
                "unknown mode {other:?} (expected dry-run, recommend or auto)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_mode_never_raises_the_agents() {
        assert_eq!(
            Mode::effective(Mode::Auto, Some(Mode::Recommend)),
            Mode::Recommend
        );
        assert_eq!(
            Mode::effective(Mode::DryRun, Some(Mode::Auto)),
            Mode::DryRun
        );
        assert_eq!(Mode::effective(Mode::Recommend, None), Mode::Recommend);
    }

    #[test]
    fn intents_serialize_flat_with_a_tag() {
        let i = Intent::new(Action::ScaleReplicas {
            target: ComponentId {
                kind: "PaymentGateway".into(),
                namespace: "payments".into(),
                name: "gw".into(),
            },
            replicas: 4,
        });
        let v = serde_json::to_value(&i).expect("serializes");
        assert_eq!(v["action"], "scale_replicas");
        assert_eq!(v["replicas"], 4);
        let back: Intent = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, i);
    }
}
