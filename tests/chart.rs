//! The chart as Helm renders and installs it: each supported values
//! combination renders (and an unsupported one is refused), and
//! `helm install --wait` on the real control plane brings the agent's pod to
//! Ready (the fake kubelet runs it) with every object of the release in place.

mod support;

use std::{process::Command, time::Duration};

use autopilot::testenv::{ControlPlane, Options};
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apps::v1::Deployment,
    core::v1::{PersistentVolume, PersistentVolumeClaim, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{Api, api::PostParams};
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

/// The journal's volume in the rendered Deployment.
fn journal_volume(docs: &[Value]) -> Value {
    let deployment = &chart::of_kinds(docs, &["Deployment"])[0];
    deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "journal")
        .cloned()
        .expect("the journal volume")
}

fn helm_template_fails(set: &[&str]) -> String {
    let mut cmd = Command::new(chart::helm());
    cmd.args(["template", "autopilot"]).arg(chart::chart_dir());
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().expect("run helm template");
    assert!(!out.status.success(), "helm template {set:?} rendered");
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    // On a PersistentVolumeClaim, and one pod at a time on the SQLite file.
    assert_eq!(
        journal_volume(&docs)["persistentVolumeClaim"]["claimName"],
        "autopilot-journal"
    );
    let pvc = chart::of_kinds(&docs, &["PersistentVolumeClaim"]);
    assert_eq!(pvc.len(), 1, "{pvc:?}");
    assert_eq!(pvc[0]["metadata"]["name"], "autopilot-journal");
    assert_eq!(pvc[0]["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert!(
        pvc[0]["spec"].get("storageClassName").is_none(),
        "the default class"
    );
    let deployment = &chart::of_kinds(&docs, &["Deployment"])[0];
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["fsGroup"], 65532,
        "the volume is writable by the agent's user"
    );
    for kind in chart::RBAC_KINDS
        .iter()
        .chain(chart::ADMISSION_KINDS.iter())
    {
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
    // No SQLite file to share: no claim, and a rolling update.
    assert!(chart::of_kinds(&docs, &["PersistentVolumeClaim"]).is_empty());
    assert!(deployment["spec"].get("strategy").is_none());
}

#[test]
fn the_journal_can_live_on_an_existing_claim_a_storage_class_or_an_empty_dir() {
    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[("persistence.existingClaim", "journal-2024")],
    );
    assert!(chart::of_kinds(&docs, &["PersistentVolumeClaim"]).is_empty());
    assert_eq!(
        journal_volume(&docs)["persistentVolumeClaim"]["claimName"],
        "journal-2024"
    );
    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[
            ("persistence.storageClass", "fast"),
            ("persistence.size", "5Gi"),
        ],
    );
    let pvc = &chart::of_kinds(&docs, &["PersistentVolumeClaim"])[0];
    assert_eq!(pvc["spec"]["storageClassName"], "fast");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5Gi");
    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[("persistence.enabled", "false")],
    );
    assert!(chart::of_kinds(&docs, &["PersistentVolumeClaim"]).is_empty());
    assert!(journal_volume(&docs)["emptyDir"].is_object());
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

/// A scoped install: the namespaces as one flag, a Role and RoleBinding in
/// each, and a ClusterRole that only reads namespaces.
#[test]
fn watch_namespaces_render_as_the_agents_flag_and_a_role_in_each() {
    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[(
            "watchNamespaces",
            &chart::scoped_to(&["payments", "ledger"]),
        )],
    );
    assert!(has_arg(&container(&docs), "--namespace=payments,ledger"));
    for kind in ["Role", "RoleBinding"] {
        let mut namespaces: Vec<_> = chart::of_kinds(&docs, &[kind])
            .iter()
            .map(|r| {
                r["metadata"]["namespace"]
                    .as_str()
                    .expect("namespace")
                    .to_string()
            })
            .collect();
        namespaces.sort();
        assert_eq!(namespaces, ["autopilot", "ledger", "payments"], "{kind}");
    }
    let cluster_role = &chart::of_kinds(&docs, &["ClusterRole"])[0];
    assert_eq!(
        cluster_role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}])
    );
}

/// The chart's old single `watchNamespace` still scopes an upgraded install;
/// with the new list too, or a value that is no list of names, the chart
/// refuses to render rather than guess.
#[test]
fn the_old_watch_namespace_still_scopes_and_bad_values_are_refused() {
    let docs = chart::render("autopilot", "autopilot", &[("watchNamespace", "payments")]);
    assert!(has_arg(&container(&docs), "--namespace=payments"));
    assert!(
        chart::of_kinds(&docs, &["Role"])
            .iter()
            .any(|r| r["metadata"]["namespace"] == "payments")
    );
    let both = helm_template_fails(&["watchNamespace=payments", "watchNamespaces={ledger}"]);
    assert!(both.contains("set only watchNamespaces"), "{both}");
    let string = helm_template_fails(&["watchNamespaces=payments"]);
    assert!(string.contains("must be a list"), "{string}");
    let bad = helm_template_fails(&["watchNamespaces={Payments_1}"]);
    assert!(bad.contains("is not a namespace name"), "{bad}");
}

/// `helm install --wait` with the default values: the Deployment rolls out
/// under the real kube-controller-manager and the release's objects exist.
#[tokio::test]
async fn helm_installs_the_chart_and_waits_for_the_agent_to_be_ready() {
    let (client, ns) = support::client_and_namespace(cp(), "helm").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    // Cluster-scoped objects carry the release name: one release per namespace.
    let release = format!("autopilot-{ns}");
    // The journal's claim needs a volume: one made for it, as an
    // administrator pre-binds a volume (no provisioner runs here); the real
    // PersistentVolume controller binds the two.
    let claim = format!("{release}-journal");
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("journal-{ns}")},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": format!("/var/lib/autopilot-test/{ns}")},
            "claimRef": {"namespace": ns, "name": claim},
        }
    }))
    .expect("PersistentVolume");
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create the journal's PersistentVolume");
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
    let own = format!("{release}-self");
    installed(Api::<Role>::namespaced(client.clone(), &ns), &own).await;
    installed(Api::<RoleBinding>::namespaced(client.clone(), &ns), &own).await;
    for policy in ["owned-objects", "own-lease"] {
        let name = format!("{release}-{policy}");
        installed(Api::<ValidatingAdmissionPolicy>::all(client.clone()), &name).await;
        installed(
            Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()),
            &name,
        )
        .await;
    }
    // --wait waited for the claim too: the journal is on the volume.
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .get(&claim)
        .await
        .expect("the journal's claim");
    assert_eq!(
        pvc.spec.and_then(|s| s.volume_name),
        Some(format!("journal-{ns}"))
    );
    assert_eq!(pvc.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    assert_eq!(
        deployment
            .spec
            .and_then(|s| s.strategy)
            .and_then(|s| s.type_)
            .as_deref(),
        Some("Recreate")
    );
}

async fn installed<K>(api: Api<K>, name: &str)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("{} {name} installed: {e}", K::kind(&())));
}
