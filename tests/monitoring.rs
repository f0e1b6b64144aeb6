//! The agent's own dashboard and alerts (deploy/monitoring/): the alert
//! rules pass `promtool check rules` and their unit tests (`promtool test
//! rules`, tests/fixtures/monitoring/), every dashboard query parses as
//! PromQL (checked by promtool as a recording rule), and every metric the
//! dashboard and the alerts name is one the agent registers
//! (`autopilot::agent::metric_names`). The chart ships both as they are.
//! Pure: promtool (Debian's prometheus package) and helm, no cluster.

#[path = "support/chart.rs"]
mod chart;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("run promtool (scripts/install-deps installs Debian's prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn dashboard() -> Value {
    let text =
        std::fs::read_to_string(repo("deploy/monitoring/dashboard.json")).expect("dashboard");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_queries(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in d["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            out.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    out
}

fn alert_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repo("deploy/monitoring/alerts.yaml")).expect("alerts");
    let rules: Value = serde_yaml::from_str(&text).expect("YAML");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .map(|r| r["expr"].as_str().expect("expr").to_string())
        .collect()
}

/// PromQL keywords that stand where a metric name could.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// The metric names in `expr`: identifiers outside strings, label
/// matchers, ranges and groupings that are neither functions nor
/// aggregations (followed by `(`) nor keywords.
fn metric_names_in(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut last_word = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '{' || c == '[' {
            let close = if c == '{' { '}' } else { ']' };
            while i < chars.len() && chars[i] != close {
                i += 1;
            }
            i += 1;
        } else if c == '('
            && matches!(
                last_word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            )
        {
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            i += 1;
            last_word.clear();
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`5m`, `1.5e3`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            last_word.clear();
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            let rest: String = chars[j..].iter().collect();
            // A function or an aggregation, its grouping first or after.
            let call = rest.starts_with('(')
                || rest.starts_with("by ")
                || rest.starts_with("by(")
                || rest.starts_with("without");
            if !call && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word.clone());
            }
            last_word = word;
        } else {
            if !c.is_whitespace() {
                last_word.clear();
            }
            i += 1;
        }
    }
    names
}

/// `name`, or the histogram it is a series of (`_bucket`, `_sum`,
/// `_count`), is registered.
fn registered(name: &str, registry: &BTreeSet<String>) -> bool {
    registry.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| registry.contains(base))
        })
}

#[test]
fn the_metric_name_reader_finds_metrics_and_skips_the_rest() {
    assert_eq!(
        metric_names_in(
            r#"histogram_quantile(0.95, sum by (le, kind) (rate(a_bucket{x="y z", k=~"(b|c)"}[5m]))) > 0 unless on (kind) b offset 5m"#
        ),
        BTreeSet::from(["a_bucket".to_string(), "b".to_string()])
    );
    let registry = BTreeSet::from(["a".to_string()]);
    assert!(registered("a_bucket", &registry) && registered("a", &registry));
    assert!(!registered("b", &registry));
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let out = promtool(&[
        "check",
        "rules",
        repo("deploy/monitoring/alerts.yaml")
            .to_str()
            .expect("path"),
    ]);
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
    let out = promtool(&[
        "test",
        "rules",
        repo("tests/fixtures/monitoring/alerts.test.yaml")
            .to_str()
            .expect("path"),
    ]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_dashboard_query_parses_as_promql() {
    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 15, "{queries:?}");
    // Each query as a recording rule: promtool parses every expression.
    let rules = serde_json::json!({"groups": [{
        "name": "dashboard",
        "rules": queries.iter().enumerate().map(|(i, q)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": q})).collect::<Vec<_>>(),
    }]});
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, serde_yaml::to_string(&rules).expect("YAML")).expect("write");
    let out = promtool(&["check", "rules", file.to_str().expect("path")]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
    // And promtool does refuse a broken one.
    std::fs::write(
        &file,
        "groups: [{name: x, rules: [{record: 'x:y', expr: 'sum(rate(a[5m])'}]}]",
    )
    .expect("write");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool");
    assert!(
        !out.status.success(),
        "promtool accepted a broken expression"
    );
}

#[test]
fn the_dashboard_and_the_alerts_name_only_metrics_the_agent_registers() {
    let registry = autopilot::agent::metric_names().expect("register the metrics");
    assert!(
        registry.contains("autopilot_cycles_total")
            && registry.contains("autopilot_act_verifications_total"),
        "{registry:?}"
    );
    let mut used = BTreeSet::new();
    for q in dashboard_queries(&dashboard())
        .iter()
        .chain(alert_queries().iter())
    {
        let names = metric_names_in(q);
        assert!(!names.is_empty(), "no metric in {q}");
        for name in names {
            assert!(
                registered(&name, &registry),
                "{name} (in `{q}`) is not a metric the agent registers: {registry:?}"
            );
            used.insert(name);
        }
    }
    // The alerts cover what the issue asks for.
    for name in [
        "autopilot_cycles_total",
        "autopilot_runbook_rejected",
        "autopilot_kill_switch",
        "autopilot_act_verifications_total",
        "autopilot_leader",
    ] {
        assert!(used.contains(name), "{name} is not used");
    }
}

#[test]
fn the_chart_ships_the_dashboard_for_the_grafana_sidecar_and_the_rules_as_a_prometheus_rule() {
    let docs = chart::render("autopilot", "autopilot", &[]);
    let maps: Vec<Value> = chart::of_kinds(&docs, &["ConfigMap"])
        .into_iter()
        .filter(|m| m["metadata"]["labels"]["grafana_dashboard"] == "1")
        .collect();
    assert_eq!(maps.len(), 1, "{maps:?}");
    let shipped: Value = serde_json::from_str(
        maps[0]["data"]["autopilot.json"]
            .as_str()
            .expect("the dashboard"),
    )
    .expect("JSON");
    assert_eq!(shipped, dashboard());
    assert!(
        chart::of_kinds(&docs, &["PrometheusRule"]).is_empty(),
        "off by default: it needs prometheus-operator's CRD"
    );

    let docs = chart::render(
        "autopilot",
        "autopilot",
        &[
            ("monitoring.prometheusRule.enabled", "true"),
            (
                "monitoring.prometheusRule.labels.release",
                "kube-prometheus-stack",
            ),
            ("monitoring.dashboard.enabled", "false"),
        ],
    );
    let rules = chart::of_kinds(&docs, &["PrometheusRule"]);
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let file: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo("deploy/monitoring/alerts.yaml")).expect("alerts"),
    )
    .expect("YAML");
    assert_eq!(rules[0]["spec"], file);
    assert!(
        chart::of_kinds(&docs, &["ConfigMap"])
            .iter()
            .all(|m| m["metadata"]["labels"]["grafana_dashboard"].is_null())
    );
}
