//! Watched copies of the resources the agent reads every cycle.
//!
//! The loop needs, each cycle, the components of every kind a model scores
//! and the resources its runbooks decide on. Listing them again every cycle
//! costs the API server a LIST per kind per cycle; instead each kind gets
//! reflectors (`kube::runtime::reflector`) on first use, and a cycle reads
//! their stores: one cluster-wide reflector per kind, or, for an agent
//! scoped to namespaces, one per kind and allowed namespace, so a scoped
//! agent reads with Roles in its namespaces and never sees the others.
//! (A cluster-scoped kind cannot be read by a scoped agent.)
//!
//! A store is only as good as its watch. A kind is readable once the
//! initial list of each of its watches has completed and while none has
//! failed. A watch that failed is dropped and started afresh (a new list) on
//! the next read, so a kind reads either as a complete, current copy of the
//! scope or as an error that gives the runbooks missing data, never as a
//! stale or partial copy presented as current.
//!
//! A replay reads the same way from a fixed list of objects (a snapshot
//! file) or from nothing at all, in which case every kind is an error that
//! says so.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde_json::{Value, json};

use crate::{detect::ComponentId, scope::Scope};

/// How long the first read of a kind waits for its initial list.
const FIRST_SYNC: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("watching {kind} objects: {reason}")]
    Watch { kind: String, reason: String },
    #[error("watching {kind} objects: the initial list has not completed")]
    NotSynced { kind: String },
    #[error("reading {kind} objects: {reason}")]
    Unavailable { kind: String, reason: String },
}

impl Error {
    /// Fixed category for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Watch { .. } => "watch",
            Error::NotSynced { .. } => "not_synced",
            Error::Unavailable { .. } => "unavailable",
        }
    }
}

#[derive(Default)]
struct State {
    /// The initial list has completed at least once.
    synced: bool,
    /// The watch failed with this error; the copy is not trusted after it.
    error: Option<String>,
}

struct Watched {
    store: Store<DynamicObject>,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watched {
    fn synced(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.synced)
    }

    fn error(&self) -> Option<String> {
        match self.state.lock() {
            Ok(s) => s.error.clone(),
            Err(_) => Some("the watch task panicked".into()),
        }
    }

