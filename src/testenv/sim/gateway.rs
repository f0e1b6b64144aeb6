//! The PaymentGateways' own exporters: `payments_gateway_*`
//! (docs/payments-metrics.md) per gateway, following its spec as it is now;
//! and what the kubelet's cAdvisor and kube-state-metrics report of their
//! `gateway` containers' memory (`container_memory_working_set_bytes`,
//! `kube_pod_container_resource_limits`, restarts and OOM kills).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Fault, Key, Objects, Part, SimKind, StatusPatch, key, name_of, ns_of};

/// In-flight slots per gateway pod (`payments_gateway_max_inflight_requests`
/// is this times the serving replicas).
pub const SLOTS_PER_POD: f64 = 50.0;
/// Normal demand: this share of the slots the gateway had when first seen.
pub const NORMAL_LOAD: f64 = 0.4;
/// A traffic surge multiplies the demand by this (0.4 → 0.96 of the slots).
pub const SURGE_FACTOR: f64 = 2.4;
/// Requests per second a gateway serves normally.
pub const REQUEST_RATE: f64 = 200.0;

/// Share of requests a bad release answers with a 5xx (normally 0.1 %).
pub const BAD_RELEASE_ERROR_SHARE: f64 = 0.08;
/// A gateway container's working set, as a share of its memory limit,
/// without a leak (or right after a restart).
pub const MEMORY_BASE_SHARE: f64 = 0.5;
/// Under a memory leak the working set grows by this share of the limit
/// (as it was when the leak started) per second ...
pub const LEAK_PER_SECOND: f64 = 0.01;
/// ... until it levels off at this share of that limit: above the limit,
/// so the container is OOM-killed and restarts until the limit is raised.
pub const LEAK_PEAK_SHARE: f64 = 1.1;
/// Working set of a gateway container without a memory limit.
const UNLIMITED_BASE_BYTES: f64 = 256.0 * 1024.0 * 1024.0;

/// Latency histogram buckets (seconds) of the gateways.
const BUCKETS: [f64; 6] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

const KINDS: &[SimKind] = &[SimKind {
    group: "payments.io",
    version: "v1",
    kind: "PaymentGateway",
    plural: "paymentgateways",
}];

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
    /// The version the pods serve (`status.currentVersion`, else
    /// `spec.version`), `spec.version` and `spec.image`.
    served: String,
    version: String,
    image: String,
    /// The container memory limit in bytes, if the spec sets one.
    limit: Option<f64>,
    /// Working set of each container now, in bytes.
    working_set: f64,
    /// Restarts of each container (OOM kills), since the gateway was seen.
    restarts: f64,
}

/// A memory leak: the working set grows by `rate` bytes a second up to
/// `peak` bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Leak {
    rate: f64,
    peak: f64,
}

/// Every PaymentGateway's exporter.
#[derive(Clone, Debug, Default)]
pub struct Gateways {
    gateways: BTreeMap<Key, Gateway>,
    surging: BTreeSet<Key>,
    /// The load of the moment, as a share of normal (see
    /// [`Part::set_load`]); `None` is normal.
    load: Option<f64>,
    /// Bad releases: the version that answers with errors, by gateway.
    bad_releases: BTreeMap<Key, String>,
    leaking: BTreeMap<Key, Leak>,
}

/// The release after `version`: the next minor (`1.5.0` → `1.6.0`,
/// `v2.4.1` → `v2.5.0`), what a bad release deploys.
pub fn next_release(version: &str) -> String {
    let (v, rest) = match version.strip_prefix('v') {
        Some(rest) => ("v", rest),
        None => ("", version),
    };
    let core = rest.split(['-', '+']).next().unwrap_or(rest);
    let mut parts = core.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    format!("{v}{major}.{}.0", minor + 1)
}

/// Bytes of a Kubernetes memory quantity (`512Mi`, `1Gi`, `500M`, `1e9`).
pub fn quantity_bytes(text: &str) -> Option<f64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e'))
        .unwrap_or(t.len());
    let n: f64 = t[..split].parse().ok()?;
    let unit = match &t[split..] {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    Some(n * unit)
}

