//! PaymentGateway → ConfigMap, Deployment, Service, HPA (autoscaling),
//! ServiceMonitor (monitoring). Validation and planning, both pure.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::json;

use super::{
    Facts, Invalid, WorkloadKind,
    conditions::Desired as DesiredCondition,
    objects::{self, Identity, Workload},
};
use crate::{
    act::{Desired, OwnedObjects},
    crd::{
        PaymentGateway, PaymentGatewaySpec, WorkloadStatus, common::UpgradePolicy, condition,
        reason,
    },
};

pub const COMPONENT: &str = "payment-gateway";

/// A spec that passed the checks the schema cannot express (or that an older
/// CRD did not enforce).
#[derive(Debug)]
pub struct Validated<'a>(&'a PaymentGatewaySpec);

pub fn validate(spec: &PaymentGatewaySpec) -> Result<Validated<'_>, Invalid> {
    objects::check_image(&spec.image, &spec.version)?;
    if let Some(a) = spec.autoscaling.as_ref().filter(|a| a.enabled)
        && a.min_replicas > a.max_replicas
    {
        return Err(Invalid::new(
            "spec.autoscaling",
            format!(
                "minReplicas {} exceeds maxReplicas {}",
                a.min_replicas, a.max_replicas
            ),
        ));
    }
    if spec.monitoring.tracing.enabled && spec.monitoring.tracing.jaeger_endpoint.is_none() {
        return Err(Invalid::new(
            "spec.monitoring.tracing.jaegerEndpoint",
            "required when tracing is enabled",
        ));
    }
    Ok(Validated(spec))
}

/// The application configuration, as environment variables.
pub fn config_data(name: &str, spec: &PaymentGatewaySpec) -> BTreeMap<String, String> {
    let mut d = BTreeMap::new();
    let c = &spec.config;
    if let Some(db) = &c.database {
        d.insert("DATABASE_HOST".into(), format!("{}-rw", db.cluster_name));
        d.insert("DATABASE_PORT".into(), "5432".into());
        d.insert(
            "DATABASE_NAME".into(),
            db.database.clone().unwrap_or_else(|| "app".into()),
        );
    }
    if let Some(r) = &c.redis {
        d.insert("REDIS_HOST".into(), r.cluster_name.clone());
    }
    if let Some(m) = &c.messaging {
        d.insert(
            "SERVICEBUS_NAMESPACE".into(),
            m.service_bus_namespace.clone(),
        );
        d.insert(
            "SERVICEBUS_ENDPOINT".into(),
            format!("sb://{}.servicebus.windows.net/", m.service_bus_namespace),
        );
    }
    d.insert(
        "FEATURE_FRAUD_DETECTION".into(),
        c.features.enable_fraud_detection.to_string(),
    );
    d.insert(
        "RATE_LIMIT_PER_SECOND".into(),
        c.features.rate_limit_per_second.to_string(),
    );
    let t = &spec.monitoring.tracing;
    d.insert("TRACING_ENABLED".into(), t.enabled.to_string());
    if let (true, Some(endpoint)) = (t.enabled, &t.jaeger_endpoint) {
        d.extend(tracing_env(endpoint));
        d.insert("OTEL_SERVICE_NAME".into(), name.to_string());
    }
    d
}

