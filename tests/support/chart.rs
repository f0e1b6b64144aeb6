//! The chart's RBAC as sets of (group, resource, verb), for tests that check
//! what it grants without a control plane. Kept apart from the rest of
//! `support` (which starts the test control plane) so pure tests can use it.

#![allow(dead_code)] // each test binary uses a different part

use std::{collections::BTreeSet, path::Path};

pub type Grants = BTreeSet<(String, String, String)>;

/// What the chart's ClusterRole and Roles grant.
pub struct ChartRbac {
    pub cluster: Grants,
    pub namespaced: Grants,
}

impl ChartRbac {
    /// Reads `deploy/templates/rbac.yaml` with the release named `autopilot`.
    pub fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/templates/rbac.yaml");
        let text = std::fs::read_to_string(&path)
            .expect("chart rbac")
            .replace("{{ .Release.Name }}", "autopilot")
            .replace("{{ .Release.Namespace }}", "autopilot");
        let mut out = Self {
            cluster: Grants::new(),
            namespaced: Grants::new(),
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc: serde_json::Value =
                serde::Deserialize::deserialize(doc).expect("rbac yaml document");
            let into = match doc["kind"].as_str() {
                Some("ClusterRole") => &mut out.cluster,
                Some("Role") => &mut out.namespaced,
                _ => continue,
            };
            for rule in doc["rules"].as_array().expect("rules") {
                for g in rule["apiGroups"].as_array().expect("groups") {
                    for r in rule["resources"].as_array().expect("resources") {
                        for v in rule["verbs"].as_array().expect("verbs") {
                            into.insert((
                                g.as_str().expect("group").to_string(),
                                r.as_str().expect("resource").to_string(),
                                v.as_str().expect("verb").to_string(),
                            ));
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether the ClusterRole grants `verb` on `group`/`resource`.
    pub fn cluster_grants(&self, group: &str, resource: &str, verb: &str) -> bool {
        self.cluster
            .contains(&(group.to_string(), resource.to_string(), verb.to_string()))
    }

    /// Whether a namespaced Role grants `verb` on `group`/`resource`.
    pub fn role_grants(&self, group: &str, resource: &str, verb: &str) -> bool {
        self.namespaced
            .contains(&(group.to_string(), resource.to_string(), verb.to_string()))
    }
}
