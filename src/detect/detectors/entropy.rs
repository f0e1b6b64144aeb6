//! Relative entropy over a sliding histogram, after Wang et al.
//! ("Statistical techniques for online anomaly detection in data centers",
//! IM 2011): the distribution of the last `window` samples is compared with a
//! few remembered distributions of the series (its *references*); a window
//! that matches none of them, or only a rarely seen one, is anomalous.
//!
//! Written from the idea. Bins: `bins` equal slices of the range seen during
//! warm-up, widened by a tenth on each side, plus one bin below and one
//! above it, so a move out of the usual range is a distribution of its own.
//! Test: for a window histogram `P` and a reference `Q`, `2·window·KL(P‖Q)`
//! is compared with a chi-square of `bins + 1` degrees of freedom (its upper
//! tail is the p-value that `P` was drawn from `Q`). Score: one minus the
//! best explanation, `max_j p_j · min(1, share_j / RARE)`, where `share_j` is
//! how often reference `j` matched; one alarm per episode for `rest` samples.
//! References are updated once per `window` samples (non-overlapping
//! windows): the best match at `SIGNIFICANCE` counts one more, otherwise the
//! window becomes a new reference, replacing the least used when `refs` are
//! held.
//!
//! Cost per sample: O(`refs` × bins). Memory per series: `window` bytes of
//! bin indices, `bins + 2` counts and `refs × (bins + 2)` probabilities
//! (`f32`): with the defaults (window 48, 8 bins, 8 references) about 450
//! bytes. Pure, like every detector.

use super::{Detector, DetectorKind, Scored};
use crate::detect::stats::{Episodes, chi2_sf};

/// p-value above which a window is taken to come from a reference.
const SIGNIFICANCE: f64 = 0.01;
/// A reference that matched less than this share of windows only partly
/// explains a window that matches it.
const RARE: f64 = 0.1;
/// At most 62 bins inside the range (bin indices are bytes, two outside).
pub const MAX_BINS: u32 = 62;

struct Reference {
    /// Smoothed probabilities, one per bin.
    q: Vec<f32>,
    matched: u32,
}

pub(super) struct EntropyDetector {
    window: usize,
    bins: usize,
    max_refs: usize,
    warmup: u32,
    n: u64,
    /// The range seen during warm-up, then frozen: (low edge, bin width).
    min: f64,
    max: f64,
    edges: Option<(f64, f64)>,
    /// Bin indices of the last `window` samples, oldest at `head`.
    ring: Vec<u8>,
    head: usize,
    counts: Vec<u32>,
    /// Samples since the last reference update.
    since_update: usize,
    refs: Vec<Reference>,
    episodes: Episodes,
}

impl EntropyDetector {
    pub(super) fn new(window: u32, bins: u32, refs: u32, rest: u32, warmup: u32) -> Self {
        let window = window.clamp(4, 65_535) as usize;
        let bins = bins.clamp(2, MAX_BINS) as usize;
        Self {
            window,
            bins,
            max_refs: refs.clamp(1, 64) as usize,
            warmup: warmup.max(2),
            n: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            edges: None,
            ring: Vec::with_capacity(window),
            head: 0,
            counts: vec![0; bins + 2],
            since_update: 0,
            refs: Vec::new(),
            episodes: Episodes::new(u64::from(rest)),
        }
    }

    /// Bytes of state at capacity, for the memory bound the tests check.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.window
            + 4 * (self.bins + 2)
            + self.max_refs * (std::mem::size_of::<Reference>() + 4 * (self.bins + 2))
    }

    fn bin(&self, x: f64) -> u8 {
        let Some((lo, width)) = self.edges else {
            return 0;
        };
        let b = ((x - lo) / width).floor();
        if b < 0.0 {
            self.bins as u8
        } else if b >= self.bins as f64 {
            self.bins as u8 + 1
        } else {
            b as u8
        }
    }

    fn freeze_range(&mut self) {
        let span = self.max - self.min;
        let span = if span > 0.0 {
            span
        } else {
            // A flat warm-up: a tenth of the level, or 1.
            (0.1 * self.min.abs())
                .max(1e-9)
                .max(if self.min == 0.0 { 1.0 } else { 0.0 })
        };
        let lo = self.min - 0.1 * span;
        self.edges = Some((lo, 1.2 * span / self.bins as f64));
    }

    /// `2·window·KL(P‖Q)` of the current window against `r`.
    fn statistic(&self, r: &Reference) -> f64 {
        let w = self.ring.len() as f64;
        let mut kl = 0.0;
        for (c, q) in self.counts.iter().zip(&r.q) {
            if *c > 0 {
                let p = f64::from(*c) / w;
                kl += p * (p / f64::from(*q)).ln();
            }
        }
        2.0 * w * kl.max(0.0)
    }

    fn p_values(&self) -> impl Iterator<Item = f64> + '_ {
        let df = (self.bins + 1) as f64;
        self.refs
            .iter()
            .map(move |r| chi2_sf(self.statistic(r), df))
    }

    /// How well the remembered distributions explain the current window.
    fn explained(&self) -> f64 {
        let total: f64 = self.refs.iter().map(|r| f64::from(r.matched)).sum();
        self.p_values()
            .zip(&self.refs)
            .map(|(p, r)| p * (f64::from(r.matched) / total.max(1.0) / RARE).min(1.0))
            .fold(0.0, f64::max)
    }

    fn update_references(&mut self) {
        let best = self
            .p_values()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, p)) if p >= SIGNIFICANCE => self.refs[i].matched += 1,
            _ => {
                let w = self.ring.len() as f32;
                let k = self.counts.len() as f32;
                let q = self
                    .counts
                    .iter()
                    .map(|&c| (c as f32 + 0.5) / (w + 0.5 * k))
                    .collect();
                let r = Reference { q, matched: 1 };
                if self.refs.len() < self.max_refs {
                    self.refs.push(r);
                } else if let Some(least) = self.refs.iter_mut().min_by_key(|r| r.matched) {
                    *least = r;
                }
            }
        }
    }
}

