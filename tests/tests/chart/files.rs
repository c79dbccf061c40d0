//! Documented values, Dockerfiles (hadolint), the CI workflow (actionlint) and the images.

use super::*;

/// Every key in values.yaml has a comment (or sits under a key documented as a whole), every
/// documented key is in the README's values table, and the table names no key that is gone.
#[test]
pub(crate) fn every_value_is_documented() {
    let values = read(chart().join("values.yaml"));
    let readme = read(chart().join("README.md"));
    let mut stack: Vec<(usize, String, bool)> = Vec::new();
    let mut comment: Vec<String> = Vec::new();
    let mut documented = BTreeSet::new();
    for (number, line) in values.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            comment.clear();
            continue;
        }
        if let Some(text) = trimmed.strip_prefix('#') {
            comment.push(text.trim().to_string());
            continue;
        }
        if trimmed.starts_with('-') {
            comment.clear();
            continue; // a list item of a default
        }
        let Some((key, _)) = trimmed.split_once(':') else { continue };
        while stack.last().is_some_and(|(i, _, _)| *i >= indent) {
            stack.pop();
        }
        let covered = stack.iter().any(|(_, _, doc)| *doc);
        let doc = comment.first().is_some_and(|c| c.starts_with("-- "));
        let path: Vec<&str> =
            stack.iter().map(|(_, k, _)| k.as_str()).chain(std::iter::once(key)).collect();
        let path = path.join(".");
        assert!(
            covered || !comment.is_empty(),
            "values.yaml line {}: {path} has no comment",
            number + 1
        );
        if doc {
            documented.insert(path.clone());
        }
        stack.push((indent, key.to_string(), doc || covered));
        comment.clear();
    }
    assert!(documented.len() > 100, "{documented:?}");
    let (_, values_section) = readme.split_once("\n## Values\n").expect("a Values section");
    let table: BTreeSet<String> = values_section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split_once("` |").map(|(k, _)| k.to_string()))
        .collect();
    for path in &documented {
        assert!(table.contains(path), "README's values table lacks {path}");
    }
    for key in &table {
        assert!(documented.contains(key), "README documents {key}, which values.yaml lacks");
    }
    // The schema knows every top-level key.
    let schema: Value = serde_json::from_str(&read(chart().join("values.schema.json"))).unwrap();
    for path in &documented {
        let top = path.split('.').next().unwrap();
        assert!(schema["properties"][top].is_object(), "values.schema.json lacks {top}");
    }
}

#[test]
pub(crate) fn dockerfiles_pass_hadolint() {
    let hadolint = tool("hadolint", PYTHON_HINT);
    let root = repo();
    run_ok(
        Command::new(hadolint)
            .arg("--config")
            .arg(root.join(".hadolint.yaml"))
            .arg(root.join("Dockerfile.operator"))
            .arg(root.join("Dockerfile.serving")),
        "hadolint",
    );
    for component in ["operator", "serving"] {
        let text = read(root.join(format!("Dockerfile.{component}")));
        let last_from = text.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
        assert_eq!(last_from, "FROM scratch", "Dockerfile.{component}");
        assert!(text.contains("\nUSER 65532:65532\n"), "Dockerfile.{component}: numeric user");
        assert!(
            text.contains(&format!("ENTRYPOINT [\"/modelship-{component}\"]")),
            "Dockerfile.{component}: entrypoint"
        );
        assert!(text.contains("target-feature=+crt-static"), "Dockerfile.{component}: static");
        assert!(
            text.contains(r#"--cfg getrandom_backend="linux_getrandom""#),
            "Dockerfile.{component}: getrandom without dlsym"
        );
    }
    assert!(
        read(root.join("Dockerfile.serving"))
            .contains("CMD [\"/modelship-serving\", \"healthcheck\"]"),
        "the serving image checks its health with its own binary"
    );
}

#[test]
pub(crate) fn ci_workflow_passes_actionlint() {
    let actionlint = go_tool("actionlint");
    let workflow = repo().join(".github/workflows/ci.yaml");
    let out = run_ok(Command::new(actionlint).arg(&workflow).current_dir(repo()), "actionlint");
    assert!(out.trim().is_empty(), "{out}");
    let text = read(&workflow);
    for needed in ["cargo fmt", "cargo clippy", "make test", "helm lint", "kind", "helm install"] {
        assert!(text.contains(needed), "the workflow lacks {needed}");
    }
}

/// Builds both images with podman from binaries built here (tests/images.sh) and checks what
/// is inside; fails with podman's own error when podman cannot build. That the images run is
/// shown on the node: the chart's operator pods and every model pod run them.
#[test]
pub(crate) fn images_are_static_scratch_images_of_the_binaries_built_here() {
    let (ok, stdout, stderr) = run(Command::new("bash")
        .arg(repo().join("tests/images.sh"))
        .arg("test")
        .current_dir(repo()));
    eprintln!("{stdout}");
    assert!(ok, "tests/images.sh failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    let mut digests = BTreeMap::new();
    for component in ["operator", "serving"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{component}: localhost/")))
            .unwrap_or_else(|| panic!("no inspection line for {component}:\n{stdout}"));
        assert!(line.contains("user 65532:65532"), "{line}");
        assert!(line.contains(&format!("entrypoint ['/modelship-{component}']")), "{line}");
        assert!(line.contains("ports ['8080/tcp']"), "{line}");
        assert!(line.contains(&format!("files ['modelship-{component}']")), "{line}");
        assert!(
            stdout.contains(&format!(
                "{component}: /modelship-{component} --version in an empty root"
            )),
            "{stdout}"
        );
        let digest = line.rsplit("sha256 ").next().unwrap().trim().to_string();
        digests.insert(component, digest);
    }

    // The binary in the image is the one built here.
    let binary = repo().join("target/x86_64-unknown-linux-gnu/release/modelship-operator");
    let sum = run_ok(Command::new("sha256sum").arg(&binary), "sha256sum");
    assert_eq!(sum.split_whitespace().next(), Some(digests["operator"].as_str()));
}
