//! The univariate online detectors, one file each by family: EWMA z-score,
//! robust median/MAD, a seasonal (time-of-period) baseline, two-sided CUSUM
//! change points and NAB's baselines (`classic.rs`); a Holt trend forecast
//! with time to threshold (`forecast.rs`); a contextual novelty detector
//! (`context.rs`); CAD OSE's contexts learnt online (`cad.rs`); relative
//! entropy over a sliding histogram (`entropy.rs`); a k-NN conformal
//! detector (`knn.rs`); a robust seasonal decomposition (`decompose.rs`);
//! an ensemble by calibrated rank (`rank.rs`). Here: the trait, what a
//! score carries, and building a detector from its parameters.
//!
//! Each detector keeps its own state for one series and costs O(1) per sample
//! (MAD: O(window), a constant). Scores are computed *before* the sample is
//! folded into the state, so an anomaly does not hide itself. A detector
//! returns `None` while warming up and for non-finite values: "no score" is
//! never the same as a score of zero. Pure: no clock (timestamps come with the
//! samples), no I/O.

mod cad;
pub mod calibrate;
mod classic;
mod context;
mod decompose;
mod entropy;
mod forecast;
mod knn;
mod params;
mod rank;

use cad::CadDetector;
use calibrate::Calibrated;
use classic::{
    CusumDetector, DiffDetector, EnsembleDetector, EwmaDetector, GaussianDetector, MadDetector,
    SeasonalDetector,
};
use context::ContextDetector;
use decompose::DecomposeDetector;
use entropy::EntropyDetector;
use forecast::ForecastDetector;
pub use forecast::human_duration;
use knn::KnnDetector;
pub use params::{CadParams, DetectorKind, DetectorParams, Direction, defaults};
use rank::RankDetector;

impl DetectorParams {
    /// A fresh detector state for one series of a model spec: [`build`]'s,
    /// with its scores calibrated per series (`calibrate.rs`) for the kinds
    /// that [`DetectorKind::calibrated`] says, so a spec's `threshold` and a
    /// runbook's `min_score` mean the same for each of them.
    ///
    /// [`build`]: DetectorParams::build
    pub fn build_calibrated(&self) -> Box<dyn Detector> {
        let d = self.build();
        if self.kind().calibrated() {
            Box::new(Calibrated::new(d))
        } else {
            d
        }
    }

    /// A fresh detector state for one series, raw scores (what `detect
    /// score|eval|bench` use).
    pub fn build(&self) -> Box<dyn Detector> {
        match self.clone() {
            DetectorParams::Ewma {
                alpha,
                half_life_seconds,
                warmup,
                limit,
            } => Box::new(EwmaDetector::new(alpha, half_life_seconds, warmup, limit)),
            DetectorParams::Mad {
                window,
                window_seconds,
                warmup,
                limit,
            } => Box::new(MadDetector::new(window, window_seconds, warmup, limit)),
            DetectorParams::Seasonal {
                period_seconds,
                buckets,
                alpha,
                min_cycles,
                limit,
            } => Box::new(SeasonalDetector::new(
                period_seconds,
                buckets,
                alpha,
                min_cycles,
                limit,
            )),
            DetectorParams::Cusum {
                alpha,
                half_life_seconds,
                k,
                warmup,
                limit,
            } => Box::new(CusumDetector::new(
                alpha,
                half_life_seconds,
                k,
                warmup,
                limit,
            )),
            DetectorParams::Forecast {
                alpha,
                half_life_seconds,
                beta,
                trend_half_life_seconds,
                threshold,
                direction,
                horizon_seconds,
                warmup,
            } => Box::new(ForecastDetector::new(
                forecast::Weights {
                    alpha,
                    half_life_seconds,
                    beta,
                    trend_half_life_seconds,
                },
                threshold,
                direction,
                horizon_seconds,
                warmup,
            )),
            DetectorParams::Gaussian { window, step } => {
                Box::new(GaussianDetector::new(window, step))
            }
            DetectorParams::Diff { inner } => Box::new(DiffDetector::new(inner.build())),
            DetectorParams::Ensemble {
                members,
                refractory,
            } => Box::new(EnsembleDetector::new(
                members.iter().map(DetectorParams::build).collect(),
                refractory,
            )),
            DetectorParams::Context {
                levels,
                order,
                rest,
                warmup,
                max_contexts,
            } => Box::new(ContextDetector::new(
                levels,
                order,
                rest,
                warmup,
                max_contexts,
            )),
            DetectorParams::Cad(p) => Box::new(CadDetector::new(p)),
            DetectorParams::Entropy {
                window,
                bins,
                refs,
                rest,
                warmup,
            } => Box::new(EntropyDetector::new(window, bins, refs, rest, warmup)),
            DetectorParams::Knn {
                dim,
                train,
                calib,
                k,
                rest,
            } => Box::new(KnnDetector::new(dim, train, calib, k, rest)),
            DetectorParams::Decompose {
                period_seconds,
                buckets,
                cycles,
                window,
                limit,
                rest,
                warmup,
            } => Box::new(DecomposeDetector::new(
                period_seconds,
                buckets,
                cycles,
                window,
                limit,
                rest,
                warmup,
            )),
            DetectorParams::Rank {
                members,
                memory,
                fisher,
                rest,
            } => Box::new(RankDetector::new(
                members.iter().map(DetectorParams::build).collect(),
                memory,
                fisher,
                rest,
            )),
        }
    }
}

/// The result of scoring one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Anomaly score in `[0, 1]`; 0.5 means "at the detector's limit" (raw;
    /// a spec's series see it calibrated, `calibrate.rs`).
    pub score: f64,
    /// What the sample was compared against (mean, median, slot mean, level).
    pub baseline: f64,
    /// The detector's own measure: z, CUSUM sum, or seconds to threshold.
    pub measure: f64,
    /// Forecasts only: expected seconds until the threshold is crossed.
    pub time_to_threshold: Option<f64>,
    /// What the sample was judged against, for detectors that compare with
    /// a baseline and a spread (`None` for the others).
    pub judged: Option<Judged>,
}

/// The baseline a score was judged against: its centre, its spread (the σ
/// the z-score divided by) and how far back it reaches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judged {
    pub baseline: f64,
    pub spread: f64,
    pub span: Span,
}

/// How far back a baseline reaches, before the sample judged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Span {
    /// The last `n` samples (for exponential weights: those carrying 95% of
    /// the weight).
    Samples(u64),
    /// The last `n` seconds (a seasonal slot: its periods).
    Seconds(i64),
}

/// One series' detector state.
pub trait Detector: Send {
    /// Name, as in [`DetectorParams::name`].
    fn name(&self) -> &'static str;
    /// Scores `value` observed at unix second `at`, then learns from it.
    /// `None` while warming up or when `value` is not finite.
    fn score(&mut self, at: i64, value: f64) -> Option<Scored>;
    /// Forgets everything (after a gap or a counter reset).
    fn reset(&mut self);
    /// One line for humans about a score this detector produced.
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String;
}
