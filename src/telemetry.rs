//! Logging set-up: `tracing` to stderr, human-readable or JSON, filtered by
//! `RUST_LOG` (default [`DEFAULT_FILTER`]).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// `info`, without two lines of kube's that read as trouble when there is
/// none: each controller's "press ctrl+c to shut down gracefully" (four at
/// every start) and kube-client's own ERROR line for every failed request,
/// which a starting API server answers many of (the agent reports the
/// failures it cares about itself, with what it was doing).
pub const DEFAULT_FILTER: &str =
    "info,kube_runtime::controller=warn,kube_client::client::builder=off";

/// [`DEFAULT_FILTER`]'s quieting of kube, after the default level.
const KUBE_QUIET: &str = "kube_runtime::controller=warn,kube_client::client::builder=off";

/// Installs the global subscriber. Call once, at start-up.
pub fn init(json: bool) {
    init_at(json, "info");
}

/// [`init`] with another level than `info` when `RUST_LOG` is not set (a
/// replay logs warnings only: its report is the output).
pub fn init_at(json: bool, default_level: &str) {
    // Without an endpoint nothing can fail.
    let _ = init_with(json, default_level, None);
}

/// Spans exported over OTLP: keep it for the life of the process; dropping
/// it sends the spans still batched and stops the exporter.
pub struct Otlp {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Drop for Otlp {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("autopilot: flushing spans to the OTLP endpoint failed: {e}");
        }
    }
}

/// Could not set up the OTLP exporter.
#[derive(Debug, thiserror::Error)]
#[error("--otlp-endpoint {endpoint}: {reason}")]
pub struct OtlpError {
    endpoint: String,
    reason: String,
}

/// The OTLP/HTTP traces URL for an endpoint: a collector's base
/// (`http://jaeger-collector:4318`) gets `/v1/traces`, a URL that already
/// ends in it is taken as it is.
pub fn otlp_traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// [`init_at`], and with `otlp_endpoint` the stage spans (observe and its
/// queries, detect, decide, runbook, guard, act, verify, with their
/// component and action)
/// also exported over OTLP/HTTP (protobuf) in batches, as service
/// `autopilot`. Export failures are the exporter's to log; they never stop
/// the agent.
pub fn init_with(
    json: bool,
    default_level: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Option<Otlp>, OtlpError> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;

    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},{KUBE_QUIET}")));
    let (otlp, layer) = match otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let url = otlp_traces_url(endpoint);
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(url)
                .with_timeout(std::time::Duration::from_secs(5))
                .build()
                .map_err(|e| OtlpError {
                    endpoint: endpoint.to_string(),
                    reason: e.to_string(),
                })?;
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("autopilot")
                        .build(),
                )
                .build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("autopilot"));
            (Some(Otlp { provider }), Some(layer))
        }
    };
    let registry = tracing_subscriber::registry().with(filter).with(layer);
    if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init();
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    Ok(otlp)
}

/// An error with its chain of causes, `outer: cause: root cause`, for logs:
/// `%error` alone prints only the outermost message, which at 3 a.m. is
/// rarely the part that says what to fix.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_otlp_endpoint_gets_the_traces_path_once() {
        for (endpoint, url) in [
            ("http://jaeger:4318", "http://jaeger:4318/v1/traces"),
            ("http://jaeger:4318/", "http://jaeger:4318/v1/traces"),
            ("http://otel:4318/v1/traces", "http://otel:4318/v1/traces"),
        ] {
            assert_eq!(super::otlp_traces_url(endpoint), url);
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("listing Cluster objects")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause() {
        let e = Outer(std::io::Error::other(
            "404 Not Found: the server could not find the requested resource",
        ));
        assert_eq!(
            super::chain(&e),
            "listing Cluster objects: 404 Not Found: the server could not find the requested resource"
        );
    }
}
