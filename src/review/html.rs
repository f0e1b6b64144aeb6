//! The review pages as HTML (pure: journal rows and plots in, markup out).
//! Every value from the journal is escaped with [`esc`]; the pages load
//! nothing from elsewhere (styles inline, plots inline SVG).

use std::{collections::BTreeSet, fmt::Write};

use serde_json::Value;

use super::{
    diff::{self, Line},
    plot::{self, Plot, Source},
};
use crate::act::journal::{JournalEntry, outcome};

/// `s` with the five characters that matter in HTML text and attribute
/// values replaced by entities.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A form field's value from a query string (`+` is a space, `%XX` a byte).
fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unix seconds as `2026-12-01 15:04:05 UTC`.
pub fn time(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| at.to_string())
}

/// What the timeline shows: every field optional.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub namespace: Option<String>,
    pub runbook: Option<String>,
    pub outcome: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// `2026-12-01T15:04` (a `datetime-local` field, read as UTC) or unix
/// seconds.
fn parse_time(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc().timestamp())
}

fn input_time(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M").to_string())
        .unwrap_or_default()
}

/// An entry's outcome for people: `pending` for a recommendation awaiting
/// a decision, `in-flight` before the outcome is journaled.
pub fn shown_outcome(e: &JournalEntry) -> &str {
    match e.outcome.as_deref() {
        Some(outcome::RECOMMENDED) if e.approval.is_none() => "pending",
        Some(o) => o,
        None => "in-flight",
    }
}

