//! Small numeric helpers shared by the detectors: the score mapping, an
//! exponentially weighted mean/variance and a sorted sliding window.
//!
//! Pure arithmetic; no allocation beyond the window's own buffer.

use std::collections::VecDeque;

/// Maps a non-negative excess (a z-score, a CUSUM sum over its limit, a
/// horizon over a time to threshold) to a score in `[0, 1)`:
/// `x² / (x² + limit²)`. An excess equal to `limit` scores 0.5, so "score ≥
/// 0.5" reads as "beyond the detector's own limit" for every detector, and the
/// mapping never saturates, which keeps large anomalies rankable.
pub fn score_from_excess(x: f64, limit: f64) -> f64 {
    if !x.is_finite() {
        return if x == f64::INFINITY { 1.0 } else { 0.0 };
    }
    let x = x.max(0.0);
    let x2 = x * x;
    let l2 = limit * limit;
    if x2 + l2 == 0.0 { 0.0 } else { x2 / (x2 + l2) }
}

/// Complementary error function (Numerical Recipes' Chebyshev fit,
/// fractional error below 1.2e-7 everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Upper tail `P(X ≥ x)` of a chi-square variable with `k` degrees of
/// freedom, by the Wilson–Hilferty cube-root normal approximation (within a
/// few thousandths of the exact tail for `k ≥ 3`, which is all a score needs).
pub fn chi2_sf(x: f64, k: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    let k = k.max(1.0);
    let v = 2.0 / (9.0 * k);
    let z = ((x / k).cbrt() - (1.0 - v)) / v.sqrt();
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The weight of one sample in an exponential average whose weights halve
/// every `half_life` seconds, `dt` seconds after the previous sample:
/// `α = 1 − 2^(−dt/half_life)`, so the span in time is the same whatever the
/// sampling interval. `dt` below one second counts as one (repeated
/// timestamps still move the average a little).
pub fn alpha_from_half_life(dt: i64, half_life: f64) -> f64 {
    let dt = dt.max(1) as f64;
    if half_life <= 0.0 {
        return 1.0;
    }
    1.0 - (-dt / half_life).exp2()
}

/// Seconds after which an exponential average with half-life `half_life`
/// keeps 5% of a sample's weight (the span carrying 95% of the weight).
pub fn half_life_memory(half_life: f64) -> i64 {
    (half_life * 20f64.log2()).ceil() as i64
}

/// Exponentially weighted mean and variance (West's incremental form).
#[derive(Clone, Debug, Default)]
pub struct Ewm {
    pub mean: f64,
    pub var: f64,
    pub n: u64,
}

impl Ewm {
    /// Folds in `x` with weight `alpha`; the first sample sets the mean.
    pub fn push(&mut self, x: f64, alpha: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let d = x - self.mean;
            let incr = alpha * d;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + d * incr);
        }
        self.n += 1;
    }

    /// Folds in `x` with weight `alpha`, but at least `1/(n+1)` while few
    /// samples are in: the first samples get the plain running mean and
    /// variance, so a slow average (a long half-life at a short interval)
    /// does not start with a variance near zero that makes every sample
    /// look far out.
    pub fn push_floored(&mut self, x: f64, alpha: f64) {
        let floor = 1.0 / (self.n as f64 + 1.0);
        self.push(x, alpha.max(floor));
    }

    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }
}

/// A fixed-capacity sliding window kept both in arrival order and sorted, so
/// the median and MAD cost O(window) per sample, independent of series length.
#[derive(Clone, Debug)]
pub struct SortedWindow {
    cap: usize,
    fifo: VecDeque<f64>,
    /// Arrival times, for [`SortedWindow::push_at`] (empty otherwise).
    times: VecDeque<i64>,
    sorted: Vec<f64>,
    scratch: Vec<f64>,
}

