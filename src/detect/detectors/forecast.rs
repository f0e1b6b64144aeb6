//! The Holt linear-trend forecast: how soon a series is expected to cross
//! its threshold, scored against a horizon.
//!
//! Pure, like every detector: timestamps come with the samples. Must not
//! decide what to do about a crossing; runbooks do.

use super::{Detector, DetectorKind, Direction, Scored};
use crate::detect::stats::{alpha_from_half_life, score_from_excess};

/// How much a new sample moves the level and the trend: per sample
/// (`alpha`, `beta`) or, with half-lives, by the time since the previous
/// sample, so that the forecast means the same at every scrape interval.
#[derive(Clone, Copy, Debug)]
pub(super) struct Weights {
    pub alpha: f64,
    pub half_life_seconds: Option<f64>,
    pub beta: f64,
    pub trend_half_life_seconds: Option<f64>,
}

impl Weights {
    /// The level's and the trend's weights for a sample `dt` seconds after
    /// the previous one.
    fn at(&self, dt: i64) -> (f64, f64) {
        let by = |per_sample: f64, half_life: Option<f64>| {
            half_life.map_or(per_sample, |h| alpha_from_half_life(dt, h))
        };
        (
            by(self.alpha, self.half_life_seconds),
            by(self.beta, self.trend_half_life_seconds),
        )
    }
}

pub(super) struct ForecastDetector {
    weights: Weights,
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

impl ForecastDetector {
    /// A fresh state from [`super::DetectorParams::Forecast`]'s fields.
    pub(super) fn new(
        weights: Weights,
        threshold: f64,
        direction: Direction,
        horizon_seconds: f64,
        warmup: u32,
    ) -> Self {
        Self {
            weights,
            threshold,
            direction,
            horizon_seconds,
            warmup,
            n: 0,
            level: 0.0,
            trend: 0.0,
            last_at: 0,
        }
    }
}

impl Detector for ForecastDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Forecast.name()
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        if self.n == 0 {
            self.level = x;
            self.trend = 0.0;
        } else {
            let (alpha, beta) = self.weights.at(at - self.last_at);
            let dt = (at - self.last_at).max(1) as f64;
            let prev = self.level;
            self.level = alpha * x + (1.0 - alpha) * (self.level + self.trend * dt);
            let slope = (self.level - prev) / dt;
            self.trend = beta * slope + (1.0 - beta) * self.trend;
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
            judged: None,
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
            // The sample is past the threshold but the smoothed level the
            // forecast runs on is not yet: say both, not "will go above"
            // about a value that already is.
            Some(t) if self.past_threshold(value) => format!(
                "{signal} {value:.4} is {side} its threshold {}; its smoothed level {:.4} crosses it in {} (horizon {})",
                self.threshold,
                self.level,
                human_duration(t),
                human_duration(self.horizon_seconds)
            ),
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

impl ForecastDetector {
    /// Whether a sample is on the threshold's bad side.
    fn past_threshold(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value >= self.threshold,
            Direction::Below => value <= self.threshold,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn per_sample(alpha: f64, beta: f64) -> Weights {
        Weights {
            alpha,
            half_life_seconds: None,
            beta,
            trend_half_life_seconds: None,
        }
    }

    /// The time to threshold ten minutes after a ramp doubles its slope,
    /// sampled every `interval` seconds.
    fn after_a_change(weights: Weights, interval: i64) -> f64 {
        let mut f = ForecastDetector::new(weights, 100.0, Direction::Above, 86_400.0, 2);
        let mut last = None;
        let mut at = 0;
        while at <= 4_200 {
            let x = if at <= 3_600 {
                0.005 * at as f64
            } else {
                18.0 + 0.01 * (at - 3_600) as f64
            };
            last = f.score(at, x);
            at += interval;
        }
        last.and_then(|s| s.time_to_threshold)
            .expect("a crossing ahead")
    }

    #[test]
    fn with_half_lives_the_forecast_means_the_same_at_every_interval() {
        let timed = Weights {
            alpha: 0.1,
            half_life_seconds: Some(200.0),
            beta: 0.05,
            trend_half_life_seconds: Some(400.0),
        };
        let (every_15s, every_60s) = (after_a_change(timed, 15), after_a_change(timed, 60));
        assert!(
            (every_15s / every_60s - 1.0).abs() < 0.05,
            "{every_15s} s vs {every_60s} s"
        );
        // Per sample, the 60 s series forgets four times faster in time.
        let (every_15s, every_60s) = (
            after_a_change(per_sample(0.1, 0.05), 15),
            after_a_change(per_sample(0.1, 0.05), 60),
        );
        assert!(
            (every_15s / every_60s - 1.0).abs() > 0.15,
            "{every_15s} s vs {every_60s} s"
        );
    }

    /// A sample already above the threshold is not "trending to go above"
    /// it, even while the smoothed level the forecast runs on is below.
    #[test]
    fn a_sample_past_the_threshold_is_not_called_a_trend_towards_it() {
        let mut f = ForecastDetector::new(per_sample(0.1, 0.5), 0.9, Direction::Above, 300.0, 2);
        let mut last = None;
        for (i, x) in [0.80, 0.82, 0.84, 0.86, 0.9334].into_iter().enumerate() {
            last = f.score(i as i64 * 10, x).map(|s| (x, s));
        }
        let (x, s) = last.expect("scored after warm-up");
        let t = s.time_to_threshold.expect("a crossing ahead");
        assert!(t > 0.0, "the level is still below: {t}");
        let text = f.explain("saturation", x, &s);
        assert!(
            text.starts_with("saturation 0.9334 is above its threshold 0.9;")
                && text.contains("smoothed level")
                && !text.contains("trending to go above"),
            "{text}"
        );
        // Below the threshold, it is a trend.
        let mut f = ForecastDetector::new(per_sample(0.5, 0.5), 0.9, Direction::Above, 300.0, 2);
        let mut last = None;
        for (i, x) in [0.70, 0.75, 0.80, 0.85].into_iter().enumerate() {
            last = f.score(i as i64 * 10, x).map(|s| (x, s));
        }
        let (x, s) = last.expect("scored");
        assert!(
            f.explain("saturation", x, &s)
                .contains("is trending to go above 0.9 in"),
            "{}",
            f.explain("saturation", x, &s)
        );
    }
}
