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

/// A container image: a repository (`registry.example.com/payments/gateway`),
/// optionally with a tag (`…/gateway:1.5.0`) and/or a digest
/// (`…/gateway@sha256:…`). A tag must agree with `version` (see
/// [`IMAGE_TAG_RULE`]); without one, `version` is the tag.
pub const IMAGE_PATTERN: &str = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$";

/// The admission rule (CEL, on a spec with `image` and `version`) that
/// refuses an image whose tag is not the version: `…:1.5.0` with version
/// `1.5.0` or `v1.5.0` is accepted, `…:1.4.0` with version `1.5.0` is not.
/// The reconciler checks the same with [`ImageRef::tag_agrees`].
pub const IMAGE_TAG_RULE: &str = "!self.image.split('@')[0].matches(':[^/:]+$') || self.image.split('@')[0].endsWith(':' + self.version) || self.image.split('@')[0].endsWith(':v' + self.version) || (self.version.startsWith('v') && self.image.split('@')[0].endsWith(':' + self.version.substring(1)))";

/// The message of [`IMAGE_TAG_RULE`].
pub const IMAGE_TAG_MESSAGE: &str = "the tag in spec.image must be spec.version: drop the tag (the version is the tag) or change both together";

/// A parsed [`IMAGE_PATTERN`] reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageRef<'a> {
    /// Registry and path, without tag or digest.
    pub repository: &'a str,
    /// The tag, if the image names one.
    pub tag: Option<&'a str>,
    /// `sha256:…`, if the image names a digest.
    pub digest: Option<&'a str>,
}

impl<'a> ImageRef<'a> {
    /// Splits an image into repository, tag and digest. A `:` followed by a
    /// `/` is a registry port, not a tag.
    pub fn parse(image: &'a str) -> Self {
        let (rest, digest) = match image.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (image, None),
        };
        let (repository, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        ImageRef {
            repository,
            tag,
            digest,
        }
    }

    /// Whether the tag (if any) names `version`, allowing a leading `v` on
    /// either side (`v1.5.0` and `1.5.0` are one release).
    pub fn tag_agrees(&self, version: &str) -> bool {
        self.tag
            .is_none_or(|t| t.trim_start_matches('v') == version.trim_start_matches('v'))
    }

    /// The image to run for `version`. The spec's own version runs the image
    /// exactly as written (its digest pins the content); any other version
    /// (a rollback to the last good release) runs `repository:<version>`,
    /// spelled with a leading `v` when the spec's tag is.
    pub fn for_version(&self, spec_version: &str, version: &str) -> String {
        let v_style = self.tag.is_some_and(|t| t.starts_with('v')) && !version.starts_with('v');
        let tag = if v_style {
            format!("v{version}")
        } else {
            version.to_string()
        };
        match self.digest {
            Some(digest) if version == spec_version => match self.tag {
                Some(t) => format!("{}:{t}@{digest}", self.repository),
                None => format!("{}@{digest}", self.repository),
            },
            _ => format!("{}:{tag}", self.repository),
        }
    }
}

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
    /// The last version that completed a rollout and then stayed healthy
    /// for `upgrade.soakSeconds` (the first version of a resource as soon
    /// as its rollout completes: there is nothing older to fall back to);
    /// the target of a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good_version: Option<String>,
    /// Since when `currentVersion`, rolled out but not yet the last good
    /// version, has run healthy; it becomes `lastGoodVersion` once
    /// `upgrade.soakSeconds` have passed. Cleared by a new rollout or a
    /// failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soaking_since: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
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
    /// Seconds a version must run healthy after its rollout completes
    /// before it becomes `status.lastGoodVersion`, the target of a
    /// rollback. A release whose errors show only under traffic is then
    /// rolled back to the version before it, not to itself. 0 makes a
    /// version good as soon as its rollout completes.
    #[serde(default = "default_soak")]
    #[schemars(range(min = 0, max = 86400))]
    pub soak_seconds: i32,
}

