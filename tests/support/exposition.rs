//! The exposition a real cluster would give Prometheus for a small estate:
//! for every model kind a few named components, every series the model
//! specs read, under the upstream metric names (`../shared/metrics`) with
//! the labels the exporter sets plus those its ServiceMonitor/PodMonitor
//! scrape adds (`namespace`, `pod`, `service`, `job`, `instance`,
//! `container`, `endpoint`, and `exported_*` where the exporter sets one of
//! them itself and the scrape does not honour labels).
//!
//! It only builds text; it never starts Prometheus and never reads a spec
//! (the series come from the exporters, so a spec cannot bend them to fit).
//! The payments kinds serve exactly the contract in docs/payments-metrics.md.
#![allow(dead_code)] // included by tests/exposition.rs only

use std::fmt::Write;

/// How the operator's (ServiceMonitor) scrape treats labels the exporter
/// sets itself: charts for cert-manager, External Secrets and Argo CD
/// default to `honorLabels: false` and let users turn it on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scrape {
    /// `honorLabels: false`: the exporter's `namespace` becomes `exported_namespace`.
    Renamed,
    /// `honorLabels: true`: the exporter's labels win.
    Honored,
}

/// A component of the estate, as the Kubernetes API would list it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Component {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// The estate (kind, namespace, name): hyphenated namespaces and names on
/// purpose (they break naive regexes), and components outside the
/// operators' own namespaces. ServiceMonitors are not listed: every
/// ServiceMonitor-scraped target of the exposition brings its own (see
/// [`Exposition::components`]).
pub const ESTATE: &[(&str, &str, &str)] = &[
    ("Application", "argocd", "billing"),
    ("Application", "team-apps", "ledger-ui"),
    ("Namespace", "payments-bus", "orders-sb"),
    ("Namespace", "team-a", "events"),
    ("Certificate", "cert-manager", "webhook-tls"),
    ("Certificate", "payments-edge", "api-tls"),
    ("Cluster", "payments", "ledger-db"),
    ("Cluster", "team-a", "orders"),
    ("ExternalSecret", "payments-edge", "db-creds"),
    ("ExternalSecret", "team-a", "api-key"),
    ("VirtualService", "payments-edge", "checkout"),
    ("VirtualService", "team-a", "search-api"),
    ("Jaeger", "observability", "tracing-prod"),
    ("Jaeger", "team-a", "simplest"),
    ("Deployment", "payments", "ledger-api"),
    ("Deployment", "team-a", "web"),
    ("HorizontalPodAutoscaler", "payments", "ledger-api"),
    ("HorizontalPodAutoscaler", "team-a", "web"),
    ("BatchProcessor", "payments", "nightly-settle"),
    ("ClearingAdapter", "payments", "sepa-instant"),
    ("PaymentGateway", "payments", "card-gw"),
    ("PaymentGateway", "payments-eu", "eu-gw"),
    ("SagaOrchestrator", "payments", "refund-saga"),
    ("PrometheusRule", "monitoring", "kube-alerts"),
    ("PrometheusRule", "team-a", "slo-rules"),
    ("RedisEnterpriseDatabase", "redis", "sessions"),
    ("RedisEnterpriseDatabase", "redis", "rate-limits"),
    ("Kafka", "kafka", "events"),
    ("Kafka", "team-a", "audit-log"),
    ("KafkaNodePool", "kafka", "brokers"),
    ("KafkaNodePool", "team-a", "audit-pool"),
];

/// Copies of [`ESTATE`] the exposition is built for (set once, by
/// [`scale`]; 1 unless set).
static COPIES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Builds every exposition of this process for `copies` copies of
/// [`ESTATE`] (copy 0 is [`ESTATE`] itself, copy `c` names its components
/// `<name>-<c>`), for the cycle bench's large estate. Call it before the
/// first exposition is built; later calls change nothing.
pub fn scale(copies: usize) {
    let _ = COPIES.set(copies.max(1));
}

/// [`ESTATE`] times the copies set by [`scale`], copy by copy.
fn estate() -> &'static [(&'static str, &'static str, &'static str)] {
    static SCALED: std::sync::OnceLock<Vec<(&'static str, &'static str, &'static str)>> =
        std::sync::OnceLock::new();
    SCALED.get_or_init(|| {
        let copies = *COPIES.get_or_init(|| 1);
        let mut out = ESTATE.to_vec();
        for c in 1..copies {
            for &(kind, ns, name) in ESTATE {
                // Built once per process: leaking them is the cheapest way
                // to keep `of_kind`'s `&'static str`.
                let name: &'static str = String::leak(format!("{name}-{c}"));
                out.push((kind, ns, name));
            }
        }
        out
    })
}

/// (namespace, name) of the estate's components of `kind`.
pub fn of_kind(kind: &str) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    estate()
        .iter()
        .filter(move |(k, _, _)| *k == kind)
        .map(|(_, ns, n)| (*ns, *n))
}

