//! The second half of the executor: restart resolution, approval and
//! rejection of recommendations, undo through the inverse patch, and
//! verification. Writes only through the executor's `send`/`finish`.

use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::*;

impl<J: Journal> Executor<J> {
    fn parse_entry(e: &JournalEntry) -> Result<(Intent, Option<Change>, Option<Change>), Error> {
        let bad = |field: &'static str| {
            move |err: serde_json::Error| Error::ReadEntry {
                id: e.id,
                field,
                reason: err.to_string(),
            }
        };
        let intent: Intent =
            serde_json::from_value(e.entry.action.clone()).map_err(bad("action"))?;
        let patch = e
            .entry
            .patch
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(bad("patch"))?;
        let inverse = e
            .entry
            .inverse
            .clone()
            .map(serde_json::from_value)
            .transpose()
            .map_err(bad("inverse"))?;
        Ok((intent, patch, inverse))
    }

    /// Journal entry `id`, parsed, if its outcome is `expected` (a pending
    /// recommendation, an applied action); otherwise `wrong` says why not.
    async fn entry_in(
        &self,
        id: i64,
        expected: &str,
        wrong: impl Fn(String) -> Error,
    ) -> Result<(JournalEntry, Intent, Option<Change>, Option<Change>), Error> {
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
        let (intent, change, inverse) = Self::parse_entry(&e)?;
        Ok((e, intent, change, inverse))
    }

    /// After a restart: every intent that was to be sent but has no outcome
    /// is checked against the cluster. Found applied (our action-id
    /// annotation, the status already patched, the object created) → recorded
    /// as applied; not applied and recent → sent now; not applied and older
    /// than `stale_after_seconds` → abandoned. Nothing is lost or sent twice.
    pub async fn resolve_unresolved(&self, now: i64) -> Result<Vec<Executed>, Error> {
        let mut out = Vec::new();
        for e in self.journal.unresolved().await? {
            let (intent, change, inverse) = Self::parse_entry(&e)?;
            let approved = e
                .approval
                .as_deref()
                .is_some_and(|a| a.starts_with("approved"));
            // Entries that were never to be sent: finish what the crash interrupted.
            let unsent = match (e.entry.verdict.as_str(), e.entry.mode.as_str()) {
                ("plan_failed", _) => Some((
                    outcome::FAILED,
                    "planning failed (recorded after a restart)",
                )),
                ("allowed", "dry-run") => Some((
                    outcome::DRY_RUN,
                    "not sent (dry-run mode; recorded after a restart)",
                )),
                ("allowed", "recommend") if !approved => None,
                ("allowed", _) => None,
                _ => Some((
                    outcome::REFUSED,
                    "refused by a guard (recorded after a restart)",
                )),
            };
            if let Some((out_kind, detail)) = unsent {
                let object = self
                    .fetch_target(plan_target(&intent.action))
                    .await
                    .ok()
                    .flatten();
                out.push(
                    self.finish(e.id, &e.entry, object.as_ref(), out_kind, detail, now)
                        .await?,
                );
                continue;
            }
            if e.entry.mode == "recommend" && !approved {
                // The dry run may not have happened: validate again, keep it a recommendation.
                let (result, out_kind) = match &change {
                    Some(c) => match self
                        .send(
                            e.id,
                            &intent.action,
                            (c, inverse.as_ref()),
                            e.entry.at,
                            true,
                        )
                        .await
                    {
                        Ok(_) => ("ok".to_string(), outcome::RECOMMENDED),
                        Err(err) => (
                            format!("rejected by the API server: {err}"),
                            outcome::FAILED,
                        ),
                    },
                    None => ("no patch journaled".to_string(), outcome::FAILED),
                };
                self.journal.record_dry_run(e.id, &result).await?;
                let object = self
                    .fetch_target(plan_target(&intent.action))
                    .await
                    .ok()
                    .flatten();
                out.push(
                    self.finish(
                        e.id,
                        &e.entry,
                        object.as_ref(),
                        out_kind,
                        &format!("server-side dry run: {result}"),
                        now,
                    )
                    .await?,
                );
                continue;
            }
            let Some(change) = change else {
                out.push(
                    self.finish(
                        e.id,
                        &e.entry,
                        None,
                        outcome::FAILED,
                        "no patch journaled",
                        now,
                    )
                    .await?,
                );
                continue;
            };
            let target = plan_target(&intent.action).clone();
            let object = match self.fetch_target(&target).await {
                Ok(o) => o,
                Err(err) => {
                    // Unknown state: leave it unresolved for the next start.
                    tracing::warn!(id = e.id, error = %err, "cannot resolve an in-flight action yet");
                    continue;
                }
            };
            let applied = match (&change, &object) {
                (
                    Change::Merge {
                        subresource: Subresource::Main,
                        ..
                    },
                    Some(obj),
                ) => {
                    obj["metadata"]["annotations"][ACTION_ID_ANNOTATION] == json!(e.id.to_string())
                }
                (
                    Change::Merge {
                        subresource: Subresource::Status,
                        patch,
                        ..
                    },
                    Some(obj),
                ) => patch_is_applied(patch, obj),
                (
                    Change::Create {
                        kind,
                        object: created,
                    },
                    _,
                ) => {
                    let name = created["metadata"]["name"].as_str().unwrap_or_default();
                    self.api(kind, &target.namespace)
                        .get_opt(name)
                        .await
                        .ok()
                        .flatten()
                        .is_some()
                }
                (_, None) => false,
            };
            let executed = if applied {
                self.finish(
                    e.id,
                    &e.entry,
                    object.as_ref(),
                    outcome::APPLIED,
                    "found applied after a restart",
                    now,
                )
                .await?
            } else if now - e.entry.at > self.stale_after_seconds {
                self.finish(
                    e.id,
                    &e.entry,
                    object.as_ref(),
                    outcome::ABANDONED,
                    &format!(
                        "found unsent after a restart, {}s after the decision; not sent late",
                        now - e.entry.at
                    ),
                    now,
                )
                .await?
            } else {
                match self
                    .send(
                        e.id,
                        &intent.action,
                        (&change, inverse.as_ref()),
                        e.entry.at,
                        false,
                    )
                    .await
                {
                    Ok(detail) => {
                        self.finish_target(
                            e.id,
                            &e.entry,
                            &target,
                            outcome::APPLIED,
                            &format!("sent after a restart: {detail}"),
                            now,
                        )
                        .await?
                    }
                    Err(err) => {
                        self.finish_target(
                            e.id,
                            &e.entry,
                            &target,
                            outcome::FAILED,
                            &format!("{}: {err}", err.kind()),
                            now,
                        )
                        .await?
                    }
                }
            };
            out.push(executed);
        }
        Ok(out)
    }

    /// Approves a recommendation and applies it, if the target is still as
    /// it was when it was recommended and the guards still allow it.
    pub async fn approve(
        &self,
        id: i64,
        by: &str,
        policy: &Policy,
        now: i64,
    ) -> Result<Executed, Error> {
        let not_approvable = |reason| Error::ApproveEntry { id, reason };
        let (e, intent, change, inverse) = self
            .entry_in(id, outcome::RECOMMENDED, not_approvable)
            .await?;
        let change = change.ok_or_else(|| Error::ApproveEntry {
            id,
            reason: "no patch journaled".into(),
        })?;
        if policy.kill_switch {
            return Err(Error::ApproveEntry {
                id,
                reason: "the kill switch is on".into(),
            });
        }
        self.guards_allow_approval(&e, &intent, policy, now).await?;
        if !self
            .journal
            .record_approval(id, &format!("approved by {by}"))
            .await?
        {
            return Err(Error::ApproveEntry {
                id,
                reason: "already approved or rejected".into(),
            });
        }
        let target = plan_target(&intent.action).clone();
        match self
            .send(
                id,
                &intent.action,
                (&change, inverse.as_ref()),
                e.entry.at,
                false,
            )
            .await
        {
            Ok(detail) => {
                self.finish_target(
                    id,
                    &e.entry,
                    &target,
                    outcome::APPLIED,
                    &format!("approved by {by}: {detail}"),
                    now,
                )
                .await
            }
            Err(err) => {
                self.finish_target(
                    id,
                    &e.entry,
                    &target,
                    outcome::FAILED,
                    &format!("approved by {by}: {}: {err}", err.kind()),
                    now,
                )
                .await
            }
        }
    }

    /// The guards, judged again at approval time: hours may have passed
    /// since the recommendation, and other actions since then count against
    /// the cooldown, the rate limits and the disruption budget. The
    /// recommendation itself is left out of the history it is judged
    /// against. A refusal leaves it pending, to approve later or reject.
    async fn guards_allow_approval(
        &self,
        e: &JournalEntry,
        intent: &Intent,
        policy: &Policy,
        now: i64,
    ) -> Result<(), Error> {
        let refuse = |reason: String| Error::ApproveEntry { id: e.id, reason };
        let target = plan_target(&intent.action);
        let obj = self
            .fetch_target(target)
            .await
            .map_err(|err| refuse(err.to_string()))?
            .ok_or_else(|| refuse(format!("{} no longer exists", key(target))))?;
        let planned = plan_action(&intent.action, &obj, now)
            .map_err(|err| refuse(format!("it no longer plans: {err}")))?;
        let mut recent = self.journal.since(now - 86_400).await?;
        recent.retain(|r| r.id != e.id);
        let candidate = Candidate {
            intent,
            planned: &planned,
        };
        match evaluate_guards(policy, &Self::history(&recent), &[candidate], now).pop() {
            Some(Verdict::Refused { guard, detail }) => Err(refuse(format!(
                "the {guard} guard refuses it now ({detail}); it stays pending"
            ))),
            _ => Ok(()),
        }
    }

    /// Approvals and rejections given as annotations on the targets:
    /// `autopilot.payments.io/approve: "12,15"` or
    /// `autopilot.payments.io/reject: "13"` (journal ids), for SREs who
    /// prefer `kubectl annotate` to the CLI. Each is applied once (the
    /// journal's approval is set only if empty).
    pub async fn apply_annotated_approvals(
        &self,
        policy: &Policy,
        now: i64,
    ) -> Result<Vec<Executed>, Error> {
        let mut out = Vec::new();
        for e in self.journal.list(1000, true).await? {
            let (intent, _, _) = Self::parse_entry(&e)?;
            let Ok(Some(obj)) = self.fetch_target(intent.action.target()).await else {
                continue;
            };
            let listed = |key: &str| {
                obj["metadata"]["annotations"][key]
                    .as_str()
                    .is_some_and(|v| v.split(',').any(|id| id.trim() == e.id.to_string()))
            };
            if listed(REJECT_ANNOTATION) {
                out.push(self.reject(e.id, "annotation", now).await?);
            } else if listed(APPROVE_ANNOTATION) {
                match self.approve(e.id, "annotation", policy, now).await {
                    Ok(done) => out.push(done),
                    // Refused for now (a guard, the kill switch): it stays
                    // pending and is tried again next cycle; the others go on.
                    Err(error @ Error::ApproveEntry { .. }) => {
                        tracing::info!(id = e.id, %error, "approval by annotation waits");
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
        let (e, intent, _, _) = self
            .entry_in(id, outcome::RECOMMENDED, not_rejectable)
            .await?;
        if !self
            .journal
            .record_approval(id, &format!("rejected by {by}"))
            .await?
        {
            return Err(not_rejectable("already approved or rejected".into()));
        }
        self.finish_target(
            id,
            &e.entry,
            plan_target(&intent.action),
            outcome::REJECTED,
            &format!("rejected by {by}"),
            now,
        )
        .await
    }

    /// Undoes an applied action with its inverse patch, journaled as a new
    /// entry (`undo_of`). Refused if the target changed since, so an undo
    /// never overwrites someone else's later change.
    pub async fn undo(&self, id: i64, by: &str, now: i64) -> Result<Executed, Error> {
        let not_undoable = |reason| Error::UndoEntry { id, reason };
        let (e, intent, change, inverse) =
            self.entry_in(id, outcome::APPLIED, not_undoable).await?;
        let inverse = inverse.ok_or_else(|| Error::UndoEntry {
            id,
            reason: format!("{} has no inverse", e.entry.action_kind),
        })?;
        let (
            Some(Change::Merge { patch: done, .. }),
            Change::Merge {
                kind,
                namespace,
                name,
                subresource,
                patch: undo_patch,
            },
        ) = (&change, &inverse)
        else {
            return Err(Error::UndoEntry {
                id,
                reason: "only patches can be undone".into(),
            });
        };
        let target = plan_target(&intent.action).clone();
        let mut entry = e.entry.clone();
        entry.at = now;
        entry.trigger = "undo".into();
        entry.evidence = json!({"undo_of": id, "by": by});
        entry.patch = Some(serde_json::to_value(&inverse).unwrap_or_default());
        entry.inverse = change
            .as_ref()
            .map(|c| serde_json::to_value(c).unwrap_or_default());
        entry.mode = Mode::Auto.as_str().into();
        entry.verdict = "allowed".into();
        entry.verdict_detail = String::new();
        entry.verify = None;
        entry.undo_of = Some(id);
        let undo_id = self.journal.record_intent(&entry).await?;

        let current = match self.fetch_target(&target).await {
            Ok(Some(o)) => o,
            Ok(None) => {
                return self
                    .finish(
                        undo_id,
                        &entry,
                        None,
                        outcome::FAILED,
                        "target is gone",
                        now,
                    )
                    .await;
            }
            Err(err) => {
                return self
                    .finish(
                        undo_id,
                        &entry,
                        None,
                        outcome::FAILED,
                        &err.to_string(),
                        now,
                    )
                    .await;
            }
        };
        // Status patches of a switchover are expected to be moved on by the
        // operator; only spec/metadata changes must still be in place.
        if *subresource == Subresource::Main && !patch_is_applied(done, &current) {
            return self
                .finish(
                    undo_id,
                    &entry,
                    Some(&current),
                    outcome::FAILED,
                    "the target changed since the action; not undone",
                    now,
                )
                .await;
        }
        let mut body = undo_patch.clone();
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
        if *subresource == Subresource::Main {
            body["metadata"]["annotations"][ACTION_ID_ANNOTATION] = json!(undo_id.to_string());
        }
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let api = self.api(kind, namespace);
        let result = match subresource {
            Subresource::Main => api.patch(name, &pp, &Patch::Merge(&body)).await,
            Subresource::Status => api.patch_status(name, &pp, &Patch::Merge(&body)).await,
        };
        match result {
            Ok(_) => {
                let done = self
                    .finish_target(
                        undo_id,
                        &entry,
                        &target,
                        outcome::APPLIED,
                        &format!("undid #{id} (by {by})"),
                        now,
                    )
                    .await?;
                self.journal
                    .record_outcome(
                        id,
                        outcome::UNDONE,
                        &format!("undone by #{undo_id} ({by})"),
                        now,
                    )
                    .await?;
                Ok(done)
            }
            Err(err) => {
                self.finish_target(
                    undo_id,
                    &entry,
                    &target,
                    outcome::FAILED,
                    &format!("patch_target: {err}"),
                    now,
                )
                .await
            }
        }
    }

    /// Verifies applied actions whose runbook stated what should improve;
    /// `value_of(target, signal)` gives the latest observed value. A failed
    /// verification undoes the action (journaled); missing data never does.
    pub async fn verify_applied(
        &self,
        now: i64,
        value_of: impl Fn(&str, &str) -> Option<f64>,
    ) -> Result<Vec<(i64, Verification)>, Error> {
        let mut out = Vec::new();
        for e in self.journal.since(now - 7 * 86_400).await? {
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
            let verdict = judge_verification(
                &verify,
                applied_at,
                value_of(&e.entry.target, &verify.signal),
                now,
            );
            match &verdict {
                Verification::Pending => {}
                Verification::Passed(s) | Verification::NoData(s) => {
                    self.journal.record_verification(e.id, s).await?
                }
                Verification::Failed(s) => {
                    self.journal.record_verification(e.id, s).await?;
                    if e.entry.inverse.is_some() {
                        let undone = self.undo(e.id, "verification", now).await?;
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
