//! The controllers. Each reconcile is a pipeline: dereference (read the reflector stores) →
//! decide (pure functions of the other modules) → apply (server-side apply, field manager
//! `kotel`) → report (Events, status). Only this module talks to the API server.

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

/// Whether an Event reports normal operation or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Normal operation.
    Normal,
    /// Something the user should fix.
    Warning,
}

/// Failures of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached: transient, retried with backoff.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// The reflector stores every reconcile reads instead of calling the API.
#[derive(Clone)]
pub struct Stores {
    /// Deployments (the main controller's own store).
    pub deployments: Store<Deployment>,
    /// Namespaces, for namespace-level annotations.
    pub namespaces: Store<Namespace>,
    /// Instrumentations; malformed ones are kept as errors instead of breaking the watch.
    pub instrumentations: Store<DeserializeGuard<Instrumentation>>,
    /// Collectors, likewise.
    pub collectors: Store<DeserializeGuard<Collector>>,
    /// The objects of the gateway Collectors kotel runs.
    pub gateway: GatewayStores,
    /// Which of the streams listed: deployments, namespaces, instrumentations, collectors,
    /// then the gateway's service accounts, config maps, services, deployments, daemon sets.
    pub ready: watch::Receiver<[bool; STREAMS]>,
}

/// How many watch streams feed the stores.
const STREAMS: usize = 9;

/// The gateway objects as they run (watched by the label `app.kubernetes.io/managed-by=kotel`),
/// so that a deleted or edited one is seen and repaired without a GET.
#[derive(Clone)]
pub struct GatewayStores {
    /// ServiceAccounts.
    pub service_accounts: Store<ServiceAccount>,
    /// ConfigMaps.
    pub config_maps: Store<ConfigMap>,
    /// Services.
    pub services: Store<Service>,
    /// Deployments (deployment mode).
    pub deployments: Store<Deployment>,
    /// DaemonSets (daemonset mode).
    pub daemon_sets: Store<DaemonSet>,
}

impl GatewayStores {
    /// What runs now of the gateway objects named `name` in `ns`.
    fn live(&self, ns: &str, name: &str) -> LiveGateway {
        LiveGateway {
            service_account: self.service_accounts.get(&ObjectRef::new(name).within(ns)),
            config_map: self.config_maps.get(&ObjectRef::new(name).within(ns)),
            service: self.services.get(&ObjectRef::new(name).within(ns)),
            deployment: self.deployments.get(&ObjectRef::new(name).within(ns)),
            daemon_set: self.daemon_sets.get(&ObjectRef::new(name).within(ns)),
        }
    }
}

/// Owned copies of a gateway's live objects, lent to [`gateway::drift`].
struct LiveGateway {
    service_account: Option<Arc<ServiceAccount>>,
    config_map: Option<Arc<ConfigMap>>,
    service: Option<Arc<Service>>,
    deployment: Option<Arc<Deployment>>,
    daemon_set: Option<Arc<DaemonSet>>,
}

impl LiveGateway {
    fn view(&self) -> gateway::Live<'_> {
        gateway::Live {
            service_account: self.service_account.as_deref(),
            config_map: self.config_map.as_deref(),
            service: self.service.as_deref(),
            deployment: self.deployment.as_deref(),
            daemon_set: self.daemon_set.as_deref(),
        }
    }
}

impl Stores {
    /// Whether the object behind a backoff key is still there.
    fn exists(&self, k: &backoff::Key) -> bool {
        let (name, ns) = (k.name.as_str(), k.namespace.as_deref().unwrap_or_default());
        match k.dyntype.kind.as_str() {
            "Deployment" => self
                .deployments
                .get(&ObjectRef::new(name).within(ns))
                .is_some(),
            "Instrumentation" => self
                .instrumentations
                .get(&ObjectRef::new(name).within(ns))
                .is_some(),
            "Collector" => self
                .collectors
                .get(&ObjectRef::new(name).within(ns))
                .is_some(),
            _ => false,
        }
    }

    /// Resolves once every store has seen its first full list. (kube's own
    /// `Store::wait_until_ready` wakes only one of several concurrent waiters, so the
    /// readiness of each stream is tracked here on a watch channel instead.)
    pub async fn wait_until_ready(&self) {
        let mut rx = self.ready.clone();
        let _ = rx.wait_for(|r| r.iter().all(|x| *x)).await;
    }
}

