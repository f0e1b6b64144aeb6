//! The chart as Helm renders and installs it: each supported values
//! combination renders (and an unsupported one is refused), and
//! `helm install --wait` on the real control plane brings the agent's pod to
//! Ready (the fake kubelet runs it) with every object of the release in place.

mod support;

use std::{process::Command, time::Duration};

use autopilot::testenv::{ControlPlane, Options};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::Api;
use serde_json::Value;
use support::chart;

fn cp() -> &'static ControlPlane {
    support::control_plane(Options {
        controller_manager: true,
    })
}

/// The agent container of the rendered Deployment.
fn container(docs: &[Value]) -> Value {
    let deployments = chart::of_kinds(docs, &["Deployment"]);
    assert_eq!(deployments.len(), 1, "one Deployment: {deployments:?}");
    deployments[0]["spec"]["template"]["spec"]["containers"][0].clone()
}

fn has_arg(container: &Value, arg: &str) -> bool {
    container["args"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == arg))
}

#[test]
fn the_default_values_render_one_replica_with_a_local_journal() {
    let docs = chart::render("autopilot", "autopilot", &[]);
    let c = container(&docs);
    assert!(
        !c["args"]
            .as_array()
            .expect("args")
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.starts_with("--namespace=")))
    );
    let journal = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "AUTOPILOT_DATABASE_URL")
        .cloned()
        .expect("AUTOPILOT_DATABASE_URL");
    assert_eq!(journal["value"], "/var/lib/autopilot/journal.db");
    for kind in chart::RBAC_KINDS {
        assert!(
            !chart::of_kinds(&docs, &[kind]).is_empty(),
            "the chart renders a {kind}"
        );
    }
}

#[test]
fn two_replicas_render_with_a_postgresql_journal() {
    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[
            ("replicas", "2"),
            ("database.urlSecret.name", "autopilot-db"),
        ],
    );
    let deployment = &chart::of_kinds(&docs, &["Deployment"])[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let journal = container(&docs)["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "AUTOPILOT_DATABASE_URL")
        .cloned()
        .expect("AUTOPILOT_DATABASE_URL");
    assert_eq!(
        journal["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "autopilot-db", "key": "url"})
    );
}

/// Two replicas on two emptyDir SQLite files would be two journals: the chart
/// refuses to render.
#[test]
fn two_replicas_without_a_shared_journal_are_refused() {
    let out = Command::new(chart::helm())
        .args(["template", "autopilot"])
        .arg(chart::chart_dir())
        .args(["--set", "replicas=2"])
        .output()
        .expect("run helm template");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a shared journal"), "{stderr}");
}

#[test]
fn a_watch_namespace_renders_as_the_agents_namespace_flag() {
    let docs = chart::render("autopilot", "autopilot", &[("watchNamespace", "payments")]);
    assert!(has_arg(&container(&docs), "--namespace=payments"));
}

/// `helm install --wait` with the default values: the Deployment rolls out
/// under the real kube-controller-manager and the release's objects exist.
#[tokio::test]
async fn helm_installs_the_chart_and_waits_for_the_agent_to_be_ready() {
    let (client, ns) = support::client_and_namespace(cp(), "helm").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    // Cluster-scoped objects carry the release name: one release per namespace.
    let release = format!("autopilot-{ns}");
    let mut install = Command::new(chart::helm());
    install
        .args(["install", &release])
        .arg(chart::chart_dir())
        .args(["--namespace", &ns, "--wait", "--timeout", "120s"])
        .arg("--kubeconfig")
        .arg(cp().kubeconfig())
        // Helm's cache and config stay out of the user's home.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("autopilot-helm"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("autopilot-helm"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("autopilot-helm"),
        );
    // Blocking: on a thread of its own, so the fake kubelet keeps running the pod.
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::task::spawn_blocking(move || install.output()),
    )
    .await
    .expect("helm install --wait returns")
    .expect("helm install thread")
    .expect("run helm install");
    assert!(
        out.status.success(),
        "helm install failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get(&release)
        .await
        .expect("the release's Deployment");
    assert_eq!(
        deployment.status.and_then(|s| s.ready_replicas),
        Some(1),
        "--wait returned with the agent's pod Ready"
    );
    installed(Api::<Service>::namespaced(client.clone(), &ns), &release).await;
    installed(
        Api::<ServiceAccount>::namespaced(client.clone(), &ns),
        &release,
    )
    .await;
    installed(Api::<ClusterRole>::all(client.clone()), &release).await;
    installed(Api::<ClusterRoleBinding>::all(client.clone()), &release).await;
    let leader = format!("{release}-leader");
    installed(Api::<Role>::namespaced(client.clone(), &ns), &leader).await;
    installed(Api::<RoleBinding>::namespaced(client.clone(), &ns), &leader).await;
}

async fn installed<K>(api: Api<K>, name: &str)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("{} {name} installed: {e}", K::kind(&())));
}
