//! The estate of `autopilot sandbox`, built on `crate::testenv` (so only in
//! a build with `--features testenv`): a real etcd, kube-apiserver and
//! kube-controller-manager on loopback with our CRDs, the operators' CRDs
//! and the example resources, a fake kubelet so their pods run, the
//! simulated estate of `testenv::sim` (it plays CloudNativePG and serves the
//! services' and operators' metrics, reacting to the agent's patches)
//! scraped by a real Prometheus, and the agent itself in the chosen mode:
//! its controllers reconcile the examples, and when a scenario's fault
//! starts, its detectors and runbooks decide (and in auto mode act). It must
//! not be reachable from `autopilot run`: the agent never starts a cluster.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ListParams},
};
use serde::Deserialize;

use super::Settings;
use crate::{
    act,
    act::journal::{Journal, JournalEntry, outcome},
    crd,
    decide::Mode,
    store::SqlJournal,
    testenv::{
        ControlPlane, Options, kubelet,
        prometheus::{self, Prometheus},
        release::{self, Release},
        sim::{self, Fault},
    },
};

/// Reads every YAML document of every `*.yaml`/`*.yml` file in `dir`, sorted
/// by file name, naming the file in any parse error.
pub fn read_manifests(dir: &Path) -> anyhow::Result<Vec<(String, DynamicObject)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = serde_yaml::Value::deserialize(doc).with_context(|| {
                format!("{}: document {} is not valid YAML", file.display(), i + 1)
            })?;
            if value.is_null() {
                continue;
            }
            let obj: DynamicObject = serde_yaml::from_value(value).with_context(|| {
                format!(
                    "{}: document {} is not a Kubernetes object",
                    file.display(),
                    i + 1
                )
            })?;
            out.push((file.display().to_string(), obj));
        }
    }
    Ok(out)
}

/// One scenario of the sandbox: its fault on one resource and when each
/// step happened (seconds since the sandbox started).
struct Scenario {
    fault: Fault,
    namespace: String,
    name: String,
    fault_at: Option<f64>,
    /// The agent's findings on the fault's kind before the fault (its
    /// /metrics counter), and when the first one after it came.
    findings_before: f64,
    finding_at: Option<f64>,
    /// The first decision on the resource: when, and what.
    action: Option<(f64, String)>,
    /// The first decision's journal row, and whether it names a verification.
    action_row: Option<(i64, bool)>,
    recovered_at: Option<f64>,
    /// When the first decision's verification passed.
    verified_at: Option<f64>,
    /// A surge ends once relieved; then the scale-in is awaited.
    ended_at: Option<f64>,
    back: Option<(f64, String)>,
}

impl Scenario {
    fn target(&self) -> String {
        format!("{}/{}/{}", self.fault.kind(), self.namespace, self.name)
    }

    /// Played out: recovered (auto), or decided (dry-run, recommend); a surge
    /// in auto mode also ended and scaled back in.
    fn done(&self, mode: Mode, now: f64) -> bool {
        let verified =
            self.verified_at.is_some() || self.action_row.is_some_and(|(_, verify)| !verify);
        match mode {
            Mode::Auto if self.fault == Fault::TrafficSurge => {
                (self.back.is_some() && verified) || self.ended_at.is_some_and(|e| now - e > 120.0)
            }
            Mode::Auto => self.recovered_at.is_some() && verified,
            _ => self.action.is_some(),
        }
    }
}

/// Seconds after start before `fault` may begin (see
/// [`sim::Answer::warmup_seconds`]).
fn earliest_start(fault: &Fault) -> f64 {
    fault.answer().warmup_seconds
}

