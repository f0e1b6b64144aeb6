//! Health-gated upgrades and automatic rollback for the Deployment-backed
//! kinds, as pure functions: which version to run, whether the rollout
//! completed or failed, and the status that follows.
//!
//! Pure: the observed Deployment, the previous status and `now` come in; a
//! target version, a judgement and a new status go out. No client, no clock.

use k8s_openapi::{
    api::apps::v1::Deployment,
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::{SignedDuration, Timestamp},
};

use super::conditions::{self, Desired};
use crate::crd::{Phase, WorkloadStatus, common::UpgradePolicy, condition, reason};

/// Label on the pod template naming the version it runs.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// The version to deploy: `spec.version`, unless that exact version already
/// failed and was rolled back — then the last good one, until the spec changes.
pub fn target_version<'a>(spec_version: &'a str, previous: &'a WorkloadStatus) -> &'a str {
    match (&previous.failed_version, &previous.last_good_version) {
        (Some(failed), Some(good)) if failed == spec_version => good,
        _ => spec_version,
    }
}

/// What the reconciler saw of its Deployment after applying it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub template_version: Option<String>,
    pub generation: i64,
    pub observed_generation: i64,
    pub desired: i32,
    pub total: i32,
    pub updated: i32,
    pub available: i32,
    pub progress_deadline_exceeded: bool,
}

impl Observed {
    pub fn from_deployment(d: &Deployment) -> Self {
        let status = d.status.clone().unwrap_or_default();
        let spec = d.spec.clone().unwrap_or_default();
        let template_version = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(VERSION_LABEL))
            .cloned();
        let progress_deadline_exceeded = status.conditions.iter().flatten().any(|c| {
            c.type_ == condition::PROGRESSING
                && c.status == "False"
                && c.reason.as_deref() == Some(reason::PROGRESS_DEADLINE_EXCEEDED)
        });
        Observed {
            template_version,
            generation: d.metadata.generation.unwrap_or_default(),
            observed_generation: status.observed_generation.unwrap_or_default(),
            desired: spec.replicas.unwrap_or(1),
            total: status.replicas.unwrap_or_default(),
            updated: status.updated_replicas.unwrap_or_default(),
            available: status.available_replicas.unwrap_or_default(),
            progress_deadline_exceeded,
        }
    }

    /// `kubectl rollout status` semantics: the controller saw the latest
    /// spec, every replica is updated, no old one is left, all available.
    pub fn complete(&self) -> bool {
        self.observed_generation >= self.generation
            && self.updated >= self.desired
            && self.total == self.updated
            && self.available >= self.desired
    }
}

/// The verdict on the rollout of the target version.
#[derive(Clone, Debug, PartialEq)]
pub enum Judgement {
    /// Every replica runs the target version and is available.
    Complete,
    /// Still rolling (or scaling); nothing is wrong yet.
    InProgress,
    /// The rollout failed: `reason` is a CamelCase condition reason.
    Failed {
        reason: &'static str,
        message: String,
    },
}

/// Everything [`judge`] and [`compute_status`] look at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub spec_version: &'a str,
    pub target: &'a str,
    pub policy: &'a UpgradePolicy,
    pub previous: &'a WorkloadStatus,
    pub generation: Option<i64>,
    pub observed: &'a Observed,
    /// An outside verdict that the running upgrade is unhealthy (anomaly
    /// detectors), with its reason.
    pub gate: Option<&'a str>,
    pub now: Timestamp,
}

impl Input<'_> {
    /// A version change is under way: the target is not what last completed.
    fn upgrading(&self) -> bool {
        self.previous.current_version.as_deref() != Some(self.target)
    }

    fn below_minimum_since(&self) -> Option<Timestamp> {
        (self.observed.available < self.observed.desired).then(|| {
            self.previous
                .below_minimum_since
                .as_ref()
                .map_or(self.now, |t| t.0)
        })
    }
}

