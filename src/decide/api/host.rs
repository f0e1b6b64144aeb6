//! The host functions runbooks call, one entry each: its documentation
//! (signature, description, an example and what the example returns), the
//! action kind it proposes, and its registration on the engine. One list, so
//! the reference (`autopilot runbook api`, `rules/API.md`) cannot describe a
//! function the engine lacks, nor the engine offer an undocumented one.
//!
//! Registrations only build values ([`Intent`]s, numbers, strings): no
//! I/O, no clock, no state kept between calls.

use std::collections::BTreeMap;

use rhai::{Dynamic, EvalAltResult, ImmutableString, Map};

use super::{
    HostFn,
    args::{Fallible, format_pg_bytes, parse_pg_bytes, positive, string_map, target, text},
};
use crate::decide::intent::{Action, ActionKind, Expect, Intent, Verify};

/// The host API, as printed by `autopilot runbook api` and tested in
/// `api::tests`. Functions that propose an action come first, then the
/// intent modifiers, then the helpers.
pub const HOST_API: &[HostFn] = &[
    HostFn {
        signature: "scale(target, replicas) -> Intent",
        description: "Set spec.replicas of a PaymentGateway, ClearingAdapter, SagaOrchestrator or Strimzi KafkaNodePool.",
        example: r#"scale(#{kind: "PaymentGateway", namespace: "payments", name: "gw"}, 6)"#,
        returns: r#"{"runbook":"","action":"scale_replicas","target":{"kind":"PaymentGateway","namespace":"payments","name":"gw"},"replicas":6}"#,
        produces: Some(ActionKind::ScaleReplicas),
        register: |engine| {
            engine.register_fn("scale", |t: Map, replicas: i64| -> Fallible<Intent> {
                Ok(Intent::new(Action::ScaleReplicas {
                    target: target(&t)?,
                    replicas: positive("replicas", replicas)?,
                }))
            });
        },
    },
    HostFn {
        signature: "scale_autoscaling(target, min, max) -> Intent",
        description: "Set the HPA bounds spec.autoscaling.minReplicas/maxReplicas of a PaymentGateway (1 <= min <= max).",
        example: r#"scale_autoscaling(#{kind: "PaymentGateway", namespace: "payments", name: "gw"}, 4, 12)"#,
        returns: r#"{"runbook":"","action":"scale_autoscaling","target":{"kind":"PaymentGateway","namespace":"payments","name":"gw"},"min_replicas":4,"max_replicas":12}"#,
        produces: Some(ActionKind::ScaleAutoscaling),
        register: |engine| {
            engine.register_fn(
                "scale_autoscaling",
                |t: Map, min: i64, max: i64| -> Fallible<Intent> {
                    if min < 1 || min > max {
                        return Err(
                            format!("need 1 <= min <= max, got min {min}, max {max}").into()
                        );
                    }
                    Ok(Intent::new(Action::ScaleAutoscaling {
                        target: target(&t)?,
                        min_replicas: min,
                        max_replicas: max,
                    }))
                },
            );
        },
    },
    HostFn {
        signature: "set_resources(target, #{requests, limits}) -> Intent",
        description: "Vertical scale: set spec.resources of one of our kinds.",
        example: r#"set_resources(#{kind: "ClearingAdapter", namespace: "payments", name: "ca"}, #{requests: #{cpu: "500m"}, limits: #{memory: "1Gi"}})"#,
        returns: r#"{"runbook":"","action":"set_resources","target":{"kind":"ClearingAdapter","namespace":"payments","name":"ca"},"resources":{"limits":{"memory":"1Gi"},"requests":{"cpu":"500m"}}}"#,
        produces: Some(ActionKind::SetResources),
        register: |engine| {
            engine.register_fn("set_resources", |t: Map, r: Map| -> Fallible<Intent> {
                let resources: serde_json::Value =
                    rhai::serde::from_dynamic(&Dynamic::from_map(r))?;
                let ok = resources.as_object().is_some_and(|o| {
                    !o.is_empty() && o.keys().all(|k| k == "requests" || k == "limits")
                });
                if !ok {
                    return Err("resources must be #{requests: #{..}, limits: #{..}}".into());
                }
                Ok(Intent::new(Action::SetResources {
                    target: target(&t)?,
                    resources,
                }))
            });
        },
    },
    HostFn {
        signature: "pg_set(target, #{param: value}) -> Intent",
        description: "Set CloudNativePG spec.postgresql.parameters (values become strings). Parameters CNPG forbids are refused when the patch is built; restart-requiring ones make the action disruptive.",
        example: r#"pg_set(#{kind: "Cluster", namespace: "db", name: "pg"}, #{work_mem: "8MB"})"#,
        returns: r#"{"runbook":"","action":"set_postgres_parameters","target":{"kind":"Cluster","namespace":"db","name":"pg"},"parameters":{"work_mem":"8MB"}}"#,
        produces: Some(ActionKind::SetPostgresParameters),
        register: |engine| {
            engine.register_fn("pg_set", |t: Map, params: Map| -> Fallible<Intent> {
                if params.is_empty() {
                    return Err("pg_set needs at least one parameter".into());
                }
                Ok(Intent::new(Action::SetPostgresParameters {
                    target: target(&t)?,
                    parameters: string_map(&params, "pg_set")?,
                }))
            });
        },
    },
    HostFn {
        signature: "switchover(target, instance, lag_seconds) -> Intent",
        description: "CloudNativePG switchover to a replica pod, with its observed lag; refused for an unhealthy or lagging candidate.",
        example: r#"switchover(#{kind: "Cluster", namespace: "db", name: "pg"}, "pg-2", 0.5)"#,
        returns: r#"{"runbook":"","action":"switchover","target":{"kind":"Cluster","namespace":"db","name":"pg"},"instance":"pg-2","lag_seconds":0.5}"#,
        produces: Some(ActionKind::Switchover),
        register: |engine| {
            let switchover = |t: Map, instance: ImmutableString, lag: f64| -> Fallible<Intent> {
                if instance.is_empty() {
                    return Err("switchover needs an instance name".into());
                }
                Ok(Intent::new(Action::Switchover {
                    target: target(&t)?,
                    instance: instance.to_string(),
                    lag_seconds: lag,
                }))
            };
            engine.register_fn("switchover", switchover);
            // An integer lag (`0`) is as good as a float.
            engine.register_fn(
                "switchover",
                move |t: Map, instance: ImmutableString, lag: i64| {
                    switchover(t, instance, lag as f64)
                },
            );
        },
    },
    HostFn {
        signature: "rollback(target, version) -> Intent",
        description: "Set spec.version of a payments kind back to its status.lastGoodVersion (must match when applied).",
        example: r#"rollback(#{kind: "PaymentGateway", namespace: "payments", name: "gw"}, "2.4.0")"#,
        returns: r#"{"runbook":"","action":"rollback","target":{"kind":"PaymentGateway","namespace":"payments","name":"gw"},"to_version":"2.4.0"}"#,
        produces: Some(ActionKind::Rollback),
        register: |engine| {
            engine.register_fn(
                "rollback",
                |t: Map, version: ImmutableString| -> Fallible<Intent> {
                    if version.is_empty() {
                        return Err("rollback needs the version to return to".into());
                    }
                    Ok(Intent::new(Action::Rollback {
                        target: target(&t)?,
                        to_version: version.to_string(),
                    }))
                },
            );
        },
    },
    HostFn {
        signature: "restart(target) -> Intent",
        description: "Rolling restart (kubectl.kubernetes.io/restartedAt annotation).",
        example: r#"restart(#{kind: "Cluster", namespace: "db", name: "pg"})"#,
        returns: r#"{"runbook":"","action":"rolling_restart","target":{"kind":"Cluster","namespace":"db","name":"pg"}}"#,
        produces: Some(ActionKind::RollingRestart),
        register: |engine| {
            engine.register_fn("restart", |t: Map| -> Fallible<Intent> {
                Ok(Intent::new(Action::RollingRestart {
                    target: target(&t)?,
                }))
            });
        },
    },
    HostFn {
        signature: "renew_certificate(target) -> Intent",
        description: "cert-manager Certificate: renew now (Issuing=True, reason ManuallyTriggered).",
        example: r#"renew_certificate(#{kind: "Certificate", namespace: "edge", name: "api-tls"})"#,
        returns: r#"{"runbook":"","action":"renew_certificate","target":{"kind":"Certificate","namespace":"edge","name":"api-tls"}}"#,
        produces: Some(ActionKind::RenewCertificate),
        register: |engine| {
            engine.register_fn("renew_certificate", |t: Map| -> Fallible<Intent> {
                Ok(Intent::new(Action::RenewCertificate {
                    target: target(&t)?,
                }))
            });
        },
    },
    HostFn {
        signature: "refresh_secret(target) -> Intent",
        description: "External Secrets: force a refresh (force-sync annotation).",
        example: r#"refresh_secret(#{kind: "ExternalSecret", namespace: "payments", name: "psp-keys"})"#,
        returns: r#"{"runbook":"","action":"refresh_external_secret","target":{"kind":"ExternalSecret","namespace":"payments","name":"psp-keys"}}"#,
        produces: Some(ActionKind::RefreshExternalSecret),
        register: |engine| {
            engine.register_fn("refresh_secret", |t: Map| -> Fallible<Intent> {
                Ok(Intent::new(Action::RefreshExternalSecret {
                    target: target(&t)?,
                }))
            });
        },
    },
    HostFn {
        signature: "shift_traffic(target, route_index, #{subset: weight}) -> Intent",
        description: "Istio VirtualService: new weights (summing to 100) of spec.http[route_index].route by destination subset.",
        example: r#"shift_traffic(#{kind: "VirtualService", namespace: "payments", name: "gw"}, 0, #{stable: 100, canary: 0})"#,
        returns: r#"{"runbook":"","action":"shift_traffic","target":{"kind":"VirtualService","namespace":"payments","name":"gw"},"route":0,"weights":{"canary":0,"stable":100}}"#,
        produces: Some(ActionKind::ShiftTraffic),
        register: |engine| {
            engine.register_fn(
                "shift_traffic",
                |t: Map, route: i64, weights: Map| -> Fallible<Intent> {
                    let mut w = BTreeMap::new();
                    for (k, v) in &weights {
                        let n = v
                            .as_int()
                            .map_err(|_| format!("weight of `{k}` must be an integer"))?;
                        w.insert(k.to_string(), positive("weight", n)?);
                    }
                    if w.values().sum::<i64>() != 100 {
                        return Err(format!("weights must sum to 100, got {w:?}").into());
                    }
                    Ok(Intent::new(Action::ShiftTraffic {
                        target: target(&t)?,
                        route: positive("route", route)?,
                        weights: w,
                    }))
                },
            );
        },
    },
    HostFn {
        signature: "pause_sync(target) -> Intent",
        description: "Argo CD Application: turn automated sync off so it does not revert the agent's change.",
        example: r#"pause_sync(#{kind: "Application", namespace: "argocd", name: "payments"})"#,
        returns: r#"{"runbook":"","action":"pause_sync","target":{"kind":"Application","namespace":"argocd","name":"payments"}}"#,
        produces: Some(ActionKind::PauseSync),
        register: |engine| {
            engine.register_fn("pause_sync", |t: Map| -> Fallible<Intent> {
                Ok(Intent::new(Action::PauseSync {
                    target: target(&t)?,
                }))
            });
        },
    },
    HostFn {
        signature: "scale_redis(target, #{nodes | memory_size | shard_count}) -> Intent",
        description: "Redis Enterprise: RedisEnterpriseCluster nodes, or RedisEnterpriseDatabase memorySize/shardCount.",
        example: r#"scale_redis(#{kind: "RedisEnterpriseDatabase", namespace: "cache", name: "idem"}, #{memory_size: "2GB"})"#,
        returns: r#"{"runbook":"","action":"scale_redis","target":{"kind":"RedisEnterpriseDatabase","namespace":"cache","name":"idem"},"memory_size":"2GB"}"#,
        produces: Some(ActionKind::ScaleRedis),
        register: |engine| {
            engine.register_fn("scale_redis", |t: Map, spec: Map| -> Fallible<Intent> {
                let int = |k: &str| -> Fallible<Option<i64>> {
                    spec.get(k)
                        .map(|v| {
                            v.as_int()
                                .map_err(|_| -> Box<EvalAltResult> {
                                    format!("{k} must be an integer").into()
                                })
                                .and_then(|n| positive(k, n))
                        })
                        .transpose()
                };
                let intent = Action::ScaleRedis {
                    target: target(&t)?,
                    nodes: int("nodes")?,
                    memory_size: text(&spec, "memory_size"),
                    shard_count: int("shard_count")?,
                };
                if let Some(k) = spec
                    .keys()
                    .find(|k| !["nodes", "memory_size", "shard_count"].contains(&k.as_str()))
                {
                    return Err(format!("scale_redis: unknown field `{k}`").into());
                }
                Ok(Intent::new(intent))
            });
        },
    },
    HostFn {
        signature: "backup(target) -> Intent",
        description: "Take an on-demand CloudNativePG Backup of a Cluster.",
        example: r#"backup(#{kind: "Cluster", namespace: "db", name: "pg"})"#,
        returns: r#"{"runbook":"","action":"backup","target":{"kind":"Cluster","namespace":"db","name":"pg"}}"#,
        produces: Some(ActionKind::Backup),
        register: |engine| {
            engine.register_fn("backup", |t: Map| -> Fallible<Intent> {
                Ok(Intent::new(Action::Backup {
                    target: target(&t)?,
                }))
            });
        },
    },
    HostFn {
        signature: "intent.reason(text) -> Intent",
        description: "Attach the human reason shown in the journal and the Event.",
        example: r#"restart(#{kind: "Cluster", namespace: "db", name: "pg"}).reason("stuck")"#,
        returns: r#"{"runbook":"","action":"rolling_restart","target":{"kind":"Cluster","namespace":"db","name":"pg"},"reason":"stuck"}"#,
        produces: None,
        register: |engine| {
            engine.register_fn("reason", |mut i: Intent, why: ImmutableString| {
                i.reason = why.to_string();
                i
            });
        },
    },
    HostFn {
        signature: "intent.verify(signal, \"below\"|\"above\", threshold, within_seconds) -> Intent",
        description: "What must improve and by when; if not, the action is undone with its inverse patch.",
        example: r#"scale(#{kind: "PaymentGateway", namespace: "payments", name: "gw"}, 6).verify("latency_p99", "below", 0.3, 600)"#,
        returns: r#"{"runbook":"","action":"scale_replicas","target":{"kind":"PaymentGateway","namespace":"payments","name":"gw"},"replicas":6,"verify":{"signal":"latency_p99","expect":"below","threshold":0.3,"within_seconds":600}}"#,
        produces: None,
        register: |engine| {
            let verify = |mut i: Intent,
                          signal: ImmutableString,
                          expect: ImmutableString,
                          threshold: f64,
                          within: i64|
             -> Fallible<Intent> {
                let expect = match expect.as_str() {
                    "below" => Expect::Below,
                    "above" => Expect::Above,
                    other => {
                        return Err(format!(
                            "verify: expect must be \"below\" or \"above\", got {other:?}"
                        )
                        .into());
                    }
                };
                i.verify = Some(Verify {
                    signal: signal.to_string(),
                    expect,
                    threshold,
                    within_seconds: positive("within_seconds", within)?,
                });
                Ok(i)
            };
            engine.register_fn("verify", verify);
            // An integer threshold (`1`) is as good as a float.
            engine.register_fn(
                "verify",
                move |i: Intent, s: ImmutableString, e: ImmutableString, th: i64, w: i64| {
                    verify(i, s, e, th as f64, w)
                },
            );
        },
    },
    HostFn {
        signature: "require(value, what) -> value",
        description: "Stop with `missing data: what` when value is () — never act on missing data.",
        example: r#"require(#{a: 1}.a, "a")"#,
        returns: "1",
        produces: None,
        register: |engine| {
            engine.register_fn(
                "require",
                |v: Dynamic, what: ImmutableString| -> Fallible<Dynamic> {
                    if v.is_unit() {
                        return Err(format!("missing data: {what}").into());
                    }
                    Ok(v)
                },
            );
        },
    },
    HostFn {
        signature: "bytes(text) -> int",
        description: "A PostgreSQL memory setting in bytes (kB, MB, GB, TB are powers of 1024).",
        example: r#"bytes("4MB")"#,
        returns: "4194304",
        produces: None,
        register: |engine| {
            engine.register_fn("bytes", |s: ImmutableString| -> Fallible<i64> {
                parse_pg_bytes(&s).ok_or_else(|| format!("not a memory size: {s:?}").into())
            });
        },
    },
    HostFn {
        signature: "pg_size(bytes) -> string",
        description: "Bytes as a PostgreSQL memory setting in the largest exact unit.",
        example: "pg_size(8 * 1024 * 1024)",
        returns: r#""8MB""#,
        produces: None,
        register: |engine| {
            engine.register_fn("pg_size", |b: i64| format_pg_bytes(b));
        },
    },
    HostFn {
        signature: "clamp(value, lo, hi) -> int|float",
        description: "value limited to [lo, hi].",
        example: "clamp(15, 2, 10)",
        returns: "10",
        produces: None,
        register: |engine| {
            engine.register_fn("clamp", |v: i64, lo: i64, hi: i64| v.clamp(lo, hi.max(lo)));
            engine.register_fn("clamp", |v: f64, lo: f64, hi: f64| v.clamp(lo, hi.max(lo)));
        },
    },
    HostFn {
        signature: "mean(array) -> float",
        description: "Mean of numbers; an empty array, or one holding no data (`()`), is missing data.",
        example: "mean([1, 2, 3.0])",
        returns: "2.0",
        produces: None,
        register: |engine| {
            engine.register_fn("mean", |a: rhai::Array| -> Fallible<f64> {
                if a.iter().any(|v| v.is_unit()) {
                    return Err("missing data: mean over a sample that is no data".into());
                }
                let vals: Vec<f64> = a
                    .iter()
                    .map(|v| v.as_float().or_else(|_| v.as_int().map(|i| i as f64)))
                    .collect::<Result<_, _>>()
                    .map_err(|t| format!("mean: not a number: {t}"))?;
                if vals.is_empty() {
                    return Err("missing data: mean of no samples".into());
                }
                Ok(vals.iter().sum::<f64>() / vals.len() as f64)
            });
        },
    },
];