/// What [`build_exposition`] returns.
pub struct Exposition {
    /// OpenMetrics text for promtool, ending in `# EOF`.
    pub text: String,
    /// Every component that exists: [`ESTATE`] plus one ServiceMonitor per
    /// scraped Service.
    pub components: Vec<Component>,
    /// The series, to render them again ([`Exposition::scrape_text`]).
    out: Out,
    /// The time `text` starts at (counters are 0 there).
    start: i64,
}

/// The Service Bus message counts each namespace reports under the
/// `average` aggregation; the exporter also serves `total` (5 times as
/// much), so a query that sums over aggregations reads a wrong value.
pub const ACTIVE_MESSAGES: f64 = 7.0;

/// One series: name, the labels after scraping, counter or gauge, and its
/// value at `t` seconds after the start.
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    counter_rate: Option<f64>,
    value: f64,
}

/// The series built so far, and the label set of every scrape target
/// they came from (for Prometheus' own per-target series).
#[derive(Default)]
struct Out {
    series: Vec<Series>,
    targets: Vec<Vec<(String, String)>>,
}

impl Out {
    fn gauge(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.push(name, labels, None, value);
    }
    /// A counter growing by `rate` per second.
    fn counter(&mut self, name: &str, labels: &[(&str, &str)], rate: f64) {
        self.push(name, labels, Some(rate), 0.0);
    }
    fn push(&mut self, name: &str, labels: &[(&str, &str)], rate: Option<f64>, value: f64) {
        self.series.push(Series {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            counter_rate: rate,
            value,
        });
    }
    /// A histogram's `_bucket` series (cumulative rates per `le`) plus
    /// `_sum` and `_count`.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], rate: f64) {
        for (le, share) in [("0.05", 0.5), ("0.25", 0.9), ("1", 0.99), ("+Inf", 1.0)] {
            let mut l = labels.to_vec();
            l.push(("le", le));
            self.counter(&format!("{name}_bucket"), &l, rate * share);
        }
        self.counter(&format!("{name}_sum"), labels, rate * 0.08);
        self.counter(&format!("{name}_count"), labels, rate);
    }
}

/// Labels a Prometheus Operator ServiceMonitor/PodMonitor scrape attaches
/// to a target, then the exporter's own labels merged under `scrape`:
/// a clash is renamed `exported_<label>` unless labels are honoured.
fn scraped<'a>(
    target: &[(&'a str, &'a str)],
    own: &[(&'a str, &'a str)],
    scrape: Scrape,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = target
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in own {
        match out.iter().position(|(t, _)| t == k) {
            Some(i) if scrape == Scrape::Honored => out[i].1 = v.to_string(),
            Some(_) => out.push((format!("exported_{k}"), v.to_string())),
            None => out.push((k.to_string(), v.to_string())),
        }
    }
    out
}

/// The target labels of a pod `pod` in `namespace` behind `service`.
fn target<'a>(
    namespace: &'a str,
    pod: &'a str,
    service: &'a str,
    job: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("namespace", namespace),
        ("pod", pod),
        ("service", service),
        ("job", job),
        ("instance", "10.0.0.1:9402"),
        ("container", "main"),
        ("endpoint", "metrics"),
    ]
}

impl Out {
    fn scraped_gauge(&mut self, name: &str, labels: Vec<(String, String)>, value: f64) {
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.gauge(name, &l, value);
    }
    fn scraped_counter(&mut self, name: &str, labels: Vec<(String, String)>, rate: f64) {
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.counter(name, &l, rate);
    }
}

