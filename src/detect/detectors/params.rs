//! What configures a detector: the kinds, their validated parameters and
//! the one table of default parameters that model specs (`spec`) and
//! `detect score --detector NAME` both read.
//!
//! Pure data. Must not hold detector state (that is `detectors`) nor parse
//! YAML (that is `spec`).

use serde::{Deserialize, Serialize};

mod named;

/// Which side of a threshold is bad, for forecasts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Above,
    Below,
}

/// The detector kinds. Code that treats kinds differently matches on this
/// exhaustively, so a new kind does not compile until every place (model
/// spec validation, defaults, names) says what it means for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DetectorKind {
    Ewma,
    Mad,
    Seasonal,
    Cusum,
    Forecast,
    Gaussian,
    Diff,
    Ensemble,
    Context,
    Cad,
    Entropy,
    Knn,
    Decompose,
    Rank,
}

impl DetectorKind {
    /// Every kind, in the order they are listed to users.
    pub const ALL: [DetectorKind; 14] = [
        DetectorKind::Ewma,
        DetectorKind::Mad,
        DetectorKind::Seasonal,
        DetectorKind::Cusum,
        DetectorKind::Forecast,
        DetectorKind::Gaussian,
        DetectorKind::Diff,
        DetectorKind::Ensemble,
        DetectorKind::Context,
        DetectorKind::Cad,
        DetectorKind::Entropy,
        DetectorKind::Knn,
        DetectorKind::Decompose,
        DetectorKind::Rank,
    ];

