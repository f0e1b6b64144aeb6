//! `autopilot sandbox --once`, the README's main command, as a process: it
//! brings up the local estate, the examples become Ready under the agent's
//! controllers, the simulated gateway saturates, and the agent's detectors
//! and default runbooks decide — in dry-run — to raise its autoscaling.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

#[test]
fn the_sandbox_shows_the_agent_deciding_on_a_saturating_gateway() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "sandbox",
            "--once",
            "--incident-after-seconds",
            "15",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start autopilot sandbox");
    // Read both pipes as they fill, so a sandbox that hangs still shows
    // what it printed.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(420);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let out = stdout.join().expect("stdout reader");
    let err = stderr.join().expect("stderr reader");
    let Some(status) = status else {
        panic!("the sandbox did not finish within 420 s\n{out}\n{err}");
    };
    assert!(status.success(), "exit {status}\n{out}\n{err}");
    assert!(
        out.contains(
            "autoscale-gateway → scale_autoscaling on PaymentGateway/payments/payment-gateway: dry_run"
        ),
        "the decision is shown:\n{out}\n{err}"
    );
    assert!(
        out.contains("\"maxReplicas\":30,\"minReplicas\":4"),
        "with the patch it would send:\n{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("PaymentGateway")
            && l.contains("payment-gateway")
            && l.contains("Ready")),
        "the example gateway was reconciled to Ready:\n{out}"
    );
    assert!(
        err.contains("Prometheus at http://127.0.0.1:"),
        "a real Prometheus scraped the simulation:\n{err}"
    );
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
}
