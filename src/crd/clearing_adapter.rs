//! `ClearingAdapter`: a connector between the payments platform and one
//! clearing or settlement system (SEPA, SWIFT, ACH, …). It runs as a
//! Deployment with its settings in a ConfigMap, the credentials Secret mounted
//! by reference, and a NetworkPolicy that lets it reach only its endpoint.
//!
//! Types only; the reconciler lives in `reconcile`.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    CRON_PATTERN, IMAGE_PATTERN, IMAGE_TAG_MESSAGE, IMAGE_TAG_RULE, Resources, SecretKeyReference,
    TIME_ZONE_PATTERN, UpgradePolicy, VERSION_PATTERN, WorkloadStatus,
};

/// Desired state of a clearing adapter.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "payments.io",
    version = "v1",
    kind = "ClearingAdapter",
    plural = "clearingadapters",
    shortname = "cla",
    category = "payments",
    namespaced,
    status = "ClearingAdapterStatus",
    printcolumn = r#"{"name":"System","type":"string","jsonPath":".spec.system"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.availableReplicas"}"#,
    // A string, not a date: kubectl prints a future `date` as `<invalid>`.
    printcolumn = r#"{"name":"Next cut-off","type":"string","jsonPath":".status.nextCutoffTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(IMAGE_TAG_RULE).message(IMAGE_TAG_MESSAGE).reason(Reason::FieldValueInvalid))]
#[serde(rename_all = "camelCase")]
pub struct ClearingAdapterSpec {
    /// The clearing system this adapter talks to.
    pub system: ClearingSystem,
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
    /// Pod count. Clearing sessions are stateful at the far end, so the
    /// default is 2 for availability rather than throughput.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 20))]
    pub replicas: i32,
    /// Where the clearing system listens.
    pub endpoint: ClearingEndpoint,
    /// Secret holding the adapter's credentials (certificates, API keys). It
    /// is mounted read-only at `/var/run/secrets/clearing`, never copied.
    pub credentials_secret_ref: SecretKeyReference,
    /// When the clearing system stops accepting the day's submissions.
    pub cutoff: CutoffSchedule,
    /// Submissions per second sent to the clearing system, all pods together.
    #[serde(default = "default_rate_limit")]
    #[schemars(range(min = 1, max = 100_000))]
    pub rate_limit_per_second: i32,
    /// Container resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// How version changes roll out, and when they are rolled back.
    #[serde(default)]
    pub upgrade: UpgradePolicy,
}

fn default_image() -> String {
    "ghcr.io/payments/clearing-adapter".into()
}
fn default_replicas() -> i32 {
    2
}
fn default_rate_limit() -> i32 {
    50
}

/// Clearing and settlement systems an adapter can connect to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClearingSystem {
    /// SEPA Credit Transfer (EBA STEP2 or a national CSM).
    #[serde(rename = "SEPA")]
    Sepa,
    /// SEPA Instant Credit Transfer (TIPS, RT1).
    #[serde(rename = "SEPAInstant")]
    SepaInstant,
    /// SWIFT FIN / ISO 20022 messaging.
    #[serde(rename = "SWIFT")]
    Swift,
    /// US Automated Clearing House.
    #[serde(rename = "ACH")]
    Ach,
    /// A real-time gross settlement system (TARGET2, Fedwire, CHAPS).
    #[serde(rename = "RTGS")]
    Rtgs,
    /// UK Faster Payments.
    #[serde(rename = "FPS")]
    FasterPayments,
}

/// The clearing system's endpoint and the network range it resolves to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClearingEndpoint {
    /// URL of the clearing gateway, `https://` or `tls://` only.
    #[schemars(
        regex(pattern = r"^(https|tls)://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$"),
        length(max = 2048)
    )]
    pub url: String,
    /// Address ranges of the endpoint (CIDR). The NetworkPolicy allows egress
    /// to these ranges on the URL's port and nowhere else (DNS excepted).
    #[schemars(length(min = 1, max = 16))]
    pub cidrs: Vec<String>,
}

/// The daily cut-off: after it, submissions roll to the next business day.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CutoffSchedule {
    /// Five-field cron expression of the cut-off times, e.g. `0 16 * * 1-5`.
    #[schemars(regex(pattern = CRON_PATTERN))]
    pub schedule: String,
    /// IANA time zone of the schedule; `UTC` when omitted.
    #[serde(default = "default_time_zone")]
    #[schemars(regex(pattern = TIME_ZONE_PATTERN))]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".into()
}

/// Observed state of a clearing adapter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClearingAdapterStatus {
    /// Phase, replicas, versions and conditions, as for every workload.
    #[serde(flatten)]
    pub workload: WorkloadStatus,
    /// The next cut-off computed from `spec.cutoff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cutoff_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}
