//! The review page in a real browser: actions journaled in a real SQLite
//! journal (as the executor records them: intent, dry run, outcome,
//! approval, verification), the page served by `autopilot::review`, loaded
//! by headless Chromium (Debian's package, `scripts/install-deps`), which
//! dumps the DOM it built and takes a screenshot; then axe-core
//! (`tests/browser/axe.sh`, from npm) checks each page for accessibility
//! violations inside the same browser.
//!
//! `AUTOPILOT_CHROMIUM` names the browser (default `chromium`),
//! `AUTOPILOT_AXE` the axe.min.js that `tests/browser/axe.sh` installed
//! (default: run that script).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use autopilot::{
    act::journal::{Journal, NewEntry, new_uid, outcome},
    review::{self, Review},
    store::SqlJournal,
};
use axum::{
    Router,
    body::Body,
    extract::{Path as UrlPath, RawQuery, State},
    http::Request,
    response::{Html, IntoResponse},
    routing::get,
};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The actions on the page: an applied, approved and verified scale (1),
/// a pending recommendation (2), and a refusal by a guard (3).
async fn journal_actions(journal: &SqlJournal) {
    let finding = |at: i64| {
        json!([{
            "component": {"kind": "PaymentGateway", "namespace": "payments", "name": "checkout"},
            "signal": "latency_p99", "detector": "ewma", "score": 0.97, "at": at,
            "value": 0.82, "baseline": 0.11,
            "explanation": "p99 latency 0.82 s against an EWMA baseline of 0.11 s"
        }])
    };
    let entry = |at: i64, mode: &str, verdict: &str, replicas: i64| NewEntry {
        uid: new_uid(),
        at,
        runbook: "gateway-latency".into(),
        runbook_hash: "9f2c4e1d0b7a65f3c8e2d1a0b9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0".into(),
        runbook_editor: Some("alice@example.com".into()),
        trigger: "finding".into(),
        evidence: finding(at - 30),
        action: json!({"scale_replicas": {"replicas": replicas}, "reason": "p99 latency over SLO"}),
        action_kind: "scale_replicas".into(),
        target: "PaymentGateway/payments/checkout".into(),
        namespace: "payments".into(),
        patch: Some(
            json!({"apiVersion": "payments.io/v1", "kind": "PaymentGateway", "spec": {"replicas": replicas}}),
        ),
        inverse: Some(
            json!({"apiVersion": "payments.io/v1", "kind": "PaymentGateway", "spec": {"replicas": 2}}),
        ),
        disruptive: false,
        mode: mode.into(),
        verdict: verdict.into(),
        verdict_detail: if verdict == "allowed" {
            String::new()
        } else {
            "runbook gateway-latency acted 6 times in the last hour (limit 6)".into()
        },
        verify: Some(
            json!({"signal": "latency_p99", "expect": "below", "threshold": 0.3, "within_seconds": 600}),
        ),
        undo_of: None,
    };
    let t = 1_764_590_400; // 2025-12-01T12:00:00Z
    let applied = journal
        .record_intent(&entry(t, "recommend", "allowed", 4))
        .await
        .expect("intent");
    journal
        .record_dry_run(applied, "ok")
        .await
        .expect("dry run");
    journal
        .record_outcome(applied, outcome::RECOMMENDED, "awaiting approval", t)
        .await
        .expect("recommended");
    assert!(
        journal
            .record_approval(applied, "approved by bob@example.com")
            .await
            .expect("approval")
    );
    journal
        .record_outcome(applied, outcome::APPLIED, "scaled 2 → 4", t + 240)
        .await
        .expect("applied");
    journal
        .record_verification(applied, "passed: latency_p99 0.19 < 0.3")
        .await
        .expect("verified");
    let pending = journal
        .record_intent(&entry(t + 3_600, "recommend", "allowed", 6))
        .await
        .expect("intent");
    journal
        .record_dry_run(pending, "ok")
        .await
        .expect("dry run");
    journal
        .record_outcome(
            pending,
            outcome::RECOMMENDED,
            "awaiting approval",
            t + 3_600,
        )
        .await
        .expect("recommended");
    let refused = journal
        .record_intent(&entry(t + 7_200, "auto", "runbook_rate", 8))
        .await
        .expect("intent");
    journal
        .record_outcome(
            refused,
            outcome::REFUSED,
            "refused by runbook_rate",
            t + 7_200,
        )
        .await
        .expect("refused");
    assert_eq!((applied, pending, refused), (1, 2, 3));
}

