//! The one gate, on the real API server: every write is judged again when
//! it is sent, with the policy, the scope and the hands-off labels as they
//! are at that moment, and a refusal is journaled with the guard that made
//! it while nothing reaches the target.

mod support;

use std::sync::Arc;

use autopilot::{
    act::{
        executor::{ClusterPolicy, Executed, Executor, Metrics, Observer, Proposal},
        guard::Observed,
        journal::{Journal, outcome},
    },
    decide::{Action, Intent, Mode},
    detect::ComponentId,
    scope::{HANDS_OFF_LABEL, Scope},
    store::SqlJournal,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;

/// A policy that lets everything through but the guard a test is about.
fn permissive() -> Value {
    json!({
        "cooldownSeconds": 0, "runbookPerHour": 1000, "globalPerHour": 1000,
        "disruptivePerNamespacePerHour": 1000, "disruptivePerHour": 1000,
        "maxRelativeChange": 100.0,
    })
}

struct Setup {
    client: Client,
    /// In scope: the agent's namespace too (its policy lives here).
    ns: String,
    /// Out of scope.
    other: String,
    _dir: tempfile::TempDir,
    journal_url: String,
}

async fn setup(prefix: &str) -> Setup {
    let cp = support::control_plane(Default::default());
    let (client, ns) = support::client_and_namespace(cp, prefix).await;
    let (_, other) = support::client_and_namespace(cp, &format!("{prefix}-out")).await;
    support::install_policy(&client, &ns, permissive()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let journal_url = format!("sqlite:{}", dir.path().join("j.db").display());
    Setup {
        client,
        ns,
        other,
        _dir: dir,
        journal_url,
    }
}

impl Setup {
    /// The agent's executor: scoped to `ns`, in `mode`.
    async fn executor(&self, mode: Mode) -> Executor<SqlJournal> {
        let journal = SqlJournal::connect(&self.journal_url)
            .await
            .expect("journal");
        let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
        Executor::new(self.client.clone(), journal, metrics)
            .with_mode(mode)
            .with_scope(Scope::namespaces([self.ns.clone()]))
    }

    fn policy(&self) -> ClusterPolicy {
        ClusterPolicy {
            client: self.client.clone(),
            namespace: self.ns.clone(),
        }
    }

    async fn gateway(&self, ns: &str, name: &str) -> ComponentId {
        let gw: autopilot::crd::PaymentGateway = serde_json::from_value(json!({
            "apiVersion": "payments.io/v1", "kind": "PaymentGateway",
            "metadata": {"name": name}, "spec": {"version": "1.0.0", "replicas": 2},
        }))
        .expect("gateway");
        Api::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &gw)
            .await
            .expect("create gateway");
        ComponentId {
            kind: "PaymentGateway".into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    async fn replicas(&self, t: &ComponentId) -> i64 {
        let gw: autopilot::crd::PaymentGateway = Api::namespaced(self.client.clone(), &t.namespace)
            .get(&t.name)
            .await
            .expect("get gateway");
        i64::from(gw.spec.replicas)
    }

    async fn label_gateway(&self, t: &ComponentId, value: Option<&str>) {
        Api::<autopilot::crd::PaymentGateway>::namespaced(self.client.clone(), &t.namespace)
            .patch(
                &t.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {HANDS_OFF_LABEL: value}}})),
            )
            .await
            .expect("label gateway");
    }

    async fn label_namespace(&self, ns: &str, value: Option<&str>) {
        Api::<Namespace>::all(self.client.clone())
            .patch(
                ns,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {HANDS_OFF_LABEL: value}}})),
            )
            .await
            .expect("label namespace");
    }
}

