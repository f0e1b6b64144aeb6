//! A simulated estate that reacts to the agent: for the sandbox and the
//! end-to-end tests, never part of the agent.
//!
//! It plays the parts the agent only ever talks to through the API server
//! and Prometheus: the services' and operators' metric exporters (under the
//! real names and labels, on one [`Exporter`] a real Prometheus scrapes),
//! and the third-party operators themselves (they move their resources'
//! status the way the real operator does, with realistic delays; see
//! `../shared/OPERATORS.md`).
//!
//! The metrics follow the resources as they are now, so they react to the
//! agent's patches. Faults ([`Fault`]) are injected by name and never heal
//! on a timer: only an action (or ending the fault, for a traffic surge)
//! brings the estate back.
//!
//! One [`Part`] per operator or service, each in its own module, each pure
//! (resources and faults in, status patches and exposition out):
//!
//! - [`gateway`]: the PaymentGateways' exporters (`payments_gateway_*`);
//!   more replicas (or a higher HPA floor) → lower saturation and latency;
//!   a bad release answers with errors until the good version is served
//!   again; their containers' memory (cAdvisor, kube-state-metrics) leaks
//!   until a raised limit holds it;
//! - [`cnpg`]: CloudNativePG, operator and exporter (`cnpg_*`): a
//!   switchover moves the primary away from a degrading instance; a larger
//!   `work_mem` stops the temp-file spill; a higher `max_connections`,
//!   applied with a rolling restart, ends a connection exhaustion;
//! - [`strimzi`]: Strimzi (Kafka, KafkaNodePool, KafkaTopic) and the
//!   brokers' and kafka-exporter's metrics: one broker more (with
//!   auto-rebalancing on scale-up) relieves a broker whose disk cannot
//!   keep up, and its partitions are fully replicated again;
//! - [`redis`], [`argocd`], [`istio`]: a Redis Enterprise database, an
//!   Argo CD Application and Istio VirtualServices, healthy (no faults):
//!   the rest of the estate, so the agent is seen to leave it alone;
//! - [`certmanager`]: cert-manager, controller and exporter
//!   (`certmanager_certificate_*`): a renewal asked for (`Issuing=True`)
//!   issues a new certificate;
//! - [`externalsecrets`]: External Secrets, controller and exporter
//!   (`externalsecret_*`): a forced refresh syncs a failed ExternalSecret.
//!
//! [`Model`] holds the parts; [`Estate`] drives it every `tick` against a
//! cluster. To add a part: a module with a type implementing [`Part`], a
//! field of [`Model`] and its entry in [`Model::parts`] and
//! [`Model::parts_mut`]; its faults in [`Fault`].

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use super::prometheus::Exporter;

pub mod argocd;
pub mod certmanager;
pub mod cnpg;
pub mod externalsecrets;
pub mod gateway;
pub mod istio;
pub mod redis;
pub mod strimzi;

pub use cnpg::{
    ARCHIVE_FAILURES_PER_SECOND, SORT_MEMORY, SWITCHOVER_SECONDS, TEMP_BYTES_NORMAL,
    TEMP_BYTES_SPILL,
};
pub use gateway::{
    BAD_RELEASE_ERROR_SHARE, LEAK_PEAK_SHARE, LEAK_PER_SECOND, MEMORY_BASE_SHARE, NORMAL_LOAD,
    REQUEST_RATE, SLOTS_PER_POD, SURGE_FACTOR, next_release, serving_replicas, tail_latency,
};

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
    /// Kafka under-replication: the disk of one broker of a KafkaNodePool
    /// degrades to [`strimzi::DEGRADED_SHARE`] of the replication traffic
    /// it was writing, so it cannot keep up as a follower and drops out of
    /// the in-sync replicas of the partitions it follows. Only less traffic
    /// on it heals it: a broker more, whose new node Strimzi's auto-rebalance
    /// on scale-up (`spec.cruiseControl.autoRebalance: add-brokers`) moves
    /// replicas onto, taking them from the most loaded brokers first. See
    /// [`strimzi`].
    KafkaUnderReplication,
    /// A Certificate is 9 days from expiry: its automatic renewal failed
    /// (the issuer did not answer) and cert-manager backs off 32 h; the
    /// issuer answers again (see [`certmanager`]).
    CertificateExpiry,
    /// The store behind an ExternalSecret had an outage: its syncs failed,
    /// it is Ready=False, and ESO's backed-off retry is far away though the
    /// store answers again (see [`externalsecrets`]).
    SecretStoreFailure,
    /// The application's backends on the primary climb to 95 % of
    /// `max_connections` (its pools grew).
    ConnectionExhaustion,
    /// The next release of a PaymentGateway ([`next_release`]) is deployed
    /// ([`Estate::deploy`] patches `spec.version`, as a pipeline would) and
    /// answers [`BAD_RELEASE_ERROR_SHARE`] of requests with a 5xx while its
    /// pods serve it.
    BadRelease,
    /// A PaymentGateway's containers leak memory up to
    /// [`LEAK_PEAK_SHARE`] of their memory limit: OOM kills and restarts
    /// until the limit is raised above it.
    MemoryLeak,
}

