//! The payments controllers against a real kube-apiserver and
//! kube-controller-manager, with a fake kubelet so that Deployments really
//! roll out and Jobs really finish: create → owned objects exist and are
//! wired; spec change → objects follow; owned object deleted or edited → it
//! comes back; CR deleted → garbage collected; invalid spec → a condition and
//! nothing applied; upgrade success and failure with automatic rollback.

mod support;

use std::time::Duration;

use support::objects::{condition_of, create, events_for, get, patch_spec};

use autopilot::{
    crd::{BatchProcessor, ClearingAdapter, PaymentGateway, Phase, SagaOrchestrator, condition},
    reconcile::objects::{CONFIG_HASH_ANNOTATION, config_hash},
    testenv::{ControlPlane, Options},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    batch::v1::{CronJob, Job},
    core::v1::{ConfigMap, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(90);

fn cp() -> &'static ControlPlane {
    let cp = support::control_plane(Options {
        controller_manager: true,
    });
    static FIXTURES: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    FIXTURES.get_or_init(|| {
        // ServiceMonitor is served in this control plane (Prometheus Operator fixture CRDs).
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = cp.client().await.expect("client");
                let text = std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/fixtures/crds/prometheus-operator.yaml"
                ))
                .expect("fixture");
                let crds: Vec<_> = support::yaml_documents(&text)
                    .into_iter()
                    .map(|d| serde_json::from_value(d).expect("crd"))
                    .collect();
                autopilot::act::apply_crds(&client, &crds)
                    .await
                    .expect("ServiceMonitor CRD");
            })
        })
        .join()
        .expect("fixture thread");
    });
    cp
}

fn example(kind: &str) -> Value {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples");
    std::fs::read_dir(dir)
        .expect("examples")
        .flat_map(|e| {
            support::yaml_documents(
                &std::fs::read_to_string(e.expect("entry").path()).expect("read"),
            )
        })
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("example {kind}"))
}

async fn wait_gateway(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    ok: impl Fn(&PaymentGateway) -> bool,
) -> PaymentGateway {
    support::wait_for(what, LONG, || async {
        let pgw: PaymentGateway = get(client, ns, name).await?;
        if ok(&pgw) {
            Ok(pgw)
        } else {
            Err(format!("{:?}", pgw.status))
        }
    })
    .await
}

