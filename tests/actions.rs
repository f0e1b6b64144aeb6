//! Every action kind against the real API server with the payments.io and
//! third-party fixture CRDs installed: it patches its target, its inverse
//! restores it, recommend mode validates with a server-side dry run, guards
//! refuse and say which, and the journal (a real SQLite file), the Events
//! and the counter agree. Restart resolution of in-flight intents too. The
//! executor runs as the agent: the chart's service account with the chart's
//! RBAC and admission policies (`support::agent_client`).

mod support;

use std::collections::BTreeMap;

use autopilot::{
    act::{
        action::{ACTION_ID_ANNOTATION, kind_info, plan_action},
        executor::{Executor, Metrics, Observer, Proposal},
        guard::{Observed, Policy},
        journal::{Journal, NewEntry, outcome},
        verify::Verification,
    },
    decide::{Action, Expect, Intent, Mode, Verify},
    detect::ComponentId,
    store::SqlJournal,
};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
    discovery::ApiResource,
};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const NOW: i64 = 1_800_000_000;

static FIXTURES: OnceCell<()> = OnceCell::const_new();

async fn setup(
    prefix: &str,
) -> (
    Client,
    String,
    Executor<SqlJournal>,
    tempfile::TempDir,
    prometheus::Registry,
) {
    let cp = support::control_plane(Default::default());
    let (client, ns) = support::client_and_namespace(cp, prefix).await;
    FIXTURES
        .get_or_init(|| async {
            let admin = cp.client().await.expect("client");
            autopilot::act::apply_crds(&admin, &support::fixture_crds())
                .await
                .expect("fixture CRDs");
        })
        .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = SqlJournal::connect(&format!("sqlite:{}", dir.path().join("j.db").display()))
        .await
        .expect("journal");
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).expect("metrics");
    // The executor runs as the agent (the chart's service account, its RBAC
    // rendered by Helm and applied); fixtures are set up with the admin.
    let agent = support::agent_client(cp).await;
    (
        client,
        ns,
        Executor::new(agent, journal, metrics).with_mode(Mode::Auto),
        dir,
        registry,
    )
}

fn ar(kind: &str) -> ApiResource {
    let k = kind_info(kind).expect("known kind");
    ApiResource {
        group: k.group.clone(),
        version: k.version.clone(),
        api_version: k.api_version(),
        kind: k.kind,
        plural: k.plural,
    }
}

fn api(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ar(kind))
}

async fn create(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
    spec: Value,
    status: Option<Value>,
) -> ComponentId {
    let k = kind_info(kind).expect("kind");
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": k.api_version(), "kind": kind, "metadata": {"name": name}, "spec": spec
    }))
    .expect("object");
    let a = api(client, ns, kind);
    a.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
    if let Some(status) = status {
        a.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap_or_else(|e| panic!("status of {kind}: {e}"));
    }
    ComponentId {
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

async fn get(client: &Client, t: &ComponentId) -> Value {
    serde_json::to_value(
        api(client, &t.namespace, &t.kind)
            .get(&t.name)
            .await
            .expect("get"),
    )
    .expect("json")
}

fn permissive() -> Policy {
    Policy {
        cooldown_seconds: 0,
        runbook_per_hour: 1000,
        global_per_hour: 1000,
        disruptive_per_namespace_per_hour: 1000,
        disruptive_per_hour: 1000,
        max_relative_change: 1000.0,
        ..Policy::default()
    }
}

fn proposal(action: Action, mode: Mode) -> Proposal {
    let mut intent = Intent::new(action);
    intent.runbook = "test-runbook".into();
    intent.reason = "integration test".into();
    Proposal {
        intent,
        runbook_hash: "0".repeat(64),
        runbook_editor: None,
        trigger: "finding".into(),
        evidence: json!([]),
        mode,
        mode_note: None,
    }
}

fn scale(target: &ComponentId, replicas: i64) -> Action {
    Action::ScaleReplicas {
        target: target.clone(),
        replicas,
    }
}

async fn run_one(
    ex: &Executor<SqlJournal>,
    action: Action,
    mode: Mode,
    policy: &Policy,
    now: i64,
) -> autopilot::act::executor::Executed {
    let mut out = ex
        .run_batch(&[proposal(action, mode)], policy, now)
        .await
        .expect("batch");
    out.pop().expect("one result")
}

/// The journal ids of the pending recommendations of one action kind.
async fn pending_of(ex: &Executor<SqlJournal>, action_kind: &str) -> Vec<i64> {
    ex.journal()
        .list(10, true)
        .await
        .expect("pending")
        .iter()
        .filter(|e| e.entry.action_kind == action_kind)
        .map(|e| e.id)
        .collect()
}

/// Events in `ns` naming journal entry `id` (their note opens with
/// `autopilot #<id> `).
async fn events_for(
    client: &Client,
    ns: &str,
    id: i64,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let named = format!("autopilot #{id} ");
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.note.as_deref().is_some_and(|n| n.starts_with(&named)))
        .collect()
}

