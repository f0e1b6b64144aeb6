//! Reconciler throughput on a real kube-apiserver: create N PaymentGateways
//! and time until every one has its owned objects applied and its status
//! written by `autopilot run` (the bench-profile binary, as its own process,
//! so its peak RSS is its own). In the same run, the floor: from one client
//! with the same concurrency, the same writes done plainly — create the
//! PaymentGateway, apply its owned objects (rendered by the same plan
//! functions, through the same `act::apply_owned`), patch its status. Prints
//! both, their ratio, the API requests each sent per gateway (the API
//! server's `apiserver_request_total`, less the watch the bench waits on) and the
//! controller's peak RSS. 10,000 unrelated Deployments (0 replicas) and
//! ConfigMaps sit in a namespace the controller also watches. Each side of
//! each size runs on a control plane of its own, started afresh, so
//! neither works on the other's objects.
//!
//! With `BENCH_READY=1`, a second control plane with kube-controller-manager
//! and the fake kubelet times create → every gateway `Ready` (its pods
//! Running and Ready), beside the floor's writes → every Deployment
//! available.
//!
//!   cargo bench --features testenv --bench reconcile     # N = 100 and 1000
//!   BENCH_N=100 BENCH_UNRELATED=0 cargo bench --features testenv --bench reconcile
//!   BENCH_N=100,1000 BENCH_READY=1 cargo bench --features testenv --bench reconcile
//!
//! To find where the controller's time and memory go:
//!
//! - `BENCH_LOOP=0`: the agent's observe → act loop does not run beside the
//!   controllers (its cycle is a day), so the figures are the controllers'
//!   alone;
//! - `BENCH_AGENT_ENV=K=V,K=V`: environment of the agent process, for an
//!   allocator setting (`MALLOC_ARENA_MAX=2`) or a heap profiler preloaded
//!   into it (`LD_PRELOAD=…/libheaptrack_preload.so,DUMP_HEAPTRACK_OUTPUT=…`).
//!   The agent is stopped with SIGTERM, so a profiler can write its data.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use autopilot::{
    act,
    crd::{PaymentGateway, PaymentGatewaySpec, Phase, WorkloadStatus},
    reconcile::{Facts, objects::Identity, payment_gateway},
    testenv::{self, ControlPlane, Options, kubelet},
};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{ConfigMap, Namespace},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{PostParams, WatchEvent, WatchParams},
};
use serde_json::json;

const CONCURRENCY: usize = 8;
/// The namespace of the unrelated Deployments and ConfigMaps.
const UNRELATED: &str = "unrelated";

/// A gateway of `replicas`. Its unavailability tolerance is the longest
/// allowed: without `BENCH_READY` no pod ever runs, and a tolerance that
/// ran out during a long run (300 s by default, less than N = 5,000 takes)
/// would fail every early gateway's rollout and reconcile it again, a cost
/// of the bench's missing pods, not of reconciling.
fn spec(replicas: i32) -> PaymentGatewaySpec {
    serde_json::from_value(json!({
        "version": "2.4.1",
        "replicas": replicas,
        "config": {"database": {"clusterName": "payments-db"}, "features": {"rateLimitPerSecond": 500}},
        "upgrade": {"unavailableToleranceSeconds": 3600},
    }))
    .expect("spec")
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

/// Sum of `apiserver_request_total` over every label set.
async fn requests(client: &Client) -> f64 {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(req).await.expect("apiserver /metrics");
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Deployments and ConfigMaps no controller of ours owns, `n` of each.
async fn unrelated(client: &Client, n: usize) {
    if n == 0 {
        return;
    }
    let ns = UNRELATED;
    namespace(client, ns).await;
    let started = Instant::now();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let (deployments, config_maps) = (deployments.clone(), config_maps.clone());
            async move {
                let labels = json!({"app": format!("other-{i}")});
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("other-{i}"), "labels": labels},
                    "data": {"KEY": "value ".repeat(20)},
                }))
                .expect("cm");
                config_maps
                    .create(&PostParams::default(), &cm)
                    .await
                    .expect("unrelated ConfigMap");
                let d: Deployment = serde_json::from_value(json!({
                    "metadata": {"name": format!("other-{i}"), "labels": labels},
                    "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                        "template": {"metadata": {"labels": labels},
                            "spec": {"containers": [{"name": "app", "image": "registry.example/other:1"}]}}},
                }))
                .expect("deployment");
                deployments
                    .create(&PostParams::default(), &d)
                    .await
                    .expect("unrelated Deployment");
            }
        })
        .await;
    eprintln!(
        "created {n} unrelated Deployments and ConfigMaps in {:.0?}",
        started.elapsed()
    );
}

