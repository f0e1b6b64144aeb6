//! The one write to a target. Every path — an action in auto mode, a
//! recommendation's server-side dry run, an approval, a resolution after a
//! restart, an undo — goes through [`Executor::send`]: it reads the target,
//! checks the write is still the one that was decided (its
//! [`Precondition`]), builds the body (resourceVersion, the journal id on
//! the object, the field manager) and sends it, reading again after a 409
//! Conflict. [`Executor::send_and_finish`] then records the outcome, applied
//! or failed, the same way for every path.
//!
//! Must not decide whether to write (mode, guards, approval are the
//! callers'); it is the choke point where a check on every write belongs.

use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::{Executed, Executor, SendError, gate::Admitted};
use crate::{
    act::{
        action::{
            ACTION_ID_ANNOTATION, Change, KindInfo, Subresource, patch_is_applied, plan_action,
        },
        journal::{Journal, NewEntry, outcome},
    },
    crd::FIELD_MANAGER,
    decide::Action,
    detect::ComponentId,
};

/// How many times a write is tried when the target changes under it (409
/// Conflict): each try reads the target again and checks the precondition.
const CONFLICT_RETRIES: usize = 3;

/// Back-off before each retry of a write that failed transiently (429 Too
/// Many Requests, a 5xx, a broken connection or a timeout). Every retry
/// first reads the target back: a write whose reply was lost is found in
/// effect (tagged with its action ID) and not sent again; one that did not
/// land is sent again only if its precondition still holds, locked to the
/// resourceVersion just read — so a retry never applies a change twice.
const TRANSIENT_BACKOFF: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(200),
    std::time::Duration::from_millis(800),
    std::time::Duration::from_millis(2000),
];

/// Whether a failed request is worth another try: the server was busy or
/// failed (429, 5xx) or the reply never came. A 4xx refusal is final.
fn transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Whether `current` shows that an earlier attempt of this write landed: on
/// the main resource, the object carries this action's ID (unique to it,
/// so nobody else's write); the status subresource has no tag, so there the
/// patch in effect is the evidence.
fn landed(patch: &Value, subresource: Subresource, current: &Value, uid: &str) -> bool {
    match subresource {
        Subresource::Main => current["metadata"]["annotations"][ACTION_ID_ANNOTATION] == json!(uid),
        Subresource::Status => patch_is_applied(patch, current),
    }
}

/// Whether a write takes effect or is only validated by the API server.
/// A write that takes effect carries the gate's proof that it may.
#[derive(Debug)]
pub(super) enum Effect {
    Apply(Admitted),
    /// A server-side dry run: admission and validation, nothing stored.
    DryRun,
}

impl Effect {
    fn dry_run(&self) -> bool {
        matches!(self, Effect::DryRun)
    }
}

/// What must still hold, on the target as read just before each attempt,
/// for a merge patch to be sent. (A create needs none: an object of ours
/// that already exists is recognised by its journal id.)
pub(super) enum Precondition<'a> {
    /// `action`, planned again against the target, gives exactly the
    /// journaled change and inverse: the fields it touches are as they were
    /// when it was decided.
    Replan {
        action: &'a Action,
        inverse: Option<&'a Change>,
        planned_at: i64,
    },
    /// An undo: the patch it reverts (`done`) is still in effect, so an undo
    /// never overwrites someone else's later change. Only checked on the
    /// main resource: status patches (a switchover) are expected to be moved
    /// on by their operator.
    StillApplied { done: &'a Value },
}

/// One journaled write to a target.
pub(super) struct Write<'a> {
    /// The journal entry it belongs to.
    pub id: i64,
    /// That entry's action ID (a ULID), tagged on the object: unique across
    /// journals, so a new journal never takes an old tag for its own.
    pub uid: &'a str,
    pub target: &'a ComponentId,
    pub change: &'a Change,
    pub precondition: Precondition<'a>,
}

impl<'a> Write<'a> {
    /// A decided action's change, re-planned before each attempt.
    pub fn planned(
        id: i64,
        uid: &'a str,
        action: &'a Action,
        change: &'a Change,
        inverse: Option<&'a Change>,
        planned_at: i64,
    ) -> Self {
        Self {
            id,
            uid,
            target: action.target(),
            change,
            precondition: Precondition::Replan {
                action,
                inverse,
                planned_at,
            },
        }
    }

