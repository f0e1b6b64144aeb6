//! `autopilot replay`: the live cycle (`cycle::Core::cycle`) driven over a
//! range of Prometheus history in simulated time, reporting what the agent
//! would have done and when.
//!
//! Only two things differ from the live loop: the clock (each cycle's `now`
//! is the next step of the range, not the wall clock) and step 5
//! ([`Recorder`], the replay's [`Driver`]): the proposals are planned
//! against the resources as read (from the cluster as it is now, or a
//! snapshot file), judged by the same guards on the same journal history
//! (an in-memory SQLite journal, so cooldowns and budgets count the
//! replay's own earlier actions), journaled, and recorded — never sent.
//! Verifications are not judged: history never reacted to actions that were
//! not taken.
//!
//! Where it cannot match live exactly, it says so here: the hands-off label
//! of a target's namespace is not read (the object's is), a recommendation
//! does not supersede older pending ones (they keep counting against the
//! limits), and the gate's second judgement at the send is the batch's
//! (nothing changes between the two in a replay).
//!
//! Must not write to the cluster: it holds no executor, and a target is
//! only ever read.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use serde::Serialize;
use serde_json::Value;

use super::{
    cycle::{Core, Driver},
    metrics::Metrics,
    read::Reader,
    samples::RecentSamples,
    send::pin_new_runbook_versions,
};
use crate::{
    act::{
        action::{Planned, plan_action},
        executor::{Executed, Proposal, history as guard_history, new_entry},
        guard::{Candidate, Observed, Policy, Verdict, evaluate_guards},
        journal::{Journal, outcome, verdict},
    },
    decide::{Mode, RunbookSet},
    detect::{Estate, Finding, spec::ValidatedSpec},
    observe::{cache::ResourceCache, history::History},
    scope::Scope,
    store::SqlJournal,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening the replay's in-memory journal failed")]
    OpenJournal(#[source] crate::store::Error),
    #[error("registering the replay's metrics failed")]
    RegisterMetrics(#[source] prometheus::Error),
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::OpenJournal(_) => "open_journal",
            Error::RegisterMetrics(_) => "register_metrics",
        }
    }
}

/// The range and how it is replayed.
#[derive(Clone, Debug)]
pub struct Settings {
    /// First and last cycle times (unix seconds).
    pub from: i64,
    pub to: i64,
    /// Seconds between cycles (the live `--cycle-seconds`).
    pub step: i64,
    /// Steps per range query.
    pub chunk_steps: i64,
    /// History before `from` scored first so the detectors start warm, as
    /// the live loop does on becoming leader.
    pub warmup_seconds: i64,
    pub mode: Mode,
    pub scope: Scope,
}

/// Everything a replay is built from.
pub struct Parts {
    pub prometheus: crate::observe::Prometheus,
    pub specs: Vec<ValidatedSpec>,
    /// Runbooks, loaded (a replay does not reload them).
    pub runbooks: RunbookSet,
    /// Where targets and decided-on resources are read.
    pub resources: ResourceCache,
    /// The guard policy the replay judges with.
    pub policy: Policy,
    pub settings: Settings,
}

/// One action the runbooks proposed, with the guards' verdict.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ReplayedAction {
    /// Cycle time (unix seconds).
    pub at: i64,
    pub runbook: String,
    pub action: String,
    /// `Kind/namespace/name`
    pub target: String,
    /// Effective mode (a new runbook version may be lowered to recommend).
    pub mode: String,
    pub trigger: String,
    /// `allowed`, the refusing guard, or `plan_failed`.
    pub verdict: String,
    /// What live would have recorded: `applied` (auto, would be sent),
    /// `recommended`, `dry_run`, `refused` or `failed`.
    pub outcome: String,
    pub detail: String,
    /// The change it would have made.
    pub patch: Option<Value>,
    /// Always "not judged": history never reacted to it.
    pub verification: &'static str,
}

/// Consecutive cycles with a finding on one (component, signal, detector).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Episode {
    pub component: String,
    pub signal: String,
    pub detector: String,
    /// First and last cycle with the finding.
    pub start: i64,
    pub end: i64,
    pub cycles: usize,
    pub max_score: f64,
    /// The first finding's explanation.
    pub explanation: String,
}

/// Per runbook: proposals, and what became of them.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RunbookCounts {
    /// Proposals made.
    pub fired: usize,
    /// Allowed by the guards (applied, recommended or dry-run by mode).
    pub acted: usize,
    /// Refused, by guard.
    pub refused: BTreeMap<String, usize>,
    /// Could not be planned (target missing or unreadable, bad change).
    pub failed: usize,
}

