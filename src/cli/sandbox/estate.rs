//! The estate of `autopilot sandbox`, built on `crate::testenv` (so only in
//! a build with `--features testenv`): a real etcd, kube-apiserver and
//! kube-controller-manager on loopback with our CRDs and the example
//! resources, a fake kubelet so their pods run, a simulated gateway exporter
//! scraped by a real Prometheus, and the agent itself in dry-run: its
//! controllers reconcile the examples, and when the simulated gateway
//! saturates, its detectors and runbooks decide what they would do. It must
//! not be reachable from `autopilot run`: the agent never starts a cluster.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::Context;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams},
};
use serde::Deserialize;

use super::Settings;
use crate::{
    act,
    act::journal::Journal,
    crd,
    decide::Mode,
    store::SqlJournal,
    testenv::{
        ControlPlane, Options, kubelet,
        prometheus::{self, Exporter, Prometheus},
    },
};

/// The simulated exposition of the gateways' metrics `t` seconds after the
/// start: 200 requests/s with 0.1 % errors, 40 of 100 in-flight slots busy
/// until `incident_after`, then two more every second up to 98 (the
/// saturation an autoscale runbook reacts to).
pub fn simulated_metrics(gateways: &[(String, String)], t: f64, incident_after: f64) -> String {
    let inflight = if t <= incident_after {
        40.0
    } else {
        (40.0 + 2.0 * (t - incident_after)).min(98.0)
    };
    let requests = 200.0 * t;
    let mut out = String::from(
        "# TYPE payments_gateway_inflight_requests gauge\n\
         # TYPE payments_gateway_max_inflight_requests gauge\n\
         # TYPE payments_gateway_requests_total counter\n",
    );
    for (ns, name) in gateways {
        let l = format!("namespace=\"{ns}\",gateway=\"{name}\"");
        out.push_str(&format!(
            "payments_gateway_inflight_requests{{{l}}} {inflight}\n\
             payments_gateway_max_inflight_requests{{{l}}} 100\n\
             payments_gateway_requests_total{{{l},code=\"200\"}} {:.0}\n\
             payments_gateway_requests_total{{{l},code=\"500\"}} {:.0}\n",
            requests * 0.999,
            requests * 0.001
        ));
    }
    out
}

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

