//! Fault injection on real parts: the real `autopilot run` binary against a
//! real kube-apiserver (with its audit log on), a real Prometheus and a
//! real PostgreSQL, each fault judged by what the API server recorded and
//! what the journal says afterwards.
//!
//! The claim under test: whatever kills or cuts off the agent, every intent
//! it journals is applied exactly once or not at all — none lost, none
//! duplicated — counted against the API server's own record of writes: a
//! merge patch carries `metadata.annotations["autopilot.payments.io/action-id"]`
//! in its body, and the audit log keeps request bodies, so the successful
//! PATCHes of each action are counted.
//!
//! - `kill_9_at_random_points_…`: SIGKILL after a seeded random delay, then
//!   the agent started again on the same SQLite file (what a pod
//!   rescheduled on its PVC does), `AUTOPILOT_FAULT_RUNS` times (default
//!   20; the long run in RELIABILITY.md uses 200), then one clean run;
//! - `prometheus_killed_…`: no action on missing data, the outage reported,
//!   findings acted on again once Prometheus is back;
//! - `api_server_restarted_…`: kube-apiserver stopped mid-cycle and started
//!   again on the same port and etcd;
//! - `postgres_restarted_…`: the PostgreSQL journal restarted (fast, then
//!   as a crash) while the agent acts.
//!
//! The tests share one control plane and take turns (one of them restarts
//! its API server). Seeds are printed; `AUTOPILOT_FAULT_SEED` replays the
//! kill delays.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use autopilot::{
    act::journal::{Journal, JournalEntry, outcome},
    crd::PaymentGateway,
    store::SqlJournal,
    testenv::{
        ControlPlane, Options,
        postgres::{Postgres, Shutdown},
        prometheus::{self, Exporter, Prometheus},
    },
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use support::audit;

const LONG: Duration = Duration::from_secs(90);

fn cp() -> &'static ControlPlane {
    support::control_plane(Options::default())
}

/// One fault test at a time: they share the control plane, one restarts
/// its API server, and on two cores the timing of each depends on it.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

// ---------------------------------------------------------------- seeds

