//! Every model spec against the series the real exporters would give
//! Prometheus (tests/support/exposition*.rs), backfilled into a real
//! Prometheus with promtool and read through the agent's own observe code:
//! each component of the estate gets every signal its spec promises, and no
//! series lands on a component that does not exist (issue #13). Run once
//! with honorLabels false (the charts' default) and once with true. Also:
//! the payments metric contract (docs/payments-metrics.md) is exactly what
//! the specs read and what the exposition serves.
#![cfg(feature = "testenv")]

#[path = "support/exposition.rs"]
mod exposition;
#[path = "support/exposition_estate.rs"]
mod exposition_estate;
#[path = "support/exposition_payments.rs"]
mod exposition_payments;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use autopilot::{
    detect::{ComponentId, SeriesSamples},
    observe::{Prometheus as Client, load_model_specs},
    testenv::prometheus::{Options, Prometheus},
};
use exposition::{ACTIVE_MESSAGES, Scrape, build_exposition};

/// The end of the backfilled hour, far enough back that Prometheus' head
/// block does not overlap the backfilled one.
fn end() -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    now / 60 * 60 - 600
}

/// Problems of one scrape mode, as readable lines.
async fn problems(scrape: Scrape) -> Vec<String> {
    let end = end();
    // 70 minutes: `increase(...[1h])` in the batch spec needs a full hour.
    let exposition = build_exposition(scrape, end - 70 * 60, end, 30);
    let prom = Prometheus::start(&Options {
        targets: vec![],
        backfill: Some(exposition.text),
    })
    .expect("prometheus with the backfilled exposition");
    let client = Client::new(prom.url(), Duration::from_secs(20)).expect("client");
    let specs = load_model_specs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
        .expect("default specs");
    let exists: BTreeSet<ComponentId> = exposition
        .components
        .iter()
        .map(|c| ComponentId {
            kind: c.kind.clone(),
            namespace: c.namespace.clone(),
            name: c.name.clone(),
        })
        .collect();
    let mut out = Vec::new();
    for spec in &specs {
        let series = client
            .query_spec(spec, end)
            .await
            .unwrap_or_else(|e| panic!("querying {}: {e:?}", spec.kind));
        for s in &series {
            if !exists.contains(&s.component) {
                out.push(format!(
                    "{scrape:?} {}: {} lands on {}/{}, which does not exist",
                    spec.kind, s.signal, s.component.namespace, s.component.name
                ));
            }
        }
        for c in exists.iter().filter(|c| c.kind == spec.kind) {
            for signal in &spec.signals {
                out.extend(check(scrape, &series, c, &signal.name));
            }
        }
    }
    out
}

