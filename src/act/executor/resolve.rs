//! Restart resolution: the journal entries a crash left without an outcome
//! (and approved recommendations not yet applied) are checked against the
//! cluster and finished, so nothing is lost and nothing is sent twice.
//!
//! Must not write to a target but through `send`, and must not send what is
//! found applied (by the journal id on the object) or older than
//! `stale_after_seconds`.

use serde_json::{Value, json};

use super::{
    Error, Executed, Executor, PolicySource, Recorded,
    gate::Decider,
    send::{Write, sent_detail},
};
use crate::{
    act::{
        action::{ACTION_ID_ANNOTATION, Change, Planned, Subresource, patch_is_applied},
        journal::{Journal, outcome, verdict},
    },
    decide::Mode,
    detect::ComponentId,
};

/// For an entry that was never to be sent — planning failed, a guard
/// refused, dry-run mode — the outcome the crash kept from being recorded.
fn never_sent(verdict: &str, mode: Mode) -> Option<(&'static str, &'static str)> {
    match (verdict, mode) {
        (verdict::PLAN_FAILED, _) => Some((
            outcome::FAILED,
            "planning failed (recorded after a restart)",
        )),
        (verdict::ALLOWED, Mode::DryRun) => Some((
            outcome::DRY_RUN,
            "not sent (dry-run mode; recorded after a restart)",
        )),
        (verdict::ALLOWED, Mode::Recommend | Mode::Auto) => None,
        _ => Some((
            outcome::REFUSED,
            "refused by a guard (recorded after a restart)",
        )),
    }
}

impl<J: Journal> Executor<J> {
    /// After a restart: every intent that was to be sent but has no outcome
    /// is checked against the cluster. Found applied (our action-id
    /// annotation, the status already patched, the object created) → recorded
    /// as applied; not applied and recent → sent now; not applied and older
    /// than `stale_after_seconds` → abandoned. Nothing is lost or sent twice.
    ///
    /// A send passes the gate like any other write, judged now: under the
    /// kill switch, outside auto mode (or in dry-run for an approved
    /// recommendation) or refused by a guard, the intent is recorded as
    /// refused, never sent.
    pub async fn resolve_unresolved(
        &self,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Vec<Executed>, Error> {
        let mut out = Vec::new();
        for row in self.journal.unresolved().await? {
            let r = Recorded::parse(row)?;
            if let Some(done) = self.resolve(&r, policy, now).await? {
                out.push(done);
            }
        }
        Ok(out)
    }

    /// Finishes one interrupted entry; `None` when the target cannot be read
    /// (unknown state: left unresolved for the next start).
    async fn resolve(
        &self,
        r: &Recorded,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Option<Executed>, Error> {
        let (id, entry, target) = (r.row.id, &r.row.entry, r.target());
        if let Some((out, detail)) = never_sent(&entry.verdict, r.mode) {
            return self
                .finish_target(id, entry, target, out, detail, now)
                .await
                .map(Some);
        }
        let approved = r
            .row
            .approval
            .as_deref()
            .is_some_and(|a| a.starts_with("approved"));
        let write = r.change.as_ref().map(|c| {
            Write::planned(
                id,
                &entry.uid,
                &r.intent.action,
                c,
                r.inverse.as_ref(),
                entry.at,
            )
        });
        if r.mode == Mode::Recommend && !approved {
            // The dry run may not have happened: validate again, keep it a recommendation.
            return self
                .validate_recommendation(entry, target, id, write.as_ref(), now)
                .await
                .map(Some);
        }
        let Some(write) = write else {
            let failed = self.finish(id, entry, None, outcome::FAILED, "no patch journaled", now);
            return failed.await.map(Some);
        };
        let object = match self.fetch_target(target).await {
            Ok(o) => o,
            Err(err) => {
                tracing::warn!(id, error = %err, "cannot resolve an in-flight action yet");
                return Ok(None);
            }
        };
        let done = if self
            .found_applied(&entry.uid, target, write.change, object.as_ref())
            .await
        {
            let detail = "found applied after a restart";
            self.finish(id, entry, object.as_ref(), outcome::APPLIED, detail, now)
                .await?
        } else if now - entry.at > self.stale_after_seconds {
            let detail = format!(
                "found unsent after a restart, {}s after the decision; not sent late",
                now - entry.at
            );
            self.finish(id, entry, object.as_ref(), outcome::ABANDONED, &detail, now)
                .await?
        } else {
            let decider = if approved {
                Decider::Person
            } else {
                Decider::Agent
            };
            let planned = Planned {
                change: write.change.clone(),
                inverse: r.inverse.clone(),
                disruptive: entry.disruptive,
                moves: Vec::new(),
            };
            let judged = (&r.intent, &planned);
            // Its own row never counts against it, nor, for an interrupted
            // undo, the action it reverts (as when the undo was first sent).
            let own: Vec<i64> = std::iter::once(id).chain(entry.undo_of).collect();
            match self.admit(policy, decider, judged, &own, now).await? {
                Ok(admitted) => {
                    let describe = |sent: &Result<String, _>| match sent {
                        Ok(detail) => format!("sent after a restart: {detail}"),
                        Err(_) => sent_detail(sent),
                    };
                    self.send_and_finish(entry, &write, admitted, describe, now)
                        .await?
                }
                Err(refused) => {
                    let detail = format!("{refused}; found unsent after a restart, not sent");
                    self.finish(id, entry, object.as_ref(), outcome::REFUSED, &detail, now)
                        .await?
                }
            }
        };
        Ok(Some(done))
    }

    /// Whether `change` of action `uid` is on the cluster: its action ID on
    /// the object, the status already as patched, the object created.
    async fn found_applied(
        &self,
        uid: &str,
        target: &ComponentId,
        change: &Change,
        object: Option<&Value>,
    ) -> bool {
        match (change, object) {
            (
                Change::Merge {
                    subresource: Subresource::Main,
                    ..
                },
                Some(obj),
            ) => obj["metadata"]["annotations"][ACTION_ID_ANNOTATION] == json!(uid),
            (
                Change::Merge {
                    subresource: Subresource::Status,
                    patch,
                    ..
                },
                Some(obj),
            ) => patch_is_applied(patch, obj),
            (Change::Create { kind, object }, _) => {
                let name = object["metadata"]["name"].as_str().unwrap_or_default();
                self.api(kind, &target.namespace)
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            }
            (Change::Merge { .. }, None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_recommendations_and_actions_are_left_to_send() {
        for mode in [Mode::DryRun, Mode::Recommend, Mode::Auto] {
            assert_eq!(
                never_sent(verdict::PLAN_FAILED, mode).map(|(out, _)| out),
                Some(outcome::FAILED)
            );
            assert_eq!(
                never_sent("cooldown", mode).map(|(out, _)| out),
                Some(outcome::REFUSED)
            );
        }
        assert_eq!(
            never_sent(verdict::ALLOWED, Mode::DryRun).map(|(out, _)| out),
            Some(outcome::DRY_RUN)
        );
        assert_eq!(never_sent(verdict::ALLOWED, Mode::Recommend), None);
        assert_eq!(never_sent(verdict::ALLOWED, Mode::Auto), None);
    }
}
