//! Component discovery against a real API server: every default spec's
//! kind can be read through the agent's watched copies (third-party kinds
//! through the fixture CRDs in tests/fixtures/crds), and a component that exists but exports no series
//! is reported as unobserved rather than silently healthy.

mod support;

use std::path::Path;

use autopilot::{
    detect::{ComponentId, CycleInput, Estate},
    observe::{cache::ResourceCache, load_model_specs, spec_resource},
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{DynamicObject, PostParams},
    core::GroupVersionKind,
    discovery::ApiResource,
};

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
    autopilot::act::apply_crds(&client, &support::fixture_crds())
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
    let mut cache = ResourceCache::new(client.clone(), autopilot::scope::Scope::all());
    let mut found: Vec<ComponentId> = Vec::new();
    for s in &specs {
        let list = cache
            .snapshot(&spec_resource(s), None)
            .await
            .map(|m| m.into_keys().collect::<Vec<_>>())
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

/// The agent reads components and resources from watched copies
/// (`observe::cache`), one reflector per kind: a kind whose CRD is missing
/// reads as an error (never as "no objects"), is listed afresh once the CRD
/// exists, and then follows creations and deletions without a LIST per read.
#[tokio::test]
async fn watched_copies_follow_the_cluster_and_a_missing_kind_is_an_error() {
    use autopilot::observe::cache::{Error, ResourceCache};
    let cp = support::control_plane(Default::default());
    let (client, ns) = support::client_and_namespace(cp, "cache").await;
    let (_, other) = support::client_and_namespace(cp, "cache-other").await;
    let gvk = ("cachetest.autopilot.io", "v1", "Widget", "widgets");
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(gvk.0, gvk.1, gvk.2), gvk.3);
    let mut cache = ResourceCache::new(client.clone(), autopilot::scope::Scope::all());

    match cache.snapshot(&ar, None).await {
        Err(Error::Watch { kind, reason }) => {
            assert_eq!(kind, "Widget");
            assert!(
                reason.contains("404") || reason.contains("not found"),
                "{reason}"
            );
        }
        other => panic!("a kind without its CRD must be an error, got {other:?}"),
    }

    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "widgets.cachetest.autopilot.io"},
        "spec": {
            "group": gvk.0,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .expect("CRD");
    autopilot::act::apply_crds(&client, &[crd])
        .await
        .expect("CRD installs");
    create(
        &client,
        &ns,
        gvk,
        serde_json::json!({"metadata": {"name": "a"}}),
    )
    .await;
    create(
        &client,
        &other,
        gvk,
        serde_json::json!({"metadata": {"name": "b"}}),
    )
    .await;
    let id = |ns: &str, name: &str| ComponentId {
        kind: "Widget".into(),
        namespace: ns.into(),
        name: name.into(),
    };

    // The failed watch is replaced by a fresh one that lists what exists.
    let names = |m: &std::collections::BTreeMap<ComponentId, serde_json::Value>| {
        m.keys()
            .filter(|c| c.namespace == ns || c.namespace == other)
            .cloned()
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let all = loop {
        let seen = cache.snapshot(&ar, None).await;
        match &seen {
            Ok(m) if names(m).len() == 2 => break seen.expect("read"),
            _ if std::time::Instant::now() > deadline => panic!("both widgets: {seen:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    };
    let a = &all[&id(&ns, "a")];
    assert_eq!(
        a["kind"], "Widget",
        "objects carry their kind for runbooks and Events"
    );
    assert_eq!(a["apiVersion"], "cachetest.autopilot.io/v1");
    let one_ns = cache.snapshot(&ar, Some(&ns)).await.expect("one namespace");
    assert_eq!(names(&one_ns), vec![id(&ns, "a")], "the namespace filter");

    // Changes arrive through the watch; the same reflector serves every read.
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar);
    api.delete("a", &Default::default())
        .await
        .expect("delete a");
    create(
        &client,
        &ns,
        gvk,
        serde_json::json!({"metadata": {"name": "c"}}),
    )
    .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let seen = cache.snapshot(&ar, Some(&ns)).await.map(|m| names(&m));
        match &seen {
            Ok(n) if n == &vec![id(&ns, "c")] => break,
            _ if std::time::Instant::now() > deadline => panic!("the copy to follow: {seen:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert_eq!(cache.watched(), 1, "one reflector for the kind");

    // Reads come from the copy: no LIST reaches the API server for them.
    let lists_before = widget_lists(&client).await;
    for _ in 0..5 {
        cache.snapshot(&ar, None).await.expect("read");
    }
    assert_eq!(widget_lists(&client).await, lists_before);
    assert!(lists_before >= 1.0, "the initial list was counted");
}

/// LIST requests for widgets the API server has answered, from its own
/// `apiserver_request_total`.
async fn widget_lists(client: &kube::Client) -> f64 {
    let text = client
        .request_text(
            http::Request::get("/metrics")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("API server metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains(r#"resource="widgets""#)
                && l.contains(r#"verb="LIST""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
