use super::*;
use crate::decide::intent::Action;

const GOOD: &str = r#"
fn runbook() {
    #{ trigger: #{ findings: #{ kind: "PaymentGateway", signals: ["cpu_saturation"], min_score: 0.7 } } }
}
fn decide(ctx) {
    let r = require(ctx.resource.spec.replicas, "spec.replicas");
    [ scale(ctx.component, r + 2).reason("saturated") ]
}
"#;

fn gw() -> ComponentId {
    ComponentId {
        kind: "PaymentGateway".into(),
        namespace: "payments".into(),
        name: "gw".into(),
    }
}

fn ctx(resource: serde_json::Value) -> Context {
    Context {
        now: 1_700_000_000,
        trigger: "finding".into(),
        component: gw(),
        findings: vec![],
        samples: Default::default(),
        resource,
        facts: Default::default(),
    }
}

fn body(decide: &str) -> String {
    format!(
        "fn runbook() {{ #{{ trigger: #{{ cron: #{{ schedule: \"0 3 * * *\" }} }} }} }}\nfn decide(ctx) {{\n{decide}\n}}\n"
    )
}

fn set_with(name: &str, src: &str) -> RunbookSet {
    let mut set = RunbookSet::new(Limits {
        budget: std::time::Duration::from_secs(2),
        // Rhai re-measures an array on each push; keep the quadratic cost small.
        max_array_size: 1000,
        ..Limits::default()
    });
    let errs = set.load(&[(name.into(), src.into())]);
    assert!(errs.is_empty(), "{errs:?}");
    set
}

#[test]
fn a_good_runbook_proposes_typed_intents() {
    let mut set = set_with("autoscale", GOOD);
    let rb = set.get("autoscale").expect("loaded");
    assert_eq!(rb.hash.len(), 64);
    let out = set
        .evaluate(
            "autoscale",
            &ctx(serde_json::json!({"spec": {"replicas": 3}})),
        )
        .expect("evaluates");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].runbook, "autoscale");
    assert_eq!(out[0].reason, "saturated");
    assert_eq!(
        out[0].action,
        Action::ScaleReplicas {
            target: gw(),
            replicas: 5
        }
    );
}

#[test]
fn missing_data_stops_instead_of_acting() {
    let mut set = set_with("autoscale", GOOD);
    let err = set
        .evaluate("autoscale", &ctx(serde_json::json!({"spec": {}})))
        .expect_err("no replicas, no action");
    assert_eq!(err.kind(), "missing_data", "{err}");
    assert!(err.to_string().contains("spec.replicas"), "{err}");
    assert_eq!(
        set.error_counts()[&("autoscale".to_string(), "missing_data")],
        1
    );
}

#[test]
fn a_syntax_error_names_file_line_and_column_and_the_last_good_version_stays() {
    let mut set = set_with("autoscale", GOOD);
    let good_hash = set.get("autoscale").expect("loaded").hash.clone();
    let broken = "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"* * * * *\" } } } }\nfn decide(ctx) {\n  let x = ;\n}\n";
    let errs = set.load(&[("autoscale".into(), broken.into())]);
    assert_eq!(errs.len(), 1);
    match &errs[0] {
        Error::CompileRunbook {
            file, line, column, ..
        } => {
            assert_eq!((file.as_str(), *line), ("autoscale", 3));
            assert!(*column > 0);
        }
        other => panic!("{other}"),
    }
    assert!(
        errs[0].to_string().starts_with("autoscale:3:"),
        "{}",
        errs[0]
    );
    assert_eq!(set.get("autoscale").expect("kept").hash, good_hash);
    assert!(
        set.evaluate(
            "autoscale",
            &ctx(serde_json::json!({"spec": {"replicas": 1}}))
        )
        .is_ok()
    );
}

