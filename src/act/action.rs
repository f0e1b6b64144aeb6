//! Typed actions → patches (pure). For each action kind: the target kinds it
//! accepts, the change it sends, the inverse that undoes it, whether it is
//! disruptive, how far it moves a value (for the cap guard) and the RBAC it
//! needs. How each operator is acted on follows `../shared/OPERATORS.md`.
//!
//! Pure: takes the action, the target object as read, and `now`; returns a
//! [`Planned`] change. Never talks to the API server.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::decide::Action;

/// Annotation put on every object the agent patches, naming the journal
/// entry of the last action — how a restart tells "sent" from "not sent".
pub const ACTION_ID_ANNOTATION: &str = "autopilot.payments.io/action-id";

pub use crate::kinds::{KindInfo, RbacRule, kind_info};

/// Names of our own kinds, for the actions that accept any of them.
fn payments_kinds() -> Vec<&'static str> {
    crate::kinds::payments_kind_names().collect()
}

/// Which part of the object a change goes to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Subresource {
    Main,
    Status,
}

/// One write, as journaled and sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A JSON merge patch of the object (or its status), sent with the
    /// resourceVersion it was computed from (optimistic locking).
    Merge {
        kind: KindInfo,
        namespace: String,
        name: String,
        subresource: Subresource,
        patch: Value,
    },
    /// A new object (an on-demand Backup).
    Create { kind: KindInfo, object: Value },
}

impl Change {
    pub fn kind(&self) -> &KindInfo {
        match self {
            Change::Merge { kind, .. } | Change::Create { kind, .. } => kind,
        }
    }
}

/// How far an action moves one numeric value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Move {
    pub field: String,
    pub from: f64,
    pub to: f64,
}

/// A planned action: the change, its inverse, and what the guards need.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Planned {
    pub change: Change,
    /// `None` when the action cannot be undone (restart, renewal, refresh, backup).
    pub inverse: Option<Change>,
    pub disruptive: bool,
    pub moves: Vec<Move>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} cannot act on a {kind}")]
    PlanUnsupportedTarget { action: &'static str, kind: String },
    #[error("planning {action}: the target has no {field}")]
    PlanMissingField { action: &'static str, field: String },
    #[error("planning set_postgres_parameters: CloudNativePG does not allow setting {parameter}")]
    PlanForbiddenParameter { parameter: String },
    #[error("planning switchover: {reason}")]
    PlanSwitchover { reason: String },
    #[error("planning {action}: {reason}")]
    PlanInvalid {
        action: &'static str,
        reason: String,
    },
    #[error("planning {action}: nothing to change ({reason})")]
    PlanNoChange {
        action: &'static str,
        reason: String,
    },
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::PlanUnsupportedTarget { .. } => "unsupported_target",
            Error::PlanMissingField { .. } => "missing_field",
            Error::PlanForbiddenParameter { .. } => "forbidden_parameter",
            Error::PlanSwitchover { .. } => "switchover_refused",
            Error::PlanInvalid { .. } => "invalid_action",
            Error::PlanNoChange { .. } => "no_change",
        }
    }
}

/// Parameters CloudNativePG manages itself and rejects in
/// `spec.postgresql.parameters` (its "fixed" and "blocked" configuration
/// parameters, v1.30).
pub const CNPG_FORBIDDEN_PARAMETERS: &[&str] = &[
    "allow_alter_system",
    "allow_system_table_mods",
    "archive_cleanup_command",
    "archive_command",
    "archive_mode",
    "bonjour",
    "bonjour_name",
    "cluster_name",
    "config_file",
    "data_directory",
    "data_sync_retry",
    "event_source",
    "external_pid_file",
    "full_page_writes",
    "hba_file",
    "hot_standby",
    "ident_file",
    "jit_provider",
    "listen_addresses",
    "log_destination",
    "log_directory",
    "log_file_mode",
    "log_filename",
    "log_rotation_age",
    "log_rotation_size",
    "log_truncate_on_rotation",
    "logging_collector",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restart_after_crash",
    "restore_command",
    "shared_preload_libraries",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_ciphers",
    "ssl_crl_file",
    "ssl_dh_params_file",
    "ssl_ecdh_curve",
    "ssl_key_file",
    "ssl_max_protocol_version",
    "ssl_min_protocol_version",
    "ssl_passphrase_command",
    "ssl_passphrase_command_supports_reload",
    "ssl_prefer_server_ciphers",
    "stats_temp_directory",
    "synchronous_standby_names",
    "syslog_facility",
    "syslog_ident",
    "syslog_sequence_numbers",
    "syslog_split_messages",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "wal_level",
    "wal_log_hints",
];

