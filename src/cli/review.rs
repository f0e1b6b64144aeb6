//! `autopilot review`: the review page of a journal, served locally.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;

use super::DatabaseArgs;
use crate::{observe::Prometheus, review::Review, store::SqlJournal};

/// Flags of `autopilot review`.
#[derive(clap::Args, Debug)]
pub struct Settings {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Where to serve the page: a loopback address only (the page has no
    /// authentication of its own).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Prometheus base URL, for the plots of the signals around each
    /// action; without it the plots show only the journaled finding values.
    #[arg(long, env = "AUTOPILOT_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// Folder of model specs (*.yaml): each signal's query. Skipped with a
    /// warning when it does not exist.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
}

/// What the page reads, from the flags.
pub async fn open(s: &Settings) -> anyhow::Result<Review> {
    let journal = SqlJournal::connect(&s.db.database_url)
        .await
        .context("opening the journal")?;
    let prometheus = s
        .prometheus_url
        .as_deref()
        .map(|url| Prometheus::new(url, Duration::from_secs(10)))
        .transpose()
        .context("--prometheus-url")?;
    let specs = if s.models.is_dir() {
        crate::observe::load_model_specs(&s.models)
            .with_context(|| format!("loading the model specs from {}", s.models.display()))?
    } else {
        tracing::warn!(models = %s.models.display(), "no model specs: the plots show only the journaled finding values");
        Vec::new()
    };
    Ok(Review {
        journal,
        prometheus,
        specs: Arc::new(specs),
    })
}

/// Serves the page until Ctrl-C.
pub async fn run(s: Settings) -> anyhow::Result<()> {
    let review = open(&s).await?;
    let (server, addr) = crate::review::serve(s.listen, review).await?;
    println!("review page: http://{addr}/ (Ctrl-C to stop)");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        r = server => r.context("the review page's server stopped")?,
    }
    Ok(())
}
