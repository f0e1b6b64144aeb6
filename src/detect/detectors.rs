//! The univariate online detectors: EWMA z-score, robust median/MAD, a
//! seasonal (time-of-period) baseline, two-sided CUSUM change points, a Holt
//! trend forecast with time to threshold, and an ensemble of them.
//!
//! Each detector keeps its own state for one series and costs O(1) per sample
//! (MAD: O(window), a constant). Scores are computed *before* the sample is
//! folded into the state, so an anomaly does not hide itself. A detector
//! returns `None` while warming up and for non-finite values: "no score" is
//! never the same as a score of zero. Pure: no clock (timestamps come with the
//! samples), no I/O.

use std::collections::VecDeque;

use serde::Serialize;

use super::stats::{Ewm, SortedWindow, erfc, score_from_excess};

/// Which side of a threshold is bad, for forecasts.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Above,
    Below,
}

/// Validated detector parameters (see `spec` for the YAML form and the
/// checks). Every `limit` is the excess that scores 0.5.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(tag = "detector", rename_all = "lowercase")]
pub enum DetectorParams {
    /// z-score against an exponentially weighted mean and variance.
    Ewma { alpha: f64, warmup: u32, limit: f64 },
    /// Robust z-score against the median and MAD of the last `window` samples.
    Mad {
        window: u32,
        warmup: u32,
        limit: f64,
    },
    /// z-score against the EWMA mean/variance of the same slot of the period
    /// (time of day with `period_seconds: 86400`, of week with 604800).
    Seasonal {
        period_seconds: i64,
        buckets: u32,
        alpha: f64,
        min_cycles: u32,
        limit: f64,
    },
    /// Two-sided standardized CUSUM over a slow EWMA baseline; `k` is the
    /// allowed slack in standard deviations, `limit` the decision interval h.
    Cusum {
        alpha: f64,
        k: f64,
        warmup: u32,
        limit: f64,
    },
    /// Holt linear trend; scores how soon the series is expected to cross
    /// `threshold` (0.5 when the time left equals `horizon_seconds`).
    Forecast {
        alpha: f64,
        beta: f64,
        threshold: f64,
        direction: Direction,
        horizon_seconds: f64,
        warmup: u32,
    },
    /// NAB's windowed Gaussian baseline: mean and standard deviation of the
    /// last `window` samples, refreshed every `step` samples; the score is
    /// one minus the two-sided tail probability of the sample.
    Gaussian { window: u32, step: u32 },
    /// Runs `inner` on the first differences of the series (jumps rather
    /// than levels).
    Diff { inner: Box<DetectorParams> },
    /// Maximum of its members' scores. A member score counts fully only when
    /// it exceeds every score of the last `refractory` samples, so one
    /// anomaly yields one peak instead of a run of alarms.
    Ensemble {
        members: Vec<DetectorParams>,
        refractory: u32,
    },
}

