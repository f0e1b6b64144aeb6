//! Runbooks: compiled once at load, each declaring its trigger in `fn
//! runbook()` and proposing intents from `fn decide(ctx)`.
//!
//! ```rhai
//! fn runbook() {
//!     #{ trigger: #{ findings: #{ kind: "PaymentGateway", signals: ["saturation"], min_score: 0.7 } },
//!        mode: "recommend" }          // optional pin below the agent's mode
//! }
//! fn decide(ctx) { [ scale(ctx.component, ctx.resource.spec.replicas + 2) ] }
//! ```
//!
//! Pure: sources come in as text, the time as `now`; nothing is read from
//! disk or the cluster here.

use std::collections::{BTreeMap, BTreeSet};

use rhai::{AST, Dynamic, Engine, EvalAltResult, Scope};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Error,
    api::{Limits, TIME_BUDGET_EXCEEDED, build_engine, with_budget},
    intent::{Intent, Mode},
};
use crate::detect::{ComponentId, Finding};

mod trigger;
pub use trigger::{Direction, FindingTrigger, Trigger, is_forecast};

/// What a runbook declares about itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub trigger: Trigger,
    /// Pin to a mode lower than the agent's.
    #[serde(default)]
    pub mode: Option<Mode>,
}

/// Whether `resource` (a Kubernetes object as JSON) has the condition.
pub fn condition_holds(resource: &serde_json::Value, condition: &str, status: &str) -> bool {
    resource["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == condition && c["status"] == status)
        })
}

/// The read-only input of one evaluation, visible to the script as `ctx`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Unix seconds of the evaluation.
    pub now: i64,
    /// `finding`, `cron` or `condition`.
    pub trigger: String,
    /// The component the runbook is evaluated for (usable as a target).
    pub component: ComponentId,
    /// Findings and forecasts about the component that matched the trigger.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// Recent samples per signal, oldest first. A sample that is not a
    /// finite number (NaN, ±Inf, or `null` in a case) is "no data": `()` in
    /// the script, never a number that compares as above or below.
    #[serde(default, deserialize_with = "finite_samples")]
    pub samples: BTreeMap<String, Vec<Option<f64>>>,
    /// The target resource (metadata, spec, status) as read from the cluster.
    #[serde(default)]
    pub resource: serde_json::Value,
    /// Other facts the agent gathered for this kind (e.g. replica lag per
    /// instance, age of the last backup).
    #[serde(default)]
    pub facts: BTreeMap<String, serde_json::Value>,
}

/// A sample as runbooks see it: `None` unless it is a finite number.
pub fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Reads `samples`, turning every non-finite value into no data: golden
/// cases write `.nan` or `null`, and both mean the same.
fn finite_samples<'de, D>(d: D) -> Result<BTreeMap<String, Vec<Option<f64>>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: BTreeMap<String, Vec<Option<f64>>> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, vs)| (k, vs.into_iter().map(|v| v.and_then(finite)).collect()))
        .collect())
}

/// A compiled runbook.
#[derive(Clone, Debug)]
pub struct Runbook {
    pub name: String,
    /// SHA-256 of the source, recorded with every action.
    pub hash: String,
    /// Who made this version: the editor the journal keeps for its hash
    /// (the rules ConfigMap's `changed-by` annotation when the version was
    /// first seen). Set by the agent once recorded, never by [`compile`];
    /// `None` for a folder's runbooks and an unknown editor.
    pub editor: Option<String>,
    pub meta: Meta,
    /// The text it was compiled from, for lints that read what `fn
    /// decide` uses (see `decide::lint`).
    source: String,
    ast: AST,
    schedule: Option<crate::schedule::Cron>,
}