/// Runs the sandbox until Ctrl-C (or its first decision with `--once`).
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let manifests = read_manifests(&settings.examples)?;
    let cp = start_cluster(&settings, &manifests).await?;
    let client = cp.client().await?;
    let _kubelet = kubelet::start(client.clone(), &settings.namespace)
        .await
        .context("starting the fake kubelet")?;

    // The simulated gateways, scraped by a real Prometheus when installed.
    let gateways: Vec<(String, String)> = manifests
        .iter()
        .filter(|(_, o)| o.types.as_ref().is_some_and(|t| t.kind == "PaymentGateway"))
        .map(|(_, o)| {
            (
                o.namespace().unwrap_or_else(|| settings.namespace.clone()),
                o.name_any(),
            )
        })
        .collect();
    let exporter = Exporter::start().context("starting the simulated exporter")?;
    let incident = settings.incident_after_seconds as f64;
    exporter.set(simulated_metrics(&gateways, 0.0, incident));
    let prom = start_prometheus(&exporter);

    let journal_dir = tempfile::tempdir().context("creating the journal folder")?;
    let db = journal_dir.path().join("journal.db");
    let opts = agent_options(&settings, prom.as_ref().map(|p| p.url().to_string()), &db);
    let mut agent = tokio::spawn(crate::agent::run_with(client.clone(), opts));
    eprintln!(
        "[sandbox] the agent runs in dry-run: http://{}/metrics; journal {}",
        settings.listen,
        db.display()
    );
    eprintln!(
        "[sandbox] the gateways saturate after {}s; watch what the agent would do",
        settings.incident_after_seconds
    );

    let journal = loop {
        // The agent creates the journal; wait for it.
        if db.exists() || agent.is_finished() {
            break SqlJournal::connect(&db.display().to_string()).await?;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let start = tokio::time::Instant::now();
    let mut shown = Shown::default();
    let deadline = Duration::from_secs(settings.incident_after_seconds + 240);
    loop {
        let t = start.elapsed().as_secs_f64();
        exporter.set(simulated_metrics(&gateways, t, incident));
        let decided = shown.print_news(&client, &journal).await?;
        if settings.once && decided {
            eprintln!("[sandbox] the agent decided; stopping (--once)");
            break;
        }
        if agent.is_finished() {
            let result = (&mut agent).await;
            anyhow::bail!("the agent stopped: {result:?}");
        }
        if settings.once && start.elapsed() > deadline {
            anyhow::bail!(
                "no decision within {}s; see the agent's log above",
                deadline.as_secs()
            );
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            r = tokio::signal::ctrl_c() => {
                r?;
                eprintln!("[sandbox] stopping");
                break;
            }
        }
    }
    if !settings.once {
        eprintln!(
            "[sandbox] use it with: export KUBECONFIG={}",
            cp.kubeconfig().display()
        );
    }
    agent.abort();
    journal.close().await;
    Ok(())
}

/// The control plane with our CRDs, the operators' CRDs, the namespace and
/// the example resources.
async fn start_cluster(
    settings: &Settings,
    manifests: &[(String, DynamicObject)],
) -> anyhow::Result<ControlPlane> {
    let namespace = settings.namespace.as_str();
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
    if settings.operator_crds.is_dir() {
        let mut crds = Vec::new();
        for (file, obj) in read_manifests(&settings.operator_crds)? {
            crds.push(
                serde_json::from_value(serde_json::to_value(&obj)?)
                    .with_context(|| format!("{file}: not a CustomResourceDefinition"))?,
            );
        }
        act::apply_crds(&client, &crds)
            .await
            .context("installing the operators' CRDs")?;
        eprintln!(
            "[sandbox] installed {} operator CRDs from {} (CloudNativePG, Strimzi, cert-manager, …)",
            crds.len(),
            settings.operator_crds.display()
        );
    }

    let ns: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}
    }))?;
    act::apply_manifest(&client, &ns, namespace).await?;
    // The guard policy, as the chart installs it: without one the agent
    // sends nothing (it fails closed). An empty spec: the defaults.
    let policy: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "payments.io/v1", "kind": "AutopilotPolicy",
        "metadata": {"name": crate::act::guard::POLICY_NAME, "namespace": namespace},
        "spec": {},
    }))?;
    act::apply_manifest(&client, &policy, namespace).await?;
    for (file, obj) in manifests {
        act::apply_manifest(&client, obj, namespace)
            .await
            .with_context(|| format!("applying {file}"))?;
    }
    eprintln!(
        "[sandbox] applied {} example resources from {}; a fake kubelet runs their pods",
        manifests.len(),
        settings.examples.display()
    );
    Ok(cp)
}

/// A real Prometheus scraping the exporter, or `None` (the agent then runs
/// blind, as it would with Prometheus down).
fn start_prometheus(exporter: &Exporter) -> Option<Prometheus> {
    match Prometheus::start(&prometheus::Options {
        targets: vec![exporter.addr().to_string()],
        backfill: None,
    }) {
        Ok(p) => {
            eprintln!(
                "[sandbox] Prometheus at {} scrapes the simulated gateways",
                p.url()
            );
            Some(p)
        }
        Err(e) => {
            eprintln!(
                "[sandbox] Prometheus did not start ({e}); run scripts/install-deps for findings. The agent runs without them."
            );
            None
        }
    }
}

/// The agent as the sandbox runs it: dry-run, no leader election, a fast
/// cycle, a journal in a temporary folder.
fn agent_options(
    settings: &Settings,
    prometheus_url: Option<String>,
    db: &Path,
) -> crate::agent::Options {
    crate::agent::Options {
        reconcile: crate::reconcile::Settings {
            policy_namespace: Some(settings.namespace.clone()),
            ..Default::default()
        },
        listen: settings.listen,
        namespace: settings.namespace.clone(),
        leadership: crate::agent::Leadership {
            enabled: false,
            lease_name: "autopilot-leader".into(),
            identity: "sandbox".into(),
            lease_seconds: 15,
        },
        controllers: true,
        prometheus_url,
        prometheus_timeout: Duration::from_secs(5),
        database_url: db.display().to_string(),
        rules: crate::agent::RulesSource::Dir(settings.rules.clone()),
        models: settings.models.clone(),
        mode: Mode::DryRun,
        cycle_interval: Duration::from_secs(2),
        warmup_history: Duration::ZERO,
        // Dry-run: nothing to approve.
        approval_policy: None,
        review_listen: None,
    }
}

