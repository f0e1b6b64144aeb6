//! A simulated estate that reacts to the agent: for the sandbox and the
//! end-to-end tests, never part of the agent.
//!
//! It plays two parts the agent only ever talks to through the API server
//! and Prometheus:
//!
//! - the services' and operators' metric exporters: every PaymentGateway
//!   serves `payments_gateway_*` (docs/payments-metrics.md) and every
//!   CloudNativePG `Cluster` serves `cnpg_*` per instance pod, under the real
//!   names and labels, on one [`Exporter`] a real Prometheus scrapes;
//! - the CloudNativePG operator: it gives a new Cluster its instances and
//!   primary (status), and carries out a switchover the way CNPG does (a
//!   status `targetPrimary` different from `currentPrimary` → after a few
//!   seconds the target is primary, `currentPrimary` follows).
//!
//! The metrics follow the resources as they are now, so they react to the
//! agent's patches: more gateway replicas (or a higher HPA floor) → lower
//! saturation and latency; a switchover → the degrading instance no longer
//! archives WAL, so its failures stop. Faults ([`Fault`]) are injected by
//! name and never heal on a timer: only an action (or ending the fault, for
//! a traffic surge) brings the estate back.
//!
//! The model is [`Model`] (pure: resources and faults in, exposition out);
//! [`Estate`] drives it every `tick` against a cluster.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use super::prometheus::Exporter;

/// In-flight slots per gateway pod (`payments_gateway_max_inflight_requests`
/// is this times the serving replicas).
pub const SLOTS_PER_POD: f64 = 50.0;
/// Normal demand: this share of the slots the gateway had when first seen.
pub const NORMAL_LOAD: f64 = 0.4;
/// A traffic surge multiplies the demand by this (0.4 → 0.96 of the slots).
pub const SURGE_FACTOR: f64 = 2.4;
/// Requests per second a gateway serves normally.
pub const REQUEST_RATE: f64 = 200.0;
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

/// A fault by name (`autopilot sandbox --scenario`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Demand on a PaymentGateway rises to [`SURGE_FACTOR`] times normal.
    TrafficSurge,
    /// WAL archiving fails on the instance that is primary when the fault
    /// starts (its object store credentials broke): only a primary archives,
    /// so the failures stop once it is no longer primary.
    PrimaryDegradation,
    /// A new report's sorts need [`SORT_MEMORY`]: with less `work_mem` the
    /// primary spills them to temporary files, the more the less it has.
    TempFileGrowth,
}

impl Fault {
    pub const ALL: [Fault; 3] = [
        Fault::TrafficSurge,
        Fault::PrimaryDegradation,
        Fault::TempFileGrowth,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Fault::TrafficSurge => "traffic-surge",
            Fault::PrimaryDegradation => "primary-degradation",
            Fault::TempFileGrowth => "temp-file-growth",
        }
    }

    /// The kind of resource the fault hits.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::TrafficSurge => "PaymentGateway",
            Fault::PrimaryDegradation | Fault::TempFileGrowth => "Cluster",
        }
    }

    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A resource of the estate: kind, namespace, name.
pub type Key = (String, String, String);

fn key(kind: &str, ns: &str, name: &str) -> Key {
    (kind.to_string(), ns.to_string(), name.to_string())
}

/// Latency histogram buckets (seconds) of the gateways.
const BUCKETS: [f64; 6] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Clone, Debug, Default)]
struct Gateway {
    /// Demand in in-flight requests at normal load.
    normal_demand: f64,
    /// Pods serving now (spec.replicas, or the HPA floor with autoscaling).
    serving: f64,
    requests: f64,
    errors: f64,
    /// Cumulative counts per bucket of [`BUCKETS`], then +Inf.
    buckets: [f64; 7],
    sum: f64,
}

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
    /// `cnpg_pg_stat_database_temp_bytes` per instance.
    temp_bytes: BTreeMap<String, f64>,
}

/// The estate's state: pure, driven by [`Model::observe`] and
/// [`Model::advance`], read by [`Model::exposition`].
#[derive(Clone, Debug, Default)]
pub struct Model {
    gateways: BTreeMap<Key, Gateway>,
    clusters: BTreeMap<Key, PgCluster>,
    faults: BTreeSet<(Fault, Key)>,
}