/// What a replay found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub from: i64,
    pub to: i64,
    pub step: i64,
    /// The last cycle run (`to` unless interrupted).
    pub covered_to: i64,
    /// False when interrupted (Ctrl-C): a partial report.
    pub complete: bool,
    pub cycles: usize,
    /// Cycles in which Prometheus answered for no kind.
    pub blind_cycles: usize,
    pub mode: String,
    pub episodes: Vec<Episode>,
    pub actions: Vec<ReplayedAction>,
    pub runbooks: BTreeMap<String, RunbookCounts>,
    /// Runbook evaluations that failed (missing data among them).
    pub decision_errors: usize,
    /// Range queries made.
    pub queries: usize,
    pub wall_seconds: f64,
    /// What the replay could not see, said once.
    pub notes: Vec<String>,
}

/// Where a replay is, for a progress display.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub from: i64,
    pub to: i64,
    pub now: i64,
    pub cycles: usize,
    pub elapsed: std::time::Duration,
}

/// The replay's step 5: plan, judge, journal, record. Sends nothing.
pub struct Recorder {
    journal: SqlJournal,
    policy: Policy,
    scope: Scope,
    actions: Vec<ReplayedAction>,
}

/// A replay: the live cycle's [`Core`] and the [`Recorder`].
pub struct Replay {
    core: Core,
    recorder: Recorder,
    settings: Settings,
}

impl Replay {
    pub async fn new(p: Parts) -> Result<Self, Error> {
        let metrics =
            Metrics::register(&prometheus::Registry::new()).map_err(Error::RegisterMetrics)?;
        let s = &p.settings;
        let history = History::new(p.prometheus, s.step, s.chunk_steps, s.to);
        Ok(Replay {
            core: Core {
                estate: Estate::new(p.specs),
                runbooks: p.runbooks,
                reader: Reader::replaying(history, p.resources, metrics.clone()),
                samples: RecentSamples::default(),
                metrics,
                mode: s.mode,
                last: None,
                deferred: Default::default(),
            },
            recorder: Recorder {
                journal: SqlJournal::in_memory().await.map_err(Error::OpenJournal)?,
                policy: p.policy,
                scope: s.scope.clone(),
                actions: Vec::new(),
            },
            settings: p.settings,
        })
    }

    /// Runs every cycle of the range (until `stop` is set), calling
    /// `progress` after each, and reports.
    pub async fn run(mut self, stop: &AtomicBool, mut progress: impl FnMut(Progress)) -> Report {
        let s = self.settings.clone();
        let started = Instant::now();
        let mut report = Report {
            from: s.from,
            to: s.to,
            step: s.step,
            mode: s.mode.as_str().to_string(),
            covered_to: s.from,
            ..Report::default()
        };
        let warmup = std::time::Duration::from_secs(s.warmup_seconds.max(0) as u64);
        self.core.warm_up(s.from, warmup, s.step as f64).await;
        self.core.last = Some(s.from - s.step);
        let mut episodes = Episodes::default();
        let mut now = s.from;
        while now <= s.to && !stop.load(Ordering::Relaxed) {
            let summary = self.core.cycle(&mut self.recorder, now).await;
            report.cycles += 1;
            report.covered_to = now;
            report.decision_errors += summary.decision_errors;
            if summary.prometheus_unavailable.is_some() {
                report.blind_cycles += 1;
            }
            episodes.add(&summary.found, now, s.step);
            progress(Progress {
                from: s.from,
                to: s.to,
                now,
                cycles: report.cycles,
                elapsed: started.elapsed(),
            });
            now += s.step;
        }
        report.complete = now > s.to;
        report.episodes = episodes.done;
        report.actions = std::mem::take(&mut self.recorder.actions);
        for a in &report.actions {
            let c = report.runbooks.entry(a.runbook.clone()).or_default();
            c.fired += 1;
            match a.outcome.as_str() {
                outcome::REFUSED => *c.refused.entry(a.verdict.clone()).or_default() += 1,
                outcome::FAILED => c.failed += 1,
                _ => c.acted += 1,
            }
        }
        report.queries = self.core.reader.history().map_or(0, History::queries);
        if report.blind_cycles > 0 {
            report.notes.push(format!(
                "Prometheus answered for no kind in {} cycles: no findings there",
                report.blind_cycles
            ));
        }
        report.wall_seconds = started.elapsed().as_secs_f64();
        report
    }
}

