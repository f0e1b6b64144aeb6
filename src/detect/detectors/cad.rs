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
//! With `stride` above 1, each block of `stride` samples is learnt as one
//! step, as its lowest or highest sample (whichever is farther from the
//! previous block's value, so a one-sample spike is what the block is
//! learnt as) and scored on its last sample; the others score 0. The
//! learning, the bulk of the cost, is then done once a block, for a delay
//! of up to `stride − 1` samples. `warmup`, `rest` and `memory` still
//! count samples.
//!
//! Memory: nothing is forgotten until the tables hold `max_contexts`
//! contexts; then the latest remembered samples that fit in half of that
//! are relearnt (the range is kept). Cost per sample: on a known
//! transition, the contexts of the left semi-contexts wholly in the
//! previous group; on a new one, also a crossing of every left
//! semi-context that has zero-level contexts (the only ones whose partial
//! overlaps generalise), so bounded by `max_contexts`; plus a replay of up
//! to `memory` samples when the range widens or the ceiling is reached.
//! The left semi-contexts wholly in a group are remembered per group (a
//! group recurs), so that only those created since are checked again.
//! About 90–170 bytes a context with its semi-contexts and indexes on NAB,
//! and up to ~140 KB a series of remembered groups. Pure, like every
//! detector.

use super::{CadParams, Detector, DetectorKind, Scored};
use std::collections::{HashMap, HashSet, VecDeque};

mod lefts;
use lefts::{Crossed, Fx, Lefts, hash_facts, mask, signature};

/// Sensor facts are below this (at most 8 bits, two facts each). A neuron
/// fact (an active context's id) is `SENSOR_SPAN + id`: ordered as CAD's
/// `NEURON | id`, sensor facts first and neurons by id, and dense, so that
/// facts index tables directly.
const SENSOR_SPAN: u32 = 16;
/// The most facts in a left group (sensor and neuron): a set of its
/// positions fits a [`Positions`] mask. `max_active` is clamped to fit.
const MAX_GROUP: u32 = 128;
/// A set of positions in the previous left group (which is sorted).
type Positions = u128;
/// The end of a list threaded through an index.
const NONE: u32 = u32::MAX;
/// The raw score from which an alarm starts a rest.
const ALARM: f64 = 0.75;

/// A context, in its left semi-context's run of `Machine::slots`: the
/// contexts a step visits are read in order, not chased through memory.
#[derive(Clone, Copy)]
struct Context {
    /// Creation order: its neuron fact, and ties in ranking.
    id: u32,
    activations: u32,
    /// The right semi-context: a mask of sensor facts.
    right: u16,
    zero_level: bool,
}

const EMPTY: Context = Context {
    id: NONE,
    activations: 0,
    right: 0,
    zero_level: false,
};

/// What one step visits its contexts for.
struct Visit {
    /// This step's sensor facts, as a mask.
    now: u16,
    new_transition: bool,
    max_left: u32,
    /// How many sensor facts a step has (the first of the group).
    bits: usize,
}

/// The context machine: everything that is cleared at the memory ceiling.
#[derive(Default)]
struct Machine {
    left: Lefts,
    /// How many contexts there are.
    contexts: usize,
    /// The contexts, in runs of a power of two slots, one per left
    /// semi-context; a run outgrown is moved to a run twice as long and
    /// left in `free` (by log2 of its length) for a later one.
    slots: Vec<Context>,
    free: Vec<Vec<u32>>,
    /// (left id << 16 | right mask) → the context's index in its run.
    pair: HashMap<u64, u32, Fx>,
    /// The previous step's left group (sensor and neuron facts, sorted).
    group: Vec<u32>,
    /// Per fact, 1 + its position in `group`; 0 when not in it.
    position: Vec<u8>,
    /// The [`signature`] of `group`.
    signature: u64,
    /// The transition created this step, if any: it is not visited.
    just_created: Option<u32>,
    /// This step's active contexts, as [`rank`] keys.
    active: Vec<u64>,
    /// This step's distinct candidates (and the transition), and the
    /// candidates in the order they were first met.
    distinct: HashSet<(Positions, u16), Fx>,
    candidates: Vec<(Positions, u16)>,
    scratch: Vec<u32>,
    /// Left groups met before (by the hash of their facts: an index in
    /// `groups`) with the semi-contexts wholly in them: a group recurs,
    /// and only the semi-contexts created since it was last met need
    /// checking. Forgotten when they outnumber an eighth of the contexts
    /// (plus 64): on NAB, up to ~140 KB a series.
    wholly: HashMap<u64, u32, Fx>,
    groups: Vec<Wholly>,
}

