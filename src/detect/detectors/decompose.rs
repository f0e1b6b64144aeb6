//! Robust seasonal decomposition with a robust residual score: the series is
//! split online into a trend, a seasonal profile and a residual, each
//! estimated by medians (in the spirit of robust STL), and a sample is
//! anomalous when its residual is far from the usual residuals in robust
//! standard deviations (median / MAD).
//!
//! Written from the idea. With `slot` the sample's place in the period
//! (`buckets` slots of `period_seconds`):
//! - seasonal = median of the last `cycles` detrended values of the slot;
//! - trend = median of the last `window` deseasonalized values;
//! - residual = value − trend − seasonal, scored against the median and
//!   robust σ of the last `window` residuals, `limit` σ scoring 0.5.
//!
//! Medians do not move for a few outliers, so an anomaly neither drags the
//! baseline nor inflates the spread, and a missing weekend does not teach the
//! profile. One alarm per episode for `rest` samples.
//!
//! Cost per sample: O(`window`) (two sorted windows) plus O(`cycles`) for
//! the slot's median. Memory per series: `buckets × cycles` values and two
//! sorted windows of `window` (3 × 8 bytes per place): with the defaults
//! (24 slots × 8 cycles, window 288) about 15.4 KB. Pure.

use super::{Detector, DetectorKind, Judged, Scored, Span, classic::z_of};
use crate::detect::stats::{Episodes, SortedWindow, score_from_excess};

pub(super) struct DecomposeDetector {
    period_seconds: i64,
    buckets: usize,
    cycles: usize,
    warmup: u32,
    limit: f64,
    n: u64,
    /// `buckets × cycles` detrended values, each slot a ring.
    slots: Vec<f64>,
    /// Per slot: values held and next write.
    fill: Vec<(u16, u16)>,
    scratch: Vec<f64>,
    trend: SortedWindow,
    residuals: SortedWindow,
    episodes: Episodes,
}

impl DecomposeDetector {
    pub(super) fn new(
        period_seconds: i64,
        buckets: u32,
        cycles: u32,
        window: u32,
        limit: f64,
        rest: u32,
        warmup: u32,
    ) -> Self {
        let buckets = buckets.clamp(1, 10_080) as usize;
        let cycles = cycles.clamp(1, 1000) as usize;
        let window = window.clamp(3, 100_000) as usize;
        Self {
            period_seconds: period_seconds.max(1),
            buckets,
            cycles,
            warmup: warmup.max(2),
            limit,
            n: 0,
            slots: vec![0.0; buckets * cycles],
            fill: vec![(0, 0); buckets],
            scratch: Vec::with_capacity(cycles),
            trend: SortedWindow::new(window),
            residuals: SortedWindow::new(window),
            episodes: Episodes::new(u64::from(rest)),
        }
    }

    /// Bytes of state at capacity.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + 8 * self.slots.len()
            + 4 * self.fill.len()
            + 8 * self.cycles
            + self.trend.bytes_at_capacity()
            + self.residuals.bytes_at_capacity()
    }

    fn slot(&self, at: i64) -> usize {
        let phase = at.rem_euclid(self.period_seconds);
        let n = self.buckets as i64;
        ((phase * n / self.period_seconds).clamp(0, n - 1)) as usize
    }

    /// Median of slot `i`'s detrended values; 0 (no season) while empty.
    fn seasonal(&mut self, i: usize) -> f64 {
        let held = self.fill[i].0 as usize;
        if held == 0 {
            return 0.0;
        }
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&self.slots[i * self.cycles..i * self.cycles + held]);
        let (_, mid, _) = self
            .scratch
            .select_nth_unstable_by(held / 2, f64::total_cmp);
        let mid = *mid;
        if held % 2 == 1 {
            return mid;
        }
        let lo = self.scratch[..held / 2]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (lo + mid) / 2.0
    }

    fn learn_slot(&mut self, i: usize, v: f64) {
        let (held, next) = self.fill[i];
        self.slots[i * self.cycles + next as usize] = v;
        self.fill[i] = (
            (held + 1).min(self.cycles as u16),
            ((next as usize + 1) % self.cycles) as u16,
        );
    }
}

