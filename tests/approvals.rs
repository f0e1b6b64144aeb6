//! Approvals that name a person, on the real API server with the chart's
//! RBAC and admission policies (rendered by Helm): the agent publishes a
//! Recommendation, a user with the right in that namespace approves it with
//! an Approval, and the agent (its own service account) applies it and
//! journals that user's name. An Approval by a user without the right, by
//! the agent itself, naming someone else, with altered content, without the
//! admission policy, in dry-run, or as an annotation on the target does
//! nothing. The CLI approves as its caller.

mod support;

use autopilot::{
    act::{
        executor::{Approvals, Executed, Executor, Metrics},
        guard::Policy,
        journal::{Journal, outcome},
    },
    crd::approval::{Approval, Recommendation, recommendation_name},
    decide::Mode,
    detect::ComponentId,
    scope::Scope,
    store::SqlJournal,
};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const NOW: i64 = 1_800_000_000;
/// The chart's admission policy that proves approvers (release `autopilot`).
const APPROVALS_POLICY: &str = "autopilot-approvals";

struct Setup {
    admin: Client,
    ns: String,
    agent: Client,
    dir: tempfile::TempDir,
}

async fn setup(prefix: &str) -> Setup {
    let cp = support::control_plane(Default::default());
    let (admin, ns) = support::client_and_namespace(cp, prefix).await;
    let agent = support::agent_client(cp).await;
    // alice may approve in this namespace: the chart's approver role.
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "approvers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "autopilot-approver"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }))
    .expect("binding");
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind alice");
    let s = Setup {
        admin,
        ns,
        agent,
        dir: tempfile::tempdir().expect("tempdir"),
    };
    s.wait_for_the_admission_policy().await;
    s
}

impl Setup {
    /// Waits until the chart's approvals policy is enforced: alice naming
    /// bob is refused (probed with server-side dry runs, which admission
    /// sees and nothing stores). Returns the refusal.
    async fn wait_for_the_admission_policy(&self) -> String {
        let alice = self.as_user("alice").await;
        support::wait_for(
            "the approvals admission policy to be enforced",
            std::time::Duration::from_secs(60),
            || {
                let (alice, ns) = (alice.clone(), self.ns.clone());
                async move {
                    match create_approval(&alice, &ns, "x", &"0".repeat(64), "bob", true).await {
                        Err(kube::Error::Api(e)) if e.message.contains("approver") => Ok(e.message),
                        other => Err(format!("{other:?}")),
                    }
                }
            },
        )
        .await
    }

    /// The agent's executor in `mode`, accepting approvals proven by
    /// `policy`, knowing itself as `me` (default: its real name).
    async fn executor(&self, mode: Mode, policy: &str, me: Option<&str>) -> Executor<SqlJournal> {
        let journal = SqlJournal::connect(&format!(
            "sqlite:{}",
            self.dir.path().join("j.db").display()
        ))
        .await
        .expect("journal");
        let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
        let own = match me {
            Some(me) => me.to_string(),
            None => autopilot::act::whoami(&self.agent).await.expect("whoami"),
        };
        // Scoped to this test's namespace: the tests of this file run side
        // by side, and an executor of all namespaces would refuse the
        // others' Approvals as unknown to its journal.
        Executor::new(self.agent.clone(), journal, metrics)
            .with_scope(Scope::namespaces([self.ns.clone()]))
            .with_mode(mode)
            .with_approvals(Approvals {
                admission_policy: Some(policy.into()),
                own_user: Some(own),
                // The chart was applied moments ago; `setup` waited until
                // its policy denies.
                settle_seconds: 0,
            })
    }

