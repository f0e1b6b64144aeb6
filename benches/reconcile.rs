//! Reconciler throughput on a real kube-apiserver: create N PaymentGateways
//! and time until every one has its owned objects applied and its status
//! written by `autopilot run` (the release binary, as its own process, so its
//! peak RSS is its own). In the same run, time a plain server-side apply of
//! exactly the same owned objects from one client with the same concurrency:
//! the floor. Prints both and the ratio.
//!
//!   cargo bench --features testenv --bench reconcile     # N = 100 and 1000
//!   BENCH_N=100 cargo bench --features testenv --bench reconcile

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use autopilot::{
    act,
    crd::{PaymentGateway, PaymentGatewaySpec},
    reconcile::{Facts, objects::Identity, payment_gateway},
    testenv::{ControlPlane, Options},
};
use futures::{StreamExt, stream};
use k8s_openapi::{api::core::v1::Namespace, apimachinery::pkg::apis::meta::v1::OwnerReference};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::json;

const CONCURRENCY: usize = 8;

fn spec() -> PaymentGatewaySpec {
    serde_json::from_value(json!({
        "version": "2.4.1",
        "replicas": 3,
        "config": {"database": {"clusterName": "payments-db"}, "features": {"rateLimitPerSecond": 500}},
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

async fn floor(client: &Client, n: usize) -> Duration {
    let ns = format!("floor-{n}");
    namespace(client, &ns).await;
    let spec = spec();
    let v = payment_gateway::validate(&spec).expect("valid");
    let facts = Facts::default();
    let owned: Vec<_> = (0..n)
        .map(|i| {
            let id = Identity {
                component: payment_gateway::COMPONENT,
                name: format!("gw-{i}"),
                namespace: ns.clone(),
                owner: OwnerReference {
                    api_version: "payments.io/v1".into(),
                    kind: "PaymentGateway".into(),
                    name: format!("gw-{i}"),
                    uid: format!("00000000-0000-0000-0000-{i:012}"),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                },
            };
            (
                id.name.clone(),
                id.owner.uid.clone(),
                payment_gateway::plan(&id, &v, &facts, &spec.version).expect("plan"),
            )
        })
        .collect();
    let start = Instant::now();
    stream::iter(owned)
        .for_each_concurrent(CONCURRENCY, |(name, uid, objects)| {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                act::apply_owned(&client, &ns, &name, &uid, objects)
                    .await
                    .expect("apply");
            }
        })
        .await;
    start.elapsed()
}

async fn controller(cp: &ControlPlane, client: &Client, n: usize) -> (Duration, u64) {
    let ns = format!("bench-{n}");
    namespace(client, &ns).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args([
            "run",
            "--namespace",
            &ns,
            "--listen",
            "127.0.0.1:0",
            "--concurrency",
            &CONCURRENCY.to_string(),
        ])
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("start autopilot run");
    let api: Api<PaymentGateway> = Api::namespaced(client.clone(), &ns);
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let api = api.clone();
            async move {
                let pgw = PaymentGateway::new(&format!("gw-{i}"), spec());
                api.create(&PostParams::default(), &pgw)
                    .await
                    .expect("create gateway");
            }
        })
        .await;
    let mut last_report = Instant::now();
    loop {
        let list = api.list(&ListParams::default()).await.expect("list");
        let done = list
            .items
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == p.metadata.generation)
            })
            .count();
        if done == n {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {done}/{n} gateways reconciled after {:.0?}",
                start.elapsed()
            );
            last_report = Instant::now();
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "gave up after 15 minutes at {done}/{n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = start.elapsed();
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    (elapsed, rss_kib)
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
    let sizes: Vec<usize> = std::env::var("BENCH_N")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    eprintln!("starting the control plane (etcd + kube-apiserver)…");
    let cp = ControlPlane::start(Options::default())
        .await
        .expect("control plane");
    let client = cp.client().await.expect("client");
    act::apply_crds(&client, &autopilot::crd::crds())
        .await
        .expect("crds");
    println!(
        "| N | controller: create → all reconciled | floor: plain SSA of the same objects | ratio | controller peak RSS |"
    );
    println!("|---|---|---|---|---|");
    for n in sizes {
        eprintln!("N = {n}: floor…");
        let f = floor(&client, n).await;
        eprintln!("N = {n}: controller…");
        let (c, rss) = controller(&cp, &client, n).await;
        println!(
            "| {n} | {:.2} s ({:.0}/s) | {:.2} s ({:.0}/s) | {:.2}× | {:.1} MiB |",
            c.as_secs_f64(),
            n as f64 / c.as_secs_f64(),
            f.as_secs_f64(),
            n as f64 / f.as_secs_f64(),
            c.as_secs_f64() / f.as_secs_f64(),
            rss as f64 / 1024.0
        );
    }
}
