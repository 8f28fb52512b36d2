//! OpenTelemetry configured only by the standard `OTEL_*` environment — exactly what kotel
//! injects. What the Rust SDK does not read by itself (which exporter per signal, the
//! protocol, the sampler, propagators, the metric interval, `OTEL_SDK_DISABLED`) is parsed
//! here by a pure function and applied.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::Sampler;

use crate::otlp;
use crate::recorder::{self, LogSink, SpanOut, SpanShape, SpanSink};

/// Where one signal goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exporter {
    /// OTLP.
    Otlp,
    /// stdout, for debugging.
    Console,
    /// Nowhere.
    None,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf.
    HttpProtobuf,
}

/// The sampler named by OTEL_TRACES_SAMPLER(_ARG).
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerSpec {
    /// always_on.
    AlwaysOn,
    /// always_off.
    AlwaysOff,
    /// traceidratio.
    Ratio(f64),
    /// parentbased_always_on (the default).
    ParentAlwaysOn,
    /// parentbased_always_off.
    ParentAlwaysOff,
    /// parentbased_traceidratio.
    ParentRatio(f64),
}

/// The OpenTelemetry environment, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelEnv {
    /// OTEL_SDK_DISABLED=true.
    pub disabled: bool,
    /// OTEL_TRACES_EXPORTER.
    pub traces: Exporter,
    /// OTEL_METRICS_EXPORTER.
    pub metrics: Exporter,
    /// OTEL_LOGS_EXPORTER.
    pub logs: Exporter,
    /// OTEL_EXPORTER_OTLP_{TRACES_,METRICS_,LOGS_,}PROTOCOL, per signal.
    pub protocol: [Protocol; 3],
    /// OTEL_EXPORTER_OTLP_ENDPOINT (for /health).
    pub endpoint: Option<String>,
    /// The sampler.
    pub sampler: SamplerSpec,
    /// OTEL_PROPAGATORS.
    pub propagators: Vec<String>,
    /// OTEL_METRIC_EXPORT_INTERVAL.
    pub metric_interval: Duration,
    /// OTEL_BSP_SCHEDULE_DELAY and OTEL_BSP_MAX_EXPORT_BATCH_SIZE.
    pub span_batching: Batching,
    /// OTEL_BLRP_SCHEDULE_DELAY and OTEL_BLRP_MAX_EXPORT_BATCH_SIZE.
    pub log_batching: Batching,
    /// Problems found (unknown values); the defaults were used instead.
    pub warnings: Vec<String>,
}

/// When a signal's spans or log records are exported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Batching {
    /// How long items that fill no batch wait (default 1 s; the specification's default for
    /// spans is 5 s, which is long to wait for a trace).
    pub delay: Duration,
    /// Items per export. Unset, a batch of this app's OTLP encoder is full at
    /// `otlp::BATCH_BYTES` (about 800 spans).
    pub max_items: Option<usize>,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            delay: Duration::from_secs(1),
            max_items: None,
        }
    }
}

/// Reads `OTEL_{prefix}_SCHEDULE_DELAY` and `OTEL_{prefix}_MAX_EXPORT_BATCH_SIZE`.
fn batching(
    get: &impl Fn(&str) -> Option<String>,
    prefix: &str,
    warnings: &mut Vec<String>,
) -> Batching {
    let mut b = Batching::default();
    let mut number = |name: String| -> Option<u64> {
        let v = get(&name)?;
        match v.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                warnings.push(format!(
                    "{name}={v} is not a whole number; using the default"
                ));
                None
            }
        }
    };
    if let Some(ms) = number(format!("OTEL_{prefix}_SCHEDULE_DELAY")) {
        b.delay = Duration::from_millis(ms);
    }
    match number(format!("OTEL_{prefix}_MAX_EXPORT_BATCH_SIZE")) {
        Some(0) => warnings.push(format!(
            "OTEL_{prefix}_MAX_EXPORT_BATCH_SIZE must be at least 1; using the default"
        )),
        Some(n) => b.max_items = Some(n as usize),
        None => {}
    }
    b
}

fn exporter(v: Option<String>, name: &str, warnings: &mut Vec<String>) -> Exporter {
    match v
        .as_deref()
        .map(str::trim)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("") | Some("otlp") => Exporter::Otlp,
        Some("console") | Some("logging") => Exporter::Console,
        Some("none") => Exporter::None,
        Some(other) => {
            warnings.push(format!(
                "{name}={other} is not supported (otlp, console, none); using otlp"
            ));
            Exporter::Otlp
        }
    }
}

