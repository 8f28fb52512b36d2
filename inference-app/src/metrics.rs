//! The service's metrics, recorded once per request into atomics that both exports read:
//! `/metrics` through a prometheus-client registry, and OTLP, encoded here from the same state
//! every export interval. When the SDK exports metrics instead (the console, TLS, delta
//! temporality), each request is also recorded into OpenTelemetry instruments.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{BoundCounter, BoundHistogram, Histogram, Meter};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter as PCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::otlp::{self, Metric, MetricData, Point};
use crate::recorder::{Attr, RequestRecord, unix_nanos};

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

/// A histogram in atomics, read by both exports. Recording takes no lock (prometheus-client's
/// histogram and the SDK's each take a mutex). Both formats count a value in the first bucket
/// whose upper bound is at or above it; values that are not finite are ignored, as the SDK
/// does.
#[derive(Clone, Debug)]
pub struct Hist(Arc<HistCells>);

#[derive(Debug)]
struct HistCells {
    bounds: &'static [f64],
    /// One per bound, then the one above the last bound.
    buckets: Box<[AtomicU64]>,
    /// `f64` bits, as are `min` and `max`.
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

/// What a histogram held at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct HistSnapshot {
    /// Upper bounds of all buckets but the last.
    pub bounds: &'static [f64],
    /// Values per bucket (not cumulative).
    pub buckets: Vec<u64>,
    /// Values in all buckets.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest (+∞ when empty).
    pub min: f64,
    /// The largest (−∞ when empty).
    pub max: f64,
}

impl Hist {
    /// An empty histogram with these bucket bounds (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Hist(Arc::new(HistCells {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            min: AtomicU64::new(f64::INFINITY.to_bits()),
            max: AtomicU64::new(f64::NEG_INFINITY.to_bits()),
        }))
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        if !v.is_finite() {
            return;
        }
        let c = &*self.0;
        let update = |cell: &AtomicU64, f: &dyn Fn(f64) -> Option<f64>| {
            let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                f(f64::from_bits(bits)).map(f64::to_bits)
            });
        };
        if v < f64::from_bits(c.min.load(Ordering::Relaxed)) {
            update(&c.min, &|m| (v < m).then_some(v));
        }
        if v > f64::from_bits(c.max.load(Ordering::Relaxed)) {
            update(&c.max, &|m| (v > m).then_some(v));
        }
        update(&c.sum, &|s| Some(s + v));
        // Counted last: a snapshot that sees the count sees the value's sum, min and max too.
        let i = c.bounds.partition_point(|b| *b < v);
        c.buckets[i].fetch_add(1, Ordering::Release);
    }

    /// The histogram now. The count is the buckets' total, so the two always agree even while
    /// values are being recorded.
    pub fn snapshot(&self) -> HistSnapshot {
        let c = &*self.0;
        let buckets: Vec<u64> = c
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Acquire))
            .collect();
        HistSnapshot {
            bounds: c.bounds,
            count: buckets.iter().sum(),
            buckets,
            sum: f64::from_bits(c.sum.load(Ordering::Relaxed)),
            min: f64::from_bits(c.min.load(Ordering::Relaxed)),
            max: f64::from_bits(c.max.load(Ordering::Relaxed)),
        }
    }
}

impl TypedMetric for Hist {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Hist {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.snapshot();
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(h.buckets)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A short list of series found by comparing static keys, read-locked on the hot path: a
/// request touches its series' atomics without hashing a label set. The services' series are
/// few (methods × routes × statuses seen), so a linear scan beats a hash.
struct Series<K, V>(RwLock<Vec<(K, V)>>);

impl<K: PartialEq + Copy, V: Clone> Series<K, V> {
    fn new() -> Self {
        Series(RwLock::new(Vec::new()))
    }

