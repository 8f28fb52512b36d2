//! The axum service: health and readiness, `/predict`, the Open Inference Protocol v2 REST
//! endpoints, and `/metrics`. Every request gets a server span (child of an incoming
//! `traceparent`), child spans for pre-processing, the forward pass and post-processing, the
//! HTTP and inference metrics, and a JSON log line carrying its trace and span ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::metrics::{AppMetrics, Outcome};
use crate::model::Model;

/// Default request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// Shared state of the service.
pub struct AppState {
    /// The model, once loaded.
    pub model: Arc<Model>,
    /// Set after the model is loaded and warmed up.
    pub ready: AtomicBool,
    /// Tracer for request spans.
    pub tracer: opentelemetry_sdk::trace::SdkTracer,
    /// Metrics.
    pub metrics: AppMetrics,
    /// Whether spans are exported.
    pub tracing_enabled: bool,
    /// OTEL_EXPORTER_OTLP_ENDPOINT.
    pub collector_endpoint: Option<String>,
    /// The OTLP logger for access records, when the logs exporter is on (they bypass the
    /// tracing bridge, which formats every field into a string).
    access_log: Option<opentelemetry_sdk::logs::SdkLogger>,
    /// `model.name` and `model.version` of the inference span, built once (cloning them
    /// per request is a reference count, not a string copy).
    model_attrs: [KeyValue; 2],
}

impl AppState {
    /// The state for a loaded model; `ready` starts false.
    pub fn new(
        model: Arc<Model>,
        tracer: opentelemetry_sdk::trace::SdkTracer,
        metrics: AppMetrics,
        tracing_enabled: bool,
        collector_endpoint: Option<String>,
    ) -> Self {
        let name: Arc<str> = model.card.name.as_str().into();
        let version: Arc<str> = model.card.version.as_str().into();
        AppState {
            model_attrs: [
                KeyValue::new("model.name", opentelemetry::StringValue::from(name)),
                KeyValue::new("model.version", opentelemetry::StringValue::from(version)),
            ],
            access_log: None,
            model,
            ready: AtomicBool::new(false),
            tracer,
            metrics,
            tracing_enabled,
            collector_endpoint,
        }
    }

    /// Sends the access records over OTLP through `logger`.
    pub fn with_access_log(mut self, logger: opentelemetry_sdk::logs::SdkLogger) -> Self {
        self.access_log = Some(logger);
        self
    }
}

/// The `tracing` target of the per-request access line: the JSON log shows it, and the OTLP
/// bridge skips it because [`AppState`] emits the OTLP record itself.
pub const ACCESS_TARGET: &str = "access";

/// Per-request context the middleware hands to handlers.
#[derive(Clone)]
pub struct RequestCtx {
    /// The server span's context.
    pub cx: Context,
    /// The request id (incoming `X-Request-ID`, else generated).
    pub request_id: String,
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

fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
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

/// `{method} {route}` for the server span, without formatting a string per request.
fn span_name(method: &'static str, route: &'static str) -> std::borrow::Cow<'static, str> {
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
        .map(|(_, _, n)| std::borrow::Cow::Borrowed(*n))
        .unwrap_or_else(|| format!("{method} {route}").into())
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

/// Server span, request id, HTTP metrics and the access log, around every request.
async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = static_method(req.method());
    let route = static_route(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let path = req.uri().path().to_string();
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(new_request_id);
    let client = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let mut attrs = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("http.route", route),
        KeyValue::new("url.path", path.clone()),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("request.id", request_id.clone()),
    ];
    if let Some(c) = &client {
        attrs.push(KeyValue::new("client.address", c.clone()));
    }
    let span = state
        .tracer
        .span_builder(span_name(method, route))
        .with_kind(SpanKind::Server)
        .with_attributes(attrs)
        .start_with_context(&state.tracer, &parent);
    let cx = parent.with_span(span);
    req.extensions_mut().insert(RequestCtx {
        cx: cx.clone(),
        request_id: request_id.clone(),
    });
    state.metrics.active(method, route, 1);
    let mut resp = next.run(req).await;
    state.metrics.active(method, route, -1);
    let status = resp.status().as_u16();
    let elapsed = start.elapsed();
    state
        .metrics
        .request(method, route, status, elapsed.as_secs_f64());
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    let sc = span.span_context().clone();
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    {
        tracing::info!(
            target: ACCESS_TARGET,
            trace_id = %sc.trace_id(),
            span_id = %sc.span_id(),
            request_id = request_id.as_str(),
            http.method = method,
            http.route = route,
            url.path = path.as_str(),
            http.status = status,
            latency_ms,
            "request served"
        );
    }
    if let Some(logger) = &state.access_log {
        use opentelemetry::logs::{LogRecord as _, Logger as _, Severity};
        let mut r = logger.create_log_record();
        r.set_timestamp(std::time::SystemTime::now());
        r.set_severity_number(Severity::Info);
        r.set_severity_text("INFO");
        r.set_target(ACCESS_TARGET);
        r.set_body("request served".into());
        r.set_trace_context(sc.trace_id(), sc.span_id(), Some(sc.trace_flags()));
        r.add_attributes([
            (
                "request.id",
                opentelemetry::logs::AnyValue::from(request_id.clone()),
            ),
            ("http.request.method", method.into()),
            ("http.route", route.into()),
            ("url.path", path.into()),
            ("http.response.status_code", i64::from(status).into()),
            ("latency_ms", latency_ms.into()),
        ]);
        logger.emit(r);
    }
    span.end();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
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

fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
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
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type must be application/json, got {:?}",
                if ct.is_empty() { "nothing" } else { ct }
            ),
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        let msg = e.to_string();
        // serde_json cannot represent NaN/Infinity: they arrive as invalid JSON.
        bad(format!("invalid JSON body: {msg}"))
    })
}

