//! `autopilot sandbox`: a local estate to try the autopilot on — a real
//! control plane on loopback with our CRDs and the example resources.

use std::path::Path;

use anyhow::Context;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams},
};
use serde::Deserialize;

use crate::{
    act,
    crd::{self, BatchProcessor, ClearingAdapter, PaymentGateway, SagaOrchestrator},
    testenv::{ControlPlane, Options},
};

/// Reads every YAML document of every `*.yaml`/`*.yml` file in `dir`, sorted
/// by file name, naming the file in any parse error.
pub fn read_manifests(dir: &Path) -> anyhow::Result<Vec<(String, DynamicObject)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc).with_context(|| {
                format!("{}: document {} is not valid YAML", file.display(), i + 1)
            })?;
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_yaml::from_value(value).with_context(|| {
                format!(
                    "{}: document {} is not a Kubernetes object",
                    file.display(),
                    i + 1
                )
            })?;
            out.push((file.display().to_string(), obj));
        }
    }
    Ok(out)
}

pub async fn run(examples: &Path, namespace: &str, once: bool) -> anyhow::Result<()> {
    let manifests = read_manifests(examples)?;
    eprintln!("[sandbox] starting etcd, kube-apiserver and kube-controller-manager…");
    let cp = ControlPlane::start(Options {
        controller_manager: true,
    })
    .await
    .context("starting the local control plane")?;
    let client = cp.client().await?;
    eprintln!("[sandbox] control plane ready at {}", cp.server());

    act::apply_crds(&client, &crd::crds())
        .await
        .context("installing the payments.io CRDs")?;
    eprintln!("[sandbox] installed {} CRDs", crd::crds().len());

    let ns: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}
    }))?;
    act::apply_manifest(&client, &ns, namespace).await?;
    for (file, obj) in &manifests {
        act::apply_manifest(&client, obj, namespace)
            .await
            .with_context(|| format!("applying {file}"))?;
    }
    eprintln!(
        "[sandbox] applied {} example resources from {}",
        manifests.len(),
        examples.display()
    );

    println!(
        "{:<18} {:<12} {:<28} {:<10}",
        "KIND", "NAMESPACE", "NAME", "VERSION"
    );
    let lp = ListParams::default();
    for pgw in Api::<PaymentGateway>::all(client.clone()).list(&lp).await? {
        println!(
            "{:<18} {:<12} {:<28} {:<10}",
            "PaymentGateway",
            pgw.namespace().unwrap_or_default(),
            pgw.name_any(),
            pgw.spec.version
        );
    }
    for o in Api::<ClearingAdapter>::all(client.clone())
        .list(&lp)
        .await?
    {
        println!(
            "{:<18} {:<12} {:<28} {:<10}",
            "ClearingAdapter",
            o.namespace().unwrap_or_default(),
            o.name_any(),
            o.spec.version
        );
    }
    for o in Api::<BatchProcessor>::all(client.clone()).list(&lp).await? {
        println!(
            "{:<18} {:<12} {:<28} {:<10}",
            "BatchProcessor",
            o.namespace().unwrap_or_default(),
            o.name_any(),
            o.spec.version
        );
    }
    for o in Api::<SagaOrchestrator>::all(client.clone())
        .list(&lp)
        .await?
    {
        println!(
            "{:<18} {:<12} {:<28} {:<10}",
            "SagaOrchestrator",
            o.namespace().unwrap_or_default(),
            o.name_any(),
            o.spec.version
        );
    }

    if once {
        return Ok(());
    }
    eprintln!(
        "[sandbox] running. Use it with:\n  export KUBECONFIG={}\n[sandbox] Ctrl-C stops everything.",
        cp.kubeconfig().display()
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("[sandbox] stopping");
    Ok(())
}
