//! Our CRDs on a real kube-apiserver: they install and become Established,
//! every example is accepted, and invalid resources are rejected by the API
//! server with a message that says what is wrong. The minimal fixture CRDs of
//! the third-party kinds we patch install beside them.

mod support;

use autopilot::{
    crd::{BatchProcessor, ClearingAdapter, PaymentGateway, SagaOrchestrator},
    testenv::Options,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{DynamicObject, PostParams},
    discovery::ApiResource,
};
use serde_json::{Value, json};

fn cp() -> &'static autopilot::testenv::ControlPlane {
    support::control_plane(Options::default())
}

fn api_for(client: &Client, ns: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "payments.io".into(),
        version: "v1".into(),
        api_version: "payments.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn examples() -> Vec<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("deploy/examples exists")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| support::yaml_documents(&std::fs::read_to_string(f).expect("read example")))
        .collect()
}

fn example(kind: &str) -> Value {
    examples()
        .into_iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("deploy/examples has a {kind}"))
}

fn plural(kind: &str) -> String {
    format!("{}s", kind.to_lowercase())
}

async fn create(client: &Client, ns: &str, mut obj: Value) -> Result<DynamicObject, kube::Error> {
    obj["metadata"]["namespace"] = json!(ns);
    let kind = obj["kind"].as_str().expect("kind").to_string();
    let dynamic: DynamicObject = serde_json::from_value(obj).expect("dynamic object");
    api_for(client, ns, &kind, &plural(&kind))
        .create(&PostParams::default(), &dynamic)
        .await
}

#[tokio::test]
async fn our_crds_are_established_and_served() {
    let client = cp().client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "paymentgateways.payments.io",
        "clearingadapters.payments.io",
        "batchprocessors.payments.io",
        "sagaorchestrators.payments.io",
    ] {
        let crd = crds.get(name).await.expect("CRD exists");
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} not Established: {conditions:?}"
        );
    }
    // Served under the short names and category kubectl users type.
    let discovery = kube::Discovery::new(client).run().await.expect("discovery");
    let group = discovery.get("payments.io").expect("payments.io is served");
    let kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(r, _)| r.kind)
        .collect();
    for k in autopilot::kinds::payments_kind_names() {
        assert!(kinds.contains(&k.to_string()), "{k} missing from {kinds:?}");
    }
}

#[tokio::test]
async fn every_example_is_accepted_and_reads_back_typed() {
    let (client, ns) = support::client_and_namespace(cp(), "examples").await;
    let all = examples();
    assert_eq!(
        all.len(),
        autopilot::kinds::payments().count(),
        "one example per kind"
    );
    for ex in all {
        let kind = ex["kind"].as_str().unwrap_or_default().to_string();
        create(&client, &ns, ex)
            .await
            .unwrap_or_else(|e| panic!("example {kind} rejected: {e}"));
    }
    // The API server applied the schema defaults and the objects parse as our types.
    let pgw = Api::<PaymentGateway>::namespaced(client.clone(), &ns)
        .get("payment-gateway")
        .await
        .expect("typed PaymentGateway");
    assert_eq!(pgw.spec.version, "1.5.0");
    assert_eq!(pgw.spec.image, "acr.azurecr.io/payment-initiation:1.5.0");
    let auto = pgw.spec.autoscaling.expect("autoscaling");
    assert_eq!(
        (auto.min_replicas, auto.max_replicas, auto.target_cpu),
        (3, 20, 70)
    );
    assert_eq!(
        pgw.spec.config.database.expect("database").cluster_name,
        "payments-db"
    );
    assert!(pgw.spec.config.features.enable_fraud_detection);
    assert_eq!(
        pgw.spec.monitoring.tracing.jaeger_endpoint.as_deref(),
        Some("http://jaeger:14268")
    );

    let ca = Api::<ClearingAdapter>::namespaced(client.clone(), &ns)
        .get("sepa-step2")
        .await
        .expect("typed ClearingAdapter");
    assert_eq!(ca.spec.cutoff.time_zone, "Europe/Berlin");
    assert_eq!(
        ca.spec.credentials_secret_ref.name,
        "sepa-step2-credentials"
    );

    let bp = Api::<BatchProcessor>::namespaced(client.clone(), &ns)
        .get("nightly-settlement")
        .await
        .expect("typed BatchProcessor");
    assert_eq!(bp.spec.schedule, "30 2 * * *");
    assert_eq!(bp.spec.active_deadline_seconds, 7200);

    let saga = Api::<SagaOrchestrator>::namespaced(client.clone(), &ns)
        .get("payment-sagas")
        .await
        .expect("typed SagaOrchestrator");
    let steps = &saga.spec.sagas[0].steps;
    assert_eq!(steps.len(), 3);
    // Defaults from the schema were filled in by the API server.
    assert_eq!(steps[0].timeout_seconds, 30);
    assert_eq!(steps[0].max_attempts, 3);
}