#[test]
fn an_editor_stays_with_its_version_only() {
    let mut set = set_with("autoscale", GOOD);
    let first = set.get("autoscale").expect("loaded").hash.clone();
    assert_eq!(set.get("autoscale").expect("loaded").editor, None);
    set.set_editor("autoscale", "another-version", Some("mallory".into()));
    assert_eq!(
        set.get("autoscale").expect("loaded").editor,
        None,
        "an editor for another version is not taken"
    );
    set.set_editor("autoscale", &first, Some("alice".into()));
    // Reloaded unchanged (another runbook of the ConfigMap changed): kept.
    assert!(set.load(&[("autoscale".into(), GOOD.into())]).is_empty());
    assert_eq!(
        set.get("autoscale").expect("loaded").editor.as_deref(),
        Some("alice")
    );
    // A new version has no editor until the agent gives it its own.
    let changed = format!("{GOOD}\n// tuned\n");
    assert!(set.load(&[("autoscale".into(), changed)]).is_empty());
    let rb = set.get("autoscale").expect("loaded");
    assert_ne!(rb.hash, first);
    assert_eq!(rb.editor, None);
}

#[test]
fn declarations_are_checked_at_load() {
    let engine = build_engine(&Limits::default());
    for (src, needle) in [
        ("fn decide(ctx) { [] }", "no `fn runbook()`"),
        (
            "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } } } }",
            "no `fn decide(ctx)`",
        ),
        (
            "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"bogus\" } } } }\nfn decide(ctx) { [] }",
            "invalid cron",
        ),
        (
            "fn runbook() { #{ trigger: #{ sometimes: 1 } } }\nfn decide(ctx) { [] }",
            "invalid declaration",
        ),
        (
            "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } }, mode: \"yolo\" } }\nfn decide(ctx) { [] }",
            "invalid declaration",
        ),
        (
            "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } } } }\nfn decide(ctx) { missing_var }",
            "Undefined variable",
        ),
    ] {
        let err = compile(&engine, "r", src).expect_err(src).to_string();
        assert!(err.contains(needle), "{src}: {err}");
    }
}

#[test]
fn cron_triggers_read_weekdays_as_standard_cron() {
    let on = |schedule: &str| {
        format!(
            "fn runbook() {{ #{{ trigger: #{{ cron: #{{ schedule: \"{schedule}\" }} }} }} }}\nfn decide(ctx) {{ [] }}\n"
        )
    };
    let mut set = RunbookSet::new(Limits::default());
    let sources = [
        ("saturday", on("0 2 * * 6")),
        ("weekdays", on("0 2 * * 1-5")),
        ("sunday0", on("0 2 * * 0")),
        ("sunday7", on("0 2 * * 7")),
    ];
    let sources: Vec<(String, String)> = sources
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    assert!(set.load(&sources).is_empty());
    // 02:00 UTC on each day of the week of Monday 2026-11-30; the
    // trigger is due when 02:00 falls in (last, now].
    let day = 86_400;
    let monday_0200 = 1_796_004_000; // 2026-11-30T02:00:00Z
    let due_on = |d: i64| {
        let t = monday_0200 + d * day;
        set.due(t - 60, t)
    };
    for d in 0..5 {
        assert_eq!(due_on(d), vec!["weekdays".to_string()], "day {d}");
    }
    // 2026-12-05 is a Saturday, 2026-12-06 a Sunday.
    assert_eq!(due_on(5), vec!["saturday".to_string()]);
    assert_eq!(
        due_on(6),
        vec!["sunday0".to_string(), "sunday7".to_string()]
    );
}

#[test]
fn a_bad_cron_schedule_is_a_clear_compile_error() {
    let engine = build_engine(&Limits::default());
    for (schedule, needle) in [
        ("0 2 * *", "expected five fields"),
        ("0 2 * * 8", "invalid cron schedule \"0 2 * * 8\""),
        ("0 0 L * *", "not standard cron"),
    ] {
        let src = format!(
            "fn runbook() {{ #{{ trigger: #{{ cron: #{{ schedule: \"{schedule}\" }} }} }} }}\nfn decide(ctx) {{ [] }}"
        );
        let err = compile(&engine, "nightly.rhai", &src).expect_err(schedule);
        let text = err.to_string();
        assert!(text.contains(needle), "{schedule}: {text}");
        assert!(text.contains("nightly.rhai"), "{text}");
        assert_eq!(err.kind(), "compile");
    }
}

