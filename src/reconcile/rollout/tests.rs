use super::*;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).expect("ts")
}

fn obs(version: &str, desired: i32, updated: i32, total: i32, available: i32) -> Observed {
    Observed {
        template_version: Some(version.into()),
        generation: 2,
        observed_generation: 2,
        desired,
        total,
        updated,
        available,
        progress_deadline_exceeded: false,
    }
}

fn status(current: &str, good: &str) -> WorkloadStatus {
    WorkloadStatus {
        phase: Phase::Ready,
        available_replicas: 3,
        current_version: Some(current.into()),
        last_good_version: Some(good.into()),
        ..Default::default()
    }
}

fn input<'a>(
    spec: &'a str,
    prev: &'a WorkloadStatus,
    o: &'a Observed,
    policy: &'a UpgradePolicy,
    now: i64,
) -> Input<'a> {
    Input {
        spec_version: spec,
        target: target_version(spec, prev),
        policy,
        previous: prev,
        generation: Some(2),
        observed: o,
        gate: None,
        now: t(now),
    }
}

fn cond<'a>(
    s: &'a WorkloadStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition present")
}

#[test]
fn first_rollout_completes_and_records_the_good_version() {
    let policy = UpgradePolicy::default();
    let prev = WorkloadStatus::default();
    let o = obs("1.0.0", 3, 3, 3, 3);
    let i = input("1.0.0", &prev, &o, &policy, 100);
    assert_eq!(judge(&i), Judgement::Complete);
    let (s, events) = compute_status(&i, &Judgement::Complete, None);
    assert_eq!(s.current_version.as_deref(), Some("1.0.0"));
    assert_eq!(s.last_good_version.as_deref(), Some("1.0.0"));
    assert_eq!(s.phase, Phase::Ready);
    assert!(conditions::is_true(&s.conditions, condition::READY));
    assert!(!conditions::is_true(&s.conditions, condition::PROGRESSING));
    assert_eq!(cond(&s, condition::READY).observed_generation, Some(2));
    assert!(events.iter().any(|e| e.reason == "UpgradeSucceeded"));
    assert!(events.iter().any(|e| e.reason == "PhaseChanged"));
}

#[test]
fn upgrade_in_progress_keeps_the_current_version() {
    let policy = UpgradePolicy::default();
    let prev = status("1.0.0", "1.0.0");
    let o = obs("1.1.0", 3, 1, 4, 3);
    let i = input("1.1.0", &prev, &o, &policy, 100);
    assert_eq!(judge(&i), Judgement::InProgress);
    let (s, _) = compute_status(&i, &Judgement::InProgress, None);
    assert_eq!(s.current_version.as_deref(), Some("1.0.0"));
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(cond(&s, condition::PROGRESSING).reason, "NewVersion");
}

#[test]
fn missed_progress_deadline_rolls_back_to_the_last_good_version() {
    let policy = UpgradePolicy::default();
    let prev = status("1.0.0", "1.0.0");
    let mut o = obs("1.1.0", 3, 1, 4, 3);
    o.progress_deadline_exceeded = true;
    let i = input("1.1.0", &prev, &o, &policy, 100);
    let j = judge(&i);
    let Judgement::Failed { reason, message } = &j else {
        panic!("{j:?}")
    };
    assert_eq!(*reason, "ProgressDeadlineExceeded");
    assert_eq!(rollback_target(&i, &j), Some("1.0.0"));

    // The driver re-applies 1.0.0 and computes status for it.
    let o2 = obs("1.0.0", 3, 3, 4, 3);
    let back = Input {
        target: "1.0.0",
        observed: &o2,
        ..i.clone()
    };
    let (s, events) = compute_status(&back, &judge(&back), Some((reason, message)));
    assert_eq!(s.failed_version.as_deref(), Some("1.1.0"));
    assert_eq!(s.current_version.as_deref(), Some("1.0.0"));
    assert_eq!(s.phase, Phase::Degraded);
    let rb = cond(&s, condition::ROLLED_BACK);
    assert_eq!(
        (rb.status.as_str(), rb.reason.as_str()),
        ("True", "ProgressDeadlineExceeded")
    );
    assert!(
        rb.message.contains("spec.version still says 1.1.0"),
        "{}",
        rb.message
    );
    assert!(!conditions::is_true(&s.conditions, condition::READY));
    assert!(events.iter().any(|e| e.reason == "RolledBack" && e.warning));

    // Later reconciles keep running 1.0.0 and do not retry 1.1.0 ...
    assert_eq!(target_version("1.1.0", &s), "1.0.0");
    let o3 = obs("1.0.0", 3, 3, 3, 3);
    let later = input("1.1.0", &s, &o3, &policy, 200);
    let (s2, events2) = compute_status(&later, &judge(&later), None);
    assert_eq!(s2.failed_version.as_deref(), Some("1.1.0"));
    assert_eq!(s2.phase, Phase::Degraded);
    assert_eq!(
        cond(&s2, condition::ROLLED_BACK).last_transition_time,
        rb.last_transition_time
    );
    assert!(events2.is_empty(), "{events2:?}");
    // ... until the spec names another version.
    assert_eq!(target_version("1.2.0", &s2), "1.2.0");
    let o4 = obs("1.2.0", 3, 3, 3, 3);
    let fixed = input("1.2.0", &s2, &o4, &policy, 300);
    let (s3, _) = compute_status(&fixed, &judge(&fixed), None);
    assert_eq!(s3.failed_version, None);
    assert_eq!(s3.phase, Phase::Ready);
    assert_eq!(cond(&s3, condition::ROLLED_BACK).status, "False");
    // ... and it becomes the last good version once it has soaked.
    assert_eq!(s3.last_good_version.as_deref(), Some("1.0.0"));
    let soaked = input("1.2.0", &s3, &o4, &policy, 300 + 300);
    let (s4, _) = compute_status(&soaked, &judge(&soaked), None);
    assert_eq!(s4.last_good_version.as_deref(), Some("1.2.0"));
}