/// SplitMix64: a few lines, no dependency, the same sequence for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// `AUTOPILOT_FAULT_SEED`, else one from the clock; printed either way.
fn seed(test: &str) -> Rng {
    let seed = std::env::var("AUTOPILOT_FAULT_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("{test}: seed {seed} (replay with AUTOPILOT_FAULT_SEED={seed})");
    Rng(seed)
}

/// A work folder for a test's journal, runbooks and agent log, removed when
/// dropped — unless `AUTOPILOT_FAULT_KEEP` is set: then kept, its path printed.
struct Workdir {
    path: PathBuf,
    _remove: Option<tempfile::TempDir>,
}

impl Workdir {
    fn new(test: &str) -> Workdir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("autopilot-faults-{test}-"))
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_path_buf();
        if std::env::var_os("AUTOPILOT_FAULT_KEEP").is_some() {
            println!("{test}: work folder {}", path.display());
            let _ = dir.keep();
            return Workdir {
                path,
                _remove: None,
            };
        }
        Workdir {
            path,
            _remove: Some(dir),
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// When kept, a copy of the API server's audit log beside the journal.
    fn keep_audit_log(&self) {
        if self._remove.is_none() {
            let _ = std::fs::copy(cp().audit_log(), self.path.join("audit.log"));
        }
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------- the agent

/// A cron runbook that flips every PaymentGateway between 3 and 4 replicas
/// every second: an absolute scale, a new intent on each gateway each cycle.
const FLIP: &str = r#"
fn runbook() { #{ trigger: #{ cron: #{ schedule: "* * * * * *", kind: "PaymentGateway" } } } }
fn decide(ctx) {
    let replicas = require(ctx.resource.spec?.replicas, "spec.replicas");
    [scale(ctx.component, if replicas == 3 { 4 } else { 3 }).reason("fault injection: flip")]
}
"#;

/// The same trigger, deciding nothing: the clean run that only resolves.
const QUIET: &str = r#"
fn runbook() { #{ trigger: #{ cron: #{ schedule: "* * * * * *", kind: "PaymentGateway" } } } }
fn decide(ctx) { [] }
"#;

/// The guard policy of the flip tests: no cooldown, budgets far above what
/// a test sends (a scale-down is disruptive), so every intent is sent and
/// the guards never hide a fault.
async fn install_open_policy(client: &Client, ns: &str) {
    support::install_policy(
        client,
        ns,
        json!({
            "cooldownSeconds": 0,
            "runbookPerHour": 10000,
            "globalPerHour": 10000,
            "disruptivePerNamespacePerHour": 1000,
            "disruptivePerHour": 1000,
        }),
    )
    .await;
}

/// A running `autopilot run` in auto mode, its output appended to a log
/// file; SIGKILLed when dropped.
struct Agent {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    http: reqwest::Client,
}

/// How an agent of a test is started.
struct AgentSpec {
    ns: String,
    rules: PathBuf,
    database_url: String,
    prometheus_url: Option<String>,
    log: PathBuf,
    /// Elect a leader through the Lease `autopilot-leader` (3 s) under this
    /// identity; `None`: lead at once, alone.
    leader: Option<String>,
}

/// The Lease of the leader-election tests, in seconds (the smallest the
/// agent takes is 2).
const LEASE_SECONDS: u64 = 3;

impl AgentSpec {
    fn start(&self) -> Agent {
        let port = free_port();
        let mut args: Vec<String> = [
            "run",
            "--namespace",
            &self.ns,
            "--agent-namespace",
            &self.ns,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cycle-seconds",
            "1",
            "--controllers",
            "false",
            "--mode",
            "auto",
            "--leader-election",
            if self.leader.is_some() {
                "true"
            } else {
                "false"
            },
            "--rules",
            &self.rules.to_string_lossy(),
            "--models",
            &repo("tests/fixtures/agent/models").to_string_lossy(),
            "--database-url",
            &self.database_url,
            "--warmup-history-seconds",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(url) = &self.prometheus_url {
            args.extend(["--prometheus-url".to_string(), url.clone()]);
        }
        if let Some(identity) = &self.leader {
            args.extend([
                "--identity".to_string(),
                identity.clone(),
                "--lease-seconds".to_string(),
                LEASE_SECONDS.to_string(),
            ]);
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let err = out.try_clone().expect("agent log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_autopilot"))
            .args(&args)
            .env("KUBECONFIG", cp().kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("AGENT_TEST_LOG").unwrap_or_else(|_| "autopilot=info,warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start autopilot run");
        let _ = rustls::crypto::ring::default_provider().install_default();
        Agent {
            child: Some(child),
            port,
            log: self.log.clone(),
            http: reqwest::Client::new(),
        }
    }
}

impl Agent {
    async fn metrics(&self) -> Result<String, String> {
        self.http
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    }

    /// The sum of the samples of /metrics whose line starts with `prefix`
    /// and contains every one of `with` (0 when there is none).
    async fn sum(&self, prefix: &str, with: &[&str]) -> Result<f64, String> {
        let body = self.metrics().await?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with(prefix) && with.iter().all(|w| l.contains(w)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    async fn cycles(&self, result: &str) -> Result<f64, String> {
        self.sum(
            "autopilot_cycles_total{",
            &[&format!("result=\"{result}\"")],
        )
        .await
    }

    async fn wait_cycles(&self, result: &str, at_least: f64) -> f64 {
        let mut agent_gone = false;
        let v = support::wait_for(&format!("{at_least} {result} cycles"), LONG, || {
            let alive = self.alive();
            agent_gone |= !alive;
            async move {
                if !alive {
                    return Ok(-1.0);
                }
                let v = self.cycles(result).await?;
                if v >= at_least {
                    Ok(v)
                } else {
                    Err(format!("{v}"))
                }
            }
        })
        .await;
        assert!(
            !agent_gone,
            "the agent exited while waiting for {result} cycles:\n{}",
            self.log_tail(40)
        );
        v
    }

    fn alive(&self) -> bool {
        // `try_wait` needs `&mut`; /proc tells without reaping.
        self.child.as_ref().is_some_and(|c| {
            std::fs::read_to_string(format!("/proc/{}/stat", c.id()))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        })
    }

    /// SIGKILL: no handler runs, nothing is flushed, as in an OOM kill or a
    /// node loss.
    fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, as the kubelet stops a pod; SIGKILL after ten seconds.
    async fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|t| t.contains(needle))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill_9();
    }
}

// ---------------------------------------------------------------- fixtures

async fn create_gateways(client: &Client, ns: &str, names: &[String], replicas: i64) {
    for name in names {
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
}

fn gateway_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("gw-{i}")).collect()
}

/// A folder holding one runbook, `name.rhai` (replaced by `set`).
struct Rules {
    dir: PathBuf,
}

impl Rules {
    fn new(parent: &Path, name: &str, source: &str) -> Rules {
        let dir = parent.join("rules");
        std::fs::create_dir_all(&dir).expect("rules dir");
        let rules = Rules { dir };
        rules.set(name, source);
        rules
    }

    /// Replaces every runbook with `name` = `source` (the agent reads the
    /// folder again each cycle).
    fn set(&self, name: &str, source: &str) {
        for e in std::fs::read_dir(&self.dir).expect("rules dir").flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        std::fs::write(self.dir.join(format!("{name}.rhai")), source).expect("runbook");
    }
}

/// The newest row of a journal, read through a connection of its own while
/// the agent writes.
struct NewestRow(SqlJournal);

impl NewestRow {
    async fn open(url: &str) -> NewestRow {
        NewestRow(SqlJournal::connect(url).await.expect("open the journal"))
    }

    /// The newest row id (0 for none); `None` while the journal cannot be
    /// read (PostgreSQL restarting).
    async fn id(&self) -> Option<i64> {
        let rows = self.0.list(1, false).await.ok()?;
        Some(rows.first().map_or(0, |r| r.id))
    }

    /// Waits up to `timeout` for a row newer than `before`, while `agent`
    /// lives; whether one came.
    async fn wait_past(&self, before: i64, agent: &Agent, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && agent.alive() {
            if self.id().await.is_some_and(|id| id > before) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        false
    }

    async fn close(self) {
        self.0.close().await;
    }
}

/// A new database on `pg` for one test's journal, as a URL.
async fn journal_database(pg: &Postgres, test: &str) -> String {
    use sqlx::Connection;
    let db = format!("faults_{test}_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("connect as admin");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    // The test server saves time with synchronous_commit off; the journal's
    // database gets PostgreSQL's default, so that a commit the agent saw
    // survives an immediate shutdown (a crash).
    sqlx::query(&format!("ALTER DATABASE {db} SET synchronous_commit = on"))
        .execute(&mut admin)
        .await
        .expect("synchronous_commit");
    admin.close().await.expect("close");
    pg.url(&db)
}

/// Creates and migrates the journal before the first agent starts: the
/// test reads it while the agent runs, and two processes migrating one new
/// SQLite file at once collide ("duplicate column name").
async fn create_journal(url: &str) {
    SqlJournal::connect(url)
        .await
        .expect("create the journal")
        .close()
        .await;
}

async fn journal_rows(url: &str, ns: &str) -> Vec<JournalEntry> {
    let j = SqlJournal::connect(url).await.expect("open journal");
    let rows = j.list(i64::MAX, false).await.expect("list journal");
    j.close().await;
    rows.into_iter()
        .filter(|r| r.entry.namespace == ns)
        .collect()
}

/// Takes the journal table's EXCLUSIVE lock in an open transaction of a
/// connection of its own: writes wait, reads pass. Returns the connection
/// (the lock lives as long as it) and the start of the statement the agent
/// is then found waiting on, if it waits within three seconds.
async fn hold_journal_writes(url: &str) -> (sqlx::PgConnection, Option<String>) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to the journal");
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE journal IN EXCLUSIVE MODE")
        .execute(&mut conn)
        .await
        .expect("lock the journal");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut waiting = None;
    while waiting.is_none() && Instant::now() < deadline {
        waiting = sqlx::query_scalar::<_, String>(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 40) FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_optional(&mut conn)
        .await
        .expect("pg_stat_activity");
        if waiting.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (conn, waiting)
}

/// The rows of `ns` without an outcome.
async fn open_intents(url: &str, ns: &str) -> Vec<JournalEntry> {
    let j = SqlJournal::connect(url).await.expect("open journal");
    let rows = j.unresolved().await.expect("unresolved");
    j.close().await;
    rows.into_iter()
        .filter(|r| r.entry.namespace == ns)
        .collect()
}

/// An operator undoes `row`'s change by hand: its journaled inverse, as a
/// plain merge patch (no action ID).
async fn revert_by_hand(client: &Client, row: &JournalEntry) {
    let Some(inverse) = &row.entry.inverse else {
        return;
    };
    let name = inverse["name"]
        .as_str()
        .expect("the inverse names its object");
    Api::<PaymentGateway>::namespaced(client.clone(), &row.entry.namespace)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&inverse["patch"]),
        )
        .await
        .expect("revert by hand");
}

async fn unresolved(url: &str, ns: &str) -> usize {
    let j = SqlJournal::connect(url).await.expect("open journal");
    let rows = j.unresolved().await.expect("unresolved");
    j.close().await;
    rows.iter().filter(|r| r.entry.namespace == ns).count()
}

async fn applied(url: &str, ns: &str) -> usize {
    journal_rows(url, ns)
        .await
        .iter()
        .filter(|r| r.outcome.as_deref() == Some(outcome::APPLIED))
        .count()
}

/// Waits until the journal holds `at_least` applied actions in `ns`.
async fn wait_applied(agent: &Agent, url: &str, ns: &str, at_least: usize) -> usize {
    support::wait_for(&format!("{at_least} applied actions"), LONG, || async {
        if !agent.alive() {
            panic!(
                "the agent exited while waiting for actions:\n{}",
                agent.log_tail(40)
            );
        }
        let n = applied(url, ns).await;
        if n >= at_least {
            Ok(n)
        } else {
            Err(format!("{n} applied"))
        }
    })
    .await
}

/// Starts a clean run on the quiet runbook (so the only sends are the
/// resolutions), lets it complete `cycles` cycles, and stops it with
/// SIGTERM. The agent resolves a previous run's intents in its first cycle.
async fn clean_run(spec: &AgentSpec, rules: &Rules, cycles: f64) {
    rules.set("fault", QUIET);
    let mut agent = spec.start();
    agent.wait_cycles("ok", cycles).await;
    agent.terminate().await;
}

// ---------------------------------------------------------------- the check

/// The journal of one namespace held against the API server's audit log.
#[derive(Default)]
struct Reconciled {
    /// Journal rows of the namespace, and those that were to be sent.
    rows: usize,
    intents: usize,
    /// By outcome (`none` while unresolved).
    outcomes: BTreeMap<String, usize>,
    /// Rows finished by a restart's resolution, by how.
    resolved_after_restart: BTreeMap<&'static str, usize>,
    /// Successful PATCHes carrying an action ID in the namespace.
    patches: usize,
    /// Intents that reached the cluster with no journal record of it, or
    /// were never resolved, or are recorded applied with no write.
    lost: Vec<String>,
    /// Action IDs in more than one successful PATCH.
    duplicated: Vec<String>,
    /// Applied rows with no PATCH of their own because the value was
    /// already there ("already in effect").
    already_in_effect: usize,
    /// PATCHes answered 5xx or not at all, and those of them stored anyway.
    ambiguous: usize,
    ambiguous_stored: usize,
}

impl Reconciled {
    fn of(rows: &[JournalEntry], stored: &audit::Stored<'_>) -> Reconciled {
        let by_action = stored.by_action();
        let mut r = Reconciled {
            rows: rows.len(),
            patches: stored.patches.len(),
            ambiguous: stored.ambiguous,
            ambiguous_stored: stored.ambiguous_stored,
            ..Default::default()
        };
        let uids: BTreeSet<&str> = rows.iter().map(|row| row.entry.uid.as_str()).collect();
        for row in rows {
            let uid = &row.entry.uid;
            let sent = by_action.get(uid).map_or(0, Vec::len);
            let out = row.outcome.as_deref();
            let detail = row.outcome_detail.as_deref().unwrap_or_default();
            if row.entry.verdict == "allowed" {
                r.intents += 1;
            }
            *r.outcomes
                .entry(out.unwrap_or("none").to_string())
                .or_default() += 1;
            if detail.contains("after a restart") {
                let how = if detail.starts_with("found applied") {
                    "found applied"
                } else if detail.starts_with("sent after a restart") {
                    "sent"
                } else if detail.contains("not sent late") {
                    "abandoned"
                } else {
                    "other"
                };
                *r.resolved_after_restart.entry(how).or_default() += 1;
            }
            let what = format!(
                "#{} {uid} {} → outcome {} ({detail}), {sent} PATCH(es)",
                row.id,
                row.entry.target,
                out.unwrap_or("none")
            );
            if sent > 1 {
                r.duplicated.push(what);
                continue;
            }
            match out {
                None => r.lost.push(format!("unresolved: {what}")),
                Some(outcome::APPLIED) if sent == 0 && detail.contains("already in effect") => {
                    r.already_in_effect += 1
                }
                Some(outcome::APPLIED) if sent == 0 => {
                    r.lost.push(format!("applied without a write: {what}"))
                }
                Some(outcome::APPLIED) | Some(outcome::UNKNOWN) => {}
                Some(_) if sent > 0 => r.lost.push(format!("written but journaled as not: {what}")),
                Some(_) => {}
            }
        }
        for (uid, ws) in &by_action {
            if !uids.contains(uid.as_str()) {
                r.lost.push(format!(
                    "a PATCH of {}/{} carries {uid}, which no journal row has",
                    ws[0].namespace, ws[0].name
                ));
            }
        }
        r
    }

    /// Every allowed intent applied once or not at all, none lost, none
    /// duplicated.
    fn assert_exactly_once(&self, what: &str) {
        assert!(
            self.lost.is_empty() && self.duplicated.is_empty(),
            "{what}: {} lost, {} duplicated\nlost: {:#?}\nduplicated: {:#?}",
            self.lost.len(),
            self.duplicated.len(),
            self.lost,
            self.duplicated
        );
    }
}

impl fmt::Display for Reconciled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resolved: usize = self.resolved_after_restart.values().sum();
        write!(
            f,
            "journal rows {}, intents {}, outcomes {:?}, resolved after an interruption {} {:?}, stored PATCHes with an action id {} (of them answered 5xx yet stored {}; answered 5xx in all {}), already in effect {}, lost {}, duplicated {}",
            self.rows,
            self.intents,
            self.outcomes,
            resolved,
            self.resolved_after_restart,
            self.patches,
            self.ambiguous_stored,
            self.ambiguous,
            self.already_in_effect,
            self.lost.len(),
            self.duplicated.len()
        )
    }
}

/// Each gateway's resourceVersion now, by name.
async fn current_versions(client: &Client, ns: &str) -> BTreeMap<String, String> {
    Api::<PaymentGateway>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .expect("list gateways")
        .items
        .into_iter()
        .filter_map(|g| Some((g.metadata.name?, g.metadata.resource_version?)))
        .collect()
}

/// The journal of `ns` and the API server's record of its writes, read
/// after the agent has stopped.
async fn reconcile(client: &Client, ns: &str, url: &str) -> (Reconciled, Vec<audit::Write>) {
    let rows = journal_rows(url, ns).await;
    let writes = audit::writes(&cp().audit_log());
    let current = current_versions(client, ns).await;
    let r = Reconciled::of(&rows, &audit::Stored::of(&writes, ns, &current));
    (r, writes)
}

/// Each gateway as the cluster has it now agrees with the audit log: its
/// action-id annotation is that of the last stored PATCH of it, and its
/// replicas are what that PATCH set.
async fn assert_last_write_is_on_the_object(client: &Client, ns: &str, writes: &[audit::Write]) {
    let current = current_versions(client, ns).await;
    let stored = audit::Stored::of(writes, ns, &current);
    let api = Api::<PaymentGateway>::namespaced(client.clone(), ns);
    for name in current.keys() {
        let Some(last) = stored.last_of(name) else {
            continue;
        };
        let gw = api.get(name).await.expect("gateway");
        let on_object = gw
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(audit::ACTION_ID))
            .cloned();
        assert_eq!(
            on_object.as_deref(),
            last.action_id(),
            "{name}: the object's action id is the last stored PATCH's in the audit log"
        );
        let set = last.request_object.as_ref().map(|o| &o["spec"]["replicas"]);
        assert_eq!(
            set.and_then(|v| v.as_i64()),
            Some(i64::from(gw.spec.replicas)),
            "{name}: the replicas are what the last stored PATCH set"
        );
    }
}

// ---------------------------------------------------------------- tests

/// The audit log records our writes with their bodies, and not our reads.
#[tokio::test]
async fn the_audit_log_records_each_patch_with_its_body() {
    let _turn = TURN.lock().await;
    let (client, ns) = support::client_and_namespace(cp(), "audit").await;
    let names = gateway_names(1);
    create_gateways(&client, &ns, &names, 2).await;
    let api = Api::<PaymentGateway>::namespaced(client.clone(), &ns);
    api.patch(
        "gw-0",
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"annotations": {audit::ACTION_ID: "01TESTACTIONID"}},
            "spec": {"replicas": 5}
        })),
    )
    .await
    .expect("patch");
    api.get("gw-0").await.expect("get");
    let writes = audit::writes(&cp().audit_log());
    let ours: Vec<_> = writes.iter().filter(|w| w.namespace == ns).collect();
    assert_eq!(
        ours.iter().map(|w| w.verb.as_str()).collect::<Vec<_>>(),
        ["create", "patch"],
        "the create and the patch, no read: {ours:#?}"
    );
    let patch = ours[1];
    assert_eq!(patch.action_id(), Some("01TESTACTIONID"));
    assert_eq!(patch.resource, "paymentgateways");
    assert_eq!(patch.name, "gw-0");
    assert!(patch.succeeded(), "{patch:?}");
    assert!(!patch.stage_timestamp.is_empty());
    assert_eq!(
        patch
            .request_object
            .as_ref()
            .map(|o| &o["spec"]["replicas"]),
        Some(&json!(5))
    );
    let current = current_versions(&client, &ns).await;
    let stored = audit::Stored::of(&writes, &ns, &current);
    assert_eq!(
        stored.by_action().get("01TESTACTIONID").map(Vec::len),
        Some(1)
    );
}

