//! The executor: the one place runbook actions reach the cluster. For each
//! batch it reads the targets, plans (pure), judges with the guards (pure),
//! writes the journal row, then — by mode — records, validates with a
//! server-side dry run, or patches under the field manager `autopilot`, and
//! finally records the outcome, emits an Event on the target and bumps a
//! counter, so the three always agree.
//!
//! One file per concern: `propose` (a batch: plan, guard, journal, act by
//! mode), `send` (the one write to a target, and "send, then finish"),
//! `finish` (the outcome in the journal, the Event, the counter), `approve` (approval and
//! rejection of recommendations), `review` (recommendations published as
//! objects, and people's Approvals of them), `resolve` (intents a restart
//! interrupted) and `undo` (verification and undo through the inverse patch).
//!
//! Must not write to a target anywhere but `send::send`: every path (act,
//! approve, resolve, undo) goes through it, so a check on writes has one
//! place to live. Events are the only other write, and are best effort.

use kube::{
    Api, Client,
    api::DynamicObject,
    runtime::events::{Recorder, Reporter},
};
use serde_json::Value;

use super::{
    action::{Change, KindInfo, kind_info},
    guard::Observed,
    journal::{self, Journal, JournalEntry, outcome},
};
use crate::{
    decide::{Intent, Mode},
    detect::ComponentId,
    scope::Scope,
};

mod approve;
mod finish;
pub mod gate;
mod policy;
mod propose;
mod resolve;
mod review;
mod send;
mod undo;

pub use policy::{ClusterPolicy, PolicyError, PolicySource, fetch_policy, fetch_policy_object};
pub use propose::{history, new_entry};
pub use review::{ACTION_ID_LABEL, AdmissionState, Approvals, admission_vouches, submit_approval};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("recording in the journal failed")]
    RecordJournal(#[from] journal::Error),
    #[error("journal entry {id} does not exist")]
    FindEntry { id: i64 },
    #[error("approving entry {id}: {reason}")]
    ApproveEntry { id: i64, reason: String },
    #[error("undoing entry {id}: {reason}")]
    UndoEntry { id: i64, reason: String },
    #[error("journal entry {id} holds an unreadable {field}: {reason}")]
    ReadEntry {
        id: i64,
        field: &'static str,
        reason: String,
    },
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::RecordJournal(e) => e.kind(),
            Error::FindEntry { .. } => "find_entry",
            Error::ApproveEntry { .. } => "approve_entry",
            Error::UndoEntry { .. } => "undo_entry",
            Error::ReadEntry { .. } => "read_entry",
        }
    }
}

/// Why a single write did not happen (journaled as the outcome detail).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("reading {target} failed: {source}")]
    FetchTarget { target: String, source: kube::Error },
    #[error("{target} does not exist")]
    MissingTarget { target: String },
    #[error("patching {target} failed: {source}")]
    PatchTarget { target: String, source: kube::Error },
    #[error("creating {target} failed: {source}")]
    CreateObject { target: String, source: kube::Error },
    #[error("{target} changed since the decision (resourceVersion conflict); not sent")]
    ConflictOnTarget { target: String },
    #[error("{target} changed since the action; not undone")]
    ChangedSinceAction { target: String },
    #[error("not sent to {target}: {reason}")]
    Fenced { target: String, reason: String },
}

impl SendError {
    /// Whether the write may have reached the cluster although it failed:
    /// a patch or create whose reply was lost or was a server error (5xx,
    /// 429 Too Many Requests, a timeout). A refusal by validation or
    /// admission (4xx) and a failed read were not applied.
    pub fn possibly_sent(&self) -> bool {
        match self {
            SendError::PatchTarget { source, .. } | SendError::CreateObject { source, .. } => {
                match source {
                    kube::Error::Api(s) => s.code >= 500 || s.code == 429,
                    // No status: the connection broke, the reply timed out
                    // or could not be read after the request was sent.
                    _ => true,
                }
            }
            _ => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SendError::FetchTarget { .. } => "fetch_target",
            SendError::MissingTarget { .. } => "missing_target",
            SendError::PatchTarget { .. } => "patch_target",
            SendError::CreateObject { .. } => "create_object",
            SendError::ConflictOnTarget { .. } => "conflict",
            SendError::ChangedSinceAction { .. } => "changed_since_action",
            SendError::Fenced { .. } => "fenced",
        }
    }
}

