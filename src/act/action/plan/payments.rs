//! Planners for actions on our own kinds (and Strimzi's KafkaNodePool,
//! scaled like them): replicas, autoscaling bounds, resources, rollback,
//! rolling restart.
//!
//! Pure; each takes the [`PlanCtx`] whose target kind was already checked.

use serde_json::json;

use super::PlanCtx;
use crate::act::action::{Error, Move, Planned, Subresource};
use crate::crd::common::ImageRef;

/// `spec.replicas`; refused while the HPA owns the replica count.
pub fn plan_scale_replicas(ctx: &PlanCtx, replicas: i64) -> Result<Planned, Error> {
    let spec = ctx.spec();
    if spec["autoscaling"]["enabled"] == true {
        return Err(ctx.invalid("autoscaling is enabled; change its bounds with scale_autoscaling"));
    }
    let old = spec["replicas"]
        .as_i64()
        .ok_or_else(|| ctx.missing("spec.replicas"))?;
    if old == replicas {
        return Err(ctx.no_change(format!("already {old} replicas")));
    }
    Ok(ctx.reversible(
        json!({"spec": {"replicas": replicas}}),
        replicas < old,
        vec![Move {
            field: "spec.replicas".into(),
            from: old as f64,
            to: replicas as f64,
        }],
    ))
}

/// The HPA bounds `spec.autoscaling.minReplicas/maxReplicas`; lowering
/// either is disruptive.
pub fn plan_scale_autoscaling(
    ctx: &PlanCtx,
    min_replicas: i64,
    max_replicas: i64,
) -> Result<Planned, Error> {
    let a = &ctx.spec()["autoscaling"];
    let old_min = a["minReplicas"]
        .as_i64()
        .ok_or_else(|| ctx.missing("spec.autoscaling.minReplicas"))?;
    let old_max = a["maxReplicas"]
        .as_i64()
        .ok_or_else(|| ctx.missing("spec.autoscaling.maxReplicas"))?;
    if (old_min, old_max) == (min_replicas, max_replicas) {
        return Err(ctx.no_change("bounds unchanged"));
    }
    Ok(ctx.reversible(
        json!({"spec": {"autoscaling": {"minReplicas": min_replicas, "maxReplicas": max_replicas}}}),
        max_replicas < old_max || min_replicas < old_min,
        vec![
            Move {
                field: "spec.autoscaling.minReplicas".into(),
                from: old_min as f64,
                to: min_replicas as f64,
            },
            Move {
                field: "spec.autoscaling.maxReplicas".into(),
                from: old_max as f64,
                to: max_replicas as f64,
            },
        ],
    ))
}

/// `spec.resources` (requests/limits).
pub fn plan_set_resources(ctx: &PlanCtx, resources: &serde_json::Value) -> Result<Planned, Error> {
    if ctx.spec().is_null() {
        return Err(ctx.missing("spec"));
    }
    // New pods roll: disruptive.
    Ok(ctx.reversible(json!({"spec": {"resources": resources}}), true, vec![]))
}

/// `spec.version` back to `status.lastGoodVersion`, which must be
/// `to_version`: a runbook cannot roll to a version never seen healthy.
pub fn plan_rollback(ctx: &PlanCtx, to_version: &str) -> Result<Planned, Error> {
    let good = ctx.status()["lastGoodVersion"]
        .as_str()
        .ok_or_else(|| ctx.missing("status.lastGoodVersion"))?;
    if good != to_version {
        return Err(ctx.invalid(format!(
            "{to_version} is not the last good version ({good})"
        )));
    }
    let current = ctx.spec()["version"]
        .as_str()
        .ok_or_else(|| ctx.missing("spec.version"))?;
    if current == to_version {
        return Err(ctx.no_change(format!("already at {current}")));
    }
    // An image that names its tag (or digest) must move with the version,
    // or admission refuses the patch (the tag must be the version).
    let image = ctx.spec()["image"].as_str().map(ImageRef::parse);
    let patch = match image {
        Some(i) if i.tag.is_some() || i.digest.is_some() => json!({"spec": {
            "version": to_version,
            "image": i.for_version(current, to_version),
        }}),
        _ => json!({"spec": {"version": to_version}}),
    };
    Ok(ctx.reversible(patch, true, vec![]))
}

/// The `kubectl.kubernetes.io/restartedAt` annotation (what `kubectl
/// rollout restart` sets; CloudNativePG honours it on a Cluster too).
pub fn plan_rolling_restart(ctx: &PlanCtx) -> Result<Planned, Error> {
    Ok(ctx.one_shot(
        ctx.merge_change(
            Subresource::Main,
            json!({"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": ctx.now_rfc3339()}}}),
        ),
        true,
    ))
}
