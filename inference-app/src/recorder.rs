//! Finished requests become spans and an OTLP log record on a background thread. A request
//! only takes timestamps and pushes one plain record into a bounded queue; the telemetry is
//! built later, in batches, at a lower CPU priority (inline it was most of telemetry's cost on
//! the request path). With OTLP export handled by `otlp`, spans and log records are encoded
//! from the record straight into the export batch; with an SDK exporter (the console, TLS) the
//! spans become the SDK's span data. Either way the recorder is the batch processor, so there
//! is no second queue and no second thread. Under overload the queue fills and the spans and
//! log records of further requests are dropped and counted, as are those whose export fails.
//! Metrics are not shed: they are recorded inline (see `metrics`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLogger;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanData, SpanExporter,
};

use crate::metrics::Outcome;
use crate::otlp;
use crate::telemetry::Batching;

/// How long a finished request may wait before its telemetry is built. Short, so the queue of
/// records stays small.
const INTERVAL: Duration = Duration::from_millis(25);
/// Spans per export call through an SDK exporter, unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says.
const EXPORT_BATCH: usize = 2048;
/// At most one warning about failed exports per this interval.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Past this many queued records the recorder thread is woken early.
const HIGH_WATER: usize = 2048;

/// One phase of an inference (pre-processing, forward pass, post-processing), as offsets from
/// the start of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// When it started.
    pub start: Duration,
    /// When it ended.
    pub end: Duration,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// What a handler that runs the model noted about it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inference {
    /// How the inference request ended.
    pub outcome: Option<Outcome>,
    /// Rows in the batch.
    pub batch: usize,
    /// Validation.
    pub pre: Option<Phase>,
    /// The forward pass.
    pub forward: Option<Phase>,
    /// Post-processing.
    pub post: Option<Phase>,
    /// The predicted values (for the drift histogram).
    pub predictions: Vec<f64>,
}

/// A finished request: everything its spans, metrics and log record are made of.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// Wall-clock time at the start.
    pub start: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// The trace (the caller's, from `traceparent`, or a new one).
    pub trace_id: TraceId,
    /// The server span's id.
    pub span_id: SpanId,
    /// The caller's span, from `traceparent`.
    pub parent: Option<SpanContext>,
    /// `http.request.method`.
    pub method: &'static str,
    /// `http.route`.
    pub route: &'static str,
    /// `url.path`.
    pub path: Cow<'static, str>,
    /// The request id.
    pub request_id: crate::http::RequestId,
    /// `client.address`.
    pub client: Option<IpAddr>,
    /// `http.response.status_code`.
    pub status: u16,
    /// The model's part, on inference routes.
    pub inference: Inference,
}

tokio::task_local! {
    static CURRENT: RefCell<Inference>;
}

/// Runs `f` (the rest of the request) with a slot that handlers fill through [`note`], and
/// returns what they noted.
pub async fn scoped<F: Future>(f: F) -> (F::Output, Inference) {
    CURRENT
        .scope(RefCell::new(Inference::default()), async move {
            let out = f.await;
            (out, CURRENT.with(|c| c.take()))
        })
        .await
}

/// Notes something about the current request's inference (nothing outside [`scoped`]).
pub fn note(f: impl FnOnce(&mut Inference)) {
    let _ = CURRENT.try_with(|c| f(&mut c.borrow_mut()));
}

/// A random trace id that is never the invalid all-zero one, from the SDK's generator (a
/// fast thread-local generator; the id needs to be unique, not secret).
pub fn new_trace_id() -> TraceId {
    loop {
        let id = RandomIdGenerator::default().new_trace_id();
        if id != TraceId::INVALID {
            return id;
        }
    }
}

/// A random span id that is never the invalid all-zero one, likewise.
pub fn new_span_id() -> SpanId {
    loop {
        let id = RandomIdGenerator::default().new_span_id();
        if id != SpanId::INVALID {
            return id;
        }
    }
}

/// The sampler's decision for a request, made once for the server span; its children follow
/// it (with every sampler kotel can configure, a child's decision equals its parent's: the
/// parent-based ones follow the local parent, the others depend only on the trace id).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Recorded at all (RecordOnly or RecordAndSample).
    pub record: bool,
    /// The trace flags of the request's spans.
    pub flags: TraceFlags,
    /// The trace state the sampler returned.
    pub state: TraceState,
    /// Attributes the sampler adds to the server span.
    pub attributes: Vec<KeyValue>,
    /// The server span's name, as the sampler saw it.
    pub name: Cow<'static, str>,
}

/// Asks `sampler` about the server span of `rec`.
pub fn decide(sampler: &dyn ShouldSample, rec: &RequestRecord) -> Decision {
    let parent_cx = rec
        .parent
        .as_ref()
        .map(|p| Context::new().with_remote_span_context(p.clone()));
    let name = span_name(rec.method, rec.route);
    let r = sampler.should_sample(
        parent_cx.as_ref(),
        rec.trace_id,
        &name,
        &SpanKind::Server,
        &[],
        &[],
    );
    let base = rec
        .parent
        .as_ref()
        .map(SpanContext::trace_flags)
        .unwrap_or_default();
    Decision {
        record: r.decision != SamplingDecision::Drop,
        flags: base.with_sampled(r.decision == SamplingDecision::RecordAndSample),
        state: r.trace_state,
        attributes: r.attributes,
        name,
    }
}

