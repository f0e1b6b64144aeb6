//! `autopilot detect …`: run a detector over a CSV file (NAB's results
//! format), evaluate detectors on the Numenta Anomaly Benchmark, and measure
//! their throughput.
//!
//! File reading and timing live here; the detectors and the scorer are the
//! pure `detect` module. Nothing here talks to a cluster or to Prometheus, but `ops` (its own
//! module), which starts one.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::detect::{
    DetectorParams,
    nab::{self, LabeledFile},
};

mod eval;
#[cfg(feature = "testenv")]
pub mod ops;

#[derive(Subcommand, Debug)]
pub enum DetectCommand {
    /// Score a `timestamp,value` CSV and print `timestamp,value,anomaly_score`
    /// (NAB's results format). Rows a detector cannot score yet (warm-up)
    /// get 0 in this output format. A row with an empty, non-numeric or
    /// non-finite value, a bad timestamp, or a timestamp not after the
    /// previous row's is an error naming the file and the line.
    Score {
        /// The CSV to read.
        #[arg(long)]
        input: PathBuf,
        /// A built-in detector with its default parameters, or some of
        /// them set: `NAME:KEY=VALUE,…` (e.g. `cad:max_active=3`).
        #[arg(long, conflicts_with = "model", default_value = "ensemble")]
        detector: String,
        /// A model spec (models/*.yaml): use the detector of one of its signals.
        #[arg(long)]
        model: Option<PathBuf>,
        /// With --model: which signal's detector (default: the first).
        #[arg(long, requires = "model")]
        signal: Option<String>,
    },
    /// Score detectors on NAB: the full-corpus figure (NAB's rules: one
    /// threshold per detector for all files, chosen on the same files) and
    /// the honest one, leave one group out.
    ///
    /// Leave one group out: for each group with labelled windows, the
    /// detector's parameters (among its defaults and `--trials − 1` seeded
    /// draws) and its threshold are chosen on the other groups only, then the
    /// held-out group is scored at that threshold; the headline is the mean
    /// over held-out groups. Reported for NAB's three profiles (standard,
    /// reward low FP, reward low FN), with a per-group table.
    ///
    /// `random` is NAB's random baseline (uniform scores, the generator
    /// reseeded with `--seed` for every file); `null` never fires. Progress
    /// goes to stderr; each candidate costs one pass over the corpus, so use
    /// a release build (`cargo run --release -- detect eval …`).
    #[command(verbatim_doc_comment)]
    Eval {
        /// NAB directory holding data/ and labels/.
        #[arg(long, default_value = "../shared/nab")]
        nab: PathBuf,
        /// Detectors to evaluate (default: all built-in ones), or the
        /// baselines `random` and `null`. `NAME:KEY=VALUE,…` sets some of
        /// a detector's parameters in every candidate (e.g.
        /// `cad:max_active=3`: the search draws only the others);
        /// `KEY=A|B|…` tries each listed value with every candidate (e.g.
        /// `cad:stride=4|5|6`: three times the candidates).
        #[arg(long)]
        detector: Vec<String>,
        /// Candidates per detector in the search: its defaults plus
        /// `trials − 1` seeded draws from its search space (1 = defaults only).
        #[arg(long, default_value_t = 1)]
        trials: u32,
        /// Seed of the search (and of the `random` baseline).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Also print each file's counts at the full-corpus threshold.
        #[arg(long)]
        per_file: bool,
        /// Score the spec kinds (ewma, mad, seasonal, cusum) calibrated per
        /// series, as the agent does for a model spec's signals.
        #[arg(long)]
        calibrated: bool,
    },
    /// Judge the model specs' detectors on the simulated estate's faults
    /// (the operational corpus): time to detect each scenario's fault, and
    /// false findings per series-day on a quiet day with a daily swing of
    /// load. Plays `autopilot sandbox`'s estate in simulated time, backfills
    /// a real Prometheus, and replays the cycle's detection over it. Needs
    /// a build with `--features testenv` and Prometheus (scripts/install-deps).
    #[cfg(feature = "testenv")]
    Ops(Box<ops::OpsArgs>),
    /// Samples scored per second on one core for each detector, over the NAB
    /// files (release build recommended: `cargo run --release`).
    Bench {
        /// NAB directory holding data/ and labels/.
        #[arg(long, default_value = "../shared/nab")]
        nab: PathBuf,
        /// Detectors to time (default: all built-in ones); `NAME:KEY=VALUE,…`
        /// sets some of a detector's parameters (e.g. `cad:max_active=3`).
        #[arg(long)]
        detector: Vec<String>,
        /// Passes over the corpus per detector; the best pass is reported.
        #[arg(long, default_value_t = 3)]
        repeat: u32,
    },
}

