//! The reconcile driver shared by the Deployment-backed kinds
//! (PaymentGateway, ClearingAdapter, SagaOrchestrator): fetch, validate, plan,
//! apply, judge the rollout, roll back when it failed, compute and write status.

use std::{collections::HashMap, sync::Arc, time::Instant};

use k8s_openapi::{api::apps::v1::Deployment, jiff::Timestamp};
use kube::{Resource, ResourceExt, core::NamespaceResourceScope, runtime::controller::Action};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::{
    Context, Error, Facts, Invalid,
    conditions::{self, Desired},
    objects::{self, Identity},
    requeue,
    rollout::{self, EventIntent, Input, Judgement, Observed},
};
use crate::{
    act::{self, OwnedObjects},
    crd::{Phase, WorkloadStatus, common::UpgradePolicy, condition, reason},
};

/// Lets the anomaly detectors declare a running upgrade unhealthy, which
/// fails the rollout and triggers the rollback just like a missed progress
/// deadline.
pub trait UpgradeGate: Send + Sync {
    /// `Some(reason)` when the rollout of `version` of this resource is judged unhealthy.
    fn verdict(&self, kind: &str, namespace: &str, name: &str, version: &str) -> Option<String>;
}

/// The gate that never objects.
pub struct NoGate;

impl UpgradeGate for NoGate {
    fn verdict(&self, _: &str, _: &str, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// Verdicts set from outside (the detection loop, or a test), keyed by
/// kind, namespace, name and version.
#[derive(Default)]
pub struct SharedVerdicts(std::sync::RwLock<HashMap<(String, String, String, String), String>>);

impl SharedVerdicts {
    pub fn declare_unhealthy(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        version: &str,
        reason: &str,
    ) {
        if let Ok(mut m) = self.0.write() {
            m.insert(
                (kind.into(), namespace.into(), name.into(), version.into()),
                reason.into(),
            );
        }
    }
}

impl UpgradeGate for SharedVerdicts {
    fn verdict(&self, kind: &str, namespace: &str, name: &str, version: &str) -> Option<String> {
        let m = self.0.read().ok()?;
        m.get(&(kind.into(), namespace.into(), name.into(), version.into()))
            .cloned()
    }
}

/// What the driver needs of a Deployment-backed kind.
pub trait WorkloadKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// `app.kubernetes.io/name` of its pods.
    const COMPONENT: &'static str;
    /// Whether the plan may include a ServiceMonitor (so the served check is needed).
    const MAY_OWN_SERVICE_MONITOR: bool = false;

    /// The spec once checked: only `validate` builds it, and `plan` takes
    /// nothing else, so nothing is planned from an unchecked spec.
    type Validated<'a>: Send + Sync
    where
        Self: 'a;

    fn spec_version(&self) -> &str;
    fn upgrade_policy(&self) -> &UpgradePolicy;
    fn workload_status(&self) -> WorkloadStatus;
    /// Checks the schema cannot express.
    fn validate(&self) -> Result<Self::Validated<'_>, Invalid>;
    /// The owned objects running `target`.
    fn plan(
        v: &Self::Validated<'_>,
        id: &Identity,
        facts: &Facts,
        target: &str,
    ) -> Result<OwnedObjects, objects::Error>;
    /// Conditions beyond the rollout's (e.g. `Monitoring`).
    fn extra_conditions(&self, _facts: &Facts) -> Vec<Desired<'static>> {
        Vec::new()
    }
    /// The full status object to write.
    fn status_json(&self, status: &WorkloadStatus, _now: Timestamp) -> Value {
        serde_json::to_value(status).unwrap_or_default()
    }
}

pub async fn reconcile<K: WorkloadKind>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let kind = K::kind(&()).to_string();
    let result = reconcile_inner(obj.as_ref(), &ctx).await;
    ctx.metrics
        .duration
        .with_label_values(&[&kind])
        .observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok(_) => {
            ctx.backoff.succeeded(&super::backoff::key_of(obj.as_ref()));
            "ok"
        }
        // Counted (and the delay chosen) in `error_policy`.
        Err(_) => "error",
    };
    ctx.metrics
        .reconciles
        .with_label_values(&[&kind, label])
        .inc();
    result
}

