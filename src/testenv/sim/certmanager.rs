//! cert-manager: the controller (a new Certificate is issued; a renewal
//! asked for with the `Issuing=True` condition, as `cmctl renew` does, is
//! carried out) and its exporter (`certmanager_certificate_*`).
//!
//! Issuance here is instant in the issuer's terms: a few seconds after
//! `Issuing=True` the Certificate has a new `notBefore`/`notAfter`/
//! `renewalTime`, its revision goes up, the Issuing condition is removed,
//! Ready is True and the failure fields are cleared, as cert-manager's
//! issuing controller leaves it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{Fault, Key, Objects, Part, SimKind, StatusPatch, key, name_of, ns_of};

/// Seconds from `Issuing=True` to the new certificate in the Secret.
pub const ISSUE_SECONDS: f64 = 3.0;
/// Days left on the certificate under [`Fault::CertificateExpiry`].
pub const EXPIRY_FAULT_DAYS: f64 = 9.0;
/// Failed issuance attempts recorded by the fault: cert-manager waits
/// `1h × 2^(n-1)` before the next one, 32 h at 6 (its ceiling).
pub const FAILED_ATTEMPTS: i64 = 6;
/// Time left above which a certificate is healthy: the model's 7-day floor
/// plus its 7-day forecast horizon (the `cert-renew` runbook's trigger).
pub const HEALTHY_SECONDS_LEFT: f64 = 14.0 * 86_400.0;

const DAY: f64 = 86_400.0;

const KINDS: &[SimKind] = &[SimKind {
    group: "cert-manager.io",
    version: "v1",
    kind: "Certificate",
    plural: "certificates",
}];

#[derive(Clone, Debug, Default)]
struct Cert {
    /// Unix seconds.
    not_before: f64,
    not_after: f64,
    renewal: f64,
    revision: i64,
    issuer: (String, String, String),
    ready: bool,
    /// An issuance under way: seconds left.
    issuing: Option<f64>,
    /// `spec.duration` and `spec.renewBefore` in seconds.
    duration: f64,
    renew_before: f64,
    generation: i64,
}

/// Every cert-manager Certificate, and its controller.
#[derive(Clone, Debug, Default)]
pub struct Certificates {
    certs: BTreeMap<Key, Cert>,
    /// Status patches of injected faults, sent on the next advance.
    pending: Vec<StatusPatch>,
}

fn now() -> f64 {
    Utc::now().timestamp_millis() as f64 / 1000.0
}

