//! The recent values of every (component, signal) the loop has read, which
//! runbooks see as `ctx.samples`: the last `SAMPLES_KEPT` values, forgotten
//! an hour after the series was last seen (a deleted component).
//!
//! Pure: it is fed the series a cycle read and `now`; it must not read
//! Prometheus or the clock itself.

use std::collections::{BTreeMap, VecDeque};

use crate::detect::{ComponentId, SeriesSamples};

/// A series not seen for this long (a deleted component) is forgotten.
const SAMPLES_FORGOTTEN_AFTER_SECONDS: i64 = 3600;

/// Recent samples kept per (component, signal) for `ctx.samples`.
const SAMPLES_KEPT: usize = 30;

/// When a series was last seen, and its recent values (`None`: no data).
type Window = (i64, VecDeque<Option<f64>>);

/// Per (component, signal): when last seen, and the recent values.
#[derive(Debug, Default)]
pub struct RecentSamples {
    windows: BTreeMap<(ComponentId, String), Window>,
}

impl RecentSamples {
    /// Adds the series read at `now` and forgets the ones not seen for an
    /// hour.
    pub fn record(&mut self, series: &[SeriesSamples], now: i64) {
        for s in series {
            let (seen, window) = self
                .windows
                .entry((s.component.clone(), s.signal.clone()))
                .or_default();
            *seen = now;
            for &(_, v) in &s.samples {
                // NaN or ±Inf from Prometheus is no data, never a number.
                window.push_back(crate::decide::runbook::finite(v));
                if window.len() > SAMPLES_KEPT {
                    window.pop_front();
                }
            }
        }
        self.windows
            .retain(|_, (seen, _)| now - *seen <= SAMPLES_FORGOTTEN_AFTER_SECONDS);
    }

    /// The windows by component and signal, oldest value first, as
    /// `decide::cycle::Observed::samples` wants them.
    pub fn by_component(&self) -> BTreeMap<ComponentId, BTreeMap<String, Vec<Option<f64>>>> {
        let mut out: BTreeMap<ComponentId, BTreeMap<String, Vec<Option<f64>>>> = BTreeMap::new();
        for ((c, signal), (_, values)) in &self.windows {
            out.entry(c.clone())
                .or_default()
                .insert(signal.clone(), values.iter().copied().collect());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(name: &str) -> ComponentId {
        ComponentId {
            kind: "PaymentGateway".into(),
            namespace: "pay".into(),
            name: name.into(),
        }
    }

    fn series(name: &str, values: &[f64]) -> SeriesSamples {
        SeriesSamples {
            component: gateway(name),
            signal: "latency".into(),
            samples: values.iter().map(|&v| (0, v)).collect(),
        }
    }

    #[test]
    fn keeps_the_last_values_oldest_first() {
        let mut s = RecentSamples::default();
        let values: Vec<f64> = (0..40).map(f64::from).collect();
        s.record(&[series("a", &values[..20])], 100);
        s.record(&[series("a", &values[20..])], 110);
        let window = &s.by_component()[&gateway("a")]["latency"];
        assert_eq!(window.len(), SAMPLES_KEPT);
        assert_eq!(window.first(), Some(&Some(10.0)));
        assert_eq!(window.last(), Some(&Some(39.0)));
    }

    /// NaN and ±Inf from Prometheus reach runbooks as no data, in place, so
    /// the window keeps its length and order.
    #[test]
    fn non_finite_values_are_no_data() {
        let mut s = RecentSamples::default();
        s.record(
            &[series(
                "a",
                &[1.0, f64::NAN, f64::INFINITY, -f64::INFINITY, 2.0],
            )],
            0,
        );
        assert_eq!(
            s.by_component()[&gateway("a")]["latency"],
            vec![Some(1.0), None, None, None, Some(2.0)]
        );
    }

    #[test]
    fn a_series_not_seen_for_an_hour_is_forgotten() {
        let mut s = RecentSamples::default();
        s.record(&[series("gone", &[1.0]), series("kept", &[2.0])], 0);
        s.record(&[series("kept", &[3.0])], SAMPLES_FORGOTTEN_AFTER_SECONDS);
        assert!(
            s.by_component().contains_key(&gateway("gone")),
            "an hour is kept"
        );
        s.record(
            &[series("kept", &[4.0])],
            SAMPLES_FORGOTTEN_AFTER_SECONDS + 1,
        );
        let by = s.by_component();
        assert!(!by.contains_key(&gateway("gone")));
        assert_eq!(
            by[&gateway("kept")]["latency"],
            vec![Some(2.0), Some(3.0), Some(4.0)]
        );
    }
}
