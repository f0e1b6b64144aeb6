//! The reads of a cycle (steps 2 and 3 of `cycle`): every model spec's
//! series from Prometheus and the components that exist from the API, then
//! the resources and facts the runbooks decide on.
//!
//! Read-side I/O only: it returns what it read as plain values and must not
//! score, decide or write. A read that fails is counted, warned about once
//! per outage (`Outages`), and leaves a hole the later steps see — never a
//! stale value presented as current.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    metrics::Metrics,
    outages::{Notes, Outages},
};
use crate::{
    act::action::kind_info,
    detect::{ComponentId, SeriesSamples, spec::ValidatedSpec},
    observe::{
        Prometheus, cache::ResourceCache, facts::resource_facts, history::History, spec_resource,
    },
};

/// What step 2 read: the input of `evaluate::score`.
#[derive(Debug, Default)]
pub struct Observation {
    /// Series read from Prometheus.
    pub series: Vec<SeriesSamples>,
    /// Components that exist per the API, of the kinds whose listing worked.
    pub components: Vec<ComponentId>,
    /// Why Prometheus is unusable this cycle: no kind answered. `None` when
    /// at least one did (or no model spec asked).
    pub unavailable: Option<String>,
}

/// What step 3 read, keyed like `decide::cycle::Observed`.
#[derive(Debug, Default)]
pub struct DecisionInputs {
    pub resources: BTreeMap<ComponentId, Value>,
    pub facts: BTreeMap<ComponentId, BTreeMap<String, Value>>,
}

/// Where a cycle reads from, and which of those reads are failing.
pub struct Reader {
    prometheus: Option<Prometheus>,
    /// A replay's: the series at each step come from range queries read
    /// ahead in chunks instead of an instant query per cycle.
    history: Option<History>,
    /// Watched copies of the components and the resources decided on, of
    /// the namespaces in the agent's scope only (one watch per namespace).
    cache: ResourceCache,
    metrics: Metrics,
    /// Kinds Prometheus fails to answer for.
    unqueried: Outages,
    /// Kinds whose components cannot be listed.
    unlisted: Outages,
    /// Kinds whose resources cannot be read.
    unread: Outages,
    /// Series kept per query (`observe::MAX_SERIES_PER_QUERY`).
    series_cap: usize,
    /// Kinds whose query returns more series than `series_cap`.
    overfull: Outages,
}

/// A query that returned more series than the cap.
#[derive(Debug, thiserror::Error)]
#[error(
    "the query returned {returned} series, over the cap of {cap} per query: the first {cap} by component are scored, the other {} are not",
    returned - cap
)]
struct TooManySeries {
    returned: usize,
    cap: usize,
}

impl Reader {
    pub fn new(prometheus: Option<Prometheus>, cache: ResourceCache, metrics: Metrics) -> Self {
        Reader {
            prometheus,
            history: None,
            cache,
            metrics,
            // The counter and autopilot_prometheus_up carry an outage
            // meanwhile.
            unqueried: Outages::new(Notes {
                failed: "querying Prometheus failed; this kind is not scored until it answers",
                again: "querying Prometheus failed again",
                recovered: "Prometheus answers for this kind again",
            }),
            unlisted: Outages::new(Notes {
                failed: "listing components failed (is the operator's CRD installed?); scoring only the series of this kind",
                again: "listing components failed again",
                recovered: "listing components works again",
            }),
            unread: Outages::new(Notes {
                failed: "reading resources failed (is the operator's CRD installed?); runbooks on them report missing data until it works",
                again: "reading resources failed again",
                recovered: "reading resources works again",
            }),
            series_cap: crate::observe::MAX_SERIES_PER_QUERY,
            overfull: Outages::new(Notes {
                failed: "a model spec's query returned more series than the agent keeps per query; the rest are not scored (autopilot_series_dropped_total counts them): narrow the spec's query or split the estate into shards",
                again: "a model spec's query is still over the series cap",
                recovered: "a model spec's query is back under the series cap",
            }),
        }
    }

    /// Series kept per query.
    pub fn series_cap(&self) -> usize {
        self.series_cap
    }

    /// A reader of `history` (a replay): the same reads, the series served
    /// step by step from range queries.
    pub fn replaying(history: History, cache: ResourceCache, metrics: Metrics) -> Self {
        Reader {
            history: Some(history),
            ..Reader::new(None, cache, metrics)
        }
    }

    pub fn prometheus(&self) -> Option<&Prometheus> {
        match &self.history {
            Some(h) => Some(h.prometheus()),
            None => self.prometheus.as_ref(),
        }
    }

    /// The history a replay reads, if this reader replays.
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// The series of `spec` at `now`: an instant query, or a replay's
    /// history at that step.
    async fn query_spec(
        &mut self,
        spec: &ValidatedSpec,
        now: i64,
    ) -> Option<Result<Vec<SeriesSamples>, crate::observe::Error>> {
        match (&mut self.history, &self.prometheus) {
            (Some(h), _) => Some(h.query_spec(spec, now).await),
            (None, Some(p)) => Some(p.query_spec(spec, now).await),
            (None, None) => None,
        }
    }

