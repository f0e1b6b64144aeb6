//! The API server's audit log (`ControlPlane::audit_log`), read back as the
//! writes it records: the record of what reached the cluster that the
//! fault-injection tests hold the journal against.
//!
//! The test control plane logs, at level Request, every create, update,
//! patch and delete of a payments.io resource or a Deployment; an event is
//! written before the API server answers (blocking mode), so a write the
//! client saw succeed is always in the log.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde_json::Value;

/// The annotation the executor tags each object it patches with.
pub const ACTION_ID: &str = autopilot::act::action::ACTION_ID_ANNOTATION;

/// One write, as the API server recorded it when it answered.
#[derive(Clone, Debug)]
pub struct Write {
    /// `create`, `update`, `patch`, `delete`, …
    pub verb: String,
    /// e.g. `paymentgateways`.
    pub resource: String,
    /// e.g. `status`; empty for the main resource.
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The user the write was authorized as (the impersonated one, if any).
    pub user: String,
    /// The request body: for a merge patch, the patch as sent.
    pub request_object: Option<Value>,
    /// When the API server answered (RFC 3339, microseconds).
    pub stage_timestamp: String,
    /// The HTTP status of the answer.
    pub code: u16,
    /// A server-side dry run (nothing stored).
    pub dry_run: bool,
}

impl Write {
    /// Stored: answered 2xx, and not a dry run.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.code) && !self.dry_run
    }

    /// The resourceVersion the request body is locked to (optimistic
    /// locking), if any.
    pub fn locked_to(&self) -> Option<&str> {
        self.request_object.as_ref()?["metadata"]["resourceVersion"].as_str()
    }

    /// The action ID the request body carries in
    /// `metadata.annotations["autopilot.payments.io/action-id"]`.
    pub fn action_id(&self) -> Option<&str> {
        self.request_object.as_ref()?["metadata"]["annotations"][ACTION_ID].as_str()
    }
}

/// The write events of the audit log at `path`, in the order they were
/// logged, stage `ResponseComplete` only. Lines that are not JSON (a line
/// being written as we read) are skipped.
pub fn writes(path: &Path) -> Vec<Write> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter_map(|e| parse(&e))
        .collect()
}

fn parse(e: &Value) -> Option<Write> {
    let verb = e["verb"].as_str()?.to_string();
    if !matches!(
        verb.as_str(),
        "create" | "update" | "patch" | "delete" | "deletecollection"
    ) {
        return None;
    }
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let obj = &e["objectRef"];
    let user = e["impersonatedUser"]["username"]
        .as_str()
        .or_else(|| e["user"]["username"].as_str())
        .unwrap_or_default()
        .to_string();
    let uri = s(&e["requestURI"]);
    Some(Write {
        verb,
        resource: s(&obj["resource"]),
        subresource: s(&obj["subresource"]),
        namespace: s(&obj["namespace"]),
        name: s(&obj["name"]),
        user,
        request_object: e.get("requestObject").cloned(),
        stage_timestamp: s(&e["stageTimestamp"]),
        code: e["responseStatus"]["code"]
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(0),
        dry_run: uri.contains("dryRun=All"),
    })
}

/// The PATCHes of one namespace that carry an action ID and were stored,
/// in the order the API server answered them.
///
/// A write answered 2xx was stored. One answered 5xx (or with no status)
/// may have been stored all the same: when the client goes away mid-request
/// (an agent killed while it waits), the API server answers 504 at once
/// while the write it started may still reach etcd. Such a write is told
/// apart by its optimistic lock: every PATCH of the agent carries the
/// `resourceVersion` it read. If it was stored, that version was used up —
/// no later write succeeded on it, and the object no longer has it. So an
/// ambiguous PATCH locked to version X counts as stored unless a stored
/// write was locked to X too, or the object still has X now. One without a
/// lock counts as stored.
pub struct Stored<'a> {
    pub patches: Vec<&'a Write>,
    /// PATCHes with an action ID answered 5xx or not at all.
    pub ambiguous: usize,
    /// Of those, the ones stored all the same.
    pub ambiguous_stored: usize,
}

impl<'a> Stored<'a> {
    /// `current`: each object's name → its resourceVersion now.
    pub fn of(writes: &'a [Write], namespace: &str, current: &BTreeMap<String, String>) -> Self {
        let ours = |w: &&Write| {
            w.verb == "patch" && w.namespace == namespace && !w.dry_run && w.action_id().is_some()
        };
        // (object, version) pairs a stored write was locked to.
        let used: BTreeSet<(&str, &str)> = writes
            .iter()
            .filter(ours)
            .filter(|w| w.succeeded())
            .filter_map(|w| Some((w.name.as_str(), w.locked_to()?)))
            .collect();
        let mut out = Stored {
            patches: Vec::new(),
            ambiguous: 0,
            ambiguous_stored: 0,
        };
        for w in writes.iter().filter(ours) {
            let stored = if w.succeeded() {
                true
            } else if w.code >= 500 || w.code == 0 {
                out.ambiguous += 1;
                let stored = w.locked_to().is_none_or(|rv| {
                    !used.contains(&(w.name.as_str(), rv))
                        && current.get(&w.name).map(String::as_str) != Some(rv)
                });
                out.ambiguous_stored += usize::from(stored);
                stored
            } else {
                false
            };
            if stored {
                out.patches.push(w);
            }
        }
        out
    }

    /// The stored PATCHes by action ID.
    pub fn by_action(&self) -> BTreeMap<String, Vec<&'a Write>> {
        let mut by: BTreeMap<String, Vec<&Write>> = BTreeMap::new();
        for w in &self.patches {
            if let Some(id) = w.action_id() {
                by.entry(id.to_string()).or_default().push(w);
            }
        }
        by
    }

    /// The last stored PATCH of object `name`.
    pub fn last_of(&self, name: &str) -> Option<&'a Write> {
        self.patches.iter().rev().find(|w| w.name == name).copied()
    }
}