/// A left group met before, and the semi-contexts wholly in it among the
/// first `upto`.
struct Wholly {
    facts: Vec<u32>,
    ids: Vec<u32>,
    upto: u32,
}

/// Orders contexts as CAD does: the most activated first, ties by id;
/// unique, so any selection of the least keys is CAD's.
fn rank(activations: u32, id: u32) -> u64 {
    (u64::from(u32::MAX - activations) << 32) | u64::from(id)
}

impl Machine {
    /// Gets or creates the context of `(lf, right)`: its slot, and whether
    /// it was created.
    fn add(&mut self, lf: &[u32], right: u16, zero_level: bool) -> (usize, bool) {
        let l = self.left.get_or_add(lf);
        let key = (u64::from(l) << 16) | u64::from(right);
        if let Some(&i) = self.pair.get(&key) {
            return ((self.left.semis[l as usize].run + i) as usize, false);
        }
        let id = self.contexts as u32;
        self.contexts += 1;
        let i = self.left.semis[l as usize].contexts;
        let slot = self.push(l, id, right, zero_level);
        if zero_level {
            self.left.add_zero_level(l, id, right);
        }
        self.pair.insert(key, i);
        (slot, true)
    }

    /// Appends a new context to the run of semi-context `l`, moving the
    /// run if it is full; its slot.
    fn push(&mut self, l: u32, id: u32, right: u16, zero_level: bool) -> usize {
        let semi = self.left.semis[l as usize];
        let (run, n) = (semi.run as usize, semi.contexts as usize);
        // A run holds a power of two: full when that many are in it.
        let run = if n.is_power_of_two() || n == 0 {
            if run + n == self.slots.len() && n > 0 {
                self.slots.resize(run + 2 * n, EMPTY);
                run
            } else {
                let cap = (2 * n).max(1);
                let class = cap.trailing_zeros() as usize;
                if self.free.len() <= class {
                    self.free.resize_with(class + 1, Vec::new);
                }
                let to = match self.free[class].pop() {
                    Some(to) => to as usize,
                    None => {
                        self.slots.resize(self.slots.len() + cap, EMPTY);
                        self.slots.len() - cap
                    }
                };
                self.slots.copy_within(run..run + n, to);
                if n > 0 {
                    self.free[n.trailing_zeros() as usize].push(run as u32);
                }
                to
            }
        } else {
            run
        };
        self.slots[run + n] = Context {
            id,
            activations: 0,
            right,
            zero_level,
        };
        let semi = &mut self.left.semis[l as usize];
        semi.run = run as u32;
        semi.contexts += 1;
        run + n
    }

    /// Looks the transition (previous group → `now`) up, creating it if
    /// new; whether it was new.
    fn transition(&mut self, facts: &[u32]) -> bool {
        if self.group.is_empty() {
            return false;
        }
        let group = std::mem::take(&mut self.group);
        let (slot, created) = self.add(&group, mask(facts.iter().copied()), true);
        self.group = group;
        let c = self.slots[slot];
        if created {
            self.just_created = Some(c.id);
        } else if !c.zero_level {
            self.slots[slot].zero_level = true;
            let l = self.left.get_or_add(&self.group);
            self.left.add_zero_level(l, c.id, c.right);
        }
        created
    }

    /// Visits the contexts of a left semi-context, crossed with the group
    /// (or, outside new transitions, wholly in it): counts the selected
    /// ones, activates the active ones and, on a new transition, collects
    /// the candidates.
    fn visit(&mut self, crossed: Crossed, v: &Visit) -> usize {
        let Crossed {
            id,
            shared,
            matched,
            whole,
            ..
        } = crossed;
        let semi = self.left.semis[id as usize];
        let whole_left = !v.new_transition || whole;
        let may_generalise = v.new_transition && shared <= v.max_left;
        let skip = self.just_created.unwrap_or(NONE);
        let mut selected = 0;
        let run = semi.run as usize..(semi.run + semi.contexts) as usize;
        for ctx in &mut self.slots[run] {
            if ctx.id != skip {
                let shared = ctx.right & v.now;
                let generalise = may_generalise && ctx.zero_level && shared != 0;
                if whole_left && shared == ctx.right {
                    ctx.activations += 1;
                    self.active.push(rank(ctx.activations, ctx.id));
                } else if generalise && self.distinct.insert((matched, shared)) {
                    self.candidates.push((matched, shared));
                }
                selected += usize::from(whole_left);
            }
        }
        selected
    }

