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
                if let Ok(Some(s)) = model.score(&vector)
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
                            "{} together are unusual: {:.1} robust σ less likely than usual under the mixture model",
                            names.join(", "),
                            s.measure
                        ),
                    });
                }
            }
        }
        report
    }
}