fn chromium() -> String {
    std::env::var("AUTOPILOT_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

fn axe_js() -> PathBuf {
    if let Ok(p) = std::env::var("AUTOPILOT_AXE") {
        return p.into();
    }
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/axe.sh"))
        .output()
        .expect("run tests/browser/axe.sh");
    assert!(
        out.status.success(),
        "tests/browser/axe.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .expect("the path of axe.min.js")
        .into()
}

/// Runs headless Chromium with `args` on `url` and returns its stdout.
fn browse(profile: &Path, args: &[&str], url: &str) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {} failed ({e}): scripts/install-deps installs Debian's chromium",
                chromium()
            )
        });
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM as the browser built it, after `budget_ms` of virtual time.
fn dom(profile: &Path, url: &str, budget_ms: u32) -> String {
    browse(
        profile,
        &["--dump-dom", &format!("--virtual-time-budget={budget_ms}")],
        url,
    )
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

async fn review_page(review: Router, uri: &str) -> String {
    let res = review
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("the review page answers");
    let body = axum::body::to_bytes(res.into_body(), 16 << 20)
        .await
        .expect("page body");
    String::from_utf8_lossy(&body).into_owned()
}

/// A page of the review server with axe-core run on it once loaded: the
/// violations end up as JSON in `<pre id="axe-result">` (or the error in
/// `<pre id="axe-error">`). Served by the test, beside the page (whose own
/// policy allows no script).
#[derive(Clone)]
struct AxeProxy {
    review: Router,
    axe: Arc<String>,
}

async fn axe_page(
    State(p): State<AxeProxy>,
    UrlPath(path): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    let page = if path == "known-bad" {
        // What axe must flag, so that a silent axe cannot pass the test.
        "<!DOCTYPE html><html><head><title>bad</title></head><body><img src=\"/none.png\"><input type=\"text\"></body></html>".to_string()
    } else {
        review_page(p.review.clone(), &format!("/{path}{query}")).await
    };
    let run = "<script src=\"/axe.min.js\"></script><script>\
        axe.run(document, {resultTypes: ['violations']}).then(function (r) {\
          var p = document.createElement('pre'); p.id = 'axe-result';\
          p.textContent = JSON.stringify(r.violations.map(function (v) {\
            return {id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(function (n) { return n.target.join(' '); })};\
          }));\
          document.body.appendChild(p);\
        }).catch(function (e) {\
          var p = document.createElement('pre'); p.id = 'axe-error'; p.textContent = String(e);\
          document.body.appendChild(p);\
        });</script></body>";
    Html(page.replacen("</body>", run, 1))
}

async fn serve_axe(review: Router, axe: &Path) -> SocketAddr {
    let js = std::fs::read_to_string(axe).expect("read axe.min.js");
    let app = Router::new()
        .route(
            "/axe.min.js",
            get(|State(p): State<AxeProxy>| async move {
                (
                    [("content-type", "text/javascript")],
                    p.axe.as_str().to_owned(),
                )
            }),
        )
        .route("/page/{*path}", get(axe_page))
        .route("/page/", get(|s, q| axe_page(s, UrlPath(String::new()), q)))
        .with_state(AxeProxy {
            review,
            axe: Arc::new(js),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// axe's violations of serious or critical impact on the page at `url`.
fn serious_violations(profile: &Path, url: &str) -> Vec<Value> {
    let dom = dom(profile, url, 30_000);
    if let Some(i) = dom.find("<pre id=\"axe-error\">") {
        panic!("axe-core failed on {url}: {}", &dom[i..]);
    }
    let start = dom
        .find("<pre id=\"axe-result\">")
        .unwrap_or_else(|| panic!("axe-core did not finish on {url}:\n{dom}"))
        + "<pre id=\"axe-result\">".len();
    let end = start + dom[start..].find("</pre>").expect("end of the result");
    let violations: Vec<Value> =
        serde_json::from_str(&unescape(&dom[start..end])).expect("axe's JSON");
    eprintln!(
        "axe on {url}: {} violation(s): {violations:?}",
        violations.len()
    );
    violations
        .into_iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_review_page_in_headless_chromium_shows_the_action_its_plot_and_its_diff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("journal.db").display());
    let journal = SqlJournal::connect(&url).await.expect("journal");
    journal_actions(&journal).await;
    let review = Review {
        journal,
        prometheus: None,
        specs: Arc::new(Vec::new()),
    };
    let (_server, addr) = review::serve("127.0.0.1:0".parse().expect("addr"), review.clone())
        .await
        .expect("serve");
    assert!(matches!(
        review::serve("0.0.0.0:0".parse().expect("addr"), review.clone()).await,
        Err(review::Error::NotLoopback(_))
    ));
    let profile = tempfile::tempdir().expect("profile");
    let profile = profile.path();
    let base = format!("http://{addr}");

    // The action page of the applied action, as the browser built it.
    let page = tokio::task::block_in_place(|| dom(profile, &format!("{base}/actions/1"), 5_000));
    assert!(
        page.contains("<h1 id=\"action\"")
            && page.contains("Action 1: scale_replicas on PaymentGateway/payments/checkout"),
        "{page}"
    );
    assert!(
        page.contains(
            "<svg role=\"img\" aria-label=\"latency_p99 of PaymentGateway/payments/checkout\""
        ),
        "{page}"
    );
    assert!(page.contains("<polyline"), "the plot draws lines: {page}");
    assert!(page.contains("only the values journaled with the findings: the page was started without --prometheus-url"), "{page}");
    assert!(page.contains("<pre class=\"diff\" id=\"diff\""), "{page}");
    assert!(
        page.contains("<span class=\"del\">-     &quot;replicas&quot;: 2</span>")
            || page.contains("<span class=\"del\">-     \"replicas\": 2</span>"),
        "{page}"
    );
    assert!(
        page.contains("<span class=\"add\">+     \"replicas\": 4</span>")
            || page.contains("<span class=\"add\">+     &quot;replicas&quot;: 4</span>"),
        "{page}"
    );
    assert!(page.contains("approved by bob@example.com"), "{page}");
    assert!(page.contains("passed: latency_p99 0.19 &lt; 0.3"), "{page}");
    assert!(page.contains("<p id=\"dry-run\">ok</p>"), "{page}");
    assert!(
        !page.contains("actions approve"),
        "an applied action has nothing to approve"
    );

    // The pending recommendation names the command that approves it.
    let pending = tokio::task::block_in_place(|| dom(profile, &format!("{base}/actions/2"), 5_000));
    let uid = pending
        .split("data-uid=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the action's uid")
        .to_lowercase();
    assert!(
        pending.contains(&format!(
            "kubectl autopilot actions approve {uid} -n payments"
        )),
        "{pending}"
    );
    assert!(!pending.contains("<button"), "read-only: {pending}");

    // The timeline, filtered by outcome.
    let timeline =
        tokio::task::block_in_place(|| dom(profile, &format!("{base}/?outcome=pending"), 5_000));
    assert!(timeline.contains("href=\"/actions/2\""), "{timeline}");
    assert!(!timeline.contains("href=\"/actions/1\""), "{timeline}");
    assert!(timeline.contains("1 of 3 journaled actions"), "{timeline}");
    let all = tokio::task::block_in_place(|| dom(profile, &format!("{base}/"), 5_000));
    assert_eq!(all.matches("<tr class=\"action\"").count(), 3, "{all}");

    // A screenshot of the action page.
    let shot = dir.path().join("action.png");
    tokio::task::block_in_place(|| {
        browse(
            profile,
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1280,2400",
            ],
            &format!("{base}/actions/1"),
        )
    });
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a screenshot of {} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("AUTOPILOT_REVIEW_SCREENSHOT") {
        std::fs::copy(&shot, keep).expect("keep the screenshot");
    }

    // axe-core in the same browser: no serious or critical violation.
    let axe = tokio::task::block_in_place(axe_js);
    let proxy = serve_axe(review::router(review), &axe).await;
    let bad = format!("http://{proxy}/page/known-bad");
    let flagged = tokio::task::block_in_place(|| serious_violations(profile, &bad));
    assert!(
        !flagged.is_empty(),
        "axe-core flagged nothing on a page without alt text and labels"
    );
    for path in [
        "",
        "?namespace=payments",
        "actions/1",
        "actions/2",
        "actions/3",
    ] {
        let url = format!("http://{proxy}/page/{path}");
        let serious = tokio::task::block_in_place(|| serious_violations(profile, &url));
        assert!(serious.is_empty(), "{url}: {serious:#?}");
    }
}

/// A scale of PaymentGateway payments/checkout after its saturation
/// forecast fired at `acted - 60`, applied at `acted`, verified below 0.8.
fn saturation_action(acted: i64) -> NewEntry {
    NewEntry {
        uid: new_uid(),
        at: acted - 30,
        runbook: "gateway-saturation".into(),
        runbook_hash: "0".repeat(64),
        runbook_editor: None,
        trigger: "finding".into(),
        evidence: json!([{
            "component": {"kind": "PaymentGateway", "namespace": "payments", "name": "checkout"},
            "signal": "saturation", "detector": "forecast", "score": 0.9, "at": acted - 60,
            "value": 0.95, "baseline": 0.5, "explanation": "crosses 0.9 within 900 s"
        }]),
        action: json!({"scale_replicas": {"replicas": 4}}),
        action_kind: "scale_replicas".into(),
        target: "PaymentGateway/payments/checkout".into(),
        namespace: "payments".into(),
        patch: Some(json!({"spec": {"replicas": 4}})),
        inverse: Some(json!({"spec": {"replicas": 2}})),
        disruptive: false,
        mode: "auto".into(),
        verdict: "allowed".into(),
        verdict_detail: String::new(),
        verify: Some(
            json!({"signal": "saturation", "expect": "below", "threshold": 0.8, "within_seconds": 600}),
        ),
        undo_of: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plots_come_from_a_range_query_of_prometheus_around_the_action() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let now = chrono::Utc::now().timestamp() / 60 * 60;
    let acted = now - 3_600;
    // The gateway's in-flight requests over its limit, every 30 s for two
    // hours: 0.5, 0.95 for the ten minutes up to the action, then 0.4.
    let level = |t: i64| {
        if t < acted - 600 {
            0.5
        } else if t < acted {
            0.95
        } else {
            0.4
        }
    };
    let mut text = String::new();
    for (name, value) in [
        (
            "payments_gateway_inflight_requests",
            &(|t| 100.0 * level(t)) as &dyn Fn(i64) -> f64,
        ),
        ("payments_gateway_max_inflight_requests", &|_| 100.0),
    ] {
        text.push_str(&format!("# TYPE {name} gauge\n"));
        for t in (now - 7_200..now - 300).step_by(30) {
            text.push_str(&format!(
                "{name}{{namespace=\"payments\",gateway=\"checkout\"}} {} {t}\n",
                value(t)
            ));
        }
    }
    text.push_str("# EOF\n");
    let prom = tokio::task::block_in_place(|| {
        autopilot::testenv::prometheus::Prometheus::start(
            &autopilot::testenv::prometheus::Options {
                targets: vec![],
                backfill: Some(text),
            },
        )
    })
    .expect("prometheus with backfilled history");

    let dir = tempfile::tempdir().expect("tempdir");
    let journal = SqlJournal::connect(&format!(
        "sqlite:{}",
        dir.path().join("journal.db").display()
    ))
    .await
    .expect("journal");
    let id = journal
        .record_intent(&saturation_action(acted))
        .await
        .expect("intent");
    journal
        .record_outcome(id, outcome::APPLIED, "scaled 2 → 4", acted)
        .await
        .expect("applied");
    let entry = journal.get(id).await.expect("read").expect("the entry");
    let specs =
        autopilot::observe::load_model_specs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
            .expect("model specs");
    let review = Review {
        journal,
        prometheus: Some(
            autopilot::observe::Prometheus::new(prom.url(), std::time::Duration::from_secs(20))
                .expect("client"),
        ),
        specs: Arc::new(specs),
    };
    let plots = review.plots(&entry, now).await;
    assert_eq!(plots.len(), 1, "{plots:?}");
    let p = &plots[0];
    assert_eq!(p.source, review::plot::Source::Prometheus, "{p:?}");
    assert_eq!((p.signal.as_str(), p.threshold), ("saturation", Some(0.8)));
    // From half an hour before the finding to ten minutes after the
    // deadline, at 15 s steps: the rise, the action and the fall.
    assert!(p.points.len() > 150, "{} points", p.points.len());
    let at = |t: i64| {
        p.points
            .iter()
            .min_by_key(|x| (x.0 - t).abs())
            .map(|x| x.1)
            .expect("a point")
    };
    assert!((at(acted - 1_500) - 0.5).abs() < 1e-9);
    assert!((at(acted - 120) - 0.95).abs() < 1e-9);
    assert!((at(acted + 900) - 0.4).abs() < 1e-9);
    let page = review_page(review::router(review.clone()), &format!("/actions/{id}")).await;
    assert!(page.contains("from Prometheus (a range query"), "{page}");
    assert!(!page.contains("Prometheus was not available"), "{page}");

    // Prometheus gone: the journaled value, and the page says why.
    drop(prom);
    let plots = review.plots(&entry, now).await;
    let review::plot::Source::Journal { why } = &plots[0].source else {
        panic!("{plots:?}")
    };
    assert!(why.starts_with("Prometheus could not be read"), "{why}");
    assert_eq!(plots[0].points, vec![(acted - 60, 0.95)]);
}