/// Waits until `n` objects of `api` are `done`, from one watch (started at
/// resourceVersion 0, so the API server's watch cache sends the objects
/// there are, then each change once), and returns the requests it sent.
/// (It polled a full LIST every 250 ms before: at N = 5,000 that kept the
/// API server and this process busy listing thousands of objects four
/// times a second, on the cores the controller under test needed.)
async fn wait_all<K, F>(api: &Api<K>, n: usize, start: Instant, what: &str, done: F) -> u64
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let mut state: HashMap<String, bool> = HashMap::new();
    let mut sent = 0;
    let mut version = "0".to_string();
    let mut last_report = Instant::now();
    loop {
        sent += 1;
        let mut events = api
            .watch(&WatchParams::default().timeout(290), &version)
            .await
            .expect("watch")
            .boxed();
        while let Some(event) = events.try_next().await.expect("watch event") {
            match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    version = o.resource_version().unwrap_or(version);
                    state.insert(o.name_any(), done(&o));
                }
                WatchEvent::Deleted(o) => {
                    state.remove(&o.name_any());
                }
                WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                // Too old to resume from: start again from the cache.
                WatchEvent::Error(e) if e.code == 410 => {
                    version = "0".into();
                    break;
                }
                WatchEvent::Error(e) => panic!("watching for {what}: {e:?}"),
            }
            let count = state.values().filter(|d| **d).count();
            if count == n {
                return sent;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("  {count}/{n} {what} after {:.0?}", start.elapsed());
                last_report = Instant::now();
            }
            assert!(
                start.elapsed() < Duration::from_secs(1800),
                "gave up after 30 minutes at {count}/{n} {what}"
            );
        }
    }
}

fn reconciled(p: &PaymentGateway) -> bool {
    p.status
        .as_ref()
        .is_some_and(|s| s.observed_generation == p.metadata.generation)
}

fn ready(p: &PaymentGateway) -> bool {
    reconciled(p) && p.status.as_ref().is_some_and(|s| s.phase == Phase::Ready)
}

struct Run {
    elapsed: Duration,
    requests_per_gateway: f64,
    rss_kib: u64,
    /// CPU seconds (user + system) of the process that did the work: the
    /// agent for the controller, this bench's for the floor.
    cpu_s: f64,
}

