//! `autopilot run` as a process, end to end, against a real kube-apiserver
//! and a real Prometheus scraping a test exporter:
//!
//! - the observe → detect → decide → act loop: a latency spike the exporter
//!   serves becomes a finding, the default autoscale runbook (loaded from a
//!   ConfigMap) decides to scale, and the gateway is patched and journaled;
//! - hot reload: a runbook that does not compile is rejected with a Warning
//!   Event naming the line, counted on /metrics, and the agent keeps running;
//!   the fixed version is picked up without a restart;
//! - leader election: of two replicas only the Lease holder acts, and a
//!   standby takes over when the leader is killed.

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use autopilot::{
    act::journal::Journal,
    crd::PaymentGateway,
    store::SqlJournal,
    testenv::{
        ControlPlane, Options,
        prometheus::{self, Exporter, Prometheus},
    },
};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::ConfigMap};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);

fn cp() -> &'static ControlPlane {
    support::control_plane(Options::default())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A running `autopilot run`; killed (SIGKILL) when dropped.
struct Agent {
    child: Option<Child>,
    port: u16,
}

impl Agent {
    fn start(ns: &str, port: u16, extra: &[&str]) -> Agent {
        let mut args: Vec<String> = [
            "run",
            "--namespace",
            ns,
            "--agent-namespace",
            ns,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cycle-seconds",
            "1",
            "--controllers",
            "false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_autopilot"))
            .args(&args)
            .env("KUBECONFIG", cp().kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("AGENT_TEST_LOG").unwrap_or_else(|_| "autopilot=info,warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("start autopilot run");
        Agent {
            child: Some(child),
            port,
        }
    }

    async fn metrics(&self) -> Result<String, String> {
        support::agent_metrics(self.port).await
    }

    /// The value of one sample line of /metrics (`name{labels}` as printed).
    async fn metric(&self, series: &str) -> Result<f64, String> {
        support::agent_metric(self.port, series).await
    }

    async fn wait_metric(&self, what: &str, series: &str, want: impl Fn(f64) -> bool) -> f64 {
        support::wait_for(what, LONG, || async {
            let v = self.metric(series).await?;
            if want(v) {
                Ok(v)
            } else {
                Err(format!("{series} = {v}"))
            }
        })
        .await
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait").is_none())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn create_gateway(client: &Client, ns: &str, name: &str, replicas: i64) {
    let gw: PaymentGateway = serde_json::from_value(json!({
        "apiVersion": "payments.io/v1", "kind": "PaymentGateway",
        "metadata": {"name": name},
        "spec": {"version": "1.0.0", "replicas": replicas}
    }))
    .expect("gateway");
    Api::<PaymentGateway>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &gw)
        .await
        .expect("create gateway");
}

async fn rules_configmap(client: &Client, ns: &str, runbooks: &[(&str, &str)]) {
    rules_configmap_by(client, ns, runbooks, None).await;
}

/// The rules ConfigMap as `editor` writes it: with the changed-by
/// annotation the chart's admission policy requires (here set by the test,
/// as that policy would check it), or without it.
async fn rules_configmap_by(
    client: &Client,
    ns: &str,
    runbooks: &[(&str, &str)],
    editor: Option<&str>,
) {
    let data: serde_json::Map<String, serde_json::Value> = runbooks
        .iter()
        .map(|(k, v)| (format!("{k}.rhai"), json!(v)))
        .collect();
    let annotations: serde_json::Map<String, serde_json::Value> = editor
        .map(|e| (autopilot::crd::CHANGED_BY_ANNOTATION.to_string(), json!(e)))
        .into_iter()
        .collect();
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "autopilot-rules", "namespace": ns, "annotations": annotations},
        "data": data,
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            "autopilot-rules",
            &PatchParams::apply("autopilot-test").force(),
            &Patch::Apply(&cm),
        )
        .await
        .expect("apply the rules ConfigMap");
}

/// Event notes on an object, by reason.
async fn event_notes(client: &Client, ns: &str, name: &str, reason: &str) -> Vec<String> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .filter_map(|e| e.note)
        .collect()
}

