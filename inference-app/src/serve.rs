//! `serve`: load the model, set up telemetry and logging, and run the HTTP service until
//! SIGTERM, then drain requests and flush all three signals.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_appender::non_blocking::NonBlockingBuilder;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::http::{AppState, DEFAULT_BODY_LIMIT, router};
use crate::metrics::AppMetrics;
use crate::model::Model;
use crate::telemetry;

/// JSON lines that may wait for stdout; beyond them lines are dropped (and counted), so a
/// request never waits for a slow log reader.
const LOG_LINES: usize = 16_384;

/// Serve options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Directory with model.safetensors and model.json.
    #[arg(long, env = "MODEL_DIR", default_value = "model")]
    pub model_dir: PathBuf,
    /// Listen address.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8000")]
    pub addr: SocketAddr,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = DEFAULT_BODY_LIMIT)]
    pub max_body_bytes: usize,
}

/// Whether a log record comes from the telemetry pipeline itself (the SDK, its HTTP and gRPC
/// clients): those go to stdout only, since over OTLP they would feed the exporter they report
/// on.
fn from_the_pipeline(target: &str) -> bool {
    ["opentelemetry", "hyper", "h2", "tonic", "tower", "reqwest"]
        .iter()
        .any(|p| target.starts_with(p))
}

/// One JSON object per log line, its fields at the top level.
pub fn json_lines<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
}

/// Runs the service (blocking until shutdown).
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // A 1×1 model gains nothing from a thread pool per forward pass: requests are already
    // parallel across Tokio's workers. RAYON_NUM_THREADS set by the user still wins.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet; this runs before the runtime and any candle call.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    // Refuse to start without a usable model, before anything else happens.
    let model = Arc::new(Model::load(&args.model_dir)?);
    // https endpoints: the TLS provider of reqwest's and tonic's rustls.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    // The exporters' connections run on a runtime of their own: tonic encodes a batch in its
    // connection task, which on the request runtime held a worker for a millisecond a batch.
    let export_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otel-export")
        .enable_all()
        .build()?;
    let choice = telemetry::choose(|k| std::env::var(k).ok());
    let tel = {
        let _rt = export_rt.enter();
        telemetry::init(choice, Resource::builder().build())?
    };
    // The writer thread flushes whenever its queue runs empty, so lines that queued up while it
    // wrote go out in one write(2) instead of one each (stdout itself flushes every line).
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let (writer, _flush_on_exit) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_LINES)
        .thread_name("log-writer")
        .finish(std::io::BufWriter::with_capacity(1 << 16, stdout));
    tel.dropped.watch_log_lines(writer.error_counter());
    let filter = EnvFilter::try_from_env("LOG_LEVEL").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = json_lines(writer);
    let otlp = tel.logger.as_ref().map(|p| {
        OpenTelemetryTracingBridge::new(p)
            .with_filter(filter_fn(|m| !from_the_pipeline(m.target())))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(otlp)
        .try_init()?;
    for w in &tel.choice.warnings {
        tracing::warn!("{w}");
    }

    let card = &model.card;
    let meter = tel.meter.meter("inference-app");
    let metrics = AppMetrics::new(&meter, &card.name, &card.version, tel.dropped.clone());
    let state = Arc::new(AppState::new(
        model.clone(),
        metrics,
        tel.scrape.clone(),
        tel.tracer.tracer("inference-app"),
        tel.tracing(),
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty()),
    ));
    // Warm up: one forward pass before reporting ready.
    model.predict(&[vec![1500.0; model.features()]])?;
    state.ready.store(true, Ordering::Release);

    let app = router(state.clone(), args.max_body_bytes);
    let served = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        tracing::info!(addr = %listener.local_addr()?, model = %card.name, version = %card.version,
            tracing_enabled = state.tracing, "serving");
        // A reply goes out in one write; Nagle's algorithm would only hold it back.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
            tracing::info!("shutting down: draining requests");
        })
        .await?;
        anyhow::Ok(())
    });
    // The exporters block on their threads while the runtime's workers run their connections.
    tracing::info!("stopped serving; flushing telemetry");
    tel.shutdown();
    drop(rt);
    drop(export_rt);
    served
}
