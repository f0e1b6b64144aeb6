//! Model spec validation: good specs get their defaults, bad ones name the
//! file, the field and what was expected.

use super::detector::SPEC_KINDS;
use super::*;
use crate::detect::detectors::{DetectorKind, Direction};

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
            half_life_seconds: None,
            warmup: 50,
            limit: 5.0
        }
    );
    // `alpha` still works, for one release, with a warning saying what to
    // write instead.
    assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
    assert!(
        s.warnings[0].contains("`signals[0].detector.alpha` is deprecated")
            && s.warnings[0].contains("half_life: 405s"),
        "{}",
        s.warnings[0]
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

/// A one-signal spec whose detector block is `detector`.
fn with_detector(detector: &str) -> String {
    format!(
        "kind: Cluster\ngroup: g\nversion: v1\nplural: clusters\nnamespaced: false\nlabels: {{name: cluster}}\nsignals:\n  - name: s\n    query: up\n    detector: {detector}\n"
    )
}

#[test]
fn every_spec_kind_validates_with_its_defaults_and_others_are_refused() {
    for kind in DetectorKind::ALL {
        let extra = if kind == DetectorKind::Forecast {
            ", threshold: 0.9"
        } else {
            ""
        };
        let text = with_detector(&format!("{{type: {}{extra}}}", kind.name()));
        let got = validate_spec("models/x.yaml", &text);
        if SPEC_KINDS.contains(&kind) {
            let name = kind.name();
            let detector = got.expect(name).signals[0].detector.clone();
            assert_eq!(detector.kind(), kind);
            if let Some(defaults) = kind.default_params() {
                assert_eq!(detector, in_time(defaults), "one source of defaults");
            }
        } else {
            let e = got.expect_err(kind.name()).to_string();
            assert!(
                e.contains(
                    "`signals[0].detector.type` must be one of ewma, mad, seasonal, cusum, forecast"
                ),
                "{e}"
            );
        }
    }
}

/// The defaults in samples (the CLI's, for NAB's 5-minute data) in the
/// form a model spec gets them: spans in seconds.
fn in_time(p: DetectorParams) -> DetectorParams {
    use crate::detect::detectors::defaults::*;
    match p {
        DetectorParams::Ewma {
            alpha,
            warmup,
            limit,
            ..
        } => DetectorParams::Ewma {
            alpha,
            half_life_seconds: Some(ewma::HALF_LIFE_SECONDS),
            warmup,
            limit,
        },
        DetectorParams::Mad { warmup, limit, .. } => DetectorParams::Mad {
            window: MAX_WINDOW_SAMPLES,
            window_seconds: Some(mad::WINDOW_SECONDS),
            warmup,
            limit,
        },
        DetectorParams::Cusum {
            alpha,
            k,
            warmup,
            limit,
            ..
        } => DetectorParams::Cusum {
            alpha,
            half_life_seconds: Some(cusum::HALF_LIFE_SECONDS),
            k,
            warmup,
            limit,
        },
        other => other,
    }
}

/// The detector a one-signal spec with block `text` validates to, and the
/// spec's warnings.
fn detector(text: &str) -> (DetectorParams, Vec<String>) {
    let s = validate_spec("models/x.yaml", &with_detector(text)).expect(text);
    (s.signals[0].detector.clone(), s.warnings)
}

#[test]
fn a_forecasts_weights_are_half_lives_and_per_sample_ones_are_deprecated() {
    let (d, w) = detector("{type: forecast, threshold: 1, half_life: 1m, trend_half_life: 10m}");
    assert!(w.is_empty(), "{w:?}");
    let DetectorParams::Forecast {
        half_life_seconds,
        trend_half_life_seconds,
        ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(
        (half_life_seconds, trend_half_life_seconds),
        (Some(60.0), Some(600.0))
    );
    // alpha and beta still work, for one release, each with a warning
    // saying what to write instead, and weigh per sample.
    let (d, w) = detector("{type: forecast, threshold: 1, alpha: 0.5, beta: 0.1}");
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("`signals[0].detector.alpha` is deprecated")
            && w[0].contains("half_life: 30s"),
        "{w:?}"
    );
    assert!(
        w[1].contains("`signals[0].detector.beta` is deprecated")
            && w[1].contains("trend_half_life: 197s"),
        "{w:?}"
    );
    let DetectorParams::Forecast {
        beta,
        trend_half_life_seconds,
        ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!((beta, trend_half_life_seconds), (0.1, None));
    // One or the other.
    let e = err(&with_detector(
        "{type: forecast, threshold: 1, beta: 0.1, trend_half_life: 10m}",
    ));
    assert!(
        e.contains("signals[0].detector.beta")
            && e.contains("must not be given with trend_half_life"),
        "{e}"
    );
    let e = err(&with_detector(
        "{type: forecast, threshold: 1, trend_half_life: soon}",
    ));
    assert!(
        e.contains("signals[0].detector.trend_half_life") && e.contains("\"soon\""),
        "{e}"
    );
}

#[test]
fn spans_are_durations_and_counts_of_samples_are_deprecated() {
    let (d, w) = detector("{type: mad, window: 30m}");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        d,
        DetectorParams::Mad {
            window: 2048,
            window_seconds: Some(1800),
            warmup: 50,
            limit: 5.0
        }
    );
    assert_eq!(detector("{type: mad, window_seconds: 1800}").0, d);
    assert_eq!(detector("{type: mad, window: 1h30m}").0.clone(), {
        let DetectorParams::Mad {
            window,
            warmup,
            limit,
            ..
        } = d.clone()
        else {
            unreachable!()
        };
        DetectorParams::Mad {
            window,
            window_seconds: Some(5400),
            warmup,
            limit,
        }
    });
    let (d, w) = detector("{type: mad, window: 60}");
    assert_eq!(
        d,
        DetectorParams::Mad {
            window: 60,
            window_seconds: None,
            warmup: 50,
            limit: 5.0
        }
    );
    assert!(
        w.len() == 1
            && w[0]
                .contains("`signals[0].detector.window` as a count of samples (60) is deprecated")
            && w[0].contains("window: 30m"),
        "{w:?}"
    );
    let (d, w) = detector("{type: ewma, half_life: 6m45s}");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        d,
        DetectorParams::Ewma {
            alpha: 0.02,
            half_life_seconds: Some(405.0),
            warmup: 50,
            limit: 5.0
        }
    );
    assert_eq!(detector("{type: ewma, half_life_seconds: 405}").0, d);
    let (d, w) = detector("{type: cusum, half_life: 34m30s}");
    assert!(
        w.is_empty()
            && matches!(d, DetectorParams::Cusum { half_life_seconds: Some(h), .. } if h == 2070.0)
    );
    for (bad, field, says) in [
        (
            "{type: mad, window: 30x}",
            "window",
            "must be a duration between 1m and 31d",
        ),
        (
            "{type: mad, window: 30s}",
            "window",
            "must be a duration between 1m and 31d",
        ),
        // Below the range: the range is what is wrong.
        (
            "{type: mad, window: 1.5s}",
            "window",
            "must be a duration between 1m and 31d, e.g. 30m (got \"1.5s\")",
        ),
        // Within the range in words, so the error must say what else is.
        (
            "{type: mad, window: 90.5s}",
            "window",
            "must be a duration between 1m and 31d, e.g. 30m, in whole seconds (got \"90.5s\")",
        ),
        (
            "{type: mad, window: 30m, window_seconds: 60}",
            "window_seconds",
            "must not be given with window",
        ),
        (
            "{type: ewma, half_life: soon}",
            "half_life",
            "must be a duration between 1s and 365d",
        ),
        (
            "{type: ewma, half_life: 5m, alpha: 0.1}",
            "alpha",
            "must not be given with a half-life",
        ),
        (
            "{type: seasonal, half_life: 5m}",
            "half_life",
            "is not a parameter of detector \"seasonal\"",
        ),
    ] {
        let e = err(&with_detector(bad));
        assert!(
            e.contains(&format!("`signals[0].detector.{field}` {says}")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn durations_parse_as_prometheus_writes_them() {
    assert_eq!(parse_duration("90s"), Some(90.0));
    assert_eq!(parse_duration("30m"), Some(1800.0));
    assert_eq!(parse_duration("1h30m"), Some(5400.0));
    assert_eq!(parse_duration("2d"), Some(172_800.0));
    assert_eq!(parse_duration("600"), Some(600.0));
    assert_eq!(parse_duration("1.5h"), Some(5400.0));
    for bad in ["", "m", "10 m", "10w", "1h-5m"] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
    assert!((half_life_for(0.05, 30.0) - 405.4).abs() < 0.1);
}

#[test]
fn the_default_models_use_no_deprecated_spelling() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("models") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&p).expect("read");
            let s = validate_spec(&p.display().to_string(), &text).expect("valid");
            assert!(s.warnings.is_empty(), "{:?}", s.warnings);
            n += 1;
        }
    }
    assert!(n > 10, "{n} models");
}