    async fn gateway(&self, name: &str) -> ComponentId {
        let gw: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "payments.io/v1", "kind": "PaymentGateway",
            "metadata": {"name": name},
            "spec": {"version": "2.5.0", "replicas": 3},
        }))
        .expect("gateway");
        gateways(&self.admin, &self.ns)
            .create(&PostParams::default(), &gw)
            .await
            .expect("create gateway");
        ComponentId {
            kind: "PaymentGateway".into(),
            namespace: self.ns.clone(),
            name: name.into(),
        }
    }

    async fn replicas(&self, name: &str) -> i64 {
        let gw = gateways(&self.admin, &self.ns)
            .get(name)
            .await
            .expect("get");
        gw.data["spec"]["replicas"].as_i64().expect("replicas")
    }

    /// A client acting as user `name` (the admin impersonates them).
    async fn as_user(&self, name: &str) -> Client {
        support::as_user(support::control_plane(Default::default()), name).await
    }

    async fn recommendation(&self, uid: &str) -> Recommendation {
        Api::<Recommendation>::namespaced(self.admin.clone(), &self.ns)
            .get(&recommendation_name(uid))
            .await
            .expect("the Recommendation object")
    }

    async fn approval(&self, name: &str) -> Approval {
        Api::<Approval>::namespaced(self.admin.clone(), &self.ns)
            .get(name)
            .await
            .expect("the Approval")
    }
}

fn gateways(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = autopilot::act::action::kind_info("PaymentGateway")
        .expect("kind")
        .api_resource();
    Api::namespaced_with(client.clone(), ns, &ar)
}

fn permissive() -> Policy {
    Policy {
        cooldown_seconds: 0,
        runbook_per_hour: 1000,
        global_per_hour: 1000,
        max_relative_change: 1000.0,
        ..Policy::default()
    }
}

/// Recommends scaling `target` to `replicas`; returns the journal row id
/// and its action ID.
async fn recommend(
    ex: &Executor<SqlJournal>,
    target: &ComponentId,
    replicas: i64,
) -> (i64, String) {
    let p = support::scale_proposal(target, replicas, Mode::Recommend);
    let done = ex
        .run_batch(&[p], &permissive(), NOW)
        .await
        .expect("batch")
        .pop()
        .expect("one");
    assert_eq!(done.outcome, outcome::RECOMMENDED, "{}", done.detail);
    let uid = ex
        .journal()
        .get(done.id)
        .await
        .expect("get")
        .expect("row")
        .entry
        .uid;
    (done.id, uid)
}

/// An Approval as `client` sends it.
async fn approve_as(
    client: &Client,
    ns: &str,
    rec: &str,
    digest: &str,
    approver: &str,
) -> Result<String, kube::Error> {
    create_approval(client, ns, rec, digest, approver, false).await
}

async fn create_approval(
    client: &Client,
    ns: &str,
    rec: &str,
    digest: &str,
    approver: &str,
    dry_run: bool,
) -> Result<String, kube::Error> {
    let a: Approval = serde_json::from_value(json!({
        "apiVersion": "payments.io/v1", "kind": "Approval",
        "metadata": {"generateName": format!("{rec}-"), "namespace": ns},
        "spec": {"recommendation": rec, "digest": digest, "approver": approver,
                 "decision": "Approve", "reason": "reviewed"},
    }))
    .expect("approval");
    let pp = PostParams {
        dry_run,
        ..PostParams::default()
    };
    Api::<Approval>::namespaced(client.clone(), ns)
        .create(&pp, &a)
        .await
        .map(|a| a.metadata.name.unwrap_or_default())
}

async fn apply(ex: &Executor<SqlJournal>, at: i64) -> Vec<Executed> {
    ex.apply_approvals(&permissive(), at)
        .await
        .expect("apply approvals")
}

