//! Scoring anomaly scores against labelled windows the way the Numenta
//! Anomaly Benchmark does (standard profile), written from NAB's published
//! rules:
//!
//! - the first 15% of a file (at most 750 rows) is probation and not scored;
//! - a row is a detection when its score reaches the threshold; one threshold
//!   per detector for every file;
//! - in each window only the earliest detection counts, worth
//!   `A_TP · σ(y) / σ(−1)` with `σ(y) = 2/(1+e^{5y}) − 1` and `y` the row's
//!   position relative to the window's end (−1 at its first row, about 0 at
//!   its last); the division by `σ(−1)` is NAB's sweeper's, so a detection on
//!   a window's first row is worth exactly `A_TP`;
//! - a detection outside every window costs `A_FP · σ(y)` with `y` its distance
//!   past the preceding window's end in window widths (σ is −1 past 3 widths,
//!   and before the first window);
//! - a window without detection costs `A_FN`;
//! - the corpus total is normalized so that the detector that never fires
//!   scores 0 and `A_TP` per window (NAB's "perfect", the detector that fires
//!   on every window's first row) scores 100.
//!
//! Three profiles, NAB's weights: standard, reward low FP, reward low FN.
//!
//! Pure: timestamps, scores and label text in, numbers out. NAB's data
//! files (`timestamp,value` CSV) are read by `csv`.

use std::collections::BTreeMap;

use super::Error;

mod csv;

pub use csv::{Order, format_timestamp, parse_series, parse_timestamp};

/// Weights of a NAB profile.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

/// NAB's standard profile.
pub const STANDARD: Profile = Profile {
    tp: 1.0,
    fp: 0.11,
    fn_: 1.0,
};

/// NAB's `reward_low_FP_rate` profile: false positives cost twice as much.
pub const REWARD_LOW_FP: Profile = Profile {
    tp: 1.0,
    fp: 0.22,
    fn_: 1.0,
};

/// NAB's `reward_low_FN_rate` profile: a missed window costs twice as much.
pub const REWARD_LOW_FN: Profile = Profile {
    tp: 1.0,
    fp: 0.11,
    fn_: 2.0,
};

/// The three profiles with the names NAB's scoreboard uses.
pub const PROFILES: [(&str, Profile); 3] = [
    ("standard", STANDARD),
    ("reward_low_FP_rate", REWARD_LOW_FP),
    ("reward_low_FN_rate", REWARD_LOW_FN),
];

/// What a detection on the first row of a window is worth, unweighted:
/// NAB divides every true positive by it.
fn max_tp() -> f64 {
    scaled_sigmoid(-1.0)
}

/// `100 · (raw − null) / (perfect − null)`; 0 when the corpus has no window.
pub fn normalize(raw: f64, null: f64, perfect: f64) -> f64 {
    if perfect > null {
        100.0 * (raw - null) / (perfect - null)
    } else {
        0.0
    }
}

/// NAB's scaled sigmoid.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// Probation rows of a file of `rows` rows.
pub fn probation_rows(rows: usize) -> usize {
    ((0.15 * rows as f64).floor() as usize).min(750)
}

/// What a detection on a given row would be worth.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Row {
    Probation,
    /// Inside window `window`, worth `value` (unweighted) if it is the
    /// window's earliest detection.
    Window {
        window: usize,
        value: f64,
    },
    /// Outside windows; `value` is the (negative) unweighted cost.
    Outside {
        value: f64,
    },
}

/// One data file prepared for scoring.
#[derive(Clone, Debug)]
pub struct LabeledFile {
    rows: Vec<Row>,
    windows: usize,
}

impl LabeledFile {
    /// `timestamps` are the file's rows (unix seconds, ascending);
    /// `windows` the labelled `[start, end]` pairs, inclusive.
    pub fn new(timestamps: &[i64], windows: &[(i64, i64)]) -> Self {
        let n = timestamps.len();
        let probation = probation_rows(n);
        // Window bounds as row indices; a window matching no row is dropped
        // (NAB's labels always match rows).
        let bounds: Vec<(usize, usize)> = windows
            .iter()
            .filter_map(|&(s, e)| {
                let first = timestamps.partition_point(|t| *t < s);
                let end = timestamps.partition_point(|t| *t <= e);
                (end > first).then_some((first, end - 1))
            })
            .collect();
        let mut rows = Vec::with_capacity(n);
        let mut next = 0; // next window to enter
        let mut prev: Option<(usize, usize)> = None; // (right index, width)
        for i in 0..n {
            let row = if let Some(&(first, last)) = bounds.get(next)
                && i >= first
                && i <= last
            {
                let width = (last - first + 1) as f64;
                let y = -((last - i + 1) as f64) / width;
                if i == last {
                    prev = Some((last, last - first + 1));
                    next += 1;
                }
                Row::Window {
                    window: next - usize::from(i == last),
                    value: scaled_sigmoid(y),
                }
            } else {
                let value = match prev {
                    None => -1.0,
                    Some((right, width)) => {
                        let denom = (width.saturating_sub(1)).max(1) as f64;
                        scaled_sigmoid((i - right) as f64 / denom)
                    }
                };
                Row::Outside { value }
            };
            rows.push(if i < probation { Row::Probation } else { row });
        }
        LabeledFile {
            rows,
            windows: bounds.len(),
        }
    }

