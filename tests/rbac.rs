//! Least privilege, proven on the real authorizer and admission chain: the
//! chart rendered by Helm for one install (all namespaces; scoped to two;
//! two replicas on PostgreSQL), its RBAC and admission policies applied to
//! the real API server, then, as the chart's service account
//! (impersonated, so with its groups):
//!
//! - everything the agent needs is allowed: every controller write
//!   (`kinds::controller_rbac`), every action kind on every target
//!   (`rbac_for`), its own Lease, rules ConfigMap and policy, in each
//!   namespace it watches, and admission lets through the objects a
//!   payments.io resource controls;
//! - every dangerous write of [`dangers`] is refused, by RBAC or by the
//!   chart's admission policy, each a real (dry-run) request.
//!
//! The test prints every check with who refused it, and fails listing every
//! check that went the wrong way.

mod support;

use std::time::Duration;

use autopilot::{act::action::rbac_for, decide::ActionKind, kinds, testenv::ControlPlane};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::{
    Api, Client,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use support::chart;

fn cp() -> &'static ControlPlane {
    support::control_plane(Default::default())
}

const KUBE_SYSTEM: &str = "kube-system";
const LEASE: &str = "autopilot-leader";
const RULES: &str = "autopilot-rules";
/// The Recommendation and Approval laid where the agent acts.
const PROBE: &str = "probe";

/// One install under test: the release's namespace, the namespaces it
/// watches (empty: all), one it does not watch.
struct Install {
    label: &'static str,
    release: String,
    namespace: String,
    watched: Vec<String>,
    other: String,
    admin: Client,
    agent: Client,
    /// Whether the chart rendered admission policies.
    admission: bool,
}

