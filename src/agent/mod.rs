//! Wiring of the long-running agent: the payments controllers, and the HTTP
//! endpoints an on-call engineer and the kubelet use (`/metrics`, `/healthz`,
//! `/readyz`).
//!
//! Must not hold decision logic: it starts what other modules define.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::reconcile::{self, Context, Metrics, NoGate, Settings};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the Kubernetes API (kubeconfig or in-cluster config) failed")]
    Connect(#[source] kube::Error),
    #[error("registering metrics failed")]
    RegisterMetrics(#[source] prometheus::Error),
    #[error("listening on {addr} failed")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone)]
struct Http {
    registry: Registry,
}

async fn serve_metrics(State(http): State<Http>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&http.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", encoder.format_type().to_string())],
            buf,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain".to_string())],
            e.to_string().into_bytes(),
        ),
    }
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(settings: Settings, listen: SocketAddr) -> Result<(), Error> {
    let client = kube::Client::try_default().await.map_err(Error::Connect)?;
    let registry = Registry::new();
    let metrics = Metrics::register(&registry).map_err(Error::RegisterMetrics)?;
    let ctx = Arc::new(Context::new(client, settings, Arc::new(NoGate), metrics));

    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(Http { registry });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, namespace = ?ctx.settings.namespace, "autopilot running: /metrics /healthz /readyz");
    let server = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    tokio::select! {
        () = reconcile::run(ctx) => tracing::info!("controllers stopped"),
        r = server => if let Err(e) = r { tracing::error!(error = %e, "HTTP server failed") },
    }
    Ok(())
}
