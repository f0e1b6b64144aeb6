//! Ambiguous writes against the real API server: the agent's own client
//! (its service account, the chart's RBAC) goes through a fault layer that
//! answers a PATCH with 500 or 429 without forwarding it, or forwards it and
//! loses the reply. The executor retries with back-off, reads the target
//! back before each retry, and sends a change at most once: the layer
//! counts the PATCHes that reached the API server.

mod support;

use std::{
    collections::VecDeque,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use autopilot::{
    act::{
        executor::{Executor, Metrics},
        guard::Policy,
        journal::{Journal, outcome},
    },
    decide::Mode,
    detect::ComponentId,
    store::SqlJournal,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use kube::{
    Api, Client,
    api::{DynamicObject, PostParams},
    client::{Body, ClientBuilder},
};
use serde_json::json;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the layer does to the next PATCH requests, in order; once the plan
/// is empty every request passes.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answer with this status without forwarding.
    Refuse(u16),
    /// Forward, then lose the reply (a broken connection).
    LoseReply,
}

#[derive(Clone, Default)]
struct Plan {
    faults: Arc<Mutex<VecDeque<Fault>>>,
    /// PATCH requests that reached the API server.
    forwarded: Arc<Mutex<usize>>,
    /// PATCH requests the executor made.
    attempted: Arc<Mutex<usize>>,
}

impl Plan {
    fn set(&self, faults: &[Fault]) {
        *self.faults.lock().expect("lock") = faults.iter().copied().collect();
        *self.forwarded.lock().expect("lock") = 0;
        *self.attempted.lock().expect("lock") = 0;
    }
    fn counts(&self) -> (usize, usize) {
        (
            *self.attempted.lock().expect("lock"),
            *self.forwarded.lock().expect("lock"),
        )
    }
}

#[derive(Clone)]
struct FaultLayer(Plan);

impl<S> tower::Layer<S> for FaultLayer {
    type Service = Faulty<S>;
    fn layer(&self, inner: S) -> Faulty<S> {
        Faulty {
            inner,
            plan: self.0.clone(),
        }
    }
}

struct Faulty<S> {
    inner: S,
    plan: Plan,
}

fn status_response(code: u16) -> http::Response<RespBody> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("injected {code}"), "reason": "InternalError", "code": code});
    let full = Full::new(Bytes::from(body.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(full)
        .expect("response")
}

impl<S, B> tower::Service<http::Request<Body>> for Faulty<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body_util::BodyExt<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<RespBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let patch = req.method() == http::Method::PATCH;
        let fault = if patch {
            *self.plan.attempted.lock().expect("lock") += 1;
            self.plan.faults.lock().expect("lock").pop_front()
        } else {
            None
        };
        if let Some(Fault::Refuse(code)) = fault {
            return Box::pin(async move { Ok(status_response(code)) });
        }
        if patch {
            *self.plan.forwarded.lock().expect("lock") += 1;
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await.map_err(Into::into)?;
            if let Some(Fault::LoseReply) = fault {
                return Err::<Self::Response, BoxError>(
                    "injected: connection reset after the request was sent".into(),
                );
            }
            Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync()))
        })
    }
}

const NOW: i64 = 1_800_000_000;

struct Setup {
    admin: Client,
    ns: String,
    plan: Plan,
    ex: Executor<SqlJournal>,
    _dir: tempfile::TempDir,
}

async fn setup(prefix: &str) -> Setup {
    let cp = support::control_plane(Default::default());
    let (admin, ns) = support::client_and_namespace(cp, prefix).await;
    // The agent's identity and rights (applies the chart's RBAC once).
    support::agent_client(cp).await;
    let mut config = cp.config().await.expect("config");
    config.auth_info.impersonate = Some(format!(
        "system:serviceaccount:{}:{}",
        support::AGENT_NAMESPACE,
        support::AGENT_RELEASE
    ));
    let plan = Plan::default();
    let agent = ClientBuilder::try_from(config)
        .expect("client builder")
        .with_layer(&FaultLayer(plan.clone()))
        .build();
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = SqlJournal::connect(&format!("sqlite:{}", dir.path().join("j.db").display()))
        .await
        .expect("journal");
    let metrics = Metrics::register(&prometheus::Registry::new()).expect("metrics");
    Setup {
        admin,
        ns,
        plan,
        ex: Executor::new(agent, journal, metrics).with_mode(Mode::Auto),
        _dir: dir,
    }
}

