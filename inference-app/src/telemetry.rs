//! OpenTelemetry on the stock SDK, configured by the standard `OTEL_*` environment: exactly
//! what kotel injects.
//!
//! The SDK reads by itself the resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), the
//! sampler, the batch processors' and the periodic reader's settings, and every
//! `OTEL_EXPORTER_OTLP_*` variable: protocol, endpoint, headers, timeout, TLS and compression.
//! This module reads only what it does not: which exporter each signal uses, the propagators
//! and `OTEL_SDK_DISABLED`.

use std::time::Duration;

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    BatchConfigBuilder as LogBatchConfig, BatchLogProcessor, LogProcessor, SdkLogRecord,
    SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};

use crate::dropped::{Counted, Dropped};
use crate::prometheus::Scrape;

/// Where one signal goes (`OTEL_{TRACES,METRICS,LOGS}_EXPORTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// OTLP, over the protocol the SDK reads.
    Otlp,
    /// stdout, for debugging.
    Console,
    /// Nowhere.
    None,
}

/// What the environment asks for, beyond what the SDK reads itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Traces.
    pub traces: Exporter,
    /// Metrics (`/metrics` is served either way).
    pub metrics: Exporter,
    /// OTLP log records (JSON lines go to stdout either way).
    pub logs: Exporter,
    /// `OTEL_PROPAGATORS`, the supported ones.
    pub propagators: Vec<String>,
    /// Values that were not understood; the defaults were used instead.
    pub warnings: Vec<String>,
}

fn exporter(get: &impl Fn(&str) -> Option<String>, name: &str, w: &mut Vec<String>) -> Exporter {
    match get(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("otlp") => Exporter::Otlp,
        Some("console") | Some("logging") => Exporter::Console,
        Some("none") => Exporter::None,
        Some(other) => {
            w.push(format!(
                "{name}={other} is not supported (otlp, console, none); using otlp"
            ));
            Exporter::Otlp
        }
    }
}

/// Reads the choices from the environment through `get` (a pure function of it, for tests).
pub fn choose(get: impl Fn(&str) -> Option<String>) -> Choice {
    let mut warnings = Vec::new();
    let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let mut propagators = Vec::new();
    for p in get("OTEL_PROPAGATORS")
        .unwrap_or_else(|| "tracecontext,baggage".into())
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match p {
            "tracecontext" | "baggage" => propagators.push(p.to_string()),
            "none" => {}
            other => warnings.push(format!(
                "OTEL_PROPAGATORS: {other} is not supported (tracecontext, baggage, none); ignored"
            )),
        }
    }
    let mut signal = |name| {
        let e = exporter(&get, name, &mut warnings);
        if disabled { Exporter::None } else { e }
    };
    Choice {
        traces: signal("OTEL_TRACES_EXPORTER"),
        metrics: signal("OTEL_METRICS_EXPORTER"),
        logs: signal("OTEL_LOGS_EXPORTER"),
        propagators,
        warnings,
    }
}

/// The propagator `OTEL_PROPAGATORS` names.
pub fn propagator(names: &[String]) -> TextMapCompositePropagator {
    let all: Vec<Box<dyn TextMapPropagator + Send + Sync>> = names
        .iter()
        .map(|n| -> Box<dyn TextMapPropagator + Send + Sync> {
            match n.as_str() {
                "baggage" => Box::new(BaggagePropagator::new()),
                _ => Box::new(TraceContextPropagator::new()),
            }
        })
        .collect();
    TextMapCompositePropagator::new(all)
}

/// The installed providers.
pub struct Telemetry {
    /// Traces. Without an exporter it samples nothing, and requests still get trace ids.
    pub tracer: SdkTracerProvider,
    /// Metrics, always: `/metrics` reads them through `scrape`.
    pub meter: SdkMeterProvider,
    /// The reader behind `/metrics`.
    pub scrape: Scrape,
    /// OTLP log records, when exported.
    pub logger: Option<SdkLoggerProvider>,
    /// What was lost on the way.
    pub dropped: Dropped,
    /// The choices this was built from.
    pub choice: Choice,
}

/// Spans and log records wait in queues of this size for their batch; beyond it they are
/// dropped, so a request never waits for the exporter. The specification's 2,048 overflowed at
/// 33k requests/s on two cores; 4,096 did not, and holds RSS under 30 MiB.
const QUEUE: usize = 4_096;
/// Items per export: fewer, larger requests cost the app and the receiver less per item than
/// the default of 512.
const BATCH: usize = 1_024;
/// How long items that fill no batch wait: the specification's 5 s for spans is long to wait
/// for a trace while developing.
const DELAY: Duration = Duration::from_secs(1);

/// Whether the user set `OTEL_{prefix}_{name}` (then the SDK's reading of it wins).
fn set(prefix: &str, name: &str) -> bool {
    std::env::var_os(format!("OTEL_{prefix}_{name}")).is_some()
}

fn span_batching() -> opentelemetry_sdk::trace::BatchConfig {
    let mut b = BatchConfigBuilder::default();
    if !set("BSP", "MAX_QUEUE_SIZE") {
        b = b.with_max_queue_size(QUEUE);
    }
    if !set("BSP", "MAX_EXPORT_BATCH_SIZE") {
        b = b.with_max_export_batch_size(BATCH);
    }
    if !set("BSP", "SCHEDULE_DELAY") {
        b = b.with_scheduled_delay(DELAY);
    }
    b.build()
}

