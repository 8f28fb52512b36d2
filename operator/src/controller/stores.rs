//! The reflector stores every stage reads instead of calling the API server, and their
//! readiness.

use super::*;

/// The reflector stores every reconcile reads instead of calling the API.
#[derive(Clone)]
pub struct Stores {
    /// The workloads kotel patches, one store per kind (each its controller's own).
    pub workloads: WorkloadStores,
    /// Namespaces, for namespace-level annotations.
    pub namespaces: Store<Namespace>,
    /// Instrumentations; malformed ones are kept as errors instead of breaking the watch.
    pub instrumentations: Store<DeserializeGuard<Instrumentation>>,
    /// Collectors, likewise.
    pub collectors: Store<DeserializeGuard<Collector>>,
    /// The objects of the gateway Collectors kotel runs.
    pub gateway: GatewayStores,
    /// The Jobs that run a Collector image's `validate` (by the label `kotel.dev/validates`).
    pub validation_jobs: Store<Job>,
    /// Which of the streams listed: deployments, namespaces, instrumentations, collectors,
    /// the gateway's service accounts, config maps, services, deployments, daemon sets, then
    /// stateful sets, daemon sets, cron jobs and validation jobs.
    pub ready: watch::Receiver<[bool; STREAMS]>,
}

/// How many watch streams feed the stores.
pub(super) const STREAMS: usize = 13;

/// The workloads kotel patches, by kind.
#[derive(Clone)]
pub struct WorkloadStores {
    /// Deployments.
    pub deployments: Store<Watched<Deployment>>,
    /// StatefulSets.
    pub stateful_sets: Store<Watched<StatefulSet>>,
    /// DaemonSets.
    pub daemon_sets: Store<Watched<DaemonSet>>,
    /// CronJobs.
    pub cron_jobs: Store<Watched<CronJob>>,
}

/// A workload's identity: kind, namespace, name.
pub(super) type WorkloadKey = (Kind, String, String);

pub(super) fn key(w: &dyn Templated) -> WorkloadKey {
    (w.kind(), w.namespace().to_string(), w.name().to_string())
}

impl WorkloadStores {
    /// Every workload of every kind.
    pub(super) fn all(&self) -> Vec<Arc<dyn Templated>> {
        fn erased<K: Object>(s: &Store<K>) -> impl Iterator<Item = Arc<dyn Templated>> {
            s.state().into_iter().map(|o| o as Arc<dyn Templated>)
        }
        erased(&self.deployments)
            .chain(erased(&self.stateful_sets))
            .chain(erased(&self.daemon_sets))
            .chain(erased(&self.cron_jobs))
            .collect()
    }

    /// One workload, whatever its kind.
    pub(super) fn get(&self, (kind, ns, name): &WorkloadKey) -> Option<Arc<dyn Templated>> {
        fn one<K: Object>(s: &Store<K>, ns: &str, name: &str) -> Option<Arc<dyn Templated>> {
            s.get(&ObjectRef::new(name).within(ns))
                .map(|o| o as Arc<dyn Templated>)
        }
        match kind {
            Kind::Deployment => one(&self.deployments, ns, name),
            Kind::StatefulSet => one(&self.stateful_sets, ns, name),
            Kind::DaemonSet => one(&self.daemon_sets, ns, name),
            Kind::CronJob => one(&self.cron_jobs, ns, name),
        }
    }
}

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
    pub(super) fn live(&self, ns: &str, name: &str) -> LiveGateway {
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
pub(super) struct LiveGateway {
    pub(super) service_account: Option<Arc<ServiceAccount>>,
    pub(super) config_map: Option<Arc<ConfigMap>>,
    pub(super) service: Option<Arc<Service>>,
    pub(super) deployment: Option<Arc<Deployment>>,
    pub(super) daemon_set: Option<Arc<DaemonSet>>,
}

impl LiveGateway {
    pub(super) fn view(&self) -> gateway::Live<'_> {
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
    pub(super) fn exists(&self, k: &backoff::Key) -> bool {
        let (name, ns) = (k.name.as_str(), k.namespace.as_deref().unwrap_or_default());
        if let Some(kind) = Kind::ALL.into_iter().find(|x| x.as_str() == k.dyntype.kind) {
            return self
                .workloads
                .get(&(kind, ns.to_string(), name.to_string()))
                .is_some();
        }
        match k.dyntype.kind.as_str() {
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
pub(super) fn mark_ready<K>(
    tx: Arc<watch::Sender<[bool; STREAMS]>>,
    i: usize,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |ev| {
        if let Ok(watcher::Event::InitDone) = ev {
            tx.send_if_modified(|r| !std::mem::replace(&mut r[i], true));
        }
    }
}