/// What the simulated operator wants written: a status merge patch of a
/// CloudNativePG Cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusPatch {
    pub namespace: String,
    pub name: String,
    pub status: Value,
}

/// Serving pods of a PaymentGateway as its spec asks: the HPA floor with
/// autoscaling on, else `spec.replicas` (at least one).
pub fn serving_replicas(gateway: &Value) -> f64 {
    let spec = &gateway["spec"];
    let n = if spec["autoscaling"]["enabled"] == json!(true) {
        spec["autoscaling"]["minReplicas"].as_i64()
    } else {
        spec["replicas"].as_i64()
    };
    n.unwrap_or(1).max(1) as f64
}

impl Model {
    /// Takes in the resources as they are now; returns the status patches
    /// the simulated CloudNativePG operator sends (a new Cluster gets its
    /// instances; a switchover that has been requested starts).
    pub fn observe(&mut self, gateways: &[Value], clusters: &[Value]) -> Vec<StatusPatch> {
        let mut seen = BTreeSet::new();
        for g in gateways {
            let k = key("PaymentGateway", ns_of(g), name_of(g));
            let serving = serving_replicas(g);
            let gw = self.gateways.entry(k.clone()).or_insert_with(|| Gateway {
                normal_demand: NORMAL_LOAD * SLOTS_PER_POD * serving,
                ..Gateway::default()
            });
            gw.serving = serving;
            seen.insert(k);
        }
        self.gateways.retain(|k, _| seen.contains(k));
        let mut patches = Vec::new();
        let mut seen = BTreeSet::new();
        for c in clusters {
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
            if cluster.instances.is_empty() {
                cluster.instances = (1..=n).map(|i| format!("{name}-{i}")).collect();
            }
            let Some(current) = status["currentPrimary"].as_str() else {
                // A new Cluster: CNPG bootstraps its first instance as primary.
                cluster.primary = cluster.instances[0].clone();
                patches.push(StatusPatch {
                    namespace: ns.into(),
                    name: name.into(),
                    status: healthy_status(&cluster.instances, &cluster.primary),
                });
                continue;
            };
            cluster.primary = current.to_string();
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

    /// Advances the estate by `dt` seconds; returns the status patches of
    /// switchovers that completed.
    pub fn advance(&mut self, dt: f64) -> Vec<StatusPatch> {
        for (k, gw) in &mut self.gateways {
            let surge = if self.faults.contains(&(Fault::TrafficSurge, k.clone())) {
                SURGE_FACTOR
            } else {
                1.0
            };
            let saturation = gw.saturation(surge);
            let n = REQUEST_RATE * surge * dt;
            gw.requests += n;
            gw.errors += n * 0.001;
            // 95 % fast; the slowest 5 % at the tail latency of the moment.
            let tail = tail_latency(saturation);
            gw.observe_latency(0.03, n * 0.95);
            gw.observe_latency(tail, n * 0.05);
        }
        let mut patches = Vec::new();
        for (k, c) in &mut self.clusters {
            let (_, ns, name) = k;
            let spilling = self.faults.contains(&(Fault::TempFileGrowth, k.clone()));
            *c.temp_bytes.entry(c.primary.clone()).or_default() += c.temp_rate(spilling) * dt;
            if let Some(bad) = &c.degrading
                && *bad == c.primary
            {
                *c.archive_failed.entry(bad.clone()).or_default() +=
                    ARCHIVE_FAILURES_PER_SECOND * dt;
            }
            if let Some((target, left)) = &mut c.switching {
                *left -= dt;
                if *left <= 0.0 {
                    c.primary = target.clone();
                    c.switching = None;
                    patches.push(StatusPatch {
                        namespace: ns.clone(),
                        name: name.clone(),
                        status: healthy_status(&c.instances, &c.primary),
                    });
                }
            }
        }
        patches
    }

    /// Starts `fault` on the resource `key`; false when the estate has no
    /// such resource (yet).
    pub fn inject(&mut self, fault: Fault, key: Key) -> bool {
        match fault {
            Fault::PrimaryDegradation => {
                let Some(c) = self.clusters.get_mut(&key) else {
                    return false;
                };
                c.degrading = Some(c.primary.clone());
            }
            Fault::TempFileGrowth if !self.clusters.contains_key(&key) => return false,
            Fault::TrafficSurge if !self.gateways.contains_key(&key) => return false,
            _ => {}
        }
        self.faults.insert((fault, key));
        true
    }

    /// Ends `fault` on `key` (a surge passes; a degradation is repaired).
    pub fn end(&mut self, fault: Fault, key: &Key) {
        if fault == Fault::PrimaryDegradation
            && let Some(c) = self.clusters.get_mut(key)
        {
            c.degrading = None;
        }
        self.faults.remove(&(fault, key.clone()));
    }

    /// Saturation of a gateway now (in-flight over slots), if it exists.
    pub fn saturation(&self, key: &Key) -> Option<f64> {
        let surge = if self.faults.contains(&(Fault::TrafficSurge, key.clone())) {
            SURGE_FACTOR
        } else {
            1.0
        };
        self.gateways.get(key).map(|g| g.saturation(surge))
    }

    /// Whether `key` is healthy as its fault sees it: saturation under 0.9
    /// for a gateway; for a Cluster, the degrading instance not primary.
    pub fn healthy(&self, fault: Fault, key: &Key) -> bool {
        match fault {
            Fault::TrafficSurge => self.saturation(key).is_some_and(|s| s < 0.9),
            Fault::PrimaryDegradation => self
                .clusters
                .get(key)
                .is_some_and(|c| c.degrading.as_ref() != Some(&c.primary)),
            Fault::TempFileGrowth => self.clusters.get(key).is_some_and(|c| {
                c.temp_rate(self.faults.contains(&(Fault::TempFileGrowth, key.clone())))
                    < 2.0 * TEMP_BYTES_NORMAL
            }),
        }
    }

    /// The Prometheus text exposition of every exporter of the estate.
    pub fn exposition(&self) -> String {
        let mut out = String::from(
            "# TYPE payments_gateway_requests_total counter\n\
             # TYPE payments_gateway_request_duration_seconds histogram\n\
             # TYPE payments_gateway_inflight_requests gauge\n\
             # TYPE payments_gateway_max_inflight_requests gauge\n",
        );
        for (k @ (_, ns, name), g) in &self.gateways {
            let l = format!("namespace=\"{ns}\",gateway=\"{name}\"");
            let surge = if self.faults.contains(&(Fault::TrafficSurge, k.clone())) {
                SURGE_FACTOR
            } else {
                1.0
            };
            let slots = SLOTS_PER_POD * g.serving;
            let inflight = (g.demand(surge)).min(slots);
            out.push_str(&format!(
                "payments_gateway_inflight_requests{{{l}}} {inflight}\n\
                 payments_gateway_max_inflight_requests{{{l}}} {slots}\n\
                 payments_gateway_requests_total{{{l},method=\"POST\",code=\"200\"}} {:.0}\n\
                 payments_gateway_requests_total{{{l},method=\"POST\",code=\"500\"}} {:.0}\n",
                g.requests - g.errors,
                g.errors
            ));
            for (i, le) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "payments_gateway_request_duration_seconds_bucket{{{l},le=\"{le}\"}} {:.0}\n",
                    g.buckets[i]
                ));
            }
            out.push_str(&format!(
                "payments_gateway_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {:.0}\n\
                 payments_gateway_request_duration_seconds_sum{{{l}}} {}\n\
                 payments_gateway_request_duration_seconds_count{{{l}}} {:.0}\n",
                g.buckets[6], g.sum, g.buckets[6]
            ));
        }
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
                     cnpg_pg_settings_setting{{{l},name=\"max_connections\"}} 100\n\
                     cnpg_pg_stat_database_temp_bytes{{{l},datname=\"app\"}} {temp:.0}\n",
                    cluster = pod.rsplit_once('-').map_or(pod.as_str(), |(c, _)| c),
                    lag = if primary { 0.0 } else { 0.2 },
                    recovery = u8::from(!primary),
                    streaming = if primary { replicas } else { 0 },
                    backends = if primary { 30 } else { 5 },
                    temp = c.temp_bytes.get(pod).copied().unwrap_or(0.0),
                ));
            }
        }
        out
    }
}

