//! The default model specs in `models/` all load and validate, cover every
//! component kind the agent watches, and name kinds that exist (our CRDs, the
//! third-party fixture CRDs, or built-in Kubernetes kinds).

use std::{collections::BTreeSet, path::Path};

use autopilot::observe::{build_query, load_model_specs};

fn models() -> Vec<autopilot::detect::spec::ValidatedSpec> {
    load_model_specs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).unwrap_or_else(|e| {
        panic!(
            "default specs must load: {e} ({:?})",
            std::error::Error::source(&e).map(|s| s.to_string())
        )
    })
}

#[test]
fn every_default_spec_loads_and_every_watched_kind_has_one() {
    let specs = models();
    let kinds: BTreeSet<(String, String)> = specs
        .iter()
        .map(|s| (s.group.clone(), s.kind.clone()))
        .collect();
    for (group, kind) in [
        ("postgresql.cnpg.io", "Cluster"),
        ("kafka.strimzi.io", "Kafka"),
        ("kafka.strimzi.io", "KafkaNodePool"),
        ("app.redislabs.com", "RedisEnterpriseDatabase"),
        ("servicebus.azure.com", "Namespace"),
        ("networking.istio.io", "VirtualService"),
        ("monitoring.coreos.com", "ServiceMonitor"),
        ("monitoring.coreos.com", "PrometheusRule"),
        ("jaegertracing.io", "Jaeger"),
        ("argoproj.io", "Application"),
        ("cert-manager.io", "Certificate"),
        ("external-secrets.io", "ExternalSecret"),
        ("apps", "Deployment"),
        ("autoscaling", "HorizontalPodAutoscaler"),
        ("payments.io", "PaymentGateway"),
        ("payments.io", "ClearingAdapter"),
        ("payments.io", "BatchProcessor"),
        ("payments.io", "SagaOrchestrator"),
    ] {
        assert!(
            kinds.contains(&(group.to_string(), kind.to_string())),
            "no model spec for {kind}.{group}"
        );
    }
    // One spec per kind: two files for the same kind would double-score it.
    assert_eq!(kinds.len(), specs.len());
}

#[test]
fn spec_kinds_match_installed_crds() {
    let mut served: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds");
    let mut texts: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixture CRDs")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .collect();
    texts.push(autopilot::crd::crds_yaml().expect("our CRDs"));
    for text in texts {
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml");
            let spec = &v["spec"];
            if spec.is_null() {
                continue;
            }
            for ver in spec["versions"].as_array().into_iter().flatten() {
                served.insert((
                    spec["group"].as_str().unwrap_or_default().into(),
                    ver["name"].as_str().unwrap_or_default().into(),
                    spec["names"]["kind"].as_str().unwrap_or_default().into(),
                    spec["names"]["plural"].as_str().unwrap_or_default().into(),
                ));
            }
        }
    }
    for s in models() {
        if s.group == "apps" || s.group == "autoscaling" {
            continue; // built into Kubernetes
        }
        let key = (
            s.group.clone(),
            s.version.clone(),
            s.kind.clone(),
            s.plural.clone(),
        );
        assert!(
            served.contains(&key),
            "{}: {key:?} is not served by any known CRD",
            s.file
        );
    }
}

#[test]
fn each_spec_is_one_query_tagging_every_signal() {
    for s in models() {
        let q = build_query(&s);
        for sig in &s.signals {
            assert!(
                q.contains(&format!("\"autopilot_signal\", \"{}\"", sig.name)),
                "{}: signal {} missing from {q}",
                s.file,
                sig.name
            );
        }
        assert_eq!(
            q.matches(" or label_replace((").count(),
            s.signals.len() - 1,
            "{}",
            s.file
        );
    }
}