impl Detector for EntropyDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Entropy.name()
    }
    fn score(&mut self, _at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        self.n += 1;
        if self.edges.is_none() {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
            if self.n >= u64::from(self.warmup) {
                self.freeze_range();
            }
            self.episodes.damp(0.0);
            return None;
        }
        let b = self.bin(x);
        if self.ring.len() < self.window {
            self.ring.push(b);
        } else {
            let old = std::mem::replace(&mut self.ring[self.head], b);
            self.counts[old as usize] -= 1;
            self.head = (self.head + 1) % self.window;
        }
        self.counts[b as usize] += 1;
        if self.ring.len() < self.window {
            self.episodes.damp(0.0);
            return None;
        }
        // The first full window is the first reference, not a finding.
        let out = (!self.refs.is_empty()).then(|| {
            let raw = 1.0 - self.explained();
            let (lo, width) = self.edges.unwrap_or((0.0, 1.0));
            Scored {
                score: self.episodes.damp(raw),
                baseline: lo + width * self.bins as f64 / 2.0,
                measure: raw,
                time_to_threshold: None,
                judged: None,
            }
        });
        if out.is_none() {
            self.episodes.damp(0.0);
        }
        self.since_update += 1;
        if self.refs.is_empty() || self.since_update >= self.window {
            self.since_update = 0;
            self.update_references();
        }
        out
    }
    fn reset(&mut self) {
        *self = Self::new(
            self.window as u32,
            self.bins as u32,
            self.max_refs as u32,
            self.episodes.span() as u32,
            self.warmup,
        );
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "the distribution of {signal}'s last {} samples (now {value:.4}) matches none of its {} usual distributions: surprise {:.3}",
            self.window,
            self.refs.len(),
            s.measure
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut EntropyDetector, xs: &[f64]) -> Vec<Option<f64>> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| d.score(i as i64 * 300, x).map(|s| s.score))
            .collect()
    }

    /// A deterministic noise in [0, 1).
    fn noise(i: usize) -> f64 {
        ((i * 7919 + 13) % 101) as f64 / 101.0
    }

    #[test]
    fn a_learned_distribution_is_not_surprising_and_a_new_one_is() {
        let mut d = EntropyDetector::new(40, 8, 8, 0, 100);
        let mut xs: Vec<f64> = (0..2000).map(|i| 10.0 + noise(i)).collect();
        // Same range, but the values pile up at the top: a new distribution.
        xs.extend((0..60).map(|i| 10.9 + 0.1 * noise(i)));
        let s = run(&mut d, &xs);
        assert!(s[..139].iter().all(Option::is_none), "warm-up");
        let late = s[1000..2000].iter().flatten().copied().fold(0.0, f64::max);
        assert!(late < 0.9, "learned distribution still surprising: {late}");
        let brk = s[2000..].iter().flatten().copied().fold(0.0, f64::max);
        assert!(brk > 0.999, "new distribution scored {brk}");
    }

    #[test]
    fn memory_is_bounded_by_the_reference_ceiling() {
        let mut d = EntropyDetector::new(20, 8, 4, 0, 50);
        // A drifting series makes a new distribution every window.
        let xs: Vec<f64> = (0..20_000).map(|i| (i / 20) as f64 % 37.0).collect();
        let _ = run(&mut d, &xs);
        assert!(d.refs.len() <= 4, "{}", d.refs.len());
        assert!(d.ring.len() <= 20);
        assert!(d.bytes() < 1024, "{} bytes", d.bytes());
    }

    #[test]
    fn nan_is_not_scored_and_reset_forgets() {
        let mut d = EntropyDetector::new(10, 4, 4, 0, 5);
        assert_eq!(d.score(0, f64::NAN), None);
        let _ = run(&mut d, &(0..100).map(noise).collect::<Vec<_>>());
        assert!(!d.refs.is_empty());
        assert_eq!(d.score(0, f64::INFINITY), None);
        d.reset();
        assert!(d.refs.is_empty() && d.edges.is_none());
        assert_eq!(d.score(0, 1.0), None);
    }
}