/// What a scenario of a [`Fault`] expects of the agent, for the sandbox's
/// table and the end-to-end tests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Answer {
    /// The default runbook (`rules/`) that answers the fault.
    pub runbook: &'static str,
    /// The model signal (`models/`) of the fault's kind the runbook acts
    /// on: where the fault shows first.
    pub signal: &'static str,
    /// The detector whose findings show it (the agent's findings counter is
    /// by kind and detector).
    pub detector: &'static str,
    /// The seed's figure for this use case.
    pub seed: &'static str,
    /// Seconds of normal data the detector needs before the fault, or it
    /// would learn the fault as normal (at the sandbox's 2 s cycle).
    pub warmup_seconds: f64,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::TrafficSurge,
        Fault::PrimaryDegradation,
        Fault::TempFileGrowth,
        Fault::KafkaUnderReplication,
        Fault::CertificateExpiry,
        Fault::SecretStoreFailure,
        Fault::ConnectionExhaustion,
        Fault::BadRelease,
        Fault::MemoryLeak,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Fault::TrafficSurge => "traffic-surge",
            Fault::PrimaryDegradation => "primary-degradation",
            Fault::TempFileGrowth => "temp-file-growth",
            Fault::KafkaUnderReplication => "kafka-under-replication",
            Fault::CertificateExpiry => "certificate-expiry",
            Fault::SecretStoreFailure => "secret-store-failure",
            Fault::ConnectionExhaustion => "connection-exhaustion",
            Fault::BadRelease => "bad-release",
            Fault::MemoryLeak => "memory-leak",
        }
    }

    /// The kind of resource the fault hits.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::TrafficSurge | Fault::BadRelease | Fault::MemoryLeak => "PaymentGateway",
            Fault::PrimaryDegradation | Fault::TempFileGrowth => "Cluster",
            Fault::KafkaUnderReplication => "KafkaNodePool",
            Fault::CertificateExpiry => "Certificate",
            Fault::SecretStoreFailure => "ExternalSecret",
            Fault::ConnectionExhaustion => "Cluster",
        }
    }

    /// What the agent is expected to do about it.
    pub fn answer(&self) -> Answer {
        match self {
            Fault::TrafficSurge => Answer {
                runbook: "autoscale-gateway",
                signal: "saturation",
                detector: "forecast",
                seed: "scaling 1 min",
                warmup_seconds: 0.0,
            },
            // The WAL archive failures' MAD warms up over 20 samples, and
            // its calibration must have scored normal data before the
            // fault: a departure is ranked against the memory as it was
            // when the departure began, and an empty one ranks nothing.
            Fault::PrimaryDegradation => Answer {
                runbook: "cnpg-switchover",
                signal: "wal_archive_failures",
                detector: "mad",
                seed: "failover 1-2 min",
                warmup_seconds: 80.0,
            },
            // The temp-file rate's detector learns the normal level over 60
            // samples.
            Fault::TempFileGrowth => Answer {
                runbook: "cnpg-work-mem",
                signal: "temp_bytes_rate",
                detector: "ewma",
                seed: "MTTR 5 min",
                warmup_seconds: 150.0,
            },
            // The under-replicated partitions' MAD detector warms up over
            // 20 samples.
            Fault::KafkaUnderReplication => Answer {
                runbook: "kafka-scale",
                signal: "under_replicated_partitions",
                detector: "mad",
                seed: "MTTR 5 min",
                warmup_seconds: 60.0,
            },
            // The forecast needs 3 samples of the time left.
            Fault::CertificateExpiry => Answer {
                runbook: "cert-renew",
                signal: "seconds_to_expiry",
                detector: "forecast",
                seed: "MTTR 5 min",
                warmup_seconds: 10.0,
            },
            // The sync errors' detector warms up over 20 samples.
            Fault::SecretStoreFailure => Answer {
                runbook: "externalsecret-refresh",
                signal: "sync_errors",
                detector: "mad",
                seed: "MTTR 5 min",
                warmup_seconds: 60.0,
            },
            // The connections' forecast warms up over 20 samples; later
            // still, so that with `--scenario all` its action on the
            // Cluster comes after temp-file growth's and the 60 s cooldown
            // (that one's EWMA finding lasts only moments).
            Fault::ConnectionExhaustion => Answer {
                runbook: "cnpg-max-connections",
                signal: "connections_ratio",
                detector: "forecast",
                seed: "MTTR 5 min",
                warmup_seconds: 240.0,
            },
            // The error rate's detector learns the normal level over 60
            // samples.
            Fault::BadRelease => Answer {
                runbook: "rollback-on-error-rate",
                signal: "error_rate",
                detector: "ewma",
                seed: "MTTR 5 min",
                warmup_seconds: 150.0,
            },
            Fault::MemoryLeak => Answer {
                runbook: "vertical-scale-memory",
                signal: "memory_usage",
                detector: "forecast",
                seed: "MTTR 5 min",
                warmup_seconds: 30.0,
            },
        }
    }

    /// Whether the fault can start on `resource` (as listed): a memory leak
    /// needs a memory limit to run into.
    pub fn fits(&self, resource: &Value) -> bool {
        match self {
            Fault::MemoryLeak => resource["spec"]["resources"]["limits"]["memory"].is_string(),
            _ => true,
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

/// A kind of resource a [`Part`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
}

impl SimKind {
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }

    /// The name of its CustomResourceDefinition.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    /// Whether its CRD has a `/status` subresource: Argo CD's Application
    /// has none, so its controller writes `status` on the resource itself.
    pub fn status_subresource(&self) -> bool {
        !(self.group == "argoproj.io" && self.kind == "Application")
    }
}