impl DetectorParams {
    /// Stable name for findings, metrics and the CLI.
    pub fn name(&self) -> &'static str {
        match self {
            DetectorParams::Ewma { .. } => "ewma",
            DetectorParams::Mad { .. } => "mad",
            DetectorParams::Seasonal { .. } => "seasonal",
            DetectorParams::Cusum { .. } => "cusum",
            DetectorParams::Forecast { .. } => "forecast",
            DetectorParams::Gaussian { .. } => "gaussian",
            DetectorParams::Diff { .. } => "diff",
            DetectorParams::Ensemble { .. } => "ensemble",
        }
    }

    /// Defaults used by `detect score --detector NAME` and as the base of
    /// model specs.
    pub fn default_for(name: &str) -> Option<DetectorParams> {
        Some(match name {
            "ewma" => DetectorParams::Ewma {
                alpha: 0.02,
                warmup: 50,
                limit: 5.0,
            },
            "mad" => DetectorParams::Mad {
                window: 288,
                warmup: 50,
                limit: 5.0,
            },
            "seasonal" => DetectorParams::Seasonal {
                period_seconds: 86_400,
                buckets: 24,
                alpha: 0.1,
                min_cycles: 3,
                limit: 5.0,
            },
            "cusum" => DetectorParams::Cusum {
                alpha: 0.01,
                k: 0.5,
                warmup: 50,
                limit: 8.0,
            },
            "gaussian" => DetectorParams::Gaussian {
                window: 6400,
                step: 100,
            },
            // Tuned on NAB (one parameter set for every file, see
            // BENCHMARKS.md): robust level and robust jump detectors over a
            // long window, one alarm per episode.
            "ensemble" => DetectorParams::Ensemble {
                members: vec![
                    DetectorParams::Mad {
                        window: 2000,
                        warmup: 100,
                        limit: 3.0,
                    },
                    DetectorParams::Diff {
                        inner: Box::new(DetectorParams::Mad {
                            window: 2000,
                            warmup: 100,
                            limit: 3.0,
                        }),
                    },
                ],
                refractory: 2000,
            },
            _ => return None,
        })
    }

    /// Names accepted by [`DetectorParams::default_for`].
    pub const DEFAULT_NAMES: [&'static str; 6] =
        ["ewma", "mad", "seasonal", "cusum", "gaussian", "ensemble"];

    /// A fresh detector state for one series.
    pub fn build(&self) -> Box<dyn Detector> {
        match self.clone() {
            DetectorParams::Ewma {
                alpha,
                warmup,
                limit,
            } => Box::new(EwmaDetector {
                alpha,
                warmup,
                limit,
                ewm: Ewm::default(),
            }),
            DetectorParams::Mad {
                window,
                warmup,
                limit,
            } => Box::new(MadDetector {
                warmup,
                limit,
                window: SortedWindow::new(window as usize),
            }),
            DetectorParams::Seasonal {
                period_seconds,
                buckets,
                alpha,
                min_cycles,
                limit,
            } => Box::new(SeasonalDetector {
                period_seconds,
                alpha,
                min_cycles,
                limit,
                slots: vec![Slot::default(); buckets.max(1) as usize],
            }),
            DetectorParams::Cusum {
                alpha,
                k,
                warmup,
                limit,
            } => Box::new(CusumDetector {
                alpha,
                k,
                warmup,
                limit,
                base: Ewm::default(),
                hi: 0.0,
                lo: 0.0,
            }),
            DetectorParams::Forecast {
                alpha,
                beta,
                threshold,
                direction,
                horizon_seconds,
                warmup,
            } => Box::new(ForecastDetector {
                alpha,
                beta,
                threshold,
                direction,
                horizon_seconds,
                warmup,
                n: 0,
                level: 0.0,
                trend: 0.0,
                last_at: 0,
            }),
            DetectorParams::Gaussian { window, step } => Box::new(GaussianDetector {
                window: VecDeque::with_capacity(window as usize),
                cap: window.max(1) as usize,
                step: step.max(1) as usize,
                pending: 0,
                mean: 0.0,
                std: 0.0,
            }),
            DetectorParams::Diff { inner } => Box::new(DiffDetector {
                inner: inner.build(),
                last: None,
            }),
            DetectorParams::Ensemble {
                members,
                refractory,
            } => Box::new(EnsembleDetector {
                members: members.iter().map(DetectorParams::build).collect(),
                recent: VecDeque::new(),
                refractory: u64::from(refractory),
                n: 0,
            }),
        }
    }
}

/// The result of scoring one sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scored {
    /// Anomaly score in `[0, 1]`; 0.5 means "at the detector's limit".
    pub score: f64,
    /// What the sample was compared against (mean, median, slot mean, level).
    pub baseline: f64,
    /// The detector's own measure: z, CUSUM sum, or seconds to threshold.
    pub measure: f64,
    /// Forecasts only: expected seconds until the threshold is crossed.
    pub time_to_threshold: Option<f64>,
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

