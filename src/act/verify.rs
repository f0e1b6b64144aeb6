//! Verification verdicts (pure): did the signal a runbook named improve by
//! its deadline, and stay improved? Missing data never triggers an undo.
//!
//! One sample decides nothing. The samples of the first moments after a
//! change are ignored (the settle delay: the metric has not reacted yet, and
//! a rate window still mixes before and after); then a verdict needs the
//! signal on one side for a sustained window: on the good side, it passes
//! (as soon as that holds, even before the deadline); on the wrong side at
//! or after the deadline, it fails (and the action is undone). A signal that
//! keeps flipping is judged on its latest value once the deadline plus the
//! window has passed. Both delays scale with the runbook's own window
//! (`within_seconds`): 1/30 of it to settle and 1/15 of it sustained, i.e.
//! 30 s and 60 s for a 15-minute verification.

use crate::decide::Verify;

#[derive(Clone, Debug, PartialEq)]
pub enum Verification {
    /// Before the deadline and not yet met: wait.
    Pending,
    Passed(String),
    /// At or after the deadline, the signal is on the wrong side: undo.
    Failed(String),
    /// At or after the deadline with no value: record, do not undo.
    NoData(String),
}

/// Since when the signal has been on one side (carried from cycle to cycle
/// by the caller; `None` at first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streak {
    pub met: bool,
    pub since: i64,
}

/// Seconds after the change during which samples are ignored.
pub fn settle_seconds(verify: &Verify) -> i64 {
    verify.within_seconds / 30
}

/// Seconds the signal must stay on one side for a verdict.
pub fn sustain_seconds(verify: &Verify) -> i64 {
    verify.within_seconds / 15
}

/// Judges `verify` of an action applied at `applied_at` given the latest
/// value of its signal (if any) at `now` and the streak so far; returns the
/// verdict and the streak to carry to the next judgement.
pub fn judge_verification(
    verify: &Verify,
    applied_at: i64,
    value: Option<f64>,
    now: i64,
    streak: Option<Streak>,
) -> (Verification, Option<Streak>) {
    let deadline = applied_at + verify.within_seconds;
    let sustain = sustain_seconds(verify);
    let last_word = now >= deadline + sustain;
    if now < applied_at + settle_seconds(verify) {
        return (Verification::Pending, None);
    }
    let expect = match verify.expect {
        crate::decide::Expect::Below => "<",
        crate::decide::Expect::Above => ">",
    };
    let Some(v) = value.filter(|v| v.is_finite()) else {
        let verdict = if last_word {
            Verification::NoData(format!(
                "no data: {} unknown at the deadline; not undone",
                verify.signal
            ))
        } else {
            Verification::Pending
        };
        return (verdict, streak);
    };
    let met = verify.is_met(v);
    let streak = match streak {
        Some(s) if s.met == met => s,
        _ => Streak { met, since: now },
    };
    let held = now - streak.since >= sustain;
    let verdict = if met && (held || last_word) {
        Verification::Passed(format!(
            "passed: {} {v} {expect} {}, held {}s",
            verify.signal,
            verify.threshold,
            now - streak.since
        ))
    } else if !met && now >= deadline && (held || last_word) {
        Verification::Failed(format!(
            "failed: {} {v} not {expect} {} within {}s (for {}s)",
            verify.signal,
            verify.threshold,
            verify.within_seconds,
            now - streak.since
        ))
    } else {
        Verification::Pending
    };
    (verdict, Some(streak))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::Expect;

    fn v() -> Verify {
        Verify {
            signal: "latency_p99".into(),
            expect: Expect::Below,
            threshold: 0.3,
            within_seconds: 600,
        }
    }

    /// Feeds `(now, value)` samples in order; the last verdict.
    fn run(samples: &[(i64, Option<f64>)]) -> Verification {
        let mut streak = None;
        let mut last = Verification::Pending;
        for &(now, value) in samples {
            (last, streak) = judge_verification(&v(), 0, value, now, streak);
            if last != Verification::Pending {
                break;
            }
        }
        last
    }

    #[test]
    fn it_passes_only_after_the_settle_delay_and_a_sustained_window() {
        // 600 s: settle 20 s, sustain 40 s.
        assert_eq!((settle_seconds(&v()), sustain_seconds(&v())), (20, 40));
        // Good at once: the samples of the settle delay do not count.
        assert_eq!(
            run(&[(1, Some(0.2)), (10, Some(0.2))]),
            Verification::Pending
        );
        assert_eq!(
            run(&[(1, Some(0.2)), (20, Some(0.2)), (59, Some(0.2))]),
            Verification::Pending
        );
        assert!(matches!(
            run(&[(20, Some(0.2)), (40, Some(0.2)), (60, Some(0.2))]),
            Verification::Passed(s) if s.contains("held 40s")
        ));
        // A bad sample in between starts the window again.
        assert_eq!(
            run(&[
                (20, Some(0.2)),
                (40, Some(0.5)),
                (60, Some(0.2)),
                (90, Some(0.2))
            ]),
            Verification::Pending
        );
        // Missing data neither breaks nor extends a streak.
        assert!(matches!(
            run(&[(20, Some(0.2)), (40, None), (60, Some(0.2))]),
            Verification::Passed(_)
        ));
    }

    #[test]
    fn it_fails_only_on_a_sustained_wrong_side_at_the_deadline() {
        // Bad all along: failed once the deadline is reached and it held.
        let bad: Vec<_> = (20..=700).step_by(10).map(|t| (t, Some(0.5))).collect();
        assert!(matches!(run(&bad), Verification::Failed(s) if s.contains("within 600s")));
        let mut streak = None;
        for t in (20..600).step_by(10) {
            let (verdict, s) = judge_verification(&v(), 0, Some(0.5), t, streak);
            assert_eq!(
                verdict,
                Verification::Pending,
                "before the deadline, at {t}"
            );
            streak = s;
        }
        // One bad sample at the deadline after good ones is not a failure...
        let flip = [(560, Some(0.2)), (600, Some(0.5))];
        let (v1, s1) = judge_verification(&v(), 0, flip[0].1, flip[0].0, None);
        assert_eq!(v1, Verification::Pending);
        let (v2, s2) = judge_verification(&v(), 0, flip[1].1, flip[1].0, s1);
        assert_eq!(v2, Verification::Pending);
        // ...but it is when it stays bad for the window.
        let (v3, _) = judge_verification(&v(), 0, Some(0.5), 640, s2);
        assert!(matches!(v3, Verification::Failed(_)));
        // A signal that keeps flipping gets the latest value's verdict once
        // the deadline plus the window has passed.
        let (v4, _) = judge_verification(&v(), 0, Some(0.2), 640, s2);
        assert!(matches!(v4, Verification::Passed(_)));
    }

    #[test]
    fn no_data_is_never_undone() {
        assert_eq!(run(&[(600, None)]), Verification::Pending);
        assert!(matches!(run(&[(640, None)]), Verification::NoData(_)));
        assert!(matches!(
            run(&[(900, Some(f64::NAN))]),
            Verification::NoData(_)
        ));
        assert_eq!(run(&[(100, None)]), Verification::Pending);
    }
}
