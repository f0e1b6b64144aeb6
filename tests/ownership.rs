//! The controllers write only what they own (issue #10), against a real
//! kube-apiserver and kube-controller-manager (its garbage collector):
//!
//! - a user's ConfigMap with a gateway's name is not taken (no ownerReference
//!   added, no data merged, not even a write), the gateway reports the
//!   conflict and holds back the Deployment that would run on it, and the
//!   ConfigMap outlives the gateway;
//! - the agent's own ConfigMap (its runbooks) cannot be taken by naming a
//!   gateway after it;
//! - a gateway without autoscaling leaves someone else's HPA of its name;
//! - a conflict on a side object (a Service) lets the rest roll out, and
//!   clears once the name is free.
//!
//! Before the fix each object was force-applied over whatever had its name,
//! and deleted by name, so each of these tests failed.

mod support;

use std::time::Duration;

use autopilot::{
    crd::{PaymentGateway, Phase, condition},
    testenv::{ControlPlane, Options},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    core::v1::{ConfigMap, Service},
};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ObjectMeta},
};
use serde_json::{Value, json};
use support::objects::{condition_of, create, events_for, get};

const LONG: Duration = Duration::from_secs(60);

fn cp() -> &'static ControlPlane {
    support::control_plane(Options {
        controller_manager: true,
    })
}

fn gateway(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "payments.io/v1", "kind": "PaymentGateway",
           "metadata": {"name": name}, "spec": spec})
}

/// Waits until the gateway's Ready condition says `reason`.
async fn wait_ready_reason(client: &Client, ns: &str, name: &str, reason: &str) -> PaymentGateway {
    support::wait_for(&format!("{name}: Ready reason {reason}"), LONG, || async {
        let gw: PaymentGateway = get(client, ns, name).await?;
        let status = gw.status.clone().unwrap_or_default();
        match condition_of(&status.conditions, condition::READY) {
            Some(c) if c.reason == reason => Ok(gw),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn wait_conflict_event(client: &Client, ns: &str, name: &str) -> String {
    support::wait_for("a Warning Event OwnedObjectConflict", LONG, || async {
        events_for(client, ns, name)
            .await
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("OwnedObjectConflict")
                    && e.type_.as_deref() == Some("Warning")
            })
            .and_then(|e| e.message)
            .ok_or_else(|| "no OwnedObjectConflict Event yet".to_string())
    })
    .await
}

/// Nothing about the object changed since `before`: not a single write.
fn untouched(before: &ObjectMeta, now: &ObjectMeta) {
    assert_eq!(now.resource_version, before.resource_version, "{now:?}");
    assert!(
        now.owner_references.as_ref().is_none_or(Vec::is_empty),
        "{:?}",
        now.owner_references
    );
    assert!(
        now.managed_fields
            .iter()
            .flatten()
            .all(|m| m.manager.as_deref() != Some(autopilot::crd::FIELD_MANAGER)),
        "{:?}",
        now.managed_fields
    );
}

#[tokio::test]
async fn a_users_config_map_is_never_taken_and_outlives_the_gateway() {
    let (client, ns) = support::client_and_namespace(cp(), "victim").await;
    let _controllers = support::start_controllers(client.clone(), &ns);
    let theirs: ConfigMap = create(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "victim"},
               "data": {"ledger": "do not lose"}}),
    )
    .await;
    create::<PaymentGateway>(
        &client,
        &ns,
        gateway("victim", json!({"version": "1.0.0", "replicas": 1})),
    )
    .await;

    let gw = wait_ready_reason(&client, &ns, "victim", "OwnedObjectConflict").await;
    let status = gw.status.clone().expect("status");
    let ready = condition_of(&status.conditions, condition::READY).expect("Ready");
    assert_eq!(ready.status, "False");
    assert_eq!(ready.observed_generation, gw.metadata.generation);
    assert!(
        ready.message.contains("ConfigMap victim is not ours")
            && ready.message.contains("no controller ownerReference")
            && ready.message.contains("not applied until then: Deployment"),
        "{}",
        ready.message
    );
    assert_eq!(status.phase, Phase::Failed);
    let note = wait_conflict_event(&client, &ns, "victim").await;
    assert!(note.contains("ConfigMap victim"), "{note}");

    // Not a write on the user's ConfigMap; no Deployment wired to it; the
    // rest (the Service) reconciled as ours.
    let cm: ConfigMap = get(&client, &ns, "victim").await.expect("their ConfigMap");
    untouched(&theirs.metadata, &cm.metadata);
    assert_eq!(cm.data, theirs.data);
    assert!(get::<Deployment>(&client, &ns, "victim").await.is_err());
    let svc: Service = get(&client, &ns, "victim").await.expect("our Service");
    let uid = gw.meta().uid.clone().expect("uid");
    assert!(
        svc.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.uid == uid && r.controller == Some(true))
    );
    // Created (a POST cannot adopt), then handed to server-side apply: our
    // apply alone owns its fields, so a field we stop setting goes.
    let managers: Vec<_> = svc
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone(), m.operation.clone()))
        .collect();
    assert_eq!(
        managers,
        [(
            Some(autopilot::crd::FIELD_MANAGER.to_string()),
            Some("Apply".to_string())
        )]
    );

    // Deleting the gateway: the garbage collector takes what it owned
    // (foreground: the gateway goes once its dependents are gone), never
    // the user's ConfigMap.
    Api::<PaymentGateway>::namespaced(client.clone(), &ns)
        .delete("victim", &DeleteParams::foreground())
        .await
        .expect("delete the gateway");
    support::wait_for(
        "the gateway and its Service to be collected",
        LONG,
        || async {
            let left = (
                get::<PaymentGateway>(&client, &ns, "victim").await.is_ok(),
                get::<Service>(&client, &ns, "victim").await.is_ok(),
            );
            (left == (false, false))
                .then_some(())
                .ok_or(format!("still present (gateway, service): {left:?}"))
        },
    )
    .await;
    let cm: ConfigMap = get(&client, &ns, "victim")
        .await
        .expect("the user's ConfigMap outlives the gateway");
    untouched(&theirs.metadata, &cm.metadata);
}