/// Counters of the executor (`autopilot_act_actions_total{action,outcome}`,
/// `autopilot_act_verifications_total{result}`).
#[derive(Clone)]
pub struct Metrics {
    pub actions: prometheus::IntCounterVec,
    /// Verdicts of applied actions' verifications: `passed`, `failed`
    /// (undone by the inverse where there is one), `no_data`.
    pub verifications: prometheus::IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let actions = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "autopilot_act_actions_total",
                "Runbook actions by kind and outcome",
            ),
            &["action", "outcome"],
        )?;
        registry.register(Box::new(actions.clone()))?;
        let verifications = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "autopilot_act_verifications_total",
                "Verifications of applied actions at their deadline, by result",
            ),
            &["result"],
        )?;
        registry.register(Box::new(verifications.clone()))?;
        Ok(Self {
            actions,
            verifications,
        })
    }
}

/// Where the gate gets the agent's own observations for a write (today:
/// CloudNativePG replication lags, for the switchover guard).
#[derive(Clone, Default)]
pub enum Observer {
    /// Nothing observed: a guard that needs an observation refuses.
    #[default]
    Nothing,
    /// Read from Prometheus at the time of the judgement.
    Prometheus(crate::observe::Prometheus),
    /// Fixed values (tests; a replay of recorded history).
    Fixed(Observed),
}

impl Observer {
    /// What is observed now, for `intents`: Prometheus is only asked when a
    /// switchover needs a lag. A failed query is an empty observation (the
    /// guard then refuses), logged.
    async fn observe<'a>(
        &self,
        intents: impl IntoIterator<Item = &'a Intent>,
        now: i64,
    ) -> Observed {
        let needs_lag = intents
            .into_iter()
            .any(|i| matches!(i.action, crate::decide::Action::Switchover { .. }));
        match self {
            Observer::Nothing => Observed::default(),
            Observer::Fixed(o) => o.clone(),
            Observer::Prometheus(_) if !needs_lag => Observed::default(),
            Observer::Prometheus(p) => match p.replica_lags(now).await {
                Ok(replica_lag_seconds) => Observed {
                    replica_lag_seconds,
                },
                Err(error) => {
                    tracing::warn!(error = %crate::telemetry::chain(&error), "reading replication lags for the switchover guard failed; a switchover is refused");
                    Observed::default()
                }
            },
        }
    }
}

/// A runbook's proposal with its provenance and effective mode.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub intent: Intent,
    pub runbook_hash: String,
    /// Who made that version of the runbook (`decide::Runbook::editor`).
    pub runbook_editor: Option<String>,
    /// `finding`, `cron` or `condition`.
    pub trigger: String,
    /// The findings behind it.
    pub evidence: Value,
    /// Effective mode (agent's mode, lowered by the runbook's pin).
    pub mode: Mode,
    /// Why the mode was lowered further, if it was (a new runbook version
    /// not yet trusted in auto mode); journaled with the verdict's detail.
    pub mode_note: Option<String>,
}

impl Proposal {
    /// A runbook's intent in the runbook's effective mode: the agent's mode,
    /// lowered by the runbook's pin.
    pub fn from_runbook(
        runbook: &crate::decide::Runbook,
        intent: Intent,
        agent_mode: Mode,
        trigger: &str,
        evidence: Value,
    ) -> Self {
        Self {
            intent,
            runbook_hash: runbook.hash.clone(),
            runbook_editor: runbook.editor.clone(),
            trigger: trigger.to_string(),
            evidence,
            mode: Mode::effective(agent_mode, runbook.meta.mode),
            mode_note: None,
        }
    }
}

