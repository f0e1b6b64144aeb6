//! The registry of kinds: every Kubernetes kind the agent reconciles or acts
//! on, with its API coordinates, and for our own `payments.io` kinds the
//! objects their controller owns. It is the one list: the CRDs
//! (`crd::crds`), the controllers (`reconcile::run`), the executor's API
//! lookups (`act::action::kind_info`), the RBAC the controllers need
//! ([`controller_rbac`]) and the chart test all derive from it, so a kind is
//! added here once.
//!
//! Pure data: no client, no I/O, and no dependency on the modules that use it.

use serde::{Deserialize, Serialize};

/// Our own kinds, reconciled by this program. Matched exhaustively where a
/// kind needs code (its CRD, its controller), so a new one fails to compile
/// until it has both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PaymentsKind {
    PaymentGateway,
    ClearingAdapter,
    BatchProcessor,
    SagaOrchestrator,
}

/// An object a payments kind's controller creates and owns (controller
/// ownerReference to the CR), watched so drift and deletion wake it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owned {
    Deployment,
    Service,
    ConfigMap,
    HorizontalPodAutoscaler,
    ServiceMonitor,
    NetworkPolicy,
    CronJob,
    Job,
}

impl Owned {
    /// API group and plural, for RBAC.
    pub const fn api(self) -> (&'static str, &'static str) {
        match self {
            Owned::Deployment => ("apps", "deployments"),
            Owned::Service => ("", "services"),
            Owned::ConfigMap => ("", "configmaps"),
            Owned::HorizontalPodAutoscaler => ("autoscaling", "horizontalpodautoscalers"),
            Owned::ServiceMonitor => ("monitoring.coreos.com", "servicemonitors"),
            Owned::NetworkPolicy => ("networking.k8s.io", "networkpolicies"),
            Owned::CronJob => ("batch", "cronjobs"),
            Owned::Job => ("batch", "jobs"),
        }
    }

    /// Whether a controller deletes it when the spec no longer asks for it
    /// (`act::owned::Desired::Absent`): an HPA once autoscaling is off, a
    /// ServiceMonitor once monitoring is. Only these get RBAC `delete`;
    /// everything else owned is collected through its ownerReference.
    pub const fn deleted_when_unwanted(self) -> bool {
        match self {
            Owned::HorizontalPodAutoscaler | Owned::ServiceMonitor => true,
            Owned::Deployment
            | Owned::Service
            | Owned::ConfigMap
            | Owned::NetworkPolicy
            | Owned::CronJob
            | Owned::Job => false,
        }
    }
}

/// A kind the agent knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// Set for our own kinds: which one, and what its controller owns.
    pub payments: Option<Payments>,
}

/// What makes a `payments.io` kind ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payments {
    pub id: PaymentsKind,
    /// Every object kind the controller may create; each is watched.
    pub owns: &'static [Owned],
}

const fn operator(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        payments: None,
    }
}

const fn ours(
    id: PaymentsKind,
    kind: &'static str,
    plural: &'static str,
    owns: &'static [Owned],
) -> Kind {
    Kind {
        group: crate::crd::GROUP,
        version: "v1",
        kind,
        plural,
        payments: Some(Payments { id, owns }),
    }
}

/// Every kind, ours first.
pub const KINDS: &[Kind] = &[
    ours(
        PaymentsKind::PaymentGateway,
        "PaymentGateway",
        "paymentgateways",
        &[
            Owned::Deployment,
            Owned::Service,
            Owned::ConfigMap,
            Owned::HorizontalPodAutoscaler,
            Owned::ServiceMonitor,
        ],
    ),
    ours(
        PaymentsKind::ClearingAdapter,
        "ClearingAdapter",
        "clearingadapters",
        &[
            Owned::Deployment,
            Owned::Service,
            Owned::ConfigMap,
            Owned::NetworkPolicy,
        ],
    ),
    ours(
        PaymentsKind::BatchProcessor,
        "BatchProcessor",
        "batchprocessors",
        &[Owned::CronJob, Owned::Job],
    ),
    ours(
        PaymentsKind::SagaOrchestrator,
        "SagaOrchestrator",
        "sagaorchestrators",
        &[Owned::Deployment, Owned::Service, Owned::ConfigMap],
    ),
    operator("postgresql.cnpg.io", "v1", "Cluster", "clusters"),
    operator("postgresql.cnpg.io", "v1", "Backup", "backups"),
    operator("kafka.strimzi.io", "v1", "KafkaNodePool", "kafkanodepools"),
    operator("cert-manager.io", "v1", "Certificate", "certificates"),
    operator(
        "external-secrets.io",
        "v1",
        "ExternalSecret",
        "externalsecrets",
    ),
    operator(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
    ),
    operator("argoproj.io", "v1alpha1", "Application", "applications"),
    operator(
        "app.redislabs.com",
        "v1",
        "RedisEnterpriseCluster",
        "redisenterpriseclusters",
    ),
    operator(
        "app.redislabs.com",
        "v1alpha1",
        "RedisEnterpriseDatabase",
        "redisenterprisedatabases",
    ),
];

