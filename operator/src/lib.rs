//! kotel: a Kubernetes operator that injects and manages OpenTelemetry for workloads.
//!
//! Every decision (annotation resolution, env, sidecar, collector config, ports, config hash,
//! apply body, gateway drift, rollout state, backoff) is a pure function in its own module, the
//! same for every workload kind (`workload` holds what differs between Deployment, StatefulSet,
//! DaemonSet and CronJob); only `controller` talks to the API server, and within it only its
//! `apply` and `report` stages.

pub mod agent;
pub mod annotations;
pub mod api_client;
pub mod backoff;
pub mod blocked;
pub mod collector;
pub mod controller;
pub mod gateway;
pub mod http;
pub mod inject;
pub mod instrumentation;
pub mod leader;
pub mod metrics;
pub mod ownership;
pub mod rollout;
pub mod sidecar;
pub mod status;
pub mod telemetry;
pub mod validation;
pub mod workload;

use kube::CustomResourceExt;

/// The CRDs kotel serves, as one multi-document YAML stream (what `kotel-operator crds` prints
/// and `crds/` holds).
pub fn crds_yaml() -> String {
    let crds = [
        instrumentation::Instrumentation::crd(),
        collector::Collector::crd(),
    ];
    crds.iter()
        .map(|c| serde_norway::to_string(c).expect("a CRD serialises to YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}
