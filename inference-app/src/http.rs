//! The axum service: health and readiness, `/predict`, the Open Inference Protocol v2 REST
//! endpoints, and `/metrics`. Every request gets a server span (child of an incoming
//! `traceparent`), child spans for pre-processing, the forward pass and post-processing, the
//! HTTP and inference metrics, and a JSON log line carrying its trace and span ids.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::log_writer::LogWriter;
use crate::metrics::{AppMetrics, Outcome};
use crate::model::Model;
use crate::recorder::{self, Phase, Recorder, RequestRecord};

/// Default request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// Shared state of the service.
pub struct AppState {
    /// The model, once loaded.
    pub model: Arc<Model>,
    /// Set after the model is loaded and warmed up.
    pub ready: AtomicBool,
    /// Metrics, recorded inline.
    pub metrics: Arc<AppMetrics>,
    /// Turns finished requests into spans, OTLP metrics and OTLP log records.
    pub recorder: Arc<Recorder>,
    /// OTEL_EXPORTER_OTLP_ENDPOINT.
    pub collector_endpoint: Option<String>,
    /// Where JSON access lines go (none in tests that do not look at them).
    access_log: Option<LogWriter>,
}

impl AppState {
    /// The state for a loaded model; `ready` starts false.
    pub fn new(
        model: Arc<Model>,
        metrics: Arc<AppMetrics>,
        recorder: Arc<Recorder>,
        collector_endpoint: Option<String>,
    ) -> Self {
        AppState {
            model,
            ready: AtomicBool::new(false),
            metrics,
            recorder,
            collector_endpoint,
            access_log: None,
        }
    }

    /// Writes a JSON access line per request to `out`.
    pub fn with_access_log(mut self, out: LogWriter) -> Self {
        self.access_log = Some(out);
        self
    }
}

/// The target of the per-request access line (`LOG_LEVEL=access=warn` turns it off) and the
/// scope of its OTLP twin.
pub const ACCESS_TARGET: &str = "access";

/// The JSON access line, in the layout of the service's other (tracing) log lines. It is
/// serialized directly: through `tracing`'s JSON layer, the field visitors cost a request
/// about 2 µs.
#[derive(serde::Serialize)]
struct AccessLine<'a> {
    timestamp: String,
    level: &'static str,
    message: &'static str,
    trace_id: Hex<16>,
    span_id: Hex<8>,
    request_id: &'a str,
    #[serde(rename = "http.method")]
    method: &'static str,
    #[serde(rename = "http.route")]
    route: &'static str,
    #[serde(rename = "url.path")]
    path: &'a str,
    #[serde(rename = "http.status")]
    status: u16,
    latency_ms: f64,
    target: &'static str,
}

/// A trace or span id as its fixed-width lower-case hex, written on the stack: formatting the
/// ids through `Display` (a padded `u128` `LowerHex`) cost a request about 600 instructions.
struct Hex<const N: usize>([u8; N]);

impl From<TraceId> for Hex<16> {
    fn from(id: TraceId) -> Self {
        Hex(id.to_bytes())
    }
}

impl From<opentelemetry::trace::SpanId> for Hex<8> {
    fn from(id: opentelemetry::trace::SpanId) -> Self {
        Hex(id.to_bytes())
    }
}

impl<const N: usize> serde::Serialize for Hex<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(const_hex::Buffer::<N>::new().format(&self.0))
    }
}

/// Per-request context the middleware hands to handlers.
#[derive(Clone)]
pub struct RequestCtx {
    /// When the request started (the phases of an inference are timed from here).
    pub start: Instant,
    /// The request's trace.
    pub trace_id: TraceId,
    /// The request id (incoming `X-Request-ID`, else generated).
    pub request_id: RequestId,
}

/// A request id, held inline: the record of a request is handed to the recorder thread, and a
/// `String` freed there cost jemalloc a remote free (about 300 instructions a request).
pub type RequestId = arrayvec::ArrayString<128>;

/// A 4xx/5xx with `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

struct HeaderExtractor<'a>(&'a HeaderMap);
impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

fn new_request_id() -> RequestId {
    let mut hex = const_hex::Buffer::<16>::new();
    RequestId::from(hex.format(&rand::random::<[u8; 16]>())).unwrap_or_default()
}

