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
    apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta},
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
    newest_is(meta, |m| {
        (status_matters || !is_status(m)).then(|| is_ours(m))
    })
}

fn is_ours(m: &ManagedFieldsEntry) -> bool {
    matches!(m.manager.as_deref(), Some(FIELD_MANAGER | CREATE_MANAGER))
}

fn is_status(m: &ManagedFieldsEntry) -> bool {
    m.subresource.as_deref() == Some("status")
}

/// Whether the newest managed-fields entry that `class` sorts (`None`:
/// leave it out) is one it calls `true`, strictly newer than every entry it
/// calls `false`. Entries are stamped to the second, so a tie is `false`;
/// so is no `true` entry at all.
fn newest_is(meta: &ObjectMeta, class: impl Fn(&ManagedFieldsEntry) -> Option<bool>) -> bool {
    let mut yes = None;
    let mut no = None;
    for m in meta.managed_fields.iter().flatten() {
        let slot = match class(m) {
            Some(true) => &mut yes,
            Some(false) => &mut no,
            None => continue,
        };
        let t = m.time.as_ref().map(|t| t.0);
        if slot.is_none_or(|s| t > s) {
            *slot = Some(t);
        }
    }
    match (yes, no) {
        (Some(_), None) => true,
        (Some(y), Some(n)) => y > n,
        (None, _) => false,
    }
}

/// Whether the newest change recorded in `meta.managedFields` is our write
/// to the status subresource: for a reconciled resource, the one write of
/// ours that only echoes. The executor's actions patch the resource's spec
/// under the same field manager (a rollback, new resources), and those
/// must wake its reconciler, or they would wait for the resync. Ties wake.
pub fn status_written_last_by_us(meta: &ObjectMeta) -> bool {
    newest_is(meta, |m| {
        Some(m.manager.as_deref() == Some(FIELD_MANAGER) && is_status(m))
    })
}

/// Whether the newest change recorded in `meta.managedFields` is someone
/// else's write to the status subresource (a Deployment's rollout progress,
/// written by kube-controller-manager): the object's spec is as it was, so
/// a plan already applied to it needs no new apply ([`AppliedPlans`]). Ties
/// with any other write are not status-only; no entries are not either.
pub fn others_status_write_last(meta: &ObjectMeta) -> bool {
    newest_is(meta, |m| Some(!is_ours(m) && is_status(m)))
}

/// The plans a reconciler has applied in full and the time, per owner, so
/// that a reconcile woken only by someone else's status write to an owned
/// object (each step of a Deployment's rollout) can read that status from
/// the store instead of applying the same objects again: without it a new
/// gateway cost about 16 more requests on its way to Ready than the plain
/// writes did (BENCHMARKS.md). A plan is forgotten when any other change to
/// one of the owner's objects is seen (a user's edit, an HPA's scale, a
/// delete, a relist), when it differs (a digest of every desired object),
/// and after `max_age` (the resync, which repairs drift no watch reports,
/// such as a ServiceMonitor's).
#[derive(Default)]
pub struct AppliedPlans(std::sync::Mutex<Plans>);

#[derive(Default)]
struct Plans {
    by_owner: HashMap<PlanKey, Plan>,
    /// Bumped by every forget: a plan is remembered only if its owner was
    /// not forgotten while it was being applied.
    epoch: u64,
    remembered: u64,
}

impl Plans {
    /// The owner's entry, made if new, touched at `now`.
    fn touch(&mut self, key: PlanKey, now: std::time::Instant) -> &mut Plan {
        let entry = self.by_owner.entry(key).or_insert(Plan {
            applied: None,
            epoch: 0,
            touched: now,
        });
        entry.touched = now;
        entry
    }
}

/// Owner kind, namespace and name.
type PlanKey = (String, String, String);

struct Plan {
    /// The digest applied in full, and when.
    applied: Option<(u64, std::time::Instant)>,
    /// The epoch of the owner's last forget.
    epoch: u64,
    touched: std::time::Instant,
}

