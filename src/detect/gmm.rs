//! Multivariate scoring of a component's related metrics: a Gaussian mixture
//! (linfa-clustering) fitted over recent metric vectors, scoring each new
//! vector by how unlikely it is under the mixture.
//!
//! The mixture is refitted every `refit_every` vectors over the last `window`
//! ones and `window / 2` older ones spread over the last day
//! ([`SPAN_SECONDS`]), so the cost per sample is constant amortized and the
//! mixture has seen every hour of a daily swing, not only the last few
//! (`window` is ~4 h at a 30 s cycle; on the operational corpus each new
//! hour of the swing looked improbable to a mixture of the window alone). A new vector is
//! measured by how many nats its negative log likelihood exceeds the 99th
//! percentile of the training vectors' own (`limit` nats, 5 by default,
//! scores 0.5: e⁵ ≈ 150 times less likely than the least likely 1 % of
//! usual vectors). Not a z-score of the likelihood: a negative log
//! likelihood is skewed (half a chi-squared for a Gaussian), and on
//! signals that move in steps it takes a handful of values, so its spread
//! says little about its tail; a MAD-based z of 5 was passed by ~1 % of
//! usual vectors, and by every new step of a daily swing. That raw
//! score is then calibrated per component as the single-signal detectors'
//! are (`detectors::calibrate`): past the limit, the score is how rare the
//! raw score is among the component's recent ones, so `min_score` means the
//! same here as for `ewma` or `mad`, and a quiet component, whose raw
//! scores stay under the limit, raises nothing.
//!
//! Each signal is standardized by its spread over the window, floored at
//! [`RELATIVE_SCALE_FLOOR`] of its level and at its own step over
//! `√MIN_VARIANCE` (see [`resolution`]): a signal that is nearly constant
//! (a replication lag of a few milliseconds, a connection count that moves
//! by one) would otherwise make every small step look improbable.
//! Pure: values in, values out.

use std::collections::VecDeque;

use linfa::prelude::*;
use linfa_clustering::GaussianMixtureModel;
use ndarray::{Array1, Array2};

use super::detectors::calibrate::Rarity;
use super::stats::score_from_excess;
use super::{Direction, Error, Scored};

/// The least spread a signal is standardized by, as a share of its mean
/// level over the window (module docs).
pub const RELATIVE_SCALE_FLOOR: f64 = 0.05;

/// The least variance of a mixture component along each standardized axis
/// (added to its covariance's diagonal): a component cannot be narrower
/// than about a third of the signal's spread, so values that move in steps
/// (whole connections, replicas) do not become a lattice of tight
/// components between which every ordinary value looks improbable.
pub const MIN_VARIANCE: f64 = 0.1;

/// How far back the older training vectors reach: a day, so the mixture
/// has seen every hour of a daily swing, not only the last few hours
/// (`window` vectors are ~4 h at a 30 s cycle).
pub const SPAN_SECONDS: i64 = 86_400;
/// [`GmmParams::min_history_seconds`]'s default: two hours.
pub const MIN_HISTORY_SECONDS: f64 = 7200.0;

/// Validated parameters of the multivariate detector.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
pub struct GmmParams {
    /// Mixture components.
    pub clusters: usize,
    /// The latest vectors kept for fitting (plus `window / 2` older ones
    /// spread over the last day).
    pub window: usize,
    /// Refit after this many new vectors.
    pub refit_every: usize,
    /// Vectors needed before the first fit.
    pub warmup: usize,
    /// Seconds of the series the mixture must have seen before it scores:
    /// fitted to its first hour, the rest of the day is new to it. The
    /// default is the history the agent reads on becoming leader
    /// (`--warmup-history-seconds`), so a restart does not blind it; only
    /// a new component waits (its single-signal detectors do not).
    pub min_history_seconds: f64,
    /// Nats of negative log likelihood beyond the training vectors' 99th
    /// percentile that score 0.5.
    pub limit: f64,
    /// Per signal, in the mixture's order, the side whose departures
    /// count (`None`: both; empty: both for every signal). A value on its
    /// signal's harmless side (a connection ratio below its median) is
    /// judged as if it sat at the median: the vector scores as the likelier
    /// of the two, so a night's new low of a harmless signal is not a
    /// finding, while the others' departures still are.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub directions: Vec<Option<Direction>>,
}

