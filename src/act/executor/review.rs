//! Review in recommend mode, as Kubernetes objects: every recommendation is
//! published as a `Recommendation` in its target's namespace, and people
//! approve or reject it with an `Approval` (`crate::crd::approval`). An
//! Approval is accepted only when
//!
//! - the admission policy that proves approvers (a ValidatingAdmissionPolicy
//!   and its binding, both named [`Approvals::admission_policy`]) exists and
//!   already existed when the Approval was created: otherwise its `approver`
//!   is a claim, not the API server's word;
//! - its approver is not the agent itself;
//! - it is in the target's namespace (RBAC there decided who may approve);
//! - it names a pending recommendation and repeats the digest of the
//!   journaled change, its inverse, the runbook version and the target's
//!   uid as it is now;
//!
//! and then the approval is judged by the gate like every write (kill switch,
//! scope, mode — nothing in dry-run — and the guards) and journaled with the
//! approver's name. An Approval that is not accepted is marked `Refused` with
//! the reason and never looked at again; one the gate holds back waits, its
//! status saying why.
//!
//! Writes only Recommendations (create, status) and the status of
//! Approvals; targets are written through `approve`/`reject` and `send`.

use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

use super::{Error, Executed, Executor, PolicySource, Recorded};
use crate::{
    act::journal::{Journal, NewEntry, outcome},
    crd::{
        FIELD_MANAGER,
        approval::{
            Approval, Decision, Recommendation, digest, phase, recommendation_name, result,
        },
    },
    detect::ComponentId,
};

/// Label on a Recommendation naming its action ID (the journal's ULID).
pub const ACTION_ID_LABEL: &str = "autopilot.payments.io/action-id";

/// How approvals are accepted.
#[derive(Clone, Debug)]
pub struct Approvals {
    /// The ValidatingAdmissionPolicy, and its binding of the same name, that
    /// makes the API server refuse an Approval whose `approver` is not its
    /// sender (the chart's `<release>-approvals`). `None`: no approval is
    /// accepted.
    pub admission_policy: Option<String>,
    /// The agent's own user name, as the API server knows it: its approvals
    /// are refused. `None` (unknown): every approval is refused.
    pub own_user: Option<String>,
    /// Seconds an admission policy takes to load after it is created: an
    /// Approval made sooner after the policy or its binding was may have
    /// passed unchecked, and is refused.
    pub settle_seconds: i64,
}

impl Default for Approvals {
    fn default() -> Self {
        Self {
            admission_policy: None,
            own_user: None,
            settle_seconds: ADMISSION_SETTLE_SECONDS,
        }
    }
}

/// How long the API server may take to enforce a new admission policy or
/// binding (it loads them asynchronously, usually within a second).
pub const ADMISSION_SETTLE_SECONDS: i64 = 10;

/// The admission policy's state as read: the policy and the binding (as
/// JSON), `None` where missing.
pub struct AdmissionState {
    pub policy: Option<Value>,
    pub binding: Option<Value>,
}

fn created_at(obj: &Value) -> Option<i64> {
    let t = obj["metadata"]["creationTimestamp"].as_str()?;
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp())
}