impl Setup {
    async fn gateway(&self, name: &str, replicas: i64) -> ComponentId {
        let gw: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "payments.io/v1", "kind": "PaymentGateway",
            "metadata": {"name": name},
            "spec": {"version": "2.5.0", "replicas": replicas},
        }))
        .expect("gateway");
        self.gateways()
            .create(&PostParams::default(), &gw)
            .await
            .expect("create");
        ComponentId {
            kind: "PaymentGateway".into(),
            namespace: self.ns.clone(),
            name: name.into(),
        }
    }

    fn gateways(&self) -> Api<DynamicObject> {
        let ar = autopilot::act::action::kind_info("PaymentGateway")
            .expect("kind")
            .api_resource();
        Api::namespaced_with(self.admin.clone(), &self.ns, &ar)
    }

    async fn replicas(&self, name: &str) -> i64 {
        let gw = self.gateways().get(name).await.expect("get");
        gw.data["spec"]["replicas"].as_i64().expect("replicas")
    }

    /// Scales `target` to `replicas` in auto mode under `faults`; returns
    /// the outcome, its detail, and (attempted, forwarded) PATCHes.
    async fn scale(
        &self,
        target: &ComponentId,
        replicas: i64,
        faults: &[Fault],
        at: i64,
    ) -> (String, String, (usize, usize)) {
        let p = support::scale_proposal(target, replicas, Mode::Auto);
        let policy = Policy {
            cooldown_seconds: 0,
            max_relative_change: 100.0,
            ..Policy::default()
        };
        self.plan.set(faults);
        let done = self
            .ex
            .run_batch(&[p], &policy, at)
            .await
            .expect("batch")
            .pop()
            .expect("one");
        let counts = self.plan.counts();
        self.plan.set(&[]);
        let row = self
            .ex
            .journal()
            .get(done.id)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(row.outcome.as_deref(), Some(done.outcome.as_str()));
        (done.outcome, done.detail, counts)
    }
}

#[tokio::test]
async fn a_write_whose_reply_is_lost_is_read_back_and_not_sent_again() {
    let s = setup("flt-lost").await;
    let gw = s.gateway("gw", 3).await;
    let (out, detail, (attempted, forwarded)) = s.scale(&gw, 5, &[Fault::LoseReply], NOW).await;
    assert_eq!(out, outcome::APPLIED, "{detail}");
    assert!(detail.contains("read back"), "{detail}");
    assert_eq!(
        (attempted, forwarded),
        (1, 1),
        "one PATCH reached the API server; the retry found it in effect"
    );
    assert_eq!(s.replicas("gw").await, 5);
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried_until_the_write_lands_once() {
    let s = setup("flt-retry").await;
    let gw = s.gateway("gw", 3).await;
    let faults = [Fault::Refuse(500), Fault::Refuse(429)];
    let (out, detail, (attempted, forwarded)) = s.scale(&gw, 6, &faults, NOW).await;
    assert_eq!(out, outcome::APPLIED, "{detail}");
    assert_eq!((attempted, forwarded), (3, 1), "{detail}");
    assert_eq!(s.replicas("gw").await, 6);
    // A 500 after the write went through, then the reply lost: still once.
    let gw2 = s.gateway("gw2", 3).await;
    let faults = [Fault::Refuse(503), Fault::LoseReply];
    let (out, detail, (attempted, forwarded)) = s.scale(&gw2, 4, &faults, NOW + 1).await;
    assert_eq!(out, outcome::APPLIED, "{detail}");
    assert_eq!((attempted, forwarded), (2, 1), "{detail}");
    assert_eq!(s.replicas("gw2").await, 4);
}

#[tokio::test]
async fn a_write_that_keeps_failing_is_unknown_and_counts_against_the_cooldown() {
    let s = setup("flt-unknown").await;
    let gw = s.gateway("gw", 3).await;
    let faults = [Fault::Refuse(503); 4];
    let (out, detail, (attempted, forwarded)) = s.scale(&gw, 5, &faults, NOW).await;
    assert_eq!(out, outcome::UNKNOWN, "{detail}");
    assert_eq!((attempted, forwarded), (4, 0), "one try and three retries");
    assert_eq!(s.replicas("gw").await, 3);
    // It may have taken effect, so the default cooldown holds the next one.
    let p = support::scale_proposal(&gw, 5, Mode::Auto);
    let next =
        s.ex.run_batch(&[p], &Policy::default(), NOW + 60)
            .await
            .expect("batch")
            .pop()
            .expect("one");
    assert_eq!(next.outcome, outcome::REFUSED, "{}", next.detail);
    assert!(next.detail.starts_with("cooldown"), "{}", next.detail);
}
