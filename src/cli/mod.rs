//! Command-line interface: argument types and the subcommands that are more
//! than a line of wiring.

pub mod actions;
pub mod detect;
pub mod runbook;
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
    /// Run the agent: the controllers of the payments kinds, with /metrics,
    /// /healthz and /readyz on --listen. Uses the in-cluster service account,
    /// or $KUBECONFIG / ~/.kube/config outside a cluster.
    Run {
        /// Watch and reconcile only this namespace (default: all namespaces).
        #[arg(long, env = "AUTOPILOT_NAMESPACE")]
        namespace: Option<String>,
        /// Address of the HTTP endpoints.
        #[arg(long, env = "AUTOPILOT_LISTEN", default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Reconciles running at once per kind.
        #[arg(long, env = "AUTOPILOT_CONCURRENCY", default_value_t = 8)]
        concurrency: u16,
        /// Fallback seconds between checks of a rollout in progress (Deployment
        /// changes are seen at once through watches).
        #[arg(long, default_value_t = 30)]
        progress_interval_seconds: u64,
    },
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
    /// Compile, lint and test runbooks (rules/*.rhai).
    #[command(subcommand)]
    Runbook(RunbookCommand),
    /// Review the action journal: list, show, approve, reject, undo.
    #[command(subcommand)]
    Actions(ActionsCommand),
}

#[derive(Subcommand, Debug)]
pub enum RunbookCommand {
    /// Compile and lint runbooks; exit non-zero when one does not compile or
    /// names a signal (trigger, ctx.samples, verify) that no model spec of its
    /// kind in --models produces.
    Check {
        /// Runbook files; default: every *.rhai in --rules.
        files: Vec<PathBuf>,
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        /// Model specs (*.yaml) to check signal names against; when the
        /// directory does not exist, that check is skipped with a warning.
        #[arg(long, default_value = "models")]
        models: PathBuf,
    },
    /// Run each runbook against its sibling <name>.cases.yaml and print a
    /// diff for every failing case; exit non-zero on failure.
    Test {
        files: Vec<PathBuf>,
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
    },
    /// Print the host API runbooks can call, with examples.
    Api,
}

#[derive(Subcommand, Debug)]
pub enum ActionsCommand {
    /// List journal entries, newest first.
    List {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Only pending recommendations.
        #[arg(long)]
        pending: bool,
    },
    /// Show one entry in full (patch, inverse, evidence, verdicts).
    Show {
        #[command(flatten)]
        db: DatabaseArgs,
        id: i64,
    },
    /// Approve a recommendation and apply it now (kubeconfig or in-cluster).
    Approve {
        #[command(flatten)]
        db: DatabaseArgs,
        id: i64,
        /// Who approves (recorded).
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
        /// Namespace of the ConfigMap `autopilot-policy` (kill switch, limits).
        #[arg(long, default_value = "autopilot")]
        policy_namespace: String,
    },
    /// Reject a recommendation; it will never be applied.
    Reject {
        #[command(flatten)]
        db: DatabaseArgs,
        id: i64,
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
    /// Undo an applied action with its inverse patch (journaled as a new entry).
    Undo {
        #[command(flatten)]
        db: DatabaseArgs,
        id: i64,
        #[arg(long, env = "USER", default_value = "unknown")]
        by: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct DatabaseArgs {
    /// Journal database: a sqlite: or postgres:// URL.
    #[arg(
        long,
        env = "AUTOPILOT_DATABASE_URL",
        default_value = "sqlite:autopilot-journal.db"
    )]
    pub database_url: String,
}