#[tokio::test]
async fn payment_gateway_owns_wired_objects_follows_the_spec_and_heals_drift() {
    let (client, ns) = support::client_and_namespace(cp(), "pgw").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let controllers = support::start_controllers(client.clone(), &ns);

    create::<PaymentGateway>(&client, &ns, example("PaymentGateway")).await;
    let name = "payment-gateway";
    let pgw = wait_gateway(&client, &ns, name, "the seed gateway to be Ready", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Ready && s.available_replicas == 3)
    })
    .await;
    let status = pgw.status.expect("status");
    assert_eq!(status.current_version.as_deref(), Some("1.5.0"));
    assert_eq!(status.last_good_version.as_deref(), Some("1.5.0"));
    assert_eq!(status.observed_generation, pgw.metadata.generation);
    let ready = condition_of(&status.conditions, condition::READY).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Available")
    );
    assert_eq!(
        condition_of(&status.conditions, condition::MONITORING).map(|c| c.status.as_str()),
        Some("True")
    );

    // Every owned object exists, is owned by the gateway and wired to the others.
    let uid = pgw.metadata.uid.clone().expect("uid");
    let d: Deployment = get(&client, &ns, name).await.expect("deployment");
    let owner = &d.metadata.owner_references.as_ref().expect("owner refs")[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (uid.as_str(), Some(true))
    );
    let dspec = d.spec.clone().expect("spec");
    let selector = dspec.selector.match_labels.clone().expect("selector");
    let tmpl = dspec.template.clone();
    let pod_labels = tmpl
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod labels");
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    let container = &tmpl.spec.as_ref().expect("pod").containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("acr.azurecr.io/payment-initiation:1.5.0"),
        "the seed's tagged image runs as written"
    );
    let svc: Service = get(&client, &ns, name).await.expect("service");
    assert_eq!(
        svc.spec.expect("spec").selector.expect("selector"),
        selector
    );
    let cm: ConfigMap = get(&client, &ns, name).await.expect("configmap");
    let data = cm.data.expect("data");
    assert_eq!(data["DATABASE_HOST"], "payments-db-rw");
    assert_eq!(data["RATE_LIMIT_PER_SECOND"], "1000");
    // The seed's Jaeger endpoint is the Thrift collector: the gateway is told
    // to export with the Jaeger exporter there, not OTLP.
    assert_eq!(data["OTEL_TRACES_EXPORTER"], "jaeger");
    assert_eq!(
        data["OTEL_EXPORTER_JAEGER_ENDPOINT"],
        "http://jaeger:14268/api/traces"
    );
    assert!(!data.contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let hash = &tmpl
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone())
        .expect("annotations")[CONFIG_HASH_ANNOTATION];
    assert_eq!(*hash, config_hash(&data));
    let hpa: HorizontalPodAutoscaler = get(&client, &ns, name).await.expect("hpa");
    let hspec = hpa.spec.expect("spec");
    assert_eq!((hspec.min_replicas, hspec.max_replicas), (Some(3), 20));
    assert_eq!(hspec.scale_target_ref.name, name);
    let sm_api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &autopilot::act::service_monitor_resource(),
    );
    let sm = sm_api.get(name).await.expect("service monitor");
    assert_eq!(
        sm.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        name
    );

    // A spec change reaches the ConfigMap and rolls the pods (new hash).
    patch_spec::<PaymentGateway>(
        &client,
        &ns,
        name,
        json!({"config": {"features": {"rateLimitPerSecond": 2000}}}),
    )
    .await;
    support::wait_for(
        "the config change to reach the Deployment",
        LONG,
        || async {
            let cm: ConfigMap = get(&client, &ns, name).await?;
            let d: Deployment = get(&client, &ns, name).await?;
            let data = cm.data.unwrap_or_default();
            let h = d
                .spec
                .and_then(|s| s.template.metadata)
                .and_then(|m| m.annotations)
                .unwrap_or_default();
            (data.get("RATE_LIMIT_PER_SECOND").map(String::as_str) == Some("2000")
                && h.get(CONFIG_HASH_ANNOTATION) == Some(&config_hash(&data)))
            .then_some(())
            .ok_or_else(|| format!("rate limit {:?}", data.get("RATE_LIMIT_PER_SECOND")))
        },
    )
    .await;

    // Autoscaling off: the HPA goes and the Deployment carries spec.replicas.
    patch_spec::<PaymentGateway>(
        &client,
        &ns,
        name,
        json!({"autoscaling": null, "replicas": 2}),
    )
    .await;
    support::wait_for("the HPA to be removed and replicas to follow", LONG, || async {
        let gone = matches!(get::<HorizontalPodAutoscaler>(&client, &ns, name).await, Err(e) if e.contains("404") || e.contains("NotFound"));
        let d: Deployment = get(&client, &ns, name).await?;
        let replicas = d.spec.and_then(|s| s.replicas);
        (gone && replicas == Some(2)).then_some(()).ok_or(format!("hpa gone {gone}, replicas {replicas:?}"))
    })
    .await;

    // Someone else's write to the Deployment's status (as kube-controller-
    // manager makes at each step of a rollout), a second after the last
    // apply: it wakes the reconciler, which reads the Deployment from its
    // watch instead of applying the unchanged plan again.
    let skipped = || {
        support::counter(
            &controllers.registry,
            "autopilot_reconcile_applies_skipped_total",
            &[("kind", "PaymentGateway")],
        )
    };
    let before = skipped();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch_status(
            name,
            &PatchParams {
                field_manager: Some("status-probe".into()),
                ..Default::default()
            },
            &Patch::Strategic(json!({"status": {"conditions": [{
                "type": "StatusProbe", "status": "True", "reason": "Test",
                "message": "a status write by another manager",
            }]}})),
        )
        .await
        .expect("status write");
    support::wait_for("a reconcile that skips the apply", LONG, || async {
        let now = skipped();
        (now > before)
            .then_some(())
            .ok_or(format!("applies skipped: {now} (before: {before})"))
    })
    .await;

    // A hand edit of the ConfigMap, which is watched as metadata only: its
    // managed fields name another writer, which wakes the gateway and
    // forgets the plan it would otherwise skip applying again (as it just
    // did), so the edit is reverted within seconds, well before the 30 s
    // resync of the full apply a few seconds ago (without the watch, this
    // times out).
    let writes = || {
        support::counter(
            &controllers.registry,
            "autopilot_reconcile_writes_total",
            &[("kind", "PaymentGateway")],
        )
    };
    let last = std::cell::Cell::new(writes());
    support::wait_for("the gateway to settle (no write for 3 s)", LONG, || async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (before, now) = (last.get(), writes());
        last.set(now);
        (now == before)
            .then_some(())
            .ok_or(format!("{} writes", now - before))
    })
    .await;
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"RATE_LIMIT_PER_SECOND": "1"}})),
        )
        .await
        .expect("hand edit of the configmap");
    support::wait_for(
        "the configmap's edit to be reverted",
        Duration::from_secs(10),
        || async {
            let cm: ConfigMap = get(&client, &ns, name).await?;
            let rate = cm.data.unwrap_or_default().remove("RATE_LIMIT_PER_SECOND");
            (rate.as_deref() == Some("2000"))
                .then_some(())
                .ok_or(format!("rate limit {rate:?}"))
        },
    )
    .await;

    // Drift: a deleted Service and a hand-edited Deployment come back,
    // whatever plan was applied before (their watches forget it).
    Api::<Service>::namespaced(client.clone(), &ns)
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete service");
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "gateway", "image": "evil/gateway:latest"}]}}}})),
        )
        .await
        .expect("hand edit");
    support::wait_for("drift to be corrected", LONG, || async {
        let svc = get::<Service>(&client, &ns, name).await;
        let d: Deployment = get(&client, &ns, name).await?;
        let image = d
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.containers[0].image.clone());
        (svc.is_ok() && image.as_deref() == Some("acr.azurecr.io/payment-initiation:1.5.0"))
            .then_some(())
            .ok_or(format!("service back {}, image {image:?}", svc.is_ok()))
    })
    .await;

    // Deleting the gateway lets the garbage collector remove what it owned.
    Api::<PaymentGateway>::namespaced(client.clone(), &ns)
        .delete(name, &DeleteParams::foreground())
        .await
        .expect("delete gateway");
    support::wait_for("owned objects to be garbage collected", LONG, || async {
        let left = [
            get::<Deployment>(&client, &ns, name).await.is_ok(),
            get::<Service>(&client, &ns, name).await.is_ok(),
            get::<ConfigMap>(&client, &ns, name).await.is_ok(),
        ];
        (left == [false; 3])
            .then_some(())
            .ok_or(format!("still present: {left:?}"))
    })
    .await;
}

