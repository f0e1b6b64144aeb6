//! The chart as Helm renders and installs it: each supported values
//! combination renders (and an unsupported one is refused), and
//! `helm install --wait` on the real control plane brings the agent's pod to
//! Ready (the fake kubelet runs it) with every object of the release in place;
//! then the agent, run locally with the installed Deployment's arguments and
//! the release's service account's token, leads and acts within its rights.

mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use autopilot::{
    crd::{AutopilotPolicy, PaymentGateway},
    testenv::{ControlPlane, Options},
};
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apps::v1::Deployment,
    authentication::v1::TokenRequest,
    coordination::v1::Lease,
    core::v1::{
        ConfigMap, EnvVar, PersistentVolume, PersistentVolumeClaim, Service, ServiceAccount,
    },
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use kube::{Api, Client, api::PostParams};
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
    let cluster_role = chart::of_kinds(&docs, &["ClusterRole"])
        .into_iter()
        .find(|r| r["metadata"]["name"] == "autopilot")
        .expect("the agent's ClusterRole");
    assert_eq!(cluster_role["rules"], scoped_cluster_rules("autopilot"));
}

/// What a scoped install's ClusterRole holds: reads of namespaces, who the
/// agent is (a SelfSubjectReview), and the approvals policy and its binding
/// by name. Nothing that changes anything.
fn scoped_cluster_rules(release: &str) -> Value {
    serde_json::json!([
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
        {"apiGroups": ["admissionregistration.k8s.io"],
         "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
         "resourceNames": [format!("{release}-approvals")], "verbs": ["get"]},
    ])
}

/// The env var of the agent container named `name`, if set.
fn env_value(container: &Value, name: &str) -> Option<Value> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e["value"].clone())
}

