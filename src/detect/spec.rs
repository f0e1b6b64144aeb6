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
use super::detectors::DetectorParams;
use super::series::SeriesOptions;

mod check;
mod detector;
mod multivariate;

use check::Check;
pub use detector::half_life_for;
use detector::validate_detector;
pub use multivariate::ValidatedMultivariate;
use multivariate::{RawMultivariate, validate_multivariate};

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

/// A span as a spec writes it: a bare number (samples, for `window`; the
/// spelling that is deprecated) or a duration such as `30m`.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum RawSpan {
    Count(u32),
    Duration(String),
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
    window: Option<RawSpan>,
    window_seconds: Option<u32>,
    half_life: Option<String>,
    half_life_seconds: Option<f64>,
    trend_half_life: Option<String>,
    period_seconds: Option<i64>,
    buckets: Option<u32>,
    min_cycles: Option<u32>,
    k: Option<f64>,
    threshold: Option<f64>,
    direction: Option<String>,
    horizon_seconds: Option<f64>,
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
    /// Deprecated spellings the spec still uses (the loader logs them), each
    /// naming the file, the field and the spelling to use instead.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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

/// Parses and validates one spec file's text; `file` is only used in errors.
pub fn validate_spec(file: &str, text: &str) -> Result<ValidatedSpec, Error> {
    let raw: RawSpec = serde_yaml::from_str(text).map_err(|e| Error::ParseSpec {
        file: file.to_string(),
        message: e.to_string(),
    })?;
    let c = Check {
        file,
        warnings: Default::default(),
    };
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
        warnings: c.warnings.into_inner(),
    })
}

/// Parses a duration as specs and Prometheus write it: one or more
/// `<number><unit>` with units `s`, `m`, `h`, `d` (`90s`, `30m`, `1h30m`),
/// or a bare number of seconds. `None` for anything else.
pub fn parse_duration(text: &str) -> Option<f64> {
    let t = text.trim();
    if let Ok(v) = t.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    let mut total = 0.0;
    let mut rest = t;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let scale = match unit {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86_400.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[digits + unit.len_utf8()..];
    }
    Some(total)
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

#[cfg(test)]
mod tests;