#[tracing::instrument(skip_all, fields(kind = %K::kind(&()), namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
async fn reconcile_inner<K: WorkloadKind>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let now = Timestamp::now();
    let previous = obj.workload_status();
    let generation = obj.meta().generation;

    // validate
    let validated = match obj.validate() {
        Ok(v) => v,
        Err(invalid) => {
            let status = compute_invalid_status(&previous, &invalid, generation, now);
            let events = vec![EventIntent {
                warning: true,
                reason: reason::INVALID_SPEC,
                note: invalid.to_string(),
            }];
            write_status(ctx, obj, &previous, &status, &events, now).await?;
            tracing::warn!(%invalid, "spec rejected; waiting for a change");
            return Ok(Action::await_change());
        }
    };

    // fetch
    let facts = fetch_facts(obj, ctx).await?;
    let id = Identity {
        component: K::COMPONENT,
        name: obj.name_any(),
        namespace: obj.namespace().unwrap_or_default(),
        owner: obj
            .controller_owner_ref(&())
            .ok_or(objects::Error::MissingOwnerUid)?,
    };

    // plan → apply
    let spec_version = obj.spec_version();
    let target = rollout::target_version(spec_version, &previous).to_string();
    let applied = apply_version::<K>(ctx, &validated, &id, &facts, &target).await?;
    let Some(deployment) = &applied.deployment else {
        // The Deployment is someone else's, or held back because what it
        // would run on is: there is no rollout of ours to judge or roll back.
        let (status, events) = compute_conflict_status(&previous, &applied, generation, now);
        write_status(ctx, obj, &previous, &status, &events, now).await?;
        return Ok(requeue(ctx, true));
    };
    let observed = Observed::from_deployment(deployment);

    // judge the rollout; roll back when it failed
    let upgrading = previous.current_version.as_deref() != Some(target.as_str());
    let gate = if upgrading && target == spec_version {
        ctx.gate
            .verdict(&K::kind(&()), &id.namespace, &id.name, &target)
    } else {
        None
    };
    let input = Input {
        spec_version,
        target: &target,
        policy: obj.upgrade_policy(),
        previous: &previous,
        generation,
        observed: &observed,
        gate: gate.as_deref(),
        now,
    };
    let judgement = rollout::judge(&input);
    let target_back = match rollout::rollback_target(&input, &judgement) {
        Some(good) => match ctx.rollback_held(obj).await {
            Some(why) => {
                tracing::warn!(from = %target, to = %good, %why, "rollout failed; rollback held");
                let note = format!("rollout of {target} failed; rollback to {good} held: {why}");
                act::publish_event(&ctx.recorder, obj, true, reason::ROLLBACK_HELD, note).await;
                None
            }
            None => Some(good),
        },
        None => None,
    };
    let (mut status, mut events) = match (target_back, &judgement) {
        (Some(good), Judgement::Failed { reason, message }) => {
            tracing::warn!(from = %target, to = %good, reason, "rollout failed; rolling back");
            ctx.metrics
                .rollbacks
                .with_label_values(&[K::kind(&()).as_ref(), reason])
                .inc();
            let back_applied = apply_version::<K>(ctx, &validated, &id, &facts, good).await?;
            let observed = back_applied
                .deployment
                .as_ref()
                .map(Observed::from_deployment)
                .unwrap_or_default();
            let back = Input {
                target: good,
                observed: &observed,
                gate: None,
                ..input.clone()
            };
            rollout::compute_status(&back, &rollout::judge(&back), Some((reason, message)))
        }
        _ => rollout::compute_status(&input, &judgement, None),
    };
    for c in obj.extra_conditions(&facts) {
        conditions::set(&mut status.conditions, c, generation, now);
    }
    // The Deployment is ours, but another object of our names is not.
    if let Some(e) = conditions::set_conflicts(
        &mut status.conditions,
        &previous.conditions,
        &applied.conflicts,
        &applied.held,
        false,
        generation,
        now,
    ) {
        status.phase = Phase::Degraded;
        events.push(e);
    } else if !applied.conflicts.is_empty() {
        status.phase = Phase::Degraded;
    }
    write_status(ctx, obj, &previous, &status, &events, now).await?;
    let next = next_reconcile(ctx, &status, obj.upgrade_policy(), now);
    // A foreign object wakes no watch of ours when it goes: look again soon.
    Ok(if applied.conflicts.is_empty() {
        next
    } else {
        requeue(ctx, true)
    })
}

/// Status when the Deployment could not be applied because an object of our
/// names is someone else's: the rollout state is kept as it was, the
/// conditions say which object and whose, and the phase is `Failed` (the
/// resource cannot be realised until the name is free). The Event is the
/// conflict's, when it is new.
pub fn compute_conflict_status(
    previous: &WorkloadStatus,
    applied: &act::Applied,
    generation: Option<i64>,
    now: Timestamp,
) -> (WorkloadStatus, Vec<EventIntent>) {
    let mut s = previous.clone();
    s.phase = Phase::Failed;
    s.observed_generation = generation;
    let event = conditions::set_conflicts(
        &mut s.conditions,
        &previous.conditions,
        &applied.conflicts,
        &applied.held,
        true,
        generation,
        now,
    );
    (s, event.into_iter().collect())
}

