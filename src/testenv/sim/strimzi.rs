//! Strimzi (1.x, KRaft, `kafka.strimzi.io/v1`): the cluster operator (a
//! KafkaNodePool gets its node ids and brokers, the Kafka its Ready
//! condition, a scale-up its new brokers and, with auto-rebalancing, its
//! share of the partitions), the topic operator (a KafkaTopic gets its
//! partitions), and the metrics a Strimzi deployment is scraped for: the
//! brokers' and controllers' JMX exporter series (Strimzi's
//! `examples/metrics/kafka-metrics.yaml` rules), kafka-exporter's
//! `kafka_consumergroup_lag` (when `spec.kafkaExporter` deploys it), each
//! with the `strimzi_io_*` labels Strimzi's example PodMonitor maps from the
//! pods' labels, and kube-state-metrics' `strimzi_kafka_resource_info`
//! (Strimzi's custom resource state example) from the Kafka's Ready
//! condition.
//!
//! What [`Fault::KafkaUnderReplication`] models: every partition carries the
//! same produce traffic, so a broker writes as much as the replicas it
//! hosts. The fault caps one broker's disk at [`DEGRADED_SHARE`] of what it
//! was writing (a degraded volume, a noisy neighbour on the node): as a
//! follower it falls behind, and after [`ISR_SHRINK_SECONDS`] (Kafka's
//! `replica.lag.time.max.ms`, 30 s by default, shortened here like every
//! delay of the simulator) the leaders drop it from the in-sync replicas of
//! the partitions it follows; each leader counts those partitions in its
//! `kafka_server_replicamanager_underreplicatedpartitions`. Waiting does not
//! help. A broker more does, and only because of what Strimzi does after a
//! scale-up: the new broker starts after [`BROKER_START_SECONDS`], and with
//! `spec.cruiseControl.autoRebalance` mode `add-brokers` the operator runs a
//! Cruise Control rebalance (status `autoRebalance.state`
//! `RebalanceOnScaleUp`, then `Idle`) that, after [`REBALANCE_SECONDS`],
//! has moved an even share of the replicas onto the new broker, taken from
//! the most loaded brokers first and, among equals, from the one whose disk
//! is busiest (Cruise Control's disk goals). With three brokers and
//! replication factor 3 every broker hosts every partition; with four it
//! hosts three quarters, under the degraded disk's share, so it catches up
//! ([`CATCH_UP_SECONDS`]) and rejoins the ISR: no partition is
//! under-replicated any more. Without auto-rebalancing the new broker stays
//! empty (Kafka never moves partitions by itself) and the fault stays.
//! Scale-down is refused while the brokers to remove hold partitions, as
//! Strimzi's broker scale-down check does.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Fault, Key, Objects, Part, SimKind, StatusPatch, name_of, ns_of};

/// Share of its replication traffic a degraded broker's disk still writes.
pub const DEGRADED_SHARE: f64 = 0.85;
/// Seconds a lagging follower stays in the ISR (Kafka's default 30 s).
pub const ISR_SHRINK_SECONDS: f64 = 10.0;
/// Seconds a relieved follower takes to catch up and rejoin the ISR.
pub const CATCH_UP_SECONDS: f64 = 5.0;
/// Seconds a new broker takes to start (pod, JVM, joining the quorum).
pub const BROKER_START_SECONDS: f64 = 10.0;
/// Seconds Cruise Control's add-brokers rebalance takes here.
pub const REBALANCE_SECONDS: f64 = 15.0;
/// Messages behind per partition of the consumer group (kafka-exporter).
pub const CONSUMER_LAG: f64 = 5.0;

const KINDS: &[SimKind] = &[
    SimKind {
        group: "kafka.strimzi.io",
        version: "v1",
        kind: "Kafka",
        plural: "kafkas",
    },
    SimKind {
        group: "kafka.strimzi.io",
        version: "v1",
        kind: "KafkaNodePool",
        plural: "kafkanodepools",
    },
    SimKind {
        group: "kafka.strimzi.io",
        version: "v1",
        kind: "KafkaTopic",
        plural: "kafkatopics",
    },
];

const CLUSTER_LABEL: &str = "strimzi.io/cluster";