impl Filter {
    /// The filter in a query string (`namespace=…&runbook=…&outcome=…&since=…&until=…`);
    /// unknown fields, empty values and unreadable times are ignored.
    pub fn parse(query: &str) -> Filter {
        let mut f = Filter::default();
        for (key, value) in query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k, url_decode(v)))
        {
            let value = value.trim().to_string();
            if value.is_empty() {
                continue;
            }
            match key {
                "namespace" => f.namespace = Some(value),
                "runbook" => f.runbook = Some(value),
                "outcome" => f.outcome = Some(value),
                "since" => f.since = parse_time(&value),
                "until" => f.until = parse_time(&value),
                _ => {}
            }
        }
        f
    }

    pub fn matches(&self, e: &JournalEntry) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|n| *n == e.entry.namespace)
            && self.runbook.as_ref().is_none_or(|r| *r == e.entry.runbook)
            && self.outcome.as_ref().is_none_or(|o| o == shown_outcome(e))
            && self.since.is_none_or(|t| e.entry.at >= t)
            && self.until.is_none_or(|t| e.entry.at <= t)
    }
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fff;line-height:1.4}
header{background:#1d2b3a;color:#fff;padding:.6rem 1.2rem}
header a{color:#fff}
main{padding:1rem 1.2rem;max-width:80rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f4}
a{color:#0b4f9c}
form{display:flex;flex-wrap:wrap;gap:.8rem;align-items:flex-end;margin-bottom:1rem}
label{display:flex;flex-direction:column;font-size:.85rem}
pre{background:#f4f5f7;padding:.6rem;overflow-x:auto;font-size:.85rem}
.diff .add{background:#dff5e1;color:#0d4513;display:block}
.diff .del{background:#fbe3e3;color:#6b0f0f;display:block}
.diff .same{display:block}
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}
dt{font-weight:600}
.note{background:#fff6d6;border-left:4px solid #8a6d00;padding:.4rem .8rem}
.pending{background:#e8f0fb;border-left:4px solid #0b4f9c;padding:.4rem .8rem}
figure{margin:1rem 0}
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header><a href=\"/\">Autopilot review</a> · read-only</header>\n<main>\n{body}</main>\n</body>\n</html>\n",
        title = esc(title),
    )
}

fn select(name: &str, label: &str, options: &BTreeSet<&str>, chosen: Option<&str>) -> String {
    let mut s = format!(
        "<label for=\"f-{name}\">{label}<select id=\"f-{name}\" name=\"{name}\"><option value=\"\">any</option>"
    );
    for o in options {
        let selected = if chosen == Some(*o) { " selected" } else { "" };
        let _ = write!(s, "<option{selected}>{}</option>", esc(o));
    }
    s.push_str("</select></label>");
    s
}

/// The findings behind an entry, one line each (`signal detector score`).
fn findings_summary(e: &JournalEntry) -> String {
    match &e.entry.evidence {
        Value::Array(findings) if !findings.is_empty() => findings
            .iter()
            .map(|f| {
                format!(
                    "{} {} {:.2}",
                    f["signal"].as_str().unwrap_or("?"),
                    f["detector"].as_str().unwrap_or("?"),
                    f["score"].as_f64().unwrap_or(f64::NAN)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => e.entry.trigger.clone(),
    }
}

/// The timeline: the entries that pass `filter` (newest first), with the
/// filter form. `all` gives the choices of the form.
pub fn timeline(all: &[JournalEntry], filter: &Filter) -> String {
    let namespaces: BTreeSet<&str> = all.iter().map(|e| e.entry.namespace.as_str()).collect();
    let runbooks: BTreeSet<&str> = all.iter().map(|e| e.entry.runbook.as_str()).collect();
    let outcomes: BTreeSet<&str> = all
        .iter()
        .map(shown_outcome)
        .chain(["pending", outcome::APPLIED, outcome::RECOMMENDED])
        .collect();
    let mut body = String::from(
        "<h1>Findings and actions</h1>\n<form method=\"get\" action=\"/\" aria-label=\"Filter the timeline\">",
    );
    body.push_str(&select(
        "namespace",
        "Namespace",
        &namespaces,
        filter.namespace.as_deref(),
    ));
    body.push_str(&select(
        "runbook",
        "Runbook",
        &runbooks,
        filter.runbook.as_deref(),
    ));
    body.push_str(&select(
        "outcome",
        "Outcome",
        &outcomes,
        filter.outcome.as_deref(),
    ));
    for (name, label, value) in [
        ("since", "From (UTC)", filter.since),
        ("until", "To (UTC)", filter.until),
    ] {
        let _ = write!(
            body,
            "<label for=\"f-{name}\">{label}<input type=\"datetime-local\" id=\"f-{name}\" name=\"{name}\" value=\"{}\"></label>",
            value.map(input_time).unwrap_or_default()
        );
    }
    body.push_str("<button type=\"submit\">Filter</button> <a href=\"/\">Clear</a></form>\n");
    let shown: Vec<&JournalEntry> = all.iter().filter(|e| filter.matches(e)).collect();
    let _ = writeln!(
        body,
        "<p id=\"count\">{} of {} journaled actions.</p>",
        shown.len(),
        all.len()
    );
    body.push_str("<table id=\"timeline\">\n<caption>Actions, newest first, with the findings that led to them</caption>\n<thead><tr><th scope=\"col\">#</th><th scope=\"col\">Decided</th><th scope=\"col\">Findings</th><th scope=\"col\">Runbook</th><th scope=\"col\">Action</th><th scope=\"col\">Target</th><th scope=\"col\">Mode</th><th scope=\"col\">Verdict</th><th scope=\"col\">Outcome</th></tr></thead>\n<tbody>\n");
    for e in shown {
        let _ = writeln!(
            body,
            "<tr class=\"action\" data-id=\"{id}\"><td><a href=\"/actions/{id}\">{id}</a></td><td>{at}</td><td>{findings}</td><td>{runbook}</td><td>{kind}</td><td>{target}</td><td>{mode}</td><td>{verdict}</td><td>{outcome}</td></tr>",
            id = e.id,
            at = time(e.entry.at),
            findings = esc(&findings_summary(e)),
            runbook = esc(&e.entry.runbook),
            kind = esc(&e.entry.action_kind),
            target = esc(&e.entry.target),
            mode = esc(&e.entry.mode),
            verdict = esc(&e.entry.verdict),
            outcome = esc(shown_outcome(e)),
        );
    }
    body.push_str("</tbody>\n</table>\n");
    page("Autopilot review: findings and actions", &body)
}

/// The command that approves a pending recommendation (the kubectl
/// plugin; `autopilot actions approve` is the same command), and the one
/// that rejects it.
pub fn approve_commands(e: &JournalEntry) -> (String, String) {
    let name = e.entry.uid.to_lowercase();
    let ns = &e.entry.namespace;
    (
        format!("kubectl autopilot actions approve {name} -n {ns}"),
        format!("kubectl autopilot actions reject {name} -n {ns} --reason '…'"),
    )
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn diff_html(e: &JournalEntry) -> String {
    let Some(patch) = &e.entry.patch else {
        return "<p id=\"diff\">No patch: planning failed (see the verdict).</p>".into();
    };
    let new = pretty(patch);
    let old = e.entry.inverse.as_ref().map(pretty).unwrap_or_default();
    let mut s = String::new();
    if e.entry.inverse.is_none() {
        s.push_str("<p class=\"note\">No inverse: this action cannot be undone.</p>");
    }
    s.push_str("<p>Lines starting with <code>-</code> are the inverse (what undoing restores), lines starting with <code>+</code> the patch (what the action sets).</p><pre class=\"diff\" id=\"diff\" tabindex=\"0\" aria-label=\"Inverse against patch\"><code>");
    for line in diff::lines(&old, &new) {
        let (class, sign, text) = match line {
            Line::Same(t) => ("same", ' ', t),
            Line::Removed(t) => ("del", '-', t),
            Line::Added(t) => ("add", '+', t),
        };
        let _ = write!(s, "<span class=\"{class}\">{sign} {}</span>", esc(text));
    }
    s.push_str("</code></pre>");
    s
}

fn evidence_html(e: &JournalEntry) -> String {
    let Value::Array(findings) = &e.entry.evidence else {
        return format!("<pre>{}</pre>", esc(&pretty(&e.entry.evidence)));
    };
    if findings.is_empty() {
        return format!(
            "<p>No findings: triggered by <code>{}</code>.</p>",
            esc(&e.entry.trigger)
        );
    }
    let mut s = String::from(
        "<table id=\"evidence\"><caption>Findings behind the decision</caption><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Component</th><th scope=\"col\">Signal</th><th scope=\"col\">Detector</th><th scope=\"col\">Score</th><th scope=\"col\">Value</th><th scope=\"col\">Baseline</th><th scope=\"col\">Why</th></tr></thead><tbody>",
    );
    for f in findings {
        let c = &f["component"];
        let num = |k: &str| f[k].as_f64().map(|v| format!("{v}")).unwrap_or_default();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f["at"].as_i64().map(time).unwrap_or_default(),
            esc(&format!(
                "{}/{}/{}",
                c["kind"].as_str().unwrap_or(""),
                c["namespace"].as_str().unwrap_or(""),
                c["name"].as_str().unwrap_or("")
            )),
            esc(f["signal"].as_str().unwrap_or("")),
            esc(f["detector"].as_str().unwrap_or("")),
            num("score"),
            num("value"),
            num("baseline"),
            esc(f["explanation"].as_str().unwrap_or("")),
        );
    }
    s.push_str("</tbody></table>");
    s
}

fn plots_html(plots: &[Plot]) -> String {
    if plots.is_empty() {
        return "<p>No signal: the action names none (no findings, no verification).</p>".into();
    }
    let mut s = String::new();
    for (i, p) in plots.iter().enumerate() {
        let label = format!("{} of {}", p.signal, p.component);
        let source = match &p.source {
            Source::Prometheus => {
                "from Prometheus (a range query of the model spec's signal)".to_string()
            }
            Source::Journal { why } => {
                format!("only the values journaled with the findings: {}", esc(why))
            }
        };
        let svg = plot::svg(p, &label).unwrap_or_else(|e| format!("<p>{}</p>", esc(&e)));
        let _ = write!(
            s,
            "<figure id=\"plot-{i}\" class=\"signal\" data-signal=\"{signal}\">{svg}<figcaption><strong>{label}</strong>, {source}. Baseline: {baseline}; threshold: {threshold}.</figcaption></figure>",
            signal = esc(&p.signal),
            label = esc(&label),
            baseline = p
                .baseline
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into()),
            threshold = p
                .threshold
                .map(|v| v.to_string())
                .unwrap_or_else(|| "none".into()),
        );
        if matches!(p.source, Source::Journal { .. }) {
            s.push_str("<p class=\"note\">Prometheus was not available for this plot: it shows only the journaled finding values, not the series around them.</p>");
        }
    }
    s
}

/// The page of one action: evidence, runbook and version, verdict, dry
/// run, the diff of inverse and patch, approval (or the command that gives
/// it), verification, and a plot of each signal it used.
pub fn action(e: &JournalEntry, plots: &[Plot]) -> String {
    let n = &e.entry;
    let title = format!("Action {}: {} on {}", e.id, n.action_kind, n.target);
    let mut b = format!(
        "<h1 id=\"action\" data-uid=\"{}\">{}</h1>\n",
        esc(&n.uid),
        esc(&title)
    );
    let _ = writeln!(
        b,
        "<dl id=\"summary\"><dt>Action ID</dt><dd>{uid}</dd><dt>Decided</dt><dd>{at}</dd><dt>Trigger</dt><dd>{trigger}</dd><dt>Mode</dt><dd>{mode}</dd><dt>Disruptive</dt><dd>{disruptive}</dd><dt>Outcome</dt><dd id=\"outcome\">{outcome}{detail}{when}</dd>{undo}</dl>",
        uid = esc(&n.uid),
        at = time(n.at),
        trigger = esc(&n.trigger),
        mode = esc(&n.mode),
        disruptive = if n.disruptive { "yes" } else { "no" },
        outcome = esc(shown_outcome(e)),
        detail = e
            .outcome_detail
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(|d| format!(": {}", esc(d)))
            .unwrap_or_default(),
        when = e
            .outcome_at
            .map(|t| format!(" ({})", time(t)))
            .unwrap_or_default(),
        undo = n
            .undo_of
            .map(|id| format!("<dt>Undoes</dt><dd><a href=\"/actions/{id}\">action {id}</a></dd>"))
            .unwrap_or_default(),
    );
    if shown_outcome(e) == "pending" {
        let (approve, reject) = approve_commands(e);
        let _ = writeln!(
            b,
            "<section class=\"pending\" aria-labelledby=\"h-pending\"><h2 id=\"h-pending\">Awaiting approval</h2><p>This page cannot approve. Approve as yourself, through the API server (your RBAC decides, the admission policy records your name):</p><pre id=\"approve-command\"><code>{}</code></pre><p>or reject it:</p><pre><code>{}</code></pre></section>",
            esc(&approve),
            esc(&reject)
        );
    }
    let _ = write!(
        b,
        "<h2>Evidence</h2>\n{}\n<h2>Runbook</h2>\n<dl><dt>Name</dt><dd id=\"runbook\">{}</dd><dt>Version (SHA-256)</dt><dd><code>{}</code></dd><dt>Made by</dt><dd>{}</dd></dl>\n",
        evidence_html(e),
        esc(&n.runbook),
        esc(&n.runbook_hash),
        esc(n.runbook_editor.as_deref().unwrap_or("unknown")),
    );
    let _ = write!(
        b,
        "<h2>Guard verdict</h2>\n<p id=\"verdict\"><strong>{}</strong>{}</p>\n<h2>Server-side dry run</h2>\n<p id=\"dry-run\">{}</p>\n",
        esc(&n.verdict),
        if n.verdict_detail.is_empty() {
            String::new()
        } else {
            format!(": {}", esc(&n.verdict_detail))
        },
        esc(e.dry_run.as_deref().unwrap_or("not run")),
    );
    let _ = write!(b, "<h2>Patch and inverse</h2>\n{}\n", diff_html(e));
    let _ = write!(
        b,
        "<h2>Approval</h2>\n<p id=\"approval\">{}</p>\n",
        match &e.approval {
            Some(a) => format!(
                "{}. The Approval object in {} records when (kubectl get approvals -n {}).",
                esc(a),
                esc(&n.namespace),
                esc(&n.namespace)
            ),
            None if n.mode == "auto" => "None needed: decided in auto mode.".into(),
            None => "None.".into(),
        }
    );
    let verify = n
        .verify
        .as_ref()
        .map(|v| {
            format!(
                "{} {} {} within {} s",
                v["signal"].as_str().unwrap_or("?"),
                if v["expect"] == "above" {
                    "above"
                } else {
                    "below"
                },
                v["threshold"],
                v["within_seconds"]
            )
        })
        .unwrap_or_else(|| "none asked by the runbook".into());
    let _ = write!(
        b,
        "<h2>Verification</h2>\n<dl><dt>Asked</dt><dd>{}</dd><dt>Result</dt><dd id=\"verification\">{}</dd></dl>\n",
        esc(&verify),
        esc(e.verification.as_deref().unwrap_or("not yet verified")),
    );
    let _ = write!(b, "<h2>Signals</h2>\n{}\n", plots_html(plots));
    let _ = write!(
        b,
        "<h2>Intent</h2>\n<pre tabindex=\"0\" aria-label=\"Intent as the runbook returned it\">{}</pre>\n",
        esc(&pretty(&n.action))
    );
    page(&title, &b)
}

/// A page for an error (no such action, the journal unreadable).
pub fn error(title: &str, message: &str) -> String {
    page(
        title,
        &format!("<h1>{}</h1>\n<p>{}</p>\n", esc(title), esc(message)),
    )
}
