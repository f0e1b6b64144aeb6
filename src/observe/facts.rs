//! Facts runbooks read besides the detectors' signals (`ctx.facts`), and
//! the resources they decide on (`ctx.resource`), as read this cycle.
//!
//! A fact that could not be read is absent, never a default: a runbook that
//! `require`s it stops with a missing-data error instead of acting.

use std::collections::BTreeMap;

use prometheus_http_query::response::Data;
use serde_json::{Value, json};

use super::{Error, Prometheus};
use crate::detect::ComponentId;

/// Facts read from the resource itself, by kind.
///
/// CloudNativePG `Cluster`: `last_backup_completed_at` (unix seconds of
/// `status.lastSuccessfulBackup`) and `last_backup_phase` (`failed` when
/// `status.lastFailedBackup` is newer than the last success, else
/// `completed`).
pub fn resource_facts(kind: &str, resource: &Value) -> BTreeMap<String, Value> {
    let mut facts = BTreeMap::new();
    if kind == "Cluster" {
        let time = |field: &str| {
            resource["status"][field]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp())
        };
        let success = time("lastSuccessfulBackup");
        let failure = time("lastFailedBackup");
        if let Some(at) = success {
            facts.insert("last_backup_completed_at".into(), json!(at));
        }
        let phase = match (success, failure) {
            (Some(s), Some(f)) if f > s => Some("failed"),
            (None, Some(_)) => Some("failed"),
            (Some(_), _) => Some("completed"),
            (None, None) => None,
        };
        if let Some(p) = phase {
            facts.insert("last_backup_phase".into(), json!(p));
        }
    }
    facts
}

/// The CNPG cluster a pod belongs to: instance pods are `<cluster>-<n>`.
fn cluster_of_pod(pod: &str) -> Option<&str> {
    let (cluster, n) = pod.rsplit_once('-')?;
    (!cluster.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then_some(cluster)
}

impl Prometheus {
    /// The replay lag of every CloudNativePG instance, per Cluster:
    /// `replica_lag_seconds` → `{pod: seconds}`. NaN samples are left out
    /// (unknown lag: never a switchover candidate).
    #[tracing::instrument(name = "query", skip_all, fields(kind = "Cluster"))]
    pub async fn replica_lags(
        &self,
        at: i64,
    ) -> Result<BTreeMap<ComponentId, BTreeMap<String, f64>>, Error> {
        let result = self
            .client
            .query("max by (namespace, pod) (cnpg_pg_replication_lag)")
            .at(at)
            .get()
            .await
            .map_err(|source| Error::QueryPrometheus {
                kind: "Cluster".into(),
                source,
            })?;
        let Data::Vector(v) = result.data() else {
            return Err(Error::ReadResult {
                kind: "Cluster".into(),
                got: "non-vector",
            });
        };
        let mut out: BTreeMap<ComponentId, BTreeMap<String, f64>> = BTreeMap::new();
        for s in v {
            let m = s.metric();
            let (Some(pod), Some(ns)) = (m.get("pod"), m.get("namespace")) else {
                continue;
            };
            let Some(cluster) = cluster_of_pod(pod) else {
                continue;
            };
            let lag = s.sample().value();
            if lag.is_finite() {
                out.entry(ComponentId {
                    kind: "Cluster".into(),
                    namespace: ns.clone(),
                    name: cluster.to_string(),
                })
                .or_default()
                .insert(pod.clone(), lag);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_facts_come_from_the_cluster_status() {
        let ok = json!({"status": {"lastSuccessfulBackup": "2026-11-25T02:30:00Z"}});
        let f = resource_facts("Cluster", &ok);
        assert_eq!(f["last_backup_completed_at"], json!(1_795_573_800));
        assert_eq!(f["last_backup_phase"], json!("completed"));

        let failed = json!({"status": {"lastSuccessfulBackup": "2026-11-24T02:30:00Z",
                                       "lastFailedBackup": "2026-11-25T02:30:00Z"}});
        assert_eq!(
            resource_facts("Cluster", &failed)["last_backup_phase"],
            json!("failed")
        );
        let recovered = json!({"status": {"lastSuccessfulBackup": "2026-11-25T03:30:00Z",
                                          "lastFailedBackup": "2026-11-25T02:30:00Z"}});
        assert_eq!(
            resource_facts("Cluster", &recovered)["last_backup_phase"],
            json!("completed")
        );
        // Never backed up, or an unreadable time: absent, not zero.
        assert!(resource_facts("Cluster", &json!({"status": {}})).is_empty());
        let garbled = json!({"status": {"lastSuccessfulBackup": "yesterday"}});
        assert!(resource_facts("Cluster", &garbled).is_empty());
        // Other kinds have no resource facts.
        assert!(resource_facts("PaymentGateway", &ok).is_empty());
    }

    #[test]
    fn instance_pods_map_to_their_cluster() {
        assert_eq!(cluster_of_pod("pg-main-2"), Some("pg-main"));
        assert_eq!(cluster_of_pod("pg-main-2-wal"), None);
        assert_eq!(cluster_of_pod("pg"), None);
        assert_eq!(cluster_of_pod("-1"), None);
    }
}
