//! SagaOrchestrator → ConfigMap (validated saga definitions as JSON, plus the
//! database and messaging settings), Deployment, Service.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;

use super::{
    Facts, Invalid, WorkloadKind,
    objects::{self, Identity, Workload},
};
use crate::{
    act::{Desired, OwnedObjects},
    crd::{SagaOrchestrator, SagaOrchestratorSpec, WorkloadStatus, common::UpgradePolicy},
};

pub const COMPONENT: &str = "saga-orchestrator";
/// ConfigMap key holding the saga definitions.
pub const SAGAS_KEY: &str = "sagas.json";

#[derive(Debug)]
pub struct Validated<'a>(&'a SagaOrchestratorSpec);

/// Names unique, every step compensable or final, and nothing compensable
/// after a final step (its failure could not be undone past the final one).
pub fn validate(spec: &SagaOrchestratorSpec) -> Result<Validated<'_>, Invalid> {
    objects::check_image(&spec.image, &spec.version)?;
    let mut sagas = HashSet::new();
    for (i, saga) in spec.sagas.iter().enumerate() {
        if !sagas.insert(saga.name.as_str()) {
            return Err(Invalid::new(
                format!("spec.sagas[{i}].name"),
                format!("saga {:?} is defined twice", saga.name),
            ));
        }
        let mut steps = HashSet::new();
        let mut final_seen: Option<&str> = None;
        for (j, step) in saga.steps.iter().enumerate() {
            let field = format!("spec.sagas[{i}].steps[{j}]");
            if !steps.insert(step.name.as_str()) {
                return Err(Invalid::new(
                    format!("{field}.name"),
                    format!("step {:?} appears twice in saga {:?}", step.name, saga.name),
                ));
            }
            if step.compensation.is_none() && !step.r#final {
                return Err(Invalid::new(
                    field,
                    format!(
                        "step {:?} has no compensation and is not marked final",
                        step.name
                    ),
                ));
            }
            if let Some(f) = final_seen
                && !step.r#final
            {
                return Err(Invalid::new(
                    field,
                    format!(
                        "step {:?} follows the final step {f:?}; a failure there could not be compensated",
                        step.name
                    ),
                ));
            }
            if step.r#final {
                final_seen = Some(&step.name);
            }
        }
    }
    Ok(Validated(spec))
}

pub fn config_data(v: &Validated<'_>) -> BTreeMap<String, String> {
    let s = v.0;
    BTreeMap::from([
        (
            "DATABASE_HOST".to_string(),
            format!("{}-rw", s.database.cluster_name),
        ),
        ("DATABASE_PORT".to_string(), "5432".to_string()),
        (
            "DATABASE_NAME".to_string(),
            s.database.database.clone().unwrap_or_else(|| "app".into()),
        ),
        (
            "SERVICEBUS_NAMESPACE".to_string(),
            s.messaging.service_bus_namespace.clone(),
        ),
        (
            "SERVICEBUS_ENDPOINT".to_string(),
            format!(
                "sb://{}.servicebus.windows.net/",
                s.messaging.service_bus_namespace
            ),
        ),
        ("SAGAS_FILE".to_string(), format!("/etc/sagas/{SAGAS_KEY}")),
        (
            SAGAS_KEY.to_string(),
            serde_json::to_string_pretty(&s.sagas).unwrap_or_default(),
        ),
    ])
}

