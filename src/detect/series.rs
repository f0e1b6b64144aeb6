//! Per-series state: one detector for one signal of one component, plus what
//! turns raw samples into something a detector may see — non-finite values
//! and stale series become "no data", long gaps restart the model, counters
//! become rates with resets handled — and the finding a score produces.
//!
//! Pure: the caller passes every sample's timestamp and the current `now`.

use super::detectors::{Detector, DetectorParams, Scored, Span};
use super::{ComponentId, Finding, JudgedWindow};

/// How a series is treated before scoring.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
pub struct SeriesOptions {
    /// A gap longer than this restarts the detector (it warms up again).
    pub max_gap_seconds: i64,
    /// A series whose newest sample is older than this is "no data".
    pub stale_after_seconds: i64,
    /// Raw counter: score its per-second rate, treating a decrease as a reset.
    pub counter: bool,
    /// Score at or above which a sample becomes a finding (calibrated
    /// detectors: past the limit and higher than this share of the series'
    /// recent scores, `calibrate.rs`).
    pub threshold: f64,
}

impl Default for SeriesOptions {
    fn default() -> Self {
        SeriesOptions {
            max_gap_seconds: 900,
            stale_after_seconds: 300,
            counter: false,
            threshold: 0.5,
        }
    }
}

/// Why a sample or a series could not be scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoData {
    /// NaN or ±Inf.
    NotFinite,
    /// Not newer than the previous sample.
    OutOfOrder,
    /// The newest sample is older than `stale_after_seconds`.
    Stale,
    /// The series has no samples at all.
    Missing,
}

impl NoData {
    pub fn as_str(self) -> &'static str {
        match self {
            NoData::NotFinite => "not finite",
            NoData::OutOfOrder => "out of order",
            NoData::Stale => "stale",
            NoData::Missing => "missing",
        }
    }
}

/// What one sample amounted to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    NoData(NoData),
    /// The model does not have enough history yet (also right after a gap
    /// or, for counters, on the first sample).
    WarmingUp,
    Normal(Scored),
    Anomalous(Box<Finding>),
}

/// One series' state.
pub struct SeriesState {
    component: ComponentId,
    signal: String,
    options: SeriesOptions,
    detector: Box<dyn Detector>,
    last_at: Option<i64>,
    last_raw: Option<f64>,
    /// First sample since the detector last (re)started, and samples fed to
    /// it since: they date the start of a window counted in samples.
    since: Option<(i64, u64)>,
}

impl SeriesState {
    pub fn new(
        component: ComponentId,
        signal: impl Into<String>,
        params: &DetectorParams,
        options: SeriesOptions,
    ) -> Self {
        SeriesState {
            component,
            signal: signal.into(),
            options,
            detector: params.build_calibrated(),
            last_at: None,
            last_raw: None,
            since: None,
        }
    }

    pub fn component(&self) -> &ComponentId {
        &self.component
    }

    pub fn signal(&self) -> &str {
        &self.signal
    }

    /// Time of the newest accepted sample.
    pub fn last_at(&self) -> Option<i64> {
        self.last_at
    }

    /// Whether the series is currently observed: `Err(NoData)` when it never
    /// had a sample or its newest sample is too old at `now`.
    pub fn freshness(&self, now: i64) -> Result<(), NoData> {
        match self.last_at {
            None => Err(NoData::Missing),
            Some(t) if now - t > self.options.stale_after_seconds => Err(NoData::Stale),
            Some(_) => Ok(()),
        }
    }

    /// Whether a sample arriving at `now` would restart the detector: the
    /// series was last seen more than `max_gap_seconds` before (or never),
    /// so its state carries nothing a later sample could use.
    pub fn gap_restarts_at(&self, now: i64) -> bool {
        self.last_at
            .is_none_or(|t| now - t > self.options.max_gap_seconds)
    }

    /// Feeds one sample.
    pub fn score_sample(&mut self, at: i64, raw: f64) -> Outcome {
        if !raw.is_finite() {
            return Outcome::NoData(NoData::NotFinite);
        }
        if let Some(prev) = self.last_at {
            if at <= prev {
                return Outcome::NoData(NoData::OutOfOrder);
            }
            if at - prev > self.options.max_gap_seconds {
                self.detector.reset();
                self.last_raw = None;
                self.since = None;
            }
        }
        let prev_at = self.last_at.replace(at);
        let value = if self.options.counter {
            let prev_raw = self.last_raw.replace(raw);
            match (prev_raw, prev_at) {
                (Some(p), Some(t)) => {
                    // A decrease means the process restarted and counted from
                    // zero again (Prometheus' rule): the increase is `raw`.
                    let increase = if raw >= p { raw - p } else { raw };
                    increase / (at - t) as f64
                }
                _ => return Outcome::WarmingUp,
            }
        } else {
            raw
        };
        let (first, fed) = *self.since.get_or_insert((at, 0));
        self.since = Some((first, fed + 1));
        match self.detector.score(at, value) {
            None => Outcome::WarmingUp,
            Some(s) if s.score >= self.options.threshold => {
                let mut f = self.finding(at, value, &s);
                f.window = s.judged.zip(prev_at).map(|(j, end)| {
                    let (start, samples) = match j.span {
                        Span::Samples(n) => (window_start(first, end, fed, n), Some(n)),
                        Span::Seconds(t) => ((end - t).max(first), None),
                    };
                    JudgedWindow {
                        start,
                        end,
                        samples,
                        baseline: j.baseline,
                        spread: j.spread,
                    }
                });
                Outcome::Anomalous(Box::new(f))
            }
            Some(s) => Outcome::Normal(s),
        }
    }

    /// Feeds samples in order and returns the findings they produced (used
    /// to warm up from a range query, and by tests).
    pub fn score_samples(&mut self, samples: &[(i64, f64)]) -> Vec<Finding> {
        samples
            .iter()
            .filter_map(|&(at, v)| match self.score_sample(at, v) {
                Outcome::Anomalous(f) => Some(*f),
                _ => None,
            })
            .collect()
    }

    fn finding(&self, at: i64, value: f64, s: &Scored) -> Finding {
        Finding {
            component: self.component.clone(),
            signal: self.signal.clone(),
            detector: self.detector.name().to_string(),
            score: s.score.clamp(0.0, 1.0),
            at,
            value,
            baseline: s.baseline,
            time_to_threshold_seconds: s.time_to_threshold,
            explanation: self.detector.explain(&self.signal, value, s),
            window: None,
        }
    }
}

/// Start of the last `n` of the `fed` samples from `first` to `end`: exact
/// when they are all of them, otherwise dated by the mean interval.
fn window_start(first: i64, end: i64, fed: u64, n: u64) -> i64 {
    if n >= fed || fed < 2 {
        return first;
    }
    let interval = (end - first) as f64 / (fed - 1) as f64;
    (end - ((n - 1) as f64 * interval).round() as i64).max(first)
}
