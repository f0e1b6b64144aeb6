//! The executor: the one place runbook actions reach the cluster. For each
//! batch it reads the targets, plans (pure), judges with the guards (pure),
//! writes the journal row, then — by mode — records, validates with a
//! server-side dry run, or patches under the field manager `autopilot`, and
//! finally records the outcome, emits an Event on the target and bumps a
//! counter, so the three always agree.
//!
//! Also: restart resolution of in-flight intents, approval and rejection of
//! recommendations, verification and undo through the inverse patch.

use std::collections::BTreeMap;

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::{
    action::{
        ACTION_ID_ANNOTATION, Change, KindInfo, Planned, Subresource, kind_info, patch_is_applied,
        plan_action,
    },
    guard::{Candidate, Policy, Recent, Verdict, evaluate_guards, target_key},
    journal::{self, Journal, JournalEntry, NewEntry, outcome},
    verify::{Verification, judge_verification},
};
use crate::{
    crd::FIELD_MANAGER,
    decide::{Action, Intent, Mode, Verify},
    detect::ComponentId,
};

/// Annotation on a target approving pending recommendations by journal id.
pub const APPROVE_ANNOTATION: &str = "autopilot.payments.io/approve";
/// Annotation on a target rejecting pending recommendations by journal id.
pub const REJECT_ANNOTATION: &str = "autopilot.payments.io/reject";

/// How many times a write is retried after a resourceVersion conflict.
const CONFLICT_RETRIES: usize = 3;

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
}

impl SendError {
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::FetchTarget { .. } => "fetch_target",
            SendError::MissingTarget { .. } => "missing_target",
            SendError::PatchTarget { .. } => "patch_target",
            SendError::CreateObject { .. } => "create_object",
            SendError::ConflictOnTarget { .. } => "conflict",
        }
    }
}

/// Counters of the executor (`autopilot_act_actions_total{action,outcome}`).
#[derive(Clone)]
pub struct Metrics {
    pub actions: prometheus::IntCounterVec,
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
        Ok(Self { actions })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading ConfigMap {namespace}/{name} failed")]
    FetchPolicy {
        namespace: String,
        name: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    ReadPolicy(#[from] super::guard::Error),
}

impl PolicyError {
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::FetchPolicy { .. } => "fetch_policy",
            PolicyError::ReadPolicy(e) => e.kind(),
        }
    }
}

/// Reads the guard policy from the ConfigMap `autopilot-policy` in
/// `namespace`; defaults when it does not exist.
pub async fn fetch_policy(client: &Client, namespace: &str) -> Result<Policy, PolicyError> {
    use super::guard::POLICY_CONFIGMAP;
    let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(POLICY_CONFIGMAP)
        .await
        .map_err(|source| PolicyError::FetchPolicy {
            namespace: namespace.into(),
            name: POLICY_CONFIGMAP,
            source,
        })?;
    match cm.and_then(|c| c.data) {
        Some(data) => Ok(Policy::from_configmap_data(&data)?),
        None => Ok(Policy::default()),
    }
}

/// A runbook's proposal with its provenance and effective mode.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub intent: Intent,
    pub runbook_hash: String,
    /// `finding`, `cron` or `condition`.
    pub trigger: String,
    /// The findings behind it.
    pub evidence: Value,
    /// Effective mode (agent's mode, lowered by the runbook's pin).
    pub mode: Mode,
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
            trigger: trigger.to_string(),
            evidence,
            mode: Mode::effective(agent_mode, runbook.meta.mode),
        }
    }
}

/// What happened to one proposal.
#[derive(Clone, Debug, PartialEq)]
pub struct Executed {
    pub id: i64,
    pub outcome: String,
    pub detail: String,
    /// A refusal that repeats journal entry `id` and was not journaled again.
    pub repeat: bool,
}

/// Called between reading a target and writing it, with the attempt number:
/// the window in which another writer can change the target.
pub type BeforeWrite =
    std::sync::Arc<dyn Fn(usize) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