    pub fn windows(&self) -> usize {
        self.windows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Raw score of `scores` (one per row) at `threshold`.
    pub fn score(&self, scores: &[f64], threshold: f64, p: Profile) -> Counts {
        let mut c = Counts::default();
        let mut detected = vec![false; self.windows];
        for (row, s) in self.rows.iter().zip(scores) {
            if *s < threshold || !s.is_finite() {
                continue;
            }
            match *row {
                Row::Probation => {}
                Row::Window { window, value } => {
                    if !detected[window] {
                        detected[window] = true;
                        c.tp += 1;
                        c.raw += p.tp * value / max_tp();
                    }
                }
                Row::Outside { value } => {
                    c.fp += 1;
                    c.raw += p.fp * value;
                }
            }
        }
        let missed = detected.iter().filter(|d| !**d).count();
        c.fn_ += missed;
        c.raw -= p.fn_ * missed as f64;
        c
    }

    /// Raw score of the detector that never fires.
    pub fn null_score(&self, p: Profile) -> f64 {
        -p.fn_ * self.windows as f64
    }

    /// Raw score of the detector that fires on each window's first row
    /// (NAB's "perfect": `A_TP` per window).
    pub fn perfect_score(&self, p: Profile) -> f64 {
        p.tp * self.windows as f64
    }
}

/// Detections and raw score of one file or a corpus.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    pub raw: f64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
        self.raw += o.raw;
    }
}

/// Result of the threshold sweep over a corpus.
#[derive(Clone, Copy, Debug)]
pub struct Sweep {
    pub threshold: f64,
    pub counts: Counts,
    /// 0 = null detector, 100 = perfect.
    pub normalized: f64,
}

/// Files with one detector's scores, one per row.
pub type Scored<'a> = (&'a LabeledFile, &'a [f64]);

/// Scores a corpus at a fixed `threshold` (normalized over this corpus).
pub fn score_at(corpus: &[Scored], threshold: f64, p: Profile) -> Sweep {
    let mut counts = Counts::default();
    let (mut null, mut perfect) = (0.0, 0.0);
    for (f, scores) in corpus {
        counts += f.score(scores, threshold, p);
        null += f.null_score(p);
        perfect += f.perfect_score(p);
    }
    Sweep {
        threshold,
        counts,
        normalized: normalize(counts.raw, null, perfect),
    }
}

/// Scores a corpus (files with their detector scores) at every distinct
/// score as threshold and keeps the best: one threshold for all files, as NAB
/// does. See [`Ranked::sweep`].
pub fn sweep(corpus: &[Scored], p: Profile) -> Sweep {
    Ranked::new(corpus).sweep(p, |_| true)
}

/// A corpus's scorable rows sorted by score, highest first: sorted once,
/// then swept for any profile and any subset of its files.
pub struct Ranked<'a> {
    corpus: Vec<Scored<'a>>,
    /// (score, file, row) of every scorable row.
    events: Vec<(f64, u32, u32)>,
}

