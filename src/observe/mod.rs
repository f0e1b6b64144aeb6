//! Reads the estate's health: one PromQL query per model spec against
//! Prometheus (instant for each cycle, range for warm-up history), series
//! labels mapped to components, and the components that exist according to
//! the Kubernetes API so that a component without series shows up as
//! "unobserved" instead of silently healthy.
//!
//! Read-only I/O. This module never scores (that is `detect`) and never
//! changes anything in the cluster. Missing, stale and NaN data stay explicit:
//! a query that fails is an error the cycle reports as "no data", never an
//! empty, healthy-looking result.

pub mod cache;
pub mod facts;
pub mod history;

use std::{collections::BTreeMap, path::Path, time::Duration};

use kube::api::ApiResource;
use prometheus_http_query::response::Data;

use crate::detect::{ComponentId, SeriesSamples, spec::ValidatedSpec};

/// Label carrying the signal name in a spec's combined query.
pub const SIGNAL_LABEL: &str = "autopilot_signal";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading model specs from {path}")]
    ReadSpecs {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading a model spec")]
    LoadSpec(#[from] crate::detect::Error),
    #[error("building the prometheus client for {url}: {message}")]
    BuildClient { url: String, message: String },
    #[error("querying prometheus for {kind}")]
    QueryPrometheus {
        kind: String,
        #[source]
        source: prometheus_http_query::Error,
    },
    #[error("querying prometheus for {kind}: unexpected {got} result")]
    ReadResult { kind: String, got: &'static str },
}

impl Error {
    /// Fixed category for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ReadSpecs { .. } => "read_specs",
            Error::LoadSpec(_) => "load_spec",
            Error::BuildClient { .. } => "build_client",
            Error::QueryPrometheus { .. } => "query_prometheus",
            Error::ReadResult { .. } => "read_result",
        }
    }
}

