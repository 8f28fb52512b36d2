//! What wakes which reconcile: the Deployments an Instrumentation or a Collector change
//! concerns, and which changes count.

use super::*;

/// The Deployments for which `uses` says yes, given their namespace and their resolved
/// annotations (`None` when those do not resolve).
fn deployments_where(
    stores: &Stores,
    uses: impl Fn(&Deployment, &str, Option<Resolved>) -> bool,
) -> Vec<ObjectRef<Deployment>> {
    stores
        .deployments
        .state()
        .iter()
        .filter(|d| {
            let dns = d.namespace().unwrap_or_default();
            let nso = namespace_annotations(stores, &dns);
            uses(d, &dns, resolve_deployment(d, nso.as_deref()).ok())
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// Deployments whose annotations may resolve to the Instrumentation `(ns, name)`, and those of
/// its namespace that kotel injected (they may have used it).
pub(super) fn deployments_using_instrumentation(
    stores: &Stores,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<Deployment>> {
    deployments_where(stores, |d, dns, r| {
        let named = match r.map(|r| r.inject) {
            Some(InjectRef::Only) => dns == ns,
            Some(InjectRef::Named { namespace, name: n }) => namespace == ns && n == name,
            Some(InjectRef::Off) | None => false,
        };
        named || (dns == ns && current_hash(d).is_some())
    })
}

/// Deployments of the Collector's namespace whose annotations may resolve to it.
pub(super) fn deployments_using_collector(
    stores: &Stores,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<Deployment>> {
    deployments_where(stores, |d, dns, r| {
        dns == ns
            && match r.map(|r| r.sidecar) {
                Some(SidecarRef::Only) => true,
                Some(SidecarRef::Named(n)) => n == name,
                Some(SidecarRef::Off) => current_hash(d).is_some(),
                None => false,
            }
    })
}

/// Passes the events that can change what Deployments get: a new spec (generation) or a
/// deletion. kotel's own status writes would otherwise re-trigger every Deployment that uses
/// the object.
pub(super) fn spec_changes<K: Resource>()
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
