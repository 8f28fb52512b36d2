//! The service's metrics, recorded once and exported twice: as OpenTelemetry instruments (OTLP)
//! and in a prometheus-client registry (`/metrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PGauge;
use prometheus_client::metrics::histogram::Histogram as PHistogram;
use prometheus_client::registry::Registry;

/// Semantic-convention buckets of `http.server.request.duration` (seconds).
pub const HTTP_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Forward-pass buckets (seconds): the model answers in microseconds.
pub const FORWARD_BUCKETS: [f64; 12] = [
    1e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1,
];
/// Prediction buckets (dollars), for drift.
pub const PRICE_BUCKETS: [f64; 10] = [
    100e3, 150e3, 200e3, 250e3, 300e3, 400e3, 500e3, 600e3, 800e3, 1e6,
];
/// Batch-size buckets.
pub const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

/// How an inference request ended (the `outcome` label of `inference.requests`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Rejected before the forward pass.
    InvalidInput,
    /// The forward pass failed.
    Error,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::InvalidInput, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::InvalidInput => "invalid_input",
            Outcome::Error => "error",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    name: String,
    version: String,
}

struct Otel {
    /// `model.name` (the service serves one model), built once.
    model: [KeyValue; 1],
    /// `model.name` and `outcome`, per outcome, built once.
    outcomes: [[KeyValue; 2]; 3],
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
    requests: Counter<u64>,
    forward: Histogram<f64>,
    prediction: Histogram<f64>,
    batch: Histogram<u64>,
}

/// The metrics of the service. Series whose labels never change (the model's) are resolved
/// once: a request touches their atomics, not a label map.
pub struct AppMetrics {
    registry: Registry,
    duration: Family<HttpLabels, PHistogram>,
    active: Family<RouteLabels, PGauge>,
    requests: [PCounter; 3],
    forward: PHistogram,
    prediction: PHistogram,
    batch: PHistogram,
    dropped: PCounter,
    dropped_seen: AtomicU64,
    dropped_source: Arc<AtomicU64>,
    otel: Option<Otel>,
}

impl AppMetrics {
    /// Creates the instruments; `meter` is `None` when OTLP metrics are off.
    pub fn new(meter: Option<Meter>, model: &str, version: &str, dropped: Arc<AtomicU64>) -> Self {
        let mut registry = Registry::default();
        let duration = Family::<HttpLabels, PHistogram>::new_with_constructor(|| {
            PHistogram::new(HTTP_BUCKETS)
        });
        let active = Family::<RouteLabels, PGauge>::default();
        let requests = Family::<OutcomeLabels, PCounter>::default();
        let forward = Family::<ModelLabels, PHistogram>::new_with_constructor(|| {
            PHistogram::new(FORWARD_BUCKETS)
        });
        let prediction = Family::<ModelLabels, PHistogram>::new_with_constructor(|| {
            PHistogram::new(PRICE_BUCKETS)
        });
        let batch = Family::<ModelLabels, PHistogram>::new_with_constructor(|| {
            PHistogram::new(BATCH_BUCKETS)
        });
        let info = Family::<InfoLabels, PGauge>::default();
        info.get_or_create(&InfoLabels {
            name: model.into(),
            version: version.into(),
        })
        .set(1);
        let dropped_counter = PCounter::default();
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests",
            prometheus_client::registry::Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "http_server_active_requests",
            "In-flight HTTP requests",
            active.clone(),
        );
        registry.register(
            "inference_requests",
            "Inference requests by model and outcome",
            requests.clone(),
        );
        registry.register_with_unit(
            "inference_duration",
            "Forward pass only",
            prometheus_client::registry::Unit::Seconds,
            forward.clone(),
        );
        registry.register(
            "inference_prediction",
            "Predicted values, for drift",
            prediction.clone(),
        );
        registry.register(
            "inference_batch_size",
            "Rows per forward pass",
            batch.clone(),
        );
        registry.register("model_info", "The loaded model", info);
        registry.register(
            "telemetry_dropped_items",
            "Spans and JSON log lines dropped because their queue was full",
            dropped_counter.clone(),
        );