/// `{method} {route}` for the server span, without formatting a string per request.
pub fn span_name(method: &'static str, route: &'static str) -> Cow<'static, str> {
    const NAMES: [(&str, &str, &str); 12] = [
        ("GET", "/", "GET /"),
        ("GET", "/health", "GET /health"),
        ("GET", "/ready", "GET /ready"),
        ("POST", "/predict", "POST /predict"),
        ("GET", "/metrics", "GET /metrics"),
        ("GET", "/v2", "GET /v2"),
        ("GET", "/v2/health/live", "GET /v2/health/live"),
        ("GET", "/v2/health/ready", "GET /v2/health/ready"),
        ("GET", "/v2/models/{name}", "GET /v2/models/{name}"),
        (
            "GET",
            "/v2/models/{name}/ready",
            "GET /v2/models/{name}/ready",
        ),
        (
            "POST",
            "/v2/models/{name}/infer",
            "POST /v2/models/{name}/infer",
        ),
        ("GET", "unmatched", "GET unmatched"),
    ];
    NAMES
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map(|(_, _, n)| Cow::Borrowed(*n))
        .unwrap_or_else(|| format!("{method} {route}").into())
}

/// What every span of the service shares.
#[derive(Debug, Clone)]
pub struct SpanShape {
    /// The instrumentation scope.
    pub scope: InstrumentationScope,
    /// `model.name` and `model.version` for the forward-pass span.
    pub model: [Value; 2],
}

/// An attribute value, borrowed from the record or the shape.
#[derive(Debug, Clone, Copy)]
pub enum Attr<'a> {
    /// A string.
    Str(&'a str),
    /// An integer.
    Int(i64),
    /// Any value.
    Value(&'a Value),
}

impl Attr<'_> {
    fn to_value(self) -> Value {
        match self {
            Attr::Str(s) => Value::from(s.to_string()),
            Attr::Int(i) => Value::I64(i),
            Attr::Value(v) => v.clone(),
        }
    }
}

/// Attributes by their semantic-convention names.
pub type Attributes<'a> = [(&'static str, Attr<'a>)];

/// One span of a request, borrowed from its record. The SDK's span data and the OTLP encoder
/// are both made from it, so the two export paths cannot disagree about what a span holds.
#[derive(Debug)]
pub struct SpanView<'a> {
    /// The request's trace.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// The sampler's flags.
    pub flags: TraceFlags,
    /// The sampler's trace state.
    pub state: &'a TraceState,
    /// The parent, or `SpanId::INVALID`.
    pub parent_id: SpanId,
    /// Whether the parent is the caller's (from `traceparent`).
    pub parent_remote: bool,
    /// Server or internal.
    pub kind: SpanKind,
    /// The span name.
    pub name: Cow<'static, str>,
    /// Start, in nanoseconds since the Unix epoch (OTLP's unit; a request converts its start
    /// once and adds its phases' offsets).
    pub start: u64,
    /// End, likewise.
    pub end: u64,
    /// Attributes every span of this name carries alike (the route, the model): the OTLP
    /// encoder writes them once per name and copies them from then on.
    pub fixed: &'a Attributes<'a>,
    /// Attributes of this request (after `fixed`).
    pub attributes: &'a Attributes<'a>,
    /// Attributes the sampler added.
    pub extra: &'a [KeyValue],
    /// The error description when the span failed.
    pub error: Option<&'a str>,
}

