//! `inference-app train | serve`.

use clap::{Parser, Subcommand};
use inference_app::{serve, train};

/// jemalloc: spans and log records are allocated on Tokio's workers and freed on the
/// exporters' threads, which glibc's allocator handles with lock contention and fragmentation.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "inference-app",
    version,
    about = "House-price inference with candle, instrumented through OTEL_* env"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the model on synthetic data and write safetensors + a model card.
    Train(train::TrainArgs),
    /// Serve the model over HTTP.
    Serve(serve::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Train(a) => {
            let card = train::train(&a)?;
            println!("{}", serde_json::to_string_pretty(&card)?);
            Ok(())
        }
        Command::Serve(a) => serve::run(a),
    }
}
