//! Applying the objects a payments resource owns: server-side apply of each
//! desired object under our field manager, deletion of objects that should no
//! longer exist, and the applied result from which status is computed.
//!
//! Only objects that are ours are written: an object is ours when its
//! controller ownerReference is the resource (uid match). An object of the
//! same name that is someone else's (no controller, or another one) is never
//! applied over, patched or deleted: it comes back as a [`Conflict`], and
//! what depends on it is held back. Every write is pinned to what was
//! judged, so an object created or replaced between the read and the write
//! is not touched: a create cannot adopt, and an apply or a delete carries the
//! uid as a precondition. [`judge_ownership`] is the pure rule; the rest is
//! I/O.

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    batch::v1::{CronJob, Job},
    core::v1::{ConfigMap, Service},
    networking::v1::NetworkPolicy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions},
    core::NamespaceResourceScope,
    discovery::ApiResource,
};
use serde::{Serialize, de::DeserializeOwned};

use super::Error;
use crate::crd::FIELD_MANAGER;

/// The field manager of the create that precedes the first apply of an
/// owned object; its entry is dropped at once (`Target::hand_over`).
const CREATE_MANAGER: &str = "autopilot-create";

/// What should become of one owned object.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub enum Desired<T> {
    /// Server-side apply this object (create it, or take its fields back).
    Apply(T),
    /// Delete it if it exists: the spec no longer asks for it (for example
    /// an HPA after autoscaling was turned off).
    Absent,
    /// Not a kind this resource ever owns.
    #[default]
    Unmanaged,
}

/// Every object a payments resource may own. The executor destructures it
/// field by field, so a new kind of owned object does not compile until it
/// is handled here.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OwnedObjects {
    pub config_map: Desired<ConfigMap>,
    pub deployment: Desired<Deployment>,
    pub service: Desired<Service>,
    pub hpa: Desired<HorizontalPodAutoscaler>,
    pub network_policy: Desired<NetworkPolicy>,
    pub cron_job: Desired<CronJob>,
    /// A one-off Job (BatchProcessor "run now"). Never deleted by us: the
    /// CronJob history limits and owner references collect it.
    pub job: Desired<Job>,
    /// `monitoring.coreos.com/v1` ServiceMonitor, dynamic because the kind is
    /// not always served.
    pub service_monitor: Desired<DynamicObject>,
}

impl OwnedObjects {
    /// A digest of every desired object, the same for the same plan within
    /// this process (for `reconcile::watch::AppliedPlans`). Serialized
    /// whole, so a new kind of owned object is in it by derivation.
    pub fn digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_vec(self).unwrap_or_default().hash(&mut h);
        h.finish()
    }
}

/// The objects as the API server returned them after apply.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub deployment: Option<Deployment>,
    pub cron_job: Option<CronJob>,
    pub job: Option<Job>,
    /// How many objects were applied or deleted, for metrics.
    pub writes: usize,
    /// Objects of our names that are someone else's, left as they are.
    pub conflicts: Vec<Conflict>,
    /// Kinds not applied because they depend on a conflicting object (a
    /// Deployment wired to a ConfigMap that is not ours).
    pub held: Vec<String>,
}

/// Who holds the object that has the name of one we would own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// No such object: ours to create.
    Absent,
    /// Its controller ownerReference is our resource: ours to apply or
    /// delete. `uid` is the object's own, which every write is pinned to.
    Ours { uid: String },
    /// Someone else's: never applied over, patched or deleted.
    Foreign { owner: String },
}

/// Judges a live object (`None`: absent) against the uid of the resource
/// that would own it. Only a controller ownerReference with that uid makes
/// it ours; a non-controller reference to us, or a controller reference to
/// an earlier resource of the same name, does not.
pub fn judge_ownership(live: Option<&ObjectMeta>, owner_uid: &str) -> Ownership {
    let Some(meta) = live else {
        return Ownership::Absent;
    };
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    match controller {
        Some(r) if r.uid == owner_uid => Ownership::Ours {
            uid: meta.uid.clone().unwrap_or_default(),
        },
        Some(r) => Ownership::Foreign {
            owner: format!("controlled by {} {} (uid {})", r.kind, r.name, r.uid),
        },
        None => Ownership::Foreign {
            owner: "it has no controller ownerReference (created outside this resource)".into(),
        },
    }
}