fn counter(registry: &prometheus::Registry, action: &str, out: &str) -> u64 {
    support::counter(
        registry,
        "autopilot_act_actions_total",
        &[("action", action), ("outcome", out)],
    ) as u64
}

/// A clock that only moves forward across the actions of a test binary.
static CLOCK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(NOW);

/// Applies `action`, checks `changed` on the object, undoes it and checks the
/// inspected part is back as it was.
async fn apply_and_undo(
    client: &Client,
    ex: &Executor<SqlJournal>,
    action: Action,
    inspect: &[&str],
    changed: Value,
) {
    let target = action.target().clone();
    let before = get(client, &target).await;
    let pick = |v: &Value| inspect.iter().fold(v.clone(), |v, p| v[*p].clone());
    let now = CLOCK.fetch_add(10, std::sync::atomic::Ordering::Relaxed);
    let done = run_one(ex, action.clone(), Mode::Auto, &permissive(), now).await;
    assert_eq!(
        done.outcome,
        outcome::APPLIED,
        "{action:?}: {}",
        done.detail
    );
    let after = get(client, &target).await;
    assert_eq!(pick(&after), changed, "{action:?} changed {inspect:?}");
    let row = ex.journal().get(done.id).await.expect("get").expect("row");
    assert_eq!(
        after["metadata"]["annotations"][ACTION_ID_ANNOTATION], row.entry.uid,
        "the object carries the action ID"
    );
    let undone = ex
        .undo(done.id, "test", &permissive(), now + 1)
        .await
        .expect("undo");
    assert_eq!(
        undone.outcome,
        outcome::APPLIED,
        "undo of {action:?}: {}",
        undone.detail
    );
    let restored = get(client, &target).await;
    assert_eq!(
        pick(&restored),
        pick(&before),
        "inverse of {action:?} restores {inspect:?}"
    );
    let original = ex
        .journal()
        .get(done.id)
        .await
        .expect("get")
        .expect("entry");
    assert_eq!(original.outcome.as_deref(), Some(outcome::UNDONE));
    let undo_entry = ex
        .journal()
        .get(undone.id)
        .await
        .expect("get")
        .expect("entry");
    assert_eq!(undo_entry.entry.undo_of, Some(done.id));
}

