//! Verification and undo: an applied action whose runbook said what should
//! improve is judged at its deadline (pure, `act::verify`), and a failed
//! verification — or an SRE — undoes it with the journaled inverse patch,
//! journaled as an entry of its own.
//!
//! Must not write to a target but through `send`, and must not undo over
//! someone else's later change (the done patch must still be in effect).
//! Missing data never undoes anything.

use serde_json::json;

use super::{
    Error, Executed, Executor, PolicySource, Recorded,
    gate::Decider,
    propose::to_json,
    send::{Write, sent_detail},
};
use crate::{
    act::{
        action::{Change, Planned},
        journal::{self, Journal, NewEntry, outcome, verdict},
        verify::{Verification, judge_verification},
    },
    decide::{Mode, Verify},
};

/// The journal row of the undo of `r` (its inverse as the patch, the done
/// change as the inverse), decided at `now` in auto mode.
fn undo_entry(r: &Recorded, inverse: &Change, by: &str, now: i64) -> NewEntry {
    let id = r.row.id;
    NewEntry {
        uid: journal::new_uid(),
        at: now,
        trigger: "undo".into(),
        evidence: json!({"undo_of": id, "by": by}),
        patch: Some(to_json(inverse)),
        inverse: r.change.as_ref().map(to_json),
        mode: Mode::Auto.as_str().into(),
        verdict: verdict::ALLOWED.into(),
        verdict_detail: String::new(),
        verify: None,
        undo_of: Some(id),
        ..r.row.entry.clone()
    }
}

impl<J: Journal> Executor<J> {
    /// Undoes an applied action with its inverse patch, on a person's
    /// word (`by`), journaled as a new entry (`undo_of`). Refused if the
    /// target changed since, so an undo never overwrites someone else's
    /// later change, and by the gate like any write: the kill switch, dry-run
    /// mode, or a guard (the undone action itself does not count against it).
    pub async fn undo(
        &self,
        id: i64,
        by: &str,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Executed, Error> {
        self.undo_as(id, by, Decider::Person, policy, now).await
    }

    async fn undo_as(
        &self,
        id: i64,
        by: &str,
        decider: Decider,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Executed, Error> {
        let not_undoable = |reason| Error::UndoEntry { id, reason };
        let r = self.entry_in(id, outcome::APPLIED, not_undoable).await?;
        let inverse = r
            .inverse
            .as_ref()
            .ok_or_else(|| not_undoable(format!("{} has no inverse", r.row.entry.action_kind)))?;
        let (Some(Change::Merge { patch: done, .. }), Change::Merge { .. }) = (&r.change, inverse)
        else {
            return Err(not_undoable("only patches can be undone".into()));
        };
        let entry = undo_entry(&r, inverse, by, now);
        let planned = Planned {
            change: inverse.clone(),
            inverse: r.change.clone(),
            disruptive: entry.disruptive,
            moves: Vec::new(),
        };
        // Judged in one step with its insert (under the guard lock on a
        // shared PostgreSQL journal, like an agent's own action), without
        // the undone action (`id`) in the history: an undo is never held
        // back by the cooldown of what it reverts.
        let inputs = self.gate_inputs(policy, &r.intent, now).await;
        let (undo_id, verdict) = self
            .journal
            .record_intent_checked(&entry, now - 86_400, |recent| {
                let recent: Vec<_> = recent.iter().filter(|e| e.id != id).cloned().collect();
                inputs.judge(self.mode, decider, (&r.intent, &planned), &recent, now)
            })
            .await?;
        let write = Write::undo(undo_id, &entry.uid, r.target(), inverse, done);
        let describe = |sent: &Result<String, _>| match sent {
            Ok(_) => format!("undid #{id} (by {by})"),
            Err(_) => sent_detail(sent),
        };
        let undone = match verdict {
            Ok(admitted) => {
                self.send_and_finish(&entry, &write, admitted, describe, now)
                    .await?
            }
            Err(refused) => {
                let detail = format!("{refused}; #{id} not undone");
                self.finish_target(undo_id, &entry, r.target(), outcome::REFUSED, &detail, now)
                    .await?
            }
        };
        if undone.outcome == outcome::APPLIED {
            let detail = format!("undone by #{undo_id} ({by})");
            self.journal
                .record_outcome(id, outcome::UNDONE, &detail, now)
                .await?;
        }
        Ok(undone)
    }

    /// Verifies applied actions whose runbook stated what should improve;
    /// `value_of(target, signal)` gives the latest observed value. A failed
    /// verification undoes the action (journaled); missing data never does.
    pub async fn verify_applied(
        &self,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
        value_of: impl Fn(&str, &str) -> Option<f64>,
    ) -> Result<Vec<(i64, Verification)>, Error> {
        let mut out = Vec::new();
        for e in self.journal.awaiting_verification(now - 7 * 86_400).await? {
            if e.outcome.as_deref() != Some(outcome::APPLIED) || e.verification.is_some() {
                continue;
            }
            let Some(verify) = e.entry.verify.clone() else {
                continue;
            };
            let verify: Verify =
                serde_json::from_value(verify).map_err(|err| Error::ReadEntry {
                    id: e.id,
                    field: "verify",
                    reason: err.to_string(),
                })?;
            let applied_at = e.outcome_at.unwrap_or(e.entry.at);
            let verdict = {
                let mut streaks = self
                    .streaks
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let (verdict, streak) = judge_verification(
                    &verify,
                    applied_at,
                    value_of(&e.entry.target, &verify.signal),
                    now,
                    streaks.get(&e.id).copied(),
                );
                match (&verdict, streak) {
                    (Verification::Pending, Some(s)) => streaks.insert(e.id, s),
                    _ => streaks.remove(&e.id),
                };
                verdict
            };
            let result = match &verdict {
                Verification::Pending => None,
                Verification::Passed(_) => Some("passed"),
                Verification::Failed(_) => Some("failed"),
                Verification::NoData(_) => Some("no_data"),
            };
            if let Some(result) = result {
                self.metrics
                    .verifications
                    .with_label_values(&[result])
                    .inc();
            }
            match &verdict {
                Verification::Pending => {}
                Verification::Passed(s) | Verification::NoData(s) => {
                    self.journal.record_verification(e.id, s).await?
                }
                Verification::Failed(s) => {
                    self.journal.record_verification(e.id, s).await?;
                    if e.entry.inverse.is_some() {
                        let undone = self
                            .undo_as(e.id, "verification", Decider::Agent, policy, now)
                            .await?;
                        self.journal
                            .record_verification(
                                e.id,
                                &format!("{s}; undo #{} {}", undone.id, undone.outcome),
                            )
                            .await?;
                    }
                }
            }
            out.push((e.id, verdict));
        }
        Ok(out)
    }
}
