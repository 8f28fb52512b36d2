//! What wakes which reconcile: the Deployments an Instrumentation or a Collector change
//! concerns, and which changes count.

use super::*;

/// Deployments whose annotations may resolve to the Instrumentation `(ns, name)`.
pub(super) fn deployments_using_instrumentation(
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
pub(super) fn deployments_using_collector(
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