#[tokio::test]
async fn defaults_fill_a_minimal_payment_gateway() {
    let (client, ns) = support::client_and_namespace(cp(), "defaults").await;
    create(
        &client,
        &ns,
        json!({"apiVersion": "payments.io/v1", "kind": "PaymentGateway",
               "metadata": {"name": "minimal"}, "spec": {"version": "1.0.0"}}),
    )
    .await
    .expect("minimal gateway accepted");
    let pgw = Api::<PaymentGateway>::namespaced(client, &ns)
        .get("minimal")
        .await
        .expect("read back");
    assert_eq!(pgw.spec.replicas, 2);
    assert_eq!(pgw.spec.image, "ghcr.io/payments/gateway");
    assert_eq!(pgw.spec.config.features.rate_limit_per_second, 1000);
    assert!(!pgw.spec.monitoring.prometheus.enabled);
}

/// Each case: a mutation of a valid example and a fragment the API server's
/// rejection must contain.
#[tokio::test]
async fn invalid_resources_are_rejected_with_their_reason() {
    let (client, ns) = support::client_and_namespace(cp(), "invalid").await;
    type Mutate = fn(&mut Value);
    let cases: Vec<(&str, &str, Mutate, &str)> = vec![
        (
            "min > max",
            "PaymentGateway",
            |v| {
                v["spec"]["autoscaling"]["minReplicas"] = json!(10);
                v["spec"]["autoscaling"]["maxReplicas"] = json!(5);
            },
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
        ),
        (
            "negative replicas",
            "PaymentGateway",
            |v| v["spec"]["replicas"] = json!(-1),
            "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
        ),
        (
            "negative replicas (saga)",
            "SagaOrchestrator",
            |v| v["spec"]["replicas"] = json!(-3),
            "spec.replicas in body should be greater than or equal to 0",
        ),
        (
            "bad version string",
            "PaymentGateway",
            |v| v["spec"]["version"] = json!("2.4"),
            "spec.version in body should match",
        ),
        (
            "bad version string (latest)",
            "ClearingAdapter",
            |v| v["spec"]["version"] = json!("latest"),
            "spec.version in body should match",
        ),
        (
            "bad cron",
            "BatchProcessor",
            |v| v["spec"]["schedule"] = json!("every night"),
            "spec.schedule in body should match",
        ),
        (
            "bad cron: four fields",
            "BatchProcessor",
            |v| v["spec"]["schedule"] = json!("30 2 * *"),
            "spec.schedule in body should match",
        ),
        (
            "bad cut-off cron",
            "ClearingAdapter",
            |v| v["spec"]["cutoff"]["schedule"] = json!("16:00"),
            "spec.cutoff.schedule in body should match",
        ),
        (
            "unknown enum value: clearing system",
            "ClearingAdapter",
            |v| v["spec"]["system"] = json!("BACS"),
            "spec.system: Unsupported value: \"BACS\"",
        ),
        (
            "unknown enum value: concurrency policy",
            "BatchProcessor",
            |v| v["spec"]["concurrencyPolicy"] = json!("Sometimes"),
            "spec.concurrencyPolicy: Unsupported value: \"Sometimes\"",
        ),
        (
            "tracing without endpoint",
            "PaymentGateway",
            |v| {
                v["spec"]["monitoring"]["tracing"] = json!({"enabled": true});
            },
            "monitoring.tracing.jaegerEndpoint is required when tracing is enabled",
        ),
        (
            "plain-text clearing endpoint",
            "ClearingAdapter",
            |v| v["spec"]["endpoint"]["url"] = json!("http://clearing.example.com"),
            "spec.endpoint.url in body should match",
        ),
        (
            "clearing endpoint without CIDRs",
            "ClearingAdapter",
            |v| v["spec"]["endpoint"]["cidrs"] = json!([]),
            "spec.endpoint.cidrs in body should have at least 1 items",
        ),
        (
            "saga step without compensation",
            "SagaOrchestrator",
            |v| {
                v["spec"]["sagas"][0]["steps"][0]
                    .as_object_mut()
                    .expect("step")
                    .remove("compensation");
            },
            "a saga step needs a compensation unless it is marked final",
        ),
        (
            "duplicate saga step names",
            "SagaOrchestrator",
            |v| v["spec"]["sagas"][0]["steps"][1]["name"] = json!("reserve-funds"),
            "Duplicate value",
        ),
        (
            "saga without database",
            "SagaOrchestrator",
            |v| {
                v["spec"].as_object_mut().expect("spec").remove("database");
            },
            "spec.database: Required value",
        ),
        (
            "an image tag that is not the version",
            "PaymentGateway",
            |v| v["spec"]["image"] = json!("acr.azurecr.io/payment-initiation:1.4.0"),
            "the tag in spec.image must be spec.version",
        ),
        (
            "a version bump that leaves the image's tag behind",
            "PaymentGateway",
            |v| v["spec"]["version"] = json!("1.6.0"),
            "the tag in spec.image must be spec.version",
        ),
        (
            "an image tag that is not the version (saga)",
            "SagaOrchestrator",
            |v| {
                v["spec"]["image"] = json!("registry:5000/payments/sagas:0.0.1");
            },
            "the tag in spec.image must be spec.version",
        ),
        (
            "an image with a malformed digest",
            "PaymentGateway",
            |v| v["spec"]["image"] = json!("acr.azurecr.io/payment-initiation@sha256:abc"),
            "spec.image in body should match",
        ),
        (
            "backoff limit too high",
            "BatchProcessor",
            |v| v["spec"]["backoffLimit"] = json!(100),
            "spec.backoffLimit in body should be less than or equal to 20",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, kind, mutate, expected)) in cases.iter().enumerate() {
        let mut obj = example(kind);
        obj["metadata"]["name"] = json!(format!("invalid-{i}"));
        mutate(&mut obj);
        match create(&client, &ns, obj).await {
            Ok(_) => failures.push(format!(
                "{what}: accepted, expected a rejection containing {expected:?}"
            )),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !status.message.contains(expected) {
                    failures.push(format!(
                        "{what}: rejected with {} {:?}, expected 422 containing {expected:?}",
                        status.code, status.message
                    ));
                }
            }
            Err(e) => failures.push(format!("{what}: unexpected error {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The minimal fixture CRDs of every third-party kind Autopilot patches
/// install, and one object of each kind is accepted.
#[tokio::test]
async fn third_party_fixture_crds_install() {
    let client = cp().client().await.expect("client");
    let crds = support::fixture_crds();
    assert!(
        crds.len() >= 21,
        "fixtures cover the estate: {}",
        crds.len()
    );
    autopilot::act::apply_crds(&client, &crds)
        .await
        .expect("fixture CRDs become Established");

    let (client, ns) = support::client_and_namespace(cp(), "fixtures").await;
    let samples = [
        (
            "postgresql.cnpg.io/v1",
            "Cluster",
            "clusters",
            json!({"instances": 3, "postgresql": {"parameters": {"work_mem": "4MB"}}}),
        ),
        (
            "kafka.strimzi.io/v1",
            "KafkaNodePool",
            "kafkanodepools",
            json!({"replicas": 3, "roles": ["broker"]}),
        ),
        (
            "cert-manager.io/v1",
            "Certificate",
            "certificates",
            json!({"secretName": "tls", "issuerRef": {"name": "ca"}}),
        ),
        (
            "external-secrets.io/v1",
            "ExternalSecret",
            "externalsecrets",
            json!({"refreshInterval": "1h"}),
        ),
        (
            "networking.istio.io/v1",
            "VirtualService",
            "virtualservices",
            json!({"hosts": ["gw"], "http": [{"route": [{"destination": {"host": "gw", "subset": "v1"}, "weight": 100}]}]}),
        ),
        (
            "app.redislabs.com/v1alpha1",
            "RedisEnterpriseDatabase",
            "redisenterprisedatabases",
            json!({"memorySize": "1GB", "shardCount": 2, "replication": true}),
        ),
        (
            "servicebus.azure.com/v1api20211101",
            "Namespace",
            "namespaces",
            json!({"location": "westeurope", "sku": {"name": "Premium"}}),
        ),
        (
            "argoproj.io/v1alpha1",
            "Application",
            "applications",
            json!({"project": "default"}),
        ),
    ];
    for (api_version, kind, plural, spec) in samples {
        let (group, version) = api_version.split_once('/').expect("group/version");
        let ar = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            plural: plural.into(),
        };
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": {"name": "sample"}, "spec": spec
        }))
        .expect("object");
        Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{kind} sample rejected: {e}"));
    }

    // A field we patch keeps its upstream validation: Istio weights are 0..=100.
    let ar = ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    );
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "bad-weight"},
        "spec": {"http": [{"route": [{"destination": {"host": "gw"}, "weight": 150}]}]}
    }))
    .expect("object");
    let err = Api::<DynamicObject>::namespaced_with(client, &ns, &ar)
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("weight 150 rejected");
    assert!(
        err.to_string().contains("less than or equal to 100"),
        "{err}"
    );
}
