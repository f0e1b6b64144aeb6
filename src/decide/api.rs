//! The sandboxed Rhai engine and the host API runbooks see.
//!
//! Every host function returns a value: an [`Intent`] (a proposal, never an
//! effect) or a plain number or string. Nothing here reaches the network, the
//! file system, the cluster or the clock; the only clock read is the
//! wall-clock budget enforced in the progress callback, which stops a script,
//! never informs it.

use std::{
    cell::Cell,
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map};

use super::intent::{Action, Expect, Intent, Verify};
use crate::detect::ComponentId;

/// Resource limits of one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Wall-clock budget of one evaluation.
    pub budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 500_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            budget: Duration::from_millis(250),
        }
    }
}

thread_local! {
    /// Deadline of the evaluation running on this thread (set around each call).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The message a script stopped by its time budget reports.
pub const TIME_BUDGET_EXCEEDED: &str = "time budget exceeded";

/// Runs `f` with the wall-clock deadline `budget` from now armed for the
/// progress callback of engines built by [`build_engine`].
pub(crate) fn with_budget<T>(budget: Duration, f: impl FnOnce() -> T) -> T {
    let previous = DEADLINE.replace(Some(Instant::now() + budget));
    let out = f();
    DEADLINE.set(previous);
    out
}

/// A sandboxed engine with the host API registered: operation, call-depth,
/// expression-depth, string and collection limits; no `eval`; no module
/// imports; `print`/`debug` discarded; undefined variables rejected at compile
/// time.
pub fn build_engine(limits: &Limits) -> Engine {
    // Engine::new() minus the time package (scripts get `now` from the
    // context, never from the clock) and minus the file module resolver.
    let mut engine = Engine::new_raw();
    engine.set_max_strings_interned(1024);
    {
        use rhai::packages::{
            BasicArrayPackage, BasicBlobPackage, BasicMapPackage, BasicMathPackage,
            BitFieldPackage, CorePackage, LogicPackage, MoreStringPackage, Package,
        };
        for module in [
            CorePackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicBlobPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(module);
        }
    }
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth / 2);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_modules(0);
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.set_strict_variables(true);
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine.on_progress(|ops| {
        // Reading the clock on every operation would dominate small scripts.
        if ops % 1024 != 0 {
            return None;
        }
        match DEADLINE.get() {
            Some(deadline) if Instant::now() > deadline => Some(TIME_BUDGET_EXCEEDED.into()),
            _ => None,
        }
    });
    register(&mut engine);
    engine
}

type Fallible<T> = Result<T, Box<EvalAltResult>>;

fn text(map: &Map, key: &str) -> Option<String> {
    map.get(key).and_then(|v| v.clone().into_string().ok())
}

/// A target map `#{kind, namespace, name}` (the context's `component` is one).
fn target(map: &Map) -> Fallible<ComponentId> {
    let field = |k: &str| {
        text(map, k)
            .filter(|s| !s.is_empty() || k == "namespace")
            .ok_or_else(|| -> Box<EvalAltResult> {
                format!("target needs a string `{k}` (got #{{kind, namespace, name}} = {map:?})")
                    .into()
            })
    };
    Ok(ComponentId {
        kind: field("kind")?,
        namespace: field("namespace")?,
        name: field("name")?,
    })
}

fn positive(what: &str, v: i64) -> Fallible<i64> {
    if v < 0 {
        return Err(format!("{what} must not be negative, got {v}").into());
    }
    Ok(v)
}

fn string_map(map: &Map, what: &str) -> Fallible<BTreeMap<String, String>> {
    map.iter()
        .map(|(k, v)| {
            let s = if v.is_string() {
                v.clone().into_string().unwrap_or_default()
            } else if v.is_int() || v.is_float() || v.is_bool() {
                v.to_string()
            } else {
                return Err(format!("{what}: value of `{k}` must be a string or number").into());
            };
            Ok((k.to_string(), s))
        })
        .collect()
}