#[derive(Clone, Debug, Default)]
struct Pool {
    broker: bool,
    controller: bool,
    /// The running nodes (`status.nodeIds`).
    nodes: Vec<i64>,
    /// New brokers starting: their ids and seconds left.
    starting: Option<(Vec<i64>, f64)>,
    /// The generation reconciled (`status.observedGeneration`), and the
    /// latest seen.
    generation: i64,
    seen_generation: i64,
}

#[derive(Clone, Debug)]
struct Partition {
    topic: String,
    index: usize,
    /// Broker ids; the first leads.
    replicas: Vec<i64>,
}

/// The broker whose disk cannot keep up.
#[derive(Clone, Debug)]
struct Slow {
    broker: i64,
    /// Replicas it can keep up with.
    capacity: f64,
    overloaded_for: f64,
    relieved_for: f64,
    out_of_isr: bool,
}

#[derive(Clone, Debug, Default)]
struct Cluster {
    /// `spec.cruiseControl.autoRebalance` has mode `add-brokers`.
    rebalance_on_scale_up: bool,
    /// `spec.kafkaExporter` is set: Strimzi deploys kafka-exporter.
    exporter: bool,
    /// The Ready condition's status as last seen ("" without one).
    ready: String,
    pools: BTreeMap<String, Pool>,
    /// Partitions created per topic.
    topics: BTreeMap<String, usize>,
    partitions: Vec<Partition>,
    slow: Option<Slow>,
    /// An add-brokers rebalance under way: the new brokers, seconds left.
    rebalancing: Option<(Vec<i64>, f64)>,
}

/// Every Strimzi Kafka cluster (by namespace and name), and its operators.
#[derive(Clone, Debug, Default)]
pub struct Kafkas {
    clusters: BTreeMap<(String, String), Cluster>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn ready_condition(status: &Value) -> String {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn cluster_of(o: &Value) -> Option<&str> {
    o["metadata"]["labels"][CLUSTER_LABEL].as_str()
}

fn ready(reason: Option<&str>) -> Value {
    match reason {
        None => json!([{"type": "Ready", "status": "True", "lastTransitionTime": now()}]),
        Some(message) => json!([{
            "type": "Ready", "status": "False", "lastTransitionTime": now(),
            "reason": "InvalidResourceException", "message": message,
        }]),
    }
}

impl Cluster {
    fn brokers(&self) -> Vec<i64> {
        let mut b: Vec<i64> = self
            .pools
            .values()
            .filter(|p| p.broker)
            .flat_map(|p| p.nodes.iter().copied())
            .collect();
        b.sort_unstable();
        b
    }

    /// The lowest node ids no pool uses or is starting.
    fn free_ids(&self, n: usize) -> Vec<i64> {
        let used: BTreeSet<i64> = self
            .pools
            .values()
            .flat_map(|p| {
                p.nodes
                    .iter()
                    .chain(p.starting.iter().flat_map(|(ids, _)| ids))
                    .copied()
            })
            .collect();
        (0..).filter(|i| !used.contains(i)).take(n).collect()
    }

    fn hosted(&self, broker: i64) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.replicas.contains(&broker))
            .count()
    }

    fn under_replicated(&self, p: &Partition) -> bool {
        self.slow
            .as_ref()
            .is_some_and(|s| s.out_of_isr && p.replicas[1..].contains(&s.broker))
    }