#[tokio::test]
async fn reversible_actions_patch_their_target_and_the_inverse_restores_it() {
    let (client, ns, ex, _dir, registry) = setup("act-rev").await;
    let gw = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw",
        json!({"version": "2.5.0", "replicas": 3}),
        Some(json!({"lastGoodVersion": "2.4.0"})),
    )
    .await;
    apply_and_undo(&client, &ex, scale(&gw, 5), &["spec", "replicas"], json!(5)).await;
    apply_and_undo(
        &client,
        &ex,
        Action::SetResources {
            target: gw.clone(),
            resources: json!({"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}),
        },
        &["spec", "resources"],
        json!({"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}),
    )
    .await;
    apply_and_undo(
        &client,
        &ex,
        Action::Rollback {
            target: gw.clone(),
            to_version: "2.4.0".into(),
        },
        &["spec", "version"],
        json!("2.4.0"),
    )
    .await;

    let hpa = create(&client, &ns, "PaymentGateway", "gw-hpa", json!({"version": "2.5.0", "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 4}}), None).await;
    apply_and_undo(
        &client,
        &ex,
        Action::ScaleAutoscaling {
            target: hpa,
            min_replicas: 3,
            max_replicas: 8,
        },
        &["spec", "autoscaling", "maxReplicas"],
        json!(8),
    )
    .await;

    let pool = create(
        &client,
        &ns,
        "KafkaNodePool",
        "brokers",
        json!({"replicas": 3, "roles": ["broker"]}),
        None,
    )
    .await;
    apply_and_undo(
        &client,
        &ex,
        scale(&pool, 4),
        &["spec", "replicas"],
        json!(4),
    )
    .await;

    let pg = create(
        &client,
        &ns,
        "Cluster",
        "pg",
        json!({"instances": 3, "postgresql": {"parameters": {"work_mem": "4MB"}}}),
        None,
    )
    .await;
    apply_and_undo(
        &client,
        &ex,
        Action::SetPostgresParameters {
            target: pg,
            parameters: [
                ("work_mem".to_string(), "8MB".to_string()),
                ("max_connections".to_string(), "200".to_string()),
            ]
            .into(),
        },
        &["spec", "postgresql", "parameters"],
        json!({"work_mem": "8MB", "max_connections": "200"}),
    )
    .await;

    let vs = create(
        &client,
        &ns,
        "VirtualService",
        "gw-vs",
        json!({"hosts": ["gw"], "http": [{"route": [
        {"destination": {"host": "gw", "subset": "stable"}, "weight": 80},
        {"destination": {"host": "gw", "subset": "canary"}, "weight": 20}]}]}),
        None,
    )
    .await;
    apply_and_undo(
        &client,
        &ex,
        Action::ShiftTraffic { target: vs, route: 0, weights: [("stable".to_string(), 100), ("canary".to_string(), 0)].into() },
        &["spec", "http"],
        json!([{"route": [{"destination": {"host": "gw", "subset": "stable"}, "weight": 100}, {"destination": {"host": "gw", "subset": "canary"}, "weight": 0}]}]),
    )
    .await;

    let app = create(&client, &ns, "Application", "payments", json!({"project": "default", "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}}), None).await;
    apply_and_undo(
        &client,
        &ex,
        Action::PauseSync { target: app },
        &["spec", "syncPolicy"],
        json!({}),
    )
    .await;

    let rec = create(
        &client,
        &ns,
        "RedisEnterpriseCluster",
        "rec",
        json!({"nodes": 3}),
        None,
    )
    .await;
    apply_and_undo(
        &client,
        &ex,
        Action::ScaleRedis {
            target: rec,
            nodes: Some(5),
            memory_size: None,
            shard_count: None,
        },
        &["spec", "nodes"],
        json!(5),
    )
    .await;
    let redb = create(
        &client,
        &ns,
        "RedisEnterpriseDatabase",
        "idem",
        json!({"memorySize": "1GB", "shardCount": 1}),
        None,
    )
    .await;
    apply_and_undo(
        &client,
        &ex,
        Action::ScaleRedis {
            target: redb,
            nodes: None,
            memory_size: Some("2GB".into()),
            shard_count: Some(2),
        },
        &["spec", "memorySize"],
        json!("2GB"),
    )
    .await;

    // Journal rows, Events and the counter agree: one applied row, one
    // Event and one increment per write (11 actions, 11 undos).
    let rows = ex.journal().list(100, false).await.expect("list");
    let applied_rows = rows
        .iter()
        .filter(|e| e.outcome.as_deref() == Some(outcome::APPLIED))
        .count();
    let undone_rows = rows
        .iter()
        .filter(|e| e.outcome.as_deref() == Some(outcome::UNDONE))
        .count();
    assert_eq!(undone_rows, applied_rows);
    let total: u64 = [
        "scale_replicas",
        "set_resources",
        "rollback",
        "scale_autoscaling",
        "set_postgres_parameters",
        "shift_traffic",
        "pause_sync",
        "scale_redis",
    ]
    .iter()
    .map(|a| counter(&registry, a, outcome::APPLIED))
    .sum();
    assert_eq!(
        total as usize,
        applied_rows + undone_rows,
        "each row counted once when it was applied"
    );
    for row in &rows {
        let events = events_for(&client, &ns, row.id).await;
        assert!(!events.is_empty(), "entry {} has an Event", row.id);
        assert!(
            events[0]
                .note
                .as_deref()
                .is_some_and(|n| n.contains(&format!("#{}", row.id)))
        );
    }
}

#[tokio::test]
async fn one_shot_actions_take_effect() {
    let (client, ns, ex, _dir, _registry) = setup("act-once").await;
    let p = permissive();
    // The switchover guard reads the lag the agent observed (Prometheus in
    // the agent; tests/gate.rs covers the refusals).
    let pg_id = ComponentId {
        kind: "Cluster".into(),
        namespace: ns.clone(),
        name: "pg".into(),
    };
    let ex = ex.with_observer(Observer::Fixed(Observed {
        replica_lag_seconds: [(pg_id, [("pg-2".to_string(), 0.2)].into())].into(),
    }));
    let pg = create(&client, &ns, "Cluster", "pg", json!({"instances": 3, "backup": {"barmanObjectStore": {"destinationPath": "s3://b"}}}),
        Some(json!({"currentPrimary": "pg-1", "targetPrimary": "pg-1", "phase": "Cluster in healthy state",
                    "instancesStatus": {"healthy": ["pg-1", "pg-2", "pg-3"]}}))).await;

    let sw = run_one(
        &ex,
        Action::Switchover {
            target: pg.clone(),
            instance: "pg-2".into(),
            lag_seconds: 0.2,
        },
        Mode::Auto,
        &p,
        NOW,
    )
    .await;
    assert_eq!(sw.outcome, outcome::APPLIED, "{}", sw.detail);
    let status = get(&client, &pg).await["status"].clone();
    assert_eq!(status["targetPrimary"], "pg-2");
    assert_eq!(status["phase"], "Switchover in progress");
    assert_eq!(
        status["currentPrimary"], "pg-1",
        "the operator moves currentPrimary, not us"
    );

    // A second switchover while one is in progress is refused at planning.
    let again = run_one(
        &ex,
        Action::Switchover {
            target: pg.clone(),
            instance: "pg-3".into(),
            lag_seconds: 0.2,
        },
        Mode::Auto,
        &p,
        NOW + 5,
    )
    .await;
    assert_eq!(again.outcome, outcome::FAILED);
    assert!(
        again.detail.contains("already in progress"),
        "{}",
        again.detail
    );

    let restart = run_one(
        &ex,
        Action::RollingRestart { target: pg.clone() },
        Mode::Auto,
        &p,
        NOW + 10,
    )
    .await;
    assert_eq!(restart.outcome, outcome::APPLIED);
    assert_eq!(
        get(&client, &pg).await["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2027-01-15T08:00:10Z"
    );

    let backup = run_one(
        &ex,
        Action::Backup { target: pg.clone() },
        Mode::Auto,
        &p,
        NOW + 20,
    )
    .await;
    assert_eq!(backup.outcome, outcome::APPLIED, "{}", backup.detail);
    let b = api(&client, &ns, "Backup")
        .get(&format!("pg-autopilot-{}", NOW + 20))
        .await
        .expect("backup created");
    let b = serde_json::to_value(b).expect("json");
    assert_eq!(b["spec"]["cluster"]["name"], "pg");
    assert_eq!(b["spec"]["method"], "barmanObjectStore");

    let cert = create(&client, &ns, "Certificate", "api-tls", json!({"secretName": "api-tls", "issuerRef": {"name": "ca"}}),
        Some(json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "ok", "lastTransitionTime": "2027-01-01T00:00:00Z"}]}))).await;
    let renew = run_one(
        &ex,
        Action::RenewCertificate {
            target: cert.clone(),
        },
        Mode::Auto,
        &p,
        NOW,
    )
    .await;
    assert_eq!(renew.outcome, outcome::APPLIED, "{}", renew.detail);
    let conds = get(&client, &cert).await["status"]["conditions"].clone();
    assert!(
        conds.as_array().is_some_and(|c| c
            .iter()
            .any(|c| c["type"] == "Issuing" && c["reason"] == "ManuallyTriggered")),
        "{conds}"
    );
    assert!(
        conds
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready")),
        "Ready kept: {conds}"
    );

    let es = create(
        &client,
        &ns,
        "ExternalSecret",
        "psp-keys",
        json!({"refreshInterval": "1h"}),
        None,
    )
    .await;
    let refresh = run_one(
        &ex,
        Action::RefreshExternalSecret { target: es.clone() },
        Mode::Auto,
        &p,
        NOW,
    )
    .await;
    assert_eq!(refresh.outcome, outcome::APPLIED);
    assert_eq!(
        get(&client, &es).await["metadata"]["annotations"]["force-sync"],
        NOW.to_string()
    );

    // Not undoable: a clear refusal, not a silent no-op.
    let err = ex
        .undo(refresh.id, "test", &permissive(), NOW + 1)
        .await
        .expect_err("no inverse");
    assert!(err.to_string().contains("no inverse"), "{err}");
}

#[tokio::test]
async fn recommend_mode_validates_with_a_server_side_dry_run_and_waits_for_approval() {
    let (client, ns, ex, _dir, _registry) = setup("act-rec").await;
    let p = permissive();
    let gw = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw",
        json!({"version": "2.5.0", "replicas": 3}),
        None,
    )
    .await;
    let rv_before = get(&client, &gw).await["metadata"]["resourceVersion"].clone();

    let rec = run_one(&ex, scale(&gw, 5), Mode::Recommend, &p, NOW).await;
    assert_eq!(rec.outcome, outcome::RECOMMENDED, "{}", rec.detail);
    let row = ex.journal().get(rec.id).await.expect("get").expect("row");
    assert_eq!(row.dry_run.as_deref(), Some("ok"));
    let now_obj = get(&client, &gw).await;
    assert_eq!(
        now_obj["spec"]["replicas"], 3,
        "recommend sends nothing for real"
    );
    assert_eq!(now_obj["metadata"]["resourceVersion"], rv_before);

    // The API server's validation is what judges the patch: 500 > max 200.
    let invalid = run_one(&ex, scale(&gw, 500), Mode::Recommend, &p, NOW).await;
    assert_eq!(invalid.outcome, outcome::FAILED);
    let row = ex
        .journal()
        .get(invalid.id)
        .await
        .expect("get")
        .expect("row");
    assert!(
        row.dry_run
            .as_deref()
            .is_some_and(|d| d.contains("rejected") && d.contains("200")),
        "{:?}",
        row.dry_run
    );

    // Dry-run mode: decided and journaled, nothing sent, not even a dry run.
    let dry = run_one(&ex, scale(&gw, 4), Mode::DryRun, &p, NOW).await;
    assert_eq!(dry.outcome, outcome::DRY_RUN);
    assert_eq!(
        ex.journal()
            .get(dry.id)
            .await
            .expect("get")
            .expect("row")
            .dry_run,
        None
    );

    assert_eq!(ex.journal().list(10, true).await.expect("pending").len(), 1);
    // The guards judge again at approval: under a policy tightened since,
    // 3 → 5 moves too far, and the recommendation stays pending.
    let tightened = Policy {
        max_relative_change: 0.5,
        ..p.clone()
    };
    let err = ex
        .approve(rec.id, "alice", &tightened, NOW + 30)
        .await
        .expect_err("refused by the tightened policy")
        .to_string();
    assert!(
        err.contains("max_change") && err.contains("stays pending"),
        "{err}"
    );
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 3);
    assert_eq!(ex.journal().list(10, true).await.expect("pending").len(), 1);
    // With two actions an hour allowed it is approved: the dry-run decision
    // counts, the recommendation itself does not count against itself.
    let two_an_hour = Policy {
        runbook_per_hour: 2,
        ..p.clone()
    };
    let applied = ex
        .approve(rec.id, "alice", &two_an_hour, NOW + 60)
        .await
        .expect("approve");
    assert_eq!(applied.outcome, outcome::APPLIED, "{}", applied.detail);
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 5);
    let row = ex.journal().get(rec.id).await.expect("get").expect("row");
    assert_eq!(row.approval.as_deref(), Some("approved by alice"));
    assert!(
        ex.approve(rec.id, "bob", &p, NOW + 61).await.is_err(),
        "not twice"
    );

    // A recommendation whose target changed meanwhile is not applied.
    let stale = run_one(&ex, scale(&gw, 7), Mode::Recommend, &p, NOW + 100).await;
    api(&client, &ns, "PaymentGateway")
        .patch(
            "gw",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 6}})),
        )
        .await
        .expect("someone else scales");
    let refused = ex
        .approve(stale.id, "alice", &p, NOW + 160)
        .await
        .expect("approve runs");
    assert_eq!(refused.outcome, outcome::FAILED);
    assert!(
        refused.detail.contains("changed since"),
        "{}",
        refused.detail
    );
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 6);

    let rejected = run_one(&ex, scale(&gw, 8), Mode::Recommend, &p, NOW + 200).await;
    let r = ex
        .reject(rejected.id, "carol", NOW + 210)
        .await
        .expect("reject");
    assert_eq!(r.outcome, outcome::REJECTED);
    assert!(
        ex.approve(rejected.id, "alice", &p, NOW + 220)
            .await
            .is_err()
    );

    // A newer recommendation for the same target supersedes the pending
    // one: the SRE reviews one proposal, on the latest data.
    let older = run_one(&ex, scale(&gw, 7), Mode::Recommend, &p, NOW + 300).await;
    let newer = run_one(&ex, scale(&gw, 8), Mode::Recommend, &p, NOW + 400).await;
    assert_eq!(older.outcome, outcome::RECOMMENDED);
    assert_eq!(newer.outcome, outcome::RECOMMENDED);
    assert_eq!(pending_of(&ex, "scale_replicas").await, vec![newer.id]);
    let row = ex.journal().get(older.id).await.expect("get").expect("row");
    assert_eq!(row.outcome.as_deref(), Some(outcome::ABANDONED));
    assert_eq!(
        row.outcome_detail,
        Some(format!("superseded by recommendation {}", newer.id))
    );
    assert!(
        ex.approve(older.id, "alice", &p, NOW + 410).await.is_err(),
        "a superseded recommendation cannot be approved"
    );
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 6);

    // A renewal proposed again a cycle later is the same renewal, though
    // its change carries the time it was planned at: the pending one
    // stands, so the SRE reviewing it does not see it replaced every cycle.
    let cert = create(&client, &ns, "Certificate", "api-tls", json!({"secretName": "api-tls", "issuerRef": {"name": "ca"}}),
        Some(json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "ok", "lastTransitionTime": "2027-01-01T00:00:00Z"}]}))).await;
    let renew = |at| {
        let action = Action::RenewCertificate {
            target: cert.clone(),
        };
        run_one(&ex, action, Mode::Recommend, &p, at)
    };
    let first = renew(NOW + 500).await;
    assert_eq!(first.outcome, outcome::RECOMMENDED, "{}", first.detail);
    let again = renew(NOW + 530).await;
    assert_eq!(again.outcome, outcome::RECOMMENDED, "{}", again.detail);
    assert_eq!(again.id, first.id, "{}", again.detail);
    assert_eq!(pending_of(&ex, "renew_certificate").await, vec![first.id]);
}

