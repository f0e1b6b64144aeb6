use serde_json::json;

use super::{
    html::{self, Filter},
    plot::Source,
    plots_of,
};
use crate::act::journal::{JournalEntry, NewEntry, outcome};

/// A scale of PaymentGateway pay/gw to 4 replicas after a latency finding,
/// recommended at 10 000 and not yet decided on.
fn pending() -> JournalEntry {
    let mut entry = NewEntry::fixture();
    entry.at = 10_000;
    entry.mode = "recommend".into();
    entry.evidence = json!([{
        "component": {"kind": "PaymentGateway", "namespace": "pay", "name": "gw"},
        "signal": "latency_p99", "detector": "ewma", "score": 0.93, "at": 9_970,
        "value": 0.61, "baseline": 0.12, "explanation": "p99 <5x> baseline"
    }]);
    entry.patch = Some(json!({"spec": {"replicas": 4}}));
    entry.inverse = Some(json!({"spec": {"replicas": 2}}));
    entry.verify = Some(
        json!({"signal": "latency_p99", "expect": "below", "threshold": 0.3, "within_seconds": 600}),
    );
    JournalEntry {
        id: 7,
        entry,
        dry_run: Some("ok".into()),
        outcome: Some(outcome::RECOMMENDED.into()),
        outcome_detail: None,
        outcome_at: None,
        verification: None,
        approval: None,
    }
}

fn applied() -> JournalEntry {
    let mut e = pending();
    e.id = 8;
    e.entry.uid = "01JDZ7Q8W3V6X2K9M4N5P6R7S9".into();
    e.entry.namespace = "ledger".into();
    e.entry.runbook = "restart-stuck".into();
    e.approval = Some("approved by alice".into());
    e.outcome = Some(outcome::APPLIED.into());
    e.outcome_at = Some(10_100);
    e.verification = Some("passed: latency_p99 0.2 < 0.3".into());
    e
}

#[test]
fn values_from_the_journal_are_escaped() {
    assert_eq!(
        html::esc("<script>alert('x') & \"y\"</script>"),
        "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
    );
    let mut e = pending();
    e.entry.runbook = "<img src=x onerror=alert(1)>".into();
    e.outcome_detail = Some("</dd><script>".into());
    let page = html::action(&e, &[]);
    assert!(!page.contains("<img src=x"), "{page}");
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    let timeline = html::timeline(&[e], &Filter::default());
    assert!(!timeline.contains("<img src=x"));
}

#[test]
fn the_filter_reads_the_form_and_selects_entries() {
    let f = Filter::parse(
        "namespace=ledger&runbook=restart-stuck&outcome=applied&since=1970-01-01T02%3A45&until=&x=1",
    );
    assert_eq!(f.namespace.as_deref(), Some("ledger"));
    assert_eq!(f.runbook.as_deref(), Some("restart-stuck"));
    assert_eq!(f.outcome.as_deref(), Some("applied"));
    assert_eq!(f.since, Some(2 * 3600 + 45 * 60));
    assert_eq!(f.until, None);
    assert!(f.matches(&applied()));
    assert!(!f.matches(&pending()));
    assert!(Filter::parse("outcome=pending").matches(&pending()));
    assert!(!Filter::parse("outcome=pending").matches(&applied()));
    assert!(!Filter::parse("since=10001").matches(&pending()));
    assert!(Filter::parse("until=10000").matches(&pending()));
    assert_eq!(
        Filter::parse("runbook=a+b%2Fc").runbook.as_deref(),
        Some("a b/c")
    );
    // A broken escape is kept as it is, not a panic.
    assert_eq!(
        Filter::parse("runbook=%zz%4").runbook.as_deref(),
        Some("%zz%4")
    );
}