impl Detector for DecomposeDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Decompose.name()
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        let i = self.slot(at);
        let seasonal = self.seasonal(i);
        let trend = self.trend.median().unwrap_or(x - seasonal);
        let expected = trend + seasonal;
        let residual = x - expected;
        let mut out = None;
        if self.n >= u64::from(self.warmup)
            && self.residuals.len() >= 10
            && let (Some(centre), Some(sigma)) =
                (self.residuals.median(), self.residuals.robust_sigma())
        {
            // Spread floor relative to the level, as for the MAD detector.
            let spread = sigma.max(1e-6 * expected.abs());
            let z = z_of(residual, centre, spread);
            out = Some(Scored {
                score: self.episodes.damp(score_from_excess(z, self.limit)),
                baseline: expected + centre,
                measure: z,
                time_to_threshold: None,
                judged: Some(Judged {
                    baseline: expected + centre,
                    spread,
                    span: Span::Samples(self.residuals.len() as u64),
                }),
            });
        } else {
            self.episodes.damp(0.0);
        }
        self.trend.push(x - seasonal);
        self.learn_slot(i, x - trend);
        self.residuals.push(residual);
        self.n += 1;
        out
    }
    fn reset(&mut self) {
        self.n = 0;
        self.fill.iter_mut().for_each(|f| *f = (0, 0));
        self.trend.clear();
        self.residuals.clear();
        self.episodes.clear();
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} {value:.4} is {:.1} robust σ from its expected {:.4} (trend plus its usual level at this time of the {}s period, limit {}σ)",
            s.measure, s.baseline, self.period_seconds, self.limit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hourly samples of a daily cycle with a slow trend and small noise.
    fn day(i: usize) -> f64 {
        let h = (i % 24) as f64;
        100.0
            + 0.01 * i as f64
            + 30.0 * (h * std::f64::consts::TAU / 24.0).sin()
            + ((i * 7919) % 7) as f64 * 0.3
    }

    fn run(d: &mut DecomposeDetector, xs: &[f64]) -> Vec<Option<f64>> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| d.score(i as i64 * 3600, x).map(|s| s.score))
            .collect()
    }

    #[test]
    fn the_daily_cycle_is_learned_and_a_break_of_it_is_novel() {
        let mut d = DecomposeDetector::new(86_400, 24, 8, 48, 5.0, 0, 48);
        let mut xs: Vec<f64> = (0..24 * 30).map(day).collect();
        // At the hour of the daily peak, the trough's value: within the
        // usual range, wrong for the time of day.
        let peak = (24 * 30..24 * 31).find(|i| i % 24 == 6).expect("an hour");
        xs.extend((24 * 30..peak).map(day));
        xs.push(day(peak) - 60.0);
        let s = run(&mut d, &xs);
        assert!(s[..48].iter().all(Option::is_none), "warm-up");
        let late = s[24 * 20..24 * 30]
            .iter()
            .flatten()
            .copied()
            .fold(0.0, f64::max);
        // 0.5 is `limit` σ; a deterministic but uneven noise stays near it.
        assert!(late < 0.6, "learned cycle still surprising: {late}");
        let brk = s.last().copied().flatten().expect("scored");
        assert!(brk > 0.9, "break of the cycle scored {brk}");
    }

    #[test]
    fn memory_is_bounded() {
        let mut d = DecomposeDetector::new(86_400, 24, 8, 288, 5.0, 0, 48);
        let before = d.bytes();
        let _ = run(&mut d, &(0..24 * 400).map(day).collect::<Vec<_>>());
        assert_eq!(d.bytes(), before);
        assert!(d.trend.len() <= 288 && d.residuals.len() <= 288);
        assert!(before < 16 * 1024, "{before} bytes");
    }

    #[test]
    fn nan_is_not_scored_and_reset_forgets() {
        let mut d = DecomposeDetector::new(86_400, 24, 4, 24, 5.0, 0, 24);
        assert_eq!(d.score(0, f64::NAN), None);
        let _ = run(&mut d, &(0..200).map(day).collect::<Vec<_>>());
        assert!(d.score(200 * 3600, day(200)).is_some());
        d.reset();
        assert_eq!(d.trend.len(), 0);
        assert_eq!(d.score(0, 1.0), None);
    }
}
