//! `serve` as a real process, configured only by OTEL_* env, exporting to an OTLP/gRPC
//! receiver that runs inside this test.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inference_app::model::Kind;
use inference_app::train::{TrainArgs, train};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;

#[derive(Clone, Default)]
struct Sink {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        r: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(r.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        r: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(r.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        r: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.logs.lock().unwrap().push(r.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// An HTTP client (reqwest's rustls, as the app's, needs its crypto provider installed).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn attr(r: &Option<Resource>, key: &str) -> Option<String> {
    r.as_ref()?
        .attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(string)
}

/// The `inference.requests` series in a metrics export, with their attributes and counts.
fn inference_requests(
    r: &ExportMetricsServiceRequest,
) -> impl Iterator<Item = (&[KeyValue], i64)> + '_ {
    r.resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(|m| m.name == "inference.requests")
        .filter_map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => Some(s.data_points.iter()),
            _ => None,
        })
        .flatten()
        .filter_map(|p| match p.value {
            Some(number_data_point::Value::AsInt(v)) => Some((&p.attributes[..], v)),
            _ => None,
        })
}

fn string(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Server(Child);

impl Server {
    /// Sends SIGTERM and waits (up to 20 s) for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A trained model in a directory of its own.
fn trained(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("inference-app-otlp-{tag}-{}", std::process::id()));
    train(&TrainArgs {
        out: dir.clone(),
        samples: 1000,
        seed: 1,
        kind: Kind::Linear,
        hidden: 8,
        extra_features: false,
        epochs: 300,
        name: "house-price".into(),
        version: "2.0.0".into(),
    })
    .unwrap();
    dir
}

/// `serve` as a process with only `env` (and PATH), once it is ready; and its base URL.
async fn serve(dir: &std::path::Path, env: &[(&str, String)]) -> (Server, String) {
    let app_port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inference-app"));
    cmd.args([
        "serve",
        "--model-dir",
        dir.to_str().unwrap(),
        "--addr",
        &format!("127.0.0.1:{app_port}"),
    ])
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let server = Server(cmd.spawn().unwrap());
    let base = format!("http://127.0.0.1:{app_port}");
    let client = client();
    let start = Instant::now();
    loop {
        if client
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "serve did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (server, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_metrics_and_logs_reach_an_otlp_receiver_with_the_injected_identity() {
    let dir = trained("grpc");
    let sink = Sink::default();
    let otlp_port = free_port();
    let s = sink.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(s.clone()))
            .add_service(MetricsServiceServer::new(s.clone()))
            .add_service(LogsServiceServer::new(s))
            .serve(format!("127.0.0.1:{otlp_port}").parse().unwrap())
            .await
            .unwrap();
    });

    let (server, base) = serve(
        &dir,
        &[
            ("OTEL_SERVICE_NAME", "house-price-e2e".into()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.namespace.name=shop,k8s.pod.name=house-price-abc,service.version=2.0.0".into(),
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{otlp_port}"),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on".into()),
            ("OTEL_PROPAGATORS", "tracecontext,baggage".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500".into()),
        ],
    )
    .await;
    let client = client();
    let health: serde_json::Value = client
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["tracing_enabled"], true);
    assert_eq!(
        health["collector_endpoint"],
        format!("http://127.0.0.1:{otlp_port}")
    );

    let joined = "0af7651916cd43dd8448eb211c80319c";
    let r: serde_json::Value = client
        .post(format!("{base}/predict"))
        .header("traceparent", format!("00-{joined}-b7ad6b7169203331-01"))
        .json(&serde_json::json!({"features": [1500]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["trace_id"], joined,
        "a request carrying traceparent joins that trace"
    );
    let fresh: serde_json::Value = client
        .post(format!("{base}/predict"))
        .json(&serde_json::json!({"features": [2500]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fresh_id = fresh["trace_id"].as_str().unwrap().to_string();
    assert_ne!(fresh_id, joined);
    assert_ne!(fresh_id, "00000000000000000000000000000000");

    // Spans: the server span of each request, with the injected identity on the resource.
    wait_until("both traces", || {
        let t = sink.traces.lock().unwrap();
        let ids: Vec<String> = t
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .filter(|s| s.name == "POST /predict")
            .map(|s| hex(&s.trace_id))
            .collect();
        ids.contains(&joined.to_string()) && ids.contains(&fresh_id)
    })
    .await;
    {
        let t = sink.traces.lock().unwrap();
        let rs = t.iter().flat_map(|r| &r.resource_spans).next().unwrap();
        assert_eq!(
            attr(&rs.resource, "service.name").as_deref(),
            Some("house-price-e2e")
        );
        assert_eq!(
            attr(&rs.resource, "k8s.namespace.name").as_deref(),
            Some("shop")
        );
        assert_eq!(
            attr(&rs.resource, "k8s.pod.name").as_deref(),
            Some("house-price-abc")
        );
        let spans: Vec<_> = t
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect();
        let server = spans
            .iter()
            .find(|s| hex(&s.trace_id) == joined && s.name == "POST /predict")
            .unwrap();
        assert_eq!(hex(&server.parent_span_id), "b7ad6b7169203331");
        for child in ["preprocess", "inference"] {
            assert!(
                spans
                    .iter()
                    .any(|s| s.name == child && s.parent_span_id == server.span_id),
                "{child} span under the server span"
            );
        }
    }

    // Metrics.
    wait_until("the service's metrics", || {
        let m = sink.metrics.lock().unwrap();
        let names: Vec<String> = m
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| m.name.clone())
            .collect();
        // inference.requests{outcome=ok} counts both predictions (cumulative).
        let ok = m
            .iter()
            .flat_map(inference_requests)
            .filter(|(attributes, _)| {
                attributes
                    .iter()
                    .any(|kv| kv.key == "outcome" && string(kv).as_deref() == Some("ok"))
            })
            .map(|(_, v)| v)
            .max();
        [
            "http.server.request.duration",
            "http.server.active_requests",
            "inference.requests",
            "inference.duration",
            "inference.prediction",
            "inference.batch.size",
            "model.info",
        ]
        .iter()
        .all(|n| names.iter().any(|x| x == n))
            && ok == Some(2)
    })
    .await;
    {
        let m = sink.metrics.lock().unwrap();
        let rm = m.iter().flat_map(|r| &r.resource_metrics).next().unwrap();
        assert_eq!(
            attr(&rm.resource, "service.name").as_deref(),
            Some("house-price-e2e")
        );
        assert_eq!(
            attr(&rm.resource, "k8s.namespace.name").as_deref(),
            Some("shop")
        );
    }

    // Logs: the access log line of the fresh request, correlated with its trace.
    wait_until("a log record of the fresh trace", || {
        let l = sink.logs.lock().unwrap();
        l.iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
            .any(|rec| hex(&rec.trace_id) == fresh_id)
    })
    .await;
    {
        let l = sink.logs.lock().unwrap();
        let rl = l.iter().flat_map(|r| &r.resource_logs).next().unwrap();
        assert_eq!(
            attr(&rl.resource, "service.name").as_deref(),
            Some("house-price-e2e")
        );
        // The access record carries the request's fields, not only its trace.
        let rec = l
            .iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
            .find(|rec| hex(&rec.trace_id) == fresh_id)
            .unwrap();
        let field = |k: &str| rec.attributes.iter().find(|a| a.key == k).cloned();
        assert_eq!(
            field("http.route").as_ref().and_then(string).as_deref(),
            Some("/predict")
        );
        assert_eq!(
            field("http.request.method")
                .as_ref()
                .and_then(string)
                .as_deref(),
            Some("POST")
        );
        assert!(
            field("request.id")
                .as_ref()
                .and_then(string)
                .is_some_and(|v| !v.is_empty())
        );
        assert!(field("http.response.status_code").is_some(), "{rec:?}");
        assert!(field("latency_ms").is_some(), "{rec:?}");
        assert_eq!(rec.severity_text, "INFO");
        // Every record carries its time, also those that came through the tracing bridge.
        for r in l
            .iter()
            .flat_map(|r| &r.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
        {
            assert!(
                r.time_unix_nano > 0,
                "a log record without a timestamp: {r:?}"
            );
        }
    }

    // SIGTERM drains and exits cleanly.
    let mut server = server;
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

/// What an OTLP/HTTP receiver got: each body decoded, with the `x-tenant` header it came with.
#[derive(Clone, Default)]
struct HttpSink {
    traces: Arc<Mutex<Vec<(ExportTraceServiceRequest, String)>>>,
    logs: Arc<Mutex<Vec<(ExportLogsServiceRequest, String)>>>,
    metrics: Arc<Mutex<Vec<(ExportMetricsServiceRequest, String)>>>,
}

fn tenant(h: &axum::http::HeaderMap) -> String {
    h.get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_carries_every_signal_with_the_configured_headers() {
    use axum::routing::post;
    use prost::Message;
    let dir = trained("http");
    let sink = HttpSink::default();
    let s = sink.clone();
    let router = axum::Router::new()
        .route(
            "/v1/traces",
            post(
                |h: axum::http::HeaderMap, b: axum::body::Bytes| async move {
                    let r = ExportTraceServiceRequest::decode(b).expect("a valid trace request");
                    s.traces.lock().unwrap().push((r, tenant(&h)));
                },
            ),
        )
        .route(
            "/v1/logs",
            post({
                let s = sink.clone();
                |h: axum::http::HeaderMap, b: axum::body::Bytes| async move {
                    let r = ExportLogsServiceRequest::decode(b).expect("a valid logs request");
                    s.logs.lock().unwrap().push((r, tenant(&h)));
                }
            }),
        )
        .route(
            "/v1/metrics",
            post({
                let s = sink.clone();
                |h: axum::http::HeaderMap, b: axum::body::Bytes| async move {
                    let r =
                        ExportMetricsServiceRequest::decode(b).expect("a valid metrics request");
                    s.metrics.lock().unwrap().push((r, tenant(&h)));
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // The default protocol is http/protobuf; the general endpoint gets /v1/<signal> appended.
    // Ten minutes between exports of every signal: what arrives is what SIGTERM flushed.
    let (mut server, base) = serve(
        &dir,
        &[
            ("OTEL_SERVICE_NAME", "house-price-http".into()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{port}/"),
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=team%20a".into()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "600000".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000".into()),
            ("OTEL_BLRP_SCHEDULE_DELAY", "600000".into()),
        ],
    )
    .await;
    let r: serde_json::Value = client()
        .post(format!("{base}/predict"))
        .json(&serde_json::json!({"features": [1800]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trace_id = r["trace_id"].as_str().unwrap().to_string();
    let status = server.terminate();
    assert!(status.success(), "{status}");

    let t = sink.traces.lock().unwrap();
    let spans = t
        .iter()
        .flat_map(|(r, _)| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .filter(|s| hex(&s.trace_id) == trace_id)
        .count();
    assert_eq!(spans, 3, "the request's spans, flushed at SIGTERM");
    drop(t);
    let l = sink.logs.lock().unwrap();
    assert!(
        l.iter()
            .flat_map(|(r, _)| &r.resource_logs)
            .flat_map(|rl| &rl.scope_logs)
            .flat_map(|sl| &sl.log_records)
            .any(|rec| hex(&rec.trace_id) == trace_id),
        "its access record, flushed at SIGTERM"
    );
    drop(l);
    let m = sink.metrics.lock().unwrap();
    assert_eq!(m.len(), 1, "one export, at SIGTERM");
    assert_eq!(inference_requests(&m[0].0).map(|(_, v)| v).sum::<i64>(), 1);
    drop(m);
    let t = sink.traces.lock().unwrap();
    let (req, header) = &t[0];
    assert_eq!(
        header, "team a",
        "OTEL_EXPORTER_OTLP_HEADERS, percent-decoded"
    );
    assert_eq!(
        attr(&req.resource_spans[0].resource, "service.name").as_deref(),
        Some("house-price-http")
    );
    assert!(sink.logs.lock().unwrap().iter().all(|(_, h)| h == "team a"));
    assert!(
        sink.metrics
            .lock()
            .unwrap()
            .iter()
            .all(|(_, h)| h == "team a")
    );
}

/// The value of one `/metrics` series (the first line that starts with `series`).
async fn scraped(base: &str, series: &str) -> Option<f64> {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// With nothing listening at the collector's address, every request is still answered, and the
/// spans and log records of the failed exports are counted in `telemetry.dropped_items`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_no_request_and_its_losses_are_counted() {
    let dir = trained("down");
    let nobody = free_port();
    for protocol in ["grpc", "http/protobuf"] {
        let (mut server, base) = serve(
            &dir,
            &[
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{nobody}"),
                ),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000".into()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
                ("OTEL_BLRP_SCHEDULE_DELAY", "100".into()),
            ],
        )
        .await;
        let requests = 20;
        for i in 0..requests {
            let r = client()
                .post(format!("{base}/predict"))
                .json(&serde_json::json!({"features": [1000 + i]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{protocol}: request {i}");
        }
        let spans = r#"telemetry_dropped_items_total{signal="spans"}"#;
        let logs = r#"telemetry_dropped_items_total{signal="log_records"}"#;
        let start = Instant::now();
        loop {
            let counted = (
                scraped(&base, spans).await.unwrap_or(0.0),
                scraped(&base, logs).await.unwrap_or(0.0),
            );
            if counted.0 >= f64::from(3 * requests) && counted.1 >= f64::from(requests) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{protocol}: lost spans and log records counted: {counted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(server.terminate().success(), "{protocol}");
    }
}