/// Builds the whole exposition as OpenMetrics text for promtool: samples
/// every `step` seconds from `start` to `end` (inclusive), ending in `# EOF`.
pub fn build_exposition(scrape: Scrape, start: i64, end: i64, step: i64) -> Exposition {
    let mut out = Out::default();
    crate::exposition_estate::series(&mut Builder(&mut out), scrape);
    let mut components: Vec<Component> = estate()
        .iter()
        .map(|(kind, namespace, name)| Component {
            kind: kind.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
        .collect();
    // Prometheus adds `up` and `scrape_duration_seconds` to every target,
    // with the target's labels only.
    let mut targets = std::mem::take(&mut out.targets);
    targets.sort();
    targets.dedup();
    for t in &targets {
        let l: Vec<(&str, &str)> = t.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        out.gauge("up", &l, 1.0);
        out.gauge("scrape_duration_seconds", &l, 0.02);
        let get = |k: &str| t.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let (Some(namespace), Some(name)) = (get("namespace"), get("service")) {
            components.push(Component {
                kind: "ServiceMonitor".into(),
                namespace,
                name,
            });
        }
    }
    components.sort();
    components.dedup();
    Exposition {
        text: render(&out, start, end, step),
        components,
        out,
        start,
    }
}

impl Exposition {
    /// Series in the exposition (Prometheus' own per-target series
    /// included).
    pub fn series(&self) -> usize {
        self.out.series.len()
    }

    /// The same series as a test exporter serves them at `at` (Prometheus
    /// text format, no timestamps; counters continue from the history),
    /// without `drop` labels (`job`, `instance`: the scraping Prometheus
    /// sets its own).
    pub fn scrape_text(&self, at: i64, drop: &[&str]) -> String {
        let mut text = String::new();
        for (name, counter, series) in families(&self.out) {
            let _ = writeln!(
                text,
                "# TYPE {name} {}",
                if counter { "counter" } else { "gauge" }
            );
            for s in series {
                let labels = s
                    .labels
                    .iter()
                    .filter(|(k, _)| !drop.contains(&k.as_str()))
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(",");
                let _ = writeln!(text, "{name}{{{labels}}} {}", s.value_at(self.start, at));
            }
        }
        text
    }

    /// Renames each label of `renamed` to `exported_<label>` and adds
    /// `added`: the series as a Prometheus that scrapes [`scrape_text`]
    /// (without those labels) with the target labels `added` stores them,
    /// so history written with [`Exposition::history`] and live samples are
    /// the same series.
    pub fn relabel(&mut self, renamed: &[&str], added: &[(&str, &str)]) {
        for s in &mut self.out.series {
            for (k, _) in &mut s.labels {
                if renamed.contains(&k.as_str()) {
                    *k = format!("exported_{k}");
                }
            }
            s.labels
                .extend(added.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        }
    }

    /// Sets the value of every gauge `name` for which `value_of` of its
    /// labels is `Some` (a surge on some components); returns how many.
    pub fn set_gauge(
        &mut self,
        name: &str,
        value_of: impl Fn(&[(String, String)]) -> Option<f64>,
    ) -> usize {
        let mut n = 0;
        for s in &mut self.out.series {
            if s.name == name && s.counter_rate.is_none() {
                if let Some(v) = value_of(&s.labels) {
                    s.value = v;
                    n += 1;
                }
            }
        }
        n
    }

    /// OpenMetrics text for promtool of the series as they are now (after
    /// [`Exposition::relabel`]), every `step` seconds from `start` to `end`.
    pub fn history(&self, start: i64, end: i64, step: i64) -> String {
        let mut text = render(&self.out, start, end, step);
        text.shrink_to_fit();
        text
    }
}

/// The series by metric name (in name order): name, whether a counter,
/// its series.
fn families(out: &Out) -> Vec<(&str, bool, Vec<&Series>)> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&Series>> = Default::default();
    for s in &out.series {
        by_name.entry(s.name.as_str()).or_default().push(s);
    }
    by_name
        .into_iter()
        .map(|(name, series)| {
            let counter = series.iter().any(|s| s.counter_rate.is_some());
            (name, counter, series)
        })
        .collect()
}

impl Series {
    /// The value at `t`, the history starting at `start`.
    fn value_at(&self, start: i64, t: i64) -> f64 {
        match self.counter_rate {
            Some(r) => r * (t - start) as f64,
            None => self.value,
        }
    }
}

fn render(out: &Out, start: i64, end: i64, step: i64) -> String {
    let mut text = String::new();
    for (name, counter, series) in families(out) {
        let _ = writeln!(
            text,
            "# TYPE {name} {}",
            if counter { "counter" } else { "gauge" }
        );
        for s in series {
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(",");
            let mut t = start;
            while t <= end {
                let v = s.value_at(start, t);
                let _ = writeln!(text, "{name}{{{labels}}} {v} {t}");
                t += step;
            }
        }
    }
    text.push_str("# EOF\n");
    text
}

/// The builder the per-exporter modules write into.
pub struct Builder<'a>(&'a mut Out);

impl Builder<'_> {
    /// A series scraped from `target` with the exporter's `own` labels.
    pub fn gauge(
        &mut self,
        name: &str,
        target: &[(&str, &str)],
        own: &[(&str, &str)],
        scrape: Scrape,
        value: f64,
    ) {
        self.record(target);
        self.0
            .scraped_gauge(name, scraped(target, own, scrape), value);
    }
    /// A counter scraped from `target`, growing by `rate` per second.
    pub fn counter(
        &mut self,
        name: &str,
        target: &[(&str, &str)],
        own: &[(&str, &str)],
        scrape: Scrape,
        rate: f64,
    ) {
        self.record(target);
        self.0
            .scraped_counter(name, scraped(target, own, scrape), rate);
    }
    /// A histogram scraped from `target`.
    pub fn histogram(
        &mut self,
        name: &str,
        target: &[(&str, &str)],
        own: &[(&str, &str)],
        scrape: Scrape,
        rate: f64,
    ) {
        self.record(target);
        let labels = scraped(target, own, scrape);
        let l: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.0.histogram(name, &l, rate);
    }
    fn record(&mut self, target: &[(&str, &str)]) {
        self.0.targets.push(
            target
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    /// Target labels of a pod scraped by a PodMonitor (no Service).
    pub fn pod_target<'b>(
        namespace: &'b str,
        pod: &'b str,
        job: &'b str,
    ) -> Vec<(&'b str, &'b str)> {
        let mut t = target(namespace, pod, "", job);
        t.retain(|(k, _)| *k != "service");
        t
    }
    /// Target labels of a pod behind a Service scraped by a ServiceMonitor.
    pub fn target<'b>(
        namespace: &'b str,
        pod: &'b str,
        service: &'b str,
        job: &'b str,
    ) -> Vec<(&'b str, &'b str)> {
        target(namespace, pod, service, job)
    }
}
