//! Lint of a runbook against the model specs: every signal name a runbook
//! relies on must be one a model of its kind produces. A findings trigger on
//! a signal no model emits never fires, a `ctx.samples.X` of a missing signal
//! is always `()`, and a `.verify("X", ..)` on one never has data at its
//! deadline — all silently, in production. This turns those into messages.
//!
//! Pure: the runbook and the validated specs come in as values. It must not
//! read files or the cluster; `autopilot runbook check` and the agent load
//! them. The scan of the source is textual (comments skipped), so a read
//! through an alias (`let s = ctx.samples; s.x`) or a computed name is not
//! seen; such runbooks are judged by their cases only.

use std::collections::BTreeSet;

use super::runbook::{FindingTrigger, Runbook, Trigger};
use crate::detect::spec::ValidatedSpec;

/// What the models of one kind produce.
struct KindSignals {
    /// Plain signal names: findings, `ctx.samples` keys and verification values.
    signals: BTreeSet<String>,
    /// Names of multivariate findings (`a+b+c`, as `detect::estate` emits them).
    multivariate: BTreeSet<String>,
    /// Detector name per plain signal, and `gmm` per multivariate name.
    detectors: Vec<(String, &'static str)>,
}

impl KindSignals {
    fn of(kind: &str, specs: &[ValidatedSpec]) -> Option<Self> {
        let mut out = KindSignals {
            signals: BTreeSet::new(),
            multivariate: BTreeSet::new(),
            detectors: Vec::new(),
        };
        let mut found = false;
        for spec in specs.iter().filter(|s| s.kind == kind) {
            found = true;
            for s in &spec.signals {
                out.signals.insert(s.name.clone());
                out.detectors.push((s.name.clone(), s.detector.name()));
            }
            if let Some(mv) = &spec.multivariate {
                let name = mv
                    .signals
                    .iter()
                    .filter_map(|&i| spec.signals.get(i).map(|s| s.name.as_str()))
                    .collect::<Vec<_>>()
                    .join("+");
                out.detectors.push((name.clone(), "gmm"));
                out.multivariate.insert(name);
            }
        }
        found.then_some(out)
    }