impl Runbook {
    pub fn schedule(&self) -> Option<&crate::schedule::Cron> {
        self.schedule.as_ref()
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

fn position(pos: rhai::Position) -> (usize, usize) {
    (pos.line().unwrap_or(0), pos.position().unwrap_or(0))
}

/// Compiles and checks one runbook: syntax, the two required functions, and
/// its declared trigger.
pub fn compile(engine: &Engine, name: &str, source: &str) -> Result<Runbook, Error> {
    let fail = |(line, column): (usize, usize), reason: String, hint: &str| Error::CompileRunbook {
        file: name.to_string(),
        line,
        column,
        reason,
        hint: hint.to_string(),
    };
    let ast = engine.compile(source).map_err(|e| {
        fail(
            position(e.1),
            e.err_type().to_string(),
            "fix the syntax; a version that compiled before keeps running",
        )
    })?;
    let has = |f: &str, params: usize| {
        ast.iter_functions()
            .any(|m| m.name == f && m.params.len() == params)
    };
    if !has("runbook", 0) {
        return Err(fail(
            (1, 1),
            "no `fn runbook()`".into(),
            "declare the trigger: fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } } } }",
        ));
    }
    if !has("decide", 1) {
        return Err(fail(
            (1, 1),
            "no `fn decide(ctx)`".into(),
            "return an array of intents from fn decide(ctx)",
        ));
    }
    let meta: Dynamic = with_budget(std::time::Duration::from_millis(250), || {
        call(engine, &ast, "runbook", ())
    })
    .map_err(|e| {
        fail(
            position(e.position()),
            format!("fn runbook() failed: {e}"),
            "",
        )
    })?;
    let meta: Meta = rhai::serde::from_dynamic(&meta).map_err(|e| {
        fail(
            (1, 1),
            format!("fn runbook() returned an invalid declaration: {e}"),
            "expected #{ trigger: #{ findings: #{..} } | #{ cron: #{schedule} } | #{ condition: #{kind, condition} }, mode: \"dry-run\"|\"recommend\"|\"auto\" }",
        )
    })?;
    let schedule = match &meta.trigger {
        Trigger::Cron { schedule, .. } => {
            Some(crate::schedule::parse_with_seconds(schedule).map_err(|r| {
                fail(
                    (1, 1),
                    r,
                    "use 5 fields: minute hour day-of-month month day-of-week (0 or 7 = Sunday)",
                )
            })?)
        }
        _ => None,
    };
    Ok(Runbook {
        name: name.to_string(),
        hash: hex(&Sha256::digest(source.as_bytes())),
        editor: None,
        meta,
        source: source.to_string(),
        ast,
        schedule,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn call(
    engine: &Engine,
    ast: &AST,
    name: &str,
    args: impl rhai::FuncArgs,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let options = rhai::CallFnOptions::new()
        .eval_ast(false)
        .rewind_scope(true);
    engine.call_fn_with_options(options, &mut Scope::new(), ast, name, args)
}

/// Unwraps nested function-call errors to the one that stopped the script.
fn innermost(e: &EvalAltResult) -> &EvalAltResult {
    match e {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => innermost(inner),
        other => other,
    }
}

/// Fixed category of a runtime error (metric label).
pub fn runtime_kind(e: &EvalAltResult) -> &'static str {
    match innermost(e) {
        EvalAltResult::ErrorTooManyOperations(_) => "too_many_operations",
        EvalAltResult::ErrorTerminated(_, _) => "time_budget",
        EvalAltResult::ErrorStackOverflow(_) => "call_depth",
        EvalAltResult::ErrorDataTooLarge(_, _) => "data_too_large",
        EvalAltResult::ErrorFunctionNotFound(_, _) => "function_not_found",
        EvalAltResult::ErrorVariableNotFound(_, _)
        | EvalAltResult::ErrorPropertyNotFound(_, _)
        | EvalAltResult::ErrorIndexNotFound(_, _)
        | EvalAltResult::ErrorDotExpr(_, _) => "missing_data",
        EvalAltResult::ErrorRuntime(v, _) if v.to_string().starts_with("missing data") => {
            "missing_data"
        }
        EvalAltResult::ErrorMismatchDataType(..) | EvalAltResult::ErrorMismatchOutputType(..) => {
            "type_mismatch"
        }
        _ => "runtime",
    }
}

/// Evaluates one compiled runbook on one context. The result must be an
/// array of intents (or `()` for none).
pub fn evaluate_runbook(
    engine: &Engine,
    runbook: &Runbook,
    ctx: &Context,
    limits: &Limits,
) -> Result<Vec<Intent>, Error> {
    let fail = |kind: &'static str, message: String, (line, column): (usize, usize)| {
        Error::EvaluateRunbook {
            runbook: runbook.name.clone(),
            kind,
            message,
            line,
            column,
        }
    };
    let ctx_value =
        rhai::serde::to_dynamic(ctx).map_err(|e| fail("bad_context", e.to_string(), (0, 0)))?;
    let out = with_budget(limits.budget, || {
        call(engine, &runbook.ast, "decide", (ctx_value,))
    })
    .map_err(|e| {
        let inner = innermost(&e);
        let kind = runtime_kind(&e);
        let message = match inner {
            EvalAltResult::ErrorTerminated(..) => {
                format!("{TIME_BUDGET_EXCEEDED} ({:?})", limits.budget)
            }
            other => other.to_string(),
        };
        fail(kind, message, position(inner.position()))
    })?;
    if out.is_unit() {
        return Ok(Vec::new());
    }
    let items = if out.is_array() {
        out.into_array().unwrap_or_default()
    } else {
        vec![out]
    };
    // All or nothing: the first `max_intents` would be an arbitrary cut of
    // what the runbook meant to do.
    if items.len() > limits.max_intents {
        return Err(Error::TooManyIntents {
            runbook: runbook.name.clone(),
            count: items.len(),
            max: limits.max_intents,
        });
    }
    items
        .into_iter()
        .map(|d| {
            let type_name = d.type_name().to_string();
            d.try_cast::<Intent>()
                .map(|mut i| {
                    i.runbook = runbook.name.clone();
                    i
                })
                .ok_or_else(|| {
                    fail(
                        "bad_result",
                        format!(
                            "decide(ctx) must return intents built by the host API, got {type_name}"
                        ),
                        (0, 0),
                    )
                })
        })
        .collect()
}

/// The loaded runbooks, the engine they run on, and per-runbook error counts.
pub struct RunbookSet {
    engine: Engine,
    limits: Limits,
    runbooks: BTreeMap<String, Runbook>,
    errors: BTreeMap<(String, &'static str), u64>,
    /// Too-many-intents refusals already logged, see [`first_report`].
    reported: Reported,
}

/// Per runbook: the version (source hash) whose refusals were logged, and
/// the intent counts logged for it.
type Reported = BTreeMap<String, (String, BTreeSet<usize>)>;

/// Whether a refusal of runbook `name` at version `hash` for returning
/// `count` intents should be logged: only the first time for that version
/// and count. A runbook over the cap is refused every cycle it is
/// triggered, and one log line per cycle would bury everything else; a new
/// count (the estate grew) or a new version is news again. The memory is
/// bounded: counts of the current version only, each at most the engine's
/// array limit.
fn first_report(reported: &mut Reported, name: &str, hash: &str, count: usize) -> bool {
    let (version, counts) = reported
        .entry(name.to_string())
        .or_insert_with(|| (hash.to_string(), BTreeSet::new()));
    if version != hash {
        *version = hash.to_string();
        counts.clear();
    }
    counts.insert(count)
}

impl RunbookSet {
    pub fn new(limits: Limits) -> Self {
        Self {
            engine: build_engine(&limits),
            limits,
            runbooks: BTreeMap::new(),
            errors: BTreeMap::new(),
            reported: BTreeMap::new(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads `(name, source)` pairs (a ConfigMap's data, or files). Runbooks
    /// that compile replace their previous version; those that do not keep
    /// the last good one and are reported; names absent from `sources` are
    /// removed.
    pub fn load(&mut self, sources: &[(String, String)]) -> Vec<Error> {
        let mut errors = Vec::new();
        self.runbooks
            .retain(|name, _| sources.iter().any(|(n, _)| n == name));
        self.reported
            .retain(|name, _| sources.iter().any(|(n, _)| n == name));
        for (name, source) in sources {
            match compile(&self.engine, name, source) {
                Ok(mut rb) => {
                    // The same version keeps the editor it was given.
                    if let Some(old) = self.runbooks.get(name).filter(|o| o.hash == rb.hash) {
                        rb.editor = old.editor.clone();
                    }
                    self.runbooks.insert(name.clone(), rb);
                }
                Err(e) => {
                    *self.errors.entry((name.clone(), e.kind())).or_default() += 1;
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// Gives the loaded runbook `name` its editor, if it is at version
    /// `hash` (a newer version loaded meanwhile gets its own).
    pub fn set_editor(&mut self, name: &str, hash: &str, editor: Option<String>) {
        if let Some(rb) = self.runbooks.get_mut(name).filter(|r| r.hash == hash) {
            rb.editor = editor;
        }
    }

    pub fn get(&self, name: &str) -> Option<&Runbook> {
        self.runbooks.get(name)
    }

    pub fn runbooks(&self) -> impl Iterator<Item = &Runbook> {
        self.runbooks.values()
    }

    /// Evaluates a runbook by name, counting failures per runbook and kind.
    pub fn evaluate(&mut self, name: &str, ctx: &Context) -> Result<Vec<Intent>, Error> {
        let rb = self
            .runbooks
            .get(name)
            .ok_or_else(|| Error::UnknownRunbook {
                runbook: name.to_string(),
            })?;
        let out = evaluate_runbook(&self.engine, rb, ctx, &self.limits);
        let Err(e) = &out else {
            return out;
        };
        let log = match e {
            // The agent logs missing data once per runbook and episode.
            Error::EvaluateRunbook { .. } if e.kind() == "missing_data" => None,
            Error::EvaluateRunbook { .. } => Some("runbook evaluation failed"),
            Error::TooManyIntents { count, .. } => first_report(
                &mut self.reported,
                name,
                &rb.hash,
                *count,
            )
            .then_some(
                "runbook evaluation refused (logged once per runbook version and intent count, counted every time)",
            ),
            _ => return out,
        };
        *self.errors.entry((name.to_string(), e.kind())).or_default() += 1;
        if let Some(message) = log {
            tracing::warn!(
                runbook = name,
                hash = %rb.hash,
                kind = %ctx.component.kind,
                namespace = %ctx.component.namespace,
                name = %ctx.component.name,
                trigger = %ctx.trigger,
                error = %e,
                "{message}"
            );
        }
        out
    }

    /// Error counts by (runbook, error kind).
    pub fn error_counts(&self) -> &BTreeMap<(String, &'static str), u64> {
        &self.errors
    }

    /// The runbooks a batch of findings triggers, each with the component and
    /// its matching findings. A runbook `deferred` on a component (its
    /// proposal there was held back by a guard that lifts by itself, see
    /// `agent::deferred`) fires on that component's findings on its signals
    /// at any score the detector still reports: an anomaly's score falls as
    /// the series' recent scores fill with it, and the decision it called
    /// for must not be lost to a cooldown. Without such a finding it does
    /// not fire: the anomaly is over.
    pub fn triggered_by_findings(
        &self,
        findings: &[Finding],
        deferred: &BTreeSet<(String, ComponentId)>,
    ) -> Vec<(String, ComponentId, Vec<Finding>)> {
        let mut out = Vec::new();
        for rb in self.runbooks.values() {
            let Trigger::Findings(t) = &rb.meta.trigger else {
                continue;
            };
            let mut by_component: BTreeMap<&ComponentId, Vec<Finding>> = BTreeMap::new();
            for f in findings.iter().filter(|f| t.matches(f)) {
                by_component
                    .entry(&f.component)
                    .or_default()
                    .push(f.clone());
            }
            let held: BTreeSet<&ComponentId> = deferred
                .iter()
                .filter(|(runbook, _)| *runbook == rb.name)
                .map(|(_, c)| c)
                .collect();
            for f in findings.iter().filter(|f| {
                held.contains(&f.component) && t.matches_at_any_score(f) && !t.matches(f)
            }) {
                by_component
                    .entry(&f.component)
                    .or_default()
                    .push(f.clone());
            }
            for (c, fs) in by_component {
                out.push((rb.name.clone(), c.clone(), fs));
            }
        }
        out
    }

    /// Cron runbooks with an occurrence in `(last, now]`.
    pub fn due(&self, last: i64, now: i64) -> Vec<String> {
        self.runbooks
            .values()
            .filter(|rb| {
                rb.schedule()
                    .is_some_and(|s| crate::schedule::occurs_between(s, last, now))
            })
            .map(|rb| rb.name.clone())
            .collect()
    }

    /// Condition runbooks triggered by a resource of `kind`.
    pub fn triggered_by_resource(&self, kind: &str, resource: &serde_json::Value) -> Vec<String> {
        self.runbooks
            .values()
            .filter(|rb| match &rb.meta.trigger {
                Trigger::Condition {
                    kind: k,
                    condition,
                    status,
                } => k == kind && condition_holds(resource, condition, status),
                _ => false,
            })
            .map(|rb| rb.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests;
