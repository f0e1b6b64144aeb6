//! CAD OSE, online: Smirnov's Contextual Anomaly Detector (Open Source
//! Edition, as NAB runs it), written from a description of its algorithm,
//! with the one change an agent needs: the value range is learnt as the
//! series goes, instead of being read from the whole file ahead of time.
//! A value outside it widens it (by `margin` of the new span beyond the
//! value), and the latest `memory` samples are relearnt in the new levels:
//! the old contexts speak of levels that no longer exist.
//!
//! A sample becomes a few *facts*: the bits of its level (`bits` bits: the
//! range in `2^bits − 1` equal slices, its high end a level of its own, as
//! in CAD's encoding). A *context* pairs a left semi-context (a set of facts of the
//! previous step: its sensor facts and the contexts that were active then,
//! as "neuron" facts) with a right semi-context (a set of this step's
//! sensor facts). At each step:
//!
//! 1. the transition (previous left group → this step's facts) is looked
//!    up, and created if new (a *zero-level* context);
//! 2. the contexts whose left side is wholly in the previous left group are
//!    *selected*; those whose right side is wholly in this step's facts are
//!    *active* (and count one more activation). When the transition was
//!    new, the partial overlaps of zero-level contexts with it are
//!    candidates for new, more general contexts;
//! 3. the `max_active` most activated active contexts become this step's
//!    neuron facts: the left group of the next step, which thereby carries
//!    the temporal context of several steps;
//! 4. score = `(1 − active/selected + new/candidates) / 2`: how little of
//!    what the past predicted happened, plus how much of what happened is
//!    new. A known transition scores at most 0.5.
//!
//! One alarm per episode: after a raw score of at least 0.75, the next
//! `rest` samples report 0 (as CAD does; NAB sets `rest` to a fifth of its
//! probation).
//!
//! No score for the first `warmup` samples.
//!
//! Memory: nothing is forgotten until the tables hold `max_contexts`
//! contexts; then the latest remembered samples that fit in half of that
//! are relearnt (the range is kept). Cost per sample: on a known
//! transition, the contexts of the left semi-contexts wholly in the
//! previous group; on a new one, those of every left semi-context sharing
//! a fact with it, so bounded by `max_contexts`; plus a replay of up to
//! `memory` samples when the range widens or the ceiling is reached.
//! Pure, like every detector.

use std::collections::{HashMap, HashSet, VecDeque};

use super::{CadParams, Detector, DetectorKind, Scored};

/// Neuron facts (an active context's id) are kept apart from sensor facts.
const NEURON: u32 = 1 << 31;
/// The raw score from which an alarm starts a rest.
const ALARM: f64 = 0.75;

#[derive(Default)]
struct Semi {
    facts: Vec<u32>,
    /// The facts of this semi-context present in the step it was last
    /// crossed with.
    matched: Vec<u32>,
}

#[derive(Default)]
struct Side {
    ids: HashMap<Vec<u32>, usize>,
    semis: Vec<Semi>,
    by_fact: HashMap<u32, Vec<usize>>,
    /// Each semi-context under its highest fact: finds the ones wholly in
    /// a group without crossing every one that shares a fact with it.
    by_anchor: HashMap<u32, Vec<usize>>,
    crossed: Vec<usize>,
}

impl Side {
    fn get_or_add(&mut self, facts: &[u32]) -> usize {
        if let Some(&id) = self.ids.get(facts) {
            return id;
        }
        let id = self.semis.len();
        for &f in facts {
            self.by_fact.entry(f).or_default().push(id);
        }
        if let Some(&top) = facts.iter().max() {
            self.by_anchor.entry(top).or_default().push(id);
        }
        self.ids.insert(facts.to_vec(), id);
        self.semis.push(Semi {
            facts: facts.to_vec(),
            matched: Vec::new(),
        });
        id
    }

