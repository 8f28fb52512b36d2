//! OTLP export of the service's spans and access records, encoded straight from the SDK's span
//! data (and from the request record) into protobuf bytes and sent over OTLP/gRPC or
//! OTLP/HTTP. The SDK's exporter first copies every span into the generated protobuf structs
//! (a `String` per attribute key, a hash map per batch) and then encodes those; here each span
//! is written once. The bytes are the same message, which a test checks by decoding both.
//! Endpoint, headers and timeout come from the standard `OTEL_EXPORTER_OTLP_*` variables.
//! Configurations this module does not handle (TLS, client certificates, compression) are
//! reported by [`target`] so the caller can use the SDK's exporter instead.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::SpanData;

use crate::recorder::{BatchExport, RequestRecord};
use crate::telemetry::Protocol;

/// A signal this module exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Log records.
    Logs,
}

impl Signal {
    fn env(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Logs => "LOGS",
        }
    }
    fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
        }
    }
    fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }
}

/// Where and how one signal is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The transport.
    pub protocol: Protocol,
    /// The full URL (HTTP) or the server's URL (gRPC).
    pub url: String,
    /// Extra headers (gRPC metadata), names in lower case.
    pub headers: Vec<(String, String)>,
    /// The time one export may take.
    pub timeout: Duration,
}

/// Reads the exporter configuration of `signal` the way the OTLP exporter specification says:
/// the per-signal variable wins over the general one; a general endpoint gets the signal's
/// path appended for HTTP. `Err` names the setting this module leaves to the SDK's exporter.
pub fn target(
    signal: Signal,
    protocol: Protocol,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Target, String> {
    let s = signal.env();
    let var = |name: &str| {
        get(&format!("OTEL_EXPORTER_OTLP_{s}_{name}"))
            .or_else(|| get(&format!("OTEL_EXPORTER_OTLP_{name}")))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    if let Some(c) = var("COMPRESSION").filter(|c| c != "none") {
        return Err(format!("compression {c}"));
    }
    for tls in ["CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE"] {
        if var(tls).is_some() {
            return Err(format!("OTEL_EXPORTER_OTLP_{tls}"));
        }
    }
    let own = get(&format!("OTEL_EXPORTER_OTLP_{s}_ENDPOINT"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let general = get("OTEL_EXPORTER_OTLP_ENDPOINT")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let url = match (protocol, own, general) {
        (_, Some(own), _) => own,
        (Protocol::Grpc, None, Some(g)) => g,
        (Protocol::HttpProtobuf, None, Some(g)) => {
            format!("{}{}", g.trim_end_matches('/'), signal.http_path())
        }
        (Protocol::Grpc, None, None) => "http://localhost:4317".into(),
        (Protocol::HttpProtobuf, None, None) => {
            format!("http://localhost:4318{}", signal.http_path())
        }
    };
    if !url.starts_with("http://") {
        return Err(format!("endpoint {url} (TLS)"));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for list in [
        get("OTEL_EXPORTER_OTLP_HEADERS"),
        get(&format!("OTEL_EXPORTER_OTLP_{s}_HEADERS")),
    ]
    .into_iter()
    .flatten()
    {
        for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(format!("header {pair:?} is not key=value"));
            };
            let k = k.trim().to_ascii_lowercase();
            let v = percent_encoding::percent_decode_str(v.trim())
                .decode_utf8()
                .map_err(|_| format!("header {k} is not UTF-8 after percent-decoding"))?
                .into_owned();
            headers.retain(|(existing, _)| *existing != k);
            headers.push((k, v));
        }
    }
    let timeout = match var("TIMEOUT").map(|t| t.parse::<u64>()) {
        Some(Ok(ms)) if ms > 0 => Duration::from_millis(ms),
        Some(_) => return Err("OTEL_EXPORTER_OTLP_TIMEOUT is not a positive number".into()),
        None => Duration::from_secs(10),
    };
    Ok(Target {
        protocol,
        url,
        headers,
        timeout,
    })
}

// ---- protobuf wire format ----

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A string field, left out when empty (proto3 default).
fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        bytes(out, field, s.as_bytes());
    }
}

fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        key(out, field, FIXED32);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v);
    }
}