/// Parses the environment through `get` (a pure function of it, for tests).
pub fn parse(get: impl Fn(&str) -> Option<String>) -> OtelEnv {
    let mut warnings = Vec::new();
    let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let traces = exporter(
        get("OTEL_TRACES_EXPORTER"),
        "OTEL_TRACES_EXPORTER",
        &mut warnings,
    );
    let metrics = exporter(
        get("OTEL_METRICS_EXPORTER"),
        "OTEL_METRICS_EXPORTER",
        &mut warnings,
    );
    let logs = exporter(
        get("OTEL_LOGS_EXPORTER"),
        "OTEL_LOGS_EXPORTER",
        &mut warnings,
    );
    let general = get("OTEL_EXPORTER_OTLP_PROTOCOL");
    let proto = |signal: &str, warnings: &mut Vec<String>| {
        let v = get(&format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")).or_else(|| general.clone());
        match v.as_deref().map(str::trim) {
            None | Some("") | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                warnings.push(format!("OTLP protocol {other} is not supported (grpc, http/protobuf); using http/protobuf"));
                Protocol::HttpProtobuf
            }
        }
    };
    let protocol = [
        proto("TRACES", &mut warnings),
        proto("METRICS", &mut warnings),
        proto("LOGS", &mut warnings),
    ];
    let arg = get("OTEL_TRACES_SAMPLER_ARG");
    let ratio =
        |warnings: &mut Vec<String>| match arg.as_deref().map(str::trim).map(str::parse::<f64>) {
            None => 1.0,
            Some(Ok(r)) if (0.0..=1.0).contains(&r) => r,
            Some(_) => {
                warnings.push(format!(
                    "OTEL_TRACES_SAMPLER_ARG={} is not a ratio in [0, 1]; using 1.0",
                    arg.clone().unwrap_or_default()
                ));
                1.0
            }
        };
    let sampler = match get("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
        None | Some("") | Some("parentbased_always_on") => SamplerSpec::ParentAlwaysOn,
        Some("always_on") => SamplerSpec::AlwaysOn,
        Some("always_off") => SamplerSpec::AlwaysOff,
        Some("traceidratio") => SamplerSpec::Ratio(ratio(&mut warnings)),
        Some("parentbased_always_off") => SamplerSpec::ParentAlwaysOff,
        Some("parentbased_traceidratio") => SamplerSpec::ParentRatio(ratio(&mut warnings)),
        Some(other) => {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER={other} is not supported; using parentbased_always_on"
            ));
            SamplerSpec::ParentAlwaysOn
        }
    };
    let propagators: Vec<String> = get("OTEL_PROPAGATORS")
        .unwrap_or_else(|| "tracecontext,baggage".into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for p in &propagators {
        if !matches!(p.as_str(), "tracecontext" | "baggage" | "none") {
            warnings.push(format!(
                "propagator {p} is not supported (tracecontext, baggage, none); ignored"
            ));
        }
    }
    let metric_interval = match get("OTEL_METRIC_EXPORT_INTERVAL").map(|v| v.trim().parse::<u64>())
    {
        None => Duration::from_secs(60),
        Some(Ok(ms)) if ms > 0 => Duration::from_millis(ms),
        Some(_) => {
            warnings.push("OTEL_METRIC_EXPORT_INTERVAL must be a positive number of milliseconds; using 60000".into());
            Duration::from_secs(60)
        }
    };
    let span_batching = batching(&get, "BSP", &mut warnings);
    let log_batching = batching(&get, "BLRP", &mut warnings);
    for q in ["OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BLRP_MAX_QUEUE_SIZE"] {
        if get(q).is_some() {
            warnings.push(format!(
                "{q} is not read: the spans and access records of finished requests wait in one \
                 bounded queue of requests (its drops are counted in telemetry.dropped_items)"
            ));
        }
    }
    OtelEnv {
        disabled,
        traces,
        metrics,
        logs,
        protocol,
        endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|e| !e.is_empty()),
        sampler,
        propagators,
        metric_interval,
        span_batching,
        log_batching,
        warnings,
    }
}

