//! Calibrated scores for the model specs' detectors, so `min_score` means
//! the same for `ewma`, `mad`, `seasonal` and `cusum`: how rare the sample
//! is on this series, and only once it is past the detector's own limit.
//!
//! The inner detector's raw score (0.5 = at its limit: 5σ, a CUSUM of 8, …)
//! becomes its conformal p-value among the series' raw scores of the last
//! [`MEMORY_SECONDS`] (at most [`MEMORY_SAMPLES`] of them): `p` = (how many
//! were at least as high + 1) / (how many + 1), shrunk in proportion past
//! the highest (as in `rank.rs`), so a step far beyond anything seen stays
//! rankable with a short memory. Then
//!
//! - raw ≥ 0.5 (past the limit): score = `1 − p`;
//! - raw < 0.5: score = `min(raw, 1 − p)`, below 0.5.
//!
//! So a score ≥ `t` (for `t` ≥ 0.5) means "past the detector's limit, and
//! higher than a share `t` of this series' recent raw scores". The gate is
//! what a running quantile alone lacks: a quiet series, whose raw scores
//! never reach the limit, yields no findings at all, instead of its top
//! `1 − t` share. On a stationary series the conformal p-value of a sample
//! is ≤ `1 − t` with probability at most `1 − t`, so the expected findings
//! per series-day at `min_score: t` are at most the smaller of `(1 − t) ×
//! samples per day` and the day's samples past the limit: none on a series
//! that never gets there, whatever `t`.
//!
//! Warm-up: no calibrated score in the first [`WARMUP_SECONDS`] of a series
//! (counted from its first sample, so it runs alongside the detector's own
//! warm-up, in samples, and on a 1 s cycle adds nothing to it), nor before
//! one earlier raw score to rank against. With `n` scores remembered, `p`
//! cannot go below `1/(n+1)` unless the sample is past everything seen, so
//! a high `t` waits for history by itself.
//!
//! Forecasts are not calibrated: their score says how soon a threshold is
//! crossed (0.5 at the horizon), which is not made more or less urgent by
//! how often the series has said so before.
//!
//! Cost: the inner detector's plus O(log n) to rank and O(n) to insert;
//! memory: the inner's plus 256 × 32 bytes = 8 KB per series. Pure.

use std::collections::VecDeque;

use super::{Detector, Scored};
use crate::detect::stats::SortedWindow;

/// How far back the raw scores a sample is ranked against reach, at most.
pub const MEMORY_SECONDS: i64 = 86_400;
/// The most raw scores remembered (the memory bound), which is what
/// usually limits the memory: about an hour at a 15 s interval, two at
/// 30 s, 21 at NAB's 5 minutes, a little over 4 minutes at 1 s. (An hour
/// in time instead held only 12 scores of 5-minute data and scored worse
/// on NAB: BENCHMARKS.md.)
pub const MEMORY_SAMPLES: usize = 256;
/// Seconds from a series' first sample before its first calibrated score:
/// small, and overlapping the detector's own warm-up, so a detector warmed
/// up on a 1 s cycle finds a fault within seconds.
pub const WARMUP_SECONDS: i64 = 10;

/// p-value of `s` against the scores in `w`: the share at least as high
/// (counting `s`), shrunk in proportion past the highest.
pub(super) fn p_value(w: &SortedWindow, s: f64) -> f64 {
    let n = w.len() as f64;
    let p = (w.count_at_least(s) as f64 + 1.0) / (n + 1.0);
    match w.max() {
        Some(m) if s > m && s > 0.0 => p * (m.max(1e-12) / s),
        _ => p,
    }
}

/// The memory of one series' raw scores and the rule that turns a raw
/// score into a calibrated one (module docs): what [`Calibrated`] wraps
/// round a single-signal detector, and what the multivariate detector
/// (`detect::gmm`) uses on its own raw score.
///
///
/// A departure is learnt when it is over: while raw scores stay past the
/// limit they are ranked against the memory as it was before the
/// departure, and they join the memory (the latest [`MEMORY_SAMPLES`] of
/// them at most) when a raw score falls under the limit again. Ranked
/// against its own scores as they came, a fault that lasts would no longer
/// be past everything seen from its second sample on, and after
/// `(1 − t) × 256` samples (12 minutes at a 30 s cycle for `t` = 0.9) not
/// rare at all: the finding would clear while the fault went on, say while
/// a guard held the action back. Once it is over, the memory holds it as
/// it was, so its tail (a rate window still holding the fault's last
/// seconds) or a recurrence soon after ranks as the usual it has become,
/// not as a new departure. How long a departure lasts is the inner
/// detector's to say: once it has learnt the new level, its raw score
/// falls under the limit.
#[derive(Clone, Debug)]
pub struct Rarity {
    memory: SortedWindow,
    /// When the series' first raw score came (the warm-up's start).
    since: Option<i64>,
    /// The raw scores of the departure under way (the latest
    /// [`MEMORY_SAMPLES`]), with their times.
    departure: VecDeque<(i64, f64)>,
}

