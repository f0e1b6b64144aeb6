//! Wiring of the long-running agent: leader election, the payments
//! controllers, the observe → detect → decide → act loop, the runbooks' hot
//! reload, and the HTTP endpoints an on-call engineer and the kubelet use
//! (`/metrics`, `/healthz`, `/readyz`).
//!
//! Only the leader acts: every replica serves HTTP, but the controllers and
//! the loop start only once this replica holds the Lease, and a replica that
//! loses it exits (its Deployment restarts it as a standby) rather than risk
//! two writers.
//!
//! Must not hold decision logic: it starts what other modules define.

pub mod cycle;
pub mod deferred;
pub mod evaluate;
pub mod metrics;
pub mod outages;
pub mod read;
pub mod replay;
pub mod rules;
pub mod samples;
pub mod send;
mod start;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::watch;

use crate::{act::executor, decide::Mode, observe, reconcile, store::SqlJournal};
pub use rules::RulesSource;
use start::Wiring;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the Kubernetes API (kubeconfig or in-cluster config) failed")]
    Connect(#[source] kube::Error),
    #[error("registering metrics failed")]
    RegisterMetrics(#[source] prometheus::Error),
    #[error("listening on {addr} failed")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the action journal failed")]
    OpenJournal(#[source] crate::store::Error),
    #[error("loading the model specs from {dir} failed")]
    LoadModels {
        dir: String,
        #[source]
        source: observe::Error,
    },
    #[error("configuring the Prometheus client failed")]
    ConfigurePrometheus(#[source] observe::Error),
    #[error("setting up leader election on Lease {namespace}/{name} failed")]
    LeaderElection {
        namespace: String,
        name: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    #[error(
        "lost the leader Lease {namespace}/{name}; exiting so that only one replica acts (the restart rejoins as a standby)"
    )]
    LostLeadership { namespace: String, name: String },
    #[error("taking the leader epoch in the journal failed; not leading without it")]
    LeaderEpoch(#[source] crate::act::journal::Error),
    #[error(
        "shard {shard} needs the journal all shards share, on PostgreSQL (--database-url postgres://…): the global guards hold across shards only there"
    )]
    ShardWithoutSharedJournal { shard: crate::scope::Shard },
    #[error("serving the review page failed")]
    Review(#[source] crate::review::Error),
}

impl Error {
    /// Fixed category for metric labels and exit reporting.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Connect(_) => "connect",
            Error::RegisterMetrics(_) => "register_metrics",
            Error::Listen { .. } => "listen",
            Error::OpenJournal(_) => "open_journal",
            Error::LoadModels { .. } => "load_models",
            Error::ConfigurePrometheus(_) => "configure_prometheus",
            Error::LeaderElection { .. } => "leader_election",
            Error::LostLeadership { .. } => "lost_leadership",
            Error::LeaderEpoch(_) => "leader_epoch",
            Error::ShardWithoutSharedJournal { .. } => "shard_without_shared_journal",
            Error::Review(_) => "review",
        }
    }
}

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// `false` runs as leader at once (one replica, or local use).
    pub enabled: bool,
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    pub identity: String,
    /// Seconds a Lease is held without renewal; a standby takes over after
    /// a crashed leader within about this long.
    pub lease_seconds: u64,
}

/// Everything `autopilot run` is configured with.
#[derive(Clone, Debug)]
pub struct Options {
    /// The controllers' settings. Its scope is the loop's: a sharded
    /// agent's loop observes, decides and acts only on its shard of the
    /// namespaces ([`crate::scope::Shard`]), while its controllers (shard 0
    /// only) reconcile every shard's.
    pub reconcile: reconcile::Settings,
    pub listen: SocketAddr,
    /// The review page's address (loopback; `None`: no page).
    pub review_listen: Option<SocketAddr>,
    /// The agent's own namespace: Lease, guard policy and rules ConfigMap.
    pub namespace: String,
    pub leadership: Leadership,
    /// Run the payments controllers (off: only the loop).
    pub controllers: bool,
    pub prometheus_url: Option<String>,
    pub prometheus_timeout: Duration,
    pub database_url: String,
    pub rules: RulesSource,
    pub models: PathBuf,
    pub mode: Mode,
    pub cycle_interval: Duration,
    pub warmup_history: Duration,
    /// The admission policy that proves approvers (`--approval-policy`).
    pub approval_policy: Option<String>,
}

#[derive(Clone)]
struct Http {
    registry: Registry,
}

async fn serve_metrics(State(http): State<Http>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&http.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", encoder.format_type().to_string())],
            buf,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain".to_string())],
            e.to_string().into_bytes(),
        ),
    }
}

