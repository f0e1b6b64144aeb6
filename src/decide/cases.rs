//! Golden cases of a runbook (`rules/<name>.cases.yaml`): each an input
//! context and the exact actions expected, or an expected error substring.
//! A failing case carries a line diff of expected against actual.
//!
//! Pure: takes the case file's text, returns results.

use serde::Deserialize;

use super::{
    Error,
    intent::Action,
    runbook::{Context, RunbookSet},
};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    context: Context,
    expect: ExpectedSpec,
}

#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub context: Context,
    pub expect: Expected,
}

/// Exactly one of `actions` or `error`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ExpectedSpec {
    /// Exactly these actions, in order (reasons and verifications not compared).
    #[serde(default)]
    pub actions: Option<Vec<Action>>,
    /// An error whose message contains this text.
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug)]
pub enum Expected {
    Actions(Vec<Action>),
    Error(String),
}

impl ExpectedSpec {
    fn into_expected(self, case: &str) -> Result<Expected, String> {
        match (self.actions, self.error) {
            (Some(a), None) => Ok(Expected::Actions(a)),
            (None, Some(e)) => Ok(Expected::Error(e)),
            _ => Err(format!(
                "case {case:?}: expect needs exactly one of `actions` or `error`"
            )),
        }
    }
}

/// The outcome of one case.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    /// `None` when the case passed; otherwise what differed.
    pub failure: Option<String>,
}

/// Parses a case file.
pub fn parse_cases(file: &str, text: &str) -> Result<Vec<Case>, Error> {
    let fail = |reason: String| Error::ReadCases {
        file: file.to_string(),
        reason,
    };
    let specs: Vec<CaseSpec> = serde_yaml::from_str(text).map_err(|e| fail(e.to_string()))?;
    specs
        .into_iter()
        .map(|c| {
            let expect = c.expect.into_expected(&c.name).map_err(fail)?;
            Ok(Case {
                name: c.name,
                context: c.context,
                expect,
            })
        })
        .collect()
}

/// Runs every case against the loaded runbook `runbook`.
pub fn run_cases(set: &mut RunbookSet, runbook: &str, cases: &[Case]) -> Vec<CaseResult> {
    cases
        .iter()
        .map(|case| {
            let got = set.evaluate(runbook, &case.context);
            let failure = match (&case.expect, got) {
                (Expected::Actions(want), Ok(intents)) => {
                    let got: Vec<Action> = intents.into_iter().map(|i| i.action).collect();
                    (want != &got).then(|| diff(&to_yaml(want), &to_yaml(&got)))
                }
                (Expected::Actions(want), Err(e)) => {
                    Some(format!("expected {} action(s), got error: {e}", want.len()))
                }
                (Expected::Error(needle), Err(e)) => {
                    let msg = e.to_string();
                    (!msg.contains(needle.as_str()))
                        .then(|| format!("expected an error containing {needle:?}, got: {msg}"))
                }
                (Expected::Error(needle), Ok(intents)) => Some(format!(
                    "expected an error containing {needle:?}, got actions:\n{}",
                    to_yaml(&intents.into_iter().map(|i| i.action).collect::<Vec<_>>())
                )),
            };
            CaseResult {
                name: case.name.clone(),
                failure,
            }
        })
        .collect()
}

fn to_yaml(actions: &[Action]) -> String {
    serde_yaml::to_string(actions).unwrap_or_else(|e| format!("<unprintable: {e}>"))
}

/// A minimal line diff (longest common subsequence): `-` expected, `+` actual.
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::from("--- expected\n+++ actual\n"));
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_expects_exactly_one_of_actions_or_error() {
        let ctx =
            "context: {now: 0, trigger: cron, component: {kind: Cluster, namespace: p, name: c}}";
        for (expect, ok) in [
            ("{actions: []}", true),
            ("{error: boom}", true),
            ("{}", false),
            ("{actions: [], error: boom}", false),
            ("{actions: [{action: fly_to_moon}]}", false),
        ] {
            let text = format!("- name: c\n  {ctx}\n  expect: {expect}\n");
            assert_eq!(parse_cases("f.cases.yaml", &text).is_ok(), ok, "{expect}");
        }
        let err = parse_cases(
            "f.cases.yaml",
            "- name: c\n  context: {now: 0}\n  expect: {actions: []}\n",
        )
        .expect_err("incomplete context");
        assert!(err.to_string().starts_with("f.cases.yaml:"), "{err}");
    }

    #[test]
    fn a_case_can_expect_the_intent_cap_to_refuse_an_evaluation() {
        let mut set = RunbookSet::new(crate::decide::Limits::default());
        let fanout = "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } } } }\n\
            fn decide(ctx) { let out = []; for i in 0..ctx.facts.n { out.push(scale(ctx.component, 2)); } out }\n";
        assert!(set.load(&[("fanout".into(), fanout.into())]).is_empty());
        let case = |n: usize, expect: &str| {
            format!(
                "- name: {n} intents\n  context: {{now: 0, trigger: cron, component: {{kind: PaymentGateway, namespace: p, name: gw}}, facts: {{n: {n}}}}}\n  expect: {expect}\n"
            )
        };
        let text = [
            case(25, "{error: \"returned 25 intents, more than the 20\"}"),
            case(20, "{error: \"too_many_intents\"}"),
            case(25, "{actions: []}"),
        ]
        .concat();
        let cases = parse_cases("fanout.cases.yaml", &text).expect("parses");
        let results = run_cases(&mut set, "fanout", &cases);
        assert_eq!(results[0].failure, None);
        let failure = |i: usize| results[i].failure.clone().unwrap_or_default();
        assert!(
            failure(1)
                .starts_with("expected an error containing \"too_many_intents\", got actions"),
            "{}",
            failure(1)
        );
        assert!(
            failure(2).starts_with("expected 0 action(s), got error: fanout: evaluating runbook failed (too_many_intents)"),
            "{}",
            failure(2)
        );
    }

    #[test]
    fn diff_marks_changed_lines() {
        let d = diff("a\nb\nc\n", "a\nx\nc\n");
        assert!(
            d.contains("- b") && d.contains("+ x") && d.contains("  a"),
            "{d}"
        );
    }
}
