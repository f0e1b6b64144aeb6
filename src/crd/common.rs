//! Types shared by the four `payments.io/v1` kinds: validation patterns, the
//! lifecycle phase, condition constants and small references to other objects.
//!
//! Pure data. Nothing here talks to the API server.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A release version: semantic versioning, with an optional leading `v`
/// (image tags are often written `v2.4.1`).
pub const VERSION_PATTERN: &str = r"^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$";

/// A container image repository without tag or digest (the tag is the
/// version), e.g. `registry.example.com/payments/gateway`.
pub const IMAGE_REPOSITORY_PATTERN: &str =
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$";

/// A five-field cron expression as Kubernetes CronJobs accept it (minute hour
/// day-of-month month day-of-week; numbers, names, `*`, `?`, ranges, steps and
/// lists), or one of the `@hourly`-style macros. The reconciler parses it fully
/// before use; this pattern catches the obvious mistakes at admission.
pub const CRON_PATTERN: &str = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|((\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*[ \t]+){4}(\*|\?|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?(,(\*|[0-9A-Za-z]+(-[0-9A-Za-z]+)?)(/[0-9]+)?)*)$";

/// A DNS-1123 label, the shape of most Kubernetes object names we reference.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// An IANA time zone name such as `Europe/Berlin` or `UTC`.
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z]+(/[A-Za-z0-9_+-]+)*$";

/// Condition types every payments kind reports. Each is documented where the
/// reconciler sets it; the set is fixed so dashboards and alerts can rely on it.
pub mod condition {
    /// `True` when the workload runs the desired version and enough replicas
    /// are available.
    pub const READY: &str = "Ready";
    /// `True` while a rollout or a scale change is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// `True` when the resource cannot reach or keep its desired state: a bad
    /// spec, a failed rollout, too few available replicas.
    pub const DEGRADED: &str = "Degraded";
    /// `True` after an automatic rollback to the last good version; the reason
    /// says why the new version was judged unhealthy.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// `True` when the ServiceMonitor asked for by `monitoring.prometheus` is
    /// applied; `False` with reason `ServiceMonitorCRDMissing` when the
    /// cluster does not serve `monitoring.coreos.com/v1` (the rest of the
    /// resource is reconciled regardless).
    pub const MONITORING: &str = "Monitoring";
}

/// Reasons of the conditions above and of the Events the controllers
/// publish: CamelCase, one constant each, so a reason is spelled once.
pub mod reason {
    /// Ready: the desired version runs with enough available replicas.
    pub const AVAILABLE: &str = "Available";
    /// Degraded is False: nothing is wrong.
    pub const HEALTHY: &str = "Healthy";
    /// The upgrade gate (the detectors) judged the new version unhealthy.
    pub const UNHEALTHY_UPGRADE: &str = "UnhealthyUpgrade";
    /// The Deployment missed its progress deadline.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// Fewer available replicas than the minimum, past the tolerance.
    pub const INSUFFICIENT_REPLICAS: &str = "InsufficientReplicas";
    /// The rollout of the desired version failed.
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    /// Ready is False while the new version rolls out.
    pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
    /// Progressing is False: the rollout finished.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// Progressing while the last good version is re-applied.
    pub const ROLLING_BACK: &str = "RollingBack";
    /// Progressing while a new version rolls out.
    pub const NEW_VERSION: &str = "NewVersion";
    /// Progressing while the replica count changes.
    pub const SCALING: &str = "Scaling";
    /// The last good version was re-applied after a failed rollout (condition and Event).
    pub const ROLLED_BACK: &str = "RolledBack";
    /// The spec cannot be realised; nothing was applied (condition and Event).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Monitoring: the ServiceMonitor is applied.
    pub const SERVICE_MONITOR_APPLIED: &str = "ServiceMonitorApplied";
    /// Monitoring: the cluster does not serve monitoring.coreos.com/v1 ServiceMonitor.
    pub const SERVICE_MONITOR_CRD_MISSING: &str = "ServiceMonitorCRDMissing";
    /// Event: spec.version changed.
    pub const NEW_VERSION_SPECIFIED: &str = "NewVersionSpecified";
    /// Event: the phase changed.
    pub const PHASE_CHANGED: &str = "PhaseChanged";
    /// Event: the new version is running and available.
    pub const UPGRADE_SUCCEEDED: &str = "UpgradeSucceeded";
    /// Event: a BatchProcessor run failed.
    pub const RUN_FAILED: &str = "RunFailed";
    /// Event: a BatchProcessor run-now Job was created.
    pub const RUN_TRIGGERED: &str = "RunTriggered";
    /// Event: a failed rollout's automatic rollback waits (the kill switch,
    /// or an unreadable guard policy).
    pub const ROLLBACK_HELD: &str = "RollbackHeld";
    /// Ready False and Degraded True (condition and Event): an object with
    /// the name of one this resource owns is someone else's (no controller
    /// ownerReference, or another one). It is left as it is, and what
    /// depends on it is held back until the name is free.
    pub const OWNED_OBJECT_CONFLICT: &str = "OwnedObjectConflict";
    /// BatchProcessor Ready: the schedule is suspended.
    pub const SUSPENDED: &str = "Suspended";
    /// BatchProcessor Ready: runs start on the schedule.
    pub const SCHEDULED: &str = "Scheduled";
    /// BatchProcessor Progressing: a run is in progress.
    pub const JOB_RUNNING: &str = "JobRunning";
    /// BatchProcessor Progressing is False: no run in progress.
    pub const IDLE: &str = "Idle";
}