/// Marks stream `i` ready when its watcher finishes an initial list.
fn mark_ready<K>(
    tx: Arc<watch::Sender<[bool; STREAMS]>>,
    i: usize,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |ev| {
        if let Ok(watcher::Event::InitDone) = ev {
            tx.send_if_modified(|r| !std::mem::replace(&mut r[i], true));
        }
    }
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

/// A standing problem with a workload: reported as a Warning Event, nothing written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    reason: &'static str,
    message: String,
}

/// The resolved inputs of one Deployment's reconcile.
struct Inputs {
    instrumentation: Option<(String, Arc<DeserializeGuard<Instrumentation>>)>,
    collector: Option<(String, Arc<DeserializeGuard<Collector>>)>,
    resolved: Resolved,
    /// Warnings that do not stop the reconcile (a named object that is gone).
    notes: Vec<Problem>,
}

fn namespace_annotations(stores: &Stores, ns: &str) -> Option<Arc<Namespace>> {
    stores.namespaces.get(&ObjectRef::new(ns))
}

fn resolve_deployment(
    d: &Deployment,
    ns_obj: Option<&Namespace>,
) -> Result<Resolved, annotations::AnnotationError> {
    let ns = d.namespace().unwrap_or_default();
    let template_meta = d.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
    let sources = Sources {
        deployment: d.metadata.annotations.as_ref(),
        template: template_meta.and_then(|m| m.annotations.as_ref()),
        namespace: ns_obj.and_then(|n| n.metadata.annotations.as_ref()),
    };
    annotations::resolve(&sources, &ns)
}

