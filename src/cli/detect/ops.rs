//! `autopilot detect ops`: the detectors judged on operational data of our
//! own, not NAB's. The sandbox's estate (`testenv::sim`, the same parts and
//! faults as `autopilot sandbox`) is played in simulated time with no agent
//! acting: a warm-up hour, a quiet period with a daily swing of load and
//! noise, then each scenario's fault in turn for a while, ended, and an
//! hour to settle. The timeline lies in the recent past, on whole hours,
//! but the load follows a simulated clock on which the first fault starts
//! at 09:00 ([`FIRST_FAULT_HOUR`]), so a run prints the same whenever it
//! is started. Every exporter's samples are backfilled into a real
//! Prometheus (promtool), and the live cycle's detection (the model specs
//! of `--models`, `autopilot replay`'s machinery, no runbooks) is replayed
//! over that history at the agent's cycle interval. Reported per scenario:
//! the time from the fault to the first finding on the signal its runbook
//! acts on (and on any signal of the resource); and false findings per
//! series-day: finding episodes that start in the quiet period, over the
//! series-days of every signal of every component.
//!
//! With `--write-corpus DIR`, the signals as the model specs read them are
//! also written in NAB's layout (`data/operational/*.csv`,
//! `labels/combined_windows.json`, a window per fault on its signal), so
//! `autopilot detect eval --nab DIR` scores any detector on them with NAB's
//! rules.
//!
//! Only in a build with `--features testenv` (it runs Prometheus).

use std::{collections::BTreeMap, path::PathBuf, sync::atomic::AtomicBool, time::Duration};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

use crate::{
    act::guard::Policy,
    agent::replay::{self, Episode, Replay},
    decide::{Limits, Mode, RunbookSet},
    detect::spec::ValidatedSpec,
    observe::{Prometheus, cache::ResourceCache, load_model_specs},
    scope::Scope,
    testenv::{
        prometheus as testprom,
        sim::{Fault, Model},
    },
};

mod corpus;
mod report;

use corpus::{openmetrics, write_corpus};
use report::{judge, table};

/// The flags of `autopilot detect ops`.
#[derive(clap::Args, Clone, Debug)]
pub struct OpsArgs {
    /// Scenarios to play, by name (default: every one the sandbox has).
    #[arg(long)]
    pub scenario: Vec<String>,
    /// Hours of quiet operation judged for false findings, after a warm-up
    /// hour and before the first fault.
    #[arg(long, default_value_t = 24)]
    pub quiet_hours: u32,
    /// Minutes each fault lasts before it is ended (nobody acts on it).
    #[arg(long, default_value_t = 60)]
    pub fault_minutes: u32,
    /// Seconds between the exporters' samples (Prometheus' scrape interval).
    #[arg(long, default_value_t = 15)]
    pub scrape_seconds: u32,
    /// Seconds between the replayed agent's cycles (its --cycle-seconds).
    #[arg(long, default_value_t = 30)]
    pub cycle_seconds: u32,
    /// Peak-to-trough daily swing of the load, as a share of normal.
    #[arg(long, default_value_t = 0.4)]
    pub daily_swing: f64,
    /// Noise on the load (standard deviation, as a share of normal).
    #[arg(long, default_value_t = 0.03)]
    pub noise: f64,
    /// Seed of the noise.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Model specs whose detectors are judged.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// The payments resources of the estate.
    #[arg(long, default_value = "deploy/examples")]
    pub examples: PathBuf,
    /// The operators' resources of the estate.
    #[arg(long, default_value = "tests/fixtures/estate")]
    pub estate: PathBuf,
    /// Namespace for resources that do not name one.
    #[arg(long, default_value = "payments")]
    pub namespace: String,
    /// Also write the corpus in NAB's layout here.
    #[arg(long)]
    pub write_corpus: Option<PathBuf>,
    /// `table` or `json`.
    #[arg(long, short, default_value = "table")]
    pub output: String,
}

/// One scenario's fault in the simulated timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Scheduled {
    pub scenario: String,
    /// `Kind/namespace/name`
    pub target: String,
    pub signal: String,
    pub start: i64,
    pub end: i64,
}

/// How one scenario was detected.
#[derive(Clone, Debug, Serialize)]
pub struct Detection {
    #[serde(flatten)]
    pub fault: Scheduled,
    /// Seconds from the fault to the first finding on its signal.
    pub on_signal: Option<i64>,
    pub on_signal_by: Option<String>,
    /// Seconds from the fault to the first finding on any signal of the
    /// resource, and which.
    pub on_resource: Option<i64>,
    pub on_resource_by: Option<String>,
}