/// Calls `f` with each span of one request: when the model ran, `preprocess`, `inference` and
/// `postprocess`, then the server span they belong to. `next_id` gives the children their span
/// ids. Nothing is allocated except for rare values (a 5xx status, the client address).
pub fn request_spans(
    rec: &RequestRecord,
    d: &Decision,
    shape: &SpanShape,
    mut next_id: impl FnMut() -> SpanId,
    mut f: impl FnMut(&SpanView<'_>),
) {
    if !d.record {
        return;
    }
    let base = unix_nanos(rec.start);
    let at = |o: Duration| base.saturating_add(o.as_nanos() as u64);
    let view = |span_id, kind, name, start, end, fixed, attributes, error| SpanView {
        trace_id: rec.trace_id,
        span_id,
        flags: d.flags,
        state: &d.state,
        parent_id: rec.span_id,
        parent_remote: false,
        kind,
        name,
        start,
        end,
        fixed,
        attributes,
        extra: &[],
        error,
    };
    let inf = &rec.inference;
    let batch = [("inference.batch.size", Attr::Int(inf.batch as i64))];
    let model = [
        ("model.name", Attr::Value(&shape.model[0])),
        ("model.version", Attr::Value(&shape.model[1])),
    ];
    type Parts<'p> = (
        &'static str,
        &'p Option<Phase>,
        &'p Attributes<'p>,
        &'p Attributes<'p>,
    );
    let phases: [Parts<'_>; 3] = [
        ("preprocess", &inf.pre, &[], &batch),
        ("inference", &inf.forward, &model, &batch),
        ("postprocess", &inf.post, &[], &[]),
    ];
    for (name, phase, fixed, attributes) in phases {
        let Some(p) = phase else { continue };
        f(&view(
            next_id(),
            SpanKind::Internal,
            Cow::Borrowed(name),
            at(p.start),
            at(p.end),
            fixed,
            attributes,
            p.error.as_deref(),
        ));
    }
    let route = [
        ("http.request.method", Attr::Str(rec.method)),
        ("http.route", Attr::Str(rec.route)),
        ("url.scheme", Attr::Str("http")),
    ];
    let client = rec.client.map(ClientAddress::new);
    let mut attributes = [
        ("url.path", Attr::Str(&rec.path)),
        ("request.id", Attr::Str(&rec.request_id)),
        (
            "http.response.status_code",
            Attr::Int(i64::from(rec.status)),
        ),
        ("client.address", Attr::Str("")),
    ];
    let n = match &client {
        Some(c) => {
            attributes[3].1 = Attr::Str(c.as_str());
            4
        }
        None => 3,
    };
    let error = (rec.status >= 500).then(|| format!("HTTP {}", rec.status));
    let mut server = view(
        rec.span_id,
        SpanKind::Server,
        d.name.clone(),
        base,
        at(rec.duration),
        &route,
        &attributes[..n],
        error.as_deref(),
    );
    server.parent_id = rec
        .parent
        .as_ref()
        .map(SpanContext::span_id)
        .unwrap_or(SpanId::INVALID);
    server.parent_remote = rec.parent.is_some();
    server.extra = &d.attributes;
    f(&server);
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `client.address` as text. IPv4 is written on the stack: `Display` took a fifth of the
/// recorder's instructions (the formatting machinery and a `String` grown piece by piece).
enum ClientAddress {
    V4([u8; 15], usize),
    Other(String),
}

impl ClientAddress {
    fn new(ip: IpAddr) -> Self {
        let IpAddr::V4(v4) = ip else {
            return ClientAddress::Other(ip.to_string());
        };
        let mut buf = [0u8; 15];
        let mut n = 0;
        for (i, o) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                buf[n] = b'.';
                n += 1;
            }
            if o >= 100 {
                buf[n] = b'0' + o / 100;
                n += 1;
            }
            if o >= 10 {
                buf[n] = b'0' + o / 10 % 10;
                n += 1;
            }
            buf[n] = b'0' + o % 10;
            n += 1;
        }
        ClientAddress::V4(buf, n)
    }

    fn as_str(&self) -> &str {
        match self {
            // SAFETY: `new` wrote only ASCII digits and dots to `buf[..n]`. (Checking them
            // again cost more than writing them.)
            ClientAddress::V4(buf, n) => unsafe { std::str::from_utf8_unchecked(&buf[..*n]) },
            ClientAddress::Other(s) => s,
        }
    }
}

/// The SDK's span data for one span.
fn span_data(v: &SpanView<'_>, scope: &InstrumentationScope) -> SpanData {
    let mut attributes = Vec::with_capacity(v.fixed.len() + v.attributes.len() + v.extra.len());
    attributes.extend(
        v.fixed
            .iter()
            .chain(v.attributes)
            .map(|(k, a)| KeyValue::new(*k, a.to_value())),
    );
    attributes.extend(v.extra.iter().cloned());
    SpanData {
        span_context: SpanContext::new(v.trace_id, v.span_id, v.flags, false, v.state.clone()),
        parent_span_id: v.parent_id,
        parent_span_is_remote: v.parent_remote,
        span_kind: v.kind.clone(),
        name: v.name.clone(),
        start_time: SystemTime::UNIX_EPOCH + Duration::from_nanos(v.start),
        end_time: SystemTime::UNIX_EPOCH + Duration::from_nanos(v.end),
        attributes,
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status: match v.error {
            Some(e) => Status::error(e.to_string()),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}

/// The spans of one request as the SDK's span data (for the SDK's exporters), in the order
/// of [`request_spans`].
pub fn spans(
    rec: &RequestRecord,
    d: &Decision,
    shape: &SpanShape,
    next_id: impl FnMut() -> SpanId,
) -> Vec<SpanData> {
    let mut out = Vec::with_capacity(4);
    request_spans(rec, d, shape, next_id, |v| {
        out.push(span_data(v, &shape.scope))
    });
    out
}

/// Spans the record would make if sampled (for the dropped count).
fn span_count(rec: &RequestRecord) -> u64 {
    let i = &rec.inference;
    1 + [&i.pre, &i.forward, &i.post]
        .iter()
        .filter(|p| p.is_some())
        .count() as u64
}

/// A span exporter driven synchronously from the recorder thread.
pub trait BatchExport: Send + Sync {
    /// Sets the resource every exported span carries.
    fn set_resource(&mut self, _resource: &opentelemetry_sdk::Resource) {}
    /// Exports one batch, waiting for the result.
    fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult;
    /// Flushes and releases the exporter.
    fn shutdown(&self) -> OTelSdkResult;
}

struct Blocking<E>(E);

impl<E: SpanExporter> BatchExport for Blocking<E> {
    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource)
    }
    fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // The OTLP exporters' I/O runs on the runtime they were built in; this thread only
        // waits for the result, as the SDK's own batch processor does.
        futures::executor::block_on(self.0.export(batch))
    }
    fn shutdown(&self) -> OTelSdkResult {
        let _ = self.0.force_flush();
        self.0.shutdown()
    }
}