    fn listed(&self) -> String {
        self.signals.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The kind whose signals a runbook sees: its trigger's, if it names one.
fn kind_of(trigger: &Trigger) -> Option<&str> {
    match trigger {
        Trigger::Findings(t) => Some(&t.kind),
        Trigger::Cron { kind, .. } => kind.as_deref(),
        Trigger::Condition { kind, .. } => Some(kind),
    }
}

/// One message per signal name the runbook relies on that no model of its
/// kind produces: trigger signals (and detectors), `ctx.samples` reads and
/// literal `.verify(..)` signals. Empty when the runbook is consistent with
/// `specs`. Runbooks without a kind (a cron trigger without `kind`) have no
/// samples and are not checked.
pub fn check_against_models(runbook: &Runbook, specs: &[ValidatedSpec]) -> Vec<String> {
    let name = &runbook.name;
    let Some(kind) = kind_of(&runbook.meta.trigger) else {
        return Vec::new();
    };
    let known = KindSignals::of(kind, specs);
    let mut problems = Vec::new();

    if let Trigger::Findings(t) = &runbook.meta.trigger {
        match &known {
            None => {
                let kinds: BTreeSet<&str> = specs.iter().map(|s| s.kind.as_str()).collect();
                problems.push(format!(
                    "{name}: trigger kind {kind} has no model spec, so no finding of it is ever produced (kinds with models: {})",
                    kinds.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            Some(k) => {
                for s in &t.signals {
                    if !k.signals.contains(s) && !k.multivariate.contains(s) {
                        problems.push(format!(
                            "{name}: trigger signal {s:?} is produced by no model of kind {kind} (it has: {})",
                            k.listed()
                        ));
                    }
                }
                // A detector filter no watched signal uses is as dead as a
                // wrong signal name.
                let watched: BTreeSet<&str> = k
                    .detectors
                    .iter()
                    .filter(|(s, _)| t.signals.is_empty() || t.signals.contains(s))
                    .map(|(_, d)| *d)
                    .collect();
                for d in &t.detectors {
                    if !watched.is_empty() && !watched.contains(d.as_str()) {
                        problems.push(format!(
                            "{name}: trigger detector {d:?} scores none of its signals of kind {kind} (they use: {})",
                            watched.iter().copied().collect::<Vec<_>>().join(", ")
                        ));
                    }
                }
                problems.extend(judged_by(name, kind, t, k));
            }
        }
    }

    let code = strip_comments(runbook.source());
    let reads = sample_reads(&code).into_iter().map(|s| (Use::Sample, s));
    let verifies = verify_signals(&code).into_iter().map(|s| (Use::Verify, s));
    let mut reported = BTreeSet::new();
    for (used, signal) in reads.chain(verifies) {
        if !reported.insert((used, signal.clone())) {
            continue;
        }
        let what = match used {
            Use::Sample => format!("ctx.samples reads {signal:?}, which"),
            Use::Verify => format!("verify signal {signal:?}"),
        };
        match &known {
            Some(k) if k.signals.contains(&signal) => {}
            Some(k) => problems.push(format!(
                "{name}: {what} is produced by no model of kind {kind} (it has: {})",
                k.listed()
            )),
            // Findings triggers already reported the missing model.
            None if matches!(runbook.meta.trigger, Trigger::Findings(_)) => {}
            None => problems.push(format!(
                "{name}: {what} is produced by no model: kind {kind} has no model spec"
            )),
        }
    }
    problems
}

/// Where the source names a signal.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Use {
    Sample,
    Verify,
}

/// `source` with `//` and (nested) `/* */` comments blanked, string and
/// character literals kept, so a commented-out read is not reported.
fn strip_comments(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |c: u8| if c == b'\n' { b'\n' } else { b' ' };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        out.extend([b' ', b' ']);
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        out.extend([b' ', b' ']);
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        out.push(blank(b[i]));
                        i += 1;
                    }
                }
            }
            q @ (b'"' | b'`' | b'\'') => {
                out.push(q);
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        out.push(b[i]);
                        i += 1;
                    }
                    out.push(b[i]);
                    i += 1;
                }
                if i < b.len() {
                    out.push(q);
                    i += 1;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII bytes were replaced, by ASCII bytes.
    String::from_utf8(out).unwrap_or_default()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// A cursor over comment-free source.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.ws();
        if self.b[self.i..].starts_with(token.as_bytes()) {
            self.i += token.len();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<&'a str> {
        self.ws();
        let start = self.i;
        while self.i < self.b.len() && is_ident(self.b[self.i]) {
            self.i += 1;
        }
        std::str::from_utf8(&self.b[start..self.i])
            .ok()
            .filter(|s| !s.is_empty())
    }

    /// A `"..."` literal without escapes (a signal name never needs them).
    fn string(&mut self) -> Option<&'a str> {
        self.ws();
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let len = self.b[start..].iter().position(|&c| c == b'"')?;
        self.i = start + len + 1;
        std::str::from_utf8(&self.b[start..start + len]).ok()
    }
}

/// Offsets where the identifier `word` starts in `code` (not inside a longer
/// identifier).
fn word_at<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    let b = code.as_bytes();
    code.match_indices(word).map(|(i, _)| i).filter(move |&i| {
        (i == 0 || !is_ident(b[i - 1])) && b.get(i + word.len()).is_none_or(|&c| !is_ident(c))
    })
}

/// Signal names read as `ctx.samples.NAME`, `ctx.samples?.NAME` or
/// `ctx.samples["NAME"]` (and `?[`), in order of appearance. Method calls on
/// the map (`ctx.samples.keys()`) are not reads of a signal.
fn sample_reads(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for start in word_at(code, "ctx") {
        let mut c = Cursor {
            b: code.as_bytes(),
            i: start + 3,
        };
        if !(c.eat(".") || c.eat("?.")) || c.ident() != Some("samples") {
            continue;
        }
        let name = if c.eat(".") || c.eat("?.") {
            c.ident().filter(|_| !c.eat("("))
        } else if c.eat("[") || c.eat("?[") {
            c.string().filter(|_| c.eat("]"))
        } else {
            None
        };
        out.extend(name.map(str::to_string));
    }
    out
}

/// A trigger's two thresholds each judge one family of findings: a
/// forecast's time to threshold (`horizon_seconds`), every other finding's
/// calibrated score (`min_score`). One set where no watched signal is of
/// its family never applies: the runbook fires on something other than
/// what its author wrote.
fn judged_by(name: &str, kind: &str, t: &FindingTrigger, k: &KindSignals) -> Vec<String> {
    let watched: Vec<(&str, &str)> = k
        .detectors
        .iter()
        .filter(|(s, d)| {
            (t.signals.is_empty() || t.signals.contains(s))
                && (t.detectors.is_empty() || t.detectors.iter().any(|x| x == d))
        })
        .map(|(s, d)| (s.as_str(), *d))
        .collect();
    if watched.is_empty() {
        return Vec::new();
    }
    let (forecasts, scored): (Vec<_>, Vec<_>) = watched.iter().partition(|(_, d)| *d == "forecast");
    let names = |v: &[&(&str, &str)]| v.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ");
    let mut problems = Vec::new();
    if t.horizon_seconds.is_some() && forecasts.is_empty() {
        problems.push(format!(
            "{name}: horizon_seconds judges forecasts only, and none of the trigger's signals of kind {kind} is one ({}): use min_score",
            names(&scored)
        ));
    }
    // A min_score meant for forecasts too (as it was before they were
    // judged by time) would let them fire at any crossing within their
    // model's horizon: say how soon, even if that is the model's horizon.
    if t.min_score > 0.0 && !forecasts.is_empty() && t.horizon_seconds.is_none() {
        problems.push(format!(
            "{name}: min_score is not applied to forecasts ({} of kind {kind}), which then fire on any crossing within their model's horizon: say how soon with horizon_seconds",
            names(&forecasts)
        ));
    }
    problems
}

