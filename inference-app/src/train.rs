//! `train`: a synthetic house-price data set and a candle-nn model fitted to it.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Module, Optimizer, ParamsAdamW};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{
    Bounds, CARD_FILE, Kind, Metrics, Model, ModelCard, Net, WEIGHTS_FILE, file_sha256,
};

/// Training options.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Where to write model.safetensors and model.json.
    #[arg(long, default_value = "model")]
    pub out: std::path::PathBuf,
    /// Rows of synthetic data.
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    /// Seed of the data and of the initial weights.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Network kind.
    #[arg(long, value_enum, default_value = "linear")]
    pub kind: Kind,
    /// Hidden units of the MLP.
    #[arg(long, default_value_t = 16)]
    pub hidden: usize,
    /// Add bedrooms and age as features (square feet only by default).
    #[arg(long)]
    pub extra_features: bool,
    /// Full-batch optimisation steps.
    #[arg(long, default_value_t = 400)]
    pub epochs: usize,
    /// Model name.
    #[arg(long, default_value = "house-price")]
    pub name: String,
    /// Model version.
    #[arg(long, default_value = "1.0.0")]
    pub version: String,
}

/// A data set: rows of features and their prices.
#[derive(Debug, Clone)]
pub struct Data {
    /// Feature names.
    pub names: Vec<String>,
    /// Rows.
    pub x: Vec<Vec<f64>>,
    /// Prices.
    pub y: Vec<f64>,
}

fn normal(rng: &mut StdRng) -> f64 {
    rng.sample(rand_distr::StandardNormal)
}

/// price ≈ 50,000 + 150·sqft (+ 10,000·bedrooms − 500·age) + noise(σ = 15,000).
pub fn synthetic(samples: usize, seed: u64, extra: bool) -> Data {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut names = vec!["square_feet".to_string()];
    if extra {
        names.extend(["bedrooms".to_string(), "age_years".to_string()]);
    }
    let mut x = Vec::with_capacity(samples);
    let mut y = Vec::with_capacity(samples);
    for _ in 0..samples {
        let sqft = rng.random_range(500.0..4000.0);
        let mut price = 50_000.0 + 150.0 * sqft + 15_000.0 * normal(&mut rng);
        let mut row = vec![sqft];
        if extra {
            let bedrooms = f64::from(rng.random_range(1u8..=5));
            let age = rng.random_range(0.0..100.0);
            price += 10_000.0 * bedrooms - 500.0 * age;
            row.extend([bedrooms, age]);
        }
        x.push(row);
        y.push(price);
    }
    Data { names, x, y }
}

fn mean_std(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = v.clone().count().max(1) as f64;
    let mean = v.clone().sum::<f64>() / n;
    let var = v.map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt().max(1e-12))
}

/// RMSE and R² of predictions against truth.
pub fn evaluate(pred: &[f64], truth: &[f64]) -> (f64, f64) {
    let n = truth.len().max(1) as f64;
    let mean = truth.iter().sum::<f64>() / n;
    let ss_res: f64 = pred.iter().zip(truth).map(|(p, t)| (t - p).powi(2)).sum();
    let ss_tot: f64 = truth.iter().map(|t| (t - mean).powi(2)).sum();
    (
        (ss_res / n).sqrt(),
        1.0 - ss_res / ss_tot.max(f64::MIN_POSITIVE),
    )
}

/// A variable of `dims` drawn from N(0, scale²) with the seeded generator.
fn seeded(rng: &mut StdRng, dims: &[usize], scale: f64) -> candle_core::Result<Var> {
    let n = dims.iter().product();
    let data: Vec<f32> = (0..n).map(|_| (normal(rng) * scale) as f32).collect();
    Var::from_tensor(&Tensor::from_vec(data, dims, &Device::Cpu)?)
}

