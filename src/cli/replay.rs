//! `autopilot replay`: the flags, where a replay reads resources and the
//! guard policy from, the progress display, the report as a table, JSON or
//! CSV, and `--compare` (two rule folders over the same range, action by
//! action).
//!
//! Wiring and presentation only: the replay itself is `agent::replay`,
//! which runs the live cycle. Must not write to the cluster: with a
//! kubeconfig it reads resources (watches) and the AutopilotPolicy, nothing
//! else.

mod output;

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::Value;

pub use output::{Change, compare, print_report};
use output::{ProgressLine, print_compare};

use crate::{
    act::guard::Policy,
    agent::replay::{self, Replay, Report},
    decide::{Limits, Mode, RunbookSet},
    observe::{Prometheus, cache::ResourceCache, load_model_specs},
    scope::Scope,
};

/// How the report is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Csv,
}

/// Flags of `autopilot replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Prometheus base URL to read the history from.
    #[arg(long, env = "AUTOPILOT_PROMETHEUS_URL")]
    pub prometheus_url: String,
    /// Start of the range: RFC 3339 (2026-11-30T08:00:00Z), unix seconds,
    /// or `now-DURATION` (now-24h).
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// End of the range (same forms as --from).
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    pub to: String,
    /// Simulated time between cycles (the live --cycle-seconds): 30s, 1m, 90.
    #[arg(long, default_value = "30s")]
    pub step: String,
    /// Folder of runbooks (*.rhai).
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// Folder of model specs (*.yaml).
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Decide on these namespaces only (comma-separated or repeated;
    /// default: all), as `autopilot run --namespace`.
    #[arg(long = "namespace", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// The agent mode replayed: auto (what it would have sent), recommend
    /// or dry-run.
    #[arg(long, default_value = "auto")]
    pub mode: Mode,
    /// Resources (targets, the objects runbooks decide on) from this file
    /// instead of a cluster: YAML objects, one per document, or `kind: List`
    /// (used for resources even with --kubeconfig).
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Read resources as they are now, and the AutopilotPolicy, from the
    /// cluster of this kubeconfig (read-only). Without it and without
    /// --snapshot no resource can be read: runbooks report missing data.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the AutopilotPolicy `autopilot` read with --kubeconfig.
    #[arg(long, env = "POD_NAMESPACE", default_value = "autopilot")]
    pub agent_namespace: String,
    /// The guard policy from this file (an AutopilotPolicy, or its spec)
    /// instead of the cluster's; without either, the defaults.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Seconds of history before --from scored first so the detectors start
    /// warm, as the live agent does on becoming leader.
    #[arg(long, default_value_t = 7200)]
    pub warmup_history_seconds: u64,
    /// A Prometheus query slower than this fails.
    #[arg(long, default_value_t = 60)]
    pub prometheus_timeout_seconds: u64,
    /// Steps read per range query.
    #[arg(long, default_value_t = 720)]
    pub chunk_steps: i64,
    /// Replay the range twice, with the runbooks of OLD_RULES then of
    /// NEW_RULES, and print what the edit changes, action by action.
    #[arg(long, num_args = 2, value_names = ["OLD_RULES", "NEW_RULES"])]
    pub compare: Option<Vec<PathBuf>>,
    #[arg(long, short, default_value = "table")]
    pub output: Output,
}

