//! Where the runbooks come from, and their hot reload: a folder (read again
//! every cycle, reloaded when a file changed) or a ConfigMap in the agent's
//! namespace (watched; every `*.rhai` key is a runbook named after the key).
//!
//! A runbook that does not compile is rejected with file, line, column and
//! reason — in the log, on `/metrics`, and as a Warning Event on the
//! ConfigMap — and its last good version keeps running. `Rules` loads each
//! new version into the loop's `RunbookSet` (step 1 of a cycle).
//!
//! Must not evaluate runbooks nor write to the cluster other than through
//! `act::publish_event`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, events::Recorder, watcher},
};
use tokio::sync::watch;

use super::metrics::Metrics;
use crate::{
    act,
    decide::{self, RunbookSet},
    detect::spec::ValidatedSpec,
};

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

/// The runbooks' source and the version of it loaded last: step 1 of a
/// cycle reloads the loop's `RunbookSet` when the source changed.
pub struct Rules {
    source: RulesSource,
    /// New versions of a ConfigMap source, from `watch_configmap`.
    rx: Option<watch::Receiver<Option<Snapshot>>>,
    /// The sources loaded last (to reload a folder only when it changed).
    loaded: Option<Sources>,
    recorder: Recorder,
    metrics: Metrics,
}

impl Rules {
    pub fn new(
        source: RulesSource,
        rx: Option<watch::Receiver<Option<Snapshot>>>,
        recorder: Recorder,
        metrics: Metrics,
    ) -> Self {
        Rules {
            source,
            rx,
            loaded: None,
            recorder,
            metrics,
        }
    }

    /// On becoming leader: says so when the rules ConfigMap is missing or
    /// unreadable, since no runbook runs until it can be read.
    pub async fn check_source(&self, client: &Client) {
        let RulesSource::ConfigMap { namespace, name } = &self.source else {
            return;
        };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(%namespace, %name,
                "the rules ConfigMap does not exist: no runbook runs until it is created (kubectl create configmap {name} --from-file=rules/)"),
            Err(error) => {
                tracing::warn!(%namespace, %name, error = %crate::telemetry::chain(&error), "reading the rules ConfigMap failed; watching it anyway")
            }
        }
    }

    /// Forgets what was loaded, so the next refresh loads the runbooks
    /// again from their source (after the loaded set was lost).
    pub fn invalidate(&mut self) {
        self.loaded = None;
        if let Some(rx) = &mut self.rx {
            rx.mark_changed();
        }
    }

    /// Step 1: loads the runbooks into `runbooks` when their source changed
    /// since the last load; keeps the loaded ones when it cannot be read.
    #[tracing::instrument(skip_all, fields(source = %self.source))]
    pub async fn refresh(&mut self, runbooks: &mut RunbookSet, specs: &[ValidatedSpec]) {
        if let Some(snapshot) = self.changed() {
            self.load(snapshot, runbooks, specs).await;
        }
    }

    /// A version of the sources not loaded yet, if any.
    fn changed(&mut self) -> Option<Snapshot> {
        match &self.source {
            RulesSource::Dir(dir) => match read_dir(dir) {
                Ok(sources) if self.loaded.as_ref() != Some(&sources) => Some(Snapshot {
                    sources,
                    configmap: None,
                }),
                Ok(_) => None,
                Err(error) => {
                    self.metrics
                        .read_errors
                        .with_label_values(&["rules", "read_dir"])
                        .inc();
                    tracing::warn!(dir = %dir.display(), error = %crate::telemetry::chain(&error), "reading the runbooks failed; keeping the loaded ones");
                    None
                }
            },
            RulesSource::ConfigMap { .. } => {
                let rx = self.rx.as_mut()?;
                if !rx.has_changed().unwrap_or(false) {
                    return None;
                }
                rx.borrow_and_update().clone()
            }
        }
    }

    /// Loads a new version of the runbooks and reports what was rejected,
    /// what does not match the models, and what runs now.
    async fn load(
        &mut self,
        snapshot: Snapshot,
        runbooks: &mut RunbookSet,
        specs: &[ValidatedSpec],
    ) {
        let errors = runbooks.load(&snapshot.sources);
        self.report_rejected(&snapshot, &errors, runbooks).await;
        // A runbook listening for a signal no model produces would never fire.
        let mut lint = Vec::new();
        for rb in runbooks.runbooks() {
            lint.extend(decide::lint::check_against_models(rb, specs));
        }
        for problem in &lint {
            tracing::warn!(source = %self.source, %problem, "runbook does not match the model specs");
            if let Some(cm) = &snapshot.configmap {
                act::publish_event(&self.recorder, cm, true, "RunbookLint", problem.clone()).await;
            }
        }
        let running: Vec<&str> = runbooks.runbooks().map(|r| r.name.as_str()).collect();
        self.metrics.runbooks_loaded.set(running.len() as i64);
        tracing::info!(source = %self.source, running = ?running, rejected = errors.len(), "runbooks loaded");
        if let Some(cm) = &snapshot.configmap {
            let note = format!(
                "{} runbooks running ({}); {} rejected",
                running.len(),
                running.join(", "),
                errors.len()
            );
            act::publish_event(&self.recorder, cm, false, "RunbooksLoaded", note).await;
        }
        self.loaded = Some(snapshot.sources);
    }

    /// Counts, logs and publishes (as Warning Events on the ConfigMap) the
    /// runbooks `load` rejected, saying whether their last good version
    /// keeps running.
    async fn report_rejected(
        &self,
        snapshot: &Snapshot,
        errors: &[decide::Error],
        runbooks: &RunbookSet,
    ) {
        let rejected: BTreeSet<&str> = errors.iter().filter_map(rejected_file).collect();
        for (name, _) in &snapshot.sources {
            self.metrics
                .runbook_rejected
                .with_label_values(&[name.as_str()])
                .set(i64::from(rejected.contains(name.as_str())));
        }
        for e in errors {
            let name = rejected_file(e).unwrap_or("");
            self.metrics
                .runbook_errors
                .with_label_values(&[name, e.kind()])
                .inc();
            let kept = runbooks.get(name).is_some();
            tracing::error!(runbook = name, error = %e, last_good_kept = kept, source = %self.source, "runbook rejected");
            if let Some(cm) = &snapshot.configmap {
                let note = format!(
                    "{e}; {}",
                    if kept {
                        "the last good version keeps running"
                    } else {
                        "it is not running"
                    }
                );
                act::publish_event(&self.recorder, cm, true, "RunbookRejected", note).await;
            }
        }
    }
}

/// The runbook a load error rejects, if it names one.
fn rejected_file(error: &decide::Error) -> Option<&str> {
    match error {
        decide::Error::CompileRunbook { file, .. } => Some(file.as_str()),
        _ => None,
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