    /// Visits the contexts whose left side may count this step; the
    /// number selected. On a new transition, partial overlaps generalise:
    /// the semi-contexts with zero-level contexts are crossed and visited
    /// in CAD's order (the candidates' order), then the others wholly in
    /// the group; otherwise only those wholly in it count (most steps).
    fn visit_all(&mut self, v: &Visit) -> usize {
        self.active.clear();
        self.candidates.clear();
        self.distinct.clear();
        let mut selected = 0;
        if v.new_transition {
            let n = self.group.len() as u32;
            self.distinct
                .insert((Positions::MAX >> (MAX_GROUP - n), v.now));
            self.left.cross(&self.group, v.bits, v.max_left);
            let by_sensor = std::mem::take(&mut self.left.by_sensor);
            let by_neuron_only = std::mem::take(&mut self.left.by_neuron_only);
            let keyed = by_neuron_only.iter().map(|&(_, c)| c);
            let skip = self.just_created.unwrap_or(NONE);
            for crossed in by_sensor.iter().flatten().copied().chain(keyed) {
                if crossed.whole || crossed.only == NONE {
                    selected += self.visit(crossed, v);
                } else if crossed.only != skip {
                    // Partly in the group, with one zero-level context: at
                    // most one candidate, and nothing selected.
                    let shared = crossed.right & v.now;
                    let candidate = (crossed.matched, shared);
                    if shared != 0 && self.distinct.insert(candidate) {
                        self.candidates.push(candidate);
                    }
                }
            }
            self.left.by_sensor = by_sensor;
            self.left.by_neuron_only = by_neuron_only;
        }
        selected += self.visit_wholly_in(v);
        self.just_created = None;
        selected
    }

    /// Visits the semi-contexts wholly in the group (on a new transition,
    /// those not crossed); the number selected.
    fn visit_wholly_in(&mut self, v: &Visit) -> usize {
        let (g, ids) = self.wholly_in();
        let mut selected = 0;
        for &id in &ids {
            let semi = self.left.semis[id as usize];
            if v.new_transition && semi.zero_levels > 0 {
                continue;
            }
            let whole = Crossed {
                id,
                shared: semi.len,
                matched: 0,
                whole: true,
                only: NONE,
                right: 0,
            };
            selected += self.visit(whole, v);
        }
        if let Some(g) = g {
            self.groups[g].ids = ids;
        }
        selected
    }

    /// The semi-contexts wholly in the group: remembered from when it was
    /// last met, plus those created since that are; or, for a group not
    /// met before, found by their anchors and remembered. With the index
    /// in `groups` they are to be put back at (none on a hash collision).
    fn wholly_in(&mut self) -> (Option<usize>, Vec<u32>) {
        let n = self.left.semis.len() as u32;
        let hash = hash_facts(&self.group);
        if let Some(&g) = self.wholly.get(&hash) {
            let g = g as usize;
            if self.groups[g].facts != self.group {
                return (None, self.scan_wholly_in());
            }
            let mut ids = std::mem::take(&mut self.groups[g].ids);
            for id in self.groups[g].upto..n {
                let semi = self.left.semis[id as usize];
                if self.left.facts_of(&semi).iter().all(|&f| self.in_group(f)) {
                    ids.push(id);
                }
            }
            self.groups[g].upto = n;
            return (Some(g), ids);
        }
        let ids = self.scan_wholly_in();
        if self.groups.len() >= self.contexts / 8 + 64 {
            self.groups.clear();
            self.wholly.clear();
        }
        self.wholly.insert(hash, self.groups.len() as u32);
        self.groups.push(Wholly {
            facts: self.group.clone(),
            ids: Vec::new(),
            upto: n,
        });
        (Some(self.groups.len() - 1), ids)
    }

