//! The journal suite, run against a fresh SQLite file and against a real
//! PostgreSQL server (started by `autopilot::testenv::postgres`, skipped
//! with a printed reason only when the PostgreSQL binaries are absent).

use std::sync::OnceLock;

use autopilot::{
    act::journal::{Journal, NewEntry, outcome},
    store::SqlJournal,
    testenv::postgres::Postgres,
};
use serde_json::json;

static PG: OnceLock<Result<Postgres, String>> = OnceLock::new();

/// A fresh PostgreSQL database on this binary's server, or `None` (with the
/// reason printed) when PostgreSQL is not installed.
async fn postgres_url(test: &str) -> Option<String> {
    if let Err(e) = Postgres::binaries() {
        eprintln!("SKIPPED {test} on PostgreSQL: {e} (scripts/install-deps installs postgresql)");
        return None;
    }
    let server = PG.get_or_init(|| Postgres::start().map_err(|e| e.to_string()));
    let server = match server {
        Ok(s) => s,
        Err(e) => panic!("PostgreSQL did not start: {e}"),
    };
    let db = format!("j_{}_{}", test, std::process::id());
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&server.url("postgres"))
        .await
        .expect("connect as admin");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    Some(server.url(&db))
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite:{}", dir.path().join("journal.db").display())
}

fn entry(at: i64, mode: &str, verdict: &str) -> NewEntry {
    NewEntry {
        uid: autopilot::act::journal::new_uid(),
        at,
        runbook: "autoscale-gateway".into(),
        runbook_hash: "ab".repeat(32),
        // Kept as written, so the round trip proves the column.
        runbook_editor: Some("alice@example.com".into()),
        trigger: "finding".into(),
        evidence: json!([{"signal": "cpu_saturation", "score": 0.93}]),
        action: json!({"action": "scale_replicas", "replicas": 5}),
        action_kind: "scale_replicas".into(),
        target: "PaymentGateway/payments/gw".into(),
        namespace: "payments".into(),
        patch: Some(json!({"type": "merge", "patch": {"spec": {"replicas": 5}}})),
        inverse: Some(json!({"type": "merge", "patch": {"spec": {"replicas": 3}}})),
        disruptive: false,
        mode: mode.into(),
        verdict: verdict.into(),
        verdict_detail: String::new(),
        verify: Some(
            json!({"signal": "latency_p99", "expect": "below", "threshold": 0.3, "within_seconds": 600}),
        ),
        undo_of: None,
    }
}

async fn round_trip(j: &SqlJournal) {
    let e = entry(1000, "auto", "allowed");
    let id = j.record_intent(&e).await.expect("record intent");
    let got = j.get(id).await.expect("get").expect("present");
    assert_eq!(got.entry, e);
    assert_eq!(got.outcome, None);
    j.record_dry_run(id, "ok").await.expect("dry run");
    j.record_outcome(id, outcome::APPLIED, "resourceVersion 42", 1001)
        .await
        .expect("outcome");
    j.record_verification(id, "passed: latency_p99 0.2 < 0.3")
        .await
        .expect("verification");
    let got = j.get(id).await.expect("get").expect("present");
    assert_eq!(got.dry_run.as_deref(), Some("ok"));
    assert_eq!(got.outcome.as_deref(), Some(outcome::APPLIED));
    assert_eq!(got.outcome_at, Some(1001));
    assert!(
        got.verification
            .as_deref()
            .is_some_and(|v| v.starts_with("passed"))
    );
    assert!(j.get(id + 1000).await.expect("get").is_none());
}

