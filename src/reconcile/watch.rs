//! What the controllers watch, and what they remember of it.
//!
//! Owned objects are watched through a label selector ([`OWNED_SELECTOR`]),
//! so only objects we made are listed and cached, not every Deployment,
//! ConfigMap or Service of the cluster. The Deployments and HPAs are kept in
//! reflector stores ([`OwnedStores`]) that the reconcilers read instead of
//! sending GETs. A watch event that only echoes our own write (the object's
//! newest managed-fields entry is ours, see [`written_last_by_us`]) does not
//! wake the reconciler: it already knows what it wrote. Deletions and
//! (re)lists always wake it.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use futures::{Stream, StreamExt};
use k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Resource,
    runtime::{
        WatchStreamExt,
        reflector::{ObjectRef, Store, store::Writer},
        watcher,
    },
};
use serde::de::DeserializeOwned;

use crate::crd::FIELD_MANAGER;

/// Label every owned object carries (`objects::Identity::labels`), and the
/// selector of the owned-object watches.
pub const OWNED_SELECTOR: &str = "app.kubernetes.io/managed-by=autopilot";

/// The manager of the create that precedes an owned object's first apply
/// (`act::owned`): a write of ours too.
const CREATE_MANAGER: &str = "autopilot-create";

/// Whether the newest change recorded in `meta.managedFields` is ours (our
/// server-side apply or the create before it), so a watch event carrying
/// it only echoes a write the reconciler made. With `status_matters` false
/// (an HPA's status, say, which no reconciler reads), others' writes to the
/// status subresource do not count as changes. Entries are stamped to the
/// second: a tie with another manager is not ours (wake up rather than
/// miss a change). No entries: not ours.
pub fn written_last_by_us(meta: &ObjectMeta, status_matters: bool) -> bool {
    let mut ours = None;
    let mut others = None;
    for m in meta.managed_fields.iter().flatten() {
        if !status_matters && m.subresource.as_deref() == Some("status") {
            continue;
        }
        let slot = match m.manager.as_deref() {
            Some(FIELD_MANAGER | CREATE_MANAGER) => &mut ours,
            _ => &mut others,
        };
        let t = m.time.as_ref().map(|t| t.0);
        if slot.is_none_or(|s| t > s) {
            *slot = Some(t);
        }
    }
    match (ours, others) {
        (Some(_), None) => true,
        (Some(o), Some(x)) => o > x,
        (None, _) => false,
    }
}

/// Whether the newest change recorded in `meta.managedFields` is our write
/// to the status subresource: for a reconciled resource, the one write of
/// ours that only echoes. The executor's actions patch the resource's spec
/// under the same field manager (a rollback, new resources), and those
/// must wake its reconciler, or they would wait for the resync. Ties wake.
pub fn status_written_last_by_us(meta: &ObjectMeta) -> bool {
    let mut ours = None;
    let mut others = None;
    for m in meta.managed_fields.iter().flatten() {
        let our_status = matches!(m.manager.as_deref(), Some(FIELD_MANAGER))
            && m.subresource.as_deref() == Some("status");
        let slot = if our_status { &mut ours } else { &mut others };
        let t = m.time.as_ref().map(|t| t.0);
        if slot.is_none_or(|s| t > s) {
            *slot = Some(t);
        }
    }
    match (ours, others) {
        (Some(_), None) => true,
        (Some(o), Some(x)) => o > x,
        (None, _) => false,
    }
}

/// Which of our own writes a watch only echoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echoes {
    /// An owned object: any write of ours ([`written_last_by_us`]); with
    /// `status_matters` false, others' status writes are no change either.
    Owned { status_matters: bool },
    /// A reconciled resource: only our status writes
    /// ([`status_written_last_by_us`]).
    Status,
}

impl Echoes {
    fn echo(self, meta: &ObjectMeta) -> bool {
        match self {
            Echoes::Owned { status_matters } => written_last_by_us(meta, status_matters),
            Echoes::Status => status_written_last_by_us(meta),
        }
    }
}

/// The watch events of `api` as reconcile triggers: every object listed or
/// deleted, and every change that is not an echo of our own write
/// ([`Echoes`]). Each
/// event is first written to `store` (when given), with its managed fields
/// dropped (nothing reads them from the store, and they are a large part of
/// each object).
pub fn triggers<K>(
    api: Api<K>,
    cfg: watcher::Config,
    mut store: Option<Writer<K>>,
    strip: bool,
    echoes: Echoes,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, cfg)
        .default_backoff()
        .filter_map(move |event| {
            let out = match event {
                Err(e) => Some(Err(e)),
                Ok(mut event) => {
                    let wake = match &event {
                        watcher::Event::Apply(o) => !echoes.echo(o.meta()),
                        watcher::Event::Delete(_) | watcher::Event::InitApply(_) => true,
                        watcher::Event::Init | watcher::Event::InitDone => false,
                    };
                    if strip {
                        match &mut event {
                            watcher::Event::Apply(o)
                            | watcher::Event::Delete(o)
                            | watcher::Event::InitApply(o) => o.meta_mut().managed_fields = None,
                            watcher::Event::Init | watcher::Event::InitDone => {}
                        }
                    }
                    if let Some(w) = store.as_mut() {
                        w.apply_watcher_event(&event);
                    }
                    match event {
                        watcher::Event::Apply(o)
                        | watcher::Event::Delete(o)
                        | watcher::Event::InitApply(o)
                            if wake =>
                        {
                            Some(Ok(o))
                        }
                        _ => None,
                    }
                }
            };
            std::future::ready(out)
        })
}

