//! The real upstream CRDs of the operators whose resources Autopilot patches
//! (CloudNativePG, Strimzi, cert-manager, External Secrets, Prometheus
//! Operator, Argo CD, Argo Rollouts, Istio) install into a real API server,
//! and a realistic object of each patched kind is accepted by them.
//!
//! They are read from `../shared/crds` (or `$AUTOPILOT_UPSTREAM_CRDS`); when
//! that folder is absent the test says so and passes, since the default suite
//! covers the same kinds with the minimal fixtures in `tests/fixtures/crds`.

mod support;

use kube::{
    Api,
    api::{DynamicObject, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};
use serde_json::json;

#[tokio::test]
async fn upstream_crds_install_and_accept_the_objects_we_patch() {
    let Some(dir) = support::upstream_crds_dir() else {
        eprintln!(
            "SKIPPED upstream_crds: no ../shared/crds (set AUTOPILOT_UPSTREAM_CRDS to a folder of upstream CRD manifests); the fixture CRDs in tests/fixtures/crds cover these kinds in tests/crds.rs"
        );
        return;
    };
    let cp = support::control_plane(Default::default());
    let client = cp.client().await.expect("client");

    let crds = support::crds_in(&dir);
    let kinds: Vec<String> = crds.iter().map(|c| c.spec.names.kind.clone()).collect();
    for needed in [
        "Cluster",
        "Backup",
        "ScheduledBackup",
        "Pooler",
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "KafkaRebalance",
        "Certificate",
        "ExternalSecret",
        "ServiceMonitor",
        "PrometheusRule",
        "Application",
        "Rollout",
        "VirtualService",
        "DestinationRule",
    ] {
        assert!(
            kinds.iter().any(|k| k == needed),
            "{needed} missing from {}",
            dir.display()
        );
    }
    autopilot::act::apply_crds(&client, &crds)
        .await
        .expect("every upstream CRD becomes Established");
    eprintln!(
        "installed {} upstream CRDs from {}",
        crds.len(),
        dir.display()
    );

    let (client, ns) = support::client_and_namespace(cp, "upstream").await;
    let samples = [
        (
            "postgresql.cnpg.io",
            "v1",
            "Cluster",
            "clusters",
            json!({"instances": 3, "storage": {"size": "1Gi"},
                "postgresql": {"parameters": {"work_mem": "8MB", "max_connections": "200"}}}),
        ),
        (
            "postgresql.cnpg.io",
            "v1",
            "Backup",
            "backups",
            json!({"cluster": {"name": "payments-db"}, "method": "volumeSnapshot"}),
        ),
        (
            "kafka.strimzi.io",
            "v1",
            "KafkaNodePool",
            "kafkanodepools",
            json!({"replicas": 3, "roles": ["broker"], "storage": {"type": "ephemeral"}}),
        ),
        (
            "kafka.strimzi.io",
            "v1",
            "KafkaTopic",
            "kafkatopics",
            json!({"partitions": 12, "replicas": 3, "config": {"retention.ms": 604800000}}),
        ),
        (
            "cert-manager.io",
            "v1",
            "Certificate",
            "certificates",
            json!({"secretName": "gateway-tls", "dnsNames": ["pay.example.com"],
                "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}),
        ),
        (
            "external-secrets.io",
            "v1",
            "ExternalSecret",
            "externalsecrets",
            json!({"refreshInterval": "1h", "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
                "target": {"name": "db-credentials"}}),
        ),
        (
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
            "servicemonitors",
            json!({"selector": {"matchLabels": {"app.kubernetes.io/name": "payment-gateway"}},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}]}),
        ),
        (
            "networking.istio.io",
            "v1",
            "VirtualService",
            "virtualservices",
            json!({"hosts": ["payment-gateway"], "http": [{"route": [
             {"destination": {"host": "payment-gateway", "subset": "stable"}, "weight": 90},
             {"destination": {"host": "payment-gateway", "subset": "canary"}, "weight": 10}]}]}),
        ),
        (
            "argoproj.io",
            "v1alpha1",
            "Application",
            "applications",
            json!({"project": "default",
                "source": {"repoURL": "https://git.example.com/payments.git", "path": "deploy", "targetRevision": "main"},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": "payments"}}),
        ),
    ];
    for (group, version, kind, plural, spec) in samples {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": ar.api_version, "kind": kind,
            "metadata": {"name": "sample"}, "spec": spec
        }))
        .expect("object");
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("upstream {kind} rejected a realistic object: {e}"));
    }
}