async fn unresolved_and_approvals(j: &SqlJournal) {
    let in_flight = j
        .record_intent(&entry(2000, "auto", "allowed"))
        .await
        .expect("r");
    let done = j
        .record_intent(&entry(2001, "auto", "allowed"))
        .await
        .expect("r");
    j.record_outcome(done, outcome::APPLIED, "", 2002)
        .await
        .expect("o");
    let refused = j
        .record_intent(&entry(2003, "auto", "cooldown"))
        .await
        .expect("r");
    j.record_outcome(refused, outcome::REFUSED, "cooldown", 2003)
        .await
        .expect("o");
    let rec = j
        .record_intent(&entry(2004, "recommend", "allowed"))
        .await
        .expect("r");
    j.record_outcome(rec, outcome::RECOMMENDED, "", 2004)
        .await
        .expect("o");
    let dry = j
        .record_intent(&entry(2005, "dry-run", "allowed"))
        .await
        .expect("r");
    j.record_outcome(dry, outcome::DRY_RUN, "", 2005)
        .await
        .expect("o");

    let ids = |v: Vec<autopilot::act::journal::JournalEntry>| {
        v.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(j.unresolved().await.expect("u")), [in_flight]);
    assert_eq!(ids(j.list(10, true).await.expect("pending")), [rec]);

    assert!(
        j.record_approval(rec, "approved by alice")
            .await
            .expect("approve")
    );
    assert!(
        !j.record_approval(rec, "rejected by bob")
            .await
            .expect("second"),
        "first decision wins"
    );
    assert_eq!(
        ids(j.unresolved().await.expect("u")),
        [in_flight, rec],
        "approved but not applied yet"
    );
    assert!(j.list(10, true).await.expect("pending").is_empty());

    let all = j.list(3, false).await.expect("list");
    assert_eq!(ids(all), [dry, rec, refused], "newest first, limited");
    assert_eq!(j.since(2003).await.expect("since").len(), 3);
}

/// The editor of a runbook version is its first: recording the same
/// source again (a restart, another runbook of the ConfigMap edited) with
/// another editor, or with none, does not change it; a new version gets
/// its own.
async fn runbook_versions(j: &SqlJournal) {
    let v1 = "11".repeat(32);
    let v2 = "22".repeat(32);
    let v3 = "33".repeat(32);
    let record = |hash: String, editor: Option<&'static str>, at: i64| async move {
        j.record_runbook_version("autoscale-gateway", &hash, editor, at)
            .await
            .expect("record runbook version")
    };
    assert_eq!(
        record(v1.clone(), Some("alice"), 10).await.as_deref(),
        Some("alice")
    );
    assert_eq!(
        record(v1.clone(), Some("mallory"), 20).await.as_deref(),
        Some("alice"),
        "the first editor of a version stays"
    );
    assert_eq!(record(v1.clone(), None, 30).await.as_deref(), Some("alice"));
    assert_eq!(
        record(v2.clone(), Some("bob"), 40).await.as_deref(),
        Some("bob")
    );
    assert_eq!(
        record(v3.clone(), None, 50).await,
        None,
        "an unknown editor"
    );
    assert_eq!(
        record(v3, Some("carol"), 60).await,
        None,
        "nor does an unknown editor become known later"
    );
}

/// Only actions of that version a person approved and that were applied
/// count toward trusting it.
async fn approved_counts(j: &SqlJournal) {
    let hash = "ab".repeat(32);
    assert_eq!(j.approved_count(&hash).await.expect("count"), 0);
    for (approval, out) in [
        (Some("approved by alice"), outcome::APPLIED),
        (Some("approved by bob"), outcome::UNDONE),
        (Some("approved by carol"), outcome::UNKNOWN),
        (Some("approved by dave"), outcome::FAILED),
        (Some("rejected by erin"), outcome::REJECTED),
        (Some("superseded by recommendation 9"), outcome::ABANDONED),
        (None, outcome::APPLIED),
        (None, outcome::RECOMMENDED),
    ] {
        let id = j
            .record_intent(&entry(4000, "recommend", "allowed"))
            .await
            .expect("r");
        if let Some(a) = approval {
            assert!(j.record_approval(id, a).await.expect("approval"));
        }
        j.record_outcome(id, out, "", 4001).await.expect("o");
    }
    assert_eq!(
        j.approved_count(&hash).await.expect("count"),
        3,
        "alice's, bob's and carol's"
    );
    // Another version's approvals are its own.
    let mut other = entry(4002, "recommend", "allowed");
    other.runbook_hash = "cd".repeat(32);
    let id = j.record_intent(&other).await.expect("r");
    assert!(j.record_approval(id, "approved by alice").await.expect("a"));
    j.record_outcome(id, outcome::APPLIED, "", 4003)
        .await
        .expect("o");
    assert_eq!(j.approved_count(&hash).await.expect("count"), 3);
    assert_eq!(j.approved_count(&"cd".repeat(32)).await.expect("count"), 1);
}

