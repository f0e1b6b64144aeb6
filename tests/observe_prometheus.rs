//! observe + detect against a real Prometheus (Debian's `prometheus` on
//! loopback, started by `autopilot::testenv::prometheus`): every default spec
//! is valid PromQL that Prometheus accepts; backfilled days with injected
//! anomalies warm the detectors through a range query and they fire exactly
//! there; live samples scraped from a test exporter are scored; NaN, stale
//! series and a dead Prometheus are "no data", never findings.

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use autopilot::{
    detect::{ComponentId, CycleInput, Estate, NoData, SeriesSamples, spec::ValidatedSpec},
    observe::{Prometheus as Client, load_model_specs},
    testenv::prometheus::{Exporter, Options, Prometheus},
};

const DEADLINE: Duration = Duration::from_secs(30);

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn specs() -> Vec<ValidatedSpec> {
    load_model_specs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models")).expect("default specs")
}

fn spec(kind: &str) -> ValidatedSpec {
    specs()
        .into_iter()
        .find(|s| s.kind == kind)
        .expect("spec for kind")
}

fn cluster(name: &str) -> ComponentId {
    ComponentId {
        kind: "Cluster".into(),
        namespace: "payments".into(),
        name: name.into(),
    }
}

/// Deterministic noise in [-1, 1).
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// Polls `query` until `done` accepts its result or the deadline passes.
async fn wait_for<F, Fut, T>(what: &str, mut query: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
    T: std::fmt::Debug,
{
    let start = Instant::now();
    loop {
        let v = query().await;
        if done(&v) {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}; last: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn of<'a>(series: &'a [SeriesSamples], c: &ComponentId, signal: &str) -> Option<&'a SeriesSamples> {
    series
        .iter()
        .find(|s| &s.component == c && s.signal == signal)
}

#[tokio::test]
async fn every_default_spec_is_accepted_by_prometheus_and_maps_labels_to_components() {
    init();
    let exporter = Exporter::start().expect("exporter");
    exporter.set(
        "cnpg_pg_replication_lag{namespace=\"payments\",pod=\"ledger-2\"} 0.25\n\
         cnpg_pg_replication_in_recovery{namespace=\"payments\",pod=\"ledger-1\"} 0\n\
         cnpg_pg_replication_in_recovery{namespace=\"payments\",pod=\"ledger-2\"} 1\n\
         kubelet_volume_stats_used_bytes{namespace=\"payments\",persistentvolumeclaim=\"ledger-1\"} 30\n\
         kubelet_volume_stats_capacity_bytes{namespace=\"payments\",persistentvolumeclaim=\"ledger-1\"} 100\n\
         kubelet_volume_stats_used_bytes{namespace=\"payments\",persistentvolumeclaim=\"ledger-1-wal\"} 40\n\
         kubelet_volume_stats_capacity_bytes{namespace=\"payments\",persistentvolumeclaim=\"ledger-1-wal\"} 100\n\
         kubelet_volume_stats_used_bytes{namespace=\"payments\",persistentvolumeclaim=\"ledger-2\"} 95\n\
         kubelet_volume_stats_capacity_bytes{namespace=\"payments\",persistentvolumeclaim=\"ledger-2\"} 100\n\
         argocd_app_info{namespace=\"argocd\",name=\"payments-api\",health_status=\"Degraded\",sync_status=\"Synced\"} 1\n\
         certmanager_certificate_ready_status{namespace=\"payments\",name=\"api-tls\",condition=\"True\"} 1\n\
         kube_deployment_status_replicas_available{namespace=\"payments\",deployment=\"api\"} 1\n\
         kube_deployment_spec_replicas{namespace=\"payments\",deployment=\"api\"} 4\n",
    );
    let prom = Prometheus::start(&Options {
        targets: vec![exporter.addr().to_string()],
        backfill: None,
    })
    .expect("prometheus");
    let client = Client::new(prom.url(), Duration::from_secs(5)).expect("client");

    let cnpg = spec("Cluster");
    let got = wait_for(
        "the exporter's CNPG series",
        || client.query_spec(&cnpg, now()),
        |r| r.as_ref().is_ok_and(|v| !v.is_empty()),
    )
    .await
    .expect("query");
    let lag = of(&got, &cluster("ledger"), "replication_lag")
        .expect("pod ledger-2 maps to Cluster payments/ledger");
    assert_eq!(lag.samples[0].1, 0.25);
    // The replica's nearly full volume counts for the cluster, not for the primary.
    assert_eq!(
        of(&got, &cluster("ledger"), "volume_fill")
            .expect("volume_fill")
            .samples[0]
            .1,
        0.95
    );
    assert_eq!(
        of(&got, &cluster("ledger"), "primary_volume_fill")
            .expect("primary_volume_fill")
            .samples[0]
            .1,
        0.4,
        "only the primary's (ledger-1, not in recovery) data and WAL volumes"
    );

    // Every spec's single query parses and runs; the ones fed above map.
    for s in specs() {
        let series = client
            .query_spec(&s, now())
            .await
            .unwrap_or_else(|e| panic!("{}: prometheus rejected the query: {e:?}", s.file));
        match s.kind.as_str() {
            "Application" => {
                let app = ComponentId {
                    kind: "Application".into(),
                    namespace: "argocd".into(),
                    name: "payments-api".into(),
                };
                assert_eq!(
                    of(&series, &app, "degraded").expect("degraded").samples[0].1,
                    1.0
                );
                assert_eq!(
                    of(&series, &app, "out_of_sync")
                        .expect("out_of_sync")
                        .samples[0]
                        .1,
                    0.0
                );
            }
            "Certificate" => assert!(
                series
                    .iter()
                    .any(|x| x.component.name == "api-tls" && x.signal == "ready")
            ),
            "Deployment" => {
                let d = series
                    .iter()
                    .find(|x| x.signal == "unavailable_ratio")
                    .expect("unavailable_ratio");
                assert_eq!((d.component.name.as_str(), d.samples[0].1), ("api", 0.75));
            }
            _ => {}
        }
    }
}

/// A series' value at sample `i` given noise in [-1, 1).
type Shape<'a> = dyn Fn(usize, f64) -> f64 + 'a;

/// Three days at one-minute resolution for two CNPG clusters: `ledger` gets a
/// replication-lag spike, a lost replica and a volume filling up; `orders`
/// stays clean and its WAL-failure counter resets once.
fn backfill(end: i64) -> (String, i64, i64) {
    let n = 3 * 1440;
    let start = end - (n as i64 - 1) * 60;
    let spike = start + (2 * 1440 + 720) * 60;
    let replica_loss = start + (2 * 1440 + 1000) * 60;
    let mut noise = Noise(42);
    let mut out = String::new();
    let mut family = |name: &str, series: &[(&str, &Shape<'_>)]| {
        out.push_str(&format!("# TYPE {name} gauge\n"));
        for (labels, f) in series {
            for i in 0..n {
                let t = start + i as i64 * 60;
                out.push_str(&format!("{name}{{{labels}}} {} {t}\n", f(i, noise.next())));
            }
        }
    };
    let spike_i = (2 * 1440 + 720) as usize;
    let loss_i = (2 * 1440 + 1000) as usize;
    family(
        "cnpg_pg_replication_lag",
        &[
            ("namespace=\"payments\",pod=\"ledger-1\"", &|i, e| {
                if i == spike_i { 30.0 } else { 0.5 + 0.05 * e }
            }),
            ("namespace=\"payments\",pod=\"orders-1\"", &|_, e| {
                0.5 + 0.05 * e
            }),
        ],
    );
    family(
        "cnpg_pg_replication_streaming_replicas",
        &[
            ("namespace=\"payments\",pod=\"ledger-1\"", &|i, _| {
                if (loss_i..loss_i + 30).contains(&i) {
                    1.0
                } else {
                    2.0
                }
            }),
            ("namespace=\"payments\",pod=\"orders-1\"", &|_, _| 2.0),
        ],
    );
    // ledger crosses 90% one day after the end; orders sits at 50%.
    let cap = 100.0 * 1024.0 * 1024.0 * 1024.0;
    family(
        "kubelet_volume_stats_used_bytes",
        &[
            (
                "namespace=\"payments\",persistentvolumeclaim=\"ledger-1\"",
                &|i, e| cap * (0.5 + 0.4 * i as f64 / (n + 1440) as f64 + 0.002 * e),
            ),
            (
                "namespace=\"payments\",persistentvolumeclaim=\"orders-1\"",
                &|_, e| cap * (0.5 + 0.002 * e),
            ),
        ],
    );
    family(
        "kubelet_volume_stats_capacity_bytes",
        &[
            (
                "namespace=\"payments\",persistentvolumeclaim=\"ledger-1\"",
                &|_, _| cap,
            ),
            (
                "namespace=\"payments\",persistentvolumeclaim=\"orders-1\"",
                &|_, _| cap,
            ),
        ],
    );
    // Kafka node pools: `brokers` gets 12 more partitions at the change
    // point, `controllers` never changes.
    let change_i = 2 * 1440 + 300;
    family(
        "kafka_server_replicamanager_partitioncount",
        &[
            (
                "namespace=\"payments\",strimzi_io_pool_name=\"brokers\"",
                &|i, _| if i < change_i { 120.0 } else { 132.0 },
            ),
            (
                "namespace=\"payments\",strimzi_io_pool_name=\"controllers\"",
                &|_, _| 120.0,
            ),
        ],
    );
    // One failure a minute; the exporter restarts at day 2 and counts from 0.
    family(
        "cnpg_pg_stat_archiver_failed_count",
        &[("namespace=\"payments\",pod=\"orders-1\"", &|i, _| {
            if i < 2 * 1440 {
                i as f64
            } else {
                (i - 2 * 1440 + 1) as f64
            }
        })],
    );
    out.push_str("# EOF\n");
    (out, spike, replica_loss)
}

#[tokio::test]
async fn backfilled_history_warms_the_detectors_and_they_fire_only_on_the_injected_anomalies() {
    init();
    let end = now() / 60 * 60 - 600;
    let (text, spike, replica_loss) = backfill(end);
    let prom = Prometheus::start(&Options {
        targets: vec![],
        backfill: Some(text),
    })
    .expect("prometheus with backfilled history");
    let client = Client::new(prom.url(), Duration::from_secs(20)).expect("client");
    let cnpg = spec("Cluster");
    // From ten minutes in, so every rate() window holds five samples.
    let history = client
        .query_history(&cnpg, end - 3 * 86_400 + 600, end, 60.0)
        .await
        .expect("range query");
    let ledger = cluster("ledger");
    let orders = cluster("orders");
    assert!(
        of(&history, &ledger, "replication_lag").is_some_and(|s| s.samples.len() > 4000),
        "{} series",
        history.len()
    );

    // Counter reset: rate() in the spec sees about 1/60 failures per second
    // throughout; no negative rate and no spike where the counter restarted
    // (extrapolation at window edges moves it by at most one sample).
    let wal = of(&history, &orders, "wal_archive_failures").expect("wal series");
    let off: Vec<_> = wal
        .samples
        .iter()
        .filter(|(_, v)| !(0.5 / 60.0..=1.5 / 60.0).contains(v))
        .collect();
    assert!(off.is_empty(), "rates off around the reset: {off:?}");

    let pools = spec("KafkaNodePool");
    let pool_history = client
        .query_history(&pools, end - 3 * 86_400 + 600, end, 60.0)
        .await
        .expect("range query");
    let mut estate = Estate::new(vec![cnpg, pools]);
    let pool_findings = estate.score_history(&pool_history);
    let pool = |name: &str| ComponentId {
        kind: "KafkaNodePool".into(),
        namespace: "payments".into(),
        name: name.into(),
    };
    let change = end - (3 * 1440 - 1 - (2 * 1440 + 300)) * 60;
    assert_eq!(
        pool_findings
            .iter()
            .map(|f| (
                f.component.clone(),
                f.signal.as_str(),
                f.detector.as_str(),
                f.at
            ))
            .collect::<Vec<_>>(),
        vec![(pool("brokers"), "partitions", "cusum", change)],
        "CUSUM reports the change point once, on its first sample, and nothing on the steady pool"
    );
    let findings = estate.score_history(&history);
    let on = |c: &ComponentId, signal: &str| {
        findings
            .iter()
            .filter(|f| &f.component == c && f.signal == signal)
            .collect::<Vec<_>>()
    };

    assert!(
        findings.iter().all(|f| f.component == ledger),
        "clean cluster produced {:?}",
        findings.iter().find(|f| f.component == orders)
    );
    let lag = on(&ledger, "replication_lag");
    assert_eq!(
        lag.first().map(|f| f.at),
        Some(spike),
        "EWMA fires on the spike sample itself"
    );
    assert!(
        lag.iter()
            .all(|f| f.at - spike <= 300 && f.detector == "ewma"),
        "{lag:?}"
    );
    let replicas = on(&ledger, "streaming_replicas");
    assert_eq!(
        replicas.first().map(|f| f.at),
        Some(replica_loss),
        "MAD fires on the first sample with a replica missing"
    );
    let fill = on(&ledger, "volume_fill");
    let last = fill.last().expect("forecast of the volume filling up");
    let truth = (end + 1440 * 60 - last.at) as f64; // crosses 90% one day after the end
    let ttt = last.time_to_threshold_seconds.expect("time to threshold");
    assert!(
        (ttt - truth).abs() / truth < 0.25,
        "forecast {ttt}s vs truth {truth}s"
    );
    assert!(
        fill.first().is_some_and(|f| f.at > end - 2 * 86_400),
        "forecast fired too early: {:?}",
        fill.first()
    );
}

#[tokio::test]
async fn live_samples_are_scored_and_nan_stale_or_no_prometheus_mean_no_data() {
    init();
    // Two hours of history for the live cluster, ending a minute ago, under
    // the labels scraping will give the same series (job and instance).
    let exporter = Exporter::start().expect("exporter");
    let end = now() - 60;
    let mut noise = Noise(7);
    let mut text = String::from("# TYPE cnpg_pg_replication_lag gauge\n");
    for i in 0..480 {
        let t = end - (479 - i) * 15;
        text.push_str(&format!(
            "cnpg_pg_replication_lag{{namespace=\"payments\",pod=\"live-0\",job=\"test\",instance=\"{}\"}} {} {t}\n",
            exporter.addr(),
            0.5 + 0.05 * noise.next()
        ));
    }
    text.push_str("# EOF\n");
    let series_line =
        |v: &str| format!("cnpg_pg_replication_lag{{namespace=\"payments\",pod=\"live-0\"}} {v}\n");
    exporter.set(series_line("0.52"));
    let mut prom = Prometheus::start(&Options {
        targets: vec![exporter.addr().to_string()],
        backfill: Some(text),
    })
    .expect("prometheus");
    let client = Client::new(prom.url(), Duration::from_secs(5)).expect("client");
    let cnpg = spec("Cluster");
    let live = cluster("live");
    let ghost = cluster("ghost"); // exists in the API, exports nothing
    let components = [live.clone(), ghost.clone()];

    let mut estate = Estate::new(vec![cnpg.clone()]);
    let history = client
        .query_history(&cnpg, end - 7200, end, 15.0)
        .await
        .expect("history");
    assert!(estate.score_history(&history).is_empty());

    let value_is = |want: f64| {
        move |r: &Result<Vec<SeriesSamples>, _>| {
            r.as_ref().is_ok_and(|v: &Vec<SeriesSamples>| {
                of(v, &cluster("live"), "replication_lag").is_some_and(|s| {
                    let x = s.samples[0].1;
                    x == want || (want.is_nan() && x.is_nan())
                })
            })
        }
    };
    let cycle = |estate: &mut Estate, series: &[SeriesSamples]| {
        estate.score_cycle(
            CycleInput::Observed {
                components: Some(&components),
                series,
            },
            now(),
        )
    };

    // Normal live sample: scored, quiet; the ghost is unobserved.
    let normal = wait_for(
        "the live sample",
        || client.query_spec(&cnpg, now()),
        value_is(0.52),
    )
    .await
    .expect("query");
    let report = cycle(&mut estate, &normal);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.unobserved, vec![ghost.clone()]);
    assert!(
        !report
            .warming_up
            .iter()
            .any(|(c, s)| c == &live && s == "replication_lag"),
        "history warmed the detector"
    );

    // The exporter reports a 30 s lag: the next cycle that sees it fires.
    exporter.set(series_line("30"));
    let spike = wait_for(
        "the anomalous sample",
        || client.query_spec(&cnpg, now()),
        value_is(30.0),
    )
    .await
    .expect("query");
    let report = cycle(&mut estate, &spike);
    let f = report
        .findings
        .iter()
        .find(|f| f.component == live && f.signal == "replication_lag")
        .unwrap_or_else(|| panic!("no finding on the spike: {report:?}"));
    assert_eq!((f.detector.as_str(), f.value), ("ewma", 30.0));
    assert!(f.score > 0.5 && f.score <= 1.0);
    assert!(
        f.explanation.contains("replication_lag 30"),
        "{}",
        f.explanation
    );

    // NaN is reported as such, not scored.
    exporter.set(series_line("NaN"));
    let nan = wait_for(
        "the NaN sample",
        || client.query_spec(&cnpg, now()),
        value_is(f64::NAN),
    )
    .await
    .expect("query");
    let report = cycle(&mut estate, &nan);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert!(
        report
            .no_data
            .contains(&(live.clone(), "replication_lag".into(), NoData::NotFinite)),
        "{:?}",
        report.no_data
    );

    // The series disappears (Prometheus marks it stale): unobserved, no finding.
    exporter.set("");
    let gone = wait_for(
        "the series to go stale",
        || client.query_spec(&cnpg, now()),
        |r| r.as_ref().is_ok_and(|v| v.is_empty()),
    )
    .await
    .expect("query");
    let report = cycle(&mut estate, &gone);
    assert!(report.findings.is_empty());
    assert_eq!(report.unobserved, vec![ghost.clone(), live.clone()]);

    // Prometheus down: the query fails, the cycle is "no data" and finds nothing.
    prom.kill();
    let err = client
        .query_spec(&cnpg, now())
        .await
        .expect_err("prometheus is down");
    let report = estate.score_cycle(
        CycleInput::Unavailable {
            reason: err.to_string(),
        },
        now(),
    );
    assert!(report.prometheus_unavailable.is_some());
    assert!(report.findings.is_empty() && report.no_data.is_empty());
}

#[tokio::test]
async fn seasonal_baseline_from_backfilled_days_flags_daytime_traffic_at_night() {
    init();
    // Five days of a request counter at one-minute resolution, starting at a
    // UTC midnight: traffic follows the day. On day 4 from 03:00 to 04:00
    // the `api` gateway gets daytime traffic; `web` never does.
    let start = (now() / 86_400 - 6) * 86_400;
    let n = 5 * 1440;
    let anomaly = 4 * 1440 + 180;
    let mut noise = Noise(11);
    let mut text = String::from("# TYPE payments_gateway_requests_total gauge\n");
    for gateway in ["api", "web"] {
        let mut total = 0.0;
        for i in 0..n {
            let hour = (i % 1440) as f64 / 60.0;
            let mut rate = 100.0 + 80.0 * (2.0 * std::f64::consts::PI * (hour - 9.0) / 24.0).sin();
            if gateway == "api" && (anomaly..anomaly + 60).contains(&i) {
                rate = 160.0;
            }
            total += (rate + 3.0 * noise.next()) * 60.0;
            text.push_str(&format!(
                "payments_gateway_requests_total{{namespace=\"payments\",gateway=\"{gateway}\",code=\"200\"}} {total} {}\n",
                start + i as i64 * 60
            ));
        }
    }
    text.push_str("# EOF\n");
    let prom = Prometheus::start(&Options {
        targets: vec![],
        backfill: Some(text),
    })
    .expect("prometheus with backfilled history");
    let client = Client::new(prom.url(), Duration::from_secs(20)).expect("client");
    let gateways = spec("PaymentGateway");
    let history = client
        .query_history(&gateways, start + 600, start + (n as i64 - 1) * 60, 60.0)
        .await
        .expect("range query");
    let mut estate = Estate::new(vec![gateways]);
    let findings: Vec<_> = estate
        .score_history(&history)
        .into_iter()
        .filter(|f| f.signal == "request_rate")
        .collect();
    let at = start + anomaly as i64 * 60;
    assert!(
        findings.iter().all(|f| f.component.name == "api"),
        "{:?}",
        findings.iter().find(|f| f.component.name != "api")
    );
    let first = findings
        .first()
        .expect("a seasonal finding on the night-time surge");
    assert_eq!(first.detector, "seasonal");
    // rate() over 5 minutes sees the surge from its first sample on.
    assert!(
        (at..=at + 120).contains(&first.at),
        "first finding {}s after the surge",
        first.at - at
    );
    assert!(
        findings.iter().all(|f| f.at >= at && f.at <= at + 65 * 60),
        "{:?}",
        findings.last()
    );
    assert!(
        first
            .explanation
            .contains("at this time of the 86400s period"),
        "{}",
        first.explanation
    );
}
