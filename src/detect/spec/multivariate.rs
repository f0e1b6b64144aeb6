//! A model spec's `multivariate:` block: a Gaussian mixture over several
//! signals of the same component (`detect::gmm`), its signals named among
//! the spec's and its parameters checked like the detectors'.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::check::{Check, Seconds};
use super::{Error, ValidatedSignal};
use crate::detect::{Direction, gmm::GmmParams};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMultivariate {
    signals: Vec<String>,
    #[serde(default)]
    clusters: Option<usize>,
    #[serde(default)]
    window: Option<usize>,
    #[serde(default)]
    refit_every: Option<usize>,
    #[serde(default)]
    warmup: Option<usize>,
    /// A duration (`2h`): how much of the series the mixture sees before
    /// it scores.
    #[serde(default)]
    min_history: Option<String>,
    #[serde(default)]
    limit: Option<f64>,
    /// Per signal, the side whose departures count (`above` or `below`);
    /// a signal not named counts both.
    #[serde(default)]
    direction: BTreeMap<String, String>,
}

/// Multivariate scoring over several signals of the same component.
#[derive(serde::Serialize, Clone, Debug, PartialEq)]
pub struct ValidatedMultivariate {
    /// Indexes into `signals`.
    pub signals: Vec<usize>,
    pub params: GmmParams,
}

/// The `multivariate:` block: names resolved to indexes into `signals`.
pub(super) fn validate_multivariate(
    c: &Check,
    m: &RawMultivariate,
    signals: &[ValidatedSignal],
) -> Result<ValidatedMultivariate, Error> {
    let mut idx = Vec::new();
    for (j, name) in m.signals.iter().enumerate() {
        let at = format!("multivariate.signals[{j}]");
        match signals.iter().position(|s| &s.name == name) {
            Some(p) if !idx.contains(&p) => idx.push(p),
            Some(_) => return Err(c.fail(at, format!("must not repeat {name:?}"))),
            None => {
                return Err(c.fail(
                    at,
                    format!("must name a signal of this spec; {name:?} is not one"),
                ));
            }
        }
    }
    if idx.len() < 2 {
        return Err(c.fail("multivariate.signals", "must list at least two signals"));
    }
    let d = GmmParams::default();
    let window = c.range(
        "multivariate.window",
        m.window,
        d.window,
        20,
        100_000,
        "between 20 and 100000",
    )?;
    let params = GmmParams {
        clusters: c.range(
            "multivariate.clusters",
            m.clusters,
            d.clusters,
            1,
            10,
            "between 1 and 10",
        )?,
        window,
        refit_every: c.range(
            "multivariate.refit_every",
            m.refit_every,
            d.refit_every,
            1,
            100_000,
            "between 1 and 100000",
        )?,
        warmup: c.range(
            "multivariate.warmup",
            m.warmup,
            d.warmup.min(window),
            10,
            window,
            "between 10 and the window",
        )?,
        min_history_seconds: match &m.min_history {
            None => d.min_history_seconds,
            Some(text) => c.duration(
                "multivariate.min_history",
                text,
                0.0,
                86_400.0,
                "a duration between 0s and 1d, e.g. 2h",
                Seconds::Any,
            )?,
        },
        limit: c.range(
            "multivariate.limit",
            m.limit,
            d.limit,
            1e-9,
            1e9,
            "positive",
        )?,
        directions: directions(c, m)?,
    };
    Ok(ValidatedMultivariate {
        signals: idx,
        params,
    })
}

/// `multivariate.direction`, in the order of `multivariate.signals`
/// (empty when no signal is named).
fn directions(c: &Check, m: &RawMultivariate) -> Result<Vec<Option<Direction>>, Error> {
    let mut out = vec![None; m.signals.len()];
    for (name, side) in &m.direction {
        let at = format!("multivariate.direction.{name}");
        let Some(j) = m.signals.iter().position(|s| s == name) else {
            return Err(c.fail(
                at,
                format!(
                    "must name one of multivariate.signals ({}); {name:?} is not one",
                    m.signals.join(", ")
                ),
            ));
        };
        out[j] = Some(c.direction(at, side)?);
    }
    if out.iter().all(Option::is_none) {
        out.clear();
    }
    Ok(out)
}