#[cfg(test)]
impl Proposal {
    /// A test's proposal of `intent` (its runbook named in it) fired by a
    /// finding, in `mode`.
    pub(crate) fn of_finding(intent: Intent, mode: Mode) -> Self {
        Self {
            intent,
            runbook_hash: "h".into(),
            runbook_editor: None,
            trigger: "finding".into(),
            evidence: serde_json::json!([]),
            mode,
            mode_note: None,
        }
    }
}

/// What happened to one proposal.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed {
    pub id: i64,
    pub outcome: String,
    pub detail: String,
    /// A refusal, or a recommendation, that repeats journal entry `id` and
    /// was not journaled again.
    pub repeat: bool,
    /// Refused only until another runbook's action on the target lifts
    /// (`guard::Verdict::defers`): the agent holds the runbook armed
    /// (`agent::deferred`).
    pub deferred: bool,
}

/// Called between reading a target and writing it, with the attempt number:
/// the window in which another writer can change the target.
pub type BeforeWrite =
    std::sync::Arc<dyn Fn(usize) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

pub struct Executor<J> {
    client: Client,
    journal: J,
    metrics: Metrics,
    /// Who the Events on targets say reported them.
    reporter: Reporter,
    /// Intents found unsent after a restart are sent only if younger than this.
    pub stale_after_seconds: i64,
    /// A proposal refused by the same guard, with the same patch, as the
    /// latest journal entry of its runbook, action and target is not
    /// journaled again for this long: a runbook that keeps firing through a
    /// cooldown would otherwise add a row every cycle.
    pub repeat_refusal_seconds: i64,
    before_write: Option<BeforeWrite>,
    /// The agent's mode, which the gate checks on every write.
    mode: Mode,
    /// Where it may write, checked at planning and at every send.
    scope: Scope,
    /// The agent's own observations for the guards.
    observer: Observer,
    /// How people's Approvals are accepted.
    approvals: Approvals,
    /// Per applied action awaiting its verification, since when its signal
    /// has been on one side (`verify::judge_verification`). In memory: after
    /// a restart a window starts again, which only delays a verdict.
    streaks: std::sync::Mutex<std::collections::BTreeMap<i64, crate::act::verify::Streak>>,
}

impl<J: Journal> Executor<J> {
    pub fn new(client: Client, journal: J, metrics: Metrics) -> Self {
        Self {
            client,
            journal,
            metrics,
            // As the reconcilers report theirs (`reconcile::Context`).
            reporter: Reporter {
                controller: "autopilot".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            stale_after_seconds: 600,
            repeat_refusal_seconds: 3600,
            before_write: None,
            // Until told otherwise, nothing takes effect.
            mode: Mode::DryRun,
            scope: Scope::all(),
            observer: Observer::Nothing,
            approvals: Approvals::default(),
            streaks: Default::default(),
        }
    }

    /// The namespaces it may write in (default: all); the hands-off label
    /// is honoured in every scope.
    pub fn with_scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Where the guards read the agent's own observations (default:
    /// nothing, so a switchover is refused).
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = observer;
        self
    }

    /// The agent's mode: `auto` lets the agent act on its own,
    /// `recommend` lets people approve, `dry-run` sends nothing.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The gate for a write, now: the policy read for this send (a policy
    /// that cannot be read refuses), the kill switch, the scope with the
    /// labels as they are now, the agent's mode, and the guards on `judged`
    /// against the history without the entries `own` (the write's own row,
    /// and for an undo the action it reverts) and the agent's observations.
    async fn admit(
        &self,
        policy: &(impl PolicySource + ?Sized),
        decider: gate::Decider,
        judged: (&Intent, &crate::act::action::Planned),
        own: &[i64],
        now: i64,
    ) -> Result<Result<gate::Admitted, gate::Refused>, Error> {
        let inputs = self.gate_inputs(policy, judged.0, now).await;
        let mut recent = self.journal.since(now - 86_400).await?;
        recent.retain(|e| !own.contains(&e.id));
        Ok(inputs.judge(self.mode, decider, judged, &recent, now))
    }

