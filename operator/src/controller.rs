//! The controllers, and the wiring that runs them. Each reconcile is a pipeline whose stages
//! are the files of this module:
//!
//! - `stores`: the reflector caches every stage reads (and what of each object they keep);
//! - `dereference`: a workload's annotations resolved into the objects they name, from the stores;
//! - `decide`: the plan, pure, over the other modules' pure functions;
//! - `apply`: server-side apply (field manager `kotel`) only where kotel's owned shape or
//!   hash differs (`apply_gateway` for a gateway Collector's objects, `image_check` for the
//!   Collector image's own `validate` of a configuration, run as a Job);
//! - `report`: Events and status.
//!
//! `workloads` is the thin reconcile shell that runs those stages, once per kind (Deployment,
//! StatefulSet, DaemonSet, CronJob: what differs between them is in `crate::workload`);
//! `collectors` and `instrumentations` are the status reconcilers; `triggers` says which change
//! wakes which reconcile; `unpatchable` tells an annotated bare Pod or Job why nothing happens.
//! Only `apply`, `apply_gateway`, `image_check` and `report` (and the readiness wait for the
//! CRDs here) send requests to the API server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
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
use crate::validation;
use crate::workload::{Kind, Object, Templated, Watched};

mod apply;
mod apply_gateway;
mod collectors;
mod decide;
mod dereference;
mod image_check;
mod instrumentations;
mod pod_check;
mod report;
mod stores;
mod triggers;
mod unpatchable;
mod workloads;

use apply::*;
use apply_gateway::*;
use collectors::*;
use decide::*;
use dereference::*;
use image_check::*;
use instrumentations::*;
use triggers::*;
use workloads::*;

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
pub use stores::{GatewayStores, Stores, WorkloadStores};

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
    /// The last problem reported per workload, so a standing problem is reported once.
    reported: Mutex<HashMap<WorkloadKey, String>>,
    /// Malformed Instrumentations already reported (namespace/name/generation/error).
    invalid_reported: Mutex<std::collections::HashSet<String>>,
    /// The rollout state of each injected workload, for `kotel_rollouts` and status.
    rollouts: Mutex<HashMap<WorkloadKey, rollout::State>>,
    /// Consecutive failures per object and kind.
    backoff: Backoff,
    /// Wakes the status controllers after kotel changed a workload, or a rollout moved.
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

