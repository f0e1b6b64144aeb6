//! `PaymentGateway`: the customer-facing payments API. One resource replaces
//! the Deployment, Service, HorizontalPodAutoscaler, ServiceMonitor and
//! ConfigMap that used to be written by hand.
//!
//! Types only; the reconciler lives in `reconcile`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    DatabaseReference, IMAGE_PATTERN, IMAGE_TAG_MESSAGE, IMAGE_TAG_RULE, MessagingReference,
    Resources, UpgradePolicy, VERSION_PATTERN, WorkloadStatus,
};

/// Desired state of a payment gateway.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "payments.io",
    version = "v1",
    kind = "PaymentGateway",
    plural = "paymentgateways",
    shortname = "pgw",
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
pub struct PaymentGatewaySpec {
    /// Release to run, in semantic versioning (`2.4.1` or `v2.4.1`). It is the
    /// image tag. Changing it starts a health-gated rolling upgrade.
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
    /// Pod count when autoscaling is off. Ignored while `autoscaling.enabled`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 200))]
    pub replicas: i32,
    /// Horizontal pod autoscaling on CPU utilisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Application settings, rendered into the gateway's ConfigMap.
    #[serde(default)]
    pub config: GatewayConfig,
    /// Metrics scraping and distributed tracing.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// Container resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// How version changes roll out, and when they are rolled back.
    #[serde(default)]
    pub upgrade: UpgradePolicy,
}

fn default_image() -> String {
    "ghcr.io/payments/gateway".into()
}

fn default_replicas() -> i32 {
    2
}

/// HorizontalPodAutoscaler settings (`autoscaling/v2`, CPU utilisation).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must not exceed autoscaling.maxReplicas").reason(Reason::FieldValueInvalid))]
pub struct Autoscaling {
    /// Create an HPA; when false the Deployment carries `replicas`.
    #[serde(default)]
    pub enabled: bool,
    /// Lower bound of the HPA.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 200))]
    pub min_replicas: i32,
    /// Upper bound of the HPA.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 200))]
    pub max_replicas: i32,
    /// Target average CPU utilisation, in percent of the request.
    #[serde(default = "default_target_cpu", rename = "targetCPU")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu: i32,
}

fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    10
}
fn default_target_cpu() -> i32 {
    70
}

/// Settings the gateway reads at start-up.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayConfig {
    /// The CloudNativePG cluster holding payment records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseReference>,
    /// The Azure Service Bus namespace for payment events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messaging: Option<MessagingReference>,
    /// The Redis Enterprise database used for idempotency keys and sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisReference>,
    /// Feature switches and limits.
    #[serde(default)]
    pub features: Features,
}

/// A Redis Enterprise database (`RedisEnterpriseDatabase`) in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisReference {
    /// Name of the Redis Enterprise database; its Service has the same name.
    #[schemars(regex(pattern = super::common::DNS_LABEL_PATTERN), length(min = 1, max = 63))]
    pub cluster_name: String,
}

/// Feature switches of the gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// Score every payment with the fraud-detection service before capture.
    #[serde(default)]
    pub enable_fraud_detection: bool,
    /// Requests per second accepted per pod before the gateway answers 429.
    #[serde(default = "default_rate_limit")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub rate_limit_per_second: i32,
}

impl Default for Features {
    fn default() -> Self {
        Self {
            enable_fraud_detection: false,
            rate_limit_per_second: default_rate_limit(),
        }
    }
}

fn default_rate_limit() -> i32 {
    1000
}

/// Observability settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// Prometheus scraping through a Prometheus Operator ServiceMonitor.
    #[serde(default)]
    pub prometheus: PrometheusMonitoring,
    /// Distributed tracing.
    #[serde(default)]
    pub tracing: Tracing,
}

/// Prometheus scraping.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusMonitoring {
    /// Create a ServiceMonitor for the gateway's `/metrics` port.
    #[serde(default)]
    pub enabled: bool,
}

/// Distributed tracing (OTLP or Jaeger collector).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.jaegerEndpoint)").message("monitoring.tracing.jaegerEndpoint is required when tracing is enabled").reason(Reason::FieldValueRequired))]
pub struct Tracing {
    /// Export spans from the gateway.
    #[serde(default)]
    pub enabled: bool,
    /// Collector URL. The port says the protocol the gateway exports with
    /// (set as OpenTelemetry SDK variables in its ConfigMap): `4318` (or any
    /// other port) OTLP over HTTP, `4317` OTLP over gRPC, `14268` Jaeger's
    /// Thrift-over-HTTP collector (`/api/traces` is added). Prefer OTLP:
    /// Jaeger ≥ 1.35 serves it on 4317/4318.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"), length(max = 2048))]
    pub jaeger_endpoint: Option<String>,
}