    /// What the gate reads for a write, besides the journal: the policy,
    /// the scope's verdict with the labels as they are now, and the
    /// agent's observations.
    async fn gate_inputs(
        &self,
        policy: &(impl PolicySource + ?Sized),
        intent: &Intent,
        now: i64,
    ) -> GateInputs {
        let policy = policy.current().await.map_err(|e| gate::Refused {
            guard: "policy".into(),
            detail: crate::telemetry::chain(&e).to_string(),
        });
        let scope = self
            .scope_of(intent.action.target())
            .await
            .map_err(|detail| gate::Refused {
                guard: "scope".into(),
                detail,
            });
        let observed = self.observer.observe([intent], now).await;
        GateInputs {
            policy,
            scope,
            observed,
        }
    }

    /// The scope's verdict on `target` with the hands-off labels of its
    /// namespace and of the object as they are now. `Err` when a label
    /// cannot be read: the caller refuses (fail closed).
    async fn scope_of(
        &self,
        target: &ComponentId,
    ) -> Result<Result<(), crate::scope::OutOfScope>, String> {
        if !self.scope.allows_namespace(&target.namespace) {
            return Ok(self.scope.check(&target.namespace, None, None));
        }
        let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone())
            .get_opt(&target.namespace)
            .await
            .map_err(|e| {
                format!(
                    "cannot read namespace {} for its hands-off label: {e}",
                    target.namespace
                )
            })?;
        let ns_labels = ns.and_then(|n| n.metadata.labels);
        let object = self.fetch_target(target).await.map_err(|e| e.to_string())?;
        let labels: Option<std::collections::BTreeMap<String, String>> = object
            .as_ref()
            .and_then(|o| serde_json::from_value(o["metadata"]["labels"].clone()).ok());
        Ok(self
            .scope
            .check(&target.namespace, ns_labels.as_ref(), labels.as_ref()))
    }

    /// Runs `hook` in the window between reading a target and patching it.
    /// A seam for tests that need a real concurrent writer (and so a real
    /// 409 Conflict from the API server) at a known point; the agent never
    /// sets it.
    pub fn with_before_write(mut self, hook: BeforeWrite) -> Self {
        self.before_write = Some(hook);
        self
    }

    pub fn journal(&self) -> &J {
        &self.journal
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn api(&self, kind: &KindInfo, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &kind.api_resource())
    }

    /// A recorder for one Event. Fresh each time on purpose: a shared
    /// recorder folds Events with the same reason on the same object into one
    /// series, keeping the first note, and each action's Event must stay its
    /// own record naming its journal entry.
    fn recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }

    /// Reads a target as JSON; `None` when it does not exist.
    pub async fn fetch_target(&self, target: &ComponentId) -> Result<Option<Value>, SendError> {
        let Some(kind) = kind_info(&target.kind) else {
            return Ok(None);
        };
        let obj = self
            .api(&kind, &target.namespace)
            .get_opt(&target.name)
            .await
            .map_err(|source| SendError::FetchTarget {
                target: target.to_string(),
                source,
            })?;
        Ok(obj.map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    /// Runs one cycle's proposals: plan, guard, journal, then act by mode.
    pub async fn run_batch(
        &self,
        proposals: &[Proposal],
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Vec<Executed>, Error> {
        // One read of the journal's last day for the whole batch: the
        // order, the guards' history and the repeats are judged on it (each
        // send is judged again by the gate on the history as it is then).
        // Proposals that repeat a pending recommendation go last (see
        // `fair_order`); the results come back in the callers' order.
        let recent = self.journal.since(now - 86_400).await?;
        let pending: Vec<bool> = proposals
            .iter()
            .map(|p| repeats_pending(p, &recent))
            .collect();
        let order = fair_order(&pending);
        let ordered: Vec<Proposal> = order.iter().map(|&i| proposals[i].clone()).collect();
        let mut out = self.run_ordered(&ordered, &recent, policy, now).await?;
        let mut back: Vec<(usize, Executed)> = order.into_iter().zip(out.drain(..)).collect();
        back.sort_by_key(|(i, _)| *i);
        Ok(back
            .into_iter()
            .map(|(i, mut e)| {
                // A decision already standing as a pending recommendation
                // is not deferred by a refusal of its repeat.
                e.deferred &= !pending[i];
                e
            })
            .collect())
    }

    async fn run_ordered(
        &self,
        proposals: &[Proposal],
        recent: &[JournalEntry],
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Vec<Executed>, Error> {
        // Read, plan and judge everything first, on one snapshot of history
        // and of the policy; each send is judged again by the gate.
        let judged = self.judge_batch(proposals, recent, policy, now).await?;
        let mut out = Vec::with_capacity(proposals.len());
        for (p, (object, judged)) in proposals.iter().zip(judged) {
            let executed = match judged {
                propose::Judged::PlanFailed { reason } => {
                    self.record_plan_failure(p, object.as_ref(), &reason, now)
                        .await?
                }
                propose::Judged::Refused(refusal) => {
                    self.record_refusal(p, object.as_ref(), &refusal, recent, now)
                        .await?
                }
                propose::Judged::Allowed { planned } => self.act(p, &planned, policy, now).await?,
            };
            out.push(executed);
        }
        Ok(out)
    }

    /// Journal entry `id`, parsed, if its outcome is `expected` (a pending
    /// recommendation, an applied action); otherwise `wrong` says why not.
    async fn entry_in(
        &self,
        id: i64,
        expected: &str,
        wrong: impl Fn(String) -> Error,
    ) -> Result<Recorded, Error> {
        let e = self.journal.get(id).await?.ok_or(Error::FindEntry { id })?;
        if e.outcome.as_deref() != Some(expected) {
            let was = e.outcome.as_deref().unwrap_or("none yet");
            return Err(wrong(match expected {
                outcome::RECOMMENDED => {
                    format!("it is not a pending recommendation (outcome {was})")
                }
                outcome::APPLIED => format!("only applied actions can be undone (outcome {was})"),
                _ => format!("its outcome is {was}, not {expected}"),
            }));
        }
        Recorded::parse(e)
    }
}

/// The order a batch is judged in: the proposals as decided, except that
/// one repeating a recommendation still pending review (same runbook,
/// action and target, not yet approved or rejected) goes after the others.
/// The first action on a target takes the cycle and then the cooldown; a
/// condition that persists in recommend mode (nothing is applied, so it
/// does not heal) re-proposes every cooldown, and would otherwise keep the
/// target from every other runbook's proposal for as long as it lasts. In
/// auto mode nothing is pending and the order is the decided one.
fn fair_order(repeats_pending: &[bool]) -> Vec<usize> {
    let (mut first, later): (Vec<usize>, Vec<usize>) =
        (0..repeats_pending.len()).partition(|&i| !repeats_pending[i]);
    first.extend(later);
    first
}

/// Whether `p` repeats a recommendation still pending review: same
/// runbook, action and target, not yet approved or rejected.
fn repeats_pending(p: &Proposal, recent: &[JournalEntry]) -> bool {
    let target = crate::act::guard::target_key(&p.intent.action);
    recent.iter().any(|e| {
        e.outcome.as_deref() == Some(outcome::RECOMMENDED)
            && e.approval.is_none()
            && e.entry.runbook == p.intent.runbook
            && e.entry.action_kind == p.intent.action.name()
            && e.entry.target == target
    })
}

/// What the gate judges a write on, read before the journal's history (so
/// that the history can be read, judged and extended in one step: see
/// [`Journal::record_intent_checked`]).
struct GateInputs {
    policy: Result<crate::act::guard::Policy, gate::Refused>,
    scope: Result<Result<(), crate::scope::OutOfScope>, gate::Refused>,
    observed: Observed,
}

impl GateInputs {
    /// The gate's verdict on `judged` against `recent`, the journal's
    /// entries that do not include the write's own.
    fn judge(
        &self,
        mode: Mode,
        decider: gate::Decider,
        judged: (&Intent, &crate::act::action::Planned),
        recent: &[JournalEntry],
        now: i64,
    ) -> Result<gate::Admitted, gate::Refused> {
        let (intent, planned) = judged;
        let policy = self.policy.as_ref().map_err(Clone::clone)?;
        let scope = self.scope.clone()?;
        let history = propose::history(recent);
        let guards = gate::Judged {
            intent,
            planned,
            history: &history,
            observed: &self.observed,
        };
        gate::judge(policy, mode, decider, scope, Some(guards), now)
    }
}

/// A journal row read back, with its JSON columns and its mode parsed once.
struct Recorded {
    row: JournalEntry,
    intent: Intent,
    mode: Mode,
    change: Option<Change>,
    inverse: Option<Change>,
}

impl Recorded {
    fn parse(row: JournalEntry) -> Result<Self, Error> {
        let id = row.id;
        let bad = |field: &'static str| {
            move |err: serde_json::Error| Error::ReadEntry {
                id,
                field,
                reason: err.to_string(),
            }
        };
        let intent: Intent =
            serde_json::from_value(row.entry.action.clone()).map_err(bad("action"))?;
        let change = row
            .entry
            .patch
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(bad("patch"))?;
        let inverse = row
            .entry
            .inverse
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(bad("inverse"))?;
        let mode = row.entry.parsed_mode().map_err(|reason| Error::ReadEntry {
            id,
            field: "mode",
            reason,
        })?;
        Ok(Self {
            row,
            intent,
            mode,
            change,
            inverse,
        })
    }

    /// The object the action is planned against and sent to.
    fn target(&self) -> &ComponentId {
        self.intent.action.target()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{act::journal::NewEntry, decide::Action};

    fn proposal(runbook: &str, name: &str) -> Proposal {
        let mut intent = Intent::new(Action::ScaleReplicas {
            target: ComponentId {
                kind: "PaymentGateway".into(),
                namespace: "pay".into(),
                name: name.into(),
            },
            replicas: 3,
        });
        intent.runbook = runbook.into();
        Proposal::of_finding(intent, Mode::Recommend)
    }

    fn recommended(runbook: &str, name: &str, approval: Option<&str>) -> JournalEntry {
        JournalEntry {
            id: 1,
            entry: NewEntry {
                runbook: runbook.into(),
                action_kind: "scale_replicas".into(),
                target: format!("PaymentGateway/pay/{name}"),
                ..NewEntry::fixture()
            },
            dry_run: Some("ok".into()),
            outcome: Some(outcome::RECOMMENDED.into()),
            outcome_detail: None,
            outcome_at: Some(0),
            verification: None,
            approval: approval.map(str::to_string),
        }
    }

    /// A persistent condition in recommend mode re-proposes every cooldown;
    /// it goes after a runbook that has nothing pending on the target, so
    /// it cannot keep the target's every cooldown slot to itself.
    #[test]
    fn a_proposal_repeating_a_pending_recommendation_goes_last() {
        let batch = [
            proposal("work-mem", "db"),
            proposal("switchover", "db"),
            proposal("scale", "gw"),
        ];
        let fair_order = |batch: &[Proposal], recent: &[JournalEntry]| {
            let pending: Vec<bool> = batch.iter().map(|p| repeats_pending(p, recent)).collect();
            fair_order(&pending)
        };
        let pending = [recommended("work-mem", "db", None)];
        assert_eq!(fair_order(&batch, &pending), vec![1, 2, 0]);
        // Nothing pending (auto mode), or the recommendation already
        // approved or rejected: the decided order.
        assert_eq!(fair_order(&batch, &[]), vec![0, 1, 2]);
        let decided = [recommended("work-mem", "db", Some("approved by alice"))];
        assert_eq!(fair_order(&batch, &decided), vec![0, 1, 2]);
        // Another target's or another runbook's recommendation is no repeat.
        let other = [
            recommended("work-mem", "gw", None),
            recommended("x", "db", None),
        ];
        assert_eq!(fair_order(&batch, &other), vec![0, 1, 2]);
    }
}
