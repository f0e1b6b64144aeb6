//! The review page: a read-only view of the action journal for people. A
//! timeline of findings and actions (filtered by namespace, runbook,
//! outcome and time) and a page per action with its evidence, runbook
//! version, guard verdict, dry-run result, the diff of its inverse and
//! patch, the approval (or the `kubectl` command that gives one), the
//! verification, and a plot of every signal it used.
//!
//! Served by the agent (`--review-listen`) and by `autopilot review`
//! locally. It has no authentication of its own, so it listens only on a
//! loopback address: in a cluster it is reached with `kubectl
//! port-forward`, which the API server authorizes. It never writes:
//! approving goes through an Approval object created as the person (see
//! [`crate::crd::approval`]).
//!
//! The journal keeps no signal series: the plots come from Prometheus (a
//! range query of the signal's model spec around the action) and, when
//! Prometheus is not given or cannot be read, from the values journaled
//! with the findings, which the page says.

pub mod diff;
pub mod html;
pub mod plot;

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};

use crate::{
    act::journal::{Journal, JournalEntry},
    decide::Verify,
    detect::{Finding, spec::ValidatedSpec},
    observe::Prometheus,
    store::SqlJournal,
};
use plot::{Mark, Plot, Source};

/// Entries the timeline reads (newest first) before filtering.
pub const TIMELINE_LIMIT: i64 = 2000;
/// Time drawn before the first finding and after the verification.
const BEFORE_SECONDS: i64 = 30 * 60;
const AFTER_SECONDS: i64 = 10 * 60;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the review page has no authentication of its own: serve it on a loopback address (e.g. 127.0.0.1:8081) and reach it with kubectl port-forward, not on {0}"
    )]
    NotLoopback(SocketAddr),
    #[error("listening on {addr} for the review page failed")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotLoopback(_) => "not_loopback",
            Error::Listen { .. } => "listen",
        }
    }
}

/// What the pages read: the journal, and Prometheus with the model specs
/// (whose queries give the signals) for the plots.
#[derive(Clone)]
pub struct Review {
    pub journal: SqlJournal,
    pub prometheus: Option<Prometheus>,
    pub specs: Arc<Vec<ValidatedSpec>>,
}

/// The signals `e` used, with what the journal knows of them: each
/// finding's signal of its component (the journaled value, the detector's
/// baseline), and the verification's signal of the target (its threshold),
/// over a window from before the first finding to after the verification
/// deadline (no later than `now`). Pure; [`Review::plots`] fills in the
/// series from Prometheus.
pub fn plots_of(e: &JournalEntry, now: i64) -> Vec<Plot> {
    let findings: Vec<Finding> =
        serde_json::from_value(e.entry.evidence.clone()).unwrap_or_default();
    let verify: Option<Verify> = e
        .entry
        .verify
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let first = findings
        .iter()
        .map(|f| f.at)
        .chain([e.entry.at])
        .min()
        .unwrap_or(e.entry.at);
    let acted = e.outcome_at.unwrap_or(e.entry.at);
    let deadline = verify.as_ref().map(|v| acted + v.within_seconds);
    let start = first - BEFORE_SECONDS;
    let end = (deadline.unwrap_or(acted) + AFTER_SECONDS)
        .min(now)
        .max(start + 60);
    let mut marks = vec![Mark {
        at: first,
        label: "finding",
    }];
    marks.push(Mark {
        at: acted,
        label: if e.outcome_at.is_some() {
            "action"
        } else {
            "decided"
        },
    });
    if let Some(d) = deadline {
        marks.push(Mark {
            at: d,
            label: "verify by",
        });
    }
    // One plot per (component, signal), in order of first mention.
    let mut plots: Vec<Plot> = Vec::new();
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut at = |component: String, signal: &str, plots: &mut Vec<Plot>| -> usize {
        *index
            .entry((component.clone(), signal.to_string()))
            .or_insert_with(|| {
                plots.push(Plot {
                    signal: signal.to_string(),
                    component,
                    points: Vec::new(),
                    baseline: None,
                    threshold: None,
                    marks: marks.clone(),
                    window: (start, end),
                    source: Source::Journal {
                        why: "not read yet".into(),
                    },
                });
                plots.len() - 1
            })
    };
    for f in &findings {
        let i = at(f.component.to_string(), &f.signal, &mut plots);
        let p = &mut plots[i];
        p.points.push((f.at, f.value));
        p.baseline = Some(f.baseline);
    }
    if let Some(v) = &verify {
        let i = at(e.entry.target.clone(), &v.signal, &mut plots);
        plots[i].threshold = Some(v.threshold);
    }
    for p in &mut plots {
        p.points.sort_by_key(|x| x.0);
    }
    plots
}