/// The OpenTelemetry SDK settings for a collector endpoint, by the protocol
/// its port speaks in Jaeger's and OpenTelemetry's defaults: 14268 is
/// Jaeger's Thrift-over-HTTP collector (`/api/traces`), which an OTLP
/// exporter cannot talk to; 4317 is OTLP over gRPC; anything else is taken
/// as OTLP over HTTP (4318).
pub fn tracing_env(endpoint: &str) -> BTreeMap<String, String> {
    let endpoint = endpoint.trim_end_matches('/');
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let port = authority.rsplit_once(':').map(|(_, p)| p);
    let pairs: Vec<(&str, String)> = match port {
        Some("14268") => {
            let url = if endpoint.ends_with("/api/traces") {
                endpoint.to_string()
            } else {
                format!("{endpoint}/api/traces")
            };
            vec![
                ("OTEL_TRACES_EXPORTER", "jaeger".into()),
                ("OTEL_EXPORTER_JAEGER_PROTOCOL", "http/thrift.binary".into()),
                ("OTEL_EXPORTER_JAEGER_ENDPOINT", url.clone()),
                // Jaeger's own client libraries read this one.
                ("JAEGER_ENDPOINT", url),
            ]
        }
        Some("4317") => vec![
            ("OTEL_TRACES_EXPORTER", "otlp".into()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        ],
        _ => vec![
            ("OTEL_TRACES_EXPORTER", "otlp".into()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        ],
    };
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Database credentials come from the Secret CloudNativePG creates for the
/// application user (`<cluster>-app`), referenced, never copied.
pub fn database_env(spec: &PaymentGatewaySpec) -> Vec<serde_json::Value> {
    spec.config
        .database
        .iter()
        .flat_map(|db| {
            let secret = format!("{}-app", db.cluster_name);
            [("DATABASE_USER", "username"), ("DATABASE_PASSWORD", "password")].map(|(env, key)| {
                json!({"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": true}}})
            })
        })
        .collect()
}

pub fn plan(
    id: &Identity,
    v: &Validated<'_>,
    facts: &Facts,
    target_version: &str,
) -> Result<OwnedObjects, objects::Error> {
    let spec = v.0;
    let data = config_data(&id.name, spec);
    let autoscaling = spec.autoscaling.as_ref().filter(|a| a.enabled);
    // With an HPA, carry the live replica count so that applying without the
    // field never drops the Deployment to its default of one pod.
    let replicas = match autoscaling {
        Some(a) => Some(
            facts
                .live_replicas
                .unwrap_or(a.min_replicas)
                .clamp(a.min_replicas, a.max_replicas),
        ),
        None => Some(spec.replicas),
    };
    let workload = Workload {
        container: "gateway",
        image: objects::image_ref(&spec.image, &spec.version, target_version),
        version: target_version,
        replicas,
        config_hash: objects::config_hash(&data),
        env: database_env(spec),
        volumes: vec![json!({"name": "tmp", "emptyDir": {}})],
        volume_mounts: vec![json!({"name": "tmp", "mountPath": "/tmp"})],
        resources: spec.resources.as_ref(),
        progress_deadline_seconds: spec.upgrade.progress_deadline_seconds,
    };
    let hpa = match autoscaling {
        Some(a) => Desired::Apply(objects::typed::<HorizontalPodAutoscaler>(
            "HorizontalPodAutoscaler",
            json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": id.metadata(target_version),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": id.name},
                    "minReplicas": a.min_replicas,
                    "maxReplicas": a.max_replicas,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": a.target_cpu}}}],
                },
            }),
        )?),
        None => Desired::Absent,
    };
    let service_monitor = match (
        spec.monitoring.prometheus.enabled,
        facts.service_monitor_served,
    ) {
        (true, true) => Desired::Apply(objects::typed(
            "ServiceMonitor",
            json!({
                "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": id.metadata(target_version),
                "spec": {
                    "selector": {"matchLabels": id.selector()},
                    "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
                },
            }),
        )?),
        (false, true) => Desired::Absent,
        (_, false) => Desired::Unmanaged,
    };
    Ok(OwnedObjects {
        config_map: Desired::Apply(objects::config_map(id, target_version, &data)?),
        deployment: Desired::Apply(objects::deployment(id, &workload)?),
        service: Desired::Apply(objects::service(id, target_version)?),
        hpa,
        network_policy: Desired::Unmanaged,
        cron_job: Desired::Unmanaged,
        job: Desired::Unmanaged,
        service_monitor,
    })
}

/// The `Monitoring` condition, when monitoring is asked for.
pub fn monitoring_condition(
    spec: &PaymentGatewaySpec,
    facts: &Facts,
) -> Option<super::conditions::Desired<'static>> {
    spec.monitoring.prometheus.enabled.then(|| {
        if facts.service_monitor_served {
            super::conditions::Desired {
                type_: condition::MONITORING,
                status: true,
                reason: reason::SERVICE_MONITOR_APPLIED,
                message: "ServiceMonitor applied".into(),
            }
        } else {
            super::conditions::Desired {
                type_: condition::MONITORING,
                status: false,
                reason: reason::SERVICE_MONITOR_CRD_MISSING,
                message: "monitoring.coreos.com/v1 ServiceMonitor is not served by this cluster; install the Prometheus Operator CRDs to scrape this gateway".into(),
            }
        }
    })
}

impl WorkloadKind for PaymentGateway {
    type Validated<'a> = Validated<'a>;
    const COMPONENT: &'static str = COMPONENT;
    const MAY_OWN_SERVICE_MONITOR: bool = true;

    fn spec_version(&self) -> &str {
        &self.spec.version
    }
    fn upgrade_policy(&self) -> &UpgradePolicy {
        &self.spec.upgrade
    }
    fn workload_status(&self) -> WorkloadStatus {
        self.status.clone().unwrap_or_default()
    }
    fn validate(&self) -> Result<Validated<'_>, Invalid> {
        validate(&self.spec)
    }
    fn plan(
        v: &Validated<'_>,
        id: &Identity,
        facts: &Facts,
        target: &str,
    ) -> Result<OwnedObjects, objects::Error> {
        plan(id, v, facts, target)
    }
    fn extra_conditions(&self, facts: &Facts) -> Vec<DesiredCondition<'static>> {
        monitoring_condition(&self.spec, facts)
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::objects::test_identity;

    fn spec(yaml: &str) -> PaymentGatewaySpec {
        serde_yaml::from_str(yaml).expect("spec")
    }

    const SEED: &str = r#"