#[tokio::test]
async fn the_agents_own_rules_cannot_be_taken() {
    // The agent's namespace, with its runbooks ConfigMap as the chart
    // installs it (`--rules-configmap autopilot-rules`).
    let (client, ns) = support::client_and_namespace(cp(), "rules").await;
    let _controllers = support::start_controllers(client.clone(), &ns);
    let name = "autopilot-rules";
    let rules: ConfigMap = create(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
               "data": {"noop.rhai": "// a runbook"}}),
    )
    .await;
    create::<PaymentGateway>(
        &client,
        &ns,
        gateway(name, json!({"version": "1.0.0", "replicas": 1})),
    )
    .await;
    wait_ready_reason(&client, &ns, name, "OwnedObjectConflict").await;
    let now: ConfigMap = get(&client, &ns, name).await.expect("the rules");
    untouched(&rules.metadata, &now.metadata);
    assert_eq!(now.data, rules.data, "the runbooks stay as they were");
}

#[tokio::test]
async fn a_gateway_without_autoscaling_leaves_someone_elses_hpa() {
    let (client, ns) = support::client_and_namespace(cp(), "hpa").await;
    let _controllers = support::start_controllers(client.clone(), &ns);
    let theirs: HorizontalPodAutoscaler = create(
        &client,
        &ns,
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": "gw"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "their-app"},
                        "minReplicas": 1, "maxReplicas": 3}}),
    )
    .await;
    create::<PaymentGateway>(
        &client,
        &ns,
        gateway("gw", json!({"version": "1.0.0", "replicas": 1})),
    )
    .await;
    // Reconciled (the Deployment applied and status written)…
    let gw = wait_ready_reason(&client, &ns, "gw", "RolloutInProgress").await;
    assert!(get::<Deployment>(&client, &ns, "gw").await.is_ok());
    // …and the HPA it does not want, and does not own, is left as it was.
    let hpa: HorizontalPodAutoscaler = get(&client, &ns, "gw")
        .await
        .expect("their HPA is not deleted");
    untouched(&theirs.metadata, &hpa.metadata);
    // Not wanted is not in the way: no conflict is reported for it.
    let status = gw.status.expect("status");
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.reason != "OwnedObjectConflict"),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_conflict_on_a_service_lets_the_rest_roll_out_and_clears_when_the_name_is_free() {
    let (client, ns) = support::client_and_namespace(cp(), "svc").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let _controllers = support::start_controllers(client.clone(), &ns);
    let theirs: Service = create(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gw"},
               "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 443}]}}),
    )
    .await;
    create::<PaymentGateway>(
        &client,
        &ns,
        gateway("gw", json!({"version": "1.0.0", "replicas": 1})),
    )
    .await;
    let gw = wait_ready_reason(&client, &ns, "gw", "OwnedObjectConflict").await;
    let status = gw.status.expect("status");
    let degraded = condition_of(&status.conditions, condition::DEGRADED).expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "OwnedObjectConflict")
    );
    assert!(
        degraded.message.contains("Service gw is not ours"),
        "{degraded:?}"
    );
    // The Deployment does not depend on the Service: it rolls out.
    support::wait_for("the Deployment to roll out", LONG, || async {
        let d: Deployment = get(&client, &ns, "gw").await?;
        let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
        (available == 1)
            .then_some(())
            .ok_or(format!("{available} available"))
    })
    .await;
    let svc: Service = get(&client, &ns, "gw").await.expect("their Service");
    untouched(&theirs.metadata, &svc.metadata);

    // The user frees the name: the next look (the conflict is polled, as no
    // watch of ours sees a foreign object go) creates our Service.
    Api::<Service>::namespaced(client.clone(), &ns)
        .delete("gw", &DeleteParams::default())
        .await
        .expect("delete their Service");
    let gw = wait_ready_reason(&client, &ns, "gw", "Available").await;
    assert_eq!(gw.status.expect("status").phase, Phase::Ready);
    let svc: Service = get(&client, &ns, "gw").await.expect("our Service");
    assert!(
        svc.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|r| Some(&r.uid) == gw.metadata.uid.as_ref())
    );
}