/// kill -9 at random points of the agent's cycle, restart on the same
/// journal, N times; then one clean run. Every intent applied exactly once
/// or not at all, per the audit log.
#[tokio::test]
async fn kill_9_at_random_points_loses_and_duplicates_no_action() {
    let _turn = TURN.lock().await;
    let runs = env_usize("AUTOPILOT_FAULT_RUNS", 20);
    let gateways = env_usize("AUTOPILOT_FAULT_GATEWAYS", 10);
    let mut rng = seed("kill -9");
    let started = Instant::now();
    let (client, ns) = support::client_and_namespace(cp(), "kill9").await;
    install_open_policy(&client, &ns).await;
    let names = gateway_names(gateways);
    create_gateways(&client, &ns, &names, 3).await;
    let dir = Workdir::new("kill9");
    let rules = Rules::new(dir.path(), "fault", FLIP);
    // The journal: a SQLite file (the chart's default, on a PVC), or with
    // AUTOPILOT_FAULT_JOURNAL=postgres a database on a real PostgreSQL.
    let postgres = std::env::var("AUTOPILOT_FAULT_JOURNAL").is_ok_and(|j| j == "postgres");
    let pg = postgres.then(|| Postgres::start().expect("PostgreSQL"));
    let db = match &pg {
        Some(pg) => journal_database(pg, "kill9").await,
        None => format!("sqlite:{}", dir.path().join("journal.db").display()),
    };
    let journal = if postgres { "PostgreSQL" } else { "SQLite" };
    let spec = AgentSpec {
        ns: ns.clone(),
        rules: rules.dir.clone(),
        database_url: db.clone(),
        prometheus_url: None,
        log: dir.path().join("agent.log"),
        leader: None,
    };

    // Where the kills land. Half the runs die after a delay from the start
    // (startup to the first actions takes over a second, a cycle of ten
    // gateways a few hundred milliseconds): while starting, resolving,
    // between cycles or inside a batch. The other half die a moment after
    // the run's first new journal row: inside a batch, between an intent
    // and its write, or between the write and its outcome.
    create_journal(&db).await;
    let newest = NewestRow::open(&db).await;
    let (mut timed, mut on_intent, mut early_exits, mut no_intent) = (0usize, 0, 0, 0);
    for run in 0..runs {
        let before = newest.id().await.expect("read the journal");
        let mut agent = spec.start();
        if rng.next() % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(rng.between(300, 2500))).await;
            timed += 1;
        } else {
            if !newest
                .wait_past(before, &agent, Duration::from_secs(10))
                .await
            {
                no_intent += 1;
            }
            tokio::time::sleep(Duration::from_millis(rng.between(0, 300))).await;
            on_intent += 1;
        }
        if agent.alive() {
            agent.kill_9();
        } else {
            early_exits += 1;
            eprintln!(
                "run {run}: the agent had exited before its kill:\n{}",
                agent.log_tail(20)
            );
        }
    }
    newest.close().await;
    let before_clean = unresolved(&db, &ns).await;
    clean_run(&spec, &rules, 3.0).await;

    let (r, writes) = reconcile(&client, &ns, &db).await;
    dir.keep_audit_log();
    println!(
        "kill -9 ({journal} journal, {gateways} gateways): runs {runs}, kills {} ({timed} after a delay, {on_intent} after a new intent), early exits {early_exits}, unresolved before the clean run {before_clean}; {r}; {:.0} s",
        timed + on_intent - early_exits,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(early_exits, 0, "the agent must not exit by itself");
    assert_eq!(
        no_intent, 0,
        "every run journaled an intent before its kill"
    );
    assert!(
        r.outcomes.get(outcome::APPLIED).copied().unwrap_or(0) >= runs / 2,
        "the runs did act: {r}"
    );
    r.assert_exactly_once("kill -9");
    assert_last_write_is_on_the_object(&client, &ns, &writes).await;
    drop(pg);
}

