//! A contextual novelty detector in the spirit of CAD OSE (Smirnov's
//! Contextual Anomaly Detector): the series is reduced to a few levels, and
//! a sample is anomalous when the level it lands on is new after the recent
//! pattern of levels (its *context*), at every context length.
//!
//! Written from the idea, not from CAD's code: levels are `levels` equal
//! slices of the range seen so far (CAD uses the whole file's range, which an
//! online agent does not know); a value beyond that range is a level of its
//! own, never seen before. For each context length `1..=order` a bounded
//! table counts which level followed each context; the score is the least
//! novelty over lengths, novelty being `1 − count(level) / total` (1 for an
//! unseen context): a sample is as surprising as its best explanation. One
//! alarm per episode: within `rest` samples of a higher score, scores are
//! halved.
//!
//! Cost per sample: `order` hash look-ups and updates, O(1). Memory per
//! series: at most `max_contexts` contexts of 16 one-byte counts (about 32
//! bytes each with the table's overhead); when full, the table is cleared
//! and learning starts again. Pure, like every detector.

use std::collections::HashMap;

use super::{Detector, DetectorKind, Scored};
use crate::detect::stats::Episodes;

/// Levels above and below the range seen so far take two of the 16 slots.
pub const MAX_LEVELS: u32 = 14;
/// Context lengths are packed 4 bits per level into a `u32` key.
pub const MAX_ORDER: u32 = 6;

pub(super) struct ContextDetector {
    levels: u32,
    order: u32,
    warmup: u32,
    max_contexts: usize,
    n: u64,
    min: f64,
    max: f64,
    /// The last `order` levels, newest in the low 4 bits.
    history: u32,
    seen: u32,
    table: HashMap<u32, [u8; 16]>,
    episodes: Episodes,
}

impl ContextDetector {
    pub(super) fn new(levels: u32, order: u32, rest: u32, warmup: u32, max_contexts: u32) -> Self {
        Self {
            levels: levels.clamp(2, MAX_LEVELS),
            order: order.clamp(1, MAX_ORDER),
            warmup,
            max_contexts: max_contexts.max(16) as usize,
            n: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            history: 0,
            seen: 0,
            table: HashMap::new(),
            episodes: Episodes::new(u64::from(rest)),
        }
    }

    /// The level of `x` against the range seen so far: `0..levels`, or
    /// `levels` above it and `levels + 1` below it.
    fn level(&self, x: f64) -> u32 {
        if x > self.max {
            return self.levels;
        }
        if x < self.min {
            return self.levels + 1;
        }
        let span = self.max - self.min;
        if span <= 0.0 {
            return 0;
        }
        let l = ((x - self.min) / span * f64::from(self.levels)) as u32;
        l.min(self.levels - 1)
    }

    /// Key of the context of length `k` (the last `k` levels).
    fn key(&self, k: u32) -> u32 {
        // k ≤ MAX_ORDER = 6: 24 bits of levels under the length.
        let mask = (1u32 << (4 * k)) - 1;
        (k << 28) | (self.history & mask)
    }

    /// Least novelty of `level` after the current contexts.
    fn novelty(&self, level: u32) -> f64 {
        let mut least: f64 = 1.0;
        for k in 1..=self.order.min(self.seen) {
            let novelty = match self.table.get(&self.key(k)) {
                None => 1.0,
                Some(c) => {
                    let total: u32 = c.iter().map(|&v| u32::from(v)).sum();
                    if total == 0 {
                        1.0
                    } else {
                        1.0 - f64::from(c[level as usize]) / f64::from(total)
                    }
                }
            };
            least = least.min(novelty);
        }
        least
    }

    fn learn(&mut self, level: u32) {
        for k in 1..=self.order.min(self.seen) {
            let key = self.key(k);
            if !self.table.contains_key(&key) && self.table.len() >= self.max_contexts {
                // The ceiling: forget and learn again rather than grow.
                self.table.clear();
            }
            let c = self.table.entry(key).or_insert([0; 16]);
            if c[level as usize] == u8::MAX {
                // Halve the context's counts: bounded, and recent behaviour
                // weighs more.
                for v in c.iter_mut() {
                    *v /= 2;
                }
            }
            c[level as usize] += 1;
        }
        self.history = (self.history << 4) | level;
        self.seen = (self.seen + 1).min(MAX_ORDER);
    }
}

