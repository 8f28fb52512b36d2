//! `/metrics`: the OpenTelemetry instruments read on demand by a reader of the meter provider,
//! and written in the Prometheus text format by prometheus-client's encoder.
//!
//! The instruments are the one store: OTLP exports read them through the periodic reader, and a
//! scrape through this one. Names and labels follow the Collector's Prometheus exporter:
//! `http.server.request.duration` in seconds becomes `http_server_request_duration_seconds`, a
//! counter gets `_total`, and `http.route` becomes the label `http_route`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

/// A reader registered with the meter provider (a clone) and read by `/metrics` (another).
#[derive(Clone, Debug)]
pub struct Scrape(Arc<ManualReader>);

impl Default for Scrape {
    fn default() -> Self {
        // Cumulative, as Prometheus expects, whatever the OTLP exporter prefers.
        Scrape(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ))
    }
}

impl MetricReader for Scrape {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

impl Scrape {
    /// The Prometheus text exposition of every instrument now.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }
}

/// The Prometheus name of an attribute or metric name.
fn prometheus_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

type Labels = Vec<(String, String)>;

/// The labels of a point, sorted by name (the SDK keeps attributes in no fixed order).
fn labels<'a>(attributes: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Labels {
    let mut l: Labels = attributes
        .map(|kv| (prometheus_name(kv.key.as_str()), kv.value.to_string()))
        .collect();
    l.sort();
    l
}

/// The name, help and unit of one metric.
struct Descriptor<'a> {
    name: &'a str,
    help: &'a str,
    unit: Option<&'a Unit>,
}

/// The number types of OpenTelemetry points, written as themselves (sums of histograms as
/// f64).
trait Number: Copy + EncodeGaugeValue {
    type Counter: EncodeCounterValue;
    fn counter(self) -> Self::Counter;
    fn float(self) -> f64;
}

impl Number for f64 {
    type Counter = f64;
    fn counter(self) -> f64 {
        self
    }
    fn float(self) -> f64 {
        self
    }
}

impl Number for u64 {
    type Counter = u64;
    fn counter(self) -> u64 {
        self
    }
    fn float(self) -> f64 {
        self as f64
    }
}

impl Number for i64 {
    type Counter = u64;
    fn counter(self) -> u64 {
        self.max(0) as u64
    }
    fn float(self) -> f64 {
        self as f64
    }
}

/// One metric's points.
fn encode<T: Number>(
    encoder: &mut DescriptorEncoder,
    d: &Descriptor,
    data: &MetricData<T>,
) -> Result<(), std::fmt::Error> {
    let (name, help, unit) = (d.name, d.help, d.unit);
    match data {
        MetricData::Sum(s) => {
            let kind = if s.is_monotonic() {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut m = encoder.encode_descriptor(name, help, unit, kind)?;
            for p in s.data_points() {
                let l = labels(p.attributes());
                let mut family = m.encode_family(&l)?;
                if s.is_monotonic() {
                    family.encode_counter::<NoLabelSet, _, f64>(&p.value().counter(), None)?;
                } else {
                    family.encode_gauge(&p.value())?;
                }
            }
        }
        MetricData::Gauge(g) => {
            let mut m = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
            for p in g.data_points() {
                let l = labels(p.attributes());
                m.encode_family(&l)?.encode_gauge(&p.value())?;
            }
        }
        MetricData::Histogram(h) => {
            let mut m = encoder.encode_descriptor(name, help, unit, MetricType::Histogram)?;
            for p in h.data_points() {
                let l = labels(p.attributes());
                let buckets: Vec<(f64, u64)> = p
                    .bounds()
                    .chain([f64::INFINITY])
                    .zip(p.bucket_counts())
                    .collect();
                m.encode_family(&l)?.encode_histogram::<NoLabelSet>(
                    p.sum().float(),
                    p.count(),
                    &buckets,
                    None,
                )?;
            }
        }
        // Not used by this app (no view asks for one).
        MetricData::ExponentialHistogram(_) => {}
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut rm = ResourceMetrics::default();
        if self.0.collect(&mut rm).is_err() {
            // Shut down: nothing more to show.
            return Ok(());
        }
        for metric in rm.scope_metrics().flat_map(|s| s.metrics()) {
            let unit = (metric.unit() == "s").then_some(Unit::Seconds);
            let name = prometheus_name(metric.name());
            let d = Descriptor {
                name: &name,
                help: metric.description(),
                unit: unit.as_ref(),
            };
            match metric.data() {
                AggregatedMetrics::F64(data) => encode(&mut encoder, &d, data)?,
                AggregatedMetrics::U64(data) => encode(&mut encoder, &d, data)?,
                AggregatedMetrics::I64(data) => encode(&mut encoder, &d, data)?,
            }
        }
        Ok(())
    }
}