/// Parameters whose change PostgreSQL applies only after a restart
/// (`context = postmaster`); CNPG then rolls the instances.
pub const PG_RESTART_PARAMETERS: &[&str] = &[
    "shared_buffers",
    "max_connections",
    "max_worker_processes",
    "max_parallel_workers",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "max_pred_locks_per_transaction",
    "max_wal_senders",
    "max_replication_slots",
    "huge_pages",
    "track_commit_timestamp",
    "wal_buffers",
    "autovacuum_max_workers",
    "max_files_per_process",
    "shared_memory_type",
    "dynamic_shared_memory_type",
];

/// Whether changing `parameter` needs a PostgreSQL restart.
pub fn needs_restart(parameter: &str) -> bool {
    PG_RESTART_PARAMETERS.contains(&parameter)
}

fn rfc3339(now: i64) -> String {
    chrono::DateTime::from_timestamp(now, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The merge patch that restores `current` where `patch` would change it:
/// keys `patch` sets that `current` lacks become `null`.
pub fn inverse_merge(patch: &Value, current: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = serde_json::Map::new();
            for (k, v) in p {
                let cur = current.get(k).unwrap_or(&Value::Null);
                let inv = if v.is_object() && cur.is_object() {
                    inverse_merge(v, cur)
                } else {
                    cur.clone()
                };
                out.insert(k.clone(), inv);
            }
            Value::Object(out)
        }
        _ => current.clone(),
    }
}

/// Applies a JSON merge patch (RFC 7386) to `target` — used to check what a
/// patch would leave behind and, after a restart, whether it was applied.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Whether every field `patch` sets already has that value in `object`
/// (`null` meaning absent).
pub fn patch_is_applied(patch: &Value, object: &Value) -> bool {
    match patch {
        Value::Object(p) => p.iter().all(|(k, v)| {
            let cur = object.get(k).unwrap_or(&Value::Null);
            if v.is_object() {
                patch_is_applied(v, cur)
            } else {
                cur == v
            }
        }),
        other => other == object,
    }
}

