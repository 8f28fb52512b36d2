//! The crate stays small enough to read as an example, and its modules import each other
//! without a cycle.

use std::collections::BTreeMap;

/// Module name → the crate modules it imports (`use crate::x`, `crate::x::` paths).
fn imports() -> BTreeMap<String, Vec<String>> {
    let src = std::path::PathBuf::from(manifest_dir()).join("src");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if matches!(name.as_str(), "lib" | "main") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut deps: Vec<String> = text
            .match_indices("crate::")
            .map(|(i, _)| {
                text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect()
            })
            .filter(|d: &String| !d.is_empty() && *d != name)
            .collect();
        deps.sort();
        deps.dedup();
        graph.insert(name, deps);
    }
    graph
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports();
    assert!(
        graph.contains_key("http") && graph.contains_key("telemetry"),
        "{graph:?}"
    );
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, Vec<String>>,
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) {
        if done.contains(&m) {
            return;
        }
        assert!(
            !path.contains(&m),
            "import cycle: {} -> {m}",
            path.join(" -> ")
        );
        path.push(m);
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done);
        }
        path.pop();
        done.push(m);
    }
    let mut done = Vec::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_crate_is_at_most_2500_lines() {
    let src = std::path::PathBuf::from(manifest_dir()).join("src");
    let lines: usize = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .count()
        })
        .sum();
    assert!(lines <= 2500, "inference-app/src has {lines} lines");
}

/// The crate's directory, as cargo gives it when it runs the test. A target directory shared
/// between checkouts (CI's cache) can hold a binary built in another checkout, whose
/// compile-time `env!` path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}