    fn failed(&self) -> bool {
        self.error().is_some()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A watch: its kind (`apiVersion`, `kind`) and namespace (`None`: all).
type Key = (String, String, Option<String>);

/// One reflector per kind (per kind and namespace when scoped), started on
/// first use and kept while the cache lives.
pub struct ResourceCache {
    source: Source,
    scope: Scope,
    watched: HashMap<Key, Watched>,
}

/// Where the objects come from.
enum Source {
    /// Watches through this client.
    Watch(Client),
    /// These objects (JSON with `apiVersion` and `kind`), as they are.
    Fixed(Vec<Value>),
    /// Nowhere: every read fails with this reason.
    Unavailable(String),
}

impl ResourceCache {
    /// A cache of the namespaces in `scope`.
    pub fn new(client: Client, scope: Scope) -> Self {
        Self {
            source: Source::Watch(client),
            scope,
            watched: HashMap::new(),
        }
    }

    /// Fixed `objects` (a replay's snapshot file): a kind reads as the
    /// objects of its `apiVersion` and `kind` in `scope`, none if absent.
    pub fn fixed(objects: Vec<Value>, scope: Scope) -> Self {
        Self {
            source: Source::Fixed(objects),
            scope,
            watched: HashMap::new(),
        }
    }

    /// No source at all: every read is an error saying `reason`.
    pub fn unavailable(reason: impl Into<String>, scope: Scope) -> Self {
        Self {
            source: Source::Unavailable(reason.into()),
            scope,
            watched: HashMap::new(),
        }
    }

    /// The namespaces this cache reads.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Watches open so far.
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// The objects of `resource` in the scope, keyed by component, as JSON
    /// with `apiVersion` and `kind` set. An error when the kind cannot be
    /// read: a watch of it is failing (a CRD not installed, RBAC, the API
    /// server down) or has never finished listing.
    pub async fn snapshot(
        &mut self,
        resource: &ApiResource,
    ) -> Result<BTreeMap<ComponentId, Value>, Error> {
        let client = match &self.source {
            Source::Watch(client) => client.clone(),
            Source::Fixed(objects) => return Ok(fixed(objects, resource, &self.scope)),
            Source::Unavailable(reason) => {
                return Err(Error::Unavailable {
                    kind: resource.kind.clone(),
                    reason: reason.clone(),
                });
            }
        };
        let namespaces: Vec<Option<String>> = if self.scope.is_all() {
            vec![None]
        } else {
            self.scope.list().iter().cloned().map(Some).collect()
        };
        let keys: Vec<Key> = namespaces
            .into_iter()
            .map(|ns| (resource.api_version.clone(), resource.kind.clone(), ns))
            .collect();
        let mut started = Vec::new();
        for key in &keys {
            if self.watched.get(key).is_some_and(Watched::failed) {
                // Start over: a fresh list rather than a copy that missed events.
                self.watched.remove(key);
            }
            if !self.watched.contains_key(key) {
                let w = start(&client, resource, key.2.as_deref());
                self.watched.insert(key.clone(), w);
                started.push(key.clone());
            }
        }
        // New watches are waited for (bounded, together): their initial
        // lists or their errors.
        let _ = tokio::time::timeout(FIRST_SYNC, async {
            while started
                .iter()
                .filter_map(|k| self.watched.get(k))
                .any(|w| !w.synced() && !w.failed())
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let mut out = BTreeMap::new();
        for key in &keys {
            let w = &self.watched[key];
            if let Some(reason) = w.error() {
                return Err(Error::Watch {
                    kind: resource.kind.clone(),
                    reason,
                });
            }
            if !w.synced() {
                return Err(Error::NotSynced {
                    kind: resource.kind.clone(),
                });
            }
            // A cluster-wide watch of a sharded agent sees every shard's
            // objects: only its own are its to decide on.
            let scope = &self.scope;
            out.extend(
                w.store
                    .state()
                    .iter()
                    .filter(|o| {
                        scope.allows_namespace(o.metadata.namespace.as_deref().unwrap_or_default())
                    })
                    .map(|o| {
                        let id = ComponentId {
                            kind: resource.kind.clone(),
                            namespace: o.metadata.namespace.clone().unwrap_or_default(),
                            name: o.metadata.name.clone().unwrap_or_default(),
                        };
                        let mut value = serde_json::to_value(o.as_ref()).unwrap_or(Value::Null);
                        value["apiVersion"] = json!(resource.api_version);
                        value["kind"] = json!(resource.kind);
                        (id, value)
                    }),
            );
        }
        Ok(out)
    }
}

/// The objects of `resource` among `objects`, in `scope`.
fn fixed(objects: &[Value], resource: &ApiResource, scope: &Scope) -> BTreeMap<ComponentId, Value> {
    objects
        .iter()
        .filter(|o| {
            o["apiVersion"] == resource.api_version.as_str() && o["kind"] == resource.kind.as_str()
        })
        .filter_map(|o| {
            let id = ComponentId {
                kind: resource.kind.clone(),
                namespace: o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                name: o["metadata"]["name"].as_str()?.to_string(),
            };
            scope
                .allows_namespace(&id.namespace)
                .then(|| (id, o.clone()))
        })
        .collect()
}

/// Starts a reflector on `resource` (in `namespace`, or all).
fn start(client: &Client, resource: &ApiResource, namespace: Option<&str>) -> Watched {
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let state = Arc::new(Mutex::new(State::default()));
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    // Slimmed before they are kept: the loop reads specs and status, and a
    // copy of each object's managed fields per component was most of it.
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .modify(|o| crate::reconcile::watch::slim(&mut o.metadata)),
    );
    let kind = resource.kind.clone();
    let shared = state.clone();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            let Ok(mut s) = shared.lock() else { return };
            match item {
                Ok(watcher::Event::InitDone) => s.synced = true,
                Ok(_) => {}
                Err(error) => {
                    let reason = crate::telemetry::chain(&error);
                    // The reader reports it (once per outage, in the loop).
                    tracing::debug!(%kind, error = %reason, "watch failed; it is listed afresh on the next read");
                    s.error = Some(reason);
                    // This copy is no longer trusted; the next read starts a new one.
                    return;
                }
            }
        }
        // A watcher does not end on its own; if it does, stop trusting it.
        if let Ok(mut s) = shared.lock() {
            s.error = Some("the watch ended".into());
        }
    });
    Watched { store, state, task }
}