/// Whether the admission policy `name` vouched for an Approval created at
/// `approval_created`: the policy and its binding exist, the binding binds
/// that policy and denies, and both were created at least `settle` seconds
/// before the Approval (one made while either was missing, or not yet
/// loaded, was not checked).
pub fn admission_vouches(
    name: &str,
    state: &AdmissionState,
    approval_created: i64,
    settle: i64,
) -> Result<(), String> {
    let missing = |what: &str| {
        format!(
            "the {what} {name} that proves approvers is missing: the approver is not proven (install the chart's admission policy, then approve again)"
        )
    };
    let policy = state
        .policy
        .as_ref()
        .ok_or_else(|| missing("ValidatingAdmissionPolicy"))?;
    let binding = state
        .binding
        .as_ref()
        .ok_or_else(|| missing("ValidatingAdmissionPolicyBinding"))?;
    if binding["spec"]["policyName"].as_str() != Some(name) {
        return Err(format!(
            "the ValidatingAdmissionPolicyBinding {name} does not bind the policy {name}"
        ));
    }
    let denies = binding["spec"]["validationActions"]
        .as_array()
        .is_some_and(|a| a.iter().any(|v| v == "Deny"));
    if !denies {
        return Err(format!(
            "the ValidatingAdmissionPolicyBinding {name} does not deny (validationActions lacks Deny): the approver is not proven"
        ));
    }
    for (what, obj) in [
        ("ValidatingAdmissionPolicy", policy),
        ("ValidatingAdmissionPolicyBinding", binding),
    ] {
        match created_at(obj) {
            Some(t) if t + settle <= approval_created => {}
            _ => {
                return Err(format!(
                    "the {what} {name} is newer than the Approval (or less than {settle}s older): the approver may not have been checked; approve again"
                ));
            }
        }
    }
    Ok(())
}

/// The digest of journal entry `r` against the target whose uid is
/// `target_uid`: what an Approval of it must repeat.
fn entry_digest(entry: &NewEntry, target_uid: &str) -> Option<String> {
    let change = entry.patch.as_ref()?;
    Some(digest(
        target_uid,
        change,
        entry.inverse.as_ref(),
        &entry.runbook_hash,
    ))
}

