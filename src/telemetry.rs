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
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},{KUBE_QUIET}")));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init();
    } else {
        registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init();
    }
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
