//! `autopilot detect eval`: runs each candidate parameter set over the NAB
//! files and prints the full-corpus and leave-one-group-out tables.
//!
//! Running detectors, timing and progress on stderr live here; choosing and
//! scoring are the pure `detect::logo` and `detect::nab`.

use std::{fmt::Write as _, time::Instant};

use super::{NabFile, score_rows_with};
use crate::detect::{
    DetectorParams,
    detectors::DetectorKind,
    logo::{self, Corpus, Logo},
    nab::{self, Scored},
    search::{self, Rng},
};

pub struct Options {
    pub trials: u32,
    pub seed: u64,
    pub per_file: bool,
    /// Spec kinds calibrated per series (`DetectorParams::build_calibrated`).
    pub calibrated: bool,
}

/// One evaluated detector: its candidates' labels and scores (candidate →
/// file → row).
struct Evaluated {
    name: String,
    labels: Vec<String>,
    scores: Vec<Vec<Vec<f64>>>,
}

/// NAB's random detector: uniform scores, the generator reseeded for every
/// file (as NAB's `initialize` does).
fn random_scores(corpus: &[NabFile], seed: u64) -> Vec<Vec<f64>> {
    corpus
        .iter()
        .map(|f| {
            let mut rng = Rng::new(seed);
            f.series.iter().map(|_| rng.unit()).collect()
        })
        .collect()
}

fn params_label(p: &DetectorParams) -> String {
    serde_json::to_string(p).unwrap_or_else(|_| p.name().to_string())
}

/// Runs every candidate of `name` over the corpus, with progress on stderr.
fn evaluate(corpus: &[NabFile], name: &str, o: &Options) -> anyhow::Result<Evaluated> {
    // NAB's baselines have nothing to set; without this, `random:seed=3`
    // would be called an unknown detector, though `random` is listed.
    if let Some((base @ ("random" | "null"), given)) = name.split_once(':') {
        let seed = match base {
            "random" => "; its seed is --seed",
            _ => "",
        };
        anyhow::bail!("{base} takes no parameters (got {given:?}){seed}");
    }
    let (labels, scores) = match name {
        "random" => (
            vec![format!("seed {}", o.seed)],
            vec![random_scores(corpus, o.seed)],
        ),
        "null" => (
            vec!["never fires".to_string()],
            vec![corpus.iter().map(|f| vec![0.0; f.series.len()]).collect()],
        ),
        _ => {
            let (base, sets) = super::parse_detector(name)?;
            let kind = DetectorKind::from_name(base)
                .filter(|k| k.default_params().is_some())
                .ok_or_else(|| super::unknown_detector(base, &["random", "null"]))?;
            // Parameters the argument sets hold in every candidate: the
            // search draws the others (the same draws as without them).
            // Listed values (`stride=4|5`) are each tried with every draw.
            let mut candidates: Vec<DetectorParams> = Vec::new();
            for drawn in search::candidates(kind, o.trials, o.seed) {
                for set in &sets {
                    let p = drawn
                        .with(set)
                        .map_err(|e| anyhow::anyhow!("--detector {name}: {e}"))?;
                    if !candidates.contains(&p) {
                        candidates.push(p);
                    }
                }
            }
            let mut scores = Vec::with_capacity(candidates.len());
            for (i, p) in candidates.iter().enumerate() {
                let start = Instant::now();
                let build = || match o.calibrated {
                    true => p.build_calibrated(),
                    false => p.build(),
                };
                scores.push(
                    corpus
                        .iter()
                        .map(|f| score_rows_with(build(), &f.series))
                        .collect(),
                );
                eprintln!(
                    "eval: {name} candidate {}/{} scored in {:.1}s: {}",
                    i + 1,
                    candidates.len(),
                    start.elapsed().as_secs_f64(),
                    params_label(p)
                );
            }
            (candidates.iter().map(params_label).collect(), scores)
        }
    };
    Ok(Evaluated {
        name: name.to_string(),
        labels,
        scores,
    })
}

pub fn eval(corpus: &[NabFile], names: &[String], o: &Options) -> anyhow::Result<String> {
    let rows: usize = corpus.iter().map(|f| f.series.len()).sum();
    let windows: usize = corpus.iter().map(|f| f.labels.windows()).sum();
    let logo_corpus = Corpus {
        files: corpus.iter().map(|f| &f.labels).collect(),
        groups: corpus.iter().map(|f| logo::group_of(&f.name)).collect(),
    };
    let mut evaluated = Vec::new();
    for name in names {
        evaluated.push(evaluate(corpus, name, o)?);
    }
    let mut out = format!(
        "NAB over {} files ({rows} rows, {windows} windows); {} candidate(s) per detector \
         (--trials {} --seed {}{})\n",
        corpus.len(),
        o.trials.max(1),
        o.trials,
        o.seed,
        if o.calibrated { " --calibrated" } else { "" }
    );
    let details = full_corpus(&mut out, corpus, &evaluated, o.per_file);
    let held_out = logo_corpus.labelled_groups();
    if held_out.len() < 2 {
        // Holding out the only group leaves nothing to choose on: a table
        // of zeros would read as a score.
        let _ = write!(
            out,
            "\n## Leave one group out: not computed\n\n\
             The corpus has {} group(s) with labelled windows ({}); holding one out \
             needs another to choose the parameters and threshold on. The full-corpus \
             figures above chose their threshold on the same files: an upper bound.\n",
            held_out.len(),
            held_out.join(", ")
        );
    } else {
        leave_one_group_out(&mut out, &logo_corpus, &held_out, &evaluated);
    }
    out.push_str(&details);
    Ok(out)
}