/// Prometheus killed under a running agent: it keeps running, reports the
/// outage, acts on nothing it could not read, and acts on findings again
/// once Prometheus is back.
#[tokio::test]
async fn prometheus_killed_no_action_on_missing_data_and_recovery() {
    let _turn = TURN.lock().await;
    let (client, ns) = support::client_and_namespace(cp(), "promkill").await;
    support::install_default_policy(&client, &ns).await;
    let names = vec!["gw".to_string()];
    create_gateways(&client, &ns, &names, 2).await;

    let exporter = Exporter::start().expect("exporter");
    let line = |v: &str| {
        format!(
            "# TYPE test_gateway_latency_p99_seconds gauge\ntest_gateway_latency_p99_seconds{{namespace=\"{ns}\",gateway=\"gw\"}} {v}\n"
        )
    };
    exporter.set(line("0.12"));
    let mut prom = Prometheus::start(&prometheus::Options {
        targets: vec![exporter.addr().to_string()],
        backfill: None,
    })
    .expect("prometheus");

    let dir = Workdir::new("promkill");
    let runbook = std::fs::read_to_string(repo("rules/autoscale-gateway.rhai")).expect("runbook");
    let rules = Rules::new(dir.path(), "autoscale-gateway", &runbook);
    let db = format!("sqlite:{}", dir.path().join("journal.db").display());
    let spec = AgentSpec {
        ns: ns.clone(),
        rules: rules.dir.clone(),
        database_url: db.clone(),
        prometheus_url: Some(prom.url().to_string()),
        log: dir.path().join("agent.log"),
        leader: None,
    };
    create_journal(&db).await;
    let agent = spec.start();

    // Warm and quiet: steady latency, no finding, no action.
    support::wait_for("the detector to warm up", LONG, || async {
        let read = agent.sum("autopilot_signals{", &["state=\"read\""]).await?;
        let warming = agent
            .sum("autopilot_signals{", &["state=\"warming_up\""])
            .await?;
        if read >= 1.0 && warming == 0.0 {
            Ok(())
        } else {
            Err(format!("read {read}, warming up {warming}"))
        }
    })
    .await;
    let ok = agent.cycles("ok").await.expect("cycles");
    agent.wait_cycles("ok", ok + 2.0).await;
    assert!(
        journal_rows(&db, &ns).await.is_empty(),
        "no action while steady"
    );

    // Prometheus dies; the latency spikes where nobody can see it.
    prom.kill();
    exporter.set(line("2.5"));
    let blind = agent.cycles("blind").await.expect("cycles");
    agent.wait_cycles("blind", blind + 5.0).await;
    assert!(agent.alive(), "the agent keeps running without Prometheus");
    assert_eq!(
        agent.sum("autopilot_prometheus_up", &[]).await,
        Ok(0.0),
        "the outage is on /metrics"
    );
    let errors = agent
        .sum("autopilot_read_errors_total{", &["what=\"prometheus\""])
        .await
        .expect("metrics");
    assert!(errors >= 5.0, "each failed query is counted: {errors}");
    assert!(
        agent.log_contains("querying Prometheus failed"),
        "the outage is logged:\n{}",
        agent.log_tail(20)
    );
    assert!(
        journal_rows(&db, &ns).await.is_empty(),
        "no action on missing data"
    );
    let gw = Api::<PaymentGateway>::namespaced(client.clone(), &ns)
        .get("gw")
        .await
        .expect("gateway");
    assert_eq!(gw.spec.replicas, 2, "nothing was written while blind");

    // Prometheus is back (same port, same data): the spike is scraped,
    // found, and acted on, once.
    let back = Instant::now();
    prom.restart().expect("prometheus restarts");
    support::wait_for("Prometheus to be up again for the agent", LONG, || async {
        match agent.sum("autopilot_prometheus_up", &[]).await? {
            1.0 => Ok(()),
            v => Err(format!("autopilot_prometheus_up {v}")),
        }
    })
    .await;
    let gateways = Api::<PaymentGateway>::namespaced(client.clone(), &ns);
    support::wait_for("the spike to be acted on", LONG, || async {
        let gw = gateways.get("gw").await.map_err(|e| e.to_string())?;
        match gw.spec.replicas {
            3 => Ok(()),
            other => Err(format!("replicas {other}")),
        }
    })
    .await;
    assert!(
        agent.log_contains("Prometheus answers for this kind again"),
        "the recovery is logged"
    );
    support::wait_for("the outcome journaled", LONG, || async {
        let rows = journal_rows(&db, &ns).await;
        if !rows.is_empty() && rows.iter().all(|r| r.outcome.is_some()) {
            Ok(())
        } else {
            Err(format!("{} rows", rows.len()))
        }
    })
    .await;
    let rows = journal_rows(&db, &ns).await;
    assert_eq!(rows.len(), 1, "one action, after the outage: {rows:#?}");
    assert_eq!(rows[0].entry.trigger, "finding");
    assert_eq!(rows[0].outcome.as_deref(), Some(outcome::APPLIED));
    let (r, _) = reconcile(&client, &ns, &db).await;
    println!(
        "Prometheus killed: {errors} failed queries counted, acted {:.1} s after its return; {r}",
        back.elapsed().as_secs_f64()
    );
    r.assert_exactly_once("Prometheus killed");
    assert_eq!(r.patches, 1);
}

