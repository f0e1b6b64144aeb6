//! Shared fixture for the integration tests: one real control plane per test
//! binary (started on first use, stopped by its reaper when the binary exits,
//! also after a panic), our CRDs installed, a fresh namespace per test.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod audit;
pub mod chart;
pub mod kubelet;
pub mod objects;

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use autopilot::testenv::{ControlPlane, Options};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, Client, api::PostParams};

static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane of this test binary, with the payments.io CRDs
/// installed. `options` of the first caller win; a binary should always ask
/// for the same.
pub fn control_plane(options: Options) -> &'static ControlPlane {
    let started = CONTROL_PLANE.get_or_init(|| {
        // Started on a runtime of its own: each #[tokio::test] runtime is
        // dropped when its test ends, and nothing shared may depend on one.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let cp = ControlPlane::start(options)
                    .await
                    .map_err(|e| format!("{e}"))?;
                let client = cp.client().await.map_err(|e| e.to_string())?;
                autopilot::act::apply_crds(&client, &autopilot::crd::crds())
                    .await
                    .map_err(|e| format!("installing our CRDs: {e}"))?;
                Ok(cp)
            })
        })
        .join()
        .unwrap_or_else(|_| Err("control plane start-up panicked".into()))
    });
    match started {
        Ok(cp) => cp,
        Err(e) => panic!("the test control plane did not start: {e}"),
    }
}

/// A client for this test's runtime and a namespace no other test uses.
pub async fn client_and_namespace(cp: &ControlPlane, prefix: &str) -> (Client, String) {
    let client = cp
        .client()
        .await
        .expect("client for the test control plane");
    let name = ControlPlane::unique_name(prefix);
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"autopilot.test/ephemeral": "true"}}
    }))
    .expect("namespace object");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the test namespace");
    (client, name)
}

/// Reads a multi-document YAML string into JSON values, skipping empty documents.
pub fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).expect("valid YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with the
/// last state `check` described through `last`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The text of the agent's /metrics on loopback port `port`.
pub async fn agent_metrics(port: u16) -> Result<String, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())
}

/// The value of one sample line (`name{labels}` as printed) of the agent's
/// /metrics on loopback port `port`.
pub async fn agent_metric(port: u16, series: &str) -> Result<f64, String> {
    agent_metrics(port)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("{series} not in /metrics"))
}

/// The sum of counter `name` over the series of `registry` that carry every
/// label of `labels`.
pub fn counter(registry: &prometheus::Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            })
        })
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// The payments controllers running in this test's runtime, watching one
/// namespace, with a short progress interval. Stopped when dropped.
pub struct Controllers {
    task: tokio::task::JoinHandle<()>,
    pub gate: Arc<autopilot::reconcile::SharedVerdicts>,
    pub registry: prometheus::Registry,
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn start_controllers(client: Client, namespace: &str) -> Controllers {
    start_controllers_with(client, namespace, None)
}

/// The controllers, with their automatic rollbacks gated by the guard
/// policy in `policy_namespace` (as the agent runs them).
pub fn start_controllers_with(
    client: Client,
    namespace: &str,
    policy_namespace: Option<&str>,
) -> Controllers {
    start_controllers_in(
        client,
        autopilot::scope::Scope::namespaces([namespace]),
        policy_namespace,
    )
}

/// The controllers of the namespaces of `scope` (one watch per namespace).
pub fn start_controllers_in(
    client: Client,
    scope: autopilot::scope::Scope,
    policy_namespace: Option<&str>,
) -> Controllers {
    use autopilot::reconcile::{Context, Metrics, Settings, SharedVerdicts};
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).expect("metrics");
    let gate = Arc::new(SharedVerdicts::default());
    let settings = Settings {
        scope,
        progress_interval: Duration::from_millis(500),
        resync_interval: Duration::from_secs(30),
        concurrency: 4,
        policy_namespace: policy_namespace.map(str::to_string),
    };
    let ctx = Arc::new(Context::new(client, settings, gate.clone(), metrics));
    Controllers {
        task: tokio::spawn(autopilot::reconcile::run(ctx)),
        gate,
        registry,
    }
}

/// Every CustomResourceDefinition in the `.yaml` files of `dir`, files in
/// name order; other documents are skipped.
pub fn crds_in(dir: &Path) -> Vec<CustomResourceDefinition> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        for doc in yaml_documents(&text) {
            if doc["kind"] == "CustomResourceDefinition" {
                crds.push(
                    serde_json::from_value(doc)
                        .unwrap_or_else(|e| panic!("{}: not a CRD: {e}", f.display())),
                );
            }
        }
    }
    crds
}

