//! The detectors of a whole estate: one [`SeriesState`] per (component,
//! signal) and one mixture model per component of a multivariate spec, fed
//! each cycle with what `observe` read, producing one [`Report`].
//!
//! Pure: the cycle's data and `now` come in, findings and "no data" verdicts
//! go out. A cycle without Prometheus data yields no findings at all, so
//! nothing downstream acts on a blind cycle.

use std::collections::{BTreeMap, BTreeSet};

use super::gmm::GmmDetector;
use super::series::{NoData, Outcome, SeriesState};
use super::spec::ValidatedSpec;
use super::{ComponentId, Finding};

/// One series of one signal of one component, as read from Prometheus.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSamples {
    pub component: ComponentId,
    pub signal: String,
    /// (unix seconds, value) in time order; NaN is kept and means "no data".
    pub samples: Vec<(i64, f64)>,
}

/// What one cycle could read.
#[derive(Clone, Debug)]
pub enum CycleInput<'a> {
    /// Prometheus did not answer (down, slow, bad response).
    Unavailable { reason: String },
    Observed {
        /// Components that exist per the API; `None` when discovery itself
        /// failed (then only series-backed components are known).
        components: Option<&'a [ComponentId]>,
        series: &'a [SeriesSamples],
    },
}

/// The verdict of one cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// `Some(reason)` when the cycle had no Prometheus data at all.
    pub prometheus_unavailable: Option<String>,
    pub findings: Vec<Finding>,
    /// Signals of observed components that had no usable sample.
    pub no_data: Vec<(ComponentId, String, NoData)>,
    /// Components that exist but have no series for any signal.
    pub unobserved: Vec<ComponentId>,
    /// Signals whose detector is still warming up.
    pub warming_up: Vec<(ComponentId, String)>,
}

/// Detector state for every spec's components.
pub struct Estate {
    specs: Vec<ValidatedSpec>,
    series: BTreeMap<(ComponentId, String), SeriesState>,
    mixtures: BTreeMap<ComponentId, GmmDetector>,
}

impl Estate {
    pub fn new(specs: Vec<ValidatedSpec>) -> Self {
        Estate {
            specs,
            series: BTreeMap::new(),
            mixtures: BTreeMap::new(),
        }
    }

    pub fn specs(&self) -> &[ValidatedSpec] {
        &self.specs
    }

    fn state(&mut self, component: &ComponentId, signal: &str) -> Option<&mut SeriesState> {
        let key = (component.clone(), signal.to_string());
        if !self.series.contains_key(&key) {
            let spec = self.specs.iter().find(|s| s.kind == component.kind)?;
            let sig = spec.signals.iter().find(|s| s.name == signal)?;
            let state = SeriesState::new(
                component.clone(),
                signal,
                &sig.detector,
                sig.options.clone(),
            );
            self.series.insert(key.clone(), state);
        }
        self.series.get_mut(&key)
    }

    /// Feeds history (a range query at start-up) so the detectors are warm;
    /// returns the findings the history contained (for replay).
    pub fn score_history(&mut self, history: &[SeriesSamples]) -> Vec<Finding> {
        let mut findings = Vec::new();
        for s in history {
            if let Some(state) = self.state(&s.component, &s.signal) {
                findings.extend(state.score_samples(&s.samples));
            }
        }
        findings
    }

    /// Drops the state of every series not read this cycle (`seen`) whose
    /// newest sample is more than its `max_gap_seconds` before `now` (a
    /// deleted component, a series that stopped): its next sample would
    /// restart the detector anyway, so nothing is lost, and the state of an
    /// estate whose components come and go stays the size of the series
    /// that exist. A mixture goes with the last series of its component
    /// unless the component is among `known` (it still exists).
    fn forget(
        &mut self,
        seen: &BTreeSet<(ComponentId, String)>,
        known: &BTreeSet<ComponentId>,
        now: i64,
    ) {
        self.series
            .retain(|key, state| seen.contains(key) || !state.gap_restarts_at(now));
        let kept: BTreeSet<&ComponentId> = self.series.keys().map(|(c, _)| c).collect();
        self.mixtures
            .retain(|c, _| known.contains(c) || kept.contains(c));
    }

    /// Series and mixture states held (for tests and the cycle bench).
    pub fn held(&self) -> (usize, usize) {
        (self.series.len(), self.mixtures.len())
    }

