//! The PaymentGateways' own exporters: `payments_gateway_*`
//! (docs/payments-metrics.md) per gateway, following its spec as it is now.

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
}

/// Every PaymentGateway's exporter.
#[derive(Clone, Debug, Default)]
pub struct Gateways {
    gateways: BTreeMap<Key, Gateway>,
    surging: BTreeSet<Key>,
    /// The load of the moment, as a share of normal (see
    /// [`Part::set_load`]); `None` is normal.
    load: Option<f64>,
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
            seen.insert(k);
        }
        self.gateways.retain(|k, _| seen.contains(k));
        Vec::new()
    }

    fn advance(&mut self, dt: f64) -> Vec<StatusPatch> {
        let surges: Vec<f64> = self.gateways.keys().map(|k| self.surge(k)).collect();
        for (gw, surge) in self.gateways.values_mut().zip(surges) {
            let saturation = gw.saturation(surge);
            let n = REQUEST_RATE * surge * dt;
            gw.requests += n;
            gw.errors += n * 0.001;
            // 95 % fast; the slowest 5 % at the tail latency of the moment.
            let tail = tail_latency(saturation);
            gw.observe_latency(0.03, n * 0.95);
            gw.observe_latency(tail, n * 0.05);
        }
        Vec::new()
    }

    fn inject(&mut self, fault: &Fault, k: &Key) -> bool {
        match fault {
            Fault::TrafficSurge if self.gateways.contains_key(k) => {
                self.surging.insert(k.clone());
                true
            }
            _ => false,
        }
    }

    fn end(&mut self, fault: &Fault, k: &Key) {
        if *fault == Fault::TrafficSurge {
            self.surging.remove(k);
        }
    }

    fn healthy(&self, fault: &Fault, k: &Key) -> bool {
        match fault {
            Fault::TrafficSurge => self.saturation(k).is_some_and(|s| s < 0.9),
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
             # TYPE payments_gateway_max_inflight_requests gauge\n",
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
}
