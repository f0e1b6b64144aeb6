//! Multivariate scoring of a component's related metrics: a Gaussian mixture
//! (linfa-clustering) fitted over recent metric vectors, scoring each new
//! vector by how unlikely it is under the mixture.
//!
//! The mixture is refitted every `refit_every` vectors over the last `window`
//! ones, so the cost per sample is constant amortized. The negative log
//! likelihood of a new vector is turned into a robust z-score against the
//! training vectors' own likelihoods. Pure: values in, values out.

use std::collections::VecDeque;

use linfa::prelude::*;
use linfa_clustering::GaussianMixtureModel;
use ndarray::{Array1, Array2};

use super::stats::score_from_excess;
use super::{Error, Scored};

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
    /// Robust z of the negative log likelihood that scores 0.5.
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
    nll_median: f64,
    nll_spread: f64,
}

/// Per-component state of the multivariate detector.
#[derive(Clone, Debug)]
pub struct GmmDetector {
    params: GmmParams,
    dims: usize,
    history: VecDeque<Vec<f64>>,
    since_fit: usize,
    fitted: Option<Fitted>,
}

impl GmmDetector {
    pub fn new(params: GmmParams, dims: usize) -> Self {
        GmmDetector {
            history: VecDeque::with_capacity(params.window),
            params,
            dims,
            since_fit: 0,
            fitted: None,
        }
    }

    /// Scores one vector (one value per signal of the component), then
    /// learns from it. `Ok(None)` while warming up or when any value is
    /// missing: a partial vector is "no data", not a point to score.
    pub fn score(&mut self, x: &[f64]) -> Result<Option<Scored>, Error> {
        if x.len() != self.dims {
            return Err(Error::ScoreVector {
                expected: self.dims,
                got: x.len(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Ok(None);
        }
        let out = self.fitted.as_ref().map(|f| {
            let nll = f.nll(x);
            let z = (nll - f.nll_median) / f.nll_spread;
            Scored {
                score: score_from_excess(z, self.params.limit),
                baseline: f.nll_median,
                measure: z,
                time_to_threshold: None,
                judged: None,
            }
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
        scale.mapv_inplace(|s| if s > 1e-12 { s } else { 1.0 });
        let z = (&data - &center) / &scale;
        let dataset = DatasetBase::from(z.clone());
        let gmm = GaussianMixtureModel::params(self.params.clusters)
            .n_runs(1)
            .reg_covariance(1e-3)
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
            nll_median: 0.0,
            nll_spread: 1.0,
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
        let median = nlls[nlls.len() / 2];
        let mut dev: Vec<f64> = nlls.iter().map(|v| (v - median).abs()).collect();
        dev.sort_by(f64::total_cmp);
        fitted.nll_median = median;
        fitted.nll_spread = (1.4826 * dev[dev.len() / 2]).max(1e-6);
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
            if let Some(s) = d.score(&normal_vector(i)).expect("score") {
                max_clean = max_clean.max(s.score);
            }
        }
        assert!(max_clean < 0.5, "clean max score {max_clean}");
        // Same request rate, CPU doubled: each metric alone is in range, the
        // pair is not.
        let s = d
            .score(&[100.0, 100.0])
            .expect("score")
            .expect("warm detector scores");
        assert!(s.score > 0.9, "decoupled score {}", s.score);
    }

    #[test]
    fn warms_up_and_treats_partial_vectors_as_no_data() {
        let mut d = GmmDetector::new(GmmParams::default(), 2);
        for i in 0..99 {
            assert_eq!(d.score(&normal_vector(i)).expect("score"), None);
        }
        assert_eq!(d.score(&[1.0, f64::NAN]).expect("score"), None);
        assert!(d.score(&[1.0]).is_err());
    }
}
