//! Generated files stay in step with their source: `deploy/crds/` must be
//! exactly what `autopilot crds` prints from the Rust types.

#[test]
fn deploy_crds_are_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/crds/payments.io.yaml");
    let committed = std::fs::read_to_string(path).expect("deploy/crds/payments.io.yaml exists");
    let generated = autopilot::crd::crds_yaml().expect("render CRDs");
    assert!(
        committed == generated,
        "deploy/crds/payments.io.yaml is out of date with src/crd/; regenerate it with\n  cargo run -- crds -o deploy/crds/payments.io.yaml"
    );
}
