//! Shards on one PostgreSQL journal (issue #16): what an intent sent at
//! once costs when every shard checks the guards and records it in one
//! transaction under the one advisory lock (`record_intent_checked`),
//! against the same reads, check and insert without the lock (the
//! baseline: no atomicity across shards), for 1, 2, 4 and 8 shards writing
//! as fast as they can at once, with 0, 1 000 and 10 000 rows of history in
//! the guards' window (the last day, which every check reads). The lock
//! serializes every shard's check and insert, so the locked rate is the
//! journal's ceiling: the write rate at which PostgreSQL becomes the limit.
//!
//! Run with `cargo bench --features testenv --bench shards` (it starts its
//! own PostgreSQL through `autopilot::testenv::postgres`); figures go to
//! BENCHMARKS.md, "Shards".

use std::time::{Duration, Instant};

use autopilot::{
    act::{
        action::{Change, Planned, Subresource, kind_info},
        executor::{
            gate::{self, Decider},
            history,
        },
        guard::{Observed, Policy},
        journal::{Journal, NewEntry, new_uid},
    },
    decide::{Action, Intent, Mode},
    detect::ComponentId,
    store::SqlJournal,
    testenv::postgres::Postgres,
};
use serde_json::json;

const ROUND: Duration = Duration::from_secs(3);
const SHARDS: [usize; 4] = [1, 2, 4, 8];
const HISTORY: [i64; 3] = [0, 1_000, 10_000];

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    shard_filter();
    let pg = match Postgres::binaries() {
        Ok(_) => Postgres::start().expect("PostgreSQL"),
        Err(e) => {
            eprintln!("SKIPPED: {e} (scripts/install-deps installs postgresql)");
            return;
        }
    };
    println!(
        "| rows in the guard window at start | shards | writer | intents/s (all shards) | ms/intent (mean) | locked vs baseline |"
    );
    println!("|---:|---:|---|---:|---:|---:|");
    for rows in HISTORY {
        for shards in SHARDS {
            let mut baseline = 0.0;
            for locked in [false, true] {
                let url = database(&pg, &format!("b_{rows}_{shards}_{locked}")).await;
                preload(&url, rows).await;
                let (rate, ms) = race(&url, shards, locked).await;
                let ratio = if locked {
                    format!("{:.2}×", rate / baseline)
                } else {
                    baseline = rate;
                    "1×".into()
                };
                println!(
                    "| {rows} | {shards} | {} | {rate:.0} | {ms:.2} | {ratio} |",
                    if locked {
                        "checked under the lock"
                    } else {
                        "baseline: read, check, insert"
                    }
                );
            }
        }
    }
}

/// What sharding adds to each shard's cycle on the agent's side: every
/// shard receives every series of a spec from Prometheus and keeps those of
/// its namespaces, one rendezvous hash per shard count for each series.
/// 100 000 series over 5 000 namespaces, median of 5 passes.
fn shard_filter() {
    const SERIES: usize = 100_000;
    let namespaces: Vec<String> = (0..SERIES).map(|i| format!("team-{}", i % 5000)).collect();
    println!("| shards | ns to filter 100k series (one shard's cycle) | ns/series | series kept |");
    println!("|---:|---:|---:|---:|");
    for count in [1u32, 2, 4, 8, 16] {
        let shard = autopilot::scope::Shard::new(0, count).expect("shard");
        let scope = autopilot::scope::Scope::all().with_shard(Some(shard));
        let mut passes = Vec::new();
        let mut kept = 0;
        for _ in 0..5 {
            let t = Instant::now();
            kept = namespaces
                .iter()
                .filter(|ns| scope.allows_namespace(std::hint::black_box(ns)))
                .count();
            passes.push(t.elapsed());
        }
        passes.sort();
        let median = passes[2];
        println!(
            "| {count} | {:.1} ms | {:.0} | {kept} |",
            median.as_secs_f64() * 1000.0,
            median.as_nanos() as f64 / SERIES as f64
        );
    }
    println!();
}

async fn database(pg: &Postgres, name: &str) -> String {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .expect("connect as admin");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create database");
    let url = pg.url(name);
    SqlJournal::connect(&url)
        .await
        .expect("migrate")
        .close()
        .await;
    url
}