/// The minimal CRDs of the third-party kinds, in `tests/fixtures/crds`.
pub fn fixture_crds() -> Vec<CustomResourceDefinition> {
    crds_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds"))
}

/// The real upstream CRDs: `$AUTOPILOT_UPSTREAM_CRDS`, else `../shared/crds`;
/// `None` when that folder is absent.
pub fn upstream_crds_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("AUTOPILOT_UPSTREAM_CRDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/crds")));
    dir.is_dir().then_some(dir)
}

/// The guard policy with the defaults, as the chart installs it in
/// the agent's namespace: the agent sends nothing without one.
pub async fn install_default_policy(client: &Client, namespace: &str) {
    install_policy(client, namespace, serde_json::json!({})).await;
}

/// Turns the kill switch of the `AutopilotPolicy` in `namespace` on or
/// off, as an SRE would (a merge patch of its spec).
pub async fn set_kill_switch(client: &Client, namespace: &str, on: bool) {
    Api::<autopilot::crd::AutopilotPolicy>::namespaced(client.clone(), namespace)
        .patch(
            autopilot::act::guard::POLICY_NAME,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"killSwitch": on}})),
        )
        .await
        .expect("kill switch flipped");
}

/// Installs the `AutopilotPolicy` with `spec` in `namespace`.
pub async fn install_policy(client: &Client, namespace: &str, spec: serde_json::Value) {
    let p: autopilot::crd::AutopilotPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "payments.io/v1", "kind": "AutopilotPolicy",
        "metadata": {"name": autopilot::act::guard::POLICY_NAME}, "spec": spec,
    }))
    .expect("policy");
    Api::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &p)
        .await
        .expect("create the guard policy");
}

/// Applies the chart's RBAC and admission policies among `docs` (as
/// `chart::render` returns them) with the admin client, creating the
/// namespaces its Roles live in when missing.
pub async fn apply_chart_rbac(admin: &Client, docs: &[serde_json::Value]) {
    use kube::api::DynamicObject;
    let kinds: Vec<&str> = chart::RBAC_KINDS
        .iter()
        .chain(chart::ADMISSION_KINDS.iter())
        .copied()
        .collect();
    for doc in chart::of_kinds(docs, &kinds) {
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            let namespace: Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))
                    .expect("namespace object");
            match Api::<Namespace>::all(admin.clone())
                .create(&PostParams::default(), &namespace)
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => panic!("create namespace {ns}: {e}"),
            }
        }
        let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("manifest");
        autopilot::act::apply_manifest(admin, &obj, "default")
            .await
            .unwrap_or_else(|e| panic!("apply {} {}: {e}", doc["kind"], doc["metadata"]["name"]));
    }
}

/// A client that acts as the service account `namespace`/`name`: the admin
/// impersonates it, so the API server authorizes (and admits) every request
/// as it would the account's own token, groups included.
pub async fn as_service_account(cp: &ControlPlane, namespace: &str, name: &str) -> Client {
    let mut config = cp.config().await.expect("admin config");
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
    Client::try_from(config).expect("impersonating client")
}

/// The annotation that names who changed the agent's runbooks or policy
/// (the chart's `-changed-by` admission policy holds it to the sender).
pub const CHANGED_BY: &str = autopilot::crd::CHANGED_BY_ANNOTATION;

/// The user `client` acts as, as the API server says (a SelfSubjectReview,
/// what `kubectl auth whoami` prints).
pub async fn whoami(client: &Client) -> String {
    autopilot::act::whoami(client)
        .await
        .expect("SelfSubjectReview")
}

/// A client that acts as the user `name` (no groups but those the API
/// server adds): the admin impersonates it.
pub async fn as_user(cp: &ControlPlane, name: &str) -> Client {
    let mut config = cp.config().await.expect("admin config");
    config.auth_info.impersonate = Some(name.to_string());
    Client::try_from(config).expect("impersonating client")
}

/// A valid `Recommendation` named `name` (as JSON), as the agent would
/// create it: a digest of 64 hex digits, a change and its target.
pub fn recommendation(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "payments.io/v1", "kind": "Recommendation",
        "metadata": {"name": name},
        "spec": {
            "actionId": "01JDZ7Q8W3V6X2K9M4N5P6R7S8",
            "runbook": "gateway-latency",
            "runbookHash": "h1",
            "action": "scale_replicas",
            "target": {"apiVersion": "payments.io/v1", "kind": "PaymentGateway",
                "name": "checkout", "uid": "00000000-0000-0000-0000-000000000001"},
            "reason": "p99 latency over budget",
            "change": {"type": "merge", "patch": {"spec": {"replicas": 5}}},
            "digest": "0".repeat(64),
        }
    })
}