#[tokio::test]
async fn guards_refuse_and_the_journal_names_the_guard() {
    let (client, ns, ex, _dir, registry) = setup("act-guard").await;
    let gw = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw",
        json!({"version": "2.5.0", "replicas": 4}),
        None,
    )
    .await;
    let policy = Policy {
        max_relative_change: 0.5,
        cooldown_seconds: 600,
        ..Policy::default()
    };

    let first = run_one(&ex, scale(&gw, 6), Mode::Auto, &policy, NOW).await;
    assert_eq!(first.outcome, outcome::APPLIED, "{}", first.detail);
    let cooled = run_one(&ex, scale(&gw, 7), Mode::Auto, &policy, NOW + 60).await;
    assert_eq!(cooled.outcome, outcome::REFUSED);
    let row = ex
        .journal()
        .get(cooled.id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.entry.verdict, "cooldown");
    assert!(
        row.entry.patch.is_some(),
        "the refused patch is kept for review"
    );
    // The runbook keeps proposing the same thing through the cooldown: it
    // is refused and counted each time, but journaled (and announced) once.
    let rows_before = ex.journal().list(100, false).await.expect("list").len();
    let again = run_one(&ex, scale(&gw, 7), Mode::Auto, &policy, NOW + 90).await;
    assert_eq!(again.outcome, outcome::REFUSED);
    assert_eq!(again.id, cooled.id, "{}", again.detail);
    assert_eq!(
        ex.journal().list(100, false).await.expect("list").len(),
        rows_before,
        "a repeated refusal adds no row"
    );
    assert_eq!(events_for(&client, &ns, cooled.id).await.len(), 1);

    let capped = run_one(&ex, scale(&gw, 20), Mode::Auto, &policy, NOW + 700).await;
    assert_eq!(capped.outcome, outcome::REFUSED);
    assert_eq!(
        ex.journal()
            .get(capped.id)
            .await
            .expect("get")
            .expect("row")
            .entry
            .verdict,
        "max_change"
    );

    let killed = Policy {
        kill_switch: true,
        ..policy.clone()
    };
    let k = run_one(&ex, scale(&gw, 7), Mode::DryRun, &killed, NOW + 800).await;
    assert_eq!(k.outcome, outcome::REFUSED, "guards apply in dry-run too");
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 6);

    let events = events_for(&client, &ns, k.id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason.as_deref(), Some("ActionRefused"));
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    assert_eq!(counter(&registry, "scale_replicas", outcome::REFUSED), 4);
    assert_eq!(counter(&registry, "scale_replicas", outcome::APPLIED), 1);

    // Never act on missing data: a target that does not exist is a failed
    // plan with a row and a counter, but nothing sent.
    let ghost = ComponentId {
        kind: "PaymentGateway".into(),
        namespace: ns.clone(),
        name: "ghost".into(),
    };
    let g = run_one(&ex, scale(&ghost, 2), Mode::Auto, &policy, NOW + 900).await;
    assert_eq!(g.outcome, outcome::FAILED);
    assert_eq!(
        ex.journal()
            .get(g.id)
            .await
            .expect("get")
            .expect("row")
            .entry
            .verdict,
        "plan_failed"
    );
}