/// kube-apiserver stopped mid-cycle and started again on the same port and
/// etcd, twice, while the agent flips gateways: no write twice, none lost,
/// and the agent acts again after each return.
#[tokio::test]
async fn api_server_restarted_mid_cycle_no_duplicate_and_the_agent_recovers() {
    let _turn = TURN.lock().await;
    let mut rng = seed("API server restart");
    let (client, ns) = support::client_and_namespace(cp(), "apirestart").await;
    install_open_policy(&client, &ns).await;
    let names = gateway_names(6);
    create_gateways(&client, &ns, &names, 3).await;
    let dir = Workdir::new("apirestart");
    let rules = Rules::new(dir.path(), "fault", FLIP);
    let db = format!("sqlite:{}", dir.path().join("journal.db").display());
    let spec = AgentSpec {
        ns: ns.clone(),
        rules: rules.dir.clone(),
        database_url: db.clone(),
        prometheus_url: None,
        log: dir.path().join("agent.log"),
        leader: None,
    };
    create_journal(&db).await;
    let mut agent = spec.start();
    wait_applied(&agent, &db, &ns, 3).await;

    // Each stop comes a moment after a new journal row: inside a batch of
    // six, where writes are in flight.
    let newest = NewestRow::open(&db).await;
    let restarts = 3;
    let mut downtime = Duration::ZERO;
    for _ in 0..restarts {
        let before = newest.id().await.expect("read the journal");
        assert!(
            newest.wait_past(before, &agent, LONG).await,
            "a new intent:\n{}",
            agent.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(rng.between(0, 200))).await;
        let stopped = Instant::now();
        cp().stop_apiserver().await.expect("stop kube-apiserver");
        tokio::time::sleep(Duration::from_secs(2)).await;
        cp().start_apiserver_again()
            .await
            .expect("start kube-apiserver again");
        downtime += stopped.elapsed();
        let before = applied(&db, &ns).await;
        wait_applied(&agent, &db, &ns, before + names.len()).await;
        assert!(agent.alive(), "the agent survives the API server's restart");
    }
    newest.close().await;
    // While it ran, every intent got an outcome.
    rules.set("fault", QUIET);
    let ok = agent.cycles("ok").await.expect("cycles");
    agent.wait_cycles("ok", ok + 2.0).await;
    let open_while_running = unresolved(&db, &ns).await;
    agent.terminate().await;
    clean_run(&spec, &rules, 2.0).await;

    let (r, writes) = reconcile(&client, &ns, &db).await;
    dir.keep_audit_log();
    println!(
        "API server restarted {restarts} times ({:.1} s down in all), left unresolved while running {open_while_running}; {r}",
        downtime.as_secs_f64()
    );
    r.assert_exactly_once("API server restart");
    assert_last_write_is_on_the_object(&client, &ns, &writes).await;
}

