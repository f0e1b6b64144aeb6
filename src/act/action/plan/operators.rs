//! Planners for the other operators' kinds: cert-manager renewal, External
//! Secrets refresh, Istio traffic shift, Argo CD sync pause, Redis
//! Enterprise scaling. How each is done follows `../shared/OPERATORS.md`.
//!
//! Pure; each takes the [`PlanCtx`] whose target kind was already checked.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::PlanCtx;
use crate::act::action::{Error, Move, Planned, Subresource};

/// cert-manager: condition `Issuing=True`, reason `ManuallyTriggered` (what
/// `cmctl renew` does); nothing while it is already issuing.
pub fn plan_renew_certificate(ctx: &PlanCtx) -> Result<Planned, Error> {
    let mut conditions: Vec<Value> = ctx.status()["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c["type"] == "Issuing" && c["status"] == "True")
    {
        return Err(ctx.no_change("already issuing"));
    }
    conditions.retain(|c| c["type"] != "Issuing");
    let mut issuing = json!({
        "type": "Issuing",
        "status": "True",
        "reason": "ManuallyTriggered",
        "message": "Certificate re-issuance manually triggered",
        "lastTransitionTime": ctx.now_rfc3339(),
    });
    if let Some(g) = ctx.object["metadata"]["generation"].as_i64() {
        issuing["observedGeneration"] = g.into();
    }
    conditions.push(issuing);
    Ok(ctx.one_shot(
        ctx.merge_change(
            Subresource::Status,
            json!({"status": {"conditions": conditions}}),
        ),
        false,
    ))
}

/// External Secrets: the `force-sync` annotation set to `now`.
pub fn plan_refresh_external_secret(ctx: &PlanCtx) -> Result<Planned, Error> {
    if ctx.spec()["refreshPolicy"] == "CreatedOnce" {
        return Err(ctx.invalid("refreshPolicy CreatedOnce ignores forced refreshes"));
    }
    Ok(ctx.one_shot(
        ctx.merge_change(
            Subresource::Main,
            json!({"metadata": {"annotations": {"force-sync": ctx.now.to_string()}}}),
        ),
        false,
    ))
}

/// Istio: new weights of `spec.http[route].route[*]`. Every destination
/// (by subset, else host) must be given a weight and every weight must name
/// a destination, so a shift never silently leaves traffic where it was.
pub fn plan_shift_traffic(
    ctx: &PlanCtx,
    route: i64,
    weights: &BTreeMap<String, i64>,
) -> Result<Planned, Error> {
    let mut http = ctx.spec()["http"]
        .as_array()
        .cloned()
        .ok_or_else(|| ctx.missing("spec.http"))?;
    let idx = usize::try_from(route).unwrap_or(usize::MAX);
    let destinations = http
        .get_mut(idx)
        .and_then(|r| r["route"].as_array_mut())
        .ok_or_else(|| ctx.missing(&format!("spec.http[{route}].route")))?;
    let mut seen = BTreeSet::new();
    let mut moves = Vec::new();
    for d in destinations.iter_mut() {
        let key = d["destination"]["subset"]
            .as_str()
            .or_else(|| d["destination"]["host"].as_str())
            .unwrap_or_default()
            .to_string();
        let Some(w) = weights.get(&key) else {
            return Err(ctx.invalid(format!("no weight given for destination {key:?}")));
        };
        let old = d["weight"].as_i64().unwrap_or(0);
        moves.push(Move {
            field: format!("weight.{key}"),
            from: old as f64,
            to: *w as f64,
        });
        d["weight"] = json!(w);
        seen.insert(key);
    }
    if let Some(extra) = weights.keys().find(|k| !seen.contains(*k)) {
        return Err(ctx.invalid(format!("route has no destination {extra:?}")));
    }
    if moves.iter().all(|m| m.from == m.to) {
        return Err(ctx.no_change("weights unchanged"));
    }
    Ok(ctx.reversible(json!({"spec": {"http": http}}), false, moves))
}

/// Argo CD: remove `spec.syncPolicy.automated`; the inverse restores it.
pub fn plan_pause_sync(ctx: &PlanCtx) -> Result<Planned, Error> {
    if ctx.spec()["syncPolicy"]["automated"].is_null() {
        return Err(ctx.no_change("automated sync is already off"));
    }
    Ok(ctx.reversible(
        json!({"spec": {"syncPolicy": {"automated": null}}}),
        false,
        vec![],
    ))
}

/// Redis Enterprise: a cluster scales by `nodes` only (disruptive), a
/// database by `memorySize` and/or `shardCount`.
pub fn plan_scale_redis(
    ctx: &PlanCtx,
    nodes: Option<i64>,
    memory_size: Option<&str>,
    shard_count: Option<i64>,
) -> Result<Planned, Error> {
    let spec = ctx.spec();
    let mut spec_patch = serde_json::Map::new();
    let mut moves = Vec::new();
    let disruptive;
    if ctx.is("RedisEnterpriseCluster") {
        let (Some(n), None, None) = (nodes, memory_size, shard_count) else {
            return Err(ctx.invalid("a RedisEnterpriseCluster scales by nodes only"));
        };
        let old = spec["nodes"]
            .as_i64()
            .ok_or_else(|| ctx.missing("spec.nodes"))?;
        moves.push(Move {
            field: "spec.nodes".into(),
            from: old as f64,
            to: n as f64,
        });
        spec_patch.insert("nodes".into(), json!(n));
        disruptive = true;
    } else if ctx.is("RedisEnterpriseDatabase") {
        if nodes.is_some() || (memory_size.is_none() && shard_count.is_none()) {
            return Err(
                ctx.invalid("a RedisEnterpriseDatabase scales by memory_size and/or shard_count")
            );
        }
        if let Some(m) = memory_size {
            let old = spec["memorySize"]
                .as_str()
                .ok_or_else(|| ctx.missing("spec.memorySize"))?;
            if let (Some(a), Some(b)) = (redis_bytes(old), redis_bytes(m)) {
                moves.push(Move {
                    field: "spec.memorySize".into(),
                    from: a,
                    to: b,
                });
            }
            spec_patch.insert("memorySize".into(), json!(m));
        }
        if let Some(s) = shard_count {
            let old = spec["shardCount"].as_i64().unwrap_or(1);
            moves.push(Move {
                field: "spec.shardCount".into(),
                from: old as f64,
                to: s as f64,
            });
            spec_patch.insert("shardCount".into(), json!(s));
        }
        disruptive = false;
    } else {
        // Unreachable while ActionKind::ScaleRedis targets only these two.
        return Err(ctx.unsupported());
    }
    Ok(ctx.reversible(json!({"spec": spec_patch}), disruptive, moves))
}

/// Redis Enterprise memory sizes (`100MB`, `2GB`) in bytes.
fn redis_bytes(s: &str) -> Option<f64> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let mult = match unit.trim().trim_end_matches('i') {
        "" | "B" => 1.0,
        "KB" | "K" => 1024.0,
        "MB" | "M" => 1024.0 * 1024.0,
        "GB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "TB" | "T" => 1024f64.powi(4),
        _ => return None,
    };
    Some(n * mult)
}