/// The routes of the router, as static strings for metric labels and span names (no
/// allocation per request).
const ROUTES: [&str; 11] = [
    "/",
    "/health",
    "/ready",
    "/predict",
    "/metrics",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v2/models/{name}",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/infer",
];

fn static_route(path: Option<&str>) -> &'static str {
    match path {
        Some("/predict/") => "/predict",
        Some(p) => ROUTES
            .iter()
            .find(|r| **r == p)
            .copied()
            .unwrap_or("unmatched"),
        None => "unmatched",
    }
}

fn static_method(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    }
}

/// Request id, trace context, HTTP metrics and the JSON access line around every request;
/// the rest of its telemetry is built later by the [`Recorder`].
async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let wall = SystemTime::now();
    let method = static_method(req.method());
    let route = static_route(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    // Most paths are their route (`/predict`): those are not copied.
    let path = match req.uri().path() {
        p if p == route => Cow::Borrowed(route),
        p => Cow::Owned(p.to_string()),
    };
    let parent = if req.headers().contains_key("traceparent") {
        opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        })
        .span()
        .span_context()
        .clone()
    } else {
        SpanContext::empty_context()
    };
    let parent = parent.is_valid().then_some(parent);
    let trace_id = parent
        .as_ref()
        .map(SpanContext::trace_id)
        .unwrap_or_else(recorder::new_trace_id);
    let span_id = recorder::new_span_id();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .and_then(|v| RequestId::from(v).ok())
        .unwrap_or_else(new_request_id);
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    req.extensions_mut().insert(RequestCtx {
        start,
        trace_id,
        request_id,
    });
    let active = state.metrics.started(method, route);
    let (mut resp, inference) = recorder::scoped(next.run(req)).await;
    drop(active);
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        // axum's 405 has an empty body; say what to do, and keep its Allow header.
        let allow = resp.headers_mut().remove(header::ALLOW);
        resp = ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this endpoint; GET / lists them".into(),
        )
        .into_response();
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    let status = resp.status().as_u16();
    let duration = start.elapsed();
    if let Some(out) = &state.access_log
        && tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO)
    {
        out.line(&AccessLine {
            timestamp: chrono::DateTime::<chrono::Utc>::from(wall + duration)
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            level: "INFO",
            message: "request served",
            trace_id: trace_id.into(),
            span_id: span_id.into(),
            request_id: &request_id,
            method,
            route,
            path: &path,
            status,
            latency_ms: duration.as_secs_f64() * 1000.0,
            target: ACCESS_TARGET,
        });
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let mut rec = RequestRecord {
        start: wall,
        duration,
        trace_id,
        span_id,
        parent,
        method,
        route,
        path,
        request_id,
        client,
        status,
        inference,
    };
    state.metrics.record(&rec);
    // Freed here rather than on the recorder's thread, where jemalloc pays for a remote free.
    drop(std::mem::take(&mut rec.inference.predictions));
    state.recorder.submit(rec);
    resp
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictBody {
    #[serde(default)]
    features: Option<Vec<f64>>,
    #[serde(default)]
    instances: Option<Vec<Vec<f64>>>,
}

/// Whether the request says its body is JSON: read from the headers in place (the `HeaderMap`
/// extractor clones them all) and judged after the body, so an oversized body is a 413
/// whatever its type.
pub struct JsonContentType(Result<(), ApiError>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for JsonContentType {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        Ok(JsonContentType(if ct.starts_with("application/json") {
            Ok(())
        } else {
            Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type must be application/json, got {:?}",
                    if ct.is_empty() { "nothing" } else { ct }
                ),
            ))
        }))
    }
}

fn json_body<T: serde::de::DeserializeOwned>(
    content_type: JsonContentType,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is larger than the limit".into(),
            )
        } else {
            bad(format!("could not read the request body: {e}"))
        }
    })?;
    content_type.0?;
    serde_json::from_slice(&body).map_err(|e| {
        let msg = e.to_string();
        // serde_json cannot represent NaN/Infinity: they arrive as invalid JSON.
        bad(format!("invalid JSON body: {msg}"))
    })
}