    /// The semi-contexts wholly in the group, found by their anchors.
    fn scan_wholly_in(&mut self) -> Vec<u32> {
        let mut ids = Vec::new();
        for i in 0..self.group.len() {
            let Some(a) = self.left.anchored_at(self.group[i]) else {
                continue;
            };
            for &(sig, id) in &self.left.anchored[a] {
                if sig & !self.signature != 0 {
                    continue;
                }
                // The signature decides the sensor facts exactly (their own
                // bits), and the last fact is the anchor: only the other
                // neuron facts are looked up.
                let facts = self.left.facts_of(&self.left.semis[id as usize]);
                let others = &facts[..facts.len() - 1];
                if others.iter().all(|&f| f < SENSOR_SPAN || self.in_group(f)) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    fn in_group(&self, f: u32) -> bool {
        self.position.get(f as usize).is_some_and(|&p| p != 0)
    }

    /// Adds the candidates, in the order first met, while under `cap`
    /// contexts; the number created.
    fn generalise(&mut self, cap: usize) -> usize {
        let mut created = 0;
        let candidates = std::mem::take(&mut self.candidates);
        let mut facts = std::mem::take(&mut self.scratch);
        for &(matched, right) in &candidates {
            if self.contexts >= cap {
                break;
            }
            facts.clear();
            let mut m = matched;
            while m != 0 {
                facts.push(self.group[m.trailing_zeros() as usize]);
                m &= m - 1;
            }
            created += usize::from(self.add(&facts, right, false).1);
        }
        self.scratch = facts;
        self.candidates = candidates;
        created
    }

    /// Makes `facts` and the `max_active` most activated active contexts
    /// the next left group.
    fn carry(&mut self, facts: &[u32], max_active: usize) {
        if self.active.len() > max_active {
            if max_active > 0 {
                self.active.select_nth_unstable(max_active - 1);
            }
            self.active.truncate(max_active);
        }
        for &f in &self.group {
            self.position[f as usize] = 0;
        }
        self.group.clear();
        self.group.extend_from_slice(facts);
        let neurons = self.active.iter().map(|&k| SENSOR_SPAN + k as u32);
        self.group.extend(neurons);
        self.group.sort_unstable();
        let top = *self.group.last().expect("a group has sensor facts") as usize;
        if self.position.len() <= top {
            self.position.resize(top + 1, 0);
        }
        for (i, &f) in self.group.iter().enumerate() {
            self.position[f as usize] = i as u8 + 1;
        }
        self.signature = signature(&self.group);
    }

    /// One step with this sample's sensor facts (sorted); the raw score.
    fn step(&mut self, facts: &[u32], max_left: u32, max_active: usize, cap: usize) -> f64 {
        let new_transition = self.transition(facts);
        let v = Visit {
            now: mask(facts.iter().copied()),
            new_transition,
            max_left,
            bits: facts.len(),
        };
        let selected = self.visit_all(&v);
        let share_active = if selected > 0 {
            self.active.len() as f64 / selected as f64
        } else {
            0.0
        };
        let share_new = if new_transition {
            let added = self.generalise(cap) + 1;
            added as f64 / self.distinct.len() as f64
        } else {
            0.0
        };
        self.carry(facts, max_active);
        ((1.0 - share_active + share_new) / 2.0).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
impl Machine {
    /// Heap bytes held, approximately (hash tables at their entries and
    /// one control byte per bucket).
    fn footprint(&self) -> usize {
        use std::mem::size_of;
        let free: usize = self.free.iter().map(|v| 24 + 4 * v.capacity()).sum();
        self.left.footprint()
            + self.slots.capacity() * size_of::<Context>()
            + free
            + self.pair.capacity() * (size_of::<(u64, u32)>() + 1)
            + 4 * (self.group.capacity() + self.scratch.capacity())
            + self.position.capacity()
            + 8 * self.active.capacity()
            + self.distinct.capacity() * (size_of::<(Positions, u16)>() + 1)
            + self.candidates.capacity() * size_of::<(Positions, u16)>()
            + self.wholly.capacity() * (size_of::<(u64, u32)>() + 1)
            + self.groups.capacity() * size_of::<Wholly>()
            + self
                .groups
                .iter()
                .map(|g| 4 * (g.facts.capacity() + g.ids.capacity()))
                .sum::<usize>()
    }
}

pub(super) struct CadDetector {
    p: CadParams,
    /// The range the levels slice: its low and high ends.
    range: Option<(f64, f64)>,
    /// The latest `memory` samples (as learnt: a value a block), replayed
    /// when the range widens.
    history: VecDeque<f64>,
    machine: Machine,
    /// Raw scores of the last `rest` samples.
    recent: VecDeque<f64>,
    seen: u64,
    /// The block being gathered (lowest, highest, samples) when `stride`
    /// is above 1.
    block: Option<(f64, f64, u32)>,
}

impl CadDetector {
    pub(super) fn new(p: CadParams) -> Self {
        CadDetector {
            p: CadParams {
                bits: p.bits.clamp(1, 8),
                margin: p.margin.max(0.0),
                max_active: p.max_active.min(MAX_GROUP - 8),
                max_contexts: p.max_contexts.max(64),
                memory: p.memory.max(1),
                stride: p.stride.max(1),
                ..p
            },
            range: None,
            history: VecDeque::new(),
            machine: Machine::default(),
            recent: VecDeque::new(),
            seen: 0,
            block: None,
        }
    }

    /// Adds `x` to the block; at the block's last sample, returns the value
    /// the block is learnt as: of its lowest and highest samples, the one
    /// farther from the previous block's value, so that a spike either way
    /// survives. With `stride` 1, every sample is its own block.
    fn gather(&mut self, x: f64) -> Option<f64> {
        if self.p.stride == 1 {
            return Some(x);
        }
        let (lo, hi, n) = match self.block {
            Some((lo, hi, n)) => (lo.min(x), hi.max(x), n + 1),
            None => (x, x, 1),
        };
        if n < self.p.stride {
            self.block = Some((lo, hi, n));
            return None;
        }
        self.block = None;
        // The previous block's value is the latest remembered.
        let before = self.history.back().copied().unwrap_or(x);
        Some(if hi - before >= before - lo { hi } else { lo })
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

    /// The sensor facts of `level`, sorted: one per bit, in `facts[..bits]`.
    fn facts(&self, level: u32) -> [u32; 8] {
        let mut facts = [0; 8];
        for i in 0..self.p.bits {
            facts[i as usize] = 2 * i + ((level >> i) & 1);
        }
        facts
    }

    /// Learns `x` and returns its raw score.
    fn feed(&mut self, x: f64) -> f64 {
        if self.machine.contexts >= self.p.max_contexts as usize {
            self.relearn();
        }
        self.step(x)
    }

    /// Forgets every context and learns the remembered samples again: the
    /// latest of them that fit in half the ceiling, so that learning goes
    /// on for a while before the next time. Contexts are never dropped
    /// while learning, so a replay that reaches half the ceiling is given
    /// up at once (unless it is the last one tried, of under 64 samples).
    fn relearn(&mut self) {
        let half = self.p.max_contexts as usize / 2;
        let mut take = self.history.len();
        loop {
            self.machine = Machine::default();
            let mut fits = true;
            for i in self.history.len() - take..self.history.len() {
                let _ = self.step(self.history[i]);
                fits = self.machine.contexts < half;
                if !fits && take >= 64 {
                    break;
                }
            }
            if fits || take < 64 {
                break;
            }
            take /= 2;
        }
    }

    fn step(&mut self, x: f64) -> f64 {
        let facts = self.facts(self.level(x));
        self.machine.step(
            &facts[..self.p.bits as usize],
            self.p.max_left,
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

    /// Keeps `learnt` (a block's value, when one ended) for replays, and
    /// `raw` (0 inside a block) for the rest after an alarm.
    fn remember(&mut self, learnt: Option<f64>, raw: f64) {
        if let Some(x) = learnt {
            if self.history.len() == self.p.memory.div_ceil(self.p.stride) as usize {
                self.history.pop_front();
            }
            self.history.push_back(x);
        }
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
        let learnt = self.gather(x);
        let raw = match learnt {
            Some(v) => {
                self.widen(v);
                self.feed(v)
            }
            None => 0.0,
        };
        let level = self.level(x);
        let resting = self.recent.iter().any(|&r| r >= ALARM);
        self.remember(learnt, raw);
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

    /// The tests' parameters, each test changing a few.
    fn params() -> CadParams {
        CadParams {
            bits: 3,
            warmup: 40,
            margin: 0.0,
            rest: 0,
            max_left: 7,
            max_active: 15,
            max_contexts: 100_000,
            memory: 1000,
            stride: 1,
        }
    }

    fn run(d: &mut CadDetector, xs: &[f64]) -> Vec<Option<f64>> {
        xs.iter()
            .enumerate()
            .map(|(i, &x)| d.score(i as i64 * 300, x).map(|s| s.score))
            .collect()
    }

    #[test]
    fn a_learned_pattern_is_not_surprising_and_a_break_in_it_is() {
        let mut d = CadDetector::new(params());
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
            margin: 0.1,
            ..params()
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
            rest: 20,
            ..params()
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
            max_contexts: 500,
            ..params()
        });
        let mut x = 0.0f64;
        let mut most = 0;
        for i in 0..20_000u64 {
            x = (x + ((i * 7919) % 13) as f64 - 6.0).clamp(-40.0, 40.0);
            let _ = d.score(i as i64, x);
            let n = d.machine.contexts;
            assert!(n <= 501, "{n} contexts");
            most = most.max(d.machine.footprint());
        }
        assert_eq!(d.history.len(), 1000);
        // About 100 bytes a context: the ceiling bounds the bytes too.
        assert!(most < 501 * 400, "{most} bytes");
        // Relearnt, not emptied: the contexts of the latest samples remain.
        assert!(d.machine.contexts > 10);
    }

    #[test]
    fn a_stride_learns_each_block_as_its_farthest_end_and_scores_its_last_sample() {
        let mut d = CadDetector::new(CadParams {
            margin: 0.1,
            memory: 300,
            stride: 3,
            ..params()
        });
        let mut xs: Vec<f64> = (0..600).map(|i| (i % 5) as f64).collect();
        // One block with a one-sample spike up, one with a dip down.
        xs.extend([2.0, 40.0, 2.0, 1.0, 2.0, 3.0, 2.0, -30.0, 2.0]);
        let s = run(&mut d, &xs);
        assert!(s[..40].iter().all(Option::is_none), "warm-up");
        // Inside a block nothing is learnt and nothing is found.
        for i in (41..609).filter(|i| i % 3 != 2) {
            assert_eq!(s[i], Some(0.0), "sample {i}, inside a block");
        }
        let late = s[500..600].iter().flatten().copied().fold(0.0, f64::max);
        assert!(late <= 0.5, "a learned pattern still surprising: {late}");
        // The spike is the block's value: found on the block's last sample.
        assert!(s[602].expect("scored") >= ALARM, "{:?}", &s[600..603]);
        assert!(s[608].expect("scored") >= ALARM, "{:?}", &s[606..609]);
        let (lo, hi) = d.range.expect("range");
        assert!(lo <= -30.0 && hi >= 40.0, "{lo}..{hi}");
        // `memory` counts samples: a third as many block values.
        assert_eq!(d.history.len(), 100);
        assert_eq!(d.history.back(), Some(&-30.0));
    }

    #[test]
    fn a_groups_remembered_semi_contexts_are_those_its_anchors_find() {
        let mut d = CadDetector::new(CadParams {
            bits: 4,
            warmup: 20,
            margin: 0.1,
            max_active: 7,
            max_contexts: 2000,
            memory: 500,
            ..params()
        });
        let mut x = 0.0f64;
        let mut remembered = 0;
        for i in 0..6000u64 {
            // A repeating pattern with a walk on it: groups recur, and
            // new semi-contexts keep coming; the ceiling is reached.
            x = (x + ((i * 7919) % 5) as f64 - 2.0).clamp(-10.0, 10.0);
            let _ = d.score(i as i64, x + [0.0, 20.0, 40.0, 20.0][(i % 4) as usize]);
            let m = &mut d.machine;
            if m.group.is_empty() {
                continue;
            }
            let met = m.wholly.get(&hash_facts(&m.group));
            remembered += usize::from(met.is_some_and(|&g| m.groups[g as usize].facts == m.group));
            let mut scanned = m.scan_wholly_in();
            let (g, mut ids) = m.wholly_in();
            scanned.sort_unstable();
            ids.sort_unstable();
            assert_eq!(ids, scanned, "step {i}");
            if let Some(g) = g {
                m.groups[g].ids = ids;
            }
            assert!(
                m.groups.len() <= m.contexts / 8 + 64,
                "{} groups",
                m.groups.len()
            );
        }
        assert!(
            remembered > 1000,
            "groups answered from memory: {remembered}"
        );
    }

    #[test]
    fn nan_is_not_scored_and_reset_forgets() {
        let mut d = CadDetector::new(CadParams {
            warmup: 5,
            max_contexts: 1000,
            memory: 100,
            ..params()
        });
        assert!(d.score(0, f64::NAN).is_none());
        let _ = run(&mut d, &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]);
        assert!(d.machine.contexts > 0);
        d.reset();
        assert!(d.machine.contexts == 0 && d.range.is_none());
        assert!(d.score(0, 1.0).is_none());
    }
}
