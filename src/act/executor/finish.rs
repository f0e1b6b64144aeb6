//! Recording what happened to a journal entry: the outcome in the journal,
//! then an Event on the target naming the entry, then the counter — the
//! three traces every action leaves, in that order, so they agree.
//!
//! Must not write to a target: the Event is published through the same
//! helper the reconcilers use ([`crate::act::publish_event_on`]) and is best
//! effort, never a reason to fail or retry an action.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use serde_json::Value;

use super::{Executed, Executor};
use crate::{
    act::journal::{Journal, NewEntry, outcome},
    detect::ComponentId,
};

/// The Event reason of an outcome (CamelCase, a fixed set).
fn event_reason(out: &str) -> &'static str {
    match out {
        outcome::APPLIED => "ActionApplied",
        outcome::FAILED => "ActionFailed",
        outcome::REFUSED => "ActionRefused",
        outcome::RECOMMENDED => "ActionRecommended",
        outcome::DRY_RUN => "ActionDryRun",
        outcome::REJECTED => "ActionRejected",
        outcome::ABANDONED => "ActionAbandoned",
        outcome::UNKNOWN => "ActionOutcomeUnknown",
        _ => "Action",
    }
}

/// The Event of entry `id`'s outcome. Its note starts with `autopilot #<id>`,
/// which ties it to the journal row.
fn build_event(id: i64, entry: &NewEntry, out: &str, detail: &str) -> Event {
    let warning = matches!(
        out,
        outcome::FAILED | outcome::REFUSED | outcome::ABANDONED | outcome::UNKNOWN
    );
    Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event_reason(out).into(),
        note: Some(format!(
            "autopilot #{id} {} by {} ({}): {out} — {detail}",
            entry.action_kind, entry.runbook, entry.mode
        )),
        action: entry.action_kind.clone(),
        secondary: None,
    }
}

/// A reference to a target read as JSON (any kind, typed or not).
fn object_reference(obj: &Value) -> ObjectReference {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let meta = &obj["metadata"];
    ObjectReference {
        api_version: text(&obj["apiVersion"]),
        kind: text(&obj["kind"]),
        name: text(&meta["name"]),
        namespace: text(&meta["namespace"]),
        uid: text(&meta["uid"]),
        resource_version: text(&meta["resourceVersion"]),
        field_path: None,
    }
}

impl<J: Journal> Executor<J> {
    /// [`Self::finish`] with the target as it is now, for the Event.
    pub(super) async fn finish_target(
        &self,
        id: i64,
        entry: &NewEntry,
        target: &ComponentId,
        out: &str,
        detail: &str,
        now: i64,
    ) -> Result<Executed, super::Error> {
        let object = self.fetch_target(target).await.ok().flatten();
        self.finish(id, entry, object.as_ref(), out, detail, now)
            .await
    }

    /// Records the outcome, then the Event (on `object`, when there is one)
    /// and the counter.
    pub(super) async fn finish(
        &self,
        id: i64,
        entry: &NewEntry,
        object: Option<&Value>,
        out: &str,
        detail: &str,
        now: i64,
    ) -> Result<Executed, super::Error> {
        self.journal.record_outcome(id, out, detail, now).await?;
        if let Some(obj) = object {
            let event = build_event(id, entry, out, detail);
            crate::act::publish_event_on(&self.recorder(), &object_reference(obj), event).await;
        }
        self.count(entry, out);
        Ok(Executed {
            id,
            outcome: out.to_string(),
            detail: detail.to_string(),
            repeat: false,
            deferred: false,
        })
    }

    /// Counts one outcome of `entry`'s action kind.
    pub(super) fn count(&self, entry: &NewEntry, out: &str) {
        self.metrics
            .actions
            .with_label_values(&[entry.action_kind.as_str(), out])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry() -> NewEntry {
        NewEntry::fixture()
    }

    #[test]
    fn the_event_names_the_entry_and_warns_of_what_did_not_happen() {
        let applied = build_event(12, &entry(), outcome::APPLIED, "patched");
        assert_eq!(applied.reason, "ActionApplied");
        assert_eq!(applied.type_, EventType::Normal);
        assert_eq!(
            applied.note.as_deref(),
            Some("autopilot #12 scale_replicas by autoscale-gateway (auto): applied — patched")
        );
        for out in [
            outcome::FAILED,
            outcome::REFUSED,
            outcome::ABANDONED,
            outcome::UNKNOWN,
        ] {
            assert_eq!(build_event(1, &entry(), out, "").type_, EventType::Warning);
        }
        assert_eq!(
            build_event(1, &entry(), outcome::REJECTED, "").reason,
            "ActionRejected"
        );
    }

    #[test]
    fn a_dynamic_object_is_referenced_by_its_metadata() {
        let obj = json!({
            "apiVersion": "payments.io/v1alpha1", "kind": "PaymentGateway",
            "metadata": {"name": "gw", "namespace": "pay", "uid": "u-1", "resourceVersion": "7"},
        });
        let r = object_reference(&obj);
        assert_eq!(r.api_version.as_deref(), Some("payments.io/v1alpha1"));
        assert_eq!(r.kind.as_deref(), Some("PaymentGateway"));
        assert_eq!(r.name.as_deref(), Some("gw"));
        assert_eq!(r.namespace.as_deref(), Some("pay"));
        assert_eq!(r.uid.as_deref(), Some("u-1"));
        assert_eq!(r.resource_version.as_deref(), Some("7"));
    }
}
