//! An ensemble that combines its members by calibrated rank rather than by
//! raw score: each member's score becomes its p-value against that member's
//! own last `memory` scores on this series (the share of them at least as
//! high, conformal style), and the p-values are combined, so a member whose
//! scores run high on this series does not drown the others and "0.99" means
//! "rarer than 99% of this series' recent samples" whatever the members.
//!
//! Combination: Bonferroni's `m · min p` (one member is enough), or Fisher's
//! `−2 Σ ln p` against a chi-square of `2m` degrees of freedom (the members
//! agree). The score is one minus the combined p-value; past a member's
//! largest remembered score, its p-value keeps shrinking in proportion, so
//! large anomalies stay rankable. One alarm per episode for `rest` samples.
//! Which members and which rule is what the search learns on the training
//! folds (`search.rs`); nothing here sees labels.
//!
//! Cost: the members' plus O(log `memory`) search and an O(`memory`)
//! insertion per member. Memory: the members' plus `memory` scores per
//! member in a sorted window (3 × 8 bytes each): 6 KB per member at the
//! default 256. Pure.

use super::calibrate::p_value;
use super::{Detector, DetectorKind, Scored};
use crate::detect::stats::{Episodes, SortedWindow, chi2_sf};

/// A member's p-value counts once it has this many scores behind it.
const MIN_HISTORY: usize = 30;

pub(super) struct RankDetector {
    members: Vec<(Box<dyn Detector>, SortedWindow)>,
    fisher: bool,
    episodes: Episodes,
}

impl RankDetector {
    pub(super) fn new(
        members: Vec<Box<dyn Detector>>,
        memory: u32,
        fisher: bool,
        rest: u32,
    ) -> Self {
        let memory = memory.clamp(MIN_HISTORY as u32, 100_000) as usize;
        Self {
            members: members
                .into_iter()
                .map(|d| (d, SortedWindow::new(memory)))
                .collect(),
            fisher,
            episodes: Episodes::new(u64::from(rest)),
        }
    }

    /// Bytes of the calibration windows at capacity (members' own state
    /// comes on top).
    #[cfg(test)]
    pub(super) fn calibration_bytes(&self) -> usize {
        self.members
            .iter()
            .map(|(_, w)| w.bytes_at_capacity())
            .sum()
    }
}

impl Detector for RankDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Rank.name()
    }
    fn score(&mut self, at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        let mut ps = [1.0f64; 16];
        let mut used = 0;
        let mut strongest: Option<(f64, Scored)> = None;
        for (d, w) in &mut self.members {
            let Some(s) = d.score(at, x) else { continue };
            if w.len() >= MIN_HISTORY && used < ps.len() {
                let p = p_value(w, s.score);
                ps[used] = p;
                used += 1;
                if strongest.is_none_or(|(q, _)| p < q) {
                    strongest = Some((p, s));
                }
            }
            w.push(s.score);
        }
        let Some((_, best)) = strongest else {
            self.episodes.damp(0.0);
            return None;
        };
        let ps = &ps[..used];
        let combined = if self.fisher {
            let stat: f64 = ps.iter().map(|p| -2.0 * p.max(1e-300).ln()).sum();
            chi2_sf(stat, 2.0 * used as f64)
        } else {
            (used as f64 * ps.iter().copied().fold(1.0, f64::min)).min(1.0)
        };
        let raw = 1.0 - combined;
        Some(Scored {
            score: self.episodes.damp(raw),
            baseline: best.baseline,
            measure: combined,
            time_to_threshold: None,
            judged: best.judged,
        })
    }
    fn reset(&mut self) {
        for (d, w) in &mut self.members {
            d.reset();
            w.clear();
        }
        self.episodes.clear();
    }
    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        let names: Vec<_> = self.members.iter().map(|(d, _)| d.name()).collect();
        format!(
            "{signal} {value:.4} is rarer than usual for this series by its detectors ({}): combined p-value {:.2e}, baseline {:.4}",
            names.join(", "),
            s.measure,
            s.baseline
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::DetectorParams;
    use super::*;

    fn build(fisher: bool) -> RankDetector {
        let members = vec![
            DetectorParams::Ewma {
                alpha: 0.05,
                half_life_seconds: None,
                warmup: 20,
                limit: 5.0,
            }
            .build(),
            DetectorParams::Mad {
                window: 100,
                window_seconds: None,
                warmup: 20,
                limit: 5.0,
            }
            .build(),
        ];
        RankDetector::new(members, 200, fisher, 0)
    }

    fn noise(i: usize) -> f64 {
        ((i * 7919 + 13) % 101) as f64 / 101.0
    }

    fn run(d: &mut RankDetector, xs: &[f64]) -> Vec<Option<f64>> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| d.score(i as i64 * 60, x).map(|s| s.score))
            .collect()
    }

    #[test]
    fn usual_noise_is_not_surprising_and_a_spike_is_under_either_rule() {
        for fisher in [false, true] {
            let mut d = build(fisher);
            let mut xs: Vec<f64> = (0..1000).map(|i| 10.0 + noise(i)).collect();
            xs.push(30.0);
            let s = run(&mut d, &xs);
            assert!(s[..40].iter().all(Option::is_none), "warm-up");
            let usual: Vec<f64> = s[500..1000].iter().flatten().copied().collect();
            // Calibrated: about 1% of usual samples score above 0.99.
            let high = usual.iter().filter(|&&v| v > 0.99).count();
            assert!(high <= 25, "fisher {fisher}: {high} of 500 above 0.99");
            let spike = s[1000].expect("scored");
            assert!(spike > 0.995, "fisher {fisher}: spike scored {spike}");
        }
    }

    #[test]
    fn calibration_memory_is_bounded() {
        let mut d = build(false);
        let before = d.calibration_bytes();
        let _ = run(&mut d, &(0..5000).map(noise).collect::<Vec<_>>());
        assert_eq!(d.calibration_bytes(), before);
        assert!(d.members.iter().all(|(_, w)| w.len() <= 200));
        assert_eq!(before, 2 * 3 * 200 * 8);
    }

    #[test]
    fn nan_is_not_scored_and_reset_forgets() {
        let mut d = build(true);
        assert_eq!(d.score(0, f64::NAN), None);
        let _ = run(&mut d, &(0..200).map(noise).collect::<Vec<_>>());
        assert!(d.score(0, 0.5).is_some());
        d.reset();
        assert!(d.members.iter().all(|(_, w)| w.len() == 0));
        assert_eq!(d.score(0, 1.0), None);
    }
}