/// What the plan needs to know of the cluster: the live replica count (kept
/// while an HPA scales) and whether ServiceMonitor is served.
async fn fetch_facts<K: WorkloadKind>(obj: &K, ctx: &Context) -> Result<Facts, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    // The watch's cache when it has been filled; the API server otherwise.
    let live_replicas = match ctx.owned.deployment(&namespace, &name) {
        Some(cached) => cached.and_then(|d| d.spec.as_ref().and_then(|s| s.replicas)),
        None => ctx
            .api::<Deployment>(&namespace)
            .get_opt(&name)
            .await
            .map_err(|source| Error::Fetch {
                what: "the live Deployment",
                source,
            })?
            .and_then(|d| d.spec)
            .and_then(|s| s.replicas),
    };
    Ok(Facts {
        service_monitor_served: K::MAY_OWN_SERVICE_MONITOR && ctx.service_monitor_served().await?,
        live_replicas,
    })
}

/// Leaves out the delete of an HPA the watch's cache shows absent: nothing
/// to delete, and no request to learn it. (Should one appear later, its
/// watch event wakes the reconciler, which then deletes it.)
fn skip_known_absent(ctx: &Context, id: &Identity, mut owned: OwnedObjects) -> OwnedObjects {
    if owned.hpa == act::Desired::Absent
        && matches!(ctx.owned.hpa(&id.namespace, &id.name), Some(None))
    {
        owned.hpa = act::Desired::Unmanaged;
    }
    owned
}

/// Applies the owned objects running `version`: the Deployment the API
/// server returned (the rollout is read from it), or none when it is not
/// ours to apply, and the conflicts met.
async fn apply_version<K: WorkloadKind>(
    ctx: &Context,
    validated: &K::Validated<'_>,
    id: &Identity,
    facts: &Facts,
    version: &str,
) -> Result<act::Applied, Error> {
    let kind = K::kind(&());
    let plan = skip_known_absent(ctx, id, K::plan(validated, id, facts, version)?);
    let digest = plan.digest();
    if let Some(deployment) = unchanged_deployment(ctx, &kind, id, &plan, digest) {
        ctx.metrics
            .applies_skipped
            .with_label_values(&[kind.as_ref()])
            .inc();
        return Ok(act::Applied {
            deployment: Some(deployment),
            ..Default::default()
        });
    }
    let epoch = ctx.plans.begin(&kind, &id.namespace, &id.name);
    let applied =
        act::apply_owned(&ctx.client, &id.namespace, &id.name, &id.owner.uid, plan).await?;
    ctx.metrics
        .writes
        .with_label_values(&[kind.as_ref()])
        .inc_by(applied.writes as u64);
    if applied.conflicts.is_empty() && applied.held.is_empty() {
        ctx.plans
            .remember(&kind, &id.namespace, &id.name, epoch, digest);
    }
    Ok(applied)
}

/// The live Deployment from the watch's store, when `plan` (digest
/// `digest`) is the one last applied in full to this resource and nothing
/// but status has been written to its objects since (`watch::AppliedPlans`):
/// a reconcile woken by a rollout's progress reads it there instead of
/// applying every object again. `None` (apply) for a plan with a CronJob or
/// Job, whose applied objects the status needs, or a Deployment the store
/// does not hold as ours.
fn unchanged_deployment(
    ctx: &Context,
    kind: &str,
    id: &Identity,
    plan: &act::OwnedObjects,
    digest: u64,
) -> Option<Deployment> {
    let needs_applied = matches!(plan.cron_job, act::Desired::Apply(_))
        || matches!(plan.job, act::Desired::Apply(_))
        || !matches!(plan.deployment, act::Desired::Apply(_));
    if needs_applied
        || !ctx.plans.unchanged(
            kind,
            &id.namespace,
            &id.name,
            digest,
            // A second short of the resync, so the resync's own timer
            // always finds the plan too old and applies it in full.
            ctx.settings
                .resync_interval
                .saturating_sub(std::time::Duration::from_secs(1)),
        )
    {
        return None;
    }
    let live = ctx.owned.deployment(&id.namespace, &id.name)??;
    matches!(
        act::judge_ownership(Some(live.meta()), &id.owner.uid),
        act::Ownership::Ours { .. }
    )
    .then(|| live.as_ref().clone())
}