impl PgCluster {
    /// Bytes per second the primary writes to temporary files.
    fn temp_rate(&self, spilling: bool) -> f64 {
        let short = if spilling {
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

impl Gateway {
    fn demand(&self, surge: f64) -> f64 {
        self.normal_demand * surge
    }

    fn saturation(&self, surge: f64) -> f64 {
        (self.demand(surge) / (SLOTS_PER_POD * self.serving)).min(1.0)
    }

    fn observe_latency(&mut self, seconds: f64, n: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.buckets[i] += n;
            }
        }
        self.buckets[6] += n;
        self.sum += seconds * n;
    }
}

/// The tail latency at a saturation: 80 ms while below 70 %, then rising
/// steeply (queueing) to 1.5 s when full.
pub fn tail_latency(saturation: f64) -> f64 {
    if saturation <= 0.7 {
        0.08
    } else {
        0.08 + (saturation - 0.7) / 0.3 * 1.42
    }
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
        "instancesStatus": {"healthy": instances},
    })
}

fn ns_of(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or_default()
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// The estate simulator running against a cluster: reads the resources of
/// `namespaces`, plays CloudNativePG, and serves the metrics on an
/// [`Exporter`]. Stops when dropped.
pub struct Estate {
    model: Arc<Mutex<Model>>,
    exporter: Arc<Exporter>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Estate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Estate {
    /// Starts the simulator on the current tokio runtime, updating every
    /// `tick`.
    pub fn start(
        client: Client,
        namespaces: Vec<String>,
        tick: Duration,
    ) -> Result<Estate, super::prometheus::Error> {
        let exporter = Arc::new(Exporter::start()?);
        let model = Arc::new(Mutex::new(Model::default()));
        let (m, e) = (model.clone(), exporter.clone());
        let task = tokio::spawn(async move {
            let gateways = resource("payments.io", "v1", "PaymentGateway", "paymentgateways");
            let clusters = resource("postgresql.cnpg.io", "v1", "Cluster", "clusters");
            let mut last = tokio::time::Instant::now();
            loop {
                let mut gws = Vec::new();
                let mut pgs = Vec::new();
                for ns in &namespaces {
                    gws.extend(list(&client, ns, &gateways).await);
                    pgs.extend(list(&client, ns, &clusters).await);
                }
                let now = tokio::time::Instant::now();
                let dt = (now - last).as_secs_f64();
                last = now;
                let patches = {
                    let Ok(mut model) = m.lock() else { return };
                    let mut p = model.observe(&gws, &pgs);
                    p.extend(model.advance(dt));
                    e.set(model.exposition());
                    p
                };
                for p in patches {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), &p.namespace, &clusters);
                    if let Err(error) = api
                        .patch_status(
                            &p.name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": p.status})),
                        )
                        .await
                    {
                        tracing::warn!(cluster = %p.name, %error, "simulated CloudNativePG: status patch failed");
                    }
                }
                tokio::time::sleep(tick).await;
            }
        });
        Ok(Estate {
            model,
            exporter,
            task,
        })
    }

    /// `host:port` of the estate's metrics, for Prometheus to scrape.
    pub fn metrics_addr(&self) -> &str {
        self.exporter.addr()
    }

    /// Starts `fault` on the resource `namespace`/`name` of its kind; false
    /// when the simulator has not seen that resource yet.
    pub fn inject(&self, fault: Fault, namespace: &str, name: &str) -> bool {
        let k = key(fault.kind(), namespace, name);
        self.model.lock().is_ok_and(|mut m| m.inject(fault, k))
    }

    /// Ends `fault` on `namespace`/`name`.
    pub fn end(&self, fault: Fault, namespace: &str, name: &str) {
        let k = key(fault.kind(), namespace, name);
        if let Ok(mut m) = self.model.lock() {
            m.end(fault, &k);
        }
    }

    /// Whether `namespace`/`name` is healthy as `fault` sees it.
    pub fn healthy(&self, fault: Fault, namespace: &str, name: &str) -> bool {
        let k = key(fault.kind(), namespace, name);
        self.model.lock().is_ok_and(|m| m.healthy(fault, &k))
    }

    /// Saturation of the gateway `namespace`/`name` now.
    pub fn saturation(&self, namespace: &str, name: &str) -> Option<f64> {
        let k = key("PaymentGateway", namespace, name);
        self.model.lock().ok().and_then(|m| m.saturation(&k))
    }
}

