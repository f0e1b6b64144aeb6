//! Every model spec against the series the real exporters would give
//! Prometheus (tests/support/exposition*.rs), backfilled into a real
//! Prometheus with promtool and read through the agent's own observe code:
//! each component of the estate gets every signal its spec promises, and no
//! series lands on a component that does not exist (issue #13). Run once
//! with honorLabels false (the charts' default) and once with true.
#![cfg(feature = "testenv")]

#[path = "support/exposition.rs"]
mod exposition;
#[path = "support/exposition_estate.rs"]
mod exposition_estate;

use std::{
    collections::BTreeSet,
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
