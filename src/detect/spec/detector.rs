//! A model spec's `detector:` block: which detectors a spec may name
//! ([`SPEC_KINDS`]), the checks of each one's parameters (half-lives,
//! windows, the deprecated per-sample spellings, with their warnings) and
//! the resulting [`DetectorParams`], each parameter left out taking its value
//! from [`defaults`].

use super::check::{Check, Seconds};
use super::{Error, RawDetector, RawSpan};
use crate::detect::detectors::{DetectorKind, DetectorParams, Direction, defaults};

/// The detectors a model spec may name, in the order errors list them. The
/// rest (`gaussian`, `diff`, `ensemble`, `context`, `cad`, `entropy`, `knn`,
/// `decompose`, `rank`) are benchmark and CLI
/// tools until the evaluation supports them for operational signals.
pub(super) const SPEC_KINDS: [DetectorKind; 5] = [
    DetectorKind::Ewma,
    DetectorKind::Mad,
    DetectorKind::Seasonal,
    DetectorKind::Cusum,
    DetectorKind::Forecast,
];

/// Checks of one `detector:` block; `at` is its place, e.g.
/// `signals[0].detector`.
struct DetectorCheck<'a> {
    c: &'a Check<'a>,
    at: &'a str,
    d: &'a RawDetector,
}

