//! Where the runbooks come from, and their hot reload: a folder (read again
//! every cycle, reloaded when a file changed) or a ConfigMap in the agent's
//! namespace (watched; every `*.rhai` key is a runbook named after the key).
//!
//! A runbook that does not compile is rejected with file, line, column and
//! reason — in the log, on `/metrics`, and as a Warning Event on the
//! ConfigMap — and its last good version keeps running. `Rules` loads each
//! new version into the loop's `RunbookSet` (step 1 of a cycle).
//!
//! Every runbook version loaded is recorded in the journal with its editor
//! (who made it: the ConfigMap's `changed-by` annotation, which the chart's
//! admission policy holds equal to the user who wrote it), and the loaded
//! runbook carries the editor the journal keeps for that version, so every
//! action names who wrote the rule behind it (issue #11).
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
    act::{self, journal::Journal},
    crd::CHANGED_BY_ANNOTATION,
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

impl Snapshot {
    /// Who made this version of the rules: the ConfigMap's
    /// [`CHANGED_BY_ANNOTATION`]; `None` for a folder, or a ConfigMap
    /// without it (the admission policy that requires it is off).
    pub fn editor(&self) -> Option<String> {
        let annotations = self.configmap.as_ref()?.metadata.annotations.as_ref()?;
        annotations
            .get(CHANGED_BY_ANNOTATION)
            .filter(|e| !e.is_empty())
            .cloned()
    }
}

/// The editors of the runbook versions loaded: each new version is
/// recorded in the journal with the editor of the rules version that
/// brought it, and takes the editor the journal keeps for it (the first to
/// make that exact source). A version the journal could not record yet is
/// tried again every cycle, meanwhile without an editor.
#[derive(Debug, Default)]
pub struct Editors {
    /// Versions (hashes) recorded, with the editor the journal keeps.
    recorded: BTreeMap<String, Option<String>>,
    /// Versions loaded but not recorded yet: runbook name and the editor
    /// of the rules version that first brought them.
    unrecorded: BTreeMap<String, (String, Option<String>)>,
}

impl Editors {
    /// Notes the versions `runbooks` holds after loading a rules version
    /// made by `editor`.
    pub fn loaded(&mut self, runbooks: &RunbookSet, editor: Option<&str>) {
        for rb in runbooks.runbooks() {
            if !self.recorded.contains_key(&rb.hash) {
                self.unrecorded
                    .entry(rb.hash.clone())
                    .or_insert_with(|| (rb.name.clone(), editor.map(str::to_string)));
            }
        }
    }

