//! The agent's cycle on a large estate (issue #16, "The cycle at 10,000
//! series"): about `BENCH_COMPONENTS` components (default 1,100, which
//! gives ≈ 10,000 series) across every model kind — copies of the
//! exposition estate of `tests/exposition.rs` (31 components, plus the
//! ServiceMonitors of their scrape targets),
//! under the upstream metric names and labels — with their series
//! backfilled into a real Prometheus with promtool (`BENCH_HISTORY_MINUTES`
//! of history, default 30, every 30 s) and then scraped live from a test
//! exporter every second; every component created on a real API server;
//! all default runbooks (`rules/`) and model specs (`models/`) loaded.
//!
//! It runs the agent's own cycle — `agent::cycle::Autopilot`, built from
//! the same parts `autopilot run` builds it from, `start` (the warm-up) and
//! then `cycle` — in dry-run mode, `BENCH_CYCLES` times (default 10), and
//! prints for each cycle its wall time split by stage (from the agent's own
//! stage spans: the Prometheus queries, the rest of observe, detect, the
//! decision inputs, decide, and everything of step 5: guard, act, verify),
//! the process' CPU seconds (utime + stime from /proc/self/stat, what
//! getrusage reports; `unsafe` is forbidden here), and, after all cycles,
//! the peak RSS since the agent was built (VmHWM, reset through
//! /proc/self/clear_refs once the estate is set up) and the detectors'
//! memory per series (RSS growth of a fresh `Estate` fed the same series).
//!
//! The floor, in the same run after each cycle: the same PromQL the cycle
//! sent (one query per model spec, and CloudNativePG's replica lags when
//! the cycle read them) sent by a plain loop over HTTP, the answers read
//! and not parsed: Prometheus answering alone.
//!
//!   cargo bench --features testenv --bench cycle
//!   BENCH_COMPONENTS=300 BENCH_CYCLES=5 cargo bench --features testenv --bench cycle

#[path = "../tests/support/exposition.rs"]
mod exposition;
#[path = "../tests/support/exposition_estate.rs"]
mod exposition_estate;
#[path = "../tests/support/exposition_payments.rs"]
mod exposition_payments;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use autopilot::{
    act::{
        self,
        executor::{self, Approvals, Executor, Observer},
    },
    agent::{
        RulesSource,
        cycle::{Autopilot, Parts, Settings, Summary},
        metrics::Metrics,
    },
    decide::{Limits, Mode, RunbookSet},
    detect::{CycleInput, Estate, SeriesSamples},
    observe::{self, Prometheus},
    scope::Scope,
    store::SqlJournal,
    testenv::{
        ControlPlane,
        prometheus::{self as promenv, Exporter},
    },
};
use futures::{StreamExt, stream};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, PostParams},
    runtime::events::{Recorder, Reporter},
};
use serde::Deserialize as _;
use serde_json::{Value, json};
use tracing::{Subscriber, span};
use tracing_subscriber::{Layer, layer::Context, prelude::*, registry::LookupSpan};

/// The agent's namespace (its guard policy).
const AGENT_NS: &str = "autopilot";
/// The cycle interval the CPU share is stated at.
const INTERVAL: Duration = Duration::from_secs(15);
/// History step of the backfill.
const STEP: i64 = 30;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---------------------------------------------------------------------
// Stage times, from the agent's own spans.

/// Wall time and count of closed spans, by (name, parent name).
type Times = BTreeMap<(&'static str, &'static str), (Duration, u32)>;

/// A layer that adds up, per span name and parent, the wall time from a
/// span's creation to its close.
#[derive(Clone, Default)]
struct Stages(Arc<Mutex<Times>>);

struct Opened(Instant);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Stages {
    fn on_new_span(&self, _: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(elapsed) = span.extensions().get::<Opened>().map(|o| o.0.elapsed()) else {
            return;
        };
        let parent = span.parent().map_or("", |p| p.name());
        let mut times = self.0.lock().expect("stage times");
        let e = times.entry((span.name(), parent)).or_default();
        e.0 += elapsed;
        e.1 += 1;
    }
}

