//! Detector tests on the fixture series in `tests/fixtures/series/` (see
//! `generate.py` there for how each was made and where its anomaly is).

use super::*;

const T0: i64 = 1_699_920_000;
const STEP: i64 = 300;

/// A fixture's rows. Not `nab::parse_series`, which refuses the NaNs that
/// `gaps_nan.csv` holds on purpose: the detectors must treat them as no data.
fn series(text: &str) -> Vec<(i64, f64)> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (at, v) = l.split_once(',').expect("timestamp,value");
            (
                at.trim().parse().expect("unix seconds"),
                v.trim().parse().expect("a float, nan included"),
            )
        })
        .collect()
}

macro_rules! fixture {
    ($name:literal) => {
        series(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/series/",
            $name
        )))
    };
}

fn component() -> ComponentId {
    ComponentId {
        kind: "Cluster".into(),
        namespace: "payments".into(),
        name: "ledger-db".into(),
    }
}

fn run(params: &DetectorParams, options: SeriesOptions, samples: &[(i64, f64)]) -> Vec<Finding> {
    SeriesState::new(component(), "signal", params, options).score_samples(samples)
}

fn default(name: &str) -> DetectorParams {
    DetectorParams::default_for(name).expect("known detector")
}

fn step_of(f: &Finding) -> i64 {
    (f.at - T0) / STEP
}

#[test]
fn ewma_fires_on_the_spike_only() {
    let f = run(
        &default("ewma"),
        SeriesOptions::default(),
        &fixture!("steady_spike.csv"),
    );
    assert_eq!(f.iter().map(step_of).collect::<Vec<_>>(), vec![700]);
    assert!(f[0].score > 0.9 && f[0].score <= 1.0);
    assert_eq!(f[0].detector, "ewma");
    assert!(
        f[0].explanation.contains("from its EWMA mean"),
        "{}",
        f[0].explanation
    );
    assert!((f[0].baseline - 100.0).abs() < 2.0);
    assert!(
        run(
            &default("ewma"),
            SeriesOptions::default(),
            &fixture!("steady_clean.csv")
        )
        .is_empty()
    );
}

#[test]
fn mad_fires_on_the_spike_only() {
    let f = run(
        &default("mad"),
        SeriesOptions::default(),
        &fixture!("steady_spike.csv"),
    );
    assert_eq!(f.iter().map(step_of).collect::<Vec<_>>(), vec![700]);
    assert!(
        run(
            &default("mad"),
            SeriesOptions::default(),
            &fixture!("steady_clean.csv")
        )
        .is_empty()
    );
}

#[test]
fn cusum_finds_a_three_sigma_shift_within_ten_samples_and_reports_it_once() {
    let f = run(
        &default("cusum"),
        SeriesOptions::default(),
        &fixture!("level_shift.csv"),
    );
    assert!(!f.is_empty(), "no finding on the shift");
    let first = step_of(&f[0]);
    assert!((600..610).contains(&first), "first finding at step {first}");
    // The spike-free clean series does not trip it, and neither does the
    // shifted series once the new level is adopted.
    assert!(
        f.iter().all(|x| step_of(x) < 620),
        "{:?}",
        f.iter().map(step_of).collect::<Vec<_>>()
    );
    assert!(
        run(
            &default("cusum"),
            SeriesOptions::default(),
            &fixture!("steady_clean.csv")
        )
        .is_empty()
    );
    // EWMA with its defaults misses the same 3σ shift: that is what CUSUM is for.
    assert!(
        run(
            &default("ewma"),
            SeriesOptions::default(),
            &fixture!("level_shift.csv")
        )
        .is_empty()
    );
}

#[test]
fn seasonal_sees_daytime_traffic_at_night_that_a_global_model_misses() {
    let params = default("seasonal");
    let f = run(
        &params,
        SeriesOptions::default(),
        &fixture!("daily_traffic.csv"),
    );
    let anomaly = 12 * 288 + 36;
    assert!(!f.is_empty());
    assert_eq!(
        step_of(&f[0]),
        anomaly,
        "first finding is the first anomalous sample"
    );
    assert!(
        f.iter()
            .all(|x| (anomaly..anomaly + 12).contains(&step_of(x)))
    );
    assert!(
        run(
            &params,
            SeriesOptions::default(),
            &fixture!("daily_traffic_clean.csv")
        )
        .is_empty()
    );
    // 1500 is well inside the daily range: a robust global model stays quiet.
    let mad = run(
        &default("mad"),
        SeriesOptions::default(),
        &fixture!("daily_traffic.csv"),
    );
    assert!(
        mad.iter()
            .all(|x| !(anomaly..anomaly + 12).contains(&step_of(x)))
    );
}

#[test]
fn forecast_gives_time_until_the_disk_is_full() {
    let params = DetectorParams::Forecast {
        alpha: 0.05,
        half_life_seconds: None,
        beta: 0.01,
        trend_half_life_seconds: None,
        threshold: 90.0,
        direction: Direction::Above,
        horizon_seconds: 4.0 * 86_400.0,
        warmup: 100,
    };
    let f = run(
        &params,
        SeriesOptions::default(),
        &fixture!("disk_fill.csv"),
    );
    assert!(!f.is_empty(), "no forecast finding");
    // The true crossing is at step 3000; findings start once it is within
    // the 4-day horizon (step 1848), give or take the trend's noise.
    let first = step_of(&f[0]);
    assert!(
        (1750..1950).contains(&first),
        "first forecast at step {first}"
    );
    let last = f.last().expect("findings");
    let truth = ((3000 - step_of(last)) * STEP) as f64;
    let ttt = last.time_to_threshold_seconds.expect("time to threshold");
    assert!(
        (ttt - truth).abs() / truth < 0.2,
        "forecast {ttt}s, truth {truth}s"
    );
    assert!(
        last.explanation.contains("trending to go above 90"),
        "{}",
        last.explanation
    );
    assert!(
        run(
            &params,
            SeriesOptions::default(),
            &fixture!("disk_flat.csv")
        )
        .is_empty()
    );
}

