//! Applying the objects a payments resource owns: server-side apply of each
//! desired object under our field manager, deletion of objects that should no
//! longer exist, and the applied result from which status is computed.

use k8s_openapi::api::{
    apps::v1::Deployment,
    autoscaling::v2::HorizontalPodAutoscaler,
    batch::v1::{CronJob, Job},
    core::v1::{ConfigMap, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams},
    core::NamespaceResourceScope,
    discovery::ApiResource,
};
use serde::{Serialize, de::DeserializeOwned};

use super::Error;
use crate::crd::FIELD_MANAGER;

/// What should become of one owned object.
#[derive(Clone, Debug, Default, PartialEq)]
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
#[derive(Clone, Debug, Default)]
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

/// The objects as the API server returned them after apply.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub deployment: Option<Deployment>,
    pub cron_job: Option<CronJob>,
    pub job: Option<Job>,
    /// How many objects were applied or deleted, for metrics.
    pub writes: usize,
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

/// Applies (or deletes) every owned object of `name` in `namespace`. Objects
/// are applied config first, workload last, so that pods start with their
/// configuration in place.
pub async fn apply_owned(
    client: &Client,
    namespace: &str,
    name: &str,
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
    let mut applied = Applied::default();
    let w = &mut applied.writes;
    apply_typed(client, namespace, name, config_map, w).await?;
    apply_typed(client, namespace, name, network_policy, w).await?;
    apply_typed(client, namespace, name, service, w).await?;
    applied.deployment = apply_typed(client, namespace, name, deployment, w).await?;
    apply_typed(client, namespace, name, hpa, w).await?;
    applied.cron_job = apply_typed(client, namespace, name, cron_job, w).await?;
    applied.job = apply_typed(client, namespace, name, job, w).await?;
    let sm_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &service_monitor_resource());
    apply_one(
        &sm_api,
        "ServiceMonitor",
        namespace,
        name,
        service_monitor,
        w,
    )
    .await?;
    Ok(applied)
}

async fn apply_typed<K>(
    client: &Client,
    namespace: &str,
    owner: &str,
    desired: Desired<K>,
    writes: &mut usize,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    apply_one(&api, &K::kind(&()), namespace, owner, desired, writes).await
}

async fn apply_one<K>(
    api: &Api<K>,
    kind: &str,
    namespace: &str,
    owner: &str,
    desired: Desired<K>,
    writes: &mut usize,
) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match desired {
        Desired::Unmanaged => Ok(None),
        Desired::Apply(obj) => {
            let name = obj.name_any();
            *writes += 1;
            let params = PatchParams::apply(FIELD_MANAGER).force();
            api.patch(&name, &params, &Patch::Apply(&obj))
                .await
                .map(Some)
                .map_err(|source| Error::ApplyObject {
                    kind: kind.to_string(),
                    namespace: namespace.to_string(),
                    name,
                    source,
                })
        }
        Desired::Absent => {
            // Owned objects are named after their owner.
            match api.delete(owner, &DeleteParams::background()).await {
                Ok(_) => {
                    *writes += 1;
                    Ok(None)
                }
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(source) => Err(Error::DeleteObject {
                    kind: kind.to_string(),
                    namespace: namespace.to_string(),
                    name: owner.to_string(),
                    source,
                }),
            }
        }
    }
}