fn scale(target: &ComponentId, replicas: i64) -> Proposal {
    let mut intent = Intent::new(Action::ScaleReplicas {
        target: target.clone(),
        replicas,
    });
    intent.runbook = "gate-test".into();
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

async fn run(ex: &Executor<SqlJournal>, s: &Setup, p: Proposal, now: i64) -> Executed {
    ex.run_batch(&[p], &s.policy(), now)
        .await
        .expect("batch")
        .pop()
        .expect("one result")
}

async fn verdict(ex: &Executor<SqlJournal>, id: i64) -> String {
    ex.journal()
        .get(id)
        .await
        .expect("journal")
        .expect("row")
        .entry
        .verdict
}

/// A runbook can no longer target a namespace outside `--namespace`, nor a
/// namespace or resource labelled hands-off: each is refused, journaled with
/// its guard, and the target is untouched.
#[tokio::test]
async fn out_of_scope_and_hands_off_targets_are_refused_and_journaled() {
    let s = setup("gate-scope").await;
    let ex = s.executor(Mode::Auto).await;
    let inside = s.gateway(&s.ns, "gw").await;
    let outside = s.gateway(&s.other, "gw").await;

    let out = run(&ex, &s, scale(&outside, 5), NOW).await;
    assert_eq!(out.outcome, outcome::REFUSED, "{}", out.detail);
    assert_eq!(verdict(&ex, out.id).await, "scope");
    assert!(
        out.detail.contains("not in the agent's scope"),
        "{}",
        out.detail
    );
    assert_eq!(
        s.replicas(&outside).await,
        2,
        "nothing written outside the scope"
    );

    s.label_gateway(&inside, Some("true")).await;
    let off = run(&ex, &s, scale(&inside, 5), NOW + 10).await;
    assert_eq!(off.outcome, outcome::REFUSED, "{}", off.detail);
    assert_eq!(verdict(&ex, off.id).await, "hands_off");
    s.label_gateway(&inside, None).await;

    s.label_namespace(&s.ns, Some("true")).await;
    let off = run(&ex, &s, scale(&inside, 5), NOW + 20).await;
    assert_eq!(verdict(&ex, off.id).await, "hands_off");
    assert!(off.detail.contains(&s.ns), "{}", off.detail);
    assert_eq!(s.replicas(&inside).await, 2);
    s.label_namespace(&s.ns, Some("false")).await;

    let ok = run(&ex, &s, scale(&inside, 5), NOW + 30).await;
    assert_eq!(ok.outcome, outcome::APPLIED, "{}", ok.detail);
    assert_eq!(s.replicas(&inside).await, 5);
}

/// The kill switch turned on while a batch is being sent stops the batch's
/// next write: the policy is read again for every send, not once a cycle.
#[tokio::test]
async fn the_policy_is_read_again_for_every_send_of_a_batch() {
    let s = setup("gate-batch").await;
    let first = s.gateway(&s.ns, "first").await;
    let second = s.gateway(&s.ns, "second").await;
    let (client, ns) = (s.client.clone(), s.ns.clone());
    let flipped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook_flipped = flipped.clone();
    // Between reading the first target and patching it, an SRE turns the
    // kill switch on.
    let ex = s
        .executor(Mode::Auto)
        .await
        .with_before_write(Arc::new(move |_attempt| {
            let (client, ns, flipped) = (client.clone(), ns.clone(), hook_flipped.clone());
            Box::pin(async move {
                if !flipped.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    support::set_kill_switch(&client, &ns, true).await;
                }
            })
        }));
    let done = ex
        .run_batch(&[scale(&first, 3), scale(&second, 3)], &s.policy(), NOW)
        .await
        .expect("batch");
    // The first was admitted before the switch went on.
    assert_eq!(done[0].outcome, outcome::APPLIED, "{}", done[0].detail);
    assert_eq!(done[1].outcome, outcome::REFUSED, "{}", done[1].detail);
    assert!(
        done[1].detail.contains("kill_switch") && done[1].detail.contains("at send"),
        "{}",
        done[1].detail
    );
    assert_eq!(
        s.replicas(&second).await,
        2,
        "nothing sent after the switch"
    );
}

/// An approval hours after the recommendation meets the scope and the
/// policy of that moment: a hands-off label or a change freeze added since
/// holds it (it stays pending), and it goes through once they are gone.
#[tokio::test]
async fn an_approval_is_judged_with_the_labels_and_freezes_of_its_send() {
    let s = setup("gate-approve").await;
    let gw = s.gateway(&s.ns, "gw").await;
    let ex = s.executor(Mode::Recommend).await;
    let mut p = scale(&gw, 4);
    p.mode = Mode::Recommend;
    let rec = run(&ex, &s, p, NOW).await;
    assert_eq!(rec.outcome, outcome::RECOMMENDED, "{}", rec.detail);

    s.label_gateway(&gw, Some("true")).await;
    let err = ex
        .approve(rec.id, "alice", &s.policy(), NOW + 3600)
        .await
        .expect_err("hands-off since the recommendation");
    assert!(err.to_string().contains("hands_off"), "{err}");
    s.label_gateway(&gw, None).await;

    let freeze = json!({"spec": {"changeFreezes": [{
        "start": "2020-01-01T00:00:00Z", "end": "2030-01-01T00:00:00Z", "reason": "year-end freeze"}]}});
    let policies = Api::<autopilot::crd::AutopilotPolicy>::namespaced(s.client.clone(), &s.ns);
    policies
        .patch("autopilot", &PatchParams::default(), &Patch::Merge(freeze))
        .await
        .expect("freeze");
    let err = ex
        .approve(rec.id, "alice", &s.policy(), NOW + 3700)
        .await
        .expect_err("frozen");
    assert!(
        err.to_string().contains("change_freeze") && err.to_string().contains("year-end freeze"),
        "{err}"
    );
    assert_eq!(s.replicas(&gw).await, 2);

    policies
        .patch(
            "autopilot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"changeFreezes": []}})),
        )
        .await
        .expect("thaw");
    let done = ex
        .approve(rec.id, "alice", &s.policy(), NOW + 3800)
        .await
        .expect("approved");
    assert_eq!(done.outcome, outcome::APPLIED, "{}", done.detail);
    assert_eq!(s.replicas(&gw).await, 4);
}