impl Stages {
    fn take(&self) -> Times {
        std::mem::take(&mut *self.0.lock().expect("stage times"))
    }
}

fn ms(times: &Times, name: &str, parent: Option<&str>) -> f64 {
    times
        .iter()
        .filter(|((n, p), _)| *n == name && parent.is_none_or(|want| want == *p))
        .map(|(_, (d, _))| d.as_secs_f64() * 1000.0)
        .sum()
}

fn count(times: &Times, name: &str, parent: Option<&str>) -> u32 {
    times
        .iter()
        .filter(|((n, p), _)| *n == name && parent.is_none_or(|want| want == *p))
        .map(|(_, (_, c))| *c)
        .sum()
}

// ---------------------------------------------------------------------
// The process, as getrusage would report it.

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // After the command name in parentheses: state is field 3, utime 14
    // and stime 15 (1-based).
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A `/proc/self/status` field in KiB (VmRSS, VmHWM).
fn status_kib(field: &str) -> u64 {
    proc_status_kib("self", field)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------
// The estate on the API server.

/// Every CustomResourceDefinition of the `.yaml` files in `dir`.
fn crds_in(dir: &Path) -> Vec<CustomResourceDefinition> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixture CRDs")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read CRDs");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).expect("yaml");
            if v["kind"] == "CustomResourceDefinition" {
                out.push(serde_json::from_value(v).expect("a CRD"));
            }
        }
    }
    out
}

/// The spec of a payments.io example in deploy/examples.
fn example_spec(file: &str) -> Value {
    let text = std::fs::read_to_string(repo("deploy/examples").join(file)).expect("example");
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).expect("yaml");
        if v.get("spec").is_some() {
            return v["spec"].clone();
        }
    }
    panic!("no spec in deploy/examples/{file}")
}

/// A minimal valid spec per kind (its CRD's required fields).
fn spec_of(kind: &str, name: &str, examples: &BTreeMap<&str, Value>) -> Value {
    if let Some(spec) = examples.get(kind) {
        return spec.clone();
    }
    match kind {
        "Deployment" => {
            let labels = json!({"app": name});
            json!({"replicas": 0, "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}})
        }
        "HorizontalPodAutoscaler" => json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1, "maxReplicas": 4,
        }),
        "Certificate" => json!({"secretName": format!("{name}-tls"), "issuerRef": {"name": "ca"}}),
        "Cluster" => json!({"instances": 2}),
        "KafkaNodePool" => json!({"replicas": 3, "roles": ["broker"]}),
        "ServiceMonitor" => json!({"selector": {}}),
        _ => json!({}),
    }
}

/// Creates every component of the exposition; returns how many of each
/// kind exist.
async fn create_estate(
    client: &Client,
    components: &[exposition::Component],
    resources: &BTreeMap<String, ApiResource>,
) -> BTreeMap<String, usize> {
    let namespaces: BTreeSet<&str> = components
        .iter()
        .map(|c| c.namespace.as_str())
        .chain([AGENT_NS])
        .collect();
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let n: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns");
        match api.create(&PostParams::default(), &n).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {} // kube-system
            Err(e) => panic!("creating namespace {ns}: {e}"),
        }
    }
    let examples: BTreeMap<&str, Value> = [
        ("PaymentGateway", "payment-gateway.yaml"),
        ("BatchProcessor", "batch-processor.yaml"),
        ("ClearingAdapter", "clearing-adapter.yaml"),
        ("SagaOrchestrator", "saga-orchestrator.yaml"),
    ]
    .into_iter()
    .map(|(k, f)| (k, example_spec(f)))
    .collect();
    let created: Mutex<BTreeMap<String, usize>> = Default::default();
    let failed: Mutex<BTreeSet<String>> = Default::default();
    stream::iter(components)
        .for_each_concurrent(32, |c| {
            let (created, failed, examples) = (&created, &failed, &examples);
            async move {
                let Some(ar) = resources.get(&c.kind) else {
                    return;
                };
                let obj: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": ar.api_version, "kind": ar.kind,
                    "metadata": {"name": c.name, "namespace": c.namespace},
                    "spec": spec_of(&c.kind, &c.name, examples),
                }))
                .expect("object");
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &c.namespace, ar);
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => {
                        *created
                            .lock()
                            .expect("count")
                            .entry(c.kind.clone())
                            .or_default() += 1
                    }
                    Err(e) => {
                        if failed.lock().expect("failed").insert(c.kind.clone()) {
                            eprintln!("creating a {} failed (not counted): {e}", c.kind);
                        }
                    }
                }
            }
        })
        .await;
    created.into_inner().expect("count")
}