#[tokio::test]
async fn a_restart_resolves_in_flight_intents_without_losing_or_repeating_one() {
    let (client, ns, ex, _dir, _registry) = setup("act-restart").await;
    let gw = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw",
        json!({"version": "2.5.0", "replicas": 3}),
        None,
    )
    .await;
    let ca = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw2",
        json!({"version": "1.0.0", "replicas": 2}),
        None,
    )
    .await;
    let old = create(
        &client,
        &ns,
        "KafkaNodePool",
        "pool",
        json!({"replicas": 3, "roles": ["broker"]}),
        None,
    )
    .await;

    // Crash after the intent was written, before the patch: sent on restart.
    let intent_only = journal_intent(&ex, &client, scale(&gw, 5), NOW).await;
    // Crash after the patch, before the outcome: found applied, not re-sent.
    let sent = journal_intent(&ex, &client, scale(&ca, 4), NOW).await;
    let sent_uid = ex
        .journal()
        .get(sent)
        .await
        .expect("get")
        .expect("row")
        .entry
        .uid;
    api(&client, &ns, "PaymentGateway")
        .patch("gw2", &PatchParams::apply("autopilot"), &Patch::Merge(json!({
            "metadata": {"annotations": {ACTION_ID_ANNOTATION: sent_uid}}, "spec": {"replicas": 4}})))
        .await
        .expect("the patch that made it before the crash");
    let rv_sent = get(&client, &ca).await["metadata"]["resourceVersion"].clone();
    // Crash long ago: too late to act on that decision.
    let stale = journal_intent(&ex, &client, scale(&old, 4), NOW - 3600).await;

    // Crashes in the other modes: nothing is sent for real, the row is finished.
    let gw3 = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw3",
        json!({"version": "2.5.0", "replicas": 3}),
        None,
    )
    .await;
    let rec = journal_entry(&ex, &client, scale(&gw3, 4), NOW, "recommend", "allowed").await;
    let dry = journal_entry(&ex, &client, scale(&gw3, 5), NOW, "dry-run", "allowed").await;
    let refused = journal_entry(&ex, &client, scale(&gw3, 6), NOW, "auto", "cooldown").await;

    let resolved = ex
        .resolve_unresolved(&permissive(), NOW + 30)
        .await
        .expect("resolve");
    let by_id: BTreeMap<i64, String> = resolved.iter().map(|r| (r.id, r.outcome.clone())).collect();
    assert_eq!(by_id[&intent_only], outcome::APPLIED);
    assert_eq!(by_id[&sent], outcome::APPLIED);
    assert_eq!(by_id[&stale], outcome::ABANDONED);
    assert_eq!(by_id[&rec], outcome::RECOMMENDED);
    assert_eq!(
        ex.journal()
            .get(rec)
            .await
            .expect("get")
            .expect("row")
            .dry_run
            .as_deref(),
        Some("ok")
    );
    assert_eq!(by_id[&dry], outcome::DRY_RUN);
    assert_eq!(by_id[&refused], outcome::REFUSED);
    assert_eq!(
        get(&client, &gw3).await["spec"]["replicas"],
        3,
        "none of those sent for real"
    );
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 5);
    assert_eq!(
        get(&client, &ca).await["metadata"]["resourceVersion"],
        rv_sent,
        "not sent twice"
    );
    assert_eq!(get(&client, &old).await["spec"]["replicas"], 3);
    assert!(ex.journal().unresolved().await.expect("u").is_empty());
    assert!(
        ex.resolve_unresolved(&permissive(), NOW + 60)
            .await
            .expect("again")
            .is_empty(),
        "idempotent"
    );
}