/// Runs the sandbox until Ctrl-C, its first decision with `--once`, or the
/// end of its scenarios with `--scenario`.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let faults: Vec<Fault> = match settings.scenario.as_deref() {
        None => vec![Fault::TrafficSurge],
        Some("all") => Fault::ALL.to_vec(),
        Some(release::NAME) => Vec::new(),
        Some(name) => vec![Fault::parse(name).with_context(|| {
            format!(
                "unknown scenario {name:?}: one of {}, {}, or all",
                Fault::ALL.map(|f| f.name()).join(", "),
                release::NAME
            )
        })?],
    };
    let with_release = matches!(settings.scenario.as_deref(), Some("all" | release::NAME));
    let manifests = read_manifests(&settings.examples)?;
    let cp = start_cluster(&settings, &manifests).await?;
    eprintln!(
        "[sandbox] point kubectl at it: export KUBECONFIG={}",
        cp.kubeconfig().display()
    );
    let client = cp.client().await?;
    let _kubelet = kubelet::start(client.clone(), &settings.namespace)
        .await
        .context("starting the fake kubelet")?;

    let estate = sim::Estate::start(
        client.clone(),
        vec![settings.namespace.clone()],
        Duration::from_millis(500),
    )
    .context("starting the estate simulator")?;
    let prom = start_prometheus(estate.metrics_addr());
    let mut scenarios: Vec<Scenario> = Vec::new();
    for fault in faults {
        let name = first_of_kind(&client, &settings.namespace, &fault)
            .await?
            .with_context(|| {
                format!(
                    "scenario {}: no {} in namespace {} (see --examples and --estate)",
                    fault.name(),
                    fault.kind(),
                    settings.namespace
                )
            })?;
        scenarios.push(Scenario {
            fault,
            namespace: settings.namespace.clone(),
            name,
            fault_at: None,
            findings_before: 0.0,
            finding_at: None,
            action: None,
            action_row: None,
            recovered_at: None,
            verified_at: None,
            ended_at: None,
            back: None,
        });
    }

    let mut release = match with_release {
        true => Some(
            Release::pick(&client, &settings.namespace)
                .await?
                .with_context(|| {
                    format!(
                        "the release: no SagaOrchestrator in namespace {} (see --examples)",
                        settings.namespace
                    )
                })?,
        ),
        false => None,
    };

    let journal_dir = tempfile::tempdir().context("creating the journal folder")?;
    let db = journal_dir.path().join("journal.db");
    let opts = agent_options(&settings, prom.as_ref().map(|p| p.url().to_string()), &db);
    let mut agent = tokio::spawn(crate::agent::run_with(client.clone(), opts));
    eprintln!(
        "[sandbox] the agent runs in {}: http://{}/metrics; journal {}",
        settings.mode.as_str(),
        settings.listen,
        db.display()
    );
    for s in &scenarios {
        eprintln!(
            "[sandbox] scenario {}: the fault starts on {} after {}s",
            s.fault.name(),
            s.target(),
            (settings.incident_after_seconds as f64).max(earliest_start(&s.fault))
        );
    }
    if let Some(r) = &release {
        eprintln!(
            "[sandbox] release: the next version of {} is deployed after {}s",
            r.target(),
            settings.incident_after_seconds
        );
    }
    if !settings.once && settings.scenario.is_none() {
        eprintln!("[sandbox] press Ctrl-C to stop");
    }

    let journal = {
        // The agent creates and migrates the journal; wait for it. SQLite
        // migrations take no lock across connections, so opening the file
        // while the agent is migrating it can fail ("duplicate column"):
        // retry for a while, then say why.
        let mut tries = 0;
        loop {
            if db.exists() || agent.is_finished() {
                match SqlJournal::connect(&db.display().to_string()).await {
                    Ok(j) => break j,
                    Err(e) if tries < 50 && !agent.is_finished() => {
                        tries += 1;
                        tracing::debug!(error = %e, "the journal is not ready yet; retrying");
                    }
                    Err(e) => return Err(e).context("opening the agent's journal"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let start = tokio::time::Instant::now();
    let mut shown = Shown::default();
    // Journal rows already taken into the scenarios, and the newest shown.
    let mut counted = std::collections::BTreeSet::new();
    let mut last_row = 0;
    let incident = settings.incident_after_seconds as f64;
    // Long enough, after the last fault starts, for an hour-long
    // verification's settle delay and window (the model specs' 5m rate
    // windows must first forget the fault).
    let last_start = scenarios
        .iter()
        .map(|s| incident.max(earliest_start(&s.fault)))
        .fold(incident, f64::max);
    let deadline = last_start + 720.0;
    loop {
        let t = start.elapsed().as_secs_f64();
        for s in &mut scenarios {
            if s.fault_at.is_none()
                && t >= incident.max(earliest_start(&s.fault))
                && estate.inject(s.fault.clone(), &s.namespace, &s.name)
            {
                s.fault_at = Some(t);
                println!(
                    "[estate] {:>5.0}s fault {} on {}",
                    t,
                    s.fault.name(),
                    s.target()
                );
                // A bad release is a deploy: made as the pipeline would.
                if let Some(patch) = estate
                    .deploy(s.fault.clone(), &s.namespace, &s.name)
                    .await
                    .with_context(|| format!("deploying {} on {}", s.fault.name(), s.target()))?
                {
                    println!("[estate] {t:>5.0}s deployed {}: {patch}", s.target());
                }
            }
        }
        if let Some(r) = release.as_mut() {
            if !r.deployed() && t >= incident {
                r.deploy(t).await?;
            }
            if let Err(e) = r.observe(t).await {
                tracing::warn!(error = %format!("{e:#}"), "could not read the release's status");
            }
        }
        let findings = findings_by_kind(settings.listen).await;
        for s in &mut scenarios {
            let n = findings
                .get(&(
                    s.fault.kind().to_string(),
                    s.fault.answer().detector.to_string(),
                ))
                .copied()
                .unwrap_or(0.0);
            match s.fault_at {
                None => s.findings_before = n,
                Some(_) if s.finding_at.is_none() && n > s.findings_before => {
                    s.finding_at = Some(t)
                }
                Some(_) => {}
            }
        }
        let rows = shown.print_news(&client, &journal).await?;
        let decided = rows.iter().any(|r| r.id > last_row);
        last_row = rows.iter().map(|r| r.id).max().unwrap_or(last_row);
        for r in &rows {
            if !counted.insert(r.id) && r.outcome.is_some() {
                continue;
            }
            for s in &mut scenarios {
                // A refusal (cooldown, budget) is shown but is no decision.
                let is_decision = matches!(
                    r.outcome.as_deref(),
                    Some(
                        outcome::APPLIED
                            | outcome::UNKNOWN
                            | outcome::DRY_RUN
                            | outcome::RECOMMENDED
                    )
                );
                if r.outcome.is_none() {
                    counted.remove(&r.id); // in flight: look again
                }
                if s.fault_at.is_none() || r.entry.target != s.target() || !is_decision {
                    continue;
                }
                let what = format!(
                    "{} ({})",
                    r.entry.action_kind,
                    r.outcome.as_deref().unwrap_or("in flight")
                );
                if s.action.is_none() && r.entry.runbook == s.fault.answer().runbook {
                    s.action = Some((t, what));
                    s.action_row = Some((r.id, r.entry.verify.is_some()));
                    s.finding_at = s.finding_at.or(Some(t));
                } else if s.ended_at.is_some() && s.back.is_none() {
                    s.back = Some((t, what));
                }
            }
        }
        for s in &mut scenarios {
            let passed = |id: i64| {
                rows.iter().any(|r| {
                    r.id == id
                        && r.verification
                            .as_deref()
                            .is_some_and(|v| v.starts_with("passed"))
                })
            };
            if s.verified_at.is_none() && s.action_row.is_some_and(|(id, _)| passed(id)) {
                s.verified_at = Some(t);
            }
            if s.action.is_some()
                && s.recovered_at.is_none()
                && estate.healthy(s.fault.clone(), &s.namespace, &s.name)
            {
                s.recovered_at = Some(t);
                println!(
                    "[estate] {:>5.0}s {} recovered from {}",
                    t,
                    s.target(),
                    s.fault.name()
                );
            }
            if s.fault == Fault::TrafficSurge
                && s.ended_at.is_none()
                && s.recovered_at.is_some_and(|r| t - r > 30.0)
            {
                estate.end(Fault::TrafficSurge, &s.namespace, &s.name);
                s.ended_at = Some(t);
                println!("[estate] {t:>5.0}s the surge on {} ends", s.target());
            }
        }
        if settings.once && decided {
            eprintln!("[sandbox] the agent decided; stopping (--once)");
            break;
        }
        if settings.scenario.is_some()
            && scenarios.iter().all(|s| s.done(settings.mode, t))
            && release.as_ref().is_none_or(Release::done)
        {
            break;
        }
        if agent.is_finished() {
            let result = (&mut agent).await;
            anyhow::bail!("the agent stopped: {result:?}");
        }
        if (settings.once || settings.scenario.is_some()) && t > deadline {
            if settings.once {
                anyhow::bail!("no decision within {deadline:.0}s; see the agent's log above");
            }
            eprintln!("[sandbox] not every scenario played out within {deadline:.0}s");
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            r = tokio::signal::ctrl_c() => {
                r?;
                eprintln!("[sandbox] stopping");
                break;
            }
        }
    }
    if settings.scenario.is_some() {
        println!("{}", table(&scenarios, release.as_ref(), settings.mode));
    }
    agent.abort();
    journal.close().await;
    let unrecovered = settings.mode == Mode::Auto
        && scenarios.iter().any(|s| s.recovered_at.is_none())
        && settings.scenario.is_some();
    anyhow::ensure!(
        !unrecovered,
        "a scenario did not recover; see the table above"
    );
    // The controllers roll out in every mode: the mode is the runbooks'.
    if let Some(r) = release.as_ref().filter(|r| !r.done()) {
        anyhow::bail!(
            "the release on {} did not become the last good version; see the table above",
            r.target()
        );
    }
    Ok(())
}

/// `autopilot_findings_total` of the agent's /metrics at `listen` by
/// (component kind, detector); empty when it does not answer.
async fn findings_by_kind(listen: std::net::SocketAddr) -> BTreeMap<(String, String), f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut out = BTreeMap::new();
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(listen),
    )
    .await
    else {
        return out;
    };
    let mut text = String::new();
    let read = async {
        conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await?;
        conn.read_to_string(&mut text).await
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(2), read).await,
        Ok(Ok(_))
    ) {
        return out;
    }
    for line in text
        .lines()
        .filter(|l| l.starts_with("autopilot_findings_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        };
        let value = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(kind), Some(detector), Some(value)) = (label("kind"), label("detector"), value)
        {
            *out.entry((kind, detector)).or_default() += value;
        }
    }
    out
}

/// The per-scenario table: each step's time after the fault.
fn table(scenarios: &[Scenario], release: Option<&Release>, mode: Mode) -> String {
    let after = |at: Option<f64>, fault: Option<f64>| match (at, fault) {
        (Some(a), Some(f)) => format!("+{:.0}s", (a - f).max(0.0)),
        _ => "-".into(),
    };
    let mut out = format!(
        "\n{:<24} {:<9} {:<14} {:<8} {:<34} {:<10} {:<10} {}\n",
        "SCENARIO", "FAULT AT", "FIRST FINDING", "ACTION", "WHAT", "RECOVERED", "VERIFIED", "SEED"
    );
    for s in scenarios {
        let (recovered, verified) = if mode == Mode::Auto {
            let verified = match s.action_row {
                Some((_, false)) => "(none)".into(),
                _ => after(s.verified_at, s.fault_at),
            };
            (after(s.recovered_at, s.fault_at), verified)
        } else {
            (format!("- ({})", mode.as_str()), "-".into())
        };
        out.push_str(&format!(
            "{:<24} {:<9} {:<14} {:<8} {:<34} {:<10} {:<10} {}\n",
            s.fault.name(),
            s.fault_at.map_or("-".into(), |f| format!("{f:.0}s")),
            after(s.finding_at, s.fault_at),
            after(s.action.as_ref().map(|a| a.0), s.fault_at),
            s.action.as_ref().map_or("-", |a| a.1.as_str()),
            recovered,
            verified,
            s.fault.answer().seed,
        ));
        if let Some((at, what)) = &s.back {
            out.push_str(&format!(
                "{:<24} {:<9} {:<14} {:<8} {:<34} {:<10} {:<10} {}\n",
                "  surge end",
                s.ended_at.map_or("-".into(), |f| format!("{f:.0}s")),
                "-",
                after(Some(*at), s.ended_at),
                what,
                "-",
                "-",
                "",
            ));
        }
    }
    if let Some(r) = release {
        out.push_str(&r.row());
    }
    out.push_str("(times after the fault; agent cycle 2s, Prometheus scrape 1s; RECOVERED: the estate healthy again, VERIFIED: the action's verification passed)");
    if let Some(r) = release {
        out.push('\n');
        out.push_str(&r.legend());
    }
    out
}

/// The name of the first resource of the fault's kind in `namespace` that
/// the fault fits ([`Fault::fits`]), if any.
async fn first_of_kind(
    client: &kube::Client,
    namespace: &str,
    fault: &Fault,
) -> anyhow::Result<Option<String>> {
    let kind = fault.kind();
    let resource = sim::Model::kind(kind)
        .map(|k| k.api_resource())
        .with_context(|| format!("the estate simulator does not know kind {kind}"))?;
    let list = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {}", resource.plural))?;
    Ok(list
        .items
        .iter()
        .find(|o| serde_json::to_value(o).is_ok_and(|v| fault.fits(&v)))
        .map(|o| o.name_any()))
}

/// The control plane with our CRDs, the operators' CRDs, the namespace and
/// the example resources.
async fn start_cluster(
    settings: &Settings,
    manifests: &[(String, DynamicObject)],
) -> anyhow::Result<ControlPlane> {
    let namespace = settings.namespace.as_str();
    eprintln!("[sandbox] starting etcd, kube-apiserver and kube-controller-manager…");
    let cp = ControlPlane::start(Options {
        controller_manager: true,
    })
    .await
    .context("starting the local control plane")?;
    let client = cp.client().await?;
    eprintln!("[sandbox] control plane ready at {}", cp.server());

    act::apply_crds(&client, &crd::crds())
        .await
        .context("installing the payments.io CRDs")?;
    eprintln!("[sandbox] installed {} CRDs", crd::crds().len());
    let fixtures = std::path::PathBuf::from("tests/fixtures/crds");
    let operator_crds = if settings.operator_crds.is_dir() {
        settings.operator_crds.clone()
    } else {
        fixtures.clone()
    };
    if operator_crds.is_dir() {
        let mut crds = crds_in(&operator_crds)?;
        // A kind upstream has no CRD for (Redis Enterprise publishes none
        // we can copy): the fixture's.
        if operator_crds != fixtures && fixtures.is_dir() {
            let have: Vec<Option<String>> = crds.iter().map(|c| c.metadata.name.clone()).collect();
            crds.extend(
                crds_in(&fixtures)?
                    .into_iter()
                    .filter(|c| !have.contains(&c.metadata.name)),
            );
        }
        act::apply_crds(&client, &crds)
            .await
            .context("installing the operators' CRDs")?;
        eprintln!(
            "[sandbox] installed {} operator CRDs from {} (CloudNativePG, Strimzi, cert-manager, …; the fixture copy of any it lacks)",
            crds.len(),
            operator_crds.display()
        );
    }

    let ns: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}
    }))?;
    act::apply_manifest(&client, &ns, namespace).await?;
    // The guard policy, as the chart installs it: without one the agent
    // sends nothing (it fails closed). The defaults, but a one-minute
    // cooldown so that a surge's scale-in follows within the sandbox's run,
    // and room for the disruptive actions of every scenario at once (a
    // switchover, a memory limit, a rollback, a restart for
    // max_connections, a scale-in: nine incidents in one namespace within
    // minutes, where the default allows two an hour).
    let policy: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "payments.io/v1", "kind": "AutopilotPolicy",
        "metadata": {"name": crate::act::guard::POLICY_NAME, "namespace": namespace},
        "spec": {
            "cooldownSeconds": 60,
            "disruptivePerNamespacePerHour": 10,
            "disruptivePerHour": 20,
        },
    }))?;
    act::apply_manifest(&client, &policy, namespace).await?;
    for (file, obj) in manifests {
        act::apply_manifest(&client, obj, namespace)
            .await
            .with_context(|| format!("applying {file}"))?;
    }
    eprintln!(
        "[sandbox] applied {} example resources from {}; a fake kubelet runs their pods",
        manifests.len(),
        settings.examples.display()
    );
    if settings.estate.is_dir() {
        let estate = read_manifests(&settings.estate)?;
        for (file, obj) in &estate {
            act::apply_manifest(&client, obj, namespace)
                .await
                .with_context(|| format!("applying {file}"))?;
        }
        eprintln!(
            "[sandbox] applied {} operator resources from {}; the simulator plays their operators",
            estate.len(),
            settings.estate.display()
        );
    }
    Ok(cp)
}

