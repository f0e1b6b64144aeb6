use super::*;
use crate::act::action::{Change, KindInfo, Move, Subresource};
use crate::detect::ComponentId;

const NOW: i64 = 1_700_000_000; // Tue 2023-11-14 22:13:20 UTC

fn target(ns: &str, name: &str) -> ComponentId {
    ComponentId {
        kind: "PaymentGateway".into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

fn intent(runbook: &str, ns: &str, name: &str) -> Intent {
    let mut i = Intent::new(Action::ScaleReplicas {
        target: target(ns, name),
        replicas: 3,
    });
    i.runbook = runbook.into();
    i
}

fn planned(disruptive: bool, moves: Vec<Move>) -> Planned {
    Planned {
        change: Change::Merge {
            kind: KindInfo {
                group: "payments.io".into(),
                version: "v1".into(),
                kind: "PaymentGateway".into(),
                plural: "paymentgateways".into(),
            },
            namespace: "ns".into(),
            name: "x".into(),
            subresource: Subresource::Main,
            patch: serde_json::json!({}),
        },
        inverse: None,
        disruptive,
        moves,
    }
}

fn judge(policy: &Policy, history: &[Recent], items: &[(Intent, Planned)]) -> Vec<String> {
    judge_seeing(policy, &Observed::default(), history, items)
}

fn judge_seeing(
    policy: &Policy,
    observed: &Observed,
    history: &[Recent],
    items: &[(Intent, Planned)],
) -> Vec<String> {
    verdicts(policy, observed, history, items)
        .iter()
        .map(|v| v.label().to_string())
        .collect()
}

fn verdicts(
    policy: &Policy,
    observed: &Observed,
    history: &[Recent],
    items: &[(Intent, Planned)],
) -> Vec<Verdict> {
    let batch: Vec<_> = items
        .iter()
        .map(|(i, p)| Candidate {
            intent: i,
            planned: p,
        })
        .collect();
    evaluate_guards(policy, observed, history, &batch, NOW)
}

fn recent(ago: i64, runbook: &str, ns: &str, name: &str, disruptive: bool) -> Recent {
    Recent {
        at: NOW - ago,
        runbook: runbook.into(),
        target: format!("PaymentGateway/{ns}/{name}"),
        namespace: ns.into(),
        disruptive,
    }
}

#[test]
fn the_kill_switch_refuses_everything() {
    let policy = Policy {
        kill_switch: true,
        ..Policy::default()
    };
    assert_eq!(
        judge(
            &policy,
            &[],
            &[(intent("r", "a", "x"), planned(false, vec![]))]
        ),
        ["kill_switch"]
    );
}

#[test]
fn cooldown_per_target() {
    let p = Policy::default();
    let h = [recent(60, "r", "a", "x", false)];
    assert_eq!(
        judge(
            &p,
            &h,
            &[
                (intent("r", "a", "x"), planned(false, vec![])),
                (intent("r", "a", "y"), planned(false, vec![]))
            ]
        ),
        ["cooldown", "allowed"]
    );
    let h = [recent(1000, "r", "a", "x", false)];
    assert_eq!(
        judge(&p, &h, &[(intent("r", "a", "x"), planned(false, vec![]))]),
        ["allowed"]
    );
}

#[test]
fn one_action_per_target_per_cycle() {
    let p = Policy::default();
    let mut sw = Intent::new(Action::Switchover {
        target: target("a", "x"),
        instance: "p2".into(),
        lag_seconds: 99.0,
    });
    sw.runbook = "failover".into();
    // The refused switchover still claims the target: no scale-down beside it.
    assert_eq!(
        judge(
            &p,
            &[],
            &[
                (sw, planned(true, vec![])),
                (intent("r", "a", "x"), planned(true, vec![]))
            ]
        ),
        ["replica_lag", "conflict"]
    );
}

/// A conflict or cooldown names the runbook holding the target, and defers
/// only another runbook: one held back by its own earlier action is not.
#[test]
fn a_target_held_by_another_runbook_defers_and_by_the_same_one_does_not() {
    let p = Policy::default();
    let judged = |history: &[Recent], items: &[(Intent, Planned)]| {
        verdicts(&p, &Observed::default(), history, items)
    };
    let v = judged(
        &[recent(60, "switchover", "a", "x", true)],
        &[
            (intent("work-mem", "a", "x"), planned(false, vec![])),
            (intent("switchover", "a", "x"), planned(false, vec![])),
        ],
    );
    let Verdict::Refused {
        guard,
        detail,
        held_by,
    } = &v[0]
    else {
        panic!("{v:?}")
    };
    assert_eq!(guard, "cooldown");
    assert_eq!(held_by.as_deref(), Some("switchover"));
    assert!(detail.contains("by switchover"), "{detail}");
    assert!(v[0].defers("work-mem"));
    // The first proposal claimed the target, refused as it was: the
    // second conflicts with it, and is deferred by it.
    assert_eq!(v[1].label(), "conflict");
    assert!(v[1].defers("switchover"), "held by work-mem's claim");
    let v = judged(
        &[],
        &[
            (intent("switchover", "a", "x"), planned(false, vec![])),
            (intent("work-mem", "a", "x"), planned(false, vec![])),
            (intent("switchover", "a", "x"), planned(false, vec![])),
        ],
    );
    assert_eq!(v[1].label(), "conflict");
    assert!(v[1].defers("work-mem"));
    assert!(!v[2].defers("switchover"), "its own claim");
    // Other guards never defer.
    let killed = Policy {
        kill_switch: true,
        ..Policy::default()
    };
    let batch = [(intent("work-mem", "a", "x"), planned(false, vec![]))];
    let v = verdicts(&killed, &Observed::default(), &[], &batch);
    assert!(!v[0].defers("work-mem"));
}

/// The lag that counts is the one the agent observed for the instance,
/// never the number the runbook passed in; an unobserved or NaN lag refuses.
#[test]
fn switchover_lag_is_the_observed_one() {
    let p = Policy::default();
    let observed = |lag: f64| Observed {
        replica_lag_seconds: [(target("a", "x"), [("p2".to_string(), lag)].into())].into(),
    };
    for (claimed, seen, want) in [
        (0.5, Some(0.5), "allowed"),
        (0.0, Some(5.0), "allowed"),
        // The runbook claims a small lag; the agent saw a large one.
        (0.1, Some(5.1), "replica_lag"),
        // The runbook claims a large lag; the agent's observation decides.
        (99.0, Some(1.0), "allowed"),
        (0.0, Some(f64::NAN), "replica_lag"),
        (0.0, None, "replica_lag"),
    ] {
        let mut sw = Intent::new(Action::Switchover {
            target: target("a", "x"),
            instance: "p2".into(),
            lag_seconds: claimed,
        });
        sw.runbook = "f".into();
        let seen_by_agent = seen.map(observed).unwrap_or_default();
        assert_eq!(
            judge_seeing(&p, &seen_by_agent, &[], &[(sw, planned(false, vec![]))]),
            [want],
            "claimed {claimed}, observed {seen:?}"
        );
    }
    // Another instance's observation is not this one's.
    let mut sw = Intent::new(Action::Switchover {
        target: target("a", "x"),
        instance: "p3".into(),
        lag_seconds: 0.0,
    });
    sw.runbook = "f".into();
    assert_eq!(
        judge_seeing(&p, &observed(0.1), &[], &[(sw, planned(false, vec![]))]),
        ["replica_lag"]
    );
}

#[test]
fn a_change_freeze_refuses_every_action_inside_it_only() {
    let p = Policy {
        change_freezes: vec![Freeze {
            start: Freeze::time(NOW - 60),
            end: Freeze::time(NOW + 60),
            reason: "Black Friday".into(),
        }],
        ..Policy::default()
    };
    let out = judge(&p, &[], &[(intent("r", "a", "x"), planned(false, vec![]))]);
    assert_eq!(out, ["change_freeze"]);
    let later = Policy {
        change_freezes: vec![Freeze {
            start: Freeze::time(NOW + 1),
            end: Freeze::time(NOW + 60),
            reason: String::new(),
        }],
        ..Policy::default()
    };
    let out = judge(
        &later,
        &[],
        &[(intent("r", "a", "x"), planned(false, vec![]))],
    );
    assert_eq!(out, ["allowed"]);
    // The end is exclusive.
    assert!(!p.change_freezes[0].covers(NOW + 60));
    assert!(p.change_freezes[0].covers(NOW - 60));
}

#[test]
fn cap_on_how_far_a_value_moves() {
    let p = Policy {
        max_relative_change: 0.5,
        ..Policy::default()
    };
    let mv = |from: f64, to: f64| {
        vec![Move {
            field: "spec.replicas".into(),
            from,
            to,
        }]
    };
    assert_eq!(
        judge(
            &p,
            &[],
            &[(intent("r", "a", "x"), planned(false, mv(4.0, 6.0)))]
        ),
        ["allowed"]
    );
    assert_eq!(
        judge(
            &p,
            &[],
            &[(intent("r", "a", "x"), planned(false, mv(4.0, 7.0)))]
        ),
        ["max_change"]
    );
    assert_eq!(
        judge(
            &p,
            &[],
            &[(intent("r", "a", "x"), planned(false, mv(4.0, 0.0)))]
        ),
        ["max_change"]
    );
    assert_eq!(
        judge(
            &p,
            &[],
            &[(intent("r", "a", "x"), planned(false, mv(0.0, 3.0)))]
        ),
        ["max_change"]
    );
}

#[test]
fn rate_limits_per_runbook_and_global_count_the_batch_too() {
    let p = Policy {
        runbook_per_hour: 2,
        global_per_hour: 3,
        ..Policy::default()
    };
    let items: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|n| (intent("r1", "ns", n), planned(false, vec![])))
        .collect();
    assert_eq!(
        judge(&p, &[], &items),
        ["allowed", "allowed", "runbook_rate"]
    );
    let h = [
        recent(100, "r0", "ns", "z", false),
        recent(200, "r0", "ns", "w", false),
        recent(4000, "r0", "ns", "v", false),
    ];
    let items = vec![
        (intent("r1", "ns", "a"), planned(false, vec![])),
        (intent("r2", "ns", "b"), planned(false, vec![])),
    ];
    assert_eq!(judge(&p, &h, &items), ["allowed", "global_rate"]);
}

#[test]
fn disruption_budget_per_namespace_and_cluster() {
    let p = Policy {
        disruptive_per_namespace_per_hour: 1,
        disruptive_per_hour: 2,
        ..Policy::default()
    };
    let h = [recent(100, "r", "a", "z", true)];
    let items = vec![
        (intent("r", "a", "x"), planned(true, vec![])),
        (intent("r", "a", "y"), planned(false, vec![])),
        (intent("r", "b", "x"), planned(true, vec![])),
        (intent("r", "c", "x"), planned(true, vec![])),
    ];
    assert_eq!(
        judge(&p, &h, &items),
        [
            "disruption_budget_namespace",
            "allowed",
            "allowed",
            "disruption_budget"
        ]
    );
}

#[test]
fn maintenance_windows_gate_disruptive_actions_only() {
    // 22:00 UTC daily for an hour: NOW (22:13) is inside; 20:00 for an hour is not.
    let inside = Policy {
        maintenance_windows: vec![Window {
            schedule: "0 22 * * *".into(),
            duration_seconds: 3600,
        }],
        ..Policy::default()
    };
    let outside = Policy {
        maintenance_windows: vec![Window {
            schedule: "0 20 * * *".into(),
            duration_seconds: 3600,
        }],
        ..Policy::default()
    };
    let items = vec![
        (intent("r", "a", "x"), planned(true, vec![])),
        (intent("r", "a", "y"), planned(false, vec![])),
    ];
    assert_eq!(judge(&inside, &[], &items), ["allowed", "allowed"]);
    assert_eq!(
        judge(&outside, &[], &items),
        ["maintenance_window", "allowed"]
    );
}

/// Unix seconds of a UTC time on the week of Monday 2026-11-30
/// (2026-12-05 is a Saturday, 2026-12-06 a Sunday).
fn at(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<k8s_openapi::jiff::Timestamp>()
        .expect("timestamp")
        .as_second()
}

fn window(schedule: &str, hours: i64) -> Vec<Window> {
    vec![Window {
        schedule: schedule.into(),
        duration_seconds: hours * 3600,
    }]
}

#[test]
fn a_saturday_window_opens_on_saturday() {
    // The `cron` crate read 6 as Friday; standard cron reads it as Saturday.
    let sat = window("0 2 * * 6", 2);
    assert!(in_window(&sat, at("2026-12-05T02:00:00Z")));
    assert!(in_window(&sat, at("2026-12-05T03:59:59Z")));
    assert!(!in_window(&sat, at("2026-12-05T04:00:01Z")));
    assert!(!in_window(&sat, at("2026-12-04T02:30:00Z")), "not Friday");
    assert!(!in_window(&sat, at("2026-12-06T02:30:00Z")), "not Sunday");
    assert!(in_window(
        &window("0 2 * * SAT", 2),
        at("2026-12-05T02:30:00Z")
    ));
}

#[test]
fn window_weekday_ranges_and_sunday() {
    let weekdays = window("0 9 * * 1-5", 8);
    for (day, open) in [
        ("2026-11-30", true), // Monday
        ("2026-12-02", true),
        ("2026-12-04", true), // Friday
        ("2026-12-05", false),
        ("2026-12-06", false),
    ] {
        assert_eq!(
            in_window(&weekdays, at(&format!("{day}T12:00:00Z"))),
            open,
            "{day}"
        );
    }
    for sunday in ["0 9 * * 0", "0 9 * * 7"] {
        let w = window(sunday, 1);
        assert!(in_window(&w, at("2026-12-06T09:30:00Z")), "{sunday}");
        assert!(!in_window(&w, at("2026-12-05T09:30:00Z")), "{sunday}");
        assert!(!in_window(&w, at("2026-11-30T09:30:00Z")), "{sunday}");
    }
    // Both 0 and 7 are accepted when the policy is read.
    let p = Policy {
        maintenance_windows: vec![
            Window {
                schedule: "0 9 * * 0".into(),
                duration_seconds: 60,
            },
            Window {
                schedule: "0 9 * * 7".into(),
                duration_seconds: 60,
            },
        ],
        ..Policy::default()
    };
    assert!(p.validate().is_ok());
}

/// What the schema cannot check is checked when the policy is read: a
/// schedule that does not parse, a NaN limit. Serde fills absent fields
/// with the defaults, and the object as the chart writes it (`spec: {}`)
/// is the default policy.
#[test]
fn a_policy_is_validated_and_defaults_absent_fields() {
    let p: Policy = serde_json::from_value(serde_json::json!({
        "killSwitch": true, "cooldownSeconds": 60,
        "maintenanceWindows": [{"schedule": "0 2 * * 6", "durationSeconds": 7200}],
        "changeFreezes": [{"start": "2026-11-27T00:00:00Z", "end": "2026-11-30T00:00:00Z", "reason": "Black Friday"}],
    }))
    .expect("valid");
    assert!(p.validate().is_ok());
    assert!(p.kill_switch);
    assert_eq!(p.cooldown_seconds, 60);
    assert_eq!(p.global_per_hour, Policy::default().global_per_hour);
    assert!(p.change_freezes[0].covers(at("2026-11-28T12:00:00Z")));
    let empty: Policy = serde_json::from_value(serde_json::json!({})).expect("defaults");
    assert_eq!(empty, Policy::default());

    let bad_schedule = Policy {
        maintenance_windows: window("bad", 1),
        ..Policy::default()
    };
    let err = bad_schedule
        .validate()
        .expect_err("a schedule that does not parse");
    assert!(
        err.to_string().contains("maintenanceWindows[0].schedule"),
        "{err}"
    );
    let nan = Policy {
        max_relative_change: f64::NAN,
        ..Policy::default()
    };
    assert!(nan.validate().is_err());
}
