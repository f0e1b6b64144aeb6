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
    // Besides the payments kinds, only the agent's own: its policy, and the
    // recommendations and approvals of recommend mode.
    let others: Vec<&serde_json::Value> = crds
        .iter()
        .filter(|c| !kinds::payments().any(|(k, _)| c["spec"]["names"]["kind"] == k.kind))
        .map(|c| &c["spec"]["names"]["kind"])
        .collect();
    assert_eq!(
        others,
        [
            &serde_json::json!("AutopilotPolicy"),
            &serde_json::json!("Recommendation"),
            &serde_json::json!("Approval")
        ],
        "a CRD no kind lists"
    );
}

/// The namespaces of the scoped install these tests render.
const SCOPED: [&str; 2] = ["payments", "ledger"];

/// Each install the chart supports, rendered: all namespaces (a
/// ClusterRole) and scoped to [`SCOPED`] (a Role in each).
fn installs() -> Vec<(&'static str, chart::ChartRbac)> {
    vec![
        ("cluster-wide", chart::ChartRbac::load()),
        (
            "scoped",
            chart::ChartRbac::load_with(&[("watchNamespaces", &chart::scoped_to(&SCOPED))]),
        ),
    ]
}

/// Where `install` lacks `verb` on `group`/`resource` in a namespace the
/// agent watches: the ClusterRole when it watches all, else each listed
/// namespace's Role.
fn lacks(
    install: &(&str, chart::ChartRbac),
    group: &str,
    resource: &str,
    verb: &str,
) -> Vec<String> {
    let (name, rbac) = install;
    if *name == "cluster-wide" {
        return if rbac.cluster_grants(group, resource, verb) {
            vec![]
        } else {
            vec![format!("{name}: {verb} {group}/{resource}")]
        };
    }
    SCOPED
        .iter()
        .filter(|ns| !rbac.role_grants_in(ns, group, resource, verb))
        .map(|ns| format!("{name}: {verb} {group}/{resource} in {ns}"))
        .collect()
}

/// What each controller writes (its kind, its status, every object it owns,
/// Events) is granted, by the ClusterRole or, scoped, in every listed
/// namespace.
#[test]
fn the_chart_grants_every_controller_write() {
    let mut missing = Vec::new();
    for install in installs() {
        for rule in kinds::controller_rbac() {
            for verb in &rule.verbs {
                missing.extend(lacks(&install, &rule.group, &rule.resource, verb));
            }
        }
    }
    assert!(missing.is_empty(), "the chart's RBAC lacks: {missing:#?}");
}