pub struct Executor<J> {
    client: Client,
    journal: J,
    metrics: Metrics,
    /// Intents found unsent after a restart are sent only if younger than this.
    pub stale_after_seconds: i64,
    /// A proposal refused by the same guard, with the same patch, as the
    /// latest journal entry of its runbook, action and target is not
    /// journaled again for this long: a runbook that keeps firing through a
    /// cooldown would otherwise add a row every cycle.
    pub repeat_refusal_seconds: i64,
    before_write: Option<BeforeWrite>,
}

fn key(c: &ComponentId) -> String {
    c.to_string()
}

/// The id of the entry `entry` repeats: the latest journaled decision for
/// the same runbook, action kind and target, when it was refused by the same
/// guard with the same patch less than `window` seconds before. Any other
/// decision in between (an action sent, another guard) makes the next
/// refusal news again.
fn repeated_refusal(recent: &[JournalEntry], entry: &NewEntry, window: i64) -> Option<i64> {
    let latest = recent
        .iter()
        .filter(|e| {
            e.entry.runbook == entry.runbook
                && e.entry.action_kind == entry.action_kind
                && e.entry.target == entry.target
        })
        .max_by_key(|e| (e.entry.at, e.id))?;
    (latest.outcome.as_deref() == Some(outcome::REFUSED)
        && latest.entry.verdict == entry.verdict
        && latest.entry.patch == entry.patch
        && latest.entry.mode == entry.mode
        && latest.entry.at > entry.at - window)
        .then_some(latest.id)
}

/// The object an action is planned against: its target (for a Backup, the Cluster).
fn plan_target(action: &Action) -> &ComponentId {
    action.target()
}

