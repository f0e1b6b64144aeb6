//! The gate every write to a target passes at the moment it is sent: the
//! kill switch, the agent's mode and the guards, judged with the policy read
//! for this send and the time of the send. An action in auto mode, an
//! approval, a resolution after a restart, an undo (by a person or after a
//! failed verification) all pass it; [`Admitted`] is the proof `send`
//! demands for a write that takes effect, and only [`judge`] makes one.
//!
//! Pure: the policy, the agent's mode, the history and `now` come in as
//! values. Must not read the cluster or the journal.

use crate::{
    act::{
        action::Planned,
        guard::{Candidate, Policy, Recent, Verdict, evaluate_guards},
    },
    decide::{Intent, Mode},
};

/// Who decided a write, and so what it needs of the agent's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decider {
    /// The agent alone: an action in auto mode, its resolution after a
    /// restart, an undo after a failed verification. Needs `auto`.
    Agent,
    /// A person: an approval, an undo by an SRE. Needs `recommend` or
    /// `auto`: in dry-run the agent changes nothing, whoever asks.
    Person,
}

/// Proof that a write passed the gate. Only [`judge`] makes one, and
/// `send` takes it for every write that takes effect.
#[derive(Debug)]
pub struct Admitted(());

/// Why the gate refused a write: the guard (or `kill_switch`, `mode`) and
/// what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub guard: String,
    pub detail: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (at send)", self.guard, self.detail)
    }
}

/// The write as the guards see it: the intent and its planned change.
/// `None` for a batch's action, whose guards were judged with its batch in
/// the same call (`run_batch`), against the same policy and time.
pub struct Judged<'a> {
    pub intent: &'a Intent,
    pub planned: &'a Planned,
    /// The history, without the entry being sent (an action never counts
    /// against itself: a resolution, an approval, or the action an undo
    /// reverts).
    pub history: &'a [Recent],
}

/// Judges one write now: the kill switch, then the agent's mode, then (when
/// given) the guards.
pub fn judge(
    policy: &Policy,
    agent_mode: Mode,
    decider: Decider,
    guards: Option<Judged<'_>>,
    now: i64,
) -> Result<Admitted, Refused> {
    let refuse = |guard: &str, detail: String| Refused {
        guard: guard.into(),
        detail,
    };
    if policy.kill_switch {
        return Err(refuse(
            "kill_switch",
            format!(
                "killSwitch is on in ConfigMap {}",
                crate::act::guard::POLICY_CONFIGMAP
            ),
        ));
    }
    match (decider, agent_mode) {
        (Decider::Agent, Mode::Auto) | (Decider::Person, Mode::Recommend | Mode::Auto) => {}
        (Decider::Agent, mode) => {
            return Err(refuse(
                "mode",
                format!(
                    "the agent runs in {} mode; only auto mode acts on its own",
                    mode.as_str()
                ),
            ));
        }
        (Decider::Person, mode) => {
            return Err(refuse(
                "mode",
                format!(
                    "the agent runs in {} mode, which changes nothing",
                    mode.as_str()
                ),
            ));
        }
    }
    if let Some(j) = guards {
        let candidate = Candidate {
            intent: j.intent,
            planned: j.planned,
        };
        if let Some(Verdict::Refused { guard, detail }) =
            evaluate_guards(policy, j.history, &[candidate], now).pop()
        {
            return Err(Refused { guard, detail });
        }
    }
    Ok(Admitted(()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        act::action::{Change, Subresource, kind_info},
        decide::Action,
        detect::ComponentId,
    };

    fn intent() -> Intent {
        Intent::new(Action::ScaleReplicas {
            target: ComponentId {
                kind: "PaymentGateway".into(),
                namespace: "pay".into(),
                name: "gw".into(),
            },
            replicas: 3,
        })
    }

    fn planned() -> Planned {
        Planned {
            change: Change::Merge {
                kind: kind_info("PaymentGateway").expect("kind"),
                namespace: "pay".into(),
                name: "gw".into(),
                subresource: Subresource::Main,
                patch: json!({"spec": {"replicas": 3}}),
            },
            inverse: None,
            disruptive: false,
            moves: vec![],
        }
    }

    fn guard_of(r: Result<Admitted, Refused>) -> Option<String> {
        r.err().map(|e| e.guard)
    }

    #[test]
    fn the_kill_switch_refuses_every_write_whoever_decided() {
        let policy = Policy {
            kill_switch: true,
            ..Policy::default()
        };
        for decider in [Decider::Agent, Decider::Person] {
            let r = judge(&policy, Mode::Auto, decider, None, 0);
            assert_eq!(guard_of(r).as_deref(), Some("kill_switch"));
        }
    }

    #[test]
    fn the_agent_acts_alone_only_in_auto_and_nobody_writes_in_dry_run() {
        let p = Policy::default();
        let mode = |m, d| guard_of(judge(&p, m, d, None, 0));
        assert_eq!(mode(Mode::Auto, Decider::Agent), None);
        assert_eq!(
            mode(Mode::Recommend, Decider::Agent).as_deref(),
            Some("mode")
        );
        assert_eq!(mode(Mode::DryRun, Decider::Agent).as_deref(), Some("mode"));
        assert_eq!(mode(Mode::Recommend, Decider::Person), None);
        assert_eq!(mode(Mode::Auto, Decider::Person), None);
        assert_eq!(mode(Mode::DryRun, Decider::Person).as_deref(), Some("mode"));
    }

    #[test]
    fn the_guards_judge_the_write_at_the_time_of_sending() {
        let p = Policy::default();
        let (intent, planned) = (intent(), planned());
        let recent = |at| {
            vec![Recent {
                at,
                runbook: "other".into(),
                target: "PaymentGateway/pay/gw".into(),
                namespace: "pay".into(),
                disruptive: false,
            }]
        };
        let now = 100_000;
        let judged = |history| Judged {
            intent: &intent,
            planned: &planned,
            history,
        };
        // Another action on the target a minute before the send: cooldown.
        let h = recent(now - 60);
        let r = judge(&p, Mode::Auto, Decider::Agent, Some(judged(&h)), now);
        assert_eq!(guard_of(r).as_deref(), Some("cooldown"));
        // Long enough before: allowed.
        let h = recent(now - p.cooldown_seconds - 1);
        assert!(judge(&p, Mode::Auto, Decider::Agent, Some(judged(&h)), now).is_ok());
    }
}
