//! Model specs (`models/*.yaml`, the files SREs edit): which component kind a
//! spec covers, the PromQL of each signal, how series labels map to a
//! component, and the detector with its parameters.
//!
//! Parsing rejects unknown fields; validation turns the raw spec into a
//! [`ValidatedSpec`] and every error names the file, the field and what was
//! expected. A parameter a spec leaves out takes its value from
//! `detectors::defaults`; this module must not keep defaults of its own.
//! Pure: callers pass the file name and its text; reading the directory is
//! `observe`'s job.

use serde::Deserialize;

use super::Error;
use super::detectors::{DetectorKind, DetectorParams, Direction, defaults};
use super::gmm::GmmParams;
use super::series::SeriesOptions;

mod check;

use check::Check;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    /// Kind of the representing object, e.g. `Cluster`.
    kind: String,
    /// API group, e.g. `postgresql.cnpg.io` (empty for the core group).
    group: String,
    version: String,
    /// Resource plural, e.g. `clusters`.
    plural: String,
    #[serde(default = "yes")]
    namespaced: bool,
    #[serde(default)]
    description: String,
    labels: RawLabels,
    signals: Vec<RawSignal>,
    #[serde(default)]
    multivariate: Option<RawMultivariate>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawLabels {
    /// Label holding the component's name.
    name: String,
    /// Label holding its namespace (omit for cluster-scoped kinds).
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawSignal {
    name: String,
    #[serde(default)]
    description: String,
    query: String,
    #[serde(default)]
    unit: String,
    detector: RawDetector,
    /// Score at or above which a sample is a finding (default 0.5).
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    counter: bool,
    #[serde(default)]
    stale_after_seconds: Option<i64>,
    #[serde(default)]
    max_gap_seconds: Option<i64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawDetector {
    #[serde(rename = "type")]
    kind: String,
    alpha: Option<f64>,
    beta: Option<f64>,
    warmup: Option<u32>,
    limit: Option<f64>,
    window: Option<u32>,
    period_seconds: Option<i64>,
    buckets: Option<u32>,
    min_cycles: Option<u32>,
    k: Option<f64>,
    threshold: Option<f64>,
    direction: Option<String>,
    horizon_seconds: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawMultivariate {
    signals: Vec<String>,
    #[serde(default)]
    clusters: Option<usize>,
    #[serde(default)]
    window: Option<usize>,
    #[serde(default)]
    refit_every: Option<usize>,
    #[serde(default)]
    warmup: Option<usize>,
    #[serde(default)]
    limit: Option<f64>,
}

/// A spec that passed validation.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
pub struct ValidatedSpec {
    pub file: String,
    pub kind: String,
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespaced: bool,
    pub description: String,
    pub name_label: String,
    pub namespace_label: Option<String>,
    pub signals: Vec<ValidatedSignal>,
    pub multivariate: Option<ValidatedMultivariate>,
}

/// One signal of a validated spec.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
pub struct ValidatedSignal {
    pub name: String,
    pub description: String,
    pub query: String,
    pub unit: String,
    pub detector: DetectorParams,
    pub options: SeriesOptions,
}

/// Multivariate scoring over several signals of the same component.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
pub struct ValidatedMultivariate {
    /// Indexes into `signals`.
    pub signals: Vec<usize>,
    pub params: GmmParams,
}

/// Parses and validates one spec file's text; `file` is only used in errors.
pub fn validate_spec(file: &str, text: &str) -> Result<ValidatedSpec, Error> {
    let raw: RawSpec = serde_yaml::from_str(text).map_err(|e| Error::ParseSpec {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let c = Check { file };
    c.non_empty("kind", &raw.kind)?;
    c.non_empty("version", &raw.version)?;
    c.non_empty("plural", &raw.plural)?;
    c.non_empty("labels.name", &raw.labels.name)?;
    if raw.namespaced && raw.labels.namespace.is_none() {
        return Err(c.fail(
            "labels.namespace",
            "is required for a namespaced kind (the label holding the namespace)",
        ));
    }
    if raw.signals.is_empty() {
        return Err(c.fail("signals", "must list at least one signal"));
    }
    let mut signals: Vec<ValidatedSignal> = Vec::with_capacity(raw.signals.len());
    for (i, s) in raw.signals.into_iter().enumerate() {
        let signal = validate_signal(&c, i, s, &signals)?;
        signals.push(signal);
    }
    let multivariate = match raw.multivariate {
        None => None,
        Some(m) => Some(validate_multivariate(&c, &m, &signals)?),
    };
    Ok(ValidatedSpec {
        file: file.to_string(),
        kind: raw.kind,
        group: raw.group,
        version: raw.version,
        plural: raw.plural,
        namespaced: raw.namespaced,
        description: raw.description,
        name_label: raw.labels.name,
        namespace_label: raw.labels.namespace,
        signals,
        multivariate,
    })
}

/// Signal `i` of a spec; `before` are the signals already validated (names
/// must be unique).
fn validate_signal(
    c: &Check,
    i: usize,
    s: RawSignal,
    before: &[ValidatedSignal],
) -> Result<ValidatedSignal, Error> {
    let at = |f: &str| format!("signals[{i}].{f}");
    if s.name.is_empty()
        || !s
            .name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
    {
        return Err(c.fail(
            at("name"),
            "must be lowercase snake_case, e.g. replication_lag",
        ));
    }
    if before.iter().any(|x| x.name == s.name) {
        return Err(c.fail(at("name"), format!("must be unique; {:?} repeats", s.name)));
    }
    c.non_empty(&at("query"), &s.query)?;
    let detector = validate_detector(c, &at("detector"), &s.detector)?;
    let d = SeriesOptions::default();
    let seconds = "a positive number of seconds";
    let options = SeriesOptions {
        threshold: c.range(
            &at("threshold"),
            s.threshold,
            d.threshold,
            1e-9,
            1.0,
            "in (0, 1]",
        )?,
        counter: s.counter,
        stale_after_seconds: c.range(
            &at("stale_after_seconds"),
            s.stale_after_seconds,
            d.stale_after_seconds,
            1,
            i64::MAX,
            seconds,
        )?,
        max_gap_seconds: c.range(
            &at("max_gap_seconds"),
            s.max_gap_seconds,
            d.max_gap_seconds,
            1,
            i64::MAX,
            seconds,
        )?,
    };
    Ok(ValidatedSignal {
        name: s.name,
        description: s.description,
        query: s.query,
        unit: s.unit,
        detector,
        options,
    })
}

/// The `multivariate:` block: names resolved to indexes into `signals`.
fn validate_multivariate(
    c: &Check,
    m: &RawMultivariate,
    signals: &[ValidatedSignal],
) -> Result<ValidatedMultivariate, Error> {
    let mut idx = Vec::new();
    for (j, name) in m.signals.iter().enumerate() {
        let at = format!("multivariate.signals[{j}]");
        match signals.iter().position(|s| &s.name == name) {
            Some(p) if !idx.contains(&p) => idx.push(p),
            Some(_) => return Err(c.fail(at, format!("must not repeat {name:?}"))),
            None => {
                return Err(c.fail(
                    at,
                    format!("must name a signal of this spec; {name:?} is not one"),
                ));
            }
        }
    }
    if idx.len() < 2 {
        return Err(c.fail("multivariate.signals", "must list at least two signals"));
    }
    let d = GmmParams::default();
    let window = c.range(
        "multivariate.window",
        m.window,
        d.window,
        20,
        100_000,
        "between 20 and 100000",
    )?;
    let params = GmmParams {
        clusters: c.range(
            "multivariate.clusters",
            m.clusters,
            d.clusters,
            1,
            10,
            "between 1 and 10",
        )?,
        window,
        refit_every: c.range(
            "multivariate.refit_every",
            m.refit_every,
            d.refit_every,
            1,
            100_000,
            "between 1 and 100000",
        )?,
        warmup: c.range(
            "multivariate.warmup",
            m.warmup,
            d.warmup.min(window),
            10,
            window,
            "between 10 and the window",
        )?,
        limit: c.range(
            "multivariate.limit",
            m.limit,
            d.limit,
            1e-9,
            1e9,
            "positive",
        )?,
    };
    Ok(ValidatedMultivariate {
        signals: idx,
        params,
    })
}

/// The detectors a model spec may name, in the order errors list them. The
/// rest (`gaussian`, `diff`, `ensemble`, `context`, `entropy`, `knn`,
/// `decompose`, `rank`) are benchmark and CLI
/// tools until the evaluation supports them for operational signals.
const SPEC_KINDS: [DetectorKind; 5] = [
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
        let given: [(&str, bool); 12] = [
            ("alpha", d.alpha.is_some()),
            ("beta", d.beta.is_some()),
            ("warmup", d.warmup.is_some()),
            ("limit", d.limit.is_some()),
            ("window", d.window.is_some()),
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
}

/// One `detector:` block → its parameters, each left out taking its value
/// from [`defaults`].
fn validate_detector(c: &Check, at: &str, d: &RawDetector) -> Result<DetectorParams, Error> {
    let p = DetectorCheck { c, at, d };
    let f = |name: &str| p.field(name);
    let Some(kind) = DetectorKind::from_name(&d.kind) else {
        return Err(p.not_in_specs());
    };
    Ok(match kind {
        DetectorKind::Ewma => {
            use defaults::ewma::*;
            p.only(&["alpha", "warmup", "limit"])?;
            DetectorParams::Ewma {
                alpha: p.alpha(ALPHA)?,
                warmup: p.warmup(WARMUP)?,
                limit: p.limit(LIMIT)?,
            }
        }
        DetectorKind::Mad => {
            use defaults::mad::*;
            p.only(&["window", "warmup", "limit"])?;
            let what = "between 5 and 100000";
            DetectorParams::Mad {
                window: c.range(&f("window"), d.window, WINDOW, 5, 100_000, what)?,
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
            p.only(&["alpha", "k", "warmup", "limit"])?;
            DetectorParams::Cusum {
                alpha: p.alpha(ALPHA)?,
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
        "alpha",
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
        Some("above") | None => Direction::Above,
        Some("below") => Direction::Below,
        Some(other) => {
            return Err(c.fail(
                p.field("direction"),
                format!("must be \"above\" or \"below\" (got {other:?})"),
            ));
        }
    };
    Ok(DetectorParams::Forecast {
        alpha: p.alpha(ALPHA)?,
        beta: c.range(&p.field("beta"), d.beta, BETA, 1e-6, 1.0, "in (0, 1]")?,
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

#[cfg(test)]
mod tests;
