//! The house-price model: a candle-nn network (linear regression, or a small MLP) with input
//! and output normalisation, stored as safetensors plus a JSON model card.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the weights inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the model card inside a model directory.
pub const CARD_FILE: &str = "model.json";

/// Which network the weights belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// y = w·x + b on normalised inputs.
    Linear,
    /// One hidden ReLU layer.
    Mlp,
}

/// Evaluation on the held-out split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Root mean squared error, in dollars.
    pub rmse: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Training rows.
    pub train_samples: usize,
    /// Held-out rows.
    pub test_samples: usize,
}

/// Everything needed to use the weights, written next to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Model name (the `{name}` of the v2 endpoints).
    pub name: String,
    /// Model version.
    pub version: String,
    /// Network kind.
    pub kind: Kind,
    /// Hidden units (MLP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<usize>,
    /// Input feature names, in order.
    pub feature_names: Vec<String>,
    /// Output name.
    pub output_name: String,
    /// Per-feature mean used for normalisation.
    pub x_mean: Vec<f64>,
    /// Per-feature standard deviation used for normalisation.
    pub x_std: Vec<f64>,
    /// Target mean.
    pub y_mean: f64,
    /// Target standard deviation.
    pub y_std: f64,
    /// Held-out metrics.
    pub metrics: Metrics,
    /// Wall time of training.
    pub training_seconds: f64,
    /// The seed the data and weights came from.
    pub seed: u64,
    /// SHA-256 of the safetensors file, so mismatched files are refused.
    pub weights_sha256: String,
    /// Per feature: which values mean anything, and which the model saw. Cards written before
    /// this field have none, and their inputs are not checked against it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<Bounds>,
}

/// What a feature's values can be, and what the model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// The smallest value that describes a house (an area of 0 does not).
    pub floor: f64,
    /// Whether `floor` itself is allowed (0 bedrooms is a studio; 0 square feet is nothing).
    pub floor_inclusive: bool,
    /// The smallest and largest value in the training data: beyond them the model extrapolates.
    pub trained: [f64; 2],
}

impl Bounds {
    /// Whether `v` describes a house at all.
    pub fn admits(&self, v: f64) -> bool {
        v > self.floor || (self.floor_inclusive && v == self.floor)
    }

    /// Whether `v` lies within the training data.
    pub fn trained_on(&self, v: f64) -> bool {
        (self.trained[0]..=self.trained[1]).contains(&v)
    }
}

/// Values of one feature outside the training data: answered, with a warning.
#[derive(Debug, Clone, PartialEq)]
pub struct OutOfRange<'a> {
    /// The feature's name.
    pub feature: &'a str,
    /// The first such value.
    pub first: f64,
    /// How many rows had one.
    pub count: u64,
    /// The training range.
    pub trained: [f64; 2],
}

impl std::fmt::Display for OutOfRange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} is outside the training range {} to {}: the prediction is an extrapolation",
            self.feature, self.first, self.trained[0], self.trained[1]
        )
    }
}

/// Why a model cannot be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file is missing.
    #[error("{0} is missing: run `inference-app train --out {1}` first")]
    Missing(PathBuf, String),
    /// The card is not valid JSON of the expected shape.
    #[error("model card {0} is invalid: {1}")]
    BadCard(PathBuf, String),
    /// The weights do not belong to the card.
    #[error("{0} does not match its model card: {1}")]
    Mismatch(PathBuf, String),
    /// A request has the wrong number of features.
    #[error("expected {expected} features ({names}), got {got}")]
    FeatureCount {
        /// How many the model takes.
        expected: usize,
        /// Their names.
        names: String,
        /// How many came.
        got: usize,
    },
    /// A feature is NaN or infinite.
    #[error("feature {index} of row {row} is not a finite number")]
    NotFinite {
        /// Row index.
        row: usize,
        /// Feature index.
        index: usize,
    },
    /// A feature value that describes no house.
    #[error(
        "feature {name} of row {row} is {value}: it must be {rule} {floor} (the model was trained on {low} to {high})"
    )]
    OutOfDomain {
        /// Row index.
        row: usize,
        /// Feature name.
        name: String,
        /// The value sent.
        value: f64,
        /// `greater than` or `at least`.
        rule: &'static str,
        /// The floor.
        floor: f64,
        /// Training minimum.
        low: f64,
        /// Training maximum.
        high: f64,
    },
    /// An empty batch.
    #[error("the batch is empty: send at least one row of features")]
    Empty,
    /// candle failed.
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The network.
#[derive(Debug)]
pub enum Net {
    /// Linear regression.
    Linear(Linear),
    /// Two layers with ReLU between.
    Mlp(Linear, Linear),
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Net::Linear(l) => l.forward(x),
            Net::Mlp(a, b) => b.forward(&a.forward(x)?.relu()?),
        }
    }
}