    /// `target` as read now (a replay: as the cluster or the snapshot has
    /// it); `None` when it does not exist, `Err` when its kind cannot be
    /// read.
    pub async fn fetch_target(&mut self, target: &ComponentId) -> Result<Option<Value>, String> {
        let Some(info) = kind_info(&target.kind) else {
            return Ok(None);
        };
        let objects = self
            .cache
            .snapshot(&info.api_resource())
            .await
            .map_err(|e| crate::telemetry::chain(&e))?;
        Ok(objects.get(target).cloned())
    }

    /// Step 2 (observe): every spec's series at `now`, and the components
    /// of its kind. `None` without Prometheus configured: no findings by
    /// design, yet the cycle is not blind (cron and condition runbooks need
    /// no series).
    #[tracing::instrument(skip_all, fields(specs = specs.len(), series, unavailable))]
    pub async fn observe(&mut self, specs: &[ValidatedSpec], now: i64) -> Option<Observation> {
        self.prometheus()?;
        let mut obs = Observation::default();
        let mut answered = 0usize;
        let mut last_error = None;
        for spec in specs {
            match self.query_spec(spec, now).await? {
                Ok(s) => {
                    answered += 1;
                    // Prometheus sees the whole cluster; the agent observes
                    // its scope only, as its watches do.
                    let scope = self.cache.scope();
                    let mut s: Vec<SeriesSamples> = s
                        .into_iter()
                        .filter(|s| scope.allows_namespace(&s.component.namespace))
                        .collect();
                    let returned = s.len();
                    let dropped = crate::observe::cap_series(&mut s, self.series_cap);
                    if dropped > 0 {
                        self.metrics
                            .series_dropped
                            .with_label_values(&[spec.kind.as_str()])
                            .inc_by(dropped as u64);
                        let cap = self.series_cap;
                        self.overfull
                            .fail(&spec.kind, &TooManySeries { returned, cap });
                    } else {
                        self.overfull.recover(&spec.kind);
                    }
                    obs.series.extend(s);
                    self.unqueried.recover(&spec.kind);
                }
                Err(error) => {
                    self.metrics
                        .read_errors
                        .with_label_values(&["prometheus", error.kind()])
                        .inc();
                    self.unqueried.fail(&spec.kind, &error);
                    last_error = Some(error.to_string());
                }
            }
            match self.cache.snapshot(&spec_resource(spec)).await {
                Ok(c) => {
                    self.unlisted.recover(&spec.kind);
                    obs.components.extend(c.into_keys());
                }
                Err(error) => {
                    self.unlisted.fail(&spec.kind, &error);
                }
            }
        }
        if answered == 0 && !specs.is_empty() {
            obs.unavailable = Some(last_error.unwrap_or_else(|| "no answer".into()));
        }
        self.metrics
            .prometheus_up
            .set(i64::from(obs.unavailable.is_none()));
        let span = tracing::Span::current();
        span.record("series", obs.series.len());
        if let Some(reason) = &obs.unavailable {
            span.record("unavailable", reason.as_str());
        }
        Some(obs)
    }

    /// Step 3: the resources of `kinds` and their facts, and the replica
    /// lags when a runbook decides on Clusters. A kind that could not be
    /// read is absent, so runbooks on it report missing data.
    #[tracing::instrument(skip_all, fields(kinds = kinds.len(), resources))]
    pub async fn fetch_decision_inputs(
        &mut self,
        kinds: &BTreeSet<String>,
        now: i64,
    ) -> DecisionInputs {
        let mut inputs = DecisionInputs::default();
        for kind in kinds {
            self.fetch_resources(kind, &mut inputs).await;
        }
        if kinds.contains("Cluster")
            && let Some(prom) = self.prometheus()
        {
            match prom.replica_lags(now).await {
                Ok(lags) => {
                    let scope = self.cache.scope();
                    for (c, pods) in lags
                        .into_iter()
                        .filter(|(c, _)| scope.allows_namespace(&c.namespace))
                    {
                        inputs
                            .facts
                            .entry(c)
                            .or_default()
                            .insert("replica_lag_seconds".into(), serde_json::json!(pods));
                    }
                }
                Err(error) => {
                    self.metrics
                        .read_errors
                        .with_label_values(&["prometheus", error.kind()])
                        .inc();
                    tracing::warn!(error = %crate::telemetry::chain(&error), "reading replica lags failed; switchover runbooks report missing data");
                }
            }
        }
        tracing::Span::current().record("resources", inputs.resources.len());
        inputs
    }

    /// The resources of one kind, with their facts, into `inputs`.
    async fn fetch_resources(&mut self, kind: &str, inputs: &mut DecisionInputs) {
        let Some(info) = kind_info(kind) else {
            tracing::warn!(%kind, "a runbook triggers on a kind the agent cannot act on");
            return;
        };
        let resource = info.api_resource();
        match self.cache.snapshot(&resource).await {
            Ok(objects) => {
                self.unread.recover(kind);
                for (c, v) in objects {
                    let facts = resource_facts(kind, &v);
                    if !facts.is_empty() {
                        inputs.facts.entry(c.clone()).or_default().extend(facts);
                    }
                    inputs.resources.insert(c, v);
                }
            }
            Err(error) => {
                self.metrics
                    .read_errors
                    .with_label_values(&["resources", error.kind()])
                    .inc();
                self.unread.fail(kind, &error);
            }
        }
    }
}
