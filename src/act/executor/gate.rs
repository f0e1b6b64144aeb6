//! The gate every write to a target passes at the moment it is sent: the
//! kill switch, the scope (allow-listed namespaces, hands-off labels), the
//! agent's mode and the guards, judged with the policy read for this send,
//! the agent's own observations and the time of the send. An action in auto mode, an
//! approval, a resolution after a restart, an undo (by a person or after a
//! failed verification) all pass it; [`Admitted`] is the proof `send`
//! demands for a write that takes effect, and only [`judge`] makes one.
//!
//! Pure: the policy, the agent's mode, the scope verdict (labels read by
//! the caller), the history, the observations and `now` come in as values.
//! Must not read the cluster or the journal.

use crate::{
    act::{
        action::Planned,
        guard::{Candidate, Observed, POLICY_NAME, Policy, Recent, Verdict, evaluate_guards},
    },
    decide::{Intent, Mode},
    scope::OutOfScope,
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

/// The write as the guards see it: the intent and its planned change, with
/// the history and the agent's observations as they are at the send.
pub struct Judged<'a> {
    pub intent: &'a Intent,
    pub planned: &'a Planned,
    /// The history, without the entry being sent (an action never counts
    /// against itself: a resolution, an approval, or the action an undo
    /// reverts).
    pub history: &'a [Recent],
    pub observed: &'a Observed,
}

/// Judges one write now: the kill switch, then the scope, then the agent's
/// mode, then (when given) the guards.
pub fn judge(
    policy: &Policy,
    agent_mode: Mode,
    decider: Decider,
    scope: Result<(), OutOfScope>,
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
            format!("killSwitch is on in AutopilotPolicy {POLICY_NAME}"),
        ));
    }
    if let Err(out) = scope {
        return Err(refuse(out.guard(), out.to_string()));
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
        if let Some(Verdict::Refused { guard, detail, .. }) =
            evaluate_guards(policy, j.observed, j.history, &[candidate], now).pop()
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
            let r = judge(&policy, Mode::Auto, decider, Ok(()), None, 0);
            assert_eq!(guard_of(r).as_deref(), Some("kill_switch"));
        }
    }

    #[test]
    fn the_agent_acts_alone_only_in_auto_and_nobody_writes_in_dry_run() {
        let p = Policy::default();
        let mode = |m, d| guard_of(judge(&p, m, d, Ok(()), None, 0));
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
        let observed = Observed::default();
        let judged = |history| Judged {
            intent: &intent,
            planned: &planned,
            history,
            observed: &observed,
        };
        // Another action on the target a minute before the send: cooldown.
        let h = recent(now - 60);
        let r = judge(
            &p,
            Mode::Auto,
            Decider::Agent,
            Ok(()),
            Some(judged(&h)),
            now,
        );
        assert_eq!(guard_of(r).as_deref(), Some("cooldown"));
        // Long enough before: allowed.
        let h = recent(now - p.cooldown_seconds - 1);
        assert!(
            judge(
                &p,
                Mode::Auto,
                Decider::Agent,
                Ok(()),
                Some(judged(&h)),
                now
            )
            .is_ok()
        );
        // A change freeze covering the send refuses it, whatever else holds.
        let frozen = Policy {
            change_freezes: vec![crate::act::guard::Freeze {
                start: crate::act::guard::Freeze::time(now - 10),
                end: crate::act::guard::Freeze::time(now + 10),
                reason: "Black Friday".into(),
            }],
            ..Policy::default()
        };
        let r = judge(
            &frozen,
            Mode::Auto,
            Decider::Person,
            Ok(()),
            Some(judged(&h)),
            now,
        );
        assert_eq!(guard_of(r).as_deref(), Some("change_freeze"));
    }

    #[test]
    fn a_target_out_of_scope_is_refused_before_the_mode_is_looked_at() {
        let p = Policy::default();
        let out = crate::scope::Scope::namespaces(["pay"]).check("kube-system", None, None);
        let r = judge(&p, Mode::DryRun, Decider::Agent, out, None, 0);
        assert_eq!(guard_of(r).as_deref(), Some("scope"));
        let off = crate::scope::OutOfScope::HandsOffObject;
        let r = judge(&p, Mode::Auto, Decider::Person, Err(off), None, 0);
        assert_eq!(guard_of(r).as_deref(), Some("hands_off"));
    }
}