impl Net {
    /// Builds the network from named tensors (`l1.weight`, `l1.bias`, and `l2.*` for the MLP).
    pub fn from_tensors(kind: Kind, t: &HashMap<String, Tensor>) -> Result<Net, String> {
        let get = |n: &str| {
            t.get(n)
                .cloned()
                .ok_or_else(|| format!("tensor {n} is missing"))
        };
        let l1 = Linear::new(get("l1.weight")?, Some(get("l1.bias")?));
        Ok(match kind {
            Kind::Linear => Net::Linear(l1),
            Kind::Mlp => Net::Mlp(l1, Linear::new(get("l2.weight")?, Some(get("l2.bias")?))),
        })
    }
}

/// A loaded model, ready to predict.
#[derive(Debug)]
pub struct Model {
    net: Net,
    /// Its card.
    pub card: ModelCard,
    device: Device,
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl Model {
    /// Loads `model.json` and `model.safetensors` from `dir`, refusing files that do not match.
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        let card_path = dir.join(CARD_FILE);
        let weights_path = dir.join(WEIGHTS_FILE);
        let shown = dir.display().to_string();
        for p in [&card_path, &weights_path] {
            if !p.exists() {
                return Err(ModelError::Missing(p.clone(), shown));
            }
        }
        let card: ModelCard = serde_json::from_slice(&std::fs::read(&card_path)?)
            .map_err(|e| ModelError::BadCard(card_path.clone(), e.to_string()))?;
        let n = card.feature_names.len();
        if n == 0 || card.x_mean.len() != n || card.x_std.len() != n {
            return Err(ModelError::BadCard(
                card_path,
                "feature_names, x_mean and x_std must have the same, non-zero length".into(),
            ));
        }
        let sha = file_sha256(&weights_path)?;
        if sha != card.weights_sha256 {
            return Err(ModelError::Mismatch(
                weights_path,
                format!("sha256 {sha}, the card says {}", card.weights_sha256),
            ));
        }
        let device = Device::Cpu;
        let tensors = candle_core::safetensors::load(&weights_path, &device)?;
        let w = tensors
            .get("l1.weight")
            .ok_or_else(|| ModelError::Mismatch(weights_path.clone(), "no l1.weight".into()))?;
        if w.dims().get(1) != Some(&n) {
            return Err(ModelError::Mismatch(
                weights_path,
                format!(
                    "l1.weight has shape {:?} but the card lists {n} features",
                    w.dims()
                ),
            ));
        }
        let net = Net::from_tensors(card.kind, &tensors)
            .map_err(|e| ModelError::Mismatch(weights_path, e))?;
        Ok(Model { net, card, device })
    }

    /// Builds a model from parts (used by training and tests).
    pub fn from_parts(net: Net, card: ModelCard) -> Model {
        Model {
            net,
            card,
            device: Device::Cpu,
        }
    }

    /// Number of input features.
    pub fn features(&self) -> usize {
        self.card.feature_names.len()
    }

    /// Checks a batch before it reaches the network.
    pub fn validate(&self, rows: &[Vec<f64>]) -> Result<(), ModelError> {
        if rows.is_empty() {
            return Err(ModelError::Empty);
        }
        let n = self.features();
        for (r, row) in rows.iter().enumerate() {
            if row.len() != n {
                return Err(ModelError::FeatureCount {
                    expected: n,
                    names: self.card.feature_names.join(", "),
                    got: row.len(),
                });
            }
            if let Some(i) = row.iter().position(|v| !v.is_finite()) {
                return Err(ModelError::NotFinite { row: r, index: i });
            }
            for ((v, b), name) in row
                .iter()
                .zip(&self.card.bounds)
                .zip(&self.card.feature_names)
            {
                if !b.admits(*v) {
                    return Err(ModelError::OutOfDomain {
                        row: r,
                        name: name.clone(),
                        value: *v,
                        rule: if b.floor_inclusive {
                            "at least"
                        } else {
                            "greater than"
                        },
                        floor: b.floor,
                        low: b.trained[0],
                        high: b.trained[1],
                    });
                }
            }
        }
        Ok(())
    }

    /// The features with values outside the training range, each with how many rows.
    pub fn out_of_range(&self, rows: &[Vec<f64>]) -> Vec<OutOfRange<'_>> {
        let features = self.card.bounds.iter().zip(&self.card.feature_names);
        features
            .enumerate()
            .filter_map(|(i, (b, name))| {
                let mut outside = rows.iter().map(|r| r[i]).filter(|v| !b.trained_on(*v));
                let first = outside.next()?;
                Some(OutOfRange {
                    feature: name,
                    first,
                    count: 1 + outside.count() as u64,
                    trained: b.trained,
                })
            })
            .collect()
    }

    /// Predicts every row in one forward pass.
    pub fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<f64>, ModelError> {
        self.validate(rows)?;
        let n = self.features();
        let mut flat = Vec::with_capacity(rows.len() * n);
        for row in rows {
            for (i, v) in row.iter().enumerate() {
                flat.push(((v - self.card.x_mean[i]) / self.card.x_std[i]) as f32);
            }
        }
        let x = Tensor::from_vec(flat, (rows.len(), n), &self.device)?;
        let y = self
            .net
            .forward(&x)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(y.into_iter()
            .map(|v| f64::from(v) * self.card.y_std + self.card.y_mean)
            .collect())
    }
}
