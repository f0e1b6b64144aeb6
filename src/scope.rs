//! Where the agent may act: an allow-list of namespaces (empty: every
//! namespace) and the hands-off label that takes a namespace or a single
//! resource out of its hands.
//!
//! One value for the whole process: the controllers watch only these
//! namespaces (one watch each, so a scoped install needs Roles, not a
//! ClusterRole), the observe loop reads only them, and the executor refuses
//! and journals any intent on a target outside them, at planning and again
//! at send. Pure: labels come in as values.
//!
//! A sharded agent (`--shard N/M`, issue #16) also owns only the namespaces
//! that rendezvous hashing gives shard N of M: its loop observes, decides
//! and acts on them alone, and every namespace belongs to exactly one shard.

use std::collections::BTreeMap;

/// The label that puts a namespace, or one resource, hands-off: the agent
/// decides nothing on it and its controllers hold automatic rollbacks.
/// Any value but `"false"` counts, so a typo errs on the side of hands-off.
pub const HANDS_OFF_LABEL: &str = "autopilot.payments.io/hands-off";

/// The namespaces the agent may watch and act in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Sorted, deduplicated; empty means every namespace.
    namespaces: Vec<String>,
    /// Of those, only the namespaces this shard owns (none: all of them).
    shard: Option<Shard>,
}

/// Shard `index` of `count` (`--shard 2/4`): the namespaces it owns are
/// those for which `index` scores highest in a rendezvous hash of the
/// namespace and the shard number. A namespace's owner never depends on
/// which other namespaces exist, and going from M to M+1 shards moves only
/// the namespaces the new shard wins (about 1/(M+1) of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why a `--shard` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shard {value:?} is invalid: {reason} (expected N/M with 0 <= N < M, e.g. 0/4)")]
pub struct ParseShardError {
    value: String,
    reason: &'static str,
}

impl Shard {
    /// Shard `index` of `count`; `None` unless `index < count`.
    pub fn new(index: u32, count: u32) -> Option<Self> {
        (index < count).then_some(Self { index, count })
    }

