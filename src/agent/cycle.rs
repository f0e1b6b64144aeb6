//! The observe → detect → decide → act loop the leader runs every
//! `--cycle-seconds`:
//!
//! 1. reload the runbooks if their source changed (last good versions keep
//!    running when a new one does not compile);
//! 2. read every model spec's signals from Prometheus and the components
//!    that exist from the API, and score them (`detect`);
//! 3. read the resources and facts the runbooks decide on;
//! 4. evaluate the runbooks that the findings, the cron schedules and the
//!    resource conditions trigger (`decide`);
//! 5. hand their proposals to the executor under the guard policy read this
//!    cycle (`act`), then apply annotated approvals and verify earlier
//!    actions.
//!
//! A cycle never acts on data it could not read: without Prometheus no
//! finding exists, a resource that was not read is a missing-data error, and
//! without a readable guard policy nothing is sent at all.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use kube::{Client, runtime::events::Recorder};
use serde_json::Value;
use tokio::sync::watch;

use super::{
    metrics::Metrics,
    rules::{RulesSource, Snapshot, Sources, read_dir},
};
use crate::{
    act::{
        self,
        action::kind_info,
        executor::{Executor, Proposal, fetch_policy},
        verify::Verification,
    },
    decide::{
        Mode, RunbookSet, Trigger,
        cycle::{Observed, evaluate_cycle},
    },
    detect::{ComponentId, CycleInput, Estate, Finding, SeriesSamples},
    observe::{Prometheus, cache::ResourceCache, facts::resource_facts, spec_resource},
    store::SqlJournal,
};

/// A series not seen for this long (a deleted component) is forgotten.
const SAMPLES_FORGOTTEN_AFTER_SECONDS: i64 = 3600;

/// Recent samples kept per (component, signal) for `ctx.samples`.
const SAMPLES_KEPT: usize = 30;

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The agent's own namespace: the guard policy ConfigMap lives here.
    pub namespace: String,
    /// Decide on resources of this namespace only (`None`: all namespaces).
    pub watch_namespace: Option<String>,
    pub mode: Mode,
    pub interval: std::time::Duration,
    /// Prometheus history read on becoming leader so detectors start warm.
    pub warmup_history: std::time::Duration,
}

/// What one cycle did, for logs and tests.
#[derive(Debug, Default)]
pub struct Summary {
    pub prometheus_unavailable: Option<String>,
    /// Series read from Prometheus.
    pub series: usize,
    /// Signals without usable data, and signals still warming up.
    pub no_data: usize,
    pub warming_up: usize,
    pub findings: usize,
    pub decisions: usize,
    pub decision_errors: usize,
    pub proposals: usize,
    /// `(journal id, outcome)` of every proposal sent to the executor.
    pub executed: Vec<(i64, String)>,
    /// Why nothing was sent this cycle, if so.
    pub not_acted: Option<String>,
}

pub struct Autopilot {
    client: Client,
    prometheus: Option<Prometheus>,
    estate: Estate,
    runbooks: RunbookSet,
    executor: Executor<SqlJournal>,
    metrics: Metrics,
    recorder: Recorder,
    settings: Settings,
    rules: RulesSource,
    rules_rx: Option<watch::Receiver<Option<Snapshot>>>,
    /// The sources loaded last (to reload a folder only when it changed).
    loaded: Option<Sources>,
    /// Watched copies of the components and the resources decided on.
    cache: ResourceCache,
    /// Kinds whose listing failed, so the warning is logged once.
    unlisted: BTreeSet<String>,
    /// Kinds Prometheus failed to answer for, likewise.
    unqueried: BTreeSet<String>,
    /// Kinds whose resources could not be read, likewise.
    unread: BTreeSet<String>,
    /// Per (component, signal): when last seen, and the recent values.
    samples: BTreeMap<(ComponentId, String), (i64, VecDeque<f64>)>,
    last: Option<i64>,
}

