//! The parameter search of `autopilot detect eval --trials N --seed S`: for
//! each detector kind, its defaults followed by `N − 1` parameter sets drawn
//! from the kind's search space by a seeded generator, so a search is a
//! command anyone can rerun and get the same candidates.
//!
//! Pure: a seed in, parameter sets out. Must not score or choose (that is
//! `logo`), so the search cannot see labels.

use super::detectors::{CadParams, DetectorKind, DetectorParams, defaults};

/// SplitMix64: tiny, seeded, and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform in `[lo, hi]`.
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }

    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.unit() * (hi - lo)
    }

    /// Log-uniform integer in `[lo, hi]`.
    fn count(&mut self, lo: u32, hi: u32) -> u32 {
        (self.log_uniform(f64::from(lo), f64::from(hi)).round() as u32).clamp(lo, hi)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[(self.next_u64() % from.len() as u64) as usize]
    }
}

/// Rounds to 3 significant digits so candidates print and compare sanely.
fn sig3(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mag = 10f64.powi(2 - x.abs().log10().floor() as i32);
    (x * mag).round() / mag
}

/// One draw from `kind`'s search space; `None` for kinds without one
/// (forecasts need a threshold of their own, `diff` an inner detector).
pub fn draw(kind: DetectorKind, rng: &mut Rng) -> Option<DetectorParams> {
    Some(match kind {
        DetectorKind::Ewma => DetectorParams::Ewma {
            alpha: sig3(rng.log_uniform(0.001, 0.3)),
            half_life_seconds: None,
            warmup: rng.count(10, 500),
            limit: 5.0,
        },
        DetectorKind::Mad => DetectorParams::Mad {
            window: rng.count(30, 4000),
            window_seconds: None,
            warmup: rng.count(10, 300),
            limit: 5.0,
        },
        DetectorKind::Seasonal => DetectorParams::Seasonal {
            period_seconds: rng.pick(&[86_400, 604_800]),
            buckets: rng.pick(&[24, 48, 96, 168]),
            alpha: sig3(rng.log_uniform(0.01, 0.5)),
            min_cycles: rng.pick(&[1, 2, 3]),
            limit: 5.0,
        },
        DetectorKind::Cusum => DetectorParams::Cusum {
            alpha: sig3(rng.log_uniform(0.0005, 0.1)),
            half_life_seconds: None,
            k: sig3(rng.uniform(0.0, 2.0)),
            warmup: rng.count(10, 500),
            limit: sig3(rng.log_uniform(2.0, 30.0)),
        },
        DetectorKind::Gaussian => DetectorParams::Gaussian {
            window: rng.count(100, 10_000),
            step: rng.pick(&[1, 10, 100]),
        },
        DetectorKind::Ensemble => draw_ensemble(rng),
        DetectorKind::Context => DetectorParams::Context {
            levels: rng.pick(&[4, 6, 8, 10, 12, 14]),
            order: rng.pick(&[1, 2, 3, 4, 5, 6]),
            rest: rng.pick(&[0, 20, 50, 100, 200, 500, 1000]),
            warmup: rng.pick(&[20, 50, 100, 200, 400]),
            max_contexts: 1024,
        },
        DetectorKind::Cad => DetectorParams::Cad(CadParams {
            bits: rng.pick(&[2, 3, 4]),
            warmup: rng.pick(&[150, 300, 500, 750]),
            margin: rng.pick(&[0.0, 0.1, 0.25]),
            rest: rng.pick(&[0, 50, 100, 150, 300]),
            max_left: 7,
            max_active: rng.pick(&[7, 15, 30]),
            max_contexts: defaults::cad::MAX_CONTEXTS,
            memory: rng.pick(&[500, 1000, 2000, 4000]),
            stride: defaults::cad::STRIDE,
        }),
        DetectorKind::Entropy => DetectorParams::Entropy {
            window: rng.pick(&[16, 24, 32, 48, 64, 96, 128]),
            bins: rng.pick(&[4, 6, 8, 10, 16]),
            refs: rng.pick(&[4, 8, 16, 32]),
            rest: rng.pick(&[0, 20, 50, 100, 200, 500, 1000]),
            warmup: rng.pick(&[100, 200, 400, 750]),
        },
        DetectorKind::Knn => DetectorParams::Knn {
            dim: rng.pick(&[1, 2, 4, 8, 12, 19]),
            train: rng.pick(&[64, 128, 256, 512]),
            calib: rng.pick(&[64, 128, 256, 512]),
            k: rng.pick(&[1, 3, 5, 10, 20]),
            rest: rng.pick(&[0, 20, 50, 100, 200, 500, 1000]),
        },
        DetectorKind::Decompose => DetectorParams::Decompose {
            period_seconds: rng.pick(&[3_600, 86_400, 604_800]),
            buckets: rng.pick(&[12, 24, 48, 96, 168]),
            cycles: rng.pick(&[3, 5, 8, 16]),
            window: rng.count(30, 2000),
            limit: 5.0,
            rest: rng.pick(&[0, 20, 50, 100, 200, 500, 1000]),
            warmup: rng.pick(&[20, 50, 100, 200, 400]),
        },
        DetectorKind::Rank => draw_rank(rng),
        DetectorKind::Forecast | DetectorKind::Diff => return None,
    })
}