/// Wraps an SDK span exporter (OTLP, console, in-memory) for the recorder.
pub fn exporter<E: SpanExporter + 'static>(e: E) -> Box<dyn BatchExport> {
    Box::new(Blocking(e))
}

/// Where spans are exported.
#[allow(clippy::large_enum_variant)] // one per process
pub enum SpanOut {
    /// Through an SDK exporter (the console, or OTLP settings left to the SDK), as span data.
    Sdk(Box<dyn BatchExport>),
    /// Encoded here straight from the request records.
    Otlp {
        /// The endpoint.
        sender: otlp::Sender,
        /// The service's resource.
        resource: otlp::EncodedResource,
        /// The spans' instrumentation scope.
        scope: otlp::EncodedScope,
    },
}

/// Where spans go: the exporter and the sampler.
pub struct SpanSink {
    /// The exporter, with the resource already set.
    pub out: SpanOut,
    /// When batches go out.
    pub batching: Batching,
    /// OTEL_TRACES_SAMPLER.
    pub sampler: Sampler,
    /// Scope and model attributes.
    pub shape: SpanShape,
}

/// Where the access records go.
#[allow(clippy::large_enum_variant)] // one per process
pub enum LogSink {
    /// Through the SDK's logger (the console exporter, or OTLP settings left to the SDK).
    Sdk(SdkLogger),
    /// Encoded here, one OTLP request per batch.
    Otlp {
        /// The endpoint.
        sender: otlp::Sender,
        /// The service's resource.
        resource: otlp::EncodedResource,
        /// When batches go out.
        batching: Batching,
    },
}

/// Everything the recorder feeds; each part is absent when its signal is off.
#[derive(Default)]
pub struct Sinks {
    /// Traces.
    pub spans: Option<SpanSink>,
    /// OTLP log records of served requests.
    pub logs: Option<LogSink>,
}

impl Sinks {
    fn is_empty(&self) -> bool {
        self.spans.is_none() && self.logs.is_none()
    }

    /// The spans and the log record of one request: SDK span data into `sdk`, encoded items
    /// into `enc`, SDK log records emitted.
    fn record(&self, rec: &RequestRecord, sdk: &mut Vec<SpanData>, enc: &mut otlp::Encoder) {
        let flags = match &self.spans {
            Some(s) => {
                let d = decide(&s.sampler, rec);
                match &s.out {
                    SpanOut::Sdk(_) => sdk.extend(spans(rec, &d, &s.shape, new_span_id)),
                    SpanOut::Otlp { .. } => {
                        request_spans(rec, &d, &s.shape, new_span_id, |v| enc.span(v))
                    }
                }
                d.flags
            }
            None => TraceFlags::default(),
        };
        match &self.logs {
            Some(LogSink::Sdk(logger)) => access_record(logger, rec, flags),
            Some(LogSink::Otlp { .. }) => enc.access_log(rec, flags.to_u8()),
            None => {}
        }
    }
}

/// The OTLP twin of the JSON access line, through the SDK's logger.
fn access_record(logger: &SdkLogger, rec: &RequestRecord, flags: TraceFlags) {
    use opentelemetry::logs::Logger as _;
    let mut r = logger.create_log_record();
    fill_access_record(&mut r, rec, flags);
    logger.emit(r);
}

/// The fields of the access record; `otlp` encodes the same record itself, and its test
/// compares the two.
pub(crate) fn fill_access_record(
    r: &mut opentelemetry_sdk::logs::SdkLogRecord,
    rec: &RequestRecord,
    flags: TraceFlags,
) {
    use opentelemetry::logs::{AnyValue, LogRecord as _, Severity};
    r.set_timestamp(rec.start + rec.duration);
    r.set_severity_number(Severity::Info);
    r.set_severity_text("INFO");
    r.set_target(crate::http::ACCESS_TARGET);
    r.set_body("request served".into());
    r.set_trace_context(rec.trace_id, rec.span_id, Some(flags));
    r.add_attributes([
        ("http.request.method", AnyValue::from(rec.method)),
        ("http.route", rec.route.into()),
        ("request.id", rec.request_id.to_string().into()),
        ("url.path", rec.path.to_string().into()),
        ("http.response.status_code", i64::from(rec.status).into()),
        ("latency_ms", (rec.duration.as_secs_f64() * 1000.0).into()),
    ]);
}

/// Counts items whose export failed and says so, at most every [`WARN_EVERY`]. Shared with
/// exports still on the wire.
struct Failures {
    dropped: Arc<AtomicU64>,
    warned: Mutex<Option<std::time::Instant>>,
}

