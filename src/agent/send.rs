//! Step 5 of a cycle: hand the proposals to the executor under the guard
//! policy read this cycle, apply the approvals annotated on targets, and
//! verify earlier actions against the latest values.
//!
//! The loop's only path to a change: everything here goes through `act`'s
//! executor, which journals, guards and writes. This module must not decide
//! anything nor write to the cluster itself; it logs what the executor did
//! and returns it. A driver that must not act (a replay) replaces this step.

use std::collections::{BTreeMap, BTreeSet};

use super::{evaluate::pin_new_versions, metrics::Metrics};
use crate::{
    act::{
        executor::{
            self, Executed, Executor, PolicyError, PolicySource, Proposal, fetch_policy_object,
        },
        journal::Journal,
        verify::Verification,
    },
    crd::{AutopilotPolicy, CHANGED_BY_ANNOTATION},
    decide::Mode,
};

/// The guard policy as it is now (the object: its spec, and who changed
/// it). Without it nothing is sent this cycle. `failing` is the kind of
/// last cycle's read error, if any: an ERROR line when a failure starts or
/// changes kind, or when it holds proposals back; a quiet cycle of the same
/// failure logs at debug (the read-error counter still counts every
/// cycle), and the end of one is told at info.
#[tracing::instrument(skip_all, fields(namespace = %namespace, proposals = proposals))]
pub async fn fetch_guard_policy(
    client: &kube::Client,
    namespace: &str,
    proposals: usize,
    metrics: &Metrics,
    failing: &mut Option<&'static str>,
) -> Result<AutopilotPolicy, PolicyError> {
    let policy = fetch_policy_object(client, namespace).await;
    match &policy {
        Ok(p) => {
            metrics.kill_switch.set(i64::from(p.spec.kill_switch));
            if failing.take().is_some() {
                tracing::info!("the guard policy is read again; sending resumes");
            }
        }
        Err(error) => {
            metrics
                .read_errors
                .with_label_values(&["policy", error.kind()])
                .inc();
            let error_text = crate::telemetry::chain(error);
            if policy_failure_is_news(proposals, *failing, error.kind()) {
                tracing::error!(error = %error_text, proposals, "reading the guard policy failed; nothing is sent this cycle");
            } else {
                tracing::debug!(error = %error_text, "the guard policy still cannot be read; nothing is sent");
            }
            *failing = Some(error.kind());
        }
    }
    policy
}

/// Whether a failed read of the guard policy is worth an ERROR line: it
/// holds proposals back, or it starts (or changes kind) this cycle.
fn policy_failure_is_news(proposals: usize, failing: Option<&str>, kind: &str) -> bool {
    proposals > 0 || failing != Some(kind)
}

/// What to say about `policy` when it is a version not seen before (`seen`
/// holds the resourceVersion read last, and is updated): who changed it
/// (its [`CHANGED_BY_ANNOTATION`], which the chart's admission policy holds
/// equal to the user who wrote it) and what its kill switch is.
pub fn policy_change_note(seen: &mut Option<String>, policy: &AutopilotPolicy) -> Option<String> {
    let version = policy.metadata.resource_version.clone();
    if version.is_some() && *seen == version {
        return None;
    }
    *seen = version;
    let editor = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CHANGED_BY_ANNOTATION))
        .filter(|e| !e.is_empty())
        .map_or("an unknown editor", String::as_str);
    let kill_switch = if policy.spec.kill_switch { "on" } else { "off" };
    Some(format!(
        "AutopilotPolicy last changed by {editor}; kill switch {kill_switch}"
    ))
}

/// Before the send, in auto mode: the proposals of a runbook version with
/// fewer approved-and-applied actions than the policy's
/// `newRunbookApprovals` are lowered to recommend mode
/// ([`pin_new_versions`]), on the counts the journal gives now; a version
/// the journal cannot count only recommends.
#[tracing::instrument(skip_all, fields(required = required))]
pub async fn pin_new_runbook_versions<J: Journal>(
    journal: &J,
    required: u32,
    proposals: &mut [Proposal],
) {
    if required == 0 {
        return;
    }
    let versions: BTreeSet<&str> = proposals
        .iter()
        .filter(|p| p.mode == Mode::Auto)
        .map(|p| p.runbook_hash.as_str())
        .collect();
    let mut approved = BTreeMap::new();
    for hash in versions {
        match journal.approved_count(hash).await {
            Ok(n) => {
                approved.insert(hash.to_string(), n);
            }
            Err(error) => {
                tracing::warn!(%hash, error = %crate::telemetry::chain(&error), "counting the approved actions of a runbook version failed; it only recommends this cycle")
            }
        }
    }
    if pin_new_versions(proposals, required, &approved) == 0 {
        return;
    }
    let mut said = BTreeSet::new();
    for p in proposals.iter() {
        if let Some(note) = &p.mode_note
            && said.insert(&p.runbook_hash)
        {
            tracing::info!(runbook = %p.intent.runbook, hash = %p.runbook_hash, editor = p.runbook_editor.as_deref().unwrap_or("unknown"), %note, "runbook version not trusted yet: recommending");
        }
    }
}