/// A nested message, written into `scratch` first to learn its length.
fn message(out: &mut Vec<u8>, field: u32, scratch: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    scratch.clear();
    body(scratch);
    bytes(out, field, scratch);
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The body of an `AnyValue` holding a scalar, and its length, without a scratch buffer.
enum Scalar<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

impl Scalar<'_> {
    fn len(&self) -> usize {
        match self {
            Scalar::Str(s) => 1 + varint_len(s.len() as u64) + s.len(),
            Scalar::Bool(_) => 2,
            Scalar::Int(i) => 1 + varint_len(*i as u64),
            Scalar::Double(_) => 9,
        }
    }
    fn write(&self, out: &mut Vec<u8>) {
        // AnyValue: 1 string, 2 bool, 3 int, 4 double; a oneof is written even when zero.
        match self {
            Scalar::Str(s) => bytes(out, 1, s.as_bytes()),
            Scalar::Bool(b) => {
                key(out, 2, VARINT);
                out.push(u8::from(*b));
            }
            Scalar::Int(i) => {
                key(out, 3, VARINT);
                varint(out, *i as u64);
            }
            Scalar::Double(d) => {
                key(out, 4, FIXED64);
                out.extend_from_slice(&d.to_bits().to_le_bytes());
            }
        }
    }
}

fn scalar(v: &Value) -> Option<Scalar<'_>> {
    match v {
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        Value::I64(i) => Some(Scalar::Int(*i)),
        Value::F64(d) => Some(Scalar::Double(*d)),
        Value::String(s) => Some(Scalar::Str(s.as_str())),
        _ => None,
    }
}

/// An `AnyValue` body for any attribute value.
fn any_value(out: &mut Vec<u8>, v: &Value) {
    if let Some(s) = scalar(v) {
        return s.write(out);
    }
    let Value::Array(a) = v else {
        return Scalar::Str(&v.to_string()).write(out);
    };
    // ArrayValue (field 5) of AnyValue (field 1 each).
    let mut arr = Vec::new();
    let mut item = |s: Scalar<'_>| {
        key(&mut arr, 1, LEN);
        varint(&mut arr, s.len() as u64);
        s.write(&mut arr);
    };
    match a {
        Array::Bool(v) => v.iter().for_each(|b| item(Scalar::Bool(*b))),
        Array::I64(v) => v.iter().for_each(|i| item(Scalar::Int(*i))),
        Array::F64(v) => v.iter().for_each(|d| item(Scalar::Double(*d))),
        Array::String(v) => v.iter().for_each(|s| item(Scalar::Str(s.as_str()))),
        other => item(Scalar::Str(&other.to_string())),
    }
    bytes(out, 5, &arr);
}

/// A `KeyValue` as field `field`.
fn key_value(out: &mut Vec<u8>, field: u32, k: &str, v: &Value) {
    if let Some(s) = scalar(v) {
        let value_len = s.len();
        let len =
            1 + varint_len(k.len() as u64) + k.len() + 1 + varint_len(value_len as u64) + value_len;
        key(out, field, LEN);
        varint(out, len as u64);
        bytes(out, 1, k.as_bytes());
        key(out, 2, LEN);
        varint(out, value_len as u64);
        s.write(out);
    } else {
        let mut body = Vec::new();
        bytes(&mut body, 1, k.as_bytes());
        let mut value = Vec::new();
        any_value(&mut value, v);
        bytes(&mut body, 2, &value);
        bytes(out, field, &body);
    }
}

fn attributes<'a>(out: &mut Vec<u8>, field: u32, kvs: impl IntoIterator<Item = &'a KeyValue>) {
    for kv in kvs {
        key_value(out, field, kv.key.as_str(), &kv.value);
    }
}

