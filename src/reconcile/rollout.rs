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
    let mut s = prev.clone();
    s.observed_generation = input.generation;
    s.available_replicas = input.observed.available;
    s.below_minimum_since = input.below_minimum_since().map(Time);
    track_versions(&mut s, input, judgement, rolled_back.is_some());

    let health = Health::of(input, judgement, rolled_back, &s);
    let degraded = health.degraded.is_some();
    for desired in health.conditions(input) {
        conditions::set(&mut s.conditions, desired, input.generation, input.now);
    }
    set_rolled_back(&mut s, input, rolled_back, &health);
    s.phase = if health.ready {
        Phase::Ready
    } else if degraded {
        Phase::Degraded
    } else {
        Phase::Progressing
    };
    let events = events_between(prev, &s, input.target);
    (s, events)
}

/// Versions: a failure is forgotten once the user moves spec.version on; a
/// rollback marks spec.version failed; a complete rollout of spec.version
/// makes it the last good one once it has soaked ([`soak`]).
fn track_versions(
    s: &mut WorkloadStatus,
    input: &Input<'_>,
    judgement: &Judgement,
    rolled_back: bool,
) {
    if s.failed_version
        .as_deref()
        .is_some_and(|f| f != input.spec_version)
    {
        s.failed_version = None;
    }
    if rolled_back {
        s.failed_version = Some(input.spec_version.to_string());
        s.soaking_since = None;
    } else if *judgement == Judgement::Complete {
        s.current_version = Some(input.target.to_string());
        s.soaking_since = None;
        if input.target == input.spec_version {
            s.failed_version = None;
            match soak(input) {
                Soak::Good => s.last_good_version = Some(input.target.to_string()),
                Soak::Soaking { since, .. } => s.soaking_since = Some(Time(since)),
            }
        }
    } else if input.upgrading() || matches!(judgement, Judgement::Failed { .. }) {
        s.soaking_since = None;
    }
}

/// Where a version whose rollout is complete stands in its soak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Soak {
    /// It is (or now becomes) the last good version.
    Good,
    /// Healthy since `since`; good after `left` more seconds.
    Soaking { since: Timestamp, left: i64 },
}

/// The soak of `input.target`, complete now: a version becomes the last
/// good one only after running healthy for `upgrade.soakSeconds`, so that
/// a release whose errors show only under traffic is not taken as good
/// before they show. The first version of a resource (no last good one) is
/// good at once: there is nothing older to roll back to.
pub fn soak(input: &Input<'_>) -> Soak {
    let prev = input.previous;
    match prev.last_good_version.as_deref() {
        None => return Soak::Good,
        Some(good) if good == input.target => return Soak::Good,
        Some(_) => {}
    }
    // The soak runs on from the last reconcile only for the same version.
    let since = prev
        .soaking_since
        .as_ref()
        .filter(|_| prev.current_version.as_deref() == Some(input.target))
        .map_or(input.now, |t| t.0);
    let left = since.as_second() + i64::from(input.policy.soak_seconds) - input.now.as_second();
    if left <= 0 {
        Soak::Good
    } else {
        Soak::Soaking { since, left }
    }
}

/// When to wake for a soak to end: a second after it does, or `None` when
/// no version is soaking.
pub fn soak_timer(
    status: &WorkloadStatus,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let since = status.soaking_since.as_ref()?.0;
    let left = since.as_second() + i64::from(policy.soak_seconds) - now.as_second();
    Some(std::time::Duration::from_secs(left.max(0) as u64 + 1))
}

/// What the conditions say, decided once from the judgement and versions.
struct Health<'a> {
    ready: bool,
    progressing: bool,
    /// spec.version failed and the last good version runs instead.
    running_differs: bool,
    /// A failure of this reconcile that was not rolled back.
    failure: Option<(&'static str, &'a str)>,
    /// Degraded's reason and message, when degraded.
    degraded: Option<(&'static str, String)>,
    /// The version running after a rollback, for messages.
    good: String,
    rollback_note: String,
}