    /// Stable name for model specs, findings, metrics and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Ewma => "ewma",
            DetectorKind::Mad => "mad",
            DetectorKind::Seasonal => "seasonal",
            DetectorKind::Cusum => "cusum",
            DetectorKind::Forecast => "forecast",
            DetectorKind::Gaussian => "gaussian",
            DetectorKind::Diff => "diff",
            DetectorKind::Ensemble => "ensemble",
            DetectorKind::Context => "context",
            DetectorKind::Cad => "cad",
            DetectorKind::Entropy => "entropy",
            DetectorKind::Knn => "knn",
            DetectorKind::Decompose => "decompose",
            DetectorKind::Rank => "rank",
        }
    }

    /// Whether a model spec's series get this kind's scores calibrated
    /// (`calibrate.rs`): the kinds that judge a sample against a baseline
    /// and a limit. Forecasts keep their time-to-threshold score; the rest
    /// are not spec kinds.
    pub fn calibrated(self) -> bool {
        match self {
            DetectorKind::Ewma
            | DetectorKind::Mad
            | DetectorKind::Seasonal
            | DetectorKind::Cusum => true,
            DetectorKind::Forecast
            | DetectorKind::Gaussian
            | DetectorKind::Diff
            | DetectorKind::Ensemble
            | DetectorKind::Context
            | DetectorKind::Cad
            | DetectorKind::Entropy
            | DetectorKind::Knn
            | DetectorKind::Decompose
            | DetectorKind::Rank => false,
        }
    }

    /// The kind called `name`, if any.
    pub fn from_name(name: &str) -> Option<DetectorKind> {
        DetectorKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind's parameters with every default filled in; `None` for kinds
    /// that cannot run without a setting of their own (a forecast needs its
    /// threshold, `diff` the detector it wraps).
    pub fn default_params(self) -> Option<DetectorParams> {
        Some(match self {
            DetectorKind::Ewma => DetectorParams::Ewma {
                alpha: defaults::ewma::ALPHA,
                half_life_seconds: None,
                warmup: defaults::ewma::WARMUP,
                limit: defaults::ewma::LIMIT,
            },
            DetectorKind::Mad => DetectorParams::Mad {
                window: defaults::mad::WINDOW,
                window_seconds: None,
                warmup: defaults::mad::WARMUP,
                limit: defaults::mad::LIMIT,
            },
            DetectorKind::Seasonal => DetectorParams::Seasonal {
                period_seconds: defaults::seasonal::PERIOD_SECONDS,
                buckets: defaults::seasonal::BUCKETS,
                alpha: defaults::seasonal::ALPHA,
                min_cycles: defaults::seasonal::MIN_CYCLES,
                limit: defaults::seasonal::LIMIT,
            },
            DetectorKind::Cusum => DetectorParams::Cusum {
                alpha: defaults::cusum::ALPHA,
                half_life_seconds: None,
                k: defaults::cusum::K,
                warmup: defaults::cusum::WARMUP,
                limit: defaults::cusum::LIMIT,
            },
            DetectorKind::Gaussian => DetectorParams::Gaussian {
                window: defaults::gaussian::WINDOW,
                step: defaults::gaussian::STEP,
            },
            DetectorKind::Ensemble => {
                use defaults::ensemble::{LIMIT, REFRACTORY, WARMUP, WINDOW};
                let mad = || DetectorParams::Mad {
                    window: WINDOW,
                    window_seconds: None,
                    warmup: WARMUP,
                    limit: LIMIT,
                };
                DetectorParams::Ensemble {
                    members: vec![
                        mad(),
                        DetectorParams::Diff {
                            inner: Box::new(mad()),
                        },
                    ],
                    refractory: REFRACTORY,
                }
            }
            DetectorKind::Context => DetectorParams::Context {
                levels: defaults::context::LEVELS,
                order: defaults::context::ORDER,
                rest: defaults::context::REST,
                warmup: defaults::context::WARMUP,
                max_contexts: defaults::context::MAX_CONTEXTS,
            },
            DetectorKind::Cad => {
                use defaults::cad::*;
                DetectorParams::Cad(CadParams {
                    bits: BITS,
                    warmup: WARMUP,
                    margin: MARGIN,
                    rest: REST,
                    max_left: MAX_LEFT,
                    max_active: MAX_ACTIVE,
                    max_contexts: MAX_CONTEXTS,
                    memory: MEMORY,
                    stride: STRIDE,
                })
            }
            DetectorKind::Entropy => {
                use defaults::entropy::*;
                DetectorParams::Entropy {
                    window: WINDOW,
                    bins: BINS,
                    refs: REFS,
                    rest: REST,
                    warmup: WARMUP,
                }
            }
            DetectorKind::Knn => {
                use defaults::knn::*;
                DetectorParams::Knn {
                    dim: DIM,
                    train: TRAIN,
                    calib: CALIB,
                    k: K,
                    rest: REST,
                }
            }
            DetectorKind::Decompose => {
                use defaults::decompose::*;
                DetectorParams::Decompose {
                    period_seconds: PERIOD_SECONDS,
                    buckets: BUCKETS,
                    cycles: CYCLES,
                    window: WINDOW,
                    limit: LIMIT,
                    rest: REST,
                    warmup: WARMUP,
                }
            }
            DetectorKind::Rank => DetectorParams::Rank {
                members: [
                    DetectorKind::Context,
                    DetectorKind::Knn,
                    DetectorKind::Decompose,
                ]
                .into_iter()
                .filter_map(DetectorKind::default_params)
                .collect(),
                memory: defaults::rank::MEMORY,
                fisher: defaults::rank::FISHER,
                rest: defaults::rank::REST,
            },
            DetectorKind::Forecast | DetectorKind::Diff => return None,
        })
    }
}

