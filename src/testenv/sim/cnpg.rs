//! CloudNativePG: the operator (a new Cluster gets its instances and
//! primary; a switchover is carried out the way CNPG does it; a parameter
//! that needs a restart, `max_connections`, is applied with a rolling
//! restart) and its per-instance exporter (`cnpg_*`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Fault, Key, Objects, Part, SimKind, StatusPatch, key, name_of, ns_of};

/// WAL archive failures per second of a degrading primary.
pub const ARCHIVE_FAILURES_PER_SECOND: f64 = 0.5;
/// Seconds CloudNativePG takes to carry out a switchover here.
pub const SWITCHOVER_SECONDS: f64 = 3.0;
/// Bytes per second the primary writes to temporary files normally.
pub const TEMP_BYTES_NORMAL: f64 = 100_000.0;
/// Bytes per second the primary spills under temp-file growth with the
/// default `work_mem` (4MB); none once `work_mem` reaches [`SORT_MEMORY`].
pub const TEMP_BYTES_SPILL: f64 = 20_000_000.0;
/// Memory the workload's sorts need after a temp-file growth: work_mem at
/// or above this keeps them in memory.
pub const SORT_MEMORY: f64 = 8.0 * 1024.0 * 1024.0;
/// Backends on the primary normally (the application's pools), and on
/// each replica (read-only users).
pub const PRIMARY_BACKENDS: f64 = 30.0;
pub const REPLICA_BACKENDS: f64 = 5.0;
/// Backends the application opens on the primary under connection
/// exhaustion (its pools grew): with the default 100 connections and two
/// replicas, 95 % of `max_connections` in use.
pub const EXHAUSTION_BACKENDS: f64 = 85.0;
/// How fast the backends climb toward that, per second.
pub const BACKENDS_CLIMB_PER_SECOND: f64 = 5.0;
/// Seconds CNPG takes to restart one instance in a rolling restart.
pub const RESTART_SECONDS: f64 = 2.0;
/// `connections_ratio` under which a cluster is healthy again (the
/// `cnpg-max-connections` runbook's verification).
pub const HEALTHY_CONNECTIONS_RATIO: f64 = 0.8;
/// PostgreSQL's default `max_connections`.
const DEFAULT_MAX_CONNECTIONS: f64 = 100.0;

const KINDS: &[SimKind] = &[SimKind {
    group: "postgresql.cnpg.io",
    version: "v1",
    kind: "Cluster",
    plural: "clusters",
}];

#[derive(Clone, Debug, Default)]
struct PgCluster {
    instances: Vec<String>,
    primary: String,
    /// The instance whose WAL archiving fails (primary degradation).
    degrading: Option<String>,
    /// `cnpg_pg_stat_archiver_failed_count` per instance.
    archive_failed: BTreeMap<String, f64>,
    /// A switchover under way: target and seconds left.
    switching: Option<(String, f64)>,
    /// `work_mem` in bytes as the spec sets it (PostgreSQL's default 4MB).
    work_mem: f64,
    /// Temp-file growth: the sorts need [`SORT_MEMORY`].
    spilling: bool,
    /// `cnpg_pg_stat_database_temp_bytes` per instance.
    temp_bytes: BTreeMap<String, f64>,
    /// `max_connections` as the spec sets it, and as each instance runs
    /// with it (a change needs a restart: it is pending until then).
    max_connections: f64,
    running_max_connections: BTreeMap<String, f64>,
    /// Connection exhaustion: the application's backends on the primary,
    /// climbing toward [`EXHAUSTION_BACKENDS`].
    exhausting: bool,
    app_backends: f64,
    /// A rolling restart under way: the instances still to restart (the
    /// replicas first, the primary last, as CNPG does) and seconds left on
    /// the one restarting now.
    restarting: Vec<String>,
    restart_left: f64,
}

/// Every CloudNativePG Cluster, and its operator.
#[derive(Clone, Debug, Default)]
pub struct Clusters {
    clusters: BTreeMap<Key, PgCluster>,
    /// The load of the moment, as a share of normal (see
    /// [`Part::set_load`]); `None` is normal.
    load: Option<f64>,
}

