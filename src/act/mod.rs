//! The only place that changes the cluster. Everything that writes — applied
//! objects, status patches, the autopilot's actions — goes through here, under
//! the single field manager [`crate::crd::FIELD_MANAGER`].
//!
//! Must not decide anything: callers pass finished intents. The pure parts
//! (`action`: intent → patch and inverse; `guard`: verdicts; `verify`) take
//! values and return values; `executor` is the one place that writes.

pub mod action;
pub mod executor;
pub mod fence;
pub mod guard;
pub mod journal;
pub mod verify;

mod owned;

pub use owned::{
    Applied, Conflict, Desired, OwnedObjects, Ownership, apply_owned, judge_ownership,
    service_monitor_resource,
};

use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
    discovery::{ApiCapabilities, ApiResource, Scope},
};

use crate::crd::FIELD_MANAGER;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("manifest {name} has no {field}")]
    InvalidManifest { name: String, field: &'static str },
    #[error("the API server does not serve {gvk}")]
    ResolveKind {
        gvk: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {namespace}/{name} failed")]
    DeleteObject {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("patching the status of {kind} {namespace}/{name} failed")]
    PatchStatus {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading {kind} {namespace}/{name} failed")]
    ReadObject {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {namespace}/{name} failed")]
    ApplyObject {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("not written")]
    Fenced(#[from] fence::Fenced),
}

impl Error {
    /// Fixed category for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidManifest { .. } => "invalid_manifest",
            Error::ResolveKind { .. } => "resolve_kind",
            Error::ReadObject { .. } => "read_object",
            Error::ApplyObject { .. } => "apply_object",
            Error::DeleteObject { .. } => "delete_object",
            Error::PatchStatus { .. } => "patch_status",
            Error::Fenced(_) => "fenced",
        }
    }
}

/// Server-side applies one manifest of any kind (CRDs, examples, owned
/// objects), forcing ownership of the fields it sets. `default_namespace` is
/// used for a namespaced object that does not name one.
pub async fn apply_manifest(
    client: &Client,
    manifest: &DynamicObject,
    default_namespace: &str,
) -> Result<DynamicObject, Error> {
    let name = manifest.name_any();
    let types = manifest
        .types
        .as_ref()
        .ok_or_else(|| Error::InvalidManifest {
            name: name.clone(),
            field: "apiVersion/kind",
        })?;
    let gvk = GroupVersionKind::try_from(types).map_err(|_| Error::InvalidManifest {
        name: name.clone(),
        field: "a valid apiVersion",
    })?;
    let (resource, caps): (ApiResource, ApiCapabilities) =
        kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| Error::ResolveKind {
                gvk: format!("{}/{} {}", gvk.group, gvk.version, gvk.kind),
                source,
            })?;
    let namespace = manifest
        .namespace()
        .unwrap_or_else(|| default_namespace.to_string());
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), &namespace, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(manifest))
        .await
        .map_err(|source| Error::ApplyObject {
            kind: gvk.kind.clone(),
            namespace,
            name,
            source,
        })
}

/// How long a freshly applied CRD may take to become Established.
const ESTABLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("applying CustomResourceDefinition {name} failed")]
    Apply {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "CustomResourceDefinition {name} was not Established within {ESTABLISH_TIMEOUT:?}: {detail}"
    )]
    NotEstablished { name: String, detail: String },
}

/// Applies CRDs and waits until the API server serves each of them
/// (`Established=True`), reporting `NamesAccepted=False` and similar reasons.
pub async fn apply_crds(
    client: &Client,
    crds: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition],
) -> Result<(), CrdError> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.name_any();
        // Applying a typed object needs apiVersion/kind in the body.
        let mut body = serde_json::to_value(crd).unwrap_or_default();
        body["apiVersion"] = "apiextensions.k8s.io/v1".into();
        body["kind"] = "CustomResourceDefinition".into();
        api.patch(&name, &params, &Patch::Apply(&body))
            .await
            .map_err(|source| CrdError::Apply {
                name: name.clone(),
                source,
            })?;
    }
    let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
    for crd in crds {
        let name = crd.name_any();
        loop {
            let detail = match api.get_opt(&name).await {
                Ok(Some(current)) => {
                    let conditions = current
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default();
                    if conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                    {
                        break;
                    }
                    conditions
                        .iter()
                        .filter(|c| c.status != "True")
                        .map(|c| {
                            format!(
                                "{}={} ({})",
                                c.type_,
                                c.status,
                                c.message.clone().unwrap_or_default()
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                }
                Ok(None) => "not found after apply".into(),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(CrdError::NotEstablished { name, detail });
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Patches the status subresource of one of our resources with server-side
/// apply, owning exactly the status fields we compute.
pub async fn apply_status<K>(
    client: &Client,
    obj: &K,
    status: serde_json::Value,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    fence::check()?;
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::PatchStatus {
        kind: K::kind(&()).to_string(),
        namespace,
        name,
        source,
    })
}

/// Publishes a Kubernetes Event on `obj`. Failures are logged, not returned:
/// an Event is a record of a change, never a reason to undo or retry it.
pub async fn publish_event<K>(
    recorder: &kube::runtime::events::Recorder,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
) where
    K: kube::Resource<DynamicType = ()>,
{
    use kube::runtime::events::{Event, EventType};
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    publish_event_on(recorder, &obj.object_ref(&()), event).await;
}

/// The API server's limit on an Event's note, in bytes.
const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// Publishes `event` regarding any object, typed or read as JSON: the one
/// way Events are made (reconcilers through [`publish_event`], the
/// executor directly). A note over the API server's limit is cut at a
/// character boundary rather than rejected. Best effort, like
/// [`publish_event`].
pub async fn publish_event_on(
    recorder: &kube::runtime::events::Recorder,
    regarding: &k8s_openapi::api::core::v1::ObjectReference,
    mut event: kube::runtime::events::Event,
) {
    if let Some(note) = &mut event.note {
        let mut end = note.len().min(EVENT_NOTE_MAX_BYTES);
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    if let Err(e) = recorder.publish(&event, regarding).await {
        tracing::warn!(error = %e, reason = %event.reason, "publishing an Event failed");
    }
}

/// The user name the API server knows `client` by (a SelfSubjectReview):
/// the approver the CLI records, and the agent's own name, whose approvals
/// it refuses.
pub async fn whoami(client: &Client) -> Result<String, kube::Error> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&Default::default(), &SelfSubjectReview::default())
        .await?;
    Ok(review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default())
}