    /// The inverse of an applied change, sent only while `done` is in effect.
    pub fn undo(
        id: i64,
        uid: &'a str,
        target: &'a ComponentId,
        inverse: &'a Change,
        done: &'a Value,
    ) -> Self {
        Self {
            id,
            uid,
            target,
            change: inverse,
            precondition: Precondition::StillApplied { done },
        }
    }
}

/// What a precondition says of the target as it is now.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    Send,
    /// Nothing to send: the patch is there already (a retry after a crash).
    AlreadyInEffect,
    Changed,
}

impl Precondition<'_> {
    /// Judges `current` for a merge `patch` of `change`; `first` is the
    /// first read of this send (later reads follow a conflict).
    fn check(
        &self,
        change: &Change,
        patch: &Value,
        subresource: Subresource,
        current: &Value,
        first: bool,
    ) -> Check {
        match self {
            Precondition::Replan {
                action,
                inverse,
                planned_at,
            } => match plan_action(action, current, *planned_at) {
                Ok(p) if &p.change == change && p.inverse.as_ref() == *inverse => Check::Send,
                // Only on the first read: after a conflict, a patch found in
                // effect may be someone else's.
                _ if first && patch_is_applied(patch, current) => Check::AlreadyInEffect,
                _ => Check::Changed,
            },
            Precondition::StillApplied { done } => {
                if subresource == Subresource::Main && !patch_is_applied(done, current) {
                    Check::Changed
                } else {
                    Check::Send
                }
            }
        }
    }

    fn changed(&self, target: String) -> SendError {
        match self {
            Precondition::Replan { .. } => SendError::ConflictOnTarget { target },
            Precondition::StillApplied { .. } => SendError::ChangedSinceAction { target },
        }
    }
}

/// The body of a merge patch as sent: the journaled patch, locked to the
/// resourceVersion the precondition was checked on (optimistic locking),
/// and — on the main resource — tagged with the action ID, which is how a
/// restart tells a sent patch from an unsent one.
fn patch_body(patch: &Value, subresource: Subresource, current: &Value, uid: &str) -> Value {
    let mut body = patch.clone();
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    if subresource == Subresource::Main {
        body["metadata"]["annotations"][ACTION_ID_ANNOTATION] = json!(uid);
    }
    body
}