/// The literal first arguments of `.verify("NAME", ..)`.
fn verify_signals(code: &str) -> Vec<String> {
    let b = code.as_bytes();
    word_at(code, "verify")
        .filter(|&i| b[..i].iter().rev().find(|c| !c.is_ascii_whitespace()) == Some(&b'.'))
        .filter_map(|i| {
            let mut c = Cursor { b, i: i + 6 };
            c.eat("(").then(|| c.string()).flatten().map(str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{api::build_engine, runbook::compile};
    use crate::detect::spec::validate_spec;

    const GATEWAY: &str = r#"
kind: PaymentGateway
group: payments.io
version: v1
plural: paymentgateways
labels: {name: gateway, namespace: namespace}
signals:
  - {name: error_rate, query: e, detector: {type: ewma}}
  - {name: latency_p99, query: l, detector: {type: ewma}}
  - {name: request_rate, query: r, detector: {type: mad}}
  - {name: saturation, query: s, detector: {type: forecast, threshold: 0.9, direction: above}}
multivariate: {signals: [request_rate, latency_p99]}
"#;

    fn specs() -> Vec<ValidatedSpec> {
        vec![validate_spec("models/gw.yaml", GATEWAY).expect("spec")]
    }

    fn lint(source: &str) -> Vec<String> {
        let engine = build_engine(&crate::decide::Limits::default());
        let rb = compile(&engine, "rb", source).expect("compiles");
        check_against_models(&rb, &specs())
    }

    fn findings(trigger: &str, decide: &str) -> String {
        format!(
            "fn runbook() {{ #{{ trigger: #{{ findings: #{{ kind: \"PaymentGateway\", {trigger} }} }} }} }}\nfn decide(ctx) {{\n{decide}\n}}\n"
        )
    }

    #[test]
    fn a_consistent_runbook_has_no_problems() {
        let src = findings(
            r#"signals: ["saturation", "latency_p99", "request_rate+latency_p99"], detectors: ["forecast", "gmm"]"#,
            r#"let s = ctx.samples.saturation;
               let l = ctx.samples?.latency_p99;
               let e = ctx.samples["error_rate"];
               let n = ctx.samples.keys();
               [scale(ctx.component, 3).verify("latency_p99", "below", 0.3, 600)]"#,
        );
        assert_eq!(lint(&src), Vec::<String>::new());
    }

    #[test]
    fn a_trigger_signal_no_model_produces_is_named_with_what_the_kind_has() {
        let got = lint(&findings(
            r#"signals: ["cpu_saturation", "latency_p99"]"#,
            "[]",
        ));
        assert_eq!(
            got,
            [
                "rb: trigger signal \"cpu_saturation\" is produced by no model of kind PaymentGateway (it has: error_rate, latency_p99, request_rate, saturation)"
            ]
        );
    }

    #[test]
    fn a_trigger_kind_without_a_model_is_a_problem() {
        let src = "fn runbook() { #{ trigger: #{ findings: #{ kind: \"Rollout\", signals: [\"x\"] } } } }\nfn decide(ctx) { let v = ctx.samples.x; [] }";
        let got = lint(src);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("rb: trigger kind Rollout has no model spec")
                && got[0].contains("kinds with models: PaymentGateway"),
            "{got:?}"
        );
    }

    #[test]
    fn a_detector_filter_none_of_the_signals_uses_is_a_problem() {
        let got = lint(&findings(
            r#"signals: ["latency_p99"], detectors: ["forecast"]"#,
            "[]",
        ));
        assert_eq!(
            got,
            [
                "rb: trigger detector \"forecast\" scores none of its signals of kind PaymentGateway (they use: ewma)"
            ]
        );
    }

    #[test]
    fn a_threshold_that_judges_none_of_the_watched_signals_is_a_problem() {
        // horizon_seconds judges forecasts; latency is an ewma.
        assert_eq!(
            lint(&findings(
                r#"signals: ["latency_p99"], min_score: 0.9, horizon_seconds: 600.0"#,
                "[]"
            )),
            [
                "rb: horizon_seconds judges forecasts only, and none of the trigger's signals of kind PaymentGateway is one (latency_p99): use min_score"
            ]
        );
        // min_score judges anomalies; saturation is a forecast, alone or
        // beside an anomaly, and needs horizon_seconds.
        let no_horizon = [
            "rb: min_score is not applied to forecasts (saturation of kind PaymentGateway), which then fire on any crossing within their model's horizon: say how soon with horizon_seconds",
        ];
        assert_eq!(
            lint(&findings(
                r#"signals: ["saturation"], min_score: 0.7"#,
                "[]"
            )),
            no_horizon
        );
        assert_eq!(
            lint(&findings(
                r#"signals: ["saturation", "latency_p99"], min_score: 0.7"#,
                "[]"
            )),
            no_horizon
        );
        // Both kinds watched, each judged by its own threshold: fine; so
        // is a detector filter that leaves only forecasts under a horizon.
        assert!(
            lint(&findings(
                r#"signals: ["saturation", "latency_p99"], min_score: 0.7, horizon_seconds: 600.0"#,
                "[]"
            ))
            .is_empty()
        );
        assert!(
            lint(&findings(
                r#"detectors: ["forecast"], horizon_seconds: 600.0"#,
                "[]"
            ))
            .is_empty()
        );
    }

    #[test]
    fn sample_reads_and_verify_signals_in_every_form_are_checked() {
        let got = lint(&findings(
            r#"signals: ["saturation"]"#,
            r#"let a = ctx.samples.cpu;
               let b = ctx . samples ?. queue;
               let c = ctx.samples["disk"];
               let d = ctx.samples?[ "cpu" ];
               let t = `${ctx.samples.threads}`;
               [scale(ctx.component, 3)
                   .verify("cpu", "below", 0.3, 600)]"#,
        ));
        let has = "(it has: error_rate, latency_p99, request_rate, saturation)";
        assert_eq!(
            got,
            [
                format!(
                    "rb: ctx.samples reads \"cpu\", which is produced by no model of kind PaymentGateway {has}"
                ),
                format!(
                    "rb: ctx.samples reads \"queue\", which is produced by no model of kind PaymentGateway {has}"
                ),
                format!(
                    "rb: ctx.samples reads \"disk\", which is produced by no model of kind PaymentGateway {has}"
                ),
                format!(
                    "rb: ctx.samples reads \"threads\", which is produced by no model of kind PaymentGateway {has}"
                ),
                format!(
                    "rb: verify signal \"cpu\" is produced by no model of kind PaymentGateway {has}"
                ),
            ]
        );
    }

    #[test]
    fn multivariate_names_are_findings_not_samples() {
        let got = lint(&findings(
            r#"signals: ["request_rate+latency_p99"]"#,
            r#"let x = ctx.samples["request_rate+latency_p99"]; []"#,
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("ctx.samples reads \"request_rate+latency_p99\""));
    }

    #[test]
    fn comments_lookalikes_and_other_maps_are_not_reads() {
        let got = lint(&findings(
            r#"signals: ["saturation"]"#,
            r#"// ctx.samples.cpu was renamed
               /* ctx.samples.old /* nested */ ctx.samples.older */
               let myctx = #{ samples: #{} };
               let a = myctx.samples.cpu;
               let b = ctx.facts.samples;
               let c = ctx.samplesx;
               let u = "http://x"; let d = ctx.samples.saturation;
               []"#,
        ));
        assert_eq!(got, Vec::<String>::new());
    }

    #[test]
    fn cron_and_condition_runbooks_are_checked_only_with_a_kind() {
        let no_kind = "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } } } }\nfn decide(ctx) { let x = ctx.samples.anything; [] }";
        assert_eq!(lint(no_kind), Vec::<String>::new());
        let cron = "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\", kind: \"PaymentGateway\" } } } }\nfn decide(ctx) { let x = ctx.samples.error_rate; let y = ctx.samples.cpu; [] }";
        let got = lint(cron);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("\"cpu\""), "{got:?}");
        // A condition on a kind without a model needs none, unless it reads samples.
        let quiet = "fn runbook() { #{ trigger: #{ condition: #{ kind: \"Rollout\", condition: \"Degraded\" } } } }\nfn decide(ctx) { [] }";
        assert_eq!(lint(quiet), Vec::<String>::new());
        let reads = "fn runbook() { #{ trigger: #{ condition: #{ kind: \"Rollout\", condition: \"Degraded\" } } } }\nfn decide(ctx) { let x = ctx.samples.x; [] }";
        assert_eq!(
            lint(reads),
            [
                "rb: ctx.samples reads \"x\", which is produced by no model: kind Rollout has no model spec"
            ]
        );
    }
}
