//! Verification verdicts (pure): did the signal a runbook named improve by
//! its deadline? Missing data never triggers an undo.

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

/// Judges `verify` of an action applied at `applied_at` given the latest
/// value of its signal (if any) at `now`.
pub fn judge_verification(
    verify: &Verify,
    applied_at: i64,
    value: Option<f64>,
    now: i64,
) -> Verification {
    let deadline = applied_at + verify.within_seconds;
    let expect = match verify.expect {
        crate::decide::Expect::Below => "<",
        crate::decide::Expect::Above => ">",
    };
    match value {
        Some(v) if v.is_finite() && verify.is_met(v) => Verification::Passed(format!(
            "passed: {} {v} {expect} {}",
            verify.signal, verify.threshold
        )),
        _ if now < deadline => Verification::Pending,
        Some(v) if v.is_finite() => Verification::Failed(format!(
            "failed: {} {v} not {expect} {} within {}s",
            verify.signal, verify.threshold, verify.within_seconds
        )),
        _ => Verification::NoData(format!(
            "no data: {} unknown at the deadline; not undone",
            verify.signal
        )),
    }
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

    #[test]
    fn verdicts() {
        assert!(matches!(
            judge_verification(&v(), 0, Some(0.2), 10),
            Verification::Passed(_)
        ));
        assert_eq!(
            judge_verification(&v(), 0, Some(0.5), 599),
            Verification::Pending
        );
        assert!(matches!(
            judge_verification(&v(), 0, Some(0.5), 600),
            Verification::Failed(_)
        ));
        assert!(matches!(
            judge_verification(&v(), 0, None, 600),
            Verification::NoData(_)
        ));
        assert!(matches!(
            judge_verification(&v(), 0, Some(f64::NAN), 900),
            Verification::NoData(_)
        ));
        assert_eq!(
            judge_verification(&v(), 0, None, 100),
            Verification::Pending
        );
    }
}
