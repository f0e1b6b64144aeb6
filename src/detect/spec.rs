//! Model specs (`models/*.yaml`, the files SREs edit): which component kind a
//! spec covers, the PromQL of each signal, how series labels map to a
//! component, and the detector with its parameters.
//!
//! Parsing rejects unknown fields; validation turns the raw spec into a
//! [`ValidatedSpec`] and every error names the file, the field and what was
//! expected. Pure: callers pass the file name and its text; reading the
//! directory is `observe`'s job.

use serde::Deserialize;

use super::Error;
use super::detectors::{DetectorParams, Direction};
use super::gmm::GmmParams;
use super::series::SeriesOptions;

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

struct Check<'a> {
    file: &'a str,
}

impl Check<'_> {
    fn fail(&self, field: impl Into<String>, expected: impl Into<String>) -> Error {
        Error::ValidateSpec {
            file: self.file.to_string(),
            field: field.into(),
            expected: expected.into(),
        }
    }

    fn non_empty(&self, field: &str, v: &str) -> Result<(), Error> {
        if v.trim().is_empty() {
            return Err(self.fail(field, "must not be empty"));
        }
        Ok(())
    }

    fn range<T: PartialOrd + Copy + std::fmt::Display>(
        &self,
        field: &str,
        v: Option<T>,
        default: T,
        lo: T,
        hi: T,
        what: &str,
    ) -> Result<T, Error> {
        let v = v.unwrap_or(default);
        if v < lo || v > hi {
            return Err(self.fail(field, format!("must be {what} (got {v})")));
        }
        Ok(v)
    }
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
    let mut signals = Vec::with_capacity(raw.signals.len());
    for (i, s) in raw.signals.into_iter().enumerate() {
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
        if signals.iter().any(|x: &ValidatedSignal| x.name == s.name) {
            return Err(c.fail(at("name"), format!("must be unique; {:?} repeats", s.name)));
        }
        c.non_empty(&at("query"), &s.query)?;
        let detector = validate_detector(&c, &at("detector"), &s.detector)?;
        let d = SeriesOptions::default();
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
                "a positive number of seconds",
            )?,
            max_gap_seconds: c.range(
                &at("max_gap_seconds"),
                s.max_gap_seconds,
                d.max_gap_seconds,
                1,
                i64::MAX,
                "a positive number of seconds",
            )?,
        };
        signals.push(ValidatedSignal {
            name: s.name,
            description: s.description,
            query: s.query,
            unit: s.unit,
            detector,
            options,
        });
    }
    let multivariate = match raw.multivariate {
        None => None,
        Some(m) => {
            let mut idx = Vec::new();
            for (j, name) in m.signals.iter().enumerate() {
                match signals.iter().position(|s| &s.name == name) {
                    Some(p) if !idx.contains(&p) => idx.push(p),
                    Some(_) => {
                        return Err(c.fail(
                            format!("multivariate.signals[{j}]"),
                            format!("must not repeat {name:?}"),
                        ));
                    }
                    None => {
                        return Err(c.fail(
                            format!("multivariate.signals[{j}]"),
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
            Some(ValidatedMultivariate {
                signals: idx,
                params: GmmParams {
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
                },
            })
        }
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

fn validate_detector(c: &Check, at: &str, d: &RawDetector) -> Result<DetectorParams, Error> {
    let field = |f: &str| format!("{at}.{f}");
    // Reject parameters the chosen detector does not take, so a typo'd
    // placement is not silently ignored.
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
    let allowed: &[&str] = match d.kind.as_str() {
        "ewma" => &["alpha", "warmup", "limit"],
        "mad" => &["window", "warmup", "limit"],
        "seasonal" => &["period_seconds", "buckets", "alpha", "min_cycles", "limit"],
        "cusum" => &["alpha", "k", "warmup", "limit"],
        "forecast" => &[
            "alpha",
            "beta",
            "threshold",
            "direction",
            "horizon_seconds",
            "warmup",
        ],
        other => {
            return Err(c.fail(
                field("type"),
                format!("must be one of ewma, mad, seasonal, cusum, forecast (got {other:?})"),
            ));
        }
    };
    for (name, set) in given {
        if set && !allowed.contains(&name) {
            return Err(c.fail(
                field(name),
                format!(
                    "is not a parameter of detector {:?}; it takes {}",
                    d.kind,
                    allowed.join(", ")
                ),
            ));
        }
    }
    let alpha = |default| c.range(&field("alpha"), d.alpha, default, 1e-6, 1.0, "in (0, 1]");
    let warmup = |default| {
        c.range(
            &field("warmup"),
            d.warmup,
            default,
            1,
            1_000_000,
            "between 1 and 1000000",
        )
    };
    let limit = |default| c.range(&field("limit"), d.limit, default, 1e-9, 1e9, "positive");
    Ok(match d.kind.as_str() {
        "ewma" => DetectorParams::Ewma {
            alpha: alpha(0.02)?,
            warmup: warmup(50)?,
            limit: limit(5.0)?,
        },
        "mad" => DetectorParams::Mad {
            window: c.range(
                &field("window"),
                d.window,
                288,
                5,
                100_000,
                "between 5 and 100000",
            )?,
            warmup: warmup(50)?,
            limit: limit(5.0)?,
        },
        "seasonal" => DetectorParams::Seasonal {
            period_seconds: c.range(
                &field("period_seconds"),
                d.period_seconds,
                86_400,
                60,
                31 * 86_400,
                "between 60 and 2678400",
            )?,
            buckets: c.range(
                &field("buckets"),
                d.buckets,
                24,
                1,
                10_080,
                "between 1 and 10080",
            )?,
            alpha: alpha(0.1)?,
            min_cycles: c.range(
                &field("min_cycles"),
                d.min_cycles,
                3,
                1,
                1000,
                "between 1 and 1000",
            )?,
            limit: limit(5.0)?,
        },
        "cusum" => DetectorParams::Cusum {
            alpha: alpha(0.01)?,
            k: c.range(&field("k"), d.k, 0.5, 0.0, 100.0, "between 0 and 100")?,
            warmup: warmup(50)?,
            limit: limit(8.0)?,
        },
        _ => {
            let threshold = d.threshold.filter(|t| t.is_finite()).ok_or_else(|| {
                c.fail(
                    field("threshold"),
                    "is required for a forecast: the value not to cross",
                )
            })?;
            let direction = match d.direction.as_deref() {
                Some("above") | None => Direction::Above,
                Some("below") => Direction::Below,
                Some(other) => {
                    return Err(c.fail(
                        field("direction"),
                        format!("must be \"above\" or \"below\" (got {other:?})"),
                    ));
                }
            };
            DetectorParams::Forecast {
                alpha: alpha(0.1)?,
                beta: c.range(&field("beta"), d.beta, 0.05, 1e-6, 1.0, "in (0, 1]")?,
                threshold,
                direction,
                horizon_seconds: c.range(
                    &field("horizon_seconds"),
                    d.horizon_seconds,
                    86_400.0,
                    1.0,
                    1e9,
                    "a positive number of seconds",
                )?,
                warmup: warmup(30)?,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
kind: Cluster
group: postgresql.cnpg.io
version: v1
plural: clusters
labels: {name: cluster, namespace: namespace}
signals:
  - name: replication_lag
    query: max by (namespace, cluster) (cnpg_pg_replication_lag)
    detector: {type: ewma, alpha: 0.05}
  - name: disk_fill
    query: max by (namespace, cluster) (kubelet_volume_stats_used_bytes / kubelet_volume_stats_capacity_bytes)
    detector: {type: forecast, threshold: 0.9, horizon_seconds: 86400}
multivariate: {signals: [replication_lag, disk_fill]}
"#;

    fn err(text: &str) -> String {
        validate_spec("models/x.yaml", text)
            .expect_err("invalid spec")
            .to_string()
    }

    #[test]
    fn a_good_spec_validates_with_defaults_filled_in() {
        let s = validate_spec("models/x.yaml", GOOD).expect("valid");
        assert_eq!(s.signals.len(), 2);
        assert_eq!(
            s.signals[0].detector,
            DetectorParams::Ewma {
                alpha: 0.05,
                warmup: 50,
                limit: 5.0
            }
        );
        assert_eq!(s.signals[0].options.threshold, 0.5);
        assert_eq!(s.multivariate.expect("multivariate").signals, vec![0, 1]);
    }

    #[test]
    fn unknown_fields_are_rejected_with_file_and_place() {
        let e = err(&GOOD.replace("alpha: 0.05", "alpah: 0.05"));
        assert!(
            e.contains("models/x.yaml") && e.contains("unknown field `alpah`"),
            "{e}"
        );
        let e = err(&format!("{GOOD}colour: blue\n"));
        assert!(e.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn errors_name_the_field_and_the_expectation() {
        let e = err(&GOOD.replace("alpha: 0.05", "alpha: 1.5"));
        assert_eq!(
            e,
            "validating model spec models/x.yaml: field `signals[0].detector.alpha` must be in (0, 1] (got 1.5)"
        );
        let e = err(&GOOD.replace("type: ewma, alpha: 0.05", "type: ewma, window: 10"));
        assert!(
            e.contains("`signals[0].detector.window` is not a parameter of detector \"ewma\""),
            "{e}"
        );
        let e = err(&GOOD.replace("type: forecast, threshold: 0.9,", "type: forecast,"));
        assert!(
            e.contains("`signals[1].detector.threshold` is required"),
            "{e}"
        );
        let e = err(&GOOD.replace("[replication_lag, disk_fill]", "[replication_lag, disk]"));
        assert!(
            e.contains("`multivariate.signals[1]` must name a signal"),
            "{e}"
        );
        let e = err(&GOOD.replace(", namespace: namespace", ""));
        assert!(e.contains("`labels.namespace` is required"), "{e}");
        let e = err(&GOOD.replace("name: disk_fill", "name: replication_lag"));
        assert!(e.contains("must be unique"), "{e}");
        let e = err(&GOOD.replace("type: ewma", "type: prophet"));
        assert!(e.contains("must be one of ewma"), "{e}");
    }
}
