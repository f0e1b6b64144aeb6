//! The journal as `act` sees it: a small trait, so the executor does not
//! depend on a pool or a database. `store` implements it with sqlx.

use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::decide::Mode;

/// What is known about an action before anything is sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct NewEntry {
    /// The action's ID across every journal there will ever be (a ULID):
    /// tagged on the objects it writes and named by approvals. The row id
    /// is this journal's own short handle for the CLI.
    pub uid: String,
    /// Unix seconds of the decision.
    pub at: i64,
    pub runbook: String,
    /// SHA-256 of the runbook source that decided.
    pub runbook_hash: String,
    /// Who made that version of the runbook: the rules ConfigMap's
    /// [`CHANGED_BY_ANNOTATION`](crate::crd::CHANGED_BY_ANNOTATION) when the
    /// version was first seen (see [`Journal::record_runbook_version`]);
    /// `None` for a runbook from a folder, an unknown editor, an undo, and
    /// rows journaled before it was recorded.
    #[serde(default)]
    pub runbook_editor: Option<String>,
    /// `finding`, `cron`, `condition`, `undo`, …
    pub trigger: String,
    /// The findings (or other facts) behind the decision, as JSON.
    pub evidence: serde_json::Value,
    /// The intent as the runbook returned it, as JSON.
    pub action: serde_json::Value,
    pub action_kind: String,
    /// `kind/namespace/name`
    pub target: String,
    pub namespace: String,
    /// The planned change (`act::action::Change`), none when planning failed.
    pub patch: Option<serde_json::Value>,
    pub inverse: Option<serde_json::Value>,
    pub disruptive: bool,
    /// `dry-run`, `recommend` or `auto` (the effective mode).
    pub mode: String,
    /// [`verdict::ALLOWED`], the refusing guard's name, or
    /// [`verdict::PLAN_FAILED`].
    pub verdict: String,
    pub verdict_detail: String,
    pub verify: Option<serde_json::Value>,
    /// For an undo: the entry it undoes.
    pub undo_of: Option<i64>,
}

/// A new action ID: a ULID, unique across journals and sortable by time.
pub fn new_uid() -> String {
    ulid::Ulid::new().to_string()
}

impl NewEntry {
    /// The journaled mode, parsed: it is written from [`Mode::as_str`], so
    /// an unknown one means the row is unreadable.
    pub fn parsed_mode(&self) -> Result<Mode, String> {
        self.mode.parse()
    }

    /// A scale of `PaymentGateway/pay/gw` by `autoscale-gateway`, allowed
    /// in auto mode at time 0: the base of the executor's unit tests.
    #[cfg(test)]
    pub fn fixture() -> Self {
        NewEntry {
            uid: "01JDZ7Q8W3V6X2K9M4N5P6R7S8".into(),
            at: 0,
            runbook: "autoscale-gateway".into(),
            runbook_hash: "h".into(),
            runbook_editor: None,
            trigger: "finding".into(),
            evidence: serde_json::json!([]),
            action: serde_json::json!({}),
            action_kind: "scale_replicas".into(),
            target: "PaymentGateway/pay/gw".into(),
            namespace: "pay".into(),
            patch: None,
            inverse: None,
            disruptive: false,
            mode: "auto".into(),
            verdict: "allowed".into(),
            verdict_detail: String::new(),
            verify: None,
            undo_of: None,
        }
    }
}

/// A journal row.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JournalEntry {
    pub id: i64,
    #[serde(flatten)]
    pub entry: NewEntry,
    /// Result of the server-side dry run (`ok` or the API server's message).
    pub dry_run: Option<String>,
    /// See [`outcome`]; `None` while in flight.
    pub outcome: Option<String>,
    pub outcome_detail: Option<String>,
    pub outcome_at: Option<i64>,
    pub verification: Option<String>,
    /// `approved by X` / `rejected by X`.
    pub approval: Option<String>,
}

/// Outcome values.
pub mod outcome {
    pub const APPLIED: &str = "applied";
    pub const FAILED: &str = "failed";
    pub const DRY_RUN: &str = "dry_run";
    pub const RECOMMENDED: &str = "recommended";
    pub const REFUSED: &str = "refused";
    pub const REJECTED: &str = "rejected";
    /// Found unsent after a restart, too old to send.
    pub const ABANDONED: &str = "abandoned";
    /// An applied action later reverted by its inverse.
    pub const UNDONE: &str = "undone";
    /// The write was sent but its reply was lost or was a server error
    /// (5xx, 429, a timeout): it may have taken effect. It counts against
    /// cooldowns and budgets like an applied one.
    pub const UNKNOWN: &str = "unknown";
}

/// Verdict values besides the refusing guard's name.
pub mod verdict {
    /// The guards allowed it.
    pub const ALLOWED: &str = "allowed";
    /// The target could not be read, or the action does not plan against it.
    pub const PLAN_FAILED: &str = "plan_failed";
}