/// The objects of `resource` in `ns` as JSON; none when the list fails (the
/// kind not installed yet, the API server restarting).
async fn list(client: &Client, ns: &str, resource: &ApiResource) -> Vec<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, resource);
    match api.list(&ListParams::default()).await {
        Ok(l) => l
            .items
            .into_iter()
            .map(|mut o| {
                if o.namespace().is_none() {
                    o.metadata.namespace = Some(ns.to_string());
                }
                serde_json::to_value(o).unwrap_or_default()
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(min: i64) -> Value {
        json!({"metadata": {"namespace": "p", "name": "gw"},
               "spec": {"replicas": 3, "autoscaling": {"enabled": true, "minReplicas": min, "maxReplicas": 20}}})
    }

    fn cluster(status: Value) -> Value {
        json!({"metadata": {"namespace": "p", "name": "pg"}, "spec": {"instances": 3}, "status": status})
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn a_surge_saturates_the_gateway_and_more_replicas_relieve_it() {
        let mut m = Model::default();
        let k = key("PaymentGateway", "p", "gw");
        m.observe(&[gateway(3)], &[]);
        m.advance(1.0);
        assert!((m.saturation(&k).expect("a gateway") - 0.4).abs() < 1e-9);
        assert!(m.inject(Fault::TrafficSurge, k.clone()));
        assert!(!m.healthy(Fault::TrafficSurge, &k));
        let text = m.exposition();
        assert_eq!(
            value(
                &text,
                "payments_gateway_inflight_requests{namespace=\"p\",gateway=\"gw\"}"
            ),
            144.0
        );
        assert_eq!(
            value(
                &text,
                "payments_gateway_max_inflight_requests{namespace=\"p\",gateway=\"gw\"}"
            ),
            150.0
        );
        // The agent raises the HPA floor: the estate follows the spec.
        m.observe(&[gateway(4)], &[]);
        assert!(m.healthy(Fault::TrafficSurge, &k));
        assert!((m.saturation(&k).expect("a gateway") - 0.72).abs() < 1e-9);
        m.end(Fault::TrafficSurge, &k);
        assert!((m.saturation(&k).expect("a gateway") - 0.3).abs() < 1e-9);
        assert!(tail_latency(0.96) > 0.3 && tail_latency(0.72) < 0.3);
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
        m.observe(&[], &[with("4MB")]);
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
        m.observe(&[], &[with("8MB")]);
        assert!(m.healthy(Fault::TempFileGrowth, &k));
        assert_eq!(pg_bytes("512kB"), Some(512.0 * 1024.0));
        assert_eq!(pg_bytes("1GB"), Some(1024.0 * 1024.0 * 1024.0));
    }

    #[test]
    fn a_switchover_moves_the_primary_away_from_the_degrading_instance() {
        let mut m = Model::default();
        let k = key("Cluster", "p", "pg");
        // A new Cluster is bootstrapped: pg-1 primary, all healthy.
        let boot = m.observe(&[], &[cluster(json!({}))]);
        assert_eq!(boot.len(), 1);
        assert_eq!(boot[0].status["currentPrimary"], "pg-1");
        assert_eq!(boot[0].status["instancesStatus"]["healthy"][2], "pg-3");
        let healthy = boot[0].status.clone();
        assert!(m.observe(&[], &[cluster(healthy.clone())]).is_empty());
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
        m.observe(&[], &[cluster(asked)]);
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
