//! The controllers, and the wiring that runs them. Each reconcile is a pipeline whose stages
//! are the files of this module:
//!
//! - `stores`: the reflector caches every stage reads (and what of each object they keep);
//! - `dereference`: a workload's annotations resolved into the objects they name, from the stores;
//! - `decide`: the plan, pure, over the other modules' pure functions;
//! - `apply`: server-side apply (field manager `kotel`) only where kotel's owned shape or
//!   hash differs;
//! - `report`: Events and status.
//!
//! `deployments`, `collectors` and `instrumentations` are the thin reconcile shells that run
//! those stages; `triggers` says which change wakes which reconcile. Only `apply` and `report`
//! (and the readiness wait for the CRDs here) send requests to the API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Namespace, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::PostParams;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::watch;
use tracing::{Instrument, field, info, warn};

use crate::annotations::{self, InjectRef, PickError, Resolved, SidecarRef, Sources};
use crate::backoff::{self, Backoff};
use crate::collector::{Collector, Mode, ports_for, validate_config};
use crate::gateway;
use crate::inject::{self, Plan, Request, SidecarSource, Workload};
use crate::instrumentation::Instrumentation;
use crate::metrics::Metrics;
use crate::ownership::{self, FIELD_MANAGER};
use crate::rollout;
use crate::status::{self, Want};

mod apply;
mod collectors;
mod decide;
mod deployments;
mod dereference;
mod instrumentations;
mod report;
mod stores;
mod triggers;

use apply::*;
use collectors::*;
use decide::*;
use deployments::*;
use dereference::*;
use instrumentations::*;
use triggers::*;

pub use report::EventType;

/// A namespaced object kind that an `Api<K>` can read and write.
trait Namespaced:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
{
}
use report::*;
use stores::*;
pub use stores::{GatewayStores, Stores};

/// Failures of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached: transient, retried with backoff.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Shared state of the controllers.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// `reportingInstance` of kotel's Events.
    pub instance: String,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// The stores.
    pub stores: Stores,
    /// The last problem reported per Deployment, so a standing problem is reported once.
    reported: Mutex<HashMap<ObjectRef<Deployment>, String>>,
    /// Consecutive failures per object and kind.
    backoff: Backoff,
    /// Wakes the status controllers after kotel changed a Deployment.
    status_trigger: mpsc::UnboundedSender<()>,
}

fn key_of<K: Resource>(o: &K) -> String {
    format!(
        "{}/{}",
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default()
    )
}

/// The requeue after a failure of `o`; objects that are gone leave the backoff map.
fn backoff<K: Resource<DynamicType = ()>>(o: &K, ctx: &Context) -> Action {
    ctx.backoff.prune(|k| ctx.stores.exists(k));
    Action::requeue(ctx.backoff.fail(backoff::key(o)))
}

fn status_error_policy<K: Resource<DynamicType = ()>>(
    o: Arc<K>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    warn!(object = %key_of(o.as_ref()), error = %err, "status update failed");
    ctx.metrics.error("status");
    backoff(o.as_ref(), &ctx)
}

/// Waits until kotel's CRDs are established, so that watches on them do not fail.
pub async fn wait_for_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["instrumentations.kotel.dev", "collectors.kotel.dev"] {
        info!(crd = name, "waiting for the CRD to be established");
        kube::runtime::wait::await_condition(
            api.clone(),
            name,
            kube::runtime::conditions::is_crd_established(),
        )
        .await?;
    }
    Ok(())
}