/// Runs the forward pass inside pre-processing, inference and post-processing spans.
fn infer(
    state: &AppState,
    ctx: &RequestCtx,
    rows: &[Vec<f64>],
) -> Result<(Vec<f64>, f64), ApiError> {
    let model = &state.model;
    let t = &state.tracer;
    let mut pre = t.start_with_context("preprocess", &ctx.cx);
    pre.set_attribute(KeyValue::new("inference.batch.size", rows.len() as i64));
    let valid = model.validate(rows);
    if let Err(e) = &valid {
        pre.set_status(Status::error(e.to_string()));
    }
    pre.end();
    if let Err(e) = valid {
        state.metrics.inference(Outcome::InvalidInput);
        return Err(bad(e.to_string()));
    }
    let mut span = t
        .span_builder("inference")
        .with_attributes([
            state.model_attrs[0].clone(),
            state.model_attrs[1].clone(),
            KeyValue::new("inference.batch.size", rows.len() as i64),
        ])
        .start_with_context(t, &ctx.cx);
    let start = Instant::now();
    let out = model.predict(rows);
    let forward = start.elapsed().as_secs_f64();
    match out {
        Ok(pred) => {
            span.end();
            let mut post = t.start_with_context("postprocess", &ctx.cx);
            state.metrics.forward(forward, rows.len(), &pred);
            state.metrics.inference(Outcome::Ok);
            post.end();
            Ok((pred, forward))
        }
        Err(e) => {
            span.set_status(Status::error(e.to_string()));
            span.end();
            state.metrics.inference(Outcome::Error);
            Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
        }
    }
}

async fn predict(
    State(state): State<Arc<AppState>>,
    axum::Extension(ctx): axum::Extension<RequestCtx>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let b: PredictBody = json_body(&headers, body)
        .inspect_err(|_| state.metrics.inference(Outcome::InvalidInput))?;
    let (rows, single) = match (b.features, b.instances) {
        (Some(f), None) => (vec![f], true),
        (None, Some(rows)) => (rows, false),
        (Some(_), Some(_)) => {
            state.metrics.inference(Outcome::InvalidInput);
            return Err(bad(
                "send either \"features\" (one row) or \"instances\" (a batch), not both",
            ));
        }
        (None, None) => {
            state.metrics.inference(Outcome::InvalidInput);
            return Err(bad(
                "missing field \"features\" (e.g. {\"features\": [1500]}) or \"instances\"",
            ));
        }
    };
    let (pred, _) = infer(&state, &ctx, &rows)?;
    let trace_id = ctx.cx.span().span_context().trace_id().to_string();
    let card = &state.model.card;
    let mut out = json!({
        "model_name": card.name,
        "model_version": card.version,
        "latency_ms": start.elapsed().as_secs_f64() * 1000.0,
        "trace_id": trace_id,
        "request_id": ctx.request_id,
    });
    if single {
        out["predicted_price"] = json!(pred[0]);
    } else {
        out["predictions"] = json!(pred);
    }
    Ok(axum::Json(out).into_response())
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
        "tracing_enabled": state.tracing_enabled,
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
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let m = known(&state, &name)?;
    let req: V2Request = json_body(&headers, body)
        .inspect_err(|_| state.metrics.inference(Outcome::InvalidInput))?;
    let invalid = |msg: String| {
        state.metrics.inference(Outcome::InvalidInput);
        bad(msg)
    };
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
    let (pred, _) = infer(&state, &ctx, &rows)?;
    Ok(axum::Json(json!({
        "model_name": m.card.name,
        "model_version": m.card.version,
        "id": req.id.unwrap_or_else(|| ctx.request_id.clone()),
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

async fn method_not_allowed(req: Request<Body>, next: Next) -> Response {
    let resp = next.run(req).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        return ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this endpoint; GET / lists them".into(),
        )
        .into_response();
    }
    resp
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
        .layer(middleware::from_fn(method_not_allowed))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