// ---------------------------------------------------------------------
// The floor: the same PromQL, sent plainly.

/// Sends `queries` one after the other at `at`, reading each answer's
/// bytes; returns the wall time and the bytes read.
async fn floor(
    http: &reqwest::Client,
    url: &str,
    queries: &[String],
    at: i64,
) -> (Duration, usize) {
    let started = Instant::now();
    let mut bytes = 0;
    for q in queries {
        let mut form = reqwest::Url::parse("http://form/").expect("url");
        form.query_pairs_mut()
            .append_pair("query", q)
            .append_pair("time", &at.to_string());
        let body = form.query().unwrap_or_default().to_string();
        let answer = http
            .post(format!("{url}/api/v1/query"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("floor query")
            .error_for_status()
            .expect("floor query status")
            .bytes()
            .await
            .expect("floor answer");
        bytes += answer.len();
    }
    (started.elapsed(), bytes)
}

// ---------------------------------------------------------------------

/// Keeps the exporter's text moving (counters grow) while `live` is set.
fn keep_exporting(
    exposition: Arc<Mutex<exposition::Exposition>>,
    exporter: Arc<Exporter>,
    live: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if live.load(Ordering::Relaxed) {
                let text = exposition
                    .lock()
                    .expect("exposition")
                    .scrape_text(unix_now(), &["job", "instance"]);
                exporter.set(text);
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    })
}

struct Row {
    summary: Summary,
    wall: Duration,
    cpu: f64,
    times: Times,
    floor: Duration,
    floor_queries: usize,
    floor_bytes: usize,
}

fn main() {
    // `cargo test --all-targets` also builds and runs benches; only
    // `cargo bench` (which passes --bench) should start the estate.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "cycle bench: skipped (run it with `cargo bench --features testenv --bench cycle`)"
        );
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stages = Stages::default();
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                        tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")
                    }),
                ),
        )
        .with(
            stages.clone().with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("autopilot", tracing::Level::INFO),
            ),
        )
        .init();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(stages));
}

