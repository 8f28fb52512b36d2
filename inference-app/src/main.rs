//! `inference-app train | serve | load`.

use clap::{Parser, Subcommand};
use inference_app::{load, serve, train};

/// Spans, log records and responses are allocated on tokio workers and freed on the exporter
/// threads; glibc's arenas lock on those cross-thread frees, jemalloc's thread caches do not.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Two arenas are enough for two cores, and freed pages go back to the system within a
/// second: this keeps the service's RSS near its live data.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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
    /// Generate load against a running service.
    Load(load::LoadArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Train(a) => {
            let card = train::train(&a)?;
            println!("{}", serde_json::to_string_pretty(&card)?);
            Ok(())
        }
        Command::Serve(a) => serve::run(a),
        Command::Load(a) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(load::run(&a))?;
            print!("{}", report.render());
            Ok(())
        }
    }
}