impl DetectorCheck<'_> {
    fn field(&self, f: &str) -> String {
        format!("{}.{f}", self.at)
    }

    fn not_in_specs(&self) -> Error {
        let names: Vec<_> = SPEC_KINDS.iter().map(|k| k.name()).collect();
        self.c.fail(
            self.field("type"),
            format!(
                "must be one of {} (got {:?})",
                names.join(", "),
                self.d.kind
            ),
        )
    }

    /// Rejects parameters the chosen detector does not take, so a typo'd
    /// placement is not silently ignored.
    fn only(&self, allowed: &[&str]) -> Result<(), Error> {
        let d = self.d;
        let given: [(&str, bool); 16] = [
            ("alpha", d.alpha.is_some()),
            ("beta", d.beta.is_some()),
            ("warmup", d.warmup.is_some()),
            ("limit", d.limit.is_some()),
            ("window", d.window.is_some()),
            ("window_seconds", d.window_seconds.is_some()),
            ("half_life", d.half_life.is_some()),
            ("half_life_seconds", d.half_life_seconds.is_some()),
            ("trend_half_life", d.trend_half_life.is_some()),
            ("period_seconds", d.period_seconds.is_some()),
            ("buckets", d.buckets.is_some()),
            ("min_cycles", d.min_cycles.is_some()),
            ("k", d.k.is_some()),
            ("threshold", d.threshold.is_some()),
            ("direction", d.direction.is_some()),
            ("horizon_seconds", d.horizon_seconds.is_some()),
        ];
        match given
            .iter()
            .find(|(name, set)| *set && !allowed.contains(name))
        {
            Some((name, _)) => Err(self.c.fail(
                self.field(name),
                format!(
                    "is not a parameter of detector {:?}; it takes {}",
                    d.kind,
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    fn alpha(&self, default: f64) -> Result<f64, Error> {
        let f = self.field("alpha");
        self.c
            .range(&f, self.d.alpha, default, 1e-6, 1.0, "in (0, 1]")
    }

    fn warmup(&self, default: u32) -> Result<u32, Error> {
        let f = self.field("warmup");
        let what = "between 1 and 1000000";
        self.c.range(&f, self.d.warmup, default, 1, 1_000_000, what)
    }

    fn limit(&self, default: f64) -> Result<f64, Error> {
        let f = self.field("limit");
        self.c
            .range(&f, self.d.limit, default, 1e-9, 1e9, "positive")
    }

    /// The duration in field `name` (`text`), in seconds: a half-life.
    fn half_life(&self, name: &str, text: &str) -> Result<f64, Error> {
        let what = "a duration between 1s and 365d, e.g. 10m";
        (self.c).duration(
            &self.field(name),
            text,
            1.0,
            365.0 * 86_400.0,
            what,
            Seconds::Any,
        )
    }

    /// Warns that the per-sample weight `name` (`value`) is deprecated,
    /// naming the half-life field `instead` and its value at 30 s.
    fn deprecated_weight(&self, name: &str, value: f64, instead: &str) {
        self.c.warn(
            &self.field(name),
            format!(
                "is deprecated and will be refused in the next release: a weight per sample \
                 means a different span at every scrape interval; write {instead} instead \
                 (at 30 s samples, {name} {value} is {instead}: {}s)",
                half_life_for(value, 30.0).round()
            ),
        );
    }

    /// An exponential average's weight: `half_life` (a duration) or
    /// `half_life_seconds`, or the deprecated per-sample `alpha` (with a
    /// warning). Returns `(alpha, half_life_seconds)`; with neither given,
    /// the half-life `default_half_life`.
    fn weight(
        &self,
        default_alpha: f64,
        default_half_life: f64,
    ) -> Result<(f64, Option<f64>), Error> {
        let d = self.d;
        let half_life = match (&d.half_life, d.half_life_seconds) {
            (Some(_), Some(_)) => {
                return Err(self.c.fail(
                    self.field("half_life_seconds"),
                    "must not be given with half_life (one or the other)",
                ));
            }
            (Some(text), None) => Some(self.half_life("half_life", text)?),
            (None, Some(v)) => {
                let f = self.field("half_life_seconds");
                Some(self.c.range(
                    &f,
                    Some(v),
                    v,
                    1.0,
                    365.0 * 86_400.0,
                    "between 1 and 31536000",
                )?)
            }
            (None, None) => None,
        };
        match (half_life, d.alpha) {
            (Some(_), Some(_)) => Err(self.c.fail(
                self.field("alpha"),
                "must not be given with a half-life (alpha is the deprecated per-sample form)",
            )),
            (Some(h), None) => Ok((default_alpha, Some(h))),
            (None, Some(_)) => {
                let alpha = self.alpha(default_alpha)?;
                self.deprecated_weight("alpha", alpha, "half_life");
                Ok((alpha, None))
            }
            (None, None) => Ok((default_alpha, Some(default_half_life))),
        }
    }

    /// A forecast's trend weight: `trend_half_life` (a duration), or the
    /// deprecated per-sample `beta` (with a warning), as [`Self::weight`]
    /// for the level. Returns `(beta, trend_half_life_seconds)`.
    fn trend_weight(
        &self,
        default_beta: f64,
        default_half_life: f64,
    ) -> Result<(f64, Option<f64>), Error> {
        let d = self.d;
        match (&d.trend_half_life, d.beta) {
            (Some(_), Some(_)) => Err(self.c.fail(
                self.field("beta"),
                "must not be given with trend_half_life (beta is the deprecated per-sample form)",
            )),
            (Some(text), None) => {
                Ok((default_beta, Some(self.half_life("trend_half_life", text)?)))
            }
            (None, Some(_)) => {
                let f = self.field("beta");
                let beta = self
                    .c
                    .range(&f, d.beta, default_beta, 1e-6, 1.0, "in (0, 1]")?;
                self.deprecated_weight("beta", beta, "trend_half_life");
                Ok((beta, None))
            }
            (None, None) => Ok((default_beta, Some(default_half_life))),
        }
    }

    /// A sliding window: a duration (`window: 30m`, `window_seconds:
    /// 1800`), or the deprecated count of samples (`window: 60`, with a
    /// warning). Returns `(sample cap, window_seconds)`; with neither given,
    /// `default_seconds`.
    fn window(
        &self,
        default_samples: u32,
        default_seconds: u32,
    ) -> Result<(u32, Option<u32>), Error> {
        use defaults::MAX_WINDOW_SAMPLES;
        let d = self.d;
        let what = "a duration between 1m and 31d, e.g. 30m";
        let seconds = match (&d.window, d.window_seconds) {
            (Some(_), Some(_)) => {
                return Err(self.c.fail(
                    self.field("window_seconds"),
                    "must not be given with window (one or the other)",
                ));
            }
            (Some(RawSpan::Count(n)), None) => {
                let f = self.field("window");
                let n = self.c.range(
                    &f,
                    Some(*n),
                    default_samples,
                    5,
                    100_000,
                    "between 5 and 100000",
                )?;
                self.c.warn(
                    &f,
                    format!(
                        "as a count of samples ({n}) is deprecated and will be refused in the next \
                         release: write it as a duration (at 30 s samples, window: {}m)",
                        (f64::from(n) * 30.0 / 60.0).round()
                    ),
                );
                return Ok((n, None));
            }
            (Some(RawSpan::Duration(text)), None) => {
                let f = self.field("window");
                let v = self
                    .c
                    .duration(&f, text, 60.0, 31.0 * 86_400.0, what, Seconds::Whole)?;
                // Whole, and at most 31 days: the cast is exact.
                v as u32
            }
            (None, Some(v)) => self.c.range(
                &self.field("window_seconds"),
                Some(v),
                v,
                60,
                31 * 86_400,
                "between 60 and 2678400",
            )?,
            (None, None) => default_seconds,
        };
        Ok((MAX_WINDOW_SAMPLES, Some(seconds)))
    }
}

/// The half-life, in seconds, of a per-sample weight `alpha` at samples
/// `interval` seconds apart: `−interval / log2(1 − alpha)`.
pub fn half_life_for(alpha: f64, interval: f64) -> f64 {
    if alpha >= 1.0 {
        return interval;
    }
    -interval / (1.0 - alpha).log2()
}

/// One `detector:` block → its parameters, each left out taking its value
/// from [`defaults`].
pub(super) fn validate_detector(
    c: &Check,
    at: &str,
    d: &RawDetector,
) -> Result<DetectorParams, Error> {
    let p = DetectorCheck { c, at, d };
    let f = |name: &str| p.field(name);
    let Some(kind) = DetectorKind::from_name(&d.kind) else {
        return Err(p.not_in_specs());
    };
    Ok(match kind {
        DetectorKind::Ewma => {
            use defaults::ewma::*;
            p.only(&["half_life", "half_life_seconds", "alpha", "warmup", "limit"])?;
            let (alpha, half_life_seconds) = p.weight(ALPHA, HALF_LIFE_SECONDS)?;
            DetectorParams::Ewma {
                alpha,
                half_life_seconds,
                warmup: p.warmup(WARMUP)?,
                limit: p.limit(LIMIT)?,
            }
        }
        DetectorKind::Mad => {
            use defaults::mad::*;
            p.only(&["window", "window_seconds", "warmup", "limit"])?;
            let (window, window_seconds) = p.window(WINDOW, WINDOW_SECONDS)?;
            DetectorParams::Mad {
                window,
                window_seconds,
                warmup: p.warmup(WARMUP)?,
                limit: p.limit(LIMIT)?,
            }
        }
        DetectorKind::Seasonal => {
            use defaults::seasonal::*;
            p.only(&["period_seconds", "buckets", "alpha", "min_cycles", "limit"])?;
            DetectorParams::Seasonal {
                period_seconds: c.range(
                    &f("period_seconds"),
                    d.period_seconds,
                    PERIOD_SECONDS,
                    60,
                    31 * 86_400,
                    "between 60 and 2678400",
                )?,
                buckets: c.range(
                    &f("buckets"),
                    d.buckets,
                    BUCKETS,
                    1,
                    10_080,
                    "between 1 and 10080",
                )?,
                alpha: p.alpha(ALPHA)?,
                min_cycles: c.range(
                    &f("min_cycles"),
                    d.min_cycles,
                    MIN_CYCLES,
                    1,
                    1000,
                    "between 1 and 1000",
                )?,
                limit: p.limit(LIMIT)?,
            }
        }
        DetectorKind::Cusum => {
            use defaults::cusum::*;
            p.only(&[
                "half_life",
                "half_life_seconds",
                "alpha",
                "k",
                "warmup",
                "limit",
            ])?;
            let (alpha, half_life_seconds) = p.weight(ALPHA, HALF_LIFE_SECONDS)?;
            DetectorParams::Cusum {
                alpha,
                half_life_seconds,
                k: c.range(&f("k"), d.k, K, 0.0, 100.0, "between 0 and 100")?,
                warmup: p.warmup(WARMUP)?,
                limit: p.limit(LIMIT)?,
            }
        }
        DetectorKind::Forecast => validate_forecast(&p)?,
        DetectorKind::Gaussian
        | DetectorKind::Diff
        | DetectorKind::Ensemble
        | DetectorKind::Context
        | DetectorKind::Cad
        | DetectorKind::Entropy
        | DetectorKind::Knn
        | DetectorKind::Decompose
        | DetectorKind::Rank => {
            return Err(p.not_in_specs());
        }
    })
}

fn validate_forecast(p: &DetectorCheck) -> Result<DetectorParams, Error> {
    use defaults::forecast::*;
    let (c, d) = (p.c, p.d);
    p.only(&[
        "half_life",
        "half_life_seconds",
        "alpha",
        "trend_half_life",
        "beta",
        "threshold",
        "direction",
        "horizon_seconds",
        "warmup",
    ])?;
    let what = "the value not to cross";
    let threshold = match d.threshold {
        None => {
            return Err(c.fail(
                p.field("threshold"),
                format!("is required for a forecast: {what}"),
            ));
        }
        Some(t) if !t.is_finite() => {
            return Err(c.not_finite(&p.field("threshold"), &format!("a number, {what}"), t));
        }
        Some(t) => t,
    };
    let direction = match d.direction.as_deref() {
        None => Direction::Above,
        Some(text) => c.direction(p.field("direction"), text)?,
    };
    let (alpha, half_life_seconds) = p.weight(ALPHA, HALF_LIFE_SECONDS)?;
    let (beta, trend_half_life_seconds) = p.trend_weight(BETA, TREND_HALF_LIFE_SECONDS)?;
    Ok(DetectorParams::Forecast {
        alpha,
        half_life_seconds,
        beta,
        trend_half_life_seconds,
        threshold,
        direction,
        horizon_seconds: c.range(
            &p.field("horizon_seconds"),
            d.horizon_seconds,
            HORIZON_SECONDS,
            1.0,
            1e9,
            "a positive number of seconds",
        )?,
        warmup: p.warmup(WARMUP)?,
    })
}