impl SamplerSpec {
    fn build(&self) -> Sampler {
        match *self {
            SamplerSpec::AlwaysOn => Sampler::AlwaysOn,
            SamplerSpec::AlwaysOff => Sampler::AlwaysOff,
            SamplerSpec::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerSpec::ParentAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerSpec::ParentAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            SamplerSpec::ParentRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

/// Log records in the export queue; above it a record is dropped, so the thread that logs
/// never waits for the exporter.
const QUEUE: usize = 4096;
/// Log records per OTLP export: fewer, larger requests cost the app and the receiver less per
/// item than the SDK default of 512.
const BATCH: usize = 1024;

/// The installed providers.
pub struct Telemetry {
    /// Traces, when enabled (taken by the recorder).
    pub spans: Option<SpanSink>,
    /// Access records, when logs are enabled (taken by the recorder).
    pub access_logs: Option<LogSink>,
    /// Which exporter each signal uses, when it is not the default (logged at start).
    pub notes: Vec<String>,
    /// Metrics, when enabled and exported by the SDK.
    pub meter: Option<SdkMeterProvider>,
    /// Metrics, when enabled and exported over OTLP by this app (taken by `serve`).
    pub otlp_metrics: Option<crate::metrics::OtlpMetrics>,
    /// Logs, when enabled.
    pub logger: Option<SdkLoggerProvider>,
    /// Telemetry items dropped because an export queue was full.
    pub dropped: Arc<AtomicU64>,
    /// The parsed environment.
    pub env: OtelEnv,
}

fn os_env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Where OTLP spans go: this app's encoder when it handles the configuration, else the SDK's
/// exporter (noted in `notes`).
fn otlp_spans(
    env: &OtelEnv,
    resource: &Resource,
    scope: &InstrumentationScope,
    notes: &mut Vec<String>,
) -> anyhow::Result<SpanOut> {
    let protocol = env.protocol[0];
    match otlp::target(otlp::Signal::Traces, protocol, os_env)
        .and_then(|t| otlp::Sender::new(otlp::Signal::Traces, t))
    {
        Ok(sender) => {
            return Ok(SpanOut::Otlp {
                sender,
                resource: resource.into(),
                scope: scope.into(),
            });
        }
        Err(why) => notes.push(format!("OTLP spans go through the SDK's exporter: {why}")),
    }
    let b = opentelemetry_otlp::SpanExporter::builder();
    let mut exporter = match protocol {
        Protocol::Grpc => recorder::exporter(b.with_tonic().build()?),
        Protocol::HttpProtobuf => recorder::exporter(b.with_http().build()?),
    };
    exporter.set_resource(resource);
    Ok(SpanOut::Sdk(exporter))
}

/// The sender for this app's own OTLP metrics, which are cumulative: `Err` names what is left
/// to the SDK's exporter (a delta temporality preference, and what [`otlp::target`] leaves).
fn own_metrics(
    protocol: Protocol,
    get: impl Fn(&str) -> Option<String>,
) -> Result<otlp::Sender, String> {
    const TEMPORALITY: &str = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
    if let Some(t) = get(TEMPORALITY)
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "cumulative")
    {
        return Err(format!("{TEMPORALITY}={t}"));
    }
    otlp::target(otlp::Signal::Metrics, protocol, get)
        .and_then(|t| otlp::Sender::new(otlp::Signal::Metrics, t))
}

/// Runs `f` on a short-lived thread whose nice value is 10. Threads started inside `f` (the
/// recorder, the OTLP runtime, the SDK's log batch processor and periodic reader) inherit it, so under load the scheduler serves
/// requests first and telemetry with what is left; the bounded queues absorb the wait.
pub fn at_background_priority<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setpriority(2) with who = 0 changes only the calling thread on Linux
            // (the nice value is per thread); failure leaves the default priority.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
            f()
        })
        .join()
        .expect("the telemetry set-up thread panicked")
    })
}

/// Log records batch like spans: a bounded queue (records beyond it are dropped) and
/// large exports.
fn log_batch(e: impl opentelemetry_sdk::logs::LogExporter + 'static, b: Batching) -> Timestamped {
    Timestamped(
        opentelemetry_sdk::logs::BatchLogProcessor::builder(e)
            .with_batch_config(
                opentelemetry_sdk::logs::BatchConfigBuilder::default()
                    .with_max_queue_size(QUEUE)
                    .with_max_export_batch_size(b.max_items.unwrap_or(BATCH).min(QUEUE))
                    .with_scheduled_delay(b.delay)
                    .build(),
            )
            .build(),
    )
}

/// Gives every record a timestamp. The tracing bridge leaves it unset, and an OTLP record with
/// time 0 shows up in backends as written in 1970.
#[derive(Debug)]
struct Timestamped(opentelemetry_sdk::logs::BatchLogProcessor);