impl<'a> Ranked<'a> {
    pub fn new(corpus: &[Scored<'a>]) -> Self {
        let mut events = Vec::new();
        for (fi, (f, scores)) in corpus.iter().enumerate() {
            for (ri, (row, s)) in f.rows.iter().zip(scores.iter()).enumerate() {
                if s.is_finite() && !matches!(row, Row::Probation) {
                    events.push((*s, fi as u32, ri as u32));
                }
            }
        }
        events.sort_by(|a, b| b.0.total_cmp(&a.0));
        Ranked {
            corpus: corpus.to_vec(),
            events,
        }
    }

    /// The files, in the order given to [`Ranked::new`].
    pub fn files(&self) -> &[Scored<'a>] {
        &self.corpus
    }

    /// The best threshold over the files `keep` accepts (by index). Exact
    /// and linear: rows are visited from the highest score down, and the raw
    /// total is updated as each row becomes a detection. Ties keep the
    /// highest threshold (the fewest detections), reported as the middle of
    /// its plateau: halfway to the next lower score, which detects nothing
    /// more on these files (NAB reports the plateau's top; the score is the
    /// same).
    pub fn sweep(&self, p: Profile, keep: impl Fn(usize) -> bool) -> Sweep {
        let kept: Vec<bool> = (0..self.corpus.len()).map(&keep).collect();
        let (mut null, mut perfect) = (0.0, 0.0);
        let mut window_base = Vec::with_capacity(self.corpus.len());
        let mut windows = 0;
        for (fi, (f, _)) in self.corpus.iter().enumerate() {
            window_base.push(windows);
            if kept[fi] {
                windows += f.windows;
                null += f.null_score(p);
                perfect += f.perfect_score(p);
            }
        }
        let normalize = |raw: f64| normalize(raw, null, perfect);
        let events: Vec<(f64, u32, u32)> = self
            .events
            .iter()
            .filter(|e| kept[e.1 as usize])
            .copied()
            .collect();
        let mut best_in_window: Vec<Option<f64>> = vec![None; windows];
        let mut counts = Counts {
            fn_: windows,
            raw: null,
            ..Counts::default()
        };
        let mut best = Sweep {
            threshold: f64::INFINITY,
            counts,
            normalized: normalize(null),
        };
        let mut i = 0;
        while i < events.len() {
            let threshold = events[i].0;
            // Every row with this exact score becomes a detection together.
            while i < events.len() && events[i].0 == threshold {
                let (_, fi, ri) = events[i];
                let fi = fi as usize;
                match self.corpus[fi].0.rows[ri as usize] {
                    Row::Probation => {}
                    Row::Window { window, value } => {
                        let slot = &mut best_in_window[window_base[fi] + window];
                        match *slot {
                            None => {
                                counts.tp += 1;
                                counts.fn_ -= 1;
                                counts.raw += p.fn_ + p.tp * value / max_tp();
                                *slot = Some(value);
                            }
                            // An earlier row of the window is worth more.
                            Some(v) if value > v => {
                                counts.raw += p.tp * (value - v) / max_tp();
                                *slot = Some(value);
                            }
                            Some(_) => {}
                        }
                    }
                    Row::Outside { value } => {
                        counts.fp += 1;
                        counts.raw += p.fp * value;
                    }
                }
                i += 1;
            }
            let n = normalize(counts.raw);
            if n > best.normalized {
                // Any threshold down to the next lower score detects the
                // same rows: take the middle of that plateau, so a threshold
                // carried to other files keeps a margin on both sides.
                let threshold = match events.get(i) {
                    Some(&(next, _, _)) => threshold - (threshold - next) / 2.0,
                    None => threshold,
                };
                best = Sweep {
                    threshold,
                    counts,
                    normalized: n,
                };
            }
        }
        best
    }
}

/// Reads NAB's `combined_windows.json`: file name → windows in unix seconds.
pub fn parse_windows(json: &str) -> Result<BTreeMap<String, Vec<(i64, i64)>>, Error> {
    let raw: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(json).map_err(|e| Error::ParseLabels(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (file, windows) in raw {
        let mut parsed = Vec::with_capacity(windows.len());
        for w in windows {
            let (Some(s), Some(e)) = (w.first(), w.get(1)) else {
                return Err(Error::ParseLabels(format!(
                    "{file}: a window needs a start and an end"
                )));
            };
            let start = parse_timestamp(s)
                .ok_or_else(|| Error::ParseLabels(format!("{file}: bad timestamp {s:?}")))?;
            let end = parse_timestamp(e)
                .ok_or_else(|| Error::ParseLabels(format!("{file}: bad timestamp {e:?}")))?;
            parsed.push((start, end));
        }
        out.insert(file, parsed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: usize, windows: &[(i64, i64)]) -> LabeledFile {
        let ts: Vec<i64> = (0..n as i64).map(|i| i * 300).collect();
        LabeledFile::new(&ts, windows)
    }

    #[test]
    fn sigmoid_matches_nab() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298).abs() < 1e-6);
        assert!(scaled_sigmoid(0.0).abs() < 1e-12);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn earliest_detection_in_window_counts_once() {
        // 1000 rows, probation 150, window rows 500..=599.
        let f = file(1000, &[(500 * 300, 599 * 300)]);
        let mut s = vec![0.0; 1000];
        s[500] = 1.0;
        s[550] = 1.0;
        let c = f.score(&s, 0.5, STANDARD);
        assert_eq!((c.tp, c.fp, c.fn_), (1, 0, 0));
        assert!((c.raw - f.perfect_score(STANDARD)).abs() < 1e-9);
        // A late detection is worth less.
        let mut late = vec![0.0; 1000];
        late[590] = 1.0;
        assert!(f.score(&late, 0.5, STANDARD).raw < c.raw);
    }

    #[test]
    fn false_positives_cost_less_right_after_a_window_and_nothing_in_probation() {
        let f = file(1000, &[(500 * 300, 599 * 300)]);
        let fp_at = |i: usize| {
            let mut s = vec![0.0; 1000];
            s[i] = 1.0;
            f.score(&s, 0.5, STANDARD)
        };
        assert_eq!(fp_at(100).raw, -1.0); // probation: only the miss counts
        assert!((fp_at(300).raw - (-1.0 - 0.11)).abs() < 1e-9);
        let near = fp_at(601).raw;
        let far = fp_at(990).raw;
        assert!(near > far, "{near} {far}");
        assert!((far - (-1.0 - 0.11)).abs() < 1e-9);
    }

    #[test]
    fn sweep_normalizes_null_to_zero_and_perfect_to_hundred() {
        let f = file(1000, &[(500 * 300, 599 * 300)]);
        let mut perfect = vec![0.0; 1000];
        perfect[500] = 0.9;
        let best = sweep(&[(&f, &perfect)], STANDARD);
        assert!((best.normalized - 100.0).abs() < 1e-9, "{best:?}");
        let null = sweep(&[(&f, &[0.0; 1000])], STANDARD);
        assert!(null.normalized.abs() < 1e-9, "{null:?}");
    }

    #[test]
    fn null_scores_0_and_perfect_100_in_every_profile_by_construction() {
        // Two labelled files (three windows, one of them a single row) and a
        // quiet one, of different lengths.
        let ts = |n: i64| (0..n).map(|i| i * 300).collect::<Vec<_>>();
        let files = [
            LabeledFile::new(&ts(1000), &[(300 * 300, 349 * 300), (800 * 300, 800 * 300)]),
            LabeledFile::new(&ts(6000), &[(4000 * 300, 4399 * 300)]),
            LabeledFile::new(&ts(500), &[]),
        ];
        let firsts: [&[usize]; 3] = [&[300, 800], &[4000], &[]];
        let null: Vec<Vec<f64>> = files.iter().map(|f| vec![0.0; f.len()]).collect();
        let perfect: Vec<Vec<f64>> = files
            .iter()
            .zip(firsts)
            .map(|(f, rows)| {
                let mut s = vec![0.0; f.len()];
                for &r in rows {
                    s[r] = 1.0;
                }
                s
            })
            .collect();
        let corpus = |scores: &[Vec<f64>]| -> Vec<(LabeledFile, Vec<f64>)> {
            files.iter().cloned().zip(scores.iter().cloned()).collect()
        };
        let (null, perfect) = (corpus(&null), corpus(&perfect));
        let n: Vec<Scored> = null.iter().map(|(f, s)| (f, s.as_slice())).collect();
        let q: Vec<Scored> = perfect.iter().map(|(f, s)| (f, s.as_slice())).collect();
        for (name, p) in PROFILES {
            assert!(sweep(&n, p).normalized.abs() < 1e-9, "{name}");
            assert!(score_at(&n, 0.5, p).normalized.abs() < 1e-9, "{name}");
            assert!((sweep(&q, p).normalized - 100.0).abs() < 1e-9, "{name}");
            let at = score_at(&q, 0.5, p);
            assert!((at.normalized - 100.0).abs() < 1e-9, "{name}");
            assert_eq!((at.counts.tp, at.counts.fp, at.counts.fn_), (3, 0, 0));
            // One more detection outside the windows costs exactly A_FP.
            let mut extra = perfect.clone();
            extra[2].1[499] = 1.0;
            let e: Vec<Scored> = extra.iter().map(|(f, s)| (f, s.as_slice())).collect();
            let raw = score_at(&e, 0.5, p).counts.raw;
            assert!((raw - (3.0 * p.tp - p.fp)).abs() < 1e-9, "{name}: {raw}");
        }
    }

    #[test]
    fn sweep_agrees_with_scoring_at_its_threshold() {
        let f = file(1000, &[(500 * 300, 599 * 300), (800 * 300, 849 * 300)]);
        let scores: Vec<f64> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f64 / 1000.0)
            .collect();
        let best = sweep(&[(&f, &scores)], STANDARD);
        let direct = f.score(&scores, best.threshold, STANDARD);
        assert_eq!(
            (direct.tp, direct.fp, direct.fn_),
            (best.counts.tp, best.counts.fp, best.counts.fn_)
        );
        assert!((direct.raw - best.counts.raw).abs() < 1e-9);
    }

    #[test]
    fn parses_nab_windows() {
        let w = parse_windows(
            r#"{"a/x.csv": [["2014-04-10 07:15:00.000000", "2014-04-11 16:45:00.000000"]], "b/y.csv": []}"#,
        )
        .expect("parses");
        assert_eq!(w["a/x.csv"].len(), 1);
        assert!(w["b/y.csv"].is_empty());
        assert!(parse_windows(r#"{"a": [["x", "y"]]}"#).is_err());
    }
}