/// The registry entry of `kind` (by its Kubernetes kind name).
pub fn find(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// Our kinds, in registry order.
pub fn payments() -> impl Iterator<Item = (&'static Kind, Payments)> {
    KINDS.iter().filter_map(|k| k.payments.map(|p| (k, p)))
}

/// The registry entry of one of our kinds.
pub fn of(id: PaymentsKind) -> &'static Kind {
    // Every PaymentsKind has an entry; a test walks them.
    payments()
        .find(|(_, p)| p.id == id)
        .map(|(k, _)| k)
        .unwrap_or(&KINDS[0])
}

/// Names of our kinds (`PaymentGateway`, …).
pub fn payments_kind_names() -> impl Iterator<Item = &'static str> {
    payments().map(|(k, _)| k.kind)
}

/// The API coordinates of a kind, owned, as journaled in an action's change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
}

impl KindInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The dynamic API resource, for `Api::*_with` and watches.
    pub fn api_resource(&self) -> kube::api::ApiResource {
        kube::api::ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: self.api_version(),
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }
}

impl From<&Kind> for KindInfo {
    fn from(k: &Kind) -> Self {
        Self {
            group: k.group.into(),
            version: k.version.into(),
            kind: k.kind.into(),
            plural: k.plural.into(),
        }
    }
}

/// The API coordinates of a kind the agent acts on.
pub fn kind_info(kind: &str) -> Option<KindInfo> {
    find(kind).map(KindInfo::from)
}

/// One RBAC rule: verbs on a resource of an API group.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RbacRule {
    pub group: String,
    pub resource: String,
    pub verbs: Vec<&'static str>,
}

impl RbacRule {
    pub fn new(group: &str, resource: &str, verbs: &[&'static str]) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
            verbs: verbs.to_vec(),
        }
    }
}

/// What the controllers need, derived from the registry, and no more: read,
/// watch and patch our kinds (the patch is for runbook actions and
/// approvals), patch their status, update their finalizers (the owned
/// objects' `blockOwnerDeletion` asks for it where
/// OwnerReferencesPermissionEnforcement is on), create and server-side apply
/// every object kind they own (never a PUT), delete only those a spec can
/// turn off ([`Owned::deleted_when_unwanted`]), and publish Events.
pub fn controller_rbac() -> Vec<RbacRule> {
    const OWNED_VERBS: &[&str] = &["get", "list", "watch", "create", "patch"];
    const DELETED_VERBS: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
    let mut rules = Vec::new();
    for (k, p) in payments() {
        rules.push(RbacRule::new(
            k.group,
            k.plural,
            &["get", "list", "watch", "patch"],
        ));
        rules.push(RbacRule::new(
            k.group,
            &format!("{}/status", k.plural),
            &["get", "patch"],
        ));
        rules.push(RbacRule::new(
            k.group,
            &format!("{}/finalizers", k.plural),
            &["update"],
        ));
        for o in p.owns {
            let (group, plural) = o.api();
            let verbs = if o.deleted_when_unwanted() {
                DELETED_VERBS
            } else {
                OWNED_VERBS
            };
            rules.push(RbacRule::new(group, plural, verbs));
        }
    }
    rules.push(RbacRule::new(
        "events.k8s.io",
        "events",
        &["create", "patch"],
    ));
    rules.sort();
    rules.dedup();
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_every_payments_kind_has_an_entry() {
        let mut names: Vec<_> = KINDS.iter().map(|k| k.kind).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len(), "a kind listed twice");
        for id in [
            PaymentsKind::PaymentGateway,
            PaymentsKind::ClearingAdapter,
            PaymentsKind::BatchProcessor,
            PaymentsKind::SagaOrchestrator,
        ] {
            let k = of(id);
            assert_eq!(k.payments.map(|p| p.id), Some(id), "{id:?}");
            assert_eq!(k.group, crate::crd::GROUP);
        }
        assert_eq!(payments().count(), 4);
    }

    #[test]
    fn kind_info_carries_the_api_version() {
        let k = kind_info("Application").expect("registered");
        assert_eq!(k.api_version(), "argoproj.io/v1alpha1");
        assert_eq!(k.api_resource().plural, "applications");
        assert!(kind_info("Secret").is_none());
    }

    #[test]
    fn controller_rbac_covers_every_owned_kind_and_status() {
        let rules = controller_rbac();
        let has = |g: &str, r: &str, v: &str| {
            rules
                .iter()
                .any(|x| x.group == g && x.resource == r && x.verbs.contains(&v))
        };
        for (k, p) in payments() {
            assert!(has(k.group, &format!("{}/status", k.plural), "patch"));
            for o in p.owns {
                let (g, r) = o.api();
                assert!(has(g, r, "create") && has(g, r, "patch"), "{o:?}");
                assert_eq!(has(g, r, "delete"), o.deleted_when_unwanted(), "{o:?}");
                assert!(!has(g, r, "update"), "{o:?}: applied, never PUT");
            }
        }
        assert!(has("events.k8s.io", "events", "create"));
    }
}
