//! The action journal through sqlx: a SQLite file by default, PostgreSQL by
//! URL (for HA). Numbered, forward-only migrations per backend live in
//! `migrations/`. Implements [`crate::act::journal::Journal`].
//!
//! Reads and records; never talks to Kubernetes and never decides.

use sqlx::{PgPool, SqlitePool, postgres::PgPoolOptions, sqlite::SqliteConnectOptions};

use crate::act::journal::{self, Journal, JournalEntry, NewEntry, outcome};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the journal database {url} failed")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating the journal database failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl Error {
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "connect",
            Error::Migrate(_) => "migrate",
        }
    }
}

/// The journal on SQLite or PostgreSQL.
#[derive(Clone, Debug)]
pub enum SqlJournal {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same statement on whichever pool backs the journal. The SQL is
/// written once: both backends take `$n` placeholders and the same types.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match $self {
            SqlJournal::Sqlite($pool) => $body,
            SqlJournal::Postgres($pool) => $body,
        }
    };
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    at: i64,
    runbook: String,
    runbook_hash: String,
    trigger: String,
    evidence: String,
    action: String,
    action_kind: String,
    target: String,
    namespace: String,
    patch: Option<String>,
    inverse: Option<String>,
    disruptive: bool,
    mode: String,
    verdict: String,
    verdict_detail: String,
    verify: Option<String>,
    undo_of: Option<i64>,
    dry_run: Option<String>,
    outcome: Option<String>,
    outcome_detail: Option<String>,
    outcome_at: Option<i64>,
    verification: Option<String>,
    approval: Option<String>,
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.to_string()))
}

impl From<Row> for JournalEntry {
    fn from(r: Row) -> Self {
        JournalEntry {
            id: r.id,
            entry: NewEntry {
                at: r.at,
                runbook: r.runbook,
                runbook_hash: r.runbook_hash,
                trigger: r.trigger,
                evidence: json(&r.evidence),
                action: json(&r.action),
                action_kind: r.action_kind,
                target: r.target,
                namespace: r.namespace,
                patch: r.patch.as_deref().map(json),
                inverse: r.inverse.as_deref().map(json),
                disruptive: r.disruptive,
                mode: r.mode,
                verdict: r.verdict,
                verdict_detail: r.verdict_detail,
                verify: r.verify.as_deref().map(json),
                undo_of: r.undo_of,
            },
            dry_run: r.dry_run,
            outcome: r.outcome,
            outcome_detail: r.outcome_detail,
            outcome_at: r.outcome_at,
            verification: r.verification,
            approval: r.approval,
        }
    }
}

fn query_error(operation: &'static str) -> impl FnOnce(sqlx::Error) -> journal::Error {
    move |e| journal::Error {
        operation,
        reason: e.to_string(),
    }
}

const SELECT: &str = "SELECT id, at, runbook, runbook_hash, trigger, evidence, action, action_kind, target, namespace, patch, inverse, disruptive, mode, verdict, verdict_detail, verify, undo_of, dry_run, outcome, outcome_detail, outcome_at, verification, approval FROM journal";

impl SqlJournal {
    /// Opens (creating a SQLite file if needed) and migrates the journal.
    /// `postgres://` / `postgresql://` URLs select PostgreSQL; anything else
    /// is a SQLite URL or path.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let connect = |source| Error::Connect {
            url: redact(url),
            source,
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(std::time::Duration::from_secs(5))
                .connect(url)
                .await
                .map_err(connect)?;
            sqlx::migrate!("src/store/migrations/postgres")
                .run(&pool)
                .await
                .map_err(Error::Migrate)?;
            Ok(SqlJournal::Postgres(pool))
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
            let pool = SqlitePool::connect_with(options).await.map_err(connect)?;
            sqlx::migrate!("src/store/migrations/sqlite")
                .run(&pool)
                .await
                .map_err(Error::Migrate)?;
            Ok(SqlJournal::Sqlite(pool))
        }
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    async fn select(
        &self,
        operation: &'static str,
        sql: &str,
        arg: i64,
    ) -> Result<Vec<JournalEntry>, journal::Error> {
        let rows: Vec<Row> = on_pool!(self, p => sqlx::query_as(sql).bind(arg).fetch_all(p).await)
            .map_err(query_error(operation))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}://{user}:***{}", &url[..s], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn text(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().map(|v| v.to_string())
}

