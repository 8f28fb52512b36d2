//! What kotel owns in a Deployment, read from its server-side-apply `managedFields`. This tells
//! kotel's own env vars from the user's, and whether an apply would change anything.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use serde_json::Value;

use crate::annotations::CONFIG_HASH;

/// The field manager kotel applies with.
pub const FIELD_MANAGER: &str = "kotel";

/// The set of fields kotel applies to a Deployment, in a form that can be compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    /// The `kotel.dev/config-hash` annotation on the pod template.
    pub hash_annotation: bool,
    /// Per container: the env vars whose value kotel sets.
    pub env: BTreeMap<String, BTreeSet<String>>,
    /// Init containers kotel adds (its sidecar, an agent's copy).
    pub init_containers: BTreeSet<String>,
    /// Pod volumes kotel adds (an agent's).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub volumes: BTreeSet<String>,
    /// Per container: the mount paths of the volume mounts kotel adds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mounts: BTreeMap<String, BTreeSet<String>>,
}

impl Shape {
    /// Whether kotel owns nothing.
    pub fn is_empty(&self) -> bool {
        !self.hash_annotation
            && self.env.values().all(BTreeSet::is_empty)
            && self.init_containers.is_empty()
            && self.volumes.is_empty()
            && self.mounts.values().all(BTreeSet::is_empty)
    }
}

/// The `field` of a list-map key such as `k:{"name":"app"}`.
fn keyed(key: &str, field: &str) -> Option<String> {
    let json = key.strip_prefix("k:")?;
    let v: Value = serde_json::from_str(json).ok()?;
    v.get(field)?.as_str().map(str::to_string)
}

fn keyed_name(key: &str) -> Option<String> {
    keyed(key, "name")
}

/// The Shape kotel's own Apply entry in `managedFields` owns. An env var counts only while
/// kotel owns its value: once another manager has taken the value over, it is the user's.
pub fn kotel_shape(managed: &[ManagedFieldsEntry]) -> Shape {
    let mut shape = Shape::default();
    for entry in managed {
        if entry.manager.as_deref() != Some(FIELD_MANAGER)
            || entry.operation.as_deref() != Some("Apply")
            || entry.subresource.as_deref().is_some_and(|s| !s.is_empty())
        {
            continue;
        }
        let Some(fields) = entry.fields_v1.as_ref().map(|f| &f.0) else {
            continue;
        };
        // Wherever the kind keeps its pod template (a CronJob: in its jobTemplate).
        let Some(template) = crate::workload::Kind::ALL
            .iter()
            .find_map(|k| fields.pointer(&k.template_pointer()))
        else {
            continue;
        };
        if template
            .pointer("/f:metadata/f:annotations")
            .and_then(|a| a.get(format!("f:{CONFIG_HASH}")))
            .is_some()
        {
            shape.hash_annotation = true;
        }
        if let Some(containers) = template
            .pointer("/f:spec/f:containers")
            .and_then(Value::as_object)
        {
            for (key, c) in containers {
                let Some(name) = keyed_name(key) else {
                    continue;
                };
                let mut owned = BTreeSet::new();
                if let Some(env) = c.get("f:env").and_then(Value::as_object) {
                    for (ekey, e) in env {
                        let Some(var) = keyed_name(ekey) else {
                            continue;
                        };
                        if e.get("f:value").is_some() || e.get("f:valueFrom").is_some() {
                            owned.insert(var);
                        }
                    }
                }
                let mounts: BTreeSet<String> = c
                    .get("f:volumeMounts")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .filter_map(|k| keyed(k, "mountPath"))
                    .collect();
                if !mounts.is_empty() {
                    shape.mounts.insert(name.clone(), mounts);
                }
                if !owned.is_empty() {
                    shape.env.insert(name, owned);
                }
            }
        }
        if let Some(inits) = template
            .pointer("/f:spec/f:initContainers")
            .and_then(Value::as_object)
        {
            for key in inits.keys() {
                if let Some(name) = keyed_name(key) {
                    shape.init_containers.insert(name);
                }
            }
        }
        if let Some(volumes) = template
            .pointer("/f:spec/f:volumes")
            .and_then(Value::as_object)
        {
            shape
                .volumes
                .extend(volumes.keys().filter_map(|k| keyed_name(k)));
        }
    }
    shape
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use serde_json::json;

    fn entry(manager: &str, op: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(op.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn reads_kotels_apply_entry_only() {
        let fields = json!({"f:spec": {"f:template": {
            "f:metadata": {"f:annotations": {"f:kotel.dev/config-hash": {}}},
            "f:spec": {
                "f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:env": {
                    "k:{\"name\":\"OTEL_SERVICE_NAME\"}": {".": {}, "f:name": {}, "f:value": {}},
                    "k:{\"name\":\"OTEL_RESOURCE_ATTRIBUTES_POD_NAME\"}": {".": {}, "f:name": {}, "f:valueFrom": {"f:fieldRef": {}}},
                    "k:{\"name\":\"LOST\"}": {".": {}, "f:name": {}}
                }, "f:volumeMounts": {"k:{\"mountPath\":\"/otel-auto-instrumentation-python\"}": {".": {}, "f:name": {}}}}},
                "f:initContainers": {"k:{\"name\":\"kotel-collector\"}": {".": {}, "f:name": {}}},
                "f:volumes": {"k:{\"name\":\"kotel-agent-python\"}": {".": {}, "f:emptyDir": {}}}
            }
        }}});
        let managed = vec![
            entry("kubectl", "Update", fields.clone()),
            entry(FIELD_MANAGER, "Apply", fields),
        ];
        let s = kotel_shape(&managed);
        assert!(s.hash_annotation);
        assert_eq!(
            s.env["app"],
            BTreeSet::from([
                "OTEL_SERVICE_NAME".to_string(),
                "OTEL_RESOURCE_ATTRIBUTES_POD_NAME".to_string()
            ])
        );
        assert_eq!(
            s.init_containers,
            BTreeSet::from(["kotel-collector".to_string()])
        );
        assert_eq!(
            s.volumes,
            BTreeSet::from(["kotel-agent-python".to_string()])
        );
        assert_eq!(
            s.mounts["app"],
            BTreeSet::from(["/otel-auto-instrumentation-python".to_string()])
        );

        // The same fields under a CronJob's jobTemplate.
        let cron = json!({"f:spec": {"f:jobTemplate": {"f:spec": managed[1].fields_v1.clone().unwrap().0["f:spec"].clone()}}});
        assert_eq!(kotel_shape(&[entry(FIELD_MANAGER, "Apply", cron)]), s);
        assert!(!s.is_empty());
    }

    #[test]
    fn nothing_owned_is_empty() {
        assert!(kotel_shape(&[]).is_empty());
        let other = vec![entry(
            "kubectl",
            "Apply",
            json!({"f:spec": {"f:template": {"f:metadata": {"f:annotations": {"f:kotel.dev/config-hash": {}}}}}}),
        )];
        assert!(kotel_shape(&other).is_empty());
        let empty = vec![entry(FIELD_MANAGER, "Apply", json!({}))];
        assert!(kotel_shape(&empty).is_empty());
    }
}
