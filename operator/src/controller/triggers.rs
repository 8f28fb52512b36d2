//! What wakes which reconcile: the workloads an Instrumentation, a Collector or a Namespace
//! change concerns (of every kind, sent to each kind's controller), and which changes count.

use super::*;

/// The workloads for which `uses` says yes, given their namespace and their resolved
/// annotations (`None` when those do not resolve).
fn workloads_where(
    stores: &Stores,
    uses: impl Fn(&dyn Templated, &str, Option<Resolved>) -> bool,
) -> Vec<Arc<dyn Templated>> {
    stores
        .workloads
        .all()
        .into_iter()
        .filter(|w| {
            let nso = namespace_annotations(stores, w.namespace());
            uses(
                w.as_ref(),
                w.namespace(),
                resolve_workload(w.as_ref(), nso.as_deref()).ok(),
            )
        })
        .collect()
}

/// Workloads whose annotations may resolve to the Instrumentation `(ns, name)`, and those of
/// its namespace that kotel injected (they may have used it).
pub(super) fn workloads_using_instrumentation(
    stores: &Stores,
    ns: &str,
    name: &str,
) -> Vec<Arc<dyn Templated>> {
    workloads_where(stores, |w, wns, r| {
        let named = match r.map(|r| r.inject) {
            Some(InjectRef::Only) => wns == ns,
            Some(InjectRef::Named { namespace, name: n }) => namespace == ns && n == name,
            Some(InjectRef::Off) | None => false,
        };
        named || (wns == ns && w.config_hash().is_some())
    })
}

/// Workloads of the Collector's namespace whose annotations may resolve to it.
pub(super) fn workloads_using_collector(
    stores: &Stores,
    ns: &str,
    name: &str,
) -> Vec<Arc<dyn Templated>> {
    workloads_where(stores, |w, wns, r| {
        wns == ns
            && match r.map(|r| r.sidecar) {
                Some(SidecarRef::Only) => true,
                Some(SidecarRef::Named(n)) => n == name,
                Some(SidecarRef::Off) => w.config_hash().is_some(),
                None => false,
            }
    })
}

/// The workloads of a namespace, whose annotations it may supply.
pub(super) fn workloads_in(stores: &Stores, ns: &str) -> Vec<Arc<dyn Templated>> {
    workloads_where(stores, |_, wns, _| wns == ns)
}

/// One queue per kind into that kind's controller (`Controller::reconcile_on`), so that one
/// watch of each input wakes every kind.
pub(super) struct Wakers {
    pub(super) deployments: mpsc::UnboundedSender<ObjectRef<Watched<Deployment>>>,
    pub(super) stateful_sets: mpsc::UnboundedSender<ObjectRef<Watched<StatefulSet>>>,
    pub(super) daemon_sets: mpsc::UnboundedSender<ObjectRef<Watched<DaemonSet>>>,
    pub(super) cron_jobs: mpsc::UnboundedSender<ObjectRef<Watched<CronJob>>>,
}

impl Wakers {
    /// Queues a reconcile of `w` in its kind's controller.
    pub(super) fn wake(&self, w: &dyn Templated) {
        fn send<K: Object>(tx: &mpsc::UnboundedSender<ObjectRef<K>>, w: &dyn Templated) {
            let _ = tx.unbounded_send(ObjectRef::new(w.name()).within(w.namespace()));
        }
        match w.kind() {
            Kind::Deployment => send(&self.deployments, w),
            Kind::StatefulSet => send(&self.stateful_sets, w),
            Kind::DaemonSet => send(&self.daemon_sets, w),
            Kind::CronJob => send(&self.cron_jobs, w),
        }
    }
}

/// Wakes the status controllers when an injected workload goes away, so that the counts in
/// status follow (a deleted object never reaches its reconcile).
pub(super) fn wake_status_on_delete<W: Object>(
    tx: mpsc::UnboundedSender<()>,
) -> impl FnMut(&Result<watcher::Event<W>, watcher::Error>) {
    move |ev| {
        if let Ok(watcher::Event::Delete(w)) = ev
            && w.config_hash().is_some()
        {
            let _ = tx.unbounded_send(());
        }
    }
}

/// Passes the events that can change what workloads get: a change of `what` (an object's
/// generation, and for a Collector the image's verdict on its configuration too) or a
/// deletion. kotel's other status writes would otherwise re-trigger every workload that uses
/// the object.
pub(super) fn changes<K: Resource>(
    what: impl Fn(&K) -> String,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) -> futures::future::Ready<bool> {
    let mut seen: HashMap<String, String> = HashMap::new();
    move |ev| {
        let pass = match ev {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                let uid = o.meta().uid.clone().unwrap_or_default();
                let now = what(o);
                seen.insert(uid, now.clone()) != Some(now)
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