/// What the race guard rests on, on this API server: a uid in an apply's
/// body is a precondition (an object created or replaced since the read is
/// refused, never taken; so a create is a POST, which cannot adopt), and so
/// is a delete's uid precondition.
#[tokio::test]
async fn the_api_server_refuses_writes_pinned_to_another_uid() {
    use kube::api::{Patch, PatchParams, PostParams, Preconditions};
    let (client, ns) = support::client_and_namespace(cp(), "pinned").await;
    let api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let params = PatchParams::apply(autopilot::crd::FIELD_MANAGER).force();
    let body = |name: &str, uid: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "uid": uid}, "data": {"ours": "x"}})
    };
    let refused = api
        .patch("absent", &params, &Patch::Apply(body("absent", "some-uid")))
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 409 && s.message.contains("uid")),
        "{refused:?}"
    );

    let theirs: ConfigMap = create(
        &client,
        &ns,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "raced"},
               "data": {"theirs": "y"}}),
    )
    .await;
    let uid = theirs.metadata.uid.clone().expect("uid");
    let refused = api
        .patch("raced", &params, &Patch::Apply(body("raced", "some-uid")))
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("uid")),
        "{refused:?}"
    );
    let cm: ConfigMap = serde_json::from_value(body("raced", "")).expect("cm");
    let refused = api.create(&PostParams::default(), &cm).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 409),
        "{refused:?}"
    );
    let stale = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("some-uid".into()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    let refused = api.delete("raced", &stale).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 409),
        "{refused:?}"
    );
    let after: ConfigMap = get(&client, &ns, "raced").await.expect("theirs");
    untouched(&theirs.metadata, &after.metadata);

    // Pinned to the live uid, the apply goes through.
    api.patch("raced", &params, &Patch::Apply(body("raced", &uid)))
        .await
        .expect("an apply pinned to the live uid");
}