/// What `autopilot detect ops` found.
#[derive(Clone, Debug, Serialize)]
pub struct OpsReport {
    pub quiet_from: i64,
    pub quiet_to: i64,
    pub cycle_seconds: u32,
    pub scrape_seconds: u32,
    pub detections: Vec<Detection>,
    /// Series (component × signal) with data in the quiet period.
    pub quiet_series: usize,
    /// Finding episodes that start in the quiet period.
    pub quiet_episodes: usize,
    pub false_per_series_day: f64,
    /// The quiet period's episodes by (signal, detector).
    pub quiet_by_signal: BTreeMap<String, usize>,
    /// Each of them, by start: when, how long, how strong and why.
    pub quiet_findings: Vec<Episode>,
    pub notes: Vec<String>,
}

/// A deterministic generator for the noise (xorshift64*), so a run is
/// reproducible from `--seed`.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-12);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// The hour of the simulated day at which the first fault starts: 09:00,
/// when the load is back to normal and rising. The daily swing takes the
/// load from 0.8 to 1.2 of normal by default, and a traffic surge at the
/// trough (0.77 of the slots) does not saturate the gateway: it is not
/// the fault the scenario means. The faults that follow, two hours apart,
/// meet the rest of the day.
const FIRST_FAULT_HOUR: i64 = 9;

/// The load `since` seconds after a midnight of the simulated day: a daily
/// swing peaking mid-afternoon (15:00), and noise. On the simulated clock,
/// not the wall clock's time of day, so a run does not depend on the hour
/// it was started at: each fault meets the same load every time.
fn load(since: i64, swing: f64, noise: f64, rng: &mut Noise) -> f64 {
    let day = since.rem_euclid(86_400) as f64 / 86_400.0;
    let daily = 1.0 + swing / 2.0 * (std::f64::consts::TAU * (day - 0.625)).cos();
    (daily * (1.0 + noise * rng.normal())).max(0.05)
}

/// Every sample of the estate's exporters, by series (`name{labels}`).
type Samples = BTreeMap<String, Vec<(i64, f64)>>;

/// Plays the estate from `from` to `to` every `scrape` seconds, starting
/// and ending the faults as `schedule` says, the daily swing of the load
/// timed from `midnight` (unix seconds); returns every sample.
fn play(
    objects: &mut [Value],
    schedule: &[(Fault, Scheduled)],
    (from, to): (i64, i64),
    midnight: i64,
    args: &OpsArgs,
) -> anyhow::Result<Samples> {
    let mut model = Model::default();
    let mut rng = Noise(args.seed.max(1));
    let mut samples = Samples::new();
    let scrape = i64::from(args.scrape_seconds.max(1));
    let mut t = from;
    // The objects as they were before a fault's deploy, by schedule index.
    let mut deployed: BTreeMap<usize, Value> = BTreeMap::new();
    let key = |s: &Scheduled| {
        let mut parts = s.target.splitn(3, '/');
        let (k, ns, n) = (parts.next(), parts.next(), parts.next());
        (
            k.unwrap_or_default().to_string(),
            ns.unwrap_or_default().to_string(),
            n.unwrap_or_default().to_string(),
        )
    };
    while t <= to {
        // The simulated operators act on the resources as they are now.
        let patches = model.observe(&by_kind(objects));
        apply(objects, patches);
        for (i, (fault, s)) in schedule.iter().enumerate() {
            if t == s.start {
                if !model.inject(fault.clone(), key(s)) {
                    bail!("scenario {}: the estate has no {}", s.scenario, s.target);
                }
                // A bad release is deployed, as a pipeline would, and rolled
                // out at once (no reconciler here); it is rolled back at
                // the end.
                if let Some(mut patch) = model.deploy_patch(fault, &key(s))
                    && let Some(o) = find(objects, &key(s))
                {
                    deployed.insert(i, o.clone());
                    json_patch_merge(o, &mut patch);
                }
            }
            if t == s.end {
                model.end(fault.clone(), &key(s));
                if let (Some(before), Some(o)) = (deployed.remove(&i), find(objects, &key(s))) {
                    *o = before;
                }
            }
        }
        model.set_load(load(t - midnight, args.daily_swing, args.noise, &mut rng));
        let patches = model.advance(scrape as f64);
        apply(objects, patches);
        for line in model.exposition().lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.parse::<f64>() else {
                continue;
            };
            samples.entry(series.to_string()).or_default().push((t, v));
        }
        t += scrape;
    }
    Ok(samples)
}

