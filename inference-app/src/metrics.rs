//! The service's metrics, recorded once per request and exported twice: as OpenTelemetry
//! instruments (OTLP) and in a prometheus-client registry (`/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundCounter, BoundHistogram, Histogram, Meter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PGauge;
use prometheus_client::metrics::histogram::Histogram as PHistogram;
use prometheus_client::registry::Registry;

use crate::recorder::RequestRecord;

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

/// A short list of series found by comparing static keys, read-locked on the hot path: a
/// request touches its series' atomics without hashing a label set. The services' series are
/// few (methods × routes × statuses seen), so a linear scan beats a hash.
struct Series<K, V>(RwLock<Vec<(K, V)>>);

impl<K: PartialEq + Copy, V: Clone> Series<K, V> {
    fn new() -> Self {
        Series(RwLock::new(Vec::new()))
    }

    fn get(&self, key: K, create: impl FnOnce() -> V) -> V {
        let find = |v: &[(K, V)]| v.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone());
        if let Some(v) = find(&self.0.read().unwrap_or_else(|p| p.into_inner())) {
            return v;
        }
        let mut all = self.0.write().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = find(&all) {
            return v;
        }
        let v = create();
        all.push((key, v.clone()));
        v
    }
}

/// One `http.server.request.duration` series in both exports.
#[derive(Clone)]
struct DurationSeries {
    prometheus: PHistogram,
    otel: Option<BoundHistogram<f64>>,
}

/// The OTLP instruments that do not depend on a request's labels, bound once.
struct Otel {
    duration: Histogram<f64>,
    outcomes: [BoundCounter<u64>; 3],
    forward: BoundHistogram<f64>,
    prediction: BoundHistogram<f64>,
    batch: BoundHistogram<u64>,
}

/// The metrics of the service, recorded inline for every request (no request is ever missing
/// from them) into a prometheus-client registry (`/metrics`) and into OpenTelemetry
/// instruments bound to their attribute sets (OTLP).
pub struct AppMetrics {
    registry: Registry,
    duration_family: Family<HttpLabels, PHistogram>,
    durations: Series<(Static, Static, u16), DurationSeries>,
    active_family: Family<RouteLabels, PGauge>,
    active: Arc<Series<(Static, Static), PGauge>>,
    requests: [PCounter; 3],
    forward: PHistogram,
    prediction: PHistogram,
    batch: PHistogram,
    dropped: PCounter,
    dropped_seen: AtomicU64,
    dropped_source: Arc<AtomicU64>,
    otel: Option<Otel>,
}

/// Whether two static strings are the same one (the keys come from static tables).
#[derive(Clone, Copy)]
struct Static(&'static str);

impl PartialEq for Static {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0) || self.0 == other.0
    }
}

