//! The runbook runtime: a sandboxed Rhai engine, the host API scripts see,
//! triggers (findings, cron, resource conditions), loading with last-good
//! retention, and the golden case files of `autopilot runbook test`.
//!
//! Pure: runbooks take a [`Context`] value and return [`Intent`] values. This
//! module never holds a client, reads files or the clock (`now` is passed in;
//! the only clock read is the wall-clock budget that stops a runaway script),
//! and never changes anything — `act` does.

pub mod api;
pub mod cases;
pub mod cycle;
pub mod intent;
pub mod lint;
pub mod runbook;

pub use api::{HOST_API, Limits, build_engine, host_api_markdown};
pub use intent::{Action, ActionKind, Expect, Intent, Mode, Verify};
pub use runbook::{Context, Meta, Runbook, RunbookSet, Trigger, compile, evaluate_runbook};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}:{line}:{column}: compiling runbook failed: {reason}{}", if hint.is_empty() { String::new() } else { format!(" (hint: {hint})") })]
    CompileRunbook {
        file: String,
        line: usize,
        column: usize,
        reason: String,
        hint: String,
    },
    #[error("{runbook}:{line}:{column}: evaluating runbook failed ({kind}): {message}")]
    EvaluateRunbook {
        runbook: String,
        kind: &'static str,
        message: String,
        line: usize,
        column: usize,
    },
    #[error(
        "{runbook}: evaluating runbook failed (too_many_intents): decide(ctx) returned {count} intents, more than the {max} one evaluation may propose; none was proposed"
    )]
    TooManyIntents {
        runbook: String,
        count: usize,
        max: usize,
    },
    #[error("no runbook named {runbook} is loaded")]
    UnknownRunbook { runbook: String },
    #[error("{file}: reading the cases failed: {reason}")]
    ReadCases { file: String, reason: String },
}

impl Error {
    /// Fixed category for metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::CompileRunbook { .. } => "compile",
            Error::EvaluateRunbook { kind, .. } => kind,
            Error::TooManyIntents { .. } => "too_many_intents",
            Error::UnknownRunbook { .. } => "unknown_runbook",
            Error::ReadCases { .. } => "read_cases",
        }
    }
}