/// Pod names of a gateway's containers, as its Deployment's ReplicaSet
/// names them (`<gateway>-<pod-template-hash>-<suffix>`).
fn pods(name: &str, serving: f64) -> impl Iterator<Item = String> + '_ {
    (0..serving as usize).map(move |i| format!("{name}-5d8f7c6b9-{:05x}", 0x1a2b3 + i * 7919))
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

/// The tail latency at a saturation: 80 ms while below 70 %, then rising
/// steeply (queueing) to 1.5 s when full.
pub fn tail_latency(saturation: f64) -> f64 {
    if saturation <= 0.7 {
        0.08
    } else {
        0.08 + (saturation - 0.7) / 0.3 * 1.42
    }
}

impl Gateways {
    /// The demand's multiple of normal on `k`: the load of the moment, and
    /// a surge.
    fn surge(&self, k: &Key) -> f64 {
        let load = self.load.unwrap_or(1.0);
        if self.surging.contains(k) {
            SURGE_FACTOR * load
        } else {
            load
        }
    }

    /// Saturation of a gateway now (in-flight over slots), if it exists.
    pub fn saturation(&self, k: &Key) -> Option<f64> {
        self.gateways.get(k).map(|g| g.saturation(self.surge(k)))
    }

    /// The share of requests a gateway answers with a 5xx now.
    fn error_share(&self, k: &Key, g: &Gateway) -> f64 {
        if self.bad_releases.get(k) == Some(&g.served) {
            BAD_RELEASE_ERROR_SHARE
        } else {
            0.001
        }
    }

    /// The merge patch that deploys a started bad release on `k`, as a
    /// deploy pipeline would send it: `spec.version`, and the image's tag
    /// when it carries one (admission wants them equal).
    pub fn release_patch(&self, k: &Key) -> Option<Value> {
        let bad = self.bad_releases.get(k)?;
        let g = self.gateways.get(k)?;
        let image = crate::crd::common::ImageRef::parse(&g.image);
        Some(if image.tag.is_some() || image.digest.is_some() {
            json!({"spec": {"version": bad, "image": image.for_version(&g.version, bad)}})
        } else {
            json!({"spec": {"version": bad}})
        })
    }
}