/// Where a payments resource is in its life. `Ready` and `Degraded` mirror the
/// conditions of the same name; the phase is the one-word summary printed by
/// `kubectl get`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing applied yet.
    #[default]
    Pending,
    /// Owned objects applied; a rollout or scale change is in progress.
    Progressing,
    /// Desired version running with enough available replicas.
    Ready,
    /// Running, but not as desired (too few replicas, rolled back, …).
    Degraded,
    /// The spec cannot be realised as written; see the `Degraded` condition.
    Failed,
}

/// A reference to a key of a Secret in the resource's own namespace. The
/// Secret is mounted or referenced, never copied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyReference {
    /// Name of the Secret.
    #[schemars(regex(pattern = DNS_SUBDOMAIN_PATTERN), length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret; the whole Secret is used when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// A DNS-1123 subdomain (Secret and ConfigMap names).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A CloudNativePG `Cluster` in the same namespace. Applications connect to
/// its read-write service `<clusterName>-rw`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseReference {
    /// Name of the CloudNativePG `Cluster`.
    #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 50))]
    pub cluster_name: String,
    /// Database name inside the cluster; defaults to `app` (CloudNativePG's
    /// default bootstrap database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub database: Option<String>,
}

/// An Azure Service Bus namespace managed by Azure Service Operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagingReference {
    /// Name of the Service Bus namespace (Azure's rules: 6–50 characters,
    /// letters, digits and hyphens, starting with a letter).
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]$"))]
    pub service_bus_namespace: String,
}

/// Resource requests and limits of the workload's container, as in a Pod spec.
pub type Resources = k8s_openapi::api::core::v1::ResourceRequirements;

/// The status every long-running payments workload (Deployment-backed) reports.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// One-word summary, printed by `kubectl get`.
    #[serde(default)]
    pub phase: Phase,
    /// Pods of the workload that are available (ready for at least
    /// `minReadySeconds`).
    #[serde(default)]
    pub available_replicas: i32,
    /// The version the pods run now. It differs from `spec.version` during a
    /// rollout and after an automatic rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// The last version that completed a rollout healthily; the target of an
    /// automatic rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_version: Option<String>,
    /// A version that failed its rollout and was rolled back; it is not retried
    /// until `spec.version` changes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_version: Option<String>,
    /// Since when fewer replicas than desired have been available; cleared
    /// when enough are. A rollout that stays below the minimum longer than
    /// `upgrade.unavailableToleranceSeconds` has failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below_minimum_since: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded` and `RolledBack`, with
    /// `observedGeneration` and a stable `lastTransitionTime`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// How a version change is rolled out and judged.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePolicy {
    /// Seconds a rollout may go without progress before it counts as failed
    /// (the Deployment's `progressDeadlineSeconds`).
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 5, max = 3600))]
    pub progress_deadline_seconds: i32,
    /// Seconds the available replicas may stay below the desired count during
    /// a rollout before it counts as failed.
    #[serde(default = "default_unavailable_tolerance")]
    #[schemars(range(min = 5, max = 3600))]
    pub unavailable_tolerance_seconds: i32,
    /// Roll back to `status.lastGoodVersion` when a rollout fails. When false
    /// a failed rollout is reported as `Degraded` and left for a human.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
}

impl Default for UpgradePolicy {
    fn default() -> Self {
        Self {
            progress_deadline_seconds: default_progress_deadline(),
            unavailable_tolerance_seconds: default_unavailable_tolerance(),
            auto_rollback: true,
        }
    }
}

fn default_progress_deadline() -> i32 {
    600
}
fn default_unavailable_tolerance() -> i32 {
    300
}
fn default_true() -> bool {
    true
}