/// Findings grouped into episodes as cycles go by.
#[derive(Default)]
struct Episodes {
    /// Index in `done` of each key's episode still open.
    open: BTreeMap<(String, String, String), usize>,
    done: Vec<Episode>,
}

impl Episodes {
    fn add(&mut self, findings: &[Finding], now: i64, step: i64) {
        for f in findings {
            let key = (
                f.component.to_string(),
                f.signal.clone(),
                f.detector.clone(),
            );
            match self.open.get(&key).map(|&i| &mut self.done[i]) {
                // Seen last cycle (or this one, for a second sample): the
                // same episode goes on.
                Some(e) if e.end >= now - step => {
                    if e.end != now {
                        e.cycles += 1;
                    }
                    e.end = now;
                    e.max_score = e.max_score.max(f.score);
                }
                _ => {
                    self.open.insert(key.clone(), self.done.len());
                    self.done.push(Episode {
                        component: key.0,
                        signal: key.1,
                        detector: key.2,
                        start: now,
                        end: now,
                        cycles: 1,
                        max_score: f.score,
                        explanation: f.explanation.clone(),
                    });
                }
            }
        }
    }
}

/// What one proposal came to before it is journaled.
enum Judged {
    PlanFailed(String),
    /// The planned action, the refusing guard, its detail, and whether
    /// the refusal defers the runbook (`guard::Verdict::defers`).
    Refused(Planned, String, String, bool),
    Allowed(Planned),
}

impl Recorder {
    /// Reads each target and plans against it, checks the scope with the
    /// object's hands-off label (the namespace's is not read in a replay).
    async fn read_and_plan(
        &self,
        reader: &mut Reader,
        p: &Proposal,
        now: i64,
    ) -> (Result<Planned, String>, Option<(String, String)>) {
        let target = p.intent.action.target();
        let object = match reader.fetch_target(target).await {
            Ok(Some(o)) => o,
            Ok(None) => return (Err(format!("{target} does not exist")), None),
            Err(e) => return (Err(format!("reading {target} failed: {e}")), None),
        };
        let labels: Option<BTreeMap<String, String>> =
            serde_json::from_value(object["metadata"]["labels"].clone()).ok();
        let scope = self
            .scope
            .check(&target.namespace, None, labels.as_ref())
            .err()
            .map(|out| (out.guard().to_string(), out.to_string()));
        let plan = plan_action(&p.intent.action, &object, now).map_err(|e| e.to_string());
        (plan, scope)
    }

    /// Switchover lags, as the live observer reads them: only when a
    /// switchover is proposed.
    async fn observe(&self, reader: &Reader, proposals: &[Proposal], now: i64) -> Observed {
        let needs_lag = proposals
            .iter()
            .any(|p| matches!(p.intent.action, crate::decide::Action::Switchover { .. }));
        match reader.prometheus() {
            Some(prom) if needs_lag => match prom.replica_lags(now).await {
                Ok(replica_lag_seconds) => Observed {
                    replica_lag_seconds,
                },
                Err(error) => {
                    tracing::warn!(error = %crate::telemetry::chain(&error), "reading replication lags for the switchover guard failed; a switchover is refused");
                    Observed::default()
                }
            },
            _ => Observed::default(),
        }
    }

    async fn record(
        &mut self,
        p: &Proposal,
        judged: Judged,
        now: i64,
    ) -> Result<Executed, crate::act::journal::Error> {
        let (planned, verdict_label, detail, out) = match &judged {
            Judged::PlanFailed(reason) => {
                (None, verdict::PLAN_FAILED, reason.clone(), outcome::FAILED)
            }
            Judged::Refused(planned, guard, detail, _) => (
                Some(planned),
                guard.as_str(),
                detail.clone(),
                outcome::REFUSED,
            ),
            Judged::Allowed(planned) => {
                let (out, detail) = match p.mode {
                    Mode::Auto => (outcome::APPLIED, "would be sent (replay: not sent)"),
                    Mode::Recommend => (
                        outcome::RECOMMENDED,
                        "would be recommended (replay: not published)",
                    ),
                    Mode::DryRun => (outcome::DRY_RUN, "not sent (dry-run mode)"),
                };
                (Some(planned), verdict::ALLOWED, detail.to_string(), out)
            }
        };
        let entry = new_entry(p, planned, verdict_label, &detail, now);
        let id = self.journal.record_intent(&entry).await?;
        self.journal.record_outcome(id, out, &detail, now).await?;
        self.actions.push(ReplayedAction {
            at: now,
            runbook: entry.runbook.clone(),
            action: entry.action_kind.clone(),
            target: entry.target.clone(),
            mode: entry.mode.clone(),
            trigger: entry.trigger.clone(),
            verdict: verdict_label.to_string(),
            outcome: out.to_string(),
            detail: entry.verdict_detail.clone(),
            patch: entry.patch.clone(),
            verification: "not judged",
        });
        Ok(Executed {
            id,
            outcome: out.to_string(),
            detail,
            repeat: false,
            deferred: matches!(judged, Judged::Refused(.., true)),
        })
    }
}