fn z_of(x: f64, mean: f64, std: f64) -> f64 {
    let d = (x - mean).abs();
    // A flat history (std 0) makes any change infinitely surprising; scale by
    // a tiny fraction of the level instead so the score stays rankable.
    let floor = 1e-6 * mean.abs().max(1e-9);
    d / std.max(floor)
}

struct EwmaDetector {
    alpha: f64,
    warmup: u32,
    limit: f64,
    ewm: Ewm,
}

impl Detector for EwmaDetector {
    fn name(&self) -> &'static str {
        "ewma"
    }
    fn score(&mut self, _at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        let out = (self.ewm.n >= u64::from(self.warmup)).then(|| {
            let z = z_of(x, self.ewm.mean, self.ewm.std());
            Scored {
                score: score_from_excess(z, self.limit),
                baseline: self.ewm.mean,
                measure: z,
                time_to_threshold: None,
            }
        });
        self.ewm.push(x, self.alpha);
        out
    }
    fn reset(&mut self) {
        self.ewm = Ewm::default();
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} {value:.4} is {:.1}σ from its EWMA mean {:.4} (α={}, limit {}σ)",
            s.measure, s.baseline, self.alpha, self.limit
        )
    }
}

struct MadDetector {
    warmup: u32,
    limit: f64,
    window: SortedWindow,
}

impl Detector for MadDetector {
    fn name(&self) -> &'static str {
        "mad"
    }
    fn score(&mut self, _at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        let mut out = None;
        if self.window.len() >= self.warmup as usize
            && let (Some(median), Some(sigma)) = (self.window.median(), self.window.robust_sigma())
        {
            let z = z_of(x, median, sigma);
            out = Some(Scored {
                score: score_from_excess(z, self.limit),
                baseline: median,
                measure: z,
                time_to_threshold: None,
            });
        }
        self.window.push(x);
        out
    }
    fn reset(&mut self) {
        self.window.clear();
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} {value:.4} is {:.1} robust σ from the window median {:.4} (limit {})",
            s.measure, s.baseline, self.limit
        )
    }
}

struct SeasonalDetector {
    period_seconds: i64,
    alpha: f64,
    min_cycles: u32,
    limit: f64,
    slots: Vec<Slot>,
}

/// One slot of the period: its statistics and how many distinct periods
/// (days, weeks) fed it.
#[derive(Clone, Debug, Default)]
struct Slot {
    ewm: Ewm,
    cycles: u32,
    last_cycle: Option<i64>,
}

impl SeasonalDetector {
    fn slot(&self, at: i64) -> usize {
        let period = self.period_seconds.max(1);
        let phase = at.rem_euclid(period);
        let n = self.slots.len() as i64;
        ((phase * n / period).clamp(0, n - 1)) as usize
    }
}

impl Detector for SeasonalDetector {
    fn name(&self) -> &'static str {
        "seasonal"
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        let i = self.slot(at);
        let cycle = at.div_euclid(self.period_seconds.max(1));
        let slot = &mut self.slots[i];
        // Trust a slot only once it has seen `min_cycles` distinct periods.
        let out = (slot.cycles >= self.min_cycles).then(|| {
            // A slot sees few, smoothed samples and underestimates its
            // spread; a 1% wobble of a traffic level is never news.
            let std = slot.ewm.std().max(0.01 * slot.ewm.mean.abs());
            let z = z_of(x, slot.ewm.mean, std);
            Scored {
                score: score_from_excess(z, self.limit),
                baseline: slot.ewm.mean,
                measure: z,
                time_to_threshold: None,
            }
        });
        slot.ewm.push(x, self.alpha);
        if slot.last_cycle != Some(cycle) {
            slot.last_cycle = Some(cycle);
            slot.cycles += 1;
        }
        out
    }
    fn reset(&mut self) {
        for s in &mut self.slots {
            *s = Slot::default();
        }
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} {value:.4} is {:.1}σ from its usual {:.4} at this time of the {}s period (limit {}σ)",
            s.measure, s.baseline, self.period_seconds, self.limit
        )
    }
}

