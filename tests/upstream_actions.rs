//! Every patch the agent makes on a third-party kind, validated by a
//! server-side dry run (`dryRun=All`) against the real upstream CRDs in
//! `../shared/crds` (or `$AUTOPILOT_UPSTREAM_CRDS`), then applied for real.
//! Skipped, saying why, when that folder is absent: tests/actions.rs covers
//! the same actions on the minimal fixture CRDs. The executor runs as the
//! chart's service account (`support::agent_client`).

mod support;

use autopilot::{
    act::{
        action::kind_info,
        executor::{Executor, Metrics, Proposal},
        guard::Policy,
        journal::{Journal, outcome},
    },
    decide::{Action, Intent, Mode},
    detect::ComponentId,
    store::SqlJournal,
};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    discovery::ApiResource,
};
use serde_json::{Value, json};

#[tokio::test]
async fn every_third_party_patch_passes_a_server_side_dry_run_against_the_upstream_crds() {
    let Some(dir) = support::upstream_crds_dir() else {
        eprintln!(
            "SKIPPED upstream_actions: no ../shared/crds (set AUTOPILOT_UPSTREAM_CRDS); tests/actions.rs covers these actions on the fixture CRDs"
        );
        return;
    };
    let cp = support::control_plane(Default::default());
    let admin = cp.client().await.expect("client");
    let crds = support::crds_in(&dir);
    autopilot::act::apply_crds(&admin, &crds)
        .await
        .expect("upstream CRDs Established");

    let (client, ns) = support::client_and_namespace(cp, "upstream-act").await;
    let create = |kind: &'static str, name: &'static str, spec: Value, status: Option<Value>| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            let k = kind_info(kind).expect("kind");
            let ar = ApiResource {
                group: k.group.clone(),
                version: k.version.clone(),
                api_version: k.api_version(),
                kind: kind.into(),
                plural: k.plural,
            };
            let api = Api::<DynamicObject>::namespaced_with(client, &ns, &ar);
            let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": ar.api_version, "kind": kind, "metadata": {"name": name}, "spec": spec})).expect("object");
            api.create(&PostParams::default(), &obj)
                .await
                .unwrap_or_else(|e| panic!("upstream {kind}: {e}"));
            if let Some(status) = status {
                api.patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
                .unwrap_or_else(|e| panic!("upstream {kind} status: {e}"));
            }
            ComponentId {
                kind: kind.into(),
                namespace: ns,
                name: name.into(),
            }
        }
    };

    let pg = create(
        "Cluster",
        "payments-db",
        json!({"instances": 3, "storage": {"size": "1Gi"}, "backup": {"volumeSnapshot": {"className": "csi-snapshots"}},
               "postgresql": {"parameters": {"work_mem": "4MB", "max_connections": "100"}}}),
        Some(json!({"currentPrimary": "payments-db-1", "targetPrimary": "payments-db-1", "phase": "Cluster in healthy state",
                    "instancesStatus": {"healthy": ["payments-db-1", "payments-db-2", "payments-db-3"]}})),
    )
    .await;
    let pool = create(
        "KafkaNodePool",
        "brokers",
        json!({"replicas": 3, "roles": ["broker"], "storage": {"type": "ephemeral"}}),
        None,
    )
    .await;
    let cert = create(
        "Certificate",
        "gateway-tls",
        json!({"secretName": "gateway-tls", "dnsNames": ["pay.example.com"], "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}}),
        Some(json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "valid", "lastTransitionTime": "2027-01-01T00:00:00Z"}]})),
    )
    .await;
    let es = create("ExternalSecret", "db-credentials", json!({"refreshInterval": "1h", "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"}, "target": {"name": "db-credentials"}}), None).await;
    let vs = create(
        "VirtualService",
        "gateway",
        json!({"hosts": ["payment-gateway"], "http": [{"route": [
        {"destination": {"host": "payment-gateway", "subset": "stable"}, "weight": 90},
        {"destination": {"host": "payment-gateway", "subset": "canary"}, "weight": 10}]}]}),
        None,
    )
    .await;
    let app = create("Application", "payments", json!({"project": "default",
        "source": {"repoURL": "https://git.example.com/payments.git", "path": "deploy", "targetRevision": "main"},
        "destination": {"server": "https://kubernetes.default.svc", "namespace": "payments"},
        "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}}), None).await;

    let actions = vec![
        Action::SetPostgresParameters {
            target: pg.clone(),
            parameters: [
                ("work_mem".to_string(), "8MB".to_string()),
                ("max_connections".to_string(), "200".to_string()),
            ]
            .into(),
        },
        Action::Switchover {
            target: pg.clone(),
            instance: "payments-db-2".into(),
            lag_seconds: 0.1,
        },
        Action::RollingRestart { target: pg.clone() },
        Action::Backup { target: pg.clone() },
        Action::ScaleReplicas {
            target: pool,
            replicas: 4,
        },
        Action::RenewCertificate { target: cert },
        Action::RefreshExternalSecret { target: es },
        Action::ShiftTraffic {
            target: vs,
            route: 0,
            weights: [("stable".to_string(), 100), ("canary".to_string(), 0)].into(),
        },
        Action::PauseSync { target: app },
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = SqlJournal::connect(&format!("sqlite:{}", dir.path().join("j.db").display()))
        .await
        .expect("journal");
    // The executor as the agent: the chart's service account, its RBAC
    // rendered by Helm and applied (fixtures above use the admin client).
    let ex = Executor::new(
        support::agent_client(cp).await,
        journal,
        Metrics::register(&prometheus::Registry::new()).expect("metrics"),
    )
    .with_mode(autopilot::decide::Mode::Auto)
    .with_observer(autopilot::act::executor::Observer::Fixed(
        autopilot::act::guard::Observed {
            replica_lag_seconds: [(pg.clone(), [("payments-db-2".to_string(), 0.1)].into())].into(),
        },
    ));
    let policy = Policy {
        cooldown_seconds: 0,
        max_relative_change: 10.0,
        runbook_per_hour: 100,
        global_per_hour: 100,
        disruptive_per_hour: 100,
        disruptive_per_namespace_per_hour: 100,
        ..Policy::default()
    };
    let now = 1_800_000_000;
    for (mode, expected) in [
        (Mode::Recommend, outcome::RECOMMENDED),
        (Mode::Auto, outcome::APPLIED),
    ] {
        for (i, action) in actions.iter().enumerate() {
            // Separate batches: one action per target per cycle.
            let mut intent = Intent::new(action.clone());
            intent.runbook = "upstream".into();
            let p = Proposal {
                intent,
                runbook_hash: String::new(),
                runbook_editor: None,
                trigger: "test".into(),
                evidence: json!([]),
                mode,
                mode_note: None,
            };
            let at = now + i as i64 + if mode == Mode::Auto { 100 } else { 0 };
            let out = ex
                .run_batch(&[p], &policy, at)
                .await
                .expect("batch")
                .remove(0);
            let row = ex.journal().get(out.id).await.expect("get").expect("row");
            assert_eq!(
                out.outcome,
                expected,
                "{} ({mode:?}) on the upstream CRD: {} / dry run {:?}",
                action.name(),
                out.detail,
                row.dry_run
            );
            if mode == Mode::Recommend {
                assert_eq!(row.dry_run.as_deref(), Some("ok"), "{}", action.name());
            }
        }
    }
}