/// A resolution after a restart is a write like any other: under the kill
/// switch, or with the agent no longer in auto mode, the interrupted intent
/// is journaled as refused and nothing is sent. Before the gate, both sent.
#[tokio::test]
async fn a_restart_resolution_passes_the_gate() {
    let (client, ns, ex, _dir, _registry) = setup("act-resolve-gate").await;
    let gw = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw",
        json!({"version": "2.5.0", "replicas": 3}),
        None,
    )
    .await;
    let killed = journal_intent(&ex, &client, scale(&gw, 4), NOW).await;
    let stopped = Policy {
        kill_switch: true,
        ..permissive()
    };
    let done = ex
        .resolve_unresolved(&stopped, NOW + 30)
        .await
        .expect("resolve");
    assert_eq!(done.len(), 1);
    assert_eq!(
        (done[0].id, done[0].outcome.as_str()),
        (killed, outcome::REFUSED)
    );
    assert!(done[0].detail.contains("kill_switch"), "{}", done[0].detail);
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 3, "not sent");

    // The agent restarted in dry-run: it changes nothing.
    let dry = journal_intent(&ex, &client, scale(&gw, 5), NOW + 40).await;
    let ex = ex.with_mode(Mode::DryRun);
    let done = ex
        .resolve_unresolved(&permissive(), NOW + 60)
        .await
        .expect("resolve");
    assert_eq!(
        (done[0].id, done[0].outcome.as_str()),
        (dry, outcome::REFUSED)
    );
    assert!(done[0].detail.contains("mode"), "{}", done[0].detail);
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 3, "not sent");
    assert!(ex.journal().unresolved().await.expect("u").is_empty());
}

