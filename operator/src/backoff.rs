//! Requeue delays after failed reconciles: per object *and kind* (a Deployment and an
//! Instrumentation of the same name back off separately), reset by a success, and pruned of
//! objects that are gone, so the map stays as small as the set of objects failing now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::Resource;
use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;

/// The key of one object of one kind.
pub type Key = ObjectRef<DynamicObject>;

/// The key of `o`.
pub fn key<K: Resource<DynamicType = ()>>(o: &K) -> Key {
    ObjectRef::from_obj(o).erase()
}

/// Consecutive failures per object.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<Key, u32>>,
}

/// The longest delay.
pub const MAX: Duration = Duration::from_secs(300);

impl Backoff {
    /// Counts a failure and returns the delay before the next try: 2 s, 4 s, ... up to [`MAX`].
    pub fn fail(&self, key: Key) -> Duration {
        let mut f = self.failures.lock().expect("lock");
        let n = f.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << (*n).min(8)).min(MAX)
    }

    /// A success: the next failure starts from the shortest delay again.
    pub fn reset(&self, key: &Key) {
        self.failures.lock().expect("lock").remove(key);
    }

    /// Drops the entries of objects for which `exists` is false.
    pub fn prune(&self, exists: impl Fn(&Key) -> bool) {
        self.failures.lock().expect("lock").retain(|k, _| exists(k));
    }

    /// How many objects are backing off.
    pub fn len(&self) -> usize {
        self.failures.lock().expect("lock").len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instrumentation::Instrumentation;
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    fn deployment(name: &str) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "n"}})).unwrap()
    }

    fn instrumentation(name: &str) -> Instrumentation {
        serde_json::from_value(
            json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation",
            "metadata": {"name": name, "namespace": "n"}, "spec": {}}),
        )
        .unwrap()
    }

    #[test]
    fn delays_double_up_to_the_maximum() {
        let b = Backoff::default();
        let k = key(&deployment("web"));
        let delays: Vec<u64> = (0..10).map(|_| b.fail(k.clone()).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 256, 256]);
    }

    #[test]
    fn kinds_of_the_same_name_back_off_separately() {
        let b = Backoff::default();
        let d = key(&deployment("web"));
        let i = key(&instrumentation("web"));
        assert_ne!(d, i);
        b.fail(d.clone());
        b.fail(d.clone());
        assert_eq!(b.fail(i.clone()), Duration::from_secs(2));
        assert_eq!(b.fail(d.clone()), Duration::from_secs(8));
    }

    #[test]
    fn success_resets_and_gone_objects_are_pruned() {
        let b = Backoff::default();
        let web = key(&deployment("web"));
        let api = key(&deployment("api"));
        b.fail(web.clone());
        b.fail(web.clone());
        b.reset(&web);
        assert_eq!(b.fail(web.clone()), Duration::from_secs(2));
        b.fail(api.clone());
        assert_eq!(b.len(), 2);
        b.prune(|k| k.name == "web");
        assert_eq!(b.len(), 1);
        assert_eq!(
            b.fail(api),
            Duration::from_secs(2),
            "api's count went with it"
        );
    }
}
