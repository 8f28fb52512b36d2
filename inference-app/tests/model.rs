//! Training, loading and validating the model: what `train` writes, `serve` loads or refuses.

use std::path::Path;

use inference_app::model::{CARD_FILE, Kind, Model, ModelError, WEIGHTS_FILE};
use inference_app::train::{TrainArgs, evaluate, train};

fn args(dir: &Path, kind: Kind) -> TrainArgs {
    TrainArgs {
        out: dir.to_path_buf(),
        samples: 2000,
        seed: 42,
        kind,
        hidden: 16,
        extra_features: false,
        epochs: 400,
        name: "house-price".into(),
        version: "1.0.0".into(),
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("inference-app-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn linear_model_fits_and_predicts_1500_sqft() {
    let dir = tmp("linear");
    let card = train(&args(&dir, Kind::Linear)).unwrap();
    assert!(card.metrics.r2 > 0.95, "R² {}", card.metrics.r2);
    let m = Model::load(&dir).unwrap();
    let p = m.predict(&[vec![1500.0]]).unwrap()[0];
    assert!((p - 275_000.0).abs() / 275_000.0 < 0.05, "predicted {p}");
    let batch = m
        .predict(&[vec![1000.0], vec![2000.0], vec![3000.0]])
        .unwrap();
    assert!(batch[0] < batch[1] && batch[1] < batch[2]);
}

#[test]
fn model_files_are_readable_by_an_images_non_root_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp("modes");
    train(&args(&dir, Kind::Linear)).unwrap();
    for f in [WEIGHTS_FILE, CARD_FILE] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o044, 0o044, "{f} has mode {mode:o}");
    }
}

#[test]
fn mlp_and_extra_features_train_too() {
    let dir = tmp("mlp");
    let mut a = args(&dir, Kind::Mlp);
    a.extra_features = true;
    let card = train(&a).unwrap();
    assert_eq!(card.feature_names.len(), 3);
    assert!(card.metrics.r2 > 0.9, "R² {}", card.metrics.r2);
    let m = Model::load(&dir).unwrap();
    assert!(matches!(
        m.predict(&[vec![1500.0]]),
        Err(ModelError::FeatureCount {
            expected: 3,
            got: 1,
            ..
        })
    ));
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let (a, b) = (tmp("det-a"), tmp("det-b"));
    let ca = train(&args(&a, Kind::Linear)).unwrap();
    let cb = train(&args(&b, Kind::Linear)).unwrap();
    assert_eq!(ca.weights_sha256, cb.weights_sha256);
    let mut other = args(&tmp("det-c"), Kind::Linear);
    other.seed = 7;
    assert_ne!(train(&other).unwrap().weights_sha256, ca.weights_sha256);
}

#[test]
fn loading_refuses_missing_or_mismatched_files() {
    let dir = tmp("refuse");
    assert!(matches!(Model::load(&dir), Err(ModelError::Missing(..))));
    train(&args(&dir, Kind::Linear)).unwrap();
    let other = tmp("refuse-other");
    let mut a = args(&other, Kind::Linear);
    a.seed = 9;
    train(&a).unwrap();
    std::fs::copy(other.join(WEIGHTS_FILE), dir.join(WEIGHTS_FILE)).unwrap();
    let e = Model::load(&dir).unwrap_err();
    assert!(matches!(e, ModelError::Mismatch(..)), "{e}");
    assert!(e.to_string().contains("does not match its model card"));
    std::fs::write(dir.join(CARD_FILE), "{not json").unwrap();
    assert!(matches!(Model::load(&dir), Err(ModelError::BadCard(..))));
}

#[test]
fn validation_rejects_bad_rows() {
    let dir = tmp("validate");
    train(&args(&dir, Kind::Linear)).unwrap();
    let m = Model::load(&dir).unwrap();
    assert!(matches!(m.validate(&[]), Err(ModelError::Empty)));
    assert!(matches!(
        m.validate(&[vec![f64::NAN]]),
        Err(ModelError::NotFinite { row: 0, index: 0 })
    ));
    assert!(matches!(
        m.validate(&[vec![1.0], vec![f64::INFINITY]]),
        Err(ModelError::NotFinite { row: 1, .. })
    ));
    assert!(m.validate(&[vec![1.0], vec![2.0]]).is_ok());
}

#[test]
fn metrics_of_perfect_and_mean_predictions() {
    let t = [1.0, 2.0, 3.0];
    assert_eq!(evaluate(&t, &t), (0.0, 1.0));
    let (_, r2) = evaluate(&[2.0, 2.0, 2.0], &t);
    assert!(r2.abs() < 1e-12);
}
