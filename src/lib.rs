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
pub mod review;
pub mod schedule;
pub mod scope;
pub mod store;
pub mod telemetry;
// A local control plane for tests and the sandbox, never part of the agent:
// only a build with `--features testenv` has it (and rcgen, tempfile).
#[cfg(feature = "testenv")]
pub mod testenv;
