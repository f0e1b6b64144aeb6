//! `autopilot actions list|show|approve|reject|undo`: review the journal.
//! Approve and reject create an Approval as the caller (their own
//! credentials; the agent applies it). Undo writes to the cluster through
//! `act`'s executor, so it leaves the same journal row, Event and counter as
//! the agent's own actions, naming the caller as the API server knows them.

use anyhow::Context;

use super::{ActionsCommand, DatabaseArgs, GateArgs, ReviewArgs};
use crate::{
    act::{
        executor::{ClusterPolicy, Executor, Metrics, Observer, fetch_policy},
        journal::{Journal, JournalEntry},
    },
    crd::approval::{Approval, Decision, Recommendation, digest, phase},
    observe::Prometheus,
    scope::Scope,
    store::SqlJournal,
};

async fn journal(db: &DatabaseArgs) -> anyhow::Result<SqlJournal> {
    SqlJournal::connect(&db.database_url)
        .await
        .context("opening the journal")
}

/// A journal entry as `actions show` prints it: its times (`at`,
/// `outcome_at`) in RFC 3339 rather than epoch seconds.
fn for_people(e: &crate::act::journal::JournalEntry) -> anyhow::Result<serde_json::Value> {
    let mut v = serde_json::to_value(e)?;
    for key in ["at", "outcome_at"] {
        if let Some(at) = v[key].as_i64() {
            v[key] = serde_json::Value::String(time(at));
        }
    }
    Ok(v)
}

fn time(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| at.to_string())
}

/// One line per entry, for `actions list`.
pub fn format_row(e: &JournalEntry) -> String {
    format!(
        "{:>6}  {:<26}  {}  {:<9}  {:<24}  {:<20}  {:<24}  {:<48}  {:<12}  {:<11}  {}",
        e.id,
        e.entry.uid,
        time(e.entry.at),
        e.entry.mode,
        e.entry.runbook,
        e.entry.runbook_editor.as_deref().unwrap_or("-"),
        e.entry.action_kind,
        e.entry.target,
        e.entry.verdict,
        e.outcome.as_deref().unwrap_or("in-flight"),
        e.approval.as_deref().unwrap_or(""),
    )
}

async fn executor(db: &DatabaseArgs) -> anyhow::Result<Executor<SqlJournal>> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (kubeconfig or in-cluster)")?;
    let metrics = Metrics::register(&prometheus::Registry::new())?;
    Ok(Executor::new(client, journal(db).await?, metrics))
}

/// The executor and the policy a person's write is judged against: the
/// agent's mode, scope and observations, and its policy, read for the send
/// (and checked once first, so a missing policy is a clear error).
async fn gated(
    db: &DatabaseArgs,
    gate: &GateArgs,
) -> anyhow::Result<(Executor<SqlJournal>, ClusterPolicy)> {
    let observer = match &gate.prometheus_url {
        Some(url) => Observer::Prometheus(
            Prometheus::new(url, std::time::Duration::from_secs(10)).context("--prometheus-url")?,
        ),
        None => Observer::Nothing,
    };
    let ex = executor(db)
        .await?
        .with_mode(gate.agent_mode)
        .with_scope(Scope::namespaces(gate.namespaces.clone()))
        .with_observer(observer);
    fetch_policy(ex.client(), &gate.policy_namespace).await?;
    let policy = ClusterPolicy {
        client: ex.client().clone(),
        namespace: gate.policy_namespace.clone(),
    };
    Ok((ex, policy))
}

pub async fn run(cmd: ActionsCommand) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp();
    match cmd {
        ActionsCommand::List { db, limit, pending } => {
            let rows = journal(&db).await?.list(limit, pending).await?;
            println!(
                "{:>6}  {:<26}  {:<20}  {:<9}  {:<24}  {:<20}  {:<24}  {:<48}  {:<12}  {:<11}  APPROVAL",
                "ID",
                "ACTION ID",
                "TIME",
                "MODE",
                "RUNBOOK",
                "EDITOR",
                "ACTION",
                "TARGET",
                "VERDICT",
                "OUTCOME"
            );
            for e in &rows {
                println!("{}", format_row(e));
            }
        }
        ActionsCommand::Show { db, id } => {
            let e = journal(&db)
                .await?
                .get(id)
                .await?
                .with_context(|| format!("no journal entry {id}"))?;
            print!("{}", serde_yaml::to_string(&for_people(&e)?)?);
        }
        ActionsCommand::Approve(args) => review(args, Decision::Approve).await?,
        ActionsCommand::Reject(args) => review(args, Decision::Reject).await?,
        ActionsCommand::Undo { db, id, gate } => {
            let (ex, policy) = gated(&db, &gate).await?;
            let by = crate::act::whoami(ex.client())
                .await
                .context("asking the API server who you are (SelfSubjectReview)")?;
            let done = ex.undo(id, &by, &policy, now).await?;
            println!(
                "#{} (undo of #{id}): {} — {}",
                done.id, done.outcome, done.detail
            );
        }
    }
    Ok(())
}

