//! Builders for the objects a payments resource owns, shared by the kinds:
//! labels and selectors, the Deployment and its pod template, the Service,
//! the config hash that rolls pods when configuration changes.
//!
//! Pure: values in, typed objects out.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, ResourceRequirements, Service},
    },
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::rollout::VERSION_LABEL;
use crate::crd::common::ImageRef;

/// Port the payments services serve their API on.
pub const HTTP_PORT: i32 = 8080;
/// Port of `/metrics`.
pub const METRICS_PORT: i32 = 9090;
/// Pod template annotation holding the hash of the rendered configuration;
/// a change of configuration changes it and so rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "payments.io/config-hash";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("rendering the {what} failed: {source}")]
    Render {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the resource has no uid yet, so owned objects cannot reference it")]
    MissingOwnerUid,
}

/// Who owns the objects: name, namespace, component label and owner reference.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `app.kubernetes.io/name`, e.g. `payment-gateway`.
    pub component: &'static str,
    pub name: String,
    pub namespace: String,
    pub owner: OwnerReference,
}

impl Identity {
    /// Labels that select this resource's pods. Never includes the version:
    /// a Deployment's selector is immutable.
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (
                "app.kubernetes.io/name".to_string(),
                self.component.to_string(),
            ),
            ("app.kubernetes.io/instance".to_string(), self.name.clone()),
        ])
    }

    /// Every label we put on owned objects and pods.
    pub fn labels(&self, version: &str) -> BTreeMap<String, String> {
        let mut l = self.selector();
        l.insert(VERSION_LABEL.to_string(), version.to_string());
        l.insert(
            "app.kubernetes.io/managed-by".to_string(),
            "autopilot".to_string(),
        );
        l.insert(
            "app.kubernetes.io/part-of".to_string(),
            "payments".to_string(),
        );
        l
    }

    /// `metadata` of an owned object named after its owner.
    pub fn metadata(&self, version: &str) -> Value {
        json!({
            "name": self.name,
            "namespace": self.namespace,
            "labels": self.labels(version),
            "ownerReferences": [self.owner],
        })
    }
}

pub fn typed<T: DeserializeOwned>(what: &'static str, v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|source| Error::Render { what, source })
}

/// Stable hash of configuration data (sorted keys), first 16 hex digits.
pub fn config_hash(data: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn config_map(
    id: &Identity,
    version: &str,
    data: &BTreeMap<String, String>,
) -> Result<ConfigMap, Error> {
    typed(
        "ConfigMap",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": id.metadata(version), "data": data}),
    )
}

/// The parts of a Deployment that differ between kinds.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    pub container: &'static str,
    /// Full image reference, `repository:version`.
    pub image: String,
    pub version: &'a str,
    /// `None` when an HPA owns the replica count and no live value is known.
    pub replicas: Option<i32>,
    pub config_hash: String,
    /// Extra container env entries (JSON `EnvVar`s).
    pub env: Vec<Value>,
    pub volumes: Vec<Value>,
    pub volume_mounts: Vec<Value>,
    pub resources: Option<&'a ResourceRequirements>,
    pub progress_deadline_seconds: i32,
}

pub fn deployment(id: &Identity, w: &Workload<'_>) -> Result<Deployment, Error> {
    let mut pod_labels = id.labels(w.version);
    pod_labels.remove("app.kubernetes.io/managed-by");
    let mut container = json!({
        "name": w.container,
        "image": w.image,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "envFrom": [{"configMapRef": {"name": id.name}}],
        "env": w.env,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "failureThreshold": 6},
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true},
    });
    if !w.volume_mounts.is_empty() {
        container["volumeMounts"] = json!(w.volume_mounts);
    }
    if let Some(r) = w.resources {
        container["resources"] = json!(r);
    }
    let mut spec = json!({
        "selector": {"matchLabels": id.selector()},
        "progressDeadlineSeconds": w.progress_deadline_seconds,
        "revisionHistoryLimit": 5,
        // New pods must be ready before old ones go: a payments service never
        // runs below its desired capacity during an upgrade.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    CONFIG_HASH_ANNOTATION: w.config_hash,
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": METRICS_PORT.to_string(),
                },
            },
            "spec": {
                "containers": [container],
                "volumes": w.volumes,
                "terminationGracePeriodSeconds": 30,
            },
        },
    });
    if let Some(r) = w.replicas {
        spec["replicas"] = json!(r);
    }
    typed(
        "Deployment",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": id.metadata(w.version), "spec": spec}),
    )
}