impl SortedWindow {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        SortedWindow {
            cap,
            fifo: VecDeque::with_capacity(cap),
            times: VecDeque::new(),
            sorted: Vec::with_capacity(cap),
            scratch: Vec::with_capacity(cap),
        }
    }

    pub fn len(&self) -> usize {
        self.fifo.len()
    }

    pub fn clear(&mut self) {
        self.fifo.clear();
        self.times.clear();
        self.sorted.clear();
    }

    fn evict_oldest(&mut self) {
        if let Some(old) = self.fifo.pop_front() {
            self.times.pop_front();
            let i = self.sorted.partition_point(|v| *v < old);
            if i < self.sorted.len() {
                self.sorted.remove(i);
            }
        }
    }

    fn insert(&mut self, x: f64) {
        self.fifo.push_back(x);
        let i = self.sorted.partition_point(|v| *v < x);
        self.sorted.insert(i, x);
    }

    /// Adds a finite value, evicting the oldest when full.
    pub fn push(&mut self, x: f64) {
        if self.fifo.len() == self.cap {
            self.evict_oldest();
        }
        self.insert(x);
    }

    /// Adds a finite value seen at unix second `at`, after evicting the
    /// values `max_age` seconds old or older (a window in time), and the
    /// oldest while the window is at its sample cap (the memory bound).
    /// Use either this or [`SortedWindow::push`] on one window, not both.
    pub fn push_at(&mut self, at: i64, x: f64, max_age: i64) {
        self.expire(at, max_age);
        if self.fifo.len() == self.cap {
            self.evict_oldest();
        }
        self.insert(x);
        self.times.push_back(at);
    }

    /// Evicts the values `max_age` seconds old or older at `now`.
    pub fn expire(&mut self, now: i64, max_age: i64) {
        while self.times.front().is_some_and(|&t| now - t >= max_age) {
            self.evict_oldest();
        }
    }

    /// Arrival time of the oldest value (windows fed by `push_at`).
    pub fn oldest_at(&self) -> Option<i64> {
        self.times.front().copied()
    }

    /// Arrival time of the newest value (windows fed by `push_at`).
    pub fn newest_at(&self) -> Option<i64> {
        self.times.back().copied()
    }

    pub fn median(&self) -> Option<f64> {
        median_of_sorted(&self.sorted)
    }

    /// How many values in the window are at least `x` (O(log window)).
    pub fn count_at_least(&self, x: f64) -> usize {
        self.sorted.len() - self.sorted.partition_point(|v| *v < x)
    }

    /// The largest value in the window.
    pub fn max(&self) -> Option<f64> {
        self.sorted.last().copied()
    }

    /// Bytes this window holds at capacity (three buffers of `f64`, plus
    /// the arrival times when it is a window in time).
    #[cfg(test)]
    pub fn bytes_at_capacity(&self) -> usize {
        let times = if self.times.is_empty() { 0 } else { self.cap };
        (3 * self.cap + times) * std::mem::size_of::<f64>()
    }

    /// Median absolute deviation from the median (O(window) by selection).
    pub fn mad(&mut self) -> Option<f64> {
        let m = self.median()?;
        self.scratch.clear();
        self.scratch
            .extend(self.sorted.iter().map(|v| (v - m).abs()));
        let n = self.scratch.len();
        let (_, hi, _) = self.scratch.select_nth_unstable_by(n / 2, f64::total_cmp);
        let hi = *hi;
        if n % 2 == 1 {
            return Some(hi);
        }
        let lo = self.scratch[..n / 2]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        Some((lo + hi) / 2.0)
    }

    /// A robust σ estimate: 1.4826·MAD, or, when more than half the window
    /// is one value (MAD 0), 1.2533·mean absolute deviation, so a mostly
    /// flat series does not make every small move infinitely surprising.
    pub fn robust_sigma(&mut self) -> Option<f64> {
        let mad = self.mad()?;
        if mad > 0.0 {
            return Some(1.4826 * mad);
        }
        let m = self.median()?;
        let mean_ad =
            self.sorted.iter().map(|v| (v - m).abs()).sum::<f64>() / self.sorted.len() as f64;
        Some(1.2533 * mean_ad)
    }
}

/// One alarm per episode: a raw score counts fully only when it exceeds
/// every raw score of the last `span` samples; otherwise it is halved, so a
/// threshold is crossed once per episode instead of on every sample of it.
/// O(1) amortized (a monotone queue of the recent maxima).
#[derive(Clone, Debug)]
pub struct Episodes {
    /// (sample index, raw score), decreasing scores: the front is the
    /// maximum of the last `span` samples.
    recent: VecDeque<(u64, f64)>,
    span: u64,
    n: u64,
}

impl Episodes {
    pub fn new(span: u64) -> Self {
        Episodes {
            recent: VecDeque::new(),
            span,
            n: 0,
        }
    }

    pub fn span(&self) -> u64 {
        self.span
    }

    pub fn clear(&mut self) {
        self.recent.clear();
        self.n = 0;
    }

    /// The score to report for `raw`, then remembers `raw`.
    pub fn damp(&mut self, raw: f64) -> f64 {
        while self
            .recent
            .front()
            .is_some_and(|&(i, _)| self.n - i > self.span)
        {
            self.recent.pop_front();
        }
        let recent_max = self.recent.front().map_or(0.0, |&(_, v)| v);
        let out = if raw <= recent_max { raw * 0.5 } else { raw };
        if self.span > 0 {
            while self.recent.back().is_some_and(|&(_, v)| v <= raw) {
                self.recent.pop_back();
            }
            self.recent.push_back((self.n, raw));
        }
        self.n += 1;
        out
    }
}

