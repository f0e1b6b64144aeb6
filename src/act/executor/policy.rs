//! Where the gate gets the guard policy for a write: the `AutopilotPolicy`
//! in the agent's namespace, read again for every send and failing closed
//! (missing or invalid is an error, never "defaults, kill switch off"), or a
//! fixed policy for tests and replays.

use kube::{Api, Client};

use crate::act::guard::{POLICY_NAME, Policy};

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading AutopilotPolicy {namespace}/{name} failed")]
    FetchPolicy {
        namespace: String,
        name: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "AutopilotPolicy {namespace}/{name} does not exist: nothing is sent until it does (the chart installs it; `kubectl -n {namespace} apply -f` one with `spec: {{}}` for the defaults)"
    )]
    MissingPolicy {
        namespace: String,
        name: &'static str,
    },
    #[error("AutopilotPolicy {namespace}/{name} is not used: {source}")]
    ReadPolicy {
        namespace: String,
        name: &'static str,
        #[source]
        source: crate::act::guard::Error,
    },
}

impl PolicyError {
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::FetchPolicy { .. } => "fetch_policy",
            PolicyError::MissingPolicy { .. } => "missing_policy",
            PolicyError::ReadPolicy { source, .. } => source.kind(),
        }
    }
}

/// Reads the guard policy, the `AutopilotPolicy` [`POLICY_NAME`] in
/// `namespace`. Fails closed: a policy that does not exist, or does not
/// validate, is an error, not "defaults, kill switch off" (`spec: {}` gives
/// the defaults).
pub async fn fetch_policy(client: &Client, namespace: &str) -> Result<Policy, PolicyError> {
    fetch_policy_object(client, namespace).await.map(|p| p.spec)
}

/// [`fetch_policy`], with the object's metadata (who changed it, its
/// version).
pub async fn fetch_policy_object(
    client: &Client,
    namespace: &str,
) -> Result<crate::crd::AutopilotPolicy, PolicyError> {
    let found = Api::<crate::crd::AutopilotPolicy>::namespaced(client.clone(), namespace)
        .get_opt(POLICY_NAME)
        .await
        .map_err(|source| PolicyError::FetchPolicy {
            namespace: namespace.into(),
            name: POLICY_NAME,
            source,
        })?;
    let policy = found.ok_or_else(|| PolicyError::MissingPolicy {
        namespace: namespace.into(),
        name: POLICY_NAME,
    })?;
    policy
        .spec
        .validate()
        .map_err(|source| PolicyError::ReadPolicy {
            namespace: namespace.into(),
            name: POLICY_NAME,
            source,
        })?;
    Ok(policy)
}

/// Where the gate gets the policy for a write. The agent and the CLI read
/// the cluster's on every send ([`ClusterPolicy`]), so a kill switch turned
/// on a moment ago stops the next write; a fixed [`Policy`] serves tests
/// and replays.
pub trait PolicySource: Sync {
    fn current(&self) -> impl std::future::Future<Output = Result<Policy, PolicyError>> + Send;
}

impl PolicySource for Policy {
    async fn current(&self) -> Result<Policy, PolicyError> {
        Ok(self.clone())
    }
}

/// The `AutopilotPolicy` in the agent's namespace, read again on every call.
#[derive(Clone)]
pub struct ClusterPolicy {
    pub client: Client,
    pub namespace: String,
}

impl PolicySource for ClusterPolicy {
    async fn current(&self) -> Result<Policy, PolicyError> {
        fetch_policy(&self.client, &self.namespace).await
    }
}