/// Plans `action` against the target `object` as read from the cluster.
pub fn plan_action(action: &Action, object: &Value, now: i64) -> Result<Planned, Error> {
    let name = action.name();
    let target = action.target();
    let unsupported = || Error::PlanUnsupportedTarget {
        action: name,
        kind: target.kind.clone(),
    };
    let missing = |field: &str| Error::PlanMissingField {
        action: name,
        field: field.to_string(),
    };
    let kind = kind_info(&target.kind).ok_or_else(unsupported)?;
    let is = |kinds: &[&str]| kinds.contains(&target.kind.as_str());
    let merge_change = |subresource: Subresource, patch: Value| Change::Merge {
        kind: kind.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        subresource,
        patch,
    };
    // A spec/metadata patch and the inverse computed from the object.
    let reversible = |patch: Value, disruptive: bool, moves: Vec<Move>| Planned {
        inverse: Some(merge_change(
            Subresource::Main,
            inverse_merge(&patch, object),
        )),
        change: merge_change(Subresource::Main, patch),
        disruptive,
        moves,
    };
    let spec = &object["spec"];
    let status = &object["status"];

    match action {
        Action::ScaleReplicas { replicas, .. } => {
            if !is(&[
                "PaymentGateway",
                "ClearingAdapter",
                "SagaOrchestrator",
                "KafkaNodePool",
            ]) {
                return Err(unsupported());
            }
            if spec["autoscaling"]["enabled"] == true {
                return Err(Error::PlanInvalid {
                    action: name,
                    reason: "autoscaling is enabled; change its bounds with scale_autoscaling"
                        .into(),
                });
            }
            let old = spec["replicas"]
                .as_i64()
                .ok_or_else(|| missing("spec.replicas"))?;
            if old == *replicas {
                return Err(Error::PlanNoChange {
                    action: name,
                    reason: format!("already {old} replicas"),
                });
            }
            Ok(reversible(
                json!({"spec": {"replicas": replicas}}),
                *replicas < old,
                vec![Move {
                    field: "spec.replicas".into(),
                    from: old as f64,
                    to: *replicas as f64,
                }],
            ))
        }
        Action::ScaleAutoscaling {
            min_replicas,
            max_replicas,
            ..
        } => {
            if !is(&["PaymentGateway"]) {
                return Err(unsupported());
            }
            let a = &spec["autoscaling"];
            let old_min = a["minReplicas"]
                .as_i64()
                .ok_or_else(|| missing("spec.autoscaling.minReplicas"))?;
            let old_max = a["maxReplicas"]
                .as_i64()
                .ok_or_else(|| missing("spec.autoscaling.maxReplicas"))?;
            if (old_min, old_max) == (*min_replicas, *max_replicas) {
                return Err(Error::PlanNoChange {
                    action: name,
                    reason: "bounds unchanged".into(),
                });
            }
            Ok(reversible(
                json!({"spec": {"autoscaling": {"minReplicas": min_replicas, "maxReplicas": max_replicas}}}),
                *max_replicas < old_max || *min_replicas < old_min,
                vec![
                    Move {
                        field: "spec.autoscaling.minReplicas".into(),
                        from: old_min as f64,
                        to: *min_replicas as f64,
                    },
                    Move {
                        field: "spec.autoscaling.maxReplicas".into(),
                        from: old_max as f64,
                        to: *max_replicas as f64,
                    },
                ],
            ))
        }
        Action::SetResources { resources, .. } => {
            if !is(&payments_kinds()) {
                return Err(unsupported());
            }
            if spec.is_null() {
                return Err(missing("spec"));
            }
            // New pods roll: disruptive.
            Ok(reversible(
                json!({"spec": {"resources": resources}}),
                true,
                vec![],
            ))
        }
        Action::SetPostgresParameters { parameters, .. } => {
            if !is(&["Cluster"]) {
                return Err(unsupported());
            }
            if let Some(p) = parameters
                .keys()
                .find(|p| CNPG_FORBIDDEN_PARAMETERS.contains(&p.as_str()))
            {
                return Err(Error::PlanForbiddenParameter {
                    parameter: p.clone(),
                });
            }
            if spec.is_null() {
                return Err(missing("spec"));
            }
            let current = &spec["postgresql"]["parameters"];
            let changed: Vec<_> = parameters
                .iter()
                .filter(|(k, v)| {
                    current.get(k.as_str()).and_then(Value::as_str) != Some(v.as_str())
                })
                .collect();
            if changed.is_empty() {
                return Err(Error::PlanNoChange {
                    action: name,
                    reason: "parameters already set".into(),
                });
            }
            let moves = changed
                .iter()
                .filter_map(|(k, v)| {
                    let old = current.get(k.as_str())?.as_str()?;
                    let (from, to) = match (
                        crate::decide::api::parse_pg_bytes(old),
                        crate::decide::api::parse_pg_bytes(v),
                    ) {
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
            Ok(reversible(
                json!({"spec": {"postgresql": {"parameters": parameters}}}),
                disruptive,
                moves,
            ))
        }
        Action::Switchover { instance, .. } => {
            if !is(&["Cluster"]) {
                return Err(unsupported());
            }
            let primary = status["currentPrimary"]
                .as_str()
                .ok_or_else(|| missing("status.currentPrimary"))?;
            if primary == instance {
                return Err(Error::PlanSwitchover {
                    reason: format!("{instance} is already the primary"),
                });
            }
            if status["targetPrimary"]
                .as_str()
                .is_some_and(|t| t != primary)
            {
                return Err(Error::PlanSwitchover {
                    reason: "a switchover or failover is already in progress".into(),
                });
            }
            let healthy = status["instancesStatus"]["healthy"]
                .as_array()
                .ok_or_else(|| missing("status.instancesStatus.healthy"))?;
            if !healthy.iter().any(|h| h == instance.as_str()) {
                return Err(Error::PlanSwitchover {
                    reason: format!("{instance} is not a healthy instance"),
                });
            }
            let switch = |to: &str| {
                merge_change(
                    Subresource::Status,
                    json!({"status": {
                        "targetPrimary": to,
                        "targetPrimaryTimestamp": rfc3339(now),
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
        Action::Rollback { to_version, .. } => {
            if !is(&payments_kinds()) {
                return Err(unsupported());
            }
            let good = status["lastGoodVersion"]
                .as_str()
                .ok_or_else(|| missing("status.lastGoodVersion"))?;
            if good != to_version {
                return Err(Error::PlanInvalid {
                    action: name,
                    reason: format!("{to_version} is not the last good version ({good})"),
                });
            }
            let current = spec["version"]
                .as_str()
                .ok_or_else(|| missing("spec.version"))?;
            if current == to_version {
                return Err(Error::PlanNoChange {
                    action: name,
                    reason: format!("already at {current}"),
                });
            }
            Ok(reversible(
                json!({"spec": {"version": to_version}}),
                true,
                vec![],
            ))
        }
        Action::RollingRestart { .. } => {
            if !is(&["Cluster"]) && !is(&payments_kinds()) {
                return Err(unsupported());
            }
            Ok(Planned {
                change: merge_change(
                    Subresource::Main,
                    json!({"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": rfc3339(now)}}}),
                ),
                inverse: None,
                disruptive: true,
                moves: vec![],
            })
        }
        Action::RenewCertificate { .. } => {
            if !is(&["Certificate"]) {
                return Err(unsupported());
            }
            let mut conditions: Vec<Value> =
                status["conditions"].as_array().cloned().unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c["type"] == "Issuing" && c["status"] == "True")
            {
                return Err(Error::PlanNoChange {
                    action: name,
                    reason: "already issuing".into(),
                });
            }
            conditions.retain(|c| c["type"] != "Issuing");
            let mut issuing = json!({
                "type": "Issuing",
                "status": "True",
                "reason": "ManuallyTriggered",
                "message": "Certificate re-issuance manually triggered",
                "lastTransitionTime": rfc3339(now),
            });
            if let Some(g) = object["metadata"]["generation"].as_i64() {
                issuing["observedGeneration"] = g.into();
            }
            conditions.push(issuing);
            Ok(Planned {
                change: merge_change(
                    Subresource::Status,
                    json!({"status": {"conditions": conditions}}),
                ),
                inverse: None,
                disruptive: false,
                moves: vec![],
            })
        }
        Action::RefreshExternalSecret { .. } => {
            if !is(&["ExternalSecret"]) {
                return Err(unsupported());
            }
            if spec["refreshPolicy"] == "CreatedOnce" {
                return Err(Error::PlanInvalid {
                    action: name,
                    reason: "refreshPolicy CreatedOnce ignores forced refreshes".into(),
                });
            }
            Ok(Planned {
                change: merge_change(
                    Subresource::Main,
                    json!({"metadata": {"annotations": {"force-sync": now.to_string()}}}),
                ),
                inverse: None,
                disruptive: false,
                moves: vec![],
            })
        }
        Action::ShiftTraffic { route, weights, .. } => {
            if !is(&["VirtualService"]) {
                return Err(unsupported());
            }
            let mut http = spec["http"]
                .as_array()
                .cloned()
                .ok_or_else(|| missing("spec.http"))?;
            let idx = usize::try_from(*route).unwrap_or(usize::MAX);
            let destinations = http
                .get_mut(idx)
                .and_then(|r| r["route"].as_array_mut())
                .ok_or_else(|| missing(&format!("spec.http[{route}].route")))?;
            let mut seen = BTreeSet::new();
            let mut moves = Vec::new();
            for d in destinations.iter_mut() {
                let key = d["destination"]["subset"]
                    .as_str()
                    .or_else(|| d["destination"]["host"].as_str())
                    .unwrap_or_default()
                    .to_string();
                let Some(w) = weights.get(&key) else {
                    return Err(Error::PlanInvalid {
                        action: name,
                        reason: format!("no weight given for destination {key:?}"),
                    });
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
                return Err(Error::PlanInvalid {
                    action: name,
                    reason: format!("route has no destination {extra:?}"),
                });
            }
            if moves.iter().all(|m| m.from == m.to) {
                return Err(Error::PlanNoChange {
                    action: name,
                    reason: "weights unchanged".into(),
                });
            }
            Ok(reversible(json!({"spec": {"http": http}}), false, moves))
        }
        Action::PauseSync { .. } => {
            if !is(&["Application"]) {
                return Err(unsupported());
            }
            if spec["syncPolicy"]["automated"].is_null() {
                return Err(Error::PlanNoChange {
                    action: name,
                    reason: "automated sync is already off".into(),
                });
            }
            Ok(reversible(
                json!({"spec": {"syncPolicy": {"automated": null}}}),
                false,
                vec![],
            ))
        }
        Action::ScaleRedis {
            nodes,
            memory_size,
            shard_count,
            ..
        } => {
            let mut spec_patch = serde_json::Map::new();
            let mut moves = Vec::new();
            let disruptive;
            if is(&["RedisEnterpriseCluster"]) {
                let (Some(n), None, None) = (nodes, memory_size, shard_count) else {
                    return Err(Error::PlanInvalid {
                        action: name,
                        reason: "a RedisEnterpriseCluster scales by nodes only".into(),
                    });
                };
                let old = spec["nodes"]
                    .as_i64()
                    .ok_or_else(|| missing("spec.nodes"))?;
                moves.push(Move {
                    field: "spec.nodes".into(),
                    from: old as f64,
                    to: *n as f64,
                });
                spec_patch.insert("nodes".into(), json!(n));
                disruptive = true;
            } else if is(&["RedisEnterpriseDatabase"]) {
                if nodes.is_some() || (memory_size.is_none() && shard_count.is_none()) {
                    return Err(Error::PlanInvalid {
                        action: name,
                        reason:
                            "a RedisEnterpriseDatabase scales by memory_size and/or shard_count"
                                .into(),
                    });
                }
                if let Some(m) = memory_size {
                    let old = spec["memorySize"]
                        .as_str()
                        .ok_or_else(|| missing("spec.memorySize"))?;
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
                        to: *s as f64,
                    });
                    spec_patch.insert("shardCount".into(), json!(s));
                }
                disruptive = false;
            } else {
                return Err(unsupported());
            }
            Ok(reversible(json!({"spec": spec_patch}), disruptive, moves))
        }
        Action::Backup { .. } => {
            if !is(&["Cluster"]) {
                return Err(unsupported());
            }
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
            let mut backup_spec = json!({"cluster": {"name": target.name}});
            if let Some(plugin) = plugin {
                backup_spec["method"] = "plugin".into();
                backup_spec["pluginConfiguration"] = json!({"name": plugin});
            } else if !backup["volumeSnapshot"].is_null() {
                backup_spec["method"] = "volumeSnapshot".into();
            } else if !backup["barmanObjectStore"].is_null() {
                backup_spec["method"] = "barmanObjectStore".into();
            } else {
                return Err(missing(
                    "backup configuration (spec.backup or a WAL-archiver plugin)",
                ));
            }
            let backup_kind = kind_info("Backup").ok_or_else(unsupported)?;
            Ok(Planned {
                change: Change::Create {
                    object: json!({
                        "apiVersion": backup_kind.api_version(),
                        "kind": "Backup",
                        "metadata": {"name": format!("{}-autopilot-{now}", target.name), "namespace": target.namespace},
                        "spec": backup_spec,
                    }),
                    kind: backup_kind,
                },
                inverse: None,
                disruptive: false,
                moves: vec![],
            })
        }
    }
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

/// The RBAC rules `action` needs (for the chart's ClusterRole and for
/// `autopilot actions show`).
pub fn rbac(action: &Action) -> Vec<RbacRule> {
    let Some(k) = kind_info(&action.target().kind) else {
        return Vec::new();
    };
    let rule = |resource: String, verbs: Vec<&'static str>| RbacRule {
        group: k.group.clone(),
        resource,
        verbs,
    };
    match action {
        Action::Switchover { .. } | Action::RenewCertificate { .. } => vec![
            rule(k.plural.clone(), vec!["get"]),
            rule(format!("{}/status", k.plural), vec!["get", "patch"]),
        ],
        Action::Backup { .. } => vec![
            rule(k.plural.clone(), vec!["get"]),
            rule("backups".into(), vec!["get", "create"]),
        ],
        _ => vec![rule(k.plural.clone(), vec!["get", "patch"])],
    }
}

#[cfg(test)]
mod tests;