fn median_of_sorted(v: &[f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excess_equal_to_limit_scores_half_and_never_saturates() {
        assert!((score_from_excess(3.0, 3.0) - 0.5).abs() < 1e-12);
        assert_eq!(score_from_excess(-2.0, 3.0), 0.0);
        assert!(score_from_excess(1e3, 3.0) < score_from_excess(1e4, 3.0));
        assert_eq!(score_from_excess(f64::INFINITY, 3.0), 1.0);
        assert_eq!(score_from_excess(f64::NAN, 3.0), 0.0);
    }

    #[test]
    fn erfc_matches_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-7);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
        assert!((erfc(-1.0) - 1.842_700_793).abs() < 1e-7);
        assert!(erfc(6.0) < 1e-15);
    }

    #[test]
    fn chi2_tail_matches_tables() {
        // Upper 5% points: k=5 → 11.070, k=10 → 18.307, k=20 → 31.410.
        for (x, k) in [(11.070, 5.0), (18.307, 10.0), (31.410, 20.0)] {
            let p = chi2_sf(x, k);
            assert!((p - 0.05).abs() < 0.003, "k={k}: {p}");
        }
        assert_eq!(chi2_sf(0.0, 4.0), 1.0);
        assert!(chi2_sf(200.0, 4.0) < 1e-9);
    }

    #[test]
    fn ewm_tracks_mean_and_variance() {
        let mut e = Ewm::default();
        for i in 0..2000 {
            e.push(if i % 2 == 0 { 1.0 } else { -1.0 }, 0.01);
        }
        assert!(e.mean.abs() < 0.02, "{}", e.mean);
        assert!((e.std() - 1.0).abs() < 0.05, "{}", e.std());
    }

    #[test]
    fn sorted_window_median_and_mad_slide() {
        let mut w = SortedWindow::new(5);
        for x in [5.0, 1.0, 3.0, 2.0, 4.0] {
            w.push(x);
        }
        assert_eq!(w.median(), Some(3.0));
        assert_eq!(w.mad(), Some(1.0));
        w.push(100.0); // evicts 5.0: window 1 3 2 4 100
        assert_eq!(w.len(), 5);
        assert_eq!(w.median(), Some(3.0));
        assert_eq!(w.count_at_least(3.0), 3);
        assert_eq!(w.count_at_least(101.0), 0);
        assert_eq!(w.max(), Some(100.0));
        w.clear();
        assert_eq!(w.median(), None);
    }

    #[test]
    fn a_window_in_time_evicts_by_age_and_stays_under_its_cap() {
        let mut w = SortedWindow::new(4);
        // 60 s of age: at 15 s intervals four values, at 30 s two.
        for (i, x) in [1.0, 2.0, 3.0, 4.0].into_iter().enumerate() {
            w.push_at(i as i64 * 15, x, 60);
        }
        assert_eq!(w.len(), 4);
        w.push_at(60, 5.0, 60); // the value at 0 is 60 s old: out
        assert_eq!(
            (w.len(), w.oldest_at(), w.median()),
            (4, Some(15), Some(3.5))
        );
        w.push_at(120, 6.0, 60); // only 75 (none) and 120 are recent enough
        assert_eq!(
            (w.len(), w.oldest_at(), w.newest_at()),
            (1, Some(120), Some(120))
        );
        // At 1 s intervals the sample cap bounds it, oldest out first.
        for t in 200..300 {
            w.push_at(t, t as f64, 60);
        }
        assert_eq!(
            (w.len(), w.oldest_at(), w.max()),
            (4, Some(296), Some(299.0))
        );
    }

    #[test]
    fn a_half_life_gives_the_same_span_at_any_interval() {
        // After one half-life of samples, an old level keeps half its weight,
        // whether the samples came every second or every 30 seconds.
        for dt in [1i64, 15, 30] {
            let mut e = Ewm::default();
            e.push(0.0, 1.0);
            let a = alpha_from_half_life(dt, 300.0);
            for _ in 0..(300 / dt) {
                e.push(1.0, a);
            }
            assert!((e.mean - 0.5).abs() < 1e-9, "dt {dt}: {}", e.mean);
        }
        assert_eq!(half_life_memory(100.0), 433);
    }

    #[test]
    fn the_floor_gives_a_running_mean_and_variance_at_first() {
        let mut e = Ewm::default();
        for x in [1.0, 2.0, 3.0, 4.0] {
            e.push_floored(x, 1e-4);
        }
        assert!((e.mean - 2.5).abs() < 1e-12);
        assert!(
            (e.var - 1.25).abs() < 1e-12,
            "population variance {}",
            e.var
        );
    }
}