/// The PostgreSQL journal restarted while the agent acts — a fast restart,
/// then a crash (immediate shutdown): nothing lost, nothing sent twice, and
/// the agent keeps acting.
#[tokio::test]
async fn postgres_restarted_mid_write_loses_and_duplicates_no_action() {
    if let Err(e) = Postgres::binaries() {
        eprintln!("SKIPPED: {e} (scripts/install-deps installs postgresql)");
        return;
    }
    let _turn = TURN.lock().await;
    let mut pg = Postgres::start().expect("PostgreSQL");
    let url = journal_database(&pg, "restart").await;

    let (client, ns) = support::client_and_namespace(cp(), "pgrestart").await;
    install_open_policy(&client, &ns).await;
    let names = gateway_names(6);
    create_gateways(&client, &ns, &names, 3).await;
    let dir = Workdir::new("pgrestart");
    let rules = Rules::new(dir.path(), "fault", FLIP);
    let spec = AgentSpec {
        ns: ns.clone(),
        rules: rules.dir.clone(),
        database_url: url.clone(),
        prometheus_url: None,
        log: dir.path().join("agent.log"),
        leader: None,
    };
    create_journal(&url).await;
    let mut agent = spec.start();
    wait_applied(&agent, &url, &ns, 3).await;

    // Each restart cuts a journal write: as soon as a new intent is
    // journaled, the test locks the journal table against writes (reads
    // still pass), so the agent's next write — most often that intent's
    // outcome, after its PATCH — waits on the lock; then PostgreSQL goes
    // down under it for two seconds.
    let newest = NewestRow::open(&url).await;
    let mut survived = Vec::new();
    let mut cut = Vec::new();
    for how in [Shutdown::Fast, Shutdown::Immediate] {
        let before = support::wait_for("the journal to answer", LONG, || async {
            newest.id().await.ok_or("no answer".to_string())
        })
        .await;
        assert!(
            newest.wait_past(before, &agent, LONG).await,
            "a new intent:\n{}",
            agent.log_tail(20)
        );
        let (lock, waiting) = hold_journal_writes(&url).await;
        cut.push(waiting);
        pg.shut_down(how);
        drop(lock);
        tokio::time::sleep(Duration::from_secs(2)).await;
        pg.start_again().expect("PostgreSQL starts again");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let alive = agent.alive();
        survived.push((how, alive));
        if !alive {
            // Acceptable only if a restart resolves everything: checked below.
            eprintln!(
                "the agent exited when PostgreSQL restarted ({how:?}):\n{}",
                agent.log_tail(20)
            );
            agent = spec.start();
        }
        let before = applied(&url, &ns).await;
        wait_applied(&agent, &url, &ns, before + names.len()).await;
    }
    newest.close().await;
    rules.set("fault", QUIET);
    let ok = agent.cycles("ok").await.expect("cycles");
    agent.wait_cycles("ok", ok + 2.0).await;
    // Intents the outage interrupted and the running agent has not
    // resolved. The worst case for a later resolution: someone puts their
    // target back as it was before them (their inverse, by hand) while the
    // agent is down — one whose write landed must still not be sent again.
    let open = open_intents(&url, &ns).await;
    agent.terminate().await;
    for row in &open {
        revert_by_hand(&client, row).await;
    }
    clean_run(&spec, &rules, 2.0).await;

    let (r, writes) = reconcile(&client, &ns, &url).await;
    dir.keep_audit_log();
    println!(
        "PostgreSQL restarted (fast, then immediate): the agent was waiting on {cut:?}; survived {survived:?}; left unresolved while running {}; {r}",
        open.len()
    );
    r.assert_exactly_once("PostgreSQL restart");
    assert_last_write_is_on_the_object(&client, &ns, &writes).await;
    assert!(
        open.is_empty(),
        "once the journal is back, the running agent resolves what the outage interrupted: {:#?}",
        open.iter()
            .map(|r| (r.id, &r.entry.target))
            .collect::<Vec<_>>()
    );
    drop(pg);
}

