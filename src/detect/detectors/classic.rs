//! The statistical detectors the model specs deploy on most signals (EWMA
//! z-score, robust median/MAD, a seasonal time-of-period baseline,
//! two-sided CUSUM change points) and NAB's baselines the evaluation
//! compares against (the windowed Gaussian, the first difference, an
//! ensemble by maximum score), with what they share: exponential weights by
//! sample or by half-life, and the z-score.

use std::collections::VecDeque;

use super::{Detector, DetectorKind, Judged, Scored, Span, human_duration};
use crate::detect::stats::{
    Episodes, Ewm, SortedWindow, alpha_from_half_life, erfc, half_life_memory, score_from_excess,
};

/// Samples carrying 95% of an exponential average's weight with factor
/// `alpha`, at most the `n` it has seen.
fn ewm_memory(alpha: f64, n: u64) -> u64 {
    let memory = if alpha > 0.0 && alpha < 1.0 {
        (0.05f64.ln() / (1.0 - alpha).ln()).ceil() as u64
    } else {
        1
    };
    memory.clamp(1, n.max(1))
}

pub(super) fn z_of(x: f64, mean: f64, std: f64) -> f64 {
    let d = (x - mean).abs();
    // A flat history (std 0) makes any change infinitely surprising; scale by
    // a tiny fraction of the level instead so the score stays rankable.
    let floor = 1e-6 * mean.abs().max(1e-9);
    d / std.max(floor)
}

/// How much one sample weighs in an exponential average: a fixed `alpha`
/// per sample, or a half-life in seconds turned into a weight for the
/// actual interval (and floored at the running mean's `1/n` while few
/// samples are in).
#[derive(Clone, Copy, Debug)]
enum Weight {
    PerSample(f64),
    HalfLife { seconds: f64, last: Option<i64> },
}

impl Weight {
    fn new(alpha: f64, half_life_seconds: Option<f64>) -> Self {
        match half_life_seconds {
            Some(seconds) => Weight::HalfLife {
                seconds,
                last: None,
            },
            None => Weight::PerSample(alpha),
        }
    }

    /// Folds `x`, seen at `at`, into `ewm`.
    fn push(&mut self, ewm: &mut Ewm, at: i64, x: f64) {
        match self {
            Weight::PerSample(alpha) => ewm.push(x, *alpha),
            Weight::HalfLife { seconds, last } => {
                let alpha = last.map_or(1.0, |t| alpha_from_half_life(at - t, *seconds));
                *last = Some(at);
                ewm.push_floored(x, alpha);
            }
        }
    }

    /// Adopts `x` at `at` as the new level (CUSUM after a change).
    fn restart_at(&mut self, at: i64) {
        if let Weight::HalfLife { last, .. } = self {
            *last = Some(at);
        }
    }

    fn reset(&mut self) {
        if let Weight::HalfLife { last, .. } = self {
            *last = None;
        }
    }

    /// How far back the weight that counts (95%) reaches, `n` samples in.
    fn span(&self, n: u64) -> Span {
        match self {
            Weight::PerSample(alpha) => Span::Samples(ewm_memory(*alpha, n)),
            Weight::HalfLife { seconds, .. } => Span::Seconds(half_life_memory(*seconds)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Weight::PerSample(alpha) => format!("α={alpha}"),
            Weight::HalfLife { seconds, .. } => format!("half-life {}", human_duration(*seconds)),
        }
    }
}

pub(super) struct EwmaDetector {
    weight: Weight,
    warmup: u32,
    limit: f64,
    ewm: Ewm,
}

impl EwmaDetector {
    pub(super) fn new(alpha: f64, half_life_seconds: Option<f64>, warmup: u32, limit: f64) -> Self {
        EwmaDetector {
            weight: Weight::new(alpha, half_life_seconds),
            warmup,
            limit,
            ewm: Ewm::default(),
        }
    }
}

impl Detector for EwmaDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Ewma.name()
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
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
                judged: Some(Judged {
                    baseline: self.ewm.mean,
                    spread: self.ewm.std(),
                    span: self.weight.span(self.ewm.n),
                }),
            }
        });
        self.weight.push(&mut self.ewm, at, x);
        out
    }
    fn reset(&mut self) {
        self.ewm = Ewm::default();
        self.weight.reset();
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} {value:.4} is {:.1}σ from its EWMA mean {:.4} ({}, limit {}σ)",
            s.measure,
            s.baseline,
            self.weight.describe(),
            self.limit
        )
    }
}

pub(super) struct MadDetector {
    warmup: u32,
    limit: f64,
    /// A window in time: samples this many seconds old leave it.
    seconds: Option<i64>,
    window: SortedWindow,
}

impl MadDetector {
    pub(super) fn new(window: u32, window_seconds: Option<u32>, warmup: u32, limit: f64) -> Self {
        MadDetector {
            warmup,
            limit,
            seconds: window_seconds.map(i64::from),
            window: SortedWindow::new(window as usize),
        }
    }
}

