//! A write that loses a race gets a real 409 Conflict from the API server,
//! and nothing is lost: another writer changes the target between the
//! executor's read and its patch (the patch carries the resourceVersion it
//! read).
//!
//! - The other writer touched unrelated fields: the executor reads again,
//!   finds its decision still valid, and applies it; both changes survive.
//! - The other writer changed the very field: the decision is stale, so it
//!   is not sent; the other writer's value stays and the journal says why.

mod support;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use autopilot::{
    act::{
        executor::{Executed, Executor, Metrics, Proposal},
        guard::Policy,
        journal::Journal,
    },
    crd::PaymentGateway,
    decide::{Action, Intent, Mode},
    detect::ComponentId,
    store::SqlJournal,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

async fn gateway(client: &Client, ns: &str) -> Api<PaymentGateway> {
    let api = Api::<PaymentGateway>::namespaced(client.clone(), ns);
    let gw: PaymentGateway = serde_json::from_value(json!({
        "apiVersion": "payments.io/v1", "kind": "PaymentGateway",
        "metadata": {"name": "gw"},
        "spec": {"version": "1.0.0", "replicas": 2}
    }))
    .expect("gateway");
    api.create(&PostParams::default(), &gw)
        .await
        .expect("create gateway");
    api
}

/// An executor whose first write is raced by `other_writer`, counting writes tried.
async fn raced_executor(
    client: &Client,
    dir: &tempfile::TempDir,
    api: Api<PaymentGateway>,
    other_writer: serde_json::Value,
) -> (Executor<SqlJournal>, Arc<AtomicUsize>) {
    let journal = SqlJournal::connect(&dir.path().join("j.db").to_string_lossy())
        .await
        .expect("journal");
    let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
    let tries = Arc::new(AtomicUsize::new(0));
    let counter = tries.clone();
    let hook = Arc::new(move |attempt: usize| {
        counter.fetch_add(1, Ordering::SeqCst);
        let api = api.clone();
        let patch = other_writer.clone();
        let fut: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            if attempt == 1 {
                api.patch("gw", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("the other writer's patch");
            }
        });
        fut
    });
    (
        Executor::new(client.clone(), journal, metrics)
            .with_mode(autopilot::decide::Mode::Auto)
            .with_before_write(hook),
        tries,
    )
}

fn scale_to(ns: &str, replicas: i64) -> Proposal {
    let mut intent = Intent::new(Action::ScaleReplicas {
        target: ComponentId {
            kind: "PaymentGateway".into(),
            namespace: ns.into(),
            name: "gw".into(),
        },
        replicas,
    });
    intent.runbook = "conflict-test".into();
    Proposal {
        intent,
        runbook_hash: "0".repeat(64),
        runbook_editor: None,
        trigger: "finding".into(),
        evidence: json!([]),
        mode: Mode::Auto,
        mode_note: None,
    }
}

/// A gateway at 2 replicas, and a batch scaling it to 3 whose first write
/// is raced by `other_writer`.
async fn race(
    prefix: &str,
    other_writer: serde_json::Value,
) -> (
    Api<PaymentGateway>,
    Executor<SqlJournal>,
    Arc<AtomicUsize>,
    Vec<Executed>,
    tempfile::TempDir,
) {
    let cp = support::control_plane(Default::default());
    let (client, ns) = support::client_and_namespace(cp, prefix).await;
    let api = gateway(&client, &ns).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (ex, tries) = raced_executor(&client, &dir, api.clone(), other_writer).await;
    let done = ex
        .run_batch(&[scale_to(&ns, 3)], &Policy::default(), 1_800_000_000)
        .await
        .expect("batch");
    (api, ex, tries, done, dir)
}

#[tokio::test]
async fn a_conflict_on_unrelated_fields_is_retried_and_both_writes_survive() {
    let (api, ex, tries, done, _dir) = race(
        "conflict-retry",
        json!({"metadata": {"annotations": {"team": "payments-oncall"}}}),
    )
    .await;
    assert_eq!(done[0].outcome, "applied", "{done:?}");
    // The first patch got the 409; the second, on a fresh read, went through.
    assert_eq!(tries.load(Ordering::SeqCst), 2);
    let gw = api.get("gw").await.expect("gateway");
    assert_eq!(gw.spec.replicas, 3);
    assert_eq!(
        gw.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("team"))
            .map(String::as_str),
        Some("payments-oncall"),
        "the other writer's change survives"
    );
    let entry = ex
        .journal()
        .get(done[0].id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(entry.outcome.as_deref(), Some("applied"));
}

#[tokio::test]
async fn a_conflict_on_the_decided_field_is_not_overwritten() {
    // Someone scales by hand to 6 while the executor is about to write 3.
    let (api, ex, tries, done, _dir) =
        race("conflict-stale", json!({"spec": {"replicas": 6}})).await;
    assert_eq!(done[0].outcome, "failed", "{done:?}");
    assert!(
        done[0].detail.contains("conflict"),
        "the outcome names the conflict: {}",
        done[0].detail
    );
    assert_eq!(tries.load(Ordering::SeqCst), 1, "no blind retry");
    assert_eq!(
        api.get("gw").await.expect("gateway").spec.replicas,
        6,
        "the human's value stays"
    );
    let entry = ex
        .journal()
        .get(done[0].id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(entry.outcome.as_deref(), Some("failed"));
    assert!(
        entry
            .outcome_detail
            .as_deref()
            .is_some_and(|d| d.contains("changed since the decision")),
        "{entry:?}"
    );
}
