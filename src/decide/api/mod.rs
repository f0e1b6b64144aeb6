//! The sandboxed Rhai engine and the host API runbooks see.
//!
//! Every host function returns a value: an [`Intent`] (a proposal, never an
//! effect) or a plain number or string. Nothing here reaches the network, the
//! file system, the cluster or the clock; the only clock read is the
//! wall-clock budget enforced in the progress callback, which stops a script,
//! never informs it.
//!
//! Layout: this file builds the engine and renders the reference; `host`
//! is the one list of host functions (documentation, produced action kind
//! and registration together); `args` the argument checks they share.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use rhai::{Dynamic, Engine};

use super::intent::{ActionKind, Intent};

mod args;
mod host;

pub use args::{format_pg_bytes, parse_pg_bytes};
pub use host::HOST_API;

/// Resource limits of one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    /// Wall-clock budget of one evaluation.
    pub budget: Duration,
    /// Most intents one evaluation may return. Each intent is guarded and
    /// journaled every cycle, so a runbook proposing more (a loop over a
    /// large estate) is refused as a whole: none of its intents reaches the
    /// executor.
    pub max_intents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_operations: 500_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            budget: Duration::from_millis(250),
            max_intents: 20,
        }
    }
}

thread_local! {
    /// Deadline of the evaluation running on this thread (set around each call).
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The message a script stopped by its time budget reports.
pub const TIME_BUDGET_EXCEEDED: &str = "time budget exceeded";

/// Runs `f` with the wall-clock deadline `budget` from now armed for the
/// progress callback of engines built by [`build_engine`].
pub(crate) fn with_budget<T>(budget: Duration, f: impl FnOnce() -> T) -> T {
    let previous = DEADLINE.replace(Some(Instant::now() + budget));
    let out = f();
    DEADLINE.set(previous);
    out
}

/// A sandboxed engine with the host API registered: operation, call-depth,
/// expression-depth, string and collection limits; no `eval`; no module
/// imports; `print`/`debug` discarded; undefined variables rejected at compile
/// time.
pub fn build_engine(limits: &Limits) -> Engine {
    // Engine::new() minus the time package (scripts get `now` from the
    // context, never from the clock) and minus the file module resolver.
    let mut engine = Engine::new_raw();
    engine.set_max_strings_interned(1024);
    {
        use rhai::packages::{
            BasicArrayPackage, BasicBlobPackage, BasicMapPackage, BasicMathPackage,
            BitFieldPackage, CorePackage, LogicPackage, MoreStringPackage, Package,
        };
        for module in [
            CorePackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicBlobPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(module);
        }
    }
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth / 2);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.set_max_modules(0);
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.disable_symbol("eval");
    engine.set_strict_variables(true);
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine.on_progress(|ops| {
        // Reading the clock on every operation would dominate small scripts.
        if ops % 1024 != 0 {
            return None;
        }
        match DEADLINE.get() {
            Some(deadline) if Instant::now() > deadline => Some(TIME_BUDGET_EXCEEDED.into()),
            _ => None,
        }
    });
    register(&mut engine);
    engine
}

/// Registers the `Intent` type and every host function of [`HOST_API`].
fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Intent>("Intent");
    engine.register_fn("to_string", |i: &mut Intent| {
        serde_json::to_string(i).unwrap_or_default()
    });
    engine.register_get("action", |i: &mut Intent| i.action.name().to_string());
    for f in HOST_API {
        (f.register)(engine);
    }
}

/// One host function: its documentation, what it proposes and its
/// registration. `example` is a complete expression whose JSON value (an
/// intent, number or string) must equal `returns`.
pub struct HostFn {
    pub signature: &'static str,
    pub description: &'static str,
    pub example: &'static str,
    pub returns: &'static str,
    /// The action kind of the intent it builds; `None` for functions that
    /// modify an intent or compute a value.
    pub produces: Option<ActionKind>,
    /// Registers the function (all its overloads) on the engine.
    pub register: fn(&mut Engine),
}