/// What the sandbox has printed so far.
#[derive(Default)]
struct Shown {
    rows: i64,
    table: String,
}

impl Shown {
    /// Prints the resource table when it changed and the journal rows not
    /// yet shown; whether any decision was printed.
    async fn print_news(
        &mut self,
        client: &kube::Client,
        journal: &SqlJournal,
    ) -> anyhow::Result<bool> {
        let table = resource_table(client).await?;
        if table != self.table {
            println!("{table}");
            self.table = table;
        }
        let mut rows = journal.list(1000, false).await?;
        rows.retain(|r| r.id > self.rows);
        rows.sort_by_key(|r| r.id);
        for r in &rows {
            println!(
                "[autopilot] #{} {} → {} on {}: {}{} — {}",
                r.id,
                r.entry.runbook,
                r.entry.action_kind,
                r.entry.target,
                r.outcome.as_deref().unwrap_or("in flight"),
                if r.entry.verdict == crate::act::journal::verdict::ALLOWED {
                    String::new()
                } else {
                    format!(" ({}: {})", r.entry.verdict, r.entry.verdict_detail)
                },
                r.entry.action["reason"].as_str().unwrap_or_default(),
            );
            if let Some(p) = &r.entry.patch {
                println!("[autopilot]    patch it would send: {p}");
            }
            self.rows = r.id;
        }
        Ok(!rows.is_empty())
    }
}

/// Every payments resource with its version, phase and ready replicas.
async fn resource_table(client: &kube::Client) -> anyhow::Result<String> {
    let mut out = format!(
        "{:<18} {:<12} {:<20} {:<9} {:<12} {}",
        "KIND", "NAMESPACE", "NAME", "VERSION", "PHASE", "AVAILABLE"
    );
    for (kind, _) in crate::kinds::payments() {
        let resource = crate::kinds::KindInfo::from(kind).api_resource();
        let list = Api::<DynamicObject>::all_with(client.clone(), &resource)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing {}", resource.plural))?;
        let mut rows: BTreeMap<(String, String), String> = BTreeMap::new();
        for o in list {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            rows.insert(
                (o.namespace().unwrap_or_default(), o.name_any()),
                format!(
                    "{:<9} {:<12} {}",
                    text(&o.data["spec"]["version"]),
                    text(&o.data["status"]["phase"]),
                    text(&o.data["status"]["availableReplicas"]),
                ),
            );
        }
        for ((ns, name), rest) in rows {
            out.push_str(&format!(
                "\n{:<18} {:<12} {:<20} {rest}",
                resource.kind, ns, name
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_simulated_gateway_saturates_after_the_incident_starts() {
        let gws = [("payments".to_string(), "gw".to_string())];
        let value = |text: &str, metric: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with(metric))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let steady = simulated_metrics(&gws, 30.0, 40.0);
        assert_eq!(value(&steady, "payments_gateway_inflight_requests{"), 40.0);
        assert_eq!(
            value(&steady, "payments_gateway_max_inflight_requests{"),
            100.0
        );
        assert!(steady.contains("namespace=\"payments\",gateway=\"gw\""));
        let ramp = simulated_metrics(&gws, 50.0, 40.0);
        assert_eq!(value(&ramp, "payments_gateway_inflight_requests{"), 60.0);
        let capped = simulated_metrics(&gws, 500.0, 40.0);
        assert_eq!(value(&capped, "payments_gateway_inflight_requests{"), 98.0);
        // Counters only grow.
        let c = |t| {
            value(
                &simulated_metrics(&gws, t, 40.0),
                "payments_gateway_requests_total{namespace=\"payments\",gateway=\"gw\",code=\"200\"}",
            )
        };
        assert!(c(10.0) < c(11.0));
    }
}
