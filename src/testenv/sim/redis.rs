//! Redis Enterprise: the operator's side of a RedisEnterpriseDatabase (it
//! becomes `active` with its shards) and the cluster's v1 metrics endpoint
//! (`:8070`) for it: `bdb_*` by database id (`bdb`) within the `cluster`,
//! the database's name (`bdb_name`, the resource's name) only on `bdb_up`
//! and `bdb_conns`, and `redis_up` per shard. Healthy and steady: the
//! estate's cache, present so the agent is seen to leave it alone.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use super::{Key, Objects, Part, SimKind, StatusPatch, key, name_of, ns_of};

/// Average latency of the database's operations, in seconds.
pub const AVG_LATENCY_SECONDS: f64 = 0.00015;
/// Used memory over the database's memory limit.
pub const MEMORY_USED_SHARE: f64 = 0.25;

const KINDS: &[SimKind] = &[SimKind {
    group: "app.redislabs.com",
    version: "v1alpha1",
    kind: "RedisEnterpriseDatabase",
    plural: "redisenterprisedatabases",
}];

#[derive(Clone, Debug, Default)]
struct Database {
    /// The database id within its cluster (`bdb`).
    uid: u64,
    /// The cluster's name as the v1 metrics label it (its FQDN).
    cluster: String,
    memory_limit: f64,
    shards: i64,
    replication: bool,
}

/// Every RedisEnterpriseDatabase, its operator and its metrics.
#[derive(Clone, Debug, Default)]
pub struct Databases {
    databases: BTreeMap<Key, Database>,
    next_uid: u64,
}

/// A Redis Enterprise memory size (`100MB`, `1.5GB`) in bytes.
fn memory_bytes(text: &str) -> Option<f64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let n: f64 = t[..split].parse().ok()?;
    let unit = match &t[split..] {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        "TB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * unit)
}

impl Part for Databases {
    fn kinds(&self) -> &'static [SimKind] {
        KINDS
    }

    fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch> {
        let mut patches = Vec::new();
        let mut seen = BTreeSet::new();
        for d in objects.get("RedisEnterpriseDatabase").into_iter().flatten() {
            let (ns, name) = (ns_of(d), name_of(d));
            let k = key("RedisEnterpriseDatabase", ns, name);
            seen.insert(k.clone());
            let spec = &d["spec"];
            let rec = spec["redisEnterpriseCluster"]["name"]
                .as_str()
                .unwrap_or("rec");
            if !self.databases.contains_key(&k) {
                self.next_uid += 1;
            }
            let uid = self.next_uid;
            let db = self.databases.entry(k).or_insert_with(|| Database {
                uid,
                ..Database::default()
            });
            db.cluster = format!("{rec}.{ns}.svc.cluster.local");
            // The operator's defaults: 100MB, one shard, no replication.
            db.memory_limit = spec["memorySize"]
                .as_str()
                .and_then(memory_bytes)
                .unwrap_or(100.0 * 1024.0 * 1024.0);
            db.shards = spec["shardCount"].as_i64().unwrap_or(1).max(1);
            db.replication = spec["replication"].as_bool().unwrap_or(false);
            let status = &d["status"];
            if status["status"] != "active" || status["shardCount"] != db.shards {
                patches.push(StatusPatch {
                    kind: "RedisEnterpriseDatabase",
                    namespace: ns.into(),
                    name: name.into(),
                    status: json!({
                        "status": "active",
                        "specStatus": "Valid",
                        "shardCount": db.shards,
                        "databaseUID": db.uid.to_string(),
                        "databasePort": 12000 + db.uid,
                        "databaseURL": format!("redis://{name}.{ns}.svc.cluster.local:{}", 12000 + db.uid),
                    }),
                });
            }
        }
        self.databases.retain(|k, _| seen.contains(k));
        patches
    }

    fn exposition(&self, out: &mut String) {
        out.push_str(
            "# TYPE bdb_up gauge\n\
             # TYPE bdb_conns gauge\n\
             # TYPE bdb_avg_latency gauge\n\
             # TYPE bdb_used_memory gauge\n\
             # TYPE bdb_memory_limit gauge\n\
             # TYPE bdb_evicted_objects gauge\n\
             # TYPE redis_up gauge\n",
        );
        let mut shard = 0;
        for ((_, ns, name), db) in &self.databases {
            let l = format!(
                "namespace=\"{ns}\",cluster=\"{}\",bdb=\"{}\"",
                db.cluster, db.uid
            );
            out.push_str(&format!(
                "bdb_up{{{l},bdb_name=\"{name}\"}} 1\n\
                 bdb_conns{{{l},bdb_name=\"{name}\"}} 12\n\
                 bdb_avg_latency{{{l}}} {AVG_LATENCY_SECONDS}\n\
                 bdb_used_memory{{{l}}} {}\n\
                 bdb_memory_limit{{{l}}} {}\n\
                 bdb_evicted_objects{{{l}}} 0\n",
                MEMORY_USED_SHARE * db.memory_limit,
                db.memory_limit,
            ));
            let copies = if db.replication { 2 } else { 1 };
            for _ in 0..db.shards * copies {
                shard += 1;
                out.push_str(&format!("redis_up{{{l},redis=\"{shard}\"}} 1\n"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Model, tests::value};
    use super::*;
    use serde_json::Value;

    fn database(status: Value) -> Value {
        json!({
            "metadata": {"namespace": "cache", "name": "idempotency"},
            "spec": {"redisEnterpriseCluster": {"name": "rec"}, "memorySize": "1GB",
                     "shardCount": 2, "replication": true},
            "status": status,
        })
    }

    #[test]
    fn a_database_becomes_active_and_serves_steady_metrics() {
        let mut m = Model::default();
        let seen = |d| Objects::from([("RedisEnterpriseDatabase", vec![d])]);
        let patches = m.observe(&seen(database(json!({}))));
        assert_eq!(patches.len(), 1);
        assert_eq!(patches[0].status["status"], "active");
        assert_eq!(patches[0].status["shardCount"], 2);
        assert!(
            m.observe(&seen(database(patches[0].status.clone())))
                .is_empty()
        );
        m.advance(60.0);
        let text = m.exposition();
        let l = "namespace=\"cache\",cluster=\"rec.cache.svc.cluster.local\",bdb=\"1\"";
        assert_eq!(
            value(&text, &format!("bdb_up{{{l},bdb_name=\"idempotency\"}}")),
            1.0
        );
        let gb = 1024.0 * 1024.0 * 1024.0;
        assert_eq!(value(&text, &format!("bdb_memory_limit{{{l}}}")), gb);
        assert_eq!(value(&text, &format!("bdb_used_memory{{{l}}}")), 0.25 * gb);
        assert_eq!(
            value(&text, &format!("bdb_avg_latency{{{l}}}")),
            AVG_LATENCY_SECONDS
        );
        // Two shards, each replicated.
        assert_eq!(text.matches("redis_up{").count(), 4);
        assert_eq!(memory_bytes("1.5GB"), Some(1.5 * gb));
        assert_eq!(memory_bytes("1Gi"), None);
    }
}