/// The floor: for each gateway, the CR create, the owned objects applied
/// and the status patched, `CONCURRENCY` at a time from one client; with
/// `ready`, then until every Deployment has all its replicas available.
async fn floor(client: &Client, n: usize, replicas: i32, ready: bool) -> Run {
    let ns = format!("floor-{n}{}", if ready { "-ready" } else { "" });
    namespace(client, &ns).await;
    let _kubelet = if ready {
        Some(kubelet::start(client.clone(), &ns).await.expect("kubelet"))
    } else {
        None
    };
    let api: Api<PaymentGateway> = Api::namespaced(client.clone(), &ns);
    let before = requests(client).await;
    let cpu_before = cpu_seconds("self");
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (client, api, ns) = (client.clone(), api.clone(), ns.clone());
            async move {
                let spec = spec(replicas);
                let v = payment_gateway::validate(&spec).expect("valid");
                let pgw = api
                    .create(
                        &PostParams::default(),
                        &PaymentGateway::new(&format!("gw-{i}"), spec.clone()),
                    )
                    .await
                    .expect("create gateway");
                let id = Identity {
                    component: payment_gateway::COMPONENT,
                    name: pgw.name_any(),
                    namespace: ns.clone(),
                    owner: pgw.controller_owner_ref(&()).expect("owner"),
                };
                let objects =
                    payment_gateway::plan(&id, &v, &Facts::default(), &spec.version).expect("plan");
                act::apply_owned(&client, &ns, &id.name, &id.owner.uid, objects)
                    .await
                    .expect("apply");
                let status = WorkloadStatus {
                    phase: Phase::Progressing,
                    current_version: Some(spec.version.clone()),
                    observed_generation: pgw.meta().generation,
                    ..Default::default()
                };
                act::apply_status(&client, &pgw, serde_json::to_value(status).expect("status"))
                    .await
                    .expect("status");
            }
        })
        .await;
    let mut waits = 0;
    if ready {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        waits = wait_all(
            &deployments,
            n,
            start,
            "floor: Deployments available",
            |d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(replicas),
        )
        .await;
    }
    let elapsed = start.elapsed();
    Run {
        elapsed,
        // Its own wait is not one of the writes.
        requests_per_gateway: (requests(client).await - before - waits as f64) / n as f64,
        rss_kib: 0,
        cpu_s: cpu_seconds("self") - cpu_before,
    }
}

fn peak_rss_kib(child: &Child) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// `autopilot run` on its own namespace: the time from the first create
/// until every gateway is reconciled (or, with `ready`, Ready).
async fn controller(
    cp: &ControlPlane,
    client: &Client,
    n: usize,
    replicas: i32,
    ready: bool,
) -> Run {
    let ns = format!("bench-{n}{}", if ready { "-ready" } else { "" });
    namespace(client, &ns).await;
    let _kubelet = if ready {
        Some(kubelet::start(client.clone(), &ns).await.expect("kubelet"))
    } else {
        None
    };
    let before = requests(client).await;
    // Its scope also covers the namespace of the unrelated objects, so its
    // owned-object watches see them (and must not cache them).
    let scope = format!("{ns},{UNRELATED}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args([
            "run",
            "--namespace",
            &scope,
            "--listen",
            "127.0.0.1:0",
            "--concurrency",
            &CONCURRENCY.to_string(),
        ])
        .args(cycle_args())
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        .envs(agent_env())
        .stdin(Stdio::null())
        .spawn()
        .expect("start autopilot run");
    let api: Api<PaymentGateway> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let api = api.clone();
            async move {
                let pgw = PaymentGateway::new(&format!("gw-{i}"), spec(replicas));
                api.create(&PostParams::default(), &pgw)
                    .await
                    .expect("create gateway");
            }
        })
        .await;
    let waits = if ready {
        wait_all(&api, n, start, "gateways Ready", ready_check).await
    } else {
        wait_all(&api, n, start, "gateways reconciled", reconciled).await
    };
    let elapsed = start.elapsed();
    let rss_kib = peak_rss_kib(&child);
    let cpu_s = cpu_seconds(&child.id().to_string());
    // SIGTERM first, so that the agent (and a profiler preloaded into it)
    // shuts down and writes what it has.
    testenv::stop(&mut child, Duration::from_secs(30));
    // The bench's own wait is not the controller's.
    let sent = requests(client).await - before - waits as f64;
    Run {
        elapsed,
        requests_per_gateway: sent / n as f64,
        rss_kib,
        cpu_s,
    }
}

fn ready_check(p: &PaymentGateway) -> bool {
    ready(p)
}