/// Creates gateway `name` at 1.0.0 (two replicas, a rollout deadline of
/// `deadline` seconds) and waits until it is Ready with 1.0.0 as its
/// running and last good version: the start of every rollback test.
async fn ready_gateway(client: &Client, ns: &str, name: &str, deadline: u32) {
    create::<PaymentGateway>(
        client,
        ns,
        json!({"apiVersion": "payments.io/v1", "kind": "PaymentGateway", "metadata": {"name": name},
               "spec": {"version": "1.0.0", "replicas": 2,
                        "upgrade": {"progressDeadlineSeconds": deadline, "unavailableToleranceSeconds": 30,
                                    "soakSeconds": 3}}}),
    )
    .await;
    wait_gateway(client, ns, name, "1.0.0 to be Ready", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Ready
                && s.current_version.as_deref() == Some("1.0.0")
                && s.last_good_version.as_deref() == Some("1.0.0")
        })
    })
    .await;
}

#[tokio::test]
async fn upgrade_succeeds_then_a_bad_version_is_rolled_back_and_not_retried() {
    let (client, ns) = support::client_and_namespace(cp(), "upgrade").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let _controllers = support::start_controllers(client.clone(), &ns);
    let name = "gw";
    ready_gateway(&client, &ns, name, 8).await;

    // Success path: currentVersion moves once the rollout completes, and
    // lastGoodVersion once the new version has soaked (3 s here), woken by
    // the soak's own timer.
    patch_spec::<PaymentGateway>(&client, &ns, name, json!({"version": "1.1.0"})).await;
    let up = wait_gateway(&client, &ns, name, "1.1.0 to roll out", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Ready && s.current_version.as_deref() == Some("1.1.0")
        })
    })
    .await;
    let soaking = up.status.as_ref().expect("status");
    assert!(
        soaking.soaking_since.is_some() || soaking.last_good_version.as_deref() == Some("1.1.0"),
        "{soaking:?}"
    );
    wait_gateway(&client, &ns, name, "1.1.0 to soak", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.last_good_version.as_deref() == Some("1.1.0") && s.soaking_since.is_none()
        })
    })
    .await;
    let d: Deployment = get(&client, &ns, name).await.expect("deployment");
    assert_eq!(d.status.and_then(|s| s.updated_replicas), Some(2));

    // Failure path: pods of 1.2.0-broken never become ready; the progress
    // deadline passes and the controller rolls back to 1.1.0.
    patch_spec::<PaymentGateway>(&client, &ns, name, json!({"version": "1.2.0-broken"})).await;
    let rolled = wait_gateway(&client, &ns, name, "the automatic rollback", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.failed_version.as_deref() == Some("1.2.0-broken")
                && condition_of(&s.conditions, condition::ROLLED_BACK)
                    .is_some_and(|c| c.status == "True")
        })
    })
    .await;
    let s = rolled.status.clone().expect("status");
    assert_eq!(
        rolled.spec.version, "1.2.0-broken",
        "the spec is left as the user wrote it"
    );
    assert_eq!(s.last_good_version.as_deref(), Some("1.1.0"));
    assert_eq!(s.phase, Phase::Degraded);
    let rb = condition_of(&s.conditions, condition::ROLLED_BACK).expect("RolledBack");
    assert_eq!(rb.reason, "ProgressDeadlineExceeded");
    assert!(
        rb.message.contains("spec.version still says 1.2.0-broken"),
        "{}",
        rb.message
    );
    assert_eq!(
        condition_of(&s.conditions, condition::READY).map(|c| c.reason.as_str()),
        Some("RolledBack")
    );

    // The workload runs the last good version again, and all of it is available.
    let settled = wait_gateway(&client, &ns, name, "1.1.0 to be running again", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.current_version.as_deref() == Some("1.1.0") && s.available_replicas == 2
        })
    })
    .await;
    let d: Deployment = get(&client, &ns, name).await.expect("deployment");
    let image = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].image.clone());
    assert_eq!(image.as_deref(), Some("ghcr.io/payments/gateway:1.1.0"));
    let events = events_for(&client, &ns, name).await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("RolledBack")
                && e.type_.as_deref() == Some("Warning")),
        "RolledBack event: {:?}",
        events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("UpgradeSucceeded"))
    );

    // The bad version is not retried while the spec still names it.
    let generation = settled.metadata.generation;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later: PaymentGateway = get(&client, &ns, name).await.expect("gateway");
    assert_eq!(later.metadata.generation, generation);
    let d: Deployment = get(&client, &ns, name).await.expect("deployment");
    let image = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].image.clone());
    assert_eq!(image.as_deref(), Some("ghcr.io/payments/gateway:1.1.0"));

    // A new version clears the failure.
    patch_spec::<PaymentGateway>(&client, &ns, name, json!({"version": "1.2.1"})).await;
    let fixed = wait_gateway(&client, &ns, name, "1.2.1 to roll out", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Ready && s.current_version.as_deref() == Some("1.2.1")
        })
    })
    .await;
    let s = fixed.status.expect("status");
    assert_eq!(s.failed_version, None);
    assert_eq!(
        condition_of(&s.conditions, condition::ROLLED_BACK).map(|c| c.status.as_str()),
        Some("False")
    );
}

