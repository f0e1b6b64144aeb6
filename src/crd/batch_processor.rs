//! `BatchProcessor`: a scheduled batch job (settlement files, reconciliation,
//! reports), reconciled into a CronJob. An annotation starts a one-off run.
//!
//! Types only; the reconciler lives in `reconcile`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    CRON_PATTERN, IMAGE_PATTERN, IMAGE_TAG_MESSAGE, IMAGE_TAG_RULE, Phase, Resources,
    TIME_ZONE_PATTERN, VERSION_PATTERN,
};

/// Annotation that triggers a one-off run: set it to any new value (for
/// example the current time) and the reconciler creates a Job from the
/// CronJob's template, once per distinct value.
pub const RUN_NOW_ANNOTATION: &str = "payments.io/run-now";

/// Desired state of a batch processor.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "payments.io",
    version = "v1",
    kind = "BatchProcessor",
    plural = "batchprocessors",
    shortname = "bproc",
    category = "payments",
    namespaced,
    status = "BatchProcessorStatus",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Last success","type":"date","jsonPath":".status.lastSuccessfulTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(IMAGE_TAG_RULE).message(IMAGE_TAG_MESSAGE).reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct BatchProcessorSpec {
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
    /// Five-field cron expression, e.g. `30 2 * * *` for 02:30 daily.
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: String,
    /// IANA time zone of the schedule; the controller manager's zone when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: Option<String>,
    /// Arguments passed to the batch container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub args: Vec<String>,
    /// Pods of one run working at the same time.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub parallelism: i32,
    /// Successful pods needed for a run to succeed.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub completions: i32,
    /// Retries of a failed pod before the run is marked failed.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 20))]
    pub backoff_limit: i32,
    /// What to do when a run is due while the previous one is still going.
    /// `Forbid` by default: overlapping settlement runs double-book.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Stop scheduling new runs; running ones finish.
    #[serde(default)]
    pub suspend: bool,
    /// Deadline of one run in seconds; the run is failed when it passes.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 1, max = 86_400))]
    pub active_deadline_seconds: i64,
    /// A run that could not start within this many seconds of its schedule is
    /// skipped (counted as missed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86_400))]
    pub starting_deadline_seconds: Option<i64>,
    /// Container resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

fn default_image() -> String {
    "ghcr.io/payments/batch".into()
}
fn one() -> i32 {
    1
}
fn default_backoff_limit() -> i32 {
    3
}
fn default_deadline() -> i64 {
    3600
}

/// CronJob concurrency policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Runs may overlap.
    Allow,
    /// Skip a run while the previous one is active.
    #[default]
    Forbid,
    /// Stop the active run and start the new one.
    Replace,
}

/// Observed state of a batch processor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchProcessorStatus {
    /// One-word summary, printed by `kubectl get`.
    #[serde(default)]
    pub phase: Phase,
    /// Version of the CronJob's job template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// When a run was last scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When a run last completed successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When a run last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_time: Option<Time>,
    /// Failed runs since the last success.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// Runs in progress.
    #[serde(default)]
    pub active_jobs: i32,
    /// The last `payments.io/run-now` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_now: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