pub fn plan(
    id: &Identity,
    v: &Validated<'_>,
    target_version: &str,
) -> Result<OwnedObjects, objects::Error> {
    let spec = v.0;
    let data = config_data(v);
    let secret = format!("{}-app", spec.database.cluster_name);
    let workload = Workload {
        container: "orchestrator",
        image: objects::image_ref(&spec.image, &spec.version, target_version),
        version: target_version,
        replicas: Some(spec.replicas),
        config_hash: objects::config_hash(&data),
        env: vec![
            json!({"name": "DATABASE_USER", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username", "optional": true}}}),
            json!({"name": "DATABASE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password", "optional": true}}}),
        ],
        volumes: vec![
            json!({"name": "sagas", "configMap": {"name": id.name, "items": [{"key": SAGAS_KEY, "path": SAGAS_KEY}]}}),
            json!({"name": "tmp", "emptyDir": {}}),
        ],
        volume_mounts: vec![
            json!({"name": "sagas", "mountPath": "/etc/sagas", "readOnly": true}),
            json!({"name": "tmp", "mountPath": "/tmp"}),
        ],
        resources: spec.resources.as_ref(),
        progress_deadline_seconds: spec.upgrade.progress_deadline_seconds,
    };
    Ok(OwnedObjects {
        config_map: Desired::Apply(objects::config_map(id, target_version, &data)?),
        deployment: Desired::Apply(objects::deployment(id, &workload)?),
        service: Desired::Apply(objects::service(id, target_version)?),
        hpa: Desired::Unmanaged,
        network_policy: Desired::Unmanaged,
        cron_job: Desired::Unmanaged,
        job: Desired::Unmanaged,
        service_monitor: Desired::Unmanaged,
    })
}

impl WorkloadKind for SagaOrchestrator {
    type Validated<'a> = Validated<'a>;
    const COMPONENT: &'static str = COMPONENT;

    fn spec_version(&self) -> &str {
        &self.spec.version
    }
    fn upgrade_policy(&self) -> &UpgradePolicy {
        &self.spec.upgrade
    }
    fn workload_status(&self) -> WorkloadStatus {
        self.status.clone().unwrap_or_default()
    }
    fn validate(&self) -> Result<Validated<'_>, Invalid> {
        validate(&self.spec)
    }
    fn plan(
        v: &Validated<'_>,
        id: &Identity,
        _facts: &Facts,
        target: &str,
    ) -> Result<OwnedObjects, objects::Error> {
        plan(id, v, target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::objects::test_identity;

    fn spec(steps: &str) -> SagaOrchestratorSpec {
        serde_yaml::from_str(&format!(
            r#"
version: "1.4.2"
database: {{clusterName: payments-db}}
messaging: {{serviceBusNamespace: payments-bus}}
sagas:
  - name: card-payment
    steps: {steps}
"#
        ))
        .expect("spec")
    }

    const GOOD: &str = r#"[{name: reserve, service: ledger, action: Reserve, compensation: Release},
                          {name: capture, service: ledger, action: Capture, final: true}]"#;

    #[test]
    fn definitions_are_rendered_into_the_config_map_and_mounted() {
        let s = spec(GOOD);
        let o = plan(
            &test_identity(COMPONENT, "sagas"),
            &validate(&s).expect("valid"),
            "1.4.2",
        )
        .expect("plan");
        let Desired::Apply(cm) = o.config_map else {
            panic!()
        };
        let data = cm.data.expect("data");
        let sagas: serde_json::Value = serde_json::from_str(&data[SAGAS_KEY]).expect("json");
        assert_eq!(sagas[0]["steps"][0]["compensation"], "Release");
        assert_eq!(sagas[0]["steps"][1]["final"], true);
        assert_eq!(data["DATABASE_HOST"], "payments-db-rw");
        let Desired::Apply(d) = o.deployment else {
            panic!()
        };
        let pod = d.spec.expect("spec").template.spec.expect("pod");
        assert!(
            pod.volumes
                .expect("volumes")
                .iter()
                .any(|v| v.config_map.as_ref().is_some_and(|c| c.name == "sagas"))
        );
    }

    #[test]
    fn invalid_definitions_say_which_step_and_why() {
        let dup = spec(
            r#"[{name: a, service: s, action: A, compensation: U}, {name: a, service: s, action: B, final: true}]"#,
        );
        assert!(
            validate(&dup)
                .expect_err("dup")
                .message
                .contains("appears twice")
        );
        let nocomp = spec(r#"[{name: a, service: s, action: A}]"#);
        let e = validate(&nocomp).expect_err("no compensation");
        assert_eq!(e.field, "spec.sagas[0].steps[0]");
        let after_final = spec(
            r#"[{name: a, service: s, action: A, final: true}, {name: b, service: s, action: B, compensation: U}]"#,
        );
        assert!(
            validate(&after_final)
                .expect_err("after final")
                .message
                .contains("follows the final step")
        );
    }
}