/// Runs the controllers until `shutdown` resolves. `synced` is set once every store has
/// seen its first full list.
pub async fn run(
    client: Client,
    recorder_instance: String,
    metrics: Metrics,
    synced: Arc<std::sync::atomic::AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shutdown = shutdown.shared();

    let (ready_tx, ready_rx) = watch::channel([false; STREAMS]);
    let ready_tx = Arc::new(ready_tx);
    let (dep_store, dep_writer) = reflector::store::<Deployment>();
    let dep_stream = watcher(
        Api::<Deployment>::all(client.clone()),
        // Paged lists keep the start-up peak small: a list from the watch cache
        // (`any_semantic`) would arrive as one body, however many Deployments there are.
        watcher::Config::default().page_size(100),
    )
    .default_backoff()
    .modify(trim_deployment)
    .reflect(dep_writer)
    .inspect(mark_ready(ready_tx.clone(), 0))
    .touched_objects();
    let (ns_store, ns_writer) = reflector::store::<Namespace>();
    let ns_stream = watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|n| {
        n.metadata.managed_fields = None;
        n.spec = None;
        n.status = None;
    })
    .reflect(ns_writer)
    .inspect(mark_ready(ready_tx.clone(), 1))
    .touched_objects();
    let (inst_store, inst_writer) = reflector::store::<DeserializeGuard<Instrumentation>>();
    let inst_stream = watcher(
        Api::<DeserializeGuard<Instrumentation>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(inst_writer)
    .inspect(mark_ready(ready_tx.clone(), 2))
    .filter(spec_changes())
    .touched_objects();
    let (col_store, col_writer) = reflector::store::<DeserializeGuard<Collector>>();
    let col_stream = watcher(
        Api::<DeserializeGuard<Collector>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(col_writer)
    .inspect(mark_ready(ready_tx.clone(), 3))
    .filter(spec_changes())
    .touched_objects();

    // The gateway objects, by kotel's label; managedFields are dropped from the caches.
    let gateway_only = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/managed-by={}",
        gateway::MANAGED_BY
    ));
    macro_rules! gateway_stream {
        ($kind:ty, $i:expr) => {{
            let (store, writer) = reflector::store::<$kind>();
            let stream = watcher(Api::<$kind>::all(client.clone()), gateway_only.clone())
                .default_backoff()
                .modify(|o| o.metadata.managed_fields = None)
                .reflect(writer)
                .inspect(mark_ready(ready_tx.clone(), $i))
                .touched_objects();
            (store, stream)
        }};
    }
    let (sa_store, sa_stream) = gateway_stream!(ServiceAccount, 4);
    let (cm_store, cm_stream) = gateway_stream!(ConfigMap, 5);
    let (svc_store, svc_stream) = gateway_stream!(Service, 6);
    let (gw_dep_store, gw_dep_stream) = gateway_stream!(Deployment, 7);
    let (gw_ds_store, gw_ds_stream) = gateway_stream!(DaemonSet, 8);

    let deployments = Controller::for_stream(dep_stream, dep_store.clone());
    let stores = Stores {
        deployments: dep_store,
        namespaces: ns_store.clone(),
        instrumentations: inst_store.clone(),
        collectors: col_store.clone(),
        gateway: GatewayStores {
            service_accounts: sa_store,
            config_maps: cm_store,
            services: svc_store,
            deployments: gw_dep_store,
            daemon_sets: gw_ds_store,
        },
        ready: ready_rx,
    };
    let (tx, rx) = mpsc::unbounded::<()>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        instance: recorder_instance,
        metrics,
        stores: stores.clone(),
        reported: Mutex::default(),
        backoff: Backoff::default(),
        status_trigger: tx,
    });

    let s1 = stores.clone();
    let s2 = stores.clone();
    let s3 = stores.clone();
    let deployment_controller = deployments
        .watches_stream(inst_stream, move |i: DeserializeGuard<Instrumentation>| {
            deployments_using_instrumentation(
                &s1,
                &i.namespace().unwrap_or_default(),
                &i.name_any(),
            )
        })
        .watches_stream(col_stream, move |c: DeserializeGuard<Collector>| {
            deployments_using_collector(&s2, &c.namespace().unwrap_or_default(), &c.name_any())
        })
        .watches_stream(ns_stream, move |n: Namespace| {
            let name = n.name_any();
            s3.deployments
                .state()
                .iter()
                .filter(|d| d.namespace().as_deref() == Some(name.as_str()))
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(ControllerConfig::default().concurrency(16))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_deployment, error_policy, ctx.clone())
        .for_each(|_| async {});

    // Status controllers run off their own watches and are woken after kotel writes a Deployment.
    let (inst_tx, inst_rx) = futures::channel::mpsc::unbounded::<()>();
    let (col_tx, col_rx) = futures::channel::mpsc::unbounded::<()>();
    let fanout = rx.for_each(move |()| {
        let _ = inst_tx.unbounded_send(());
        let _ = col_tx.unbounded_send(());
        async {}
    });
    let status_config = ControllerConfig::default().debounce(Duration::from_millis(500));
    let instrumentation_status = Controller::new(
        Api::<DeserializeGuard<Instrumentation>>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(status_config.clone())
    .reconcile_all_on(inst_rx)
    .graceful_shutdown_on(shutdown.clone())
    .run(reconcile_instrumentation, status_error_policy, ctx.clone())
    .for_each(|_| async {});
    // A gateway object that changes or goes away wakes its Collector, which repairs it; its
    // workload wakes it too when pods become ready or go away.
    let collector_status = Controller::new(
        Api::<DeserializeGuard<Collector>>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns_stream(sa_stream)
    .owns_stream(cm_stream)
    .owns_stream(svc_stream)
    .owns_stream(gw_dep_stream)
    .owns_stream(gw_ds_stream)
    .with_config(status_config)
    .reconcile_all_on(col_rx)
    .graceful_shutdown_on(shutdown.clone())
    .run(reconcile_collector, status_error_policy, ctx.clone())
    .for_each(|_| async {});

    let ready = {
        let stores = stores.clone();
        async move {
            stores.wait_until_ready().await;
            synced.store(true, std::sync::atomic::Ordering::SeqCst);
            info!("caches synced");
        }
    };
    tokio::select! {
        _ = async { tokio::join!(
            deployment_controller.inspect(|_| info!("deployment controller stopped")),
            instrumentation_status.inspect(|_| info!("instrumentation status stopped")),
            collector_status.inspect(|_| info!("collector status stopped")),
            ready) } => {}
        _ = fanout => {}
    }
    Ok(())
}

#[cfg(test)]
mod mock_api;
