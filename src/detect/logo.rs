//! Leave-one-group-out evaluation: how a detector, *together with the way
//! its parameters and threshold are chosen*, scores on a group of series
//! whose labels took no part in the choice.
//!
//! For each group that has labelled windows, every candidate parameter set
//! is swept on the other groups' files (groups without windows always train:
//! they only add false positives), the best (candidate, threshold) is kept,
//! and the held-out group is scored at exactly that threshold, normalized
//! over that group alone. The headline is the mean over held-out groups.
//! Running a detector over a held-out file is not a leak: detectors are
//! online and unsupervised; only labels choose.
//!
//! Pure: labelled files and scores in, numbers out. Must not run detectors or
//! read files (that is `autopilot detect eval`).

use std::collections::BTreeSet;

use super::nab::{self, Counts, LabeledFile, Profile, Ranked, Scored, Sweep};

/// The group of a NAB file name (`realTraffic/speed_t4013.csv` →
/// `realTraffic`).
pub fn group_of(name: &str) -> &str {
    name.split_once('/').map_or(name, |(g, _)| g)
}

/// One held-out group's result.
#[derive(Clone, Debug)]
pub struct Fold {
    pub group: String,
    /// Index of the candidate chosen on the other groups.
    pub candidate: usize,
    /// Threshold chosen on the other groups.
    pub threshold: f64,
    /// Normalized score of that choice on the other groups.
    pub train: f64,
    /// Held-out detections at that threshold.
    pub counts: Counts,
    /// Held-out normalized score (0 = null, 100 = perfect on this group).
    pub score: f64,
}

/// Every held-out group, in name order.
#[derive(Clone, Debug, Default)]
pub struct Logo {
    pub folds: Vec<Fold>,
}

impl Logo {
    /// Mean held-out score over the groups (the headline); 0 without folds.
    pub fn mean(&self) -> f64 {
        if self.folds.is_empty() {
            return 0.0;
        }
        self.folds.iter().map(|f| f.score).sum::<f64>() / self.folds.len() as f64
    }
}

/// The labelled corpus: files and the group of each.
pub struct Corpus<'a> {
    pub files: Vec<&'a LabeledFile>,
    pub groups: Vec<&'a str>,
}

impl Corpus<'_> {
    /// Groups with at least one window, in name order: the folds.
    pub fn labelled_groups(&self) -> Vec<&str> {
        let groups: BTreeSet<&str> = self
            .files
            .iter()
            .zip(&self.groups)
            .filter(|(f, _)| f.windows() > 0)
            .map(|(_, g)| *g)
            .collect();
        groups.into_iter().collect()
    }

    /// Each candidate's rows ranked once (`candidates[c][i]`: candidate
    /// `c`'s scores of file `i`), for the sweeps of every fold and profile.
    pub fn rank<'s>(&'s self, candidates: &'s [Vec<Vec<f64>>]) -> Vec<Ranked<'s>> {
        candidates
            .iter()
            .map(|scores| {
                let files: Vec<Scored> = self
                    .files
                    .iter()
                    .zip(scores)
                    .map(|(f, s)| (*f, s.as_slice()))
                    .collect();
                Ranked::new(&files)
            })
            .collect()
    }
}

/// The best candidate and threshold on the files whose group `keep`
/// accepts. Ties keep the earlier candidate, so list the current defaults
/// first.
pub fn choose(
    corpus: &Corpus,
    ranked: &[Ranked],
    p: Profile,
    keep: impl Fn(&str) -> bool,
) -> Option<(usize, Sweep)> {
    let mut best: Option<(usize, Sweep)> = None;
    for (c, r) in ranked.iter().enumerate() {
        let s = r.sweep(p, |i| keep(corpus.groups[i]));
        if best.is_none_or(|(_, b)| s.normalized > b.normalized) {
            best = Some((c, s));
        }
    }
    best
}

