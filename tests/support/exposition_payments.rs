//! The payments services' series for the estate of `exposition.rs`: the
//! contract of docs/payments-metrics.md and nothing else (tests/exposition.rs
//! checks the two agree). It never reads a model spec.
#![allow(dead_code)] // included by tests/exposition.rs only

use crate::exposition::{Builder, Scrape, of_kind};

type B<'a> = Builder<'a>;

/// The payments services, exactly the contract of docs/payments-metrics.md:
/// each service sets its component label itself; `namespace` comes from
/// the ServiceMonitor scrape.
pub fn payments(b: &mut B<'_>) {
    let r = Scrape::Renamed;
    for (ns, gw) in of_kind("PaymentGateway") {
        let pod = format!("{gw}-6b8d7c9f5-m4n5b");
        let t = B::target(ns, &pod, gw, gw);
        for (code, rate) in [("200", 50.0), ("500", 0.5)] {
            let own = [("gateway", gw), ("method", "POST"), ("code", code)];
            b.counter("payments_gateway_requests_total", &t, &own, r, rate);
        }
        let own = [("gateway", gw)];
        b.histogram(
            "payments_gateway_request_duration_seconds",
            &t,
            &own,
            r,
            50.0,
        );
        b.gauge("payments_gateway_inflight_requests", &t, &own, r, 40.0);
        b.gauge("payments_gateway_max_inflight_requests", &t, &own, r, 100.0);
    }
    for (ns, adapter) in of_kind("ClearingAdapter") {
        let pod = format!("{adapter}-5c7d8f9b6-r7t8y");
        let t = B::target(ns, &pod, adapter, adapter);
        for (result, rate) in [("accepted", 5.0), ("rejected", 0.1), ("error", 0.01)] {
            let own = [("adapter", adapter), ("result", result)];
            b.counter("payments_clearing_submissions_total", &t, &own, r, rate);
        }
        let own = [("adapter", adapter)];
        b.histogram(
            "payments_clearing_submission_duration_seconds",
            &t,
            &own,
            r,
            5.0,
        );
        b.gauge("payments_clearing_queue_depth", &t, &own, r, 12.0);
    }
    for (ns, batch) in of_kind("BatchProcessor") {
        let pod = format!("{batch}-29012345-8x7zq");
        let t = B::target(ns, &pod, batch, batch);
        for (result, rate) in [("succeeded", 0.001), ("failed", 0.0)] {
            let own = [("batchprocessor", batch), ("result", result)];
            b.counter("payments_batch_runs_total", &t, &own, r, rate);
        }
        let own = [("batchprocessor", batch)];
        b.gauge(
            "payments_batch_last_run_duration_seconds",
            &t,
            &own,
            r,
            420.0,
        );
        b.counter("payments_batch_records_total", &t, &own, r, 200.0);
    }
    for (ns, saga) in of_kind("SagaOrchestrator") {
        let pod = format!("{saga}-7f8d9c6b5-w3e4r");
        let t = B::target(ns, &pod, saga, saga);
        let own = [("saga", saga)];
        b.counter("payments_saga_started_total", &t, &own, r, 3.0);
        b.counter("payments_saga_compensations_total", &t, &own, r, 0.05);
        b.gauge("payments_saga_inflight", &t, &own, r, 9.0);
        let step = [("saga", saga), ("step", "reserve-funds")];
        b.histogram("payments_saga_step_duration_seconds", &t, &step, r, 3.0);
    }
}