/// The host API as Markdown (for `autopilot runbook api`).
pub fn host_api_markdown() -> String {
    let mut out = String::from(
        "# Runbook host API\n\n\
Generated by `autopilot runbook api`; a unit test keeps this file in step and runs every example.\n\n\
A runbook defines `fn runbook()` (its trigger: `findings`, `cron` or `condition`, and an optional \
`mode` pin) and `fn decide(ctx)`, which returns an array of intents built with the functions below. \
`ctx` is read-only: `now` (unix seconds), `trigger`, `component` (`#{kind, namespace, name}`, usable \
as a target), `findings`, `samples` (signal → recent values, oldest first; a value that was NaN or missing is `()`, no data), `resource` (the target as read: \
metadata, spec, status) and `facts` (for a CloudNativePG `Cluster`: `last_backup_completed_at` \
(unix seconds), `last_backup_phase` (`completed` or `failed`) and `replica_lag_seconds` (pod → \
seconds); a fact that could not be read is absent, so `require` it). Scripts run under operation, \
call-depth, expression-depth, \
string, array and map limits and a wall-clock budget; `eval` and imports are unavailable. ",
    );
    out.push_str(&format!(
        "One evaluation may return at most {} intents: a runbook that returns more is refused as a whole \
(none of its intents is proposed) and the error names the runbook and the count.\n\n",
        Limits::default().max_intents
    ));
    out.push_str(
        "A `findings` trigger judges each family of findings by its own threshold, so one number \
never reads two ways. **Anomalies** fire when their `score` is at least `min_score`. The score of \
every detector that judges a sample against a baseline (`ewma`, `mad`, `seasonal`, `cusum`, and \
the multivariate `gmm`) is calibrated per series: `min_score: t` (0.5 or more) means the sample \
is past the detector's own `limit` in its model spec (5σ, a CUSUM of 8, …) *and* higher than a \
share `t` of that series' latest 256 raw scores (at most a day back: about an hour at a 15 s \
cycle, two at 30 s), so `0.9` reads \"past the limit, and rarer than 90% of this series' recent \
samples\" for every one of them. A series that never gets past its limit never fires, whatever \
`min_score`; one that does fires on at most a share `1 − t` of its samples. How strong a departure \
must be is the model's `limit`; how unusual on this series, `min_score`. With few scores behind it \
(a series just started), a score cannot exceed `1 − 1/(n+1)` unless the sample is beyond every one \
of the `n`, so a high `min_score` waits for history. **Forecasts** (`detector == \"forecast\"`, \
with `time_to_threshold_seconds`) are not judged by `min_score`: they fire when the threshold is \
expected to be crossed within the trigger's `horizon_seconds`, or, without it, within the model's \
own horizon (every forecast finding). Their `score` still orders them (0.5 at the model's \
horizon, higher sooner) but is not a rarity: a forecast says when, and how often the series said \
so before does not make it more or less urgent. `autopilot runbook check` refuses a trigger whose \
`horizon_seconds` watches no forecast, or whose `min_score` watches a forecast without a `horizon_seconds` beside it.\n\n",
    );
    out.push_str(
        "A runbook whose proposal on a component is refused because another runbook holds the \
target (a `conflict` with that runbook's action in the same cycle, or that runbook's `cooldown`) is \
deferred: it fires again on that component's findings on its signals at any score the detector \
still reports (0.5 and up, `min_score` and `horizon_seconds` aside) until its proposal goes through or is refused for \
another reason, the findings clear, or an hour passes. Two runbooks on one Cluster at the same \
onset (a switchover and a `work_mem` change) therefore both decide, one after the other. \
`ctx.findings` then holds those findings as they are now, so a runbook computes its target from \
current values. A runbook held back by its own earlier action's cooldown is not deferred.\n\n",
    );
    for f in HOST_API {
        out.push_str(&format!(
            "## `{}`\n\n{}\n\n```rhai\n{}\n```\nreturns `{}`\n\n",
            f.signature, f.description, f.example, f.returns
        ));
    }
    out
}

/// A script value as JSON (intents through their serde form).
pub fn dynamic_to_json(v: &Dynamic) -> Result<serde_json::Value, String> {
    if let Some(i) = v.clone().try_cast::<Intent>() {
        return serde_json::to_value(i).map_err(|e| e.to_string());
    }
    rhai::serde::from_dynamic(v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
