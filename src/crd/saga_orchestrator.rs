//! `SagaOrchestrator`: the coordinator of distributed payment transactions.
//! Each saga is a sequence of steps; a failed step runs the compensations of
//! the steps before it in reverse order. Reconciled into a Deployment, a
//! Service and a ConfigMap holding the validated saga definitions.
//!
//! Types only; the reconciler lives in `reconcile`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    DNS_LABEL_PATTERN, DatabaseReference, IMAGE_PATTERN, IMAGE_TAG_MESSAGE, IMAGE_TAG_RULE,
    MessagingReference, Resources, UpgradePolicy, VERSION_PATTERN, WorkloadStatus,
};

/// Desired state of a saga orchestrator.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "payments.io",
    version = "v1",
    kind = "SagaOrchestrator",
    plural = "sagaorchestrators",
    shortname = "saga",
    category = "payments",
    namespaced,
    status = "WorkloadStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Running","type":"string","jsonPath":".status.currentVersion"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.availableReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(IMAGE_TAG_RULE).message(IMAGE_TAG_MESSAGE).reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct SagaOrchestratorSpec {
    /// Release to run, in semantic versioning; it is the image tag.
    #[schemars(regex(pattern = VERSION_PATTERN))]
    pub version: String,
    /// Container image: a repository (the tag is then `version`), or a
    /// repository with a tag that must be `version`
    /// (`acr.azurecr.io/payment-initiation:1.5.0` with version `1.5.0`),
    /// and/or a digest (`…@sha256:…`, run as written for this version; a
    /// rollback to an earlier version runs `repository:<that version>`).
    #[serde(default = "default_image")]
    #[schemars(regex(pattern = IMAGE_PATTERN), length(max = 255))]
    pub image: String,
    /// Pod count. Orchestrators elect a leader per saga partition, so more
    /// than one replica gives failover, not only throughput.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 50))]
    pub replicas: i32,
    /// CloudNativePG cluster holding the saga log (required: a saga without a
    /// durable log cannot compensate after a crash).
    pub database: DatabaseReference,
    /// Service Bus namespace carrying step commands and replies.
    pub messaging: MessagingReference,
    /// The sagas this orchestrator runs; names are unique.
    #[schemars(length(min = 1, max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub sagas: Vec<SagaDefinition>,
    /// Container resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// How version changes roll out, and when they are rolled back.
    #[serde(default)]
    pub upgrade: UpgradePolicy,
}

fn default_image() -> String {
    "ghcr.io/payments/saga-orchestrator".into()
}
fn default_replicas() -> i32 {
    2
}

/// One saga: an ordered list of steps with compensations.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SagaDefinition {
    /// Saga name, unique within the orchestrator.
    #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// Deadline of the whole saga in seconds; when it passes, compensation starts.
    #[serde(default = "default_saga_timeout")]
    #[schemars(range(min = 1, max = 604_800))]
    pub timeout_seconds: i32,
    /// Steps in execution order; names are unique within the saga.
    #[schemars(length(min = 1, max = 50))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub steps: Vec<SagaStep>,
}

fn default_saga_timeout() -> i32 {
    300
}

/// One step of a saga.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.compensation) || self.final").message("a saga step needs a compensation unless it is marked final"))]
pub struct SagaStep {
    /// Step name, unique within the saga.
    #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 63))]
    pub name: String,
    /// The service that performs the step (a Service name in the namespace).
    #[schemars(regex(pattern = DNS_LABEL_PATTERN), length(min = 1, max = 63))]
    pub service: String,
    /// The command sent to the service, e.g. `ReserveFunds`.
    #[schemars(length(min = 1, max = 128))]
    pub action: String,
    /// The command that undoes the step, e.g. `ReleaseFunds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub compensation: Option<String>,
    /// A step that cannot be undone (e.g. the final capture); nothing after it
    /// may fail in a way that needs compensation.
    #[serde(default)]
    pub r#final: bool,
    /// Deadline of one attempt in seconds.
    #[serde(default = "default_step_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Attempts before the step counts as failed.
    #[serde(default = "default_attempts")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: i32,
}

fn default_step_timeout() -> i32 {
    30
}
fn default_attempts() -> i32 {
    3
}
