//! The value the detectors produce and the runbooks consume.

use serde::{Deserialize, Serialize};

/// Which component a series or a finding belongs to: the Kubernetes object
/// that represents it (a CNPG `Cluster`, a `KafkaNodePool`, a
/// `PaymentGateway`, …).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    /// Kind of the representing object, e.g. `Cluster` or `PaymentGateway`.
    pub kind: String,
    /// Namespace; empty for cluster-scoped components.
    pub namespace: String,
    pub name: String,
}

/// `Kind/namespace/name`: the one spelling of a component in logs, journal
/// rows (`target`) and guard keys.
impl std::fmt::Display for ComponentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// What a detector concluded about one series of one component.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Finding {
    pub component: ComponentId,
    /// The metric (model spec signal) the finding is about, e.g. `replication_lag`.
    pub signal: String,
    /// Detector that fired, e.g. `ewma`, `mad`, `cusum`, `forecast`.
    pub detector: String,
    /// Anomaly score in `[0, 1]`.
    pub score: f64,
    /// Unix seconds of the sample that produced the finding.
    pub at: i64,
    /// The sample value at `at`.
    pub value: f64,
    /// What the detector compared against (mean, median, seasonal baseline, threshold).
    pub baseline: f64,
    /// For forecasts: seconds until the series is expected to cross its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_threshold_seconds: Option<f64>,
    /// One line for humans: why this fired.
    pub explanation: String,
    /// The stretch of the series the sample was judged against, for
    /// detectors that compare with a baseline and a spread (absent for
    /// forecasts, contextual and multivariate findings). Runbooks read it as
    /// `finding.window.start` and so on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<JudgedWindow>,
}

/// The baseline a finding was judged against, so a reviewer can see why:
/// `value` was `(value − baseline) / spread` σ away from what the samples
/// between `start` and `end` looked like.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct JudgedWindow {
    /// Unix seconds of the oldest sample the baseline still reflects. For a
    /// window counted in samples it is estimated from the mean interval
    /// since the series (re)started, and never before that start.
    pub start: i64,
    /// Unix seconds of the newest sample before the one judged.
    pub end: i64,
    /// Samples the baseline reflects, when it is counted in samples (for a
    /// seasonal slot it is counted in periods: `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// The centre compared against (mean, median, slot mean, expected value).
    pub baseline: f64,
    /// The σ the distance was divided by.
    pub spread: f64,
}

#[cfg(test)]
impl Finding {
    /// An EWMA finding of `score` on `signal` of `component`, at time 0:
    /// the base of the tests that feed findings to runbooks.
    pub fn fixture(component: ComponentId, signal: &str, score: f64) -> Self {
        Finding {
            component,
            signal: signal.into(),
            detector: "ewma".into(),
            score,
            at: 0,
            value: 1.0,
            baseline: 0.1,
            time_to_threshold_seconds: None,
            explanation: String::new(),
            window: None,
        }
    }
}