fn log_batching() -> opentelemetry_sdk::logs::BatchConfig {
    let mut b = LogBatchConfig::default();
    if !set("BLRP", "MAX_QUEUE_SIZE") {
        b = b.with_max_queue_size(QUEUE);
    }
    if !set("BLRP", "MAX_EXPORT_BATCH_SIZE") {
        b = b.with_max_export_batch_size(BATCH);
    }
    if !set("BLRP", "SCHEDULE_DELAY") {
        b = b.with_scheduled_delay(DELAY);
    }
    b.build()
}

/// Builds the providers `choice` asks for and installs the propagator. gRPC exporters start
/// their connection on the Tokio runtime entered when this runs.
pub fn init(choice: Choice, resource: Resource) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(propagator(&choice.propagators));
    let dropped = Dropped::default();

    let tracer = SdkTracerProvider::builder().with_resource(resource.clone());
    let tracer = match choice.traces {
        Exporter::Otlp => {
            let e = opentelemetry_otlp::SpanExporter::builder().build()?;
            tracer.with_span_processor(
                BatchSpanProcessor::builder(Counted::new(e, dropped.clone()))
                    .with_batch_config(span_batching())
                    .build(),
            )
        }
        Exporter::Console => {
            tracer.with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        }
        Exporter::None => tracer.with_sampler(Sampler::AlwaysOff),
    }
    .build();

    let scrape = Scrape::default();
    let meter = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(scrape.clone());
    let meter = match choice.metrics {
        Exporter::Otlp => {
            let e = opentelemetry_otlp::MetricExporter::builder().build()?;
            meter.with_reader(PeriodicReader::builder(Counted::new(e, dropped.clone())).build())
        }
        Exporter::Console => meter.with_reader(
            PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default()).build(),
        ),
        Exporter::None => meter,
    }
    .build();

    let logger = SdkLoggerProvider::builder().with_resource(resource);
    let logger = match choice.logs {
        Exporter::Otlp => {
            let e = opentelemetry_otlp::LogExporter::builder().build()?;
            let batch = BatchLogProcessor::builder(Counted::new(e, dropped.clone()))
                .with_batch_config(log_batching())
                .build();
            Some(logger.with_log_processor(Timestamped(batch)).build())
        }
        Exporter::Console => Some(
            logger
                .with_simple_exporter(opentelemetry_stdout::LogExporter::default())
                .build(),
        ),
        Exporter::None => None,
    };
    Ok(Telemetry {
        tracer,
        meter,
        scrape,
        logger,
        dropped,
        choice,
    })
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.choice.traces != Exporter::None
    }

    /// Exports what is queued and stops every provider.
    pub fn shutdown(&self) {
        let _ = self.tracer.shutdown();
        let _ = self.meter.shutdown();
        if let Some(l) = &self.logger {
            let _ = l.shutdown();
        }
    }
}

/// Gives every record a timestamp. The tracing bridge sets only the observed time, and an OTLP
/// record without a time shows up in some backends as written in 1970.
#[derive(Debug)]
struct Timestamped<P>(P);

impl<P: LogProcessor> LogProcessor for Timestamped<P> {
    fn emit(&self, record: &mut SdkLogRecord, scope: &opentelemetry::InstrumentationScope) {
        use opentelemetry::logs::LogRecord as _;
        if record.timestamp().is_none() {
            record.set_timestamp(std::time::SystemTime::now());
        }
        self.0.emit(record, scope)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn choice(pairs: &[(&str, &str)]) -> Choice {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        choose(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_export_everything_over_otlp_with_both_propagators() {
        let c = choice(&[]);
        assert_eq!(
            (c.traces, c.metrics, c.logs),
            (Exporter::Otlp, Exporter::Otlp, Exporter::Otlp)
        );
        assert_eq!(c.propagators, ["tracecontext", "baggage"]);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn what_kotel_injects_is_understood() {
        let c = choice(&[
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", " Console "),
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_PROPAGATORS", "tracecontext"),
        ]);
        assert_eq!(
            (c.traces, c.metrics, c.logs),
            (Exporter::Otlp, Exporter::None, Exporter::Console)
        );
        assert_eq!(c.propagators, ["tracecontext"]);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn unknown_values_fall_back_with_a_warning_that_names_them() {
        let c = choice(&[
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_PROPAGATORS", "b3, baggage"),
        ]);
        assert_eq!(c.traces, Exporter::Otlp);
        assert_eq!(c.propagators, ["baggage"]);
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("b3"));
        assert!(c.warnings[1].contains("OTEL_TRACES_EXPORTER=zipkin"));
        assert!(
            choice(&[("OTEL_PROPAGATORS", "none")])
                .propagators
                .is_empty()
        );
    }

    #[test]
    fn sdk_disabled_turns_every_exporter_off() {
        let c = choice(&[
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ]);
        assert_eq!(
            (c.traces, c.metrics, c.logs),
            (Exporter::None, Exporter::None, Exporter::None)
        );
        let c = choice(&[("OTEL_SDK_DISABLED", "false")]);
        assert_eq!(c.traces, Exporter::Otlp);
    }
}