struct CusumDetector {
    alpha: f64,
    k: f64,
    warmup: u32,
    limit: f64,
    base: Ewm,
    hi: f64,
    lo: f64,
}

impl Detector for CusumDetector {
    fn name(&self) -> &'static str {
        "cusum"
    }
    fn score(&mut self, _at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        if self.base.n < u64::from(self.warmup) {
            self.base.push(x, self.alpha);
            return None;
        }
        // A flat baseline (a partition count, a replica count) makes any
        // step a change: the floor keeps z finite, the clamp bounded.
        let floor = 1e-6 * self.base.mean.abs().max(1e-9);
        let z = ((x - self.base.mean) / self.base.std().max(floor)).clamp(-50.0, 50.0);
        self.hi = (self.hi + z - self.k).max(0.0);
        self.lo = (self.lo - z - self.k).max(0.0);
        let s = self.hi.max(self.lo);
        let out = Scored {
            score: score_from_excess(s, self.limit),
            baseline: self.base.mean,
            measure: s,
            time_to_threshold: None,
        };
        if s > self.limit {
            // Change accepted: restart the sums and adopt the new level, so
            // one shift is reported once.
            self.hi = 0.0;
            self.lo = 0.0;
            self.base.mean = x;
        } else {
            self.base.push(x, self.alpha);
        }
        Some(out)
    }
    fn reset(&mut self) {
        self.base = Ewm::default();
        self.hi = 0.0;
        self.lo = 0.0;
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} shifted away from its level {:.4} (now {value:.4}): CUSUM {:.1} against limit {}",
            s.baseline, s.measure, self.limit
        )
    }
}

struct ForecastDetector {
    alpha: f64,
    beta: f64,
    threshold: f64,
    direction: Direction,
    horizon_seconds: f64,
    warmup: u32,
    n: u32,
    level: f64,
    /// Per second.
    trend: f64,
    last_at: i64,
}

impl Detector for ForecastDetector {
    fn name(&self) -> &'static str {
        "forecast"
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        if self.n == 0 {
            self.level = x;
            self.trend = 0.0;
        } else {
            let dt = (at - self.last_at).max(1) as f64;
            let prev = self.level;
            self.level = self.alpha * x + (1.0 - self.alpha) * (self.level + self.trend * dt);
            let slope = (self.level - prev) / dt;
            self.trend = self.beta * slope + (1.0 - self.beta) * self.trend;
        }
        self.n = self.n.saturating_add(1);
        self.last_at = at;
        if self.n < self.warmup.max(2) {
            return None;
        }
        // Seconds until the bad side of the threshold, from the current level
        // and trend; zero if already there, infinite if heading away.
        let gap = match self.direction {
            Direction::Above => self.threshold - self.level,
            Direction::Below => self.level - self.threshold,
        };
        let closing = match self.direction {
            Direction::Above => self.trend,
            Direction::Below => -self.trend,
        };
        let ttt = if gap <= 0.0 {
            0.0
        } else if closing > 0.0 {
            gap / closing
        } else {
            f64::INFINITY
        };
        // horizon / ttt is the excess: 1 (score 0.5) when the crossing is
        // exactly one horizon away.
        let score = if ttt == 0.0 {
            1.0
        } else {
            score_from_excess(self.horizon_seconds / ttt, 1.0)
        };
        Some(Scored {
            score,
            baseline: self.threshold,
            measure: ttt,
            time_to_threshold: ttt.is_finite().then_some(ttt),
        })
    }
    fn reset(&mut self) {
        self.n = 0;
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        let side = match self.direction {
            Direction::Above => "above",
            Direction::Below => "below",
        };
        match s.time_to_threshold {
            Some(0.0) => {
                format!(
                    "{signal} {value:.4} is already {side} its threshold {}",
                    self.threshold
                )
            }
            Some(t) => format!(
                "{signal} {value:.4} is trending to go {side} {} in {} (horizon {})",
                self.threshold,
                human_duration(t),
                human_duration(self.horizon_seconds)
            ),
            None => format!(
                "{signal} {value:.4} is not heading {side} its threshold {}",
                self.threshold
            ),
        }
    }
}