/// Whether a Recommendation's content is what its digest says: the change,
/// the inverse, the runbook version and the target object it was made for.
pub fn content_matches_digest(rec: &Recommendation) -> bool {
    let s = &rec.spec;
    digest(
        &s.target.uid,
        &s.change,
        s.inverse.as_ref(),
        &s.runbook_hash,
    ) == s.digest
}

/// `actions approve|reject`: checks the Recommendation, then creates an
/// Approval as the caller and, with --wait-seconds, waits for the agent's
/// result.
async fn review(args: ReviewArgs, decision: Decision) -> anyhow::Result<()> {
    use kube::{
        Api, ResourceExt,
        api::{WatchEvent, WatchParams},
    };
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (kubeconfig or in-cluster)")?;
    let me = crate::act::whoami(&client)
        .await
        .context("asking the API server who you are (SelfSubjectReview)")?;
    anyhow::ensure!(
        !me.is_empty(),
        "the API server gave no user name for your credentials"
    );
    let ns = &args.namespace;
    let rec = Api::<Recommendation>::namespaced(client.clone(), ns)
        .get_opt(&args.name)
        .await
        .with_context(|| format!("reading Recommendation {ns}/{}", args.name))?
        .with_context(|| {
            format!(
                "no Recommendation {ns}/{} (kubectl get recommendations -n {ns})",
                args.name
            )
        })?;
    anyhow::ensure!(
        content_matches_digest(&rec),
        "Recommendation {ns}/{} does not match its own digest: its content is not what the agent recommended; do not approve it",
        args.name
    );
    let state = rec.status.as_ref().map(|s| s.phase.as_str()).unwrap_or("");
    anyhow::ensure!(
        state == phase::PENDING,
        "Recommendation {ns}/{} is {}, not pending",
        args.name,
        if state.is_empty() {
            "not yet published"
        } else {
            state
        }
    );
    let s = &rec.spec;
    println!(
        "{} by runbook {} ({}) on {} {}/{}\n  reason: {}\n  change: {}\n  inverse: {}\n  digest: {}",
        s.action,
        s.runbook,
        &s.runbook_hash[..s.runbook_hash.len().min(12)],
        s.target.kind,
        ns,
        s.target.name,
        s.reason,
        s.change,
        s.inverse
            .as_ref()
            .map_or("none (cannot be undone)".to_string(), |v| v.to_string()),
        s.digest,
    );
    let created = crate::act::executor::submit_approval(
        &client,
        ns,
        &args.name,
        &s.digest,
        &me,
        decision,
        &args.reason,
    )
    .await
    .with_context(|| {
        format!("creating an Approval in {ns} as {me} (RBAC: create approvals.payments.io there)")
    })?;
    let api = Api::<Approval>::namespaced(client, ns);
    let name = created.name_any();
    println!("Approval {ns}/{name} created by {me} ({decision:?})");
    if args.wait_seconds == 0 {
        println!("the agent applies it on its next cycle: kubectl get approval -n {ns} {name}");
        return Ok(());
    }
    let wp = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(args.wait_seconds.min(290) as u32);
    let mut stream = std::pin::pin!(api.watch(&wp, "0").await?);
    use futures::StreamExt;
    while let Some(event) = stream.next().await {
        if let WatchEvent::Added(a) | WatchEvent::Modified(a) = event? {
            if let Some(st) = a.status.filter(|st| !st.result.is_empty()) {
                println!("{}: {}", st.result, st.message);
                anyhow::ensure!(st.result != "Refused", "the agent refused the Approval");
                return Ok(());
            }
        }
    }
    println!(
        "no result after {}s; kubectl get approval -n {ns} {name}",
        args.wait_seconds
    );
    Ok(())
}