impl Failures {
    fn count(&self, n: u64, what: &str, error: &str) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *warned = Some(std::time::Instant::now());
            tracing::warn!(
                items = n,
                error,
                "exporting {what} failed; they are dropped and counted in telemetry.dropped_items"
            );
        }
    }
}

/// The queue between requests and the recorder thread.
pub struct Recorder {
    queue: Mutex<Vec<RequestRecord>>,
    cap: usize,
    sinks: Sinks,
    woken: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
    dropped: Arc<AtomicU64>,
    failures: Arc<Failures>,
    /// Encoded spans and access records waiting for export.
    encoder: Mutex<otlp::Encoder>,
    /// The access records' instrumentation scope.
    access_scope: otlp::EncodedScope,
}

/// Stops the recorder thread, records what is queued and shuts the span exporter down, when
/// dropped or on [`RecorderGuard::stop`].
pub struct RecorderGuard {
    recorder: Arc<Recorder>,
    handle: Option<JoinHandle<()>>,
}

impl Recorder {
    /// A recorder holding at most `cap` finished requests; the spans and log records of
    /// requests beyond it are counted in `dropped`. Nothing is recorded until [`Recorder::start`]
    /// or [`Recorder::flush`].
    pub fn new(sinks: Sinks, cap: usize, dropped: Arc<AtomicU64>) -> Arc<Self> {
        Arc::new(Recorder {
            queue: Mutex::new(Vec::new()),
            cap,
            sinks,
            woken: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: OnceLock::new(),
            failures: Arc::new(Failures {
                dropped: dropped.clone(),
                warned: Mutex::new(None),
            }),
            dropped,
            encoder: Mutex::default(),
            access_scope: otlp::EncodedScope::named(crate::http::ACCESS_TARGET),
        })
    }

    /// Whether anything is recorded at all (false with OTEL_SDK_DISABLED=true).
    pub fn enabled(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// Whether spans go anywhere.
    pub fn tracing(&self) -> bool {
        self.sinks.spans.is_some()
    }

    /// Starts the thread that drains the queue. It inherits the caller's CPU priority.
    pub fn start(self: &Arc<Self>) -> std::io::Result<RecorderGuard> {
        let r = self.clone();
        let handle = std::thread::Builder::new()
            .name("otel-recorder".into())
            .spawn(move || {
                let mut batch = Vec::new();
                loop {
                    std::thread::park_timeout(INTERVAL);
                    let stopping = r.stop.load(Ordering::Acquire);
                    r.drain(&mut batch, stopping);
                    if stopping {
                        break;
                    }
                }
            })?;
        let _ = self.thread.set(handle.thread().clone());
        Ok(RecorderGuard {
            recorder: self.clone(),
            handle: Some(handle),
        })
    }

    /// Records what is queued. Full batches are exported at once; what fills no batch waits
    /// for its signal's schedule delay, or goes out now when `all`.
    fn drain(&self, batch: &mut Vec<RequestRecord>, all: bool) {
        {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *q, batch);
            self.woken.store(false, Ordering::Release);
        }
        let sdk_batch = self
            .sinks
            .spans
            .as_ref()
            .and_then(|s| s.batching.max_items)
            .unwrap_or(EXPORT_BATCH);
        let mut enc = self.encoder.lock().unwrap_or_else(|p| p.into_inner());
        let mut sdk = Vec::new();
        for rec in batch.iter() {
            self.sinks.record(rec, &mut sdk, &mut enc);
            while sdk.len() >= sdk_batch {
                let rest = sdk.split_off(sdk_batch);
                self.export(std::mem::replace(&mut sdk, rest));
            }
            self.send(&mut enc, |p, b| p.full(b.max_items));
        }
        if !sdk.is_empty() {
            self.export(sdk);
        }
        let now = std::time::Instant::now();
        self.send(&mut enc, |p, b| all || p.due(now, b.delay));
        if all {
            self.settle();
        }
        batch.clear();
        batch.shrink_to(HIGH_WATER * 2);
    }

    /// Sends the encoded spans and log records whose batch `ready` says may go.
    fn send(&self, enc: &mut otlp::Encoder, ready: impl Fn(&otlp::Pending, &Batching) -> bool) {
        if let Some(SpanSink {
            out:
                SpanOut::Otlp {
                    sender,
                    resource,
                    scope,
                },
            batching,
            ..
        }) = &self.sinks.spans
            && ready(&enc.spans, batching)
            && let Some(req) = enc.spans.take(resource, scope)
        {
            let (f, n) = (self.failures.clone(), req.items);
            sender.send(req, move |e| f.count(n as u64, "spans", &e));
        }
        if let Some(LogSink::Otlp {
            sender,
            resource,
            batching,
        }) = &self.sinks.logs
            && ready(&enc.logs, batching)
            && let Some(req) = enc.logs.take(resource, &self.access_scope)
        {
            let (f, n) = (self.failures.clone(), req.items);
            sender.send(req, move |e| f.count(n as u64, "log records", &e));
        }
    }

