//! External Secrets: the controller (an ExternalSecret is synced from its
//! store every `refreshInterval`, and at once when its labels or
//! annotations change, e.g. `force-sync=<epoch>`) and its exporter
//! (`externalsecret_*`, condition metrics with `name,namespace,condition,
//! status`).
//!
//! What [`Fault::SecretStoreFailure`] models: the store behind an
//! ExternalSecret (a vault) had an outage. Every sync during it failed
//! ([`OUTAGE_FAILED_SYNCS`] of them show in `externalsecret_sync_calls_error`
//! when the fault starts) and the ExternalSecret is `Ready=False`
//! (`SecretSyncedError`), its Secret as of the last good sync. The store
//! answers again, which the agent had no part in and could not have
//! hastened; what it can fix is what follows: ESO retries a failed sync
//! with controller-runtime's per-item backoff (5 ms doubling, capped at
//! 1000 s), so after a long outage the ExternalSecret stays failed and its
//! Secret stale for up to ~17 minutes more. A forced refresh (a changed
//! annotation, which ESO sees as a new resource version) syncs it within
//! [`SYNC_SECONDS`]. The simulator leaves ESO's own next retry out: it is
//! longer than any run, and faults never heal on a timer. A refresh while
//! the store were still down would only fail once more.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{Fault, Key, Objects, Part, SimKind, StatusPatch, key, name_of, ns_of};

/// Seconds from a refresh request to the synced Secret.
pub const SYNC_SECONDS: f64 = 2.0;
/// Failed syncs during the store's outage (retries with backoff).
pub const OUTAGE_FAILED_SYNCS: f64 = 6.0;

const KINDS: &[SimKind] = &[SimKind {
    group: "external-secrets.io",
    version: "v1",
    kind: "ExternalSecret",
    plural: "externalsecrets",
}];

#[derive(Clone, Debug, Default)]
struct ExternalSecret {
    ready: bool,
    /// Labels and annotations as of the last sync (ESO's
    /// `syncedResourceVersion`: generation and a hash of them).
    synced_meta: String,
    /// A sync under way: seconds left.
    syncing: Option<f64>,
    calls: f64,
    errors: f64,
    /// Seen at least once (the first sync is done at once).
    known: bool,
}

/// Every ExternalSecret, and the External Secrets controller.
#[derive(Clone, Debug, Default)]
pub struct ExternalSecrets {
    secrets: BTreeMap<Key, ExternalSecret>,
    /// Status patches of injected faults, sent on the next advance.
    pending: Vec<StatusPatch>,
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Generation, labels and annotations: what ESO's resource version hashes.
fn meta_version(o: &Value) -> String {
    let m = &o["metadata"];
    format!(
        "{}-{}-{}",
        m["generation"].as_i64().unwrap_or(1),
        m["labels"],
        m["annotations"]
    )
}

fn synced_status(meta: &str) -> Value {
    json!({
        "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced",
                        "message": "Secret was synced", "lastTransitionTime": now_rfc3339()}],
        "refreshTime": now_rfc3339(),
        "syncedResourceVersion": meta,
    })
}