#[test]
fn runaway_scripts_are_stopped_with_a_clear_error() {
    for (decide, kind) in [
        ("loop { }", "too_many_operations"),
        ("let s = \"x\"; loop { s += s; }", "data_too_large"),
        ("let a = []; loop { a.push(1); }", "data_too_large"),
        ("fn_that_does_not_exist(ctx)", "function_not_found"),
        ("ctx.resource.spec.replicas + 1", "missing_data"),
        ("ctx.now + ()", "function_not_found"),
        ("42", "bad_result"),
    ] {
        let mut set = set_with("bad", &body(decide));
        let err = set
            .evaluate("bad", &ctx(serde_json::json!({})))
            .expect_err(decide);
        assert_eq!(err.kind(), kind, "{decide}: {err}");
    }
}

#[test]
fn deep_recursion_is_stopped() {
    let src = "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } } } }\nfn down(n) { down(n + 1) }\nfn decide(ctx) { down(0) }\n";
    let mut set = set_with("deep", src);
    let err = set
        .evaluate("deep", &ctx(serde_json::json!({})))
        .expect_err("stack");
    assert_eq!(err.kind(), "call_depth", "{err}");
}

#[test]
fn the_wall_clock_budget_stops_a_slow_script() {
    // Operations are unlimited here so only the clock can stop it.
    let mut set = RunbookSet::new(Limits {
        max_operations: 0,
        budget: std::time::Duration::from_millis(50),
        ..Limits::default()
    });
    assert!(set.load(&[("slow".into(), body("loop { }"))]).is_empty());
    let err = set
        .evaluate("slow", &ctx(serde_json::json!({})))
        .expect_err("budget");
    assert_eq!(err.kind(), "time_budget", "{err}");
    assert!(err.to_string().contains("time budget exceeded"), "{err}");
}

#[test]
fn triggers_select_findings_cron_and_conditions() {
    let mut set = set_with("autoscale", GOOD);
    let src = "fn runbook() { #{ trigger: #{ condition: #{ kind: \"PaymentGateway\", condition: \"Degraded\" } } } }\nfn decide(ctx) { [] }";
    let mut sources = vec![("autoscale".to_string(), GOOD.to_string())];
    sources.push(("degraded".into(), src.into()));
    sources.push(("nightly".into(), body("[]")));
    assert!(set.load(&sources).is_empty());

    let finding = |signal: &str, score: f64| Finding {
        component: gw(),
        signal: signal.into(),
        detector: "ewma".into(),
        score,
        at: 0,
        value: 1.0,
        baseline: 0.5,
        time_to_threshold_seconds: None,
        explanation: String::new(),
        window: None,
    };
    let none = Default::default();
    let hits = set.triggered_by_findings(
        &[
            finding("cpu_saturation", 0.9),
            finding("cpu_saturation", 0.5),
            finding("latency_p99", 0.9),
        ],
        &none,
    );
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].2.len(), 1);

    // Deferred on the gateway, the runbook fires on its signal at any
    // score still reported, not on other signals or other components.
    let deferred = [("autoscale".to_string(), gw())].into_iter().collect();
    let low = [finding("cpu_saturation", 0.5), finding("latency_p99", 0.9)];
    assert!(set.triggered_by_findings(&low, &none).is_empty());
    let hits = set.triggered_by_findings(&low, &deferred);
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].0, "autoscale");
    assert_eq!(hits[0].2.len(), 1);
    assert_eq!(hits[0].2[0].signal, "cpu_saturation");
    let mut elsewhere = finding("cpu_saturation", 0.5);
    elsewhere.component.name = "other".into();
    assert!(
        set.triggered_by_findings(&[elsewhere], &deferred)
            .is_empty()
    );
    let other_runbook = [("degraded".to_string(), gw())].into_iter().collect();
    assert!(set.triggered_by_findings(&low, &other_runbook).is_empty());

    // 2023-11-14 22:13:20 UTC → next 03:00 is on the 15th.
    let now = 1_700_000_000;
    assert!(set.due(now, now + 3600).is_empty());
    assert_eq!(set.due(now, now + 6 * 3600), vec!["nightly".to_string()]);

    let degraded =
        serde_json::json!({"status": {"conditions": [{"type": "Degraded", "status": "True"}]}});
    assert_eq!(
        set.triggered_by_resource("PaymentGateway", &degraded),
        vec!["degraded".to_string()]
    );
    assert!(
        set.triggered_by_resource("ClearingAdapter", &degraded)
            .is_empty()
    );
}