    /// Waits until no export is on the wire.
    fn settle(&self) {
        if let Some(SpanSink {
            out: SpanOut::Otlp { sender, .. },
            ..
        }) = &self.sinks.spans
        {
            sender.settle();
        }
        if let Some(LogSink::Otlp { sender, .. }) = &self.sinks.logs {
            sender.settle();
        }
    }

    fn export(&self, spans: Vec<SpanData>) {
        let Some(SpanSink {
            out: SpanOut::Sdk(exporter),
            ..
        }) = &self.sinks.spans
        else {
            return;
        };
        let n = spans.len() as u64;
        if let Err(e) = exporter.export(spans) {
            self.failures.count(n, "spans", &e.to_string());
        }
    }

    /// Records whatever is queued, on the calling thread.
    pub fn flush(&self) {
        self.drain(&mut Vec::new(), true);
    }

    /// Queues a finished request. When the queue is full its spans and log record are
    /// dropped and counted.
    pub fn submit(&self, rec: RequestRecord) {
        if self.sinks.is_empty() {
            return;
        }
        let rec = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() < self.cap {
                q.push(rec);
                if q.len() < HIGH_WATER {
                    return;
                }
                None
            } else {
                Some(rec)
            }
        };
        match rec {
            None => {
                if !self.woken.swap(true, Ordering::AcqRel)
                    && let Some(t) = self.thread.get()
                {
                    t.unpark();
                }
            }
            Some(rec) => {
                let lost = if self.sinks.spans.is_some() {
                    span_count(&rec)
                } else {
                    0
                } + u64::from(self.sinks.logs.is_some());
                self.dropped.fetch_add(lost, Ordering::Relaxed);
            }
        }
    }
}

impl RecorderGuard {
    /// Records what is queued, then flushes and shuts down the span exporter.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let Some(h) = self.handle.take() else { return };
        self.recorder.stop.store(true, Ordering::Release);
        h.thread().unpark();
        let _ = h.join();
        self.recorder.flush();
        if let Some(SpanSink {
            out: SpanOut::Sdk(exporter),
            ..
        }) = &self.recorder.sinks.spans
        {
            let _ = exporter.shutdown();
        }
    }
}

impl Drop for RecorderGuard {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    fn record() -> RequestRecord {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        RequestRecord {
            start,
            duration: Duration::from_micros(900),
            trace_id: TraceId::from(0xabcdu128),
            span_id: SpanId::from(0x11u64),
            parent: None,
            method: "POST",
            route: "/predict",
            path: "/predict".into(),
            request_id: crate::http::RequestId::from("r-1").unwrap(),
            client: Some("10.1.2.3".parse().unwrap()),
            status: 200,
            inference: Inference {
                outcome: Some(Outcome::Ok),
                batch: 2,
                pre: Some(Phase {
                    start: Duration::from_micros(100),
                    end: Duration::from_micros(150),
                    error: None,
                }),
                forward: Some(Phase {
                    start: Duration::from_micros(150),
                    end: Duration::from_micros(400),
                    error: None,
                }),
                post: Some(Phase {
                    start: Duration::from_micros(400),
                    end: Duration::from_micros(420),
                    error: None,
                }),
                predictions: vec![275_000.0, 300_000.0],
            },
        }
    }

    fn shape() -> SpanShape {
        SpanShape {
            scope: InstrumentationScope::builder("inference-app").build(),
            model: ["house-price".into(), "1.0.0".into()],
        }
    }

    fn ids() -> impl FnMut() -> SpanId {
        let mut n = 0x100u64;
        move || {
            n += 1;
            SpanId::from(n)
        }
    }

