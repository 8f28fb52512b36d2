//! Telemetry that never reached its destination, counted per signal for
//! `telemetry.dropped_items`.
//!
//! The SDK's batch processors count the items they drop when their queue is full, but keep the
//! count private (they log the first drop and the total at shutdown). What this app can count
//! is counted here: the items of every export that failed (the collector down or refusing),
//! through [`Counted`] around each exporter, and the JSON lines the non-blocking stdout writer
//! dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tracing_appender::non_blocking::ErrorCounter;

/// What was dropped (the `signal` attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Spans of a failed export.
    Spans,
    /// OTLP log records of a failed export.
    LogRecords,
    /// Metric data points of a failed export.
    MetricPoints,
    /// JSON log lines the stdout writer dropped because its buffer was full.
    LogLines,
}

impl Signal {
    /// Every signal, in the order of the counters.
    pub const ALL: [Signal; 4] = [
        Signal::Spans,
        Signal::LogRecords,
        Signal::MetricPoints,
        Signal::LogLines,
    ];

    /// The attribute value.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::LogRecords => "log_records",
            Signal::MetricPoints => "metric_points",
            Signal::LogLines => "log_lines",
        }
    }
}

/// The counters, shared by the exporters, the log writer and the metric that reports them.
#[derive(Clone, Debug, Default)]
pub struct Dropped(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    exports: [AtomicU64; 3],
    lines: OnceLock<ErrorCounter>,
}

impl Dropped {
    /// Counts `n` items of `signal` lost.
    pub fn add(&self, signal: Signal, n: u64) {
        match signal {
            Signal::LogLines => {}
            s => {
                self.0.exports[s as usize].fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Reads the lines dropped by the non-blocking stdout writer from its own counter.
    pub fn watch_log_lines(&self, counter: ErrorCounter) {
        let _ = self.0.lines.set(counter);
    }

    /// Items of `signal` dropped so far.
    pub fn get(&self, signal: Signal) -> u64 {
        match signal {
            Signal::LogLines => self.0.lines.get().map_or(0, |c| c.dropped_lines() as u64),
            s => self.0.exports[s as usize].load(Ordering::Relaxed),
        }
    }
}

/// An exporter whose failed exports are counted in [`Dropped`].
#[derive(Debug)]
pub struct Counted<E> {
    inner: E,
    dropped: Dropped,
}

impl<E> Counted<E> {
    /// Wraps `inner`.
    pub fn new(inner: E, dropped: Dropped) -> Self {
        Counted { inner, dropped }
    }

    fn count(&self, result: OTelSdkResult, signal: Signal, n: u64) -> OTelSdkResult {
        if result.is_err() {
            self.dropped.add(signal, n);
        }
        result
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        self.count(self.inner.export(batch).await, Signal::Spans, n)
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

impl<E: LogExporter> LogExporter for Counted<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count() as u64;
        self.count(self.inner.export(batch).await, Signal::LogRecords, n)
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}

/// Data points in an export.
fn points(metrics: &ResourceMetrics) -> u64 {
    fn of<T>(d: &MetricData<T>) -> usize {
        match d {
            MetricData::Gauge(g) => g.data_points().count(),
            MetricData::Sum(s) => s.data_points().count(),
            MetricData::Histogram(h) => h.data_points().count(),
            MetricData::ExponentialHistogram(h) => h.data_points().count(),
        }
    }
    metrics
        .scope_metrics()
        .flat_map(|s| s.metrics())
        .map(|m| match m.data() {
            AggregatedMetrics::F64(d) => of(d),
            AggregatedMetrics::U64(d) => of(d),
            AggregatedMetrics::I64(d) => of(d),
        })
        .sum::<usize>() as u64
}

impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.count(result, Signal::MetricPoints, points(metrics))
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::error::OTelSdkError;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    #[derive(Debug)]
    struct Refusing;

    impl SpanExporter for Refusing {
        async fn export(&self, _: Vec<SpanData>) -> OTelSdkResult {
            Err(OTelSdkError::InternalFailure("collector down".into()))
        }
    }

    /// Ends `n` spans through a provider that exports each as it ends.
    fn spans(exporter: impl SpanExporter + 'static, n: usize) {
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .build();
        let tracer = provider.tracer("test");
        for _ in 0..n {
            tracer.in_span("work", |_| {});
        }
    }

    #[test]
    fn the_items_of_a_failed_export_are_counted_and_a_good_one_costs_nothing() {
        let dropped = Dropped::default();
        spans(
            Counted::new(InMemorySpanExporter::default(), dropped.clone()),
            2,
        );
        assert_eq!(dropped.get(Signal::Spans), 0);
        spans(Counted::new(Refusing, dropped.clone()), 3);
        assert_eq!(dropped.get(Signal::Spans), 3);
        assert_eq!(dropped.get(Signal::LogRecords), 0);
        dropped.add(Signal::LogLines, 5);
        assert_eq!(
            dropped.get(Signal::LogLines),
            0,
            "lines are read from the writer's own counter"
        );
    }
}