/// Everything the loop is built from.
pub struct Parts {
    pub client: Client,
    pub prometheus: Option<Prometheus>,
    pub estate: Estate,
    pub runbooks: RunbookSet,
    pub executor: Executor<SqlJournal>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub settings: Settings,
    pub rules: RulesSource,
    pub rules_rx: Option<watch::Receiver<Option<Snapshot>>>,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Autopilot {
    pub fn new(p: Parts) -> Self {
        Autopilot {
            cache: ResourceCache::new(p.client.clone()),
            client: p.client,
            prometheus: p.prometheus,
            estate: p.estate,
            runbooks: p.runbooks,
            executor: p.executor,
            metrics: p.metrics,
            recorder: p.recorder,
            settings: p.settings,
            rules: p.rules,
            rules_rx: p.rules_rx,
            loaded: None,
            unlisted: BTreeSet::new(),
            unqueried: BTreeSet::new(),
            unread: BTreeSet::new(),
            samples: BTreeMap::new(),
            last: None,
        }
    }

    /// Loads a new version of the runbooks and reports what was rejected.
    async fn load(&mut self, snapshot: Snapshot) {
        let errors = self.runbooks.load(&snapshot.sources);
        let rejected: BTreeSet<String> = errors
            .iter()
            .filter_map(|e| match e {
                crate::decide::Error::CompileRunbook { file, .. } => Some(file.clone()),
                _ => None,
            })
            .collect();
        for (name, _) in &snapshot.sources {
            self.metrics
                .runbook_rejected
                .with_label_values(&[name.as_str()])
                .set(i64::from(rejected.contains(name)));
        }
        for e in &errors {
            let name = match e {
                crate::decide::Error::CompileRunbook { file, .. } => file.as_str(),
                _ => "",
            };
            self.metrics
                .runbook_errors
                .with_label_values(&[name, e.kind()])
                .inc();
            let kept = self.runbooks.get(name).is_some();
            tracing::error!(runbook = name, error = %e, last_good_kept = kept, source = %self.rules, "runbook rejected");
            if let Some(cm) = &snapshot.configmap {
                let note = format!(
                    "{e}; {}",
                    if kept {
                        "the last good version keeps running"
                    } else {
                        "it is not running"
                    }
                );
                act::publish_event(&self.recorder, cm, true, "RunbookRejected", note).await;
            }
        }
        // A runbook listening for a signal no model produces would never fire.
        let mut lint = Vec::new();
        for rb in self.runbooks.runbooks() {
            lint.extend(crate::decide::lint::check_against_models(
                rb,
                self.estate.specs(),
            ));
        }
        for problem in &lint {
            tracing::warn!(source = %self.rules, %problem, "runbook does not match the model specs");
            if let Some(cm) = &snapshot.configmap {
                act::publish_event(&self.recorder, cm, true, "RunbookLint", problem.clone()).await;
            }
        }
        let running: Vec<&str> = self.runbooks.runbooks().map(|r| r.name.as_str()).collect();
        self.metrics.runbooks_loaded.set(running.len() as i64);
        tracing::info!(source = %self.rules, running = ?running, rejected = errors.len(), "runbooks loaded");
        if let Some(cm) = &snapshot.configmap {
            let note = format!(
                "{} runbooks running ({}); {} rejected",
                running.len(),
                running.join(", "),
                errors.len()
            );
            act::publish_event(&self.recorder, cm, false, "RunbooksLoaded", note).await;
        }
        self.loaded = Some(snapshot.sources);
    }

    /// Reloads the runbooks when their source changed.
    pub async fn refresh_rules(&mut self) {
        match self.rules.clone() {
            RulesSource::Dir(dir) => match read_dir(&dir) {
                Ok(sources) if self.loaded.as_ref() != Some(&sources) => {
                    self.load(Snapshot {
                        sources,
                        configmap: None,
                    })
                    .await;
                }
                Ok(_) => {}
                Err(error) => {
                    self.metrics
                        .read_errors
                        .with_label_values(&["rules", "read_dir"])
                        .inc();
                    tracing::warn!(dir = %dir.display(), error = %crate::telemetry::chain(&error), "reading the runbooks failed; keeping the loaded ones");
                }
            },
            RulesSource::ConfigMap { .. } => {
                let Some(rx) = self.rules_rx.as_mut() else {
                    return;
                };
                if !rx.has_changed().unwrap_or(false) {
                    return;
                }
                let snapshot = rx.borrow_and_update().clone();
                if let Some(s) = snapshot {
                    self.load(s).await;
                }
            }
        }
    }

    /// On becoming leader: warm the detectors with history and resolve the
    /// intents a previous leader left without an outcome.
    pub async fn start(&mut self) {
        let now = unix_now();
        if let RulesSource::ConfigMap { namespace, name } = &self.rules {
            let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
                kube::Api::namespaced(self.client.clone(), namespace);
            match api.get_opt(name).await {
                Ok(Some(_)) => {}
                Ok(None) => tracing::warn!(%namespace, %name,
                    "the rules ConfigMap does not exist: no runbook runs until it is created (kubectl create configmap {name} --from-file=rules/)"),
                Err(error) => {
                    tracing::warn!(%namespace, %name, error = %crate::telemetry::chain(&error), "reading the rules ConfigMap failed; watching it anyway")
                }
            }
        }
        if let Some(prom) = &self.prometheus {
            let secs = self.settings.warmup_history.as_secs() as i64;
            if secs > 0 {
                let step = self.settings.interval.as_secs_f64().max(1.0);
                let mut loaded = 0usize;
                let specs: Vec<_> = self.estate.specs().to_vec();
                for spec in &specs {
                    match prom.query_history(spec, now - secs, now, step).await {
                        Ok(history) => {
                            loaded += history.len();
                            // Findings in old history are not acted on.
                            let _ = self.estate.score_history(&history);
                        }
                        Err(error) => {
                            tracing::warn!(kind = %spec.kind, error = %crate::telemetry::chain(&error), "reading warm-up history failed; the detectors of this kind start cold")
                        }
                    }
                }
                tracing::info!(
                    series = loaded,
                    seconds = secs,
                    "detectors warmed with history"
                );
            }
        }
        match self.executor.resolve_unresolved(now).await {
            Ok(done) if !done.is_empty() => {
                tracing::warn!(count = done.len(), resolved = ?done, "resolved intents left without an outcome by a previous run");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::error!(error = %crate::telemetry::chain(&error), "resolving in-flight intents failed; they will be retried next start")
            }
        }
        self.last = Some(now);
    }

    /// Kinds whose resources the runbooks decide on.
    fn decision_kinds(&self, findings: &[Finding]) -> BTreeSet<String> {
        let mut kinds = BTreeSet::new();
        for rb in self.runbooks.runbooks() {
            match &rb.meta.trigger {
                Trigger::Findings(t) => {
                    if findings.iter().any(|f| t.matches(f)) {
                        kinds.insert(t.kind.clone());
                    }
                }
                Trigger::Cron {
                    kind: Some(kind), ..
                } => {
                    kinds.insert(kind.clone());
                }
                Trigger::Cron { kind: None, .. } => {}
                Trigger::Condition { kind, .. } => {
                    kinds.insert(kind.clone());
                }
            }
        }
        kinds
    }

    /// Observe and detect: the cycle's findings, and the series read.
    async fn observe(
        &mut self,
        now: i64,
        summary: &mut Summary,
    ) -> (Vec<Finding>, Vec<SeriesSamples>) {
        // Without Prometheus configured there are no findings by design;
        // the cycle is not blind (cron and condition runbooks need no series).
        let Some(prom) = self.prometheus.clone() else {
            return (Vec::new(), Vec::new());
        };
        let specs: Vec<_> = self.estate.specs().to_vec();
        let mut series = Vec::new();
        let mut components = Vec::new();
        let mut answered = 0usize;
        let mut last_error = None;
        for spec in &specs {
            match prom.query_spec(spec, now).await {
                Ok(s) => {
                    answered += 1;
                    series.extend(s);
                    if self.unqueried.remove(&spec.kind) {
                        tracing::info!(kind = %spec.kind, "Prometheus answers for this kind again");
                    }
                }
                Err(error) => {
                    self.metrics
                        .read_errors
                        .with_label_values(&["prometheus", error.kind()])
                        .inc();
                    // Once per outage, not once a cycle; the counter above
                    // and autopilot_prometheus_up carry it meanwhile.
                    if self.unqueried.insert(spec.kind.clone()) {
                        tracing::warn!(kind = %spec.kind, error = %crate::telemetry::chain(&error), "querying Prometheus failed; this kind is not scored until it answers");
                    } else {
                        tracing::debug!(kind = %spec.kind, error = %crate::telemetry::chain(&error), "querying Prometheus failed again");
                    }
                    last_error = Some(error.to_string());
                }
            }
            match self.cache.snapshot(&spec_resource(spec), None).await {
                Ok(c) => {
                    if self.unlisted.remove(&spec.kind) {
                        tracing::info!(kind = %spec.kind, "listing components works again");
                    }
                    components.extend(c.into_keys());
                }
                Err(error) => {
                    if self.unlisted.insert(spec.kind.clone()) {
                        tracing::warn!(kind = %spec.kind, error = %crate::telemetry::chain(&error), "listing components failed (is the operator's CRD installed?); scoring only the series of this kind");
                    }
                }
            }
        }
        if answered == 0 && !specs.is_empty() {
            self.metrics.prometheus_up.set(0);
            let reason = last_error.unwrap_or_else(|| "no answer".into());
            let _ = self
                .estate
                .score_cycle(CycleInput::Unavailable { reason }, now);
            summary.prometheus_unavailable = Some("Prometheus did not answer".into());
            return (Vec::new(), series);
        }
        self.metrics.prometheus_up.set(1);
        let report = self.estate.score_cycle(
            CycleInput::Observed {
                components: Some(&components),
                series: &series,
            },
            now,
        );
        for f in &report.findings {
            self.metrics
                .findings
                .with_label_values(&[f.component.kind.as_str(), f.detector.as_str()])
                .inc();
            tracing::info!(kind = %f.component.kind, namespace = %f.component.namespace, name = %f.component.name,
                signal = %f.signal, detector = %f.detector, score = f.score, value = f.value, baseline = f.baseline,
                explanation = %f.explanation, "finding");
        }
        for (state, n) in [
            ("read", series.len()),
            ("warming_up", report.warming_up.len()),
            ("no_data", report.no_data.len()),
            ("unobserved", report.unobserved.len()),
        ] {
            self.metrics
                .signals
                .with_label_values(&[state])
                .set(n as i64);
        }
        summary.series = series.len();
        summary.no_data = report.no_data.len();
        summary.warming_up = report.warming_up.len();
        (report.findings, series)
    }

    /// One whole cycle at `now`.
    pub async fn cycle(&mut self, now: i64) -> Summary {
        let timer = self.metrics.cycle_duration.start_timer();
        let mut summary = Summary::default();
        self.refresh_rules().await;
        let last = self.last.unwrap_or(now - 1);

        let (findings, series) = self.observe(now, &mut summary).await;
        summary.findings = findings.len();
        for s in &series {
            let (seen, window) = self
                .samples
                .entry((s.component.clone(), s.signal.clone()))
                .or_default();
            *seen = now;
            for &(_, v) in &s.samples {
                window.push_back(v);
                if window.len() > SAMPLES_KEPT {
                    window.pop_front();
                }
            }
        }
        self.samples
            .retain(|_, (seen, _)| now - *seen <= SAMPLES_FORGOTTEN_AFTER_SECONDS);
        let mut observed = Observed {
            findings,
            ..Default::default()
        };
        for ((c, signal), (_, values)) in &self.samples {
            observed
                .samples
                .entry(c.clone())
                .or_default()
                .insert(signal.clone(), values.iter().copied().collect());
        }

        // The resources and facts the runbooks decide on.
        let mut lags = None;
        for kind in self.decision_kinds(&observed.findings) {
            let Some(info) = kind_info(&kind) else {
                tracing::warn!(%kind, "a runbook triggers on a kind the agent cannot act on");
                continue;
            };
            let resource = info.api_resource();
            match self
                .cache
                .snapshot(&resource, self.settings.watch_namespace.as_deref())
                .await
            {
                Ok(objects) => {
                    if self.unread.remove(&kind) {
                        tracing::info!(%kind, "reading resources works again");
                    }
                    for (c, v) in objects {
                        let facts = resource_facts(&kind, &v);
                        if !facts.is_empty() {
                            observed.facts.entry(c.clone()).or_default().extend(facts);
                        }
                        observed.resources.insert(c, v);
                    }
                }
                Err(error) => {
                    self.metrics
                        .read_errors
                        .with_label_values(&["resources", error.kind()])
                        .inc();
                    if self.unread.insert(kind.clone()) {
                        tracing::warn!(%kind, error = %crate::telemetry::chain(&error), "reading resources failed (is the operator's CRD installed?); runbooks on them report missing data until it works");
                    }
                }
            }
            if kind == "Cluster"
                && lags.is_none()
                && let Some(prom) = &self.prometheus
            {
                lags = Some(prom.replica_lags(now).await);
            }
        }
        match lags {
            Some(Ok(lags)) => {
                for (c, pods) in lags {
                    observed
                        .facts
                        .entry(c)
                        .or_default()
                        .insert("replica_lag_seconds".into(), serde_json::json!(pods));
                }
            }
            Some(Err(error)) => {
                self.metrics
                    .read_errors
                    .with_label_values(&["prometheus", error.kind()])
                    .inc();
                tracing::warn!(error = %crate::telemetry::chain(&error), "reading replica lags failed; switchover runbooks report missing data");
            }
            None => {}
        }

        // Decide.
        let decisions = evaluate_cycle(&mut self.runbooks, &observed, last, now);
        summary.decisions = decisions.len();
        let mut proposals = Vec::new();
        for d in decisions {
            self.metrics
                .runbook_evaluations
                .with_label_values(&[d.runbook.as_str(), d.trigger])
                .inc();
            match d.result {
                Ok(intents) => {
                    let Some(rb) = self.runbooks.get(&d.runbook) else {
                        continue;
                    };
                    let evidence = serde_json::to_value(&d.evidence).unwrap_or(Value::Null);
                    for intent in intents {
                        proposals.push(Proposal::from_runbook(
                            rb,
                            intent,
                            self.settings.mode,
                            d.trigger,
                            evidence.clone(),
                        ));
                    }
                }
                Err(error) => {
                    summary.decision_errors += 1;
                    self.metrics
                        .runbook_errors
                        .with_label_values(&[d.runbook.as_str(), error.kind()])
                        .inc();
                    if error.kind() == "missing_data" {
                        tracing::warn!(runbook = %d.runbook, kind = %d.component.kind, namespace = %d.component.namespace,
                            name = %d.component.name, error = %crate::telemetry::chain(&error), "runbook not evaluated: missing data");
                    }
                }
            }
        }
        summary.proposals = proposals.len();

        // Act, under the policy as it is now.
        match fetch_policy(&self.client, &self.settings.namespace).await {
            Err(error) => {
                self.metrics
                    .read_errors
                    .with_label_values(&["policy", error.kind()])
                    .inc();
                tracing::error!(error = %crate::telemetry::chain(&error), proposals = proposals.len(), "reading the guard policy failed; nothing is sent this cycle");
                summary.not_acted = Some(error.to_string());
            }
            Ok(policy) => {
                if !proposals.is_empty() {
                    match self.executor.run_batch(&proposals, &policy, now).await {
                        Ok(done) => {
                            for e in &done {
                                if e.repeat {
                                    tracing::debug!(id = e.id, outcome = %e.outcome, detail = %e.detail, "action refused again");
                                } else {
                                    tracing::info!(id = e.id, outcome = %e.outcome, detail = %e.detail, "action");
                                }
                            }
                            summary.executed =
                                done.into_iter().map(|e| (e.id, e.outcome)).collect();
                        }
                        Err(error) => {
                            tracing::error!(error = %crate::telemetry::chain(&error), "running the cycle's actions failed");
                            summary.not_acted = Some(error.to_string());
                        }
                    }
                }
                if let Err(error) = self.executor.apply_annotated_approvals(&policy, now).await {
                    tracing::warn!(error = %crate::telemetry::chain(&error), "applying annotated approvals failed");
                }
            }
        }
        let latest: BTreeMap<(String, String), f64> = series
            .iter()
            .filter_map(|s| {
                let c = &s.component;
                s.samples
                    .last()
                    .map(|&(_, v)| ((c.to_string(), s.signal.clone()), v))
            })
            .filter(|(_, v)| v.is_finite())
            .collect();
        match self
            .executor
            .verify_applied(now, |target, signal| {
                latest
                    .get(&(target.to_string(), signal.to_string()))
                    .copied()
            })
            .await
        {
            Ok(v) => {
                for (id, verdict) in v {
                    match verdict {
                        // Asked every cycle until the deadline: not news.
                        Verification::Pending => tracing::debug!(id, "verification pending"),
                        Verification::Passed(detail) => {
                            tracing::info!(id, %detail, "verification passed")
                        }
                        Verification::Failed(detail) => {
                            tracing::warn!(id, %detail, "verification failed; undone by its inverse where it has one")
                        }
                        Verification::NoData(detail) => {
                            tracing::warn!(id, %detail, "verification had no data; left as is")
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %crate::telemetry::chain(&error), "verifying applied actions failed")
            }
        }

        let result = if summary.prometheus_unavailable.is_some() {
            "blind"
        } else if summary.not_acted.is_some() {
            "skipped_act"
        } else {
            "ok"
        };
        self.metrics.cycles.with_label_values(&[result]).inc();
        timer.observe_duration();
        self.last = Some(now);
        summary
    }

    /// Runs cycles every `interval` until the task is dropped.
    pub async fn run(mut self) {
        self.start().await;
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = self.cycle(unix_now()).await;
            tracing::debug!(summary = ?s, "cycle done");
        }
    }
}