impl opentelemetry_sdk::logs::LogProcessor for Timestamped {
    fn emit(
        &self,
        record: &mut opentelemetry_sdk::logs::SdkLogRecord,
        scope: &opentelemetry::InstrumentationScope,
    ) {
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

/// Builds the exporters and providers the environment asks for and installs the global
/// propagator. The batch processors run on their own threads and block on export, so this
/// must not be called from a current-thread runtime; gRPC exporters are bound to the runtime
/// entered when this runs. `model` (name, version) goes on the forward-pass span.
pub fn init(env: OtelEnv, resource: Resource, model: (&str, &str)) -> anyhow::Result<Telemetry> {
    let dropped = Arc::new(AtomicU64::new(0));
    let mut t = Telemetry {
        spans: None,
        access_logs: None,
        notes: Vec::new(),
        meter: None,
        otlp_metrics: None,
        logger: None,
        dropped: dropped.clone(),
        env: env.clone(),
    };
    if env.disabled {
        return Ok(t);
    }
    let mut props: Vec<Box<dyn opentelemetry::propagation::TextMapPropagator + Send + Sync>> =
        Vec::new();
    for p in &env.propagators {
        match p.as_str() {
            "tracecontext" => props.push(Box::new(TraceContextPropagator::new())),
            "baggage" => props.push(Box::new(BaggagePropagator::new())),
            _ => {}
        }
    }
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(props));

    if env.traces != Exporter::None {
        let scope = InstrumentationScope::builder("inference-app")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let out = match env.traces {
            Exporter::Otlp => otlp_spans(&env, &resource, &scope, &mut t.notes)?,
            _ => {
                let mut e = recorder::exporter(opentelemetry_stdout::SpanExporter::default());
                e.set_resource(&resource);
                SpanOut::Sdk(e)
            }
        };
        t.spans = Some(SpanSink {
            out,
            batching: env.span_batching,
            sampler: env.sampler.build(),
            shape: SpanShape {
                scope,
                // Shared strings: every forward-pass span of the SDK path clones them.
                model: [
                    opentelemetry::StringValue::from(Arc::<str>::from(model.0)).into(),
                    opentelemetry::StringValue::from(Arc::<str>::from(model.1)).into(),
                ],
            },
        });
    }
    if env.metrics == Exporter::Otlp {
        match own_metrics(env.protocol[1], os_env) {
            Ok(sender) => {
                t.otlp_metrics = Some(crate::metrics::OtlpMetrics {
                    sender,
                    resource: (&resource).into(),
                    interval: env.metric_interval,
                })
            }
            Err(why) => t
                .notes
                .push(format!("OTLP metrics go through the SDK's exporter: {why}")),
        }
    }
    if env.metrics != Exporter::None && t.otlp_metrics.is_none() {
        let b = SdkMeterProvider::builder().with_resource(resource.clone());
        let i = env.metric_interval;
        let b = match (env.metrics, env.protocol[1]) {
            (Exporter::Otlp, Protocol::Grpc) => b.with_reader(
                PeriodicReader::builder(
                    opentelemetry_otlp::MetricExporter::builder()
                        .with_tonic()
                        .build()?,
                )
                .with_interval(i)
                .build(),
            ),
            (Exporter::Otlp, Protocol::HttpProtobuf) => b.with_reader(
                PeriodicReader::builder(
                    opentelemetry_otlp::MetricExporter::builder()
                        .with_http()
                        .build()?,
                )
                .with_interval(i)
                .build(),
            ),
            _ => b.with_reader(
                PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default())
                    .with_interval(i)
                    .build(),
            ),
        };
        t.meter = Some(b.build());
    }
    if env.logs != Exporter::None {
        let b = SdkLoggerProvider::builder().with_resource(resource.clone());
        let b = match (env.logs, env.protocol[2]) {
            (Exporter::Otlp, Protocol::Grpc) => b.with_log_processor(log_batch(
                opentelemetry_otlp::LogExporter::builder()
                    .with_tonic()
                    .build()?,
                env.log_batching,
            )),
            (Exporter::Otlp, Protocol::HttpProtobuf) => b.with_log_processor(log_batch(
                opentelemetry_otlp::LogExporter::builder()
                    .with_http()
                    .build()?,
                env.log_batching,
            )),
            _ => b.with_simple_exporter(opentelemetry_stdout::LogExporter::default()),
        };
        let provider = b.build();
        t.access_logs = Some(LogSink::Sdk(opentelemetry::logs::LoggerProvider::logger(
            &provider,
            "inference-app",
        )));
        if env.logs == Exporter::Otlp {
            match otlp::target(otlp::Signal::Logs, env.protocol[2], os_env)
                .and_then(|t| otlp::Sender::new(otlp::Signal::Logs, t))
            {
                Ok(sender) => {
                    t.access_logs = Some(LogSink::Otlp {
                        sender,
                        resource: (&resource).into(),
                        batching: env.log_batching,
                    })
                }
                Err(why) => t.notes.push(format!(
                    "OTLP access records go through the SDK's exporter: {why}"
                )),
            }
        }
        t.logger = Some(provider);
    }
    Ok(t)
}