    /// Every series so far.
    fn all(&self) -> Vec<(K, V)> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
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

/// One `http.server.request.duration` series, and its SDK instrument when the SDK exports.
#[derive(Clone)]
struct DurationSeries {
    hist: Hist,
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
/// from them) into atomics registered with a prometheus-client registry (`/metrics`) and read
/// for OTLP by [`AppMetrics::otlp`]; and, when the SDK exports metrics, into OpenTelemetry
/// One active request in `http.server.active_requests`, until dropped.
#[must_use = "the request counts as active until this is dropped"]
pub struct Active(PGauge);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// instruments bound to their attribute sets.
pub struct AppMetrics {
    registry: Registry,
    duration_family: Family<HttpLabels, Hist>,
    durations: Series<(Static, Static, u16), DurationSeries>,
    active_family: Family<RouteLabels, PGauge>,
    active: Arc<Series<(Static, Static), PGauge>>,
    requests: [PCounter; 3],
    forward: Hist,
    prediction: Hist,
    batch: Hist,
    dropped: PCounter,
    dropped_seen: AtomicU64,
    dropped_source: Arc<AtomicU64>,
    /// The model's name and version.
    model: [String; 2],
    /// When the cumulative sums and histograms started (Unix nanoseconds).
    started: u64,
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
    /// Creates the series; `meter` is the SDK's, when the SDK exports metrics.
    pub fn new(meter: Option<&Meter>, model: &str, version: &str, dropped: Arc<AtomicU64>) -> Self {
        let mut registry = Registry::default();
        let duration_family =
            Family::<HttpLabels, Hist>::new_with_constructor(|| Hist::new(&HTTP_BUCKETS));
        let active_family = Family::<RouteLabels, PGauge>::default();
        let active = Arc::new(Series::new());
        let requests = Family::<OutcomeLabels, PCounter>::default();
        let forward =
            Family::<ModelLabels, Hist>::new_with_constructor(|| Hist::new(&FORWARD_BUCKETS));
        let prediction =
            Family::<ModelLabels, Hist>::new_with_constructor(|| Hist::new(&PRICE_BUCKETS));
        let batch = Family::<ModelLabels, Hist>::new_with_constructor(|| Hist::new(&BATCH_BUCKETS));
        let info = Family::<InfoLabels, PGauge>::default();
        info.get_or_create(&InfoLabels {
            name: model.into(),
            version: version.into(),
        })
        .set(1);
        let dropped_counter = PCounter::default();
        registry.register_with_unit(
            "http_server_request_duration",
            DURATION_HELP,
            prometheus_client::registry::Unit::Seconds,
            duration_family.clone(),
        );
        registry.register(
            "http_server_active_requests",
            ACTIVE_HELP,
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
            model: [model.into(), version.into()],
            started: unix_nanos(SystemTime::now()),
            otel,
        }
    }

    /// A request started; the guard counts it active until it is dropped, also when the
    /// client goes away mid-request and the server drops the request's future.
    pub fn started(&self, method: &'static str, route: &'static str) -> Active {
        let g = self.active.get((Static(method), Static(route)), || {
            self.active_family
                .get_or_create(&RouteLabels { method, route })
                .clone()
        });
        g.inc();
        Active(g)
    }