#[tokio::test]
async fn an_approval_by_a_user_with_the_right_is_applied_and_journaled_with_their_name() {
    let s = setup("appr-ok").await;
    let ex = s.executor(Mode::Recommend, APPROVALS_POLICY, None).await;
    let gw = s.gateway("gw").await;
    let (id, uid) = recommend(&ex, &gw, 5).await;
    let rec = s.recommendation(&uid).await;
    assert_eq!(rec.status.as_ref().expect("status").phase, "Pending");
    assert!(autopilot::cli::actions::content_matches_digest(&rec));
    assert_eq!(
        rec.spec.change["patch"]["spec"]["replicas"], 5,
        "{:?}",
        rec.spec.change
    );
    // Nothing is sent before someone approves.
    assert!(apply(&ex, NOW + 5).await.is_empty());
    assert_eq!(s.replicas("gw").await, 3);

    let alice = s.as_user("alice").await;
    let name = approve_as(
        &alice,
        &s.ns,
        &rec.metadata.name.clone().expect("n"),
        &rec.spec.digest,
        "alice",
    )
    .await
    .expect("alice may approve here");
    let done = apply(&ex, NOW + 10).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].outcome, outcome::APPLIED, "{}", done[0].detail);
    assert_eq!(s.replicas("gw").await, 5);
    let row = ex.journal().get(id).await.expect("get").expect("row");
    let approval = row.approval.expect("approval journaled");
    assert!(
        approval.starts_with("approved by alice (Approval "),
        "{approval}"
    );
    let a = s.approval(&name).await;
    assert_eq!(a.status.expect("status").result, "Applied");
    let rec = s.recommendation(&uid).await;
    let st = rec.status.expect("status");
    assert_eq!(
        (st.phase.as_str(), st.decided_by.as_deref()),
        ("Applied", Some("alice"))
    );
    // Once only: the Approval has its result.
    assert!(apply(&ex, NOW + 20).await.is_empty());
}

#[tokio::test]
async fn approvals_that_do_not_prove_a_person_change_nothing() {
    let s = setup("appr-no").await;
    let ex = s.executor(Mode::Recommend, APPROVALS_POLICY, None).await;
    let gw = s.gateway("gw").await;
    let (id, uid) = recommend(&ex, &gw, 5).await;
    let rec = s.recommendation(&uid).await;
    let rec_name = rec.metadata.name.clone().expect("name");
    let digest = rec.spec.digest.clone();

    // Without the right in this namespace: RBAC refuses.
    let mallory = s.as_user("mallory").await;
    let e = approve_as(&mallory, &s.ns, &rec_name, &digest, "mallory").await;
    assert!(
        matches!(e, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{e:?}"
    );
    // The agent's own service account: no self-approval.
    let e = approve_as(&s.agent, &s.ns, &rec_name, &digest, "alice").await;
    assert!(e.is_err(), "the agent created an Approval: {e:?}");
    // alice naming someone else: the admission policy refuses it.
    let alice = s.as_user("alice").await;
    let e = approve_as(&alice, &s.ns, &rec_name, &digest, "bob").await;
    assert!(
        matches!(e, Err(kube::Error::Api(ref st)) if st.message.contains("approver")),
        "{e:?}"
    );
    // The content is immutable: nobody edits a reviewed Recommendation.
    let edit = Api::<Recommendation>::namespaced(s.admin.clone(), &s.ns)
        .patch(
            &rec_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"change": {"patch": {"spec": {"replicas": 50}}}}})),
        )
        .await;
    assert!(edit.is_err(), "a Recommendation's spec changed: {edit:?}");
    // Altered content: the admission policy cannot know, the agent checks
    // the digest against its journal and the target as it is now.
    let other = "0".repeat(64);
    let altered = approve_as(&alice, &s.ns, &rec_name, &other, "alice")
        .await
        .expect("alice approves other content");
    assert!(apply(&ex, NOW + 4).await.is_empty());
    let st = s.approval(&altered).await.status.expect("status");
    assert!(
        st.result == "Refused" && st.message.contains("digest"),
        "{st:?}"
    );
    // Without the admission policy (here: the agent told of one that does
    // not exist) the approver is not proven: refused.
    let ex_missing = s.executor(Mode::Recommend, "no-such-policy", None).await;
    let unproven = approve_as(&alice, &s.ns, &rec_name, &digest, "alice")
        .await
        .expect("alice approves");
    assert!(apply(&ex_missing, NOW + 5).await.is_empty());
    let st = s.approval(&unproven).await.status.expect("status");
    assert!(
        st.result == "Refused" && st.message.contains("no-such-policy"),
        "{st:?}"
    );
    assert_eq!(s.replicas("gw").await, 3);

    // The agent itself as approver (as if it had slipped one through).
    let ex_self = s
        .executor(Mode::Recommend, APPROVALS_POLICY, Some("alice"))
        .await;
    let by_self = approve_as(&alice, &s.ns, &rec_name, &digest, "alice")
        .await
        .expect("approve");
    assert!(apply(&ex_self, NOW + 6).await.is_empty());
    let st = s.approval(&by_self).await.status.expect("status");
    assert!(
        st.result == "Refused" && st.message.contains("agent itself"),
        "{st:?}"
    );

    // An agent in dry-run changes nothing, whoever approves: it waits.
    let ex_dry = s.executor(Mode::DryRun, APPROVALS_POLICY, None).await;
    let waiting = approve_as(&alice, &s.ns, &rec_name, &digest, "alice")
        .await
        .expect("approve");
    assert!(apply(&ex_dry, NOW + 7).await.is_empty());
    let st = s.approval(&waiting).await.status.expect("status");
    assert!(
        st.result.is_empty() && st.message.contains("mode"),
        "{st:?}"
    );

    // The old way, an annotation on the target, approves nothing.
    gateways(&s.admin, &s.ns)
        .patch(
            "gw",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"autopilot.payments.io/approve": uid}}}),
            ),
        )
        .await
        .expect("annotate");
    assert_eq!(s.replicas("gw").await, 3);
    let row = ex.journal().get(id).await.expect("get").expect("row");
    assert_eq!(row.outcome.as_deref(), Some(outcome::RECOMMENDED));
    assert_eq!(row.approval, None);

    // And the waiting one goes through once the agent may act.
    let done = apply(&ex, NOW + 30).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(s.replicas("gw").await, 5);
}

