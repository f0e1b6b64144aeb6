//! ClearingAdapter → ConfigMap, Deployment (credentials Secret mounted by
//! reference), Service, and a NetworkPolicy that allows egress only to the
//! clearing endpoint (and DNS). The next cut-off goes into status.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::{api::networking::v1::NetworkPolicy, jiff::Timestamp};
use serde_json::json;

use super::{
    Facts, Invalid, WorkloadKind,
    objects::{self, Identity, Workload},
    schedule,
};
use crate::{
    act::{Desired, OwnedObjects},
    crd::{
        ClearingAdapter, ClearingAdapterSpec, ClearingAdapterStatus, WorkloadStatus,
        common::UpgradePolicy,
    },
};

pub const COMPONENT: &str = "clearing-adapter";
/// Where the credentials Secret is mounted.
pub const CREDENTIALS_PATH: &str = "/var/run/secrets/clearing";

/// A spec whose endpoint, address ranges, schedule and time zone all parse.
#[derive(Debug)]
pub struct Validated<'a> {
    spec: &'a ClearingAdapterSpec,
    host: String,
    port: u16,
}

impl Validated<'_> {
    /// The clearing endpoint's host and port, as parsed from its URL.
    pub fn endpoint(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

pub fn validate(spec: &ClearingAdapterSpec) -> Result<Validated<'_>, Invalid> {
    objects::check_image(&spec.image, &spec.version)?;
    let (host, port) = parse_endpoint(&spec.endpoint.url).ok_or_else(|| {
        Invalid::new(
            "spec.endpoint.url",
            format!("{:?} is not scheme://host[:port][/path]", spec.endpoint.url),
        )
    })?;
    for (i, cidr) in spec.endpoint.cidrs.iter().enumerate() {
        if !valid_cidr(cidr) {
            return Err(Invalid::new(
                format!("spec.endpoint.cidrs[{i}]"),
                format!("{cidr:?} is not an address range in CIDR notation (e.g. 203.0.113.0/24)"),
            ));
        }
    }
    schedule::parse(&spec.cutoff.schedule).map_err(|m| Invalid::new("spec.cutoff.schedule", m))?;
    schedule::time_zone(&spec.cutoff.time_zone)
        .map_err(|m| Invalid::new("spec.cutoff.timeZone", m))?;
    Ok(Validated { spec, host, port })
}

