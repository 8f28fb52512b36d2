//! The axum service: health and readiness, `/predict`, the Open Inference Protocol v2 REST
//! endpoints, and `/metrics`.
//!
//! Every request runs inside a live server span, the child of an incoming `traceparent` when
//! there is one, so its child spans, its log records and any call it made to another service
//! belong to the same trace. It is counted in the HTTP metrics and logged once as it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::metrics::{AppMetrics, Outcome};
use crate::model::Model;
use crate::prometheus::Scrape;

/// Default request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// The target of the per-request log line: `LOG_LEVEL=info,access=warn` turns it off.
pub const ACCESS_TARGET: &str = "access";

/// Shared state of the service.
pub struct AppState {
    /// The model.
    pub model: Arc<Model>,
    /// Set once the model is loaded and warmed up.
    pub ready: AtomicBool,
    /// The instruments.
    pub metrics: AppMetrics,
    /// What `/metrics` reads.
    pub scrape: Scrape,
    /// Makes the spans.
    pub tracer: SdkTracer,
    /// Whether spans are exported (for `/health`).
    pub tracing: bool,
    /// OTEL_EXPORTER_OTLP_ENDPOINT (for `/health`).
    pub collector_endpoint: Option<String>,
    /// `model.name` and `model.version`, for the forward-pass span.
    model_attributes: [KeyValue; 2],
}

impl AppState {
    /// The state for a loaded model; `ready` starts false.
    pub fn new(
        model: Arc<Model>,
        metrics: AppMetrics,
        scrape: Scrape,
        tracer: SdkTracer,
        tracing: bool,
        collector_endpoint: Option<String>,
    ) -> Self {
        let model_attributes = [
            KeyValue::new("model.name", model.card.name.clone()),
            KeyValue::new("model.version", model.card.version.clone()),
        ];
        AppState {
            model,
            ready: AtomicBool::new(false),
            metrics,
            scrape,
            tracer,
            tracing,
            collector_endpoint,
            model_attributes,
        }
    }
}

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

/// Every endpoint as (method, route, span name): static, so that metric attributes and span
/// names cost no allocation, and an unknown path cannot create a new series.
const ENDPOINTS: [(&str, &str, &str); 12] = [
    ("GET", "/", "GET /"),
    ("GET", "/health", "GET /health"),
    ("GET", "/ready", "GET /ready"),
    ("POST", "/predict", "POST /predict"),
    ("POST", "/predict/", "POST /predict"),
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
];

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];

/// The request's method, route and span name, as static strings.
fn endpoint(
    method: &axum::http::Method,
    path: Option<&str>,
) -> (&'static str, &'static str, &'static str) {
    let method = METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("_OTHER");
    let Some(e) = path.and_then(|p| ENDPOINTS.iter().find(|e| e.1 == p)) else {
        return (method, "unmatched", method);
    };
    let route = if e.1 == "/predict/" { "/predict" } else { e.1 };
    (method, route, if e.0 == method { e.2 } else { method })
}

