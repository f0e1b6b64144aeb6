//! Leader fencing: a replica that may have lost its Lease writes nothing.
//!
//! The Lease says who leads until `renewTime + leaseDurationSeconds`; a
//! standby may take over after that. The leader itself renews well before
//! (the Lease manager's grace), but a leader paused (SIGSTOP, a long GC-free
//! but CPU-starved stretch, a frozen VM) does not know it has been deposed
//! until it runs again, and its next write would race the new leader's.
//! So every write to the cluster — the executor's sends and the
//! controllers' applies and status patches — first asks [`check`], which
//! allows it only while the last renewal this replica made (read from the
//! Lease itself, written with this replica's own clock) is younger than the
//! Lease duration minus a margin. A paused leader that wakes up after the
//! margin finds the fence closed before it sends anything.
//!
//! What remains: the time between [`check`] and the request reaching the API
//! server (microseconds of CPU, unless the process is paused exactly there);
//! the margin (`grace`, a third of the Lease by default) covers a pause
//! shorter than itself. Where the journal is PostgreSQL, intents are also
//! journaled only under the current leader's epoch (see `store`).
//!
//! Process-wide: installed by `agent::run` when leader election is on; with
//! no fence installed (one replica without election, the CLI, tests) every
//! write is allowed.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

/// Why a write was not sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Fenced {
    #[error(
        "this replica's hold on the leader Lease is not current (last renewal {age_ms} ms ago; writes stop {limit_ms} ms after it): it may have been deposed"
    )]
    Expired { age_ms: i64, limit_ms: i64 },
    #[error("this replica does not hold the leader Lease (held by {holder})")]
    NotHolder { holder: String },
}

/// The fence: until when (unix milliseconds, this replica's clock) writes
/// are allowed. 0: not allowed.
#[derive(Debug, Default)]
pub struct Fence {
    until_ms: AtomicI64,
    /// Who held the Lease at the last read, when not us (for the error).
    holder: std::sync::Mutex<Option<String>>,
    /// How long after a renewal writes stop (ms), for the error.
    limit_ms: AtomicI64,
}

static FENCE: OnceLock<Arc<Fence>> = OnceLock::new();

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Allows the write when no fence is installed or this replica's Lease is
/// current; see the module doc.
pub fn check() -> Result<(), Fenced> {
    match FENCE.get() {
        None => Ok(()),
        Some(f) => f.check_at(now_ms()),
    }
}

impl Fence {
    /// The fence as of `now_ms`.
    pub fn check_at(&self, now_ms: i64) -> Result<(), Fenced> {
        let until = self.until_ms.load(Ordering::SeqCst);
        if now_ms < until {
            return Ok(());
        }
        if let Some(holder) = self.holder.lock().ok().and_then(|h| h.clone()) {
            return Err(Fenced::NotHolder { holder });
        }
        let limit_ms = self.limit_ms.load(Ordering::SeqCst);
        Err(Fenced::Expired {
            age_ms: now_ms - (until - limit_ms),
            limit_ms,
        })
    }

    /// Updates the fence from the Lease as read: open until `renewTime +
    /// duration − margin` if `identity` holds it, closed otherwise.
    pub fn observe(&self, lease: &Lease, identity: &str, margin: Duration) {
        let spec = lease.spec.as_ref();
        let holder = spec.and_then(|s| s.holder_identity.clone());
        let renewed_ms = spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_millisecond());
        let duration_ms = spec
            .and_then(|s| s.lease_duration_seconds)
            .map(|d| i64::from(d) * 1000);
        let limit_ms = duration_ms.map(|d| d - margin.as_millis() as i64);
        match (holder.as_deref(), renewed_ms, limit_ms) {
            (Some(h), Some(renewed), Some(limit)) if h == identity && limit > 0 => {
                self.limit_ms.store(limit, Ordering::SeqCst);
                if let Ok(mut g) = self.holder.lock() {
                    *g = None;
                }
                self.until_ms.store(renewed + limit, Ordering::SeqCst);
            }
            _ => {
                if let Ok(mut g) = self.holder.lock() {
                    *g = Some(holder.unwrap_or_else(|| "nobody".into()));
                }
                self.until_ms.store(0, Ordering::SeqCst);
            }
        }
    }
}

