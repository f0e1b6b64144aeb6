//! The leader fence on the real API server: the executor, as the agent's
//! service account, sends while this process's hold on a real Lease is
//! current, and sends nothing — the target untouched, the outcome `failed`
//! with the reason — once the last renewal is older than the Lease minus
//! the margin (a leader paused past its Lease), or another replica holds it.
//! One test per binary: the fence is process-wide.

mod support;

use std::time::Duration;

use autopilot::{
    act::{
        executor::{Executor, Metrics},
        guard::Policy,
        journal::outcome,
    },
    decide::Mode,
    detect::ComponentId,
    store::SqlJournal,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::json;

fn micro_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[tokio::test]
async fn a_replica_whose_lease_is_not_current_sends_nothing() {
    let cp = support::control_plane(Default::default());
    let (admin, ns) = support::client_and_namespace(cp, "fence").await;
    let agent = support::agent_client(cp).await;
    let leases = Api::<Lease>::namespaced(admin.clone(), &ns);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "autopilot-leader"},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 3, "renewTime": micro_now()},
    }))
    .expect("lease");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create the Lease");
    // As the agent installs it for a 3 s Lease (grace 1 s).
    let reader = autopilot::act::fence::install(
        admin.clone(),
        &ns,
        "autopilot-leader",
        "me",
        Duration::from_millis(500),
        Duration::from_millis(250),
    )
    .await;

    let gateways = Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        &ns,
        &autopilot::act::action::kind_info("PaymentGateway")
            .expect("kind")
            .api_resource(),
    );
    let gw: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "payments.io/v1", "kind": "PaymentGateway",
        "metadata": {"name": "gw"}, "spec": {"version": "2.5.0", "replicas": 3},
    }))
    .expect("gateway");
    gateways
        .create(&PostParams::default(), &gw)
        .await
        .expect("create");
    let replicas = || async {
        gateways.get("gw").await.expect("get").data["spec"]["replicas"]
            .as_i64()
            .expect("replicas")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = SqlJournal::connect(&format!("sqlite:{}", dir.path().join("j.db").display()))
        .await
        .expect("journal");
    let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
    let ex = Executor::new(agent, journal, metrics).with_mode(Mode::Auto);
    let policy = Policy {
        cooldown_seconds: 0,
        max_relative_change: 100.0,
        ..Policy::default()
    };
    let scale = |replicas: i64, at: i64| {
        let target = ComponentId {
            kind: "PaymentGateway".into(),
            namespace: ns.clone(),
            name: "gw".into(),
        };
        let p = support::scale_proposal(&target, replicas, Mode::Auto);
        let (ex, policy) = (&ex, &policy);
        async move {
            ex.run_batch(&[p], policy, at)
                .await
                .expect("batch")
                .pop()
                .expect("one")
        }
    };

    // Renewed a moment ago: writes go through.
    let done = scale(4, 1_800_000_000).await;
    assert_eq!(done.outcome, outcome::APPLIED, "{}", done.detail);
    assert_eq!(replicas().await, 4);

    // No renewal for longer than the Lease minus the margin (a leader
    // frozen): nothing is sent, though the Lease still names it.
    tokio::time::sleep(Duration::from_millis(2_700)).await;
    let done = scale(5, 1_800_000_010).await;
    assert_eq!(done.outcome, outcome::FAILED, "{}", done.detail);
    assert!(
        done.detail.contains("fenced") && done.detail.contains("may have been deposed"),
        "{}",
        done.detail
    );
    assert_eq!(replicas().await, 4, "nothing reached the API server");

    // Renewed again: open.
    let renew =
        |holder: &str| json!({"spec": {"holderIdentity": holder, "renewTime": micro_now()}});
    leases
        .patch(
            "autopilot-leader",
            &PatchParams::default(),
            &Patch::Merge(renew("me")),
        )
        .await
        .expect("renew");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let done = scale(5, 1_800_000_020).await;
    assert_eq!(done.outcome, outcome::APPLIED, "{}", done.detail);
    assert_eq!(replicas().await, 5);

    // Another replica took the Lease: closed at once, fresh renewal or not.
    leases
        .patch(
            "autopilot-leader",
            &PatchParams::default(),
            &Patch::Merge(renew("other")),
        )
        .await
        .expect("take over");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let done = scale(6, 1_800_000_030).await;
    assert_eq!(done.outcome, outcome::FAILED, "{}", done.detail);
    assert!(done.detail.contains("held by other"), "{}", done.detail);
    assert_eq!(replicas().await, 5);
    reader.abort();
}