    fn attr(s: &SpanData, key: &str) -> Option<opentelemetry::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.clone())
    }

    #[test]
    fn client_addresses_read_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "9.10.99.100",
            "10.244.0.17",
            "127.0.0.1",
            "192.168.100.255",
            "255.255.255.255",
            "::1",
            "fd00:10:244::1a",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ClientAddress::new(ip).as_str(), ip.to_string());
        }
    }

    fn always() -> Sampler {
        Sampler::ParentBased(Box::new(Sampler::AlwaysOn))
    }

    #[test]
    fn a_prediction_makes_a_server_span_and_three_children_at_their_times() {
        let rec = record();
        let d = decide(&always(), &rec);
        assert!(d.record && d.flags.is_sampled());
        let s = spans(&rec, &d, &shape(), ids());
        let names: Vec<_> = s.iter().map(|s| s.name.as_ref()).collect();
        assert_eq!(
            names,
            ["preprocess", "inference", "postprocess", "POST /predict"]
        );
        let server = &s[3];
        assert_eq!(server.span_kind, SpanKind::Server);
        assert_eq!(server.span_context.trace_id(), rec.trace_id);
        assert_eq!(server.span_context.span_id(), rec.span_id);
        assert_eq!(server.parent_span_id, SpanId::INVALID);
        assert!(!server.parent_span_is_remote);
        assert_eq!(server.start_time, rec.start);
        assert_eq!(server.end_time, rec.start + Duration::from_micros(900));
        assert_eq!(
            attr(server, "http.response.status_code"),
            Some(200i64.into())
        );
        assert_eq!(attr(server, "http.route"), Some("/predict".into()));
        assert_eq!(attr(server, "client.address"), Some("10.1.2.3".into()));
        assert_eq!(attr(server, "request.id"), Some("r-1".into()));
        assert_eq!(server.status, Status::Unset);
        for child in &s[..3] {
            assert_eq!(child.span_context.trace_id(), rec.trace_id);
            assert_eq!(child.parent_span_id, rec.span_id);
            assert_eq!(child.span_kind, SpanKind::Internal);
            assert!(child.start_time >= server.start_time && child.end_time <= server.end_time);
        }
        let ids: std::collections::HashSet<_> =
            s.iter().map(|s| s.span_context.span_id()).collect();
        assert_eq!(ids.len(), 4, "span ids are distinct");
        assert_eq!(attr(&s[1], "model.name"), Some("house-price".into()));
        assert_eq!(attr(&s[1], "inference.batch.size"), Some(2i64.into()));
        assert_eq!(
            s[1].start_time,
            rec.start + Duration::from_micros(150),
            "the forward pass keeps its own timing"
        );
    }

    #[test]
    fn a_caller_s_traceparent_is_the_remote_parent_and_its_sampling_is_followed() {
        let mut rec = record();
        let parent = SpanContext::new(
            rec.trace_id,
            SpanId::from(0x77u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        rec.parent = Some(parent.clone());
        let d = decide(&always(), &rec);
        let s = spans(&rec, &d, &shape(), ids());
        let server = s.last().unwrap();
        assert_eq!(server.parent_span_id, SpanId::from(0x77u64));
        assert!(server.parent_span_is_remote);

        rec.parent = Some(SpanContext::new(
            rec.trace_id,
            SpanId::from(0x77u64),
            TraceFlags::default(),
            true,
            TraceState::default(),
        ));
        let d = decide(&always(), &rec);
        assert!(!d.record, "an unsampled caller means no spans here");
        assert!(spans(&rec, &d, &shape(), ids()).is_empty());
    }

    #[test]
    fn failures_set_error_status_on_the_span_that_failed() {
        let mut rec = record();
        rec.status = 500;
        rec.inference.forward.as_mut().unwrap().error = Some("shape mismatch".into());
        rec.inference.post = None;
        let s = spans(&rec, &decide(&always(), &rec), &shape(), ids());
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].status, Status::error("shape mismatch"));
        assert_eq!(s[0].status, Status::Unset);
        assert_eq!(s[2].status, Status::error("HTTP 500"));
    }

    #[test]
    fn requests_without_the_model_make_only_the_server_span() {
        let mut rec = record();
        rec.inference = Inference::default();
        rec.method = "GET";
        rec.route = "/health";
        rec.client = None;
        let s = spans(&rec, &decide(&always(), &rec), &shape(), ids());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "GET /health");
        assert_eq!(attr(&s[0], "client.address"), None);
    }

    #[test]
    fn ratio_sampling_decides_once_per_trace() {
        let rec = record();
        let off = decide(&Sampler::TraceIdRatioBased(0.0), &rec);
        assert!(!off.record && !off.flags.is_sampled());
        assert!(spans(&rec, &off, &shape(), ids()).is_empty());
        assert!(decide(&Sampler::TraceIdRatioBased(1.0), &rec).record);
    }

    /// Spans only, always sampled, into `exporter`.
    fn sinks(exporter: Box<dyn BatchExport>) -> Sinks {
        Sinks {
            spans: Some(SpanSink {
                out: SpanOut::Sdk(exporter),
                batching: Batching::default(),
                sampler: always(),
                shape: shape(),
            }),
            ..Default::default()
        }
    }

    fn sink(exporter: &InMemorySpanExporter) -> Sinks {
        sinks(super::exporter(exporter.clone()))
    }

    #[test]
    fn queued_requests_are_recorded_on_flush() {
        let exporter = InMemorySpanExporter::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let r = Recorder::new(sink(&exporter), 10, dropped.clone());
        r.submit(record());
        assert!(exporter.get_finished_spans().unwrap().is_empty());
        r.flush();
        assert_eq!(exporter.get_finished_spans().unwrap().len(), 4);
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_spans_and_never_blocks() {
        let exporter = InMemorySpanExporter::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let r = Recorder::new(sink(&exporter), 2, dropped.clone());
        for _ in 0..5 {
            r.submit(record());
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3 * 4);
        r.flush();
        assert_eq!(exporter.get_finished_spans().unwrap().len(), 2 * 4);
    }

    /// Keeps spans past shutdown (the in-memory exporter forgets them), counts shutdowns,
    /// and fails while told to.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<(Vec<SpanData>, usize, bool)>>);

    impl BatchExport for Kept {
        fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let mut k = self.0.lock().unwrap();
            if k.2 {
                return Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "collector down".into(),
                ));
            }
            k.0.extend(batch);
            Ok(())
        }
        fn shutdown(&self) -> OTelSdkResult {
            self.0.lock().unwrap().1 += 1;
            Ok(())
        }
    }

    fn kept_sink(kept: &Kept) -> Sinks {
        sinks(Box::new(kept.clone()))
    }

    #[test]
    fn the_thread_records_without_being_asked_and_stop_flushes() {
        let kept = Kept::default();
        let r = Recorder::new(kept_sink(&kept), 100, Arc::new(AtomicU64::new(0)));
        let guard = r.start().unwrap();
        r.submit(record());
        let t = std::time::Instant::now();
        while kept.0.lock().unwrap().0.is_empty() {
            assert!(t.elapsed() < Duration::from_secs(5), "never recorded");
            std::thread::sleep(Duration::from_millis(5));
        }
        r.submit(record());
        guard.stop();
        let k = kept.0.lock().unwrap();
        assert_eq!(k.0.len(), 8, "what was queued at stop is recorded");
        assert_eq!(k.1, 1, "and the exporter shut down");
    }

    /// Records the size of every exported batch.
    #[derive(Clone, Default)]
    struct Sizes(Arc<Mutex<Vec<usize>>>);

    impl BatchExport for Sizes {
        fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.lock().unwrap().push(batch.len());
            Ok(())
        }
        fn shutdown(&self) -> OTelSdkResult {
            Ok(())
        }
    }

    #[test]
    fn large_backlogs_are_exported_in_bounded_batches() {
        let sizes = Sizes::default();
        let r = Recorder::new(
            sinks(Box::new(sizes.clone())),
            10_000,
            Arc::new(AtomicU64::new(0)),
        );
        for _ in 0..1000 {
            r.submit(record());
        }
        r.flush();
        let s = sizes.0.lock().unwrap();
        assert_eq!(s.iter().sum::<usize>(), 4000);
        assert!(s.iter().all(|n| *n <= EXPORT_BATCH), "{s:?}");
        assert!(s.len() <= 2, "{s:?}");
    }

    #[test]
    fn the_batch_size_variable_bounds_sdk_exports_too() {
        let sizes = Sizes::default();
        let mut sinks = sinks(Box::new(sizes.clone()));
        sinks.spans.as_mut().unwrap().batching.max_items = Some(10);
        let r = Recorder::new(sinks, 100, Arc::new(AtomicU64::new(0)));
        for _ in 0..7 {
            r.submit(record());
        }
        r.flush();
        assert_eq!(*sizes.0.lock().unwrap(), [10, 10, 8]);
    }

    #[test]
    fn spans_of_a_failed_export_are_counted_as_dropped() {
        let kept = Kept::default();
        kept.0.lock().unwrap().2 = true;
        let dropped = Arc::new(AtomicU64::new(0));
        let r = Recorder::new(kept_sink(&kept), 100, dropped.clone());
        r.submit(record());
        r.submit(record());
        r.flush();
        assert_eq!(dropped.load(Ordering::Relaxed), 8);
        kept.0.lock().unwrap().2 = false;
        r.submit(record());
        r.flush();
        assert_eq!(
            kept.0.lock().unwrap().0.len(),
            4,
            "recovers with the collector"
        );
        assert_eq!(dropped.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn encoded_spans_and_records_that_fail_to_send_are_counted_as_dropped() {
        // Nothing listens on port 1: every export is refused.
        let dead = |signal, path: &str| {
            otlp::Sender::new(
                signal,
                otlp::Target {
                    protocol: crate::telemetry::Protocol::HttpProtobuf,
                    url: format!("http://127.0.0.1:1{path}"),
                    headers: Vec::new(),
                    timeout: Duration::from_secs(2),
                },
            )
            .unwrap()
        };
        let sinks = Sinks {
            spans: Some(SpanSink {
                out: SpanOut::Otlp {
                    sender: dead(otlp::Signal::Traces, "/v1/traces"),
                    resource: Default::default(),
                    scope: otlp::EncodedScope::named("inference-app"),
                },
                batching: Batching::default(),
                sampler: always(),
                shape: shape(),
            }),
            logs: Some(LogSink::Otlp {
                sender: dead(otlp::Signal::Logs, "/v1/logs"),
                resource: Default::default(),
                batching: Batching::default(),
            }),
        };
        let dropped = Arc::new(AtomicU64::new(0));
        let r = Recorder::new(sinks, 100, dropped.clone());
        r.submit(record());
        r.submit(record());
        r.flush();
        assert_eq!(
            dropped.load(Ordering::Relaxed),
            2 * 4 + 2,
            "four spans and one log record per request"
        );
        let enc = r.encoder.lock().unwrap();
        assert!(
            enc.spans.is_empty() && enc.logs.is_empty(),
            "nothing is kept to retry"
        );
    }

    #[test]
    fn with_every_signal_off_nothing_is_queued() {
        let r = Recorder::new(Sinks::default(), 1, Arc::new(AtomicU64::new(0)));
        assert!(!r.enabled());
        r.submit(record());
        r.submit(record());
        assert!(r.queue.lock().unwrap().is_empty());
    }
}
