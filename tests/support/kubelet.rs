//! The fake kubelet of `autopilot::testenv::kubelet`, started for one test's namespace.

pub use autopilot::testenv::kubelet::FakeKubelet;

pub async fn start(client: kube::Client, namespace: &str) -> FakeKubelet {
    autopilot::testenv::kubelet::start(client, namespace)
        .await
        .expect("starting the fake kubelet")
}
