//! One kube-runtime controller per `payments.io` kind. Each reconcile is a
//! fixed pipeline: fetch (live Deployment, served kinds) → validate (pure) →
//! plan (pure: the owned objects) → apply (through `act`) → status (pure,
//! from what was applied) → status patch and Events (through `act`).
//!
//! Must not write to the cluster except through `crate::act`.

pub mod backoff;
pub mod batch_processor;
pub mod clearing_adapter;
pub mod conditions;
mod metrics;
pub mod objects;
pub mod payment_gateway;
pub mod rollout;
pub mod saga_orchestrator;
pub mod schedule;
pub mod watch;
mod workload;

pub use metrics::Metrics;
pub use workload::{NoGate, SharedVerdicts, UpgradeGate, WorkloadKind};

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    batch::v1::{CronJob, Job},
    core::v1::{ConfigMap, Namespace, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client,
    runtime::{
        Controller,
        controller::Action,
        events::{Recorder, Reporter},
        reflector, watcher,
    },
};
use tokio::sync::RwLock;

use crate::{
    crd::{ClearingAdapter, PaymentGateway, SagaOrchestrator},
    kinds::{Owned, Payments, PaymentsKind},
    scope::{HANDS_OFF_LABEL, Scope},
};

/// What the reconcilers know about the cluster beyond the resource itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    /// `monitoring.coreos.com/v1` ServiceMonitor is served.
    pub service_monitor_served: bool,
    /// The live Deployment's `spec.replicas` (kept when an HPA scales it).
    pub live_replicas: Option<i32>,
}

/// A spec the reconciler cannot realise: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Errors that end a reconcile early; all are transient (retried with
/// back-off). A bad spec is not an error: it becomes a condition.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("fetching {what} failed")]
    Fetch {
        what: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("planning the owned objects failed")]
    Plan(#[from] objects::Error),
    #[error(transparent)]
    Apply(#[from] crate::act::Error),
}

impl Error {
    /// Fixed category for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Fetch { .. } => "fetch",
            Error::Plan(_) => "plan",
            Error::Apply(e) => e.kind(),
        }
    }
}