impl Default for UpgradePolicy {
    fn default() -> Self {
        Self {
            progress_deadline_seconds: default_progress_deadline(),
            unavailable_tolerance_seconds: default_unavailable_tolerance(),
            auto_rollback: true,
            soak_seconds: default_soak(),
        }
    }
}

fn default_soak() -> i32 {
    300
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

#[cfg(test)]
mod tests {
    use super::ImageRef;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn an_image_splits_into_repository_tag_and_digest() {
        let plain = ImageRef::parse("ghcr.io/payments/gateway");
        assert_eq!(
            (plain.repository, plain.tag, plain.digest),
            ("ghcr.io/payments/gateway", None, None)
        );
        let tagged = ImageRef::parse("acr.azurecr.io/payment-initiation:1.5.0");
        assert_eq!(
            (tagged.repository, tagged.tag),
            ("acr.azurecr.io/payment-initiation", Some("1.5.0"))
        );
        // A registry port is not a tag.
        let port = ImageRef::parse("registry:5000/payments/gateway");
        assert_eq!(
            (port.repository, port.tag),
            ("registry:5000/payments/gateway", None)
        );
        let both = ImageRef::parse(&format!("registry:5000/gw:v2.0.0@{DIGEST}"))
            .for_version("2.0.0", "2.0.0");
        assert_eq!(both, format!("registry:5000/gw:v2.0.0@{DIGEST}"));
    }

    #[test]
    fn a_tag_must_be_the_version_give_or_take_a_leading_v() {
        let tagged = ImageRef::parse("acr.azurecr.io/payment-initiation:1.5.0");
        assert!(tagged.tag_agrees("1.5.0"));
        assert!(tagged.tag_agrees("v1.5.0"));
        assert!(!tagged.tag_agrees("1.5.1"));
        assert!(!tagged.tag_agrees("11.5.0"));
        assert!(ImageRef::parse("acr.azurecr.io/x:v1.5.0").tag_agrees("1.5.0"));
        assert!(ImageRef::parse("acr.azurecr.io/x").tag_agrees("9.9.9"));
        assert!(ImageRef::parse(&format!("acr.azurecr.io/x@{DIGEST}")).tag_agrees("9.9.9"));
    }

    #[test]
    fn the_spec_version_runs_the_image_as_written_and_a_rollback_runs_its_tag() {
        let plain = ImageRef::parse("ghcr.io/payments/gateway");
        assert_eq!(
            plain.for_version("2.4.1", "2.4.1"),
            "ghcr.io/payments/gateway:2.4.1"
        );
        assert_eq!(
            plain.for_version("2.4.1", "2.4.0"),
            "ghcr.io/payments/gateway:2.4.0"
        );
        let tagged = ImageRef::parse("acr.azurecr.io/payment-initiation:1.5.0");
        assert_eq!(
            tagged.for_version("1.5.0", "1.5.0"),
            "acr.azurecr.io/payment-initiation:1.5.0"
        );
        assert_eq!(
            tagged.for_version("1.5.0", "1.4.2"),
            "acr.azurecr.io/payment-initiation:1.4.2"
        );
        let v_tagged = ImageRef::parse("acr.azurecr.io/x:v1.5.0");
        assert_eq!(
            v_tagged.for_version("1.5.0", "1.4.2"),
            "acr.azurecr.io/x:v1.4.2"
        );
        let image = format!("acr.azurecr.io/x@{DIGEST}");
        let pinned = ImageRef::parse(&image);
        assert_eq!(
            pinned.for_version("1.5.0", "1.5.0"),
            format!("acr.azurecr.io/x@{DIGEST}")
        );
        // A digest pins one release only: the rollback runs by tag.
        assert_eq!(
            pinned.for_version("1.5.0", "1.4.2"),
            "acr.azurecr.io/x:1.4.2"
        );
    }
}