/// "3h12m", "2d4h", "45s".
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "never".into();
    }
    let s = seconds.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

struct GaussianDetector {
    window: VecDeque<f64>,
    cap: usize,
    step: usize,
    pending: usize,
    mean: f64,
    std: f64,
}

impl GaussianDetector {
    fn refresh(&mut self) {
        let n = self.window.len() as f64;
        let mean = self.window.iter().sum::<f64>() / n;
        let var = self
            .window
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum::<f64>()
            / n;
        self.mean = mean;
        self.std = if var > 0.0 { var.sqrt() } else { 1e-6 };
    }
}

impl Detector for GaussianDetector {
    fn name(&self) -> &'static str {
        "gaussian"
    }
    fn score(&mut self, _at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        let out = (!self.window.is_empty()).then(|| {
            let z = (x - self.mean).abs() / self.std;
            Scored {
                score: 1.0 - 0.5 * erfc(z / std::f64::consts::SQRT_2),
                baseline: self.mean,
                measure: z,
                time_to_threshold: None,
            }
        });
        if self.window.len() < self.cap {
            // Filling: the statistics follow every sample, as in NAB.
            self.window.push_back(x);
            self.refresh();
        } else {
            self.window.pop_front();
            self.window.push_back(x);
            self.pending += 1;
            if self.pending == self.step {
                self.pending = 0;
                self.refresh();
            }
        }
        out
    }
    fn reset(&mut self) {
        self.window.clear();
        self.pending = 0;
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} {value:.4} is {:.1}σ from the window mean {:.4}",
            s.measure, s.baseline
        )
    }
}

struct DiffDetector {
    inner: Box<dyn Detector>,
    last: Option<f64>,
}

impl Detector for DiffDetector {
    fn name(&self) -> &'static str {
        "diff"
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        let prev = self.last.replace(x)?;
        self.inner.score(at, x - prev)
    }
    fn reset(&mut self) {
        self.inner.reset();
        self.last = None;
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        self.inner.explain(&format!("change of {signal}"), value, s)
    }
}

struct EnsembleDetector {
    members: Vec<Box<dyn Detector>>,
    /// (sample index, raw score), decreasing scores: the front is the
    /// maximum of the last `refractory` samples (O(1) amortized).
    recent: VecDeque<(u64, f64)>,
    refractory: u64,
    n: u64,
}

impl Detector for EnsembleDetector {
    fn name(&self) -> &'static str {
        "ensemble"
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        let mut best: Option<Scored> = None;
        for m in &mut self.members {
            if let Some(s) = m.score(at, x)
                && best.is_none_or(|b| s.score > b.score)
            {
                best = Some(s);
            }
        }
        let mut s = best?;
        let raw = s.score;
        while self
            .recent
            .front()
            .is_some_and(|&(i, _)| self.n - i > self.refractory)
        {
            self.recent.pop_front();
        }
        let recent_max = self.recent.front().map_or(0.0, |&(_, v)| v);
        if raw <= recent_max {
            // Still inside the same episode: keep it below the peak already
            // reported so a threshold crossing happens once.
            s.score = raw * 0.5;
        }
        if self.refractory > 0 {
            while self.recent.back().is_some_and(|&(_, v)| v <= raw) {
                self.recent.pop_back();
            }
            self.recent.push_back((self.n, raw));
        }
        self.n += 1;
        Some(s)
    }
    fn reset(&mut self) {
        for m in &mut self.members {
            m.reset();
        }
        self.recent.clear();
        self.n = 0;
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} {value:.4} departs from its baseline {:.4} (ensemble of {} detectors, strongest measure {:.1})",
            s.baseline,
            self.members.len(),
            s.measure
        )
    }
}
