//! The reflector stores every stage reads instead of calling the API server, their readiness,
//! and what of each object they keep.

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
    pub deployments: Store<Deployment>,
    /// StatefulSets.
    pub stateful_sets: Store<StatefulSet>,
    /// DaemonSets.
    pub daemon_sets: Store<DaemonSet>,
    /// CronJobs.
    pub cron_jobs: Store<CronJob>,
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

/// Drops what kotel never reads from the cached workloads (managedFields, replaced by the
/// Shape kotel owns; the last-applied annotation; of the status what the rollout state does not
/// read; and of the pod spec everything but container names, images and env var names), which
/// is most of their size.
pub(super) fn trim<W: Object>(d: &mut W) {
    ownership::compact(d.meta_mut());
    if let Some(a) = d.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    d.slim_status();
    // Of the env, only the user's variables' names: decisions read no other (`user_vars`), and
    // kotel's own are in the Shape. An `EnvVar` takes 280 bytes however little it holds, and
    // kotel's dozen were most of a cached workload.
    let owned = ownership::owned_shape(d.meta());
    let Some(pod) = d.template_mut().and_then(|t| t.spec.as_mut()) else {
        return;
    };
    let slim = |c: &Container| Container {
        name: c.name.clone(),
        image: c.image.clone(),
        env: c.env.as_ref().map(|env| {
            let mine = owned.env.get(&c.name);
            env.iter()
                .filter(|e| !mine.is_some_and(|m| m.contains(&e.name)))
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
                    {"manager": "kotel", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                        "k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:env": {
                            "k:{\"name\":\"OTEL_SERVICE_NAME\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}}}
                ]},
            "spec": {"selector": {}, "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "x"}, "annotations": {"kotel.dev/config-hash": "h"}},
                "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "secret-ish"}, {"name": "OTEL_SERVICE_NAME", "value": "x"}],
                          "resources": {"limits": {"cpu": "1"}}}],
                         "initContainers": [{"name": "kotel-collector", "image": "c", "args": ["--config=env:X"]}],
                         "volumes": [{"name": "v", "emptyDir": {}}]}}},
            "status": {"replicas": 1}
        }))
        .unwrap();
        trim(&mut d);
        assert_eq!(
            d.status,
            Some(DeploymentStatus {
                replicas: Some(1),
                ..Default::default()
            }),
            "of the status, only what the rollout state reads"
        );
        assert!(d.metadata.managed_fields.is_none());
        let shape = ownership::owned_shape(&d.metadata);
        assert_eq!(
            shape
                .env
                .get("app")
                .map(|e| e.iter().map(String::as_str).collect::<Vec<_>>()),
            Some(vec!["OTEL_SERVICE_NAME"]),
            "kotel's variables are in the Shape"
        );
        assert!(
            !d.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key("kubectl.kubernetes.io/last-applied-configuration")
        );
        assert_eq!(d.config_hash(), Some("h"));
        let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert!(pod.volumes.is_none());
        let c = &pod.containers[0];
        assert_eq!(
            (c.name.as_str(), c.image.as_deref()),
            ("app", Some("app:1"))
        );
        assert!(c.resources.is_none());
        let env = c.env.as_ref().unwrap();
        assert_eq!(env.len(), 1, "only the user's variables: {env:?}");
        assert_eq!(env[0].name, "A");
        assert!(env[0].value.is_none());
        assert_eq!(
            pod.init_containers.as_ref().unwrap()[0].name,
            "kotel-collector"
        );
    }
}