/// An automatic rollback is a write the agent decides alone: under the kill
/// switch it waits (an Event says so), and it happens once the switch is
/// off. Before the gate, the controller rolled back whatever the switch said.
#[tokio::test]
async fn the_kill_switch_holds_an_automatic_rollback() {
    let (client, ns) = support::client_and_namespace(cp(), "held").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    support::install_default_policy(&client, &ns).await;
    let _controllers = support::start_controllers_with(client.clone(), &ns, Some(&ns));
    let name = "gw";
    ready_gateway(&client, &ns, name, 6).await;

    let kill_switch = |on: bool| {
        let client = client.clone();
        let ns = ns.clone();
        async move { support::set_kill_switch(&client, &ns, on).await }
    };
    kill_switch(true).await;
    patch_spec::<PaymentGateway>(&client, &ns, name, json!({"version": "1.1.0-broken"})).await;
    support::wait_for("a RollbackHeld Event", LONG, || async {
        let held = events_for(&client, &ns, name)
            .await
            .into_iter()
            .any(|e| e.reason.as_deref() == Some("RollbackHeld"));
        if held {
            Ok(())
        } else {
            Err("no RollbackHeld Event yet".to_string())
        }
    })
    .await;
    let held: PaymentGateway = get(&client, &ns, name).await.expect("gateway");
    let s = held.status.expect("status");
    assert_eq!(s.failed_version, None, "not rolled back: {s:?}");
    assert!(
        condition_of(&s.conditions, condition::ROLLED_BACK).is_none_or(|c| c.status != "True"),
        "{s:?}"
    );
    let d: Deployment = get(&client, &ns, name).await.expect("deployment");
    let image = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].image.clone());
    assert!(
        image
            .as_deref()
            .is_some_and(|i| i.ends_with(":1.1.0-broken")),
        "the failed version stays while the switch is on: {image:?}"
    );

    // The switch off: the next reconcile rolls back.
    kill_switch(false).await;
    wait_gateway(
        &client,
        &ns,
        name,
        "the rollback once the switch is off",
        |p| {
            p.status.as_ref().is_some_and(|s| {
                s.failed_version.as_deref() == Some("1.1.0-broken")
                    && condition_of(&s.conditions, condition::ROLLED_BACK)
                        .is_some_and(|c| c.status == "True")
            })
        },
    )
    .await;
}

/// The hands-off label, on the namespace or on the resource, holds an
/// automatic rollback as the kill switch does, while plain reconciliation
/// of what the user wrote goes on; "false" (or no label) hands it back.
/// Before the scope reached the controllers, the rollback happened whatever
/// the labels said. Both cases run at once, each in its own namespace.
#[tokio::test]
async fn the_hands_off_label_holds_an_automatic_rollback() {
    tokio::join!(hands_off_holds(true), hands_off_holds(false));
}