fn row(n: usize, c: &Run, f: &Run) {
    println!(
        "| {n} | {:.2} s ({:.0}/s) | {:.2} s ({:.0}/s) | {:.2}× | {:.1} / {:.1} | {:.1} MiB | {:.1} s ({:.0} ms/gw) / {:.1} s |",
        c.elapsed.as_secs_f64(),
        n as f64 / c.elapsed.as_secs_f64(),
        f.elapsed.as_secs_f64(),
        n as f64 / f.elapsed.as_secs_f64(),
        c.elapsed.as_secs_f64() / f.elapsed.as_secs_f64(),
        c.requests_per_gateway,
        f.requests_per_gateway,
        c.rss_kib as f64 / 1024.0,
        c.cpu_s,
        1000.0 * c.cpu_s / n as f64,
        f.cpu_s,
    );
}

/// User + system CPU seconds of process `pid` (`self` for this one), from
/// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // The command name may hold spaces: count fields after its ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

fn header(what: &str) {
    println!();
    println!(
        "| N | controller: create → all {what} | floor: the same writes, plain | ratio | requests per gateway (controller / floor) | controller peak RSS | CPU: controller / floor's client |"
    );
    println!("|---|---|---|---|---|---|---|");
}

/// `--cycle-seconds 86400` with `BENCH_LOOP=0`: the loop's first cycle
/// runs before any gateway exists, and the next not within the run.
fn cycle_args() -> Vec<&'static str> {
    if std::env::var("BENCH_LOOP").is_ok_and(|v| v == "0") {
        vec!["--cycle-seconds", "86400"]
    } else {
        Vec::new()
    }
}

/// `BENCH_AGENT_ENV` (`K=V,K=V`) as pairs.
fn agent_env() -> Vec<(String, String)> {
    std::env::var("BENCH_AGENT_ENV")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

async fn control_plane(controller_manager: bool, unrelated_n: usize) -> (ControlPlane, Client) {
    eprintln!("starting a control plane (controller-manager: {controller_manager})…");
    let cp = ControlPlane::start(Options { controller_manager })
        .await
        .expect("control plane");
    let client = cp.client().await.expect("client");
    act::apply_crds(&client, &autopilot::crd::crds())
        .await
        .expect("crds");
    unrelated(&client, unrelated_n).await;
    (cp, client)
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` also builds and runs benches; only
    // `cargo bench` (which passes --bench) should start a control plane.
    if !std::env::args().any(|a| a == "--bench") {
        println!("reconcile bench: skipped (run it with `cargo bench --bench reconcile`)");
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sizes = env_list("BENCH_N", "100,1000");
    let unrelated_n = env_list("BENCH_UNRELATED", "10000")
        .first()
        .copied()
        .unwrap_or(0);
    // Each side of each size on a control plane of its own, started afresh
    // with the same unrelated objects: on a shared one, whichever side ran
    // second worked on the first one's objects too (at 5,000, 30,000 more
    // in etcd and in the API server's watch cache), which made the
    // controller, always second, look slower the larger N.
    header("reconciled");
    for &n in &sizes {
        eprintln!("N = {n}: floor…");
        let f = {
            let (_cp, client) = control_plane(false, unrelated_n).await;
            floor(&client, n, 3, false).await
        };
        eprintln!("N = {n}: controller…");
        let c = {
            let (cp, client) = control_plane(false, unrelated_n).await;
            controller(&cp, &client, n, 3, false).await
        };
        row(n, &c, &f);
    }
    if std::env::var("BENCH_READY").is_ok_and(|v| v == "1") {
        header("Ready (1 replica each)");
        for &n in &sizes {
            eprintln!("N = {n}, Ready: floor…");
            let f = {
                let (_cp, client) = control_plane(true, unrelated_n).await;
                floor(&client, n, 1, true).await
            };
            eprintln!("N = {n}, Ready: controller…");
            let c = {
                let (cp, client) = control_plane(true, unrelated_n).await;
                controller(&cp, &client, n, 1, true).await
            };
            row(n, &c, &f);
        }
    }
}
