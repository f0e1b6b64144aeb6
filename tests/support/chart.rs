//! The chart as Helm renders it (`helm template`), and its RBAC as sets of
//! (group, resource, verb), for tests that check what it grants. Kept apart
//! from the rest of `support` (which starts the test control plane) so pure
//! tests can use it; it needs only the `helm` binary, never a cluster.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

pub type Grants = BTreeSet<(String, String, String)>;

/// The `helm` binary the tests use; scripts/test sets it to the one
/// `tests/helm/build.sh` built.
pub const HELM_ENV: &str = "AUTOPILOT_HELM";

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// The `helm` binary: `$AUTOPILOT_HELM`, or else the one `tests/helm/build.sh`
/// builds (once, cached outside the repo; progress on stderr), as the control
/// plane's binaries are found.
pub fn helm() -> &'static Path {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match HELM.get_or_init(find_helm) {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

fn find_helm() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(HELM_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{HELM_ENV}={} is not a file; unset it, or set it to the helm that \
                 `bash tests/helm/build.sh` builds (<printed dir>/helm)",
                path.display()
            ))
        };
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helm/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "building helm failed ({}): run `bash tests/helm/build.sh` and export \
             {HELM_ENV}=<printed dir>/helm",
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    Ok(Path::new(dir).join("helm"))
}

/// `helm template <release> deploy/ --namespace <namespace> --set k=v …`,
/// parsed into its documents (empty ones skipped). Panics with Helm's error
/// when the chart does not render.
pub fn render(release: &str, namespace: &str, set: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", namespace]);
    for (key, value) in set {
        cmd.arg("--set").arg(format!("{key}={value}"));
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm().display()));
    assert!(
        out.status.success(),
        "helm template {release} deploy/ -n {namespace} {set:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm prints UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d).expect("helm template prints valid YAML documents")
        })
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}

/// Helm's error when `helm template` with `set` does not render (panics
/// when it does).
pub fn render_fails(release: &str, namespace: &str, set: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(helm());
    cmd.args(["template", release])
        .arg(chart_dir())
        .args(["--namespace", namespace]);
    for (key, value) in set {
        cmd.arg("--set").arg(format!("{key}={value}"));
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", helm().display()));
    assert!(
        !out.status.success(),
        "helm template {release} deploy/ -n {namespace} {set:?} rendered"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The rendered documents of `kinds` only, in Helm's order.
pub fn of_kinds(docs: &[serde_json::Value], kinds: &[&str]) -> Vec<serde_json::Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str().is_some_and(|k| kinds.contains(&k)))
        .cloned()
        .collect()
}

/// The kinds that make up the chart's RBAC.
pub const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// The chart's admission policies and their bindings.
pub const ADMISSION_KINDS: [&str; 2] = [
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// The `--set` values of a namespace-scoped install to `namespaces`.
pub fn scoped_to(namespaces: &[&str]) -> String {
    format!("{{{}}}", namespaces.join(","))
}

/// What the chart's ClusterRole and Roles grant the agent (those bound to
/// its ServiceAccount; not the `-approver` ClusterRole, which is for
/// people). A rule limited by `resourceNames` counts as a grant here; the
/// authorizer test (tests/rbac.rs) checks names.
pub struct ChartRbac {
    pub cluster: Grants,
    /// Every Role's grants, whatever its namespace.
    pub namespaced: Grants,
    /// Each namespace's Roles' grants.
    pub by_namespace: std::collections::BTreeMap<String, Grants>,
}

impl ChartRbac {
    /// The chart's RBAC as `helm template` renders it with the default values,
    /// the release named `autopilot` in namespace `autopilot`.
    pub fn load() -> Self {
        Self::from_documents(&render("autopilot", "autopilot", &[]))
    }

    /// The same, with `set` values.
    pub fn load_with(set: &[(&str, &str)]) -> Self {
        Self::from_documents(&render("autopilot", "autopilot", set))
    }

    /// The grants of the ClusterRoles and Roles among `docs` that are bound
    /// to the chart's ServiceAccount.
    pub fn from_documents(docs: &[serde_json::Value]) -> Self {
        let mut out = Self {
            cluster: Grants::new(),
            namespaced: Grants::new(),
            by_namespace: Default::default(),
        };
        let bound = agent_roles(docs);
        for doc in docs {
            let key = (
                doc["kind"].as_str().unwrap_or_default().to_string(),
                doc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            if !bound.contains(&key) {
                continue;
            }
            if doc["kind"] == "Role" {
                let ns = doc["metadata"]["namespace"]
                    .as_str()
                    .expect("a Role's namespace");
                let into = out.by_namespace.entry(ns.to_string()).or_default();
                Self::add_rules(doc, into);
            }
            let into = match doc["kind"].as_str() {
                Some("ClusterRole") => &mut out.cluster,
                Some("Role") => &mut out.namespaced,
                _ => continue,
            };
            Self::add_rules(doc, into);
        }
        out
    }

    pub fn add_rules(doc: &serde_json::Value, into: &mut Grants) {
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

    /// Whether the Roles in `namespace` grant `verb` on `group`/`resource`.
    pub fn role_grants_in(&self, namespace: &str, group: &str, resource: &str, verb: &str) -> bool {
        self.by_namespace.get(namespace).is_some_and(|g| {
            g.contains(&(group.to_string(), resource.to_string(), verb.to_string()))
        })
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

/// The (kind, namespace, name) of every ClusterRole and Role that a binding
/// among `docs` grants the chart's ServiceAccount (the one ServiceAccount
/// it renders); a ClusterRole bound by a RoleBinding counts as the
/// ClusterRole.
pub fn agent_roles(docs: &[serde_json::Value]) -> BTreeSet<(String, String, String)> {
    let accounts = of_kinds(docs, &["ServiceAccount"]);
    assert_eq!(accounts.len(), 1, "one ServiceAccount: {accounts:?}");
    let (sa, sa_ns) = (
        &accounts[0]["metadata"]["name"],
        &accounts[0]["metadata"]["namespace"],
    );
    let mut out = BTreeSet::new();
    for binding in of_kinds(docs, &["ClusterRoleBinding", "RoleBinding"]) {
        let to_agent = binding["subjects"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["kind"] == "ServiceAccount" && &s["name"] == sa && &s["namespace"] == sa_ns
            })
        });
        if !to_agent {
            continue;
        }
        let role = &binding["roleRef"];
        let kind = role["kind"].as_str().expect("roleRef.kind").to_string();
        let ns = if kind == "Role" {
            binding["metadata"]["namespace"]
                .as_str()
                .expect("a RoleBinding's namespace")
                .to_string()
        } else {
            String::new()
        };
        out.insert((
            kind,
            ns,
            role["name"].as_str().expect("roleRef.name").to_string(),
        ));
    }
    out
}

/// What the ClusterRole `name` among `docs` grants.
pub fn cluster_role_grants(docs: &[serde_json::Value], name: &str) -> Grants {
    let mut out = Grants::new();
    for doc in of_kinds(docs, &["ClusterRole"]) {
        if doc["metadata"]["name"] == name {
            ChartRbac::add_rules(&doc, &mut out);
        }
    }
    out
}