/// Notes how an inference request ended, when it ends before the model is involved.
fn invalid(e: ApiError) -> ApiError {
    recorder::note(|i| i.outcome = Some(Outcome::InvalidInput));
    e
}

/// Validates and runs the forward pass, timing pre-processing, the forward pass and
/// post-processing for their spans.
fn infer(state: &AppState, ctx: &RequestCtx, rows: &[Vec<f64>]) -> Result<Vec<f64>, ApiError> {
    let model = &state.model;
    let since = |t: Instant| t.duration_since(ctx.start);
    let t0 = Instant::now();
    let valid = model.validate(rows);
    let t1 = Instant::now();
    let pre = Phase {
        start: since(t0),
        end: since(t1),
        error: valid.as_ref().err().map(ToString::to_string),
    };
    if let Err(e) = valid {
        recorder::note(|i| {
            i.batch = rows.len();
            i.pre = Some(pre);
            i.outcome = Some(Outcome::InvalidInput);
        });
        return Err(bad(e.to_string()));
    }
    let out = model.predict(rows);
    let t2 = Instant::now();
    let forward = Phase {
        start: since(t1),
        end: since(t2),
        error: out.as_ref().err().map(ToString::to_string),
    };
    match out {
        Ok(pred) => {
            let predictions = pred.clone();
            let t3 = Instant::now();
            recorder::note(|i| {
                i.batch = rows.len();
                i.pre = Some(pre);
                i.forward = Some(forward);
                i.post = Some(Phase {
                    start: since(t2),
                    end: since(t3),
                    error: None,
                });
                i.predictions = predictions;
                i.outcome = Some(Outcome::Ok);
            });
            Ok(pred)
        }
        Err(e) => {
            recorder::note(|i| {
                i.batch = rows.len();
                i.pre = Some(pre);
                i.forward = Some(forward);
                i.outcome = Some(Outcome::Error);
            });
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
    }
}

/// The reply of `/predict` (fields in alphabetical order, as before it was typed).
#[derive(serde::Serialize)]
struct Prediction<'a> {
    latency_ms: f64,
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    predicted_price: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    predictions: Option<&'a [f64]>,
    request_id: &'a str,
    trace_id: Hex<16>,
    /// Features outside the training data, named with their range.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

async fn predict(
    State(state): State<Arc<AppState>>,
    axum::Extension(ctx): axum::Extension<RequestCtx>,
    content_type: JsonContentType,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let b: PredictBody = json_body(content_type, body).map_err(invalid)?;
    let (rows, single) = match (b.features, b.instances) {
        (Some(f), None) => (vec![f], true),
        (None, Some(rows)) => (rows, false),
        (Some(_), Some(_)) => {
            return Err(invalid(bad(
                "send either \"features\" (one row) or \"instances\" (a batch), not both",
            )));
        }
        (None, None) => {
            return Err(invalid(bad(
                "missing field \"features\" (e.g. {\"features\": [1500]}) or \"instances\"",
            )));
        }
    };
    let pred = infer(&state, &ctx, &rows)?;
    let card = &state.model.card;
    let warnings = state.model.warnings(&rows);
    Ok(axum::Json(Prediction {
        latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        model_name: &card.name,
        model_version: &card.version,
        predicted_price: single.then(|| pred[0]),
        predictions: (!single).then_some(pred.as_slice()),
        request_id: &ctx.request_id,
        trace_id: ctx.trace_id.into(),
        warnings,
    })
    .into_response())
}

async fn root(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "service": "inference-app",
        "version": env!("CARGO_PKG_VERSION"),
        "model": {"name": state.model.card.name, "version": state.model.card.version, "features": state.model.card.feature_names},
        "endpoints": ["GET /", "GET /health", "GET /ready", "POST /predict", "GET /metrics",
                      "GET /v2", "GET /v2/health/live", "GET /v2/health/ready", "GET /v2/models/{name}",
                      "GET /v2/models/{name}/ready", "POST /v2/models/{name}/infer"]
    }))
}

async fn health(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "status": "ok",
        "tracing_enabled": state.recorder.tracing(),
        "collector_endpoint": state.collector_endpoint,
    }))
}