/// A person's decision on Recommendation `recommendation` in `namespace`,
/// created with `client` — the person's own credentials (the CLI's
/// kubeconfig): RBAC and the admission policy judge it as theirs, and
/// `approver` must be who the API server says they are.
pub async fn submit_approval(
    client: &kube::Client,
    namespace: &str,
    recommendation: &str,
    digest: &str,
    approver: &str,
    decision: Decision,
    reason: &str,
) -> Result<Approval, kube::Error> {
    let approval: Approval = serde_json::from_value(json!({
        "apiVersion": "payments.io/v1",
        "kind": "Approval",
        "metadata": {"generateName": format!("{recommendation}-"), "namespace": namespace},
        "spec": {
            "recommendation": recommendation,
            "digest": digest,
            "approver": approver,
            "decision": decision,
            "reason": reason,
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<Approval>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &approval)
        .await
}

/// The Approval's verdict before the gate.
enum Accepted {
    Approve { id: i64, by: String },
    Reject { id: i64, by: String },
}

impl<J: Journal> Executor<J> {
    /// How approvals are accepted (default: none is).
    pub fn with_approvals(mut self, approvals: Approvals) -> Self {
        self.approvals = approvals;
        self
    }

    /// Publishes journal entry `id`, just recommended, as a `Recommendation`
    /// in the target's namespace, owned by the target (deleted with it).
    /// `Err` says why it could not be: then nothing can approve it.
    pub(super) async fn publish_recommendation(
        &self,
        id: i64,
        entry: &NewEntry,
        target: &ComponentId,
    ) -> Result<(), String> {
        crate::act::fence::check().map_err(|e| e.to_string())?;
        let obj = self
            .fetch_target(target)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{target} no longer exists"))?;
        let uid = obj["metadata"]["uid"]
            .as_str()
            .ok_or_else(|| format!("{target} has no uid"))?;
        let change = entry
            .patch
            .clone()
            .ok_or_else(|| "no patch journaled".to_string())?;
        let digest = entry_digest(entry, uid).unwrap_or_default();
        let name = recommendation_name(&entry.uid);
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let reason = serde_json::from_value::<crate::decide::Intent>(entry.action.clone())
            .map(|i| i.reason)
            .unwrap_or_default();
        let rec: Recommendation = serde_json::from_value(json!({
            "apiVersion": "payments.io/v1",
            "kind": "Recommendation",
            "metadata": {
                "name": name,
                "namespace": target.namespace,
                "labels": {
                    ACTION_ID_LABEL: entry.uid,
                    "app.kubernetes.io/managed-by": "autopilot",
                },
                "ownerReferences": [{
                    "apiVersion": api_version,
                    "kind": target.kind,
                    "name": target.name,
                    "uid": uid,
                }],
            },
            "spec": {
                "actionId": entry.uid,
                "runbook": entry.runbook,
                "runbookHash": entry.runbook_hash,
                "action": entry.action_kind,
                "target": {
                    "apiVersion": api_version,
                    "kind": target.kind,
                    "name": target.name,
                    "uid": uid,
                },
                "reason": reason,
                "change": change,
                "inverse": entry.inverse,
                "digest": digest,
            },
        }))
        .map_err(|e| format!("building the Recommendation: {e}"))?;
        let api = Api::<Recommendation>::namespaced(self.client.clone(), &target.namespace);
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&pp, &rec).await {
            Ok(_) => {}
            // Published before a restart interrupted the rest.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(format!("creating Recommendation {name}: {e}")),
        }
        let how = format!(
            "journal #{id}; approve with `autopilot actions approve {name} -n {}`",
            target.namespace
        );
        self.mark_recommendation(&target.namespace, &entry.uid, phase::PENDING, &how, None)
            .await;
        Ok(())
    }

    /// Sets a Recommendation's status (best effort: the journal is the
    /// record; a missing object is not an error).
    pub(super) async fn mark_recommendation(
        &self,
        namespace: &str,
        uid: &str,
        phase: &str,
        message: &str,
        decided_by: Option<&str>,
    ) {
        let api = Api::<Recommendation>::namespaced(self.client.clone(), namespace);
        let name = recommendation_name(uid);
        let status =
            json!({"status": {"phase": phase, "message": message, "decidedBy": decided_by}});
        let pp = PatchParams::default();
        match api.patch_status(&name, &pp, &Patch::Merge(&status)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "updating the Recommendation's status failed")
            }
        }
    }

    /// Sets an Approval's result (best effort: an Approval left without one
    /// is looked at again next cycle, and the journal accepts each
    /// decision once).
    async fn mark_approval(&self, a: &Approval, result: &str, message: &str) {
        let ns = a.namespace().unwrap_or_default();
        let api = Api::<Approval>::namespaced(self.client.clone(), &ns);
        let status = json!({"status": {"result": result, "message": message}});
        if let Err(error) = api
            .patch_status(
                &a.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
        {
            tracing::warn!(namespace = %ns, name = %a.name_any(), %error, "updating the Approval's status failed");
        }
    }

    /// The Approvals in the agent's scope that have no result yet.
    async fn open_approvals(&self) -> Result<Vec<Approval>, kube::Error> {
        let lp = ListParams::default();
        let mut out = Vec::new();
        if self.scope.is_all() {
            out = Api::<Approval>::all(self.client.clone())
                .list(&lp)
                .await?
                .items;
        } else {
            for ns in self.scope.list() {
                let api = Api::<Approval>::namespaced(self.client.clone(), ns);
                out.extend(api.list(&lp).await?.items);
            }
        }
        out.retain(|a| a.status.as_ref().is_none_or(|s| s.result.is_empty()));
        out.sort_by_key(|a| a.creation_timestamp().map(|t| t.0));
        Ok(out)
    }

    async fn admission_state(&self, name: &str) -> Result<AdmissionState, kube::Error> {
        use k8s_openapi::api::admissionregistration::v1::{
            ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
        };
        let policy = Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .get_opt(name)
            .await?;
        let binding = Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .get_opt(name)
            .await?;
        Ok(AdmissionState {
            policy: policy.map(|p| serde_json::to_value(p).unwrap_or_default()),
            binding: binding.map(|b| serde_json::to_value(b).unwrap_or_default()),
        })
    }

    /// Whether Approval `a` is accepted, and for which journal entry; `Err`
    /// is why not (final: the Approval is marked refused).
    /// `admission` is the admission policy as read for this pass, or why
    /// it could not be (`None` when the agent has none configured).
    async fn accept(
        &self,
        a: &Approval,
        pending: &[Recorded],
        admission: Option<&Result<AdmissionState, String>>,
    ) -> Result<Accepted, String> {
        let spec = &a.spec;
        let (Some(policy_name), Some(state)) = (&self.approvals.admission_policy, admission) else {
            return Err("approvals are not accepted: the agent runs without an admission policy that proves approvers (--approval-policy)".into());
        };
        let created = a
            .creation_timestamp()
            .map(|t| t.0.as_second())
            .unwrap_or(i64::MIN);
        let state = state.as_ref().map_err(Clone::clone)?;
        admission_vouches(policy_name, state, created, self.approvals.settle_seconds)?;
        match &self.approvals.own_user {
            None => {
                return Err(
                    "the agent does not know its own user name, so it cannot rule out self-approval"
                        .into(),
                );
            }
            Some(me) if *me == spec.approver => {
                return Err(format!(
                    "{me} is the agent itself: it does not approve its own recommendations"
                ));
            }
            Some(_) => {}
        }
        let ns = a.namespace().unwrap_or_default();
        let Some(r) = pending
            .iter()
            .find(|r| recommendation_name(&r.row.entry.uid) == spec.recommendation)
        else {
            return Err(format!(
                "{} is not a pending recommendation (already decided, superseded, or unknown)",
                spec.recommendation
            ));
        };
        if r.row.entry.namespace != ns {
            return Err(format!(
                "the recommendation changes namespace {}; approve it there",
                r.row.entry.namespace
            ));
        }
        let obj = self
            .fetch_target(r.target())
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} no longer exists", r.target()))?;
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default();
        if entry_digest(&r.row.entry, uid).as_deref() != Some(spec.digest.as_str()) {
            return Err(format!(
                "the digest {} is not that of the journaled change on {} as it is now (altered content, or the target was recreated): nothing sent",
                spec.digest,
                r.target()
            ));
        }
        let by = format!("{} (Approval {ns}/{})", spec.approver, a.name_any());
        let id = r.row.id;
        Ok(match spec.decision {
            Decision::Approve => Accepted::Approve { id, by },
            Decision::Reject => Accepted::Reject { id, by },
        })
    }

    /// Applies the Approvals people created since the last cycle (see the
    /// module doc). Returns what was sent or rejected.
    pub async fn apply_approvals(
        &self,
        policy: &(impl PolicySource + ?Sized),
        now: i64,
    ) -> Result<Vec<Executed>, Error> {
        let approvals = match self.open_approvals().await {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "listing Approvals failed; none applied this cycle");
                return Ok(Vec::new());
            }
        };
        if approvals.is_empty() {
            return Ok(Vec::new());
        }
        // The admission policy, read once for the pass (not once per
        // Approval); unreadable, every Approval of the pass is refused, as
        // its approver is not proven.
        let admission = match &self.approvals.admission_policy {
            Some(name) => Some(
                self.admission_state(name)
                    .await
                    .map_err(|e| format!("cannot read the admission policy {name}: {e}")),
            ),
            None => None,
        };
        let pending = self
            .journal
            .list(1000, true)
            .await?
            .into_iter()
            .map(Recorded::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        for a in &approvals {
            let ns = a.namespace().unwrap_or_default();
            let name = a.name_any();
            let accepted = match self.accept(a, &pending, admission.as_ref()).await {
                Ok(accepted) => accepted,
                Err(reason) => {
                    tracing::warn!(namespace = %ns, approval = %name, approver = %a.spec.approver, %reason, "approval refused");
                    self.mark_approval(a, result::REFUSED, &reason).await;
                    continue;
                }
            };
            let (done, approver) = match accepted {
                Accepted::Approve { id, by } => match self.approve(id, &by, policy, now).await {
                    Ok(done) => (done, by),
                    // The gate holds it back for now (a guard, the kill
                    // switch, the mode): it waits, and says why.
                    Err(Error::ApproveEntry { reason, .. }) => {
                        tracing::info!(namespace = %ns, approval = %name, %reason, "approval waits");
                        if a.status.as_ref().is_none_or(|s| s.message != reason) {
                            self.mark_approval(a, "", &reason).await;
                        }
                        continue;
                    }
                    Err(error) => return Err(error),
                },
                Accepted::Reject { id, by } => (self.reject(id, &by, now).await?, by),
            };
            let (res, ph) = match done.outcome.as_str() {
                outcome::APPLIED => (result::APPLIED, phase::APPLIED),
                outcome::REJECTED => (result::REJECTED, phase::REJECTED),
                _ => (result::FAILED, phase::FAILED),
            };
            let message = format!("journal #{}: {} — {}", done.id, done.outcome, done.detail);
            self.mark_approval(a, res, &message).await;
            if let Some(r) = pending.iter().find(|r| r.row.id == done.id) {
                self.mark_recommendation(
                    &ns,
                    &r.row.entry.uid,
                    ph,
                    &message,
                    Some(a.spec.approver.as_str()),
                )
                .await;
            }
            tracing::info!(namespace = %ns, approval = %name, by = %approver, id = done.id, outcome = %done.outcome, "approval applied");
            out.push(done);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(created: &str, spec: Value) -> Value {
        json!({"metadata": {"creationTimestamp": created}, "spec": spec})
    }

    #[test]
    fn an_approval_is_vouched_for_only_by_a_denying_binding_older_than_it() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("time")
                .timestamp()
        };
        let policy = obj("2026-12-01T10:00:00Z", json!({}));
        let binding = |actions: Value| {
            obj(
                "2026-12-01T10:00:01Z",
                json!({"policyName": "ap-approvals", "validationActions": actions}),
            )
        };
        let state = |p: Option<Value>, b: Option<Value>| AdmissionState {
            policy: p,
            binding: b,
        };
        let after = at("2026-12-01T11:00:00Z");
        let ok = state(Some(policy.clone()), Some(binding(json!(["Deny"]))));
        assert_eq!(admission_vouches("ap-approvals", &ok, after, 10), Ok(()));
        // Missing policy or binding.
        let e = admission_vouches(
            "ap-approvals",
            &state(None, Some(binding(json!(["Deny"])))),
            after,
            10,
        );
        assert!(
            e.expect_err("refused")
                .contains("ValidatingAdmissionPolicy ap-approvals")
        );
        let e = admission_vouches(
            "ap-approvals",
            &state(Some(policy.clone()), None),
            after,
            10,
        );
        assert!(e.expect_err("refused").contains("Binding ap-approvals"));
        // A binding that only warns or audits proves nothing.
        let warn = state(
            Some(policy.clone()),
            Some(binding(json!(["Warn", "Audit"]))),
        );
        assert!(
            admission_vouches("ap-approvals", &warn, after, 10)
                .expect_err("refused")
                .contains("Deny")
        );
        // A binding of another policy.
        let mut other = binding(json!(["Deny"]));
        other["spec"]["policyName"] = json!("something-else");
        let e = admission_vouches(
            "ap-approvals",
            &state(Some(policy.clone()), Some(other)),
            after,
            10,
        );
        assert!(e.expect_err("refused").contains("does not bind"));
        // An Approval older than the policy, or made before it could load,
        // may have passed unchecked.
        let before = at("2026-12-01T09:59:00Z");
        assert!(
            admission_vouches("ap-approvals", &ok, before, 10)
                .expect_err("refused")
                .contains("newer")
        );
        let too_soon = at("2026-12-01T10:00:05Z");
        assert!(admission_vouches("ap-approvals", &ok, too_soon, 10).is_err());
        assert_eq!(
            admission_vouches("ap-approvals", &ok, at("2026-12-01T10:00:11Z"), 10),
            Ok(())
        );
    }
}
