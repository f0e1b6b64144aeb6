//! The default runbooks in rules/: each compiles, passes its golden cases,
//! and its first proposing case, replayed against the real API server with
//! the target created from the case, yields a patch the server accepts in a
//! server-side dry run. Bad runbooks are rejected or stopped while the good
//! ones keep running. And the `autopilot runbook` subcommands' exit codes.

mod support;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use autopilot::{
    act::{
        action::kind_info,
        executor::{Executor, Metrics, Observer, Proposal},
        guard::{Observed, Policy},
        journal::{Journal, outcome},
    },
    decide::{
        Limits, Mode, RunbookSet,
        cases::{Expected, parse_cases, run_cases},
        lint::check_against_models,
    },
    store::SqlJournal,
};
use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    discovery::ApiResource,
};
use serde_json::json;

fn rules() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))
}

fn runbooks() -> Vec<(String, String, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(rules())
        .expect("rules/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .map(|p| {
            let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).expect("read"), p)
        })
        .collect();
    out.sort();
    out
}

fn cases_of(path: &Path) -> Vec<autopilot::decide::cases::Case> {
    let file = path.with_extension("cases.yaml");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    parse_cases(&file.display().to_string(), &text).expect("cases parse")
}

#[test]
fn every_default_runbook_compiles_and_passes_its_cases() {
    let all = runbooks();
    assert!(
        all.len() >= 9,
        "the default runbooks are all there: {}",
        all.len()
    );
    let mut set = RunbookSet::new(Limits::default());
    let errors = set.load(
        &all.iter()
            .map(|(n, s, _)| (n.clone(), s.clone()))
            .collect::<Vec<_>>(),
    );
    assert!(errors.is_empty(), "{errors:?}");
    for (name, _, path) in &all {
        let cases = cases_of(path);
        assert!(
            cases.len() >= 2,
            "{name}: at least a firing and a quiet case"
        );
        assert!(
            cases
                .iter()
                .any(|c| matches!(&c.expect, Expected::Actions(a) if !a.is_empty())),
            "{name}: a case that acts"
        );
        for r in run_cases(&mut set, name, &cases) {
            assert!(
                r.failure.is_none(),
                "{name}: {}\n{}",
                r.name,
                r.failure.unwrap_or_default()
            );
        }
    }
}

fn models() -> Vec<autopilot::detect::spec::ValidatedSpec> {
    autopilot::observe::load_model_specs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
        .expect("default model specs load")
}