/// With the admission policies, the agent is told which one holds Approvals
/// to their senders; the chart's policy names its installer when told
/// (`changedBy`), and nobody otherwise.
#[test]
fn the_agent_is_told_its_approvals_policy_and_the_policy_names_its_installer() {
    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[("changedBy", "alice@example.com")],
    );
    assert_eq!(
        env_value(&container(&docs), "AUTOPILOT_APPROVAL_POLICY"),
        Some(serde_json::json!("autopilot-approvals"))
    );
    let policies: Vec<_> = chart::of_kinds(&docs, &["ValidatingAdmissionPolicy"])
        .iter()
        .map(|p| p["metadata"]["name"].clone())
        .collect();
    for name in ["autopilot-approvals", "autopilot-changed-by"] {
        assert!(policies.contains(&serde_json::json!(name)), "{policies:?}");
    }
    let policy = &chart::of_kinds(&docs, &["AutopilotPolicy"])[0];
    assert_eq!(
        policy["metadata"]["annotations"],
        serde_json::json!({"autopilot.payments.io/changed-by": "alice@example.com"})
    );
    let docs = chart::render("autopilot", "autopilot", &[]);
    let policy = &chart::of_kinds(&docs, &["AutopilotPolicy"])[0];
    assert!(policy["metadata"].get("annotations").is_none(), "{policy}");
    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[("admissionPolicy.enabled", "false")],
    );
    assert_eq!(
        env_value(&container(&docs), "AUTOPILOT_APPROVAL_POLICY"),
        None
    );
    assert!(chart::of_kinds(&docs, &["ValidatingAdmissionPolicy"]).is_empty());
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
/// under the real kube-controller-manager and the release's objects exist;
/// the agent, started as the installed Deployment says with the release's
/// identity, leads and acts without a Forbidden.
#[tokio::test]
async fn helm_install_then_the_agent_leads_and_acts_as_its_service_account() {
    let _one_agent = ONE_AGENT.lock().await;
    let (client, ns) = support::client_and_namespace(cp(), "helm").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let release = helm_install(&client, &ns, &[]).await;
    let claim = format!("{release}-journal");
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
    installed(
        Api::<ClusterRole>::all(client.clone()),
        &format!("{release}-approver"),
    )
    .await;
    for policy in ["owned-objects", "own-lease", "approvals", "changed-by"] {
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
    let (_, watched) = support::client_and_namespace(cp(), "watched").await;
    the_installed_agent_leads_and_acts_with_its_rights(&client, &ns, &release, &watched).await;
}

/// A scoped install (`watchNamespaces`): the agent runs with Roles in its own
/// and the watched namespace and a ClusterRole that only reads namespaces,
/// and still leads, reconciles and cycles without a Forbidden (its watches
/// are per namespace, never cluster-wide).
#[tokio::test]
async fn a_scoped_install_leads_and_acts_with_roles_only() {
    let _one_agent = ONE_AGENT.lock().await;
    let (client, ns) = support::client_and_namespace(cp(), "scoped").await;
    let (_, watched) = support::client_and_namespace(cp(), "watched").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let release = helm_install(
        &client,
        &ns,
        &[format!("watchNamespaces={}", chart::scoped_to(&[&watched]))],
    )
    .await;
    let cluster_role = Api::<ClusterRole>::all(client.clone())
        .get(&release)
        .await
        .expect("the release's ClusterRole");
    let rules = serde_json::to_value(cluster_role.rules).expect("rules");
    assert_eq!(
        rules,
        scoped_cluster_rules(&release),
        "a scoped install changes nothing cluster-wide"
    );
    the_installed_agent_leads_and_acts_with_its_rights(&client, &ns, &release, &watched).await;
}

/// With the admission policies installed, an upgrade goes through only in
/// its installer's name (`--set changedBy=…`, as values.yaml says): without
/// it, or in another user's name, the API server refuses the change of the
/// chart's AutopilotPolicy and helm fails.
#[tokio::test]
async fn an_upgrade_changes_the_policy_only_in_its_installers_name() {
    let (client, ns) = support::client_and_namespace(cp(), "upgrade").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let release = helm_install(&client, &ns, &[]).await;
    let me = support::whoami(&client).await;
    let policies = Api::<AutopilotPolicy>::namespaced(client.clone(), &ns);
    let named = |p: &AutopilotPolicy| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(support::CHANGED_BY).cloned())
    };
    let installed = policies.get("autopilot").await.expect("the chart's policy");
    assert_eq!(
        named(&installed),
        Some(me.clone()),
        "installed in its installer's name"
    );
    // The policy is in force once it refuses the same change as a dry run.
    support::wait_for(
        "the changed-by policy to refuse an unnamed change",
        Duration::from_secs(30),
        || async {
            let params = kube::api::PatchParams {
                dry_run: true,
                ..Default::default()
            };
            let unnamed =
                serde_json::json!({"metadata": {"annotations": {support::CHANGED_BY: null}}});
            match policies
                .patch("autopilot", &params, &kube::api::Patch::Merge(&unnamed))
                .await
            {
                Err(kube::Error::Api(e)) if e.code == 403 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let cooldown = |seconds: u32| format!("policy.cooldownSeconds={seconds}");
    for (set, who) in [
        (vec![cooldown(600)], "without changedBy"),
        (
            vec![cooldown(600), "changedBy=mallory".to_string()],
            "in another user's name",
        ),
    ] {
        let out = helm_upgrade(&ns, &release, &set).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "an upgrade {who} went through");
        assert!(
            stderr.contains(&format!("{release}-changed-by"))
                && stderr.contains("autopilot.payments.io/changed-by"),
            "an upgrade {who}: {stderr}"
        );
    }
    let unchanged = policies.get("autopilot").await.expect("policy");
    assert_eq!(
        unchanged.spec.cooldown_seconds,
        installed.spec.cooldown_seconds
    );
    assert_eq!(named(&unchanged), Some(me.clone()));
    let out = helm_upgrade(&ns, &release, &[cooldown(600), format!("changedBy={me}")]).await;
    assert!(
        out.status.success(),
        "an upgrade in the installer's name: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let upgraded = policies.get("autopilot").await.expect("policy");
    assert_eq!(upgraded.spec.cooldown_seconds, 600);
    assert_eq!(named(&upgraded), Some(me));
}

/// One agent process at a time in this binary: an agent of an all-namespace
/// install would also reconcile the scoped test's gateway, and the scoped
/// agent's work would not be shown to be its own.
static ONE_AGENT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The release's agent, run as a local process with what the cluster holds:
/// the installed Deployment's arguments and environment (paths that exist
/// only in the image swapped for the repo's) and a token of the release's
/// ServiceAccount. It takes the leader Lease, reconciles a PaymentGateway in
/// another namespace and completes a cycle, and never meets a Forbidden: the
/// chart grants what the agent does, as the API server authorizes and admits
/// it (RBAC and the release's admission policies).
/// The release's agent started locally as its Deployment says (arguments,
/// environment, the release's service account's token), its runbooks in the
/// ConfigMap the Deployment names: `runbooks` (`NAME.rhai` → source), or
/// the repo's `rules/` when `None`.
struct Installed {
    agent: AgentProcess,
    work: tempfile::TempDir,
    port: u16,
    pod_name: String,
    lease_name: String,
    runbooks: usize,
}

async fn start_installed_agent(
    client: &Client,
    ns: &str,
    release: &str,
    runbooks: Option<serde_json::Map<String, Value>>,
) -> Installed {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(release)
        .await
        .expect("the release's Deployment");
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("the Deployment's pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some(release));
    let container = pod
        .containers
        .into_iter()
        .find(|c| c.name == "autopilot")
        .expect("the autopilot container");
    let work = tempfile::tempdir().expect("the agent's work dir");
    let port = free_port();
    let pod_name = format!("{release}-local");
    let args = local_args(container.args.as_deref().unwrap_or_default(), port);
    let lease_name = args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .expect("the Deployment names its Lease")
        .to_string();
    // The runbooks in the ConfigMap the Deployment names, as the chart's
    // values tell an operator to create it.
    let rules_configmap = args
        .iter()
        .find_map(|a| a.strip_prefix("--rules-configmap="))
        .expect("the default values read the runbooks from a ConfigMap")
        .to_string();
    let runbooks = create_rules_configmap(client, ns, &rules_configmap, runbooks).await;
    let mut env = local_env(
        container.env.as_deref().unwrap_or_default(),
        ns,
        &pod_name,
        &work.path().join("journal.db"),
    );
    let kubeconfig = work.path().join("kubeconfig");
    write_token_kubeconfig(client, ns, release, &kubeconfig).await;
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    env.push(("RUST_LOG".into(), "info".into()));
    let agent = AgentProcess::start(&args, &env);
    Installed {
        agent,
        work,
        port,
        pod_name,
        lease_name,
        runbooks,
    }
}

async fn the_installed_agent_leads_and_acts_with_its_rights(
    client: &Client,
    ns: &str,
    release: &str,
    watched: &str,
) {
    let Installed {
        agent,
        work: _work,
        port,
        pod_name,
        lease_name,
        runbooks,
    } = start_installed_agent(client, ns, release, None).await;

    // Leading: the Lease the chart names, held by this process.
    support::wait_for("the agent to hold the leader Lease", WAIT, || async {
        agent.check_running()?;
        let lease = Api::<Lease>::namespaced(client.clone(), ns)
            .get_opt(&lease_name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no Lease yet")?;
        match lease.spec.and_then(|s| s.holder_identity) {
            Some(holder) if holder == pod_name => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;

    // Acting: a PaymentGateway in a watched namespace gets its Deployment and
    // a status.
    let _kubelet = support::kubelet::start(client.clone(), watched).await;
    let gateway: PaymentGateway = serde_json::from_value(serde_json::json!({
        "apiVersion": "payments.io/v1", "kind": "PaymentGateway",
        "metadata": {"name": "checkout"},
        "spec": {"version": "1.0.0", "replicas": 1}
    }))
    .expect("PaymentGateway");
    let gateways = Api::<PaymentGateway>::namespaced(client.clone(), watched);
    gateways
        .create(&PostParams::default(), &gateway)
        .await
        .expect("create the PaymentGateway");
    support::wait_for("the gateway's Deployment", WAIT, || async {
        agent.check_running()?;
        Api::<Deployment>::namespaced(client.clone(), watched)
            .get_opt("checkout")
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or_else(|| "no Deployment yet".to_string())
    })
    .await;
    support::wait_for("the gateway's status", WAIT, || async {
        agent.check_running()?;
        let gw = gateways.get("checkout").await.map_err(|e| e.to_string())?;
        match &gw.status {
            Some(s)
                if s.observed_generation.is_some()
                    && s.observed_generation == gw.metadata.generation
                    && !s.conditions.is_empty() =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The loop ran as well: the policy, namespaces and the model kinds read,
    // the runbooks loaded from the release's ConfigMap.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let metric = |name: &'static str| {
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
            Ok::<f64, String>(
                body.lines()
                    .filter(|l| {
                        l.strip_prefix(name)
                            .is_some_and(|rest| rest.starts_with(['{', ' ']))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum(),
            )
        }
    };
    support::wait_for(
        "a cycle of the loop and the runbooks loaded",
        WAIT,
        || async {
            agent.check_running()?;
            let cycles = metric("autopilot_cycles_total").await?;
            let loaded = metric("autopilot_runbooks_loaded").await?;
            if cycles >= 1.0 && loaded == runbooks as f64 {
                Ok(())
            } else {
                Err(format!(
                    "{cycles} cycles, {loaded} of {runbooks} runbooks loaded"
                ))
            }
        },
    )
    .await;

    let log = agent.log().to_lowercase();
    // A refusal by RBAC or admission, however the agent logged it (not a
    // bare "403": timestamps and ports may hold that).
    for refused in ["forbidden", "code: 403", "\"code\":403", "denied"] {
        assert!(
            !log.contains(refused),
            "the agent was refused something ({refused:?} in its log); its log:\n{}",
            agent.log()
        );
    }
}

/// The approval workflow on an installed release in recommend mode: the
/// agent (its service account) publishes a Recommendation; alice, an
/// approver of that namespace through the chart's `approvers`, approves it
/// with `autopilot actions approve` under her own credentials; the agent
/// applies it and journals her name.
#[tokio::test]
async fn an_installed_agent_applies_what_a_named_approver_approved() {
    use autopilot::crd::approval::{Approval, Recommendation};
    let _one_agent = ONE_AGENT.lock().await;
    let (client, ns) = support::client_and_namespace(cp(), "review").await;
    let (_, watched) = support::client_and_namespace(cp(), "payments").await;
    let _kubelet = support::kubelet::start(client.clone(), &ns).await;
    let approver = [
        format!("approvers[0].namespace={watched}"),
        "approvers[0].kind=User".to_string(),
        "approvers[0].name=alice".to_string(),
    ];
    let mut set = vec!["mode=recommend".to_string(), "cycleSeconds=2".to_string()];
    set.extend(approver);
    let release = helm_install(&client, &ns, &set).await;
    let runbook = r#"
fn runbook() { #{ trigger: #{ cron: #{ schedule: "* * * * * *", kind: "PaymentGateway" } } } }
fn decide(ctx) { [scale(ctx.component, 3).reason("peak traffic expected")] }
"#;
    let mut runbooks = serde_json::Map::new();
    runbooks.insert("review-scale.rhai".into(), Value::String(runbook.into()));
    let installed = start_installed_agent(&client, &ns, &release, Some(runbooks)).await;
    let agent = &installed.agent;
    let _watched_kubelet = support::kubelet::start(client.clone(), &watched).await;
    let gateway: PaymentGateway = serde_json::from_value(serde_json::json!({
        "apiVersion": "payments.io/v1", "kind": "PaymentGateway",
        "metadata": {"name": "checkout"},
        "spec": {"version": "1.0.0", "replicas": 2}
    }))
    .expect("PaymentGateway");
    let gateways = Api::<PaymentGateway>::namespaced(client.clone(), &watched);
    gateways
        .create(&PostParams::default(), &gateway)
        .await
        .expect("create the PaymentGateway");

    // Recommended, not applied: a Recommendation waits in the namespace.
    let recs = Api::<Recommendation>::namespaced(client.clone(), &watched);
    let rec = support::wait_for("a pending Recommendation", WAIT, || async {
        agent.check_running()?;
        let list = recs
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .find(|r| r.status.as_ref().is_some_and(|s| s.phase == "Pending"))
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    let rec_name = rec.metadata.name.clone().expect("name");
    assert_eq!(
        gateways.get("checkout").await.expect("get").spec.replicas,
        2
    );
    // The admission policy has had time to load (the agent refuses an
    // Approval made within 10 s of it).
    let vap = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .get(&format!("{release}-approvals"))
        .await
        .expect("the approvals policy");
    let created = vap
        .metadata
        .creation_timestamp
        .expect("created")
        .0
        .as_second();
    let wait = created + 11 - chrono::Utc::now().timestamp();
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }

    // alice's own credentials: the admin's kubeconfig, impersonating her.
    let mut kc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(cp().kubeconfig()).expect("kubeconfig"))
            .expect("kubeconfig yaml");
    for user in kc["users"].as_array_mut().expect("users") {
        user["user"]["as"] = serde_json::json!("alice");
    }
    let alice = installed.work.path().join("alice.kubeconfig");
    std::fs::write(&alice, serde_yaml::to_string(&kc).expect("yaml")).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args([
            "actions",
            "approve",
            &rec_name,
            "-n",
            &watched,
            "--wait-seconds",
            "60",
        ])
        .env("KUBECONFIG", &alice)
        .output()
        .expect("run autopilot actions approve");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("created by alice") && text.contains("Applied"),
        "{text}\nagent log:\n{}",
        agent.log()
    );
    assert_eq!(
        gateways.get("checkout").await.expect("get").spec.replicas,
        3
    );
    let approvals = Api::<Approval>::namespaced(client.clone(), &watched)
        .list(&Default::default())
        .await
        .expect("approvals");
    assert_eq!(approvals.items.len(), 1);
    assert_eq!(approvals.items[0].spec.approver, "alice");
    let rec = recs.get(&rec_name).await.expect("the Recommendation");
    let st = rec.status.expect("status");
    assert_eq!(
        (st.phase.as_str(), st.decided_by.as_deref()),
        ("Applied", Some("alice"))
    );
    // The journal names her.
    let journal = autopilot::store::SqlJournal::connect(&format!(
        "sqlite:{}",
        installed.work.path().join("journal.db").display()
    ))
    .await
    .expect("the agent's journal");
    use autopilot::act::journal::Journal;
    let rows = journal.list(100, false).await.expect("rows");
    let approved: Vec<_> = rows
        .iter()
        .filter_map(|r| r.approval.as_deref())
        .filter(|a| a.starts_with("approved by alice (Approval "))
        .collect();
    assert_eq!(approved.len(), 1, "{rows:#?}");
}

const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// The container's arguments with the image's paths replaced by the repo's
/// and the listener on loopback; each replaced flag must be there, so a
/// renamed flag in the chart fails here rather than go unnoticed.
fn local_args(args: &[String], port: u16) -> Vec<String> {
    let local = [
        ("--models", repo("models")),
        ("--rules", repo("rules")),
        ("--listen", format!("127.0.0.1:{port}")),
    ];
    for (flag, _) in &local {
        assert!(
            args.iter()
                .any(|a| a.split_once('=').map(|(f, _)| f) == Some(*flag)),
            "the Deployment passes {flag}=…: {args:?}"
        );
    }
    args.iter()
        .map(|a| {
            let flag = a.split_once('=').map(|(f, _)| f);
            match local.iter().find(|(f, _)| Some(*f) == flag) {
                Some((f, value)) => format!("{f}={value}"),
                None => a.clone(),
            }
        })
        .collect()
}

/// The container's environment as the kubelet would give it: field
/// references resolved, the journal on a local SQLite file.
fn local_env(env: &[EnvVar], ns: &str, pod_name: &str, journal: &Path) -> Vec<(String, String)> {
    env.iter()
        .map(|e| {
            let value = if e.name == "AUTOPILOT_DATABASE_URL" {
                journal.display().to_string()
            } else if let Some(v) = &e.value {
                v.clone()
            } else {
                let field = e
                    .value_from
                    .as_ref()
                    .and_then(|f| f.field_ref.as_ref())
                    .map(|f| f.field_path.as_str());
                match field {
                    Some("metadata.name") => pod_name.to_string(),
                    Some("metadata.namespace") => ns.to_string(),
                    _ => panic!("no local value for the container's env {e:?}"),
                }
            };
            (e.name.clone(), value)
        })
        .collect()
}

/// The ConfigMap `ns`/`name` holding `runbooks`, or else the repo's
/// (`NAME.rhai` keys, as `kubectl create configmap --from-file=rules/` makes
/// it); their count.
async fn create_rules_configmap(
    client: &Client,
    ns: &str,
    name: &str,
    runbooks: Option<serde_json::Map<String, Value>>,
) -> usize {
    let mut data = runbooks.clone().unwrap_or_default();
    for entry in std::fs::read_dir(repo("rules"))
        .expect("read rules/")
        .filter(|_| runbooks.is_none())
    {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "rhai") {
            let key = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("read a runbook");
            data.insert(key, serde_json::Value::String(text));
        }
    }
    let count = data.len();
    assert!(count > 0, "runbooks in rules/");
    // Named after its editor, as the release's admission policy requires.
    let editor = support::whoami(client).await;
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns,
            "annotations": {support::CHANGED_BY: editor}},
        "data": data,
    }))
    .expect("ConfigMap");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create the rules ConfigMap");
    count
}

/// A kubeconfig for the test API server that authenticates with a token of
/// the ServiceAccount `ns`/`name` (TokenRequest, as the kubelet mounts one).
async fn write_token_kubeconfig(client: &Client, ns: &str, name: &str, path: &Path) {
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": {"audiences": [], "expirationSeconds": 3600}
    }))
    .expect("TokenRequest");
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("a token for the release's ServiceAccount")
        .status
        .expect("the TokenRequest's status")
        .token;
    let admin = kube::config::Kubeconfig::read_from(cp().kubeconfig()).expect("admin kubeconfig");
    let ca = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority.clone())
        .expect("the test cluster's CA file");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {}\n    certificate-authority: {ca}\nusers:\n- name: agent\n  user:\n    token: {token}\ncontexts:\n- name: agent\n  context:\n    cluster: testenv\n    user: agent\ncurrent-context: agent\n",
        cp().server()
    );
    std::fs::write(path, yaml).expect("write the agent's kubeconfig");
}

