//! `autopilot runbook check|test|api`: compile and lint runbooks (also
//! against the model specs), run their golden cases, print the host API.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::decide::{
    Limits, RunbookSet, Trigger,
    cases::{parse_cases, run_cases},
    compile, host_api_markdown,
    lint::check_against_models,
};
use crate::{detect::spec::ValidatedSpec, observe::load_model_specs};

/// The runbooks named on the command line, or every `*.rhai` in `rules/`.
pub fn runbook_files(files: &[PathBuf], rules: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !files.is_empty() {
        return Ok(files.to_vec());
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(rules)
        .with_context(|| format!("reading {}", rules.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    out.sort();
    Ok(out)
}

/// The name a runbook is known by: its file stem.
pub fn runbook_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The golden cases next to a runbook: `x.rhai` → `x.cases.yaml`.
pub fn cases_path(path: &Path) -> PathBuf {
    path.with_extension("cases.yaml")
}

fn lint(path: &Path, trigger: &Trigger) -> Vec<String> {
    let mut warnings = Vec::new();
    if !cases_path(path).is_file() {
        warnings.push(format!(
            "no {} — every runbook ships with its cases",
            cases_path(path).display()
        ));
    }
    if let Trigger::Findings(t) = trigger {
        if !(0.0..=1.0).contains(&t.min_score) {
            warnings.push(format!("min_score {} is outside [0, 1]", t.min_score));
        }
        if let Some(h) = t.horizon_seconds.filter(|h| h.is_nan() || *h <= 0.0) {
            warnings.push(format!(
                "horizon_seconds {h} is not a positive number of seconds: no forecast fires"
            ));
        }
    }
    warnings
}

/// The model specs to lint against, or `None` (with a warning) when `models`
/// does not exist. Specs that fail to load are an error: the lint would be
/// meaningless against half of them.
fn models_for_lint(models: &Path) -> anyhow::Result<Option<Vec<ValidatedSpec>>> {
    if !models.exists() {
        println!(
            "warning: {} does not exist; runbooks were not checked against the model specs (pass --models DIR)",
            models.display()
        );
        return Ok(None);
    }
    let specs = load_model_specs(models)
        .with_context(|| format!("loading the model specs in {}", models.display()))?;
    Ok(Some(specs))
}

/// Compiles each runbook and lints it, also against the model specs in
/// `models` (signals its trigger, `ctx.samples` and verifications name must
/// exist); returns false when any failed to compile or has a lint error.
pub fn check(files: &[PathBuf], rules: &Path, models: &Path) -> anyhow::Result<bool> {
    let engine = crate::decide::build_engine(&Limits::default());
    let specs = models_for_lint(models)?;
    let mut ok = true;
    for path in runbook_files(files, rules)? {
        let source = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        match compile(&engine, &path.display().to_string(), &source) {
            Ok(rb) => {
                let errors = specs
                    .as_deref()
                    .map(|s| check_against_models(&rb, s))
                    .unwrap_or_default();
                if errors.is_empty() {
                    println!("ok   {} ({})", path.display(), rb.meta.trigger);
                }
                for w in lint(&path, &rb.meta.trigger) {
                    println!("warn {}: {w}", path.display());
                }
                for e in &errors {
                    println!("error: {e}");
                }
                ok &= errors.is_empty();
            }
            Err(e) => {
                ok = false;
                println!("FAIL {e}");
            }
        }
    }
    Ok(ok)
}

/// Runs each runbook's sibling cases; prints a diff for each failing case and
/// returns false when any failed.
pub fn test(files: &[PathBuf], rules: &Path) -> anyhow::Result<bool> {
    let mut ok = true;
    for path in runbook_files(files, rules)? {
        let name = runbook_name(&path);
        let source = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut set = RunbookSet::new(Limits::default());
        if let Some(e) = set.load(&[(name.clone(), source)]).into_iter().next() {
            ok = false;
            println!("FAIL {}: {e}", path.display());
            continue;
        }
        let cases_file = cases_path(&path);
        let text = match std::fs::read_to_string(&cases_file) {
            Ok(t) => t,
            Err(e) => {
                ok = false;
                println!("FAIL {}: {e}", cases_file.display());
                continue;
            }
        };
        let cases = match parse_cases(&cases_file.display().to_string(), &text) {
            Ok(c) => c,
            Err(e) => {
                ok = false;
                println!("FAIL {e}");
                continue;
            }
        };
        for r in run_cases(&mut set, &name, &cases) {
            match r.failure {
                None => println!("ok   {name}: {}", r.name),
                Some(diff) => {
                    ok = false;
                    println!("FAIL {name}: {}\n{diff}", r.name);
                }
            }
        }
    }
    Ok(ok)
}

pub fn api() {
    print!("{}", host_api_markdown());
}