/// Entries untouched this long are dropped (owners deleted long ago).
const PLAN_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

impl AppliedPlans {
    fn key(kind: &str, namespace: &str, name: &str) -> PlanKey {
        (kind.into(), namespace.into(), name.into())
    }

    /// Taken before an apply, given back to [`AppliedPlans::remember`].
    pub fn begin(&self, kind: &str, namespace: &str, name: &str) -> u64 {
        let Ok(p) = self.0.lock() else {
            return u64::MAX;
        };
        p.by_owner
            .get(&Self::key(kind, namespace, name))
            .map_or(0, |e| e.epoch)
    }

    /// Remembers `digest` as applied in full, unless the owner was
    /// forgotten since [`AppliedPlans::begin`] returned `epoch` (a change
    /// seen while the apply was under way).
    pub fn remember(&self, kind: &str, namespace: &str, name: &str, epoch: u64, digest: u64) {
        let Ok(mut p) = self.0.lock() else { return };
        let now = std::time::Instant::now();
        let entry = p.touch(Self::key(kind, namespace, name), now);
        if entry.epoch == epoch {
            entry.applied = Some((digest, now));
        }
        p.remembered += 1;
        if p.remembered % 1024 == 0 {
            p.by_owner.retain(|_, e| e.touched.elapsed() < PLAN_IDLE);
        }
    }

    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        let Ok(mut p) = self.0.lock() else { return };
        p.epoch += 1;
        let epoch = p.epoch;
        let entry = p.touch(Self::key(kind, namespace, name), std::time::Instant::now());
        entry.applied = None;
        entry.epoch = epoch;
    }

    /// Whether `digest` is the plan last applied in full to this owner,
    /// less than `max_age` ago, with nothing but status written since.
    pub fn unchanged(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        digest: u64,
        max_age: std::time::Duration,
    ) -> bool {
        let Ok(p) = self.0.lock() else { return false };
        p.by_owner
            .get(&Self::key(kind, namespace, name))
            .and_then(|e| e.applied)
            .is_some_and(|(d, at)| d == digest && at.elapsed() < max_age)
    }

    /// Forgets the plan of the controller owner of `meta`, an owned object.
    fn forget_owner(&self, meta: &ObjectMeta) {
        let Some(owner) = meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
        else {
            return;
        };
        self.forget(
            &owner.kind,
            meta.namespace.as_deref().unwrap_or_default(),
            &owner.name,
        );
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

/// The annotation `kubectl apply` keeps a copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reader of a watched copy needs and what makes up much of
/// each object: its managed fields (read only by the echo check, before the
/// copy is kept) and `kubectl apply`'s copy of the object in an annotation.
/// At 5,000 PaymentGateways these were copies of every gateway's spec and
/// status held in the controller's and the loop's stores.
pub fn slim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// The watch events of `api` as reconcile triggers: every object listed or
/// deleted, and every change that is not an echo of our own write
/// ([`Echoes`]). Each
/// event is first written to `store` (when given), with `strip` [`slim`]med.
pub fn triggers<K>(
    api: Api<K>,
    cfg: watcher::Config,
    mut store: Option<Writer<K>>,
    strip: bool,
    echoes: Echoes,
    plans: Option<Arc<AppliedPlans>>,
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
                    if let Some(plans) = plans.as_ref() {
                        match &event {
                            watcher::Event::Apply(o)
                                if wake && !others_status_write_last(o.meta()) =>
                            {
                                plans.forget_owner(o.meta())
                            }
                            // Gone or relisted: whatever was applied, look again.
                            watcher::Event::Delete(o) | watcher::Event::InitApply(o) => {
                                plans.forget_owner(o.meta())
                            }
                            _ => {}
                        }
                    }
                    if strip {
                        match &mut event {
                            watcher::Event::Apply(o)
                            | watcher::Event::Delete(o)
                            | watcher::Event::InitApply(o) => slim(o.meta_mut()),
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
    fn slim_drops_managed_fields_and_kubectls_copy_and_keeps_other_annotations() {
        let mut m = meta(&[("autopilot", 10)]);
        m.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{\"spec\":{}}".to_string()),
                ("payments.io/owner".to_string(), "team-a".to_string()),
            ]
            .into(),
        );
        slim(&mut m);
        assert_eq!(m.managed_fields, None);
        assert_eq!(
            m.annotations,
            Some([("payments.io/owner".to_string(), "team-a".to_string())].into())
        );
        // Nothing to drop is no error.
        let mut bare = ObjectMeta::default();
        slim(&mut bare);
        assert_eq!(bare, ObjectMeta::default());
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

    #[test]
    fn only_anothers_newest_status_write_leaves_an_applied_plan_standing() {
        // The rollout's progress, after our apply.
        let progress = meta(&[("autopilot", 10), ("kube-controller-manager/status", 12)]);
        assert!(others_status_write_last(&progress));
        // In the same second as the apply: it might hide a change.
        let tie = meta(&[("autopilot", 10), ("kube-controller-manager/status", 10)]);
        assert!(!others_status_write_last(&tie));
        // An HPA's scale (a subresource, but not status) or a user's edit.
        let scaled = meta(&[
            ("autopilot", 10),
            ("kube-controller-manager/status", 12),
            ("kube-controller-manager", 15),
        ]);
        assert!(!others_status_write_last(&scaled));
        let edited = meta(&[("autopilot", 10), ("kubectl-edit", 20)]);
        assert!(!others_status_write_last(&edited));
        // Our own status write is no one else's.
        let ours = meta(&[("autopilot", 10), ("autopilot/status", 12)]);
        assert!(!others_status_write_last(&ours));
        assert!(!others_status_write_last(&ObjectMeta::default()));
    }

    #[test]
    fn a_plan_stands_until_forgotten_changed_or_old() {
        let day = std::time::Duration::from_secs(86_400);
        let plans = AppliedPlans::default();
        assert!(!plans.unchanged("PaymentGateway", "ns", "gw", 7, day));
        let epoch = plans.begin("PaymentGateway", "ns", "gw");
        plans.remember("PaymentGateway", "ns", "gw", epoch, 7);
        assert!(plans.unchanged("PaymentGateway", "ns", "gw", 7, day));
        // Another plan, another owner, an age past the limit.
        assert!(!plans.unchanged("PaymentGateway", "ns", "gw", 8, day));
        assert!(!plans.unchanged("PaymentGateway", "ns", "other", 7, day));
        assert!(!plans.unchanged("BatchProcessor", "ns", "gw", 7, day));
        assert!(!plans.unchanged("PaymentGateway", "ns", "gw", 7, std::time::Duration::ZERO));
        // A change to one of its objects, seen by the owned watch.
        let mut owned = meta(&[("kubectl-edit", 20)]);
        owned.namespace = Some("ns".into());
        owned.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                kind: "PaymentGateway".into(),
                name: "gw".into(),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        plans.forget_owner(&owned);
        assert!(!plans.unchanged("PaymentGateway", "ns", "gw", 7, day));
        // A change seen while an apply was under way: that apply is not
        // remembered, the next one is.
        let epoch = plans.begin("PaymentGateway", "ns", "gw");
        plans.forget("PaymentGateway", "ns", "gw");
        plans.remember("PaymentGateway", "ns", "gw", epoch, 7);
        assert!(!plans.unchanged("PaymentGateway", "ns", "gw", 7, day));
        let epoch = plans.begin("PaymentGateway", "ns", "gw");
        plans.remember("PaymentGateway", "ns", "gw", epoch, 7);
        assert!(plans.unchanged("PaymentGateway", "ns", "gw", 7, day));
    }
}
