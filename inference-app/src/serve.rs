//! `serve`: load the model, set up telemetry and logging, and run the HTTP service until
//! SIGTERM, then drain requests and flush telemetry.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::http::{AppState, DEFAULT_BODY_LIMIT, router};
use crate::log_writer;
use crate::metrics::AppMetrics;
use crate::model::Model;
use crate::recorder::{Recorder, Sinks};
use crate::telemetry;

/// Bytes of JSON log lines that may wait for stdout before lines are dropped.
const LOG_BUFFER_CAP: usize = 4 << 20;
/// Finished requests that may wait for the recorder before their spans and log records are
/// dropped (about 300 bytes each).
const RECORD_QUEUE: usize = 8192;

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

/// Runs the service (blocking until shutdown).
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // The model is tiny: spreading one forward pass over a thread pool costs far more in
    // synchronisation than the matmul itself (it halved throughput), and requests are already
    // parallel across tokio's workers. RAYON_NUM_THREADS set by the user still wins.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet; this runs before the runtime and any candle call.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    // Refuse to start without a usable model, before anything else happens.
    let model = Model::load(&args.model_dir)?;
    let env = telemetry::parse(|k| std::env::var(k).ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let resource = Resource::builder().build();
    // The exporters, their gRPC/HTTP connections and the log writer run on threads of their
    // own at a lower CPU priority. tonic encodes a batch inside its connection task: on the
    // request runtime that held a worker for a millisecond or two per batch.
    let (export_rt, tel, log) = telemetry::at_background_priority(|| {
        let export_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otel-export")
            .enable_all()
            .build();
        let tel = match &export_rt {
            Ok(ert) => {
                let _g = ert.enter();
                telemetry::init(env, resource, (&model.card.name, &model.card.version))
            }
            Err(e) => Err(anyhow::anyhow!("starting the telemetry runtime: {e}")),
        };
        let dropped = tel.as_ref().map(|t| t.dropped.clone()).unwrap_or_default();
        let log = log_writer::spawn(std::io::stdout(), LOG_BUFFER_CAP, dropped);
        (export_rt, tel, log)
    });
    let export_rt = export_rt?;
    let mut tel = tel?;
    let (writer, _log_guard) = log?;
    let filter = EnvFilter::try_from_env("LOG_LEVEL").unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer.clone())
        .boxed();
    let otel_logs = tel
        .logger
        .as_ref()
        .map(|p| opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(p).boxed());
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel_logs)
        .try_init()?;
    for w in &tel.env.warnings {
        tracing::warn!("{w}");
    }
    for n in &tel.notes {
        tracing::info!("{n}");
    }

    let (name, version) = (&model.card.name, &model.card.version);
    let meter = tel.meter.as_ref().map(|p| p.meter("inference-app"));
    let metrics = Arc::new(AppMetrics::new(
        meter.as_ref(),
        name,
        version,
        tel.dropped.clone(),
    ));
    let metrics_export = match tel.otlp_metrics.take() {
        Some(out) => Some(telemetry::at_background_priority(|| metrics.export(out))?),
        None => None,
    };
    let sinks = Sinks {
        logs: tel.access_logs.take(),
        spans: tel.spans.take(),
    };
    let recorder = Recorder::new(sinks, RECORD_QUEUE, tel.dropped.clone());
    let recording = telemetry::at_background_priority(|| recorder.start())?;
    let state = AppState::new(
        Arc::new(model),
        metrics,
        recorder.clone(),
        tel.env.endpoint.clone(),
    )
    .with_access_log(writer);
    let state = Arc::new(state);
    // Warm up: one forward pass before reporting ready.
    let f = state.model.features();
    state.model.predict(&[vec![1500.0; f]])?;
    state.ready.store(true, Ordering::Release);

    let app = router(state.clone(), args.max_body_bytes);
    let res = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        tracing::info!(addr = %listener.local_addr()?, model = %state.model.card.name, version = %state.model.card.version,
            tracing_enabled = state.recorder.tracing(), "serving");
        // A reply goes out in one write; Nagle's algorithm would only hold it back.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM");
                tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
                tracing::info!("shutting down: draining requests");
            })
            .await?;
        anyhow::Ok(())
    });
    // Flush telemetry on the blocking side: the batch exporters run on their own threads.
    // Queued requests become spans and log records first (metrics are already recorded).
    tracing::info!("stopped serving; flushing telemetry");
    recording.stop();
    if let Some(m) = metrics_export {
        m.stop();
    }
    tel.shutdown();
    drop(rt);
    drop(export_rt);
    res
}