pub async fn run(cmd: DetectCommand) -> anyhow::Result<()> {
    match cmd {
        #[cfg(feature = "testenv")]
        DetectCommand::Ops(args) => ops::run(*args).await?,
        DetectCommand::Score {
            input,
            detector,
            model,
            signal,
        } => {
            // A model spec's detector scores as the agent's does, calibrated
            // per series; a named one gives its raw scores (NAB's format).
            let d = match model {
                Some(path) => model_detector(&path, signal.as_deref())?.build_calibrated(),
                None => named(&detector)?.build(),
            };
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading {}", input.display()))?;
            let series =
                nab::parse_series(&input.display().to_string(), &text, nab::Order::Increasing)?;
            write_stdout(&score_csv(d, &series))?;
        }
        DetectCommand::Eval {
            nab: dir,
            detector,
            trials,
            seed,
            per_file,
            calibrated,
        } => {
            let corpus = load_nab(&dir)?;
            let options = eval::Options {
                trials,
                seed,
                per_file,
                calibrated,
            };
            write_stdout(&eval::eval(&corpus, &names_or_all(detector), &options)?)?;
        }
        DetectCommand::Bench {
            nab: dir,
            detector,
            repeat,
        } => {
            let corpus = load_nab(&dir)?;
            write_stdout(&bench(&corpus, &names_or_all(detector), repeat)?)?;
        }
    }
    Ok(())
}

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// A `--detector` argument's detector: its defaults, with the parameters
/// it sets (see [`parse_detector`]).
pub(crate) fn named(text: &str) -> anyhow::Result<DetectorParams> {
    let (name, mut sets) = parse_detector(text)?;
    if sets.len() > 1 {
        bail!("--detector {text}: `|` lists values to try, which only `detect eval` does");
    }
    let set = sets.pop().unwrap_or_default();
    let defaults = DetectorParams::default_for(name).ok_or_else(|| unknown_detector(name, &[]))?;
    defaults
        .with(&set)
        .map_err(|e| anyhow::anyhow!("--detector {text}: {e}"))
}

/// The error for a `--detector` name that is no detector: it lists the
/// detectors with defaults, then `extra`, the names only the calling
/// command also takes (`eval`'s baselines), so each command lists exactly
/// what it accepts and the wording stays one.
pub(crate) fn unknown_detector(name: &str, extra: &[&str]) -> anyhow::Error {
    let known: Vec<&str> = DetectorParams::DEFAULT_NAMES
        .iter()
        .chain(extra)
        .copied()
        .collect();
    anyhow::anyhow!(
        "unknown detector {name:?}; expected one of {}",
        known.join(", ")
    )
}

/// Parameters set by a `--detector` argument, by name.
pub(crate) type Settings = Vec<(String, serde_json::Value)>;

/// Splits a `--detector` argument, `NAME` or `NAME:KEY=VALUE,…` (for
/// example `cad:max_active=3,memory=1000`), into the detector's name and
/// the parameters it sets. A value is read as JSON (a number, `true`),
/// and as text otherwise (`direction=above`). `KEY=A|B|…` lists values to
/// try: one setting per combination of the listed values, in order (a
/// single one when nothing is listed).
pub(crate) fn parse_detector(text: &str) -> anyhow::Result<(&str, Vec<Settings>)> {
    let Some((name, pairs)) = text.split_once(':') else {
        return Ok((text, vec![Vec::new()]));
    };
    let mut sets: Vec<Settings> = vec![Vec::new()];
    for pair in pairs.split(',') {
        let (key, values) = pair.split_once('=').with_context(|| {
            format!("--detector {text}: {pair:?} is not KEY=VALUE (e.g. cad:max_active=3)")
        })?;
        let values: Vec<serde_json::Value> = values
            .split('|')
            .map(|value| {
                serde_json::from_str(value)
                    .unwrap_or_else(|_| serde_json::Value::String(value.to_string()))
            })
            .collect();
        sets = sets
            .iter()
            .flat_map(|set| {
                values.iter().map(move |value| {
                    let mut set = set.clone();
                    set.push((key.trim().to_string(), value.clone()));
                    set
                })
            })
            .collect();
    }
    Ok((name, sets))
}

fn names_or_all(names: Vec<String>) -> Vec<String> {
    if names.is_empty() {
        DetectorParams::DEFAULT_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        names
    }
}

