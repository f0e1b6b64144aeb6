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

/// The journal on SQLite or PostgreSQL. A PostgreSQL journal shared by
/// replicas carries the leader epoch this replica holds (0: none taken, as
/// for the CLI): see [`SqlJournal::begin_leader_epoch`].
#[derive(Clone, Debug)]
pub enum SqlJournal {
    Sqlite(SqlitePool),
    Postgres(PgPool, Epoch),
}

/// The Lease a replica leads under and the leader epoch it took there,
/// shared by the clones of its journal (`None`: no epoch taken).
pub type Epoch = std::sync::Arc<std::sync::Mutex<Option<(String, i64)>>>;

/// The key of the PostgreSQL advisory lock under which every agent on the
/// journal checks the guards and records an intent it sends at once (see
/// [`Journal::record_intent_checked`]): one key, because the global rate
/// and the cluster-wide disruption budget span every shard. The bytes of
/// `autopilt` read as a number, so that it does not collide with another
/// application's lock in the same database by chance.
pub const GUARD_LOCK_KEY: i64 = i64::from_be_bytes(*b"autopilt");

/// Runs a query macro on whichever pool backs the journal, with the name of
/// the backend. Every query is checked at compile time against its backend's
/// schema (offline data in `.sqlx/`, made by `scripts/sqlx-prepare`); the SQL
/// is written once, and ends in `-- sqlite` or `-- postgres` so each backend's
/// check has its own entry.
macro_rules! on_pool {
    ($self:expr, $m:ident!($($args:tt)*)) => {
        match $self {
            SqlJournal::Sqlite(p) => $m!(p, "sqlite", $($args)*),
            SqlJournal::Postgres(p, _) => $m!(p, "postgres", $($args)*),
        }
    };
}

/// Journal rows: every column, in [`Row`] order, then `$tail`.
macro_rules! select {
    ($pool:expr, $db:literal, $tail:literal $(, $arg:expr)*) => {
        sqlx::query_as!(
            Row,
            "SELECT id AS \"id!\", uid, at, runbook, runbook_hash, trigger, evidence, action, action_kind, target, namespace, patch, inverse, disruptive, mode, verdict, verdict_detail, verify, undo_of, dry_run, outcome, outcome_detail, outcome_at, verification, approval, runbook_editor FROM journal "
                + $tail
                + " -- "
                + $db
            $(, $arg)*
        )
        .fetch_all($pool)
        .await
    };
}

/// An UPDATE; yields the rows it changed.
macro_rules! update {
    ($pool:expr, $db:literal, $sql:literal $(, $arg:expr)*) => {
        sqlx::query!($sql + " -- " + $db $(, $arg)*)
            .execute($pool)
            .await
            .map(|r| r.rows_affected())
    };
}

/// A query of one row and one column; yields that value.
macro_rules! scalar {
    ($pool:expr, $db:literal, $sql:literal $(, $arg:expr)*) => {
        sqlx::query_scalar!($sql + " -- " + $db $(, $arg)*)
            .fetch_one($pool)
            .await
    };
}

/// The intent row; yields its id.
macro_rules! insert_intent {
    ($pool:expr, $db:literal, $e:expr) => {{
        let e: &NewEntry = $e;
        let (evidence, action) = (e.evidence.to_string(), e.action.to_string());
        let (patch, inverse, verify) = (text(&e.patch), text(&e.inverse), text(&e.verify));
        sqlx::query_scalar!(
            "INSERT INTO journal (at, runbook, runbook_hash, trigger, evidence, action, action_kind, target, namespace, patch, inverse, disruptive, mode, verdict, verdict_detail, verify, undo_of, uid, runbook_editor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING id AS \"id!\""
                + " -- "
                + $db,
            e.at,
            e.runbook,
            e.runbook_hash,
            e.trigger,
            evidence,
            action,
            e.action_kind,
            e.target,
            e.namespace,
            patch,
            inverse,
            e.disruptive,
            e.mode,
            e.verdict,
            e.verdict_detail,
            verify,
            e.undo_of,
            e.uid,
            e.runbook_editor
        )
        .fetch_one($pool)
        .await
    }};
}

/// A journal row as stored (JSON as text, for both backends).
struct Row {
    id: i64,
    uid: String,
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
    runbook_editor: Option<String>,
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or(serde_json::Value::String(s.to_string()))
}

