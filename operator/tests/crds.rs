//! The checked-in CRDs (crds/ and the chart's copy) must be exactly what the Rust types generate.

#[test]
fn checked_in_crds_match_the_rust_types() {
    let generated = kotel_operator::crds_yaml();
    let root = std::path::PathBuf::from(manifest_dir()).join("..");
    for path in [
        "crds/kotel.dev.yaml",
        "charts/kotel-operator/crds/kotel.dev.yaml",
    ] {
        let on_disk = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{path} is out of date with the CRD types: run `make crds` (which also refreshes the chart's copy)"
        );
    }
}

#[test]
fn crds_carry_names_columns_and_validation() {
    let y = kotel_operator::crds_yaml();
    for needle in [
        "shortNames:\n    - kinst",
        "shortNames:\n    - kcol",
        "categories:\n    - kotel",
        "name: Workloads",
        "name: Mode",
        "subresources:\n      status: {}",
        "as the OpenTelemetry Operator''s Instrumentation writes it",
        "- http/protobuf\n",
        "- parentbased_traceidratio\n",
        "x-kubernetes-preserve-unknown-fields: true",
    ] {
        assert!(y.contains(needle), "generated CRDs lack {needle:?}");
    }
}

/// The crate's directory, as cargo gives it when it runs the test. A target directory shared
/// between checkouts (CI's cache) can hold a binary built in another checkout, whose
/// compile-time `env!` path is gone.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}