/// `autopilot run` as a child process, its stderr collected; killed when
/// dropped, and its log printed when that happens during a panic.
struct AgentProcess {
    child: Mutex<Child>,
    stderr: Arc<Mutex<String>>,
}

impl AgentProcess {
    fn start(args: &[String], env: &[(String, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_autopilot"))
            .args(args)
            // Only what the Deployment sets (and the kubeconfig): nothing
            // from the test's environment leaks in.
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start autopilot run");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("the agent's stderr");
        let into = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut log = into.lock().expect("log lock");
                log.push_str(&line);
                log.push('\n');
            }
        });
        AgentProcess {
            child: Mutex::new(child),
            stderr,
        }
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }

    /// An error (for `wait_for`) that ends the wait at once when the agent
    /// has exited: a panic with its status and log.
    fn check_running(&self) -> Result<(), String> {
        let status = self
            .child
            .lock()
            .expect("child lock")
            .try_wait()
            .expect("try_wait");
        if let Some(status) = status {
            panic!("the agent exited ({status}); its log:\n{}", self.log());
        }
        Ok(())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!("--- the agent's log ---\n{}", self.log());
        }
    }
}

/// `helm` against the test control plane, its cache and config out of the
/// user's home.
fn helm_command() -> Command {
    let mut cmd = Command::new(chart::helm());
    let home = std::env::temp_dir().join("autopilot-helm");
    cmd.arg("--kubeconfig")
        .arg(cp().kubeconfig())
        .env("HELM_CACHE_HOME", &home)
        .env("HELM_CONFIG_HOME", &home)
        .env("HELM_DATA_HOME", &home)
        .stdin(Stdio::null());
    cmd
}