impl Default for GmmParams {
    fn default() -> Self {
        GmmParams {
            clusters: 2,
            window: 500,
            refit_every: 100,
            warmup: 100,
            min_history_seconds: MIN_HISTORY_SECONDS,
            limit: 5.0,
            directions: Vec::new(),
        }
    }
}

/// A fitted mixture in standardized coordinates.
#[derive(Clone, Debug)]
struct Fitted {
    center: Array1<f64>,
    /// Each signal's median over the training vectors (raw units).
    median: Vec<f64>,
    scale: Array1<f64>,
    weights: Vec<f64>,
    means: Vec<Array1<f64>>,
    /// Cholesky factor of each component's precision matrix.
    precision_chol: Vec<Array2<f64>>,
    log_norm: Vec<f64>,
    /// The training vectors' 99th percentile of negative log likelihood.
    nll_q99: f64,
}

/// Per-component state of the multivariate detector.
#[derive(Clone, Debug)]
pub struct GmmDetector {
    params: GmmParams,
    dims: usize,
    /// The latest `window` vectors, with their times.
    history: VecDeque<(i64, Vec<f64>)>,
    /// Older vectors, one kept every `SPAN_SECONDS / (window / 2)` seconds
    /// as they leave `history`, for at most [`SPAN_SECONDS`]: a day of the
    /// series at a coarser step, so a daily swing's hours that left the
    /// recent window still train the mixture.
    older: VecDeque<(i64, Vec<f64>)>,
    since_fit: usize,
    fitted: Option<Fitted>,
    rarity: Rarity,
    /// When the first vector since the last reset was taken.
    first_at: Option<i64>,
}

impl GmmDetector {
    pub fn new(params: GmmParams, dims: usize) -> Self {
        GmmDetector {
            history: VecDeque::with_capacity(params.window),
            older: VecDeque::new(),
            params,
            dims,
            since_fit: 0,
            fitted: None,
            rarity: Rarity::default(),
            first_at: None,
        }
    }

