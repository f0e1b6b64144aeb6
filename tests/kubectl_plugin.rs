//! The binary as a kubectl plugin: named `kubectl-autopilot` (a link on the
//! PATH), it answers as `kubectl autopilot`; and kubectl itself, when on
//! the PATH, finds it and runs it.

use std::{path::Path, process::Command};

fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_autopilot"),
        dir.path().join("kubectl-autopilot"),
    )
    .expect("link kubectl-autopilot");
    dir
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("PATH")
}

#[test]
fn named_kubectl_autopilot_the_binary_answers_as_kubectl_autopilot() {
    let dir = plugin_dir();
    let out = Command::new(dir.path().join("kubectl-autopilot"))
        .args(["actions", "--help"])
        .output()
        .expect("run kubectl-autopilot");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    assert!(help.contains("Usage: kubectl autopilot actions"), "{help}");
    let out = Command::new(env!("CARGO_BIN_EXE_autopilot"))
        .args(["actions", "--help"])
        .output()
        .expect("run autopilot");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: autopilot actions"), "{help}");
}

#[test]
fn kubectl_runs_it_as_a_plugin() {
    let dir = plugin_dir();
    let path = path_with(dir.path());
    let Some(kubectl) = std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
    else {
        eprintln!("no kubectl on the PATH: kubectl's own plugin lookup is not tried");
        return;
    };
    let out = Command::new(&kubectl)
        .args(["plugin", "list"])
        .env("PATH", &path)
        .output()
        .expect("kubectl plugin list");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("kubectl-autopilot"), "{list}");
    let out = Command::new(&kubectl)
        .args(["autopilot", "actions", "--help"])
        .env("PATH", &path)
        .output()
        .expect("kubectl autopilot");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{help}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(help.contains("Usage: kubectl autopilot actions"), "{help}");
}