/// The policy kind's schema rejects what the agent must never read: a
/// typo'd field (kubectl's strict field validation), a negative cooldown, a
/// freeze that ends before it starts. A policy the agent cannot use (a
/// maintenance schedule that does not parse) refuses every write.
#[tokio::test]
async fn a_bad_policy_is_rejected_by_the_api_server_or_refuses_every_write() {
    let s = setup("gate-policy").await;
    let policies = Api::<autopilot::crd::AutopilotPolicy>::namespaced(s.client.clone(), &s.ns);
    let strict = PatchParams {
        field_validation: Some(kube::api::ValidationDirective::Strict),
        ..Default::default()
    };
    for (bad, why) in [
        (json!({"spec": {"killSwich": true}}), "unknown field"),
        (
            json!({"spec": {"cooldownSeconds": -5}}),
            "should be greater than or equal to 0",
        ),
        (
            json!({"spec": {"changeFreezes": [{"start": "2026-12-02T00:00:00Z", "end": "2026-12-01T00:00:00Z"}]}}),
            "end must be after start",
        ),
    ] {
        let err = policies
            .patch("autopilot", &strict, &Patch::Merge(bad.clone()))
            .await
            .expect_err("rejected");
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }

    policies
        .patch(
            "autopilot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"maintenanceWindows": [{"schedule": "every saturday", "durationSeconds": 60}]}})),
        )
        .await
        .expect("a schedule the schema cannot judge");
    let ex = s.executor(Mode::Auto).await;
    let gw = s.gateway(&s.ns, "gw").await;
    let out = run(&ex, &s, scale(&gw, 3), NOW).await;
    assert_eq!(out.outcome, outcome::REFUSED, "{}", out.detail);
    assert_eq!(verdict(&ex, out.id).await, "policy");
    assert!(
        out.detail.contains("maintenanceWindows[0].schedule"),
        "{}",
        out.detail
    );
    assert_eq!(s.replicas(&gw).await, 2);
}

/// A switchover goes only to an instance whose lag the agent observed
/// within the limit, whatever lag the runbook claims.
#[tokio::test]
async fn a_switchover_is_judged_on_the_lag_the_agent_observed() {
    let s = setup("gate-lag").await;
    autopilot::act::apply_crds(&s.client, &support::fixture_crds())
        .await
        .expect("fixture CRDs");
    let pg: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster",
        "metadata": {"name": "pg"}, "spec": {"instances": 3},
    }))
    .expect("cluster");
    let ar = autopilot::act::action::kind_info("Cluster")
        .expect("kind")
        .api_resource();
    let clusters = Api::<kube::api::DynamicObject>::namespaced_with(s.client.clone(), &s.ns, &ar);
    clusters
        .create(&PostParams::default(), &pg)
        .await
        .expect("create cluster");
    clusters
        .patch_status(
            "pg",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"currentPrimary": "pg-1", "targetPrimary": "pg-1",
                "phase": "Cluster in healthy state", "instancesStatus": {"healthy": ["pg-1", "pg-2", "pg-3"]}}})),
        )
        .await
        .expect("status");
    let target = ComponentId {
        kind: "Cluster".into(),
        namespace: s.ns.clone(),
        name: "pg".into(),
    };
    let switchover = |claimed: f64| {
        let mut intent = Intent::new(Action::Switchover {
            target: target.clone(),
            instance: "pg-2".into(),
            lag_seconds: claimed,
        });
        intent.runbook = "cnpg-switchover".into();
        Proposal {
            intent,
            runbook_hash: "0".repeat(64),
            runbook_editor: None,
            trigger: "finding".into(),
            evidence: json!([]),
            mode: Mode::Auto,
            mode_note: None,
        }
    };
    let observed = |lag: f64| Observed {
        replica_lag_seconds: [(target.clone(), [("pg-2".to_string(), lag)].into())].into(),
    };
    // The runbook claims 0.1 s; the agent saw 30 s.
    let ex = s
        .executor(Mode::Auto)
        .await
        .with_observer(Observer::Fixed(observed(30.0)));
    let out = run(&ex, &s, switchover(0.1), NOW).await;
    assert_eq!(out.outcome, outcome::REFUSED, "{}", out.detail);
    assert!(
        out.detail.contains("lags 30s as observed"),
        "{}",
        out.detail
    );
    // Nothing observed: no switchover.
    let blind = s.executor(Mode::Auto).await;
    let out = run(&blind, &s, switchover(0.1), NOW + 10).await;
    assert!(
        out.detail.contains("no observed replication lag"),
        "{}",
        out.detail
    );
    let status = clusters.get_status("pg").await.expect("status");
    assert_eq!(status.data["status"]["targetPrimary"], "pg-1");
    // Observed within the limit: it goes.
    let ex = s
        .executor(Mode::Auto)
        .await
        .with_observer(Observer::Fixed(observed(0.5)));
    let out = run(&ex, &s, switchover(0.1), NOW + 20).await;
    assert_eq!(out.outcome, outcome::APPLIED, "{}", out.detail);
}