async fn survives_reopen(url: &str) {
    let j = SqlJournal::connect(url).await.expect("connect");
    let id = j
        .record_intent(&entry(3000, "auto", "allowed"))
        .await
        .expect("r");
    let version = "99".repeat(32);
    j.record_runbook_version("scale", &version, Some("alice"), 3000)
        .await
        .expect("record version");
    j.close().await;
    // A new process: migrations run again (no-op), the in-flight intent is there.
    let j = SqlJournal::connect(url).await.expect("reconnect");
    let unresolved = j.unresolved().await.expect("u");
    assert!(
        unresolved.iter().any(|e| e.id == id),
        "in-flight intent survives"
    );
    assert_eq!(
        j.record_runbook_version("scale", &version, Some("mallory"), 3001)
            .await
            .expect("record version")
            .as_deref(),
        Some("alice"),
        "who made a version survives a restart"
    );
    j.close().await;
}

#[tokio::test]
async fn sqlite_journal_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(&dir);
    let j = SqlJournal::connect(&url).await.expect("connect");
    round_trip(&j).await;
    let dir2 = tempfile::tempdir().expect("tempdir");
    let j2 = SqlJournal::connect(&sqlite_url(&dir2))
        .await
        .expect("connect");
    unresolved_and_approvals(&j2).await;
    runbook_versions(&j2).await;
    let dir3 = tempfile::tempdir().expect("tempdir");
    let j3 = SqlJournal::connect(&sqlite_url(&dir3))
        .await
        .expect("connect");
    approved_counts(&j3).await;
    j.close().await;
    survives_reopen(&url).await;
}

#[tokio::test]
async fn postgres_journal_suite() {
    let Some(url) = postgres_url("suite").await else {
        return;
    };
    let j = SqlJournal::connect(&url).await.expect("connect");
    assert!(matches!(j, SqlJournal::Postgres(..)));
    round_trip(&j).await;
    j.close().await;
    let Some(url2) = postgres_url("approvals").await else {
        return;
    };
    let j2 = SqlJournal::connect(&url2).await.expect("connect");
    unresolved_and_approvals(&j2).await;
    runbook_versions(&j2).await;
    j2.close().await;
    let Some(url3) = postgres_url("approved_counts").await else {
        return;
    };
    let j3 = SqlJournal::connect(&url3).await.expect("connect");
    approved_counts(&j3).await;
    j3.close().await;
    survives_reopen(&url).await;
}

