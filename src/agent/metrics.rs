//! Metrics of the agent loop. Labels are bounded: runbook names (files an SRE
//! wrote, a few dozen at most), component kinds, detector types and fixed
//! categories — never object names.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    /// 1 while this replica holds the lease and acts, 0 on standby.
    pub leader: IntGauge,
    /// Cycles by result: `ok`, `blind` (no Prometheus data), `skipped_act`
    /// (the guard policy could not be read, so nothing was sent).
    pub cycles: IntCounterVec,
    pub cycle_duration: Histogram,
    /// 1 when the last cycle read Prometheus, 0 when it could not.
    pub prometheus_up: IntGauge,
    pub findings: IntCounterVec,
    /// Signals of the last cycle by state: `read` (series Prometheus
    /// returned), `warming_up` (detector not yet scoring), `no_data`
    /// (missing, NaN or stale), and components `unobserved` (no series).
    pub signals: IntGaugeVec,
    /// Runbooks compiled and running.
    pub runbooks_loaded: IntGauge,
    /// 1 for a runbook whose newest source was rejected (the last good
    /// version, if any, keeps running).
    pub runbook_rejected: IntGaugeVec,
    /// Compile and runtime errors per runbook and error kind.
    pub runbook_errors: IntCounterVec,
    pub runbook_evaluations: IntCounterVec,
    /// Reads the cycle needed and could not make, by what was read.
    pub read_errors: IntCounterVec,
    /// 1 while the guard policy's kill switch is on (as last read).
    pub kill_switch: IntGauge,
    /// Series a query returned beyond `observe::MAX_SERIES_PER_QUERY`,
    /// dropped unscored, by component kind.
    pub series_dropped: IntCounterVec,
    /// Runbooks held armed on a component after another runbook's action
    /// on the target deferred them (`agent::deferred`).
    pub runbooks_deferred: IntGauge,
    /// Not exported: the findings (`Kind/namespace/name signal`) of the last
    /// scored cycle, so that a finding is logged when its episode opens and
    /// when it clears rather than every cycle.
    pub open_findings: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Not exported: the (runbook, `Kind/namespace/name`) pairs whose last
    /// evaluation lacked data, so that missing data is logged once per
    /// runbook when it starts and when it ends, not per component per cycle
    /// (`autopilot_runbook_errors_total` counts every one).
    pub missing_data:
        std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<(String, String)>>>,
}

impl Metrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            leader: IntGauge::new(
                "autopilot_leader",
                "1 while this replica holds the leader lease and acts, 0 on standby",
            )?,
            cycles: IntCounterVec::new(
                Opts::new(
                    "autopilot_cycles_total",
                    "Observe-detect-decide-act cycles, by result",
                ),
                &["result"],
            )?,
            cycle_duration: Histogram::with_opts(
                HistogramOpts::new(
                    "autopilot_cycle_duration_seconds",
                    "Time of one observe-detect-decide-act cycle",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?,
            prometheus_up: IntGauge::new(
                "autopilot_prometheus_up",
                "1 when the last cycle could read Prometheus, 0 when it could not",
            )?,
            findings: IntCounterVec::new(
                Opts::new(
                    "autopilot_findings_total",
                    "Anomalies and forecasts found, by component kind and detector",
                ),
                &["kind", "detector"],
            )?,
            signals: IntGaugeVec::new(
                Opts::new(
                    "autopilot_signals",
                    "Signals of the last cycle: read, warming_up, no_data; and unobserved components",
                ),
                &["state"],
            )?,
            runbooks_loaded: IntGauge::new(
                "autopilot_runbooks_loaded",
                "Runbooks compiled and running",
            )?,
            runbook_rejected: IntGaugeVec::new(
                Opts::new(
                    "autopilot_runbook_rejected",
                    "1 when the newest source of a runbook failed to compile (its last good version keeps running)",
                ),
                &["runbook"],
            )?,
            runbook_errors: IntCounterVec::new(
                Opts::new(
                    "autopilot_runbook_errors_total",
                    "Runbook compile and runtime errors, by runbook and error kind",
                ),
                &["runbook", "kind"],
            )?,
            runbook_evaluations: IntCounterVec::new(
                Opts::new(
                    "autopilot_runbook_evaluations_total",
                    "Runbook evaluations, by runbook and trigger",
                ),
                &["runbook", "trigger"],
            )?,
            read_errors: IntCounterVec::new(
                Opts::new(
                    "autopilot_read_errors_total",
                    "Reads a cycle needed and could not make, by what and error kind",
                ),
                &["what", "kind"],
            )?,
            kill_switch: IntGauge::new(
                "autopilot_kill_switch",
                "1 while the AutopilotPolicy's kill switch is on, as the last cycle read it",
            )?,
            series_dropped: IntCounterVec::new(
                Opts::new(
                    "autopilot_series_dropped_total",
                    "Series a model spec's query returned beyond the per-query cap, dropped unscored, by component kind",
                ),
                &["kind"],
            )?,
            runbooks_deferred: IntGauge::new(
                "autopilot_runbooks_deferred",
                "Runbooks held armed on a component because another runbook's action on the target (same cycle, or its cooldown) deferred their proposal",
            )?,
            open_findings: Default::default(),
            missing_data: Default::default(),
        };
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.cycles.clone()))?;
        registry.register(Box::new(m.cycle_duration.clone()))?;
        registry.register(Box::new(m.prometheus_up.clone()))?;
        registry.register(Box::new(m.findings.clone()))?;
        registry.register(Box::new(m.signals.clone()))?;
        registry.register(Box::new(m.runbooks_loaded.clone()))?;
        registry.register(Box::new(m.runbook_rejected.clone()))?;
        registry.register(Box::new(m.runbook_errors.clone()))?;
        registry.register(Box::new(m.runbook_evaluations.clone()))?;
        registry.register(Box::new(m.read_errors.clone()))?;
        registry.register(Box::new(m.kill_switch.clone()))?;
        registry.register(Box::new(m.series_dropped.clone()))?;
        registry.register(Box::new(m.runbooks_deferred.clone()))?;
        Ok(m)
    }
}