/// The objects of the estate as they are now, as JSON, by kind.
pub type Objects = BTreeMap<&'static str, Vec<Value>>;

/// What a simulated operator wants written: a status merge patch (to the
/// `/status` subresource, or to the resource when its kind has none; see
/// [`SimKind::status_subresource`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StatusPatch {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub status: Value,
}

/// One operator or service of the estate: pure, driven by [`Model`].
pub trait Part: Send + std::fmt::Debug {
    /// The kinds it reads (listed every tick, given to
    /// [`Part::observe`]).
    fn kinds(&self) -> &'static [SimKind];
    /// Takes in its resources as they are now; returns the status patches
    /// its operator sends.
    fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch>;
    /// Advances it by `dt` seconds; returns the status patches of what
    /// completed meanwhile. The default, for a part with nothing under
    /// way, completes nothing.
    fn advance(&mut self, _dt: f64) -> Vec<StatusPatch> {
        Vec::new()
    }
    /// Starts `fault` on `key` (of one of its kinds); false when it has no
    /// such resource (yet) or the fault is not its. The default, for a
    /// healthy-only part, takes no fault.
    fn inject(&mut self, _fault: &Fault, _key: &Key) -> bool {
        false
    }
    /// Ends `fault` on `key`.
    fn end(&mut self, _fault: &Fault, _key: &Key) {}
    /// Whether `key` is healthy as `fault` sees it (false when unknown,
    /// and for a part that takes no fault).
    fn healthy(&self, _fault: &Fault, _key: &Key) -> bool {
        false
    }
    /// Appends its Prometheus text exposition.
    fn exposition(&self, out: &mut String);
    /// Sets the load of the moment as a share of normal (1.0; a daily
    /// swing and noise in `autopilot detect ops`'s corpus). A part whose
    /// metrics follow the load scales them by it; the default ignores it.
    fn set_load(&mut self, _load: f64) {}
}

