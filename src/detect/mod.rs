//! Online anomaly detectors and forecasters over sample windows, and the model
//! specs in `models/` that configure them.
//!
//! Pure: takes samples and parameters, returns findings. Never queries
//! Prometheus, reads the clock or touches files.

mod finding;

pub use finding::{ComponentId, Finding};