/// One calibrated score: the score, and the raw score, p-value and memory
/// size it came from (for an explanation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    pub score: f64,
    pub raw: f64,
    pub p: f64,
    pub memory: usize,
}

impl Default for Rarity {
    fn default() -> Self {
        Rarity {
            memory: SortedWindow::new(MEMORY_SAMPLES),
            since: None,
            departure: VecDeque::new(),
        }
    }
}

impl Rarity {
    /// Ranks raw score `raw` at `at` against the memory, then remembers it.
    /// `None` during the warm-up (module docs).
    pub fn rank(&mut self, at: i64, raw: f64) -> Option<Ranked> {
        let since = *self.since.get_or_insert(at);
        self.memory.expire(at, MEMORY_SECONDS);
        let warm = at - since >= WARMUP_SECONDS && self.memory.len() > 0;
        let p = p_value(&self.memory, raw);
        let n = self.memory.len();
        if raw >= 0.5 {
            if self.departure.len() == MEMORY_SAMPLES {
                self.departure.pop_front();
            }
            self.departure.push_back((at, raw));
        } else {
            for (then, score) in self.departure.drain(..) {
                self.memory.push_at(then, score, MEMORY_SECONDS);
            }
            self.memory.push_at(at, raw, MEMORY_SECONDS);
        }
        warm.then_some(Ranked {
            score: calibrated(raw, p),
            raw,
            p,
            memory: n,
        })
    }

    pub fn clear(&mut self) {
        self.memory.clear();
        self.since = None;
        self.departure.clear();
    }

    /// Bytes of the memory at capacity.
    #[cfg(test)]
    pub fn bytes_at_capacity(&self) -> usize {
        self.memory.bytes_at_capacity()
    }
}

/// A spec detector whose scores are calibrated per series (module docs).
pub(super) struct Calibrated {
    inner: Box<dyn Detector>,
    rarity: Rarity,
    /// The last score's raw value, p-value and memory size, for `explain`.
    last: (f64, f64, usize),
}

impl Calibrated {
    pub(super) fn new(inner: Box<dyn Detector>) -> Self {
        Calibrated {
            inner,
            rarity: Rarity::default(),
            last: (0.0, 1.0, 0),
        }
    }

    /// Bytes of the calibration memory at capacity.
    #[cfg(test)]
    pub(super) fn calibration_bytes(&self) -> usize {
        self.rarity.bytes_at_capacity()
    }
}

/// The calibrated score of raw score `raw` with p-value `p`.
pub fn calibrated(raw: f64, p: f64) -> f64 {
    if raw >= 0.5 {
        1.0 - p
    } else {
        raw.min(1.0 - p)
    }
}