impl Driver for Recorder {
    /// Runbooks are loaded once, before the replay.
    async fn refresh_rules(&mut self, _: &mut RunbookSet, _: &[ValidatedSpec], _: i64) {}

    fn runbooks_lost(&mut self) {
        tracing::error!("the runbook engine panicked; the replay goes on without runbooks");
    }

    fn decide_on_blocking_pool(&self) -> bool {
        false
    }

    /// As the live step 5 up to the send: new runbook versions lowered as
    /// the policy says, every proposal read and planned, judged as one
    /// batch on the journal's last day, and journaled with its outcome.
    async fn act(
        &mut self,
        reader: &mut Reader,
        proposals: &mut [Proposal],
        _latest: &BTreeMap<(String, String), f64>,
        now: i64,
    ) -> Result<Vec<Executed>, String> {
        if proposals.is_empty() {
            return Ok(Vec::new());
        }
        pin_new_runbook_versions(&self.journal, self.policy.new_runbook_approvals, proposals).await;
        let mut read = Vec::with_capacity(proposals.len());
        for p in proposals.iter() {
            read.push(self.read_and_plan(reader, p, now).await);
        }
        let recent = self
            .journal
            .since(now - 86_400)
            .await
            .map_err(|e| e.to_string())?;
        let observed = self.observe(reader, proposals, now).await;
        let candidates: Vec<Candidate<'_>> = proposals
            .iter()
            .zip(&read)
            .filter_map(|(p, (plan, scope))| {
                let planned = plan.as_ref().ok().filter(|_| scope.is_none())?;
                Some(Candidate {
                    intent: &p.intent,
                    planned,
                })
            })
            .collect();
        let verdicts = evaluate_guards(
            &self.policy,
            &observed,
            &guard_history(&recent),
            &candidates,
            now,
        );
        let mut verdicts = verdicts.into_iter();
        let mut out = Vec::with_capacity(proposals.len());
        for (p, (plan, scope)) in proposals.iter().zip(read) {
            let judged = match (plan, scope) {
                (Err(reason), _) => Judged::PlanFailed(reason),
                (Ok(planned), Some((guard, detail))) => {
                    Judged::Refused(planned, guard, detail, false)
                }
                (Ok(planned), None) => {
                    let verdict = verdicts.next().unwrap_or(Verdict::Allowed);
                    let defers = verdict.defers(&p.intent.runbook);
                    match verdict {
                        Verdict::Allowed => Judged::Allowed(planned),
                        Verdict::Refused { guard, detail, .. } => {
                            Judged::Refused(planned, guard, detail, defers)
                        }
                    }
                }
            };
            out.push(
                self.record(p, judged, now)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ComponentId;

    fn finding(score: f64) -> Finding {
        Finding {
            component: ComponentId {
                kind: "PaymentGateway".into(),
                namespace: "pay".into(),
                name: "eu".into(),
            },
            signal: "saturation".into(),
            detector: "forecast".into(),
            score,
            at: 0,
            value: 1.0,
            baseline: 0.9,
            time_to_threshold_seconds: None,
            explanation: "why".into(),
            window: None,
        }
    }

    #[test]
    fn findings_in_consecutive_cycles_are_one_episode_and_a_gap_starts_another() {
        let mut e = Episodes::default();
        e.add(&[finding(0.8)], 0, 30);
        e.add(&[finding(0.9)], 30, 30);
        e.add(&[finding(0.7)], 60, 30);
        e.add(&[], 90, 30);
        e.add(&[finding(0.6)], 120, 30);
        let spans: Vec<_> = e
            .done
            .iter()
            .map(|x| (x.start, x.end, x.cycles, x.max_score))
            .collect();
        assert_eq!(spans, vec![(0, 60, 3, 0.9), (120, 120, 1, 0.6)]);
    }
}