impl Telemetry {
    /// Flushes and stops the metric and log providers (the recorder stops the span
    /// exporter).
    pub fn shutdown(&self) {
        if let Some(p) = &self.meter {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
        if let Some(p) = &self.logger {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> OtelEnv {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(|k| m.get(k).cloned())
    }

    #[test]
    fn own_metrics_are_cumulative_and_leave_delta_to_the_sdk() {
        const PREFERENCE: &str = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
        let own = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            own_metrics(Protocol::HttpProtobuf, |k| m.get(k).cloned())
        };
        for other in ["delta", "LowMemory"] {
            let why = own(&[(PREFERENCE, other)]).err().unwrap();
            assert!(why.contains(PREFERENCE), "{why}");
        }
        assert!(own(&[]).is_ok());
        assert!(own(&[(PREFERENCE, " Cumulative ")]).is_ok());
        let tls = (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "https://c:4318/v1/metrics",
        );
        assert!(own(&[tls]).err().unwrap().contains("TLS"));
    }

    #[test]
    fn defaults() {
        let e = env(&[]);
        assert!(!e.disabled);
        assert_eq!(
            (e.traces, e.metrics, e.logs),
            (Exporter::Otlp, Exporter::Otlp, Exporter::Otlp)
        );
        assert_eq!(e.protocol, [Protocol::HttpProtobuf; 3]);
        assert_eq!(e.sampler, SamplerSpec::ParentAlwaysOn);
        assert_eq!(e.propagators, vec!["tracecontext", "baggage"]);
        assert_eq!(e.metric_interval, Duration::from_secs(60));
        assert_eq!(e.span_batching, Batching::default());
        assert_eq!(e.log_batching.delay, Duration::from_secs(1));
        assert!(e.warnings.is_empty());
    }

    #[test]
    fn batch_processor_variables_set_delay_and_batch_size() {
        let e = env(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "0"),
        ]);
        assert_eq!(
            e.span_batching,
            Batching {
                delay: Duration::from_millis(200),
                max_items: Some(512)
            }
        );
        assert_eq!(
            e.log_batching,
            Batching {
                delay: Duration::ZERO,
                max_items: None
            }
        );
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
        let e = env(&[
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
            ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "0"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4096"),
        ]);
        assert_eq!(e.span_batching, Batching::default());
        assert_eq!(e.log_batching, Batching::default());
        assert_eq!(e.warnings.len(), 3, "{:?}", e.warnings);
        assert!(e.warnings[0].contains("OTEL_BSP_SCHEDULE_DELAY"));
        assert!(e.warnings[1].contains("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE"));
        assert!(e.warnings[2].contains("OTEL_BSP_MAX_QUEUE_SIZE is not read"));
    }

    #[test]
    fn what_kotel_injects_is_understood() {
        let e = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ("OTEL_METRICS_EXPORTER", "none"),
            ("OTEL_LOGS_EXPORTER", "console"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "15000"),
            ("OTEL_PROPAGATORS", "tracecontext"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317"),
        ]);
        assert_eq!(
            e.protocol,
            [Protocol::Grpc, Protocol::Grpc, Protocol::HttpProtobuf]
        );
        assert_eq!(e.sampler, SamplerSpec::ParentRatio(0.25));
        assert_eq!(e.metrics, Exporter::None);
        assert_eq!(e.logs, Exporter::Console);
        assert_eq!(e.metric_interval, Duration::from_millis(15000));
        assert_eq!(e.propagators, vec!["tracecontext"]);
        assert_eq!(e.endpoint.as_deref(), Some("http://localhost:4317"));
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn bad_values_fall_back_with_a_warning() {
        let e = env(&[
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "soon"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_PROPAGATORS", "b3"),
        ]);
        assert_eq!(e.traces, Exporter::Otlp);
        assert_eq!(e.sampler, SamplerSpec::Ratio(1.0));
        assert_eq!(e.metric_interval, Duration::from_secs(60));
        assert_eq!(e.warnings.len(), 7, "{:?}", e.warnings);
    }

    #[test]
    fn sdk_disabled() {
        assert!(env(&[("OTEL_SDK_DISABLED", "TRUE")]).disabled);
        assert!(!env(&[("OTEL_SDK_DISABLED", "false")]).disabled);
    }
}
