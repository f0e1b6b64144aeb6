//! Runbooks held armed on a component after another runbook's action on
//! the same target (a conflict with it in this cycle, its cooldown) held
//! their proposal back (`guard::Verdict::defers`).
//!
//! A calibrated score ranks a sample against the series' recent scores, so
//! a lasting anomaly's score falls as those scores fill with it: the finding
//! stays open (the detector still reports it) but drops under the runbook's
//! `min_score` within a few cycles. Two runbooks on one target at the same
//! onset — a switchover and a `work_mem` change on one Cluster — would then
//! lose the second decision to the first one's cooldown. Held, the runbook
//! fires again on the component's findings on its signals at any score (see
//! `RunbookSet::triggered_by_findings`) until its proposal goes through or
//! is refused for another reason, its findings clear (the anomaly is over:
//! nothing to act on), or [`HOLD_SECONDS`] pass.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    act::executor::{Executed, Proposal},
    detect::ComponentId,
};

/// How long a runbook stays armed after its first deferral: an anomaly an
/// hour old that no runbook could act on is for a person.
pub const HOLD_SECONDS: i64 = 3600;

/// `(runbook, component)` → when it was first deferred.
#[derive(Debug, Default)]
pub struct Deferred {
    since: BTreeMap<(String, ComponentId), i64>,
}

impl Deferred {
    /// The runbooks armed at `now`; those held for [`HOLD_SECONDS`] are
    /// dropped (and logged).
    pub fn armed(&mut self, now: i64) -> BTreeSet<(String, ComponentId)> {
        self.since.retain(|(runbook, component), since| {
            let keep = now - *since < HOLD_SECONDS;
            if !keep {
                tracing::warn!(%runbook, %component, held_seconds = now - *since,
                    "a runbook deferred by a cooldown or a conflict is no longer held: its finding has lasted an hour without its action going through; see the journal's refusals");
            }
            keep
        });
        self.since.keys().cloned().collect()
    }

    /// How many `(runbook, component)` pairs are held.
    pub fn len(&self) -> usize {
        self.since.len()
    }

    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }

    /// After a cycle's proposals were sent: `fired_on[i]` is the component
    /// whose finding fired `proposals[i]`'s runbook (`None` for cron and
    /// condition triggers), `executed[i]` what became of it. A runbook
    /// stays held on a component while one of its proposals there is
    /// deferred; any other outcome, or no proposal at all this cycle,
    /// releases it.
    pub fn settle(
        &mut self,
        proposals: &[Proposal],
        fired_on: &[Option<ComponentId>],
        executed: &[Executed],
        now: i64,
    ) {
        let mut next = BTreeMap::new();
        let mut proposed = BTreeSet::new();
        for ((p, component), e) in proposals.iter().zip(fired_on).zip(executed) {
            let Some(component) = component else {
                continue;
            };
            let key = (p.intent.runbook.clone(), component.clone());
            proposed.insert(key.clone());
            if !e.deferred {
                continue;
            }
            let since = self.since.get(&key).copied().unwrap_or_else(|| {
                tracing::debug!(runbook = %key.0, %component, refused = %e.detail,
                    "runbook deferred by another runbook's action: held on the component while its findings last");
                now
            });
            next.insert(key, since);
        }
        for ((runbook, component), since) in &self.since {
            let key = (runbook.clone(), component.clone());
            if next.contains_key(&key) {
                continue;
            }
            if proposed.contains(&key) {
                tracing::debug!(%runbook, %component, "a deferred runbook's proposal went through");
            } else {
                // Never acted on: its findings cleared (or it decided
                // nothing) before the target was free. Said, so a person
                // can look at what it would have done.
                tracing::warn!(%runbook, %component, held_seconds = now - since,
                    "a runbook deferred by another runbook's action is released without acting: its findings cleared, or it no longer proposes anything, before the target was free; see its refusals in the journal");
            }
        }
        self.since = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Action, Intent, Mode};

    fn cluster() -> ComponentId {
        ComponentId {
            kind: "Cluster".into(),
            namespace: "payments".into(),
            name: "db".into(),
        }
    }

    fn proposal(runbook: &str) -> Proposal {
        let mut intent = Intent::new(Action::RollingRestart { target: cluster() });
        intent.runbook = runbook.into();
        Proposal::of_finding(intent, Mode::Auto)
    }

    fn executed(outcome: &str, deferred: bool) -> Executed {
        Executed {
            id: 1,
            outcome: outcome.into(),
            detail: String::new(),
            repeat: false,
            deferred,
        }
    }

    fn deferred() -> Executed {
        executed("refused", true)
    }

    #[test]
    fn a_runbook_is_held_while_it_is_deferred_and_for_an_hour_at_most() {
        let mut d = Deferred::default();
        let key = ("work-mem".to_string(), cluster());
        let on = [Some(cluster())];
        d.settle(&[proposal("work-mem")], &on, &[deferred()], 100);
        assert!(d.armed(101).contains(&key));
        // Deferred again: still held, since its first deferral.
        d.settle(&[proposal("work-mem")], &on, &[deferred()], 160);
        assert!(d.armed(100 + HOLD_SECONDS - 1).contains(&key));
        assert!(
            d.armed(100 + HOLD_SECONDS).is_empty(),
            "dropped after an hour"
        );
    }

    #[test]
    fn sent_refused_for_good_or_not_proposed_releases_it() {
        let key = ("work-mem".to_string(), cluster());
        let on = [Some(cluster())];
        for (outcome, fired_on) in [
            (executed("applied", false), on.clone()),
            (executed("recommended", false), on.clone()),
            // Refused for good (a guard such as max_change or the kill
            // switch, or its own cooldown).
            (executed("refused", false), on.clone()),
            // A cron or condition runbook is never held.
            (deferred(), [None]),
        ] {
            let mut d = Deferred::default();
            d.settle(&[proposal("work-mem")], &on, &[deferred()], 100);
            assert!(d.armed(101).contains(&key));
            d.settle(
                &[proposal("work-mem")],
                &fired_on,
                std::slice::from_ref(&outcome),
                101,
            );
            assert!(d.armed(102).is_empty(), "{outcome:?} on {fired_on:?}");
        }
        // Nothing proposed (the finding cleared): released.
        let mut d = Deferred::default();
        d.settle(&[proposal("work-mem")], &on, &[deferred()], 100);
        d.settle(&[], &[], &[], 101);
        assert!(d.armed(102).is_empty());
    }
}