    /// Scores one cycle.
    pub fn score_cycle(&mut self, input: CycleInput<'_>, now: i64) -> Report {
        let (components, series) = match input {
            CycleInput::Unavailable { reason } => {
                return Report {
                    prometheus_unavailable: Some(reason),
                    ..Report::default()
                };
            }
            CycleInput::Observed { components, series } => (components, series),
        };
        let mut report = Report::default();
        let mut seen: BTreeSet<(ComponentId, String)> = BTreeSet::new();
        let mut latest: BTreeMap<(ComponentId, String), f64> = BTreeMap::new();
        for s in series {
            let Some(state) = self.state(&s.component, &s.signal) else {
                continue;
            };
            seen.insert((s.component.clone(), s.signal.clone()));
            for &(at, v) in &s.samples {
                match state.score_sample(at, v) {
                    Outcome::Anomalous(f) => report.findings.push(*f),
                    Outcome::NoData(NoData::OutOfOrder) => {} // already scored
                    Outcome::NoData(why) => {
                        report
                            .no_data
                            .push((s.component.clone(), s.signal.clone(), why))
                    }
                    Outcome::WarmingUp => report
                        .warming_up
                        .push((s.component.clone(), s.signal.clone())),
                    Outcome::Normal(_) => {}
                }
                latest.insert((s.component.clone(), s.signal.clone()), v);
            }
            if let Err(why) = state.freshness(now) {
                report
                    .no_data
                    .push((s.component.clone(), s.signal.clone(), why));
            }
        }
        // Every known component: signals without series are "missing", and a
        // component without any series is unobserved.
        let mut known: BTreeSet<ComponentId> = seen.iter().map(|(c, _)| c.clone()).collect();
        if let Some(list) = components {
            known.extend(list.iter().cloned());
        }
        self.forget(&seen, &known, now);
        for c in &known {
            let Some(spec) = self.specs.iter().find(|s| s.kind == c.kind) else {
                continue;
            };
            let missing: Vec<&str> = spec
                .signals
                .iter()
                .filter(|s| !seen.contains(&(c.clone(), s.name.clone())))
                .map(|s| s.name.as_str())
                .collect();
            if missing.len() == spec.signals.len() {
                report.unobserved.push(c.clone());
                continue;
            }
            for m in missing {
                report
                    .no_data
                    .push((c.clone(), m.to_string(), NoData::Missing));
            }
            if let Some(mv) = &spec.multivariate {
                let vector: Vec<f64> = mv
                    .signals
                    .iter()
                    .map(|&i| {
                        latest
                            .get(&(c.clone(), spec.signals[i].name.clone()))
                            .copied()
                            .unwrap_or(f64::NAN)
                    })
                    .collect();
                let names: Vec<&str> = mv
                    .signals
                    .iter()
                    .map(|&i| spec.signals[i].name.as_str())
                    .collect();
                let model = self
                    .mixtures
                    .entry(c.clone())
                    .or_insert_with(|| GmmDetector::new(mv.params.clone(), vector.len()));
                // A fit failure leaves the component unscored this cycle.
                if let Ok(Some(s)) = model.score(now, &vector)
                    && s.score >= 0.5
                {
                    report.findings.push(Finding {
                        component: c.clone(),
                        signal: names.join("+"),
                        detector: "gmm".into(),
                        score: s.score.clamp(0.0, 1.0),
                        at: now,
                        value: s.measure,
                        baseline: s.baseline,
                        time_to_threshold_seconds: None,
                        explanation: format!(
                            "{} together are unusual: {:.0} times less likely under the mixture model than the least likely 1% of the component's recent vectors",
                            names.join(", "),
                            s.measure.exp()
                        ),
                        window: None,
                    });
                }
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::spec::validate_spec;

    const SPEC: &str = r#"
kind: PaymentGateway
group: payments.io
version: v1
plural: paymentgateways
labels: {name: gateway, namespace: namespace}
signals:
  - name: request_rate
    query: rate_query
    detector: {type: ewma, alpha: 0.05, warmup: 20, limit: 8}
  - name: cpu
    query: cpu_query
    detector: {type: ewma, alpha: 0.05, warmup: 20, limit: 8}
multivariate: {signals: [request_rate, cpu], warmup: 100, refit_every: 50}
"#;

    fn gw(name: &str) -> ComponentId {
        ComponentId {
            kind: "PaymentGateway".into(),
            namespace: "payments".into(),
            name: name.into(),
        }
    }

    fn cycle_input(c: &ComponentId, at: i64, rate: f64, cpu: f64) -> Vec<SeriesSamples> {
        vec![
            SeriesSamples {
                component: c.clone(),
                signal: "request_rate".into(),
                samples: vec![(at, rate)],
            },
            SeriesSamples {
                component: c.clone(),
                signal: "cpu".into(),
                samples: vec![(at, cpu)],
            },
        ]
    }

    #[test]
    fn the_mixture_flags_metrics_that_decouple_while_each_looks_normal() {
        let spec = validate_spec("models/gw.yaml", SPEC).expect("spec");
        let mut estate = Estate::new(vec![spec]);
        let api = gw("api");
        let components = [api.clone()];
        for i in 0..300i64 {
            let load = 100.0 + 30.0 * ((i as f64) * 0.1).sin() + (i * 7919 % 13) as f64 * 0.2;
            let series = cycle_input(
                &api,
                1_000 + i * 30,
                load,
                0.5 * load + (i * 104_729 % 11) as f64 * 0.05,
            );
            let r = estate.score_cycle(
                CycleInput::Observed {
                    components: Some(&components),
                    series: &series,
                },
                1_000 + i * 30,
            );
            assert!(r.findings.is_empty(), "cycle {i}: {:?}", r.findings);
        }
        // Low traffic but high CPU: each value is inside its own range.
        let at = 1_000 + 300 * 30;
        let series = cycle_input(&api, at, 75.0, 64.0);
        let r = estate.score_cycle(
            CycleInput::Observed {
                components: Some(&components),
                series: &series,
            },
            at,
        );
        let kinds: Vec<&str> = r.findings.iter().map(|f| f.detector.as_str()).collect();
        assert_eq!(kinds, vec!["gmm"], "{:?}", r.findings);
        assert_eq!(r.findings[0].signal, "request_rate+cpu");
        assert!(r.findings[0].explanation.contains("together are unusual"));
    }

    /// Issue #16, "bound what grows": a deleted component's detectors go
    /// once a sample would restart them anyway (the default gap, 900 s),
    /// not before; a component that still exists keeps its mixture.
    #[test]
    fn a_deleted_components_state_is_dropped_once_a_sample_would_restart_it() {
        let spec = validate_spec("models/gw.yaml", SPEC).expect("spec");
        let mut estate = Estate::new(vec![spec]);
        let (api, gone) = (gw("api"), gw("gone"));
        let cycle = |estate: &mut Estate, listed: &[ComponentId], fed: &[&ComponentId], at| {
            let series: Vec<SeriesSamples> = fed
                .iter()
                .flat_map(|c| cycle_input(c, at, 1.0, 0.5))
                .collect();
            estate.score_cycle(
                CycleInput::Observed {
                    components: Some(listed),
                    series: &series,
                },
                at,
            );
        };
        let both = [api.clone(), gone.clone()];
        let mut at = 1_000;
        for _ in 0..10 {
            cycle(&mut estate, &both, &[&api, &gone], at);
            at += 30;
        }
        assert_eq!(estate.held(), (4, 2), "two series and a mixture each");
        // `gone` is deleted: no more series, no longer listed.
        let last = at - 30;
        let only = [api.clone()];
        cycle(&mut estate, &only, &[&api], last + 900);
        assert_eq!(
            estate.held(),
            (4, 2),
            "within the gap a sample would resume"
        );
        cycle(&mut estate, &only, &[&api], last + 901);
        assert_eq!(estate.held(), (2, 1), "past it, its state is gone");
        // `api` still exists but its series stop: its series' state goes
        // past the gap, its mixture stays with the component.
        cycle(&mut estate, &only, &[], last + 901 + 1_000);
        assert_eq!(estate.held(), (0, 1));
    }

    #[test]
    fn missing_signals_unobserved_components_and_a_blind_cycle_are_explicit() {
        let spec = validate_spec("models/gw.yaml", SPEC).expect("spec");
        let mut estate = Estate::new(vec![spec]);
        let (api, idle) = (gw("api"), gw("idle"));
        let components = [api.clone(), idle.clone()];
        let mut series = cycle_input(&api, 100, 1.0, f64::NAN);
        series.pop(); // cpu has no series at all
        let r = estate.score_cycle(
            CycleInput::Observed {
                components: Some(&components),
                series: &series,
            },
            100,
        );
        assert_eq!(r.unobserved, vec![idle]);
        assert_eq!(
            r.no_data,
            vec![(api.clone(), "cpu".to_string(), NoData::Missing)]
        );
        assert_eq!(
            r.warming_up,
            vec![(api.clone(), "request_rate".to_string())]
        );
        // An old sample is stale at `now`.
        let r = estate.score_cycle(
            CycleInput::Observed {
                components: None,
                series: &cycle_input(&api, 200, 1.0, 0.5),
            },
            200 + 301,
        );
        assert!(
            r.no_data
                .contains(&(api.clone(), "request_rate".to_string(), NoData::Stale)),
            "{:?}",
            r.no_data
        );
        let r = estate.score_cycle(
            CycleInput::Unavailable {
                reason: "connection refused".into(),
            },
            600,
        );
        assert_eq!(
            r.prometheus_unavailable.as_deref(),
            Some("connection refused")
        );
        assert!(r.findings.is_empty() && r.no_data.is_empty() && r.unobserved.is_empty());
    }
}