fn by_kind(objects: &[Value]) -> crate::testenv::sim::Objects {
    let mut out = crate::testenv::sim::Objects::new();
    for kind in Model::kinds() {
        out.insert(
            kind.kind,
            objects
                .iter()
                .filter(|o| o["kind"] == kind.kind)
                .cloned()
                .collect(),
        );
    }
    out
}

/// The object of `key` (kind, namespace, name).
fn find<'a>(objects: &'a mut [Value], key: &(String, String, String)) -> Option<&'a mut Value> {
    objects.iter_mut().find(|o| {
        o["kind"] == key.0.as_str()
            && o["metadata"]["namespace"] == key.1.as_str()
            && o["metadata"]["name"] == key.2.as_str()
    })
}

/// Merges each status patch into its object.
fn apply(objects: &mut [Value], patches: Vec<crate::testenv::sim::StatusPatch>) {
    for p in patches {
        if let Some(o) = objects.iter_mut().find(|o| {
            o["kind"] == p.kind
                && o["metadata"]["namespace"] == p.namespace.as_str()
                && o["metadata"]["name"] == p.name.as_str()
        }) {
            let mut patch = serde_json::json!({"status": p.status});
            json_patch_merge(o, &mut patch);
        }
    }
}

/// RFC 7386 merge of `patch` into `target`.
fn json_patch_merge(target: &mut Value, patch: &mut Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p.iter_mut() {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_patch_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.take(),
    }
}

/// The resources of the estate, as the sandbox applies them.
fn read_estate(args: &OpsArgs) -> anyhow::Result<Vec<Value>> {
    let mut objects = Vec::new();
    for dir in [&args.examples, &args.estate] {
        for (file, obj) in crate::cli::sandbox::estate::read_manifests(dir)? {
            let mut v = serde_json::to_value(&obj).with_context(|| format!("reading {file}"))?;
            if v["metadata"]["namespace"].is_null() {
                v["metadata"]["namespace"] = Value::String(args.namespace.clone());
            }
            objects.push(v);
        }
    }
    Ok(objects)
}

