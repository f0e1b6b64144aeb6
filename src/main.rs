//! Entry point: parse arguments, set up telemetry, run one subcommand.

use anyhow::Context;

use autopilot::cli::{Cli, Command, RunbookCommand};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Also a kubectl plugin: as `kubectl-autopilot`, usage says `kubectl autopilot`.
    let cli = Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    // A command whose output is its report ends quietly when the reader goes
    // away (`autopilot runbook check | head`), as other Unix tools do, rather
    // than panicking on the closed pipe. The agent, the sandbox and the review
    // page keep Rust's default (SIGPIPE ignored) so that a peer closing a
    // socket is an error they handle, never the end of the process.
    if matches!(
        cli.command,
        Command::Crds { .. }
            | Command::Detect(_)
            | Command::Actions(_)
            | Command::Replay(_)
            | Command::Runbook(_)
    ) {
        // Only the disposition changes: sockets are written with
        // MSG_NOSIGNAL by std and tokio on Linux, so only a closed stdout or
        // stderr raises the signal.
        sigpipe::reset();
    }
    // A replay's report (and a detector evaluation's, which replays) is
    // its output: only warnings are logged beside it.
    let level = match cli.command {
        Command::Replay(_) | Command::Detect(_) => "warn",
        _ => "info",
    };
    let otlp_endpoint = match &cli.command {
        Command::Run(args) => args.otlp_endpoint.as_deref(),
        _ => None,
    };
    let otlp = autopilot::telemetry::init_with(cli.log_json, level, otlp_endpoint)?;
    // reqwest (Prometheus client) is built without a default crypto provider;
    // use ring everywhere, like kube.
    let _ = rustls::crypto::ring::default_provider().install_default();

    match cli.command {
        Command::Run(args) => {
            autopilot::agent::run(args.options()).await?;
        }
        Command::Crds { output } => {
            let yaml = autopilot::crd::crds_yaml().context("rendering the CRDs as YAML")?;
            match output {
                Some(path) => std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => print!("{yaml}"),
            }
        }
        Command::Sandbox(settings) => autopilot::cli::sandbox::run(settings).await?,
        Command::Detect(cmd) => autopilot::cli::detect::run(cmd).await?,
        Command::Actions(cmd) => autopilot::cli::actions::run(cmd).await?,
        Command::Replay(args) => autopilot::cli::replay::run(*args).await?,
        Command::Review(settings) => autopilot::cli::review::run(settings).await?,
        Command::Runbook(cmd) => {
            let ok = match cmd {
                RunbookCommand::Check {
                    files,
                    rules,
                    models,
                } => autopilot::cli::runbook::check(&files, &rules, &models)?,
                RunbookCommand::Test { files, rules } => {
                    autopilot::cli::runbook::test(&files, &rules)?
                }
                RunbookCommand::Api => {
                    autopilot::cli::runbook::api();
                    true
                }
            };
            if !ok {
                std::process::exit(1);
            }
        }
    }
    // Send the spans still batched before the process ends.
    drop(otlp);
    Ok(())
}
