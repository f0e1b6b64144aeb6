//! Approval and rejection of recommendations, once `review` has accepted a
//! person's Approval (the approver proven by the API server). An approval
//! sends the recommended change only if the target is still as it was when
//! it was recommended and the gate, judged again now, allows it.
//!
//! Must not write to a target but through `send`; an approval is claimed in
//! the journal (once), in one step with the gate's verdict, before anything
//! is sent.

use super::{
    Error, Executed, Executor, PolicySource,
    gate::{Decider, Refused},
    send::{Write, sent_detail},
};
use crate::act::{
    action::plan_action,
    journal::{Journal, outcome},
};

impl<J: Journal> Executor<J> {
    /// Approves a recommendation and applies it, if the target is still as
    /// it was when it was recommended and the guards still allow it. `by`
    /// is journaled as the approver: the caller must have authenticated it
    /// (`apply_approvals` takes it from an Approval the admission policy
    /// checked).
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
        // leaves it pending, to approve later or reject. Judged in one step
        // with the claim (under the guard lock on a shared PostgreSQL
        // journal), with the recommendation itself left out of the history.
        let refuse = |reason: String| Error::ApproveEntry { id, reason };
        let obj = self
            .fetch_target(r.target())
            .await
            .map_err(|err| refuse(err.to_string()))?
            .ok_or_else(|| refuse(format!("{} no longer exists", r.target())))?;
        let planned = plan_action(&r.intent.action, &obj, now)
            .map_err(|err| refuse(format!("it no longer plans: {err}")))?;
        let inputs = self.gate_inputs(policy, &r.intent, now).await;
        let approval = format!("approved by {by}");
        let admitted = match self
            .journal
            .record_approval_checked(id, &approval, now, now - 86_400, |recent| {
                let recent: Vec<_> = recent.iter().filter(|e| e.id != id).cloned().collect();
                inputs.judge(
                    self.mode,
                    Decider::Person,
                    (&r.intent, &planned),
                    &recent,
                    now,
                )
            })
            .await?
        {
            None => return Err(not_approvable("already approved or rejected".into())),
            Some(Err(Refused { guard, detail })) => {
                return Err(refuse(format!(
                    "the {guard} guard refuses it now ({detail}); it stays pending"
                )));
            }
            Some(Ok(admitted)) => admitted,
        };
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