async fn run(stages: Stages) {
    let components = env_usize("BENCH_COMPONENTS", 1100).max(1);
    let cycles = env_usize("BENCH_CYCLES", 10).max(1);
    let history_minutes = env_usize("BENCH_HISTORY_MINUTES", 30).max(5) as i64;
    let copies = components.div_ceil(exposition::ESTATE.len());
    exposition::scale(copies);

    // The series: history up to a minute ago, live samples from then on.
    let end = unix_now() / STEP * STEP - 60;
    let start = end - history_minutes * 60;
    let exporter = Arc::new(Exporter::start().expect("test exporter"));
    let mut ex = exposition::build_exposition(exposition::Scrape::Renamed, start, start, STEP);
    // Stored as Prometheus stores what it scrapes from the exporter: the
    // exposition's own job and instance renamed, the scrape's added.
    ex.relabel(
        &["job", "instance"],
        &[("job", "test"), ("instance", exporter.addr())],
    );
    let series_total = ex.series();
    eprintln!(
        "estate: {} components ({copies} copies of {}), {series_total} series; backfilling {history_minutes} min at {STEP} s…",
        ex.components.len(),
        exposition::ESTATE.len()
    );
    let began = Instant::now();
    let history = ex.history(start, end, STEP);
    let history_mib = history.len() as f64 / (1024.0 * 1024.0);
    exporter.set(ex.scrape_text(unix_now(), &["job", "instance"]));
    let prom = promenv::Prometheus::start(&promenv::Options {
        targets: vec![exporter.addr().to_string()],
        backfill: Some(history),
    })
    .expect("prometheus with the backfilled estate");
    eprintln!(
        "backfilled {history_mib:.0} MiB of OpenMetrics and started Prometheus in {:.0?}",
        began.elapsed()
    );
    let components_total = ex.components.len();
    let ex = Arc::new(Mutex::new(ex));
    let (live, stop) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let exporting = keep_exporting(ex.clone(), exporter.clone(), live.clone(), stop.clone());

    // The API server with every component.
    let began = Instant::now();
    let cp = ControlPlane::start(autopilot::testenv::Options::default())
        .await
        .expect("control plane");
    let client = cp.client().await.expect("client");
    let mut crds = autopilot::crd::crds();
    crds.extend(crds_in(&repo("tests/fixtures/crds")));
    act::apply_crds(&client, &crds).await.expect("CRDs");
    let specs = observe::load_model_specs(&repo("models")).expect("model specs");
    let resources: BTreeMap<String, ApiResource> = specs
        .iter()
        .map(|s| (s.kind.clone(), observe::spec_resource(s)))
        .collect();
    let components_list = ex.lock().expect("exposition").components.clone();
    let created = create_estate(&client, &components_list, &resources).await;
    let objects: usize = created.values().sum();
    let policy: autopilot::crd::AutopilotPolicy = serde_json::from_value(json!({
        "apiVersion": "payments.io/v1", "kind": "AutopilotPolicy",
        "metadata": {"name": act::guard::POLICY_NAME}, "spec": {},
    }))
    .expect("policy");
    Api::namespaced(client.clone(), AGENT_NS)
        .create(&PostParams::default(), &policy)
        .await
        .expect("the guard policy");
    eprintln!(
        "{objects} objects on the API server in {:.0?}: {created:?}",
        began.elapsed()
    );

    // The agent, built as `autopilot run` builds it (agent::run_with).
    let work = tempfile::tempdir().expect("work dir");
    let rss_harness = status_kib("VmRSS");
    let peak_reset = reset_peak_rss();
    let cpu0 = cpu_seconds();
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).expect("metrics");
    let act_metrics = executor::Metrics::register(&registry).expect("act metrics");
    let journal = SqlJournal::connect(&format!(
        "sqlite:{}",
        work.path().join("journal.db").display()
    ))
    .await
    .expect("journal");
    let prometheus = Prometheus::new(prom.url(), Duration::from_secs(30)).expect("client");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "autopilot".into(),
            instance: Some("bench".into()),
        },
    );
    let mut agent = Autopilot::new(Parts {
        client: client.clone(),
        prometheus: Some(prometheus.clone()),
        estate: Estate::new(specs.clone()),
        runbooks: RunbookSet::new(Limits::default()),
        executor: Executor::new(client.clone(), journal, act_metrics)
            .with_mode(Mode::DryRun)
            .with_scope(Scope::all())
            .with_observer(Observer::Prometheus(prometheus.clone()))
            .with_approvals(Approvals::default()),
        metrics: metrics.clone(),
        recorder,
        settings: Settings {
            namespace: AGENT_NS.into(),
            scope: Scope::all(),
            mode: Mode::DryRun,
            interval: INTERVAL,
            warmup_history: Duration::from_secs(history_minutes as u64 * 60),
        },
        rules: RulesSource::Dir(repo("rules")),
        rules_rx: None,
    });
    let began = Instant::now();
    agent.start().await;
    let warm = began.elapsed();
    let warm_cpu = cpu_seconds() - cpu0;
    let _ = stages.take();
    eprintln!("warmed up in {warm:.1?} ({warm_cpu:.2} CPU s)");

    // The cycles, each followed by its floor.
    let http = reqwest::Client::new();
    let mut rows = Vec::new();
    let mut surging = 0;
    for i in 0..cycles {
        // A traffic surge on one gateway copy in four (copies 1, 5, 9, …):
        // their in-flight requests climb from 40 % of the limit by 10
        // points a cycle, up to 99 %, so that the saturation forecasts
        // fire and the autoscale runbook proposes, and step 5 (guards,
        // journal) has work.
        surging = ex.lock().expect("exposition").set_gauge(
            "payments_gateway_inflight_requests",
            |labels| {
                let gw = labels.iter().find(|(k, _)| k == "gateway")?;
                let copy: usize = gw.1.rsplit('-').next()?.parse().ok()?;
                (copy % 4 == 1).then(|| (40.0 + 10.0 * (i as f64 + 1.0)).min(99.0))
            },
        );
        live.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        live.store(false, Ordering::Relaxed);
        let text = ex
            .lock()
            .expect("exposition")
            .scrape_text(unix_now(), &["job", "instance"]);
        exporter.set(text);
        tokio::time::sleep(Duration::from_millis(1200)).await; // one scrape
        let now = unix_now();
        let _ = stages.take();
        let cpu = cpu_seconds();
        let began = Instant::now();
        let summary = agent.cycle(now).await;
        let wall = began.elapsed();
        let cpu = cpu_seconds() - cpu;
        let times = stages.take();
        // The same PromQL: one query per spec, the replica lags if read.
        let mut queries: Vec<String> = specs.iter().map(observe::build_query).collect();
        if count(&times, "query", Some("fetch_decision_inputs")) > 0 {
            queries.push("max by (namespace, pod) (cnpg_pg_replication_lag)".into());
        }
        let (floor_wall, floor_bytes) = floor(&http, prom.url(), &queries, now).await;
        eprintln!(
            "cycle {i}: {:.0} ms (floor {:.0} ms), {:.2} CPU s, {} series, {} findings, {} decisions, {} proposals",
            wall.as_secs_f64() * 1000.0,
            floor_wall.as_secs_f64() * 1000.0,
            cpu,
            summary.series,
            summary.findings,
            summary.decisions,
            summary.proposals
        );
        rows.push(Row {
            summary,
            wall,
            cpu,
            times,
            floor: floor_wall,
            floor_queries: queries.len(),
            floor_bytes,
        });
    }
    let rss_peak = status_kib("VmHWM");
    let rss_now = status_kib("VmRSS");
    report(
        &rows,
        &Setup {
            components: components_total,
            surging,
            objects,
            series_total,
            history_minutes,
            warm,
            warm_cpu,
            rss_harness,
            rss_peak,
            rss_now,
            peak_reset,
        },
    );
    detector_memory(&prometheus, &specs).await;
    drop(agent);
    live.store(true, Ordering::Relaxed);
    let process_seconds = env_usize("BENCH_PROCESS_SECONDS", 120) as u64;
    if process_seconds > 0 {
        own_process(
            &cp,
            prom.url(),
            work.path(),
            history_minutes,
            process_seconds,
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = exporting.join();
    drop(prom);
    drop(cp);
}

struct Setup {
    components: usize,
    surging: usize,
    objects: usize,
    series_total: usize,
    history_minutes: i64,
    warm: Duration,
    warm_cpu: f64,
    rss_harness: u64,
    rss_peak: u64,
    rss_now: u64,
    peak_reset: bool,
}

fn report(rows: &[Row], c: &Setup) {
    println!();
    println!(
        "Estate: {} components ({} objects on the API server), {} series in Prometheus ({} min of history backfilled, then scraped every second); load average {}",
        c.components,
        c.objects,
        c.series_total,
        c.history_minutes,
        load()
    );
    println!(
        "Surge: {} PaymentGateways' in-flight requests climb from 40 % of their limit by 10 points a cycle (up to 99 %)",
        c.surging
    );
    println!(
        "Warm-up (`start`: {} min of history, one range query per spec): {:.1} s wall, {:.2} CPU s",
        c.history_minutes,
        c.warm.as_secs_f64(),
        c.warm_cpu
    );
    println!();
    println!(
        "| cycle | series read | findings | decisions | proposals (journaled) | wall | Prometheus queries | observe, rest | detect | decision inputs | decide | step 5 (guard, act, verify) | other | CPU s | floor (same PromQL, plain) | cycle − floor | cycle / floor |"
    );
    println!(
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (i, r) in rows.iter().enumerate() {
        let t = &r.times;
        let wall = r.wall.as_secs_f64() * 1000.0;
        let queries = ms(t, "query", None);
        let observe = ms(t, "observe", None) - ms(t, "query", Some("observe"));
        let detect = ms(t, "detect", None);
        let inputs =
            ms(t, "fetch_decision_inputs", None) - ms(t, "query", Some("fetch_decision_inputs"));
        let decide = ms(t, "decide", None);
        let act = ms(t, "fetch_guard_policy", None)
            + ms(t, "pin_new_runbook_versions", None)
            + ms(t, "send_proposals", None)
            + ms(t, "apply_approvals", None)
            + ms(t, "verify", None);
        let other = wall - queries - observe - detect - inputs - decide - act;
        let floor = r.floor.as_secs_f64() * 1000.0;
        println!(
            "| {i} | {} | {} | {} | {} ({}) | {wall:.0} ms | {queries:.0} ms | {observe:.0} ms | {detect:.0} ms | {inputs:.0} ms | {decide:.0} ms | {act:.0} ms | {other:.0} ms | {:.2} | {floor:.0} ms ({} queries, {:.1} MiB) | {:.0} ms | {:.2}× |",
            r.summary.series,
            r.summary.findings,
            r.summary.decisions,
            r.summary.proposals,
            r.summary.executed.len(),
            r.cpu,
            r.floor_queries,
            r.floor_bytes as f64 / (1024.0 * 1024.0),
            wall - floor,
            wall / floor
        );
    }
    let n = rows.len() as f64;
    // The first cycle starts the watches (one LIST per kind); the steady
    // state is the rest.
    let steady: Vec<&Row> = rows.iter().skip(1).collect();
    let steady = if steady.is_empty() {
        rows.iter().collect()
    } else {
        steady
    };
    let m = steady.len() as f64;
    let wall = steady.iter().map(|r| r.wall.as_secs_f64()).sum::<f64>() / m;
    let floor = steady.iter().map(|r| r.floor.as_secs_f64()).sum::<f64>() / m;
    let cpu = steady.iter().map(|r| r.cpu).sum::<f64>() / m;
    println!();
    println!(
        "Steady state (cycles 1–{}): cycle {:.0} ms, floor {:.0} ms, cycle − floor {:.0} ms, cycle / floor {:.2}×; {:.2} CPU s per cycle = {:.1} % of one core at a {} s cycle; peak RSS {:.1} MiB{} (harness alone before the agent was built: {:.1} MiB; RSS after the cycles {:.1} MiB); {n} cycles",
        rows.len().saturating_sub(1),
        wall * 1000.0,
        floor * 1000.0,
        (wall - floor) * 1000.0,
        wall / floor,
        cpu,
        100.0 * cpu / INTERVAL.as_secs_f64(),
        INTERVAL.as_secs(),
        mib(c.rss_peak),
        if c.peak_reset {
            " (whole process, peak since the agent was built)"
        } else {
            " (whole process, peak since start: /proc/self/clear_refs unavailable)"
        },
        mib(c.rss_harness),
        mib(c.rss_now),
    );
    // Every span of the last cycles, for the record.
    let mut all: Times = BTreeMap::new();
    for r in &steady {
        for (k, (d, c)) in &r.times {
            let e = all.entry(*k).or_default();
            e.0 += *d;
            e.1 += *c;
        }
    }
    println!();
    println!("| span (parent) | ms per cycle, steady | spans per cycle | ms in cycle 0 |");
    println!("|---|---:|---:|---:|");
    let first = &rows[0].times;
    let names: BTreeSet<_> = all.keys().chain(first.keys()).collect();
    for key in names {
        let (d, c) = all.get(key).copied().unwrap_or_default();
        let d0 = first
            .get(key)
            .map_or(0.0, |(d, _)| d.as_secs_f64() * 1000.0);
        println!(
            "| {} ({}) | {:.1} | {:.1} | {d0:.1} |",
            key.0,
            key.1,
            d.as_secs_f64() * 1000.0 / m,
            c as f64 / m
        );
    }
}

/// The detectors' memory per series: RSS growth of a fresh `Estate` fed
/// the estate's series for 60 cycles (past every detector's warm-up).
async fn detector_memory(
    prometheus: &Prometheus,
    specs: &[autopilot::detect::spec::ValidatedSpec],
) {
    let now = unix_now();
    let mut series: Vec<SeriesSamples> = Vec::new();
    for spec in specs {
        if let Ok(s) = prometheus.query_spec(spec, now).await {
            series.extend(s);
        }
    }
    let components: Vec<_> = series.iter().map(|s| s.component.clone()).collect();
    let before = status_kib("VmRSS");
    let mut estate = Estate::new(specs.to_vec());
    for step in 0..60i64 {
        let at = now + step * 15;
        for (i, s) in series.iter_mut().enumerate() {
            let v = s.samples.last().map_or(1.0, |x| x.1);
            let wobble = 1.0 + 0.01 * (((i as i64 + step) % 7) as f64 - 3.0);
            s.samples = vec![(at, v * wobble)];
        }
        estate.score_cycle(
            CycleInput::Observed {
                components: Some(&components),
                series: &series,
            },
            at,
        );
    }
    let after = status_kib("VmRSS");
    let (states, mixtures) = estate.held();
    println!();
    println!(
        "Detector memory: {states} series states and {mixtures} mixtures after 60 cycles: RSS +{:.1} MiB, {:.0} bytes per series (RSS growth of a fresh Estate; approximate, malloc's arenas included)",
        mib(after.saturating_sub(before)),
        (after.saturating_sub(before) * 1024) as f64 / states.max(1) as f64
    );
}

/// A `/proc/<pid>/stat` reading: user + system CPU seconds.
fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11) + field(12)) / clock_ticks()
}

