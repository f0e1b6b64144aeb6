//! Command-line interface: argument types and the subcommands that are more
//! than a line of wiring.

pub mod actions;
pub mod detect;
pub mod replay;
pub mod review;
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

/// The name the binary also answers to: as `kubectl-autopilot` on the
/// PATH it is a kubectl plugin, and `kubectl autopilot actions list` runs
/// `kubectl-autopilot actions list`.
pub const KUBECTL_PLUGIN: &str = "kubectl-autopilot";

impl Cli {
    /// Parses `args` (the first is the program). Called as
    /// [`KUBECTL_PLUGIN`], usage and errors name the command as it was
    /// typed: `kubectl autopilot …`.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        use clap::{CommandFactory, FromArgMatches};
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let plugin = args
            .first()
            .and_then(|a| std::path::Path::new(a).file_stem())
            .is_some_and(|name| name == KUBECTL_PLUGIN);
        let mut cmd = Cli::command();
        if plugin {
            cmd = cmd.bin_name("kubectl autopilot");
        }
        let matches = cmd.try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
    }
}

/// Flags of `autopilot run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Watch, reconcile and decide on these namespaces only (default: all
    /// namespaces). Repeat it or separate names with commas. A scoped agent
    /// opens one watch per namespace, so Roles in those namespaces are
    /// enough; it never acts outside them.
    #[arg(
        long = "namespace",
        value_name = "NAMESPACE",
        value_delimiter = ',',
        env = "AUTOPILOT_NAMESPACE"
    )]
    pub namespaces: Vec<String>,
    /// The agent's own namespace: its leader Lease, the guard policy
    /// `AutopilotPolicy` `autopilot` and the rules ConfigMap live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub agent_namespace: String,
    /// Address of the HTTP endpoints.
    #[arg(long, env = "AUTOPILOT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Address of the review page (`autopilot review`'s page of this
    /// agent's journal): loopback only, reached with `kubectl
    /// port-forward`; `off` serves none.
    #[arg(long, env = "AUTOPILOT_REVIEW_LISTEN", default_value = "127.0.0.1:8081", value_parser = parse_review_listen)]
    pub review_listen: ReviewListen,
    /// Also export the agent's spans (one per stage of each cycle: observe
    /// and each Prometheus query, detect, decide and each runbook, guard,
    /// act, verify, with the component and action as fields) over OTLP/HTTP
    /// to this collector, e.g. http://jaeger-collector.observability:4318
    /// (`/v1/traces` is added). Plain http; off by default.
    #[arg(long, env = "AUTOPILOT_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// dry-run: decide and journal, send nothing; recommend: also validate
    /// each patch by a server-side dry run and keep it for approval; auto: act.
    #[arg(long, env = "AUTOPILOT_MODE", default_value = "dry-run")]
    pub mode: crate::decide::Mode,
    /// Prometheus base URL, e.g. http://prometheus.monitoring:9090. Without
    /// it there are no findings; cron and condition runbooks still run.
    #[arg(long, env = "AUTOPILOT_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// A Prometheus query slower than this fails and its kind is not scored.
    #[arg(long, default_value_t = 10)]
    pub prometheus_timeout_seconds: u64,
    /// Journal database: a SQLite path or URL, or postgres://… for HA.
    #[arg(
        long,
        env = "AUTOPILOT_DATABASE_URL",
        default_value = "sqlite:autopilot-journal.db"
    )]
    pub database_url: String,
    /// Folder of runbooks (*.rhai), read again every cycle.
    #[arg(long, env = "AUTOPILOT_RULES", default_value = "rules")]
    pub rules: PathBuf,
    /// Read the runbooks from this ConfigMap in --agent-namespace instead of
    /// --rules (every NAME.rhai key is a runbook), watched for changes.
    #[arg(long, env = "AUTOPILOT_RULES_CONFIGMAP")]
    pub rules_configmap: Option<String>,
    /// Folder of model specs (*.yaml).
    #[arg(long, env = "AUTOPILOT_MODELS", default_value = "models")]
    pub models: PathBuf,
    /// Seconds between observe-detect-decide-act cycles.
    #[arg(long, env = "AUTOPILOT_CYCLE_SECONDS", default_value_t = 30)]
    pub cycle_seconds: u64,
    /// Seconds of Prometheus history read on becoming leader to warm the
    /// detectors (0: start cold).
    #[arg(long, default_value_t = 7200)]
    pub warmup_history_seconds: u64,
    /// Elect a leader through a Lease; false runs as leader at once (one
    /// replica only).
    #[arg(long, env = "AUTOPILOT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the leader Lease (a shard's is `<name>-shard-<N>`).
    #[arg(long, default_value = "autopilot-leader")]
    pub lease_name: String,
    /// Own only shard N of M of the namespaces (e.g. `--shard 2/4`): a
    /// rendezvous hash of each namespace's name gives it to exactly one of
    /// M shards. Each shard elects its own leader through the Lease
    /// `<lease-name>-shard-<N>`, observes, decides and acts only in its
    /// namespaces, and shares the PostgreSQL journal (and so the global
    /// guards) with the other shards. Only shard 0 runs the payments
    /// controllers. Needs a postgres:// --database-url when M > 1.
    #[arg(long, env = "AUTOPILOT_SHARD", value_name = "N/M")]
    pub shard: Option<crate::scope::Shard>,
    /// Seconds the Lease is held without renewal (a standby takes over a
    /// crashed leader within about this long).
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// This replica's identity in the Lease (default: $POD_NAME, else host-pid).
    #[arg(long)]
    pub identity: Option<String>,
    /// Run the payments controllers (false: only the observe-act loop).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub controllers: bool,
    /// Reconciles running at once per kind.
    #[arg(long, env = "AUTOPILOT_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// Fallback seconds between checks of a rollout in progress (Deployment
    /// changes are seen at once through watches).
    #[arg(long, default_value_t = 30)]
    pub progress_interval_seconds: u64,
    /// The ValidatingAdmissionPolicy (and its binding, of the same name)
    /// that makes the API server refuse an Approval whose approver is not
    /// its sender; the chart installs `<release>-approvals`. Approvals are
    /// accepted only while both exist and are older than the Approval.
    /// Unset: no Approval is accepted (recommendations still are made).
    #[arg(long, env = "AUTOPILOT_APPROVAL_POLICY")]
    pub approval_policy: Option<String>,
}