/// An `Approval` `name` (as JSON) of the Recommendation `recommendation`,
/// naming `approver`.
pub fn approval(name: &str, recommendation: &str, approver: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "payments.io/v1", "kind": "Approval",
        "metadata": {"name": name},
        "spec": {
            "recommendation": recommendation,
            "digest": "0".repeat(64),
            "approver": approver,
            "decision": "Approve",
            "reason": "reviewed the change",
        }
    })
}

/// The release the agent-as-service-account tests install once per test
/// binary: the chart with its default values (all namespaces).
pub const AGENT_RELEASE: &str = "autopilot";
pub const AGENT_NAMESPACE: &str = "autopilot";

static AGENT_RBAC: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// A client with the agent's identity and exactly the chart's rights: the
/// chart rendered by Helm (default values, release `autopilot` in namespace
/// `autopilot`), its RBAC and admission policies applied once per test
/// binary. For the executor and controllers in tests; set fixtures up with
/// the admin client.
pub async fn agent_client(cp: &ControlPlane) -> Client {
    AGENT_RBAC
        .get_or_init(|| async {
            let admin = cp.client().await.expect("admin client");
            let docs = chart::render(AGENT_RELEASE, AGENT_NAMESPACE, &[]);
            apply_chart_rbac(&admin, &docs).await;
        })
        .await;
    as_service_account(cp, AGENT_NAMESPACE, AGENT_RELEASE).await
}

/// A client acting as a new service account `sa` of `home`, granted `rules`
/// (RBAC `rules` entries as JSON) by a Role in each of `namespaces` and
/// nothing else, through impersonation by the admin client. Returns once the
/// authorizer applies the Roles.
pub async fn service_account_with_roles(
    cp: &autopilot::testenv::ControlPlane,
    admin: &Client,
    home: &str,
    sa: &str,
    namespaces: &[&str],
    rules: &[serde_json::Value],
) -> Client {
    use k8s_openapi::api::{
        authorization::v1::SelfSubjectAccessReview,
        core::v1::ServiceAccount,
        rbac::v1::{Role, RoleBinding},
    };
    use serde_json::json;
    fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).expect("RBAC object")
    }
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(admin.clone(), home)
        .create(&pp, &typed(json!({"metadata": {"name": sa}})))
        .await
        .expect("create the service account");
    for ns in namespaces {
        Api::<Role>::namespaced(admin.clone(), ns)
            .create(
                &pp,
                &typed(json!({"metadata": {"name": sa}, "rules": rules})),
            )
            .await
            .expect("create the Role");
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .create(
                &pp,
                &typed(json!({
                    "metadata": {"name": sa},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
                    "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": home}],
                })),
            )
            .await
            .expect("create the RoleBinding");
    }
    let mut config = cp.config().await.expect("config");
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{home}:{sa}"));
    let client = Client::try_from(config).expect("impersonating client");
    let first = &rules[0];
    for ns in namespaces {
        let review: SelfSubjectAccessReview = typed(json!({"spec": {"resourceAttributes": {
            "namespace": ns, "verb": "list",
            "group": first["apiGroups"][0], "resource": first["resources"][0],
        }}}));
        wait_for(
            "the Role to be in force",
            Duration::from_secs(30),
            || async {
                let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
                    .create(&pp, &review)
                    .await
                    .map_err(|e| e.to_string())?;
                answer
                    .status
                    .is_some_and(|s| s.allowed)
                    .then_some(())
                    .ok_or_else(|| format!("{ns}: not yet allowed"))
            },
        )
        .await;
    }
    client
}

/// A scale of `target` to `replicas` proposed by the runbook
/// `autoscale-gateway` (a fixed version) in `mode`, as the loop hands a
/// runbook's intent to the executor.
pub fn scale_proposal(
    target: &autopilot::detect::ComponentId,
    replicas: i64,
    mode: autopilot::decide::Mode,
) -> autopilot::act::executor::Proposal {
    let mut intent = autopilot::decide::Intent::new(autopilot::decide::Action::ScaleReplicas {
        target: target.clone(),
        replicas,
    });
    intent.runbook = "autoscale-gateway".into();
    intent.reason = "p99 latency above objective".into();
    autopilot::act::executor::Proposal {
        intent,
        runbook_hash: "a".repeat(64),
        runbook_editor: None,
        trigger: "finding".into(),
        evidence: serde_json::json!([]),
        mode,
        mode_note: None,
    }
}
