//! The service's metrics: OpenTelemetry instruments with the semantic-convention names. Both
//! exports read them: OTLP through the SDK's periodic reader, `/metrics` through
//! [`crate::prometheus::Scrape`].

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableCounter, UpDownCounter};

use crate::dropped::{Dropped, Signal};

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

/// How an inference request ended (the `outcome` attribute of `inference.requests`).
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
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::InvalidInput => "invalid_input",
            Outcome::Error => "error",
        }
    }
}

/// The instruments.
pub struct AppMetrics {
    duration: Histogram<f64>,
    active: UpDownCounter<i64>,
    requests: Counter<u64>,
    forward: Histogram<f64>,
    prediction: Histogram<f64>,
    batch: Histogram<u64>,
    out_of_range: Counter<u64>,
    model: [KeyValue; 1],
    // Observed at every collection for as long as they are held.
    _info: opentelemetry::metrics::ObservableGauge<i64>,
    _dropped: ObservableCounter<u64>,
}

/// One active request in `http.server.active_requests`, until dropped: also when the client
/// goes away mid-request and the server drops the request's future.
#[must_use = "the request counts as active until this is dropped"]
pub struct Active {
    counter: UpDownCounter<i64>,
    attributes: [KeyValue; 2],
}

impl Drop for Active {
    fn drop(&mut self) {
        self.counter.add(-1, &self.attributes);
    }
}

impl AppMetrics {
    /// The instruments of `meter`, for the model `name` at `version`.
    pub fn new(meter: &Meter, name: &str, version: &str, dropped: Dropped) -> Self {
        let model = [KeyValue::new("model.name", name.to_string())];
        let info = [
            model[0].clone(),
            KeyValue::new("model.version", version.to_string()),
        ];
        AppMetrics {
            duration: meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests")
                .with_boundaries(HTTP_BUCKETS.to_vec())
                .build(),
            active: meter
                .i64_up_down_counter("http.server.active_requests")
                .with_unit("{request}")
                .with_description("Requests being served")
                .build(),
            requests: meter
                .u64_counter("inference.requests")
                .with_description("Inference requests by model and outcome")
                .build(),
            forward: meter
                .f64_histogram("inference.duration")
                .with_unit("s")
                .with_description("Forward pass only")
                .with_boundaries(FORWARD_BUCKETS.to_vec())
                .build(),
            prediction: meter
                .f64_histogram("inference.prediction")
                .with_description("Predicted values, for drift")
                .with_boundaries(PRICE_BUCKETS.to_vec())
                .build(),
            batch: meter
                .u64_histogram("inference.batch.size")
                .with_description("Rows per forward pass")
                .with_boundaries(BATCH_BUCKETS.to_vec())
                .build(),
            out_of_range: meter
                .u64_counter("inference.out_of_range")
                .with_description("Input values outside the model's training range, by feature")
                .build(),
            _info: meter
                .i64_observable_gauge("model.info")
                .with_description("The loaded model")
                .with_callback(move |o| o.observe(1, &info))
                .build(),
            _dropped: meter
                .u64_observable_counter("telemetry.dropped_items")
                .with_description("Telemetry lost: failed exports and dropped log lines")
                .with_callback(move |o| {
                    for s in Signal::ALL {
                        o.observe(dropped.get(s), &[KeyValue::new("signal", s.name())]);
                    }
                })
                .build(),
            model,
        }
    }

    /// A request started; it counts as active until the guard is dropped.
    pub fn started(&self, method: &'static str, route: &'static str) -> Active {
        let attributes = [
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
        ];
        self.active.add(1, &attributes);
        Active {
            counter: self.active.clone(),
            attributes,
        }
    }

    /// A request answered with `status` after `seconds`.
    pub fn served(&self, method: &'static str, route: &'static str, status: u16, seconds: f64) {
        self.duration.record(
            seconds,
            &[
                KeyValue::new("http.request.method", method),
                KeyValue::new("http.route", route),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
    }

    /// An inference request ended.
    pub fn inference(&self, outcome: Outcome) {
        self.requests.add(
            1,
            &[
                self.model[0].clone(),
                KeyValue::new("outcome", outcome.label()),
            ],
        );
    }

    /// A forward pass of `seconds` answered `predictions`.
    pub fn forward(&self, seconds: f64, predictions: &[f64]) {
        self.forward.record(seconds, &self.model);
        self.batch.record(predictions.len() as u64, &self.model);
        for p in predictions {
            self.prediction.record(*p, &self.model);
        }
    }

    /// `n` values of `feature` were outside the training range.
    pub fn out_of_range(&self, feature: &str, n: u64) {
        self.out_of_range.add(
            n,
            &[
                self.model[0].clone(),
                KeyValue::new("feature", feature.to_string()),
            ],
        );
    }
}
