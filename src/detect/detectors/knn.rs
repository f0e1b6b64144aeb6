//! A k-nearest-neighbour conformal detector, after KNN-CAD (Burnaev and
//! Ishimtsev, "Conformalized density- and distance-based anomaly detection
//! in time-series data", 2016).
//!
//! Written from the idea. The series is embedded as vectors of its last
//! `dim` values. A vector's non-conformity is the summed distance to its `k`
//! nearest neighbours among the last `train` vectors that do not overlap it
//! (so a vector is never explained by its own shifted copy). Its p-value is
//! the share of the last `calib` non-conformities at least as large (plus
//! one, the conformal rule), and the score is one minus it; past the largest
//! calibration value the p-value keeps shrinking in proportion, so large
//! anomalies stay rankable. One alarm per episode for `rest` samples.
//!
//! Cost per sample: `train × dim` operations. Memory per series: the last
//! `train + 2·dim` values (every vector is a slice of them, kept contiguous
//! in a mirrored ring) and `calib` non-conformities in a sorted window: with
//! the defaults (dim 8, train 256, calib 256) about 10.6 KB. Pure.

use super::{Detector, DetectorKind, Scored};
use crate::detect::stats::{Episodes, SortedWindow};

/// At most this many neighbours (a fixed array on the stack).
pub const MAX_K: u32 = 32;

pub(super) struct KnnDetector {
    dim: usize,
    train: usize,
    k: usize,
    /// Values, each written twice (at `i` and `i + cap`) so that any run of
    /// up to `cap` consecutive values is one slice.
    ring: Vec<f64>,
    cap: usize,
    /// Index of the next write, and how many values were written (capped).
    pos: usize,
    len: usize,
    calib: SortedWindow,
    calib_cap: usize,
    episodes: Episodes,
}

impl KnnDetector {
    pub(super) fn new(dim: u32, train: u32, calib: u32, k: u32, rest: u32) -> Self {
        let dim = dim.clamp(1, 256) as usize;
        let train = train.clamp(2, 100_000) as usize;
        let cap = train + 2 * dim;
        let calib_cap = calib.clamp(10, 100_000) as usize;
        Self {
            dim,
            train,
            k: (k.clamp(1, MAX_K) as usize).min(train),
            ring: vec![0.0; 2 * cap],
            cap,
            pos: 0,
            len: 0,
            calib: SortedWindow::new(calib_cap),
            calib_cap,
            episodes: Episodes::new(u64::from(rest)),
        }
    }

    /// Bytes of state at capacity.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + 8 * self.ring.len() + self.calib.bytes_at_capacity()
    }

    fn push(&mut self, x: f64) {
        self.ring[self.pos] = x;
        self.ring[self.pos + self.cap] = x;
        self.pos = (self.pos + 1) % self.cap;
        self.len = (self.len + 1).min(self.cap);
    }

    /// The `n` values ending `back` samples before the newest (0 = newest).
    fn slice(&self, back: usize, n: usize) -> &[f64] {
        let end = self.pos + self.cap - back;
        &self.ring[end - n..end]
    }

    /// Non-conformity of the newest vector, or `None` before `k` training
    /// vectors exist.
    fn nonconformity(&self) -> Option<f64> {
        let available = self.len.checked_sub(2 * self.dim - 1)?.min(self.train);
        if available < self.k {
            return None;
        }
        let me = self.slice(0, self.dim);
        let mut best = [f64::INFINITY; MAX_K as usize];
        let best = &mut best[..self.k];
        for j in 0..available {
            // Vectors ending `dim + j` samples back: no overlap with `me`.
            let other = self.slice(self.dim + j, self.dim);
            let d2: f64 = me.iter().zip(other).map(|(a, b)| (a - b) * (a - b)).sum();
            if d2 < best[self.k - 1] {
                let mut i = self.k - 1;
                while i > 0 && best[i - 1] > d2 {
                    best[i] = best[i - 1];
                    i -= 1;
                }
                best[i] = d2;
            }
        }
        Some(best.iter().map(|d2| d2.sqrt()).sum())
    }

    /// Conformal p-value of `alpha` against the calibration window.
    fn p_value(&self, alpha: f64) -> f64 {
        let n = self.calib.len() as f64;
        let ge = self.calib.count_at_least(alpha) as f64;
        let p = (ge + 1.0) / (n + 1.0);
        match self.calib.max() {
            // Beyond every calibration value: shrink with the excess.
            Some(m) if alpha > m && alpha > 0.0 => p * (m / alpha),
            _ => p,
        }
    }
}

