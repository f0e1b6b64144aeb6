//! Model spec validation: good specs get their defaults, bad ones name the
//! file, the field and what was expected.

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
                assert_eq!(detector, defaults, "one source of defaults");
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
            beta: 0.05,
            threshold: 0.9,
            direction: Direction::Above,
            horizon_seconds: 86_400.0,
            warmup: 30,
        }
    );
}