/// The ensemble's space: a MAD and a MAD of differences sharing one
/// window and warm-up, and a refractory span.
fn draw_ensemble(rng: &mut Rng) -> DetectorParams {
    let (window, warmup) = (rng.count(100, 5000), rng.count(20, 500));
    let limit = 3.0;
    let mad = || DetectorParams::Mad {
        window,
        window_seconds: None,
        warmup,
        limit,
    };
    DetectorParams::Ensemble {
        members: vec![
            mad(),
            DetectorParams::Diff {
                inner: Box::new(mad()),
            },
        ],
        refractory: rng.pick(&[0, 50, 200, 500, 1000, 2000, 5000]),
    }
}

/// The rank ensemble's space, learned on the training folds: which
/// members (each at its defaults or with its own drawn parameters) and
/// which combination rule.
fn draw_rank(rng: &mut Rng) -> DetectorParams {
    let pool = [
        DetectorKind::Context,
        DetectorKind::Knn,
        DetectorKind::Decompose,
        DetectorKind::Entropy,
        DetectorKind::Ewma,
        DetectorKind::Mad,
    ];
    let mut members = Vec::new();
    let mut chosen = 0u32;
    while chosen.count_ones() < 2 {
        chosen |= 1 << (rng.next_u64() % pool.len() as u64);
        if rng.unit() < 0.3 {
            chosen |= 1 << (rng.next_u64() % pool.len() as u64);
        }
    }
    for (i, k) in pool.into_iter().enumerate() {
        if chosen & (1 << i) != 0 {
            let member = if rng.unit() < 0.5 {
                k.default_params()
            } else {
                draw(k, rng)
            };
            members.extend(member);
        }
    }
    DetectorParams::Rank {
        members,
        memory: rng.pick(&[100, 256, 500, 1000]),
        fisher: rng.unit() < 0.5,
        rest: rng.pick(&[0, 20, 50, 100, 200, 500, 1000]),
    }
}

/// The candidates of a search: `kind`'s defaults, then up to `trials − 1`
/// distinct draws seeded by `seed` (fewer if draws repeat).
pub fn candidates(kind: DetectorKind, trials: u32, seed: u64) -> Vec<DetectorParams> {
    let mut out: Vec<DetectorParams> = kind.default_params().into_iter().collect();
    // One stream per kind, so adding a kind does not change the others.
    let mut rng = Rng::new(seed ^ (kind as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    for _ in 1..trials.max(1) {
        match draw(kind, &mut rng) {
            Some(p) if !out.contains(&p) => out.push(p),
            Some(_) => {}
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_candidates_and_another_seed_others() {
        for kind in DetectorKind::ALL {
            let a = candidates(kind, 8, 17);
            assert_eq!(a, candidates(kind, 8, 17), "{kind:?}");
            if kind.default_params().is_some() && draw(kind, &mut Rng::new(0)).is_some() {
                assert_eq!(
                    Some(&a[0]),
                    kind.default_params().as_ref(),
                    "defaults first"
                );
                assert!(a.len() > 1, "{kind:?}");
                assert_ne!(a, candidates(kind, 8, 18), "{kind:?}");
            }
        }
    }

    #[test]
    fn draws_stay_in_the_ranges_specs_accept() {
        let mut rng = Rng::new(1);
        for _ in 0..200 {
            let Some(DetectorParams::Ewma { alpha, .. }) = draw(DetectorKind::Ewma, &mut rng)
            else {
                panic!("ewma draws ewma");
            };
            assert!((0.001..=0.3).contains(&alpha), "{alpha}");
        }
        let u: Vec<f64> = (0..1000).map(|_| rng.unit()).collect();
        assert!(u.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = u.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "{mean}");
    }
}
