//! Per-object exponential back-off for failed reconciles: the first retry
//! after `initial`, each further failure doubling it up to `max`, each delay
//! spread by ±`jitter` so objects that failed together (an API server
//! outage) do not all retry in the same second. A successful reconcile
//! forgets the object's failures.
//!
//! Pure: no clock, no randomness of its own. The jitter is a hash of the
//! object, the attempt and a seed the caller passes in (random per process
//! in the agent, fixed in tests), so a delay is reproducible.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hash, Hasher},
    sync::Mutex,
    time::Duration,
};

use kube::{api::DynamicObject, runtime::reflector::ObjectRef};

/// How delays grow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackoffSettings {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Largest delay, before jitter.
    pub max: Duration,
    /// Relative spread, e.g. 0.2 for ±20 %.
    pub jitter: f64,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl BackoffSettings {
    /// The delay before retry number `attempt` (1 = after the first
    /// failure), with `unit` in `[0, 1)` choosing where in the jitter band
    /// it falls. The cap applies before jitter, so retries at the cap still
    /// spread out.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        // 2^20 × anything sensible is past any cap; bounding the exponent
        // keeps the multiplication finite.
        let doublings = attempt.saturating_sub(1).min(20);
        let nominal = self.initial.saturating_mul(1u32 << doublings).min(self.max);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        // `try_from`: a cap near `Duration::MAX` must not panic.
        Duration::try_from_secs_f64(nominal.as_secs_f64() * factor).unwrap_or(nominal)
    }
}

/// Failure counts per object, shared by the concurrent reconciles of every
/// controller.
#[derive(Debug)]
pub struct Backoff<K = ObjectRef<DynamicObject>> {
    settings: BackoffSettings,
    seed: u64,
    failures: Mutex<HashMap<K, u32>>,
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    pub fn new(settings: BackoffSettings, seed: u64) -> Self {
        Self {
            settings,
            seed,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a failure of `key` and returns how long to wait before
    /// retrying it.
    pub fn failed(&self, key: &K) -> Duration {
        let attempt = {
            let mut failures = self.lock();
            let n = failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        self.settings.delay(attempt, self.unit(key, attempt))
    }

    /// Forgets the failures of `key` (it reconciled).
    pub fn succeeded(&self, key: &K) {
        self.lock().remove(key);
    }

    /// Failures of `key` since its last success.
    pub fn failures(&self, key: &K) -> u32 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, u32>> {
        // A panic elsewhere while holding the lock leaves counts that are
        // still valid numbers; keep using them.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A number in `[0, 1)` from the seed, the object and the attempt.
    fn unit(&self, key: &K, attempt: u32) -> f64 {
        // Fixed keys (unlike `RandomState`): the seed is the only variation.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.seed.hash(&mut h);
        key.hash(&mut h);
        attempt.hash(&mut h);
        // The top 53 bits fill an f64 mantissa exactly.
        (h.finish() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A seed that differs between agent processes, so two replicas (or a
/// restart) do not pick the same jitter. From the standard library's
/// per-process random hash keys: no clock read, no extra dependency.
pub fn process_seed() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(0u8)
}

/// The key of a reconciled object: its kind, namespace and name.
pub fn key_of<K>(obj: &K) -> ObjectRef<DynamicObject>
where
    K: kube::Resource<DynamicType = ()>,
{
    ObjectRef::from_obj(obj).erase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff<&'static str> {
        Backoff::new(BackoffSettings::default(), 42)
    }

    fn within(d: Duration, nominal_secs: f64) -> bool {
        let s = d.as_secs_f64();
        s >= nominal_secs * 0.8 - 1e-9 && s <= nominal_secs * 1.2 + 1e-9
    }

    #[test]
    fn delays_double_from_five_seconds_and_cap_at_five_minutes() {
        let s = BackoffSettings::default();
        let mid = |attempt| s.delay(attempt, 0.5).as_secs_f64();
        assert_eq!(
            (1..=9).map(mid).collect::<Vec<_>>(),
            [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
        );
        assert_eq!(mid(u32::MAX), 300.0, "no overflow");
        assert_eq!(mid(0), 5.0, "attempt 0 reads as the first");
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let s = BackoffSettings::default();
        assert_eq!(s.delay(1, 0.0), Duration::from_secs(4));
        assert_eq!(s.delay(1, 1.0), Duration::from_secs(6));
        assert_eq!(s.delay(9, 0.0), Duration::from_secs(240));
        let b = backoff();
        for key in ["a", "b", "c", "d"] {
            let mut nominal = 5.0_f64;
            for _ in 0..12 {
                let d = b.failed(&key);
                assert!(within(d, nominal), "{key}: {d:?} vs {nominal}");
                nominal = (nominal * 2.0).min(300.0);
            }
        }
    }

    #[test]
    fn jitter_spreads_objects_and_is_reproducible() {
        let b = backoff();
        let firsts: Vec<_> = (0..20)
            .map(|i| {
                let key: &'static str = Box::leak(format!("obj-{i}").into_boxed_str());
                b.failed(&key)
            })
            .collect();
        let mut distinct = firsts.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 15, "{firsts:?}");
        // Same seed, same object, same attempt: same delay.
        assert_eq!(backoff().failed(&"x"), backoff().failed(&"x"));
        assert_ne!(
            Backoff::new(BackoffSettings::default(), 1).failed(&"x"),
            Backoff::new(BackoffSettings::default(), 2).failed(&"x"),
        );
    }

    #[test]
    fn counts_are_per_object_and_reset_on_success() {
        let b = backoff();
        for _ in 0..5 {
            b.failed(&"a");
        }
        b.failed(&"b");
        assert_eq!((b.failures(&"a"), b.failures(&"b")), (5, 1));
        b.succeeded(&"a");
        assert_eq!((b.failures(&"a"), b.failures(&"b")), (0, 1));
        assert!(within(b.failed(&"a"), 5.0), "back to the first delay");
    }

    #[test]
    fn keys_tell_kinds_and_namespaces_apart() {
        use crate::crd::{BatchProcessor, PaymentGateway};
        let b: Backoff = Backoff::new(BackoffSettings::default(), 7);
        let gw_a = ObjectRef::<PaymentGateway>::new("x").within("a").erase();
        let gw_b = ObjectRef::<PaymentGateway>::new("x").within("b").erase();
        let bp_a = ObjectRef::<BatchProcessor>::new("x").within("a").erase();
        b.failed(&gw_a);
        b.failed(&gw_a);
        b.failed(&bp_a);
        assert_eq!(
            [b.failures(&gw_a), b.failures(&gw_b), b.failures(&bp_a)],
            [2, 0, 1]
        );
    }
}
