//! `autopilot sandbox`: its flags, and the door to the estate in
//! `estate`. The estate runs on `crate::testenv`, which only a build with
//! `--features testenv` has (scripts/sandbox builds one); the agent's default
//! build keeps the subcommand and its flags but says plainly that it has no
//! sandbox, rather than leaving `autopilot sandbox` an unknown subcommand.

#[cfg(feature = "testenv")]
pub mod estate;

use std::path::PathBuf;

/// How the sandbox runs (the flags of `autopilot sandbox`).
#[derive(clap::Args, Clone, Debug)]
pub struct Settings {
    /// Directory of example resources to apply.
    #[arg(long, default_value = "deploy/examples")]
    pub examples: PathBuf,
    /// Namespace for examples that do not name one.
    #[arg(long, default_value = "payments")]
    pub namespace: String,
    /// Exit once the agent has journaled its first decision instead of
    /// waiting for Ctrl-C (for scripts and CI).
    #[arg(long)]
    pub once: bool,
    /// Seconds of steady operation before the scenario's fault starts.
    #[arg(long, default_value_t = 40)]
    pub incident_after_seconds: u64,
    /// The fault to inject: `traffic-surge` (the default),
    /// `primary-degradation`, `temp-file-growth`, `kafka-under-replication`,
    /// `certificate-expiry`, `secret-store-failure`, `connection-exhaustion`,
    /// `bad-release` (the next version, deployed, answers with 5xx),
    /// `memory-leak` (a gateway with a memory limit), `release` (no fault:
    /// the next version of a SagaOrchestrator, rolled out and soaked, to
    /// time a deployment), or `all` (every fault and the release at once).
    /// With a scenario the sandbox stops once each has played out and
    /// prints a table of its times.
    #[arg(long)]
    pub scenario: Option<String>,
    /// What the agent may do: `dry-run` (decide and journal), `recommend`
    /// (also leave a Recommendation for approval) or `auto` (act).
    #[arg(long, default_value = "dry-run")]
    pub mode: crate::decide::Mode,
    /// Address of the agent's /metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Runbooks the agent runs.
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// Model specs the agent scores.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// CustomResourceDefinitions of the operators' kinds to install: the real
    /// upstream ones when this folder exists (with the minimal copy in
    /// tests/fixtures/crds of any it lacks), else those copies.
    #[arg(long, default_value = "../shared/crds")]
    pub operator_crds: PathBuf,
    /// The operators' resources of the simulated estate (a CloudNativePG
    /// Cluster, …), applied after their CRDs.
    #[arg(long, default_value = "tests/fixtures/estate")]
    pub estate: PathBuf,
}

#[cfg(feature = "testenv")]
pub use estate::run;

/// This build has no sandbox: fails with how to get one (clap's own "unknown
/// subcommand" would leave the reader guessing).
#[cfg(not(feature = "testenv"))]
pub async fn run(_: Settings) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no sandbox: build with `--features testenv` (scripts/sandbox does)"
    )
}