/// The estate's state: its parts, driven by [`Model::observe`] and
/// [`Model::advance`], read by [`Model::exposition`].
#[derive(Clone, Debug, Default)]
pub struct Model {
    gateways: gateway::Gateways,
    postgres: cnpg::Clusters,
    kafka: strimzi::Kafkas,
    redis: redis::Databases,
    argocd: argocd::Applications,
    istio: istio::VirtualServices,
    certificates: certmanager::Certificates,
    external_secrets: externalsecrets::ExternalSecrets,
}

impl Model {
    fn parts(&self) -> [&dyn Part; 8] {
        [
            &self.gateways,
            &self.postgres,
            &self.kafka,
            &self.redis,
            &self.argocd,
            &self.istio,
            &self.certificates,
            &self.external_secrets,
        ]
    }

    fn parts_mut(&mut self) -> [&mut dyn Part; 8] {
        [
            &mut self.gateways,
            &mut self.postgres,
            &mut self.kafka,
            &mut self.redis,
            &mut self.argocd,
            &mut self.istio,
            &mut self.certificates,
            &mut self.external_secrets,
        ]
    }

    /// Every kind the estate reads.
    pub fn kinds() -> Vec<SimKind> {
        let model = Model::default();
        model
            .parts()
            .iter()
            .flat_map(|p| p.kinds().iter().copied())
            .collect()
    }

    /// The kind named `kind`, if the estate reads it.
    pub fn kind(kind: &str) -> Option<SimKind> {
        Model::kinds().into_iter().find(|k| k.kind == kind)
    }

    fn part_of(&mut self, kind: &str) -> Option<&mut dyn Part> {
        self.parts_mut()
            .into_iter()
            .find(|p| p.kinds().iter().any(|k| k.kind == kind))
    }

    /// Takes in the resources as they are now; returns the status patches
    /// the simulated operators send.
    pub fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch> {
        self.parts_mut()
            .into_iter()
            .flat_map(|p| p.observe(objects))
            .collect()
    }

    /// Advances the estate by `dt` seconds; returns the status patches of
    /// what completed meanwhile.
    pub fn advance(&mut self, dt: f64) -> Vec<StatusPatch> {
        self.parts_mut()
            .into_iter()
            .flat_map(|p| p.advance(dt))
            .collect()
    }

    /// Starts `fault` on the resource `key`; false when the estate has no
    /// such resource (yet).
    pub fn inject(&mut self, fault: Fault, key: Key) -> bool {
        self.part_of(fault.kind())
            .is_some_and(|p| p.inject(&fault, &key))
    }

    /// Ends `fault` on `key` (a surge passes; a degradation is repaired).
    pub fn end(&mut self, fault: Fault, key: &Key) {
        if let Some(p) = self.part_of(fault.kind()) {
            p.end(&fault, key);
        }
    }

    /// Saturation of a gateway now (in-flight over slots), if it exists.
    pub fn saturation(&self, key: &Key) -> Option<f64> {
        self.gateways.saturation(key)
    }

    /// The spec change that deploys `fault` on `key`, as a merge patch:
    /// the bad version of a started bad release; `None` for faults that are
    /// no deploy.
    pub fn deploy_patch(&self, fault: &Fault, key: &Key) -> Option<Value> {
        match fault {
            Fault::BadRelease => self.gateways.release_patch(key),
            _ => None,
        }
    }