/// A resource, encoded once for every export.
#[derive(Debug, Clone, Default)]
pub struct EncodedResource {
    /// The `Resource` message body.
    body: Vec<u8>,
    /// The resource's schema URL.
    schema_url: String,
}

impl From<&Resource> for EncodedResource {
    fn from(r: &Resource) -> Self {
        let mut body = Vec::new();
        for (k, v) in r.iter() {
            key_value(&mut body, 1, k.as_str(), v);
        }
        EncodedResource {
            body,
            schema_url: r.schema_url().unwrap_or("").to_string(),
        }
    }
}

/// The `InstrumentationScope` message body.
fn scope(out: &mut Vec<u8>, s: &InstrumentationScope) {
    string(out, 1, s.name());
    string(out, 2, s.version().unwrap_or(""));
    attributes(out, 3, s.attributes());
}

fn span_kind(k: &SpanKind) -> u64 {
    match k {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// W3C flags plus the OTLP bits saying whether the parent is remote.
fn span_flags(trace_flags: u8, parent_is_remote: bool) -> u32 {
    u32::from(trace_flags) | 0x100 | if parent_is_remote { 0x200 } else { 0 }
}

/// One `Span` message body.
fn span(out: &mut Vec<u8>, s: &SpanData, scratch: &mut Vec<u8>) {
    let cx = &s.span_context;
    bytes(out, 1, &cx.trace_id().to_bytes());
    bytes(out, 2, &cx.span_id().to_bytes());
    string(out, 3, &cx.trace_state().header());
    if s.parent_span_id != opentelemetry::trace::SpanId::INVALID {
        bytes(out, 4, &s.parent_span_id.to_bytes());
    }
    string(out, 5, &s.name);
    uint(out, 6, span_kind(&s.span_kind));
    fixed64(out, 7, nanos(s.start_time));
    fixed64(out, 8, nanos(s.end_time));
    attributes(out, 9, &s.attributes);
    uint(out, 10, u64::from(s.dropped_attributes_count));
    for e in s.events.iter() {
        message(out, 11, scratch, |m| {
            fixed64(m, 1, nanos(e.timestamp));
            string(m, 2, &e.name);
            attributes(m, 3, &e.attributes);
            uint(m, 4, u64::from(e.dropped_attributes_count));
        });
    }
    uint(out, 12, u64::from(s.events.dropped_count));
    for l in s.links.iter() {
        message(out, 13, scratch, |m| {
            bytes(m, 1, &l.span_context.trace_id().to_bytes());
            bytes(m, 2, &l.span_context.span_id().to_bytes());
            string(m, 3, &l.span_context.trace_state().header());
            attributes(m, 4, &l.attributes);
            uint(m, 5, u64::from(l.dropped_attributes_count));
            fixed32(
                m,
                6,
                span_flags(
                    l.span_context.trace_flags().to_u8(),
                    l.span_context.is_remote(),
                ),
            );
        });
    }
    uint(out, 14, u64::from(s.links.dropped_count));
    // Status: 2 message, 3 code (OK 1, ERROR 2); the reference exporter always writes it.
    let (code, msg) = match &s.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    scratch.clear();
    string(scratch, 2, msg);
    uint(scratch, 3, code);
    bytes(out, 15, scratch);
    fixed32(
        out,
        16,
        span_flags(cx.trace_flags().to_u8(), s.parent_span_is_remote),
    );
}

/// Reused buffers: encoding a batch allocates nothing once they have grown.
#[derive(Default)]
pub struct Encoder {
    resource: Vec<u8>,
    scopes: Vec<u8>,
    item: Vec<u8>,
    scratch: Vec<u8>,
}

/// The request message: field 1 holding `inner`, in a buffer of exactly its size.
fn request(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + varint_len(inner.len() as u64) + inner.len());
    bytes(&mut out, 1, inner);
    out
}

impl Encoder {
    /// An `ExportTraceServiceRequest` with one `ResourceSpans`; spans are grouped by scope in
    /// the order their scopes first appear.
    pub fn traces(&mut self, resource: &EncodedResource, spans: &[SpanData]) -> Vec<u8> {
        let mut groups: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
        for s in spans {
            match groups
                .iter_mut()
                .find(|(sc, _)| *sc == &s.instrumentation_scope)
            {
                Some((_, v)) => v.push(s),
                None => groups.push((&s.instrumentation_scope, vec![s])),
            }
        }
        let resource_spans = &mut self.resource;
        resource_spans.clear();
        bytes(resource_spans, 1, &resource.body);
        for (sc, group) in groups {
            self.scopes.clear();
            self.item.clear();
            scope(&mut self.item, sc);
            bytes(&mut self.scopes, 1, &self.item);
            for s in group {
                self.item.clear();
                span(&mut self.item, s, &mut self.scratch);
                bytes(&mut self.scopes, 2, &self.item);
            }
            string(&mut self.scopes, 3, sc.schema_url().unwrap_or(""));
            bytes(resource_spans, 2, &self.scopes);
        }
        string(resource_spans, 3, &resource.schema_url);
        request(resource_spans)
    }

    /// An `ExportLogsServiceRequest` with the access record of each request.
    pub fn access_logs(
        &mut self,
        resource: &EncodedResource,
        scope_name: &str,
        records: &[(&RequestRecord, u8)],
    ) -> Vec<u8> {
        self.scopes.clear();
        self.item.clear();
        string(&mut self.item, 1, scope_name);
        bytes(&mut self.scopes, 1, &self.item);
        for (rec, flags) in records {
            self.item.clear();
            access_log(&mut self.item, rec, *flags);
            bytes(&mut self.scopes, 2, &self.item);
        }
        let resource_logs = &mut self.resource;
        resource_logs.clear();
        bytes(resource_logs, 1, &resource.body);
        bytes(resource_logs, 2, &self.scopes);
        string(resource_logs, 3, &resource.schema_url);
        request(resource_logs)
    }
}

/// One `LogRecord` body: the OTLP twin of the JSON access line.
fn access_log(out: &mut Vec<u8>, rec: &RequestRecord, flags: u8) {
    let at = nanos(rec.start + rec.duration);
    fixed64(out, 1, at);
    uint(out, 2, 9); // SEVERITY_NUMBER_INFO
    string(out, 3, "INFO");
    // body: AnyValue string
    let body = Scalar::Str("request served");
    key(out, 5, LEN);
    varint(out, body.len() as u64);
    body.write(out);
    key_value(out, 6, "request.id", &Value::from(rec.request_id.clone()));
    key_value(out, 6, "http.request.method", &Value::from(rec.method));
    key_value(out, 6, "http.route", &Value::from(rec.route));
    key_value(out, 6, "url.path", &Value::from(rec.path.clone()));
    key_value(
        out,
        6,
        "http.response.status_code",
        &Value::I64(i64::from(rec.status)),
    );
    key_value(
        out,
        6,
        "latency_ms",
        &Value::F64(rec.duration.as_secs_f64() * 1000.0),
    );
    fixed32(out, 8, u32::from(flags));
    bytes(out, 9, &rec.trace_id.to_bytes());
    bytes(out, 10, &rec.span_id.to_bytes());
    fixed64(out, 11, at);
}

// ---- transports ----

/// tonic's codec for bytes that are already a protobuf message; the reply is not read.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = ();
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, n);
        Ok(Some(()))
    }
}