/// A runbook waiting on a signal no model produces never fires in production,
/// and its cases would pass anyway; so the default runbooks and their golden
/// inputs must name only what the default models produce.
#[test]
fn every_default_runbook_and_its_cases_name_only_signals_the_default_models_produce() {
    let specs = models();
    let engine = autopilot::decide::build_engine(&Limits::default());
    let mut problems = Vec::new();
    for (name, source, path) in runbooks() {
        let rb = autopilot::decide::compile(&engine, &name, &source).expect("compiles");
        problems.extend(check_against_models(&rb, &specs));
        for case in cases_of(&path) {
            let ctx = &case.context;
            let Some(spec) = specs.iter().find(|s| s.kind == ctx.component.kind) else {
                continue;
            };
            let at = format!("{name}.cases.yaml: {:?}", case.name);
            for f in &ctx.findings {
                match spec.signals.iter().find(|s| s.name == f.signal) {
                    None => problems.push(format!(
                        "{at}: finding on {:?}, not a signal of {}",
                        f.signal, spec.kind
                    )),
                    Some(s) if s.detector.name() != f.detector => problems.push(format!(
                        "{at}: finding on {:?} by {:?}, but the model scores it with {:?}",
                        f.signal,
                        f.detector,
                        s.detector.name()
                    )),
                    Some(_) => {}
                }
            }
            for key in ctx.samples.keys() {
                if !spec.signals.iter().any(|s| &s.name == key) {
                    problems.push(format!(
                        "{at}: samples of {key:?}, not a signal of {}",
                        spec.kind
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn bad_runbooks_are_rejected_or_stopped_and_the_good_ones_keep_running() {
    let good = runbooks();
    let mut sources: Vec<(String, String)> = good
        .iter()
        .map(|(n, s, _)| (n.clone(), s.clone()))
        .collect();
    let head = "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } } } }\n";
    sources.push((
        "syntax".into(),
        format!("{head}fn decide(ctx) {{ let = 1; }}"),
    ));
    sources.push((
        "infinite".into(),
        format!("{head}fn decide(ctx) {{ loop {{ }} }}"),
    ));
    sources.push((
        "huge".into(),
        format!("{head}fn decide(ctx) {{ let s = \"xxxxxxxx\"; loop {{ s += s; }} }}"),
    ));
    sources.push((
        "deep".into(),
        format!("{head}fn f(n) {{ f(n + 1) }}\nfn decide(ctx) {{ f(0) }}"),
    ));
    sources.push((
        "unknown".into(),
        format!("{head}fn decide(ctx) {{ delete_database(ctx.component) }}"),
    ));
    let mut set = RunbookSet::new(Limits::default());
    let errors = set.load(&sources);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].to_string().starts_with("syntax:2:"),
        "{}",
        errors[0]
    );
    let (name, _, path) = &good[0];
    let case = cases_of(path).into_iter().next().expect("a case");
    for (bad, kind) in [
        ("infinite", "too_many_operations"),
        ("huge", "data_too_large"),
        ("deep", "call_depth"),
        ("unknown", "function_not_found"),
    ] {
        let err = set.evaluate(bad, &case.context).expect_err(bad);
        assert_eq!(err.kind(), kind, "{bad}: {err}");
        // The good runbook still evaluates after each failure.
        set.evaluate(name, &case.context)
            .expect("good runbook keeps running");
    }
    assert_eq!(set.error_counts().values().sum::<u64>(), 5);
}

#[test]
fn the_runbook_subcommands_exit_non_zero_on_failure() {
    let bin = env!("CARGO_BIN_EXE_autopilot");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let rules = rules().display().to_string();
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let (ok, out) = run(&["runbook", "check", "--rules", &rules, "--models", models]);
    assert!(ok && !out.contains("error:"), "{out}");
    let (ok, out) = run(&["runbook", "test", "--rules", &rules]);
    assert!(ok && !out.contains("FAIL"), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.rhai");
    std::fs::write(&bad, "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } } } }\nfn decide(ctx) {\n  [scale(ctx.component, ]\n}\n").expect("write");
    let (ok, out) = run(&["runbook", "check", &bad.display().to_string()]);
    assert!(!ok && out.contains("bad.rhai:3:"), "{out}");

    // A signal no model of the kind produces fails the check, naming what
    // the kind has; without a models directory that check is skipped.
    let unknown = dir.path().join("unknown-signal.rhai");
    std::fs::write(&unknown, "fn runbook() { #{ trigger: #{ findings: #{ kind: \"PaymentGateway\", signals: [\"cpu_saturation\"] } } } }\nfn decide(ctx) { let s = ctx.samples.cpu_saturation; [] }\n").expect("write");
    let unknown = unknown.display().to_string();
    let (ok, out) = run(&["runbook", "check", &unknown, "--models", models]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("error: ")
            && out.contains("trigger signal \"cpu_saturation\" is produced by no model of kind PaymentGateway (it has: error_rate, latency_p99, memory_usage, request_rate, saturation)")
            && out.contains("ctx.samples reads \"cpu_saturation\""),
        "{out}"
    );
    let nowhere = dir.path().join("no-models").display().to_string();
    let (ok, out) = run(&["runbook", "check", &unknown, "--models", &nowhere]);
    assert!(
        ok && out.contains("warning:") && out.contains("not checked against the model specs"),
        "{out}"
    );

    // A wrong expectation prints a diff.
    let rb = dir.path().join("r.rhai");
    std::fs::write(&rb, "fn runbook() { #{ trigger: #{ cron: #{ schedule: \"0 3 * * *\" } } } }\nfn decide(ctx) { [scale(ctx.component, 3)] }\n").expect("write");
    std::fs::write(dir.path().join("r.cases.yaml"), "- name: wrong\n  context: {now: 0, trigger: cron, component: {kind: PaymentGateway, namespace: p, name: g}}\n  expect:\n    actions:\n      - {action: scale_replicas, target: {kind: PaymentGateway, namespace: p, name: g}, replicas: 4}\n").expect("write");
    let (ok, out) = run(&["runbook", "test", &rb.display().to_string()]);
    assert!(
        !ok && out.contains("-   replicas: 4") && out.contains("+   replicas: 3"),
        "{out}"
    );

    let (ok, out) = run(&["runbook", "api"]);
    assert!(
        ok && out.contains("switchover(target, instance, lag_seconds)"),
        "{out}"
    );
}

/// Each default runbook, replayed on the real control plane: the target from
/// its first acting case is created, the runbook decides, and the agent in
/// recommend mode gets the patch accepted by a server-side dry run.
#[tokio::test]
async fn every_default_runbook_proposes_patches_the_api_server_accepts() {
    let cp = support::control_plane(Default::default());
    let admin = cp.client().await.expect("client");
    autopilot::act::apply_crds(&admin, &support::fixture_crds())
        .await
        .expect("fixture CRDs");
    let (client, ns) = support::client_and_namespace(cp, "runbooks").await;

    let all = runbooks();
    let mut set = RunbookSet::new(Limits::default());
    assert!(
        set.load(
            &all.iter()
                .map(|(n, s, _)| (n.clone(), s.clone()))
                .collect::<Vec<_>>()
        )
        .is_empty()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = SqlJournal::connect(&format!("sqlite:{}", dir.path().join("j.db").display()))
        .await
        .expect("journal");
    let policy = Policy {
        max_relative_change: 10.0,
        runbook_per_hour: 100,
        global_per_hour: 100,
        disruptive_per_hour: 100,
        disruptive_per_namespace_per_hour: 100,
        ..Policy::default()
    };

    for (name, _, path) in &all {
        let case = cases_of(path)
            .into_iter()
            .find(|c| matches!(&c.expect, Expected::Actions(a) if !a.is_empty()))
            .expect("an acting case");
        let mut ctx = case.context.clone();
        ctx.component.namespace = ns.clone();
        ctx.component.name = format!("{}-{}", ctx.component.name, name)
            .chars()
            .take(50)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string();
        let resource = &mut ctx.resource;
        resource["metadata"] = json!({"name": ctx.component.name, "namespace": ns});
        let k = kind_info(&ctx.component.kind).expect("known kind");
        let ar = ApiResource {
            group: k.group.clone(),
            version: k.version.clone(),
            api_version: k.api_version(),
            kind: k.kind.clone(),
            plural: k.plural.clone(),
        };
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &ar);
        let mut body = resource.clone();
        body["apiVersion"] = json!(k.api_version());
        body["kind"] = json!(k.kind);
        if body["spec"].is_null() {
            body["spec"] = json!({"instances": 3, "backup": {"barmanObjectStore": {"destinationPath": "s3://b"}}});
            resource["spec"] = body["spec"].clone();
        }
        let status = body.as_object_mut().and_then(|o| o.remove("status"));
        let obj: DynamicObject = serde_json::from_value(body).expect("object");
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{name}: creating its target: {e}"));
        if let Some(status) = status {
            api.patch_status(
                &ctx.component.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: status: {e}"));
        }
        let intents = set
            .evaluate(name, &ctx)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!intents.is_empty(), "{name} proposes on its target");
        let rb = set.get(name).expect("loaded");
        // What the agent observed is what the case's facts say it saw (the
        // switchover guard reads the observed lags, not the runbook's).
        let lags: BTreeMap<String, f64> = serde_json::from_value(
            ctx.facts
                .get("replica_lag_seconds")
                .cloned()
                .unwrap_or(json!({})),
        )
        .expect("lags");
        let ex = Executor::new(
            client.clone(),
            journal.clone(),
            Metrics::register(&prometheus::Registry::new()).expect("metrics"),
        )
        .with_mode(autopilot::decide::Mode::Auto)
        .with_observer(Observer::Fixed(Observed {
            replica_lag_seconds: [(ctx.component.clone(), lags)].into(),
        }));
        // The agent in recommend mode: validated by the API server, nothing changed.
        let proposals: Vec<Proposal> = intents
            .into_iter()
            .map(|i| Proposal::from_runbook(rb, i, Mode::Recommend, "finding", json!(ctx.findings)))
            .collect();
        for out in ex
            .run_batch(&proposals, &policy, ctx.now)
            .await
            .expect("batch")
        {
            let row = ex.journal().get(out.id).await.expect("get").expect("row");
            assert_eq!(
                out.outcome,
                outcome::RECOMMENDED,
                "{name}: {} / {:?}",
                out.detail,
                row.dry_run
            );
            assert_eq!(row.dry_run.as_deref(), Some("ok"), "{name}");
            assert_eq!(row.entry.runbook_hash, rb.hash);
        }
    }
}

#[test]
fn a_runbook_pinned_to_recommend_never_acts_in_auto() {
    // The default cnpg-max-connections acts in auto (its restart is left to
    // the guards); a team that wants each one approved pins it, as here.
    let path = rules().join("cnpg-max-connections.rhai");
    let source = std::fs::read_to_string(&path).expect("read");
    let trigger = "horizon_seconds: 1800.0 } } }";
    assert!(source.contains(trigger), "the runbook's trigger changed");
    let pinned = source.replace(
        trigger,
        "horizon_seconds: 1800.0 } }, mode: \"recommend\" }",
    );
    let mut set = RunbookSet::new(Limits::default());
    assert!(
        set.load(&[("cnpg-max-connections".to_string(), pinned)])
            .is_empty()
    );
    let rb = set.get("cnpg-max-connections").expect("pinned runbook");
    assert_eq!(rb.meta.mode, Some(Mode::Recommend));
    let case = cases_of(&path).into_iter().next().expect("case");
    let intents = set
        .evaluate("cnpg-max-connections", &case.context)
        .expect("evaluates");
    let rb = set.get("cnpg-max-connections").expect("pinned runbook");
    let p = Proposal::from_runbook(rb, intents[0].clone(), Mode::Auto, "finding", json!([]));
    assert_eq!(p.mode, Mode::Recommend);
    let p = Proposal::from_runbook(rb, intents[0].clone(), Mode::DryRun, "finding", json!([]));
    assert_eq!(p.mode, Mode::DryRun, "a pin never raises the agent's mode");
}

/// `autopilot runbook check | head -0`: a report whose reader has gone ends
/// the command quietly (SIGPIPE, as for other Unix tools), not with a panic
/// and its backtrace.
#[test]
fn a_report_whose_reader_has_gone_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let rules = rules().display().to_string();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["runbook", "check", "--rules", &rules, "--models", models])
        .env("RUST_BACKTRACE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    // Close the reading end before the command has printed anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    // 13: SIGPIPE.
    assert_eq!(out.status.signal(), Some(13), "{:?}\n{err}", out.status);
}