#[derive(Debug, thiserror::Error)]
#[error("{operation} in the journal failed: {reason}")]
pub struct Error {
    pub operation: &'static str,
    pub reason: String,
}

impl Error {
    pub fn kind(&self) -> &'static str {
        self.operation
    }
}

/// Where actions are recorded. Implementations must make `record_intent`
/// durable before returning: the executor sends nothing until it has.
pub trait Journal: Send + Sync {
    fn record_intent(&self, entry: &NewEntry) -> impl Future<Output = Result<i64, Error>> + Send;
    /// Records an intent that is sent at once, judged in the same step:
    /// `check` (the gate) judges it against the journal's entries decided at
    /// or after `since`, as they are when it is recorded. The entry is
    /// recorded whatever the verdict: allowed, without an outcome yet (it
    /// counts against every later check from the moment it is recorded), or
    /// refused, with outcome `refused` and the refusal as its detail (it
    /// counts against nothing).
    ///
    /// Several agents (shards) on one PostgreSQL journal share the global
    /// guards (the global rate, the cluster-wide disruption budget): there
    /// the read, the check and the insert happen in one transaction under
    /// one advisory lock, so two writers never both spend the last unit of
    /// a budget, and one of them always does. A SQLite journal has one
    /// writer, which checks then inserts.
    fn record_intent_checked<T: Send, R: std::fmt::Display + Send>(
        &self,
        entry: &NewEntry,
        since: i64,
        check: impl FnOnce(&[JournalEntry]) -> Result<T, R> + Send,
    ) -> impl Future<Output = Result<(i64, Result<T, R>), Error>> + Send;
    fn record_dry_run(
        &self,
        id: i64,
        result: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    fn record_outcome(
        &self,
        id: i64,
        outcome: &str,
        detail: &str,
        at: i64,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    fn record_verification(
        &self,
        id: i64,
        result: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Claims recommendation `id` for a person's `approval` ("approved by
    /// …") if `check` (the gate) allows it, judged against the entries
    /// decided at or after `since` as they are at the claim; on a shared
    /// PostgreSQL journal in one transaction under the guard lock, like
    /// [`Journal::record_intent_checked`], so an approval and another
    /// shard's action never both spend the last unit of a budget. The claim
    /// also sets `outcome_at` to `at`: the claimed entry counts against the
    /// guards from then on, not from when it was recommended. `None` when
    /// it was already claimed (approved, rejected or superseded); nothing
    /// is claimed when `check` refuses.
    fn record_approval_checked<T: Send, R: Send>(
        &self,
        id: i64,
        approval: &str,
        at: i64,
        since: i64,
        check: impl FnOnce(&[JournalEntry]) -> Result<T, R> + Send,
    ) -> impl Future<Output = Result<Option<Result<T, R>>, Error>> + Send;
    /// Sets the approval only if none is set yet; returns whether it did.
    fn record_approval(
        &self,
        id: i64,
        approval: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
    fn get(&self, id: i64) -> impl Future<Output = Result<Option<JournalEntry>, Error>> + Send;
    /// Newest first; `pending` = recommendations awaiting approval.
    fn list(
        &self,
        limit: i64,
        pending: bool,
    ) -> impl Future<Output = Result<Vec<JournalEntry>, Error>> + Send;
    /// Entries decided at or after `at` (guard history).
    fn since(&self, at: i64) -> impl Future<Output = Result<Vec<JournalEntry>, Error>> + Send;
    /// Entries decided at or after `at` that were applied, state what
    /// should improve (`verify`) and have no verification yet: what the
    /// verifier judges every cycle, read without the rest of the journal
    /// (refusals, dry runs, recommendations), which grows with the estate.
    fn awaiting_verification(
        &self,
        at: i64,
    ) -> impl Future<Output = Result<Vec<JournalEntry>, Error>> + Send;
    /// Entries a crash interrupted: any entry without an outcome, and
    /// approved recommendations not yet applied.
    fn unresolved(&self) -> impl Future<Output = Result<Vec<JournalEntry>, Error>> + Send;
    /// Records that version `hash` of `runbook` was loaded at `at`, made by
    /// `editor`, unless the version is known already; returns the editor
    /// stored for it: the one who first made that exact source, whoever
    /// loads it again later (a restart, an edit of another runbook).
    fn record_runbook_version(
        &self,
        runbook: &str,
        hash: &str,
        editor: Option<&str>,
        at: i64,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;
    /// How many actions of runbook version `runbook_hash` a person approved
    /// (approval `approved by …`) and that were applied: outcome applied,
    /// undone later, or unknown (possibly applied). Superseded, rejected and
    /// failed ones do not count.
    fn approved_count(&self, runbook_hash: &str)
    -> impl Future<Output = Result<i64, Error>> + Send;
}