/// Runs the replay (or the comparison) and prints the report on stdout.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp();
    let from = parse_time(&args.from, now).context("reading --from")?;
    let to = parse_time(&args.to, now).context("reading --to")?;
    let step = parse_duration(&args.step).context("reading --step")?;
    if to < from {
        bail!("--to is before --from");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    let mut out = std::io::stdout().lock();
    match &args.compare {
        None => {
            let report = replay_with(&args, &args.rules, from, to, step, &stop).await?;
            print_report(&mut out, &report, args.output)?;
        }
        Some(dirs) => {
            let [old, new] = dirs.as_slice() else {
                bail!("--compare takes two rule folders");
            };
            let before = replay_with(&args, old, from, to, step, &stop).await?;
            let after = replay_with(&args, new, from, to, step, &stop).await?;
            let diff = compare(&before.actions, &after.actions);
            print_compare(&mut out, &before, &after, &diff, args.output)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// One replay of the range with the runbooks of `rules`.
async fn replay_with(
    args: &ReplayArgs,
    rules: &Path,
    from: i64,
    to: i64,
    step: i64,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let specs = load_model_specs(&args.models)
        .with_context(|| format!("loading the model specs from {}", args.models.display()))?;
    let sources = crate::agent::rules::read_dir(rules)
        .with_context(|| format!("reading the runbooks in {}", rules.display()))?;
    let mut runbooks = RunbookSet::new(Limits::default());
    let errors = runbooks.load(&sources);
    if let Some(e) = errors.first() {
        bail!(
            "{} runbook(s) in {} do not compile; first: {}",
            errors.len(),
            rules.display(),
            crate::telemetry::chain(e)
        );
    }
    let prometheus = Prometheus::new(
        &args.prometheus_url,
        Duration::from_secs(args.prometheus_timeout_seconds.max(1)),
    )
    .context("configuring the Prometheus client")?;
    let scope = Scope::namespaces(args.namespaces.clone());
    let mut notes = Vec::new();
    let client = match &args.kubeconfig {
        Some(path) => Some(client(path).await?),
        None => None,
    };
    let resources = match (&args.snapshot, &client) {
        (Some(path), _) => {
            let objects = read_snapshot(path)?;
            notes.push(format!(
                "resources: {} objects from {} (as they are in the file, at every step)",
                objects.len(),
                path.display()
            ));
            ResourceCache::fixed(objects, scope.clone())
        }
        (None, Some(c)) => {
            notes.push(
                "resources: read from the cluster as they are now, at every step".to_string(),
            );
            ResourceCache::new(c.clone(), scope.clone())
        }
        (None, None) => {
            let why = "no --snapshot and no --kubeconfig: resources are not available, so runbooks report missing data and no action can be planned";
            notes.push(why.to_string());
            ResourceCache::unavailable(why, scope.clone())
        }
    };
    let policy = match (&args.policy, &client) {
        (Some(path), _) => {
            notes.push(format!("guard policy: {}", path.display()));
            read_policy(path)?
        }
        (None, Some(c)) => {
            let p = crate::act::executor::fetch_policy(c, &args.agent_namespace)
                .await
                .context("reading the guard policy from the cluster")?;
            notes.push(format!(
                "guard policy: AutopilotPolicy {}/autopilot as it is now",
                args.agent_namespace
            ));
            p
        }
        (None, None) => {
            notes.push("guard policy: the defaults (no --policy, no --kubeconfig)".to_string());
            Policy::default()
        }
    };
    notes.push(
        "verifications: not judged (history never reacted to actions that were not taken)"
            .to_string(),
    );
    let replay = Replay::new(replay::Parts {
        prometheus,
        specs,
        runbooks,
        resources,
        policy,
        settings: replay::Settings {
            from,
            to,
            step,
            chunk_steps: args.chunk_steps,
            warmup_seconds: args.warmup_history_seconds as i64,
            mode: args.mode,
            scope,
        },
    })
    .await?;
    let mut shown = ProgressLine::new(&rules.display().to_string());
    let mut report = replay.run(stop, |p| shown.show(p)).await;
    shown.finish(&report);
    notes.append(&mut report.notes);
    report.notes = notes;
    Ok(report)
}

async fn client(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("loading the kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The objects of a snapshot file: YAML documents, each an object or a
/// `List` of them.
pub fn read_snapshot(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the snapshot {}", path.display()))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("parsing the snapshot {}", path.display()))?;
        match v {
            Value::Null => {}
            Value::Array(items) => out.extend(items),
            v if v["kind"] == "List" => {
                out.extend(v["items"].as_array().cloned().unwrap_or_default())
            }
            v => out.push(v),
        }
    }
    for o in &out {
        if !o["apiVersion"].is_string()
            || !o["kind"].is_string()
            || !o["metadata"]["name"].is_string()
        {
            bail!(
                "{}: every object needs apiVersion, kind and metadata.name; found {}",
                path.display(),
                o
            );
        }
    }
    Ok(out)
}

/// A guard policy file: an AutopilotPolicy, or only its spec.
fn read_policy(path: &Path) -> anyhow::Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the policy {}", path.display()))?;
    let v: Value = serde_yaml::from_str(&text)
        .with_context(|| format!("parsing the policy {}", path.display()))?;
    let spec = if v.get("kind").is_some() {
        v["spec"].clone()
    } else {
        v
    };
    let policy: Policy = serde_json::from_value(spec)
        .with_context(|| format!("reading the policy {}", path.display()))?;
    policy
        .validate()
        .with_context(|| format!("checking the policy {}", path.display()))?;
    Ok(policy)
}

/// RFC 3339, unix seconds, `now` or `now-DURATION`.
pub fn parse_time(s: &str, now: i64) -> anyhow::Result<i64> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Some(ago) = s.strip_prefix("now-") {
        return Ok(now - parse_duration(ago)?);
    }
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp())
        .with_context(|| format!("{s:?} is not RFC 3339, unix seconds, now or now-DURATION"))
}

/// `30s`, `5m`, `2h`, `1d` or plain seconds; more than zero.
pub fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (n, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = n
        .parse()
        .with_context(|| format!("{s:?} is not a duration (30s, 5m, 2h, 1d)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{s:?}: unknown unit {unit:?} (s, m, h or d)"),
    };
    if n <= 0 {
        bail!("{s:?}: must be more than zero");
    }
    Ok(n * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_read_the_documented_forms() {
        assert_eq!(parse_duration("30s").ok(), Some(30));
        assert_eq!(parse_duration("90").ok(), Some(90));
        assert_eq!(parse_duration("2h").ok(), Some(7200));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5w").is_err());
        assert_eq!(parse_time("now-1d", 100_000).ok(), Some(13_600));
        assert_eq!(parse_time("1700000000", 0).ok(), Some(1_700_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20Z", 0).ok(),
            Some(1_700_000_000)
        );
        assert!(parse_time("yesterday", 0).is_err());
    }
}