#[test]
fn a_forecast_gets_the_forecast_defaults() {
    let s = validate_spec(
        "models/x.yaml",
        &with_detector("{type: forecast, threshold: 0.9}"),
    )
    .expect("valid");
    assert_eq!(
        s.signals[0].detector,
        DetectorParams::Forecast {
            alpha: 0.1,
            half_life_seconds: Some(200.0),
            beta: 0.05,
            trend_half_life_seconds: Some(400.0),
            threshold: 0.9,
            direction: Direction::Above,
            horizon_seconds: 86_400.0,
            warmup: 30,
        }
    );
}

#[test]
fn a_forecasts_direction_is_a_side() {
    let direction = |text: &str| {
        validate_spec(
            "models/x.yaml",
            &with_detector(&format!("{{type: forecast, threshold: 0.9{text}}}")),
        )
        .map(|s| match &s.signals[0].detector {
            DetectorParams::Forecast { direction, .. } => *direction,
            other => panic!("not a forecast: {other:?}"),
        })
    };
    assert_eq!(direction("").expect("default"), Direction::Above);
    assert_eq!(
        direction(", direction: below").expect("below"),
        Direction::Below
    );
    assert_eq!(
        direction(", direction: up")
            .expect_err("not a side")
            .to_string(),
        "validating model spec models/x.yaml: field `signals[0].detector.direction` must be \"above\" or \"below\" (got \"up\")"
    );
}