    /// The semi-contexts whose facts are all in `group` (sorted).
    fn wholly_in(&self, group: &[u32]) -> Vec<usize> {
        let mut out = Vec::new();
        for g in group {
            for &id in self.by_anchor.get(g).map_or(&[][..], Vec::as_slice) {
                let facts = &self.semis[id].facts;
                if facts.iter().all(|f| group.binary_search(f).is_ok()) {
                    out.push(id);
                }
            }
        }
        out
    }

    /// Marks which facts of each semi-context are present in `facts`.
    fn cross(&mut self, facts: &[u32]) {
        for &id in &self.crossed {
            self.semis[id].matched.clear();
        }
        self.crossed.clear();
        for &f in facts {
            if let Some(ids) = self.by_fact.get(&f) {
                for &id in ids {
                    let s = &mut self.semis[id];
                    if s.matched.is_empty() {
                        self.crossed.push(id);
                    }
                    s.matched.push(f);
                }
            }
        }
    }
}

struct Context {
    activations: u32,
    zero_level: bool,
    right: usize,
}

/// The context machine: everything that is cleared at the memory ceiling.
#[derive(Default)]
struct Machine {
    left: Side,
    right: Side,
    contexts: Vec<Context>,
    /// Per left semi-context, its contexts in creation order.
    of_left: Vec<Vec<usize>>,
    pair: HashMap<(usize, usize), usize>,
    /// The previous step's left group (sensor and neuron facts, sorted).
    left_group: Vec<u32>,
    just_created: Option<usize>,
}

type Candidate = (Vec<u32>, Vec<u32>);

#[cfg(test)]
impl Side {
    /// Heap bytes held, approximately (hash tables at one word of control
    /// and their entries per bucket).
    fn footprint(&self) -> usize {
        use std::mem::size_of;
        let facts: usize = self
            .semis
            .iter()
            .map(|s| 4 * (2 * s.facts.capacity() + s.matched.capacity()))
            .sum();
        let lists: usize = (self.by_fact.values().chain(self.by_anchor.values()))
            .map(|v| 8 * v.capacity() + 40)
            .sum();
        facts
            + lists
            + self.semis.capacity() * size_of::<Semi>()
            + self.ids.capacity() * (size_of::<(Vec<u32>, usize)>() + 1)
            + self.crossed.capacity() * 8
    }
}

#[cfg(test)]
impl Machine {
    fn footprint(&self) -> usize {
        use std::mem::size_of;
        self.left.footprint()
            + self.right.footprint()
            + self.contexts.capacity() * size_of::<Context>()
            + self
                .of_left
                .iter()
                .map(|v| 24 + 8 * v.capacity())
                .sum::<usize>()
            + self.pair.capacity() * (size_of::<((usize, usize), usize)>() + 1)
            + 4 * self.left_group.capacity()
    }
}

impl Machine {
    /// Gets or creates the context of `(lf, rf)`; whether it was created.
    fn add(&mut self, lf: &[u32], rf: &[u32], zero_level: bool) -> (usize, bool) {
        let l = self.left.get_or_add(lf);
        let r = self.right.get_or_add(rf);
        if self.of_left.len() <= l {
            self.of_left.resize_with(l + 1, Vec::new);
        }
        if let Some(&c) = self.pair.get(&(l, r)) {
            return (c, false);
        }
        let c = self.contexts.len();
        self.contexts.push(Context {
            activations: 0,
            zero_level,
            right: r,
        });
        self.of_left[l].push(c);
        self.pair.insert((l, r), c);
        (c, true)
    }

