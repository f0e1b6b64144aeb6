//! The series of each exporter for the estate of `exposition.rs`: names and
//! own labels from `../shared/metrics/<exporter>/names.txt`, target labels
//! from the exporter's usual ServiceMonitor/PodMonitor. One function per
//! exporter; none of them reads a model spec.
#![allow(dead_code)] // included by tests/exposition.rs only

use crate::exposition::{ACTIVE_MESSAGES, Builder, Scrape, of_kind};

type B<'a> = Builder<'a>;

/// Every exporter's series; `scrape` is the honorLabels choice for the
/// charts that offer one (cert-manager, External Secrets, Argo CD).
pub fn series(b: &mut B<'_>, scrape: Scrape) {
    argocd(b, scrape);
    cert_manager(b, scrape);
    external_secrets(b, scrape);
    azure(b);
    cloudnative_pg(b);
    istio(b);
    jaeger(b);
    kube_state_metrics(b);
    crate::exposition_payments::payments(b);
    prometheus_rules(b);
    redis_enterprise(b);
    strimzi(b);
    gateway_containers(b);
}

/// The PaymentGateways' pods (`<gateway>-<pod-template-hash>-<suffix>`,
/// container `gateway`): the kubelet's cAdvisor working set (with the pod
/// cgroup's and the pause container's series beside it, as cAdvisor gives
/// them) and kube-state-metrics' limits and restarts.
fn gateway_containers(b: &mut B<'_>) {
    let kubelet = B::target(
        "kube-system",
        "",
        "kube-prometheus-stack-kubelet",
        "kubelet",
    );
    let ksm = ksm_target();
    let h = Scrape::Honored;
    for (ns, gw) in of_kind("PaymentGateway") {
        for suffix in ["x7k2p", "q9m4z"] {
            let pod = format!("{gw}-6d4b8c7f9-{suffix}");
            for (container, image, v) in [
                ("gateway", "ghcr.io/payments/gateway:1.5.0", 300e6),
                ("", "", 320e6),
                ("POD", "registry.k8s.io/pause:3.10", 1e6),
            ] {
                let id = format!("/kubepods/burstable/pod-{pod}/{container}");
                let own = [
                    ("namespace", ns),
                    ("pod", pod.as_str()),
                    ("container", container),
                    ("image", image),
                    ("id", id.as_str()),
                    ("name", container),
                ];
                b.gauge("container_memory_working_set_bytes", &kubelet, &own, h, v);
            }
            let own = [
                ("namespace", ns),
                ("pod", pod.as_str()),
                ("uid", "0b6c1f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"),
                ("container", "gateway"),
                ("node", "aks-pool1-12345678-vmss000000"),
            ];
            for (resource, unit, v) in [
                ("memory", "byte", 512.0 * 1024.0 * 1024.0),
                ("cpu", "core", 1.0),
            ] {
                let mut l = own.to_vec();
                l.extend([("resource", resource), ("unit", unit)]);
                b.gauge("kube_pod_container_resource_limits", &ksm, &l, h, v);
            }
            b.counter(
                "kube_pod_container_status_restarts_total",
                &ksm,
                &own[..4],
                h,
                0.0,
            );
        }
    }
}

fn argocd(b: &mut B<'_>, scrape: Scrape) {
    let t = B::target(
        "argocd",
        "argocd-application-controller-0",
        "argocd-application-controller-metrics",
        "argocd-application-controller-metrics",
    );
    for (ns, name) in of_kind("Application") {
        let own = [
            ("namespace", ns),
            ("name", name),
            ("project", "default"),
            ("autosync_enabled", "true"),
            ("repo", "https://git.example/deploy"),
            ("dest_server", "https://kubernetes.default.svc"),
            ("dest_namespace", ns),
            ("sync_status", "Synced"),
            ("health_status", "Healthy"),
            ("operation", ""),
        ];
        b.gauge("argocd_app_info", &t, &own, scrape, 1.0);
    }
}