/// The shortest time between two passes of the status reconcilers over every workload.
const STATUS_PERIOD: Duration = Duration::from_secs(5);

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
    let (status_tx, status_rx) = mpsc::unbounded::<()>();
    let (dep_store, dep_stream) =
        watch_workloads::<Watched<Deployment>>(&client, &ready_tx, 0, &status_tx);
    let (sts_store, sts_stream) =
        watch_workloads::<Watched<StatefulSet>>(&client, &ready_tx, 9, &status_tx);
    let (ds_store, ds_stream) =
        watch_workloads::<Watched<DaemonSet>>(&client, &ready_tx, 10, &status_tx);
    let (cj_store, cj_stream) =
        watch_workloads::<Watched<CronJob>>(&client, &ready_tx, 11, &status_tx);
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
    .filter(changes(|i: &DeserializeGuard<Instrumentation>| {
        format!("{:?}", i.meta().generation)
    }))
    .touched_objects();
    let (col_store, col_writer) = reflector::store::<DeserializeGuard<Collector>>();
    let col_stream = watcher(
        Api::<DeserializeGuard<Collector>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(col_writer)
    .inspect(mark_ready(ready_tx.clone(), 3))
    .filter(changes(|c: &DeserializeGuard<Collector>| {
        let validation =
            c.0.as_ref()
                .ok()
                .and_then(|c| c.status.as_ref()?.validation.clone());
        format!("{:?} {:?}", c.meta().generation, validation)
    }))
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
    let (job_store, job_writer) = reflector::store::<Job>();
    let job_stream = watcher(
        Api::<Job>::all(client.clone()),
        watcher::Config::default().labels(crate::validation::LABEL),
    )
    .default_backoff()
    .modify(|o| o.metadata.managed_fields = None)
    .reflect(job_writer)
    .inspect(mark_ready(ready_tx.clone(), 12))
    .touched_objects();

    let stores = Stores {
        workloads: WorkloadStores {
            deployments: dep_store.clone(),
            stateful_sets: sts_store.clone(),
            daemon_sets: ds_store.clone(),
            cron_jobs: cj_store.clone(),
        },
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
        validation_jobs: job_store,
        ready: ready_rx,
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        instance: recorder_instance,
        metrics,
        stores: stores.clone(),
        reported: Mutex::default(),
        invalid_reported: Mutex::default(),
        rollouts: Mutex::default(),
        backoff: Backoff::default(),
        status_trigger: status_tx,
    });

    // One watch of each input wakes the workloads it concerns, of every kind.
    let (dep_tx, dep_rx) = mpsc::unbounded();
    let (sts_tx, sts_rx) = mpsc::unbounded();
    let (ds_tx, ds_rx) = mpsc::unbounded();
    let (cj_tx, cj_rx) = mpsc::unbounded();
    let wakers = Wakers {
        deployments: dep_tx,
        stateful_sets: sts_tx,
        daemon_sets: ds_tx,
        cron_jobs: cj_tx,
    };
    let (s1, s2, s3) = (stores.clone(), stores.clone(), stores.clone());
    let concerned = futures::stream::select_all([
        inst_stream
            .map(move |r| {
                r.map(|i| {
                    workloads_using_instrumentation(
                        &s1,
                        &i.namespace().unwrap_or_default(),
                        &i.name_any(),
                    )
                })
            })
            .boxed(),
        col_stream
            .map(move |r| {
                r.map(|c| {
                    workloads_using_collector(
                        &s2,
                        &c.namespace().unwrap_or_default(),
                        &c.name_any(),
                    )
                })
            })
            .boxed(),
        ns_stream
            .map(move |r| r.map(|n| workloads_in(&s3, &n.name_any())))
            .boxed(),
    ]);
    let triggers = concerned.for_each(move |r| {
        match r {
            Ok(ws) => ws.iter().for_each(|w| wakers.wake(w.as_ref())),
            Err(e) => warn!(error = %e, "watch error"),
        }
        async {}
    });
    let workload_controllers = futures::future::join4(
        run_workloads(dep_stream, dep_store, dep_rx, &ctx, shutdown.clone()),
        run_workloads(sts_stream, sts_store, sts_rx, &ctx, shutdown.clone()),
        run_workloads(ds_stream, ds_store, ds_rx, &ctx, shutdown.clone()),
        run_workloads(cj_stream, cj_store, cj_rx, &ctx, shutdown.clone()),
    );
    let unpatchable = unpatchable::run(client.clone(), ctx.clone());

    // Status controllers run off their own watches and are woken after kotel writes a
    // workload, a rollout moves, or an injected workload goes away.
    let (inst_tx, inst_rx) = futures::channel::mpsc::unbounded::<()>();
    let (col_tx, col_rx) = futures::channel::mpsc::unbounded::<()>();
    let rollout_ctx = ctx.clone();
    // Each status pass reads every workload, so passes run at most once a STATUS_PERIOD, the
    // triggers that came meanwhile coalesced into one. (kube's debounce would instead put a pass
    // off for as long as triggers keep coming, which at scale is as long as rollouts go on.)
    let throttled = tokio_stream::StreamExt::throttle(status_rx.ready_chunks(4096), STATUS_PERIOD);
    let fanout = throttled.for_each(move |_| {
        rollout_ctx.publish_rollouts();
        let _ = inst_tx.unbounded_send(());
        let _ = col_tx.unbounded_send(());
        async {}
    });
    let instrumentation_status = Controller::new(
        Api::<DeserializeGuard<Instrumentation>>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(inst_rx)
    .graceful_shutdown_on(shutdown.clone())
    .run(reconcile_instrumentation, status_error_policy, ctx.clone())
    .for_each(log_watch_error);
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
    .owns_stream(job_stream)
    // A gateway's objects change in bursts (a rollout's pods); one pass after the burst.
    .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)))
    .reconcile_all_on(col_rx)
    .graceful_shutdown_on(shutdown.clone())
    .run(reconcile_collector, status_error_policy, ctx.clone())
    .for_each(log_watch_error);

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
            workload_controllers.inspect(|_| info!("workload controllers stopped")),
            instrumentation_status.inspect(|_| info!("instrumentation status stopped")),
            collector_status.inspect(|_| info!("collector status stopped")),
            ready) } => {}
        _ = fanout => {}
        _ = triggers => {}
        _ = unpatchable => {}
    }
    Ok(())
}

/// The watch of one workload kind, feeding its store; its first list marks stream `i` ready.
fn watch_workloads<W: Object>(
    client: &Client,
    ready: &Arc<watch::Sender<[bool; STREAMS]>>,
    i: usize,
    status: &mpsc::UnboundedSender<()>,
) -> (
    Store<W>,
    impl futures::Stream<Item = Result<W, watcher::Error>> + Send + 'static,
) {
    let (store, writer) = reflector::store::<W>();
    let stream = watcher(
        Api::<W>::all(client.clone()),
        // Paged lists keep the start-up peak small: a list from the watch cache
        // (`any_semantic`) would arrive as one body, however many workloads there are.
        watcher::Config::default().page_size(100),
    )
    .default_backoff()
    .reflect(writer)
    .inspect(mark_ready(ready.clone(), i))
    .inspect(wake_status_on_delete(status.clone()))
    .touched_objects();
    (store, stream)
}

/// The controller of one workload kind: woken by its own watch and by the triggers.
async fn run_workloads<W: Object>(
    stream: impl futures::Stream<Item = Result<W, watcher::Error>> + Send + 'static,
    store: Store<W>,
    wake: mpsc::UnboundedReceiver<ObjectRef<W>>,
    ctx: &Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    Controller::for_stream(stream, store)
        .reconcile_on(wake)
        .with_config(ControllerConfig::default().concurrency(16))
        .graceful_shutdown_on(shutdown)
        .run(reconcile_workload::<W>, error_policy::<W>, ctx.clone())
        .for_each(log_watch_error)
        .await
}

/// Reconcile failures are the error policies' to report; what reaches here besides is a watch
/// that failed (the API server or etcd away, or its resourceVersion expired with 410 Gone),
/// which the watcher retries with backoff and answers with a fresh list.
fn log_watch_error<T, E>(
    r: Result<T, kube::runtime::controller::Error<E, watcher::Error>>,
) -> futures::future::Ready<()> {
    if let Err(kube::runtime::controller::Error::QueueError(e)) = r {
        warn!(error = %e, "watch failed; retrying with backoff, and listing afresh if it expired");
    }
    futures::future::ready(())
}

#[cfg(test)]
mod mock_api;
