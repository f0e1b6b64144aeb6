//! Command-line interface: argument types and the subcommands that are more
//! than a line of wiring.

pub mod detect;
pub mod sandbox;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Autopilot — an autonomous SRE agent for a Kubernetes payments estate.
///
/// It reconciles the payments.io kinds (PaymentGateway, ClearingAdapter,
/// BatchProcessor, SagaOrchestrator), watches every operator-managed component
/// through Prometheus, and acts through runbooks under guards, recording every
/// action in a journal.
#[derive(Parser, Debug)]
#[command(name = "autopilot", version, about, long_about)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text (RUST_LOG sets the level).
    #[arg(long, global = true, env = "AUTOPILOT_LOG_JSON")]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CustomResourceDefinitions of our kinds as YAML.
    ///
    /// Generated from the Rust types; `deploy/crds/payments.io.yaml` is a copy
    /// of this output, kept in step by a test.
    Crds {
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Start a local estate to try Autopilot: a real etcd, kube-apiserver and
    /// kube-controller-manager on loopback, with our CRDs and the example
    /// resources installed. Runs until Ctrl-C, then stops everything.
    ///
    /// The control plane binaries are built from the Go module proxy on first
    /// use (several minutes) and cached under ~/.cache/autopilot-testenv.
    Sandbox {
        /// Directory of example resources to apply.
        #[arg(long, default_value = "deploy/examples")]
        examples: PathBuf,
        /// Namespace for examples that do not name one.
        #[arg(long, default_value = "payments")]
        namespace: String,
        /// Exit after showing the resources instead of waiting for Ctrl-C
        /// (for scripts and CI).
        #[arg(long)]
        once: bool,
    },
    /// Anomaly detectors: score a CSV, evaluate on NAB, measure throughput.
    #[command(subcommand)]
    Detect(detect::DetectCommand),
}