fn status_kib_of(pid: u32, field: &str) -> u64 {
    proc_status_kib(&pid.to_string(), field)
}

/// A `/proc/<process>/status` field in KiB; 0 when the process is gone.
fn proc_status_kib(process: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The whole agent as its own process, as deployed: `autopilot run` in
/// dry-run mode at a 15 s cycle on the same estate (without the payments
/// controllers, whose cost is `benches/reconcile.rs`'s), for `seconds`
/// after its first 30 s (start-up, warm-up, first cycle): its CPU share of
/// one core and its peak RSS (VmHWM), nothing of the bench's own.
async fn own_process(
    cp: &ControlPlane,
    url: &str,
    work: &Path,
    history_minutes: i64,
    seconds: u64,
) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["run", "--mode", "dry-run", "--agent-namespace", AGENT_NS])
        .args(["--prometheus-url", url])
        .arg("--database-url")
        .arg(format!("sqlite:{}", work.join("process.db").display()))
        .arg("--rules")
        .arg(repo("rules"))
        .arg("--models")
        .arg(repo("models"))
        .args(["--cycle-seconds", &INTERVAL.as_secs().to_string()])
        .args([
            "--warmup-history-seconds",
            &(history_minutes * 60).to_string(),
        ])
        .args(["--leader-election", "false", "--controllers", "false"])
        .args(["--listen", "127.0.0.1:0", "--review-listen", "off"])
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start autopilot run");
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (cpu0, t0) = (cpu_seconds_of(pid), Instant::now());
    let rss_start = status_kib_of(pid, "VmRSS");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = cpu_seconds_of(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let (peak, rss) = (status_kib_of(pid, "VmHWM"), status_kib_of(pid, "VmRSS"));
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let _ = child.wait();
    println!();
    match exited {
        Some(status) => println!("`autopilot run` exited early ({status}); no figures"),
        None => println!(
            "`autopilot run --mode dry-run --cycle-seconds {}` as its own process, {wall:.0} s after its first 30 s (≈ {:.0} cycles): {cpu:.2} CPU s = {:.1} % of one core; peak RSS {:.1} MiB (RSS after 30 s {:.1} MiB, at the end {:.1} MiB); load average {}",
            INTERVAL.as_secs(),
            wall / INTERVAL.as_secs_f64(),
            100.0 * cpu / wall,
            mib(peak),
            mib(rss_start),
            mib(rss),
            load()
        ),
    }
}
