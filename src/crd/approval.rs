//! `Recommendation` and `Approval`: a recommendation awaiting review, and a
//! person's decision on it, as Kubernetes objects in the target's namespace.
//!
//! The agent creates a `Recommendation` for every change it recommends: the
//! patch, its inverse, the runbook and its version, and a digest that binds
//! them to the target object (its uid). The spec is immutable (`self ==
//! oldSelf`): what was reviewed is what can be approved.
//!
//! A person approves (or rejects) it by creating an `Approval` that names the
//! recommendation, repeats its digest, and names themselves as `approver`:
//!
//! ```text
//! autopilot actions approve 01jdz7q8w3v6x2k9m4n5p6r7s8 -n payments
//! ```
//!
//! RBAC (`create approvals` in a namespace) decides who may approve there;
//! the chart's ValidatingAdmissionPolicy makes the API server refuse an
//! Approval whose `approver` is not the user who sends it, so the name the
//! journal records is the API server's, not a claim. The agent's own service
//! account may not create Approvals (no self-approval).
//!
//! Types and the pure digest only; the executor judges approvals.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A recommended change, as the agent journaled it. Immutable.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "payments.io",
    version = "v1",
    kind = "Recommendation",
    plural = "recommendations",
    shortname = "aprec",
    category = "autopilot",
    namespaced,
    status = "RecommendationStatus",
    printcolumn = r#"{"name":"Runbook","type":"string","jsonPath":".spec.runbook"}"#,
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Decided by","type":"string","jsonPath":".status.decidedBy"}"#,
    printcolumn = r#"{"name":"Digest","type":"string","priority":1,"jsonPath":".spec.digest"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Recommendation is immutable: what was reviewed is what is approved"))]
#[serde(rename_all = "camelCase")]
pub struct RecommendationSpec {
    /// The action's ID in the journal (a ULID); the object's name is its
    /// lower-case form.
    #[schemars(length(min = 26, max = 26))]
    pub action_id: String,
    pub runbook: String,
    /// SHA-256 of the runbook source that decided.
    pub runbook_hash: String,
    /// Who last changed that runbook, as the rules' admission recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_editor: Option<String>,
    /// The action kind, e.g. `scale_replicas`.
    pub action: String,
    pub target: RecommendedTarget,
    /// Why the runbook proposed it (its reason and the findings behind it).
    #[serde(default)]
    pub reason: String,
    /// The change that an approval sends (`act::action::Change`).
    #[schemars(schema_with = "any_object")]
    pub change: Value,
    /// The change that undoes it, if it can be undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub inverse: Option<Value>,
    /// [`digest`] of the target's uid, the change, the inverse and the
    /// runbook hash: an Approval must repeat it.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub digest: String,
}

/// The object a recommendation changes, by uid: an approval is for this
/// object, not for a later one of the same name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecommendedTarget {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// What became of a recommendation (the agent writes it).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecommendationStatus {
    /// `Pending`, then `Applied`, `Failed`, `Rejected` or `Superseded`.
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub message: String,
    /// The approver or rejecter, as the API server authenticated them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
}

/// A person's decision on a recommendation. Immutable.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "payments.io",
    version = "v1",
    kind = "Approval",
    plural = "approvals",
    shortname = "apappr",
    category = "autopilot",
    namespaced,
    status = "ApprovalStatus",
    printcolumn = r#"{"name":"Recommendation","type":"string","jsonPath":".spec.recommendation"}"#,
    printcolumn = r#"{"name":"Decision","type":"string","jsonPath":".spec.decision"}"#,
    printcolumn = r#"{"name":"Approver","type":"string","jsonPath":".spec.approver"}"#,
    printcolumn = r#"{"name":"Result","type":"string","jsonPath":".status.result"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("an Approval is immutable: create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// The Recommendation's name, in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub recommendation: String,
    /// The Recommendation's digest, as reviewed.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub digest: String,
    /// The user creating this object, exactly as the API server knows them
    /// (`kubectl auth whoami`); the chart's admission policy refuses any
    /// other name.
    #[schemars(length(min = 1, max = 253))]
    pub approver: String,
    pub decision: Decision,
    /// Why, for the journal.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub reason: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Decision {
    Approve,
    Reject,
}

