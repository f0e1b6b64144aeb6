//! A batch of proposals: read each target, plan (pure), judge with the
//! guards (pure), journal the decision, then act by mode — record it
//! (dry-run), validate it and keep it for approval (recommend), or send it
//! (auto). Also the rules that keep the journal readable: a repeated refusal
//! is not journaled again, a new recommendation supersedes older ones.
//!
//! Must not write to a target itself: sending is `send`'s, recording the
//! outcome is `finish`'s.

use serde_json::Value;

use super::{Executed, Executor, PolicySource, Proposal, SendError, gate::Decider, send::Write};
use crate::{
    act::{
        action::{Planned, plan_action, same_change_but_time},
        guard::{Candidate, Recent, Verdict, evaluate_guards, target_key},
        journal::{Journal, JournalEntry, NewEntry, outcome, verdict},
    },
    decide::{Action, Mode},
    detect::ComponentId,
};

/// One proposal read, planned and judged, before anything is journaled.
pub(super) enum Judged {
    /// The target could not be read, or the action does not plan against it.
    PlanFailed {
        reason: String,
    },
    Refused(Refusal),
    Allowed {
        planned: Planned,
    },
}

/// A planned action a guard refused.
pub(super) struct Refusal {
    planned: Planned,
    verdict: Verdict,
}

/// Each proposal's target as read (for its Event) and its judgement.
type JudgedBatch = Vec<(Option<Value>, Judged)>;

