//! The house rules of the workspace's source, checked by reading it: each operator pipeline
//! step imports only the steps below it, and each serving module only the modules below it
//! (so no import circle can form), the deciding and building steps do no I/O, and the words
//! written to status, events and serving pods are spelled once. Test code (`tests`,
//! `fixtures`, `#[cfg(test)]` blocks) is not checked.

use std::fs;
use std::path::{Path, PathBuf};

use modelship_operator::vocabulary::{ConditionType, Reason};

/// A module and the modules it must not import.
const LAYERS: &[(&str, &[&str])] = &[
    ("vocabulary", &["analysis", "plan", "observe", "desired", "status", "apply", "report"]),
    ("analysis", &["plan", "observe", "desired", "status", "apply", "report", "controller"]),
    ("plan", &["observe", "desired", "status", "apply", "report", "controller", "watch"]),
    ("desired", &["observe", "status", "apply", "report", "controller", "analysis"]),
    ("observe", &["status", "apply", "report", "controller"]),
    ("status", &["observe", "apply", "report", "controller", "analysis"]),
    ("apply", &["plan", "observe", "status", "report", "controller", "analysis"]),
    ("report", &["observe", "desired", "controller", "analysis"]),
    ("notify", &["observe", "desired", "status", "apply", "report", "controller", "analysis"]),
];

/// Modules that decide or build: pure functions of their inputs.
const PURE: &[&str] =
    &["plan", "desired", "status", "analysis/judge.rs", "analysis/measure.rs", "notify/mod.rs"];
/// What a pure module must not use.
const IO: &[&str] = &["kube::Api", "kube::Client", "tokio::", "Timestamp::now", "crate::http"];

/// The serving binary's modules, lowest first: each may use only those before it
/// (`lib.rs` and `main.rs` stand above them all).
const SERVING_LAYERS: &[&str] = &[
    "error",
    "runtime",
    "fetch",
    "drift",
    "feedback",
    "metrics",
    "decode",
    "batching",
    "models",
    "predlog",
    "config",
    "telemetry",
    "state",
    "loader",
    "healthcheck",
    "routes",
    "validate",
    "server",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The product code of an operator module (a file, or a directory with its files), test
/// code removed.
fn product_code(module: &str) -> Vec<(PathBuf, String)> {
    product_code_in(&src(), module)
}

/// [`product_code`] of a module of the crate whose sources are in `src`.
fn product_code_in(src: &Path, module: &str) -> Vec<(PathBuf, String)> {
    let base = src.join(module);
    let mut files = Vec::new();
    let single = if module.ends_with(".rs") { base.clone() } else { base.with_extension("rs") };
    if single.is_file() {
        files.push(single);
    }
    if base.is_dir() {
        collect(&base, &mut files);
    }
    assert!(!files.is_empty(), "no source for module {module}");
    files
        .into_iter()
        .filter(|path| !is_test_file(path))
        .map(|path| {
            let text = fs::read_to_string(&path).expect("readable source");
            let product = text.split("#[cfg(test)]").next().unwrap_or_default().to_string();
            (path, product)
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "tests")
        || path.file_stem().is_some_and(|s| s == "tests" || s == "fixtures")
}

/// Every `crate::a` or `crate::a::b` path the code names, `use crate::{a, b::c}` included.
fn crate_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            paths.extend(group.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()));
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            paths.push(rest[..end].trim_end_matches(':').to_string());
        }
    }
    paths
}