/// What the agent made of an Approval.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStatus {
    /// `Applied`, `Rejected`, `Failed` or `Refused` (the approval was not
    /// accepted: see `message`).
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub message: String,
}

/// Approval results, as written to `status.result`.
pub mod result {
    pub const APPLIED: &str = "Applied";
    pub const REJECTED: &str = "Rejected";
    pub const FAILED: &str = "Failed";
    pub const REFUSED: &str = "Refused";
}

/// Recommendation phases, as written to `status.phase`.
pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const APPLIED: &str = "Applied";
    pub const FAILED: &str = "Failed";
    pub const REJECTED: &str = "Rejected";
    pub const SUPERSEDED: &str = "Superseded";
}

/// The name of the Recommendation of action `uid` (a ULID, upper case):
/// object names are lower case.
pub fn recommendation_name(uid: &str) -> String {
    uid.to_ascii_lowercase()
}

/// The digest that binds an approval to what was reviewed: SHA-256 (hex) of
/// the target object's uid, the change, its inverse and the runbook's hash,
/// as canonical JSON (keys sorted at every level), so it is the same after a
/// round trip through the API server or the journal.
pub fn digest(
    target_uid: &str,
    change: &Value,
    inverse: Option<&Value>,
    runbook_hash: &str,
) -> String {
    let bound = serde_json::json!({
        "targetUid": target_uid,
        "change": change,
        "inverse": inverse,
        "runbookHash": runbook_hash,
    });
    let mut h = Sha256::new();
    write_canonical(&bound, &mut h);
    format!("{:x}", h.finalize())
}

/// Writes `value` as JSON with sorted keys, into the hash.
fn write_canonical(value: &Value, h: &mut Sha256) {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            h.update(b"{");
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                h.update(Value::String(k.clone()).to_string().as_bytes());
                h.update(b":");
                write_canonical(&m[k], h);
            }
            h.update(b"}");
        }
        Value::Array(a) => {
            h.update(b"[");
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    h.update(b",");
                }
                write_canonical(v, h);
            }
            h.update(b"]");
        }
        other => h.update(other.to_string().as_bytes()),
    }
}

/// Schema of a free-form JSON object (a patch): kept as sent.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_digest_binds_the_object_the_change_the_inverse_and_the_runbook() {
        let change = json!({"type": "merge", "patch": {"spec": {"replicas": 5}}});
        let inverse = json!({"type": "merge", "patch": {"spec": {"replicas": 3}}});
        let d = digest("uid-1", &change, Some(&inverse), "h1");
        assert_eq!(d.len(), 64);
        assert!(
            d.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        // Key order does not matter; every bound value does.
        let reordered = json!({"patch": {"spec": {"replicas": 5}}, "type": "merge"});
        assert_eq!(d, digest("uid-1", &reordered, Some(&inverse), "h1"));
        let other_change = json!({"type": "merge", "patch": {"spec": {"replicas": 50}}});
        for other in [
            digest("uid-2", &change, Some(&inverse), "h1"),
            digest("uid-1", &other_change, Some(&inverse), "h1"),
            digest("uid-1", &change, None, "h1"),
            digest("uid-1", &change, Some(&inverse), "h2"),
        ] {
            assert_ne!(d, other);
        }
    }

    #[test]
    fn both_kinds_are_immutable_in_the_schema() {
        use kube::CustomResourceExt;
        for crd in [Recommendation::crd(), Approval::crd()] {
            let v = serde_json::to_value(&crd).expect("crd");
            let spec = &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
            assert!(
                spec["x-kubernetes-validations"]
                    .to_string()
                    .contains("self == oldSelf"),
                "{spec}"
            );
        }
    }

    #[test]
    fn a_recommendation_is_named_after_its_action_id_in_lower_case() {
        assert_eq!(
            recommendation_name("01JDZ7Q8W3V6X2K9M4N5P6R7S8"),
            "01jdz7q8w3v6x2k9m4n5p6r7s8"
        );
    }
}