/// The CustomResourceDefinitions among the manifests of `dir`.
fn crds_in(dir: &Path) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let mut crds = Vec::new();
    for (file, obj) in read_manifests(dir)? {
        if obj
            .types
            .as_ref()
            .is_some_and(|t| t.kind == "CustomResourceDefinition")
        {
            crds.push(
                serde_json::from_value(serde_json::to_value(&obj)?)
                    .with_context(|| format!("{file}: not a CustomResourceDefinition"))?,
            );
        }
    }
    Ok(crds)
}

/// A real Prometheus scraping the exporter, or `None` (the agent then runs
/// blind, as it would with Prometheus down).
fn start_prometheus(estate: &str) -> Option<Prometheus> {
    match Prometheus::start(&prometheus::Options {
        targets: vec![estate.to_string()],
        backfill: None,
    }) {
        Ok(p) => {
            eprintln!(
                "[sandbox] Prometheus at {} scrapes the simulated estate",
                p.url()
            );
            Some(p)
        }
        Err(e) => {
            eprintln!(
                "[sandbox] Prometheus did not start ({e}); run scripts/install-deps for findings. The agent runs without them."
            );
            None
        }
    }
}

/// The agent as the sandbox runs it: in the chosen mode, no leader
/// election, a fast cycle, a journal in a temporary folder.
fn agent_options(
    settings: &Settings,
    prometheus_url: Option<String>,
    db: &Path,
) -> crate::agent::Options {
    crate::agent::Options {
        reconcile: crate::reconcile::Settings {
            policy_namespace: Some(settings.namespace.clone()),
            ..Default::default()
        },
        listen: settings.listen,
        namespace: settings.namespace.clone(),
        leadership: crate::agent::Leadership {
            enabled: false,
            lease_name: "autopilot-leader".into(),
            identity: "sandbox".into(),
            lease_seconds: 15,
        },
        controllers: true,
        prometheus_url,
        prometheus_timeout: Duration::from_secs(5),
        database_url: db.display().to_string(),
        rules: crate::agent::RulesSource::Dir(settings.rules.clone()),
        models: settings.models.clone(),
        mode: settings.mode,
        cycle_interval: Duration::from_secs(2),
        warmup_history: Duration::ZERO,
        // Recommendations wait for `autopilot actions approve`.
        approval_policy: None,
        review_listen: None,
    }
}

