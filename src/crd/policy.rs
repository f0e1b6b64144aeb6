//! `AutopilotPolicy`: the limits every write is judged against when it is
//! sent, as a typed, schema-validated kind. One object, named
//! [`POLICY_NAME`], in the agent's namespace; the chart installs it.
//!
//! A kind rather than ConfigMap strings, so that `kubectl apply` rejects a
//! typo or a negative cooldown before the agent sees it, and so that RBAC
//! can let the agent read its policy but never edit it. Stop every action
//! with (the chart's admission policy wants every change to name its
//! author, checked against the API server's own user):
//!
//! ```text
//! ME=$(kubectl auth whoami -o jsonpath='{.status.userInfo.username}')
//! kubectl -n autopilot patch autopilotpolicy autopilot --type merge \
//!   -p '{"metadata":{"annotations":{"autopilot.payments.io/changed-by":"'"$ME"'"}},"spec":{"killSwitch":true}}'
//! ```
//!
//! Types only: the guards that read it are `act::guard`'s.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Name of the one policy object, in the agent's namespace.
pub const POLICY_NAME: &str = "autopilot";

/// The guard policy. Absent fields take their defaults
/// ([`Policy::default`]). (`JsonSchema`, not `KubeSchema`: the latter cannot
/// default a whole struct; the CEL rule lives on [`Freeze`].)
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "payments.io",
    version = "v1",
    kind = "AutopilotPolicy",
    plural = "autopilotpolicies",
    shortname = "appolicy",
    category = "autopilot",
    namespaced,
    printcolumn = r#"{"name":"Kill switch","type":"boolean","jsonPath":".spec.killSwitch"}"#,
    printcolumn = r#"{"name":"Cooldown","type":"integer","jsonPath":".spec.cooldownSeconds"}"#,
    printcolumn = r#"{"name":"Per hour","type":"integer","jsonPath":".spec.globalPerHour"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", default)]
pub struct Policy {
    /// Refuse every write: actions, approvals, undos and the controllers'
    /// automatic rollbacks.
    pub kill_switch: bool,
    /// Seconds after an action on a target before the next one on it.
    #[schemars(range(min = 0, max = 604800))]
    pub cooldown_seconds: i64,
    /// Actions per runbook per hour.
    #[schemars(range(max = 10000))]
    pub runbook_per_hour: u32,
    /// Actions per hour, all runbooks.
    #[schemars(range(max = 10000))]
    pub global_per_hour: u32,
    /// Disruptive actions per namespace per hour.
    #[schemars(range(max = 1000))]
    pub disruptive_per_namespace_per_hour: u32,
    /// Disruptive actions per hour cluster-wide.
    #[schemars(range(max = 1000))]
    pub disruptive_per_hour: u32,
    /// Largest relative change of one value by one action (0.5 = ±50 %);
    /// a move from 0 counts as a change of the whole new value.
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_relative_change: f64,
    /// Largest replication lag (seconds), as the agent observes it, of a
    /// switchover candidate.
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub max_switchover_lag_seconds: f64,
    /// When non-empty, disruptive actions only inside one of these windows.
    #[schemars(length(max = 50))]
    pub maintenance_windows: Vec<Window>,
    /// Time windows when nothing at all is sent (a release freeze, a peak
    /// sales day): every action, approval and undo waits.
    #[schemars(length(max = 100))]
    pub change_freezes: Vec<Freeze>,
    /// In auto mode, a new runbook version (a change of its source) only
    /// recommends until this many of its actions were approved by a person
    /// and applied; then it acts on its own. Whoever edits the rules does
    /// not get the agent's write authority at once. 0 (the default): off.
    #[schemars(range(max = 100))]
    pub new_runbook_approvals: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            kill_switch: false,
            cooldown_seconds: 900,
            runbook_per_hour: 6,
            global_per_hour: 30,
            disruptive_per_namespace_per_hour: 2,
            disruptive_per_hour: 4,
            max_relative_change: 1.0,
            max_switchover_lag_seconds: 5.0,
            maintenance_windows: Vec::new(),
            change_freezes: Vec::new(),
            new_runbook_approvals: 0,
        }
    }
}

/// A maintenance window: it opens at each occurrence of `schedule` (cron,
/// UTC, standard weekdays: `0 2 * * 6` is Saturday 02:00; see
/// `crate::schedule`) and lasts `durationSeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// Five-field cron expression, UTC.
    #[schemars(length(min = 9, max = 100))]
    pub schedule: String,
    #[schemars(range(min = 1, max = 604800))]
    pub duration_seconds: i64,
}

/// A change freeze: from `start` (inclusive) to `end` (exclusive), nothing
/// is sent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.end > self.start").message("end must be after start"))]
pub struct Freeze {
    /// RFC 3339, e.g. `2026-11-27T00:00:00Z`.
    pub start: Time,
    pub end: Time,
    /// Shown in every refusal it causes, e.g. `Black Friday`.
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub reason: String,
}

impl Freeze {
    /// A time from unix seconds (0 for one out of range).
    pub fn time(unix: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(unix).unwrap_or_default())
    }

    /// Whether `now` (unix seconds) falls inside the freeze.
    pub fn covers(&self, now: i64) -> bool {
        self.start.0.as_second() <= now && now < self.end.0.as_second()
    }
}