/// `rows` applied actions spread over the last day, each on its own target.
async fn preload(url: &str, rows: i64) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
    let now = chrono::Utc::now().timestamp();
    sqlx::query(
        "INSERT INTO journal (at, runbook, runbook_hash, trigger, evidence, action, action_kind, target, namespace, disruptive, mode, verdict, verdict_detail, uid, outcome, outcome_at) \
         SELECT $1 - (g * 86000 / GREATEST($2, 1)), 'autoscale-gateway', 'h', 'finding', '[]', '{}', 'scale_replicas', 'PaymentGateway/old/gw-' || g, 'old', false, 'auto', 'allowed', '', 'pre-' || g, 'applied', $1 - (g * 86000 / GREATEST($2, 1)) \
         FROM generate_series(1, $2) g",
    )
    .bind(now)
    .bind(rows)
    .execute(&mut c)
    .await
    .expect("preload");
}

/// Every shard records intents as fast as it can for [`ROUND`]; returns
/// the rate over all shards and the mean time of one intent.
async fn race(url: &str, shards: usize, locked: bool) -> (f64, f64) {
    let mut tasks = Vec::new();
    let deadline = Instant::now() + ROUND;
    for shard in 0..shards {
        let journal = SqlJournal::connect(url).await.expect("connect");
        tasks.push(tokio::spawn(async move {
            let policy = Policy {
                global_per_hour: u32::MAX,
                runbook_per_hour: u32::MAX,
                ..Policy::default()
            };
            let (mut n, mut spent) = (0u64, Duration::ZERO);
            while Instant::now() < deadline {
                let i = n as usize;
                let (intent, planned, entry) = proposal(shard, i);
                let now = entry.at;
                let judge = |recent: &[autopilot::act::journal::JournalEntry]| {
                    let judged = gate::Judged {
                        intent: &intent,
                        planned: &planned,
                        history: &history(recent),
                        observed: &Observed::default(),
                    };
                    gate::judge(
                        &policy,
                        Mode::Auto,
                        Decider::Agent,
                        Ok(()),
                        Some(judged),
                        now,
                    )
                };
                let t = Instant::now();
                let allowed = if locked {
                    let (_, verdict) = journal
                        .record_intent_checked(&entry, now - 86_400, judge)
                        .await
                        .expect("record");
                    verdict.is_ok()
                } else {
                    let recent = journal.since(now - 86_400).await.expect("since");
                    let verdict = judge(&recent);
                    journal.record_intent(&entry).await.expect("record");
                    verdict.is_ok()
                };
                spent += t.elapsed();
                assert!(allowed, "the bench's policy binds nothing");
                n += 1;
            }
            journal.close().await;
            (n, spent)
        }));
    }
    let (mut n, mut spent) = (0u64, Duration::ZERO);
    for t in tasks {
        let (tn, ts) = t.await.expect("shard");
        n += tn;
        spent += ts;
    }
    (
        n as f64 / ROUND.as_secs_f64(),
        spent.as_secs_f64() * 1000.0 / n.max(1) as f64,
    )
}

/// Shard `shard`'s `i`-th scale of a gateway of its own (no cooldown binds).
fn proposal(shard: usize, i: usize) -> (Intent, Planned, NewEntry) {
    let target = ComponentId {
        kind: "PaymentGateway".into(),
        namespace: format!("team-{shard}"),
        name: format!("gw-{i}"),
    };
    let planned = Planned {
        change: Change::Merge {
            kind: kind_info("PaymentGateway").expect("kind"),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            subresource: Subresource::Main,
            patch: json!({"spec": {"replicas": 3}}),
        },
        inverse: None,
        disruptive: false,
        moves: vec![],
    };
    let entry = NewEntry {
        uid: new_uid(),
        at: chrono::Utc::now().timestamp(),
        runbook: "autoscale-gateway".into(),
        runbook_hash: "h".into(),
        runbook_editor: None,
        trigger: "finding".into(),
        evidence: json!([]),
        action: json!({}),
        action_kind: "scale_replicas".into(),
        target: target.to_string(),
        namespace: target.namespace.clone(),
        patch: Some(json!({"spec": {"replicas": 3}})),
        inverse: None,
        disruptive: false,
        mode: "auto".into(),
        verdict: "allowed".into(),
        verdict_detail: String::new(),
        verify: None,
        undo_of: None,
    };
    let intent = Intent::new(Action::ScaleReplicas {
        target,
        replicas: 3,
    });
    (intent, planned, entry)
}