    /// Records the new versions in the journal, then gives every loaded
    /// runbook the editor kept for its version. `warn_unknown`: a version
    /// without an editor is news (it came from a ConfigMap, where the
    /// admission policy should have named one), said once per version.
    pub async fn record(
        &mut self,
        journal: &impl Journal,
        runbooks: &mut RunbookSet,
        warn_unknown: bool,
        now: i64,
    ) {
        for (hash, (name, editor)) in std::mem::take(&mut self.unrecorded) {
            match journal
                .record_runbook_version(&name, &hash, editor.as_deref(), now)
                .await
            {
                Ok(Some(by)) => {
                    tracing::info!(runbook = %name, %hash, editor = %by, "runbook {name}: this version was made by {by}");
                    self.recorded.insert(hash, Some(by));
                }
                Ok(None) => {
                    if warn_unknown {
                        tracing::warn!(runbook = %name, %hash, annotation = CHANGED_BY_ANNOTATION,
                            "runbook {name} changed by an unknown editor (the rules ConfigMap does not name one: is the chart's admission policy off?)");
                    }
                    self.recorded.insert(hash, None);
                }
                Err(error) => {
                    tracing::warn!(runbook = %name, %hash, error = %crate::telemetry::chain(&error),
                        "recording the runbook version failed; its actions name no editor until it is recorded (retried next cycle)");
                    self.unrecorded.insert(hash, (name, editor));
                }
            }
        }
        let known: Vec<(String, String, Option<String>)> = runbooks
            .runbooks()
            .filter_map(|rb| {
                let editor = self.recorded.get(&rb.hash)?;
                (rb.editor != *editor).then(|| (rb.name.clone(), rb.hash.clone(), editor.clone()))
            })
            .collect();
        for (name, hash, editor) in known {
            runbooks.set_editor(&name, &hash, editor);
        }
    }
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
    editors: Editors,
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
            editors: Editors::default(),
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
    /// New versions are recorded in `journal` with their editor.
    #[tracing::instrument(skip_all, fields(source = %self.source))]
    pub async fn refresh(
        &mut self,
        runbooks: &mut RunbookSet,
        specs: &[ValidatedSpec],
        journal: &impl Journal,
        now: i64,
    ) {
        if let Some(snapshot) = self.changed() {
            let editor = snapshot.editor();
            self.load(snapshot, runbooks, specs).await;
            self.editors.loaded(runbooks, editor.as_deref());
        }
        let from_configmap = matches!(self.source, RulesSource::ConfigMap { .. });
        self.editors
            .record(journal, runbooks, from_configmap, now)
            .await;
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
    fn the_editor_of_a_rules_version_is_the_configmaps_annotation() {
        let snapshot = |annotations: Option<BTreeMap<String, String>>| Snapshot {
            sources: Vec::new(),
            configmap: Some(ConfigMap {
                metadata: kube::api::ObjectMeta {
                    annotations,
                    ..Default::default()
                },
                ..Default::default()
            }),
        };
        let one = |k: &str, v: &str| Some([(k.to_string(), v.to_string())].into());
        assert_eq!(
            snapshot(one(CHANGED_BY_ANNOTATION, "alice"))
                .editor()
                .as_deref(),
            Some("alice")
        );
        assert_eq!(snapshot(one(CHANGED_BY_ANNOTATION, "")).editor(), None);
        assert_eq!(snapshot(one("other", "alice")).editor(), None);
        assert_eq!(snapshot(None).editor(), None);
        let folder = Snapshot {
            sources: Vec::new(),
            configmap: None,
        };
        assert_eq!(folder.editor(), None);
    }

    fn cron(note: &str) -> String {
        format!(
            "fn runbook() {{ #{{ trigger: #{{ cron: #{{ schedule: \"0 3 * * *\" }} }} }} }}\nfn decide(ctx) {{ [] }}\n// {note}\n"
        )
    }

    fn editor_of(set: &RunbookSet, name: &str) -> Option<String> {
        set.get(name).expect("loaded").editor.clone()
    }

    /// Each version keeps the editor of the rules version that first
    /// brought it, in the journal: an edit of one runbook does not make its
    /// editor the editor of the others, and a restart changes nothing.
    #[tokio::test]
    async fn each_runbook_version_keeps_the_editor_who_made_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("j.db").display());
        let journal = crate::store::SqlJournal::connect(&url)
            .await
            .expect("journal");
        let mut set = RunbookSet::new(decide::Limits::default());
        let mut editors = Editors::default();
        let mut load =
            async |set: &mut RunbookSet, sources: &[(&str, String)], by: Option<&str>, now| {
                let sources: Sources = sources
                    .iter()
                    .map(|(n, s)| (n.to_string(), s.clone()))
                    .collect();
                assert!(set.load(&sources).is_empty());
                editors.loaded(set, by);
                editors.record(&journal, set, true, now).await;
            };
        load(
            &mut set,
            &[("a", cron("a1")), ("b", cron("b1"))],
            Some("alice"),
            10,
        )
        .await;
        assert_eq!(editor_of(&set, "a").as_deref(), Some("alice"));
        assert_eq!(editor_of(&set, "b").as_deref(), Some("alice"));
        // Bob changes b only.
        load(
            &mut set,
            &[("a", cron("a1")), ("b", cron("b2"))],
            Some("bob"),
            20,
        )
        .await;
        assert_eq!(editor_of(&set, "a").as_deref(), Some("alice"));
        assert_eq!(editor_of(&set, "b").as_deref(), Some("bob"));
        // Someone adds c without the annotation (admission off).
        let all = [("a", cron("a1")), ("b", cron("b2")), ("c", cron("c1"))];
        load(&mut set, &all, None, 30).await;
        assert_eq!(editor_of(&set, "a").as_deref(), Some("alice"));
        assert_eq!(editor_of(&set, "c"), None);
        // b back to the version alice made: hers again.
        load(
            &mut set,
            &[("a", cron("a1")), ("b", cron("b1"))],
            Some("carol"),
            40,
        )
        .await;
        assert_eq!(editor_of(&set, "b").as_deref(), Some("alice"));
        journal.close().await;

        // A restart: the ConfigMap now names its last editor, eve; the
        // journal still knows who made each version.
        let journal = crate::store::SqlJournal::connect(&url)
            .await
            .expect("journal");
        let mut set = RunbookSet::new(decide::Limits::default());
        let mut editors = Editors::default();
        assert!(set.load(&all.map(|(n, s)| (n.to_string(), s))).is_empty());
        editors.loaded(&set, Some("eve"));
        editors.record(&journal, &mut set, true, 50).await;
        assert_eq!(editor_of(&set, "a").as_deref(), Some("alice"));
        assert_eq!(editor_of(&set, "b").as_deref(), Some("bob"));
        assert_eq!(editor_of(&set, "c"), None);
        journal.close().await;
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
