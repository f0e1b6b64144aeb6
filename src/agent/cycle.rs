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
//! This module holds the one cycle function, `Core::cycle`, which calls one
//! function per step — `rules` (1), `read` and `evaluate::score` (2), `read`
//! (3), `evaluate` (4), `send` (5) — and fills the `Summary`. Two drivers
//! run it: the live loop (`Autopilot`, the wall clock and the executor) and
//! a replay over Prometheus history (`agent::replay`, simulated time and a
//! step 5 that only records what the guards would let through); they differ
//! only in their [`Driver`] and their clock. It must not hold a step's logic
//! itself; a step that grows belongs in its own module.

use std::collections::BTreeMap;

use kube::{Client, runtime::events::Recorder};
use tokio::sync::watch;

use super::{
    deferred::Deferred,
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
    detect::{Estate, Finding, Report, SeriesSamples, spec::ValidatedSpec},
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
    /// The findings themselves (a replay reports them as episodes).
    pub found: Vec<Finding>,
    pub decisions: usize,
    pub decision_errors: usize,
    pub proposals: usize,
    /// `(journal id, outcome)` of every proposal sent to the executor.
    pub executed: Vec<(i64, String)>,
    /// Why nothing was sent this cycle, if so.
    pub not_acted: Option<String>,
}

/// The state one cycle works on, whoever drives it: the detectors, the
/// runbooks, the readers and the recent samples. `Core::cycle` is the one
/// cycle function; the live loop ([`Autopilot`]) and a replay
/// (`agent::replay`) differ only in their [`Driver`] and in the `now` they
/// pass.
pub struct Core {
    pub estate: Estate,
    pub runbooks: RunbookSet,
    pub reader: Reader,
    pub samples: RecentSamples,
    pub metrics: Metrics,
    pub mode: Mode,
    /// When the last cycle ran (cron runbooks fire for schedules due since).
    pub last: Option<i64>,
    /// Runbooks held armed after a cooldown or a conflict deferred them.
    pub deferred: Deferred,
}

/// What differs between the live loop and a replay: where the runbooks
/// come from (step 1) and what step 5 does with the proposals. The live
/// driver hands them to the executor; a replay's records what the guards
/// would have let through and sends nothing.
pub trait Driver {
    /// Step 1: loads the runbooks into `runbooks` when their source changed.
    fn refresh_rules(
        &mut self,
        runbooks: &mut RunbookSet,
        specs: &[ValidatedSpec],
        now: i64,
    ) -> impl Future<Output = ()> + Send;

    /// The runbooks were lost (the engine panicked): load them again next
    /// cycle.
    fn runbooks_lost(&mut self);

    /// Whether step 4 runs on the blocking pool, so the async workers stay
    /// free meanwhile (the live loop renews its Lease and fence there). A
    /// replay has nothing else to run and evaluates in place: a hand-off
    /// per cycle would cost more than most evaluations.
    fn decide_on_blocking_pool(&self) -> bool {
        true
    }

    /// Step 5: acts on `proposals` (or says why nothing was acted on),
    /// verifying earlier actions against `latest`. `reader` reads the
    /// targets as the cycle's step 3 did.
    fn act(
        &mut self,
        reader: &mut Reader,
        proposals: &mut [Proposal],
        latest: &BTreeMap<(String, String), f64>,
        now: i64,
    ) -> impl Future<Output = Result<Vec<Executed>, String>> + Send;
}

/// The live loop: the [`Core`] driven by [`Live`] every `--cycle-seconds`.
pub struct Autopilot {
    core: Core,
    live: Live,
    settings: Settings,
}