/// `--review-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReviewListen(pub Option<std::net::SocketAddr>);

fn parse_review_listen(s: &str) -> Result<ReviewListen, String> {
    if s == "off" {
        return Ok(ReviewListen(None));
    }
    let addr: std::net::SocketAddr = s
        .parse()
        .map_err(|e| format!("{e} (an address like 127.0.0.1:8081, or off)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the review page has no authentication of its own; serve it on 127.0.0.1 and reach it with kubectl port-forward"
        ));
    }
    Ok(ReviewListen(Some(addr)))
}

impl RunArgs {
    /// The agent's options.
    pub fn options(self) -> crate::agent::Options {
        use std::time::Duration;
        let rules = match self.rules_configmap {
            Some(name) => crate::agent::RulesSource::ConfigMap {
                namespace: self.agent_namespace.clone(),
                name,
            },
            None => crate::agent::RulesSource::Dir(self.rules),
        };
        // One shard of one is the unsharded agent.
        let shard = self.shard.filter(|s| s.count() > 1);
        let lease_name = match shard {
            Some(s) => format!("{}-shard-{}", self.lease_name, s.index()),
            None => self.lease_name,
        };
        crate::agent::Options {
            reconcile: crate::reconcile::Settings {
                scope: crate::scope::Scope::namespaces(self.namespaces).with_shard(shard),
                concurrency: self.concurrency,
                progress_interval: Duration::from_secs(self.progress_interval_seconds),
                policy_namespace: Some(self.agent_namespace.clone()),
                ..Default::default()
            },
            listen: self.listen,
            review_listen: self.review_listen.0,
            namespace: self.agent_namespace,
            leadership: crate::agent::Leadership {
                enabled: self.leader_election,
                lease_name,
                identity: self.identity.unwrap_or_else(crate::agent::default_identity),
                lease_seconds: self.lease_seconds.max(2),
            },
            controllers: self.controllers && shard.is_none_or(|s| s.index() == 0),
            prometheus_url: self.prometheus_url,
            prometheus_timeout: Duration::from_secs(self.prometheus_timeout_seconds.max(1)),
            database_url: self.database_url,
            rules,
            models: self.models,
            mode: self.mode,
            cycle_interval: Duration::from_secs(self.cycle_seconds.max(1)),
            warmup_history: Duration::from_secs(self.warmup_history_seconds),
            approval_policy: self.approval_policy.filter(|p| !p.trim().is_empty()),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: the controllers of the payments kinds and the
    /// observe → detect → decide → act loop, with /metrics, /healthz and
    /// /readyz on --listen. Uses the in-cluster service account, or
    /// $KUBECONFIG / ~/.kube/config outside a cluster.
    ///
    /// Replicas elect a leader through a Lease in --agent-namespace; only the
    /// leader reconciles and acts. Runbooks are reloaded when their folder or
    /// ConfigMap changes; one that does not compile is rejected (log, metric,
    /// Event) and its last good version keeps running.
    Run(Box<RunArgs>),
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
    /// kube-controller-manager on loopback with our CRDs and the example
    /// resources, a fake kubelet running their pods, simulated gateway
    /// metrics scraped by a real Prometheus, and the agent in dry-run. The
    /// gateways saturate after --incident-after-seconds; the agent's
    /// decisions are printed as it journals them. Runs until Ctrl-C, then
    /// stops everything.
    ///
    /// The control plane binaries are built from the Go module proxy on first
    /// use (several minutes) and cached under ~/.cache/autopilot-testenv.
    /// Only a build with `--features testenv` has the sandbox; scripts/sandbox
    /// builds one.
    Sandbox(sandbox::Settings),
    /// Anomaly detectors: score a CSV, evaluate on NAB, measure throughput.
    #[command(subcommand)]
    Detect(detect::DetectCommand),
    /// Compile, lint and test runbooks (rules/*.rhai).
    #[command(subcommand)]
    Runbook(RunbookCommand),
    /// Review the action journal (list, show, undo) and decide on
    /// Recommendations (approve, reject).
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// Replay a range of Prometheus history through the live cycle in
    /// simulated time and report what the agent would have done and when:
    /// each finding episode, each action with its guard verdict, and per
    /// runbook how many fired, were refused (by which guard) and acted.
    ///
    /// The same cycle as `autopilot run`, with the clock and the act step
    /// swapped: the series are read by range queries in chunks and served
    /// step by step, the proposals are planned and judged by the guards on
    /// an in-memory journal (cooldowns and budgets count the replay's own
    /// actions), and nothing is sent or written to the cluster. Resources
    /// are read as they are now (--kubeconfig) or from --snapshot;
    /// verifications are not judged. Ctrl-C prints the partial report.
    ///
    /// `--compare OLD_RULES NEW_RULES` replays twice and prints what the
    /// edit changes, action by action.
    Replay(Box<replay::ReplayArgs>),
    /// Serve the review page of a journal on a loopback address: a
    /// timeline of findings and actions, and a page per action with its
    /// evidence, verdicts, diff, approval, verification and signal plots.
    /// Read-only; pending recommendations show the command that approves
    /// them. The agent serves the same page on --review-listen.
    Review(review::Settings),
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
    /// Approve a Recommendation (`kubectl get recommendations -A`): checks
    /// its content against its digest, then creates an Approval in its
    /// namespace as you — your kubeconfig's user, as the API server knows
    /// it (`kubectl auth whoami`). RBAC there decides whether you may; the
    /// agent applies it on its next cycle, through its gate (kill switch,
    /// scope, mode, guards), and journals your name.
    Approve(ReviewArgs),
    /// Reject a Recommendation (an Approval with decision Reject, as you):
    /// it will never be applied.
    Reject(ReviewArgs),
    /// Undo an applied action with its inverse patch (journaled as a new
    /// entry, with your user name as the API server knows it).
    Undo {
        #[command(flatten)]
        db: DatabaseArgs,
        id: i64,
        #[command(flatten)]
        gate: GateArgs,
    },
}

/// Which Recommendation to decide on, and how.
#[derive(clap::Args, Debug)]
pub struct ReviewArgs {
    /// The Recommendation's name (its action ID in lower case).
    pub name: String,
    /// Its namespace (the target's).
    #[arg(short = 'n', long)]
    pub namespace: String,
    /// Why, recorded on the Approval and in the journal.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Wait up to this many seconds for the agent's result (0: do not wait).
    #[arg(long, default_value_t = 120)]
    pub wait_seconds: u64,
}

/// What an approval or an undo is judged against when it is sent, like
/// every write: the policy (kill switch, freezes, guards), the agent's mode
/// and scope, and what the agent observes. In the agent's pod the chart's
/// environment gives the agent's own values.
#[derive(clap::Args, Debug)]
pub struct GateArgs {
    /// Namespace of the AutopilotPolicy `autopilot` (kill switch, limits);
    /// in the agent's pod, its own namespace. Nothing is sent when it does
    /// not exist.
    #[arg(long, env = "POD_NAMESPACE", default_value = "autopilot")]
    pub policy_namespace: String,
    /// The agent's scope: only targets in these namespaces (comma-separated
    /// or repeated; default: all) are written.
    #[arg(long = "namespace", env = "AUTOPILOT_NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Prometheus, for the observations some guards need (the replication
    /// lag of a switchover target); without it a switchover is refused.
    #[arg(long, env = "AUTOPILOT_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// The agent's mode (the same variable as `autopilot run`'s): in
    /// dry-run nothing is sent, whoever asks.
    #[arg(
        long = "agent-mode",
        env = "AUTOPILOT_MODE",
        default_value = "recommend"
    )]
    pub agent_mode: crate::decide::Mode,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_a_kubectl_plugin_the_usage_says_kubectl_autopilot() {
        let cli = Cli::try_parse_args([
            "/usr/local/bin/kubectl-autopilot",
            "actions",
            "list",
            "--pending",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Actions(ActionsCommand::List { pending: true, .. })
        ));
        let err =
            Cli::try_parse_args(["kubectl-autopilot", "actions", "nope"]).expect_err("unknown");
        assert!(
            err.to_string().contains("kubectl autopilot actions"),
            "{err}"
        );
        let err = Cli::try_parse_args(["autopilot", "actions", "nope"]).expect_err("unknown");
        assert!(
            err.to_string().contains("autopilot actions") && !err.to_string().contains("kubectl"),
            "{err}"
        );
    }

    #[test]
    fn the_review_page_is_served_on_loopback_only() {
        let run = |addr: &str| {
            Cli::try_parse_args(["autopilot", "run", "--review-listen", addr]).map(|c| {
                match c.command {
                    Command::Run(args) => args.review_listen,
                    _ => unreachable!(),
                }
            })
        };
        assert_eq!(
            run("127.0.0.1:9000").expect("loopback"),
            ReviewListen(Some("127.0.0.1:9000".parse().expect("addr")))
        );
        assert_eq!(
            run("[::1]:9000").expect("loopback").0.map(|a| a.port()),
            Some(9000)
        );
        assert_eq!(run("off").expect("off"), ReviewListen(None));
        let err = run("0.0.0.0:8081").expect_err("all addresses");
        assert!(err.to_string().contains("not a loopback address"), "{err}");
        let default = Cli::try_parse_args(["autopilot", "run"]).expect("defaults");
        let Command::Run(args) = default.command else {
            unreachable!()
        };
        assert_eq!(
            args.review_listen.0.map(|a| a.ip().is_loopback()),
            Some(true)
        );
    }
}