fn cert_manager(b: &mut B<'_>, scrape: Scrape) {
    let t = B::target(
        "cert-manager",
        "cert-manager-6d9f8b7c6d-q8w2m",
        "cert-manager",
        "cert-manager",
    );
    for (ns, name) in of_kind("Certificate") {
        let issuer = [
            ("name", name),
            ("namespace", ns),
            ("issuer_name", "letsencrypt"),
            ("issuer_kind", "ClusterIssuer"),
            ("issuer_group", "cert-manager.io"),
        ];
        b.gauge(
            "certmanager_certificate_expiration_timestamp_seconds",
            &t,
            &issuer,
            scrape,
            4.0e9,
        );
        for (condition, v) in [("True", 1.0), ("False", 0.0), ("Unknown", 0.0)] {
            let mut own = issuer.to_vec();
            own.push(("condition", condition));
            b.gauge("certmanager_certificate_ready_status", &t, &own, scrape, v);
        }
    }
}

fn external_secrets(b: &mut B<'_>, scrape: Scrape) {
    let t = B::target(
        "external-secrets",
        "external-secrets-7b9c5d8f4-x2k9p",
        "external-secrets-metrics",
        "external-secrets-metrics",
    );
    for (ns, name) in of_kind("ExternalSecret") {
        for (status, v) in [("True", 1.0), ("False", 0.0)] {
            let own = [
                ("name", name),
                ("namespace", ns),
                ("condition", "Ready"),
                ("status", status),
            ];
            b.gauge("externalsecret_status_condition", &t, &own, scrape, v);
        }
        let own = [("name", name), ("namespace", ns)];
        b.counter("externalsecret_sync_calls_error", &t, &own, scrape, 0.01);
    }
}

/// Azure Service Operator's Service Bus namespaces: readiness and the
/// Azure name from kube-state-metrics' custom resource state
/// (deploy/kube-state-metrics/), messages from azure-metrics-exporter (one
/// series per configured aggregation), and ASO's own ARM request counters.
fn azure(b: &mut B<'_>) {
    let ksm = ksm_target();
    let exporter = B::target(
        "monitoring",
        "azure-metrics-exporter-5f7d9c8b6-h4j7k",
        "azure-metrics-exporter",
        "azure-metrics-exporter",
    );
    for (ns, name) in of_kind("Namespace") {
        let azure_name = format!("sb-{name}-prod");
        let cr = [
            ("customresource_group", "servicebus.azure.com"),
            ("customresource_kind", "Namespace"),
            ("customresource_version", "v1api20211101"),
            ("namespace", ns),
            ("name", name),
        ];
        let mut ready = cr.to_vec();
        ready.push(("status", "True"));
        b.gauge(
            "kube_customresource_aso_ready",
            &ksm,
            &ready,
            Scrape::Honored,
            1.0,
        );
        let mut info = cr.to_vec();
        info.push(("azure_name", &azure_name));
        b.gauge(
            "kube_customresource_aso_info",
            &ksm,
            &info,
            Scrape::Honored,
            1.0,
        );
        let id = format!(
            "/subscriptions/0000/resourceGroups/rg-{ns}/providers/Microsoft.ServiceBus/namespaces/{azure_name}"
        );
        for metric in ["ActiveMessages", "DeadletteredMessages"] {
            for (aggregation, v) in [
                ("average", ACTIVE_MESSAGES),
                ("total", 5.0 * ACTIVE_MESSAGES),
            ] {
                let own = [
                    ("resourceID", id.as_str()),
                    ("subscriptionID", "0000"),
                    ("subscriptionName", "payments"),
                    ("resourceGroup", "rg"),
                    ("resourceName", azure_name.as_str()),
                    ("metric", metric),
                    ("unit", "Count"),
                    ("interval", "PT1M"),
                    ("timespan", "PT1M"),
                    ("aggregation", aggregation),
                    ("dimension", ""),
                ];
                b.gauge(
                    "azurerm_resource_metric",
                    &exporter,
                    &own,
                    Scrape::Renamed,
                    v,
                );
            }
        }
    }
    let aso = B::target(
        "azureserviceoperator-system",
        "azureserviceoperator-controller-manager-6c8d7f9b5-p3l8z",
        "azureserviceoperator-controller-manager-metrics-service",
        "azureserviceoperator-controller-manager-metrics-service",
    );
    let own = [
        ("resource", "Microsoft.ServiceBus/namespaces"),
        ("requestType", "PUT"),
    ];
    b.counter(
        "azure_failed_requests_total",
        &aso,
        &own,
        Scrape::Renamed,
        0.01,
    );
}