    pub fn index(&self) -> u32 {
        self.index
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard of `count` that owns `namespace`.
    pub fn owner(namespace: &str, count: u32) -> u32 {
        (0..count.max(1))
            .max_by_key(|&i| (score(namespace, i), std::cmp::Reverse(i)))
            .unwrap_or(0)
    }

    /// Whether this shard owns `namespace`.
    pub fn owns(&self, namespace: &str) -> bool {
        Self::owner(namespace, self.count) == self.index
    }
}

/// The rendezvous score of `namespace` for shard `index`: FNV-1a over the
/// name and the index, then a 64-bit finalizer (SplitMix64) so that nearby
/// inputs spread. Written out rather than `std`'s hasher, whose output may
/// change between Rust releases: every replica, of any build, must agree.
fn score(namespace: &str, index: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(&index.to_le_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl std::str::FromStr for Shard {
    type Err = ParseShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason| ParseShardError {
            value: s.to_string(),
            reason,
        };
        let (n, m) = s.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
        let n: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        let m: u32 = m.trim().parse().map_err(|_| bad("M is not a number"))?;
        if m == 0 {
            return Err(bad("M must be at least 1"));
        }
        Shard::new(n, m).ok_or_else(|| bad("N must be less than M"))
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Scope {
    /// Every namespace (a cluster-wide install).
    pub fn all() -> Self {
        Self::default()
    }

    /// Only these namespaces; blank names are dropped, so an empty list is
    /// [`Scope::all`].
    pub fn namespaces<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut namespaces: Vec<String> = names
            .into_iter()
            .map(Into::into)
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        Self {
            namespaces,
            shard: None,
        }
    }

    /// The same scope, narrowed to the namespaces `shard` owns (`None`:
    /// unsharded).
    pub fn with_shard(mut self, shard: Option<Shard>) -> Self {
        self.shard = shard;
        self
    }

    /// The shard this scope is narrowed to, if any.
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// True when no allow-list narrows the scope, so watches are
    /// cluster-wide (a shard still owns only its share: see
    /// [`Scope::allows_namespace`]).
    pub fn is_all(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// The allowed namespaces, sorted; empty for [`Scope::all`]. Watches
    /// are opened one per entry (or one cluster-wide watch when empty).
    pub fn list(&self) -> &[String] {
        &self.namespaces
    }

    /// Whether `namespace` is in the allow-list and, sharded, in this
    /// shard.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        (self.is_all() || self.namespaces.iter().any(|n| n == namespace))
            && self.shard.is_none_or(|s| s.owns(namespace))
    }

    /// Judges one target: its namespace against the allow-list, then the
    /// hands-off label on its namespace and on the object itself. `None`
    /// labels mean "not read" and are treated as no label: callers that
    /// must fail closed read them first.
    pub fn check(
        &self,
        namespace: &str,
        namespace_labels: Option<&BTreeMap<String, String>>,
        object_labels: Option<&BTreeMap<String, String>>,
    ) -> Result<(), OutOfScope> {
        if !self.allows_namespace(namespace) {
            return Err(match self.shard {
                Some(shard) if shard.count > 1 && !shard.owns(namespace) => OutOfScope::Shard {
                    namespace: namespace.to_string(),
                    shard,
                    owner: Shard::owner(namespace, shard.count),
                },
                _ => OutOfScope::Namespace {
                    namespace: namespace.to_string(),
                    allowed: self.namespaces.clone(),
                },
            });
        }
        if hands_off(namespace_labels) {
            return Err(OutOfScope::HandsOffNamespace {
                namespace: namespace.to_string(),
            });
        }
        if hands_off(object_labels) {
            return Err(OutOfScope::HandsOffObject);
        }
        Ok(())
    }

    /// For `--help` and logs: `all namespaces` or the comma-separated list,
    /// and the shard.
    pub fn describe(&self) -> String {
        let namespaces = if self.is_all() {
            "all namespaces".into()
        } else {
            self.namespaces.join(",")
        };
        match self.shard {
            Some(shard) => format!("{namespaces}, shard {shard}"),
            None => namespaces,
        }
    }
}

/// True when the labels carry [`HANDS_OFF_LABEL`] with any value but
/// `"false"`.
pub fn hands_off(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels
        .and_then(|l| l.get(HANDS_OFF_LABEL))
        .is_some_and(|v| v.trim() != "false")
}

/// Why a target is outside the agent's scope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutOfScope {
    #[error("namespace {namespace} is not in the agent's scope ({})", allowed.join(","))]
    Namespace {
        namespace: String,
        allowed: Vec<String>,
    },
    #[error("namespace {namespace} belongs to shard {owner}/{}, not to this agent's shard {shard}", shard.count)]
    Shard {
        namespace: String,
        shard: Shard,
        owner: u32,
    },
    #[error("namespace {namespace} is labelled {HANDS_OFF_LABEL}")]
    HandsOffNamespace { namespace: String },
    #[error("the target is labelled {HANDS_OFF_LABEL}")]
    HandsOffObject,
}

impl OutOfScope {
    /// The guard name journaled for a refusal (`scope` or `hands_off`).
    pub fn guard(&self) -> &'static str {
        match self {
            OutOfScope::Namespace { .. } | OutOfScope::Shard { .. } => "scope",
            OutOfScope::HandsOffNamespace { .. } | OutOfScope::HandsOffObject => "hands_off",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Labels from pairs (also for other modules' tests of the scope).
    pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_empty_list_is_every_namespace() {
        let s = Scope::namespaces(["", "  "]);
        assert!(s.is_all());
        assert!(s.allows_namespace("kube-system"));
        assert_eq!(s.describe(), "all namespaces");
    }

    #[test]
    fn a_list_allows_only_its_namespaces() {
        let s = Scope::namespaces(["pay", "clearing", "pay"]);
        assert_eq!(s.list(), ["clearing", "pay"]);
        assert!(s.allows_namespace("pay"));
        assert!(!s.allows_namespace("kube-system"));
        let err = s
            .check("kube-system", None, None)
            .expect_err("out of scope");
        assert_eq!(err.guard(), "scope");
        assert_eq!(
            err.to_string(),
            "namespace kube-system is not in the agent's scope (clearing,pay)"
        );
    }

    /// Namespaces like a large estate's: teams, environments, numbers.
    fn estate(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("team-{i}-{}", ["prod", "stage", "dev"][i % 3]))
            .chain((0..n).map(|i| format!("ns{i}")))
            .collect()
    }

    #[test]
    fn every_namespace_belongs_to_exactly_one_shard() {
        let namespaces = estate(2000);
        for count in [1, 2, 3, 4, 7, 16] {
            let shards: Vec<Shard> = (0..count)
                .map(|i| Shard::new(i, count).expect("shard"))
                .collect();
            let mut per_shard = vec![0usize; count as usize];
            for ns in &namespaces {
                let owners: Vec<u32> = shards
                    .iter()
                    .filter(|s| s.owns(ns))
                    .map(|s| s.index())
                    .collect();
                assert_eq!(
                    owners.len(),
                    1,
                    "{ns} in {count} shards: owned by {owners:?}"
                );
                per_shard[owners[0] as usize] += 1;
            }
            // Spread evenly enough: every shard within 25% of its fair share.
            let fair = namespaces.len() / count as usize;
            for (i, n) in per_shard.iter().enumerate() {
                assert!(
                    n.abs_diff(fair) * 4 <= fair,
                    "shard {i}/{count} owns {n} of {} namespaces (fair share {fair})",
                    namespaces.len()
                );
            }
        }
    }

    #[test]
    fn the_owner_is_stable_and_a_new_shard_moves_only_what_it_takes() {
        // Fixed values: a change of the hash would move every namespace of
        // a running estate between agents, so it must be deliberate.
        assert_eq!(
            ["pay", "clearing", "batch", "kube-system", "team-7-prod"]
                .map(|ns| Shard::owner(ns, 4)),
            [1, 2, 1, 3, 3]
        );
        let namespaces = estate(2000);
        for count in [1u32, 2, 4, 8] {
            let moved = namespaces
                .iter()
                .filter(|ns| Shard::owner(ns, count) != Shard::owner(ns, count + 1))
                .collect::<Vec<_>>();
            // Only to the new shard, and about 1/(M+1) of them.
            assert!(moved.iter().all(|ns| Shard::owner(ns, count + 1) == count));
            let share = moved.len() as f64 / namespaces.len() as f64;
            let expected = 1.0 / f64::from(count + 1);
            assert!(
                (share - expected).abs() < expected * 0.25,
                "{count}->{}: {share}",
                count + 1
            );
        }
    }

    #[test]
    fn a_shard_narrows_the_scope_and_names_the_owner() {
        let shard = |i| Shard::new(i, 3).expect("shard");
        let owner = Shard::owner("pay", 3);
        let mine = Scope::all().with_shard(Some(shard(owner)));
        let other = Scope::namespaces(["pay", "clearing"]).with_shard(Some(shard((owner + 1) % 3)));
        assert!(mine.allows_namespace("pay"));
        assert!(!other.allows_namespace("pay"));
        let err = other.check("pay", None, None).expect_err("another shard's");
        assert_eq!(err.guard(), "scope");
        assert_eq!(
            err.to_string(),
            format!(
                "namespace pay belongs to shard {owner}/3, not to this agent's shard {}/3",
                (owner + 1) % 3
            )
        );
        assert!(!mine.is_all() || mine.list().is_empty());
        assert_eq!(
            other.describe(),
            format!("clearing,pay, shard {}/3", (owner + 1) % 3)
        );
        // One shard of one is the whole scope.
        assert!(
            Scope::all()
                .with_shard(Shard::new(0, 1))
                .allows_namespace("anything")
        );
    }

    #[test]
    fn shard_flags_parse_or_say_what_is_wrong() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard::new(2, 4).expect("shard")));
        assert_eq!(
            " 0 / 1 ".parse::<Shard>().map(|s| s.to_string()),
            Ok("0/1".into())
        );
        for (bad, why) in [
            ("4/4", "N must be less than M"),
            ("1/0", "M must be at least 1"),
            ("2", "no '/'"),
            ("a/4", "N is not a number"),
            ("1/-4", "M is not a number"),
        ] {
            let err = bad.parse::<Shard>().expect_err(bad);
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_hands_off_label_on_a_namespace_or_an_object_refuses() {
        let s = Scope::all();
        let off = labels(&[(HANDS_OFF_LABEL, "true")]);
        let on = labels(&[(HANDS_OFF_LABEL, "false"), ("team", "pay")]);
        assert_eq!(
            s.check("pay", Some(&off), None)
                .expect_err("hands-off namespace"),
            OutOfScope::HandsOffNamespace {
                namespace: "pay".into()
            }
        );
        assert_eq!(
            s.check("pay", Some(&on), Some(&off))
                .expect_err("hands-off object"),
            OutOfScope::HandsOffObject
        );
        assert_eq!(s.check("pay", Some(&on), Some(&on)), Ok(()));
        // Any other value, even a typo, is hands-off.
        assert!(hands_off(Some(&labels(&[(HANDS_OFF_LABEL, "ture")]))));
        assert!(!hands_off(None));
    }
}
