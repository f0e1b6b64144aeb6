//! A fake kubelet for the integration tests and the sandbox: binds the pods of one namespace
//! to a fake Node and reports them Running and Ready, so that Deployments
//! really roll out, ReplicaSets really scale and Jobs really finish under the
//! real kube-controller-manager. There is no scheduler and no container
//! runtime; behaviour is chosen by the image tag:
//!
//! - a tag containing `broken`: Running but never Ready (a bad release);
//! - a pod with `restartPolicy: Never` (a Job's): Succeeded, or Failed when
//!   the tag contains `fail`;
//! - anything else: Running and Ready.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

pub const NODE: &str = "fake-node";

/// Stops watching when dropped.
pub struct FakeKubelet(tokio::task::JoinHandle<()>);

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers the fake Node and starts binding and running the pods of `namespace`.
pub async fn start(client: Client, namespace: &str) -> Result<FakeKubelet, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(
        json!({"metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}}),
    )
    .map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e),
    }
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    Ok(FakeKubelet(tokio::spawn(async move {
        let stream = watcher(pods.clone(), watcher::Config::default()).applied_objects();
        let mut stream = std::pin::pin!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(pod)) => {
                    if let Err(error) = handle(&pods, &pod).await {
                        tracing::warn!(pod = %pod.name_any(), %error, "fake kubelet");
                    }
                }
                Ok(None) => break,
                Err(error) => tracing::warn!(%error, "fake kubelet watch"),
            }
        }
    })))
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn handle(pods: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    if pod.metadata.deletion_timestamp.is_some() {
        // Containers "stop" at once: finish the deletion the kubelet would.
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
        {
            let dp = kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            match pods.delete(&pod.name_any(), &dp).await {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
    let name = pod.name_any();
    let spec = pod.spec.clone().unwrap_or_default();
    if spec.node_name.is_none() {
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
        });
        return match pods
            .create_subresource::<serde_json::Value, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        };
    }
    if pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p != "Pending")
    {
        return Ok(());
    }
    let containers = &spec.containers;
    let image = containers
        .first()
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let tag = image.rsplit(':').next().unwrap_or_default();
    let t = now();
    let batch = spec.restart_policy.as_deref() == Some("Never");
    let status = if batch {
        let ok = !tag.contains("fail");
        let statuses: Vec<_> = containers
            .iter()
            .map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": if ok {0} else {1}, "reason": if ok {"Completed"} else {"Error"}, "startedAt": t, "finishedAt": t}}}))
            .collect();
        json!({
            "phase": if ok { "Succeeded" } else { "Failed" },
            "hostIP": "10.0.0.1", "podIP": "10.244.0.10", "startTime": t,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": t},
            ],
            "containerStatuses": statuses,
        })
    } else {
        let ready = !tag.contains("broken");
        let r = if ready { "True" } else { "False" };
        let statuses: Vec<_> = containers
            .iter()
            .map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": ready, "started": true,
                 "restartCount": 0, "state": {"running": {"startedAt": t}}}))
            .collect();
        json!({
            "phase": "Running",
            "hostIP": "10.0.0.1", "podIP": "10.244.0.10", "startTime": t,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": r, "lastTransitionTime": t},
                {"type": "Ready", "status": r, "lastTransitionTime": t},
            ],
            "containerStatuses": statuses,
        })
    };
    pods.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .map(|_| ())
}
