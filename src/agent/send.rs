//! Step 5 of a cycle: hand the proposals to the executor under the guard
//! policy read this cycle, apply the approvals annotated on targets, and
//! verify earlier actions against the latest values.
//!
//! The loop's only path to a change: everything here goes through `act`'s
//! executor, which journals, guards and writes. This module must not decide
//! anything nor write to the cluster itself; it logs what the executor did
//! and returns it. A driver that must not act (a replay) replaces this step.

use std::collections::BTreeMap;

use super::metrics::Metrics;
use crate::act::{
    executor::{self, Executed, Executor, PolicyError, PolicySource, Proposal, fetch_policy},
    guard::Policy,
    journal::Journal,
    verify::Verification,
};

/// The guard policy as it is now. Without it nothing is sent this cycle.
#[tracing::instrument(skip_all, fields(namespace = %namespace, proposals = proposals))]
pub async fn fetch_guard_policy(
    client: &kube::Client,
    namespace: &str,
    proposals: usize,
    metrics: &Metrics,
) -> Result<Policy, PolicyError> {
    let policy = fetch_policy(client, namespace).await;
    if let Err(error) = &policy {
        metrics
            .read_errors
            .with_label_values(&["policy", error.kind()])
            .inc();
        tracing::error!(error = %crate::telemetry::chain(error), proposals, "reading the guard policy failed; nothing is sent this cycle");
    }
    policy
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
                    tracing::debug!(id = e.id, outcome = %e.outcome, detail = %e.detail, "action refused again");
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
#[tracing::instrument(skip_all, fields(values = latest.len(), verdicts))]
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
