//! Every endpoint and every kind of bad input, in process, with spans captured in memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use inference_app::dropped::Dropped;
use inference_app::http::{AppState, router};
use inference_app::metrics::AppMetrics;
use inference_app::model::{Kind, Model};
use inference_app::prometheus::Scrape;
use inference_app::train::{TrainArgs, train};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Fixture {
    app: axum::Router,
    state: Arc<AppState>,
    spans: InMemorySpanExporter,
    /// Shut down when dropped, so held for as long as the test.
    _meter: SdkMeterProvider,
}

/// The model, trained once per test binary: tests run in parallel, and one of them reading the
/// card while another writes it failed.
fn model() -> Model {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("inference-app-http-{}", std::process::id()));
        train(&TrainArgs {
            out: dir.clone(),
            samples: 2000,
            seed: 42,
            kind: Kind::Linear,
            hidden: 16,
            extra_features: false,
            epochs: 400,
            name: "house-price".into(),
            version: "1.0.0".into(),
        })
        .unwrap();
        dir
    });
    Model::load(dir).unwrap()
}

/// The service with spans kept in memory (exported as each ends) and metrics read by
/// `/metrics`.
fn fixture(body_limit: usize) -> Fixture {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let spans = InMemorySpanExporter::default();
    let tracer = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let scrape = Scrape::default();
    let meter = SdkMeterProvider::builder()
        .with_reader(scrape.clone())
        .build();
    let metrics = AppMetrics::new(
        &meter.meter("test"),
        "house-price",
        "1.0.0",
        Dropped::default(),
    );
    let state = Arc::new(AppState::new(
        Arc::new(model()),
        metrics,
        scrape,
        tracer.tracer("test"),
        true,
        Some("http://localhost:4318".into()),
    ));
    state.ready.store(true, Ordering::Release);
    Fixture {
        app: router(state.clone(), body_limit),
        state,
        spans,
        _meter: meter,
    }
}