/// Every float a spec accepts, one per class of field: each `V` is replaced
/// by a non-finite value, with the field the error must name and what it
/// must say was expected.
const FLOAT_FIELDS: &[(&str, &str, &str)] = &[
    // Detector parameters shared by several detectors.
    (
        "{type: ewma, alpha: V}",
        "signals[0].detector.alpha",
        "in (0, 1]",
    ),
    (
        "{type: ewma, limit: V}",
        "signals[0].detector.limit",
        "positive",
    ),
    (
        "{type: mad, limit: V}",
        "signals[0].detector.limit",
        "positive",
    ),
    (
        "{type: seasonal, alpha: V}",
        "signals[0].detector.alpha",
        "in (0, 1]",
    ),
    (
        "{type: seasonal, limit: V}",
        "signals[0].detector.limit",
        "positive",
    ),
    (
        "{type: cusum, alpha: V}",
        "signals[0].detector.alpha",
        "in (0, 1]",
    ),
    (
        "{type: cusum, limit: V}",
        "signals[0].detector.limit",
        "positive",
    ),
    // Parameters of one detector.
    (
        "{type: cusum, k: V}",
        "signals[0].detector.k",
        "between 0 and 100",
    ),
    (
        "{type: forecast, threshold: 0.9, alpha: V}",
        "signals[0].detector.alpha",
        "in (0, 1]",
    ),
    (
        "{type: forecast, threshold: 0.9, beta: V}",
        "signals[0].detector.beta",
        "in (0, 1]",
    ),
    (
        "{type: forecast, threshold: 0.9, horizon_seconds: V}",
        "signals[0].detector.horizon_seconds",
        "a positive number of seconds",
    ),
    // A forecast's limit: any number, but a number.
    (
        "{type: forecast, threshold: V}",
        "signals[0].detector.threshold",
        "a number, the value not to cross",
    ),
];

/// Non-finite YAML floats and how the error spells them back.
const NON_FINITE: [(&str, &str); 5] = [
    (".nan", ".nan"),
    (".NaN", ".nan"),
    (".inf", ".inf"),
    ("+.inf", ".inf"),
    ("-.inf", "-.inf"),
];