#[test]
fn the_timeline_lists_the_filtered_entries_with_links() {
    let all = [applied(), pending()];
    let page = html::timeline(&all, &Filter::parse("namespace=ledger"));
    assert!(page.contains("href=\"/actions/8\""), "{page}");
    assert!(!page.contains("href=\"/actions/7\""), "{page}");
    assert!(page.contains("1 of 2 journaled actions"));
    assert!(page.contains("<option selected>ledger</option>"), "{page}");
    assert!(page.contains("latency_p99 ewma 0.93"));
}

#[test]
fn a_pending_recommendation_shows_the_kubectl_command_that_approves_it() {
    let page = html::action(&pending(), &[]);
    assert!(
        page.contains("kubectl autopilot actions approve 01jdz7q8w3v6x2k9m4n5p6r7s8 -n pay"),
        "{page}"
    );
    // Read-only: no form posts anything, no button approves.
    assert!(!page.contains("method=\"post\""));
    assert!(!page.contains("<button"));
    let done = html::action(&applied(), &[]);
    assert!(!done.contains("actions approve"), "{done}");
    assert!(done.contains("approved by alice"));
    assert!(done.contains("passed: latency_p99 0.2 &lt; 0.3"));
}

#[test]
fn the_action_page_shows_the_inverse_against_the_patch() {
    let page = html::action(&applied(), &[]);
    assert!(
        page.contains("<span class=\"del\">-     &quot;replicas&quot;: 2</span>"),
        "{page}"
    );
    assert!(
        page.contains("<span class=\"add\">+     &quot;replicas&quot;: 4</span>"),
        "{page}"
    );
    assert!(page.contains("<span class=\"same\">  {</span>"));
    let mut no_inverse = applied();
    no_inverse.entry.inverse = None;
    assert!(html::action(&no_inverse, &[]).contains("cannot be undone"));
}

#[test]
fn the_plots_span_the_finding_to_the_verification_with_baseline_and_threshold() {
    let plots = plots_of(&applied(), 1_000_000);
    assert_eq!(plots.len(), 1, "{plots:?}");
    let p = &plots[0];
    assert_eq!(p.component, "PaymentGateway/pay/gw");
    assert_eq!(p.signal, "latency_p99");
    assert_eq!(p.points, vec![(9_970, 0.61)]);
    assert_eq!(p.baseline, Some(0.12));
    assert_eq!(p.threshold, Some(0.3));
    // From half an hour before the finding to ten minutes after the
    // verification deadline (applied at 10 100, 600 s to verify).
    assert_eq!(p.window, (9_970 - 1_800, 10_100 + 600 + 600));
    let marks: Vec<_> = p.marks.iter().map(|m| (m.at, m.label)).collect();
    assert_eq!(
        marks,
        vec![
            (9_970, "finding"),
            (10_100, "action"),
            (10_700, "verify by")
        ]
    );
    // Not after now.
    assert_eq!(plots_of(&applied(), 10_500)[0].window.1, 10_500);
    // A verification of another signal is a plot of the target's.
    let mut e = applied();
    e.entry.verify = Some(
        json!({"signal": "error_rate", "expect": "below", "threshold": 0.01, "within_seconds": 60}),
    );
    let plots = plots_of(&e, 1_000_000);
    assert_eq!(plots.len(), 2);
    assert_eq!(plots[1].signal, "error_rate");
    assert_eq!(plots[1].component, "PaymentGateway/pay/gw");
    assert_eq!(plots[1].threshold, Some(0.01));
    assert!(plots[1].points.is_empty());
}

#[test]
fn a_plot_from_the_journal_says_so_on_the_page() {
    let mut plots = plots_of(&applied(), 1_000_000);
    plots[0].source = Source::Journal {
        why: "the page was started without --prometheus-url".into(),
    };
    let page = html::action(&applied(), &plots);
    assert!(page.contains("<svg role=\"img\""), "{page}");
    assert!(page.contains("without --prometheus-url"));
    assert!(page.contains("Prometheus was not available for this plot"));
    plots[0].source = Source::Prometheus;
    let page = html::action(&applied(), &plots);
    assert!(page.contains("from Prometheus"));
    assert!(!page.contains("Prometheus was not available"));
}