impl<J: Journal> Executor<J> {
    pub fn new(client: Client, journal: J, metrics: Metrics) -> Self {
        Self {
            client,
            journal,
            metrics,
            stale_after_seconds: 600,
            repeat_refusal_seconds: 3600,
            before_write: None,
        }
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
                target: key(target),
                source,
            })?;
        Ok(obj.map(|o| serde_json::to_value(o).unwrap_or_default()))
    }

    /// The guard history: entries of the last day that count against limits
    /// (allowed, in any mode, and not failed, rejected or abandoned).
    fn history(recent: &[JournalEntry]) -> Vec<Recent> {
        recent
            .iter()
            .filter(|e| e.entry.verdict == "allowed")
            .filter(|e| {
                !matches!(
                    e.outcome.as_deref(),
                    Some(outcome::FAILED | outcome::REJECTED | outcome::ABANDONED)
                )
            })
            .map(|e| Recent {
                at: e.entry.at,
                runbook: e.entry.runbook.clone(),
                target: e.entry.target.clone(),
                namespace: e.entry.namespace.clone(),
                disruptive: e.entry.disruptive,
            })
            .collect()
    }

    /// Runs one cycle's proposals: plan, guard, journal, then act by mode.
    pub async fn run_batch(
        &self,
        proposals: &[Proposal],
        policy: &Policy,
        now: i64,
    ) -> Result<Vec<Executed>, Error> {
        // Read and plan everything first (pure planning on what was read).
        let mut planned: Vec<(Option<Value>, Result<Planned, String>)> = Vec::new();
        for p in proposals {
            let target = plan_target(&p.intent.action);
            let result = match self.fetch_target(target).await {
                Ok(Some(obj)) => {
                    let plan = plan_action(&p.intent.action, &obj, now).map_err(|e| e.to_string());
                    (Some(obj), plan)
                }
                Ok(None) => (
                    None,
                    Err(SendError::MissingTarget {
                        target: key(target),
                    }
                    .to_string()),
                ),
                Err(e) => (None, Err(e.to_string())),
            };
            planned.push(result);
        }
        let ok: Vec<(usize, Candidate<'_>)> = planned
            .iter()
            .enumerate()
            .filter_map(|(i, (_, r))| {
                r.as_ref().ok().map(|pl| {
                    (
                        i,
                        Candidate {
                            intent: &proposals[i].intent,
                            planned: pl,
                        },
                    )
                })
            })
            .collect();
        let candidates: Vec<Candidate<'_>> = ok
            .iter()
            .map(|(_, c)| Candidate {
                intent: c.intent,
                planned: c.planned,
            })
            .collect();
        let recent = self.journal.since(now - 86_400).await?;
        let verdicts = evaluate_guards(policy, &Self::history(&recent), &candidates, now);
        let mut verdict_of: BTreeMap<usize, Verdict> =
            ok.iter().map(|(i, _)| *i).zip(verdicts).collect();

        let mut out = Vec::new();
        for (i, p) in proposals.iter().enumerate() {
            let (object, plan) = &planned[i];
            let executed = match plan {
                Err(reason) => {
                    let entry = self.new_entry(p, None, "plan_failed", reason, now);
                    let id = self.journal.record_intent(&entry).await?;
                    self.finish(id, &entry, object.as_ref(), outcome::FAILED, reason, now)
                        .await?
                }
                Ok(pl) => {
                    let verdict = verdict_of.remove(&i).unwrap_or(Verdict::Allowed);
                    match verdict {
                        Verdict::Refused { guard, detail } => {
                            let entry = self.new_entry(p, Some(pl), &guard, &detail, now);
                            if let Some(earlier) =
                                repeated_refusal(&recent, &entry, self.repeat_refusal_seconds)
                            {
                                out.push(self.repeat(earlier, &entry, &detail));
                                continue;
                            }
                            let id = self.journal.record_intent(&entry).await?;
                            self.finish(
                                id,
                                &entry,
                                object.as_ref(),
                                outcome::REFUSED,
                                &format!("{guard}: {detail}"),
                                now,
                            )
                            .await?
                        }
                        Verdict::Allowed => {
                            let entry = self.new_entry(p, Some(pl), "allowed", "", now);
                            // The intent is durable before anything is sent.
                            let id = self.journal.record_intent(&entry).await?;
                            self.act(id, &entry, p, pl, now).await?
                        }
                    }
                }
            };
            out.push(executed);
        }
        Ok(out)
    }

    /// A new recommendation replaces the pending ones of the same runbook,
    /// action and target: an SRE reviews the latest proposal, made on the
    /// latest data, not a pile of older ones (a persistent condition makes
    /// one per cooldown). Each is claimed through its approval field, as an
    /// approval would be, so one an SRE approved meanwhile is left alone;
    /// the claimed ones are abandoned.
    async fn supersede(&self, id: i64, entry: &NewEntry, now: i64) -> Result<(), Error> {
        for old in self.journal.list(1000, true).await? {
            let same = old.id != id
                && old.entry.runbook == entry.runbook
                && old.entry.action_kind == entry.action_kind
                && old.entry.target == entry.target;
            let note = format!("superseded by recommendation {id}");
            if same && self.journal.record_approval(old.id, &note).await? {
                self.journal
                    .record_outcome(old.id, outcome::ABANDONED, &note, now)
                    .await?;
                tracing::info!(id = old.id, by = id, target = %entry.target, "recommendation superseded");
            }
        }
        Ok(())
    }

    /// A refusal already journaled: counted and logged, not journaled again.
    fn repeat(&self, earlier: i64, entry: &NewEntry, detail: &str) -> Executed {
        tracing::debug!(
            earlier,
            runbook = %entry.runbook,
            target = %entry.target,
            guard = %entry.verdict,
            detail,
            "refused again; not journaled (same refusal as the earlier entry)"
        );
        self.metrics
            .actions
            .with_label_values(&[entry.action_kind.as_str(), outcome::REFUSED])
            .inc();
        Executed {
            id: earlier,
            outcome: outcome::REFUSED.to_string(),
            detail: format!("{}: {detail} (as journal entry {earlier})", entry.verdict),
            repeat: true,
        }
    }

    fn new_entry(
        &self,
        p: &Proposal,
        planned: Option<&Planned>,
        verdict: &str,
        detail: &str,
        now: i64,
    ) -> NewEntry {
        NewEntry {
            at: now,
            runbook: p.intent.runbook.clone(),
            runbook_hash: p.runbook_hash.clone(),
            trigger: p.trigger.clone(),
            evidence: p.evidence.clone(),
            action: serde_json::to_value(&p.intent).unwrap_or_default(),
            action_kind: p.intent.action.name().to_string(),
            target: target_key(&p.intent.action),
            namespace: p.intent.action.target().namespace.clone(),
            patch: planned.map(|pl| serde_json::to_value(&pl.change).unwrap_or_default()),
            inverse: planned
                .and_then(|pl| pl.inverse.as_ref())
                .map(|c| serde_json::to_value(c).unwrap_or_default()),
            disruptive: planned.is_some_and(|pl| pl.disruptive),
            mode: p.mode.as_str().to_string(),
            verdict: verdict.to_string(),
            verdict_detail: detail.to_string(),
            verify: p
                .intent
                .verify
                .as_ref()
                .map(|v| serde_json::to_value(v).unwrap_or_default()),
            undo_of: None,
        }
    }

    async fn act(
        &self,
        id: i64,
        entry: &NewEntry,
        p: &Proposal,
        pl: &Planned,
        now: i64,
    ) -> Result<Executed, Error> {
        let target = p.intent.action.target();
        match p.mode {
            Mode::DryRun => {
                self.finish_target(
                    id,
                    entry,
                    target,
                    outcome::DRY_RUN,
                    "not sent (dry-run mode)",
                    now,
                )
                .await
            }
            Mode::Recommend => {
                let (result, out) = match self
                    .send(
                        id,
                        &p.intent.action,
                        (&pl.change, pl.inverse.as_ref()),
                        now,
                        true,
                    )
                    .await
                {
                    Ok(_) => ("ok".to_string(), outcome::RECOMMENDED),
                    Err(e) => (format!("rejected by the API server: {e}"), outcome::FAILED),
                };
                self.journal.record_dry_run(id, &result).await?;
                let done = self
                    .finish_target(
                        id,
                        entry,
                        target,
                        out,
                        &format!("server-side dry run: {result}"),
                        now,
                    )
                    .await?;
                if out == outcome::RECOMMENDED {
                    self.supersede(id, entry, now).await?;
                }
                Ok(done)
            }
            Mode::Auto => match self
                .send(
                    id,
                    &p.intent.action,
                    (&pl.change, pl.inverse.as_ref()),
                    now,
                    false,
                )
                .await
            {
                Ok(detail) => {
                    self.finish_target(id, entry, target, outcome::APPLIED, &detail, now)
                        .await
                }
                Err(e) => {
                    self.finish_target(
                        id,
                        entry,
                        target,
                        outcome::FAILED,
                        &format!("{}: {e}", e.kind()),
                        now,
                    )
                    .await
                }
            },
        }
    }

    /// Sends one change, tagged with the journal id, with optimistic
    /// locking. On a conflict the target is read again and re-planned: the
    /// change is retried only if it is still exactly what was journaled.
    async fn send(
        &self,
        id: i64,
        action: &Action,
        (change, inverse): (&Change, Option<&Change>),
        planned_at: i64,
        dry_run: bool,
    ) -> Result<String, SendError> {
        let target = plan_target(action);
        let tk = key(target);
        match change {
            Change::Create { kind, object } => {
                let mut obj: DynamicObject =
                    serde_json::from_value(object.clone()).map_err(|e| {
                        SendError::CreateObject {
                            target: tk.clone(),
                            source: kube::Error::SerdeError(e),
                        }
                    })?;
                obj.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(ACTION_ID_ANNOTATION.into(), id.to_string());
                let pp = PostParams {
                    dry_run,
                    field_manager: Some(FIELD_MANAGER.into()),
                };
                let api = self.api(kind, &target.namespace);
                match api.create(&pp, &obj).await {
                    Ok(o) => Ok(format!(
                        "created {} {}",
                        kind.kind,
                        o.metadata.name.unwrap_or_default()
                    )),
                    Err(kube::Error::Api(s)) if s.is_already_exists() => {
                        // Ours (same journal id) means it was already sent.
                        let name = obj.metadata.name.clone().unwrap_or_default();
                        let existing = api.get_opt(&name).await.ok().flatten();
                        let ours = existing
                            .and_then(|o| o.metadata.annotations)
                            .and_then(|a| a.get(ACTION_ID_ANNOTATION).cloned())
                            == Some(id.to_string());
                        if ours {
                            Ok(format!(
                                "{} {name} already created by this action",
                                kind.kind
                            ))
                        } else {
                            Err(SendError::CreateObject {
                                target: tk,
                                source: kube::Error::Api(s),
                            })
                        }
                    }
                    Err(source) => Err(SendError::CreateObject { target: tk, source }),
                }
            }
            Change::Merge {
                kind,
                namespace,
                name,
                subresource,
                patch,
            } => {
                let api = self.api(kind, namespace);
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let current = self
                        .fetch_target(target)
                        .await?
                        .ok_or_else(|| SendError::MissingTarget { target: tk.clone() })?;
                    // Re-plan against what is there now; send only the journaled change.
                    match plan_action(action, &current, planned_at) {
                        // Same change and same inverse: the fields it touches
                        // are as they were when it was decided.
                        Ok(p) if &p.change == change && p.inverse.as_ref() == inverse => {}
                        _ if attempt == 1 && patch_is_applied(patch, &current) => {
                            return Ok("already in effect".into());
                        }
                        _ => return Err(SendError::ConflictOnTarget { target: tk }),
                    }
                    let mut body = patch.clone();
                    body["metadata"]["resourceVersion"] =
                        current["metadata"]["resourceVersion"].clone();
                    if *subresource == Subresource::Main {
                        body["metadata"]["annotations"][ACTION_ID_ANNOTATION] =
                            json!(id.to_string());
                    }
                    let pp = PatchParams {
                        dry_run,
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    };
                    if let Some(hook) = &self.before_write {
                        hook(attempt).await;
                    }
                    let result = match subresource {
                        Subresource::Main => api.patch(name, &pp, &Patch::Merge(&body)).await,
                        Subresource::Status => {
                            api.patch_status(name, &pp, &Patch::Merge(&body)).await
                        }
                    };
                    match result {
                        Ok(o) => {
                            return Ok(format!(
                                "{}patched {tk} (resourceVersion {})",
                                if dry_run { "dry-run " } else { "" },
                                o.metadata.resource_version.unwrap_or_default()
                            ));
                        }
                        Err(kube::Error::Api(s))
                            if s.is_conflict() && attempt < CONFLICT_RETRIES =>
                        {
                            tracing::info!(target = %tk, attempt, "the target changed while patching (409 Conflict); reading it again");
                            continue;
                        }
                        Err(kube::Error::Api(s)) if s.is_conflict() => {
                            return Err(SendError::ConflictOnTarget { target: tk });
                        }
                        Err(source) => return Err(SendError::PatchTarget { target: tk, source }),
                    }
                }
            }
        }
    }

    async fn finish_target(
        &self,
        id: i64,
        entry: &NewEntry,
        target: &ComponentId,
        out: &str,
        detail: &str,
        now: i64,
    ) -> Result<Executed, Error> {
        let object = self.fetch_target(target).await.ok().flatten();
        self.finish(id, entry, object.as_ref(), out, detail, now)
            .await
    }

    /// Records the outcome, then the Event and the counter.
    async fn finish(
        &self,
        id: i64,
        entry: &NewEntry,
        object: Option<&Value>,
        out: &str,
        detail: &str,
        now: i64,
    ) -> Result<Executed, Error> {
        self.journal.record_outcome(id, out, detail, now).await?;
        if let Some(obj) = object {
            self.record_event(id, entry, obj, out, detail, now).await;
        }
        self.metrics
            .actions
            .with_label_values(&[entry.action_kind.as_str(), out])
            .inc();
        Ok(Executed {
            id,
            outcome: out.to_string(),
            detail: detail.to_string(),
            repeat: false,
        })
    }

    /// An events.k8s.io/v1 Event on the target naming the journal entry.
    /// Best effort: a failed Event is logged, never blocks the action.
    async fn record_event(
        &self,
        id: i64,
        entry: &NewEntry,
        obj: &Value,
        out: &str,
        detail: &str,
        now: i64,
    ) {
        let reason = match out {
            outcome::APPLIED => "ActionApplied",
            outcome::FAILED => "ActionFailed",
            outcome::REFUSED => "ActionRefused",
            outcome::RECOMMENDED => "ActionRecommended",
            outcome::DRY_RUN => "ActionDryRun",
            outcome::REJECTED => "ActionRejected",
            outcome::ABANDONED => "ActionAbandoned",
            _ => "Action",
        };
        let namespace = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let mut note = format!(
            "autopilot #{id} {} by {} ({}): {out} — {detail}",
            entry.action_kind, entry.runbook, entry.mode
        );
        note.truncate(1000);
        let time = chrono::DateTime::from_timestamp(now, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let ev = json!({
            "metadata": {"generateName": "autopilot-", "namespace": namespace,
                         "labels": {"autopilot.payments.io/action-id": id.to_string()}},
            "eventTime": time,
            "reportingController": "payments.io/autopilot",
            "reportingInstance": "autopilot",
            "action": entry.action_kind,
            "reason": reason,
            "note": note,
            "type": if matches!(out, outcome::FAILED | outcome::REFUSED | outcome::ABANDONED) { "Warning" } else { "Normal" },
            "regarding": {
                "apiVersion": obj["apiVersion"], "kind": obj["kind"],
                "name": obj["metadata"]["name"], "namespace": namespace,
                "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
            },
        });
        let result = match serde_json::from_value::<k8s_openapi::api::events::v1::Event>(ev) {
            Ok(ev) => Api::<k8s_openapi::api::events::v1::Event>::namespaced(
                self.client.clone(),
                &namespace,
            )
            .create(&PostParams::default(), &ev)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            tracing::warn!(id, %error, "recording the Event of an action failed");
        }
    }
}