impl Part for Gateways {
    fn kinds(&self) -> &'static [SimKind] {
        KINDS
    }

    fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch> {
        let mut seen = BTreeSet::new();
        for g in objects.get("PaymentGateway").into_iter().flatten() {
            let k = key("PaymentGateway", ns_of(g), name_of(g));
            let serving = serving_replicas(g);
            let gw = self.gateways.entry(k.clone()).or_insert_with(|| Gateway {
                normal_demand: NORMAL_LOAD * SLOTS_PER_POD * serving,
                ..Gateway::default()
            });
            gw.serving = serving;
            gw.version = g["spec"]["version"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            gw.served = g["status"]["currentVersion"]
                .as_str()
                .unwrap_or(&gw.version)
                .to_string();
            gw.image = g["spec"]["image"].as_str().unwrap_or_default().to_string();
            let limit = g["spec"]["resources"]["limits"]["memory"]
                .as_str()
                .and_then(quantity_bytes);
            if gw.working_set == 0.0 || limit != gw.limit {
                // New pods (first seen, or rolled for a new limit) start
                // with the base working set.
                gw.working_set = limit.map_or(UNLIMITED_BASE_BYTES, |l| MEMORY_BASE_SHARE * l);
            }
            gw.limit = limit;
            seen.insert(k);
        }
        self.gateways.retain(|k, _| seen.contains(k));
        Vec::new()
    }

    fn advance(&mut self, dt: f64) -> Vec<StatusPatch> {
        let shares: BTreeMap<Key, f64> = self
            .gateways
            .iter()
            .map(|(k, g)| (k.clone(), self.error_share(k, g)))
            .collect();
        let surges: BTreeMap<Key, f64> = self
            .gateways
            .keys()
            .map(|k| (k.clone(), self.surge(k)))
            .collect();
        for (k, gw) in &mut self.gateways {
            let surge = surges.get(k).copied().unwrap_or(1.0);
            let saturation = gw.saturation(surge);
            let n = REQUEST_RATE * surge * dt;
            gw.requests += n;
            gw.errors += n * shares.get(k).copied().unwrap_or(0.001);
            if let Some(leak) = self.leaking.get(k) {
                gw.working_set = (gw.working_set + leak.rate * dt).min(leak.peak);
                // Over its limit the kernel OOM-kills the container; the
                // kubelet restarts it with a fresh heap.
                if let Some(limit) = gw.limit
                    && gw.working_set >= limit
                {
                    gw.restarts += 1.0;
                    gw.working_set = MEMORY_BASE_SHARE * limit;
                }
            }
            // 95 % fast; the slowest 5 % at the tail latency of the moment.
            let tail = tail_latency(saturation);
            gw.observe_latency(0.03, n * 0.95);
            gw.observe_latency(tail, n * 0.05);
        }
        Vec::new()
    }

    fn inject(&mut self, fault: &Fault, k: &Key) -> bool {
        let Some(g) = self.gateways.get(k) else {
            return false;
        };
        match fault {
            Fault::TrafficSurge => {
                self.surging.insert(k.clone());
            }
            // The release after the one served now answers with errors;
            // [`Gateways::release_patch`] deploys it.
            Fault::BadRelease => {
                self.bad_releases.insert(k.clone(), next_release(&g.served));
            }
            Fault::MemoryLeak => {
                let Some(limit) = g.limit else { return false };
                self.leaking.insert(
                    k.clone(),
                    Leak {
                        rate: LEAK_PER_SECOND * limit,
                        peak: LEAK_PEAK_SHARE * limit,
                    },
                );
            }
            _ => return false,
        }
        true
    }

    fn end(&mut self, fault: &Fault, k: &Key) {
        match fault {
            Fault::TrafficSurge => {
                self.surging.remove(k);
            }
            Fault::BadRelease => {
                self.bad_releases.remove(k);
            }
            Fault::MemoryLeak => {
                self.leaking.remove(k);
            }
            _ => {}
        }
    }

    /// A surge: saturation under 90 %. A bad release: the bad version not
    /// served. A leak: the level it grows to fits under 90 % of the limit.
    fn healthy(&self, fault: &Fault, k: &Key) -> bool {
        let Some(g) = self.gateways.get(k) else {
            return false;
        };
        match fault {
            Fault::TrafficSurge => self.saturation(k).is_some_and(|s| s < 0.9),
            Fault::BadRelease => self.error_share(k, g) < BAD_RELEASE_ERROR_SHARE,
            Fault::MemoryLeak => {
                let peak = self.leaking.get(k).map_or(g.working_set, |l| l.peak);
                g.limit.is_some_and(|l| peak < 0.9 * l)
            }
            _ => false,
        }
    }

    fn set_load(&mut self, load: f64) {
        self.load = Some(load);
    }

    fn exposition(&self, out: &mut String) {
        out.push_str(
            "# TYPE payments_gateway_requests_total counter\n\
             # TYPE payments_gateway_request_duration_seconds histogram\n\
             # TYPE payments_gateway_inflight_requests gauge\n\
             # TYPE payments_gateway_max_inflight_requests gauge\n\
             # TYPE container_memory_working_set_bytes gauge\n\
             # TYPE kube_pod_container_resource_limits gauge\n\
             # TYPE kube_pod_container_status_restarts_total counter\n\
             # TYPE kube_pod_container_status_last_terminated_reason gauge\n",
        );
        for (k @ (_, ns, name), g) in &self.gateways {
            let l = format!("namespace=\"{ns}\",gateway=\"{name}\"");
            let slots = SLOTS_PER_POD * g.serving;
            let inflight = g.demand(self.surge(k)).min(slots);
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
            // cAdvisor (kubelet) and kube-state-metrics, per pod.
            for pod in pods(name, g.serving) {
                let c = format!("namespace=\"{ns}\",pod=\"{pod}\",container=\"gateway\"");
                out.push_str(&format!(
                    "container_memory_working_set_bytes{{{c},image=\"{image}\"}} {:.0}\n\
                     kube_pod_container_status_restarts_total{{{c},uid=\"{pod}\"}} {:.0}\n",
                    g.working_set,
                    g.restarts,
                    image = g.image,
                ));
                if let Some(limit) = g.limit {
                    out.push_str(&format!(
                        "kube_pod_container_resource_limits{{{c},uid=\"{pod}\",node=\"sim-node\",resource=\"memory\",unit=\"byte\"}} {limit:.0}\n"
                    ));
                }
                if g.restarts > 0.0 {
                    out.push_str(&format!(
                        "kube_pod_container_status_last_terminated_reason{{{c},uid=\"{pod}\",reason=\"OOMKilled\"}} 1\n"
                    ));
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::super::{Model, tests::value};
    use super::*;

    fn gateway(min: i64) -> Value {
        json!({"metadata": {"namespace": "p", "name": "gw"},
               "spec": {"replicas": 3, "autoscaling": {"enabled": true, "minReplicas": min, "maxReplicas": 20}}})
    }

    #[test]
    fn a_surge_saturates_the_gateway_and_more_replicas_relieve_it() {
        let mut m = Model::default();
        let k = key("PaymentGateway", "p", "gw");
        let seen = |g: Value| Objects::from([("PaymentGateway", vec![g])]);
        m.observe(&seen(gateway(3)));
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
        m.observe(&seen(gateway(4)));
        assert!(m.healthy(Fault::TrafficSurge, &k));
        assert!((m.saturation(&k).expect("a gateway") - 0.72).abs() < 1e-9);
        m.end(Fault::TrafficSurge, &k);
        assert!((m.saturation(&k).expect("a gateway") - 0.3).abs() < 1e-9);
        assert!(tail_latency(0.96) > 0.3 && tail_latency(0.72) < 0.3);
    }

    /// The 5xx share of the exposition's counters since `before`.
    fn error_share(m: &Model, before: (f64, f64)) -> f64 {
        let text = m.exposition();
        let count = |code: &str| {
            value(
                &text,
                &format!(
                    "payments_gateway_requests_total{{namespace=\"p\",gateway=\"gw\",method=\"POST\",code=\"{code}\"}}"
                ),
            )
        };
        let (ok, err) = (count("200") - before.0, count("500") - before.1);
        err / (ok + err)
    }

    fn counts(m: &Model) -> (f64, f64) {
        let text = m.exposition();
        let count = |code: &str| {
            value(
                &text,
                &format!(
                    "payments_gateway_requests_total{{namespace=\"p\",gateway=\"gw\",method=\"POST\",code=\"{code}\"}}"
                ),
            )
        };
        (count("200"), count("500"))
    }

    #[test]
    fn a_bad_release_answers_with_errors_until_the_good_version_is_served() {
        let mut m = Model::default();
        let k = key("PaymentGateway", "p", "gw");
        let at = |spec: &str, running: &str| {
            let mut g = gateway(3);
            g["spec"]["version"] = json!(spec);
            g["spec"]["image"] = json!(format!("acr.azurecr.io/payment-initiation:{spec}"));
            g["status"] = json!({"currentVersion": running, "lastGoodVersion": "1.5.0"});
            Objects::from([("PaymentGateway", vec![g])])
        };
        m.observe(&at("1.5.0", "1.5.0"));
        m.advance(10.0);
        assert!(error_share(&m, (0.0, 0.0)) < 0.002);
        assert_eq!(
            m.deploy_patch(&Fault::BadRelease, &k),
            None,
            "no release yet"
        );
        assert!(m.inject(Fault::BadRelease, k.clone()));
        // The pipeline deploys the next release, tag and all.
        assert_eq!(
            m.deploy_patch(&Fault::BadRelease, &k),
            Some(
                json!({"spec": {"version": "1.6.0", "image": "acr.azurecr.io/payment-initiation:1.6.0"}})
            )
        );
        // Healthy until its pods serve it, then 8 % 5xx.
        m.observe(&at("1.6.0", "1.5.0"));
        assert!(m.healthy(Fault::BadRelease, &k));
        m.observe(&at("1.6.0", "1.6.0"));
        assert!(!m.healthy(Fault::BadRelease, &k));
        let before = counts(&m);
        m.advance(10.0);
        assert!((error_share(&m, before) - BAD_RELEASE_ERROR_SHARE).abs() < 1e-6);
        // The agent rolls spec.version back; the good version runs again.
        m.observe(&at("1.5.0", "1.5.0"));
        assert!(m.healthy(Fault::BadRelease, &k));
        let before = counts(&m);
        m.advance(10.0);
        assert!(error_share(&m, before) < 0.002);
        assert_eq!(next_release("v2.4.1"), "v2.5.0");
        assert_eq!(next_release("1.9.3-rc.1"), "1.10.0");
    }

    #[test]
    fn a_memory_leak_oom_kills_until_the_limit_is_raised() {
        let mut m = Model::default();
        let k = key("PaymentGateway", "p", "gw");
        let with = |limit: Option<&str>| {
            let mut g = json!({"metadata": {"namespace": "p", "name": "gw"},
                               "spec": {"version": "2.3.0", "replicas": 2}});
            if let Some(l) = limit {
                g["spec"]["resources"] =
                    json!({"limits": {"memory": l}, "requests": {"memory": "256Mi"}});
            }
            Objects::from([("PaymentGateway", vec![g])])
        };
        m.observe(&with(None));
        assert!(
            !m.inject(Fault::MemoryLeak, k.clone()),
            "no limit to run into"
        );
        assert!(!Fault::MemoryLeak.fits(&with(None)["PaymentGateway"][0]));
        m.observe(&with(Some("512Mi")));
        assert!(Fault::MemoryLeak.fits(&with(Some("512Mi"))["PaymentGateway"][0]));
        assert!(m.healthy(Fault::MemoryLeak, &k));
        let mi = 1024.0 * 1024.0;
        let pod = "namespace=\"p\",pod=\"gw-5d8f7c6b9-1a2b3\",container=\"gateway\"";
        let series = |m: &Model, name: &str, extra: &str| {
            value(&m.exposition(), &format!("{name}{{{pod}{extra}}}"))
        };
        let ws = |m: &Model| series(m, "container_memory_working_set_bytes", ",image=\"\"");
        assert_eq!(ws(&m), 256.0 * mi);
        assert_eq!(
            series(
                &m,
                "kube_pod_container_resource_limits",
                ",uid=\"gw-5d8f7c6b9-1a2b3\",node=\"sim-node\",resource=\"memory\",unit=\"byte\""
            ),
            512.0 * mi
        );
        assert!(m.inject(Fault::MemoryLeak, k.clone()));
        assert!(!m.healthy(Fault::MemoryLeak, &k));
        // 1 % of the limit a second: 80 % after 30 s ...
        for _ in 0..30 {
            m.advance(1.0);
        }
        assert!((ws(&m) / (512.0 * mi) - 0.8).abs() < 1e-9);
        let restarts = |m: &Model| {
            series(
                m,
                "kube_pod_container_status_restarts_total",
                ",uid=\"gw-5d8f7c6b9-1a2b3\"",
            )
        };
        assert_eq!(restarts(&m), 0.0);
        // ... and OOM-killed at the limit, 20 s later.
        for _ in 0..20 {
            m.advance(1.0);
        }
        assert_eq!(restarts(&m), 1.0);
        assert_eq!(ws(&m), 256.0 * mi);
        assert!(m.exposition().contains("reason=\"OOMKilled\"} 1"));
        // The agent raises the limit by half: new pods, and the leak levels
        // off at 1.1 × 512Mi, under 90 % of 768Mi. No more kills.
        m.observe(&with(Some("768Mi")));
        assert!(m.healthy(Fault::MemoryLeak, &k));
        assert_eq!(ws(&m), 384.0 * mi);
        for _ in 0..120 {
            m.advance(1.0);
        }
        assert_eq!(restarts(&m), 1.0);
        assert!((ws(&m) - LEAK_PEAK_SHARE * 512.0 * mi).abs() < 1.0);
        assert!(ws(&m) / (768.0 * mi) < 0.75);
        assert_eq!(quantity_bytes("1Gi"), Some(1024.0 * mi));
        assert_eq!(quantity_bytes("500M"), Some(5e8));
    }
}