/// Settings of the controllers.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The namespaces watched: one watch per namespace and kind (so a scoped
    /// install needs Roles only), or one cluster-wide watch per kind for
    /// [`Scope::all`].
    pub scope: Scope,
    /// Fallback poll while a rollout is in progress. Deployment status
    /// changes wake the reconciler at once through its watch, so this only
    /// bounds how late an outside verdict (the upgrade gate) is noticed;
    /// polling much faster starves new resources when many roll at once.
    pub progress_interval: Duration,
    /// Requeue interval of a settled resource (drift is also caught by watches).
    pub resync_interval: Duration,
    /// Reconciles running at once per controller (per kind, and per
    /// namespace of a scoped install).
    pub concurrency: u16,
    /// Namespace of the guard policy (AutopilotPolicy `autopilot`): an automatic
    /// rollback is a write the agent decides alone, so it waits while the
    /// kill switch is on or the policy cannot be read. `None` (tests of the
    /// controllers alone): the policy is not consulted (the scope and the
    /// hands-off label still are).
    pub policy_namespace: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            scope: Scope::all(),
            progress_interval: Duration::from_secs(30),
            resync_interval: Duration::from_secs(300),
            concurrency: 8,
            policy_namespace: None,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub settings: Settings,
    pub gate: Arc<dyn UpgradeGate>,
    pub metrics: Metrics,
    /// Failures per object since its last successful reconcile: how long
    /// `error_policy` waits before the next try.
    pub backoff: backoff::Backoff,
    /// The owned Deployments and HPAs the watches have seen, read instead of GETs.
    pub owned: watch::OwnedStores,
    /// The plans applied in full, which a reconcile woken by a status write
    /// alone need not apply again.
    pub plans: Arc<watch::AppliedPlans>,
    served: RwLock<Option<(tokio::time::Instant, bool)>>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        gate: Arc<dyn UpgradeGate>,
        metrics: Metrics,
    ) -> Self {
        let reporter = Reporter {
            controller: "autopilot".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            gate,
            metrics,
            backoff: backoff::Backoff::new(
                backoff::BackoffSettings::default(),
                backoff::process_seed(),
            ),
            owned: watch::OwnedStores::default(),
            plans: Arc::default(),
            served: RwLock::new(None),
        }
    }

    /// Whether ServiceMonitor is served, asked of the API at most once a minute.
    pub async fn service_monitor_served(&self) -> Result<bool, Error> {
        const TTL: Duration = Duration::from_secs(60);
        if let Some((at, served)) = *self.served.read().await
            && at.elapsed() < TTL
        {
            return Ok(served);
        }
        let served = match self
            .client
            .list_api_group_resources("monitoring.coreos.com/v1")
            .await
        {
            Ok(list) => list.resources.iter().any(|r| r.kind == "ServiceMonitor"),
            Err(kube::Error::Api(s)) if s.code == 404 => false,
            Err(source) => {
                return Err(Error::Fetch {
                    what: "the served monitoring.coreos.com/v1 kinds",
                    source,
                });
            }
        };
        *self.served.write().await = Some((tokio::time::Instant::now(), served));
        Ok(served)
    }

    /// Why an automatic rollback of `obj` must wait now, if it must: it or
    /// its namespace is hands-off or out of scope, the namespace cannot be
    /// read to tell (fail closed), the kill switch is on, or the policy
    /// cannot be read (fail closed). Reconciliation of what the user wrote
    /// goes on regardless.
    pub async fn rollback_held<K>(&self, obj: &K) -> Option<String>
    where
        K: kube::Resource,
    {
        let namespace = obj.meta().namespace.clone().unwrap_or_default();
        let read = Api::<Namespace>::all(self.client.clone())
            .get(&namespace)
            .await
            .map(|n| n.metadata.labels.unwrap_or_default())
            .map_err(|e| e.to_string());
        if let Some(why) = scope_hold(
            &self.settings.scope,
            &namespace,
            read.as_ref().map_err(String::as_str),
            obj.meta().labels.as_ref(),
        ) {
            return Some(why);
        }
        let ns = self.settings.policy_namespace.as_deref()?;
        match crate::act::executor::fetch_policy(&self.client, ns).await {
            Ok(p) if p.kill_switch => Some(format!(
                "the kill switch is on (AutopilotPolicy {ns}/{})",
                crate::act::guard::POLICY_NAME
            )),
            Ok(_) => None,
            Err(e) => Some(format!("the guard policy cannot be read: {e}")),
        }
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// Why the scope holds an automatic rollback in `namespace`, if it does:
/// outside the allow-list, or the hands-off label on the namespace or the
/// resource. Namespace labels that could not be read (`Err`, the reason)
/// hold too: a rollback is never sent on a guess.
pub fn scope_hold(
    scope: &Scope,
    namespace: &str,
    namespace_labels: Result<&BTreeMap<String, String>, &str>,
    object_labels: Option<&BTreeMap<String, String>>,
) -> Option<String> {
    match namespace_labels {
        Err(e) => Some(format!(
            "namespace {namespace} cannot be read to check {HANDS_OFF_LABEL}: {e}"
        )),
        Ok(labels) => scope
            .check(namespace, Some(labels), object_labels)
            .err()
            .map(|out| out.to_string()),
    }
}

fn scoped<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// [`scoped`], metadata only: an `Api` of `PartialObjectMeta` lists and
/// watches with metadata-only requests.
fn meta<K>(client: &Client, namespace: &Option<String>) -> Api<kube::core::PartialObjectMeta<K>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    scoped(client, namespace)
}

