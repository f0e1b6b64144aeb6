//! Where the runbooks come from, and their hot reload: a folder (read again
//! every cycle, reloaded when a file changed) or a ConfigMap in the agent's
//! namespace (watched; every `*.rhai` key is a runbook named after the key).
//!
//! A runbook that does not compile is rejected with file, line, column and
//! reason — in the log, on `/metrics`, and as a Warning Event on the
//! ConfigMap — and its last good version keeps running.

use std::{collections::BTreeMap, path::PathBuf};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;

/// Runbook sources: `(name, source)` pairs, sorted by name.
pub type Sources = Vec<(String, String)>;

/// Where the runbooks are read from.
#[derive(Clone, Debug)]
pub enum RulesSource {
    /// A folder of `*.rhai` files.
    Dir(PathBuf),
    /// A ConfigMap whose `*.rhai` keys are runbooks.
    ConfigMap { namespace: String, name: String },
}

impl std::fmt::Display for RulesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RulesSource::Dir(d) => write!(f, "folder {}", d.display()),
            RulesSource::ConfigMap { namespace, name } => {
                write!(f, "ConfigMap {namespace}/{name}")
            }
        }
    }
}

/// The runbooks in a ConfigMap's data: every `NAME.rhai` key; other keys
/// (case files, READMEs) are ignored.
pub fn from_configmap_data(data: &BTreeMap<String, String>) -> Sources {
    data.iter()
        .filter_map(|(k, v)| {
            k.strip_suffix(".rhai")
                .filter(|n| !n.is_empty())
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect()
}

/// The runbooks in a folder: every `NAME.rhai` file.
pub fn read_dir(dir: &std::path::Path) -> std::io::Result<Sources> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rhai") && path.is_file() {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((name, std::fs::read_to_string(&path)?));
        }
    }
    out.sort();
    Ok(out)
}

/// One version of the rules as read, with the ConfigMap it came from (for
/// Events), if any.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub sources: Sources,
    pub configmap: Option<ConfigMap>,
}

/// Watches the rules ConfigMap and publishes every version of its runbooks.
/// A deleted ConfigMap publishes nothing: the runbooks loaded last keep
/// running (stop them with the kill switch, not by deleting the rules).
pub async fn watch_configmap(
    client: Client,
    namespace: String,
    name: String,
    tx: watch::Sender<Option<Snapshot>>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, cfg)
        .default_backoff()
        .touched_objects()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(cm) => {
                let sources = from_configmap_data(&cm.data.clone().unwrap_or_default());
                tracing::debug!(%namespace, %name, runbooks = sources.len(), "rules ConfigMap changed");
                if tx
                    .send(Some(Snapshot {
                        sources,
                        configmap: Some(cm),
                    }))
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%namespace, %name, %error, "watching the rules ConfigMap failed; keeping the loaded runbooks and retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rhai_keys_of_a_configmap_are_runbooks() {
        let data: BTreeMap<String, String> = [
            ("scale.rhai", "a"),
            ("scale.cases.yaml", "b"),
            (".rhai", "c"),
            ("README.md", "d"),
            ("backup.rhai", "e"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            from_configmap_data(&data),
            vec![
                ("backup".to_string(), "e".to_string()),
                ("scale".to_string(), "a".to_string())
            ]
        );
    }

    #[test]
    fn a_folder_yields_its_rhai_files_sorted() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("b.rhai"), "B").expect("write");
        std::fs::write(dir.path().join("a.rhai"), "A").expect("write");
        std::fs::write(dir.path().join("a.cases.yaml"), "x").expect("write");
        assert_eq!(
            read_dir(dir.path()).expect("read"),
            vec![
                ("a".to_string(), "A".to_string()),
                ("b".to_string(), "B".to_string())
            ]
        );
        assert!(read_dir(&dir.path().join("missing")).is_err());
    }
}