/// Default parameters of each detector: the value a model spec gets for a
/// parameter it leaves out, and the settings of `detect score --detector
/// NAME`. Kept here, and only here, so the two cannot drift apart.
///
/// Spans come in two forms: in samples (`ALPHA`, `WINDOW`), what `detect
/// score|eval|bench --detector NAME` use on NAB's 5-minute data, and in
/// seconds (`HALF_LIFE_SECONDS`, `WINDOW_SECONDS`), what a model spec gets,
/// the same spans at 5-minute samples, so they hold at any scrape interval.
pub mod defaults {
    /// The most samples a window in time keeps (its memory bound): a
    /// 30-minute window at a 1 s interval, a day at 45 s. 2048 × 24 bytes
    /// = 48 KB per series at most.
    pub const MAX_WINDOW_SAMPLES: u32 = 2048;
    pub mod ewma {
        pub const ALPHA: f64 = 0.02;
        /// α 0.02 at 5-minute samples: 300 / −log2(0.98) s, rounded to 3 h.
        pub const HALF_LIFE_SECONDS: f64 = 10_800.0;
        pub const WARMUP: u32 = 50;
        pub const LIMIT: f64 = 5.0;
    }
    pub mod mad {
        /// A day of 5-minute samples.
        pub const WINDOW: u32 = 288;
        /// A day.
        pub const WINDOW_SECONDS: u32 = 86_400;
        pub const WARMUP: u32 = 50;
        pub const LIMIT: f64 = 5.0;
    }
    pub mod seasonal {
        /// Time of day, in hourly slots.
        pub const PERIOD_SECONDS: i64 = 86_400;
        pub const BUCKETS: u32 = 24;
        pub const ALPHA: f64 = 0.1;
        pub const MIN_CYCLES: u32 = 3;
        pub const LIMIT: f64 = 5.0;
    }
    pub mod cusum {
        pub const ALPHA: f64 = 0.01;
        /// α 0.01 at 5-minute samples: 300 / −log2(0.99) s, rounded to 6 h.
        pub const HALF_LIFE_SECONDS: f64 = 21_600.0;
        pub const K: f64 = 0.5;
        pub const WARMUP: u32 = 50;
        pub const LIMIT: f64 = 8.0;
    }
    /// A forecast has no default threshold; the rest default to these, and
    /// the direction to [`super::Direction::Above`].
    pub mod forecast {
        pub const ALPHA: f64 = 0.1;
        pub const BETA: f64 = 0.05;
        /// The level's half-life in a spec that gives none: about `ALPHA`
        /// per sample at 30 s (197 s).
        pub const HALF_LIFE_SECONDS: f64 = 200.0;
        /// The trend's: about `BETA` per sample at 30 s (405 s).
        pub const TREND_HALF_LIFE_SECONDS: f64 = 400.0;
        pub const HORIZON_SECONDS: f64 = 86_400.0;
        pub const WARMUP: u32 = 30;
    }
    pub mod gaussian {
        pub const WINDOW: u32 = 6400;
        pub const STEP: u32 = 100;
    }
    /// Tuned on NAB (one parameter set for every file, see BENCHMARKS.md):
    /// a robust level and a robust jump detector (MAD over the first
    /// differences) over a long window, one alarm per episode.
    pub mod ensemble {
        pub const WINDOW: u32 = 2000;
        pub const WARMUP: u32 = 100;
        pub const LIMIT: f64 = 3.0;
        pub const REFRACTORY: u32 = 2000;
    }
    /// The contextual novelty detector: what `detect eval --trials 20
    /// --seed 42` chose on all NAB groups (the procedure whose
    /// leave-one-group-out score BENCHMARKS.md reports), not the best
    /// full-corpus variant by hand.
    pub mod context {
        pub const LEVELS: u32 = 4;
        pub const ORDER: u32 = 2;
        /// Samples after an alarm during which lower scores are halved.
        pub const REST: u32 = 50;
        pub const WARMUP: u32 = 20;
        /// The per-series memory ceiling: about 32 bytes per context.
        pub const MAX_CONTEXTS: u32 = 1024;
    }
    /// CAD OSE, online (`cad.rs`): what the leave-one-group-out search
    /// chose in every fold (BENCHMARKS.md) but `MAX_ACTIVE`; `MAX_LEFT` is
    /// NAB's.
    pub mod cad {
        pub const BITS: u32 = 3;
        pub const WARMUP: u32 = 150;
        /// Share of the span added beyond a value that widens the range.
        pub const MARGIN: f64 = 0.1;
        pub const REST: u32 = 0;
        pub const MAX_LEFT: u32 = 7;
        /// Not the search's choice (30), but the cheapest of its values
        /// held out as well: 3.4 times faster, 65.1 held out against 65.0
        /// (BENCHMARKS.md, "Within a budget").
        pub const MAX_ACTIVE: u32 = 7;
        /// The per-series memory ceiling: 90–170 bytes per context with
        /// its semi-contexts and indexes on NAB, so at most about 1.5 MB.
        /// Reached, the detector relearns its latest samples.
        pub const MAX_CONTEXTS: u32 = 16_384;
        /// Samples remembered, to relearn in new levels when the range
        /// widens.
        pub const MEMORY: u32 = 4000;
        /// Every sample is a learning step.
        pub const STRIDE: u32 = 1;
        pub(crate) fn stride() -> u32 {
            STRIDE
        }
    }
    /// Relative entropy of a sliding histogram against remembered ones.
    pub mod entropy {
        pub const WINDOW: u32 = 48;
        pub const BINS: u32 = 8;
        pub const REFS: u32 = 8;
        pub const REST: u32 = 50;
        pub const WARMUP: u32 = 200;
    }
    /// k-NN conformal: vectors of `DIM` samples, `TRAIN` of them to search,
    /// `CALIB` non-conformities to rank against.
    pub mod knn {
        pub const DIM: u32 = 8;
        pub const TRAIN: u32 = 256;
        pub const CALIB: u32 = 256;
        pub const K: u32 = 5;
        pub const REST: u32 = 50;
    }
    /// Robust seasonal decomposition: hourly slots of the day, a day of
    /// 5-minute samples for the trend and the residuals.
    pub mod decompose {
        pub const PERIOD_SECONDS: i64 = 86_400;
        pub const BUCKETS: u32 = 24;
        pub const CYCLES: u32 = 8;
        pub const WINDOW: u32 = 288;
        pub const LIMIT: f64 = 5.0;
        pub const REST: u32 = 50;
        pub const WARMUP: u32 = 50;
    }
    /// The rank-calibrated ensemble (members: `context`, `knn`,
    /// `decompose` with their defaults).
    pub mod rank {
        pub const MEMORY: u32 = 256;
        pub const FISHER: bool = false;
        pub const REST: u32 = 50;
    }
}