        let name_attr: opentelemetry::StringValue = std::sync::Arc::<str>::from(model).into();
        let otel = meter.map(|m| {
            let version = version.to_string();
            let name = model.to_string();
            m.u64_observable_gauge("model.info")
                .with_description("The loaded model (always 1)")
                .with_callback(move |o| {
                    o.observe(
                        1,
                        &[
                            KeyValue::new("model.name", name.clone()),
                            KeyValue::new("model.version", version.clone()),
                        ],
                    )
                })
                .build();
            let d = dropped.clone();
            m.u64_observable_counter("telemetry.dropped_items")
                .with_description("Spans and JSON log lines dropped because their queue was full")
                .with_callback(move |o| o.observe(d.load(Ordering::Relaxed), &[]))
                .build();
            let model_attr = KeyValue::new("model.name", name_attr.clone());
            Otel {
                outcomes: Outcome::ALL
                    .map(|o| [model_attr.clone(), KeyValue::new("outcome", o.label())]),
                model: [model_attr],
                duration: m
                    .f64_histogram("http.server.request.duration")
                    .with_unit("s")
                    .with_description("Duration of HTTP server requests")
                    .with_boundaries(HTTP_BUCKETS.to_vec())
                    .build(),
                active: m
                    .i64_up_down_counter("http.server.active_requests")
                    .with_unit("{request}")
                    .build(),
                requests: m
                    .u64_counter("inference.requests")
                    .with_unit("{request}")
                    .build(),
                forward: m
                    .f64_histogram("inference.duration")
                    .with_unit("s")
                    .with_boundaries(FORWARD_BUCKETS.to_vec())
                    .build(),
                prediction: m
                    .f64_histogram("inference.prediction")
                    .with_unit("USD")
                    .with_boundaries(PRICE_BUCKETS.to_vec())
                    .build(),
                batch: m
                    .u64_histogram("inference.batch.size")
                    .with_unit("{row}")
                    .with_boundaries(BATCH_BUCKETS.to_vec())
                    .build(),
            }
        });
        let model_labels = ModelLabels {
            model: model.into(),
        };
        AppMetrics {
            registry,
            duration,
            active,
            requests: Outcome::ALL.map(|o| {
                requests
                    .get_or_create(&OutcomeLabels {
                        model: model.into(),
                        outcome: o.label(),
                    })
                    .clone()
            }),
            forward: forward.get_or_create(&model_labels).clone(),
            prediction: prediction.get_or_create(&model_labels).clone(),
            batch: batch.get_or_create(&model_labels).clone(),
            dropped: dropped_counter,
            dropped_seen: AtomicU64::new(0),
            dropped_source: dropped,
            otel,
        }
    }

    /// One finished HTTP request.
    pub fn request(&self, method: &'static str, route: &'static str, status: u16, seconds: f64) {
        self.duration
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .observe(seconds);
        if let Some(o) = &self.otel {
            o.duration.record(
                seconds,
                &[
                    KeyValue::new("http.request.method", method),
                    KeyValue::new("http.route", route),
                    KeyValue::new("http.response.status_code", i64::from(status)),
                ],
            );
        }
    }

    /// A request started (+1) or finished (-1).
    pub fn active(&self, method: &'static str, route: &'static str, delta: i64) {
        self.active
            .get_or_create(&RouteLabels { method, route })
            .inc_by(delta);
        if let Some(o) = &self.otel {
            o.active.add(
                delta,
                &[
                    KeyValue::new("http.request.method", method),
                    KeyValue::new("http.route", route),
                ],
            );
        }
    }

    /// One inference request and how it ended.
    pub fn inference(&self, outcome: Outcome) {
        self.requests[outcome as usize].inc();
        if let Some(o) = &self.otel {
            o.requests.add(1, &o.outcomes[outcome as usize]);
        }
    }

    /// One forward pass.
    pub fn forward(&self, seconds: f64, batch: usize, predictions: &[f64]) {
        self.forward.observe(seconds);
        self.batch.observe(batch as f64);
        for v in predictions {
            self.prediction.observe(*v);
        }
        if let Some(o) = &self.otel {
            o.forward.record(seconds, &o.model);
            o.batch.record(batch as u64, &o.model);
            for v in predictions {
                o.prediction.record(*v, &o.model);
            }
        }
    }

    /// The Prometheus exposition.
    pub fn encode(&self) -> String {
        let now = self.dropped_source.load(Ordering::Relaxed);
        let seen = self.dropped_seen.swap(now, Ordering::Relaxed);
        if now > seen {
            self.dropped.inc_by(now - seen);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String");
        out
    }
}