impl Detector for ContextDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Context.name()
    }
    fn score(&mut self, _at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        let level = self.level(x);
        let out = (self.n >= u64::from(self.warmup)).then(|| {
            let raw = self.novelty(level);
            Scored {
                score: self.episodes.damp(raw),
                baseline: (self.min + self.max) / 2.0,
                measure: f64::from(level),
                time_to_threshold: None,
                judged: None,
            }
        });
        self.learn(level);
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.n += 1;
        if out.is_none() {
            // Warming up: keep the episode clock running.
            self.episodes.damp(0.0);
        }
        out
    }
    fn reset(&mut self) {
        *self = Self::new(
            self.levels,
            self.order,
            self.episodes.span() as u32,
            self.warmup,
            self.max_contexts as u32,
        );
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        let level = match s.measure as u32 {
            l if l == self.levels => "above the range seen so far".to_string(),
            l if l == self.levels + 1 => "below the range seen so far".to_string(),
            l => format!("level {} of {}", l + 1, self.levels),
        };
        format!(
            "{signal} {value:.4} ({level}) is new after its recent pattern: novelty {:.2} over contexts of up to {} samples",
            s.score, self.order
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut ContextDetector, xs: &[f64]) -> Vec<Option<f64>> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| d.score(i as i64 * 300, x).map(|s| s.score))
            .collect()
    }

    #[test]
    fn a_repeating_pattern_becomes_unsurprising_and_a_break_in_it_is_novel() {
        let mut d = ContextDetector::new(8, 3, 0, 10, 512);
        let pattern = [0.0, 5.0, 10.0, 5.0];
        let mut xs: Vec<f64> = (0..400).map(|i| pattern[i % 4]).collect();
        // Same values, new order: 0 → 10 never happened.
        xs.extend([0.0, 10.0]);
        let s = run(&mut d, &xs);
        assert!(s[..10].iter().all(Option::is_none), "warm-up");
        let late_max = s[300..400].iter().flatten().copied().fold(0.0, f64::max);
        assert!(
            late_max < 0.05,
            "learned pattern still surprising: {late_max}"
        );
        let brk = s[401].expect("scored");
        assert!(brk > 0.6, "break in the pattern scored {brk}");
    }

    #[test]
    fn a_value_beyond_the_range_seen_is_fully_novel() {
        let mut d = ContextDetector::new(8, 4, 0, 10, 512);
        let mut xs: Vec<f64> = (0..300).map(|i| (i % 7) as f64).collect();
        xs.push(50.0);
        let s = run(&mut d, &xs);
        assert_eq!(s[300], Some(1.0));
    }

    #[test]
    fn one_alarm_per_episode_and_memory_stays_under_the_ceiling() {
        let mut d = ContextDetector::new(14, 6, 100, 10, 64);
        // Pseudo-random walk: many contexts.
        let mut x = 0.0f64;
        let xs: Vec<f64> = (0..5000)
            .map(|i| {
                x += (((i * 7919) % 13) as f64 - 6.0) * 0.3;
                x
            })
            .collect();
        let _ = run(&mut d, &xs);
        assert!(d.table.len() <= 64, "{}", d.table.len());
        // Two novel samples in a row: the second is damped.
        let mut e = ContextDetector::new(8, 2, 100, 5, 512);
        let mut ys: Vec<f64> = (0..200).map(|i| (i % 2) as f64).collect();
        ys.extend([100.0, 200.0]);
        let s = run(&mut e, &ys);
        assert_eq!(s[200], Some(1.0));
        assert!(s[201].expect("scored") <= 0.5, "{:?}", s[201]);
    }

    #[test]
    fn nan_is_not_scored_and_reset_forgets() {
        let mut d = ContextDetector::new(8, 3, 0, 3, 512);
        assert_eq!(d.score(0, f64::NAN), None);
        let _ = run(&mut d, &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        assert!(!d.table.is_empty());
        d.reset();
        assert!(d.table.is_empty());
        assert_eq!(d.score(0, 1.0), None);
    }
}