/// The guard history: entries of the last day that count against limits
/// (allowed, in any mode, and not failed, rejected, abandoned or refused by
/// the gate at send: every action sent, possibly sent (`unknown`) or about
/// to be), each at the time it was sent when it was (an approval sends
/// hours after the recommendation: its cooldown and budgets run from the
/// send, or from the approval's claim while it is being sent).
pub fn history(recent: &[JournalEntry]) -> Vec<Recent> {
    recent
        .iter()
        .filter(|e| e.entry.verdict == verdict::ALLOWED)
        .filter(|e| {
            !matches!(
                e.outcome.as_deref(),
                Some(outcome::FAILED | outcome::REJECTED | outcome::ABANDONED | outcome::REFUSED)
            )
        })
        .map(|e| Recent {
            at: match e.outcome.as_deref() {
                Some(outcome::APPLIED | outcome::UNDONE | outcome::UNKNOWN) => {
                    e.outcome_at.unwrap_or(e.entry.at)
                }
                // Approved, being sent: from the approval's claim.
                Some(outcome::RECOMMENDED)
                    if e.approval
                        .as_deref()
                        .is_some_and(|a| a.starts_with("approved")) =>
                {
                    e.outcome_at.unwrap_or(e.entry.at).max(e.entry.at)
                }
                _ => e.entry.at,
            },
            runbook: e.entry.runbook.clone(),
            target: e.entry.target.clone(),
            namespace: e.entry.namespace.clone(),
            disruptive: e.entry.disruptive,
        })
        .collect()
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

/// Journaled values are plain data whose serialization cannot fail; `null`
/// would stand in if it ever did.
pub(super) fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// The journal row of a proposal, before anything is sent.
pub fn new_entry(
    p: &Proposal,
    planned: Option<&Planned>,
    verdict: &str,
    detail: &str,
    now: i64,
) -> NewEntry {
    NewEntry {
        uid: crate::act::journal::new_uid(),
        at: now,
        runbook: p.intent.runbook.clone(),
        runbook_hash: p.runbook_hash.clone(),
        runbook_editor: p.runbook_editor.clone(),
        trigger: p.trigger.clone(),
        evidence: p.evidence.clone(),
        action: to_json(&p.intent),
        action_kind: p.intent.action.name().to_string(),
        target: target_key(&p.intent.action),
        namespace: p.intent.action.target().namespace.clone(),
        patch: planned.map(|pl| to_json(&pl.change)),
        inverse: planned.and_then(|pl| pl.inverse.as_ref()).map(to_json),
        disruptive: planned.is_some_and(|pl| pl.disruptive),
        mode: p.mode.as_str().to_string(),
        verdict: verdict.to_string(),
        verdict_detail: match (&p.mode_note, detail) {
            (Some(note), "") => note.clone(),
            (Some(note), detail) => format!("{detail}; {note}"),
            (None, detail) => detail.to_string(),
        },
        verify: p.intent.verify.as_ref().map(to_json),
        undo_of: None,
    }
}

impl<J: Journal> Executor<J> {
    /// Reads and plans every proposal, checks each target's scope, then
    /// judges the planned ones together (the guards count the batch's own
    /// actions) on the policy as it is now and on `recent`, the journal's
    /// last day. A policy that cannot be read refuses every planned
    /// proposal (fail closed).
    #[tracing::instrument(name = "guard", skip_all, fields(proposals = proposals.len()))]
    pub(super) async fn judge_batch(
        &self,
        proposals: &[Proposal],
        recent: &[JournalEntry],
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<JudgedBatch, super::Error> {
        let mut read = Vec::with_capacity(proposals.len());
        for p in proposals {
            let (object, plan) = self.read_and_plan(&p.intent.action, now).await;
            let scope = match plan {
                Ok(_) => self.scope_of(p.intent.action.target()).await,
                Err(_) => Ok(Ok(())),
            };
            let scope = match scope {
                Ok(Ok(())) => None,
                Ok(Err(out)) => Some((out.guard().to_string(), out.to_string())),
                Err(detail) => Some(("scope".to_string(), detail)),
            };
            read.push((object, plan, scope));
        }
        let policy = policy.current().await;
        let observed = self
            .observer
            .observe(proposals.iter().map(|p| &p.intent), now)
            .await;
        let verdicts = match &policy {
            Ok(policy) => {
                let candidates: Vec<Candidate<'_>> = proposals
                    .iter()
                    .zip(&read)
                    .filter_map(|(p, (_, plan, scope))| {
                        let planned = plan.as_ref().ok().filter(|_| scope.is_none())?;
                        Some(Candidate {
                            intent: &p.intent,
                            planned,
                        })
                    })
                    .collect();
                evaluate_guards(policy, &observed, &history(recent), &candidates, now)
            }
            Err(_) => Vec::new(),
        };
        let unreadable = policy.as_ref().err().map(|e| Verdict::Refused {
            guard: "policy".into(),
            detail: crate::telemetry::chain(e).to_string(),
            held_by: None,
        });
        let mut verdicts = verdicts.into_iter();
        let judged = read
            .into_iter()
            .map(|(object, plan, scope)| {
                let judged = match (plan, scope) {
                    (Err(reason), _) => Judged::PlanFailed { reason },
                    (Ok(planned), Some((guard, detail))) => Judged::Refused(Refusal {
                        planned,
                        verdict: Verdict::Refused {
                            guard,
                            detail,
                            held_by: None,
                        },
                    }),
                    (Ok(planned), None) => match unreadable
                        .clone()
                        .unwrap_or_else(|| verdicts.next().unwrap_or(Verdict::Allowed))
                    {
                        Verdict::Allowed => Judged::Allowed { planned },
                        verdict => Judged::Refused(Refusal { planned, verdict }),
                    },
                };
                (object, judged)
            })
            .collect();
        Ok(judged)
    }

    /// The target as read now and the action planned against it; a target
    /// that cannot be read or does not exist is a failed plan.
    async fn read_and_plan(
        &self,
        action: &Action,
        now: i64,
    ) -> (Option<Value>, Result<Planned, String>) {
        let target = action.target();
        match self.fetch_target(target).await {
            Ok(Some(obj)) => {
                let plan = plan_action(action, &obj, now).map_err(|e| e.to_string());
                (Some(obj), plan)
            }
            Ok(None) => (None, Err(missing(target))),
            Err(e) => (None, Err(e.to_string())),
        }
    }

    pub(super) async fn record_plan_failure(
        &self,
        p: &Proposal,
        object: Option<&Value>,
        reason: &str,
        now: i64,
    ) -> Result<Executed, super::Error> {
        let entry = new_entry(p, None, verdict::PLAN_FAILED, reason, now);
        let id = self.journal.record_intent(&entry).await?;
        self.finish(id, &entry, object, outcome::FAILED, reason, now)
            .await
    }

    /// Journals a refusal, unless it repeats the latest one (then it is
    /// only counted).
    #[tracing::instrument(name = "act", skip_all, fields(component = %p.intent.action.target(), action = p.intent.action.kind().name(), verdict = %refusal.verdict.label()))]
    pub(super) async fn record_refusal(
        &self,
        p: &Proposal,
        object: Option<&Value>,
        refusal: &Refusal,
        recent: &[JournalEntry],
        now: i64,
    ) -> Result<Executed, super::Error> {
        let Refusal { planned, verdict } = refusal;
        let Verdict::Refused { guard, detail, .. } = verdict else {
            unreachable!("a refusal holds a refusing verdict");
        };
        let deferred = verdict.defers(&p.intent.runbook);
        let entry = new_entry(p, Some(planned), guard, detail, now);
        if let Some(earlier) = repeated_refusal(recent, &entry, self.repeat_refusal_seconds) {
            let mut done = self.repeat(earlier, &entry, detail);
            done.deferred = deferred;
            return Ok(done);
        }
        let id = self.journal.record_intent(&entry).await?;
        let detail = format!("{guard}: {detail}");
        let mut done = self
            .finish(id, &entry, object, outcome::REFUSED, &detail, now)
            .await?;
        done.deferred = deferred;
        Ok(done)
    }

    /// Journals an allowed action, then acts by its mode.
    #[tracing::instrument(name = "act", skip_all, fields(component = %p.intent.action.target(), action = p.intent.action.kind().name(), verdict = "allowed"))]
    pub(super) async fn act(
        &self,
        p: &Proposal,
        planned: &Planned,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Executed, super::Error> {
        let entry = new_entry(p, Some(planned), verdict::ALLOWED, "", now);
        let action = &p.intent.action;
        match p.mode {
            Mode::DryRun => {
                let id = self.journal.record_intent(&entry).await?;
                let detail = "not sent (dry-run mode)";
                self.finish_target(id, &entry, action.target(), outcome::DRY_RUN, detail, now)
                    .await
            }
            Mode::Recommend => {
                if let Some(pending) = self.same_pending(&entry).await? {
                    return Ok(self.unchanged(pending, &entry));
                }
                // The intent is durable before anything is sent.
                let id = self.journal.record_intent(&entry).await?;
                let write = Write::planned(
                    id,
                    &entry.uid,
                    action,
                    &planned.change,
                    planned.inverse.as_ref(),
                    now,
                );
                let done = self
                    .validate_recommendation(&entry, action.target(), id, Some(&write), now)
                    .await?;
                if done.outcome == outcome::RECOMMENDED {
                    self.supersede(id, &entry, now).await?;
                }
                Ok(done)
            }
            Mode::Auto => self.act_now(p, planned, &entry, policy, now).await,
        }
    }

    /// Auto mode. The guards judged the action with its batch a moment
    /// ago; the gate judges it again as it is journaled, just before it is
    /// sent: the policy and labels read now, the history as the journal
    /// holds it at the insert — the batch's earlier sends, and on a shared
    /// PostgreSQL journal every other shard's — in one step with the
    /// insert, so the global budgets hold across shards.
    async fn act_now(
        &self,
        p: &Proposal,
        planned: &Planned,
        entry: &NewEntry,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Executed, super::Error> {
        let action = &p.intent.action;
        let inputs = self.gate_inputs(policy, &p.intent, now).await;
        let judged = (&p.intent, planned);
        // The intent is durable before anything is sent.
        let (id, verdict) = self
            .journal
            .record_intent_checked(entry, now - 86_400, |recent| {
                inputs.judge(self.mode, Decider::Agent, judged, recent, now)
            })
            .await?;
        match verdict {
            Ok(admitted) => {
                let write = Write::planned(
                    id,
                    &entry.uid,
                    action,
                    &planned.change,
                    planned.inverse.as_ref(),
                    now,
                );
                self.send_and_finish(entry, &write, admitted, super::send::sent_detail, now)
                    .await
            }
            Err(refused) => {
                let detail = refused.to_string();
                self.finish_target(id, entry, action.target(), outcome::REFUSED, &detail, now)
                    .await
            }
        }
    }

    /// Recommend mode: the change is validated by a server-side dry run and
    /// kept for approval. The dry run's result is journaled, then the
    /// outcome: recommended, or failed when the API server rejects it (or
    /// nothing was journaled to send).
    pub(super) async fn validate_recommendation(
        &self,
        entry: &NewEntry,
        target: &ComponentId,
        id: i64,
        write: Option<&Write<'_>>,
        now: i64,
    ) -> Result<Executed, super::Error> {
        let (result, out) = match write {
            Some(write) => match self.send(write, super::send::Effect::DryRun).await {
                Ok(_) => ("ok".to_string(), outcome::RECOMMENDED),
                Err(e) => (format!("rejected by the API server: {e}"), outcome::FAILED),
            },
            None => ("no patch journaled".to_string(), outcome::FAILED),
        };
        self.journal.record_dry_run(id, &result).await?;
        let mut detail = format!("server-side dry run: {result}");
        // Reviewable only as an object people can approve under RBAC.
        let out = match out {
            outcome::RECOMMENDED => match self.publish_recommendation(id, entry, target).await {
                Ok(()) => {
                    detail.push_str(&format!(
                        "; Recommendation {}/{}",
                        target.namespace,
                        crate::crd::approval::recommendation_name(&entry.uid)
                    ));
                    out
                }
                Err(reason) => {
                    detail.push_str(&format!("; not reviewable: {reason}"));
                    outcome::FAILED
                }
            },
            out => out,
        };
        self.finish_target(id, entry, target, out, &detail, now)
            .await
    }

    /// A new recommendation replaces the pending ones of the same runbook,
    /// action and target: an SRE reviews the latest proposal, made on the
    /// latest data, not a pile of older ones (a persistent condition makes
    /// one per cooldown). Each is claimed through its approval field, as an
    /// approval would be, so one an SRE approved meanwhile is left alone;
    /// the claimed ones are abandoned.
    async fn supersede(&self, id: i64, entry: &NewEntry, now: i64) -> Result<(), super::Error> {
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
                let ns = &old.entry.namespace;
                let phase = crate::crd::approval::phase::SUPERSEDED;
                self.mark_recommendation(ns, &old.entry.uid, phase, &note, None)
                    .await;
                tracing::info!(id = old.id, by = id, target = %entry.target, "recommendation superseded");
            }
        }
        Ok(())
    }

    /// The pending recommendation that proposes `entry`'s change (same
    /// runbook, action, target and patch, apart from the time each was
    /// planned at: a renewal proposed again next cycle is the same
    /// renewal), if there is one.
    async fn same_pending(&self, entry: &NewEntry) -> Result<Option<i64>, super::Error> {
        Ok(self
            .journal
            .list(1000, true)
            .await?
            .into_iter()
            .find(|old| {
                old.approval.is_none()
                    && old.entry.runbook == entry.runbook
                    && old.entry.action_kind == entry.action_kind
                    && old.entry.target == entry.target
                    && match (&old.entry.patch, &entry.patch) {
                        (Some(o), Some(n)) => same_change_but_time(o, old.entry.at, n, entry.at),
                        (o, n) => o == n,
                    }
            })
            .map(|old| old.id))
    }

    /// A recommendation already pending with the same change: nothing to
    /// journal, publish or supersede. Journaling it again would start the
    /// target's cooldown anew every time: a condition that lasts in
    /// recommend mode (nothing is applied, so it does not heal) would keep
    /// every other runbook's proposal on the target out for as long as it
    /// lasted. A changed proposal (new data, a new size) supersedes it.
    fn unchanged(&self, pending: i64, entry: &NewEntry) -> Executed {
        tracing::debug!(
            pending,
            runbook = %entry.runbook,
            target = %entry.target,
            "proposed again unchanged; the pending recommendation stands"
        );
        Executed {
            id: pending,
            outcome: outcome::RECOMMENDED.to_string(),
            detail: format!("unchanged; recommendation {pending} is still pending"),
            repeat: true,
            deferred: false,
        }
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
        self.count(entry, outcome::REFUSED);
        Executed {
            id: earlier,
            outcome: outcome::REFUSED.to_string(),
            detail: format!("{}: {detail} (as journal entry {earlier})", entry.verdict),
            repeat: true,
            deferred: false,
        }
    }
}

fn missing(target: &ComponentId) -> String {
    SendError::MissingTarget {
        target: target.to_string(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(id: i64, at: i64, guard: &str, replicas: i64, mode: &str) -> JournalEntry {
        JournalEntry {
            id,
            entry: NewEntry {
                at,
                patch: Some(json!({"spec": {"replicas": replicas}})),
                mode: mode.into(),
                verdict: guard.into(),
                ..NewEntry::fixture()
            },
            dry_run: None,
            outcome: Some(outcome::REFUSED.into()),
            outcome_detail: None,
            outcome_at: Some(at),
            verification: None,
            approval: None,
        }
    }

    /// An approved recommendation counts from the time it was sent (or
    /// claimed for sending), not the time it was proposed: its cooldown and
    /// budgets start then.
    #[test]
    fn the_history_counts_an_action_from_when_it_was_sent() {
        let mut approved = refused(3, 1_000, verdict::ALLOWED, 5, "recommend");
        approved.outcome = Some(outcome::APPLIED.into());
        approved.outcome_at = Some(9_000);
        let mut pending = refused(4, 2_000, verdict::ALLOWED, 5, "recommend");
        pending.outcome = Some(outcome::RECOMMENDED.into());
        pending.outcome_at = Some(2_001);
        // Claimed by an approval at 8 000, being sent: from the claim.
        let mut sending = refused(5, 1_500, verdict::ALLOWED, 5, "recommend");
        sending.outcome = Some(outcome::RECOMMENDED.into());
        sending.outcome_at = Some(8_000);
        sending.approval = Some("approved by alice".into());
        let h = history(&[approved, pending, sending]);
        assert_eq!(
            h.iter().map(|r| r.at).collect::<Vec<_>>(),
            [9_000, 2_000, 8_000]
        );
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

    #[test]
    fn the_guard_history_leaves_out_refused_failed_rejected_and_abandoned_entries() {
        let mut allowed = refused(1, 100, verdict::ALLOWED, 5, "auto");
        allowed.outcome = Some(outcome::APPLIED.into());
        let mut recommended = allowed.clone();
        recommended.outcome = Some(outcome::RECOMMENDED.into());
        let mut failed = allowed.clone();
        failed.outcome = Some(outcome::FAILED.into());
        let mut abandoned = allowed.clone();
        abandoned.outcome = Some(outcome::ABANDONED.into());
        // Sent, reply lost: it may have taken effect, so it counts.
        let mut unknown = allowed.clone();
        unknown.outcome = Some(outcome::UNKNOWN.into());
        let refusal = refused(2, 100, "cooldown", 5, "auto");
        // Allowed when decided, refused by the gate when it was to be sent
        // (the kill switch went on): nothing was sent, nothing counts.
        let mut refused_at_send = allowed.clone();
        refused_at_send.outcome = Some(outcome::REFUSED.into());
        let counted = history(&[
            allowed,
            recommended,
            failed,
            abandoned,
            unknown,
            refusal,
            refused_at_send,
        ]);
        assert_eq!(
            counted.len(),
            3,
            "the applied one, the pending one and the one possibly sent"
        );
    }
}