/// Installs the process-wide fence for Lease `namespace`/`name` held as
/// `identity`, reads the Lease once, and keeps the fence current by reading
/// it every `every` (which must be well under the Lease's grace, so a
/// renewal is seen before the fence would close). Returns the reading task
/// (abort it to stop). One fence per process: a second call shares it.
pub async fn install(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
    margin: Duration,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let fence = FENCE.get_or_init(|| Arc::new(Fence::default())).clone();
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let (name, identity) = (name.to_string(), identity.to_string());
    let read = move |fence: Arc<Fence>, api: Api<Lease>, name: String, identity: String| async move {
        match api.get_opt(&name).await {
            Ok(Some(lease)) => fence.observe(&lease, &identity, margin),
            Ok(None) => fence.observe(&Lease::default(), &identity, margin),
            // Unreadable: the fence closes by itself when its time is up.
            Err(error) => tracing::debug!(%error, "reading the leader Lease for the fence failed"),
        }
    };
    read(fence.clone(), api.clone(), name.clone(), identity.clone()).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            read(fence.clone(), api.clone(), name.clone(), identity.clone()).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(holder: &str, renewed: &str, seconds: i32) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "l"},
            "spec": {"holderIdentity": holder, "renewTime": renewed, "leaseDurationSeconds": seconds},
        }))
        .expect("lease")
    }

    fn ms(t: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(t)
            .expect("time")
            .timestamp_millis()
    }

    #[test]
    fn writes_stop_a_margin_before_the_lease_could_expire() {
        let f = Fence::default();
        // Closed until the Lease is first read.
        assert!(f.check_at(ms("2026-12-01T10:00:00Z")).is_err());
        f.observe(
            &lease("me", "2026-12-01T10:00:00.000000Z", 15),
            "me",
            Duration::from_secs(5),
        );
        assert_eq!(f.check_at(ms("2026-12-01T10:00:09Z")), Ok(()));
        // 10 s after the renewal (15 s Lease, 5 s margin): stopped, although
        // the Lease is still ours for 5 s more.
        let e = f.check_at(ms("2026-12-01T10:00:10Z")).expect_err("fenced");
        assert_eq!(
            e,
            Fenced::Expired {
                age_ms: 10_000,
                limit_ms: 10_000
            }
        );
        // Paused for 3 Leases: still closed on waking.
        assert!(f.check_at(ms("2026-12-01T10:00:45Z")).is_err());
        // Renewed: open again.
        f.observe(
            &lease("me", "2026-12-01T10:00:44.000000Z", 15),
            "me",
            Duration::from_secs(5),
        );
        assert_eq!(f.check_at(ms("2026-12-01T10:00:45Z")), Ok(()));
    }

    #[test]
    fn a_lease_held_by_another_replica_closes_the_fence_at_once() {
        let f = Fence::default();
        f.observe(
            &lease("me", "2026-12-01T10:00:00.000000Z", 15),
            "me",
            Duration::from_secs(5),
        );
        f.observe(
            &lease("other", "2026-12-01T10:00:01.000000Z", 15),
            "me",
            Duration::from_secs(5),
        );
        assert_eq!(
            f.check_at(ms("2026-12-01T10:00:02Z")),
            Err(Fenced::NotHolder {
                holder: "other".into()
            })
        );
        // A margin as long as the Lease never opens it.
        let g = Fence::default();
        g.observe(
            &lease("me", "2026-12-01T10:00:00.000000Z", 5),
            "me",
            Duration::from_secs(5),
        );
        assert!(g.check_at(ms("2026-12-01T10:00:01Z")).is_err());
    }
}
