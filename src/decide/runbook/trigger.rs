//! A runbook's trigger: when it runs (findings on a component kind, a
//! cron schedule, a resource's condition) and whether a finding fires it.
//!
//! Pure: judges findings handed in; must not evaluate scripts (that is
//! `runbook`) nor read the cluster.

use serde::{Deserialize, Serialize};

use crate::detect::Finding;

/// When a runbook runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Findings of detectors on one component kind.
    Findings(FindingTrigger),
    /// A cron schedule (5 fields, or 6 with seconds first), evaluated in UTC
    /// with standard weekdays (0 or 7 = Sunday, see `crate::schedule`); with
    /// `kind`, once per resource of that kind.
    Cron {
        schedule: String,
        #[serde(default)]
        kind: Option<String>,
    },
    /// A condition of a resource of `kind`, e.g. PaymentGateway `Degraded=True`.
    Condition {
        kind: String,
        condition: String,
        #[serde(default = "default_true")]
        status: String,
    },
}

fn default_true() -> String {
    "True".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FindingTrigger {
    /// Component kind, e.g. `PaymentGateway`, `Cluster`.
    pub kind: String,
    /// Signals to react to; empty = any.
    #[serde(default)]
    pub signals: Vec<String>,
    /// Detectors to react to; empty = any.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Lowest calibrated score that fires: how rare the sample is on its
    /// series, past the detector's limit (the same for every detector that
    /// judges samples against a baseline). Not applied to forecasts, whose
    /// score says how soon: they are judged by `horizon_seconds`.
    #[serde(default)]
    pub min_score: f64,
    /// For forecasts: fire only when the threshold is expected to be
    /// crossed within this many seconds; without it, any forecast finding
    /// (a crossing within its model's own horizon) fires. Other findings
    /// are judged by `min_score` and ignore it.
    #[serde(default)]
    pub horizon_seconds: Option<f64>,
    /// Fire only on values above (or below) the detector's baseline: most
    /// detectors are two-sided, and a latency or error rate that *drops* is
    /// no reason to scale out or roll back. Forecasts carry their own
    /// direction (towards their threshold) and always pass.
    #[serde(default)]
    pub direction: Option<Direction>,
}

impl std::fmt::Display for Trigger {
    /// One line for `autopilot runbook check`, e.g. `findings on
    /// PaymentGateway [error_rate] score >= 0.8, above baseline`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Findings(t) => {
                write!(f, "findings on {}", t.kind)?;
                if !t.signals.is_empty() {
                    write!(f, " [{}]", t.signals.join(", "))?;
                }
                if !t.detectors.is_empty() {
                    write!(f, " by {}", t.detectors.join(", "))?;
                }
                match (t.min_score, t.horizon_seconds) {
                    (m, Some(h)) if m > 0.0 => {
                        write!(f, " score >= {m}, forecasts crossing within {h}s")?
                    }
                    (_, Some(h)) => write!(f, ", forecasts crossing within {h}s")?,
                    (m, None) => write!(f, " score >= {m}")?,
                }
                match t.direction {
                    Some(Direction::Above) => write!(f, ", above baseline"),
                    Some(Direction::Below) => write!(f, ", below baseline"),
                    None => Ok(()),
                }
            }
            Trigger::Cron { schedule, kind } => match kind {
                Some(k) => write!(f, "cron {schedule:?} for every {k}"),
                None => write!(f, "cron {schedule:?}"),
            },
            Trigger::Condition {
                kind,
                condition,
                status,
            } => write!(f, "{kind} condition {condition}={status}"),
        }
    }
}

/// Which side of the baseline a finding must be on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Above,
    Below,
}

/// Whether a finding is a forecast's: judged by how soon its threshold is
/// crossed, not by how rare its sample is.
pub fn is_forecast(f: &Finding) -> bool {
    f.detector == "forecast" || f.time_to_threshold_seconds.is_some()
}

impl FindingTrigger {
    /// Whether `f` fires the trigger: a forecast when its crossing is
    /// within `horizon_seconds` (if set), any other finding when its
    /// calibrated score is at least `min_score`. One number never reads
    /// two ways: a rarity for one signal and a time for another.
    pub fn matches(&self, f: &Finding) -> bool {
        self.matches_at_any_score(f)
            && if is_forecast(f) {
                match self.horizon_seconds {
                    None => true,
                    Some(h) => f.time_to_threshold_seconds.is_some_and(|t| t <= h),
                }
            } else {
                f.score >= self.min_score
            }
    }

    /// [`Self::matches`] at whatever score (or time to threshold) the
    /// detector still reports the finding: what keeps a deferred runbook
    /// armed (`triggered_by_findings`).
    pub fn matches_at_any_score(&self, f: &Finding) -> bool {
        f.component.kind == self.kind
            && (self.signals.is_empty() || self.signals.contains(&f.signal))
            && (self.detectors.is_empty() || self.detectors.contains(&f.detector))
            && match (self.direction, f.time_to_threshold_seconds) {
                (None, _) | (_, Some(_)) => true,
                (Some(Direction::Above), None) => f.value > f.baseline,
                (Some(Direction::Below), None) => f.value < f.baseline,
            }
    }
}