impl Install {
    /// Renders the chart for a fresh release with `set` (plus the scope when
    /// `scoped`), applies its RBAC and admission policies, and lays the
    /// objects the checks aim at: a user's ConfigMap `victim` and Secret
    /// `token` in each namespace involved, the rules ConfigMap.
    async fn new(label: &'static str, scoped: bool, set: &[(&str, &str)]) -> Self {
        let (admin, namespace) = support::client_and_namespace(cp(), "rbac").await;
        let (_, other) = support::client_and_namespace(cp(), "rbac-other").await;
        let mut watched = Vec::new();
        if scoped {
            for _ in 0..2 {
                watched.push(support::client_and_namespace(cp(), "rbac-scoped").await.1);
            }
        }
        let release = format!("autopilot-{namespace}");
        let scope = chart::scoped_to(&watched.iter().map(String::as_str).collect::<Vec<_>>());
        let mut values = set.to_vec();
        if scoped {
            values.push(("watchNamespaces", &scope));
        }
        let docs = chart::render(&release, &namespace, &values);
        support::apply_chart_rbac(&admin, &docs).await;
        let admission = !chart::of_kinds(&docs, &chart::ADMISSION_KINDS).is_empty();
        let agent = support::as_service_account(cp(), &namespace, &release).await;
        let install = Self {
            label,
            release,
            namespace,
            watched,
            other,
            admin,
            agent,
            admission,
        };
        for ns in install.namespaces_involved() {
            install
                .lay(
                    &ns,
                    "configmaps",
                    json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "victim"}, "data": {"k": "v"}}),
                )
                .await;
            install
                .lay(
                    &ns,
                    "secrets",
                    json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "token"}, "stringData": {"k": "v"}}),
                )
                .await;
        }
        // Named after its editor, as the chart's admission policy requires.
        let editor = support::whoami(&install.admin).await;
        install
            .lay(
                &install.namespace.clone(),
                "configmaps",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": RULES,
                    "annotations": {support::CHANGED_BY: editor}}}),
            )
            .await;
        // A Recommendation and a person's Approval of it where it acts.
        for ns in install.acting_namespaces() {
            install
                .lay(&ns, "recommendations", support::recommendation(PROBE))
                .await;
            install
                .lay(&ns, "approvals", support::approval(PROBE, PROBE, &editor))
                .await;
        }
        install
    }

    /// Namespaces the agent should act in: the watched ones, or (all
    /// namespaces) the one it does not own but may act in.
    fn acting_namespaces(&self) -> Vec<String> {
        if self.watched.is_empty() {
            vec![self.other.clone()]
        } else {
            self.watched.clone()
        }
    }

    fn namespaces_involved(&self) -> Vec<String> {
        let mut out = vec![
            self.namespace.clone(),
            self.other.clone(),
            KUBE_SYSTEM.into(),
        ];
        out.extend(self.watched.iter().cloned());
        out
    }

    async fn lay(&self, ns: &str, plural: &str, obj: Value) {
        let kind = obj["kind"].as_str().expect("kind").to_string();
        let (group, version) = obj["apiVersion"]
            .as_str()
            .expect("apiVersion")
            .split_once('/')
            .unwrap_or(("", "v1"));
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.admin.clone(),
            ns,
            &resource(group, version, &kind, plural),
        );
        let obj: DynamicObject = serde_json::from_value(obj).expect("object");
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("laying {kind} in {ns}: {e}"),
        }
    }

    /// Waits until the admission policies bind the agent: the API server
    /// loads them asynchronously after they are created.
    async fn wait_for_admission(&self) {
        if !self.admission {
            return;
        }
        let ns = self.acting_namespaces()[0].clone();
        support::wait_for(
            "the chart's admission policies to refuse the agent's first forbidden writes",
            Duration::from_secs(30),
            || async {
                let lease = attempt(
                    &self.agent,
                    &Target::new(&self.namespace, "coordination.k8s.io", "v1", "Lease", "leases"),
                    &Op::Create(lease_object("someone-elses")),
                )
                .await;
                let cm = attempt(
                    &self.agent,
                    &Target::new(&ns, "", "v1", "ConfigMap", "configmaps"),
                    &Op::Create(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}})),
                )
                .await;
                match (judge(lease), judge(cm)) {
                    (Verdict::Admission(_), Verdict::Admission(_)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// What a request aims at: a kind, in a namespace or (None) the cluster.
struct Target {
    namespace: Option<String>,
    resource: ApiResource,
}

impl Target {
    fn new(ns: &str, group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self {
            namespace: Some(ns.into()),
            resource: resource(group, version, kind, plural),
        }
    }

    fn cluster(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self {
            namespace: None,
            resource: resource(group, version, kind, plural),
        }
    }

    fn api(&self, client: &Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &self.resource),
            None => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// A request: writes are sent as server-side dry runs, so they pass
/// authorization and admission (or not) and change nothing.
enum Op {
    Get(&'static str),
    List,
    Create(Value),
    Patch(&'static str),
    Replace(&'static str),
    Delete(&'static str),
    /// Only the authorizer can answer (no request does just this).
    Authorize {
        verb: &'static str,
        subresource: &'static str,
        name: &'static str,
    },
}

async fn attempt(client: &Client, target: &Target, op: &Op) -> Result<(), kube::Error> {
    let api = target.api(client);
    let dry_post = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let probe_label = json!({"metadata": {"labels": {"autopilot.test/probe": "x"}}});
    match op {
        Op::Get(name) => api.get(name).await.map(drop),
        Op::List => api.list(&ListParams::default()).await.map(drop),
        Op::Create(obj) => {
            let obj: DynamicObject = serde_json::from_value(obj.clone()).expect("object");
            api.create(&dry_post, &obj).await.map(drop)
        }
        Op::Patch(name) => {
            let params = PatchParams {
                dry_run: true,
                ..Default::default()
            };
            api.patch(name, &params, &Patch::Merge(&probe_label))
                .await
                .map(drop)
        }
        Op::Replace(name) => {
            let mut obj = json!({"apiVersion": target.resource.api_version, "kind": target.resource.kind,
                "metadata": {"name": name, "resourceVersion": "1"}});
            if let Some(ns) = &target.namespace {
                obj["metadata"]["namespace"] = json!(ns);
            }
            let obj: DynamicObject = serde_json::from_value(obj).expect("object");
            api.replace(name, &dry_post, &obj).await.map(drop)
        }
        Op::Delete(name) => {
            let params = DeleteParams {
                dry_run: true,
                ..Default::default()
            };
            api.delete(name, &params).await.map(drop)
        }
        Op::Authorize {
            verb,
            subresource,
            name,
        } => {
            let allowed = access(client, target, verb, subresource, Some(name)).await;
            if allowed {
                Ok(())
            } else {
                Err(kube::Error::Api(
                    kube::core::Status::failure("denied by the authorizer", "Forbidden")
                        .with_code(403)
                        .boxed(),
                ))
            }
        }
    }
}

/// The authorizer's answer for the client's own identity (a
/// SelfSubjectAccessReview).
async fn access(
    client: &Client,
    target: &Target,
    verb: &str,
    subresource: &str,
    name: Option<&str>,
) -> bool {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(target.resource.group.clone()),
                resource: Some(target.resource.plural.clone()),
                subresource: (!subresource.is_empty()).then(|| subresource.to_string()),
                verb: Some(verb.into()),
                namespace: target.namespace.clone(),
                name: name.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SelfSubjectAccessReview");
    answer.status.is_some_and(|s| s.allowed)
}

/// Who answered a forbidden request.
#[derive(Debug)]
enum Verdict {
    /// 403 from the authorizer.
    Rbac,
    /// 403 from the chart's admission policy.
    Admission(String),
    /// Not refused: done (as a dry run), or failed past authorization
    /// (e.g. 404: the authorizer let it through).
    NotRefused(String),
}

fn judge(result: Result<(), kube::Error>) -> Verdict {
    match result {
        Err(kube::Error::Api(e))
            if e.code == 403 && e.message.contains("ValidatingAdmissionPolicy") =>
        {
            Verdict::Admission(e.message.clone())
        }
        Err(kube::Error::Api(e)) if e.code == 403 => Verdict::Rbac,
        Ok(()) => Verdict::NotRefused("done".into()),
        Err(e) => Verdict::NotRefused(format!("passed authorization, then: {e}")),
    }
}

fn lease_object(name: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}})
}

fn pod_spec() -> Value {
    json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.example/anything:1"}]})
}

fn job(owner: Option<Value>) -> Value {
    let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe"},
        "spec": {"template": {"spec": pod_spec()}}});
    if let Some(o) = owner {
        j["metadata"]["ownerReferences"] = json!([o]);
    }
    j
}

fn deployment(owner: Option<Value>) -> Value {
    let labels = json!({"app": "probe"});
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "probe"},
        "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "registry.example/anything:1"}]}}}});
    if let Some(o) = owner {
        d["metadata"]["ownerReferences"] = json!([o]);
    }
    d
}

/// A controller ownerReference to a payments.io resource, as the
/// controllers set it.
fn owned_by(kind: &str) -> Value {
    json!({"apiVersion": "payments.io/v1", "kind": kind, "name": "probe",
        "uid": "00000000-0000-0000-0000-000000000001", "controller": true, "blockOwnerDeletion": true})
}

/// The writes the agent must never be able to do, for `install`.
fn dangers(i: &Install) -> Vec<(String, Target, Op)> {
    let ns = i.namespace.as_str();
    let other = i.other.as_str();
    let watched = i.acting_namespaces()[0].clone();
    let core = |n: &str, kind: &str, plural: &str| Target::new(n, "", "v1", kind, plural);
    let rbac = |n: &str, kind: &str, plural: &str| {
        Target::new(n, "rbac.authorization.k8s.io", "v1", kind, plural)
    };
    let rbac_cluster =
        |kind: &str, plural: &str| Target::cluster("rbac.authorization.k8s.io", "v1", kind, plural);
    let lease = |n: &str| Target::new(n, "coordination.k8s.io", "v1", "Lease", "leases");
    let policy = || {
        Target::new(
            ns,
            "payments.io",
            "v1",
            "AutopilotPolicy",
            "autopilotpolicies",
        )
    };
    let bind_to_admin = |kind: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": {"name": "probe"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": i.release, "namespace": ns}]})
    };
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": pod_spec()});
    let mut out = vec![
        (
            "create a Job in kube-system".into(),
            Target::new(KUBE_SYSTEM, "batch", "v1", "Job", "jobs"),
            Op::Create(job(None)),
        ),
        (
            "create a Job in another namespace".into(),
            Target::new(other, "batch", "v1", "Job", "jobs"),
            Op::Create(job(None)),
        ),
        (
            "create a Pod in kube-system".into(),
            core(KUBE_SYSTEM, "Pod", "pods"),
            Op::Create(pod.clone()),
        ),
        (
            "create a Pod in another namespace".into(),
            core(other, "Pod", "pods"),
            Op::Create(pod.clone()),
        ),
        (
            "create a Pod where it acts".into(),
            core(&watched, "Pod", "pods"),
            Op::Create(pod),
        ),
        (
            "create a Deployment in kube-system".into(),
            Target::new(KUBE_SYSTEM, "apps", "v1", "Deployment", "deployments"),
            Op::Create(deployment(None)),
        ),
        (
            "create a Deployment no payments.io resource controls, where it acts".into(),
            Target::new(&watched, "apps", "v1", "Deployment", "deployments"),
            Op::Create(deployment(None)),
        ),
        (
            "delete a ConfigMap in kube-system".into(),
            core(KUBE_SYSTEM, "ConfigMap", "configmaps"),
            Op::Delete("victim"),
        ),
        (
            "patch a ConfigMap in kube-system".into(),
            core(KUBE_SYSTEM, "ConfigMap", "configmaps"),
            Op::Patch("victim"),
        ),
        (
            "take over a user's ConfigMap where it acts".into(),
            core(&watched, "ConfigMap", "configmaps"),
            Op::Patch("victim"),
        ),
        (
            "get a Secret in its own namespace".into(),
            core(ns, "Secret", "secrets"),
            Op::Get("token"),
        ),
        (
            "get a Secret where it acts".into(),
            core(&watched, "Secret", "secrets"),
            Op::Get("token"),
        ),
        (
            "list Secrets in kube-system".into(),
            core(KUBE_SYSTEM, "Secret", "secrets"),
            Op::List,
        ),
        (
            "list Secrets in every namespace".into(),
            Target::cluster("", "v1", "Secret", "secrets"),
            Op::List,
        ),
        (
            "mint a token for a service account in kube-system".into(),
            core(KUBE_SYSTEM, "ServiceAccount", "serviceaccounts"),
            Op::Authorize {
                verb: "create",
                subresource: "token",
                name: "default",
            },
        ),
        (
            "impersonate a user".into(),
            Target::cluster("", "v1", "User", "users"),
            Op::Authorize {
                verb: "impersonate",
                subresource: "",
                name: "admin",
            },
        ),
        (
            "create a RoleBinding to cluster-admin".into(),
            rbac(ns, "RoleBinding", "rolebindings"),
            Op::Create(bind_to_admin("RoleBinding")),
        ),
        (
            "create a ClusterRoleBinding to cluster-admin".into(),
            rbac_cluster("ClusterRoleBinding", "clusterrolebindings"),
            Op::Create(bind_to_admin("ClusterRoleBinding")),
        ),
        (
            "bind cluster-admin".into(),
            rbac_cluster("ClusterRole", "clusterroles"),
            Op::Authorize {
                verb: "bind",
                subresource: "",
                name: "cluster-admin",
            },
        ),
        (
            "escalate its own ClusterRole".into(),
            rbac_cluster("ClusterRole", "clusterroles"),
            Op::Authorize {
                verb: "escalate",
                subresource: "",
                name: leak(&i.release),
            },
        ),
        (
            "patch its own ClusterRole".into(),
            rbac_cluster("ClusterRole", "clusterroles"),
            Op::Patch(leak(&i.release)),
        ),
        (
            "patch its own Role".into(),
            rbac(ns, "Role", "roles"),
            Op::Patch(leak(&format!("{}-self", i.release))),
        ),
        (
            "patch its own policy".into(),
            policy(),
            Op::Patch("autopilot"),
        ),
        (
            "update its own policy".into(),
            policy(),
            Op::Replace("autopilot"),
        ),
        (
            "delete its own policy".into(),
            policy(),
            Op::Delete("autopilot"),
        ),
        (
            "patch its runbooks (the rules ConfigMap)".into(),
            core(ns, "ConfigMap", "configmaps"),
            Op::Patch(RULES),
        ),
        (
            "delete its runbooks (the rules ConfigMap)".into(),
            core(ns, "ConfigMap", "configmaps"),
            Op::Delete(RULES),
        ),
        (
            "patch a Lease in kube-system".into(),
            lease(KUBE_SYSTEM),
            Op::Patch("kube-controller-manager"),
        ),
        (
            "patch another Lease in its own namespace".into(),
            lease(ns),
            Op::Patch("someone-elses"),
        ),
        (
            "create another Lease in its own namespace".into(),
            lease(ns),
            Op::Create(lease_object("someone-elses")),
        ),
        ("delete its own Lease".into(), lease(ns), Op::Delete(LEASE)),
    ];
    // No self-approval: no write on Approvals anywhere, by RBAC (and the
    // admission policy behind it); Recommendations never changed after
    // they are created.
    let approvals = |n: &str| Target::new(n, "payments.io", "v1", "Approval", "approvals");
    let recommendations =
        |n: &str| Target::new(n, "payments.io", "v1", "Recommendation", "recommendations");
    let agent_user = format!("system:serviceaccount:{ns}:{}", i.release);
    for n in i.namespaces_involved() {
        out.push((
            format!("create an Approval in {n}"),
            approvals(&n),
            Op::Create(support::approval("self", PROBE, &agent_user)),
        ));
        for (verb, op) in [
            ("update", Op::Replace(PROBE)),
            ("patch", Op::Patch(PROBE)),
            ("delete", Op::Delete(PROBE)),
        ] {
            out.push((format!("{verb} an Approval in {n}"), approvals(&n), op));
        }
    }
    out.extend([
        (
            "update a Recommendation (its spec) where it acts".into(),
            recommendations(&watched),
            Op::Replace(PROBE),
        ),
        (
            "patch a Recommendation where it acts".into(),
            recommendations(&watched),
            Op::Patch(PROBE),
        ),
        (
            "delete a Recommendation where it acts".into(),
            recommendations(&watched),
            Op::Delete(PROBE),
        ),
    ]);
    // The admission policies that hold it: never written, and only the
    // approvals policy and binding read.
    let approvals_policy = leak(&format!("{}-approvals", i.release));
    let owned_policy = leak(&format!("{}-owned-objects", i.release));
    for (kind, plural, object) in [
        (
            "ValidatingAdmissionPolicy",
            "validatingadmissionpolicies",
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": "probe"},
                "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["configmaps"]}]},
                    "validations": [{"expression": "true"}]}}),
        ),
        (
            "ValidatingAdmissionPolicyBinding",
            "validatingadmissionpolicybindings",
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": "probe"},
                "spec": {"policyName": "probe", "validationActions": ["Deny"]}}),
        ),
    ] {
        let t = || Target::cluster("admissionregistration.k8s.io", "v1", kind, plural);
        out.extend([
            (format!("create a {kind}"), t(), Op::Create(object)),
            (
                format!("update its {kind} {approvals_policy}"),
                t(),
                Op::Replace(approvals_policy),
            ),
            (
                format!("patch its {kind} {approvals_policy}"),
                t(),
                Op::Patch(approvals_policy),
            ),
            (
                format!("delete its {kind} {approvals_policy}"),
                t(),
                Op::Delete(approvals_policy),
            ),
            (
                format!("delete its {kind} {owned_policy}"),
                t(),
                Op::Delete(owned_policy),
            ),
            (format!("get another {kind}"), t(), Op::Get(owned_policy)),
            (format!("list {plural}"), t(), Op::List),
        ]);
    }
    if !i.watched.is_empty() {
        // Out of scope, even as a payments.io resource's owned object.
        out.extend([
            (
                "create an owned Deployment outside the scope".into(),
                Target::new(other, "apps", "v1", "Deployment", "deployments"),
                Op::Create(deployment(Some(owned_by("PaymentGateway")))),
            ),
            (
                "create an owned Job outside the scope".into(),
                Target::new(other, "batch", "v1", "Job", "jobs"),
                Op::Create(job(Some(owned_by("BatchProcessor")))),
            ),
            (
                "patch a ConfigMap outside the scope".into(),
                core(other, "ConfigMap", "configmaps"),
                Op::Patch("victim"),
            ),
            (
                "patch a PaymentGateway outside the scope".into(),
                Target::new(
                    other,
                    "payments.io",
                    "v1",
                    "PaymentGateway",
                    "paymentgateways",
                ),
                Op::Patch("probe"),
            ),
            (
                "patch a PostgreSQL Cluster outside the scope".into(),
                Target::new(other, "postgresql.cnpg.io", "v1", "Cluster", "clusters"),
                Op::Patch("probe"),
            ),
        ]);
    }
    out
}

