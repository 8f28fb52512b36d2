//! Every kotel object in examples/ deserialises into the CRD types, and every Collector's
//! configuration passes validation: the examples users copy are never broken.

use kotel_operator::collector::{Collector, validate_config};
use kotel_operator::instrumentation::Instrumentation;
use serde::Deserialize;

#[test]
fn examples_are_valid_kotel_objects() {
    let dir = std::path::PathBuf::from(manifest_dir()).join("../examples");
    let (mut instrumentations, mut collectors) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = serde_json::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let at = format!("{} ({})", path.display(), v["metadata"]["name"]);
            match v["kind"].as_str() {
                Some("Instrumentation") => {
                    serde_json::from_value::<Instrumentation>(v)
                        .unwrap_or_else(|e| panic!("{at}: {e}"));
                    instrumentations += 1;
                }
                Some("Collector") => {
                    let c: Collector =
                        serde_json::from_value(v).unwrap_or_else(|e| panic!("{at}: {e}"));
                    validate_config(&c.spec.config).unwrap_or_else(|e| panic!("{at}: {e}"));
                    collectors += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        instrumentations >= 1 && collectors >= 2,
        "examples/ lost its kotel objects"
    );
}

/// The crate's directory, as cargo gives it when it runs the test. A target directory shared
/// between checkouts (CI's cache) can hold a binary built in another checkout, whose
/// compile-time `env!` path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}
