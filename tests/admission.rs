//! The chart's admission policies that hold people to their names, on the
//! real API server: the chart rendered by Helm (default values, and
//! `approvers` naming the user `alice` in a payments namespace), the CRDs
//! from `deploy/crds/`, the chart's RBAC and admission policies applied;
//! then, as impersonated users and as the agent's service account:
//!
//! - an Approval's `spec.approver` must be the user who creates it, the
//!   agent may create none even when RBAC lets it, a user without the
//!   approver role is refused by RBAC, and neither an Approval's nor a
//!   Recommendation's spec can change (their status can);
//! - the rules ConfigMap and the AutopilotPolicies in the release namespace
//!   change only with the annotation `autopilot.payments.io/changed-by`
//!   naming the sender.
//!
//! One install per test binary: its policies are cluster-wide, and another
//! release's approvals policy would answer for the same Approvals.

mod support;

use std::time::Duration;

use autopilot::{
    crd::{Approval, AutopilotPolicy, Recommendation},
    testenv::ControlPlane,
};
use k8s_openapi::api::{
    authorization::v1::SubjectAccessReview,
    core::v1::ConfigMap,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{CHANGED_BY, chart};

fn cp() -> &'static ControlPlane {
    support::control_plane(Default::default())
}

const WAIT: Duration = Duration::from_secs(30);
const RULES: &str = "autopilot-rules";

/// The one install of this binary: names only (each test makes its own
/// clients, on its own runtime).
#[derive(Clone)]
struct Install {
    release: String,
    /// The release namespace (the agent's runbooks and policy).
    namespace: String,
    /// Where `approvers` lets alice approve.
    payments: String,
}

impl Install {
    fn agent_user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.release)
    }

    fn policy(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.release)
    }
}

static INSTALL: tokio::sync::OnceCell<Install> = tokio::sync::OnceCell::const_new();

/// Renders and applies the chart once, and waits until both policies deny
/// a known-bad request (the API server loads them asynchronously).
async fn install() -> Install {
    INSTALL
        .get_or_init(|| async {
            let (admin, namespace) = support::client_and_namespace(cp(), "admission").await;
            let (_, payments) = support::client_and_namespace(cp(), "payments").await;
            let release = format!("autopilot-{namespace}");
            // The CRDs as the chart ships them (the same the control plane
            // was started with, unless they are out of step).
            let crds = support::crds_in(&chart::chart_dir().join("crds"));
            assert!(
                crds.iter().any(|c| c.spec.names.kind == "Approval")
                    && crds.iter().any(|c| c.spec.names.kind == "Recommendation"),
                "deploy/crds has the Approval and Recommendation CRDs"
            );
            autopilot::act::apply_crds(&admin, &crds)
                .await
                .expect("apply deploy/crds");
            let docs = chart::render(
                &release,
                &namespace,
                &[
                    ("approvers[0].namespace", &payments),
                    ("approvers[0].kind", "User"),
                    ("approvers[0].name", "alice"),
                ],
            );
            support::apply_chart_rbac(&admin, &docs).await;
            let install = Install {
                release,
                namespace,
                payments,
            };
            let alice = support::as_user(cp(), "alice").await;
            let bad = approval("probe-bob", "bob");
            support::wait_for(
                "the approvals policy to refuse alice's Approval in bob's name",
                WAIT,
                || async {
                    match outcome(dry_create(&alice, &install.payments, &bad).await) {
                        Outcome::Admission(m) if m.contains(&install.policy("approvals")) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await;
            let unnamed = config_map(RULES, None);
            support::wait_for(
                "the changed-by policy to refuse a rules ConfigMap without its editor",
                WAIT,
                || async {
                    match outcome(dry_create(&admin, &install.namespace, &unnamed).await) {
                        Outcome::Admission(m) if m.contains(&install.policy("changed-by")) => {
                            Ok(())
                        }
                        other => Err(format!("{other:?}")),
                    }
                },
            )
            .await;
            install
        })
        .await
        .clone()
}

/// What the API server made of a request (the messages are read through
/// Debug, in the failures' messages).
#[derive(Debug)]
#[allow(dead_code)]
enum Outcome {
    Done,
    /// 403 from a ValidatingAdmissionPolicy, with its message.
    Admission(String),
    /// 403 from the authorizer.
    Rbac(String),
    /// 422: the object's own validation (the CRD's rules).
    Invalid(String),
    Other(String),
}

fn outcome<T>(result: Result<T, kube::Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Done,
        Err(kube::Error::Api(e))
            if e.code == 403 && e.message.contains("ValidatingAdmissionPolicy") =>
        {
            Outcome::Admission(e.message.clone())
        }
        Err(kube::Error::Api(e)) if e.code == 403 => Outcome::Rbac(e.message.clone()),
        Err(kube::Error::Api(e)) if e.code == 422 => Outcome::Invalid(e.message.clone()),
        Err(e) => Outcome::Other(e.to_string()),
    }
}

fn approval(name: &str, approver: &str) -> Approval {
    typed(support::approval(
        name,
        "01jdz7q8w3v6x2k9m4n5p6r7s8",
        approver,
    ))
}

fn config_map(name: &str, changed_by: Option<&str>) -> ConfigMap {
    let mut cm = json!({"metadata": {"name": name}, "data": {"gateway.rhai": "// v1"}});
    if let Some(who) = changed_by {
        cm["metadata"]["annotations"] = json!({CHANGED_BY: who});
    }
    typed(cm)
}

fn autopilot_policy(changed_by: Option<&str>) -> AutopilotPolicy {
    let mut p = json!({"apiVersion": "payments.io/v1", "kind": "AutopilotPolicy",
        "metadata": {"name": "autopilot"}, "spec": {}});
    if let Some(who) = changed_by {
        p["metadata"]["annotations"] = json!({CHANGED_BY: who});
    }
    typed(p)
}

fn typed<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("object")
}

async fn create<K>(client: &Client, ns: &str, obj: &K) -> Result<K, kube::Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), obj)
        .await
}