    /// Scores one vector (one value per signal of the component) taken at
    /// `at` (seconds), then learns from it. `Ok(None)` while warming up
    /// (fewer than `warmup` vectors, or less than `min_history_seconds`
    /// of the series seen) or when any value is missing: a partial vector
    /// is "no data", not a point to score. The score is calibrated
    /// (module docs); `measure` is the nats beyond the training's 99th
    /// percentile, `baseline` that percentile.
    pub fn score(&mut self, at: i64, x: &[f64]) -> Result<Option<Scored>, Error> {
        if x.len() != self.dims {
            return Err(Error::ScoreVector {
                expected: self.dims,
                got: x.len(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Ok(None);
        }
        let first_at = *self.first_at.get_or_insert(at);
        let seen_enough = (at - first_at) as f64 >= self.params.min_history_seconds;
        let raw = self.fitted.as_ref().map(|f| {
            let nll = f.nll_judged(x, &self.params.directions);
            let excess = nll - f.nll_q99;
            (
                score_from_excess(excess, self.params.limit),
                f.nll_q99,
                excess,
            )
        });
        // Ranked while the history is still short too, so the calibration
        // has a memory when the scores start counting.
        let out = raw
            .and_then(|(raw, baseline, z)| {
                self.rarity.rank(at, raw).map(|r| Scored {
                    score: r.score,
                    baseline,
                    measure: z,
                    time_to_threshold: None,
                    judged: None,
                })
            })
            .filter(|_| seen_enough);
        if self.history.len() == self.params.window {
            if let Some(old) = self.history.pop_front() {
                self.keep_older(old);
            }
        }
        while self
            .older
            .front()
            .is_some_and(|(t, _)| *t < at - SPAN_SECONDS)
        {
            self.older.pop_front();
        }
        self.history.push_back((at, x.to_vec()));
        self.since_fit += 1;
        let due = match self.fitted {
            None => self.history.len() >= self.params.warmup,
            Some(_) => self.since_fit >= self.params.refit_every,
        };
        if due {
            self.fitted = Some(self.fit()?);
            self.since_fit = 0;
        }
        Ok(out)
    }

    /// Keeps a vector leaving the recent window if it is a stride after
    /// the last one kept (module docs).
    fn keep_older(&mut self, (at, x): (i64, Vec<f64>)) {
        let slots = (self.params.window / 2).max(1);
        let stride = SPAN_SECONDS / slots as i64;
        if self.older.back().is_some_and(|(t, _)| at - t < stride) {
            return;
        }
        if self.older.len() == slots {
            self.older.pop_front();
        }
        self.older.push_back((at, x));
    }

    /// The vectors the mixture is fitted to: the older ones, then the
    /// recent window.
    fn training(&self) -> impl Iterator<Item = &Vec<f64>> {
        self.older.iter().chain(&self.history).map(|(_, x)| x)
    }

    pub fn reset(&mut self) {
        self.history.clear();
        self.older.clear();
        self.fitted = None;
        self.since_fit = 0;
        self.rarity.clear();
        self.first_at = None;
    }

    fn fit(&self) -> Result<Fitted, Error> {
        let n = self.history.len() + self.older.len();
        let d = self.dims;
        let mut data = Array2::<f64>::zeros((n, d));
        for (i, row) in self.training().enumerate() {
            for (j, v) in row.iter().enumerate() {
                data[[i, j]] = *v;
            }
        }
        let center = data.mean_axis(ndarray::Axis(0)).unwrap_or(Array1::zeros(d));
        let mut scale = data.std_axis(ndarray::Axis(0), 0.0);
        for (j, (s, c)) in scale.iter_mut().zip(center.iter()).enumerate() {
            let step = resolution(data.column(j).iter().copied());
            *s = s
                .max(RELATIVE_SCALE_FLOOR * c.abs())
                .max(step / MIN_VARIANCE.sqrt());
            if *s <= 1e-12 {
                *s = 1.0;
            }
        }
        let z = (&data - &center) / &scale;
        let dataset = DatasetBase::from(z.clone());
        let gmm = GaussianMixtureModel::params(self.params.clusters)
            .n_runs(1)
            .reg_covariance(MIN_VARIANCE)
            .max_n_iterations(100)
            .fit(&dataset)
            .map_err(|e| Error::FitMixture(e.to_string()))?;
        let median = (0..d)
            .map(|j| {
                let mut col = data.column(j).to_vec();
                let mid = col.len() / 2;
                *col.select_nth_unstable_by(mid, f64::total_cmp).1
            })
            .collect();
        let mut fitted = Fitted {
            center,
            median,
            scale,
            weights: gmm.weights().to_vec(),
            means: gmm.means().outer_iter().map(|m| m.to_owned()).collect(),
            precision_chol: Vec::new(),
            log_norm: Vec::new(),
            nll_q99: 0.0,
        };
        for p in gmm.precisions().outer_iter() {
            let l = cholesky(&p.to_owned()).ok_or(Error::FitMixture(
                "a component's precision matrix is not positive definite".into(),
            ))?;
            // log det(P) = 2 Σ log L_ii
            let logdet: f64 = (0..d).map(|i| l[[i, i]].ln()).sum::<f64>() * 2.0;
            fitted
                .log_norm
                .push(0.5 * logdet - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln());
            fitted.precision_chol.push(l);
        }
        let mut nlls: Vec<f64> = self.training().map(|r| fitted.nll(r)).collect();
        nlls.sort_by(f64::total_cmp);
        fitted.nll_q99 = nlls[((nlls.len() - 1) as f64 * 0.99) as usize];
        Ok(fitted)
    }
}

impl Fitted {
    /// Negative log likelihood of a raw vector, not counting its
    /// departures on a signal's harmless side (`directions`): the least of
    /// `x`'s and that of `x` with each such value moved to its signal's
    /// median.
    fn nll_judged(&self, x: &[f64], directions: &[Option<Direction>]) -> f64 {
        let mut moved: Option<Vec<f64>> = None;
        for (j, (side, &m)) in directions.iter().zip(&self.median).enumerate() {
            let harmless = match side {
                Some(Direction::Above) => x[j] < m,
                Some(Direction::Below) => x[j] > m,
                None => false,
            };
            if harmless {
                moved.get_or_insert_with(|| x.to_vec())[j] = m;
            }
        }
        let nll = self.nll(x);
        moved.map_or(nll, |y| nll.min(self.nll(&y)))
    }

    /// Negative log likelihood of a raw (unstandardized) vector.
    fn nll(&self, x: &[f64]) -> f64 {
        let d = x.len();
        let z: Vec<f64> = (0..d)
            .map(|j| (x[j] - self.center[j]) / self.scale[j])
            .collect();
        // log Σ_k w_k N(z | μ_k, Σ_k), with log-sum-exp for stability.
        let mut terms = Vec::with_capacity(self.weights.len());
        for k in 0..self.weights.len() {
            let l = &self.precision_chol[k];
            // Mahalanobis distance ‖Lᵀ(z − μ)‖² where P = L Lᵀ.
            let mut m = 0.0;
            for col in 0..d {
                let mut acc = 0.0;
                for row in col..d {
                    acc += l[[row, col]] * (z[row] - self.means[k][row]);
                }
                m += acc * acc;
            }
            terms.push(self.weights[k].max(1e-300).ln() + self.log_norm[k] - 0.5 * m);
        }
        let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = terms.iter().map(|t| (t - top).exp()).sum();
        -(top + sum.ln())
    }
}

/// The smallest gap between two distinct values of a signal (0 for fewer
/// than two): its step, for one that moves in whole connections or
/// replicas. A signal is standardized by at least its step over the
/// narrowest component's spread (`√MIN_VARIANCE`), so one step beyond
/// the values of the window is never more than one such spread away:
/// a daily swing reaching one connection more than the last hours did is
/// not improbable. For a continuous signal the step is negligible and
/// nothing changes. Gaps under a 10⁻⁹ share of the values' size are float
/// noise (0.29 and 0.29000000000000004), not steps.
fn resolution(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    let size = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    v.windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&g| g > 1e-9 * size)
        .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.min(g))))
        .unwrap_or(0.0)
}