mod review;

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(id: i64, at: i64, guard: &str, replicas: i64, mode: &str) -> JournalEntry {
        JournalEntry {
            id,
            entry: NewEntry {
                at,
                runbook: "autoscale-gateway".into(),
                runbook_hash: "h".into(),
                trigger: "finding".into(),
                evidence: json!([]),
                action: json!({}),
                action_kind: "scale_replicas".into(),
                target: "PaymentGateway/pay/gw".into(),
                namespace: "pay".into(),
                patch: Some(json!({"spec": {"replicas": replicas}})),
                inverse: None,
                disruptive: false,
                mode: mode.into(),
                verdict: guard.into(),
                verdict_detail: String::new(),
                verify: None,
                undo_of: None,
            },
            dry_run: None,
            outcome: Some(outcome::REFUSED.into()),
            outcome_detail: None,
            outcome_at: Some(at),
            verification: None,
            approval: None,
        }
    }

    #[test]
    fn only_the_same_refusal_within_the_window_is_a_repeat() {
        let now = 10_000;
        let new = refused(0, now, "cooldown", 5, "auto").entry;
        let earlier = refused(7, now - 60, "cooldown", 5, "auto");
        assert_eq!(
            repeated_refusal(std::slice::from_ref(&earlier), &new, 3600),
            Some(7)
        );
        // Older than the window: journaled again, so the journal shows it persists.
        assert_eq!(
            repeated_refusal(std::slice::from_ref(&earlier), &new, 30),
            None
        );
        // Another guard, another patch or another mode is news.
        for other in [
            refused(7, now - 60, "rate_limit", 5, "auto"),
            refused(7, now - 60, "cooldown", 6, "auto"),
            refused(7, now - 60, "cooldown", 5, "dry-run"),
        ] {
            assert_eq!(repeated_refusal(&[other], &new, 3600), None);
        }
        // Only the latest decision counts: an action sent in between makes
        // the next refusal worth a row.
        let mut sent = refused(8, now - 30, "allowed", 5, "auto");
        sent.outcome = Some(outcome::APPLIED.into());
        assert_eq!(repeated_refusal(&[earlier.clone(), sent], &new, 3600), None);
        // Another target or runbook is not a repeat.
        let mut elsewhere = earlier.clone();
        elsewhere.entry.target = "PaymentGateway/pay/other".into();
        assert_eq!(repeated_refusal(&[elsewhere], &new, 3600), None);
        let mut by_other = earlier;
        by_other.entry.runbook = "rollback-on-error-rate".into();
        assert_eq!(repeated_refusal(&[by_other], &new, 3600), None);
    }
}