/// Two replicas on one PostgreSQL journal: once the second takes the next
/// leader epoch, the first (paused, deposed, unaware) journals nothing —
/// and, since nothing is sent that is not journaled first, sends nothing.
#[tokio::test]
async fn a_deposed_leader_journals_nothing_on_postgres() {
    let Some(url) = postgres_url("epoch").await else {
        return;
    };
    let old = SqlJournal::connect(&url).await.expect("connect");
    let new = SqlJournal::connect(&url).await.expect("connect");
    // Without an epoch (the CLI, a single replica) nothing is checked.
    old.record_intent(&entry(1, "auto", "allowed"))
        .await
        .expect("no epoch taken: journaled");
    assert_eq!(
        old.begin_leader_epoch(LEASE, "pod-a", 10)
            .await
            .expect("epoch"),
        Some(1)
    );
    old.record_intent(&entry(11, "auto", "allowed"))
        .await
        .expect("the leader journals");
    assert_eq!(
        new.begin_leader_epoch(LEASE, "pod-b", 20)
            .await
            .expect("epoch"),
        Some(2)
    );
    let refused = old
        .record_intent(&entry(21, "auto", "allowed"))
        .await
        .expect_err("the deposed leader is refused");
    assert!(
        refused.reason.contains("Lease autopilot-leader in epoch 1")
            && refused.reason.contains("at 2"),
        "{refused}"
    );
    new.record_intent(&entry(22, "auto", "allowed"))
        .await
        .expect("the new leader journals");
    let rows = new.list(10, false).await.expect("rows");
    assert_eq!(
        rows.iter().map(|r| r.entry.at).collect::<Vec<_>>(),
        [22, 11, 1],
        "nothing of the deposed leader's after the new epoch"
    );
    // SQLite has one replica: no epoch.
    let dir = tempfile::tempdir().expect("tempdir");
    let lite = SqlJournal::connect(&sqlite_url(&dir))
        .await
        .expect("sqlite");
    assert_eq!(
        lite.begin_leader_epoch(LEASE, "pod-a", 1)
            .await
            .expect("none"),
        None
    );
}

const LEASE: &str = "autopilot-leader";

/// Shards lead under their own Leases, each with its own epoch: a new
/// leader of one shard fences that shard's old leader only.
#[tokio::test]
async fn each_shards_lease_has_its_own_epoch_on_postgres() {
    let Some(url) = postgres_url("shard_epochs").await else {
        return;
    };
    let shard0 = SqlJournal::connect(&url).await.expect("connect");
    let shard1 = SqlJournal::connect(&url).await.expect("connect");
    let shard0_next = SqlJournal::connect(&url).await.expect("connect");
    let lease = |i| format!("{LEASE}-shard-{i}");
    for (j, i, who) in [(&shard0, 0, "a"), (&shard1, 1, "b")] {
        assert_eq!(
            j.begin_leader_epoch(&lease(i), who, 1)
                .await
                .expect("epoch"),
            Some(1)
        );
    }
    assert_eq!(
        shard0_next
            .begin_leader_epoch(&lease(0), "c", 2)
            .await
            .expect("epoch"),
        Some(2)
    );
    let refused = shard0
        .record_intent(&entry(3, "auto", "allowed"))
        .await
        .expect_err("shard 0's deposed leader is refused");
    assert!(refused.reason.contains("shard-0"), "{refused}");
    shard1
        .record_intent(&entry(3, "auto", "allowed"))
        .await
        .expect("shard 1's leader is untouched");
    shard0_next
        .record_intent(&entry(4, "auto", "allowed"))
        .await
        .expect("shard 0's new leader journals");
}

/// What the shard races below share: two journals on one PostgreSQL
/// database, a cluster-wide budget of one disruptive action an hour (the
/// per-namespace budget and the cooldown do not bind: each shard has its
/// own team's gateway), and a judge that makes both checks meet.
mod race {
    use std::sync::{Arc, Condvar, Mutex};

    use autopilot::store::SqlJournal;
    use autopilot::{
        act::{
            action::{Change, Planned, Subresource, kind_info},
            executor::{
                gate::{self, Admitted, Decider, Refused},
                history,
            },
            guard::{Observed, Policy},
            journal::{JournalEntry, NewEntry},
        },
        decide::{Action, Intent, Mode},
        detect::ComponentId,
    };
    use serde_json::json;

    pub async fn shards(test: &str) -> Option<[SqlJournal; 2]> {
        let url = super::postgres_url(test).await?;
        Some([
            SqlJournal::connect(&url).await.expect("connect"),
            SqlJournal::connect(&url).await.expect("connect"),
        ])
    }