/// Writes an allowed auto intent as `run_batch` would, without sending it.
async fn journal_intent(
    ex: &Executor<SqlJournal>,
    client: &Client,
    action: Action,
    at: i64,
) -> i64 {
    journal_entry(ex, client, action, at, "auto", "allowed").await
}

/// Writes an intent row as `run_batch` would, in `mode` with `verdict`, and stops.
async fn journal_entry(
    ex: &Executor<SqlJournal>,
    client: &Client,
    action: Action,
    at: i64,
    mode: &str,
    verdict: &str,
) -> i64 {
    let obj = get(client, action.target()).await;
    let planned = plan_action(&action, &obj, at).expect("plan");
    let mut intent = Intent::new(action.clone());
    intent.runbook = "test-runbook".into();
    ex.journal()
        .record_intent(&NewEntry {
            uid: autopilot::act::journal::new_uid(),
            at,
            runbook: intent.runbook.clone(),
            runbook_hash: "0".repeat(64),
            runbook_editor: None,
            trigger: "finding".into(),
            evidence: json!([]),
            action: serde_json::to_value(&intent).expect("json"),
            action_kind: action.name().into(),
            target: autopilot::act::guard::target_key(&action),
            namespace: action.target().namespace.clone(),
            patch: Some(serde_json::to_value(&planned.change).expect("json")),
            inverse: planned
                .inverse
                .as_ref()
                .map(|c| serde_json::to_value(c).expect("json")),
            disruptive: planned.disruptive,
            mode: mode.into(),
            verdict: verdict.into(),
            verdict_detail: String::new(),
            verify: None,
            undo_of: None,
        })
        .await
        .expect("intent")
}