fn not_finite(field: &str, what: &str, shown: &str) -> String {
    format!(
        "validating model spec models/x.yaml: field `{field}` must be {what} (got {shown}, which is not a finite number)"
    )
}

#[test]
fn non_finite_detector_parameters_are_refused_naming_the_field() {
    for (detector, field, what) in FLOAT_FIELDS {
        for (yaml, shown) in NON_FINITE {
            let text = with_detector(&detector.replace('V', yaml));
            assert_eq!(
                err(&text),
                not_finite(field, what, shown),
                "{detector} {yaml}"
            );
        }
    }
}

#[test]
fn a_non_finite_signal_threshold_is_refused() {
    let at = "    detector: {type: ewma, alpha: 0.05}\n";
    for (yaml, shown) in NON_FINITE {
        let text = GOOD.replace(at, &format!("{at}    threshold: {yaml}\n"));
        assert_eq!(
            err(&text),
            not_finite("signals[0].threshold", "in (0, 1]", shown),
            "{yaml}"
        );
    }
}

#[test]
fn a_non_finite_multivariate_limit_is_refused() {
    let at = "[replication_lag, disk_fill]}";
    for (yaml, shown) in NON_FINITE {
        let text = GOOD.replace(
            at,
            &format!("[replication_lag, disk_fill], limit: {yaml}}}"),
        );
        assert_eq!(
            err(&text),
            not_finite("multivariate.limit", "positive", shown),
            "{yaml}"
        );
    }
}

#[test]
fn finite_floats_out_of_range_still_say_what_they_got() {
    // The finiteness check comes first but does not replace the range.
    let e = err(&with_detector("{type: cusum, k: 101}"));
    assert!(
        e.ends_with("field `signals[0].detector.k` must be between 0 and 100 (got 101)"),
        "{e}"
    );
    // A number too large for a float is not silently infinity either.
    let e = err(&with_detector("{type: ewma, limit: 1e999}"));
    assert!(e.contains("parsing model spec models/x.yaml"), "{e}");
}

/// `GOOD` with `field: value` added to its `multivariate` block.
fn with_mixture(field: &str, value: &str) -> String {
    GOOD.replace(
        "[replication_lag, disk_fill]}",
        &format!("[replication_lag, disk_fill], {field}: {value}}}"),
    )
}

/// The mixture's parameters of a valid spec.
fn mixture(text: &str) -> crate::detect::gmm::GmmParams {
    validate_spec("models/x.yaml", text)
        .expect("valid")
        .multivariate
        .expect("multivariate")
        .params
}

#[test]
fn a_mixtures_minimum_history_is_a_duration() {
    let with = |v: &str| with_mixture("min_history", v);
    assert_eq!(mixture(GOOD).min_history_seconds, 7200.0);
    assert_eq!(mixture(&with("90m")).min_history_seconds, 5400.0);
    assert_eq!(mixture(&with("0")).min_history_seconds, 0.0);
    for bad in ["2 hours", "-1h", "2d"] {
        assert_eq!(
            err(&with(bad)),
            format!(
                "validating model spec models/x.yaml: field `multivariate.min_history` must be a duration between 0s and 1d, e.g. 2h (got {bad:?})"
            ),
        );
    }
}

#[test]
fn a_mixtures_directions_name_its_signals_and_a_side() {
    let with = |v: &str| with_mixture("direction", v);
    let directions = |text: &str| mixture(text).directions;
    assert_eq!(directions(GOOD), vec![]);
    assert_eq!(
        directions(&with("{disk_fill: above}")),
        vec![None, Some(Direction::Above)]
    );
    assert_eq!(
        directions(&with("{disk_fill: above, replication_lag: below}")),
        vec![Some(Direction::Below), Some(Direction::Above)]
    );
    assert_eq!(
        err(&with("{latency: above}")),
        "validating model spec models/x.yaml: field `multivariate.direction.latency` must name one of multivariate.signals (replication_lag, disk_fill); \"latency\" is not one"
    );
    assert_eq!(
        err(&with("{disk_fill: up}")),
        "validating model spec models/x.yaml: field `multivariate.direction.disk_fill` must be \"above\" or \"below\" (got \"up\")"
    );
}