#[test]
fn forecast_horizon_filters_findings() {
    let t = FindingTrigger {
        kind: "Certificate".into(),
        signals: vec![],
        detectors: vec!["forecast".into()],
        min_score: 0.0,
        horizon_seconds: Some(86_400.0),
        direction: None,
    };
    let mut f = Finding {
        component: gw(),
        signal: "expiry".into(),
        detector: "forecast".into(),
        score: 1.0,
        at: 0,
        value: 0.0,
        baseline: 0.0,
        time_to_threshold_seconds: Some(3600.0),
        explanation: String::new(),
        window: None,
    };
    f.component.kind = "Certificate".into();
    assert!(t.matches(&f));
    f.time_to_threshold_seconds = Some(200_000.0);
    assert!(!t.matches(&f));
    f.time_to_threshold_seconds = None;
    assert!(!t.matches(&f), "no forecast, no action");
}

#[test]
fn a_trigger_judges_forecasts_by_time_and_anomalies_by_score() {
    // autoscale-gateway's shape: a saturation forecast and a calibrated
    // latency under one trigger.
    let t = FindingTrigger {
        kind: "PaymentGateway".into(),
        signals: vec!["saturation".into(), "latency_p99".into()],
        detectors: vec![],
        min_score: 0.9,
        horizon_seconds: Some(600.0),
        direction: None,
    };
    let forecast = |score: f64, ttt: f64| Finding {
        component: gw(),
        signal: "saturation".into(),
        detector: "forecast".into(),
        score,
        at: 0,
        value: 0.8,
        baseline: 0.9,
        time_to_threshold_seconds: Some(ttt),
        explanation: String::new(),
        window: None,
    };
    let latency = |score: f64| Finding {
        signal: "latency_p99".into(),
        detector: "ewma".into(),
        time_to_threshold_seconds: None,
        ..forecast(score, 0.0)
    };
    // A forecast's score (how soon, against its model's horizon) is not a
    // rarity: under min_score, still fires when the crossing is close.
    assert!(t.matches(&forecast(0.6, 500.0)));
    assert!(!t.matches(&forecast(0.99, 700.0)), "past horizon_seconds");
    // An anomaly's score is: horizon_seconds never applies to it.
    assert!(t.matches(&latency(0.95)));
    assert!(!t.matches(&latency(0.85)));
    // Without horizon_seconds, every forecast finding fires, whatever min_score.
    let t = FindingTrigger {
        horizon_seconds: None,
        ..t
    };
    assert!(t.matches(&forecast(0.51, 5_000.0)));
    assert!(!t.matches(&latency(0.85)));
    // A deferred runbook stays armed at any score or time.
    let t = FindingTrigger {
        horizon_seconds: Some(60.0),
        ..t
    };
    assert!(!t.matches(&forecast(0.9, 120.0)));
    assert!(t.matches_at_any_score(&forecast(0.9, 120.0)));
}