/// A new journal (a rescheduled pod on a fresh volume, a restore) never
/// takes another journal's tag on an object for one of its own actions:
/// actions are tagged with an ID no journal repeats, not a row number that
/// every journal starts again at 1.
#[tokio::test]
async fn a_new_journal_never_takes_an_old_tag_for_its_own() {
    let s = setup("gate-uid").await;
    let gw = s.gateway(&s.ns, "gw").await;
    // The first journal's action #1 is applied and tagged on the gateway.
    let old = s.executor(Mode::Auto).await;
    let first = run(&old, &s, scale(&gw, 5), NOW).await;
    assert_eq!((first.id, first.outcome.as_str()), (1, outcome::APPLIED));

    // A second journal, on a new file: its #1 is an intent a crash left
    // unsent (scale to 6).
    let dir = tempfile::tempdir().expect("tempdir");
    let fresh = SqlJournal::connect(&format!("sqlite:{}", dir.path().join("j.db").display()))
        .await
        .expect("journal");
    let ex = Executor::new(
        s.client.clone(),
        fresh,
        Metrics::register(&prometheus::Registry::new()).expect("metrics"),
    )
    .with_mode(Mode::Auto)
    .with_scope(Scope::namespaces([s.ns.clone()]));
    let action = Action::ScaleReplicas {
        target: gw.clone(),
        replicas: 6,
    };
    let obj = serde_json::to_value(
        Api::<autopilot::crd::PaymentGateway>::namespaced(s.client.clone(), &s.ns)
            .get("gw")
            .await
            .expect("gateway"),
    )
    .expect("json");
    let planned = autopilot::act::action::plan_action(&action, &obj, NOW + 10).expect("plan");
    let mut intent = Intent::new(action.clone());
    intent.runbook = "gate-test".into();
    let id = ex
        .journal()
        .record_intent(&autopilot::act::journal::NewEntry {
            uid: autopilot::act::journal::new_uid(),
            at: NOW + 10,
            runbook: intent.runbook.clone(),
            runbook_hash: "0".repeat(64),
            runbook_editor: None,
            trigger: "finding".into(),
            evidence: json!([]),
            action: serde_json::to_value(&intent).expect("json"),
            action_kind: action.name().into(),
            target: gw.to_string(),
            namespace: s.ns.clone(),
            patch: Some(serde_json::to_value(&planned.change).expect("json")),
            inverse: planned
                .inverse
                .as_ref()
                .map(|c| serde_json::to_value(c).expect("json")),
            disruptive: planned.disruptive,
            mode: "auto".into(),
            verdict: "allowed".into(),
            verdict_detail: String::new(),
            verify: None,
            undo_of: None,
        })
        .await
        .expect("intent");
    assert_eq!(id, 1, "the same row number as the old journal's action");

    let done = ex
        .resolve_unresolved(&s.policy(), NOW + 20)
        .await
        .expect("resolve");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].outcome, outcome::APPLIED, "{}", done[0].detail);
    assert!(
        done[0].detail.contains("sent after a restart"),
        "sent, not mistaken for the old journal's #1: {}",
        done[0].detail
    );
    assert_eq!(s.replicas(&gw).await, 6);
}