enum Transport {
    Grpc {
        channel: tonic::transport::Channel,
        path: http::uri::PathAndQuery,
        metadata: tonic::metadata::MetadataMap,
        runtime: tokio::runtime::Handle,
    },
    Http {
        client: std::sync::OnceLock<Result<reqwest::blocking::Client, String>>,
        headers: reqwest::header::HeaderMap,
    },
}

/// Sends encoded OTLP requests of one signal to one endpoint.
pub struct Sender {
    target: Target,
    transport: Transport,
}

impl Sender {
    /// Connects lazily; for gRPC this must run inside the tokio runtime that will carry the
    /// connection.
    pub fn new(signal: Signal, target: Target) -> Result<Self, String> {
        let transport = match target.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(target.url.clone())
                    .map_err(|e| format!("OTLP endpoint {}: {e}", target.url))?
                    .timeout(target.timeout)
                    .connect_timeout(target.timeout)
                    .connect_lazy();
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &target.headers {
                    let k = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                        .map_err(|e| format!("header {k}: {e}"))?;
                    let v = v.parse().map_err(|e| format!("header {k}: {e}"))?;
                    metadata.insert(k, v);
                }
                Transport::Grpc {
                    channel,
                    path: http::uri::PathAndQuery::from_static(signal.grpc_path()),
                    metadata,
                    runtime: tokio::runtime::Handle::try_current()
                        .map_err(|_| "OTLP/gRPC needs a tokio runtime".to_string())?,
                }
            }
            Protocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                headers.insert(
                    reqwest::header::CONTENT_TYPE,
                    reqwest::header::HeaderValue::from_static("application/x-protobuf"),
                );
                for (k, v) in &target.headers {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| format!("header {k}: {e}"))?;
                    let value = reqwest::header::HeaderValue::from_str(v)
                        .map_err(|e| format!("header {k}: {e}"))?;
                    headers.insert(name, value);
                }
                Transport::Http {
                    client: std::sync::OnceLock::new(),
                    headers,
                }
            }
        };
        Ok(Sender { target, transport })
    }

    /// Sends one request and waits for the reply. Call it from a plain thread, not from a
    /// runtime worker.
    pub fn send(&self, body: Vec<u8>) -> Result<(), String> {
        match &self.transport {
            Transport::Grpc {
                channel,
                path,
                metadata,
                runtime,
            } => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                let mut req = tonic::Request::new(body);
                *req.metadata_mut() = metadata.clone();
                let timeout = self.target.timeout;
                runtime.block_on(async move {
                    tokio::time::timeout(timeout, async {
                        grpc.ready()
                            .await
                            .map_err(|e| format!("OTLP/gRPC {}: {e}", self.target.url))?;
                        grpc.unary(req, path.clone(), Raw)
                            .await
                            .map(|_| ())
                            .map_err(|s| format!("OTLP/gRPC {}: {}", self.target.url, s.message()))
                    })
                    .await
                    .map_err(|_| format!("OTLP/gRPC {}: timed out", self.target.url))?
                })
            }
            Transport::Http { client, headers } => {
                // The blocking client runs a runtime of its own: it is built on the first
                // export, on the recorder's thread, never inside the service's runtime.
                let client = client
                    .get_or_init(|| {
                        reqwest::blocking::Client::builder()
                            .timeout(self.target.timeout)
                            .build()
                            .map_err(|e| e.to_string())
                    })
                    .as_ref()
                    .map_err(|e| format!("OTLP/HTTP client: {e}"))?;
                let resp = client
                    .post(&self.target.url)
                    .headers(headers.clone())
                    .body(body)
                    .send()
                    .map_err(|e| format!("OTLP/HTTP {}: {e}", self.target.url))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("OTLP/HTTP {}: {}", self.target.url, resp.status()))
                }
            }
        }
    }
}

