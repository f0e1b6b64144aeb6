//! Approval and rejection of recommendations, by the CLI or by annotations
//! on the targets. An approval sends the recommended change only if the
//! target is still as it was when it was recommended and the guards, judged
//! again now, allow it.
//!
//! Must not write to a target but through `send`; an approval is claimed in
//! the journal (once) before anything is sent.

use super::{
    APPROVE_ANNOTATION, Error, Executed, Executor, PolicySource, REJECT_ANNOTATION, Recorded,
    gate::{Admitted, Decider, Refused},
    send::{Write, sent_detail},
};
use crate::act::{
    action::plan_action,
    journal::{Journal, outcome},
};

impl<J: Journal> Executor<J> {
    /// Approves a recommendation and applies it, if the target is still as
    /// it was when it was recommended and the guards still allow it.
    pub async fn approve(
        &self,
        id: i64,
        by: &str,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Executed, Error> {
        let not_approvable = |reason| Error::ApproveEntry { id, reason };
        let r = self
            .entry_in(id, outcome::RECOMMENDED, not_approvable)
            .await?;
        let change = r
            .change
            .as_ref()
            .ok_or_else(|| not_approvable("no patch journaled".into()))?;
        // The gate, judged now: hours may have passed since the
        // recommendation, and other actions since then count against the
        // cooldown, the rate limits and the disruption budget. A refusal
        // leaves it pending, to approve later or reject.
        let admitted = self.approval_gate(&r, policy, now).await?;
        if !self
            .journal
            .record_approval(id, &format!("approved by {by}"))
            .await?
        {
            return Err(not_approvable("already approved or rejected".into()));
        }
        let entry = &r.row.entry;
        let write = Write::planned(
            id,
            &entry.uid,
            &r.intent.action,
            change,
            r.inverse.as_ref(),
            entry.at,
        );
        let describe = |sent: &_| format!("approved by {by}: {}", sent_detail(sent));
        self.send_and_finish(entry, &write, admitted, describe, now)
            .await
    }

    /// The gate for an approval: the kill switch, the agent's mode (a
    /// person's decision: not in dry-run) and the guards on the action
    /// planned against the target as it is now, with the recommendation
    /// itself left out of the history.
    async fn approval_gate(
        &self,
        r: &Recorded,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Admitted, Error> {
        let refuse = |reason: String| Error::ApproveEntry {
            id: r.row.id,
            reason,
        };
        let obj = self
            .fetch_target(r.target())
            .await
            .map_err(|err| refuse(err.to_string()))?
            .ok_or_else(|| refuse(format!("{} no longer exists", r.target())))?;
        let planned = plan_action(&r.intent.action, &obj, now)
            .map_err(|err| refuse(format!("it no longer plans: {err}")))?;
        let judged = (&r.intent, &planned);
        match self
            .admit(policy, Decider::Person, judged, &[r.row.id], now)
            .await?
        {
            Ok(admitted) => Ok(admitted),
            Err(Refused { guard, detail }) => Err(refuse(format!(
                "the {guard} guard refuses it now ({detail}); it stays pending"
            ))),
        }
    }

    /// Approvals and rejections given as annotations on the targets:
    /// `autopilot.payments.io/approve: "01JDZ…,01JE0…"` or
    /// `autopilot.payments.io/reject: "01JDZ…"` (action IDs, as `autopilot
    /// actions list` shows them), for SREs who
    /// prefer `kubectl annotate` to the CLI. Each is applied once (the
    /// journal's approval is set only if empty).
    pub async fn apply_annotated_approvals(
        &self,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Vec<Executed>, Error> {
        let mut out = Vec::new();
        for row in self.journal.list(1000, true).await? {
            let r = Recorded::parse(row)?;
            let id = r.row.id;
            let Ok(Some(obj)) = self.fetch_target(r.target()).await else {
                continue;
            };
            // By action ID, never the row id: an annotation left from an
            // earlier journal must not approve this one's row of that number.
            let uid = r.row.entry.uid.as_str();
            let listed = |key: &str| {
                obj["metadata"]["annotations"][key]
                    .as_str()
                    .is_some_and(|v| v.split(',').any(|listed| listed.trim() == uid))
            };
            if listed(REJECT_ANNOTATION) {
                out.push(self.reject(id, "annotation", now).await?);
            } else if listed(APPROVE_ANNOTATION) {
                match self.approve(id, "annotation", policy, now).await {
                    Ok(done) => out.push(done),
                    // Refused for now (a guard, the kill switch): it stays
                    // pending and is tried again next cycle; the others go on.
                    Err(error @ Error::ApproveEntry { .. }) => {
                        tracing::info!(id, %error, "approval by annotation waits");
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(out)
    }

    /// Rejects a recommendation: it is never applied.
    pub async fn reject(&self, id: i64, by: &str, now: i64) -> Result<Executed, Error> {
        let not_rejectable = |reason| Error::ApproveEntry { id, reason };
        let r = self
            .entry_in(id, outcome::RECOMMENDED, not_rejectable)
            .await?;
        if !self
            .journal
            .record_approval(id, &format!("rejected by {by}"))
            .await?
        {
            return Err(not_rejectable("already approved or rejected".into()));
        }
        let detail = format!("rejected by {by}");
        self.finish_target(
            id,
            &r.row.entry,
            r.target(),
            outcome::REJECTED,
            &detail,
            now,
        )
        .await
    }
}
