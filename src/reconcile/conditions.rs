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
}