#[test]
fn nan_is_no_data_and_a_long_gap_restarts_warm_up() {
    let samples = fixture!("gaps_nan.csv");
    let mut s = SeriesState::new(
        component(),
        "signal",
        &default("ewma"),
        SeriesOptions::default(),
    );
    let mut nan = 0;
    let mut warm_after_gap = 0;
    for &(at, v) in &samples {
        let out = s.score_sample(at, v);
        if v.is_nan() {
            assert_eq!(out, Outcome::NoData(NoData::NotFinite));
            nan += 1;
        }
        let step = (at - T0) / STEP;
        if (524..524 + 50).contains(&step) && out == Outcome::WarmingUp {
            warm_after_gap += 1;
        }
        assert!(
            !matches!(out, Outcome::Anomalous(_)),
            "finding at step {step}"
        );
    }
    assert_eq!(nan, 20);
    // 50 warm-up samples minus the one NaN that falls in them.
    assert_eq!(warm_after_gap, 49);
    assert_eq!(s.score_sample(T0, 1.0), Outcome::NoData(NoData::OutOfOrder));
}

#[test]
fn stale_and_missing_series_are_no_data() {
    let mut s = SeriesState::new(
        component(),
        "signal",
        &default("ewma"),
        SeriesOptions::default(),
    );
    assert_eq!(s.freshness(T0), Err(NoData::Missing));
    s.score_sample(T0, 1.0);
    assert_eq!(s.freshness(T0 + 300), Ok(()));
    assert_eq!(s.freshness(T0 + 301), Err(NoData::Stale));
}

#[test]
fn counter_reset_is_an_increase_not_a_crash_in_rate() {
    let samples = fixture!("counter_reset.csv");
    let options = SeriesOptions {
        counter: true,
        ..SeriesOptions::default()
    };
    let mut s = SeriesState::new(component(), "requests", &default("ewma"), options);
    assert_eq!(
        s.score_sample(samples[0].0, samples[0].1),
        Outcome::WarmingUp
    );
    let findings = s.score_samples(&samples[1..]);
    assert!(findings.is_empty(), "{:?}", findings.first());
    // Scored as raw values, the reset is a huge drop.
    let raw = run(&default("ewma"), SeriesOptions::default(), &samples);
    assert!(raw.iter().any(|f| step_of(f) == 400));
}

#[test]
fn nothing_is_scored_during_warm_up() {
    let samples = fixture!("steady_spike.csv");
    for name in DetectorParams::DEFAULT_NAMES {
        let mut d = default(name).build();
        assert_eq!(d.score(samples[0].0, samples[0].1), None, "{name}");
        assert_eq!(d.score(samples[1].0, f64::NAN), None, "{name}");
    }
}

#[test]
fn ensemble_reports_one_peak_per_episode() {
    let mut d = default("ensemble").build();
    let samples = fixture!("steady_spike.csv");
    let scores: Vec<f64> = samples
        .iter()
        .map(|&(at, v)| d.score(at, v).map_or(0.0, |s| s.score))
        .collect();
    let (peak, _) = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .expect("scores");
    assert_eq!(peak, 700);
    assert!(scores[700] > 0.9);
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)));
}

#[test]
fn cusum_reports_a_step_in_a_flat_series_once() {
    let samples: Vec<(i64, f64)> = (0..400)
        .map(|i| (T0 + i * STEP, if i < 300 { 120.0 } else { 132.0 }))
        .collect();
    let f = run(&default("cusum"), SeriesOptions::default(), &samples);
    assert_eq!(f.iter().map(step_of).collect::<Vec<_>>(), vec![300]);
}

#[test]
fn findings_carry_the_window_they_were_judged_on() {
    // MAD: the last 288 samples, every 300 s, before the spike at step 700.
    let f = run(
        &default("mad"),
        SeriesOptions::default(),
        &fixture!("steady_spike.csv"),
    );
    let w = f[0].window.as_ref().expect("a MAD finding has a window");
    assert_eq!(w.end, f[0].at - STEP);
    assert_eq!(w.samples, Some(288));
    assert_eq!(w.start, w.end - 287 * STEP);
    assert_eq!(w.baseline, f[0].baseline);
    assert!(w.spread > 0.0 && ((f[0].value - w.baseline) / w.spread).abs() > 5.0);
    // Seasonal: the slot's periods, counted in time, never before the start.
    let f = run(
        &default("seasonal"),
        SeriesOptions::default(),
        &fixture!("daily_traffic.csv"),
    );
    let w = f[0]
        .window
        .as_ref()
        .expect("a seasonal finding has a window");
    assert_eq!(w.samples, None);
    assert!(w.start >= T0 && w.start <= w.end - 86_400, "{w:?}");
    // EWMA right after a restart: the window starts no earlier than it.
    let e = run(
        &default("ewma"),
        SeriesOptions::default(),
        &fixture!("steady_spike.csv"),
    );
    let w = e[0].window.as_ref().expect("an EWMA finding has a window");
    assert!(w.start >= T0 && w.start < w.end && w.samples.is_some());
    // Forecasts are not judged against a window.
    let text = serde_json::to_string(&Finding::fixture(component(), "s", 0.9)).expect("json");
    assert!(!text.contains("window"), "absent, not null: {text}");
}