/// `helm upgrade` of `release` in `ns` with `set` values (no --wait), and
/// what it printed.
async fn helm_upgrade(ns: &str, release: &str, set: &[String]) -> std::process::Output {
    let mut upgrade = helm_command();
    upgrade
        .args(["upgrade", release])
        .arg(chart::chart_dir())
        .args(["--namespace", ns])
        .args(set.iter().flat_map(|s| ["--set", s.as_str()]));
    tokio::task::spawn_blocking(move || upgrade.output())
        .await
        .expect("helm upgrade thread")
        .expect("run helm upgrade")
}

/// `helm install --wait` of the chart as release `autopilot-<ns>` in `ns`
/// with `set` values, its journal's claim pre-bound to a volume made for it;
/// the release's name.
async fn helm_install(client: &Client, ns: &str, set: &[String]) -> String {
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
    // As the values tell an operator: the installer names themselves.
    let changed_by = format!("changedBy={}", support::whoami(client).await);
    let mut install = helm_command();
    install
        .args(["install", &release])
        .arg(chart::chart_dir())
        .args(["--namespace", ns, "--wait", "--timeout", "120s"])
        .args(["--set", &changed_by])
        .args(set.iter().flat_map(|s| ["--set", s.as_str()]));
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
    release
}

async fn installed<K>(api: Api<K>, name: &str)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get(name)
        .await
        .unwrap_or_else(|e| panic!("{} {name} installed: {e}", K::kind(&())));
}