/// Every action kind: a host function builds it, every target it accepts is
/// a registered kind, and the chart grants what it sends on each target, in
/// each install.
#[test]
fn every_action_kind_has_a_host_function_registered_targets_and_the_charts_rbac() {
    let installs = installs();
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
                    for install in &installs {
                        for lack in lacks(install, &rule.group, &rule.resource, verb) {
                            missing.push(format!("{} on {target}: {lack}", action.name()));
                        }
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// Nothing the agent does not need, in any install: no Secrets, Pods,
/// service account tokens, RBAC kinds or wildcards; no PUT on what it
/// owns; delete only on what a spec can turn off; and a scoped install's
/// ClusterRole only reads. The authorizer test (tests/rbac.rs) proves the
/// same on the real API server.
#[test]
fn the_chart_grants_nothing_the_agent_does_not_need() {
    let mut excess = Vec::new();
    for (name, rbac) in installs() {
        for (scope, grants) in [("ClusterRole", &rbac.cluster), ("Roles", &rbac.namespaced)] {
            for (group, resource, verb) in grants {
                let owned_delete = kinds::controller_rbac().iter().any(|r| {
                    &r.group == group && &r.resource == resource && r.verbs.contains(&"delete")
                });
                let bad = group == "*"
                    || resource == "*"
                    || verb == "*"
                    || group == "rbac.authorization.k8s.io"
                    || [
                        "secrets",
                        "pods",
                        "serviceaccounts",
                        "serviceaccounts/token",
                        "nodes",
                    ]
                    .contains(&resource.as_str())
                    || ["escalate", "bind", "impersonate", "deletecollection"]
                        .contains(&verb.as_str())
                    || (verb == "update"
                        && !resource.ends_with("/finalizers")
                        && !RECOMMEND_STATUS.contains(&resource.as_str())
                        && resource != "leases")
                    || (verb == "delete" && !owned_delete);
                if bad {
                    excess.push(format!("{name} {scope}: {verb} {group}/{resource}"));
                }
            }
        }
        if name == "scoped" {
            for (group, resource, verb) in &rbac.cluster {
                // A SelfSubjectReview only tells the agent who it is.
                let whoami = group == "authentication.k8s.io" && resource == "selfsubjectreviews";
                if !["get", "list", "watch"].contains(&verb.as_str()) && !whoami {
                    excess.push(format!(
                        "scoped ClusterRole writes: {verb} {group}/{resource}"
                    ));
                }
            }
            let mut namespaces: Vec<_> = rbac.by_namespace.keys().cloned().collect();
            namespaces.sort();
            assert_eq!(
                namespaces,
                ["autopilot", "ledger", "payments"],
                "Roles in the listed namespaces and the agent's own"
            );
        }
    }
    assert!(
        excess.is_empty(),
        "the chart grants more than needed: {excess:#?}"
    );
}

/// The status subresources the agent writes whole (update) in recommend mode.
const RECOMMEND_STATUS: [&str; 2] = ["recommendations/status", "approvals/status"];

/// What the agent may do with recommendations and approvals, wherever it
/// acts, and nothing else: it creates Recommendations and writes both kinds'
/// status, and only reads Approvals (no self-approval); never in a scoped
/// install's ClusterRole.
#[test]
fn the_agent_creates_recommendations_reads_approvals_and_writes_only_their_status() {
    let expected: Vec<(&str, &[&str])> = vec![
        ("recommendations", &["create", "get", "list", "watch"]),
        ("recommendations/status", &["get", "patch", "update"]),
        ("approvals", &["get", "list", "watch"]),
        ("approvals/status", &["get", "patch", "update"]),
    ];
    let of = |grants: &chart::Grants, resource: &str| -> Vec<String> {
        grants
            .iter()
            .filter(|(g, r, _)| g == "payments.io" && r == resource)
            .map(|(_, _, v)| v.clone())
            .collect()
    };
    let sorted = |verbs: &[&str]| {
        let mut v: Vec<String> = verbs.iter().map(|v| v.to_string()).collect();
        v.sort();
        v
    };
    for (name, rbac) in installs() {
        for (resource, verbs) in &expected {
            if name == "cluster-wide" {
                assert_eq!(
                    of(&rbac.cluster, resource),
                    sorted(verbs),
                    "{name} {resource}"
                );
            } else {
                assert!(
                    of(&rbac.cluster, resource).is_empty(),
                    "{name} ClusterRole {resource}"
                );
                for ns in SCOPED {
                    let grants = &rbac.by_namespace[ns];
                    assert_eq!(
                        of(grants, resource),
                        sorted(verbs),
                        "{name} {ns} {resource}"
                    );
                }
                // Not in its own namespace, which it does not watch.
                assert!(of(&rbac.by_namespace["autopilot"], resource).is_empty());
            }
        }
    }
}

/// In both modes the ClusterRole lets the agent ask who it is and get the
/// approvals policy and its binding, by name: no other policy, no write.
#[test]
fn the_agent_gets_only_its_approvals_policy_and_binding_by_name() {
    for set in [vec![], vec![("watchNamespaces", chart::scoped_to(&SCOPED))]] {
        let set: Vec<(&str, &str)> = set.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let docs = chart::render("autopilot", "autopilot", &set);
        let role = chart::of_kinds(&docs, &["ClusterRole"])
            .into_iter()
            .find(|r| r["metadata"]["name"] == "autopilot")
            .expect("the agent's ClusterRole");
        let rules = role["rules"].as_array().expect("rules");
        let admission: Vec<_> = rules
            .iter()
            .filter(|r| r["apiGroups"] == serde_json::json!(["admissionregistration.k8s.io"]))
            .collect();
        assert_eq!(
            admission,
            [&serde_json::json!({
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["validatingadmissionpolicies", "validatingadmissionpolicybindings"],
                "resourceNames": ["autopilot-approvals"],
                "verbs": ["get"],
            })],
            "{set:?}"
        );
        assert!(
            rules.contains(&serde_json::json!({
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["selfsubjectreviews"],
                "verbs": ["create"],
            })),
            "{set:?}: {rules:?}"
        );
    }
    // Without the policy, nothing to get.
    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[("admissionPolicy.enabled", "false")],
    );
    let grants = chart::cluster_role_grants(&docs, "autopilot");
    assert!(
        !grants
            .iter()
            .any(|(g, _, _)| g == "admissionregistration.k8s.io"),
        "{grants:?}"
    );
}

/// The `-approver` ClusterRole, for people: read recommendations, read and
/// create approvals; bound where `approvers` says, to whom it says.
#[test]
fn approvers_get_the_approver_cluster_role_in_their_namespace() {
    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[
            ("approvers[0].namespace", "payments"),
            ("approvers[0].kind", "User"),
            ("approvers[0].name", "alice"),
            ("approvers[1].namespace", "payments"),
            ("approvers[1].kind", "Group"),
            ("approvers[1].name", "payments-oncall"),
            ("approvers[2].namespace", "ledger"),
            ("approvers[2].kind", "ServiceAccount"),
            ("approvers[2].name", "release-bot"),
            ("approvers[2].serviceAccountNamespace", "ci"),
        ],
    );
    let grants = chart::cluster_role_grants(&docs, "autopilot-approver");
    let expected: chart::Grants = [
        ("recommendations", "get"),
        ("recommendations", "list"),
        ("recommendations", "watch"),
        ("approvals", "get"),
        ("approvals", "list"),
        ("approvals", "watch"),
        ("approvals", "create"),
    ]
    .iter()
    .map(|(r, v)| ("payments.io".to_string(), r.to_string(), v.to_string()))
    .collect();
    assert_eq!(grants, expected);
    let mut bindings: Vec<_> = chart::of_kinds(&docs, &["RoleBinding"])
        .into_iter()
        .filter(|b| b["roleRef"]["name"] == "autopilot-approver")
        .map(|b| {
            assert_eq!(b["roleRef"]["kind"], "ClusterRole");
            (b["metadata"]["namespace"].clone(), b["subjects"].clone())
        })
        .collect();
    bindings.sort_by_key(|(ns, _)| ns.to_string());
    let user = |kind: &str, name: &str| serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name});
    assert_eq!(
        bindings,
        [
            (
                serde_json::json!("ledger"),
                serde_json::json!([{"kind": "ServiceAccount", "name": "release-bot", "namespace": "ci"}])
            ),
            (
                serde_json::json!("payments"),
                serde_json::json!([user("User", "alice"), user("Group", "payments-oncall")])
            ),
        ]
    );
    // None by default: the ClusterRole alone binds nobody.
    let docs = chart::render("autopilot", "autopilot", &[]);
    assert!(
        !chart::of_kinds(&docs, &["RoleBinding"])
            .iter()
            .any(|b| b["roleRef"]["name"] == "autopilot-approver")
    );
}

/// An approvers entry the chart cannot bind, or the agent itself, is
/// refused at render time rather than guessed at.
#[test]
fn bad_approvers_and_the_agent_as_approver_are_refused() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("approvers[0].kind", "User"),
                ("approvers[0].name", "alice"),
            ],
            "needs namespace",
        ),
        (
            &[
                ("approvers[0].namespace", "payments"),
                ("approvers[0].kind", "Person"),
                ("approvers[0].name", "alice"),
            ],
            "needs kind",
        ),
        (
            &[
                ("approvers[0].namespace", "autopilot"),
                ("approvers[0].kind", "ServiceAccount"),
                ("approvers[0].name", "autopilot"),
            ],
            "no self-approval",
        ),
        (
            &[
                ("approvers[0].namespace", "payments"),
                ("approvers[0].kind", "User"),
                (
                    "approvers[0].name",
                    "system:serviceaccount:autopilot:autopilot",
                ),
            ],
            "no self-approval",
        ),
    ];
    for (set, expected) in cases {
        let err = chart::render_fails("autopilot", "autopilot", set);
        assert!(err.contains(expected), "{set:?}: {err}");
    }
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
