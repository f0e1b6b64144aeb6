//! Reconciler metrics. Labels are bounded: the kind and a fixed error or
//! result category, never object names.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: IntCounterVec,
    pub failures: IntCounterVec,
    pub duration: HistogramVec,
    pub rollbacks: IntCounterVec,
    pub writes: IntCounterVec,
    pub applies_skipped: IntCounterVec,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            reconciles: IntCounterVec::new(
                Opts::new(
                    "autopilot_reconcile_total",
                    "Reconciles finished, by kind and result",
                ),
                &["kind", "result"],
            )?,
            failures: IntCounterVec::new(
                Opts::new(
                    "autopilot_reconcile_errors_total",
                    "Reconciles that failed, by kind and error category",
                ),
                &["kind", "error"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "autopilot_reconcile_duration_seconds",
                    "Time of one reconcile, by kind",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
                &["kind"],
            )?,
            rollbacks: IntCounterVec::new(
                Opts::new(
                    "autopilot_rollbacks_total",
                    "Automatic rollbacks to the last good version, by kind and reason",
                ),
                &["kind", "reason"],
            )?,
            writes: IntCounterVec::new(
                Opts::new(
                    "autopilot_reconcile_writes_total",
                    "Objects applied or deleted by reconciles, by kind",
                ),
                &["kind"],
            )?,
            applies_skipped: IntCounterVec::new(
                Opts::new(
                    "autopilot_reconcile_applies_skipped_total",
                    "Reconciles woken by a status change alone that read the owned Deployment from the watch instead of applying an unchanged plan again, by kind",
                ),
                &["kind"],
            )?,
        };
        registry.register(Box::new(m.reconciles.clone()))?;
        registry.register(Box::new(m.failures.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.rollbacks.clone()))?;
        registry.register(Box::new(m.writes.clone()))?;
        registry.register(Box::new(m.applies_skipped.clone()))?;
        Ok(m)
    }
}