/// When to look again. Deployment status changes (progress, readiness, the
/// progress deadline) wake this reconciler through the owned-object watch;
/// the timers only cover what no watch reports: the unavailability
/// tolerance running out, a soak ending, and a fallback poll while a rollout is in
/// progress. Only an upgrade from a known good version can be failed by the
/// gate and rolled back, so only that is polled; first rollouts and scaling
/// rely on the watches alone (polling them all starves new resources at scale).
fn next_reconcile(
    ctx: &Context,
    status: &WorkloadStatus,
    policy: &UpgradePolicy,
    now: Timestamp,
) -> Action {
    let busy = conditions::is_true(&status.conditions, condition::PROGRESSING)
        && status.last_good_version.is_some();
    let mut wait = if busy {
        ctx.settings.progress_interval
    } else {
        ctx.settings.resync_interval
    };
    if let Some(at_expiry) = status
        .below_minimum_since
        .as_ref()
        .and_then(|since| tolerance_timer(since.0, policy.unavailable_tolerance_seconds, now))
        && (at_expiry < ctx.settings.progress_interval || !busy)
    {
        wait = at_expiry.min(ctx.settings.resync_interval);
    }
    // A soaking version becomes the last good one when its soak ends: wake
    // then rather than poll (no watch reports time passing).
    if let Some(at_end) = rollout::soak_timer(status, policy, now) {
        wait = wait.min(at_end);
    }
    Action::requeue(wait)
}

/// When to wake for the unavailability tolerance running out: a second
/// after it does, or `None` once it has (the reconcile after expiry judged
/// it; a timer then would requeue every second for as long as the pods stay
/// down, and at scale those resources starve the new ones of workers).
fn tolerance_timer(
    since: Timestamp,
    tolerance_seconds: i32,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let expiry = since.as_second() + i64::from(tolerance_seconds);
    let left = expiry - now.as_second();
    (left >= 0).then(|| std::time::Duration::from_secs(left as u64 + 1))
}

/// Status of a resource whose spec cannot be realised: nothing is applied.
pub fn compute_invalid_status(
    previous: &WorkloadStatus,
    invalid: &Invalid,
    generation: Option<i64>,
    now: Timestamp,
) -> WorkloadStatus {
    let mut s = previous.clone();
    s.phase = Phase::Failed;
    s.observed_generation = generation;
    conditions::set_invalid(&mut s.conditions, invalid, generation, now);
    s
}

/// Writes status only when it changed (timestamps aside), then publishes Events.
async fn write_status<K: WorkloadKind>(
    ctx: &Context,
    obj: &K,
    previous: &WorkloadStatus,
    status: &WorkloadStatus,
    events: &[EventIntent],
    now: Timestamp,
) -> Result<(), Error> {
    let new = obj.status_json(status, now);
    let current = serde_json::to_value(obj)
        .ok()
        .map(|v| v["status"].clone())
        .unwrap_or_default();
    if !same_status(&current, &new) {
        act::apply_status(&ctx.client, obj, new).await?;
    }
    // An event per phase change or rollback, not per reconcile; invalid specs
    // report once per generation (the status change above shows a new one).
    let changed = previous.phase != status.phase
        || previous.observed_generation != status.observed_generation;
    for e in events {
        if e.reason != reason::INVALID_SPEC || changed {
            act::publish_event(&ctx.recorder, obj, e.warning, e.reason, e.note.clone()).await;
        }
    }
    Ok(())
}

/// Status equality ignoring the conditions' `lastTransitionTime`.
pub fn same_status(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in cs.iter_mut() {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastTransitionTime");
                }
            }
            cs.sort_by(|x, y| x["type"].as_str().cmp(&y["type"].as_str()));
        }
        v
    }
    strip(a) == strip(b)
}

pub fn error_policy<K: WorkloadKind>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .failures
        .with_label_values(&[K::kind(&()).as_ref(), error.kind()])
        .inc();
    let delay = ctx.backoff.failed(&super::backoff::key_of(obj.as_ref()));
    tracing::warn!(
        kind = %K::kind(&()), namespace = obj.namespace().unwrap_or_default(), name = obj.name_any(),
        error = %error, source = ?std::error::Error::source(error), retry_in = ?delay, "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

#[cfg(test)]
mod tolerance_tests {
    use super::*;

    #[test]
    fn the_tolerance_timer_fires_once_after_expiry_and_not_again() {
        let since = Timestamp::from_second(1_000).expect("ts");
        let at = |s: i64| Timestamp::from_second(s).expect("ts");
        let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs());
        assert_eq!(secs(tolerance_timer(since, 300, at(1_000))), Some(301));
        assert_eq!(secs(tolerance_timer(since, 300, at(1_299))), Some(2));
        assert_eq!(secs(tolerance_timer(since, 300, at(1_300))), Some(1));
        // Past expiry: judged already; no 1 s requeue loop.
        assert_eq!(tolerance_timer(since, 300, at(1_301)), None);
        assert_eq!(tolerance_timer(since, 300, at(9_999)), None);
    }
}