fn ksm_target() -> Vec<(&'static str, &'static str)> {
    B::target(
        "monitoring",
        "kube-state-metrics-7c5d9f8b6-z9x8c",
        "kube-state-metrics",
        "kube-state-metrics",
    )
}

/// CloudNativePG instance pods `<cluster>-<n>` (instance 1 primary) under
/// the operator's PodMonitor, and the kubelet's volume stats for their PVCs.
fn cloudnative_pg(b: &mut B<'_>) {
    let kubelet = B::target(
        "kube-system",
        "",
        "kube-prometheus-stack-kubelet",
        "kubelet",
    );
    for (ns, cluster) in of_kind("Cluster") {
        let job = format!("{ns}/{cluster}");
        for n in 1..=2 {
            let pod = format!("{cluster}-{n}");
            let t = B::pod_target(ns, &pod, &job);
            let g = |b: &mut B<'_>, name: &str, own: &[(&str, &str)], v: f64| {
                b.gauge(name, &t, own, Scrape::Renamed, v)
            };
            let db = [("datname", "app")];
            g(b, "cnpg_pg_replication_lag", &[], 0.5);
            g(
                b,
                "cnpg_pg_replication_streaming_replicas",
                &[],
                if n == 1 { 1.0 } else { 0.0 },
            );
            g(
                b,
                "cnpg_pg_replication_in_recovery",
                &[],
                if n == 1 { 0.0 } else { 1.0 },
            );
            g(b, "cnpg_pg_database_xid_age", &db, 1000.0);
            g(
                b,
                "cnpg_pg_settings_setting",
                &[("name", "max_connections")],
                100.0,
            );
            g(b, "cnpg_collector_up", &[("cluster", cluster)], 1.0);
            let backends = [
                ("datname", "app"),
                ("usename", "app"),
                ("application_name", "ledger"),
                ("state", "active"),
            ];
            g(b, "cnpg_backends_total", &backends, 20.0);
            b.counter(
                "cnpg_pg_stat_archiver_failed_count",
                &t,
                &[],
                Scrape::Renamed,
                0.0,
            );
            b.counter(
                "cnpg_pg_stat_database_temp_bytes",
                &t,
                &db,
                Scrape::Renamed,
                1024.0,
            );
            for pvc in [pod.clone(), format!("{pod}-wal")] {
                let own = [("namespace", ns), ("persistentvolumeclaim", pvc.as_str())];
                b.gauge(
                    "kubelet_volume_stats_used_bytes",
                    &kubelet,
                    &own,
                    Scrape::Honored,
                    5e9,
                );
                b.gauge(
                    "kubelet_volume_stats_capacity_bytes",
                    &kubelet,
                    &own,
                    Scrape::Honored,
                    1e10,
                );
            }
        }
    }
}

/// Istio sidecars of the destination workload, reporter="destination".
fn istio(b: &mut B<'_>) {
    for (ns, svc) in of_kind("VirtualService") {
        let pod = format!("{svc}-7d9f8b6c5-k2j4h");
        let t = B::pod_target(ns, &pod, "monitoring/envoy-stats-monitor");
        let host = format!("{svc}.{ns}.svc.cluster.local");
        for (code, rate) in [("200", 10.0), ("503", 0.1)] {
            let own = [
                ("reporter", "destination"),
                ("source_workload", "istio-ingressgateway"),
                ("source_workload_namespace", "istio-system"),
                ("destination_workload", svc),
                ("destination_workload_namespace", ns),
                ("destination_service", host.as_str()),
                ("destination_service_name", svc),
                ("destination_service_namespace", ns),
                ("response_code", code),
            ];
            b.counter("istio_requests_total", &t, &own, Scrape::Renamed, rate);
            b.histogram(
                "istio_request_duration_milliseconds",
                &t,
                &own,
                Scrape::Renamed,
                rate,
            );
        }
    }
}

/// Jaeger v1 collectors: `<jaeger>-collector-<rs>-<pod>` for the production
/// and streaming strategies, `<jaeger>-<rs>-<pod>` for the operator's
/// default allInOne (operator-naming.excerpt).
fn jaeger(b: &mut B<'_>) {
    for (ns, name) in of_kind("Jaeger") {
        let pod = if name == "tracing-prod" {
            format!("{name}-collector-7c9f8d6b5d-x2k9p")
        } else {
            format!("{name}-5d9f8b7c6d-q8w2m")
        };
        let t = B::pod_target(ns, &pod, "monitoring/jaeger");
        let own = [("host", pod.as_str())];
        b.counter(
            "jaeger_collector_spans_dropped_total",
            &t,
            &own,
            Scrape::Renamed,
            0.5,
        );
        b.gauge(
            "jaeger_collector_queue_length",
            &t,
            &own,
            Scrape::Renamed,
            3.0,
        );
    }
}