impl Part for Clusters {
    fn kinds(&self) -> &'static [SimKind] {
        KINDS
    }

    /// A new Cluster gets its instances; a switchover that has been
    /// requested starts.
    fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch> {
        let mut patches = Vec::new();
        let mut seen = BTreeSet::new();
        for c in objects.get("Cluster").into_iter().flatten() {
            let (ns, name) = (ns_of(c), name_of(c));
            let k = key("Cluster", ns, name);
            seen.insert(k.clone());
            let status = &c["status"];
            let n = c["spec"]["instances"].as_i64().unwrap_or(1).max(1);
            let cluster = self.clusters.entry(k).or_default();
            cluster.work_mem = c["spec"]["postgresql"]["parameters"]["work_mem"]
                .as_str()
                .and_then(pg_bytes)
                .unwrap_or(4.0 * 1024.0 * 1024.0);
            cluster.max_connections = c["spec"]["postgresql"]["parameters"]["max_connections"]
                .as_str()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(DEFAULT_MAX_CONNECTIONS);
            if cluster.instances.is_empty() {
                cluster.instances = (1..=n).map(|i| format!("{name}-{i}")).collect();
                cluster.app_backends = PRIMARY_BACKENDS;
                for i in &cluster.instances {
                    cluster
                        .running_max_connections
                        .insert(i.clone(), cluster.max_connections);
                }
            }
            let Some(current) = status["currentPrimary"].as_str() else {
                // A new Cluster: CNPG bootstraps its first instance as primary.
                cluster.primary = cluster.instances[0].clone();
                patches.push(StatusPatch {
                    kind: "Cluster",
                    namespace: ns.into(),
                    name: name.into(),
                    status: healthy_status(&cluster.instances, &cluster.primary),
                });
                continue;
            };
            cluster.primary = current.to_string();
            // PostgreSQL reports pending_restart for a new max_connections:
            // CNPG restarts the replicas, then the primary in place.
            if cluster.restarting.is_empty()
                && cluster.switching.is_none()
                && cluster
                    .running_max_connections
                    .values()
                    .any(|v| *v != cluster.max_connections)
            {
                let mut order: Vec<String> = cluster
                    .instances
                    .iter()
                    .filter(|i| **i != cluster.primary)
                    .cloned()
                    .collect();
                order.push(cluster.primary.clone());
                cluster.restarting = order;
                cluster.restart_left = RESTART_SECONDS;
                patches.push(StatusPatch {
                    kind: "Cluster",
                    namespace: ns.into(),
                    name: name.into(),
                    status: restarting_status(&cluster.instances, &cluster.restarting[0]),
                });
            }
            let target = status["targetPrimary"].as_str().unwrap_or(current);
            if target != current
                && cluster.instances.iter().any(|i| i == target)
                && cluster.switching.as_ref().is_none_or(|(t, _)| t != target)
            {
                cluster.switching = Some((target.to_string(), SWITCHOVER_SECONDS));
            }
        }
        self.clusters.retain(|k, _| seen.contains(k));
        patches
    }

    /// Switchovers that completed.
    fn advance(&mut self, dt: f64) -> Vec<StatusPatch> {
        let mut patches = Vec::new();
        let load = self.load.unwrap_or(1.0);
        for ((_, ns, name), c) in &mut self.clusters {
            *c.temp_bytes.entry(c.primary.clone()).or_default() += c.temp_rate() * load * dt;
            if let Some(bad) = &c.degrading
                && *bad == c.primary
            {
                *c.archive_failed.entry(bad.clone()).or_default() +=
                    ARCHIVE_FAILURES_PER_SECOND * dt;
            }
            let demand = if c.exhausting {
                EXHAUSTION_BACKENDS
            } else {
                PRIMARY_BACKENDS
            };
            c.app_backends = if c.app_backends < demand {
                (c.app_backends + BACKENDS_CLIMB_PER_SECOND * dt).min(demand)
            } else {
                demand
            };
            if let Some(pod) = c.restarting.first().cloned() {
                c.restart_left -= dt;
                if c.restart_left <= 0.0 {
                    c.running_max_connections
                        .insert(pod.clone(), c.max_connections);
                    c.restarting.remove(0);
                    c.restart_left = RESTART_SECONDS;
                    patches.push(StatusPatch {
                        kind: "Cluster",
                        namespace: ns.clone(),
                        name: name.clone(),
                        status: match c.restarting.first() {
                            Some(next) => restarting_status(&c.instances, next),
                            None => healthy_status(&c.instances, &c.primary),
                        },
                    });
                }
            }
            if let Some((target, left)) = &mut c.switching {
                *left -= dt;
                if *left <= 0.0 {
                    c.primary = target.clone();
                    c.switching = None;
                    patches.push(StatusPatch {
                        kind: "Cluster",
                        namespace: ns.clone(),
                        name: name.clone(),
                        status: healthy_status(&c.instances, &c.primary),
                    });
                }
            }
        }
        patches
    }

    fn inject(&mut self, fault: &Fault, k: &Key) -> bool {
        let Some(c) = self.clusters.get_mut(k) else {
            return false;
        };
        match fault {
            Fault::PrimaryDegradation => c.degrading = Some(c.primary.clone()),
            Fault::TempFileGrowth => c.spilling = true,
            Fault::ConnectionExhaustion => c.exhausting = true,
            _ => return false,
        }
        true
    }

    fn end(&mut self, fault: &Fault, k: &Key) {
        if let Some(c) = self.clusters.get_mut(k) {
            match fault {
                Fault::PrimaryDegradation => c.degrading = None,
                Fault::TempFileGrowth => c.spilling = false,
                Fault::ConnectionExhaustion => c.exhausting = false,
                _ => {}
            }
        }
    }

    /// For a degradation, the degrading instance not primary; for temp-file
    /// growth, the spill rate back near normal.
    fn healthy(&self, fault: &Fault, k: &Key) -> bool {
        let Some(c) = self.clusters.get(k) else {
            return false;
        };
        match fault {
            Fault::PrimaryDegradation => c.degrading.as_ref() != Some(&c.primary),
            Fault::TempFileGrowth => c.temp_rate() < 2.0 * TEMP_BYTES_NORMAL,
            Fault::ConnectionExhaustion => {
                c.restarting.is_empty() && c.connections_ratio() < HEALTHY_CONNECTIONS_RATIO
            }
            _ => false,
        }
    }

    fn set_load(&mut self, load: f64) {
        self.load = Some(load);
    }

    fn exposition(&self, out: &mut String) {
        let load = self.load.unwrap_or(1.0);
        out.push_str(
            "# TYPE cnpg_collector_up gauge\n\
             # TYPE cnpg_pg_replication_lag gauge\n\
             # TYPE cnpg_pg_replication_in_recovery gauge\n\
             # TYPE cnpg_pg_replication_streaming_replicas gauge\n\
             # TYPE cnpg_pg_stat_archiver_failed_count counter\n\
             # TYPE cnpg_backends_total gauge\n\
             # TYPE cnpg_pg_settings_setting gauge\n\
             # TYPE cnpg_pg_stat_database_temp_bytes counter\n",
        );
        for ((_, ns, _), c) in &self.clusters {
            let replicas = c.instances.len().saturating_sub(1);
            for pod in &c.instances {
                let l = format!("namespace=\"{ns}\",pod=\"{pod}\"");
                let primary = *pod == c.primary;
                let failed = c.archive_failed.get(pod).copied().unwrap_or(0.0);
                out.push_str(&format!(
                    "cnpg_collector_up{{{l},cluster=\"{cluster}\"}} 1\n\
                     cnpg_pg_replication_lag{{{l}}} {lag}\n\
                     cnpg_pg_replication_in_recovery{{{l}}} {recovery}\n\
                     cnpg_pg_replication_streaming_replicas{{{l}}} {streaming}\n\
                     cnpg_pg_stat_archiver_failed_count{{{l}}} {failed:.0}\n\
                     cnpg_backends_total{{{l},datname=\"app\",usename=\"app\",application_name=\"payments\",state=\"active\"}} {backends}\n\
                     cnpg_pg_settings_setting{{{l},name=\"max_connections\"}} {max_connections}\n\
                     cnpg_pg_stat_database_temp_bytes{{{l},datname=\"app\"}} {temp:.0}\n",
                    cluster = pod.rsplit_once('-').map_or(pod.as_str(), |(c, _)| c),
                    lag = if primary { 0.0 } else { 0.2 },
                    recovery = u8::from(!primary),
                    streaming = if primary { replicas } else { 0 },
                    backends = (c.backends(pod) * load)
                        .min(c.running(pod) - 3.0)
                        .max(0.0)
                        .round(),
                    max_connections = c.running(pod),
                    temp = c.temp_bytes.get(pod).copied().unwrap_or(0.0),
                ));
            }
        }
    }
}