/// Reads and validates every `*.yaml` in `dir`, in file-name order.
pub fn load_model_specs(dir: &Path) -> Result<Vec<ValidatedSpec>, Error> {
    let read_err = |source| Error::ReadSpecs {
        path: dir.display().to_string(),
        source,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    let mut specs = Vec::with_capacity(paths.len());
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|source| Error::ReadSpecs {
            path: p.display().to_string(),
            source,
        })?;
        let spec = crate::detect::spec::validate_spec(&p.display().to_string(), &text)?;
        for w in &spec.warnings {
            tracing::warn!("{w}");
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// The single PromQL query of a spec: each signal's expression tagged with
/// its name in [`SIGNAL_LABEL`], joined with `or` (the tag keeps their label
/// sets apart, so `or` keeps every series).
pub fn build_query(spec: &ValidatedSpec) -> String {
    spec.signals
        .iter()
        .map(|s| {
            format!(
                "label_replace(({}), \"{SIGNAL_LABEL}\", \"{}\", \"\", \"\")",
                s.query.trim(),
                s.name
            )
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The component a series belongs to, from the spec's label rules; `None`
/// when the name label is missing or empty.
pub fn component_of(
    spec: &ValidatedSpec,
    labels: &BTreeMap<String, String>,
) -> Option<ComponentId> {
    let name = labels.get(&spec.name_label).filter(|n| !n.is_empty())?;
    let namespace = spec
        .namespace_label
        .as_ref()
        .and_then(|l| labels.get(l))
        .cloned()
        .unwrap_or_default();
    Some(ComponentId {
        kind: spec.kind.clone(),
        namespace,
        name: name.clone(),
    })
}

/// Series one query (one model spec's) may bring into a cycle: the rest
/// are dropped unscored, with a warning and
/// `autopilot_series_dropped_total`, so a runaway label (a pod name in a
/// spec's `by`, a new exporter) cannot grow the detectors' state and the
/// cycle without bound. 20,000 is twice the largest estate benchmarked
/// (BENCHMARKS.md, "Cycle at 10,000 series") in a single kind.
pub const MAX_SERIES_PER_QUERY: usize = 20_000;

/// Keeps the first `cap` of `series` in (component, signal) order — the
/// same ones every cycle, so the detectors kept stay warm — and returns
/// how many were dropped. Under the cap, `series` is left as it is.
pub fn cap_series(series: &mut Vec<SeriesSamples>, cap: usize) -> usize {
    if series.len() <= cap {
        return 0;
    }
    series.sort_unstable_by(|a, b| (&a.component, &a.signal).cmp(&(&b.component, &b.signal)));
    let dropped = series.len() - cap;
    series.truncate(cap);
    dropped
}

/// Prometheus, with a deadline on every query.
#[derive(Clone)]
pub struct Prometheus {
    client: prometheus_http_query::Client,
}

impl Prometheus {
    /// A client for `url`; a query slower than `timeout` fails (and the
    /// cycle reports "no data").
    pub fn new(url: &str, timeout: Duration) -> Result<Self, Error> {
        let fail = |message: String| Error::BuildClient {
            url: url.to_string(),
            message,
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let client =
            prometheus_http_query::Client::from(http, url).map_err(|e| fail(e.to_string()))?;
        Ok(Prometheus { client })
    }

    /// Every component's current value of every signal of `spec`, at `at`
    /// (unix seconds), in one query.
    #[tracing::instrument(name = "query", skip_all, fields(kind = %spec.kind))]
    pub async fn query_spec(
        &self,
        spec: &ValidatedSpec,
        at: i64,
    ) -> Result<Vec<SeriesSamples>, Error> {
        let result = self
            .client
            .query(build_query(spec))
            .at(at)
            .get()
            .await
            .map_err(|source| Error::QueryPrometheus {
                kind: spec.kind.clone(),
                source,
            })?;
        match result.data() {
            Data::Vector(v) => Ok(v
                .iter()
                .filter_map(|s| {
                    series(
                        spec,
                        s.metric(),
                        vec![(s.sample().timestamp() as i64, s.sample().value())],
                    )
                })
                .collect()),
            Data::Matrix(_) => Err(read_err(spec, "matrix")),
            Data::Scalar(_) => Err(read_err(spec, "scalar")),
        }
    }

    /// History of every series of `spec` between `start` and `end` at
    /// `step_seconds` resolution, in one range query: loaded at start-up so
    /// detectors are warm after a restart.
    pub async fn query_history(
        &self,
        spec: &ValidatedSpec,
        start: i64,
        end: i64,
        step_seconds: f64,
    ) -> Result<Vec<SeriesSamples>, Error> {
        let result = self
            .client
            .query_range(build_query(spec), start, end, step_seconds)
            .get()
            .await
            .map_err(|source| Error::QueryPrometheus {
                kind: spec.kind.clone(),
                source,
            })?;
        match result.data() {
            Data::Matrix(m) => Ok(m
                .iter()
                .filter_map(|s| {
                    let samples = s
                        .samples()
                        .iter()
                        .map(|x| (x.timestamp() as i64, x.value()))
                        .collect();
                    series(spec, s.metric(), samples)
                })
                .collect()),
            Data::Vector(_) => Err(read_err(spec, "vector")),
            Data::Scalar(_) => Err(read_err(spec, "scalar")),
        }
    }
}

fn read_err(spec: &ValidatedSpec, got: &'static str) -> Error {
    Error::ReadResult {
        kind: spec.kind.clone(),
        got,
    }
}

fn series(
    spec: &ValidatedSpec,
    metric: &std::collections::HashMap<String, String>,
    samples: Vec<(i64, f64)>,
) -> Option<SeriesSamples> {
    let labels: BTreeMap<String, String> =
        metric.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let signal = labels.get(SIGNAL_LABEL)?.clone();
    Some(SeriesSamples {
        component: component_of(spec, &labels)?,
        signal,
        samples,
    })
}

/// The components of `spec`'s kind that exist in the cluster (all
/// namespaces), from the Kubernetes API.
/// The API resource of the kind a model spec scores.
pub fn spec_resource(spec: &ValidatedSpec) -> ApiResource {
    let gvk = kube::api::GroupVersionKind::gvk(&spec.group, &spec.version, &spec.kind);
    ApiResource::from_gvk_with_plural(&gvk, &spec.plural)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, signal: &str) -> SeriesSamples {
        SeriesSamples {
            component: ComponentId {
                kind: "PaymentGateway".into(),
                namespace: "pay".into(),
                name: name.into(),
            },
            signal: signal.into(),
            samples: vec![(0, 1.0)],
        }
    }

    /// Issue #16, "bound what grows": over the cap, the same series are
    /// kept whatever order Prometheus answers in; under it, nothing moves.
    #[test]
    fn over_the_cap_the_first_series_by_component_are_kept_and_the_rest_counted() {
        let answer = |order: &[(&str, &str)]| -> Vec<SeriesSamples> {
            order.iter().map(|(n, s)| series(n, s)).collect()
        };
        let mut a = answer(&[("c", "cpu"), ("a", "rate"), ("b", "cpu"), ("a", "cpu")]);
        let mut b = answer(&[("a", "cpu"), ("b", "cpu"), ("c", "cpu"), ("a", "rate")]);
        assert_eq!(cap_series(&mut a, 3), 1);
        assert_eq!(cap_series(&mut b, 3), 1);
        assert_eq!(a, answer(&[("a", "cpu"), ("a", "rate"), ("b", "cpu")]));
        assert_eq!(a, b, "the same series whatever the answer's order");

        let mut under = answer(&[("c", "cpu"), ("a", "rate")]);
        assert_eq!(cap_series(&mut under, 2), 0);
        assert_eq!(under, answer(&[("c", "cpu"), ("a", "rate")]), "untouched");
    }
}