async fn journal_rows(path: &Path) -> Vec<autopilot::act::journal::JournalEntry> {
    let j = SqlJournal::connect(&path.to_string_lossy())
        .await
        .expect("open journal");
    let rows = j.list(1000, false).await.expect("list journal");
    j.close().await;
    rows
}

async fn wait_rows(what: &str, db: &Path, at_least: usize) {
    support::wait_for(what, LONG, || async {
        let n = journal_rows(db).await.len();
        if n >= at_least {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        }
    })
    .await;
}

#[tokio::test]
async fn a_latency_spike_becomes_a_scale_action_through_a_hot_reloaded_runbook() {
    let (client, ns) = support::client_and_namespace(cp(), "loop").await;
    create_gateway(&client, &ns, "gw", 2).await;

    let exporter = Exporter::start().expect("exporter");
    let line = |v: &str| {
        format!(
            "# TYPE test_gateway_latency_p99_seconds gauge\ntest_gateway_latency_p99_seconds{{namespace=\"{ns}\",gateway=\"gw\"}} {v}\n"
        )
    };
    exporter.set(line("0.12"));
    let prom = Prometheus::start(&prometheus::Options {
        targets: vec![exporter.addr().to_string()],
        backfill: None,
    })
    .expect("prometheus");

    // The default runbook, first with a syntax error appended.
    let runbook = std::fs::read_to_string(repo("rules/autoscale-gateway.rhai")).expect("runbook");
    let broken_line = runbook.lines().count() + 2;
    let broken = format!("{runbook}\nfn broken( {{\n");
    rules_configmap(&client, &ns, &[("autoscale-gateway", &broken)]).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("journal.db");
    let port = free_port();
    let mut agent = Agent::start(
        &ns,
        port,
        &[
            "--mode",
            "auto",
            "--leader-election",
            "false",
            "--prometheus-url",
            prom.url(),
            "--models",
            &repo("tests/fixtures/agent/models").to_string_lossy(),
            "--rules-configmap",
            "autopilot-rules",
            "--database-url",
            &db.to_string_lossy(),
            "--warmup-history-seconds",
            "0",
        ],
    );

    // Rejected with file and line, counted, and the agent keeps cycling.
    let notes = support::wait_for("a RunbookRejected Event", LONG, || async {
        let n = event_notes(&client, &ns, "autopilot-rules", "RunbookRejected").await;
        if n.is_empty() {
            Err("no Event yet".to_string())
        } else {
            Ok(n)
        }
    })
    .await;
    assert!(
        notes[0].contains(&format!("autoscale-gateway:{broken_line}:")),
        "the Event names the runbook and line {broken_line}: {notes:?}"
    );
    assert!(notes[0].contains("it is not running"), "{notes:?}");
    agent
        .wait_metric(
            "the rejection on /metrics",
            "autopilot_runbook_rejected{runbook=\"autoscale-gateway\"}",
            |v| v == 1.0,
        )
        .await;
    agent
        .wait_metric(
            "the compile error counted",
            "autopilot_runbook_errors_total{kind=\"compile\",runbook=\"autoscale-gateway\"}",
            |v| v == 1.0,
        )
        .await;
    assert_eq!(
        agent.metric("autopilot_runbooks_loaded").await,
        Ok(0.0),
        "nothing runs"
    );
    // No guard policy yet: the loop fails closed, it acts on nothing and
    // says why; once the policy exists, cycles complete.
    agent
        .wait_metric(
            "the missing policy counted",
            "autopilot_read_errors_total{kind=\"missing_policy\",what=\"policy\"}",
            |v| v >= 1.0,
        )
        .await;
    assert_eq!(
        agent
            .metric("autopilot_cycles_total{result=\"ok\"}")
            .await
            .unwrap_or(0.0),
        0.0,
        "no cycle acts without a policy"
    );
    support::install_default_policy(&client, &ns).await;
    agent
        .wait_metric(
            "cycles to continue",
            "autopilot_cycles_total{result=\"ok\"}",
            |v| v >= 3.0,
        )
        .await;
    assert!(agent.alive(), "a bad runbook does not stop the agent");

    // The fixed runbook is picked up without a restart.
    rules_configmap(&client, &ns, &[("autoscale-gateway", &runbook)]).await;
    agent
        .wait_metric("the fixed runbook", "autopilot_runbooks_loaded", |v| {
            v == 1.0
        })
        .await;
    assert_eq!(
        agent
            .metric("autopilot_runbook_rejected{runbook=\"autoscale-gateway\"}")
            .await,
        Ok(0.0)
    );
    // Quiet so far: steady latency, no findings, no actions. The spike
    // comes only once the detector is warm on steady samples.
    support::wait_for("the detector to warm up", LONG, || async {
        let read = agent.metric("autopilot_signals{state=\"read\"}").await?;
        let warming = agent
            .metric("autopilot_signals{state=\"warming_up\"}")
            .await?;
        if read >= 1.0 && warming == 0.0 {
            Ok(())
        } else {
            Err(format!("read {read}, warming up {warming}"))
        }
    })
    .await;
    let cycles = agent
        .metric("autopilot_cycles_total{result=\"ok\"}")
        .await
        .expect("cycles");
    agent
        .wait_metric(
            "the detector to see steady samples",
            "autopilot_cycles_total{result=\"ok\"}",
            |v| v >= cycles + 3.0,
        )
        .await;
    assert!(journal_rows(&db).await.is_empty(), "no action while steady");

    // The spike: found, decided, applied, journaled.
    exporter.set(line("2.5"));
    let gateways = Api::<PaymentGateway>::namespaced(client.clone(), &ns);
    support::wait_for("the gateway to be scaled to 3", LONG, || async {
        let gw = gateways.get("gw").await.map_err(|e| e.to_string())?;
        match gw.spec.replicas {
            3 => Ok(()),
            other => Err(format!("replicas {other}")),
        }
    })
    .await;
    // The executor records the outcome after the API server answers, so
    // the patch can be visible a moment before the journal says so.
    support::wait_for("the journal to record the outcome", LONG, || async {
        let rows = journal_rows(&db).await;
        match rows.iter().all(|r| r.outcome.is_some()) && !rows.is_empty() {
            true => Ok(()),
            false => Err(format!("{} rows, some without an outcome", rows.len())),
        }
    })
    .await;
    let rows = journal_rows(&db).await;
    let applied: Vec<_> = rows
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("applied"))
        .collect();
    assert_eq!(applied.len(), 1, "one applied action: {rows:#?}");
    let row = applied[0];
    assert_eq!(row.entry.runbook, "autoscale-gateway");
    assert_eq!(row.entry.trigger, "finding");
    assert_eq!(row.entry.mode, "auto");
    assert_eq!(row.entry.target, format!("PaymentGateway/{ns}/gw"));
    assert!(
        row.entry.evidence.to_string().contains("latency_p99"),
        "evidence names the finding: {}",
        row.entry.evidence
    );
    assert!(
        agent
            .metric("autopilot_findings_total{detector=\"ewma\",kind=\"PaymentGateway\"}")
            .await
            .is_ok_and(|v| v >= 1.0)
    );
    agent
        .wait_metric(
            "the applied action counted",
            "autopilot_act_actions_total{action=\"scale_replicas\",outcome=\"applied\"}",
            |v| v == 1.0,
        )
        .await;

    // Prometheus goes away: cycles are blind and nothing more is done.
    drop(prom);
    agent
        .wait_metric(
            "a blind cycle",
            "autopilot_cycles_total{result=\"blind\"}",
            |v| v >= 2.0,
        )
        .await;
    assert_eq!(agent.metric("autopilot_prometheus_up").await, Ok(0.0));
    assert!(agent.alive());
    let after: Vec<_> = journal_rows(&db)
        .await
        .into_iter()
        .filter(|r| r.outcome.as_deref() == Some("applied"))
        .collect();
    assert_eq!(after.len(), 1, "no action on missing data");
}