fn parse_endpoint(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (
            authority,
            if scheme == "https" || scheme == "tls" {
                443
            } else {
                return None;
            },
        ),
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

fn valid_cidr(cidr: &str) -> bool {
    let Some((addr, prefix)) = cidr.split_once('/') else {
        return false;
    };
    match (addr.parse::<IpAddr>(), prefix.parse::<u8>()) {
        (Ok(IpAddr::V4(_)), Ok(p)) => p <= 32,
        (Ok(IpAddr::V6(_)), Ok(p)) => p <= 128,
        _ => false,
    }
}

/// The next cut-off after `now`, when the schedule and zone are valid.
pub fn next_cutoff(spec: &ClearingAdapterSpec, now: Timestamp) -> Option<Timestamp> {
    let cron = schedule::parse(&spec.cutoff.schedule).ok()?;
    let tz = schedule::time_zone(&spec.cutoff.time_zone).ok()?;
    schedule::next_after(&cron, tz, now)
}

pub fn config_data(v: &Validated<'_>) -> BTreeMap<String, String> {
    let s = v.spec;
    let system = serde_json::to_value(s.system)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    BTreeMap::from([
        ("CLEARING_SYSTEM".to_string(), system),
        ("CLEARING_ENDPOINT".to_string(), s.endpoint.url.clone()),
        (
            "RATE_LIMIT_PER_SECOND".to_string(),
            s.rate_limit_per_second.to_string(),
        ),
        ("CUTOFF_SCHEDULE".to_string(), s.cutoff.schedule.clone()),
        ("CUTOFF_TIME_ZONE".to_string(), s.cutoff.time_zone.clone()),
        ("CREDENTIALS_PATH".to_string(), CREDENTIALS_PATH.to_string()),
    ])
}

pub fn plan(
    id: &Identity,
    v: &Validated<'_>,
    target_version: &str,
) -> Result<OwnedObjects, objects::Error> {
    let spec = v.spec;
    let data = config_data(v);
    let mut secret = json!({"secretName": spec.credentials_secret_ref.name, "defaultMode": 0o400});
    if let Some(key) = &spec.credentials_secret_ref.key {
        secret["items"] = json!([{"key": key, "path": key}]);
    }
    let workload = Workload {
        container: "adapter",
        image: objects::image_ref(&spec.image, &spec.version, target_version),
        version: target_version,
        replicas: Some(spec.replicas),
        config_hash: objects::config_hash(&data),
        env: vec![],
        volumes: vec![
            json!({"name": "credentials", "secret": secret}),
            json!({"name": "tmp", "emptyDir": {}}),
        ],
        volume_mounts: vec![
            json!({"name": "credentials", "mountPath": CREDENTIALS_PATH, "readOnly": true}),
            json!({"name": "tmp", "mountPath": "/tmp"}),
        ],
        resources: spec.resources.as_ref(),
        progress_deadline_seconds: spec.upgrade.progress_deadline_seconds,
    };
    let ip_blocks: Vec<_> = spec
        .endpoint
        .cidrs
        .iter()
        .map(|c| json!({"ipBlock": {"cidr": c}}))
        .collect();
    let policy: NetworkPolicy = objects::typed(
        "NetworkPolicy",
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": id.metadata(target_version),
            "spec": {
                "podSelector": {"matchLabels": id.selector()},
                "policyTypes": ["Egress"],
                "egress": [
                    {"to": ip_blocks, "ports": [{"protocol": "TCP", "port": v.port}]},
                    {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                     "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                ],
            },
        }),
    )?;
    Ok(OwnedObjects {
        config_map: Desired::Apply(objects::config_map(id, target_version, &data)?),
        deployment: Desired::Apply(objects::deployment(id, &workload)?),
        service: Desired::Apply(objects::service(id, target_version)?),
        network_policy: Desired::Apply(policy),
        hpa: Desired::Unmanaged,
        cron_job: Desired::Unmanaged,
        job: Desired::Unmanaged,
        service_monitor: Desired::Unmanaged,
    })
}

impl WorkloadKind for ClearingAdapter {
    type Validated<'a> = Validated<'a>;
    const COMPONENT: &'static str = COMPONENT;

    fn spec_version(&self) -> &str {
        &self.spec.version
    }
    fn upgrade_policy(&self) -> &UpgradePolicy {
        &self.spec.upgrade
    }
    fn workload_status(&self) -> WorkloadStatus {
        self.status.clone().map(|s| s.workload).unwrap_or_default()
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
    fn status_json(&self, status: &WorkloadStatus, now: Timestamp) -> serde_json::Value {
        let full = ClearingAdapterStatus {
            workload: status.clone(),
            next_cutoff_time: next_cutoff(&self.spec, now)
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        };
        serde_json::to_value(full).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::objects::test_identity;

    fn spec() -> ClearingAdapterSpec {
        serde_yaml::from_str(
            r#"
system: SEPA
version: "1.8.0"
endpoint: {url: "https://step2.example.com:8443/sct", cidrs: ["203.0.113.0/24"]}
credentialsSecretRef: {name: sepa-creds, key: client.p12}
cutoff: {schedule: "0 16 * * 1-5", timeZone: Europe/Berlin}
"#,
        )
        .expect("spec")
    }

    #[test]
    fn plan_mounts_the_secret_by_reference_and_limits_egress_to_the_endpoint() {
        let s = spec();
        let v = validate(&s).expect("valid");
        assert_eq!((v.host.as_str(), v.port), ("step2.example.com", 8443));
        let o = plan(&test_identity(COMPONENT, "sepa"), &v, "1.8.0").expect("plan");
        let Desired::Apply(d) = o.deployment else {
            panic!("deployment")
        };
        let pod = d.spec.expect("spec").template.spec.expect("pod");
        let vol = pod
            .volumes
            .expect("volumes")
            .into_iter()
            .find(|v| v.name == "credentials")
            .expect("volume");
        let secret = vol.secret.expect("secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("sepa-creds"));
        assert_eq!(secret.items.expect("items")[0].key, "client.p12");
        let mount = &pod.containers[0].volume_mounts.as_ref().expect("mounts")[0];
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (CREDENTIALS_PATH, Some(true))
        );

        let Desired::Apply(np) = o.network_policy else {
            panic!("network policy")
        };
        let nspec = np.spec.expect("spec");
        assert_eq!(
            nspec.policy_types.as_deref(),
            Some(&["Egress".to_string()][..])
        );
        let egress = nspec.egress.expect("egress");
        let to = egress[0].to.as_ref().expect("to");
        assert_eq!(
            to[0].ip_block.as_ref().expect("block").cidr,
            "203.0.113.0/24"
        );
        let port = egress[0].ports.as_ref().expect("ports")[0].port.clone();
        assert_eq!(
            port,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8443))
        );
        assert_eq!(
            nspec
                .pod_selector
                .expect("selector")
                .match_labels
                .expect("labels")["app.kubernetes.io/instance"],
            "sepa"
        );

        let Desired::Apply(cm) = o.config_map else {
            panic!("config map")
        };
        assert_eq!(cm.data.expect("data")["CLEARING_SYSTEM"], "SEPA");
    }

    #[test]
    fn default_port_and_bad_inputs() {
        assert_eq!(
            parse_endpoint("https://h.example.com/x"),
            Some(("h.example.com".into(), 443))
        );
        assert_eq!(parse_endpoint("tls://h:7000"), Some(("h".into(), 7000)));
        let mut s = spec();
        s.endpoint.cidrs = vec!["203.0.113.0/33".into()];
        assert_eq!(
            validate(&s).expect_err("bad cidr").field,
            "spec.endpoint.cidrs[0]"
        );
        let mut s = spec();
        s.cutoff.time_zone = "Europe/Atlantis".into();
        assert_eq!(
            validate(&s).expect_err("bad tz").field,
            "spec.cutoff.timeZone"
        );
        let mut s = spec();
        s.cutoff.schedule = "0 25 * * *".into();
        assert_eq!(
            validate(&s).expect_err("bad cron").field,
            "spec.cutoff.schedule"
        );
    }

    #[test]
    fn next_cutoff_is_the_next_berlin_business_day_at_four() {
        let s = spec();
        let now: Timestamp = "2026-11-27T16:00:00Z".parse().expect("ts"); // Friday 17:00 CET
        assert_eq!(
            next_cutoff(&s, now),
            Some("2026-11-30T15:00:00Z".parse().expect("ts"))
        );
    }
}