pub fn judge(input: &Input<'_>) -> Judgement {
    let o = input.observed;
    if o.template_version.as_deref() == Some(input.target) && o.complete() {
        return Judgement::Complete;
    }
    if !input.upgrading() {
        return Judgement::InProgress;
    }
    if let Some(reason) = input.gate {
        return Judgement::Failed {
            reason: reason::UNHEALTHY_UPGRADE,
            message: format!("version {} was declared unhealthy: {reason}", input.target),
        };
    }
    if o.progress_deadline_exceeded {
        return Judgement::Failed {
            reason: reason::PROGRESS_DEADLINE_EXCEEDED,
            message: format!(
                "version {} made no progress for {}s ({} of {} replicas updated, {} available)",
                input.target,
                input.policy.progress_deadline_seconds,
                o.updated,
                o.desired,
                o.available
            ),
        };
    }
    if let Some(since) = input.below_minimum_since() {
        let tolerance =
            SignedDuration::from_secs(i64::from(input.policy.unavailable_tolerance_seconds));
        if input.now.duration_since(since) > tolerance {
            return Judgement::Failed {
                reason: reason::INSUFFICIENT_REPLICAS,
                message: format!(
                    "only {} of {} replicas available for more than {}s during the rollout of {}",
                    o.available,
                    o.desired,
                    input.policy.unavailable_tolerance_seconds,
                    input.target
                ),
            };
        }
    }
    Judgement::InProgress
}

/// Whether a failed rollout should be rolled back, and to what.
pub fn rollback_target<'a>(input: &Input<'a>, judgement: &Judgement) -> Option<&'a str> {
    let Judgement::Failed { .. } = judgement else {
        return None;
    };
    let good = input.previous.last_good_version.as_deref()?;
    (input.policy.auto_rollback && input.target == input.spec_version && good != input.target)
        .then_some(good)
}