/// Sends `signal` (`STOP`, `CONT`) to the agent's process.
fn signal(agent: &Agent, signal: &str) {
    let pid = agent.child.as_ref().expect("a running agent").id();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The leader frozen (SIGSTOP) in the middle of a batch — just after it
/// journaled an intent, before it sent it — for three Leases while a standby
/// takes over, then woken (SIGCONT): the API server's audit log shows no
/// write of the old leader after its Lease could have expired, and it exits
/// on waking. Each agent has its own journal, so the audit log's action IDs
/// say whose each write was.
#[tokio::test]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_wakes() {
    let _turn = TURN.lock().await;
    let (client, ns) = support::client_and_namespace(cp(), "sigstop").await;
    install_open_policy(&client, &ns).await;
    let names = gateway_names(4);
    create_gateways(&client, &ns, &names, 3).await;
    let dir = Workdir::new("sigstop");
    let rules = Rules::new(dir.path(), "fault", FLIP);
    let spec = |who: &str| AgentSpec {
        ns: ns.clone(),
        rules: rules.dir.clone(),
        database_url: format!("sqlite:{}", dir.path().join(format!("{who}.db")).display()),
        prometheus_url: None,
        log: dir.path().join(format!("{who}.log")),
        leader: Some(format!("pod-{who}")),
    };
    let (a_spec, b_spec) = (spec("a"), spec("b"));
    create_journal(&a_spec.database_url).await;
    create_journal(&b_spec.database_url).await;

    // A leads and acts; B waits as a standby.
    let a = a_spec.start();
    wait_applied(&a, &a_spec.database_url, &ns, 4).await;
    let b = b_spec.start();
    support::wait_for("the standby to serve /metrics", LONG, || async {
        b.sum("autopilot_leader", &[]).await.map(|_| ())
    })
    .await;
    assert_eq!(
        applied(&b_spec.database_url, &ns).await,
        0,
        "B is a standby"
    );

    // Freeze A the moment it journals a new intent: inside a batch, the
    // sends still to come.
    let newest = NewestRow::open(&a_spec.database_url).await;
    let before = newest.id().await.expect("A's journal");
    assert!(
        newest.wait_past(before, &a, LONG).await,
        "A journaled nothing new:\n{}",
        a.log_tail(30)
    );
    signal(&a, "STOP");
    let stopped = chrono::Utc::now();
    newest.close().await;
    // B takes over (after A's Lease expires) and acts.
    wait_applied(&b, &b_spec.database_url, &ns, 4).await;
    let pause = Duration::from_secs(3 * LEASE_SECONDS);
    let since = (chrono::Utc::now() - stopped).to_std().unwrap_or_default();
    tokio::time::sleep(pause.saturating_sub(since)).await;
    signal(&a, "CONT");
    let woke = chrono::Utc::now();
    // On waking A finds its fence closed and its Lease lost, and exits.
    support::wait_for("the old leader to exit", LONG, || async {
        if a.alive() {
            Err("still running".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    // B acts on: the pause did not stop the estate.
    let b_applied = applied(&b_spec.database_url, &ns).await;
    wait_applied(&b, &b_spec.database_url, &ns, b_applied + 4).await;

    // A's Lease could have expired LEASE_SECONDS after it was frozen (it
    // renewed nothing while stopped): no stored write of A's after that.
    let expiry = stopped + chrono::Duration::seconds(LEASE_SECONDS as i64);
    let a_ids: BTreeSet<String> = journal_rows(&a_spec.database_url, &ns)
        .await
        .into_iter()
        .map(|r| r.entry.uid)
        .collect();
    let writes = audit::writes(&cp().audit_log());
    let late: Vec<_> = writes
        .iter()
        .filter(|w| w.namespace == ns && w.succeeded())
        .filter(|w| w.action_id().is_some_and(|id| a_ids.contains(id)))
        .filter(|w| {
            chrono::DateTime::parse_from_rfc3339(&w.stage_timestamp).is_ok_and(|t| t > expiry)
        })
        .collect();
    assert!(
        late.is_empty(),
        "the old leader wrote after its Lease could have expired ({expiry}; woken {woke}): {late:#?}\nA's log:\n{}",
        a.log_tail(40)
    );
    let a_writes = writes
        .iter()
        .filter(|w| w.namespace == ns && w.succeeded())
        .filter(|w| w.action_id().is_some_and(|id| a_ids.contains(id)))
        .count();
    // What A left in flight when frozen is not lost: it is journaled without
    // an outcome or refused, never applied twice.
    let a_rows = journal_rows(&a_spec.database_url, &ns).await;
    let sent_late = a_rows
        .iter()
        .filter(|r| {
            r.outcome.as_deref() == Some(outcome::APPLIED)
                && r.outcome_at.is_some_and(|t| t > expiry.timestamp())
        })
        .count();
    assert_eq!(sent_late, 0, "{a_rows:#?}");
    eprintln!(
        "sigstop: A wrote {a_writes} times before its pause, none after {expiry}; woken at {woke}; A's log ends:\n{}",
        a.log_tail(8)
    );
}