fn rfc3339(t: f64) -> String {
    DateTime::<Utc>::from_timestamp_millis((t * 1000.0) as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(v: &Value) -> Option<f64> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

/// A Go duration as cert-manager's spec takes it (`2160h`, `720h0m0s`,
/// `90m`) in seconds.
fn go_duration(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let n: f64 = number.parse().ok()?;
        number.clear();
        total += n * match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
    }
    number.is_empty().then_some(total)
}

impl Cert {
    /// Issues a new certificate now, as the issuer signs it.
    fn issue(&mut self, at: f64) {
        self.not_before = at;
        self.not_after = at + self.duration;
        self.renewal = self.not_after - self.renew_before;
        self.revision += 1;
        self.ready = true;
        self.issuing = None;
    }

    fn ready_condition(&self) -> Value {
        json!({
            "type": "Ready", "status": "True", "reason": "Ready",
            "message": "Certificate is up to date and has not expired",
            "lastTransitionTime": rfc3339(self.not_before),
            "observedGeneration": self.generation,
        })
    }

    /// The status cert-manager leaves after a successful issuance.
    fn issued_status(&self) -> Value {
        json!({
            "conditions": [self.ready_condition()],
            "notBefore": rfc3339(self.not_before),
            "notAfter": rfc3339(self.not_after),
            "renewalTime": rfc3339(self.renewal),
            "revision": self.revision,
            "lastFailureTime": null,
            "failedIssuanceAttempts": null,
        })
    }

    fn seconds_left(&self, at: f64) -> f64 {
        self.not_after - at
    }
}

impl Part for Certificates {
    fn kinds(&self) -> &'static [SimKind] {
        KINDS
    }

    /// A new Certificate is issued at once; `Issuing=True` starts an
    /// issuance.
    fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch> {
        let mut patches = Vec::new();
        let mut seen = BTreeSet::new();
        let t = now();
        for c in objects.get("Certificate").into_iter().flatten() {
            let (ns, name) = (ns_of(c), name_of(c));
            let k = key("Certificate", ns, name);
            seen.insert(k.clone());
            let spec = &c["spec"];
            let status = &c["status"];
            let cert = self.certs.entry(k).or_default();
            cert.duration = spec["duration"]
                .as_str()
                .and_then(go_duration)
                .unwrap_or(90.0 * DAY);
            // cert-manager's default: a third of the lifetime.
            cert.renew_before = spec["renewBefore"]
                .as_str()
                .and_then(go_duration)
                .unwrap_or(cert.duration / 3.0);
            cert.generation = c["metadata"]["generation"].as_i64().unwrap_or(1);
            cert.issuer = (
                spec["issuerRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                spec["issuerRef"]["kind"]
                    .as_str()
                    .unwrap_or("Issuer")
                    .into(),
                spec["issuerRef"]["group"]
                    .as_str()
                    .unwrap_or("cert-manager.io")
                    .into(),
            );
            let Some(not_after) = parse_time(&status["notAfter"]) else {
                // A new Certificate: issued at once.
                cert.issue(t);
                patches.push(StatusPatch {
                    kind: "Certificate",
                    namespace: ns.into(),
                    name: name.into(),
                    status: cert.issued_status(),
                });
                continue;
            };
            if cert.revision == 0 {
                // Seen first with a status (the simulator restarted).
                cert.not_after = not_after;
                cert.not_before = parse_time(&status["notBefore"]).unwrap_or(t);
                cert.renewal = parse_time(&status["renewalTime"]).unwrap_or(not_after);
                cert.revision = status["revision"].as_i64().unwrap_or(1);
            }
            let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
            cert.ready = conditions
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let asked = conditions
                .iter()
                .any(|c| c["type"] == "Issuing" && c["status"] == "True");
            if asked && cert.issuing.is_none() {
                cert.issuing = Some(ISSUE_SECONDS);
            }
        }
        self.certs.retain(|k, _| seen.contains(k));
        patches
    }

    /// Issuances that completed, and the status of faults just injected.
    fn advance(&mut self, dt: f64) -> Vec<StatusPatch> {
        let mut patches = std::mem::take(&mut self.pending);
        let t = now();
        for ((_, ns, name), c) in &mut self.certs {
            if let Some(left) = &mut c.issuing {
                *left -= dt;
                if *left <= 0.0 {
                    c.issue(t);
                    patches.push(StatusPatch {
                        kind: "Certificate",
                        namespace: ns.clone(),
                        name: name.clone(),
                        status: c.issued_status(),
                    });
                }
            }
        }
        patches
    }

    /// The certificate is [`EXPIRY_FAULT_DAYS`] from expiry: its automatic
    /// renewal (due at `renewalTime`) failed, and cert-manager backs off.
    fn inject(&mut self, fault: &Fault, k: &Key) -> bool {
        let Some(c) = self.certs.get_mut(k) else {
            return false;
        };
        if *fault != Fault::CertificateExpiry {
            return false;
        }
        let t = now();
        c.not_after = t + EXPIRY_FAULT_DAYS * DAY;
        c.not_before = c.not_after - c.duration;
        c.renewal = c.not_after - c.renew_before;
        c.issuing = None;
        self.pending.push(StatusPatch {
            kind: "Certificate",
            namespace: k.1.clone(),
            name: k.2.clone(),
            status: json!({
                "conditions": [
                    c.ready_condition(),
                    {"type": "Issuing", "status": "False", "reason": "Failed",
                     "message": "The certificate request has failed to complete and will be retried: the issuer did not answer",
                     "lastTransitionTime": rfc3339(t), "observedGeneration": c.generation},
                ],
                "notBefore": rfc3339(c.not_before),
                "notAfter": rfc3339(c.not_after),
                "renewalTime": rfc3339(c.renewal),
                "lastFailureTime": rfc3339(t),
                "failedIssuanceAttempts": FAILED_ATTEMPTS,
            }),
        });
        true
    }

    /// Nothing to end: only a renewal brings the certificate back.
    /// More than [`HEALTHY_SECONDS_LEFT`] left, and Ready.
    fn healthy(&self, fault: &Fault, k: &Key) -> bool {
        *fault == Fault::CertificateExpiry
            && self
                .certs
                .get(k)
                .is_some_and(|c| c.ready && c.seconds_left(now()) > HEALTHY_SECONDS_LEFT)
    }

    fn exposition(&self, out: &mut String) {
        out.push_str(
            "# TYPE certmanager_certificate_expiration_timestamp_seconds gauge\n\
             # TYPE certmanager_certificate_renewal_timestamp_seconds gauge\n\
             # TYPE certmanager_certificate_ready_status gauge\n",
        );
        for ((_, ns, name), c) in &self.certs {
            let (issuer, kind, group) = &c.issuer;
            let l = format!(
                "name=\"{name}\",namespace=\"{ns}\",issuer_name=\"{issuer}\",issuer_kind=\"{kind}\",issuer_group=\"{group}\""
            );
            out.push_str(&format!(
                "certmanager_certificate_expiration_timestamp_seconds{{{l}}} {:.0}\n\
                 certmanager_certificate_renewal_timestamp_seconds{{{l}}} {:.0}\n",
                c.not_after, c.renewal
            ));
            for condition in ["True", "False", "Unknown"] {
                let on = (condition == "True") == c.ready && condition != "Unknown";
                out.push_str(&format!(
                    "certmanager_certificate_ready_status{{name=\"{name}\",namespace=\"{ns}\",condition=\"{condition}\",issuer_name=\"{issuer}\",issuer_kind=\"{kind}\",issuer_group=\"{group}\"}} {}\n",
                    u8::from(on)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Model, tests::value};
    use super::*;

    fn cert(status: Value) -> Value {
        json!({"metadata": {"namespace": "p", "name": "gw-tls", "generation": 1},
               "spec": {"secretName": "gw-tls", "duration": "2160h",
                        "issuerRef": {"name": "payments-ca", "kind": "ClusterIssuer"}},
               "status": status})
    }

    fn seen(c: Value) -> Objects {
        Objects::from([("Certificate", vec![c])])
    }

    fn left(m: &Model) -> f64 {
        value(
            &m.exposition(),
            "certmanager_certificate_expiration_timestamp_seconds{name=\"gw-tls\",namespace=\"p\",issuer_name=\"payments-ca\",issuer_kind=\"ClusterIssuer\",issuer_group=\"cert-manager.io\"}",
        ) - now()
    }

    #[test]
    fn a_missed_renewal_is_carried_out_once_asked_for() {
        let mut m = Model::default();
        let k = key("Certificate", "p", "gw-tls");
        // A new Certificate is issued: 90 days, renewal at 60.
        let boot = m.observe(&seen(cert(json!({}))));
        assert_eq!(boot.len(), 1);
        let issued = boot[0].status.clone();
        assert_eq!(issued["revision"], 1);
        assert_eq!(issued["conditions"][0]["type"], "Ready");
        assert!((left(&m) / DAY - 90.0).abs() < 0.01);
        assert!(m.healthy(Fault::CertificateExpiry, &k));
        assert!(m.observe(&seen(cert(issued.clone()))).is_empty());
        // The fault: 9 days left, the renewal failed and backs off 32 h.
        assert!(m.inject(Fault::CertificateExpiry, k.clone()));
        assert!(!m.healthy(Fault::CertificateExpiry, &k));
        let failed = m.advance(1.0);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].status["conditions"][1]["reason"], "Failed");
        assert_eq!(failed[0].status["failedIssuanceAttempts"], FAILED_ATTEMPTS);
        assert!((left(&m) / DAY - EXPIRY_FAULT_DAYS).abs() < 0.01);
        let mut stuck = issued.clone();
        stuck["conditions"] = failed[0].status["conditions"].clone();
        stuck["notAfter"] = failed[0].status["notAfter"].clone();
        // Nothing happens on its own.
        m.observe(&seen(cert(stuck.clone())));
        assert!(m.advance(60.0).is_empty());
        assert!(!m.healthy(Fault::CertificateExpiry, &k));
        // The agent renews as `cmctl renew` does; cert-manager issues.
        let mut asked = stuck.clone();
        asked["conditions"] = json!([issued["conditions"][0],
            {"type": "Issuing", "status": "True", "reason": "ManuallyTriggered",
             "message": "Certificate re-issuance manually triggered"}]);
        assert!(m.observe(&seen(cert(asked))).is_empty());
        assert!(m.advance(1.0).is_empty());
        let done = m.advance(ISSUE_SECONDS);
        assert_eq!(done.len(), 1);
        let s = &done[0].status;
        assert_eq!(s["revision"], 2);
        assert_eq!(s["conditions"].as_array().map(Vec::len), Some(1));
        assert_eq!(s["conditions"][0]["status"], "True");
        assert!(s["lastFailureTime"].is_null());
        assert!((left(&m) / DAY - 90.0).abs() < 0.01);
        assert!(m.healthy(Fault::CertificateExpiry, &k));
        let ready = value(
            &m.exposition(),
            "certmanager_certificate_ready_status{name=\"gw-tls\",namespace=\"p\",condition=\"True\",issuer_name=\"payments-ca\",issuer_kind=\"ClusterIssuer\",issuer_group=\"cert-manager.io\"}",
        );
        assert_eq!(ready, 1.0);
        assert_eq!(go_duration("720h0m0s"), Some(30.0 * DAY));
        assert_eq!(go_duration("90m"), Some(5400.0));
        assert_eq!(go_duration("1x"), None);
    }
}