/// kube-state-metrics, scraped with honorLabels: true (kube-prometheus-stack).
fn kube_state_metrics(b: &mut B<'_>) {
    let t = ksm_target();
    let h = Scrape::Honored;
    for (ns, d) in of_kind("Deployment") {
        let own = [("namespace", ns), ("deployment", d)];
        b.gauge("kube_deployment_spec_replicas", &t, &own, h, 3.0);
        b.gauge(
            "kube_deployment_status_replicas_available",
            &t,
            &own,
            h,
            3.0,
        );
        for (status, v) in [("true", 1.0), ("false", 0.0), ("unknown", 0.0)] {
            let mut c = own.to_vec();
            c.extend([
                ("condition", "Available"),
                ("status", status),
                ("reason", "MinimumReplicasAvailable"),
            ]);
            b.gauge("kube_deployment_status_condition", &t, &c, h, v);
        }
    }
    for (ns, hpa) in of_kind("HorizontalPodAutoscaler") {
        let own = [("namespace", ns), ("horizontalpodautoscaler", hpa)];
        b.gauge(
            "kube_horizontalpodautoscaler_status_desired_replicas",
            &t,
            &own,
            h,
            3.0,
        );
        b.gauge(
            "kube_horizontalpodautoscaler_status_current_replicas",
            &t,
            &own,
            h,
            3.0,
        );
        b.gauge(
            "kube_horizontalpodautoscaler_spec_max_replicas",
            &t,
            &own,
            h,
            10.0,
        );
    }
}

/// Prometheus' own rule metrics: the operator mounts each PrometheusRule as
/// `<namespace>-<name>-<uid>.yaml`, so the `rule_group` label is
/// `<dir>/<file>;<group>`; kube-state-metrics' custom resource state
/// (deploy/kube-state-metrics/) publishes each rule's uid.
fn prometheus_rules(b: &mut B<'_>) {
    let prom = B::target(
        "monitoring",
        "prometheus-k8s-0",
        "prometheus-k8s",
        "prometheus-k8s",
    );
    let ksm = ksm_target();
    for (i, (ns, name)) in of_kind("PrometheusRule").enumerate() {
        let uid = format!("3f2b8c1d-7a4e-4b9f-8c2d-00000000000{i}");
        let group = format!(
            "/etc/prometheus/rules/prometheus-k8s-rulefiles-0/{ns}-{name}-{uid}.yaml;{name}.rules"
        );
        let own = [("rule_group", group.as_str())];
        b.counter(
            "prometheus_rule_evaluation_failures_total",
            &prom,
            &own,
            Scrape::Renamed,
            0.01,
        );
        b.gauge(
            "prometheus_rule_group_last_duration_seconds",
            &prom,
            &own,
            Scrape::Renamed,
            0.05,
        );
        let cr = [
            ("customresource_group", "monitoring.coreos.com"),
            ("customresource_kind", "PrometheusRule"),
            ("customresource_version", "v1"),
            ("namespace", ns),
            ("name", name),
            ("uid", uid.as_str()),
        ];
        b.gauge(
            "kube_customresource_prometheusrule_info",
            &ksm,
            &cr,
            Scrape::Honored,
            1.0,
        );
    }
}