/// Replaces the empty or plain-text bodies of the framework's own 405 and 413 with an error
/// that says what to do (a 405 keeps its `Allow` header).
fn explain(resp: Response, limit: usize) -> Response {
    let msg = match resp.status() {
        StatusCode::METHOD_NOT_ALLOWED => {
            "method not allowed on this endpoint; GET / lists them".to_string()
        }
        StatusCode::PAYLOAD_TOO_LARGE
            if resp
                .headers()
                .get(header::CONTENT_TYPE)
                .is_none_or(|t| t != "application/json") =>
        {
            format!("the request body is larger than the limit of {limit} bytes")
        }
        _ => return resp,
    };
    let allow = resp.headers().get(header::ALLOW).cloned();
    let mut out = ApiError(resp.status(), msg).into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

/// The server span, the HTTP metrics and the access log line around every request.
async fn observe(
    State((state, limit)): State<(Arc<AppState>, usize)>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let (method, route, name) = endpoint(
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let path = req.uri().path().to_string();
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or_default()
        .to_string();
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let span = state
        .tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
            KeyValue::new("url.path", path.clone()),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("request.id", request_id.clone()),
        ])
        .start_with_context(&state.tracer, &parent);
    let cx = parent.with_span(span);
    let active = state.metrics.started(method, route);
    let resp = explain(next.run(req).with_context(cx.clone()).await, limit);
    drop(active);

    let status = resp.status().as_u16();
    let seconds = start.elapsed().as_secs_f64();
    state.metrics.served(method, route, status, seconds);
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    {
        // Inside the request's context, so that its OTLP record carries the trace.
        let _in_request = cx.clone().attach();
        let sc = span.span_context();
        tracing::info!(
            target: ACCESS_TARGET,
            trace_id = %sc.trace_id(),
            span_id = %sc.span_id(),
            request.id = request_id,
            http.request.method = method,
            http.route = route,
            url.path = path,
            http.response.status_code = status,
            latency_ms = seconds * 1000.0,
            "request served"
        );
    }
    span.end();
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

/// Counts an inference request refused before the model saw it.
fn invalid(state: &AppState, e: ApiError) -> ApiError {
    state.metrics.inference(Outcome::InvalidInput);
    e
}

/// Validates and runs the forward pass, each in a child span of the request's. Returns the
/// predictions and a warning for each feature outside the training range.
fn infer(state: &AppState, rows: &[Vec<f64>]) -> Result<(Vec<f64>, Vec<String>), ApiError> {
    let (model, tracer) = (&state.model, &state.tracer);
    let mut span = tracer.start("preprocess");
    let valid = model.validate(rows);
    if let Err(e) = &valid {
        span.set_status(Status::error(e.to_string()));
    }
    span.end();
    valid.map_err(|e| invalid(state, bad(e.to_string())))?;

    let mut span = tracer
        .span_builder("inference")
        .with_attributes([
            state.model_attributes[0].clone(),
            state.model_attributes[1].clone(),
            KeyValue::new("inference.batch.size", rows.len() as i64),
        ])
        .start(tracer);
    let t = Instant::now();
    let out = model.predict(rows);
    let seconds = t.elapsed().as_secs_f64();
    match out {
        Ok(pred) => {
            span.end();
            state.metrics.inference(Outcome::Ok);
            state.metrics.forward(seconds, &pred);
            let outside = model.out_of_range(rows);
            for o in &outside {
                state.metrics.out_of_range(o.feature, o.count);
            }
            Ok((pred, outside.iter().map(ToString::to_string).collect()))
        }
        Err(e) => {
            span.set_status(Status::error(e.to_string()));
            span.end();
            state.metrics.inference(Outcome::Error);
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
    }
}

/// The trace and the request id of the request being served.
fn ids(request_id: &RequestId) -> (String, &str) {
    let trace_id = Context::map_current(|cx| cx.span().span_context().trace_id().to_string());
    (
        trace_id,
        request_id.header_value().to_str().unwrap_or_default(),
    )
}

/// The reply of `/predict`.
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
    trace_id: String,
    /// Features outside the training data, named with their range.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

async fn predict(
    State(state): State<Arc<AppState>>,
    axum::Extension(request_id): axum::Extension<RequestId>,
    content_type: JsonContentType,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let b: PredictBody = json_body(content_type, body).map_err(|e| invalid(&state, e))?;
    let (rows, single) = match (b.features, b.instances) {
        (Some(f), None) => (vec![f], true),
        (None, Some(rows)) => (rows, false),
        (Some(_), Some(_)) => {
            return Err(invalid(
                &state,
                bad("send either \"features\" (one row) or \"instances\" (a batch), not both"),
            ));
        }
        (None, None) => {
            return Err(invalid(
                &state,
                bad("missing field \"features\" (e.g. {\"features\": [1500]}) or \"instances\""),
            ));
        }
    };
    let (pred, warnings) = infer(&state, &rows)?;
    let card = &state.model.card;
    let (trace_id, request_id) = ids(&request_id);
    Ok(axum::Json(Prediction {
        latency_ms: start.elapsed().as_secs_f64() * 1000.0,
        model_name: &card.name,
        model_version: &card.version,
        predicted_price: single.then(|| pred[0]),
        predictions: (!single).then_some(pred.as_slice()),
        request_id,
        trace_id,
        warnings,
    })
    .into_response())
}

async fn root(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "service": "inference-app",
        "version": env!("CARGO_PKG_VERSION"),
        "model": {"name": state.model.card.name, "version": state.model.card.version, "features": state.model.card.feature_names},
        "endpoints": ENDPOINTS.iter().filter(|e| e.1 != "/predict/").map(|e| e.2).collect::<Vec<_>>()
    }))
}

async fn health(State(state): State<Arc<AppState>>) -> axum::Json<Value> {
    axum::Json(json!({
        "status": "ok",
        "tracing_enabled": state.tracing,
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
    axum::Extension(request_id): axum::Extension<RequestId>,
    Path(name): Path<String>,
    content_type: JsonContentType,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let m = known(&state, &name)?;
    let req: V2Request = json_body(content_type, body).map_err(|e| invalid(&state, e))?;
    let invalid = |msg: String| invalid(&state, bad(msg));
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
    let (pred, _) = infer(&state, &rows)?;
    let (_, request_id) = ids(&request_id);
    Ok(axum::Json(json!({
        "model_name": m.card.name,
        "model_version": m.card.version,
        "id": req.id.as_deref().unwrap_or(request_id),
        "outputs": [{"name": m.card.output_name, "datatype": "FP64", "shape": [pred.len(), 1], "data": pred}],
    })))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.scrape.render(),
    )
        .into_response()
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no endpoint at {}; GET / lists them", uri.path()),
    )
}

/// The router with every endpoint: request ids and the body limit from tower-http, inside
/// them the observing middleware.
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
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            (state.clone(), body_limit),
            observe,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}
