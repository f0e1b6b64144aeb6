//! Component discovery against a real API server: every default spec's kind
//! can be listed (third-party kinds through the fixture CRDs in
//! tests/fixtures/crds), and a component that exists but exports no series
//! is reported as unobserved rather than silently healthy.

mod support;

use std::path::Path;

use autopilot::{
    detect::{ComponentId, CycleInput, Estate},
    observe::{fetch_components, load_model_specs},
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{DynamicObject, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};

fn fixture_crds() -> Vec<CustomResourceDefinition> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixture CRDs") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for doc in support::yaml_documents(&text) {
            out.push(serde_json::from_value(doc).expect("a CRD"));
        }
    }
    out
}

async fn create(
    client: &kube::Client,
    ns: &str,
    gvk: (&str, &str, &str, &str),
    body: serde_json::Value,
) {
    let (group, version, kind, plural) = gvk;
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let mut obj: DynamicObject = serde_json::from_value(body).expect("object");
    obj.types = Some(kube::api::TypeMeta {
        api_version: ar.api_version.clone(),
        kind: kind.into(),
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

#[tokio::test]
async fn every_spec_kind_is_discoverable_and_silent_components_are_unobserved() {
    let cp = support::control_plane(Default::default());
    let (client, ns) = support::client_and_namespace(cp, "observe").await;
    autopilot::act::apply_crds(&client, &fixture_crds())
        .await
        .expect("fixture CRDs install");

    create(
        &client,
        &ns,
        ("postgresql.cnpg.io", "v1", "Cluster", "clusters"),
        serde_json::json!({"metadata": {"name": "ledger"}, "spec": {"instances": 3}}),
    )
    .await;
    create(
        &client,
        &ns,
        ("cert-manager.io", "v1", "Certificate", "certificates"),
        serde_json::json!({"metadata": {"name": "api-tls"}, "spec": {"secretName": "api-tls", "issuerRef": {"name": "ca"}}}),
    )
    .await;

    let specs =
        load_model_specs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).expect("specs");
    let mut found: Vec<ComponentId> = Vec::new();
    for s in &specs {
        let list = fetch_components(&client, s)
            .await
            .unwrap_or_else(|e| panic!("{}: listing {} failed: {e:?}", s.file, s.kind));
        found.extend(list.into_iter().filter(|c| c.namespace == ns));
    }
    let ledger = ComponentId {
        kind: "Cluster".into(),
        namespace: ns.clone(),
        name: "ledger".into(),
    };
    let cert = ComponentId {
        kind: "Certificate".into(),
        namespace: ns.clone(),
        name: "api-tls".into(),
    };
    assert!(
        found.contains(&ledger) && found.contains(&cert),
        "{found:?}"
    );

    // Prometheus answered, but nothing exports series for them.
    let mut estate = Estate::new(specs);
    let report = estate.score_cycle(
        CycleInput::Observed {
            components: Some(&found),
            series: &[],
        },
        1_800_000_000,
    );
    assert!(report.findings.is_empty());
    assert!(
        report.unobserved.contains(&ledger) && report.unobserved.contains(&cert),
        "{report:?}"
    );
}