async fn dry_create<K>(client: &Client, ns: &str, obj: &K) -> Result<K, kube::Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    Api::<K>::namespaced(client.clone(), ns)
        .create(&dry, obj)
        .await
}

async fn merge<K>(client: &Client, ns: &str, name: &str, patch: Value) -> Result<K, kube::Error>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

/// Grants `subject` (an RBAC subject) `rules` by a Role in `ns`, and waits
/// until the authorizer allows `user` the first verb of the first rule.
async fn grant(admin: &Client, ns: &str, name: &str, subject: Value, user: &str, rules: Value) {
    let pp = PostParams::default();
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(
            &pp,
            &typed(json!({"metadata": {"name": name}, "rules": rules})),
        )
        .await
        .expect("create the Role");
    bind(
        admin,
        ns,
        name,
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}),
        subject,
    )
    .await;
    let first = &rules[0];
    let verb = first["verbs"][0].as_str().expect("verb");
    allowed(
        admin,
        ns,
        user,
        verb,
        first["resources"][0].as_str().expect("resource"),
        first["apiGroups"][0].as_str().expect("group"),
    )
    .await;
}

async fn bind(admin: &Client, ns: &str, name: &str, role: Value, subject: Value) {
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": name}, "roleRef": role, "subjects": [subject]})),
        )
        .await
        .expect("create the RoleBinding");
}