const EVERY_SECOND: &str = r#"
fn runbook() { #{ trigger: #{ cron: #{ schedule: "* * * * * *", kind: "PaymentGateway" } } } }
fn decide(ctx) { [scale(ctx.component, 5).reason("leader election test")] }
"#;

async fn lease_holder(client: &Client, ns: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt("autopilot-leader")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn only_the_lease_holder_acts_and_a_standby_takes_over() {
    let (client, ns) = support::client_and_namespace(cp(), "leader").await;
    support::install_default_policy(&client, &ns).await;
    create_gateway(&client, &ns, "gw", 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(rules.join("every-second.rhai"), EVERY_SECOND).expect("runbook");
    let db_a = dir.path().join("a.db");
    let db_b = dir.path().join("b.db");
    let args = |identity: &'static str, db: &Path| -> Vec<String> {
        [
            "--identity",
            identity,
            "--lease-seconds",
            "4",
            "--rules",
            &rules.to_string_lossy(),
            "--models",
            &repo("tests/fixtures/agent/models").to_string_lossy(),
            "--database-url",
            &db.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a_args = args("agent-a", &db_a);
    let mut a = Agent::start(
        &ns,
        free_port(),
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    a.wait_metric("a to lead", "autopilot_leader", |v| v == 1.0)
        .await;
    assert_eq!(lease_holder(&client, &ns).await.as_deref(), Some("agent-a"));

    let b_args = args("agent-b", &db_b);
    let b = Agent::start(
        &ns,
        free_port(),
        &b_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    b.wait_metric("b to stand by", "autopilot_leader", |v| v == 0.0)
        .await;
    // A decides every second (the same refusal, journaled once and counted
    // each time); B, on standby, journals nothing.
    wait_rows("a to journal its decision", &db_a, 1).await;
    a.wait_metric(
        "a to keep deciding",
        "autopilot_act_actions_total{action=\"scale_replicas\",outcome=\"refused\"}",
        |v| v >= 3.0,
    )
    .await;
    assert_eq!(b.metric("autopilot_leader").await, Ok(0.0));
    assert!(
        journal_rows(&db_b).await.is_empty(),
        "the standby must not act"
    );
    assert_eq!(
        b.metric("autopilot_cycles_total{result=\"ok\"}").await,
        Err("autopilot_cycles_total{result=\"ok\"} not in /metrics".into()),
        "the standby runs no cycle"
    );

    // The leader crashes (SIGKILL: no release); B takes over when the Lease expires.
    a.kill();
    let frozen = journal_rows(&db_a).await.len();
    b.wait_metric("b to take over", "autopilot_leader", |v| v == 1.0)
        .await;
    assert_eq!(lease_holder(&client, &ns).await.as_deref(), Some("agent-b"));
    wait_rows("b to act", &db_b, 1).await;
    assert_eq!(journal_rows(&db_a).await.len(), frozen);
    let rows = journal_rows(&db_b).await;
    assert!(
        rows.iter()
            .all(|r| r.entry.mode == "dry-run" && r.entry.runbook == "every-second"),
        "{rows:#?}"
    );
    // Dry-run: the gateway is untouched.
    let gw = Api::<PaymentGateway>::namespaced(client.clone(), &ns)
        .get("gw")
        .await
        .expect("gateway");
    assert_eq!(gw.spec.replicas, 2);
}

/// Whether the agent has journaled any `scale_replicas` decision (any
/// outcome).
async fn has_scaled(agent: &Agent) -> bool {
    agent
        .metrics()
        .await
        .is_ok_and(|m| m.contains("autopilot_act_actions_total{action=\"scale_replicas\""))
}

async fn holder_of(client: &Client, ns: &str, lease: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(lease)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// Two shards on one PostgreSQL journal, each under its own Lease: only
/// the shard that owns the namespace decides on it; when shard 0's leader
/// dies, its standby takes shard 0 within the Lease time, and shard 1's
/// leader is not disturbed.
#[tokio::test]
async fn a_shards_lease_lost_is_taken_by_its_standby_within_the_lease_time() {
    use autopilot::{scope::Shard, testenv::postgres::Postgres};
    if let Err(e) = Postgres::binaries() {
        eprintln!("SKIPPED the shard Lease test: {e} (scripts/install-deps installs postgresql)");
        return;
    }
    let pg = Postgres::start().expect("PostgreSQL");
    let (client, ns) = support::client_and_namespace(cp(), "shards").await;
    support::install_default_policy(&client, &ns).await;
    create_gateway(&client, &ns, "gw", 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(rules.join("every-second.rhai"), EVERY_SECOND).expect("runbook");
    let db = pg.url("postgres");
    const LEASE_SECONDS: u64 = 4;
    let args = |identity: &str, shard: &str| -> Vec<String> {
        [
            "--identity",
            identity,
            "--shard",
            shard,
            "--lease-seconds",
            &LEASE_SECONDS.to_string(),
            "--rules",
            &rules.to_string_lossy(),
            "--models",
            &repo("tests/fixtures/agent/models").to_string_lossy(),
            "--database-url",
            &db,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let start = |identity: &str, shard: &str| {
        let a = args(identity, shard);
        Agent::start(
            &ns,
            free_port(),
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let mut a0 = start("agent-a", "0/2");
    a0.wait_metric("a to lead shard 0", "autopilot_leader", |v| v == 1.0)
        .await;
    let c1 = start("agent-c", "1/2");
    c1.wait_metric("c to lead shard 1", "autopilot_leader", |v| v == 1.0)
        .await;
    let b0 = start("agent-b", "0/2");
    b0.wait_metric("b to stand by for shard 0", "autopilot_leader", |v| {
        v == 0.0
    })
    .await;
    let lease = |i: u32| format!("autopilot-leader-shard-{i}");
    assert_eq!(
        holder_of(&client, &ns, &lease(0)).await.as_deref(),
        Some("agent-a")
    );
    assert_eq!(
        holder_of(&client, &ns, &lease(1)).await.as_deref(),
        Some("agent-c")
    );
    assert_eq!(lease_holder(&client, &ns).await, None, "no unsharded Lease");

    // Only the owner of the namespace decides on its gateway.
    let owner = Shard::owner(&ns, 2);
    let (owning, other) = if owner == 0 { (&a0, &c1) } else { (&c1, &a0) };
    support::wait_for("the owning shard to decide", LONG, || async {
        if has_scaled(owning).await {
            Ok(())
        } else {
            Err("no scale_replicas decision yet".to_string())
        }
    })
    .await;
    assert!(
        !has_scaled(other).await,
        "shard {} decided on {ns}, which shard {owner} owns",
        1 - owner
    );

    // Shard 0's leader crashes (SIGKILL: no release); its standby takes
    // the shard when the Lease expires.
    a0.kill();
    let killed = std::time::Instant::now();
    b0.wait_metric("b to take shard 0", "autopilot_leader", |v| v == 1.0)
        .await;
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(2 * LEASE_SECONDS + 2),
        "shard 0 was taken over {took:?} after its leader died (Lease {LEASE_SECONDS}s)"
    );
    assert_eq!(
        holder_of(&client, &ns, &lease(0)).await.as_deref(),
        Some("agent-b")
    );
    assert_eq!(
        holder_of(&client, &ns, &lease(1)).await.as_deref(),
        Some("agent-c")
    );
    assert_eq!(
        c1.metric("autopilot_leader").await,
        Ok(1.0),
        "shard 1 undisturbed"
    );
    if owner == 0 {
        support::wait_for("the new leader of shard 0 to decide", LONG, || async {
            if has_scaled(&b0).await {
                Ok(())
            } else {
                Err("no scale_replicas decision yet".to_string())
            }
        })
        .await;
    }
}

/// A shard refuses to start on a SQLite journal: the global guards would
/// hold per shard only.
#[tokio::test]
async fn a_shard_on_sqlite_refuses_to_start() {
    let (_client, ns) = support::client_and_namespace(cp(), "shard-sqlite").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("j.db");
    let mut agent = Agent::start(
        &ns,
        free_port(),
        &[
            "--shard",
            "1/2",
            "--database-url",
            &db.to_string_lossy(),
            "--models",
            &repo("tests/fixtures/agent/models").to_string_lossy(),
        ],
    );
    let status = support::wait_for("the shard on SQLite to exit", LONG, || {
        let status = agent.child.as_mut().expect("child").try_wait();
        async move {
            match status {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err("still running".to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    assert!(!status.success(), "{status}");
}

/// The chart's RBAC grants what the agent does with it: list every kind a
/// model scores, whatever the default runbooks' actions need, and the Lease.
#[test]
fn the_charts_rbac_covers_the_models_the_runbook_actions_and_the_lease() {
    let chart = support::chart::ChartRbac::load();
    let has = |g: &str, r: &str, v: &str| chart.cluster_grants(g, r, v);
    let mut missing = Vec::new();
    // The loop watches (observe::cache) every kind a model scores and every
    // kind a default runbook triggers on.
    let mut watched: Vec<(String, String, String)> = Vec::new();
    for spec in autopilot::observe::load_model_specs(&repo("models")).expect("models") {
        watched.push((spec.group, spec.plural, spec.file));
    }
    let mut sources = Vec::new();
    for entry in std::fs::read_dir(repo("rules")).expect("rules") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rhai") {
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .to_string();
            sources.push((name, std::fs::read_to_string(&path).expect("runbook")));
        }
    }
    let mut set = autopilot::decide::RunbookSet::new(Default::default());
    assert!(set.load(&sources).is_empty(), "default runbooks compile");
    for rb in set.runbooks() {
        use autopilot::decide::Trigger;
        let kind = match &rb.meta.trigger {
            Trigger::Findings(t) => Some(t.kind.clone()),
            Trigger::Cron { kind, .. } => kind.clone(),
            Trigger::Condition { kind, .. } => Some(kind.clone()),
        };
        if let Some(info) = kind.and_then(|k| autopilot::act::action::kind_info(&k)) {
            watched.push((info.group, info.plural, format!("runbook {}", rb.name)));
        }
    }
    for (group, plural, why) in watched {
        for verb in ["list", "watch"] {
            if !has(&group, &plural, verb) {
                missing.push(format!("{verb} {group}/{plural} ({why})"));
            }
        }
    }
    let mut actions = 0;
    for entry in std::fs::read_dir(repo("rules")).expect("rules") {
        let path = entry.expect("entry").path();
        if !path.to_string_lossy().ends_with(".cases.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("cases");
        let cases = autopilot::decide::cases::parse_cases(&path.to_string_lossy(), &text)
            .expect("cases parse");
        for case in cases {
            let autopilot::decide::cases::Expected::Actions(list) = case.expect else {
                continue;
            };
            for action in list {
                actions += 1;
                for rule in autopilot::act::action::rbac(&action) {
                    for verb in &rule.verbs {
                        if !has(&rule.group, &rule.resource, verb) {
                            missing.push(format!(
                                "{verb} {}/{} for {}",
                                rule.group,
                                rule.resource,
                                action.name()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        actions >= 9,
        "the cases expect actions of every runbook ({actions})"
    );
    for verb in ["get", "create", "patch", "update"] {
        if !chart.role_grants("coordination.k8s.io", "leases", verb) {
            missing.push(format!("{verb} leases (leader election)"));
        }
    }
    assert!(missing.is_empty(), "the chart's RBAC lacks: {missing:#?}");
}

/// A runbook scaling the gateway to `replicas` every second.
fn scale_every_second(replicas: i64) -> String {
    EVERY_SECOND.replace(
        "scale(ctx.component, 5)",
        &format!("scale(ctx.component, {replicas})"),
    )
}

/// The version (SHA-256) the agent records for a runbook source.
fn version_of(source: &str) -> String {
    let mut set = autopilot::decide::RunbookSet::new(Default::default());
    assert!(set.load(&[("r".into(), source.into())]).is_empty());
    set.get("r").expect("loaded").hash.clone()
}

/// The rows of one runbook version, once there is one with an outcome.
/// The finished actions of one runbook version, waiting for at least one;
/// `except` leaves out a row the test wrote itself, so that a seeded row
/// cannot satisfy the wait while the agent's own is still in flight (its
/// patch visible on the object, its outcome not yet journaled).
async fn rows_of_version(
    db: &Path,
    version: &str,
    except: Option<i64>,
) -> Vec<autopilot::act::journal::JournalEntry> {
    support::wait_for(&format!("an action of version {version}"), LONG, || async {
        let rows: Vec<_> = journal_rows(db)
            .await
            .into_iter()
            .filter(|r| {
                r.entry.runbook_hash == version && r.outcome.is_some() && Some(r.id) != except
            })
            .collect();
        if rows.is_empty() {
            Err("none yet".to_string())
        } else {
            Ok(rows)
        }
    })
    .await
}

/// Issue #11: whoever edits the rules ConfigMap holds the agent's write
/// authority in auto mode, so every action names the editor of the runbook
/// version behind it (the annotation the admission policy vouches for), and
/// with `newRunbookApprovals` a new version only recommends until people
/// approved and applied enough of its actions.
#[tokio::test]
async fn actions_name_the_editor_of_their_runbook_and_a_new_version_only_recommends() {
    let (client, ns) = support::client_and_namespace(cp(), "editor").await;
    support::install_policy(
        &client,
        &ns,
        json!({
            "newRunbookApprovals": 1,
            "cooldownSeconds": 0, "runbookPerHour": 10000, "globalPerHour": 10000,
            "maxRelativeChange": 100.0,
        }),
    )
    .await;
    create_gateway(&client, &ns, "gw", 2).await;
    let (v1, v2, v3) = (
        scale_every_second(5),
        scale_every_second(4),
        scale_every_second(6),
    );
    rules_configmap_by(
        &client,
        &ns,
        &[("every-second", &v1)],
        Some("alice@example.com"),
    )
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("journal.db");
    let agent = Agent::start(
        &ns,
        free_port(),
        &[
            "--mode",
            "auto",
            "--leader-election",
            "false",
            "--models",
            &repo("tests/fixtures/agent/models").to_string_lossy(),
            "--rules-configmap",
            "autopilot-rules",
            "--database-url",
            &db.to_string_lossy(),
            "--warmup-history-seconds",
            "0",
        ],
    );
    // The agent migrates its journal before its first cycle; reading it
    // before then would race the migration.
    agent
        .wait_metric(
            "a first cycle",
            "autopilot_cycles_total{result=\"ok\"}",
            |v| v >= 1.0,
        )
        .await;
    let gateways = Api::<PaymentGateway>::namespaced(client.clone(), &ns);

    // Alice's version: named on its actions, and new, so it only recommends.
    let rows = rows_of_version(&db, &version_of(&v1), None).await;
    for r in &rows {
        assert_eq!(
            r.entry.runbook_editor.as_deref(),
            Some("alice@example.com"),
            "{r:#?}"
        );
        assert_eq!(r.entry.mode, "recommend", "{r:#?}");
        assert!(
            r.entry.verdict_detail.contains("0 of 1 approved actions"),
            "{r:#?}"
        );
    }
    assert!(
        rows.iter()
            .any(|r| r.outcome.as_deref() == Some("recommended")),
        "{rows:#?}"
    );
    assert_eq!(
        gateways.get("gw").await.expect("gw").spec.replicas,
        2,
        "nothing applied"
    );

    // Bob's version, of which a person already approved an action that was
    // applied (history written as the executor would): trusted, it acts.
    let j = SqlJournal::connect(&db.to_string_lossy())
        .await
        .expect("journal");
    let approved = autopilot::act::journal::NewEntry {
        runbook_hash: version_of(&v2),
        ..rows[0].entry.clone()
    };
    let approved = autopilot::act::journal::NewEntry {
        uid: autopilot::act::journal::new_uid(),
        mode: "recommend".into(),
        verdict_detail: String::new(),
        runbook_editor: Some("bob@example.com".into()),
        ..approved
    };
    let id = j.record_intent(&approved).await.expect("seed");
    assert!(
        j.record_approval(id, "approved by carol@example.com")
            .await
            .expect("approve")
    );
    j.record_outcome(id, "applied", "seeded", approved.at)
        .await
        .expect("outcome");
    j.close().await;
    rules_configmap_by(
        &client,
        &ns,
        &[("every-second", &v2)],
        Some("bob@example.com"),
    )
    .await;
    support::wait_for("bob's version to scale the gateway to 4", LONG, || async {
        match gateways
            .get("gw")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .replicas
        {
            4 => Ok(()),
            other => Err(format!("replicas {other}")),
        }
    })
    .await;
    let rows = rows_of_version(&db, &version_of(&v2), Some(id)).await;
    for r in &rows {
        assert_eq!(
            r.entry.runbook_editor.as_deref(),
            Some("bob@example.com"),
            "{r:#?}"
        );
        assert_eq!(r.entry.mode, "auto", "{r:#?}");
    }
    assert!(
        rows.iter().any(|r| r.outcome.as_deref() == Some("applied")),
        "{rows:#?}"
    );

    // A change without the annotation (admission off): an unknown editor,
    // and a new version again, so it only recommends.
    rules_configmap_by(&client, &ns, &[("every-second", &v3)], None).await;
    let rows = rows_of_version(&db, &version_of(&v3), None).await;
    for r in &rows {
        assert_eq!(r.entry.runbook_editor, None, "{r:#?}");
        assert_eq!(r.entry.mode, "recommend", "{r:#?}");
    }
    assert_eq!(gateways.get("gw").await.expect("gw").spec.replicas, 4);
}

/// The spans an OTLP/HTTP collector received, decoded.
type Spans = std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>;

/// A minimal OTLP/HTTP traces receiver on loopback: decodes each protobuf
/// export request and keeps its spans.
async fn otlp_collector() -> (std::net::SocketAddr, Spans) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let spans: Spans = Default::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut kept = kept.lock().expect("spans");
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        kept.extend(ss.spans);
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind collector");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, spans)
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

/// Issue #15: with `--otlp-endpoint` the stages of every cycle reach an
/// OTLP/HTTP collector as spans, with the component and the action on the
/// act span; without it nothing is exported (off by default).
#[tokio::test]
async fn the_cycle_stages_are_exported_over_otlp() {
    let (client, ns) = support::client_and_namespace(cp(), "otlp").await;
    support::install_default_policy(&client, &ns).await;
    create_gateway(&client, &ns, "gw", 2).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(rules.join("every-second.rhai"), EVERY_SECOND).expect("runbook");
    let (addr, spans) = otlp_collector().await;
    let db = dir.path().join("j.db");
    let _agent = Agent::start(
        &ns,
        free_port(),
        &[
            "--leader-election",
            "false",
            "--rules",
            &rules.to_string_lossy(),
            "--models",
            &repo("tests/fixtures/agent/models").to_string_lossy(),
            "--database-url",
            &db.to_string_lossy(),
            "--otlp-endpoint",
            &format!("http://{addr}"),
        ],
    );
    let target = format!("PaymentGateway/{ns}/gw");
    support::wait_for("the stage spans at the collector", LONG, || async {
        let spans = spans.lock().expect("spans").clone();
        let names: std::collections::BTreeSet<_> = spans.iter().map(|s| s.name.clone()).collect();
        let runbook = spans.iter().any(|s| {
            s.name == "runbook" && attribute(s, "runbook").as_deref() == Some("every-second")
        });
        let act = spans.iter().any(|s| {
            s.name == "act"
                && attribute(s, "component").as_deref() == Some(target.as_str())
                && attribute(s, "action").as_deref() == Some("scale_replicas")
        });
        let stages = ["decide", "guard", "verify"]
            .iter()
            .all(|n| names.contains(*n));
        if runbook && act && stages {
            Ok(())
        } else {
            Err(format!(
                "names {names:?}; runbook span {runbook}, act span {act}"
            ))
        }
    })
    .await;
}