/// One case of the test above: the label on the namespace, or on the gateway.
async fn hands_off_holds(on_namespace: bool) {
    use autopilot::scope::HANDS_OFF_LABEL;
    let (client, ns) = support::client_and_namespace(cp(), "hands-off").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let _controllers = support::start_controllers(client.clone(), &ns);
    let name = "gw";
    ready_gateway(&client, &ns, name, 6).await;
    let label = |value: &str| json!({"metadata": {"labels": {HANDS_OFF_LABEL: value}}});
    let labelled = |value: &'static str| {
        let (client, ns) = (client.clone(), ns.clone());
        async move {
            let params = PatchParams::default();
            let patch = Patch::Merge(label(value));
            if on_namespace {
                Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
                    .patch(&ns, &params, &patch)
                    .await
                    .map(|_| ())
            } else {
                Api::<PaymentGateway>::namespaced(client, &ns)
                    .patch(name, &params, &patch)
                    .await
                    .map(|_| ())
            }
            .expect("label");
        }
    };
    labelled("true").await;
    patch_spec::<PaymentGateway>(&client, &ns, name, json!({"version": "1.1.0-broken"})).await;
    let why = if on_namespace {
        format!("namespace {ns} is labelled {HANDS_OFF_LABEL}")
    } else {
        format!("the target is labelled {HANDS_OFF_LABEL}")
    };
    support::wait_for(&format!("a RollbackHeld Event: {why}"), LONG, || async {
        events_for(&client, &ns, name)
            .await
            .into_iter()
            .any(|e| {
                e.reason.as_deref() == Some("RollbackHeld")
                    && e.message.as_deref().is_some_and(|m| m.contains(&why))
            })
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let held: PaymentGateway = get(&client, &ns, name).await.expect("gateway");
    let s = held.status.expect("status");
    assert_eq!(s.failed_version, None, "not rolled back: {s:?}");
    let d: Deployment = get(&client, &ns, name).await.expect("deployment");
    let image = d
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers[0].image.clone());
    assert!(
        image
            .as_deref()
            .is_some_and(|i| i.ends_with(":1.1.0-broken")),
        "what the user wrote is applied: {image:?}"
    );

    // Handed back: the next reconcile rolls back (a namespace change wakes
    // no watch of ours; the resync, or a touch, does).
    labelled("false").await;
    Api::<PaymentGateway>::namespaced(client.clone(), &ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"test/touch": "1"}}})),
        )
        .await
        .expect("touch the gateway");
    wait_gateway(&client, &ns, name, "the rollback once handed back", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.failed_version.as_deref() == Some("1.1.0-broken")
                && condition_of(&s.conditions, condition::ROLLED_BACK)
                    .is_some_and(|c| c.status == "True")
        })
    })
    .await;
}

#[tokio::test]
async fn an_anomaly_verdict_rolls_an_upgrade_back() {
    let (client, ns) = support::client_and_namespace(cp(), "gate").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let controllers = support::start_controllers(client.clone(), &ns);
    let name = "gw";
    create::<PaymentGateway>(
        &client,
        &ns,
        json!({"apiVersion": "payments.io/v1", "kind": "PaymentGateway", "metadata": {"name": name},
               "spec": {"version": "2.0.0", "replicas": 1}}),
    )
    .await;
    wait_gateway(&client, &ns, name, "2.0.0 to be Ready", |p| {
        p.status.as_ref().is_some_and(|s| s.phase == Phase::Ready)
    })
    .await;
    // The detectors judge 2.1.0 unhealthy before its rollout completes.
    controllers.gate.declare_unhealthy(
        "PaymentGateway",
        &ns,
        name,
        "2.1.0-broken",
        "error rate 9% vs 0.2% baseline",
    );
    patch_spec::<PaymentGateway>(&client, &ns, name, json!({"version": "2.1.0-broken"})).await;
    let rolled = wait_gateway(&client, &ns, name, "the gate to trigger a rollback", |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.failed_version.as_deref() == Some("2.1.0-broken"))
    })
    .await;
    let rb = rolled
        .status
        .as_ref()
        .and_then(|s| condition_of(&s.conditions, condition::ROLLED_BACK).cloned())
        .expect("RolledBack");
    assert_eq!(rb.reason, "UnhealthyUpgrade");
    assert!(rb.message.contains("error rate 9%"), "{}", rb.message);
}