#[test]
fn removed_sources_unload() {
    let mut set = set_with("autoscale", GOOD);
    assert!(set.load(&[]).is_empty());
    assert!(set.get("autoscale").is_none());
}

#[test]
fn direction_filters_two_sided_findings_but_not_forecasts() {
    let src = "fn runbook() { #{ trigger: #{ findings: #{ kind: \"PaymentGateway\", signals: [\"latency_p99\", \"saturation\"], direction: \"above\" } } } }\nfn decide(ctx) { [] }";
    let set = set_with("up-only", src);
    let finding = |signal: &str, value: f64, ttt: Option<f64>| Finding {
        component: gw(),
        signal: signal.into(),
        detector: if ttt.is_some() { "forecast" } else { "ewma" }.into(),
        score: 0.9,
        at: 0,
        value,
        baseline: 0.5,
        time_to_threshold_seconds: ttt,
        explanation: String::new(),
        window: None,
    };
    let fired = |f: Finding| {
        !set.triggered_by_findings(&[f], &Default::default())
            .is_empty()
    };
    assert!(fired(finding("latency_p99", 2.0, None)), "a rise fires");
    assert!(!fired(finding("latency_p99", 0.1, None)), "a drop does not");
    assert!(
        fired(finding("saturation", 0.7, Some(600.0))),
        "a forecast passes on its own direction"
    );
    let bad = "fn runbook() { #{ trigger: #{ findings: #{ kind: \"PaymentGateway\", direction: \"up\" } } } }\nfn decide(ctx) { [] }";
    let mut set = RunbookSet::new(Limits::default());
    let errors = set.load(&[("typo".into(), bad.into())]);
    assert_eq!(errors.len(), 1, "an unknown direction is a compile error");
}

/// A cron runbook returning `n` intents.
fn proposing(n: usize) -> String {
    body(&format!(
        "let out = []; for i in 0..{n} {{ out.push(scale(ctx.component, 2)); }} out"
    ))
}

#[test]
fn more_intents_than_the_cap_are_refused_as_a_whole() {
    let mut set = set_with("fanout", &proposing(20));
    let at_cap = set
        .evaluate("fanout", &ctx(serde_json::json!({})))
        .expect("20 is allowed");
    assert_eq!(at_cap.len(), 20);

    let mut set = set_with("fanout", &proposing(21));
    for _ in 0..2 {
        let err = set
            .evaluate("fanout", &ctx(serde_json::json!({})))
            .expect_err("21 is too many");
        assert_eq!(err.kind(), "too_many_intents");
        assert_eq!(
            err.to_string(),
            "fanout: evaluating runbook failed (too_many_intents): decide(ctx) returned 21 intents, more than the 20 one evaluation may propose; none was proposed"
        );
    }
    assert_eq!(
        set.error_counts()[&("fanout".to_string(), "too_many_intents")],
        2,
        "counted every time"
    );
}

#[test]
fn the_cap_comes_from_the_limits() {
    let mut set = RunbookSet::new(Limits {
        max_intents: 2,
        ..Limits::default()
    });
    let errs = set.load(&[
        ("two".into(), proposing(2)),
        ("three".into(), proposing(3)),
        ("none".into(), body("()")),
    ]);
    assert!(errs.is_empty(), "{errs:?}");
    let c = ctx(serde_json::json!({}));
    assert_eq!(set.evaluate("two", &c).map(|v| v.len()).ok(), Some(2));
    assert_eq!(set.evaluate("none", &c).map(|v| v.len()).ok(), Some(0));
    let err = set.evaluate("three", &c).expect_err("over");
    assert!(
        matches!(err, Error::TooManyIntents { ref runbook, count: 3, max: 2 } if runbook == "three"),
        "{err:?}"
    );
}