version: "2.4.1"
replicas: 3
autoscaling: {enabled: true, minReplicas: 3, maxReplicas: 20, targetCPU: 70}
config:
  database: {clusterName: payments-db}
  messaging: {serviceBusNamespace: payments-bus-prod}
  redis: {clusterName: payments-cache}
  features: {enableFraudDetection: true, rateLimitPerSecond: 1000}
monitoring:
  prometheus: {enabled: true}
  tracing: {enabled: true, jaegerEndpoint: "http://jaeger:4318"}
"#;

    fn facts(served: bool, live: Option<i32>) -> Facts {
        Facts {
            service_monitor_served: served,
            live_replicas: live,
        }
    }

    #[test]
    fn seed_gateway_plans_all_five_objects_wired_together() {
        let s = spec(SEED);
        let id = test_identity(COMPONENT, "payment-gateway");
        let v = validate(&s).expect("valid");
        let owned = plan(&id, &v, &facts(true, None), "2.4.1").expect("plan");
        let Desired::Apply(cm) = owned.config_map else {
            panic!("config map")
        };
        let data = cm.data.expect("data");
        assert_eq!(data["DATABASE_HOST"], "payments-db-rw");
        assert_eq!(data["REDIS_HOST"], "payments-cache");
        assert_eq!(
            data["SERVICEBUS_ENDPOINT"],
            "sb://payments-bus-prod.servicebus.windows.net/"
        );
        assert_eq!(data["FEATURE_FRAUD_DETECTION"], "true");
        assert_eq!(data["RATE_LIMIT_PER_SECOND"], "1000");
        assert_eq!(data["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://jaeger:4318");

        let Desired::Apply(d) = owned.deployment else {
            panic!("deployment")
        };
        let dspec = d.spec.expect("spec");
        // HPA owns scaling: the deployment starts at the HPA minimum.
        assert_eq!(dspec.replicas, Some(3));
        let tmpl = dspec.template;
        let hash = tmpl.metadata.expect("meta").annotations.expect("ann")
            [objects::CONFIG_HASH_ANNOTATION]
            .clone();
        assert_eq!(hash, objects::config_hash(&data));
        let c = &tmpl.spec.expect("pod").containers[0];
        assert_eq!(
            c.env_from.as_ref().expect("envFrom")[0]
                .config_map_ref
                .as_ref()
                .expect("ref")
                .name,
            "payment-gateway"
        );
        let secret_env = c.env.as_ref().expect("env");
        assert_eq!(
            secret_env[0]
                .value_from
                .as_ref()
                .expect("from")
                .secret_key_ref
                .as_ref()
                .expect("ref")
                .name,
            "payments-db-app"
        );

        let Desired::Apply(hpa) = owned.hpa else {
            panic!("hpa")
        };
        let hspec = hpa.spec.expect("spec");
        assert_eq!((hspec.min_replicas, hspec.max_replicas), (Some(3), 20));
        assert_eq!(hspec.scale_target_ref.name, "payment-gateway");
        let Desired::Apply(sm) = owned.service_monitor else {
            panic!("service monitor")
        };
        assert_eq!(
            sm.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
            "payment-gateway"
        );
        assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "metrics");
    }

    #[test]
    fn config_change_changes_the_pod_template_hash() {
        let a = spec(SEED);
        let mut b = a.clone();
        b.config.features.rate_limit_per_second = 2000;
        let id = test_identity(COMPONENT, "gw");
        let hash = |s: &PaymentGatewaySpec| {
            let o = plan(
                &id,
                &validate(s).expect("valid"),
                &facts(true, None),
                "2.4.1",
            )
            .expect("plan");
            let Desired::Apply(d) = o.deployment else {
                panic!()
            };
            d.spec
                .expect("spec")
                .template
                .metadata
                .expect("m")
                .annotations
                .expect("a")[objects::CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn without_autoscaling_the_deployment_carries_replicas_and_the_hpa_goes() {
        let mut s = spec(SEED);
        s.autoscaling = None;
        let o = plan(
            &test_identity(COMPONENT, "gw"),
            &validate(&s).expect("v"),
            &facts(true, Some(7)),
            "2.4.1",
        )
        .expect("plan");
        let Desired::Apply(d) = o.deployment else {
            panic!()
        };
        assert_eq!(d.spec.expect("spec").replicas, Some(3));
        assert_eq!(o.hpa, Desired::Absent);
    }

    #[test]
    fn with_autoscaling_the_live_replica_count_is_kept_within_bounds() {
        let s = spec(SEED);
        let id = test_identity(COMPONENT, "gw");
        for (live, expected) in [(Some(7), 7), (Some(1), 3), (Some(50), 20)] {
            let o =
                plan(&id, &validate(&s).expect("v"), &facts(true, live), "2.4.1").expect("plan");
            let Desired::Apply(d) = o.deployment else {
                panic!()
            };
            assert_eq!(
                d.spec.expect("spec").replicas,
                Some(expected),
                "live {live:?}"
            );
        }
    }

    #[test]
    fn service_monitor_follows_the_crd_and_the_switch() {
        let mut s = spec(SEED);
        let id = test_identity(COMPONENT, "gw");
        let o = plan(&id, &validate(&s).expect("v"), &facts(false, None), "1.0.0").expect("plan");
        assert_eq!(o.service_monitor, Desired::Unmanaged);
        let cond = monitoring_condition(&s, &facts(false, None)).expect("condition");
        assert_eq!(
            (cond.status, cond.reason),
            (false, "ServiceMonitorCRDMissing")
        );
        s.monitoring.prometheus.enabled = false;
        let o = plan(&id, &validate(&s).expect("v"), &facts(true, None), "1.0.0").expect("plan");
        assert_eq!(o.service_monitor, Desired::Absent);
        assert!(monitoring_condition(&s, &facts(true, None)).is_none());
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let mut s = spec(SEED);
        s.autoscaling.as_mut().expect("a").min_replicas = 30;
        let e = validate(&s).expect_err("invalid");
        assert_eq!(e.field, "spec.autoscaling");
        assert!(
            e.message.contains("minReplicas 30 exceeds maxReplicas 20"),
            "{}",
            e.message
        );
        let mut s = spec(SEED);
        s.monitoring.tracing.jaeger_endpoint = None;
        assert_eq!(
            validate(&s).expect_err("invalid").field,
            "spec.monitoring.tracing.jaegerEndpoint"
        );
        let mut s = spec(SEED);
        s.image = "acr.azurecr.io/payment-initiation:1.5.0".into();
        let e = validate(&s).expect_err("tag 1.5.0 with version 2.4.1");
        assert_eq!(e.field, "spec.image");
        assert!(
            e.message.contains("tag 1.5.0 is not spec.version 2.4.1"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_tagged_image_runs_as_written_and_rolls_back_by_tag() {
        let mut s = spec(SEED);
        s.version = "1.5.0".into();
        s.image = "acr.azurecr.io/payment-initiation:1.5.0".into();
        let id = test_identity(COMPONENT, "payment-initiation");
        let v = validate(&s).expect("a tag that is the version");
        for (target, image) in [
            ("1.5.0", "acr.azurecr.io/payment-initiation:1.5.0"),
            ("1.4.2", "acr.azurecr.io/payment-initiation:1.4.2"),
        ] {
            let Desired::Apply(d) = plan(&id, &v, &facts(true, None), target)
                .expect("plan")
                .deployment
            else {
                panic!("deployment")
            };
            let pod = d.spec.expect("spec").template.spec.expect("pod");
            assert_eq!(pod.containers[0].image.as_deref(), Some(image));
        }
    }

    #[test]
    fn the_tracing_endpoint_port_chooses_the_exporter() {
        let thrift = tracing_env("http://jaeger:14268");
        assert_eq!(thrift["OTEL_TRACES_EXPORTER"], "jaeger");
        assert_eq!(
            thrift["OTEL_EXPORTER_JAEGER_ENDPOINT"],
            "http://jaeger:14268/api/traces"
        );
        assert_eq!(thrift["JAEGER_ENDPOINT"], "http://jaeger:14268/api/traces");
        assert!(
            !thrift.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "an OTLP exporter cannot talk to the Thrift collector"
        );
        assert_eq!(
            tracing_env("http://jaeger:14268/api/traces/")["JAEGER_ENDPOINT"],
            "http://jaeger:14268/api/traces"
        );
        let grpc = tracing_env("http://otel-collector.observability:4317");
        assert_eq!(
            (
                grpc["OTEL_EXPORTER_OTLP_PROTOCOL"].as_str(),
                grpc["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str()
            ),
            ("grpc", "http://otel-collector.observability:4317")
        );
        for endpoint in ["http://jaeger:4318", "https://traces.example.com"] {
            let http = tracing_env(endpoint);
            assert_eq!(http["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf");
            assert_eq!(http["OTEL_EXPORTER_OTLP_ENDPOINT"], endpoint);
        }
    }
}
