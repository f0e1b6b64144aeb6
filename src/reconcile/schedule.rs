//! The reconcilers' name for [`crate::schedule`]: five-field cron
//! expressions with Kubernetes CronJob semantics in an IANA time zone.
//! Kept so `reconcile::schedule::parse` and friends stay importable; the
//! code and its tests live in `crate::schedule`, shared with runbook
//! triggers and maintenance windows so every schedule reads the same.

pub use crate::schedule::{Cron, next_after, parse, time_zone};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saturday_cutoff_falls_on_saturday() {
        // What `ClearingAdapter` cut-offs call: `6` is Saturday (2026-12-05),
        // `0` and `7` are Sunday, in the adapter's zone.
        let tz = time_zone("Europe/Berlin").expect("tz");
        let now = "2026-12-01T00:00:00Z".parse().expect("ts");
        let next = |expr: &str| next_after(&parse(expr).expect("valid"), tz, now);
        // 16:00 CET = 15:00 UTC.
        let sat: k8s_openapi::jiff::Timestamp = "2026-12-05T15:00:00Z".parse().expect("ts");
        let sun: k8s_openapi::jiff::Timestamp = "2026-12-06T15:00:00Z".parse().expect("ts");
        assert_eq!(next("0 16 * * 6"), Some(sat));
        assert_eq!(next("0 16 * * 0"), Some(sun));
        assert_eq!(next("0 16 * * 7"), Some(sun));
    }
}
