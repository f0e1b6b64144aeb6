//! `autopilot replay` end to end: a gateway saturation backfilled into a
//! real Prometheus with promtool, replayed through the live cycle by the
//! CLI; the autoscale runbook's action must come at the incident's first
//! step (± one step) on the saturated gateway only, and a quiet day must
//! give no action at all. Also prints the replay's speed (simulated hours
//! per wall second) against a replay that reads one step per query, as the
//! live cycle does (BENCHMARKS.md, "Replay").

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

mod support;

use autopilot::{
    crd::PaymentGateway,
    testenv::{
        self,
        prometheus::{Options, Prometheus},
    },
};
use k8s_openapi::api::core::v1::Event;
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

const STEP: i64 = 30;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Deterministic noise in [-1, 1).
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// Two days and two hours at 30 s for two gateways at 40 % of their
/// in-flight limit; `eu` floods (600 in flight for a limit of 100) for 20
/// minutes from `incident`.
fn backfill(start: i64, end: i64, incident: i64, ns: &str) -> String {
    let mut noise = Noise(7);
    let mut out = String::from("# TYPE payments_gateway_inflight_requests gauge\n");
    for gw in ["eu", "us"] {
        let mut t = start;
        while t <= end {
            let flood = gw == "eu" && (incident..incident + 1200).contains(&t);
            let v = if flood {
                600.0
            } else {
                40.0 + 3.0 * noise.next()
            };
            out.push_str(&format!(
                "payments_gateway_inflight_requests{{namespace=\"{ns}\",gateway=\"{gw}\"}} {v} {t}\n"
            ));
            t += STEP;
        }
    }
    out.push_str("# TYPE payments_gateway_max_inflight_requests gauge\n");
    for gw in ["eu", "us"] {
        let mut t = start;
        while t <= end {
            out.push_str(&format!(
                "payments_gateway_max_inflight_requests{{namespace=\"{ns}\",gateway=\"{gw}\"}} 100 {t}\n"
            ));
            t += STEP;
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The two gateways as they are "now": two replicas, no autoscaling.
fn snapshot(dir: &Path) -> PathBuf {
    let path = dir.join("snapshot.yaml");
    let gw = |name: &str| {
        format!(
            "apiVersion: payments.io/v1\nkind: PaymentGateway\nmetadata:\n  name: {name}\n  namespace: payments\nspec:\n  image: gateway:1\n  replicas: 2\n"
        )
    };
    std::fs::write(&path, format!("{}---\n{}", gw("eu"), gw("us"))).expect("write snapshot");
    path
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// Runs `autopilot replay … --output json` and parses its report.
fn replay(url: &str, snapshot: &Path, from: i64, to: i64, extra: &[&str]) -> (Value, f64) {
    let snapshot = snapshot.display().to_string();
    let mut args = vec!["--snapshot", snapshot.as_str()];
    args.extend(extra);
    run_replay(url, from, to, &repo("rules"), &repo("models"), &args)
}

/// Runs `autopilot replay … --output json` with `rules`, `models` and
/// `extra` flags, and parses its report.
fn run_replay(
    url: &str,
    from: i64,
    to: i64,
    rules: &str,
    models: &str,
    extra: &[&str],
) -> (Value, f64) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["replay", "--prometheus-url", url])
        .args(["--from", &from.to_string(), "--to", &to.to_string()])
        .args(["--step", "30s", "--rules", rules, "--models", models])
        .args(["--output", "json"])
        .args(extra)
        .output()
        .expect("run autopilot replay");
    let wall = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "report is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (report, wall)
}

fn actions(report: &Value) -> Vec<&Value> {
    report["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .collect()
}

#[test]
fn a_backfilled_saturation_is_scaled_at_its_start_and_a_quiet_day_is_not() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let end = now() / 3600 * 3600 - 3600;
    let start = end - 2 * 86_400 - 7200;
    let incident = end - 6 * 3600;
    let prom = Prometheus::start(&Options {
        targets: vec![],
        backfill: Some(backfill(start, end, incident, "payments")),
    })
    .expect("prometheus with backfilled history");
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = snapshot(dir.path());

    // A quiet day: no action, on the default models and runbooks.
    let (day_from, day_to) = (end - 2 * 86_400, end - 86_400);
    let (quiet, wall) = replay(prom.url(), &snap, day_from, day_to, &[]);
    assert_eq!(quiet["complete"], true);
    assert_eq!(quiet["cycles"], 2881);
    assert!(
        actions(&quiet).is_empty(),
        "quiet day: {:#?}",
        quiet["actions"]
    );
    let hours = (day_to - day_from) as f64 / 3600.0;

    // The same cycle, reading one step per query as the live loop does, over
    // one hour of the same day: the baseline of the speed figure.
    let (_, live_wall) = replay(
        prom.url(),
        &snap,
        day_from,
        day_from + 3600,
        &["--chunk-steps", "1", "--warmup-history-seconds", "0"],
    );
    println!(
        "replay: {hours:.0} simulated hours in {wall:.2}s = {:.0} simulated hours per wall second \
         (chunked range queries); one query per step: {:.1} simulated hours per wall second; ratio {:.1}x",
        hours / wall,
        1.0 / live_wall,
        (hours / wall) / (1.0 / live_wall)
    );

    // The incident: the autoscale runbook scales eu at the first flooded step.
    let (report, _) = replay(prom.url(), &snap, end - 12 * 3600, end, &[]);
    let acted: Vec<_> = actions(&report)
        .into_iter()
        .filter(|a| a["outcome"] == "applied")
        .collect();
    let first = acted.first().unwrap_or_else(|| {
        panic!(
            "no action; episodes {:#?}, actions {:#?}",
            report["episodes"], report["actions"]
        )
    });
    assert_eq!(first["runbook"], "autoscale-gateway");
    assert_eq!(first["action"], "scale_replicas");
    assert_eq!(first["target"], "PaymentGateway/payments/eu");
    assert_eq!(
        first["patch"]["patch"],
        serde_json::json!({"spec": {"replicas": 3}})
    );
    assert_eq!(first["verification"], "not judged");
    let at = first["at"].as_i64().expect("at");
    assert!(
        (at - incident).abs() <= STEP,
        "acted at {at}, the incident started at {incident}"
    );
    assert!(
        actions(&report)
            .iter()
            .all(|a| a["target"] == "PaymentGateway/payments/eu"),
        "the quiet gateway was acted on: {:#?}",
        report["actions"]
    );
    // The finding persists for over 20 minutes; the runbook fires again
    // while saturation still rises, and the guards refuse those repeats
    // within the default 900 s cooldown of the same target, as they would
    // live, so acted actions are at least that far apart.
    let counts = &report["runbooks"]["autoscale-gateway"];
    let refused = counts["refused"]["cooldown"].as_u64().unwrap_or(0);
    assert!(refused > 0, "no cooldown refusals: {counts}");
    assert_eq!(
        counts["fired"].as_u64(),
        Some(counts["acted"].as_u64().unwrap_or(0) + refused),
        "{counts}"
    );
    let times: Vec<i64> = acted.iter().filter_map(|a| a["at"].as_i64()).collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] >= 900),
        "acted inside the cooldown: {times:?}"
    );
    let episodes = report["episodes"].as_array().expect("episodes");
    assert!(
        episodes
            .iter()
            .any(|e| e["component"] == "PaymentGateway/payments/eu"
                && e["signal"] == "saturation"
                && (e["start"].as_i64().unwrap_or(0) - incident).abs() <= STEP),
        "{episodes:#?}"
    );
    // --compare: without the autoscale runbook, its actions are the
    // difference, and nothing else changes.
    let edited = dir.path().join("rules-edited");
    std::fs::create_dir(&edited).expect("mkdir");
    for entry in std::fs::read_dir(repo("rules")).expect("rules") {
        let path = entry.expect("entry").path();
        if path.file_stem().is_some_and(|n| n != "autoscale-gateway") && path.is_file() {
            std::fs::copy(&path, edited.join(path.file_name().expect("name"))).expect("copy");
        }
    }
    let (compared, _) = replay(
        prom.url(),
        &snap,
        end - 12 * 3600,
        end,
        &["--compare", &repo("rules"), &edited.display().to_string()],
    );
    let changes = compared["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), actions(&report).len(), "{changes:#?}");
    assert!(
        changes
            .iter()
            .all(|c| c["change"] == "removed" && c["runbook"] == "autoscale-gateway"),
        "{changes:#?}"
    );
    assert_eq!(changes[0]["at"], first["at"]);
}

/// Ctrl-C (SIGINT) stops a replay between cycles and prints the partial
/// report.
#[test]
fn an_interrupted_replay_prints_its_partial_report() {
    let end = now() / 3600 * 3600 - 3600;
    let start = end - 86_400;
    let prom = Prometheus::start(&Options {
        targets: vec![],
        backfill: Some(backfill(start, end, end + 3600, "payments")),
    })
    .expect("prometheus with backfilled history");
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = snapshot(dir.path());
    // One query per spec per step: slow enough to be interrupted midway.
    let child = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["replay", "--prometheus-url", prom.url()])
        .args(["--from", &start.to_string(), "--to", &end.to_string()])
        .args(["--rules", &repo("rules"), "--models", &repo("models")])
        .args([
            "--snapshot",
            &snap.display().to_string(),
            "--output",
            "json",
        ])
        .args(["--chunk-steps", "1", "--warmup-history-seconds", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start autopilot replay");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let out = child.wait_with_output().expect("replay output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("partial report as JSON");
    assert_eq!(report["complete"], false);
    let cycles = report["cycles"].as_u64().unwrap_or(0);
    assert!(cycles > 0 && cycles < 2881, "{cycles} cycles");
}

/// With --kubeconfig the targets and the guard policy are read from the
/// cluster as they are now (here a kill switch, which refuses the action),
/// and nothing is written: the gateway keeps its resourceVersion and no
/// Event appears.
#[tokio::test]
async fn the_cluster_is_read_as_it_is_now_and_never_written() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = support::control_plane(testenv::Options::default());
    let (client, ns) = support::client_and_namespace(cp, "replay").await;
    let gateways = Api::<PaymentGateway>::namespaced(client.clone(), &ns);
    let gw: PaymentGateway = serde_json::from_value(json!({
        "apiVersion": "payments.io/v1", "kind": "PaymentGateway",
        "metadata": {"name": "eu"},
        "spec": {"version": "1.0.0", "replicas": 2}
    }))
    .expect("gateway");
    gateways
        .create(&PostParams::default(), &gw)
        .await
        .expect("create gateway");
    support::install_policy(&client, &ns, json!({"killSwitch": true})).await;
    let version = |g: PaymentGateway| g.metadata.resource_version;
    let before = version(gateways.get("eu").await.expect("gateway"));

    let end = now() / 3600 * 3600 - 3600;
    let incident = end - 3600;
    let prom = Prometheus::start(&Options {
        targets: vec![],
        backfill: Some(backfill(end - 4 * 3600, end, incident, &ns)),
    })
    .expect("prometheus with backfilled history");
    // Only the gateway model and its runbook: the test cluster has no CRDs
    // of the other operators.
    let dir = tempfile::tempdir().expect("tempdir");
    for (sub, file) in [
        ("models", "payments-gateway.yaml"),
        ("rules", "autoscale-gateway.rhai"),
    ] {
        std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        std::fs::copy(
            repo(&format!("{sub}/{file}")),
            dir.path().join(sub).join(file),
        )
        .expect("copy");
    }
    let kubeconfig = cp.kubeconfig().display().to_string();
    let url = prom.url().to_string();
    let (rules, models) = (
        dir.path().join("rules").display().to_string(),
        dir.path().join("models").display().to_string(),
    );
    let flags = [
        "--kubeconfig".to_string(),
        kubeconfig,
        "--agent-namespace".into(),
        ns.clone(),
        "--namespace".into(),
        ns.clone(),
    ];
    let (report, _) = tokio::task::spawn_blocking(move || {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        run_replay(&url, end - 2 * 3600, end, &rules, &models, &flags)
    })
    .await
    .expect("replay");

    let all = actions(&report);
    let first = all
        .first()
        .unwrap_or_else(|| panic!("no action: {report:#}"));
    assert_eq!(first["target"], format!("PaymentGateway/{ns}/eu"));
    assert_eq!(first["verdict"], "kill_switch");
    assert_eq!(first["outcome"], "refused");
    assert!((first["at"].as_i64().unwrap_or(0) - incident).abs() <= STEP);
    assert!(all.iter().all(|a| a["outcome"] == "refused"), "{all:#?}");
    assert_eq!(
        version(gateways.get("eu").await.expect("gateway")),
        before,
        "the replay changed the gateway"
    );
    let events = Api::<Event>::namespaced(client, &ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    assert!(events.items.is_empty(), "{:#?}", events.items);
}

/// `autopilot detect ops`, as an SRE runs it: the sandbox's estate played
/// for a short quiet period and each scenario's fault, backfilled into a
/// real Prometheus, the cycle's detection replayed over it. Every fault is
/// found on the signal its runbook acts on within two cycles, the quiet
/// period raises no finding on those signals, and the corpus it writes in
/// NAB's layout is read back by the NAB loader with one window per fault.
#[test]
fn the_operational_corpus_finds_each_fault_on_its_signal_and_nothing_quiet_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus = dir.path().join("corpus");
    let out = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["detect", "ops", "--quiet-hours", "3", "--output", "json"])
        .args(["--write-corpus", &corpus.display().to_string()])
        .output()
        .expect("run autopilot detect ops");
    assert!(
        out.status.success(),
        "detect ops failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let detections = report["detections"].as_array().expect("detections");
    assert_eq!(
        detections.len(),
        autopilot::testenv::sim::Fault::ALL.len(),
        "{report:#}"
    );
    let cycle = report["cycle_seconds"].as_i64().expect("cycle");
    let mut signals = Vec::new();
    for d in detections {
        let after = d["on_signal"].as_i64().unwrap_or_else(|| {
            panic!("{} not found on {}: {report:#}", d["scenario"], d["signal"])
        });
        assert!(
            after <= 4 * cycle,
            "{} found {after}s after it started: {d:#}",
            d["scenario"]
        );
        signals.push(d["signal"].as_str().expect("signal").to_string());
    }
    let quiet = report["quiet_by_signal"].as_object().expect("quiet");
    for (what, n) in quiet {
        assert!(
            !signals
                .iter()
                .any(|s| what.split(' ').nth(1) == Some(s.as_str())),
            "{n} quiet findings on a signal a runbook acts on: {what}"
        );
    }
    assert!(
        report["quiet_series"].as_u64().unwrap_or(0) > 5,
        "{report:#}"
    );
    let files = autopilot::cli::detect::load_nab(&corpus).expect("the corpus reads as NAB");
    let windows: usize = files.iter().map(|f| f.labels.windows()).sum();
    assert_eq!(windows, detections.len(), "one window per fault");
}