impl From<Row> for JournalEntry {
    fn from(r: Row) -> Self {
        JournalEntry {
            id: r.id,
            entry: NewEntry {
                uid: r.uid,
                at: r.at,
                runbook: r.runbook,
                runbook_hash: r.runbook_hash,
                runbook_editor: r.runbook_editor,
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
            Ok(SqlJournal::Postgres(pool, Epoch::default()))
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

    /// A SQLite journal in memory, gone when dropped: a replay journals its
    /// decisions here so the guards count them as they count the real
    /// journal's. One connection, kept open (the database lives with it).
    pub async fn in_memory() -> Result<Self, Error> {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(SqliteConnectOptions::new().in_memory(true))
            .await
            .map_err(|source| Error::Connect {
                url: "sqlite::memory:".into(),
                source,
            })?;
        sqlx::migrate!("src/store/migrations/sqlite")
            .run(&pool)
            .await
            .map_err(Error::Migrate)?;
        Ok(SqlJournal::Sqlite(pool))
    }

    pub async fn close(&self) {
        match self {
            SqlJournal::Sqlite(p) => p.close().await,
            SqlJournal::Postgres(p, _) => p.close().await,
        }
    }

    /// Takes the next leader epoch of `lease` for `holder`, on becoming
    /// its leader and before resolving or sending anything: from then on an
    /// older leader's intents under that Lease are refused by the journal
    /// (PostgreSQL). Each shard has its own Lease, so its own epoch. Returns
    /// the epoch; `None` for SQLite, which has one replica and nothing to
    /// fence.
    pub async fn begin_leader_epoch(
        &self,
        lease: &str,
        holder: &str,
        at: i64,
    ) -> Result<Option<i64>, journal::Error> {
        let SqlJournal::Postgres(p, epoch) = self else {
            return Ok(None);
        };
        let taken = sqlx::query_scalar!(
            "INSERT INTO leader_epoch (lease, epoch, holder, at) VALUES ($1, 1, $2, $3) ON CONFLICT (lease) DO UPDATE SET epoch = leader_epoch.epoch + 1, holder = EXCLUDED.holder, at = EXCLUDED.at RETURNING epoch -- postgres",
            lease,
            holder,
            at
        )
        .fetch_one(p)
        .await
        .map_err(query_error("begin_leader_epoch"))?;
        *epoch.lock().unwrap_or_else(|e| e.into_inner()) = Some((lease.to_string(), taken));
        Ok(Some(taken))
    }
}

/// Refuses, inside transaction `tx`, unless this replica's epoch (if it
/// took one) is still its Lease's current epoch: the row is read FOR SHARE,
/// so a new leader's increment waits for this transaction.
/// Takes the guards' lock for the rest of transaction `tx`, checks this
/// shard still leads, and reads the history since `since` that the guards
/// judge on. Read committed suffices: each statement reads what the
/// previous holders of the lock committed.
async fn guarded_history(
    tx: &mut sqlx::PgConnection,
    epoch: &Epoch,
    since: i64,
    op: &'static str,
) -> Result<Vec<JournalEntry>, journal::Error> {
    sqlx::query_scalar!(
        "SELECT true AS \"locked!\" FROM pg_advisory_xact_lock($1) -- postgres",
        GUARD_LOCK_KEY
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(query_error(op))?;
    check_epoch(&mut *tx, epoch, op).await?;
    Ok(
        select!(&mut *tx, "postgres", "WHERE at >= $1 ORDER BY id", since)
            .map_err(query_error(op))?
            .into_iter()
            .map(Into::into)
            .collect(),
    )
}

async fn check_epoch(
    tx: &mut sqlx::PgConnection,
    epoch: &Epoch,
    operation: &'static str,
) -> Result<(), journal::Error> {
    let mine = epoch.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some((lease, mine)) = mine else {
        return Ok(());
    };
    let current = sqlx::query_scalar!(
        "SELECT epoch FROM leader_epoch WHERE lease = $1 FOR SHARE -- postgres",
        lease
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(query_error(operation))?;
    if current == Some(mine) {
        return Ok(());
    }
    Err(journal::Error {
        operation,
        reason: format!(
            "this replica led Lease {lease} in epoch {mine}, the journal is at {}: another replica leads now; nothing is journaled or sent",
            current.map_or("none".into(), |c| c.to_string())
        ),
    })
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
        let q = query_error("record_intent");
        match self {
            SqlJournal::Sqlite(p) => insert_intent!(p, "sqlite", e).map_err(q),
            SqlJournal::Postgres(p, epoch) => {
                let mut tx = p.begin().await.map_err(query_error("record_intent"))?;
                check_epoch(&mut tx, epoch, "record_intent").await?;
                let id = insert_intent!(&mut *tx, "postgres", e)
                    .map_err(query_error("record_intent"))?;
                tx.commit().await.map_err(q)?;
                Ok(id)
            }
        }
    }

    async fn record_intent_checked<T: Send, R: std::fmt::Display + Send>(
        &self,
        e: &NewEntry,
        since: i64,
        check: impl FnOnce(&[JournalEntry]) -> Result<T, R> + Send,
    ) -> Result<(i64, Result<T, R>), journal::Error> {
        let op = "record_intent_checked";
        match self {
            // One writer: nobody can record between the read and the insert.
            SqlJournal::Sqlite(_) => {
                let verdict = check(&self.since(since).await?);
                let id = self.record_intent(e).await?;
                if let Err(refused) = &verdict {
                    let detail = refused.to_string();
                    self.record_outcome(id, outcome::REFUSED, &detail, e.at)
                        .await?;
                }
                Ok((id, verdict))
            }
            SqlJournal::Postgres(p, epoch) => {
                let mut tx = p.begin().await.map_err(query_error(op))?;
                // Held until the commit: whoever checks next (any shard)
                // reads this intent among the history.
                let rows = guarded_history(&mut tx, epoch, since, op).await?;
                let verdict = check(&rows);
                let id = insert_intent!(&mut *tx, "postgres", e).map_err(query_error(op))?;
                if let Err(refused) = &verdict {
                    let detail = refused.to_string();
                    update!(
                        &mut *tx,
                        "postgres",
                        "UPDATE journal SET outcome = $1, outcome_detail = $2, outcome_at = $3 WHERE id = $4",
                        outcome::REFUSED,
                        detail,
                        e.at,
                        id
                    )
                    .map_err(query_error(op))?;
                }
                tx.commit().await.map_err(query_error(op))?;
                Ok((id, verdict))
            }
        }
    }

    async fn record_dry_run(&self, id: i64, result: &str) -> Result<(), journal::Error> {
        on_pool!(
            self,
            update!("UPDATE journal SET dry_run = $1 WHERE id = $2", result, id)
        )
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
        on_pool!(
            self,
            update!(
                "UPDATE journal SET outcome = $1, outcome_detail = $2, outcome_at = $3 WHERE id = $4",
                outcome,
                detail,
                at,
                id
            )
        )
        .map(drop)
        .map_err(query_error("record_outcome"))
    }

    async fn record_verification(&self, id: i64, result: &str) -> Result<(), journal::Error> {
        on_pool!(
            self,
            update!(
                "UPDATE journal SET verification = $1 WHERE id = $2",
                result,
                id
            )
        )
        .map(drop)
        .map_err(query_error("record_verification"))
    }

    async fn record_approval_checked<T: Send, R: Send>(
        &self,
        id: i64,
        approval: &str,
        at: i64,
        since: i64,
        check: impl FnOnce(&[JournalEntry]) -> Result<T, R> + Send,
    ) -> Result<Option<Result<T, R>>, journal::Error> {
        let op = "record_approval_checked";
        match self {
            // One writer: nobody can record between the read and the claim.
            SqlJournal::Sqlite(p) => {
                let verdict = check(&self.since(since).await?);
                if verdict.is_err() {
                    return Ok(Some(verdict));
                }
                let claimed = update!(
                    p,
                    "sqlite",
                    "UPDATE journal SET approval = $1, outcome_at = $2 WHERE id = $3 AND approval IS NULL",
                    approval,
                    at,
                    id
                )
                .map_err(query_error(op))?;
                Ok((claimed == 1).then_some(verdict))
            }
            SqlJournal::Postgres(p, epoch) => {
                let mut tx = p.begin().await.map_err(query_error(op))?;
                // The same lock as record_intent_checked: whoever checks
                // next (any shard) reads this claim among the history.
                let rows = guarded_history(&mut tx, epoch, since, op).await?;
                let verdict = check(&rows);
                if verdict.is_err() {
                    return Ok(Some(verdict));
                }
                let claimed = update!(
                    &mut *tx,
                    "postgres",
                    "UPDATE journal SET approval = $1, outcome_at = $2 WHERE id = $3 AND approval IS NULL",
                    approval,
                    at,
                    id
                )
                .map_err(query_error(op))?;
                tx.commit().await.map_err(query_error(op))?;
                Ok((claimed == 1).then_some(verdict))
            }
        }
    }

    async fn record_approval(&self, id: i64, approval: &str) -> Result<bool, journal::Error> {
        on_pool!(
            self,
            update!(
                "UPDATE journal SET approval = $1 WHERE id = $2 AND approval IS NULL",
                approval,
                id
            )
        )
        .map(|n| n == 1)
        .map_err(query_error("record_approval"))
    }

    async fn get(&self, id: i64) -> Result<Option<JournalEntry>, journal::Error> {
        let rows = on_pool!(self, select!("WHERE id = $1", id)).map_err(query_error("get"))?;
        Ok(rows.into_iter().next().map(Into::into))
    }

    async fn list(&self, limit: i64, pending: bool) -> Result<Vec<JournalEntry>, journal::Error> {
        let rows = if pending {
            on_pool!(
                self,
                select!(
                    "WHERE outcome = $1 AND approval IS NULL ORDER BY id DESC LIMIT $2",
                    outcome::RECOMMENDED,
                    limit
                )
            )
        } else {
            on_pool!(self, select!("ORDER BY id DESC LIMIT $1", limit))
        }
        .map_err(query_error("list"))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn since(&self, at: i64) -> Result<Vec<JournalEntry>, journal::Error> {
        let rows = on_pool!(self, select!("WHERE at >= $1 ORDER BY id", at))
            .map_err(query_error("since"))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn awaiting_verification(&self, at: i64) -> Result<Vec<JournalEntry>, journal::Error> {
        let rows = on_pool!(
            self,
            select!(
                "WHERE at >= $1 AND outcome = $2 AND verify IS NOT NULL AND verification IS NULL ORDER BY id",
                at,
                outcome::APPLIED
            )
        )
        .map_err(query_error("awaiting_verification"))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn unresolved(&self) -> Result<Vec<JournalEntry>, journal::Error> {
        let rows = on_pool!(
            self,
            select!(
                "WHERE outcome IS NULL OR (outcome = $1 AND approval LIKE 'approved%') ORDER BY id",
                outcome::RECOMMENDED
            )
        )
        .map_err(query_error("unresolved"))?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn record_runbook_version(
        &self,
        runbook: &str,
        hash: &str,
        editor: Option<&str>,
        at: i64,
    ) -> Result<Option<String>, journal::Error> {
        // The first to record a version keeps it; then read whoever that was.
        on_pool!(
            self,
            update!(
                "INSERT INTO runbook_versions (hash, runbook, editor, first_seen) VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING",
                hash,
                runbook,
                editor,
                at
            )
        )
        .map_err(query_error("record_runbook_version"))?;
        on_pool!(
            self,
            scalar!(
                "SELECT editor AS \"editor?\" FROM runbook_versions WHERE hash = $1",
                hash
            )
        )
        .map_err(query_error("record_runbook_version"))
    }

    async fn approved_count(&self, runbook_hash: &str) -> Result<i64, journal::Error> {
        on_pool!(
            self,
            scalar!(
                "SELECT COUNT(*) AS \"n!: i64\" FROM journal WHERE runbook_hash = $1 AND approval LIKE 'approved by %' AND outcome IN ($2, $3, $4)",
                runbook_hash,
                outcome::APPLIED,
                outcome::UNDONE,
                outcome::UNKNOWN
            )
        )
        .map_err(query_error("approved_count"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(target: &str, at: i64, verify: bool) -> NewEntry {
        NewEntry {
            uid: journal::new_uid(),
            at,
            target: target.into(),
            verify: verify.then(|| {
                serde_json::json!({"signal": "latency_p99", "expect": "below", "threshold": 0.3, "within_seconds": 600})
            }),
            ..NewEntry::fixture()
        }
    }

    /// Issue #16, "bound what grows": the verifier reads every cycle only
    /// the applied actions still to verify, not every row of its week
    /// (refusals and dry runs grow with the estate).
    #[tokio::test]
    async fn only_applied_unverified_actions_with_a_verify_await_verification() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite:{}", dir.path().join("j.db").display());
        let j = SqlJournal::connect(&url).await.expect("journal");
        let mut ids = BTreeMap::new();
        for (name, at, verify, outcome) in [
            ("waiting", 100, true, Some(outcome::APPLIED)),
            ("no-verify", 100, false, Some(outcome::APPLIED)),
            ("refused", 100, true, Some(outcome::REFUSED)),
            ("dry-run", 100, true, None),
            ("verified", 100, true, Some(outcome::APPLIED)),
            ("too-old", 10, true, Some(outcome::APPLIED)),
        ] {
            let id = j
                .record_intent(&entry(name, at, verify))
                .await
                .expect("intent");
            if let Some(o) = outcome {
                j.record_outcome(id, o, "", at).await.expect("outcome");
            }
            ids.insert(name, id);
        }
        j.record_verification(ids["verified"], "passed")
            .await
            .expect("verification");
        let waiting: Vec<i64> = j
            .awaiting_verification(50)
            .await
            .expect("read")
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(waiting, vec![ids["waiting"]]);
        j.close().await;
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("sqlite:j.db"), "sqlite:j.db");
    }
}