#[tokio::test]
async fn clearing_adapter_mounts_credentials_limits_egress_and_reports_the_cutoff() {
    let (client, ns) = support::client_and_namespace(cp(), "clearing").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let _controllers = support::start_controllers(client.clone(), &ns);
    let name = "sepa-step2";

    // An address range the schema cannot check: condition says why, nothing applied.
    let mut bad = example("ClearingAdapter");
    bad["spec"]["endpoint"]["cidrs"] = json!(["203.0.113.0/40"]);
    create::<ClearingAdapter>(&client, &ns, bad).await;
    let failed = support::wait_for("the invalid spec to be reported", LONG, || async {
        let ca: ClearingAdapter = get(&client, &ns, name).await?;
        let s = ca.status.clone().ok_or("no status")?;
        let phase = s.workload.phase;
        (phase == Phase::Failed)
            .then_some(s)
            .ok_or(format!("{phase:?}"))
    })
    .await;
    let degraded =
        condition_of(&failed.workload.conditions, condition::DEGRADED).expect("Degraded");
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(
        degraded.message.contains("spec.endpoint.cidrs[0]"),
        "{}",
        degraded.message
    );
    assert!(
        get::<Deployment>(&client, &ns, name).await.is_err(),
        "nothing half-applied"
    );
    assert!(
        get::<ConfigMap>(&client, &ns, name).await.is_err(),
        "nothing half-applied"
    );
    assert!(
        get::<NetworkPolicy>(&client, &ns, name).await.is_err(),
        "nothing half-applied"
    );

    // Fixing the spec brings everything up.
    patch_spec::<ClearingAdapter>(
        &client,
        &ns,
        name,
        json!({"endpoint": {"cidrs": ["203.0.113.0/24"]}}),
    )
    .await;
    let ca = support::wait_for("the adapter to be Ready", LONG, || async {
        let ca: ClearingAdapter = get(&client, &ns, name).await?;
        let ok = ca
            .status
            .as_ref()
            .is_some_and(|s| s.workload.phase == Phase::Ready);
        ok.then_some(ca).ok_or_else(|| "not ready".to_string())
    })
    .await;
    let cutoff = ca
        .status
        .as_ref()
        .and_then(|s| s.next_cutoff_time.clone())
        .expect("next cut-off");
    assert!(
        cutoff.0 > k8s_openapi::jiff::Timestamp::now(),
        "the next cut-off is in the future"
    );
    let d: Deployment = get(&client, &ns, name).await.expect("deployment");
    let pod = d.spec.and_then(|s| s.template.spec).expect("pod");
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "credentials")
        .expect("credentials volume");
    assert_eq!(
        vol.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
        Some("sepa-step2-credentials")
    );
    let np: NetworkPolicy = get(&client, &ns, name).await.expect("network policy");
    let egress = np.spec.and_then(|s| s.egress).expect("egress");
    assert_eq!(
        egress[0].to.as_ref().expect("to")[0]
            .ip_block
            .as_ref()
            .expect("block")
            .cidr,
        "203.0.113.0/24"
    );
}

#[tokio::test]
async fn saga_orchestrator_renders_validated_definitions() {
    let (client, ns) = support::client_and_namespace(cp(), "saga").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let _controllers = support::start_controllers(client.clone(), &ns);
    let name = "payment-sagas";
    create::<SagaOrchestrator>(&client, &ns, example("SagaOrchestrator")).await;
    support::wait_for("the orchestrator to be Ready", LONG, || async {
        let s: SagaOrchestrator = get(&client, &ns, name).await?;
        s.status
            .as_ref()
            .filter(|st| st.phase == Phase::Ready)
            .map(|_| ())
            .ok_or("not ready".into())
    })
    .await;
    let cm: ConfigMap = get(&client, &ns, name).await.expect("configmap");
    let sagas: Value = serde_json::from_str(&cm.data.expect("data")["sagas.json"]).expect("json");
    assert_eq!(sagas[0]["name"], "card-payment");
    assert_eq!(sagas[0]["steps"].as_array().map(Vec::len), Some(3));

    // A compensable step after the final one passes the schema but not the reconciler.
    patch_spec::<SagaOrchestrator>(
        &client,
        &ns,
        name,
        json!({"sagas": [{"name": "card-payment", "steps": [
            {"name": "capture", "service": "ledger", "action": "Capture", "final": true},
            {"name": "notify", "service": "notifier", "action": "Notify", "compensation": "Retract"}]}]}),
    )
    .await;
    let s = support::wait_for("the invalid saga to be reported", LONG, || async {
        let s: SagaOrchestrator = get(&client, &ns, name).await?;
        let st = s.status.clone().ok_or("no status")?;
        (st.phase == Phase::Failed)
            .then_some(st)
            .ok_or("not failed yet".into())
    })
    .await;
    let msg = &condition_of(&s.conditions, condition::DEGRADED)
        .expect("Degraded")
        .message;
    assert!(msg.contains("follows the final step"), "{msg}");
    // The last good configuration stays in place.
    let cm: ConfigMap = get(&client, &ns, name).await.expect("configmap");
    assert!(cm.data.expect("data")["sagas.json"].contains("reserve-funds"));
}