/// Redis Enterprise's cluster endpoint (one Service for the cluster):
/// series carry `cluster` and `bdb`; only `bdb_up` and `bdb_conns` carry
/// `bdb_name` (redis-enterprise/observability-repo.excerpt).
fn redis_enterprise(b: &mut B<'_>) {
    let t = B::target("redis", "rec-0", "rec-prom", "rec-prom");
    let r = Scrape::Renamed;
    for (i, (_, name)) in of_kind("RedisEnterpriseDatabase").enumerate() {
        let bdb = (i + 1).to_string();
        let id = [
            ("cluster", "rec.redis.svc.cluster.local"),
            ("bdb", bdb.as_str()),
        ];
        let mut named = id.to_vec();
        named.push(("bdb_name", name));
        b.gauge("bdb_up", &t, &named, r, 1.0);
        b.gauge("bdb_conns", &t, &named, r, 4.0);
        b.gauge("bdb_avg_latency", &t, &id, r, 0.0002);
        b.gauge("bdb_used_memory", &t, &id, r, 2e8);
        b.gauge("bdb_memory_limit", &t, &id, r, 1e9);
        b.gauge("bdb_evicted_objects", &t, &id, r, 0.0);
        for (shard, role) in [("1", "master"), ("2", "slave")] {
            let mut own = id.to_vec();
            own.extend([("redis", shard), ("role", role), ("node", "1")]);
            b.gauge("redis_up", &t, &own, r, 1.0);
        }
    }
}

/// Strimzi: broker and kafka-exporter pods under the example PodMonitor
/// (labelmap strimzi_io_*), the cluster operator under its PodMonitor, and
/// the Kafka resources' state from kube-state-metrics' custom resource
/// state (Strimzi's examples/metrics/kube-state-metrics).
fn strimzi(b: &mut B<'_>) {
    let r = Scrape::Renamed;
    let pools: Vec<_> = of_kind("KafkaNodePool").collect();
    let ksm = ksm_target();
    for (i, (ns, cluster)) in of_kind("Kafka").enumerate() {
        let pool = pools[i].1;
        let job = "monitoring/kafka-resources-metrics";
        for id in 0..3 {
            let pod = format!("{cluster}-{pool}-{id}");
            let mut t = B::pod_target(ns, &pod, job);
            let kafka_name = format!("{cluster}-kafka");
            let labels = [
                ("strimzi_io_cluster", cluster),
                ("strimzi_io_kind", "Kafka"),
                ("strimzi_io_name", kafka_name.as_str()),
                ("strimzi_io_pool_name", pool),
                ("strimzi_io_component_type", "kafka"),
                ("kubernetes_pod_name", pod.as_str()),
                ("node_name", "node-1"),
            ];
            t.extend(labels);
            let g = |b: &mut B<'_>, name: &str, own: &[(&str, &str)], v: f64| {
                b.gauge(name, &t, own, r, v)
            };
            g(
                b,
                "kafka_server_replicamanager_underreplicatedpartitions",
                &[],
                0.0,
            );
            g(b, "kafka_server_replicamanager_partitioncount", &[], 30.0);
            g(
                b,
                "kafka_controller_kafkacontroller_offlinepartitionscount",
                &[],
                0.0,
            );
            g(
                b,
                "kafka_controller_kafkacontroller_activecontrollercount",
                &[],
                if id == 0 { 1.0 } else { 0.0 },
            );
            let q = [("request", "Produce"), ("quantile", "0.99")];
            g(b, "kafka_network_requestmetrics_totaltimems", &q, 4.0);
        }
        let pod = format!("{cluster}-kafka-exporter-6d8f7c9b5-t6y7u");
        let mut t = B::pod_target(ns, &pod, job);
        let exporter_name = format!("{cluster}-kafka-exporter");
        t.extend([
            ("strimzi_io_cluster", cluster),
            ("strimzi_io_kind", "Kafka"),
            ("strimzi_io_name", exporter_name.as_str()),
        ]);
        let own = [
            ("consumergroup", "ledger"),
            ("topic", "payments"),
            ("partition", "0"),
        ];
        b.gauge("kafka_consumergroup_lag", &t, &own, r, 120.0);
        let cr = [
            ("customresource_group", "kafka.strimzi.io"),
            ("customresource_kind", "Kafka"),
            ("customresource_version", "v1"),
            ("name", cluster),
            ("exported_namespace", ns),
            ("ready", "True"),
        ];
        b.gauge(
            "strimzi_kafka_resource_info",
            &ksm,
            &cr,
            Scrape::Honored,
            1.0,
        );
    }
    let operator = B::pod_target(
        "strimzi",
        "strimzi-cluster-operator-7f9d8c6b5-a1s2d",
        "monitoring/cluster-operator-metrics",
    );
    for (ns, _) in of_kind("Kafka") {
        let own = [("kind", "Kafka"), ("namespace", ns), ("selector", "")];
        b.counter(
            "strimzi_reconciliations_failed_total",
            &operator,
            &own,
            r,
            0.0,
        );
    }
}