    pub fn policy() -> Policy {
        Policy {
            disruptive_per_hour: 1,
            disruptive_per_namespace_per_hour: 10,
            ..Policy::default()
        }
    }

    /// Team `i`'s gateway.
    pub fn target(i: usize) -> ComponentId {
        ComponentId {
            kind: "PaymentGateway".into(),
            namespace: format!("team-{i}"),
            name: "gw".into(),
        }
    }

    /// A disruptive scale of team `i`'s gateway, as intended and planned.
    pub fn action(i: usize) -> (Intent, Planned) {
        let intent = Intent::new(Action::ScaleReplicas {
            target: target(i),
            replicas: 3,
        });
        let planned = Planned {
            change: Change::Merge {
                kind: kind_info("PaymentGateway").expect("kind"),
                namespace: target(i).namespace,
                name: "gw".into(),
                subresource: Subresource::Main,
                patch: json!({"spec": {"replicas": 3}}),
            },
            inverse: None,
            disruptive: true,
            moves: vec![],
        };
        (intent, planned)
    }

    /// Its journal entry at `at` in `mode`.
    pub fn entry(i: usize, at: i64, mode: &str) -> NewEntry {
        let mut e = super::entry(at, mode, "allowed");
        e.disruptive = true;
        e.target = target(i).to_string();
        e.namespace = target(i).namespace;
        e
    }

    /// How many checks have started, for them to meet.
    pub type Meeting = Arc<(Mutex<u32>, Condvar)>;

    pub fn meeting() -> Meeting {
        Arc::new((Mutex::new(0u32), Condvar::new()))
    }

    /// The gate's verdict on `action` against `recent`, once both checks
    /// have started (or after 100 ms): were the read, the check and the
    /// insert not one step under one lock, both would read the budget
    /// unspent.
    pub fn judge(
        meeting: &Meeting,
        (intent, planned): &(Intent, Planned),
        decider: Decider,
        recent: &[JournalEntry],
        now: i64,
    ) -> Result<Admitted, Refused> {
        let (count, woken) = &**meeting;
        let mut n = count.lock().expect("lock");
        *n += 1;
        woken.notify_all();
        drop(
            woken
                .wait_timeout_while(n, std::time::Duration::from_millis(100), |n| *n < 2)
                .expect("wait"),
        );
        let history = history(recent);
        let j = gate::Judged {
            intent,
            planned,
            history: &history,
            observed: &Observed::default(),
        };
        gate::judge(&policy(), Mode::Auto, decider, Ok(()), Some(j), now)
    }
}

/// Two agents (shards) on one PostgreSQL journal race for the last unit of
/// the cluster-wide disruption budget, again and again: each checks the
/// guards and records its intent in one step, and exactly one of them wins
/// each time. The check of each waits (up to 100 ms) for the other's
/// check to start too: were the read, the check and the insert not one
/// step under one lock, both would read the budget unspent and both win.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_shards_never_both_spend_the_last_unit_of_a_budget_on_postgres() {
    use autopilot::act::executor::gate::Decider;

    let Some(shards) = race::shards("budget_race").await else {
        return;
    };
    const ROUNDS: i64 = 20;
    for round in 0..ROUNDS {
        // Two hours apart: each round has a fresh hour's budget.
        let now = 1_000_000 + round * 7200;
        let meeting = race::meeting();
        let race = shards.iter().enumerate().map(|(i, j)| {
            let (meeting, action, e) = (
                meeting.clone(),
                race::action(i),
                race::entry(i, now, "auto"),
            );
            async move {
                let (id, verdict) = j
                    .record_intent_checked(&e, now - 86_400, |recent| {
                        race::judge(&meeting, &action, Decider::Agent, recent, now)
                    })
                    .await
                    .expect("journal");
                (id, verdict.map(drop))
            }
        });
        let results = futures::future::join_all(race).await;
        let winners: Vec<_> = results.iter().filter(|(_, v)| v.is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let (loser, refused) = results
            .iter()
            .find_map(|(id, v)| v.as_ref().err().map(|r| (*id, r)))
            .expect("a loser");
        assert_eq!(refused.guard, "disruption_budget", "round {round}");
        // The loser's intent is journaled as refused, and so spends nothing.
        let row = shards[0].get(loser).await.expect("get").expect("row");
        assert_eq!(row.outcome.as_deref(), Some(outcome::REFUSED));
        assert!(
            row.outcome_detail
                .as_deref()
                .is_some_and(|d| d.contains("disruption_budget")),
            "{row:?}"
        );
    }
    let rows = shards[1].since(0).await.expect("rows");
    assert_eq!(rows.len() as i64, 2 * ROUNDS);
    assert_eq!(
        rows.iter().filter(|r| r.outcome.is_none()).count() as i64,
        ROUNDS,
        "one allowed intent per round"
    );
}

