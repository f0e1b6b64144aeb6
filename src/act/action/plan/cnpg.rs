//! Planners for CloudNativePG Clusters: PostgreSQL parameters, switchover,
//! on-demand backup. How each is done follows `../shared/OPERATORS.md`.
//!
//! Pure; each takes the [`PlanCtx`] whose target kind was already checked.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::PlanCtx;
use crate::act::action::{
    Change, Error, Move, Planned, Subresource,
    cnpg::{CNPG_FORBIDDEN_PARAMETERS, needs_restart},
    kind_info,
};
use crate::decide::api::parse_pg_bytes;

/// `spec.postgresql.parameters`: refuses what CNPG forbids; disruptive when
/// a changed parameter needs a restart; memory sizes move in bytes.
pub fn plan_set_postgres_parameters(
    ctx: &PlanCtx,
    parameters: &BTreeMap<String, String>,
) -> Result<Planned, Error> {
    if let Some(p) = parameters
        .keys()
        .find(|p| CNPG_FORBIDDEN_PARAMETERS.contains(&p.as_str()))
    {
        return Err(Error::PlanForbiddenParameter {
            parameter: p.clone(),
        });
    }
    let spec = ctx.spec();
    if spec.is_null() {
        return Err(ctx.missing("spec"));
    }
    let current = &spec["postgresql"]["parameters"];
    let changed: Vec<_> = parameters
        .iter()
        .filter(|(k, v)| current.get(k.as_str()).and_then(Value::as_str) != Some(v.as_str()))
        .collect();
    if changed.is_empty() {
        return Err(ctx.no_change("parameters already set"));
    }
    let moves = changed
        .iter()
        .filter_map(|(k, v)| {
            let old = current.get(k.as_str())?.as_str()?;
            let (from, to) = match (parse_pg_bytes(old), parse_pg_bytes(v)) {
                (Some(a), Some(b)) => (a as f64, b as f64),
                _ => (old.parse().ok()?, v.parse().ok()?),
            };
            Some(Move {
                field: format!("spec.postgresql.parameters.{k}"),
                from,
                to,
            })
        })
        .collect();
    let disruptive = changed.iter().any(|(k, _)| needs_restart(k));
    Ok(ctx.reversible(
        json!({"spec": {"postgresql": {"parameters": parameters}}}),
        disruptive,
        moves,
    ))
}

/// A status patch moving `targetPrimary` to a healthy replica (what `kubectl
/// cnpg promote` does); its inverse moves it back to the current primary.
pub fn plan_switchover(ctx: &PlanCtx, instance: &str) -> Result<Planned, Error> {
    let refuse = |reason: String| Error::PlanSwitchover { reason };
    let status = ctx.status();
    let primary = status["currentPrimary"]
        .as_str()
        .ok_or_else(|| ctx.missing("status.currentPrimary"))?;
    if primary == instance {
        return Err(refuse(format!("{instance} is already the primary")));
    }
    if status["targetPrimary"]
        .as_str()
        .is_some_and(|t| t != primary)
    {
        return Err(refuse(
            "a switchover or failover is already in progress".into(),
        ));
    }
    let healthy = status["instancesStatus"]["healthy"]
        .as_array()
        .ok_or_else(|| ctx.missing("status.instancesStatus.healthy"))?;
    if !healthy.iter().any(|h| h == instance) {
        return Err(refuse(format!("{instance} is not a healthy instance")));
    }
    let switch = |to: &str| {
        ctx.merge_change(
            Subresource::Status,
            json!({"status": {
                "targetPrimary": to,
                "targetPrimaryTimestamp": ctx.now_rfc3339(),
                "phase": "Switchover in progress",
                "phaseReason": format!("Switching over to {to}"),
            }}),
        )
    };
    Ok(Planned {
        change: switch(instance),
        inverse: Some(switch(primary)),
        disruptive: true,
        moves: vec![],
    })
}

/// A new `Backup` of the Cluster, by the method its configuration allows: a
/// WAL-archiver plugin, volume snapshots, or the Barman object store.
pub fn plan_backup(ctx: &PlanCtx) -> Result<Planned, Error> {
    let spec = ctx.spec();
    let backup = &spec["backup"];
    let plugin = spec["plugins"]
        .as_array()
        .and_then(|ps| {
            ps.iter().find(|p| {
                p["isWALArchiver"] == true
                    || p["name"]
                        .as_str()
                        .is_some_and(|n| n.contains("barman-cloud"))
            })
        })
        .and_then(|p| p["name"].as_str());
    let target = ctx.target;
    let mut backup_spec = json!({"cluster": {"name": target.name}});
    if let Some(plugin) = plugin {
        backup_spec["method"] = "plugin".into();
        backup_spec["pluginConfiguration"] = json!({"name": plugin});
    } else if !backup["volumeSnapshot"].is_null() {
        backup_spec["method"] = "volumeSnapshot".into();
    } else if !backup["barmanObjectStore"].is_null() {
        backup_spec["method"] = "barmanObjectStore".into();
    } else {
        return Err(ctx.missing("backup configuration (spec.backup or a WAL-archiver plugin)"));
    }
    let backup_kind = kind_info("Backup").ok_or_else(|| ctx.unsupported())?;
    let now = ctx.now;
    Ok(ctx.one_shot(
        Change::Create {
            object: json!({
                "apiVersion": backup_kind.api_version(),
                "kind": "Backup",
                "metadata": {"name": format!("{}-autopilot-{now}", target.name), "namespace": target.namespace},
                "spec": backup_spec,
            }),
            kind: backup_kind,
        },
        false,
    ))
}