    /// Whether `key` is healthy as its fault sees it.
    pub fn healthy(&self, fault: Fault, key: &Key) -> bool {
        self.parts()
            .into_iter()
            .find(|p| p.kinds().iter().any(|k| k.kind == fault.kind()))
            .is_some_and(|p| p.healthy(&fault, key))
    }

    /// Sets the load of the moment (see [`Part::set_load`]).
    pub fn set_load(&mut self, load: f64) {
        for p in self.parts_mut() {
            p.set_load(load);
        }
    }

    /// The Prometheus text exposition of every exporter of the estate.
    pub fn exposition(&self) -> String {
        let mut out = String::new();
        for p in self.parts() {
            p.exposition(&mut out);
        }
        out
    }
}

fn ns_of(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or_default()
}

fn name_of(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

/// The estate simulator running against a cluster: reads the resources of
/// `namespaces`, plays their operators, and serves the metrics on an
/// [`Exporter`]. Stops when dropped.
pub struct Estate {
    client: Client,
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
        let (m, e, c) = (model.clone(), exporter.clone(), client.clone());
        let task = tokio::spawn(async move {
            let kinds = Model::kinds();
            let mut last = tokio::time::Instant::now();
            loop {
                let mut objects = Objects::new();
                for kind in &kinds {
                    let resource = kind.api_resource();
                    let seen = objects.entry(kind.kind).or_default();
                    for ns in &namespaces {
                        seen.extend(list(&client, ns, &resource).await);
                    }
                }
                let now = tokio::time::Instant::now();
                let dt = (now - last).as_secs_f64();
                last = now;
                let patches = {
                    let Ok(mut model) = m.lock() else { return };
                    let mut p = model.observe(&objects);
                    p.extend(model.advance(dt));
                    e.set(model.exposition());
                    p
                };
                for p in patches {
                    let Some(kind) = kinds.iter().find(|k| k.kind == p.kind) else {
                        continue;
                    };
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), &p.namespace, &kind.api_resource());
                    let (params, patch) = (
                        PatchParams::default(),
                        Patch::Merge(json!({"status": p.status})),
                    );
                    let sent = if kind.status_subresource() {
                        api.patch_status(&p.name, &params, &patch).await
                    } else {
                        api.patch(&p.name, &params, &patch).await
                    };
                    if let Err(error) = sent {
                        tracing::warn!(kind = p.kind, namespace = %p.namespace, name = %p.name, %error, "simulated operator: status patch failed");
                    }
                }
                tokio::time::sleep(tick).await;
            }
        });
        Ok(Estate {
            client: c,
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

    /// Makes the change that brings an injected `fault` about, as the
    /// person or pipeline behind it would (a bad release: `spec.version`
    /// and the image tag, patched with the estate's own credentials);
    /// nothing for faults that are no deploy. Returns the patch sent.
    pub async fn deploy(
        &self,
        fault: Fault,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, kube::Error> {
        let k = key(fault.kind(), namespace, name);
        let patch = self
            .model
            .lock()
            .ok()
            .and_then(|m| m.deploy_patch(&fault, &k));
        let (Some(patch), Some(kind)) = (patch, Model::kind(fault.kind())) else {
            return Ok(None);
        };
        Api::<DynamicObject>::namespaced_with(self.client.clone(), namespace, &kind.api_resource())
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(Some(patch))
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
pub(crate) mod tests {
    use super::*;

    /// The value of `series` (name and labels, as exposed) in `text`.
    pub(crate) fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn every_fault_goes_to_a_part_that_reads_its_kind() {
        for f in Fault::ALL {
            assert!(Model::kind(f.kind()).is_some(), "{f:?}");
            assert_eq!(Fault::parse(f.name()), Some(f.clone()));
        }
        // A fault on a resource the estate has not seen is not injected.
        let mut m = Model::default();
        assert!(!m.inject(Fault::TrafficSurge, key("PaymentGateway", "p", "none")));
        assert!(!m.healthy(Fault::TrafficSurge, &key("PaymentGateway", "p", "none")));
    }
}