/// The full-corpus table: the defaults (first candidate), threshold chosen
/// on the same files. NAB's own rules, and what the scoreboard reports.
/// Returns the per-file details when asked for.
fn full_corpus(
    out: &mut String,
    corpus: &[NabFile],
    evaluated: &[Evaluated],
    per_file: bool,
) -> String {
    let profiles = nab::PROFILES;
    out.push_str(
        "\n## Full corpus: default parameters, one threshold chosen on the same files\n\n\
         | detector | standard | reward low FP | reward low FN | threshold (standard) | TP | FP | FN |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut details = String::new();
    for e in evaluated {
        let all: Vec<Scored> = corpus
            .iter()
            .zip(&e.scores[0])
            .map(|(f, s)| (&f.labels, s.as_slice()))
            .collect();
        let sweeps: Vec<_> = profiles.iter().map(|(_, p)| nab::sweep(&all, *p)).collect();
        let c = sweeps[0].counts;
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.6} | {} | {} | {} |",
            e.name,
            sweeps[0].normalized,
            sweeps[1].normalized,
            sweeps[2].normalized,
            sweeps[0].threshold,
            c.tp,
            c.fp,
            c.fn_
        );
        if per_file {
            let t = sweeps[0].threshold;
            let _ = writeln!(details, "\n{} at threshold {t:.6} (standard):", e.name);
            for (f, s) in corpus.iter().zip(&e.scores[0]) {
                let c = f.labels.score(s, t, nab::STANDARD);
                let _ = writeln!(
                    details,
                    "  {:<60} raw {:>7.3}  tp {} fp {} fn {}",
                    f.name, c.raw, c.tp, c.fp, c.fn_
                );
            }
        }
    }
    details
}

/// The leave-one-group-out tables, per profile: the headline, the
/// per-group folds, and what the same procedure chooses on every group.
fn leave_one_group_out(
    out: &mut String,
    logo_corpus: &Corpus,
    held_out: &[&str],
    evaluated: &[Evaluated],
) {
    let profiles = nab::PROFILES;
    let mut logos: Vec<Vec<Logo>> = Vec::new();
    let mut chosen = Vec::new();
    for e in evaluated {
        let start = Instant::now();
        let ranked = logo_corpus.rank(&e.scores);
        logos.push(
            profiles
                .iter()
                .map(|(_, p)| logo::leave_one_group_out(logo_corpus, &ranked, *p))
                .collect(),
        );
        chosen.push(logo::choose(logo_corpus, &ranked, nab::STANDARD, |_| true));
        eprintln!(
            "eval: {} leave-one-group-out in {:.1}s",
            e.name,
            start.elapsed().as_secs_f64()
        );
    }
    let _ = write!(
        out,
        "\n## Leave one group out: parameters and threshold chosen on the other groups\n\n\
         Held out in turn: {}. Headline: mean of the held-out groups' scores.\n\n\
         | detector | candidates | standard | reward low FP | reward low FN |\n\
         |---|---:|---:|---:|---:|\n",
        held_out.join(", ")
    );
    for (e, l) in evaluated.iter().zip(&logos) {
        let _ = writeln!(
            out,
            "| {} | {} | **{:.1}** | {:.1} | {:.1} |",
            e.name,
            e.labels.len(),
            l[0].mean(),
            l[1].mean(),
            l[2].mean()
        );
    }
    out.push_str(
        "\n## Per held-out group\n\n\
         Scores per profile; the threshold, training score, counts and candidate are the \
         standard profile's.\n\n\
         | detector | held out | standard | reward low FP | reward low FN | threshold | train | TP | FP | FN | candidate |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (e, l) in evaluated.iter().zip(&logos) {
        for (i, f) in l[0].folds.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.6} | {:.1} | {} | {} | {} | {} |",
                e.name,
                f.group,
                f.score,
                l[1].folds.get(i).map_or(f64::NAN, |x| x.score),
                l[2].folds.get(i).map_or(f64::NAN, |x| x.score),
                f.threshold,
                f.train,
                f.counts.tp,
                f.counts.fp,
                f.counts.fn_,
                f.candidate + 1
            );
        }
    }
    // What the same procedure picks on every group: the parameter set the
    // LOGO figure vouches for, and the one to make the default.
    out.push_str("\n## Chosen on all groups (standard profile)\n\n");
    for ((e, l), chosen) in evaluated.iter().zip(&logos).zip(&chosen) {
        if let Some((c, s)) = *chosen {
            let folds: Vec<String> = l[0]
                .folds
                .iter()
                .map(|f| (f.candidate + 1).to_string())
                .collect();
            let _ = writeln!(
                out,
                "- {}: candidate {} of {} (folds chose {}), full-corpus {:.1} at {:.6}: {}",
                e.name,
                c + 1,
                e.labels.len(),
                folds.join(", "),
                s.normalized,
                s.threshold,
                e.labels[c]
            );
        }
    }
}