/// An object of one of our names that is not ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub kind: String,
    pub name: String,
    /// Who holds it, as [`Ownership::Foreign`] says.
    pub owner: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} is not ours: {}", self.kind, self.name, self.owner)
    }
}

/// What became of one desired object.
enum Step<K> {
    /// Applied (the object as returned), deleted, or nothing to do.
    Done(Option<K>),
    /// Someone else's object has the name; nothing was written.
    Conflict,
    /// Not applied: something it depends on is not ours.
    Held,
}

impl<K> Step<K> {
    fn object(self) -> Option<K> {
        match self {
            Step::Done(o) => o,
            Step::Conflict | Step::Held => None,
        }
    }

    /// Whether the object is in place as we want it (or not wanted).
    fn in_place(&self) -> bool {
        matches!(self, Step::Done(_))
    }
}

pub fn service_monitor_resource() -> ApiResource {
    ApiResource {
        group: "monitoring.coreos.com".into(),
        version: "v1".into(),
        api_version: "monitoring.coreos.com/v1".into(),
        kind: "ServiceMonitor".into(),
        plural: "servicemonitors".into(),
    }
}

/// Applies (or deletes) every owned object of `name` in `namespace`, owned
/// by the resource whose uid is `owner_uid`. Objects are applied config
/// first, workload last, so that pods start with their configuration in
/// place; the Deployment is held back when its ConfigMap or NetworkPolicy is
/// someone else's (it would run on their configuration, or without its
/// egress limits), and the HPA when the Deployment is not ours.
pub async fn apply_owned(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
    owned: OwnedObjects,
) -> Result<Applied, Error> {
    let OwnedObjects {
        config_map,
        deployment,
        service,
        hpa,
        network_policy,
        cron_job,
        job,
        service_monitor,
    } = owned;
    let mut out = Applied::default();
    let to = Target {
        client,
        namespace,
        name,
        owner_uid,
    };
    // Each write boxed: the objects are large, and one state machine
    // holding every kind's would crowd a reconcile's stack.
    let cm = Box::pin(to.typed(config_map, true, &mut out)).await?;
    let np = Box::pin(to.typed(network_policy, true, &mut out)).await?;
    Box::pin(to.typed(service, true, &mut out)).await?;
    let deployment =
        Box::pin(to.typed(deployment, cm.in_place() && np.in_place(), &mut out)).await?;
    let deployment_ours = deployment.in_place();
    out.deployment = deployment.object();
    Box::pin(to.typed(hpa, deployment_ours, &mut out)).await?;
    out.cron_job = Box::pin(to.typed(cron_job, true, &mut out)).await?.object();
    out.job = Box::pin(to.typed(job, true, &mut out)).await?.object();
    let sm_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &service_monitor_resource());
    Box::pin(to.one(&sm_api, "ServiceMonitor", service_monitor, true, &mut out)).await?;
    Ok(out)
}

/// The resource whose objects are written, and where.
struct Target<'a> {
    client: &'a Client,
    namespace: &'a str,
    name: &'a str,
    owner_uid: &'a str,
}