/// The live driver: runbooks from their folder or ConfigMap, and the
/// executor for step 5.
pub struct Live {
    client: Client,
    executor: Executor<SqlJournal>,
    metrics: Metrics,
    namespace: String,
    rules: Rules,
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
    /// The kind of the guard policy's read error last cycle, if it failed
    /// (one ERROR line per episode, see `fetch_guard_policy`).
    policy_error: Option<&'static str>,
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
            core: Core {
                reader: Reader::new(
                    p.prometheus,
                    ResourceCache::new(p.client.clone(), p.settings.scope.clone()),
                    p.metrics.clone(),
                ),
                estate: p.estate,
                runbooks: p.runbooks,
                samples: RecentSamples::default(),
                metrics: p.metrics.clone(),
                mode: p.settings.mode,
                last: None,
                deferred: Deferred::default(),
            },
            live: Live {
                rules: Rules::new(p.rules, p.rules_rx, p.recorder, p.metrics.clone()),
                client: p.client,
                executor: p.executor,
                metrics: p.metrics,
                namespace: p.settings.namespace.clone(),
                unresolved: false,
                policy_version: None,
                policy_error: None,
            },
            settings: p.settings,
        }
    }

    /// Reloads the runbooks when their source changed, and records new
    /// versions with their editor.
    pub async fn refresh_rules(&mut self, now: i64) {
        let core = &mut self.core;
        self.live
            .refresh_rules(&mut core.runbooks, core.estate.specs(), now)
            .await;
    }

    /// On becoming leader: warm the detectors with history and resolve the
    /// intents a previous leader left without an outcome.
    pub async fn start(&mut self) {
        let now = unix_now();
        self.live.rules.check_source(&self.live.client).await;
        let step = self.settings.interval.as_secs_f64().max(1.0);
        self.core
            .warm_up(now, self.settings.warmup_history, step)
            .await;
        self.live.unresolved = true;
        self.core.last = Some(now);
    }

    /// One whole cycle at `now` (see [`Core::cycle`]).
    pub async fn cycle(&mut self, now: i64) -> Summary {
        self.core.cycle(&mut self.live, now).await
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

impl Core {
    /// Scores `history` seconds of Prometheus history before `now` at
    /// `step` so the detectors start warm; findings in old history are not
    /// acted on.
    #[tracing::instrument(skip_all, fields(now = now))]
    pub async fn warm_up(&mut self, now: i64, history: std::time::Duration, step: f64) {
        let Some(prom) = self.reader.prometheus().cloned() else {
            return;
        };
        let secs = history.as_secs() as i64;
        if secs <= 0 {
            return;
        }
        let mut loaded = 0usize;
        let specs: Vec<_> = self.estate.specs().to_vec();
        for spec in &specs {
            match prom.query_history(spec, now - secs, now, step).await {
                Ok(mut history) => {
                    // The series the cycles keep (`Reader::observe`).
                    crate::observe::cap_series(&mut history, self.reader.series_cap());
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

    /// One whole cycle at `now`: the steps of the module doc, in order,
    /// with `driver` for steps 1 and 5.
    #[tracing::instrument(skip_all, fields(now = now))]
    pub async fn cycle(&mut self, driver: &mut impl Driver, now: i64) -> Summary {
        let timer = self.metrics.cycle_duration.start_timer();
        let mut summary = Summary::default();
        let last = self.last.unwrap_or(now - 1);

        // 1. Runbooks.
        driver
            .refresh_rules(&mut self.runbooks, self.estate.specs(), now)
            .await;

        // 2. Observe and detect.
        let (report, series) = self.observe(now).await;
        if report.prometheus_unavailable.is_some() {
            summary.prometheus_unavailable = Some("Prometheus did not answer".into());
        }
        summary.series = series.len();
        summary.no_data = report.no_data.len();
        summary.warming_up = report.warming_up.len();
        summary.findings = report.findings.len();
        summary.found = report.findings.clone();
        self.samples.record(&series, now);

        // 3. What the runbooks decide on.
        let kinds = decision_kinds(&self.runbooks, &report.findings);
        let inputs = self.reader.fetch_decision_inputs(&kinds, now).await;
        let observed = Observed {
            findings: report.findings,
            resources: inputs.resources,
            samples: self.samples.by_component(),
            facts: inputs.facts,
            deferred: self.deferred.armed(now),
        };

        // 4. Decide, on the blocking pool: a runbook may run for up to its
        // operation limit, and the async workers must stay free to renew
        // the leader Lease and refresh the fence meanwhile.
        let (mode, metrics) = (self.mode, self.metrics.clone());
        let mut evaluated = if driver.decide_on_blocking_pool() {
            let runbooks =
                std::mem::replace(&mut self.runbooks, RunbookSet::new(Default::default()));
            let decided = tokio::task::spawn_blocking(move || {
                let mut runbooks = runbooks;
                let evaluated =
                    evaluate_runbooks(&mut runbooks, &observed, last, now, mode, &metrics);
                (runbooks, evaluated)
            })
            .await;
            match decided {
                Ok((runbooks, evaluated)) => {
                    self.runbooks = runbooks;
                    evaluated
                }
                Err(error) => {
                    // A panic in the engine: the runbooks are lost with the
                    // thread; reload them from source next cycle.
                    tracing::error!(%error, "evaluating the runbooks panicked; nothing is acted on this cycle, the runbooks are reloaded");
                    driver.runbooks_lost();
                    Default::default()
                }
            }
        } else {
            evaluate_runbooks(&mut self.runbooks, &observed, last, now, mode, &metrics)
        };
        summary.decisions = evaluated.decisions;
        summary.decision_errors = evaluated.errors;
        summary.proposals = evaluated.proposals.len();

        // 5. Act, then verify earlier actions.
        match driver
            .act(
                &mut self.reader,
                &mut evaluated.proposals,
                &latest_values(&series),
                now,
            )
            .await
        {
            Ok(done) => {
                self.deferred
                    .settle(&evaluated.proposals, &evaluated.fired_on, &done, now);
                self.metrics
                    .runbooks_deferred
                    .set(self.deferred.len() as i64);
                summary.executed = done.into_iter().map(|e| (e.id, e.outcome)).collect();
            }
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
}

impl Live {
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
}

impl Driver for Live {
    async fn refresh_rules(
        &mut self,
        runbooks: &mut RunbookSet,
        specs: &[ValidatedSpec],
        now: i64,
    ) {
        self.rules
            .refresh(runbooks, specs, self.executor.journal(), now)
            .await;
    }

    fn runbooks_lost(&mut self) {
        self.rules.invalidate();
    }

    /// Sends `proposals` under the guard policy as it is now, then applies
    /// annotated approvals. The error says why nothing was sent.
    /// Everything that may write, under the guard policy read now: first
    /// the intents a previous run left unresolved, then this cycle's
    /// proposals (new runbook versions lowered to recommend mode as the
    /// policy says), the annotated approvals, and the verification of
    /// earlier actions against `latest` (whose failure undoes them). Without
    /// a policy none of it runs: the kill switch cannot be known.
    async fn act(
        &mut self,
        _reader: &mut Reader,
        proposals: &mut [Proposal],
        latest: &BTreeMap<(String, String), f64>,
        now: i64,
    ) -> Result<Vec<Executed>, String> {
        let namespace = &self.namespace;
        let read = fetch_guard_policy(
            &self.client,
            namespace,
            proposals.len(),
            &self.metrics,
            &mut self.policy_error,
        )
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
}