/// A Kubernetes Event the reconciler should publish on its resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventIntent {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// The new status after a reconcile. `rolled_back` carries the failure
/// (reason, message) that made this reconcile switch to the last good version.
pub fn compute_status(
    input: &Input<'_>,
    judgement: &Judgement,
    rolled_back: Option<(&'static str, &str)>,
) -> (WorkloadStatus, Vec<EventIntent>) {
    let prev = input.previous;
    let o = input.observed;
    let mut s = prev.clone();
    s.observed_generation = input.generation;
    s.available_replicas = o.available;
    s.below_minimum_since = input.below_minimum_since().map(Time);

    // Versions. A failure is forgotten once the user moves spec.version on.
    if s.failed_version
        .as_deref()
        .is_some_and(|f| f != input.spec_version)
    {
        s.failed_version = None;
    }
    if rolled_back.is_some() {
        s.failed_version = Some(input.spec_version.to_string());
    } else if *judgement == Judgement::Complete {
        s.current_version = Some(input.target.to_string());
        if input.target == input.spec_version {
            s.last_good_version = Some(input.target.to_string());
            s.failed_version = None;
        }
    }

    let running_differs = s.failed_version.is_some();
    let failure = match judgement {
        Judgement::Failed { reason, message } if rolled_back.is_none() => {
            Some((*reason, message.as_str()))
        }
        _ => None,
    };
    let complete = *judgement == Judgement::Complete && rolled_back.is_none();
    let ready = complete && !running_differs;
    let progressing = !complete && failure.is_none();
    let insufficient = !input.upgrading() && o.available < o.desired;
    let good = s
        .last_good_version
        .as_deref()
        .unwrap_or("the previous version");
    let rollback_note = format!(
        "spec.version {} failed and was rolled back; running {good}",
        input.spec_version
    );

    let (ready_reason, ready_message) = if ready {
        (
            reason::AVAILABLE,
            format!(
                "{} of {} replicas available at version {}",
                o.available, o.desired, input.target
            ),
        )
    } else if running_differs {
        (reason::ROLLED_BACK, rollback_note.clone())
    } else if failure.is_some() {
        (
            reason::ROLLOUT_FAILED,
            failure.map(|f| f.1.to_string()).unwrap_or_default(),
        )
    } else {
        (
            reason::ROLLOUT_IN_PROGRESS,
            format!(
                "{} of {} replicas available, {} at version {}",
                o.available, o.desired, o.updated, input.target
            ),
        )
    };
    let progressing_reason = match (progressing, failure.is_some()) {
        (true, _) if running_differs => reason::ROLLING_BACK,
        (true, _) if input.upgrading() => reason::NEW_VERSION,
        (true, _) => reason::SCALING,
        (false, true) => reason::ROLLOUT_FAILED,
        (false, false) => reason::ROLLOUT_COMPLETE,
    };
    let (degraded_reason, degraded_message) = match failure {
        Some((reason, message)) => (Some(reason), message.to_string()),
        None if running_differs => (Some(reason::ROLLED_BACK), rollback_note.clone()),
        None if insufficient => (
            Some(reason::INSUFFICIENT_REPLICAS),
            format!("only {} of {} replicas available", o.available, o.desired),
        ),
        None => (None, String::new()),
    };

    let (generation, now) = (input.generation, input.now);
    let c = &mut s.conditions;
    conditions::set(
        c,
        Desired {
            type_: condition::READY,
            status: ready,
            reason: ready_reason,
            message: ready_message,
        },
        generation,
        now,
    );
    conditions::set(
        c,
        Desired {
            type_: condition::PROGRESSING,
            status: progressing,
            reason: progressing_reason,
            message: format!("target version {}", input.target),
        },
        generation,
        now,
    );
    conditions::set(
        c,
        Desired {
            type_: condition::DEGRADED,
            status: degraded_reason.is_some(),
            reason: degraded_reason.unwrap_or(reason::HEALTHY),
            message: degraded_message,
        },
        generation,
        now,
    );
    if let Some((reason, message)) = rolled_back {
        let message = format!(
            "{message}; rolled back to {good}, spec.version still says {}",
            input.spec_version
        );
        conditions::set(
            c,
            Desired {
                type_: condition::ROLLED_BACK,
                status: true,
                reason,
                message,
            },
            generation,
            now,
        );
    } else if !running_differs && conditions::is_true(c, condition::ROLLED_BACK) {
        let message = format!("running spec.version {}", input.spec_version);
        conditions::set(
            c,
            Desired {
                type_: condition::ROLLED_BACK,
                status: false,
                reason: reason::NEW_VERSION_SPECIFIED,
                message,
            },
            generation,
            now,
        );
    }
    s.phase = if ready {
        Phase::Ready
    } else if degraded_reason.is_some() {
        Phase::Degraded
    } else {
        Phase::Progressing
    };
    let events = events_between(prev, &s, input.target);
    (s, events)
}

/// The Events that tell the story of a status change.
fn events_between(prev: &WorkloadStatus, s: &WorkloadStatus, target: &str) -> Vec<EventIntent> {
    let mut events = Vec::new();
    if s.phase != prev.phase {
        events.push(EventIntent {
            warning: matches!(s.phase, Phase::Degraded | Phase::Failed),
            reason: reason::PHASE_CHANGED,
            note: format!(
                "{:?} -> {:?} (target version {target})",
                prev.phase, s.phase
            ),
        });
    }
    if s.last_good_version != prev.last_good_version
        && let Some(v) = &s.last_good_version
    {
        events.push(EventIntent {
            warning: false,
            reason: reason::UPGRADE_SUCCEEDED,
            note: format!("version {v} rolled out and is healthy"),
        });
    }
    if s.failed_version.is_some() && s.failed_version != prev.failed_version {
        let note = s
            .conditions
            .iter()
            .find(|c| c.type_ == condition::ROLLED_BACK)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        events.push(EventIntent {
            warning: true,
            reason: reason::ROLLED_BACK,
            note,
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    fn obs(version: &str, desired: i32, updated: i32, total: i32, available: i32) -> Observed {
        Observed {
            template_version: Some(version.into()),
            generation: 2,
            observed_generation: 2,
            desired,
            total,
            updated,
            available,
            progress_deadline_exceeded: false,
        }
    }

    fn status(current: &str, good: &str) -> WorkloadStatus {
        WorkloadStatus {
            phase: Phase::Ready,
            available_replicas: 3,
            current_version: Some(current.into()),
            last_good_version: Some(good.into()),
            ..Default::default()
        }
    }

    fn input<'a>(
        spec: &'a str,
        prev: &'a WorkloadStatus,
        o: &'a Observed,
        policy: &'a UpgradePolicy,
        now: i64,
    ) -> Input<'a> {
        Input {
            spec_version: spec,
            target: target_version(spec, prev),
            policy,
            previous: prev,
            generation: Some(2),
            observed: o,
            gate: None,
            now: t(now),
        }
    }

    fn cond<'a>(
        s: &'a WorkloadStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn first_rollout_completes_and_records_the_good_version() {
        let policy = UpgradePolicy::default();
        let prev = WorkloadStatus::default();
        let o = obs("1.0.0", 3, 3, 3, 3);
        let i = input("1.0.0", &prev, &o, &policy, 100);
        assert_eq!(judge(&i), Judgement::Complete);
        let (s, events) = compute_status(&i, &Judgement::Complete, None);
        assert_eq!(s.current_version.as_deref(), Some("1.0.0"));
        assert_eq!(s.last_good_version.as_deref(), Some("1.0.0"));
        assert_eq!(s.phase, Phase::Ready);
        assert!(conditions::is_true(&s.conditions, condition::READY));
        assert!(!conditions::is_true(&s.conditions, condition::PROGRESSING));
        assert_eq!(cond(&s, condition::READY).observed_generation, Some(2));
        assert!(events.iter().any(|e| e.reason == "UpgradeSucceeded"));
        assert!(events.iter().any(|e| e.reason == "PhaseChanged"));
    }

    #[test]
    fn upgrade_in_progress_keeps_the_current_version() {
        let policy = UpgradePolicy::default();
        let prev = status("1.0.0", "1.0.0");
        let o = obs("1.1.0", 3, 1, 4, 3);
        let i = input("1.1.0", &prev, &o, &policy, 100);
        assert_eq!(judge(&i), Judgement::InProgress);
        let (s, _) = compute_status(&i, &Judgement::InProgress, None);
        assert_eq!(s.current_version.as_deref(), Some("1.0.0"));
        assert_eq!(s.phase, Phase::Progressing);
        assert_eq!(cond(&s, condition::PROGRESSING).reason, "NewVersion");
    }

    #[test]
    fn missed_progress_deadline_rolls_back_to_the_last_good_version() {
        let policy = UpgradePolicy::default();
        let prev = status("1.0.0", "1.0.0");
        let mut o = obs("1.1.0", 3, 1, 4, 3);
        o.progress_deadline_exceeded = true;
        let i = input("1.1.0", &prev, &o, &policy, 100);
        let j = judge(&i);
        let Judgement::Failed { reason, message } = &j else {
            panic!("{j:?}")
        };
        assert_eq!(*reason, "ProgressDeadlineExceeded");
        assert_eq!(rollback_target(&i, &j), Some("1.0.0"));

        // The driver re-applies 1.0.0 and computes status for it.
        let o2 = obs("1.0.0", 3, 3, 4, 3);
        let back = Input {
            target: "1.0.0",
            observed: &o2,
            ..i.clone()
        };
        let (s, events) = compute_status(&back, &judge(&back), Some((reason, message)));
        assert_eq!(s.failed_version.as_deref(), Some("1.1.0"));
        assert_eq!(s.current_version.as_deref(), Some("1.0.0"));
        assert_eq!(s.phase, Phase::Degraded);
        let rb = cond(&s, condition::ROLLED_BACK);
        assert_eq!(
            (rb.status.as_str(), rb.reason.as_str()),
            ("True", "ProgressDeadlineExceeded")
        );
        assert!(
            rb.message.contains("spec.version still says 1.1.0"),
            "{}",
            rb.message
        );
        assert!(!conditions::is_true(&s.conditions, condition::READY));
        assert!(events.iter().any(|e| e.reason == "RolledBack" && e.warning));

        // Later reconciles keep running 1.0.0 and do not retry 1.1.0 ...
        assert_eq!(target_version("1.1.0", &s), "1.0.0");
        let o3 = obs("1.0.0", 3, 3, 3, 3);
        let later = input("1.1.0", &s, &o3, &policy, 200);
        let (s2, events2) = compute_status(&later, &judge(&later), None);
        assert_eq!(s2.failed_version.as_deref(), Some("1.1.0"));
        assert_eq!(s2.phase, Phase::Degraded);
        assert_eq!(
            cond(&s2, condition::ROLLED_BACK).last_transition_time,
            rb.last_transition_time
        );
        assert!(events2.is_empty(), "{events2:?}");
        // ... until the spec names another version.
        assert_eq!(target_version("1.2.0", &s2), "1.2.0");
        let o4 = obs("1.2.0", 3, 3, 3, 3);
        let fixed = input("1.2.0", &s2, &o4, &policy, 300);
        let (s3, _) = compute_status(&fixed, &judge(&fixed), None);
        assert_eq!(s3.failed_version, None);
        assert_eq!(s3.last_good_version.as_deref(), Some("1.2.0"));
        assert_eq!(s3.phase, Phase::Ready);
        assert_eq!(cond(&s3, condition::ROLLED_BACK).status, "False");
    }

    #[test]
    fn staying_below_minimum_past_the_tolerance_fails_the_rollout() {
        let policy = UpgradePolicy {
            unavailable_tolerance_seconds: 60,
            ..Default::default()
        };
        let prev = status("1.0.0", "1.0.0");
        let o = obs("1.1.0", 3, 3, 3, 1);
        let i = input("1.1.0", &prev, &o, &policy, 1000);
        assert_eq!(judge(&i), Judgement::InProgress);
        let (s, _) = compute_status(&i, &Judgement::InProgress, None);
        assert_eq!(s.below_minimum_since.as_ref().map(|x| x.0), Some(t(1000)));
        let i2 = input("1.1.0", &s, &o, &policy, 1030);
        assert_eq!(judge(&i2), Judgement::InProgress, "within tolerance");
        let i3 = input("1.1.0", &s, &o, &policy, 1061);
        assert!(matches!(
            judge(&i3),
            Judgement::Failed {
                reason: "InsufficientReplicas",
                ..
            }
        ));
    }

    #[test]
    fn the_gate_fails_an_upgrade_but_not_a_settled_version() {
        let policy = UpgradePolicy::default();
        let prev = status("1.0.0", "1.0.0");
        let o = obs("1.1.0", 3, 1, 4, 3);
        let mut i = input("1.1.0", &prev, &o, &policy, 10);
        i.gate = Some("error rate 12% after upgrade");
        assert!(matches!(
            judge(&i),
            Judgement::Failed {
                reason: "UnhealthyUpgrade",
                ..
            }
        ));
        let settled = obs("1.0.0", 3, 3, 3, 3);
        let mut j = input("1.0.0", &prev, &settled, &policy, 10);
        j.gate = Some("noise");
        assert_eq!(judge(&j), Judgement::Complete);
    }

    #[test]
    fn no_rollback_without_a_good_version_or_when_disabled() {
        let policy = UpgradePolicy::default();
        let prev = WorkloadStatus::default();
        let mut o = obs("1.0.0", 3, 3, 3, 0);
        o.progress_deadline_exceeded = true;
        let i = input("1.0.0", &prev, &o, &policy, 10);
        let j = judge(&i);
        assert_eq!(rollback_target(&i, &j), None);
        let (s, _) = compute_status(&i, &j, None);
        assert_eq!(s.phase, Phase::Degraded);
        assert_eq!(
            cond(&s, condition::DEGRADED).reason,
            "ProgressDeadlineExceeded"
        );

        let off = UpgradePolicy {
            auto_rollback: false,
            ..Default::default()
        };
        let prev = status("1.0.0", "1.0.0");
        let mut o = obs("1.1.0", 3, 1, 4, 3);
        o.progress_deadline_exceeded = true;
        let i = input("1.1.0", &prev, &o, &off, 10);
        assert_eq!(rollback_target(&i, &judge(&i)), None);
    }

    #[test]
    fn steady_state_replica_loss_is_degraded_without_rollback() {
        let policy = UpgradePolicy::default();
        let prev = status("1.0.0", "1.0.0");
        let o = obs("1.0.0", 3, 3, 3, 2);
        let i = input("1.0.0", &prev, &o, &policy, 10);
        let j = judge(&i);
        assert_eq!(j, Judgement::InProgress);
        assert_eq!(rollback_target(&i, &j), None);
        let (s, _) = compute_status(&i, &j, None);
        assert_eq!(cond(&s, condition::DEGRADED).reason, "InsufficientReplicas");
        assert_eq!(cond(&s, condition::PROGRESSING).reason, "Scaling");
    }
}