impl Journal for SqlJournal {
    async fn record_intent(&self, e: &NewEntry) -> Result<i64, journal::Error> {
        let sql = "INSERT INTO journal (at, runbook, runbook_hash, trigger, evidence, action, action_kind, target, namespace, patch, inverse, disruptive, mode, verdict, verdict_detail, verify, undo_of) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id";
        on_pool!(self, p => sqlx::query_scalar(sql)
            .bind(e.at)
            .bind(&e.runbook)
            .bind(&e.runbook_hash)
            .bind(&e.trigger)
            .bind(e.evidence.to_string())
            .bind(e.action.to_string())
            .bind(&e.action_kind)
            .bind(&e.target)
            .bind(&e.namespace)
            .bind(text(&e.patch))
            .bind(text(&e.inverse))
            .bind(e.disruptive)
            .bind(&e.mode)
            .bind(&e.verdict)
            .bind(&e.verdict_detail)
            .bind(text(&e.verify))
            .bind(e.undo_of)
            .fetch_one(p)
            .await)
        .map_err(query_error("record_intent"))
    }

    async fn record_dry_run(&self, id: i64, result: &str) -> Result<(), journal::Error> {
        on_pool!(self, p => sqlx::query("UPDATE journal SET dry_run = $1 WHERE id = $2").bind(result).bind(id).execute(p).await.map(|r| r.rows_affected()))
            .map(drop)
            .map_err(query_error("record_dry_run"))
    }

    async fn record_outcome(
        &self,
        id: i64,
        outcome: &str,
        detail: &str,
        at: i64,
    ) -> Result<(), journal::Error> {
        on_pool!(self, p => sqlx::query("UPDATE journal SET outcome = $1, outcome_detail = $2, outcome_at = $3 WHERE id = $4")
            .bind(outcome).bind(detail).bind(at).bind(id).execute(p).await.map(|r| r.rows_affected()))
            .map(drop)
            .map_err(query_error("record_outcome"))
    }

    async fn record_verification(&self, id: i64, result: &str) -> Result<(), journal::Error> {
        on_pool!(self, p => sqlx::query("UPDATE journal SET verification = $1 WHERE id = $2").bind(result).bind(id).execute(p).await.map(|r| r.rows_affected()))
            .map(drop)
            .map_err(query_error("record_verification"))
    }

    async fn record_approval(&self, id: i64, approval: &str) -> Result<bool, journal::Error> {
        on_pool!(self, p => sqlx::query("UPDATE journal SET approval = $1 WHERE id = $2 AND approval IS NULL").bind(approval).bind(id).execute(p).await.map(|r| r.rows_affected()))
            .map(|n| n == 1)
            .map_err(query_error("record_approval"))
    }

    async fn get(&self, id: i64) -> Result<Option<JournalEntry>, journal::Error> {
        Ok(self
            .select("get", &format!("{SELECT} WHERE id = $1"), id)
            .await?
            .into_iter()
            .next())
    }

    async fn list(&self, limit: i64, pending: bool) -> Result<Vec<JournalEntry>, journal::Error> {
        let sql = if pending {
            format!(
                "{SELECT} WHERE outcome = '{}' AND approval IS NULL ORDER BY id DESC LIMIT $1",
                outcome::RECOMMENDED
            )
        } else {
            format!("{SELECT} ORDER BY id DESC LIMIT $1")
        };
        self.select("list", &sql, limit).await
    }

    async fn since(&self, at: i64) -> Result<Vec<JournalEntry>, journal::Error> {
        self.select("since", &format!("{SELECT} WHERE at >= $1 ORDER BY id"), at)
            .await
    }

    async fn unresolved(&self) -> Result<Vec<JournalEntry>, journal::Error> {
        let sql = format!(
            "{SELECT} WHERE (outcome IS NULL OR (outcome = '{}' AND approval LIKE 'approved%')) AND id > $1 ORDER BY id",
            outcome::RECOMMENDED
        );
        self.select("unresolved", &sql, 0).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("sqlite:j.db"), "sqlite:j.db");
    }
}