impl Part for ExternalSecrets {
    fn kinds(&self) -> &'static [SimKind] {
        KINDS
    }

    /// A new ExternalSecret is synced at once; a changed label or
    /// annotation starts a sync.
    fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch> {
        let mut patches = Vec::new();
        let mut seen = BTreeSet::new();
        for o in objects.get("ExternalSecret").into_iter().flatten() {
            let (ns, name) = (ns_of(o), name_of(o));
            let k = key("ExternalSecret", ns, name);
            seen.insert(k.clone());
            let meta = meta_version(o);
            let es = self.secrets.entry(k).or_default();
            if !es.known {
                es.known = true;
                es.ready = true;
                es.calls += 1.0;
                es.synced_meta = meta.clone();
                patches.push(StatusPatch {
                    kind: "ExternalSecret",
                    namespace: ns.into(),
                    name: name.into(),
                    status: synced_status(&meta),
                });
                continue;
            }
            // refreshPolicy CreatedOnce ignores refreshes.
            let created_once = o["spec"]["refreshPolicy"] == "CreatedOnce";
            if meta != es.synced_meta && es.syncing.is_none() && !created_once {
                es.synced_meta = meta;
                es.syncing = Some(SYNC_SECONDS);
            }
        }
        self.secrets.retain(|k, _| seen.contains(k));
        patches
    }

    /// Syncs that completed (the store answers), and the status of faults
    /// just injected.
    fn advance(&mut self, dt: f64) -> Vec<StatusPatch> {
        let mut patches = std::mem::take(&mut self.pending);
        for ((_, ns, name), es) in &mut self.secrets {
            if let Some(left) = &mut es.syncing {
                *left -= dt;
                if *left <= 0.0 {
                    es.syncing = None;
                    es.calls += 1.0;
                    es.ready = true;
                    patches.push(StatusPatch {
                        kind: "ExternalSecret",
                        namespace: ns.clone(),
                        name: name.clone(),
                        status: synced_status(&es.synced_meta),
                    });
                }
            }
        }
        patches
    }

    fn inject(&mut self, fault: &Fault, k: &Key) -> bool {
        let Some(es) = self.secrets.get_mut(k) else {
            return false;
        };
        if *fault != Fault::SecretStoreFailure {
            return false;
        }
        es.ready = false;
        es.calls += OUTAGE_FAILED_SYNCS;
        es.errors += OUTAGE_FAILED_SYNCS;
        // ESO's status patch keeps refreshTime (the last good sync).
        self.pending.push(StatusPatch {
            kind: "ExternalSecret",
            namespace: k.1.clone(),
            name: k.2.clone(),
            status: json!({"conditions": [{
                "type": "Ready", "status": "False", "reason": "SecretSyncedError",
                "message": "could not get secret data from provider",
                "lastTransitionTime": now_rfc3339(),
            }]}),
        });
        true
    }

    /// Nothing to end: the store already answers again.
    fn healthy(&self, fault: &Fault, k: &Key) -> bool {
        *fault == Fault::SecretStoreFailure && self.secrets.get(k).is_some_and(|es| es.ready)
    }

    fn exposition(&self, out: &mut String) {
        out.push_str(
            "# TYPE externalsecret_sync_calls_total counter\n\
             # TYPE externalsecret_sync_calls_error counter\n\
             # TYPE externalsecret_status_condition gauge\n",
        );
        for ((_, ns, name), es) in &self.secrets {
            let l = format!("name=\"{name}\",namespace=\"{ns}\"");
            out.push_str(&format!(
                "externalsecret_sync_calls_total{{{l}}} {:.0}\n\
                 externalsecret_sync_calls_error{{{l}}} {:.0}\n\
                 externalsecret_status_condition{{{l},condition=\"Ready\",status=\"True\"}} {}\n\
                 externalsecret_status_condition{{{l},condition=\"Ready\",status=\"False\"}} {}\n",
                es.calls,
                es.errors,
                u8::from(es.ready),
                u8::from(!es.ready),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Model, tests::value};
    use super::*;

    fn es(annotations: Value) -> Value {
        json!({"metadata": {"namespace": "p", "name": "psp-keys", "generation": 1,
                            "annotations": annotations},
               "spec": {"refreshInterval": "1h", "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
                        "target": {"name": "psp-keys"}}})
    }

    fn seen(o: Value) -> Objects {
        Objects::from([("ExternalSecret", vec![o])])
    }

    #[test]
    fn a_failed_secret_syncs_again_once_refreshed() {
        let mut m = Model::default();
        let k = key("ExternalSecret", "p", "psp-keys");
        let boot = m.observe(&seen(es(json!({}))));
        assert_eq!(boot.len(), 1);
        assert_eq!(boot[0].status["conditions"][0]["reason"], "SecretSynced");
        assert!(m.healthy(Fault::SecretStoreFailure, &k));
        assert!(m.inject(Fault::SecretStoreFailure, k.clone()));
        let failed = m.advance(1.0);
        assert_eq!(failed[0].status["conditions"][0]["status"], "False");
        let text = m.exposition();
        let ready = "externalsecret_status_condition{name=\"psp-keys\",namespace=\"p\",condition=\"Ready\",status=\"True\"}";
        assert_eq!(value(&text, ready), 0.0);
        assert_eq!(
            value(
                &text,
                "externalsecret_sync_calls_error{name=\"psp-keys\",namespace=\"p\"}"
            ),
            OUTAGE_FAILED_SYNCS
        );
        // Nothing on its own.
        m.observe(&seen(es(json!({}))));
        assert!(m.advance(600.0).is_empty());
        assert!(!m.healthy(Fault::SecretStoreFailure, &k));
        // The agent forces a refresh; ESO syncs shortly after.
        let refreshed = seen(es(json!({"force-sync": "1800000000"})));
        assert!(m.observe(&refreshed).is_empty());
        assert!(m.advance(1.0).is_empty());
        let done = m.advance(SYNC_SECONDS);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].status["conditions"][0]["status"], "True");
        assert!(m.healthy(Fault::SecretStoreFailure, &k));
        assert_eq!(value(&m.exposition(), ready), 1.0);
        // The same annotation again is no new refresh.
        m.observe(&refreshed);
        assert!(m.advance(SYNC_SECONDS).is_empty());
    }
}