/// The span exporter built on [`Encoder::traces`] and a [`Sender`].
pub struct SpanExporter {
    sender: Sender,
    resource: EncodedResource,
    encoder: std::sync::Mutex<Encoder>,
}

impl SpanExporter {
    /// Exports to `target`; see [`Sender::new`].
    pub fn new(target: Target) -> Result<Self, String> {
        Ok(SpanExporter {
            sender: Sender::new(Signal::Traces, target)?,
            resource: EncodedResource::default(),
            encoder: Default::default(),
        })
    }
}

impl BatchExport for SpanExporter {
    fn set_resource(&mut self, r: &Resource) {
        self.resource = r.into();
    }
    fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = self
            .encoder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .traces(&self.resource, &batch);
        drop(batch);
        self.sender
            .send(body)
            .map_err(OTelSdkError::InternalFailure)
    }
    fn shutdown(&self) -> OTelSdkResult {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn endpoints_follow_the_exporter_specification() {
        let t = target(Signal::Traces, Protocol::HttpProtobuf, env(&[])).unwrap();
        assert_eq!(t.url, "http://localhost:4318/v1/traces");
        assert_eq!(t.timeout, Duration::from_secs(10));
        let t = target(Signal::Traces, Protocol::Grpc, env(&[])).unwrap();
        assert_eq!(t.url, "http://localhost:4317");
        let general = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")];
        let t = target(Signal::Logs, Protocol::HttpProtobuf, env(&general)).unwrap();
        assert_eq!(t.url, "http://collector:4318/v1/logs");
        let t = target(Signal::Traces, Protocol::Grpc, env(&general)).unwrap();
        assert_eq!(
            t.url, "http://collector:4318/",
            "gRPC takes the endpoint as it is"
        );
        let own = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:9999/custom",
            ),
        ];
        let t = target(Signal::Traces, Protocol::HttpProtobuf, env(&own)).unwrap();
        assert_eq!(
            t.url, "http://traces:9999/custom",
            "a signal's endpoint is used as is"
        );
    }

    #[test]
    fn headers_are_percent_decoded_and_the_signal_s_own_win() {
        let t = target(
            Signal::Traces,
            Protocol::Grpc,
            env(&[
                ("OTEL_EXPORTER_OTLP_HEADERS", "Api-Key=a%20b, tenant=one"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "tenant=two"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
        )
        .unwrap();
        assert_eq!(
            t.headers,
            vec![
                ("api-key".to_string(), "a b".to_string()),
                ("tenant".to_string(), "two".to_string())
            ]
        );
        assert_eq!(t.timeout, Duration::from_millis(2500));
        assert!(
            target(
                Signal::Traces,
                Protocol::Grpc,
                env(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")])
            )
            .unwrap_err()
            .contains("key=value")
        );
    }

    #[test]
    fn tls_and_compression_are_left_to_the_sdk_exporter() {
        for pairs in [
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317")],
            [("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
            [("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/ca.pem")],
        ] {
            assert!(target(Signal::Traces, Protocol::Grpc, env(&pairs)).is_err());
        }
        assert!(
            target(
                Signal::Traces,
                Protocol::Grpc,
                env(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "none")])
            )
            .is_ok()
        );
    }

    use crate::recorder::{Inference, Phase, SpanShape, decide, spans};
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use prost::Message;

    fn record() -> RequestRecord {
        RequestRecord {
            start: SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            duration: Duration::from_micros(850),
            trace_id: TraceId::from(0x0af7651916cd43dd8448eb211c80319cu128),
            span_id: SpanId::from(0xb7ad6b7169203331u64),
            parent: Some(SpanContext::new(
                TraceId::from(0x0af7651916cd43dd8448eb211c80319cu128),
                SpanId::from(0x00f067aa0ba902b7u64),
                TraceFlags::SAMPLED,
                true,
                TraceState::from_key_value([("vendor", "x")]).unwrap(),
            )),
            method: "POST",
            route: "/predict",
            path: "/predict".into(),
            request_id: "ünïcode-id".into(),
            client: Some("::1".parse().unwrap()),
            status: 503,
            inference: Inference {
                outcome: None,
                batch: 300,
                pre: Some(Phase {
                    start: Duration::from_micros(10),
                    end: Duration::from_micros(20),
                    error: None,
                }),
                forward: Some(Phase {
                    start: Duration::from_micros(20),
                    end: Duration::from_micros(700),
                    error: Some("out of memory".into()),
                }),
                post: None,
                predictions: vec![],
            },
        }
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", "house-price"),
                KeyValue::new("k8s.namespace.name", "shop"),
                KeyValue::new("replicas", 3i64),
            ])
            .with_schema_url([], "https://opentelemetry.io/schemas/1.26.0")
            .build()
    }

    #[test]
    fn spans_encode_to_the_same_message_as_the_sdk_exporter() {
        let rec = record();
        let shape = SpanShape {
            scope: InstrumentationScope::builder("inference-app")
                .with_version("0.1.0")
                .with_attributes([KeyValue::new("scope.attr", true)])
                .build(),
            model: [
                KeyValue::new("model.name", "house-price"),
                KeyValue::new("model.version", "1.0.0"),
            ],
        };
        let sampler = opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
            opentelemetry_sdk::trace::Sampler::AlwaysOn,
        ));
        let mut n = 7u64;
        let mut batch = spans(&rec, &decide(&sampler, &rec), &shape, || {
            n += 1;
            SpanId::from(n)
        });
        // Everything else a span can carry: events, links, every value type, OK status, a
        // second scope.
        let mut extra = batch[0].clone();
        extra.name = "extra".into();
        extra.status = Status::Ok;
        extra.span_kind = SpanKind::Client;
        extra.parent_span_id = SpanId::INVALID;
        extra.parent_span_is_remote = false;
        extra.instrumentation_scope = InstrumentationScope::builder("other").build();
        extra.attributes = vec![
            KeyValue::new("b", false),
            KeyValue::new("i", -42i64),
            KeyValue::new("zero", 0i64),
            KeyValue::new("f", 0.25),
            KeyValue::new("empty", ""),
            KeyValue::new("ab", Value::Array(vec![true, false].into())),
            KeyValue::new("ai", Value::Array(vec![1i64, -1].into())),
            KeyValue::new("af", Value::Array(vec![1.5f64].into())),
            KeyValue::new(
                "as",
                Value::Array(vec![opentelemetry::StringValue::from("x")].into()),
            ),
        ];
        extra.dropped_attributes_count = 2;
        extra.events.events.push(opentelemetry::trace::Event::new(
            "retry",
            SystemTime::UNIX_EPOCH + Duration::from_secs(5),
            vec![KeyValue::new("attempt", 2i64)],
            1,
        ));
        extra.events.dropped_count = 3;
        extra
            .links
            .links
            .push(opentelemetry::trace::Link::with_context(
                rec.parent.clone().unwrap(),
            ));
        extra.links.dropped_count = 1;
        batch.push(extra);

        let r = resource();
        let ours = Encoder::default().traces(&EncodedResource::from(&r), &batch);
        let decoded = ExportTraceServiceRequest::decode(ours.as_slice()).unwrap();
        let reference = ExportTraceServiceRequest {
            resource_spans:
                opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope(
                    batch.clone(),
                    &ResourceAttributesWithSchema::from(&r),
                ),
        };
        assert_eq!(decoded, reference);
        assert_eq!(
            ours,
            reference.encode_to_vec(),
            "byte for byte, too (both write fields in number order)"
        );
    }

    #[test]
    fn access_records_encode_to_the_same_message_as_the_sdk_logger() {
        use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
        let rec = record();
        let at = rec.start + rec.duration;
        let provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder().build();
        let logger = provider.logger("inference-app");
        let mut sdk = logger.create_log_record();
        crate::recorder::fill_access_record(&mut sdk, &rec, TraceFlags::SAMPLED);
        sdk.set_observed_timestamp(at);
        let scope = InstrumentationScope::builder("inference-app").build();
        let data = [(&sdk, &scope)];
        let batch = opentelemetry_sdk::logs::LogBatch::new(&data);
        let r = resource();
        let reference = ExportLogsServiceRequest {
            resource_logs:
                opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope(
                    &batch,
                    &ResourceAttributesWithSchema::from(&r),
                ),
        };
        let ours = Encoder::default().access_logs(
            &EncodedResource::from(&r),
            "access",
            &[(&rec, TraceFlags::SAMPLED.to_u8())],
        );
        assert_eq!(
            ExportLogsServiceRequest::decode(ours.as_slice()).unwrap(),
            reference
        );
    }

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}
