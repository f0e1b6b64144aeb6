//! Where the agent may act: an allow-list of namespaces (empty: every
//! namespace) and the hands-off label that takes a namespace or a single
//! resource out of its hands.
//!
//! One value for the whole process: the controllers watch only these
//! namespaces (one watch each, so a scoped install needs Roles, not a
//! ClusterRole), the observe loop reads only them, and the executor refuses
//! and journals any intent on a target outside them, at planning and again
//! at send. Pure: labels come in as values.

use std::collections::BTreeMap;

/// The label that puts a namespace, or one resource, hands-off: the agent
/// decides nothing on it and its controllers hold automatic rollbacks.
/// Any value but `"false"` counts, so a typo errs on the side of hands-off.
pub const HANDS_OFF_LABEL: &str = "autopilot.payments.io/hands-off";

/// The namespaces the agent may watch and act in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Sorted, deduplicated; empty means every namespace.
    namespaces: Vec<String>,
}

impl Scope {
    /// Every namespace (a cluster-wide install).
    pub fn all() -> Self {
        Self::default()
    }

    /// Only these namespaces; blank names are dropped, so an empty list is
    /// [`Scope::all`].
    pub fn namespaces<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut namespaces: Vec<String> = names
            .into_iter()
            .map(Into::into)
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        Self { namespaces }
    }

    /// True when every namespace is in scope.
    pub fn is_all(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// The allowed namespaces, sorted; empty for [`Scope::all`]. Watches
    /// are opened one per entry (or one cluster-wide watch when empty).
    pub fn list(&self) -> &[String] {
        &self.namespaces
    }

    /// Whether `namespace` is in the allow-list.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.is_all() || self.namespaces.iter().any(|n| n == namespace)
    }

    /// Judges one target: its namespace against the allow-list, then the
    /// hands-off label on its namespace and on the object itself. `None`
    /// labels mean "not read" and are treated as no label: callers that
    /// must fail closed read them first.
    pub fn check(
        &self,
        namespace: &str,
        namespace_labels: Option<&BTreeMap<String, String>>,
        object_labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), OutOfScope> {
        if !self.allows_namespace(namespace) {
            return Err(OutOfScope::Namespace {
                namespace: namespace.to_string(),
                allowed: self.namespaces.clone(),
            });
        }
        if hands_off(namespace_labels) {
            return Err(OutOfScope::HandsOffNamespace {
                namespace: namespace.to_string(),
            });
        }
        if hands_off(object_labels) {
            return Err(OutOfScope::HandsOffObject);
        }
        Ok(())
    }

    /// For `--help` and logs: `all namespaces` or the comma-separated list.
    pub fn describe(&self) -> String {
        if self.is_all() {
            "all namespaces".into()
        } else {
            self.namespaces.join(",")
        }
    }
}

/// True when the labels carry [`HANDS_OFF_LABEL`] with any value but
/// `"false"`.
pub fn hands_off(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(HANDS_OFF_LABEL))
        .is_some_and(|v| v.trim() != "false")
}

/// Why a target is outside the agent's scope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutOfScope {
    #[error("namespace {namespace} is not in the agent's scope ({})", allowed.join(","))]
    Namespace {
        namespace: String,
        allowed: Vec<String>,
    },
    #[error("namespace {namespace} is labelled {HANDS_OFF_LABEL}")]
    HandsOffNamespace { namespace: String },
    #[error("the target is labelled {HANDS_OFF_LABEL}")]
    HandsOffObject,
}

impl OutOfScope {
    /// The guard name journaled for a refusal (`scope` or `hands_off`).
    pub fn guard(&self) -> &'static str {
        match self {
            OutOfScope::Namespace { .. } => "scope",
            OutOfScope::HandsOffNamespace { .. } | OutOfScope::HandsOffObject => "hands_off",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Labels from pairs (also for other modules' tests of the scope).
    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_list_is_every_namespace() {
        let s = Scope::namespaces(["", "  "]);
        assert!(s.is_all());
        assert!(s.allows_namespace("kube-system"));
        assert_eq!(s.describe(), "all namespaces");
    }

    #[test]
    fn a_list_allows_only_its_namespaces() {
        let s = Scope::namespaces(["pay", "clearing", "pay"]);
        assert_eq!(s.list(), ["clearing", "pay"]);
        assert!(s.allows_namespace("pay"));
        assert!(!s.allows_namespace("kube-system"));
        let err = s
            .check("kube-system", None, None)
            .expect_err("out of scope");
        assert_eq!(err.guard(), "scope");
        assert_eq!(
            err.to_string(),
            "namespace kube-system is not in the agent's scope (clearing,pay)"
        );
    }

    #[test]
    fn the_hands_off_label_on_a_namespace_or_an_object_refuses() {
        let s = Scope::all();
        let off = labels(&[(HANDS_OFF_LABEL, "true")]);
        let on = labels(&[(HANDS_OFF_LABEL, "false"), ("team", "pay")]);
        assert_eq!(
            s.check("pay", Some(&off), None)
                .expect_err("hands-off namespace"),
            OutOfScope::HandsOffNamespace {
                namespace: "pay".into()
            }
        );
        assert_eq!(
            s.check("pay", Some(&on), Some(&off))
                .expect_err("hands-off object"),
            OutOfScope::HandsOffObject
        );
        assert_eq!(s.check("pay", Some(&on), Some(&on)), Ok(()));
        // Any other value, even a typo, is hands-off.
        assert!(hands_off(Some(&labels(&[(HANDS_OFF_LABEL, "ture")]))));
        assert!(!hands_off(None));
    }
}
