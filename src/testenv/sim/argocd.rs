//! Argo CD: the application controller's side of an Application (it
//! compares, syncs and reports `Synced` and `Healthy`) and its
//! `argocd_app_info` series. `Application` has no status subresource: Argo
//! CD writes `status` on the resource itself, and so does the simulator
//! (see [`super::SimKind::status_subresource`]). Healthy and steady: the
//! estate's deployment pipeline, present so the agent is seen to leave it
//! alone.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::{Key, Objects, Part, SimKind, StatusPatch, key, name_of, ns_of};

const KINDS: &[SimKind] = &[SimKind {
    group: "argoproj.io",
    version: "v1alpha1",
    kind: "Application",
    plural: "applications",
}];

#[derive(Clone, Debug, Default)]
struct App {
    project: String,
    repo: String,
    dest_server: String,
    dest_namespace: String,
    autosync: bool,
}

/// Every Argo CD Application, and the controller that syncs it.
#[derive(Clone, Debug, Default)]
pub struct Applications {
    apps: BTreeMap<Key, App>,
}

impl Part for Applications {
    fn kinds(&self) -> &'static [SimKind] {
        KINDS
    }

    /// A new (or changed) Application is synced to its target revision and
    /// reported Healthy.
    fn observe(&mut self, objects: &Objects) -> Vec<StatusPatch> {
        let mut patches = Vec::new();
        let mut seen = BTreeSet::new();
        for a in objects.get("Application").into_iter().flatten() {
            let (ns, name) = (ns_of(a), name_of(a));
            let k = key("Application", ns, name);
            seen.insert(k.clone());
            let spec = &a["spec"];
            let source = &spec["source"];
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            self.apps.insert(
                k,
                App {
                    project: text(&spec["project"]),
                    repo: text(&source["repoURL"]),
                    dest_server: text(&spec["destination"]["server"]),
                    dest_namespace: text(&spec["destination"]["namespace"]),
                    autosync: spec["syncPolicy"]["automated"].is_object(),
                },
            );
            let revision = source["targetRevision"].as_str().unwrap_or("HEAD");
            let status = &a["status"];
            if status["sync"]["status"] != "Synced"
                || status["health"]["status"] != "Healthy"
                || status["sync"]["revision"] != revision
            {
                let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                patches.push(StatusPatch {
                    kind: "Application",
                    namespace: ns.into(),
                    name: name.into(),
                    status: json!({
                        "sync": {
                            "status": "Synced",
                            "revision": revision,
                            "comparedTo": {"source": source, "destination": spec["destination"]},
                        },
                        "health": {"status": "Healthy"},
                        "reconciledAt": at,
                        "operationState": {
                            "phase": "Succeeded",
                            "message": "successfully synced (all tasks run)",
                            "startedAt": at,
                            "finishedAt": at,
                            "operation": {"sync": {"revision": revision}},
                            "syncResult": {"revision": revision, "source": source},
                        },
                    }),
                });
            }
        }
        self.apps.retain(|k, _| seen.contains(k));
        patches
    }

    fn exposition(&self, out: &mut String) {
        out.push_str("# TYPE argocd_app_info gauge\n");
        for ((_, ns, name), a) in &self.apps {
            out.push_str(&format!(
                "argocd_app_info{{namespace=\"{ns}\",name=\"{name}\",project=\"{}\",autosync_enabled=\"{}\",repo=\"{}\",dest_server=\"{}\",dest_namespace=\"{}\",sync_status=\"Synced\",health_status=\"Healthy\",operation=\"\"}} 1\n",
                a.project, a.autosync, a.repo, a.dest_server, a.dest_namespace
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Model, tests::value};
    use super::*;

    fn app(status: Value) -> Value {
        json!({
            "metadata": {"namespace": "payments", "name": "payments"},
            "spec": {
                "project": "default",
                "source": {"repoURL": "https://git.example.com/payments.git", "path": "deploy", "targetRevision": "v1.5.0"},
                "destination": {"server": "https://kubernetes.default.svc", "namespace": "payments"},
                "syncPolicy": {"automated": {"prune": true}},
            },
            "status": status,
        })
    }

    #[test]
    fn an_application_is_synced_and_healthy() {
        let mut m = Model::default();
        let seen = |a| Objects::from([("Application", vec![a])]);
        let patches = m.observe(&seen(app(json!({}))));
        assert_eq!(patches.len(), 1);
        assert_eq!(patches[0].status["sync"]["revision"], "v1.5.0");
        // Written on the resource itself: Application has no /status.
        let kind = Model::kind("Application").expect("kind");
        assert!(!kind.status_subresource());
        assert!(
            Model::kind("KafkaNodePool")
                .expect("kind")
                .status_subresource()
        );
        assert!(m.observe(&seen(app(patches[0].status.clone()))).is_empty());
        let text = m.exposition();
        assert_eq!(
            value(
                &text,
                "argocd_app_info{namespace=\"payments\",name=\"payments\",project=\"default\",autosync_enabled=\"true\",repo=\"https://git.example.com/payments.git\",dest_server=\"https://kubernetes.default.svc\",dest_namespace=\"payments\",sync_status=\"Synced\",health_status=\"Healthy\",operation=\"\"}"
            ),
            1.0
        );
    }
}