    /// Selected and active contexts of this step, and the candidates for
    /// new ones (only when the transition was new).
    fn activate(
        &mut self,
        new_transition: bool,
        max_left: usize,
    ) -> (Vec<usize>, usize, Vec<Candidate>) {
        let (mut active, mut selected, mut candidates) = (Vec::new(), 0, Vec::new());
        // Only a new transition generalises, from partial overlaps too;
        // otherwise the contexts wholly in the previous group are all
        // that count, found by their anchors (most steps).
        let lefts = if new_transition {
            let group = std::mem::take(&mut self.left_group);
            self.left.cross(&group);
            self.left_group = group;
            std::mem::take(&mut self.left.crossed)
        } else {
            self.left.wholly_in(&self.left_group)
        };
        for &l in &lefts {
            let ls = &self.left.semis[l];
            let whole_left = !new_transition || ls.matched.len() == ls.facts.len();
            for &c in self.of_left.get(l).map_or(&[][..], Vec::as_slice) {
                if Some(c) == self.just_created {
                    continue;
                }
                let ctx = &mut self.contexts[c];
                let rs = &self.right.semis[ctx.right];
                let generalise = ctx.zero_level
                    && new_transition
                    && !rs.matched.is_empty()
                    && ls.matched.len() <= max_left;
                if whole_left {
                    selected += 1;
                    if rs.matched.len() == rs.facts.len() {
                        ctx.activations += 1;
                        active.push(c);
                    } else if generalise {
                        candidates.push((ls.matched.clone(), rs.matched.clone()));
                    }
                } else if generalise {
                    candidates.push((ls.matched.clone(), rs.matched.clone()));
                }
            }
        }
        if new_transition {
            self.left.crossed = lefts;
        }
        self.just_created = None;
        (active, selected, candidates)
    }

    /// One step with this sample's sensor facts (sorted); the raw score.
    fn step(&mut self, facts: &[u32], max_left: usize, max_active: usize, cap: usize) -> f64 {
        let mut distinct: HashSet<Candidate> = HashSet::new();
        let new_transition = if self.left_group.is_empty() {
            false
        } else {
            let lg = std::mem::take(&mut self.left_group);
            let (c, created) = self.add(&lg, facts, true);
            if created {
                self.just_created = Some(c);
            } else {
                self.contexts[c].zero_level = true;
            }
            distinct.insert((lg.clone(), facts.to_vec()));
            self.left_group = lg;
            created
        };
        self.right.cross(facts);
        let (mut active, selected, candidates) = self.activate(new_transition, max_left);
        let share_active = if selected > 0 {
            active.len() as f64 / selected as f64
        } else {
            0.0
        };
        // The most activated contexts carry the step forward.
        active.sort_by_key(|&c| (std::cmp::Reverse(self.contexts[c].activations), c));
        active.truncate(max_active);
        let mut group: Vec<u32> = facts.to_vec();
        group.extend(active.iter().map(|&c| NEURON | c as u32));
        group.sort_unstable();
        let mut created = 0usize;
        for (lf, rf) in &candidates {
            if self.contexts.len() >= cap {
                break;
            }
            created += usize::from(self.add(lf, rf, false).1);
        }
        distinct.extend(candidates);
        self.left_group = group;
        let added = created + usize::from(new_transition);
        let share_new = if new_transition && !distinct.is_empty() {
            added as f64 / distinct.len() as f64
        } else {
            0.0
        };
        ((1.0 - share_active + share_new) / 2.0).clamp(0.0, 1.0)
    }
}

pub(super) struct CadDetector {
    p: CadParams,
    /// The range the levels slice: its low and high ends.
    range: Option<(f64, f64)>,
    /// The latest `memory` samples, replayed when the range widens.
    history: VecDeque<f64>,
    machine: Machine,
    /// Raw scores of the last `rest` samples.
    recent: VecDeque<f64>,
    seen: u64,
}

impl CadDetector {
    pub(super) fn new(p: CadParams) -> Self {
        CadDetector {
            p: CadParams {
                bits: p.bits.clamp(1, 8),
                margin: p.margin.max(0.0),
                max_contexts: p.max_contexts.max(64),
                memory: p.memory.max(1),
                ..p
            },
            range: None,
            history: VecDeque::new(),
            machine: Machine::default(),
            recent: VecDeque::new(),
            seen: 0,
        }
    }

    fn top(&self) -> u32 {
        (1 << self.p.bits) - 1
    }

    /// The level of `x`: `top` equal slices of the range, and the range's
    /// high end a level of its own (CAD's encoding).
    fn level(&self, x: f64) -> u32 {
        let Some((lo, hi)) = self.range else {
            return 0;
        };
        let step = if hi > lo {
            (hi - lo) / f64::from(self.top())
        } else {
            1.0
        };
        let l = ((x - lo) / step).floor();
        if l.is_nan() || l < 0.0 {
            0
        } else {
            (l as u32).min(self.top())
        }
    }

