use super::*;
use crate::detect::ComponentId;

fn t(kind: &str) -> ComponentId {
    ComponentId {
        kind: kind.into(),
        namespace: "ns".into(),
        name: "x".into(),
    }
}

const NOW: i64 = 1_700_000_000;

fn patch_of(c: &Change) -> &Value {
    match c {
        Change::Merge { patch, .. } => patch,
        Change::Create { object, .. } => object,
    }
}

/// Applying the change then the inverse gives back the original object.
fn round_trips(object: &Value, planned: &Planned) {
    let mut after = object.clone();
    merge(&mut after, patch_of(&planned.change));
    assert_ne!(&after, object, "the change changes something");
    assert!(patch_is_applied(patch_of(&planned.change), &after));
    let inverse = planned.inverse.as_ref().expect("reversible");
    merge(&mut after, patch_of(inverse));
    assert_eq!(&after, object);
}

#[test]
fn scale_replicas_and_its_inverse() {
    let obj = json!({"spec": {"replicas": 3, "version": "1.0.0"}});
    let p = plan_action(
        &Action::ScaleReplicas {
            target: t("PaymentGateway"),
            replicas: 5,
        },
        &obj,
        NOW,
    )
    .expect("plan");
    assert_eq!(patch_of(&p.change), &json!({"spec": {"replicas": 5}}));
    assert!(!p.disruptive);
    assert_eq!(p.moves[0].from, 3.0);
    round_trips(&obj, &p);
    let down = plan_action(
        &Action::ScaleReplicas {
            target: t("KafkaNodePool"),
            replicas: 2,
        },
        &obj,
        NOW,
    )
    .expect("plan");
    assert!(down.disruptive, "scale-down is disruptive");
}