/// Prometheus's series of `p` over its window, or why there are none.
fn from_series(
    p: &Plot,
    read: &Result<Vec<crate::detect::SeriesSamples>, String>,
) -> Result<Vec<(i64, f64)>, String> {
    let series = read
        .as_ref()
        .map_err(|e| format!("Prometheus could not be read: {e}"))?;
    let points: Vec<(i64, f64)> = series
        .iter()
        .filter(|s| s.signal == p.signal && s.component.to_string() == p.component)
        .flat_map(|s| s.samples.iter().copied())
        .filter(|x| x.1.is_finite())
        .collect();
    if points.is_empty() {
        return Err("Prometheus has no sample of it in this window".into());
    }
    Ok(points)
}

impl Review {
    /// The plots of `e` ([`plots_of`]), each with its series from Prometheus
    /// when it can be read, else the journaled values and why.
    pub async fn plots(&self, e: &JournalEntry, now: i64) -> Vec<Plot> {
        let mut plots = plots_of(e, now);
        // One range query per model spec (kind), shared by its signals.
        let mut read: BTreeMap<String, Result<Vec<_>, String>> = BTreeMap::new();
        for p in &mut plots {
            let kind = p
                .component
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let Some(prometheus) = &self.prometheus else {
                p.source = Source::Journal {
                    why: "the page was started without --prometheus-url".into(),
                };
                continue;
            };
            let Some(spec) = self
                .specs
                .iter()
                .find(|s| s.kind == kind && s.signals.iter().any(|g| g.name == p.signal))
            else {
                p.source = Source::Journal {
                    why: format!("no model spec of {kind} has the signal {}", p.signal),
                };
                continue;
            };
            let (start, end) = p.window;
            let step = ((end - start) / 240).max(15) as f64;
            if !read.contains_key(&kind) {
                let got = prometheus
                    .query_history(spec, start, end, step)
                    .await
                    .map_err(|e| crate::telemetry::chain(&e));
                read.insert(kind.clone(), got);
            }
            match read.get(&kind).map(|r| from_series(p, r)) {
                Some(Ok(points)) => {
                    p.points = points;
                    p.source = Source::Prometheus;
                }
                Some(Err(why)) => p.source = Source::Journal { why },
                None => {}
            }
        }
        plots
    }
}

/// Headers of every page: no script, nothing loaded from elsewhere, never
/// framed, no referrer.
fn page(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Html(body),
    )
        .into_response()
}

async fn timeline(State(review): State<Review>, RawQuery(query): RawQuery) -> Response {
    let filter = html::Filter::parse(query.as_deref().unwrap_or(""));
    match review.journal.list(TIMELINE_LIMIT, false).await {
        Ok(entries) => page(StatusCode::OK, html::timeline(&entries, &filter)),
        Err(e) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            html::error("The journal could not be read", &e.to_string()),
        ),
    }
}

async fn action(State(review): State<Review>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return page(
            StatusCode::NOT_FOUND,
            html::error("No such action", &format!("{id} is not an action number")),
        );
    };
    match review.journal.get(id).await {
        Ok(Some(e)) => {
            let plots = review.plots(&e, chrono::Utc::now().timestamp()).await;
            page(StatusCode::OK, html::action(&e, &plots))
        }
        Ok(None) => page(
            StatusCode::NOT_FOUND,
            html::error("No such action", &format!("the journal has no action {id}")),
        ),
        Err(e) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            html::error("The journal could not be read", &e.to_string()),
        ),
    }
}

/// The pages: `/` (the timeline; filters in the query string) and
/// `/actions/{id}`.
pub fn router(review: Review) -> Router {
    Router::new()
        .route("/", get(timeline))
        .route("/actions/{id}", get(action))
        .with_state(review)
}

/// Serves the pages on `listen`, a loopback address (anything else is
/// refused: the page has no authentication of its own). Returns the
/// server's task and the address it listens on (port 0 picks one).
pub async fn serve(
    listen: SocketAddr,
    review: Review,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr), Error> {
    if !listen.ip().is_loopback() {
        return Err(Error::NotLoopback(listen));
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: listen,
        source,
    })?;
    let app = router(review);
    Ok((
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the review page's server failed");
            }
        }),
        addr,
    ))
}

#[cfg(test)]
mod tests;
