use std::collections::BTreeSet;

use super::*;

#[test]
fn every_documented_example_returns_what_the_docs_say() {
    let engine = build_engine(&Limits::default());
    for f in HOST_API {
        let got: Dynamic = engine
            .eval(f.example)
            .unwrap_or_else(|e| panic!("{}: {e}", f.signature));
        let got = dynamic_to_json(&got).expect("json");
        let want: serde_json::Value = serde_json::from_str(f.returns).expect("returns is JSON");
        assert_eq!(got, want, "{}", f.signature);
    }
}

/// Every action kind can be proposed by some host function, and each
/// function's example proposes the kind it declares: a new action kind
/// without a host function, or an entry declaring the wrong kind, fails here.
#[test]
fn every_action_kind_has_a_host_function_that_produces_it() {
    let engine = build_engine(&Limits::default());
    let mut produced = BTreeSet::new();
    for f in HOST_API {
        let got: Dynamic = engine
            .eval(f.example)
            .unwrap_or_else(|e| panic!("{}: {e}", f.signature));
        let intent = got.try_cast::<Intent>();
        let Some(kind) = f.produces else {
            continue;
        };
        let intent = intent.unwrap_or_else(|| panic!("{}: not an intent", f.signature));
        assert_eq!(intent.action.kind(), kind, "{}", f.signature);
        produced.insert(kind);
    }
    for kind in ActionKind::ALL {
        assert!(
            produced.contains(kind),
            "no host function produces {}",
            kind.name()
        );
    }
    assert_eq!(produced.len(), ActionKind::ALL.len());
}

/// `ActionKind::name` is the serde tag of the action, so journal rows,
/// metric labels and the JSON intents agree.
#[test]
fn action_kind_names_are_the_serde_tags() {
    let engine = build_engine(&Limits::default());
    for f in HOST_API.iter().filter(|f| f.produces.is_some()) {
        let got: Dynamic = engine.eval(f.example).expect("example");
        let json = dynamic_to_json(&got).expect("json");
        let intent = got.try_cast::<Intent>().expect("intent");
        assert_eq!(
            json["action"],
            intent.action.kind().name(),
            "{}",
            f.signature
        );
    }
    let mut names: Vec<_> = ActionKind::ALL.iter().map(|k| k.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ActionKind::ALL.len(), "names are unique");
}

#[test]
fn rules_api_md_is_the_generated_reference() {
    let committed = include_str!("../../../rules/API.md");
    assert_eq!(
        committed,
        host_api_markdown(),
        "rules/API.md is stale: run `autopilot runbook api > rules/API.md`"
    );
}

#[test]
fn bad_arguments_are_errors_not_actions() {
    let engine = build_engine(&Limits::default());
    for (script, needle) in [
        (
            r#"scale(#{kind: "PaymentGateway", name: "gw"}, 3)"#,
            "namespace",
        ),
        (
            r#"scale(#{kind: "PaymentGateway", namespace: "p", name: "gw"}, -1)"#,
            "negative",
        ),
        (
            r#"shift_traffic(#{kind: "VirtualService", namespace: "p", name: "v"}, 0, #{a: 60, b: 60})"#,
            "sum to 100",
        ),
        (
            r#"scale(#{kind: "PaymentGateway", namespace: "p", name: "gw"}, ())"#,
            "scale",
        ),
        (
            r#"require(#{}.x, "spec.replicas")"#,
            "missing data: spec.replicas",
        ),
        (r#"mean([])"#, "missing data"),
    ] {
        let err = engine
            .eval::<Dynamic>(script)
            .expect_err(script)
            .to_string();
        assert!(err.contains(needle), "{script}: {err}");
    }
}

#[test]
fn pg_sizes_round_trip() {
    assert_eq!(parse_pg_bytes("64kB"), Some(65536));
    assert_eq!(parse_pg_bytes("1GB"), Some(1 << 30));
    assert_eq!(parse_pg_bytes("12XB"), None);
    assert_eq!(format_pg_bytes(3 << 20), "3MB");
    assert_eq!(format_pg_bytes(1500), "1500B");
}

#[test]
fn eval_and_imports_are_unavailable() {
    let engine = build_engine(&Limits::default());
    assert!(engine.compile(r#"eval("1")"#).is_err());
    let err = engine.eval::<Dynamic>(r#"import "x" as y; 1"#);
    assert!(err.is_err());
    // No clock: time comes from ctx.now only.
    let err = engine.eval::<Dynamic>("timestamp()").expect_err("no clock");
    assert!(err.to_string().contains("timestamp"), "{err}");
    // The standard library scripts rely on is there.
    let v: i64 = engine
        .eval(r#"let s = "4Gi"; s.replace("Gi", "GB"); [1, 2, 3].extract(1).len() + parse_int("2") + (2.5).ceiling().to_int() + s.len()"#)
        .expect("std functions");
    assert_eq!(v, 2 + 2 + 3 + 3);
}