/// Waits until the authorizer allows `user` to `verb` `group`/`resource`
/// in `ns` (a SubjectAccessReview by the admin).
async fn allowed(admin: &Client, ns: &str, user: &str, verb: &str, resource: &str, group: &str) {
    let groups = if user.starts_with("system:serviceaccount:") {
        json!(["system:serviceaccounts", "system:authenticated"])
    } else {
        json!(["system:authenticated"])
    };
    let review: SubjectAccessReview = typed(json!({"spec": {"user": user, "groups": groups,
        "resourceAttributes": {"namespace": ns, "verb": verb, "group": group, "resource": resource}}}));
    support::wait_for(
        &format!("{user} to be allowed to {verb} {resource} in {ns}"),
        WAIT,
        || async {
            let answer = Api::<SubjectAccessReview>::all(admin.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| e.to_string())?;
            answer
                .status
                .is_some_and(|s| s.allowed)
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await;
}

/// alice, an approver in payments, approves in her own name; in bob's name
/// the API server refuses, saying how to name herself; mallory, no
/// approver, is refused by RBAC.
#[tokio::test]
async fn an_approval_names_the_user_who_creates_it() {
    let i = install().await;
    let alice = support::as_user(cp(), "alice").await;
    let mallory = support::as_user(cp(), "mallory").await;

    let mine = create(&alice, &i.payments, &approval("alice-approves", "alice")).await;
    let mine = mine.expect("alice's Approval in her own name is accepted");
    assert_eq!(mine.spec.approver, "alice");

    match outcome(create(&alice, &i.payments, &approval("alice-as-bob", "bob")).await) {
        Outcome::Admission(m) => {
            assert!(
                m.contains("the approver must be the user creating the Approval")
                    && m.contains("kubectl auth whoami")
                    && m.contains("(alice), not bob"),
                "{m}"
            );
        }
        other => panic!("alice's Approval in bob's name: {other:?}"),
    }
    // Nothing was created in bob's name.
    let stored = Api::<Approval>::namespaced(cp().client().await.expect("admin"), &i.payments)
        .get_opt("alice-as-bob")
        .await
        .expect("get");
    assert!(stored.is_none(), "{stored:?}");

    // mallory has no approver binding: RBAC refuses, even in her own name
    // (which admission would let through).
    match outcome(
        create(
            &mallory,
            &i.payments,
            &approval("mallory-approves", "mallory"),
        )
        .await,
    ) {
        Outcome::Rbac(_) => {}
        other => panic!("mallory's Approval: {other:?}"),
    }
    // Nor may alice approve where she is no approver.
    let (_, elsewhere) = support::client_and_namespace(cp(), "ledger").await;
    match outcome(create(&alice, &elsewhere, &approval("alice-elsewhere", "alice")).await) {
        Outcome::Rbac(_) => {}
        other => panic!("alice's Approval outside payments: {other:?}"),
    }
}

/// The agent's service account creates no Approval: RBAC refuses it, and
/// where someone bound it to the approver role, the admission policy still
/// does, in its own name or anyone's.
#[tokio::test]
async fn the_agent_cannot_approve_even_when_rbac_lets_it() {
    let i = install().await;
    let admin = cp().client().await.expect("admin");
    let agent = support::as_service_account(cp(), &i.namespace, &i.release).await;
    let me = i.agent_user();
    match outcome(create(&agent, &i.payments, &approval("self", &me)).await) {
        Outcome::Rbac(_) => {}
        other => panic!("the agent's Approval, without rights: {other:?}"),
    }
    // Granted create by a RoleBinding to the approver ClusterRole.
    let (_, granted) = support::client_and_namespace(cp(), "granted").await;
    bind(
        &admin,
        &granted,
        "agent-as-approver",
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": i.policy("approver")}),
        json!({"kind": "ServiceAccount", "name": i.release, "namespace": i.namespace}),
    )
    .await;
    allowed(&admin, &granted, &me, "create", "approvals", "payments.io").await;
    for approver in [me.as_str(), "alice"] {
        match outcome(create(&agent, &granted, &approval("self", approver)).await) {
            Outcome::Admission(m) => assert!(
                m.contains(&i.policy("approvals")) && m.contains("no self-approval"),
                "{m}"
            ),
            other => panic!("the agent's Approval naming {approver}, with RBAC: {other:?}"),
        }
    }
    // The same request by a person with the same rights passes: the refusal
    // is the agent's.
    let alice = support::as_user(cp(), "alice").await;
    bind(
        &admin,
        &granted,
        "alice-as-approver",
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": i.policy("approver")}),
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}),
    )
    .await;
    allowed(
        &admin,
        &granted,
        "alice",
        "create",
        "approvals",
        "payments.io",
    )
    .await;
    let ok = outcome(dry_create(&alice, &granted, &approval("self", "alice")).await);
    assert!(matches!(ok, Outcome::Done), "{ok:?}");
}