    /// Under-replicated partitions led by `broker`.
    fn under_replicated_led_by(&self, broker: i64) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.replicas[0] == broker && self.under_replicated(p))
            .count()
    }

    fn total_under_replicated(&self) -> usize {
        self.partitions
            .iter()
            .filter(|p| self.under_replicated(p))
            .count()
    }

    /// Creates partitions of `topic` up to `partitions`, replicas spread over
    /// the brokers the way Kafka assigns them (round robin, shifted by
    /// partition); false when there are fewer brokers than `replicas`.
    fn create_partitions(&mut self, topic: &str, partitions: usize, replicas: usize) -> bool {
        let brokers = self.brokers();
        if brokers.len() < replicas || replicas == 0 {
            return false;
        }
        let have = self.topics.get(topic).copied().unwrap_or(0);
        for index in have..partitions {
            let start = self.partitions.len();
            self.partitions.push(Partition {
                topic: topic.to_string(),
                index,
                replicas: (0..replicas)
                    .map(|r| brokers[(start + r) % brokers.len()])
                    .collect(),
            });
        }
        self.topics.insert(topic.to_string(), partitions.max(have));
        true
    }

    /// Cruise Control's add-brokers rebalance: each new broker takes an even
    /// share of the replicas, from the most loaded brokers first (the
    /// busiest disk first among equals), followers before leaders.
    fn rebalance_onto(&mut self, new: &[i64]) {
        let brokers = self.brokers();
        if brokers.is_empty() {
            return;
        }
        let total: usize = self.partitions.iter().map(|p| p.replicas.len()).sum();
        let share = total / brokers.len();
        let slow = self.slow.as_ref().map(|s| s.broker);
        for &b in new {
            while self.hosted(b) < share {
                let mut donors: Vec<i64> = brokers.iter().copied().filter(|d| *d != b).collect();
                donors.sort_by_key(|d| (std::cmp::Reverse(self.hosted(*d)), Some(*d) != slow, *d));
                let step = donors.iter().find_map(|d| {
                    let movable = |p: &Partition| !p.replicas.contains(&b);
                    let at = |p: &Partition| p.replicas.iter().position(|r| r == d);
                    self.partitions
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| movable(p))
                        .filter_map(|(i, p)| at(p).map(|pos| (i, pos)))
                        .max_by_key(|(i, pos)| (*pos > 0, std::cmp::Reverse(*i)))
                });
                let Some((i, pos)) = step else { break };
                self.partitions[i].replicas[pos] = b;
            }
        }
    }

    fn kafka_status(&self, generation: i64) -> Value {
        let pools: Vec<Value> = self.pools.keys().map(|n| json!({"name": n})).collect();
        let problem = if !self.pools.values().any(|p| p.broker) {
            Some("no KafkaNodePool with the broker role")
        } else if !self.pools.values().any(|p| p.controller) {
            Some("no KafkaNodePool with the controller role")
        } else {
            None
        };
        json!({
            "conditions": ready(problem),
            "observedGeneration": generation,
            "kafkaNodePools": pools,
            "clusterId": "sim-cluster-id",
            "kafkaVersion": "4.1.0",
            "kafkaMetadataVersion": "4.1-IV1",
            "operatorLastSuccessfulVersion": "1.2.0",
        })
    }
}

fn pool_status(pool: &Pool, generation: i64) -> Value {
    let mut roles = Vec::new();
    if pool.controller {
        roles.push("controller");
    }
    if pool.broker {
        roles.push("broker");
    }
    json!({
        "nodeIds": pool.nodes,
        "replicas": pool.nodes.len(),
        "roles": roles,
        "clusterId": "sim-cluster-id",
        "observedGeneration": generation,
        "conditions": [],
    })
}

fn generation_of(o: &Value) -> i64 {
    o["metadata"]["generation"].as_i64().unwrap_or(1)
}

impl Kafkas {
    /// The cluster holding pool `ns`/`pool`.
    fn cluster_of_pool(&self, ns: &str, pool: &str) -> Option<&Cluster> {
        self.clusters
            .iter()
            .find(|((n, _), c)| n == ns && c.pools.contains_key(pool))
            .map(|(_, c)| c)
    }

    fn cluster_of_pool_mut(&mut self, ns: &str, pool: &str) -> Option<&mut Cluster> {
        self.clusters
            .iter_mut()
            .find(|((n, _), c)| n == ns && c.pools.contains_key(pool))
            .map(|(_, c)| c)
    }
}