async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, axum::Json<Value>) {
    let r = state.ready.load(Ordering::Acquire);
    let code = if r {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({"ready": r, "model": state.model.card.name})),
    )
}

async fn v2(State(_): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(
        json!({"name": "inference-app", "version": env!("CARGO_PKG_VERSION"), "extensions": []}),
    )
}

async fn v2_live() -> axum::Json<Value> {
    axum::Json(json!({"live": true}))
}

fn known<'a>(state: &'a AppState, name: &str) -> Result<&'a Model, ApiError> {
    if name == state.model.card.name {
        Ok(&state.model)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "unknown model {name:?}; this server serves {:?}",
                state.model.card.name
            ),
        ))
    }
}

async fn v2_model(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let m = known(&state, &name)?;
    let f = m.features() as i64;
    Ok(axum::Json(json!({
        "name": m.card.name,
        "versions": [m.card.version],
        "platform": "candle",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, f]}],
        "outputs": [{"name": m.card.output_name, "datatype": "FP64", "shape": [-1, 1]}],
    })))
}

async fn v2_model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    known(&state, &name)?;
    let r = state.ready.load(Ordering::Acquire);
    Ok((
        if r {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        axum::Json(json!({"name": name, "ready": r})),
    ))
}

#[derive(Deserialize)]
struct V2Input {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

#[derive(Deserialize)]
struct V2Request {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<V2Input>,
}

fn flatten_numbers(v: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten_numbers(i, out)),
        Value::Number(n) => {
            out.push(n.as_f64().ok_or("a number does not fit in f64")?);
            Ok(())
        }
        other => Err(format!("data must hold only numbers, found {other}")),
    }
}

async fn v2_infer(
    State(state): State<Arc<AppState>>,
    axum::Extension(ctx): axum::Extension<RequestCtx>,
    Path(name): Path<String>,
    content_type: JsonContentType,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let m = known(&state, &name)?;
    let req: V2Request = json_body(content_type, body).map_err(invalid)?;
    let invalid = |msg: String| invalid(bad(msg));
    let [input] = req.inputs.as_slice() else {
        return Err(invalid(format!(
            "expected exactly one input tensor, got {}",
            req.inputs.len()
        )));
    };
    if !matches!(input.datatype.as_str(), "FP32" | "FP64") {
        return Err(invalid(format!(
            "input {} has datatype {}; use FP32 or FP64",
            input.name, input.datatype
        )));
    }
    let f = m.features();
    let [n, cols] = input.shape.as_slice() else {
        return Err(invalid(format!(
            "input {} must have shape [N, {f}], got {:?}",
            input.name, input.shape
        )));
    };
    if *cols != f as i64 || *n < 1 {
        return Err(invalid(format!(
            "input {} must have shape [N, {f}] with N ≥ 1, got {:?}",
            input.name, input.shape
        )));
    }
    let mut flat = Vec::new();
    flatten_numbers(&input.data, &mut flat).map_err(invalid)?;
    if flat.len() as i64 != n * cols {
        return Err(invalid(format!(
            "input {} has {} values but shape {:?} needs {}",
            input.name,
            flat.len(),
            input.shape,
            n * cols
        )));
    }
    let rows: Vec<Vec<f64>> = flat.chunks(f).map(<[f64]>::to_vec).collect();
    let pred = infer(&state, &ctx, &rows)?;
    Ok(axum::Json(json!({
        "model_name": m.card.name,
        "model_version": m.card.version,
        "id": req.id.unwrap_or_else(|| ctx.request_id.to_string()),
        "outputs": [{"name": m.card.output_name, "datatype": "FP64", "shape": [pred.len(), 1], "data": pred}],
    })))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = state.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no endpoint at {}; GET / lists them", uri.path()),
    )
}

/// The router with every endpoint, the body limit and the observing middleware.
pub fn router(state: Arc<AppState>, body_limit: usize) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/predict", post(predict))
        .route("/predict/", post(predict))
        .route("/metrics", get(metrics))
        .route("/v2", get(v2))
        .route("/v2/health/live", get(v2_live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(v2_model))
        .route("/v2/models/{name}/ready", get(v2_model_ready))
        .route("/v2/models/{name}/infer", post(v2_infer))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
