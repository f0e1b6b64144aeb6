//! The one architectural rule CI enforces: only `src/act/` writes to the
//! cluster. Any Kubernetes write verb elsewhere in `src/` fails this test,
//! except in `src/testenv/`, which plays the cluster's own parts (a fake
//! kubelet) for tests and the sandbox and is never part of the agent.

#[test]
fn only_act_writes_to_the_cluster() {
    const WRITE_VERBS: [&str; 8] = [
        ".patch(",
        ".patch_status(",
        ".patch_scale(",
        "&PostParams",
        "DeleteParams",
        "create_subresource",
        "delete_collection",
        ".replace_status(",
    ];
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    let mut offenders = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                if !path.ends_with("act") && !path.ends_with("testenv") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read file");
            for (i, line) in text.lines().enumerate() {
                if let Some(verb) = WRITE_VERBS.iter().find(|v| line.contains(*v)) {
                    offenders.push(format!(
                        "{}:{}: {verb}: {}",
                        path.display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "Kubernetes writes outside src/act/ (route them through act):\n{}",
        offenders.join("\n")
    );
}