#[test]
fn each_step_imports_only_the_steps_below_it() {
    let mut breaches = Vec::new();
    for (module, forbidden) in LAYERS {
        for (path, code) in product_code(module) {
            for named in crate_paths(&code) {
                let hit =
                    forbidden.iter().find(|f| named == **f || named.starts_with(&format!("{f}::")));
                if let Some(f) = hit {
                    breaches.push(format!(
                        "{} names crate::{named} ({module} must not use {f})",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(breaches.is_empty(), "imports against the pipeline's order:\n{}", breaches.join("\n"));
}

/// Whether `named` (a path after `crate::`) is `module` or inside it.
fn names_module(named: &str, module: &str) -> bool {
    named == module || named.starts_with(&format!("{module}::"))
}

#[test]
fn each_serving_module_imports_only_the_modules_below_it() {
    let src = workspace().join("serving").join("src");
    let mut breaches = Vec::new();
    for (at, module) in SERVING_LAYERS.iter().enumerate() {
        for (path, code) in product_code_in(&src, module) {
            for named in crate_paths(&code) {
                if let Some(upper) =
                    SERVING_LAYERS[at + 1..].iter().find(|m| names_module(&named, m))
                {
                    breaches.push(format!(
                        "{} names crate::{named} ({module} stands below {upper})",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(breaches.is_empty(), "serving imports against the layers:\n{}", breaches.join("\n"));

    let unplaced: Vec<String> = fs::read_dir(&src)
        .expect("readable directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_string()))
        .filter(|name| !["lib", "main"].contains(&name.as_str()))
        .filter(|name| !SERVING_LAYERS.contains(&name.as_str()))
        .collect();
    assert!(unplaced.is_empty(), "serving modules with no place in SERVING_LAYERS: {unplaced:?}");
}

#[test]
fn deciding_and_building_do_no_io() {
    let mut breaches = Vec::new();
    for module in PURE {
        for (path, code) in product_code(module) {
            for io in IO.iter().filter(|io| code.contains(**io)) {
                breaches.push(format!("{} uses {io}", path.display()));
            }
        }
    }
    assert!(breaches.is_empty(), "I/O in a pure step:\n{}", breaches.join("\n"));
}

/// The same word with another meaning: `RollingUpdate` is also a Deployment strategy type.
const OTHER_MEANINGS: &[(&str, &str)] = &[("RollingUpdate", "desired/deployment.rs")];

#[test]
fn status_and_event_words_are_spelled_once() {
    let all = product_code("");
    let mut words: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    words.extend(ConditionType::ALL.iter().map(|c| c.as_str()));
    words.extend(["True", "False"]);
    for word in words {
        let literal = format!("\"{word}\"");
        let other_meaning =
            |path: &Path| OTHER_MEANINGS.iter().any(|(w, file)| *w == word && path.ends_with(file));
        let places: Vec<_> = all
            .iter()
            .filter(|(path, code)| code.contains(&literal) && !other_meaning(path))
            .map(|(p, _)| p.display().to_string())
            .collect();
        // Reasons and condition types are spelled by their variant names; statuses once.
        let allowed = usize::from(word == "True" || word == "False");
        assert!(places.len() <= allowed, "{literal} is spelled in {places:?}");
        if allowed == 1 {
            assert!(places.iter().all(|p| p.ends_with("vocabulary.rs")), "{literal}: {places:?}");
        }
    }
}

/// Metric names analysis reads, and the environment the serving pods get, are the serving
/// binary's: the operator takes them from the shared contract.
#[test]
fn serving_names_come_from_the_contract() {
    let spelled = |module: &str, prefix: &str| -> Vec<String> {
        let files = product_code(module).into_iter();
        files
            .filter(|(_, code)| code.contains(prefix))
            .map(|(p, _)| p.display().to_string())
            .collect()
    };
    assert_eq!(spelled("", "\"ml_"), Vec::<String>::new(), "metric names");
    assert_eq!(spelled("desired", "\"MODELSHIP_"), Vec::<String>::new(), "serving environment");
}

/// Longest product file without a stated reason.
const MAX_LINES: usize = 450;
/// The phrase a longer file's module doc gives its reason with.
const REASON: &str = "//! Why this file is long:";

#[test]
fn product_files_stay_short_or_say_why() {
    let mut files = Vec::new();
    for krate in ["contract", "crds", "operator", "serving"] {
        collect(&workspace().join(krate).join("src"), &mut files);
    }
    let long: Vec<String> = files
        .into_iter()
        .filter(|path| !is_test_file(path))
        .filter_map(|path| {
            let text = fs::read_to_string(&path).expect("readable source");
            let lines = text.lines().count();
            (lines > MAX_LINES && !text.contains(REASON))
                .then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines without a reason in the module doc: {long:?}");
}