#[tokio::test]
async fn a_failed_verification_undoes_the_action() {
    let (client, ns, ex, _dir, _registry) = setup("act-verify").await;
    let gw = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw",
        json!({"version": "2.5.0", "replicas": 3}),
        None,
    )
    .await;
    let other = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw2",
        json!({"version": "2.5.0", "replicas": 3}),
        None,
    )
    .await;
    let verify = Verify {
        signal: "latency_p99".into(),
        expect: Expect::Below,
        threshold: 0.3,
        within_seconds: 600,
    };
    let mut bad = proposal(scale(&gw, 5), Mode::Auto);
    bad.intent.verify = Some(verify.clone());
    let mut good = proposal(scale(&other, 5), Mode::Auto);
    good.intent.verify = Some(verify);
    let out = ex
        .run_batch(&[bad, good], &permissive(), NOW)
        .await
        .expect("batch");
    assert!(out.iter().all(|e| e.outcome == outcome::APPLIED), "{out:?}");

    let latency = |target: &str, _signal: &str| -> Option<f64> {
        Some(if target.ends_with("/gw") { 0.9 } else { 0.1 })
    };
    // Past the settle delay (20 s of a 600 s window) both are watched;
    // the good one passes once it held for the sustained window (40 s),
    // the bad one waits for its deadline.
    let first = ex
        .verify_applied(&permissive(), NOW + 30, latency)
        .await
        .expect("verify");
    assert!(
        first.iter().all(|(_, v)| *v == Verification::Pending),
        "one sample decides nothing: {first:?}"
    );
    let early = ex
        .verify_applied(&permissive(), NOW + 70, latency)
        .await
        .expect("verify");
    assert_eq!(early.len(), 2);
    assert!(
        early
            .iter()
            .any(|(id, v)| *id == out[1].id && matches!(v, Verification::Passed(_))),
        "{early:?}"
    );
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 5);
    let late = ex
        .verify_applied(&permissive(), NOW + 601, latency)
        .await
        .expect("verify");
    assert_eq!(late.len(), 1, "the passed one is not judged again");
    assert_eq!(
        get(&client, &gw).await["spec"]["replicas"],
        3,
        "undone by its inverse"
    );
    assert_eq!(get(&client, &other).await["spec"]["replicas"], 5);
    let row = ex
        .journal()
        .get(out[0].id)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(row.outcome.as_deref(), Some(outcome::UNDONE));
    assert!(
        row.verification
            .as_deref()
            .is_some_and(|v| v.starts_with("failed") && v.contains("undo #")),
        "{:?}",
        row.verification
    );
}

fn cli(
    cp: &autopilot::testenv::ControlPlane,
    db: &std::path::Path,
    args: &[&str],
) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .arg("actions")
        .args(args)
        .args(["--database-url", &format!("sqlite:{}", db.display())])
        .env("KUBECONFIG", cp.kubeconfig())
        .output()
        .expect("run autopilot");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_actions_cli_reviews_and_undoes_as_its_caller_and_obeys_the_kill_switch() {
    let (client, ns, ex, dir, _registry) = setup("act-cli").await;
    let cp = support::control_plane(Default::default());
    let db = dir.path().join("j.db");
    let gw = create(
        &client,
        &ns,
        "PaymentGateway",
        "gw",
        json!({"version": "2.5.0", "replicas": 3}),
        None,
    )
    .await;
    let rec = run_one(&ex, scale(&gw, 4), Mode::Recommend, &permissive(), NOW).await;
    let id = rec.id.to_string();

    let (ok, list) = cli(cp, &db, &["list", "--pending"]);
    assert!(
        ok && list.contains("scale_replicas") && list.contains("recommended"),
        "{list}"
    );
    // Approved (tests/approvals.rs covers the Approval objects end to end).
    let done = ex
        .approve(rec.id, "alice", &permissive(), NOW + 1)
        .await
        .expect("approve");
    assert_eq!(done.outcome, outcome::APPLIED, "{}", done.detail);
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 4);
    let (ok, show) = cli(cp, &db, &["show", &id]);
    assert!(
        ok && show.contains("approved by alice") && show.contains("dry_run: ok"),
        "{show}"
    );
    // Times for people: RFC 3339 (NOW is 1_800_000_000), not epoch seconds.
    assert!(
        show.contains("at: 2027-01-15T08:00:00Z") && !show.contains("1800000000"),
        "{show}"
    );

    // No policy: nothing is sent (fail closed), not "defaults, kill switch
    // off".
    let undo = ["undo", &id, "--policy-namespace", &ns];
    let (ok, out) = cli(cp, &db, &undo);
    assert!(!ok && out.contains("does not exist"), "{out}");
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 4);

    // The kill switch, flipped the way an SRE would (the policy object),
    // stops the undo: journaled as refused, nothing sent.
    support::install_policy(&client, &ns, json!({"killSwitch": true})).await;
    let (ok, out) = cli(cp, &db, &undo);
    assert!(
        ok && out.contains("refused") && out.contains("kill_switch"),
        "{out}"
    );
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 4);
    support::set_kill_switch(&client, &ns, false).await;

    // An agent in dry-run changes nothing, whoever asks.
    let mut dry = undo.to_vec();
    dry.extend(["--agent-mode", "dry-run"]);
    let (_, out) = cli(cp, &db, &dry);
    assert!(out.contains("mode"), "{out}");
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 4);

    // The undo names the caller as the API server knows them, not a flag.
    let (ok, out) = cli(cp, &db, &undo);
    assert!(ok && out.contains("applied"), "{out}");
    assert_eq!(get(&client, &gw).await["spec"]["replicas"], 3);
    let me = autopilot::act::whoami(&client).await.expect("whoami");
    assert!(!me.is_empty());
    let (ok, show) = cli(cp, &db, &["show", &id]);
    assert!(ok && show.contains(&format!("({me})")), "{me}: {show}");
    let (ok, out) = cli(cp, &db, &["show", "99999"]);
    assert!(!ok && out.contains("no journal entry 99999"), "{out}");
}
