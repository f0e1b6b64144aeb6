//! Autopilot: an autonomous SRE agent for a Kubernetes payments estate.
//!
//! The pipeline is observe → detect → decide → act, beside one controller per
//! `payments.io` kind. Pure modules (`crd`, `detect`, `decide`, the plan and
//! status steps of `reconcile`) take values and return values; only `act`
//! changes the cluster.

pub mod act;
pub mod agent;
pub mod cli;
pub mod crd;
pub mod decide;
pub mod detect;
pub mod kinds;
pub mod observe;
pub mod reconcile;
pub mod schedule;
pub mod store;
pub mod telemetry;
pub mod testenv;