/// The one series `c` must get for `signal`, finite, and for the Azure
/// message counts the value the exporter reports for one aggregation.
fn check(
    scrape: Scrape,
    series: &[SeriesSamples],
    c: &ComponentId,
    signal: &str,
) -> Option<String> {
    let at = format!("{scrape:?} {} {}/{} {signal}", c.kind, c.namespace, c.name);
    let found: Vec<_> = series
        .iter()
        .filter(|s| &s.component == c && s.signal == signal)
        .collect();
    let [one] = found.as_slice() else {
        return Some(format!("{at}: {} series, want 1", found.len()));
    };
    let value = one.samples.last().map(|(_, v)| *v).unwrap_or(f64::NAN);
    if !value.is_finite() {
        return Some(format!("{at}: value {value}"));
    }
    if c.kind == "Namespace" && signal == "active_messages" && value != ACTIVE_MESSAGES {
        return Some(format!(
            "{at}: {value}, want {ACTIVE_MESSAGES} (one aggregation)"
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_maps_the_real_exporters_series_to_the_estate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut all = problems(Scrape::Renamed).await;
    all.extend(problems(Scrape::Honored).await);
    assert!(
        all.is_empty(),
        "{} problems:\n{}",
        all.len(),
        all.join("\n")
    );
}

/// The text of every model spec without its comments (they may name a
/// family with a `*`), one string per spec.
fn spec_texts() -> Vec<String> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(models).expect("models") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("read");
        out.push(
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    out
}

/// A row of docs/payments-metrics.md: name, type and labels.
fn contract() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/payments-metrics.md");
    let text = std::fs::read_to_string(path).expect("docs/payments-metrics.md");
    let strip = |s: &str| s.trim().trim_matches('`').to_string();
    text.lines()
        .filter(|l| l.starts_with("| `payments_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').collect();
            let labels = cells[4].split(',').map(strip).collect();
            (strip(cells[1]), (cells[2].trim().to_string(), labels))
        })
        .collect()
}

/// The published payments contract is what the specs read and what the
/// exposition serves: same names, types and labels (target labels and
/// `le` aside).
#[test]
fn the_payments_contract_is_what_the_specs_read_and_the_exposition_serves() {
    let contract = contract();
    assert_eq!(contract.len(), 14, "{contract:?}");
    let mut read = BTreeSet::new();
    for text in spec_texts() {
        for (i, _) in text.match_indices("payments_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            read.insert(name.trim_end_matches("_bucket").to_string());
        }
    }
    let listed: BTreeSet<String> = contract.keys().cloned().collect();
    assert_eq!(read, listed, "names the specs read vs the contract");

    let scrape = [
        "namespace",
        "pod",
        "service",
        "job",
        "instance",
        "container",
        "endpoint",
        "le",
    ];
    let mut served: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    let text = build_exposition(Scrape::Renamed, 0, 0, 30).text;
    for line in text.lines().filter(|l| l.starts_with("payments_")) {
        let (name, rest) = line.split_once('{').expect("labelled series");
        let (base, kind) = match ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
        {
            Some(base) => (base, "histogram"),
            None if text.contains(&format!("# TYPE {name} counter")) => (name, "counter"),
            None => (name, "gauge"),
        };
        let labels = rest
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_string()))
            .filter(|k| !scrape.contains(&k.as_str()))
            .collect();
        served.insert(base.to_string(), (kind.to_string(), labels));
    }
    assert_eq!(served, contract, "the exposition vs the contract");
}

/// Metric names defined by deploy/kube-state-metrics/custom-resource-state.yaml
/// (`<metricNamePrefix, default kube_customresource>_<name>`).
fn ksm_config_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kube-state-metrics/custom-resource-state.yaml");
    let text = std::fs::read_to_string(path).expect("kube-state-metrics config");
    let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    let mut out = BTreeSet::new();
    for resource in config["spec"]["resources"]
        .as_sequence()
        .expect("resources")
    {
        let prefix = resource["metricNamePrefix"]
            .as_str()
            .unwrap_or("kube_customresource");
        for metric in resource["metrics"].as_sequence().expect("metrics") {
            out.insert(format!(
                "{prefix}_{}",
                metric["name"].as_str().expect("name")
            ));
        }
    }
    out
}

/// Every custom-resource-state series a spec reads or the exposition
/// serves is defined by the configuration we ship.
#[test]
fn the_shipped_kube_state_metrics_config_defines_every_custom_resource_series() {
    let defined = ksm_config_metrics();
    let is_crs = |n: &str| {
        n.starts_with("kube_customresource_") || (n.starts_with("strimzi_") && n.ends_with("_info"))
    };
    let mut used = BTreeSet::new();
    for text in spec_texts() {
        let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        used.extend(words.filter(|w| is_crs(w)).map(String::from));
    }
    let text = build_exposition(Scrape::Renamed, 0, 0, 30).text;
    for line in text.lines().filter(|l| is_crs(l)) {
        used.insert(line.split('{').next().unwrap_or_default().to_string());
    }
    let missing: Vec<_> = used.difference(&defined).collect();
    assert!(
        missing.is_empty(),
        "not defined in deploy/kube-state-metrics: {missing:?} (defined: {defined:?})"
    );
    assert!(used.len() >= 4, "{used:?}");
}