impl PgCluster {
    /// `max_connections` the instance `pod` runs with.
    fn running(&self, pod: &str) -> f64 {
        self.running_max_connections
            .get(pod)
            .copied()
            .unwrap_or(self.max_connections)
    }

    /// Backends on `pod` now: none while it restarts; the application's on
    /// the primary, at most `max_connections` less the 3 reserved for
    /// superusers (PostgreSQL refuses the rest).
    fn backends(&self, pod: &str) -> f64 {
        if self.restarting.first().is_some_and(|p| p == pod) {
            return 0.0;
        }
        let wanted = if pod == self.primary {
            self.app_backends
        } else {
            REPLICA_BACKENDS
        };
        wanted.min(self.running(pod) - 3.0).max(0.0)
    }

    /// Backends over `max_connections`, as the Cluster model's
    /// `connections_ratio` reads them.
    fn connections_ratio(&self) -> f64 {
        let used: f64 = self
            .instances
            .iter()
            .map(|p| self.backends(p).round())
            .sum();
        let max = self
            .instances
            .iter()
            .map(|p| self.running(p))
            .fold(0.0, f64::max);
        used / max.max(1.0)
    }

    /// Bytes per second the primary writes to temporary files.
    fn temp_rate(&self) -> f64 {
        let short = if self.spilling {
            (1.0 - self.work_mem / SORT_MEMORY).max(0.0)
        } else {
            0.0
        };
        TEMP_BYTES_NORMAL + 2.0 * TEMP_BYTES_SPILL * short
    }
}

