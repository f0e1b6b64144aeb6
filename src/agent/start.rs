//! What `run_with` starts from: the configuration, checked before the
//! replica competes for the Lease, and the loop built from it once the
//! replica leads.

use std::{net::SocketAddr, sync::Arc};

use kube::runtime::events::{Recorder, Reporter};
use prometheus::Registry;

use super::{Error, Options, cycle, metrics};
use crate::{
    act::executor::{self, Approvals, Executor, Observer},
    decide::{Limits, RunbookSet},
    detect::{Estate, spec::ValidatedSpec},
    observe::{self, Prometheus},
    reconcile::{self, Context, NoGate},
    store::SqlJournal,
};

/// The agent's parts that need no Lease: its metrics, model specs,
/// Prometheus client and journal.
pub(super) struct Wiring {
    pub(super) metrics: metrics::Metrics,
    act_metrics: executor::Metrics,
    reconcile_metrics: reconcile::Metrics,
    specs: Vec<ValidatedSpec>,
    prometheus: Option<Prometheus>,
    journal: SqlJournal,
}

impl Wiring {
    /// Registers the metrics in `registry` and loads what `opts` names.
    /// Everything that can be wrong with the configuration fails here, at
    /// start, before the replica competes for the Lease.
    pub(super) async fn configure(opts: &Options, registry: &Registry) -> Result<Self, Error> {
        let reconcile_metrics =
            reconcile::Metrics::register(registry).map_err(Error::RegisterMetrics)?;
        let act_metrics = executor::Metrics::register(registry).map_err(Error::RegisterMetrics)?;
        let metrics = metrics::Metrics::register(registry).map_err(Error::RegisterMetrics)?;
        let specs =
            observe::load_model_specs(&opts.models).map_err(|source| Error::LoadModels {
                dir: opts.models.display().to_string(),
                source,
            })?;
        let prometheus = opts
            .prometheus_url
            .as_deref()
            .map(|url| Prometheus::new(url, opts.prometheus_timeout))
            .transpose()
            .map_err(Error::ConfigurePrometheus)?;
        if prometheus.is_none() {
            tracing::warn!(
                "no --prometheus-url: no findings, so only cron and condition runbooks run"
            );
        }
        let journal = SqlJournal::connect(&opts.database_url)
            .await
            .map_err(Error::OpenJournal)?;
        if let (Some(shard), SqlJournal::Sqlite(_)) = (opts.reconcile.scope.shard(), &journal) {
            return Err(Error::ShardWithoutSharedJournal { shard });
        }
        Ok(Wiring {
            metrics,
            act_metrics,
            reconcile_metrics,
            specs,
            prometheus,
            journal,
        })
    }

    /// How many model specs were loaded.
    pub(super) fn models(&self) -> usize {
        self.specs.len()
    }

    pub(super) fn journal(&self) -> &SqlJournal {
        &self.journal
    }

    /// Serves the review page of the journal on `addr` (loopback), as every
    /// replica does. A busy port costs the page, not the agent.
    pub(super) async fn serve_review(
        &self,
        addr: Option<SocketAddr>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
        let Some(addr) = addr else {
            return Ok(None);
        };
        let review = crate::review::Review {
            journal: self.journal.clone(),
            prometheus: self.prometheus.clone(),
            specs: Arc::new(self.specs.clone()),
        };
        match crate::review::serve(addr, review).await {
            Ok((task, addr)) => {
                tracing::info!(review = %addr, "review page served (kubectl port-forward to reach it)");
                Ok(Some(task))
            }
            // e.g. another agent on this host.
            Err(error @ crate::review::Error::Listen { .. }) => {
                tracing::error!(error = %crate::telemetry::chain(&error), "no review page; the agent runs without it");
                Ok(None)
            }
            Err(error) => Err(Error::Review(error)),
        }
    }

    /// The loop, and the controllers' context, of a replica that leads.
    pub(super) async fn lead(
        self,
        client: kube::Client,
        opts: &Options,
    ) -> (cycle::Autopilot, Arc<Context>) {
        let reporter = Reporter {
            controller: "autopilot".into(),
            instance: Some(opts.leadership.identity.clone()),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        let rules_rx = super::spawn_rules_watch(&client, &opts.rules);
        let observer = match &self.prometheus {
            Some(p) => Observer::Prometheus(p.clone()),
            None => Observer::Nothing,
        };
        let approvals = approvals(&client, opts.approval_policy.clone()).await;
        let scope = opts.reconcile.scope.clone();
        let autopilot = cycle::Autopilot::new(cycle::Parts {
            client: client.clone(),
            prometheus: self.prometheus,
            estate: Estate::new(self.specs),
            runbooks: RunbookSet::new(Limits::default()),
            executor: Executor::new(client.clone(), self.journal, self.act_metrics)
                .with_mode(opts.mode)
                .with_scope(scope.clone())
                .with_observer(observer)
                .with_approvals(approvals),
            metrics: self.metrics,
            recorder,
            settings: cycle::Settings {
                namespace: opts.namespace.clone(),
                scope,
                mode: opts.mode,
                interval: opts.cycle_interval,
                warmup_history: opts.warmup_history,
            },
            rules: opts.rules.clone(),
            rules_rx,
        });
        // The controllers reconcile every shard's namespaces (only shard 0
        // runs them); the loop keeps to its shard.
        let mut reconcile_settings = opts.reconcile.clone();
        reconcile_settings.scope = reconcile_settings.scope.with_shard(None);
        let ctx = Arc::new(Context::new(
            client,
            reconcile_settings,
            Arc::new(NoGate),
            self.reconcile_metrics,
        ));
        (autopilot, ctx)
    }
}

/// How the executor accepts Approvals: proven by `admission_policy`, and
/// never the agent's own (its user name asked of the API server; unknown,
/// every Approval is refused).
async fn approvals(client: &kube::Client, admission_policy: Option<String>) -> Approvals {
    let own_user = match crate::act::whoami(client).await {
        Ok(user) if !user.is_empty() => Some(user),
        Ok(_) => {
            tracing::warn!(
                "the API server gave the agent no user name (SelfSubjectReview); no Approval will be accepted"
            );
            None
        }
        Err(error) => {
            tracing::warn!(error = %crate::telemetry::chain(&error), "cannot tell the agent's own user name (SelfSubjectReview); no Approval will be accepted");
            None
        }
    };
    if admission_policy.is_none() {
        tracing::warn!(
            "no --approval-policy: recommendations are published, but no Approval is accepted"
        );
    }
    Approvals {
        admission_policy,
        own_user,
        ..Approvals::default()
    }
}