#[test]
fn scaling_refuses_missing_data_wrong_kinds_and_hpa_managed_replicas() {
    let a = Action::ScaleReplicas {
        target: t("PaymentGateway"),
        replicas: 5,
    };
    assert_eq!(
        plan_action(&a, &json!({"spec": {}}), NOW)
            .expect_err("missing")
            .kind(),
        "missing_field"
    );
    let hpa = json!({"spec": {"replicas": 2, "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 4}}});
    assert_eq!(
        plan_action(&a, &hpa, NOW).expect_err("hpa").kind(),
        "invalid_action"
    );
    let b = Action::ScaleReplicas {
        target: t("Certificate"),
        replicas: 5,
    };
    assert_eq!(
        plan_action(&b, &hpa, NOW).expect_err("kind").kind(),
        "unsupported_target"
    );
    let c = Action::ScaleReplicas {
        target: t("PaymentGateway"),
        replicas: 2,
    };
    assert_eq!(
        plan_action(&c, &json!({"spec": {"replicas": 2}}), NOW)
            .expect_err("same")
            .kind(),
        "no_change"
    );
}

#[test]
fn hpa_bounds_resources_version_round_trip() {
    let obj = json!({"spec": {"version": "2.0.0", "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 4, "targetCPU": 70},
        "resources": {"requests": {"memory": "256Mi"}}}, "status": {"lastGoodVersion": "1.9.0"}});
    for a in [
        Action::ScaleAutoscaling {
            target: t("PaymentGateway"),
            min_replicas: 3,
            max_replicas: 8,
        },
        Action::SetResources {
            target: t("PaymentGateway"),
            resources: json!({"requests": {"cpu": "500m"}, "limits": {"cpu": "1"}}),
        },
        Action::Rollback {
            target: t("PaymentGateway"),
            to_version: "1.9.0".into(),
        },
    ] {
        let p = plan_action(&a, &obj, NOW).expect("plan");
        round_trips(&obj, &p);
    }
    let wrong = Action::Rollback {
        target: t("PaymentGateway"),
        to_version: "1.8.0".into(),
    };
    assert_eq!(
        plan_action(&wrong, &obj, NOW)
            .expect_err("not last good")
            .kind(),
        "invalid_action"
    );
    let no_status = json!({"spec": {"version": "2.0.0"}});
    let rb = Action::Rollback {
        target: t("PaymentGateway"),
        to_version: "1.9.0".into(),
    };
    assert_eq!(
        plan_action(&rb, &no_status, NOW)
            .expect_err("no lastGood")
            .kind(),
        "missing_field"
    );
}

/// An image that names its tag moves with the version (admission refuses a
/// tag that is not the version), and the inverse puts both back.
#[test]
fn a_rollback_of_a_tagged_image_moves_the_tag_with_the_version() {
    let obj = json!({"spec": {"version": "1.5.0", "image": "acr.azurecr.io/payment-initiation:1.5.0"},
        "status": {"lastGoodVersion": "1.4.2"}});
    let p = plan_action(
        &Action::Rollback {
            target: t("PaymentGateway"),
            to_version: "1.4.2".into(),
        },
        &obj,
        NOW,
    )
    .expect("plan");
    assert_eq!(
        patch_of(&p.change),
        &json!({"spec": {"version": "1.4.2", "image": "acr.azurecr.io/payment-initiation:1.4.2"}})
    );
    round_trips(&obj, &p);
}

#[test]
fn postgres_parameters_know_forbidden_and_restart_requiring_ones() {
    let obj = json!({"spec": {"instances": 3, "postgresql": {"parameters": {"work_mem": "4MB", "max_connections": "100"}}}});
    let pg = |k: &str, v: &str| Action::SetPostgresParameters {
        target: t("Cluster"),
        parameters: [(k.to_string(), v.to_string())].into(),
    };
    let p = plan_action(&pg("work_mem", "8MB"), &obj, NOW).expect("plan");
    assert!(!p.disruptive);
    assert_eq!(p.moves[0].from, 4.0 * 1048576.0);
    assert_eq!(p.moves[0].to, 8.0 * 1048576.0);
    round_trips(&obj, &p);
    let p = plan_action(&pg("max_connections", "200"), &obj, NOW).expect("plan");
    assert!(p.disruptive, "max_connections needs a restart");
    let new = plan_action(&pg("maintenance_work_mem", "256MB"), &obj, NOW).expect("plan");
    round_trips(&obj, &new);
    let err = plan_action(&pg("archive_command", "/bin/true"), &obj, NOW).expect_err("forbidden");
    assert_eq!(err.kind(), "forbidden_parameter");
    assert_eq!(
        plan_action(&pg("work_mem", "4MB"), &obj, NOW)
            .expect_err("same")
            .kind(),
        "no_change"
    );
}

#[test]
fn switchover_only_to_a_healthy_replica_and_never_twice() {
    let obj = json!({"status": {"currentPrimary": "pg-1", "targetPrimary": "pg-1", "phase": "Cluster in healthy state",
        "instancesStatus": {"healthy": ["pg-1", "pg-2"], "failed": ["pg-3"]}}});
    let sw = |i: &str| Action::Switchover {
        target: t("Cluster"),
        instance: i.into(),
        lag_seconds: 0.0,
    };
    let p = plan_action(&sw("pg-2"), &obj, NOW).expect("plan");
    let Change::Merge {
        subresource, patch, ..
    } = &p.change
    else {
        panic!("merge")
    };
    assert_eq!(*subresource, Subresource::Status);
    assert_eq!(patch["status"]["targetPrimary"], "pg-2");
    assert_eq!(patch["status"]["phase"], "Switchover in progress");
    assert_eq!(
        patch["status"]["targetPrimaryTimestamp"],
        "2023-11-14T22:13:20Z"
    );
    assert!(p.disruptive);
    let Some(Change::Merge { patch: back, .. }) = &p.inverse else {
        panic!("inverse")
    };
    assert_eq!(back["status"]["targetPrimary"], "pg-1");
    for bad in ["pg-3", "pg-1", "pg-9"] {
        assert_eq!(
            plan_action(&sw(bad), &obj, NOW).expect_err(bad).kind(),
            "switchover_refused"
        );
    }
    let mut busy = obj.clone();
    busy["status"]["targetPrimary"] = "pg-2".into();
    assert_eq!(
        plan_action(&sw("pg-2"), &busy, NOW)
            .expect_err("busy")
            .kind(),
        "switchover_refused"
    );
    assert_eq!(
        plan_action(
            &sw("pg-2"),
            &json!({"status": {"currentPrimary": "pg-1"}}),
            NOW
        )
        .expect_err("no health")
        .kind(),
        "missing_field"
    );
}

#[test]
fn one_shot_actions_have_no_inverse() {
    let cert = json!({"metadata": {"generation": 3}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let p = plan_action(
        &Action::RenewCertificate {
            target: t("Certificate"),
        },
        &cert,
        NOW,
    )
    .expect("plan");
    let conds = &patch_of(&p.change)["status"]["conditions"];
    assert_eq!(conds.as_array().map(Vec::len), Some(2), "keeps Ready");
    assert_eq!(conds[1]["reason"], "ManuallyTriggered");
    assert_eq!(conds[1]["observedGeneration"], 3);
    assert!(p.inverse.is_none());
    let mut issuing = cert.clone();
    issuing["status"]["conditions"] = json!([{"type": "Issuing", "status": "True"}]);
    assert_eq!(
        plan_action(
            &Action::RenewCertificate {
                target: t("Certificate")
            },
            &issuing,
            NOW
        )
        .expect_err("busy")
        .kind(),
        "no_change"
    );

    let es = plan_action(
        &Action::RefreshExternalSecret {
            target: t("ExternalSecret"),
        },
        &json!({"spec": {}}),
        NOW,
    )
    .expect("plan");
    assert_eq!(
        patch_of(&es.change)["metadata"]["annotations"]["force-sync"],
        "1700000000"
    );
    let once = json!({"spec": {"refreshPolicy": "CreatedOnce"}});
    assert!(
        plan_action(
            &Action::RefreshExternalSecret {
                target: t("ExternalSecret")
            },
            &once,
            NOW
        )
        .is_err()
    );

    let r = plan_action(
        &Action::RollingRestart {
            target: t("Cluster"),
        },
        &json!({"spec": {}}),
        NOW,
    )
    .expect("plan");
    assert!(r.disruptive && r.inverse.is_none());
}

#[test]
fn traffic_shift_names_every_destination() {
    let vs = json!({"spec": {"hosts": ["gw"], "http": [{"route": [
        {"destination": {"host": "gw", "subset": "stable"}, "weight": 80},
        {"destination": {"host": "gw", "subset": "canary"}, "weight": 20}]}]}});
    let shift = |w: &[(&str, i64)]| Action::ShiftTraffic {
        target: t("VirtualService"),
        route: 0,
        weights: w.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    };
    let p = plan_action(&shift(&[("stable", 100), ("canary", 0)]), &vs, NOW).expect("plan");
    assert_eq!(
        patch_of(&p.change)["spec"]["http"][0]["route"][1]["weight"],
        0
    );
    round_trips(&vs, &p);
    assert!(
        plan_action(&shift(&[("stable", 100)]), &vs, NOW).is_err(),
        "canary unnamed"
    );
    assert!(
        plan_action(
            &shift(&[("stable", 50), ("canary", 0), ("other", 50)]),
            &vs,
            NOW
        )
        .is_err()
    );
}

#[test]
fn argo_pause_redis_and_backup() {
    let app = json!({"spec": {"syncPolicy": {"automated": {"prune": true, "selfHeal": true}}}});
    let p = plan_action(
        &Action::PauseSync {
            target: t("Application"),
        },
        &app,
        NOW,
    )
    .expect("plan");
    round_trips(&app, &p);

    let rec = json!({"spec": {"nodes": 3}});
    let p = plan_action(
        &Action::ScaleRedis {
            target: t("RedisEnterpriseCluster"),
            nodes: Some(5),
            memory_size: None,
            shard_count: None,
        },
        &rec,
        NOW,
    )
    .expect("plan");
    round_trips(&rec, &p);
    let redb = json!({"spec": {"memorySize": "1GB"}});
    let p = plan_action(
        &Action::ScaleRedis {
            target: t("RedisEnterpriseDatabase"),
            nodes: None,
            memory_size: Some("2GB".into()),
            shard_count: Some(2),
        },
        &redb,
        NOW,
    )
    .expect("plan");
    assert_eq!(p.moves[0].to, 2.0 * 1073741824.0);
    round_trips(&redb, &p);

    let cluster = json!({"spec": {"backup": {"barmanObjectStore": {"destinationPath": "s3://b"}}}});
    let p = plan_action(
        &Action::Backup {
            target: t("Cluster"),
        },
        &cluster,
        NOW,
    )
    .expect("plan");
    let Change::Create { object, .. } = &p.change else {
        panic!("create")
    };
    assert_eq!(
        object["spec"],
        json!({"cluster": {"name": "x"}, "method": "barmanObjectStore"})
    );
    assert_eq!(object["metadata"]["name"], "x-autopilot-1700000000");
    assert!(
        plan_action(
            &Action::Backup {
                target: t("Cluster")
            },
            &json!({"spec": {}}),
            NOW
        )
        .is_err(),
        "no backup config"
    );
}

#[test]
fn rbac_names_status_subresources() {
    let r = rbac(&Action::Switchover {
        target: t("Cluster"),
        instance: "a".into(),
        lag_seconds: 0.0,
    });
    assert!(
        r.iter()
            .any(|r| r.resource == "clusters/status" && r.verbs.contains(&"patch"))
    );
    let r = rbac(&Action::Backup {
        target: t("Cluster"),
    });
    assert!(
        r.iter()
            .any(|r| r.resource == "backups" && r.verbs.contains(&"create"))
    );
}

#[test]
fn every_declared_target_is_a_registered_kind_with_rbac() {
    for kind in ActionKind::ALL {
        let targets = kind.targets();
        assert!(!targets.is_empty(), "{}", kind.name());
        for target in targets {
            assert!(kind_info(target).is_some(), "{}: {target}", kind.name());
            assert!(
                rbac_for(*kind, target)
                    .iter()
                    .any(|r| r.verbs.contains(&"get")),
                "{}: {target}",
                kind.name()
            );
        }
    }
}

/// A one-shot action proposed again a cycle later is the same change: only
/// its time stamp differs. A different change (another size, another
/// target) is not, whenever it was planned.
#[test]
fn a_change_planned_again_later_is_the_same_change_but_for_its_time() {
    let later = NOW + 30;
    let change_at = |action: &Action, object: &Value, at: i64| {
        patch_of(&plan_action(action, object, at).expect("plan").change).clone()
    };
    let cases = [
        (
            Action::RenewCertificate {
                target: t("Certificate"),
            },
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        ),
        (
            Action::RefreshExternalSecret {
                target: t("ExternalSecret"),
            },
            json!({"spec": {}}),
        ),
        (
            Action::RollingRestart {
                target: t("PaymentGateway"),
            },
            json!({"spec": {}}),
        ),
        (
            Action::Backup {
                target: t("Cluster"),
            },
            json!({"spec": {"backup": {"barmanObjectStore": {"destinationPath": "s3://b"}}}}),
        ),
    ];
    for (action, object) in &cases {
        let (a, b) = (
            change_at(action, object, NOW),
            change_at(action, object, later),
        );
        assert_ne!(a, b, "{action:?} stamps its change with the time");
        assert!(same_change_but_time(&a, NOW, &b, later), "{action:?}");
        // Not the same if one of them is read at the wrong time.
        assert!(!same_change_but_time(&a, NOW, &b, NOW), "{action:?}");
    }
    let scale = |replicas| {
        change_at(
            &Action::ScaleReplicas {
                target: t("PaymentGateway"),
                replicas,
            },
            &json!({"spec": {"replicas": 3}}),
            NOW,
        )
    };
    assert!(same_change_but_time(&scale(4), NOW, &scale(4), later));
    assert!(!same_change_but_time(&scale(4), NOW, &scale(5), later));
}