async fn call(f: &Fixture, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = f.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

fn post(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// The Prometheus text of `/metrics`.
async fn metrics_text(f: &Fixture) -> String {
    let resp = f.app.clone().oneshot(get("/metrics")).await.unwrap();
    String::from_utf8(
        axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn service_info_health_and_readiness() {
    let f = fixture(1 << 20);
    let (s, _, v) = call(&f, get("/")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "POST /predict")
    );
    let (s, _, v) = call(&f, get("/health")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"status": "ok", "tracing_enabled": true, "collector_endpoint": "http://localhost:4318"})
    );
    assert_eq!(call(&f, get("/ready")).await.0, StatusCode::OK);
    assert_eq!(call(&f, get("/v2/health/ready")).await.0, StatusCode::OK);
    assert_eq!(call(&f, get("/v2/health/live")).await.0, StatusCode::OK);
    f.state
        .ready
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        call(&f, get("/ready")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        call(&f, get("/v2/models/house-price/ready")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn predict_single_and_batch() {
    let f = fixture(1 << 20);
    let (s, h, v) = call(&f, post("/predict", r#"{"features": [1500]}"#)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let p = v["predicted_price"].as_f64().unwrap();
    assert!((p - 275_000.0).abs() < 275_000.0 * 0.05, "{p}");
    assert_eq!(v["model_name"], "house-price");
    assert_eq!(v["model_version"], "1.0.0");
    assert!(v["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(
        h["x-request-id"].to_str().unwrap(),
        v["request_id"].as_str().unwrap()
    );

    let (s, _, v) = call(
        &f,
        post("/predict", r#"{"instances": [[1000], [2000], [3000]]}"#),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["predictions"].as_array().unwrap().len(), 3);

    let req = Request::post("/predict")
        .header("content-type", "application/json")
        .header("x-request-id", "mine-123")
        .body(Body::from(r#"{"features": [1500]}"#))
        .unwrap();
    let (_, h, v) = call(&f, req).await;
    assert_eq!(v["request_id"], "mine-123");
    assert_eq!(h["x-request-id"], "mine-123");

    // Without one, tower-http generates a UUID.
    let (_, h, v) = call(&f, post("/predict", r#"{"features": [1500]}"#)).await;
    let id = v["request_id"].as_str().unwrap();
    assert_eq!(h["x-request-id"].to_str().unwrap(), id);
    assert_eq!(id.len(), 36, "{id}");
}

#[tokio::test]
async fn bad_input_is_a_4xx_that_names_the_problem() {
    let f = fixture(1024);
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post("/predict", "not json"),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            Request::post("/predict")
                .body(Body::from(r#"{"features":[1]}"#))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            Request::post("/predict")
                .header("content-type", "text/plain")
                .body(Body::from("x"))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
        ),
        (
            post("/predict", "{}"),
            StatusCode::BAD_REQUEST,
            "missing field \"features\"",
        ),
        (
            post("/predict", r#"{"feature": [1]}"#),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            post("/predict", r#"{"features": [1, 2]}"#),
            StatusCode::BAD_REQUEST,
            "expected 1 features",
        ),
        (
            post("/predict", r#"{"features": []}"#),
            StatusCode::BAD_REQUEST,
            "expected 1 features",
        ),
        (
            post("/predict", r#"{"features": [NaN]}"#),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            post("/predict", r#"{"features": [1e400]}"#),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            post("/predict", r#"{"features": ["big"]}"#),
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            post("/predict", r#"{"instances": []}"#),
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            post("/predict", r#"{"features": [1], "instances": [[1]]}"#),
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            post(
                "/predict",
                &format!(r#"{{"instances": [{}]}}"#, vec!["[1]"; 600].join(",")),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit",
        ),
        (
            get("/v2/models/other"),
            StatusCode::NOT_FOUND,
            "unknown model",
        ),
        (
            post("/v2/models/other/infer", "{}"),
            StatusCode::NOT_FOUND,
            "unknown model",
        ),
        (
            post(
                "/v2/models/house-price/infer",
                r#"{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}"#,
            ),
            StatusCode::BAD_REQUEST,
            "shape [N, 1]",
        ),
        (
            post(
                "/v2/models/house-price/infer",
                r#"{"inputs": [{"name": "input", "shape": [2, 1], "datatype": "FP32", "data": [1]}]}"#,
            ),
            StatusCode::BAD_REQUEST,
            "has 1 values",
        ),
        (
            post(
                "/v2/models/house-price/infer",
                r#"{"inputs": [{"name": "input", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}"#,
            ),
            StatusCode::BAD_REQUEST,
            "FP32 or FP64",
        ),
        (
            post("/v2/models/house-price/infer", r#"{"inputs": []}"#),
            StatusCode::BAD_REQUEST,
            "exactly one input",
        ),
        (get("/nowhere"), StatusCode::NOT_FOUND, "no endpoint"),
        (
            get("/predict"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ),
    ];
    let (_, h, _) = call(&f, get("/predict")).await;
    assert_eq!(
        h.get("allow").and_then(|v| v.to_str().ok()),
        Some("POST"),
        "a 405 says which methods the endpoint takes"
    );
    for (req, code, needle) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (s, _, v) = call(&f, req).await;
        assert_eq!(s, code, "{what}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error field in {v}"));
        assert!(msg.contains(needle), "{what}: {msg:?} lacks {needle:?}");
    }
    let metrics = f.state.scrape.render();
    assert!(
        metrics.contains(
            r#"inference_requests_total{model_name="house-price",outcome="invalid_input"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn open_inference_protocol_v2() {
    let f = fixture(1 << 20);
    let (s, _, v) = call(&f, get("/v2")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "inference-app");
    let (s, _, v) = call(&f, get("/v2/models/house-price")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["inputs"][0]["shape"], json!([-1, 1]));
    assert_eq!(v["outputs"][0]["name"], "predicted_price");
    let body = r#"{"id": "r1", "inputs": [{"name": "input", "shape": [2, 1], "datatype": "FP64", "data": [[1500], [3000]]}]}"#;
    let (s, _, v) = call(&f, post("/v2/models/house-price/infer", body)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["id"], "r1");
    assert_eq!(v["outputs"][0]["shape"], json!([2, 1]));
    let data = v["outputs"][0]["data"].as_array().unwrap();
    assert!(data[0].as_f64().unwrap() < data[1].as_f64().unwrap());
}

#[tokio::test]
async fn spans_continue_the_incoming_trace_with_child_spans() {
    let f = fixture(1 << 20);
    let tid = "4bf92f3577b34da6a3ce929d0e0e4736";
    let req = Request::post("/predict")
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{tid}-00f067aa0ba902b7-01"))
        .body(Body::from(r#"{"features": [2000]}"#))
        .unwrap();
    let (_, _, v) = call(&f, req).await;
    assert_eq!(v["trace_id"], tid);
    let spans = f.spans.get_finished_spans().unwrap();
    let server = spans
        .iter()
        .find(|s| s.name == "POST /predict")
        .expect("server span");
    assert_eq!(server.span_kind, SpanKind::Server);
    assert_eq!(server.span_context.trace_id().to_string(), tid);
    assert_eq!(server.parent_span_id.to_string(), "00f067aa0ba902b7");
    let attr = |k: &str| {
        server
            .attributes
            .iter()
            .find(|a| a.key.as_str() == k)
            .map(|a| a.value.to_string())
    };
    assert_eq!(attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(attr("http.route").as_deref(), Some("/predict"));
    assert_eq!(attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attr("url.path").as_deref(), Some("/predict"));
    for child in ["preprocess", "inference"] {
        let c = spans
            .iter()
            .find(|s| s.name == child)
            .unwrap_or_else(|| panic!("{child} span"));
        assert_eq!(
            c.parent_span_id,
            server.span_context.span_id(),
            "{child} is a child of the server span"
        );
    }
    let inf = spans.iter().find(|s| s.name == "inference").unwrap();
    assert!(
        inf.attributes
            .iter()
            .any(|a| a.key.as_str() == "model.name" && a.value.to_string() == "house-price")
    );
}

#[tokio::test]
async fn metrics_endpoint_exposes_service_and_model_metrics() {
    let f = fixture(1 << 20);
    call(&f, post("/predict", r#"{"features": [1500]}"#)).await;
    let body = metrics_text(&f).await;
    for needle in [
        r#"http_server_request_duration_seconds_bucket{le="0.005",http_request_method="POST",http_response_status_code="200",http_route="/predict"}"#,
        r#"http_server_active_requests{http_request_method="POST",http_route="/predict"} 0"#,
        r#"inference_requests_total{model_name="house-price",outcome="ok"} 1"#,
        r#"inference_duration_seconds_count{model_name="house-price"} 1"#,
        "inference_prediction_bucket",
        r#"inference_batch_size_bucket{le="1.0",model_name="house-price"} 1"#,
        r#"model_info{model_name="house-price",model_version="1.0.0"} 1"#,
        r#"telemetry_dropped_items_total{signal="spans"} 0"#,
        r#"telemetry_dropped_items_total{signal="log_lines"} 0"#,
    ] {
        assert!(body.contains(needle), "/metrics lacks {needle}:\n{body}");
    }
}

/// An output the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A trace id with a leading zero, which a hex formatting without width would drop.
const ZERO_LED: &str = "0af7651916cd43dd8448eb211c80319c";

/// Sends two requests with the service's JSON log layer under `filter` and returns the lines
/// written.
async fn access_lines(filter: &str) -> (Value, Vec<Value>) {
    use tracing_subscriber::layer::SubscriberExt;
    let out = Captured::default();
    let writer = {
        let out = out.clone();
        move || out.clone()
    };
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(inference_app::serve::json_lines(writer));
    let _default = tracing::subscriber::set_default(subscriber);
    let f = fixture(1 << 20);
    let req = Request::post("/predict")
        .header("content-type", "application/json")
        .header("x-request-id", "line-\"quoted\"")
        .header("traceparent", format!("00-{ZERO_LED}-00f067aa0ba902b7-01"))
        .body(Body::from(r#"{"features": [1500]}"#))
        .unwrap();
    let (_, _, reply) = call(&f, req).await;
    call(&f, post("/predict", "not json")).await;
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (reply, lines)
}

#[tokio::test]
async fn every_request_writes_one_json_access_line_with_its_trace() {
    let (reply, lines) = access_lines("info").await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = &lines[0];
    assert_eq!(reply["trace_id"], ZERO_LED);
    assert_eq!(ok["trace_id"], ZERO_LED);
    assert_eq!(ok["span_id"].as_str().unwrap().len(), 16);
    assert_eq!(ok["request.id"], "line-\"quoted\"");
    assert_eq!(ok["http.request.method"], "POST");
    assert_eq!(ok["http.route"], "/predict");
    assert_eq!(ok["url.path"], "/predict");
    assert_eq!(ok["http.response.status_code"], 200);
    assert!(ok["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["message"], "request served");
    assert_eq!(ok["target"], "access");
    let ts = ok["timestamp"].as_str().unwrap();
    assert!(
        chrono_free_rfc3339(ts),
        "{ts} is not an RFC 3339 UTC timestamp"
    );
    assert_eq!(lines[1]["http.response.status_code"], 400);
    assert_ne!(lines[1]["trace_id"], ok["trace_id"]);
}

/// `2026-11-30T05:55:12.123456Z`: a date, `T`, a time, `Z`.
fn chrono_free_rfc3339(ts: &str) -> bool {
    let b = ts.as_bytes();
    ts.len() >= 20 && b[4] == b'-' && b[10] == b'T' && b[13] == b':' && ts.ends_with('Z')
}

#[tokio::test]
async fn log_level_can_turn_the_access_line_off() {
    let (_, lines) = access_lines("info,access=warn").await;
    assert!(lines.is_empty(), "{lines:?}");
}

/// A client that goes away mid-request (its body never arrives) leaves no request counted as
/// active: the server drops the request's future, and with it the guard.
#[tokio::test]
async fn a_disconnect_mid_request_leaves_no_active_request() {
    let f = fixture(1 << 20);
    let stalled = Request::post("/predict")
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::pending::<
            Result<Vec<u8>, std::io::Error>,
        >()))
        .unwrap();
    let req = f.app.clone().oneshot(stalled);
    let gone = tokio::time::timeout(std::time::Duration::from_millis(200), req).await;
    assert!(gone.is_err(), "the request was still reading its body");
    let body = metrics_text(&f).await;
    let active: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("http_server_active_requests{") && l.contains("/predict"))
        .collect();
    assert!(!active.is_empty(), "{body}");
    assert!(active.iter().all(|l| l.ends_with(" 0")), "{active:?}");
}

/// Inputs outside the model's world: a non-positive area is refused with the feature and its
/// valid range; one beyond the training data is answered with a warning that names it.
#[tokio::test]
async fn inputs_outside_the_models_world_are_refused_or_flagged() {
    let f = fixture(1 << 20);
    for bad in ["-5", "0"] {
        let (s, _, v) = call(&f, post("/predict", &format!(r#"{{"features": [{bad}]}}"#))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let msg = v.to_string();
        assert!(
            msg.contains("square_feet")
                && msg.contains("greater than 0")
                && msg.contains("trained on"),
            "{msg}"
        );
    }
    let (s, _, v) = call(&f, post("/predict", r#"{"features": [10000]}"#)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let w = v["warnings"].as_array().expect("warnings");
    assert_eq!(w.len(), 1);
    let w = w[0].as_str().unwrap();
    assert!(
        w.contains("square_feet 10000") && w.contains("training range"),
        "{w}"
    );
    let (_, _, v) = call(&f, post("/predict", r#"{"features": [1500]}"#)).await;
    assert!(v.get("warnings").is_none(), "{v}");
    // Counted by feature, once per value outside: one above, and two rows of a batch.
    call(
        &f,
        post("/predict", r#"{"instances": [[9000], [1500], [12000]]}"#),
    )
    .await;
    let body = metrics_text(&f).await;
    assert!(
        body.contains(
            r#"inference_out_of_range_total{feature="square_feet",model_name="house-price"} 3"#
        ),
        "{body}"
    );
}