    /// One finished request.
    pub fn record(&self, rec: &RequestRecord) {
        let (method, route, status) = (rec.method, rec.route, rec.status);
        let d = self
            .durations
            .get((Static(method), Static(route), status), || DurationSeries {
                hist: self
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
        d.hist.observe(seconds);
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

    /// Every metric as OTLP carries it, read from the state `/metrics` shows, with the names,
    /// units and attributes the SDK's instruments would export. Histograms that never recorded
    /// anything are left out, as the SDK leaves them out; counters are there from the start.
    pub fn otlp(&self) -> Vec<Metric<'_>> {
        let model = || ("model.name", Attr::Str(&self.model[0]));
        let of_model = |h: &Hist| {
            let value = h.snapshot();
            (value.count > 0).then(|| Point {
                attributes: vec![model()],
                value,
            })
        };
        let histogram = |name, unit, h: &Hist| Metric {
            name,
            description: "",
            unit,
            data: MetricData::Histogram(of_model(h).into_iter().collect()),
        };
        let all = vec![
            Metric {
                name: "model.info",
                description: INFO_HELP,
                unit: "",
                data: MetricData::Gauge(vec![Point {
                    attributes: vec![model(), ("model.version", Attr::Str(&self.model[1]))],
                    value: 1,
                }]),
            },
            Metric {
                name: "telemetry.dropped_items",
                description: DROPPED_HELP,
                unit: "",
                data: MetricData::Sum {
                    monotonic: true,
                    points: vec![Point {
                        attributes: vec![],
                        value: self.dropped_source.load(Ordering::Relaxed) as i64,
                    }],
                },
            },
            Metric {
                name: "http.server.active_requests",
                description: ACTIVE_HELP,
                unit: "{request}",
                data: MetricData::Sum {
                    monotonic: false,
                    points: self
                        .active
                        .all()
                        .into_iter()
                        .map(|((method, route), g)| Point {
                            attributes: vec![
                                ("http.request.method", Attr::Str(method.0)),
                                ("http.route", Attr::Str(route.0)),
                            ],
                            value: g.get(),
                        })
                        .collect(),
                },
            },
            Metric {
                name: "http.server.request.duration",
                description: DURATION_HELP,
                unit: "s",
                data: MetricData::Histogram(
                    self.durations
                        .all()
                        .into_iter()
                        .map(|((method, route, status), d)| Point {
                            attributes: vec![
                                ("http.request.method", Attr::Str(method.0)),
                                ("http.response.status_code", Attr::Int(i64::from(status))),
                                ("http.route", Attr::Str(route.0)),
                            ],
                            value: d.hist.snapshot(),
                        })
                        .collect(),
                ),
            },
            Metric {
                name: "inference.requests",
                description: "",
                unit: "{request}",
                data: MetricData::Sum {
                    monotonic: true,
                    points: Outcome::ALL
                        .iter()
                        .zip(&self.requests)
                        .map(|(o, c)| Point {
                            attributes: vec![model(), ("outcome", Attr::Str(o.label()))],
                            value: c.get() as i64,
                        })
                        .collect(),
                },
            },
            histogram("inference.duration", "s", &self.forward),
            histogram("inference.prediction", "USD", &self.prediction),
            histogram("inference.batch.size", "{row}", &self.batch),
        ];
        all.into_iter()
            .filter(|m| match &m.data {
                MetricData::Sum { points, .. } | MetricData::Gauge(points) => !points.is_empty(),
                MetricData::Histogram(points) => !points.is_empty(),
            })
            .collect()
    }

    /// Starts a thread (inheriting the caller's CPU priority) that sends the metrics to `out`
    /// every `out.interval`, and once more when stopped.
    pub fn export(self: &Arc<Self>, out: OtlpMetrics) -> std::io::Result<MetricsExport> {
        let stop = Arc::new(AtomicBool::new(false));
        let (metrics, stopping) = (self.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("otel-metrics".into())
            .spawn(move || {
                let scope = otlp::EncodedScope::named("inference-app");
                let mut pending = otlp::Pending::default();
                let warned = Arc::new(std::sync::Mutex::new(None));
                let mut next = std::time::Instant::now() + out.interval;
                loop {
                    let last = stopping.load(Ordering::Acquire);
                    let now = std::time::Instant::now();
                    if last || now >= next {
                        metrics.send(&out, &scope, &mut pending, &warned);
                        next = now + out.interval;
                    }
                    if last {
                        out.sender.settle();
                        return;
                    }
                    std::thread::park_timeout(next.saturating_duration_since(now));
                }
            })?;
        Ok(MetricsExport {
            stop,
            handle: Some(handle),
        })
    }

    fn send(
        &self,
        out: &OtlpMetrics,
        scope: &otlp::EncodedScope,
        pending: &mut otlp::Pending,
        warned: &Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    ) {
        let now = unix_nanos(SystemTime::now());
        for m in self.otlp() {
            pending.metric(&m, self.started, now);
        }
        let Some(req) = pending.take(&out.resource, scope) else {
            return;
        };
        let warned = warned.clone();
        out.sender.send(req, move |error| {
            let mut last = warned.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t: std::time::Instant| t.elapsed() >= WARN_EVERY) {
                *last = Some(std::time::Instant::now());
                tracing::warn!(
                    error,
                    "exporting metrics failed; the next export carries the same totals"
                );
            }
        });
    }
}

/// At most one warning about failed metric exports per this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Where this app sends its own OTLP metrics.
pub struct OtlpMetrics {
    /// The endpoint.
    pub sender: otlp::Sender,
    /// The service's resource.
    pub resource: otlp::EncodedResource,
    /// OTEL_METRIC_EXPORT_INTERVAL.
    pub interval: Duration,
}

/// The metrics export thread. Stopping it (or dropping it) sends the metrics once more and
/// waits for that export.
pub struct MetricsExport {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl MetricsExport {
    /// Sends the metrics a last time and ends the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for MetricsExport {
    fn drop(&mut self) {
        self.halt();
    }
}

const DROPPED_HELP: &str =
    "Spans, OTLP log records and JSON log lines dropped because their queue was full";
const INFO_HELP: &str = "The loaded model (always 1)";
const ACTIVE_HELP: &str = "In-flight HTTP requests";
const DURATION_HELP: &str = "Duration of HTTP server requests";

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
        .with_description(INFO_HELP)
        .with_callback(move |o| o.observe(1, &info))
        .build();
    m.u64_observable_counter("telemetry.dropped_items")
        .with_description(DROPPED_HELP)
        .with_callback(move |o| o.observe(dropped.load(Ordering::Relaxed), &[]))
        .build();
    m.i64_observable_up_down_counter("http.server.active_requests")
        .with_unit("{request}")
        .with_description(ACTIVE_HELP)
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
            .with_description(DURATION_HELP)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{Inference, Phase};
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::NumberDataPoint;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    use prost::Message;

    fn request(
        method: &'static str,
        route: &'static str,
        status: u16,
        outcome: Option<Outcome>,
        predictions: &[f64],
    ) -> RequestRecord {
        let phase = |a: u64, b: u64| Phase {
            start: Duration::from_micros(a),
            end: Duration::from_micros(b),
            error: None,
        };
        let ran = outcome == Some(Outcome::Ok);
        RequestRecord {
            start: SystemTime::now(),
            duration: Duration::from_micros(700 + 100 * u64::from(status % 7)),
            trace_id: TraceId::from(7u128),
            span_id: SpanId::from(7u64),
            parent: None,
            method,
            route,
            path: route.into(),
            request_id: Default::default(),
            client: None,
            status,
            inference: Inference {
                outcome,
                batch: predictions.len(),
                pre: outcome.map(|_| phase(10, 20)),
                forward: ran.then(|| phase(20, 20 + 3 * predictions.len() as u64)),
                post: ran.then(|| phase(40, 50)),
                predictions: predictions.to_vec(),
            },
        }
    }

    /// A number point without its times, its attributes by key.
    fn untimed(p: &mut NumberDataPoint) {
        (p.start_time_unix_nano, p.time_unix_nano) = (0, 0);
        p.attributes.sort_by(|a, b| a.key.cmp(&b.key));
    }

    /// Timestamps aside (ours are the service's start and the export's time), and with
    /// metrics, series and attributes in one order (OTLP attributes are a map: the SDK keeps
    /// some in the order they were bound in and sorts others).
    fn normalized(mut r: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest {
        for sm in r
            .resource_metrics
            .iter_mut()
            .flat_map(|rm| &mut rm.scope_metrics)
        {
            sm.metrics.sort_by(|a, b| a.name.cmp(&b.name));
            for m in &mut sm.metrics {
                match m.data.as_mut().expect("metric data") {
                    Data::Histogram(h) => {
                        for p in &mut h.data_points {
                            (p.start_time_unix_nano, p.time_unix_nano) = (0, 0);
                            p.attributes.sort_by(|a, b| a.key.cmp(&b.key));
                        }
                        h.data_points.sort_by_key(|p| format!("{:?}", p.attributes));
                    }
                    Data::Sum(s) => {
                        s.data_points.iter_mut().for_each(untimed);
                        s.data_points.sort_by_key(|p| format!("{:?}", p.attributes));
                    }
                    Data::Gauge(g) => g.data_points.iter_mut().for_each(untimed),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        r
    }

    #[test]
    fn otlp_metrics_are_the_message_the_sdk_exports_for_the_same_requests() {
        let exporter = InMemoryMetricExporter::default();
        let resource = Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "house-price")])
            .build();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource.clone())
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        let meter = provider.meter("inference-app");
        let m = AppMetrics::new(
            Some(&meter),
            "house-price",
            "1.0.0",
            Arc::new(AtomicU64::new(3)),
        );
        let _in_flight = m.started("POST", "/predict");
        drop(m.started("GET", "/health"));
        for rec in [
            request("POST", "/predict", 200, Some(Outcome::Ok), &[275e3]),
            request(
                "POST",
                "/predict",
                200,
                Some(Outcome::Ok),
                &[1e5, 2.5e5, 2e6],
            ),
            request("POST", "/predict", 422, Some(Outcome::InvalidInput), &[]),
            request("GET", "/health", 200, None, &[]),
            request("GET", "unmatched", 404, None, &[]),
        ] {
            m.record(&rec);
        }
        provider.force_flush().unwrap();
        let sdk = exporter.get_finished_metrics().unwrap();
        let reference = ExportMetricsServiceRequest::from(sdk.last().unwrap());

        let mut pending = otlp::Pending::default();
        for metric in m.otlp() {
            pending.metric(&metric, 1, 2);
        }
        let req = pending
            .take(
                &(&resource).into(),
                &otlp::EncodedScope::named("inference-app"),
            )
            .unwrap();
        assert_eq!(req.items, 8);
        let ours = ExportMetricsServiceRequest::decode(&req.message()[..]).unwrap();
        let (ours, reference) = (normalized(ours), normalized(reference));
        assert_eq!(ours, reference);
        // The comparison covered what matters: every metric, with series.
        let names: Vec<&str> = ours.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "http.server.active_requests",
                "http.server.request.duration",
                "inference.batch.size",
                "inference.duration",
                "inference.prediction",
                "inference.requests",
                "model.info",
                "telemetry.dropped_items"
            ]
        );
    }