/// The leave-one-group-out evaluation of choosing among the `ranked`
/// candidates (see the module doc).
pub fn leave_one_group_out(corpus: &Corpus, ranked: &[Ranked], p: Profile) -> Logo {
    let mut folds = Vec::new();
    for group in corpus.labelled_groups() {
        let Some((candidate, train)) = choose(corpus, ranked, p, |g| g != group) else {
            continue;
        };
        let held: Vec<Scored> = ranked[candidate]
            .files()
            .iter()
            .zip(&corpus.groups)
            .filter(|(_, g)| **g == group)
            .map(|(s, _)| *s)
            .collect();
        let held = nab::score_at(&held, train.threshold, p);
        folds.push(Fold {
            group: group.to_string(),
            candidate,
            threshold: train.threshold,
            train: train.normalized,
            counts: held.counts,
            score: held.normalized,
        });
    }
    Logo { folds }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of 1000 five-minute rows with one window at rows `at..at+50`.
    fn file(at: i64) -> LabeledFile {
        let ts: Vec<i64> = (0..1000).map(|i| i * 300).collect();
        LabeledFile::new(&ts, &[(at * 300, (at + 49) * 300)])
    }

    /// Scores that peak at `peak` with `height`, 0.1 elsewhere.
    fn peak_at(peak: usize, height: f64) -> Vec<f64> {
        let mut s = vec![0.1; 1000];
        s[peak] = height;
        s
    }

    #[test]
    fn groups_are_the_first_path_component() {
        assert_eq!(group_of("realTraffic/speed_t4013.csv"), "realTraffic");
        assert_eq!(group_of("plain.csv"), "plain.csv");
    }

    #[test]
    fn each_fold_chooses_on_the_other_groups_only() {
        // Groups a and b; candidate 0 hits a's window and misses b's,
        // candidate 1 the reverse. Held out, each group gets the candidate
        // that was best on the *other* group, so scores poorly.
        let (fa, fb) = (file(500), file(700));
        let corpus = Corpus {
            files: vec![&fa, &fb],
            groups: vec!["a", "b"],
        };
        let c0 = vec![peak_at(500, 0.9), peak_at(300, 0.9)];
        let c1 = vec![peak_at(300, 0.9), peak_at(700, 0.9)];
        let c = [c0, c1];
        let logo = leave_one_group_out(&corpus, &corpus.rank(&c), nab::STANDARD);
        let chosen: Vec<_> = logo
            .folds
            .iter()
            .map(|f| (f.group.as_str(), f.candidate))
            .collect();
        assert_eq!(chosen, vec![("a", 1), ("b", 0)]);
        for f in &logo.folds {
            assert!((f.train - 100.0).abs() < 1e-9, "{f:?}");
            assert!(f.score < 0.0, "a false positive and a miss: {f:?}");
            assert_eq!((f.counts.tp, f.counts.fp, f.counts.fn_), (0, 1, 1));
        }
        // On all groups, a third candidate that hits both windows wins.
        let both = [
            c[0].clone(),
            c[1].clone(),
            vec![peak_at(500, 0.9), peak_at(700, 0.9)],
        ];
        let (chosen, all) =
            choose(&corpus, &corpus.rank(&both), nab::STANDARD, |_| true).expect("a candidate");
        assert_eq!(chosen, 2);
        assert!((all.normalized - 100.0).abs() < 1e-9);
    }

    #[test]
    fn held_out_labels_do_not_change_the_choice() {
        // Candidate 0 peaks on b's row 700, candidate 1 on b's row 200.
        let c = vec![
            vec![peak_at(500, 0.9), peak_at(700, 0.8)],
            vec![peak_at(400, 0.7), peak_at(200, 0.6)],
        ];
        let fold_a = |fa: &LabeledFile, fb: &LabeledFile| {
            let corpus = Corpus {
                files: vec![fa, fb],
                groups: vec!["a", "b"],
            };
            let logo = leave_one_group_out(&corpus, &corpus.rank(&c), nab::STANDARD);
            let f = logo.folds.into_iter().find(|f| f.group == "a");
            f.map(|f| (f.candidate, (f.threshold * 1000.0).round() as i64))
        };
        // Moving a's own window does not change what fold a chose…
        assert_eq!(
            fold_a(&file(500), &file(700)),
            fold_a(&file(100), &file(700))
        );
        // …while b's labels, which train fold a, decide it. Thresholds are
        // the middle of the plateau between the peak and the 0.1 floor.
        assert_eq!(fold_a(&file(500), &file(700)), Some((0, 450)));
        assert_eq!(fold_a(&file(500), &file(200)), Some((1, 350)));
    }

    #[test]
    fn groups_without_windows_train_every_fold_and_are_never_held_out() {
        let (fa, fb) = (file(500), file(700));
        let ts: Vec<i64> = (0..1000).map(|i| i * 300).collect();
        let quiet = LabeledFile::new(&ts, &[]);
        let corpus = Corpus {
            files: vec![&fa, &fb, &quiet],
            groups: vec!["a", "b", "quiet"],
        };
        assert_eq!(corpus.labelled_groups(), vec!["a", "b"]);
        // Candidate 0 is perfect on a and b but fires on the quiet file at a
        // higher score than its true peaks; candidate 1 is perfect and
        // quiet: only the quiet file tells them apart.
        let c0 = vec![peak_at(500, 0.5), peak_at(700, 0.5), peak_at(600, 0.9)];
        let c1 = vec![peak_at(500, 0.5), peak_at(700, 0.5), vec![0.1; 1000]];
        let c = [c0, c1];
        let logo = leave_one_group_out(&corpus, &corpus.rank(&c), nab::STANDARD);
        assert_eq!(logo.folds.len(), 2);
        assert!(logo.folds.iter().all(|f| f.candidate == 1), "{logo:?}");
        assert!((logo.mean() - 100.0).abs() < 1e-9);
    }
}