/// A PostgreSQL memory setting (`4MB`, `1GB`, `512kB`, plain kB) in bytes.
fn pg_bytes(text: &str) -> Option<f64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: f64 = t[..split].parse().ok()?;
    let unit = match &t[split..] {
        "" | "kB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "B" => 1.0,
        _ => return None,
    };
    Some(n * unit)
}

/// The status CNPG shows while it restarts `pod` to apply a parameter.
fn restarting_status(instances: &[String], pod: &str) -> Value {
    let healthy: Vec<&String> = instances.iter().filter(|i| *i != pod).collect();
    json!({
        "readyInstances": instances.len() - 1,
        "phase": "Applying configuration",
        "phaseReason": format!("PostgreSQL needs a restart to apply a parameter: restarting {pod}"),
        "instancesStatus": {"healthy": healthy, "failed": [pod]},
    })
}

fn healthy_status(instances: &[String], primary: &str) -> Value {
    json!({
        "instances": instances.len(),
        "readyInstances": instances.len(),
        "currentPrimary": primary,
        "targetPrimary": primary,
        "currentPrimaryTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "phase": "Cluster in healthy state",
        "phaseReason": "",
        "instancesStatus": {"healthy": instances, "failed": null},
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Model, tests::value};
    use super::*;

    fn cluster(status: Value) -> Value {
        json!({"metadata": {"namespace": "p", "name": "pg"}, "spec": {"instances": 3}, "status": status})
    }

    fn seen(c: Value) -> Objects {
        Objects::from([("Cluster", vec![c])])
    }

    #[test]
    fn temp_files_grow_until_work_mem_fits_the_sorts() {
        let mut m = Model::default();
        let k = key("Cluster", "p", "pg");
        let with = |work_mem: &str| {
            let mut c = cluster(json!({"currentPrimary": "pg-1"}));
            c["spec"]["postgresql"] = json!({"parameters": {"work_mem": work_mem}});
            c
        };
        m.observe(&seen(with("4MB")));
        assert!(m.healthy(Fault::TempFileGrowth, &k));
        assert!(m.inject(Fault::TempFileGrowth, k.clone()));
        assert!(!m.healthy(Fault::TempFileGrowth, &k));
        m.advance(1.0);
        let temp = |m: &Model| {
            value(
                &m.exposition(),
                "cnpg_pg_stat_database_temp_bytes{namespace=\"p\",pod=\"pg-1\",datname=\"app\"}",
            )
        };
        assert_eq!(temp(&m), TEMP_BYTES_NORMAL + TEMP_BYTES_SPILL);
        // The agent doubles work_mem: the sorts fit.
        m.observe(&seen(with("8MB")));
        assert!(m.healthy(Fault::TempFileGrowth, &k));
        assert_eq!(pg_bytes("512kB"), Some(512.0 * 1024.0));
        assert_eq!(pg_bytes("1GB"), Some(1024.0 * 1024.0 * 1024.0));
    }

    #[test]
    fn more_max_connections_after_a_rolling_restart_end_the_exhaustion() {
        let mut m = Model::default();
        let k = key("Cluster", "p", "pg");
        let with = |max: &str, status: Value| {
            let mut c = cluster(status);
            c["spec"]["postgresql"] = json!({"parameters": {"max_connections": max}});
            c
        };
        let boot = m.observe(&seen(with("100", json!({}))));
        let healthy = boot[0].status.clone();
        m.advance(1.0);
        let ratio = |m: &Model| {
            let text = m.exposition();
            let backends: f64 = (1..=3)
                .map(|i| {
                    value(
                        &text,
                        &format!("cnpg_backends_total{{namespace=\"p\",pod=\"pg-{i}\",datname=\"app\",usename=\"app\",application_name=\"payments\",state=\"active\"}}"),
                    )
                })
                .sum();
            let max = (1..=3)
                .map(|i| {
                    value(
                        &text,
                        &format!("cnpg_pg_settings_setting{{namespace=\"p\",pod=\"pg-{i}\",name=\"max_connections\"}}"),
                    )
                })
                .fold(0.0, f64::max);
            backends / max
        };
        assert!((ratio(&m) - 0.4).abs() < 1e-9);
        assert!(m.healthy(Fault::ConnectionExhaustion, &k));
        // The application's backends climb toward max_connections.
        assert!(m.inject(Fault::ConnectionExhaustion, k.clone()));
        m.advance(5.0);
        assert!(ratio(&m) > 0.6 && ratio(&m) < 0.9, "{}", ratio(&m));
        m.advance(60.0);
        assert!((ratio(&m) - 0.95).abs() < 1e-9);
        assert!(!m.healthy(Fault::ConnectionExhaustion, &k));
        // The agent raises max_connections: CNPG rolls the replicas, then
        // the primary; the setting is served once each has restarted.
        let patches = m.observe(&seen(with("125", healthy.clone())));
        assert_eq!(patches.len(), 1);
        assert_eq!(patches[0].status["phase"], "Applying configuration");
        assert_eq!(patches[0].status["instancesStatus"]["failed"][0], "pg-2");
        assert!(!m.healthy(Fault::ConnectionExhaustion, &k));
        let mut phases = Vec::new();
        for _ in 0..3 {
            // Seen mid-restart: no second rolling restart.
            assert!(m.observe(&seen(with("125", healthy.clone()))).is_empty());
            for p in m.advance(RESTART_SECONDS) {
                phases.push(p.status["phase"].as_str().unwrap_or_default().to_string());
            }
        }
        assert_eq!(
            phases,
            [
                "Applying configuration",
                "Applying configuration",
                "Cluster in healthy state"
            ]
        );
        assert!(m.observe(&seen(with("125", healthy))).is_empty());
        assert!((ratio(&m) - 95.0 / 125.0).abs() < 1e-9);
        assert!(m.healthy(Fault::ConnectionExhaustion, &k));
    }

    #[test]
    fn a_switchover_moves_the_primary_away_from_the_degrading_instance() {
        let mut m = Model::default();
        let k = key("Cluster", "p", "pg");
        // A new Cluster is bootstrapped: pg-1 primary, all healthy.
        let boot = m.observe(&seen(cluster(json!({}))));
        assert_eq!(boot.len(), 1);
        assert_eq!(boot[0].kind, "Cluster");
        assert_eq!(boot[0].status["currentPrimary"], "pg-1");
        assert_eq!(boot[0].status["instancesStatus"]["healthy"][2], "pg-3");
        let healthy = boot[0].status.clone();
        assert!(m.observe(&seen(cluster(healthy.clone()))).is_empty());
        assert!(m.inject(Fault::PrimaryDegradation, k.clone()));
        m.advance(10.0);
        let failed = |m: &Model, pod: &str| {
            value(
                &m.exposition(),
                &format!("cnpg_pg_stat_archiver_failed_count{{namespace=\"p\",pod=\"{pod}\"}}"),
            )
        };
        assert_eq!(failed(&m, "pg-1"), 5.0);
        assert!(!m.healthy(Fault::PrimaryDegradation, &k));
        // The agent asks for pg-2; CNPG takes a few seconds.
        let mut asked = healthy.clone();
        asked["targetPrimary"] = json!("pg-2");
        m.observe(&seen(cluster(asked)));
        assert!(m.advance(1.0).is_empty());
        let done = m.advance(SWITCHOVER_SECONDS);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].status["currentPrimary"], "pg-2");
        assert!(m.healthy(Fault::PrimaryDegradation, &k));
        // The old primary no longer archives: no new failures.
        m.advance(10.0);
        assert_eq!(failed(&m, "pg-1"), 7.0);
        assert_eq!(
            value(
                &m.exposition(),
                "cnpg_pg_replication_in_recovery{namespace=\"p\",pod=\"pg-1\"}"
            ),
            1.0
        );
    }
}