/// Lower-triangular L with A = L Lᵀ, or `None` if A is not positive definite.
fn cholesky(a: &Array2<f64>) -> Option<Array2<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= l[[i, k]] * l[[j, k]];
            }
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[[i, j]] = s.sqrt();
            } else {
                l[[i, j]] = s / l[[j, j]];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two correlated signals (requests and CPU rise together), with a
    /// deterministic wiggle instead of randomness.
    fn normal_vector(i: usize) -> [f64; 2] {
        let load = 100.0 + 20.0 * ((i as f64) * 0.07).sin() + ((i * 7919) % 13) as f64 * 0.3;
        [load, 0.5 * load + ((i * 104_729) % 11) as f64 * 0.1]
    }

    #[test]
    fn quiet_on_correlated_metrics_and_fires_when_they_decouple() {
        let mut d = GmmDetector::new(GmmParams::default(), 2);
        let mut max_clean: f64 = 0.0;
        for i in 0..600 {
            if let Some(s) = d.score(i as i64 * 30, &normal_vector(i)).expect("score") {
                max_clean = max_clean.max(s.score);
            }
        }
        assert!(max_clean < 0.5, "clean max score {max_clean}");
        // Same request rate, CPU doubled: each metric alone is in range, the
        // pair is not.
        let s = d
            .score(600 * 30, &[100.0, 100.0])
            .expect("score")
            .expect("warm detector scores");
        assert!(s.score > 0.9, "decoupled score {}", s.score);
    }

    /// A standard normal draw for sample `i` (Box–Muller over SplitMix64).
    fn gauss(i: usize, stream: u64) -> f64 {
        let u = |k: u64| {
            let mut z = (i as u64 * 8 + stream * 2 + k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        (-2.0 * (1.0 - u(0)).ln()).sqrt() * (2.0 * std::f64::consts::PI * u(1)).cos()
    }

    /// The operational corpus's gateway at a 30 s cycle: a request rate
    /// on the daily swing with 3 % noise, a flat p99 latency and error
    /// rate.
    fn ops_gateway(i: usize) -> [f64; 3] {
        let t = i as f64 * 30.0;
        let load = 1.0 + 0.2 * (2.0 * std::f64::consts::PI * t / 86_400.0).sin();
        [
            200.0 * load * (1.0 + 0.03 * gauss(i, 0)),
            0.09 * (1.0 + 1e-5 * gauss(i, 1)),
            0.001 * (1.0 + 0.01 * gauss(i, 2)),
        ]
    }

    /// Finding episodes (hours they open at) over two days of `series`.
    fn episodes<const D: usize>(series: fn(usize) -> [f64; D]) -> Vec<usize> {
        let mut d = GmmDetector::new(GmmParams::default(), D);
        let mut open = Vec::new();
        let mut was = false;
        for i in 0..2 * 86_400 / 30 {
            let s = d.score(i as i64 * 30, &series(i)).expect("score");
            let hit = s.is_some_and(|s| s.score >= 0.5);
            if hit && !was {
                open.push(i * 30 / 3600);
            }
            was = hit;
        }
        open
    }

    #[test]
    fn two_quiet_days_of_a_continuous_daily_swing_raise_nothing() {
        // Fitted on the last 500 vectors only (~4 h), the mixture found
        // the swing's new hours improbable at hours 11, 21, 45 and 46; with
        // the older vectors spread over the day, it has seen them.
        assert_eq!(episodes(ops_gateway), Vec::<usize>::new());
    }

    /// The operational corpus's database (`autopilot detect ops`) at the
    /// agent's 30 s cycle: a replication lag that does not move at all,
    /// and a connection ratio in whole connections of 100 that follows a
    /// daily swing of 40 % peak to trough with noise of ±3 connections.
    fn ops_database(i: usize) -> [f64; 2] {
        let t = i as f64 * 30.0;
        let load = 1.0 + 0.2 * (2.0 * std::f64::consts::PI * t / 86_400.0).sin();
        // Gaussian noise (Box–Muller over a SplitMix64 of the index).
        let u = |k: u64| {
            let mut z = (i as u64 * 2 + k).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let gauss = (-2.0 * (1.0 - u(0)).ln()).sqrt() * (2.0 * std::f64::consts::PI * u(1)).cos();
        [0.2, (40.0 * load * (1.0 + 0.03 * gauss)).round() / 100.0]
    }

    #[test]
    fn two_quiet_days_of_a_stepwise_daily_swing_raise_nothing() {
        // Without the step floor and the day's older vectors, 7 episodes
        // (hours 10, 23, 23, 24, 44, 45, 47); either one alone clears them
        // here (on the operational corpus it takes both).
        assert_eq!(episodes(ops_database), Vec::<usize>::new());
    }

    #[test]
    fn a_departure_on_a_harmless_side_is_not_a_finding_and_the_other_sides_still_are() {
        let day = 86_400 / 30;
        let warm = |directions: Vec<Option<Direction>>| {
            let params = GmmParams {
                directions,
                ..GmmParams::default()
            };
            let mut d = GmmDetector::new(params, 2);
            for i in 0..day {
                let _ = d.score(i as i64 * 30, &ops_database(i)).expect("score");
            }
            d
        };
        let score = |d: &GmmDetector, v: [f64; 2]| {
            d.clone()
                .score(day as i64 * 30, &v)
                .expect("score")
                .expect("warm detector scores")
                .score
        };
        let both = warm(Vec::new());
        let above = warm(vec![Some(Direction::Above), Some(Direction::Above)]);
        // A day of connection ratios of 0.32–0.48: 0.10 is far below.
        let few_connections = [0.2, 0.10];
        assert!(score(&both, few_connections) > 0.9, "two-sided");
        assert!(
            score(&above, few_connections) < 0.5,
            "below, on the harmless side: {}",
            score(&above, few_connections)
        );
        // The harmful side of either signal, alone or with the other low.
        for v in [[0.2, 0.9], [1.0, 0.40], [1.0, 0.10]] {
            assert!(score(&above, v) > 0.9, "{v:?} scores {}", score(&above, v));
        }
        // A harmless side changes nothing for values on the other side.
        assert_eq!(score(&both, [0.2, 0.9]), score(&above, [0.2, 0.9]));
    }

    #[test]
    fn a_few_steps_beyond_a_stepwise_signals_window_are_not_improbable_but_a_jump_is() {
        // A lag that barely moves and a connection count that has taken
        // only 40 and 41 for the whole window (5 hours at 30 s).
        let v = |i: usize, connections: f64| {
            [
                0.002 + ((i * 7919) % 7) as f64 * 0.000_01,
                connections / 100.0,
            ]
        };
        let mut d = GmmDetector::new(GmmParams::default(), 2);
        for i in 0..600 {
            let c = 40.0 + ((i * 104_729) % 2) as f64;
            let _ = d.score(i as i64 * 30, &v(i, c)).expect("score");
        }
        let score = |c: f64| {
            d.clone()
                .score(600 * 30, &v(600, c))
                .expect("score")
                .expect("warm detector scores")
                .score
        };
        // 44 connections, three more than the window saw, as a daily swing
        // brings: no mixture component is narrower than one step, so it
        // is not improbable (it scored 1.0 with components a third of the
        // 5 % floor wide).
        assert!(score(44.0) < 0.5, "three steps beyond: {}", score(44.0));
        // 55: a jump of 14 steps.
        assert!(score(55.0) > 0.9, "a jump: {}", score(55.0));
        let step = resolution([0.32, 0.29, 0.29000000000000004, 0.3].into_iter());
        assert!((step - 0.01).abs() < 1e-12, "{step}");
        assert_eq!(resolution([5.0, 5.0].into_iter()), 0.0);
    }

    #[test]
    fn a_fresh_mixture_scores_only_once_it_has_seen_its_minimum_history() {
        let params = GmmParams {
            min_history_seconds: 3600.0,
            ..GmmParams::default()
        };
        let mut d = GmmDetector::new(params, 2);
        // At 15 s, the mixture is fitted after 100 vectors (25 minutes) but
        // says nothing, even of a decoupled pair, until an hour has passed.
        for i in 0..240 {
            let v = if i == 200 {
                [100.0, 100.0]
            } else {
                normal_vector(i)
            };
            assert_eq!(
                d.score(i as i64 * 15, &v).expect("score"),
                None,
                "vector {i}"
            );
        }
        assert!(d.fitted.is_some(), "fitted within the hour");
        assert!(
            d.score(240 * 15, &normal_vector(240))
                .expect("score")
                .is_some()
        );
        let s = d
            .score(241 * 15, &[100.0, 100.0])
            .expect("score")
            .expect("scores after an hour");
        assert!(s.score > 0.9, "decoupled score {}", s.score);
        // A reset (a gap in the data) starts the hour again.
        d.reset();
        assert_eq!(d.score(300 * 15, &normal_vector(300)).expect("score"), None);
    }

    #[test]
    fn warms_up_and_treats_partial_vectors_as_no_data() {
        let mut d = GmmDetector::new(GmmParams::default(), 2);
        for i in 0..99 {
            assert_eq!(
                d.score(i as i64 * 30, &normal_vector(i)).expect("score"),
                None
            );
        }
        assert_eq!(d.score(99 * 30, &[1.0, f64::NAN]).expect("score"), None);
        assert!(d.score(99 * 30, &[1.0]).is_err());
    }

    /// A day of a database's quiet signals as the sandbox plays them, at a
    /// 15 s cycle: a replication lag of a few milliseconds that barely
    /// moves, and a connection ratio in whole connections that follows a
    /// daily load swing of 40 % peak to trough.
    fn quiet_database(i: usize) -> [f64; 2] {
        let t = i as f64 * 15.0;
        let load = 1.0 + 0.2 * (2.0 * std::f64::consts::PI * t / 86_400.0).sin();
        let lag = 0.002 + ((i * 7919) % 7) as f64 * 0.000_01;
        let connections = (30.0 * load + ((i * 104_729) % 5) as f64 - 2.0).round();
        [lag, connections / 100.0]
    }

    #[test]
    fn a_quiet_day_of_near_constant_and_stepwise_signals_raises_nothing() {
        let mut d = GmmDetector::new(GmmParams::default(), 2);
        let day = 86_400 / 15;
        let mut findings = 0;
        let mut scored = 0;
        for i in 0..day {
            if let Some(s) = d.score(i as i64 * 15, &quiet_database(i)).expect("score") {
                scored += 1;
                if s.score >= 0.5 {
                    findings += 1;
                }
            }
        }
        // Unscored: the first two hours (`min_history`).
        assert!(scored > day - 7200 / 15 - 5, "scored {scored} of {day}");
        assert_eq!(findings, 0, "findings on a quiet day");
        // The lag jumping to a second, connections as usual: found.
        let at = day as i64 * 15;
        let mut v = quiet_database(day);
        v[0] = 1.0;
        let s = d
            .score(at, &v)
            .expect("score")
            .expect("warm detector scores");
        assert!(s.score > 0.99, "a second of lag scores {}", s.score);
    }
}