/// A name for the life of the test (the checks borrow `'static` names).
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// What the agent needs, as (group, resource, verbs) rules: every controller
/// write and every action kind on every target.
fn needs() -> Vec<(String, kinds::RbacRule)> {
    let mut out: Vec<_> = kinds::controller_rbac()
        .into_iter()
        .map(|r| ("controllers".to_string(), r))
        .collect();
    for &action in ActionKind::ALL {
        for target in action.targets() {
            for rule in rbac_for(action, target) {
                out.push((format!("{} on {target}", action.name()), rule));
            }
        }
    }
    out
}

/// Runs every check for `install`; prints each, and returns the failures.
async fn prove(i: &Install) -> Vec<String> {
    let mut failures = Vec::new();
    let mut report = |line: String, ok: bool| {
        println!("[{}] {} {line}", i.label, if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures.push(line);
        }
    };
    // Allowed, by the authorizer, where it acts.
    for ns in i.acting_namespaces() {
        for (why, rule) in needs() {
            let (resource, sub) = rule
                .resource
                .split_once('/')
                .unwrap_or((&rule.resource, ""));
            let target = Target::new(&ns, &rule.group, "v1", "Any", resource);
            for verb in &rule.verbs {
                let ok = access(&i.agent, &target, verb, sub, None).await;
                report(
                    format!(
                        "allowed: {verb} {}/{} in {ns} ({why})",
                        rule.group, rule.resource
                    ),
                    ok,
                );
            }
        }
    }
    // Its own objects, by name.
    let own = |group: &str, kind: &str, plural: &str| {
        Target::new(&i.namespace, group, "v1", kind, plural)
    };
    let leases = own("coordination.k8s.io", "Lease", "leases");
    for verb in ["get", "update", "patch"] {
        report(
            format!("allowed: {verb} its Lease {LEASE}"),
            access(&i.agent, &leases, verb, "", Some(LEASE)).await,
        );
    }
    for verb in ["get", "list", "watch"] {
        let cms = own("", "ConfigMap", "configmaps");
        for name in [RULES] {
            report(
                format!("allowed: {verb} its ConfigMap {name}"),
                access(&i.agent, &cms, verb, "", Some(name)).await,
            );
        }
        let policies = own("payments.io", "AutopilotPolicy", "autopilotpolicies");
        report(
            format!("allowed: {verb} its AutopilotPolicy"),
            access(&i.agent, &policies, verb, "", Some("autopilot")).await,
        );
    }
    report(
        "allowed: create Events in its namespace".into(),
        access(
            &i.agent,
            &own("events.k8s.io", "Event", "events"),
            "create",
            "",
            None,
        )
        .await,
    );
    // And as the agent really sends them: the rules watch by field
    // selector, the leader Lease, owned objects through admission.
    let rules = Api::<DynamicObject>::namespaced_with(
        i.agent.clone(),
        &i.namespace,
        &resource("", "v1", "ConfigMap", "configmaps"),
    )
    .list(&ListParams::default().fields(&format!("metadata.name={RULES}")))
    .await;
    report(
        format!(
            "allowed: list its rules ConfigMap by fieldSelector ({:?})",
            rules.as_ref().err()
        ),
        rules.is_ok(),
    );
    let sent = [
        (
            "create its leader Lease",
            leases,
            Op::Create(lease_object(LEASE)),
        ),
        (
            "create an owned ConfigMap",
            Target::new(
                &i.acting_namespaces()[0],
                "",
                "v1",
                "ConfigMap",
                "configmaps",
            ),
            Op::Create(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "probe", "ownerReferences": [owned_by("PaymentGateway")]}})),
        ),
        (
            "create an owned Job",
            Target::new(&i.acting_namespaces()[0], "batch", "v1", "Job", "jobs"),
            Op::Create(job(Some(owned_by("BatchProcessor")))),
        ),
        (
            "create an owned Deployment",
            Target::new(
                &i.acting_namespaces()[0],
                "apps",
                "v1",
                "Deployment",
                "deployments",
            ),
            Op::Create(deployment(Some(owned_by("PaymentGateway")))),
        ),
    ];
    for (what, target, op) in sent {
        let result = attempt(&i.agent, &target, &op).await;
        report(
            format!("allowed (dry run): {what} ({:?})", result.as_ref().err()),
            result.is_ok(),
        );
    }
    // Recommend mode, where it acts: Recommendations created, both kinds'
    // status written (through admission too: the approvals policy does not
    // hold status), Approvals read.
    for ns in i.acting_namespaces() {
        let recommendations = Target::new(
            &ns,
            "payments.io",
            "v1",
            "Recommendation",
            "recommendations",
        );
        let approvals = Target::new(&ns, "payments.io", "v1", "Approval", "approvals");
        for (target, verbs, sub) in [
            (
                &recommendations,
                &["create", "get", "list", "watch"][..],
                "",
            ),
            (&recommendations, &["get", "patch", "update"][..], "status"),
            (&approvals, &["get", "list", "watch"][..], ""),
            (&approvals, &["get", "patch", "update"][..], "status"),
        ] {
            for verb in verbs {
                let plural = &target.resource.plural;
                let what = if sub.is_empty() {
                    plural.clone()
                } else {
                    format!("{plural}/{sub}")
                };
                report(
                    format!("allowed: {verb} payments.io/{what} in {ns}"),
                    access(&i.agent, target, verb, sub, None).await,
                );
            }
        }
        let created = attempt(
            &i.agent,
            &recommendations,
            &Op::Create(support::recommendation("agents-own")),
        )
        .await;
        report(
            format!(
                "allowed (dry run): create a Recommendation in {ns} ({:?})",
                created.as_ref().err()
            ),
            created.is_ok(),
        );
        for target in [&recommendations, &approvals] {
            let status = json!({"status": {"message": "probe"}});
            let patched = target
                .api(&i.agent)
                .patch_status(
                    PROBE,
                    &PatchParams {
                        dry_run: true,
                        ..Default::default()
                    },
                    &Patch::Merge(&status),
                )
                .await;
            report(
                format!(
                    "allowed (dry run): patch {}/status in {ns} ({:?})",
                    target.resource.plural,
                    patched.as_ref().err()
                ),
                patched.is_ok(),
            );
        }
    }
    // Who it is, and that the approvals policy and its binding are there.
    let review =
        Api::<k8s_openapi::api::authentication::v1::SelfSubjectReview>::all(i.agent.clone())
            .create(&PostParams::default(), &Default::default())
            .await;
    report(
        format!(
            "allowed: create a SelfSubjectReview ({:?})",
            review.as_ref().err()
        ),
        review.is_ok(),
    );
    if i.admission {
        let name = leak(&format!("{}-approvals", i.release));
        for (kind, plural) in [
            ("ValidatingAdmissionPolicy", "validatingadmissionpolicies"),
            (
                "ValidatingAdmissionPolicyBinding",
                "validatingadmissionpolicybindings",
            ),
        ] {
            let t = Target::cluster("admissionregistration.k8s.io", "v1", kind, plural);
            let got = attempt(&i.agent, &t, &Op::Get(name)).await;
            report(
                format!("allowed: get the {kind} {name} ({:?})", got.as_ref().err()),
                got.is_ok(),
            );
        }
    }
    // Refused.
    for (what, target, op) in dangers(i) {
        let verdict = judge(attempt(&i.agent, &target, &op).await);
        let ok = !matches!(verdict, Verdict::NotRefused(_));
        let by = match verdict {
            Verdict::Rbac => "refused by RBAC".to_string(),
            Verdict::Admission(m) => format!("refused at admission: {m}"),
            Verdict::NotRefused(how) => format!("NOT REFUSED: {how}"),
        };
        report(format!("forbidden: {what}: {by}"), ok);
    }
    failures
}

async fn run(label: &'static str, scoped: bool, set: &[(&str, &str)]) {
    let install = Install::new(label, scoped, set).await;
    install.wait_for_admission().await;
    let failures = prove(&install).await;
    assert!(
        failures.is_empty(),
        "{label} install (release {} in {}): {} check(s) went the wrong way:\n{}",
        install.release,
        install.namespace,
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_cluster_wide_install_grants_what_the_agent_needs_and_refuses_the_rest() {
    run("cluster-wide", false, &[]).await;
}

#[tokio::test]
async fn a_scoped_install_acts_only_in_its_two_namespaces() {
    run("scoped", true, &[]).await;
}

#[tokio::test]
async fn two_replicas_on_postgresql_get_the_same_rights() {
    run(
        "two replicas",
        false,
        &[
            ("replicas", "2"),
            ("database.urlSecret.name", "autopilot-db"),
        ],
    )
    .await;
}