fn names_of<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    keep: impl Fn(&K) -> bool,
) -> Vec<(String, String)> {
    store
        .state()
        .iter()
        .filter(|o| keep(o))
        .map(|o| {
            (
                o.meta().namespace.clone().unwrap_or_default(),
                o.meta().name.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn is_sidecar_collector(c: &DeserializeGuard<Collector>) -> bool {
    // A malformed Collector still counts when picking, so that `true` is not silently re-pointed.
    c.0.as_ref()
        .map(|c| c.spec.mode == Mode::Sidecar)
        .unwrap_or(true)
}

/// Dereferences a Deployment's annotations into the objects they name.
fn dereference(d: &Deployment, stores: &Stores) -> Result<Inputs, Problem> {
    let ns = d.namespace().unwrap_or_default();
    let ns_obj = namespace_annotations(stores, &ns);
    let resolved = resolve_deployment(d, ns_obj.as_deref()).map_err(|e| Problem {
        reason: "InvalidAnnotation",
        message: e.to_string(),
    })?;
    let mut notes = Vec::new();
    let pick_problem = |e: PickError| -> Result<(), Problem> {
        match e {
            PickError::Ambiguous { annotation, .. } => Err(Problem {
                reason: if annotation == annotations::INJECT {
                    "AmbiguousInstrumentation"
                } else {
                    "AmbiguousCollector"
                },
                message: e.to_string(),
            }),
            other => Err(Problem {
                reason: "NotFound",
                message: other.to_string(),
            }),
        }
    };

    let instrumentation = if resolved.inject == InjectRef::Off {
        None
    } else {
        let existing = names_of(&stores.instrumentations, |_| true);
        match annotations::pick_instrumentation(&resolved.inject, &ns, &existing) {
            Ok(Some((ins, name))) => stores
                .instrumentations
                .get(&ObjectRef::new(&name).within(&ins))
                .map(|o| (format!("{ins}/{name}"), o)),
            Ok(None) => None,
            Err(e @ PickError::Ambiguous { .. }) => return pick_problem(e).map(|_| unreachable!()),
            Err(e) => {
                // The Instrumentation is gone: kotel removes what it injected from it.
                notes.push(Problem {
                    reason: "InstrumentationNotFound",
                    message: e.to_string(),
                });
                None
            }
        }
    };
    let collector = if resolved.sidecar == SidecarRef::Off {
        None
    } else {
        let existing = names_of(&stores.collectors, is_sidecar_collector);
        match annotations::pick_sidecar(&resolved.sidecar, &ns, &existing) {
            Ok(Some((cns, name))) => stores
                .collectors
                .get(&ObjectRef::new(&name).within(&cns))
                .map(|o| (name, o)),
            Ok(None) => None,
            Err(e @ PickError::Ambiguous { .. }) => return pick_problem(e).map(|_| unreachable!()),
            Err(e) => {
                notes.push(Problem {
                    reason: "CollectorNotFound",
                    message: e.to_string(),
                });
                None
            }
        }
    };
    Ok(Inputs {
        instrumentation,
        collector,
        resolved,
        notes,
    })
}

/// Decides the plan for a Deployment from its resolved inputs (pure).
fn decide(d: &Deployment, inputs: &Inputs, owned: &ownership::Shape) -> Result<Plan, Problem> {
    let inst = match &inputs.instrumentation {
        Some((name, guard)) => match &guard.0 {
            Ok(i) => Some((name.as_str(), &i.spec)),
            Err(e) => {
                return Err(Problem {
                    reason: "InvalidInstrumentation",
                    message: format!(
                        "Instrumentation {name} is invalid, keeping what was injected before: {}",
                        e.error
                    ),
                });
            }
        },
        None => None,
    };
    let collector = match &inputs.collector {
        Some((name, guard)) => match &guard.0 {
            Ok(c) => {
                let config = validate_config(&c.spec.config).map_err(|e| Problem {
                    reason: "InvalidCollectorConfig",
                    message: format!("Collector {name}: {e}; the running sidecar keeps its last good configuration"),
                })?;
                Some((c, config))
            }
            Err(e) => {
                return Err(Problem {
                    reason: "InvalidCollector",
                    message: format!(
                        "Collector {name} is invalid, keeping the running sidecar: {}",
                        e.error
                    ),
                });
            }
        },
        None => None,
    };
    let spec = d.spec.as_ref();
    let template = spec.map(|s| &s.template);
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let meta = template.and_then(|t| t.metadata.as_ref());
    let w = Workload {
        namespace: d.metadata.namespace.as_deref().unwrap_or_default(),
        name: d.metadata.name.as_deref().unwrap_or_default(),
        template_labels: meta.and_then(|m| m.labels.as_ref()),
        containers,
        current_hash: current_hash(d),
        owned,
    };
    let req = Request {
        instrumentation: inst,
        sidecar: collector.as_ref().map(|(c, config)| SidecarSource {
            spec: &c.spec,
            config,
        }),
        container_names: inputs.resolved.container_names.as_deref(),
        service_name: inputs.resolved.service_name.as_deref(),
    };
    inject::plan(&w, &req).map_err(|e| Problem {
        reason: "MissingEndpoint",
        message: e.to_string(),
    })
}

/// A Warning when a rollout of kotel's injection has stalled; kotel does not roll back.
fn stuck_rollout(d: &Deployment) -> Option<Problem> {
    let hash = current_hash(d)?;
    (rollout::of_deployment(d) == rollout::State::Failed).then(|| Problem {
        reason: "RolloutStuck",
        message: format!(
            "the rollout of this Deployment (kotel config-hash {hash}) exceeded its progress deadline; kotel does not roll back: fix the pods, or run kubectl rollout undo"
        ),
    })
}

fn current_hash(d: &Deployment) -> Option<&str> {
    annotations::template_hash(&d.spec.as_ref()?.template)
}

impl Context {
    async fn event(&self, d: &Deployment, type_: EventType, reason: &str, note: String) {
        self.publish(d.object_ref(&()), type_, reason, "Reconcile", note)
            .await;
    }

    /// Creates one `events.k8s.io/v1` Event. Each call is its own Event (no series
    /// aggregation), so every change kotel makes is visible with its own message.
    async fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = k8s_openapi::jiff::Timestamp::now();
        let ev = KubeEvent {
            metadata: ObjectMeta {
                // `<object>.<nanoseconds>` as client-go names Events; unique per publish.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.clone().unwrap_or_default(),
                    now.as_nanosecond()
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(match type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            reason: Some(reason.to_string()),
            action: Some(action.to_string()),
            note: Some(note.chars().take(1000).collect()),
            regarding: Some(regarding),
            reporting_controller: Some("kotel.dev/operator".into()),
            reporting_instance: Some(self.instance.chars().take(128).collect()),
            ..Default::default()
        };
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => self.metrics.write("event"),
            Err(e) => warn!(error = %e, "could not publish an Event"),
        }
    }

    /// Reports standing problems once (not on every reconcile): only when the set of
    /// problems of this Deployment differs from the last one reported.
    async fn report(&self, d: &Deployment, problems: &[Problem]) {
        let key = ObjectRef::from_obj(d);
        let text: String = problems
            .iter()
            .map(|p| format!("{}: {}\n", p.reason, p.message))
            .collect();
        let new = {
            let mut reported = self.reported.lock().expect("lock");
            // Problems of Deployments that are gone go with them.
            reported.retain(|k, _| self.stores.deployments.get(k).is_some());
            reported.insert(key, text.clone()) != Some(text)
        };
        for p in problems {
            self.metrics.error(p.reason);
            if new {
                warn!(deployment = %d.name_any(), reason = p.reason, "{}", p.message);
                self.event(d, EventType::Warning, p.reason, p.message.clone())
                    .await;
            }
        }
    }

    fn clear_report(&self, d: &Deployment) {
        self.reported
            .lock()
            .expect("lock")
            .remove(&ObjectRef::from_obj(d));
    }
}

/// Reconciles one Deployment.
async fn reconcile_deployment(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", deployment = %d.name_any(), namespace = field::Empty, trace_id = field::Empty);
    span.record("namespace", d.namespace().unwrap_or_default());
    crate::telemetry::record_trace_id(&span);
    let start = Instant::now();
    let res = reconcile_inner(&d, &ctx).instrument(span).await;
    ctx.metrics.observe(start.elapsed());
    if res.is_ok() {
        ctx.backoff.reset(&backoff::key(d.as_ref()));
    }
    res
}

async fn reconcile_inner(d: &Deployment, ctx: &Context) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Deciding from a half-filled store would remove injections that are still wanted.
    ctx.stores.wait_until_ready().await;
    let ns = d.namespace().unwrap_or_default();
    if namespace_annotations(&ctx.stores, &ns)
        .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    {
        // Nothing can be written into a terminating namespace, and nothing needs to be.
        return Ok(Action::await_change());
    }
    if gateway::is_gateway_workload(&d.metadata) {
        return Ok(Action::await_change());
    }
    let owned = ownership::owned_shape(&d.metadata);
    ctx.metrics.set_rollouts(
        ctx.stores
            .deployments
            .state()
            .iter()
            .filter(|d| current_hash(d).is_some() && !gateway::is_gateway_workload(&d.metadata))
            .map(|d| rollout::of_deployment(d)),
    );

    let inputs = match dereference(d, &ctx.stores) {
        Ok(mut i) => {
            if let Some(p) = stuck_rollout(d) {
                i.notes.push(p);
            }
            i
        }
        Err(p) => {
            ctx.report(d, std::slice::from_ref(&p)).await;
            return Ok(Action::await_change());
        }
    };
    if !inputs.resolved.wants_anything() && owned.is_empty() {
        ctx.clear_report(d);
        return Ok(Action::await_change());
    }
    let plan = match decide(d, &inputs, &owned) {
        Ok(p) => p,
        Err(p) => {
            ctx.report(d, std::slice::from_ref(&p)).await;
            return Ok(Action::await_change());
        }
    };
    if inputs.notes.is_empty() {
        ctx.clear_report(d);
    } else {
        ctx.report(d, &inputs.notes).await;
    }

    if plan.intent.is_applied(&owned, current_hash(d)) {
        return Ok(Action::await_change());
    }

    let name = d.name_any();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let body = plan.intent.apply_body(&ns, &name);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    ctx.metrics.write("deployment");
    let _ = ctx.status_trigger.unbounded_send(());

    match (&plan.intent.hash, &inputs.instrumentation) {
        (None, _) => {
            info!("removed kotel's injection");
            ctx.event(
                d,
                EventType::Normal,
                "Removed",
                "removed everything kotel had injected".into(),
            )
            .await;
        }
        (Some(hash), inst) => {
            let containers: Vec<&str> = plan
                .intent
                .containers
                .iter()
                .map(|(c, _)| c.as_str())
                .collect();
            let mut msg = match inst {
                Some((name, _)) => format!(
                    "injected Instrumentation {name} into containers [{}]",
                    containers.join(", ")
                ),
                None => "injected no SDK env".to_string(),
            };
            if let Some((c, _)) = &inputs.collector {
                msg.push_str(&format!(" with sidecar Collector {c}"));
            }
            msg.push_str(&format!(" (config-hash {hash})"));
            info!(hash = %hash, "{msg}");
            ctx.event(d, EventType::Normal, "Injected", msg).await;
        }
    }
    if !plan.kept_user_vars.is_empty() {
        let list: Vec<String> = plan
            .kept_user_vars
            .iter()
            .map(|(c, v)| format!("{c}/{v}"))
            .collect();
        ctx.event(
            d,
            EventType::Normal,
            "UserVariableKept",
            format!(
                "kept the workload's own value of {}; kotel did not set these",
                list.join(", ")
            ),
        )
        .await;
    }
    if !plan.unknown_containers.is_empty() {
        ctx.event(
            d,
            EventType::Warning,
            "UnknownContainer",
            format!(
                "{} lists containers that the pod template does not have: {}",
                annotations::CONTAINER_NAMES,
                plan.unknown_containers.join(", ")
            ),
        )
        .await;
    }
    Ok(Action::await_change())
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

fn error_policy(d: Arc<Deployment>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(deployment = %d.name_any(), namespace = %d.namespace().unwrap_or_default(), error = %err, "reconcile failed");
    ctx.metrics.error("kube");
    backoff(d.as_ref(), &ctx)
}

/// Which Instrumentation a Deployment is injected from now, if any.
fn injected_from(d: &Deployment, stores: &Stores) -> Option<(String, String)> {
    current_hash(d)?;
    let ns = d.namespace().unwrap_or_default();
    let nso = namespace_annotations(stores, &ns);
    let r = resolve_deployment(d, nso.as_deref()).ok()?;
    let existing = names_of(&stores.instrumentations, |_| true);
    annotations::pick_instrumentation(&r.inject, &ns, &existing)
        .ok()
        .flatten()
}

/// Which sidecar Collector a Deployment carries now, if any.
fn sidecar_from(d: &Deployment, stores: &Stores) -> Option<(String, String)> {
    current_hash(d)?;
    let ns = d.namespace().unwrap_or_default();
    let nso = namespace_annotations(stores, &ns);
    let r = resolve_deployment(d, nso.as_deref()).ok()?;
    let existing = names_of(&stores.collectors, is_sidecar_collector);
    annotations::pick_sidecar(&r.sidecar, &ns, &existing)
        .ok()
        .flatten()
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn reconcile_instrumentation(
    obj: Arc<DeserializeGuard<Instrumentation>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let res = instrumentation_status(&obj, &ctx).await;
    if res.is_ok() {
        ctx.backoff.reset(&backoff::key(obj.as_ref()));
    }
    res
}

async fn instrumentation_status(
    obj: &DeserializeGuard<Instrumentation>,
    ctx: &Context,
) -> Result<Action, Error> {
    let Ok(inst) = &obj.0 else {
        return Ok(Action::await_change());
    };
    ctx.stores.wait_until_ready().await;
    let ns = inst.namespace().unwrap_or_default();
    let name = inst.name_any();
    let deployments = ctx.stores.deployments.state();
    let workloads = deployments
        .iter()
        .filter(|d| injected_from(d, &ctx.stores) == Some((ns.clone(), name.clone())))
        .count() as i32;
    ctx.metrics.injected.set(
        deployments
            .iter()
            .filter(|d| current_hash(d).is_some())
            .count() as i64,
    );
    let previous = inst.status.clone().unwrap_or_default();
    let generation = inst.metadata.generation;
    let want = Want {
        type_: "Ready",
        ok: true,
        reason: "Accepted",
        message: format!("injected into {workloads} Deployment(s)"),
    };
    let conditions = vec![status::condition(
        &want,
        generation,
        &previous.conditions,
        now(),
    )];
    if previous.observed_generation == generation
        && previous.workloads == workloads
        && status::same_conditions(&previous.conditions, &conditions)
    {
        return Ok(Action::await_change());
    }
    let api: Api<Instrumentation> = Api::namespaced(ctx.client.clone(), &ns);
    let body = json!({
        "apiVersion": "kotel.dev/v1alpha1",
        "kind": "Instrumentation",
        "status": {"observedGeneration": generation, "conditions": conditions, "workloads": workloads}
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    ctx.metrics.write("status");
    Ok(Action::await_change())
}

async fn reconcile_collector(
    obj: Arc<DeserializeGuard<Collector>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let res = collector_status(&obj, &ctx).await;
    if res.is_ok() {
        ctx.backoff.reset(&backoff::key(obj.as_ref()));
    }
    res
}

async fn collector_status(
    obj: &DeserializeGuard<Collector>,
    ctx: &Context,
) -> Result<Action, Error> {
    let Ok(col) = &obj.0 else {
        return Ok(Action::await_change());
    };
    ctx.stores.wait_until_ready().await;
    let ns = col.namespace().unwrap_or_default();
    let name = col.name_any();
    let previous = col.status.clone().unwrap_or_default();
    let generation = col.metadata.generation;
    let validity = validate_config(&col.spec.config);
    let config_want = match &validity {
        Ok(_) => Want {
            type_: "ConfigValid",
            ok: true,
            reason: "Valid",
            message: "the configuration parses and every pipeline names defined components".into(),
        },
        Err(e) => Want {
            type_: "ConfigValid",
            ok: false,
            reason: "InvalidConfig",
            message: e.to_string(),
        },
    };
    // Gateway modes: apply the objects when they differ, then read the pods' progress.
    let pods = match &validity {
        Ok(cfg) if col.spec.mode != Mode::Sidecar => {
            let uid = col.metadata.uid.clone().unwrap_or_default();
            let owner = gateway::Owner {
                name: &name,
                namespace: &ns,
                uid: &uid,
            };
            let objects = gateway::desired(&owner, &col.spec, cfg, &ports_for(&col.spec, cfg))
                .expect("gateway modes have objects");
            Some(apply_gateway(ctx, &ns, &gateway::object_name(&name), objects).await?)
        }
        Ok(_) if previous.replicas.is_some() => {
            // Switched to sidecar mode: the gateway goes.
            remove_gateway(ctx, &ns, &gateway::object_name(&name), None).await?;
            None
        }
        _ => None,
    };
    let ready_want = match (col.spec.mode, &validity, pods) {
        (_, Err(_), _) => Want {
            type_: "Ready",
            ok: false,
            reason: "InvalidConfig",
            message: "fix spec.config; running collectors keep their last good configuration"
                .into(),
        },
        (Mode::Sidecar, Ok(_), _) => Want {
            type_: "Ready",
            ok: true,
            reason: "SidecarReady",
            message: "injected into Deployments annotated kotel.dev/sidecar".into(),
        },
        (_, Ok(_), Some((want, ready))) if want > 0 && ready >= want => Want {
            type_: "Ready",
            ok: true,
            reason: "Available",
            message: format!("{ready} of {want} collector pod(s) ready"),
        },
        (_, Ok(_), pods) => {
            let (want, ready) = pods.unwrap_or_default();
            Want {
                type_: "Ready",
                ok: false,
                reason: "Progressing",
                message: format!(
                    "{ready} of {want} collector pod(s) ready in {}",
                    gateway::object_name(&name)
                ),
            }
        }
    };
    let workloads = if col.spec.mode == Mode::Sidecar {
        ctx.stores
            .deployments
            .state()
            .iter()
            .filter(|d| sidecar_from(d, &ctx.stores) == Some((ns.clone(), name.clone())))
            .count() as i32
    } else {
        0
    };
    let conditions = vec![
        status::condition(&config_want, generation, &previous.conditions, now()),
        status::condition(&ready_want, generation, &previous.conditions, now()),
    ];
    let image = col.spec.image().to_string();
    let (replicas, ready_replicas) = match pods {
        Some((w, r)) => (Some(w), Some(r)),
        // Invalid config in a gateway mode: the last good pods keep running and keep counting.
        None if validity.is_err() => (previous.replicas, previous.ready_replicas),
        None => (None, None),
    };
    if previous.observed_generation == generation
        && previous.replicas == replicas
        && previous.ready_replicas == ready_replicas
        && previous.workloads == workloads
        && previous.image.as_deref() == Some(image.as_str())
        && status::same_conditions(&previous.conditions, &conditions)
    {
        return Ok(Action::await_change());
    }
    let was_valid = previous
        .conditions
        .iter()
        .find(|c| c.type_ == "ConfigValid")
        .map(|c| c.status == "True");
    if let (Err(e), Some(true) | None) = (&validity, was_valid) {
        ctx.publish(
            col.object_ref(&()),
            EventType::Warning,
            "InvalidConfig",
            "Validate",
            e.to_string(),
        )
        .await;
    }
    let api: Api<Collector> = Api::namespaced(ctx.client.clone(), &ns);
    let body = json!({
        "apiVersion": "kotel.dev/v1alpha1",
        "kind": "Collector",
        "status": {"observedGeneration": generation, "conditions": conditions, "workloads": workloads, "image": image,
                   "replicas": replicas, "readyReplicas": ready_replicas}
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    ctx.metrics.write("status");
    Ok(Action::await_change())
}

/// Applies those of a gateway's objects that are missing or differ from what kotel wants (read
/// from the stores, so a deleted or edited object is repaired and a steady gateway costs no
/// request), removes the workload of the other mode, and returns (desired, ready) pods.
async fn apply_gateway(
    ctx: &Context,
    ns: &str,
    name: &str,
    objects: gateway::Objects,
) -> Result<(i32, i32), Error> {
    let live = ctx.stores.gateway.live(ns, name);
    let drift = gateway::drift(&objects, &live.view());
    match &objects.workload {
        gateway::Workload::Deployment(_) if live.daemon_set.is_some() => {
            remove_gateway(ctx, ns, name, Some("DaemonSet")).await?
        }
        gateway::Workload::DaemonSet(_) if live.deployment.is_some() => {
            remove_gateway(ctx, ns, name, Some("Deployment")).await?
        }
        _ => {}
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    if drift.service_account {
        let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
        api.patch(name, &pp, &Patch::Apply(&objects.service_account))
            .await?;
        ctx.metrics.write("gateway");
    }
    if drift.config_map {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        api.patch(name, &pp, &Patch::Apply(&objects.config_map))
            .await?;
        ctx.metrics.write("gateway");
    }
    if drift.service {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        api.patch(name, &pp, &Patch::Apply(&objects.service))
            .await?;
        ctx.metrics.write("gateway");
    }
    let deployment_pods = |d: &Deployment| {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        (want, ready)
    };
    let daemon_set_pods = |d: &DaemonSet| {
        let st = d.status.clone().unwrap_or_default();
        (st.desired_number_scheduled, st.number_ready)
    };
    let pods = match (&objects.workload, drift.workload) {
        (gateway::Workload::Deployment(d), true) => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
            let mut applied = api.patch(name, &pp, &Patch::Apply(d)).await?;
            ctx.metrics.write("gateway");
            applied.spec = d.spec.clone();
            deployment_pods(&applied)
        }
        (gateway::Workload::DaemonSet(ds), true) => {
            let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), ns);
            let applied = api.patch(name, &pp, &Patch::Apply(ds)).await?;
            ctx.metrics.write("gateway");
            daemon_set_pods(&applied)
        }
        (gateway::Workload::Deployment(_), false) => live
            .deployment
            .as_deref()
            .map(deployment_pods)
            .unwrap_or_default(),
        (gateway::Workload::DaemonSet(_), false) => live
            .daemon_set
            .as_deref()
            .map(daemon_set_pods)
            .unwrap_or_default(),
    };
    if !drift.is_none() {
        info!(collector = %name, namespace = %ns, hash = %objects.hash, ?drift, "applied the collector gateway");
    }
    Ok(pods)
}

/// Deletes a gateway's objects: only the workload of `kind` when given, else all of them.
/// Only objects labelled as kotel's are touched.
async fn remove_gateway(
    ctx: &Context,
    ns: &str,
    name: &str,
    kind: Option<&str>,
) -> Result<(), Error> {
    async fn delete<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
        match api.get_metadata_opt(name).await? {
            Some(o) if gateway::is_gateway_workload(&o.metadata) => {
                api.delete(name, &Default::default()).await?;
                ctx.metrics.write("gateway");
                Ok(())
            }
            _ => Ok(()),
        }
    }
    match kind {
        Some("Deployment") => delete::<Deployment>(ctx, ns, name).await,
        Some(_) => delete::<DaemonSet>(ctx, ns, name).await,
        None => {
            delete::<Deployment>(ctx, ns, name).await?;
            delete::<DaemonSet>(ctx, ns, name).await?;
            delete::<Service>(ctx, ns, name).await?;
            delete::<ConfigMap>(ctx, ns, name).await?;
            delete::<ServiceAccount>(ctx, ns, name).await
        }
    }
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

/// Deployments whose annotations may resolve to the Instrumentation `(ns, name)`.
fn deployments_using_instrumentation(
    stores: &Stores,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<Deployment>> {
    stores
        .deployments
        .state()
        .iter()
        .filter(|d| {
            let dns = d.namespace().unwrap_or_default();
            let nso = namespace_annotations(stores, &dns);
            let uses = match resolve_deployment(d, nso.as_deref()) {
                Ok(r) => match r.inject {
                    InjectRef::Only => dns == ns,
                    InjectRef::Named { namespace, name: n } => namespace == ns && n == name,
                    InjectRef::Off => false,
                },
                Err(_) => false,
            };
            uses || (dns == ns && current_hash(d).is_some())
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// Deployments whose annotations may resolve to the Collector `(ns, name)`.
fn deployments_using_collector(
    stores: &Stores,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<Deployment>> {
    stores
        .deployments
        .state()
        .iter()
        .filter(|d| {
            let dns = d.namespace().unwrap_or_default();
            if dns != ns {
                return false;
            }
            let nso = namespace_annotations(stores, &dns);
            match resolve_deployment(d, nso.as_deref()) {
                Ok(r) => match r.sidecar {
                    SidecarRef::Only => true,
                    SidecarRef::Named(n) => n == name,
                    SidecarRef::Off => current_hash(d).is_some(),
                },
                Err(_) => false,
            }
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// Passes the events that can change what Deployments get: a new spec (generation) or a
/// deletion. kotel's own status writes would otherwise re-trigger every Deployment that uses
/// the object.
fn spec_changes<K: Resource>()
-> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) -> futures::future::Ready<bool> {
    let mut seen: HashMap<String, Option<i64>> = HashMap::new();
    move |ev| {
        let pass = match ev {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                let uid = o.meta().uid.clone().unwrap_or_default();
                seen.insert(uid, o.meta().generation) != Some(o.meta().generation)
            }
            Ok(watcher::Event::Delete(o)) => {
                seen.remove(&o.meta().uid.clone().unwrap_or_default());
                true
            }
            _ => true,
        };
        futures::future::ready(pass)
    }
}

/// Drops what kotel never reads from the cached Deployments (managedFields, replaced by the
/// Shape kotel owns; the last-applied annotation; status; and of the pod spec everything but
/// container names, images and env var names), which is most of their size.
fn trim_deployment(d: &mut Deployment) {
    ownership::compact(&mut d.metadata);
    if let Some(a) = d.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    // Of the status, what the rollout state reads (rollout::of_deployment).
    d.status = d.status.take().map(|s| DeploymentStatus {
        observed_generation: s.observed_generation,
        replicas: s.replicas,
        updated_replicas: s.updated_replicas,
        available_replicas: s.available_replicas,
        conditions: s.conditions.map(|c| {
            c.into_iter()
                .filter(|c| c.type_ == "Progressing")
                .map(|c| DeploymentCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
    let Some(pod) = d.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return;
    };
    let slim = |c: &Container| Container {
        name: c.name.clone(),
        image: c.image.clone(),
        env: c.env.as_ref().map(|env| {
            env.iter()
                .map(|e| EnvVar {
                    name: e.name.clone(),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    };
    *pod = PodSpec {
        containers: pod.containers.iter().map(slim).collect(),
        init_containers: pod
            .init_containers
            .as_ref()
            .map(|i| i.iter().map(slim).collect()),
        ..Default::default()
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_deployments_keep_what_decisions_read() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "n",
                "annotations": {"kotel.dev/inject": "true", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [
                    {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}},
                    {"manager": "kotel", "operation": "Apply", "fieldsV1": {"f:spec": {}}}
                ]},
            "spec": {"selector": {}, "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "x"}, "annotations": {"kotel.dev/config-hash": "h"}},
                "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "secret-ish"}],
                          "resources": {"limits": {"cpu": "1"}}}],
                         "initContainers": [{"name": "kotel-collector", "image": "c", "args": ["--config=env:X"]}],
                         "volumes": [{"name": "v", "emptyDir": {}}]}}},
            "status": {"replicas": 1}
        }))
        .unwrap();
        trim_deployment(&mut d);
        assert_eq!(
            d.status,
            Some(DeploymentStatus {
                replicas: Some(1),
                ..Default::default()
            }),
            "of the status, only what the rollout state reads"
        );
        assert!(d.metadata.managed_fields.is_none());
        assert!(ownership::owned_shape(&d.metadata).is_empty());
        assert!(
            !d.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key("kubectl.kubernetes.io/last-applied-configuration")
        );
        assert_eq!(current_hash(&d), Some("h"));
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(pod.volumes.is_none());
        let c = &pod.containers[0];
        assert_eq!(
            (c.name.as_str(), c.image.as_deref()),
            ("app", Some("app:1"))
        );
        assert!(c.resources.is_none());
        let env = c.env.as_ref().unwrap();
        assert_eq!(env[0].name, "A");
        assert!(env[0].value.is_none());
        assert_eq!(
            pod.init_containers.as_ref().unwrap()[0].name,
            "kotel-collector"
        );
    }
}