impl Detector for KnnDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Knn.name()
    }
    fn score(&mut self, _at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        self.push(x);
        let alpha = self.nonconformity();
        let ready = self.calib.len() >= self.calib_cap.min(100);
        let out = match alpha {
            Some(a) if ready => {
                let raw = 1.0 - self.p_value(a);
                Some(Scored {
                    score: self.episodes.damp(raw),
                    baseline: self.calib.median().unwrap_or(0.0),
                    measure: a,
                    time_to_threshold: None,
                    judged: None,
                })
            }
            _ => {
                self.episodes.damp(0.0);
                None
            }
        };
        if let Some(a) = alpha {
            self.calib.push(a);
        }
        out
    }
    fn reset(&mut self) {
        self.pos = 0;
        self.len = 0;
        self.calib.clear();
        self.episodes.clear();
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "the last {} samples of {signal} (now {value:.4}) are far from every similar stretch of its last {}: distance {:.4} to its {} nearest against a usual {:.4}",
            self.dim, self.train, s.measure, self.k, s.baseline
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut KnnDetector, xs: &[f64]) -> Vec<Option<f64>> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| d.score(i as i64 * 300, x).map(|s| s.score))
            .collect()
    }

    fn wave(i: usize) -> f64 {
        (i as f64 * std::f64::consts::TAU / 24.0).sin() + 0.01 * ((i * 37) % 11) as f64
    }

    #[test]
    fn a_repeating_shape_is_not_surprising_and_a_new_shape_is() {
        let mut d = KnnDetector::new(6, 200, 200, 3, 0);
        let mut xs: Vec<f64> = (0..1500).map(wave).collect();
        // Within the usual range, but flat where it should swing.
        xs.extend([0.5; 12]);
        let s = run(&mut d, &xs);
        assert!(s[..100].iter().all(Option::is_none), "warm-up");
        let late: Vec<f64> = s[1000..1500].iter().flatten().copied().collect();
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!(mean < 0.7, "learned shape still surprising: mean {mean}");
        let brk = s[1500..].iter().flatten().copied().fold(0.0, f64::max);
        assert!(brk > 0.995, "new shape scored {brk}");
        // Far beyond every calibration value: still rankable, not 1.
        let mut e = KnnDetector::new(6, 200, 200, 3, 0);
        let mut ys: Vec<f64> = (0..1500).map(wave).collect();
        ys.push(1000.0);
        let t = run(&mut e, &ys);
        let big = t[1500].expect("scored");
        assert!(big > brk && big < 1.0, "{big} vs {brk}");
    }

    #[test]
    fn memory_is_bounded_by_train_and_calib() {
        let mut d = KnnDetector::new(8, 256, 256, 5, 0);
        let before = d.bytes();
        let _ = run(&mut d, &(0..10_000).map(wave).collect::<Vec<_>>());
        assert_eq!(d.bytes(), before);
        assert!(d.calib.len() <= 256 && d.len <= d.cap);
        assert!(before < 11 * 1024, "{before} bytes");
    }

    #[test]
    fn nan_is_not_scored_and_reset_forgets() {
        let mut d = KnnDetector::new(4, 50, 20, 3, 0);
        assert_eq!(d.score(0, f64::NAN), None);
        let _ = run(&mut d, &(0..300).map(wave).collect::<Vec<_>>());
        assert!(d.score(0, 0.5).is_some());
        assert_eq!(d.score(0, f64::NEG_INFINITY), None);
        d.reset();
        assert_eq!(d.calib.len(), 0);
        assert_eq!(d.score(0, 1.0), None);
    }
}