/// What the sandbox has printed so far.
#[derive(Default)]
struct Shown {
    rows: i64,
    table: String,
    /// Outcome and verification last printed, per journal row.
    states: BTreeMap<i64, (Option<String>, Option<String>)>,
}

impl Shown {
    /// Prints the resource table when it changed, the journal rows not yet
    /// shown, and the outcomes and verifications that changed since; returns
    /// every row, oldest first.
    async fn print_news(
        &mut self,
        client: &kube::Client,
        journal: &SqlJournal,
    ) -> anyhow::Result<Vec<JournalEntry>> {
        let table = resource_table(client).await?;
        if table != self.table {
            println!("{table}");
            self.table = table;
        }
        let mut rows = journal.list(1000, false).await?;
        rows.sort_by_key(|r| r.id);
        for r in &rows {
            let state = (r.outcome.clone(), r.verification.clone());
            let before = self.states.insert(r.id, state.clone());
            if r.id <= self.rows {
                if before.as_ref() != Some(&state) {
                    println!(
                        "[autopilot] #{} {}{}",
                        r.id,
                        r.outcome.as_deref().unwrap_or("in flight"),
                        r.verification
                            .as_deref()
                            .map(|v| format!("; verification {v}"))
                            .unwrap_or_default()
                    );
                }
                continue;
            }
            println!(
                "[autopilot] #{} {} → {} on {}: {}{} — {}",
                r.id,
                r.entry.runbook,
                r.entry.action_kind,
                r.entry.target,
                r.outcome.as_deref().unwrap_or("in flight"),
                if r.entry.verdict == crate::act::journal::verdict::ALLOWED {
                    String::new()
                } else {
                    format!(" ({}: {})", r.entry.verdict, r.entry.verdict_detail)
                },
                r.entry.action["reason"].as_str().unwrap_or_default(),
            );
            if let Some(p) = &r.entry.patch {
                let how = if r.entry.mode == Mode::DryRun.as_str() {
                    "patch it would send"
                } else {
                    "patch"
                };
                println!("[autopilot]    {how}: {p}");
            }
            self.rows = r.id;
        }
        Ok(rows)
    }
}

/// Every payments resource with its version, phase and ready replicas.
async fn resource_table(client: &kube::Client) -> anyhow::Result<String> {
    let mut out = format!(
        "{:<18} {:<12} {:<20} {:<9} {:<12} {}",
        "KIND", "NAMESPACE", "NAME", "VERSION", "PHASE", "AVAILABLE"
    );
    for (kind, _) in crate::kinds::payments() {
        let resource = crate::kinds::KindInfo::from(kind).api_resource();
        let list = Api::<DynamicObject>::all_with(client.clone(), &resource)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing {}", resource.plural))?;
        let mut rows: BTreeMap<(String, String), String> = BTreeMap::new();
        for o in list {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                other => other.to_string(),
            };
            rows.insert(
                (o.namespace().unwrap_or_default(), o.name_any()),
                format!(
                    "{:<9} {:<12} {}",
                    text(&o.data["spec"]["version"]),
                    text(&o.data["status"]["phase"]),
                    text(&o.data["status"]["availableReplicas"]),
                ),
            );
        }
        for ((ns, name), rest) in rows {
            out.push_str(&format!(
                "\n{:<18} {:<12} {:<20} {rest}",
                resource.kind, ns, name
            ));
        }
    }
    Ok(out)
}
