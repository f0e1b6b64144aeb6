//! Istio: the destination sidecars' standard metrics for the services the
//! VirtualServices route to (`reporter="destination"`): the request count by
//! response code and the request duration histogram, under the service the
//! VirtualService is named after (as our charts name them) and the workload
//! of its first route. Healthy and steady: 0.1 % of responses 503, 95 %
//! served in 20 ms and the rest in 80 ms; present so the agent is seen to
//! leave it alone.

use std::collections::{BTreeMap, BTreeSet};

use super::{Key, Objects, Part, SimKind, StatusPatch, key, name_of, ns_of};

/// Requests per second through each VirtualService.
pub const REQUEST_RATE: f64 = 200.0;
/// Share of responses that are 503.
pub const ERROR_SHARE: f64 = 0.001;

/// Istio's default duration buckets, in milliseconds.
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

const KINDS: &[SimKind] = &[SimKind {
    group: "networking.istio.io",
    version: "v1",
    kind: "VirtualService",
    plural: "virtualservices",
}];

#[derive(Clone, Debug, Default)]
struct Route {
    /// The workload behind the first route's destination host.
    workload: String,
    ok: f64,
    errors: f64,
    /// Requests of at most each of [`BUCKETS`].
    buckets: [f64; 19],
    sum: f64,
}

/// Every VirtualService's destination traffic.
#[derive(Clone, Debug, Default)]
pub struct VirtualServices {
    routes: BTreeMap<Key, Route>,
}

impl Part for VirtualServices {
    fn kinds(&self) -> &'static [SimKind] {
        KINDS
    }

    fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch> {
        let mut seen = BTreeSet::new();
        for v in objects.get("VirtualService").into_iter().flatten() {
            let (ns, name) = (ns_of(v), name_of(v));
            let k = key("VirtualService", ns, name);
            seen.insert(k.clone());
            let host = v["spec"]["http"][0]["route"][0]["destination"]["host"]
                .as_str()
                .unwrap_or(name);
            let workload = host.split('.').next().unwrap_or(name).to_string();
            self.routes.entry(k).or_default().workload = workload;
        }
        self.routes.retain(|k, _| seen.contains(k));
        Vec::new()
    }

    fn advance(&mut self, dt: f64) -> Vec<StatusPatch> {
        for r in self.routes.values_mut() {
            let n = REQUEST_RATE * dt;
            r.ok += n * (1.0 - ERROR_SHARE);
            r.errors += n * ERROR_SHARE;
            for (i, le) in BUCKETS.iter().enumerate() {
                if *le >= 20.0 {
                    r.buckets[i] += n * 0.95;
                }
                if *le >= 80.0 {
                    r.buckets[i] += n * 0.05;
                }
            }
            r.sum += n * (0.95 * 20.0 + 0.05 * 80.0);
        }
        Vec::new()
    }

    fn exposition(&self, out: &mut String) {
        out.push_str(
            "# TYPE istio_requests_total counter\n\
             # TYPE istio_request_duration_milliseconds histogram\n",
        );
        for ((_, ns, name), r) in &self.routes {
            let l = format!(
                "reporter=\"destination\",source_workload=\"istio-ingressgateway\",source_workload_namespace=\"istio-system\",\
                 destination_workload=\"{w}\",destination_workload_namespace=\"{ns}\",\
                 destination_service=\"{name}.{ns}.svc.cluster.local\",destination_service_name=\"{name}\",\
                 destination_service_namespace=\"{ns}\",request_protocol=\"http\",connection_security_policy=\"mutual_tls\"",
                w = r.workload
            );
            out.push_str(&format!(
                "istio_requests_total{{{l},response_code=\"200\",response_flags=\"-\"}} {}\n\
                 istio_requests_total{{{l},response_code=\"503\",response_flags=\"-\"}} {}\n",
                r.ok, r.errors
            ));
            for (i, le) in BUCKETS.iter().enumerate() {
                out.push_str(&format!(
                    "istio_request_duration_milliseconds_bucket{{{l},response_code=\"200\",le=\"{le}\"}} {}\n",
                    r.buckets[i]
                ));
            }
            let count = r.ok + r.errors;
            out.push_str(&format!(
                "istio_request_duration_milliseconds_bucket{{{l},response_code=\"200\",le=\"+Inf\"}} {count}\n\
                 istio_request_duration_milliseconds_sum{{{l},response_code=\"200\"}} {}\n\
                 istio_request_duration_milliseconds_count{{{l},response_code=\"200\"}} {count}\n",
                r.sum
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Model, tests::value};
    use super::*;
    use serde_json::json;

    #[test]
    fn a_virtual_service_serves_its_destination_traffic() {
        let mut m = Model::default();
        let vs = json!({
            "metadata": {"namespace": "payments", "name": "payment-gateway"},
            "spec": {"hosts": ["pay.example.com"], "http": [{"route": [
                {"destination": {"host": "payment-gateway.payments.svc.cluster.local"}}
            ]}]},
        });
        assert!(
            m.observe(&Objects::from([("VirtualService", vec![vs])]))
                .is_empty()
        );
        m.advance(10.0);
        let text = m.exposition();
        let l = "reporter=\"destination\",source_workload=\"istio-ingressgateway\",source_workload_namespace=\"istio-system\",destination_workload=\"payment-gateway\",destination_workload_namespace=\"payments\",destination_service=\"payment-gateway.payments.svc.cluster.local\",destination_service_name=\"payment-gateway\",destination_service_namespace=\"payments\",request_protocol=\"http\",connection_security_policy=\"mutual_tls\"";
        let ok = value(
            &text,
            &format!("istio_requests_total{{{l},response_code=\"200\",response_flags=\"-\"}}"),
        );
        let err = value(
            &text,
            &format!("istio_requests_total{{{l},response_code=\"503\",response_flags=\"-\"}}"),
        );
        assert!((ok + err - 2000.0).abs() < 1e-6, "{ok} {err}");
        assert!((err - 2.0).abs() < 1e-9, "{err}");
        // 95 % within 25 ms, all within 100 ms.
        let bucket = |le: &str| {
            value(
                &text,
                &format!(
                    "istio_request_duration_milliseconds_bucket{{{l},response_code=\"200\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(bucket("10"), 0.0);
        assert!((bucket("25") - 1900.0).abs() < 1e-6);
        assert!((bucket("100") - 2000.0).abs() < 1e-6);
    }
}