pub fn service(id: &Identity, version: &str) -> Result<Service, Error> {
    typed(
        "Service",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": id.metadata(version),
            "spec": {
                "type": "ClusterIP",
                "selector": id.selector(),
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                    {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
                ],
            },
        }),
    )
}

/// The image to run for `version` of a spec whose image and version are
/// `image` and `spec_version` (see [`ImageRef::for_version`]).
pub fn image_ref(image: &str, spec_version: &str, version: &str) -> String {
    ImageRef::parse(image).for_version(spec_version, version)
}

/// Refuses an image whose tag is not the spec's version (the admission rule
/// does too; this catches objects stored before it existed).
pub fn check_image(image: &str, version: &str) -> Result<(), super::Invalid> {
    let parsed = ImageRef::parse(image);
    if parsed.tag_agrees(version) {
        return Ok(());
    }
    Err(super::Invalid::new(
        "spec.image",
        format!(
            "tag {} is not spec.version {version}: drop the tag (the version is the tag) or change both together",
            parsed.tag.unwrap_or_default()
        ),
    ))
}

#[cfg(test)]
pub(crate) fn test_identity(component: &'static str, name: &str) -> Identity {
    Identity {
        component,
        name: name.into(),
        namespace: "payments".into(),
        owner: OwnerReference {
            api_version: "payments.io/v1".into(),
            kind: "Test".into(),
            name: name.into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_hash_is_stable_and_sensitive() {
        let a = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "2".to_string()),
        ]);
        let mut b = a.clone();
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_eq!(config_hash(&a).len(), 16);
        b.insert("B".into(), "3".into());
        assert_ne!(config_hash(&a), config_hash(&b));
        // Key/value boundaries matter: "A"="12" differs from "A1"="2".
        let c = BTreeMap::from([("A".to_string(), "12".to_string())]);
        let d = BTreeMap::from([("A1".to_string(), "2".to_string())]);
        assert_ne!(config_hash(&c), config_hash(&d));
    }

    #[test]
    fn deployment_selector_matches_pod_labels_and_service() {
        let id = test_identity("payment-gateway", "gw");
        let w = Workload {
            container: "gateway",
            image: image_ref("ghcr.io/payments/gateway", "2.4.1", "2.4.1"),
            version: "2.4.1",
            replicas: Some(3),
            config_hash: "abc".into(),
            env: vec![],
            volumes: vec![],
            volume_mounts: vec![],
            resources: None,
            progress_deadline_seconds: 600,
        };
        let d = deployment(&id, &w).expect("deployment");
        let spec = d.spec.expect("spec");
        let selector = spec.selector.match_labels.expect("match labels");
        let pod_labels = spec
            .template
            .metadata
            .expect("meta")
            .labels
            .expect("labels");
        for (k, v) in &selector {
            assert_eq!(pod_labels.get(k), Some(v), "pod label {k}");
        }
        assert!(
            !selector.contains_key(VERSION_LABEL),
            "selector must not carry the version"
        );
        assert_eq!(
            pod_labels.get(VERSION_LABEL).map(String::as_str),
            Some("2.4.1")
        );
        assert_eq!(spec.replicas, Some(3));
        let svc = service(&id, "2.4.1").expect("service");
        assert_eq!(
            svc.spec.expect("spec").selector.expect("selector"),
            selector
        );
        let c = &spec.template.spec.expect("pod").containers[0];
        assert_eq!(c.image.as_deref(), Some("ghcr.io/payments/gateway:2.4.1"));
        let ports: Vec<_> = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.name.clone())
            .collect();
        assert_eq!(ports, ["http", "metrics"]);
        // Probes point at the named port the Service targets.
        let probe_port = &c
            .readiness_probe
            .as_ref()
            .expect("probe")
            .http_get
            .as_ref()
            .expect("http")
            .port;
        assert_eq!(
            *probe_port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into())
        );
    }
}