#[tokio::test]
async fn batch_processor_schedules_runs_now_and_counts_failures() {
    let (client, ns) = support::client_and_namespace(cp(), "batch").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let _controllers = support::start_controllers(client.clone(), &ns);
    let name = "nightly-settlement";
    let mut bp = example("BatchProcessor");
    bp["spec"]["backoffLimit"] = json!(0);
    bp["spec"]["parallelism"] = json!(1);
    bp["spec"]["completions"] = json!(1);
    create::<BatchProcessor>(&client, &ns, bp).await;
    let cj = support::wait_for("the CronJob", LONG, || async {
        get::<CronJob>(&client, &ns, name).await
    })
    .await;
    let cs = cj.spec.expect("spec");
    assert_eq!(cs.schedule, "30 2 * * *");
    assert_eq!(cs.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(cs.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(
        cs.job_template.spec.expect("job").active_deadline_seconds,
        Some(7200)
    );

    let annotate = |value: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            Api::<BatchProcessor>::namespaced(client, &ns)
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"payments.io/run-now": value}}}),
                    ),
                )
                .await
                .expect("annotate");
        }
    };
    annotate("first").await;
    let ok = support::wait_for("the one-off run to succeed", LONG, || async {
        let b: BatchProcessor = get(&client, &ns, name).await?;
        let s = b.status.clone().ok_or("no status")?;
        s.last_successful_time
            .is_some()
            .then_some(s)
            .ok_or(format!("{:?}", b.status))
    })
    .await;
    assert_eq!(ok.last_run_now.as_deref(), Some("first"));
    assert_eq!(ok.consecutive_failures, 0);
    assert_eq!(ok.phase, Phase::Ready);
    let jobs = Api::<Job>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("jobs");
    assert_eq!(jobs.items.len(), 1, "one run-now value, one Job");

    // A failing release: the next one-off run fails and status says so.
    patch_spec::<BatchProcessor>(&client, &ns, name, json!({"version": "3.3.0-fail"})).await;
    annotate("second").await;
    let failed = support::wait_for("the failed run to be counted", LONG, || async {
        let b: BatchProcessor = get(&client, &ns, name).await?;
        let s = b.status.clone().ok_or("no status")?;
        (s.consecutive_failures == 1)
            .then_some(s)
            .ok_or(format!("{:?}", b.status))
    })
    .await;
    assert_eq!(failed.phase, Phase::Degraded);
    assert!(failed.last_failure_time.is_some());
    assert_eq!(
        condition_of(&failed.conditions, condition::DEGRADED).map(|c| c.reason.as_str()),
        Some("RunFailed")
    );
    let events = events_for(&client, &ns, name).await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("RunTriggered"))
    );
}

/// The chart's RBAC is enough: the controllers, running as the chart's
/// service account (impersonated) of an install scoped to this namespace,
/// with the chart's admission policies in force, reconcile a gateway that
/// owns every kind of object, publish their Events, and delete the HPA once
/// autoscaling is turned off.
#[tokio::test]
async fn the_charts_rbac_is_sufficient_for_the_controllers() {
    let (admin, ns) = support::client_and_namespace(cp(), "rbac").await;
    // Rendered by Helm for this test's own release, scoped to its namespace.
    let release = format!("autopilot-{ns}");
    let rendered = support::chart::render(
        &release,
        &ns,
        &[("watchNamespaces", &support::chart::scoped_to(&[&ns]))],
    );
    let _kubelet = support::kubelet::start(admin.clone(), &ns).await;
    support::apply_chart_rbac(&admin, &rendered).await;
    let as_agent = support::as_service_account(cp(), &ns, &release).await;
    // The impersonation is real: the agent may not read Secrets.
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(as_agent.clone(), &ns)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(secrets, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{secrets:?}"
    );
    let _controllers = support::start_controllers(as_agent, &ns);

    create::<PaymentGateway>(&admin, &ns, example("PaymentGateway")).await;
    let pgw = wait_gateway(
        &admin,
        &ns,
        "payment-gateway",
        "the gateway to be reconciled under the chart's RBAC",
        |p| p.status.as_ref().is_some_and(|s| s.phase == Phase::Ready),
    )
    .await;
    assert!(pgw.status.is_some());
    let sm_api: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        &ns,
        &autopilot::act::service_monitor_resource(),
    );
    sm_api
        .get("payment-gateway")
        .await
        .expect("ServiceMonitor applied under RBAC");
    get::<HorizontalPodAutoscaler>(&admin, &ns, "payment-gateway")
        .await
        .expect("HPA applied under RBAC");
    let events = events_for(&admin, &ns, "payment-gateway").await;
    assert!(!events.is_empty(), "Events published under RBAC");
    // The one delete the controllers do: allowed by RBAC and admission.
    Api::<PaymentGateway>::namespaced(admin.clone(), &ns)
        .patch(
            "payment-gateway",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoscaling": null}})),
        )
        .await
        .expect("turn autoscaling off");
    support::wait_for(
        "the HPA to be deleted under the chart's RBAC",
        Duration::from_secs(30),
        || {
            let admin = admin.clone();
            let ns = ns.clone();
            async move {
                match get::<HorizontalPodAutoscaler>(&admin, &ns, "payment-gateway").await {
                    Ok(_) => Err("the HPA is still there".to_string()),
                    Err(_) => Ok(()),
                }
            }
        },
    )
    .await;
}