fn patch_params(effect: &Effect) -> PatchParams {
    PatchParams {
        dry_run: effect.dry_run(),
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn post_params(effect: &Effect) -> PostParams {
    PostParams {
        dry_run: effect.dry_run(),
        field_manager: Some(FIELD_MANAGER.into()),
    }
}

/// The outcome detail of a send: what was done, or the error's kind and
/// message.
pub(super) fn sent_detail(sent: &Result<String, SendError>) -> String {
    match sent {
        Ok(detail) => detail.clone(),
        Err(e) => format!("{}: {e}", e.kind()),
    }
}

impl<J: Journal> Executor<J> {
    /// Sends `write`, admitted by the gate, and records the outcome of
    /// entry `entry`: applied if it was sent (or found in effect), failed
    /// otherwise. `describe` words the outcome detail from the send's result.
    pub(super) async fn send_and_finish(
        &self,
        entry: &NewEntry,
        write: &Write<'_>,
        admitted: Admitted,
        describe: impl FnOnce(&Result<String, SendError>) -> String,
        now: i64,
    ) -> Result<Executed, super::Error> {
        let sent = self.send(write, Effect::Apply(admitted)).await;
        let out = match &sent {
            Ok(_) => outcome::APPLIED,
            Err(e) if e.possibly_sent() => outcome::UNKNOWN,
            Err(_) => outcome::FAILED,
        };
        self.finish_target(write.id, entry, write.target, out, &describe(&sent), now)
            .await
    }

    /// Sends one change, tagged with its journal id. The only write to a
    /// target in the executor.
    pub(super) async fn send(
        &self,
        write: &Write<'_>,
        effect: Effect,
    ) -> Result<String, SendError> {
        match write.change {
            Change::Create { kind, object } => self.send_create(write, kind, object, &effect).await,
            Change::Merge {
                kind,
                namespace,
                name,
                subresource,
                patch,
            } => {
                let to = MergeTarget {
                    kind,
                    namespace,
                    name,
                    subresource: *subresource,
                };
                self.send_merge(write, &to, patch, &effect).await
            }
        }
    }

    /// Creates a new object. One that already exists with our journal id
    /// was created by this very action (a retry after a crash).
    async fn send_create(
        &self,
        write: &Write<'_>,
        kind: &KindInfo,
        object: &Value,
        effect: &Effect,
    ) -> Result<String, SendError> {
        let target = write.target.to_string();
        let mut obj: DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| SendError::CreateObject {
                target: target.clone(),
                source: kube::Error::SerdeError(e),
            })?;
        obj.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ACTION_ID_ANNOTATION.into(), write.uid.to_string());
        let api = self.api(kind, &write.target.namespace);
        let mut retries = TRANSIENT_BACKOFF.iter();
        let created = loop {
            crate::act::fence::check().map_err(|e| SendError::Fenced {
                target: target.clone(),
                reason: e.to_string(),
            })?;
            match api.create(&post_params(effect), &obj).await {
                Err(e) if transient(&e) => match retries.next() {
                    Some(pause) => {
                        tracing::warn!(%target, error = %e, "creating failed transiently; retrying (an object created meanwhile is recognised by its action ID)");
                        tokio::time::sleep(*pause).await;
                    }
                    None => break Err(e),
                },
                other => break other,
            }
        };
        match created {
            Ok(o) => Ok(format!(
                "created {} {}",
                kind.kind,
                o.metadata.name.unwrap_or_default()
            )),
            Err(kube::Error::Api(s)) if s.is_already_exists() => {
                let name = obj.metadata.name.clone().unwrap_or_default();
                let existing = api.get_opt(&name).await.ok().flatten();
                let ours = existing
                    .and_then(|o| o.metadata.annotations)
                    .and_then(|a| a.get(ACTION_ID_ANNOTATION).cloned())
                    .as_deref()
                    == Some(write.uid);
                if ours {
                    Ok(format!(
                        "{} {name} already created by this action",
                        kind.kind
                    ))
                } else {
                    Err(SendError::CreateObject {
                        target,
                        source: kube::Error::Api(s),
                    })
                }
            }
            Err(source) => Err(SendError::CreateObject { target, source }),
        }
    }

    /// Merge-patches the target (or its status) with optimistic locking. On
    /// a conflict the target is read again and the precondition checked
    /// again: the change is retried only if it still holds.
    async fn send_merge(
        &self,
        write: &Write<'_>,
        to: &MergeTarget<'_>,
        patch: &Value,
        effect: &Effect,
    ) -> Result<String, SendError> {
        let tk = write.target.to_string();
        let api = self.api(to.kind, to.namespace);
        let params = patch_params(effect);
        let mut attempt = 0;
        let mut conflicts = 0;
        let mut retries = TRANSIENT_BACKOFF.iter();
        // An earlier attempt failed in a way that may have reached the
        // cluster: read back before sending again.
        let mut ambiguous = false;
        loop {
            attempt += 1;
            let current = self
                .fetch_target(write.target)
                .await?
                .ok_or_else(|| SendError::MissingTarget { target: tk.clone() })?;
            if ambiguous && landed(patch, to.subresource, &current, write.uid) {
                return Ok(format!(
                    "{}patched {tk}: an earlier attempt's reply was lost; read back in effect (resourceVersion {})",
                    if effect.dry_run() { "dry-run " } else { "" },
                    current["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                ));
            }
            let check = write.precondition.check(
                write.change,
                patch,
                to.subresource,
                &current,
                attempt == 1,
            );
            match check {
                Check::Send => {}
                Check::AlreadyInEffect => return Ok("already in effect".into()),
                Check::Changed => return Err(write.precondition.changed(tk)),
            }
            let body = patch_body(patch, to.subresource, &current, write.uid);
            if let Some(hook) = &self.before_write {
                hook(attempt).await;
            }
            // A deposed leader sends nothing (checked as late as possible).
            if !effect.dry_run() {
                crate::act::fence::check().map_err(|e| SendError::Fenced {
                    target: tk.clone(),
                    reason: e.to_string(),
                })?;
            }
            let result = match to.subresource {
                Subresource::Main => api.patch(to.name, &params, &Patch::Merge(&body)).await,
                Subresource::Status => {
                    api.patch_status(to.name, &params, &Patch::Merge(&body))
                        .await
                }
            };
            match result {
                Ok(o) => {
                    return Ok(format!(
                        "{}patched {tk} (resourceVersion {})",
                        if effect.dry_run() { "dry-run " } else { "" },
                        o.metadata.resource_version.unwrap_or_default()
                    ));
                }
                Err(kube::Error::Api(s)) if s.is_conflict() && conflicts + 1 < CONFLICT_RETRIES => {
                    conflicts += 1;
                    tracing::info!(target = %tk, attempt, "the target changed while patching (409 Conflict); reading it again");
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    return Err(SendError::ConflictOnTarget { target: tk });
                }
                Err(source) if transient(&source) => match retries.next() {
                    Some(pause) => {
                        ambiguous = true;
                        tracing::warn!(target = %tk, attempt, error = %source, "patching failed transiently; reading the target back, then retrying if it did not land");
                        tokio::time::sleep(*pause).await;
                    }
                    None => {
                        // Out of retries: one last read decides whether it
                        // landed; otherwise the outcome stays unknown.
                        if let Ok(Some(now)) = self.fetch_target(write.target).await
                            && landed(patch, to.subresource, &now, write.uid)
                        {
                            return Ok(format!(
                                "patched {tk}: the last attempt's reply was lost; read back in effect"
                            ));
                        }
                        return Err(SendError::PatchTarget { target: tk, source });
                    }
                },
                Err(source) => return Err(SendError::PatchTarget { target: tk, source }),
            }
        }
    }
}

/// Where a merge patch goes.
struct MergeTarget<'a> {
    kind: &'a KindInfo,
    namespace: &'a str,
    name: &'a str,
    subresource: Subresource,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::action::kind_info;

    fn gateway(replicas: i64, annotations: Value) -> Value {
        json!({
            "apiVersion": "payments.io/v1alpha1",
            "kind": "PaymentGateway",
            "metadata": {"name": "gw", "namespace": "pay", "resourceVersion": "42",
                         "annotations": annotations},
            "spec": {"replicas": replicas},
        })
    }

    fn scale(replicas: i64) -> Action {
        Action::ScaleReplicas {
            target: ComponentId {
                kind: "PaymentGateway".into(),
                namespace: "pay".into(),
                name: "gw".into(),
            },
            replicas,
        }
    }

    fn merge(patch: Value, subresource: Subresource) -> Change {
        Change::Merge {
            kind: kind_info("PaymentGateway").expect("a known kind"),
            namespace: "pay".into(),
            name: "gw".into(),
            subresource,
            patch,
        }
    }

    #[test]
    fn a_planned_change_is_sent_only_while_it_plans_the_same() {
        let action = scale(5);
        let planned = plan_action(&action, &gateway(3, json!({})), 0).expect("plans");
        let pre = Precondition::Replan {
            action: &action,
            inverse: planned.inverse.as_ref(),
            planned_at: 0,
        };
        let patch = json!({"spec": {"replicas": 5}});
        let check = |current: &Value, first| {
            pre.check(&planned.change, &patch, Subresource::Main, current, first)
        };
        assert_eq!(check(&gateway(3, json!({})), true), Check::Send);
        // An unrelated change elsewhere does not matter.
        assert_eq!(check(&gateway(3, json!({"team": "x"})), false), Check::Send);
        // Someone else scaled it: the decision is stale.
        assert_eq!(check(&gateway(4, json!({})), true), Check::Changed);
        // Already at the decided value: sent before a crash, not sent twice;
        // after a conflict the value may be someone else's.
        assert_eq!(check(&gateway(5, json!({})), true), Check::AlreadyInEffect);
        assert_eq!(check(&gateway(5, json!({})), false), Check::Changed);
    }

    #[test]
    fn an_undo_is_sent_only_while_the_undone_change_is_in_effect() {
        let done = json!({"spec": {"replicas": 5}});
        let inverse = merge(json!({"spec": {"replicas": 3}}), Subresource::Main);
        let pre = Precondition::StillApplied { done: &done };
        let check = |sub, current: &Value| {
            pre.check(
                &inverse,
                &json!({"spec": {"replicas": 3}}),
                sub,
                current,
                true,
            )
        };
        assert_eq!(
            check(Subresource::Main, &gateway(5, json!({}))),
            Check::Send
        );
        assert_eq!(
            check(Subresource::Main, &gateway(7, json!({}))),
            Check::Changed
        );
        // A status patch is moved on by its operator: not checked.
        assert_eq!(
            check(Subresource::Status, &gateway(7, json!({}))),
            Check::Send
        );
        assert!(matches!(
            pre.changed("PaymentGateway/pay/gw".into()),
            SendError::ChangedSinceAction { .. }
        ));
    }

    #[test]
    fn a_lost_reply_is_told_from_a_write_that_did_not_land_by_reading_back() {
        let uid = "01JDZ7Q8W3V6X2K9M4N5P6R7S8";
        let patch = json!({"spec": {"replicas": 5}});
        let tagged = gateway(5, json!({ACTION_ID_ANNOTATION: uid}));
        assert!(landed(&patch, Subresource::Main, &tagged, uid));
        // Our tag, even if someone moved the value on since: it landed.
        let moved = gateway(6, json!({ACTION_ID_ANNOTATION: uid}));
        assert!(landed(&patch, Subresource::Main, &moved, uid));
        // The same value by someone else (another action's tag, or none).
        let other = gateway(
            5,
            json!({ACTION_ID_ANNOTATION: "01JE0000000000000000000000"}),
        );
        assert!(!landed(&patch, Subresource::Main, &other, uid));
        assert!(!landed(
            &patch,
            Subresource::Main,
            &gateway(5, json!({})),
            uid
        ));
        // Status: no tag, the patch in effect is the evidence.
        assert!(landed(
            &patch,
            Subresource::Status,
            &gateway(5, json!({})),
            uid
        ));
        assert!(!landed(
            &patch,
            Subresource::Status,
            &gateway(3, json!({})),
            uid
        ));
    }

    #[test]
    fn only_busy_failed_or_unanswered_requests_are_retried() {
        let status = |code| {
            kube::Error::Api(
                serde_json::from_value(
                    json!({"status": "Failure", "message": "m", "reason": "r", "code": code}),
                )
                .expect("status"),
            )
        };
        assert!(transient(&status(429)));
        assert!(transient(&status(500)));
        assert!(transient(&status(503)));
        assert!(!transient(&status(409)));
        assert!(!transient(&status(422)));
        assert!(!transient(&status(403)));
        assert!(!transient(&kube::Error::SerdeError(
            serde_json::from_str::<Value>("{").expect_err("bad json")
        )));
    }

    #[test]
    fn the_body_is_locked_to_what_was_read_and_names_the_journal_entry() {
        let patch = json!({"spec": {"replicas": 5}});
        let current = gateway(3, json!({}));
        let uid = "01JDZ7Q8W3V6X2K9M4N5P6R7S8";
        let main = patch_body(&patch, Subresource::Main, &current, uid);
        assert_eq!(
            main,
            json!({"spec": {"replicas": 5}, "metadata": {"resourceVersion": "42",
                   "annotations": {ACTION_ID_ANNOTATION: uid}}})
        );
        // The status subresource ignores metadata but for the lock.
        let status = patch_body(&patch, Subresource::Status, &current, uid);
        assert_eq!(
            status,
            json!({"spec": {"replicas": 5}, "metadata": {"resourceVersion": "42"}})
        );
        assert!(patch_params(&Effect::DryRun).dry_run);
        assert_eq!(
            post_params(&Effect::DryRun).field_manager.as_deref(),
            Some(FIELD_MANAGER)
        );
    }
}
