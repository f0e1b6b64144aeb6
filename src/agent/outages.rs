//! Once-per-outage logging for the reads a cycle repeats: a read that fails
//! every cycle (Prometheus down, a CRD not installed) is warned about when
//! it starts failing and logged at INFO when it works again, not once a
//! cycle — the `autopilot_read_errors_total` counter carries it meanwhile.
//!
//! Owns only the set of keys (kinds) currently failing and the wording of
//! its three log lines; it must not count metrics or decide what a failure
//! means for the cycle (that stays with the step that read).

use std::collections::BTreeSet;

/// What to log for one kind of read; every line carries `kind` and, on
/// failure, `error`.
#[derive(Clone, Copy, Debug)]
pub struct Notes {
    /// When the read starts failing (WARN).
    pub failed: &'static str,
    /// When it fails again in the same outage (DEBUG).
    pub again: &'static str,
    /// When it works again (INFO).
    pub recovered: &'static str,
}

/// The keys whose read is failing now.
#[derive(Debug)]
pub struct Outages {
    notes: Notes,
    failing: BTreeSet<String>,
}

impl Outages {
    pub fn new(notes: Notes) -> Self {
        Outages {
            notes,
            failing: BTreeSet::new(),
        }
    }

    /// Records that reading `key` failed: a WARN when this starts an outage,
    /// a DEBUG line otherwise. `true` when it is news.
    pub fn fail(&mut self, key: &str, error: &(dyn std::error::Error + 'static)) -> bool {
        let news = self.failing.insert(key.to_string());
        let error = crate::telemetry::chain(error);
        if news {
            tracing::warn!(kind = %key, %error, "{}", self.notes.failed);
        } else {
            tracing::debug!(kind = %key, %error, "{}", self.notes.again);
        }
        news
    }

    /// Records that reading `key` worked: an INFO line when this ends an
    /// outage, nothing otherwise. `true` when it is news.
    pub fn recover(&mut self, key: &str) -> bool {
        let news = self.failing.remove(key);
        if news {
            tracing::info!(kind = %key, "{}", self.notes.recovered);
        }
        news
    }

    /// Whether reading `key` is failing now.
    pub fn is_failing(&self, key: &str) -> bool {
        self.failing.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTES: Notes = Notes {
        failed: "reading failed",
        again: "reading failed again",
        recovered: "reading works again",
    };

    fn error() -> std::io::Error {
        std::io::Error::other("boom")
    }

    #[test]
    fn a_failure_is_news_once_per_outage_and_so_is_its_end() {
        let mut o = Outages::new(NOTES);
        assert!(!o.recover("Cluster"), "working all along is not news");
        assert!(o.fail("Cluster", &error()), "the first failure is news");
        assert!(!o.fail("Cluster", &error()), "the same outage again is not");
        assert!(o.is_failing("Cluster"));
        assert!(o.recover("Cluster"), "the end of the outage is news");
        assert!(!o.recover("Cluster"), "and only once");
        assert!(!o.is_failing("Cluster"));
        assert!(o.fail("Cluster", &error()), "a new outage is news again");
    }

    #[test]
    fn keys_fail_and_recover_independently() {
        let mut o = Outages::new(NOTES);
        assert!(o.fail("Cluster", &error()));
        assert!(o.fail("PaymentGateway", &error()));
        assert!(o.recover("PaymentGateway"));
        assert!(o.is_failing("Cluster"));
        assert!(!o.fail("Cluster", &error()));
    }
}