/// Resolves on SIGINT or SIGTERM (what the kubelet sends).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// This process's default identity in the Lease: `$POD_NAME`, else
/// `<hostname>-<pid>`.
pub fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "autopilot".into());
            format!("{host}-{}", std::process::id())
        })
}

/// Waits until `rx` says this replica leads; `false` if the election ended.
async fn until_leader(rx: &mut watch::Receiver<bool>) -> bool {
    loop {
        if *rx.borrow_and_update() {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

/// Resolves when `rx` says this replica no longer leads.
async fn until_lost(rx: &mut watch::Receiver<bool>) {
    loop {
        if rx.changed().await.is_err() || !*rx.borrow_and_update() {
            return;
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen` until
/// SIGINT/SIGTERM.
async fn serve_http(
    registry: &Registry,
    listen: SocketAddr,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(Http {
            registry: registry.clone(),
        });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }))
}

/// Whether this replica leads, as the election says.
struct Election {
    /// `true` while this replica holds the Lease.
    rx: watch::Receiver<bool>,
    /// The Lease manager; it releases the Lease once `rx` is dropped.
    task: Option<
        tokio::task::JoinHandle<
            Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
        >,
    >,
    /// Without election this replica leads at once; the sender lives as
    /// long as `run`.
    always_leader: Option<watch::Sender<bool>>,
}

/// Seconds before the Lease expires at which its holder renews it.
fn lease_grace_seconds(lease_seconds: u64) -> u64 {
    (lease_seconds / 3).max(1)
}

/// Joins the election for the Lease (or, disabled, leads at once).
async fn elect(
    client: &kube::Client,
    namespace: &str,
    lease: &Leadership,
) -> Result<Election, Error> {
    if !lease.enabled {
        let (tx, rx) = watch::channel(true);
        return Ok(Election {
            rx,
            task: None,
            always_leader: Some(tx),
        });
    }
    let grace = lease_grace_seconds(lease.lease_seconds);
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &lease.lease_name)
        .with_namespace(namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.lease_seconds)
        .with_grace(grace)
        .with_field_manager(format!("{}-lease", crate::crd::FIELD_MANAGER))
        .build()
        .await
        .map_err(|source| Error::LeaderElection {
            namespace: namespace.to_string(),
            name: lease.lease_name.clone(),
            source,
        })?;
    let (rx, task) = manager.watch().await;
    Ok(Election {
        rx,
        task: Some(task),
        always_leader: None,
    })
}

/// Watches the rules ConfigMap, if the runbooks come from one.
fn spawn_rules_watch(
    client: &kube::Client,
    source: &RulesSource,
) -> Option<watch::Receiver<Option<rules::Snapshot>>> {
    let RulesSource::ConfigMap { namespace, name } = source else {
        return None;
    };
    let (tx, rx) = watch::channel(None);
    tokio::spawn(rules::watch_configmap(
        client.clone(),
        namespace.clone(),
        name.clone(),
        tx,
    ));
    Some(rx)
}

/// On becoming leader, before anything is written: from now on every write
/// first checks that this replica's hold on the Lease is current
/// (`act::fence`), so a leader paused past its Lease writes nothing when it
/// wakes. The fence closes half the grace before the Lease could expire and
/// is refreshed four times per grace, so the renewal (a grace before
/// expiry) is seen long before it would close. A PostgreSQL journal shared
/// by replicas refuses an older leader's intents from now on (the epoch
/// check in the intent's transaction). Returns the fence's reading task.
async fn fence_writes(
    client: &kube::Client,
    namespace: &str,
    lease: &Leadership,
    journal: &SqlJournal,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    let fence = if lease.enabled {
        let grace = Duration::from_secs(lease_grace_seconds(lease.lease_seconds));
        let every = grace / 4;
        Some(
            crate::act::fence::install(
                client.clone(),
                namespace,
                &lease.lease_name,
                &lease.identity,
                grace / 2,
                every,
            )
            .await,
        )
    } else {
        None
    };
    let now = chrono::Utc::now().timestamp();
    match journal
        .begin_leader_epoch(&lease.lease_name, &lease.identity, now)
        .await
    {
        Ok(Some(epoch)) => {
            tracing::info!(
                epoch,
                "leader epoch taken: the journal refuses intents of any earlier leader"
            );
            Ok(fence)
        }
        Ok(None) => Ok(fence),
        Err(error) => {
            if let Some(task) = &fence {
                task.abort();
            }
            Err(Error::LeaderEpoch(error))
        }
    }
}

/// The name of every metric the agent registers (and serves on
/// `/metrics`): the chart's dashboard and alerts may name only these
/// (`tests/monitoring.rs`). Registered as `run_with` registers them; each
/// set of metrics is taken apart field by field, so a new metric fails to
/// compile here until it is listed.
pub fn metric_names() -> Result<std::collections::BTreeSet<String>, prometheus::Error> {
    use prometheus::core::Collector;
    let registry = Registry::new();
    let reconcile::Metrics {
        reconciles,
        failures,
        duration,
        rollbacks,
        writes,
        applies_skipped,
    } = reconcile::Metrics::register(&registry)?;
    let executor::Metrics {
        actions,
        verifications,
    } = executor::Metrics::register(&registry)?;
    let metrics::Metrics {
        leader,
        cycles,
        cycle_duration,
        prometheus_up,
        findings,
        signals,
        runbooks_loaded,
        runbook_rejected,
        runbook_errors,
        runbook_evaluations,
        read_errors,
        kill_switch,
        series_dropped,
        runbooks_deferred,
        open_findings: _, // not exported: the log's episode memory
        missing_data: _,  // not exported either
    } = metrics::Metrics::register(&registry)?;
    let all: [&dyn Collector; 22] = [
        &applies_skipped,
        &reconciles,
        &failures,
        &duration,
        &rollbacks,
        &writes,
        &actions,
        &verifications,
        &leader,
        &cycles,
        &cycle_duration,
        &prometheus_up,
        &findings,
        &signals,
        &runbooks_loaded,
        &runbook_rejected,
        &runbook_errors,
        &runbook_evaluations,
        &read_errors,
        &kill_switch,
        &series_dropped,
        &runbooks_deferred,
    ];
    Ok(all
        .iter()
        .flat_map(|c| c.desc())
        .map(|d| d.fq_name.clone())
        .collect())
}

/// Runs the agent until SIGINT/SIGTERM, connected through the in-cluster
/// service account or the kubeconfig.
pub async fn run(opts: Options) -> Result<(), Error> {
    let client = kube::Client::try_default().await.map_err(Error::Connect)?;
    run_with(client, opts).await
}

/// Runs the agent with `client` until SIGINT/SIGTERM.
pub async fn run_with(client: kube::Client, opts: Options) -> Result<(), Error> {
    let registry = Registry::new();
    let wiring = Wiring::configure(&opts, &registry).await?;
    let served = Served {
        http: serve_http(&registry, opts.listen).await?,
        review: wiring.serve_review(opts.review_listen).await?,
    };
    tracing::info!(
        listen = %opts.listen, namespace = %opts.namespace, scope = %opts.reconcile.scope.describe(), mode = opts.mode.as_str(),
        rules = %opts.rules, models = wiring.models(), identity = %opts.leadership.identity,
        "autopilot starting: /metrics /healthz /readyz"
    );

    let lease = &opts.leadership;
    let Election {
        rx: mut leader_rx,
        task: election,
        always_leader,
    } = elect(&client, &opts.namespace, lease).await?;
    let metrics = wiring.metrics.clone();
    metrics.leader.set(0);
    tracing::info!(lease = %lease.lease_name, enabled = lease.enabled, "waiting to lead");
    let became_leader = tokio::select! {
        led = until_leader(&mut leader_rx) => led,
        () = shutdown_signal() => false,
    };
    if !became_leader {
        tracing::info!("stopping before leading");
        drop(leader_rx);
        if let Some(task) = election {
            let _ = task.await;
        }
        served.stop();
        return Ok(());
    }
    metrics.leader.set(1);
    let fence = fence_writes(&client, &opts.namespace, lease, wiring.journal()).await?;
    tracing::info!(identity = %lease.identity, "leading: starting the controllers and the loop");

    let (autopilot, ctx) = wiring.lead(client, &opts).await;
    let controllers = async {
        if opts.controllers {
            reconcile::run(ctx).await;
            tracing::info!("controllers stopped");
        } else {
            std::future::pending::<()>().await;
        }
    };

    let result = tokio::select! {
        () = controllers => Ok(()),
        () = autopilot.run() => Ok(()),
        () = until_lost(&mut leader_rx) => {
            metrics.leader.set(0);
            Err(Error::LostLeadership { namespace: opts.namespace.clone(), name: lease.lease_name.clone() })
        }
        () = shutdown_signal() => Ok(()),
    };
    // Release the Lease (closing the channel makes the manager release it),
    // so a standby takes over at once rather than after the Lease expires.
    drop(leader_rx);
    if let Some(task) = election
        && let Ok(Err(error)) = task.await
    {
        tracing::warn!(%error, "releasing the leader Lease failed; it expires by itself");
    }
    drop(always_leader);
    if let Some(task) = fence {
        task.abort();
    }
    served.stop();
    result
}

/// What every replica serves, leader or not, until it stops.
struct Served {
    /// `/metrics`, `/healthz`, `/readyz`.
    http: tokio::task::JoinHandle<()>,
    /// The review page, if asked for and its port was free.
    review: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    fn stop(self) {
        self.http.abort();
        if let Some(task) = self.review {
            task.abort();
        }
    }
}