    #[test]
    fn histograms_count_a_value_in_the_first_bucket_at_or_above_it() {
        static BOUNDS: [f64; 3] = [1.0, 2.0, 5.0];
        let h = Hist::new(&BOUNDS);
        for v in [0.5, 1.0, 1.5, 2.0, 9.0, f64::NAN, f64::INFINITY, -3.0] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, [3, 2, 0, 1]);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 11.0);
        assert_eq!((s.min, s.max), (-3.0, 9.0));
        let empty = Hist::new(&BOUNDS).snapshot();
        assert_eq!((empty.count, empty.sum), (0, 0.0));
    }

    #[test]
    fn histograms_show_on_metrics_as_prometheus_buckets() {
        let m = AppMetrics::new(None, "house-price", "1.0.0", Arc::new(AtomicU64::new(0)));
        m.record(&request(
            "POST",
            "/predict",
            200,
            Some(Outcome::Ok),
            &[275e3, 2e6],
        ));
        let text = m.encode();
        for line in [
            "inference_prediction_bucket{le=\"250000.0\",model=\"house-price\"} 0",
            "inference_prediction_bucket{le=\"300000.0\",model=\"house-price\"} 1",
            "inference_prediction_bucket{le=\"1000000.0\",model=\"house-price\"} 1",
            "inference_prediction_bucket{le=\"+Inf\",model=\"house-price\"} 2",
            "inference_prediction_count{model=\"house-price\"} 2",
            "inference_prediction_sum{model=\"house-price\"} 2275000.0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