#[test]
fn a_new_version_becomes_last_good_only_after_its_soak() {
    let policy = UpgradePolicy {
        soak_seconds: 120,
        ..Default::default()
    };
    let prev = status("1.0.0", "1.0.0");
    let done = obs("1.1.0", 3, 3, 3, 3);
    // The rollout completes at 100: 1.1.0 runs, 1.0.0 stays the fallback.
    let i = input("1.1.0", &prev, &done, &policy, 100);
    assert_eq!(
        soak(&i),
        Soak::Soaking {
            since: t(100),
            left: 120
        }
    );
    let (s, events) = compute_status(&i, &judge(&i), None);
    assert_eq!(s.current_version.as_deref(), Some("1.1.0"));
    assert_eq!(s.last_good_version.as_deref(), Some("1.0.0"));
    assert_eq!(s.soaking_since.as_ref().map(|x| x.0), Some(t(100)));
    assert_eq!(s.phase, Phase::Ready);
    assert!(!events.iter().any(|e| e.reason == "UpgradeSucceeded"));
    // The reconciler wakes when the soak ends, not before.
    let secs = |now| soak_timer(&s, &policy, t(now)).map(|d| d.as_secs());
    assert_eq!(secs(100), Some(121));
    assert_eq!(secs(219), Some(2));
    assert_eq!(secs(500), Some(1));
    // Midway the soak runs on from where it started.
    let mid = input("1.1.0", &s, &done, &policy, 160);
    assert_eq!(
        soak(&mid),
        Soak::Soaking {
            since: t(100),
            left: 60
        }
    );
    let (s2, _) = compute_status(&mid, &judge(&mid), None);
    assert_eq!(s2.soaking_since, s.soaking_since);
    // Its errors show meanwhile and the runbook rolls spec.version back to
    // 1.0.0: still the last good version, and the soak is over.
    let back = obs("1.0.0", 3, 3, 3, 3);
    let rolled = input("1.0.0", &s2, &back, &policy, 170);
    assert_eq!(soak(&rolled), Soak::Good);
    let (s3, _) = compute_status(&rolled, &judge(&rolled), None);
    assert_eq!(s3.last_good_version.as_deref(), Some("1.0.0"));
    assert_eq!(s3.soaking_since, None);
    assert_eq!(soak_timer(&s3, &policy, t(170)), None);
    // Had it stayed healthy, it would have been good at 220.
    let end = input("1.1.0", &s2, &done, &policy, 220);
    assert_eq!(soak(&end), Soak::Good);
    let (s4, events) = compute_status(&end, &judge(&end), None);
    assert_eq!(s4.last_good_version.as_deref(), Some("1.1.0"));
    assert_eq!(s4.soaking_since, None);
    assert!(events.iter().any(|e| e.reason == "UpgradeSucceeded"));
}

