//! Walks the registry of kinds (`autopilot::kinds`) and every action kind,
//! and checks each has everything the agent needs of it: a generated CRD and
//! a controller whose writes the chart's RBAC allows (our kinds), a host
//! function, a registry entry for every target it accepts, and the chart's
//! RBAC for what it sends — every kind and action, not only those a case file
//! happens to use. Pure: no control plane.

#[path = "support/chart.rs"]
mod chart;

use autopilot::{
    act::action::rbac_for,
    decide::{ActionKind, HOST_API},
    kinds,
};

/// Our kinds are in the generated CRD file the chart installs, with the
/// registry's group, version and plural.
#[test]
fn every_payments_kind_has_its_crd_in_the_chart() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds/payments.io.yaml");
    let text = std::fs::read_to_string(path).expect("generated CRDs");
    let crds: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("crd document"))
        .collect();
    let mut missing = Vec::new();
    for (k, _) in kinds::payments() {
        let found = crds.iter().any(|c| {
            c["spec"]["names"]["kind"] == k.kind
                && c["spec"]["names"]["plural"] == k.plural
                && c["spec"]["group"] == k.group
                && c["spec"]["versions"][0]["name"] == k.version
        });
        if !found {
            missing.push(k.kind);
        }
    }
    assert!(missing.is_empty(), "no CRD in the chart for {missing:?}");
    // Besides the payments kinds, only the agent's own policy kind.
    let others: Vec<&serde_json::Value> = crds
        .iter()
        .filter(|c| !kinds::payments().any(|(k, _)| c["spec"]["names"]["kind"] == k.kind))
        .map(|c| &c["spec"]["names"]["kind"])
        .collect();
    assert_eq!(
        others,
        [&serde_json::json!("AutopilotPolicy")],
        "a CRD no kind lists"
    );
}

/// What each controller writes (its kind, its status, every object it owns,
/// Events) is granted by the chart's ClusterRole.
#[test]
fn the_chart_grants_every_controller_write() {
    let chart = chart::ChartRbac::load();
    let mut missing = Vec::new();
    for rule in kinds::controller_rbac() {
        for verb in &rule.verbs {
            if !chart.cluster_grants(&rule.group, &rule.resource, verb) {
                missing.push(format!("{verb} {}/{}", rule.group, rule.resource));
            }
        }
    }
    assert!(missing.is_empty(), "the chart's RBAC lacks: {missing:#?}");
}

/// Every action kind: a host function builds it, every target it accepts is
/// a registered kind, and the chart grants what it sends on each target.
#[test]
fn every_action_kind_has_a_host_function_registered_targets_and_the_charts_rbac() {
    let chart = chart::ChartRbac::load();
    let mut missing = Vec::new();
    for &action in ActionKind::ALL {
        if !HOST_API.iter().any(|f| f.produces == Some(action)) {
            missing.push(format!("{}: no host function", action.name()));
        }
        let targets = action.targets();
        if targets.is_empty() {
            missing.push(format!("{}: accepts no target kind", action.name()));
        }
        for target in targets {
            if kinds::find(target).is_none() {
                missing.push(format!(
                    "{}: target {target} not in the registry",
                    action.name()
                ));
                continue;
            }
            let rules = rbac_for(action, target);
            if rules.is_empty() {
                missing.push(format!("{} on {target}: no RBAC rule", action.name()));
            }
            for rule in rules {
                for verb in &rule.verbs {
                    if !chart.cluster_grants(&rule.group, &rule.resource, verb) {
                        missing.push(format!(
                            "{} on {target}: the chart lacks {verb} {}/{}",
                            action.name(),
                            rule.group,
                            rule.resource
                        ));
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// The registry and the executor agree: every kind resolves to its API.
#[test]
fn every_registered_kind_resolves_to_its_api() {
    for k in kinds::KINDS {
        let info = autopilot::act::action::kind_info(k.kind).expect("registered");
        assert_eq!(info.api_resource().plural, k.plural);
        assert_eq!(
            info.api_version(),
            format!("{}/{}", k.group, k.version),
            "{}",
            k.kind
        );
    }
}

/// The chart installs the policy explicitly (the agent sends nothing
/// without one), and its values are exactly the built-in defaults.
#[test]
fn the_charts_policy_values_are_the_default_policy() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/values.yaml");
    let values: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("values")).expect("yaml");
    // The template writes `policy:` as the object's spec, as it is.
    let read: autopilot::act::guard::Policy =
        serde_json::from_value(values["policy"].clone()).expect("policy");
    assert_eq!(read, autopilot::act::guard::Policy::default());
    // Every field is spelled out, so the values document the defaults.
    let spelled: Vec<&String> = values["policy"]
        .as_object()
        .expect("a policy: section")
        .keys()
        .collect();
    let all = serde_json::to_value(autopilot::act::guard::Policy::default()).expect("json");
    let fields: Vec<&String> = all.as_object().expect("object").keys().collect();
    assert_eq!(
        spelled.len(),
        fields.len(),
        "values {spelled:?}, policy {fields:?}"
    );
}