/// Sends the cycle's proposals as one batch (none: no batch at all).
#[tracing::instrument(skip_all, fields(proposals = proposals.len(), executed))]
pub async fn send_proposals<J: Journal>(
    executor: &Executor<J>,
    proposals: &[Proposal],
    policy: &impl PolicySource,
    now: i64,
) -> Result<Vec<Executed>, executor::Error> {
    if proposals.is_empty() {
        return Ok(Vec::new());
    }
    match executor.run_batch(proposals, policy, now).await {
        Ok(done) => {
            for e in &done {
                if e.repeat {
                    tracing::debug!(id = e.id, outcome = %e.outcome, detail = %e.detail, "action repeated (not journaled again)");
                } else {
                    tracing::info!(id = e.id, outcome = %e.outcome, detail = %e.detail, "action");
                }
            }
            tracing::Span::current().record("executed", done.len());
            Ok(done)
        }
        Err(error) => {
            tracing::error!(error = %crate::telemetry::chain(&error), "running the cycle's actions failed");
            Err(error)
        }
    }
}

/// Applies the Approvals people created (`act::executor` `review`).
#[tracing::instrument(skip_all)]
pub async fn apply_approvals<J: Journal>(
    executor: &Executor<J>,
    policy: &impl PolicySource,
    now: i64,
) {
    if let Err(error) = executor.apply_approvals(policy, now).await {
        tracing::warn!(error = %crate::telemetry::chain(&error), "applying approvals failed");
    }
}

/// Verifies the actions applied earlier against `latest` (see
/// `evaluate::latest_values`); a failed one is undone by its inverse.
#[tracing::instrument(name = "verify", skip_all, fields(values = latest.len(), verdicts))]
pub async fn verify_applied<J: Journal>(
    executor: &Executor<J>,
    latest: &BTreeMap<(String, String), f64>,
    policy: &impl PolicySource,
    now: i64,
) {
    let verdicts = executor
        .verify_applied(policy, now, |target, signal| {
            latest
                .get(&(target.to_string(), signal.to_string()))
                .copied()
        })
        .await;
    match verdicts {
        Ok(v) => {
            tracing::Span::current().record("verdicts", v.len());
            for (id, verdict) in v {
                match verdict {
                    // Asked every cycle until the deadline: not news.
                    Verification::Pending => tracing::debug!(id, "verification pending"),
                    Verification::Passed(detail) => {
                        tracing::info!(id, %detail, "verification passed")
                    }
                    Verification::Failed(detail) => {
                        tracing::warn!(id, %detail, "verification failed; undone by its inverse where it has one")
                    }
                    Verification::NoData(detail) => {
                        tracing::warn!(id, %detail, "verification had no data; left as is")
                    }
                }
            }
        }
        Err(error) => {
            tracing::warn!(error = %crate::telemetry::chain(&error), "verifying applied actions failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_policy_is_an_error_once_per_episode_and_whenever_it_holds_proposals_back() {
        assert!(
            policy_failure_is_news(0, None, "missing_policy"),
            "it starts"
        );
        assert!(!policy_failure_is_news(
            0,
            Some("missing_policy"),
            "missing_policy"
        ));
        assert!(policy_failure_is_news(
            2,
            Some("missing_policy"),
            "missing_policy"
        ));
        assert!(policy_failure_is_news(
            0,
            Some("fetch_policy"),
            "missing_policy"
        ));
    }

    #[test]
    fn a_policy_version_is_told_once_with_its_editor_and_kill_switch() {
        let policy = |version: &str, editor: Option<&str>, kill_switch: bool| {
            let mut p = AutopilotPolicy::new(
                "autopilot",
                crate::act::guard::Policy {
                    kill_switch,
                    ..Default::default()
                },
            );
            p.metadata.resource_version = Some(version.into());
            p.metadata.annotations =
                editor.map(|e| [(CHANGED_BY_ANNOTATION.to_string(), e.to_string())].into());
            p
        };
        let mut seen = None;
        assert_eq!(
            policy_change_note(&mut seen, &policy("1", Some("alice"), false)).as_deref(),
            Some("AutopilotPolicy last changed by alice; kill switch off")
        );
        assert_eq!(
            policy_change_note(&mut seen, &policy("1", Some("alice"), false)),
            None,
            "the same version"
        );
        assert_eq!(
            policy_change_note(&mut seen, &policy("2", None, true)).as_deref(),
            Some("AutopilotPolicy last changed by an unknown editor; kill switch on")
        );
    }
}
