//! The operator's Prometheus metrics.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// A short, bounded reason such as `kube`, `ambiguous`, `not_found`.
    pub reason: String,
}

/// Label set of the write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// What was written: a workload kind in lower case (`deployment`, `statefulset`,
    /// `daemonset`, `cronjob`), `gateway`, `status`, `event`.
    pub kind: String,
}

/// Label set of the rollout gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    /// `pending`, `complete` or `failed`.
    pub state: String,
}

/// Label set of the API request histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete` (see `api_client::verb`).
    pub verb: String,
}

/// The time the API server took to answer each request, by verb; its `_count` is the number
/// of requests.
#[derive(Clone)]
pub struct ApiDurations(Family<ApiLabels, Histogram, fn() -> Histogram>);

impl Default for ApiDurations {
    fn default() -> Self {
        ApiDurations(Family::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 4.0, 8))
        }))
    }
}

impl ApiDurations {
    /// Records one answer.
    pub fn observe(&self, verb: &str, took: Duration) {
        self.0
            .get_or_create(&ApiLabels { verb: verb.into() })
            .observe(took.as_secs_f64());
    }
}

/// What the operator writes (the `kind` of `kotel_writes_total`).
pub const WRITE_KINDS: [&str; 8] = [
    "deployment",
    "statefulset",
    "daemonset",
    "cronjob",
    "gateway",
    "status",
    "event",
    "validation",
];

/// Why a reconcile fails (the `reason` of `kotel_reconcile_errors_total`).
pub const ERROR_REASONS: [&str; 2] = ["kube", "status"];

/// Every metric the operator exports.
#[derive(Clone)]
pub struct Metrics {
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconcile failures by reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub duration: Histogram,
    /// Workloads (of every kind) that currently carry kotel's injection.
    pub injected: Gauge,
    /// Writes to the API server by kind.
    pub writes: Family<WriteLabels, Counter>,
    /// Injected workloads by the state of their rollout.
    pub rollouts: Family<RolloutLabels, Gauge>,
    /// Requests to the API server.
    pub api: ApiDurations,
}

impl Default for Metrics {
    /// Every series a label can take starts at 0, so that `rate()` and the dashboards see a
    /// series before the first error or write.
    fn default() -> Self {
        let m = Metrics {
            reconciles: Counter::default(),
            errors: Family::default(),
            duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            injected: Gauge::default(),
            writes: Family::default(),
            rollouts: Family::default(),
            api: ApiDurations::default(),
        };
        for kind in WRITE_KINDS {
            drop(m.writes.get_or_create(&WriteLabels { kind: kind.into() }));
        }
        for reason in ERROR_REASONS {
            drop(m.errors.get_or_create(&ErrorLabels {
                reason: reason.into(),
            }));
        }
        m.set_rollouts([]);
        m
    }
}

/// `process_resident_memory_bytes`, read from `/proc/self/status` at each scrape.
/// prometheus-client has no process collector, and this is the one process metric the
/// dashboard and the benchmarks read.
#[derive(Debug)]
struct Resident;

impl Collector for Resident {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
        if let Some(kib) = kib {
            encoder
                .encode_descriptor(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&(kib * 1024))?;
        }
        Ok(())
    }
}

impl Metrics {
    /// Registers the metrics under the `kotel` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(Resident));
        let r = registry.sub_registry_with_prefix("kotel");
        r.register(
            "reconciles",
            "Workload reconciles run",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_errors",
            "Reconcile failures by reason",
            self.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            self.duration.clone(),
        );
        r.register(
            "injected_workloads",
            "Workloads (Deployments, StatefulSets, DaemonSets, CronJobs) that currently carry kotel's injection",
            self.injected.clone(),
        );
        r.register(
            "writes",
            "Writes to the Kubernetes API by kind",
            self.writes.clone(),
        );
        r.register(
            "rollouts",
            "Workloads carrying kotel's injection by the state of their rollout (pending, complete, failed)",
            self.rollouts.clone(),
        );
        r.register(
            "api_request_duration_seconds",
            "Time the Kubernetes API server took to answer, by verb (its count is the requests sent)",
            self.api.0.clone(),
        );
    }

    /// Sets the rollout gauge from the states of the injected workloads.
    pub fn set_rollouts(&self, states: impl IntoIterator<Item = crate::rollout::State>) {
        use crate::rollout::State;
        let mut counts = [0i64; 3];
        for s in states {
            counts[s as usize] += 1;
        }
        for s in State::ALL {
            self.rollouts
                .get_or_create(&RolloutLabels {
                    state: s.as_str().to_string(),
                })
                .set(counts[s as usize]);
        }
    }

    /// Counts one write of `kind`.
    pub fn write(&self, kind: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts one failure of `reason`.
    pub fn error(&self, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records a reconcile's duration.
    pub fn observe(&self, d: Duration) {
        self.reconciles.inc();
        self.duration.observe(d.as_secs_f64());
    }

    /// Total writes so far, of every kind.
    pub fn total_writes(&self) -> u64 {
        WRITE_KINDS
            .iter()
            .map(|k| {
                self.writes
                    .get_or_create(&WriteLabels {
                        kind: k.to_string(),
                    })
                    .get()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.write("deployment");
        m.error("kube");
        m.observe(Duration::from_millis(3));
        m.injected.set(2);
        use crate::rollout::State;
        m.set_rollouts([State::Complete, State::Complete, State::Failed]);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        for name in [
            "kotel_reconciles_total 1",
            "kotel_reconcile_errors_total{reason=\"kube\"} 1",
            "kotel_reconcile_duration_seconds_count 1",
            "kotel_injected_workloads 2",
            "kotel_writes_total{kind=\"deployment\"} 1",
            "kotel_rollouts{state=\"pending\"} 0",
            "kotel_rollouts{state=\"complete\"} 2",
            "kotel_rollouts{state=\"failed\"} 1",
            "kotel_writes_total{kind=\"validation\"} 0",
            "kotel_reconcile_errors_total{reason=\"status\"} 0",
            "process_resident_memory_bytes ",
        ] {
            assert!(out.contains(name), "{name} missing from:\n{out}");
        }
        assert_eq!(m.total_writes(), 1);
    }
}
