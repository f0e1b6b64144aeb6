//! Multivariate scoring of a component's related metrics: a Gaussian mixture
//! (linfa-clustering) fitted over recent metric vectors, scoring each new
//! vector by how unlikely it is under the mixture.
//!
//! The mixture is refitted every `refit_every` vectors over the last `window`
//! ones, so the cost per sample is constant amortized. A new vector is
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
//! [`RELATIVE_SCALE_FLOOR`] of its level: a signal that is nearly constant
//! (a replication lag of a few milliseconds, a connection count that moves
//! by one) would otherwise make every small step look improbable.
//! Pure: values in, values out.

use std::collections::VecDeque;

use linfa::prelude::*;
use linfa_clustering::GaussianMixtureModel;
use ndarray::{Array1, Array2};

use super::detectors::calibrate::Rarity;
use super::stats::score_from_excess;
use super::{Error, Scored};

/// The least spread a signal is standardized by, as a share of its mean
/// level over the window (module docs).
pub const RELATIVE_SCALE_FLOOR: f64 = 0.05;

/// The least variance of a mixture component along each standardized axis
/// (added to its covariance's diagonal): a component cannot be narrower
/// than about a third of the signal's spread, so values that move in steps
/// (whole connections, replicas) do not become a lattice of tight
/// components between which every ordinary value looks improbable.
pub const MIN_VARIANCE: f64 = 0.1;

/// Validated parameters of the multivariate detector.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
pub struct GmmParams {
    /// Mixture components.
    pub clusters: usize,
    /// Vectors kept for fitting.
    pub window: usize,
    /// Refit after this many new vectors.
    pub refit_every: usize,
    /// Vectors needed before the first fit.
    pub warmup: usize,
    /// Nats of negative log likelihood beyond the training vectors' 99th
    /// percentile that score 0.5.
    pub limit: f64,
}

impl Default for GmmParams {
    fn default() -> Self {
        GmmParams {
            clusters: 2,
            window: 500,
            refit_every: 100,
            warmup: 100,
            limit: 5.0,
        }
    }
}

/// A fitted mixture in standardized coordinates.
#[derive(Clone, Debug)]
struct Fitted {
    center: Array1<f64>,
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
    history: VecDeque<Vec<f64>>,
    since_fit: usize,
    fitted: Option<Fitted>,
    rarity: Rarity,
}

impl GmmDetector {
    pub fn new(params: GmmParams, dims: usize) -> Self {
        GmmDetector {
            history: VecDeque::with_capacity(params.window),
            params,
            dims,
            since_fit: 0,
            fitted: None,
            rarity: Rarity::default(),
        }
    }

    /// Scores one vector (one value per signal of the component) taken at
    /// `at` (seconds), then learns from it. `Ok(None)` while warming up or
    /// when any value is missing: a partial vector is "no data", not a
    /// point to score. The score is calibrated (module docs); `measure` is
    /// the nats beyond the training's 99th percentile, `baseline` that
    /// percentile.
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
        let raw = self.fitted.as_ref().map(|f| {
            let nll = f.nll(x);
            let excess = nll - f.nll_q99;
            (
                score_from_excess(excess, self.params.limit),
                f.nll_q99,
                excess,
            )
        });
        let out = raw.and_then(|(raw, baseline, z)| {
            self.rarity.rank(at, raw).map(|r| Scored {
                score: r.score,
                baseline,
                measure: z,
                time_to_threshold: None,
                judged: None,
            })
        });
        if self.history.len() == self.params.window {
            self.history.pop_front();
        }
        self.history.push_back(x.to_vec());
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

    pub fn reset(&mut self) {
        self.history.clear();
        self.fitted = None;
        self.since_fit = 0;
        self.rarity.clear();
    }

    fn fit(&self) -> Result<Fitted, Error> {
        let n = self.history.len();
        let d = self.dims;
        let mut data = Array2::<f64>::zeros((n, d));
        for (i, row) in self.history.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                data[[i, j]] = *v;
            }
        }
        let center = data.mean_axis(ndarray::Axis(0)).unwrap_or(Array1::zeros(d));
        let mut scale = data.std_axis(ndarray::Axis(0), 0.0);
        for (s, c) in scale.iter_mut().zip(center.iter()) {
            *s = s.max(RELATIVE_SCALE_FLOOR * c.abs());
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
        let mut fitted = Fitted {
            center,
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
        let mut nlls: Vec<f64> = self.history.iter().map(|r| fitted.nll(r)).collect();
        nlls.sort_by(f64::total_cmp);
        fitted.nll_q99 = nlls[((nlls.len() - 1) as f64 * 0.99) as usize];
        Ok(fitted)
    }
}

impl Fitted {
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
        assert!(scored > day - 200, "scored {scored} of {day}");
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