/// A scoped install needs no cluster-wide read: the controllers, as a
/// service account with Roles in two namespaces only (impersonated, no
/// ClusterRole at all), reconcile a gateway in each, and leave one in a
/// third namespace untouched. Before, the controllers watched one namespace
/// or the whole cluster, so two namespaces needed a cluster-wide watch.
#[tokio::test]
async fn scoped_controllers_need_only_roles_in_their_namespaces() {
    let (admin, ns1) = support::client_and_namespace(cp(), "scope-a").await;
    let (_, ns2) = support::client_and_namespace(cp(), "scope-b").await;
    let (_, ns3) = support::client_and_namespace(cp(), "scope-out").await;
    // What the controllers need, from the registry, granted per namespace.
    let rules: Vec<Value> = autopilot::kinds::controller_rbac()
        .into_iter()
        .map(|r| json!({"apiGroups": [r.group], "resources": [r.resource], "verbs": r.verbs}))
        .collect();
    let as_agent = support::service_account_with_roles(
        cp(),
        &admin,
        &ns1,
        "autopilot-scoped",
        &[&ns1, &ns2],
        &rules,
    )
    .await;
    // Nothing cluster-wide is allowed: a watch of every namespace, as an
    // unscoped controller opens, is refused, and so is a third namespace.
    for denied in [
        Api::<PaymentGateway>::all(as_agent.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        Api::<Deployment>::namespaced(as_agent.clone(), &ns3)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
    ] {
        assert!(
            matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403),
            "{denied:?}"
        );
    }

    let _controllers = support::start_controllers_in(
        as_agent,
        autopilot::scope::Scope::namespaces([ns1.clone(), ns2.clone()]),
        None,
    );
    let gw = json!({"apiVersion": "payments.io/v1", "kind": "PaymentGateway",
                    "metadata": {"name": "gw"}, "spec": {"version": "1.0.0", "replicas": 1}});
    for ns in [&ns1, &ns2, &ns3] {
        create::<PaymentGateway>(&admin, ns, gw.clone()).await;
    }
    for ns in [&ns1, &ns2] {
        wait_gateway(
            &admin,
            ns,
            "gw",
            "the gateway in scope to be reconciled",
            |p| {
                p.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation == p.metadata.generation)
            },
        )
        .await;
        get::<Deployment>(&admin, ns, "gw")
            .await
            .expect("its Deployment, applied under the Role");
    }
    let outside: PaymentGateway = get(&admin, &ns3, "gw").await.expect("gateway");
    assert!(outside.status.is_none(), "{:?}", outside.status);
    assert!(get::<Deployment>(&admin, &ns3, "gw").await.is_err());
}

/// `autopilot run` as its own process: it serves /healthz and /metrics and
/// reconciles a gateway in the namespace it is told to watch.
#[tokio::test]
async fn the_agent_binary_runs_the_controllers_and_serves_metrics() {
    let (client, ns) = support::client_and_namespace(cp(), "agent").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let journal = tempfile::tempdir().expect("journal dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args([
            "run",
            "--namespace",
            &ns,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--agent-namespace",
            &ns,
            "--leader-election",
            "false",
            "--database-url",
            &journal.path().join("journal.db").to_string_lossy(),
        ])
        .env("KUBECONFIG", cp().kubeconfig())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start autopilot run");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let exited = child.try_wait().expect("try_wait");
    let _guard = Kill(child);
    assert!(exited.is_none(), "autopilot run exited at once: {exited:?}");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    support::wait_for("/healthz to answer", LONG, || {
        let http = http.clone();
        async move {
            let r = http
                .get(format!("http://127.0.0.1:{port}/healthz"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            r.status()
                .is_success()
                .then_some(())
                .ok_or(r.status().to_string())
        }
    })
    .await;
    create::<PaymentGateway>(
        &client,
        &ns,
        json!({"apiVersion": "payments.io/v1", "kind": "PaymentGateway", "metadata": {"name": "gw"}, "spec": {"version": "1.0.0"}}),
    )
    .await;
    wait_gateway(
        &client,
        &ns,
        "gw",
        "the agent process to write status",
        |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.observed_generation == p.metadata.generation)
        },
    )
    .await;
    // The reconcile that wrote status is counted when it returns.
    support::wait_for("/metrics to count the reconcile", LONG, || {
        let http = http.clone();
        async move {
            let body = http
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .map_err(|e| e.to_string())?;
            (body.contains("autopilot_reconcile_total{kind=\"PaymentGateway\",result=\"ok\"}")
                && body.contains("autopilot_reconcile_duration_seconds_bucket"))
            .then_some(())
            .ok_or(body)
        }
    })
    .await;
}