    fn facts(&self, level: u32) -> Vec<u32> {
        (0..self.p.bits)
            .map(|i| 2 * i + ((level >> i) & 1))
            .collect()
    }

    /// Learns `x` and returns its raw score.
    fn feed(&mut self, x: f64) -> f64 {
        if self.machine.contexts.len() >= self.p.max_contexts as usize {
            self.relearn();
        }
        self.step(x)
    }

    /// Forgets every context and learns the remembered samples again: the
    /// latest of them that fit in half the ceiling, so that learning goes
    /// on for a while before the next time.
    fn relearn(&mut self) {
        let mut take = self.history.len();
        loop {
            self.machine = Machine::default();
            for i in self.history.len() - take..self.history.len() {
                let _ = self.step(self.history[i]);
            }
            if self.machine.contexts.len() < self.p.max_contexts as usize / 2 || take < 64 {
                break;
            }
            take /= 2;
        }
    }

    fn step(&mut self, x: f64) -> f64 {
        let facts = self.facts(self.level(x));
        self.machine.step(
            &facts,
            self.p.max_left as usize,
            self.p.max_active as usize,
            self.p.max_contexts as usize,
        )
    }

    /// Widens the range to take `x` (and `margin` of the new span beyond
    /// it), and relearns the remembered samples in the new levels: the old
    /// contexts speak of levels that no longer exist.
    fn widen(&mut self, x: f64) {
        let Some((lo, hi)) = self.range else {
            self.range = Some((x, x));
            return;
        };
        if (lo..=hi).contains(&x) {
            return;
        }
        let (lo, hi) = (lo.min(x), hi.max(x));
        let extra = self.p.margin * (hi - lo);
        let lo = if x < lo + extra { lo - extra } else { lo };
        let hi = if x > hi - extra { hi + extra } else { hi };
        self.range = Some((lo, hi));
        self.relearn();
    }

    fn remember(&mut self, x: f64, raw: f64) {
        if self.history.len() == self.p.memory as usize {
            self.history.pop_front();
        }
        self.history.push_back(x);
        if self.p.rest > 0 {
            if self.recent.len() == self.p.rest as usize {
                self.recent.pop_front();
            }
            self.recent.push_back(raw);
        }
    }
}