pub async fn run(args: OpsArgs) -> anyhow::Result<()> {
    let faults: Vec<Fault> = if args.scenario.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.scenario
            .iter()
            .map(|n| {
                Fault::parse(n).with_context(|| {
                    format!(
                        "unknown scenario {n:?}: one of {}",
                        Fault::ALL.map(|f| f.name()).join(", ")
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let specs = load_model_specs(&args.models)
        .with_context(|| format!("loading the model specs from {}", args.models.display()))?;
    let mut objects = read_estate(&args)?;

    // The timeline: in the past, on whole hours (backfilled blocks must be
    // older than Prometheus' head).
    let fault_len = i64::from(args.fault_minutes.max(1)) * 60;
    let settle = 3600;
    let total =
        3600 + i64::from(args.quiet_hours) * 3600 + faults.len() as i64 * (fault_len + settle);
    let now = chrono::Utc::now().timestamp();
    let end = now / 3600 * 3600 - 3600;
    let start = end - total;
    let quiet_from = start + 3600;
    let quiet_to = quiet_from + i64::from(args.quiet_hours) * 3600;
    let mut schedule = Vec::new();
    for (i, fault) in faults.iter().enumerate() {
        let name = objects
            .iter()
            .find(|o| o["kind"] == fault.kind() && fault.fits(o))
            .and_then(|o| o["metadata"]["name"].as_str())
            .with_context(|| {
                format!(
                    "scenario {}: no {} among {} and {}",
                    fault.name(),
                    fault.kind(),
                    args.examples.display(),
                    args.estate.display()
                )
            })?
            .to_string();
        let s = quiet_to + i as i64 * (fault_len + settle);
        let scrape = i64::from(args.scrape_seconds.max(1));
        let s = s - (s - start) % scrape;
        schedule.push((
            fault.clone(),
            Scheduled {
                scenario: fault.name().into(),
                target: format!("{}/{}/{}", fault.kind(), args.namespace, name),
                signal: fault.answer().signal.into(),
                start: s,
                end: s + fault_len,
            },
        ));
    }

    eprintln!(
        "[ops] playing the estate for {:.0} simulated hours ({} scenarios) …",
        total as f64 / 3600.0,
        faults.len()
    );
    let midnight = quiet_to - FIRST_FAULT_HOUR * 3600;
    let samples = play(&mut objects, &schedule, (start, end), midnight, &args)?;
    let points: usize = samples.values().map(Vec::len).sum();
    eprintln!(
        "[ops] {} series, {points} samples; backfilling Prometheus with promtool …",
        samples.len()
    );
    let prom = testprom::Prometheus::start(&testprom::Options {
        targets: vec![],
        backfill: Some(openmetrics(&samples)),
    })
    .context("starting Prometheus with the estate's history (needs prometheus and promtool: scripts/install-deps)")?;
    drop(samples);

    let step = i64::from(args.cycle_seconds.max(1));
    let client =
        || Prometheus::new(prom.url(), Duration::from_secs(30)).context("the Prometheus client");
    let from = quiet_from - (quiet_from - start) % step;
    let resources = ResourceCache::fixed(objects.clone(), Scope::all());
    let replayed = Replay::new(replay::Parts {
        prometheus: client()?,
        specs: specs.clone(),
        runbooks: RunbookSet::new(Limits::default()),
        resources,
        policy: Policy::default(),
        settings: replay::Settings {
            from,
            to: end,
            step,
            chunk_steps: 720,
            warmup_seconds: from - start,
            mode: Mode::DryRun,
            scope: Scope::all(),
        },
    })
    .await?;
    eprintln!("[ops] replaying the cycle's detection every {step}s …");
    let report = replayed.run(&AtomicBool::new(false), |_| {}).await;

    let quiet_series = quiet_series(&client()?, &specs, quiet_from, quiet_to, step).await?;
    let out = judge(
        &report.episodes,
        &schedule,
        quiet_from,
        quiet_to,
        quiet_series,
        &args,
    );
    if let Some(dir) = &args.write_corpus {
        write_corpus(dir, &client()?, &specs, &schedule, from, end, step).await?;
        eprintln!(
            "[ops] corpus written to {} (score it: autopilot detect eval --nab {})",
            dir.display(),
            dir.display()
        );
    }
    let text = if args.output == "json" {
        serde_json::to_string_pretty(&out)? + "\n"
    } else {
        table(&out)
    };
    print!("{text}");
    Ok(())
}

/// Series (component × signal) with data in the quiet period.
async fn quiet_series(
    prom: &Prometheus,
    specs: &[ValidatedSpec],
    from: i64,
    to: i64,
    step: i64,
) -> anyhow::Result<usize> {
    let mut n = 0;
    for spec in specs {
        let read = prom
            .query_history(spec, from, to, step as f64)
            .await
            .with_context(|| format!("reading {} from Prometheus", spec.kind))?;
        n += read
            .iter()
            .filter(|s| s.samples.iter().any(|(_, v)| v.is_finite()))
            .count();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_swings_daily_around_normal() {
        let mut rng = Noise(7);
        let at = |h: i64, rng: &mut Noise| load(h * 3600, 0.4, 0.0, rng);
        // Peak mid-afternoon, trough at night, normal and rising at the
        // first fault's hour.
        assert!((at(15, &mut rng) - 1.2).abs() < 1e-9);
        assert!((at(3, &mut rng) - 0.8).abs() < 1e-9);
        assert!((at(FIRST_FAULT_HOUR, &mut rng) - 1.0).abs() < 1e-9);
        assert!(at(FIRST_FAULT_HOUR + 1, &mut rng) > 1.0);
        assert!((at(27, &mut rng) - at(3, &mut rng)).abs() < 1e-9, "daily");
        let mean: f64 = (0..1000).map(|_| rng.normal()).sum::<f64>() / 1000.0;
        assert!(mean.abs() < 0.1, "{mean}");
    }

    #[test]
    fn a_status_patch_merges_into_its_object() {
        let mut objects = vec![serde_json::json!({
            "kind": "Cluster", "metadata": {"namespace": "p", "name": "db"},
            "status": {"currentPrimary": "db-1", "phase": "x"}
        })];
        apply(
            &mut objects,
            vec![crate::testenv::sim::StatusPatch {
                kind: "Cluster",
                namespace: "p".into(),
                name: "db".into(),
                status: serde_json::json!({"currentPrimary": "db-2", "phase": null}),
            }],
        );
        assert_eq!(
            objects[0]["status"],
            serde_json::json!({"currentPrimary": "db-2"})
        );
    }
}