impl Target<'_> {
    async fn typed<K>(
        &self,
        desired: Desired<K>,
        may_apply: bool,
        out: &mut Applied,
    ) -> Result<Step<K>, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let kind = K::kind(&());
        self.one(&api, &kind, desired, may_apply, out).await
    }

    /// One desired object: read what has its name, judge whose it is, and
    /// write only if it is ours (or absent), pinned to the uid judged.
    async fn one<K>(
        &self,
        api: &Api<K>,
        kind: &str,
        desired: Desired<K>,
        may_apply: bool,
        out: &mut Applied,
    ) -> Result<Step<K>, Error>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let name = match &desired {
            Desired::Unmanaged => return Ok(Step::Done(None)),
            // Owned objects are named after their owner, unless they say otherwise.
            Desired::Apply(obj) => obj.name_any(),
            Desired::Absent => self.name.to_string(),
        };
        if matches!(desired, Desired::Apply(_)) && !may_apply {
            out.held.push(kind.to_string());
            return Ok(Step::Held);
        }
        let live = api
            .get_opt(&name)
            .await
            .map_err(|source| Error::ReadObject {
                kind: kind.to_string(),
                namespace: self.namespace.to_string(),
                name: name.clone(),
                source,
            })?;
        let ownership = judge_ownership(live.as_ref().map(|o| o.meta()), self.owner_uid);
        match (desired, ownership) {
            (Desired::Unmanaged, _) | (Desired::Absent, Ownership::Absent) => Ok(Step::Done(None)),
            (Desired::Apply(_), Ownership::Foreign { owner }) => {
                out.conflicts.push(Conflict {
                    kind: kind.to_string(),
                    name,
                    owner,
                });
                Ok(Step::Conflict)
            }
            // Not wanted and not ours: someone else's object of our name
            // (an HPA a user made for their own Deployment) stays.
            (Desired::Absent, Ownership::Foreign { owner }) => {
                tracing::debug!(%kind, %name, %owner, "not deleting an object that is not ours");
                Ok(Step::Done(None))
            }
            (Desired::Apply(obj), Ownership::Absent) => {
                crate::act::fence::check()?;
                out.writes += 1;
                self.create(api, kind, &name, obj)
                    .await
                    .map(|o| Step::Done(Some(o)))
            }
            (Desired::Apply(mut obj), Ownership::Ours { uid }) => {
                // A uid in the body is a precondition: applied to an object
                // replaced since the read, the server answers 409 instead
                // of taking the new one over.
                obj.meta_mut().uid = Some(uid);
                crate::act::fence::check()?;
                out.writes += 1;
                let params = PatchParams::apply(FIELD_MANAGER).force();
                let applied = api
                    .patch(&name, &params, &Patch::Apply(&obj))
                    .await
                    .map_err(|source| self.apply_error(kind, &name, source))?;
                // A create whose hand-over was interrupted is finished here.
                self.hand_over(api, kind, &name, applied)
                    .await
                    .map(|o| Step::Done(Some(o)))
            }
            (Desired::Absent, Ownership::Ours { uid }) => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                crate::act::fence::check()?;
                match api.delete(&name, &params).await {
                    Ok(_) => {
                        out.writes += 1;
                        Ok(Step::Done(None))
                    }
                    // Gone, or replaced since the read (the precondition
                    // failed): either way nothing of ours is left to delete.
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                        Ok(Step::Done(None))
                    }
                    Err(source) => Err(Error::DeleteObject {
                        kind: kind.to_string(),
                        namespace: self.namespace.to_string(),
                        name,
                        source,
                    }),
                }
            }
        }
    }

    /// Creates an object whose name is free. A create never adopts: if an
    /// object of the name appeared since the read, the server refuses it
    /// (409, retried by the next reconcile, which finds it foreign). An
    /// apply cannot create safely: with a uid precondition it is refused on
    /// an absent name, and without one it would adopt a newcomer. The object
    /// is then handed to server-side apply, pinned to its uid, as if the
    /// apply had created it (see [`Target::hand_over`]).
    async fn create<K>(&self, api: &Api<K>, kind: &str, name: &str, obj: K) -> Result<K, Error>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let post = PostParams {
            dry_run: false,
            field_manager: Some(CREATE_MANAGER.to_string()),
        };
        let created = api
            .create(&post, &obj)
            .await
            .map_err(|source| self.apply_error(kind, name, source))?;
        let mut obj = obj;
        obj.meta_mut().uid = created.meta().uid.clone();
        let applied = api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .map_err(|source| self.apply_error(kind, name, source))?;
        self.hand_over(api, kind, name, applied).await
    }

    /// Drops the create's entry from the object's managed fields, leaving
    /// our apply the only owner of what it set: a field the create recorded
    /// would otherwise stay owned by it, and never be removed when the plan
    /// stops setting it. Pinned to the uid and resourceVersion just applied.
    async fn hand_over<K>(&self, api: &Api<K>, kind: &str, name: &str, obj: K) -> Result<K, Error>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let meta = obj.meta();
        let entries = meta.managed_fields.clone().unwrap_or_default();
        if !entries
            .iter()
            .any(|m| m.manager.as_deref() == Some(CREATE_MANAGER))
        {
            return Ok(obj);
        }
        let kept: Vec<_> = entries
            .into_iter()
            .filter(|m| m.manager.as_deref() != Some(CREATE_MANAGER))
            .collect();
        let patch = serde_json::json!({"metadata": {
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
            "managedFields": kept,
        }});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| self.apply_error(kind, name, source))
    }

    fn apply_error(&self, kind: &str, name: &str, source: kube::Error) -> Error {
        Error::ApplyObject {
            kind: kind.to_string(),
            namespace: self.namespace.to_string(),
            name: name.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn meta(uid: &str, owners: &[(&str, &str, bool)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("victim".into()),
            uid: Some(uid.into()),
            owner_references: Some(
                owners
                    .iter()
                    .map(|(name, owner_uid, controller)| OwnerReference {
                        api_version: "payments.io/v1".into(),
                        kind: "PaymentGateway".into(),
                        name: (*name).into(),
                        uid: (*owner_uid).into(),
                        controller: Some(*controller),
                        block_owner_deletion: None,
                    })
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_a_controller_reference_to_this_resource_makes_an_object_ours() {
        let ours = "gw-uid";
        assert_eq!(judge_ownership(None, ours), Ownership::Absent);
        assert_eq!(
            judge_ownership(Some(&meta("cm-uid", &[("victim", ours, true)])), ours),
            Ownership::Ours {
                uid: "cm-uid".into()
            }
        );
        // A user's object: no owner at all.
        let Ownership::Foreign { owner } = judge_ownership(Some(&meta("cm-uid", &[])), ours) else {
            panic!("a user's object is not ours")
        };
        assert!(owner.contains("no controller ownerReference"), "{owner}");
        // We are an owner, but not its controller: still not ours to write.
        assert!(matches!(
            judge_ownership(Some(&meta("cm-uid", &[("victim", ours, false)])), ours),
            Ownership::Foreign { .. }
        ));
        // Controlled by an earlier resource of the same name (deleted, not
        // yet collected), or by another one: named in the report.
        let Ownership::Foreign { owner } =
            judge_ownership(Some(&meta("cm-uid", &[("victim", "old-uid", true)])), ours)
        else {
            panic!("another controller's object is not ours")
        };
        assert_eq!(owner, "controlled by PaymentGateway victim (uid old-uid)");
    }

    #[test]
    fn a_conflict_names_the_object_and_who_holds_it() {
        let c = Conflict {
            kind: "ConfigMap".into(),
            name: "autopilot-rules".into(),
            owner: "it has no controller ownerReference (created outside this resource)".into(),
        };
        assert_eq!(
            c.to_string(),
            "ConfigMap autopilot-rules is not ours: it has no controller ownerReference (created outside this resource)"
        );
    }

    #[test]
    fn the_digest_follows_every_desired_object() {
        let cm = |v: &str| {
            Desired::Apply(ConfigMap {
                metadata: ObjectMeta {
                    name: Some("gw".into()),
                    ..Default::default()
                },
                data: Some([("k".to_string(), v.to_string())].into()),
                ..Default::default()
            })
        };
        let a = OwnedObjects {
            config_map: cm("1"),
            hpa: Desired::Absent,
            ..Default::default()
        };
        assert_eq!(a.digest(), a.clone().digest());
        let changed = OwnedObjects {
            config_map: cm("2"),
            ..a.clone()
        };
        assert_ne!(a.digest(), changed.digest());
        // Absent (delete it) is not unmanaged (leave it).
        let unmanaged = OwnedObjects {
            hpa: Desired::Unmanaged,
            ..a.clone()
        };
        assert_ne!(a.digest(), unmanaged.digest());
    }
}
