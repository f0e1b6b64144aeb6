//! Status conditions: set one with a stable `lastTransitionTime`, and compare
//! two statuses ignoring timestamps so an unchanged status is never patched.
//!
//! Pure: `now` is passed in.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// What a reconciler wants one condition to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired<'a> {
    pub type_: &'a str,
    pub status: bool,
    pub reason: &'a str,
    pub message: String,
}

/// Sets `desired` in `conditions`: `lastTransitionTime` moves to `now` only
/// when the status flips (or the condition is new); reason, message and
/// `observedGeneration` always follow.
pub fn set(
    conditions: &mut Vec<Condition>,
    desired: Desired<'_>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if desired.status { "True" } else { "False" }.to_string();
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = desired.reason.to_string();
            c.message = desired.message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: desired.type_.to_string(),
            status,
            reason: desired.reason.to_string(),
            message: desired.message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// The status of one condition type, if present.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// When the condition last flipped, if present.
pub fn since(conditions: &[Condition], type_: &str) -> Option<Timestamp> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.last_transition_time.0)
}

/// Conditions equal in everything but `lastTransitionTime` (which only moves
/// when a status flips, and a flip is a difference in `status`).
pub fn same_ignoring_timestamps(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// The conditions of a resource whose spec cannot be realised: not ready,
/// not progressing, degraded, each with reason `InvalidSpec` and the message
/// naming the field. Shared by every kind, so they all report it alike.
pub fn set_invalid(
    conditions: &mut Vec<Condition>,
    invalid: &super::Invalid,
    generation: Option<i64>,
    now: Timestamp,
) {
    use crate::crd::{condition, reason};
    let message = format!("invalid spec, nothing applied: {invalid}");
    for (type_, status) in [
        (condition::READY, false),
        (condition::PROGRESSING, false),
        (condition::DEGRADED, true),
    ] {
        set(
            conditions,
            Desired {
                type_,
                status,
                reason: reason::INVALID_SPEC,
                message: message.clone(),
            },
            generation,
            now,
        );
    }
}

/// The message of the conflict conditions: each object that is not ours and
/// whose it is, then what is held back because of them.
pub fn conflict_message(conflicts: &[crate::act::Conflict], held: &[String]) -> String {
    let mut m = conflicts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    m.push_str("; left as it is: rename or remove it, or name this resource differently");
    if !held.is_empty() {
        m.push_str(&format!("; not applied until then: {}", held.join(", ")));
    }
    m
}

/// Reports objects of our names that are someone else's: Ready False and
/// Degraded True with reason `OwnedObjectConflict` (and Progressing False
/// when `stalled`, nothing could be rolled out). `previous` is the status
/// before this reconcile: a condition that already said the same keeps its
/// `lastTransitionTime`, however the conditions were set meanwhile. Returns
/// the Warning Event to publish when the report is new, so a standing
/// conflict is announced once, not every reconcile.
pub fn set_conflicts(
    conditions: &mut Vec<Condition>,
    previous: &[Condition],
    conflicts: &[crate::act::Conflict],
    held: &[String],
    stalled: bool,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<super::rollout::EventIntent> {
    use crate::crd::{condition, reason};
    if conflicts.is_empty() {
        return None;
    }
    let message = conflict_message(conflicts, held);
    let mut types = vec![(condition::READY, false), (condition::DEGRADED, true)];
    if stalled {
        types.push((condition::PROGRESSING, false));
    }
    for (type_, status) in types {
        set(
            conditions,
            Desired {
                type_,
                status,
                reason: reason::OWNED_OBJECT_CONFLICT,
                message: message.clone(),
            },
            generation,
            now,
        );
        let before = previous.iter().find(|c| c.type_ == type_);
        if let (Some(before), Some(c)) = (before, conditions.iter_mut().find(|c| c.type_ == type_))
            && before.status == c.status
        {
            c.last_transition_time = before.last_transition_time.clone();
        }
    }
    let known = previous.iter().any(|c| {
        c.type_ == condition::READY
            && c.reason == reason::OWNED_OBJECT_CONFLICT
            && c.message == message
    });
    (!known).then_some(super::rollout::EventIntent {
        warning: true,
        reason: reason::OWNED_OBJECT_CONFLICT,
        note: message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    fn ready(status: bool, reason: &str) -> Desired<'_> {
        Desired {
            type_: "Ready",
            status,
            reason,
            message: format!("{reason} message"),
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut c = Vec::new();
        set(&mut c, ready(false, "Pending"), Some(1), t(100));
        assert_eq!(c[0].last_transition_time.0, t(100));
        set(&mut c, ready(false, "StillPending"), Some(2), t(200));
        assert_eq!(
            c[0].last_transition_time.0,
            t(100),
            "same status keeps the time"
        );
        assert_eq!(c[0].reason, "StillPending");
        assert_eq!(c[0].observed_generation, Some(2));
        set(&mut c, ready(true, "Available"), Some(2), t(300));
        assert_eq!(c[0].last_transition_time.0, t(300));
        assert!(is_true(&c, "Ready"));
        assert_eq!(since(&c, "Ready"), Some(t(300)));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn comparison_ignores_timestamps_and_order() {
        let mut a = Vec::new();
        set(&mut a, ready(true, "Available"), Some(1), t(1));
        set(
            &mut a,
            Desired {
                type_: "Degraded",
                status: false,
                reason: "Healthy",
                message: String::new(),
            },
            Some(1),
            t(1),
        );
        let mut b = a.clone();
        b.reverse();
        b[0].last_transition_time = Time(t(999));
        assert!(same_ignoring_timestamps(&a, &b));
        b[0].reason = "Other".into();
        assert!(!same_ignoring_timestamps(&a, &b));
    }

    fn conflict() -> crate::act::Conflict {
        crate::act::Conflict {
            kind: "ConfigMap".into(),
            name: "victim".into(),
            owner: "it has no controller ownerReference (created outside this resource)".into(),
        }
    }

    #[test]
    fn a_conflict_is_reported_once_and_keeps_its_transition_time() {
        let mut c = Vec::new();
        set(&mut c, ready(true, "Available"), Some(1), t(100));
        let previous = c.clone();
        let event = set_conflicts(
            &mut c,
            &previous,
            &[conflict()],
            &["Deployment".into()],
            true,
            Some(2),
            t(200),
        )
        .expect("a new conflict is announced");
        assert!(event.warning);
        assert_eq!(event.reason, "OwnedObjectConflict");
        let r = c.iter().find(|x| x.type_ == "Ready").expect("Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            ("False", "OwnedObjectConflict")
        );
        assert_eq!(r.observed_generation, Some(2));
        assert!(
            r.message
                .starts_with("ConfigMap victim is not ours: it has no controller")
                && r.message.ends_with("not applied until then: Deployment"),
            "{}",
            r.message
        );
        assert_eq!(r.last_transition_time.0, t(200));
        assert!(
            c.iter()
                .any(|x| x.type_ == "Progressing" && x.status == "False")
        );

        // The next reconcile sets Ready True on its way (a rollout judged
        // complete), then the same conflict again: no new Event, no new time.
        let previous = c.clone();
        set(&mut c, ready(true, "Available"), Some(2), t(300));
        let again = set_conflicts(
            &mut c,
            &previous,
            &[conflict()],
            &["Deployment".into()],
            true,
            Some(2),
            t(300),
        );
        assert_eq!(again, None);
        let r = c.iter().find(|x| x.type_ == "Ready").expect("Ready");
        assert_eq!(r.last_transition_time.0, t(200));
        assert_eq!(
            set_conflicts(&mut c, &previous, &[], &[], true, Some(2), t(300)),
            None
        );
    }
}
