//! The left semi-contexts of [`super::CadDetector`]'s context machine:
//! each fact set stored once under an id, the indexes that find a set, the
//! ones wholly in a group and the ones with zero-level contexts, and the
//! crossing of a group with them; and the hasher their tables use.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{NONE, Positions, SENSOR_SPAN};

/// FxHash's multiply-add for integer keys (as rustc-hash 2 does it): the
/// tables here hash a few integers, not data from outside.
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, x: u64) {
        self.0 = self.0.wrapping_add(x).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.add(u64::from(b)));
    }
    fn write_u16(&mut self, x: u16) {
        self.add(u64::from(x));
    }
    fn write_u32(&mut self, x: u32) {
        self.add(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }
    fn write_u128(&mut self, x: u128) {
        self.add(x as u64);
        self.add((x >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

pub(super) type Fx = BuildHasherDefault<FxHasher>;

/// The hash of a set of facts (sorted).
pub(super) fn hash_facts(facts: &[u32]) -> u64 {
    let mut h = FxHasher::default();
    facts.iter().for_each(|&f| h.write_u32(f));
    h.finish()
}

/// A left semi-context: its facts are `Lefts::facts[start..start + len]`
/// (sorted, stored once); its `contexts`, in creation order, a run of the
/// machine's slots from `run` (with room for the next power of two).
#[derive(Clone, Copy)]
pub(super) struct Semi {
    start: u32,
    pub(super) len: u32,
    pub(super) run: u32,
    pub(super) contexts: u32,
    /// The next older semi-context of the same fact-set hash.
    same_hash: u32,
    /// How many of its contexts are zero-level: without any, a partial
    /// overlap with the group yields nothing.
    pub(super) zero_levels: u32,
}

/// A semi-context in its anchor's list: its [`signature`] (it is not
/// wholly in a group whose signature lacks a bit of it) and its id. The
/// list is scanned in order, without loading a semi-context that the
/// signature rules out.
pub(super) type Anchored = (u64, u32);

/// A set of facts as bits: a sensor fact as its own bit, a neuron fact
/// as one of the 48 others, by a hash. A subset's signature is within
/// the set's.
pub(super) fn signature(facts: &[u32]) -> u64 {
    facts.iter().fold(0, |sig, &f| {
        let bit = if f < SENSOR_SPAN {
            f
        } else {
            SENSOR_SPAN + (f.wrapping_mul(0x9e37_79b9) >> 16) % (64 - SENSOR_SPAN)
        };
        sig | 1 << bit
    })
}

/// A left semi-context with zero-level contexts, as crossing scans it.
#[derive(Clone, Copy)]
struct Zero {
    id: u32,
    /// Its index in `overlaps`: they are dense, in the order semi-contexts
    /// got their first zero-level context.
    dense: u32,
    /// Its zero-level context when it has only one (most do), or `NONE`:
    /// a partial overlap then yields at most one candidate, found here
    /// without walking its contexts.
    only: u32,
    len: u16,
    /// Its sensor facts, as a mask.
    sensor: u16,
    /// The right semi-context of `only`.
    right: u16,
}

/// The left semi-contexts (a right one is a set of sensor facts: a mask
/// of `1 << fact`, kept in its context). Ids are creation order.
#[derive(Default)]
pub(super) struct Lefts {
    pub(super) semis: Vec<Semi>,
    facts: Vec<u32>,
    /// Fact-set hash → the newest semi-context of that hash.
    by_hash: HashMap<u64, u32, Fx>,
    /// Per fact, the index in `anchored` of the list of the semi-contexts
    /// whose highest fact it is (`NONE` if none): finds the ones wholly in
    /// a group without crossing every one that shares a fact with it.
    by_anchor: Vec<u32>,
    pub(super) anchored: Vec<Vec<Anchored>>,
    /// The semi-contexts with zero-level contexts, by id: the only ones
    /// whose partial overlaps with a group generalise, so the only ones
    /// crossed.
    zero: Vec<Zero>,
    /// Per neuron fact, the semi-contexts in `zero` holding it (their
    /// `dense` index).
    by_neuron: Vec<Vec<u32>>,
    /// Per semi-context in `zero` (by its `dense` index), its neuron facts
    /// in the group last crossed; empty unless it is in `touched`.
    overlaps: Vec<Overlap>,
    touched: Vec<u32>,
    /// The crossed semi-contexts that may count: by their lowest sensor
    /// position (`by_sensor`), then those sharing only neuron facts
    /// (`by_neuron_only`, keyed by their lowest position and id), each in
    /// id order: the order CAD meets them.
    pub(super) by_sensor: Vec<Vec<Crossed>>,
    pub(super) by_neuron_only: Vec<(u64, Crossed)>,
}

/// A semi-context crossed with a group.
#[derive(Clone, Copy)]
pub(super) struct Crossed {
    pub(super) id: u32,
    /// How many of its facts are in the group (counted, not a `count_ones`
    /// of `matched`: the baseline x86-64 target has no popcount).
    pub(super) shared: u32,
    /// Their positions in the group.
    pub(super) matched: Positions,
    /// Whether it is wholly in the group.
    pub(super) whole: bool,
    /// Its only zero-level context, or `NONE` (see [`Zero`]), and that
    /// context's right semi-context.
    pub(super) only: u32,
    pub(super) right: u16,
}

/// The positions of a semi-context's neuron facts in a group (the two
/// halves of a [`Positions`], so that the count shares their cache line),
/// and how many.
#[derive(Clone, Copy, Default)]
struct Overlap {
    low: u64,
    high: u64,
    count: u32,
}

/// The number of bits set in a byte.
const ONES: [u8; 256] = {
    let mut t = [0; 256];
    let mut i = 1;
    while i < 256 {
        t[i] = t[i / 2] + (i % 2) as u8;
        i += 1;
    }
    t
};

/// The positions, in a group whose `i`-th fact is sensor fact `2i` or
/// `2i + 1`, of the sensor facts of `shared` (a mask).
fn sensor_positions(shared: u16) -> Positions {
    let mut y = u32::from(shared | (shared >> 1)) & 0x5555;
    y = (y | (y >> 1)) & 0x3333;
    y = (y | (y >> 2)) & 0x0f0f;
    y = (y | (y >> 4)) & 0x00ff;
    Positions::from(y)
}

impl Lefts {
    pub(super) fn facts_of(&self, s: &Semi) -> &[u32] {
        &self.facts[s.start as usize..(s.start + s.len) as usize]
    }

    fn find(&self, facts: &[u32], hash: u64) -> Option<u32> {
        let mut id = *self.by_hash.get(&hash)?;
        while id != NONE {
            let s = &self.semis[id as usize];
            if self.facts_of(s) == facts {
                return Some(id);
            }
            id = s.same_hash;
        }
        None
    }

    /// The id of the semi-context of `facts` (sorted, not empty), created
    /// if new.
    pub(super) fn get_or_add(&mut self, facts: &[u32]) -> u32 {
        let hash = hash_facts(facts);
        if let Some(id) = self.find(facts, hash) {
            return id;
        }
        let id = self.semis.len() as u32;
        let top = *facts.last().expect("a semi-context has facts") as usize;
        if self.by_anchor.len() <= top {
            self.by_anchor.resize(top + 1, NONE);
        }
        if self.by_anchor[top] == NONE {
            self.by_anchor[top] = self.anchored.len() as u32;
            self.anchored.push(Vec::new());
        }
        self.anchored[self.by_anchor[top] as usize].push((signature(facts), id));
        self.semis.push(Semi {
            start: self.facts.len() as u32,
            len: facts.len() as u32,
            run: 0,
            contexts: 0,
            same_hash: self.by_hash.insert(hash, id).unwrap_or(NONE),
            zero_levels: 0,
        });
        self.facts.extend_from_slice(facts);
        id
    }

    /// The index in `anchored` of the list of the semi-contexts whose
    /// highest fact is `f`, if any.
    pub(super) fn anchored_at(&self, f: u32) -> Option<usize> {
        let a = *self.by_anchor.get(f as usize)?;
        (a != NONE).then_some(a as usize)
    }

    /// Counts one more zero-level context of `id`: `context`, whose right
    /// semi-context is `right`; the first makes it one that crossing scans.
    pub(super) fn add_zero_level(&mut self, id: u32, context: u32, right: u16) {
        let semi = &mut self.semis[id as usize];
        semi.zero_levels += 1;
        if semi.zero_levels > 1 {
            let at = self.zero.partition_point(|z| z.id < id);
            self.zero[at].only = NONE;
            return;
        }
        let semi = *semi;
        let facts = &self.facts[semi.start as usize..(semi.start + semi.len) as usize];
        let at = self.zero.partition_point(|z| z.id < id);
        let dense = self.overlaps.len() as u32;
        self.overlaps.push(Overlap::default());
        self.zero.insert(
            at,
            Zero {
                id,
                dense,
                only: context,
                len: semi.len as u16,
                sensor: mask(facts.iter().copied().filter(|&f| f < SENSOR_SPAN)),
                right,
            },
        );
        for &f in facts.iter().filter(|&&f| f >= SENSOR_SPAN) {
            let f = (f - SENSOR_SPAN) as usize;
            if self.by_neuron.len() <= f {
                self.by_neuron.resize_with(f + 1, Vec::new);
            }
            self.by_neuron[f].push(dense);
        }
    }

    /// Crosses the zero-level semi-contexts with `group` (sorted, its
    /// first `bits` facts the sensor ones, one per bit), keeping those
    /// that may count: wholly in it, or sharing at most `max_left` facts.
    pub(super) fn cross(&mut self, group: &[u32], bits: usize, max_left: u32) {
        for &d in &self.touched {
            self.overlaps[d as usize] = Overlap::default();
        }
        self.touched.clear();
        for (i, &f) in group.iter().enumerate().skip(bits) {
            let bit: Positions = 1 << i;
            let (low, high) = (bit as u64, (bit >> 64) as u64);
            let holders = self.by_neuron.get((f - SENSOR_SPAN) as usize);
            for &d in holders.map_or(&[][..], Vec::as_slice) {
                let o = &mut self.overlaps[d as usize];
                if o.count == 0 {
                    self.touched.push(d);
                }
                o.low |= low;
                o.high |= high;
                o.count += 1;
            }
        }
        self.by_sensor.resize_with(bits, Vec::new);
        self.by_sensor.iter_mut().for_each(Vec::clear);
        self.by_neuron_only.clear();
        let sensor = mask(group[..bits].iter().copied());
        for z in &self.zero {
            let at_sensor = sensor_positions(z.sensor & sensor);
            let o = self.overlaps[z.dense as usize];
            let shared = u32::from(ONES[at_sensor as usize]) + o.count;
            if shared == 0 || (shared != u32::from(z.len) && shared > max_left) {
                continue;
            }
            let matched = at_sensor | Positions::from(o.low) | Positions::from(o.high) << 64;
            let c = Crossed {
                id: z.id,
                shared,
                matched,
                whole: shared == u32::from(z.len),
                only: z.only,
                right: z.right,
            };
            if at_sensor != 0 {
                self.by_sensor[at_sensor.trailing_zeros() as usize].push(c);
            } else {
                let key = (u64::from(matched.trailing_zeros()) << 32) | u64::from(z.id);
                self.by_neuron_only.push((key, c));
            }
        }
        self.by_neuron_only.sort_unstable_by_key(|&(key, _)| key);
    }
}

#[cfg(test)]
impl Lefts {
    /// Heap bytes held, approximately (hash tables at their entries and
    /// one control byte per bucket).
    pub(super) fn footprint(&self) -> usize {
        use std::mem::size_of;
        let lists: usize = self.by_neuron.iter().map(|v| 24 + 4 * v.capacity()).sum();
        let anchored: usize = (self.anchored.iter())
            .map(|v| 24 + size_of::<Anchored>() * v.capacity())
            .sum();
        let buckets: usize = (self.by_sensor.iter())
            .map(|v| 24 + size_of::<Crossed>() * v.capacity())
            .sum();
        self.semis.capacity() * size_of::<Semi>()
            + 4 * (self.facts.capacity() + self.by_anchor.capacity() + self.touched.capacity())
            + self.by_hash.capacity() * (size_of::<(u64, u32)>() + 1)
            + self.zero.capacity() * size_of::<Zero>()
            + lists
            + anchored
            + buckets
            + self.by_neuron_only.capacity() * size_of::<(u64, Crossed)>()
            + self.overlaps.capacity() * size_of::<Overlap>()
    }
}

/// The mask of a set of sensor facts.
pub(super) fn mask(facts: impl IntoIterator<Item = u32>) -> u16 {
    facts.into_iter().fold(0, |m, f| m | 1 << f)
}