/// Runs one controller per payments kind of the registry (`crate::kinds`)
/// until the process is told to stop.
pub async fn run(ctx: Arc<Context>) {
    let controllers = crate::kinds::payments().map(|(_, p)| controller(p, ctx.clone()));
    futures::future::join_all(controllers).await;
}

/// The controller of one payments kind: its reconcile function, and a watch
/// on every object kind the registry says it owns. The match is exhaustive,
/// so a new kind does not compile until it has a controller.
fn controller(p: Payments, ctx: Arc<Context>) -> BoxFuture<'static, ()> {
    match p.id {
        PaymentsKind::PaymentGateway => workload_controller::<PaymentGateway>(p.owns, ctx),
        PaymentsKind::ClearingAdapter => workload_controller::<ClearingAdapter>(p.owns, ctx),
        PaymentsKind::SagaOrchestrator => workload_controller::<SagaOrchestrator>(p.owns, ctx),
        PaymentsKind::BatchProcessor => run_controller(
            p.owns,
            ctx,
            batch_processor::reconcile,
            batch_processor::error_policy,
        ),
    }
}

/// The controller of a Deployment-backed kind: the shared workload driver.
fn workload_controller<K: WorkloadKind>(
    owns: &[Owned],
    ctx: Arc<Context>,
) -> BoxFuture<'static, ()> {
    run_controller(
        owns,
        ctx,
        workload::reconcile::<K>,
        workload::error_policy::<K>,
    )
}

fn run_controller<K, Fut>(
    owns: &[Owned],
    ctx: Arc<Context>,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    error_policy: fn(Arc<K>, &Error, Arc<Context>) -> Action,
) -> BoxFuture<'static, ()>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    // One Controller per allowed namespace, each watching its kind and the
    // owned kinds there through `Api::namespaced`: a scoped install needs
    // no cluster-wide list or watch. (Merging per-namespace watcher streams
    // into one Controller needs kube-runtime's unstable stream API and our
    // own reflector stores; reconciles are keyed by namespace and name
    // either way, so separate Controllers never contend for an object.)
    let scope = &ctx.settings.scope;
    let namespaces: Vec<Option<String>> = if scope.is_all() {
        vec![None]
    } else {
        scope.list().iter().cloned().map(Some).collect()
    };
    let controllers: Vec<_> = namespaces
        .into_iter()
        .map(|ns| namespace_controller(owns, ctx.clone(), ns, reconcile, error_policy))
        .collect();
    futures::future::join_all(controllers).map(|_| ()).boxed()
}

/// The controller of one kind in one namespace (`None`: every namespace).
fn namespace_controller<K, Fut>(
    owns: &[Owned],
    ctx: Arc<Context>,
    ns: Option<String>,
    reconcile: fn(Arc<K>, Arc<Context>) -> Fut,
    error_policy: fn(Arc<K>, &Error, Arc<Context>) -> Action,
) -> BoxFuture<'static, ()>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    let client = ctx.client.clone();
    let (reader, writer) = reflector::store();
    let trigger = watch::triggers(
        scoped::<K>(&client, &ns),
        watcher::Config::default(),
        Some(writer),
        true,
        // Our own status writes are echoes (nobody else writes it); the
        // executor's patches to the spec are not.
        watch::Echoes::Status,
        None,
    );
    let mut controller = Controller::for_stream(trigger, reader).with_config(
        kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency),
    );
    for owned in owns {
        controller = watch_owned(controller, *owned, &ctx, &ns);
    }
    controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .boxed()
}

/// What a controller and its watches need of a kind: a static type, read
/// from JSON, shared between tasks.
trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<T> Watched for T where
    T: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Adds the watch of one owned object kind to a controller: only objects