/// CAD OSE, online: each sample's level (`bits` bits of a range that
/// widens to take every value, by `margin` of its span beyond it) becomes
/// facts; contexts pair the previous step's facts and active contexts with
/// this step's facts; scores how little of what the contexts predicted
/// happened and how much is new. No score for the first `warmup` samples;
/// after a score of 0.75, `rest` samples report 0. At most `max_contexts`
/// contexts (then the latest of the `memory` remembered samples are
/// relearnt). `max_active` above 120 is taken as 120: a step's facts (at
/// most 8 of the level's, and the active contexts carried) fit a 128-bit
/// mask; the search draws 7 to 30. With `stride` above 1, each block of
/// `stride` samples is learnt as one value and scored on its last sample.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct CadParams {
    pub bits: u32,
    pub warmup: u32,
    pub margin: f64,
    pub rest: u32,
    pub max_left: u32,
    pub max_active: u32,
    pub max_contexts: u32,
    pub memory: u32,
    /// Samples learnt as one (1: each sample is a step). A block's value
    /// is its lowest or highest sample, whichever is farther from the
    /// previous block's: a spike survives the block. Costs up to
    /// `stride − 1` samples of delay.
    #[serde(default = "defaults::cad::stride")]
    pub stride: u32,
}

/// Validated detector parameters (see `spec` for the YAML form and the
/// checks). Every `limit` is the excess that scores 0.5.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "detector", rename_all = "lowercase")]
pub enum DetectorParams {
    /// z-score against an exponentially weighted mean and variance: each
    /// sample weighs `alpha`, or, with `half_life_seconds`, `1 −
    /// 2^(−Δt/half_life)` for the actual interval Δt since the previous one.
    Ewma {
        alpha: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        half_life_seconds: Option<f64>,
        warmup: u32,
        limit: f64,
    },
    /// Robust z-score against the median and MAD of the last `window`
    /// samples, or, with `window_seconds`, of the samples of the last
    /// `window_seconds` (at most `window` of them: the memory bound).
    Mad {
        window: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        window_seconds: Option<u32>,
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
    /// The baseline's weight is `alpha` per sample or, with
    /// `half_life_seconds`, from the half-life and the actual interval.
    Cusum {
        alpha: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        half_life_seconds: Option<f64>,
        k: f64,
        warmup: u32,
        limit: f64,
    },
    /// Holt linear trend; scores how soon the series is expected to cross
    /// `threshold` (0.5 when the time left equals `horizon_seconds`). The
    /// level's weight is `alpha` per sample or, with `half_life_seconds`,
    /// from the half-life and the actual interval; the trend's, `beta` or
    /// `trend_half_life_seconds`, the same way.
    Forecast {
        alpha: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        half_life_seconds: Option<f64>,
        beta: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        trend_half_life_seconds: Option<f64>,
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
    /// Contextual novelty: the series as `levels` slices of the range seen
    /// so far; scores how new the current level is after the last
    /// `1..=order` levels (1 = never seen there). `rest` samples of one alarm
    /// per episode; at most `max_contexts` remembered contexts.
    Context {
        levels: u32,
        order: u32,
        rest: u32,
        warmup: u32,
        max_contexts: u32,
    },
    /// CAD OSE, online ([`CadParams`]).
    Cad(CadParams),
    /// Relative entropy: the histogram (`bins` slices of the warm-up range
    /// plus two outside it) of the last `window` samples against up to
    /// `refs` remembered histograms; scores how badly the best-matching,
    /// often-seen one explains it (chi-square test of `2·window·KL`).
    Entropy {
        window: u32,
        bins: u32,
        refs: u32,
        rest: u32,
        warmup: u32,
    },
    /// k-NN conformal: the summed distance of the last `dim` samples to
    /// their `k` nearest among the last `train` such vectors, ranked
    /// against the last `calib` such distances (score = 1 − p-value).
    Knn {
        dim: u32,
        train: u32,
        calib: u32,
        k: u32,
        rest: u32,
    },
    /// Robust seasonal decomposition: median trend over `window` samples,
    /// median seasonal profile of `buckets` slots over the last `cycles`
    /// values of each; the residual's robust z-score against the last
    /// `window` residuals (`limit` scores 0.5).
    Decompose {
        period_seconds: i64,
        buckets: u32,
        cycles: u32,
        window: u32,
        limit: f64,
        rest: u32,
        warmup: u32,
    },
    /// Rank-calibrated ensemble: each member's score becomes its p-value
    /// among its last `memory` scores; combined by Bonferroni (`m · min p`)
    /// or, with `fisher`, Fisher's method; score = 1 − combined p-value.
    Rank {
        members: Vec<DetectorParams>,
        memory: u32,
        fisher: bool,
        rest: u32,
    },
}

impl DetectorParams {
    pub fn kind(&self) -> DetectorKind {
        match self {
            DetectorParams::Ewma { .. } => DetectorKind::Ewma,
            DetectorParams::Mad { .. } => DetectorKind::Mad,
            DetectorParams::Seasonal { .. } => DetectorKind::Seasonal,
            DetectorParams::Cusum { .. } => DetectorKind::Cusum,
            DetectorParams::Forecast { .. } => DetectorKind::Forecast,
            DetectorParams::Gaussian { .. } => DetectorKind::Gaussian,
            DetectorParams::Diff { .. } => DetectorKind::Diff,
            DetectorParams::Ensemble { .. } => DetectorKind::Ensemble,
            DetectorParams::Context { .. } => DetectorKind::Context,
            DetectorParams::Cad(_) => DetectorKind::Cad,
            DetectorParams::Entropy { .. } => DetectorKind::Entropy,
            DetectorParams::Knn { .. } => DetectorKind::Knn,
            DetectorParams::Decompose { .. } => DetectorKind::Decompose,
            DetectorParams::Rank { .. } => DetectorKind::Rank,
        }
    }

    /// Stable name for findings, metrics and the CLI.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Defaults used by `detect score --detector NAME` (see
    /// [`DetectorKind::default_params`]).
    pub fn default_for(name: &str) -> Option<DetectorParams> {
        DetectorKind::from_name(name)?.default_params()
    }

    /// Names accepted by [`DetectorParams::default_for`] (a test checks
    /// this against [`DetectorKind::default_params`]).
    pub const DEFAULT_NAMES: [&'static str; 12] = [
        "ewma",
        "mad",
        "seasonal",
        "cusum",
        "gaussian",
        "ensemble",
        "context",
        "cad",
        "entropy",
        "knn",
        "decompose",
        "rank",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for k in DetectorKind::ALL {
            assert_eq!(DetectorKind::from_name(k.name()), Some(k));
        }
        let mut names: Vec<_> = DetectorKind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DetectorKind::ALL.len());
        assert_eq!(DetectorKind::from_name("prophet"), None);
    }

    #[test]
    fn default_names_are_the_kinds_with_defaults() {
        let with_defaults: Vec<_> = DetectorKind::ALL
            .into_iter()
            .filter_map(|k| k.default_params().map(|p| (k, p)))
            .collect();
        for (k, p) in &with_defaults {
            assert_eq!(p.kind(), *k, "defaults of {k:?} build their own kind");
        }
        let names: Vec<_> = with_defaults.iter().map(|(k, _)| k.name()).collect();
        assert_eq!(names, DetectorParams::DEFAULT_NAMES);
    }
}