impl Detector for MadDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Mad.name()
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        if let Some(max_age) = self.seconds {
            self.window.expire(at, max_age);
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
                judged: Some(Judged {
                    baseline: median,
                    spread: sigma,
                    span: match (self.window.oldest_at(), self.window.newest_at()) {
                        (Some(old), Some(new)) => Span::Seconds(new - old),
                        _ => Span::Samples(self.window.len() as u64),
                    },
                }),
            });
        }
        match self.seconds {
            Some(max_age) => self.window.push_at(at, x, max_age),
            None => self.window.push(x),
        }
        out
    }
    fn reset(&mut self) {
        self.window.clear();
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} {value:.4} is {:.1} robust σ from the {} median {:.4} (limit {})",
            s.measure,
            match self.seconds {
                Some(t) => format!("{} window's", human_duration(t as f64)),
                None => "window".to_string(),
            },
            s.baseline,
            self.limit
        )
    }
}

pub(super) struct SeasonalDetector {
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
    pub(super) fn new(
        period_seconds: i64,
        buckets: u32,
        alpha: f64,
        min_cycles: u32,
        limit: f64,
    ) -> Self {
        SeasonalDetector {
            period_seconds,
            alpha,
            min_cycles,
            limit,
            slots: vec![Slot::default(); buckets.max(1) as usize],
        }
    }

    fn slot(&self, at: i64) -> usize {
        let period = self.period_seconds.max(1);
        let phase = at.rem_euclid(period);
        let n = self.slots.len() as i64;
        ((phase * n / period).clamp(0, n - 1)) as usize
    }
}

impl Detector for SeasonalDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Seasonal.name()
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
            // The slot's periods that still weigh (95%), in seconds.
            let periods = ewm_memory(self.alpha, u64::from(slot.cycles));
            Scored {
                score: score_from_excess(z, self.limit),
                baseline: slot.ewm.mean,
                measure: z,
                time_to_threshold: None,
                judged: Some(Judged {
                    baseline: slot.ewm.mean,
                    spread: std,
                    span: Span::Seconds(periods as i64 * self.period_seconds),
                }),
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

pub(super) struct CusumDetector {
    weight: Weight,
    k: f64,
    warmup: u32,
    limit: f64,
    base: Ewm,
    hi: f64,
    lo: f64,
}

impl CusumDetector {
    pub(super) fn new(
        alpha: f64,
        half_life_seconds: Option<f64>,
        k: f64,
        warmup: u32,
        limit: f64,
    ) -> Self {
        CusumDetector {
            weight: Weight::new(alpha, half_life_seconds),
            k,
            warmup,
            limit,
            base: Ewm::default(),
            hi: 0.0,
            lo: 0.0,
        }
    }
}

impl Detector for CusumDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Cusum.name()
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        if self.base.n < u64::from(self.warmup) {
            self.weight.push(&mut self.base, at, x);
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
            judged: Some(Judged {
                baseline: self.base.mean,
                spread: self.base.std().max(floor),
                span: self.weight.span(self.base.n),
            }),
        };
        if s > self.limit {
            // Change accepted: restart the sums and adopt the new level, so
            // one shift is reported once.
            self.hi = 0.0;
            self.lo = 0.0;
            self.base.mean = x;
            self.weight.restart_at(at);
        } else {
            self.weight.push(&mut self.base, at, x);
        }
        Some(out)
    }
    fn reset(&mut self) {
        self.base = Ewm::default();
        self.weight.reset();
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

pub(super) struct GaussianDetector {
    window: VecDeque<f64>,
    cap: usize,
    step: usize,
    pending: usize,
    mean: f64,
    std: f64,
}

impl GaussianDetector {
    pub(super) fn new(window: u32, step: u32) -> Self {
        GaussianDetector {
            window: VecDeque::with_capacity(window as usize),
            cap: window.max(1) as usize,
            step: step.max(1) as usize,
            pending: 0,
            mean: 0.0,
            std: 0.0,
        }
    }

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
        DetectorKind::Gaussian.name()
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
                judged: None,
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

pub(super) struct DiffDetector {
    inner: Box<dyn Detector>,
    last: Option<f64>,
}

impl DiffDetector {
    pub(super) fn new(inner: Box<dyn Detector>) -> Self {
        DiffDetector { inner, last: None }
    }
}

impl Detector for DiffDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Diff.name()
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

pub(super) struct EnsembleDetector {
    members: Vec<Box<dyn Detector>>,
    episodes: Episodes,
}

impl EnsembleDetector {
    pub(super) fn new(members: Vec<Box<dyn Detector>>, refractory: u32) -> Self {
        EnsembleDetector {
            members,
            episodes: Episodes::new(u64::from(refractory)),
        }
    }
}

impl Detector for EnsembleDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Ensemble.name()
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
        s.score = self.episodes.damp(s.score);
        Some(s)
    }
    fn reset(&mut self) {
        for m in &mut self.members {
            m.reset();
        }
        self.episodes.clear();
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