impl Detector for CadDetector {
    fn name(&self) -> &'static str {
        DetectorKind::Cad.name()
    }

    fn score(&mut self, _at: i64, x: f64) -> Option<Scored> {
        if !x.is_finite() {
            return None;
        }
        self.widen(x);
        let level = self.level(x);
        let raw = self.feed(x);
        let resting = self.recent.iter().any(|&r| r >= ALARM);
        self.remember(x, raw);
        self.seen += 1;
        let (lo, hi) = self.range.unwrap_or((x, x));
        (self.seen > u64::from(self.p.warmup)).then(|| Scored {
            score: if resting { 0.0 } else { raw },
            baseline: (lo + hi) / 2.0,
            measure: f64::from(level),
            time_to_threshold: None,
            judged: None,
        })
    }

    fn reset(&mut self) {
        *self = Self::new(self.p);
    }

    fn explain(&self, signal: &str, value: f64, s: &Scored) -> String {
        format!(
            "{signal} {value:.4} (level {} of {}) broke the contexts its recent levels predicted: score {:.2}",
            s.measure as u32 + 1,
            self.top() + 1,
            s.score
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(d: &mut CadDetector, xs: &[f64]) -> Vec<Option<f64>> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| d.score(i as i64 * 300, x).map(|s| s.score))
            .collect()
    }

    #[test]
    fn a_learned_pattern_is_not_surprising_and_a_break_in_it_is() {
        let mut d = CadDetector::new(CadParams {
            bits: 3,
            warmup: 40,
            margin: 0.0,
            rest: 0,
            max_left: 7,
            max_active: 15,
            max_contexts: 100_000,
            memory: 1000,
        });
        let pattern = [0.0, 3.0, 7.0, 3.0];
        let mut xs: Vec<f64> = (0..600).map(|i| pattern[i % 4]).collect();
        // Known values in an order never seen: 0 → 7.
        xs.extend([0.0, 7.0, 3.0]);
        let s = run(&mut d, &xs);
        assert!(s[..40].iter().all(Option::is_none), "warm-up");
        let late = s[500..600].iter().flatten().copied().fold(0.0, f64::max);
        assert!(late <= 0.5, "a learned pattern still surprising: {late}");
        let brk = s[601].expect("scored");
        assert!(brk >= ALARM, "a break in the pattern scored {brk}");
    }

    #[test]
    fn a_value_beyond_the_range_widens_it_and_is_new() {
        let mut d = CadDetector::new(CadParams {
            bits: 3,
            warmup: 40,
            margin: 0.1,
            rest: 0,
            max_left: 7,
            max_active: 15,
            max_contexts: 100_000,
            memory: 1000,
        });
        let mut xs: Vec<f64> = (0..600).map(|i| (i % 5) as f64).collect();
        xs.push(40.0);
        let s = run(&mut d, &xs);
        let late = s[500..600].iter().flatten().copied().fold(0.0, f64::max);
        assert!(late <= 0.5, "{late}");
        assert!(s[600].expect("scored") >= ALARM, "{:?}", s[600]);
        let (lo, hi) = d.range.expect("range");
        assert!(lo <= 0.0 && hi >= 40.0, "{lo}..{hi}");
    }

    #[test]
    fn after_an_alarm_the_rest_reports_nothing() {
        let mut d = CadDetector::new(CadParams {
            bits: 3,
            warmup: 40,
            margin: 0.0,
            rest: 20,
            max_left: 7,
            max_active: 15,
            max_contexts: 100_000,
            memory: 1000,
        });
        let mut xs: Vec<f64> = (0..400).map(|i| (i % 2) as f64 * 7.0).collect();
        xs.extend([3.0, 5.0, 3.0, 5.0]);
        let s = run(&mut d, &xs);
        assert!(s[400].expect("scored") >= ALARM, "{:?}", s[400]);
        assert!(
            s[401..404].iter().all(|&v| v == Some(0.0)),
            "{:?}",
            &s[401..404]
        );
    }

    #[test]
    fn memory_stays_under_its_ceiling_and_relearning_keeps_the_latest_samples() {
        let mut d = CadDetector::new(CadParams {
            bits: 4,
            warmup: 20,
            margin: 0.1,
            rest: 0,
            max_left: 7,
            max_active: 15,
            max_contexts: 500,
            memory: 1000,
        });
        let mut x = 0.0f64;
        let mut most = 0;
        for i in 0..20_000u64 {
            x = (x + ((i * 7919) % 13) as f64 - 6.0).clamp(-40.0, 40.0);
            let _ = d.score(i as i64, x);
            let n = d.machine.contexts.len();
            assert!(n <= 501, "{n} contexts");
            most = most.max(d.machine.footprint());
        }
        assert_eq!(d.history.len(), 1000);
        // About 200 bytes a context: the ceiling bounds the bytes too.
        assert!(most < 501 * 400, "{most} bytes");
        // Relearnt, not emptied: the contexts of the latest samples remain.
        assert!(d.machine.contexts.len() > 10);
    }

    #[test]
    fn nan_is_not_scored_and_reset_forgets() {
        let mut d = CadDetector::new(CadParams {
            bits: 3,
            warmup: 5,
            margin: 0.0,
            rest: 0,
            max_left: 7,
            max_active: 15,
            max_contexts: 1000,
            memory: 100,
        });
        assert!(d.score(0, f64::NAN).is_none());
        let _ = run(&mut d, &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]);
        assert!(!d.machine.contexts.is_empty());
        d.reset();
        assert!(d.machine.contexts.is_empty() && d.range.is_none());
        assert!(d.score(0, 1.0).is_none());
    }
}