#[test]
fn a_new_rollout_or_a_failure_restarts_the_soak_and_zero_disables_it() {
    let policy = UpgradePolicy::default();
    assert_eq!(policy.soak_seconds, 300);
    let prev = status("1.0.0", "1.0.0");
    let done = obs("1.1.0", 3, 3, 3, 3);
    let i = input("1.1.0", &prev, &done, &policy, 100);
    let (s, _) = compute_status(&i, &judge(&i), None);
    assert!(s.soaking_since.is_some());
    // Scaling while soaking keeps the soak.
    let scaling = obs("1.1.0", 4, 4, 4, 3);
    let j = input("1.1.0", &s, &scaling, &policy, 150);
    let (kept, _) = compute_status(&j, &judge(&j), None);
    assert_eq!(kept.soaking_since, s.soaking_since);
    // Another version is rolled out: the soak of 1.1.0 is over, unfinished.
    let rolling = obs("1.2.0", 3, 1, 4, 3);
    let k = input("1.2.0", &s, &rolling, &policy, 200);
    let (next, _) = compute_status(&k, &judge(&k), None);
    assert_eq!(next.soaking_since, None);
    assert_eq!(next.last_good_version.as_deref(), Some("1.0.0"));
    // No soak: good as soon as the rollout completes.
    let none = UpgradePolicy {
        soak_seconds: 0,
        ..Default::default()
    };
    let at_once = input("1.1.0", &prev, &done, &none, 100);
    assert_eq!(soak(&at_once), Soak::Good);
    let (s0, _) = compute_status(&at_once, &judge(&at_once), None);
    assert_eq!(s0.last_good_version.as_deref(), Some("1.1.0"));
}

#[test]
fn staying_below_minimum_past_the_tolerance_fails_the_rollout() {
    let policy = UpgradePolicy {
        unavailable_tolerance_seconds: 60,
        ..Default::default()
    };
    let prev = status("1.0.0", "1.0.0");
    let o = obs("1.1.0", 3, 3, 3, 1);
    let i = input("1.1.0", &prev, &o, &policy, 1000);
    assert_eq!(judge(&i), Judgement::InProgress);
    let (s, _) = compute_status(&i, &Judgement::InProgress, None);
    assert_eq!(s.below_minimum_since.as_ref().map(|x| x.0), Some(t(1000)));
    let i2 = input("1.1.0", &s, &o, &policy, 1030);
    assert_eq!(judge(&i2), Judgement::InProgress, "within tolerance");
    let i3 = input("1.1.0", &s, &o, &policy, 1061);
    assert!(matches!(
        judge(&i3),
        Judgement::Failed {
            reason: "InsufficientReplicas",
            ..
        }
    ));
}

#[test]
fn the_gate_fails_an_upgrade_but_not_a_settled_version() {
    let policy = UpgradePolicy::default();
    let prev = status("1.0.0", "1.0.0");
    let o = obs("1.1.0", 3, 1, 4, 3);
    let mut i = input("1.1.0", &prev, &o, &policy, 10);
    i.gate = Some("error rate 12% after upgrade");
    assert!(matches!(
        judge(&i),
        Judgement::Failed {
            reason: "UnhealthyUpgrade",
            ..
        }
    ));
    let settled = obs("1.0.0", 3, 3, 3, 3);
    let mut j = input("1.0.0", &prev, &settled, &policy, 10);
    j.gate = Some("noise");
    assert_eq!(judge(&j), Judgement::Complete);
}

#[test]
fn no_rollback_without_a_good_version_or_when_disabled() {
    let policy = UpgradePolicy::default();
    let prev = WorkloadStatus::default();
    let mut o = obs("1.0.0", 3, 3, 3, 0);
    o.progress_deadline_exceeded = true;
    let i = input("1.0.0", &prev, &o, &policy, 10);
    let j = judge(&i);
    assert_eq!(rollback_target(&i, &j), None);
    let (s, _) = compute_status(&i, &j, None);
    assert_eq!(s.phase, Phase::Degraded);
    assert_eq!(
        cond(&s, condition::DEGRADED).reason,
        "ProgressDeadlineExceeded"
    );

    let off = UpgradePolicy {
        auto_rollback: false,
        ..Default::default()
    };
    let prev = status("1.0.0", "1.0.0");
    let mut o = obs("1.1.0", 3, 1, 4, 3);
    o.progress_deadline_exceeded = true;
    let i = input("1.1.0", &prev, &o, &off, 10);
    assert_eq!(rollback_target(&i, &judge(&i)), None);
}

#[test]
fn steady_state_replica_loss_is_degraded_without_rollback() {
    let policy = UpgradePolicy::default();
    let prev = status("1.0.0", "1.0.0");
    let o = obs("1.0.0", 3, 3, 3, 2);
    let i = input("1.0.0", &prev, &o, &policy, 10);
    let j = judge(&i);
    assert_eq!(j, Judgement::InProgress);
    assert_eq!(rollback_target(&i, &j), None);
    let (s, _) = compute_status(&i, &j, None);
    assert_eq!(cond(&s, condition::DEGRADED).reason, "InsufficientReplicas");
    assert_eq!(cond(&s, condition::PROGRESSING).reason, "Scaling");
}