/// Trains on `args` and writes the model; returns the card.
pub fn train(args: &TrainArgs) -> anyhow::Result<ModelCard> {
    let start = Instant::now();
    let data = synthetic(args.samples, args.seed, args.extra_features);
    let split = data.x.len() * 4 / 5;
    let (xtr, xte) = data.x.split_at(split);
    let (ytr, yte) = data.y.split_at(split);
    let f = data.names.len();
    let stats: Vec<(f64, f64)> = (0..f)
        .map(|i| mean_std(xtr.iter().map(move |r| r[i])))
        .collect();
    let (y_mean, y_std) = mean_std(ytr.iter().copied());

    let dev = Device::Cpu;
    let norm: Vec<f32> = xtr
        .iter()
        .flat_map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, v)| ((v - stats[i].0) / stats[i].1) as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    let x = Tensor::from_vec(norm, (xtr.len(), f), &dev)?;
    let yn: Vec<f32> = ytr.iter().map(|v| ((v - y_mean) / y_std) as f32).collect();
    let y = Tensor::from_vec(yn, (ytr.len(), 1), &dev)?;

    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
    let (vars, names): (Vec<Var>, Vec<&str>) = match args.kind {
        Kind::Linear => (
            vec![
                seeded(&mut rng, &[1, f], 0.1)?,
                seeded(&mut rng, &[1], 0.0)?,
            ],
            vec!["l1.weight", "l1.bias"],
        ),
        Kind::Mlp => (
            vec![
                seeded(&mut rng, &[args.hidden, f], (1.0 / f as f64).sqrt())?,
                seeded(&mut rng, &[args.hidden], 0.0)?,
                seeded(
                    &mut rng,
                    &[1, args.hidden],
                    (1.0 / args.hidden as f64).sqrt(),
                )?,
                seeded(&mut rng, &[1], 0.0)?,
            ],
            vec!["l1.weight", "l1.bias", "l2.weight", "l2.bias"],
        ),
    };
    let tensors = |vars: &[Var]| -> HashMap<String, Tensor> {
        names
            .iter()
            .zip(vars)
            .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
            .collect()
    };
    let mut opt = AdamW::new(
        vars.clone(),
        ParamsAdamW {
            lr: 0.05,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    for _ in 0..args.epochs {
        let net = Net::from_tensors(args.kind, &tensors(&vars)).map_err(anyhow::Error::msg)?;
        let loss = net.forward(&x)?.sub(&y)?.sqr()?.mean_all()?;
        opt.backward_step(&loss)?;
    }

    std::fs::create_dir_all(&args.out)?;
    let weights_path = args.out.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors(&vars), &weights_path)?;
    // safetensors creates the file 0600; an image's non-root user must be able to read it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&weights_path, std::fs::Permissions::from_mode(0o644))?;
    }
    let mut card = ModelCard {
        name: args.name.clone(),
        version: args.version.clone(),
        kind: args.kind,
        hidden: (args.kind == Kind::Mlp).then_some(args.hidden),
        feature_names: data.names.clone(),
        output_name: "predicted_price".into(),
        x_mean: stats.iter().map(|s| s.0).collect(),
        x_std: stats.iter().map(|s| s.1).collect(),
        y_mean,
        y_std,
        metrics: Metrics {
            rmse: 0.0,
            r2: 0.0,
            train_samples: xtr.len(),
            test_samples: xte.len(),
        },
        training_seconds: 0.0,
        seed: args.seed,
        weights_sha256: file_sha256(&weights_path)?,
        bounds: (0..f)
            .map(|i| {
                let (low, high) = xtr
                    .iter()
                    .map(|r| r[i])
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                        (l.min(v), h.max(v))
                    });
                Bounds {
                    floor: 0.0,
                    // An area must be positive; a count or an age may be zero.
                    floor_inclusive: data.names[i] != "square_feet",
                    trained: [low.floor(), high.ceil()],
                }
            })
            .collect(),
    };
    let net = Net::from_tensors(args.kind, &tensors(&vars)).map_err(anyhow::Error::msg)?;
    let model = Model::from_parts(net, card.clone());
    let pred = model.predict(xte)?;
    let (rmse, r2) = evaluate(&pred, yte);
    card.metrics.rmse = rmse;
    card.metrics.r2 = r2;
    card.training_seconds = start.elapsed().as_secs_f64();
    std::fs::write(args.out.join(CARD_FILE), serde_json::to_vec_pretty(&card)?)?;
    Ok(card)
}