/// One reflector store per watched scope (`None`: every namespace).
struct Scoped<K: Resource<DynamicType = ()> + Clone + 'static>(
    RwLock<HashMap<Option<String>, Store<K>>>,
);

impl<K> Default for Scoped<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn default() -> Self {
        Self(RwLock::new(HashMap::new()))
    }
}

impl<K> Scoped<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// A writer for `scope` if no controller keeps that store yet: the
    /// controllers of several kinds watch the same labelled objects, and one
    /// copy is enough.
    fn claim(&self, scope: &Option<String>) -> Option<Writer<K>> {
        let mut map = self.0.write().ok()?;
        if map.contains_key(scope) {
            return None;
        }
        let writer = Writer::default();
        map.insert(scope.clone(), writer.as_reader());
        Some(writer)
    }

    /// What the store of `namespace` holds under `name`: `Some(None)` when
    /// it is listed and has none, `None` when no store covering the namespace
    /// has been filled yet (ask the API server instead).
    fn get(&self, namespace: &str, name: &str) -> Option<Option<Arc<K>>> {
        let map = self.0.read().ok()?;
        let store = map
            .get(&Some(namespace.to_string()))
            .or_else(|| map.get(&None))?;
        futures::FutureExt::now_or_never(store.wait_until_ready())?.ok()?;
        Some(store.get(&ObjectRef::new(name).within(namespace)))
    }
}

/// The owned objects the reconcilers read from the watches' caches.
#[derive(Default)]
pub struct OwnedStores {
    deployments: Scoped<Deployment>,
    hpas: Scoped<HorizontalPodAutoscaler>,
}

impl OwnedStores {
    pub(super) fn claim_deployments(&self, scope: &Option<String>) -> Option<Writer<Deployment>> {
        self.deployments.claim(scope)
    }

    pub(super) fn claim_hpas(
        &self,
        scope: &Option<String>,
    ) -> Option<Writer<HorizontalPodAutoscaler>> {
        self.hpas.claim(scope)
    }

    /// The cached Deployment `namespace/name` (`Some(None)`: none), or
    /// `None` when no cache covers it yet.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Option<Arc<Deployment>>> {
        self.deployments.get(namespace, name)
    }

    /// The cached HPA `namespace/name`, as [`OwnedStores::deployment`].
    pub fn hpa(&self, namespace: &str, name: &str) -> Option<Option<Arc<HorizontalPodAutoscaler>>> {
        self.hpas.get(namespace, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time},
        jiff::Timestamp,
    };

    fn meta(entries: &[(&str, i64)]) -> ObjectMeta {
        ObjectMeta {
            managed_fields: Some(
                entries
                    .iter()
                    .map(|(m, t)| ManagedFieldsEntry {
                        // `manager/status`: a write to the status subresource.
                        manager: Some(m.trim_end_matches("/status").to_string()),
                        subresource: m.ends_with("/status").then(|| "status".to_string()),
                        time: Some(Time(Timestamp::from_second(*t).expect("time"))),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn others_status_writes_wake_only_where_status_matters() {
        let hpa = meta(&[("autopilot", 10), ("kube-controller-manager/status", 40)]);
        assert!(!written_last_by_us(&hpa, true));
        assert!(written_last_by_us(&hpa, false));
        // A spec change by someone else wakes either way.
        let edited = meta(&[("autopilot", 10), ("kubectl-edit", 40)]);
        assert!(!written_last_by_us(&edited, false));
    }

    #[test]
    fn only_our_newest_write_is_an_echo() {
        let written_last_by_us = |m: &ObjectMeta| written_last_by_us(m, true);
        assert!(written_last_by_us(&meta(&[("autopilot", 10)])));
        assert!(written_last_by_us(&meta(&[("autopilot-create", 10)])));
        assert!(written_last_by_us(&meta(&[
            ("kubectl", 9),
            ("autopilot", 10)
        ])));
        // Someone changed it after us: the controller-manager's status, a
        // user's edit, the HPA's scale.
        assert!(!written_last_by_us(&meta(&[
            ("autopilot", 10),
            ("kube-controller-manager", 11)
        ])));
        // Same second: cannot tell the order, so wake up.
        assert!(!written_last_by_us(&meta(&[
            ("autopilot", 10),
            ("kubectl-edit", 10)
        ])));
        assert!(!written_last_by_us(&meta(&[("kubectl", 10)])));
        assert!(!written_last_by_us(&ObjectMeta::default()));
    }

    #[test]
    fn on_a_reconciled_resource_only_our_status_write_is_an_echo() {
        let created = meta(&[("kubectl", 5), ("autopilot/status", 10)]);
        assert!(status_written_last_by_us(&created));
        // The executor rolled spec.version back (a merge patch under our
        // field manager): the reconciler must run.
        let acted = meta(&[("kubectl", 5), ("autopilot/status", 10), ("autopilot", 20)]);
        assert!(!status_written_last_by_us(&acted));
        assert!(written_last_by_us(&acted, true), "an owned object's echo");
        // Its status after the new rollout is an echo again.
        let rolled = meta(&[("kubectl", 5), ("autopilot/status", 30), ("autopilot", 20)]);
        assert!(status_written_last_by_us(&rolled));
        let tie = meta(&[("autopilot/status", 20), ("autopilot", 20)]);
        assert!(!status_written_last_by_us(&tie));
        assert!(!status_written_last_by_us(&ObjectMeta::default()));
    }
}