#[tokio::test]
async fn a_bad_url_is_a_clear_error() {
    let err = SqlJournal::connect("postgres://nobody:pw@127.0.0.1:1/x")
        .await
        .expect_err("no server");
    assert_eq!(err.kind(), "connect");
    assert!(err.to_string().contains("nobody:***@"), "{err}");
}

/// A person's approval on one shard and an agent's action on another race
/// for the last unit of the cluster-wide disruption budget: the approval is
/// judged and claimed in one step under the same lock as the action's
/// insert, and the claimed recommendation counts from its claim (not from
/// when it was recommended, here an hour and a half earlier, outside the
/// budget's hour), so exactly one of them wins each round.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_and_another_shards_action_never_both_spend_the_last_unit_on_postgres() {
    use autopilot::act::executor::gate::Decider;

    let Some(shards) = race::shards("approval_race").await else {
        return;
    };
    const ROUNDS: i64 = 10;
    let mut approvals_won = 0;
    for round in 0..ROUNDS {
        let now = 1_000_000 + round * 7200;
        // Shard 0's recommendation, made an hour and a half ago.
        let rec = race::entry(0, now - 5400, "recommend");
        let rec_id = shards[0].record_intent(&rec).await.expect("recommend");
        shards[0]
            .record_outcome(rec_id, outcome::RECOMMENDED, "", now - 5400)
            .await
            .expect("recommended");
        let meeting = race::meeting();
        let (j0, j1) = (race::action(0), race::action(1));
        let approve = async {
            shards[0]
                .record_approval_checked(rec_id, "approved by alice", now, now - 86_400, |recent| {
                    let recent: Vec<_> =
                        recent.iter().filter(|e| e.id != rec_id).cloned().collect();
                    race::judge(&meeting, &j0, Decider::Person, &recent, now)
                })
                .await
                .expect("journal")
        };
        let e = race::entry(1, now, "auto");
        let act = async {
            shards[1]
                .record_intent_checked(&e, now - 86_400, |recent| {
                    race::judge(&meeting, &j1, Decider::Agent, recent, now)
                })
                .await
                .expect("journal")
        };
        let (approved, (_, acted)) = futures::future::join(approve, act).await;
        let approval_won = matches!(approved, Some(Ok(_)));
        assert!(
            approval_won != acted.is_ok(),
            "round {round}: exactly one wins: approval {approved:?}, action {acted:?}"
        );
        let row = shards[1].get(rec_id).await.expect("get").expect("row");
        if approval_won {
            approvals_won += 1;
            assert_eq!(row.approval.as_deref(), Some("approved by alice"));
            assert_eq!(row.outcome_at, Some(now), "counts from its claim");
        } else {
            assert_eq!(row.approval, None, "a refused approval claims nothing");
        }
    }
    eprintln!("approvals won {approvals_won} of {ROUNDS} rounds");
}