impl Part for Kafkas {
    fn kinds(&self) -> &'static [SimKind] {
        KINDS
    }

    fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch> {
        let mut patches = Vec::new();
        let mut seen = BTreeSet::new();
        let kafkas = objects.get("Kafka").into_iter().flatten();
        for k in kafkas.clone() {
            let id = (ns_of(k).to_string(), name_of(k).to_string());
            let c = self.clusters.entry(id.clone()).or_default();
            c.rebalance_on_scale_up = k["spec"]["cruiseControl"]["autoRebalance"]
                .as_array()
                .is_some_and(|modes| modes.iter().any(|m| m["mode"] == "add-brokers"));
            c.exporter = k["spec"]["kafkaExporter"].is_object();
            c.ready = ready_condition(&k["status"]);
            seen.insert(id);
        }
        self.clusters.retain(|id, _| seen.contains(id));

        // Node pools: node ids and brokers.
        let mut pools_seen = BTreeSet::new();
        for p in objects.get("KafkaNodePool").into_iter().flatten() {
            let (ns, name) = (ns_of(p), name_of(p));
            let Some(c) = cluster_of(p).and_then(|cluster| {
                self.clusters
                    .get_mut(&(ns.to_string(), cluster.to_string()))
            }) else {
                continue;
            };
            pools_seen.insert((ns.to_string(), name.to_string()));
            let roles = p["spec"]["roles"].as_array().cloned().unwrap_or_default();
            let desired = p["spec"]["replicas"].as_i64().unwrap_or(0).max(0) as usize;
            let status = &p["status"];
            if !c.pools.contains_key(name) {
                let mut pool = Pool {
                    broker: roles.iter().any(|r| r == "broker"),
                    controller: roles.iter().any(|r| r == "controller"),
                    ..Pool::default()
                };
                // Adopt the nodes of a pool already running, else bootstrap.
                pool.nodes = status["nodeIds"]
                    .as_array()
                    .map(|ids| ids.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                c.pools.insert(name.to_string(), pool);
                if c.pools[name].nodes.is_empty() {
                    let ids = c.free_ids(desired);
                    let pool = c.pools.get_mut(name).expect("inserted");
                    pool.nodes = ids;
                }
            }
            let brokers_hold = |c: &Cluster, ids: &[i64]| ids.iter().any(|i| c.hosted(*i) > 0);
            let running = c.pools[name].nodes.len();
            let pending = c.pools[name].starting.is_some();
            if desired > running && !pending {
                let ids = c.free_ids(desired - running);
                c.pools.get_mut(name).expect("pool").starting = Some((ids, BROKER_START_SECONDS));
            } else if desired < running && !pending {
                let pool = &c.pools[name];
                let gone: Vec<i64> = pool.nodes[desired..].to_vec();
                // Strimzi's scale-down check: refused while they hold
                // partitions.
                if !brokers_hold(c, &gone) {
                    c.pools.get_mut(name).expect("pool").nodes.truncate(desired);
                }
            }
            let pool = c.pools.get_mut(name).expect("pool");
            pool.seen_generation = generation_of(p);
            if pool.starting.is_none() {
                pool.generation = pool.seen_generation;
            }
            let want = pool_status(pool, pool.generation);
            if status["nodeIds"] != want["nodeIds"]
                || status["observedGeneration"] != want["observedGeneration"]
            {
                patches.push(StatusPatch {
                    kind: "KafkaNodePool",
                    namespace: ns.into(),
                    name: name.into(),
                    status: want,
                });
            }
        }
        for ((ns, _), c) in &mut self.clusters {
            c.pools
                .retain(|name, _| pools_seen.contains(&(ns.clone(), name.clone())));
        }

        // Topics: the topic operator creates their partitions.
        let mut topics_seen = BTreeSet::new();
        for t in objects.get("KafkaTopic").into_iter().flatten() {
            let (ns, name) = (ns_of(t), name_of(t));
            let Some(c) = cluster_of(t).and_then(|cluster| {
                self.clusters
                    .get_mut(&(ns.to_string(), cluster.to_string()))
            }) else {
                continue;
            };
            let topic = t["spec"]["topicName"].as_str().unwrap_or(name).to_string();
            topics_seen.insert((ns.to_string(), topic.clone()));
            let partitions = t["spec"]["partitions"].as_i64().unwrap_or(1).max(1) as usize;
            let replicas = t["spec"]["replicas"].as_i64().unwrap_or(1).max(1) as usize;
            let created = c.create_partitions(&topic, partitions, replicas);
            let status = &t["status"];
            let generation = generation_of(t);
            let want_ready = if created { "True" } else { "False" };
            if ready_condition(status) != want_ready || status["observedGeneration"] != generation {
                let conditions = if created {
                    json!([{"type": "Ready", "status": "True", "lastTransitionTime": now()}])
                } else {
                    json!([{
                        "type": "Ready", "status": "False", "lastTransitionTime": now(),
                        "reason": "KafkaError",
                        "message": format!("Replication factor: {replicas} larger than available brokers: {}.", c.brokers().len()),
                    }])
                };
                patches.push(StatusPatch {
                    kind: "KafkaTopic",
                    namespace: ns.into(),
                    name: name.into(),
                    status: json!({
                        "conditions": conditions,
                        "observedGeneration": generation,
                        "topicName": topic,
                        "topicId": format!("sim-{ns}-{topic}"),
                    }),
                });
            }
        }
        for ((ns, _), c) in &mut self.clusters {
            c.topics
                .retain(|topic, _| topics_seen.contains(&(ns.clone(), topic.clone())));
            let topics = c.topics.clone();
            c.partitions.retain(|p| topics.contains_key(&p.topic));
        }

        // The Kafka: Ready once reconciled.
        for k in kafkas {
            let id = (ns_of(k).to_string(), name_of(k).to_string());
            let c = &self.clusters[&id];
            let generation = generation_of(k);
            let want = c.kafka_status(generation);
            if c.ready != ready_condition(&want) || k["status"]["observedGeneration"] != generation
            {
                patches.push(StatusPatch {
                    kind: "Kafka",
                    namespace: id.0,
                    name: id.1,
                    status: want,
                });
            }
        }
        patches
    }

    fn advance(&mut self, dt: f64) -> Vec<StatusPatch> {
        let mut patches = Vec::new();
        for ((ns, name), c) in &mut self.clusters {
            let mut added = Vec::new();
            for (pool_name, pool) in &mut c.pools {
                let Some((ids, left)) = &mut pool.starting else {
                    continue;
                };
                *left -= dt;
                if *left > 0.0 {
                    continue;
                }
                pool.nodes.extend(ids.iter().copied());
                if pool.broker {
                    added.extend(ids.iter().copied());
                }
                pool.starting = None;
                pool.generation = pool.seen_generation;
                patches.push(StatusPatch {
                    kind: "KafkaNodePool",
                    namespace: ns.clone(),
                    name: pool_name.clone(),
                    status: pool_status(pool, pool.generation),
                });
            }
            let rebalance_starts = !added.is_empty() && c.rebalance_on_scale_up;
            if rebalance_starts {
                let (ids, left) = c.rebalancing.get_or_insert((Vec::new(), 0.0));
                ids.extend(added);
                *left = REBALANCE_SECONDS;
                patches.push(StatusPatch {
                    kind: "Kafka",
                    namespace: ns.clone(),
                    name: name.clone(),
                    status: json!({"autoRebalance": {
                        "state": "RebalanceOnScaleUp",
                        "lastTransitionTime": now(),
                        "modes": [{"mode": "add-brokers", "brokers": ids.clone()}],
                    }}),
                });
            }
            if let Some((ids, left)) = &mut c.rebalancing
                && !rebalance_starts
            {
                *left -= dt;
                if *left <= 0.0 {
                    let ids = ids.clone();
                    c.rebalancing = None;
                    c.rebalance_onto(&ids);
                    patches.push(StatusPatch {
                        kind: "Kafka",
                        namespace: ns.clone(),
                        name: name.clone(),
                        status: json!({"autoRebalance": {
                            "state": "Idle", "lastTransitionTime": now(), "modes": null,
                        }}),
                    });
                }
            }
            let hosted = c.slow.as_ref().map(|s| c.hosted(s.broker));
            if let (Some(s), Some(hosted)) = (&mut c.slow, hosted) {
                if hosted as f64 > s.capacity {
                    s.relieved_for = 0.0;
                    s.overloaded_for += dt;
                    if s.overloaded_for >= ISR_SHRINK_SECONDS {
                        s.out_of_isr = true;
                    }
                } else {
                    s.overloaded_for = 0.0;
                    if s.out_of_isr {
                        s.relieved_for += dt;
                        if s.relieved_for >= CATCH_UP_SECONDS {
                            s.out_of_isr = false;
                        }
                    }
                }
            }
        }
        patches
    }

    /// Degrades the disk of the first broker of the pool `k`; false until
    /// it has brokers hosting partitions.
    fn inject(&mut self, fault: &Fault, k: &Key) -> bool {
        if *fault != Fault::KafkaUnderReplication {
            return false;
        }
        let Some(c) = self.cluster_of_pool_mut(&k.1, &k.2) else {
            return false;
        };
        let Some(&broker) = c.pools[&k.2].nodes.first().filter(|_| c.pools[&k.2].broker) else {
            return false;
        };
        let hosted = c.hosted(broker);
        if hosted == 0 {
            return false;
        }
        c.slow = Some(Slow {
            broker,
            capacity: DEGRADED_SHARE * hosted as f64,
            overloaded_for: 0.0,
            relieved_for: 0.0,
            out_of_isr: false,
        });
        true
    }

    fn end(&mut self, fault: &Fault, k: &Key) {
        if *fault == Fault::KafkaUnderReplication
            && let Some(c) = self.cluster_of_pool_mut(&k.1, &k.2)
        {
            c.slow = None;
        }
    }

    /// No partition of the pool's cluster under-replicated.
    fn healthy(&self, fault: &Fault, k: &Key) -> bool {
        *fault == Fault::KafkaUnderReplication
            && self
                .cluster_of_pool(&k.1, &k.2)
                .is_some_and(|c| c.total_under_replicated() == 0)
    }

    fn exposition(&self, out: &mut String) {
        out.push_str(
            "# TYPE kafka_server_replicamanager_underreplicatedpartitions gauge\n\
             # TYPE kafka_server_replicamanager_partitioncount gauge\n\
             # TYPE kafka_server_replicamanager_leadercount gauge\n\
             # TYPE kafka_network_requestmetrics_totaltimems gauge\n\
             # TYPE kafka_controller_kafkacontroller_activecontrollercount gauge\n\
             # TYPE kafka_controller_kafkacontroller_offlinepartitionscount gauge\n\
             # TYPE kafka_consumergroup_lag gauge\n\
             # TYPE strimzi_kafka_resource_info gauge\n",
        );
        for ((ns, cluster), c) in &self.clusters {
            let mut active_controller = true;
            for (pool_name, pool) in &c.pools {
                for id in &pool.nodes {
                    let l = format!(
                        "namespace=\"{ns}\",kubernetes_pod_name=\"{cluster}-{pool_name}-{id}\",\
                         strimzi_io_cluster=\"{cluster}\",strimzi_io_kind=\"Kafka\",\
                         strimzi_io_name=\"{cluster}-kafka\",strimzi_io_pool_name=\"{pool_name}\",\
                         strimzi_io_broker_role=\"{}\",strimzi_io_controller_role=\"{}\"",
                        pool.broker, pool.controller
                    );
                    if pool.broker {
                        let leads = c.partitions.iter().filter(|p| p.replicas[0] == *id).count();
                        out.push_str(&format!(
                            "kafka_server_replicamanager_underreplicatedpartitions{{{l}}} {}\n\
                             kafka_server_replicamanager_partitioncount{{{l}}} {}\n\
                             kafka_server_replicamanager_leadercount{{{l}}} {leads}\n\
                             kafka_network_requestmetrics_totaltimems{{{l},request=\"Produce\",quantile=\"0.99\"}} 12\n",
                            c.under_replicated_led_by(*id),
                            c.hosted(*id),
                        ));
                    }
                    if pool.controller {
                        out.push_str(&format!(
                            "kafka_controller_kafkacontroller_activecontrollercount{{{l}}} {}\n\
                             kafka_controller_kafkacontroller_offlinepartitionscount{{{l}}} 0\n",
                            u8::from(active_controller),
                        ));
                        active_controller = false;
                    }
                }
            }
            if c.exporter {
                let l = format!(
                    "namespace=\"{ns}\",kubernetes_pod_name=\"{cluster}-kafka-exporter\",\
                     strimzi_io_cluster=\"{cluster}\",strimzi_io_kind=\"Kafka\",\
                     strimzi_io_name=\"{cluster}-kafka-exporter\""
                );
                for p in &c.partitions {
                    out.push_str(&format!(
                        "kafka_consumergroup_lag{{{l},consumergroup=\"{topic}-consumers\",topic=\"{topic}\",partition=\"{index}\"}} {CONSUMER_LAG}\n",
                        topic = p.topic,
                        index = p.index,
                    ));
                }
            }
            out.push_str(&format!(
                "strimzi_kafka_resource_info{{exported_namespace=\"{ns}\",name=\"{cluster}\",ready=\"{}\"}} 1\n",
                c.ready
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Model, key, tests::value};
    use super::*;

    fn kafka(status: Value) -> Value {
        json!({
            "metadata": {"namespace": "k", "name": "events", "generation": 1},
            "spec": {
                "kafka": {"listeners": []},
                "cruiseControl": {"autoRebalance": [{"mode": "add-brokers"}]},
                "kafkaExporter": {},
            },
            "status": status,
        })
    }

    fn pool(name: &str, roles: &[&str], replicas: i64, generation: i64, status: Value) -> Value {
        json!({
            "metadata": {"namespace": "k", "name": name, "generation": generation,
                         "labels": {CLUSTER_LABEL: "events"}},
            "spec": {"replicas": replicas, "roles": roles, "storage": {"type": "ephemeral"}},
            "status": status,
        })
    }

    fn topic(name: &str, partitions: i64) -> Value {
        json!({
            "metadata": {"namespace": "k", "name": name, "generation": 1,
                         "labels": {CLUSTER_LABEL: "events"}},
            "spec": {"partitions": partitions, "replicas": 3},
        })
    }

    /// The estate as the API server shows it after `patches` were written.
    struct Api {
        kafka: Value,
        pools: BTreeMap<String, Value>,
        topics: Vec<Value>,
    }

    impl Api {
        fn objects(&self) -> Objects {
            Objects::from([
                ("Kafka", vec![self.kafka.clone()]),
                ("KafkaNodePool", self.pools.values().cloned().collect()),
                ("KafkaTopic", self.topics.clone()),
            ])
        }

        fn write(&mut self, patches: Vec<StatusPatch>) {
            for p in patches {
                let target = match p.kind {
                    "Kafka" => &mut self.kafka,
                    "KafkaNodePool" => self.pools.get_mut(&p.name).expect("pool"),
                    _ => self
                        .topics
                        .iter_mut()
                        .find(|t| t["metadata"]["name"] == p.name.as_str())
                        .expect("topic"),
                };
                let status = target["status"].as_object().cloned().unwrap_or_default();
                let mut merged = Value::Object(status);
                for (f, v) in p.status.as_object().expect("status") {
                    merged[f] = v.clone();
                }
                target["status"] = merged;
            }
        }

        /// One tick of the estate: observe, advance `dt`, write.
        fn tick(&mut self, m: &mut Model, dt: f64) {
            let mut p = m.observe(&self.objects());
            p.extend(m.advance(dt));
            self.write(p);
        }
    }

    fn urp(m: &Model) -> f64 {
        let text = m.exposition();
        text.lines()
            .filter(|l| l.starts_with("kafka_server_replicamanager_underreplicatedpartitions{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    #[test]
    fn a_broker_more_relieves_a_broker_whose_disk_cannot_keep_up() {
        let mut m = Model::default();
        let mut api = Api {
            kafka: kafka(json!({})),
            pools: BTreeMap::from([
                (
                    "brokers".into(),
                    pool("brokers", &["broker"], 3, 1, json!({})),
                ),
                (
                    "controllers".into(),
                    pool("controllers", &["controller"], 3, 1, json!({})),
                ),
            ]),
            topics: vec![topic("payments.events", 6), topic("payments.ledger", 9)],
        };
        api.tick(&mut m, 0.5);
        api.tick(&mut m, 0.5);
        // Bootstrapped: node ids, a Ready Kafka, topics with 15 partitions.
        assert_eq!(api.pools["brokers"]["status"]["nodeIds"], json!([0, 1, 2]));
        assert_eq!(
            api.pools["controllers"]["status"]["nodeIds"],
            json!([3, 4, 5])
        );
        assert_eq!(api.pools["brokers"]["status"]["replicas"], 3);
        assert_eq!(ready_condition(&api.kafka["status"]), "True");
        assert_eq!(ready_condition(&api.topics[1]["status"]), "True");
        let text = m.exposition();
        let broker0 = "namespace=\"k\",kubernetes_pod_name=\"events-brokers-0\",strimzi_io_cluster=\"events\",strimzi_io_kind=\"Kafka\",strimzi_io_name=\"events-kafka\",strimzi_io_pool_name=\"brokers\",strimzi_io_broker_role=\"true\",strimzi_io_controller_role=\"false\"";
        assert_eq!(
            value(
                &text,
                &format!("kafka_server_replicamanager_partitioncount{{{broker0}}}")
            ),
            15.0
        );
        assert!(text.contains("kafka_controller_kafkacontroller_activecontrollercount{namespace=\"k\",kubernetes_pod_name=\"events-controllers-3\""));
        assert!(text.contains("kafka_consumergroup_lag{namespace=\"k\",kubernetes_pod_name=\"events-kafka-exporter\",strimzi_io_cluster=\"events\",strimzi_io_kind=\"Kafka\",strimzi_io_name=\"events-kafka-exporter\",consumergroup=\"payments.ledger-consumers\",topic=\"payments.ledger\",partition=\"8\"} 5"));
        assert!(text.contains(
            "strimzi_kafka_resource_info{exported_namespace=\"k\",name=\"events\",ready=\"True\"} 1"
        ));
        // Nothing changes while healthy: no status patch loop.
        assert!(m.observe(&api.objects()).is_empty());

        let k = key("KafkaNodePool", "k", "brokers");
        assert!(m.healthy(Fault::KafkaUnderReplication, &k));
        assert!(!m.inject(
            Fault::KafkaUnderReplication,
            key("KafkaNodePool", "k", "controllers")
        ));
        assert!(m.inject(Fault::KafkaUnderReplication, k.clone()));
        // Broker 0 falls behind; after the ISR shrink its 10 followed
        // partitions are under-replicated, and stay so.
        api.tick(&mut m, ISR_SHRINK_SECONDS / 2.0);
        assert_eq!(urp(&m), 0.0);
        api.tick(&mut m, ISR_SHRINK_SECONDS);
        assert_eq!(urp(&m), 10.0);
        for _ in 0..20 {
            api.tick(&mut m, 10.0);
        }
        assert_eq!(urp(&m), 10.0);
        assert!(!m.healthy(Fault::KafkaUnderReplication, &k));

        // kafka-scale adds a broker: spec.replicas 4.
        let brokers = api.pools.get_mut("brokers").expect("pool");
        brokers["spec"]["replicas"] = json!(4);
        brokers["metadata"]["generation"] = json!(2);
        api.tick(&mut m, 1.0);
        assert_eq!(
            api.pools["brokers"]["status"]["replicas"], 3,
            "still starting"
        );
        api.tick(&mut m, BROKER_START_SECONDS);
        assert_eq!(
            api.pools["brokers"]["status"]["nodeIds"],
            json!([0, 1, 2, 6])
        );
        assert_eq!(api.pools["brokers"]["status"]["observedGeneration"], 2);
        assert_eq!(
            api.kafka["status"]["autoRebalance"]["state"],
            "RebalanceOnScaleUp"
        );
        assert_eq!(urp(&m), 10.0, "the new broker is empty until the rebalance");
        api.tick(&mut m, REBALANCE_SECONDS);
        assert_eq!(api.kafka["status"]["autoRebalance"]["state"], "Idle");
        let hosted: Vec<usize> = [0, 1, 2, 6]
            .iter()
            .map(|b| m.kafka.clusters[&("k".into(), "events".into())].hosted(*b))
            .collect();
        assert_eq!(hosted.iter().sum::<usize>(), 45, "{hosted:?}");
        assert!(hosted.iter().all(|h| (11..=12).contains(h)), "{hosted:?}");
        // Broker 0 catches up and rejoins the ISR.
        api.tick(&mut m, CATCH_UP_SECONDS);
        api.tick(&mut m, 0.5);
        assert_eq!(urp(&m), 0.0);
        assert!(m.healthy(Fault::KafkaUnderReplication, &k));
        assert!(m.observe(&api.objects()).is_empty());
        // A scale-down would strand partitions: refused.
        api.pools.get_mut("brokers").expect("pool")["spec"]["replicas"] = json!(3);
        api.tick(&mut m, 1.0);
        assert_eq!(api.pools["brokers"]["status"]["replicas"], 4);
    }

    #[test]
    fn without_auto_rebalancing_the_new_broker_stays_empty() {
        let mut m = Model::default();
        let mut k = kafka(json!({}));
        k["spec"]["cruiseControl"] = json!({});
        let mut api = Api {
            kafka: k,
            pools: BTreeMap::from([
                (
                    "brokers".into(),
                    pool("brokers", &["broker"], 3, 1, json!({})),
                ),
                (
                    "controllers".into(),
                    pool("controllers", &["controller"], 3, 1, json!({})),
                ),
            ]),
            topics: vec![topic("payments.events", 15)],
        };
        api.tick(&mut m, 0.5);
        let k = key("KafkaNodePool", "k", "brokers");
        assert!(m.inject(Fault::KafkaUnderReplication, k.clone()));
        api.tick(&mut m, ISR_SHRINK_SECONDS);
        api.pools.get_mut("brokers").expect("pool")["spec"]["replicas"] = json!(4);
        for _ in 0..10 {
            api.tick(&mut m, 10.0);
        }
        assert_eq!(api.pools["brokers"]["status"]["replicas"], 4);
        assert_eq!(urp(&m), 10.0);
        assert!(!m.healthy(Fault::KafkaUnderReplication, &k));
    }
}