#[tokio::test]
async fn the_cli_approves_as_its_caller() {
    let s = setup("appr-cli").await;
    let ex = s.executor(Mode::Recommend, APPROVALS_POLICY, None).await;
    let gw = s.gateway("gw").await;
    let (id, uid) = recommend(&ex, &gw, 4).await;
    let rec_name = recommendation_name(&uid);
    // alice's kubeconfig: the admin's, impersonating alice.
    let cp = support::control_plane(Default::default());
    let mut kc: Value =
        serde_yaml::from_str(&std::fs::read_to_string(cp.kubeconfig()).expect("kubeconfig"))
            .expect("yaml");
    for user in kc["users"].as_array_mut().expect("users") {
        user["user"]["as"] = json!("alice");
    }
    let alice_kc = s.dir.path().join("alice.kubeconfig");
    std::fs::write(&alice_kc, serde_yaml::to_string(&kc).expect("yaml")).expect("write");
    let cli = |kubeconfig: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_autopilot"))
            .arg("actions")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .output()
            .expect("run autopilot");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = cli(
        &alice_kc,
        &[
            "approve",
            &rec_name,
            "-n",
            &s.ns,
            "--wait-seconds",
            "0",
            "--reason",
            "load test",
        ],
    );
    assert!(
        ok && out.contains("created by alice") && out.contains("scale_replicas"),
        "{out}"
    );
    let done = apply(&ex, NOW + 10).await;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].outcome, outcome::APPLIED, "{}", done[0].detail);
    let row = ex.journal().get(id).await.expect("get").expect("row");
    assert!(
        row.approval
            .as_deref()
            .is_some_and(|a| a.starts_with("approved by alice")),
        "{:?}",
        row.approval
    );
    assert_eq!(s.replicas("gw").await, 4);
    // Decided: approving again is refused by the CLI before anything is created.
    let (ok, out) = cli(
        &alice_kc,
        &["approve", &rec_name, "-n", &s.ns, "--wait-seconds", "0"],
    );
    assert!(!ok && out.contains("not pending"), "{out}");
}
