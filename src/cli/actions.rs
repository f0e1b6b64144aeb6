//! `autopilot actions list|show|approve|reject|undo`: review the journal.
//! Approve and undo write to the cluster through `act`'s executor, so they
//! leave the same journal row, Event and counter as the agent's own actions.

use anyhow::Context;

use super::{ActionsCommand, DatabaseArgs, GateArgs};
use crate::{
    act::{
        executor::{ClusterPolicy, Executor, Metrics, Observer, fetch_policy},
        journal::{Journal, JournalEntry},
    },
    observe::Prometheus,
    scope::Scope,
    store::SqlJournal,
};

async fn journal(db: &DatabaseArgs) -> anyhow::Result<SqlJournal> {
    SqlJournal::connect(&db.database_url)
        .await
        .context("opening the journal")
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
            print!("{}", serde_yaml::to_string(&e)?);
        }
        ActionsCommand::Approve { db, id, by, gate } => {
            let (ex, policy) = gated(&db, &gate).await?;
            let done = ex.approve(id, &by, &policy, now).await?;
            println!("#{id}: {} — {}", done.outcome, done.detail);
        }
        ActionsCommand::Reject { db, id, by } => {
            let done = executor(&db).await?.reject(id, &by, now).await?;
            println!("#{id}: {} — {}", done.outcome, done.detail);
        }
        ActionsCommand::Undo { db, id, by, gate } => {
            let (ex, policy) = gated(&db, &gate).await?;
            let done = ex.undo(id, &by, &policy, now).await?;
            println!(
                "#{} (undo of #{id}): {} — {}",
                done.id, done.outcome, done.detail
            );
        }
    }
    Ok(())
}