fn model_detector(path: &Path, signal: Option<&str>) -> anyhow::Result<DetectorParams> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let spec = crate::detect::spec::validate_spec(&path.display().to_string(), &text)?;
    for w in &spec.warnings {
        eprintln!("warning: {w}");
    }
    let chosen = match signal {
        Some(name) => spec.signals.iter().find(|s| s.name == name),
        None => spec.signals.first(),
    };
    match chosen {
        Some(s) => Ok(s.detector.clone()),
        None => bail!(
            "{} has no signal {:?}; signals: {}",
            path.display(),
            signal.unwrap_or(""),
            spec.signals
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Scores every row; unscored rows (warm-up) are 0 in NAB's format.
pub fn score_rows(params: &DetectorParams, series: &[(i64, f64)]) -> Vec<f64> {
    score_rows_with(params.build(), series)
}

/// [`score_rows`] with a detector already built.
pub fn score_rows_with(mut d: Box<dyn crate::detect::Detector>, series: &[(i64, f64)]) -> Vec<f64> {
    series
        .iter()
        .map(|&(at, v)| d.score(at, v).map_or(0.0, |s| s.score))
        .collect()
}

fn score_csv(d: Box<dyn crate::detect::Detector>, series: &[(i64, f64)]) -> String {
    let scores = score_rows_with(d, series);
    let mut out = String::with_capacity(series.len() * 40);
    out.push_str("timestamp,value,anomaly_score\n");
    for (&(at, v), s) in series.iter().zip(scores) {
        let _ = writeln!(out, "{},{v},{s}", nab::format_timestamp(at));
    }
    out
}

/// One NAB data file: its name (`group/file.csv`), rows and windows.
pub struct NabFile {
    pub name: String,
    pub series: Vec<(i64, f64)>,
    pub labels: LabeledFile,
}

/// Reads every labelled file of a NAB checkout.
pub fn load_nab(dir: &Path) -> anyhow::Result<Vec<NabFile>> {
    let labels_path = dir.join("labels/combined_windows.json");
    let labels = std::fs::read_to_string(&labels_path)
        .with_context(|| format!("reading {}", labels_path.display()))?;
    let windows = nab::parse_windows(&labels)?;
    let mut files = Vec::new();
    for (name, w) in windows {
        let path = dir.join("data").join(&name);
        if !path.is_file() {
            continue; // e.g. realKnownCause, not shipped here
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        // NAB's own files repeat a timestamp here and there; NAB scores
        // every row, and so do we.
        let series = nab::parse_series(
            &path.display().to_string(),
            &text,
            nab::Order::NonDecreasing,
        )?;
        let ts: Vec<i64> = series.iter().map(|(t, _)| *t).collect();
        files.push(NabFile {
            labels: LabeledFile::new(&ts, &w),
            name,
            series,
        });
    }
    if files.is_empty() {
        bail!("no labelled data files under {}", dir.display());
    }
    Ok(files)
}

fn bench(corpus: &[NabFile], names: &[String], repeat: u32) -> anyhow::Result<String> {
    let rows: usize = corpus.iter().map(|f| f.series.len()).sum();
    let mut out = format!(
        "detector throughput, one thread, {} files, {rows} samples per pass, best of {repeat}\n\n\
         | detector | samples/s/core | ns/sample |\n|---|---:|---:|\n",
        corpus.len()
    );
    for name in names {
        let params = named(name)?;
        let mut best = f64::INFINITY;
        let mut sink = 0.0;
        for _ in 0..repeat.max(1) {
            let start = Instant::now();
            for f in corpus {
                let mut d = params.build();
                for &(at, v) in &f.series {
                    if let Some(s) = d.score(at, v) {
                        sink += s.score;
                    }
                }
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        // `sink` keeps the optimizer from dropping the work.
        std::hint::black_box(sink);
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.1} |",
            rows as f64 / best,
            best * 1e9 / rows as f64
        );
        write_stdout(&format!("BENCH {name} {:.0}\n", rows as f64 / best))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(pairs: &[(&str, serde_json::Value)]) -> Settings {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn a_detector_argument_sets_parameters_and_lists_values_to_try() {
        assert_eq!(parse_detector("cad").expect("plain"), ("cad", vec![vec![]]));
        let (name, sets) = parse_detector("cad:max_active=3,direction=above").expect("set");
        assert_eq!(name, "cad");
        assert_eq!(
            sets,
            vec![set(&[
                ("max_active", json!(3)),
                ("direction", json!("above"))
            ])]
        );
        // Every combination of the listed values, in the order written.
        let (_, sets) =
            parse_detector("cad:stride=4|5,max_active=7,memory=500|1000").expect("list");
        assert_eq!(
            sets,
            vec![
                set(&[
                    ("stride", json!(4)),
                    ("max_active", json!(7)),
                    ("memory", json!(500))
                ]),
                set(&[
                    ("stride", json!(4)),
                    ("max_active", json!(7)),
                    ("memory", json!(1000))
                ]),
                set(&[
                    ("stride", json!(5)),
                    ("max_active", json!(7)),
                    ("memory", json!(500))
                ]),
                set(&[
                    ("stride", json!(5)),
                    ("max_active", json!(7)),
                    ("memory", json!(1000))
                ]),
            ]
        );
        let e = parse_detector("cad:stride")
            .expect_err("no value")
            .to_string();
        assert!(e.contains("\"stride\" is not KEY=VALUE"), "{e}");
    }

    #[test]
    fn one_detector_takes_one_value_per_parameter() {
        let DetectorParams::Cad(p) = named("cad:stride=3").expect("one value") else {
            panic!("not cad");
        };
        assert_eq!(p.stride, 3);
        let e = named("cad:stride=3|4").expect_err("a list").to_string();
        assert!(e.contains("only `detect eval` does"), "{e}");
    }
}
