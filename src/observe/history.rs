//! Prometheus history served one step at a time, for a replay: each model
//! spec's query is read as range queries of `chunk_steps` steps (one HTTP
//! request per spec per chunk instead of one per spec per cycle), and each
//! cycle takes the samples of its own step out of the chunk.
//!
//! A range query's sample at `t` is what an instant query at `t` returns
//! (same lookback, same evaluation), so the cycle sees what the live loop
//! would have read at that time. Read-only I/O; it never scores. A chunk
//! that cannot be read is an error for the step that asked, asked again by
//! the next one: a hole, never a made-up value.

use std::collections::BTreeMap;

use super::{Error, Prometheus};
use crate::detect::{SeriesSamples, spec::ValidatedSpec};

/// One spec's samples for `from..=to`, by step time.
struct Chunk {
    from: i64,
    to: i64,
    at: BTreeMap<i64, Vec<SeriesSamples>>,
}

/// The history of every spec between two times at one step.
pub struct History {
    prometheus: Prometheus,
    step: i64,
    chunk_steps: i64,
    end: i64,
    chunks: BTreeMap<String, Chunk>,
    /// Range queries made so far.
    queries: usize,
}

impl History {
    /// History up to `end` at `step` seconds, read `chunk_steps` steps per
    /// range query (Prometheus answers at most 11 000 points per series).
    pub fn new(prometheus: Prometheus, step: i64, chunk_steps: i64, end: i64) -> Self {
        History {
            prometheus,
            step: step.max(1),
            chunk_steps: chunk_steps.clamp(1, 10_000),
            end,
            chunks: BTreeMap::new(),
            queries: 0,
        }
    }

    pub fn prometheus(&self) -> &Prometheus {
        &self.prometheus
    }

    /// Range queries made so far.
    pub fn queries(&self) -> usize {
        self.queries
    }

    /// The series of `spec` at step `at`, as an instant query at `at`
    /// would return them; the chunk holding `at` is read when needed,
    /// starting at `at`, so later steps must be `at + k * step`.
    pub async fn query_spec(
        &mut self,
        spec: &ValidatedSpec,
        at: i64,
    ) -> Result<Vec<SeriesSamples>, Error> {
        let held = self
            .chunks
            .get(&spec.kind)
            .is_some_and(|c| c.from <= at && at <= c.to);
        if !held {
            let to = (at + (self.chunk_steps - 1) * self.step)
                .min(self.end)
                .max(at);
            self.queries += 1;
            let read = self
                .prometheus
                .query_history(spec, at, to, self.step as f64)
                .await?;
            self.chunks.insert(
                spec.kind.clone(),
                Chunk {
                    from: at,
                    to,
                    at: by_step(read),
                },
            );
        }
        Ok(self
            .chunks
            .get_mut(&spec.kind)
            .and_then(|c| c.at.remove(&at))
            .unwrap_or_default())
    }
}

/// Range-query series split into one single-sample series per step.
fn by_step(read: Vec<SeriesSamples>) -> BTreeMap<i64, Vec<SeriesSamples>> {
    let mut out: BTreeMap<i64, Vec<SeriesSamples>> = BTreeMap::new();
    for s in read {
        for &(t, v) in &s.samples {
            out.entry(t).or_default().push(SeriesSamples {
                component: s.component.clone(),
                signal: s.signal.clone(),
                samples: vec![(t, v)],
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ComponentId;

    #[test]
    fn range_series_are_served_one_step_at_a_time() {
        let c = ComponentId {
            kind: "PaymentGateway".into(),
            namespace: "pay".into(),
            name: "eu".into(),
        };
        let steps = by_step(vec![SeriesSamples {
            component: c.clone(),
            signal: "saturation".into(),
            samples: vec![(30, 0.1), (60, 0.2)],
        }]);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[&60][0].samples, vec![(60, 0.2)]);
        assert_eq!(steps[&60][0].component, c);
    }
}
