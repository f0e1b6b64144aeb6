//! The release `autopilot sandbox --scenario all` (or `release`) deploys
//! beside its faults, to time a deployment as the seed counts it (10–15
//! minutes): the next patch version of a healthy SagaOrchestrator, set in
//! its `spec.version` as a pipeline would (a part of the world outside the
//! agent, so here in `testenv` and not in `act`, like the simulator's
//! deploy of a bad release), then rolled out by the agent's
//! own controller (a new ReplicaSet, the fake kubelet runs its pods) and
//! soaked (`spec.upgrade.soakSeconds`, 300 by default) until it is the
//! resource's `status.lastGoodVersion`, the version a later rollback goes
//! back to. Nothing is wrong with it: no runbook should act on it.

use anyhow::Context;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};

use crate::crd::{Phase, SagaOrchestrator};

/// The scenario name that asks for the release alone.
pub const NAME: &str = "release";

/// The release and when each of its steps was seen (seconds since the
/// sandbox started).
pub struct Release {
    api: Api<SagaOrchestrator>,
    name: String,
    from: String,
    to: String,
    soak_seconds: i32,
    deployed_at: Option<f64>,
    /// `status.currentVersion` is the new one and the resource is Ready.
    rolled_out_at: Option<f64>,
    /// `status.lastGoodVersion` is the new one.
    last_good_at: Option<f64>,
}

impl Release {
    /// The release of the first SagaOrchestrator in `namespace`, or `None`
    /// when there is none.
    pub async fn pick(client: &kube::Client, namespace: &str) -> anyhow::Result<Option<Self>> {
        let api = Api::<SagaOrchestrator>::namespaced(client.clone(), namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .context("listing SagaOrchestrators for the release")?;
        let Some(saga) = list.items.into_iter().next() else {
            return Ok(None);
        };
        let from = saga.spec.version.clone();
        let to = next_patch(&from)
            .with_context(|| format!("the release: version {from:?} is not x.y.z"))?;
        Ok(Some(Self {
            name: saga.name_any(),
            soak_seconds: saga.spec.upgrade.soak_seconds,
            api,
            from,
            to,
            deployed_at: None,
            rolled_out_at: None,
            last_good_at: None,
        }))
    }

    /// `SagaOrchestrator/<namespace>/<name>`.
    pub fn target(&self) -> String {
        format!(
            "SagaOrchestrator/{}/{}",
            self.api.namespace().unwrap_or_default(),
            self.name
        )
    }

    /// Whether it is deployed already.
    pub fn deployed(&self) -> bool {
        self.deployed_at.is_some()
    }

    /// Sets the new version, as a pipeline would, at `t`.
    pub async fn deploy(&mut self, t: f64) -> anyhow::Result<()> {
        let patch = serde_json::json!({"spec": {"version": self.to}});
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("deploying {} on {}", self.to, self.target()))?;
        self.deployed_at = Some(t);
        println!(
            "[estate] {t:>5.0}s released {} {} -> {} (soak {}s)",
            self.target(),
            self.from,
            self.to,
            self.soak_seconds
        );
        Ok(())
    }

    /// Reads the resource's status at `t` and notes the steps it shows.
    pub async fn observe(&mut self, t: f64) -> anyhow::Result<()> {
        if self.deployed_at.is_none() || self.last_good_at.is_some() {
            return Ok(());
        }
        let saga = self
            .api
            .get_status(&self.name)
            .await
            .with_context(|| format!("reading {}", self.target()))?;
        let Some(status) = saga.status else {
            return Ok(());
        };
        let current = status.current_version.as_deref() == Some(&self.to);
        if self.rolled_out_at.is_none() && current && status.phase == Phase::Ready {
            self.rolled_out_at = Some(t);
            println!(
                "[estate] {t:>5.0}s {} rolled out {}; soaking",
                self.target(),
                self.to
            );
        }
        if status.last_good_version.as_deref() == Some(&self.to) {
            self.last_good_at = Some(t);
            println!(
                "[estate] {t:>5.0}s {} {} is the last good version",
                self.target(),
                self.to
            );
        }
        Ok(())
    }

    /// Played out: the new version is the last good one.
    pub fn done(&self) -> bool {
        self.last_good_at.is_some()
    }

    /// The release's row, in the columns of the scenario table.
    pub fn row(&self) -> String {
        let after = |at: Option<f64>| match (at, self.deployed_at) {
            (Some(a), Some(d)) => format!("+{:.0}s", (a - d).max(0.0)),
            _ => "-".into(),
        };
        format!(
            "{:<24} {:<9} {:<14} {:<8} {:<34} {:<10} {:<10} {}\n",
            "release",
            self.deployed_at.map_or("-".into(), |d| format!("{d:.0}s")),
            "-",
            after(self.rolled_out_at),
            format!("{} -> {} rolled out", self.from, self.to),
            after(self.last_good_at),
            "-",
            "deployment 10-15 min",
        )
    }

    /// What the row's columns mean for it.
    pub fn legend(&self) -> String {
        format!(
            "(release: ACTION is the rollout by the agent's controller, RECOVERED the version \
             last good after its {}s soak)",
            self.soak_seconds
        )
    }
}

/// `x.y.(z+1)` of a version `x.y.z`.
fn next_patch(version: &str) -> Option<String> {
    let mut parts: Vec<u64> = version
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if parts.len() != 3 {
        return None;
    }
    parts[2] += 1;
    Some(format!("{}.{}.{}", parts[0], parts[1], parts[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_patch_version() {
        assert_eq!(next_patch("1.4.2").as_deref(), Some("1.4.3"));
        assert_eq!(next_patch("1.4.99").as_deref(), Some("1.4.100"));
        assert_eq!(next_patch("1.4"), None);
        assert_eq!(next_patch("1.4.2-rc1"), None);
    }
}