impl Detector for Calibrated {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        // The warm-up counts from the series' first sample, scored or not.
        let s = match self.inner.score(at, x) {
            Some(s) => s,
            None => {
                self.rarity.since.get_or_insert(at);
                return None;
            }
        };
        let r = self.rarity.rank(at, s.score)?;
        self.last = (r.raw, r.p, r.memory);
        Some(Scored {
            score: r.score,
            ..s
        })
    }
    fn reset(&mut self) {
        self.inner.reset();
        self.rarity.clear();
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        let (raw, p, n) = self.last;
        format!(
            "{}; past its limit ({raw:.2} on the limit scale) and higher than {:.1}% of this series' last {n} scores",
            self.inner.explain(signal, value, s),
            100.0 * (1.0 - p)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::DetectorParams;
    use super::*;

    const DAY: i64 = 86_400;
    const STEP: i64 = 15;

    /// Seeded standard normal noise (Box–Muller over a 64-bit LCG).
    struct Gauss(u64);
    impl Gauss {
        fn uniform(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn next(&mut self) -> f64 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// The spec detectors as the default models configure them.
    fn spec_detectors() -> Vec<(&'static str, DetectorParams)> {
        vec![
            (
                "ewma",
                DetectorParams::Ewma {
                    alpha: 0.05,
                    half_life_seconds: Some(405.0),
                    warmup: 60,
                    limit: 5.0,
                },
            ),
            (
                "mad",
                DetectorParams::Mad {
                    window: 2048,
                    window_seconds: Some(3600),
                    warmup: 20,
                    limit: 4.0,
                },
            ),
            // The models' 0/1 signals use 3 robust σ: on Gaussian noise
            // (which they never see) a few samples a day get past it.
            (
                "mad (limit 3)",
                DetectorParams::Mad {
                    window: 2048,
                    window_seconds: Some(1800),
                    warmup: 10,
                    limit: 3.0,
                },
            ),
            (
                "cusum",
                DetectorParams::Cusum {
                    alpha: 0.01,
                    half_life_seconds: Some(2070.0),
                    k: 0.5,
                    warmup: 30,
                    limit: 8.0,
                },
            ),
            (
                "seasonal",
                DetectorParams::Seasonal {
                    period_seconds: 3600,
                    buckets: 12,
                    alpha: 0.1,
                    min_cycles: 3,
                    limit: 5.0,
                },
            ),
        ]
    }

    /// Scores `xs` at 15 s steps; the scores (None while warming up).
    fn run(d: &mut dyn Detector, xs: &[f64]) -> Vec<Option<f64>> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| d.score(i as i64 * STEP, x).map(|s| s.score))
            .collect()
    }

    #[test]
    fn a_quiet_day_yields_at_most_the_cap_and_a_running_quantile_alone_would_not() {
        let t = 0.9; // the runbooks' usual min_score
        let samples = (DAY / STEP) as usize; // 5760
        for (name, params) in spec_detectors() {
            let mut noise = Gauss(17);
            let xs: Vec<f64> = (0..samples).map(|_| 100.0 + noise.next()).collect();
            let mut d = Calibrated::new(params.build());
            let scores = run(&mut d, &xs);
            let findings = scores.iter().flatten().filter(|&&s| s >= t).count();
            // The cap: the day's raw scores past the limit (the gate), and
            // never more than (1 − t) of the day's samples (the quantile).
            let mut raw = params.build();
            let past = run(raw.as_mut(), &xs)
                .iter()
                .flatten()
                .filter(|&&s| s >= 0.5)
                .count();
            let cap = past.min(((1.0 - t) * samples as f64) as usize);
            assert!(
                findings <= cap,
                "{name}: {findings} findings on a quiet day, cap {cap} ({past} raw scores past the limit)"
            );
            // A running quantile alone turns about 1 − t of every day into
            // findings: hundreds, on the same noise.
            let mut ranks = SortedWindow::new(MEMORY_SAMPLES);
            let mut raw = params.build();
            let mut ungated = 0;
            for (i, &x) in xs.iter().enumerate() {
                let at = i as i64 * STEP;
                if let Some(s) = raw.score(at, x) {
                    ranks.expire(at, MEMORY_SECONDS);
                    if 1.0 - p_value(&ranks, s.score) >= t {
                        ungated += 1;
                    }
                    ranks.push_at(at, s.score, MEMORY_SECONDS);
                }
            }
            println!(
                "{name}: quiet day at 15 s: {findings} findings at min_score {t} \
                 ({past} raw scores past the limit, cap {cap}); without the gate {ungated}"
            );
            assert!(ungated > 200, "{name}: {ungated} findings without the gate");
        }
    }

    #[test]
    fn a_step_is_found_within_two_samples_after_a_quiet_day() {
        let samples = (DAY / STEP) as usize;
        for (name, params) in spec_detectors() {
            let mut noise = Gauss(5);
            let mut xs: Vec<f64> = (0..samples).map(|_| 100.0 + noise.next()).collect();
            // Up 10σ and staying there.
            xs.extend((0..40).map(|_| 110.0 + noise.next()));
            let mut d = Calibrated::new(params.build());
            let scores = run(&mut d, &xs);
            let first = scores[samples..]
                .iter()
                .position(|s| s.is_some_and(|s| s >= 0.99));
            println!("{name}: 10σ step found {first:?} samples after it");
            assert!(
                first.is_some_and(|i| i <= 2),
                "{name}: first score ≥ 0.99 at {first:?} after the step: {:?}",
                &scores[samples..samples + 5]
            );
        }
    }

    /// A fault that lasts stays a finding while the detector still calls
    /// it a departure, even with little history behind it (the e2e suite's
    /// agents have a minute of it): its own scores are not learnt as usual.
    #[test]
    fn a_lasting_departure_keeps_its_score_while_the_detector_calls_it_one() {
        // The models' 0/1 and count signals: a MAD over 30 minutes at 3σ.
        let mut d = Calibrated::new(
            DetectorParams::Mad {
                window: 2048,
                window_seconds: Some(1800),
                warmup: 10,
                limit: 3.0,
            }
            .build(),
        );
        // Four minutes of zero under-replicated partitions, then ten.
        let quiet = (240 / STEP) as usize;
        let mut xs = vec![0.0; quiet];
        xs.extend(vec![10.0; 20]);
        // (score, raw) for each sample of the fault.
        let during: Vec<(f64, f64)> = xs
            .iter()
            .enumerate()
            .filter_map(|(i, &x)| d.score(i as i64 * STEP, x).map(|s| (s.score, d.last.0)))
            .skip(quiet - 10)
            .collect();
        let departing: Vec<f64> = during
            .iter()
            .take_while(|(_, raw)| *raw >= 0.5)
            .map(|(s, _)| *s)
            .collect();
        assert!(
            departing.len() >= 5 && departing.iter().all(|&s| s >= 0.99),
            "while the MAD calls it a departure, every score at least 0.99: {during:?}"
        );
        // Over (the MAD has learnt the level): its scores joined the
        // memory, so its tail, or the same departure again soon after, is
        // no longer rare.
        assert!(
            d.rarity.memory.count_at_least(0.5) >= departing.len(),
            "the departure's {} scores remembered",
            departing.len()
        );
        let t = xs.len() as i64 * STEP;
        let (again, _) = d
            .rarity
            .rank(t + STEP, 0.6)
            .map(|r| (r.score, r.p))
            .expect("ranked");
        assert!(
            again < 0.85,
            "a recurrence ranked against the fault: {again}"
        );
    }

    #[test]
    fn a_warm_detector_finds_a_spike_within_seconds_at_a_one_second_cycle() {
        // The agent tests' case: a flat series, a short warm-up, one spike.
        let mut d = Calibrated::new(
            DetectorParams::Ewma {
                alpha: 0.1,
                half_life_seconds: Some(7.0),
                warmup: 3,
                limit: 5.0,
            }
            .build(),
        );
        let first = (0..14).find_map(|t| d.score(t, 0.1).map(|_| t));
        assert_eq!(
            first,
            Some(10),
            "10 s from the first sample, 3 of them the EWMA's"
        );
        let spike = d.score(14, 2.5).expect("scored");
        assert!(spike.score > 0.999, "{spike:?}");
        let why = d.explain("latency_p99", 2.5, &spike);
        assert!(
            why.contains("past its limit") && why.contains("last 8 scores"),
            "{why}"
        );
    }

    #[test]
    fn below_the_limit_the_score_stays_below_half_and_memory_is_bounded() {
        assert_eq!(calibrated(0.3, 0.001), 0.3);
        assert_eq!(calibrated(0.3, 0.9), 0.09999999999999998);
        assert_eq!(calibrated(0.6, 0.05), 0.95);
        let mut d = Calibrated::new(
            DetectorParams::Mad {
                window: 100,
                window_seconds: None,
                warmup: 10,
                limit: 5.0,
            }
            .build(),
        );
        let before = d.calibration_bytes();
        let mut noise = Gauss(1);
        // At 1 s the memory would hold 5000 scores: the sample cap bounds it.
        for t in 0..5000 {
            let _ = d.score(t, noise.next());
        }
        assert_eq!(d.rarity.memory.len(), MEMORY_SAMPLES);
        assert_eq!(d.calibration_bytes(), 4 * MEMORY_SAMPLES * 8);
        assert!(before <= d.calibration_bytes());
        d.reset();
        assert_eq!((d.rarity.memory.len(), d.rarity.since), (0, None));
        assert_eq!(d.score(0, f64::NAN).map(|s| s.score), None);
    }
}