impl<'a> Health<'a> {
    fn of(
        input: &Input<'_>,
        judgement: &'a Judgement,
        rolled_back: Option<(&'static str, &str)>,
        s: &WorkloadStatus,
    ) -> Self {
        let o = input.observed;
        let running_differs = s.failed_version.is_some();
        let failure = match judgement {
            Judgement::Failed { reason, message } if rolled_back.is_none() => {
                Some((*reason, message.as_str()))
            }
            _ => None,
        };
        let complete = *judgement == Judgement::Complete && rolled_back.is_none();
        let insufficient = !input.upgrading() && o.available < o.desired;
        let good = s
            .last_good_version
            .clone()
            .unwrap_or_else(|| "the previous version".into());
        let rollback_note = format!(
            "spec.version {} failed and was rolled back; running {good}",
            input.spec_version
        );
        let degraded = match failure {
            Some((reason, message)) => Some((reason, message.to_string())),
            None if running_differs => Some((reason::ROLLED_BACK, rollback_note.clone())),
            None if insufficient => Some((
                reason::INSUFFICIENT_REPLICAS,
                format!("only {} of {} replicas available", o.available, o.desired),
            )),
            None => None,
        };
        Self {
            ready: complete && !running_differs,
            progressing: !complete && failure.is_none(),
            running_differs,
            failure,
            degraded,
            good,
            rollback_note,
        }
    }

    /// Ready, Progressing and Degraded.
    fn conditions(&self, input: &Input<'_>) -> [Desired<'static>; 3] {
        let o = input.observed;
        let (ready_reason, ready_message) = if self.ready {
            (
                reason::AVAILABLE,
                format!(
                    "{} of {} replicas available at version {}",
                    o.available, o.desired, input.target
                ),
            )
        } else if self.running_differs {
            (reason::ROLLED_BACK, self.rollback_note.clone())
        } else if let Some((_, message)) = self.failure {
            (reason::ROLLOUT_FAILED, message.to_string())
        } else {
            (
                reason::ROLLOUT_IN_PROGRESS,
                format!(
                    "{} of {} replicas available, {} at version {}",
                    o.available, o.desired, o.updated, input.target
                ),
            )
        };
        let progressing_reason = match (self.progressing, self.failure.is_some()) {
            (true, _) if self.running_differs => reason::ROLLING_BACK,
            (true, _) if input.upgrading() => reason::NEW_VERSION,
            (true, _) => reason::SCALING,
            (false, true) => reason::ROLLOUT_FAILED,
            (false, false) => reason::ROLLOUT_COMPLETE,
        };
        let (degraded_reason, degraded_message) = self
            .degraded
            .clone()
            .unwrap_or((reason::HEALTHY, String::new()));
        [
            Desired {
                type_: condition::READY,
                status: self.ready,
                reason: ready_reason,
                message: ready_message,
            },
            Desired {
                type_: condition::PROGRESSING,
                status: self.progressing,
                reason: progressing_reason,
                message: format!("target version {}", input.target),
            },
            Desired {
                type_: condition::DEGRADED,
                status: self.degraded.is_some(),
                reason: degraded_reason,
                message: degraded_message,
            },
        ]
    }
}

/// RolledBack: set by a rollback, cleared once spec.version runs again.
fn set_rolled_back(
    s: &mut WorkloadStatus,
    input: &Input<'_>,
    rolled_back: Option<(&'static str, &str)>,
    health: &Health<'_>,
) {
    let desired = if let Some((reason, message)) = rolled_back {
        Desired {
            type_: condition::ROLLED_BACK,
            status: true,
            reason,
            message: format!(
                "{message}; rolled back to {}, spec.version still says {}",
                health.good, input.spec_version
            ),
        }
    } else if !health.running_differs && conditions::is_true(&s.conditions, condition::ROLLED_BACK)
    {
        Desired {
            type_: condition::ROLLED_BACK,
            status: false,
            reason: reason::NEW_VERSION_SPECIFIED,
            message: format!("running spec.version {}", input.spec_version),
        }
    } else {
        return;
    };
    conditions::set(&mut s.conditions, desired, input.generation, input.now);
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
mod tests;