/// Parses a PostgreSQL memory setting (`4MB`, `512kB`, `1GB`, plain number =
/// bytes) into bytes.
pub fn parse_pg_bytes(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let mult: i64 = match unit.trim() {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Formats bytes in the largest PostgreSQL unit that divides them exactly.
pub fn format_pg_bytes(bytes: i64) -> String {
    for (unit, size) in [
        ("TB", 1i64 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("kB", 1 << 10),
    ] {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Intent>("Intent");
    engine.register_fn("to_string", |i: &mut Intent| {
        serde_json::to_string(i).unwrap_or_default()
    });
    engine.register_get("action", |i: &mut Intent| i.action.name().to_string());

    engine.register_fn("scale", |t: Map, replicas: i64| -> Fallible<Intent> {
        Ok(Intent::new(Action::ScaleReplicas {
            target: target(&t)?,
            replicas: positive("replicas", replicas)?,
        }))
    });
    engine.register_fn(
        "scale_autoscaling",
        |t: Map, min: i64, max: i64| -> Fallible<Intent> {
            if min < 1 || min > max {
                return Err(format!("need 1 <= min <= max, got min {min}, max {max}").into());
            }
            Ok(Intent::new(Action::ScaleAutoscaling {
                target: target(&t)?,
                min_replicas: min,
                max_replicas: max,
            }))
        },
    );
    engine.register_fn("set_resources", |t: Map, r: Map| -> Fallible<Intent> {
        let resources: serde_json::Value = rhai::serde::from_dynamic(&Dynamic::from_map(r))?;
        let ok = resources
            .as_object()
            .is_some_and(|o| !o.is_empty() && o.keys().all(|k| k == "requests" || k == "limits"));
        if !ok {
            return Err("resources must be #{requests: #{..}, limits: #{..}}".into());
        }
        Ok(Intent::new(Action::SetResources {
            target: target(&t)?,
            resources,
        }))
    });
    engine.register_fn("pg_set", |t: Map, params: Map| -> Fallible<Intent> {
        if params.is_empty() {
            return Err("pg_set needs at least one parameter".into());
        }
        Ok(Intent::new(Action::SetPostgresParameters {
            target: target(&t)?,
            parameters: string_map(&params, "pg_set")?,
        }))
    });
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
    engine.register_fn(
        "switchover",
        move |t: Map, instance: ImmutableString, lag: i64| switchover(t, instance, lag as f64),
    );
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
    engine.register_fn("restart", |t: Map| -> Fallible<Intent> {
        Ok(Intent::new(Action::RollingRestart {
            target: target(&t)?,
        }))
    });
    engine.register_fn("renew_certificate", |t: Map| -> Fallible<Intent> {
        Ok(Intent::new(Action::RenewCertificate {
            target: target(&t)?,
        }))
    });
    engine.register_fn("refresh_secret", |t: Map| -> Fallible<Intent> {
        Ok(Intent::new(Action::RefreshExternalSecret {
            target: target(&t)?,
        }))
    });
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
    engine.register_fn("pause_sync", |t: Map| -> Fallible<Intent> {
        Ok(Intent::new(Action::PauseSync {
            target: target(&t)?,
        }))
    });
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
    engine.register_fn("backup", |t: Map| -> Fallible<Intent> {
        Ok(Intent::new(Action::Backup {
            target: target(&t)?,
        }))
    });

    engine.register_fn("reason", |mut i: Intent, why: ImmutableString| {
        i.reason = why.to_string();
        i
    });
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
    engine.register_fn(
        "verify",
        move |i: Intent, s: ImmutableString, e: ImmutableString, th: i64, w: i64| {
            verify(i, s, e, th as f64, w)
        },
    );

    engine.register_fn(
        "require",
        |v: Dynamic, what: ImmutableString| -> Fallible<Dynamic> {
            if v.is_unit() {
                return Err(format!("missing data: {what}").into());
            }
            Ok(v)
        },
    );
    engine.register_fn("bytes", |s: ImmutableString| -> Fallible<i64> {
        parse_pg_bytes(&s).ok_or_else(|| format!("not a memory size: {s:?}").into())
    });
    engine.register_fn("pg_size", |b: i64| format_pg_bytes(b));
    engine.register_fn("clamp", |v: i64, lo: i64, hi: i64| v.clamp(lo, hi.max(lo)));
    engine.register_fn("clamp", |v: f64, lo: f64, hi: f64| v.clamp(lo, hi.max(lo)));
    engine.register_fn("mean", |a: rhai::Array| -> Fallible<f64> {
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
}

/// One documented host function; `example` is a complete expression whose
/// JSON value (an intent, number or string) must equal `returns`.
pub struct HostFn {
    pub signature: &'static str,
    pub description: &'static str,
    pub example: &'static str,
    pub returns: &'static str,
}

/// The host API, as printed by `autopilot runbook api` and tested below.
pub const HOST_API: &[HostFn] = &[
    HostFn {
        signature: "scale(target, replicas) -> Intent",
        description: "Set spec.replicas of a PaymentGateway, ClearingAdapter, SagaOrchestrator or Strimzi KafkaNodePool.",
        example: r#"scale(#{kind: "PaymentGateway", namespace: "payments", name: "gw"}, 6)"#,
        returns: r#"{"runbook":"","action":"scale_replicas","target":{"kind":"PaymentGateway","namespace":"payments","name":"gw"},"replicas":6}"#,
    },
    HostFn {
        signature: "scale_autoscaling(target, min, max) -> Intent",
        description: "Set the HPA bounds spec.autoscaling.minReplicas/maxReplicas of a PaymentGateway (1 <= min <= max).",
        example: r#"scale_autoscaling(#{kind: "PaymentGateway", namespace: "payments", name: "gw"}, 4, 12)"#,
        returns: r#"{"runbook":"","action":"scale_autoscaling","target":{"kind":"PaymentGateway","namespace":"payments","name":"gw"},"min_replicas":4,"max_replicas":12}"#,
    },
    HostFn {
        signature: "set_resources(target, #{requests, limits}) -> Intent",
        description: "Vertical scale: set spec.resources of one of our kinds.",
        example: r#"set_resources(#{kind: "ClearingAdapter", namespace: "payments", name: "ca"}, #{requests: #{cpu: "500m"}, limits: #{memory: "1Gi"}})"#,
        returns: r#"{"runbook":"","action":"set_resources","target":{"kind":"ClearingAdapter","namespace":"payments","name":"ca"},"resources":{"limits":{"memory":"1Gi"},"requests":{"cpu":"500m"}}}"#,
    },
    HostFn {
        signature: "pg_set(target, #{param: value}) -> Intent",
        description: "Set CloudNativePG spec.postgresql.parameters (values become strings). Parameters CNPG forbids are refused when the patch is built; restart-requiring ones make the action disruptive.",
        example: r#"pg_set(#{kind: "Cluster", namespace: "db", name: "pg"}, #{work_mem: "8MB"})"#,
        returns: r#"{"runbook":"","action":"set_postgres_parameters","target":{"kind":"Cluster","namespace":"db","name":"pg"},"parameters":{"work_mem":"8MB"}}"#,
    },
    HostFn {
        signature: "switchover(target, instance, lag_seconds) -> Intent",
        description: "CloudNativePG switchover to a replica pod, with its observed lag; refused for an unhealthy or lagging candidate.",
        example: r#"switchover(#{kind: "Cluster", namespace: "db", name: "pg"}, "pg-2", 0.5)"#,
        returns: r#"{"runbook":"","action":"switchover","target":{"kind":"Cluster","namespace":"db","name":"pg"},"instance":"pg-2","lag_seconds":0.5}"#,
    },
    HostFn {
        signature: "rollback(target, version) -> Intent",
        description: "Set spec.version of a payments kind back to its status.lastGoodVersion (must match when applied).",
        example: r#"rollback(#{kind: "PaymentGateway", namespace: "payments", name: "gw"}, "2.4.0")"#,
        returns: r#"{"runbook":"","action":"rollback","target":{"kind":"PaymentGateway","namespace":"payments","name":"gw"},"to_version":"2.4.0"}"#,
    },
    HostFn {
        signature: "restart(target) -> Intent",
        description: "Rolling restart (kubectl.kubernetes.io/restartedAt annotation).",
        example: r#"restart(#{kind: "Cluster", namespace: "db", name: "pg"})"#,
        returns: r#"{"runbook":"","action":"rolling_restart","target":{"kind":"Cluster","namespace":"db","name":"pg"}}"#,
    },
    HostFn {
        signature: "renew_certificate(target) -> Intent",
        description: "cert-manager Certificate: renew now (Issuing=True, reason ManuallyTriggered).",
        example: r#"renew_certificate(#{kind: "Certificate", namespace: "edge", name: "api-tls"})"#,
        returns: r#"{"runbook":"","action":"renew_certificate","target":{"kind":"Certificate","namespace":"edge","name":"api-tls"}}"#,
    },
    HostFn {
        signature: "refresh_secret(target) -> Intent",
        description: "External Secrets: force a refresh (force-sync annotation).",
        example: r#"refresh_secret(#{kind: "ExternalSecret", namespace: "payments", name: "psp-keys"})"#,
        returns: r#"{"runbook":"","action":"refresh_external_secret","target":{"kind":"ExternalSecret","namespace":"payments","name":"psp-keys"}}"#,
    },
    HostFn {
        signature: "shift_traffic(target, route_index, #{subset: weight}) -> Intent",
        description: "Istio VirtualService: new weights (summing to 100) of spec.http[route_index].route by destination subset.",
        example: r#"shift_traffic(#{kind: "VirtualService", namespace: "payments", name: "gw"}, 0, #{stable: 100, canary: 0})"#,
        returns: r#"{"runbook":"","action":"shift_traffic","target":{"kind":"VirtualService","namespace":"payments","name":"gw"},"route":0,"weights":{"canary":0,"stable":100}}"#,
    },
    HostFn {
        signature: "pause_sync(target) -> Intent",
        description: "Argo CD Application: turn automated sync off so it does not revert the agent's change.",
        example: r#"pause_sync(#{kind: "Application", namespace: "argocd", name: "payments"})"#,
        returns: r#"{"runbook":"","action":"pause_sync","target":{"kind":"Application","namespace":"argocd","name":"payments"}}"#,
    },
    HostFn {
        signature: "scale_redis(target, #{nodes | memory_size | shard_count}) -> Intent",
        description: "Redis Enterprise: RedisEnterpriseCluster nodes, or RedisEnterpriseDatabase memorySize/shardCount.",
        example: r#"scale_redis(#{kind: "RedisEnterpriseDatabase", namespace: "cache", name: "idem"}, #{memory_size: "2GB"})"#,
        returns: r#"{"runbook":"","action":"scale_redis","target":{"kind":"RedisEnterpriseDatabase","namespace":"cache","name":"idem"},"memory_size":"2GB"}"#,
    },
    HostFn {
        signature: "backup(target) -> Intent",
        description: "Take an on-demand CloudNativePG Backup of a Cluster.",
        example: r#"backup(#{kind: "Cluster", namespace: "db", name: "pg"})"#,
        returns: r#"{"runbook":"","action":"backup","target":{"kind":"Cluster","namespace":"db","name":"pg"}}"#,
    },
    HostFn {
        signature: "intent.reason(text) -> Intent",
        description: "Attach the human reason shown in the journal and the Event.",
        example: r#"restart(#{kind: "Cluster", namespace: "db", name: "pg"}).reason("stuck")"#,
        returns: r#"{"runbook":"","action":"rolling_restart","target":{"kind":"Cluster","namespace":"db","name":"pg"},"reason":"stuck"}"#,
    },
    HostFn {
        signature: "intent.verify(signal, \"below\"|\"above\", threshold, within_seconds) -> Intent",
        description: "What must improve and by when; if not, the action is undone with its inverse patch.",
        example: r#"scale(#{kind: "PaymentGateway", namespace: "payments", name: "gw"}, 6).verify("latency_p99", "below", 0.3, 600)"#,
        returns: r#"{"runbook":"","action":"scale_replicas","target":{"kind":"PaymentGateway","namespace":"payments","name":"gw"},"replicas":6,"verify":{"signal":"latency_p99","expect":"below","threshold":0.3,"within_seconds":600}}"#,
    },
    HostFn {
        signature: "require(value, what) -> value",
        description: "Stop with `missing data: what` when value is () — never act on missing data.",
        example: r#"require(#{a: 1}.a, "a")"#,
        returns: "1",
    },
    HostFn {
        signature: "bytes(text) -> int",
        description: "A PostgreSQL memory setting in bytes (kB, MB, GB, TB are powers of 1024).",
        example: r#"bytes("4MB")"#,
        returns: "4194304",
    },
    HostFn {
        signature: "pg_size(bytes) -> string",
        description: "Bytes as a PostgreSQL memory setting in the largest exact unit.",
        example: "pg_size(8 * 1024 * 1024)",
        returns: r#""8MB""#,
    },
    HostFn {
        signature: "clamp(value, lo, hi) -> int|float",
        description: "value limited to [lo, hi].",
        example: "clamp(15, 2, 10)",
        returns: "10",
    },
    HostFn {
        signature: "mean(array) -> float",
        description: "Mean of numbers; an empty array is missing data.",
        example: "mean([1, 2, 3.0])",
        returns: "2.0",
    },
];

/// The host API as Markdown (for `autopilot runbook api`).
pub fn host_api_markdown() -> String {
    let mut out = String::from(
        "# Runbook host API\n\n\
Generated by `autopilot runbook api`; a unit test keeps this file in step and runs every example.\n\n\
A runbook defines `fn runbook()` (its trigger: `findings`, `cron` or `condition`, and an optional \
`mode` pin) and `fn decide(ctx)`, which returns an array of intents built with the functions below. \
`ctx` is read-only: `now` (unix seconds), `trigger`, `component` (`#{kind, namespace, name}`, usable \
as a target), `findings`, `samples` (signal → recent values), `resource` (the target as read: \
metadata, spec, status) and `facts` (for a CloudNativePG `Cluster`: `last_backup_completed_at` \
(unix seconds), `last_backup_phase` (`completed` or `failed`) and `replica_lag_seconds` (pod → \
seconds); a fact that could not be read is absent, so `require` it). Scripts run under operation, \
call-depth, expression-depth, \
string, array and map limits and a wall-clock budget; `eval` and imports are unavailable.\n\n",
    );
    for f in HOST_API {
        out.push_str(&format!(
            "## `{}`\n\n{}\n\n```rhai\n{}\n```\nreturns `{}`\n\n",
            f.signature, f.description, f.example, f.returns
        ));
    }
    out
}

/// A script value as JSON (intents through their serde form).
pub fn dynamic_to_json(v: &Dynamic) -> Result<serde_json::Value, String> {
    if let Some(i) = v.clone().try_cast::<Intent>() {
        return serde_json::to_value(i).map_err(|e| e.to_string());
    }
    rhai::serde::from_dynamic(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_example_returns_what_the_docs_say() {
        let engine = build_engine(&Limits::default());
        for f in HOST_API {
            let got: Dynamic = engine
                .eval(f.example)
                .unwrap_or_else(|e| panic!("{}: {e}", f.signature));
            let got = dynamic_to_json(&got).expect("json");
            let want: serde_json::Value = serde_json::from_str(f.returns).expect("returns is JSON");
            assert_eq!(got, want, "{}", f.signature);
        }
    }

    #[test]
    fn rules_api_md_is_the_generated_reference() {
        let committed = include_str!("../../rules/API.md");
        assert_eq!(
            committed,
            host_api_markdown(),
            "rules/API.md is stale: run `autopilot runbook api > rules/API.md`"
        );
    }

    #[test]
    fn bad_arguments_are_errors_not_actions() {
        let engine = build_engine(&Limits::default());
        for (script, needle) in [
            (
                r#"scale(#{kind: "PaymentGateway", name: "gw"}, 3)"#,
                "namespace",
            ),
            (
                r#"scale(#{kind: "PaymentGateway", namespace: "p", name: "gw"}, -1)"#,
                "negative",
            ),
            (
                r#"shift_traffic(#{kind: "VirtualService", namespace: "p", name: "v"}, 0, #{a: 60, b: 60})"#,
                "sum to 100",
            ),
            (
                r#"scale(#{kind: "PaymentGateway", namespace: "p", name: "gw"}, ())"#,
                "scale",
            ),
            (
                r#"require(#{}.x, "spec.replicas")"#,
                "missing data: spec.replicas",
            ),
            (r#"mean([])"#, "missing data"),
        ] {
            let err = engine
                .eval::<Dynamic>(script)
                .expect_err(script)
                .to_string();
            assert!(err.contains(needle), "{script}: {err}");
        }
    }

    #[test]
    fn pg_sizes_round_trip() {
        assert_eq!(parse_pg_bytes("64kB"), Some(65536));
        assert_eq!(parse_pg_bytes("1GB"), Some(1 << 30));
        assert_eq!(parse_pg_bytes("12XB"), None);
        assert_eq!(format_pg_bytes(3 << 20), "3MB");
        assert_eq!(format_pg_bytes(1500), "1500B");
    }

    #[test]
    fn eval_and_imports_are_unavailable() {
        let engine = build_engine(&Limits::default());
        assert!(engine.compile(r#"eval("1")"#).is_err());
        let err = engine.eval::<Dynamic>(r#"import "x" as y; 1"#);
        assert!(err.is_err());
        // No clock: time comes from ctx.now only.
        let err = engine.eval::<Dynamic>("timestamp()").expect_err("no clock");
        assert!(err.to_string().contains("timestamp"), "{err}");
        // The standard library scripts rely on is there.
        let v: i64 = engine
            .eval(r#"let s = "4Gi"; s.replace("Gi", "GB"); [1, 2, 3].extract(1).len() + parse_int("2") + (2.5).ceiling().to_int() + s.len()"#)
            .expect("std functions");
        assert_eq!(v, 2 + 2 + 3 + 3);
    }
}
