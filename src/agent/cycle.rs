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
//!
//! This module is the driver: `Autopilot::cycle` calls one function per step
//! — `rules` (1), `read` and `evaluate::score` (2), `read` (3), `evaluate`
//! (4), `send` (5) — and fills the `Summary`. It must not hold a step's logic
//! itself; a step that grows belongs in its own module.

use std::collections::BTreeMap;

use kube::{Client, runtime::events::Recorder};
use tokio::sync::watch;

use super::{
    evaluate::{decision_kinds, evaluate_runbooks, latest_values, score},
    metrics::Metrics,
    read::Reader,
    rules::{Rules, RulesSource, Snapshot},
    samples::RecentSamples,
    send::{
        apply_approvals, fetch_guard_policy, pin_new_runbook_versions, policy_change_note,
        send_proposals, verify_applied,
    },
};
use crate::{
    act::executor::{ClusterPolicy, Executed, Executor, Proposal},
    decide::{Mode, RunbookSet, cycle::Observed},
    detect::{Estate, Report, SeriesSamples},
    observe::{Prometheus, cache::ResourceCache},
    store::SqlJournal,
};

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The agent's own namespace: the guard policy (AutopilotPolicy) lives here.
    pub namespace: String,
    /// The namespaces observed and decided on (the controllers' scope).
    pub scope: crate::scope::Scope,
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
    estate: Estate,
    runbooks: RunbookSet,
    executor: Executor<SqlJournal>,
    metrics: Metrics,
    settings: Settings,
    rules: Rules,
    reader: Reader,
    samples: RecentSamples,
    /// When the last cycle ran (cron runbooks fire for schedules due since).
    last: Option<i64>,
    /// Intents a previous run left without an outcome are still to be
    /// resolved: done by the first cycle that can read the guard policy,
    /// since a resolution that sends passes the gate like any write. Set
    /// again when a batch fails: a journal that stopped answering between
    /// a write and its outcome left one, and it must be resolved before a
    /// later action on the same target moves its action ID off the object
    /// (after that, a resolution could no longer tell it was sent).
    unresolved: bool,
    /// The resourceVersion of the guard policy read last (its changes are
    /// logged with who made them).
    policy_version: Option<String>,
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

impl Summary {
    /// The `autopilot_cycles_total` result label.
    fn result(&self) -> &'static str {
        if self.prometheus_unavailable.is_some() {
            "blind"
        } else if self.not_acted.is_some() {
            "skipped_act"
        } else {
            "ok"
        }
    }
}

impl Autopilot {
    pub fn new(p: Parts) -> Self {
        Autopilot {
            reader: Reader::new(
                p.prometheus,
                ResourceCache::new(p.client.clone(), p.settings.scope.clone()),
                p.metrics.clone(),
            ),
            rules: Rules::new(p.rules, p.rules_rx, p.recorder, p.metrics.clone()),
            client: p.client,
            estate: p.estate,
            runbooks: p.runbooks,
            executor: p.executor,
            metrics: p.metrics,
            settings: p.settings,
            unresolved: false,
            policy_version: None,
            samples: RecentSamples::default(),
            last: None,
        }
    }

    /// Reloads the runbooks when their source changed, and records new
    /// versions with their editor.
    pub async fn refresh_rules(&mut self, now: i64) {
        self.rules
            .refresh(
                &mut self.runbooks,
                self.estate.specs(),
                self.executor.journal(),
                now,
            )
            .await;
    }

    /// On becoming leader: warm the detectors with history and resolve the
    /// intents a previous leader left without an outcome.
    pub async fn start(&mut self) {
        let now = unix_now();
        self.rules.check_source(&self.client).await;
        self.warm_up(now).await;
        self.unresolved = true;
        self.last = Some(now);
    }

    /// Resolves the intents a previous run left without an outcome, under
    /// `policy`; on failure they are tried again next cycle.
    async fn resolve(&mut self, policy: &ClusterPolicy, now: i64) {
        match self.executor.resolve_unresolved(policy, now).await {
            Ok(done) => {
                if !done.is_empty() {
                    tracing::warn!(count = done.len(), resolved = ?done, "resolved intents left without an outcome by a previous run");
                }
                self.unresolved = false;
            }
            Err(error) => {
                tracing::error!(error = %crate::telemetry::chain(&error), "resolving in-flight intents failed; trying again next cycle")
            }
        }
    }