#[test]
fn a_refusal_is_news_once_per_runbook_version_and_count() {
    let mut r = Reported::new();
    assert!(first_report(&mut r, "fanout", "v1", 25));
    assert!(!first_report(&mut r, "fanout", "v1", 25), "the next cycle");
    assert!(first_report(&mut r, "fanout", "v1", 26), "the estate grew");
    assert!(!first_report(&mut r, "fanout", "v1", 25));
    assert!(first_report(&mut r, "other", "v1", 25), "per runbook");
    assert!(first_report(&mut r, "fanout", "v2", 25), "a new version");
    assert!(!first_report(&mut r, "fanout", "v2", 25));
    assert_eq!(
        r["fanout"].1.len(),
        1,
        "the old version's counts are forgotten"
    );
}

/// Log lines written while `f` runs.
fn logged(f: impl FnOnce()) -> String {
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf(Arc::default());
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let bytes = buf.0.lock().expect("log buffer").clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn a_runbook_over_the_cap_is_logged_once_per_version_and_count_not_every_cycle() {
    let mut set = set_with("fanout", &proposing(21));
    let c = ctx(serde_json::json!({}));
    let refusals = |log: &str| log.matches("runbook evaluation refused").count();
    let log = logged(|| {
        for _ in 0..3 {
            assert!(set.evaluate("fanout", &c).is_err());
        }
    });
    assert_eq!(refusals(&log), 1, "{log}");
    assert!(
        log.contains("returned 21 intents") && log.contains("fanout"),
        "{log}"
    );
    // A new version over the cap is reported again, once.
    assert!(set.load(&[("fanout".into(), proposing(22))]).is_empty());
    let log = logged(|| {
        for _ in 0..3 {
            assert!(set.evaluate("fanout", &c).is_err());
        }
    });
    assert_eq!(refusals(&log), 1, "{log}");
    assert!(log.contains("returned 22 intents"), "{log}");
    assert_eq!(
        set.error_counts()[&("fanout".to_string(), "too_many_intents")],
        6
    );
}

#[test]
fn other_runtime_errors_are_still_logged_every_time_and_unloading_forgets() {
    let c = ctx(serde_json::json!({}));
    let mut set = set_with("bad", &body("missing_function()"));
    let log = logged(|| {
        for _ in 0..2 {
            assert!(set.evaluate("bad", &c).is_err());
        }
    });
    assert_eq!(log.matches("runbook evaluation failed").count(), 2, "{log}");
    // An unloaded runbook's memory goes with it.
    let mut set = set_with("fanout", &proposing(21));
    assert!(set.evaluate("fanout", &c).is_err());
    assert!(set.load(&[]).is_empty());
    assert!(set.reported.is_empty());
}

#[test]
fn a_runbook_reads_the_window_a_finding_was_judged_on() {
    // Scales by how many σ the value was from the judged window's baseline;
    // a finding without a window (a forecast) leaves `window` unset.
    let src = body(
        "let f = ctx.findings[0];\n\
         if f.window == () { return []; }\n\
         let sigmas = (f.value - f.window.baseline) / f.window.spread;\n\
         [scale(ctx.component, (sigmas / 10.0).to_int() + f.window.samples).reason(`since ${f.window.start}`)]",
    );
    let mut set = set_with("judged", &src);
    let mut c = ctx(serde_json::json!({}));
    let mut f = Finding::fixture(gw(), "cpu_saturation", 0.9);
    f.value = 51.0;
    f.window = Some(crate::detect::JudgedWindow {
        start: 1_699_990_000,
        end: 1_699_999_700,
        samples: Some(3),
        baseline: 1.0,
        spread: 1.0,
    });
    c.findings = vec![f.clone()];
    let out = set.evaluate("judged", &c).expect("evaluates");
    assert_eq!(
        out[0].action,
        Action::ScaleReplicas {
            target: gw(),
            replicas: 8
        }
    );
    assert_eq!(out[0].reason, "since 1699990000");
    f.window = None;
    c.findings = vec![f];
    assert!(set.evaluate("judged", &c).expect("evaluates").is_empty());
}