/// `shards: 3` renders one Deployment per shard, each running `--shard
/// N/3` with its own selector, and lets the agent take exactly the Leases
/// the shards elect under (the names the agent's own flags give them): in
/// the RBAC and in the admission policy that limits which Lease it creates.
/// Without a shared journal the chart refuses to render.
#[test]
fn shards_render_one_deployment_and_one_lease_per_shard() {
    use clap::Parser;
    let docs = chart::render(
        "ap",
        "autopilot",
        &[("shards", "3"), ("database.urlSecret.name", "autopilot-db")],
    );
    let deployments = chart::of_kinds(&docs, &["Deployment"]);
    assert_eq!(deployments.len(), 3);
    let mut leases = Vec::new();
    for (i, d) in deployments.iter().enumerate() {
        assert_eq!(d["metadata"]["name"], format!("ap-shard-{i}"));
        let selector = &d["spec"]["selector"]["matchLabels"];
        assert_eq!(selector["autopilot.payments.io/shard"], i.to_string());
        assert_eq!(&d["spec"]["template"]["metadata"]["labels"], selector);
        let args: Vec<String> =
            serde_json::from_value(d["spec"]["template"]["spec"]["containers"][0]["args"].clone())
                .expect("args");
        assert!(args.contains(&format!("--shard={i}/3")), "{args:?}");
        let autopilot::cli::Command::Run(run) =
            autopilot::cli::Cli::parse_from(std::iter::once("autopilot".to_string()).chain(args))
                .command
        else {
            panic!("the Deployment runs `autopilot run`");
        };
        leases.push(run.options().leadership.lease_name);
    }
    assert_eq!(
        leases,
        [
            "autopilot-leader-shard-0",
            "autopilot-leader-shard-1",
            "autopilot-leader-shard-2"
        ]
    );
    let role = chart::of_kinds(&docs, &["Role"])
        .into_iter()
        .find(|r| r["metadata"]["name"] == "ap-self")
        .expect("the agent's own Role");
    let lease_rule = role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["resources"] == serde_json::json!(["leases"]) && !r["resourceNames"].is_null())
        .expect("the Lease rule");
    assert_eq!(lease_rule["resourceNames"], serde_json::json!(leases));
    let own_lease = chart::of_kinds(&docs, &["ValidatingAdmissionPolicy"])
        .into_iter()
        .find(|p| p["metadata"]["name"] == "ap-own-lease")
        .expect("the own-Lease policy");
    let expression = own_lease["spec"]["validations"][0]["expression"]
        .as_str()
        .expect("expression");
    for lease in &leases {
        assert!(expression.contains(&format!("'{lease}'")), "{expression}");
    }
    let refused = chart::render_fails("ap", "autopilot", &[("shards", "2")]);
    assert!(
        refused.contains("shards > 1 needs a shared journal"),
        "{refused}"
    );
}
