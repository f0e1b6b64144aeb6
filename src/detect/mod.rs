//! Online anomaly detectors and forecasters over sample windows, and the model
//! specs in `models/` that configure them.
//!
//! Pure: takes samples and parameters, returns findings. Never queries
//! Prometheus, reads the clock or touches files; callers pass `now` and the
//! text of spec files in.

pub mod detectors;
pub mod estate;
mod finding;
pub mod gmm;
pub mod logo;
pub mod nab;
pub mod search;
pub mod series;
pub mod spec;
mod stats;

pub use detectors::{Detector, DetectorParams, Direction, Judged, Scored, Span};
pub use estate::{CycleInput, Estate, Report, SeriesSamples};
pub use finding::{ComponentId, Finding, JudgedWindow};
pub use series::{NoData, Outcome, SeriesOptions, SeriesState};

/// Errors of the detect module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("scoring a metric vector of {got} values with a model of {expected} signals")]
    ScoreVector { expected: usize, got: usize },
    #[error("fitting the gaussian mixture failed: {0}")]
    FitMixture(String),
    #[error("parsing model spec {file}: {message}")]
    ParseSpec { file: String, message: String },
    #[error("validating model spec {file}: field `{field}` {expected}")]
    ValidateSpec {
        file: String,
        field: String,
        expected: String,
    },
    #[error("parsing labels: {0}")]
    ParseLabels(String),
    #[error("parsing series {file}, line {line}: {problem}")]
    ParseSeries {
        file: String,
        line: usize,
        problem: String,
    },
}

impl Error {
    /// Fixed category for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ScoreVector { .. } => "score_vector",
            Error::FitMixture(_) => "fit_mixture",
            Error::ParseSpec { .. } => "parse_spec",
            Error::ValidateSpec { .. } => "validate_spec",
            Error::ParseLabels(_) => "parse_labels",
            Error::ParseSeries { .. } => "parse_series",
        }
    }
}

#[cfg(test)]
mod tests;