/// carrying our label ([`watch::OWNED_SELECTOR`]), echoes of our own writes
/// left out, Deployments and HPAs kept in the stores the reconcilers read.
fn watch_owned<K>(
    controller: Controller<K>,
    owned: Owned,
    ctx: &Context,
    ns: &Option<String>,
) -> Controller<K>
where
    K: Watched,
{
    let client = &ctx.client;
    let plans = &ctx.plans;
    // Whose status a reconciler reads: a Deployment's rollout, a Job's
    // completion, a CronJob's runs. An HPA's or a Service's it does not.
    match owned {
        Owned::Deployment => {
            let store = ctx.owned.claim_deployments(ns);
            owns(
                controller,
                scoped::<Deployment>(client, ns),
                store,
                true,
                plans,
            )
        }
        Owned::HorizontalPodAutoscaler => {
            let store = ctx.owned.claim_hpas(ns);
            owns(
                controller,
                scoped::<HorizontalPodAutoscaler>(client, ns),
                store,
                false,
                plans,
            )
        }
        // Objects whose content no reconciler reads are watched as
        // metadata (managed fields included, all the echo check reads, and
        // the owner references that say whom to wake): the API server
        // encodes, and the agent decodes, that much of each event.
        Owned::Service => owns(controller, meta::<Service>(client, ns), None, false, plans),
        Owned::ConfigMap => owns(
            controller,
            meta::<ConfigMap>(client, ns),
            None,
            false,
            plans,
        ),
        Owned::NetworkPolicy => owns(
            controller,
            meta::<NetworkPolicy>(client, ns),
            None,
            false,
            plans,
        ),
        Owned::CronJob => owns(controller, scoped::<CronJob>(client, ns), None, true, plans),
        Owned::Job => owns(controller, scoped::<Job>(client, ns), None, true, plans),
        // Served only where the Prometheus Operator is installed: a watch
        // would fail without its CRD, and drift of a ServiceMonitor is
        // repaired by the periodic resync.
        Owned::ServiceMonitor => controller,
    }
}

/// Wakes the controller on the labelled objects of `api` it owns (see
/// [`watch::triggers`]), keeping them in `store` when given.
fn owns<K, C>(
    controller: Controller<K>,
    api: Api<C>,
    store: Option<reflector::store::Writer<C>>,
    status_matters: bool,
    plans: &Arc<watch::AppliedPlans>,
) -> Controller<K>
where
    K: Watched,
    C: Watched,
{
    let cfg = watcher::Config::default().labels(watch::OWNED_SELECTOR);
    controller.owns_stream(watch::triggers(
        api,
        cfg,
        store,
        true,
        watch::Echoes::Owned { status_matters },
        Some(plans.clone()),
    ))
}

fn requeue(ctx: &Context, busy: bool) -> Action {
    Action::requeue(if busy {
        ctx.settings.progress_interval
    } else {
        ctx.settings.resync_interval
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::tests::labels;

    #[test]
    fn the_scope_holds_a_rollback_hands_off_out_of_scope_or_unknown() {
        let scope = Scope::namespaces(["pay"]);
        let none = labels(&[]);
        let off = labels(&[(HANDS_OFF_LABEL, "true")]);
        assert_eq!(scope_hold(&scope, "pay", Ok(&none), None), None);
        assert_eq!(scope_hold(&scope, "pay", Ok(&none), Some(&none)), None);
        let hold = |ns, ns_labels, obj| scope_hold(&scope, ns, ns_labels, obj).expect("held");
        assert!(hold("pay", Ok(&off), None).contains("namespace pay is labelled"));
        assert!(hold("pay", Ok(&none), Some(&off)).contains("the target is labelled"));
        assert!(hold("other", Ok(&none), None).contains("not in the agent's scope"));
        // Fail closed: labels that could not be read hold the rollback.
        let why = hold("pay", Err("forbidden"), None);
        assert!(
            why.contains("namespace pay cannot be read") && why.contains("forbidden"),
            "{why}"
        );
        assert_eq!(scope_hold(&Scope::all(), "any", Ok(&none), None), None);
    }
}