/// An Approval cannot change: its spec is immutable even for its approver
/// with the rights to update it, and only its approver may touch it at all;
/// one being deleted can still lose its finalizers. Its status is the
/// agent's to write.
#[tokio::test]
async fn an_approval_cannot_change_after_it_is_created() {
    let i = install().await;
    let admin = cp().client().await.expect("admin");
    let alice = support::as_user(cp(), "alice").await;
    create(&alice, &i.payments, &approval("final", "alice"))
        .await
        .expect("alice's Approval");
    let reworded = json!({"spec": {"reason": "changed my mind", "decision": "Reject"}});
    // The approver role creates only.
    match outcome(merge::<Approval>(&alice, &i.payments, "final", reworded.clone()).await) {
        Outcome::Rbac(_) => {}
        other => panic!("alice patching her Approval without update rights: {other:?}"),
    }
    grant(
        &admin,
        &i.payments,
        "alice-edits-approvals",
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}),
        "alice",
        json!([{"apiGroups": ["payments.io"], "resources": ["approvals"], "verbs": ["patch", "update"]}]),
    )
    .await;
    match outcome(merge::<Approval>(&alice, &i.payments, "final", reworded.clone()).await) {
        Outcome::Invalid(m) => assert!(m.contains("an Approval is immutable"), "{m}"),
        other => panic!("alice changing her Approval's spec: {other:?}"),
    }
    let label = json!({"metadata": {"labels": {"team": "payments"}}});
    let labelled = merge::<Approval>(&alice, &i.payments, "final", label.clone()).await;
    assert!(
        matches!(outcome(labelled), Outcome::Done),
        "alice may label her own Approval"
    );
    // Another user (here the admin, who may do anything RBAC can say) may
    // not change someone else's Approval at all.
    match outcome(
        merge::<Approval>(
            &admin,
            &i.payments,
            "final",
            json!({"metadata": {"labels": {"team": "ledger"}}}),
        )
        .await,
    ) {
        Outcome::Admission(m) => assert!(m.contains(&i.policy("approvals")), "{m}"),
        other => panic!("the admin relabelling alice's Approval: {other:?}"),
    }
    match outcome(merge::<Approval>(&admin, &i.payments, "final", reworded).await) {
        Outcome::Invalid(m) => assert!(m.contains("an Approval is immutable"), "{m}"),
        other => panic!("the admin changing alice's Approval's spec: {other:?}"),
    }
    let stored = Api::<Approval>::namespaced(admin.clone(), &i.payments)
        .get("final")
        .await
        .expect("get");
    assert_eq!(stored.spec.reason, "reviewed the change");
    assert_eq!(stored.spec.approver, "alice");

    // Its status: the agent's to write.
    let agent = support::as_service_account(cp(), &i.namespace, &i.release).await;
    let status = json!({"status": {"result": "Applied", "message": "scaled checkout to 5"}});
    Api::<Approval>::namespaced(agent, &i.payments)
        .patch_status("final", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the agent writes an Approval's status");
    let stored = Api::<Approval>::namespaced(admin.clone(), &i.payments)
        .get("final")
        .await
        .expect("get");
    assert_eq!(stored.status.map(|s| s.result).as_deref(), Some("Applied"));

    // Deleting one with a finalizer: whoever removes the finalizer (the
    // garbage collector, in its own name) is not held to the approver.
    let mut held = approval("held", "alice");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    create(&alice, &i.payments, &held)
        .await
        .expect("alice's held Approval");
    Api::<Approval>::namespaced(admin.clone(), &i.payments)
        .delete("held", &DeleteParams::default())
        .await
        .expect("delete");
    merge::<Approval>(
        &admin,
        &i.payments,
        "held",
        json!({"metadata": {"finalizers": null}}),
    )
    .await
    .expect("the finalizer of an Approval being deleted is removed");
    support::wait_for("the held Approval to be gone", WAIT, || async {
        match Api::<Approval>::namespaced(admin.clone(), &i.payments)
            .get_opt("held")
            .await
        {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// A Recommendation's spec is what was reviewed: nobody changes it, not
/// even the admin; its status can change.
#[tokio::test]
async fn a_recommendation_spec_is_immutable_and_its_status_is_not() {
    let i = install().await;
    let admin = cp().client().await.expect("admin");
    let rec: Recommendation = typed(support::recommendation("01jdz7q8w3v6x2k9m4n5p6r7s8"));
    create(&admin, &i.payments, &rec).await.expect("create");
    let bigger =
        json!({"spec": {"change": {"type": "merge", "patch": {"spec": {"replicas": 50}}}}});
    match outcome(
        merge::<Recommendation>(&admin, &i.payments, "01jdz7q8w3v6x2k9m4n5p6r7s8", bigger).await,
    ) {
        Outcome::Invalid(m) => assert!(m.contains("a Recommendation is immutable"), "{m}"),
        other => panic!("the admin changing a Recommendation's spec: {other:?}"),
    }
    let status = json!({"status": {"phase": "Applied", "decidedBy": "alice"}});
    Api::<Recommendation>::namespaced(admin.clone(), &i.payments)
        .patch_status(
            "01jdz7q8w3v6x2k9m4n5p6r7s8",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .expect("a Recommendation's status changes");
    let stored = Api::<Recommendation>::namespaced(admin, &i.payments)
        .get("01jdz7q8w3v6x2k9m4n5p6r7s8")
        .await
        .expect("get");
    assert_eq!(stored.spec.change["patch"]["spec"]["replicas"], 5);
    let s = stored.status.expect("status");
    assert_eq!(
        (s.phase.as_str(), s.decided_by.as_deref()),
        ("Applied", Some("alice"))
    );
}

/// The rules ConfigMap and the AutopilotPolicies of the release namespace
/// change only when the change names its sender in
/// autopilot.payments.io/changed-by; other ConfigMaps, and the same names
/// elsewhere, are not held.
#[tokio::test]
async fn the_runbooks_and_the_policy_change_only_in_their_editors_name() {
    let i = install().await;
    let admin = cp().client().await.expect("admin");
    let carol = support::as_user(cp(), "carol").await;
    grant(
        &admin,
        &i.namespace,
        "carol-edits-the-agent",
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol"}),
        "carol",
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "patch", "update"]},
            {"apiGroups": ["payments.io"], "resources": ["autopilotpolicies"], "verbs": ["create", "get", "patch", "update"]},
        ]),
    )
    .await;
    allowed(
        &admin,
        &i.namespace,
        "carol",
        "create",
        "autopilotpolicies",
        "payments.io",
    )
    .await;
    let ns = i.namespace.as_str();
    let refused = |what: &str, result: Outcome| match result {
        Outcome::Admission(m) => assert!(
            m.contains(&i.policy("changed-by"))
                && m.contains("autopilot.payments.io/changed-by")
                && m.contains("kubectl auth whoami")
                && m.contains("carol"),
            "{what}: {m}"
        ),
        other => panic!("{what}: {other:?}"),
    };

    // The rules ConfigMap.
    refused(
        "the rules without changed-by",
        outcome(create(&carol, ns, &config_map(RULES, None)).await),
    );
    refused(
        "the rules in dave's name",
        outcome(create(&carol, ns, &config_map(RULES, Some("dave"))).await),
    );
    create(&carol, ns, &config_map(RULES, Some("carol")))
        .await
        .expect("carol creates the rules in her own name");
    let edit = json!({"data": {"gateway.rhai": "// v2"}});
    merge::<ConfigMap>(&carol, ns, RULES, edit.clone())
        .await
        .expect("carol edits the rules she last changed");
    // The admin's edit under carol's name is refused; in its own, accepted.
    let me = support::whoami(&admin).await;
    match outcome(
        merge::<ConfigMap>(
            &admin,
            ns,
            RULES,
            json!({"data": {"gateway.rhai": "// v3"}}),
        )
        .await,
    ) {
        Outcome::Admission(m) => assert!(m.contains(&me), "{m}"),
        other => panic!("the admin's edit in carol's name: {other:?}"),
    }
    merge::<ConfigMap>(
        &admin,
        ns,
        RULES,
        json!({"metadata": {"annotations": {CHANGED_BY: me}}, "data": {"gateway.rhai": "// v3"}}),
    )
    .await
    .expect("the admin edits the rules in its own name");
    refused(
        "carol's edit in the admin's name",
        outcome(
            merge::<ConfigMap>(
                &carol,
                ns,
                RULES,
                json!({"data": {"gateway.rhai": "// v4"}}),
            )
            .await,
        ),
    );
    refused(
        "carol removing changed-by",
        outcome(
            merge::<ConfigMap>(
                &carol,
                ns,
                RULES,
                json!({"metadata": {"annotations": {CHANGED_BY: null}}}),
            )
            .await,
        ),
    );
    let rules = Api::<ConfigMap>::namespaced(admin.clone(), ns)
        .get(RULES)
        .await
        .expect("get");
    assert_eq!(
        rules
            .data
            .and_then(|d| d.get("gateway.rhai").cloned())
            .as_deref(),
        Some("// v3")
    );
    // Not held: another ConfigMap there, the same name elsewhere.
    create(&carol, ns, &config_map("not-the-rules", None))
        .await
        .expect("another ConfigMap needs no changed-by");
    let (_, elsewhere) = support::client_and_namespace(cp(), "elsewhere").await;
    create(&admin, &elsewhere, &config_map(RULES, None))
        .await
        .expect("a ConfigMap of that name in another namespace needs no changed-by");

    // The AutopilotPolicy.
    refused(
        "the policy without changed-by",
        outcome(create(&carol, ns, &autopilot_policy(None)).await),
    );
    refused(
        "the policy in dave's name",
        outcome(create(&carol, ns, &autopilot_policy(Some("dave"))).await),
    );
    create(&carol, ns, &autopilot_policy(Some("carol")))
        .await
        .expect("carol creates the policy in her own name");
    let stop = json!({"spec": {"killSwitch": true}});
    match outcome(merge::<AutopilotPolicy>(&admin, ns, "autopilot", stop).await) {
        Outcome::Admission(m) => assert!(m.contains(&me), "{m}"),
        other => panic!("the admin's kill switch in carol's name: {other:?}"),
    }
    merge::<AutopilotPolicy>(
        &admin,
        ns,
        "autopilot",
        json!({"metadata": {"annotations": {CHANGED_BY: me}}, "spec": {"killSwitch": true}}),
    )
    .await
    .expect("the admin flips the kill switch in its own name");
    refused(
        "carol's change in the admin's name",
        outcome(
            merge::<AutopilotPolicy>(
                &carol,
                ns,
                "autopilot",
                json!({"spec": {"killSwitch": false}}),
            )
            .await,
        ),
    );
    // As the chart's policy.yaml says: annotate, then patch.
    merge::<AutopilotPolicy>(
        &carol,
        ns,
        "autopilot",
        json!({"metadata": {"annotations": {CHANGED_BY: "carol"}}}),
    )
    .await
    .expect("carol names herself");
    merge::<AutopilotPolicy>(
        &carol,
        ns,
        "autopilot",
        json!({"spec": {"killSwitch": false}}),
    )
    .await
    .expect("then changes the policy");
    let policy = Api::<AutopilotPolicy>::namespaced(admin, ns)
        .get("autopilot")
        .await
        .expect("get");
    assert_eq!(
        policy
            .metadata
            .annotations
            .and_then(|a| a.get(CHANGED_BY).cloned())
            .as_deref(),
        Some("carol")
    );
}