impl AppMetrics {
    /// Creates the series; `meter` is `None` when OTLP metrics are off.
    pub fn new(meter: Option<&Meter>, model: &str, version: &str, dropped: Arc<AtomicU64>) -> Self {
        let mut registry = Registry::default();
        let duration_family = Family::<HttpLabels, PHistogram>::new_with_constructor(|| {
            PHistogram::new(HTTP_BUCKETS)
        });
        let active_family = Family::<RouteLabels, PGauge>::default();
        let active = Arc::new(Series::new());
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
            duration_family.clone(),
        );
        registry.register(
            "http_server_active_requests",
            "In-flight HTTP requests",
            active_family.clone(),
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
            DROPPED_HELP,
            dropped_counter.clone(),
        );
        let otel = meter.map(|m| otel(m, model, version, dropped.clone(), active.clone()));
        let model_labels = ModelLabels {
            model: model.into(),
        };
        AppMetrics {
            registry,
            duration_family,
            durations: Series::new(),
            active_family,
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

    /// A request started; returns the gauge to decrement when it finishes.
    pub fn started(&self, method: &'static str, route: &'static str) -> PGauge {
        let g = self.active.get((Static(method), Static(route)), || {
            self.active_family
                .get_or_create(&RouteLabels { method, route })
                .clone()
        });
        g.inc();
        g
    }

    /// One finished request.
    pub fn record(&self, rec: &RequestRecord) {
        let (method, route, status) = (rec.method, rec.route, rec.status);
        let d = self
            .durations
            .get((Static(method), Static(route), status), || DurationSeries {
                prometheus: self
                    .duration_family
                    .get_or_create(&HttpLabels {
                        method,
                        route,
                        status,
                    })
                    .clone(),
                otel: self.otel.as_ref().map(|o| {
                    o.duration.bind(&[
                        KeyValue::new("http.request.method", method),
                        KeyValue::new("http.route", route),
                        KeyValue::new("http.response.status_code", i64::from(status)),
                    ])
                }),
            });
        let seconds = rec.duration.as_secs_f64();
        d.prometheus.observe(seconds);
        if let Some(o) = &d.otel {
            o.record(seconds);
        }
        let inf = &rec.inference;
        if let Some(outcome) = inf.outcome {
            self.requests[outcome as usize].inc();
            if let Some(o) = &self.otel {
                o.outcomes[outcome as usize].add(1);
            }
        }
        if let Some(f) = &inf.forward
            && f.error.is_none()
        {
            let forward = (f.end - f.start).as_secs_f64();
            self.forward.observe(forward);
            self.batch.observe(inf.batch as f64);
            for v in &inf.predictions {
                self.prediction.observe(*v);
            }
            if let Some(o) = &self.otel {
                o.forward.record(forward);
                o.batch.record(inf.batch as u64);
                for v in &inf.predictions {
                    o.prediction.record(*v);
                }
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

const DROPPED_HELP: &str =
    "Spans, OTLP log records and JSON log lines dropped because their queue was full";

/// The OTLP instruments; the observable ones read the same state as `/metrics`.
fn otel(
    m: &Meter,
    model: &str,
    version: &str,
    dropped: Arc<AtomicU64>,
    active: Arc<Series<(Static, Static), PGauge>>,
) -> Otel {
    let info = [
        KeyValue::new("model.name", model.to_string()),
        KeyValue::new("model.version", version.to_string()),
    ];
    m.u64_observable_gauge("model.info")
        .with_description("The loaded model (always 1)")
        .with_callback(move |o| o.observe(1, &info))
        .build();
    m.u64_observable_counter("telemetry.dropped_items")
        .with_description(DROPPED_HELP)
        .with_callback(move |o| o.observe(dropped.load(Ordering::Relaxed), &[]))
        .build();
    m.i64_observable_up_down_counter("http.server.active_requests")
        .with_unit("{request}")
        .with_description("In-flight HTTP requests")
        .with_callback(move |o| {
            let all = active.0.read().unwrap_or_else(|p| p.into_inner());
            for ((method, route), g) in all.iter() {
                o.observe(
                    g.get(),
                    &[
                        KeyValue::new("http.request.method", method.0),
                        KeyValue::new("http.route", route.0),
                    ],
                );
            }
        })
        .build();
    let model_attr = [KeyValue::new("model.name", model.to_string())];
    let requests = m
        .u64_counter("inference.requests")
        .with_unit("{request}")
        .build();
    Otel {
        duration: m
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests")
            .with_boundaries(HTTP_BUCKETS.to_vec())
            .build(),
        outcomes: Outcome::ALL
            .map(|o| requests.bind(&[model_attr[0].clone(), KeyValue::new("outcome", o.label())])),
        forward: m
            .f64_histogram("inference.duration")
            .with_unit("s")
            .with_boundaries(FORWARD_BUCKETS.to_vec())
            .build()
            .bind(&model_attr),
        prediction: m
            .f64_histogram("inference.prediction")
            .with_unit("USD")
            .with_boundaries(PRICE_BUCKETS.to_vec())
            .build()
            .bind(&model_attr),
        batch: m
            .u64_histogram("inference.batch.size")
            .with_unit("{row}")
            .with_boundaries(BATCH_BUCKETS.to_vec())
            .build()
            .bind(&model_attr),
    }
}