    /// Scores `--warmup-history` of Prometheus history so the detectors
    /// start warm; findings in old history are not acted on.
    #[tracing::instrument(skip_all, fields(now = now))]
    async fn warm_up(&mut self, now: i64) {
        let Some(prom) = self.reader.prometheus() else {
            return;
        };
        let secs = self.settings.warmup_history.as_secs() as i64;
        if secs <= 0 {
            return;
        }
        let step = self.settings.interval.as_secs_f64().max(1.0);
        let mut loaded = 0usize;
        let specs: Vec<_> = self.estate.specs().to_vec();
        for spec in &specs {
            match prom.query_history(spec, now - secs, now, step).await {
                Ok(history) => {
                    loaded += history.len();
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

    /// One whole cycle at `now`: the steps of the module doc, in order.
    #[tracing::instrument(skip_all, fields(now = now))]
    pub async fn cycle(&mut self, now: i64) -> Summary {
        let timer = self.metrics.cycle_duration.start_timer();
        let mut summary = Summary::default();
        let last = self.last.unwrap_or(now - 1);

        // 1. Runbooks.
        self.refresh_rules(now).await;

        // 2. Observe and detect.
        let (report, series) = self.observe(now).await;
        if report.prometheus_unavailable.is_some() {
            summary.prometheus_unavailable = Some("Prometheus did not answer".into());
        }
        summary.series = series.len();
        summary.no_data = report.no_data.len();
        summary.warming_up = report.warming_up.len();
        summary.findings = report.findings.len();
        self.samples.record(&series, now);

        // 3. What the runbooks decide on.
        let kinds = decision_kinds(&self.runbooks, &report.findings);
        let inputs = self.reader.fetch_decision_inputs(&kinds, now).await;
        let observed = Observed {
            findings: report.findings,
            resources: inputs.resources,
            samples: self.samples.by_component(),
            facts: inputs.facts,
        };

        // 4. Decide, on the blocking pool: a runbook may run for up to its
        // operation limit, and the async workers must stay free to renew
        // the leader Lease and refresh the fence meanwhile.
        let runbooks = std::mem::replace(&mut self.runbooks, RunbookSet::new(Default::default()));
        let (mode, metrics) = (self.settings.mode, self.metrics.clone());
        let decided = tokio::task::spawn_blocking(move || {
            let mut runbooks = runbooks;
            let evaluated = evaluate_runbooks(&mut runbooks, &observed, last, now, mode, &metrics);
            (runbooks, evaluated)
        })
        .await;
        let mut evaluated = match decided {
            Ok((runbooks, evaluated)) => {
                self.runbooks = runbooks;
                evaluated
            }
            Err(error) => {
                // A panic in the engine: the runbooks are lost with the
                // thread; reload them from source next cycle.
                tracing::error!(%error, "evaluating the runbooks panicked; nothing is acted on this cycle, the runbooks are reloaded");
                self.rules.invalidate();
                Default::default()
            }
        };
        summary.decisions = evaluated.decisions;
        summary.decision_errors = evaluated.errors;
        summary.proposals = evaluated.proposals.len();

        // 5. Act, then verify earlier actions.
        match self
            .act(&mut evaluated.proposals, &latest_values(&series), now)
            .await
        {
            Ok(done) => summary.executed = done.into_iter().map(|e| (e.id, e.outcome)).collect(),
            Err(reason) => summary.not_acted = Some(reason),
        }

        self.metrics
            .cycles
            .with_label_values(&[summary.result()])
            .inc();
        timer.observe_duration();
        self.last = Some(now);
        summary
    }

    /// Step 2: the series read at `now` and their scores. Without
    /// Prometheus configured: nothing read, nothing found.
    async fn observe(&mut self, now: i64) -> (Report, Vec<SeriesSamples>) {
        match self.reader.observe(self.estate.specs(), now).await {
            Some(obs) => (
                score(&mut self.estate, &obs, now, &self.metrics),
                obs.series,
            ),
            None => (Report::default(), Vec::new()),
        }
    }

    /// Step 5: sends `proposals` under the guard policy as it is now, then
    /// applies annotated approvals. The error says why nothing was sent.
    /// (`&mut`: the estate's detectors are `Send` but not `Sync`, so a
    /// shared borrow held across an await would make `run` not `Send`.)
    /// Everything that may write, under the guard policy read now: first
    /// the intents a previous run left unresolved, then this cycle's
    /// proposals (new runbook versions lowered to recommend mode as the
    /// policy says), the annotated approvals, and the verification of
    /// earlier actions against `latest` (whose failure undoes them). Without
    /// a policy none of it runs: the kill switch cannot be known.
    async fn act(
        &mut self,
        proposals: &mut [Proposal],
        latest: &BTreeMap<(String, String), f64>,
        now: i64,
    ) -> Result<Vec<Executed>, String> {
        let namespace = &self.settings.namespace;
        let read = fetch_guard_policy(&self.client, namespace, proposals.len(), &self.metrics)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(note) = policy_change_note(&mut self.policy_version, &read) {
            tracing::info!(%namespace, "{note}");
        }
        pin_new_runbook_versions(
            self.executor.journal(),
            read.spec.new_runbook_approvals,
            proposals,
        )
        .await;
        // Read again by the gate for every write, so a kill switch turned on
        // during this cycle stops its next write.
        let policy = ClusterPolicy {
            client: self.client.clone(),
            namespace: namespace.clone(),
        };
        if self.unresolved {
            self.resolve(&policy, now).await;
        }
        let sent = send_proposals(&self.executor, proposals, &policy, now)
            .await
            .map_err(|e| e.to_string());
        if sent.is_err() {
            self.unresolved = true;
        }
        apply_approvals(&self.executor, &policy, now).await;
        verify_applied(&self.executor, latest, &policy, now).await;
        sent
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
